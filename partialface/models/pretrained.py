"""Starting a model from pretrained weights (``model.pretrained`` in a training config).

Only new training runs use it: a checkpoint already holds every weight, so loading one never needs the
pretrained source (nor its optional extra).
"""

from __future__ import annotations

from pathlib import Path

import torch

from partialface.errors import PartialFaceError
from partialface.models.base import FaceModel
from partialface.models.config import ModelConfig


def _loader_and_file(model: FaceModel, spec: str) -> tuple[object, Path]:
    """``model.load_pretrained`` and the weights file of ``spec`` (PartialFaceError if either is missing)."""
    loader = getattr(model, "load_pretrained", None)
    if loader is None:
        raise PartialFaceError(
            f"model.pretrained: model {model.config.name!r} cannot start from dlib's weights; "
            "use dlib_resnet or ours_dlib, or leave model.pretrained empty"
        )
    from partialface.models.dlib_resnet import resolve_weights

    return loader, resolve_weights(None if spec == "dlib" else spec, option="model.pretrained")


def check_model(cfg: ModelConfig) -> None:
    """Fail before the long work: the model of ``cfg`` builds (on the meta device: no memory, no compute) and,
    with ``cfg.pretrained``, can take those weights, whose file exists. PartialFaceError naming the option."""
    from partialface.models.registry import create_model

    with torch.device("meta"):
        model = create_model(cfg)
    if cfg.pretrained:
        _loader_and_file(model, cfg.pretrained)


def init_pretrained(model: FaceModel, spec: str) -> None:
    """Load the pretrained weights named by ``spec`` into ``model`` (in place); "" does nothing.

    ``spec``: "dlib" (dlib's face ResNet from the installed extra) or a path to its converted .safetensors
    or its .dat. The model must know how to take them (``load_pretrained``: ``dlib_resnet``, ``ours_dlib``).
    """
    if not spec:
        return
    loader, file = _loader_and_file(model, spec)
    from partialface.models.dlib_resnet import load_dlib_resnet

    loader(load_dlib_resnet(file))  # type: ignore[operator]
