"""Realistic occluders on raw photos (issue #39): a real mask, textured sunglasses, a hand, a photo crop.

:func:`occlude_photo_realistic` ``(photo, landmarks, kind, seed=..., masks=...) -> Occlusion`` puts one occluder
on the face whose 5 ``landmarks`` (5, 2) (photo pixels, e.g. MTCNN's on the clean photo) are given, *before*
detection and alignment: the whole pipeline then runs on the occluded photo, as a user's would. Unlike
:mod:`partialface.geometry.occlude` (drawn on the 160x160 aligned face, for the #16 suite and banks) every
occluder here is drawn at the photo's own resolution (on a canvas in the aligned frame, ``r`` canvas pixels per
aligned pixel, anti-aliased) and laid on with:

- **geometry from the landmarks**, including the head's yaw (the nose's offset from the eyes' midpoint, a
  cylinder model of the head: :func:`face_frame`);
- **lighting matched to the face**: the occluder's colours are scaled by the face's own illumination field (its
  blurred luminance over the canvas, relative to the face's median), its overall level and the photo's colour
  cast; hands and sunglasses cast a soft shadow on the face;
- **the photo's look**: a slight blur of the edges, the photo's own noise level and a JPEG round trip.

==========  ==============================================================================================
kind        what it is
==========  ==============================================================================================
mask        a real face-mask image (MaskTheFace's RGBA templates, ``masks=`` :func:`load_mask_templates`),
            warped by a homography from its 6 anchor points a..f (face contour at the nose tip and at the
            lower lip, nose bridge, chin) to where the landmarks put them (:func:`mask_anchors`): MaskTheFace's
            homography, plus a thin-plate spline that puts each anchor exactly; the left / right-turned
            view where the head is turned
sunglasses  round, wayfarer or aviator lenses (tinted, gradient or mirrored, the scene reflected, a
            specular streak), a frame, a bridge and temples that end at the face contour
hand        a hand (palm, four fingers, thumb, wrist) in the face's own skin tone, over the mouth, one eye,
            the chin and cheek, or the nose and mouth; rounded shading, finger seams and knuckle creases
crop        the photo cut by a straight frame edge (bottom, left, right or top) through the face, 20-45 % of
            the face area outside: the output photo is smaller (``Occlusion.offset``)
==========  ==============================================================================================

The same ``seed`` gives the same pixels. ``Occlusion.hidden_aligned`` (160, 160) bool is the ground truth in the
clean face's aligned frame (what a visibility estimate is scored against); ``hidden`` is the same in the output
photo's pixels. :func:`occlude_aligned_realistic` draws the same occluders on an aligned face (training).
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from partialface.errors import PartialFaceError
from partialface.geometry.template import GREY, IMAGE_SIZE, aligned_points

REALISTIC_KINDS: tuple[str, ...] = ("mask", "sunglasses", "hand", "crop")
#: the canvas covers aligned coordinates [-_O, IMAGE_SIZE + _O) in both directions
_O = 80.0
#: most canvas pixels per aligned pixel (a large face is drawn at most this fine)
_MAX_R = 4.0
#: the mask designs drawn from (MaskTheFace's template names without the view suffix)
MASK_DESIGNS: tuple[str, ...] = ("surgical", "surgical_blue", "surgical_green", "N95", "KN95", "cloth", "gas")
#: |yaw proxy| (nose offset from the eyes' midpoint / eye distance) beyond which the turned view is used
TURNED_VIEW = 0.12
#: the thin-plate spline of a mask's warp is evaluated every _STEP canvas pixels and interpolated between
_STEP = 8


@dataclass(frozen=True)
class MaskTemplate:
    """One MaskTheFace template: ``rgba`` (H, W, 4) uint8, ``anchors`` (6, 2) a..f in its pixels."""

    name: str
    rgba: np.ndarray
    anchors: np.ndarray


@dataclass
class Occlusion:
    """An occluded photo: ``photo`` (H', W', 3) uint8; ``hidden`` (H', W') bool (the occluder's pixels; a crop hides
    nothing inside the photo); ``hidden_aligned`` (160, 160) bool in the clean face's aligned frame; ``offset``
    (x0, y0) of the output in the input photo (a crop), ``what``: kind/variant, e.g. ``mask/N95_left``."""

    photo: np.ndarray
    hidden: np.ndarray
    hidden_aligned: np.ndarray
    offset: tuple[int, int]
    what: str


def load_mask_templates(root: str | os.PathLike[str]) -> dict[str, MaskTemplate]:
    """Every MaskTheFace template under ``root`` (the folder holding ``masks/masks.cfg``), all views, by name."""
    from partialface.geometry.occlude import read_occluder

    cfg_path = Path(root) / "masks" / "masks.cfg"
    if not cfg_path.is_file():
        raise PartialFaceError(f"{cfg_path}: no such file (--masks: give the masktheface folder, the one holding "
                               "masks/masks.cfg)")
    cfg = configparser.ConfigParser()
    cfg.read(cfg_path, encoding="utf-8")
    out = {}
    for name in cfg.sections():
        sec = cfg[name]
        if "template" not in sec:  # MaskTheFace's "empty" / "inpaint" entries
            continue
        anchors = np.array([[float(v) for v in sec[f"mask_{c}"].split(",")] for c in "abcdef"])
        out[name] = MaskTemplate(name, read_occluder(Path(root) / sec["template"].strip()), anchors)
    missing = [d for d in MASK_DESIGNS if d not in out]
    if missing:
        raise PartialFaceError(f"{cfg_path}: templates {', '.join(missing)} are missing (give MaskTheFace's folder)")
    return out


# ------------------------------------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class FaceFrame:
    """The head in the aligned frame, from its 5 aligned landmarks: eye midpoint ``eye``, eye distance ``d``,
    nose ``nose``, mouth midpoint ``mouth``, yaw proxy ``delta`` (nose x offset / d), ``sin_yaw``, the head's axis
    x ``axis`` and radius ``radius`` (a cylinder), ``chin`` y."""

    pts: np.ndarray
    eye: np.ndarray
    d: float
    nose: np.ndarray
    mouth: np.ndarray
    delta: float
    sin_yaw: float
    axis: float
    radius: float
    chin: float

    def contour(self, y: float, narrow: float = 1.0) -> tuple[float, float]:
        """x of the face's left and right contour at height y (``narrow``: the face's width there, of the head's)."""
        r = self.radius * narrow
        return self.axis - r, self.axis + r


