"""The attention model of Hörmann et al. (ICIP 2021): Extract -> Attend -> Aggregate.

Shapes for the paper preset (160x160 input, K = 12):
``Extract``: shared trunk (stem, conv2_x, conv3_x) -> feature branch conv4_x -> F (B, 1024, 20, 20);
attention branch: its own conv4_x -> 1x1 conv to K -> ReLU -> A (B, K, 20, 20).
``Attend`` (no parameters): Â_k = sigmoid(A_k); s = softmax_k(GAP(Â_k) / T) (T = 1 in the paper); Ã_k = s_k · Â_k;
v_k = Σ_ij Ã_k[i, j] F[:, i, j] -> v (B, K, 1024).
``Aggregate``: one Linear(1024 -> 256) per k (weights NOT shared) -> f_k; f = mean_k f_k.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from partialface.models.base import FaceModel
from partialface.models.config import POOLINGS, ModelConfig
from partialface.models.outputs import ModelOutput
from partialface.models.registry import register_model
from partialface.models.resnet import Stem, build_stage, init_weights


class Extract(nn.Module):
    """Shared trunk + feature branch + attention branch.

    x: (B, 3, H, W) -> F: (B, C, h, w) with C = cfg.widths[2], and A: (B, K, h, w) >= 0 (after the ReLU).
    The two conv4_x copies have the same architecture and independent weights.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.trunk = nn.Sequential(Stem(cfg.stem_width, cfg.stem_pool), build_stage(cfg, 0), build_stage(cfg, 1))
        self.feature_branch = build_stage(cfg, 2, truncated=True)
        self.attention_branch = build_stage(cfg, 2, truncated=True)
        self.attention_conv = nn.Conv2d(cfg.feature_channels, cfg.K, 1, bias=True)
        self.attention_relu = nn.ReLU(inplace=False)
        init_weights(self, cfg.zero_init_residual)
        # fan_in scaling keeps A of order 1 at the start, so the sigmoid is not saturated.
        nn.init.kaiming_normal_(self.attention_conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.attention_conv.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shared = self.trunk(x)
        F = self.feature_branch(shared)
        A = self.attention_relu(self.attention_conv(self.attention_branch(shared)))
        return F, A


class Attend(nn.Module):
    """Parameter-free recalibration of the maps and attentional pooling of F.

    F: (B, C, H, W), A: (B, K, H, W) -> v: (B, K, C), s: (B, K), A_tilde: (B, K, H, W).
    pooling "sum": v_k = Σ_ij Ã_k[i,j] F[:, i, j]; "mean": the same divided by Σ_ij Ã_k[i,j] (s_k cancels).
    ``temperature`` T: s = softmax_k(GAP(Â_k) / T); the paper's T = 1 keeps s_max / s_min <= e, T < 1 lets
    s spread (s_max / s_min <= e^(1/T)).
    ``uniform_mix`` β (mean pooling only): v_k = (1 - β) v_k + β GAP(F), each map's pooling mixed with a uniform
    map (a holistic path; 0 = the paper's). Ã is returned unmixed (where the maps look).
    The recalibration runs in float32 (also under autocast); the pooling in F's dtype.
    """

    def __init__(self, pooling: str = "sum", eps: float = 1e-6, temperature: float = 1.0,
                 uniform_mix: float = 0.0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if uniform_mix and pooling != "mean":
            raise ValueError("uniform_mix needs pooling 'mean'")
        self.pooling = pooling
        self.eps = eps
        self.temperature = float(temperature)
        self.uniform_mix = float(uniform_mix)

    def recalibrate(self, A: Tensor) -> tuple[Tensor, Tensor]:
        """A: (B, K, H, W) -> (s: (B, K), A_tilde: (B, K, H, W)), both float32."""
        A_hat = torch.sigmoid(A.float())
        s = torch.softmax(A_hat.mean(dim=(2, 3)) / self.temperature, dim=1)
        return s, s[:, :, None, None] * A_hat

    def forward(self, F: Tensor, A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s, A_tilde = self.recalibrate(A)
        v = A_tilde.to(F.dtype).flatten(2) @ F.flatten(2).transpose(1, 2)  # (B, K, HW) @ (B, HW, C)
        if self.pooling == "mean":
            v = v / A_tilde.sum(dim=(2, 3)).clamp_min(self.eps).unsqueeze(-1).to(v.dtype)
        if self.uniform_mix:
            v = (1.0 - self.uniform_mix) * v + self.uniform_mix * F.mean(dim=(2, 3)).unsqueeze(1)
        return v, s, A_tilde


class Aggregate(nn.Module):
    """K separate Linear(C -> D) layers, run as one batched einsum; f = mean_k f_k.

    weight: (K, D, C) (weight[k] is the k-th layer's nn.Linear-style weight), bias: (K, D).
    v: (B, K, C) -> (f: (B, D), fk: (B, K, D)).
    """

    def __init__(self, K: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(K, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(K, out_features))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default initialisation, per k
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        fk = (v.transpose(0, 1) @ self.weight.to(v.dtype).transpose(1, 2)).transpose(0, 1) + self.bias.to(v.dtype)
        return fk.mean(dim=1), fk


class AttentionModel(FaceModel):
    """The paper's model ("ours"). x: (B, 3, H, W) normalised by ``preprocess`` -> ModelOutput."""

    has_attention = True

    def __init__(self, cfg: ModelConfig, extract: nn.Module | None = None, feature_channels: int = 0) -> None:
        """``extract``: another Extract (x -> F (B, C, h, w), A (B, K, h, w)) with C = ``feature_channels``;
        default: the paper's ResNet Extract."""
        super().__init__(cfg)
        self.extract = extract if extract is not None else Extract(cfg)
        self.attend = Attend(cfg.pooling, temperature=cfg.s_temperature, uniform_mix=cfg.uniform_mix)
        self.aggregate = Aggregate(cfg.K, feature_channels or cfg.feature_channels, cfg.embedding_dim)

    def forward_features(self, x: Tensor) -> Tensor:
        """F: (B, C, h, w), the feature branch's maps."""
        return self.extract(x)[0]

    def forward(self, x: Tensor) -> ModelOutput:
        F, A = self.extract(x)
        v, s, A_tilde = self.attend(F, A)
        f, fk = self.aggregate(v)
        return ModelOutput(f=f, fk=fk, s=s, A=A, A_tilde=A_tilde)


@register_model("ours")
def build_ours(cfg: ModelConfig) -> AttentionModel:
    """The attention model (Extract / Attend / Aggregate)."""
    return AttentionModel(cfg)
