"""Realistic occluders on raw photos (partialface.geometry.realistic, issue #39): the same pixels for the same
seed, masks anchored where the landmarks say (a synthetic template whose anchors are coloured dots), the ground
truth in the aligned frame, lighting matched to the face, crops, bad input; and the realistic test end to end on
real LFW photos (partialface.evaluation.realistic)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from partialface.errors import PartialFaceError
from partialface.evaluation.realistic import wilson_interval
from partialface.geometry.align import alignment_matrix
from partialface.geometry.occlude import face_area
from partialface.geometry.realistic import (
    MASK_DESIGNS,
    REALISTIC_KINDS,
    MaskTemplate,
    face_frame,
    load_mask_templates,
    mask_anchors,
    occlude_aligned_realistic,
    occlude_photo_realistic,
)
from partialface.geometry.template import aligned_points

SHARED = Path(os.environ.get("PARTIALFACE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DOTS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)], np.uint8)


def _dotted_masks() -> dict[str, MaskTemplate]:
    """A 300x200 template: a white body through its 6 anchors, each anchor a coloured dot of radius 5."""
    anchors = np.array([(20, 60), (150, 15), (280, 60), (30, 140), (150, 190), (270, 140)], np.float64)
    rgba = np.zeros((205, 300, 4), np.uint8)
    cv2.fillPoly(rgba, [anchors[[0, 1, 2, 5, 4, 3]].astype(np.int32)], (235, 235, 235, 255))
    for p, colour in zip(anchors, DOTS, strict=True):
        cv2.circle(rgba, (int(p[0]), int(p[1])), 5, (*map(int, colour), 255), -1)
    t = MaskTemplate("dots", rgba, anchors)
    return {name + view: t for name in MASK_DESIGNS for view in ("", "_left", "_right")}


def _face_photo(angle: float = 12.0, scale: float = 2.0, size: int = 420, grey: int = 140) -> tuple[np.ndarray,
                                                                                                         np.ndarray]:
    """A flat grey photo and the landmarks of a template-shaped face on it, rotated by ``angle`` and scaled."""
    pts = aligned_points()
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    rot = scale * np.array([[c, -s], [s, c]])
    photo_pts = (pts - 80) @ rot.T + size / 2
    return np.full((size, size, 3), grey, np.uint8), photo_pts


def _centroid(img: np.ndarray, colour: np.ndarray) -> np.ndarray:
    d = np.abs(img.astype(np.int64) - colour.astype(np.int64)).sum(-1)
    ys, xs = np.nonzero(d < 90)
    assert len(xs) > 5, f"dot {colour} not found"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("yaw", [0.0, -14.0, 14.0])
def test_mask_anchored_where_the_landmarks_say(yaw: float) -> None:
    photo, pts = _face_photo()
    if yaw:  # the nose moved sideways: a turned head
        pts = pts.copy()
        pts[2, 0] += yaw
    occ = occlude_photo_realistic(photo, pts, "mask", seed=3, masks=_dotted_masks(), jpeg=False)
    m = alignment_matrix(pts)
    aligned_pts = (m[:, :2] @ pts.T + m[:, 2:]).T
    inv = cv2.invertAffineTransform(m)
    want = (inv[:, :2] @ mask_anchors(aligned_pts).T + inv[:, 2:]).T  # anchors in the photo
    for colour, target in zip(DOTS, want, strict=True):  # within a pixel (the canvas's and the photo's resampling)
        assert np.linalg.norm(_centroid(occ.photo, colour) - target) < 1.0
    # the anchors themselves, by hand on the aligned face: bridge between the eyes' midpoint and the nose tip,
    # a / c at the nose tip's height about a face width of 2 eye distances apart, chin below the mouth
    a = mask_anchors(aligned_pts)
    eye, nose = (aligned_pts[0] + aligned_pts[1]) / 2, aligned_pts[2]
    d = np.linalg.norm(aligned_pts[1] - aligned_pts[0])
    assert eye[1] < a[1, 1] < nose[1] and a[0, 1] == pytest.approx(nose[1]) == a[2, 1]
    assert 1.7 * d < a[2, 0] - a[0, 0] < 2.6 * d and a[4, 1] > aligned_pts[3:, 1].max() + 0.3 * d
    if yaw == 0:
        assert a[0, 0] + a[2, 0] == pytest.approx(2 * eye[0], abs=0.05)  # symmetric (the nose 0.005 px off)
    else:  # the contour on the side the nose moved to comes closer to it
        near, far = (a[0, 0], a[2, 0]) if yaw < 0 else (a[2, 0], a[0, 0])
        assert abs(near - nose[0]) < abs(far - nose[0])


def test_turned_view_follows_the_yaw() -> None:
    assert face_frame(aligned_points()).delta == pytest.approx(0.0, abs=1e-3)
    photo, pts = _face_photo(angle=0)
    masks = _dotted_masks()
    named = {k: MaskTemplate(k, v.rgba, v.anchors) for k, v in masks.items()}
    for shift, view in ((0.0, ""), (-16.0, "_left"), (16.0, "_right")):
        p = pts.copy()
        p[2, 0] += shift
        what = occlude_photo_realistic(photo, p, "mask", seed=1, masks=named, jpeg=False).what
        assert what.startswith("mask/") and what.endswith(view) and (view or not what.endswith(("_left", "_right")))


@pytest.mark.parametrize("kind", REALISTIC_KINDS)
def test_same_seed_same_pixels(kind: str) -> None:
    photo, pts = _face_photo()
    photo = np.random.default_rng(0).integers(60, 200, photo.shape, dtype=np.uint8)
    masks = _dotted_masks()
    a = occlude_photo_realistic(photo, pts, kind, seed=7, masks=masks)
    b = occlude_photo_realistic(photo, pts, kind, seed=7, masks=masks)
    assert np.array_equal(a.photo, b.photo) and np.array_equal(a.hidden_aligned, b.hidden_aligned)
    others = [occlude_photo_realistic(photo, pts, kind, seed=s, masks=masks) for s in range(8, 12)]
    assert any(o.what != a.what or o.photo.shape != a.photo.shape or not np.array_equal(o.photo, a.photo)
               for o in others)
    assert a.hidden_aligned.any()


def test_ground_truth_where_the_occluder_is() -> None:
    """Sunglasses hide both eyes and not the mouth; a hand hides a real part of the face; in the aligned frame."""
    photo, pts = _face_photo(scale=1.0, size=220)
    eyes = np.round(aligned_points()[:2]).astype(int)
    mouth = np.round(aligned_points()[3:].mean(0)).astype(int)
    area = face_area()
    for seed in range(4):
        g = occlude_photo_realistic(photo, pts, "sunglasses", seed=seed).hidden_aligned
        assert all(g[y, x] for x, y in eyes) and not g[mouth[1], mouth[0]]
        h = occlude_photo_realistic(photo, pts, "hand", seed=seed).hidden_aligned
        assert (h & area).sum() / area.sum() > 0.1
        m = occlude_photo_realistic(photo, pts, "mask", seed=seed, masks=_dotted_masks()).hidden_aligned
        assert m[mouth[1], mouth[0]] and not any(m[y, x] for x, y in eyes)


def test_photo_and_aligned_agree() -> None:
    """The same occluder drawn on a photo (rotated, scaled 2x) and on its aligned face hides the same pixels."""
    photo, pts = _face_photo(angle=-9, scale=2.3)
    aligned = np.full((160, 160, 3), 140, np.uint8)
    for kind in ("sunglasses", "hand", "mask"):
        on_photo = occlude_photo_realistic(photo, pts, kind, seed=5, masks=_dotted_masks()).hidden_aligned
        _, on_face = occlude_aligned_realistic(aligned, kind, seed=5, masks=_dotted_masks())
        iou = (on_photo & on_face).sum() / (on_photo | on_face).sum()
        assert iou > 0.9, (kind, iou)


def test_lighting_follows_the_face() -> None:
    """The same hand on a dark photo is darker than on a bright one (colours scaled by the face's light)."""
    bright, pts = _face_photo(grey=190)
    dark, _ = _face_photo(grey=60)
    a = occlude_photo_realistic(bright, pts, "hand", seed=2, jpeg=False)
    b = occlude_photo_realistic(dark, pts, "hand", seed=2, jpeg=False)
    inside = a.hidden & b.hidden
    ratio = b.photo[inside].mean() / a.photo[inside].mean()
    assert ratio < 0.6


def test_crop_cuts_the_photo_through_the_face() -> None:
    rng = np.random.default_rng(1)
    photo, pts = _face_photo(angle=0)
    photo = rng.integers(0, 256, photo.shape, dtype=np.uint8)
    area = face_area()
    sides = set()
    for seed in range(12):
        o = occlude_photo_realistic(photo, pts, "crop", seed=seed)
        x0, y0 = o.offset
        h, w = o.photo.shape[:2]
        assert np.array_equal(o.photo, photo[y0 : y0 + h, x0 : x0 + w]) and (h, w) != photo.shape[:2]
        frac = (o.hidden_aligned & area).sum() / area.sum()
        assert 0.17 < frac < 0.48, frac
        sides.add(o.what)
        g, hidden = occlude_aligned_realistic(np.full((160, 160, 3), 90, np.uint8), "crop", seed=seed)
        assert (g[hidden] == 128).all() and (g[~hidden] == 90).all()
    assert len(sides) >= 3


def test_bad_input() -> None:
    photo, pts = _face_photo()
    with pytest.raises(PartialFaceError, match="choose one of"):
        occlude_photo_realistic(photo, pts, "scarf")
    with pytest.raises(PartialFaceError, match="masks="):
        occlude_photo_realistic(photo, pts, "mask")
    with pytest.raises(PartialFaceError, match=r"masks\.cfg"):
        load_mask_templates("/nonexistent")
    with pytest.raises(PartialFaceError, match="uint8"):
        occlude_aligned_realistic(np.zeros((10, 10, 3), np.uint8), "hand")


def test_real_templates_load() -> None:
    root = SHARED / "data" / "occluders" / "masktheface"
    if not (root / "masks" / "masks.cfg").is_file():
        pytest.skip(f"MaskTheFace's templates not found at {root}")
    masks = load_mask_templates(root)
    assert all(d in masks and d + "_left" in masks and d + "_right" in masks for d in MASK_DESIGNS)
    assert all(t.anchors.shape == (6, 2) and t.rgba.shape[2] == 4 for t in masks.values())


@pytest.mark.lfw
def test_realistic_benchmark_end_to_end(lfw_root: Path, tmp_path: Path) -> None:
    """Two folds of 3 + 3 real LFW pairs: the command runs the whole pipeline, the stored ground truth is the
    occluder's, and the FAR at the operating point is the impostor pairs' share above the file's threshold."""
    from partialface.cli import main
    from partialface.evaluation.calibrate import read_operating_points
    from partialface.models.catalogue import shipped_model
    from partialface.training.checkpoint import load_weights

    masks = SHARED / "data" / "occluders" / "masktheface"
    if not (masks / "masks" / "masks.cfg").is_file():
        pytest.skip(f"MaskTheFace's templates not found at {masks}")
    lines = (lfw_root / "pairs.txt").read_text().splitlines()
    per = int(lines[0].split()[1])
    body = []
    for f in range(2):
        base = 1 + f * 2 * per
        body += lines[base : base + 3] + lines[base + per : base + per + 3]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2 3\n" + "\n".join(body) + "\n")
    out = tmp_path / "out"
    args = ["benchmark-occluded", "--realistic", "--data", str(lfw_root / "lfw-deepfunneled"), "--masks", str(masks),
            "--pairs", str(pairs), "--out", str(out), "--no-progress", "--model", "sface-400"]
    assert main(args) == 0
    res = json.loads((out / "realistic.json").read_text())
    assert res["detection"]["whole"]["found"] == 1.0
    assert {r["kind"] for r in res["rows"]} == {"whole", *REALISTIC_KINDS}
    # the stored ground truth is what the occluder hides: regenerate photo 0's mask
    from partialface.data.images import read_image
    from partialface.data.lfw import read_pairs
    from partialface.detect import detect_faces
    from partialface.evaluation.realistic import prepare_faces

    keys = read_pairs(pairs).images()
    paths = [lfw_root / "lfw-deepfunneled" / k for k in keys]
    store = prepare_faces(paths, out / "faces", kinds=REALISTIC_KINDS, masks=load_mask_templates(masks), seed=0,
                          progress=False)  # resumes: nothing detected again
    assert store.done == len(keys)
    face = detect_faces(read_image(paths[0]), device="cpu")[0]
    o = occlude_photo_realistic(read_image(paths[0]), face.landmarks, "sunglasses", seed=0,
                                masks=load_mask_templates(masks))
    assert np.array_equal(store.hidden_mask("sunglasses", 0), o.hidden_aligned)
    # FAR / TAR of the whole pairs at the file's threshold, by brute force from the cached embeddings
    points = read_operating_points(load_weights(shipped_model("sface-400"))[1])
    assert points is not None
    with np.load(out / "embeddings" / "sface-400-realistic.npz") as z:
        e = z["whole"]
    index = {k: i for i, k in enumerate(keys)}
    pf = read_pairs(pairs)
    t = points.at(1e-3, "holistic")
    imp = [float(e[index[p.a]] @ e[index[p.b]]) >= t for p in pf.pairs if not p.same]
    gen = [float(e[index[p.a]] @ e[index[p.b]]) >= t for p in pf.pairs if p.same]
    row = next(r for r in res["rows"] if r["kind"] == "whole")
    assert row["single"]["far"] == pytest.approx(np.mean(imp)) and row["single"]["tar"] == pytest.approx(np.mean(gen))
    # every pair of different photos: identities from the folder names, each unordered pair once
    ids = [k.split("/")[0] for k in keys]
    every = [(float(e[i] @ e[j]) >= t, ids[i] == ids[j]) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    want_imp = [hit for hit, same in every if not same]
    got = row["all_pairs"]
    assert got["impostors"] == len(want_imp) and got["genuine"] == len(every) - len(want_imp)
    assert got["single"]["accepted"] == sum(want_imp)
    assert "Every pair of images" in (out / "realistic.md").read_text()
    # every kind pooled: the kinds' pairs added up (sface-400 carries auto's levels)
    pooled = res["every_kind"][0]
    assert pooled["model"] == "sface-400" and pooled["kinds"] == ["whole", *REALISTIC_KINDS]
    assert pooled["impostors"] == sum(r["all_pairs"]["impostors"] for r in res["rows"])
    assert pooled["auto"]["accepted"] == sum(r["all_pairs"]["auto"]["accepted"] for r in res["rows"])
    assert len(row["fold_accuracies"]) == 2 and np.mean(row["fold_accuracies"]) == pytest.approx(row["accuracy"])


@pytest.mark.lfw
def test_another_detector_sees_the_same_occluded_photos(lfw_root: Path, tmp_path: Path) -> None:
    """--detector mtcnn+yunet: the occluders are placed exactly as for MTCNN (the same hidden masks), every face
    MTCNN finds is found too (YuNet only adds faces), and the two stages are cached apart."""
    from partialface.evaluation.realistic import prepare_faces

    masks = SHARED / "data" / "occluders" / "masktheface"
    if not (masks / "masks" / "masks.cfg").is_file():
        pytest.skip(f"MaskTheFace's templates not found at {masks}")
    templates = load_mask_templates(masks)
    paths = sorted((lfw_root / "lfw-deepfunneled").glob("A*/*.jpg"))[:4]
    a = prepare_faces(paths, tmp_path / "faces", kinds=REALISTIC_KINDS, masks=templates, seed=0, progress=False)
    b = prepare_faces(paths, tmp_path / "faces-y", kinds=REALISTIC_KINDS, masks=templates, seed=0, progress=False,
                      detector="mtcnn+yunet")
    assert np.array_equal(a.hidden, b.hidden) and np.array_equal(a.what, b.what)
    assert (b.found >= a.found).all() and b.found[0].all()
    meta = str(np.load(tmp_path / "faces-y" / "faces.npz")["meta"])
    assert '"detector": "mtcnn+yunet"' in meta
    assert "detector" not in str(np.load(tmp_path / "faces" / "faces.npz")["meta"])  # MTCNN's caches stay valid


def test_visibility_auc_by_hand() -> None:
    """Estimates equal to the truth score 1.0, inverted ones 0.0; a region never hidden has no AUC."""
    from partialface.evaluation.realistic import FaceStore, visibility_auc
    from partialface.geometry.regions import REGIONS, region_labels

    rng = np.random.default_rng(0)
    n = 12
    labels = region_labels()
    hidden = np.zeros((2, n, 3200), np.uint8)
    truth = np.ones((2, n, len(REGIONS)))
    for i in range(n):
        mask = labels == (3 if i % 2 else 0)  # the mouth or the left eye, wholly
        hidden[1, i] = np.packbits(mask.ravel())
        truth[1, i, 3 if i % 2 else 0] = 0.0
    store = FaceStore(("whole", "mask"), {}, np.ones((2, n), bool), np.ones((2, n), bool),
                      np.zeros((2, n, 5, 2)), np.zeros((2, n)), hidden, np.full((2, n), ""), n)
    noisy = np.clip(truth + rng.uniform(-0.3, 0.3, truth.shape), 0, 1)
    good = visibility_auc(store, noisy)
    assert good["mask"]["mouth"] == 1.0 and good["mask"]["left_eye"] == 1.0 and good["mask"]["nose"] is None
    assert good["all"]["hidden_share"]["mouth"] == pytest.approx(0.5)
    bad = visibility_auc(store, 1 - noisy)
    assert bad["mask"]["mouth"] == 0.0
    # a bystander found instead of the subject has no truth: its (inverted) estimates are left out
    subject = np.ones((2, n), bool)
    subject[1, :4] = False
    store.subject = subject
    mixed = noisy.copy()
    mixed[1, :4] = 1 - noisy[1, :4]
    left_out = visibility_auc(store, mixed)
    assert left_out["mask"]["mouth"] == 1.0 and left_out["all"]["hidden_share"]["mouth"] == pytest.approx(0.5)


def test_wilson_interval_by_hand() -> None:
    """The Wilson 95 % interval of 5 in 100 is 2.15 %-11.18 % (the textbook example); none in 1,000 starts at 0."""
    lo, hi = wilson_interval(5, 100)
    assert lo == pytest.approx(0.0215, abs=5e-5) and hi == pytest.approx(0.1118, abs=5e-5)
    lo, hi = wilson_interval(0, 1000)
    assert lo == 0.0 and hi == pytest.approx(0.00383, abs=5e-5)


def _pair_sides(seed: int = 3, n: int = 40) -> tuple[Any, Any, np.ndarray, Any]:
    """Two sides of n random faces of 8 identities (some not found; embeddings near unit length) and operating points
    with auto levels."""
    from partialface.evaluation.calibrate import FARS, OperatingPoints, far_key
    from partialface.evaluation.calibrate_auto import AUTO, DETAIL_BINS, LEVELS, quality_kind
    from partialface.evaluation.realistic import PairSide

    rng = np.random.default_rng(seed)
    ident = rng.integers(0, 8, n)

    def unit(x: np.ndarray) -> np.ndarray:  # rounded to 1/16: every dot product exact in float32, loop and matrix
        return np.round(16 * x / np.linalg.norm(x, axis=1, keepdims=True)) / 16

    centres = unit(rng.normal(size=(8, 16)))
    a, b = (PairSide(unit(centres[ident] + 0.9 * rng.normal(size=(n, 16))).astype(np.float32), rng.random(n) > 0.1,
                     rng.random((n, 5)).astype(np.float32), rng.random(n) * 0.2) for _ in range(2))
    p = OperatingPoints(threshold={"holistic": {far_key(f): 0.3 for f in FARS},
                                   "partial": {far_key(f): 0.2 for f in FARS}},
                        measured_on={AUTO: {"detail_edge": 0.1}})
    for k, base in zip(DETAIL_BINS, (0.35, 0.25), strict=True):
        for i in range(len(LEVELS)):
            p.threshold[quality_kind(k, i)] = {far_key(f): base - 0.05 * i for f in FARS}
    return a, b, ident, p


def _pairs_by_loop(a: Any, b: Any, ident: np.ndarray, p: Any, same_images: bool) -> list[tuple[float, float, bool]]:
    """(score, auto threshold, genuine) of every pair counted (impostors with both faces found; every genuine)."""
    from partialface.evaluation.calibrate_auto import auto_threshold

    out = []
    n = len(ident)
    for i in range(n):
        for j in range(n):
            if i == j or (same_images and j < i):
                continue
            found = a.found[i] and b.found[j]
            s = float(a.emb[i] @ b.emb[j]) if found else -1.0
            share = float(np.minimum(a.vis[i], b.vis[j]).mean())
            same = bool(ident[i] == ident[j])
            if same or found:
                out.append((s, auto_threshold(p, 1e-3, share, min(a.detail[i], b.detail[j]))[0], same))
    return out


@pytest.mark.parametrize("same_images", [True, False])
def test_all_pairs_rates_against_a_loop(same_images: bool) -> None:
    """Every pair counted once (unordered for whole-against-whole, ordered otherwise, never a photo with itself),
    missed faces rejected (genuine) or left out (impostor), and the per-pair auto threshold of the scalar rule."""
    from partialface.evaluation.realistic import all_pairs_rates

    a, b, ident, p = _pair_sides()
    if same_images:
        b = a
    got = all_pairs_rates(a, b, ident, {"single": 0.3}, points=p, same_images=same_images, chunk=7)
    pairs = _pairs_by_loop(a, b, ident, p, same_images)
    imp, gen = sum(not g for *_, g in pairs), sum(g for *_, g in pairs)
    assert (got["impostors"], got["genuine"]) == (imp, gen) and imp > 0 and gen > 0
    for k in ("single", "auto"):
        fa = sum(s >= (0.3 if k == "single" else t) for s, t, g in pairs if not g)
        ta = sum(s >= (0.3 if k == "single" else t) for s, t, g in pairs if g)
        assert got[k]["accepted"] == fa
        assert got[k]["far"] == pytest.approx(fa / imp) and got[k]["tar"] == pytest.approx(ta / gen)
    # the one threshold at auto's FAR: the lowest that accepts no more impostors than auto (scores tie: at most)
    ref, accepted = got["single_same_far"], got["auto"]["accepted"]
    scores = sorted((s for s, _, g in pairs if not g), reverse=True)
    assert sum(s >= ref["threshold"] for s in scores) <= accepted < sum(s >= scores[accepted] for s in scores)
    assert ref["far"] <= got["auto"]["far"]
    assert ref["tar"] == pytest.approx(np.mean([s >= ref["threshold"] for s, _, g in pairs if g]))


def test_every_kind_pooled_against_a_loop() -> None:
    """Two kinds pooled: auto's accepted impostors and TAR are the sums over every pair of both, and the one
    threshold is the lowest that accepts no more impostors than auto does (a lower impostor score would add one)."""
    from partialface.evaluation.realistic import all_pairs_rates, pooled_rates

    a, b, ident, p = _pair_sides(seed=5, n=36)
    parts, pairs = [], []
    for side, same_images in ((a, True), (b, False)):
        kept: dict[str, Any] = {}
        parts.append((all_pairs_rates(side, a, ident, {"single": 0.3}, points=p, same_images=same_images, chunk=5,
                                      scores=kept), kept))
        pairs += _pairs_by_loop(side, a, ident, p, same_images)
    got = pooled_rates(parts)
    assert got is not None
    imp = sorted((s for s, _, g in pairs if not g), reverse=True)
    gen = [s for s, _, g in pairs if g]
    accepted = sum(s >= t for s, t, g in pairs if not g)
    assert (got["impostors"], got["genuine"], got["auto"]["accepted"]) == (len(imp), len(gen), accepted)
    assert got["auto"]["tar"] == pytest.approx(sum(s >= t for s, t, g in pairs if g) / len(gen))
    one = got["single_same_far"]
    assert sum(s >= one["threshold"] for s in imp) <= accepted < sum(s >= imp[accepted] for s in imp)
    assert one["tar"] == pytest.approx(np.mean([s >= one["threshold"] for s in gen]))
    assert pooled_rates([]) is None


def test_margins_as_paired_folds() -> None:
    """The margin table: the later model's per-fold accuracies minus the first's, their mean and population std,
    folds ahead and level, by hand."""
    from partialface.evaluation.realistic import _margins_markdown

    first = [99.0, 98.0, 97.5, 99.5, 98.0, 97.0, 98.5, 99.0, 98.0, 97.5]
    later = [99.5, 98.0, 98.0, 99.0, 98.5, 97.5, 99.0, 99.5, 98.0, 98.5]  # diffs: .5 0 .5 -.5 .5 .5 .5 .5 0 1
    rows = [{"model": "a", "kind": "mask", "fold_accuracies": first},
            {"model": "b", "kind": "mask", "fold_accuracies": later}]
    line = next(x for x in _margins_markdown(rows) if x.startswith("| b | mask"))
    # mean 3.5 / 10 = 0.35; squared deviations sum to 1.525 -> std sqrt(0.1525) = 0.39
    assert line == "| b | mask | +0.35 ± 0.39 | 7 / 10 | 2 |"
    assert _margins_markdown(rows[:1]) == []
