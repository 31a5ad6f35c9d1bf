"""``partialface demo`` — the main job: the benchmark core end to end on an embedded default.

With no dataset it synthesises a small identity-labelled set of unaligned 250x250 images with known
landmarks (smooth identity-specific colour fields with a face-like layout, each image under a random
similarity transform, lighting change and noise), aligns it through the dataset aligner, builds a
10-fold pairs file with identity-disjoint folds, makes every partial variant in memory, scores all
PartialLFW protocols with a raw-pixel descriptor, and writes ``results.json``, ``results.md`` and a
contact sheet of the 72 variants. ``--data``/``--pairs`` run the same on a real LFW-layout folder
(detection with MTCNN instead of given landmarks). The raw-pixel descriptor is a smoke test of the
pipeline, not a face model: later releases plug trained models in here.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from partialface.data.images import atomic_write_bytes, encode_image, read_image, write_image
from partialface.data.lfw import Pair, PairsFile, read_pairs, resolve_images
from partialface.errors import PartialFaceError
from partialface.evaluation.protocols import aggregate, build_benchmarks, required_variants
from partialface.geometry.partial import PartialFaceBatcher, Variant, all_variants
from partialface.geometry.template import template_points
from partialface.metrics import cosine_scores, score_benchmark

RAW = 250  # side of the synthetic unaligned images


def _identity_field(rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field (RAW, RAW, 3) float32: the identity's 'skin, hair and features'."""
    coarse = rng.uniform(40, 215, (6, 6, 3)).astype(np.float32)
    field = cv2.resize(coarse, (RAW, RAW), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.normal(0, 25, (24, 24, 3)).astype(np.float32), (RAW, RAW), interpolation=cv2.INTER_CUBIC)
    return np.asarray(field + fine, dtype=np.float32)


def _canonical_landmarks() -> np.ndarray:
    """Template landmarks placed in a RAW x RAW frame (5, 2): the synthetic faces are drawn around them."""
    return template_points(size=RAW, padding=0.3) * 0.8 + RAW * 0.1


