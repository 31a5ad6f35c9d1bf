"""The training loop: data -> on-device partial-face augmentation -> model + criterion -> SGD/AdamW.

One step: a DataLoader batch of uint8 faces (B, 160, 160, 3) + labels + augmentation rows moves to the
device, ``augment_batch`` cuts the partial faces there, ``to_model_input`` frames them as the model's config
says and normalises, then the model and the criterion (which holds the shared classifier) run under
optional bf16 autocast, wrapped together in DDP when WORLD_SIZE > 1. The learning rate is set per step
from the schedule (optim.py). Only rank 0 writes logs, TensorBoard scalars and checkpoints (runlog.py,
resume.py); metrics are all-reduced.

Outputs in ``run.out``: config.yaml, classes.json, log.csv and verify.csv (runlog.py), tb/ (TensorBoard),
checkpoints/ (checkpoint.py), model.safetensors (final weights).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from partialface.data.images import atomic_write_bytes
from partialface.devices import autocast
from partialface.errors import PartialFaceError
from partialface.losses import build_criterion
from partialface.models import FaceModel, create_model
from partialface.models.framing import framing_of, to_model_input
from partialface.models.pretrained import check_model, init_pretrained
from partialface.training import checkpoint as ckpt
from partialface.training import resume as rs
from partialface.training.augment import FLIP, N_PARAMS, PART, WHOLE, augment_batch
from partialface.training.config import TrainConfig
from partialface.training.data import (
    EpochSampler,
    FolderSource,
    Split,
    TrainDataset,
    all_held_out,
    make_loader,
    make_verify_pairs,
    open_source,
    split_identities,
)
from partialface.training.distributed import (
    DistInfo,
    barrier,
    cleanup,
    convert_sync_batchnorm,
    init_distributed,
    main_value,
    on_main,
)
from partialface.training.optim import BudgetClock, build_optimizer, lr_at, set_bn_eval, set_trunk_frozen
from partialface.training.runlog import Meters, RunLog
from partialface.training.verify import imprint_head, verify


class TrainModule(nn.Module):
    """Model + criterion (with the shared classifier) as one module, so DDP syncs both.

    forward(x: (B, 3, H, W), labels: (B,), target: (B, D) or None) -> (total, ce, div, logits (B, C)).
    """

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, x: Tensor, labels: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        parts = self.criterion(self.model(x), labels, target)
        return parts.total, parts.ce, parts.div, parts.logits


def load_teacher(spec: str, embedding_dim: int, device: torch.device) -> FaceModel:
    """The frozen teacher of ``loss.teacher``: "dlib" / "sface" (the pretrained network, untouched) or a model
    file / run folder; in eval mode, no gradients, on ``device``. PartialFaceError when its embedding size is
    not the student's."""
    from partialface.models import ModelConfig

    if spec in ("dlib", "sface"):
        cfg = ModelConfig(name="dlib_resnet", input_size=150, embedding_dim=128, pretrained="dlib") if spec == "dlib" \
            else ModelConfig(name="sface", input_size=112, embedding_dim=128, pretrained="sface")
        teacher = create_model(cfg)
        init_pretrained(teacher, cfg.pretrained)
    else:
        teacher = ckpt.load_model(spec)  # type: ignore[assignment]
    if teacher.embedding_dim != embedding_dim:
        raise PartialFaceError(f"loss.teacher {spec}: it embeds in {teacher.embedding_dim} dimensions, the model in "
                               f"{embedding_dim}; give a teacher of the same size")
    teacher.eval().requires_grad_(False)
    return teacher.to(device)


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
        result = _Trainer(cfg, info, device, resume, pause_at_s).run()
        # every rank done before any leaves the group: a gloo rank whose peer tore down first can abort in
        # gloo's threads at exit ("terminate called without an active exception", once in CI)
        barrier()
        return result
    finally:
        torch.set_num_threads(threads)
        cleanup()


