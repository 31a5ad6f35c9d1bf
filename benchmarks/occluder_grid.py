"""The example grid of every occluder on real aligned faces (issue #16): one row per face, the face and then
each kind at its default size (seed = the row) and at coverage 0.4, MaskTheFace's templates in the last column
where the folder is given.

    .venv/bin/python benchmarks/occluder_grid.py LFW_ALIGNED [--masktheface ../shared/data/occluders/masktheface] \
        [--out docs/images/occluders.jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from partialface.data.folders import list_images
from partialface.data.images import read_image, write_image
from partialface.errors import script_exit
from partialface.geometry.occlude import KINDS, masktheface_templates, occlude


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("aligned", type=Path, help="aligned 160x160 faces (LFW layout)")
    ap.add_argument("--masktheface", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/images/occluders.jpg"))
    ap.add_argument("--rows", type=int, default=2)
    args = ap.parse_args()
    files = list_images(args.aligned)
    templates = masktheface_templates(args.masktheface) if args.masktheface else []
    kinds = [k for k in KINDS if k != "image"]
    rows = []
    for r in range(args.rows):
        face = read_image(args.aligned / files[(r * 2 + 1) * len(files) // (2 * args.rows)])
        other = read_image(args.aligned / files[(r * 2 + 1) * len(files) // (2 * args.rows) - len(files) // 3])
        for coverage in (None, 0.4):
            row = [face] + [occlude(face, k, coverage=coverage, seed=r, other=other)[0] for k in kinds]
            if templates:
                _, rgba, anchors = templates[r % len(templates)]
                row.append(occlude(face, "image", occluder=rgba, anchors=anchors, coverage=coverage)[0])
            rows.append(np.concatenate(row, 1))
    write_image(args.out, np.concatenate(rows, 0))
    print(f"columns: face, {', '.join(kinds)}{', MaskTheFace' if templates else ''}; rows: default size, coverage "
          f"0.4 -> {args.out}")


if __name__ == "__main__":
    script_exit(main)
