"""The optimiser, its learning-rate schedule, the time budget and the frozen trunk: what ``OptimConfig`` describes.

Time budget (``optim.max_minutes``): :class:`BudgetClock` measures the training loop's wall-clock time
(carried over in checkpoints when resuming); the run stops after the step during which the budget ran out,
and the cosine schedule follows the elapsed fraction of the budget (see :class:`OptimConfig`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from partialface.models import FaceModel
from partialface.training.config import OptimConfig


def build_optimizer(
    module: nn.Module, cfg: OptimConfig, new: Iterable[nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW. Weight decay (lambda_reg) skips BatchNorm weights
    and all biases (every parameter with ndim <= 1) when ``no_decay_bn_bias``. Each param group has an
    ``lr_mult`` (the loop sets lr = schedule x lr_mult): ``cfg.new_lr_mult`` for the ``new`` parameters
    (randomly initialised layers of a pretrained model), 1 for the rest."""
    new_ids = {id(p) for p in new}
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        key = (cfg.no_decay_bn_bias and p.ndim <= 1, id(p) in new_ids and cfg.new_lr_mult != 1.0)
        buckets.setdefault(key, []).append(p)
    groups = [
        {"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
         "lr_mult": cfg.new_lr_mult if is_new else 1.0}
        for (no_decay, is_new), params in sorted(buckets.items())
    ] or [{"params": [], "weight_decay": cfg.weight_decay, "lr_mult": 1.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def lr_at(
    step: int, cfg: OptimConfig, total_steps: int, steps_per_epoch: int, progress: float | None = None
) -> float:
    """Learning rate for 0-based ``step``: linear warm-up ((step + 1) / warmup_steps), then the schedule.

    ``progress`` in [0, 1] (time-budgeted runs, see :class:`BudgetClock`) replaces the cosine schedule's
    step-based progress (step - warmup) / (total - warmup)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        drops = sum(step >= m * steps_per_epoch for m in cfg.lr_milestones)
        return cfg.lr * cfg.lr_gamma**drops
    if progress is None:
        span = max(1, total_steps - cfg.warmup_steps)
        progress = (step - cfg.warmup_steps) / span
    progress = min(1.0, max(0.0, progress))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def budget_time() -> float:
    """The budget clock's time source: ``time.perf_counter()`` (seconds, monotonic)."""
    return time.perf_counter()


class BudgetClock:
    """Wall-clock time of a training loop, in seconds, across resumptions, and its budget (0 = none).

    ``elapsed_s``: time spent by earlier sessions of the run (from its checkpoint); ``warmup_end_s``: the
    elapsed time at which the warm-up ended (None until it has). ``timer``: the time source in seconds
    (default :func:`budget_time`, a monotonic clock)."""

    def __init__(
        self,
        budget_s: float,
        elapsed_s: float = 0.0,
        warmup_end_s: float | None = None,
        timer: Callable[[], float] | None = None,
    ) -> None:
        self.budget_s = budget_s
        self.before = elapsed_s
        self.warmup_end_s = warmup_end_s
        self.timer = timer or budget_time
        self.t0 = self.timer()

    def restart(self, elapsed_s: float = 0.0, warmup_end_s: float | None = None) -> None:
        """Continue from ``elapsed_s`` (a resumed run's saved clock), counting from now."""
        self.before, self.warmup_end_s, self.t0 = elapsed_s, warmup_end_s, self.timer()

    def elapsed(self) -> float:
        """Seconds so far (this session and the earlier ones)."""
        return self.before + self.timer() - self.t0

    def expired(self, elapsed: float) -> bool:
        return self.budget_s > 0 and elapsed >= self.budget_s

    def progress(self, step: int, warmup_steps: int, elapsed: float) -> float | None:
        """Schedule progress in [0, 1] after the warm-up: (t - t_w) / (budget - t_w); None without a budget.
        The first call at or after the warm-up's last step records t_w."""
        if self.budget_s <= 0 or step < warmup_steps:
            return None
        if self.warmup_end_s is None:
            self.warmup_end_s = elapsed
        span = self.budget_s - self.warmup_end_s
        if span <= 0:
            return 1.0
        return min(1.0, max(0.0, (elapsed - self.warmup_end_s) / span))

    def state(self) -> dict[str, float | None]:
        return {"elapsed_s": self.elapsed(), "warmup_end_s": self.warmup_end_s}


def set_trunk_frozen(model: FaceModel, frozen: bool) -> None:
    """Stop (or restart) gradients and updates of the model's pretrained trunk (``trunk_modules``);
    a frozen trunk's BatchNorm layers use their running statistics."""
    for m in model.trunk_modules():
        m.requires_grad_(not frozen)
        if frozen:
            set_bn_eval(m)


def set_bn_eval(module: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics), for ``run.freeze_bn``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
