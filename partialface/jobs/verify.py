"""``partialface verify A B [--far F] [--kind auto|holistic|partial] [--model M] [--aligned] [--json]
[--explain OUT.png]``: same person?
A thin shell over :func:`partialface.api.verify`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from partialface.errors import PartialFaceError
from partialface.jobs.options import add_detect_side_argument, add_detector_argument, add_photo_infer_argument


def _far(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a rate, e.g. 1e-3") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image1", metavar="A", help="a photo (any size; the best face is used)")
    parser.add_argument("image2", metavar="B", help="another photo")
    parser.add_argument("--model", default=None,
                        help="a shipped model's name, run folder or .safetensors file (default: the shipped default, "
                        "see `partialface models`)")
    parser.add_argument("--far", type=_far, default=1e-3,
                        help="the operating point: false-accept rate 1e-2, 1e-3 (default) or 1e-4, measured on "
                        "held-out "
                        "identities")
    parser.add_argument("--kind", choices=("auto", "holistic", "partial"), default="auto",
                        help="auto (default): the operating point of what the faces show (their visibility); "
                        "holistic: the whole faces' threshold; partial: the partly hidden faces'")
    parser.add_argument("--aligned", action="store_true", help="A and B are aligned 160x160 faces already")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    add_photo_infer_argument(parser)
    add_detector_argument(parser)
    add_detect_side_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the documented fields)")
    parser.add_argument("--explain", metavar="OUT.png", default=None,
                        help="draw the two faces, what the decision rested on and the per-region shares into OUT.png")


def run(args: argparse.Namespace) -> int:
    """0 for a decision either way (the verdict is in the output); user errors raise."""
    from partialface.api import verify

    for path in (args.image1, args.image2):
        if not os.path.exists(path):
            raise PartialFaceError(f"{path}: no such file")
    if args.explain is not None and not args.explain.lower().endswith(".png"):
        raise PartialFaceError(f"--explain {args.explain}: give a .png file name")
    res = verify(args.image1, args.image2, args.model, far=args.far, kind=args.kind, aligned=args.aligned,
                 device=args.device, infer=args.infer, detector=args.detector,
                 detect_side=args.detect_side)
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.explain is not None:
        from partialface.api.explain import explain

        print(f"explained in {explain(res, args.explain, args.model)}", file=sys.stderr)
    if args.json:
        print(json.dumps(res.as_dict()))
    else:
        verdict = "same person" if res.same else "different people"
        print(f"{verdict}: score {res.score:.4f} {'>=' if res.same else '<'} threshold {res.threshold:.4f} "
              f"(FAR {res.far:g}, {res.kind} pairs; model {res.model})")
    return 0
