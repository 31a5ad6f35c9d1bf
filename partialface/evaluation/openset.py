"""Open-set 1:N identification on any LFW-layout folder (issue #14): ``partialface benchmark-identify``.

The convention (tested against a brute-force reference in tests/test_openset.py):

- **Split.** Identities with >= 2 images enrol their first image (sorted file order) in the gallery; their
  other images are *known* probes. Every image of an identity with one image is an *unknown* probe. On
  the 7,701 LFW images of the standard pairs: 1,559 enrolled, 3,420 known and 2,722 unknown probes.
- **Scores.** Cosine similarity of L2-normalised embeddings, one template per identity, exact search.
  Gallery faces are whole; a probe is whole (``holistic``) or a PartialLFW variant (a part kept at a factor,
  the rest grey; non-centred unless asked).
- **Closed set (known probes only).** CMC(r): the fraction whose identity is among the r best-scoring
  gallery identities (ties count against the probe: an impostor scoring equal to the mate ranks first);
  rank-1 = CMC(1).
- **Open set.** FPIR(t): the fraction of unknown probes whose best score is >= t. DIR(t): the fraction of
  known probes whose mate ranks first and scores >= t. DIR@FPIR=x is DIR at the smallest threshold whose
  FPIR <= x: with the unknown probes' best scores sorted high to low u_1 >= u_2 >= ..., m = floor(x * U),
  t is just above u_{m+1} (a score counts when it is > u_{m+1}); t is -inf-like (every known probe counts)
  when m >= U.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialface.errors import PartialFaceError

FPIRS: tuple[float, ...] = (1e-2, 1e-1)
RANKS: tuple[int, ...] = (1, 5, 10, 20)


@dataclass(frozen=True)
class OpenSetSplit:
    """Rows into a dataset's images: ``gallery`` (G,) with ``gallery_labels``; ``known`` (P,) probes with
    ``known_labels``; ``unknown`` (U,) probes (identities not in the gallery). Labels are identity indices."""

    gallery: np.ndarray
    gallery_labels: np.ndarray
    known: np.ndarray
    known_labels: np.ndarray
    unknown: np.ndarray


def openset_split(labels: np.ndarray) -> OpenSetSplit:
    """The convention's split of images with identity ``labels`` (N,) (in the dataset's sorted order)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
    first: dict[int, int] = {}
    for i, c in enumerate(labels.tolist()):
        first.setdefault(c, i)
    multi = counts[labels] >= 2
    is_gallery = np.zeros(len(labels), dtype=bool)
    is_gallery[[i for c, i in first.items() if counts[c] >= 2]] = True
    gallery = np.flatnonzero(is_gallery)
    known = np.flatnonzero(multi & ~is_gallery)
    unknown = np.flatnonzero(~multi)
    return OpenSetSplit(gallery, labels[gallery], known, labels[known], unknown)


def dir_at_fpir(known_best: np.ndarray, known_correct: np.ndarray, unknown_best: np.ndarray, fpir: float) -> float:
    """DIR (in [0, 1]) at false-positive identification rate ``fpir`` (module docstring):
    known_best / known_correct (P,): each known probe's best score and whether its mate ranks first;
    unknown_best (U,): each unknown probe's best score."""
    if not len(unknown_best):
        raise PartialFaceError("DIR@FPIR needs unknown probes (identities with one image)")
    m = math.floor(fpir * len(unknown_best) + 1e-9)
    if m >= len(unknown_best):
        return float(np.mean(known_correct))
    t = np.sort(unknown_best)[::-1][m]
    return float(np.mean(known_correct & (known_best > t)))


def identification_metrics(
    gallery: np.ndarray, gallery_labels: np.ndarray, known: np.ndarray, known_labels: np.ndarray,
    unknown: np.ndarray, fpirs: Sequence[float] = FPIRS, ranks: Sequence[int] = RANKS,
    thresholds: dict[str, float] | None = None,
) -> dict[str, float]:
    """rank-1, CMC at ``ranks`` and DIR at ``fpirs`` (all in %) of probe embeddings ``known`` (P, D) with
    their identities and ``unknown`` (U, D) against ``gallery`` (G, D) (one template per identity);
    embeddings L2-normalised. ``thresholds`` {name: t}: also the DIR and FPIR (%) of the decision
    "score >= t" (``dir@t{name}``, ``fpir@t{name}``): a model's operating points used as they are."""
    if len(set(gallery_labels.tolist())) != len(gallery_labels):
        raise ValueError("one gallery template per identity")
    s_known = known @ gallery.T  # (P, G)
    col = {int(c): j for j, c in enumerate(gallery_labels.tolist())}
    mate_col = np.array([col[int(c)] for c in known_labels], dtype=np.int64)
    mate_score = s_known[np.arange(len(known)), mate_col]
    others = s_known.copy()
    others[np.arange(len(known)), mate_col] = -np.inf
    rank = 1 + (others >= mate_score[:, None]).sum(1)  # ties count against the probe
    best_known = s_known.max(1)
    best_unknown = (unknown @ gallery.T).max(1) if len(unknown) else np.zeros(0)
    out: dict[str, float] = {"rank1": float(np.mean(rank == 1) * 100)}
    for r in ranks:
        out[f"cmc{r}"] = float(np.mean(rank <= r) * 100)
    for x in fpirs:
        out[f"dir@{x:g}"] = dir_at_fpir(best_known, rank == 1, best_unknown, x) * 100
    for name, t in (thresholds or {}).items():
        out[f"dir@t{name}"] = float(np.mean((rank == 1) & (best_known >= t)) * 100)
        out[f"fpir@t{name}"] = float(np.mean(best_unknown >= t) * 100) if len(best_unknown) else float("nan")
    return out


