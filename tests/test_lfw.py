"""LFW layout and pairs files: parsing any fold layout, every error path, image resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from partialface.data.lfw import (
    Pair,
    PairsFile,
    image_key,
    list_lfw_images,
    read_pairs,
    resolve_images,
)
from partialface.errors import PairsFormatError, PartialFaceError


def write(tmp_path: Path, text: str, name: str = "pairs.txt") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# 2 folds x (2 same + 2 different), hand-written.
SMALL = """2 2
Ann 1 2
Bob 1 3
Ann 1 Bob 2
Cy 4 Dee 1
Cy 1 2
Dee 1 10
Ann 2 Cy 3
Bob 1 Dee 2
"""


def test_small_file_parsed_exactly(tmp_path: Path) -> None:
    pf = read_pairs(write(tmp_path, SMALL))
    assert (pf.folds, pf.per_fold, len(pf)) == (2, 2, 8)
    assert pf.pairs[0] == Pair("Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", True, 0)
    assert pf.pairs[2] == Pair("Ann/Ann_0001.jpg", "Bob/Bob_0002.jpg", False, 0)
    assert pf.pairs[5] == Pair("Dee/Dee_0001.jpg", "Dee/Dee_0010.jpg", True, 1)
    assert pf.pairs[7] == Pair("Bob/Bob_0001.jpg", "Dee/Dee_0002.jpg", False, 1)
    assert [p.same for p in pf.pairs] == [True, True, False, False] * 2
    assert [p.fold for p in pf.pairs] == [0] * 4 + [1] * 4
    assert pf.name == "pairs.txt"
    # distinct images: Ann 1,2; Bob 1,2,3; Cy 1,2,3,4; Dee 1,2,10 -> 2 + 3 + 4 + 3 = 12
    expected = {
        "Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", "Bob/Bob_0001.jpg", "Bob/Bob_0002.jpg", "Bob/Bob_0003.jpg",
        "Cy/Cy_0001.jpg", "Cy/Cy_0002.jpg", "Cy/Cy_0003.jpg", "Cy/Cy_0004.jpg",
        "Dee/Dee_0001.jpg", "Dee/Dee_0002.jpg", "Dee/Dee_0010.jpg",
    }  # fmt: skip
    assert pf.images() == sorted(expected)
    idx = pf.image_index()
    assert sorted(idx.values()) == list(range(12)) and idx["Ann/Ann_0001.jpg"] == 0


def test_image_key_padding() -> None:
    assert image_key("Zico", 3) == "Zico/Zico_0003.jpg"
    assert image_key("A_B", 123, ".png") == "A_B/A_B_0123.png"
    assert image_key("X", 12345) == "X/X_12345.jpg"


@pytest.mark.parametrize(("folds", "per_fold"), [(1, 1), (3, 5), (7, 2)])
def test_any_fold_layout(tmp_path: Path, folds: int, per_fold: int) -> None:
    lines = [f"{folds}\t{per_fold}"]
    for k in range(folds):
        lines += [f"P{k} {i + 1} {i + 2}" for i in range(per_fold)]
        lines += [f"P{k} {i + 1}  Q{k}\t{i + 1}" for i in range(per_fold)]
    pf = read_pairs(write(tmp_path, "\n".join(lines) + "\n\n  \n"))  # trailing blank lines allowed
    assert len(pf) == folds * 2 * per_fold
    for k in range(folds):
        fold = [p for p in pf.pairs if p.fold == k]
        assert [p.same for p in fold] == [True] * per_fold + [False] * per_fold


def test_single_number_header_is_one_fold(tmp_path: Path) -> None:
    pf = read_pairs(write(tmp_path, "1\nA 1 2\nA 1 B 1\n"))
    assert (pf.folds, pf.per_fold, len(pf)) == (1, 1, 2)


def test_crlf_and_bom(tmp_path: Path) -> None:
    p = tmp_path / "pairs.txt"
    p.write_bytes(b"\xef\xbb\xbf1 1\r\nA 1 2\r\nA 1 B 1\r\n")
    assert len(read_pairs(p)) == 2


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("", None, "empty"),
        ("\n\n", None, "empty"),
        ("\nA 1 2\nA 1 B 1\n", 1, "empty header"),
        ("ten 300\n", 1, "not numbers"),
        ("1 1 1\n", 1, "3 fields"),
        ("0 5\n", 1, "positive"),
        ("1 1\nA 1\nA 1 B 1\n", 2, "same-person line"),
        ("1 1\nA 1 B 2\nA 1 B 1\n", 2, "same-person line"),  # a different-line where a same-line belongs
        ("1 1\nA 1 2\nA 1 2\n", 3, "different-person line"),  # a same-line where a different-line belongs
        ("1 1\nA x 2\nA 1 B 1\n", 2, "not an integer"),
        ("1 1\nA 1 2\nA 1 B 1.5\n", 3, "not an integer"),
        ("1 1\nA 0 2\nA 1 B 1\n", 2, "1 or more"),
        ("1 1\nA 1 -2\nA 1 B 1\n", 2, "1 or more"),
        ("1 1\n../x 1 2\nA 1 B 1\n", 2, "not a folder name"),
        ("1 1\nA 1 2\n\nA 1 B 1\n", 3, "blank line"),
        ("1 1\nA 1 2\n", 2, "file ends after 1 pairs"),
        ("1 1\nA 1 2\nA 1 B 1\nA 2 3\n", 4, "extra line"),
        ("2 1\nA 1 2\nA 1 B 1\n", 3, "file ends"),
    ],
)
def test_format_errors_name_file_and_line(tmp_path: Path, text: str, line: int | None, needle: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(PairsFormatError) as ei:
        read_pairs(p)
    msg = str(ei.value)
    assert str(p) in msg and needle in msg, msg
    if line is not None:
        assert f"line {line}:" in msg, msg
    assert "\n" not in msg
    assert isinstance(ei.value, PartialFaceError)


def test_wrong_header_counts_detected(tmp_path: Path) -> None:
    # Header says 1 fold of 2 but the file holds 2 folds of 2: reported at the first extra line.
    p = write(tmp_path, "1 2\n" + "\n".join(SMALL.splitlines()[1:]) + "\n")
    with pytest.raises(PairsFormatError, match=r"line 6: extra line"):
        read_pairs(p)
    p = write(tmp_path, "2 3\n" + "\n".join(SMALL.splitlines()[1:]) + "\n")
    with pytest.raises(PairsFormatError, match=r"line 4: expected a same-person line .*fold 1, pair 3 of 3"):
        read_pairs(p)


def test_missing_pairs_file(tmp_path: Path) -> None:
    with pytest.raises(PairsFormatError, match="no such pairs file"):
        read_pairs(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(PairsFormatError, match="not a text file"):
        read_pairs(tmp_path / "bin.txt")


def make_tree(root: Path, keys: list[str], suffix: str) -> None:
    for k in keys:
        f = root / (k[: -len(".jpg")] + suffix)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")


def test_resolve_jpg_png_and_missing(tmp_path: Path) -> None:
    pf = read_pairs(write(tmp_path, SMALL))
    keys = pf.images()
    raw, aligned = tmp_path / "raw", tmp_path / "aligned"
    make_tree(raw, keys, ".jpg")
    make_tree(aligned, keys, ".png")
    r = resolve_images(pf, raw)
    assert set(r) == set(keys) and all(v == raw / k for k, v in r.items())
    a = resolve_images(pf, aligned)
    assert a["Dee/Dee_0010.jpg"] == aligned / "Dee" / "Dee_0010.png"
    assert all(v.suffix == ".png" and v.is_file() for v in a.values())
    # only .png allowed -> raw tree is all missing
    with pytest.raises(PairsFormatError, match="12 images missing"):
        resolve_images(pf, raw, suffixes=(".png",))

    gone = ["Ann/Ann_0001.jpg", "Cy/Cy_0003.jpg", "Dee/Dee_0002.jpg", "Dee/Dee_0010.jpg"]
    for k in gone:
        (raw / k).unlink()
    with pytest.raises(PairsFormatError) as ei:
        resolve_images(pf, raw)
    msg = str(ei.value)
    assert msg.startswith(f"pairs.txt: 4 images missing under {raw} (first: ")
    assert "Ann/Ann_0001.jpg, Cy/Cy_0003.jpg, Dee/Dee_0002.jpg, ..." in msg and "Dee_0010" not in msg
    assert msg.endswith("pass --drop-missing to score without them")

    found = resolve_images(pf, raw, drop_missing=True)
    assert set(found) == set(keys) - set(gone)
    kept = pf.keep_only(found)
    # pairs touching a gone image: 0 (Ann1), 2 (Ann1), 5 (Dee10), 6 (Cy3), 7 (Dee2); kept: 1, 3, 4
    assert kept.dropped == 5 and len(kept) == 3
    assert [(p.a, p.fold) for p in kept.pairs] == [
        ("Bob/Bob_0001.jpg", 0),
        ("Cy/Cy_0004.jpg", 0),
        ("Cy/Cy_0001.jpg", 1),
    ]  # folds kept, never shifted


def test_resolve_hint_one_folder_down(tmp_path: Path) -> None:
    pf = read_pairs(write(tmp_path, SMALL))
    make_tree(tmp_path / "lfw" / "lfw-deepfunneled", pf.images(), ".jpg")
    with pytest.raises(PairsFormatError, match=r"seem to be under .*lfw-deepfunneled"):
        resolve_images(pf, tmp_path / "lfw")
    with pytest.raises(PairsFormatError, match="no such image folder"):
        resolve_images(pf, tmp_path / "nowhere")


def test_resolve_accepts_plain_pair_list(tmp_path: Path) -> None:
    pairs = [Pair("A/A_0001.jpg", "B/B_0002.jpg", False, 0)]
    make_tree(tmp_path, ["A/A_0001.jpg"], ".png")
    with pytest.raises(PairsFormatError, match=r"^pairs: 1 image missing .*B/B_0002\.jpg"):
        resolve_images(pairs, tmp_path)
    assert PairsFile(tuple(pairs), 1, 1).name == "<pairs>"


def test_list_lfw_images(tmp_path: Path) -> None:
    make_tree(tmp_path, ["A/A_0001.jpg", "B_C/B_C_0012.jpg"], ".jpg")
    make_tree(tmp_path, ["B_C/B_C_0013.jpg"], ".png")
    (tmp_path / "A" / "notes.txt").write_text("x")
    (tmp_path / "A" / "B_0001.jpg").write_bytes(b"x")  # wrong person prefix
    (tmp_path / "A" / "A_01.jpg").write_bytes(b"x")  # not 4 digits
    (tmp_path / "top.jpg").write_bytes(b"x")
    assert list_lfw_images(tmp_path) == ["A/A_0001.jpg", "B_C/B_C_0012.jpg", "B_C/B_C_0013.png"]
    assert list_lfw_images(tmp_path, suffixes=(".png",)) == ["B_C/B_C_0013.png"]


@pytest.mark.lfw
def test_real_pairs_file(lfw_root: Path) -> None:
    pf = read_pairs(lfw_root / "pairs.txt")
    assert (pf.folds, pf.per_fold, len(pf)) == (10, 300, 6000)
    first = Pair("Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg", True, 0)
    assert pf.pairs[0] == first
    for k in range(10):
        fold = pf.pairs[600 * k : 600 * (k + 1)]
        assert all(p.fold == k for p in fold)
        assert sum(p.same for p in fold) == 300
    assert all(p.a.split("/")[0] == p.b.split("/")[0] for p in pf.pairs if p.same)
    assert all(p.a.split("/")[0] != p.b.split("/")[0] for p in pf.pairs if not p.same)
    images = pf.images()
    assert len(images) == 7701  # spec §5 / data README
    resolved = resolve_images(pf, lfw_root / "lfw-deepfunneled")
    assert len(resolved) == 7701
    on_disk = list_lfw_images(lfw_root / "lfw-deepfunneled")
    assert on_disk == images
