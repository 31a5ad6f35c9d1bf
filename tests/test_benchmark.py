"""`partialface benchmark`: results reproduced from the cached embeddings, resume, missing images, table layout,
what it takes as aligned (issue #42)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from partialface.data.images import write_image
from partialface.errors import PartialFaceError
from partialface.evaluation import embed as embed_mod
from partialface.evaluation.benchmark import run_benchmark
from partialface.evaluation.embed import EmbedStats, embed_dataset, load_embedder
from partialface.evaluation.embedders import TorchEmbedder
from partialface.geometry.partial import Variant, partial_face
from partialface.geometry.template import visible_fraction
from partialface.metrics import cosine_scores, score_benchmark

N_IDS, PER_ID = 12, 3
FACTORS = (0.3, 0.5)


def _make_data(root: Path) -> tuple[Path, Path, list[tuple[str, int, str, int]]]:
    """Aligned LFW-layout folder (12 identities x 3 faces, 160x160 PNG) and a 2-fold pairs file (3 + 3 per fold)."""
    rng = np.random.default_rng(0)
    data = root / "aligned_data"
    for i in range(N_IDS):
        base = rng.integers(0, 256, (20, 20, 3)).astype(np.float64)
        big = np.kron(base, np.ones((8, 8, 1)))
        for j in range(1, PER_ID + 1):
            img = np.clip(big + rng.normal(0, 25, big.shape), 0, 255).astype(np.uint8)
            write_image(data / f"id{i:02d}" / f"id{i:02d}_{j:04d}.png", img)
    lines = ["2 3"]
    pairs: list[tuple[str, int, str, int]] = []
    for fold in range(2):
        ids = range(fold * 6, fold * 6 + 6)  # identity-disjoint folds
        for i in list(ids)[:3]:
            pairs.append((f"id{i:02d}", 1, f"id{i:02d}", 2))
            lines.append(f"id{i:02d}\t1\t2")
        for i in list(ids)[3:]:
            other = i + 1 if i + 1 < fold * 6 + 6 else fold * 6
            pairs.append((f"id{i:02d}", 3, f"id{other:02d}", 3))
            lines.append(f"id{i:02d}\t3\tid{other:02d}\t3")
    pf = root / "pairs.txt"
    pf.write_text("\n".join(lines) + "\n")
    return data, pf, pairs


def _save_tiny_model(path: Path) -> Path:
    from partialface.models import create_model
    from partialface.training.checkpoint import save_weights

    torch.manual_seed(0)
    model = create_model("ours", preset="tiny")
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_weights(path, tensors, {"model_config": json.dumps(model.config.to_dict())})
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("bench")
    data, pairs_file, pairs = _make_data(root)
    model = _save_tiny_model(root / "model.safetensors")
    out = root / "out"
    from partialface.cli import main

    rc = main(["benchmark", "--model", f"tiny={model}", "--data", str(data), "--pairs", str(pairs_file),
               "--out", str(out), "--factors", "0.3,0.5", "--device", "cpu", "--batch-size", "16",
               "--workers", "1", "--no-progress", "--aligned"])
    assert rc == 0
    return {"root": root, "data": data, "pairs_file": pairs_file, "pairs": pairs, "model": model, "out": out}


def _key(name: str, n: int) -> str:
    return f"{name}/{name}_{n:04d}.jpg"


def _variant_name(part: str, setting: str | None, factor: float | None) -> str:
    if part == "holistic":
        return "holistic"
    return f"{part}{'_centered' if setting == 'centred' else ''}/{factor}"


def test_every_result_reproduced_from_cached_embeddings(setup: dict[str, object]) -> None:
    out = Path(str(setup["out"]))
    res = json.loads((out / "results.json").read_text())
    pairs = setup["pairs"]
    assert isinstance(pairs, list)
    z = np.load(out / "embeddings" / "tiny.npz")
    keys = z["keys"].tolist()
    assert keys == sorted({k for a, i, b, j in pairs for k in (_key(a, i), _key(b, j))})
    row = {k: r for r, k in enumerate(keys)}
    fold = np.repeat([0, 1], 6)
    same = np.array(([True] * 3 + [False] * 3) * 2)
    # 1 holistic + 2 settings x 2 factors x (3 + 3 + 4) combinations
    assert len(res["benchmarks"]) == 1 + 2 * 2 * 10
    assert res["dropped_pairs"] == 0 and res["models"][0]["embedding_dim"] == 32
    for b in res["benchmarks"]:
        first, second = b["parts"]
        ea = z[_variant_name(first, b["setting"], b["factor"])]
        eb = z[_variant_name(second, b["setting"], b["factor"])]
        a_rows = [row[_key(a, i)] for a, i, _, _ in pairs]
        b_rows = [row[_key(c, j)] for _, _, c, j in pairs]
        if b["protocol"] in ("partial-holistic", "partial-cross"):  # both orders, first image shown as `first`
            left = np.ravel(np.column_stack([a_rows, b_rows]))
            right = np.ravel(np.column_stack([b_rows, a_rows]))
            y, f = np.repeat(same, 2), np.repeat(fold, 2)
        else:
            left, right, y, f = np.array(a_rows), np.array(b_rows), same, fold
        s = cosine_scores(ea[left], eb[right])
        m = score_benchmark(s, y, f).as_dict()
        assert b["pairs"] == len(y)
        for k in ("accuracy", "accuracy_std", "auc", "eer", "tar_far_1e3", "tar_far_1e2"):
            assert b[k] == pytest.approx(m[k], abs=1e-12), (b["name"], k)
        if b["protocol"] == "holistic":
            assert b["visible_fraction"] == 1.0
        elif b["protocol"] == "partial-holistic":
            assert b["visible_fraction"] == pytest.approx(visible_fraction(second, b["factor"]))
        else:
            expect = (visible_fraction(first, b["factor"]) + visible_fraction(second, b["factor"])) / 2
            assert b["visible_fraction"] == pytest.approx(expect)
        sc = np.load(out / "scores" / "tiny.npz")
        np.testing.assert_allclose(sc[f"{b['name']}|scores"], s, rtol=0, atol=1e-12)
        assert (sc[f"{b['name']}|same"] == y).all() and (sc[f"{b['name']}|fold"] == f).all()
    for p in res["protocols"]:
        members = [b for b in res["benchmarks"] if b["protocol"] == p["protocol"] and b["setting"] == p["setting"]]
        assert p["benchmarks"] == len(members) == (1 if p["protocol"] == "holistic" else
                                                   (4 if p["protocol"] == "partial-cross" else 3) * 2)
        assert p["accuracy"] == pytest.approx(np.mean([b["accuracy"] for b in members]))


def test_cached_embeddings_match_the_exact_per_image_path(setup: dict[str, object]) -> None:
    """Cache rows == normalise(model(preprocess(partial_face(image)))) computed image by image."""
    from partialface.models import preprocess
    from partialface.training.checkpoint import load_model

    out, data = Path(str(setup["out"])), Path(str(setup["data"]))
    z = np.load(out / "embeddings" / "tiny.npz")
    model = load_model(Path(str(setup["model"])))
    keys = z["keys"].tolist()[:3]
    from partialface.data.images import read_image

    imgs = [read_image(data / k.replace(".jpg", ".png")) for k in keys]
    for v in (Variant(), Variant("lEye", 0.3, False), Variant("Mouth", 0.5, True), Variant("rEye", 0.5, True)):
        shown = np.stack(
            [im if v.part is None else partial_face(im, v.part, float(v.factor or 0), v.centred) for im in imgs]
        )
        x = torch.nn.functional.interpolate(preprocess(torch.from_numpy(shown)), size=(64, 64), mode="bilinear",
                                            align_corners=False, antialias=True)
        with torch.no_grad():
            f = torch.nn.functional.normalize(model(x).f, dim=1).numpy()
        np.testing.assert_allclose(z[str(v)][:3], f, atol=2e-5)


def test_flip_embedding_is_sum_of_image_and_mirror(setup: dict[str, object]) -> None:
    emb = load_embedder(str(setup["model"]), torch.device("cpu"))
    rng = np.random.default_rng(1)
    batch = torch.from_numpy(rng.integers(0, 256, (2, 160, 160, 3), dtype=np.uint8))
    (_, got), = embed_mod.embed_batch(emb, batch, [Variant("Nose", 0.5, False)], flip=True)
    img = batch.numpy()
    shown = np.stack([partial_face(im, "Nose", 0.5, False) for im in img])
    mirrored = shown[:, :, ::-1].copy()
    with torch.no_grad():
        f = emb(torch.from_numpy(shown).permute(0, 3, 1, 2)) + emb(torch.from_numpy(mirrored).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got, torch.nn.functional.normalize(f, dim=1).numpy(), atol=2e-5)


def test_second_run_reuses_cache_without_calling_the_model(
    setup: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Path(str(setup["out"]))
    calls = {"n": 0}
    orig = TorchEmbedder.__call__

    def counting(self: TorchEmbedder, images: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return orig(self, images)

    monkeypatch.setattr(TorchEmbedder, "__call__", counting)
    before = json.loads((out / "results.json").read_text())
    stats: dict[str, EmbedStats] = {}
    res = run_benchmark([f"tiny={setup['model']}"], Path(str(setup["data"])), Path(str(setup["pairs_file"])), out,
                        aligned=True, factors=FACTORS, device="cpu", batch_size=16, workers=1, progress=False,
                        report=False, stats=stats)
    assert calls["n"] == 0 and stats["tiny"].computed == 0 and stats["tiny"].decoded == 0
    assert res["benchmarks"] == before["benchmarks"]


def test_interrupted_embedding_resumes_at_the_missing_chunk(setup: dict[str, object], tmp_path: Path) -> None:
    data = Path(str(setup["data"]))
    keys = sorted(str(p.relative_to(data)) for p in data.rglob("*.png"))[:24]
    paths = [data / k for k in keys]
    variants = [Variant(), Variant("lEye", 0.3, True)]
    emb = load_embedder(str(setup["model"]), torch.device("cpu"))
    cache = tmp_path / "m.npz"

    def stop(c: int) -> None:
        if c == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_dataset(emb, keys, paths, variants, cache, batch_size=8, workers=1, progress=False, chunk=8,
                      on_chunk=stop)
    assert not cache.exists() and len(list(cache.with_suffix(".parts").glob("chunk_*.npz"))) == 2
    st = EmbedStats()
    got = embed_dataset(emb, keys, paths, variants, cache, batch_size=8, workers=1, progress=False, chunk=8,
                        stats=st)
    assert st.decoded == len(keys) - 16 and st.computed == (len(keys) - 16) * 2
    fresh = embed_dataset(emb, keys, paths, variants, tmp_path / "fresh.npz", batch_size=8, workers=1,
                          progress=False)
    for v in variants:
        np.testing.assert_allclose(got[str(v)], fresh[str(v)], atol=1e-6)
    assert not cache.with_suffix(".parts").exists() and cache.is_file()


def test_cache_follows_the_weights_not_their_path(
    setup: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A moved copy of the same weights reuses the cache (nothing computed); other weights never do."""
    import shutil

    data = Path(str(setup["data"]))
    keys = sorted(str(p.relative_to(data)) for p in data.rglob("*.png"))[:8]
    paths = [data / k for k in keys]
    variants = [Variant(), Variant("Nose", 0.3, False)]
    src = Path(str(setup["model"]))
    moved = tmp_path / ("moved" + src.suffix)
    shutil.copytree(src, moved) if src.is_dir() else shutil.copy(src, moved)
    cache = tmp_path / "m.npz"
    kw = {"batch_size": 8, "workers": 1, "progress": False}
    first = embed_dataset(load_embedder(str(src), torch.device("cpu")), keys, paths, variants, cache, **kw)
    st = EmbedStats()
    again = embed_dataset(load_embedder(str(moved), torch.device("cpu")), keys, paths, variants, cache, stats=st,
                          **kw)
    assert st.computed == 0 and st.reused_variants == 2
    assert all(np.array_equal(first[str(v)], again[str(v)]) for v in variants)
    assert "other weights" not in capsys.readouterr().err
    # other weights: a changed tensor changes the fingerprint, and the cache is recomputed
    from partialface.training.checkpoint import _weights_file, load_weights, save_weights

    wfile = _weights_file(moved)
    tensors, meta = load_weights(wfile)
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name] + 1
    save_weights(wfile, tensors, meta)
    st = EmbedStats()
    embed_dataset(load_embedder(str(moved), torch.device("cpu")), keys, paths, variants, cache, stats=st, **kw)
    assert st.reused_variants == 0 and st.computed == len(keys) * 2
    assert "other weights" in capsys.readouterr().err


