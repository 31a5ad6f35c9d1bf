"""Training the visibility net (issue #39) on free labels: aligned faces with occluders laid on them (the masks
:func:`partialface.geometry.occlude.occlude` returns), partial faces (the PartialLFW rectangles) and clean faces.

A batch: ``batch_size`` aligned training faces; each gets one *source* drawn from the config's mixture —

- ``clean``: the face as it is (nothing hidden);
- ``partial``: a PartialLFW rectangle kept (a part, a factor in [0.1, 0.5], its centre jittered), grey elsewhere;
- ``occluder``: a procedural occluder (:class:`~partialface.geometry.occlude.OccluderBank` looks of ``kinds`` at
  ``coverages``), moved by a small random similarity so the shapes are not always where the template puts them;
- ``masktheface``: a real MaskTheFace mask image (``masks_root``), warped onto the lower face;
- ``realistic``: :func:`partialface.geometry.realistic.occlude_aligned_realistic` (real masks warped by jittered
  landmarks, textured sunglasses and hands with matched lighting, crops), when that module is there;

with probability ``p_second`` a second occluder on top (e.g. a mask and sunglasses). Then image-quality
augmentation (mirror, a small misalignment, colour, blur, downscaling, JPEG), applied to the image and, where
geometric, to the hidden mask. Labels: :func:`partialface.geometry.regions.region_visibility` of the hidden mask
(5 regions) and the visible fraction of each cell of the net's map.

Loss: binary cross-entropy of the 5 region visibilities + ``map_weight`` x that of the cell map. AdamW, linear
warm-up, cosine decay over ``steps``. The random draws of step t come from a Generator seeded by (seed, t), so a
resumed run draws what an unbroken one would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from partialface.errors import PartialFaceError
from partialface.geometry.occlude import KINDS, OccluderBank, masktheface_templates, occlude
from partialface.geometry.regions import REGIONS, region_visibility
from partialface.geometry.template import GREY, IMAGE_SIZE, PARTS, aligned_points, part_centre, part_rect
from partialface.models.visibility import VisibilityConfig, VisibilityNet, cell_visibility, save_visibility
from partialface.training.checkpoint import load_state, save_state

_S = IMAGE_SIZE
#: the procedural kinds trained on by default (all of :data:`KINDS` but the user's "image")
PROCEDURAL_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k != "image")


@dataclass(frozen=True)
class VisibilityTrainConfig:
    """Settings of one training run (the architecture is ``model``).

    steps / batch_size / lr / weight_decay / warmup: the optimisation; map_weight: weight of the cell-map loss;
    mix: relative weights of the sources (module docstring), a source without its data is left out; kinds /
    coverages / looks: the procedural banks (coverage None = the kind's default size, jittered); p_second: a
    second occluder on top; p_flip, p_shift (misalignment: up to ``shift_px`` px, +-``rot_deg``, scale
    +-``scale_jitter``), p_colour, p_blur, p_downscale (to ``downscale_min``..0.8 of the side), p_jpeg (quality
    ``jpeg_min``..90): the image-quality augmentation; p_recolour: an occluder of the ``occluder``, ``masktheface``
    or ``realistic`` sources gets another colour or a pattern (:func:`recolour`; 0 = as the shipped file was
    trained); eval_every / checkpoint_every: in steps."""

    model: VisibilityConfig = field(default_factory=VisibilityConfig)
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    seed: int = 0
    map_weight: float = 0.5
    mix: dict[str, float] = field(default_factory=lambda: {
        "clean": 0.15, "partial": 0.2, "occluder": 0.35, "masktheface": 0.1, "realistic": 0.2})
    kinds: tuple[str, ...] = PROCEDURAL_KINDS
    coverages: tuple[float | None, ...] = (None, 0.15, 0.3, 0.45)
    looks: int = 16
    p_second: float = 0.15
    p_flip: float = 0.5
    p_shift: float = 0.5
    shift_px: float = 5.0
    rot_deg: float = 8.0
    scale_jitter: float = 0.06
    p_colour: float = 0.5
    p_recolour: float = 0.0
    p_blur: float = 0.2
    p_downscale: float = 0.3
    downscale_min: float = 0.25
    p_jpeg: float = 0.3
    jpeg_min: int = 30
    eval_every: int = 250
    checkpoint_every: int = 250

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VisibilityTrainConfig:
        """The config of :meth:`to_json`'s dict (lists back to tuples)."""
        d = dict(d)
        m = d.pop("model", None)
        model = VisibilityConfig(**{**m, "widths": tuple(m["widths"])}) if m else VisibilityConfig()
        for k in ("kinds", "coverages"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(model=model, **d)


# ---------------------------------------------------------------------------------------------- faces
def list_faces(root: str | os.PathLike[str]) -> list[Path]:
    """The image files (png, jpg) under ``root``, sorted (identity folders of aligned faces)."""
    r = Path(root)
    if not r.is_dir():
        raise PartialFaceError(f"{r}: no such folder of aligned faces")
    files = sorted(p for p in r.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file())
    if not files:
        raise PartialFaceError(f"{r}: no aligned faces (png / jpg) found")
    return files


def read_faces(files: Sequence[Path], progress: bool = False) -> np.ndarray:
    """(N, 160, 160, 3) uint8 RGB of aligned face files (others are resized to 160x160)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(p: Path) -> np.ndarray:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise PartialFaceError(f"{p}: not a readable image")
        if img.shape[:2] != (_S, _S):
            img = cv2.resize(img, (_S, _S), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img[:, :, ::-1])

    out = np.empty((len(files), _S, _S, 3), np.uint8)
    with ThreadPoolExecutor(2) as pool:
        for i, img in enumerate(pool.map(one, files)):
            out[i] = img
            if progress and i % 2000 == 0:
                print(f"reading faces: {i:,}/{len(files):,}", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------------- sources
class Source(Protocol):
    """Occludes one face: (face (160, 160, 3) uint8, another face, rng) -> (image, hidden (160, 160) bool)."""

    def __call__(self, face: np.ndarray, other: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]: ...


def _jitter_matrix(rng: np.random.Generator, shift: float, rot_deg: float, scale: float) -> np.ndarray:
    """(2, 3) a random similarity about the face's centre (80, 80)."""
    a = np.deg2rad(rng.uniform(-rot_deg, rot_deg))
    s = 1 + rng.uniform(-scale, scale)
    m = np.asarray(cv2.getRotationMatrix2D((_S / 2, _S / 2), float(np.rad2deg(a)), float(s)), dtype=np.float64)
    m[:, 2] = m[:, 2] + rng.uniform(-shift, shift, 2)
    return m


class LayerSource:
    """Occluder layers drawn once ((L, 160, 160, 3) colours, (L, 160, 160) masks; kind "face": ``shift`` (L, 2),
    its colours taken from the other face), each laid on with a random similarity (``move``: shift px, rotation
    deg, scale)."""

    def __init__(self, layers: np.ndarray, masks: np.ndarray, shifts: np.ndarray | None = None,
                 move: tuple[float, float, float] = (8.0, 10.0, 0.1)) -> None:
        self.layers, self.masks, self.shifts, self.move = layers, masks, shifts, move

    def __call__(self, face: np.ndarray, other: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        j = int(rng.integers(len(self.masks)))
        if self.shifts is not None:
            dx, dy = self.shifts[j]
            t = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
            layer = cv2.warpAffine(other, t, (_S, _S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        else:
            layer = self.layers[j]
        m = _jitter_matrix(rng, *self.move)
        layer = cv2.warpAffine(layer, m, (_S, _S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.warpAffine(self.masks[j].astype(np.uint8) * 255, m, (_S, _S), flags=cv2.INTER_LINEAR) > 127
        out = face.copy()
        out[mask] = layer[mask]
        return out, mask


def procedural_source(kind: str, coverages: Sequence[float | None], looks: int, seed: int = 0) -> LayerSource | None:
    """A :class:`LayerSource` of ``looks`` bank looks per reachable coverage of ``kind`` (None if none is)."""
    layers, masks, shifts = [], [], []
    for i, c in enumerate(coverages):
        try:
            bank = OccluderBank(kind, c, looks=looks, seed=seed * 101 + i + 1)
        except PartialFaceError:  # a coverage this kind cannot reach
            continue
        layers.append(bank.layer)
        masks.append(bank.mask)
        shifts.append(bank.shift)
    if not masks:
        return None
    return LayerSource(np.concatenate(layers), np.concatenate(masks),
                       np.concatenate(shifts) if kind == "face" else None)


def masktheface_source(root: str | os.PathLike[str], looks: int = 5, seed: int = 0) -> LayerSource:
    """A :class:`LayerSource` of MaskTheFace's frontal templates (:func:`masktheface_templates`), ``looks`` sizes
    each (kind "image" of :func:`occlude`, its default size jittered by the seed)."""
    blank = np.zeros((_S, _S, 3), np.uint8)
    layers, masks = [], []
    for t, (_, rgba, anchors) in enumerate(masktheface_templates(root)):
        for i in range(looks):
            img, mask = occlude(blank, "image", occluder=rgba, anchors=anchors, seed=seed + 97 * t + i)
            layers.append(img)
            masks.append(mask)
    return LayerSource(np.stack(layers), np.stack(masks), move=(5.0, 6.0, 0.1))


def partial_source(face: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A non-centred partial face: a part's rectangle (factor 0.1..0.5, centre jittered +-8 px) kept, grey else."""
    part = PARTS[int(rng.integers(len(PARTS)))]
    cx, cy = part_centre(part)
    r = part_rect(part, float(rng.uniform(0.1, 0.5)), centre=(cx + rng.uniform(-8, 8), cy + rng.uniform(-8, 8)))
    r = r.clipped(_S)
    hidden = np.ones((_S, _S), bool)
    hidden[r.y1 : r.y2 + 1, r.x1 : r.x2 + 1] = False
    out = face.copy()
    out[hidden] = GREY
    return out, hidden


def clean_source(face: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return face.copy(), np.zeros((_S, _S), bool)


def realistic_source(masks_root: str | os.PathLike[str] | None) -> Source | None:
    """:func:`partialface.geometry.realistic.occlude_aligned_realistic` over its kinds with jittered landmarks
    (head pose and shape), or None where that module is absent; kind "mask" only with ``masks_root``."""
    try:
        from partialface.geometry import realistic
    except ImportError:
        return None
    masks = realistic.load_mask_templates(masks_root) if masks_root is not None else None
    kinds = [k for k in realistic.REALISTIC_KINDS if k != "mask" or masks is not None]
    base = aligned_points()

    def source(face: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        kind = kinds[int(rng.integers(len(kinds)))]
        pts = base + rng.normal(0, 1.5, base.shape)
        pts[2, 0] += rng.uniform(-8, 8)  # the nose off the eyes' midpoint: a turned head
        img, hidden = realistic.occlude_aligned_realistic(face, kind, seed=int(rng.integers(1 << 31)), masks=masks,
                                                          landmarks=pts)
        return img, hidden

    return source


def build_realistic_pool(
    faces: np.ndarray, n: int, path: str | os.PathLike[str], masks_root: str | os.PathLike[str] | None,
    seed: int = 0, chunk: int = 100, progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` realistic occluded faces (:func:`realistic_source`, ~0.3 s each: too slow to draw per step) made from
    random faces of ``faces`` (N, 160, 160, 3) and kept in ``path`` (.npz: images (n, 160, 160, 3) uint8, hidden
    (n, 160, 160) bool), written every ``chunk`` faces (atomic; a rerun continues) -> (images, hidden)."""
    import io

    from partialface.data.images import atomic_write_bytes

    source = realistic_source(masks_root)
    if source is None:
        raise PartialFaceError("realistic occluders: partialface.geometry.realistic is not there")
    p = Path(path)
    imgs = np.zeros((0, _S, _S, 3), np.uint8)
    hidden = np.zeros((0, _S, _S), bool)
    if p.is_file():
        with np.load(p) as z:
            imgs, hidden = z["images"], z["hidden"]
    while len(imgs) < n:
        k = min(chunk, n - len(imgs))
        new_i, new_h = [], []
        for j in range(len(imgs), len(imgs) + k):
            rng = np.random.default_rng([seed, 7, j])
            i = int(rng.integers(len(faces)))
            img, h = source(faces[i], faces[(i + 1) % len(faces)], rng)
            new_i.append(img)
            new_h.append(h)
        imgs = np.concatenate([imgs, np.stack(new_i)])
        hidden = np.concatenate([hidden, np.stack(new_h)])
        buf = io.BytesIO()
        np.savez(buf, images=imgs, hidden=hidden)
        atomic_write_bytes(p, buf.getvalue())
        if progress:
            print(f"realistic pool: {len(imgs):,}/{n:,} -> {p}", file=sys.stderr, flush=True)
    return imgs[:n], hidden[:n]


class PoolSource:
    """Draws one of precomputed occluded faces (images (P, 160, 160, 3), hidden (P, 160, 160)); the face passed
    in is not used."""

    def __init__(self, imgs: np.ndarray, hidden: np.ndarray) -> None:
        self.imgs, self.hidden = imgs, hidden

    def __call__(self, face: np.ndarray, other: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        j = int(rng.integers(len(self.imgs)))
        return self.imgs[j].copy(), self.hidden[j].copy()


@dataclass
class Sources:
    """The named sources of a run and their weights (normalised); ``occluders``: those a second occluder is
    drawn from."""

    names: list[str]
    probs: np.ndarray
    table: dict[str, Source]
    occluders: list[str]


def build_sources(cfg: VisibilityTrainConfig, masks_root: str | os.PathLike[str] | None,
                  log: Callable[[str], None] = print, realistic: Source | None = None,
                  extra: dict[str, Source] | None = None) -> Sources:
    """The sources of ``cfg.mix`` whose data is there (the others left out, said so through ``log``); ``realistic``
    replaces the live realistic source (e.g. a :class:`PoolSource`); ``extra``: more named sources (plugged in by
    the caller, e.g. ``photo``: the realistic test's pipeline on training photos)."""
    table: dict[str, Source] = {"clean": clean_source, "partial": partial_source}
    wanted = {n for n, w in cfg.mix.items() if w > 0}
    kinds = [k for k in cfg.kinds if k in PROCEDURAL_KINDS] if "occluder" in wanted else []
    procedural = {k: s for k in kinds if (s := procedural_source(k, cfg.coverages, cfg.looks, cfg.seed)) is not None}
    if procedural:
        names_k = sorted(procedural)

        def occluder(face: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            return procedural[names_k[int(rng.integers(len(names_k)))]](face, other, rng)

        table["occluder"] = occluder
    has_masks = masks_root is not None and Path(masks_root, "masks", "masks.cfg").is_file()
    if "masktheface" in wanted and has_masks:
        assert masks_root is not None
        table["masktheface"] = masktheface_source(masks_root, seed=cfg.seed)
    real = realistic
    if real is None and "realistic" in wanted:
        real = realistic_source(masks_root if has_masks else None)
    if real is not None:
        table["realistic"] = real
    table.update(extra or {})
    names = [n for n, w in cfg.mix.items() if w > 0 and n in table]
    left = [n for n, w in cfg.mix.items() if w > 0 and n not in table]
    if left:
        log(f"visibility: sources left out (no data or module): {', '.join(left)}")
    if not names:
        raise PartialFaceError("visibility: no source of training faces left in the mix")
    w = np.array([cfg.mix[n] for n in names], dtype=np.float64)
    occ = [n for n in names if n in ("occluder", "masktheface", "realistic")]  # drawn on any face: second ones
    return Sources(names, w / w.sum(), table, occ)


# ---------------------------------------------------------------------------------------------- batches
def degrade(img: np.ndarray, hidden: np.ndarray, cfg: VisibilityTrainConfig, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Image-quality augmentation of one face (160, 160, 3) uint8 and its hidden mask (160, 160) bool."""
    u = rng.random(6)
    if u[0] < cfg.p_flip:
        img, hidden = img[:, ::-1], hidden[:, ::-1]
    if u[1] < cfg.p_shift:
        m = _jitter_matrix(rng, cfg.shift_px, cfg.rot_deg, cfg.scale_jitter)
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (_S, _S), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        hidden = cv2.warpAffine(np.ascontiguousarray(hidden).astype(np.uint8) * 255, m, (_S, _S),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) > 127
    img = np.ascontiguousarray(img)
    if u[2] < cfg.p_colour:
        gain = rng.uniform(0.6, 1.4) * rng.uniform(0.9, 1.1, 3)
        bias = rng.uniform(-25, 25)
        f = img.astype(np.float32) * gain.astype(np.float32) + bias
        if rng.random() < 0.2:  # greyscale
            f = np.repeat(f.mean(axis=2, keepdims=True), 3, axis=2)
        img = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    if u[3] < cfg.p_blur:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.0)))
    if u[4] < cfg.p_downscale:
        side = max(8, int(_S * rng.uniform(cfg.downscale_min, 0.8)))
        small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (_S, _S), interpolation=cv2.INTER_LINEAR)
    if u[5] < cfg.p_jpeg:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(cfg.jpeg_min, 91))])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            img = decoded
    return img, np.ascontiguousarray(hidden)


#: the sources whose hidden mask is exactly the occluder's pixels (a photo's is in the clean face's frame)
RECOLOURED = ("occluder", "masktheface", "realistic")
#: colours an occluder is repainted in (RGB): pink, rose, light / mid / dark grey, black, white, navy, sky, beige,
#: khaki, red, purple, yellow — the masks of street photos are every colour, the mask images mostly blue or white
RECOLOURS = np.array([(236, 150, 170), (200, 90, 120), (200, 200, 200), (130, 130, 135), (60, 60, 65), (20, 20, 22),
                      (245, 245, 245), (30, 40, 80), (140, 180, 225), (215, 195, 165), (150, 140, 90), (190, 40, 40),
                      (120, 70, 150), (230, 200, 70)], np.float32)


def recolour(img: np.ndarray, hidden: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The occluder's pixels (``hidden`` (160, 160) bool) of a face (160, 160, 3) uint8 repainted: its own shading
    (luma relative to its mean) times one colour of :data:`RECOLOURS` (jittered), or half the time a pattern of
    two (stripes, checks, dots or blotches, a random scale and angle). The rest of the face is untouched."""
    if not hidden.any():
        return img
    f = img.astype(np.float32)
    luma = f @ np.array([0.299, 0.587, 0.114], np.float32)
    shade = np.clip(luma / max(float(luma[hidden].mean()), 1.0), 0.3, 1.8)[..., None]
    c1, c2 = (RECOLOURS[rng.integers(len(RECOLOURS), size=2)] * rng.uniform(0.85, 1.15, (2, 3))).astype(np.float32)
    colour = np.broadcast_to(c1, f.shape)
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:_S, 0:_S].astype(np.float32)
        a = rng.uniform(0, np.pi)
        u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
        period = float(rng.uniform(4, 18))
        style = int(rng.integers(4))
        if style == 0:  # stripes
            w = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
        elif style == 1:  # checks
            w = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        elif style == 2:  # dots
            w = (np.hypot(u % period - period / 2, v % period - period / 2) < period / 4).astype(np.float32)
        else:  # blotches: smooth noise, thresholded
            small = rng.random((max(2, int(_S / period / 2)),) * 2).astype(np.float32)
            w = (cv2.resize(small, (_S, _S), interpolation=cv2.INTER_CUBIC) > 0.5).astype(np.float32)
        w = cv2.GaussianBlur(w, (0, 0), 0.7)[..., None]
        colour = c1 * (1 - w) + c2 * w
    out = f.copy()
    out[hidden] = (colour * shade)[hidden]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def make_batch(faces: np.ndarray, cfg: VisibilityTrainConfig, sources: Sources, rng: np.random.Generator,
               n: int | None = None, augment: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` (default batch_size) random faces of ``faces`` (N, 160, 160, 3) uint8, each through a source ->
    (images (n, 160, 160, 3) uint8, hidden (n, 160, 160) bool, the source names)."""
    n = cfg.batch_size if n is None else n
    idx = rng.integers(len(faces), size=n)
    others = rng.integers(len(faces), size=n)
    picks = rng.choice(len(sources.names), size=n, p=sources.probs)
    imgs = np.empty((n, _S, _S, 3), np.uint8)
    hidden = np.empty((n, _S, _S), bool)
    names = []
    for b in range(n):
        name = sources.names[picks[b]]
        face, other = faces[idx[b]], faces[others[b] if others[b] != idx[b] else (idx[b] + 1) % len(faces)]
        img, h = sources.table[name](face, other, rng)
        if name in RECOLOURED and cfg.p_recolour and rng.random() < cfg.p_recolour:
            img = recolour(img, h, rng)
        if sources.occluders and name != "clean" and rng.random() < cfg.p_second:
            second = sources.occluders[int(rng.integers(len(sources.occluders)))]
            img, h2 = sources.table[second](img, other, rng)
            h = h | h2
            name = f"{name}+{second}"
        if augment:
            img, h = degrade(img, h, cfg, rng)
        imgs[b], hidden[b] = img, h
        names.append(name)
    return imgs, hidden, names


def batch_loss(net: VisibilityNet, imgs: np.ndarray, hidden: np.ndarray, map_weight: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, predicted (B, 5)) of a batch of faces (B, 160, 160, 3) uint8 and hidden masks (B, 160, 160)."""
    x = torch.from_numpy(imgs)
    y = torch.from_numpy(region_visibility(hidden)).float()
    cells = torch.from_numpy(cell_visibility(hidden, net.config.grid))
    vis, logits = net.maps(x)
    loss = F.binary_cross_entropy(vis.clamp(1e-6, 1 - 1e-6), y)
    if map_weight:
        loss = loss + map_weight * F.binary_cross_entropy_with_logits(logits, cells)
    return loss, vis


def region_aucs(pred: np.ndarray, hidden: np.ndarray) -> dict[str, float]:
    """Per-region ROC AUC of ``1 - pred`` (N, 5) for "region hidden" (visibility < 0.5 in the masks (N, 160, 160));
    NaN where a region has only one class."""
    from partialface.metrics import roc_auc

    truth = region_visibility(hidden) < 0.5
    out = {}
    for r, name in enumerate(REGIONS):
        y = truth[:, r]
        out[name] = float(roc_auc(1 - pred[:, r], y)) if 0 < y.sum() < len(y) else float("nan")
    return out


# ---------------------------------------------------------------------------------------------- the run
def _lr(cfg: VisibilityTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return float(cfg.lr * 0.5 * (1 + np.cos(np.pi * min(t, 1.0))))


def train_visibility(
    cfg: VisibilityTrainConfig, data: str | os.PathLike[str], out: str | os.PathLike[str], *,
    val_data: str | os.PathLike[str] | None = None, masks_root: str | os.PathLike[str] | None = None,
    fp16: bool = False, progress: bool = True, val_faces: int = 512, max_faces: int | None = None,
    realistic_pool: str | os.PathLike[str] | None = None, pool_size: int = 2000,
    val_cache: str | os.PathLike[str] | None = None, extra_sources: dict[str, Source] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a :class:`VisibilityNet` for ``cfg.steps`` steps on the aligned faces under ``data`` and write it to
    ``out`` (safetensors; float16 if ``fp16``). State (``OUT.run/state.pt``, every ``checkpoint_every`` steps,
    atomic) and a log (``OUT.run/log.jsonl``) live beside it; a run with the same config resumes from its state.
    ``val_data``: held-out aligned faces, scored every ``eval_every`` steps (loss, per-region AUC on their
    occluded faces; the same faces whatever ``cfg``: drawn with the default config's sources and augmentation).
    ``realistic_pool``: an .npz of ``pool_size`` realistic occluded training faces (made there first if absent,
    :func:`build_realistic_pool`) that the "realistic" source draws from instead of drawing live (~0.3 s a face).
    ``val_cache``: an .npz keeping those validation faces (default ``OUT.run/val.npz``; share one between runs).
    ``extra_sources``: more named sources for ``cfg.mix`` (:func:`build_sources`).
    Returns the last validation figures (or the last training loss)."""
    from tqdm import tqdm

    out = Path(out)
    run = out.with_name(out.name + ".run")
    run.mkdir(parents=True, exist_ok=True)
    state_path, log_path = run / "state.pt", run / "log.jsonl"
    torch.manual_seed(cfg.seed)
    net = VisibilityNet(cfg.model)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if state_path.is_file():
        state = load_state(state_path)
        if state.get("config") != cfg.to_json():
            raise PartialFaceError(f"{run} holds a run with another config; choose another --out or delete {run}")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        log(f"visibility: resuming at step {start:,} of {cfg.steps:,}")
    files = list_faces(data)
    if max_faces is not None and len(files) > max_faces:
        keep = np.random.default_rng(cfg.seed).choice(len(files), max_faces, replace=False)
        files = [files[i] for i in sorted(keep)]
    faces = read_faces(files, progress=progress)
    pool: Source | None = None
    if realistic_pool is not None and cfg.mix.get("realistic", 0) > 0:
        pool = PoolSource(*build_realistic_pool(faces, pool_size, realistic_pool, masks_root, cfg.seed,
                                                progress=progress))
    sources = build_sources(cfg, masks_root, log, realistic=pool, extra=extra_sources)
    mix = ", ".join(f"{n} {p:.3f}" for n, p in zip(sources.names, sources.probs, strict=True))
    log(f"visibility: {len(faces):,} faces; sources: {mix}")
    val = None
    if val_data is not None:
        val = validation_set(val_data, Path(val_cache) if val_cache is not None else run / "val.npz", val_faces,
                             masks_root, log)
    last: dict[str, Any] = {}
    net.train()
    bar = tqdm(total=cfg.steps, initial=start, desc="train-visibility", unit="step", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, step])
        imgs, hidden, _ = make_batch(faces, cfg, sources, rng)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        loss, _ = batch_loss(net, imgs, hidden, cfg.map_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        last = {"step": step + 1, "loss": float(loss.item())}
        done = step + 1
        if val is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
            last.update(evaluate(net, *val))
            net.train()
        if done % cfg.eval_every == 0 or done == cfg.steps:
            last["seconds"] = round(time.perf_counter() - t0, 1)
            with log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(last) + "\n")
            if val is not None:
                bar.write(f"step {done}: loss {last['loss']:.4f} val {last['val_loss']:.4f} "
                          f"AUC {' '.join(f'{v:.3f}' for v in last['val_auc'].values())}")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save_state(state_path, {"config": cfg.to_json(), "model": net.state_dict(),
                                    "optimizer": opt.state_dict(), "step": done})
    bar.close()
    net.eval()
    save_visibility(out, net, fp16=fp16, metadata={"train_config": cfg.to_json(), "steps": str(cfg.steps)})
    return last


def validation_set(val_data: str | os.PathLike[str], cache: Path, n: int, masks_root: str | os.PathLike[str] | None,
                   log: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` held-out faces under ``val_data`` through the default config's sources and augmentation (the same
    faces whatever a run's config), kept in ``cache`` (.npz) -> (images, hidden, source names)."""
    import io

    from partialface.data.images import atomic_write_bytes

    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if len(z["images"]) == n:
                return z["images"], z["hidden"], [str(x) for x in z["names"]]
    vcfg = VisibilityTrainConfig()
    faces = read_faces(list_faces(val_data))
    imgs, hidden, names = make_batch(faces, vcfg, build_sources(vcfg, masks_root, log),
                                     np.random.default_rng([0, 1 << 30]), n=n, augment=True)
    buf = io.BytesIO()
    np.savez(buf, images=imgs, hidden=hidden, names=np.array(names))
    atomic_write_bytes(cache, buf.getvalue())
    return imgs, hidden, names


def evaluate(net: VisibilityNet, imgs: np.ndarray, hidden: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Validation figures of fixed faces: val_loss (BCE of the regions) and val_auc (per region, on the occluded
    faces: those not from the clean source)."""
    from partialface.models.visibility import predict_visibility

    pred = predict_visibility(net, imgs)
    y = region_visibility(hidden)
    p = np.clip(pred, 1e-6, 1 - 1e-6)
    bce = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    occluded = np.array([n != "clean" for n in names])
    aucs = region_aucs(pred[occluded], hidden[occluded])
    return {"val_loss": bce, "val_auc": aucs, "val_mean_auc": float(np.nanmean(list(aucs.values())))}
