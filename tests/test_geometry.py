"""Geometry: the benchmark's numbers, the published partial-face generator, the alignment recipe."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from partialface.geometry import (
    FACTORS,
    PARTS,
    PartialFaceBatcher,
    Variant,
    align_face,
    all_variants,
    part_centre,
    part_rect,
    partial_face,
    partial_faces_batch,
)
from partialface.geometry.align import alignment_matrix, resize_fallback
from partialface.geometry.template import template_points, visible_fraction

# --- The published numbers, typed in from the spec (independent of template.py) -------------------
SPEC_X = [0.2194, 0.7747, 0.4971, 0.3207, 0.6735]
SPEC_Y = [0.1871, 0.1871, 0.5337, 0.7633, 0.7633]
SPEC_CENTRES = {"lEye": (51.94, 63.71), "rEye": (107.47, 63.71), "Nose": (79.71, 98.37), "Mouth": (79.71, 121.33)}


def published_partial(img: np.ndarray, part: str, factor: float, centred: bool) -> np.ndarray:
    """The published generator's per-image steps (gen_partial_faces.py), restated for one variant."""
    idx = ["lEye", "rEye", "Nose", "Mouth"].index(part)
    xs = list(SPEC_X)
    xs[3] = 0.5 * (xs[3] + xs[4])
    px = (0.3 + xs[idx]) / (2 * 0.3 + 1) * 160
    py = (0.3 + SPEC_Y[idx]) / (2 * 0.3 + 1) * 160 + 15
    shifted = img[:, :, 0:3] - np.uint8(128)  # uint8 wrap-around, as published
    roi = np.zeros(img.shape[0:2], dtype=np.uint8)
    x1, y1 = int(px - (15 + 120 * factor)), int(py - (10 + 105 * factor))
    x2, y2 = int(px + (15 + 120 * factor)), int(py + (10 + 105 * factor))
    cv2.rectangle(roi, (x1, y1), (x2, y2), 1, -1)
    partial = cv2.bitwise_and(shifted, shifted, mask=roi) + np.uint8(128)
    if not centred:
        return partial
    m = np.float32([[1, 0, 80 - px], [0, 1, 80 - py]])  # the published float32 matrix
    return cv2.warpAffine(partial, m, (160, 160), borderValue=(128, 128, 128))


def random_faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 160, 160, 3), dtype=np.uint8)


# --- template ------------------------------------------------------------------------------------
def test_part_centres_match_spec() -> None:
    for part, (cx, cy) in SPEC_CENTRES.items():
        got = part_centre(part)  # type: ignore[arg-type]
        assert got == pytest.approx((cx, cy), abs=5e-3)


def test_template_points_formula() -> None:
    t = template_points()
    for i in range(5):
        assert t[i, 0] == pytest.approx((0.3 + SPEC_X[i]) / 1.6 * 160)
        assert t[i, 1] == pytest.approx((0.3 + SPEC_Y[i]) / 1.6 * 160)


def test_rectangles_hand_computed() -> None:
    # lEye, f = 0.1: half extents 27 and 20.5 around (51.94, 63.71): int(24.94)=24, int(78.94)=78, ...
    r = part_rect("lEye", 0.1)
    assert (r.x1, r.y1, r.x2, r.y2) == (24, 43, 78, 84)
    # lEye, f = 0.5: x1 = int(51.94 - 75) = int(-23.06) = -23 (truncation toward zero, not floor).
    r = part_rect("lEye", 0.5)
    assert (r.x1, r.y1, r.x2, r.y2) == (-23, 1, 126, 126)
    assert r.clipped().x1 == 0
    # Mouth, f = 0.5 runs off the bottom: y2 = int(121.33 + 62.5) = 183 -> clipped to 159.
    r = part_rect("Mouth", 0.5)
    assert r.y2 == 183 and r.clipped().y2 == 159


def test_visible_area_range() -> None:
    fr = [visible_fraction(p, f) for p in PARTS for f in FACTORS]
    assert min(fr) == pytest.approx(0.09, abs=0.005) and max(fr) == pytest.approx(0.74, abs=0.005)
    assert len(all_variants()) == 72 and len(set(all_variants())) == 72


