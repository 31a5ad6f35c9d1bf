"""``partialface train-visibility --data ALIGNED_TRAIN_DIR --out FILE.safetensors --steps N``: train the per-region
visibility net (issue #39) on aligned training faces with free labels (occluder masks, partial-face rectangles);
the work is :func:`partialface.training.visibility.train_visibility`. Rerun the same command to resume.

``--photo-pool DIR --photos RAW_DIR``: source ``photo``, the realistic test's own pipeline run on the training
identities' raw photos (:func:`partialface.evaluation.realistic.prepare_faces`: a realistic occluder on the photo,
then MTCNN, the best face and the alignment on the occluded photo; truth: the occluder in the clean face's aligned
frame); DIR is made first (resumable) from ``--photo-count`` photos of RAW_DIR whose identity folder and file stem
match a face of --data, or read as it is when it holds a finished detection stage."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from partialface.errors import PartialFaceError


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``partialface train-visibility``."""
    parser.add_argument("--data", required=True, help="aligned training faces (identity folders of 160x160 images)")
    parser.add_argument("--out", required=True, help="output .safetensors file (state and log in OUT.run/)")
    parser.add_argument("--steps", type=int, default=3000, help="optimisation steps (default 3000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-data", default=None,
                        help="held-out aligned faces (other identities), scored every --eval-every steps")
    parser.add_argument("--val-faces", type=int, default=512, help="held-out faces scored (default 512)")
    parser.add_argument("--val-cache", default=None, metavar="FILE.npz",
                        help="keep the held-out faces scored here (default OUT.run/val.npz; share one between runs)")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--masks", default=None,
                        help="MaskTheFace's folder (holding masks/masks.cfg): real mask images as occluders")
    parser.add_argument("--mix", default=None,
                        help="source weights, e.g. clean=0.15,partial=0.2,occluder=0.35,masktheface=0.1,realistic=0.2")
    parser.add_argument("--coverages", default=None,
                        help="procedural occluder coverages, e.g. none,0.15,0.3,0.45 (none = the kind's default)")
    parser.add_argument("--recolour", type=float, default=0.0, metavar="P",
                        help="repaint an occluder in another colour or a pattern with probability P (default 0)")
    parser.add_argument("--no-quality", action="store_true",
                        help="no image-quality augmentation (blur, downscaling, JPEG, colour)")
    parser.add_argument("--map-weight", type=float, default=0.5, help="weight of the cell-map loss (default 0.5)")
    parser.add_argument("--widths", default=None, help="the net's 4 stage widths, e.g. 16,32,64,64")
    parser.add_argument("--max-faces", type=int, default=None, help="use at most this many training faces")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or 1)")
    parser.add_argument("--realistic-pool", default=None, metavar="FILE.npz",
                        help="realistic occluded training faces drawn from this pool (made first if absent; "
                        "otherwise drawn live, ~0.3 s a face)")
    parser.add_argument("--pool-size", type=int, default=2000, help="faces in --realistic-pool (default 2000)")
    parser.add_argument("--photo-pool", default=None, metavar="DIR",
                        help="source 'photo': the realistic test's detection stage on training photos, kept in DIR")
    parser.add_argument("--photos", default=None, metavar="RAW_DIR",
                        help="the raw photos of the --data identities (identity folders), to make --photo-pool")
    parser.add_argument("--photo-count", type=int, default=1200, help="photos for --photo-pool (default 1200)")
    parser.add_argument("--fp16", action="store_true", help="write the weights as float16")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def _mix(text: str) -> dict[str, float]:
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise PartialFaceError(f"--mix {text!r}: give name=weight pairs separated by commas") from None
    return out


def photo_pool(pool: Path, data: str, photos: str | None, count: int, masks: str | None, seed: int = 7) -> Any:
    """The ``photo`` source (module docstring) of detection-stage folder ``pool``: made first when ``photos`` is
    given and ``pool`` holds no finished stage; a PoolSource of the occluded faces whose subject was found."""
    import numpy as np

    from partialface.evaluation.realistic import prepare_faces
    from partialface.geometry.realistic import REALISTIC_KINDS, load_mask_templates
    from partialface.training.visibility import PoolSource, list_faces

    if photos is not None and not (pool / "README.txt").is_file():
        if masks is None:
            raise PartialFaceError("--photo-pool: give --masks (MaskTheFace's folder) to make it")
        root, raw = Path(data), Path(photos)
        stems = {(p.parent.relative_to(root).as_posix(), p.stem) for p in list_faces(root)}
        found = sorted(p for p in raw.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                       and (p.parent.relative_to(raw).as_posix(), p.stem) in stems)
        if not found:
            raise PartialFaceError(f"--photos {raw}: no raw photo matches a face of --data {root}")
        pick = np.sort(np.random.default_rng(seed).choice(len(found), min(count, len(found)), replace=False))
        prepare_faces([found[i] for i in pick], pool, kinds=REALISTIC_KINDS, masks=load_mask_templates(masks),
                      seed=seed)
    imgs, hidden = read_photo_pool(pool)
    print(f"photo pool {pool}: {len(imgs):,} occluded faces")
    return PoolSource(imgs, hidden)


