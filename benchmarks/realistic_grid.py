"""The example grid of the realistic occluders on raw photos (issue #39): one row per photo, the clean photo and
then each kind (seed = the row) as the realistic test makes it, with what MTCNN finds on the occluded photo drawn
on it (green: the photo's subject, red: another face; none: a miss) and, below each, the aligned face the model
is given.

    .venv/bin/python benchmarks/realistic_grid.py ../shared/data/lfw/lfw-deepfunneled \
        --masks ../shared/data/occluders/masktheface [--rows 4] [--out docs/images/realistic_occluders.jpg]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from partialface.data.folders import list_images
from partialface.data.images import read_image, write_image
from partialface.detect import detect_faces, select_face
from partialface.errors import PartialFaceError, script_exit
from partialface.geometry.align import align_face
from partialface.geometry.realistic import REALISTIC_KINDS, load_mask_templates, occlude_photo_realistic

TILE = 160


def _tile(photo: np.ndarray, clean_box: tuple[float, ...] | None, offset: tuple[int, int]) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """(photo with the chosen face drawn, scaled into a TILE x TILE square; the aligned face or grey)."""
    face = select_face(detect_faces(photo, device="cpu"), photo.shape)
    shown = photo.copy()
    aligned = np.full((TILE, TILE, 3), 128, np.uint8)
    if face is not None:
        x1, y1, x2, y2 = (round(float(v)) for v in face.box)
        cx, cy = (x1 + x2) / 2 + offset[0], (y1 + y2) / 2 + offset[1]
        ok = clean_box is not None and clean_box[0] <= cx <= clean_box[2] and clean_box[1] <= cy <= clean_box[3]
        colour = (0, 220, 0) if ok else (230, 0, 0)
        cv2.rectangle(shown, (x1, y1), (x2, y2), colour, 2)
        for x, y in np.asarray(face.landmarks).reshape(5, 2):
            cv2.circle(shown, (round(float(x)), round(float(y))), 2, colour, -1)
        aligned = align_face(photo, np.asarray(face.landmarks).reshape(5, 2))
    s = TILE / max(shown.shape[:2])
    small = cv2.resize(shown, (max(1, round(shown.shape[1] * s)), max(1, round(shown.shape[0] * s))),
                       interpolation=cv2.INTER_AREA)
    canvas = np.full((TILE, TILE, 3), 255, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    return canvas, aligned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", type=Path, help="raw photos (LFW layout)")
    ap.add_argument("--masks", type=Path, required=True, help="MaskTheFace's folder (holding masks/masks.cfg)")
    ap.add_argument("--out", type=Path, default=Path("docs/images/realistic_occluders.jpg"))
    ap.add_argument("--rows", type=int, default=4)
    args = ap.parse_args()
    masks = load_mask_templates(args.masks)
    files = list_images(args.photos)
    if not files:
        raise PartialFaceError(f"{args.photos}: no images found")
    rows = []
    for r in range(args.rows):
        photo = read_image(args.photos / files[(r * 2 + 1) * len(files) // (2 * args.rows)])
        clean = select_face(detect_faces(photo, device="cpu"), photo.shape)
        if clean is None:
            continue
        top, bottom = _tile(photo, clean.box, (0, 0))
        tops, bottoms = [top], [bottom]
        for kind in REALISTIC_KINDS:
            occ = occlude_photo_realistic(photo, np.asarray(clean.landmarks).reshape(5, 2), kind, seed=r, masks=masks)
            t, b = _tile(occ.photo, clean.box, occ.offset)
            tops.append(t)
            bottoms.append(b)
        rows += [np.concatenate(tops, 1), np.concatenate(bottoms, 1)]
    write_image(args.out, np.concatenate(rows, 0))
    print(f"columns: clean, {', '.join(REALISTIC_KINDS)}; rows: the photo with MTCNN's face, the aligned face -> "
          f"{args.out}")


if __name__ == "__main__":
    script_exit(main)
