"""The realistic occlusion test (issue #39): ``partialface benchmark-occluded --realistic``.

Every image of a pairs file is a raw photo (LFW layout, ``.jpg``). For each occluder kind of
:mod:`partialface.geometry.realistic` (a real mask image, sunglasses, a hand, a photo crop) each photo gets its own
occluder (seed ``seed * 1000003 + i`` for image i of the sorted image list), laid on the face that MTCNN finds on
the clean photo, *before* detection. Then the whole pipeline runs on the occluded photo as a user's would:
MTCNN (the spec's settings), the best face by the spec's rule (largest, most central), the benchmark's
alignment, the model. The clean photos go through the same pipeline (kind ``whole``).

Pairs and scoring, as #16's suite and PartialLFW's partial-holistic: **occluded-holistic** = one image of a pair
occluded, the other whole, in both orders (each pair scored twice); kind ``whole`` = both whole. A face the
detector does not find cannot be compared: its pairs score -1 (a non-match, as a user's ``verify`` says
"no face found"). 10-fold accuracy, ROC AUC etc. are the benchmark's (:func:`partialface.metrics.score_benchmark`).
At a model's operating points (the threshold for FAR 1e-3 of the kind a user would choose: ``holistic`` for
whole pairs, ``partial`` for occluded ones, and the holistic one for all, the single-threshold default) the
report gives the real FAR (impostor pairs with both faces found, accepted) and the TAR (genuine pairs accepted;
a missed face is a rejection). With a visibility network (:mod:`partialface.models.visibility`) the report adds
kind ``auto`` (:mod:`partialface.evaluation.calibrate_auto`: the threshold of the level of what both faces show,
from their estimates, within the pair's detail bin where the model carries those) and, as a reference, the TAR
of the one threshold that gives the same pairs auto's real FAR.

Every pair of different photos is scored too (the real FAR needs millions of impostor pairs), per kind and with
every kind pooled (auto against one threshold for all of them at the pooled real FAR). With more than one model,
each later model's accuracy margin over the first is given per kind as paired folds (the same pairs, the same
faces: the per-fold differences' mean and spread, the noise of the comparison itself).

Detection (model-independent) is cached in ``OUT/faces``: the aligned faces of each kind as (N, 160, 160, 3) uint8
``.npy`` files, and ``faces.npz`` (found, landmarks, boxes, whether the face found is the photo's subject, the
landmark shift in eye distances, the ground-truth hidden area in the clean face's aligned frame, bit-packed),
written after every chunk of photos: an interrupted run resumes. Embeddings are cached per model
(``OUT/embeddings/<model>-realistic.npz``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialface.errors import PartialFaceError
from partialface.geometry.realistic import REALISTIC_KINDS, MaskTemplate

#: part of every cache's identity: changes whenever the occluders, the seeding or the face selection change
REALISTIC_VERSION = "realistic-v1"
#: photos per resumable chunk of the detection stage
CHUNK = 128
NOMINAL_FAR = 1e-3


@dataclass
class FaceStore:
    """The detection stage's output for kinds ``kinds`` (``whole`` first) over ``n`` photos: ``faces[kind]`` (N, 160,
    160, 3) uint8 (zeros where no face was found), ``found`` / ``subject`` (K, N) bool, ``landmarks`` (K, N, 5, 2),
    ``shift`` (K, N) landmark shift in eye distances (nan where not found), ``hidden`` (K, N, 3200) uint8 packed
    (160, 160) bool ground truth, ``what`` (K, N) the occluder drawn."""

    kinds: tuple[str, ...]
    faces: dict[str, np.ndarray]
    found: np.ndarray
    subject: np.ndarray
    landmarks: np.ndarray
    shift: np.ndarray
    hidden: np.ndarray
    what: np.ndarray
    done: int

    def hidden_mask(self, kind: str, i: int) -> np.ndarray:
        """(160, 160) bool: what the occluder of photo i hides, in its clean face's aligned frame."""
        k = self.kinds.index(kind)
        return np.unpackbits(self.hidden[k, i])[: 160 * 160].reshape(160, 160).astype(bool)


def _subject_hit(box: Sequence[float], clean_box: Sequence[float], offset: tuple[int, int]) -> bool:
    """Whether a detected box (output photo pixels) is the subject: its centre inside the clean face's box."""
    cx = (box[0] + box[2]) / 2 + offset[0]
    cy = (box[1] + box[3]) / 2 + offset[1]
    return bool(clean_box[0] <= cx <= clean_box[2] and clean_box[1] <= cy <= clean_box[3])


