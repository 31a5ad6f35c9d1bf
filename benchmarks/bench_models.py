"""Training-step and inference throughput of every model x preset (issue #3).

Training step = forward + loss (shared linear classifier, weighted CE + diversity for "ours") + backward
+ SGD step (momentum 0.9, weight decay 5e-4), on random inputs at the preset's input size. Inference =
eval-mode forward under no_grad. ``train TFLOP/s``: the median training rate x 3 x the forward FLOPs
(a backward pass costs about two forwards). Reports the median and the best of ``--steps`` timed steps
after ``--warmup`` untimed steps (on a shared machine the best is the less disturbed figure),
next to parameters and FLOPs per image (2 x multiply-adds, torch.utils.flop_counter).

    .venv/bin/python benchmarks/bench_models.py --presets cpu tiny --batch 64 --steps 10 --threads 2
    .venv/bin/python benchmarks/bench_models.py --presets paper --batch 8 --warmup 1 --steps 2 --channels-last
    .venv/bin/python benchmarks/bench_models.py --presets paper --device cuda --amp bf16 --channels-last
    .venv/bin/python benchmarks/bench_models.py --presets paper --models dlib_resnet ours_dlib ours_dlib_light \
        --input-size 150 --embedding-dim 128 --amp bf16 --channels-last   # dlib's chip: the light model's step cost
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from partialface.errors import script_exit
from partialface.losses import LossConfig, build_criterion
from partialface.models import ModelConfig, create_model, list_models
from partialface.models.summary import summarize


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rates(
    fn: Callable[[], None], batch: int, steps: int, device: torch.device, warmup: int = 2
) -> tuple[float, float]:
    """(median, best) images/s over ``steps`` timed calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times), batch / min(times)


def bench(cfg: ModelConfig, args: argparse.Namespace) -> tuple[tuple[float, float], tuple[float, float]]:
    """((train median, best), (inference median, best)) images/s for ``cfg``."""
    device = torch.device(args.device)
    model = create_model(cfg).to(device)
    criterion = build_criterion(LossConfig(), args.num_classes, cfg.embedding_dim).to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)  # type: ignore[call-overload]
    x = torch.randn(args.batch, 3, cfg.input_size, cfg.input_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, args.num_classes, (args.batch,), device=device)
    params = list(model.parameters()) + list(criterion.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

    def autocast() -> contextlib.AbstractContextManager[None]:
        if args.amp == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = criterion(model(x), y).total
        loss.backward()
        opt.step()

    def infer_step() -> None:
        with torch.no_grad(), autocast():
            model(x)

    model.train()
    train = _rates(train_step, args.batch, args.steps, device, args.warmup)
    model.eval()
    infer = _rates(infer_step, args.batch, args.steps, device, args.warmup)
    return train, infer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["cpu", "tiny"], choices=ModelConfig.presets())
    ap.add_argument("--models", nargs="+", default=None, help="default: all registered")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--num-classes", type=int, default=1000, help="identities of the classifier")
    ap.add_argument("--input-size", type=int, default=0, help="input side (default: the preset's)")
    ap.add_argument("--embedding-dim", type=int, default=0, help="embedding size (default: the preset's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = args.models or list_models()

    print(
        f"device={args.device} threads={args.threads} batch={args.batch} amp={args.amp} "
        f"channels_last={args.channels_last} classes={args.num_classes}"
    )
    header = (
        f"{'model':<15} {'preset':<6} {'input':>7} {'params':>9} {'GFLOPs':>7} "
        f"{'train img/s (median/best)':>26} {'infer img/s (median/best)':>26} {'train TFLOP/s':>13}"
    )
    print(header)
    print("-" * len(header))
    for preset in args.presets:
        for name in models:
            sizes = {k: v for k, v in (("input_size", args.input_size), ("embedding_dim", args.embedding_dim)) if v}
            cfg = ModelConfig.preset(preset, name=name, **sizes)
            s = summarize(cfg)
            train, infer = bench(cfg, args)
            print(
                f"{name:<15} {preset:<6} {cfg.input_size:>7} {s.params / 1e6:>8.3f}M {s.flops / 1e9:>7.3f} "
                f"{f'{train[0]:.1f} / {train[1]:.1f}':>26} {f'{infer[0]:.1f} / {infer[1]:.1f}':>26} "
                f"{train[0] * 3 * s.flops / 1e12:>13.3f}",  # a training step ~ 3 forwards (forward + backward)
                flush=True,
            )


if __name__ == "__main__":
    script_exit(main)
