"""Synthetic faces (partialface.data.synth, ``partialface synth``): determinism, layout, pairs, landmarks,
difficulty, CLI errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from partialface.cli import main
from partialface.data.images import read_image
from partialface.data.lfw import read_pairs
from partialface.data.synth import (
    SynthOptions,
    make_identity,
    make_variation,
    render,
    write_dataset,
)
from partialface.detect.dataset import read_landmarks
from partialface.geometry.align import align_face
from partialface.geometry.template import template_points
from partialface.jobs.synth import raw_pixel_baseline

SMALL = SynthOptions(train_identities=3, train_per_identity=3, test_identities=20, test_per_identity=3,
                     pairs_per_fold=2, seed=7)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    write_dataset(out, SMALL, workers=1)
    return out


def test_layout_and_counts(small: Path) -> None:
    files = _files(small)
    train = [k for k in files if k.startswith("train/") and k.endswith(".jpg")]
    test = [k for k in files if k.startswith("test/") and k.endswith(".jpg")]
    assert len(train) == 9 and len(test) == 60
    assert "train/id00000/id00000_0001.jpg" in files
    assert "test/face00019/face00019_0003.jpg" in files
    assert {"train/landmarks.tsv", "test/landmarks.tsv", "test/pairs.txt"} <= set(files)
    img = read_image(small / "test/face00000/face00000_0001.jpg")
    assert img.shape == (250, 250, 3) and img.dtype == np.uint8
    assert files["test/face00000/face00000_0001.jpg"][:2] == b"\xff\xd8"  # JPEG
    # the landmarks files list exactly the images of their split, in the aligner's format
    assert set(read_landmarks(small / "train/landmarks.tsv")) == {k[len("train/"):] for k in train}
    assert set(read_landmarks(small / "test/landmarks.tsv")) == {k[len("test/"):] for k in test}


def test_same_seed_identical_bytes_any_workers(small: Path, tmp_path: Path) -> None:
    write_dataset(tmp_path / "b", SMALL, workers=2, chunk=5)
    assert _files(tmp_path / "b") == _files(small)


def test_different_seed_differs(small: Path, tmp_path: Path) -> None:
    write_dataset(tmp_path / "c", dataclasses.replace(SMALL, seed=8))
    a, c = _files(small), _files(tmp_path / "c")
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert set(jpgs) == {k for k in c if k.endswith(".jpg")}
    assert all(a[k] != c[k] for k in jpgs)


def test_resume_keeps_finished_files(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    write_dataset(out, SMALL)
    victim = out / "test/face00003/face00003_0002.jpg"
    victim.unlink()
    (out / "test/pairs.txt").unlink()
    kept = out / "train/id00001/id00001_0001.jpg"
    stamp = kept.stat().st_mtime_ns
    write_dataset(out, SMALL)
    assert _files(out) == _files(small)
    assert kept.stat().st_mtime_ns == stamp


def test_pairs_lfw_format_and_identity_disjoint_folds(tmp_path: Path) -> None:
    opts = SynthOptions(train_identities=4, train_per_identity=2, test_identities=40, test_per_identity=4,
                        pairs_per_fold=12, seed=3)
    write_dataset(tmp_path, opts)
    header = (tmp_path / "test/pairs.txt").read_text().splitlines()[0].split()
    assert header == ["10", "12"]
    pairs = read_pairs(tmp_path / "test/pairs.txt")
    assert pairs.folds == 10 and pairs.per_fold == 12 and len(pairs) == 240
    names_by_fold: list[set[str]] = [set() for _ in range(10)]
    for p in pairs.pairs:
        na, nb = p.a.split("/")[0], p.b.split("/")[0]
        assert (na == nb) == p.same and p.a != p.b
        names_by_fold[p.fold] |= {na, nb}
        for key in (p.a, p.b):
            assert (tmp_path / "test" / key).is_file()
    for i in range(10):
        for j in range(i + 1, 10):
            assert not names_by_fold[i] & names_by_fold[j], (i, j)
    assert len({(p.a, p.b) for p in pairs.pairs}) == len(pairs)  # no repeated pair
    train_names = {p.name for p in (tmp_path / "train").iterdir() if p.is_dir()}
    test_names = {p.name for p in (tmp_path / "test").iterdir() if p.is_dir()}
    assert len(train_names) == 4 and len(test_names) == 40 and not train_names & test_names
    # disjoint as people too: no training image equals any test image
    tr = {read_image(p).tobytes() for p in (tmp_path / "train").rglob("*.jpg")}
    assert not tr & {read_image(p).tobytes() for p in (tmp_path / "test").rglob("*.jpg")}


def _grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)


def test_landmarks_on_features_clean_render() -> None:
    """Without noise, blur, lighting or gamma, the eye points hit the black pupils and the nose point the tip."""
    for index in range(10):
        idn = make_identity(0, "test", index)
        var = dataclasses.replace(make_variation(0, "test", index, 1), noise=0.0, blur=0.0, light_strength=0.0,
                                  gain=1.0, cast=np.ones(3), gamma=1.0)
        img, pts = render(idn, var)
        for x, y in pts[:2]:
            assert img[round(y), round(x)].max() <= 40  # pupil colour is (10, 10, 10)
        tip = np.clip(idn.skin * 0.93, 0, 255)
        x, y = pts[2]
        assert np.abs(img[round(y), round(x)].astype(float) - tip).max() <= 12
        (lx, ly), (rx, ry) = pts[0], pts[1]
        assert lx < rx  # spec order: left eye = smaller x (rotations are at most 12 degrees)
        assert pts[3, 0] < pts[4, 0]
        # nose below the eye line and mouth below the nose, in the face's own frame
        axis = np.array([-(ry - ly), rx - lx]) / np.hypot(rx - lx, ry - ly)
        eye_mid = (pts[0] + pts[1]) / 2
        assert 0 < (pts[2] - eye_mid) @ axis < ((pts[3] + pts[4]) / 2 - eye_mid) @ axis


def test_landmarks_on_features_written_images(small: Path) -> None:
    """In the written JPEGs the eye points are darker than the cheeks below them (nearly always)."""
    marks = read_landmarks(small / "test/landmarks.tsv")
    darker = []
    for rel, pts in marks.items():
        g = cv2.GaussianBlur(_grey(read_image(small / "test" / rel)), (3, 3), 0)
        for eye, corner in ((pts[0], pts[3]), (pts[1], pts[4])):
            cheek = eye + 0.45 * (corner - eye)
            darker.append(g[round(eye[1]), round(eye[0])] < g[round(cheek[1]), round(cheek[0])])
    assert np.mean(darker) >= 0.95


def test_alignment_puts_eyes_near_template(small: Path) -> None:
    """Aligning with the written landmarks brings the pupils (darkest spots) near the template eye points."""
    marks = read_landmarks(small / "test/landmarks.tsv")
    tpl = template_points()
    hits = []
    for rel, pts in list(marks.items())[:30]:
        aligned = align_face(read_image(small / "test" / rel), pts)
        g = cv2.GaussianBlur(_grey(aligned), (5, 5), 0)
        for k in range(2):
            x, y = tpl[k]
            x0, y0 = round(x) - 14, round(y) + 15 - 14  # the alignment puts faces ~15 px below the template
            win = g[y0:y0 + 29, x0:x0 + 29]
            dy, dx = np.unravel_index(np.argmin(win), win.shape)
            hits.append(np.hypot(x0 + dx - x, y0 + dy - (y + 15)) <= 12)
    assert np.mean(hits) >= 0.9


def test_raw_pixel_baseline_at_most_75(tmp_path: Path) -> None:
    """The task is not trivial: raw-pixel cosine on aligned holistic faces stays at or below 75 %."""
    opts = SynthOptions(train_identities=0, test_identities=100, test_per_identity=4, pairs_per_fold=30, seed=0)
    write_dataset(tmp_path, opts, workers=2)
    mean, std = raw_pixel_baseline(tmp_path / "test")
    assert 50.0 <= mean <= 75.0, (mean, std)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--test-identities", "5"], "--test-identities"),
        (["--test-per-identity", "1"], "--test-per-identity"),
        (["--pairs-per-fold", "0"], "--pairs-per-fold"),
        (["--pairs-per-fold", "1000"], "--pairs-per-fold"),
        (["--train-identities", "-1"], "--train-identities"),
        (["--size", "10"], "--size"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_cli_bad_options_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                  needle: str) -> None:
    assert main(["synth", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("partialface: error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_cli_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["synth", str(tmp_path / "f"), "--train-identities", "1", "--test-identities", "20",
                 "--test-per-identity", "2", "--pairs-per-fold", "1"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_writes_and_prints(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "partialface.cli", "synth", str(tmp_path / "o"),
                        "--train-identities", "2", "--train-per-identity", "2", "--test-identities", "20",
                        "--test-per-identity", "2", "--pairs-per-fold", "1", "--workers", "1", "--baseline"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "wrote 4 training images" in r.stdout and "40 test images" in r.stdout
    assert "raw-pixel baseline" in r.stdout
    assert read_pairs(tmp_path / "o/test/pairs.txt").per_fold == 1