def prepare_faces(
    paths: Sequence[Path], out: Path, *, kinds: Sequence[str], masks: dict[str, MaskTemplate] | None, seed: int,
    progress: bool = True, detector: str = "mtcnn",
) -> FaceStore:
    """Run the detection stage (module docstring) over ``paths`` (raw photos, the pairs' sorted images) into
    ``out`` (resumes where a previous call stopped); returns the store. ``detector``
    (:data:`partialface.detect.policy.DETECTORS`) finds the faces of the photos compared, whole and occluded; the
    occluders are placed by MTCNN's landmarks of the clean photo whatever it is, so every detector sees the same
    occluded photos."""
    from tqdm import tqdm

    from partialface.data.images import atomic_write_bytes, read_image
    from partialface.detect import detect_faces_batch, selection_scores
    from partialface.evaluation.embed import save_npz
    from partialface.geometry.align import align_face
    from partialface.geometry.realistic import occlude_photo_realistic

    all_kinds = ("whole", *kinds)
    n, k = len(paths), len(all_kinds)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"version": REALISTIC_VERSION, "seed": seed, "kinds": all_kinds, "n": n,
                "first": str(paths[0].name) if n else "", "last": str(paths[-1].name) if n else ""}
    meta = json.dumps(settings if detector == "mtcnn" else {**settings, "detector": detector})
    info_file = out / "faces.npz"
    state: dict[str, np.ndarray] = {}
    if info_file.is_file():
        with np.load(info_file, allow_pickle=False) as z:
            if str(z["meta"]) == meta:
                state = {name: z[name] for name in z.files}
            else:
                print(f"note: {out} holds faces of other photos or settings; detecting again", file=sys.stderr)
    done = int(state["done"]) if state else 0
    if not state:
        state = {"found": np.zeros((k, n), bool), "subject": np.zeros((k, n), bool),
                 "landmarks": np.full((k, n, 5, 2), np.nan, np.float32), "shift": np.full((k, n), np.nan, np.float32),
                 "hidden": np.zeros((k, n, 3200), np.uint8), "what": np.full((k, n), "", dtype="<U40")}
    mode = "r+" if done else "w+"
    faces = {kind: np.lib.format.open_memmap(out / f"{kind}.npy", mode=mode, dtype=np.uint8, shape=(n, 160, 160, 3))
             for kind in all_kinds}
    bar = tqdm(total=n, initial=done, desc="realistic: occlude, detect, align", unit="photo", disable=not progress)
    for start in range(done, n, CHUNK):
        for i in range(start, min(n, start + CHUNK)):
            photo = read_image(paths[i])
            clean = detect_faces_batch([photo], device="cpu")[0]
            if clean:
                best = clean[int(np.argmax(selection_scores(np.array([f.box for f in clean]), photo.shape)))]
                ref = np.asarray(best.landmarks, np.float64).reshape(5, 2)
                occ = [occlude_photo_realistic(photo, ref, kind, seed=seed * 1000003 + i, masks=masks)
                       for kind in kinds]
                images = [o.photo for o in occ]
                shown = images if detector == "mtcnn" else [photo, *images]
                found = detect_faces_batch(shown, device="cpu", detector=detector)
                found = [clean, *found] if detector == "mtcnn" else found
                offsets = [(0, 0)] + [o.offset for o in occ]
                eye = float(np.linalg.norm(ref[1] - ref[0]))
                for j, o in enumerate(occ, start=1):
                    state["hidden"][j, i] = np.packbits(o.hidden_aligned.ravel())
                    state["what"][j, i] = o.what
                shots = [photo, *images]
                for j, fs in enumerate(found):
                    if not fs:
                        continue
                    pick = fs[int(np.argmax(selection_scores(np.array([f.box for f in fs]), shots[j].shape)))]
                    pts = np.asarray(pick.landmarks, np.float64).reshape(5, 2)
                    faces[all_kinds[j]][i] = align_face(shots[j], pts)
                    state["found"][j, i] = True
                    state["subject"][j, i] = _subject_hit(pick.box, best.box, offsets[j])
                    state["landmarks"][j, i] = pts
                    state["shift"][j, i] = np.linalg.norm(pts + np.array(offsets[j]) - ref, axis=1).mean() / eye
            bar.update(1)
        for arr in faces.values():
            arr.flush()
        state["done"] = np.array(min(n, start + CHUNK))
        save_npz(info_file, {"meta": np.array(meta), **state})
    bar.close()
    atomic_write_bytes(out / "README.txt", (__doc__ or "").encode("utf-8"))
    return FaceStore(all_kinds, {kk: np.load(out / f"{kk}.npy", mmap_mode="r") for kk in all_kinds},
                     state["found"], state["subject"], state["landmarks"], state["shift"], state["hidden"],
                     state["what"], int(state.get("done", n)))


