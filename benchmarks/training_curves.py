"""Held-out accuracy and the spread of the importance weights s against training steps, from run folders'
verify.csv (``data.verify_root`` / ``run.verify_every`` checks; issue #13).

    .venv/bin/python benchmarks/training_curves.py RUN [RUN ...] --out docs/images/final_pair_curves.png

Prints one table row per check and run; draws holistic and partial held-out accuracy (left) and, for
attention models, the mean over faces of min_k s and max_k s (right; uniform = 1/K).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from partialface.errors import script_exit


def read(run: Path) -> list[dict[str, str]]:
    with (run / "verify.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--names", default="", help="comma-separated labels (default: the folder names)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    names = args.names.split(",") if args.names else [r.name for r in args.runs]
    data = {n: read(r) for n, r in zip(names, args.runs, strict=True)}
    print("| run | step | held-out holistic | held-out partial | s min | s max |\n|---|---:|---:|---:|---:|---:|")
    for n, rows in data.items():
        for r in rows:
            s = f"{float(r['s_min']):.4f} | {float(r['s_max']):.4f}" if r.get("s_min") else " | "
            print(f"| {n} | {r['step']} | {float(r['holistic_acc']):.2f} | {float(r['partial_acc']):.2f} | {s} |")
    if args.out is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, spread) = plt.subplots(1, 2, figsize=(10, 3.8))
    for n, rows in data.items():
        steps = [int(r["step"]) for r in rows]
        line = acc.plot(steps, [float(r["holistic_acc"]) for r in rows], label=f"{n} holistic")[0]
        acc.plot(steps, [float(r["partial_acc"]) for r in rows], "--", color=line.get_color(), label=f"{n} partial")
        if rows and rows[0].get("s_min"):
            spread.plot(steps, [float(r["s_max"]) for r in rows], color=line.get_color(), label=f"{n} max_k s")
            spread.plot(steps, [float(r["s_min"]) for r in rows], ":", color=line.get_color(), label=f"{n} min_k s")
    acc.set(xlabel="step (batch 64)", ylabel="held-out 10-fold accuracy (%)", title="held-out CelebA identities")
    spread.set(xlabel="step (batch 64)", ylabel="s (mean over faces)", title="spread of the importance weights")
    acc.legend(fontsize=7)
    spread.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    script_exit(main)
