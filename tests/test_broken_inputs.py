"""A corpus of broken and unusual inputs: each ends in a one-line error naming the file or a documented
conversion (checked value by value) — never a crash; ``partialface align`` over the corpus completes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from partialface.data.images import read_image
from partialface.data.lfw import read_pairs, resolve_images
from partialface.detect.dataset import read_failures
from partialface.errors import ImageReadError, PairsFormatError, PartialFaceError

REPO = Path(__file__).resolve().parents[1]


def gradient(h: int, w: int) -> np.ndarray:
    """A smooth RGB image (H, W, 3) uint8 — compresses well and contains no face."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (h + w - 2)], -1).astype(
        np.uint8
    )


def jpeg_bytes(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


# --- the corpus ---------------------------------------------------------------------------------------

UNREADABLE = ("zero.jpg", "truncated.jpg", "text.jpg", "bomb.png")
READABLE = ("gray.jpg", "rgba.png", "gray16.png", "rgb16.png", "palette.png", "exif_rot.jpg", "tiny.png", "onepx.png",
            "cmyk.jpg", "anim.gif")

# 16-bit data, palette and a 4-colour quadrant image used by the corpus and the expectations
G16 = (np.arange(30 * 40, dtype=np.uint32).reshape(30, 40) * 54).astype(np.uint16)  # 0 .. 64746
RGB16 = np.stack([G16, 65535 - G16, np.full_like(G16, 0x1234)], -1)  # BGR order for cv2
PALETTE = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [200, 200, 50]], np.uint8)
PAL_IDX = (np.arange(24 * 32).reshape(24, 32) // 7 % 4).astype(np.uint8)
QUADS = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]], np.uint8)  # TL, TR / BL, BR
STORED = np.kron(QUADS, np.ones((20, 30, 1), np.uint8))  # stored pixels: 40 x 60, quadrants 20 x 30


