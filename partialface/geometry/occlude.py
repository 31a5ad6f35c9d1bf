"""Occluders on aligned faces (issue #16): ``occlude(aligned, kind, *, coverage=None, seed=0) -> (image, mask)``.

Real occlusion keeps most of the face and hides one region behind something with its own texture and edges.
Every occluder here is drawn procedurally (numpy), anchored on where the benchmark's alignment puts the 5
landmarks (:func:`partialface.geometry.template.aligned_points`; or on given ``landmarks``), and is the same
pixels for the same seed:

===========  ============================================================================================
kind         what it draws (its size parameter p sets the coverage)
===========  ============================================================================================
mask         a surgical (pleated) or cloth mask, from the nose bridge to the chin, ear to ear (p: how far
             above the nose tip its top edge sits)
sunglasses   two dark lenses on the eyes, a bridge and the temples (p: the lens radius)
hand         a palm and four fingers, a skin tone, over the mouth or one eye (p: the hand's size)
object       a phone, a cup or a book held over the lower face or a cheek (p: the object's size)
scarf        a knitted band over the lower face and neck, the full width, a wavy top edge (p: its height)
cap          a cap brim or a fringe of hair over the forehead and, at larger sizes, the eyes (p: how low)
face         another person's face (``other``: an aligned face of another identity) in front of this one,
             from the left or the right, as in a crowd (p: the overlap)
image        a user's RGBA image (``occluder``), its opaque pixels; with ``anchors`` (the 6 MaskTheFace
             points a..f of a mask template) warped onto the face's lower half, else fitted to that box
===========  ============================================================================================

:func:`occlude_photo` puts the same occluders on a raw photo (drawn on the aligned face, mapped back through
the inverse alignment), so that detection and alignment are tested on occluded input too.

``coverage``: the fraction of the face area (:func:`face_area`, an ellipse from forehead to chin, cheek to
cheek) to hide; the size parameter is found by bisection to within 0.01 where the kind can reach it
(PartialFaceError naming the reachable range otherwise). None: the kind's default size, jittered by the seed.
``mask`` (160, 160) bool is True where the occluder hides the face (its opaque pixels anywhere in the image).
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from partialface.errors import PartialFaceError
from partialface.geometry.template import IMAGE_SIZE, aligned_points

KINDS: tuple[str, ...] = ("mask", "sunglasses", "hand", "object", "scarf", "cap", "face", "image")
#: the face area of the aligned face, an ellipse (centre x, centre y, semi-axis x, semi-axis y) in pixels:
#: cheek to cheek one eye distance either side, forehead (0.85 of the eye-mouth height above the eyes) to chin
#: (0.55 of it below the mouth)
_S = IMAGE_SIZE
_YY, _XX = np.mgrid[0:_S, 0:_S].astype(np.float64)


def _points(landmarks: np.ndarray | None) -> np.ndarray:
    pts = aligned_points() if landmarks is None else np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise PartialFaceError(f"landmarks: give 5 (x, y) points of the aligned face, got shape {pts.shape}")
    return pts


def face_ellipse(landmarks: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """(centre x, centre y, semi-axis x, semi-axis y) of the face area, from the 5 landmarks (5, 2)."""
    p = _points(landmarks)
    eye, mouth = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    d, h = float(np.linalg.norm(p[1] - p[0])), float(mouth[1] - eye[1])
    top, bottom = eye[1] - 0.85 * h, mouth[1] + 0.55 * h
    return float(eye[0]), (top + bottom) / 2, d, (bottom - top) / 2


def face_area(landmarks: np.ndarray | None = None) -> np.ndarray:
    """(160, 160) bool: the face area that coverage is measured on."""
    cx, cy, a, b = face_ellipse(landmarks)
    return ((_XX - cx) / a) ** 2 + ((_YY - cy) / b) ** 2 <= 1.0


# ---------------------------------------------------------------------------------------------- drawing
def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u = (_XX - cx) * c + (_YY - cy) * s
    v = -(_XX - cx) * s + (_YY - cy) * c
    return (u / max(rx, 1e-6)) ** 2 + (v / max(ry, 1e-6)) ** 2 <= 1.0


def _capsule(x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((_XX - x0) * dx + (_YY - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return (_XX - x0 - t * dx) ** 2 + (_YY - y0 - t * dy) ** 2 <= r * r


def _box(cx: float, cy: float, w: float, h: float, angle: float = 0.0, radius: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u = np.abs((_XX - cx) * c + (_YY - cy) * s) - (w / 2 - radius)
    v = np.abs(-(_XX - cx) * s + (_YY - cy) * c) - (h / 2 - radius)
    outside = np.hypot(np.maximum(u, 0), np.maximum(v, 0))
    return (outside + np.minimum(np.maximum(u, v), 0)) <= radius


def _noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """(160, 160) smooth noise in about [-1, 1]."""
    n = cv2.GaussianBlur(rng.normal(size=(_S, _S)).astype(np.float32), (0, 0), sigma)
    return n / max(float(np.abs(n).max()), 1e-6)


@dataclass
class _Look:
    """What a seed draws once, before the size is searched: colours, textures, jitter, choices."""

    rng: np.random.Generator
    pts: np.ndarray
    ellipse: tuple[float, float, float, float]
    colour: np.ndarray
    noise: np.ndarray
    choice: int
    jitter: np.ndarray  # (4,) uniform in [-1, 1]
    shift: tuple[float, float] = (0.0, 0.0)  # kind "face": where the face in front was moved to


SKIN = np.array([(255, 224, 196), (241, 194, 160), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 56, 32)],
                dtype=np.float64)


def _shade(colour: np.ndarray, noise: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(colour[None, None, :] * (1 + amount * noise[:, :, None]), 0, 255)


def _mask(p: float, k: _Look) -> tuple[np.ndarray, np.ndarray]:
    cx, cy, a, b = k.ellipse
    nose = k.pts[2]
    top = nose[1] - p
    edge = top + 8 * ((_XX - cx) / a) ** 2  # the top edge dips towards the ears
    shape = _ellipse(cx, cy + 4, 1.12 * a, 1.04 * b) & (_YY >= edge)
    if k.choice % 2 == 0:  # surgical: pleats
        pleats = 0.12 * np.sin((_YY - top) * 2 * np.pi / 11)[:, :, None]
        rgb = np.clip(k.colour[None, None, :] * (1 - pleats) + 4 * k.noise[:, :, None], 0, 255)
    else:  # cloth
        rgb = _shade(k.colour, k.noise, 0.18)
    return rgb, shape


def _sunglasses(p: float, k: _Look) -> tuple[np.ndarray, np.ndarray]:
    le, re = k.pts[0], k.pts[1]
    cx, _, a, _ = k.ellipse
    y = (le[1] + re[1]) / 2 + 1.5 * k.jitter[0]
    lenses = _ellipse(le[0], y, p, 0.78 * p) | _ellipse(re[0], y, p, 0.78 * p)
    bridge = _capsule(le[0] + 0.8 * p, y - 0.3 * p, re[0] - 0.8 * p, y - 0.3 * p, 1.6)
    temples = _capsule(le[0] - 0.9 * p, y - 0.3 * p, cx - 1.05 * a, y - 0.2 * p, 1.6) | _capsule(
        re[0] + 0.9 * p, y - 0.3 * p, cx + 1.05 * a, y - 0.2 * p, 1.6)
    shade = 0.35 * (_YY - (y - p)) / max(2 * p, 1)  # darker at the top of the lens
    rgb = np.clip(k.colour[None, None, :] * (1.2 - shade[:, :, None]) + 6 * k.noise[:, :, None], 0, 255)
    return rgb, lenses | bridge | temples


def _hand(p: float, k: _Look) -> tuple[np.ndarray, np.ndarray]:
    target = (k.pts[3] + k.pts[4]) / 2 if k.choice % 3 == 0 else k.pts[k.choice % 3 - 1]
    angle = 0.4 * k.jitter[0]
    cx, cy = target[0] + 0.1 * p * k.jitter[1], target[1] + 0.25 * p
    shape = _ellipse(cx, cy, 0.55 * p, 0.45 * p, angle)
    c, s = np.cos(angle), np.sin(angle)
    for i, off in enumerate((-0.39, -0.13, 0.13, 0.39)):
        fx, fy = cx + off * p * c, cy + off * p * s  # along the palm's top edge
        fan = angle + 0.12 * (i - 1.5)
        length = p * (0.75 + 0.15 * (i in (1, 2)))
        tx, ty = fx + length * np.sin(fan), fy - 0.3 * p - length * np.cos(fan)
        shape |= _capsule(fx, fy - 0.3 * p, tx, ty, 0.1 * p)
    return _shade(k.colour, k.noise, 0.12), shape


def _object(p: float, k: _Look) -> tuple[np.ndarray, np.ndarray]:
    mouth = (k.pts[3] + k.pts[4]) / 2
    cx, cy = mouth[0] + 0.25 * p * k.jitter[0], mouth[1] + 0.1 * p * k.jitter[1]
    angle = 0.35 * k.jitter[2]
    which = k.choice % 3
    if which == 0:  # phone: dark body, lighter screen
        body = _box(cx, cy, 0.55 * p, p, angle, radius=0.08 * p)
        screen = _box(cx, cy, 0.45 * p, 0.85 * p, angle, radius=0.04 * p)
        rgb = np.where(screen[:, :, None], _shade(np.array([70.0, 90, 120]), k.noise, 0.3),
                       _shade(np.array([30.0, 30, 34]), k.noise, 0.1))
        return rgb, body
    if which == 1:  # cup: body, rim, handle
        body = _box(cx, cy, 0.7 * p, 0.85 * p, angle, radius=0.05 * p)
        rim = _ellipse(cx, cy - 0.42 * p, 0.35 * p, 0.08 * p, angle)
        handle = _ellipse(cx + 0.42 * p, cy, 0.16 * p, 0.22 * p, angle) & ~_ellipse(cx + 0.42 * p, cy, 0.08 * p,
                                                                                   0.12 * p, angle)
        return _shade(k.colour, k.noise, 0.15), body | rim | handle
    cover = _box(cx, cy, 1.2 * p, 0.9 * p, angle)  # book: cover and spine
    spine = _box(cx - 0.5 * p, cy, 0.15 * p, 0.9 * p, angle)
    rgb = np.where(spine[:, :, None], _shade(k.colour * 0.6, k.noise, 0.1), _shade(k.colour, k.noise, 0.2))
    return rgb, cover


def _scarf(p: float, k: _Look) -> tuple[np.ndarray, np.ndarray]:
    mouth = (k.pts[3] + k.pts[4]) / 2
    top = mouth[1] - p + 3 * np.sin(_XX / 9 + 3 * k.jitter[0])
    stripes = 0.15 * np.sign(np.sin((_YY - top) * 2 * np.pi / 14))[:, :, None]
    knit = 0.08 * np.sin(_XX * 2 * np.pi / 5)[:, :, None]
    rgb = np.clip(k.colour[None, None, :] * (1 + stripes + knit) + 5 * k.noise[:, :, None], 0, 255)
    return rgb, _YY >= top


def _cap(p: float, k: _Look) -> tuple[np.ndarray, np.ndarray]:
    cx, _, a, _ = k.ellipse
    eye_y = (k.pts[0][1] + k.pts[1][1]) / 2
    bottom = eye_y - 20 + p - 6 * ((_XX - cx) / a) ** 2
    if k.choice % 2 == 0:  # cap: a brim shadow along its lower edge
        shadow = 0.35 * ((_YY > bottom - 6) & (_YY <= bottom))[:, :, None]
        rgb = np.clip(k.colour[None, None, :] * (1 - shadow) + 5 * k.noise[:, :, None], 0, 255)
        return rgb, _YY <= bottom
    fringe = bottom + 5 * np.abs(np.sin(_XX * 2 * np.pi / 13 + 2 * k.jitter[1]))  # hair: an uneven fringe
    strands = 0.25 * np.sin(_XX * 2 * np.pi / 3.5 + 4 * k.noise)[:, :, None]
    rgb = np.clip(np.array([40.0, 28, 20])[None, None, :] * (1 + strands), 0, 255)
    return rgb, _YY <= fringe


def _face(p: float, k: _Look, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cx, cy, a, b = k.ellipse
    side = 1 if k.choice % 2 else -1
    dx = side * (2 * a - p)
    dy = 6 * k.jitter[0]
    k.shift = (float(dx), float(dy))
    head = _ellipse(cx + dx, cy + dy, 1.05 * a, 1.1 * b)
    m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    moved = cv2.warpAffine(other, m, (_S, _S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return moved.astype(np.float64), head


def _image(p: float, k: _Look, rgba: np.ndarray, anchors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    cx, cy, a, b = k.ellipse
    nose, eye_y = k.pts[2], (k.pts[0][1] + k.pts[1][1]) / 2
    lip = (k.pts[3][1] + k.pts[4][1]) / 2 + 4
    chin = cy + b
    scale = p  # 1 = the template's own size on the face

    def contour(y: float) -> float:
        return a * float(np.sqrt(max(0.0, 1 - ((y - cy) / b) ** 2)))

    if anchors is not None:  # MaskTheFace's a..f: contour at the nose tip, bridge, contour at the lip, chin
        bridge = (eye_y + nose[1]) / 2
        dst = np.array([(cx - contour(nose[1]), nose[1]), (cx, bridge), (cx + contour(nose[1]), nose[1]),
                        (cx - contour(lip), lip), (cx, chin), (cx + contour(lip), lip)])
    else:
        ys, xs = np.nonzero(rgba[:, :, 3] > 127)
        anchors = np.array([(xs.min(), ys.min()), (xs.max(), ys.min()), (xs.min(), ys.max()), (xs.max(), ys.max())],
                           dtype=np.float64)
        top = (eye_y + nose[1]) / 2
        dst = np.array([(cx - a, top), (cx + a, top), (cx - a, chin), (cx + a, chin)])
    centre = dst.mean(0)
    dst = centre + scale * (dst - centre)
    h, _ = cv2.findHomography(np.asarray(anchors, np.float32), dst.astype(np.float32))
    if h is None:
        raise PartialFaceError("occluder: its anchors do not define a warp (are they collinear?)")
    warped = cv2.warpPerspective(rgba, h, (_S, _S), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    return warped[:, :, :3].astype(np.float64), warped[:, :, 3] > 127


# kind -> (draw, size range (lo, hi), default size)
_KINDS: dict[str, tuple[Callable[..., tuple[np.ndarray, np.ndarray]], tuple[float, float], float]] = {
    "mask": (_mask, (-25.0, 45.0), 14.0),
    "sunglasses": (_sunglasses, (6.0, 34.0), 16.0),
    "hand": (_hand, (12.0, 110.0), 42.0),
    "object": (_object, (12.0, 130.0), 48.0),
    "scarf": (_scarf, (-40.0, 90.0), 8.0),
    "cap": (_cap, (-30.0, 95.0), 2.0),
    "face": (_face, (0.0, 110.0), 40.0),
    "image": (_image, (0.3, 1.8), 1.0),
}
#: base colours each kind draws from
_PALETTES = {
    "mask": [(150, 195, 230), (236, 236, 236), (58, 58, 64), (125, 185, 165), (200, 90, 90), (90, 110, 160)],
    "sunglasses": [(25, 25, 28), (45, 35, 30), (20, 35, 45), (50, 50, 55)],
    "object": [(200, 60, 50), (230, 230, 225), (60, 110, 170), (240, 200, 60), (90, 150, 90)],
    "scarf": [(150, 40, 50), (60, 80, 140), (200, 170, 120), (70, 110, 80), (120, 120, 125)],
    "cap": [(30, 40, 90), (160, 30, 35), (30, 30, 30), (200, 200, 195), (80, 100, 60)],
}


def coverage_of(mask: np.ndarray, landmarks: np.ndarray | None = None) -> float:
    """The fraction of the face area (:func:`face_area`) that ``mask`` (160, 160) bool hides."""
    area = face_area(landmarks)
    return float((mask & area).sum() / area.sum())


def occlude(
    aligned: np.ndarray, kind: str, *, coverage: float | None = None, seed: int = 0,
    landmarks: np.ndarray | None = None, other: np.ndarray | None = None, occluder: Any = None,
    anchors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``aligned`` (160, 160, 3) uint8 with a ``kind`` occluder (module docstring) -> (image (160, 160, 3) uint8,
    mask (160, 160) bool, True where the occluder hides the face). ``other``: the aligned face in front for
    kind "face"; ``occluder``: an RGBA image (H, W, 4) uint8 or the path of an RGBA PNG for kind "image", with
    optional ``anchors`` (6, 2) (MaskTheFace's a..f, :func:`masktheface_templates`)."""
    if aligned.shape != (_S, _S, 3) or aligned.dtype != np.uint8:
        raise PartialFaceError(f"occlude: give an aligned (160, 160, 3) uint8 face, got {aligned.shape} "
                               f"{aligned.dtype}")
    rgb, shape, _ = _draw(kind, coverage, seed, landmarks, other, occluder, anchors)
    out = aligned.copy()
    out[shape] = np.clip(rgb[shape] + 0.5, 0, 255).astype(np.uint8)
    return out, shape