class _Trainer:
    """One run: :meth:`_setup` (data, model, optimiser, resumption), then :meth:`run`'s epochs of steps."""

    def __init__(
        self, cfg: TrainConfig, info: DistInfo, device: torch.device, resume: bool, pause_at_s: float | None = None
    ) -> None:
        self.cfg = cfg
        self.pause_at_s = pause_at_s
        self.info = info
        self.device = device
        self.resume = resume
        self.out = Path(cfg.run.out)
        self.clock = BudgetClock(cfg.optim.max_minutes * 60.0)
        self.last_verify: dict[str, float] | None = None
        self.last_loss: float | None = None
        self.lr = float("nan")
        self.elapsed, self.timed, self.stopped = 0.0, False, False  # the clock's last reading; set by _setup

    # ------------------------------------------------------------------ the run
    def run(self) -> TrainResult:
        """Epochs of steps until the step budget, the time budget or the pause; then the last checkpoint,
        held-out check and final weights."""
        self._setup()
        cfg, spe, clock = self.cfg, self.spe, self.clock
        try:
            while self.step < self.total and not self.stopped:
                epoch, in_epoch = divmod(self.step, spe)
                self.sampler.set_epoch(epoch, in_epoch)
                self._train_mode()
                for images, labels, params in _limit(self.loader, self.total - self.step):
                    if self.frozen and self.step >= self.freeze_until:
                        self._thaw()
                    if self.timed:  # one reading per step, when its batch is ready
                        self.elapsed = main_value(self.clock.elapsed(), self.info, self.device)
                        self.stopped = self._halt(self.elapsed)
                        if self.stopped:  # the previous step used up the budget (or reached the pause)
                            break
                    self._step(images, labels, params)
                    if self.step % spe == 0:
                        break
                    if cfg.run.checkpoint_every and self.step % cfg.run.checkpoint_every == 0:
                        self._save()
                # end of an epoch (or of the run); a stop at an epoch's first batch comes after its end
                if self.step % spe == 0 and not self.stopped:
                    self._end_epoch()
            time_limited = self.stopped and clock.expired(self.elapsed)
            paused = self.stopped and not time_limited
            if self.stopped:
                self._report_stop(time_limited)
            if cfg.run.verify_every and self.step % spe != 0 and self.step > self.start_step and not paused:
                self._check(self.step / spe)  # the run ends between epochs
            if self.saved_at != self.step:
                self._save()
            if self.info.is_main and not paused:
                weights, meta = rs.run_weights(cfg, self.module, self.num_classes)
                ckpt.save_weights(self.out / ckpt.WEIGHTS, weights, {**meta, "step": str(self.step)})
        finally:
            self.log.close()
        return TrainResult(
            self.out, self.step, self.total, self.step // spe, self.last_loss, self.last_verify, self.info.rank,
            clock.elapsed(), time_limited, paused,
        )

    def _step(self, images: Tensor, labels: Tensor, params: Any) -> None:
        """One optimiser step on a batch: augment, forward, backward, update; a log row when one is due."""
        cfg, device = self.cfg, self.device
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        x, _ = augment_batch(images, params, cfg.augment.centring, occlusion=cfg.augment)
        x = to_model_input(x, cfg.model.input_size, cfg.run.channels_last, self.framing)
        target = self._teacher_target(images, params) if self.teacher is not None else None
        progress = self.clock.progress(self.step, cfg.optim.warmup_steps, self.elapsed)
        self.lr = lr_at(self.step, cfg.optim, self.total, self.spe, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group.get("lr_mult", 1.0)
        with autocast(device, cfg.run.amp):
            loss, ce, div, logits = self.forward(x, labels, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            gn = torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.optim.grad_clip)
        else:
            gn = torch.zeros((), device=device)
        self.optimizer.step()
        correct = (logits.argmax(1) == labels).sum()
        self.meters.add(loss.detach(), ce.detach(), div.detach(), correct, len(labels), gn.detach())
        self.images_since += len(labels) * self.info.world_size
        self.step += 1
        self.log.advance()
        if self.step % cfg.run.log_every == 0 or self.step == self.total:
            self._write_row()

    @torch.no_grad()
    def _teacher_target(self, images: Tensor, params: Any) -> Tensor:
        """The frozen teacher's embeddings (B, D) of the WHOLE faces: each sample's flip, nothing else."""
        p = params.detach().cpu().numpy() if isinstance(params, Tensor) else np.asarray(params)
        whole = np.zeros((len(p), N_PARAMS))
        whole[:, FLIP] = p[:, FLIP]
        whole[:, PART] = WHOLE
        x, _ = augment_batch(images, whole)
        assert self.teacher is not None
        t_cfg = self.teacher.config
        with autocast(self.device, self.cfg.run.amp):
            f = self.teacher(to_model_input(x, t_cfg.input_size, self.cfg.run.channels_last, framing_of(t_cfg))).f
        return f.float()

    def _end_epoch(self) -> None:
        """After an epoch's last step: the held-out check and the checkpoint when due."""
        cfg, ep = self.cfg, self.step // self.spe
        if cfg.run.verify_every and ep % cfg.run.verify_every == 0:
            self._check(ep)
        barrier()
        every = cfg.run.checkpoint_every
        if (every and self.step % every == 0) or (not every):
            self._save()
        self.t_log = time.perf_counter()  # images/s counts training only
        self.images_since = 0

    def _report_stop(self, time_limited: bool) -> None:
        """The last log row and a line on why the run stopped early."""
        if self.logged_at != self.step:
            self._write_row()
        self.log.set_total(self.step)
        done = f"; last learning rate {self.lr:.3g}" if self.step > self.start_step else " (nothing left to do)"
        minutes = f"{self.elapsed / 60:.2f} min"
        if time_limited:
            self.log.note(f"time budget optim.max_minutes={self.cfg.optim.max_minutes:g} reached after "
                          f"{self.step} steps ({minutes}){done}")
        else:
            self.log.note(f"paused after {self.step} steps ({minutes}; resume to continue){done}")

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg, info, device = self.cfg, self.info, self.device
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if cfg.run.amp == "bf16" and device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        found = on_main(self.info, lambda: rs.checkpoint_to_resume(cfg, self.resume))
        latest = Path(found) if found is not None else None
        if latest is None:
            check_model(cfg.model)  # fail before the data are packed or read
        self.teacher = load_teacher(cfg.loss.teacher, cfg.model.embedding_dim, device) if cfg.loss.teacher else None
        checked = FolderSource(cfg.data.verify_root) if cfg.data.verify_root and info.is_main else None
        split = self._data()
        self.num_classes = len(split.classes)
        self.sampler = EpochSampler(len(split.train_index), cfg.optim.batch_size, info.world_size, info.rank,
                                    cfg.run.seed)
        self.spe = self.sampler.steps_per_epoch
        self.total = cfg.optim.max_steps or cfg.optim.epochs * self.spe
        self.framing = framing_of(cfg.model)

        self._model(fresh=latest is None)
        if latest is None and cfg.loss.init_head == "imprint":
            head = self.criterion.head
            assert isinstance(head, nn.Module)
            imprint_head(self.model, head, split, cfg.model.input_size, device, cfg.run.amp,
                         cfg.run.channels_last, progress=cfg.run.progress and info.is_main)
        new = [p for m in self.model.new_modules() for p in m.parameters()] if cfg.model.pretrained else []
        self.optimizer = build_optimizer(self.module, cfg.optim, new)
        self.meters = Meters(device)
        self.step = 0
        if latest is not None:
            self.step, restored = rs.load_run(latest, info, self.module, self.optimizer, self.meters, self.clock,
                                              self.sampler)
            if not restored:
                ckpt.seed_everything(cfg.run.seed + 1000 * info.rank + self.step)
        else:
            ckpt.seed_everything(cfg.run.seed + 1000 * info.rank)

        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out / ckpt.CONFIG, cfg.to_yaml().encode("utf-8"))
            classes = {"classes": split.classes, "holdout": split.holdout_classes}
            atomic_write_bytes(self.out / "classes.json", json.dumps(classes).encode("utf-8"))
        self.log = RunLog(cfg, self.out, self.step, self.total, info.is_main)

        self.freeze_until = round(cfg.optim.freeze_trunk_epochs * self.spe)
        self.frozen = self.step < self.freeze_until
        set_trunk_frozen(self.model, self.frozen)
        self.forward = self._make_forward()
        self.pairs = make_verify_pairs(all_held_out(checked) if checked else split, cfg.data.verify_pairs,
                                       cfg.run.seed) if cfg.run.verify_every and info.is_main else None
        dataset = TrainDataset(split, cfg.augment, cfg.run.seed)
        self.loader = make_loader(dataset, self.sampler, cfg.data.workers, device.type == "cuda",
                                  cfg.data.prefetch_factor)
        self.saved_at = self.logged_at = self.start_step = self.step
        self.t_log = self.t0 = time.perf_counter()
        self.images_since = 0
        if latest is None and cfg.run.verify_at_start:
            self._check(0)  # the starting model, before the clock starts
        self.clock.restart(self.clock.before, self.clock.warmup_end_s)  # the loop's clock starts now
        self.timed = self.clock.budget_s > 0 or self.pause_at_s is not None
        self.elapsed = main_value(self.clock.elapsed(), self.info, self.device)
        self.stopped = self._halt(self.elapsed)

    def _data(self) -> Split:
        cfg = self.cfg
        # rank 0 lists (and packs, the first time) the data; the others open it afterwards
        source = on_main(self.info, lambda: open_source(cfg.data, build_pack=True, progress=cfg.run.progress),
                         share=False)
        if not self.info.is_main:
            source = open_source(cfg.data, build_pack=False)
        return split_identities(source, cfg.data.min_images, cfg.data.holdout_identities, cfg.run.seed)

    def _model(self, fresh: bool) -> None:
        """The model (``model.pretrained`` weights on a fresh start), its loss and their training module."""
        cfg = self.cfg
        ckpt.seed_everything(cfg.run.seed)
        model = create_model(cfg.model)
        if fresh:
            init_pretrained(model, cfg.model.pretrained)
        criterion = build_criterion(cfg.loss, self.num_classes, model.embedding_dim)
        module = TrainModule(model, criterion)
        if cfg.run.sync_bn and self.info.enabled:
            module = convert_sync_batchnorm(module, self.device)  # type: ignore[assignment]
            model, criterion = module.model, module.criterion  # type: ignore[assignment]
        module.to(self.device)
        if cfg.run.channels_last:
            module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model, self.criterion, self.module = model, criterion, module

    def _make_forward(self) -> nn.Module:
        """The training forward: compiled and/or DDP-wrapped as configured (rebuilt when the trunk thaws, as
        DDP fixes the set of trained parameters when it wraps the module)."""
        forward: nn.Module = self.module
        if self.cfg.run.compile:
            forward = TrainModule(torch.compile(self.model), self.criterion)  # type: ignore[arg-type]
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            forward = DistributedDataParallel(forward, device_ids=ids)
        return forward

    # ------------------------------------------------------------------ pieces of the run
    def _train_mode(self) -> None:
        self.module.train()
        if self.cfg.run.freeze_bn:
            set_bn_eval(self.module)
        set_trunk_frozen(self.model, self.frozen)

    def _thaw(self) -> None:
        """optim.freeze_trunk_epochs are over: the trunk trains from this step."""
        self.frozen = False
        set_trunk_frozen(self.model, False)
        if not self.cfg.run.freeze_bn:
            self.module.train()
        self.forward = self._make_forward()
        self.log.note(f"optim.freeze_trunk_epochs: trunk trained from step {self.step}")

    def _check(self, ep: float) -> None:
        """The held-out check (rank 0) at the current step; a row of verify.csv."""
        if self.pairs is None:
            return
        cfg, was_training = self.cfg, self.module.training
        self.module.eval()
        res = verify(self.model, self.pairs, cfg.model.input_size, self.device, cfg.run.amp, cfg.run.channels_last)
        if was_training:
            self._train_mode()
        self.last_verify = {k: v for k, v in res.items() if isinstance(v, float)}
        self.log.verify_row({"step": self.step, "epoch": ep, **res})

    def _write_row(self) -> None:
        """A log.csv row: means since the previous row."""
        now, step = time.perf_counter(), self.step
        row: dict[str, Any] = dict(self.meters.reduce_and_reset())
        row.update(step=step, epoch=step / self.spe, lr=self.lr,
                   images_per_s=self.images_since / max(now - self.t_log, 1e-9), elapsed_s=now - self.t0)
        if self.cfg.optim.grad_clip <= 0:
            row["grad_norm"] = None
        self.log.train_row(row)
        self.last_loss = row["loss"]
        self.t_log, self.images_since, self.logged_at = now, 0, step
        clock = self.clock
        if clock.budget_s > 0 and step > self.start_step:  # the bar's total: expected steps at this pace
            pace = (now - self.t0) / (step - self.start_step)
            self.log.set_total(min(self.total, step + math.ceil(max(0.0, clock.budget_s - clock.elapsed()) / pace)))

    def _save(self) -> None:
        rs.save_run(self.cfg, self.info, self.step, self.num_classes, self.module, self.optimizer, self.meters,
                    self.clock, self.sampler)
        self.saved_at = self.step

    def _halt(self, elapsed: float) -> bool:
        """The budget ran out, or the run is to pause."""
        return self.clock.expired(elapsed) or (self.pause_at_s is not None and elapsed >= self.pause_at_s)


def _limit(loader: Any, n: int) -> Iterator[Any]:
    """At most n batches of ``loader`` (stops the DataLoader early at max_steps)."""
    if n <= 0:
        return
    for i, batch in enumerate(loader):
        yield batch
        if i + 1 >= n:
            return
