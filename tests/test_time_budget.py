"""optim.max_minutes: a wall-clock training budget whose cosine schedule follows elapsed time.

The integration tests drive the budget clock with a fake time source that advances by exactly one second
per training step (in the step's partial-face augmentation, which runs once per step), so the expected
step counts and learning rates follow by hand from the documented rule: the clock is read once per step,
when its batch is ready; after the warm-up (in steps) the cosine progress is (t - t_w) / (budget - t_w);
the run stops after the step during which the budget ran out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from partialface.data.images import write_image
from partialface.errors import PartialFaceError
from partialface.training import checkpoint as ckpt
from partialface.training import loop, optim
from partialface.training.config import OptimConfig, TrainConfig
from partialface.training.loop import train
from partialface.training.optim import BudgetClock, lr_at

PEAK = 0.1
WARMUP = 5


def cosine(progress: float, peak: float = PEAK) -> float:
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def test_budget_clock_hand_values() -> None:
    t = [100.0]
    clock = BudgetClock(60.0, timer=lambda: t[0])
    t[0] = 110.0
    assert clock.elapsed() == 10.0 and not clock.expired(59.9) and clock.expired(60.0)
    assert clock.progress(3, 5, 10.0) is None  # still warming up
    assert clock.progress(5, 5, 12.0) == 0.0 and clock.warmup_end_s == 12.0  # warm-up ended at t = 12
    assert clock.progress(9, 5, 36.0) == pytest.approx(0.5)  # (36 - 12) / (60 - 12)
    assert clock.progress(99, 5, 75.0) == 1.0  # clamped past the budget
    assert clock.state() == {"elapsed_s": 10.0, "warmup_end_s": 12.0}
    clock.restart(40.0, 12.0)  # a resumed run: 40 s spent before, counting from now
    t[0] = 115.0
    assert clock.elapsed() == 45.0
    assert BudgetClock(0.0).progress(10, 0, 5.0) is None and not BudgetClock(0.0).expired(1e9)
    # the schedule: progress replaces the step-based cosine; warm-up and min_lr unchanged
    cfg = OptimConfig(lr=0.1, warmup_steps=5, min_lr=0.01)
    assert lr_at(2, cfg, 1000, 10, progress=0.9) == pytest.approx(0.1 * 3 / 5)
    assert lr_at(50, cfg, 1000, 10, progress=0.5) == pytest.approx(0.01 + 0.09 * 0.5)
    assert lr_at(50, cfg, 1000, 10, progress=1.0) == pytest.approx(0.01)


def test_max_minutes_is_checked() -> None:
    with pytest.raises(PartialFaceError, match=r"optim\.max_minutes: must be >= 0"):
        TrainConfig.from_yaml("tiny", ["optim.max_minutes=-1"])
    assert TrainConfig.from_yaml("tiny", ["optim.max_minutes=2.5"]).optim.max_minutes == 2.5


# ---------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 identities x 8 noise faces (the loop's arithmetic is under test, not learning)."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for c in range(4):
        base = rng.integers(40, 216, 3)
        for i in range(8):
            img = base + rng.normal(0, 20, (160, 160, 3))
            write_image(root / f"id{c}" / f"{i}.png", np.clip(img, 0, 255).astype(np.uint8))
    return root


@pytest.fixture()
def one_second_per_step(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Fake budget time: +1 s whenever the loop augments a training batch (once per step)."""
    t = [0.0]
    real = loop.augment_batch

    def augment(*args: Any, **kwargs: Any) -> Any:
        t[0] += 1.0
        return real(*args, **kwargs)

    monkeypatch.setattr(optim, "budget_time", lambda: t[0])
    monkeypatch.setattr(loop, "augment_batch", augment)
    yield t


def budget_config(root: Path, out: Path, minutes: float) -> TrainConfig:
    # batch 8 of 32 faces: 4 steps per epoch; epochs far beyond the budget; checkpoints only at the end
    return TrainConfig.from_yaml("tiny", [
        f"data.root={root}", f"run.out={out}", "run.threads=1", "run.verify_every=0", "run.log_every=1",
        "optim.batch_size=8", "optim.epochs=1000", f"optim.warmup_steps={WARMUP}", f"optim.lr={PEAK}",
        "optim.min_lr=0.0", f"optim.max_minutes={minutes}", "run.checkpoint_every=1000",
    ])


def logged_lrs(out: Path) -> list[float]:
    import csv

    with (out / "log.csv").open(newline="") as f:
        return [float(r["lr"]) for r in csv.DictReader(f)]


