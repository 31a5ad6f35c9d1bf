"""Inference paths: one model, several ways to run it, chosen by what the machine has.

A *runner* maps a normalised batch x (B, 3, S, S) float32 on its device to (B, D) float32 embeddings. Paths:

========  =====================================================================  =========================
path      what runs                                                              precision
========  =====================================================================  =========================
eager     PyTorch, channels_last (measured 1.4-1.5x contiguous on CPU)           float32 (exact)
compile   ``torch.compile`` (inductor, frozen weights) on fixed-size slices        float32 (exact)
bf16      PyTorch, bf16 autocast + channels_last (CPU with AMX/AVX512-BF16, CUDA) reduced
compile-  ``torch.compile`` of the bf16 autocast model on fixed-size slices:      reduced
bf16      oneDNN's prepacked AMX kernels on CPU (7x eager float32 for dlib)
fp16      PyTorch, fp16 autocast + channels_last (CUDA only)                      reduced
onnx      ONNX Runtime on the exported graph (CPU or CUDA execution provider)    float32 (exact)
int8      ONNX Runtime, static int8 quantisation (QDQ, per-channel weights),     reduced
          activation ranges calibrated on given faces (CPU, VNNI or AMX-INT8)
========  =====================================================================  =========================

``auto`` takes the fastest *exact* path the machine supports: ``onnx`` when ONNX Runtime has an execution
provider for the device, else ``eager`` (docs/history/benchmarks.md has the measurements behind this rule). Reduced
precision is only used when asked for: it must pass the accuracy bar first (docs/history/benchmarks.md). The compiled
paths compile once per input size (10-40 s on a 2-core CPU, a C++ compiler needed there): for long jobs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from partialface.errors import PartialFaceError

PATHS = ("eager", "compile", "bf16", "compile-bf16", "fp16", "onnx", "int8")
#: values of ``--infer``
CHOICES = ("auto", *PATHS)
#: paths whose embeddings equal eager float32 to float rounding (cosine >= 0.9999)
EXACT = ("eager", "compile", "onnx")
#: the reduced float dtype of each autocast path
AUTOCAST = {"bf16": torch.bfloat16, "compile-bf16": torch.bfloat16, "fp16": torch.float16}


def _ort_providers(device: torch.device) -> list[str] | None:
    """ONNX Runtime execution providers for ``device`` (None where ONNX Runtime or its provider is missing)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    have = ort.get_available_providers()
    if device.type == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in have else None
    return ["CPUExecutionProvider"] if "CPUExecutionProvider" in have else None


def _cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on the CPU (``CXX``, else c++ / g++ / clang++), None if none."""
    import shutil

    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def unavailable(path: str, device: torch.device) -> str | None:
    """Why ``path`` cannot run on ``device`` here (None: it can)."""
    from partialface.devices import native_bf16

    if path == "eager":
        return None
    if path in ("compile", "compile-bf16"):
        reason = None if path == "compile" else unavailable("bf16", device)
        return reason or (None if device.type != "cpu" or _cxx_compiler() else
                          "torch.compile needs a C++ compiler on the CPU (install g++, or set CXX)")
    if path == "bf16":
        return None if native_bf16(device) else "this processor has no native bf16 (AMX or AVX512-BF16)"
    if path == "fp16":
        return None if device.type == "cuda" else "fp16 autocast is for CUDA devices; use bf16 or eager"
    if path in ("onnx", "int8"):
        if path == "int8" and device.type != "cpu":
            return "int8 runs on the CPU execution provider; use --device cpu"
        if _ort_providers(device) is None:
            return ("ONNX Runtime is not installed (pip install onnxruntime)" if device.type == "cpu"
                    else "ONNX Runtime has no CUDA execution provider here (pip install onnxruntime-gpu)")
        return None
    return f"unknown path; choose one of {', '.join(CHOICES)}"


def choose_path(requested: str, device: torch.device, option: str = "--infer") -> str:
    """``auto`` -> the fastest exact path here (onnx, else eager); another name -> itself if it can run here,
    else PartialFaceError naming ``option`` and the reason."""
    if requested not in CHOICES:
        raise PartialFaceError(f"{option} {requested!r}: choose one of {', '.join(CHOICES)}")
    if requested == "auto":
        return "onnx" if unavailable("onnx", device) is None else "eager"
    reason = unavailable(requested, device)
    if reason is not None:
        raise PartialFaceError(f"{option} {requested}: {reason}")
    return requested


#: embeddings from which a job is long enough for a compiled path to pay for its compilation (10-40 s)
LONG_JOB = 50_000


def faster_path_note(path: str, device: torch.device, embeddings: int) -> str | None:
    """One line for a user whose exact float32 ``path`` (what ``auto`` took) leaves most of the machine unused:
    on a CPU with AMX, a job of at least :data:`LONG_JOB` embeddings runs 1.6x (``ours`` cpu) to 3.9x (dlib) faster
    on ``compile-bf16`` than on ONNX Runtime float32, end to end (reduced precision, so only a note). None where
    there is nothing to say."""
    from partialface.inference.hardware import cpu_info

    if device.type != "cpu" or path not in EXACT or embeddings < LONG_JOB or not cpu_info().amx:
        return None
    if unavailable("compile-bf16", device) is not None:
        return None
    return (f"note: this CPU has AMX: --infer compile-bf16 computes these {embeddings:,} embeddings in bf16, 1.6x "
            "(small networks) to 3.9x (dlib's size) faster than float32 (accuracy within 0.1 point on LFW for dlib and "
            "ours; docs/history/benchmarks.md)")


class Runner:
    """x: (B, 3, S, S) float32 on ``device`` -> (B, D) float32 on ``device``.

    ``channels_last``: the input layout the runner wants (callers fill their buffers in it; any layout works).
    ``takes_pixels``: it also takes the uint8 faces (B, 3, S, S) themselves and normalises them in its graph,
    ``(x - 127.5) / 128`` as training's ``preprocess``, bit for bit (saves the caller a float pass).
    """

    path: str
    device: torch.device
    channels_last: bool = False
    takes_pixels: bool = False

    def __call__(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class _Autocast(nn.Module):
    """``module`` under autocast to ``dtype`` (inside the graph that torch.compile traces): x -> float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.module(x).float()