def _embed_store(emb: Any, store: FaceStore, cache_file: Path, batch_size: int, progress: bool
                 ) -> dict[str, np.ndarray]:
    """{kind: (N, D) float32 L2-normalised embeddings} of the store's faces (rows not found: zeros), cached."""
    import torch
    from tqdm import tqdm

    from partialface.evaluation.embed import save_npz
    from partialface.evaluation.occluded import _cache

    meta = json.dumps({"fingerprint": emb.fingerprint, "version": REALISTIC_VERSION, "n": int(store.found.shape[1]),
                       "kinds": store.kinds})
    have = _cache(cache_file, meta)
    for k, kind in enumerate(store.kinds):
        if kind in have:
            continue
        rows = np.flatnonzero(store.found[k])
        out = np.zeros((store.found.shape[1], emb.embedding_dim), np.float32)
        for s in tqdm(range(0, len(rows), batch_size), desc=f"{emb.name} {kind}", disable=not progress):
            idx = rows[s : s + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(store.faces[kind][idx])).to(emb.device).permute(0, 3, 1, 2)
            with torch.inference_mode():
                out[idx] = torch.nn.functional.normalize(emb(x).float(), dim=1).cpu().numpy()
        have[kind] = out
        save_npz(cache_file, {"meta": np.array(meta), **have})
    return have


def _rates(s: np.ndarray, y: np.ndarray, valid: np.ndarray, t: float | np.ndarray) -> dict[str, float]:
    """Real FAR (impostor pairs with both faces found, accepted at t: one threshold or one per pair) and TAR
    (genuine pairs accepted; a missed face is a rejection)."""
    imp = ~y & valid
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), s.shape)
    out = {"far": float((s[imp] >= t[imp]).mean()) if imp.any() else float("nan"), "impostors": int(imp.sum()),
           "tar": float((s[y] >= t[y]).mean()) if y.any() else float("nan")}
    if np.all(t == t.flat[0]):
        out["threshold"] = float(t.flat[0])
    return out


def _single_at_same_far(s: np.ndarray, y: np.ndarray, valid: np.ndarray, far: float) -> dict[str, float]:
    """The single threshold that gives these pairs the real FAR ``far`` (chosen on them: a reference, not an
    operating point) and its TAR."""
    from partialface.evaluation.calibrate import threshold_at_far

    imp = s[~y & valid]
    if len(imp) == 0 or not np.isfinite(far):
        return {"far": float("nan"), "tar": float("nan")}
    return _rates(s, y, valid, threshold_at_far(imp, far))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % at z = 1.96) of a rate of k in n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def far_multiple(rate: dict[str, Any]) -> str:
    """A rate of :func:`all_pairs_rates` as a multiple of the nominal FAR, with its interval: ``0.84x (0.83–0.85)``."""
    lo, hi = rate["far_ci"]
    return f"{rate['far'] / NOMINAL_FAR:.2f}x ({lo / NOMINAL_FAR:.2f}–{hi / NOMINAL_FAR:.2f})"


@dataclass
class PairSide:
    """One side of the pairs of :func:`all_pairs_rates`: L2-normalised embeddings (N, D), found (N,), and for
    kind ``auto`` visibility estimates (N, R) (None: no auto) and details (N,) (None: unknown, the pooled levels)."""

    emb: np.ndarray
    found: np.ndarray
    vis: np.ndarray | None = None
    detail: np.ndarray | None = None


