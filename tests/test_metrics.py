"""Scoring: exact k-fold accuracy against a brute-force reference, hand-computed ROC figures, traps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from partialface.metrics import (
    best_threshold,
    cosine_scores,
    eer,
    roc_auc,
    score_benchmark,
    tar_at_far,
    tenfold_accuracy,
    tenfold_details,
)


def brute_force(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray
) -> tuple[list[float], list[float], list[int], list[int]]:
    """Independent reference: per fold, try every distinct training score in a plain loop.

    Returns (thresholds, accuracies, correct counts, test sizes) per fold in ascending fold id.
    """
    thresholds, accs, corrects, sizes = [], [], [], []
    for k in sorted(set(folds.tolist())):
        train = [(float(s), bool(y)) for s, y, f in zip(scores, same, folds, strict=True) if f != k]
        test = [(float(s), bool(y)) for s, y, f in zip(scores, same, folds, strict=True) if f == k]
        best_t, best_c = math.nan, -1
        for t in sorted({s for s, _ in train}):  # ascending: strict '>' keeps the smallest winner
            c = sum(1 for s, y in train if (s >= t) == y)
            if c > best_c:
                best_t, best_c = t, c
        correct = sum(1 for s, y in test if (s >= best_t) == y)
        thresholds.append(best_t)
        corrects.append(correct)
        sizes.append(len(test))
        accs.append(correct / len(test))
    return thresholds, accs, corrects, sizes


def random_case(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_folds = int(rng.integers(2, 11))
    ids = rng.choice(np.arange(-5, 40), size=n_folds, replace=False)  # arbitrary, non-contiguous ids
    sizes = rng.integers(1, 25, size=n_folds)  # uneven folds
    folds = np.repeat(ids, sizes)
    rng.shuffle(folds)
    n = folds.size
    same = rng.random(n) < rng.uniform(0.1, 0.9)
    if kind == "continuous":
        scores = rng.normal(size=n) + 1.2 * same
    elif kind == "ties":
        scores = rng.choice(np.array([-0.5, 0.0, 0.2, 0.7]), size=n) + 0.0
    elif kind == "binary":
        scores = (rng.random(n) < np.where(same, 0.7, 0.3)).astype(np.float64)
    elif kind == "float32":
        scores = (rng.normal(size=n) + same).astype(np.float32).astype(np.float64)
        scores[rng.random(n) < 0.3] = 0.25  # plus a large tie block
    elif kind == "pure_folds":
        # every fold is all-same or all-different
        pure = {int(i): bool(rng.random() < 0.5) for i in ids}
        same = np.array([pure[int(f)] for f in folds])
        scores = rng.choice(np.linspace(-1, 1, 7), size=n)
    else:
        raise AssertionError(kind)
    return scores, same, folds


KINDS = ["continuous", "ties", "binary", "float32", "pure_folds"]


@pytest.mark.parametrize("kind", KINDS)
def test_tenfold_equals_brute_force(kind: str) -> None:
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(60):
        scores, same, folds = random_case(rng, kind)
        ref_t, ref_acc, ref_correct, ref_sizes = brute_force(scores, same, folds)
        d = tenfold_details(scores, same, folds)
        assert d.folds.tolist() == sorted(set(folds.tolist()))
        assert d.thresholds.tolist() == ref_t  # exact
        assert (np.rint(d.accuracies * np.array(ref_sizes))).astype(int).tolist() == ref_correct
        assert d.accuracies.tolist() == ref_acc  # same divisions -> bit-identical
        mean, std = tenfold_accuracy(scores, same, folds)
        acc = np.array(ref_acc)
        assert mean == float(acc.mean() * 100) and std == float(acc.std() * 100)
        m = sum(ref_acc) / len(ref_acc)
        assert mean == pytest.approx(100 * m, rel=1e-12)
        pop_std = math.sqrt(sum((a - m) ** 2 for a in ref_acc) / len(ref_acc))
        assert std == pytest.approx(100 * pop_std, abs=1e-9)


def test_threshold_is_chosen_off_the_test_fold() -> None:
    # Hand-computed (see the derivation in the comments): choosing on the other fold gives 75 % on both
    # folds; choosing on the test fold itself would give 100 % on both.
    # fold 0: 0.9 S, 0.3 D, 0.5 S, 0.45 D ; fold 1: 0.8 S, 0.6 D, 0.7 S, 0.2 D
    scores = np.array([0.9, 0.3, 0.5, 0.45, 0.8, 0.6, 0.7, 0.2])
    same = np.array([1, 0, 1, 0, 1, 0, 1, 0], dtype=bool)
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    d = tenfold_details(scores, same, folds)
    # train on fold 1: t=0.2 -> 2/4, 0.6 -> 3/4, 0.7 -> 4/4, 0.8 -> 3/4: t = 0.7; fold 0 at 0.7: 0.5 S missed.
    # train on fold 0: t=0.3 -> 2/4, 0.45 -> 3/4, 0.5 -> 4/4, 0.9 -> 3/4: t = 0.5; fold 1 at 0.5: 0.6 D wrong.
    assert d.thresholds.tolist() == [0.7, 0.5]
    assert d.accuracies.tolist() == [0.75, 0.75]
    assert tenfold_accuracy(scores, same, folds) == (75.0, 0.0)
    # the trap: each fold's own best threshold scores it perfectly
    for k in (0, 1):
        assert best_threshold(scores[folds == k], same[folds == k])[1] == 1.0


def test_ties_go_to_the_smallest_candidate() -> None:
    # Training fold 1: 0.2 D, 0.4 S, 0.6 D, 0.8 S -> t=0.2: 2, 0.4: 3, 0.6: 2, 0.8: 3 correct; tie -> 0.4.
    # Test fold 0 holds one same pair at 0.5: right with 0.4, wrong with 0.8.
    # Fold 1's threshold comes from fold 0 alone (0.5): 0.2 D ok, 0.4 S wrong, 0.6 D wrong, 0.8 S ok -> 50 %.
    scores = np.array([0.5, 0.2, 0.4, 0.6, 0.8])
    same = np.array([True, False, True, False, True])
    folds = np.array([7, 3, 3, 3, 3])  # fold ids need not be 0..K-1
    d = tenfold_details(scores, same, folds)
    assert d.folds.tolist() == [3, 7]
    assert d.thresholds.tolist() == [0.5, 0.4]
    assert d.accuracies.tolist() == [0.5, 1.0]
    assert tenfold_accuracy(scores, same, folds) == (75.0, 25.0)


def test_best_threshold_hand_case() -> None:
    # 0.1 D, 0.3 S, 0.35 D, 0.9 S: t=0.1 -> 2, 0.3 -> 3, 0.35 -> 2, 0.9 -> 3 correct; tie -> 0.3.
    assert best_threshold([0.9, 0.35, 0.3, 0.1], [1, 0, 1, 0]) == (0.3, 0.75)
    # all the same score: the only candidate predicts "same" for all
    assert best_threshold([0.2, 0.2, 0.2], [True, False, False]) == (0.2, 1 / 3)


def test_tenfold_input_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        tenfold_accuracy([0.1, 0.2], [True, False], [0, 0])
    with pytest.raises(ValueError, match="NaN"):
        tenfold_accuracy([0.1, np.nan], [True, False], [0, 1])
    with pytest.raises(ValueError, match="equal length"):
        tenfold_accuracy([0.1, 0.2, 0.3], [True, False], [0, 1])
    with pytest.raises(ValueError, match="shape"):
        tenfold_accuracy([0.1, 0.2], [True, False], [0, 1, 1])
    with pytest.raises(ValueError, match="booleans"):
        tenfold_accuracy([0.1, 0.2], [2, 0], [0, 1])


def test_auc_hand_cases() -> None:
    # same 0.9, 0.4 vs different 0.6, 0.1: (same, diff) 0.9>0.6, 0.9>0.1, 0.4<0.6, 0.4>0.1 -> 3/4
    scores, same = [0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]
    assert roc_auc(scores, same) == 0.75
    assert roc_auc([0.5, 0.5], [1, 0]) == 0.5  # a tie counts half
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="both same and different"):
        roc_auc([0.1, 0.2], [1, 1])


def test_eer_hand_cases() -> None:
    # same 0.9, 0.4; diff 0.6, 0.1: at t=0.6 FPR = 1/2 and FNR = 1/2 exactly.
    assert eer([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]) == 0.5
    # same 0.9, 0.5; diff 0.6, 0.1, 0.05: at t=0.6 (FPR 1/3, FNR 1/2), t=0.5 (FPR 1/3, FNR 0):
    # the crossing is on that vertical segment, at FPR = FNR = 1/3.
    assert eer([0.9, 0.5, 0.6, 0.1, 0.05], [1, 1, 0, 0, 0]) == pytest.approx(1 / 3, abs=1e-15)
    # tie across classes: same 0.9, 0.5; diff 0.5, 0.1: from (FPR 0, FNR 1/2) to (FPR 1/2, FNR 0) -> 1/4
    assert eer([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.25, abs=1e-15)
    assert eer([0.8, 0.9, 0.1, 0.2], [1, 1, 0, 0]) == 0.0  # separable
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 1.0  # reversed


def test_tar_at_far_hand_case() -> None:
    neg = np.arange(1000) / 1000.0  # 0.000 .. 0.999, one false accept per 1e-3 of FAR
    pos = np.array([0.9995, 0.9985, 0.9905, 0.5])
    scores = np.concatenate([pos, neg])
    same = np.concatenate([np.ones(4, bool), np.zeros(1000, bool)])
    # FAR 1e-3 allows one negative (0.999): threshold 0.9985 accepts 2 of 4 positives.
    assert tar_at_far(scores, same, 1e-3) == 0.5
    # FAR 1e-2 allows ten negatives (0.990 .. 0.999): 0.9905 accepted too, 0.5 is not.
    assert tar_at_far(scores, same, 1e-2) == 0.75
    assert tar_at_far(scores, same, 0.0) == 0.25  # only 0.9995 is above every negative
    assert tar_at_far(scores, same, 1.0) == 1.0
    # every negative above every positive: only "nothing is same" has FPR 0
    assert tar_at_far([0.1, 0.2, 0.8], [1, 1, 0], 1e-3) == 0.0


def test_cosine_scores() -> None:
    a = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[0.0, 2.0], [6.0, 8.0], [1.0, 0.0], [1.0, 0.0], [-5.0, 0.0]])
    s = cosine_scores(a, b)
    assert s.shape == (5,) and s.dtype == np.float64
    np.testing.assert_allclose(s, [0.0, 1.0, 0.0, 1 / math.sqrt(2), -1.0], atol=1e-15)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 512)).astype(np.float32), rng.normal(size=(50, 512)).astype(np.float32)
    ref = [float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))) for u, v in zip(x, y, strict=True)]
    np.testing.assert_allclose(cosine_scores(x, y), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(P, D\)"):
        cosine_scores(x, y[:10])


def test_score_benchmark_bundles_everything() -> None:
    rng = np.random.default_rng(3)
    same = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    folds = np.repeat(np.arange(10), 60)
    scores = rng.normal(size=600) + 1.5 * same
    r = score_benchmark(scores, same, folds)
    mean, std = tenfold_accuracy(scores, same, folds)
    assert (r.accuracy, r.accuracy_std) == (mean, std)
    assert r.auc == roc_auc(scores, same) and r.eer == eer(scores, same)
    assert r.tar_far_1e3 == tar_at_far(scores, same, 1e-3)
    assert r.tar_far_1e2 == tar_at_far(scores, same, 1e-2)
    assert (r.pairs, r.folds) == (600, 10)
    keys = {"accuracy", "accuracy_std", "auc", "eer", "tar_far_1e3", "tar_far_1e2", "pairs", "folds"}
    assert set(r.as_dict()) == keys
    perfect = score_benchmark(np.where(same, 0.9, 0.1), same, folds)
    assert (perfect.accuracy, perfect.accuracy_std, perfect.auc, perfect.eer) == (100.0, 0.0, 1.0, 0.0)
    assert perfect.tar_far_1e3 == 1.0


def test_roc_figures_against_pairwise_and_threshold_sweeps() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        n = int(rng.integers(4, 300))
        same = rng.random(n) < 0.5
        same[:2] = [True, False]
        scores = np.round(rng.normal(size=n) + same, int(rng.integers(0, 3)))  # many ties
        pos, neg = scores[same], scores[~same]
        # AUC = P(same score > different score) + 1/2 P(equal), over all (same, different) pairs
        gt = (pos[:, None] > neg[None, :]).mean()
        eq = (pos[:, None] == neg[None, :]).mean()
        assert roc_auc(scores, same) == pytest.approx(gt + 0.5 * eq, abs=1e-12)
        # TAR@FAR by sweeping every threshold (plus +inf) with plain counts
        for far in (0.0, 1e-2, 0.1, 0.5):
            best = 0.0
            for t in [*np.unique(scores).tolist(), math.inf]:
                if (neg >= t).sum() / neg.size <= far:
                    best = max(best, float((pos >= t).sum() / pos.size))
            assert tar_at_far(scores, same, far) == best
        # EER: on the ROC segment between the smallest threshold with FPR < FNR and the next lower one
        # (FPR >= FNR), where both rates are equal; so it lies in both rates' ranges over that segment.
        ts = [*np.unique(scores).tolist(), math.inf]
        fprs = [float((neg >= t).mean()) for t in ts]
        fnrs = [float((pos < t).mean()) for t in ts]
        j = max(i for i in range(len(ts)) if fprs[i] >= fnrs[i])  # FPR - FNR falls as the threshold rises
        e = eer(scores, same)
        assert fprs[j + 1] - 1e-12 <= e <= fprs[j] + 1e-12
        assert fnrs[j] - 1e-12 <= e <= fnrs[j + 1] + 1e-12