class _Pixels(nn.Module):
    """uint8 faces x (B, 3, S, S) -> ``module((x - 127.5) / 128)``: the normalisation inside the graph."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        from partialface.models.outputs import preprocess

        return self.module(preprocess(x))


class TorchRunner(Runner):
    """PyTorch eager, float32 or under autocast (``dtype`` bf16 / fp16), channels_last."""

    def __init__(self, module: nn.Module, device: torch.device, dtype: torch.dtype | None = None,
                 path: str = "eager") -> None:
        self.path, self.device, self.dtype = path, device, dtype
        self.channels_last = True
        self.module = module.to(device).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._run = _Autocast(self.module, dtype)

    def __call__(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            return self._run(x)


#: images per call of a compiled model: every call has this shape (the last slice of a batch is padded), so
#: it compiles once. Measured for dlib on an AMX Xeon (2 threads, docs/history/benchmarks.md): 32 > 64 > 128.
COMPILE_SLICE = {"cpu": 32, "cuda": 256}


class CompiledRunner(Runner):
    """``torch.compile`` (inductor, weights frozen into the graph: oneDNN's prepacked kernels on CPU) of the
    model in float32 or under ``dtype`` autocast, run on slices of a fixed ``slice`` images (the last one
    zero-padded). Takes normalised input (made contiguous) or uint8 faces (``takes_pixels``; channels_last, as
    the benchmark's variants come: the normalisation and the layout change fuse into the graph's first kernel).

    In float32 the model runs in its ``compile_form`` (:func:`~partialface.inference.onnx_export.export_forms`:
    dlib's affine as Mul then Add), which inductor's freezing folds into the conv before it, exact to float
    rounding; oneDNN then fuses conv + ReLU and conv + residual add. Under bf16 the model keeps its own form:
    folded scales round differently in bf16 and failed the accuracy bar (docs/history/benchmarks.md); on a CPU it
    runs its ``compile_bf16_form``s instead (a ResNet stem's max pool over 16 channels as ATen's kernel; dlib's stem
    pool first). A module with ``compile_stages()`` (input -> network input, network input -> embedding; dlib's
    framing) compiles as two graphs, the first in float32 whatever ``dtype``."""

    takes_pixels = True

    def __init__(self, module: nn.Module, device: torch.device, dtype: torch.dtype | None = None,
                 path: str = "compile", slice: int | None = None) -> None:
        from partialface.inference.onnx_export import export_forms

        self.path, self.device, self.dtype = path, device, dtype
        self.slice = slice or COMPILE_SLICE.get(device.type, 32)
        module = module.to(device).eval()
        stages = getattr(module, "compile_stages", None)
        front, net = stages() if stages is not None else (None, module)
        form = "compile_form" if dtype is None else "compile_bf16_form" if device.type == "cpu" else None
        net = _Autocast(export_forms(net, form) if form else net, dtype).eval()
        compiled_net = torch.compile(net, dynamic=False)
        #: per input dtype, the compiled graphs run one after the other
        self.compiled = ({torch.float32: [compiled_net], torch.uint8: [torch.compile(_Pixels(net), dynamic=False)]}
                         if front is None else
                         {torch.float32: [torch.compile(front, dynamic=False), compiled_net],
                          torch.uint8: [torch.compile(_Pixels(front), dynamic=False), compiled_net]})
        self.ready: set[tuple[torch.dtype, tuple[int, ...]]] = set()

    def _run(self, x: Tensor) -> Tensor:
        for graph in self.compiled[x.dtype]:
            x = graph(x)
        return x

    def _call(self, x: Tensor) -> Tensor:
        import torch._inductor.config as inductor_config

        key = (x.dtype, tuple(x.shape))
        # freezing must be on while dynamo traces, not only in inductor (``torch.compile(options=...)`` reaches
        # inductor alone): dynamo then hands the weights over as constants to fold and prepack
        with inductor_config.patch(freezing=True):
            if key in self.ready:
                return self._run(x)
            try:  # the first call of a shape compiles: a failure there is the machine's, said in one line
                y = self._run(x)
            except Exception as e:
                raise PartialFaceError(f"--infer {self.path}: torch.compile failed on this machine "
                                       f"({type(e).__name__}: {str(e).strip().splitlines()[0][:160]}); "
                                       "use --infer eager or onnx") from None
        self.ready.add(key)
        return y

    def __call__(self, x: Tensor) -> Tensor:
        fmt = torch.channels_last if x.dtype == torch.uint8 else torch.contiguous_format
        if x.dtype != torch.uint8:
            x = x.float()
        x, n, s = x.contiguous(memory_format=fmt), len(x), self.slice
        with torch.inference_mode():
            parts = []
            for i in range(0, n, s):
                part = x[i : i + s]
                if len(part) < s:  # padded in the same layout: one graph per input size
                    part = torch.cat([part, part.new_zeros((s - len(part), *part.shape[1:]))])
                    part = part.contiguous(memory_format=fmt)
                parts.append(self._call(part)[: min(s, n - i)])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


#: images per ONNX Runtime call on the CPU: a larger batch is run in slices of this many. Measured on real
#: PartialLFW variants (Zen 5, 2 threads, docs/history/benchmarks.md): 32 embeds 1.2x faster than one call of 128
#: (ours cpu; dlib 1.07x): a slice's activations stay in the processor's caches.
CPU_SLICE = 32


def pixel_graph(graph: bytes | str | os.PathLike[str]) -> bytes:
    """An ONNX graph with input x (B, 3, S, S) normalised -> the same graph on uint8 faces ``pixels``
    (B, S, S, 3) (NHWC, as the benchmark's variant buffers): Transpose, Cast and (x - 127.5) / 128 in front, so
    x is the same float32 tensor, bit for bit, made by ONNX Runtime's threads."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load_from_string(graph) if isinstance(graph, bytes) else onnx.load(os.fspath(graph))
    g = m.graph
    x = g.input[0]
    b, _, h, w = (d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim)
    g.initializer.extend([helper.make_tensor("pixels_mid", TensorProto.FLOAT, [], [127.5]),
                          helper.make_tensor("pixels_scale", TensorProto.FLOAT, [], [1.0 / 128.0])])
    prefix = [helper.make_node("Transpose", ["pixels"], ["pixels_nchw"], perm=[0, 3, 1, 2]),
              helper.make_node("Cast", ["pixels_nchw"], ["pixels_float"], to=TensorProto.FLOAT),
              helper.make_node("Sub", ["pixels_float", "pixels_mid"], ["pixels_centred"]),
              helper.make_node("Mul", ["pixels_centred", "pixels_scale"], [x.name])]
    nodes = prefix + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.input.remove(x)
    g.input.insert(0, helper.make_tensor_value_info("pixels", TensorProto.UINT8, [b, h, w, 3]))
    return m.SerializeToString()


class OnnxRunner(Runner):
    """ONNX Runtime on an ONNX graph (bytes or a file) whose first output is the embedding (B, D).

    On the CPU a batch runs in slices of ``cpu_slice`` images (default :data:`CPU_SLICE`; 0: whole batches).
    uint8 faces (``takes_pixels``) run on a second session of the graph with :func:`pixel_graph`'s prefix,
    made on first use."""

    takes_pixels = True
    _pixels: OnnxRunner | None = None

    def __init__(self, model: bytes | str | os.PathLike[str], device: torch.device, path: str = "onnx",
                 threads: int | None = None, cpu_slice: int = CPU_SLICE) -> None:
        import onnxruntime as ort

        providers = _ort_providers(device)
        if providers is None:
            raise PartialFaceError(f"--infer {path}: {unavailable('onnx', device)}")
        self.path, self.device, self.threads, self.source = path, device, threads, model
        self.slice = cpu_slice if device.type == "cpu" else 0
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: the variants are made by PyTorch's threads in between
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        src = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(src, so, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad graphs
            raise PartialFaceError(f"{'the exported graph' if isinstance(model, bytes) else model}: ONNX Runtime "
                                   f"cannot load it ({str(e).splitlines()[0][:200]})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def run(self, x: np.ndarray, outputs: list[str] | None = None, dtype: type = np.float32) -> list[np.ndarray]:
        """The graph's outputs (all, or ``outputs`` by name) for x (B, 3, S, S) float32 (or its input's own
        dtype and layout)."""
        return list(self.session.run(outputs, {self.input_name: np.ascontiguousarray(x, dtype)}))

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            if self._pixels is None:
                self._pixels = OnnxRunner(pixel_graph(self.source), self.device, self.path, self.threads, self.slice)
            return self._pixels._run_all(x.detach().cpu().permute(0, 2, 3, 1).numpy(), np.uint8)
        return self._run_all(x.detach().float().cpu().numpy(), np.float32)

    def _run_all(self, xn: np.ndarray, dtype: type) -> Tensor:
        """The embeddings of the whole batch xn, in slices."""
        n = self.slice if 0 < self.slice < len(xn) else len(xn)
        parts = [self.run(xn[i : i + n], [self.output_name], dtype)[0] for i in range(0, len(xn), n)]
        return torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts)).to(self.device)


def quantize_int8(model: bytes, calibration: np.ndarray, batch: int = 32) -> bytes:
    """Static int8 quantisation of an ONNX graph (QDQ, per-channel int8 weights, uint8 activations) with
    activation ranges from ``calibration`` (N, 3, S, S) float32 model inputs (MinMax). The first and the last
    weight layer (Conv / Gemm / MatMul) stay float32: the input layer sees raw pixels and the last one makes
    the embedding (measured on LFW: the closest int8 embeddings; docs/history/benchmarks.md). Returns the graph."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    layers = [n.name for n in onnx.load_from_string(model).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    keep_float = sorted({layers[0], layers[-1]}) if layers else []

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": calibration[i : i + batch]} for i in range(0, len(calibration), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="partialface-int8-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("model.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(model)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep_float)
        return out.read_bytes()


class EmbeddingOf(nn.Module):
    """The embedding of a registered model as a tensor-valued module: x (B, 3, S, S) -> ``model(x).f`` (B, D)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).f


def make_runner(module: nn.Module, path: str, device: torch.device, input_size: int,
                calibration: np.ndarray | None = None) -> Runner:
    """A runner of ``module`` (x (B, 3, S, S) -> (B, D) tensor, e.g. :class:`EmbeddingOf`) on an already chosen
    ``path`` (:func:`choose_path`). ``int8`` needs ``calibration`` (N, 3, S, S) float32 model inputs."""
    if path in ("eager", "bf16", "fp16"):
        return TorchRunner(module, device, AUTOCAST.get(path), path)
    if path in ("compile", "compile-bf16"):
        return CompiledRunner(module, device, AUTOCAST.get(path), path)
    if path not in ("onnx", "int8"):
        raise PartialFaceError(f"--infer {path!r}: choose one of {', '.join(CHOICES)}")
    from partialface.inference.onnx_export import export_bytes

    graph = export_bytes(module.to("cpu").float(), input_size, ["f"])
    if path == "int8":
        if calibration is None or not len(calibration):
            raise ValueError("the int8 path needs calibration inputs")
        graph = quantize_int8(graph, calibration)
    return OnnxRunner(graph, device, path)


__all__ = [
    "AUTOCAST",
    "CHOICES",
    "COMPILE_SLICE",
    "CPU_SLICE",
    "EXACT",
    "LONG_JOB",
    "PATHS",
    "CompiledRunner",
    "EmbeddingOf",
    "OnnxRunner",
    "Runner",
    "TorchRunner",
    "choose_path",
    "faster_path_note",
    "make_runner",
    "quantize_int8",
    "unavailable",
]
