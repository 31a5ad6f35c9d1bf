"""Operating points that follow visibility (issue #39): ``kind="auto"``.

A pair's **shared visibility** is what both faces show: the mean over the regions of the per-region account
(:data:`partialface.geometry.regions.REGIONS`) of ``min(v_a, v_b)``, with ``v`` each face's visibility estimate
(:mod:`partialface.models.visibility`). The pairs are binned into :data:`LEVELS` by it, and each level has its
own threshold at each FAR, measured like the other operating points (:mod:`partialface.evaluation.calibrate`:
all pairs, the threshold just above the (floor(f n) + 1)-th highest impostor score) on held-out identities:

- every aligned face of the held-out folders in six states: whole, the four realistic occluders of
  :func:`partialface.geometry.realistic.occlude_aligned_realistic` (a real mask, sunglasses, a hand, a crop; seed
  = the face's index) and one non-centred PartialLFW part at factor 0.3 (part = index mod 4);
- at each image quality of :data:`QUALITIES` (``as-is``; ``low``: downscaled to 48 px, JPEG quality 60, scaled
  back: a small, soft photo);
- pairs: each state of face i against the whole face j (i != j; whole against whole once per pair), as a user's
  pair with one face occluded; the visibility of both from the estimate (never the ground truth).

The operating points **follow image quality** too: each face's **detail** (:func:`face_detail`: how much of its
contrast lies in detail finer than a 48-px face) is measured, a pair's is the smaller of its two faces', and the
pairs are split at ``detail_edge`` (the geometric mean of the median detail of the whole faces at the two qualities)
into ``soft`` and ``sharp`` pairs, each with its own levels (kinds ``auto/sharp/visible>=0.90`` etc.): small,
soft faces give impostors higher scores than sharp ones, so one threshold pooled over both is too strict for
sharp photos and too loose for soft ones. The split is by the measured detail, never by the quality a face was made
at, so a user's photo is binned exactly as the calibration's faces were. The pooled levels stay (kinds
``auto/visible>=0.90`` etc.: a pair whose detail is unknown); ``measured_on["auto"]`` keeps each quality's own
thresholds, so the report says how far the operating points move between them. A level with fewer than ten
expected false accepts at a FAR is listed in ``under_measured``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from partialface.errors import PartialFaceError
from partialface.evaluation.calibrate import FARS, OperatingPoints, far_key, threshold_at_far

#: lower edges of the shared-visibility levels, highest first (the last is 0: every pair has a level)
LEVELS: tuple[float, ...] = (0.9, 0.75, 0.55, 0.0)
QUALITIES: tuple[str, ...] = ("as-is", "low")
#: the two bins of a pair's detail (:func:`face_detail`), below and above ``measured_on["auto"]["detail_edge"]``
DETAIL_BINS: tuple[str, ...] = ("soft", "sharp")
#: where detail is measured in the aligned 160x160 face: rows brow to chin, columns cheek to cheek
DETAIL_BOX = (slice(30, 150), slice(30, 130))
#: the side of the coarse copy that detail is measured against (the ``low`` quality's)
DETAIL_SIDE = 48
STATES: tuple[str, ...] = ("whole", "mask", "sunglasses", "hand", "crop", "partial")
#: the prefix of the auto levels' kinds in :class:`OperatingPoints`
AUTO = "auto"
#: a level with fewer impostor pairs is measured together with its neighbours (:func:`level_points`)
MIN_IMPOSTORS = 1000


def level_kind(i: int) -> str:
    """The operating-point kind of level i, e.g. ``auto/visible>=0.90``."""
    return f"{AUTO}/visible>={LEVELS[i]:.2f}"


def quality_kind(bin_: str, i: int) -> str:
    """The operating-point kind of level i within a detail bin, e.g. ``auto/sharp/visible>=0.90``."""
    return f"{AUTO}/{bin_}/visible>={LEVELS[i]:.2f}"


def face_detail(faces: np.ndarray) -> np.ndarray:
    """(N,) float: the detail of aligned faces (N, 160, 160, 3) uint8 — the RMS of what a 48-px copy loses
    (grey face minus its copy downscaled to 48 px and scaled back) over :data:`DETAIL_BOX`, divided by the face's
    contrast there (its standard deviation + 1). 0 for a flat or a 48-px face; about 0.07 for a face degraded to
    ``low``, 0.15 for CelebA's and LFW's photos (medians)."""
    out = np.empty(len(faces), np.float64)
    for i, f in enumerate(faces):
        g = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY).astype(np.float32)
        small = cv2.resize(g, (DETAIL_SIDE, DETAIL_SIDE), interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(small, g.shape[::-1], interpolation=cv2.INTER_LINEAR)
        box = g[DETAIL_BOX]
        out[i] = float(np.sqrt(((box - coarse[DETAIL_BOX]) ** 2).mean()) / (box.std() + 1.0))
    return out


def detail_edge(points: OperatingPoints | None) -> float | None:
    """The detail that splits soft from sharp pairs where ``points`` carry levels per detail bin, else None."""
    if points is None:
        return None
    edge = points.measured_on.get(AUTO, {}).get("detail_edge")
    kinds = [quality_kind(b, i) for b in DETAIL_BINS for i in range(len(LEVELS))]
    return float(edge) if edge is not None and all(k in points.threshold for k in kinds) else None


def shared_visibility(va: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """(...,) the mean over regions of min(va, vb), from visibility estimates (..., R) (broadcast)."""
    return np.minimum(va, vb).mean(-1)


def level_of(share: np.ndarray | float) -> np.ndarray:
    """Level index (into :data:`LEVELS`) of shared visibilities (any shape)."""
    s = np.asarray(share, dtype=np.float64)
    out = np.full(s.shape, len(LEVELS) - 1, dtype=np.int64)
    for i in reversed(range(len(LEVELS) - 1)):
        out[s >= LEVELS[i]] = i
    return out


def has_auto(points: OperatingPoints | None) -> bool:
    return points is not None and all(level_kind(i) in points.threshold for i in range(len(LEVELS)))


def auto_kind(points: OperatingPoints, level: int, sharp: bool | None) -> str:
    """The kind whose threshold a pair of visibility level ``level`` and detail bin ``sharp`` (None: unknown) takes:
    its level within its detail bin where the model carries those, else its pooled level, else (a model without
    levels) the holistic point for a whole pair (the top level) and the partial one for any other."""
    if sharp is not None and detail_edge(points) is not None:
        return quality_kind(DETAIL_BINS[int(sharp)], level)
    if has_auto(points):
        return level_kind(level)
    return "holistic" if level == 0 else "partial"


def auto_threshold(points: OperatingPoints, far: float, share: float, detail: float | None = None
                   ) -> tuple[float, str]:
    """(threshold, kind) for a pair of shared visibility ``share`` and detail ``detail`` (the smaller of its faces';
    None: unknown), by :func:`auto_kind` (the kind named says which)."""
    edge = detail_edge(points)
    kind = auto_kind(points, int(level_of(share)), None if edge is None or detail is None else detail >= edge)
    return points.at(far, kind), kind


def auto_thresholds(points: OperatingPoints, far: float, share: np.ndarray, detail: np.ndarray | None = None
                    ) -> np.ndarray:
    """(P,) :func:`auto_threshold` of many pairs: shared visibilities (P,), details (P,) or None (NaN: unknown)."""
    levels = level_of(share)
    table = np.array([[points.at(far, auto_kind(points, i, sharp)) for i in range(len(LEVELS))]
                      for sharp in (None, False, True)])
    row = np.zeros(levels.shape, np.int64)
    edge = detail_edge(points)
    if edge is not None and detail is not None:
        d = np.asarray(detail, np.float64)
        known = ~np.isnan(d)
        row[known] = 1 + (d[known] >= edge)
    return table[row, levels]


def degrade(faces: np.ndarray, quality: str) -> np.ndarray:
    """(N, 160, 160, 3) uint8 faces at ``quality`` (:data:`QUALITIES`)."""
    if quality == "as-is":
        return faces
    if quality != "low":
        raise PartialFaceError(f"quality {quality!r}: choose one of {', '.join(QUALITIES)}")
    out = np.empty_like(faces)
    for i, f in enumerate(faces):
        small = cv2.resize(f, (48, 48), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
        dec = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        small = small if dec is None else dec[:, :, ::-1]
        out[i] = cv2.resize(small, (160, 160), interpolation=cv2.INTER_LINEAR)
    return out


def make_states(faces: np.ndarray, masks: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """{state: (N, 160, 160, 3) uint8} of :data:`STATES` for aligned faces (N, 160, 160, 3)."""
    from partialface.geometry.partial import partial_face
    from partialface.geometry.realistic import occlude_aligned_realistic
    from partialface.geometry.template import PARTS

    out = {"whole": faces}
    for kind in ("mask", "sunglasses", "hand", "crop"):
        out[kind] = np.stack([occlude_aligned_realistic(f, kind, seed=seed * 1000003 + i, masks=masks)[0]
                              for i, f in enumerate(faces)])
    out["partial"] = np.stack([partial_face(f, PARTS[i % 4], 0.3, centred=False) for i, f in enumerate(faces)])
    return out


def level_pairs(emb: dict[str, np.ndarray], vis: dict[str, np.ndarray], labels: np.ndarray,
                detail: dict[str, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of :func:`make_states`' faces (module docstring): (scores, genuine, level, state index, detail),
    each (P,); ``emb[state]`` (N, D) L2-normalised, ``vis[state]`` (N, R) visibility estimates, ``detail[state]``
    (N,) the faces' :func:`face_detail` (a pair's: the smaller; None: NaN)."""
    n = len(labels)
    scores, same, levels, states, details = [], [], [], [], []
    for si, state in enumerate(STATES):
        s = emb[state] @ emb["whole"].T
        share = shared_visibility(vis[state][:, None, :], vis["whole"][None, :, :])
        i, j = np.triu_indices(n, k=1) if state == "whole" else np.nonzero(~np.eye(n, dtype=bool))
        scores.append(s[i, j])
        same.append(labels[i] == labels[j])
        levels.append(level_of(share[i, j]))
        states.append(np.full(len(i), si))
        details.append(np.full(len(i), np.nan) if detail is None else np.minimum(detail[state][i], detail["whole"][j]))
    return (np.concatenate(scores), np.concatenate(same), np.concatenate(levels), np.concatenate(states),
            np.concatenate(details))


