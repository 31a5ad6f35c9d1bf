"""The occlusion suite (partialface.evaluation.occluded): its numbers recomputed from the faces by hand, the face
in front of each image, the cache, and the command's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_benchmark import _make_data, _save_tiny_model

import partialface.evaluation.occluded as occluded
from partialface.cli import main
from partialface.data.images import read_image
from partialface.data.lfw import read_pairs
from partialface.geometry.occlude import OccluderBank
from partialface.metrics import score_benchmark
from partialface.models.framing import to_model_input
from partialface.training.checkpoint import load_model


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("occ")
    data, pairs_file, _ = _make_data(root)
    model = _save_tiny_model(root / "model.safetensors")
    out = root / "out"
    assert main(["benchmark-occluded", "--model", f"tiny={model}", "--data", str(data), "--pairs", str(pairs_file),
                 "--out", str(out), "--kinds", "mask,face", "--coverages", "0.2,0.4", "--looks", "5",
                 "--device", "cpu", "--workers", "1", "--batch-size", "8", "--no-progress"]) == 0
    return {"data": data, "pairs": pairs_file, "model": model, "out": out}


def test_the_face_in_front_is_another_identity_half_the_list_away() -> None:
    keys = [f"id{i // 3}/x{i}" for i in range(12)]
    got = occluded._others(keys)
    for i, j in enumerate(got):
        assert keys[j].split("/")[0] != keys[i].split("/")[0]
        k = (i + 6) % 12  # the first image at or after half the list away with another identity
        while keys[k].split("/")[0] == keys[i].split("/")[0]:
            k = (k + 1) % 12
        assert j == k


def test_numbers_recomputed_by_hand(suite: dict) -> None:
    res = json.loads((suite["out"] / "occluded.json").read_text())
    rows = {(r["protocol"], r["kind"], r["coverage"]): r for r in res["rows"]}
    assert len(rows) == 2 * 2 * 2 + 1 and (suite["out"] / "occluded_accuracy_vs_coverage.png").is_file()
    pairs = read_pairs(suite["pairs"])
    keys = pairs.images()
    faces = np.stack([read_image(suite["data"] / (k.rsplit(".", 1)[0] + ".png")) for k in keys])
    model = load_model(suite["model"])

    def embed(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            f = model(to_model_input(torch.from_numpy(x), model.config.input_size)).f
        return torch.nn.functional.normalize(f, dim=1).numpy()

    idx = pairs.image_index()
    a = np.array([idx[p.a] for p in pairs.pairs])
    b = np.array([idx[p.b] for p in pairs.pairs])
    same = np.array([p.same for p in pairs.pairs])
    fold = np.array([p.fold for p in pairs.pairs])
    hol = embed(faces)
    for kind in ("mask", "face"):
        bank = OccluderBank(kind, 0.4, looks=5, seed=0)
        front = faces[occluded._others(keys)] if kind == "face" else None
        occ = embed(bank.apply(faces, np.arange(len(faces)), front))  # image i wears look i % 5
        s = np.concatenate([(occ[a] * hol[b]).sum(1), (hol[a] * occ[b]).sum(1)])
        want = score_benchmark(s, np.concatenate([same, same]), np.concatenate([fold, fold]))
        got = rows[("occluded-holistic", kind, 0.4)]
        assert got["accuracy"] == pytest.approx(want.accuracy, abs=1e-6) and got["pairs"] == 2 * len(a)
        want2 = score_benchmark((occ[a] * occ[b]).sum(1), same, fold)
        assert rows[("occluded-occluded", kind, 0.4)]["accuracy"] == pytest.approx(want2.accuracy, abs=1e-6)
    assert "**mean over kinds**" in (suite["out"] / "occluded.md").read_text()


def test_second_run_reuses_the_cache(suite: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("embedded again")

    monkeypatch.setattr(occluded, "_embed_occluded", fail)
    assert main(["benchmark-occluded", "--model", f"tiny={suite['model']}", "--data", str(suite["data"]),
                 "--pairs", str(suite["pairs"]), "--out", str(suite["out"]), "--kinds", "mask", "--coverages", "0.2",
                 "--looks", "5", "--device", "cpu", "--workers", "1", "--no-progress"]) == 0


def test_another_inference_path_embeds_again(suite: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--infer bf16 is other numbers: the float32 cache is not reused; the embeddings stay close."""
    out = tmp_path / "out"
    (out / "embeddings").mkdir(parents=True)
    for f in (suite["out"] / "embeddings").iterdir():
        (out / "embeddings" / f.name).write_bytes(f.read_bytes())
    calls = []
    real = occluded._embed_occluded
    monkeypatch.setattr(occluded, "_embed_occluded", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(["benchmark-occluded", "--model", f"tiny={suite['model']}", "--data", str(suite["data"]),
                 "--pairs", str(suite["pairs"]), "--out", str(out), "--kinds", "mask", "--coverages", "0.4",
                 "--looks", "5", "--device", "cpu", "--workers", "1", "--infer", "bf16", "--no-progress"]) == 0
    assert calls == [1]
    name = "tiny-occluded.npz"
    with np.load(suite["out"] / "embeddings" / name) as z32, np.load(out / "embeddings" / name) as z16:
        a, b = z32["mask/0.4"], z16["mask/0.4"]
    cos = (a * b).sum(1)
    assert not np.array_equal(a, b) and cos.min() > 0.99


def test_errors(suite: dict, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["benchmark-occluded", "--model", f"tiny={suite['model']}", "--data", str(suite["data"]), "--pairs",
            str(suite["pairs"]), "--out", str(suite["out"]), "--no-progress"]
    for extra, message in ((["--kinds", "helmet"], "--kinds helmet"), (["--coverages", "1.5"], "--coverages"),
                           (["--looks", "0"], "--looks 0")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main([*base[:3], "--data", str(Path(suite["data"]) / "nope"), *base[5:]]) == 2
    assert "nope" in capsys.readouterr().err


def test_reproduce_script_checks_the_documented_tables(suite: dict, tmp_path: Path) -> None:
    """benchmarks/reproduce_occluded.py recomputes the suite from the caches: a document with its tables passes,
    one number changed by 0.01 fails."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_occluded.py"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(suite["out"]), *extra], capture_output=True,
                              text=True, timeout=300)

    first = run()
    assert first.returncode == 0 and "— ok" in first.stdout, first.stdout + first.stderr
    tables = first.stdout.split("\nlargest")[0]
    doc = tmp_path / "doc.md"
    doc.write_text(f"## Occluders\n{tables}\n", encoding="utf-8")
    assert run("--doc", str(doc), "--section", "Occluders").returncode == 0
    row = next(line for line in tables.splitlines() if line.startswith("| tiny |"))
    cells = row.split(" | ")
    cells[2] = f"{float(cells[2]) + 0.01:.2f}"
    doc.write_text(f"## Occluders\n{tables.replace(row, ' | '.join(cells))}\n", encoding="utf-8")
    bad = run("--doc", str(doc), "--section", "Occluders")
    assert bad.returncode == 1 and "MISMATCH" in bad.stdout


def test_names_with_a_dot_keep_their_own_caches(suite: dict, tmp_path: Path) -> None:
    """"m-p0" and "m-p0.5" each get their files (a suffix swap would make both use "m-p0.npz")."""
    out = tmp_path / "out"
    assert main(["benchmark-occluded", "--model", f"m-p0={suite['model']}", "--model", f"m-p0.5={suite['model']}",
                 "--data", str(suite["data"]), "--pairs", str(suite["pairs"]), "--out", str(out), "--kinds", "mask",
                 "--coverages", "0.2", "--looks", "5", "--device", "cpu", "--workers", "1", "--no-progress"]) == 0
    names = {f.name for f in (out / "embeddings").iterdir()}
    assert {"m-p0.npz", "m-p0.5.npz", "m-p0-occluded.npz", "m-p0.5-occluded.npz"} <= names, names
