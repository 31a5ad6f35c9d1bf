"""``partialface benchmark``: score models on the PartialLFW protocols (spec §3) with the spec's convention (§4).

Steps: read the pairs; find the images (``--drop-missing`` leaves out pairs whose images are missing and
says how many); align the data once into ``OUT/aligned`` (cached, resumable) unless it is already aligned;
embed every unique image once per needed variant per model (cache ``OUT/embeddings/<model>.npz``,
resumable); score every benchmark; write ``results.json``, ``results.md``, ``per_factor.csv`` and
``scores/<model>.npz``; then the HTML report if :mod:`partialface.evaluation.report` is installed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partialface.data.images import atomic_write_bytes
from partialface.data.lfw import PairsFile, read_pairs, resolve_images
from partialface.devices import resolve_device
from partialface.errors import PartialFaceError
from partialface.evaluation.embed import EmbedStats, cache_name, decode_aligned, embed_dataset, load_embedder, save_npz
from partialface.evaluation.embedders import AMP_MODES, Embedder
from partialface.evaluation.protocols import (
    DEFAULT_COMBOS,
    HOLISTIC,
    PROTOCOLS,
    SETTINGS,
    TABLE_COLUMNS,
    Benchmark,
    aggregate,
    build_benchmarks,
    required_variants,
)
from partialface.geometry.template import FACTORS, IMAGE_SIZE, visible_fraction
from partialface.inference.runners import CHOICES as INFER_CHOICES
from partialface.metrics import cosine_scores, score_benchmark

CONVENTION = (
    "Embeddings are L2-normalised; a pair's score is their cosine similarity ('same' if score >= threshold). "
    "k-fold accuracy: for each fold the threshold is chosen on the other folds only (candidates: the distinct "
    "training scores; the winner maximises training accuracy; ties go to the smallest), then accuracy is "
    "measured on that fold; mean and population std over folds, in %. ROC AUC, EER and TAR@FAR=1e-3/1e-2 use "
    "all pairs of a benchmark at once. A protocol's number is the mean over its part combinations and factors "
    "(the ± is the mean of the benchmarks' fold std)."
)
METRICS = ("accuracy", "accuracy_std", "auc", "eer", "tar_far_1e3", "tar_far_1e2")


# ---------------------------------------------------------------------------------------------- options
def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers, e.g. 0.3,0.5") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated fold numbers, e.g. 1,2,3") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options."""
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                        help="model to score (repeatable): a run folder, step folder or model.safetensors of "
                        "`partialface train`; or dlib's face ResNet: 'dlib' (the PyTorch port, 150x150 resize of the "
                        "aligned face), 'dlib-chip' (the port on dlib's own face framing) or 'dlib-bin' (dlib "
                        "itself; slow); NAME=PATH names it in the report")
    parser.add_argument("--data", required=True, type=Path,
                        help="LFW-layout image folder (NAME/NAME_000N.jpg), raw or already aligned")
    parser.add_argument("--pairs", required=True, type=Path, help="pairs file (LFW's pairs.txt format)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (caches and results)")
    parser.add_argument("--aligned", action="store_true",
                        help="--data holds aligned 160x160 faces already (auto-detected for a PNG tree)")
    parser.add_argument("--landmarks", type=Path, default=None,
                        help="landmarks TSV for aligning raw --data (path + 5 points, as `partialface align "
                        "--landmarks`); images without a row are detected with MTCNN")
    parser.add_argument("--settings", type=_names, default=list(SETTINGS),
                        help=f"comma-separated settings of the partial protocols (default {','.join(SETTINGS)})")
    parser.add_argument("--factors", type=_floats, default=list(FACTORS),
                        help="comma-separated size factors (default all 9)")
    parser.add_argument("--protocols", type=_names, default=list(PROTOCOLS),
                        help=f"comma-separated protocols (default {','.join(PROTOCOLS)})")
    parser.add_argument("--combos", type=_names, default=None,
                        help="comma-separated part combinations to keep, e.g. lEye-holistic,Nose-Nose,lEye-Nose "
                        "(default all of each protocol)")
    parser.add_argument("--folds", type=_ints, default=None,
                        help="comma-separated folds to use, numbered from 1 (at least 2; default all)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    parser.add_argument("--infer", choices=INFER_CHOICES, default=None,
                        help="inference path: auto (default: the fastest exact float32 path here, ONNX Runtime "
                        "when installed, else PyTorch), eager (PyTorch float32), onnx (ONNX Runtime float32), "
                        "bf16 (bf16 autocast), fp16 (CUDA autocast), int8 (ONNX Runtime static int8, calibrated "
                        "on the first 256 faces); reduced precision only when asked (see docs/benchmarks.md)")
    parser.add_argument("--amp", choices=AMP_MODES, default="auto",
                        help="older spelling of --infer: auto, bf16 (= --infer bf16), none (= --infer eager)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="image decoding threads (default min(4, cores))")
    parser.add_argument("--flip", action="store_true",
                        help="embed normalise(f(x) + f(mirror(x))); mirroring swaps left and right, so a "
                        "left-eye face is also seen as a right eye at the mirrored place")
    parser.add_argument("--drop-missing", action="store_true",
                        help="leave out pairs whose images are missing or failed to align (reports how many)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


# ---------------------------------------------------------------------------------------------- helpers
def _combo_name(protocol: str, pair: tuple[str, str]) -> str:
    """A part pair as --combos names it (as ``Benchmark.combo``): 'holistic', 'lEye-holistic', 'lEye-Nose'."""
    if protocol == "holistic":
        return HOLISTIC
    a, b = pair
    return f"{b}-{HOLISTIC}" if a == HOLISTIC else f"{a}-{b}"


def _combo_overrides(combos: Sequence[str] | None, protocols: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """--combos names (e.g. 'lEye-holistic', 'lEye-Nose') -> per-protocol part pairs; a partial protocol none
    of whose combinations is named is left out (holistic is scored whenever it is in --protocols)."""
    if not combos:
        return {}
    known = {p: {_combo_name(p, c): c for c in DEFAULT_COMBOS[p]} for p in PROTOCOLS if p in protocols}
    out: dict[str, list[tuple[str, str]]] = {p: [] for p in known}
    for name in combos:
        hits = [p for p in known if name in known[p]]
        if not hits:
            choices = sorted({n for p in known for n in known[p]})
            raise PartialFaceError(f"--combos {name!r} is not a part combination of the chosen protocols; "
                                   f"choose from {', '.join(choices)}")
        for p in hits:
            out[p].append(known[p][name])
    return out


def _select_folds(pairs: PairsFile, folds: Sequence[int] | None) -> PairsFile:
    if not folds:
        return pairs
    bad = [f for f in folds if not 1 <= f <= pairs.folds]
    if bad:
        raise PartialFaceError(f"--folds {bad[0]}: {pairs.name} has folds 1..{pairs.folds}")
    keep = {f - 1 for f in folds}
    if len(keep) < 2:
        raise PartialFaceError("--folds: give at least 2 folds (each fold's threshold is chosen on the others)")
    kept = tuple(p for p in pairs.pairs if p.fold in keep)
    return PairsFile(kept, pairs.folds, pairs.per_fold, pairs.path, pairs.dropped)


def _link_needed(found: dict[str, Path], data: Path, dst: Path) -> Path:
    """A folder of links to just the images the pairs need (``dst/NAME/NAME_000N.jpg``), so that aligning
    skips the rest of the dataset (LFW: 7,701 of 13,233 images). Falls back to copies where links fail."""
    import shutil

    for path in found.values():
        rel = path.relative_to(data)
        link = dst / rel
        if link.is_file():
            continue
        if link.is_symlink():  # dangling: the data moved
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(path.resolve())
        except OSError:
            shutil.copy2(path, link)
    return dst


def _looks_aligned(paths: Sequence[Path]) -> bool:
    if not paths or any(p.suffix.lower() != ".png" for p in paths):
        return False
    try:
        return decode_aligned(paths[0]).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    except PartialFaceError:
        return False


def _visible(bench: Benchmark) -> float:
    fr = [1.0 if p == HOLISTIC else visible_fraction(p, bench.factor) for p in bench.parts]  # type: ignore[arg-type]
    if bench.protocol == "partial-holistic":
        return fr[1]
    return float(np.mean(fr))


def _fmt(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    return f"{row['accuracy']:.2f} ± {row['accuracy_std']:.2f}"


def results_markdown(model_names: Sequence[str], protocol_rows: Sequence[dict[str, Any]], convention: str) -> str:
    """The paper-style table: rows models; columns holistic, then NC and C partial-holistic/same/cross."""
    lines = ["# PartialLFW results", "", "Accuracy in % (mean ± std over folds).", ""]
    lines.append("| model | " + " | ".join(h for _, _, h in TABLE_COLUMNS) + " |")
    lines.append("|---|" + "---:|" * len(TABLE_COLUMNS))
    for m in model_names:
        cells = []
        for proto, setting, _ in TABLE_COLUMNS:
            row = next((r for r in protocol_rows if r["model"] == m and r["protocol"] == proto
                        and r["setting"] == setting), None)
            cells.append(_fmt(row))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "NC: non-centred, C: centred; p-hol / p-same / p-cross: partial-holistic / partial-same / "
              "partial-cross.", "", f"Scoring convention: {convention}", ""]
    return "\n".join(lines)


def _csv_text(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- the run
def run_benchmark(
    models: Sequence[str | Embedder],
    data: str | os.PathLike[str],
    pairs_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    aligned: bool = False,
    landmarks: str | os.PathLike[str] | None = None,
    settings: Sequence[str] = SETTINGS,
    factors: Sequence[float] = FACTORS,
    protocols: Sequence[str] = PROTOCOLS,
    combos: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    device: str = "auto",
    amp: str = "auto",
    infer: str | None = None,
    batch_size: int = 128,
    workers: int = 2,
    flip: bool = False,
    drop_missing: bool = False,
    progress: bool = True,
    report: bool = True,
    stats: dict[str, EmbedStats] | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the results.json content.

    ``models``: ``--model`` values (PATH or NAME=PATH) or ready :class:`Embedder` objects; ``infer``: the
    inference path of the models given as values (``partialface.inference.runners``; default from ``amp``,
    :data:`partialface.evaluation.embedders.AMP_MODES`). Every model is loaded, and every option checked, before
    any image is aligned or embedded.
    ``stats``: if given, filled with each model's :class:`EmbedStats` (images decoded, embeddings computed).
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise PartialFaceError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 0:
        raise PartialFaceError(f"--workers must be >= 0, got {workers}")
    bad = [f for f in factors if not 0 < f <= max(FACTORS)]
    if bad:
        raise PartialFaceError(f"--factors {bad[0]:g}: size factors must be in (0, {max(FACTORS):g}] (PartialLFW's: "
                               f"{','.join(f'{f:g}' for f in FACTORS)}); a larger part leaves the 160x160 face")
    out_p, data_p = Path(out), Path(data)
    pairs = _select_folds(read_pairs(pairs_file), folds)
    benchmarks = build_benchmarks(pairs, settings, factors, protocols, _combo_overrides(combos, list(protocols)))
    if not benchmarks:
        raise PartialFaceError("nothing to score: the chosen --protocols/--combos/--settings leave no benchmark")
    found = resolve_images(pairs, data_p, drop_missing=drop_missing)
    pairs = pairs.keep_only(found)
    dev = resolve_device(device)
    # fail before the long work: every model is loaded (and named) before anything is aligned or embedded
    embedders = [m if isinstance(m, Embedder) else load_embedder(m, dev, amp, infer) for m in models]
    names = [e.name for e in embedders]
    if len(set(names)) != len(names):
        raise PartialFaceError(f"--model: two models are named the same ({', '.join(names)}); use NAME=PATH")
    if not aligned:
        aligned = _looks_aligned([found[k] for k in pairs.images()[:1]]) and all(
            p.suffix.lower() == ".png" for p in found.values())
    if not aligned:
        from partialface.detect.dataset import align_dataset

        dst = out_p / "aligned"
        src = _link_needed(found, data_p, out_p / "raw")
        align_dataset(src, dst, landmarks=landmarks, batch_size=32, workers=workers, device=device,
                      progress=progress)
        found = resolve_images(pairs, dst, suffixes=(".png",), drop_missing=drop_missing)
        pairs = pairs.keep_only(found)
        data_used = dst
    else:
        data_used = data_p
    if pairs.dropped:
        print(f"note: dropped {pairs.dropped} of {pairs.dropped + len(pairs)} pairs with missing or unaligned "
              "images (--drop-missing); folds are kept", file=sys.stderr)
    if not len(pairs):
        raise PartialFaceError(f"{pairs_file}: no pairs left to score")
    benchmarks = [Benchmark(b.protocol, b.setting, b.parts, b.factor, pairs) for b in benchmarks]
    keys = pairs.images()
    index = pairs.image_index()
    paths = [found[k] for k in keys]
    variants = required_variants(benchmarks)
    bench_rows: list[dict[str, Any]] = []
    proto_rows: list[dict[str, Any]] = []
    model_rows: list[dict[str, Any]] = []
    for emb in embedders:
        st = EmbedStats()
        if stats is not None:
            stats[emb.name] = st
        E = embed_dataset(emb, keys, paths, variants, out_p / "embeddings" / f"{cache_name(emb.name)}.npz",
                          flip=flip, batch_size=batch_size, workers=workers, progress=progress, stats=st)
        precision = getattr(emb, "autocast", None)
        model_rows.append({"name": emb.name, "source": emb.source, "embedding_dim": emb.embedding_dim, "flip": flip,
                           "autocast": str(precision).removeprefix("torch.") if precision is not None else "none",
                           "infer": getattr(emb, "path", "")})
        per_model: list[tuple[Benchmark, dict[str, float]]] = []
        score_arrays: dict[str, np.ndarray] = {}
        for b in tqdm(benchmarks, desc=f"score {emb.name}", disable=not progress, dynamic_ncols=True):
            sp = b.scored_pairs(index)
            s = cosine_scores(E[str(sp.left)][sp.left_index], E[str(sp.right)][sp.right_index])
            m = score_benchmark(s, sp.same, sp.fold).as_dict()
            metrics = {k: m[k] for k in METRICS}
            per_model.append((b, metrics))
            score_arrays[f"{b.name}|scores"] = s
            score_arrays[f"{b.name}|same"] = sp.same
            score_arrays[f"{b.name}|fold"] = sp.fold
            bench_rows.append({"model": emb.name, "name": b.name, "protocol": b.protocol, "setting": b.setting,
                               "combo": b.combo, "parts": list(b.parts), "factor": b.factor,
                               "visible_fraction": _visible(b), "pairs": len(b), **metrics})
        save_npz(out_p / "scores" / f"{cache_name(emb.name)}.npz", score_arrays)
        for row in aggregate(per_model, by=("protocol", "setting")):
            proto_rows.append({"model": emb.name, **row})
    results: dict[str, Any] = {
        "convention": CONVENTION,
        "pairs_file": str(pairs_file),
        "data": str(data_used),
        "dropped_pairs": int(pairs.dropped),
        "models": model_rows,
        "benchmarks": bench_rows,
        "protocols": proto_rows,
    }
    out_p.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_p / "results.json", json.dumps(results, indent=1).encode("utf-8"))
    atomic_write_bytes(out_p / "results.md", results_markdown(names, proto_rows, CONVENTION).encode("utf-8"))
    fields = ["model", "protocol", "setting", "combo", "factor", "visible_fraction", "pairs", *METRICS]
    atomic_write_bytes(out_p / "per_factor.csv", _csv_text(bench_rows, fields).encode("utf-8"))
    if report:
        _report(out_p, embedders, paths)
    return results


def _report(out: Path, embedders: Sequence[Embedder], paths: Sequence[Path]) -> None:
    try:
        from partialface.evaluation.report import write_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("note: partialface.evaluation.report is not installed; skipping figures and report.html",
              file=sys.stderr)
        return
    firsts: dict[str, Path] = {}
    for p in paths:  # the first face of up to 4 identities
        firsts.setdefault(p.parent.name, p)
    chosen = list(firsts.values())[:4]
    sample = np.stack([decode_aligned(p) for p in chosen]) if chosen else np.zeros((0, 160, 160, 3), np.uint8)
    path = write_report(out, {e.name: e.module for e in embedders}, sample)
    print(f"report: {path}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """The ``partialface benchmark`` command."""
    res = run_benchmark(
        args.model, args.data, args.pairs, args.out, aligned=args.aligned, settings=args.settings,
        landmarks=args.landmarks, factors=args.factors, protocols=args.protocols, combos=args.combos,
        folds=args.folds, device=args.device, amp=args.amp, infer=args.infer,
        batch_size=args.batch_size, workers=args.workers, flip=args.flip, drop_missing=args.drop_missing,
        progress=not args.no_progress,
    )
    print(results_markdown([m["name"] for m in res["models"]], res["protocols"], CONVENTION))
    if res["dropped_pairs"]:
        print(f"dropped pairs (missing images): {res['dropped_pairs']}")
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0
