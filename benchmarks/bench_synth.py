"""Synthetic faces (issue #4 part 3): generation rate, raw-pixel baseline, and a learnability check.

For each seed: writes a training set and a test set to a temporary folder with ``write_dataset``
(timed: images/s with ``--workers`` processes, JPEG encoding and disk writes included), then prints
- raw: raw-pixel cosine on aligned holistic test faces (40x40 grey minus mean), 10-fold accuracy;
- lda: the same pixels projected by PCA + LDA fitted on the aligned TRAINING identities (disjoint from the
  test identities), cosine, 10-fold — evidence that identity is consistent enough to be learned.

    .venv/bin/python benchmarks/bench_synth.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from partialface.data.images import read_image
from partialface.data.lfw import read_pairs
from partialface.data.synth import SynthOptions, write_dataset
from partialface.detect.dataset import read_landmarks
from partialface.errors import script_exit
from partialface.geometry.align import align_face
from partialface.jobs.synth import raw_pixel_baseline, raw_pixel_descriptor
from partialface.metrics import cosine_scores, tenfold_accuracy


def descriptors(root: Path) -> tuple[list[str], np.ndarray]:
    """Raw-pixel descriptors of every image listed in root/landmarks.tsv: (keys, (N, 1600))."""
    marks = read_landmarks(root / "landmarks.tsv")
    keys = sorted(marks)
    return keys, np.stack([raw_pixel_descriptor(align_face(read_image(root / k), marks[k])) for k in keys])


def lda_accuracy(out: Path) -> tuple[float, float]:
    keys, x = descriptors(out / "train")
    labels = [k.split("/")[0] for k in keys]
    pca = PCA(n_components=min(200, len(keys) - 1), random_state=0).fit(x)
    lda = LinearDiscriminantAnalysis().fit(pca.transform(x), labels)
    tkeys, tx = descriptors(out / "test")
    emb = lda.transform(pca.transform(tx))
    index = {k: i for i, k in enumerate(tkeys)}
    pairs = read_pairs(out / "test/pairs.txt")
    scores = cosine_scores(emb[[index[p.a] for p in pairs.pairs]], emb[[index[p.b] for p in pairs.pairs]])
    return tenfold_accuracy(scores, np.array([p.same for p in pairs.pairs]), np.array([p.fold for p in pairs.pairs]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-identities", type=int, default=150)
    ap.add_argument("--train-per-identity", type=int, default=8)
    ap.add_argument("--test-identities", type=int, default=100)
    ap.add_argument("--test-per-identity", type=int, default=4)
    ap.add_argument("--pairs-per-fold", type=int, default=30)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    lda_head = f"PCA+LDA (trained on {args.train_identities} ids) %"
    print(f"| seed | images | workers | images/s | raw-pixel acc % | {lda_head} |")
    print("|---|---|---|---|---|---|")
    raws = []
    for seed in args.seeds:
        opts = SynthOptions(args.train_identities, args.train_per_identity, args.test_identities,
                            args.test_per_identity, args.pairs_per_fold, seed)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            t = time.perf_counter()
            counts = write_dataset(out, opts, workers=args.workers)
            n = sum(counts.values())
            rate = n / (time.perf_counter() - t)
            raw = raw_pixel_baseline(out / "test")
            lda = lda_accuracy(out)
        raws.append(raw[0])
        cells = [seed, n, args.workers, f"{rate:.0f}", f"{raw[0]:.2f} ± {raw[1]:.2f}", f"{lda[0]:.2f} ± {lda[1]:.2f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    print(f"raw-pixel mean over seeds: {np.mean(raws):.2f} %, max {np.max(raws):.2f} %")


if __name__ == "__main__":
    script_exit(main)
