"""Model registry (like timm's): ``register_model``, ``create_model``, ``list_models``.

Builders take a :class:`ModelConfig` and return a :class:`FaceModel` (an ``nn.Module`` whose ``forward``
gives a ModelOutput, with the attributes ``config`` and ``embedding_dim``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from partialface.errors import PartialFaceError
from partialface.models.base import FaceModel
from partialface.models.config import ModelConfig

Builder = Callable[[ModelConfig], FaceModel]
B = TypeVar("B", bound=Builder)

_REGISTRY: dict[str, Builder] = {}
_FRAMING: dict[str, str] = {}
_BUILTIN_MODULES = (
    "partialface.models.attention",
    "partialface.models.baselines",
    "partialface.models.dlib_resnet",
    "partialface.models.dlib_attention",
    "partialface.models.sface",
    "partialface.models.sface_attention",
)


def register_model(name: str, framing: str = "resize") -> Callable[[B], B]:
    """Decorator: register ``fn(cfg: ModelConfig) -> FaceModel`` under ``name`` (names are unique), with the
    model's own framing (what ``ModelConfig.framing = "auto"`` means for it; partialface.models.framing)."""

    def deco(fn: B) -> B:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        _FRAMING[name] = framing
        return fn

    return deco


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def registered_framing(name: str) -> str:
    """The registered model's own framing ("resize" for a name not registered: it fails when built)."""
    _load_builtin()
    return _FRAMING.get(name, "resize")


def create_model(cfg_or_name: ModelConfig | str, *, preset: str | None = None, **overrides: Any) -> FaceModel:
    """Build a registered model.

    ``create_model("ours", preset="cpu", K=8)``: the named model with a preset (default "paper") and
    field overrides; ``create_model(cfg, **overrides)``: from a ModelConfig (``cfg.name`` picks the model).
    Unknown names raise PartialFaceError listing the registered ones.
    """
    if isinstance(cfg_or_name, ModelConfig):
        if preset is not None:
            raise ValueError("create_model: give either a ModelConfig or a preset name, not both")
        cfg = cfg_or_name.replace(**overrides) if overrides else cfg_or_name
    else:
        cfg = ModelConfig.preset(preset or "paper", name=cfg_or_name, **overrides)
    names = list_models()
    if cfg.name not in _REGISTRY:
        raise PartialFaceError(f"model.name: unknown model {cfg.name!r}; registered models: {', '.join(names)}")
    return _REGISTRY[cfg.name](cfg)
