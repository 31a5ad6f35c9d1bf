"""What is hidden, per face (issue #39): a small CNN that estimates, for each region of the per-region account
(:data:`partialface.geometry.regions.REGIONS`: left eye, right eye, nose, mouth, the rest), the fraction of
its pixels that is visible, in [0, 1].

The network predicts a coarse visibility map — a ``grid`` x ``grid`` map of cells over the aligned face, each
cell's probability of being visible — and a region's visibility is the mean of that map over the region's
pixels, weighted as :func:`partialface.geometry.regions.region_visibility` counts them (the parts: all their
pixels; ``rest``: its pixels inside the face area). The map is trained on the occluder masks, the regions on
their visible fractions (:mod:`partialface.training.visibility`).

Input: aligned faces (B, 3, 160, 160) (or (B, 160, 160, 3)) uint8, or float on the same 0..255 scale. The face
is area-resized to ``input_size`` first, so the cost is a few tens of MFLOPs per face.

Files: safetensors, the config as JSON in the metadata (``visibility_config``), never a pickle
(:func:`save_visibility`, :func:`load_visibility`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partialface.data.images import atomic_write_bytes
from partialface.errors import PartialFaceError
from partialface.geometry.regions import REGIONS, region_weights
from partialface.geometry.template import IMAGE_SIZE

#: the ``format`` of a visibility file's metadata
VISIBILITY_FORMAT = "partialface-visibility-1"


@dataclass(frozen=True)
class VisibilityConfig:
    """The architecture of :class:`VisibilityNet`.

    input_size: side the aligned 160x160 face is area-resized to (a divisor of 160); widths: channels of the
    four stride-2 stages (each a 3x3 stride-2 conv then a 3x3 conv); grid: side of the visibility map (a
    divisor of 160 and a multiple of the third stage's map side input_size / 8)."""

    input_size: int = 80
    widths: tuple[int, int, int, int] = (16, 32, 64, 64)
    grid: int = 20

    def __post_init__(self) -> None:
        if IMAGE_SIZE % self.input_size or self.input_size % 16:
            raise PartialFaceError(f"visibility input_size {self.input_size}: must divide 160 and be a multiple "
                                   "of 16")
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise PartialFaceError(f"visibility widths {self.widths}: give 4 positive channel counts")
        if IMAGE_SIZE % self.grid or self.grid % (self.input_size // 8):
            raise PartialFaceError(f"visibility grid {self.grid}: must divide 160 and be a multiple of "
                                   f"{self.input_size // 8}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VisibilityConfig:
        """The config written by :meth:`to_json`; PartialFaceError for anything else."""
        try:
            d: dict[str, Any] = json.loads(text)
            return cls(input_size=int(d["input_size"]), widths=tuple(int(w) for w in d["widths"]),  # type: ignore[arg-type]
                       grid=int(d["grid"]))
        except (ValueError, KeyError, TypeError) as e:
            raise PartialFaceError(f"visibility_config: not a visibility config ({e})") from None


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def grid_weights(grid: int) -> np.ndarray:
    """(5, grid * grid) float64: region r's visibility is row r times the (flattened) map of visible fractions of
    the grid's cells — each cell's share of the pixels :func:`region_visibility` counts for region r."""
    cell = IMAGE_SIZE // grid
    w = region_weights().reshape(len(REGIONS), grid, cell, grid, cell).sum(axis=(2, 4))
    return w.reshape(len(REGIONS), grid * grid)


def cell_visibility(hidden: np.ndarray, grid: int) -> np.ndarray:
    """(..., 160, 160) bool hidden masks -> (..., grid, grid) float32: the visible fraction of each cell."""
    cell = IMAGE_SIZE // grid
    v = (~np.asarray(hidden, dtype=bool)).astype(np.float32)
    return v.reshape(*v.shape[:-2], grid, cell, grid, cell).mean(axis=(-3, -1))


class VisibilityNet(nn.Module):
    """Aligned faces (B, 3, 160, 160) uint8 / float 0..255 -> (B, 5) visibility in [0, 1] (order REGIONS).

    :meth:`maps` also gives the cell map (B, grid, grid) of visible probabilities it averages."""

    def __init__(self, config: VisibilityConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VisibilityConfig()
        w0, w1, w2, w3 = cfg.widths
        self.stage1 = nn.Sequential(_conv(3, w0, 2), _conv(w0, w0, 1))  # input / 2
        self.stage2 = nn.Sequential(_conv(w0, w1, 2), _conv(w1, w1, 1))  # input / 4
        self.stage3 = nn.Sequential(_conv(w1, w2, 2), _conv(w2, w2, 1))  # input / 8
        self.stage4 = nn.Sequential(_conv(w2, w3, 2), _conv(w3, w3, 1))  # input / 16: the face's layout
        self.head = nn.Sequential(nn.Conv2d(w1 + w2 + w3, 32, 1), nn.ReLU(inplace=True), nn.Conv2d(32, 1, 1))
        self.region_w: Tensor
        self.register_buffer("region_w", torch.from_numpy(grid_weights(cfg.grid)).float(), persistent=False)

    def _prepare(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise PartialFaceError(f"visibility: give aligned faces (B, 3, 160, 160), got {tuple(x.shape)}")
        if x.shape[1] != 3 and x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        if tuple(x.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise PartialFaceError(f"visibility: give aligned faces (B, 3, 160, 160), got {tuple(x.shape)}")
        x = x.float()
        k = IMAGE_SIZE // self.config.input_size
        if k > 1:
            x = F.avg_pool2d(x, k)
        return (x - 127.5) / 128.0

    def maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """faces (B, 3, 160, 160) -> (visibility (B, 5) in [0, 1], cell logits (B, grid, grid))."""
        x = self._prepare(x)
        f2 = self.stage2(self.stage1(x))
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        g = self.config.grid
        feats = [F.interpolate(f, size=(g, g), mode="bilinear", align_corners=False) if f.shape[-1] != g
                 else f for f in (f2, f3, f4)]
        logits = self.head(torch.cat(feats, dim=1))[:, 0]  # (B, g, g)
        vis = torch.sigmoid(logits).flatten(1) @ self.region_w.T
        return vis.clamp(0.0, 1.0), logits

    def forward(self, x: Tensor) -> Tensor:
        """faces (B, 3, 160, 160) uint8 / float 0..255 -> (B, 5) visibility in [0, 1]."""
        return self.maps(x)[0]


def predict_visibility(net: VisibilityNet, aligned: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, 160, 160, 3) uint8 aligned faces -> (N, 5) float32 visibility (order REGIONS), in eval mode."""
    net.eval()
    dev = next(net.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(aligned), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(aligned[i : i + batch_size])).to(dev)
            out.append(net(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(REGIONS)), np.float32)


def save_visibility(path: str | os.PathLike[str], net: VisibilityNet, fp16: bool = False,
                    metadata: dict[str, str] | None = None) -> None:
    """Write ``net`` as one safetensors file (float16 if ``fp16``; BN statistics kept), atomically; its config
    and ``metadata`` (strings) in the header."""
    from safetensors.torch import save as st_save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    if fp16:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    meta = {**(metadata or {}), "format": VISIBILITY_FORMAT, "visibility_config": net.config.to_json(),
            "regions": ",".join(REGIONS)}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def read_visibility_file(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors on CPU, metadata) of a visibility safetensors file; PartialFaceError for anything else."""
    from partialface.models.files import read_safetensors

    return read_safetensors(path, "visibility weights")


def load_visibility(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> VisibilityNet:
    """The :class:`VisibilityNet` saved by :func:`save_visibility` (float32, eval mode, on ``device``)."""
    tensors, meta = read_visibility_file(path)
    if meta.get("format") != VISIBILITY_FORMAT or "visibility_config" not in meta:
        raise PartialFaceError(f"{path}: not a visibility model (format {meta.get('format')!r})")
    net = VisibilityNet(VisibilityConfig.from_json(meta["visibility_config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise PartialFaceError(f"{path}: weights do not match the visibility config (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]})")
    return net.to(device).eval()
