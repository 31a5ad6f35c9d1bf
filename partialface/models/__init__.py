"""Models: the attention model ("ours"), the ResNet baselines, their registry and configs.

Input convention: every model takes ``preprocess(images)`` = ``(x - 127.5) / 128`` as (B, 3, H, W) float
and returns a :class:`ModelOutput`.
"""

from partialface.models.attention import Aggregate, Attend, AttentionModel, Extract
from partialface.models.base import FaceModel
from partialface.models.baselines import GAPEmbedding
from partialface.models.config import ModelConfig
from partialface.models.outputs import ModelOutput, preprocess
from partialface.models.registry import create_model, list_models, register_model
from partialface.models.resnet import Bottleneck, ResNet, Stem, make_stage

__all__ = [
    "Aggregate",
    "Attend",
    "AttentionModel",
    "Bottleneck",
    "Extract",
    "FaceModel",
    "GAPEmbedding",
    "ModelConfig",
    "ModelOutput",
    "ResNet",
    "Stem",
    "create_model",
    "list_models",
    "make_stage",
    "preprocess",
    "register_model",
]
