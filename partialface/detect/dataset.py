"""Aligning a dataset: every face under SRC to 160x160 under DST (spec §1); ``partialface align`` and the
benchmark call :func:`align_dataset`.

Input: any tree of images under SRC — the LFW layout (``SRC/NAME/NAME_000N.jpg``), identity folders
(``SRC/identity/*.jpg``) or deeper trees. Output: ``DST/<same relative path>.png`` (lossless), 160x160.

Per image: MTCNN (``partialface.detect``, spec settings) finds the faces, the spec's rule picks one,
``align_face`` warps it. No face: the whole image resized to 160x160 (bilinear) is written and the image
is counted as a failure. Unreadable image: nothing is written, the reason is recorded. Per-image
failures never abort the run; only user errors (bad SRC/DST, bad landmarks file, bad option) exit 2.

Files written next to the images (atomically, merged across resumed runs):
- ``DST/align_failures.tsv``: ``path<TAB>kind<TAB>detail`` per failed image (kinds: ``no_face`` —
  resized image written; ``unreadable`` — nothing written; ``name_clash`` — two sources map to the same
  output, the later one (sorted order) is not written; ``error`` — unexpected error, nothing written).
- ``DST/landmarks.tsv``: the 5 points each aligned face used, in the ``--landmarks`` format below, so a
  run's points can be reused (``--landmarks DST/landmarks.tsv``).

Landmarks file format (``--landmarks FILE``; also ``DST/landmarks.tsv``): one image per line, 11
TAB-separated fields (whitespace-separated also accepted when the path has no spaces)::

    path  x1 y1  x2 y2  x3 y3  x4 y4  x5 y5

``path`` is relative to SRC with ``/`` separators (as in ``DST/landmarks.tsv``); the points are image
pixel coordinates (x right, y down) in the spec order: 1 left eye, 2 right eye, 3 nose tip, 4 left mouth
corner, 5 right mouth corner ("left" = smaller x). Lines starting with ``#`` (e.g. a header) and blank
lines are ignored. Any other deviation (field count, non-numeric or non-finite value, absolute or ``..``
path, duplicate path) is an error naming ``FILE:LINE``. Images listed in the file are aligned with the
given points; images not listed are detected as usual, unless ``--landmarks-only``: then exactly the
listed images are aligned (a listed image missing under SRC is an ``unreadable`` failure) and nothing
else is touched.

Resuming: an image is done when its output exists and its outcome is recorded (a row in
``landmarks.tsv`` or a ``no_face`` row in ``align_failures.tsv``); done images are skipped, everything
else is (re)done. Outputs are written atomically, so an existing file is complete; the record files are
written at the end, every minute, and on Ctrl-C (which keeps every finished file).

Parallelism: a thread pool (``--workers``) decodes images ahead of the detector and warps/encodes/writes
results; the detector runs on batches of ``--batch-size`` images on ``--device``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from partialface.data.folders import is_inside, list_images
from partialface.data.images import IMAGE_SUFFIXES, atomic_write_bytes, read_image, read_text_file, write_image
from partialface.devices import resolve_device
from partialface.errors import ImageReadError, PartialFaceError
from partialface.geometry.template import IMAGE_SIZE, LANDMARK_NAMES

FAILURES_FILE = "align_failures.tsv"
LANDMARKS_FILE = "landmarks.tsv"
#: Failure kinds written to align_failures.tsv.
NO_FACE, UNREADABLE, NAME_CLASH, ERROR = "no_face", "unreadable", "name_clash", "error"
_CHECKPOINT_S = 60.0
_LANDMARK_HEADER = "# path\t" + "\t".join(f"{n}_{c}" for n in LANDMARK_NAMES for c in ("x", "y"))
_FAILURES_HEADER = "# path\tkind\tdetail"


# --------------------------------------------------------------------------------------------------
# Landmarks and failures files


def _clean_rel(raw: str) -> str | None:
    """A relative posix path with ``./`` and duplicate slashes removed; None if absolute or escaping."""
    p = PurePosixPath(raw)
    if p.is_absolute() or ".." in p.parts or str(p) in ("", "."):
        return None
    return p.as_posix()


def _split(line: str) -> list[str]:
    return line.split("\t") if "\t" in line else line.split()


def read_landmarks(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a landmarks TSV (format in the module docstring) -> {relative path: (5, 2) float64 x, y}.

    Raises PartialFaceError naming ``FILE:LINE`` for any malformed line.
    """
    p = Path(path)
    text = read_text_file(p, missing="no such landmarks file (pass a TSV of path + x1 y1 ... x5 y5)",
                          not_text="not a UTF-8 text file (expected a TSV of path + x1 y1 ... x5 y5)")
    out: dict[str, np.ndarray] = {}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = [f.strip() for f in _split(line.rstrip("\r\n"))]
        if len(fields) != 11:
            raise PartialFaceError(
                f"{p}:{lineno}: expected 11 fields (path + x1 y1 ... x5 y5, TAB-separated), got {len(fields)}"
            )
        rel = _clean_rel(fields[0])
        if rel is None:
            raise PartialFaceError(f"{p}:{lineno}: path {fields[0]!r} must be relative to SRC (no leading /, no ..)")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            bad = next(v for v in fields[1:] if not _is_float(v))
            raise PartialFaceError(f"{p}:{lineno}: {bad!r} is not a number (expected x1 y1 ... x5 y5)") from None
        if not all(math.isfinite(v) for v in values):
            raise PartialFaceError(f"{p}:{lineno}: landmark coordinates must be finite numbers")
        if rel in out:
            raise PartialFaceError(f"{p}:{lineno}: duplicate entry for {rel} (first on line {first_line[rel]})")
        first_line[rel] = lineno
        out[rel] = np.array(values, dtype=np.float64).reshape(5, 2)
    return out


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _tsv_field(s: str) -> str:
    return s.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_landmarks(path: str | os.PathLike[str], points: Mapping[str, np.ndarray]) -> None:
    """Write {relative path: (5, 2)} as a landmarks TSV (sorted by path, exact float repr), atomically."""
    lines = [_LANDMARK_HEADER]
    for rel in sorted(points):
        pts = np.asarray(points[rel], dtype=np.float64).reshape(10)
        lines.append(_tsv_field(rel) + "\t" + "\t".join(repr(float(v)) for v in pts))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def read_failures(path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """Read ``align_failures.tsv`` -> {relative path: (kind, detail)}; {} when the file is absent."""
    p = Path(path)
    if not p.is_file():
        return {}
    out: dict[str, tuple[str, str]] = {}
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0]:
            raise PartialFaceError(
                f"{p}:{lineno}: expected 3 TAB-separated fields (path, kind, detail); "
                "fix or delete the file (failed images are then redone)"
            )
        out[fields[0]] = (fields[1], fields[2])
    return out


