"""Device choice shared by every command: one rule, one set of user-facing messages."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from partialface.errors import PartialFaceError


def resolve_device(device: str, option: str = "--device", local_rank: int | None = None) -> torch.device:
    """'auto' -> CUDA when available, else CPU; otherwise a cpu / cuda / cuda:N device string.

    ``local_rank`` (torchrun) picks cuda:local_rank for a bare "cuda". ``option`` names the setting in errors.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PartialFaceError(f"{option} {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise PartialFaceError(f"{option} {device}: only cpu and cuda are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PartialFaceError(f"{option} {device}: CUDA is not available here; use cpu")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA with bf16, or a CPU with AMX or AVX512-BF16."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # torch.cpu's CPU-feature checks
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # a missing or failing probe means: no
            continue
    return False


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` for ``amp`` "bf16"; no change of precision for "none"."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
