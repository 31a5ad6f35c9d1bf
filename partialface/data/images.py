"""Read any image a user has into RGB uint8; write images atomically; read a user's text file.

Conversions (documented, never silent crashes):
- grayscale / bilevel / CMYK / YCbCr / palette -> RGB (palette transparency dropped);
- RGBA / LA -> RGB by dropping alpha (as the published alignment does: ``img[:, :, 0:3]``);
- 16-bit and 32-bit integer images -> 8-bit by keeping the high byte (value >> 8, resp. clipping);
- EXIF orientation is applied before anything else.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from partialface.errors import ImageReadError, PartialFaceError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.uint16) >> 8
        arr = arr.astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        # 32-bit integer mode: Pillow uses it for 16-bit PNGs too; values above 255 mean 16-bit data.
        arr = (arr >> 8) if arr.max(initial=0) > 255 else arr
        arr = np.clip(arr, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA").convert("RGB") if mode != "RGBA" else img.convert("RGB")
    elif mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable, contiguous copy


#: the most pixels an untrusted image may declare (40 Mpx: a 12 Mpx phone photo fits three times over); a larger
#: one is refused from its header, before it is decoded (a decompression bomb costs nothing)
MAX_PIXELS = 40_000_000
#: the formats :func:`decode_image` accepts, sniffed from the bytes (never from a name)
DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


class ImageTooLargeError(ImageReadError):
    """An image declares more pixels than the cap (:data:`MAX_PIXELS`)."""


class ImageFormatError(ImageReadError):
    """Bytes that are not an image of an accepted format."""


def _decode(source: object, label: str, max_pixels: int, formats: tuple[str, ...] | None) -> np.ndarray:
    """Open ``source`` (a path or a binary file), check its declared size against ``max_pixels`` before decoding,
    then decode to RGB uint8 (H, W, 3) with EXIF orientation applied. ``label`` names it in every error."""
    import warnings

    try:
        with warnings.catch_warnings():  # Pillow warns above its own cap; ours is lower and says it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(source, formats=formats)  # type: ignore[arg-type]
        with opened:
            w, h = opened.size
            if w * h > max_pixels:
                raise ImageTooLargeError(f"{label}: the image declares {w}x{h} pixels ({w * h / 1e6:.0f} Mpx), above "
                                         f"the cap of {max_pixels / 1e6:g} Mpx; downscale it")
            opened.load()
            turned = opened.getexif().get(0x0112, 1) not in (1, None)  # a copy only where it must turn
            arr = _to_rgb_array((ImageOps.exif_transpose(opened) or opened) if turned else opened)
    except Image.DecompressionBombError as e:  # above twice Pillow's cap: refused inside Image.open
        import re

        n = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(n.group(1)) / 1e6:.0f} Mpx" if n else "too many pixels"
        raise ImageTooLargeError(f"{label}: the image declares {size}, above the cap of {max_pixels / 1e6:g} Mpx; "
                                 "downscale it") from None
    except UnidentifiedImageError:
        what = f"one of {', '.join(formats)}" if formats else "a readable image"
        raise ImageFormatError(f"{label}: not {what} (unknown format); remove or replace it") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{label}: corrupt or truncated image ({e}); remove or replace it") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{label}: unsupported image layout {arr.shape}")
    return arr


def read_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into an RGB uint8 array (H, W, 3), honouring EXIF orientation.

    Raises ImageReadError (one line naming the file) for a missing, empty, truncated or non-image file, and
    ImageTooLargeError for one that declares more than ``max_pixels`` pixels (checked before decoding).
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{p}: no such image file (check the path)")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: file is empty (0 bytes); re-copy or remove it")
    return _decode(p, str(p), max_pixels, None)


def decode_image(data: bytes, label: str = "image", max_pixels: int = MAX_PIXELS,
                 formats: tuple[str, ...] = DECODE_FORMATS) -> np.ndarray:
    """Decode untrusted bytes (an upload) into RGB uint8 (H, W, 3): the format sniffed from the bytes and one of
    ``formats``, the declared size checked against ``max_pixels`` before decoding. Errors as :func:`read_image`'s
    (:class:`ImageFormatError` for another format), ``label`` naming the field."""
    import io

    if not data:
        raise ImageReadError(f"{label}: empty (0 bytes); send an image")
    return _decode(io.BytesIO(data), label, max_pixels, formats)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + rename (never a half file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs should read like any other file
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text_file(
    path: Path, *, missing: str, not_text: str, error: type[PartialFaceError] = PartialFaceError,
    encoding: str = "utf-8",
) -> str:
    """The text of a file a user named; ``error("PATH: missing")`` when it is not a file, ``error("PATH:
    not_text")`` when it does not decode as ``encoding``."""
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError:
        raise error(f"{path}: {not_text}") from None


def encode_image(image: np.ndarray, suffix: str = ".png") -> bytes:
    """Encode an RGB uint8 image (H, W, 3) as PNG or JPEG bytes (JPEG quality 95)."""
    import cv2

    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, bgr, params)
    if not ok:
        raise ValueError(f"cannot encode image as {suffix}")
    return buf.tobytes()


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an RGB uint8 image atomically; the format follows the suffix (.png lossless)."""
    atomic_write_bytes(path, encode_image(image, Path(path).suffix or ".png"))
