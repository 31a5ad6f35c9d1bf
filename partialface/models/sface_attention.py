"""``ours_sface``: the paper's attention model on OpenCV Zoo's SFace (issue #15).

SFace (:mod:`partialface.models.sface`) ends in a position-specific head: its last maps (B, 1024, 7, 7) go
through ``bn1``, are flattened and projected by ``pre_fc1`` (50,176 -> 128), so each of the 49 positions has
its own 1024 -> 128 projection, and the embedding is ``fc1`` (a BatchNorm) of their sum plus the bias. A
global pooling followed by one shared projection (as dlib's head, which ``ours_dlib`` reuses) would throw
away what SFace learned about where things are. So here the feature branch ends at those per-position
contributions:

``Extract``: trunk = SFace's stages 1-4 -> (B, 512, 14, 14); feature branch = stage 5 -> (B, 1024, 7, 7),
``bn1``, dropout, then each position's slice of ``pre_fc1`` -> F (B, 128, 7, 7), with sum_ij F[:, i, j] =
``pre_fc1(flatten(bn1(.)))`` less its bias; attention branch = one 3x3 stride-2 convolution to
:data:`LIGHT_WIDTH` channels + ReLU on the trunk's 14x14 output, then the 1x1 convolution to K and a ReLU
-> A (B, K, 7, 7).
``Attend`` and ``Aggregate`` are the paper's (:mod:`partialface.models.attention`); with ``pooling: mean``
each v_k is an attention-weighted mean of the per-position contributions, and each aggregation layer starts
as 49 x SFace's ``fc1`` (with the bias folded in), so under spatially uniform maps f_k is exactly SFace's
embedding.

Cost: the per-position projection is ``pre_fc1``'s own multiply-adds; the attention branch and the K
aggregation layers add about 3 % to SFace's FLOPs at 112 px.

``ours_sface_shared`` is the same model with the paper's translation-equivariant Extract: one 1024 -> 128
projection shared by every position (a 1x1 convolution), started as the mean of SFace's 49 per-position maps,
so that F no longer depends on where a part sits and each v_k (an attention-weighted mean) only on what the
maps select. It gives SFace's embedding exactly only when stage 5's maps are spatially constant; it trades
SFace's learned layout for position-free parts (the centred protocols), at the same cost.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from partialface.errors import PartialFaceError
from partialface.models.attention import AttentionModel
from partialface.models.config import ModelConfig
from partialface.models.registry import register_model
from partialface.models.sface import DROPOUT, EMBEDDING_DIM, FEATURE_CHANNELS, HEAD_BN_EPS, INPUT_SIZE, SFaceNet

#: channels of the attention branch (one 3x3 convolution on the trunk's 512 channels)
LIGHT_WIDTH = 64
#: SFace's stage 4 output: the trunk the two branches share
TRUNK_CHANNELS = 512


class PositionProjection(nn.Module):
    """A different linear map at each position (a locally connected 1x1 layer, no bias).

    weight: (D, C, h, w). x: (B, C, h, w) -> (B, D, h, w), out[:, :, i, j] = weight[:, :, i, j] @ x[:, :, i, j].
    """

    def __init__(self, in_ch: int, out_ch: int, side: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, side, side))
        nn.init.normal_(self.weight, std=(in_ch * side * side) ** -0.5)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,dchw->bdhw", x, self.weight.to(x.dtype))


class SFaceExtract(nn.Module):
    """SFace trunk + feature branch (stage 5, bn1, dropout, per-position or shared projection) + light
    attention branch.

    x: (B, 3, 112, 112) normalised -> F: (B, D, 7, 7), A: (B, K, 7, 7) >= 0.
    """

    def __init__(self, K: int, embedding_dim: int, input_size: int = INPUT_SIZE, shared: bool = False) -> None:
        super().__init__()
        net = SFaceNet(input_size, embedding_dim)  # (checks input_size)
        stages = list(net.trunk.children())
        self.trunk = nn.Sequential(*stages[:4])
        self.stage5 = stages[4]
        self.bn1 = nn.BatchNorm2d(FEATURE_CHANNELS, eps=HEAD_BN_EPS)
        self.dropout = nn.Dropout(DROPOUT)
        self.project: nn.Module = (nn.Conv2d(FEATURE_CHANNELS, embedding_dim, 1, bias=False) if shared
                                   else PositionProjection(FEATURE_CHANNELS, embedding_dim, input_size // 16))
        conv = nn.Conv2d(TRUNK_CHANNELS, LIGHT_WIDTH, 3, stride=2, padding=1, bias=True)
        self.attention_branch = nn.Sequential(conv, nn.ReLU(inplace=False))
        self.attention_conv = nn.Conv2d(LIGHT_WIDTH, K, 1, bias=True)
        self.attention_relu = nn.ReLU(inplace=False)
        for c in (conv, self.attention_conv):
            nn.init.kaiming_normal_(c.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(c.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shared = self.trunk(x)
        F = self.project(self.dropout(self.bn1(self.stage5(shared))))
        A = self.attention_relu(self.attention_conv(self.attention_branch(shared)))
        return F, A


class SFaceAttentionModel(AttentionModel):
    """``ours_sface``: Extract on SFace, then the paper's Attend and Aggregate. x: (B, 3, 112, 112) ->
    ModelOutput(f (B, D), fk (B, K, D), s (B, K), A and A_tilde (B, K, 7, 7))."""

    extract: SFaceExtract

    def __init__(self, cfg: ModelConfig, shared: bool = False) -> None:
        super().__init__(cfg, SFaceExtract(cfg.K, cfg.embedding_dim, cfg.input_size, shared), cfg.embedding_dim)

    def trunk_modules(self) -> list[nn.Module]:
        """SFace's five conv stages: what ``sface`` freezes too."""
        return [self.extract.trunk, self.extract.stage5]

    def new_modules(self) -> list[nn.Module]:
        """The attention layers SFace has nothing to start from."""
        return [self.extract.attention_branch, self.extract.attention_conv]

    def load_pretrained(self, source: SFaceNet) -> None:
        """Trunk and stage 5 from SFace's stages, bn1 as SFace's, the per-position projection from ``pre_fc1``;
        every aggregation layer starts as SFace's ``fc1`` (eval-mode BatchNorm as an affine map) on
        (pooling "sum": K, "mean": h * w) x v_k plus ``pre_fc1``'s bias, so that f_k is SFace's embedding when
        every Â_k is spatially constant (mean pooling) or 1 (sum); needs input_size 112 and embedding_dim 128.
        A shared projection starts as the mean of the per-position ones (exact for spatially constant maps)."""
        cfg = self.config
        if (cfg.input_size, cfg.embedding_dim) != (INPUT_SIZE, EMBEDDING_DIM):
            raise PartialFaceError(f"model.pretrained: SFace's weights need model.input_size={INPUT_SIZE} and "
                                   f"model.embedding_dim={EMBEDDING_DIM} (got {cfg.input_size}, {cfg.embedding_dim})")
        ex = self.extract
        stages = list(source.trunk.children())
        for i, stage in enumerate(ex.trunk.children()):
            stage.load_state_dict(stages[i].state_dict())
        ex.stage5.load_state_dict(stages[4].state_dict())
        ex.bn1.load_state_dict(source.bn1.state_dict())
        side = cfg.input_size // 16
        with torch.no_grad():
            per_position = source.pre_fc1.weight.reshape(cfg.embedding_dim, FEATURE_CHANNELS, side, side)
            if isinstance(ex.project, nn.Conv2d):
                per_position = per_position.mean((2, 3), keepdim=True)
            weight = ex.project.weight
            assert isinstance(weight, torch.Tensor)
            weight.copy_(per_position)
            bn = source.fc1
            gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # type: ignore[operator, arg-type]
            scale = float(side * side) if cfg.pooling == "mean" else float(cfg.K)
            self.aggregate.weight.copy_(torch.diag(gain * scale).expand_as(self.aggregate.weight))
            bias = gain * (source.pre_fc1.bias - bn.running_mean) + bn.bias  # type: ignore[operator]
            self.aggregate.bias.copy_(bias.expand_as(self.aggregate.bias))


@register_model("ours_sface", framing="arcface-112")
def build_ours_sface(cfg: ModelConfig) -> SFaceAttentionModel:
    """The attention model on SFace (random init; ``model.pretrained: sface`` starts from SFace's weights, which
    need input_size 112 and embedding_dim 128): about 1.03x SFace's FLOPs."""
    return SFaceAttentionModel(cfg)


@register_model("ours_sface_shared", framing="arcface-112")
def build_ours_sface_shared(cfg: ModelConfig) -> SFaceAttentionModel:
    """``ours_sface`` with one projection shared by all positions (the paper's translation-equivariant F):
    the same cost; ``model.pretrained: sface`` starts it from SFace's weights."""
    return SFaceAttentionModel(cfg, shared=True)
