"""The main job (smoke demo) end to end on a tiny synthetic set, and the CLI's error contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from partialface.cli import COMMANDS, main
from partialface.jobs.demo import synthetic_pairs


def test_demo_runs_and_scores_every_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--identities", "20", "--per-identity", "3", "--pairs-per-fold", "4"])
    assert rc == 0
    rec = json.loads((out / "results.json").read_text())
    assert len(rec["benchmarks"]) == 181  # 1 holistic + 2 settings x 9 factors x (3 + 3 + 4) combos
    names = {b["name"] for b in rec["benchmarks"]}
    assert "holistic" in names and "partial-cross/centred/lEye-rEye/0.5" in names
    rows = {(r["protocol"], r["setting"]): r for r in rec["protocols"]}
    assert rows[("partial-cross", "centred")]["benchmarks"] == 36
    assert rows[("partial-same", "non-centred")]["benchmarks"] == 27
    # The protocol number is the mean of its benchmarks (recomputed here from the per-benchmark rows).
    cross = [b["accuracy"] for b in rec["benchmarks"] if b["name"].startswith("partial-cross/centred/")]
    assert rows[("partial-cross", "centred")]["accuracy"] == pytest.approx(np.mean(cross))
    assert (out / "variants.png").stat().st_size > 0 and "partial-holistic" in (out / "results.md").read_text()
    assert "aligned 60 / 60" in capsys.readouterr().out


def test_synthetic_pairs_folds_are_identity_disjoint() -> None:
    pf = synthetic_pairs(40, 4, folds=10, per_fold=6, seed=3)
    assert len(pf.pairs) == 10 * 12
    ids_by_fold: dict[int, set[str]] = {}
    for p in pf.pairs:
        ids_by_fold.setdefault(p.fold, set()).update({p.a.split("/")[0], p.b.split("/")[0]})
        assert p.same == (p.a.split("/")[0] == p.b.split("/")[0]) and p.a != p.b
    folds = list(ids_by_fold.values())
    assert all(not (folds[i] & folds[j]) for i in range(10) for j in range(i + 1, 10))


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "partialface.cli", "demo", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "nope" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "partialface.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and all(name in r.stdout for name in COMMANDS)

