"""The README's ``--explain`` pictures (issue #14): a holistic pair, an eye-only pair and a mouth-covered pair of
real LFW photos, each explained by ``partialface verify --explain`` through the facade.

    .venv/bin/python benchmarks/explain_pictures.py ../shared/data/lfw/lfw-deepfunneled [--model M] [--out docs/images]

The eye-only face keeps PartialLFW's lEye rectangle at factor 0.3 (non-centred), the rest grey; the
mouth-covered face has the mouth region (partialface.geometry.regions) and the chin below it greyed out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import partialface
from partialface.api.explain import explain
from partialface.errors import script_exit
from partialface.geometry.partial import partial_face
from partialface.geometry.regions import REGIONS, region_labels
from partialface.geometry.template import GREY

PAIRS = (("holistic", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0003.jpg"),
         ("eye-only", "Colin_Powell/Colin_Powell_0040.jpg", "Colin_Powell/Colin_Powell_0049.jpg"),
         ("mouth-covered", "Serena_Williams/Serena_Williams_0001.jpg", "Serena_Williams/Serena_Williams_0003.jpg"))


def mouth_covered(aligned: np.ndarray) -> np.ndarray:
    """The mouth region and everything below its top edge, inside its columns, greyed (a mask-like cover)."""
    mouth = region_labels() == REGIONS.index("mouth")
    rows, cols = np.nonzero(mouth)
    out = aligned.copy()
    out[rows.min():, cols.min() - 10 : cols.max() + 11] = GREY
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lfw", type=Path, help="the raw LFW folder (lfw-deepfunneled)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    args = ap.parse_args()
    for kind, a, b in PAIRS:
        fa = partialface.embed(args.lfw / a, args.model, regions=False)[0].aligned
        fb = partialface.embed(args.lfw / b, args.model, regions=False)[0].aligned
        if kind == "eye-only":
            fb = partial_face(fb, "lEye", 0.3, centred=False)
        elif kind == "mouth-covered":
            fb = mouth_covered(fb)
        res = partialface.verify(fa, fb, args.model, aligned=True, kind="holistic" if kind == "holistic" else "partial")
        path = explain(res, args.out / f"explain_{kind}.png", args.model)
        shares = ", ".join(f"{r} {v * 100:.0f}%" for r, v in (res.regions or {}).items())
        print(f"{kind:14s} {'same' if res.same else 'different'} score {res.score:.3f} threshold {res.threshold:.3f}"
              f" | {shares} -> {path}")


if __name__ == "__main__":
    script_exit(main)