def write_failures(path: str | os.PathLike[str], failures: Mapping[str, tuple[str, str]]) -> None:
    """Write {relative path: (kind, detail)} as ``align_failures.tsv`` (sorted, header line), atomically."""
    lines = [_FAILURES_HEADER]
    lines += [f"{_tsv_field(r)}\t{_tsv_field(k)}\t{_tsv_field(d)}" for r, (k, d) in sorted(failures.items())]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# The job


@dataclass(frozen=True)
class AlignSummary:
    """Outcome over the images of this run's listing (done now or skipped as already done)."""

    total: int
    aligned: int
    no_face: int
    unreadable: int
    other_failures: int
    skipped: int
    processed: int
    failures_file: Path
    landmarks_file: Path

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        s = f"aligned {self.aligned:,} / {self.total:,}"
        if self.skipped:
            s += f" ({self.skipped:,} already done, skipped)"
        s += f"; {self.no_face:,} without a face (resized), {self.unreadable:,} unreadable"
        if self.other_failures:
            s += f", {self.other_failures:,} other failures"
        failed = self.no_face + self.unreadable + self.other_failures
        s += f"; failures listed in {self.failures_file}" if failed else "; no failures"
        return s


@dataclass
class _Item:
    rel: str
    src: Path
    out: Path
    points: np.ndarray | None


