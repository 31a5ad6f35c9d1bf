"""Does MTCNN still find an occluded face, and where does it put the landmarks? (issue #16)

For each LFW photo: MTCNN on the photo gives the face and its 5 landmarks; each occluder is drawn on the
aligned face and mapped back onto the photo (``partialface.geometry.occlude.occlude_photo``, seed = the
photo's index, the kind's default size; "face" uses the photo half the list away); MTCNN runs again on the
occluded photos (one batch per photo). A face counts as found
when a detected box's centre lies within the original box (the best such face is used). The landmark
shift is the mean distance of the 5 points from the unoccluded ones, in units of the eye distance.

Resumable: one JSON line per photo is appended to ``--out`` as soon as it is done; a second call with the
same ``--out`` goes on after the last complete line, and prints the table from the whole file.

    .venv/bin/python benchmarks/occluded_detection.py --lfw ../shared/data/lfw/lfw-deepfunneled \
        --out detection.jsonl [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from partialface.data.folders import list_images
from partialface.data.images import read_image
from partialface.detect import detect_faces
from partialface.detect.mtcnn import detect_faces_batch
from partialface.errors import script_exit
from partialface.geometry.align import align_face
from partialface.geometry.occlude import KINDS, occlude_photo

KINDS_HERE = [k for k in KINDS if k != "image"]


def detect_one(files: list[str], i: int, root: Path) -> dict[str, Any]:
    """The record of photo ``files[i]``: whether MTCNN finds its face, and per occluder kind the landmark shift
    in eye distances (None where the occluded face is lost)."""
    photo = read_image(root / files[i])
    faces = detect_faces(photo, device="cpu")
    if not faces:
        return {"i": i, "file": files[i], "found": False, "shift": {}}
    ref = np.asarray(faces[0].landmarks, dtype=np.float64).reshape(5, 2)
    x1, y1, x2, y2 = faces[0].box
    eye = float(np.linalg.norm(ref[1] - ref[0]))
    # "face": another LFW person's face (half the list away), cut with this face's landmarks
    other_face = align_face(read_image(root / files[(i + len(files) // 2) % len(files)]), ref)
    occluded = [occlude_photo(photo, ref, kind, seed=i, other=other_face)[0] for kind in KINDS_HERE]
    shift: dict[str, float | None] = {}
    for kind, again in zip(KINDS_HERE, detect_faces_batch(occluded, device="cpu"), strict=True):
        hit = next((f for f in again if x1 <= (f.box[0] + f.box[2]) / 2 <= x2
                    and y1 <= (f.box[1] + f.box[3]) / 2 <= y2), None)
        pts = None if hit is None else np.asarray(hit.landmarks, dtype=np.float64).reshape(5, 2)
        shift[kind] = None if pts is None else float(np.linalg.norm(pts - ref, axis=1).mean()) / eye
    return {"i": i, "file": files[i], "found": True, "shift": shift}


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a results file (a line cut by a kill is dropped, and rewritten on resume)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def table(records: list[dict[str, Any]]) -> str:
    base = [r for r in records if r["found"]]
    lines = ["| occluder | face still found | landmark shift (eye distances): median | 90th percentile |",
             "|---|---:|---:|---:|"]
    for kind in KINDS_HERE:
        s = np.array([r["shift"][kind] for r in base if r["shift"].get(kind) is not None])
        med, p90 = (f"{np.median(s):.3f}", f"{np.percentile(s, 90):.3f}") if len(s) else ("-", "-")
        lines.append(f"| {kind} | {100 * len(s) / max(len(base), 1):.1f} % | {med} | {p90} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw/lfw-deepfunneled"))
    ap.add_argument("--out", type=Path, required=True, help="results file (JSON lines); an existing one is resumed")
    ap.add_argument("--limit", type=int, default=0, help="every k-th photo so that about N are used (0 = all)")
    args = ap.parse_args()
    if not args.lfw.is_dir():
        raise SystemExit(f"error: --lfw {args.lfw}: no such folder (give LFW's photo folder, e.g. "
                         "../shared/data/lfw/lfw-deepfunneled)")
    files = list_images(args.lfw)
    todo = list(range(0, len(files), max(1, len(files) // args.limit) if args.limit else 1))
    records = read_records(args.out)
    if records and records[0]["file"] != files[todo[0]]:
        raise SystemExit(f"error: --out {args.out} holds another photo list's results; give a new file")
    done = {r["i"] for r in records}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")  # rewrite the complete lines (drops a cut last line)
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, args.out)
    t0 = time.perf_counter()
    with args.out.open("a", encoding="utf-8") as fh:
        for i in tqdm([i for i in todo if i not in done], desc="detect", unit="photo"):
            records.append(detect_one(files, i, args.lfw))
            fh.write(json.dumps(records[-1]) + "\n")
            fh.flush()
    wall = time.perf_counter() - t0
    base = sum(r["found"] for r in records)
    print(f"\n{len(records)} photos, MTCNN found a face in {base}; {torch.get_num_threads()} thread(s), "
          f"this call {wall:.0f} s")
    print(table(records))


if __name__ == "__main__":
    script_exit(main)
