"""The benchmark geometry — the single source of truth for template, parts, factors and rectangles.

Numbers from the PartialLFW spec (§1, §2) and the published generator. Everything else in the
project (alignment, partial faces, training augmentation, export layout) reads them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

#: Output size S of an aligned face (pixels, square).
IMAGE_SIZE = 160
#: Template padding p.
PADDING = 0.3
#: Mean face shape in [0, 1], order: left eye, right eye, nose tip, left mouth corner, right mouth corner.
MEAN_FACE_X = (0.2194, 0.7747, 0.4971, 0.3207, 0.6735)
MEAN_FACE_Y = (0.1871, 0.1871, 0.5337, 0.7633, 0.7633)
#: Landmark names, in the order used everywhere (detector output, landmark files, template).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
#: Where the alignment puts the midpoint of the eyes, as fractions of S: (0.5 S, 0.4 S) = (80, 64).
EYE_CENTRE_FRACTION = (0.5, 0.4)
#: Grey fill for borders and hidden regions.
GREY = 128
#: Parts are shifted down this much from the template (the alignment's eye-centre step moves faces).
PART_Y_SHIFT = 15.0

Part = Literal["lEye", "rEye", "Nose", "Mouth"]
#: Parts in the published order.
PARTS: tuple[Part, ...] = ("lEye", "rEye", "Nose", "Mouth")
#: The nine size factors f, as printed in the published folder names.
FACTORS: tuple[float, ...] = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


def template_points(size: int = IMAGE_SIZE, padding: float = PADDING) -> np.ndarray:
    """The 5 template points in pixels, (5, 2) float64: ((p + x) / (1 + 2p) * S, (p + y) / (1 + 2p) * S)."""
    x = [(padding + mx) / (2 * padding + 1) * size for mx in MEAN_FACE_X]
    y = [(padding + my) / (2 * padding + 1) * size for my in MEAN_FACE_Y]
    return np.array([x, y], dtype=np.float64).T


def aligned_points(size: int = IMAGE_SIZE, padding: float = PADDING) -> np.ndarray:
    """Where the alignment puts the 5 landmarks of a face shaped like the template, (5, 2) pixels: the template
    points moved so that the eyes' midpoint is at :data:`EYE_CENTRE_FRACTION` of S (the recipe's last step)."""
    pts = template_points(size, padding)
    eye = (pts[0] + pts[1]) / 2
    return pts + np.array(EYE_CENTRE_FRACTION) * size - eye


def part_centre(part: Part, size: int = IMAGE_SIZE, padding: float = PADDING) -> tuple[float, float]:
    """Centre (cx, cy) of a part in an aligned face, exactly as the published generator computes it.

    Mouth uses the mean x of the two mouth corners (computed as 0.5 * (x3 + x4) first, then mapped).
    """
    idx = PARTS.index(part)
    mx = list(MEAN_FACE_X)
    mx[3] = 0.5 * (mx[3] + mx[4])
    cx = (padding + mx[idx]) / (2 * padding + 1) * size
    cy = (padding + MEAN_FACE_Y[idx]) / (2 * padding + 1) * size + PART_Y_SHIFT
    return cx, cy


@dataclass(frozen=True)
class Rect:
    """An inclusive pixel rectangle x1..x2, y1..y2 (before clipping to the image)."""

    x1: int
    y1: int
    x2: int
    y2: int

    def clipped(self, size: int = IMAGE_SIZE) -> Rect:
        """The rectangle clipped to [0, size - 1] (may be empty when x1 > x2)."""
        return Rect(max(self.x1, 0), max(self.y1, 0), min(self.x2, size - 1), min(self.y2, size - 1))

    @property
    def area(self) -> int:
        """Number of pixels inside (inclusive ends); 0 when empty."""
        return max(0, self.x2 - self.x1 + 1) * max(0, self.y2 - self.y1 + 1)


def half_extent(factor: float) -> tuple[float, float]:
    """Half width and half height of the kept rectangle: (15 + 120 f, 10 + 105 f)."""
    return 15 + 120 * factor, 10 + 105 * factor


def part_rect(part: Part, factor: float, centre: tuple[float, float] | None = None) -> Rect:
    """The kept rectangle for a part and size factor (inclusive ends, not clipped).

    x1 = int(cx - (15 + 120 f)), x2 = int(cx + (15 + 120 f)), y likewise with (10 + 105 f);
    int() truncates toward zero. ``centre`` overrides the part centre (training jitter).
    """
    cx, cy = part_centre(part) if centre is None else centre
    hw, hh = half_extent(factor)
    return Rect(int(cx - hw), int(cy - hh), int(cx + hw), int(cy + hh))


def centring_shift(part: Part, size: int = IMAGE_SIZE) -> tuple[float, float]:
    """Translation (dx, dy) of the centred variant: (S/2 - cx, S/2 - cy), rounded to float32 as published."""
    cx, cy = part_centre(part, size)
    m = np.array([[1, 0, size / 2 - cx], [0, 1, size / 2 - cy]], dtype=np.float32)
    return float(m[0, 2]), float(m[1, 2])


def visible_fraction(part: Part, factor: float, size: int = IMAGE_SIZE) -> float:
    """Fraction of the image that the kept rectangle covers (after clipping)."""
    return part_rect(part, factor).clipped(size).area / float(size * size)


def factor_name(factor: float) -> str:
    """Folder name of a factor as the published generator prints it: 'factor_0.1', 'factor_0.15', ..."""
    return "factor_" + str(factor)
