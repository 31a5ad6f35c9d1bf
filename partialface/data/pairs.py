"""LFW-style verification pairs with identity-disjoint folds, from identities with any number of images.

Used to hold out identities of a training set for model selection (``partialface split``): the held-out
identities become an LFW-layout test set scored by ``partialface benchmark`` like LFW itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from partialface.errors import PartialFaceError

SamePair = tuple[str, int, int]
DiffPair = tuple[str, int, str, int]
Fold = tuple[int, list[SamePair], list[DiffPair]]


def identity_disjoint_pairs(counts: Mapping[str, int], per_fold: int, seed: int, folds: int = 10) -> list[Fold]:
    """[(fold, same [(name, i, j)], different [(a, i, b, j)])] with 1-based image numbers, i < j in a same pair.

    ``counts``: images per identity. Identities are shuffled (seeded) and split into ``folds`` groups; fold k
    draws only from group k, so no identity appears in two folds (as in LFW). A same pair picks an identity
    with >= 2 images uniformly, then two of its images; a different pair picks two identities uniformly, then
    one image of each — so identities with many images do not dominate. Pairs within a fold are distinct.
    """
    names = sorted(counts)
    if len(names) < 2 * folds:
        raise PartialFaceError(f"{len(names)} identities are too few for {folds} identity-disjoint folds; "
                               f"need at least {2 * folds}")
    r = np.random.default_rng([seed & 0xFFFFFFFF, 11])
    groups = np.array_split(r.permutation(len(names)), folds)
    out: list[Fold] = []
    for k, group in enumerate(groups):
        g = [names[i] for i in group]
        multi = [n for n in g if counts[n] >= 2]
        n_same = sum(counts[n] * (counts[n] - 1) // 2 for n in multi)
        n_diff = sum(counts[a] * counts[b] for i, a in enumerate(g) for b in g[i + 1:])
        if per_fold > min(n_same, n_diff):
            raise PartialFaceError(f"pairs per fold {per_fold} is more than fold {k + 1} can hold ({n_same} same and "
                                   f"{n_diff} different pairs); lower it or hold out more identities")
        same: set[SamePair] = set()
        while len(same) < per_fold:
            n = multi[int(r.integers(len(multi)))]
            i, j = sorted(int(v) + 1 for v in r.choice(counts[n], 2, replace=False))
            same.add((n, i, j))
        diff: set[DiffPair] = set()
        while len(diff) < per_fold:
            a, b = sorted(int(v) for v in r.choice(len(g), 2, replace=False))
            diff.add((g[a], int(r.integers(counts[g[a]])) + 1, g[b], int(r.integers(counts[g[b]])) + 1))
        out.append((k, sorted(same), sorted(diff)))
    return out


def pairs_text(pairs: list[Fold], per_fold: int) -> str:
    """The pairs file text (LFW's format): header ``folds per_fold``, then per fold its same and different lines."""
    lines = [f"{len(pairs)}\t{per_fold}"]
    for _, same, diff in pairs:
        lines += [f"{n}\t{i}\t{j}" for n, i, j in same]
        lines += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in diff]
    return "\n".join(lines) + "\n"
