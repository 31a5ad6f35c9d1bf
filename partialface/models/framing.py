"""A model's framing: how its input is cut from the benchmark's aligned 160x160 face (``ModelConfig.framing``).

=========  =================================================================================================
resize     the whole aligned face, resized to ``input_size`` (bilinear, antialiased; unchanged at 160)
dlib-chip  dlib's face chip: the square :data:`DLIB_CHIP_BOX_160` of the aligned face, sampled to
           ``input_size`` as dlib's ``extract_image_chip`` samples it (what dlib's network was trained on)
arcface-112 the ArcFace 5-point template crop (112x112 at input_size 112; SFace and the insightface family):
           a fixed similarity from the benchmark's aligned landmark positions onto :data:`ARCFACE_TEMPLATE_112`
auto       the registered model's own framing (``register_model(name, framing=...)``): dlib-chip for the
           models on dlib's network, resize for the others
=========  =================================================================================================

Training, the benchmark and the facade all frame through :func:`to_model_input`, after partial faces are made on
the 160x160 face: the benchmark stays the benchmark, the model sees what it was trained on. The framing is
part of the model config, so it is saved in every checkpoint; a checkpoint written before the option
existed loads as ``resize`` (what it was trained and scored on).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
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


#: the ArcFace 5-point template of a 112x112 crop (insightface; left eye, right eye, nose, mouth corners as
#: seen in the image), in pixel coordinates (pixel j's centre at j)
ARCFACE_TEMPLATE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
                        (70.7299, 92.2041))


@lru_cache(maxsize=8)
def arcface_similarity(size: int = 112) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(2, 3) similarity from the aligned 160x160 face's pixels to the ArcFace crop's (``size`` px): the
    least-squares fit of where the benchmark's alignment puts the 5 landmarks
    (:func:`partialface.geometry.template.aligned_points`) onto the template, scaled to ``size``."""
    from partialface.geometry.align import similarity_transform
    from partialface.geometry.template import aligned_points

    m, t = similarity_transform(aligned_points(), np.array(ARCFACE_TEMPLATE_112) * (size / 112))
    return (float(m[0, 0]), float(m[0, 1]), float(t[0])), (float(m[1, 0]), float(m[1, 1]), float(t[1]))


def _arcface_inverse(size: int) -> np.ndarray:
    """(2, 3): the ArcFace crop's pixels -> the aligned face's pixels."""
    return np.linalg.inv(np.vstack([np.array(arcface_similarity(size)), [0.0, 0.0, 1.0]]))[:2]


def arcface_from_aligned(images: Tensor, size: int = 112) -> Tensor:
    """uint8 (B, 3, 160, 160) aligned faces -> float32 (B, 3, size, size) whole pixel values 0..255: the ArcFace
    crop, sampled bilinearly through :func:`arcface_similarity` and rounded, as ``cv2.warpAffine`` makes a uint8
    crop (points beyond the edge pixels take the edge's value)."""
    b, _, h, w = images.shape
    inv = _arcface_inverse(size)  # crop pixel -> aligned-face pixel
    u = torch.arange(size, device=images.device, dtype=torch.float64)
    vv, uu = torch.meshgrid(u, u, indexing="ij")
    xs = inv[0, 0] * uu + inv[0, 1] * vv + inv[0, 2]
    ys = inv[1, 0] * uu + inv[1, 1] * vv + inv[1, 2]
    grid = torch.stack([xs / (w - 1) * 2 - 1, ys / (h - 1) * 2 - 1], -1).to(torch.float32).expand(b, size, size, 2)
    x = F.grid_sample(images.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return x.round_().clamp_(0, 255)


def input_frame(framing: str, input_size: int) -> np.ndarray:
    """(2, 3) affine from a model's input frame, (u, v) in [0, 1]^2 over the input's outer edges, to the aligned
    160x160 face's pixel coordinates (pixel j's centre at j), under ``framing`` (resolved): the whole face for
    resize; dlib's chip box (its corner pixels' centres on the box corners) for dlib-chip; the inverse of
    :func:`arcface_similarity` for arcface-112."""
    if framing == "resize":
        return np.array([[160.0, 0.0, -0.5], [0.0, 160.0, -0.5]])
    if framing == "dlib-chip":
        cx, cy, side = DLIB_CHIP_BOX_160
        full = side + side / (input_size - 1)
        return np.array([[full, 0.0, cx - full / 2], [0.0, full, cy - full / 2]])
    if framing == "arcface-112":
        inv = _arcface_inverse(input_size)
        # input pixel centre coords = input_size * (u, v) - 0.5
        shift = inv[:, 2] - 0.5 * (inv[:, 0] + inv[:, 1])
        return np.column_stack([inv[:, 0] * input_size, inv[:, 1] * input_size, shift])
    raise ValueError(f"framing must be resize, dlib-chip or arcface-112 here, got {framing!r} (resolve 'auto' first)")


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
    when input_size != S; ``dlib-chip`` samples the chip from the uint8 face at input_size; ``arcface-112`` the
    ArcFace crop."""
    if framing == "dlib-chip":
        nchw = images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)
        x = preprocess(chip_from_aligned(nchw, size=input_size))
    elif framing == "resize":
        x = preprocess(images)
        if x.shape[-1] != input_size or x.shape[-2] != input_size:
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    elif framing == "arcface-112":
        nchw = images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)
        x = preprocess(arcface_from_aligned(nchw, size=input_size))
    else:
        raise ValueError(f"framing must be resize, dlib-chip or arcface-112 here, got {framing!r} (resolve 'auto' "
                         "first)")
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
