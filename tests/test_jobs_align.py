"""``partialface align`` (partialface.detect.dataset) and dataset listing: exact outputs, failures, resume,
landmarks files, user errors.

Most tests replace the MTCNN detector by a stub (``partialface.detect.detect_faces_batch``) so that the
expected landmarks are known; one test (marked lfw) runs the real detector on a few LFW images.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import partialface.detect as detect
from partialface.data.folders import identity_folders, is_inside, list_images
from partialface.data.images import read_image, write_image
from partialface.detect import dataset as align
from partialface.errors import PartialFaceError
from partialface.geometry.align import align_face
from partialface.jobs import align as align_command

# Landmarks the stub "detects" (left eye, right eye, nose, mouth left, mouth right) in a 96x96 image.
FACE_PTS = np.array([[30.5, 40.25], [60.75, 39.5], [46.0, 58.0], [33.0, 72.5], [58.5, 73.0]])
# A decoy face listed first: small and in the corner, so the spec's rule (area − 2·centre distance²) drops it.
DECOY_PTS = FACE_PTS * 0.1


class StubDetector:
    """Stands in for ``detect_faces_batch``: a face iff pixel (0, 0) is not black; records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, images: list[np.ndarray], device: str | None = None, **_: object) -> list[list[detect.Face]]:
        self.batches.append(len(images))
        out: list[list[detect.Face]] = []
        for im in images:
            if int(im[0, 0].sum()) == 0:
                out.append([])
            else:
                decoy = detect.Face(box=(0.0, 0.0, 10.0, 10.0), score=0.99, landmarks=DECOY_PTS)
                face = detect.Face(box=(20.0, 20.0, 80.0, 90.0), score=0.9, landmarks=FACE_PTS)
                out.append([decoy, face])
        return out


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> StubDetector:
    s = StubDetector()
    monkeypatch.setattr(detect, "detect_faces_batch", s)
    return s


def no_detector(*_: object, **__: object) -> list[list[detect.Face]]:
    raise AssertionError("the detector must not be called here")


def face_image(seed: int, face: bool = True, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 0) if face else (0, 0, 0)
    return img


def make_src(root: Path) -> dict[str, np.ndarray]:
    """An LFW-style tree, an identity folder, a deeper tree, a JPEG, a no-face image and an unreadable file."""
    images = {
        "Ann_A/Ann_A_0001.png": face_image(1),
        "Ann_A/Ann_A_0002.png": face_image(2),
        "Bob_B/Bob_B_0001.png": face_image(3, face=False),
        "id07/x.png": face_image(4),
        "deep/er/tree/y.png": face_image(5),
    }
    for rel, im in images.items():
        write_image(root / rel, im)
    (root / "Bob_B" / "Bob_B_0002.jpg").write_bytes(b"not a jpeg")
    (root / "notes.txt").write_text("ignored: not an image suffix")
    (root / ".hidden.png").write_bytes(b"ignored: hidden")
    return images


