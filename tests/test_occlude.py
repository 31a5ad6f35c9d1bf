"""Occluders (partialface.geometry.occlude, issue #16): the same pixels for the same seed, placement against the
landmarks, coverage on the face area, the user-image path (MaskTheFace's templates where present) and bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from partialface.errors import PartialFaceError
from partialface.geometry import OCCLUDERS, occlude
from partialface.geometry.occlude import coverage_of, face_area, face_ellipse, masktheface_templates
from partialface.geometry.template import aligned_points

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _faces() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (160, 160, 3), dtype=np.uint8), rng.integers(0, 256, (160, 160, 3), dtype=np.uint8))


def _rgba() -> np.ndarray:
    img = np.zeros((60, 100, 4), np.uint8)
    img[10:50, 10:90] = (200, 50, 50, 255)
    return img


def _kwargs(kind: str, other: np.ndarray) -> dict:
    return {"other": other} if kind == "face" else {"occluder": _rgba()} if kind == "image" else {}


def test_face_area_by_hand() -> None:
    # eyes at y 64, mouth corners at y 121.62, eye distance 55.53:
    # forehead 64 - 0.85 * 57.62, chin 121.62 + 0.55 * 57.62
    cx, cy, a, b = face_ellipse()
    assert cx == pytest.approx(80.0) and a == pytest.approx(0.5553 * 100)
    assert cy - b == pytest.approx(64 - 0.85 * 57.62, abs=1e-6) and cy + b == pytest.approx(121.62 + 0.55 * 57.62)
    assert face_area().sum() == pytest.approx(np.pi * a * b, rel=0.01)


@pytest.mark.parametrize("kind", OCCLUDERS)
def test_same_seed_same_pixels(kind: str) -> None:
    face, other = _faces()
    a = occlude(face, kind, seed=3, **_kwargs(kind, other))
    b = occlude(face, kind, seed=3, **_kwargs(kind, other))
    c = occlude(face, kind, seed=4, **_kwargs(kind, other))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[1].any() and not np.array_equal(a[0], face)
    assert np.array_equal(a[0][~a[1]], face[~a[1]])  # only the occluder's pixels change
    if kind != "image":  # a user's image has no random look
        assert not np.array_equal(a[0], c[0])


def test_placement_against_the_landmarks() -> None:
    face, _ = _faces()
    pts = np.round(aligned_points()).astype(int)  # (x, y)
    le, re, nose, ml, mr = pts
    for seed in range(8):
        _, m = occlude(face, "mask", seed=seed)
        assert m[nose[1], nose[0]] and m[ml[1], ml[0]] and m[mr[1], mr[0]], seed
        assert not m[le[1], le[0]] and not m[re[1], re[0]], seed
        _, g = occlude(face, "sunglasses", seed=seed)
        assert g[le[1], le[0]] and g[re[1], re[0]], seed
        assert not g[ml[1], ml[0]] and not g[mr[1], mr[0]], seed


@pytest.mark.parametrize("kind", OCCLUDERS)
@pytest.mark.parametrize("level", [0.15, 0.3, 0.45])
def test_coverage_is_what_was_asked(kind: str, level: float) -> None:
    face, other = _faces()
    _, m = occlude(face, kind, coverage=level, seed=1, **_kwargs(kind, other))
    area = face_area()
    got = (m & area).sum() / area.sum()  # measured here, on the template's face area
    assert got == pytest.approx(level, abs=0.05) and coverage_of(m) == pytest.approx(got)


def test_masktheface_templates_on_the_face() -> None:
    root = SHARED / "data" / "occluders" / "masktheface"
    if not root.is_dir():
        pytest.skip(f"MaskTheFace templates not found at {root}")
    templates = masktheface_templates(root)
    assert {"surgical", "cloth", "N95", "KN95"} <= {n for n, _, _ in templates}
    face, _ = _faces()
    pts = np.round(aligned_points()).astype(int)
    for name, rgba, anchors in templates:
        if name == "gas":
            continue
        _, m = occlude(face, "image", occluder=rgba, anchors=anchors)
        le, re, nose, ml, mr = pts
        assert m[nose[1] + 4, nose[0]] and m[ml[1], ml[0]] and m[mr[1], mr[0]], name
        assert not m[le[1], le[0]] and not m[re[1], re[0]], name


def test_bad_input(tmp_path: Path) -> None:
    face, _ = _faces()
    rgb = tmp_path / "rgb.png"
    cv2.imwrite(str(rgb), np.zeros((20, 20, 3), np.uint8))
    for call, message in (
        (lambda: occlude(face, "helmet"), "choose one of mask, sunglasses"),
        (lambda: occlude(face, "mask", coverage=1.2), "must be in \\(0, 1\\)"),
        (lambda: occlude(face, "mask", coverage=0.0), "must be in \\(0, 1\\)"),
        (lambda: occlude(face, "sunglasses", coverage=0.95), "occluder sunglasses hides"),
        (lambda: occlude(face, "image", occluder=rgb), "must be an RGBA PNG"),
        (lambda: occlude(face, "image", occluder=tmp_path / "nope.png"), "no such occluder image"),
        (lambda: occlude(face, "image", occluder=np.zeros((5, 5, 4), np.uint8)), "fully transparent"),
        (lambda: occlude(face, "face"), "give other="),
        (lambda: occlude(face[:100], "mask"), "aligned \\(160, 160, 3\\) uint8"),
    ):
        with pytest.raises(PartialFaceError, match=message):
            call()


def test_occluders_on_a_raw_photo_follow_the_alignment() -> None:
    from partialface.geometry.align import align_face, alignment_matrix
    from partialface.geometry.occlude import occlude_photo

    rng = np.random.default_rng(5)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8), (0, 0), 3)
    # a face twice the template's size, turned 10 degrees, somewhere in the photo
    t = np.deg2rad(10)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    pts = (2.0 * (aligned_points() - 80) @ rot.T) + (130, 150)
    out, hidden = occlude_photo(photo, pts, "mask", seed=2)
    assert out.shape == photo.shape and np.array_equal(out[~hidden], photo[~hidden])
    for i in (2, 3, 4):  # nose tip and both mouth corners are hidden in the photo, the eyes are not
        assert hidden[int(np.rint(pts[i, 1])), int(np.rint(pts[i, 0]))]
    for i in (0, 1):
        assert not hidden[int(np.rint(pts[i, 1])), int(np.rint(pts[i, 0]))]
    # aligning the occluded photo gives the occluder drawn on the aligned face (to interpolation)
    m = alignment_matrix(pts)
    own = (m[:, :2] @ pts.T + m[:, 2:]).T
    want, mask = occlude(align_face(photo, pts), "mask", seed=2, landmarks=own)
    got = align_face(out, pts)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert np.abs(got[inner].astype(int) - want[inner].astype(int)).mean() < 6


@pytest.mark.parametrize("kind", ["mask", "hand", "face"])
def test_a_bank_lays_the_same_occluders_as_occlude(kind: str) -> None:
    from partialface.geometry.occlude import OccluderBank

    rng = np.random.default_rng(2)
    faces = rng.integers(0, 256, (4, 160, 160, 3), dtype=np.uint8)
    others = rng.integers(0, 256, (4, 160, 160, 3), dtype=np.uint8)
    bank = OccluderBank(kind, 0.3, looks=3, seed=7)
    got = bank.apply(faces, np.array([0, 1, 2, 4]), others if kind == "face" else None)  # look 4 % 3 = 1
    for i, look in enumerate((0, 1, 2, 1)):
        want, _ = occlude(faces[i], kind, coverage=0.3, seed=7 * 1000003 + look,
                          other=others[i] if kind == "face" else None)
        assert np.array_equal(got[i], want), (kind, i)
    with pytest.raises(PartialFaceError, match="a bank draws one of"):
        OccluderBank("image", 0.3)
