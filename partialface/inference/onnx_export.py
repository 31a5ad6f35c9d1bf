"""ONNX export of the registered models: one graph, dynamic batch, every output of ``ModelOutput`` by name.

The graph's input ``x`` is (B, 3, S, S) float32 normalised as the models expect (``(img - 127.5) / 128``,
:func:`partialface.models.preprocess`), S = the model's ``input_size``; its outputs are the non-None fields
of the model's ``ModelOutput`` in the order of :data:`OUTPUTS` (``f`` (B, D) always; the attention models add
``fk`` (B, K, D), ``s`` (B, K), ``A`` and ``A_tilde`` (B, K, h, w)). Written by PyTorch's TorchScript-based
exporter at opset :data:`OPSET`; the file's metadata (``metadata_props``) records the model config, input
size, framing and normalisation, so that a loader needs nothing else.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from partialface.models.config import LEGACY_FRAMING, ModelConfig
from partialface.models.framing import framing_of

#: the ONNX opset of every export (ONNX Runtime >= 1.12 runs it on CPU and CUDA)
OPSET = 17
#: ModelOutput fields, in the order the graph's outputs follow
OUTPUTS = ("f", "fk", "s", "A", "A_tilde")
#: the input normalisation every exported graph expects (recorded in the file)
NORMALISATION = "(x - 127.5) / 128"


class NamedOutputs(nn.Module):
    """``model(x)`` (a ModelOutput) as a tuple of the fields ``names``: x (B, 3, S, S) -> tuple of tensors."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, tuple(names)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        return tuple(getattr(out, n) for n in self.names)


def output_names(model: nn.Module, input_size: int) -> list[str]:
    """The non-None ModelOutput fields of ``model`` (one forward of a zero image, on the model's device)."""
    p = next(iter(model.parameters()), None)
    x = torch.zeros(1, 3, input_size, input_size, device=p.device if p is not None else "cpu")
    with torch.inference_mode():
        out = model.eval()(x)
    return [n for n in OUTPUTS if getattr(out, n, None) is not None]


def export_forms(module: nn.Module, hook: str = "export_form") -> nn.Module:
    """``module``, or a copy of it in which every submodule that has a ``hook()`` method (an exact rewrite of
    itself: ``export_form`` for ONNX Runtime, e.g. SFace's conv + BN + PReLU; ``compile_form`` for inductor) is
    replaced by what it returns."""
    if not any(hasattr(m, hook) for m in module.modules()):
        return module
    module = copy.deepcopy(module)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if hasattr(child, hook):
                setattr(parent, name, cast(Callable[[], nn.Module], getattr(child, hook))())
            else:
                swap(child)

    swap(module)
    return module


def export_bytes(
    module: nn.Module, input_size: int, names: Sequence[str], metadata: dict[str, str] | None = None,
    opset: int = OPSET, forms: bool = True,
) -> bytes:
    """Export ``module`` (x (B, 3, S, S) -> a tensor or a tuple of tensors named ``names``) to ONNX bytes, batch
    dimension dynamic, ``metadata`` stored as the model's metadata_props, in :func:`export_forms` unless
    ``forms`` is False. Runs on CPU in float32."""
    import onnx

    module = export_forms(module.eval()) if forms else module.eval()
    p = next(iter(module.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    x = torch.zeros(2, 3, input_size, input_size, device=device)  # batch 2: nothing may specialise on 1
    axes = {"x": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on shape-dependent Python code (static here)
        warnings.simplefilter("ignore")
        torch.onnx.export(  # a file object works (the TorchScript exporter writes to it); the stubs say path
            module, (x,), buf,  # type: ignore[arg-type]
            input_names=["x"], output_names=list(names), dynamic_axes=axes,
            opset_version=opset, dynamo=False, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in {"input_size": str(input_size), "normalisation": NORMALISATION, **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return proto.SerializeToString()


def export_model_onnx(
    model: nn.Module, out: str | os.PathLike[str] | None = None, input_size: int | None = None, opset: int = OPSET,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Export a registered model (a FaceModel with ``config``) with all its outputs at ``input_size`` (default:
    the config's); written atomically to ``out`` when given. Returns the ONNX bytes."""
    from partialface.data.images import atomic_write_bytes

    cfg = getattr(model, "config", None)
    input_size = int(input_size or getattr(cfg, "input_size", None) or 160)
    names = output_names(model, input_size)
    meta = {"model_config": json.dumps(cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else {}),
            "framing": framing_of(cfg) if isinstance(cfg, ModelConfig) else LEGACY_FRAMING,
            "model_name": str(getattr(cfg, "name", "")), "embedding_dim": str(getattr(model, "embedding_dim", 0)),
            "producer": "partialface", **(metadata or {})}
    data = export_bytes(NamedOutputs(model, names), input_size, names, meta, opset)
    if out is not None:
        atomic_write_bytes(Path(out), data)
    return data


__all__ = ["NORMALISATION", "OPSET", "OUTPUTS", "NamedOutputs", "export_bytes", "export_model_onnx", "output_names"]
