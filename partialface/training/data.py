"""Training data: identity folders, on-the-fly alignment, packed arrays, splits, sampler, loader.

Sources (all give aligned (160, 160, 3) uint8 RGB faces by index):
- :class:`FolderSource` — ROOT/identity/*.jpg|png (VGGFace2 / CASIA-WebFace / LFW layout) of aligned
  faces, decoded with ``read_image``; with ``align`` the files are raw photos, detected (MTCNN) and
  aligned with the project's aligner on first use, cached in memory (per worker process) or as PNG
  files under ``align_cache`` (written atomically, mirroring ROOT). No face: the whole image resized
  (the recipe's fallback).
- :class:`PackSource` — a packed folder: ``images.npy`` (N, 160, 160, 3) uint8 (memory-mapped),
  ``labels.npy`` (N,) int64, ``meta.json`` (classes, relative paths). Built by :func:`pack_dataset`.

Randomness: the sampler shuffles with ``seed + epoch`` (as DistributedSampler does); each sample's
augmentation is drawn from ``numpy.random.default_rng([seed, epoch, position])``, so a run does not
depend on the number of workers or ranks and a resumed run sees exactly the same batches.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from partialface.data.folders import identity_folders
from partialface.data.images import read_image, write_image
from partialface.errors import PartialFaceError
from partialface.geometry.template import IMAGE_SIZE
from partialface.training.augment import sample_params
from partialface.training.config import AugmentConfig, DataConfig

FACE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)


def align_photo(image: np.ndarray) -> np.ndarray:
    """Detect the face the recipe keeps and align it: (H, W, 3) uint8 -> (160, 160, 3) uint8 (whole image
    resized when no face is found)."""
    from partialface.detect import detect_faces
    from partialface.geometry.align import align_face, resize_fallback

    faces = detect_faces(image, device="cpu")
    if not faces:
        return resize_fallback(image)
    return align_face(image, np.asarray(faces[0].landmarks, dtype=np.float64).reshape(5, 2))


class ImageSource:
    """Aligned faces by index. ``paths``: relative names; ``labels``: class index per image; ``classes``."""

    paths: list[str]
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        """Image i as (160, 160, 3) uint8."""
        raise NotImplementedError


class FolderSource(ImageSource):
    """Identity folders on disk (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], align: bool = False, align_cache: str = "") -> None:
        listing = identity_folders(root)
        self.root = Path(root)
        self.paths = [p for p, _ in listing.samples]
        self.labels = np.array([c for _, c in listing.samples], dtype=np.int64)
        self.classes = list(listing.classes)
        self.align = align
        self.align_cache = Path(align_cache) if align_cache else None
        self._memory: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_memory"] = {}  # each worker process keeps its own cache
        return state

    def load(self, i: int) -> np.ndarray:
        path = self.root / self.paths[i]
        if not self.align:
            image = read_image(path)
            if image.shape != FACE_SHAPE:
                raise PartialFaceError(
                    f"{path}: {image.shape[1]}x{image.shape[0]} image, expected an aligned "
                    f"{IMAGE_SIZE}x{IMAGE_SIZE} face; set data.align=true or run `partialface align` first"
                )
            return image
        if i in self._memory:
            return self._memory[i]
        cached = self.align_cache / Path(self.paths[i]).with_suffix(".png") if self.align_cache else None
        if cached is not None and cached.is_file():
            face = read_image(cached)
        else:
            face = align_photo(read_image(path))
            if cached is not None:
                write_image(cached, face)
        if cached is None:
            self._memory[i] = face
        return face


