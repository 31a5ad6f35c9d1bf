"""``partialface demo`` — the main job: from nothing to a PartialLFW report in one command.

Stages (each resumable: a rerun with the same options skips what is finished):

1. ``synth``: identity-consistent synthetic faces (:mod:`partialface.data.synth`): an identity-folder
   training set ``OUT/synth/train`` and an LFW-layout test set ``OUT/synth/test`` (disjoint identities,
   10-fold identity-disjoint ``pairs.txt``), unaligned 250x250 with a landmarks file each;
2. ``align``: both sets aligned to 160x160 with their landmarks (``partialface.detect.dataset``) into
   ``OUT/aligned/{train,test}``; the training faces are then packed (``OUT/train-pack``, memory-mapped);
3. ``train``: the attention model ``ours``, the ``resnet41`` baseline (partial-face augmentation) and the
   holistic-only ``resnet50`` ("no finetune": augmentation off), each with the ``cpu`` preset for the
   same number of steps (``--steps`` per model: equal work, so the same seed gives the same table on any
   machine of a kind; ``--minutes`` is a wall-clock budget instead, whose results depend on the machine's
   speed), into ``OUT/runs/<model>``; an interrupted run resumes from its last checkpoint;
4. ``benchmark``: every PartialLFW protocol, both settings, on the test set
   (:func:`partialface.evaluation.benchmark.run_benchmark`, embedding caches resumable) into
   ``OUT/benchmark``: results.json / results.md / per_factor.csv, figures and report.html;
5. the paper-style table, the attention model's margins over the holistic-only baseline, and the time
   each stage took (also in ``OUT/timings.json``).

``--train-data`` (aligned identity folders) replaces the synthetic training set; ``--data`` (an LFW-layout
folder, raw or aligned) with ``--pairs`` replaces the synthetic test set. For time, the demo scores a
subset of the nine size factors by default (``--factors``; every protocol and both settings are kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partialface.data.images import atomic_write_bytes
from partialface.errors import PartialFaceError

#: The demo's models: result name -> (registered model, partial-face augmentation during training).
MODELS: dict[str, tuple[str, bool]] = {
    "ours": ("ours", True),
    "resnet41": ("resnet41", True),
    "resnet50-nofinetune": ("resnet50", False),
}
#: The model the attention model is compared with in the margins line.
HOLISTIC_BASELINE = "resnet50-nofinetune"
#: Training steps per model by default (``--steps``): see docs/history/benchmarks.md for the time on each machine.
DEMO_STEPS = 200
#: Size factors scored by default (a subset of the benchmark's nine, for time).
DEMO_FACTORS: tuple[float, ...] = (0.2, 0.35, 0.5)
#: Overrides of the training preset for every demo run (then the model's own, then --set). The recipe for
#: a few hundred steps: AdamW (lr 3e-3, decoupled weight decay 0.05) for all three models. With the presets'
#: SGD at lr 0.1 the attention model barely starts learning in that many steps (its sum-pooled features
#: are ~20x larger than the baselines' averages); AdamW's per-parameter steps do not mind (measured on the
#: demo's synthetic faces after 250 steps, holistic accuracy: ours 56% with SGD, 76% with AdamW; the
#: baselines gain too: resnet41 69 -> 71%, resnet50 79 -> 85%).
TRAIN_OVERRIDES: tuple[str, ...] = (
    "data.holdout_identities=0",  # the benchmark's test set is the held-out check
    "run.verify_every=0",
    "run.tensorboard=false",
    "optim.epochs=100000",  # the budget (--steps or --minutes) ends the runs
    "optim.optimizer=adamw",
    "optim.lr=0.003",
    "optim.weight_decay=0.05",
    "optim.warmup_steps=20",
    "run.checkpoint_every=100",
    "run.log_every=10",
)
DONE = ".done"
MANIFEST = "demo.json"


# ---------------------------------------------------------------------------------------------- options
def _factors(text: str) -> tuple[float, ...]:
    from partialface.geometry.template import FACTORS

    if text.strip() == "all":
        return FACTORS
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated factors, e.g. 0.2,0.5, or 'all'") from None
    bad = [v for v in values if not any(math.isclose(v, f) for f in FACTORS)]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"{text!r}: factors must be among {', '.join(map(str, FACTORS))}")
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [n for n in names if n not in MODELS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose models among {', '.join(MODELS)}")
    return names


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options (the process's OpenMP waits: ``partialface.cli.OMP_ENV``)."""
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps PER MODEL (default {DEMO_STEPS}: equal work for every model, the same "
                        "table on every run; see docs/history/benchmarks.md for the time it takes)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="a wall-clock training budget PER MODEL instead of --steps (the table then depends on "
                        "the machine's speed and load)")
    parser.add_argument("--slices", type=int, default=3,
                        help="with --minutes: the models train in turns, each budget in this many slices (default "
                        "3), so that a change of the machine's load falls on every model alike")
    parser.add_argument("--models", type=_names, default=tuple(MODELS),
                        help=f"comma-separated models to train and score (default {','.join(MODELS)})")
    parser.add_argument("--preset", default="cpu",
                        help="training config: a packaged preset (cpu, tiny, paper) or a YAML file (default cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                        help="training config override for every model (repeatable), e.g. --set optim.lr=0.05")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--amp", choices=("auto", "bf16", "none"), default="auto",
                        help="training precision: bf16 autocast + channels_last, or float32 ('none'); auto = bf16 "
                        "where the device computes it natively (CUDA with bf16, CPUs with AMX or AVX512-BF16)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0 = torch's choice: one per core)")
    g = parser.add_argument_group("synthetic faces (when no real data is given)")
    g.add_argument("--train-identities", type=int, default=300, help="training identities (default 300)")
    g.add_argument("--train-per-identity", type=int, default=8, help="images per training identity (default 8)")
    g.add_argument("--test-identities", type=int, default=100, help="test identities (default 100, at least 20)")
    g.add_argument("--test-per-identity", type=int, default=5, help="images per test identity (default 5)")
    g.add_argument("--pairs-per-fold", type=int, default=60,
                   help="same (and different) test pairs per fold (default 60)")
    g.add_argument("--seed", type=int, default=0, help="random seed of the faces (default 0)")
    g.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8),
                   help="processes for synthesis / threads for decoding (default: CPU count, at most 8)")
    g = parser.add_argument_group("real data instead")
    g.add_argument("--train-data", type=Path, default=None,
                   help="identity folders of aligned 160x160 faces (ROOT/identity/*.jpg|png) to train on")
    g.add_argument("--data", type=Path, default=None,
                   help="LFW-layout test folder (NAME/NAME_000N.jpg), raw (aligned with MTCNN) or aligned")
    g.add_argument("--pairs", type=Path, default=None,
                   help="pairs file of --data (default DATA/pairs.txt, else DATA/../pairs.txt)")
    g = parser.add_argument_group("benchmark")
    g.add_argument("--factors", type=_factors, default=DEMO_FACTORS,
                   help=f"comma-separated size factors to score, or 'all' (default {','.join(map(str, DEMO_FACTORS))})")
    g.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines only)")


