"""Options shared by the photo commands (``verify``, ``embed``, ``enroll``, ``identify``), kept free of torch so
that parsing stays quick."""

from __future__ import annotations

import argparse


def add_photo_infer_argument(parser: argparse.ArgumentParser) -> None:
    """``--infer`` of the photo commands (checked when the model loads, before any photo is read)."""
    parser.add_argument("--infer", default="auto", metavar="PATH",
                        help="inference path: auto (default: the fastest exact float32 path here), eager, onnx, "
                        "compile, bf16, compile-bf16 (the fastest on CPUs with AMX, after 10-40 s compiling: for "
                        "many photos), fp16 (CUDA); the embeddings compare across paths (docs/benchmarks.md)")
