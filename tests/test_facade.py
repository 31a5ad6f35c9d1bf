"""The user facade (partialface.api) and ``partialface verify``: inputs of every kind, aligned faces, real
photos (LFW, where present), the shipped models by name, and every user error as one line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_training import make_identities

import partialface
from partialface.api import to_rgb
from partialface.cli import main
from partialface.data.images import read_image
from partialface.errors import PartialFaceError
from partialface.evaluation.calibrate_auto import auto_threshold
from partialface.models.catalogue import CATALOGUE, DEFAULT_MODEL, shipped_model


def test_every_image_kind_becomes_rgb_uint8(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    for given in (tmp_path / "a.png", str(tmp_path / "a.png"), Image.fromarray(rgb), rgb,
                  np.dstack([rgb, np.full((20, 30), 255, np.uint8)])):
        assert np.array_equal(to_rgb(given), rgb)
    grey = rgb[:, :, 0]
    assert np.array_equal(to_rgb(grey), np.dstack([grey] * 3))
    for bad, message in ((rgb.astype(np.float32), "must be uint8"), (rgb[:, :, :2], r"\(H, W, 3\)"),
                         (42, "give a path, a numpy array or a PIL image")):
        with pytest.raises(PartialFaceError, match=message):
            to_rgb(bad)


def test_the_shipped_models_are_addressable_by_name() -> None:
    assert DEFAULT_MODEL in CATALOGUE
    for name in CATALOGUE:
        assert shipped_model(name).is_file(), name
    with pytest.raises(PartialFaceError, match="not a shipped model"):
        shipped_model("nope")


def test_the_default_model_needs_no_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default model runs from its shipped file alone: no dlib or sface extra (no installed package file
    is found), nothing downloaded, and it carries its operating points."""
    from partialface.api.facade import _Model
    from partialface.models import dlib_resnet

    monkeypatch.setattr(dlib_resnet, "installed_package_file", lambda *a: None)
    m = _Model(DEFAULT_MODEL, "cpu")
    face = read_image(make_identities(tmp_path / "faces", 1, 1) / "id00" / "000.png")
    f, _ = m.embed(face[None])
    assert f.shape == (1, m.embedder.embedding_dim) and np.isfinite(f).all() and m.points is not None


def test_verify_aligned_faces_with_the_default_model(tmp_path: Path) -> None:
    root = make_identities(tmp_path / "faces", 2, 2)
    a, b = read_image(root / "id00" / "000.png"), read_image(root / "id01" / "000.png")
    res = partialface.verify(a, a, aligned=True, kind="holistic")
    assert res.same and res.score == pytest.approx(1.0, abs=1e-5) and res.model == DEFAULT_MODEL
    points = partialface.api.load().points
    assert points is not None and res.threshold == points.at(1e-3) and res.far == 1e-3 and res.kind == "holistic"
    auto = partialface.verify(a, a, aligned=True)  # kind "auto": the operating point of what both faces show
    va = np.array(list(auto.faces[0].visibility.values()))
    assert auto.shared_visibility == pytest.approx(va.mean())  # the same face twice: min(va, va) = va
    detail = auto.faces[0].detail  # the face's sharpness, measured with its visibility
    assert detail is not None and detail > 0 and auto.as_dict()["faces"][0]["detail"] == detail
    assert (auto.threshold, auto.kind) == auto_threshold(points, 1e-3, va.mean(), detail)
    assert any("operating point" in n for n in auto.notes)
    other = partialface.verify(a, b, aligned=True, far=1e-2, kind="partial")
    assert other.threshold == points.at(1e-2, "partial") and other.same == (other.score >= other.threshold)
    assert set(other.as_dict()) == {"same", "score", "threshold", "far", "kind", "model", "notes", "faces", "regions",
                                    "shared_visibility"}
    faces = partialface.embed(a, aligned=True)
    assert len(faces) == 1 and faces[0].embedding.shape == (128,)
    assert np.linalg.norm(faces[0].embedding) == pytest.approx(1.0, abs=1e-5) and faces[0].box is None
    assert faces[0].importance is None  # the default (sface-real-1600) is holistic: no attention to give
    (attention,) = partialface.embed(a, "ours_sface-ft", aligned=True)  # K cells' shares of the attention
    imp = attention.importance
    assert imp is not None and imp.shape == (12,) and imp.min() >= 0 and imp.sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(PartialFaceError, match="aligned=True needs a 160x160 face"):
        partialface.verify(a[:100], a, aligned=True)


def test_an_attention_model_gives_importance_and_maps(tmp_path: Path) -> None:
    face = read_image(make_identities(tmp_path / "faces", 1, 1) / "id00" / "000.png")
    (got,) = partialface.embed(face, "ours-celeba", aligned=True)
    assert got.importance is not None and got.maps is not None
    assert got.importance.shape == (12,) and got.importance.sum() == pytest.approx(1.0, abs=1e-5)
    assert got.maps.shape == (12, 20, 20) and (got.maps >= 0).all()
    # a model file without operating points cannot decide: the same weights with the metadata key dropped
    from partialface.evaluation.calibrate import METADATA_KEY
    from partialface.training.checkpoint import load_weights, save_weights

    tensors, meta = load_weights(shipped_model("ours-celeba"))
    save_weights(tmp_path / "bare.safetensors", tensors, {k: v for k, v in meta.items() if k != METADATA_KEY})
    with pytest.raises(PartialFaceError, match="no operating points"):
        partialface.verify(face, face, str(tmp_path / "bare.safetensors"), aligned=True)


