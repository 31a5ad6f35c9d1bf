"""``partialface export-partial ALIGNED DST``: write the published PartialLFW folder tree (spec §2).

For every aligned 160x160 face ``ALIGNED/<rel>`` (any tree; normally ``NAME/NAME_000N.png`` from
``partialface align``) and every selected variant this writes::

    DST/{part}/factor_{f}/<rel with .png suffix>            (non-centred)
    DST/{part}_centered/factor_{f}/<rel with .png suffix>   (centred)

for the 4 parts (lEye, rEye, Nose, Mouth) x 9 factors (``template.factor_name``: factor_0.1 ...
factor_0.5) x 2 settings = 72 PNGs per face, pixels from ``partial_face`` (the exact path).
Resumable: existing outputs are skipped (they are written atomically, so an existing file is complete).
Images that are not readable or not 160x160 are skipped and listed in the summary (no output).
Parallel: a process pool over images (PNG encoding dominates); ``--workers 0`` runs inline.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context
from pathlib import Path, PurePosixPath

from partialface.data.folders import is_inside, list_images
from partialface.data.images import IMAGE_SUFFIXES, read_image, write_image
from partialface.errors import PartialFaceError
from partialface.geometry.template import FACTORS, IMAGE_SIZE, PARTS, Part, factor_name

#: Setting names accepted by --settings (first name is canonical) -> centred?
SETTINGS: dict[str, bool] = {
    "noncentred": False,
    "non-centred": False,
    "noncentered": False,
    "non-centered": False,
    "centred": True,
    "centered": True,
}


@dataclass(frozen=True)
class ExportVariant:
    """One folder of the tree: part, factor and setting; ``folder`` is its path below DST."""

    part: Part
    factor: float
    centred: bool

    @property
    def folder(self) -> str:
        return f"{self.part}{'_centered' if self.centred else ''}/{factor_name(self.factor)}"


@dataclass(frozen=True)
class ExportSummary:
    """images: faces listed; variants: per face; written / skipped: files; failed: (rel, reason) of faces
    that could not be exported (unreadable or not 160x160)."""

    images: int
    variants: int
    written: int
    skipped: int
    failed: tuple[tuple[str, str], ...]

    def line(self, dst: Path) -> str:
        s = (
            f"exported {self.images - len(self.failed):,} / {self.images:,} faces x {self.variants} variants "
            f"to {dst}: {self.written:,} files written, {self.skipped:,} already there"
        )
        if self.failed:
            s += f"; {len(self.failed):,} faces skipped (first: {self.failed[0][0]}: {self.failed[0][1]})"
        return s


def select_variants(
    parts: Sequence[str] | None = None,
    factors: Sequence[float] | None = None,
    settings: Sequence[str] | None = None,
) -> list[ExportVariant]:
    """The variants to export (default: all 72), in published order part x setting x factor.

    parts: names from PARTS (case-insensitive); factors: values of FACTORS (compared to 1e-9);
    settings: ``noncentred`` / ``centred`` (American spellings accepted). Raises PartialFaceError.
    """
    by_lower = {p.lower(): p for p in PARTS}
    sel_parts: list[Part] = []
    for p in parts if parts is not None else PARTS:
        if p.lower() not in by_lower:
            raise PartialFaceError(f"--parts: unknown part {p!r}; choose from {', '.join(PARTS)}")
        sel_parts.append(by_lower[p.lower()])
    sel_factors: list[float] = []
    for f in factors if factors is not None else FACTORS:
        match = [g for g in FACTORS if abs(g - f) < 1e-9]
        if not match:
            raise PartialFaceError(
                f"--factors: {f} is not a benchmark factor; choose from {', '.join(map(str, FACTORS))}"
            )
        sel_factors.append(match[0])
    sel_settings: list[bool] = []
    for s in settings if settings is not None else ("noncentred", "centred"):
        if s.lower() not in SETTINGS:
            raise PartialFaceError(f"--settings: unknown setting {s!r}; choose from noncentred, centred")
        sel_settings.append(SETTINGS[s.lower()])
    out: list[ExportVariant] = []
    for part in dict.fromkeys(sel_parts):
        for centred in dict.fromkeys(sel_settings):
            out.extend(ExportVariant(part, f, centred) for f in dict.fromkeys(sel_factors))
    return out


def output_path(dst: Path, variant: ExportVariant, rel: str) -> Path:
    """``DST/{part}[_centered]/factor_{f}/<rel with .png suffix>``."""
    return dst / variant.folder / PurePosixPath(rel).with_suffix(".png")


def _export_one(src: Path, dst: Path, rel: str, variants: Sequence[ExportVariant]) -> tuple[str, int, int, str | None]:
    """Write the missing variants of one face. Returns (rel, written, skipped, error or None)."""
    from partialface.geometry.partial import partial_face

    missing = [v for v in variants if not output_path(dst, v, rel).is_file()]
    if not missing:
        return rel, 0, len(variants), None
    try:
        aligned = read_image(src / rel)
    except PartialFaceError as e:
        return rel, 0, 0, str(e)
    if aligned.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        h, w = aligned.shape[:2]
        return rel, 0, 0, f"{src / rel}: not an aligned face ({w}x{h}, expected {IMAGE_SIZE}x{IMAGE_SIZE})"
    for v in missing:
        write_image(output_path(dst, v, rel), partial_face(aligned, v.part, v.factor, v.centred))
    return rel, len(missing), len(variants) - len(missing), None


def _export_chunk(
    src: Path, dst: Path, rels: Sequence[str], variants: Sequence[ExportVariant]
) -> list[tuple[str, int, int, str | None]]:
    return [_export_one(src, dst, r, variants) for r in rels]


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it lets running chunks finish


def _chunks(xs: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def export_partial(
    aligned: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    variants: Sequence[ExportVariant] | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
    chunk: int = 8,
) -> ExportSummary:
    """Write the PartialLFW tree for every face under ``aligned`` into ``dst``; returns the summary."""
    src_p, dst_p = Path(aligned), Path(dst)
    vs = list(variants) if variants is not None else select_variants()
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    if n_workers < 0:
        raise PartialFaceError(f"--workers must be >= 0, got {workers}")
    if not src_p.is_dir():
        what = "no such folder" if not src_p.exists() else "not a folder"
        raise PartialFaceError(
            f"{src_p}: {what} (ALIGNED must hold 160x160 faces, e.g. the DST of 'partialface align')"
        )
    if is_inside(dst_p, src_p):
        raise PartialFaceError(f"{dst_p}: DST must not be ALIGNED or inside it ({src_p}); choose another folder")
    if dst_p.exists() and not dst_p.is_dir():
        raise PartialFaceError(f"{dst_p}: exists and is not a folder (DST must be a folder)")
    rels = list_images(src_p, IMAGE_SUFFIXES, what="folder of aligned faces")
    if not rels:
        raise PartialFaceError(f"{src_p}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} at any depth)")
    dst_p.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    written = skipped = 0
    failed: list[tuple[str, str]] = []
    bar = tqdm(total=len(rels), unit="img", desc="export-partial", disable=not progress, dynamic_ncols=True)

    def take(results: list[tuple[str, int, int, str | None]]) -> None:
        nonlocal written, skipped
        for rel, w, s, err in results:
            written += w
            skipped += s
            if err is not None:
                failed.append((rel, err))
        bar.update(len(results))

    try:
        if n_workers == 0:
            for part in _chunks(rels, chunk):
                take(_export_chunk(src_p, dst_p, part, vs))
        else:
            _run_pool(src_p, dst_p, rels, vs, n_workers, chunk, take)
    finally:
        bar.close()
    return ExportSummary(len(rels), len(vs), written, skipped, tuple(sorted(failed)))


def _run_pool(
    src: Path,
    dst: Path,
    rels: Sequence[str],
    vs: Sequence[ExportVariant],
    n_workers: int,
    chunk: int,
    take: Callable[[list[tuple[str, int, int, str | None]]], None],
) -> None:
    """Process pool over chunks of images, at most 4 chunks per worker in flight."""
    # spawn: no fork of a process holding torch/OpenCV thread pools.
    pool = ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"), initializer=_init_worker)
    try:
        chunks = _chunks(rels, chunk)
        pending: set[Future[list[tuple[str, int, int, str | None]]]] = set()
        # The first submits start the workers; they inherit an ignored SIGINT, so Ctrl-C during their
        # start-up (imports) reaches only this process, which lets running chunks finish.
        with _sigint_ignored():
            for part in islice(chunks, n_workers):
                pending.add(pool.submit(_export_chunk, src, dst, part, vs))
        for part in chunks:
            pending.add(pool.submit(_export_chunk, src, dst, part, vs))
            if len(pending) >= 4 * n_workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    take(fut.result())
        for fut in pending:
            take(fut.result())
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _factors(text: str) -> list[float]:
    out = []
    for t in _csv(text):
        try:
            out.append(float(t))
        except ValueError:
            raise PartialFaceError(f"--factors: {t!r} is not a number (e.g. --factors 0.1,0.3,0.5)") from None
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``partialface export-partial``."""
    parser.description = (
        "Write the published PartialLFW tree from aligned 160x160 faces: "
        "DST/{part}[_centered]/factor_{f}/<relative path>.png, 4 parts x 9 factors x 2 settings = 72 files "
        "per face. Resumable: existing files are skipped."
    )
    parser.add_argument(
        "aligned", metavar="ALIGNED", help="folder of aligned 160x160 faces (DST of 'partialface align')"
    )
    parser.add_argument("dst", metavar="DST", help="output root of the PartialLFW tree (created)")
    parser.add_argument("--parts", type=_csv, default=None, help=f"comma list from {','.join(PARTS)} (default: all)")
    parser.add_argument(
        "--factors", type=str, default=None, help=f"comma list from {','.join(map(str, FACTORS))} (default: all)"
    )
    parser.add_argument(
        "--settings", type=_csv, default=None, help="comma list from noncentred,centred (default: both)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: CPU count; 0 = run inline)"
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``partialface export-partial``; prints a summary line; 0 unless a user error (raised)."""
    factors = _factors(args.factors) if args.factors is not None else None
    variants = select_variants(args.parts, factors, args.settings)
    summary = export_partial(args.aligned, args.dst, variants, workers=args.workers, progress=not args.no_progress)
    print(summary.line(Path(args.dst)))
    if summary.failed:
        for rel, err in summary.failed[:10]:
            print(f"  skipped {rel}: {err}", file=sys.stderr)
    return 0