def face_frame(aligned_landmarks: np.ndarray) -> FaceFrame:
    """:class:`FaceFrame` of 5 landmarks (5, 2) in the aligned frame.

    A cylinder head of radius R: the eyes sit at +-30 deg around it and the nose tip 0.3 R in front, so a yaw
    theta moves the nose by about 0.42 R sin(theta) from the eyes' midpoint and the head's axis lies
    0.87 R sin(theta) on the other side of the eyes' midpoint; the eye distance is 2 R sin(30 deg) cos(theta)."""
    p = np.asarray(aligned_landmarks, dtype=np.float64).reshape(5, 2)
    eye, mouth = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    d = float(np.linalg.norm(p[1] - p[0]))
    delta = float((p[2, 0] - eye[0]) / max(d, 1e-6))
    # d = R cos(theta) (2 sin 30 deg = 1); nose offset = 0.42 R sin(theta)  ->  tan(theta) = delta / 0.42
    theta = float(np.clip(np.arctan(delta / 0.42), -1.1, 1.1))
    radius = d / max(np.cos(theta), 0.45)
    axis = float(eye[0] - 0.87 * radius * np.sin(theta))
    h = float(mouth[1] - eye[1])
    return FaceFrame(p, eye, d, p[2], mouth, delta, float(np.sin(theta)), axis, radius, float(mouth[1] + 0.62 * h))


def mask_anchors(aligned_landmarks: np.ndarray) -> np.ndarray:
    """(6, 2): where MaskTheFace's anchors a..f go on a face with these aligned landmarks (5, 2): a / c the face
    contour left / right at the nose tip's height, b the middle of the nose bridge, d / f the contour at the lower
    lip's height, e the bottom of the chin."""
    f = face_frame(aligned_landmarks)
    h = float(f.mouth[1] - f.eye[1])
    y_nose, y_lip = float(f.nose[1]), float(f.mouth[1] + 0.15 * h)
    a, c = f.contour(y_nose, 0.97)
    d, ff = f.contour(y_lip, 0.86)
    bridge = f.eye + 0.45 * (f.nose - f.eye)
    chin_x = float(f.mouth[0] + 0.25 * (f.nose[0] - f.eye[0]))
    return np.array([(a, y_nose), bridge, (c, y_nose), (d, y_lip), (chin_x, f.chin), (ff, y_lip)])