def test_the_inference_path_can_be_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``infer`` (API) / ``--infer`` (photo commands): ``auto`` takes the fastest exact path, a named path is used
    as it is, and the embeddings agree across paths (cosine >= 0.9999); a bad or int8 path is one clear error
    before any photo is read."""
    from partialface.api import Gallery
    from partialface.inference.runners import choose_path

    root = make_identities(tmp_path / "faces", 2, 1)
    faces = [read_image(p) for p in sorted(root.rglob("*.png"))]
    auto, eager = partialface.api.load("ours-celeba"), partialface.api.load("ours-celeba", infer="eager")
    assert auto.embedder.path == choose_path("auto", torch.device("cpu")) and eager.embedder.path == "eager"
    f_auto, f_eager = auto.embed(np.stack(faces))[0], eager.embed(np.stack(faces))[0]
    assert (f_auto * f_eager).sum(1).min() >= 0.9999
    (got,) = partialface.embed(faces[0], "ours-celeba", aligned=True, infer="eager", regions=False)
    assert np.allclose(got.embedding, f_eager[0], atol=1e-6)
    assert Gallery(None, "ours-celeba", infer="eager")._model is eager
    for bad, message in (("nope", "choose one of"), ("int8", "--infer int8")):
        with pytest.raises(PartialFaceError, match=message):
            partialface.embed(str(tmp_path / "missing.png"), "ours-celeba", infer=bad)  # fails before the photo
    a, b = (str(p) for p in sorted(root.rglob("*.png")))
    assert main(["verify", a, b, "--aligned", "--model", "ours-celeba", "--infer", "eager", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "ours-celeba"
    for cmd in (["verify", a, b], ["embed", a, "--out", str(tmp_path / "e.npz")]):
        assert main([*cmd, "--aligned", "--model", "ours-celeba", "--infer", "nope"]) == 2
        err = capsys.readouterr().err
        assert "--infer 'nope': choose one of" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "e.npz").exists()


def test_a_holistic_model_runs_once_per_face(tmp_path: Path) -> None:
    """The facade runs a model's PyTorch module a second time only for the attention outputs (s, Ã): a
    holistic model's faces cost one pass (of ONNX Runtime, or of the module), an attention model's two."""
    faces = np.stack([read_image(p) for p in sorted((make_identities(tmp_path / "f", 2, 2)).rglob("*.png"))])
    for name, passes in (("sface-400", 0), ("ours-celeba", 1)):
        m = partialface.api.load(name)
        calls: list[int] = []

        def count(mod: object, i: tuple[torch.Tensor, ...], o: object, calls: list[int] = calls) -> None:
            calls.append(len(i[0]))

        hook = m.embedder.module.register_forward_hook(count)
        try:
            f, attention = m.embed(faces)
        finally:
            hook.remove()
        assert f.shape == (4, m.embedder.embedding_dim) and (attention is not None) == (passes == 1)
        onnx = m.embedder.path == "onnx"
        assert calls == [4] * (passes + (0 if onnx else 1)), (name, m.embedder.path, calls)


def test_verify_real_photos(lfw_root: Path, tmp_path: Path) -> None:
    lfw = lfw_root / "lfw-deepfunneled"
    same = partialface.verify(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg",
                              lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg")
    other = partialface.verify(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg",
                               lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg")
    assert same.same and not other.same and same.score > other.score + 0.3
    assert same.faces[0].box is not None and same.faces[0].landmarks is not None
    assert same.faces[0].aligned.shape == (160, 160, 3)
    # two people in one photo: the best face is compared, and the result says so
    two = np.concatenate([read_image(lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"),
                          read_image(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")], axis=1)
    assert len(partialface.embed(two)) >= 2
    res = partialface.verify(two, lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg")
    assert any("faces; compared the best" in n for n in res.notes)


def test_verify_command_and_its_errors(lfw_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = lfw_root / "lfw-deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    b = lfw_root / "lfw-deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg"
    proc = subprocess.run([sys.executable, "-m", "partialface.cli", "verify", str(a), str(b), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["same"] is True and got["model"] == DEFAULT_MODEL and got["far"] == 1e-3 and len(got["faces"]) == 2
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "trunc.jpg").write_bytes(a.read_bytes()[:200])
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    for argv, message in (
        ([str(a), str(tmp_path / "nope.jpg")], "no such file"),
        ([str(a), str(tmp_path / "empty.jpg")], "file is empty"),
        ([str(a), str(tmp_path / "text.jpg")], "not a readable image"),
        ([str(a), str(tmp_path / "trunc.jpg")], "corrupt or truncated"),
        ([str(a), str(tmp_path / "grey.png")], "no face found"),
        ([str(a), str(b), "--far", "0.5"], "no holistic operating point"),
        ([str(a), str(b), "--model", "nope"], "shipped model"),
    ):
        assert main(["verify", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
