"""OpenCV's fixed-point bilinear translation, restated for tensors (the centred partial faces).

``cv2.warpAffine`` (INTER_LINEAR, 8-bit) inverts the matrix, rounds each source coordinate to 1/32
pixel (``(round(-d * 1024) + 16) >> 5``) and blends the 2x2 taps with integer weights
(32 - a)(32 - b), a b, ... followed by one rounding, ``(sum + 512) >> 10`` (the published 15-bit
weights are these times 32). With these two functions a translation reproduces OpenCV bit for bit on
any device; the partial-face generator and the training augmentation both use them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def fixed_point_shift(d: float) -> tuple[int, int]:
    """Source offset of a translation by d pixels (d passed to OpenCV as float32): (integer part i,
    fraction a in 0..31) with source x = output x + i + a/32."""
    v = (int(np.rint(-float(np.float32(d)) * 1024.0)) + 16) >> 5
    return v >> 5, v & 31


def fixed_point_shift_t(d: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`fixed_point_shift` for a tensor of shifts -> (integer parts, fractions) int64 tensors.

    torch.round rounds half to even like np.rint; >> and & on int64 floor like Python's.
    """
    v = (torch.round(-d.float().double() * 1024.0).long() + 16) >> 5
    return v >> 5, v & 31


def fixed_point_blend(win: Tensor, ax: Tensor | float, ay: Tensor | float) -> Tensor:
    """Blend NHWC windows (..., h + 1, w + 1, 3) with fractions (ax, ay) -> (..., h, w, 3) uint8.

    Separable integer sums (along x, then y) and one rounding; every value is an integer below 2^24,
    so float32 arithmetic is exact. ax, ay: numbers, or tensors broadcasting against the window.
    """
    f = win if win.is_floating_point() else win.float()
    rows = f[..., :, :-1, :] * (32 - ax) + f[..., :, 1:, :] * ax
    total = rows[..., :-1, :, :] * (32 - ay) + rows[..., 1:, :, :] * ay
    return total.add_(512.0).mul_(1.0 / 1024.0).floor_().to(torch.uint8)
