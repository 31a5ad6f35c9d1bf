"""Operating points (partialface.evaluation.calibrate): thresholds at a FAR against hand-computed and
brute-force references, all-pairs scoring, and ``partialface calibrate`` end to end with its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import make_identities

from partialface.cli import main
from partialface.evaluation.calibrate import (
    FARS,
    OperatingPoints,
    far_key,
    operating_points,
    pair_scores,
    read_operating_points,
    threshold_at_far,
)
from partialface.training import checkpoint as ckpt


def test_threshold_at_far_by_hand() -> None:
    impostor = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 1.0, 0.4, 0.8, 0.6])
    t = threshold_at_far(impostor, 0.1)  # one false accept of ten allowed: only 1.0 passes
    assert 0.9 < t <= 1.0 and (impostor >= t).sum() == 1
    t = threshold_at_far(impostor, 0.3)  # three allowed: 1.0, 0.9, 0.8
    assert 0.7 < t <= 0.8 and (impostor >= t).sum() == 3
    t = threshold_at_far(impostor, 0.01)  # none allowed: just above the best impostor
    assert t > 1.0 and t == np.nextafter(1.0, np.inf)
    assert threshold_at_far(impostor, 1.0) == 0.1  # everything allowed


@pytest.mark.parametrize("far", (*FARS, 0.05, 0.5))
def test_threshold_at_far_is_the_smallest_that_holds_the_rate(far: float) -> None:
    rng = np.random.default_rng(3)
    impostor = rng.normal(0.1, 0.2, 20_000)
    t = threshold_at_far(impostor, far)
    assert (impostor >= t).sum() <= far * len(impostor)
    below = impostor[impostor < t].max()  # any lower threshold admits this score too: over the rate
    assert (impostor >= below).sum() > far * len(impostor)


def test_pair_scores_are_every_pair_once() -> None:
    a = np.eye(3)[[0, 0, 1, 2]]  # faces 0 and 1 identical, labels: 0 0 1 1
    labels = np.array([0, 0, 1, 1])
    gen, imp = pair_scores(a, a, labels, same_set=True)
    assert sorted(gen.tolist()) == [0.0, 1.0]  # (0, 1) identical, (2, 3) orthogonal
    assert len(imp) == 4 and not imp.any()  # (0, 2) (0, 3) (1, 2) (1, 3)
    gen, imp = pair_scores(a, a, labels, same_set=False)  # ordered pairs, i != j
    assert len(gen) == 4 and len(imp) == 8


def test_operating_points_against_brute_force() -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(40), 3)
    centres = rng.normal(size=(40, 16))
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    hol = unit(centres[labels] + rng.normal(0, 0.8, (120, 16)))
    part = {"lEye": unit(centres[labels] + rng.normal(0, 1.5, (120, 16)))}
    points = operating_points(hol, part, labels, {"data": "synthetic"})
    # brute force: every unordered holistic pair, every ordered partial-vs-whole pair
    gen = [hol[i] @ hol[j] for i in range(120) for j in range(i + 1, 120) if labels[i] == labels[j]]
    imp = [hol[i] @ hol[j] for i in range(120) for j in range(i + 1, 120) if labels[i] != labels[j]]
    assert points.pairs["holistic"] == [len(gen), len(imp)] == [120, 7020]
    pgen = [part["lEye"][i] @ hol[j] for i in range(120) for j in range(120) if i != j and labels[i] == labels[j]]
    pimp = [part["lEye"][i] @ hol[j] for i in range(120) for j in range(120) if labels[i] != labels[j]]
    assert points.pairs["partial"] == [len(pgen), len(pimp)] == [240, 14040]
    for far in FARS:
        for kind, g, i in (("holistic", gen, imp), ("partial", pgen, pimp)):
            t = points.at(far, kind)
            assert sum(s >= t for s in i) <= far * len(i)
            assert points.tar[kind][far_key(far)] == pytest.approx(np.mean([s >= t for s in g]))
    assert points.measured_on["under_measured"] == ["1e-03", "1e-04"]  # 7,020 pairs: 7 and 0.7 expected
    again = OperatingPoints.from_json(points.to_json())
    assert again == points and again.at(1e-3) == points.at(1e-3)
    with pytest.raises(Exception, match="no holistic operating point"):
        points.at(0.5)


def test_calibrate_command_writes_the_points_into_the_model_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from partialface.models import create_model

    data = make_identities(tmp_path / "held-out", 4, 3)
    model = create_model("ours", preset="tiny")
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    src = tmp_path / "m.safetensors"
    ckpt.save_weights(src, tensors, {"model_config": json.dumps(model.config.to_dict())})
    out = tmp_path / "calibrated.safetensors"
    assert main(["calibrate", str(src), "--data", str(data), "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "holistic (12 genuine / 54 impostor pairs)" in printed and "FAR 0.001: threshold" in printed
    got, meta = ckpt.load_weights(out)
    assert set(got) == set(tensors) and all(torch.equal(got[k], tensors[k]) for k in tensors)
    points = read_operating_points(meta)
    assert points is not None and points.measured_on["identities"] == 4 and points.measured_on["images"] == 12
    assert set(points.threshold) == {"holistic", "partial"}
    assert read_operating_points(ckpt.load_weights(src)[1]) is None
    # user errors: one line, exit 2, nothing written
    for argv, message in (
        ([str(src), "--data", str(data), "--out", str(tmp_path / "x.onnx")], "ending in .safetensors"),
        ([str(src), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "y.safetensors")], "no such folder"),
        ([str(tmp_path / "none.safetensors"), "--data", str(data), "--out", str(tmp_path / "z.safetensors")],
         "no such run folder"),
    ):
        assert main(["calibrate", *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
