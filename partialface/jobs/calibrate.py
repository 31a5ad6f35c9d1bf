"""``partialface calibrate MODEL --data DIR --out OUT.safetensors``: measure a model's operating points (the
cosine thresholds at FAR 1e-2 / 1e-3 / 1e-4, holistic and partial; :mod:`partialface.evaluation.calibrate`)
on identity folders of aligned faces that are not the test set, and write them into a copy of the model file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from partialface.errors import PartialFaceError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a run folder, step folder or .safetensors model file")
    parser.add_argument("--data", required=True, type=Path,
                        help="identity folders of aligned 160x160 faces (e.g. the held-out split of `partialface "
                        "split`); never the data you report results on")
    parser.add_argument("--out", required=True, type=Path, help="the model file to write (may be MODEL's own file)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="image decoding threads (default min(4, cores))")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Calibrate, write the file, print the operating points."""
    import tempfile

    from partialface.devices import resolve_device
    from partialface.evaluation.calibrate import FARS, KINDS, METADATA_KEY, calibrate_dataset, far_key
    from partialface.evaluation.embed import load_embedder
    from partialface.training.checkpoint import _weights_file, load_weights, save_weights

    if args.out.suffix != ".safetensors":
        raise PartialFaceError(f"--out {args.out}: give a file name ending in .safetensors")
    if not Path(args.model).exists():
        raise PartialFaceError(f"{args.model}: no such run folder or model file")
    if not args.data.is_dir():
        raise PartialFaceError(f"--data {args.data}: no such folder")
    src = _weights_file(Path(args.model))
    tensors, meta = load_weights(src)  # fail on a bad file before any embedding
    embedder = load_embedder(str(src), resolve_device(args.device))
    with tempfile.TemporaryDirectory() as tmp:
        points = calibrate_dataset(embedder, args.data, Path(tmp) / "embeddings.npz", batch_size=args.batch_size,
                                   workers=args.workers, progress=not args.no_progress)
    save_weights(args.out, tensors, {**meta, METADATA_KEY: points.to_json()})
    m = points.measured_on
    print(f"operating points of {src} on {m['identities']} identities, {m['images']} faces of {args.data}:")
    for kind in KINDS:
        gen, imp = points.pairs[kind]
        cells = ", ".join(f"FAR {far:g}: threshold {points.threshold[kind][far_key(far)]:.4f} "
                          f"(TAR {100 * points.tar[kind][far_key(far)]:.2f} %)" for far in FARS)
        print(f"  {kind} ({gen:,} genuine / {imp:,} impostor pairs): {cells}")
    if m["under_measured"]:
        print(f"  note: fewer than 10 expected false accepts at FAR {', '.join(m['under_measured'])}: use more data")
    print(f"written to {args.out}")
    return 0
