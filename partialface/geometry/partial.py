"""Partial faces (spec §2): the exact per-image path and a batched tensor path.

Exact path: what the published generator does — keep the part's rectangle (inclusive ends, clipped),
grey 128 elsewhere; the centred variant is that image translated by (80 - cx, 80 - cy) with OpenCV's
bilinear ``warpAffine`` (float32 matrix, grey border).

Batched path: all variants of a batch of aligned faces in memory, as tensors on any device. The
non-centred variants are a rectangle copy (bit-exact). The centred variants reproduce OpenCV's
fixed-point bilinear warp: the inverse translation is rounded to 1/32 px exactly as ``warpAffine``
does (``round(-d * 1024) + 16 >> 5``), and the 2x2 integer weights (32 - a)(32 - b) etc. are applied
with one final rounding ``(sum + 512) >> 10``. All intermediate values are integers below 2^24, so the
float32 arithmetic used here is exact and the result is bit-identical to the exact path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import torch

from partialface.geometry.template import (
    FACTORS,
    GREY,
    IMAGE_SIZE,
    PARTS,
    Part,
    Rect,
    centring_shift,
    part_rect,
)
from partialface.geometry.warp import fixed_point_blend, fixed_point_shift


def _check_aligned(aligned: np.ndarray) -> None:
    if aligned.shape != (IMAGE_SIZE, IMAGE_SIZE, 3) or aligned.dtype != np.uint8:
        raise ValueError(f"aligned face must be ({IMAGE_SIZE}, {IMAGE_SIZE}, 3) uint8, got {aligned.shape}")


def partial_face(aligned: np.ndarray, part: Part, factor: float, centred: bool) -> np.ndarray:
    """One partial face, pixel-identical to the published generator: (160, 160, 3) uint8 -> same."""
    _check_aligned(aligned)
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    r = part_rect(part, factor).clipped(IMAGE_SIZE)
    out = np.full_like(aligned, GREY)
    if r.area:
        out[r.y1 : r.y2 + 1, r.x1 : r.x2 + 1] = aligned[r.y1 : r.y2 + 1, r.x1 : r.x2 + 1]
    if centred:
        dx, dy = centring_shift(part)
        m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        out = cv2.warpAffine(out, m, (IMAGE_SIZE, IMAGE_SIZE), borderValue=(GREY, GREY, GREY))
    return out


@dataclass(frozen=True)
class Variant:
    """How an image is shown: holistic (part None) or a part kept at a size factor, centred or not."""

    part: Part | None = None
    factor: float | None = None
    centred: bool = False

    def __post_init__(self) -> None:
        if (self.part is None) != (self.factor is None):
            raise ValueError("a variant has both a part and a factor, or neither (holistic)")
        if self.part is not None and self.part not in PARTS:
            raise ValueError(f"unknown part {self.part!r}; choose from {', '.join(PARTS)}")

    @property
    def holistic(self) -> bool:
        return self.part is None

    def __str__(self) -> str:
        if self.part is None:
            return "holistic"
        return f"{self.part}{'_centered' if self.centred else ''}/{self.factor}"


def all_variants(centred: Sequence[bool] = (False, True)) -> list[Variant]:
    """The 72 partial variants (4 parts x 9 factors x 2 settings), published order."""
    return [Variant(p, f, c) for c in centred for p in PARTS for f in FACTORS]


@cache
def _fixed_shift(part: Part) -> tuple[int, int, int, int]:
    """OpenCV's fixed-point source offset for the centring translation of a part: (ix, ax, iy, ay).

    Output pixel x samples source x + ix + ax/32 (ax in 0..31), likewise y.
    """
    dx, dy = centring_shift(part)
    ix, ax = fixed_point_shift(dx)
    iy, ay = fixed_point_shift(dy)
    return ix, ax, iy, ay


def _as_nhwc_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) or (B, S, S, 3) uint8 -> contiguous (B, S, S, 3)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 (B, 3, H, W) or (B, H, W, 3) tensor, got {tuple(images.shape)}")
    if images.shape[-1] != 3 and images.shape[1] == 3:
        images = images.permute(0, 2, 3, 1)
    if tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"aligned faces must be {IMAGE_SIZE}x{IMAGE_SIZE}x3, got {tuple(images.shape[1:])}")
    return images.contiguous()


def _window(images: torch.Tensor, y0: int, x0: int, h: int, w: int, keep: Rect | None) -> torch.Tensor:
    """Source rows y0..y0+h-1, cols x0..x0+w-1 of NHWC images as float32 (B, h, w, 3); grey off the
    image and, when ``keep`` is given, outside that rectangle."""
    win = torch.full((images.shape[0], h, w, 3), float(GREY), device=images.device)
    lim = Rect(0, 0, IMAGE_SIZE - 1, IMAGE_SIZE - 1) if keep is None else keep.clipped(IMAGE_SIZE)
    y1, y2 = max(lim.y1, y0), min(lim.y2, y0 + h - 1)
    x1, x2 = max(lim.x1, x0), min(lim.x2, x0 + w - 1)
    if y1 <= y2 and x1 <= x2:
        win[:, y1 - y0 : y2 - y0 + 1, x1 - x0 : x2 - x0 + 1] = images[:, y1 : y2 + 1, x1 : x2 + 1]
    return win


def _out_region(part: Part, r: Rect) -> tuple[int, int, int, int] | None:
    """Output rows/cols (oy1, oy2, ox1, ox2) of a centred variant whose 2x2 source taps touch rectangle r.

    Source x in [x1 - 1, x2] feeds output x - ix; None when nothing of r lands in the image.
    """
    ix, _, iy, _ = _fixed_shift(part)
    ox1, ox2 = max(r.x1 - 1 - ix, 0), min(r.x2 - ix, IMAGE_SIZE - 1)
    oy1, oy2 = max(r.y1 - 1 - iy, 0), min(r.y2 - iy, IMAGE_SIZE - 1)
    return None if not r.area or ox1 > ox2 or oy1 > oy2 else (oy1, oy2, ox1, ox2)


def _cv2_shift(images: torch.Tensor, part: Part, oy: int, ox: int, h: int, w: int) -> torch.Tensor:
    """Output rows oy..oy+h-1, cols ox..ox+w-1 of the published warpAffine of every (unmasked) image of a
    CPU NHWC batch: (B, h, w, 3) uint8. The integer offset keeps OpenCV's fixed-point rounding unchanged."""
    dx, dy = centring_shift(part)
    m = np.array([[1.0, 0.0, dx - ox], [0.0, 1.0, dy - oy]], dtype=np.float64)
    src = images.numpy()
    out = np.empty((src.shape[0], h, w, 3), dtype=np.uint8)

    def run(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            cv2.warpAffine(src[i], m, (w, h), dst=out[i], borderValue=(GREY, GREY, GREY))

    n, k = src.shape[0], max(1, min(torch.get_num_threads(), src.shape[0] // 8))
    if k == 1:
        run(0, n)
    else:  # OpenCV releases the GIL: one chunk of images per thread
        bounds = np.linspace(0, n, k + 1).astype(int)
        with ThreadPoolExecutor(k) as pool:
            list(pool.map(run, bounds[:-1], bounds[1:]))
    return torch.from_numpy(out)


class PartialFaceBatcher:
    """Makes partial variants of one batch of aligned faces, in memory, on the batch's device.

    images: (B, 3, 160, 160) or (B, 160, 160, 3) uint8 tensor. ``variant(v)`` -> (B, 3, 160, 160) uint8
    in channels_last memory format (a view of an NHWC buffer; ``.contiguous()`` gives NCHW).
    ``backend``: how the centring translation of the whole image is computed — "auto" (OpenCV on CPU,
    torch elsewhere), "cv2" or "torch". Every backend is bit-exact to ``partial_face``.
    """

    def __init__(self, images: torch.Tensor, backend: str = "auto") -> None:
        if backend not in ("auto", "cv2", "torch"):
            raise ValueError(f"backend must be 'auto', 'cv2' or 'torch', got {backend!r}")
        self.images = _as_nhwc_uint8(images)
        self.backend = ("cv2" if self.images.device.type == "cpu" else "torch") if backend == "auto" else backend
        self._shift_cache: dict[str, tuple[torch.Tensor, int, int]] = {}

    def _buffer(self, out: torch.Tensor | None) -> torch.Tensor:
        if out is None:
            return torch.empty_like(self.images)
        if out.shape != self.images.shape or out.dtype != torch.uint8 or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous uint8 tensor of shape {tuple(self.images.shape)} (NHWC)")
        return out

    def _grey(self, out: torch.Tensor | None) -> torch.Tensor:
        return self._buffer(out).fill_(GREY)

    def _compose(
        self, out: torch.Tensor | None, src: torch.Tensor, y1: int, y2: int, x1: int, x2: int, sy: int = 0, sx: int = 0
    ) -> torch.Tensor:
        """New NHWC batch: ``src`` inside rows y1..y2 and columns x1..x2 (inclusive), grey elsewhere.

        ``src`` holds image rows/cols from (sy, sx) on. Writes every output byte once.
        """
        out = self._buffer(out)
        out[:, :y1] = GREY
        out[:, y2 + 1 :] = GREY
        out[:, y1 : y2 + 1, :x1] = GREY
        out[:, y1 : y2 + 1, x2 + 1 :] = GREY
        out[:, y1 : y2 + 1, x1 : x2 + 1] = src[:, y1 - sy : y2 - sy + 1, x1 - sx : x2 - sx + 1]
        return out

    def variant(self, v: Variant, out: torch.Tensor | None = None) -> torch.Tensor:
        """The batch shown as variant v: (B, 3, 160, 160) uint8.

        ``out``: an NHWC (B, 160, 160, 3) uint8 buffer to write into (saves an allocation per variant);
        the holistic variant is the input batch itself and never copies.
        """
        if v.part is None:
            return self.images.permute(0, 3, 1, 2)
        assert v.factor is not None
        r = part_rect(v.part, v.factor).clipped(IMAGE_SIZE)
        if v.centred:
            res = self._centred(v.part, r, out)
        elif r.area:
            res = self._compose(out, self.images, r.y1, r.y2, r.x1, r.x2)
        else:
            res = self._grey(out)
        return res.permute(0, 3, 1, 2)

    def _shifted(self, part: Part) -> tuple[torch.Tensor, int, int]:
        """The whole (unmasked) batch translated like the centred variants of ``part``, over the output
        region of the largest factor (all smaller rectangles nest inside it): ((B, h, w, 3) uint8, oy, ox).

        Shared by the 9 factors of a part; only each rectangle's one-pixel ring differs from it.
        """
        cached = self._shift_cache.get(part)
        if cached is None:
            region = _out_region(part, part_rect(part, max(FACTORS)).clipped(IMAGE_SIZE))
            assert region is not None
            oy1, oy2, ox1, ox2 = region
            h, w = oy2 - oy1 + 1, ox2 - ox1 + 1
            if self.backend == "cv2":
                shifted = _cv2_shift(self.images.cpu(), part, oy1, ox1, h, w).to(self.images.device)
            else:
                ix, ax, iy, ay = _fixed_shift(part)
                shifted = fixed_point_blend(_window(self.images, oy1 + iy, ox1 + ix, h + 1, w + 1, None), ax, ay)
            cached = self._shift_cache[part] = (shifted, oy1, ox1)
        return cached

    def _centred(self, part: Part, r: Rect, out: torch.Tensor | None) -> torch.Tensor:
        """Fixed-point bilinear translation of the masked batch (bit-exact to cv2.warpAffine): NHWC."""
        region = _out_region(part, r)
        if region is None:
            return self._grey(out)
        oy1, oy2, ox1, ox2 = region
        ix, ax, iy, ay = _fixed_shift(part)
        # Inside, all taps lie in the rectangle (or off the image, grey in both): the shifted full image.
        shifted, sy, sx = self._shifted(part)
        out = self._compose(out, shifted, oy1, oy2, ox1, ox2, sy, sx)
        # The ring (first/last row and column) mixes kept and grey taps: blend the masked strips exactly.
        h, w = oy2 - oy1 + 1, ox2 - ox1 + 1
        for ty, tx, sh, sw in ((oy1, ox1, 1, w), (oy2, ox1, 1, w), (oy1, ox1, h, 1), (oy1, ox2, h, 1)):
            win = _window(self.images, ty + iy, tx + ix, sh + 1, sw + 1, r)
            out[:, ty : ty + sh, tx : tx + sw] = fixed_point_blend(win, ax, ay)
        return out

    def variants(
        self, variants: Sequence[Variant] | None = None, reuse_buffer: bool = False
    ) -> Iterator[tuple[Variant, torch.Tensor]]:
        """Yield (variant, (B, 3, 160, 160) uint8) for ``variants`` (default: the 72 partial ones).

        ``reuse_buffer=True`` writes every variant into one buffer: each yielded tensor is valid only
        until the next is requested (for consumers that embed a variant at once). Fresh buffers of a few
        MB cost the operating system a page fault per 4 KB, which is most of the time here.
        """
        buf = torch.empty_like(self.images) if reuse_buffer else None
        for v in all_variants() if variants is None else variants:
            yield v, self.variant(v, buf)

    def __iter__(self) -> Iterator[tuple[Variant, torch.Tensor]]:
        return self.variants()


def partial_faces_batch(
    images: torch.Tensor, variants: Sequence[Variant] | None = None, backend: str = "auto"
) -> torch.Tensor:
    """All requested variants of a batch: images (B, 3|H, ...) uint8 -> (V, B, 3, 160, 160) uint8.

    ``variants`` defaults to the 72 partial variants (``all_variants()``).
    """
    batcher = PartialFaceBatcher(images, backend)
    vs = all_variants() if variants is None else list(variants)
    return torch.stack([batcher.variant(v) for v in vs])