# ---------------------------------------------------------------------------------------------- plumbing
@dataclass
class Stages:
    """One-line stage messages with the elapsed time, and the seconds each stage took."""

    start: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)

    def clock(self) -> str:
        s = int(time.perf_counter() - self.start)
        return f"{s // 60}:{s % 60:02d}"

    def say(self, text: str) -> None:
        print(f"[demo {self.clock()}] {text}", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.say(f"{name}: {what}")
        t = time.perf_counter()
        yield
        took = time.perf_counter() - t
        self.seconds[name] = self.seconds.get(name, 0.0) + took
        self.say(f"{name}: done in {took:.1f} s")


def _done(folder: Path) -> bool:
    """Whether a stage finished writing ``folder`` (its marker is written last)."""
    return (folder / DONE).is_file()


def _mark_done(folder: Path) -> None:
    atomic_write_bytes(folder / DONE, b"")


def check_manifest(out: Path, data: dict[str, Any]) -> None:
    """``OUT/demo.json`` records the data options the folder was made with; a rerun must use the same
    (the stages' caches assume it)."""
    path = out / MANIFEST
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            saved = None
        if saved != data:
            changed = sorted(k for k in data if not isinstance(saved, dict) or saved.get(k) != data[k])
            raise PartialFaceError(
                f"{out} holds a demo made with other data options ({', '.join(changed) or 'unreadable ' + MANIFEST}); "
                "choose another --out or delete that folder"
            )
        return
    atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))


