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

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


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


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file into an RGB uint8 array (H, W, 3), honouring EXIF orientation.

    Raises ImageReadError (one line naming the file) for a missing, empty, truncated or non-image file.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{p}: no such image file (check the path)")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: file is empty (0 bytes); re-copy or remove it")
    try:
        with Image.open(p) as opened:
            opened.load()
            arr = _to_rgb_array(ImageOps.exif_transpose(opened) or opened)
    except UnidentifiedImageError:
        raise ImageReadError(f"{p}: not a readable image (unknown format); remove or replace it") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{p}: corrupt or truncated image ({e}); remove or replace it") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{p}: unsupported image layout {arr.shape}")
    return arr


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
