"""Large photos (issue #42 item 4): faces searched for on a downscaled copy, mapped back exactly, and cut from the
full-resolution photo without aliasing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from partialface.data.images import read_image
from partialface.detect.policy import DETECT_SIDE, detect_faces, detect_photo
from partialface.geometry.align import align_face, align_photo, alignment_matrix
from partialface.geometry.template import template_points


def nearest(img: np.ndarray, k: int) -> np.ndarray:
    """Each pixel repeated k x k: a whole-factor area mean of the result gives ``img`` back exactly."""
    return img.repeat(k, axis=0).repeat(k, axis=1)


@pytest.fixture(scope="module")
def photo(lfw_root: Path) -> np.ndarray:
    return read_image(lfw_root / "lfw-deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")


def test_detection_on_the_downscaled_copy_maps_back_to_the_photo(photo: np.ndarray) -> None:
    """An 8x photo (2000 px) is searched at 1000 px (factor 2): exactly the 4x photo's faces, scaled by 2 about
    the pixel centres."""
    big, mid = nearest(photo, 8), nearest(photo, 4)
    assert DETECT_SIDE < big.shape[0] <= 2 * DETECT_SIDE
    got = detect_photo(big, detector="mtcnn", device="cpu")
    want = detect_faces(mid, detector="mtcnn", device="cpu")
    assert len(got) == len(want) >= 1
    np.testing.assert_allclose(got[0].landmarks, (want[0].landmarks + 0.5) * 2 - 0.5, atol=1e-6)
    np.testing.assert_allclose(got[0].box, np.array(want[0].box) * 2, atol=1e-6)
    assert got[0].score == pytest.approx(want[0].score)
    # a photo within the side, or side 0, is searched as it is
    assert [f.box for f in detect_photo(photo, detector="mtcnn", device="cpu")] == \
        [f.box for f in detect_faces(photo, detector="mtcnn", device="cpu")]
    full = detect_photo(mid, detector="mtcnn", device="cpu", detect_side=0)
    np.testing.assert_allclose(full[0].landmarks, want[0].landmarks)


def test_a_large_face_is_cut_without_aliasing() -> None:
    """A fine texture 6x enlarged (each pixel a 6x6 block): cut from the large photo it matches the face cut from
    the small one (the area filter undoes the enlargement), where a plain bilinear warp aliases."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (220, 220, 3), dtype=np.uint8)  # the worst case: texture at the pixel scale
    lm = template_points(160) * 0.8 + 30  # a face a little larger than the template's, inside the photo
    big = nearest(small, 6)
    lm_big = (lm + 0.5) * 6 - 0.5
    ref = align_face(small, lm).astype(int)
    cut = align_photo(big, lm_big).astype(int)
    plain = align_face(big, lm_big).astype(int)
    assert np.abs(np.linalg.det(alignment_matrix(lm_big)[:, :2])) ** 0.5 < 0.5  # the path under test runs
    assert np.abs(cut - ref).mean() < 0.25 * np.abs(plain - ref).mean()
    assert np.abs(cut - ref).mean() < 12  # vs about 85 for two unrelated noise images
    # a face the warp does not shrink 2x: exactly align_face
    np.testing.assert_array_equal(align_photo(small, lm), align_face(small, lm))


def test_embedding_a_large_photo_matches_the_small_one(photo: np.ndarray) -> None:
    """Through the facade: the 4x photo's face embeds like the photo's own (same person, cosine near 1), at the
    default side and at full resolution."""
    import partialface

    a = partialface.embed(photo, regions=False, visibility=False)[0].embedding
    big = cv2.resize(photo, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    for side in (None, 0):
        b = partialface.embed(big, regions=False, visibility=False, detect_side=side)[0].embedding
        assert float(a @ b) > 0.9