def read_photo_pool(folder: Path) -> tuple[Any, Any]:
    """(images (N, 160, 160, 3) uint8, hidden (N, 160, 160) bool): the occluded faces of a realistic detection-stage
    folder (``faces.npz`` + ``<kind>.npy``) whose subject the detector found, as far as the stage got."""
    import json

    import numpy as np

    info = folder / "faces.npz"
    if not info.is_file():
        raise PartialFaceError(f"{folder}: no faces.npz (not a realistic detection-stage folder)")
    with np.load(info, allow_pickle=False) as z:
        found, subject, packed, done = z["found"], z["subject"], z["hidden"], int(z["done"])
        kinds = json.loads(str(z["meta"]))["kinds"]
    imgs, hidden = [], []
    for k, kind in enumerate(kinds):
        if kind == "whole":
            continue
        rows = np.flatnonzero(found[k, :done] & subject[k, :done])
        faces = np.load(folder / f"{kind}.npy", mmap_mode="r")
        imgs.append(np.ascontiguousarray(faces[rows]))
        hidden.append(np.unpackbits(packed[k, rows], axis=1)[:, : 160 * 160].reshape(-1, 160, 160).astype(bool))
    return np.concatenate(imgs), np.concatenate(hidden)


def run(args: argparse.Namespace) -> int:
    """Run ``partialface train-visibility``; prints the last figures. 0 unless a user error (raised)."""
    import numpy as np
    import torch

    from partialface.models.visibility import VisibilityConfig
    from partialface.training.visibility import VisibilityTrainConfig, train_visibility

    if args.steps < 1 or args.batch_size < 1:
        raise PartialFaceError("--steps and --batch-size: must be at least 1")
    torch.set_num_threads(args.threads or int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    cfg = VisibilityTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                eval_every=args.eval_every, checkpoint_every=args.eval_every,
                                map_weight=args.map_weight)
    if args.widths:
        cfg = dataclasses.replace(cfg, model=VisibilityConfig(widths=tuple(int(w) for w in args.widths.split(","))))  # type: ignore[arg-type]
    if args.mix:
        cfg = dataclasses.replace(cfg, mix=_mix(args.mix))
    if args.coverages:
        cov = tuple(None if c.strip().lower() == "none" else float(c) for c in args.coverages.split(","))
        cfg = dataclasses.replace(cfg, coverages=cov)
    if not 0.0 <= args.recolour <= 1.0:
        raise PartialFaceError(f"--recolour {args.recolour}: give a probability in [0, 1]")
    cfg = dataclasses.replace(cfg, p_recolour=args.recolour)
    if args.no_quality:
        cfg = dataclasses.replace(cfg, p_colour=0.0, p_blur=0.0, p_downscale=0.0, p_jpeg=0.0)
    extra = {}
    if args.photo_pool:
        for i, folder in enumerate(args.photo_pool.split(",")):
            extra["photo" if i == 0 else f"photo{i}"] = photo_pool(Path(folder), args.data, args.photos,
                                                                   args.photo_count, args.masks, seed=7 + i)
        if len(extra) > 1:  # several folders: one source "photo" drawing from all
            from partialface.training.visibility import PoolSource

            pools = list(extra.values())
            extra = {"photo": PoolSource(np.concatenate([p.imgs for p in pools]),
                                         np.concatenate([p.hidden for p in pools]))}
    last = train_visibility(cfg, args.data, args.out, val_data=args.val_data, masks_root=args.masks, fp16=args.fp16,
                            progress=not args.no_progress, val_faces=args.val_faces, max_faces=args.max_faces,
                            realistic_pool=args.realistic_pool, pool_size=args.pool_size, val_cache=args.val_cache,
                            extra_sources=extra)
    print(f"wrote {args.out} after {cfg.steps:,} steps: " + ", ".join(
        f"{k} {v:.4f}" for k, v in last.items() if isinstance(v, float)))
    return 0
