"""Inference: the processor's capabilities, inference paths (PyTorch eager / bf16, torch.compile, ONNX Runtime
float32 / int8) and the ONNX export. Sits on the models layer: imports models and data, nothing above them.
Nothing is imported until used (ONNX Runtime is loaded only by the onnx / int8 paths)."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CpuInfo": "partialface.inference.hardware",
    "cpu_info": "partialface.inference.hardware",
    "keep_freed_memory": "partialface.inference.memory",
    "CHOICES": "partialface.inference.runners",
    "EXACT": "partialface.inference.runners",
    "PATHS": "partialface.inference.runners",
    "EmbeddingOf": "partialface.inference.runners",
    "OnnxRunner": "partialface.inference.runners",
    "Runner": "partialface.inference.runners",
    "TorchRunner": "partialface.inference.runners",
    "CompiledRunner": "partialface.inference.runners",
    "choose_path": "partialface.inference.runners",
    "make_runner": "partialface.inference.runners",
    "quantize_int8": "partialface.inference.runners",
    "OPSET": "partialface.inference.onnx_export",
    "export_model_onnx": "partialface.inference.onnx_export",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'partialface.inference' has no attribute {name!r}")
