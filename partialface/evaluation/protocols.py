"""The PartialLFW benchmarks (spec §3): which image variants are compared on which pairs.

A :class:`Benchmark` is one (protocol, setting, part pair, factor). Its scored pairs are the LFW pairs,
used once (holistic, partial-same) or in both orders (partial-holistic, partial-cross): every pair
(a, b) gives (first(a), second(b)) and (first(b), second(a)), both in the pair's fold, where ``first``
is the first variant (holistic for partial-holistic, the first part for partial-cross) and ``second``
the second one. Parts and factors come from :mod:`partialface.geometry.template`.

Defaults (all 181 benchmarks): holistic once; then for each setting (non-centred, centred) and each of
the 9 factors: partial-holistic lEye/Nose/Mouth-holistic, partial-same lEye-lEye/Nose-Nose/Mouth-Mouth,
partial-cross lEye-rEye/lEye-Nose/lEye-Mouth/Nose-Mouth. A protocol's reported number is the mean
over its part combinations and factors (:func:`aggregate`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np

from partialface.data.lfw import Pair, PairsFile
from partialface.errors import PartialFaceError
from partialface.geometry.partial import Variant
from partialface.geometry.template import FACTORS, PARTS, Part

Protocol = Literal["holistic", "partial-holistic", "partial-same", "partial-cross"]
Setting = Literal["non-centred", "centred"]

#: The four protocols, in report order.
PROTOCOLS: tuple[Protocol, ...] = ("holistic", "partial-holistic", "partial-same", "partial-cross")
#: The two settings of the partial protocols, with their ``Variant.centred`` flag.
SETTINGS: tuple[Setting, ...] = ("non-centred", "centred")
CENTRED: dict[Setting, bool] = {"non-centred": False, "centred": True}
#: Pseudo-part naming the whole (aligned) face in a part pair.
HOLISTIC = "holistic"

_L, _R, _N, _M = PARTS  # lEye, rEye, Nose, Mouth (checked in tests against the published order)
#: Default part pairs per protocol, as (first image, second image). Partial-holistic: first image holistic.
DEFAULT_COMBOS: dict[Protocol, tuple[tuple[str, str], ...]] = {
    "holistic": ((HOLISTIC, HOLISTIC),),
    "partial-holistic": ((HOLISTIC, _L), (HOLISTIC, _N), (HOLISTIC, _M)),
    "partial-same": ((_L, _L), (_N, _N), (_M, _M)),
    "partial-cross": ((_L, _R), (_L, _N), (_L, _M), (_N, _M)),
}
#: The paper-style table's columns (results.md, report.html): (protocol, setting, header).
TABLE_COLUMNS: tuple[tuple[str, str | None, str], ...] = (
    ("holistic", None, "holistic"),
    ("partial-holistic", "non-centred", "NC p-hol"),
    ("partial-same", "non-centred", "NC p-same"),
    ("partial-cross", "non-centred", "NC p-cross"),
    ("partial-holistic", "centred", "C p-hol"),
    ("partial-same", "centred", "C p-same"),
    ("partial-cross", "centred", "C p-cross"),
)
#: Protocols that use every pair in both orders.
DOUBLED: frozenset[Protocol] = frozenset({"partial-holistic", "partial-cross"})


@dataclass(frozen=True)
class BenchmarkPairs:
    """The scored pairs of one benchmark, as arrays of length P (P = pairs, or 2 x pairs when doubled).

    Score of row r: cosine(embedding of image ``left_index[r]`` shown as ``left``,
    embedding of image ``right_index[r]`` shown as ``right``).
    """

    left: Variant
    right: Variant
    left_index: np.ndarray  # (P,) int64 rows of the image index
    right_index: np.ndarray  # (P,) int64
    same: np.ndarray  # (P,) bool
    fold: np.ndarray  # (P,) int64, the original pair's fold

    def __len__(self) -> int:
        return int(self.same.shape[0])


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: protocol, setting (None for holistic), part pair (first, second image), factor.

    ``pairs`` (the LFW pairs it scores) is excluded from equality and hashing.
    """

    protocol: Protocol
    setting: Setting | None
    parts: tuple[str, str]
    factor: float | None
    pairs: PairsFile = field(compare=False, repr=False)

    @property
    def doubled(self) -> bool:
        """Whether every pair is used in both orders."""
        return self.protocol in DOUBLED

    @property
    def combo(self) -> str:
        """Part pair as the spec names it: 'lEye-holistic', 'lEye-Nose', 'holistic'."""
        a, b = self.parts
        if self.protocol == "holistic":
            return HOLISTIC
        if a == HOLISTIC:
            return f"{b}-{HOLISTIC}"
        return f"{a}-{b}"

    @property
    def name(self) -> str:
        """Stable identifier, e.g. 'partial-cross/centred/lEye-Nose/0.25' or 'holistic'."""
        if self.protocol == "holistic":
            return HOLISTIC
        return f"{self.protocol}/{self.setting}/{self.combo}/{self.factor}"

    def _variant(self, part: str) -> Variant:
        if part == HOLISTIC:
            return Variant()
        assert self.setting is not None
        return Variant(cast(Part, part), self.factor, CENTRED[self.setting])

    @property
    def left(self) -> Variant:
        """How the first image of each scored pair is shown."""
        return self._variant(self.parts[0])

    @property
    def right(self) -> Variant:
        """How the second image of each scored pair is shown."""
        return self._variant(self.parts[1])

    @property
    def variants(self) -> tuple[Variant, Variant]:
        return self.left, self.right

    def __len__(self) -> int:
        return len(self.pairs) * (2 if self.doubled else 1)

    def scored_pairs(self, index: Mapping[str, int] | None = None) -> BenchmarkPairs:
        """The scored pairs as arrays; ``index`` maps image keys to embedding rows (default
        ``pairs.image_index()``). Doubled protocols give rows 2i = (a, b) and 2i + 1 = (b, a) for pair i.
        """
        idx = self.pairs.image_index() if index is None else index
        a, b, same, fold = _pair_arrays(self.pairs.pairs, idx)
        if self.doubled:
            left = np.stack([a, b], axis=1).reshape(-1)
            right = np.stack([b, a], axis=1).reshape(-1)
            same, fold = np.repeat(same, 2), np.repeat(fold, 2)
        else:
            left, right = a, b
        return BenchmarkPairs(self.left, self.right, left, right, same, fold)


