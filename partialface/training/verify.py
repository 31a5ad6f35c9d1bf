"""Held-out verification during training, and the embeddings it needs: L2-normalised f of uint8 faces,
whole or cut into partial faces by fixed augmentation rows; classifier rows imprinted from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from partialface.devices import autocast
from partialface.models import FaceModel, ModelConfig
from partialface.models.framing import framing_of, to_model_input
from partialface.training.augment import augment_batch
from partialface.training.data import Split, VerifyPairs


@torch.no_grad()
def embed(
    model: nn.Module,
    images: Tensor,
    input_size: int,
    device: torch.device,
    amp: str,
    batch: int = 128,
    params: np.ndarray | None = None,
    channels_last: bool = False,
    runner: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """L2-normalised embeddings f of uint8 faces (N, 160, 160, 3) (optionally augmented with fixed
    rows ``params`` (N, N_PARAMS) first) -> (N, D) float32 on the CPU. The model must be in eval mode.
    ``runner``: model input (B, 3, S, S) -> f (B, D) in place of ``model`` (see :func:`fast_runner`). Faces are
    framed as the model's config says (``partialface.models.framing``)."""
    cfg = getattr(model, "config", None)
    framing = framing_of(cfg) if isinstance(cfg, ModelConfig) else "resize"
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device)
        if params is not None:
            x, _ = augment_batch(x, params[i : i + batch])
        x = to_model_input(x, input_size, channels_last, framing)
        if runner is not None:
            f = runner(x)
        else:
            with autocast(device, amp):
                f = model(x).f
        out.append(torch.nn.functional.normalize(f.float(), dim=1).cpu())
    return torch.cat(out)


def fast_runner(model: nn.Module, device: torch.device, amp: str, input_size: int) -> Callable[[Tensor], Tensor] | None:
    """The benchmark's auto path for held-out checks of a float32 run: ONNX Runtime on a snapshot of the model
    (the same numbers to float rounding, 1.5-2.8x eager on CPU: docs/history/benchmarks.md), or None (use the model:
    under autocast, or where ONNX Runtime does not run on ``device``)."""
    import copy

    from partialface.inference.runners import EmbeddingOf, choose_path, make_runner

    if amp != "none" or choose_path("auto", device) != "onnx":
        return None
    return make_runner(EmbeddingOf(copy.deepcopy(model).float().eval()), "onnx", device, input_size)


@torch.no_grad()
def imprint_head(
    model: FaceModel, head: nn.Module, split: Split, input_size: int, device: torch.device, amp: str,
    channels_last: bool = False, batch: int = 128, progress: bool = True,
) -> None:
    """Set classifier row c to the L2-normalised mean of the normalised embeddings f of identity c's training
    faces (whole, no augmentation) under ``model``: head.weight (C, D); a bias, if any, is zeroed."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(split.classes), model.embedding_dim, dtype=torch.float64)
    index, labels = split.train_index, torch.from_numpy(split.train_labels)
    for i in tqdm(range(0, len(index), batch), desc="imprint", unit="batch", disable=not progress, leave=False):
        images = torch.from_numpy(np.stack([split.source.load(int(j)) for j in index[i : i + batch]]))
        f = embed(model, images, input_size, device, amp, batch=batch, channels_last=channels_last)
        sums.index_add_(0, labels[i : i + batch], f.double())
    weight = head.weight
    assert isinstance(weight, torch.Tensor)
    weight.copy_(torch.nn.functional.normalize(sums, dim=1).to(weight.dtype))
    bias = getattr(head, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.zero_()
    model.train(was_training)


def verify(
    model: nn.Module, pairs: VerifyPairs, input_size: int, device: torch.device, amp: str, channels_last: bool = False,
    fast: bool = True,
) -> dict[str, Any]:
    """Held-out check: accuracy (%) of cosine scores, holistic and with the second image partial.

    With >= 20 pairs: 10-fold accuracy (threshold chosen off the test fold, partialface.metrics);
    otherwise the best-threshold accuracy on the pairs themselves (optimistic; ``method`` says which).
    ``fast``: embed through :func:`fast_runner` where it applies."""
    from partialface.metrics import best_threshold, tenfold_accuracy

    runner = fast_runner(model, device, amp, input_size) if fast else None
    emb = embed(model, pairs.images, input_size, device, amp, channels_last=channels_last, runner=runner)
    second = embed(model, pairs.images[pairs.b], input_size, device, amp, params=pairs.partial,
                   channels_last=channels_last, runner=runner)
    hol = (emb[pairs.a] * emb[pairs.b]).sum(1).numpy()
    par = (emb[pairs.a] * second).sum(1).numpy()
    if len(pairs.same) >= 20:
        folds = np.arange(len(pairs.same)) % 10
        h = tenfold_accuracy(hol, pairs.same, folds)[0]
        p = tenfold_accuracy(par, pairs.same, folds)[0]
        method = "10-fold"
    else:
        h = best_threshold(hol, pairs.same)[1] * 100
        p = best_threshold(par, pairs.same)[1] * 100
        method = "best-threshold"
    out: dict[str, Any] = {"pairs": len(pairs.same), "holistic_acc": float(h), "partial_acc": float(p),
                           "method": method}
    return out | importance_range(model, pairs.images[:256], input_size, device, amp, channels_last)


@torch.no_grad()
def importance_range(
    model: nn.Module, images: Tensor, input_size: int, device: torch.device, amp: str, channels_last: bool = False,
) -> dict[str, float]:
    """How far the importance weights s (B, K) are from uniform on whole faces (N, 160, 160, 3) uint8:
    {"s_min", "s_max"} = the means over faces of min_k s and max_k s (both 1/K when uniform); {} for models
    without s. The model must be in eval mode."""
    cfg = getattr(model, "config", None)
    framing = framing_of(cfg) if isinstance(cfg, ModelConfig) else "resize"
    x = to_model_input(images.to(device), input_size, channels_last, framing)
    with autocast(device, amp):
        s = model(x).s
    if s is None:
        return {}
    s = s.float()
    return {"s_min": float(s.min(1).values.mean()), "s_max": float(s.max(1).values.mean())}