def all_pairs_rates(a: PairSide, b: PairSide, ident: np.ndarray, thresholds: dict[str, float], *,
                    points: Any = None, same_images: bool, chunk: int = 256,
                    scores: dict[str, Any] | None = None) -> dict[str, Any]:
    """Real FAR and TAR over **every** pair of images: face i of side ``a`` against face j of side ``b`` for all
    i != j (i < j when ``same_images``: both sides are the same faces, kind ``whole``); genuine when ``ident[i] ==
    ident[j]``. Impostor pairs count where both faces were found; genuine pairs always (a missed face is a
    rejection). ``thresholds``: name -> one threshold; with ``points`` (OperatingPoints with auto levels) and both
    sides' vis / detail, also ``auto`` (:func:`partialface.evaluation.calibrate_auto.auto_thresholds` per pair)
    and ``single_same_far`` (the one threshold that gives these pairs auto's FAR, chosen on them: a reference).
    ``scores``: a dict that, with auto, receives the scores :func:`pooled_rates` needs: "impostor_top" (the
    impostor scores >= "floor", highest first) and "genuine" (every genuine pair's score).
    -> {"impostors", "genuine", name: {"far", "far_ci" (Wilson 95 %), "accepted", "tar"}}."""
    from partialface.evaluation.calibrate_auto import auto_thresholds, shared_visibility

    n = len(a.emb)
    use_auto = points is not None and a.vis is not None and b.vis is not None
    names = [*thresholds, *(["auto"] if use_auto else [])]
    acc = {k: [0, 0] for k in names}  # [impostors accepted, genuine accepted]
    n_imp = n_gen = 0
    floor = min([*thresholds.values(), 1.0]) - 0.25  # impostor scores kept for the reference threshold
    kept: list[np.ndarray] = []
    gen_scores: list[np.ndarray] = []
    cols = np.arange(n)
    for s0 in range(0, n, chunk):
        rows = np.arange(s0, min(n, s0 + chunk))
        s = a.emb[rows] @ b.emb.T  # (C, N)
        pair = (cols[None, :] > rows[:, None]) if same_images else (cols[None, :] != rows[:, None])
        found = a.found[rows][:, None] & b.found[None, :]
        same = (ident[rows][:, None] == ident[None, :]) & pair
        imp = ~same & pair & found
        s = np.where(found, s, -1.0)
        n_imp += int(imp.sum())
        n_gen += int(same.sum())
        for k, t in thresholds.items():
            hit = s >= t
            acc[k][0] += int((hit & imp).sum())
            acc[k][1] += int((hit & same).sum())
        if use_auto:
            assert a.vis is not None and b.vis is not None
            share = shared_visibility(a.vis[rows][:, None, :], b.vis[None, :, :])
            detail = None if a.detail is None or b.detail is None else \
                np.minimum(a.detail[rows][:, None], b.detail[None, :]).ravel()
            t_auto = auto_thresholds(points, NOMINAL_FAR, share.ravel(), detail).reshape(s.shape)
            hit = s >= t_auto
            acc["auto"][0] += int((hit & imp).sum())
            acc["auto"][1] += int((hit & same).sum())
            kept.append(s[imp & (s >= floor)])
            gen_scores.append(s[same])
    out: dict[str, Any] = {"impostors": n_imp, "genuine": n_gen}
    for k, (fa, ta) in acc.items():
        out[k] = {"far": fa / max(n_imp, 1), "far_ci": wilson_interval(fa, n_imp), "accepted": fa,
                  "tar": ta / max(n_gen, 1)}
    if use_auto and n_imp and n_gen:
        top = np.sort(np.concatenate(kept))[::-1]
        gen = np.concatenate(gen_scores)
        same_far = _single_at_count(top, gen, n_imp, out["auto"]["accepted"], floor)
        if same_far is not None:
            out["single_same_far"] = same_far
        if scores is not None:
            scores.update(impostor_top=top, genuine=gen, floor=floor)
    return out


def _single_at_count(top: np.ndarray, gen: np.ndarray, n_imp: int, accepted: int, floor: float
                     ) -> dict[str, float] | None:
    """The one threshold that accepts at most ``accepted`` of ``n_imp`` impostor pairs (calibrate.threshold_at_far's
    rule) from ``top``, their scores >= ``floor`` highest first, and its rates; None when it would fall below the
    floor (the scores kept could not tell)."""
    if accepted >= len(top):
        return None
    t = float(np.nextafter(top[accepted], np.inf))
    if t < floor:
        return None
    return {"threshold": t, "far": float((top >= t).sum() / n_imp), "tar": float((gen >= t).mean())}


def pooled_rates(parts: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any] | None:
    """Every kind's pairs together: ``parts`` = (:func:`all_pairs_rates`'s result, its ``scores``) per kind, with
    auto. -> {"impostors", "genuine", "auto": {"far", "far_ci", "accepted", "tar"}, "single_same_far": the one
    threshold for every kind that gives the pooled pairs auto's pooled real FAR (chosen on them: a reference) and
    its rates}; None without parts."""
    parts = [(r, s) for r, s in parts if "auto" in r and s]
    if not parts:
        return None
    n_imp = sum(r["impostors"] for r, _ in parts)
    n_gen = sum(r["genuine"] for r, _ in parts)
    accepted = sum(r["auto"]["accepted"] for r, _ in parts)
    out: dict[str, Any] = {"impostors": n_imp, "genuine": n_gen, "auto": {
        "far": accepted / max(n_imp, 1), "far_ci": wilson_interval(accepted, n_imp), "accepted": accepted,
        "tar": sum(r["auto"]["tar"] * r["genuine"] for r, _ in parts) / max(n_gen, 1)}}
    top = np.sort(np.concatenate([s["impostor_top"] for _, s in parts]))[::-1]
    gen = np.concatenate([s["genuine"] for _, s in parts])
    same_far = _single_at_count(top, gen, n_imp, accepted, max(s["floor"] for _, s in parts))
    if same_far is not None:
        out["single_same_far"] = same_far
    return out