def _pair_arrays(
    pairs: Sequence[Pair], index: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        a = np.fromiter((index[p.a] for p in pairs), dtype=np.int64, count=len(pairs))
        b = np.fromiter((index[p.b] for p in pairs), dtype=np.int64, count=len(pairs))
    except KeyError as e:
        raise PartialFaceError(
            f"image {e.args[0]} of the pairs has no embedding row; resolve or drop missing images first"
        ) from None
    same = np.fromiter((p.same for p in pairs), dtype=bool, count=len(pairs))
    fold = np.fromiter((p.fold for p in pairs), dtype=np.int64, count=len(pairs))
    return a, b, same, fold


def _check_combo(protocol: Protocol, combo: Sequence[str]) -> tuple[str, str]:
    """Validate a part pair for a protocol; partial-holistic accepts either order (holistic goes first)."""
    if len(combo) != 2:
        raise PartialFaceError(f"part combination {combo!r} must name two parts")
    a, b = str(combo[0]), str(combo[1])
    known = (*PARTS, HOLISTIC)
    for p in (a, b):
        if p not in known:
            choices = ", ".join(known)
            raise PartialFaceError(f"unknown part {p!r} in a {protocol} combination; choose from {choices}")
    if protocol == "holistic":
        ok = a == b == HOLISTIC
    elif protocol == "partial-holistic":
        if b == HOLISTIC:
            a, b = b, a
        ok = a == HOLISTIC and b != HOLISTIC
    elif protocol == "partial-same":
        ok = a == b != HOLISTIC
    else:
        ok = HOLISTIC not in (a, b) and a != b
    if not ok:
        raise PartialFaceError(f"part combination {'-'.join(combo)} does not fit protocol {protocol}")
    return a, b


def build_benchmarks(
    pairs: PairsFile,
    settings: Iterable[str] = SETTINGS,
    factors: Iterable[float] = FACTORS,
    protocols: Iterable[str] = PROTOCOLS,
    part_combos: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> list[Benchmark]:
    """Every requested benchmark, in report order (protocol, setting, combination, factor).

    Holistic appears once (no setting, no factor). ``part_combos`` overrides ``DEFAULT_COMBOS`` per protocol.
    Unknown names raise PartialFaceError naming the option and the valid choices.
    """
    sets = list(dict.fromkeys(settings))
    for s in sets:
        if s not in SETTINGS:
            raise PartialFaceError(f"unknown setting {s!r}; choose from {', '.join(SETTINGS)}")
    facs = list(dict.fromkeys(float(f) for f in factors))
    for f in facs:
        if not (0.0 < f <= 1.0):
            raise PartialFaceError(f"size factor {f} is out of range; use factors in (0, 1], e.g. {FACTORS}")
    protos = list(dict.fromkeys(protocols))
    for p in protos:
        if p not in PROTOCOLS:
            raise PartialFaceError(f"unknown protocol {p!r}; choose from {', '.join(PROTOCOLS)}")
    overrides = dict(part_combos or {})
    for p in overrides:
        if p not in PROTOCOLS:
            raise PartialFaceError(f"part combinations given for unknown protocol {p!r}")
    out: list[Benchmark] = []
    for proto in (cast(Protocol, p) for p in PROTOCOLS if p in protos):
        given = overrides.get(proto, DEFAULT_COMBOS[proto])
        combos = list(dict.fromkeys(_check_combo(proto, c) for c in given))
        if proto == "holistic":
            out.append(Benchmark("holistic", None, (HOLISTIC, HOLISTIC), None, pairs))
            continue
        for s in (cast(Setting, x) for x in SETTINGS if x in sets):
            for c in combos:
                for f in facs:
                    out.append(Benchmark(proto, s, c, f, pairs))
    return out


def required_variants(benchmarks: Iterable[Benchmark]) -> list[Variant]:
    """The distinct variants the benchmarks need (embed each image once per variant), first-use order."""
    seen: dict[Variant, None] = {}
    for b in benchmarks:
        seen.setdefault(b.left)
        seen.setdefault(b.right)
    return list(seen)


GroupKey = Literal["protocol", "setting", "combo", "factor"]


def aggregate(
    results: Iterable[tuple[Any, Mapping[str, float]]],
    by: Sequence[GroupKey] = ("protocol", "setting"),
) -> list[dict[str, object]]:
    """Mean of every metric over the benchmarks sharing the ``by`` fields (the spec's protocol number).

    ``results``: (benchmark, metrics) pairs; a benchmark is a :class:`Benchmark` or anything with the ``by``
    attributes.

    With the default ``by``, a partial protocol's row averages its combinations x factors (27 benchmarks
    for partial-holistic and partial-same, 36 for partial-cross) per setting; holistic is its own row.
    Each row: the ``by`` fields, ``benchmarks`` (how many were averaged), then the metric means.
    Rows keep first-appearance order.
    """
    groups: dict[tuple[object, ...], list[Mapping[str, float]]] = {}
    for bench, metrics in results:
        key = tuple(getattr(bench, k) for k in by)
        groups.setdefault(key, []).append(metrics)
    rows: list[dict[str, object]] = []
    for key, ms in groups.items():
        row: dict[str, object] = dict(zip(by, key, strict=True))
        row["benchmarks"] = len(ms)
        names = list(dict.fromkeys(n for m in ms for n in m))
        for n in names:
            vals = [float(m[n]) for m in ms if n in m]
            if len(vals) != len(ms):
                raise ValueError(f"metric {n!r} is missing for some benchmarks of group {key}")
            row[n] = float(np.mean(vals))
        rows.append(row)
    return rows
