"""Verification scoring (PartialLFW spec §4): cosine scores, exact 10-fold accuracy, ROC AUC, EER, TAR@FAR.

Conventions (state them in every report):
- score of a pair = cosine similarity of the L2-normalised embeddings; "same" iff score >= threshold.
- k-fold accuracy: for each fold k the threshold is chosen on the OTHER folds only. Candidates are the
  distinct training scores; the winner maximises training accuracy (exact integer counts); ties go to
  the smallest candidate. Accuracy is then measured on fold k. Mean and population std over folds, in %.
- ROC AUC, EER and TAR@FAR use all pairs at once (no folds).
- EER: the point where FPR = FNR on the ROC curve through every distinct threshold, linearly
  interpolated between the two neighbouring points when no threshold hits it exactly.
- TAR@FAR=x: the largest TPR over the thresholds (every distinct score, plus "nothing is same")
  whose FPR <= x. No interpolation; with N different pairs, FPR moves in steps of 1/N.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import auc, roc_curve

#: FARs reported next to the accuracy.
REPORTED_FARS: tuple[float, ...] = (1e-3, 1e-2)


def _scores_labels(scores: ArrayLike, same: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(same)
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and same must be 1-D of equal length, got {s.shape} and {y.shape}")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("same must hold booleans (or 0/1)")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    return s, y


def _best_on_sorted(s: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Best threshold over ascending scores ``s`` with labels ``y``: (threshold, correct count).

    Threshold u (a distinct score) predicts "same" for s >= u; correct(u) = #same with s >= u + #different
    with s < u, from cumulative counts up to u's first occurrence. argmax keeps the first (smallest) winner.
    """
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    pos_below = np.concatenate(([0], np.cumsum(y, dtype=np.int64)))[starts]
    correct = (np.count_nonzero(y) - pos_below) + (starts - pos_below)
    j = int(np.argmax(correct))
    return float(s[starts[j]]), int(correct[j])


def best_threshold(scores: ArrayLike, same: ArrayLike) -> tuple[float, float]:
    """The threshold maximising accuracy on these pairs: (threshold, accuracy as a fraction in [0, 1]).

    Candidates are the distinct scores; ties go to the smallest. This is accuracy ON the pairs that chose
    the threshold — an optimistic number; report :func:`tenfold_accuracy` instead.
    """
    s, y = _scores_labels(scores, same)
    if s.size == 0:
        raise ValueError("no pairs to choose a threshold on")
    order = np.argsort(s, kind="stable")
    t, correct = _best_on_sorted(s[order], y[order])
    return t, correct / s.size


@dataclass(frozen=True)
class FoldedAccuracy:
    """Per-fold detail of :func:`tenfold_details`: fold ids (ascending), their thresholds and accuracies."""

    folds: np.ndarray  # (K,) fold ids
    thresholds: np.ndarray  # (K,) threshold chosen on the other folds
    accuracies: np.ndarray  # (K,) accuracy on the fold, fraction

    @property
    def mean_percent(self) -> float:
        return float(self.accuracies.mean() * 100.0)

    @property
    def std_percent(self) -> float:
        """Population standard deviation (ddof = 0) over folds, in %."""
        return float(self.accuracies.std() * 100.0)


def tenfold_details(scores: ArrayLike, same: ArrayLike, folds: ArrayLike) -> FoldedAccuracy:
    """k-fold accuracy with per-fold thresholds; scores, same, folds: (P,). Any number (>= 2) of folds,
    any integer fold ids. One sort for all folds; per fold a masked cumulative count (no threshold loop).
    """
    s, y = _scores_labels(scores, same)
    f = np.asarray(folds)
    if f.shape != s.shape:
        raise ValueError(f"folds must have the shape of scores, got {f.shape} and {s.shape}")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError(f"need at least 2 folds to choose thresholds off the test fold, got {ids.size}")
    order = np.argsort(s, kind="stable")
    ss, ys, fs = s[order], y[order], f[order]
    thresholds = np.empty(ids.size, dtype=np.float64)
    accuracies = np.empty(ids.size, dtype=np.float64)
    for i, k in enumerate(ids):
        test = fs == k
        t, _ = _best_on_sorted(ss[~test], ys[~test])
        thresholds[i] = t
        accuracies[i] = np.count_nonzero((ss[test] >= t) == ys[test]) / np.count_nonzero(test)
    return FoldedAccuracy(ids, thresholds, accuracies)


