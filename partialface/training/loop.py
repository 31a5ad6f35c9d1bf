"""The training loop: data -> on-device partial-face augmentation -> model + criterion -> SGD/AdamW.

One step: a DataLoader batch of uint8 faces (B, 160, 160, 3) + labels + augmentation rows moves to the
device, ``augment_batch`` cuts the partial faces there, ``to_model_input`` normalises (and resizes to the
model's input size), then the model and the criterion (which holds the shared classifier) run under
optional bf16 autocast, wrapped together in DDP when WORLD_SIZE > 1. The learning rate is set per step
from the schedule. Only rank 0 writes logs, TensorBoard scalars and checkpoints; metrics are all-reduced.

Outputs in ``run.out``: config.yaml, log.csv (one row per ``log_every`` steps: step, epoch, lr, loss, ce,
div, acc, grad_norm, images_per_s, elapsed_s — means over the interval and the global batch),
verify.csv (end-of-epoch held-out check), tb/ (TensorBoard), checkpoints/ (see checkpoint.py),
model.safetensors (final weights).

Time budget (``optim.max_minutes``): :class:`BudgetClock` measures the loop's wall-clock time (carried over
in checkpoints when resuming); the run stops after the step during which the budget ran out, and the
cosine schedule follows the elapsed fraction of the budget (see :class:`OptimConfig`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from partialface.data.images import atomic_write_bytes
from partialface.errors import PartialFaceError
from partialface.losses import build_criterion
from partialface.models import FaceModel, create_model
from partialface.models.pretrained import check_model, init_pretrained
from partialface.training import checkpoint as ckpt
from partialface.training.augment import augment_batch, to_model_input
from partialface.training.config import OptimConfig, TrainConfig
from partialface.training.data import (
    EpochSampler,
    Split,
    TrainDataset,
    VerifyPairs,
    make_loader,
    make_verify_pairs,
    open_source,
    split_identities,
)
from partialface.training.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    convert_sync_batchnorm,
    gather_objects,
    init_distributed,
)

LOG_FIELDS = ("step", "epoch", "lr", "loss", "ce", "div", "acc", "grad_norm", "images_per_s", "elapsed_s")
VERIFY_FIELDS = ("step", "epoch", "pairs", "holistic_acc", "partial_acc", "method")
#: config keys that may differ between a run and its resumption: loader and output settings (they do not
#: change the numbers) and the run length (extending a run; the schedule then follows the new length)
RESUMABLE_CHANGES = (
    "data.workers",
    "data.prefetch_factor",
    "run.out",
    "run.progress",
    "run.tensorboard",
    "optim.max_steps",
    "optim.epochs",
    "optim.max_minutes",
)


class TrainModule(nn.Module):
    """Model + criterion (with the shared classifier) as one module, so DDP syncs both.

    forward(x: (B, 3, H, W), labels: (B,)) -> (total, ce, div, logits (B, C)).
    """

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        parts = self.criterion(self.model(x), labels)
        return parts.total, parts.ce, parts.div, parts.logits


@dataclass
class TrainResult:
    """What a finished (or stopped) run reached."""

    out: Path
    step: int
    total_steps: int
    epoch: int
    last_loss: float | None
    verify: dict[str, float] | None
    rank: int = 0
    #: wall-clock seconds of the training loop, over all resumptions (the clock of optim.max_minutes)
    elapsed_s: float = 0.0
    #: the run stopped because optim.max_minutes ran out
    time_limited: bool = False
    #: the run stopped at ``train(pause_at_s=...)`` (checkpoint written, no final weights; resume it)
    paused: bool = False


# ---------------------------------------------------------------------------------------------- pieces
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the legacy global state user code may rely on
    torch.manual_seed(seed)


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


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def _resume_mismatch(saved: TrainConfig, now: TrainConfig) -> list[str]:
    diff = _config_diff(saved.to_dict(), now.to_dict())
    return [k for k in diff if k not in RESUMABLE_CHANGES and not k.startswith("model.preset_name")]


# ---------------------------------------------------------------------------------------------- logging
class RunLog:
    """Rank 0's outputs: CSV logs (one line appended per row, flushed), TensorBoard scalars, tqdm bar."""

    def __init__(self, cfg: TrainConfig, out: Path, start_step: int, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.out = out
        self.tb: Any = None
        self.bar: Any = None
        if not enabled:
            return
        self._prepare_csv(out / "log.csv", LOG_FIELDS, start_step)
        self._prepare_csv(out / "verify.csv", VERIFY_FIELDS, start_step)
        if cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step if start_step else None)
        if cfg.run.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    @staticmethod
    def _prepare_csv(path: Path, fields: tuple[str, ...], start_step: int) -> None:
        """Create with a header, or (resuming) keep only the rows up to ``start_step`` (atomic rewrite)."""
        rows: list[list[str]] = []
        if start_step and path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                next(reader, None)
                rows = [r for r in reader if r and int(r[0]) <= start_step]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(fields)
        writer.writerows(rows)
        atomic_write_bytes(path, buf.getvalue().encode("utf-8"))

    def _append(self, name: str, fields: tuple[str, ...], row: dict[str, Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([_fmt(row.get(k)) for k in fields])
        with (self.out / name).open("a", encoding="utf-8") as f:
            f.write(buf.getvalue())
            f.flush()

    def train_row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append("log.csv", LOG_FIELDS, row)
        if self.tb is not None:
            for k in ("loss", "ce", "div", "acc", "lr", "images_per_s", "grad_norm"):
                if row.get(k) is not None:
                    self.tb.add_scalar(f"train/{k}", row[k], row["step"])
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{row['loss']:.4f}",
                ce=f"{row['ce']:.4f}",
                div=f"{row['div']:.4f}",
                lr=f"{row['lr']:.4g}",
                img_s=f"{row['images_per_s']:.1f}",
            )

    def verify_row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._append("verify.csv", VERIFY_FIELDS, row)
        if self.tb is not None:
            self.tb.add_scalar("verify/holistic_acc", row["holistic_acc"], row["step"])
            self.tb.add_scalar("verify/partial_acc", row["partial_acc"], row["step"])
        if self.bar is not None:
            self.bar.write(
                f"epoch {row['epoch']}: held-out verification holistic {row['holistic_acc']:.2f}% "
                f"partial {row['partial_acc']:.2f}% ({row['pairs']} pairs, {row['method']})"
            )

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def set_total(self, total: int) -> None:
        """The bar's expected number of steps (a time-budgeted run's estimate)."""
        if self.bar is not None and total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()

    def note(self, text: str) -> None:
        """One line for the user (above the bar)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


class Meters:
    """Sums since the last log row, kept on the device (no host synchronisation per step) and reduced
    across ranks when a row is written."""

    NAMES = ("loss", "ce", "div", "correct", "grad_norm", "count", "steps")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums = torch.zeros(len(self.NAMES), dtype=torch.float64, device=device)

    def add(self, loss: Tensor, ce: Tensor, div: Tensor, correct: Tensor, count: int, grad_norm: Tensor) -> None:
        self.sums[:5] += torch.stack([loss.double(), ce.double(), div.double(), correct.double(), grad_norm.double()])
        self.sums[5] += count
        self.sums[6] += 1

    def reduce_and_reset(self) -> dict[str, float]:
        """Means over steps and ranks (accuracy over samples); resets the sums."""
        s = all_reduce_sum(self.sums.clone()).cpu().tolist()
        self.sums.zero_()
        steps = max(s[6], 1.0)
        return {
            "loss": s[0] / steps,
            "ce": s[1] / steps,
            "div": s[2] / steps,
            "acc": s[3] / max(s[5], 1.0),
            "grad_norm": s[4] / steps,
        }

    def state(self) -> Tensor:
        return self.sums.detach().cpu().clone()

    def load(self, t: Tensor) -> None:
        self.sums = t.to(self.device, torch.float64).clone()


# ---------------------------------------------------------------------------------------------- verify
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
    ``runner``: model input (B, 3, S, S) -> f (B, D) in place of ``model`` (see :func:`fast_runner`)."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device)
        if params is not None:
            x, _ = augment_batch(x, params[i : i + batch])
        x = to_model_input(x, input_size, channels_last)
        if runner is not None:
            f = runner(x)
        else:
            with _autocast(device, amp):
                f = model(x).f
        out.append(torch.nn.functional.normalize(f.float(), dim=1).cpu())
    return torch.cat(out)


def fast_runner(model: nn.Module, device: torch.device, amp: str, input_size: int) -> Callable[[Tensor], Tensor] | None:
    """The benchmark's auto path for held-out checks of a float32 run: ONNX Runtime on a snapshot of the model
    (the same numbers to float rounding, 1.5-2.8x eager on CPU: docs/benchmarks.md), or None (use the model:
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
    return {"pairs": len(pairs.same), "holistic_acc": float(h), "partial_acc": float(p), "method": method}


# ---------------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig, resume: bool = False, pause_at_s: float | None = None) -> TrainResult:
    """Run (or resume) training as configured; joins the torchrun process group when WORLD_SIZE > 1.

    ``pause_at_s``: stop like a time budget once the run's clock (see :class:`BudgetClock`) reaches this
    many seconds, but without ending the schedule: the checkpoint is written and a later ``resume``
    continues the same run (several runs sharing a machine in turns get their time in slices)."""
    info, device = init_distributed(cfg.run.device)
    threads = torch.get_num_threads()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    try:
        return _Trainer(cfg, info, device, resume, pause_at_s).run()
    finally:
        torch.set_num_threads(threads)
        cleanup()


class _Trainer:
    def __init__(
        self, cfg: TrainConfig, info: DistInfo, device: torch.device, resume: bool, pause_at_s: float | None = None
    ) -> None:
        self.cfg = cfg
        self.pause_at_s = pause_at_s
        self.info = info
        self.device = device
        self.resume = resume
        self.out = Path(cfg.run.out)
        self.num_classes = 0
        self.clock = BudgetClock(cfg.optim.max_minutes * 60.0)

    # ------------------------------------------------------------------ setup
    def _check_run_folder(self) -> Path | None:
        """The checkpoint to resume from (None: fresh start); refuses to overwrite a run."""
        latest = ckpt.latest_checkpoint(self.out)
        if latest is None:
            return None
        if not self.resume:
            raise PartialFaceError(
                f"run.out: {self.out} already holds a run ({latest.name}); pass --resume to continue it "
                "or choose another run.out"
            )
        saved = TrainConfig.from_yaml(latest / ckpt.CONFIG)
        bad = _resume_mismatch(saved, self.cfg)
        if bad:
            raise PartialFaceError(
                f"--resume: the config differs from the run's saved config in {', '.join(bad)}; "
                f"resume with {latest / ckpt.CONFIG} or start a new run.out"
            )
        return latest

    def _on_main(self, fn: Callable[[], Any], share: bool = True) -> Any:
        """Run ``fn`` on rank 0 and (``share``) give its result to every rank (else the others get None);
        a PartialFaceError there is raised on every rank instead of leaving the others waiting."""
        result: Any = None
        error: str | None = None
        if self.info.is_main:
            try:
                result = fn()
            except PartialFaceError as e:
                error = str(e)
        error, shared = broadcast_object((error, result if share else None))
        if error is not None:
            raise PartialFaceError(error)
        return result if self.info.is_main else shared

    def _data(self) -> Split:
        cfg = self.cfg
        # rank 0 lists (and packs, the first time) the data; the others open it afterwards
        source = self._on_main(lambda: open_source(cfg.data, build_pack=True, progress=cfg.run.progress), share=False)
        if not self.info.is_main:
            source = open_source(cfg.data, build_pack=False)
        return split_identities(source, cfg.data.min_images, cfg.data.holdout_identities, cfg.run.seed)

    def _model(self, num_classes: int, fresh: bool) -> tuple[FaceModel, nn.Module, TrainModule]:
        """The model (``model.pretrained`` weights on a fresh start), its loss and their training module."""
        cfg = self.cfg
        seed_everything(cfg.run.seed)
        model = create_model(cfg.model)
        if fresh:
            init_pretrained(model, cfg.model.pretrained)
        criterion = build_criterion(cfg.loss, num_classes, model.embedding_dim)
        module = TrainModule(model, criterion)
        if cfg.run.sync_bn and self.info.enabled:
            module = convert_sync_batchnorm(module, self.device)  # type: ignore[assignment]
            model, criterion = module.model, module.criterion  # type: ignore[assignment]
        module.to(self.device)
        if cfg.run.channels_last:
            module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model, criterion, module

    # ------------------------------------------------------------------ run
    def run(self) -> TrainResult:
        cfg, info, device = self.cfg, self.info, self.device
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if cfg.run.amp == "bf16" and device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        found = self._on_main(self._check_run_folder)
        latest = str(found) if found is not None else None
        if latest is None:
            check_model(cfg.model)  # fail before the data are packed or read
        split = self._data()
        num_classes = self.num_classes = len(split.classes)
        sampler = EpochSampler(len(split.train_index), cfg.optim.batch_size, info.world_size, info.rank, cfg.run.seed)
        self.sampler = sampler
        spe = sampler.steps_per_epoch
        total = cfg.optim.max_steps or cfg.optim.epochs * spe

        model, criterion, module = self._model(num_classes, fresh=latest is None)
        if latest is None and cfg.loss.init_head == "imprint":
            head = criterion.head
            assert isinstance(head, nn.Module)
            imprint_head(model, head, split, cfg.model.input_size, device, cfg.run.amp,
                         cfg.run.channels_last, progress=cfg.run.progress and info.is_main)
        new = [p for m in model.new_modules() for p in m.parameters()] if cfg.model.pretrained else []
        optimizer = build_optimizer(module, cfg.optim, new)
        meters = Meters(device)
        step = 0
        if latest is not None:
            step = self._load(Path(latest), module, optimizer, meters)
        else:
            seed_everything(cfg.run.seed + 1000 * info.rank)

        config_yaml = cfg.to_yaml()
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out / ckpt.CONFIG, config_yaml.encode("utf-8"))
            classes = {"classes": split.classes, "holdout": split.holdout_classes}
            atomic_write_bytes(self.out / "classes.json", json.dumps(classes).encode("utf-8"))
        log = RunLog(cfg, self.out, step, total, info.is_main)

        freeze_until = round(cfg.optim.freeze_trunk_epochs * spe)
        frozen = step < freeze_until
        set_trunk_frozen(model, frozen)

        def make_forward() -> nn.Module:
            """The training forward: compiled and/or DDP-wrapped as configured (rebuilt when the trunk thaws,
            as DDP fixes the set of trained parameters when it wraps the module)."""
            forward: nn.Module = module
            if cfg.run.compile:
                forward = TrainModule(torch.compile(model), criterion)  # type: ignore[arg-type]
            if info.enabled:
                from torch.nn.parallel import DistributedDataParallel

                ids = [device.index] if device.type == "cuda" else None
                forward = DistributedDataParallel(forward, device_ids=ids)
            return forward

        forward = make_forward()

        pairs = None
        if cfg.run.verify_every and info.is_main:
            pairs = make_verify_pairs(split, cfg.data.verify_pairs, cfg.run.seed)
        last_verify: dict[str, float] | None = None

        def check(ep: float) -> None:
            """The held-out check (rank 0) at the current step; a row of verify.csv."""
            nonlocal last_verify
            if pairs is None:
                return
            was_training = module.training
            module.eval()
            res = verify(model, pairs, cfg.model.input_size, device, cfg.run.amp, cfg.run.channels_last)
            if was_training:
                module.train()
                if cfg.run.freeze_bn:
                    set_bn_eval(module)
                set_trunk_frozen(model, frozen)
            last_verify = {k: v for k, v in res.items() if isinstance(v, float)}
            log.verify_row({"step": step, "epoch": ep, **res})

        dataset = TrainDataset(split, cfg.augment, cfg.run.seed)
        loader = make_loader(dataset, sampler, cfg.data.workers, device.type == "cuda", cfg.data.prefetch_factor)
        saved_at = step
        logged_at = step
        last_loss: float | None = None
        lr = float("nan")
        t_log = time.perf_counter()
        t0 = t_log
        images_since = 0
        clock = self.clock
        if latest is None and cfg.run.verify_at_start:
            check(0)  # the starting model, before the clock starts
        clock.restart(clock.before, clock.warmup_end_s)  # the loop's clock starts now
        start_step = step
        pause_at = self.pause_at_s
        timed = clock.budget_s > 0 or pause_at is not None

        def halt(elapsed: float) -> bool:
            """The budget ran out, or the run is to pause."""
            return clock.expired(elapsed) or (pause_at is not None and elapsed >= pause_at)

        elapsed = self._elapsed()
        stopped = halt(elapsed)

        def write_row() -> None:
            """A log.csv row: means since the previous row."""
            nonlocal t_log, images_since, last_loss, logged_at
            now = time.perf_counter()
            row: dict[str, Any] = dict(meters.reduce_and_reset())
            row.update(
                step=step,
                epoch=step / spe,
                lr=lr,
                images_per_s=images_since / max(now - t_log, 1e-9),
                elapsed_s=now - t0,
            )
            if cfg.optim.grad_clip <= 0:
                row["grad_norm"] = None
            log.train_row(row)
            last_loss = row["loss"]
            t_log, images_since, logged_at = now, 0, step
            if clock.budget_s > 0 and step > start_step:  # the bar's total: expected steps at this pace
                pace = (now - t0) / (step - start_step)
                log.set_total(min(total, step + math.ceil(max(0.0, clock.budget_s - clock.elapsed()) / pace)))

        try:
            while step < total and not stopped:
                epoch, in_epoch = divmod(step, spe)
                sampler.set_epoch(epoch, in_epoch)
                module.train()
                if cfg.run.freeze_bn:
                    set_bn_eval(module)
                set_trunk_frozen(model, frozen)
                for images, labels, params in _limit(loader, total - step):
                    if frozen and step >= freeze_until:  # the trunk thaws
                        frozen = False
                        set_trunk_frozen(model, False)
                        if not cfg.run.freeze_bn:
                            module.train()
                        forward = make_forward()
                        log.note(f"optim.freeze_trunk_epochs: trunk trained from step {step}")
                    if timed:  # one reading per step, when its batch is ready
                        elapsed = self._elapsed()
                        stopped = halt(elapsed)
                        if stopped:  # the previous step used up the budget (or reached the pause)
                            break
                    images = images.to(device, non_blocking=True)
                    labels = labels.to(device, non_blocking=True)
                    x, _ = augment_batch(images, params, cfg.augment.centring)
                    x = to_model_input(x, cfg.model.input_size, cfg.run.channels_last)
                    lr = lr_at(step, cfg.optim, total, spe, clock.progress(step, cfg.optim.warmup_steps, elapsed))
                    for group in optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_mult", 1.0)
                    with _autocast(device, cfg.run.amp):
                        loss, ce, div, logits = forward(x, labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.optim.grad_clip > 0:
                        gn = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
                    else:
                        gn = torch.zeros((), device=device)
                    optimizer.step()
                    correct = (logits.argmax(1) == labels).sum()
                    meters.add(loss.detach(), ce.detach(), div.detach(), correct, len(labels), gn.detach())
                    images_since += len(labels) * info.world_size
                    step += 1
                    log.advance()
                    if step % cfg.run.log_every == 0 or step == total:
                        write_row()
                    if step % spe == 0:
                        break
                    if cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0:
                        self._save(step, module, optimizer, meters, config_yaml)
                        saved_at = step
                # end of an epoch (or of the run); a stop at an epoch's first batch comes after its end
                epoch_done = step % spe == 0 and not stopped
                if epoch_done:
                    ep = step // spe
                    if cfg.run.verify_every and ep % cfg.run.verify_every == 0:
                        check(ep)
                    barrier()
                    every = cfg.run.checkpoint_every
                    if (every and step % every == 0) or (not every):
                        self._save(step, module, optimizer, meters, config_yaml)
                        saved_at = step
                    t_log = time.perf_counter()  # images/s counts training only
                    images_since = 0
            time_limited = stopped and clock.expired(elapsed)
            paused = stopped and not time_limited
            if stopped:
                if logged_at != step:
                    write_row()
                log.set_total(step)
                done = f"; last learning rate {lr:.3g}" if step > start_step else " (nothing left to do)"
                if time_limited:
                    log.note(
                        f"time budget optim.max_minutes={cfg.optim.max_minutes:g} reached after {step} steps "
                        f"({elapsed / 60:.2f} min){done}"
                    )
                else:
                    log.note(f"paused after {step} steps ({elapsed / 60:.2f} min; resume to continue){done}")
            if cfg.run.verify_every and step % spe != 0 and step > start_step and not paused:  # ends between epochs
                check(step / spe)
            if saved_at != step:
                self._save(step, module, optimizer, meters, config_yaml)
            if info.is_main and not paused:
                weights, meta = self._weights(module)
                ckpt.save_weights(self.out / ckpt.WEIGHTS, weights, {**meta, "step": str(step)})
        finally:
            log.close()
        return TrainResult(
            self.out, step, total, step // spe, last_loss, last_verify, info.rank, clock.elapsed(), time_limited,
            paused,
        )

    def _elapsed(self) -> float:
        """The budget clock's reading, the same on every rank (rank 0's)."""
        t = self.clock.elapsed()
        if not self.info.enabled:
            return t
        buf = torch.tensor([t if self.info.is_main else 0.0], dtype=torch.float64, device=self.device)
        return float(all_reduce_sum(buf).item())

    # ------------------------------------------------------------------ checkpoints
    def _weights(self, module: TrainModule) -> tuple[dict[str, Tensor], dict[str, str]]:
        meta = {
            "model_config": json.dumps(self.cfg.model.to_dict()),
            "loss_config": json.dumps(self.cfg.loss.to_dict()),
            "num_classes": str(self.num_classes),
        }
        return dict(module.state_dict()), meta

    def _save(
        self, step: int, module: TrainModule, optimizer: torch.optim.Optimizer, meters: Meters, config_yaml: str
    ) -> None:
        rngs = gather_objects(ckpt.rng_state())
        if self.info.is_main:
            weights, meta = self._weights(module)
            spe = self.sampler.steps_per_epoch
            state = {
                "step": step,
                # the data position follows from the step; stored to check the data did not change
                "sampler": {
                    "epoch": step // spe,
                    "start_step": step % spe,
                    "steps_per_epoch": spe,
                    "train_images": self.sampler.n,
                    "seed": self.sampler.seed,
                },
                "world_size": self.info.world_size,
                "optimizer": optimizer.state_dict(),
                "meters": meters.state(),
                "rng": rngs,
                "clock": self.clock.state(),
            }
            ckpt.save_checkpoint(self.out, step, weights, meta, state, config_yaml, self.cfg.run.keep_checkpoints)
        barrier()

    def _load(self, folder: Path, module: TrainModule, optimizer: torch.optim.Optimizer, meters: Meters) -> int:
        tensors, _ = ckpt.load_weights(folder / ckpt.WEIGHTS)
        missing, unexpected = module.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise PartialFaceError(
                f"{folder / ckpt.WEIGHTS}: does not fit this model/criterion "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        state = ckpt.load_state(folder / ckpt.STATE)
        saved = state.get("sampler", {})
        if saved.get("train_images", self.sampler.n) != self.sampler.n:
            raise PartialFaceError(
                f"--resume: the training data changed since {folder.name} ({saved['train_images']} -> "
                f"{self.sampler.n} training images); restore it or start a new run.out"
            )
        optimizer.load_state_dict(state["optimizer"])
        meters.load(state["meters"])
        clock = state.get("clock") or {}
        self.clock.restart(float(clock.get("elapsed_s", 0.0)), clock.get("warmup_end_s"))
        rngs = state["rng"]
        if state.get("world_size") == self.info.world_size and self.info.rank < len(rngs):
            ckpt.set_rng_state(rngs[self.info.rank])
        else:
            seed_everything(self.cfg.run.seed + 1000 * self.info.rank + int(state["step"]))
        return int(state["step"])


def _limit(loader: Any, n: int) -> Iterator[Any]:
    """At most n batches of ``loader`` (stops the DataLoader early at max_steps)."""
    if n <= 0:
        return
    for i, batch in enumerate(loader):
        yield batch
        if i + 1 >= n:
            return
