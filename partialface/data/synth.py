"""Procedural, identity-consistent synthetic faces (numpy + OpenCV), deterministic per seed.

Every identity is a set of parameters drawn once (from ``seed``, the split and its index) that shape
every region of the face: eyes (spacing, size, iris colour, lids) and brows (shape, thickness, colour);
nose (length, width, nostrils, bridge); mouth (width, height, lip colour) and chin (jaw, beard,
dimple); face outline, ears, skin tone and texture, moles, hair colour and style, glasses. A partial
face therefore still carries identity. Every image of an identity varies by pose (rotation, scale,
slight horizontal squeeze, shift), expression (mouth opening, smile, brow raise, eye openness),
lighting (directional gradient, gain, colour cast), a cluttered background, sensor noise, blur and
JPEG quality.

Images are unaligned (``size`` x ``size``, 250 by default) and come with their 5 landmarks in the spec
order (left eye, right eye, nose tip, left mouth corner, right mouth corner; image pixels, x right,
y down), written as a landmarks TSV in the format ``partialface align --landmarks`` reads.

Layout written by :func:`write_dataset` (all files atomic; re-running with the same options skips
finished images, so an interrupted run resumes):

- ``OUT/train/idXXXXX/idXXXXX_NNNN.jpg`` + ``OUT/train/landmarks.tsv`` (paths relative to OUT/train)
- ``OUT/test/faceXXXXX/faceXXXXX_NNNN.jpg`` (LFW layout, numbers from 1) + ``OUT/test/landmarks.tsv``
  + ``OUT/test/pairs.txt`` (LFW "View 2" format, 10 folds, identity-disjoint folds)

Train and test identities are drawn from different random streams (split in the seed), so they are
disjoint, and the test set does not change with the number of training identities.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from partialface.data.images import atomic_write_bytes
from partialface.data.pairs import pairs_text
from partialface.errors import PartialFaceError
from partialface.geometry.template import LANDMARK_NAMES, MEAN_FACE_X, MEAN_FACE_Y

#: Default side of the unaligned images (LFW's 250 x 250).
DEFAULT_SIZE = 250
#: Folds of the test pairs file (LFW's View 2).
FOLDS = 10
TRAIN, TEST = "train", "test"
_SPLIT_CODE = {TRAIN: 1, TEST: 2}
_NAME_PREFIX = {TRAIN: "id", TEST: "face"}
LANDMARKS_FILE = "landmarks.tsv"
PAIRS_FILE = "pairs.txt"
_LANDMARK_HEADER = "# path\t" + "\t".join(f"{n}_{c}" for n in LANDMARK_NAMES for c in ("x", "y"))
_AA = cv2.LINE_AA
_T = TypeVar("_T")

# Mean-face proportions in units of the eye distance (from the spec template).
_EYE_DX = MEAN_FACE_X[1] - MEAN_FACE_X[0]
_NOSE_DY = (MEAN_FACE_Y[2] - MEAN_FACE_Y[0]) / _EYE_DX  # ~0.62
_MOUTH_DY = (MEAN_FACE_Y[3] - MEAN_FACE_Y[0]) / _EYE_DX  # ~1.04
_MOUTH_HALF = (MEAN_FACE_X[4] - MEAN_FACE_X[3]) / 2 / _EYE_DX  # ~0.32


def identity_name(split: str, index: int) -> str:
    """Folder name of identity ``index`` of a split: ``id00012`` (train) or ``face00012`` (test)."""
    return f"{_NAME_PREFIX[split]}{index:05d}"


def image_name(split: str, index: int, number: int) -> str:
    """Relative path of image ``number`` (from 1) of an identity: ``NAME/NAME_000N.jpg``."""
    name = identity_name(split, index)
    return f"{name}/{name}_{number:04d}.jpg"


def _rng(seed: int, split: str, index: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, _SPLIT_CODE[split], index, *more])


def _colour(rgb: np.ndarray | Sequence[float]) -> tuple[float, float, float]:
    r, g, b = (min(max(float(c), 0.0), 255.0) for c in rgb)
    return (r, g, b)


# --------------------------------------------------------------------------------------------------
# Identity


@dataclass(frozen=True)
class Identity:
    """Parameters of one synthetic person; lengths in units of the mean eye distance ``u``."""

    skin: np.ndarray  # (3,) RGB
    patches: np.ndarray  # (P, 5) skin shading patches: x, y (units), rx, ry, brightness factor
    hair: np.ndarray  # (3,) RGB
    hair_style: int  # 0 short, 1 long, 2 bald-ish, 3 bun/volume
    hairline: float  # forehead height above the eye line
    parting: float  # -1..1 where the fringe parts
    fringe: float  # 0..1 how far the fringe comes down
    eye_dist: float  # eye distance factor around 1
    eye_y: float  # vertical offset of the eye line
    eye_w: float
    eye_h: float
    eye_tilt: float  # degrees
    iris: np.ndarray  # (3,) RGB, dark
    iris_r: float
    lid: float  # eyelid line thickness factor
    brow_colour: np.ndarray
    brow_gap: float  # brow height above eye centre
    brow_thick: float
    brow_arch: float
    brow_tilt: float
    brow_len: float
    nose_len: float
    nose_w: float
    nose_tip_r: float
    nostril: float
    bridge: float  # bridge shadow strength 0..1
    mouth_dy: float
    mouth_half: float
    lip_h: float
    lip: np.ndarray
    face_w: float  # half-width at the cheeks
    jaw: float  # half-width at the jaw relative to face_w
    chin: float  # chin distance below the eye line
    chin_w: float
    ear: float
    beard: float  # 0 none, else darkness of the beard area
    dimple: bool
    moles: np.ndarray  # (M, 3) x, y (units, relative to eye midpoint), radius
    blush: float
    glasses: int  # 0 none, 1 round, 2 rectangular
    glasses_colour: np.ndarray


def make_identity(seed: int, split: str, index: int) -> Identity:
    """The parameters of identity ``index`` of ``split`` for ``seed`` (independent of every other identity)."""
    r = _rng(seed, split, index)
    tone = r.uniform(0.25, 1.0)
    skin = np.array([235, 200, 170]) * tone + np.array([60, 40, 30]) * (1 - tone) + r.normal(0, 10, 3)
    hair_kind = r.integers(0, 5)
    hair_base = [np.array([20, 15, 12]), np.array([80, 50, 25]), np.array([160, 120, 60]),
                 np.array([130, 50, 25]), np.array([170, 170, 170])][hair_kind]
    hair = hair_base + r.normal(0, 15, 3)
    iris = [np.array([60, 35, 20]), np.array([50, 80, 120]), np.array([55, 85, 50]), np.array([30, 25, 25])][
        r.integers(0, 4)
    ] + r.normal(0, 8, 3)
    n_moles = int(r.integers(1, 6))
    moles = np.c_[r.uniform(-1.0, 1.0, n_moles), r.uniform(-0.8, 1.6, n_moles), r.uniform(0.02, 0.05, n_moles)]
    return Identity(
        skin=skin,
        patches=np.c_[r.uniform(-0.6, 0.6, 5), r.uniform(-0.5, 1.3, 5), r.uniform(0.1, 0.3, (5, 2)),
                      r.uniform(0.86, 1.12, 5)],
        hair=hair,
        hair_style=int(r.integers(0, 4)),
        hairline=r.uniform(0.75, 1.25),
        parting=r.uniform(-1, 1),
        fringe=r.uniform(0, 1),
        eye_dist=r.uniform(0.9, 1.1),
        eye_y=r.uniform(-0.06, 0.06),
        eye_w=r.uniform(0.16, 0.24),
        eye_h=r.uniform(0.07, 0.11),
        eye_tilt=r.uniform(-8, 8),
        iris=iris,
        iris_r=r.uniform(0.07, 0.095),
        lid=r.uniform(0.6, 1.6),
        brow_colour=hair * r.uniform(0.6, 1.0),
        brow_gap=r.uniform(0.2, 0.34),
        brow_thick=r.uniform(0.035, 0.09),
        brow_arch=r.uniform(0.0, 0.12),
        brow_tilt=r.uniform(-0.08, 0.08),
        brow_len=r.uniform(0.24, 0.36),
        nose_len=_NOSE_DY * r.uniform(0.88, 1.12),
        nose_w=r.uniform(0.12, 0.22),
        nose_tip_r=r.uniform(0.06, 0.11),
        nostril=r.uniform(0.03, 0.06),
        bridge=r.uniform(0.2, 1.0),
        mouth_dy=_MOUTH_DY * r.uniform(0.93, 1.08),
        mouth_half=_MOUTH_HALF * r.uniform(0.85, 1.15),
        lip_h=r.uniform(0.05, 0.11),
        lip=skin * np.array([0.85, 0.55, 0.55]) + r.normal(0, 12, 3),
        face_w=r.uniform(0.92, 1.15),
        jaw=r.uniform(0.55, 0.9),
        chin=r.uniform(1.55, 1.85),
        chin_w=r.uniform(0.2, 0.45),
        ear=r.uniform(0.18, 0.3),
        beard=float(r.uniform(0.45, 0.8)) if r.random() < 0.25 else 0.0,
        dimple=bool(r.random() < 0.3),
        moles=moles,
        blush=r.uniform(0, 0.25),
        glasses=int(r.choice(3, p=[0.75, 0.125, 0.125])),
        glasses_colour=r.uniform(0, 120, 3),
    )


# --------------------------------------------------------------------------------------------------
# One image


@dataclass(frozen=True)
class Variation:
    """Per-image nuisance parameters."""

    angle: float  # degrees, counter-clockwise in the image
    scale: float
    squeeze: float  # horizontal scale factor (a hint of yaw)
    stretch: float  # vertical scale factor (a hint of pitch)
    yaw: float  # -1..1: inner features shift sideways against the outline
    shift: np.ndarray  # (2,) pixels
    mouth_open: float  # 0..1
    smile: float  # -0.3..1
    brow_raise: float  # units
    eye_open: float  # factor
    light_dir: float  # radians
    light_strength: float
    light_hardness: float  # 0 = linear gradient, larger = sharper shadow edge
    gamma: float
    gain: float
    cast: np.ndarray  # (3,) colour cast
    noise: float
    blur: float
    quality: int
    background_seed: int


def make_variation(seed: int, split: str, index: int, number: int) -> Variation:
    """Nuisance parameters of image ``number`` of identity ``index`` (independent of every other image)."""
    r = _rng(seed, split, index, number)
    return Variation(
        angle=r.uniform(-12, 12),
        scale=r.uniform(0.88, 1.12),
        squeeze=r.uniform(0.82, 1.0),
        stretch=r.uniform(0.92, 1.04),
        yaw=r.uniform(-1, 1),
        shift=r.uniform(-14, 14, 2),
        mouth_open=float(r.uniform(0, 1) ** 2),
        smile=r.uniform(-0.3, 1),
        brow_raise=r.uniform(-0.03, 0.08),
        eye_open=r.uniform(0.55, 1.15),
        light_dir=r.uniform(0, 2 * math.pi),
        light_strength=r.uniform(0.1, 0.75),
        light_hardness=r.uniform(0.5, 4.0),
        gamma=r.uniform(0.7, 1.45),
        gain=r.uniform(0.65, 1.3),
        cast=r.uniform(0.85, 1.15, 3),
        noise=r.uniform(0, 9),
        blur=r.uniform(0, 1.4),
        quality=int(r.integers(35, 96)),
        background_seed=int(r.integers(0, 2**31)),
    )


def _background(size: int, seed: int) -> np.ndarray:
    """Cluttered background (size, size, 3) uint8: a colour gradient plus random shapes."""
    r = np.random.default_rng(seed)
    corners = r.uniform(0, 255, (2, 2, 3)).astype(np.float32)  # a bilinear colour gradient
    img = cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    for _ in range(int(r.integers(4, 12))):
        col = tuple(float(v) for v in r.uniform(0, 255, 3))
        kind = r.integers(0, 3)
        p = r.integers(0, size, 2)
        s = r.integers(size // 12, size // 2, 2)
        if kind == 0:
            cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[0] + s[0]), int(p[1] + s[1])), col, -1)
        elif kind == 1:
            cv2.ellipse(img, (int(p[0]), int(p[1])), (int(s[0]) // 2, int(s[1]) // 2), float(r.uniform(0, 180)),
                        0, 360, col, -1, _AA)
        else:
            q = r.integers(0, size, 2)
            cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), col, int(r.integers(2, 12)), _AA)
    return cv2.GaussianBlur(img, (0, 0), float(r.uniform(0.4, 1.5)))


def _light_map(size: int, var: Variation) -> np.ndarray:
    """Scene lighting (size, size, 3) float32: directional linear gradient x gain x colour cast."""
    n = max(2, size // 16)
    t = (np.arange(n, dtype=np.float64) + 0.5) / n * 2 - 1  # cell centres in [-1, 1]
    proj = math.cos(var.light_dir) * t[None, :] + math.sin(var.light_dir) * t[:, None]
    h = var.light_hardness
    grad = 1 + var.light_strength * np.tanh(h * proj) / math.tanh(h)
    small = (grad[..., None] * (var.gain * var.cast)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


_NOISE_BANK: dict[int, np.ndarray] = {}


def _noise(size: int, seed: int) -> np.ndarray:
    """Unit Gaussian noise (size, size, 1) float32: a crop of a fixed per-process bank (cheap, deterministic)."""
    bank = _NOISE_BANK.get(size)
    if bank is None:
        bank = np.random.default_rng(12345).standard_normal((2 * size, 2 * size, 1), dtype=np.float32)
        _NOISE_BANK[size] = bank
    oy, ox = divmod(seed % (size * size), size)
    return bank[oy:oy + size, ox:ox + size]


def _pt(x: float, y: float) -> tuple[int, int]:
    return (round(x * 16), round(y * 16))  # cv2 fixed-point coordinates (shift=4)


_SH = 4  # fixed-point bits for cv2 drawing (sub-pixel shapes)


def _ellipse(img: np.ndarray, c: tuple[float, float], axes: tuple[float, float], angle: float,
             col: tuple[float, ...], thick: int = -1, a0: float = 0, a1: float = 360) -> None:
    cv2.ellipse(img, _pt(*c), _pt(max(axes[0], 0.3), max(axes[1], 0.3)), angle, a0, a1, col, thick, _AA, _SH)


def _poly(img: np.ndarray, pts: np.ndarray, col: tuple[float, ...]) -> None:
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], col, _AA, _SH)


def _polyline(img: np.ndarray, pts: np.ndarray, col: tuple[float, ...], thick: float) -> None:
    cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, col, max(1, round(thick)), _AA, _SH)


def _face_outline(cx: float, cy: float, u: float, idn: Identity, n: int = 40) -> np.ndarray:
    """Closed outline (n, 2): an ellipse-like top, cheeks, tapering jaw and a rounded chin."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    top = idn.hairline + 0.35
    y = np.where(np.sin(t) < 0, np.sin(t) * top, np.sin(t) * idn.chin)
    lower = np.clip(np.sin(t), 0, 1)
    taper = 1 - (1 - idn.jaw) * lower**1.5
    chin_round = np.maximum(idn.chin_w, np.abs(np.cos(t)))
    x = np.cos(t) * idn.face_w * taper * np.where(lower > 0.9, chin_round / np.maximum(np.abs(np.cos(t)), 1e-6), 1)
    x = np.clip(x, -idn.face_w, idn.face_w)
    return np.c_[cx + x * u, cy + (y + 0.1) * u]