def _view(delta: float) -> str:
    return "_left" if delta < -TURNED_VIEW else "_right" if delta > TURNED_VIEW else ""


# ------------------------------------------------------------------------------------------------- canvas
class _Canvas:
    """Aligned coordinates at ``r`` pixels per aligned pixel over [-_O, 160 + _O)^2: pixel grids X, Y (aligned
    units), the canvas -> photo affine ``to_photo`` (2, 3), and the clean photo resampled onto it."""

    def __init__(self, photo: np.ndarray, m: np.ndarray, r: float) -> None:
        self.r = r
        self.size = round((IMAGE_SIZE + 2 * _O) * r)
        # aligned = m @ photo; canvas = r * (aligned + O)
        to_canvas = np.vstack([r * m, [0, 0, 1]]) + np.array([[0, 0, r * _O], [0, 0, r * _O], [0, 0, 0]])
        self.to_canvas = to_canvas[:2]
        self.to_photo = cv2.invertAffineTransform(self.to_canvas)
        g = (np.arange(self.size) + 0.5) / r - _O
        self.X, self.Y = np.meshgrid(g, g)
        self.photo = cv2.warpAffine(photo, self.to_canvas, (self.size, self.size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT101).astype(np.float64)
        self.aa = 1.0 / r  # one canvas pixel, in aligned units

    def alpha(self, sdf: np.ndarray) -> np.ndarray:
        """Anti-aliased coverage of a signed distance field (aligned units, negative inside)."""
        return np.clip(0.5 - sdf / self.aa, 0.0, 1.0)


def _sd_ellipse(c: _Canvas, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    co, si = np.cos(angle), np.sin(angle)
    u, v = (c.X - cx) * co + (c.Y - cy) * si, -(c.X - cx) * si + (c.Y - cy) * co
    k = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    return (k - 1.0) * min(rx, ry)  # a distance near the edge, exact for circles


def _sd_capsule(c: _Canvas, p0: np.ndarray, p1: np.ndarray, radius: float) -> np.ndarray:
    d = p1 - p0
    t = np.clip(((c.X - p0[0]) * d[0] + (c.Y - p0[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
    return np.hypot(c.X - p0[0] - t * d[0], c.Y - p0[1] - t * d[1]) - radius


def _sd_box(c: _Canvas, cx: float, cy: float, w: float, h: float, angle: float, radius: float) -> np.ndarray:
    co, si = np.cos(angle), np.sin(angle)
    u = np.abs((c.X - cx) * co + (c.Y - cy) * si) - (w / 2 - radius)
    v = np.abs(-(c.X - cx) * si + (c.Y - cy) * co) - (h / 2 - radius)
    return np.hypot(np.maximum(u, 0), np.maximum(v, 0)) + np.minimum(np.maximum(u, v), 0) - radius


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


@dataclass
class _Light:
    """The face's lighting on the canvas: ``field`` (C, C) relative illumination, ``level`` and ``cast`` (3,)."""

    field: np.ndarray
    level: float
    cast: np.ndarray

    def apply(self, rgb: np.ndarray, strength: float = 0.8) -> np.ndarray:
        return np.clip(rgb * self.level * (self.field[:, :, None] ** strength) * self.cast, 0, 255)


def _light(c: _Canvas, f: FaceFrame, photo: np.ndarray) -> _Light:
    """Illumination of the face: its luminance blurred over a quarter of the eye distance, relative to the face's
    median; the level (median / 140) ** 0.75; the photo's grey-world colour cast, square-rooted."""
    y = _luma(c.photo)
    inside = ((c.X - f.axis) / f.radius) ** 2 + ((c.Y - (f.eye[1] + f.chin) / 2) / ((f.chin - f.eye[1]) * 0.8)) ** 2
    face = inside <= 1.0
    med = float(np.median(y[face])) if face.any() else 128.0
    blurred = cv2.GaussianBlur(y.astype(np.float32), (0, 0), max(0.5, 0.25 * f.d * c.r)).astype(np.float64)
    field = np.clip(blurred / max(med, 1.0), 0.4, 1.8)
    level = float(np.clip((med / 140.0) ** 0.75, 0.3, 1.3))
    mean = photo.reshape(-1, 3).mean(0).astype(np.float64)
    cast = np.clip((mean / max(float(mean.mean()), 1.0)) ** 0.5, 0.88, 1.12)
    return _Light(field, level, cast)


# ----------------------------------------------------------------------------------------------- occluders
def _mask(c: _Canvas, f: FaceFrame, rng: np.random.Generator, masks: dict[str, MaskTemplate] | None
          ) -> tuple[np.ndarray, np.ndarray, str]:
    if not masks:
        raise PartialFaceError("occluder mask: give masks= (load_mask_templates of MaskTheFace's folder; the "
                               "benchmark's --masks)")
    design = MASK_DESIGNS[int(rng.integers(len(MASK_DESIGNS)))]
    name = design + _view(f.delta)
    t = masks.get(name) or masks[design]
    dst = (mask_anchors(f.pts) + _O) * c.r
    warped = _warp_through(t.rgba, t.anchors, dst, c.size).astype(np.float64)
    return warped[:, :, :3], warped[:, :, 3] / 255.0, name


def _warp_through(rgba: np.ndarray, src: np.ndarray, dst: np.ndarray, size: int) -> np.ndarray:
    """``rgba`` warped onto a (size, size) canvas so that its points ``src`` (N, 2) land exactly on ``dst`` (N, 2):
    MaskTheFace's least-squares homography, plus a thin-plate spline through the anchors' residuals (a homography
    cannot put 6 points exactly; the spline moves each onto its target and fades to an affine far away)."""
    h, _ = cv2.findHomography(src.astype(np.float32), dst.astype(np.float32))
    if h is None:
        raise PartialFaceError("mask template: its anchors do not define a warp")
    hinv = np.linalg.inv(h)

    def back(pts: np.ndarray) -> np.ndarray:  # canvas -> template through the homography
        q = np.c_[pts, np.ones(len(pts))] @ hinv.T
        return q[:, :2] / q[:, 2:]

    residual = src - back(dst)  # (N, 2): where the homography misses each anchor, in template pixels
    n = len(dst)

    def kernel(r2: np.ndarray) -> np.ndarray:
        return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-12)), 0.0) / 2

    scale = float(np.ptp(dst, axis=0).max()) or 1.0
    u = dst / scale
    k = kernel(((u[:, None] - u[None]) ** 2).sum(-1))
    p = np.c_[np.ones(n), u]
    system = np.block([[k, p], [p.T, np.zeros((3, 3))]])
    coef = np.linalg.lstsq(system, np.r_[residual, np.zeros((3, 2))], rcond=None)[0]
    coarse = np.arange(0, size + _STEP, _STEP, dtype=np.float64)  # the spline is smooth: every 8th pixel
    cx, cy = np.meshgrid(coarse, coarse)
    ug = np.c_[cx.ravel(), cy.ravel()] / scale
    spline = kernel(((ug[:, None] - u[None]) ** 2).sum(-1)) @ coef[:n] + np.c_[np.ones(len(ug)), ug] @ coef[n:]
    m = len(coarse)
    fine = cv2.resize(spline.reshape(m, m, 2).astype(np.float32), ((m - 1) * _STEP + 1,) * 2,
                      interpolation=cv2.INTER_LINEAR)[:size, :size]
    g = np.arange(size, dtype=np.float64)
    xx, yy = np.meshgrid(g, g)
    maps = back(np.c_[xx.ravel(), yy.ravel()]).reshape(size, size, 2).astype(np.float32) + fine
    return cv2.remap(rgba, maps[:, :, 0], maps[:, :, 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(0, 0, 0, 0))


_TINTS = {"grey": (22, 22, 24), "brown": (48, 32, 20), "green": (24, 40, 30), "mirror": (45, 70, 120)}
_FRAMES = {"black": (18, 18, 20), "tortoise": (70, 42, 22), "metal": (150, 140, 120), "white": (215, 215, 210)}


def _sunglasses(c: _Canvas, f: FaceFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str, float]:
    style = ("round", "wayfarer", "aviator")[int(rng.integers(3))]
    tint = list(_TINTS)[int(rng.integers(len(_TINTS)))]
    frame = list(_FRAMES)[int(rng.integers(len(_FRAMES)))]
    le, re = f.pts[0], f.pts[1]
    d, size = f.d, float(rng.uniform(0.92, 1.1))
    y = float((le[1] + re[1]) / 2 - 0.02 * d)
    lens_sd = []
    for i, e in enumerate((le, re)):
        cx = float(e[0] + (0.04 * d if i else -0.04 * d))
        fore = 1.0 - 0.35 * abs(f.sin_yaw) * (1 if (f.sin_yaw < 0) == (i == 0) else 0)  # the far lens, turned away
        if style == "round":
            sd = _sd_ellipse(c, cx, y, 0.40 * d * size * fore, 0.37 * d * size)
        elif style == "wayfarer":
            sd = _sd_box(c, cx, y, 0.88 * d * size * fore, 0.58 * d * size, 0.0, 0.16 * d)
            sd = np.maximum(sd, (c.Y - y) - 0.29 * d * size + 0.15 * np.abs(c.X - cx) / max(d, 1))
        else:
            sd = np.maximum(_sd_ellipse(c, cx, y + 0.04 * d, 0.45 * d * size * fore, 0.42 * d * size),
                            (y - 0.26 * d * size) - c.Y)
        lens_sd.append(sd)
    lens = np.minimum(*lens_sd)
    rim = 0.05 * d if frame != "metal" else 0.025 * d
    bridge = _sd_capsule(c, np.array([le[0] + 0.3 * d, y - 0.15 * d]), np.array([re[0] - 0.3 * d, y - 0.15 * d]),
                         0.035 * d)
    left, right = f.contour(y, 1.0)
    temples = np.minimum(_sd_capsule(c, np.array([le[0] - 0.38 * d, y - 0.12 * d]), np.array([left, y - 0.05 * d]),
                                     0.03 * d),
                         _sd_capsule(c, np.array([re[0] + 0.38 * d, y - 0.12 * d]), np.array([right, y - 0.05 * d]),
                                     0.03 * d))
    frame_sd = np.minimum(np.minimum(np.abs(lens) - rim, bridge), temples)
    a_lens, a_frame = c.alpha(lens), c.alpha(frame_sd)
    # lens: a tint, darker at the top (gradient lenses much lighter at the bottom), the scene reflected, a streak
    top, bottom = y - 0.4 * d, y + 0.4 * d
    t = np.clip((c.Y - top) / (bottom - top), 0, 1)
    gradient = float(rng.uniform(0.0, 0.3)) if tint != "mirror" else 0.0
    lens_alpha = float(rng.uniform(0.9, 0.97)) - gradient * t
    base = np.array(_TINTS[tint], dtype=np.float64)
    scene = cv2.GaussianBlur(c.photo[:, ::-1].astype(np.float32), (0, 0), max(0.5, 0.12 * d * c.r))
    reflect = 0.45 if tint == "mirror" else 0.18
    rgb = base[None, None, :] * (1.25 - 0.5 * t[:, :, None]) + reflect * scene
    streak = c.alpha(_sd_ellipse(c, float(le[0] - 0.12 * d), y - 0.16 * d, 0.22 * d, 0.04 * d, -0.5))
    streak = np.maximum(streak, c.alpha(_sd_ellipse(c, float(re[0] - 0.12 * d), y - 0.16 * d, 0.22 * d, 0.04 * d,
                                                     -0.5)))
    rgb = rgb + 0.5 * streak[:, :, None] * (255 - rgb)
    fr = np.array(_FRAMES[frame], dtype=np.float64)[None, None, :] * (1.1 - 0.2 * t[:, :, None])
    alpha = np.maximum(a_frame, a_lens * lens_alpha)
    rgb = np.where((a_frame >= a_lens * lens_alpha)[:, :, None], fr, rgb)
    return rgb, alpha, f"sunglasses/{style}-{tint}", 0.3


_POSES = ("mouth", "eye", "chin", "nose")


def _hand(c: _Canvas, f: FaceFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str, float]:
    pose = _POSES[int(rng.integers(len(_POSES)))]
    side = 1.0 if rng.random() < 0.5 else -1.0  # which side the hand comes from
    d = f.d * float(rng.uniform(0.92, 1.15))
    jit = rng.uniform(-1, 1, 4)
    if pose == "mouth":  # across the mouth, fingers pointing to the far side
        centre = f.mouth + np.array([side * 0.45 * d, 0.15 * d]) + 0.08 * d * jit[:2]
        angle = side * np.pi / 2 + 0.2 * jit[2]
    elif pose == "eye":  # over one eye, fingers up and in
        e = f.pts[0] if side < 0 else f.pts[1]
        centre = e + np.array([side * 0.1 * d, 0.35 * d]) + 0.08 * d * jit[:2]
        angle = -side * 0.35 + 0.2 * jit[2]
    elif pose == "chin":  # from below, fingers up over the cheek and the mouth's corner
        corner = f.pts[3] if side < 0 else f.pts[4]
        centre = corner + np.array([side * 0.2 * d, 0.9 * d]) + 0.08 * d * jit[:2]
        angle = -side * 0.2 + 0.15 * jit[2]
    else:  # palm on the mouth, fingers up along the nose
        centre = f.mouth + np.array([0.05 * d * jit[0], 0.55 * d])
        angle = 0.15 * jit[2]
    co, si = np.cos(angle), np.sin(angle)
    up, right = np.array([si, -co]), np.array([co, si])  # the fingers' direction and across the palm

    def at(u: float, v: float) -> np.ndarray:  # hand coordinates (across, along the fingers) in eye distances
        return centre + d * (u * right + v * up)

    palm = at(0, 0)
    parts = [_sd_box(c, float(palm[0]), float(palm[1]), 1.25 * d, 1.3 * d, angle, 0.32 * d),
             _sd_capsule(c, at(0, -0.5), at(0.05 * side, -3.5), 0.52 * d)]  # palm, wrist and forearm
    fingers = ((-0.45, 0.95, 0.125), (-0.15, 1.12, 0.14), (0.15, 1.05, 0.135), (0.43, 0.85, 0.115))
    for k, (u, length, rad) in enumerate(fingers):
        spread = 0.06 * (k - 1.5) + 0.03 * jit[3]
        base = at(u, 0.5)
        tip = base + d * length * (np.cos(spread) * up + np.sin(spread) * right)
        parts.append(_sd_capsule(c, base, tip, rad * d))
    thumb_base = at(-0.55 * side, 0.05)
    thumb_tip = thumb_base + 0.85 * d * (0.55 * up - 0.83 * side * right)
    parts.append(_sd_capsule(c, thumb_base, thumb_tip, 0.16 * d))
    sd = np.min(np.stack(parts), axis=0)
    # rounded shading: each part darker towards its own edge (seams between fingers), creases across fingers
    depth = np.max(np.stack([np.clip(-p / (0.14 * d), 0, 1) for p in parts]), axis=0)
    shade = 0.72 + 0.28 * np.sqrt(depth)
    for u, length, _ in fingers:
        for q in (0.45, 0.75):
            crease = at(u, 0.5 + q * length)
            band = np.abs((c.X - crease[0]) * up[0] + (c.Y - crease[1]) * up[1])
            near = np.hypot(c.X - crease[0], c.Y - crease[1]) < 0.14 * d
            shade = np.where(near & (band < 0.02 * d), shade * 0.86, shade)
    skin = _skin(c, f) * float(rng.uniform(0.88, 1.02))
    noise = cv2.GaussianBlur(rng.normal(size=sd.shape).astype(np.float32), (0, 0), 0.6 * c.r).astype(np.float64)
    rgb = skin[None, None, :] * (shade * (1 + 0.04 * noise / max(float(np.abs(noise).max()), 1e-6)))[:, :, None]
    return rgb, c.alpha(sd), f"hand/{pose}", 0.35


def _skin(c: _Canvas, f: FaceFrame) -> np.ndarray:
    """(3,) the face's own skin colour: the median of both cheeks (under the eyes, at the nose tip's height)."""
    y = float(f.nose[1] - 0.05 * f.d)
    patch = np.zeros(c.X.shape, bool)
    for e in (f.pts[0], f.pts[1]):
        patch |= (np.abs(c.X - e[0]) < 0.12 * f.d) & (np.abs(c.Y - y) < 0.1 * f.d)
    return np.median(c.photo[patch], axis=0) if patch.any() else np.array([200.0, 160, 130])


def _shadow(c: _Canvas, alpha: np.ndarray, f: FaceFrame, strength: float) -> np.ndarray:
    """(C, C) how much the occluder darkens the face beside it: its coverage moved down-right, blurred."""
    shift = np.array([[1, 0, 0.05 * f.d * c.r], [0, 1, 0.07 * f.d * c.r]], dtype=np.float32)
    moved = cv2.warpAffine(alpha.astype(np.float32), shift, (c.size, c.size))
    return strength * cv2.GaussianBlur(moved, (0, 0), max(0.5, 0.08 * f.d * c.r)).astype(np.float64)


# ------------------------------------------------------------------------------------------------- laying on
def _seeded(seed: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, 39, REALISTIC_KINDS.index(kind)])


def _crop(photo: np.ndarray, m: np.ndarray, f: FaceFrame, rng: np.random.Generator, grey: bool
          ) -> Occlusion:
    """The photo cut through the face: a side, then the line that leaves 20-45 % of the face area outside."""
    from partialface.geometry.occlude import face_area

    side = ("bottom", "left", "right", "top")[int(rng.choice(4, p=[0.35, 0.25, 0.25, 0.15]))]
    frac = float(rng.uniform(0.2, 0.45))
    area = face_area(f.pts)
    inv = cv2.invertAffineTransform(m)
    ys, xs = np.nonzero(area)
    px = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]  # the face area's pixels in the photo
    py = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = 0, 0, w, h
    if side == "bottom":
        y1 = int(np.clip(np.ceil(np.quantile(py, 1 - frac)), 1, h))
    elif side == "top":
        y0 = int(np.clip(np.floor(np.quantile(py, frac)), 0, h - 1))
    elif side == "left":
        x0 = int(np.clip(np.floor(np.quantile(px, frac)), 0, w - 1))
    else:
        x1 = int(np.clip(np.ceil(np.quantile(px, 1 - frac)), 1, w))
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)
    qx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    qy = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    outside = (qx < x0 - 0.5) | (qx > x1 - 0.5) | (qy < y0 - 0.5) | (qy > y1 - 0.5)
    if grey:  # an aligned face: what aligning the cropped photo would give there
        out = photo.copy()
        cut = np.zeros(photo.shape[:2], bool)
        cut[:, :] = True
        cut[y0:y1, x0:x1] = False
        out[cut] = GREY
        return Occlusion(out, cut, outside, (0, 0), f"crop/{side}")
    cropped = np.ascontiguousarray(photo[y0:y1, x0:x1])
    return Occlusion(cropped, np.zeros(cropped.shape[:2], bool), outside, (x0, y0), f"crop/{side}")


def occlude_photo_realistic(
    photo: np.ndarray, landmarks: np.ndarray, kind: str, *, seed: int = 0,
    masks: dict[str, MaskTemplate] | None = None, jpeg: bool = True,
) -> Occlusion:
    """``photo`` (H, W, 3) uint8 whose face has the 5 ``landmarks`` (5, 2) (photo pixels) with a realistic ``kind``
    occluder (module docstring); ``masks``: :func:`load_mask_templates` (kind "mask"); ``jpeg``: a JPEG round trip
    of the result (quality 80-95, by the seed) as a photo file would have."""
    from partialface.geometry.align import alignment_matrix

    if kind not in REALISTIC_KINDS:
        raise PartialFaceError(f"occluder {kind!r}: choose one of {', '.join(REALISTIC_KINDS)}")
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise PartialFaceError(f"occlude_photo_realistic: give an (H, W, 3) uint8 photo, got {photo.shape}")
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    m = alignment_matrix(pts)
    aligned_pts = (m[:, :2] @ pts.T + m[:, 2:]).T
    return _occlude(photo, m, aligned_pts, kind, seed, masks, jpeg, grey=False)


def occlude_aligned_realistic(
    aligned: np.ndarray, kind: str, *, seed: int = 0, masks: dict[str, MaskTemplate] | None = None,
    landmarks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The same occluders on an aligned face (160, 160, 3) uint8 whose landmarks are ``landmarks`` (5, 2) (default:
    the template's, :func:`partialface.geometry.template.aligned_points`) -> (image (160, 160, 3) uint8, hidden
    (160, 160) bool). A crop greys out the cut part, as aligning a cropped photo does; no JPEG round trip."""
    if aligned.shape != (IMAGE_SIZE, IMAGE_SIZE, 3) or aligned.dtype != np.uint8:
        raise PartialFaceError(f"occlude_aligned_realistic: give a (160, 160, 3) uint8 face, got {aligned.shape}")
    if kind not in REALISTIC_KINDS:
        raise PartialFaceError(f"occluder {kind!r}: choose one of {', '.join(REALISTIC_KINDS)}")
    pts = aligned_points() if landmarks is None else np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    occ = _occlude(aligned, np.array([[1.0, 0, 0], [0, 1.0, 0]]), pts, kind, seed, masks, jpeg=False, grey=True)
    return occ.photo, occ.hidden_aligned


def _occlude(photo: np.ndarray, m: np.ndarray, aligned_pts: np.ndarray, kind: str, seed: int,
             masks: dict[str, MaskTemplate] | None, jpeg: bool, grey: bool) -> Occlusion:
    rng = _seeded(seed, kind)
    f = face_frame(aligned_pts)
    if kind == "crop":
        return _crop(photo, m, f, rng, grey)
    scale = float(np.hypot(m[0, 0], m[0, 1]))  # aligned pixels per photo pixel
    c = _Canvas(photo, m, float(np.clip(1.25 / scale, 1.0, _MAX_R)))
    shadow_strength = 0.0
    if kind == "mask":
        rgb, alpha, what = _mask(c, f, rng, masks)
        what = f"mask/{what}"
    elif kind == "sunglasses":
        rgb, alpha, what, shadow_strength = _sunglasses(c, f, rng)
    else:
        rgb, alpha, what, shadow_strength = _hand(c, f, rng)
    light = _light(c, f, photo)
    rgb = light.apply(rgb, 0.8 if kind != "sunglasses" else 0.5)
    h, w = photo.shape[:2]
    shadow = _shadow(c, alpha, f, shadow_strength) if shadow_strength else np.zeros_like(alpha)
    layer = np.dstack([rgb * alpha[:, :, None], alpha]).astype(np.float32)  # premultiplied
    back = cv2.warpAffine(layer, c.to_photo, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    dark = cv2.warpAffine(shadow.astype(np.float32), c.to_photo, (w, h), flags=cv2.INTER_LINEAR)
    a = cv2.GaussianBlur(back[:, :, 3], (0, 0), 0.5)  # the photo's softness at the edges
    colour = cv2.GaussianBlur(back[:, :, :3], (0, 0), 0.5)
    out = photo.astype(np.float32) * (1 - dark[:, :, None]) * (1 - a[:, :, None]) + colour
    if jpeg:
        out = out + _photo_noise(photo, rng) * a[:, :, None]
    out8 = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if jpeg:
        quality = int(rng.integers(80, 96))
        ok, buf = cv2.imencode(".jpg", out8[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out8 = np.ascontiguousarray(decoded[:, :, ::-1])
    to_aligned = np.array([[1 / c.r, 0, -_O], [0, 1 / c.r, -_O]])
    hidden_aligned = cv2.warpAffine(alpha.astype(np.float32), to_aligned, (IMAGE_SIZE, IMAGE_SIZE),
                                    flags=cv2.INTER_LINEAR) > 0.5
    return Occlusion(out8, a > 0.5, hidden_aligned, (0, 0), what)


def _photo_noise(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) Gaussian noise at the photo's own level (1.48 MAD of its fine detail, 0.5-6 grey levels)."""
    g = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail = g - cv2.GaussianBlur(g, (0, 0), 1.0)
    sigma = float(np.clip(1.4826 * np.median(np.abs(detail)), 0.5, 6.0))
    return (rng.normal(size=photo.shape) * sigma).astype(np.float32)