@dataclass
class _Loaded:
    item: _Item
    image: np.ndarray | None
    error: str | None


@dataclass
class _State:
    """Outcome records (mutated by the main thread only)."""

    landmarks: dict[str, np.ndarray]
    failures: dict[str, tuple[str, str]]
    landmarks_file: Path
    failures_file: Path
    dirty: bool = False
    last_flush: float = field(default_factory=time.monotonic)

    def record(self, rel: str, points: np.ndarray | None, failure: tuple[str, str] | None) -> None:
        self.landmarks.pop(rel, None)
        self.failures.pop(rel, None)
        if points is not None:
            self.landmarks[rel] = points
        if failure is not None:
            self.failures[rel] = failure
        self.dirty = True

    def flush(self, force: bool = False) -> None:
        if not self.dirty and not force:
            return
        write_landmarks(self.landmarks_file, self.landmarks)
        write_failures(self.failures_file, self.failures)
        self.dirty = False
        self.last_flush = time.monotonic()


class _InlineExecutor(Executor):
    """Runs each task at submit time (``--workers 0``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        f: Future[Any] = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            f.set_exception(e)
        return f


def _output_path(dst: Path, rel: str) -> Path:
    return dst / PurePosixPath(rel).with_suffix(".png")



def _load(item: _Item) -> _Loaded:
    try:
        return _Loaded(item, read_image(item.src), None)
    except ImageReadError as e:
        return _Loaded(item, None, str(e))
    except Exception as e:  # e.g. PIL's DecompressionBombError: still a per-image failure
        return _Loaded(item, None, f"{item.src}: cannot read image ({type(e).__name__}: {e})")


class _Prefetcher:
    """Decoded images in order, at most ``window`` decodes in flight; ``cancel()`` drops the rest."""

    def __init__(self, pool: Executor, items: Sequence[_Item], window: int) -> None:
        self._pool, self._it, self._window = pool, iter(items), window
        self._queue: deque[Future[_Loaded]] = deque()

    def __iter__(self) -> Iterator[_Loaded]:
        for item in self._it:
            self._queue.append(self._pool.submit(_load, item))
            if len(self._queue) >= self._window:
                break
        while self._queue:
            fut = self._queue.popleft()
            nxt = next(self._it, None)
            if nxt is not None:
                self._queue.append(self._pool.submit(_load, nxt))
            yield fut.result()

    def cancel(self) -> None:
        for fut in self._queue:
            fut.cancel()
        self._queue.clear()


def _batches(loaded: Iterable[_Loaded], size: int) -> Iterator[list[_Loaded]]:
    batch: list[_Loaded] = []
    for x in loaded:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _detect(images: list[np.ndarray], device: str, compile: bool = False) -> list[list[Any] | Exception]:
    """Faces per image via ``partialface.detect.detect_faces_batch``; an image whose detection raises
    gets the exception instead (the batch is retried one image at a time)."""
    import partialface.detect as detect

    if not images:
        return []
    try:
        return list(detect.detect_faces_batch(images, device=device, compile=compile))
    except Exception:
        pass
    out: list[list[Any] | Exception] = []
    for im in images:
        try:
            out.append(list(detect.detect_faces_batch([im], device=device, compile=compile)[0]))
        except Exception as e:
            out.append(e)
    return out


def _finish(item: _Item, image: np.ndarray, points: np.ndarray | None) -> tuple[_Item, np.ndarray | None]:
    """Warp (or resize when ``points`` is None) and write the output; returns what to record."""
    from partialface.geometry.align import align_face, resize_fallback

    out = align_face(image, points) if points is not None else resize_fallback(image)
    assert out.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    try:
        write_image(item.out, out)
    except OSError as e:
        raise PartialFaceError(
            f"{item.out}: cannot write ({e.strerror or e}); check free space and permissions of DST"
        ) from None
    return item, points


def align_dataset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    landmarks: str | os.PathLike[str] | None = None,
    landmarks_only: bool = False,
    batch_size: int = 32,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    compile: bool = False,
) -> AlignSummary:
    """Align every image under ``src`` into ``dst`` (see the module docstring); returns the summary.
    ``compile``: the detector's P-Net as a compiled graph (``MTCNN(compile=True)``; CPU), compiled before any image.

    Raises PartialFaceError for user errors (before any image is touched); per-image failures are recorded.
    """
    say = log or (lambda s: print(s, file=sys.stderr))
    src_p, dst_p = Path(src), Path(dst)
    n_workers = _check_options(src_p, dst_p, landmarks, landmarks_only, batch_size, workers)
    given = read_landmarks(landmarks) if landmarks is not None else {}
    rels = _images_to_align(src_p, given, landmarks, landmarks_only, say)
    dst_p.mkdir(parents=True, exist_ok=True)
    state = _State(
        landmarks=read_landmarks(dst_p / LANDMARKS_FILE) if (dst_p / LANDMARKS_FILE).is_file() else {},
        failures=read_failures(dst_p / FAILURES_FILE),
        landmarks_file=dst_p / LANDMARKS_FILE,
        failures_file=dst_p / FAILURES_FILE,
    )
    todo, skipped = _plan(src_p, dst_p, rels, given, state)
    need_detector = any(item.points is None for item in todo)
    dev = str(resolve_device(device)) if need_detector or device != "auto" else "cpu"
    if compile and need_detector:
        if not dev.startswith("cpu"):
            raise PartialFaceError(f"--compile: for the detector on a CPU (--device {device} gives {dev}); run "
                                   "without --compile")
        from partialface.detect import default_detector

        default_detector(dev, compile=True).compile_now()  # a failure here is one line, before any image
    _align_all(todo, state, dev, batch_size, n_workers, progress, compile)

    kinds = [state.failures[r][0] for r in rels if r in state.failures]
    no_face = kinds.count(NO_FACE)
    unreadable = kinds.count(UNREADABLE)
    return AlignSummary(
        total=len(rels),
        aligned=len(rels) - len(kinds),
        no_face=no_face,
        unreadable=unreadable,
        other_failures=len(kinds) - no_face - unreadable,
        skipped=skipped,
        processed=len(todo),
        failures_file=state.failures_file,
        landmarks_file=state.landmarks_file,
    )


def _check_options(
    src: Path, dst: Path, landmarks: str | os.PathLike[str] | None, landmarks_only: bool, batch_size: int,
    workers: int | None,
) -> int:
    """Refuse bad options and folders before any image is touched; the number of worker threads."""
    if batch_size < 1:
        raise PartialFaceError(f"--batch-size must be >= 1, got {batch_size}")
    n_workers = min(8, os.cpu_count() or 1) if workers is None else workers
    if n_workers < 0:
        raise PartialFaceError(f"--workers must be >= 0, got {workers}")
    if landmarks_only and landmarks is None:
        raise PartialFaceError("--landmarks-only needs --landmarks FILE")
    if not src.is_dir():
        what = "no such folder" if not src.exists() else "not a folder"
        raise PartialFaceError(f"{src}: {what} (SRC must be the dataset folder holding the images)")
    if is_inside(dst, src):
        raise PartialFaceError(f"{dst}: DST must not be SRC or inside SRC ({src}); choose another folder")
    if dst.exists() and not dst.is_dir():
        raise PartialFaceError(f"{dst}: exists and is not a folder (DST must be a folder)")
    return n_workers


def _images_to_align(
    src: Path, given: Mapping[str, np.ndarray], landmarks: str | os.PathLike[str] | None, landmarks_only: bool,
    say: Callable[[str], None],
) -> list[str]:
    """The relative paths to align: the listed ones (``landmarks_only``) or every image under ``src``."""
    if landmarks_only:
        rels = sorted(given)
        if not rels:
            raise PartialFaceError(f"{landmarks}: no landmark rows; nothing to align with --landmarks-only")
        return rels
    rels = list_images(src, IMAGE_SUFFIXES, what="dataset folder holding the images")
    if not rels:
        raise PartialFaceError(f"{src}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} at any depth)")
    unknown = sorted(set(given) - set(rels))
    if unknown:
        say(f"note: {len(unknown):,} row(s) of {landmarks} name images not under {src} (ignored; first: {unknown[0]})")
    return rels


def _plan(
    src: Path, dst: Path, rels: Sequence[str], given: Mapping[str, np.ndarray], state: _State
) -> tuple[list[_Item], int]:
    """(the images still to do, how many are done already); name clashes are recorded as failures."""
    todo: list[_Item] = []
    owner: dict[Path, str] = {}
    skipped = 0
    for rel in rels:
        out = _output_path(dst, rel)
        if out in owner:
            state.record(rel, None, (NAME_CLASH, f"same output {out.name} as {owner[out]}; rename one of them"))
            continue
        owner[out] = rel
        recorded = rel in state.landmarks or state.failures.get(rel, ("", ""))[0] == NO_FACE
        if recorded and out.is_file():
            skipped += 1
            continue
        todo.append(_Item(rel, src / rel, out, given.get(rel)))
    return todo, skipped


def _align_all(todo: Sequence[_Item], state: _State, dev: str, batch_size: int, n_workers: int, progress: bool,
               compile: bool = False) -> None:
    """Decode ahead, detect in batches, warp and write in the pool; record every outcome (also on Ctrl-C)."""
    pool: Executor = ThreadPoolExecutor(n_workers, thread_name_prefix="align") if n_workers else _InlineExecutor()
    pending: deque[Future[tuple[_Item, np.ndarray | None]]] = deque()
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="img", desc="align", disable=not progress or not todo, dynamic_ncols=True)

    def collect(fut: Future[tuple[_Item, np.ndarray | None]]) -> None:
        item, pts = fut.result()
        state.record(item.rel, pts, None if pts is not None else (NO_FACE, "no face found; image resized"))
        bar.update(1)

    def drain(limit: int) -> None:
        while pending and (pending[0].done() or len(pending) > limit):
            collect(pending.popleft())

    def fail(item: _Item, kind: str, detail: str) -> None:
        state.record(item.rel, None, (kind, detail))
        bar.update(1)

    prefetch = _Prefetcher(pool, todo, window=2 * batch_size + n_workers)
    try:
        for batch in _batches(prefetch, batch_size):
            readable = [b for b in batch if b.image is not None]
            to_detect = [b for b in readable if b.item.points is None]
            found = _detect([b.image for b in to_detect if b.image is not None], dev, compile)
            faces_of = {id(b): f for b, f in zip(to_detect, found, strict=True)}
            for b in batch:
                if b.image is None:
                    fail(b.item, UNREADABLE, b.error or "unreadable")
                    continue
                points = b.item.points
                if points is None:
                    faces = faces_of[id(b)]
                    if isinstance(faces, Exception):
                        fail(b.item, ERROR, f"face detection failed ({type(faces).__name__}: {faces})")
                        continue
                    points = _pick_landmarks(faces, b.image.shape)
                pending.append(pool.submit(_finish, b.item, b.image, points))
            drain(limit=2 * batch_size)
            if time.monotonic() - state.last_flush > _CHECKPOINT_S:
                state.flush()
        drain(limit=0)
    except BaseException:
        # Ctrl-C or a fatal error: drop queued decodes, let the submitted writes finish (their detection is
        # done), record what is complete, then re-raise.
        prefetch.cancel()
        wait(pending)
        pool.shutdown(wait=True, cancel_futures=True)
        for fut in pending:
            if not fut.cancelled() and fut.exception() is None:
                collect(fut)
        state.flush(force=True)
        bar.close()
        raise
    pool.shutdown(wait=True)
    bar.close()
    state.flush(force=True)


def _pick_landmarks(faces: Sequence[Any], shape: tuple[int, ...]) -> np.ndarray | None:
    """Landmarks (5, 2) of the face the spec keeps, or None when there is none."""
    from partialface.detect import select_face

    face = select_face(list(faces), shape)
    return None if face is None else np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2)
