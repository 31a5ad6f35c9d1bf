"""Starting a model from pretrained weights (``model.pretrained`` in a training config).

Only new training runs use it: a checkpoint already holds every weight, so loading one never needs the
pretrained source (nor its optional extra).
"""

from __future__ import annotations

from partialface.errors import PartialFaceError
from partialface.models.base import FaceModel


def init_pretrained(model: FaceModel, spec: str) -> None:
    """Load the pretrained weights named by ``spec`` into ``model`` (in place); "" does nothing.

    ``spec``: "dlib" (dlib's face ResNet from the installed extra) or a path to its converted .safetensors
    or its .dat. The model must know how to take them (``load_pretrained``: ``dlib_resnet``, ``ours_dlib``).
    """
    if not spec:
        return
    loader = getattr(model, "load_pretrained", None)
    if loader is None:
        raise PartialFaceError(
            f"model.pretrained: model {model.config.name!r} cannot start from dlib's weights; "
            "use dlib_resnet or ours_dlib, or leave model.pretrained empty"
        )
    from partialface.models.dlib_resnet import load_dlib_resnet

    loader(load_dlib_resnet(None if spec == "dlib" else spec))