# --- exact path against the published generator ------------------------------------------------
@pytest.mark.parametrize("centred", [False, True])
def test_partial_face_matches_published_generator(centred: bool) -> None:
    faces = random_faces(3, seed=1)
    for img in faces:
        for part in PARTS:
            for f in FACTORS:
                ref = published_partial(img, part, f, centred)
                got = partial_face(img, part, f, centred)
                assert np.array_equal(got, ref), (part, f, centred)


def test_partial_face_extreme_images() -> None:
    for value in (0, 127, 128, 255):
        img = np.full((160, 160, 3), value, np.uint8)
        for part in PARTS:
            for f in (0.1, 0.5):
                for c in (False, True):
                    assert np.array_equal(partial_face(img, part, f, c), published_partial(img, part, f, c))


def test_partial_face_keeps_inclusive_rectangle() -> None:
    img = np.zeros((160, 160, 3), np.uint8)
    out = partial_face(img, "Nose", 0.2, centred=False)
    r = part_rect("Nose", 0.2).clipped()
    kept = np.argwhere(out[:, :, 0] == 0)
    assert kept[:, 0].min() == r.y1 and kept[:, 0].max() == r.y2
    assert kept[:, 1].min() == r.x1 and kept[:, 1].max() == r.x2
    assert len(kept) == r.area


def test_partial_face_on_real_lfw(lfw_root) -> None:  # type: ignore[no-untyped-def]
    from partialface.data.images import read_image

    paths = sorted((lfw_root / "lfw-deepfunneled").glob("A*/*_0001.jpg"))[:4]
    assert paths
    for p in paths:
        img = read_image(p)[45:205, 45:205].copy()  # a real 160x160 face crop
        for v in all_variants():
            assert v.part is not None and v.factor is not None
            ref = published_partial(img, v.part, v.factor, v.centred)
            assert np.array_equal(partial_face(img, v.part, v.factor, v.centred), ref)
        batch = PartialFaceBatcher(torch.from_numpy(img[None]))
        for v in all_variants():
            assert v.part is not None and v.factor is not None
            got = batch.variant(v)[0].permute(1, 2, 0).numpy()
            assert np.array_equal(got, partial_face(img, v.part, v.factor, v.centred)), str(v)


# --- batched path -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["cv2", "torch"])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_batched_path_bit_exact(backend: str, layout: str) -> None:
    faces = random_faces(4, seed=2)
    t = torch.from_numpy(faces)
    if layout == "nchw":
        t = t.permute(0, 3, 1, 2).contiguous()
    out = partial_faces_batch(t, backend=backend)
    assert out.shape == (72, 4, 3, 160, 160) and out.dtype == torch.uint8
    for vi, v in enumerate(all_variants()):
        assert v.part is not None and v.factor is not None
        for i in range(4):
            ref = partial_face(faces[i], v.part, v.factor, v.centred)
            assert np.array_equal(out[vi, i].permute(1, 2, 0).numpy(), ref), (str(v), i)


