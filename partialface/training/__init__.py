"""Training: config (YAML + overrides), data, partial-face augmentation, the loop, checkpoints, DDP.

Public entry points: ``TrainConfig``, ``train(cfg, resume=False)``, ``load_model(path)``,
``augment_batch`` / ``sample_params``, ``pack_dataset``. Imports are lazy (nothing heavy at import time).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "augment_batch", "load_model", "pack_dataset", "sample_params", "train"]

_WHERE = {
    "TrainConfig": "partialface.training.config",
    "train": "partialface.training.loop",
    "load_model": "partialface.training.checkpoint",
    "augment_batch": "partialface.training.augment",
    "sample_params": "partialface.training.augment",
    "pack_dataset": "partialface.training.data",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
