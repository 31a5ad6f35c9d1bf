"""Losses on hand-built inputs: diversity values, weighted CE against per-k cross-entropies, gradient
flow into both branches, margin heads against hand-computed angles."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from partialface.errors import PartialFaceError
from partialface.losses import (
    ArcFaceHead,
    CosFaceHead,
    LossConfig,
    build_criterion,
    diversity_loss,
)
from partialface.models import AttentionModel, ModelOutput, create_model


def ours(**overrides: Any) -> AttentionModel:
    """The attention model (typed), preset and overrides as for create_model."""
    model = create_model("ours", **overrides)
    assert isinstance(model, AttentionModel)
    return model


def one_hot_maps(B: int, K: int, H: int, W: int, pixels: list[int], peak: float = 100.0) -> torch.Tensor:
    """A_k = ``peak`` at pixel ``pixels[k]`` (row-major), 0 elsewhere: softmax P_k is one-hot to ~e^-100."""
    A = torch.zeros(B, K, H * W)
    for k, p in enumerate(pixels):
        A[:, k, p] = peak
    return A.reshape(B, K, H, W)


# ------------------------------------------------------------------------------ diversity
def test_diversity_disjoint_one_hot_maps_is_zero() -> None:
    s = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    A = one_hot_maps(2, 4, 3, 3, pixels=[0, 4, 7, 8])
    # weighted: 1 - sum_k s_k * 1 = 0; unweighted: K - K = 0
    assert diversity_loss(A, s, "weighted").item() == pytest.approx(0.0, abs=1e-6)
    assert diversity_loss(A, None, "unweighted").item() == pytest.approx(0.0, abs=1e-6)


def test_diversity_identical_maps_hand_values() -> None:
    s = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    torch.manual_seed(0)
    a = torch.randn(1, 1, 3, 3)
    A = a.expand(1, 4, 3, 3).clone()
    # identical P: sum_ij max_k s_k P[ij] = max_k s_k * sum_ij P = 0.4 -> weighted = 0.6; unweighted = 4 - 1 = 3
    assert diversity_loss(A, s, "weighted").item() == pytest.approx(0.6, abs=1e-6)
    assert diversity_loss(A, None, "unweighted").item() == pytest.approx(3.0, abs=1e-6)
    # one-hot identical maps give the same values (P identical whatever its shape)
    A1 = one_hot_maps(1, 4, 3, 3, pixels=[5, 5, 5, 5])
    assert diversity_loss(A1, s, "weighted").item() == pytest.approx(0.6, abs=1e-6)


def test_diversity_partial_overlap_by_hand() -> None:
    """K = 2 on a 2x2 map: P_1 one-hot at pixel 0, P_2 uniform (A_2 = 0 -> 1/4 each), s = (1/2, 1/2).
    weighted: sum_ij max = 1/2 + 3 * 1/8 = 7/8 -> 1/8; unweighted: 1 + 3 * 1/4 = 7/4 -> 2 - 7/4 = 1/4."""
    A = one_hot_maps(1, 2, 2, 2, pixels=[0])
    A[:, 1] = 0.0
    s = torch.tensor([[0.5, 0.5]])
    assert diversity_loss(A, s, "weighted").item() == pytest.approx(1 / 8, abs=1e-6)
    assert diversity_loss(A, None, "unweighted").item() == pytest.approx(1 / 4, abs=1e-6)


def test_diversity_averages_over_batch() -> None:
    s = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    A = torch.cat([one_hot_maps(1, 4, 3, 3, [0, 1, 2, 3]), one_hot_maps(1, 4, 3, 3, [6, 6, 6, 6])])
    assert diversity_loss(A, s, "weighted").item() == pytest.approx((0.0 + 0.6) / 2, abs=1e-6)
    assert diversity_loss(A, None, "unweighted").item() == pytest.approx((0.0 + 3.0) / 2, abs=1e-6)


# ------------------------------------------------------------------------------ weighted CE
def _random_output(B: int = 4, K: int = 3, D: int = 5, H: int = 2) -> ModelOutput:
    torch.manual_seed(0)
    fk = torch.randn(B, K, D, requires_grad=True)
    s = torch.softmax(torch.randn(B, K), dim=1).requires_grad_(True)
    A = torch.relu(torch.randn(B, K, H, H))
    return ModelOutput(f=fk.mean(dim=1), fk=fk, s=s, A=A, A_tilde=None)


def test_weighted_ce_equals_sum_of_s_times_per_k_ce() -> None:
    out = _random_output()
    y = torch.tensor([0, 2, 1, 6])
    crit = build_criterion(LossConfig(diversity="none"), num_classes=7, embedding_dim=5)
    parts = crit(out, y)
    head = crit.head
    assert out.fk is not None and out.s is not None
    per_k = torch.stack([F.cross_entropy(head(out.fk[:, k]), y, reduction="none") for k in range(3)], dim=1)
    expected = (out.s * per_k).sum(dim=1).mean()
    assert parts.ce.item() == pytest.approx(expected.item(), abs=1e-6)
    assert parts.total.item() == pytest.approx(expected.item(), abs=1e-6)
    assert parts.div.item() == 0.0
    # logits for accuracy are those of f
    assert torch.allclose(parts.logits, head(out.f), atol=1e-6)
    # the classifier is shared: one weight matrix (C, D)
    assert [p.shape for p in crit.parameters()] == [torch.Size([7, 5]), torch.Size([7])]

    unweighted = build_criterion(LossConfig(weighted_ce=False, diversity="none"), 7, 5)
    unweighted.load_state_dict(crit.state_dict())
    assert unweighted(out, y).ce.item() == pytest.approx(per_k.mean().item(), abs=1e-6)


def test_total_combines_ce_and_diversity() -> None:
    out = _random_output()
    y = torch.tensor([0, 1, 2, 3])
    crit = build_criterion(LossConfig(diversity="weighted", lambda_div=0.5), 4, 5)
    parts = crit(out, y)
    assert out.A is not None
    div = diversity_loss(out.A, out.s, "weighted")
    assert parts.div.item() == pytest.approx(div.item(), abs=1e-6) and parts.div.item() > 0
    assert parts.total.item() == pytest.approx(parts.ce.item() + 0.5 * div.item(), abs=1e-6)


def test_detach_s() -> None:
    y = torch.tensor([0, 1, 2, 3])
    for detach in (False, True):
        out = _random_output()
        assert out.s is not None
        build_criterion(LossConfig(detach_s=detach), 4, 5)(out, y).total.backward()
        assert (out.s.grad is None) is detach
        if not detach:
            assert out.s.grad is not None and out.s.grad.abs().sum() > 0


def test_baseline_plain_cross_entropy() -> None:
    torch.manual_seed(1)
    f = torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    crit = build_criterion(LossConfig(label_smoothing=0.1), 3, 5)
    parts = crit(ModelOutput(f=f), y)
    expected = F.cross_entropy(crit.head(f), y, label_smoothing=0.1)
    assert parts.ce.item() == pytest.approx(expected.item(), abs=1e-6)
    assert parts.div.item() == 0.0 and parts.total.item() == pytest.approx(expected.item(), abs=1e-6)


# ------------------------------------------------------------------------------ gradient flow
def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_gradients_reach_both_branches() -> None:
    torch.manual_seed(2)
    model = ours(preset="tiny", zero_init_residual=False).train()
    crit = build_criterion(LossConfig(), 10, model.embedding_dim)
    x = torch.randn(4, 3, 64, 64)
    y = torch.tensor([1, 2, 3, 4])
    crit(model(x), y).total.backward()
    ex = model.extract
    for name, module in [
        ("trunk", ex.trunk),
        ("feature_branch", ex.feature_branch),
        ("attention_branch", ex.attention_branch),
        ("attention_conv", ex.attention_conv),
        ("aggregate", model.aggregate),
        ("head", crit.head),
    ]:
        assert all(p.grad is not None for p in module.parameters()), name
        assert _grad_norm(module) > 0, name


def test_diversity_alone_trains_only_the_attention_side() -> None:
    torch.manual_seed(3)
    model = ours(preset="tiny", zero_init_residual=False).train()
    out = model(torch.randn(4, 3, 64, 64))
    assert out.A is not None
    diversity_loss(out.A, out.s, "weighted").backward()
    assert _grad_norm(model.extract.attention_branch) > 0 and _grad_norm(model.extract.attention_conv) > 0
    assert all(p.grad is None for p in model.extract.feature_branch.parameters())
    assert all(p.grad is None for p in model.aggregate.parameters())


# ------------------------------------------------------------------------------ margin heads
def _unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def test_margin_heads_with_zero_margin_are_scaled_cosine() -> None:
    torch.manual_seed(4)
    x = torch.randn(5, 8)
    y = torch.tensor([0, 1, 2, 3, 0])
    for head in (ArcFaceHead(8, 4, scale=30.0, margin=0.0), CosFaceHead(8, 4, scale=30.0, margin=0.0)):
        cos = (x / x.norm(dim=1, keepdim=True)) @ (head.weight / head.weight.norm(dim=1, keepdim=True)).T
        assert torch.allclose(head(x, y), 30.0 * cos, atol=1e-4)
        assert torch.allclose(head(x), 30.0 * cos, atol=1e-4)


def test_arcface_target_logit_hand_angle() -> None:
    head = ArcFaceHead(2, 2, scale=64.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([_unit(0.0), _unit(1.2)]) * 3.0)  # norms must not matter
    x = torch.tensor([_unit(0.6)]) * 7.0
    logits = head(x, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(64.0 * math.cos(0.6 + 0.5), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(64.0 * math.cos(0.6), abs=1e-4)  # |1.2 - 0.6|, no margin
    # without labels: no margin at all
    assert head(x)[0, 0].item() == pytest.approx(64.0 * math.cos(0.6), abs=1e-4)


def test_arcface_threshold_and_easy_margin() -> None:
    # θ = 2.9 > π - m: θ + m would pass π; the usual fallback is cos θ - m·sin(m) (insightface's th / mm).
    theta, m = 2.9, 0.5
    x = torch.tensor([_unit(theta)])
    w = torch.tensor([_unit(0.0), _unit(1.0)])
    hard = ArcFaceHead(2, 2, scale=1.0, margin=m)
    easy = ArcFaceHead(2, 2, scale=1.0, margin=m, easy_margin=True)
    with torch.no_grad():
        hard.weight.copy_(w)
        easy.weight.copy_(w)
    y = torch.tensor([0])
    assert hard(x, y)[0, 0].item() == pytest.approx(math.cos(theta) - m * math.sin(m), abs=1e-5)
    assert easy(x, y)[0, 0].item() == pytest.approx(math.cos(theta), abs=1e-5)  # cos θ <= 0: unchanged
    x2 = torch.tensor([_unit(0.3)])
    assert easy(x2, y)[0, 0].item() == pytest.approx(math.cos(0.8), abs=1e-5)


def test_cosface_target_logit() -> None:
    head = CosFaceHead(2, 2, scale=30.0, margin=0.35)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([_unit(0.0), _unit(2.0)]))
    logits = head(torch.tensor([_unit(0.7)]), torch.tensor([1]))
    assert logits[0, 1].item() == pytest.approx(30.0 * (math.cos(1.3) - 0.35), abs=1e-4)
    assert logits[0, 0].item() == pytest.approx(30.0 * math.cos(0.7), abs=1e-4)


@pytest.mark.parametrize("head", ["arcface", "cosface"])
def test_margin_heads_in_criterion_for_every_model(head: str) -> None:
    torch.manual_seed(5)
    y = torch.tensor([0, 1, 2, 3])
    for name in ("ours", "resnet41"):
        model = create_model(name, preset="tiny")
        crit = build_criterion(LossConfig(head=head), 4, model.embedding_dim)
        out = model(torch.randn(4, 3, 64, 64))
        parts = crit(out, y)
        assert parts.logits.shape == (4, 4) and torch.isfinite(parts.total)
        if out.fk is not None:  # ours: the margin head is applied to every f_k, weighted by s
            assert out.s is not None
            per_k = torch.stack(
                [F.cross_entropy(crit.head(out.fk[:, k], y), y, reduction="none") for k in range(out.fk.shape[1])], 1
            )
            assert parts.ce.item() == pytest.approx((out.s * per_k).sum(1).mean().item(), rel=1e-5)


# ------------------------------------------------------------------------------ config
def test_loss_config_validation() -> None:
    assert LossConfig().resolved_margin == 0.0
    assert LossConfig(head="arcface").resolved_margin == 0.5
    assert LossConfig(head="cosface").resolved_margin == 0.35
    assert LossConfig.from_dict(LossConfig(head="cosface", lambda_div=0.3).to_dict()).lambda_div == 0.3
    with pytest.raises(PartialFaceError, match=r"loss\.head"):
        LossConfig(head="softmax")
    with pytest.raises(PartialFaceError, match=r"loss\.diversity"):
        LossConfig(diversity="max")
    with pytest.raises(PartialFaceError, match="lambda"):
        LossConfig.from_dict({"lambda": 1.0})
    with pytest.raises(PartialFaceError, match="at least 2 identities"):
        build_criterion(LossConfig(), 1, 8)
