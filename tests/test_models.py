"""Models: shapes, the Attend/Aggregate arithmetic against naive loops, published ResNet-50 facts,
registry, configs, preprocessing and the ``models`` subcommand."""

from __future__ import annotations

import argparse
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from partialface.errors import PartialFaceError
from partialface.models import (
    Aggregate,
    Attend,
    AttentionModel,
    Bottleneck,
    FaceModel,
    ModelConfig,
    ModelOutput,
    create_model,
    list_models,
    preprocess,
    register_model,
)
from partialface.models.summary import count_parameters, flops_per_image, summarize


def ours(cfg_or_name: ModelConfig | str = "ours", **overrides: Any) -> AttentionModel:
    """create_model for the attention model, typed."""
    model = create_model(cfg_or_name, **overrides)
    assert isinstance(model, AttentionModel)
    return model


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def naive_attend(F_: torch.Tensor, A: torch.Tensor, pooling: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference Attend in float64 with explicit loops. F_: (B, C, H, W), A: (B, K, H, W)."""
    F_, A = F_.double(), A.double()
    B, C, H, W = F_.shape
    K = A.shape[1]
    A_hat = sigmoid(A)
    g = torch.zeros(B, K, dtype=torch.float64)
    for k in range(K):
        g[:, k] = A_hat[:, k].sum(dim=(1, 2)) / (H * W)
    e = torch.exp(g)
    s = e / e.sum(dim=1, keepdim=True)
    A_tilde = torch.zeros_like(A_hat)
    v = torch.zeros(B, K, C, dtype=torch.float64)
    for b in range(B):
        for k in range(K):
            A_tilde[b, k] = s[b, k] * A_hat[b, k]
            for i in range(H):
                for j in range(W):
                    v[b, k] += A_tilde[b, k, i, j] * F_[b, :, i, j]
            if pooling == "mean":
                v[b, k] /= A_tilde[b, k].sum()
    return v, s, A_tilde


# ------------------------------------------------------------------------------ shapes / geometry
def test_paper_attention_model_shapes() -> None:
    torch.manual_seed(0)
    model = ours(preset="paper").eval()
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        F_, A = model.extract(x)
        out = model(x)
    assert F_.shape == (1, 1024, 20, 20)
    assert A.shape == (1, 12, 20, 20)
    assert out.f.shape == (1, 256) and out.fk is not None and out.fk.shape == (1, 12, 256)
    assert out.s is not None and out.s.shape == (1, 12)
    assert out.A is not None and out.A.shape == (1, 12, 20, 20) and bool((out.A >= 0).all())
    assert torch.allclose(out.s.sum(dim=1), torch.ones(1), atol=1e-6)
    assert torch.allclose(out.f, out.fk.mean(dim=1), atol=1e-5)
    # Four stride-2 ops would give 160/16 = 10: 20 holds because conv4_x does not down-sample.
    # The two conv4_x copies are separate modules with separate weights.
    assert model.extract.feature_branch is not model.extract.attention_branch
    w_f = next(model.extract.feature_branch.parameters())
    w_a = next(model.extract.attention_branch.parameters())
    assert w_f.shape == w_a.shape and not torch.equal(w_f, w_a)


@pytest.mark.parametrize("preset", ["cpu", "tiny"])
def test_preset_attention_model_shapes(preset: str) -> None:
    cfg = ModelConfig.preset(preset)
    model = ours(cfg).eval()
    x = torch.randn(2, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        F_, A = model.extract(x)
        out = model(x)
    side = 20 if preset == "cpu" else 8  # cpu keeps the paper geometry; tiny is 64 -> 8
    assert F_.shape == (2, cfg.widths[2], side, side)
    assert A.shape == (2, cfg.K, side, side)
    assert out.f.shape == (2, cfg.embedding_dim)
    assert out.s is not None and torch.allclose(out.s.sum(dim=1), torch.ones(2), atol=1e-6)
    assert cfg.map_size() == side


@pytest.mark.parametrize(("name", "side", "channels"), [("resnet50", 5, 2048), ("resnet41", 20, 1024)])
def test_baseline_final_maps_paper(name: str, side: int, channels: int) -> None:
    # meta device: real shape propagation through every op, without memory or compute
    with torch.device("meta"):
        model = create_model(name, preset="paper")
    maps = model.forward_features(torch.empty(1, 3, 160, 160, device="meta"))
    assert tuple(maps.shape) == (1, channels, side, side)
    assert model.config.map_size(truncated=name != "resnet50") == side


@pytest.mark.parametrize(("name", "side"), [("resnet50", 5), ("resnet41", 20)])
def test_baseline_final_maps_cpu_preset_real(name: str, side: int) -> None:
    model = create_model(name, preset="cpu").eval()
    with torch.no_grad():
        maps = model.forward_features(torch.randn(2, 3, 160, 160))
        out = model(torch.randn(2, 3, 160, 160))
    assert maps.shape[-2:] == (side, side)
    assert out.f.shape == (2, 256) and out.fk is None and out.s is None and out.A is None


def test_downsampling_options() -> None:
    # conv4_stride=2 restores the 4th down-sampling (10x10); dropping the stem pool instead gives 20x20.
    for overrides, side in [({"conv4_stride": 2}, 10), ({"conv4_stride": 2, "stem_pool": False}, 20)]:
        cfg = ModelConfig.preset("cpu", **overrides)
        with torch.device("meta"):
            model = ours(cfg)
        F_, A = model.extract(torch.empty(1, 3, 160, 160, device="meta"))
        assert F_.shape[-1] == side and A.shape[-1] == side and cfg.map_size() == side


def test_resnet50_matches_published_counts() -> None:
    """torchvision's ResNet-50 (v1.5): 25,557,032 parameters and 4.09 GMACs at 224x224, both including
    the Linear(2048 -> 1000) head (2,049,000 parameters, 2,048,000 MACs). Ours has Linear(2048 -> 256)."""
    cfg = ModelConfig.preset("paper", name="resnet50", input_size=224)
    with torch.device("meta"):
        model = create_model(cfg)
    head_params = 2048 * 256 + 256
    assert count_parameters(model) - head_params == 25_557_032 - 2_049_000
    macs_backbone = flops_per_image(model, 224) / 2 - 2048 * 256
    assert macs_backbone == pytest.approx(4.09e9 - 2.048e6, rel=3e-3)
    # 160x160 scales the conv work by (160/224)^2 (all maps are 5/7 the size): about 2.09 GMACs.
    macs_160 = flops_per_image(model, 160) / 2 - 2048 * 256
    assert macs_160 == pytest.approx(macs_backbone * (160 / 224) ** 2, rel=0.02)


def test_resnet41_is_resnet50_without_conv5() -> None:
    """41 weighted layers: conv1 + 3 x (3 + 4 + 6) bottleneck convs + the final Linear."""
    with torch.device("meta"):
        model = create_model("resnet41", preset="paper")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    bottlenecks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(bottlenecks) == 3 + 4 + 6
    assert 1 + 3 * len(bottlenecks) + 1 == 41
    assert len(convs) == 1 + len(bottlenecks)  # stem 7x7 + one 3x3 per bottleneck


def test_zero_init_residual_option() -> None:
    for flag in (True, False):
        model = ours(preset="tiny", zero_init_residual=flag)
        gammas = [m.bn3.weight for m in model.modules() if isinstance(m, Bottleneck)]
        assert gammas
        expected = 0.0 if flag else 1.0
        assert all(bool((g == expected).all()) for g in gammas)


# ------------------------------------------------------------------------------ Attend / Aggregate
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_attend_against_naive_loops(pooling: str) -> None:
    torch.manual_seed(1)
    F_ = torch.randn(2, 5, 3, 4)
    A = torch.relu(torch.randn(2, 3, 3, 4) * 2)
    v, s, A_tilde = Attend(pooling)(F_, A)
    v_ref, s_ref, At_ref = naive_attend(F_, A, pooling)
    assert torch.allclose(s.double(), s_ref, atol=1e-6)
    assert torch.allclose(s.sum(dim=1), torch.ones(2), atol=1e-6)
    assert torch.allclose(A_tilde.double(), At_ref, atol=1e-6)
    assert torch.allclose(v.double(), v_ref, atol=1e-5)


def test_attend_pooling_by_hand() -> None:
    """One channel, 1x2 map, K = 1 (s = 1): A = (0, ln 3) -> Â = (1/2, 3/4); F = (2, 6).
    sum: 1/2*2 + 3/4*6 = 5.5; mean: 5.5 / (1/2 + 3/4) = 4.4."""
    F_ = torch.tensor([[[[2.0, 6.0]]]])
    A = torch.tensor([[[[0.0, math.log(3.0)]]]])
    v_sum, s, _ = Attend("sum")(F_, A)
    v_mean, _, _ = Attend("mean")(F_, A)
    assert s.item() == pytest.approx(1.0)
    assert v_sum.item() == pytest.approx(5.5, abs=1e-6)
    assert v_mean.item() == pytest.approx(4.4, abs=1e-6)


def test_attend_importance_by_hand() -> None:
    """K = 2 maps of 1 pixel: A = (0, ln 3) -> GAP(Â) = (1/2, 3/4); s = softmax = (1, e^{1/4}) / (1 + e^{1/4})."""
    A = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])
    s, A_tilde = Attend().recalibrate(A)
    z = 1 + math.exp(0.25)
    assert s[0].tolist() == pytest.approx([1 / z, math.exp(0.25) / z], abs=1e-6)
    assert A_tilde.flatten().tolist() == pytest.approx([0.5 / z, 0.75 * math.exp(0.25) / z], abs=1e-6)


def test_importance_temperature_by_hand_and_its_bound() -> None:
    """s = softmax(GAP(Â) / T): the by-hand pair above at T = 1/4 is (1, e) / (1 + e). With the paper's T = 1,
    maps saturated at Â -> 0 and Â -> 1 give at most s_max / s_min = e; T = 0.1 lets them reach e^10."""
    A = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])
    s, _ = Attend(temperature=0.25).recalibrate(A)
    assert s[0].tolist() == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)], abs=1e-6)
    extreme = torch.tensor([[[[-40.0]], [[40.0]]]])  # Â = (~0, ~1)
    for T, ratio in ((1.0, math.e), (0.1, math.exp(10))):
        s, _ = Attend(temperature=T).recalibrate(extreme)
        assert (s[0, 1] / s[0, 0]).item() == pytest.approx(ratio, rel=1e-4)
    m = ours(preset="tiny", s_temperature=0.5)
    assert m.attend.temperature == 0.5 and ours(preset="tiny").attend.temperature == 1.0  # the paper's by default
    with pytest.raises(PartialFaceError, match=r"model\.s_temperature"):
        ModelConfig(s_temperature=0)


def test_uniform_mix_by_hand() -> None:
    """The by-hand mean pooling above (v = 4.4, GAP(F) = 4): β = 1/4 gives 3/4 * 4.4 + 1/4 * 4 = 4.3; β = 1 is
    GAP(F) whatever the maps; Ã stays the attention's. Only with mean pooling; 0 is the paper's default."""
    F_ = torch.tensor([[[[2.0, 6.0]]]])
    A = torch.tensor([[[[0.0, math.log(3.0)]]]])
    v, _, A_tilde = Attend("mean", uniform_mix=0.25)(F_, A)
    assert v.item() == pytest.approx(4.3, abs=1e-6)
    assert A_tilde.flatten().tolist() == pytest.approx([0.5, 0.75], abs=1e-6)
    v, _, _ = Attend("mean", uniform_mix=1.0)(F_, torch.randn(1, 3, 1, 2))
    assert v.flatten().tolist() == pytest.approx([4.0] * 3, abs=1e-6)
    assert ours(preset="tiny").attend.uniform_mix == 0.0
    assert ours(preset="tiny", pooling="mean", uniform_mix=0.5).attend.uniform_mix == 0.5
    with pytest.raises(PartialFaceError, match=r"model\.uniform_mix.*pooling=mean"):
        ModelConfig(uniform_mix=0.5)
    with pytest.raises(PartialFaceError, match=r"model\.uniform_mix"):
        ModelConfig(pooling="mean", uniform_mix=1.5)


def test_aggregate_is_k_separate_linears() -> None:
    torch.manual_seed(2)
    agg = Aggregate(K=3, in_features=6, out_features=4)
    v = torch.randn(5, 3, 6)
    f, fk = agg(v)
    for k in range(3):
        ref = F.linear(v[:, k], agg.weight[k], agg.bias[k])
        assert torch.allclose(fk[:, k], ref, atol=1e-6)
    assert torch.allclose(f, fk.mean(dim=1), atol=1e-6)
    # not shared: the K layers have different weights
    assert not torch.equal(agg.weight[0], agg.weight[1])


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_model_wiring_against_naive_reference(pooling: str) -> None:
    """The whole model: Ã from A, v from F and Ã (naive loops), f_k = k-th Linear(v_k), f = mean f_k."""
    torch.manual_seed(3)
    model = ours(preset="tiny", pooling=pooling, zero_init_residual=False).eval()
    assert isinstance(model, AttentionModel)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        F_ = model.forward_features(x)
    assert out.A is not None and out.s is not None and out.A_tilde is not None and out.fk is not None
    v_ref, s_ref, At_ref = naive_attend(F_, out.A, pooling)
    assert torch.allclose(out.s.double(), s_ref, atol=1e-6)
    assert torch.allclose(out.A_tilde.double(), s_ref[:, :, None, None] * sigmoid(out.A.double()), atol=1e-6)
    assert torch.allclose(out.A_tilde.double(), At_ref, atol=1e-6)
    W, b = model.aggregate.weight.double(), model.aggregate.bias.double()
    for k in range(model.config.K):
        ref = v_ref[:, k] @ W[k].T + b[k]
        assert torch.allclose(out.fk[:, k].double(), ref, rtol=1e-4, atol=1e-4)
    assert torch.allclose(out.f, out.fk.mean(dim=1), atol=1e-6)


def test_channels_last_gives_same_output() -> None:
    torch.manual_seed(4)
    model = ours(preset="tiny", zero_init_residual=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out.f, ref.f, atol=1e-4)
    assert out.A is not None and ref.A is not None and torch.allclose(out.A, ref.A, atol=1e-4)


def test_bf16_autocast_forward_runs() -> None:
    model = ours(preset="tiny").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 64, 64))
    assert out.s is not None and out.s.dtype == torch.float32
    assert torch.isfinite(out.f.float()).all()


# ------------------------------------------------------------------------------ preprocess
def test_preprocess_nhwc_and_nchw() -> None:
    img = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    img[0, 0, 1] = torch.tensor([0, 128, 255], dtype=torch.uint8)
    x = preprocess(img)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    assert x[0, :, 0, 1].tolist() == pytest.approx([-127.5 / 128, 0.5 / 128, 127.5 / 128])
    assert torch.equal(preprocess(img.permute(0, 3, 1, 2)), x)
    with pytest.raises(ValueError):
        preprocess(torch.zeros(2, 2, 3, dtype=torch.uint8))


# ------------------------------------------------------------------------------ registry / config
def test_registry_builds_every_model() -> None:
    names = list_models()
    assert {"ours", "resnet50", "resnet41"} <= set(names)
    for name in names:
        model = create_model(name, preset="tiny").eval()
        assert model.config.name == name and model.embedding_dim == 32
        with torch.no_grad():
            out = model(torch.randn(2, 3, 64, 64))
        assert isinstance(out, ModelOutput) and out.f.shape == (2, 32)


def test_registry_unknown_name_lists_known() -> None:
    with pytest.raises(PartialFaceError) as e:
        create_model("resnet18")
    msg = str(e.value)
    assert "resnet18" in msg and all(n in msg for n in ("ours", "resnet41", "resnet50"))


def test_register_model_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("ours")(FaceModel)


def test_create_model_from_config_with_overrides() -> None:
    cfg = ModelConfig.preset("tiny")
    model = ours(cfg, K=3, pooling="mean")
    assert model.config.K == 3 and model.attend.pooling == "mean"
    assert model.aggregate.weight.shape == (3, 32, 64)


def test_config_presets_and_round_trip() -> None:
    paper = ModelConfig.preset("paper")
    assert paper.widths == (256, 512, 1024, 2048) and paper.blocks == (3, 4, 6, 3)
    assert (paper.input_size, paper.K, paper.embedding_dim, paper.pooling) == (160, 12, 256, "sum")
    cpu = ModelConfig.preset("cpu")
    assert cpu.input_size == 160 and cpu.map_size() == 20 and cpu.K == 12
    d = cpu.to_dict()
    assert isinstance(d["widths"], list)
    assert ModelConfig.from_dict(d) == cpu
    assert ModelConfig.from_dict({"preset": "tiny", "K": 6}) == ModelConfig.preset("tiny", K=6)
    with pytest.raises(PartialFaceError, match="nonsense"):
        ModelConfig.from_dict({"nonsense": 1})
    with pytest.raises(PartialFaceError, match="known presets: paper, cpu, tiny"):
        ModelConfig.preset("huge")
    with pytest.raises(PartialFaceError, match=r"model\.pooling"):
        ModelConfig(pooling="max")
    with pytest.raises(PartialFaceError, match=r"model\.expansion"):
        ModelConfig(widths=(30, 64, 128, 256))


# ------------------------------------------------------------------------------ summary / CLI
def test_summary_and_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from partialface.jobs import models as cli

    row = summarize(ModelConfig.preset("cpu"))
    assert (row.maps, row.channels, row.input_size) == (20, 128, 160)
    assert row.params == count_parameters(ours(preset="cpu"))
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    assert cli.run(parser.parse_args(["--presets", "tiny"])) == 0
    text = capsys.readouterr().out
    for name in ("ours", "resnet41", "resnet50"):
        assert name in text
    lines = text.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model"))
    # every column starts where the header's does, however long a model's name ("dlib_resnet")
    preset_col = lines[header].index("preset")
    end = next(i for i, line in enumerate(lines) if line.startswith("FLOPs"))
    rows = [line for line in lines[header + 2 : end] if line.strip()]
    assert rows and all(line[preset_col:].startswith("tiny") for line in rows), rows
    # then the shipped models by name, the facade's default marked
    from partialface.models.catalogue import CATALOGUE, DEFAULT_MODEL

    shipped = lines[end + 1 :]
    assert any(line.startswith(f"* {DEFAULT_MODEL} ") and "(operating points)" in line for line in shipped)
    assert all(any(f" {name} " in line for line in shipped) for name in CATALOGUE)
    with pytest.raises(PartialFaceError, match="registered models"):
        cli.run(parser.parse_args(["--models", "vgg"]))