class PackSource(ImageSource):
    """A packed folder (see :func:`pack_dataset`); the image array is memory-mapped on first use."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        try:
            meta = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
            self.labels = np.load(self.folder / "labels.npy", allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as e:
            raise PartialFaceError(f"{self.folder}: not a packed dataset ({e}); delete it to rebuild") from None
        self.paths = list(meta["paths"])
        self.classes = list(meta["classes"])
        self._images: np.ndarray | None = None
        if len(self.paths) != len(self.labels):
            raise PartialFaceError(f"{self.folder}: meta.json and labels.npy disagree; delete it to rebuild")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_images"] = None  # re-mapped in each worker
        return state

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            arr = np.load(self.folder / "images.npy", mmap_mode="r", allow_pickle=False)
            if arr.shape != (len(self.paths), *FACE_SHAPE) or arr.dtype != np.uint8:
                raise PartialFaceError(f"{self.folder}/images.npy: shape {arr.shape}, expected (N, 160, 160, 3) uint8")
            self._images = arr
        return self._images

    def load(self, i: int) -> np.ndarray:
        return np.asarray(self.images[i])


def pack_dataset(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    align: bool = False,
    align_cache: str = "",
    threads: int = 4,
    progress: bool = True,
) -> Path:
    """Pack identity folders into ``out`` (images.npy, labels.npy, meta.json); written into a temp
    folder then renamed, so ``out`` is complete or absent. An interrupted pack starts over. Returns out."""
    from tqdm import tqdm

    out = Path(out)
    source = FolderSource(root, align=align, align_cache=align_cache)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shape = (len(source), *FACE_SHAPE)
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)

        def fill(i: int) -> None:
            images[i] = source.load(i)

        with ThreadPoolExecutor(max(1, threads)) as pool:
            for _ in tqdm(pool.map(fill, range(len(source))), total=len(source), desc="pack", disable=not progress):
                pass
        images.flush()
        np.save(tmp / "labels.npy", source.labels)
        meta = {"root": str(Path(root).resolve()), "classes": source.classes, "paths": source.paths}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def open_source(cfg: DataConfig, build_pack: bool = True, progress: bool = True) -> ImageSource:
    """The configured source; packs ``cfg.root`` into ``cfg.pack`` first when that is missing."""
    if cfg.pack:
        pack = Path(cfg.pack)
        if not (pack / "meta.json").is_file():
            if not cfg.root:
                raise PartialFaceError(f"data.pack: {pack} does not exist; set data.root to build it")
            if not build_pack:
                raise PartialFaceError(f"data.pack: {pack} is not built yet")
            pack_dataset(cfg.root, pack, align=cfg.align, align_cache=cfg.align_cache, progress=progress)
        return PackSource(pack)
    if not cfg.root:
        raise PartialFaceError("data.root: give the folder of identity folders (or data.pack)")
    return FolderSource(cfg.root, align=cfg.align, align_cache=cfg.align_cache)


@dataclass
class Split:
    """Training and held-out identities of a source.

    train_index / holdout_index: positions in ``source``; train_labels: 0..len(classes)-1;
    holdout_labels: 0..len(holdout_classes)-1 (identities never seen in training).
    """

    source: ImageSource
    train_index: np.ndarray
    train_labels: np.ndarray
    classes: list[str]
    holdout_index: np.ndarray
    holdout_labels: np.ndarray
    holdout_classes: list[str]


def split_identities(source: ImageSource, min_images: int, holdout: int, seed: int) -> Split:
    """Drop identities with fewer than ``min_images`` images; hold out ``holdout`` of the rest (chosen with
    ``seed``) for verification; relabel both parts densely in class-name order."""
    counts = np.bincount(source.labels, minlength=len(source.classes))
    kept = [c for c in range(len(source.classes)) if counts[c] >= min_images]
    if holdout >= len(kept) - 1:
        raise PartialFaceError(
            f"data.holdout_identities: {holdout} leaves fewer than 2 of the {len(kept)} identities with "
            f">= {min_images} images for training"
        )
    rng = np.random.default_rng([seed, 0x5EED])
    held = sorted(rng.choice(len(kept), size=holdout, replace=False).tolist()) if holdout else []
    held_classes = [kept[i] for i in held]
    train_classes = [c for c in kept if c not in set(held_classes)]

    def part(classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        remap = np.full(len(source.classes), -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        new = remap[source.labels]
        index = np.flatnonzero(new >= 0)
        return index, new[index]

    ti, tl = part(train_classes)
    hi, hl = part(held_classes)
    return Split(
        source, ti, tl, [source.classes[c] for c in train_classes], hi, hl, [source.classes[c] for c in held_classes]
    )


# -------------------------------------------------------------------------------------------- training
class TrainDataset(Dataset[tuple[np.ndarray, int, np.ndarray]]):
    """Training samples keyed by (position, epoch) -> (face (160,160,3) uint8, label, augmentation row)."""

    def __init__(self, split: Split, augment: AugmentConfig, seed: int) -> None:
        self.source = split.source
        self.index = split.train_index
        self.labels = split.train_labels
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, int, np.ndarray]:
        pos, epoch = key
        params = sample_params(self.augment, np.random.default_rng([self.seed, epoch, pos]))
        return self.source.load(int(self.index[pos])), int(self.labels[pos]), params


def collate(batch: Sequence[tuple[np.ndarray, int, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> images (B, 160, 160, 3) uint8, labels (B,) int64, augmentation rows (B, N_PARAMS) float64."""
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    params = torch.from_numpy(np.stack([b[2] for b in batch]))
    return images, labels, params