def _draw(
    kind: str, coverage: float | None, seed: int, landmarks: np.ndarray | None, other: np.ndarray | None,
    occluder: Any, anchors: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, _Look]:
    """The occluder's colours (160, 160, 3) float, its shape (160, 160) bool and the look it was drawn with."""
    if kind not in _KINDS:
        raise PartialFaceError(f"occluder {kind!r}: choose one of {', '.join(KINDS)}")
    if coverage is not None and not 0 < coverage < 1:
        raise PartialFaceError(f"--coverage {coverage:g}: must be in (0, 1), the fraction of the face area hidden")
    draw, (lo, hi), default = _KINDS[kind]
    extra: tuple[Any, ...] = ()
    if kind == "face":
        if other is None or np.asarray(other).shape != (_S, _S, 3):
            raise PartialFaceError("occluder face: give other=, the aligned (160, 160, 3) face of another person")
        extra = (np.asarray(other, dtype=np.uint8),)
    elif kind == "image":
        extra = (read_occluder(occluder), None if anchors is None else np.asarray(anchors, dtype=np.float64))
    rng = np.random.default_rng([seed & 0xFFFFFFFF, KINDS.index(kind)])
    pts = _points(landmarks)
    palette = _PALETTES.get(kind)
    colour = np.array(palette[int(rng.integers(len(palette)))] if palette else SKIN[int(rng.integers(len(SKIN)))],
                      dtype=np.float64)
    look = _Look(rng, pts, face_ellipse(pts), colour, _noise(rng, 2.5), int(rng.integers(1 << 16)),
                 rng.uniform(-1, 1, 4))

    def cover(p: float) -> tuple[float, np.ndarray, np.ndarray]:
        rgb, shape = draw(p, look, *extra)
        return coverage_of(shape, pts), rgb, shape

    if coverage is None:
        span = 0.08 * (hi - lo)
        _, rgb, shape = cover(float(np.clip(default + span * look.jitter[3], lo, hi)))
    else:
        c_lo, c_hi = cover(lo)[0], cover(hi)[0]
        if not c_lo - 0.05 <= coverage <= c_hi + 0.05:
            raise PartialFaceError(f"--coverage {coverage:g}: occluder {kind} hides {c_lo:.2f} to {c_hi:.2f} of the "
                                   "face area; ask within that range")
        a, b = lo, hi
        for _ in range(40):
            mid = (a + b) / 2
            c, rgb, shape = cover(mid)
            if abs(c - coverage) <= 0.005:
                break
            a, b = (mid, b) if c < coverage else (a, mid)
    return rgb, shape, look


