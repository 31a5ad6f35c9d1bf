"""Operating points that follow visibility (partialface.evaluation.calibrate_auto, issue #39): levels by hand,
thresholds against a brute-force count, the fallback for models without levels, and the whole calibration on a
small set of synthetic identities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from partialface.errors import PartialFaceError
from partialface.evaluation.calibrate import FARS, OperatingPoints, far_key
from partialface.evaluation.calibrate_auto import (
    AUTO,
    DETAIL_BINS,
    LEVELS,
    STATES,
    auto_threshold,
    auto_thresholds,
    calibrate_auto,
    degrade,
    detail_edge,
    face_detail,
    has_auto,
    level_kind,
    level_of,
    level_pairs,
    level_points,
    quality_kind,
    shared_visibility,
)


def test_levels_by_hand() -> None:
    va = np.array([1.0, 1.0, 1.0, 0.0, 1.0])  # the mouth hidden
    vb = np.array([0.5, 1.0, 1.0, 1.0, 1.0])  # the left eye half hidden
    assert shared_visibility(va, vb) == pytest.approx((0.5 + 1 + 1 + 0 + 1) / 5)
    assert list(level_of(np.array([1.0, 0.9, 0.89, 0.75, 0.6, 0.55, 0.549, 0.0]))) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert level_kind(0) == "auto/visible>=0.90" and LEVELS[-1] == 0.0


def test_level_thresholds_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    scores = rng.normal(size=n)
    same = rng.random(n) < 0.1
    scores[same] += 2
    levels = rng.integers(0, len(LEVELS), n)
    found = level_points(scores, same, levels)
    for li in range(len(LEVELS)):
        imp = scores[(levels == li) & ~same]
        for far in FARS:
            t = found[level_kind(li)]["threshold"][far_key(far)]
            accepted = int((imp >= t).sum())
            assert accepted <= far * len(imp)  # never more false accepts than the rate allows
            assert int((imp >= np.sort(imp)[::-1][accepted]).sum()) > far * len(imp)  # and the next score would be


def test_fallback_without_levels() -> None:
    p = OperatingPoints(threshold={"holistic": {far_key(f): 0.3 for f in FARS},
                                   "partial": {far_key(f): 0.2 for f in FARS}})
    assert not has_auto(p)
    assert auto_threshold(p, 1e-3, 0.95) == (0.3, "holistic")
    assert auto_threshold(p, 1e-3, 0.5) == (0.2, "partial")
    for i in range(len(LEVELS)):
        p.threshold[level_kind(i)] = {far_key(f): 0.5 - 0.1 * i for f in FARS}
    assert has_auto(p) and auto_threshold(p, 1e-3, 0.8) == (pytest.approx(0.4), level_kind(1))
    with pytest.raises(PartialFaceError, match="--far"):
        auto_threshold(p, 0.5, 0.8)


def test_face_detail_by_hand() -> None:
    """A flat face has no detail; a 1-px checkerboard over the measured box loses all its contrast at 48 px (detail
    about 1); blurring lowers it step by step; a face made at the low quality keeps under half of a sharp one's; the
    brightness of a photo does not move it."""
    import cv2

    flat = np.full((1, 160, 160, 3), 128, np.uint8)
    assert face_detail(flat)[0] == 0.0
    checker = ((np.indices((160, 160)).sum(0) % 2) * 200 + 20).astype(np.uint8)
    board = np.repeat(checker[None, :, :, None], 3, axis=3)
    assert face_detail(board)[0] == pytest.approx(1.0, abs=0.05)
    rng = np.random.default_rng(5)
    face = cv2.GaussianBlur(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8), (0, 0), 1.0)
    blurred = [face if s == 0 else cv2.GaussianBlur(face, (0, 0), s) for s in (0, 1.0, 2.0, 4.0)]
    d = face_detail(np.stack(blurred))
    assert all(d[k + 1] < d[k] for k in range(3)) and d[-1] < 0.25 * d[0]
    assert face_detail(degrade(face[None], "low"))[0] < 0.5 * face_detail(face[None])[0]
    darker = (face.astype(np.float32) * 0.6).astype(np.uint8)
    assert face_detail(darker[None])[0] == pytest.approx(face_detail(face[None])[0], rel=0.05)


def test_detail_bins_pick_the_pair_threshold() -> None:
    """A model with levels per detail bin: a pair below the edge takes the soft level, one at or above it the sharp
    one, one of unknown detail the pooled level; a model without them ignores the detail; the vectorised rule
    gives the same thresholds as the pair-by-pair one."""
    p = OperatingPoints(threshold={"holistic": {far_key(f): 0.3 for f in FARS},
                                   "partial": {far_key(f): 0.2 for f in FARS}})
    for i in range(len(LEVELS)):
        p.threshold[level_kind(i)] = {far_key(f): 0.50 - 0.1 * i for f in FARS}
    assert detail_edge(p) is None and auto_threshold(p, 1e-3, 0.8, 0.3) == (pytest.approx(0.4), level_kind(1))
    for b, base in zip(DETAIL_BINS, (0.55, 0.45), strict=True):
        for i in range(len(LEVELS)):
            p.threshold[quality_kind(b, i)] = {far_key(f): base - 0.1 * i for f in FARS}
    assert detail_edge(p) is None  # the edge is part of the calibration's record
    p.measured_on[AUTO] = {"detail_edge": 0.1}
    assert detail_edge(p) == 0.1 and quality_kind("sharp", 0) == "auto/sharp/visible>=0.90"
    assert auto_threshold(p, 1e-3, 0.8, 0.05) == (pytest.approx(0.45), "auto/soft/visible>=0.75")
    assert auto_threshold(p, 1e-3, 0.8, 0.1) == (pytest.approx(0.35), "auto/sharp/visible>=0.75")
    assert auto_threshold(p, 1e-3, 0.3, None) == (pytest.approx(0.2), level_kind(3))
    rng = np.random.default_rng(6)
    share, detail = rng.random(200), rng.random(200) * 0.2
    detail[::7] = np.nan
    want = [auto_threshold(p, 1e-2, s, None if np.isnan(d) else d)[0] for s, d in zip(share, detail, strict=True)]
    assert np.allclose(auto_thresholds(p, 1e-2, share, detail), want)
    assert np.allclose(auto_thresholds(p, 1e-2, share), [auto_threshold(p, 1e-2, s)[0] for s in share])


def test_level_pairs_count_every_pair_once() -> None:
    rng = np.random.default_rng(1)
    n, d = 7, 4
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    emb = {s: rng.normal(size=(n, d)) for s in STATES}
    vis = {s: rng.random((n, 5)) for s in STATES}
    scores, same, levels, state, detail = level_pairs(emb, vis, labels)
    assert np.isnan(detail).all()  # no details given
    assert len(scores) == n * (n - 1) // 2 + (len(STATES) - 1) * n * (n - 1)
    whole = state == 0
    assert same[whole].sum() == 1 + 3 + 1  # pairs within identities of sizes 2, 3, 2
    i, j = 0, 3  # mask of face 0 against the whole face 3
    sel = np.flatnonzero(state == STATES.index("mask"))
    k = sel[i * (n - 1) + (j - 1)]
    assert scores[k] == pytest.approx(emb["mask"][i] @ emb["whole"][j])
    assert levels[k] == level_of(np.minimum(vis["mask"][i], vis["whole"][j]).mean())


def test_degrade_is_small_and_soft() -> None:
    rng = np.random.default_rng(2)
    faces = rng.integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)
    assert degrade(faces, "as-is") is faces
    low = degrade(faces, "low")
    assert low.shape == faces.shape and np.abs(np.diff(low.astype(float), axis=2)).mean() < 0.5 * np.abs(
        np.diff(faces.astype(float), axis=2)).mean()
    with pytest.raises(PartialFaceError, match="quality"):
        degrade(faces, "poster")


def test_calibrate_auto_on_identity_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six identities of three noisy copies of one face each; embeddings = the mean colour of each region and the
    visibility = the share of non-grey pixels per region: the levels, their pair counts and the per-quality
    thresholds are all filled in."""
    from partialface.data.images import write_image
    from partialface.geometry.regions import REGIONS, region_labels
    from partialface.geometry.template import GREY

    rng = np.random.default_rng(3)
    for c in range(6):
        base = rng.integers(30, 230, (1, 1, 3))
        for k in range(3):
            face = np.clip(base + rng.normal(0, 25, (160, 160, 3)), 0, 255).astype(np.uint8)
            write_image(tmp_path / f"id{c}" / f"{k}.png", face)
    labels = region_labels()

    def embed(faces: np.ndarray) -> np.ndarray:
        f = np.stack([np.concatenate([x[labels == r].mean(0) for r in range(len(REGIONS))]) for x in faces])
        f = f - f.mean(1, keepdims=True)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    def visibility(faces: np.ndarray) -> np.ndarray:
        grey = (np.abs(faces.astype(int) - GREY).sum(-1) < 6)
        return np.stack([[1 - g[labels == r].mean() for r in range(len(REGIONS))] for g in grey])

    from partialface.geometry.realistic import MASK_DESIGNS, MaskTemplate

    p = OperatingPoints(threshold={}, tar={}, pairs={}, measured_on={})

    rgba = np.zeros((60, 100, 4), np.uint8)
    rgba[5:55, 5:95] = (200, 200, 200, 255)
    anchors = np.array([(5, 20), (50, 5), (95, 20), (8, 45), (50, 55), (92, 45)], np.float64)
    masks = {d + v: MaskTemplate(d, rgba, anchors) for d in MASK_DESIGNS for v in ("", "_left", "_right")}
    out = calibrate_auto(p, embed, visibility, tmp_path, masks, progress=False)
    assert has_auto(out)
    auto = out.measured_on["auto"]
    assert set(auto["per_quality"]) == {"as-is", "low"} and auto["images"] == 18
    total = 2 * (153 - 18 + 5 * (306 - 36))  # 2 qualities x (whole: 153 pairs - 18 genuine; 5 states: 306 - 36)
    assert all(min(1000, total) <= out.pairs[level_kind(i)][1] <= total for i in range(len(LEVELS)))
    assert set(auto["real_far_by_state"]) == set(STATES)
    # the detail bins: the edge lies between the two qualities' median detail, every bin has every level, and at
    # FAR 1e-2 (enough impostors here) no state's real FAR is far above it
    lo, hi = auto["per_quality"]["low"]["median_detail"], auto["per_quality"]["as-is"]["median_detail"]
    assert lo < auto["detail_edge"] < hi and detail_edge(out) == auto["detail_edge"]
    assert all(quality_kind(b, i) in out.threshold for b in DETAIL_BINS for i in range(len(LEVELS)))
    # a level short of impostor pairs is measured with its neighbours: here all of them together
    monkeypatch.setattr("partialface.evaluation.calibrate_auto.MIN_IMPOSTORS", 10**9)
    out = calibrate_auto(OperatingPoints(threshold={}, tar={}, pairs={}, measured_on={}), embed, visibility, tmp_path,
                         masks, progress=False, qualities=("as-is",))
    assert all(out.pairs[level_kind(i)][1] == total // 2 for i in range(len(LEVELS)))