# ---------------------------------------------------------------------------------------------- stages
def synthesise(out: Path, opts: Any, workers: int, progress: bool) -> None:
    """Stage 1: ``write_dataset`` into ``out`` (finished images are kept when it was interrupted)."""
    from tqdm import tqdm

    from partialface.data.synth import write_dataset

    if _done(out):
        print(f"{out}: already written (skipped)", file=sys.stderr)
        return
    total = opts.train_identities * opts.train_per_identity + opts.test_identities * opts.test_per_identity
    with tqdm(total=total, desc="synth", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        write_dataset(out, opts, workers=workers, progress=bar.update)
    _mark_done(out)


def align_split(src: Path, dst: Path, workers: int, progress: bool) -> None:
    """Stage 2: align ``src`` (a synth split with its landmarks.tsv) into ``dst``."""
    from partialface.data.synth import LANDMARKS_FILE
    from partialface.detect.dataset import align_dataset

    landmarks = src / LANDMARKS_FILE
    if _done(dst):
        print(f"{dst}: already aligned (skipped)", file=sys.stderr)
        return
    summary = align_dataset(src, dst, landmarks=landmarks, landmarks_only=True, workers=workers,
                            device="cpu", progress=progress)
    print(summary.line(), file=sys.stderr)
    failed = summary.no_face + summary.unreadable + summary.other_failures
    if failed:
        raise PartialFaceError(f"{dst}: {failed} synthetic faces failed to align (see {summary.failures_file}); "
                               "delete the folder and run the demo again")
    _mark_done(dst)


def train_config(name: str, args: argparse.Namespace, root: Path, pack: Path | None) -> Any:
    """The TrainConfig of one demo model: the preset, the demo's overrides, the model's, then --set."""
    from partialface.training.config import TrainConfig

    model, augment = MODELS[name]
    overrides = [
        *TRAIN_OVERRIDES,
        f"data.root={root}",
        f"data.pack={pack or ''}",
        f"data.workers={0 if pack else min(2, args.workers)}",
        f"model.name={model}",
        f"augment.enabled={'true' if augment else 'false'}",
        *((f"optim.max_minutes={args.minutes}",) if args.minutes is not None
          else (f"optim.max_steps={args.steps}", "optim.max_minutes=0")),
        f"run.device={args.device}",
        f"run.progress={'false' if args.no_progress else 'true'}",
        f"run.amp={args.amp_used}",
        f"run.channels_last={'true' if args.amp_used == 'bf16' else 'false'}",
        *args.overrides,
        f"run.out={args.out / 'runs' / name}",
    ]
    return TrainConfig.from_yaml(args.preset, overrides)


def finished_run(cfg: Any) -> int | None:
    """Steps of a finished run of exactly this config in ``cfg.run.out`` (final weights of its last
    checkpoint), else None."""
    from partialface.training import checkpoint as ckpt
    from partialface.training.config import TrainConfig

    out = Path(cfg.run.out)
    weights = out / ckpt.WEIGHTS
    latest = ckpt.latest_checkpoint(out)
    if not (weights.is_file() and latest is not None and (out / ckpt.CONFIG).is_file()):
        return None
    _, meta = ckpt.load_weights(weights)
    if TrainConfig.from_yaml(out / ckpt.CONFIG).to_dict() != cfg.to_dict():
        return None
    step = meta.get("step", "")
    return int(step) if step == latest.name.removeprefix("step_").lstrip("0") else None


def train_slice(name: str, cfg: Any, pause_at_s: float | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Stage 3 for one model: train (or resume) it until its clock reaches ``pause_at_s`` (None: to the end
    of its budget)."""
    from partialface.training import checkpoint as ckpt
    from partialface.training.loop import train

    latest = ckpt.latest_checkpoint(cfg.run.out)
    if latest is not None:
        say(f"{name}: resuming {cfg.run.out} from {latest.name}")
    res = train(cfg, resume=latest is not None, pause_at_s=pause_at_s)
    say(f"{name}: {res.step} steps in {res.elapsed_s / 60:.2f} min of training"
        + (" (time budget reached)" if res.time_limited else " so far" if res.paused else ""))
    return {"steps": res.step, "elapsed_s": res.elapsed_s, "last_loss": res.last_loss, "done": not res.paused}


def weights_digest(path: Path) -> str:
    """SHA-256 of a weights file's content (metadata and tensors in name order): the same for the same
    weights, whereas the file's bytes are not (safetensors writes the metadata in no fixed order)."""
    import hashlib

    import torch

    from partialface.training import checkpoint as ckpt

    tensors, meta = ckpt.load_weights(path)
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensors[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def benchmark(args: argparse.Namespace, data: Path, pairs: Path, aligned: bool, bench: Path,
              progress: bool) -> dict[str, Any]:
    """Stage 4: the benchmark of the trained models (skipped when it finished for these very weights)."""
    from partialface.evaluation.benchmark import run_benchmark

    weights = {n: args.out / "runs" / n / "model.safetensors" for n in args.models}
    key = {
        "weights": {n: weights_digest(p) for n, p in weights.items()},
        "data": str(data), "pairs": str(pairs), "factors": list(args.factors), "amp": args.amp_used,
    }
    done = bench / DONE
    try:
        if json.loads(done.read_text(encoding="utf-8")) == key:
            print(f"{bench}: benchmark of these weights already done (skipped)", file=sys.stderr)
            return dict(json.loads((bench / "results.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    results = run_benchmark(
        [f"{name}={args.out / 'runs' / name}" for name in args.models], data, pairs, bench, aligned=aligned,
        factors=args.factors, device=args.device, amp=args.amp_used, batch_size=args.batch_size,
        workers=min(args.workers, 4), progress=progress,
    )
    atomic_write_bytes(done, json.dumps(key, sort_keys=True).encode("utf-8"))
    return results


# ---------------------------------------------------------------------------------------------- summary
def margins_line(results: dict[str, Any], ours: str = "ours", other: str = HOLISTIC_BASELINE) -> str:
    """'ours - OTHER' per partial column of the table, in accuracy points (empty if a model is missing)."""
    from partialface.evaluation.protocols import TABLE_COLUMNS

    rows = {(r["model"], r["protocol"], r["setting"]): r["accuracy"] for r in results["protocols"]}
    cells = []
    for proto, setting, head in TABLE_COLUMNS:
        a, b = rows.get((ours, proto, setting)), rows.get((other, proto, setting))
        if a is None or b is None:
            return ""
        cells.append(f"{head} {a - b:+.2f}")
    return f"{ours} - {other} (accuracy points): " + ", ".join(cells)


def _pairs_file(args: argparse.Namespace) -> Path:
    if args.pairs is not None:
        return Path(args.pairs)
    for p in (args.data / "pairs.txt", args.data.parent / "pairs.txt"):
        if p.is_file():
            return p
    raise PartialFaceError(f"--pairs: no pairs.txt in {args.data} or its parent; give --pairs FILE")


def budget(args: argparse.Namespace) -> str:
    """Each model's training budget, in words."""
    return f"{args.steps} steps" if args.minutes is None else f"{args.minutes:g} min"


def _check(args: argparse.Namespace) -> None:
    if args.steps is not None and args.minutes is not None:
        raise PartialFaceError("--steps and --minutes are two budgets: give one (steps: the same table on every run)")
    if args.minutes is None:
        args.steps = DEMO_STEPS if args.steps is None else args.steps
    if args.minutes is None and args.steps < 1:
        raise PartialFaceError(f"--steps must be at least 1, got {args.steps}")
    if args.minutes is not None and not (args.minutes > 0 and math.isfinite(args.minutes)):
        raise PartialFaceError(f"--minutes must be > 0, got {args.minutes}")
    if args.workers < 1:
        raise PartialFaceError(f"--workers must be at least 1, got {args.workers}")
    if args.slices < 1:
        raise PartialFaceError(f"--slices must be at least 1, got {args.slices}")
    if args.threads < 0:
        raise PartialFaceError(f"--threads must be >= 0, got {args.threads}")
    if args.batch_size < 1:
        raise PartialFaceError(f"--batch-size must be at least 1, got {args.batch_size}")
    for opt, path in (("--train-data", args.train_data), ("--data", args.data)):
        if path is not None and not Path(path).is_dir():
            raise PartialFaceError(f"{opt} {path}: no such folder")
    if args.pairs is not None and args.data is None:
        raise PartialFaceError("--pairs needs --data (the test images it names)")


def run(args: argparse.Namespace) -> int:
    """The ``partialface demo`` command."""
    from partialface.data.synth import TRAIN, SynthOptions

    _check(args)
    out: Path = args.out
    st = Stages()
    opts = SynthOptions(
        train_identities=0 if args.train_data else args.train_identities,
        train_per_identity=args.train_per_identity,
        test_identities=0 if args.data else args.test_identities,
        test_per_identity=args.test_per_identity,
        pairs_per_fold=args.pairs_per_fold,
        seed=args.seed,
    )
    opts.check()
    if args.amp == "auto":
        from partialface.devices import native_bf16, resolve_device

        args.amp_used = "bf16" if native_bf16(resolve_device(args.device)) else "none"
    else:
        args.amp_used = args.amp
    # the training configs first: a bad --set or --preset fails before any work
    synthetic_train = args.train_data is None
    train_root = out / "aligned" / TRAIN if synthetic_train else Path(args.train_data)
    pack = out / "train-pack" if synthetic_train else None
    configs = {name: train_config(name, args, train_root, pack) for name in args.models}
    from partialface.models.pretrained import check_model

    for cfg in configs.values():  # every model builds (and finds its pretrained weights) before any work
        check_model(cfg.model)
    check_manifest(out, {"synth": dataclasses.asdict(opts), "train_data": str(args.train_data or ""),
                         "data": str(args.data or "")})
    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    st.say(f"plan: {len(args.models)} models x {budget(args)} of training ({args.preset} preset, "
           f"{'bf16' if args.amp_used == 'bf16' else 'float32'}, torch threads: {torch.get_num_threads()}); "
           f"output in {out}")
    try:
        return _stages(args, opts, configs, st)
    finally:
        torch.set_num_threads(threads)


def _stages(args: argparse.Namespace, opts: Any, configs: dict[str, Any], st: Stages) -> int:
    from partialface.data.synth import TEST, TRAIN
    from partialface.evaluation.benchmark import CONVENTION, results_markdown

    out: Path = args.out
    progress = not args.no_progress
    n_models = len(args.models)
    train_root, pack = Path(configs[args.models[0]].data.root), configs[args.models[0]].data.pack or None
    pack = Path(pack) if pack else None

    if opts.train_identities or opts.test_identities:
        n = opts.train_identities * opts.train_per_identity + opts.test_identities * opts.test_per_identity
        with st.stage("synth", f"{n} synthetic faces into {out / 'synth'}"):
            synthesise(out / "synth", opts, args.workers, progress)
        with st.stage("align", "the synthetic faces, with their landmarks, to 160x160"):
            for split, count in ((TRAIN, opts.train_identities), (TEST, opts.test_identities)):
                if count:
                    align_split(out / "synth" / split, out / "aligned" / split, args.workers, progress)
            if pack is not None and not _done(pack):
                from partialface.training.data import pack_dataset

                pack_dataset(train_root, pack, threads=args.workers, progress=progress)
                _mark_done(pack)
    # with --minutes the models take turns in --slices slices of their budgets, so that a change in the
    # machine's load during the demo falls on all of them alike; a step budget needs no turns
    slices = args.slices if args.minutes is not None else 1
    trained: dict[str, Any] = {}
    for name in args.models:
        steps = finished_run(configs[name])
        if steps is not None:
            st.say(f"{name}: finished run found in {configs[name].run.out} ({steps} steps; skipped)")
            trained[name] = {"steps": steps, "skipped": True, "done": True}
    for k in range(1, slices + 1):
        for i, name in enumerate(args.models, 1):
            if trained.get(name, {}).get("done"):
                continue
            model, augment = MODELS[name]
            how = "partial-face augmentation" if augment else "holistic faces only"
            if args.minutes is None:
                what, pause = f"model {i}/{n_models} ({model}, {how}): {args.steps} steps", None
            else:
                until = args.minutes * k / slices
                what = f"model {i}/{n_models} ({model}, {how}), slice {k}/{slices}: to {until:.3g} min"
                pause = None if k == slices else until * 60
            with st.stage(f"train {name}", what):
                trained[name] = train_slice(name, configs[name], pause, st.say)

    if args.data is not None:
        data, pairs, aligned = Path(args.data), _pairs_file(args), False
    else:
        data, pairs, aligned = out / "aligned" / TEST, out / "synth" / TEST / "pairs.txt", True
    bench = out / "benchmark"
    factors = ",".join(map(str, args.factors))
    with st.stage("benchmark", f"every protocol, both settings, factors {factors}"):
        results = benchmark(args, data, pairs, aligned, bench, progress)
    timings = {**st.seconds, "total": time.perf_counter() - st.start}
    atomic_write_bytes(out / "timings.json", json.dumps({"seconds": timings, "runs": trained}, indent=1).encode())

    print(results_markdown(list(args.models), results["protocols"], CONVENTION).split("\nScoring convention:")[0])
    from partialface.geometry.template import FACTORS

    subset = "" if tuple(args.factors) == FACTORS else " (a subset of the nine, for time; --factors all for every one)"
    print(f"Test set: {data} ({len(results['benchmarks']) // max(1, n_models)} benchmarks per model); "
          f"size factors {', '.join(map(str, args.factors))}{subset}.")
    print(f"Models: the {args.preset} preset, trained for {budget(args)} each; " + "; ".join(
        f"{n}: {trained[n]['steps']} steps" for n in args.models) + ".")
    line = margins_line(results)
    if line:
        print(line)
    print("Time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print(f"Report: {bench / 'report.html'}")
    return 0
