"""``partialface align SRC DST``: align every face of a dataset to 160x160 (spec §1); the work, the file
formats and the resume rules are in :mod:`partialface.detect.dataset`."""

from __future__ import annotations

import argparse

from partialface.detect.dataset import align_dataset
from partialface.errors import PartialFaceError


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``partialface align``."""
    parser.description = (
        "Align every face under SRC (LFW layout, identity folders or any tree) to 160x160 PNGs under DST "
        "with the same relative paths. Resumable: rerun the same command to continue."
    )
    parser.add_argument("src", metavar="SRC", help="dataset folder (e.g. lfw-deepfunneled)")
    parser.add_argument("dst", metavar="DST", help="output folder (created; must not be inside SRC)")
    parser.add_argument(
        "--landmarks",
        metavar="FILE",
        help="TSV of 'path x1 y1 ... x5 y5' (left eye, right eye, nose, mouth left, mouth right; path "
        "relative to SRC; '#' lines ignored): align listed images with these points instead of detecting",
    )
    parser.add_argument(
        "--landmarks-only",
        action="store_true",
        help="align only the images listed in --landmarks (default: detect the images not listed)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per detector call (default 32)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads decoding and writing images (default: min(8, CPU count); 0 = none)",
    )
    parser.add_argument("--device", default="auto", help="detector device: auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--compile", action="store_true",
                        help="run the detector's P-Net as a torch.compile graph (CPU; a C++ compiler needed): 1.4x "
                        "P-Net's speed after a few seconds' compiling, for large folders (docs/history/benchmarks.md)")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``partialface align``; prints the summary line. 0 unless a user error (raised)."""
    if args.compile:
        import torch

        from partialface.inference.runners import unavailable

        reason = unavailable("compile", torch.device("cpu"))
        if reason is not None:
            raise PartialFaceError(f"--compile: {reason}")
    summary = align_dataset(
        args.src,
        args.dst,
        landmarks=args.landmarks,
        landmarks_only=args.landmarks_only,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=not args.no_progress,
        compile=args.compile,
    )
    print(summary.line())
    return 0
