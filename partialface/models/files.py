"""Reading safetensors weight files: tensors and the header's metadata, never a pickle."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from torch import Tensor

from partialface.errors import PartialFaceError

#: the metadata key of a model file's operating points (``partialface calibrate``)
OPERATING_POINTS_KEY = "operating_points"


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


def file_digest(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_digest(path: str | os.PathLike[str]) -> str:
    """What identifies a model file's embeddings: for a ``.safetensors`` file ``st-`` and the sha256 of its tensors
    (names, dtypes, shapes, bytes) and of its metadata less the operating points, so that recalibrating a file
    (``calibrate``, ``calibrate --auto``) keeps it; for any other file (or one whose header cannot be read),
    :func:`file_digest`."""
    p = Path(path)
    if p.suffix != ".safetensors":
        return file_digest(p)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        try:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            meta = {k: v for k, v in header.pop("__metadata__", {}).items() if k != OPERATING_POINTS_KEY}
        except (ValueError, AttributeError, MemoryError, OverflowError):
            return file_digest(p)
        h.update(json.dumps([header, meta], sort_keys=True).encode("utf-8"))
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "st-" + h.hexdigest()
