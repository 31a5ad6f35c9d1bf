"""``partialface calibrate MODEL --data DIR --out OUT.safetensors``: measure a model's operating points (the
cosine thresholds at FAR 1e-2 / 1e-3 / 1e-4, holistic and partial; :mod:`partialface.evaluation.calibrate`)
on identity folders of aligned faces that are not the test set, and write them into a copy of the model file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from partialface.errors import PartialFaceError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a shipped model's name (partialface models), run folder, step folder or .safetensors "
                        "model file")
    parser.add_argument("--data", required=True, type=Path,
                        help="identity folders of aligned 160x160 faces (e.g. the held-out split of `partialface "
                        "split`); never the data you report results on")
    parser.add_argument("--out", required=True, type=Path, help="the model file to write (may be MODEL's own file)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="image decoding threads (default min(4, cores))")
    parser.add_argument("--auto", action="store_true",
                        help="also the operating points that follow visibility (kind auto): per level of what both "
                        "faces show, with realistic occluders on the held-out faces, at two image qualities, "
                        "for soft and sharp pairs apart")
    parser.add_argument("--masks", type=Path, default=None,
                        help="--auto: MaskTheFace's folder (holding masks/masks.cfg), the real mask images")
    parser.add_argument("--visibility", type=Path, default=None,
                        help="--auto: the visibility network's file (default: the shipped one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Calibrate, write the file, print the operating points."""
    import tempfile

    from partialface.devices import resolve_device
    from partialface.evaluation.calibrate import FARS, KINDS, METADATA_KEY, calibrate_dataset, far_key
    from partialface.evaluation.embed import load_embedder
    from partialface.models.catalogue import resolve_model
    from partialface.training.checkpoint import _weights_file, load_weights, save_weights

    if args.out.suffix != ".safetensors":
        raise PartialFaceError(f"--out {args.out}: give a file name ending in .safetensors")
    model = Path(resolve_model(args.model))
    if not model.exists():
        raise PartialFaceError(f"{args.model}: no such run folder or model file, nor a shipped model's name "
                               "(partialface models --all)")
    if not args.data.is_dir():
        raise PartialFaceError(f"--data {args.data}: no such folder")
    src = _weights_file(model)
    tensors, meta = load_weights(src)  # fail on a bad file before any embedding
    embedder = load_embedder(str(src), resolve_device(args.device))
    auto = _auto_parts(args, embedder) if args.auto else None
    with tempfile.TemporaryDirectory() as tmp:
        points = calibrate_dataset(embedder, args.data, Path(tmp) / "embeddings.npz", batch_size=args.batch_size,
                                   workers=args.workers, progress=not args.no_progress)
    if auto is not None:
        from partialface.evaluation.calibrate_auto import calibrate_auto

        embed, visibility, masks = auto
        points = calibrate_auto(points, embed, visibility, args.data, masks, progress=not args.no_progress)
    save_weights(args.out, tensors, {**meta, METADATA_KEY: points.to_json()})
    m = points.measured_on
    print(f"operating points of {src} on {m['identities']} identities, {m['images']} faces of {args.data}:")
    for kind in [*KINDS, *(k for k in points.threshold if k not in KINDS)]:
        gen, imp = points.pairs[kind]
        cells = ", ".join(f"FAR {far:g}: threshold {points.threshold[kind][far_key(far)]:.4f} "
                          f"(TAR {100 * points.tar[kind][far_key(far)]:.2f} %)" for far in FARS)
        print(f"  {kind} ({gen:,} genuine / {imp:,} impostor pairs): {cells}")
    if m["under_measured"]:
        print(f"  note: fewer than 10 expected false accepts at FAR {', '.join(m['under_measured'])}: use more data")
    print(f"written to {args.out}")
    return 0


def _auto_parts(args: argparse.Namespace, embedder: Any) -> tuple[Any, Any, Any]:
    """(embed, visibility, masks) for :func:`partialface.evaluation.calibrate_auto.calibrate_auto`; every path
    checked before the long work."""

    from partialface.evaluation.embedders import embed_faces
    from partialface.geometry.realistic import load_mask_templates
    from partialface.models.catalogue import visibility_file
    from partialface.models.visibility import load_visibility, predict_visibility

    if args.masks is None:
        raise PartialFaceError("--auto: give --masks, MaskTheFace's folder (the one holding masks/masks.cfg)")
    masks = load_mask_templates(args.masks)
    vis_path = args.visibility or visibility_file()
    if vis_path is None:
        raise PartialFaceError("--auto: the shipped visibility network is missing; give --visibility FILE")
    net = load_visibility(vis_path, embedder.device)

    return (lambda faces: embed_faces(embedder, faces, args.batch_size), lambda faces: predict_visibility(net, faces),
            masks)