def test_missing_image_error_and_drop_missing(setup: dict[str, object], tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(Path(str(setup["data"])), data)
    (data / "id00" / "id00_0001.png").unlink()  # used by fold 1's first same pair only
    args: dict[str, Any] = dict(aligned=True, factors=(0.5,), protocols=("holistic", "partial-same"), device="cpu",
                                batch_size=16, workers=1, progress=False, report=False)
    with pytest.raises(PartialFaceError, match="--drop-missing"):
        run_benchmark([str(setup["model"])], data, Path(str(setup["pairs_file"])), tmp_path / "o1", **args)
    res = run_benchmark([str(setup["model"])], data, Path(str(setup["pairs_file"])), tmp_path / "o2",
                        drop_missing=True, **args)
    assert res["dropped_pairs"] == 1
    hol = next(b for b in res["benchmarks"] if b["protocol"] == "holistic")
    assert hol["pairs"] == 11


def test_results_md_has_the_paper_column_layout(setup: dict[str, object]) -> None:
    out = Path(str(setup["out"]))
    res = json.loads((out / "results.json").read_text())
    lines = (out / "results.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model"))
    assert lines[header] == "| model | holistic | NC p-hol | NC p-same | NC p-cross | C p-hol | C p-same | C p-cross |"
    cells = [c.strip() for c in lines[header + 2].strip("|").split("|")]
    assert cells[0] == "tiny"
    order = [("holistic", None), ("partial-holistic", "non-centred"), ("partial-same", "non-centred"),
             ("partial-cross", "non-centred"), ("partial-holistic", "centred"), ("partial-same", "centred"),
             ("partial-cross", "centred")]
    for cell, (proto, setting) in zip(cells[1:], order, strict=True):
        p = next(r for r in res["protocols"] if r["protocol"] == proto and r["setting"] == setting)
        assert cell == f"{p['accuracy']:.2f} ± {p['accuracy_std']:.2f}"
    csv_lines = (out / "per_factor.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,protocol,setting,combo,factor,visible_fraction")
    assert len(csv_lines) == 1 + len(res["benchmarks"])


