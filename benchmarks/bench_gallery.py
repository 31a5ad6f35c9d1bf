"""Gallery speed and the approximate index (issue #14), in one run on this machine.

1. LFW: the open-set split of ``partialface benchmark-identify`` (1,559 enrolled, 3,420 known and 2,722 unknown
   probes) in a :class:`partialface.Gallery`; the time of one ``identify`` of an aligned probe (embedding and
   search) and of the search alone, and the gallery's rank-1 checked against the exact brute force of
   :mod:`partialface.evaluation.openset`.
2. 100,000 random unit vectors (128-d) enrolled; the exact index (flat inner product) against HNSW (M 32,
   efSearch 128): build and enrol time, search time per query, recall@1 of HNSW against exact.

    .venv/bin/python benchmarks/bench_gallery.py --data ALIGNED_LFW --cache OUT/embeddings/MODEL.npz \
        [--photo RAW.jpg] [--model M]

``--cache``: the embeddings file that ``partialface benchmark-identify --out OUT`` wrote for the model (its
holistic variant is used); without it the aligned faces are embedded here.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from partialface.api import Gallery, load
from partialface.data.folders import identity_folders
from partialface.data.images import read_image
from partialface.errors import script_exit
from partialface.evaluation.openset import identification_metrics, openset_split


def _timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def lfw_part(args: argparse.Namespace) -> None:
    listing = identity_folders(args.data)
    labels = np.array([c for _, c in listing.samples])
    split = openset_split(labels)
    keys = [rel for rel, _ in listing.samples]
    model = load(args.model)
    if args.cache:
        z = np.load(args.cache)
        pos = {k: i for i, k in enumerate(z["keys"].tolist())}
        emb = z["holistic"][[pos[k] for k in keys]]
    else:
        emb = np.concatenate([model.embed(np.stack([read_image(listing.root / k) for k in keys[i : i + 256]]))[0]
                              for i in range(0, len(keys), 256)])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    g = Gallery(model=args.model)
    t0 = time.perf_counter()
    g.enroll_many([(listing.classes[labels[i]], emb[i : i + 1], [keys[i]]) for i in split.gallery])
    enrol_s = time.perf_counter() - t0
    probes = emb[split.known]
    got = [c[0][0] for c in g.search(probes, 1)]
    gallery_rank1 = 100 * np.mean([n == listing.classes[c] for n, c in zip(got, split.known_labels, strict=True)])
    ref = identification_metrics(emb[split.gallery], split.gallery_labels, probes, split.known_labels,
                                 emb[split.unknown])
    face = read_image(listing.root / keys[int(split.known[0])])
    g.identify(face, aligned=True)  # warm-up: the index, the model's first call
    one_identify = _timed(lambda: g.identify(face, aligned=True), 30)
    one_search = _timed(lambda: g.search(probes[:1], 5), 200)
    print(f"LFW gallery: {len(g)} identities enrolled in {enrol_s * 1e3:.0f} ms; rank-1 {gallery_rank1:.2f} % "
          f"(brute force {ref['rank1']:.2f} %)")
    print("| step | median ms |\n|---|---|")
    print(f"| identify (aligned probe: embed + search + decide) | {one_identify * 1e3:.1f} |")
    print(f"| search only (top 5) | {one_search * 1e3:.2f} |")
    if args.photo:
        g.identify(args.photo)
        print(f"| identify (a raw photo: detect + align + embed + search) | "
              f"{_timed(lambda: g.identify(args.photo), 10) * 1e3:.1f} |")


def random_part(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    n, d = args.vectors, 128
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(n, args.queries, replace=False)] + 0.6 * rng.normal(size=(args.queries, d)).astype(
        np.float32) / np.sqrt(d)
    rows, answers = [], {}
    for index in ("flat", "hnsw"):
        g = Gallery(model=args.model, index=index)
        t0 = time.perf_counter()
        g.enroll_many([(f"id{i:06d}", vectors[i : i + 1], None) for i in range(n)])
        enrol_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        g.search(queries[:1], 1)  # builds the index
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = [g.search(q[None], 1)[0][0][0] for q in queries]
        per_query = (time.perf_counter() - t0) / len(queries)
        answers[index] = res
        rows.append((index, enrol_s, build_s, per_query))
    recall = np.mean([a == b for a, b in zip(answers["hnsw"], answers["flat"], strict=True)])
    print(f"\n{n:,} random 128-d vectors, {args.queries} queries (one at a time):")
    print("| index | enrol s | index build s | search ms / query | recall@1 vs exact |\n|---|---|---|---|---|")
    for index, enrol_s, build_s, per_query in rows:
        r = "1 (reference)" if index == "flat" else f"{recall:.4f}"
        print(f"| {index} | {enrol_s:.2f} | {build_s:.2f} | {per_query * 1e3:.2f} | {r} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="aligned LFW-layout folder (skip the LFW part without it)")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--photo", type=Path, default=None, help="a raw photo to time identify from (optional)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    print(f"cpu cores {os.cpu_count()}, torch threads via OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}")
    if args.data:
        lfw_part(args)
    random_part(args)


if __name__ == "__main__":
    script_exit(main)
