"""Does MTCNN still find an occluded face, and where does it put the landmarks? (issue #16)

For each LFW photo: MTCNN on the photo gives the face and its 5 landmarks; each occluder is drawn on the
aligned face and mapped back onto the photo (``partialface.geometry.occlude.occlude_photo``, seed = the
photo's index, the kind's default size; "face" uses the photo half the list away); MTCNN runs again on the
occluded photos (one batch per photo). A face counts as found
when a detected box's centre lies within the original box (the best such face is used). The landmark
shift is the mean distance of the 5 points from the unoccluded ones, in units of the eye distance.

    .venv/bin/python benchmarks/occluded_detection.py --lfw ../shared/data/lfw/lfw-deepfunneled [--limit N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from partialface.data.folders import list_images
from partialface.data.images import read_image
from partialface.detect import detect_faces
from partialface.detect.mtcnn import detect_faces_batch
from partialface.geometry.align import align_face
from partialface.geometry.occlude import KINDS, occlude_photo

KINDS_HERE = [k for k in KINDS if k != "image"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw/lfw-deepfunneled"))
    ap.add_argument("--limit", type=int, default=0, help="every k-th photo so that about N are used (0 = all)")
    args = ap.parse_args()
    files = list_images(args.lfw)
    if args.limit:
        files = files[:: max(1, len(files) // args.limit)]
    found = {k: 0 for k in KINDS_HERE}
    shifts: dict[str, list[float]] = {k: [] for k in KINDS_HERE}
    base_found = 0
    t0 = time.perf_counter()
    for i, rel in enumerate(tqdm(files, desc="detect", unit="photo")):
        photo = read_image(args.lfw / rel)
        faces = detect_faces(photo, device="cpu")
        if not faces:
            continue
        base_found += 1
        ref = np.asarray(faces[0].landmarks, dtype=np.float64).reshape(5, 2)
        x1, y1, x2, y2 = faces[0].box
        eye = float(np.linalg.norm(ref[1] - ref[0]))
        # "face": another LFW person's face (half the list away), cut with this face's landmarks
        other_face = align_face(read_image(args.lfw / files[(i + len(files) // 2) % len(files)]), ref)
        occluded = [occlude_photo(photo, ref, kind, seed=i, other=other_face)[0] for kind in KINDS_HERE]
        for kind, again in zip(KINDS_HERE, detect_faces_batch(occluded, device="cpu"), strict=True):
            hit = next((f for f in again if x1 <= (f.box[0] + f.box[2]) / 2 <= x2
                        and y1 <= (f.box[1] + f.box[3]) / 2 <= y2), None)
            if hit is None:
                continue
            found[kind] += 1
            pts = np.asarray(hit.landmarks, dtype=np.float64).reshape(5, 2)
            shifts[kind].append(float(np.linalg.norm(pts - ref, axis=1).mean()) / eye)
    wall = time.perf_counter() - t0
    print(f"\n{len(files)} photos, MTCNN found a face in {base_found}; {os.cpu_count()} cores, {wall:.0f} s")
    print("| occluder | face still found | landmark shift (eye distances): median | 90th percentile |")
    print("|---|---:|---:|---:|")
    for kind in KINDS_HERE:
        s = np.array(shifts[kind])
        med, p90 = (f"{np.median(s):.3f}", f"{np.percentile(s, 90):.3f}") if len(s) else ("-", "-")
        print(f"| {kind} | {100 * found[kind] / max(base_found, 1):.1f} % | {med} | {p90} |")


if __name__ == "__main__":
    main()