def run_align(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    align_command.configure(parser)
    return align_command.run(parser.parse_args([*argv, "--no-progress"]))


# --------------------------------------------------------------------------------------------------
# Listing


def test_list_images_and_identity_folders(tmp_path: Path) -> None:
    make_src(tmp_path)
    assert list_images(tmp_path) == [
        "Ann_A/Ann_A_0001.png",
        "Ann_A/Ann_A_0002.png",
        "Bob_B/Bob_B_0001.png",
        "Bob_B/Bob_B_0002.jpg",
        "deep/er/tree/y.png",
        "id07/x.png",
    ]
    ds = identity_folders(tmp_path)
    assert ds.classes == ("Ann_A", "Bob_B", "id07")  # deep/ holds no image one level down
    assert ds.samples[0] == ("Ann_A/Ann_A_0001.png", 0) and ds.samples[-1] == ("id07/x.png", 2)
    assert ds.counts() == [2, 2, 1]
    assert identity_folders(tmp_path, min_images=2).classes == ("Ann_A", "Bob_B")
    with pytest.raises(PartialFaceError, match="no such folder"):
        list_images(tmp_path / "nope")
    with pytest.raises(PartialFaceError, match="no identity folders"):
        identity_folders(tmp_path, min_images=3)
    assert is_inside(tmp_path / "a" / "b", tmp_path) and is_inside(tmp_path, tmp_path)
    assert not is_inside(tmp_path, tmp_path / "a")


# --------------------------------------------------------------------------------------------------
# Aligning


def test_align_detects_picks_the_spec_face_and_records_failures(
    tmp_path: Path, stub: StubDetector, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    images = make_src(src)
    assert run_align(str(src), str(dst), "--batch-size", "2", "--workers", "2", "--device", "cpu") == 0
    out = capsys.readouterr().out.strip()
    failures = dst / "align_failures.tsv"
    assert out == f"aligned 4 / 6; 1 without a face (resized), 1 unreadable; failures listed in {failures}"
    # 5 readable images need detection, in batches of at most 2 (the unreadable one never reaches it)
    assert sum(stub.batches) == 5 and max(stub.batches) <= 2
    for rel, im in images.items():
        got = read_image(dst / rel)
        assert got.shape == (160, 160, 3) and got.dtype == np.uint8
        if rel.startswith("Bob_B"):  # no face: whole image resized (bilinear), counted as failure
            np.testing.assert_array_equal(got, cv2.resize(im, (160, 160), interpolation=cv2.INTER_LINEAR))
        else:  # the big central face, not the decoy listed first
            np.testing.assert_array_equal(got, align_face(im, FACE_PTS))
    assert not (dst / "Bob_B" / "Bob_B_0002.png").exists()
    rows = failures.read_text().splitlines()
    assert rows[0].startswith("#")
    parsed = [r.split("\t") for r in rows[1:]]
    assert [(p[0], p[1]) for p in parsed] == [
        ("Bob_B/Bob_B_0001.png", "no_face"),
        ("Bob_B/Bob_B_0002.jpg", "unreadable"),
    ]
    assert "Bob_B_0002.jpg" in parsed[1][2]  # the reason names the file
    lms = align.read_landmarks(dst / "landmarks.tsv")
    assert sorted(lms) == ["Ann_A/Ann_A_0001.png", "Ann_A/Ann_A_0002.png", "deep/er/tree/y.png", "id07/x.png"]
    for pts in lms.values():
        np.testing.assert_array_equal(pts, FACE_PTS)  # exact round trip of the floats


def test_align_with_landmarks_file_is_exact_and_skips_detection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(detect, "detect_faces_batch", no_detector)
    src, dst = tmp_path / "src", tmp_path / "dst"
    rng = np.random.default_rng(7)
    ims = {f"P/P_000{i}.jpg": rng.integers(0, 256, (120, 100, 3), dtype=np.uint8) for i in (1, 2)}
    for rel, im in ims.items():
        write_image(src / rel, im)  # JPEG: the job must align what read_image returns
    pts = {
        "P/P_0001.jpg": [[35.2, 50.1], [66.9, 48.7], [50.0, 70.3], [38.4, 88.8], [62.5, 87.9]],
        "P/P_0002.jpg": [[30.0, 45.0], [70.0, 52.0], [49.5, 66.0], [33.0, 85.0], [66.0, 90.5]],
    }
    lines = ["# path\tx1 y1 ... x5 y5 (spec order)"]
    lines += [rel + "\t" + "\t".join(str(v) for v in np.ravel(p)) for rel, p in pts.items()]
    (tmp_path / "lm.tsv").write_text("\n".join(lines) + "\n\n")
    assert run_align(str(src), str(dst), "--landmarks", str(tmp_path / "lm.tsv"), "--workers", "0") == 0
    assert capsys.readouterr().out.strip() == "aligned 2 / 2; 0 without a face (resized), 0 unreadable; no failures"
    for rel, p in pts.items():
        expected = align_face(read_image(src / rel), np.array(p))
        np.testing.assert_array_equal(read_image(dst / rel.replace(".jpg", ".png")), expected)
    assert (dst / "align_failures.tsv").read_text().splitlines() == ["# path\tkind\tdetail"]


def test_landmarks_tsv_of_a_run_reproduces_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    make_src(src)
    monkeypatch.setattr(detect, "detect_faces_batch", StubDetector())
    run_align(str(src), str(tmp_path / "d1"))
    monkeypatch.setattr(detect, "detect_faces_batch", no_detector)
    lm = tmp_path / "d1" / "landmarks.tsv"
    run_align(str(src), str(tmp_path / "d2"), "--landmarks", str(lm), "--landmarks-only")
    aligned = list_images(tmp_path / "d2")
    assert aligned == sorted(str(Path(r).with_suffix(".png")) for r in align.read_landmarks(lm))
    for rel in aligned:
        assert (tmp_path / "d1" / rel).read_bytes() == (tmp_path / "d2" / rel).read_bytes()


def test_landmarks_only_listed_image_missing_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect, "detect_faces_batch", no_detector)
    src = tmp_path / "src"
    write_image(src / "a.png", face_image(1))
    (tmp_path / "lm.tsv").write_text("a.png 1 2 3 4 5 6 7 8 9 10\ngone.png 1 2 3 4 5 6 7 8 9 10\n")
    s = align.align_dataset(src, tmp_path / "dst", landmarks=tmp_path / "lm.tsv", landmarks_only=True, progress=False)
    assert (s.total, s.aligned, s.unreadable, s.no_face) == (2, 1, 1, 0)
    assert align.read_failures(tmp_path / "dst" / "align_failures.tsv")["gone.png"][0] == "unreadable"


def test_resume_skips_done_images_and_merges_failures(
    tmp_path: Path, stub: StubDetector, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_src(src)
    run_align(str(src), str(dst), "--workers", "0")
    first = capsys.readouterr().out
    outputs = sorted(p for p in dst.rglob("*.png"))
    mtimes = {p: p.stat().st_mtime_ns for p in outputs}
    failures = (dst / "align_failures.tsv").read_text()
    stub.batches.clear()

    run_align(str(src), str(dst), "--workers", "0")
    second = capsys.readouterr().out.strip()
    # all 5 outputs (4 aligned + 1 resized no-face) skipped; only the unreadable file is tried again
    assert stub.batches == []
    assert second == (
        "aligned 4 / 6 (5 already done, skipped); 1 without a face (resized), 1 unreadable; "
        f"failures listed in {dst / 'align_failures.tsv'}"
    )
    assert first.strip() == second.replace(" (5 already done, skipped)", "")
    assert {p: p.stat().st_mtime_ns for p in outputs} == mtimes
    assert (dst / "align_failures.tsv").read_text() == failures

    # a deleted output is redone; an output without a record (killed before the records were written) too
    (dst / "Ann_A" / "Ann_A_0002.png").unlink()
    lms = align.read_landmarks(dst / "landmarks.tsv")
    del lms["id07/x.png"]
    align.write_landmarks(dst / "landmarks.tsv", lms)
    s = align.align_dataset(src, dst, workers=0, progress=False)
    assert (s.processed, s.skipped, s.aligned) == (3, 3, 4)  # 2 redone + the unreadable one
    assert stub.batches == [2]
    assert sorted(align.read_landmarks(dst / "landmarks.tsv")) == [
        "Ann_A/Ann_A_0001.png",
        "Ann_A/Ann_A_0002.png",
        "deep/er/tree/y.png",
        "id07/x.png",
    ]


def test_interrupt_keeps_finished_files_and_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_src(src)
    inner = StubDetector()

    def interrupted(images: list[np.ndarray], **kw: object) -> list[list[detect.Face]]:
        if inner.batches:  # second batch: Ctrl-C
            raise KeyboardInterrupt
        return inner(images)

    monkeypatch.setattr(detect, "detect_faces_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        align.align_dataset(src, dst, batch_size=2, workers=2, progress=False)
    # the first batch (Ann_A 0001, 0002) is written and recorded
    assert sorted(align.read_landmarks(dst / "landmarks.tsv")) == ["Ann_A/Ann_A_0001.png", "Ann_A/Ann_A_0002.png"]
    assert (dst / "Ann_A" / "Ann_A_0001.png").is_file()
    monkeypatch.setattr(detect, "detect_faces_batch", StubDetector())
    s = align.align_dataset(src, dst, batch_size=2, workers=2, progress=False)
    assert (s.skipped, s.aligned, s.no_face, s.unreadable) == (2, 4, 1, 1)


def test_name_clash_is_a_recorded_failure(tmp_path: Path, stub: StubDetector) -> None:
    src = tmp_path / "src"
    write_image(src / "p" / "a.png", face_image(1))
    write_image(src / "p" / "a.jpg", face_image(2))
    s = align.align_dataset(src, tmp_path / "dst", workers=0, progress=False)
    assert (s.total, s.aligned, s.other_failures) == (2, 1, 1)
    fails = align.read_failures(tmp_path / "dst" / "align_failures.tsv")
    assert list(fails) == ["p/a.png"] and fails["p/a.png"][0] == "name_clash"  # sorted: a.jpg wins


def test_detector_exception_on_one_image_does_not_abort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    write_image(src / "a.png", face_image(1))
    write_image(src / "b.png", face_image(2, shape=(50, 70)))
    inner = StubDetector()

    def flaky(images: list[np.ndarray], **kw: object) -> list[list[detect.Face]]:
        if any(im.shape[0] == 50 for im in images):
            raise RuntimeError("boom")
        return inner(images)

    monkeypatch.setattr(detect, "detect_faces_batch", flaky)
    s = align.align_dataset(src, tmp_path / "dst", workers=0, progress=False)
    assert (s.aligned, s.other_failures) == (1, 1)
    kind, detail = align.read_failures(tmp_path / "dst" / "align_failures.tsv")["b.png"]
    assert kind == "error" and "RuntimeError: boom" in detail


# --------------------------------------------------------------------------------------------------
# User errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a.png\t1\t2\t3\n", r"lm\.tsv:1: expected 11 fields"),
        ("# header\na.png 1 2 3 4 5 6 7 8 9 x\n", r"lm\.tsv:2: 'x' is not a number"),
        ("a.png 1 2 3 4 5 6 7 8 9 nan\n", r"lm\.tsv:1: .*finite"),
        ("a.png 1 2 3 4 5 6 7 8 9 10\n\n./a.png 1 2 3 4 5 6 7 8 9 10\n", r"lm\.tsv:3: duplicate entry .*line 1"),
        ("/abs/a.png 1 2 3 4 5 6 7 8 9 10\n", r"lm\.tsv:1: path '/abs/a.png' must be relative"),
        ("../a.png 1 2 3 4 5 6 7 8 9 10\n", r"lm\.tsv:1: path .* must be relative"),
    ],
)
def test_bad_landmarks_file_names_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "lm.tsv").write_text(content)
    with pytest.raises(PartialFaceError, match=message):
        align.read_landmarks(tmp_path / "lm.tsv")


