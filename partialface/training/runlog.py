"""Rank 0's record of a run: log.csv and verify.csv (appended row by row), TensorBoard scalars, the progress
bar; and the loss meters summed on the device between rows.

log.csv: one row per ``log_every`` steps (step, epoch, lr, loss, ce, div, acc, grad_norm, images_per_s,
elapsed_s: means over the interval and the global batch); verify.csv: one row per held-out check.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from partialface.data.images import atomic_write_bytes
from partialface.training.config import TrainConfig
from partialface.training.distributed import all_reduce_sum

LOG_FIELDS = ("step", "epoch", "lr", "loss", "ce", "div", "acc", "grad_norm", "images_per_s", "elapsed_s")
VERIFY_FIELDS = ("step", "epoch", "pairs", "holistic_acc", "partial_acc", "method", "s_min", "s_max")


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

