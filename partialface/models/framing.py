"""A model's framing: how its input is cut from the benchmark's aligned 160x160 face (``ModelConfig.framing``).

=========  =================================================================================================
resize     the whole aligned face, resized to ``input_size`` (bilinear, antialiased; unchanged at 160)
dlib-chip  dlib's face chip: the square :data:`DLIB_CHIP_BOX_160` of the aligned face, sampled to
           ``input_size`` as dlib's ``extract_image_chip`` samples it (what dlib's network was trained on)
auto       the registered model's own framing (``register_model(name, framing=...)``): dlib-chip for the
           models on dlib's network, resize for the others
=========  =================================================================================================

Training, the benchmark and the facade all frame through :func:`to_model_input`, after partial faces are made on
the 160x160 face: the benchmark stays the benchmark, the model sees what it was trained on. The framing is
part of the model config, so it is saved in every checkpoint; a checkpoint written before the option
existed loads as ``resize`` (what it was trained and scored on).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from partialface.models.config import ModelConfig
from partialface.models.outputs import preprocess
from partialface.models.registry import registered_framing

#: dlib's face chip inside the benchmark's 160x160 aligned face: (centre x, centre y, side) in pixels, where
#: side = right - left of dlib's chip rectangle (its corners map to the chip's corner pixels); the median
#: over 502 aligned LFW faces of dlib's own detector + 5-point chip (``benchmarks/bench_dlib.py --chip-box``)
DLIB_CHIP_BOX_160 = (80.15, 90.86, 137.69)


def input_box(framing: str, input_size: int = 150) -> tuple[float, float, float, float]:
    """The outer edges (x0, y0, x1, y1) of a model's input under ``framing`` (resolved) in the aligned 160x160
    face's pixel coordinates (pixel j's centre at j): the whole face for resize; for dlib-chip the chip box,
    whose corner pixels' centres lie on the box corners, plus half a chip pixel."""
    if framing == "resize":
        return -0.5, -0.5, 159.5, 159.5
    if framing == "dlib-chip":
        cx, cy, side = DLIB_CHIP_BOX_160
        half = side / 2 + side / (2 * (input_size - 1))
        return cx - half, cy - half, cx + half, cy + half
    raise ValueError(f"framing must be resize or dlib-chip here, got {framing!r} (resolve 'auto' first)")


def chip_from_aligned(images: Tensor, box: tuple[float, float, float] = DLIB_CHIP_BOX_160, size: int = 150) -> Tensor:
    """uint8 (B, 3, H, W) aligned faces -> uint8 (B, 3, size, size): the square ``box`` (centre x, centre y,
    side, in pixels of a 160x160 face; scaled to H, W) sampled like dlib's ``extract_image_chip`` (box
    corners on the chip's corner pixels, bilinear, truncated to uint8). Points beyond the image's edge pixels
    take the edge's value (dlib would write 0 there: with the default box, part of the last row)."""
    b, _, h, w = images.shape
    cx, cy, side = box
    sx, sy = w / 160, h / 160
    t = torch.linspace(-0.5, 0.5, size, device=images.device, dtype=torch.float32)
    xs = (cx * sx + t * side * sx) / (w - 1) * 2 - 1  # pixel -> grid_sample's align_corners=True coords
    ys = (cy * sy + t * side * sy) / (h - 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).expand(b, size, size, 2)
    x = F.grid_sample(images.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return x.clamp_(0, 255).floor_().to(torch.uint8)


def framing_of(cfg: ModelConfig) -> str:
    """The framing a model uses: ``cfg.framing``, or for "auto" the registered model's own."""
    return registered_framing(cfg.name) if cfg.framing == "auto" else cfg.framing


def to_model_input(images: Tensor, input_size: int, channels_last: bool = False, framing: str = "resize") -> Tensor:
    """uint8 aligned faces (B, S, S, 3) or (B, 3, S, S) -> the model's input (B, 3, input_size, input_size):
    framed (``framing``, resolved: see :func:`framing_of`), normalised ``(x - 127.5) / 128``
    (``partialface.models.preprocess``). ``resize`` resizes the normalised face (bilinear, antialiased)
    when input_size != S; ``dlib-chip`` samples the chip from the uint8 face at input_size."""
    if framing == "dlib-chip":
        nchw = images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)
        x = preprocess(chip_from_aligned(nchw, size=input_size))
    elif framing == "resize":
        x = preprocess(images)
        if x.shape[-1] != input_size or x.shape[-2] != input_size:
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    else:
        raise ValueError(f"framing must be resize or dlib-chip here, got {framing!r} (resolve 'auto' first)")
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
