"""``ours_dlib`` and ``ours_dlib_light``: the paper's attention model on dlib's pretrained face ResNet.

Where the attention acts: on the benchmark's 160x160 aligned faces dlib's network gives 38x38 maps after
its 32-channel stage, 19x19 after the 64-channel stage, 9x9 after the 128-channel stage and 4x4 / 2x2
after the two 256-channel stages, whose output dlib averages and projects (fc 256 -> 128) to its
descriptor. The attention model needs one feature map with a spatial grid, so the shared trunk ends after
the 128-channel stage (9x9), and the feature branch is dlib's two 256-channel stages run *à trous*: every
stride-2 block runs at stride 1 and the layers after it dilate by 2 (then 4), so the branch computes
dlib's 256-channel features densely, at all 9x9 positions, with the receptive fields of the pretrained
weights (:class:`DilatedDlibBlock`). The attention branch is a dilated copy of the first 256-channel
stage, followed by the 1x1 convolution to K maps. Each of the K aggregation layers starts as dlib's fc,
so before any training every f_k, and f, are dlib's projection of attention-pooled dlib features.

Why this grid: on the 300 held-out CelebA identities (never LFW), with uniform pooling and dlib's fc and
no training, the dense 256-channel features at 9x9 verify as well as dlib itself (84.5 vs 84.1 %), the
same made dense from the 128-channel stage on (19x19) lose 3.5 points, and the 128-channel features at
19x19 (a first design) held too little identity for the new layers to learn from in a short fine-tune.

``ours_dlib_light`` (issue #13: an attention model that costs about what dlib's network costs): the trunk is
dlib's network up to its first 256-channel stage at dlib's own strides (4x4 maps for a 150 px chip), the
feature branch only the last 256-channel stage, run densely at 4x4 (F is dlib's final features on that
grid), and the attention branch one 3x3 convolution to 64 channels + ReLU on the trunk's output, then the
1x1 convolution to K: 1.08x dlib_resnet's FLOPs at 150 px, where ``ours_dlib`` costs 2.6x.

``dlib_dense`` (the control for ``ours_dlib_light``): the same trunk and dense feature branch, no attention:
f = dlib's fc of the mean of F over the 4x4 grid. It is ``ours_dlib_light`` with every map uniform, so the two
differ only by the attention (docs/history/results.md: dlib's weights run this way gain 2-3 points on the centred
protocols over dlib's own 2x2 pooling, without any training).

Shapes (160x160 input, K maps, D = ``cfg.embedding_dim``):
``Extract``: trunk (stem, stages 0-2) -> (B, 128, 9, 9); feature branch -> F (B, 256, 9, 9); attention
branch -> 1x1 conv to K -> ReLU -> A (B, K, 9, 9). ``Attend`` and ``Aggregate`` are the paper's
(partialface.models.attention): v (B, K, 256) -> f_k (B, K, D) -> f (B, D).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partialface.errors import PartialFaceError
from partialface.models.attention import AttentionModel
from partialface.models.base import FaceModel
from partialface.models.config import ModelConfig
from partialface.models.dlib_resnet import STAGE_CHANNELS, DlibBlock, DlibResNet, zero_padded_add
from partialface.models.outputs import ModelOutput
from partialface.models.registry import register_model

#: the trunk ends after stages[TRUNK_STAGES - 1] (the 128-channel stage); the feature branch is the rest
TRUNK_STAGES = 3
#: channels of ``ours_dlib_light``'s attention branch (one 3x3 convolution on the trunk's 256 channels)
LIGHT_WIDTH = 64
#: stages[:FROZEN_STAGES] (and the stem) are frozen during ``optim.freeze_trunk_epochs``: as for dlib_resnet
FROZEN_STAGES = 2


class DilatedDlibBlock(nn.Module):
    """A :class:`DlibBlock` evaluated densely on a grid dilated by ``dilation`` (the same parameters).

    Where the strided network's map is sampled every ``dilation`` positions, this block's output sampled
    at every ``out_dilation`` positions is the strided block's output, away from the bottom/right border
    (there dlib pads with zeros where the dense map has values). A down-sampling block runs at stride 1:
    conv1 dilated (its padding at the bottom/right, as dlib's unpadded stride-2 conv), the 2x2 average
    shortcut dilated, and conv2 dilated twice as much. x: (B, in_ch, h, w) -> (B, out_ch, h, w).
    """

    def __init__(self, block: DlibBlock, dilation: int = 1) -> None:
        super().__init__()
        self.down, self.dilation = block.down, dilation
        self.out_dilation = 2 * dilation if block.down else dilation
        self.conv1, self.affine1 = copy.deepcopy(block.conv1), copy.deepcopy(block.affine1)
        self.conv2, self.affine2 = copy.deepcopy(block.conv2), copy.deepcopy(block.affine2)
        d, d2 = dilation, self.out_dilation
        self.conv1.stride, self.conv1.dilation = (1, 1), (d, d)
        self.conv1.padding = (0, 0) if block.down else (d, d)
        self.conv2.dilation, self.conv2.padding = (d2, d2), (d2, d2)

    def forward(self, x: Tensor) -> Tensor:
        d = self.dilation
        if self.down:
            y = self.conv1(F.pad(x, (0, 2 * d, 0, 2 * d)))
            p = F.pad(x, (0, d, 0, d))
            shortcut = (p[..., :-d, :-d] + p[..., :-d, d:] + p[..., d:, :-d] + p[..., d:, d:]) * 0.25
        else:
            y, shortcut = self.conv1(x), x
        y = self.affine2(self.conv2(F.relu(self.affine1(y))))
        return F.relu(zero_padded_add(y, shortcut))


def dilated_stages(stages: Iterable[nn.Module]) -> nn.Sequential:
    """Copies of consecutive dlib stages run densely (see :class:`DilatedDlibBlock`), as one flat sequence of
    blocks: (B, C_in, h, w) -> (B, C_out, h, w)."""
    blocks: list[DilatedDlibBlock] = []
    d = 1
    for stage in stages:
        for block in stage.children():
            assert isinstance(block, DlibBlock)
            blocks.append(DilatedDlibBlock(block, d))
            d = blocks[-1].out_dilation
    return nn.Sequential(*blocks)


class DlibExtract(nn.Module):
    """dlib trunk + dense feature branch + attention branch. x: (B, 3, H, W) (registry input) ->
    F: (B, 256, h, w), A: (B, K, h, w) >= 0.

    ``trunk_stages``: the shared trunk ends after that many of dlib's stages: 3 (``ours_dlib``) = the
    128-channel stage, h = w = 9 for a 160 input (8 for 150); 4 (``ours_dlib_light``) = the first 256-channel
    stage, h = w = 4. The feature branch is dlib's remaining stages run densely on that grid. The attention
    branch is a dense copy of the first 256-channel stage (``light`` False), or ``light``: a 3x3 convolution
    to :data:`LIGHT_WIDTH` channels + ReLU on the trunk's output; then the 1x1 convolution to K and a ReLU.
    """

    def __init__(self, K: int, trunk_stages: int = TRUNK_STAGES, light: bool = False) -> None:
        super().__init__()
        base = DlibResNet(ModelConfig(name="dlib_resnet", embedding_dim=128))
        stages = list(base.stages)
        self.trunk_stages, self.light = trunk_stages, light
        self.input_adapter = base.input_adapter
        self.trunk = nn.Sequential(base.stem, *stages[:trunk_stages])
        self.feature_branch = dilated_stages(stages[trunk_stages:])
        width = STAGE_CHANNELS[-1]
        if light:
            conv = nn.Conv2d(STAGE_CHANNELS[trunk_stages], LIGHT_WIDTH, 3, padding=1, bias=True)
            _init_relu_conv(conv)
            self.attention_branch: nn.Module = nn.Sequential(conv, nn.ReLU(inplace=False))
            width = LIGHT_WIDTH
        else:
            self.attention_branch = dilated_stages(stages[trunk_stages : trunk_stages + 1])
        self.attention_conv = nn.Conv2d(width, K, 1, bias=True)
        self.attention_relu = nn.ReLU(inplace=False)
        _init_relu_conv(self.attention_conv)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shared = self.trunk(self.input_adapter(x))
        F = self.feature_branch(shared)
        A = self.attention_relu(self.attention_conv(self.attention_branch(shared)))
        return F, A


def _check_fc(source: DlibResNet, dim: int, what: str) -> None:
    """PartialFaceError naming model.embedding_dim unless ``dim`` is the size of dlib's descriptor."""
    if source.fc.out_features != dim:
        raise PartialFaceError(
            f"model.embedding_dim: {what} dlib's fc 256 -> {source.fc.out_features}; "
            f"set model.embedding_dim={source.fc.out_features} (got {dim})"
        )


def _copy_dlib_layers(source: DlibResNet, input_adapter: nn.Module, trunk: nn.Sequential,
                      dense: list[tuple[nn.Module, int, int]]) -> None:
    """dlib's input adapter, stem and first ``len(trunk) - 1`` stages into ``trunk``; for each (branch, first, end)
    the blocks of ``source.stages[first:end]`` into the dense blocks of ``branch``, in order."""
    input_adapter.load_state_dict(source.input_adapter.state_dict())
    trunk[0].load_state_dict(source.stem.state_dict())
    for i in range(len(trunk) - 1):
        trunk[i + 1].load_state_dict(source.stages[i].state_dict())
    for branch, first, end in dense:
        blocks = [b for stage in list(source.stages)[first:end] for b in stage.children()]
        for block_dense, block in zip(branch.children(), blocks, strict=True):
            block_dense.load_state_dict(block.state_dict())


def _init_relu_conv(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]


class DlibAttentionModel(AttentionModel):
    """``ours_dlib``: Extract on dlib's network, then the paper's Attend and Aggregate. x: (B, 3, H, W) ->
    ModelOutput(f (B, D), fk (B, K, D), s (B, K), A and A_tilde (B, K, h, w))."""

    extract: DlibExtract

    def __init__(self, cfg: ModelConfig, trunk_stages: int = TRUNK_STAGES, light: bool = False) -> None:
        super().__init__(cfg, DlibExtract(cfg.K, trunk_stages, light), STAGE_CHANNELS[-1])

    def trunk_modules(self) -> list[nn.Module]:
        """dlib's stem and 32- and 64-channel stages: the layers dlib_resnet freezes too."""
        return list(self.extract.trunk)[: FROZEN_STAGES + 1]

    def new_modules(self) -> list[nn.Module]:
        """The attention convolutions dlib has nothing to start from: the 1x1 one (and the light branch)."""
        light = [self.extract.attention_branch] if self.extract.light else []
        return [*light, self.extract.attention_conv]

    def load_pretrained(self, source: DlibResNet) -> None:
        """Trunk from dlib's stem and first stages, the feature branch from the remaining stages, the (dense)
        attention branch from the first stage after the trunk, each aggregation layer from dlib's fc."""
        _check_fc(source, self.embedding_dim, "ours_dlib's aggregation starts from")
        ex = self.extract
        t = ex.trunk_stages
        branches: list[tuple[nn.Module, int, int]] = [(ex.feature_branch, t, len(source.stages))]
        if not ex.light:
            branches.append((ex.attention_branch, t, t + 1))
        _copy_dlib_layers(source, ex.input_adapter, ex.trunk, branches)
        with torch.no_grad():
            self.aggregate.weight.copy_(source.fc.weight.expand_as(self.aggregate.weight))
            self.aggregate.bias.zero_()


@register_model("ours_dlib", framing="dlib-chip")
def build_ours_dlib(cfg: ModelConfig) -> DlibAttentionModel:
    """The attention model on dlib's ResNet (random init; ``model.pretrained: dlib`` starts from dlib's weights)."""
    return DlibAttentionModel(cfg)


@register_model("ours_dlib_light", framing="dlib-chip")
def build_ours_dlib_light(cfg: ModelConfig) -> DlibAttentionModel:
    """The attention model on dlib's ResNet at its own 4x4 grid (after the first 256-channel stage), with a light
    attention branch: about 1.07x dlib_resnet's FLOPs where ours_dlib costs 2.6x (150 px)."""
    return DlibAttentionModel(cfg, trunk_stages=4, light=True)


class DlibDense(FaceModel):
    """``dlib_dense``: dlib's network with its last 256-channel stage run densely (4x4 maps for a 150 px chip, where
    dlib's are 2x2), averaged and projected by dlib's fc. x: (B, 3, H, W) -> ModelOutput(f (B, D))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        base = DlibResNet(ModelConfig(name="dlib_resnet", embedding_dim=cfg.embedding_dim))
        stages = list(base.stages)
        self.input_adapter = base.input_adapter
        self.trunk = nn.Sequential(base.stem, *stages[:4])
        self.feature_branch = dilated_stages(stages[4:])
        self.fc = base.fc

    def forward_features(self, x: Tensor) -> Tensor:
        """F: (B, 256, h, w), dlib's final features on the dense grid."""
        return self.feature_branch(self.trunk(self.input_adapter(x)))

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(f=self.fc(self.forward_features(x).mean(dim=(2, 3))))

    def trunk_modules(self) -> list[nn.Module]:
        """dlib's stem and 32- and 64-channel stages: the layers dlib_resnet freezes too."""
        return list(self.trunk)[: FROZEN_STAGES + 1]

    def load_pretrained(self, source: DlibResNet) -> None:
        """Every layer from its dlib counterpart (the dense blocks take the strided blocks' weights)."""
        _check_fc(source, self.embedding_dim, "dlib_dense takes")
        _copy_dlib_layers(source, self.input_adapter, self.trunk, [(self.feature_branch, 4, len(source.stages))])
        self.fc.load_state_dict(source.fc.state_dict())


@register_model("dlib_dense", framing="dlib-chip")
def build_dlib_dense(cfg: ModelConfig) -> DlibDense:
    """dlib's network with its last stage dense (4x4): ours_dlib_light without the attention, its control."""
    return DlibDense(cfg)