def level_points(scores: np.ndarray, same: np.ndarray, levels: np.ndarray) -> dict[str, dict[str, Any]]:
    """{level kind: {"threshold": {far: t}, "tar": {far: tar}, "pairs": [genuine, impostor], "from": kind}}. A level
    with fewer than :data:`MIN_IMPOSTORS` impostor pairs is measured together with the next higher one (``from``
    names the highest level its pairs came from): its threshold is never looser than the data can support."""
    out: dict[str, dict[str, Any]] = {}
    if not (~same).any():
        raise PartialFaceError("no impostor pairs in the calibration data (use more held-out identities)")
    for li in range(len(LEVELS)):
        top = li
        sel = levels == li
        while (sel & ~same).sum() < MIN_IMPOSTORS and top > 0:
            top -= 1
            sel |= levels == top
        if (sel & ~same).sum() < MIN_IMPOSTORS:  # the top levels themselves: take the next lower ones
            low = li
            while (sel & ~same).sum() < MIN_IMPOSTORS and low < len(LEVELS) - 1:
                low += 1
                sel |= levels == low
        gen, imp = scores[sel & same], scores[sel & ~same]
        th = {far_key(f): threshold_at_far(imp, f) for f in FARS}
        tar = {k: float((gen >= t).mean()) if len(gen) else float("nan") for k, t in th.items()}
        out[level_kind(li)] = {"threshold": th, "tar": tar,
                               "pairs": [len(gen), len(imp)], "from": level_kind(top)}
    return out


