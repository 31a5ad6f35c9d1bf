"""Training: config, schedule, sampler, data sources, a learning tiny run, exact resume after SIGKILL,
2-process DDP against 1 process, and checkpoints that are never unpickled."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from partialface.cli import main as cli_main
from partialface.data.images import read_image, write_image
from partialface.errors import PartialFaceError
from partialface.geometry.align import resize_fallback
from partialface.models import create_model
from partialface.models.framing import framing_of
from partialface.training import checkpoint as ckpt
from partialface.training.config import OptimConfig, TrainConfig
from partialface.training.data import (
    EpochSampler,
    FolderSource,
    PackSource,
    TrainDataset,
    all_held_out,
    make_verify_pairs,
    open_source,
    pack_dataset,
    split_identities,
)
from partialface.training.loop import train
from partialface.training.optim import build_optimizer, lr_at
from partialface.training.resume import resume_mismatch
from partialface.training.verify import verify

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- helpers
def make_identities(root: Path, n_id: int, n_img: int, seed: int = 0) -> Path:
    """Synthetic 'aligned faces': per identity a colour and a stripe pattern (direction, frequency) over
    the whole 160x160 image, plus per-image noise — any partial rectangle still shows the identity."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:160, 0:160]
    for c in range(n_id):
        base = rng.integers(40, 216, 3)
        angle, freq = np.pi * c / n_id, 0.08 + 0.05 * c
        pattern = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        sign = 1 - 2 * (np.arange(3) == c % 3)
        for i in range(n_img):
            img = base + 60 * pattern[:, :, None] * sign + rng.normal(0, 12, (160, 160, 3))
            write_image(root / f"id{c:02d}" / f"{i:03d}.png", np.clip(img, 0, 255).astype(np.uint8))
    return root


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def tiny_config(root: Path, out: Path, *overrides: str) -> TrainConfig:
    return TrainConfig.from_yaml("tiny", [f"data.root={root}", f"run.out={out}", "run.threads=1", *overrides])


def cli_args(root: Path, out: Path, *overrides: str) -> list[str]:
    return ["train", "--config", "tiny", "--out", str(out), f"data.root={root}", "run.threads=1", *overrides]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    return env