def run_identify_benchmark(
    model: str, data: str | os.PathLike[str], out: str | os.PathLike[str], *, factors: Sequence[float] = (0.3,),
    parts: Sequence[str] = ("lEye", "rEye", "Nose", "Mouth"), centred: bool = False, device: str = "auto",
    batch_size: int = 128, workers: int = 2, progress: bool = True,
) -> dict[str, Any]:
    """Open-set identification of ``model`` on the aligned LFW-layout folder ``data`` (160x160 PNGs): a row per
    probe variant (holistic, then each part at each factor) with the split's sizes and the metrics; written to
    ``out``/identify.json and identify.md. Embeddings are cached in ``out``/embeddings (resumable)."""
    from partialface.data.folders import identity_folders
    from partialface.data.images import atomic_write_bytes
    from partialface.devices import resolve_device
    from partialface.evaluation.embed import cache_name, embed_dataset, load_embedder
    from partialface.geometry.partial import Variant
    from partialface.geometry.template import PARTS

    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise PartialFaceError(f"--parts {bad[0]}: choose from {', '.join(PARTS)}")
    embedder = load_embedder(model, resolve_device(device))  # a bad --model fails before the long work
    listing = identity_folders(data)
    if any(Path(rel).suffix.lower() != ".png" for rel, _ in listing.samples[:1]):
        from partialface.detect.dataset import align_dataset

        aligned = Path(out) / "aligned"  # raw photos: aligned once (resumable), then scored
        align_dataset(data, aligned, batch_size=32, workers=workers, device=device, progress=progress)
        listing = identity_folders(aligned)
        data = aligned
    split = openset_split(np.array([c for _, c in listing.samples]))
    if not len(split.gallery) or not len(split.unknown):
        raise PartialFaceError(f"{data}: needs identities with >= 2 images and identities with one image")
    keys = [rel for rel, _ in listing.samples]
    paths = [listing.root / k for k in keys]
    variants = [Variant()] + [Variant(p, f, centred) for p in parts for f in factors]  # type: ignore[arg-type]
    out_p = Path(out)
    E = embed_dataset(embedder, keys, paths, variants, out_p / "embeddings" / f"{cache_name(embedder.name)}.npz",
                      batch_size=batch_size, workers=workers, progress=progress)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    gallery = unit(E["holistic"][split.gallery])
    points = _operating_points(embedder.source)
    rows = []
    for v in variants:
        probes = unit(E[str(v)])
        kind = "holistic" if v.holistic else "partial"
        at = {k: t for k, t in points.threshold.get(kind, {}).items()} if points is not None else {}
        m = identification_metrics(gallery, split.gallery_labels, probes[split.known], split.known_labels,
                                   probes[split.unknown], thresholds=at)
        rows.append({"model": embedder.name, "probe": str(v), "gallery": len(split.gallery),
                     "known": len(split.known), "unknown": len(split.unknown), **m})
    result = {"convention": __doc__.split("The convention", 1)[1].strip() if __doc__ else "", "data": str(data),
              "rows": rows}
    out_p.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_p / "identify.json", json.dumps(result, indent=1).encode("utf-8"))
    atomic_write_bytes(out_p / "identify.md", identify_markdown(rows).encode("utf-8"))
    return result


def _operating_points(source: str) -> Any:
    """The operating points in a model file's metadata, or None."""
    from partialface.evaluation.calibrate import read_operating_points
    from partialface.training.checkpoint import load_weights

    path = Path(source)
    return read_operating_points(load_weights(path)[1]) if path.suffix == ".safetensors" else None


