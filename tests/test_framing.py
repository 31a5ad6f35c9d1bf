"""A model's framing (partialface.models.framing): which framing each model uses, what dlib-chip cuts, that
training, the benchmark (PyTorch and ONNX Runtime) and an exported ONNX file frame alike, that partial faces
are made on the 160x160 face before framing, and that a checkpoint written before the option loads as
``resize``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from partialface.errors import PartialFaceError
from partialface.geometry.partial import PartialFaceBatcher, Variant
from partialface.models import ModelConfig, create_model
from partialface.models.framing import DLIB_CHIP_BOX_160, framing_of, to_model_input
from partialface.training import checkpoint as ckpt


def test_each_model_frames_as_registered_and_an_explicit_framing_wins() -> None:
    assert framing_of(ModelConfig(name="dlib_resnet")) == "dlib-chip"
    assert framing_of(ModelConfig(name="ours_dlib")) == "dlib-chip"
    assert framing_of(ModelConfig(name="ours_dlib_light")) == "dlib-chip"
    for name in ("ours", "resnet50", "resnet41"):
        assert framing_of(ModelConfig(name=name)) == "resize"
    assert framing_of(ModelConfig(name="dlib_resnet", framing="resize")) == "resize"
    assert framing_of(ModelConfig(name="ours", framing="dlib-chip")) == "dlib-chip"
    with pytest.raises(PartialFaceError, match=r"model\.framing"):
        ModelConfig(framing="crop")


def test_dlib_chip_keeps_the_box_and_drops_the_rest() -> None:
    # The box (centre 80.15, 90.86; side 137.69) spans x 11.3..149.0 and y 22.0..159.7 of the 160x160 face.
    # Everything outside it is white, inside black: the chip is all black (normalised: -127.5 / 128), the
    # resize keeps the white frame.
    cx, cy, side = DLIB_CHIP_BOX_160
    assert (cx - side / 2, cx + side / 2, cy - side / 2) == pytest.approx((11.305, 148.995, 22.015))
    face = np.full((1, 160, 160, 3), 255, np.uint8)
    face[:, 22:, 11:150] = 0
    x = torch.from_numpy(face)
    chip = to_model_input(x, 150, framing="dlib-chip")
    assert chip.shape == (1, 3, 150, 150)
    assert torch.all(chip == -127.5 / 128)
    assert torch.equal(chip, to_model_input(x.permute(0, 3, 1, 2), 150, framing="dlib-chip"))  # NCHW alike
    resized = to_model_input(x, 150, framing="resize")
    assert resized.max() > 0.9
    with pytest.raises(ValueError, match="resolve 'auto'"):
        to_model_input(x, 150, framing="auto")


def _save(model: torch.nn.Module, path: Path, config: dict[str, object]) -> Path:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    ckpt.save_weights(path, tensors, {"model_config": json.dumps(config), "num_classes": "0"})
    return path


def test_training_benchmark_and_onnx_file_frame_alike(tmp_path: Path) -> None:
    from partialface.evaluation.embed import load_embedder
    from partialface.inference.onnx_export import export_model_onnx
    from partialface.inference.runners import unavailable
    from partialface.training.verify import embed

    torch.manual_seed(0)
    model = create_model("ours", preset="tiny", framing="dlib-chip").eval()  # 64x64 input, cut as dlib's chip
    file = _save(model, tmp_path / "m.safetensors", model.config.to_dict())
    faces = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 160, 160, 3), dtype=np.uint8))
    want = embed(model, faces, 64, torch.device("cpu"), "none")  # training's held-out embedding
    nchw = faces.permute(0, 3, 1, 2)
    paths = ["eager"] + ([] if unavailable("onnx", torch.device("cpu")) else ["onnx"])
    for infer in paths:
        emb = load_embedder(str(file), torch.device("cpu"), infer=infer)
        assert emb.framing == "dlib-chip"
        assert torch.equal(emb.prepare(nchw), to_model_input(nchw, 64, framing="dlib-chip"))
        assert not torch.equal(emb.prepare(nchw), to_model_input(nchw, 64, framing="resize"))
        got = torch.nn.functional.normalize(emb(nchw).float(), dim=1)
        assert (got * want).sum(1).min() >= 0.9999, infer
    if "onnx" in paths:
        onnx_file = tmp_path / "m.onnx"
        export_model_onnx(model, onnx_file)
        emb = load_embedder(str(onnx_file), torch.device("cpu"))
        assert emb.framing == "dlib-chip"
        got = torch.nn.functional.normalize(emb(nchw).float(), dim=1)
        assert (got * want).sum(1).min() >= 0.9999


def test_partial_faces_are_cut_on_the_160_face_then_framed() -> None:
    from partialface.evaluation.embedders import TorchEmbedder

    model = create_model("ours", preset="tiny", framing="dlib-chip")
    emb = TorchEmbedder("t", model, torch.device("cpu"), infer="eager")
    batch = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8))
    for v, x in PartialFaceBatcher(batch).variants([Variant("lEye", 0.3, False), Variant("Mouth", 0.5, True)]):
        assert x.shape[-2:] == (160, 160), str(v)  # the benchmark's variant: a 160x160 partial face
        assert torch.equal(emb.prepare(x), to_model_input(x, 64, framing="dlib-chip")), str(v)


def test_a_checkpoint_from_before_the_option_loads_as_resize(tmp_path: Path) -> None:
    from partialface.evaluation.embed import load_embedder

    model = create_model("dlib_resnet", preset="tiny")
    legacy = model.config.to_dict()
    del legacy["framing"]
    old = ckpt.load_model(_save(model, tmp_path / "old.safetensors", legacy))
    new = ckpt.load_model(_save(model, tmp_path / "new.safetensors", model.config.to_dict()))
    assert framing_of(old.config) == "resize"  # what it was trained and scored on
    assert framing_of(new.config) == "dlib-chip"  # the dlib network's own framing
    assert load_embedder(str(tmp_path / "old.safetensors"), torch.device("cpu"), infer="eager").framing == "resize"


def test_checkpoints_and_exports_record_the_resolved_framing(tmp_path: Path) -> None:
    # "auto" is resolved when weights are written, so a file says what its model was trained on
    from partialface.jobs.weights import export_model
    from partialface.training import resume
    from partialface.training.config import TrainConfig

    cfg = TrainConfig.from_yaml("tiny", ["model.name=dlib_resnet"])
    assert cfg.model.framing == "auto"
    model = create_model(cfg.model)
    _, meta = resume.run_weights(cfg, torch.nn.ModuleDict({"model": model}), 3)
    assert json.loads(meta["model_config"])["framing"] == "dlib-chip"
    auto = _save(model, tmp_path / "run" / "model.safetensors", cfg.model.to_dict())  # an older run's "auto"
    export_model(auto.parent, tmp_path / "out.safetensors", fp16=True)
    _, meta = ckpt.load_weights(tmp_path / "out.safetensors")
    assert json.loads(meta["model_config"])["framing"] == "dlib-chip"


def test_arcface_crop_puts_the_landmarks_on_the_template() -> None:
    from partialface.geometry.template import aligned_points
    from partialface.models.framing import ARCFACE_TEMPLATE_112, arcface_from_aligned, arcface_similarity, input_frame

    # where the alignment puts the landmarks: the template points with the eyes' midpoint at (80, 64), by hand
    pts = aligned_points()
    assert np.allclose((pts[0] + pts[1]) / 2, (80, 64)) and pts[1, 0] - pts[0, 0] == pytest.approx(
        (0.7747 - 0.2194) / 1.6 * 160)
    # an aligned face whose red channel is x and green channel is y: the crop reads back the source pixel
    yy, xx = np.mgrid[0:160, 0:160]
    face = torch.from_numpy(np.stack([xx, yy, np.zeros_like(xx)]).astype(np.uint8))[None]
    crop = arcface_from_aligned(face)[0]
    assert crop.shape == (3, 112, 112)
    frame = input_frame("arcface-112", 112)
    for u, v in ((20, 30), (56, 56), (90, 100)):  # crop pixels away from the face's border
        x, y = frame @ np.array([(u + 0.5) / 112, (v + 0.5) / 112, 1.0])
        assert float(crop[0, v, u]) == round(x) and float(crop[1, v, u]) == round(y)
    # the similarity is the least-squares one: x' = a x - b y + tx, y' = b x + a y + ty solved directly
    rows = [[x, -y, 1, 0] for x, y in pts] + [[y, x, 0, 1] for x, y in pts]
    tpl = np.array(ARCFACE_TEMPLATE_112)
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.concatenate([tpl[:, 0], tpl[:, 1]]), rcond=None)[0]
    assert np.allclose(arcface_similarity(), ((a, -b, tx), (b, a, ty)), atol=1e-9)
    # the two mean shapes differ (the benchmark's nose sits lower): the landmarks land within 3.5 px
    inv = np.linalg.inv(np.vstack([frame, [0, 0, 1]]))
    mapped = (inv[:2, :2] @ pts.T + inv[:2, 2:]).T * 112 - 0.5  # aligned pixel -> crop pixel
    assert np.allclose(mapped, (np.array([[a, -b], [b, a]]) @ pts.T).T + np.array([tx, ty]), atol=1e-9)
    assert np.abs(mapped - tpl).max() < 3.5
    # a model with this framing gets the crop, normalised
    x = to_model_input(face, 112, framing="arcface-112")
    assert torch.allclose(x, (crop[None] - 127.5) / 128)
