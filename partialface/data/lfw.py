"""LFW layout and pairs files.

Layout: ``ROOT/NAME/NAME_000N.ext`` — the image number zero-padded to 4 digits, ``ext`` ``.jpg`` for the
raw release or ``.png`` for an aligned export; the same pairs file works with either.

Pairs file ("View 2" format, any number of folds and pairs per fold):
  line 1: ``folds pairs_per_fold`` (whitespace separated; a single number N means 1 fold of N + N pairs,
  as in LFW's ``pairsDevTrain.txt``), then for each fold ``pairs_per_fold`` same-person lines
  ``name i j`` followed by ``pairs_per_fold`` different-person lines ``name1 i name2 j``.
Trailing blank lines are allowed; any other deviation is a :class:`PairsFormatError` naming the file
and line. Pair folds are numbered 0 .. folds-1 and never change afterwards (dropping pairs with missing
images keeps every remaining pair in its own fold).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from partialface.data.images import read_text_file
from partialface.errors import PairsFormatError

#: Image suffixes tried, in order, when resolving a pair's image (raw release, aligned export).
DEFAULT_SUFFIXES: tuple[str, ...] = (".jpg", ".png")
_STEM_RE = re.compile(r"^(?P<name>.+)_(?P<num>\d{4,})$")
_MAX_SHOWN_MISSING = 3


@dataclass(frozen=True)
class Pair:
    """One verification pair: relative image paths ``NAME/NAME_000N.jpg``, same person or not, its fold."""

    a: str
    b: str
    same: bool
    fold: int


@dataclass(frozen=True)
class PairsFile:
    """A parsed pairs file. ``pairs`` are in file order; ``folds`` and ``per_fold`` from the header."""

    pairs: tuple[Pair, ...]
    folds: int
    per_fold: int
    path: Path | None = None
    dropped: int = field(default=0)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def name(self) -> str:
        """Short name for messages: the file name, or '<pairs>' when built in memory."""
        return self.path.name if self.path is not None else "<pairs>"

    def images(self) -> list[str]:
        """The distinct image keys the pairs use, sorted (the row order of ``image_index``)."""
        return sorted({k for p in self.pairs for k in (p.a, p.b)})

    def image_index(self) -> dict[str, int]:
        """Image key -> row, over ``images()``: how evaluators lay out one embedding matrix."""
        return {k: i for i, k in enumerate(self.images())}

    def keep_only(self, available: Iterable[str]) -> PairsFile:
        """The pairs whose two images are both in ``available``; folds kept, ``dropped`` counts the rest."""
        keep = set(available)
        kept = tuple(p for p in self.pairs if p.a in keep and p.b in keep)
        dropped = self.dropped + len(self.pairs) - len(kept)
        return PairsFile(kept, self.folds, self.per_fold, self.path, dropped)


def image_key(name: str, number: int, suffix: str = ".jpg") -> str:
    """The relative path of image ``number`` of ``name``: ``NAME/NAME_000N.jpg`` (4-digit zero padding)."""
    return f"{name}/{name}_{number:04d}{suffix}"


def _fail(path: Path, lineno: int, what: str) -> PairsFormatError:
    return PairsFormatError(f"{path}: line {lineno}: {what}")


def _parse_index(path: Path, lineno: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _fail(path, lineno, f"image number {text!r} is not an integer; fix the line") from None
    if value < 1:
        raise _fail(path, lineno, f"image number {value} must be 1 or more (LFW numbers images from 1)")
    return value


def _check_name(path: Path, lineno: int, name: str) -> str:
    if name in (".", "..") or "/" in name or "\\" in name:
        raise _fail(path, lineno, f"person name {name!r} is not a folder name; fix the line")
    return name


def _parse_header(path: Path, line: str) -> tuple[int, int]:
    fields = line.split()
    hint = "the first line must be 'folds pairs_per_fold', e.g. '10 300'"
    if not fields:
        raise _fail(path, 1, f"empty header; {hint}")
    if len(fields) > 2:
        raise _fail(path, 1, f"header has {len(fields)} fields; {hint}")
    try:
        numbers = [int(f) for f in fields]
    except ValueError:
        raise _fail(path, 1, f"header {line.strip()!r} is not numbers; {hint}") from None
    if any(n < 1 for n in numbers):
        raise _fail(path, 1, f"header {line.strip()!r} must be positive numbers; {hint}")
    return (1, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])


def read_pairs(path: str | os.PathLike[str]) -> PairsFile:
    """Parse a pairs file (see the module docstring). Raises PairsFormatError naming file, line and fix."""
    p = Path(path)
    text = read_text_file(p, missing="no such pairs file (pass the path of LFW's pairs.txt)",
                          not_text="not a text file (expected LFW's pairs.txt format)", error=PairsFormatError,
                          encoding="utf-8-sig")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise PairsFormatError(f"{p}: file is empty (expected LFW's pairs.txt format)")
    folds, per_fold = _parse_header(p, lines[0])
    expected = folds * 2 * per_fold
    body = lines[1:]
    promise = f"the header promises {folds} folds x ({per_fold} same + {per_fold} different) pairs"
    pairs: list[Pair] = []
    for i, line in enumerate(body[:expected]):
        lineno = i + 2
        fold, pos = divmod(i, 2 * per_fold)
        same = pos < per_fold
        fields = line.split()
        if not fields:
            raise _fail(p, lineno, f"blank line inside the pairs; remove it ({promise})")
        if same and len(fields) != 3:
            raise _fail(
                p,
                lineno,
                f"expected a same-person line 'name i j' (fold {fold + 1}, pair {pos + 1} of {per_fold} "
                f"same), got {len(fields)} fields; {promise}",
            )
        if not same and len(fields) != 4:
            raise _fail(
                p,
                lineno,
                f"expected a different-person line 'name1 i name2 j' (fold {fold + 1}, pair "
                f"{pos - per_fold + 1} of {per_fold} different), got {len(fields)} fields; {promise}",
            )
        if same:
            name = _check_name(p, lineno, fields[0])
            i1, i2 = _parse_index(p, lineno, fields[1]), _parse_index(p, lineno, fields[2])
            pairs.append(Pair(image_key(name, i1), image_key(name, i2), True, fold))
        else:
            n1, n2 = _check_name(p, lineno, fields[0]), _check_name(p, lineno, fields[2])
            i1, i2 = _parse_index(p, lineno, fields[1]), _parse_index(p, lineno, fields[3])
            pairs.append(Pair(image_key(n1, i1), image_key(n2, i2), False, fold))
    if len(body) < expected:
        raise PairsFormatError(
            f"{p}: line {len(lines)}: file ends after {len(body)} pairs but {promise}; fix header or file"
        )
    if len(body) > expected:
        raise _fail(p, expected + 2, f"extra line after the last pair ({promise}); fix header or file")
    return PairsFile(tuple(pairs), folds, per_fold, p)


def _stem(key: str) -> str:
    return key[: -len(Path(key).suffix)] if Path(key).suffix else key


def resolve_images(
    pairs: PairsFile | Sequence[Pair],
    root: str | os.PathLike[str],
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
    drop_missing: bool = False,
) -> dict[str, Path]:
    """Map every image key of ``pairs`` to an existing file under ``root``.

    A key ``NAME/NAME_0001.jpg`` matches ``ROOT/NAME/NAME_0001{suffix}`` for the first suffix in ``suffixes``
    that exists, so the same pairs work with the raw ``.jpg`` release and an aligned ``.png`` folder.
    Missing images raise PairsFormatError (first few paths + total count) unless ``drop_missing``; then
    they are left out of the result (use ``PairsFile.keep_only(result)`` and report ``dropped``).
    """
    r = Path(root)
    if not r.is_dir():
        raise PairsFormatError(f"{r}: no such image folder (pass the LFW image root holding NAME/ folders)")
    pf: PairsFile | None = None
    if isinstance(pairs, PairsFile):
        pf, keys = pairs, pairs.images()
    else:
        keys = sorted({k for p in pairs for k in (p.a, p.b)})
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key in keys:
        stem = _stem(key)
        for suffix in suffixes:
            candidate = r / (stem + suffix)
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(key)
    if missing and not drop_missing:
        name = pf.name if pf is not None else "pairs"
        more = ", ..." if len(missing) > _MAX_SHOWN_MISSING else ""
        shown = ", ".join(missing[:_MAX_SHOWN_MISSING]) + more
        hint = _layout_hint(r, missing[0], suffixes)
        raise PairsFormatError(
            f"{name}: {len(missing)} image{'s' if len(missing) != 1 else ''} missing under {r} "
            f"(first: {shown}; looked for {'/'.join(suffixes)}){hint}; "
            "pass --drop-missing to score without them"
        )
    return found


def _layout_hint(root: Path, key: str, suffixes: Sequence[str]) -> str:
    """A hint when the missing image exists one folder down (root lfw/ instead of lfw/lfw-deepfunneled/)."""
    try:
        subs = sorted(d for d in root.iterdir() if d.is_dir())
    except OSError:
        return ""
    stem = _stem(key)
    for sub in subs:
        if any((sub / (stem + s)).is_file() for s in suffixes):
            return f"; the images seem to be under {sub}"
    return ""


def list_lfw_images(root: str | os.PathLike[str], suffixes: Sequence[str] = DEFAULT_SUFFIXES) -> list[str]:
    """Relative paths ``NAME/NAME_NNNN.ext`` of the LFW-layout images under ``root``, sorted.

    Only files one folder deep whose stem is ``<folder name>_<4+ digits>`` and whose suffix is in
    ``suffixes`` (case-insensitive) count; anything else is ignored.
    """
    r = Path(root)
    if not r.is_dir():
        raise PairsFormatError(f"{r}: no such image folder (pass the LFW image root holding NAME/ folders)")
    wanted = {s.lower() for s in suffixes}
    out: list[str] = []
    for person in r.iterdir():
        if not person.is_dir():
            continue
        for f in person.iterdir():
            if f.suffix.lower() not in wanted or not f.is_file():
                continue
            m = _STEM_RE.match(f.stem)
            if m is not None and m.group("name") == person.name:
                out.append(f"{person.name}/{f.name}")
    return sorted(out)


def image_paths(resolved: Mapping[str, Path], keys: Sequence[str]) -> list[Path]:
    """The files of ``keys`` in order (e.g. ``PairsFile.images()``), from ``resolve_images``' result."""
    return [resolved[k] for k in keys]