def test_raw_data_is_aligned_once_into_out(setup: dict[str, object], tmp_path: Path) -> None:
    """Raw 250x250 faces (the aligned ones shifted by 45 px) + their landmarks: aligned into OUT/aligned
    bit-identically, so every result equals the aligned run's; a second run does not align again."""
    from partialface.data.images import read_image
    from partialface.detect.dataset import write_landmarks
    from partialface.geometry.template import template_points

    src = Path(str(setup["data"]))
    raw = tmp_path / "raw"
    tp = template_points()
    # landmarks of the template's shape (scale 1, no rotation) whose eye centre sits where alignment puts it
    # ((80, 64)) plus 45 px: the alignment is then a pure translation by -45 px, exact for bilinear warps
    shift = np.array([80.0 + 45.0, 64.0 + 45.0]) - (tp[0] + tp[1]) / 2
    points = {}
    for f in sorted(src.rglob("*.png")):
        rel = str(f.relative_to(src))
        canvas = np.full((250, 250, 3), 90, np.uint8)
        canvas[45:205, 45:205] = read_image(f)
        write_image(raw / rel, canvas)
        points[rel] = tp + shift
    write_landmarks(tmp_path / "lm.tsv", points)
    out = tmp_path / "out"
    kw: dict[str, Any] = dict(landmarks=tmp_path / "lm.tsv", factors=FACTORS, protocols=("holistic", "partial-cross"),
                              device="cpu", batch_size=16, workers=1, progress=False, report=False)
    res = run_benchmark([f"tiny={setup['model']}"], raw, Path(str(setup["pairs_file"])), out, **kw)
    assert res["data"] == str(out / "aligned")
    for f in sorted((out / "aligned").rglob("*.png")):
        assert np.array_equal(read_image(f), read_image(src / f.relative_to(out / "aligned")))
    ref = json.loads((Path(str(setup["out"])) / "results.json").read_text())["benchmarks"]
    ref_by_name = {b["name"]: b for b in ref}
    for b in res["benchmarks"]:
        assert b["accuracy"] == ref_by_name[b["name"]]["accuracy"] and b["auc"] == ref_by_name[b["name"]]["auc"]
    stamp = {f: f.stat().st_mtime_ns for f in (out / "aligned").rglob("*.png")}
    run_benchmark([f"tiny={setup['model']}"], raw, Path(str(setup["pairs_file"])), out, **kw)
    assert {f: f.stat().st_mtime_ns for f in (out / "aligned").rglob("*.png")} == stamp


