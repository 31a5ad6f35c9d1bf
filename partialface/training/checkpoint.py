"""Checkpoints without pickle: safetensors weights + a weights_only torch file of training state.

Layout of a run folder::

    RUN/config.yaml                       the resolved TrainConfig
    RUN/checkpoints/step_0000100/
        model.safetensors                 model.* and criterion.* tensors; metadata: model_config (JSON),
                                          loss_config (JSON), num_classes, step
        state.pt                          optimizer, RNG (torch, CUDA, numpy, python; per rank), step,
                                          epoch, log meters — tensors, dicts, lists, numbers only,
                                          loaded with torch.load(weights_only=True)
        config.yaml                       copy of the run config
    RUN/checkpoints/latest                text: the newest step folder's name (written last)
    RUN/model.safetensors                 the final weights (same format)

A step folder is written under a temporary name and renamed when complete; ``latest`` is replaced
atomically after that, so a killed run always leaves a consistent newest checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as st_save
from torch import Tensor, nn

from partialface.data.images import atomic_write_bytes
from partialface.errors import PartialFaceError

WEIGHTS = "model.safetensors"
STATE = "state.pt"
CONFIG = "config.yaml"
LATEST = "latest"
FORMAT = "partialface-checkpoint-1"


def step_name(step: int) -> str:
    return f"step_{step:07d}"


# ---------------------------------------------------------------------------------------------- weights
def save_weights(path: str | os.PathLike[str], tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write tensors (moved to CPU, made contiguous) as safetensors, atomically."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(flat, metadata={"format": FORMAT, **metadata}))


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors on CPU, metadata) of a safetensors file; PartialFaceError for anything else."""
    from partialface.models.files import read_safetensors

    return read_safetensors(path)


# ---------------------------------------------------------------------------------------------- state
def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """torch.save a tensors/dicts/lists/numbers structure to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """torch.load(weights_only=True): only tensors, dicts, lists, numbers, strings. A file holding any
    other pickled object is refused with PartialFaceError (nothing in it is executed)."""
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PartialFaceError(f"{p}: no such checkpoint state file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PartialFaceError(
            f"{p}: refused to load (only tensors, dicts, lists and numbers are allowed: {first})"
        ) from None
    if not isinstance(state, dict):
        raise PartialFaceError(f"{p}: not a partialface training state")
    return state


# ---------------------------------------------------------------------------------------------- RNG
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global state user code may rely on
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA, numpy global, python) as weights_only-safe values."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 - the global state others may use
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- folders
def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete step folder named by RUN/checkpoints/latest, or None."""
    ckpts = Path(run_dir) / "checkpoints"
    pointer = ckpts / LATEST
    if not pointer.is_file():
        return None
    folder = ckpts / pointer.read_text(encoding="utf-8").strip()
    if not (folder / WEIGHTS).is_file() or not (folder / STATE).is_file():
        raise PartialFaceError(f"{pointer}: names {folder.name}, which is incomplete; point it at an older step folder")
    return folder


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    weights: dict[str, Tensor],
    metadata: dict[str, str],
    state: dict[str, Any],
    config_yaml: str,
    keep: int = 3,
) -> Path:
    """Write RUN/checkpoints/step_N (temp folder + rename), then the ``latest`` pointer; keep the newest
    ``keep`` step folders. Returns the step folder."""
    ckpts = Path(run_dir) / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    name = step_name(step)
    tmp = ckpts / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_weights(tmp / WEIGHTS, weights, {**metadata, "step": str(step)})
    save_state(tmp / STATE, state)
    atomic_write_bytes(tmp / CONFIG, config_yaml.encode("utf-8"))
    final = ckpts / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_bytes(ckpts / LATEST, (name + "\n").encode("utf-8"))
    steps = sorted(p for p in ckpts.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for old in steps[:-keep]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------- models
def _weights_file(path: Path) -> Path:
    if path.is_dir():
        if (path / WEIGHTS).is_file():
            return path / WEIGHTS
        ckpt = latest_checkpoint(path)
        if ckpt is not None:
            return ckpt / WEIGHTS
        raise PartialFaceError(f"{path}: no {WEIGHTS} and no checkpoints/latest in this folder")
    if path.suffix != ".safetensors":
        raise PartialFaceError(
            f"{path}: give a .safetensors weights file or a run/checkpoint folder (pickles are never loaded)"
        )
    return path


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a trained model from its safetensors file (the model config is in its metadata).

    ``path``: a ``model.safetensors`` file, a step folder, or a run folder (its final weights, else the
    latest checkpoint). Returns the model (a FaceModel) in eval mode on ``device``. No pickle involved.
    """
    from partialface.models import ModelConfig, create_model
    from partialface.models.config import LEGACY_FRAMING

    file = _weights_file(Path(path))
    tensors, meta = load_weights(file)
    if "model_config" not in meta:
        raise PartialFaceError(f"{file}: no model_config in its metadata (not written by `partialface train`)")
    saved = json.loads(meta["model_config"])
    saved.setdefault("framing", LEGACY_FRAMING)  # written before the option: trained and scored on the resize
    cfg = ModelConfig.from_dict(saved)
    model = create_model(cfg)
    own = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    if missing or unexpected:
        raise PartialFaceError(
            f"{file}: weights do not fit model {cfg.name!r} "
            f"(missing {len(missing)}: {missing[:3]}, unexpected {len(unexpected)}: {unexpected[:3]})"
        )
    return model.to(device).eval()