def png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """A PNG that declares w x h RGB pixels but holds a few bytes of data (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def make_corpus(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "zero.jpg").write_bytes(b"")
    full = jpeg_bytes(Image.fromarray(gradient(64, 64)))
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (d / "text.jpg").write_text("this is not a JPEG\n")
    Image.fromarray(gradient(48, 64)[:, :, 0], mode="L").save(d / "gray.jpg", quality=95)
    rgba = np.dstack([gradient(32, 48), (np.arange(32 * 48) % 256).reshape(32, 48).astype(np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(d / "rgba.png")
    assert cv2.imwrite(str(d / "gray16.png"), G16)
    assert cv2.imwrite(str(d / "rgb16.png"), RGB16)
    pal = Image.fromarray(PAL_IDX, mode="P")
    pal.putpalette(PALETTE.ravel().tolist())
    pal.save(d / "palette.png", transparency=3)  # with a tRNS chunk: transparency is dropped
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation 6: the stored image must be rotated 90° clockwise to display
    (d / "exif_rot.jpg").write_bytes(jpeg_bytes(Image.fromarray(STORED), exif=exif.tobytes()))
    Image.fromarray(gradient(5, 5)).save(d / "tiny.png")
    (d / "bomb.png").write_bytes(png_bomb())
    Image.fromarray(np.array([[[10, 200, 30]]], np.uint8)).save(d / "onepx.png")
    Image.fromarray(gradient(32, 48)).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    frames = [Image.fromarray(np.full((16, 24, 3), c, np.uint8)) for c in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


# --- images: errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"), [("zero.jpg", "empty"), ("truncated.jpg", "truncated"), ("text.jpg", "not a readable image"),
                         ("bomb.png", "900 Mpx")]
)
def test_unreadable_images_raise_one_line_naming_the_file(corpus: Path, name: str, reason: str) -> None:
    with pytest.raises(ImageReadError) as info:
        read_image(corpus / name)
    msg = str(info.value)
    assert isinstance(info.value, PartialFaceError)
    assert str(corpus / name) in msg and reason in msg and "\n" not in msg


def test_a_decompression_bomb_is_refused_from_its_header(corpus: Path) -> None:
    """900 Mpx declared: refused before decoding (fast, no memory), as bytes too; the cap is an argument."""
    import time

    from partialface.data.images import MAX_PIXELS, ImageFormatError, ImageTooLargeError, decode_image

    t = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="above the cap of 40 Mpx"):
        decode_image(png_bomb(), "image")
    assert time.perf_counter() - t < 1.0
    assert MAX_PIXELS < Image.MAX_IMAGE_PIXELS  # below Pillow's own warning level
    with pytest.raises(ImageTooLargeError, match="b: the image declares 100x100"):
        decode_image(png_bomb(100, 100), "b", max_pixels=9999)
    with pytest.raises(ImageFormatError, match="a: not one of JPEG, PNG, WEBP, BMP"):
        decode_image((corpus / "anim.gif").read_bytes(), "a")  # uploads: the formats are sniffed and limited
    with pytest.raises(ImageReadError, match="a: empty"):
        decode_image(b"", "a")
    np.testing.assert_array_equal(decode_image((corpus / "tiny.png").read_bytes()), gradient(5, 5))


def test_verify_given_a_decompression_bomb_says_one_line(corpus: Path) -> None:
    proc = _cli("verify", str(corpus / "bomb.png"), str(corpus / "tiny.png"), "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "bomb.png: the image declares 900 Mpx, above the cap of 40 Mpx" in proc.stderr


def test_one_pixel_cmyk_and_animated_images_read(corpus: Path) -> None:
    assert read_image(corpus / "onepx.png").tolist() == [[[10, 200, 30]]]
    c = read_image(corpus / "cmyk.jpg")  # CMYK -> RGB, close to the RGB it was made from
    assert c.shape == (32, 48, 3) and np.abs(c.astype(int) - gradient(32, 48)).mean() < 6
    g = read_image(corpus / "anim.gif")  # the first frame
    assert g.shape == (16, 24, 3) and np.abs(g.astype(int) - (250, 0, 0)).max() <= 6


def test_missing_image_raises(corpus: Path) -> None:
    with pytest.raises(ImageReadError, match="no such image file"):
        read_image(corpus / "absent.png")


# --- images: documented conversions --------------------------------------------------------------------


def test_grayscale_jpeg_becomes_three_equal_channels(corpus: Path) -> None:
    a = read_image(corpus / "gray.jpg")
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
    assert np.abs(a[..., 0].astype(int) - gradient(48, 64)[:, :, 0]).max() <= 3  # JPEG q95 of a smooth ramp


def test_rgba_png_drops_alpha(corpus: Path) -> None:
    a = read_image(corpus / "rgba.png")
    assert a.shape == (32, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, gradient(32, 48))  # not composited onto a background, alpha ignored


def test_16bit_pngs_keep_the_high_byte(corpus: Path) -> None:
    g = read_image(corpus / "gray16.png")
    assert g.shape == (30, 40, 3) and g.dtype == np.uint8
    np.testing.assert_array_equal(g, np.repeat((G16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2))
    c = read_image(corpus / "rgb16.png")
    assert c.shape == (30, 40, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(c, (RGB16[:, :, ::-1] >> 8).astype(np.uint8))  # cv2 wrote BGR
    assert c[0, 0].tolist() == [0x12, 0xFF, 0x00]  # R = 0x1234 >> 8, G = 65535 >> 8, B = 0 >> 8


def test_palette_png_expands_to_rgb(corpus: Path) -> None:
    a = read_image(corpus / "palette.png")
    assert a.shape == (24, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, PALETTE[PAL_IDX])


def test_exif_orientation_is_applied(corpus: Path) -> None:
    a = read_image(corpus / "exif_rot.jpg")
    assert a.shape == (60, 40, 3) and a.dtype == np.uint8  # rotated: width and height swap
    expected = np.rot90(STORED, k=-1)  # 90° clockwise
    # JPEG (chroma subsampling) blurs the colour edges a little; any other orientation is far off
    assert np.abs(a.astype(int) - expected).mean() < 8
    assert np.abs(a.astype(int) - np.rot90(STORED, k=1)).mean() > 50
    # quadrant colours after a clockwise turn: TL <- stored BL (blue), TR <- stored TL (red), ...
    centres = {"TL": a[15, 10], "TR": a[15, 30], "BL": a[45, 10], "BR": a[45, 30]}
    want = {"TL": (0, 0, 255), "TR": (255, 0, 0), "BL": (255, 255, 0), "BR": (0, 255, 0)}
    for k, v in want.items():
        assert np.abs(centres[k].astype(int) - v).max() <= 8, (k, centres[k])


def test_tiny_image_reads_and_finds_no_face(corpus: Path) -> None:
    from partialface.detect import detect_faces

    a = read_image(corpus / "tiny.png")
    assert a.shape == (5, 5, 3)
    np.testing.assert_array_equal(a, gradient(5, 5))
    assert detect_faces(a, device="cpu") == []  # smaller than the 12 px P-Net window: no crash, no face


# --- pairs files ------------------------------------------------------------------------------------


def _lfw_tree(root: Path) -> None:
    for rel in ("A/A_0001.jpg", "B/B_0001.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gradient(8, 8)).save(root / rel)


def test_pairs_file_naming_a_missing_image(tmp_path: Path) -> None:
    _lfw_tree(tmp_path / "lfw")
    (tmp_path / "pairs.txt").write_text("1\t1\nA\t1\t2\nA\t1\tB\t1\n")
    pairs = read_pairs(tmp_path / "pairs.txt")
    with pytest.raises(PairsFormatError) as info:
        resolve_images(pairs, tmp_path / "lfw")
    msg = str(info.value)
    assert "pairs.txt" in msg and "A/A_0002.jpg" in msg and "\n" not in msg
    assert "B/B_0001" not in msg  # only the missing one is named


def test_pairs_file_with_a_malformed_line(tmp_path: Path) -> None:
    (tmp_path / "pairs.txt").write_text("1\t1\nA\t1\nA\t1\tB\t1\n")
    with pytest.raises(PairsFormatError) as info:
        read_pairs(tmp_path / "pairs.txt")
    msg = str(info.value)
    assert str(tmp_path / "pairs.txt") in msg and "line 2" in msg and "\n" not in msg


# --- partialface align over the corpus ----------------------------------------------------------------


def _check_align_outputs(corpus: Path, dst: Path, stdout: str) -> None:
    failures_file = dst / "align_failures.tsv"
    assert stdout.strip().splitlines()[-1] == (
        f"aligned 0 / {len(READABLE) + len(UNREADABLE)}; {len(READABLE)} without a face (resized), "
        f"{len(UNREADABLE)} unreadable; failures listed in {failures_file}"
    )
    fails = read_failures(failures_file)
    assert sorted(fails) == sorted(READABLE + UNREADABLE)
    for name in UNREADABLE:
        kind, detail = fails[name]
        assert kind == "unreadable" and name in detail
        assert not (dst / name).with_suffix(".png").exists()
    for name in READABLE:
        assert fails[name][0] == "no_face"
        out = read_image((dst / name).with_suffix(".png"))
        want = cv2.resize(read_image(corpus / name), (160, 160), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(out, want)


def test_align_cli_in_process_over_the_corpus(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from partialface.cli import main

    dst = tmp_path / "aligned"
    rc = main(["align", str(corpus), str(dst), "--device", "cpu", "--batch-size", "4", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    _check_align_outputs(corpus, dst, captured.out)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "partialface.cli", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_align_subprocess_over_the_corpus_and_bad_src(corpus: Path, tmp_path: Path) -> None:
    dst = tmp_path / "aligned"
    proc = _cli("align", str(corpus), str(dst), "--device", "cpu", "--workers", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    _check_align_outputs(corpus, dst, proc.stdout)

    proc = _cli("align", str(tmp_path / "no_such_dir"), str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("partialface: error: ") and "no_such_dir" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["bench_detect.py", "bench_mixed.py"])
def test_benchmark_scripts_say_a_bad_path_in_one_line(script: str, tmp_path: Path) -> None:
    """A benchmark script given a folder without LFW's photos: one line naming it, exit status 2, no traceback."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    proc = subprocess.run([sys.executable, str(path), "--lfw", str(tmp_path / "nolfw"), "--limit", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{script}: error: ") and "nolfw" in proc.stderr


def test_script_exit_passes_the_status_and_turns_a_user_error_into_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from partialface.errors import script_exit

    monkeypatch.setattr(sys, "argv", ["tool.py"])
    for main, status in ((lambda: None, 0), (lambda: 3, 3)):
        with pytest.raises(SystemExit) as exc:
            script_exit(main)
        assert exc.value.code == status

    def bad() -> int:
        raise PartialFaceError("--x 7: give a number below 5")

    with pytest.raises(SystemExit) as exc:
        script_exit(bad)
    assert exc.value.code == 2
    assert capsys.readouterr().err == "tool.py: error: --x 7: give a number below 5\n"

    def bug() -> int:
        raise ValueError("a bug, not the user's")

    with pytest.raises(ValueError):  # only a user's error is shortened: a bug keeps its traceback
        script_exit(bug)
