"""``partialface.verify`` on all LFW pairs from the raw photos, at the model's shipped operating points (issue #14).

Every distinct image of the pairs goes through the facade once: ``partialface.embed`` detects, aligns and
embeds it, and the best face is kept. An image with no face is embedded as the whole photo resized, which is
the alignment recipe's fallback; the script counts them. Each pair's cosine is then read against the
thresholds in the model file. The script prints, per FAR, the threshold, the real FAR and TAR and the
accuracy, next to the 10-fold accuracy of the same scores (each fold picks its own threshold).

    .venv/bin/python benchmarks/verify_lfw.py --lfw ../shared/data/lfw [--model NAME] [--limit N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from operating_points_lfw import rates  # benchmarks/, beside this script
from tqdm import tqdm

import partialface
from partialface.api import load
from partialface.data.images import read_image
from partialface.data.lfw import read_pairs, resolve_images
from partialface.errors import script_exit
from partialface.evaluation.calibrate import FARS
from partialface.geometry.align import resize_fallback
from partialface.metrics import tenfold_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"),
                    help="folder with lfw-deepfunneled/ and pairs.txt")
    ap.add_argument("--model", default=None, help="default: the facade's default model")
    ap.add_argument("--limit", type=int, default=0, help="about N pairs, spread over every fold (0 = all 6,000)")
    args = ap.parse_args()
    pairs = read_pairs(args.lfw / "pairs.txt")
    chosen = pairs.pairs[:: max(1, len(pairs) // args.limit)] if args.limit else pairs.pairs
    files = resolve_images(chosen, args.lfw / "lfw-deepfunneled")
    model = load(args.model)
    assert model.points is not None, f"{model.name} has no operating points"
    emb: dict[str, np.ndarray] = {}
    no_face = 0
    t0 = time.perf_counter()
    for key in tqdm(sorted(files), desc="embed", unit="img"):
        faces = partialface.embed(files[key], args.model, regions=False)
        if not faces:
            no_face += 1
            faces = partialface.embed(resize_fallback(read_image(files[key])), args.model, aligned=True, regions=False)
        emb[key] = faces[0].embedding
    took = time.perf_counter() - t0
    s = np.array([emb[p.a] @ emb[p.b] for p in chosen])
    same = np.array([p.same for p in chosen])
    folds = np.array([p.fold for p in chosen])
    mean, std = tenfold_accuracy(s, same, folds)
    print(f"model {model.name}; {len(files)} images in {took:.0f} s ({len(files) / took:.1f} img/s, detection "
          f"included), {no_face} without a face; {len(chosen)} pairs; 10-fold accuracy {mean:.2f} ± {std:.2f} %")
    print("| FAR | threshold | real FAR (false accepts) | TAR | accuracy at the threshold |")
    print("|---:|---:|---:|---:|---:|")
    for far in FARS:
        t = model.points.at(far)
        real, fa, tar, acc = rates(s, same, t)
        print(f"| {far:g} | {t:.4f} | {real:.4f} ({fa}) | {100 * tar:.2f} % | {100 * acc:.2f} % |")


if __name__ == "__main__":
    script_exit(main)
