"""Reading safetensors weight files: tensors and the header's metadata, never a pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import Tensor

from partialface.errors import PartialFaceError


def read_safetensors(path: str | os.PathLike[str], what: str = "weights") -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors on CPU, metadata) of a safetensors file; PartialFaceError naming the file (and ``what`` it should
    hold) for a missing or unreadable one."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    p = Path(path)
    if not p.is_file():
        raise PartialFaceError(f"{p}: no such {what} file")
    data = p.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise PartialFaceError(f"{p}: not a safetensors weights file ({e}); weights are never unpickled") from None
    return tensors, {str(k): str(v) for k, v in meta.items()}
