"""Parameter and FLOP counts of the registered models (built on the meta device: no memory, no compute).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``: 2 x the multiply-adds of the
convolutions and matrix products (BN, ReLU, pooling, softmax are not counted), per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from partialface.models.config import ModelConfig
from partialface.models.registry import create_model


@dataclass(frozen=True)
class ModelSummary:
    """One row of the model table. maps: side of the final feature maps; channels: their depth."""

    name: str
    preset: str
    input_size: int
    maps: int
    channels: int
    params: int
    flops: int


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module, input_size: int, device: torch.device | str = "meta") -> int:
    """FLOPs of one forward pass for one (3, input_size, input_size) image, model in eval mode."""
    x = torch.empty(1, 3, input_size, input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def summarize(cfg: ModelConfig) -> ModelSummary:
    """Build ``cfg`` on the meta device and count its parameters, FLOPs and final map geometry."""
    with torch.device("meta"):
        model = create_model(cfg)
    x = torch.empty(1, 3, cfg.input_size, cfg.input_size, device="meta")
    with torch.no_grad():
        maps = model.eval().forward_features(x)
    return ModelSummary(
        name=cfg.name,
        preset=cfg.preset_name,
        input_size=cfg.input_size,
        maps=int(maps.shape[-1]),
        channels=int(maps.shape[1]),
        params=count_parameters(model),
        flops=flops_per_image(model, cfg.input_size),
    )


def format_table(rows: list[ModelSummary]) -> str:
    """A plain-text table (one line per model x preset)."""
    w = max([len("model"), *(len(r.name) for r in rows)])
    header = f"{'model':<{w}} {'preset':<7} {'input':>7} {'maps':>11} {'params':>10} {'GFLOPs/img':>11}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.name:<{w}} {r.preset:<7} {f'{r.input_size}x{r.input_size}':>7} "
            f"{f'{r.channels}x{r.maps}x{r.maps}':>11} {r.params / 1e6:>9.3f}M {r.flops / 1e9:>11.3f}"
        )
    return "\n".join(lines)
