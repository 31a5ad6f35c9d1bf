"""``partialface embed SRC... --out FILE.npz``: the best face of every photo, embedded, into one .npz file.

SRC: image files, folders (every image below) or .txt lists of paths. Photos are detected one by one and
embedded in batches; work in progress is kept in ``FILE.npz.partial.npz`` (atomic writes), and running the
same command again resumes from it. The file holds (N = the photos, in order):

=============  ===============  ===========================================================================
``paths``      (N,) str         the photos
``found``      (N,) bool        a face was found (and the photo could be read)
``faces``      (N,) int         faces found (the best one is embedded: the spec's rule)
``embeddings`` (N, D) float32   L2-normalised; zeros where ``found`` is False
``boxes``      (N, 4) float32   x1, y1, x2, y2 of the embedded face (NaN: none, or ``--aligned``)
``landmarks``  (N, 5, 2)        the face's 5 points in the photo (NaN likewise)
``errors``     (N,) str         why a photo has no embedding ("" when it has one)
``model``      () str           the model's name; ``weights``: its weights' digest
=============  ===============  ===========================================================================
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from partialface.errors import PartialFaceError
from partialface.jobs.options import add_detect_side_argument, add_detector_argument, add_photo_infer_argument

FIELDS = ("paths", "found", "faces", "embeddings", "boxes", "landmarks", "errors")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SRC", help="photos: files, folders or .txt lists of paths")
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument("--model", default=None,
                        help="a shipped model's name, run folder or .safetensors file (default: the shipped default)")
    parser.add_argument("--aligned", action="store_true", help="the photos are aligned 160x160 faces already")
    parser.add_argument("--skip-bad", action="store_true",
                        help="record unreadable photos and photos without a face (found False, errors says why) "
                        "instead of stopping")
    parser.add_argument("--batch", type=int, default=32, help="faces embedded at once (default 32)")
    parser.add_argument("--save-every", type=int, default=256, help="photos between saves of the work (default 256)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    add_photo_infer_argument(parser)
    add_detector_argument(parser)
    add_detect_side_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _save(path: Path, arrays: dict[str, Any]) -> None:
    from partialface.data.images import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _resume(partial: Path, paths: list[str], weights: str) -> dict[str, list[Any]]:
    """The rows done by an earlier run of the same command (same photos, same model), else nothing."""
    rows: dict[str, list[Any]] = {k: [] for k in FIELDS}
    if not partial.is_file():
        return rows
    try:
        with np.load(partial, allow_pickle=False) as z:
            done = [str(p) for p in z["paths"]]
            if str(z["weights"]) != weights or done != paths[: len(done)]:
                print(f"note: {partial}: from another model or list of photos; starting over", file=sys.stderr)
                return rows
            for k in FIELDS:
                rows[k] = list(z[k])
    except (OSError, ValueError, KeyError):
        print(f"note: {partial}: unreadable; starting over", file=sys.stderr)
        return {k: [] for k in FIELDS}
    return rows


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from partialface.api.facade import find_faces, load
    from partialface.data.folders import image_inputs

    out = Path(args.out)
    if out.suffix != ".npz":
        raise PartialFaceError(f"--out {out}: give a .npz file name")
    if args.batch < 1 or args.save_every < 1:
        raise PartialFaceError("--batch and --save-every must be >= 1")
    photos = [str(p) for p in image_inputs(args.sources)]
    model = load(args.model, args.device, args.infer)  # a bad --model / --infer fails before any photo is read
    dim = model.embedder.embedding_dim
    partial = out.with_name(out.name + ".partial.npz")
    rows = _resume(partial, photos, model.weights)
    start = len(rows["paths"])
    meta = {"model": np.array(model.name), "weights": np.array(model.weights)}

    def arrays() -> dict[str, Any]:
        n = len(rows["paths"])
        return {"paths": np.array(rows["paths"], dtype=str), "found": np.array(rows["found"], dtype=bool),
                "faces": np.array(rows["faces"], dtype=np.int64),
                "embeddings": np.array(rows["embeddings"], dtype=np.float32).reshape(n, dim),
                "boxes": np.array(rows["boxes"], dtype=np.float32).reshape(n, 4),
                "landmarks": np.array(rows["landmarks"], dtype=np.float32).reshape(n, 5, 2),
                "errors": np.array(rows["errors"], dtype=str), **meta}

    bar = tqdm(total=len(photos), initial=start, desc="embed", unit="img", disable=args.no_progress, file=sys.stderr)
    pending: list[tuple[str, dict[str, Any] | None, int, str]] = []

    def flush() -> None:
        faces = [d for _, d, _, _ in pending if d is not None]
        f = model.embed(np.stack([d["aligned"] for d in faces]))[0] if faces else np.zeros((0, dim), np.float32)
        it = iter(f)
        for path, d, count, error in pending:
            rows["paths"].append(path)
            rows["found"].append(d is not None)
            rows["faces"].append(count)
            rows["embeddings"].append(next(it) if d is not None else np.zeros(dim, np.float32))
            box = d["box"] if d is not None and d["box"] is not None else (np.nan,) * 4
            rows["boxes"].append(np.asarray(box, dtype=np.float32))
            pts = d["landmarks"] if d is not None and d["landmarks"] is not None else np.full((5, 2), np.nan)
            rows["landmarks"].append(np.asarray(pts, dtype=np.float32))
            rows["errors"].append(error)
        pending.clear()

    try:
        for i in range(start, len(photos)):
            path = photos[i]
            try:
                found = find_faces(path, args.aligned, what=path, detector=args.detector,
                                   detect_side=args.detect_side)
                if not found:
                    raise PartialFaceError(f"{path}: no face found")
                pending.append((path, found[0], len(found), ""))
            except PartialFaceError as e:
                if not args.skip_bad:
                    raise PartialFaceError(f"{e} (the photos before it are kept: fix or remove it and run the "
                                           "command again, or add --skip-bad)") from None
                pending.append((path, None, 0, str(e)))
            bar.update(1)
            if len(pending) >= args.batch:
                flush()
            if (i + 1 - start) % args.save_every == 0:
                flush()
                _save(partial, arrays())
    except BaseException:
        if len(rows["paths"]) > start:  # the photos still pending are embedded again on the next run
            _save(partial, arrays())
        raise
    finally:
        bar.close()
    flush()
    _save(out, arrays())
    partial.unlink(missing_ok=True)
    n = int(np.sum(rows["found"]))
    print(f"embedded {n} of {len(photos)} photos into {out} (model {model.name}, {dim}-d)"
          + (f"; {len(photos) - n} without an embedding (see errors)" if n < len(photos) else ""))
    return 0
