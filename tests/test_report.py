"""partialface.evaluation.report: figures and report.html from a small fake benchmark output folder."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from partialface.data.lfw import Pair, PairsFile
from partialface.errors import PartialFaceError
from partialface.evaluation.protocols import aggregate, build_benchmarks
from partialface.evaluation.report import ATTENTION_VARIANTS, MAX_ATTENTION_FACES, write_report
from partialface.geometry.template import visible_fraction
from partialface.metrics import score_benchmark
from partialface.models import create_model

MODELS = ("ours-tiny", "resnet41 tiny")  # a space: the file names must be sanitised
FACTORS = (0.3, 0.5, 0.7)
CONVENTION = "score = cosine; threshold chosen on the other folds <b>not bold</b>"


def _fake_pairs(folds: int = 4, per_fold: int = 12) -> PairsFile:
    pairs = []
    for f in range(folds):
        for i in range(per_fold):
            n = f * per_fold + i
            same = i % 2 == 0
            a = f"P{n}/P{n}_0001.jpg"
            b = f"P{n}/P{n}_0002.jpg" if same else f"Q{n}/Q{n}_0001.jpg"
            pairs.append(Pair(a, b, same, f))
    return PairsFile(tuple(pairs), folds, per_fold)


def _vis(bench_parts: tuple[str, str], factor: float | None) -> float:
    parts = [p for p in bench_parts if p != "holistic"]
    if factor is None or not parts:
        return 1.0
    return float(np.mean([visible_fraction(p, factor) for p in parts]))  # type: ignore[arg-type]


def make_fake_benchmark(out: Path, models: tuple[str, ...] = MODELS) -> dict:
    """results.json + scores/<model>.npz as the benchmark writes them, from random scores."""
    rng = np.random.default_rng(0)
    benches = build_benchmarks(_fake_pairs(), factors=FACTORS)
    results: dict = {
        "convention": CONVENTION,
        "pairs_file": "fake-pairs.txt",
        "data": "fake",
        "dropped_pairs": 0,
        "models": [{"name": m, "source": f"{m}.safetensors", "embedding_dim": 32, "flip": False} for m in models],
        "benchmarks": [],
        "protocols": [],
    }
    (out / "scores").mkdir(parents=True)
    for mi, model in enumerate(models):
        arrays: dict[str, Any] = {}
        scored = []
        for b in benches:
            sp = b.scored_pairs()
            sep = 0.4 + 0.5 * (b.factor or 1.0) + 0.2 * mi
            scores = rng.normal(size=len(sp)) * 0.5 + sep * sp.same
            arrays[f"{b.name}|scores"] = scores.astype(np.float32)
            arrays[f"{b.name}|same"] = sp.same
            arrays[f"{b.name}|fold"] = sp.fold
            m = score_benchmark(scores.astype(np.float32), sp.same, sp.fold).as_dict()
            scored.append((b, m))
            results["benchmarks"].append(
                {
                    "model": model,
                    "name": b.name,
                    "protocol": b.protocol,
                    "setting": b.setting,
                    "combo": b.combo,
                    "parts": list(b.parts),
                    "factor": b.factor,
                    "visible_fraction": _vis(b.parts, b.factor),
                    **m,
                }
            )
        for row in aggregate(scored):
            results["protocols"].append({"model": model, **row})
        np.savez(out / "scores" / f"{model}.npz", **arrays)
    (out / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return results


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, torch.nn.Module | None]:
    torch.manual_seed(0)
    return {
        MODELS[0]: create_model("ours", preset="tiny"),
        MODELS[1]: create_model("resnet41", preset="tiny"),
        "dlib": None,
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict) -> tuple[Path, dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    results = make_fake_benchmark(out)
    faces = np.random.default_rng(1).integers(0, 256, size=(4, 160, 160, 3), dtype=np.uint8)
    page = write_report(out, tiny_models, faces)
    return out, results, page


def _png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0, path
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"cv2 cannot read {path}"
    return img


def test_figures_written(report: tuple[Path, dict, Path]) -> None:
    out, _, page = report
    assert page == out / "report.html"
    figs = sorted(p.name for p in (out / "figures").iterdir())
    expected = sorted(
        [
            f"accuracy_vs_area_{p}_{s}.png"
            for p in ("partial-holistic", "partial-same", "partial-cross")
            for s in ("non-centred", "centred")
        ]
        + [f"roc_{p}.png" for p in ("holistic", "partial-holistic", "partial-same", "partial-cross")]
        + ["attention_ours-tiny.png"]  # only the attention model; resnet41 has no A_tilde, dlib is no module
    )
    assert figs == expected
    for name in figs:
        img = _png(out / "figures" / name)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img.std() > 5, f"{name} looks blank"


def test_html_table_and_links(report: tuple[Path, dict, Path]) -> None:
    out, results, page = report
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    for m in MODELS:
        assert f"<th>{html.escape(m)}</th>" in text
    # the paper table: one row per model, cells from results.json in column order
    columns = [
        ("holistic", None),
        ("partial-holistic", "non-centred"),
        ("partial-same", "non-centred"),
        ("partial-cross", "non-centred"),
        ("partial-holistic", "centred"),
        ("partial-same", "centred"),
        ("partial-cross", "centred"),
    ]
    for m in MODELS:
        want = []
        for proto, setting in columns:
            (row,) = [
                r
                for r in results["protocols"]
                if r["model"] == m and r["protocol"] == proto and r["setting"] == setting
            ]
            want.append(f"<td>{row['accuracy']:.2f} ± {row['accuracy_std']:.2f}</td>")
        assert f"<tr><th>{html.escape(m)}</th>{''.join(want)}</tr>" in text
    assert html.escape(CONVENTION) in text and "<b>not bold</b>" not in text
    assert "href='per_factor.csv'" in text
    srcs = re.findall(r"<img src='([^']+)'", text)
    assert sorted(srcs) == sorted(f"figures/{p.name}" for p in (out / "figures").iterdir())
    assert all((out / s).is_file() for s in srcs)


def test_attention_outputs_match_training_input(tiny_models: dict) -> None:
    """The overlay rows are the variants of the faces, fed through the training normalisation and resize."""
    from partialface.evaluation.report import attention_outputs
    from partialface.geometry.partial import partial_face
    from partialface.models import preprocess

    model = tiny_models[MODELS[0]]
    faces = np.random.default_rng(2).integers(0, 256, size=(2, 160, 160, 3), dtype=np.uint8)
    got = attention_outputs(model, faces)
    assert got is not None
    labels, images, maps, s = got
    nv = len(ATTENTION_VARIANTS)
    assert len(labels) == images.shape[0] == maps.shape[0] == 2 * nv
    assert maps.shape[1:] == (4, 160, 160) and s.shape == (2 * nv, 4)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-5)
    # independent reference: the single-image path of the geometry module, resized 160 -> 64 by hand
    assert np.array_equal(images[0], faces[0])
    assert np.array_equal(images[1], partial_face(faces[0], "lEye", 0.3, centred=False))
    assert np.array_equal(images[nv + 2], partial_face(faces[1], "Mouth", 0.3, centred=True))
    x = torch.nn.functional.interpolate(
        preprocess(torch.from_numpy(images)), size=(64, 64), mode="bilinear", align_corners=False, antialias=True
    )
    model.eval()
    with torch.no_grad():
        ref = model(x)
    assert ref.s is not None
    np.testing.assert_allclose(s, ref.s.numpy(), rtol=1e-4, atol=1e-6)
    assert model.training is False  # eval() above; attention_outputs restores whatever mode it found
    model.train()
    attention_outputs(model, faces[:1])
    assert model.training is True


def test_no_attention_figure_without_a_tilde(tmp_path: Path, tiny_models: dict) -> None:
    make_fake_benchmark(tmp_path, models=(MODELS[1],))
    faces = np.zeros((1, 160, 160, 3), dtype=np.uint8)
    write_report(tmp_path, {MODELS[1]: tiny_models[MODELS[1]]}, faces)
    assert not list((tmp_path / "figures").glob("attention_*"))
    assert len(list((tmp_path / "figures").glob("*.png"))) == 10


def test_missing_results_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PartialFaceError, match=r"results\.json"):
        write_report(tmp_path, {}, np.zeros((0, 160, 160, 3), dtype=np.uint8))


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, partialface.evaluation.report; print('matplotlib' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_max_faces_shown(tiny_models: dict, tmp_path: Path) -> None:
    from partialface.evaluation.report import attention_figure

    faces = np.full((MAX_ATTENTION_FACES + 2, 160, 160, 3), 90, dtype=np.uint8)
    path = attention_figure(tiny_models[MODELS[0]], faces, tmp_path / "a.png", "x")
    assert path is not None
    img = _png(path)
    rows = MAX_ATTENTION_FACES * len(ATTENTION_VARIANTS)
    assert abs(img.shape[0] - (1.35 * rows + 0.6) * 100) <= 2  # figure height: one row per shown image
