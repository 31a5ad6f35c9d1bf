"""What the benchmark embeds with: the :class:`Embedder` interface, models of this project on an inference path
(:class:`TorchEmbedder`), exported ONNX files (:class:`OnnxFileEmbedder`), and the ``--model`` spec rules.
dlib's network has its embedders in ``dlib_model.py``; ``embed.load_embedder`` picks one for a spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from partialface.errors import PartialFaceError
from partialface.geometry.template import IMAGE_SIZE
from partialface.models.catalogue import CATALOGUE
from partialface.models.config import FRAMINGS, LEGACY_FRAMING, ModelConfig
from partialface.models.files import file_digest, weights_digest  # noqa: F401  (re-exported: the callers import them from here)
from partialface.models.framing import framing_of, to_model_input

#: ``--amp`` of the benchmark, the older spelling of ``--infer`` (see :data:`AMP_TO_PATH`)
AMP_MODES = ("auto", "bf16", "none")
#: ``--model`` values of dlib's face ResNet (partialface.evaluation.dlib_model)
DLIB_MODELS = ("dlib", "dlib-bin", "dlib-chip")
#: OpenCV Zoo's SFace, as shipped in the sface extra (partialface.evaluation.sface_model)
SFACE_MODELS = ("sface",)


class Embedder:
    """Maps a batch of aligned faces (B, 3, 160, 160) uint8 on ``device`` (any strides; the benchmark passes
    channels_last views) to (B, D) float embeddings (not necessarily normalised; the benchmark normalises).

    ``name``: the model's name in the results; ``source``: where it came from (a path, or 'dlib');
    ``module``: the torch module for the report's attention figures (None if not a torch model);
    ``fingerprint``: changes whenever the weights change (invalidates the embedding cache).
    """

    name: str
    source: str
    embedding_dim: int
    device: torch.device
    module: nn.Module | None = None
    fingerprint: str = ""

    @property
    def weights_id(self) -> str:
        """What identifies the embedding space whatever the inference path: the fingerprint before its path."""
        return self.fingerprint.split("|")[0]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def embed_faces(embedder: Embedder, faces: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """(N, D) float32 L2-normalised embeddings of aligned faces (N, 160, 160, 3) uint8, ``batch_size`` at a time."""
    out = []
    for i in range(0, len(faces), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(faces[i : i + batch_size])).to(embedder.device)
        with torch.inference_mode():
            f = embedder(x.permute(0, 3, 1, 2)).float()
        out.append(torch.nn.functional.normalize(f, dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, embedder.embedding_dim), np.float32)


#: ``--amp`` values as inference paths (``partialface.inference.runners``): the older spelling of ``--infer``
AMP_TO_PATH = {"auto": "auto", "bf16": "bf16", "none": "eager"}
#: faces whose activation ranges calibrate the int8 path (the first of the data, holistic; no labels used)
CALIBRATION_FACES = 256


def resolve_infer(infer: str | None, amp: str, device: torch.device) -> str:
    """The inference path of ``--infer`` (wins when given) or the older ``--amp``; see ``choose_path``."""
    from partialface.inference.runners import choose_path

    if infer is None:
        if amp not in AMP_MODES:
            raise PartialFaceError(f"--amp {amp!r}: choose one of {', '.join(AMP_MODES)}")
        return choose_path(AMP_TO_PATH[amp], device, option="--amp")
    return choose_path(infer, device)


class ModelEmbedder(Embedder):
    """An embedder that runs a :class:`partialface.inference.runners.Runner` on model input made from the
    faces by training's ``to_model_input`` (or an equivalent ``to_input``).

    ``path``: the inference path; ``autocast``: its reduced float dtype (None for float32 and int8);
    ``needs_calibration``: True until :meth:`calibrate` has built an int8 runner; ``framing``: how the model's
    input is cut from the aligned face (``partialface.models.framing``; resolved, never "auto").
    """

    runner: Any = None
    path: str = "eager"
    framing: str = "resize"
    autocast: torch.dtype | None = None
    input_size: int = IMAGE_SIZE
    needs_calibration: bool = False
    _buf: torch.Tensor | None = None

    @property
    def channels_last(self) -> bool:
        return bool(getattr(self.runner, "channels_last", False))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Model input of (B, 3, 160, 160) uint8 faces: training's ``to_model_input`` (framed), bit for bit.

        At the model's native size the normalisation ``(x - 127.5) / 128`` is done in one reused float buffer
        (no fresh 40 MB tensors per batch: their page faults would cost as much as the work).
        """
        if self.framing != "resize" or images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            return to_model_input(images, self.input_size, self.channels_last, self.framing)
        shape = tuple(images.shape)
        buf = self._buf
        if buf is None or tuple(buf.shape) != shape or buf.device != images.device:
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            buf = self._buf = torch.empty(shape, dtype=torch.float32, device=images.device, memory_format=fmt)
        # a cast-copy, then (x - 127.5) / 128 in place: both steps exact for uint8 x, so bit-equal to training's.
        # (torch.mul(uint8, scalar, out=float) runs 3x slower than the cast-copy and two float passes.)
        buf.copy_(images)
        return buf.sub_(127.5).mul_(1.0 / 128.0)

    def runner_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the runner takes for (B, 3, 160, 160) uint8 faces: the faces themselves where it normalises in
        its graph (``Runner.takes_pixels``) and no framing or resizing is needed, else :meth:`prepare`'s input."""
        native = images.shape[-1] == self.input_size and images.shape[-2] == self.input_size
        if getattr(self.runner, "takes_pixels", False) and self.framing == "resize" and native:
            return images
        return self.prepare(images)

    def _init_runner(self, module: nn.Module, path: str, input_size: int) -> None:
        """Set up the runner of ``module`` (x (B, 3, S, S) -> (B, D)) on ``path``; int8 waits for calibrate."""
        from partialface.inference.runners import AUTOCAST, make_runner

        self.path, self.input_size = path, input_size
        self.autocast = AUTOCAST.get(path)
        self._make = lambda calibration=None: make_runner(module, path, self.device, input_size, calibration)
        self.needs_calibration = path == "int8"
        self.runner = None if self.needs_calibration else self._make()

    def calibrate(self, faces: torch.Tensor) -> None:
        """Build the int8 runner with activation ranges from ``faces`` (N, 3, 160, 160) uint8."""
        self.runner = self._make(self.prepare(faces.to(self.device)).contiguous().cpu().numpy())
        self.needs_calibration = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.runner is None:
            raise RuntimeError(f"{self.name}: the int8 path is not calibrated yet (call calibrate first)")
        return self.runner(self.runner_input(images))


