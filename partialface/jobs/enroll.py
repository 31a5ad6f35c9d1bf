"""``partialface enroll GALLERY NAME IMAGES...`` / ``partialface enroll GALLERY --folders DIR``: add identities to
a gallery (created when missing). One transaction: a killed or failed enroll leaves the gallery as it was.
A thin shell over :class:`partialface.api.Gallery`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from partialface.errors import PartialFaceError
from partialface.jobs.options import add_detector_argument, add_photo_infer_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gallery", metavar="GALLERY",
                        help="the gallery: a .db file or a postgresql:// URL (created when missing)")
    parser.add_argument("items", nargs="*", metavar="NAME IMAGES",
                        help="an identity's name, then its images (files, folders or .txt lists of paths)")
    parser.add_argument("--folders", metavar="DIR",
                        help="enrol every identity folder of DIR (DIR/NAME/images, the LFW layout) instead")
    parser.add_argument("--model", default=None,
                        help="for a new gallery: a shipped model's name, run folder or .safetensors file (default: "
                        "the shipped default); an existing gallery keeps its own")
    parser.add_argument("--fusion", choices=("max", "mean"), default=None,
                        help="a new gallery's rule for several images per identity: the best template (max, "
                        "default) or their mean")
    parser.add_argument("--aligned", action="store_true", help="the images are aligned 160x160 faces already")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip images that cannot be read or hold no face (listed on stderr) instead of stopping")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    add_photo_infer_argument(parser)
    add_detector_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _plan(args: argparse.Namespace) -> list[tuple[str, list[Path]]]:
    """(name, images) to enrol, every path checked before anything is embedded."""
    from partialface.data.folders import identity_folders, image_inputs

    if args.folders:
        if args.items:
            raise PartialFaceError("enroll: give either NAME IMAGES... or --folders DIR, not both")
        listing = identity_folders(args.folders)
        by_name: dict[str, list[Path]] = {}
        for rel, c in listing.samples:
            by_name.setdefault(listing.classes[c], []).append(listing.root / rel)
        return list(by_name.items())
    if len(args.items) < 2:
        raise PartialFaceError("enroll: give a NAME and at least one image (or --folders DIR)")
    name = args.items[0]
    if not name.strip():
        raise PartialFaceError("enroll: the NAME is empty")
    return [(name, image_inputs(args.items[1:]))]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from partialface.api import Gallery, embed, load
    from partialface.api.stores import describe
    from partialface.models.catalogue import DEFAULT_MODEL

    plan = _plan(args)
    # an existing gallery is checked (and its model taken) first; a new one is made only once all is embedded
    from partialface.api.stores import is_url, open_store

    if is_url(args.gallery):
        store = open_store(args.gallery)  # a database that cannot be reached fails here, before any photo is read
        exists = store is not None
        if store is not None:
            store.close()
    else:
        exists = Path(args.gallery).exists()
    gallery = Gallery(args.gallery, args.model, fusion=args.fusion, device=args.device, infer=args.infer,
                      detector=args.detector) if exists else None
    spec = gallery.meta["model_spec"] if gallery is not None else args.model or DEFAULT_MODEL
    load(spec, args.device, args.infer)
    total = sum(len(images) for _, images in plan)
    bar = tqdm(total=total, desc="enroll", unit="img", disable=args.no_progress or total < 2, file=sys.stderr)
    items, skipped = [], 0
    for name, images in plan:
        vectors, sources = [], []
        for path in images:
            try:
                faces = embed(path, spec, aligned=args.aligned, regions=False, device=args.device, infer=args.infer,
                              detector=args.detector)
                if not faces:
                    raise PartialFaceError(f"{path}: no face found; nothing was enrolled (give another photo, or "
                                           "--skip-bad)")
            except PartialFaceError as e:
                if not args.skip_bad:
                    raise
                print(f"skipped: {e}", file=sys.stderr)
                skipped += 1
                continue
            finally:
                bar.update(1)
            if len(faces) > 1:
                bar.write(f"note: {path}: {len(faces)} faces; enrolled the best (the largest, most central)",
                          file=sys.stderr)
            vectors.append(faces[0].embedding)
            sources.append(str(path))
        if vectors:
            items.append((name, np.stack(vectors), sources))
    bar.close()
    if not items:
        raise PartialFaceError(f"{describe(args.gallery)}: no image could be enrolled ({skipped} skipped)")
    if gallery is None:
        gallery = Gallery(args.gallery, spec, fusion=args.fusion, device=args.device, infer=args.infer,
                          detector=args.detector)
    added = gallery.enroll_many(items)
    print(f"enrolled {added} image(s) of {len(items)} identit{'y' if len(items) == 1 else 'ies'} into {gallery.label} "
          f"(now {len(gallery)} identities; model {gallery.model})" + (f"; {skipped} skipped" if skipped else ""))
    return 0