def test_landmarks_with_spaces_in_path_need_tabs(tmp_path: Path) -> None:
    (tmp_path / "lm.tsv").write_text("dir with space/a b.png\t" + "\t".join(map(str, range(10))) + "\n")
    pts = align.read_landmarks(tmp_path / "lm.tsv")
    np.testing.assert_array_equal(pts["dir with space/a b.png"], np.arange(10.0).reshape(5, 2))


def test_user_errors(tmp_path: Path, stub: StubDetector) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(PartialFaceError, match="no images found"):
        align.align_dataset(src, tmp_path / "dst")
    write_image(src / "a.png", face_image(1))
    with pytest.raises(PartialFaceError, match="no such folder"):
        align.align_dataset(tmp_path / "nope", tmp_path / "dst")
    with pytest.raises(PartialFaceError, match="not a folder"):
        align.align_dataset(src / "a.png", tmp_path / "dst")
    with pytest.raises(PartialFaceError, match="must not be SRC or inside SRC"):
        align.align_dataset(src, src / "aligned")
    with pytest.raises(PartialFaceError, match="must not be SRC"):
        align.align_dataset(src, src)
    with pytest.raises(PartialFaceError, match="--landmarks-only needs --landmarks"):
        align.align_dataset(src, tmp_path / "dst", landmarks_only=True)
    with pytest.raises(PartialFaceError, match="--batch-size"):
        align.align_dataset(src, tmp_path / "dst", batch_size=0)
    with pytest.raises(PartialFaceError, match="no such landmarks file"):
        align.align_dataset(src, tmp_path / "dst", landmarks=tmp_path / "none.tsv")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PartialFaceError, match="not a folder"):
        align.align_dataset(src, tmp_path / "file")
    assert not (tmp_path / "dst").exists()  # nothing written before the inputs are validated


