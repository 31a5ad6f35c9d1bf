"""``ours_dlib``: the paper's attention model on dlib's pretrained face ResNet.

Which stage: on the benchmark's 160x160 aligned faces dlib's network gives 38x38 maps after its 32-channel
stage, 19x19 after the 64-channel stage, 9x9 after the 128-channel stage and 4x4 / 2x2 after the two
256-channel stages. The paper's design needs a ~20x20 grid (spec: "only three spatial down-samplings"),
so the shared trunk ends after the 64-channel stage (19x19), and each branch is a copy of the
128-channel stage with its down-sampling removed — the same move as the spec's default of giving
conv4_x's first block stride 1. With stride 1 the first block's 3x3 convolution pads by 1 (dlib's rule for
stride 1) and its shortcut is the identity, zero-padded from 64 to 128 channels (dlib's ``add_prev``); every
weight keeps its pretrained shape, so both branches start from dlib's 128-channel stage.

Shapes (160x160 input, K maps, D = ``cfg.embedding_dim``):
``Extract``: trunk (stem, stages 0-1) -> (B, 64, 19, 19); feature branch -> F (B, 128, 19, 19);
attention branch -> 1x1 conv to K -> ReLU -> A (B, K, 19, 19). ``Attend`` and ``Aggregate`` are the
paper's (partialface.models.attention): v (B, K, 128) -> f_k (B, K, D) -> f (B, D).
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from partialface.models.attention import AttentionModel
from partialface.models.config import ModelConfig
from partialface.models.dlib_resnet import STAGE_CHANNELS, DlibBlock, DlibResNet
from partialface.models.registry import register_model

#: the trunk ends after stages[TRUNK_STAGES - 1] (the 64-channel stage); the branches copy stages[TRUNK_STAGES]
TRUNK_STAGES = 2


def without_downsampling(stage: nn.Module) -> nn.Module:
    """A copy of a dlib stage whose down-sampling block runs at stride 1 (3x3 conv padded by 1, identity
    shortcut zero-padded in channels). Same parameters, same shapes: (B, C_in, h, w) -> (B, C_out, h, w)."""
    out = copy.deepcopy(stage)
    first = next(iter(out.children()))
    assert isinstance(first, DlibBlock)
    if first.down:
        first.down = False
        first.conv1.stride = (1, 1)
        first.conv1.padding = (1, 1)
    return out


class DlibExtract(nn.Module):
    """dlib trunk + feature branch + attention branch. x: (B, 3, H, W) (registry input) ->
    F: (B, 128, h, w), A: (B, K, h, w) >= 0, with h = w = 19 for a 160 input."""

    def __init__(self, K: int) -> None:
        super().__init__()
        base = DlibResNet(ModelConfig(name="dlib_resnet", embedding_dim=128))
        self.input_adapter = base.input_adapter
        self.trunk = nn.Sequential(base.stem, *list(base.stages)[:TRUNK_STAGES])
        self.feature_branch = without_downsampling(base.stages[TRUNK_STAGES])
        self.attention_branch = without_downsampling(base.stages[TRUNK_STAGES])
        channels = STAGE_CHANNELS[TRUNK_STAGES + 1]
        self.attention_conv = nn.Conv2d(channels, K, 1, bias=True)
        self.attention_relu = nn.ReLU(inplace=False)
        nn.init.kaiming_normal_(self.attention_conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.attention_conv.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shared = self.trunk(self.input_adapter(x))
        F = self.feature_branch(shared)
        A = self.attention_relu(self.attention_conv(self.attention_branch(shared)))
        return F, A


class DlibAttentionModel(AttentionModel):
    """``ours_dlib``: Extract on dlib's network, then the paper's Attend and Aggregate. x: (B, 3, H, W) ->
    ModelOutput(f (B, D), fk (B, K, D), s (B, K), A and A_tilde (B, K, h, w))."""

    extract: DlibExtract

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, DlibExtract(cfg.K), STAGE_CHANNELS[TRUNK_STAGES + 1])

    def trunk_modules(self) -> list[nn.Module]:
        return [self.extract.trunk]

    def new_modules(self) -> list[nn.Module]:
        """The 1x1 attention convolution and the K aggregation layers: dlib has nothing to start them from."""
        return [self.extract.attention_conv, self.aggregate]

    def load_pretrained(self, source: DlibResNet) -> None:
        """Trunk from dlib's stem and first stages; both branches from its 128-channel stage."""
        self.extract.input_adapter.load_state_dict(source.input_adapter.state_dict())
        self.extract.trunk[0].load_state_dict(source.stem.state_dict())
        for i in range(TRUNK_STAGES):
            self.extract.trunk[i + 1].load_state_dict(source.stages[i].state_dict())
        for branch in (self.extract.feature_branch, self.extract.attention_branch):
            branch.load_state_dict(source.stages[TRUNK_STAGES].state_dict())


@register_model("ours_dlib")
def build_ours_dlib(cfg: ModelConfig) -> DlibAttentionModel:
    """The attention model on dlib's ResNet (random init; ``model.pretrained: dlib`` starts from dlib's weights)."""
    return DlibAttentionModel(cfg)