def store_visibility(store: FaceStore, out: Path, weights: Path) -> np.ndarray:
    """(K, N, R) visibility estimates of the store's faces by the network in ``weights`` (cached in ``out``, keyed
    by the file's digest); rows not found are 1."""
    from partialface.evaluation.embedders import file_digest
    from partialface.models.visibility import load_visibility, predict_visibility

    digest = file_digest(weights)
    cache = out / "visibility.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["digest"]) == digest and z["v"].shape[:2] == store.found.shape:
                return z["v"]
    net = load_visibility(weights)
    v = np.ones((*store.found.shape, 5), np.float32)
    for k, kind in enumerate(store.kinds):
        rows = np.flatnonzero(store.found[k])
        for s in range(0, len(rows), 512):
            v[k, rows[s : s + 512]] = predict_visibility(net, np.asarray(store.faces[kind][rows[s : s + 512]]))
    from partialface.evaluation.embed import save_npz

    save_npz(cache, {"digest": np.array(digest), "v": v})
    return v


def store_detail(store: FaceStore) -> np.ndarray:
    """(K, N) the detail (:func:`partialface.evaluation.calibrate_auto.face_detail`) of the store's faces; NaN for
    rows not found."""
    from partialface.evaluation.calibrate_auto import face_detail

    detail = np.full(store.found.shape, np.nan)
    for k, kind in enumerate(store.kinds):
        rows = np.flatnonzero(store.found[k])
        for s in range(0, len(rows), CHUNK):
            detail[k, rows[s : s + CHUNK]] = face_detail(np.asarray(store.faces[kind][rows[s : s + CHUNK]]))
    return detail


def visibility_auc(store: FaceStore, vis: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per-region ROC AUC of the visibility estimates ``vis`` (K, N, R) on the occluded faces found that are the
    photo's subject (the occluder's mask is the truth of the subject's face only; a bystander found instead has
    none): a region is hidden when the occluder's mask (ground truth, the clean face's aligned frame) hides at least
    half of it (:func:`partialface.geometry.regions.region_visibility` < 0.5), scored by 1 - its estimate; per kind
    and over all occluded kinds (None where a region is never or always hidden)."""
    from partialface.geometry.regions import REGIONS, region_visibility
    from partialface.metrics import roc_auc

    truth, guess, kinds = [], [], []
    for k, kind in enumerate(store.kinds):
        if kind == "whole":
            continue
        rows = np.flatnonzero(store.found[k] & store.subject[k])
        hidden = np.stack([store.hidden_mask(kind, int(i)) for i in rows]) if len(rows) else np.zeros((0, 160, 160))
        truth.append(region_visibility(hidden) < 0.5)
        guess.append(1.0 - vis[k, rows])
        kinds += [kind] * len(rows)
    t, g, names = np.concatenate(truth), np.concatenate(guess), np.array(kinds)
    out: dict[str, dict[str, Any]] = {}
    for kind in [*dict.fromkeys(kinds), "all"]:
        sel = np.ones(len(names), bool) if kind == "all" else names == kind
        out[kind] = {r: (roc_auc(g[sel, j], t[sel, j]) if 0 < t[sel, j].sum() < sel.sum() else None)
                     for j, r in enumerate(REGIONS)}
        out[kind]["hidden_share"] = {r: float(t[sel, j].mean()) if sel.any() else None for j, r in enumerate(REGIONS)}
    return out


def _at_operating_points(s: np.ndarray, y: np.ndarray, valid: np.ndarray, points: Any, kind: str,
                         share: np.ndarray | None, pair_detail: np.ndarray) -> dict[str, Any]:
    """The rates of LFW's pairs (scores ``s``, genuine ``y``, both faces found ``valid``) at a model's operating
    points: ``single`` (holistic), ``by_kind`` (partial for occluded pairs) and, with the pairs' shared visibility,
    ``auto`` and the one threshold at auto's real FAR (``single_same_far``)."""
    from partialface.evaluation.calibrate_auto import auto_thresholds, detail_edge, has_auto

    out: dict[str, Any] = {
        "single": _rates(s, y, valid, points.at(NOMINAL_FAR, "holistic")),
        "by_kind": _rates(s, y, valid, points.at(NOMINAL_FAR, "holistic" if kind == "whole" else "partial"))}
    if share is not None:
        out["auto"] = _rates(s, y, valid, auto_thresholds(points, NOMINAL_FAR, share, pair_detail))
        out["auto"]["auto_levels"] = has_auto(points)
        out["auto"]["detail_levels"] = detail_edge(points) is not None
        out["single_same_far"] = _single_at_same_far(s, y, valid, out["auto"]["far"])
    return out


