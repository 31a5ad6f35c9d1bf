"""`partialface benchmark-merge`: a table run in pieces (factors, models) equals the table run at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_benchmark import _make_data, _save_tiny_model

from partialface.cli import main
from partialface.errors import PartialFaceError
from partialface.evaluation.benchmark import coverage_notes, run_benchmark
from partialface.evaluation.merge import merge_results, read_results
from partialface.geometry.template import FACTORS

KW: dict[str, Any] = dict(aligned=True, device="cpu", batch_size=16, workers=1, progress=False, report=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run at factors 0.3 and 0.5 of two models; the same as three pieces: (a, 0.3), (a, 0.5), (b, both)."""
    root = tmp_path_factory.mktemp("merge")
    data, pairs, _ = _make_data(root)
    a = _save_tiny_model(root / "a.safetensors")
    b = root / "b.safetensors"  # other weights: the first model's, scaled (a different embedding, same dim)
    from partialface.training.checkpoint import load_weights, save_weights

    tensors, meta = load_weights(a)
    save_weights(b, {k: v * 1.5 if v.is_floating_point() and v.dim() == 4 else v for k, v in tensors.items()}, meta)
    models = [f"a={a}", f"b={b}"]
    run_benchmark(models, data, pairs, root / "whole", factors=(0.3, 0.5), **KW)
    run_benchmark(models[:1], data, pairs, root / "a03", factors=(0.3,), **KW)
    run_benchmark(models[:1], data, pairs, root / "a05", factors=(0.5,), **KW)
    run_benchmark(models[1:], data, pairs, root / "b", factors=(0.3, 0.5), **KW)
    return {"root": root, "whole": root / "whole", "a03": root / "a03", "a05": root / "a05", "b": root / "b"}


def _json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())