def identify_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as markdown tables (metrics in %): the search, then the model's operating points used as they
    are (holistic thresholds for whole probes, partial thresholds for partial probes)."""
    keys = ["rank1", *(f"cmc{r}" for r in RANKS[1:]), *(f"dir@{x:g}" for x in FPIRS)]
    head = "| model | probe | " + " | ".join(k.replace("dir@", "DIR@FPIR ") for k in keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 2)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['probe']} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")
    fars = sorted({k.removeprefix("dir@t") for r in rows for k in r if k.startswith("dir@t")}, reverse=True)
    if fars:
        lines += ["", "| model | probe | " + " | ".join(f"DIR / FPIR at t(FAR {f})" for f in fars) + " |",
                  "|" + "---|" * (len(fars) + 2)]
        for r in rows:
            cells = [f"{r[f'dir@t{f}']:.2f} / {r[f'fpir@t{f}']:.2f}" if f"dir@t{f}" in r else "" for f in fars]
            lines.append(f"| {r['model']} | {r['probe']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------------
# The open-set operating point of a gallery (issue #40): a false-positive identification rate over the gallery,
# turned into the per-comparison threshold for the gallery's current size.

#: the default false-positive identification rate of ``identify`` (facade, CLI and service)
DEFAULT_FPIR = 0.01


def per_comparison_far(fpir: float, comparisons: int) -> float:
    """The per-comparison false-accept rate that gives an unknown face the false-positive identification rate
    ``fpir`` against ``comparisons`` gallery entries: ``1 - (1 - fpir) ** (1 / comparisons)``.

    An unknown face is named when its best score passes the threshold; if its ``comparisons`` impostor scores
    were independent, P(best < t) = (1 - far) ** comparisons, hence the formula (computed as
    ``-expm1(log1p(-fpir) / comparisons)``, exact for tiny rates). The union bound ``fpir / comparisons`` is at
    most ``fpir / 2`` relatively stricter (0.5 % at FPIR 1 %): the difference is far below what the calibrated
    thresholds resolve, and the exact form stays right for a large ``fpir`` (at 50 %, ``fpir / N`` would be
    1.4x too strict)."""
    if not 0.0 < fpir < 1.0:
        raise PartialFaceError(f"--fpir {fpir:g}: give a rate in (0, 1), e.g. 0.01 (1 % of unknown faces named)")
    if comparisons < 1:
        raise PartialFaceError("the gallery is empty: nobody to compare with (enrol someone first)")
    return -math.expm1(math.log1p(-fpir) / comparisons)


@dataclass(frozen=True)
class RateThreshold:
    """A threshold for a false-accept rate that may lie between or beyond the calibrated ones: ``threshold``;
    ``far``: the rate asked for; ``far_used``: the calibrated rate whose threshold it is (None when interpolated
    between two of them); ``clamped``: the rate lay outside the calibrated ones and the nearest point was taken;
    ``how``: one sentence that says which."""

    threshold: float
    far: float
    far_used: float | None
    clamped: bool
    how: str


def threshold_between(far: float, at: Any, fars: Sequence[float] | None = None) -> RateThreshold:
    """The threshold for the per-comparison rate ``far``, from ``at(f)`` (the model's threshold at a calibrated
    rate ``f`` of ``fars``, default :data:`partialface.evaluation.calibrate.FARS`).

    At a calibrated rate: its threshold. Between two: linear in log10(FAR) between their thresholds (a cosine
    threshold is close to linear in log FAR over a decade; each decade was measured, so this never guesses beyond
    the data). Beyond the strictest rate: NOT extrapolated (nothing was measured there, and the impostor tail is
    where a guess fails): the strictest threshold, said so (the real FPIR is then higher than asked). Beyond the
    loosest: the loosest threshold, which is stricter than asked (said so too)."""
    from partialface.evaluation.calibrate import FARS

    grid = sorted(fars if fars is not None else FARS, reverse=True)  # loose to strict
    for f in grid:
        if math.isclose(far, f, rel_tol=1e-9):
            return RateThreshold(float(at(f)), far, f, False, f"the calibrated operating point at FAR {f:g}")
    if far > grid[0]:
        return RateThreshold(float(at(grid[0])), far, grid[0], True,
                             f"FAR {far:.2g} is looser than the loosest calibrated point; took FAR {grid[0]:g}'s "
                             "threshold (stricter than asked)")
    if far < grid[-1]:
        return RateThreshold(float(at(grid[-1])), far, grid[-1], True,
                             f"FAR {far:.2g} is below the strictest calibrated point; took FAR {grid[-1]:g}'s "
                             "threshold, not extrapolated (so unknown faces pass somewhat more often than asked)")
    hi = min(f for f in grid if f > far)  # the calibrated neighbours of far
    lo = max(f for f in grid if f < far)
    w = (math.log10(hi) - math.log10(far)) / (math.log10(hi) - math.log10(lo))
    t = (1 - w) * float(at(hi)) + w * float(at(lo))
    return RateThreshold(t, far, None, False, f"interpolated on log FAR between the calibrated points {hi:g} and "
                         f"{lo:g}")