def test_options_are_checked(setup: dict[str, object], tmp_path: Path) -> None:
    common: dict[str, Any] = dict(device="cpu", progress=False, report=False)
    with pytest.raises(PartialFaceError, match="at least 2 folds"):
        run_benchmark([str(setup["model"])], Path(str(setup["data"])), Path(str(setup["pairs_file"])), tmp_path,
                      folds=(1,), **common)
    with pytest.raises(PartialFaceError, match="--combos"):
        run_benchmark([str(setup["model"])], Path(str(setup["data"])), Path(str(setup["pairs_file"])), tmp_path,
                      combos=("Ear-Nose",), **common)
    with pytest.raises(PartialFaceError, match="no such file"):
        run_benchmark([str(tmp_path / "none.safetensors")], Path(str(setup["data"])),
                      Path(str(setup["pairs_file"])), tmp_path, **common)


def test_native_size_input_is_training_normalisation_bit_for_bit() -> None:
    from partialface.geometry.partial import PartialFaceBatcher
    from partialface.models import create_model
    from partialface.models.framing import to_model_input

    model = create_model("ours", preset="tiny", input_size=160)
    emb = TorchEmbedder("t", model, torch.device("cpu"))
    batch = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 160, 160, 3), dtype=np.uint8))
    for v, x in PartialFaceBatcher(batch).variants([Variant(), Variant("Nose", 0.3, True)], reuse_buffer=True):
        assert torch.equal(emb.prepare(x), to_model_input(x, 160)), str(v)


