"""The shared checkpoints in checkpoints/ and the package's own (partialface/models/weights/: a pip install has
them): intact (sha256 prefixes of their README), loadable, float16."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from partialface.training.checkpoint import load_model, load_weights

REPO = Path(__file__).resolve().parents[1]
FOLDERS = sorted((p for root in (REPO / "checkpoints", REPO / "partialface" / "models" / "weights")
                  for p in root.iterdir() if p.is_dir() and p.name != "__pycache__"), key=lambda p: p.name)


def _listed(folder: Path) -> dict[str, str]:
    """{file name: sha256 prefix} from the README's table."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"`([\w.-]+\.safetensors)` \|.*\| `([0-9a-f]{8})…` \|", text))


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_shared_checkpoints_are_intact_and_load(folder: Path) -> None:
    listed = _listed(folder)
    files = sorted(folder.glob("*.safetensors"))
    assert files and sorted(listed) == [f.name for f in files]
    for f in files:
        assert hashlib.sha256(f.read_bytes()).hexdigest().startswith(listed[f.name]), f.name
        if folder.name.startswith("visibility"):  # the visibility network (issue #39), not a face model
            from partialface.models.visibility import load_visibility, read_visibility_file

            raw, _ = read_visibility_file(f)
            assert all(v.dtype == torch.float16 for v in raw.values() if v.is_floating_point())
            out = load_visibility(f)(torch.randint(0, 256, (2, 3, 160, 160), dtype=torch.uint8))
            assert out.shape == (2, 5) and bool(((out >= 0) & (out <= 1)).all())
            continue
        tensors, meta = load_weights(f)
        assert meta["dtype"] == "float16" and all(k.startswith("model.") for k in tensors)
        assert all(v.dtype == torch.float16 for v in tensors.values() if v.is_floating_point())
        model = load_model(f)
        size = model.config.input_size  # the model's input (its framing cuts it from the aligned face)
        with torch.no_grad():
            emb = model(torch.randn(2, 3, size, size)).f
        assert emb.shape == (2, model.config.embedding_dim) and bool(torch.isfinite(emb).all()), f.name