def tenfold_accuracy(scores: ArrayLike, same: ArrayLike, folds: ArrayLike) -> tuple[float, float]:
    """(mean, population std) of the per-fold accuracies in %, thresholds chosen off the test fold."""
    d = tenfold_details(scores, same, folds)
    return d.mean_percent, d.std_percent


def _roc(scores: ArrayLike, same: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """ROC through every distinct threshold (plus 'nothing is same'): (FPR, TPR), each (T + 1,)."""
    s, y = _scores_labels(scores, same)
    npos = np.count_nonzero(y)
    if npos == 0 or npos == y.size:
        raise ValueError("ROC metrics need both same and different pairs")
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(auc(fpr, tpr))


def _eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    d = fpr - (1.0 - tpr)  # non-decreasing along the curve: -1 at the start, +1 at the end
    i = int(np.argmax(d >= 0))
    if d[i] == 0 or i == 0:
        return float(fpr[i])
    t = d[i - 1] / (d[i - 1] - d[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def _tar(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    if not (0.0 <= far <= 1.0):
        raise ValueError(f"far must be in [0, 1], got {far}")
    return float(tpr[fpr <= far].max())


def roc_auc(scores: ArrayLike, same: ArrayLike) -> float:
    """Area under the ROC curve (trapezoids; a tie across classes counts half), all pairs, in [0, 1]."""
    return _auc(*_roc(scores, same))


def eer(scores: ArrayLike, same: ArrayLike) -> float:
    """Equal error rate (fraction): where FPR = FNR = 1 - TPR, interpolated between ROC points."""
    return _eer(*_roc(scores, same))


def tar_at_far(scores: ArrayLike, same: ArrayLike, far: float) -> float:
    """TAR@FAR (fraction): the largest TPR over thresholds whose FPR <= ``far`` (see the module docstring)."""
    return _tar(*_roc(scores, same), far)


def cosine_scores(emb_a: ArrayLike, emb_b: ArrayLike) -> np.ndarray:
    """Row-wise cosine similarity: emb_a, emb_b (P, D) -> (P,) float64. Rows are L2-normalised here
    (defensively: already-normalised input is unchanged up to rounding; an all-zero row scores 0)."""
    a = np.asarray(emb_a, dtype=np.float64)
    b = np.asarray(emb_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"embeddings must both be (P, D), got {a.shape} and {b.shape}")
    na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    return np.einsum("pd,pd->p", a, b) / (na * nb)


@dataclass(frozen=True)
class VerificationResult:
    """Scores of one benchmark: k-fold accuracy mean/std in %, AUC, EER, TAR@FAR as fractions."""

    accuracy: float
    accuracy_std: float
    auc: float
    eer: float
    tar_far_1e3: float
    tar_far_1e2: float
    pairs: int
    folds: int

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def score_benchmark(scores: ArrayLike, same: ArrayLike, folds: ArrayLike) -> VerificationResult:
    """Every reported number of one benchmark from its pair scores, labels and folds, all (P,)."""
    s, y = _scores_labels(scores, same)
    d = tenfold_details(s, y, folds)
    fpr, tpr = _roc(s, y)
    return VerificationResult(
        accuracy=d.mean_percent,
        accuracy_std=d.std_percent,
        auc=_auc(fpr, tpr),
        eer=_eer(fpr, tpr),
        tar_far_1e3=_tar(fpr, tpr, REPORTED_FARS[0]),
        tar_far_1e2=_tar(fpr, tpr, REPORTED_FARS[1]),
        pairs=int(s.size),
        folds=int(d.folds.size),
    )
