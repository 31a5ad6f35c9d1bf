"""``partialface synth OUT``: write synthetic identity-labelled faces (training set + LFW-layout test set).

Generator and layout: :mod:`partialface.data.synth`. The images are unaligned, with a landmarks TSV per
split, so they go through the aligner like any dataset::

    partialface synth runs/synth
    partialface align runs/synth/test runs/synth-aligned/test --landmarks runs/synth/test/landmarks.tsv

Deterministic per ``--seed`` (bytes identical whatever ``--workers``); re-running resumes (finished
images are kept). ``--baseline`` also prints the raw-pixel baseline on the test pairs (see
:func:`raw_pixel_baseline`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from partialface.data.images import read_image
from partialface.data.lfw import read_pairs
from partialface.data.synth import (
    DEFAULT_SIZE,
    LANDMARKS_FILE,
    PAIRS_FILE,
    TEST,
    SynthOptions,
    write_dataset,
)
from partialface.detect.dataset import read_landmarks
from partialface.errors import PartialFaceError
from partialface.geometry.align import align_face
from partialface.metrics import cosine_scores, tenfold_accuracy


def raw_pixel_descriptor(aligned: np.ndarray) -> np.ndarray:
    """Aligned face (160, 160, 3) uint8 -> (1600,) float32: 40x40 grey (area resize) minus its mean."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (40, 40), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)
    return small - small.mean()


def raw_pixel_baseline(test_root: str | os.PathLike[str]) -> tuple[float, float]:
    """10-fold accuracy (mean, std in %) of raw-pixel cosine on the aligned holistic test faces.

    Reads ``test_root/pairs.txt`` and ``test_root/landmarks.tsv``, aligns each image with its landmarks
    (``align_face``), describes it by :func:`raw_pixel_descriptor` and scores the pairs with
    ``partialface.metrics`` (cosine, exact 10-fold thresholds).
    """
    root = Path(test_root)
    pairs = read_pairs(root / PAIRS_FILE)
    points = read_landmarks(root / LANDMARKS_FILE)
    keys = pairs.images()
    missing = [k for k in keys if k not in points]
    if missing:
        raise PartialFaceError(f"{root / LANDMARKS_FILE}: no landmarks for {missing[0]} (re-run partialface synth)")
    desc = np.stack([raw_pixel_descriptor(align_face(read_image(root / k), points[k])) for k in keys])
    index = pairs.image_index()
    a = np.array([index[p.a] for p in pairs.pairs])
    b = np.array([index[p.b] for p in pairs.pairs])
    scores = cosine_scores(desc[a], desc[b])
    same = np.array([p.same for p in pairs.pairs])
    folds = np.array([p.fold for p in pairs.pairs])
    return tenfold_accuracy(scores, same, folds)


def configure(parser: argparse.ArgumentParser) -> None:
    d = SynthOptions()
    parser.add_argument("out", metavar="OUT", help="output folder (OUT/train, OUT/test)")
    parser.add_argument("--train-identities", type=int, default=d.train_identities,
                        help=f"training identities (default {d.train_identities}; 0 = no training set)")
    parser.add_argument("--train-per-identity", type=int, default=d.train_per_identity,
                        help=f"images per training identity (default {d.train_per_identity})")
    parser.add_argument("--test-identities", type=int, default=d.test_identities,
                        help=f"test identities, disjoint from training (default {d.test_identities}; at least 20)")
    parser.add_argument("--test-per-identity", type=int, default=d.test_per_identity,
                        help=f"images per test identity (default {d.test_per_identity})")
    parser.add_argument("--pairs-per-fold", type=int, default=d.pairs_per_fold,
                        help=f"same (and different) pairs per fold of OUT/test/pairs.txt (default {d.pairs_per_fold})")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"image side (default {DEFAULT_SIZE})")
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8),
                        help="worker processes (default: CPU count, at most 8)")
    parser.add_argument("--baseline", action="store_true",
                        help="also print the raw-pixel cosine baseline on the aligned test pairs")


def run(args: argparse.Namespace) -> int:
    opts = SynthOptions(
        train_identities=args.train_identities,
        train_per_identity=args.train_per_identity,
        test_identities=args.test_identities,
        test_per_identity=args.test_per_identity,
        pairs_per_fold=args.pairs_per_fold,
        seed=args.seed,
        size=args.size,
    )
    if args.workers < 1:
        raise PartialFaceError(f"--workers must be at least 1, got {args.workers}")
    opts.check()
    total = opts.train_identities * opts.train_per_identity + opts.test_identities * opts.test_per_identity
    start = time.perf_counter()
    with tqdm(total=total, desc="synth", unit="img") as bar:
        counts = write_dataset(args.out, opts, workers=args.workers, progress=bar.update)
    took = time.perf_counter() - start
    out = Path(args.out)
    pairs_note = f" + {PAIRS_FILE}" if opts.test_identities else ""
    print(f"wrote {counts['train']} training images ({opts.train_identities} identities) to {out / 'train'} and "
          f"{counts['test']} test images ({opts.test_identities} identities){pairs_note} to {out / 'test'} "
          f"in {took:.1f} s ({total / max(took, 1e-9):.0f} images/s)")
    if args.baseline and opts.test_identities:
        mean, std = raw_pixel_baseline(out / TEST)
        print(f"raw-pixel baseline (aligned holistic, 40x40 grey, cosine, 10-fold): {mean:.2f} ± {std:.2f} %")
    return 0
