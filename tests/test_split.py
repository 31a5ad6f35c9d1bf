"""``partialface split`` and identity-disjoint pairs from identities with uneven image counts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from partialface.cli import main
from partialface.data.lfw import read_pairs, resolve_images
from partialface.data.pairs import identity_disjoint_pairs
from partialface.errors import PartialFaceError
from partialface.jobs.split import split_dataset


def _counts(n: int = 40) -> dict[str, int]:
    return {f"id{i:03d}": 1 + (i * 7) % 6 for i in range(n)}  # 1..6 images, some identities with one


def test_pairs_folds_identity_disjoint_distinct_and_in_range() -> None:
    counts = _counts()
    folds = identity_disjoint_pairs(counts, per_fold=5, seed=3)
    assert [k for k, _, _ in folds] == list(range(10))
    people = []
    for _, same, diff in folds:
        assert len(same) == len(set(same)) == 5 and len(diff) == len(set(diff)) == 5
        for n, i, j in same:
            assert 1 <= i < j <= counts[n]
        for a, i, b, j in diff:
            assert a != b and 1 <= i <= counts[a] and 1 <= j <= counts[b]
        people.append({n for n, _, _ in same} | {x for a, _, b, _ in diff for x in (a, b)})
    for p, q in itertools.combinations(people, 2):  # brute force: no identity in two folds
        assert not p & q
    assert identity_disjoint_pairs(counts, 5, seed=3) == folds
    assert identity_disjoint_pairs(counts, 5, seed=4) != folds


def test_pairs_errors() -> None:
    with pytest.raises(PartialFaceError, match="too few"):
        identity_disjoint_pairs(_counts(19), 1, seed=0)
    # a fold of 4 identities with 2 images each holds 4 same pairs at most
    with pytest.raises(PartialFaceError, match="more than fold"):
        identity_disjoint_pairs({f"p{i}": 2 for i in range(40)}, 5, seed=0)


def _tree(root: Path, counts: dict[str, int]) -> None:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for k in range(n):
            (root / name / f"{900 - k:06d}.png").write_bytes(f"{name}:{k}".encode())


def test_split_layout_links_and_pairs(tmp_path: Path) -> None:
    counts = {f"{i:05d}": 2 + i % 4 for i in range(60)}
    counts["loner"] = 1  # fewer than --min-images: in neither part
    src, out = tmp_path / "src", tmp_path / "out"
    _tree(src, counts)
    c = split_dataset(src, out, holdout=25, per_fold=2, seed=1)
    train = {p.name for p in (out / "train").iterdir()}
    test = {p.name for p in (out / "test").iterdir() if p.is_dir()}
    assert len(test) == c["test_identities"] == 25 and len(train) == c["train_identities"] == 35
    assert not train & test and train | test == set(counts) - {"loner"}
    assert c["test_images"] == sum(counts[n] for n in test) and c["pairs"] == 40
    # LFW layout: images numbered from 1 in sorted source order, each a link to its source file
    for name in test:
        sources = sorted((src / name).iterdir())
        for k, source in enumerate(sources, 1):
            assert (out / "test" / name / f"{name}_{k:04d}.png").read_bytes() == source.read_bytes()
    rows = (out / "test" / "names.tsv").read_text().splitlines()[1:]
    assert len(rows) == c["test_images"]
    for row in rows:
        lfw, rel = row.split("\t")
        assert (out / "test" / lfw).read_bytes() == (src / rel).read_bytes()
    pairs = read_pairs(out / "test" / "pairs.txt")
    assert len(pairs.pairs) == 40
    assert len(resolve_images(pairs, out / "test")) == len(pairs.images())
    # rerun: same result; another split into the same OUT is refused
    assert split_dataset(src, out, holdout=25, per_fold=2, seed=1) == c
    with pytest.raises(PartialFaceError, match="different split"):
        split_dataset(src, out, holdout=25, per_fold=2, seed=2)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    _tree(src, {f"{i:05d}": 3 for i in range(30)})
    assert main(["split", str(src), str(tmp_path / "o"), "--holdout", "30"]) == 2
    assert main(["split", str(src), str(src / "inside")]) == 2
    assert main(["split", str(tmp_path / "nope"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("partialface: error: ") for e in err)
    assert "--holdout 30" in err[0] and "inside SRC" in err[1] and "nope" in err[2]
    assert main(["split", str(src), str(tmp_path / "o"), "--holdout", "20", "--pairs-per-fold", "1"]) == 0
    assert "20 identities" in capsys.readouterr().out