def test_batched_holistic_and_errors() -> None:
    faces = torch.from_numpy(random_faces(2))
    b = PartialFaceBatcher(faces)
    assert torch.equal(b.variant(Variant()).permute(0, 2, 3, 1), faces)
    with pytest.raises(ValueError):
        Variant("Ear", 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Variant("Nose", None)
    with pytest.raises(ValueError):
        PartialFaceBatcher(torch.zeros(2, 100, 100, 3, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_path_on_cuda() -> None:
    faces = random_faces(3, seed=3)
    out = partial_faces_batch(torch.from_numpy(faces).cuda()).cpu()
    for vi, v in enumerate(all_variants()):
        assert v.part is not None and v.factor is not None
        assert np.array_equal(out[vi, 0].permute(1, 2, 0).numpy(), partial_face(faces[0], v.part, v.factor, v.centred))


# --- alignment ----------------------------------------------------------------------------------
def _similarity(points: np.ndarray, scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (scale * (rot @ points.T)).T + np.asarray(shift)


TEMPLATE = np.array([[(0.3 + x) / 1.6 * 160, (0.3 + y) / 1.6 * 160] for x, y in zip(SPEC_X, SPEC_Y, strict=True)])


@pytest.mark.parametrize(("scale", "angle"), [(1.0, 0.0), (2.0, 10.0), (0.7, -25.0), (1.6, 170.0)])
def test_alignment_recovers_scale_angle_and_eye_centre(scale: float, angle: float) -> None:
    lm = _similarity(TEMPLATE, scale, angle, (30.0, -12.0))
    m = alignment_matrix(lm)
    # The warp undoes the similarity: its linear part is (1/scale) * R(-angle).
    a = math.radians(-angle)
    expect = (1 / scale) * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    assert np.allclose(m[:, :2], expect, atol=1e-9)
    # The eye midpoint lands at (80, 64) ...
    eye_mid = (lm[0] + lm[1]) / 2
    assert np.allclose(m @ np.append(eye_mid, 1.0), [80.0, 64.0], atol=1e-9)
    # ... so every landmark lands at its template point moved by (80, 64) - template eye midpoint,
    # i.e. about 0.3 px right and 15.3 px down (why the part centres add 15 to y).
    mapped = (m @ np.c_[lm, np.ones(5)].T).T
    offset = np.array([80.0, 64.0]) - (TEMPLATE[0] + TEMPLATE[1]) / 2
    assert offset == pytest.approx([0.295, 15.29], abs=1e-3)
    assert np.allclose(mapped, TEMPLATE + offset, atol=1e-9)


def test_alignment_excludes_reflection() -> None:
    mirrored = TEMPLATE.copy()
    mirrored[:, 0] = 160 - mirrored[:, 0]
    m = alignment_matrix(mirrored)
    assert np.linalg.det(m[:, :2]) > 0  # a rotation, never a flip


def test_align_face_integer_shift_and_grey_border() -> None:
    # Landmarks = template moved so that the recipe's warp is a pure integer shift by (+5, +7).
    d = np.array([80.0, 64.0]) - (TEMPLATE[0] + TEMPLATE[1]) / 2 - np.array([5.0, 7.0])
    img = np.random.default_rng(4).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    out = align_face(img, TEMPLATE + d)
    assert out.shape == (160, 160, 3) and out.dtype == np.uint8
    assert np.array_equal(out[7:, 5:], img[:-7, :-5])
    assert (out[:7] == 128).all() and (out[:, :5] == 128).all()  # grey border where no source pixel exists


def test_align_face_rotation_moves_a_marked_pixel() -> None:
    # A 3x3 white dot at the (rotated) source eye midpoint ends up centred at (80, 64).
    lm = _similarity(TEMPLATE, 1.3, 20.0, (40.0, 30.0))
    img = np.full((300, 300, 3), 128, np.uint8)
    cx, cy = np.round((lm[0] + lm[1]) / 2).astype(int)
    img[cy - 1 : cy + 2, cx - 1 : cx + 2] = 255
    out = align_face(img, lm).astype(float)[:, :, 0] - 128
    ys, xs = np.nonzero(out)
    wy, wx = (out[ys, xs] * ys).sum() / out.sum(), (out[ys, xs] * xs).sum() / out.sum()
    mid = (lm[0] + lm[1]) / 2
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    expect = np.array([80.0, 64.0]) + (np.array([cx, cy]) - mid) / 1.3 @ np.array([[c, -s], [s, c]])
    assert (wx, wy) == pytest.approx(tuple(expect), abs=0.05)


def test_align_face_rejects_bad_input() -> None:
    img = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError):
        align_face(img, np.zeros((4, 2)))
    with pytest.raises(ValueError):
        align_face(img, np.full((5, 2), np.nan))
    with pytest.raises(ValueError):
        align_face(img.astype(np.float32), TEMPLATE)


def test_resize_fallback_shape() -> None:
    img = np.random.default_rng(5).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    out = resize_fallback(img)
    assert out.shape == (160, 160, 3) and out.dtype == np.uint8
    assert abs(float(out.mean()) - float(img.mean())) < 2.0


def test_reused_buffer_gives_the_same_bytes() -> None:
    faces = random_faces(3, seed=6)
    b = PartialFaceBatcher(torch.from_numpy(faces))
    seen = []
    for v, x in b.variants(reuse_buffer=True):
        assert v.part is not None and v.factor is not None
        seen.append(x.data_ptr())
        assert np.array_equal(x[1].permute(1, 2, 0).numpy(), partial_face(faces[1], v.part, v.factor, v.centred))
    assert len(set(seen)) == 1  # one buffer for all 72 variants
    with pytest.raises(ValueError):
        b.variant(Variant("Nose", 0.2), out=torch.empty(3, 3, 160, 160, dtype=torch.uint8))
