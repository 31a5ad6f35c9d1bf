"""Losses: weighted cross-entropy over the K per-map embeddings, the diversity regulariser, margin heads.

Total loss (spec "Losses"): ``weighted CE + lambda_div * diversity``; the third term of the paper,
``lambda_reg * ||weights||^2``, is the optimizer's weight decay (training config), not computed here.

- ONE classifier head (shared by all f_k) maps embeddings to identity logits. ``head``: "linear"
  (Linear(D -> C), plain softmax CE), "arcface" (s·cos(θ + m) on the target, Deng et al. 2019) or
  "cosface" (s·(cos θ − m) on the target, Wang et al. 2018); margin heads normalise weights and features.
- Weighted CE: CE_k = CE(head(f_k), y) per sample; total = mean_b Σ_k s_bk · CE_bk (``weighted_ce``),
  or mean_b mean_k CE_bk when off. Baselines (``fk`` is None): plain CE of head(f).
- Diversity: P_k = softmax over the H·W pixels of A_k. "weighted" (default):
  1 − Σ_ij max_k s_k·P_k[i,j]; "unweighted" (Comparator Networks): K − Σ_ij max_k P_k[i,j];
  both averaged over the batch. 0 for disjoint one-hot maps, positive for overlapping maps.
- ``detach_s``: use s without gradient in both weighted terms.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partialface.errors import PartialFaceError
from partialface.models.outputs import ModelOutput

HEADS = ("linear", "arcface", "cosface")
#: classifier start: "random", or "imprint" (each row = the normalised mean embedding of its identity's
#: training faces under the starting model; Qi et al., CVPR 2018) — for fine-tuning pretrained networks
INIT_HEADS = ("random", "imprint")
DIVERSITY_FORMS = ("weighted", "unweighted", "none")
DEFAULT_MARGIN = {"linear": 0.0, "arcface": 0.5, "cosface": 0.35}


@dataclass(frozen=True)
class LossConfig:
    """Loss settings. margin None = the head's usual value (ArcFace 0.5, CosFace 0.35); scale for margin
    heads; easy_margin: ArcFace's variant that keeps cos θ where cos θ <= 0; init_head: "random" or
    "imprint" (see INIT_HEADS; done by the training loop on a fresh start). teacher (not in the paper; ""
    = off): a frozen network ("dlib", "sface", or a model file) whose embedding of the WHOLE face (the
    sample's flip only) the student's embedding of the augmented face is pulled towards:
    + lambda_teacher * mean(1 - cos(f, f_teacher)); it needs the student's embedding size."""

    head: str = "linear"
    margin: float | None = None
    scale: float = 64.0
    easy_margin: bool = False
    weighted_ce: bool = True
    diversity: str = "weighted"
    lambda_div: float = 1.0
    detach_s: bool = False
    label_smoothing: float = 0.0
    init_head: str = "random"
    teacher: str = ""
    lambda_teacher: float = 1.0

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise PartialFaceError(f"loss.head: must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.diversity not in DIVERSITY_FORMS:
            raise PartialFaceError(
                f"loss.diversity: must be one of {', '.join(DIVERSITY_FORMS)}, got {self.diversity!r}"
            )
        if self.scale <= 0:
            raise PartialFaceError(f"loss.scale: must be positive, got {self.scale}")
        if self.lambda_div < 0:
            raise PartialFaceError(f"loss.lambda_div: must be >= 0, got {self.lambda_div}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise PartialFaceError(f"loss.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.margin is not None and not 0.0 <= self.margin < math.pi / 2:
            raise PartialFaceError(f"loss.margin: must be in [0, pi/2), got {self.margin}")
        if self.init_head not in INIT_HEADS:
            raise PartialFaceError(f"loss.init_head: must be one of {', '.join(INIT_HEADS)}, got {self.init_head!r}")
        if self.lambda_teacher < 0:
            raise PartialFaceError(f"loss.lambda_teacher: must be >= 0, got {self.lambda_teacher}")

    @property
    def resolved_margin(self) -> float:
        """The margin in use (the head's default when ``margin`` is None)."""
        return DEFAULT_MARGIN[self.head] if self.margin is None else float(self.margin)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LossConfig:
        """From a dict; unknown keys raise PartialFaceError listing the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PartialFaceError(f"loss: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class LossParts:
    """total: scalar to back-propagate; ce, div: its parts (div is 0 when unused);
    logits: (B, C) logits of f without margin (for accuracy), no gradient."""

    total: Tensor
    ce: Tensor
    div: Tensor
    logits: Tensor
    teacher: Tensor | None = None


# ------------------------------------------------------------------------------------------ heads
class LinearHead(nn.Linear):
    """Plain classifier: x (N, D) -> logits (N, C); ``labels`` are ignored."""

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return F.linear(x.float(), self.weight, self.bias)


class CosineHead(nn.Module):
    """Normalised-weights, normalised-features head: logits = scale · cos θ, with a target margin.

    x: (N, D), labels: (N,) or None -> (N, C). With labels the subclass's margin is applied to the target
    column; without labels (inference/accuracy) the plain scale · cos θ is returned. Runs in float32.
    """

    def __init__(self, embedding_dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        self.scale = float(scale)
        self.margin = float(margin)

    def cosine(self, x: Tensor) -> Tensor:
        """(N, D) -> cos θ (N, C) in float32."""
        return F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def target_logit(self, cos_t: Tensor) -> Tensor:
        """cos θ of the target (N,) -> its logit before scaling."""
        raise NotImplementedError

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            cos = self.cosine(x)
            if labels is None:
                return self.scale * cos
            idx = labels.long().unsqueeze(1)
            target = self.target_logit(cos.gather(1, idx).squeeze(1))
            return self.scale * cos.scatter(1, idx, target.unsqueeze(1))


class ArcFaceHead(CosineHead):
    """ArcFace: target logit s·cos(θ + m). Where θ + m would pass π (cos θ <= cos(π − m)) the usual
    fallback cos θ − m·sin(m) keeps it monotonic; ``easy_margin`` instead keeps cos θ where cos θ <= 0."""

    def __init__(
        self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.5, easy_margin: bool = False
    ) -> None:
        super().__init__(embedding_dim, num_classes, scale, margin)
        self.easy_margin = easy_margin
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def target_logit(self, cos_t: Tensor) -> Tensor:
        sin_t = (1.0 - cos_t * cos_t).clamp_min(0.0).sqrt()
        phi = cos_t * self.cos_m - sin_t * self.sin_m  # cos(θ + m)
        if self.easy_margin:
            return torch.where(cos_t > 0, phi, cos_t)
        return torch.where(cos_t > self.th, phi, cos_t - self.mm)


class CosFaceHead(CosineHead):
    """CosFace: target logit s·(cos θ − m)."""

    def target_logit(self, cos_t: Tensor) -> Tensor:
        return cos_t - self.margin


def build_head(cfg: LossConfig, num_classes: int, embedding_dim: int) -> nn.Module:
    """The shared classifier head named by ``cfg.head``."""
    if cfg.head == "linear":
        return LinearHead(embedding_dim, num_classes)
    if cfg.head == "arcface":
        return ArcFaceHead(embedding_dim, num_classes, cfg.scale, cfg.resolved_margin, cfg.easy_margin)
    return CosFaceHead(embedding_dim, num_classes, cfg.scale, cfg.resolved_margin)


# ------------------------------------------------------------------------------------------ terms
def diversity_loss(A: Tensor, s: Tensor | None = None, form: str = "weighted") -> Tensor:
    """Diversity regulariser, averaged over the batch.

    A: (B, K, H, W) attention maps (P_k = softmax of A_k over its H·W pixels); s: (B, K) importance
    (needed for "weighted"). weighted: 1 − Σ_ij max_k s_k·P_k[i,j]; unweighted: K − Σ_ij max_k P_k[i,j].
    """
    P = torch.softmax(A.float().flatten(2), dim=-1)  # (B, K, HW)
    if form == "weighted":
        if s is None:
            raise ValueError("weighted diversity needs s")
        return (1.0 - (s.float().unsqueeze(-1) * P).amax(dim=1).sum(dim=-1)).mean()
    if form == "unweighted":
        return (A.shape[1] - P.amax(dim=1).sum(dim=-1)).mean()
    raise ValueError(f"diversity form must be 'weighted' or 'unweighted', got {form!r}")


def per_map_cross_entropy(
    head: nn.Module, fk: Tensor, labels: Tensor, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The shared head applied to every f_k. fk: (B, K, D), labels: (B,) -> (CE (B, K), logits (B, K, C))."""
    B, K, D = fk.shape
    y = labels.long().repeat_interleave(K)
    logits = head(fk.reshape(B * K, D), y)
    ce = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)
    return ce.reshape(B, K), logits.reshape(B, K, -1)


class Criterion(nn.Module):
    """Loss module holding the SHARED classifier (optimise its parameters with the model's).

    forward(out: ModelOutput, labels: (B,) long, target: (B, D) teacher embeddings or None) -> LossParts.
    """

    def __init__(self, cfg: LossConfig, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = build_head(cfg, num_classes, embedding_dim)

    def forward(self, out: ModelOutput, labels: Tensor, target: Tensor | None = None) -> LossParts:
        cfg = self.cfg
        zero = out.f.new_zeros((), dtype=torch.float32)
        if out.fk is None:
            logits_f = self.head(out.f, labels)
            ce = F.cross_entropy(logits_f, labels.long(), label_smoothing=cfg.label_smoothing)
            div = zero
        else:
            ce_k, _ = per_map_cross_entropy(self.head, out.fk, labels, cfg.label_smoothing)
            s = out.s
            if s is not None and cfg.detach_s:
                s = s.detach()
            if cfg.weighted_ce:
                if s is None:
                    raise ValueError("weighted cross-entropy needs ModelOutput.s")
                ce = (s.float() * ce_k).sum(dim=1).mean()
            else:
                ce = ce_k.mean()
            if cfg.diversity != "none" and cfg.lambda_div > 0:
                if out.A is None:
                    raise ValueError("the diversity regulariser needs ModelOutput.A")
                div = diversity_loss(out.A, s, cfg.diversity)
            else:
                div = zero
        with torch.no_grad():
            logits = self.head(out.f.detach())
        total = ce + cfg.lambda_div * div
        teacher = None
        if target is not None:
            teacher = (1 - F.cosine_similarity(out.f.float(), target.float(), dim=1)).mean()
            total = total + cfg.lambda_teacher * teacher
        return LossParts(total=total, ce=ce, div=div, logits=logits, teacher=teacher)


def build_criterion(cfg: LossConfig, num_classes: int, embedding_dim: int) -> Criterion:
    """The loss module for ``num_classes`` identities and ``embedding_dim``-d embeddings."""
    if num_classes < 2:
        raise PartialFaceError(f"training data: need at least 2 identities for the classifier, got {num_classes}")
    return Criterion(cfg, num_classes, embedding_dim)
