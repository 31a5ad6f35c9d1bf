"""All-72-variant generation rate for aligned faces in memory (issue #2).

Compares, in one run: the batched tensor path (PartialFaceBatcher, OpenCV and torch backends for the
centring shift), the exact per-image path (partial_face), and the published generator's per-image
work including PNG encoding (to memory, no disk). Prints variants/s and ratios.

    .venv/bin/python benchmarks/bench_partial.py --faces 1000 --batch 125
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from partialface.errors import script_exit
from partialface.geometry import PartialFaceBatcher, all_variants, partial_face


def faces_from(args: argparse.Namespace) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (args.faces, 160, 160, 3), dtype=np.uint8)


def rate_batched(faces: np.ndarray, batch: int, backend: str, device: str, reuse: bool = False) -> float:
    t = torch.from_numpy(faces).to(device)
    n = 0
    start = time.perf_counter()
    for i in range(0, len(t), batch):
        for _, x in PartialFaceBatcher(t[i : i + batch], backend=backend).variants(reuse_buffer=reuse):
            n += x.shape[0]
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def rate_exact(faces: np.ndarray, encode_png: bool) -> float:
    variants = all_variants()
    n = 0
    start = time.perf_counter()
    for img in faces:
        for v in variants:
            assert v.part is not None and v.factor is not None
            out = partial_face(img, v.part, v.factor, v.centred)
            if encode_png:
                cv2.imencode(".png", out)
            n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=125)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exact-faces", type=int, default=100, help="faces for the slow per-image paths")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    faces = faces_from(args)
    rows = [
        ("batched, cpu, OpenCV shift, reused buffer", rate_batched(faces, args.batch, "cv2", "cpu", reuse=True)),
        ("batched, cpu, OpenCV shift, new tensors", rate_batched(faces, args.batch, "cv2", "cpu")),
        ("batched, cpu, torch fixed-point, reused", rate_batched(faces, args.batch, "torch", "cpu", reuse=True)),
    ]
    if torch.cuda.is_available():
        rate_batched(faces[: args.batch], args.batch, "auto", "cuda")  # warm-up
        rows.append(("batched, cuda, torch fixed-point, reused", rate_batched(faces, args.batch, "auto", "cuda", True)))
    few = faces[: args.exact_faces]
    rows.append(("exact per image (partial_face)", rate_exact(few, encode_png=False)))
    rows.append(("published-style + PNG encode", rate_exact(few, encode_png=True)))
    base = rows[-1][1]
    print(f"{args.faces} faces x 72 variants, batch {args.batch}, {args.threads} threads")
    print(f"{'path':44s} {'variants/s':>12s} {'x published':>12s}")
    for name, r in rows:
        print(f"{name:44s} {r:12,.0f} {r / base:12.1f}")


if __name__ == "__main__":
    script_exit(main)
