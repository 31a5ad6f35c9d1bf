"""Scoring speed for one PartialLFW benchmark (12,000 pairs, 10 folds) and for all 181 benchmarks.

Times the vectorised exact k-fold accuracy, each ROC figure, and the whole ``score_benchmark`` bundle
(median of ``--repeats`` runs), with continuous and heavily tied scores.

    .venv/bin/python benchmarks/bench_metrics.py --pairs 12000 --folds 10 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from partialface.errors import script_exit
from partialface.metrics import eer, roc_auc, score_benchmark, tar_at_far, tenfold_accuracy


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=12000)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    same = np.arange(args.pairs) % 2 == 0
    folds = np.repeat(np.arange(args.folds), -(-args.pairs // args.folds))[: args.pairs]
    cases = {
        "continuous float32": (rng.normal(size=args.pairs) * 0.2 + 0.3 * same).astype(np.float32),
        "tied (21 values)": np.round(rng.normal(size=args.pairs) * 0.2 + 0.3 * same, 1),
    }
    print(f"{args.pairs} pairs, {args.folds} folds, median of {args.repeats} runs (ms)")
    print(f"{'scores':<20} {'k-fold acc':>10} {'AUC':>8} {'EER':>8} {'TAR@1e-3':>9} {'all':>8} {'x181':>8}")
    for name, s in cases.items():
        fns: list[Callable[[], object]] = [
            partial(tenfold_accuracy, s, same, folds),
            partial(roc_auc, s, same),
            partial(eer, s, same),
            partial(tar_at_far, s, same, 1e-3),
            partial(score_benchmark, s, same, folds),
        ]
        row = [median_ms(fn, args.repeats) for fn in fns]
        cells = " ".join(f"{v:>{w}.2f}" for v, w in zip(row, (10, 8, 8, 9, 8), strict=True))
        print(f"{name:<20} {cells} {row[-1] * 181 / 1000:>7.2f}s")


if __name__ == "__main__":
    script_exit(main)