def read_occluder(occluder: Any) -> np.ndarray:
    """An RGBA occluder (H, W, 4) uint8 from an array or the path of an RGBA PNG; PartialFaceError otherwise."""
    if isinstance(occluder, (str, os.PathLike)):
        path = Path(occluder)
        if not path.is_file():
            raise PartialFaceError(f"{path}: no such occluder image")
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise PartialFaceError(f"{path}: not a readable image")
        if img.ndim != 3 or img.shape[2] != 4:
            raise PartialFaceError(f"{path}: an occluder must be an RGBA PNG (with transparency), this one has "
                                   f"{1 if img.ndim == 2 else img.shape[2]} channels")
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    arr = np.asarray(occluder) if occluder is not None else None
    if arr is None or arr.ndim != 3 or arr.shape[2] != 4 or arr.dtype != np.uint8:
        raise PartialFaceError("occluder image: give an RGBA (H, W, 4) uint8 array or the path of an RGBA PNG")
    if not (arr[:, :, 3] > 127).any():
        raise PartialFaceError("occluder image: it is fully transparent")
    return arr


def masktheface_templates(root: str | os.PathLike[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """MaskTheFace's mask templates under ``root`` (the folder holding ``masks/masks.cfg``): (name, RGBA image,
    anchors (6, 2) a..f) for each frontal template (the turned ``_left`` / ``_right`` views are skipped)."""
    cfg_path = Path(root) / "masks" / "masks.cfg"
    if not cfg_path.is_file():
        raise PartialFaceError(f"{cfg_path}: no such file (give the masktheface folder)")
    cfg = configparser.ConfigParser()
    cfg.read(cfg_path, encoding="utf-8")
    out = []
    for name in cfg.sections():
        if name.endswith(("_left", "_right")) or "template" not in cfg[name]:  # turned views; empty / inpaint
            continue
        sec = cfg[name]
        anchors = np.array([[float(v) for v in sec[f"mask_{c}"].split(",")] for c in "abcdef"])
        out.append((name, read_occluder(Path(root) / sec["template"]), anchors))
    return out


def occlude_photo(
    photo: np.ndarray, landmarks: np.ndarray, kind: str, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """A raw photo (H, W, 3) uint8 whose face has the 5 ``landmarks`` (5, 2) (photo pixels, e.g. MTCNN's), with a
    ``kind`` occluder drawn on the aligned face (:func:`occlude`, same keyword arguments) and mapped back through
    the inverse of the benchmark's alignment -> (photo, mask (H, W) bool). Detection, alignment and embedding
    can then run on the occluded photo."""
    from partialface.geometry.align import align_face, alignment_matrix

    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise PartialFaceError(f"occlude_photo: give an (H, W, 3) uint8 photo, got {photo.shape} {photo.dtype}")
    pts = np.asarray(landmarks, dtype=np.float64)
    aligned = align_face(photo, pts)
    m = alignment_matrix(pts)
    kw = dict(kwargs)
    if kw.get("landmarks") is None:
        kw["landmarks"] = (m[:, :2] @ pts.T + m[:, 2:]).T  # this face's own landmarks in the aligned frame
    layer, mask = occlude(aligned, kind, **kw)
    inv = cv2.invertAffineTransform(m)
    h, w = photo.shape[:2]
    back = cv2.warpAffine(layer, inv, (w, h), flags=cv2.INTER_LINEAR)
    hidden = cv2.warpAffine(mask.astype(np.uint8) * 255, inv, (w, h), flags=cv2.INTER_LINEAR) > 127
    out = photo.copy()
    out[hidden] = back[hidden]
    return out, hidden


class OccluderBank:
    """``looks`` occluders of one ``kind`` and ``coverage``, drawn once on the template's landmarks (look j is
    :func:`occlude` with seed ``seed * 1000003 + j``), laid on batches of faces: the occlusion protocols and
    batched augmentation use it instead of drawing per face.

    ``layer`` (L, 160, 160, 3) uint8 and ``mask`` (L, 160, 160) bool; for kind "face" ``shift`` (L, 2) holds the
    translation (dx, dy) of the face in front, whose pixels come from ``others`` in :meth:`apply`."""

    def __init__(self, kind: str, coverage: float | None, looks: int = 61, seed: int = 0) -> None:
        if kind not in KINDS or kind == "image":
            drawn = ", ".join(k for k in KINDS if k != "image")
            raise PartialFaceError(f"occluder {kind!r}: a bank draws one of {drawn}")
        if looks < 1:
            raise PartialFaceError(f"looks: must be >= 1, got {looks}")
        self.kind, self.coverage = kind, coverage
        blank = np.zeros((_S, _S, 3), np.uint8)
        layers, masks, shifts = [], [], []
        for j in range(looks):
            rgb, m, look = _draw(kind, coverage, seed * 1000003 + j, None, blank if kind == "face" else None, None,
                                 None)
            layers.append(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
            masks.append(m)
            shifts.append(look.shift)
        self.layer, self.mask = np.stack(layers), np.stack(masks)
        self.shift = np.array(shifts, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.mask)

    def apply(self, faces: np.ndarray, looks: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
        """faces (B, 160, 160, 3) uint8 with look ``looks[b] % len(self)`` laid on face b -> a new (B, 160, 160, 3)
        uint8 array; kind "face" takes the pixels in front from ``others`` (B, 160, 160, 3), shifted."""
        out = np.array(faces, dtype=np.uint8, copy=True)
        idx = np.asarray(looks, dtype=np.int64) % len(self)
        if self.kind == "face":
            if others is None or np.shape(others) != np.shape(faces):
                raise PartialFaceError("occluder face: apply needs others, the faces in front (one per face)")
            for b, j in enumerate(idx):
                dx, dy = self.shift[j]
                m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
                moved = cv2.warpAffine(np.asarray(others[b]), m, (_S, _S), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)
                out[b][self.mask[j]] = moved[self.mask[j]]
            return out
        m = self.mask[idx]
        out[m] = self.layer[idx][m]
        return out
