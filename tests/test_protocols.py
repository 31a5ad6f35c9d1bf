"""PartialLFW benchmark definitions (spec §3): which variants, which pairs, how many, which folds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from partialface.data.lfw import Pair, PairsFile, read_pairs
from partialface.errors import PartialFaceError
from partialface.evaluation import (
    DEFAULT_COMBOS,
    HOLISTIC,
    PROTOCOLS,
    SETTINGS,
    Benchmark,
    aggregate,
    build_benchmarks,
    required_variants,
)
from partialface.geometry.partial import Variant
from partialface.geometry.template import FACTORS, PARTS

# The spec's §3 combinations, written out as the spec names them (the independent reference).
SPEC_COMBOS = {
    "holistic": {"holistic"},
    "partial-holistic": {"lEye-holistic", "Nose-holistic", "Mouth-holistic"},
    "partial-same": {"lEye-lEye", "Nose-Nose", "Mouth-Mouth"},
    "partial-cross": {"lEye-rEye", "lEye-Nose", "lEye-Mouth", "Nose-Mouth"},
}


def synthetic_pairs(folds: int, per_fold: int) -> PairsFile:
    pairs = []
    for k in range(folds):
        img = [f"S{k}/S{k}_{i + 1:04d}.jpg" for i in range(per_fold + 1)]
        pairs += [Pair(img[i], img[i + 1], True, k) for i in range(per_fold)]
        pairs += [Pair(img[i], f"D{i}/D{i}_0001.jpg", False, k) for i in range(per_fold)]
    return PairsFile(tuple(pairs), folds, per_fold)


def find(benches: list[Benchmark], **attrs: object) -> Benchmark:
    """The first benchmark whose attributes equal ``attrs``."""
    return next(b for b in benches if all(getattr(b, k) == v for k, v in attrs.items()))


def check_counts(pf: PairsFile) -> None:
    n, folds = len(pf), pf.folds
    benches = build_benchmarks(pf)
    n_fac, n_set = len(FACTORS), len(SETTINGS)
    by_proto = Counter(b.protocol for b in benches)
    assert by_proto == {
        "holistic": 1,
        "partial-holistic": 3 * n_fac * n_set,
        "partial-same": 3 * n_fac * n_set,
        "partial-cross": 4 * n_fac * n_set,
    }
    assert len(benches) == 1 + 10 * n_fac * n_set == 181
    expected_len = {"holistic": n, "partial-holistic": 2 * n, "partial-same": n, "partial-cross": 2 * n}
    for b in benches:
        sp = b.scored_pairs()
        assert len(sp) == len(b) == expected_len[b.protocol]
        fold_sizes = Counter(sp.fold.tolist())
        per = expected_len[b.protocol] // folds
        assert fold_sizes == dict.fromkeys(range(folds), per)
        assert sp.same.sum() == expected_len[b.protocol] // 2
        assert sp.left == b.left and sp.right == b.right


@pytest.mark.lfw
def test_counts_on_real_pairs(lfw_root: Path) -> None:
    pf = read_pairs(lfw_root / "pairs.txt")
    check_counts(pf)
    benches = build_benchmarks(pf)
    assert len(benches[0].scored_pairs()) == 6000
    ph = next(b for b in benches if b.protocol == "partial-holistic").scored_pairs()
    assert len(ph) == 12000 and Counter(ph.fold.tolist())[3] == 1200


def test_counts_on_synthetic_pairs() -> None:
    check_counts(synthetic_pairs(3, 4))  # 24 pairs: 48 doubled, folds of 16
    check_counts(synthetic_pairs(1, 2))  # a single fold
    check_counts(synthetic_pairs(7, 1))


def test_combos_match_the_spec() -> None:
    benches = build_benchmarks(synthetic_pairs(2, 1))
    for proto in PROTOCOLS:
        assert {b.combo for b in benches if b.protocol == proto} == SPEC_COMBOS[proto]
    # the right eye appears only in partial-cross
    assert {b.protocol for b in benches if "rEye" in b.parts} == {"partial-cross"}
    # every partial protocol covers both settings and all 9 factors for each combination
    for proto in PROTOCOLS[1:]:
        for combo in SPEC_COMBOS[proto]:
            got = {(b.setting, b.factor) for b in benches if b.protocol == proto and b.combo == combo}
            assert got == {(s, f) for s in ("non-centred", "centred") for f in FACTORS}
    assert set(DEFAULT_COMBOS) == set(PROTOCOLS)


def test_variants_of_each_image() -> None:
    benches = build_benchmarks(synthetic_pairs(2, 1))
    hol = find(benches, protocol="holistic")
    assert (hol.setting, hol.factor, hol.left, hol.right) == (None, None, Variant(), Variant())
    assert hol.name == "holistic"
    b = find(benches, protocol="partial-holistic", setting="centred", combo="Nose-holistic")
    assert b.left == Variant() and b.right == Variant("Nose", b.factor, True)  # first image holistic
    c = find(benches, protocol="partial-cross", setting="non-centred", combo="lEye-Mouth", factor=0.25)
    assert (c.left, c.right) == (Variant("lEye", 0.25, False), Variant("Mouth", 0.25, False))
    assert c.name == "partial-cross/non-centred/lEye-Mouth/0.25"
    s = find(benches, protocol="partial-same", setting="centred", factor=0.5)
    assert s.left == s.right and s.left.centred and s.left.factor == 0.5
    # each image is embedded once per variant: 1 holistic + 4 parts x 9 factors x 2 settings
    req = required_variants(benches)
    assert len(req) == len(set(req)) == 1 + len(PARTS) * len(FACTORS) * 2 == 73
    assert set(req) == {Variant()} | {Variant(p, f, c) for p in PARTS for f in FACTORS for c in (False, True)}
    only_same = required_variants(build_benchmarks(synthetic_pairs(2, 1), protocols=["partial-same"]))
    assert {v.part for v in only_same} == {"lEye", "Nose", "Mouth"} and Variant() not in only_same


def test_doubled_orders_by_hand() -> None:
    pf = synthetic_pairs(3, 2)
    idx = pf.image_index()
    keys = pf.images()
    for proto, combo in (("partial-holistic", "Mouth-holistic"), ("partial-cross", "Nose-Mouth")):
        b = find(build_benchmarks(pf, protocols=[proto]), combo=combo, setting="non-centred")
        sp = b.scored_pairs(idx)
        got = Counter(
            (keys[i], keys[j], bool(s), int(f))
            for i, j, s, f in zip(sp.left_index, sp.right_index, sp.same, sp.fold, strict=True)
        )
        want: Counter[tuple[str, str, bool, int]] = Counter()
        for p in pf.pairs:
            want[(p.a, p.b, p.same, p.fold)] += 1  # (first(a), second(b))
            want[(p.b, p.a, p.same, p.fold)] += 1  # (first(b), second(a)), same fold
        assert got == want
        first = {"partial-holistic": None, "partial-cross": "Nose"}[proto]
        assert sp.left.part == first and sp.right.part == "Mouth"
    # single-order protocols keep file order
    same = next(b for b in build_benchmarks(pf, protocols=["partial-same"])).scored_pairs(idx)
    assert [keys[i] for i in same.left_index] == [p.a for p in pf.pairs]
    assert [keys[i] for i in same.right_index] == [p.b for p in pf.pairs]
    assert same.left_index.dtype == np.int64 and same.same.dtype == np.bool_


def test_custom_index_and_missing_image() -> None:
    pf = synthetic_pairs(2, 1)
    keys = pf.images()
    rev = {k: len(keys) - 1 - i for i, k in enumerate(keys)}
    sp = build_benchmarks(pf, protocols=["holistic"])[0].scored_pairs(rev)
    assert sp.left_index.tolist() == [rev[p.a] for p in pf.pairs]
    with pytest.raises(PartialFaceError, match="no embedding row"):
        build_benchmarks(pf, protocols=["holistic"])[0].scored_pairs({})


def test_selection_and_errors() -> None:
    pf = synthetic_pairs(2, 1)
    sel = build_benchmarks(pf, settings=["centred"], factors=[0.3], protocols=["partial-cross", "holistic"])
    assert [b.name for b in sel] == ["holistic"] + [
        f"partial-cross/centred/{c}/0.3" for c in ("lEye-rEye", "lEye-Nose", "lEye-Mouth", "Nose-Mouth")
    ]
    combos = {"partial-holistic": [("rEye", HOLISTIC)]}  # either order; holistic goes first
    custom = build_benchmarks(pf, factors=[0.1], protocols=["partial-holistic"], part_combos=combos)
    assert [(b.parts, b.combo) for b in custom] == [((HOLISTIC, "rEye"), "rEye-holistic")] * 2
    for kwargs, needle in [
        ({"protocols": ["partial-foo"]}, "unknown protocol"),
        ({"settings": ["centered"]}, "unknown setting"),
        ({"factors": [0.0]}, "out of range"),
        ({"part_combos": {"partial-same": [("lEye", "Nose")]}}, "does not fit protocol partial-same"),
        ({"part_combos": {"partial-cross": [("Nose", "Nose")]}}, "does not fit"),
        ({"part_combos": {"partial-cross": [("Nose", HOLISTIC)]}}, "does not fit"),
        ({"part_combos": {"partial-holistic": [("Nose", "Mouth")]}}, "does not fit"),
        ({"part_combos": {"partial-cross": [("Ear", "Nose")]}}, "unknown part 'Ear'"),
        ({"part_combos": {"cross": [("lEye", "Nose")]}}, "unknown protocol 'cross'"),
    ]:
        with pytest.raises(PartialFaceError, match=needle):
            build_benchmarks(pf, **kwargs)  # type: ignore[arg-type]


def test_benchmark_identity_ignores_pairs() -> None:
    a = build_benchmarks(synthetic_pairs(2, 1))
    b = build_benchmarks(synthetic_pairs(3, 2))
    assert a == b and len({*a, *b}) == 181
    assert isinstance(a[0], Benchmark)


def test_aggregate_means_per_protocol_and_setting() -> None:
    benches = build_benchmarks(synthetic_pairs(2, 1))
    results = [
        (
            b,
            {
                "accuracy": b.factor if b.factor is not None else 1.0,
                "left_eye_first": float(b.parts[0] == "lEye"),
                "centred": float(b.setting == "centred"),
            },
        )
        for b in benches
    ]
    rows = {(r["protocol"], r["setting"]): r for r in aggregate(results)}
    assert set(rows) == {("holistic", None)} | {(p, s) for p in PROTOCOLS[1:] for s in SETTINGS}
    assert rows[("holistic", None)]["benchmarks"] == 1 and rows[("holistic", None)]["accuracy"] == 1.0
    for s in SETTINGS:
        assert rows[("partial-holistic", s)]["benchmarks"] == 27
        assert rows[("partial-same", s)]["benchmarks"] == 27
        assert rows[("partial-cross", s)]["benchmarks"] == 36
        for p in PROTOCOLS[1:]:
            assert rows[(p, s)]["accuracy"] == pytest.approx(0.3)  # mean of 0.1 .. 0.5
            assert rows[(p, s)]["centred"] == (1.0 if s == "centred" else 0.0)
        # lEye first: 0 of 3 holistic-first combos, 1 of 3 same combos, 3 of 4 cross combos
        assert rows[("partial-holistic", s)]["left_eye_first"] == 0.0
        assert rows[("partial-same", s)]["left_eye_first"] == pytest.approx(1 / 3)
        assert rows[("partial-cross", s)]["left_eye_first"] == pytest.approx(0.75)
    per_factor = aggregate(results, by=("protocol", "factor"))
    row = next(r for r in per_factor if r["protocol"] == "partial-cross" and r["factor"] == 0.2)
    assert row["benchmarks"] == 8 and row["accuracy"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="missing"):
        aggregate([(benches[1], {"a": 1.0}), (benches[2], {"b": 1.0})])