def path_fingerprint(fingerprint: str, path: str) -> str:
    """Exact paths share the float32 cache (the same numbers to float rounding); reduced precision gets its own."""
    from partialface.inference.runners import EXACT

    return fingerprint if path in EXACT else f"{fingerprint}|{path}"


class TorchEmbedder(ModelEmbedder):
    """A project model (``ModelOutput.f``) on an inference path (``infer``, or the older ``amp``: see
    :func:`resolve_infer`); input normalised with training's ``to_model_input``."""

    def __init__(
        self, name: str, model: nn.Module, device: torch.device, source: str = "", fingerprint: str = "",
        amp: str = "auto", infer: str | None = None,
    ) -> None:
        from partialface.inference.runners import EmbeddingOf

        self.name, self.source, self.device = name, source, device
        cfg = getattr(model, "config", None)
        self.embedding_dim = int(getattr(model, "embedding_dim", 0) or getattr(cfg, "embedding_dim", 0))
        self.framing = framing_of(cfg) if isinstance(cfg, ModelConfig) else "resize"
        self._init_runner(EmbeddingOf(model.eval()), resolve_infer(infer, amp, device),
                          int(getattr(cfg, "input_size", IMAGE_SIZE)))
        self.module = model  # (moved by the runner to where it runs: the report's attention figures use it)
        # embeddings of another precision are other numbers: they get their own cache
        self.fingerprint = path_fingerprint(fingerprint, self.path)


def parse_model_spec(spec: str) -> tuple[str, str]:
    """'NAME=PATH' -> (NAME, PATH); 'PATH' -> (a name derived from the path, PATH)."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        if not name or not path:
            raise PartialFaceError(f"--model {spec!r}: give PATH or NAME=PATH")
        return name, path
    p = Path(spec)
    if spec in CATALOGUE and not p.exists():  # a shipped model by name
        return spec, spec
    if spec in DLIB_MODELS or spec in SFACE_MODELS:  # dlib's face ResNet (port / dlib / chip box); SFace as shipped
        return spec, spec
    if p.suffix == ".onnx":
        return p.stem, spec
    if p.suffix == ".safetensors" and p.name != "model.safetensors":  # a shared file: named after itself
        return p.stem, spec
    if p.name == "model.safetensors":
        p = p.parent
    if p.parent.name == "checkpoints":  # RUN/checkpoints/step_N -> RUN-step_N
        return f"{p.parent.parent.name}-{p.name}", spec
    return p.name or "model", spec


class OnnxFileEmbedder(ModelEmbedder):
    """An exported model (``partialface weights export-onnx``) run by ONNX Runtime: its first output (``f``)
    is the embedding; input size and normalisation come from the file's metadata."""

    def __init__(self, name: str, file: Path, device: torch.device) -> None:
        import onnx

        from partialface.inference.onnx_export import NORMALISATION
        from partialface.inference.runners import OnnxRunner, unavailable

        reason = unavailable("onnx", device)
        if reason is not None:
            raise PartialFaceError(f"--model {file}: {reason}")
        try:
            proto = onnx.load(str(file), load_external_data=False)
        except Exception as e:  # onnx raises DecodeError and friends for non-ONNX files
            raise PartialFaceError(f"--model {file}: not an ONNX model ({str(e).splitlines()[0][:120]})") from None
        meta = {p.key: p.value for p in proto.metadata_props}
        if meta.get("normalisation", NORMALISATION) != NORMALISATION or "input_size" not in meta:
            raise PartialFaceError(f"--model {file}: not exported by `partialface weights export-onnx` "
                                   f"(needs input_size and normalisation {NORMALISATION!r} in its metadata)")
        self.name, self.source, self.device, self.path = name, str(file), device, "onnx"
        self.input_size = int(meta["input_size"])
        self.framing = meta.get("framing", LEGACY_FRAMING)
        if self.framing not in FRAMINGS or self.framing == "auto":
            raise PartialFaceError(f"--model {file}: unknown framing {self.framing!r} in its metadata")
        self.runner = OnnxRunner(file, device)
        out = self.runner.session.get_outputs()[0]
        self.embedding_dim = int(meta.get("embedding_dim") or out.shape[-1])
        self.fingerprint = "onnx:" + file_digest(file)