def test_cli_exit_codes(tmp_path: Path, stub: StubDetector, capsys: pytest.CaptureFixture[str]) -> None:
    from partialface.cli import main

    assert main(["align", str(tmp_path / "missing"), str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("partialface: error: ") and "missing" in err
    write_image(tmp_path / "src" / "a.png", face_image(1))
    assert main(["align", str(tmp_path / "src"), str(tmp_path / "dst"), "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("aligned 1 / 1;")


# --------------------------------------------------------------------------------------------------
# Real detector (a handful of LFW images)


@pytest.mark.lfw
def test_align_real_lfw_images(lfw_root: Path, tmp_path: Path) -> None:
    """End to end with MTCNN: after alignment the eyes re-detected on the 160x160 output sit about the
    eye-centre target (80, 64) and level, as spec §1's last step puts them."""
    src = tmp_path / "src"
    names = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "Abdullah_Gul/Abdullah_Gul_0001.jpg"]
    for rel in names:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(lfw_root / "lfw-deepfunneled" / rel, src / rel)
    s = align.align_dataset(src, tmp_path / "dst", device="cpu", progress=False)
    assert (s.total, s.aligned) == (2, 2)
    for rel in names:
        out = read_image(tmp_path / "dst" / Path(rel).with_suffix(".png"))
        faces = detect.detect_faces(out, device="cpu")
        assert faces, rel
        le, re_ = faces[0].landmarks[0], faces[0].landmarks[1]
        mid = (le + re_) / 2
        assert abs(mid[0] - 80) < 4 and abs(mid[1] - 64) < 4, (rel, mid)
        assert abs(le[1] - re_[1]) < 3, (rel, le, re_)


def test_align_mixed_sizes_in_one_batch_uses_each_images_own_landmarks(tmp_path: Path) -> None:
    """Photos of mixed sizes go to the real detector in one batch; the landmarks recorded for each are
    bit for bit those of detecting it alone (partialface.detect packs the sizes, see its tests)."""
    from partialface.data.synth import make_identity, make_variation, render

    src = tmp_path / "src"
    sizes = [(250, 250), (97, 130), (333, 251), (61, 64)]
    for i, (h, w) in enumerate(sizes):
        face = render(make_identity(3, "train", i), make_variation(3, "train", i, 0))[0]
        write_image(src / f"id{i}" / "a.png", cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA))
    s = align.align_dataset(src, tmp_path / "dst", device="cpu", progress=False, workers=0)
    assert s.total == len(sizes) and s.aligned >= len(sizes) - 1
    recorded = align.read_landmarks(tmp_path / "dst" / align.LANDMARKS_FILE)
    for rel, pts in recorded.items():
        img = read_image(src / rel)
        alone = detect.select_face(detect.detect_faces(img, device="cpu"), img.shape)
        assert alone is not None and np.array_equal(pts, alone.landmarks), rel


def test_align_compile_uses_the_compiled_pnet_and_fails_before_any_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`align --compile`: the landmarks of the eager detector to float rounding, from the cached detector whose
    P-Net was compiled before the first image; without a C++ compiler it is one line and exit 2, nothing written."""
    from partialface.cli import main
    from partialface.data.synth import make_identity, make_variation, render
    from partialface.inference import runners

    if runners.unavailable("compile", torch.device("cpu")) is not None:
        pytest.skip(f"compile here: {runners.unavailable('compile', torch.device('cpu'))}")
    src = tmp_path / "src"
    for i, (h, w) in enumerate([(250, 250), (97, 131)]):
        face = render(make_identity(5, "train", i), make_variation(5, "train", i, 0))[0]
        write_image(src / f"id{i}" / "a.png", cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA))
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        assert main(["align", str(src), str(tmp_path / name), "--device", "cpu", "--no-progress", *extra]) == 0
        runs[name] = align.read_landmarks(tmp_path / name / align.LANDMARKS_FILE)
    assert runs["eager"].keys() == runs["compiled"].keys() and runs["eager"]
    for rel, pts in runs["eager"].items():
        np.testing.assert_allclose(runs["compiled"][rel], pts, atol=1e-3)
    det = detect.default_detector("cpu", compile=True)
    assert det.compiled and det._pnet_ready and not detect.default_detector("cpu").compiled
    capsys.readouterr()
    monkeypatch.setattr(runners, "_cxx_compiler", lambda: None)
    assert main(["align", str(src), str(tmp_path / "none"), "--compile", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--compile: torch.compile needs a C++ compiler" in err and err.count("\n") == 1
    assert not (tmp_path / "none").exists()
