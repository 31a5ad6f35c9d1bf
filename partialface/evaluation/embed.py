"""Embedding for the benchmark: decode aligned faces once, make every variant in memory, embed, cache.

Pipeline per model: a background thread decodes batches of aligned 160x160 faces (a thread pool of
``workers`` decoders; OpenCV releases the GIL) while the main thread makes each needed variant of the
batch with :class:`PartialFaceBatcher` (one reused buffer, on the model's device), normalises it exactly
as training does (:func:`partialface.training.augment.to_model_input`) and runs the model. Every image
is decoded once and embedded once per variant.

Cache: ``OUT/embeddings/<model>.npz`` holds ``keys`` (image keys, sorted) and one (N, D) float32 array of
L2-normalised embeddings per variant name (``str(Variant)``), plus ``meta`` (a JSON string: weights
path and fingerprint, flip, ...); it is reused when all but the path match (a moved or renamed checkpoint
keeps its cache; models without a fingerprint match on the path too). Work in progress goes to
``OUT/embeddings/<model>.parts/chunk_NNNNN.npz`` (one file per chunk of images, all pending variants,
written atomically), so an interrupted run resumes at the first missing chunk; the parts are consolidated
into the ``.npz`` (atomic) and removed at the end.

Flip (``flip=True``): the embedding is ``normalise(f(x) + f(flip(x)))`` with ``flip`` the horizontal
mirror. Mirroring swaps left and right: a left-eye partial face, flipped, shows an eye-like region on
the right of the image, so the flipped half of the embedding sees the other part's position.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from partialface.data.images import atomic_write_bytes, read_image
from partialface.errors import PartialFaceError
from partialface.geometry.partial import PartialFaceBatcher, Variant
from partialface.geometry.template import IMAGE_SIZE
from partialface.inference.runners import CHOICES as INFER_CHOICES

#: Images per resumable chunk (one parts file each).
CHUNK = 1024
#: ``--amp`` of the benchmark, the older spelling of ``--infer`` (see :data:`AMP_TO_PATH`)
AMP_MODES = ("auto", "bf16", "none")
#: ``--model`` values of dlib's face ResNet (partialface.evaluation.dlib_model)
DLIB_MODELS = ("dlib", "dlib-bin", "dlib-chip")


# ---------------------------------------------------------------------------------------------- embedders
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

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    ``needs_calibration``: True until :meth:`calibrate` has built an int8 runner.
    """

    runner: Any = None
    path: str = "eager"
    autocast: torch.dtype | None = None
    input_size: int = IMAGE_SIZE
    needs_calibration: bool = False
    _buf: torch.Tensor | None = None

    @property
    def channels_last(self) -> bool:
        return bool(getattr(self.runner, "channels_last", False))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Model input of (B, 3, 160, 160) uint8 faces: training's ``to_model_input``, bit for bit.

        At the model's native size the normalisation ``(x - 127.5) / 128`` is done in one reused float buffer
        (no fresh 40 MB tensors per batch: their page faults would cost as much as the work).
        """
        from partialface.training.augment import to_model_input

        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            return to_model_input(images, self.input_size, channels_last=self.channels_last)
        shape = tuple(images.shape)
        buf = self._buf
        if buf is None or tuple(buf.shape) != shape or buf.device != images.device:
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            buf = self._buf = torch.empty(shape, dtype=torch.float32, device=images.device, memory_format=fmt)
        # x / 128 - 127.5 / 128 in two passes: bit-equal to (x - 127.5) / 128 (both steps exact for uint8 x)
        torch.mul(images, 1.0 / 128.0, out=buf)
        return buf.sub_(127.5 / 128.0)

    def _init_runner(self, module: nn.Module, path: str, input_size: int) -> None:
        """Set up the runner of ``module`` (x (B, 3, S, S) -> (B, D)) on ``path``; int8 waits for calibrate."""
        from partialface.inference.runners import make_runner

        self.path, self.input_size = path, input_size
        self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(path)
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
        return self.runner(self.prepare(images))


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
    if spec in DLIB_MODELS:  # dlib's face ResNet: the PyTorch port / dlib itself / the port on dlib's chip box
        return spec, spec
    if p.suffix == ".onnx":
        return p.stem, spec
    if p.name == "model.safetensors" or p.suffix == ".safetensors":
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
        self.runner = OnnxRunner(file, device)
        out = self.runner.session.get_outputs()[0]
        self.embedding_dim = int(meta.get("embedding_dim") or out.shape[-1])
        self.fingerprint = "onnx:" + _file_digest(file)


def load_embedder(spec: str, device: torch.device, amp: str = "auto", infer: str | None = None) -> Embedder:
    """Build the embedder of one ``--model`` value: a project run/step folder or safetensors file, an exported
    ``.onnx`` file, or ``dlib`` (the PyTorch port of dlib's face ResNet), ``dlib-bin`` (dlib itself) or
    ``dlib-chip`` (the port on dlib's chip geometry); these need the extra (see
    ``partialface.evaluation.dlib_model``). ``infer``: the inference path (``partialface.inference.runners``;
    default from ``amp``, see :data:`AMP_MODES`); dlib-bin and .onnx files have one path each."""
    name, path = parse_model_spec(spec)
    if path in DLIB_MODELS:
        import importlib

        try:  # optional reference model: DlibEmbedder(device=...) -> an Embedder (see the class docstring)
            dlib_model = importlib.import_module("partialface.evaluation.dlib_model")
        except ImportError:
            raise PartialFaceError(
                "--model dlib: the dlib reference model is not available in this install "
                "(install the extra: pip install 'partialface[dlib]')"
            ) from None
        emb: Embedder
        if path == "dlib-bin":
            emb = dlib_model.DlibBinEmbedder(device=device)
        else:
            emb = dlib_model.DlibEmbedder(device=device, geometry="chip" if path == "dlib-chip" else "resize",
                                          infer=resolve_infer(infer, amp, device))
        emb.name = name
        return emb
    from partialface.training.checkpoint import _weights_file, load_model

    p = Path(path)
    if not p.exists():
        raise PartialFaceError(
            f"--model {spec}: no such file or folder (give a run folder, step folder, .safetensors or .onnx file)"
        )
    if p.suffix == ".onnx":
        return OnnxFileEmbedder(name, p, device)
    file = _weights_file(p)
    model = load_model(file, device="cpu")
    return TorchEmbedder(name, model, device, source=str(file), fingerprint=_file_digest(file), amp=amp, infer=infer)


# ---------------------------------------------------------------------------------------------- decoding
def decode_aligned(path: Path) -> np.ndarray:
    """An aligned face file -> (160, 160, 3) uint8 RGB. PartialFaceError if it is not 160x160."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        rgb = read_image(path)  # raises the project's one-line error for unreadable files
    else:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if rgb.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise PartialFaceError(
            f"{path}: {rgb.shape[1]}x{rgb.shape[0]} image, not an aligned {IMAGE_SIZE}x{IMAGE_SIZE} face "
            "(run without --aligned so the benchmark aligns the data first)"
        )
    return rgb


_DONE = object()


def prefetch_batches(
    paths: Sequence[Path], batch_size: int, workers: int, depth: int = 3
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start row, (B, 160, 160, 3) uint8) batches of ``paths`` in order, decoded ahead of use by a
    background thread (``workers`` decoder threads, at least 1; up to ``depth`` batches in flight)."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            with ThreadPoolExecutor(max(1, workers)) as pool:
                for start in range(0, len(paths), batch_size):
                    if stop.is_set():
                        return
                    chunk = paths[start : start + batch_size]
                    batch = np.empty((len(chunk), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
                    for i, img in enumerate(pool.map(decode_aligned, chunk)):
                        batch[i] = img
                    q.put((start, batch))
            q.put(_DONE)
        except BaseException as e:  # handed to the consumer
            q.put(e)

    t = threading.Thread(target=produce, name="partialface-decode", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock the producer if it waits on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


# ---------------------------------------------------------------------------------------------- embedding
def _embed_variants(
    embedder: Embedder, batch: torch.Tensor, variants: Sequence[Variant], flip: bool
) -> Iterator[tuple[Variant, torch.Tensor]]:
    """(variant, (B, D) float32 L2-normalised tensor on the embedder's device) for each variant."""
    batcher = PartialFaceBatcher(batch)
    for v, x in batcher.variants(variants, reuse_buffer=True):
        f = embedder(x)
        if flip:
            f = f + embedder(x.flip(-1))
        yield v, torch.nn.functional.normalize(f.float(), dim=1)


def embed_batch(
    embedder: Embedder,
    batch: torch.Tensor,
    variants: Sequence[Variant],
    flip: bool = False,
) -> Iterator[tuple[Variant, np.ndarray]]:
    """Embeddings of one batch in every variant: batch (B, 160, 160, 3) uint8 on the embedder's device ->
    yields (variant, (B, D) float32 L2-normalised). Variants are made in one reused buffer."""
    for v, f in _embed_variants(embedder, batch, variants, flip):
        yield v, f.cpu().numpy()


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed .npz atomically (temp file in the same folder + rename), streamed to disk
    (no in-memory copy of what may be a GB of embeddings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        print(f"note: ignoring unreadable cache {path} ({e})", file=sys.stderr)
        return None


@dataclass
class EmbedStats:
    """What one ``embed_dataset`` call did: images decoded, (image, variant) embeddings computed."""

    decoded: int = 0
    computed: int = 0
    reused_variants: int = 0


def _meta(embedder: Embedder, flip: bool) -> str:
    return json.dumps(
        {"source": embedder.source, "fingerprint": embedder.fingerprint, "flip": flip, "dim": embedder.embedding_dim},
        sort_keys=True,
    )


def _cache_key(meta: str) -> str:
    """The part of a cache's meta that decides whether its embeddings can be reused: all of it, less the
    weights' path (``source``) where a fingerprint identifies the weights, so that a moved or renamed
    checkpoint keeps its cache."""
    try:
        d = json.loads(meta)
    except ValueError:
        return meta
    if not isinstance(d, dict) or not d.get("fingerprint"):
        return meta
    return json.dumps({k: v for k, v in d.items() if k != "source"}, sort_keys=True)


def embed_dataset(
    embedder: Embedder,
    keys: Sequence[str],
    paths: Sequence[Path],
    variants: Sequence[Variant],
    cache: Path,
    *,
    flip: bool = False,
    batch_size: int = 128,
    workers: int = 2,
    progress: bool = True,
    stats: EmbedStats | None = None,
    chunk: int = CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Embeddings of ``keys`` (files ``paths``) in every variant, through the cache file ``cache``.

    Returns {"keys": (N,) str, str(variant): (N, D) float32} for the requested variants. Variants already
    in a matching cache (same weights, flip and a superset of the keys) are reused; the others are computed
    chunk by chunk (resumable) and merged into the cache.
    """
    from tqdm import tqdm

    st = stats if stats is not None else EmbedStats()
    keys_arr = np.asarray(list(keys))
    meta = _meta(embedder, flip)
    key = _cache_key(meta)
    names = [str(v) for v in variants]
    have: dict[str, np.ndarray] = {}
    old = _load_npz(cache) if cache.is_file() else None
    same = old is not None and _cache_key(str(old.get("meta", np.array("")))) == key
    if old is not None and same and "keys" in old:
        pos = {k: i for i, k in enumerate(old["keys"].tolist())}
        if all(k in pos for k in keys_arr.tolist()):
            rows = np.fromiter((pos[k] for k in keys_arr.tolist()), np.int64, count=len(keys_arr))
            have = {n: old[n][rows] for n in names if n in old}
    elif old is not None:
        print(f"note: {cache} was made by other weights or settings; embedding again", file=sys.stderr)
    st.reused_variants = len(have)
    pending = [v for v in variants if str(v) not in have]
    if pending and getattr(embedder, "needs_calibration", False):
        calib = list(paths[: min(CALIBRATION_FACES, len(paths))])
        faces = np.stack([decode_aligned(p) for p in calib])
        embedder.calibrate(torch.from_numpy(faces).permute(0, 3, 1, 2))  # type: ignore[attr-defined]
    if pending:
        parts = cache.with_suffix(".parts")
        text = "\n".join([key, *keys_arr.tolist(), *map(str, pending)])
        tag = hashlib.sha256(text.encode())
        parts_id = tag.hexdigest()[:16]
        if parts.is_dir() and (parts / "id").is_file() and (parts / "id").read_text().strip() != parts_id:
            shutil.rmtree(parts)
        parts.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(parts / "id", (parts_id + "\n").encode())
        out = {str(v): np.zeros((len(keys_arr), embedder.embedding_dim), np.float32) for v in pending}
        n_chunks = (len(keys_arr) + chunk - 1) // chunk
        bar = tqdm(total=len(keys_arr) * len(pending), desc=f"embed {embedder.name}", unit="emb",
                   disable=not progress, dynamic_ncols=True)
        for c in range(n_chunks):
            lo, hi = c * chunk, min(len(keys_arr), (c + 1) * chunk)
            part_file = parts / f"chunk_{c:05d}.npz"
            got = _load_npz(part_file) if part_file.is_file() else None
            if got is not None and all(str(v) in got and got[str(v)].shape[0] == hi - lo for v in pending):
                for v in pending:
                    out[str(v)][lo:hi] = got[str(v)]
                bar.update((hi - lo) * len(pending))
                continue
            res = {str(v): np.zeros((hi - lo, embedder.embedding_dim), np.float32) for v in pending}
            for start, batch in prefetch_batches(list(paths[lo:hi]), batch_size, workers):
                st.decoded += batch.shape[0]
                t = torch.from_numpy(batch)
                if embedder.device.type == "cuda":
                    t = t.pin_memory().to(embedder.device, non_blocking=True)
                feats = []  # kept on the device: one copy to the host per batch, no sync per variant
                for _v, f in _embed_variants(embedder, t, pending, flip):
                    feats.append(f)
                    st.computed += f.shape[0]
                    bar.update(f.shape[0])
                host = torch.stack(feats).cpu().numpy()
                for v, f_np in zip(pending, host, strict=True):
                    res[str(v)][start : start + f_np.shape[0]] = f_np
            save_npz(part_file, res)
            for n, a in res.items():
                out[n][lo:hi] = a
            if on_chunk is not None:
                on_chunk(c)
        bar.close()
        have.update(out)
        merged: dict[str, np.ndarray] = {"keys": keys_arr, "meta": np.array(meta)}
        if old is not None and same and np.array_equal(old["keys"], keys_arr):
            merged.update({k: v for k, v in old.items() if k not in ("keys", "meta")})
        merged.update(have)
        save_npz(cache, merged)
        shutil.rmtree(parts, ignore_errors=True)
    result: dict[str, np.ndarray] = {"keys": keys_arr}
    result.update({n: have[n] for n in names})
    return result


def cache_name(name: str) -> str:
    """A model name made safe as a file name."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return safe or "model"


__all__ = [
    "AMP_MODES",
    "CALIBRATION_FACES",
    "CHUNK",
    "INFER_CHOICES",
    "EmbedStats",
    "Embedder",
    "ModelEmbedder",
    "OnnxFileEmbedder",
    "TorchEmbedder",
    "cache_name",
    "decode_aligned",
    "embed_batch",
    "embed_dataset",
    "load_embedder",
    "parse_model_spec",
    "path_fingerprint",
    "prefetch_batches",
    "resolve_infer",
    "save_npz",
]
