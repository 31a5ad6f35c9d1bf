"""MTCNN and ``partialface align`` on photos of mixed sizes vs the same photos at one size (issue #12).

The sets, made from the first --limit LFW images (sorted by path), fixed seed:
- mixed: each image cropped at random around the face (the deep-funneled face lies in the central
  ~100 px: the crop keeps rows and columns 75..175 and a random 0..75 px margin on each side) and
  scaled to a random longer side of 80..1,000 px;
- one size: the same crops, all resized to S x S, S² the mixed set's mean pixel count (the same P-Net
  work in total).
Both are written as JPEG (quality 95) in the LFW layout under --work.

Measured:
- align: ``partialface align SET OUT`` (a subprocess with default options; it inherits this process's
  CPUs, e.g. ``taskset``, and ``OMP_NUM_THREADS=--threads``), the two sets alternately, --repeats times
  each; images/s (total over the runs) and the ratio mixed / one size. Acceptance: >= 0.8.
- detector: ``MTCNN.detect_batch`` on the decoded images in batches of --batch (decoding not timed),
  both sets, alternately by batch; and every mixed image detected alone: identical boxes, scores and
  landmarks (bit for bit) as in its mixed batch.

    taskset -c 1 .venv/bin/python benchmarks/bench_mixed.py --lfw ../shared/data/lfw --limit 500 --threads 1
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from partialface.data.images import read_image, write_image
from partialface.detect import MTCNN, Face
from partialface.errors import PartialFaceError, script_exit


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    down = w * h < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if down else cv2.INTER_CUBIC)


def make_sets(files: list[Path], root: Path, work: Path, seed: int) -> tuple[Path, Path, int]:
    """Write the mixed and one-size sets (module docstring) under ``work``; returns their folders and S."""
    rng = np.random.default_rng(seed)
    boxes = [(*rng.integers(0, 76, 2), *rng.integers(175, 251, 2)) for _ in files]  # y0, x0, y1, x1
    sides = rng.integers(80, 1001, len(files))
    sizes = []  # (w, h) of each mixed image
    for (y0, x0, y1, x1), side in zip(boxes, sides, strict=True):
        s = side / max(y1 - y0, x1 - x0)
        sizes.append((max(12, round((x1 - x0) * s)), max(12, round((y1 - y0) * s))))
    one = round(math.sqrt(np.mean([w * h for w, h in sizes])))
    mixed, onesize = work / "mixed", work / "onesize"
    for folder in (mixed, onesize):
        shutil.rmtree(folder, ignore_errors=True)
    for f, (y0, x0, y1, x1), (w, h) in zip(files, boxes, sizes, strict=True):
        crop = np.ascontiguousarray(read_image(f)[y0:y1, x0:x1])
        rel = f.relative_to(root)
        write_image(mixed / rel, resize(crop, w, h))
        write_image(onesize / rel, resize(crop, one, one))
    return mixed, onesize, one


def align_rate(src: Path, dst: Path, threads: int | None) -> float:
    """images/s of ``partialface align src dst`` (fresh dst), end to end in a subprocess."""
    shutil.rmtree(dst, ignore_errors=True)
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    n = sum(1 for _ in src.glob("*/*.jpg"))
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "partialface.cli", "align", str(src), str(dst), "--no-progress"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return n / (time.perf_counter() - t0)


def same(a: list[Face], b: list[Face]) -> bool:
    return len(a) == len(b) and all(
        fa.box == fb.box and fa.score == fb.score and np.array_equal(fa.landmarks, fb.landmarks)
        for fa, fb in zip(a, b, strict=True)
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"), help="folder holding lfw-deepfunneled/")
    ap.add_argument("--limit", type=int, default=500, help="the first N LFW images (sorted by path)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-mixed"), help="where the sets are written")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32, help="images per detect_batch call (align's default)")
    ap.add_argument("--repeats", type=int, default=1, help="align runs per set")
    ap.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: library defaults)")
    ap.add_argument("--no-align", action="store_true", help="skip the partialface align runs")
    args = ap.parse_args()

    root = args.lfw / "lfw-deepfunneled"
    files = sorted(root.glob("*/*.jpg"))[: args.limit]
    if not files:
        raise PartialFaceError(f"{root}: no LFW images found (pass --lfw FOLDER holding lfw-deepfunneled/)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    mixed_dir, one_dir, one = make_sets(files, root, args.work, args.seed)
    mixed = [read_image(mixed_dir / f.relative_to(root)) for f in files]
    onesize = [read_image(one_dir / f.relative_to(root)) for f in files]
    longer = np.array([max(im.shape[:2]) for im in mixed])
    mpix = sum(im.shape[0] * im.shape[1] for im in mixed) / 1e6
    rows = [
        ("images", f"{len(files)}; mixed: longer side {longer.min()}..{longer.max()} px, {mpix:.1f} Mpx in all"),
        ("one size", f"{one} x {one} px, {len(files) * one * one / 1e6:.1f} Mpx in all"),
    ]

    det = MTCNN(device="cpu")
    det.detect_batch(mixed[: args.batch])
    times = {"mixed": 0.0, "one size": 0.0}
    batched: list[list[Face]] = []
    for k, start in enumerate(range(0, len(files), args.batch)):
        pair = [("mixed", mixed[start : start + args.batch]), ("one size", onesize[start : start + args.batch])]
        for name, chunk in pair if k % 2 == 0 else pair[::-1]:
            t0 = time.perf_counter()
            res = det.detect_batch(chunk)
            times[name] += time.perf_counter() - t0
            if name == "mixed":
                batched += res
    t0 = time.perf_counter()
    alone = [det.detect(im) for im in mixed]
    t_alone = time.perf_counter() - t0
    identical = sum(same(a, b) for a, b in zip(batched, alone, strict=True))
    n = len(files)
    rows += [
        (f"detector images/s, batches of {args.batch}: mixed", f"{n / times['mixed']:.1f}"),
        (f"detector images/s, batches of {args.batch}: one size", f"{n / times['one size']:.1f}"),
        ("detector ratio mixed / one size", f"{times['one size'] / times['mixed']:.2f}"),
        ("detector images/s, mixed, one image per call", f"{n / t_alone:.1f}"),
        ("mixed: batched == alone (boxes, scores, landmarks)", f"{identical} / {n} images identical"),
        ("faces found: mixed, one size", f"{sum(map(bool, batched))}, {sum(map(bool, det.detect_batch(onesize)))}"),
    ]
    if not args.no_align:
        rates: dict[str, list[float]] = {"mixed": [], "one size": []}
        for r in range(args.repeats):
            order = [("mixed", mixed_dir), ("one size", one_dir)]
            for name, src in order if r % 2 == 0 else order[::-1]:
                rates[name].append(align_rate(src, args.work / "aligned", args.threads))
        shutil.rmtree(args.work / "aligned", ignore_errors=True)
        mean = {k: len(v) / sum(1 / x for x in v) for k, v in rates.items()}  # images/s over all runs
        rows += [
            ("partialface align images/s: mixed", " ".join(f"{x:.1f}" for x in rates["mixed"])),
            ("partialface align images/s: one size", " ".join(f"{x:.1f}" for x in rates["one size"])),
            ("align ratio mixed / one size", f"{mean['mixed'] / mean['one size']:.2f}  (acceptance >= 0.8)"),
        ]
    threads = f"{torch.get_num_threads()} torch / {cv2.getNumThreads()} cv2 threads"
    rows.append(("threads", threads))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    script_exit(main)
