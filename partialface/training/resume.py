"""Resuming a run: the checkpoint a run folder resumes from, the config changes a resumption allows, and the
trainer's state in a checkpoint (weights, optimiser, log meters, RNG of every rank, budget clock, data
position; file layout in checkpoint.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from partialface.errors import PartialFaceError
from partialface.models.framing import framing_of
from partialface.training import checkpoint as ckpt
from partialface.training.config import TrainConfig
from partialface.training.data import EpochSampler
from partialface.training.distributed import DistInfo, barrier, gather_objects
from partialface.training.optim import BudgetClock
from partialface.training.runlog import Meters

#: config keys that may differ between a run and its resumption: loader, thread and output settings (they do not
#: change the numbers beyond the order of float sums) and the run length (extending a run; the schedule then follows
#: the new length)
RESUMABLE_CHANGES = (
    "data.workers",
    "data.prefetch_factor",
    "run.threads",
    "run.out",
    "run.progress",
    "run.tensorboard",
    "optim.max_steps",
    "optim.epochs",
    "optim.max_minutes",
)


def checkpoint_to_resume(cfg: TrainConfig, resume: bool) -> Path | None:
    """The newest checkpoint of ``cfg.run.out`` to resume from (None: a fresh start); refuses to overwrite a
    run, or to resume it with a config that differs beyond :data:`RESUMABLE_CHANGES`."""
    out = Path(cfg.run.out)
    latest = ckpt.latest_checkpoint(out)
    if latest is None:
        return None
    if not resume:
        raise PartialFaceError(
            f"run.out: {out} already holds a run ({latest.name}); pass --resume to continue it "
            "or choose another run.out"
        )
    saved = TrainConfig.from_yaml(latest / ckpt.CONFIG)
    bad = resume_mismatch(saved, cfg)
    if bad:
        raise PartialFaceError(
            f"--resume: the config differs from the run's saved config in {', '.join(bad)}; "
            f"resume with {latest / ckpt.CONFIG} or start a new run.out"
        )
    return latest


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def resume_mismatch(saved: TrainConfig, now: TrainConfig) -> list[str]:
    """Dotted config keys in which ``now`` differs from ``saved`` and a resumption may not."""
    diff = _config_diff(saved.to_dict(), now.to_dict())
    return [k for k in diff if k not in RESUMABLE_CHANGES and not k.startswith("model.preset_name")]


def run_weights(cfg: TrainConfig, module: nn.Module, num_classes: int) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The module's tensors (model.* and criterion.*) and the metadata that rebuilds the model (its framing
    resolved: a checkpoint says what it was trained on, whatever "auto" comes to mean later)."""
    meta = {
        "model_config": json.dumps(cfg.model.replace(framing=framing_of(cfg.model)).to_dict()),
        "loss_config": json.dumps(cfg.loss.to_dict()),
        "num_classes": str(num_classes),
    }
    return dict(module.state_dict()), meta


def save_run(
    cfg: TrainConfig, info: DistInfo, step: int, num_classes: int, module: nn.Module,
    optimizer: torch.optim.Optimizer, meters: Meters, clock: BudgetClock, sampler: EpochSampler,
) -> None:
    """A checkpoint at ``step`` (rank 0 writes it; every rank gives its RNG state and waits)."""
    rngs = gather_objects(ckpt.rng_state())
    if info.is_main:
        weights, meta = run_weights(cfg, module, num_classes)
        spe = sampler.steps_per_epoch
        state = {
            "step": step,
            # the data position follows from the step; stored to check the data did not change
            "sampler": {
                "epoch": step // spe,
                "start_step": step % spe,
                "steps_per_epoch": spe,
                "train_images": sampler.n,
                "seed": sampler.seed,
            },
            "world_size": info.world_size,
            "optimizer": optimizer.state_dict(),
            "meters": meters.state(),
            "rng": rngs,
            "clock": clock.state(),
        }
        ckpt.save_checkpoint(cfg.run.out, step, weights, meta, state, cfg.to_yaml(), cfg.run.keep_checkpoints)
    barrier()


def load_run(
    folder: Path, info: DistInfo, module: nn.Module, optimizer: torch.optim.Optimizer, meters: Meters,
    clock: BudgetClock, sampler: EpochSampler,
) -> tuple[int, bool]:
    """Restore a checkpoint into the run's parts: (its step, whether this rank's RNG state was restored — it is
    not when the number of processes changed)."""
    tensors, _ = ckpt.load_weights(folder / ckpt.WEIGHTS)
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise PartialFaceError(
            f"{folder / ckpt.WEIGHTS}: does not fit this model/criterion "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    state = ckpt.load_state(folder / ckpt.STATE)
    saved = state.get("sampler", {})
    if saved.get("train_images", sampler.n) != sampler.n:
        raise PartialFaceError(
            f"--resume: the training data changed since {folder.name} ({saved['train_images']} -> "
            f"{sampler.n} training images); restore it or start a new run.out"
        )
    optimizer.load_state_dict(state["optimizer"])
    meters.load(state["meters"])
    saved_clock = state.get("clock") or {}
    clock.restart(float(saved_clock.get("elapsed_s", 0.0)), saved_clock.get("warmup_end_s"))
    rngs = state["rng"]
    restored = state.get("world_size") == info.world_size and info.rank < len(rngs)
    if restored:
        ckpt.set_rng_state(rngs[info.rank])
    return int(state["step"]), restored
