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


def _source_kind(spec: str) -> str:
    """Whose weights ``spec`` names: "sface" (the name, or an .onnx file) or "dlib" (the name, .dat, .safetensors)."""
    return "sface" if spec == "sface" or Path(spec).suffix == ".onnx" else "dlib"


#: the pretrained networks each model can start from
_TAKES = {
    "dlib": ("dlib_resnet", "dlib_dense", "ours_dlib", "ours_dlib_light"),
    "sface": ("sface", "ours_sface", "ours_sface_shared"),
}


def _loader_and_file(model: FaceModel, spec: str) -> tuple[object, Path]:
    """``model.load_pretrained`` and the weights file of ``spec`` (PartialFaceError if either is missing)."""
    kind = _source_kind(spec)
    loader = getattr(model, "load_pretrained", None)
    if loader is None or model.config.name not in _TAKES[kind]:
        raise PartialFaceError(
            f"model.pretrained: model {model.config.name!r} cannot start from {kind}'s weights; "
            f"use {' or '.join(_TAKES[kind])}, or leave model.pretrained empty"
        )
    if kind == "sface":
        from partialface.models.sface import resolve_sface_file

        return loader, resolve_sface_file(spec)
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
    or its .dat; "sface" (OpenCV Zoo's SFace from the sface extra) or a path to its .onnx file. The model must
    know how to take them (``load_pretrained``: the dlib models, ``sface``).
    """
    if not spec:
        return
    loader, file = _loader_and_file(model, spec)
    if _source_kind(spec) == "sface":
        from partialface.models.sface import SFaceNet

        loader(SFaceNet.from_onnx(file))  # type: ignore[operator]
        return
    from partialface.models.dlib_resnet import load_dlib_resnet

    loader(load_dlib_resnet(file))  # type: ignore[operator]


def interpolate_pretrained(model: FaceModel, alpha: float, spec: str | None = None) -> int:
    """Weight-space ensembling of a fine-tuned model with the network it started from (WiSE-FT, Wortsman et
    al., CVPR 2022; not in the paper): theta <- (1 - alpha) * theta_pretrained + alpha * theta, in place, for
    every floating-point tensor that ``load_pretrained`` fills from ``spec`` (default: ``model.config.pretrained``).
    The layers of ``model.new_modules()`` have nothing to start from and keep their fine-tuned weights.
    alpha = 1 leaves the model as it is; alpha = 0 gives the pretrained network (with the new layers as trained).
    Returns the number of tensors interpolated."""
    if not 0.0 <= alpha <= 1.0:
        raise PartialFaceError(f"--alpha: must lie in [0, 1] (1 = the fine-tuned model), got {alpha}")
    spec = spec or model.config.pretrained
    if not spec:
        raise PartialFaceError(f"model {model.config.name!r} did not start from pretrained weights "
                               "(no model.pretrained in its config): name them (--pretrained dlib or sface)")
    from partialface.models.registry import create_model

    start = create_model(model.config)
    init_pretrained(start, spec)
    new = {id(t) for m in model.new_modules() for t in m.state_dict(keep_vars=True).values()}
    reference = start.state_dict()
    n = 0
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if id(t) in new or not t.is_floating_point():
                continue
            t.copy_(torch.lerp(reference[name].to(t), t, alpha))
            n += 1
    return n
