"""Options shared by the photo commands (``verify``, ``embed``, ``enroll``, ``identify``), kept free of torch so
that parsing stays quick."""

from __future__ import annotations

import argparse


def add_photo_infer_argument(parser: argparse.ArgumentParser) -> None:
    """``--infer`` of the photo commands (checked when the model loads, before any photo is read)."""
    parser.add_argument("--infer", default="auto", metavar="PATH",
                        help="inference path: auto (default: the fastest exact float32 path here), eager, onnx, "
                        "compile, bf16, compile-bf16 (the fastest on CPUs with AMX, after 10-40 s compiling: for "
                        "many photos), fp16 (CUDA); the embeddings compare across paths (docs/history/benchmarks.md)")


def add_detector_argument(parser: argparse.ArgumentParser) -> None:
    """``--detector`` of the photo commands (:func:`partialface.api.facade.photo_detector`)."""
    parser.add_argument("--detector", default="auto", choices=("auto", "mtcnn", "yunet", "mtcnn+yunet", "mtcnn+low"),
                        help="face detector: auto (default: MTCNN, and YuNet for the faces it misses, e.g. masked "
                        "ones), mtcnn (the benchmark's, spec settings), yunet, mtcnn+yunet, mtcnn+low")


def add_detect_side_argument(parser: argparse.ArgumentParser) -> None:
    """``--detect-side`` of the photo commands (:func:`partialface.api.facade.find_faces`)."""
    def side(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r}: give 0 (full resolution) or a side in pixels")
        return int(text)

    parser.add_argument("--detect-side", type=side, default=None, metavar="PX",
                        help="search for faces on a copy of each photo at most PX pixels on its longer side (default "
                        "1024: phone photos as fast as small ones); 0 = full resolution, for small faces in large "
                        "crowd photos. The faces are cut from the full-resolution photo either way")