def render(idn: Identity, var: Variation, size: int = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image: ((size, size, 3) uint8 RGB before JPEG, landmarks (5, 2) float64 in image pixels)."""
    u = 0.22 * size * idn.eye_dist  # this identity's eye distance on the canvas
    cx, cy = size / 2, 0.43 * size + idn.eye_y * u  # eye midpoint on the canvas
    # pose: rotation + scale about the eye midpoint, horizontal squeeze, shift (canvas -> image)
    m = np.asarray(cv2.getRotationMatrix2D((cx, cy), var.angle, var.scale), dtype=np.float64)
    m[0] *= var.squeeze
    m[1] *= var.stretch
    m[1, 2] += cy * (1 - var.stretch)
    m[0, 2] += cx * (1 - var.squeeze)  # keep the squeeze centred on the face
    m[:, 2] += var.shift + np.array([size / 2 - cx, size * 0.47 - cy])
    bg = _background(size, var.background_seed)
    # draw on the background as seen from the face's upright frame, so anti-aliased edges blend with it
    layer = cv2.warpAffine(bg, cv2.invertAffineTransform(m), (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    lm = np.zeros((5, 2))  # landmarks on the canvas: eyes, nose tip, mouth corners
    for draw in (_draw_head, _draw_eyes, _draw_nose, _draw_mouth):
        draw(layer, lm, idn, var, cx, cy, u, size)
    out = bg.copy()
    cv2.warpAffine(layer, m, (size, size), dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    out = cv2.multiply(out.astype(np.float32), _light_map(size, var))
    if var.blur > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), var.blur)
    out = out + _noise(size, var.background_seed) * np.float32(var.noise)
    points = np.c_[lm, np.ones(5)] @ m.T
    lut = np.round(255 * (np.arange(256) / 255) ** var.gamma).astype(np.uint8)
    return cv2.LUT(np.clip(out + 0.5, 0, 255).astype(np.uint8), lut), points


def _draw_head(
    layer: np.ndarray, lm: np.ndarray, idn: Identity, var: Variation, cx: float, cy: float, u: float, size: int
) -> None:
    """Hair behind the head, neck, shoulders, ears, the textured face and the hairline (on the upright canvas)."""
    skin, hair = idn.skin, idn.hair
    # hair behind the head, neck, ears
    top = cy - (idn.hairline + 0.35) * u
    if idn.hair_style == 1:
        _poly(layer, np.array([[cx - 1.35 * u, cy - 0.2 * u], [cx + 1.35 * u, cy - 0.2 * u],
                               [cx + 1.45 * u, cy + 2.3 * u], [cx - 1.45 * u, cy + 2.3 * u]]), _colour(hair * 0.8))
    if idn.hair_style != 2:
        grow = 1.3 if idn.hair_style == 3 else 1.12
        _ellipse(layer, (cx, cy - 0.15 * u), (idn.face_w * grow * u, (cy - top) * 1.12 + 0.15 * u), 0,
                 _colour(hair * 0.85), a0=180, a1=360)
        _ellipse(layer, (cx, cy - 0.15 * u), (idn.face_w * grow * u, 0.5 * u), 0, _colour(hair * 0.85))
    _poly(layer, np.array([[cx - 0.45 * u, cy + 1.2 * u], [cx + 0.45 * u, cy + 1.2 * u],
                           [cx + 0.55 * u, size + 2.0], [cx - 0.55 * u, size + 2.0]]), _colour(skin * 0.8))
    _poly(layer, np.array([[cx - 1.6 * u, size + 2.0], [cx - 0.5 * u, cy + 2.05 * u], [cx + 0.5 * u, cy + 2.05 * u],
                           [cx + 1.6 * u, size + 2.0]]), _colour(idn.glasses_colour * 0.5 + hair * 0.5))
    for s in (-1, 1):
        _ellipse(layer, (cx + s * idn.face_w * 0.97 * u, cy + 0.35 * u), (idn.ear * 0.6 * u, idn.ear * 1.5 * u),
                 0, _colour(skin * 0.9))
    # face with identity texture (shading field over the face box)
    outline = _face_outline(cx, cy, u, idn)
    _poly(layer, outline, _colour(skin))
    for px, py, rx, ry, f in idn.patches:
        _ellipse(layer, (cx + px * idn.face_w * u, cy + py * u), (rx * u, ry * u), 0, _colour(skin * f))
    if idn.beard:
        beard = _face_outline(cx, cy, u, idn)
        beard = beard[beard[:, 1] > cy + 0.75 * u]
        if len(beard) > 2:
            _poly(layer, beard, _colour(skin * (1 - idn.beard) + hair * idn.beard))
    for s in (-1, 1):  # cheek blush
        _ellipse(layer, (cx + s * 0.6 * u, cy + 0.55 * u), (0.2 * u, 0.13 * u), 0,
                 _colour(skin * (1 - idn.blush) + np.array([220, 90, 90]) * idn.blush))
    for mx, my, mr in idn.moles:
        _ellipse(layer, (cx + mx * idn.face_w * 0.8 * u, cy + my * u), (mr * u, mr * u), 0, _colour(skin * 0.35))
    # fringe / hairline
    if idn.hair_style != 2:
        line_y = top + (0.15 + 0.5 * idn.fringe) * idn.hairline * u
        part_x = cx + idn.parting * 0.5 * u
        xs = np.linspace(cx - idn.face_w * u * 1.05, cx + idn.face_w * u * 1.05, 9)
        ys = line_y + 0.25 * u * ((xs - part_x) / u) ** 2 - 0.12 * u * np.exp(-(((xs - part_x) / (0.2 * u)) ** 2))
        _poly(layer, np.r_[np.c_[xs, ys], [[cx + idn.face_w * u * 1.1, top - 0.2 * u],
                                          [cx - idn.face_w * u * 1.1, top - 0.2 * u]]], _colour(hair))


def _draw_eyes(
    layer: np.ndarray, lm: np.ndarray, idn: Identity, var: Variation, cx: float, cy: float, u: float, size: int
) -> None:
    """Eyes (landmarks 0 and 1), brows and glasses."""
    skin = idn.skin
    eye_open = var.eye_open
    fx = cx + var.yaw * 0.07 * u  # yaw: inner features move sideways, the nose most
    for k, s in enumerate((-1, 1)):
        ex, ey = fx + s * 0.5 * u, cy
        lm[k] = (ex, ey)
        tilt = -s * idn.eye_tilt
        ew, eh = idn.eye_w * u, idn.eye_h * u * eye_open
        _ellipse(layer, (ex, ey), (ew * 1.15, eh * 1.6 + 0.04 * u), tilt, _colour(skin * 0.78))  # socket shadow
        _ellipse(layer, (ex, ey), (ew, eh), tilt, _colour([235, 232, 225]))
        ir = min(idn.iris_r * u, eh * 1.05 + 0.5)
        _ellipse(layer, (ex, ey), (ir, ir), 0, _colour(idn.iris))
        _ellipse(layer, (ex, ey), (ir * 0.45, ir * 0.45), 0, _colour([10, 10, 10]))
        _ellipse(layer, (ex, ey), (ew, eh), tilt, _colour(skin * 0.4), thick=max(1, round(idn.lid * u * 0.03)),
                 a0=180, a1=360)
        if idn.glasses:
            col = _colour(idn.glasses_colour)
            if idn.glasses == 1:
                _ellipse(layer, (ex, ey), (0.3 * u, 0.24 * u), 0, col, thick=max(1, round(0.035 * u)))
            else:
                cv2.rectangle(layer, _pt(ex - 0.3 * u, ey - 0.2 * u), _pt(ex + 0.3 * u, ey + 0.2 * u), col,
                              max(1, round(0.035 * u)), _AA, _SH)
        bx = np.linspace(-idn.brow_len, idn.brow_len, 7)
        by = -idn.brow_gap - var.brow_raise - idn.brow_arch * (1 - (bx / idn.brow_len) ** 2) + idn.brow_tilt * bx * s
        _polyline(layer, np.c_[ex + (bx + s * 0.04) * u, ey + by * u], _colour(idn.brow_colour), idn.brow_thick * u)
    if idn.glasses:
        _polyline(layer, np.array([[fx - 0.2 * u, cy - 0.05 * u], [fx + 0.2 * u, cy - 0.05 * u]]),
                  _colour(idn.glasses_colour), 0.035 * u)


def _draw_nose(
    layer: np.ndarray, lm: np.ndarray, idn: Identity, var: Variation, cx: float, cy: float, u: float, size: int
) -> None:
    """Nose: bridge shadow, tip (landmark 2), nostrils."""
    skin = idn.skin
    nx, ny = cx + var.yaw * 0.14 * u, cy + idn.nose_len * u
    shade = _colour(skin * (1 - 0.3 * idn.bridge))
    _polyline(layer, np.array([[nx - 0.09 * u, cy + 0.05 * u], [nx - 0.1 * u, ny - 0.1 * u],
                               [nx - idn.nose_w * u, ny + 0.02 * u]]), shade, 0.04 * u)
    _ellipse(layer, (nx, ny), (idn.nose_tip_r * u * 1.3, idn.nose_tip_r * u), 0, _colour(skin * 0.93))
    for s in (-1, 1):
        _ellipse(layer, (nx + s * idn.nose_w * 0.55 * u, ny + 0.07 * u), (idn.nostril * 1.4 * u, idn.nostril * u),
                 s * 20, _colour(skin * 0.3))
    lm[2] = (nx, ny)


def _draw_mouth(
    layer: np.ndarray, lm: np.ndarray, idn: Identity, var: Variation, cx: float, cy: float, u: float, size: int
) -> None:
    """Mouth: lips, opening, smile (landmarks 3 and 4), dimple."""
    skin = idn.skin
    cx_mouth = cx + var.yaw * 0.08 * u
    # mouth: lips, opening, smile
    my = cy + idn.mouth_dy * u
    half = idn.mouth_half * u * (1 + 0.12 * var.smile)
    lift = 0.08 * u * var.smile
    opening = var.mouth_open * 0.16 * u
    lh = idn.lip_h * u
    xs = np.linspace(-1, 1, 9)
    curve = lift * xs**2
    upper = np.c_[cx_mouth + xs * half, my - curve - (lh + opening / 2) * np.sqrt(1 - xs**2 * 0.95)]
    lower = np.c_[cx_mouth + xs * half, my - curve + (lh * 1.2 + opening / 2) * np.sqrt(1 - xs**2 * 0.95)]
    _poly(layer, np.r_[upper, lower[::-1]], _colour(idn.lip))
    inner_u = np.c_[cx_mouth + xs * half * 0.92, my - curve - opening / 2 * np.sqrt(1 - xs**2)]
    inner_l = np.c_[cx_mouth + xs * half * 0.92, my - curve + opening / 2 * np.sqrt(1 - xs**2)]
    if opening > 1:
        _poly(layer, np.r_[inner_u, inner_l[::-1]], _colour([40, 15, 20]))
    _polyline(layer, np.r_[inner_u, inner_l[::-1]], _colour(idn.lip * 0.45), max(1.0, 0.02 * u))
    lm[3] = (cx_mouth - half, my - lift)
    lm[4] = (cx_mouth + half, my - lift)
    if idn.dimple:
        _ellipse(layer, (cx, cy + (idn.chin - 0.22) * u), (0.06 * u, 0.03 * u), 0, _colour(skin * 0.7))


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG bytes at ``quality`` (deterministic for equal inputs)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - cv2 always encodes uint8 RGB
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def synth_image(seed: int, split: str, index: int, number: int, size: int = DEFAULT_SIZE) -> tuple[bytes, np.ndarray]:
    """Image ``number`` (from 1) of identity ``index``: (JPEG bytes, landmarks (5, 2) in image pixels)."""
    idn = make_identity(seed, split, index)
    var = make_variation(seed, split, index, number)
    image, points = render(idn, var, size)
    return encode_jpeg(image, var.quality), points


# --------------------------------------------------------------------------------------------------
# Pairs


def make_pairs(identities: Sequence[str], per_identity: int, per_fold: int, seed: int,
               folds: int = FOLDS) -> list[tuple[int, list[tuple[str, int, int]], list[tuple[str, int, str, int]]]]:
    """LFW-style pairs with identity-disjoint folds: [(fold, same [(name, i, j)], different [(n1, i, n2, j)])].

    Identities are shuffled and split into ``folds`` groups; fold k draws its pairs from group k only.
    Pairs within a fold are distinct. Raises PartialFaceError when the options cannot give them.
    """
    if len(identities) < 2 * folds:
        raise PartialFaceError(f"--test-identities {len(identities)} is too few for {folds} identity-disjoint "
                               f"folds; use at least {2 * folds}")
    if per_identity < 2:
        raise PartialFaceError("--test-per-identity must be at least 2 (same-person pairs need two images)")
    r = np.random.default_rng([seed & 0xFFFFFFFF, 7])
    order = r.permutation(len(identities))
    out = []
    for k, group in enumerate(np.array_split(order, folds)):
        names = [identities[i] for i in group]
        g = len(names)
        n_same, n_diff = g * per_identity * (per_identity - 1) // 2, g * (g - 1) // 2 * per_identity**2
        if per_fold > min(n_same, n_diff):
            raise PartialFaceError(
                f"--pairs-per-fold {per_fold} is more than fold {k + 1} can hold ({n_same} distinct same and "
                f"{n_diff} different pairs); lower it or raise --test-identities/--test-per-identity")
        same = sorted(_distinct(r, per_fold, n_same, partial(_same_pair, r, names, per_identity)))
        diff = sorted(_distinct(r, per_fold, n_diff, partial(_diff_pair, r, names, per_identity)))
        out.append((k, same, diff))
    return out


def _same_pair(r: np.random.Generator, names: Sequence[str], per_identity: int) -> tuple[str, int, int]:
    i, j = sorted(int(v) for v in r.choice(per_identity, 2, replace=False) + 1)
    return (names[int(r.integers(len(names)))], i, j)


def _diff_pair(r: np.random.Generator, names: Sequence[str], per_identity: int) -> tuple[str, int, str, int]:
    a, b = sorted(int(v) for v in r.choice(len(names), 2, replace=False))
    i, j = (int(v) + 1 for v in r.integers(per_identity, size=2))
    return (names[a], i, names[b], j)


def _distinct(r: np.random.Generator, count: int, capacity: int, draw: Callable[[], _T]) -> set[_T]:
    """``count`` distinct draws out of ``capacity`` possible values (rejection sampling; count <= capacity)."""
    out: set[_T] = set()
    while len(out) < count:  # expected draws <= count * H(capacity) -- fine for the sizes used here
        out.add(draw())
    return out


# --------------------------------------------------------------------------------------------------
# Dataset


def landmarks_text(points: Mapping[str, np.ndarray]) -> str:
    """Landmarks TSV text in the ``partialface align --landmarks`` format, sorted by path, exact floats."""
    lines = [_LANDMARK_HEADER]
    for rel in sorted(points):
        pts = np.asarray(points[rel], dtype=np.float64).reshape(10)
        lines.append(rel + "\t" + "\t".join(repr(float(v)) for v in pts))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SynthOptions:
    """What :func:`write_dataset` writes."""

    train_identities: int = 200
    train_per_identity: int = 10
    test_identities: int = 100
    test_per_identity: int = 4
    pairs_per_fold: int = 30
    seed: int = 0
    size: int = DEFAULT_SIZE

    def check(self) -> None:
        """Raise PartialFaceError (one line, naming the option) for impossible options."""
        for opt, v, lo in (("--train-identities", self.train_identities, 0),
                           ("--train-per-identity", self.train_per_identity, 1),
                           ("--test-identities", self.test_identities, 0),
                           ("--test-per-identity", self.test_per_identity, 1),
                           ("--pairs-per-fold", self.pairs_per_fold, 1), ("--size", self.size, 64)):
            if v < lo:
                raise PartialFaceError(f"{opt} must be at least {lo}, got {v}")
        if self.size > 2048:
            raise PartialFaceError(f"--size must be at most 2048, got {self.size}")
        if self.train_identities > 99999 or self.test_identities > 99999:
            raise PartialFaceError("--train-identities and --test-identities must be at most 99999")
        if self.test_identities:
            make_pairs([identity_name(TEST, i) for i in range(self.test_identities)], self.test_per_identity,
                       self.pairs_per_fold, self.seed)


def _jobs(opts: SynthOptions) -> list[tuple[str, int, int]]:
    jobs = [(TRAIN, i, k) for i in range(opts.train_identities) for k in range(1, opts.train_per_identity + 1)]
    jobs += [(TEST, i, k) for i in range(opts.test_identities) for k in range(1, opts.test_per_identity + 1)]
    return jobs


def _work(args: tuple[str, int, int, list[tuple[str, int, int]]]) -> list[tuple[str, str, np.ndarray]]:
    """Worker: render and write a chunk of images (skipping finished files); returns their landmarks."""
    out_dir, seed, size, chunk = args
    root = Path(out_dir)
    out = []
    for split, index, number in chunk:
        rel = image_name(split, index, number)
        path = root / split / rel
        if path.is_file():  # atomic writes: an existing file is complete; recompute its landmarks only
            _, points = render(make_identity(seed, split, index), make_variation(seed, split, index, number), size)
        else:
            data, points = synth_image(seed, split, index, number, size)
            atomic_write_bytes(path, data)
        out.append((split, rel, points))
    return out


def write_dataset(out: str | os.PathLike[str], opts: SynthOptions, workers: int = 1,
                  progress: Callable[[int], object] | None = None, chunk: int = 32) -> dict[str, int]:
    """Write the train and test sets (layout in the module docstring); returns {split: images written}.

    ``progress(n)`` is called after every finished chunk of ``n`` images. Output bytes do not depend on
    ``workers`` or ``chunk``.
    """
    opts.check()
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise PartialFaceError(f"{root}: exists and is not a folder; choose another OUT")
    jobs = _jobs(opts)
    tasks = [(str(root), opts.seed, opts.size, jobs[i:i + chunk]) for i in range(0, len(jobs), chunk)]
    points: dict[str, dict[str, np.ndarray]] = {TRAIN: {}, TEST: {}}

    def collect(result: list[tuple[str, str, np.ndarray]]) -> None:
        for split, rel, p in result:
            points[split][rel] = p
        if progress is not None:
            progress(len(result))

    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(_work, tasks):
                collect(res)
    else:
        for t in tasks:
            collect(_work(t))
    for split in (TRAIN, TEST):
        if points[split]:
            atomic_write_bytes(root / split / LANDMARKS_FILE, landmarks_text(points[split]).encode())
    if opts.test_identities:
        names = [identity_name(TEST, i) for i in range(opts.test_identities)]
        pairs = make_pairs(names, opts.test_per_identity, opts.pairs_per_fold, opts.seed)
        atomic_write_bytes(root / TEST / PAIRS_FILE, pairs_text(pairs, opts.pairs_per_fold).encode())
    return {split: len(p) for split, p in points.items()}