def test_budget_stops_the_run_and_the_cosine_ends_at_min_lr(
    faces: Path, tmp_path: Path, one_second_per_step: list[float]
) -> None:
    # Budget 30 s at 1 s per step. Before 0-based step s the clock reads s seconds; the warm-up (steps
    # 0-4) ends at step 5, t_w = 5 s; progress(s) = (s - 5) / (30 - 5). Step 29 ends at 30 s: 30 steps,
    # the last one at progress 24/25 (lr 0.1 * (1 + cos(0.96 pi)) / 2 = 0.0004, near min_lr = 0).
    res = train(budget_config(faces, tmp_path / "run", 0.5))
    assert res.time_limited and res.step == 30 and res.total_steps == 4000
    assert res.elapsed_s == 30.0
    want = [PEAK * (s + 1) / WARMUP for s in range(WARMUP)]
    want += [cosine((s - 5) / 25) for s in range(WARMUP, 30)]
    assert logged_lrs(tmp_path / "run") == pytest.approx(want, abs=1e-12)
    assert want[-1] == pytest.approx(0.000394, abs=1e-6)
    latest = ckpt.latest_checkpoint(tmp_path / "run")
    assert latest is not None and latest.name == "step_0000030"
    state = ckpt.load_state(latest / ckpt.STATE)
    assert state["clock"]["elapsed_s"] == 30.0 and state["clock"]["warmup_end_s"] == 5.0
    _, meta = ckpt.load_weights(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == "30"


def test_resume_keeps_the_clock_and_extends_the_budget(
    faces: Path, tmp_path: Path, one_second_per_step: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    first = train(budget_config(faces, out, 0.25))  # 15 s: 15 steps, progress (s - 5) / (15 - 5)
    assert first.step == 15 and first.time_limited
    assert logged_lrs(out)[-1] == pytest.approx(cosine(9 / 10), abs=1e-12)
    # resuming with the same budget does nothing more
    again = train(budget_config(faces, out, 0.25), resume=True)
    assert again.step == 15 and again.time_limited
    assert "nothing left to do" in capsys.readouterr().err
    # a longer budget continues the clock from 15 s and keeps t_w = 5 s: from step 15 on, the learning
    # rates are those of a run budgeted 30 s from the start, and it ends at the same step
    longer = train(budget_config(faces, out, 0.5), resume=True)
    assert longer.step == 30 and longer.elapsed_s == 30.0
    lrs = logged_lrs(out)
    assert len(lrs) == 30
    assert lrs[15:] == pytest.approx([cosine((s - 5) / 25) for s in range(15, 30)], abs=1e-12)


def test_pauses_split_a_run_without_changing_its_schedule(
    faces: Path, tmp_path: Path, one_second_per_step: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    # a 30 s run taken in three 10 s slices (as the demo shares the machine between its models): the
    # learning rates are exactly those of the uninterrupted run, and only the last slice ends it
    out = tmp_path / "run"
    cfg = budget_config(faces, out, 0.5)
    first = train(cfg, pause_at_s=10)
    assert first.step == 10 and first.paused and not first.time_limited
    assert not (out / "model.safetensors").exists()  # not finished: only its checkpoint
    assert "paused after 10 steps" in capsys.readouterr().err
    assert train(cfg, resume=True, pause_at_s=20).step == 20
    last = train(cfg, resume=True)
    assert last.step == 30 and last.time_limited and not last.paused and last.elapsed_s == 30.0
    want = [PEAK * (s + 1) / WARMUP for s in range(WARMUP)] + [cosine((s - 5) / 25) for s in range(WARMUP, 30)]
    assert logged_lrs(out) == pytest.approx(want, abs=1e-12)
    assert (out / "model.safetensors").is_file()


def test_budget_longer_than_the_run_changes_nothing_but_the_schedule(
    faces: Path, tmp_path: Path, one_second_per_step: list[float]
) -> None:
    # max_steps caps a budgeted run: 12 steps of a 60 s budget; the cosine follows time, not max_steps
    cfg = budget_config(faces, tmp_path / "run", 1.0).with_overrides(["optim.max_steps=12"])
    res = train(cfg)
    assert res.step == 12 and not res.time_limited
    assert logged_lrs(tmp_path / "run")[-1] == pytest.approx(cosine((11 - 5) / 55), abs=1e-12)


@pytest.mark.slow
def test_ddp_ranks_stop_together(faces: Path, tmp_path: Path) -> None:
    # Two gloo ranks on a real clock: the budget's reading is rank 0's on both, so they stop after the
    # same step (otherwise one would wait forever in the next all-reduce).
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = tmp_path / "ddp"
    argv = [sys.executable, "-m", "partialface.cli", "train", "--config", "tiny", "--out", str(out),
            f"data.root={faces}", "run.threads=1", "run.verify_every=0", "optim.batch_size=8",
            "optim.epochs=100000", "optim.max_minutes=0.05", "run.sync_bn=true"]
    base = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    repo = str(Path(__file__).resolve().parents[1])
    procs = [
        subprocess.Popen(argv, env={**base, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo, "WORLD_SIZE": "2",
                                    "RANK": str(r), "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1",
                                    "MASTER_PORT": port},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for r in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "time budget optim.max_minutes=0.05 reached" in outs[0]
    steps = int(outs[0].split("trained ")[1].split("/")[0])
    _, meta = ckpt.load_weights(out / "model.safetensors")
    assert steps >= 1 and meta["step"] == str(steps)
