"""The per-region account (issue #14): the region partition from the benchmark's own numbers, map cells laid on
it, the attention and occlusion-sensitivity shares against pixel-level references, and ``--explain``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_training import make_identities

import partialface
from partialface.api.explain import heat_map
from partialface.api.facade import Face, load
from partialface.cli import main
from partialface.data.images import read_image
from partialface.geometry.regions import REGIONS, cell_regions, grey_out, region_labels
from partialface.models.framing import input_frame


def _centre(i: int) -> tuple[float, float]:
    """Part centres by hand from the spec: ((0.3 + x) / 1.6 * 160, (0.3 + y) / 1.6 * 160 + 15)."""
    x = (0.2194, 0.7747, 0.4971, (0.3207 + 0.6735) / 2)[i]
    y = (0.1871, 0.1871, 0.5337, 0.7633)[i]
    return (0.3 + x) * 100, (0.3 + y) * 100 + 15


def test_region_partition_by_hand() -> None:
    labels = region_labels()
    assert labels.shape == (160, 160) and set(np.unique(labels)) == set(range(5))
    for i in range(4):
        cx, cy = _centre(i)
        assert labels[round(cy), round(cx)] == i, REGIONS[i]
    # factor 0.1 keeps (15 + 12, 10 + 10.5) around a centre: the nose box ends at int(98.37 + 20.5) = 118 and the
    # mouth box starts at int(121.33 - 20.5) = 100; in between, the nearer centre wins (boundary y = 109.85)
    nose, mouth = _centre(2), _centre(3)
    assert int(nose[1] + 20.5) == 118 and int(mouth[1] - 20.5) == 100
    assert labels[109, 80] == 2 and labels[110, 80] == 3
    assert (labels[:40] == 4).all() and (labels[145:] == 4).all()  # above the eyes' boxes, below the mouth's
    assert labels[64, 20] == 4 and labels[64, 30] == 0  # the left eye's box starts at int(51.94 - 27) = 24


def test_map_cells_on_the_regions() -> None:
    labels = region_labels()
    fine = cell_regions(160, 160, input_frame("resize", 160), samples=1)  # one cell per pixel: the labels themselves
    assert np.array_equal(fine.argmax(1).reshape(160, 160), labels) and np.allclose(fine.max(1), 1)
    coarse = cell_regions(4, 4, input_frame("resize", 160))
    assert np.allclose(coarse.sum(1), 1)
    # a 4x4 cell is 40x40 pixels: its fractions are the pixel counts of each region in that block
    block = labels[40:80, 0:40]
    assert np.allclose(coarse[4], np.bincount(block.ravel(), minlength=5) / block.size, atol=1e-9)
    # dlib's chip: corner pixel centres on the box corners, so the frame is half a chip pixel wider each side
    chip = input_frame("dlib-chip", 150)
    x0, x1 = chip[0, 2], chip[0, 0] + chip[0, 2]
    assert x1 - x0 == pytest.approx(137.69 * 150 / 149) and (x0 + x1) / 2 == pytest.approx(80.15)


def test_attention_shares_match_a_pixel_level_reference(tmp_path: Path) -> None:
    face = read_image(make_identities(tmp_path / "f", 1, 1) / "id00" / "000.png")
    (got,) = partialface.embed(face, "ours-celeba", aligned=True)
    assert got.regions is not None and got.maps is not None and got.importance is not None
    labels = region_labels()
    # the 20x20 maps of a resize-framed model: each cell is 8x8 pixels of the aligned face
    up = np.repeat(np.repeat(got.maps, 8, axis=1), 8, axis=2)  # (K, 160, 160)
    per_map = np.stack([[m[labels == r].sum() / m.sum() for r in range(5)] for m in up])
    want = (got.importance[:, None] * per_map).sum(0)
    assert np.allclose([got.regions[r] for r in REGIONS], want / want.sum(), atol=1e-5)


def test_occlusion_shares_of_a_holistic_model(tmp_path: Path) -> None:
    faces = make_identities(tmp_path / "f", 2, 1)
    a, b = (read_image(faces / f"id0{i}" / "000.png") for i in (0, 1))
    res = partialface.verify(a, b, "sface-400", aligned=True)  # a holistic model: the account is occlusion shares
    m = load("sface-400")
    f = m.embed(a[None])[0][0]
    drops = []
    for r in range(5):
        hidden = a.copy()
        hidden[labels_mask(r)] = 128
        drops.append(max(0.0, 1 - float(m.embed(hidden[None])[0][0] @ f)))
    account = res.faces[0].regions
    assert account is not None and np.allclose([account[r] for r in REGIONS], np.array(drops) / sum(drops), atol=1e-4)
    assert res.regions is not None and sum(res.regions.values()) == pytest.approx(1.0)
    assert min(res.regions.values()) >= 0 and np.array_equal(grey_out(a, 4)[labels_mask(4)], np.full(
        (int(labels_mask(4).sum()), 3), 128))


def test_a_holistic_pair_account_by_brute_force_and_its_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    faces = make_identities(tmp_path / "f", 2, 1)
    a, b = (read_image(faces / f"id0{i}" / "000.png") for i in (0, 1))
    m = load("sface-400")
    m._greyed_cache.clear()
    embedded: list[int] = []
    embed = m.embed

    def counted(x: np.ndarray) -> tuple[np.ndarray, object]:
        embedded.append(len(x))
        return embed(x)

    monkeypatch.setattr(m, "embed", counted)
    res = partialface.verify(a, b, "sface-400", aligned=True)
    # each face once, then each with each of the 5 regions greyed: the pair's account reuses the faces' own
    assert sum(embedded) == 2 + 2 * 5
    monkeypatch.undo()
    cos = float(m.embed(a[None])[0][0] @ m.embed(b[None])[0][0])
    drops = []
    for r in range(5):
        ha, hb = a.copy(), b.copy()
        ha[labels_mask(r)] = hb[labels_mask(r)] = 128
        drops.append(max(0.0, cos - float(m.embed(ha[None])[0][0] @ m.embed(hb[None])[0][0])))
    assert res.regions is not None
    assert np.allclose([res.regions[r] for r in REGIONS], np.array(drops) / sum(drops), atol=1e-4)


def labels_mask(r: int) -> np.ndarray:
    return region_labels() == r


def test_heat_map_lays_a_cell_on_its_pixels() -> None:
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1, 1, 2] = 0.5  # row 1, column 2 of a 4x4 grid over the whole face: y 40..79, x 80..119
    heat = heat_map(Face(aligned=np.zeros((160, 160, 3), np.uint8), embedding=np.zeros(4), maps=maps),
                    input_frame("resize", 160))
    ys, xs = np.nonzero(heat)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (40, 79, 80, 119) and heat.max() == 1.0


def test_verify_explain_writes_a_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces = make_identities(tmp_path / "f", 1, 2)
    out = tmp_path / "why.png"
    a, b = (str(faces / "id00" / f"00{i}.png") for i in (0, 1))
    assert main(["verify", a, b, "--aligned", "--explain", str(out), "--json"]) == 0
    assert "explained in" in capsys.readouterr().err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 800
    assert main(["verify", a, b, "--aligned", "--explain", str(tmp_path / "why.jpg")]) == 2
    assert "give a .png file name" in capsys.readouterr().err
