"""Operating points of a model: the cosine threshold at a false-accept rate (FAR), measured on held-out
identities, for ``verify`` to decide "same person" with a threshold that means something.

Pairs: every pair of faces of two different identities is an impostor pair, every pair of one identity's
faces a genuine pair. All pairs of the data are used, not a pairs file: a FAR of 1e-4 needs well over 10,000
impostor pairs, and 300 identities of 4 faces give 700,000. Two kinds of pair, with a threshold each:

- ``holistic``: both faces whole;
- ``partial``: one face whole, the other a non-centred partial face, each of the four parts at size factor
  :data:`PARTIAL_FACTOR` (the benchmark's partial-holistic protocol). Partial faces score lower, so a
  holistic threshold would reject most of them.

The threshold at FAR f is the smallest cosine t with (impostor pairs scoring >= t) <= f x n (n impostor
pairs): just above the (floor(f x n) + 1)-th highest impostor score. Where f x n < 10 (fewer than ten false
accepts expected) a point is listed in ``measured_on["under_measured"]``. The TAR at t is measured on the same
data's genuine pairs. Memory: the N x N score matrix of N faces (N = 5,000 is 200 MB).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partialface.errors import PartialFaceError
from partialface.geometry.partial import Variant
from partialface.geometry.template import PARTS
from partialface.models.files import OPERATING_POINTS_KEY

#: the false-accept rates of the operating points every model carries
FARS = (1e-2, 1e-3, 1e-4)
#: the size factor of the partial faces of the ``partial`` operating points
PARTIAL_FACTOR = 0.3
#: the key of the operating points in a model file's metadata
METADATA_KEY = OPERATING_POINTS_KEY
KINDS = ("holistic", "partial")


@dataclass
class OperatingPoints:
    """Thresholds and TARs at :data:`FARS` for each kind of pair, with how they were measured.

    ``threshold[kind][far]``: the cosine threshold; ``tar[kind][far]``: the genuine pairs accepted at it;
    ``pairs[kind]``: (genuine, impostor) pair counts; ``measured_on``: data, identities, images, date, model.
    """

    threshold: dict[str, dict[str, float]] = field(default_factory=dict)
    tar: dict[str, dict[str, float]] = field(default_factory=dict)
    pairs: dict[str, list[int]] = field(default_factory=dict)
    measured_on: dict[str, Any] = field(default_factory=dict)

    def at(self, far: float, kind: str = "holistic") -> float:
        """The threshold at ``far`` (one of :data:`FARS`) for ``kind``; PartialFaceError otherwise."""
        key = far_key(far)
        if kind not in self.threshold or key not in self.threshold[kind]:
            known = ", ".join(sorted(self.threshold.get(kind, {}))) or "none"
            raise PartialFaceError(f"--far {far:g}: this model has no {kind} operating point there (it has {known}; "
                                   "run `partialface calibrate` for others)")
        return self.threshold[kind][key]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OperatingPoints:
        d = json.loads(text)
        return cls(**{k: d[k] for k in ("threshold", "tar", "pairs", "measured_on") if k in d})


def far_key(far: float) -> str:
    """'1e-03' for 0.001: the metadata's key of a FAR."""
    return f"{far:.0e}"


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The smallest threshold t with #(impostor >= t) <= far x #impostor (cosine scores, any order)."""
    n = len(impostor)
    if n == 0:
        raise ValueError("no impostor pairs")
    allowed = math.floor(far * n + 1e-9)  # false accepts the rate allows
    top = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    if allowed >= n:
        return float(top[-1])
    return float(np.nextafter(top[allowed], np.inf))  # just above the first score that must be rejected


def pair_scores(a: np.ndarray, b: np.ndarray, labels: np.ndarray, same_set: bool) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosines of L2-normalised rows: every (i, j) pair of ``a`` x ``b`` with i != j (and
    i < j when ``same_set``: a and b are the same faces)."""
    s = a @ b.T
    n = len(a)
    i, j = np.triu_indices(n, k=1) if same_set else np.nonzero(~np.eye(n, dtype=bool))
    same = labels[i] == labels[j]
    return s[i, j][same], s[i, j][~same]


def operating_points(holistic: np.ndarray, partial: dict[str, np.ndarray], labels: np.ndarray,
                     measured_on: dict[str, Any]) -> OperatingPoints:
    """From L2-normalised embeddings: ``holistic`` (N, D), ``partial`` part -> (N, D), ``labels`` (N,)."""
    gen_h, imp_h = pair_scores(holistic, holistic, labels, same_set=True)
    both = [pair_scores(partial[p], holistic, labels, same_set=False) for p in sorted(partial)]
    gen_p, imp_p = np.concatenate([g for g, _ in both]), np.concatenate([i for _, i in both])
    out = OperatingPoints(measured_on=measured_on)
    for kind, gen, imp in (("holistic", gen_h, imp_h), ("partial", gen_p, imp_p)):
        if len(gen) == 0 or len(imp) == 0:
            raise PartialFaceError(f"{measured_on.get('data')}: no {'genuine' if len(gen) == 0 else 'impostor'} "
                                   "pairs (need identities with at least 2 faces, and at least 2 identities)")
        out.pairs[kind] = [len(gen), len(imp)]
        out.threshold[kind], out.tar[kind] = {}, {}
        for far in FARS:
            t = threshold_at_far(imp, far)
            out.threshold[kind][far_key(far)] = t
            out.tar[kind][far_key(far)] = float((gen >= t).mean())
    out.measured_on["under_measured"] = [far_key(f) for f in FARS if f * min(len(imp_h), len(imp_p)) < 10]
    return out


def calibrate_dataset(embedder: Any, data: Path, cache: Path, *, batch_size: int = 128, workers: int = 2,
                      progress: bool = True) -> OperatingPoints:
    """Operating points of ``embedder`` on the aligned faces of ``data`` (identity folders of 160x160 faces,
    e.g. the held-out split of ``partialface split``); embeddings cached in ``cache``."""
    from partialface.data.folders import identity_folders
    from partialface.evaluation.embed import embed_dataset

    folders = identity_folders(data)
    keys = [rel for rel, _ in folders.samples]
    labels = np.array([c for _, c in folders.samples])
    parts = [Variant(p, PARTIAL_FACTOR, False) for p in PARTS]
    E = embed_dataset(embedder, keys, [folders.root / k for k in keys], [Variant(), *parts], cache,
                      batch_size=batch_size, workers=workers, progress=progress)
    measured_on = {
        "data": str(data), "identities": len(folders.classes), "images": len(keys), "model": embedder.name,
        "partial": f"non-centred {'/'.join(PARTS)} at factor {PARTIAL_FACTOR} against whole faces",
        "date": _dt.date.today().isoformat(),
    }
    return operating_points(E[str(Variant())], {str(v): E[str(v)] for v in parts}, labels, measured_on)


def read_operating_points(meta: dict[str, str]) -> OperatingPoints | None:
    """The operating points in a model file's metadata, or None."""
    text = meta.get(METADATA_KEY)
    return OperatingPoints.from_json(text) if text else None
