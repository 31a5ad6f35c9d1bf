"""``partialface split SRC OUT``: hold out identities of an identity-folder dataset for model selection.

Writes two trees of links to SRC's files (nothing is copied):

- ``OUT/train/<identity>/<file>``: the identities kept for training;
- ``OUT/test/<identity>/<identity>_NNNN<ext>``: the held-out identities in LFW's layout (images numbered
  from 1 in sorted file order), with ``OUT/test/pairs.txt``: 10 identity-disjoint folds of same and
  different pairs (:func:`partialface.data.pairs.identity_disjoint_pairs`), and ``OUT/test/names.tsv``
  mapping each LFW-style file back to its source.

``partialface benchmark --data OUT/test --pairs OUT/test/pairs.txt`` then scores a model on identities it
never saw — choose models and settings there, never on LFW. Deterministic per ``--seed``; re-running with
the same options reuses the trees (it refuses a different split in the same OUT).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np

from partialface.data.folders import identity_folders, is_inside
from partialface.data.images import atomic_write_bytes
from partialface.data.pairs import identity_disjoint_pairs, pairs_text
from partialface.errors import PartialFaceError


def split_dataset(src: str | os.PathLike[str], out: str | os.PathLike[str], holdout: int, per_fold: int,
                  seed: int = 0, min_images: int = 2) -> dict[str, int]:
    """Split SRC's identities (those with >= ``min_images`` images) into OUT/train and OUT/test (see the module
    docstring). Returns counts: train_identities, train_images, test_identities, test_images, pairs."""
    root, dest = Path(src).resolve(), Path(out)
    if is_inside(dest, root):
        raise PartialFaceError(f"OUT {dest} is inside SRC {root}; choose a folder outside it")
    data = identity_folders(root, min_images=min_images)
    files: dict[str, list[str]] = {c: [] for c in data.classes}
    for rel, c in data.samples:
        files[data.classes[c]].append(rel)
    names = sorted(files)
    if not 20 <= holdout < len(names):
        raise PartialFaceError(f"--holdout {holdout}: give between 20 and {len(names) - 1} identities "
                               f"({len(names)} in {root} have at least {min_images} images)")
    r = np.random.default_rng([seed & 0xFFFFFFFF, 5])
    held = sorted(names[i] for i in r.choice(len(names), holdout, replace=False))
    held_set = set(held)
    pairs = identity_disjoint_pairs({n: len(files[n]) for n in held}, per_fold, seed)
    text = pairs_text(pairs, per_fold)
    test = dest / "test"
    old = test / "pairs.txt"
    if old.is_file() and old.read_text(encoding="utf-8") != text:
        raise PartialFaceError(f"{dest} already holds a different split; choose another OUT or delete it")
    rows = ["# lfw_path\tsource"]
    for n in held:
        for k, rel in enumerate(sorted(files[n]), 1):
            name = f"{n}/{n}_{k:04d}{Path(rel).suffix}"
            _link(root / rel, test / name)
            rows.append(f"{name}\t{rel}")
    for n in names:
        if n not in held_set:
            for rel in files[n]:
                _link(root / rel, dest / "train" / rel)
    atomic_write_bytes(test / "names.tsv", ("\n".join(rows) + "\n").encode())
    atomic_write_bytes(old, text.encode())
    kept = [n for n in names if n not in held_set]
    return {
        "train_identities": len(kept),
        "train_images": sum(len(files[n]) for n in kept),
        "test_identities": len(held),
        "test_images": sum(len(files[n]) for n in held),
        "pairs": 2 * per_fold * len(pairs),
    }


def _link(target: Path, link: Path) -> None:
    """A symbolic link ``link -> target`` (a copy where links are not supported); kept if already right."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(target)
    except OSError:
        shutil.copyfile(target, tmp)
    os.replace(tmp, link)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="identity folders (aligned faces, e.g. from partialface align)")
    parser.add_argument("out", metavar="OUT", help="output folder: OUT/train and OUT/test (+ pairs.txt)")
    parser.add_argument("--holdout", type=int, default=300, help="identities held out for testing (default 300)")
    parser.add_argument("--pairs-per-fold", type=int, default=150,
                        help="same (and as many different) pairs per fold, 10 folds (default 150)")
    parser.add_argument("--min-images", type=int, default=2, help="ignore identities with fewer images (default 2)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    if args.pairs_per_fold < 1:
        raise PartialFaceError("--pairs-per-fold: must be at least 1")
    if args.min_images < 1:
        raise PartialFaceError("--min-images: must be at least 1")
    c = split_dataset(args.src, args.out, args.holdout, args.pairs_per_fold, args.seed, args.min_images)
    print(f"train: {c['train_identities']:,} identities, {c['train_images']:,} images -> {Path(args.out) / 'train'}")
    print(f"test:  {c['test_identities']:,} identities, {c['test_images']:,} images, {c['pairs']:,} pairs "
          f"in 10 identity-disjoint folds -> {Path(args.out) / 'test'}")
    return 0
