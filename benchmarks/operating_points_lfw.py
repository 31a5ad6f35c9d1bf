"""What a model's shipped operating points give on a benchmark's pairs (issue #14): real FAR, TAR and accuracy.

Reads the scored pairs of ``partialface benchmark --out BENCH`` (``BENCH/scores/<model>.npz``, every pair's
cosine and label) and the thresholds in the model file (measured on held-out identities, never these pairs).
Holistic pairs are read at the holistic thresholds; the non-centred partial-holistic pairs at ``--factor``
(each part against whole faces, both orders) at the partial thresholds, and at the holistic 1e-3 one for
comparison. The 10-fold accuracy of the same scores (each fold picks its own threshold) is printed beside.

    .venv/bin/python benchmarks/operating_points_lfw.py --bench BENCH --name sface-400 --model sface-400 [--factor 0.3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from partialface.errors import script_exit
from partialface.evaluation.calibrate import FARS, read_operating_points
from partialface.evaluation.embed import cache_name
from partialface.models.catalogue import CATALOGUE, shipped_model
from partialface.training.checkpoint import load_weights


def rates(scores: np.ndarray, same: np.ndarray, t: float) -> tuple[float, int, float, float]:
    """(real FAR, false accepts, TAR, accuracy) of accepting scores >= t."""
    accept = scores >= t
    fa = int((accept & ~same).sum())
    far, tar = fa / max(1, int((~same).sum())), float(accept[same].mean())
    return far, fa, tar, float((accept == same).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, required=True, help="a `partialface benchmark --out` folder")
    ap.add_argument("--name", required=True, help="the model's name in that benchmark")
    ap.add_argument("--model", required=True, help="the model file (or shipped name) holding the thresholds")
    ap.add_argument("--factor", type=float, default=0.3)
    args = ap.parse_args()
    file = shipped_model(args.model) if args.model in CATALOGUE else Path(args.model)
    points = read_operating_points(load_weights(file)[1])
    assert points is not None, f"{file} has no operating points"
    res = json.loads((args.bench / "results.json").read_text(encoding="utf-8"))
    z = np.load(args.bench / "scores" / f"{cache_name(args.name)}.npz")
    mine = [b for b in res["benchmarks"] if b["model"] == args.name]
    groups = {"holistic": [b["name"] for b in mine if b["protocol"] == "holistic"],
              "partial": [b["name"] for b in mine if b["protocol"] == "partial-holistic"
                          and b["setting"] == "non-centred" and b["factor"] == args.factor]}
    print("| pairs | operating point | nominal FAR | threshold | real FAR (false accepts) | TAR | accuracy |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind, names in groups.items():
        if not names:
            continue
        s = np.concatenate([z[f"{n}|scores"] for n in names])
        same = np.concatenate([z[f"{n}|same"] for n in names]).astype(bool)
        uses = [(kind, far) for far in FARS] + ([("holistic", 1e-3)] if kind == "partial" else [])
        for point_kind, far in uses:
            t = points.at(far, point_kind)
            real, fa, tar, acc = rates(s, same, t)
            print(f"| {kind} ({len(s):,}) | {point_kind} | {far:g} | {t:.4f} | {real:.4f} ({fa}) | {100 * tar:.2f} % "
                  f"| {100 * acc:.2f} % |")
        tenfold = [b for b in mine if b["name"] in names]
        print(f"| {kind}: 10-fold accuracy of the same pairs | | | | | | "
              f"{np.mean([b['accuracy'] for b in tenfold]):.2f} % |")


if __name__ == "__main__":
    script_exit(main)
