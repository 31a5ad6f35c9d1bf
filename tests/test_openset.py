"""Open-set 1:N identification (partialface.evaluation.openset): the split and the metrics against a
hand-made case and a brute-force reference, the LFW split's published sizes, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_training import make_identities

from partialface.cli import main
from partialface.data.folders import identity_folders
from partialface.evaluation.openset import dir_at_fpir, identification_metrics, openset_split


def test_split_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2, 3])  # identity 0: 3 images, 1: one, 2: two, 3: one
    s = openset_split(labels)
    assert s.gallery.tolist() == [0, 4] and s.gallery_labels.tolist() == [0, 2]
    assert s.known.tolist() == [1, 2, 5] and s.known_labels.tolist() == [0, 0, 2]
    assert s.unknown.tolist() == [3, 6]


def test_dir_at_fpir_by_hand() -> None:
    unknown = np.array([0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.05, 0.0, -0.1])  # U = 10
    known = np.array([0.95, 0.6, 0.45, 0.35])
    correct = np.array([True, True, True, False])
    # FPIR 0.1: one false positive allowed -> accept scores > 0.5 (the 2nd best unknown): 0.95 and 0.6
    assert dir_at_fpir(known, correct, unknown, 0.1) == pytest.approx(0.5)
    # FPIR 0.01: none allowed -> accept > 0.9: only 0.95
    assert dir_at_fpir(known, correct, unknown, 0.01) == pytest.approx(0.25)
    # FPIR 0.3: accept > 0.3: 0.95, 0.6, 0.45 (0.35 is not the mate)
    assert dir_at_fpir(known, correct, unknown, 0.3) == pytest.approx(0.75)
    assert dir_at_fpir(known, correct, unknown, 1.0) == pytest.approx(0.75)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_metrics_match_a_brute_force_reference() -> None:
    rng = np.random.default_rng(3)
    g_n, d = 40, 8
    gallery = _unit(rng.normal(size=(g_n, d)))
    labels = rng.permutation(100)[:g_n]  # identity numbers need not be 0..G-1
    known_labels = labels[rng.integers(0, g_n, 300)]
    col = {c: j for j, c in enumerate(labels)}
    known = _unit(gallery[[col[c] for c in known_labels]] * 1.2 + rng.normal(size=(300, d)))
    unknown = _unit(rng.normal(size=(200, d)))
    got = identification_metrics(gallery, labels, known, known_labels, unknown, fpirs=(0.01, 0.1, 0.25),
                                 ranks=(1, 3, 10), thresholds={"a": 0.5})
    # brute force: sort each probe's gallery by score (the mate placed after equal scores) and find the mate
    ranks = []
    for q, c in zip(known, known_labels, strict=True):
        order = sorted(range(g_n), key=lambda j: (-float(q @ gallery[j]), labels[j] == c))
        ranks.append(1 + [labels[j] for j in order].index(c))
    ranks_a = np.array(ranks)
    assert got["rank1"] == pytest.approx(100 * np.mean(ranks_a == 1))
    for r in (3, 10):
        assert got[f"cmc{r}"] == pytest.approx(100 * np.mean(ranks_a <= r))
    # DIR@FPIR: the best DIR over every threshold whose FPIR (unknown best >= t) is at most x
    kb, ub = (known @ gallery.T).max(1), (unknown @ gallery.T).max(1)
    for x in (0.01, 0.1, 0.25):
        best = 0.0
        for t in [*sorted(set(ub.tolist())), *sorted(set(kb.tolist())), np.inf]:
            if np.mean(ub >= t) <= x:
                best = max(best, float(np.mean((ranks_a == 1) & (kb >= t))))
        assert got[f"dir@{x:g}"] == pytest.approx(100 * best), x
    # a threshold used as it is: known probes named right and above it; unknown probes above it
    assert got["dir@ta"] == pytest.approx(100 * np.mean((ranks_a == 1) & (kb >= 0.5)))
    assert got["fpir@ta"] == pytest.approx(100 * np.mean(ub >= 0.5)) and 0 < got["fpir@ta"] < 100
    assert 0 < got["dir@0.01"] <= got["dir@0.1"] <= got["dir@0.25"] <= got["rank1"] < got["cmc3"] <= got["cmc10"]


def test_the_lfw_split_sizes(lfw_root: Path) -> None:
    listing = identity_folders(lfw_root / "lfw-deepfunneled")
    s = openset_split(np.array([c for _, c in listing.samples]))
    assert (len(listing.samples), len(listing.classes)) == (7701, 4281)  # the data's README
    assert (len(s.gallery), len(s.known), len(s.unknown)) == (1559, 3420, 2722)


def test_benchmark_identify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_identities(tmp_path / "faces", 6, 3)
    for c in (4, 5):  # two single-image identities: the unknown probes
        for f in sorted((data / f"id{c:02d}").glob("*.png"))[1:]:
            f.unlink()
    out = tmp_path / "out"
    assert main(["benchmark-identify", "--model", "ours-celeba", "--data", str(data), "--out", str(out),
                 "--parts", "Mouth", "--factors", "0.2,0.4", "--no-progress", "--workers", "0"]) == 0
    rows = json.loads((out / "identify.json").read_text())["rows"]
    assert [r["probe"] for r in rows] == ["holistic", "Mouth/0.2", "Mouth/0.4"]
    assert all((r["gallery"], r["known"], r["unknown"]) == (4, 8, 2) for r in rows)
    assert "| ours-celeba | Mouth/0.2 |" in capsys.readouterr().out
    for argv, message in ((["--parts", "Ear"], "--parts Ear"), (["--factors", "0.9"], "--factors 0.9"),
                          (["--model", "nope"], "--model nope: no such file")):
        assert main(["benchmark-identify", "--data", str(data), "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
