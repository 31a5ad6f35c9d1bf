"""The paper's baselines: backbone + global average pooling + Linear -> D.

``resnet50``: the full ResNet-50 (standard strides, 160 -> 5x5 maps, widths[3] channels);
``resnet41``: the truncated backbone of the attention model (conv4_x, 160 -> 20x20, widths[2] channels).
"ResNet-50 (no finetune)" is ``resnet50`` trained on holistic faces only: a training option, not a model.
"""

from __future__ import annotations

from torch import Tensor, nn

from partialface.models.base import FaceModel
from partialface.models.config import ModelConfig
from partialface.models.outputs import ModelOutput
from partialface.models.registry import register_model
from partialface.models.resnet import ResNet


class GAPEmbedding(FaceModel):
    """ResNet backbone -> GAP -> Linear(C -> D). x: (B, 3, H, W) -> ModelOutput(f=(B, D))."""

    def __init__(self, cfg: ModelConfig, num_stages: int, truncated: bool) -> None:
        super().__init__(cfg)
        self.backbone = ResNet(cfg, num_stages=num_stages, truncated=truncated)
        self.fc = nn.Linear(self.backbone.out_channels, cfg.embedding_dim)

    def forward_features(self, x: Tensor) -> Tensor:
        """The backbone's final maps: (B, C, h, w)."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(f=self.fc(self.backbone(x).mean(dim=(2, 3))))


@register_model("resnet50")
def build_resnet50(cfg: ModelConfig) -> GAPEmbedding:
    """Full ResNet-50 (all four stages, standard strides) + GAP + Linear."""
    return GAPEmbedding(cfg, num_stages=4, truncated=False)


@register_model("resnet41")
def build_resnet41(cfg: ModelConfig) -> GAPEmbedding:
    """Truncated ResNet ("ResNet-41": up to conv4_x, conv4_stride) + GAP + Linear."""
    return GAPEmbedding(cfg, num_stages=3, truncated=True)