def test_model_names_and_missing_dlib(tmp_path: Path) -> None:
    import importlib.util

    from partialface.evaluation.embedders import parse_model_spec

    assert parse_model_spec("ours=runs/a/model.safetensors") == ("ours", "runs/a/model.safetensors")
    assert parse_model_spec("runs/a/model.safetensors") == ("a", "runs/a/model.safetensors")
    assert parse_model_spec("runs/a") == ("a", "runs/a")
    assert parse_model_spec("runs/a/checkpoints/step_00000020") == ("a-step_00000020",
                                                                     "runs/a/checkpoints/step_00000020")
    # shared files are named after themselves: two files of one folder are two names (was "-celeba-cpu-...")
    assert parse_model_spec("checkpoints/celeba-cpu-2026-11-27/ours.safetensors")[0] == "ours"
    assert parse_model_spec("checkpoints/celeba-cpu-2026-11-27/resnet41.safetensors")[0] == "resnet41"
    assert parse_model_spec("runs/a/checkpoints/step_00000020/model.safetensors")[0] == "a-step_00000020"
    if importlib.util.find_spec("dlib") is None:
        with pytest.raises(PartialFaceError, match="dlib"):
            load_embedder("dlib", torch.device("cpu"))


def test_bf16_embedder_matches_float32_and_keeps_its_own_cache_key() -> None:
    """--amp bf16: the same embeddings up to bf16 rounding (cosine > 0.99 against float32), computed under
    bf16 autocast, with a fingerprint of its own (a float32 cache is never reused for bf16 and back)."""
    from partialface.models import create_model

    torch.manual_seed(0)
    model = create_model("ours", preset="tiny", input_size=160)
    faces = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (4, 3, 160, 160), dtype=np.uint8))
    f32 = TorchEmbedder("t", model, torch.device("cpu"), fingerprint="w", amp="none")
    ref = f32(faces)
    bf = TorchEmbedder("t", model, torch.device("cpu"), fingerprint="w", amp="bf16")
    got = bf(faces)
    assert bf.autocast == torch.bfloat16 and f32.autocast is None
    assert TorchEmbedder("t", model, torch.device("cpu"), amp="auto").autocast is None  # float32 on the CPU
    cos = torch.nn.functional.cosine_similarity(got, ref)
    assert bool((cos > 0.99).all()), cos
    assert not torch.equal(got, ref)  # really computed in bf16
    assert len({f32.fingerprint, bf.fingerprint}) == 2
    with pytest.raises(PartialFaceError, match="--amp"):
        TorchEmbedder("t", model, torch.device("cpu"), amp="fp8")


