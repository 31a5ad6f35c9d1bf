"""In-process ``partialface.verify`` of two photos, with and without the per-region account, per model.

Different LFW pairs each time (the first ``--pairs`` + 1 people with two photos, their first two; the first pair
warms the model up), so nothing is reused between calls; prints the median per model and setting, and the ratio
of the two settings measured in the same run.

    .venv/bin/python benchmarks/bench_verify.py --lfw ../shared/data/lfw/lfw-deepfunneled \
        [--model sface-real-800 --model ours_sface-ft] [--pairs 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from partialface.errors import PartialFaceError, script_exit


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=Path, required=True, help="LFW photos (identity folders of .jpg)")
    ap.add_argument("--model", action="append", default=None, help="repeat for several (default: the default)")
    ap.add_argument("--pairs", type=int, default=8)
    args = ap.parse_args(argv)
    if not args.lfw.is_dir():
        raise PartialFaceError(f"--lfw {args.lfw}: no such folder (give LFW's photo folder)")
    import partialface
    from partialface.inference import cpu_info
    from partialface.models.catalogue import DEFAULT_MODEL

    people = [p for p in sorted(args.lfw.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2]
    pairs = [sorted(p.glob("*.jpg"))[:2] for p in people[: args.pairs + 1]]
    if len(pairs) < 2:
        raise PartialFaceError(f"--lfw {args.lfw}: fewer than two people with two photos")
    cpu = cpu_info()
    print(f"{cpu.vendor} {cpu.model} (family/model {cpu.family}), {cpu.cores} cores; {len(pairs) - 1} pairs")
    print("| model | regions=True | regions=False | ratio |\n|---|---:|---:|---:|")
    for model in args.model or [DEFAULT_MODEL]:
        med = {}
        for regions in (True, False):
            partialface.verify(*pairs[0], model, regions=regions)
            times = []
            for a, b in pairs[1:]:
                t = time.perf_counter()
                partialface.verify(a, b, model, regions=regions)
                times.append(time.perf_counter() - t)
            med[regions] = statistics.median(times) * 1e3
        print(f"| {model} | {med[True]:.0f} ms | {med[False]:.0f} ms | {med[True] / med[False]:.2f}x |")


if __name__ == "__main__":
    script_exit(main)