class EpochSampler(Sampler):  # yields (position, epoch) keys, not ints
    """DistributedSampler-like: a permutation seeded with ``seed + epoch``, cut to whole GLOBAL batches
    (the remainder is dropped), rank r taking positions r, r + W, r + 2W, ... — so the union of the
    ranks' i-th local batches is exactly the i-th global batch of a 1-process run. ``set_epoch(e, start)``
    also skips the first ``start`` steps (mid-epoch resume). Yields (position, epoch)."""

    def __init__(self, n: int, global_batch: int, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
        if global_batch % world_size:
            raise PartialFaceError(
                f"optim.batch_size: {global_batch} is not divisible by the {world_size} processes; pick a multiple"
            )
        self.n = n
        self.global_batch = global_batch
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.start = 0
        self.steps_per_epoch = n // global_batch
        if self.steps_per_epoch == 0:
            raise PartialFaceError(f"optim.batch_size: {global_batch} is larger than the {n} training images")

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start = start_step

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g)[: self.steps_per_epoch * self.global_batch]
        mine = perm[self.rank :: self.world_size][self.start * self.local_batch :]
        for i in mine.tolist():
            yield i, self.epoch

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start) * self.local_batch


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else worker_id) % 2**32
    np.random.seed(seed)  # noqa: NPY002 - legacy global state, for user code in workers
    import random

    random.seed(seed)


def make_loader(
    dataset: TrainDataset, sampler: EpochSampler, workers: int, pin_memory: bool, prefetch_factor: int = 2
) -> DataLoader[Any]:
    """A DataLoader over the sampler's local batches (drop_last), decoding in ``workers`` persistent
    processes. The sampler runs in the main process: call ``sampler.set_epoch`` before each ``iter``."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(prefetch_factor=prefetch_factor, worker_init_fn=_worker_init, persistent_workers=True)
    return DataLoader(
        dataset,
        batch_sampler=BatchSampler(sampler, sampler.local_batch, drop_last=True),
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate,
        **kwargs,
    )


# -------------------------------------------------------------------------------------- verification
@dataclass
class VerifyPairs:
    """Held-out pairs: images (M, 160, 160, 3) uint8 of the distinct faces used; a, b: (P,) rows into
    ``images``; same: (P,) bool; partial: (P, N_PARAMS) augmentation rows for the second image."""

    images: torch.Tensor
    a: np.ndarray
    b: np.ndarray
    same: np.ndarray
    partial: np.ndarray


def all_held_out(source: ImageSource) -> Split:
    """Every identity of ``source`` held out (none to train on): the check's faces from their own folder."""
    empty = np.zeros(0, dtype=np.int64)
    return Split(source, empty, empty, [], np.arange(len(source.labels)), source.labels.copy(), list(source.classes))


def make_verify_pairs(split: Split, n_pairs: int, seed: int) -> VerifyPairs | None:
    """Half same / half different pairs from the held-out identities (None when there are none or no
    identity has two images). The partial variant keeps one of lEye / Nose / Mouth at a benchmark factor,
    non-centred, in the second image (the partial-holistic protocol's pattern)."""
    from partialface.geometry.template import FACTORS
    from partialface.training.augment import fixed_params

    if len(split.holdout_classes) < 2:
        return None
    rng = np.random.default_rng([seed, 0xFACE])
    by_class = [split.holdout_index[split.holdout_labels == c] for c in range(len(split.holdout_classes))]
    multi = [c for c, idx in enumerate(by_class) if len(idx) >= 2]
    if not multi:
        return None
    pairs: list[tuple[int, int, bool]] = []
    for k in range(n_pairs):
        if k % 2 == 0:
            c = multi[int(rng.integers(len(multi)))]
            i, j = rng.choice(len(by_class[c]), size=2, replace=False)
            pairs.append((int(by_class[c][i]), int(by_class[c][j]), True))
        else:
            c1, c2 = rng.choice(len(by_class), size=2, replace=False)
            i = int(rng.integers(len(by_class[c1])))
            j = int(rng.integers(len(by_class[c2])))
            pairs.append((int(by_class[c1][i]), int(by_class[c2][j]), False))
    used = sorted({p for pair in pairs for p in pair[:2]})
    row = {p: r for r, p in enumerate(used)}
    images = torch.from_numpy(np.stack([split.source.load(p) for p in used]))
    parts = ("lEye", "Nose", "Mouth")
    partial = np.concatenate(
        [
            fixed_params(parts[int(rng.integers(3))], FACTORS[int(rng.integers(len(FACTORS)))])  # type: ignore[arg-type]
            for _ in pairs
        ]
    )
    return VerifyPairs(
        images,
        np.array([row[p[0]] for p in pairs]),
        np.array([row[p[1]] for p in pairs]),
        np.array([p[2] for p in pairs], dtype=bool),
        partial,
    )
