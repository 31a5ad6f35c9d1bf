"""The ResNet stem's 3x3/2 max pool, compiled or not, per dtype and width (issue #12): ms per 32 faces.

The input is what the stem hands the pool for a 160x160 face: (32, width, 80, 80), channels_last, after a ReLU.
``inductor`` compiles the pool as it is; ``aten`` runs :class:`~partialface.models.resnet.MaxPool`'s
``compile_bf16_form`` (ATen's kernel inside the compiled graph), which ``--infer compile-bf16`` uses on a CPU for
fewer than 32 channels. Every row is checked equal to eager before it is timed.

    GOMP_SPINCOUNT=10000 .venv/bin/python benchmarks/bench_pool.py --widths 16 64
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from bench_infer import _best_rate  # this folder: the scripts run as files

from partialface.errors import script_exit
from partialface.inference.hardware import cpu_info
from partialface.models.resnet import MaxPool


def best_ms(fn: Callable[[torch.Tensor], object], x: torch.Tensor, calls: int = 20) -> float:
    """ms per call of ``fn(x)``: the best of 5 rounds of ``calls`` (bench_infer's timing)."""
    with torch.inference_mode():
        return 1e3 / _best_rate(lambda: [fn(x) for _ in range(calls)], calls, torch.device("cpu"), 5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    args = ap.parse_args()
    print(f"# bench_pool: {cpu_info().describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{time.strftime('%Y-%m-%d')}")
    print("| width | dtype | eager ms | inductor ms | aten in graph ms |")
    print("|---:|---|---:|---:|---:|")
    torch.manual_seed(0)
    for width in args.widths:
        pool = MaxPool(width)
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.relu(torch.randn(32, width, 80, 80)).to(dtype).contiguous(memory_format=torch.channels_last)
            ways: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
                "eager": pool, "inductor": torch.compile(pool, dynamic=False),
                "aten": torch.compile(pool.compile_bf16_form() if width < 32 else pool, dynamic=False)}
            with torch.inference_mode():
                want = pool(x)
                for name, fn in ways.items():
                    assert torch.equal(fn(x), want), name
            ms = {name: best_ms(fn, x) for name, fn in ways.items()}
            aten = f"{ms['aten']:.2f}" if width < 32 else "(inductor's)"
            name = str(dtype).removeprefix("torch.")
            print(f"| {width} | {name} | {ms['eager']:.2f} | {ms['inductor']:.2f} | {aten} |")


if __name__ == "__main__":
    script_exit(main)
