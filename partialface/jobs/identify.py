"""``partialface identify GALLERY PROBE... [--top-k K] [--fpir R | --far F] [--json]``: who is in each photo, decided
open-set (an unknown face is "unknown", not the nearest name). The threshold follows a false-positive identification
rate over the gallery's current size (``--fpir``, default 1 %) unless ``--far`` fixes a per-comparison rate; each
answer says which threshold and why. A thin shell over :meth:`partialface.api.Gallery.identify`."""

from __future__ import annotations

import argparse
import json

from partialface.errors import PartialFaceError
from partialface.jobs.options import add_detector_argument, add_photo_infer_argument
from partialface.jobs.verify import _far


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gallery", metavar="GALLERY",
                        help="a gallery made by `partialface enroll`: a .db file or a postgresql:// URL")
    parser.add_argument("probes", nargs="+", metavar="PROBE", help="photos (files, folders or .txt lists of paths)")
    parser.add_argument("--top-k", type=int, default=5, help="candidates to list (default 5)")
    parser.add_argument("--fpir", type=_far, default=None,
                        help="the operating point (default 0.01): the share of unknown faces that may be named as "
                        "someone, turned into the per-comparison threshold for the gallery's current size")
    parser.add_argument("--far", type=_far, default=None,
                        help="instead of --fpir: a fixed false-accept rate per comparison, 1e-2, 1e-3 or 1e-4 "
                        "(unknown faces then pass about N times as often in a gallery of N)")
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
    gallery.check_rule(args.far, args.fpir, args.kind)  # a bad --far / --fpir fails before any photo is read
    if args.top_k < 1:
        raise PartialFaceError(f"--top-k {args.top_k}: must be >= 1")
    said: set[str] = set()
    for probe in probes:
        if args.all_faces:
            found = gallery.identify_faces(probe, args.top_k, args.far, fpir=args.fpir, kind=args.kind,
                                           aligned=args.aligned)
        else:
            found = [gallery.identify(probe, args.top_k, args.far, fpir=args.fpir, kind=args.kind,
                                      aligned=args.aligned)]
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
                head = f"{res.name} (score {best:.4f} >= threshold {res.threshold:.4f}"
            else:
                head = f"unknown (best {best_name} {best:.4f} < threshold {res.threshold:.4f}"
            rule = f"FPIR {res.fpir:g} over {res.comparisons}" if res.fpir is not None else f"FAR {res.far:g}"
            print(f"{label}: {head}, {rule}{'; next: ' + others if others else ''})")
            if res.why and res.why not in said:
                print(f"note: {res.why}", file=sys.stderr)
                said.add(res.why)
    return 0
