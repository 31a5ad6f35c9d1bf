"""What every model's forward returns, and the input normalisation shared with the data pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ModelOutput:
    """A model's forward result.

    f: (B, D) face embedding, NOT normalised (for "ours": the mean over k of f_k);
    fk: (B, K, D) per-map embeddings f_k (None for the baselines);
    s: (B, K) importance of each map, sums to 1 over k (None for the baselines);
    A: (B, K, H, W) raw attention maps after the ReLU (None for the baselines);
    A_tilde: (B, K, H, W) recalibrated maps s_k * sigmoid(A_k) (None for the baselines).
    """

    f: Tensor
    fk: Tensor | None = None
    s: Tensor | None = None
    A: Tensor | None = None
    A_tilde: Tensor | None = None


def preprocess(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalise images for the models: ``(x - 127.5) / 128`` (values in about [-1, 1]).

    images: (B, H, W, 3) or (B, 3, H, W), uint8 (or float in [0, 255]), any device.
    Returns (B, 3, H, W) ``dtype``. An NHWC input comes back channels_last-strided (no layout copy is
    forced, so channels_last models avoid a transpose).
    """
    if images.ndim != 4:
        raise ValueError(f"preprocess expects (B, H, W, 3) or (B, 3, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        if images.shape[-1] != 3:
            raise ValueError(f"preprocess expects 3 colour channels, got shape {tuple(images.shape)}")
        images = images.permute(0, 3, 1, 2)
    return (images.to(dtype) - 127.5) / 128.0