def test_pieces_merge_to_the_whole_run(runs: dict[str, Path]) -> None:
    out = runs["root"] / "merged"
    assert main(["benchmark-merge", str(out), str(runs["a05"]), str(runs["a03"] / "results.json"),
                 str(runs["b"])]) == 0
    whole, merged = _json(runs["whole"]), _json(out)
    assert [m["name"] for m in merged["models"]] == ["a", "b"]
    key = lambda r: (r["model"], r["name"])  # noqa: E731
    assert sorted(map(key, merged["benchmarks"])) == sorted(map(key, whole["benchmarks"]))
    ref = {key(r): r for r in whole["benchmarks"]}
    for r in merged["benchmarks"]:  # holistic was scored in both of a's pieces: kept once
        for k in ("accuracy", "accuracy_std", "auc", "eer", "pairs"):
            assert r[k] == ref[key(r)][k]
    # each protocol row: the plain mean of its benchmarks (computed here from the whole run's rows)
    for p in merged["protocols"]:
        members = [r for r in whole["benchmarks"] if r["model"] == p["model"] and r["protocol"] == p["protocol"]
                   and r["setting"] == p["setting"]]
        assert p["benchmarks"] == len(members) == {"holistic": 1, "partial-cross": 8}.get(p["protocol"], 6)
        assert p["accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in members]), abs=1e-12)
        assert p["accuracy_std"] == pytest.approx(np.mean([r["accuracy_std"] for r in members]), abs=1e-12)
    assert len(merged["protocols"]) == len(whole["protocols"]) == 2 * 7
    assert (out / "results.md").read_text() == (runs["whole"] / "results.md").read_text()
    assert (out / "per_factor.csv").read_text().count("\n") == 1 + len(whole["benchmarks"])
    assert [p["benchmarks"] for p in merged["pieces"]] == [21, 21, 41]
    assert all(" cores" in p["machine"] for p in merged["pieces"]) and merged["differences"] == []

    # a merged file is a piece too: merging it with a piece it already holds changes nothing
    again = runs["root"] / "again"
    assert main(["benchmark-merge", str(again), str(out), str(runs["a03"])]) == 0
    assert _json(again)["protocols"] == merged["protocols"]


def test_results_md_says_when_it_is_not_the_full_partiallfw(runs: dict[str, Path]) -> None:
    md = (runs["a03"] / "results.md").read_text()
    assert "Not the full PartialLFW" in md
    assert "- a: every partial protocol averages 1 of PartialLFW's 9 factors (0.3)\n" in md
    rows = _json(runs["whole"])["benchmarks"]  # b's non-centred partial-same without its mouth pairs at 0.5
    cut = [r for r in rows if not (r["model"] == "b" and r["name"] == "partial-same/non-centred/Mouth-Mouth/0.5")]
    assert sorted(coverage_notes(cut)) == sorted([
        "a: every partial protocol averages 2 of PartialLFW's 9 factors (0.3, 0.5)",
        "b: partial-holistic/non-centred averages 6 of PartialLFW's 27 benchmarks (factors 0.3, 0.5)",
        "b: partial-same/non-centred averages 5 of PartialLFW's 27 benchmarks (factors 0.3, 0.5)",
        "b: partial-cross/non-centred averages 8 of PartialLFW's 36 benchmarks (factors 0.3, 0.5)",
        "b: partial-holistic/centred averages 6 of PartialLFW's 27 benchmarks (factors 0.3, 0.5)",
        "b: partial-same/centred averages 6 of PartialLFW's 27 benchmarks (factors 0.3, 0.5)",
        "b: partial-cross/centred averages 8 of PartialLFW's 36 benchmarks (factors 0.3, 0.5)"])
    full = [dict(r, factor=f) for r in rows if r["model"] == "a" and r["factor"] == 0.3 for f in FACTORS]
    assert coverage_notes(full + [r for r in rows if r["protocol"] == "holistic"]) == []


def test_pieces_that_cannot_be_merged_are_refused(runs: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a03 = _json(runs["a03"])
    bad = dict(a03, benchmarks=[dict(r, accuracy=r["accuracy"] + 1.0) if r["name"] == "holistic" else r
                                for r in a03["benchmarks"]])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(PartialFaceError, match=r"bad.json: a holistic was scored differently in .*a05"):
        merge_results([read_results(runs["a05"]), read_results(tmp_path / "bad.json")])
    # pieces made on two processors may differ in the last bits: a stated tolerance keeps the first, and says so
    merged = merge_results([read_results(runs["a05"]), read_results(tmp_path / "bad.json")], tolerance=1.5)
    assert [(d["name"], d["difference"]) for d in merged["differences"]] == [("holistic", pytest.approx(1.0))]
    kept = next(r for r in merged["benchmarks"] if r["name"] == "holistic")
    assert kept["accuracy"] == next(r for r in a03["benchmarks"] if r["name"] == "holistic")["accuracy"]
    (tmp_path / "conv.json").write_text(json.dumps(dict(a03, convention="best threshold on the test pairs")))
    with pytest.raises(PartialFaceError, match=r"conv\.json: scored with another convention"):
        merge_results([read_results(runs["a05"]), read_results(tmp_path / "conv.json")])
    other = dict(a03, models=[dict(m, embedding_dim=64) for m in a03["models"]])
    (tmp_path / "dim.json").write_text(json.dumps(other))
    with pytest.raises(PartialFaceError, match=r"model 'a' differs .*embedding_dim"):
        merge_results([read_results(runs["a05"]), read_results(tmp_path / "dim.json")])
    (tmp_path / "pairs.json").write_text(json.dumps(dict(a03, dropped_pairs=3)))
    with pytest.raises(PartialFaceError, match="other pairs"):
        merge_results([read_results(runs["a05"]), read_results(tmp_path / "pairs.json")])
    (tmp_path / "broken.json").write_text('{"convention": ')
    (tmp_path / "other.json").write_text('{"scores": []}')
    for arg, msg in ((tmp_path / "broken.json", "broken.json: not a readable results.json"),
                     (tmp_path / "other.json", "other.json: not a benchmark results.json"),
                     (tmp_path / "none", "none: no such file"),
                     (runs["a03"], "holds one of the pieces")):
        out = runs["a03"] if arg == runs["a03"] else tmp_path / "out"
        assert main(["benchmark-merge", str(out), str(runs["a05"]), str(arg)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert main(["benchmark-merge", str(tmp_path / "out"), str(runs["a05"]), "--tolerance", "-1"]) == 2
    assert "--tolerance must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written when a piece or an option is refused


def test_models_option_keeps_the_named_models_in_its_order(runs: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--models b,a: the whole run's two models, b first; --models b: b alone, every benchmark as scored."""
    out = tmp_path / "ba"
    assert main(["benchmark-merge", str(out), str(runs["whole"]), "--models", "b,a"]) == 0
    merged = _json(out)
    assert [m["name"] for m in merged["models"]] == ["b", "a"]
    assert list(dict.fromkeys(p["model"] for p in merged["protocols"])) == ["b", "a"]
    assert main(["benchmark-merge", str(tmp_path / "b"), str(runs["a03"]), str(runs["whole"]), "--models", "b"]) == 0
    only_b = _json(tmp_path / "b")
    whole_b = [r for r in _json(runs["whole"])["benchmarks"] if r["model"] == "b"]
    assert [m["name"] for m in only_b["models"]] == ["b"]
    assert sorted(r["name"] for r in only_b["benchmarks"]) == sorted(r["name"] for r in whole_b)
    assert [p["path"] for p in only_b["pieces"]] == [str(runs["whole"] / "results.json")]  # a03 has no b
    for args, msg in ((["--models", "b,c"], "--models: no piece scored 'c'"),
                      (["--models", "a,a"], "give distinct model names")):
        assert main(["benchmark-merge", str(tmp_path / "bad"), str(runs["whole"]), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "bad").exists()


def _row(model: str, protocol: str, setting: str | None, factor: float | None, acc: float,
         std: float) -> dict[str, Any]:
    parts = ["holistic", "holistic"] if protocol == "holistic" else ["Nose", "holistic"]
    name = "holistic" if protocol == "holistic" else f"{protocol}/{setting}/Nose-holistic/{factor}"
    return {"model": model, "name": name, "protocol": protocol, "setting": setting, "parts": parts,
            "factor": factor, "pairs": 10, "accuracy": acc, "accuracy_std": std, "auc": 0.5, "eer": 0.5,
            "tar_far_1e3": 0.0, "tar_far_1e2": 0.0}


def test_compare_models_uses_the_shared_benchmarks_and_the_larger_spread(tmp_path: Path) -> None:
    """benchmarks/compare_models.py: A scored at factors 0.3 and 0.5, B at 0.3 only, in two files; the margins
    are taken at 0.3 alone (hand-computed), against the larger fold std of the two."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compare_models", Path(__file__).resolve().parents[1] / "benchmarks" / "compare_models.py")
    assert spec is not None and spec.loader is not None
    cm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cm)
    common = {"convention": "c", "pairs_file": "pairs.txt", "dropped_pairs": 0}
    model = {"embedding_dim": 4, "flip": False, "autocast": "none", "infer": "eager"}
    ra = {**common, "models": [{"name": "A", **model}], "benchmarks": [
        _row("A", "holistic", None, None, 99.0, 0.5),
        _row("A", "partial-holistic", "non-centred", 0.3, 90.0, 1.0),
        _row("A", "partial-holistic", "non-centred", 0.5, 50.0, 9.0)]}
    rb = {**common, "models": [{"name": "B", **model}], "benchmarks": [
        _row("B", "holistic", None, None, 99.2, 0.4),
        _row("B", "partial-holistic", "non-centred", 0.3, 88.5, 1.2)]}
    for name, res in (("a", ra), ("b", rb)):
        (tmp_path / f"{name}.json").write_text(json.dumps(res))
    results = [read_results(tmp_path / "a.json"), read_results(tmp_path / "b.json")]
    rows, factors = cm.compare(results, "A", "B")
    assert factors == [0.3]
    got = {r["column"]: (round(r["diff"], 9), r["spread"], r["verdict"]) for r in rows}
    assert got == {"holistic": (-0.2, 0.5, "inside"), "NC p-hol": (1.5, 1.2, "above")}
    rows, _ = cm.compare(results, "B", "A")
    assert [r["verdict"] for r in rows] == ["inside", "below"]
    assert cm.main([str(tmp_path / "a.json"), "--pair", "A:C"]) == 2  # an unknown model: one line, rc 2
