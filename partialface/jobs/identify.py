"""``partialface identify GALLERY PROBE... [--top-k K] [--far F] [--json]``: who is in each photo, decided open-set
(an unknown face is "unknown", not the nearest name). A thin shell over :meth:`partialface.api.Gallery.identify`."""

from __future__ import annotations

import argparse
import json

from partialface.errors import PartialFaceError
from partialface.jobs.options import add_detector_argument, add_photo_infer_argument
from partialface.jobs.verify import _far


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gallery", metavar="GALLERY", help="a gallery file made by `partialface enroll`")
    parser.add_argument("probes", nargs="+", metavar="PROBE", help="photos (files, folders or .txt lists of paths)")
    parser.add_argument("--top-k", type=int, default=5, help="candidates to list (default 5)")
    parser.add_argument("--far", type=_far, default=1e-3,
                        help="the operating point: false-accept rate per comparison, 1e-2, 1e-3 (default) or 1e-4")
    parser.add_argument("--kind", choices=("auto", "holistic", "partial"), default="auto",
                        help="auto (default): the operating point of what the faces show (their visibility); "
                        "holistic: the whole faces' threshold; partial: the partly hidden faces'")
    parser.add_argument("--model", default=None, help="the gallery's model, if it moved (default: the gallery's own)")
    parser.add_argument("--aligned", action="store_true", help="the probes are aligned 160x160 faces already")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    add_photo_infer_argument(parser)
    add_detector_argument(parser)
    parser.add_argument("--all-faces", action="store_true",
                        help="identify every face of each photo (PROBE#1 is the best), not only the best one")
    parser.add_argument("--json", action="store_true", help="one JSON object per probe (the documented fields)")


def run(args: argparse.Namespace) -> int:
    """0 when every probe was decided (known or unknown); user errors raise."""
    import sys

    from partialface.api import Gallery
    from partialface.data.folders import image_inputs

    probes = image_inputs(args.probes)
    gallery = Gallery.open(args.gallery, args.model, device=args.device, infer=args.infer, detector=args.detector)
    threshold = gallery.threshold(args.far, args.kind)  # a bad --far fails before any photo is read
    if args.top_k < 1:
        raise PartialFaceError(f"--top-k {args.top_k}: must be >= 1")
    said: set[str] = set()
    for probe in probes:
        if args.all_faces:
            found = gallery.identify_faces(probe, args.top_k, args.far, kind=args.kind, aligned=args.aligned)
        else:
            found = [gallery.identify(probe, args.top_k, args.far, kind=args.kind, aligned=args.aligned)]
        for i, res in enumerate(found):
            for note in res.notes:
                if note not in said:  # a gallery-wide note once, not once per probe
                    print(f"note: {note}", file=sys.stderr)
                    said.add(note)
            label = f"{probe}#{i + 1}" if args.all_faces else str(probe)
            if args.json:
                print(json.dumps({"probe": label, **res.as_dict()}))
                continue
            others = ", ".join(f"{n} {s:.4f}" for n, s in res.candidates[1:])
            best_name, best = res.candidates[0]
            if res.name is not None:
                head = f"{res.name} (score {best:.4f} >= threshold {threshold:.4f}"
            else:
                head = f"unknown (best {best_name} {best:.4f} < threshold {threshold:.4f}"
            print(f"{label}: {head}, FAR {args.far:g}{'; next: ' + others if others else ''})")
    return 0
