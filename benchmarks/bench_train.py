"""Training-loop throughput per preset: full training steps and inference, images/s (issue #3).

A training step here is what ``partialface train`` does per batch once the faces are in memory: partial-face
augmentation of uint8 (B, 160, 160, 3) faces on the device (``augment_batch`` with the preset's options),
normalisation/resizing (``to_model_input``), forward + loss (the preset's criterion with 1000 classes),
backward, optimizer step (the preset's optimizer, weight-decay groups, per-step lr), under the preset's
AMP / channels_last settings. Inference = eval-mode forward of holistic faces under no_grad.
Reported: median and best images/s of ``--steps`` timed steps after 2 warm-up steps, the augmentation's
share of a step, FLOPs per image (forward, torch.utils.flop_counter via partialface.models.summary) and
the achieved TFLOP/s (training counted as 3 x forward FLOPs). ``--loader`` also times the data pipeline on a synthetic
identity-folder dataset: PNG decoding versus the packed memory-mapped array.

    .venv/bin/python benchmarks/bench_train.py --presets tiny cpu --threads 2 --steps 5 --loader
    .venv/bin/python benchmarks/bench_train.py --presets paper --device cuda --steps 10   # bf16 + channels_last
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partialface.errors import script_exit
from partialface.inference.memory import keep_freed_memory
from partialface.losses import build_criterion
from partialface.models import create_model
from partialface.models.framing import framing_of, to_model_input
from partialface.models.summary import summarize
from partialface.training.augment import augment_batch, sample_params
from partialface.training.config import TrainConfig
from partialface.training.loop import TrainModule
from partialface.training.optim import build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _times(fn: Callable[[], Any], steps: int, device: torch.device) -> list[float]:
    for _ in range(2):
        fn()
    out = []
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def bench_preset(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    overrides = [f"run.device={args.device}"]
    if args.batch:
        overrides.append(f"optim.batch_size={args.batch}")
    if args.amp:
        overrides.append(f"run.amp={args.amp}")
    if args.channels_last is not None:
        overrides.append(f"run.channels_last={str(args.channels_last).lower()}")
    cfg = TrainConfig.from_yaml(preset, overrides)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    cl = cfg.run.channels_last
    torch.manual_seed(0)
    model = create_model(cfg.model)
    module = TrainModule(model, build_criterion(cfg.loss, 1000, model.embedding_dim)).to(device)
    if cl:
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    fwd: torch.nn.Module = TrainModule(torch.compile(model), module.criterion) if args.compile else module  # type: ignore[arg-type]
    opt = build_optimizer(module, cfg.optim)
    B = cfg.optim.batch_size
    rng = np.random.default_rng(0)
    faces = torch.from_numpy(rng.integers(0, 256, (B, 160, 160, 3), dtype=np.uint8)).to(device)
    params = np.stack([sample_params(cfg.augment, np.random.default_rng([0, 0, i])) for i in range(B)])
    labels = torch.from_numpy(rng.integers(0, 1000, B)).to(device)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if cfg.run.amp == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def augment() -> torch.Tensor:
        x, _ = augment_batch(faces, params, cfg.augment.centring)
        return to_model_input(x, cfg.model.input_size, cl, framing_of(cfg.model))

    def train_step() -> None:
        x = augment()
        with autocast():
            loss = fwd(x, labels)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    holistic = to_model_input(faces, cfg.model.input_size, cl, framing_of(cfg.model))

    def infer_step() -> None:
        with torch.no_grad(), autocast():
            model(holistic)

    module.train()
    t_train = _times(train_step, args.steps, device)
    t_aug = _times(augment, args.steps, device)
    model.eval()
    t_inf = _times(infer_step, args.steps, device)
    flops = summarize(cfg.model).flops
    train_best = B / min(t_train)
    return {
        "preset": preset,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "batch": B,
        "amp": cfg.run.amp,
        "cl": cl,
        "train_med": B / statistics.median(t_train),
        "train_best": train_best,
        "aug_share": statistics.median(t_aug) / statistics.median(t_train),
        "infer_med": B / statistics.median(t_inf),
        "infer_best": B / min(t_inf),
        "gflops": flops / 1e9,
        "train_tflops": 3 * flops * B / statistics.median(t_train) / 1e12,
        "infer_tflops": flops * B / statistics.median(t_inf) / 1e12,
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
    }


def bench_loader(args: argparse.Namespace) -> list[tuple[str, float]]:
    """images/s of the DataLoader (decode + augmentation draws) from PNG folders and from a pack."""
    from partialface.data.images import write_image
    from partialface.training.config import AugmentConfig
    from partialface.training.data import (
        EpochSampler,
        FolderSource,
        PackSource,
        TrainDataset,
        make_loader,
        pack_dataset,
        split_identities,
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        rng = np.random.default_rng(0)
        for c in range(16):
            for i in range(32):
                write_image(root / f"id{c:02d}" / f"{i:03d}.jpg", rng.integers(0, 256, (160, 160, 3), dtype=np.uint8))
        pack = pack_dataset(root, Path(tmp) / "pack", progress=False)
        for name, source in (("folders (jpg decode)", FolderSource(root)), ("pack (memory-mapped)", PackSource(pack))):
            split = split_identities(source, 2, 0, 0)
            ds = TrainDataset(split, AugmentConfig(), 0)
            sampler = EpochSampler(len(split.train_index), 64)
            loader = make_loader(ds, sampler, args.workers, False)
            best = 0.0
            for epoch in range(2):  # the first epoch includes starting the workers
                sampler.set_epoch(epoch)
                t = time.perf_counter()
                n = sum(len(batch[1]) for batch in loader)
                best = max(best, n / (time.perf_counter() - t))
            rows.append((f"{name}, {args.workers} workers", best))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "cpu"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=0, help="global batch (default: the preset's)")
    ap.add_argument("--amp", choices=["none", "bf16"], help="default: the preset's")
    ap.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--loader", action="store_true", help="also time the data pipeline")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for --loader")
    args = ap.parse_args()
    malloc = keep_freed_memory()  # as `partialface train` does (PARTIALFACE_MALLOC=system measures without it)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"malloc {'keeps freed memory' if malloc else 'as the system has it'}")
    header = (
        f"{'preset':<7}{'device':<12}{'batch':>6}{'amp':>6}{'cl':>4}{'train img/s med/best':>22}{'aug %':>7}"
        f"{'infer img/s med/best':>22}{'GFLOP/img':>10}{'train TFLOP/s':>14}{'infer TFLOP/s':>14}"
    )
    print(header)
    for preset in args.presets:
        batch = args.batch
        while True:
            try:
                r = bench_preset(preset, args)
                break
            except torch.OutOfMemoryError:
                batch = (batch or TrainConfig.from_yaml(preset).optim.batch_size) // 2
                if batch < 8:
                    raise
                print(f"{preset}: out of memory, retrying with batch {batch}")
                args.batch = batch
                torch.cuda.empty_cache()
        print(
            f"{r['preset']:<7}{r['device'][:11]:<12}{r['batch']:>6}{r['amp']:>6}{'y' if r['cl'] else 'n':>4}"
            f"{r['train_med']:>13.1f}/{r['train_best']:<8.1f}{100 * r['aug_share']:>6.1f}"
            f"{r['infer_med']:>13.1f}/{r['infer_best']:<8.1f}{r['gflops']:>10.3f}{r['train_tflops']:>14.3f}"
            f"{r['infer_tflops']:>14.3f}"
        )
        if r["device"].startswith("cuda"):
            print(f"  {r['device']}: peak memory {r['peak_mem_gb']:.1f} GiB")
    if args.loader:
        for name, rate in bench_loader(args):
            print(f"loader: {name}: {rate:.0f} images/s")


if __name__ == "__main__":
    script_exit(main)