def calibrate_auto(
    points: OperatingPoints, embed: Callable[[np.ndarray], np.ndarray], visibility: Callable[[np.ndarray], np.ndarray],
    data: Path, masks: Any, *, seed: int = 0, qualities: Sequence[str] = QUALITIES, progress: bool = True,
) -> OperatingPoints:
    """``points`` with the auto levels added (module docstring), measured on the aligned identity folders ``data``:
    ``embed`` (N, 160, 160, 3) uint8 -> (N, D) L2-normalised, ``visibility`` the same faces -> (N, R). With both
    qualities the levels per detail bin too."""
    from tqdm import tqdm

    from partialface.data.folders import identity_folders
    from partialface.data.images import read_image

    folders = identity_folders(data)
    labels = np.array([c for _, c in folders.samples])
    faces = np.stack([read_image(folders.root / rel) for rel, _ in folders.samples])
    if faces.shape[1:] != (160, 160, 3):
        raise PartialFaceError(f"--data {data}: give aligned 160x160 faces (partialface align), got {faces.shape[1:]}")
    states = make_states(faces, masks, seed)
    pooled: list[tuple[np.ndarray, ...]] = []
    per_quality: dict[str, Any] = {}
    whole_detail: dict[str, float] = {}
    for q in tqdm(list(qualities), desc="auto operating points", unit="quality", disable=not progress):
        shown = {s: degrade(x, q) for s, x in states.items()}
        emb = {s: embed(x) for s, x in shown.items()}
        vis = {s: visibility(x) for s, x in shown.items()}
        det = {s: face_detail(x) for s, x in shown.items()}
        whole_detail[q] = float(np.median(det["whole"]))
        pairs = level_pairs(emb, vis, labels, det)
        pooled.append(pairs)
        per_quality[q] = {k: v["threshold"] for k, v in level_points(*pairs[:3]).items()}
        per_quality[q]["level_share"] = {level_kind(i): float((pairs[2] == i).mean()) for i in range(len(LEVELS))}
        per_quality[q]["median_detail"] = whole_detail[q]
    scores, same, levels, state, detail = (np.concatenate(x) for x in zip(*pooled, strict=True))
    found = level_points(scores, same, levels)
    edge = None
    if set(QUALITIES) <= set(qualities):  # a soft and a sharp side to split between
        edge = float(np.sqrt(whole_detail["as-is"] * whole_detail["low"]))
        sharp = detail >= edge
        for bi, bin_ in enumerate(DETAIL_BINS):
            sel = sharp == bool(bi)
            prefix = f"{AUTO}/{bin_}/"
            for k, v in level_points(scores[sel], same[sel], levels[sel]).items():
                found[k.replace(f"{AUTO}/", prefix, 1)] = {**v, "from": v["from"].replace(f"{AUTO}/", prefix, 1)}
    for kind, v in found.items():
        points.threshold[kind], points.tar[kind], points.pairs[kind] = v["threshold"], v["tar"], v["pairs"]
    under = [f"{k}@{far_key(f)}" for k, v in found.items() for f in FARS if f * v["pairs"][1] < 10]
    points.measured_on["auto"] = {
        "data": str(data), "identities": len(folders.classes), "images": len(labels), "levels": list(LEVELS),
        "qualities": list(qualities), "states": list(STATES), "seed": seed, "per_quality": per_quality,
        "under_measured": under, "merged": {k: v["from"] for k, v in found.items() if v["from"] != k},
        "detail_edge": edge, "detail_bins": list(DETAIL_BINS) if edge is not None else [],
    }
    points.measured_on["auto"]["real_far_by_state"] = {
        name: _real_far(scores, same, levels, detail, state == s, points) for s, name in enumerate(STATES)}
    return points


def _real_far(scores: np.ndarray, same: np.ndarray, levels: np.ndarray, detail: np.ndarray, sel: np.ndarray,
              points: OperatingPoints) -> dict[str, float]:
    """{far: the impostor pairs of ``sel`` accepted at the threshold :func:`auto_thresholds` gives them} (a check
    on the held-out data)."""
    imp = sel & ~same
    share = np.array(LEVELS)[levels[imp]]  # each level's lower edge stands for its pairs
    return {far_key(far): float((scores[imp] >= auto_thresholds(points, far, share, detail[imp])).mean())
            if imp.any() else float("nan") for far in FARS}
