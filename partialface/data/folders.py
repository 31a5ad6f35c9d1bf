"""Listing image datasets on disk: any tree of images, and identity folders.

Layouts: LFW (``ROOT/NAME/NAME_000N.jpg``) and identity folders (``ROOT/identity/*.jpg|png``) are both
"one level of class folders"; deeper trees are listed by relative path as well. Paths are returned
relative to the root, with ``/`` separators, sorted, so that the same dataset always lists the same
way on every platform. Hidden entries (names starting with ``.``, e.g. the temp files of an atomic
write) are skipped; symlinked files are listed, symlinked folders are not followed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from partialface.data.images import IMAGE_SUFFIXES, read_text_file
from partialface.errors import PartialFaceError


def _check_root(root: Path, what: str) -> None:
    if not root.exists():
        raise PartialFaceError(f"{root}: no such folder (pass the {what})")
    if not root.is_dir():
        raise PartialFaceError(f"{root}: not a folder (pass the {what})")


def is_inside(child: str | os.PathLike[str], parent: str | os.PathLike[str]) -> bool:
    """Whether ``child`` is ``parent`` or lies below it (symlinks resolved)."""
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
    except ValueError:
        return False
    return True


def list_images(
    root: str | os.PathLike[str],
    suffixes: Iterable[str] = IMAGE_SUFFIXES,
    *,
    what: str = "dataset folder",
) -> list[str]:
    """Relative posix paths of all image files under ``root`` (any depth), sorted.

    A file counts when its suffix (case-insensitive) is in ``suffixes``. Raises PartialFaceError when
    ``root`` is missing or not a folder (``what`` names it in the message). May return [].
    """
    r = Path(root)
    _check_root(r, what)
    wanted = {s.lower() for s in suffixes}
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(r, onerror=None, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = PurePosixPath(Path(dirpath).relative_to(r).as_posix())
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in wanted:
                continue
            if not os.path.isfile(os.path.join(dirpath, name)):
                continue  # broken symlink, socket, ...
            out.append(str(rel_dir / name) if str(rel_dir) != "." else name)
    return sorted(out)


@dataclass(frozen=True)
class IdentityFolders:
    """A dataset of identity folders: ``classes`` (sorted folder names) and ``samples``.

    samples: (relative path ``identity/file.jpg``, class index) in sorted path order.
    """

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self) -> list[int]:
        """Images per class, in class order."""
        n = [0] * len(self.classes)
        for _, c in self.samples:
            n[c] += 1
        return n


def identity_folders(
    root: str | os.PathLike[str],
    suffixes: Iterable[str] = IMAGE_SUFFIXES,
    *,
    min_images: int = 1,
) -> IdentityFolders:
    """List ``ROOT/identity/image`` (the LFW layout is one case): one class per folder one level down.

    Images directly under ``root`` or deeper than one folder are ignored; classes with fewer than
    ``min_images`` images are dropped. Raises PartialFaceError when the root is missing or no class is left.
    """
    r = Path(root)
    by_class: dict[str, list[str]] = {}
    for rel in list_images(r, suffixes, what="folder holding one sub-folder per identity"):
        parts = rel.split("/")
        if len(parts) == 2:
            by_class.setdefault(parts[0], []).append(rel)
    classes = tuple(sorted(c for c, files in by_class.items() if len(files) >= min_images))
    if not classes:
        raise PartialFaceError(
            f"{r}: no identity folders with >= {min_images} image(s) "
            f"(expected ROOT/identity/image with suffix {', '.join(sorted({s.lower() for s in suffixes}))})"
        )
    index = {c: i for i, c in enumerate(classes)}
    samples = tuple(sorted((p, index[c]) for c in classes for p in by_class[c]))
    return IdentityFolders(r, classes, samples)


#: suffixes of a text file that lists images (one path per line; relative paths are from the list's folder)
LIST_SUFFIXES = (".txt", ".lst")


def image_inputs(sources: Iterable[str | os.PathLike[str]], suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The images a user named: each source is an image file, a folder (every image below it, sorted) or a
    text file listing images (:data:`LIST_SUFFIXES`; blank lines and ``#`` comments skipped). PartialFaceError
    for a missing path, a list naming a missing file, or a folder without images."""
    wanted = tuple(suffixes)
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = list_images(p, wanted, what="folder of images")
            if not found:
                raise PartialFaceError(f"{p}: no images in this folder (suffixes {', '.join(wanted)})")
            out.extend(p / rel for rel in found)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            text = read_text_file(p, missing="no such file", not_text="not a UTF-8 text list of image paths")
            for lineno, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                item = Path(line) if Path(line).is_absolute() else p.parent / line
                if not item.is_file():
                    raise PartialFaceError(f"{p}:{lineno}: {line}: no such image file")
                out.append(item)
        elif p.is_file():
            out.append(p)
        else:
            raise PartialFaceError(f"{p}: no such file or folder")
    return out
