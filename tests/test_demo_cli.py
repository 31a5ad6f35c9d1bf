"""The main job end to end on tiny sizes (synth -> align -> train three models -> benchmark -> report),
its resumption, real-data options, and the CLI's error contract."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from partialface.cli import COMMANDS, main
from partialface.evaluation.protocols import TABLE_COLUMNS
from partialface.jobs.demo import MODELS, margins_line, weights_digest

# 8 training identities x 4 faces (batch 16: 2 steps per epoch), 20 test identities x 2 faces, 2 pairs of
# each kind per fold, one size factor, 5 training steps per model.
TINY = [
    "--train-identities", "8", "--train-per-identity", "4", "--test-identities", "20", "--test-per-identity", "2",
    "--pairs-per-fold", "2", "--factors", "0.5", "--workers", "1", "--no-progress", "--steps", "5",
    "--set", "optim.batch_size=16", "--set", "optim.warmup_steps=2", "--threads", "1",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    cap = _run(["demo", "--out", str(out), *TINY])
    return out, cap[0], cap[1]


def _run(argv: list[str]) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-m", "partialface.cli", *argv], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, proc.stderr


def test_demo_writes_every_output_and_the_table(demo: tuple[Path, str, str]) -> None:
    out, stdout, stderr = demo
    bench = out / "benchmark"
    for f in ("results.json", "results.md", "per_factor.csv", "report.html"):
        assert (bench / f).is_file(), f
    figures = {p.name for p in (bench / "figures").glob("*.png")}
    assert {f"roc_{p}.png" for p in ("holistic", "partial-holistic", "partial-same", "partial-cross")} <= figures
    assert "accuracy_vs_area_partial-cross_centred.png" in figures and "attention_ours.png" in figures
    for name in MODELS:
        assert (out / "runs" / name / "model.safetensors").is_file()
    res = json.loads((bench / "results.json").read_text())
    assert [m["name"] for m in res["models"]] == list(MODELS)
    # every protocol in both settings for every model: 1 + 2 x (3 + 3 + 4) benchmarks at one factor
    assert len(res["benchmarks"]) == 3 * 21
    assert {(r["protocol"], r["setting"]) for r in res["protocols"]} == {(p, s) for p, s, _ in TABLE_COLUMNS}
    # the printed table: a header with every column and one row per model with a number in each
    header = next(line for line in stdout.splitlines() if line.startswith("| model |"))
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [h for _, _, h in TABLE_COLUMNS]
    for name in MODELS:
        row = next(line for line in stdout.splitlines() if line.startswith(f"| {name} |"))
        assert len(re.findall(r"\d+\.\d\d ± \d+\.\d\d", row)) == len(TABLE_COLUMNS)
    assert "size factors 0.5 (a subset of the nine" in stdout
    assert "ours - resnet50-nofinetune (accuracy points): holistic " in stdout
    # the holistic-only baseline was trained without augmentation, the others with it
    for name, (_, augment) in MODELS.items():
        cfg = (out / "runs" / name / "config.yaml").read_text()
        assert f"enabled: {'true' if augment else 'false'}" in cfg
        assert "max_steps: 5" in cfg and "max_minutes: 0.0" in cfg
    timings = json.loads((out / "timings.json").read_text())["seconds"]
    assert set(timings) == {"synth", "align", "train ours", "train resnet41", "train resnet50-nofinetune",
                            "benchmark", "total"}
    assert "[demo 0:" in stderr and all(f"{name}: 5 steps in" in stderr for name in MODELS)
    assert "trained for 5 steps each" in stdout


def test_demo_rerun_skips_finished_stages(demo: tuple[Path, str, str]) -> None:
    out, first, _ = demo
    # a run interrupted after its last checkpoint (before its final weights): resumed, nothing left to train
    (out / "runs" / "resnet41" / "model.safetensors").unlink()
    stdout, stderr = _run(["demo", "--out", str(out), *TINY])
    assert f"{out / 'synth'}: already written (skipped)" in stderr
    assert stderr.count("already aligned (skipped)") == 2
    assert "resnet41: resuming" in stderr and "resnet41: 5 steps in" in stderr
    # the resumed run rewrote the same weights, so the benchmark's results still hold
    assert "benchmark of these weights already done (skipped)" in stderr
    assert all(f"{name}: finished run found" in stderr for name in MODELS if name != "resnet41")
    table = [line for line in first.splitlines() if line.startswith("| ")]
    assert table and table == [line for line in stdout.splitlines() if line.startswith("| ")]


def test_demo_gives_the_same_table_on_a_second_run(demo: tuple[Path, str, str], tmp_path: Path) -> None:
    # a step budget is equal work: the same seed and steps give the same weights, so the same table
    _, first, _ = demo
    again, _ = _run(["demo", "--out", str(tmp_path / "again"), *TINY])
    table = [line for line in first.splitlines() if line.startswith(("| ", "ours - "))]
    assert len(table) == 1 + len(MODELS) + 1  # header, a row per model, the margins
    assert table == [line for line in again.splitlines() if line.startswith(("| ", "ours - "))]


def test_demo_time_budget_is_an_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a for a in TINY if a not in ("--steps", "5")]
    stdout, stderr = _run(["demo", "--out", str(tmp_path / "timed"), *argv, "--models", "ours", "--minutes", "0.02",
                           "--slices", "2"])
    assert "time budget reached" in stderr and "trained for 0.02 min each" in stdout
    assert main(["demo", "--out", str(tmp_path / "both"), *TINY, "--minutes", "1"]) == 2
    assert "--steps and --minutes are two budgets: give one" in capsys.readouterr().err


def test_demo_refuses_other_data_options_in_the_same_folder(
    demo: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _, _ = demo
    assert main(["demo", "--out", str(out), *TINY, "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "holds a demo made with other data options (synth)" in err and "choose another --out" in err


def test_demo_on_given_data(demo: tuple[Path, str, str], tmp_path: Path) -> None:
    # the demo's own aligned faces as "real" data: identity folders to train on, an LFW-layout test set
    out, _, _ = demo
    stdout, _ = _run([
        "demo", "--out", str(tmp_path / "real"), "--train-data", str(out / "aligned" / "train"),
        "--data", str(out / "aligned" / "test"), "--pairs", str(out / "synth" / "test" / "pairs.txt"),
        "--models", "ours", "--amp", "none", *TINY,
    ])
    assert not (tmp_path / "real" / "synth").exists() and not (tmp_path / "real" / "aligned").exists()
    assert "| ours |" in stdout and (tmp_path / "real" / "benchmark" / "report.html").is_file()
    assert "synth" not in json.loads((tmp_path / "real" / "timings.json").read_text())["seconds"]
    cfg = (tmp_path / "real" / "runs" / "ours" / "config.yaml").read_text()
    assert f"root: {out / 'aligned' / 'train'}" in cfg and "amp: none" in cfg and "channels_last: false" in cfg


@pytest.mark.parametrize("command", ["demo", "benchmark"])
def test_demo_sets_passive_omp_waits_before_torch_loads(command: str) -> None:
    # OMP_WAIT_POLICY is read once, when torch's OpenMP runtime loads: the CLI's parser must set it before
    # anything imports torch (the benchmark module imports torch), and leave a user's own setting alone.
    code = (f"import os, sys; from partialface.cli import build_parser; print('torch' in sys.modules); "
            f"build_parser({command!r}); print(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["False", "PASSIVE"]
    r = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                       capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["False", "ACTIVE"]



def test_compiled_paths_get_a_short_spin_instead_of_passive_waits() -> None:
    from partialface.cli import COMPILED_OMP_ENV, OMP_ENV, omp_env

    assert omp_env(["benchmark", "--model", "dlib", "--infer", "compile-bf16"]) == COMPILED_OMP_ENV
    assert omp_env(["benchmark", "--infer=compile"]) == COMPILED_OMP_ENV
    assert omp_env(["benchmark", "--infer", "onnx"]) == OMP_ENV == omp_env(["benchmark"]) == omp_env()
    code = ("import os, sys; from partialface.cli import build_parser; "
            "build_parser('benchmark', ['benchmark', '--infer', 'compile-bf16']); "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["None", COMPILED_OMP_ENV["GOMP_SPINCOUNT"]]


def test_weights_digest_follows_content_not_bytes(tmp_path: Path) -> None:
    import torch

    from partialface.training.checkpoint import save_weights

    t = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.tensor(7)}
    save_weights(tmp_path / "1.safetensors", t, {"x": "1", "y": "2"})
    save_weights(tmp_path / "2.safetensors", dict(reversed(t.items())), {"y": "2", "x": "1"})
    assert weights_digest(tmp_path / "1.safetensors") == weights_digest(tmp_path / "2.safetensors")
    t["b"][1, 2] = 5.5
    save_weights(tmp_path / "3.safetensors", t, {"x": "1", "y": "2"})
    save_weights(tmp_path / "4.safetensors", {**t, "b": t["b"].reshape(3, 2)}, {"x": "1", "y": "2"})
    save_weights(tmp_path / "5.safetensors", {k: v.clone() for k, v in t.items()}, {"x": "1", "y": "3"})
    digests = {weights_digest(tmp_path / f"{i}.safetensors") for i in (1, 3, 4, 5)}
    assert len(digests) == 4  # a value, a shape, a metadata entry changed


def test_margins_line_hand_values() -> None:
    rows = [{"model": m, "protocol": p, "setting": s, "accuracy": acc + i}
            for m, acc in (("ours", 80.0), ("resnet50-nofinetune", 70.5))
            for i, (p, s, _) in enumerate(TABLE_COLUMNS)]
    line = margins_line({"protocols": rows})
    assert line.startswith("ours - resnet50-nofinetune (accuracy points): holistic +9.50, NC p-hol +9.50")
    assert line.count("+9.50") == len(TABLE_COLUMNS)
    assert margins_line({"protocols": rows[:3]}) == ""


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    for extra in (["--data", str(tmp_path / "nope")], ["--minutes", "0"], ["--set", "optim.nope=1"]):
        r = subprocess.run(
            [sys.executable, "-m", "partialface.cli", "demo", "--out", str(tmp_path / "o"), *extra],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2, extra
        assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    assert "nope" in r.stderr
    r = subprocess.run([sys.executable, "-m", "partialface.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and all(name in r.stdout for name in COMMANDS)