def _kind_pairs(j: int, occluded: tuple[np.ndarray, np.ndarray], whole: tuple[np.ndarray, np.ndarray],
                pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], vis: np.ndarray | None,
                detail: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                             np.ndarray | None]:
    """The scored pairs of kind j (0: whole, both faces whole; else occluded-holistic in both orders).
    ``occluded`` / ``whole``: that kind's and the whole faces' (embeddings (N, D), found (N,)); ``pairs``: image
    indices a, b, genuine, fold (P,); ``vis``: (K, N, R) or None; ``detail``: (K, N).
    -> scores, genuine, folds, both found, the pair's detail, its shared visibility (None without vis)."""
    from partialface.evaluation.calibrate_auto import shared_visibility
    from partialface.metrics import cosine_scores

    (occ, ok), (hol, hol_ok), (a, b, same, fold) = occluded, whole, pairs
    if j == 0:
        return (np.where(hol_ok[a] & hol_ok[b], cosine_scores(hol[a], hol[b]), -1.0), same, fold,
                hol_ok[a] & hol_ok[b], np.minimum(detail[0][a], detail[0][b]),
                None if vis is None else shared_visibility(vis[0][a], vis[0][b]))
    s = np.concatenate([np.where(ok[a] & hol_ok[b], cosine_scores(occ[a], hol[b]), -1.0),
                        np.where(hol_ok[a] & ok[b], cosine_scores(hol[a], occ[b]), -1.0)])
    share = None if vis is None else np.concatenate([shared_visibility(vis[j][a], vis[0][b]),
                                                     shared_visibility(vis[0][a], vis[j][b])])
    return (s, np.concatenate([same, same]), np.concatenate([fold, fold]),
            np.concatenate([ok[a] & hol_ok[b], hol_ok[a] & ok[b]]),
            np.concatenate([np.minimum(detail[j][a], detail[0][b]), np.minimum(detail[0][a], detail[j][b])]), share)


