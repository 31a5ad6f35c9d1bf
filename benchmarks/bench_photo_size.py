"""Large photos at the speed of small ones (issue #42 item 4): detection on a copy at most ``DETECT_SIDE`` pixels
on its longer side, the face cut from the full-resolution photo.

Three measurements, in one run:

1. **speed**: one LFW photo enlarged (Lanczos) to 1 Mpx and to 12 Mpx and saved as JPEG (quality 92): the median
   time of ``partialface.embed(path)`` (reading, detection, alignment, embedding) over ``--repeats`` runs, each
   size at the default ``detect_side`` and at full resolution (``detect_side=0``); the ratio 12 Mpx / 1 Mpx;
2. **landmarks**: ``--photos`` LFW photos detected as they are (250 px) and enlarged 4x (1000 px, detected at the
   default side): the landmark distance at the original scale (pixel centres mapped: (x + 0.5) / 4 - 0.5); beside
   it MTCNN's own noise floor, the same photo moved by one pixel;
3. **accuracy**: LFW's pairs (``--pairs-limit`` of them, the first of each fold in turn) through the facade,
   photos as they are and enlarged 4x: 10-fold accuracy of each (the same folds).

    .venv/bin/python benchmarks/bench_photo_size.py --lfw ../shared/data/lfw [--photos 200] [--pairs-limit 6000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import partialface
from partialface.data.images import read_image
from partialface.data.lfw import read_pairs, resolve_images
from partialface.detect.policy import DETECT_SIDE, detect_photo
from partialface.errors import PartialFaceError, script_exit
from partialface.inference.hardware import cpu_info
from partialface.metrics import tenfold_accuracy


def enlarge(img: np.ndarray, k: float) -> np.ndarray:
    return cv2.resize(img, (round(img.shape[1] * k), round(img.shape[0] * k)), interpolation=cv2.INTER_LANCZOS4)


def speed(photo: np.ndarray, repeats: int, model: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for mpx in (1, 12):
            k = np.sqrt(mpx * 1e6 / (photo.shape[0] * photo.shape[1]))
            files[mpx] = Path(tmp) / f"{mpx}mpx.jpg"
            cv2.imwrite(str(files[mpx]), enlarge(photo, k)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        partialface.embed(files[1], model)  # load and warm
        times: dict[tuple[int, int], float] = {}
        for side in (DETECT_SIDE, 0):
            for mpx, f in files.items():
                t = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    faces = partialface.embed(f, model, detect_side=side)
                    t.append(time.perf_counter() - t0)
                    if not faces:
                        raise PartialFaceError(f"{f}: no face found")
                times[side, mpx] = float(np.median(t))
    print("| detect_side | 1 Mpx (s) | 12 Mpx (s) | 12 / 1 |\n|---|---:|---:|---:|")
    for side in (DETECT_SIDE, 0):
        a, b = times[side, 1], times[side, 12]
        print(f"| {side or 'full'} | {a:.3f} | {b:.3f} | {b / a:.2f} |")


def landmarks(paths: list[Path]) -> None:
    """The landmark distance x4 against x1, and the detector's own noise floor beside it: the same photo moved by
    one pixel (a row and a column of its edge added at the top and left), whose landmarks should move by exactly
    (1, 1)."""
    err, floor = [], []
    for p in tqdm(paths, desc="landmarks", unit="photo"):
        img = read_image(p)
        a = detect_photo(img, detector="mtcnn", device="cpu")
        b = detect_photo(enlarge(img, 4), detector="mtcnn", device="cpu")
        c = detect_photo(np.pad(img, ((1, 0), (1, 0), (0, 0)), mode="edge"), detector="mtcnn", device="cpu")
        if a and b and c:
            err.append(np.linalg.norm(a[0].landmarks - ((b[0].landmarks + 0.5) / 4 - 0.5), axis=1).max())
            floor.append(np.linalg.norm(a[0].landmarks - (c[0].landmarks - 1), axis=1).max())
    for what, e in (("enlarged 4x", np.array(err)), ("moved by 1 px (the detector's noise floor)", np.array(floor))):
        print(f"landmarks, {len(e)} photos, {what}: largest of the 5 points' distance at the original scale: median "
              f"{np.median(e):.2f} px, 95th percentile {np.percentile(e, 95):.2f} px, within 1 px: "
              f"{100 * (e <= 1).mean():.1f} %")


def accuracy(lfw: Path, limit: int, model: str) -> None:
    pf = read_pairs(lfw / "pairs.txt")
    files = resolve_images(pf, lfw / "lfw-deepfunneled")
    per = max(1, limit // pf.folds)
    chosen = [p for f in range(pf.folds) for p in [q for q in pf.pairs if q.fold == f][:per]]
    scores = {}
    for k in (1, 4):
        emb: dict[str, np.ndarray | None] = {}
        for key in tqdm(sorted({x for p in chosen for x in (p.a, p.b)}), desc=f"embed x{k}", unit="photo"):
            img = read_image(files[key])
            faces = partialface.embed(img if k == 1 else enlarge(img, k), model, regions=False, visibility=False)
            emb[key] = faces[0].embedding if faces else None
        scores[k] = np.array([float(ea @ eb) if (ea := emb[p.a]) is not None and (eb := emb[p.b]) is not None
                              else -1.0 for p in chosen])
    same, folds = np.array([p.same for p in chosen]), np.array([p.fold for p in chosen])
    for k, s in scores.items():
        acc, sd = tenfold_accuracy(s, same, folds)
        print(f"LFW through the facade, photos x{k}: {len(chosen)} pairs, 10-fold accuracy {acc:.2f} ± {sd:.2f} %")
    print(f"scores x4 against x1: largest |difference| {np.abs(scores[4] - scores[1]).max():.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=Path, required=True, help="LFW folder (lfw-deepfunneled/ and pairs.txt)")
    ap.add_argument("--model", default=None, help="model (default: the facade's default)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--photos", type=int, default=200, help="photos for the landmark check")
    ap.add_argument("--pairs-limit", type=int, default=600, help="LFW pairs for the accuracy check (6000: all)")
    args = ap.parse_args()
    root = args.lfw / "lfw-deepfunneled"
    if not root.is_dir() or not (args.lfw / "pairs.txt").is_file():
        raise PartialFaceError(f"--lfw {args.lfw}: no lfw-deepfunneled/ and pairs.txt there")
    print(f"# bench_photo_size: {cpu_info().describe()}; detect_side {DETECT_SIDE}")
    paths = sorted(root.glob("*/*.jpg"))[:: max(1, len(list(root.glob("*/*.jpg"))) // args.photos)][: args.photos]
    speed(read_image(paths[0]), args.repeats, args.model)
    landmarks(paths)
    accuracy(args.lfw, args.pairs_limit, args.model)


if __name__ == "__main__":
    script_exit(main)