def _face(field: np.ndarray, feats: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image of an identity under a random similarity, lighting and noise: ((RAW, RAW, 3) uint8, (5, 2))."""
    img = field.copy()
    lm = _canonical_landmarks()
    for k, (x, y) in enumerate(lm):  # identity-specific features at the landmarks (eyes, nose, mouth corners)
        cv2.circle(img, (round(x), round(y)), int(feats[k, 0]), tuple(float(c) for c in feats[k, 1:4]), -1)
    angle, scale = rng.uniform(-12, 12), rng.uniform(0.9, 1.1)
    m = np.asarray(cv2.getRotationMatrix2D((RAW / 2, RAW / 2), angle, scale), dtype=np.float64)
    m[:, 2] += rng.uniform(-10, 10, 2)
    img = cv2.warpAffine(img, m, (RAW, RAW), borderMode=cv2.BORDER_REFLECT)
    img = img * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20) + rng.normal(0, 12, img.shape)
    points = np.c_[lm, np.ones(5)] @ m.T
    return np.clip(img, 0, 255).astype(np.uint8), points


def synthesise(root: Path, identities: int, per_identity: int, seed: int) -> Path:
    """Write ROOT/raw/idNNN/idNNN_000K.png and ROOT/raw_landmarks.tsv; returns the landmarks file."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in tqdm(range(identities), desc="synthesise", unit="id"):
        field = _identity_field(rng)
        feats = np.c_[rng.uniform(4, 11, 5), rng.uniform(0, 255, (5, 3))]
        name = f"id{i:03d}"
        for k in range(1, per_identity + 1):
            img, pts = _face(field, feats, rng)
            rel = f"{name}/{name}_{k:04d}.png"
            write_image(root / "raw" / rel, img)
            lines.append(rel + "\t" + "\t".join(f"{v:.4f}" for v in pts.reshape(-1)))
    lm_file = root / "raw_landmarks.tsv"
    atomic_write_bytes(lm_file, ("\n".join(lines) + "\n").encode())
    return lm_file


def synthetic_pairs(identities: int, per_identity: int, folds: int, per_fold: int, seed: int) -> PairsFile:
    """A pairs file with identity-disjoint folds: per fold ``per_fold`` same and ``per_fold`` different pairs."""
    rng = np.random.default_rng(seed + 1)
    ids = rng.permutation(identities)
    groups = np.array_split(ids, folds)
    pairs: list[Pair] = []

    def key(i: int, k: int) -> str:
        return f"id{i:03d}/id{i:03d}_{k:04d}.png"

    for f, g in enumerate(groups):
        if len(g) < 2:
            raise PartialFaceError(f"--identities {identities} is too few for {folds} folds; use at least {2 * folds}")
        for _ in range(per_fold):
            i = int(rng.choice(g))
            a, b = rng.choice(np.arange(1, per_identity + 1), 2, replace=False)
            pairs.append(Pair(key(i, int(a)), key(i, int(b)), True, f))
        for _ in range(per_fold):
            i, j = (int(x) for x in rng.choice(g, 2, replace=False))
            a, b = (int(x) for x in rng.integers(1, per_identity + 1, 2))
            pairs.append(Pair(key(i, a), key(j, b), False, f))
    return PairsFile(pairs=tuple(pairs), folds=folds, per_fold=per_fold, path=Path("synthetic-pairs.txt"))


def pixel_descriptor(batch: torch.Tensor) -> torch.Tensor:
    """Raw-pixel descriptor: (B, 3, 160, 160) uint8 -> (B, 1600) float, 40x40 grey minus its mean."""
    grey = batch.permute(0, 2, 3, 1).float().mean(dim=3)  # channels_last batches: a cheap NHWC reduction
    small = torch.nn.functional.avg_pool2d(grey[:, None], 4).flatten(1)
    return small - small.mean(dim=1, keepdim=True)


def embed_all(paths: list[Path], variants: list[Variant], batch: int = 128) -> dict[Variant, np.ndarray]:
    """Descriptor of every image in every variant, each computed once: variant -> (N, D) float32."""
    out: dict[Variant, list[np.ndarray]] = {v: [] for v in variants}
    for i in tqdm(range(0, len(paths), batch), desc="variants", unit="batch"):
        imgs = torch.from_numpy(np.stack([read_image(p) for p in paths[i : i + batch]]))
        maker = PartialFaceBatcher(imgs)
        for v in variants:
            out[v].append(pixel_descriptor(maker.variant(v)).numpy())
    return {v: np.concatenate(x) for v, x in out.items()}


def contact_sheet(aligned: np.ndarray) -> np.ndarray:
    """The holistic face and its 72 variants on one sheet: 8 rows (part x setting) x 9 factors + holistic."""
    maker = PartialFaceBatcher(torch.from_numpy(aligned[None]))
    tiles = [maker.variant(v)[0].permute(1, 2, 0).numpy() for v in all_variants()]
    rows = [np.hstack(tiles[r * 9 : r * 9 + 9]) for r in range(8)]
    sheet = np.vstack(rows)
    first = np.full((sheet.shape[0], 160, 3), 255, np.uint8)
    first[:160] = aligned
    return np.hstack([first, sheet])


def results_markdown(rows: list[dict[str, object]], title: str) -> str:
    lines = [f"# {title}", "", "| protocol | setting | benchmarks | accuracy % (mean ± std) | AUC | EER |"]
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        acc = f"{r['accuracy']:.2f} ± {r['accuracy_std']:.2f}"
        cells = [r["protocol"], r["setting"] or "-", r["benchmarks"], acc, f"{r['auc']:.4f}", f"{r['eer']:.4f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--data", help="an LFW-layout folder of raw images (default: synthesise faces)")
    parser.add_argument("--pairs", help="pairs file for --data (default: DATA/../pairs.txt)")
    parser.add_argument("--identities", type=int, default=60, help="synthetic identities (default 60)")
    parser.add_argument("--per-identity", type=int, default=6, help="synthetic images per identity (default 6)")
    parser.add_argument("--pairs-per-fold", type=int, default=30, help="synthetic same (and different) pairs per fold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="device for detection with --data (auto, cpu, cuda)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    from partialface.jobs.align import align_dataset

    if args.data:
        src = Path(args.data)
        if not src.is_dir():
            raise PartialFaceError(f"--data {src}: no such folder (give an LFW-layout folder NAME/NAME_000N.jpg)")
        pairs_path = Path(args.pairs) if args.pairs else src.parent / "pairs.txt"
        pairs = read_pairs(pairs_path)
        summary = align_dataset(src, out / "aligned", device=args.device)
        title = f"partialface demo: raw-pixel descriptor on {src}"
    else:
        if args.identities < 2 or args.per_identity < 2 or args.pairs_per_fold < 1:
            raise PartialFaceError("--identities and --per-identity must be at least 2, --pairs-per-fold at least 1")
        lm = synthesise(out, args.identities, args.per_identity, args.seed)
        summary = align_dataset(out / "raw", out / "aligned", landmarks=lm, landmarks_only=True)
        pairs = synthetic_pairs(args.identities, args.per_identity, 10, args.pairs_per_fold, args.seed)
        title = "partialface demo: raw-pixel descriptor on synthetic faces"
    print(summary.line())
    resolved = resolve_images(pairs, out / "aligned", suffixes=(".png",))
    keys = pairs.images()
    index = pairs.image_index()
    benchmarks = build_benchmarks(pairs)
    emb = embed_all([resolved[k] for k in keys], required_variants(benchmarks))
    results = []
    for b in tqdm(benchmarks, desc="score", unit="benchmark"):
        sp = b.scored_pairs(index)
        scores = cosine_scores(emb[sp.left][sp.left_index], emb[sp.right][sp.right_index])
        results.append((b, score_benchmark(scores, sp.same, sp.fold).as_dict()))
    rows = aggregate(results)
    record = {
        "descriptor": "raw pixels (40x40 grey, mean removed), cosine similarity",
        "pairs": len(pairs),
        "benchmarks": [{"name": b.name, **m} for b, m in results],
        "protocols": rows,
    }
    atomic_write_bytes(out / "results.json", json.dumps(record, indent=1).encode())
    md = results_markdown(rows, title)
    atomic_write_bytes(out / "results.md", md.encode())
    atomic_write_bytes(out / "variants.png", encode_image(contact_sheet(read_image(resolved[keys[0]]))))
    print(md)
    mins = math.ceil((time.perf_counter() - start) / 6) / 10
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'variants.png'} in {mins} min")
    return 0