def run_realistic_benchmark(
    models: Sequence[str], data: str | os.PathLike[str], pairs_file: str | os.PathLike[str],
    out: str | os.PathLike[str], *, masks: str | os.PathLike[str], kinds: Sequence[str] = REALISTIC_KINDS,
    seed: int = 0, device: str = "auto", infer: str | None = None, batch_size: int = 128, progress: bool = True,
    visibility: str | os.PathLike[str] | None = None, detector: str = "mtcnn",
) -> dict[str, Any]:
    """Score ``models`` on the realistic test (module docstring) over the raw LFW-layout folder ``data``; writes
    ``out``/realistic.json and realistic.md; returns the json's content. ``visibility``: the visibility network
    for kind "auto" (default: the shipped one; none: no auto columns). ``detector``: the face detector of the
    photos compared (:func:`prepare_faces`; default MTCNN, the spec's); another one's faces, embeddings and results
    go beside MTCNN's, named after it (``faces-mtcnn+yunet/``, ``realistic-mtcnn+yunet.json``, ...)."""
    from partialface.data.images import atomic_write_bytes
    from partialface.data.lfw import read_pairs, resolve_images
    from partialface.detect.policy import check_detector
    from partialface.devices import resolve_device
    from partialface.evaluation.calibrate import read_operating_points
    from partialface.evaluation.embed import cache_name, load_embedder
    from partialface.geometry.realistic import load_mask_templates
    from partialface.metrics import score_benchmark, tenfold_details
    from partialface.training.checkpoint import load_weights

    check_detector(detector)
    tag = "" if detector == "mtcnn" else f"-{detector}"
    bad = [k for k in kinds if k not in REALISTIC_KINDS]
    if bad or not kinds:
        raise PartialFaceError(f"--kinds {bad[0] if bad else ''}: choose from {', '.join(REALISTIC_KINDS)}")
    templates = load_mask_templates(masks) if "mask" in kinds else None
    pairs = read_pairs(pairs_file)
    found = resolve_images(pairs, Path(data), suffixes=(".jpg", ".jpeg", ".png"))
    dev = resolve_device(device)
    embedders = [load_embedder(m, dev, infer=infer) for m in models]  # every model checked before the long work
    keys = pairs.images()
    out_p = Path(out)
    store = prepare_faces([found[k] for k in keys], out_p / f"faces{tag}", kinds=kinds, masks=templates, seed=seed,
                          progress=progress, detector=detector)
    from partialface.models.catalogue import visibility_file

    vis_file = Path(visibility) if visibility is not None else visibility_file()
    vis = store_visibility(store, out_p / f"faces{tag}", vis_file) if vis_file is not None else None
    seen = visibility_auc(store, vis) if vis is not None else None
    detail = store_detail(store)
    index = pairs.image_index()
    a = np.array([index[p.a] for p in pairs.pairs])
    b = np.array([index[p.b] for p in pairs.pairs])
    same = np.array([p.same for p in pairs.pairs])
    fold = np.array([p.fold for p in pairs.pairs])
    ident = np.array([k.split("/")[0] for k in keys])  # LFW layout: identity/image
    detection = {kind: {"found": float(store.found[j].mean()), "subject": float(store.subject[j].mean()),
                        "shift_median": float(np.nanmedian(store.shift[j])) if store.found[j].any() else None,
                        "shift_p90": float(np.nanpercentile(store.shift[j], 90)) if store.found[j].any() else None}
                 for j, kind in enumerate(store.kinds)}
    rows: list[dict[str, Any]] = []
    pooled: list[dict[str, Any]] = []
    for emb in embedders:
        source = Path(getattr(emb, "source", "") or "")
        points = read_operating_points(load_weights(source)[1]) if source.suffix == ".safetensors" else None
        base = out_p / "embeddings" / cache_name(emb.name)
        e = _embed_store(emb, store, base.with_name(f"{base.name}-realistic{tag}.npz"), batch_size, progress)
        hol, hol_ok = e["whole"], store.found[0]
        whole_side = PairSide(hol, hol_ok, None if vis is None else vis[0], detail[0])
        parts: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for j, kind in enumerate(store.kinds):
            occ, ok = e[kind], store.found[j]
            s, y, f, valid, pair_detail, share = _kind_pairs(j, (occ, ok), (hol, hol_ok), (a, b, same, fold),
                                                             vis, detail)
            m = score_benchmark(s, y, f).as_dict()
            row: dict[str, Any] = {"model": emb.name, "kind": kind, "pairs": len(s), "compared": float(valid.mean()),
                                   **{k: m[k] for k in ("accuracy", "accuracy_std", "auc", "eer", "tar_far_1e3")},
                                   "fold_accuracies": [100 * float(v) for v in tenfold_details(s, y, f).accuracies]}
            if points is not None:
                row.update(_at_operating_points(s, y, valid, points, kind, share, pair_detail))
                side = whole_side if kind == "whole" else PairSide(occ, ok, None if vis is None else vis[j], detail[j])
                kept: dict[str, Any] = {}
                row["all_pairs"] = all_pairs_rates(
                    side, whole_side, ident, {k: row[k]["threshold"] for k in ("single", "by_kind")},
                    points=points if share is not None else None, same_images=kind == "whole", scores=kept)
                parts.append((row["all_pairs"], kept))
            rows.append(row)
        every_kind = pooled_rates(parts)
        if every_kind is not None:
            pooled.append({"model": emb.name, "kinds": list(store.kinds), **every_kind})
    result = {"convention": (__doc__ or "").strip(), "version": REALISTIC_VERSION, "pairs_file": str(pairs_file),
              "data": str(data), "seed": seed, "detector": detector, "detection": detection, "visibility": seen,
              "rows": rows, "every_kind": pooled}
    atomic_write_bytes(out_p / f"realistic{tag}.json", json.dumps(result, indent=1).encode("utf-8"))
    atomic_write_bytes(out_p / f"realistic{tag}.md", realistic_markdown(result).encode("utf-8"))
    return result


