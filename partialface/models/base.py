"""The common base class of every registered model."""

from __future__ import annotations

from torch import Tensor, nn

from partialface.models.config import ModelConfig
from partialface.models.outputs import ModelOutput


class FaceModel(nn.Module):
    """A face-embedding model: ``forward(x: (B, 3, H, W)) -> ModelOutput``.

    Attributes: ``config`` (its ModelConfig), ``embedding_dim`` (size D of ``f``) and ``has_attention``
    (whether ``forward`` gives the importance weights ``s`` and maps ``A_tilde``).
    """

    config: ModelConfig
    embedding_dim: int
    has_attention: bool = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embedding_dim = cfg.embedding_dim

    def forward_features(self, x: Tensor) -> Tensor:
        """The backbone's final feature maps (B, C, h, w)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> ModelOutput:
        raise NotImplementedError

    def trunk_modules(self) -> list[nn.Module]:
        """The pretrained trunk that ``optim.freeze_trunk_epochs`` keeps frozen (none by default)."""
        return []

    def new_modules(self) -> list[nn.Module]:
        """Layers that start from random weights although ``load_pretrained`` fills the rest: they train at
        ``optim.new_lr_mult`` x the learning rate when ``model.pretrained`` is set (none by default)."""
        return []
