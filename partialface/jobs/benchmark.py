"""``partialface benchmark``: the command's options over :func:`partialface.evaluation.benchmark.run_benchmark`
(what it does and writes: that module's docstring)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from partialface.evaluation.benchmark import run_benchmark
from partialface.evaluation.embedders import AMP_MODES
from partialface.evaluation.protocols import PROTOCOLS, SETTINGS
from partialface.geometry.template import FACTORS
from partialface.inference.runners import CHOICES as INFER_CHOICES


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers, e.g. 0.3,0.5") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated fold numbers, e.g. 1,2,3") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options."""
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                        help="model to score (repeatable): a shipped model's name (`partialface models`), a run "
                        "folder, step folder or model.safetensors of `partialface train`; or dlib's face ResNet: "
                        "'dlib' (the PyTorch port, 150x150 resize of the "
                        "aligned face), 'dlib-chip' (the port on dlib's own face framing) or 'dlib-bin' (dlib "
                        "itself; slow); NAME=PATH names it in the report")
    parser.add_argument("--data", required=True, type=Path,
                        help="LFW-layout image folder (NAME/NAME_000N.jpg), raw or already aligned")
    parser.add_argument("--pairs", required=True, type=Path, help="pairs file (LFW's pairs.txt format)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (caches and results)")
    parser.add_argument("--aligned", action="store_true",
                        help="--data holds faces aligned to the benchmark's template already (160x160), scored as "
                        "they are; without it, a tree of 160x160 PNG images is scored as aligned only if a sample's "
                        "landmarks sit on the template (else it is aligned), and photos are aligned")
    parser.add_argument("--landmarks", type=Path, default=None,
                        help="landmarks TSV for aligning raw --data (path + 5 points, as `partialface align "
                        "--landmarks`); images without a row are detected with MTCNN")
    parser.add_argument("--settings", type=_names, default=list(SETTINGS),
                        help=f"comma-separated settings of the partial protocols (default {','.join(SETTINGS)})")
    parser.add_argument("--factors", type=_floats, default=list(FACTORS),
                        help="comma-separated size factors (default all 9)")
    parser.add_argument("--protocols", type=_names, default=list(PROTOCOLS),
                        help=f"comma-separated protocols (default {','.join(PROTOCOLS)})")
    parser.add_argument("--combos", type=_names, default=None,
                        help="comma-separated part combinations to keep, e.g. lEye-holistic,Nose-Nose,lEye-Nose "
                        "(default all of each protocol)")
    parser.add_argument("--folds", type=_ints, default=None,
                        help="comma-separated folds to use, numbered from 1 (at least 2; default all)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    add_infer_argument(parser)
    parser.add_argument("--amp", choices=AMP_MODES, default="auto",
                        help="older spelling of --infer: auto, bf16 (= --infer bf16), none (= --infer eager)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="image decoding threads (default min(4, cores))")
    parser.add_argument("--flip", action="store_true",
                        help="embed normalise(f(x) + f(mirror(x))); mirroring swaps left and right, so a "
                        "left-eye face is also seen as a right eye at the mirrored place")
    parser.add_argument("--drop-missing", action="store_true",
                        help="leave out pairs whose images are missing or failed to align (reports how many)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


# ---------------------------------------------------------------------------------------------- helpers


def add_infer_argument(parser: argparse.ArgumentParser) -> None:
    """``--infer``, shared by the scoring commands."""
    parser.add_argument("--infer", choices=INFER_CHOICES, default=None,
                        help="inference path: auto (default: the fastest exact float32 path here, ONNX Runtime "
                        "when installed, else PyTorch), eager (PyTorch float32), onnx (ONNX Runtime float32), "
                        "compile (torch.compile float32), bf16 (bf16 autocast), compile-bf16 (torch.compile of "
                        "bf16 autocast: the fastest on CPUs with AMX, after 10-40 s compiling), fp16 (CUDA "
                        "autocast), int8 (ONNX Runtime static int8, calibrated on the first 256 faces); reduced "
                        "precision only when asked (see docs/history/benchmarks.md)")


def run(args: argparse.Namespace) -> int:
    """The ``partialface benchmark`` command."""
    res = run_benchmark(
        args.model, args.data, args.pairs, args.out, aligned=args.aligned, settings=args.settings,
        landmarks=args.landmarks, factors=args.factors, protocols=args.protocols, combos=args.combos,
        folds=args.folds, device=args.device, amp=args.amp, infer=args.infer,
        batch_size=args.batch_size, workers=args.workers, flip=args.flip, drop_missing=args.drop_missing,
        progress=not args.no_progress,
    )
    print((Path(args.out) / "results.md").read_text(encoding="utf-8"))
    if res["dropped_pairs"]:
        print(f"dropped pairs (missing images): {res['dropped_pairs']}")
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0
