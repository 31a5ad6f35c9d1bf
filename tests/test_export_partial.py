"""``partialface export-partial``: the published folder tree, its pixels, selection options, resume, errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from partialface.data.images import read_image, write_image
from partialface.errors import PartialFaceError
from partialface.geometry.partial import partial_face
from partialface.jobs import export_partial as ep

# Folder names of the published PartialLFW tree (spec §2), written out by hand.
PUBLISHED_FACTORS = [f"factor_{f}" for f in ("0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4", "0.45", "0.5")]
PUBLISHED_TOP = ["Mouth", "Mouth_centered", "Nose", "Nose_centered", "lEye", "lEye_centered", "rEye", "rEye_centered"]


def make_aligned(root: Path, n: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    faces = {f"P{i}/P{i}_0001.png": rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for i in range(n)}
    for rel, im in faces.items():
        write_image(root / rel, im)
    return faces


def run_export(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    ep.configure(parser)
    return ep.run(parser.parse_args([*argv, "--no-progress"]))


def test_full_tree_layout_and_pixels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces = make_aligned(tmp_path / "al")
    (tmp_path / "al" / "align_failures.tsv").write_text("# not an image: ignored\n")
    assert run_export(str(tmp_path / "al"), str(tmp_path / "out"), "--workers", "0") == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(PUBLISHED_TOP)
    for top in PUBLISHED_TOP:
        assert sorted(p.name for p in (out / top).iterdir()) == sorted(PUBLISHED_FACTORS)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(files) == 72 * 2
    assert "lEye_centered/factor_0.15/P1/P1_0001.png" in files and "Mouth/factor_0.5/P0/P0_0001.png" in files
    assert capsys.readouterr().out.strip() == (
        f"exported 2 / 2 faces x 72 variants to {out}: 144 files written, 0 already there"
    )

    face = faces["P0/P0_0001.png"]
    # Non-centred lEye, f = 0.1, by hand: centre (51.94, 63.71), half sizes 15 + 12 = 27 and 10 + 10.5 = 20.5
    # -> x 24..78, y 43..84 (int() truncates, both ends kept); grey 128 elsewhere.
    got = read_image(out / "lEye" / "factor_0.1" / "P0" / "P0_0001.png")
    expected = np.full_like(face, 128)
    expected[43:85, 24:79] = face[43:85, 24:79]
    np.testing.assert_array_equal(got, expected)
    # Centred: that image moved by (80 - 51.94, 80 - 63.71) with bilinear interpolation; reference in float64.
    # OpenCV's warp works on a 1/32 px grid (INTER_BITS = 5), so the source positions are rounded to 1/32 px;
    # its weights are integers, so allow 1 grey level.
    cen = read_image(out / "lEye_centered" / "factor_0.1" / "P0" / "P0_0001.png").astype(np.float64)
    dx, dy = 80 - 51.94, 80 - 63.71
    ys, xs = np.mgrid[0:160, 0:160]
    sx, sy = np.round((xs - dx) * 32) / 32, np.round((ys - dy) * 32) / 32
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    ax, ay = (sx - x0)[..., None], (sy - y0)[..., None]
    src = np.pad(expected.astype(np.float64), ((1, 1), (1, 1), (0, 0)), constant_values=128)

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return src[np.clip(yy + 1, 0, 161), np.clip(xx + 1, 0, 161)]

    ref = (1 - ay) * ((1 - ax) * at(y0, x0) + ax * at(y0, x0 + 1)) + ay * (
        (1 - ax) * at(y0 + 1, x0) + ax * at(y0 + 1, x0 + 1)
    )
    assert np.abs(cen - ref).max() <= 1.0
    # Every file holds exactly the exact-path pixels.
    for rel in files[::7]:
        top, fac, *rest = rel.split("/")
        part, centred = top.removesuffix("_centered"), top.endswith("_centered")
        src_face = faces["/".join(rest)]
        want = partial_face(src_face, part, float(fac.removeprefix("factor_")), centred)  # type: ignore[arg-type]
        np.testing.assert_array_equal(read_image(out / rel), want)


def test_selection_resume_and_process_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_aligned(tmp_path / "al", n=3)
    write_image(tmp_path / "al" / "bad" / "small.png", np.zeros((50, 60, 3), np.uint8))
    (tmp_path / "al" / "bad" / "broken.png").write_bytes(b"")
    args = ["--parts", "Nose,mouth", "--factors", "0.10,0.5", "--settings", "centered"]
    assert run_export(str(tmp_path / "al"), str(tmp_path / "out"), *args, "--workers", "2") == 0
    out = tmp_path / "out"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == sorted(
        f"{top}/{fac}/P{i}/P{i}_0001.png"
        for top in ("Nose_centered", "Mouth_centered")
        for fac in ("factor_0.1", "factor_0.5")
        for i in range(3)
    )
    captured = capsys.readouterr()
    assert captured.out.startswith("exported 3 / 5 faces x 4 variants")
    assert "12 files written, 0 already there; 2 faces skipped" in captured.out
    assert "bad/broken.png" in captured.err and "bad/small.png" in captured.err and "60x50" in captured.err

    mtimes = {f: (out / f).stat().st_mtime_ns for f in files}
    (out / files[0]).unlink()
    s = ep.export_partial(
        tmp_path / "al", out, ep.select_variants(["Nose", "Mouth"], [0.1, 0.5], ["centred"]), workers=0
    )
    assert (s.written, s.skipped) == (1, 11)
    assert {f: (out / f).stat().st_mtime_ns for f in files[1:]} == {f: mtimes[f] for f in files[1:]}


def test_select_variants_order_and_errors() -> None:
    vs = ep.select_variants()
    assert len(vs) == 72 and len({v.folder for v in vs}) == 72
    assert vs[0].folder == "lEye/factor_0.1" and vs[9].folder == "lEye_centered/factor_0.1"
    assert vs[-1].folder == "Mouth_centered/factor_0.5"
    with pytest.raises(PartialFaceError, match="--parts: unknown part 'chin'"):
        ep.select_variants(parts=["chin"])
    with pytest.raises(PartialFaceError, match=r"--factors: 0\.12 is not a benchmark factor"):
        ep.select_variants(factors=[0.12])
    with pytest.raises(PartialFaceError, match="--settings: unknown setting"):
        ep.select_variants(settings=["sideways"])


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(PartialFaceError, match="no such folder"):
        ep.export_partial(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PartialFaceError, match="no images found"):
        ep.export_partial(tmp_path / "empty", tmp_path / "out")
    make_aligned(tmp_path / "al", n=1)
    with pytest.raises(PartialFaceError, match="must not be ALIGNED or inside it"):
        ep.export_partial(tmp_path / "al", tmp_path / "al" / "partial")
    with pytest.raises(PartialFaceError, match="--factors: 'x' is not a number"):
        run_export(str(tmp_path / "al"), str(tmp_path / "out"), "--factors", "0.1,x")