# ---------------------------------------------------------------------------------------------- aligned or not
def test_a_png_tree_without_faces_is_refused_in_one_line(setup: dict[str, object], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """160x160 PNG images in which the detector finds no face: their alignment cannot be checked, so without
    --aligned the benchmark refuses them in one line (exit 2) before anything is aligned or embedded."""
    from partialface.cli import main

    out = tmp_path / "out"
    rc = main(["benchmark", "--model", str(setup["model"]), "--data", str(setup["data"]), "--pairs",
               str(setup["pairs_file"]), "--out", str(out), "--factors", "0.5", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot be checked" in err[0] and "--aligned" in err[0], err
    assert not (out / "aligned").exists() and not (out / "embeddings").exists()


def _lfw_pairs(lfw_root: Path, root: Path) -> tuple[Path, list[tuple[str, int]]]:
    """A 2-fold pairs file of LFW's first 4 same and 4 different pairs (2 + 2 per fold), and the images it names."""
    lines = (lfw_root / "pairs.txt").read_text().splitlines()[1:]
    same = [line.split() for line in lines if len(line.split()) == 3][:4]
    diff = [line.split() for line in lines if len(line.split()) == 4][:4]
    out = ["2 2"]
    for fold in range(2):
        out += ["\t".join(f) for f in same[2 * fold : 2 * fold + 2] + diff[2 * fold : 2 * fold + 2]]
    images = sorted({(f[0], int(f[1])) for f in same} | {(f[0], int(f[2])) for f in same}
                    | {(f[0], int(f[1])) for f in diff} | {(f[2], int(f[3])) for f in diff})
    pairs = root / "pairs.txt"
    pairs.write_text("\n".join(out) + "\n")
    return pairs, images


@pytest.fixture(scope="module")
def lfw_160(lfw_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same LFW photos (those of 8 pairs) as 160x160 PNG trees: aligned by the benchmark's own alignment (MTCNN, the
    template), cropped around the middle without alignment, and the aligned faces shifted by 8 px."""
    from partialface.data.images import read_image
    from partialface.detect import detect_faces_batch, select_face
    from partialface.geometry.align import align_face

    root = tmp_path_factory.mktemp("lfw160")
    pairs, images = _lfw_pairs(lfw_root, root)
    photos = [read_image(lfw_root / "lfw-deepfunneled" / n / f"{n}_{i:04d}.jpg") for n, i in images]
    faces = detect_faces_batch(photos, device="cpu")
    trees: dict[str, Any] = {"pairs": pairs}
    for kind in ("aligned", "crop", "shifted"):
        trees[kind] = root / kind
    for (name, i), photo, found in zip(images, photos, faces, strict=True):
        face = select_face(found, photo.shape)
        assert face is not None, name
        aligned = align_face(photo, np.asarray(face.landmarks))
        rel = Path(name) / f"{name}_{i:04d}.png"
        write_image(trees["aligned"] / rel, aligned)
        write_image(trees["crop"] / rel, np.ascontiguousarray(photo[45:205, 45:205]))  # LFW's 250x250, no alignment
        write_image(trees["shifted"] / rel, np.ascontiguousarray(np.roll(aligned, (8, 8), axis=(0, 1))))
    return trees


@pytest.mark.lfw
def test_the_alignment_check_tells_aligned_faces_from_crops(lfw_160: dict[str, Any]) -> None:
    from partialface.evaluation.benchmark import ALIGN_TOLERANCE, check_alignment

    medians = {}
    for kind in ("aligned", "crop", "shifted"):
        paths = sorted(Path(lfw_160[kind]).rglob("*.png"))
        sampled, offsets = check_alignment(paths)
        assert sampled == len(paths) >= 10 and len(offsets) >= sampled - 2, (kind, offsets)
        medians[kind] = float(np.median(offsets))
    assert medians["aligned"] <= 0.75 * ALIGN_TOLERANCE, medians  # 1.8 px here; the crops 11.4, shifted 11.5
    assert medians["crop"] > 1.5 * ALIGN_TOLERANCE and medians["shifted"] > 1.5 * ALIGN_TOLERANCE, medians


@pytest.mark.lfw
def test_160_crops_that_are_not_aligned_are_aligned_first(lfw_160: dict[str, Any], setup: dict[str, object],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #42: a folder of 160x160 PNG crops that were never aligned is aligned into OUT/aligned (and says so in
    one line), never scored as aligned in silence; a folder the benchmark aligned itself is scored as it is."""
    from partialface.data.images import read_image

    kw: dict[str, Any] = dict(factors=(0.5,), protocols=("holistic",), device="cpu", batch_size=16, workers=1,
                              progress=False, report=False)
    for kind in ("crop", "shifted"):
        out = tmp_path / kind
        res = run_benchmark([f"tiny={setup['model']}"], lfw_160[kind], lfw_160["pairs"], out, **kw)
        said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("--data")]
        assert len(said) == 1 and "not aligned" in said[0] and "aligning them" in said[0], said
        assert res["data"] == str(out / "aligned")
        first = sorted((out / "aligned").rglob("*.png"))[0]
        assert not np.array_equal(read_image(first), read_image(lfw_160[kind] / first.relative_to(out / "aligned")))
    out = tmp_path / "aligned"
    res = run_benchmark([f"tiny={setup['model']}"], lfw_160["aligned"], lfw_160["pairs"], out, **kw)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("--data")]
    assert len(said) == 1 and "scored as aligned" in said[0] and "px off the template" in said[0], said
    assert res["data"] == str(lfw_160["aligned"]) and not (out / "aligned").exists()
    res = run_benchmark([f"tiny={setup['model']}"], lfw_160["crop"], lfw_160["pairs"], tmp_path / "trusted",
                        aligned=True, **kw)  # --aligned: the user's word, taken (and said)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("--data")]
    assert len(said) == 1 and "as --aligned says" in said[0] and res["data"] == str(lfw_160["crop"])
