"""Embedding for the benchmark: decode aligned faces once, make every variant in memory, embed, cache.

Pipeline per model: a background thread decodes batches of aligned 160x160 faces (a thread pool of
``workers`` decoders; OpenCV releases the GIL) while the main thread makes each needed variant of the
batch with :class:`PartialFaceBatcher` (one reused buffer, on the model's device), frames and normalises it
exactly as training does (:func:`partialface.models.framing.to_model_input`) and runs the model. Every image
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

from partialface.data.images import atomic_write_bytes, read_image
from partialface.errors import PartialFaceError
from partialface.evaluation import dlib_model
from partialface.evaluation.embedders import (
    CALIBRATION_FACES,
    DLIB_MODELS,
    SFACE_MODELS,
    Embedder,
    OnnxFileEmbedder,
    TorchEmbedder,
    parse_model_spec,
    resolve_infer,
    weights_digest,
)
from partialface.geometry.partial import PartialFaceBatcher, Variant
from partialface.geometry.template import IMAGE_SIZE
from partialface.models.catalogue import CATALOGUE, shipped_model

#: Images per resumable chunk (one parts file each).
CHUNK = 1024


# ---------------------------------------------------------------------------------------------- models
def load_embedder(spec: str, device: torch.device, amp: str = "auto", infer: str | None = None) -> Embedder:
    """Build the embedder of one ``--model`` value: a shipped model's name (``partialface.models.catalogue``), a
    project run/step folder or safetensors file, an exported ``.onnx`` file, or ``dlib`` (the PyTorch port of
    dlib's face ResNet), ``dlib-bin`` (dlib itself) or ``dlib-chip`` (the port on dlib's chip geometry); these
    need the extra (see
    ``partialface.evaluation.dlib_model``). ``infer``: the inference path (``partialface.inference.runners``;
    default from ``amp``, see ``embedders.AMP_MODES``); dlib-bin and .onnx files have one path each."""
    name, path = parse_model_spec(spec)
    if path in SFACE_MODELS:  # OpenCV Zoo's SFace, the shipped int8 file on ONNX Runtime
        from partialface.evaluation.sface_model import SFaceOnnxEmbedder

        return SFaceOnnxEmbedder(name, device)
    if path in DLIB_MODELS:  # dlib's face ResNet: the port (on a path) or dlib itself
        emb: Embedder
        if path == "dlib-bin":
            emb = dlib_model.DlibBinEmbedder(device=device)
        else:
            emb = dlib_model.DlibEmbedder(device=device, geometry="chip" if path == "dlib-chip" else "resize",
                                          infer=resolve_infer(infer, amp, device))
        emb.name = name
        return emb
    from partialface.training.checkpoint import _weights_file, load_model

    if path in CATALOGUE and not Path(path).exists():
        path = str(shipped_model(path))
    p = Path(path)
    if not p.exists():
        raise PartialFaceError(
            f"--model {spec}: no such file or folder (give a run folder, step folder, .safetensors or .onnx file, "
            "or a shipped model's name: `partialface models`)"
        )
    if p.suffix == ".onnx":
        return OnnxFileEmbedder(name, p, device)
    file = _weights_file(p)
    model = load_model(file, device="cpu")
    return TorchEmbedder(name, model, device, source=str(file), fingerprint=weights_digest(file), amp=amp, infer=infer)


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
            same_rows = len(rows) == len(pos) and bool((rows == np.arange(len(rows))).all())  # no copy of GBs
            have = {n: old[n] if same_rows else old[n][rows] for n in names if n in old}
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