def realistic_markdown(result: dict[str, Any]) -> str:
    """Detection per kind; then per model and kind: accuracy, AUC, and FAR / TAR at the operating points."""
    det = result["detection"]
    detector = result.get("detector", "mtcnn")
    which = "MTCNN, the spec's settings" if detector == "mtcnn" else f"detector {detector}"
    lines = [f"**Detection** ({which}; subject: the face used is the photo's own)", "",
             "| kind | face found | the subject | landmark shift median | 90th pct |", "|---|---:|---:|---:|---:|"]
    for kind, d in det.items():
        med = "—" if d["shift_median"] is None else f"{d['shift_median']:.3f}"
        p90 = "—" if d["shift_p90"] is None else f"{d['shift_p90']:.3f}"
        lines.append(f"| {kind} | {100 * d['found']:.1f} % | {100 * d['subject']:.1f} % | {med} | {p90} |")
    if result.get("visibility"):
        from partialface.geometry.regions import REGIONS

        lines += ["", "**Visibility estimate** (per-region ROC AUC on the occluded faces found that are the photo's "
                  "subject; hidden = the occluder's mask hides half the region or more; in brackets the share of "
                  "faces with it hidden)", "",
                  "| kind | " + " | ".join(REGIONS) + " |", "|---|" + "---:|" * len(REGIONS)]
        for kind, d in result["visibility"].items():
            cells = []
            for r in REGIONS:
                auc, share = d[r], d["hidden_share"][r]
                cells.append(("—" if auc is None else f"{auc:.3f}") + ("" if share is None else f" ({share:.0%})"))
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += ["", "**Verification** (occluded-holistic pairs in both orders; whole: both whole; 10-fold accuracy %, "
              f"FAR / TAR at the FAR {NOMINAL_FAR:g} threshold: single = holistic for every pair, by kind = partial "
              "for occluded pairs, auto = the level of what both faces show; the last column: the single threshold "
              "that gives these pairs auto's real FAR, chosen on them, as a reference)", "",
              "| model | kind | accuracy | AUC | TAR@1e-3 | FAR single | TAR single | FAR by kind | TAR by kind | "
              "FAR auto | TAR auto | TAR single at auto's FAR |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        cells = []
        for key in ("single", "by_kind", "auto"):
            x = r.get(key)
            cells += ["—", "—"] if x is None else [f"{x['far']:.4f}", f"{100 * x['tar']:.2f}"]
        ref = r.get("single_same_far")
        cells.append("—" if ref is None else f"{100 * ref['tar']:.2f}")
        lines.append(f"| {r['model']} | {r['kind']} | {r['accuracy']:.2f} ± {r['accuracy_std']:.2f} | {r['auc']:.4f} | "
                     f"{100 * r['tar_far_1e3']:.2f} | " + " | ".join(cells) + " |")
    every = [r for r in result["rows"] if r.get("all_pairs")]
    if every:
        lines += ["", f"**Every pair of images** (all pairs of different photos, occluded against whole, identities "
                  f"from the folders; real FAR as a multiple of the nominal {NOMINAL_FAR:g}, in brackets its 95 % "
                  "interval; TAR % over every genuine pair)", "",
                  "| model | kind | impostor pairs | genuine pairs | FAR single | FAR by kind | FAR auto | "
                  "TAR single | TAR auto | TAR single at auto's FAR |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in every:
            a = r["all_pairs"]
            cells = []
            for key in ("single", "by_kind", "auto"):
                x = a.get(key)
                cells.append("—" if x is None else far_multiple(x))
            for key in ("single", "auto", "single_same_far"):
                x = a.get(key)
                cells.append("—" if x is None else f"{100 * x['tar']:.2f}")
            lines.append(f"| {r['model']} | {r['kind']} | {a['impostors']:,} | {a['genuine']:,} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines + _every_kind_markdown(result.get("every_kind") or [])
                     + _margins_markdown(result["rows"])) + "\n"


def _every_kind_markdown(pooled: Sequence[dict[str, Any]]) -> list[str]:
    """The table of :func:`pooled_rates` per model (none: no lines)."""
    if not pooled:
        return []
    lines = ["", "**Every kind together** (the pairs of the table above pooled over the kinds: auto against one "
             "threshold for every pair that gives the pooled pairs auto's real FAR, chosen on them as a reference)", "",
             "| model | impostor pairs | genuine pairs | FAR auto | TAR auto | one threshold | its FAR | its TAR |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in pooled:
        ref = p.get("single_same_far")
        tail = "— | — | —" if ref is None else \
            f"{ref['threshold']:.4f} | {ref['far'] / NOMINAL_FAR:.2f}x | {100 * ref['tar']:.2f}"
        lines.append(f"| {p['model']} | {p['impostors']:,} | {p['genuine']:,} | {far_multiple(p['auto'])} | "
                     f"{100 * p['auto']['tar']:.2f} | {tail} |")
    return lines


def _margins_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each later model's accuracy margin over the first, per kind, as paired folds: the mean of the per-fold
    differences, their standard deviation (population, as the accuracies'), and the folds it is ahead on."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    if len(models) < 2 or not all(r.get("fold_accuracies") for r in rows):
        return []
    ref = {r["kind"]: np.asarray(r["fold_accuracies"]) for r in rows if r["model"] == models[0]}
    lines = ["", f"**Margins against {models[0]}** (accuracy per fold, the same pairs and the same faces: mean of the "
             "per-fold differences ± their standard deviation; folds ahead / level)", "",
             "| model | kind | margin | folds ahead | level |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if r["model"] == models[0] or r["kind"] not in ref:
            continue
        d = np.asarray(r["fold_accuracies"]) - ref[r["kind"]]
        lines.append(f"| {r['model']} | {r['kind']} | {d.mean():+.2f} ± {d.std():.2f} | "
                     f"{int((d > 1e-9).sum())} / {len(d)} | {int((np.abs(d) <= 1e-9).sum())} |")
    return lines
