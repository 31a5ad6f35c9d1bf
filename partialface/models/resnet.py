"""A bottleneck ResNet written in the project (no torchvision), with its stages exposed separately.

Layout (ResNet v1.5: the stride sits on the 3x3 conv of a bottleneck, as in common implementations):
``stem`` = conv 7x7/2 + BN + ReLU (+ max-pool 3x3/2), then the stages conv2_x..conv5_x built by
:func:`make_stage`. :class:`ResNet` holds the stem and the first ``num_stages`` stages; the full
ResNet-50 is ``num_stages=4`` with the standard strides; the paper's truncated "ResNet-41" is
``num_stages=3`` with conv4_x's first bottleneck at stride ``cfg.conv4_stride`` (default 1, so a 160x160
input gives 20x20 maps). Everything is channels_last-friendly (no ``view`` on the activations).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partialface.models.config import ModelConfig


class Bottleneck(nn.Module):
    """1x1 (mid) -> 3x3 (mid, stride) -> 1x1 (out), BN after each, projection shortcut when needed.

    x: (B, in_ch, H, W) -> (B, out_ch, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@functools.cache
def _register_max_pool() -> None:
    """Registers ``torch.ops.partialface.max_pool2d(x, kernel, stride, padding)``: ATen's max pool as an operator
    that inductor calls as it is instead of generating code for it (on first use, not at import)."""

    @torch.library.custom_op("partialface::max_pool2d", mutates_args=())
    def max_pool2d(x: Tensor, kernel: int, stride: int, padding: int) -> Tensor:
        return F.max_pool2d(x, kernel, stride, padding)

    @max_pool2d.register_fake
    def _(x: Tensor, kernel: int, stride: int, padding: int) -> Tensor:
        return F.max_pool2d(x, kernel, stride, padding)


class MaxPool(nn.MaxPool2d):
    """The stem's 3x3/2 max pool over ``channels`` maps: (B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2)).

    ``compile_bf16_form()``: for ``torch.compile`` under bf16 on a CPU. With fewer than 32 channels a channels-last
    pixel is less than one AVX-512 register of bf16, and inductor's code loads it piece by piece: 5.6 ms per 32
    faces for the cpu preset's 16 channels (40 % of its compiled network), against 1.7 ms for ATen's kernel inside
    the graph and 0.4 ms in float32 (docs/history/benchmarks.md). Those pools run ATen's kernel; a max is exact
    either way."""

    def __init__(self, channels: int) -> None:
        super().__init__(3, stride=2, padding=1)
        self.channels = channels

    def compile_bf16_form(self) -> nn.Module:
        return _AtenMaxPool(self) if self.channels < 32 else self


class _AtenMaxPool(nn.Module):
    """:class:`MaxPool` through ``partialface::max_pool2d``. x: (B, C, H, W)."""

    def __init__(self, pool: MaxPool) -> None:
        super().__init__()
        _register_max_pool()
        self.args = (int(pool.kernel_size), int(pool.stride), int(pool.padding))  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.partialface.max_pool2d(x, *self.args)


class Stem(nn.Module):
    """conv 7x7/2 + BN + ReLU (+ max-pool 3x3/2). x: (B, 3, H, W) -> (B, width, H/4, W/4) with the pool."""

    def __init__(self, width: int, pool: bool = True, in_ch: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, width, 7, stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.pool: nn.Module = MaxPool(width) if pool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


def make_stage(in_ch: int, out_ch: int, blocks: int, stride: int, expansion: int = 4) -> nn.Sequential:
    """A ResNet stage: ``blocks`` bottlenecks, the first one with ``stride`` (and the projection)."""
    mid = out_ch // expansion
    layers = [Bottleneck(in_ch, mid, out_ch, stride)]
    layers += [Bottleneck(out_ch, mid, out_ch, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def stage_strides(cfg: ModelConfig, truncated: bool) -> tuple[int, int, int, int]:
    """Strides of conv2_x..conv5_x: (1, 2, conv4_stride, -) truncated, (1, 2, 2, 2) for the full ResNet."""
    return (1, 2, cfg.conv4_stride, 2) if truncated else (1, 2, 2, 2)


def build_stage(cfg: ModelConfig, index: int, truncated: bool = True) -> nn.Sequential:
    """Stage ``index`` (0 = conv2_x, ..., 3 = conv5_x) of the backbone described by ``cfg``."""
    in_ch = cfg.stem_width if index == 0 else cfg.widths[index - 1]
    stride = stage_strides(cfg, truncated)[index]
    return make_stage(in_ch, cfg.widths[index], cfg.blocks[index], stride, cfg.expansion)


def init_weights(module: nn.Module, zero_init_residual: bool = False) -> None:
    """Kaiming-normal (fan_out) convs, BN gamma 1 / beta 0; optionally zero every bottleneck's bn3 gamma.

    Zero-init of the last BN of each residual branch (Goyal et al. 2017) makes every block start as
    the identity (its shortcut), a common trick for stable early training.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)


class ResNet(nn.Module):
    """Stem + the first ``num_stages`` stages of the ResNet in ``cfg``; ``forward`` returns the last maps.

    ``num_stages=4, truncated=False``: full ResNet-50 geometry (160 -> 5x5, widths[3] channels);
    ``num_stages=3, truncated=True``: the paper's ResNet-41 (160 -> 20x20, widths[2] channels).
    The stages are ``self.stages[i]`` (conv2_x = 0); ``self.out_channels`` gives the output width.
    x: (B, 3, H, W) -> (B, out_channels, h, w).
    """

    def __init__(self, cfg: ModelConfig, num_stages: int = 4, truncated: bool = False) -> None:
        super().__init__()
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be in 1..4, got {num_stages}")
        self.stem = Stem(cfg.stem_width, cfg.stem_pool)
        self.stages = nn.ModuleList(build_stage(cfg, i, truncated) for i in range(num_stages))
        self.out_channels = cfg.widths[num_stages - 1]
        init_weights(self, cfg.zero_init_residual)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x