@pytest.fixture(scope="module")
def ds48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 identities x 8 images."""
    return make_identities(tmp_path_factory.mktemp("ds48"), 6, 8)


# ---------------------------------------------------------------------------------------------- config
def test_config_yaml_presets_and_overrides(tmp_path: Path) -> None:
    cfg = TrainConfig.from_yaml("tiny", ["optim.lr=1", "model.K=8", "augment.parts=[Nose, Mouth]", "run.out=2024"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.K == 8 and cfg.model.input_size == 64  # tiny model preset + override
    assert cfg.augment.parts == ("Nose", "Mouth") and cfg.run.out == "2024"
    paper = TrainConfig.from_yaml("paper")
    assert (paper.model.widths, paper.model.K, paper.optim.lr, paper.optim.batch_size) == (
        (256, 512, 1024, 2048),
        12,
        0.1,
        256,
    )
    assert paper.run.amp == "bf16" and paper.run.channels_last
    cpu = TrainConfig.from_yaml("cpu")
    assert cpu.model.preset_name == "cpu" and cpu.optim.batch_size == 64 and cpu.run.amp == "none"
    # a saved config reloads to the same thing
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["optim.lrr=0.1"], "unknown option optim.lrr; valid options of optim: batch_size, betas,"),
        (["optim.lr=fast"], "optim.lr must be a number, got 'fast'"),
        (["optim.epochs=2.5"], "optim.epochs must be an integer, got 2.5"),
        (["run.amp=fp16"], "run.amp: must be one of none, bf16"),
        (["trainer.lr=1"], "unknown section 'trainer'; valid sections: model, loss, data, augment, optim, run"),
        (["optim.lr"], "write SECTION.OPTION=VALUE"),
        (["model.K=0"], "model.K: must be a positive integer"),
        (["augment.parts=[Ear]"], "augment.parts: unknown part(s) ['Ear']"),
    ],
)
def test_config_errors_are_one_clear_line(overrides: list[str], needle: str) -> None:
    with pytest.raises(PartialFaceError) as e:
        TrainConfig.from_yaml("tiny", overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_config_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  moment: 0.9\n")
    with pytest.raises(PartialFaceError, match=r"bad.yaml: unknown option optim.moment; valid options of optim"):
        TrainConfig.from_yaml(bad)
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(PartialFaceError, match=r"not valid YAML \(line"):
        TrainConfig.from_yaml(bad)
    with pytest.raises(PartialFaceError, match="no such config file; packaged presets: cpu, dlib, paper, tiny"):
        TrainConfig.from_yaml(tmp_path / "missing")
    # through the command line: exit status 2 and one line
    assert cli_main(["train", "--config", "tiny", "optim.batch_size=big"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("partialface: error:") and "optim.batch_size" in err[0]


def test_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", "--config", "cpu", "--print-config", "model.K=4"]) == 0
    printed = capsys.readouterr().out
    assert "K: 4" in printed and "batch_size: 64" in printed


# ---------------------------------------------------------------------------------------------- optim
def test_learning_rate_schedule_hand_computed() -> None:
    cos = OptimConfig(lr=0.1, warmup_steps=10, schedule="cosine", min_lr=0.0)
    assert lr_at(0, cos, 110, 10) == pytest.approx(0.01)
    assert lr_at(9, cos, 110, 10) == pytest.approx(0.1)
    assert lr_at(10, cos, 110, 10) == pytest.approx(0.1)  # cosine starts at the peak
    assert lr_at(60, cos, 110, 10) == pytest.approx(0.05)  # half way: (1 + cos(pi/2)) / 2
    assert lr_at(85, cos, 110, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.75)))
    step = OptimConfig(lr=0.1, warmup_steps=0, schedule="step", lr_milestones=(2, 3), lr_gamma=0.1)
    assert [lr_at(s, step, 50, 10) for s in (0, 19, 20, 29, 30)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


def test_weight_decay_skips_batchnorm_and_biases() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    opt = build_optimizer(net, OptimConfig(weight_decay=5e-4, nesterov=True))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert decayed == {id(net[0].weight), id(net[2].weight)}
    assert opt.param_groups[0]["weight_decay"] == 5e-4 and opt.param_groups[1]["weight_decay"] == 0.0
    assert opt.param_groups[0]["nesterov"]
    opt = build_optimizer(net, OptimConfig(no_decay_bn_bias=False, optimizer="adamw"))
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 1
    # new (randomly initialised) layers get their own groups with lr_mult; decay rules unchanged
    opt = build_optimizer(net, OptimConfig(new_lr_mult=20.0), new=net[2].parameters())
    groups = {(g["weight_decay"], g["lr_mult"]): {id(p) for p in g["params"]} for g in opt.param_groups}
    assert groups == {(5e-4, 1.0): {id(net[0].weight)}, (0.0, 1.0): {id(net[0].bias), id(net[1].weight),
                      id(net[1].bias)}, (5e-4, 20.0): {id(net[2].weight)}, (0.0, 20.0): {id(net[2].bias)}}
    with pytest.raises(PartialFaceError, match=r"optim\.new_lr_mult"):
        OptimConfig(new_lr_mult=0.0)


# ---------------------------------------------------------------------------------------------- data
def test_sampler_ranks_split_the_global_batch_and_resume_mid_epoch() -> None:
    one = EpochSampler(50, 8, seed=3)
    one.set_epoch(2)
    full = list(one)
    assert len(full) == 48 and len({p for p, _ in full}) == 48 and all(e == 2 for _, e in full)
    ranks = []
    for r in range(2):
        s = EpochSampler(50, 8, world_size=2, rank=r, seed=3)
        s.set_epoch(2)
        ranks.append([p for p, _ in s])
    for b in range(6):  # global batch b = union of the ranks' local batches b
        assert sorted(ranks[0][4 * b : 4 * b + 4] + ranks[1][4 * b : 4 * b + 4]) == sorted(
            p for p, _ in full[8 * b : 8 * b + 8]
        )
    one.set_epoch(2, start_step=4)
    assert list(one) == full[32:] and len(one) == 16
    one.set_epoch(3)
    assert [p for p, _ in one] != [p for p, _ in full]  # a new permutation each epoch
    with pytest.raises(PartialFaceError, match="not divisible by the 3 processes"):
        EpochSampler(50, 8, world_size=3)


def test_sources_pack_split_and_verify_pairs(tmp_path: Path) -> None:
    root = make_identities(tmp_path / "faces", 5, 3)
    write_image(root / "id05" / "only.png", np.zeros((160, 160, 3), np.uint8))  # 1 image: dropped (min 2)
    folder = FolderSource(root)
    assert len(folder) == 16 and folder.classes[-1] == "id05"
    pack = PackSource(pack_dataset(root, tmp_path / "pack", progress=False))
    assert pack.paths == folder.paths and np.array_equal(pack.labels, folder.labels)
    for i in (0, 7, 15):
        assert np.array_equal(pack.load(i), folder.load(i))
    split = split_identities(pack, min_images=2, holdout=2, seed=0)
    assert (
        len(split.classes) == 3
        and len(split.holdout_classes) == 2
        and "id05" not in split.classes + split.holdout_classes
    )
    assert not set(split.classes) & set(split.holdout_classes)
    assert sorted(split.train_labels.tolist()) == sorted([0, 1, 2] * 3)
    for i, lab in zip(split.train_index, split.train_labels, strict=True):
        assert pack.classes[pack.labels[i]] == split.classes[lab]
    pairs = make_verify_pairs(split, 10, seed=0)
    assert pairs is not None and pairs.same.sum() == 5 and len(pairs.images) <= 6
    held = {pack.paths[i].split("/")[0] for i in split.holdout_index}
    assert held == set(split.holdout_classes)
    # deterministic augmentation per (position, epoch), whatever the call order
    ds = TrainDataset(split, TrainConfig().augment, seed=1)
    a = ds[(4, 2)][2]
    ds[(1, 0)]
    assert np.array_equal(ds[(4, 2)][2], a) and not np.array_equal(ds[(4, 3)][2], a)
    with pytest.raises(PartialFaceError, match="holdout_identities: 4 leaves fewer than 2"):
        split_identities(pack, min_images=2, holdout=4, seed=0)


def test_unaligned_images_are_refused_or_aligned(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    noise = np.random.default_rng(0).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    write_image(root / "a" / "x.png", noise)
    write_image(root / "b" / "y.png", noise[::-1].copy())
    with pytest.raises(
        PartialFaceError, match=r"x.png: 100x120 image, expected an aligned 160x160 face; set data.align"
    ):
        FolderSource(root).load(0)
    # on-the-fly alignment: no face in noise -> the recipe's fallback (whole image resized), cached on disk
    src = FolderSource(root, align=True, align_cache=str(tmp_path / "cache"))
    assert np.array_equal(src.load(0), resize_fallback(noise))
    assert (tmp_path / "cache" / "a" / "x.png").is_file()
    assert np.array_equal(FolderSource(root, align=True, align_cache=str(tmp_path / "cache")).load(0), src.load(0))


# ---------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path]:
    """A 36-step tiny run on 7 synthetic identities (2 held out), TensorBoard on."""
    base = tmp_path_factory.mktemp("tinyrun")
    root = make_identities(base / "faces", 7, 10)
    cfg = tiny_config(
        root,
        base / "run",
        "optim.max_steps=36",
        "data.holdout_identities=2",
        "run.verify_every=4",
        "run.tensorboard=true",
        "optim.lr=0.1",
        "run.log_every=1",
    )
    train(cfg)
    return cfg, base / "run"


def test_tiny_run_learns(tiny_run: tuple[TrainConfig, Path]) -> None:
    _, out = tiny_run
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 37))
    loss = np.array([float(r["loss"]) for r in rows])
    first, last = loss[:4].mean(), loss[-4:].mean()
    assert last < 0.5 * first, (first, last)
    assert float(rows[-1]["acc"]) >= 0.75
    ver = read_log(out / "verify.csv")
    assert [int(r["epoch"]) for r in ver] == [4, 8, 12]  # 50 training faces / 16 = 3 steps per epoch
    assert all(r["method"] == "10-fold" and int(r["pairs"]) == 40 for r in ver)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "config.yaml").is_file() and (out / "model.safetensors").is_file()


def test_load_model_rebuilds_the_trained_model(tiny_run: tuple[TrainConfig, Path]) -> None:
    cfg, out = tiny_run
    model = ckpt.load_model(out)
    # the checkpoint records the framing "auto" resolved to (partialface.models.framing)
    assert not model.training and model.config == cfg.model.replace(framing=framing_of(cfg.model))
    # the logged end-of-epoch check, recomputed with the model loaded from disk, gives the same accuracies
    split = split_identities(open_source(cfg.data), cfg.data.min_images, cfg.data.holdout_identities, cfg.run.seed)
    pairs = make_verify_pairs(split, cfg.data.verify_pairs, cfg.run.seed)
    assert pairs is not None
    res = verify(model, pairs, cfg.model.input_size, torch.device("cpu"), "none")
    last = read_log(out / "verify.csv")[-1]
    assert res["holistic_acc"] == pytest.approx(float(last["holistic_acc"]))
    assert res["partial_acc"] == pytest.approx(float(last["partial_acc"]))
    # the same weights through a step folder and the file itself
    step = ckpt.latest_checkpoint(out)
    assert step is not None and step.name == "step_0000036"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ckpt.load_model(step)(x).f, model(x).f)
        assert torch.equal(ckpt.load_model(out / "model.safetensors")(x).f, model(x).f)


def test_check_on_a_separate_held_out_folder_logs_the_spread_of_s(ds48: Path, tmp_path: Path) -> None:
    held = make_identities(tmp_path / "held", 3, 6, seed=7)  # identities the run never trains on
    cfg = tiny_config(ds48, tmp_path / "run", "optim.max_steps=6", f"data.verify_root={held}", "run.verify_every=1",
                      "data.verify_pairs=20")
    assert cfg.model.name == "ours"
    train(cfg)
    classes = json.loads((tmp_path / "run" / "classes.json").read_text())
    assert len(classes["classes"]) == 6 and classes["holdout"] == []  # all of ds48 trained on
    rows = read_log(tmp_path / "run" / "verify.csv")
    assert len(rows) == 2 and all(int(r["pairs"]) == 20 for r in rows)
    # s over the held-out faces, recomputed by hand from the saved model: min_k / max_k, averaged over faces
    model = ckpt.load_model(tmp_path / "run")
    faces = torch.from_numpy(np.stack([read_image(p) for p in sorted(held.rglob("*.png"))]))
    pairs = make_verify_pairs(all_held_out(FolderSource(held)), 20, cfg.run.seed)
    assert pairs is not None and set(map(tuple, pairs.images.flatten(1).tolist())) <= set(
        map(tuple, faces.flatten(1).tolist()))
    x = (pairs.images.permute(0, 3, 1, 2).float() - 127.5) / 128  # the project's normalisation, then the resize
    x = torch.nn.functional.interpolate(x, size=cfg.model.input_size, mode="bilinear", antialias=True,
                                        align_corners=False)
    with torch.no_grad():
        s = model(x).s
    assert s is not None
    k = s.shape[1]
    s_min, s_max = float(rows[-1]["s_min"]), float(rows[-1]["s_max"])
    assert s_min <= 1 / k <= s_max
    assert s_min == pytest.approx(float(s.min(1).values.mean()), abs=1e-4)
    assert s_max == pytest.approx(float(s.max(1).values.mean()), abs=1e-4)
    with pytest.raises(PartialFaceError, match="nowhere"):
        train(tiny_config(ds48, tmp_path / "run2", f"data.verify_root={tmp_path / 'nowhere'}", "run.verify_every=1"))
    assert not (tmp_path / "run2").exists()  # refused before anything was written


def test_a_run_with_occluder_augmentation(ds48: Path, tmp_path: Path) -> None:
    cfg = tiny_config(ds48, tmp_path / "run", "optim.max_steps=3", "augment.p_occlude=1.0", "augment.p_whole=1.0",
                      "augment.occluders=[mask,face]", "augment.occluder_looks=2", "augment.occluder_levels=1")
    assert cfg.augment.occluders == ("mask", "face") and cfg.augment.occlude_coverage == (0.15, 0.45)
    train(cfg)
    rows = read_log(tmp_path / "run" / "log.csv")
    assert len(rows) == 3 and all(np.isfinite(float(r["loss"])) for r in rows)


def test_a_holistic_teacher_pulls_the_embedding(ds48: Path, tmp_path: Path) -> None:
    from partialface.losses import Criterion, LossConfig
    from partialface.models.outputs import ModelOutput

    # the term by hand: lambda * mean(1 - cos(f, t)) on top of the cross-entropy
    crit = Criterion(LossConfig(lambda_teacher=0.5), num_classes=3, embedding_dim=2)
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    labels = torch.tensor([0, 1])
    plain, pulled = crit(ModelOutput(f=f), labels), crit(ModelOutput(f=f), labels, t)
    want = ((1 - 1 / math.sqrt(2)) + (1 - -1)) / 2
    assert pulled.teacher is not None and float(pulled.teacher) == pytest.approx(want)
    assert float(pulled.total.detach()) == pytest.approx(float(plain.total.detach()) + 0.5 * want)
    # a run with a teacher (a frozen tiny model of the same size) trains; one of another size is refused early
    teacher_run = tmp_path / "teacher"
    train(tiny_config(ds48, teacher_run, "optim.max_steps=2"))
    cfg = tiny_config(ds48, tmp_path / "student", "optim.max_steps=3", f"loss.teacher={teacher_run}",
                      "loss.lambda_teacher=2.0")
    train(cfg)
    assert all(np.isfinite(float(r["loss"])) for r in read_log(tmp_path / "student" / "log.csv"))
    with pytest.raises(PartialFaceError, match="embeds in 32 dimensions, the model in 16"):
        train(tiny_config(ds48, tmp_path / "s2", f"loss.teacher={teacher_run}", "model.embedding_dim=16"))
    assert not (tmp_path / "s2").exists()


def test_refuses_to_overwrite_a_run_and_to_resume_a_changed_config(tiny_run: tuple[TrainConfig, Path]) -> None:
    cfg, _ = tiny_run
    with pytest.raises(PartialFaceError, match=r"already holds a run .* pass --resume"):
        train(cfg)
    with pytest.raises(PartialFaceError, match=r"differs from the run's saved config in optim\.lr"):
        train(cfg.with_overrides(["optim.lr=0.5"]), resume=True)
    # a machine with more cores: the thread count is not part of the experiment
    assert not resume_mismatch(cfg, cfg.with_overrides(["run.threads=2", "data.workers=0"]))


def test_resume_refuses_changed_training_data(tmp_path: Path) -> None:
    root = make_identities(tmp_path / "faces", 3, 6)
    out = tmp_path / "run"
    train(tiny_config(root, out, "optim.max_steps=2", "run.verify_every=0"))
    write_image(root / "id00" / "new.png", np.zeros((160, 160, 3), np.uint8))
    with pytest.raises(PartialFaceError, match=r"training data changed since step_0000002 \(18 -> 19 training"):
        train(tiny_config(root, out, "optim.max_steps=4", "run.verify_every=0"), resume=True)


def _losses(path: Path) -> list[tuple[str, ...]]:
    return [(r["step"], r["lr"], r["loss"], r["ce"], r["div"], r["acc"]) for r in read_log(path)]


def test_resume_after_sigkill_repeats_the_uninterrupted_run(ds48: Path, tmp_path: Path) -> None:
    # 48 faces, batch 8: 6 steps per epoch; checkpoints every 4 steps, so resuming starts mid-epoch.
    opts = ("optim.batch_size=8", "optim.max_steps=30", "run.checkpoint_every=4", "run.verify_every=0")
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "partialface.cli", *cli_args(ds48, killed, *opts)]
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pointer = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not pointer.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{output}"
    at_kill = len(read_log(killed / "log.csv"))
    assert 4 <= at_kill < 30
    done = subprocess.run([*cmd, "--resume"], env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # the uninterrupted reference, in this process
    ref = tmp_path / "ref"
    train(tiny_config(ds48, ref, *opts))
    resumed, reference = _losses(killed / "log.csv"), _losses(ref / "log.csv")
    assert [int(r[0]) for r in resumed] == list(range(1, 31))
    # bit-exact: the CSV holds repr() of every float (same kernels, one thread, same data and RNG states)
    assert resumed == reference
    wa, _ = ckpt.load_weights(killed / "model.safetensors")
    wb, _ = ckpt.load_weights(ref / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ddp_two_processes_match_one_process(ds48: Path, tmp_path: Path) -> None:
    # Global batch 16 = 2 ranks x 8 on gloo; BatchNorm statistics synchronised across the ranks (sync_bn),
    # so both runs optimise the same objective: losses and weights must agree to float tolerance.
    opts = ("optim.max_steps=4", "run.sync_bn=true", "run.verify_every=0")
    ddp = tmp_path / "ddp"

    def launch() -> tuple[list[int | None], list[str]]:
        port = str(free_port())
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "partialface.cli", *cli_args(ds48, ddp, *opts)],
                env=child_env(
                    WORLD_SIZE="2", RANK=str(r), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=port
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for r in range(2)
        ]
        outs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
        return [p.returncode for p in procs], outs

    codes, outs = launch()
    assert codes == [0, 0], outs
    assert "trained 4/4 steps" in outs[0] and "trained" not in outs[1]  # only rank 0 reports
    one = tmp_path / "one"
    train(tiny_config(ds48, one, *opts, "data.workers=2"))  # decoding in worker processes changes nothing
    a, b = _losses(ddp / "log.csv"), _losses(one / "log.csv")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b, strict=True):
        assert ra[:2] == rb[:2] and ra[5] == rb[5]
        np.testing.assert_allclose(np.array(ra[2:5], float), np.array(rb[2:5], float), rtol=1e-4)
    # Weights: the two runs' total updates agree to 0.1% (measured: ~1e-4, float32 summation order and the
    # float64 statistics of the synchronised BN; without sync_bn the per-rank BN statistics make it ~0.2).
    wa, _ = ckpt.load_weights(ddp / "model.safetensors")
    wb, _ = ckpt.load_weights(one / "model.safetensors")
    torch.manual_seed(0)  # run.seed: the runs' initial weights
    init = create_model(tiny_config(ds48, one).model).state_dict()
    diff = update = 0.0
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-3)
        if k.startswith("model.") and wa[k].is_floating_point():
            diff += float((wa[k] - wb[k]).pow(2).sum())
            update += float((wb[k] - init[k[6:]]).pow(2).sum())
    assert update > 1.0 and math.sqrt(diff / update) < 1e-3
    # a user error found on rank 0 (the run folder is taken) stops every rank with the same one line
    codes, outs = launch()
    assert codes == [2, 2] and all("already holds a run" in o for o in outs), outs


# ---------------------------------------------------------------------------------------------- pickle
class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def test_checkpoints_are_never_unpickled(tmp_path: Path, ds48: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "state.pt"
    torch.save({"step": 1, "payload": _Evil(str(marker))}, evil)
    with pytest.raises(PartialFaceError, match="refused to load"):
        ckpt.load_state(evil)
    assert not marker.exists()
    # weights are safetensors only: a pickle file is refused whatever its name
    torch.save({"model.x": torch.zeros(1), "p": _Evil(str(marker))}, tmp_path / "w.safetensors")
    with pytest.raises(PartialFaceError, match="not a safetensors weights file"):
        ckpt.load_model(tmp_path / "w.safetensors")
    with pytest.raises(PartialFaceError, match="pickles are never loaded"):
        ckpt.load_model(evil)
    assert not marker.exists()
    # a resumed run whose state file was replaced by a pickle refuses to start
    out = tmp_path / "run"
    train(tiny_config(ds48, out, "optim.max_steps=2", "run.verify_every=0"))
    latest = ckpt.latest_checkpoint(out)
    assert latest is not None
    torch.save({"step": 2, "optimizer": _Evil(str(marker))}, latest / ckpt.STATE)
    with pytest.raises(PartialFaceError, match="refused to load"):
        train(tiny_config(ds48, out, "optim.max_steps=4", "run.verify_every=0"), resume=True)
    assert not marker.exists()


def test_options_bf16_channels_last_frozen_bn_clipping_adamw(ds48: Path, tmp_path: Path) -> None:
    out = tmp_path / "opts"
    cfg = tiny_config(
        ds48, out, "optim.max_steps=3", "run.verify_every=0", "run.amp=bf16", "run.channels_last=true",
        "run.freeze_bn=true", "optim.grad_clip=0.5", "optim.optimizer=adamw", "optim.lr=0.001",
        "optim.schedule=step", "optim.lr_milestones=[0.5]", "augment.p_lowres=0.5", "augment.centring=integer",
    )  # fmt: skip
    result = train(cfg)
    assert result.step == 3 and result.last_loss is not None and math.isfinite(result.last_loss)
    rows = read_log(out / "log.csv")
    assert all(float(r["grad_norm"]) > 0 for r in rows)  # the norm before clipping is logged
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.001 * 1 / 5, 0.001 * 2 / 5, 0.001 * 3 / 5])
    weights, meta = ckpt.load_weights(out / "model.safetensors")
    assert meta["step"] == "3" and meta["num_classes"] == "6"
    bn = [k[: -len(".running_mean")] for k in weights if k.endswith(".running_mean")]
    assert bn  # frozen BatchNorm: running statistics never updated
    for k in bn:
        assert torch.equal(weights[k + ".running_mean"], torch.zeros_like(weights[k + ".running_mean"]))
        assert torch.equal(weights[k + ".running_var"], torch.ones_like(weights[k + ".running_var"]))
        assert int(weights[k + ".num_batches_tracked"]) == 0


def test_pack_only_command(ds48: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pack = tmp_path / "pack"
    assert cli_main([*cli_args(ds48, tmp_path / "run", f"data.pack={pack}"), "--pack-only"]) == 0
    assert "packed 48 images of 6 identities" in capsys.readouterr().out
    source = open_source(tiny_config(ds48, tmp_path / "run", f"data.pack={pack}").data)
    assert isinstance(source, PackSource) and len(source) == 48


# ---------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_torch_compile_gives_the_same_losses(ds48: Path, tmp_path: Path) -> None:
    opts = ("optim.max_steps=3", "run.verify_every=0")
    train(tiny_config(ds48, tmp_path / "eager", *opts))
    train(tiny_config(ds48, tmp_path / "compiled", *opts, "run.compile=true"))
    a, b = _losses(tmp_path / "eager" / "log.csv"), _losses(tmp_path / "compiled" / "log.csv")
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_allclose(np.array(ra[2:5], float), np.array(rb[2:5], float), rtol=1e-4)


@pytest.mark.slow
def test_torchrun_launcher(ds48: Path, tmp_path: Path) -> None:
    out = tmp_path / "torchrun"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "partialface.cli",
        *cli_args(ds48, out, "optim.max_steps=3", "run.sync_bn=true", "run.verify_every=0"),
    ]
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trained 3/3 steps" in done.stdout and len(read_log(out / "log.csv")) == 3


@pytest.mark.slow
def test_real_faces_aligned_on_the_fly(celeba_root: Path, tmp_path: Path) -> None:
    # 8 CelebA identities (raw 89x109 photos): MTCNN + the project's aligner on the fly, cached as PNG.
    root = tmp_path / "raw"
    ids = sorted(p for p in celeba_root.iterdir() if p.is_dir() and len(list(p.iterdir())) >= 4)[:8]
    for d in ids:
        (root / d.name).mkdir(parents=True)
        for f in sorted(d.iterdir())[:4]:
            (root / d.name / f.name).symlink_to(f)
    cache = tmp_path / "aligned"
    out = tmp_path / "run"
    cfg = tiny_config(root, out, "data.align=true", f"data.align_cache={cache}", "optim.max_steps=4",
                      "data.holdout_identities=2", "run.verify_every=1", "data.verify_pairs=20")  # fmt: skip
    result = train(cfg)
    assert result.step == 4 and result.last_loss is not None and math.isfinite(result.last_loss)
    cached = sorted(cache.rglob("*.png"))
    assert len(cached) == 32 and all(read_image(p).shape == (160, 160, 3) for p in cached)


def test_held_out_check_on_the_fast_path_equals_the_model(tmp_path: Path) -> None:
    """verify() through ONNX Runtime (a float32 run on the CPU) gives the model's own embeddings to float rounding
    and the same accuracies; under autocast it keeps the model."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    from partialface.training.data import FolderSource, make_verify_pairs, split_identities
    from partialface.training.verify import embed, fast_runner, verify

    split = split_identities(FolderSource(make_identities(tmp_path / "faces", 8, 4)), min_images=2, holdout=6, seed=0)
    pairs = make_verify_pairs(split, 24, seed=0)
    assert pairs is not None
    torch.manual_seed(0)
    model = create_model("ours", preset="tiny", input_size=160).eval()
    cpu = torch.device("cpu")
    runner = fast_runner(model, cpu, "none", 160)
    assert runner is not None and fast_runner(model, cpu, "bf16", 160) is None
    a = embed(model, pairs.images, 160, cpu, "none", runner=runner)
    b = embed(model, pairs.images, 160, cpu, "none")
    assert float((a * b).sum(1).min()) >= 0.9999
    fast, slow = verify(model, pairs, 160, cpu, "none"), verify(model, pairs, 160, cpu, "none", fast=False)
    assert fast == slow
