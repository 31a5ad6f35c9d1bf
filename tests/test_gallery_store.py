"""The gallery store's contract (issue #41), run against both stores: SQLite + FAISS (a path) and PostgreSQL +
pgvector (a URL; a real server started for the session by ``pgserver``, tests/pgtest.py). Search against brute
force for both fusion rules, reopen / remove / counts, the format, model and fusion checks, one transaction per
enrolment, another connection's enrolment seen on the next query, the open-set decision (FPIR over the gallery's
size), HNSW as an option, two writers enrolling one name at once, the CLI on either form, and ``gallery copy``."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pgtest import admin, fresh_url
from test_training import make_identities

from partialface.api import Gallery
from partialface.api.facade import Face
from partialface.api.gallery import copy_gallery
from partialface.cli import main
from partialface.errors import PartialFaceError
from partialface.models.catalogue import DEFAULT_MODEL

STORES = ["sqlite", "postgres"]
pytestmark = pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR")  # platformdirs, inside pgserver


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=STORES)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new gallery's location in each store."""
    return str(tmp_path / "g.db") if request.param == "sqlite" else fresh_url()


def _people(rng: np.random.Generator, n: int = 30) -> dict[str, np.ndarray]:
    return {f"p{i:02d}": _unit(rng.normal(size=(int(rng.integers(1, 5)), 128))) for i in range(n)}


def _fill(g: Gallery, people: dict[str, np.ndarray]) -> None:
    for name, t in people.items():
        assert g.enroll_embeddings(name, t, [f"{name}/{i}.jpg" for i in range(len(t))]) == len(t)


def _set_format(location: str, value: str) -> None:
    if location.startswith("postgresql"):
        with admin() as conn:
            schema = location.rpartition("schema=")[2]
            conn.execute(f'UPDATE "{schema}".partialface_meta SET value = %s WHERE key = %s', (value, "format"))
    else:
        conn = sqlite3.connect(location)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'format'", (value,))
        conn.commit()
        conn.close()


@pytest.mark.parametrize("fusion", ["max", "mean"])
def test_search_matches_brute_force(location: str, fusion: str) -> None:
    rng = np.random.default_rng(0)
    g = Gallery(location, fusion=fusion)
    people = _people(rng)
    _fill(g, people)
    probes = _unit(rng.normal(size=(20, 128)))
    for top_k in (1, 3, 7):
        got = g.search(probes, top_k)
        for q, cands in zip(probes, got, strict=True):
            ref = {n: float((t @ q).max()) if fusion == "max" else float(_unit(t.sum(0)) @ q)
                   for n, t in people.items()}
            want = sorted(ref.items(), key=lambda kv: -kv[1])[:top_k]
            assert [n for n, _ in cands] == [n for n, _ in want]
            assert np.allclose([s for _, s in cands], [s for _, s in want], atol=1e-5)
    assert g.entries == (sum(len(t) for t in people.values()) if fusion == "max" else len(people))
    g.close()


def test_reopen_remove_counts_and_refusals(location: str) -> None:
    rng = np.random.default_rng(1)
    g = Gallery(location, fusion="mean")
    people = _people(rng)
    _fill(g, people)
    assert len(g) == 30 and g.names == sorted(people) and g.meta["model"] == DEFAULT_MODEL
    assert g.counts() == {n: len(t) for n, t in people.items()} and "p03" in g and "nobody" not in g
    g.close()
    again = Gallery.open(location)
    assert again.fusion == "mean" and len(again) == 30
    assert np.allclose(again.templates("p03"), people["p03"], atol=1e-6)
    q = people["p07"][0]
    assert again.search(q[None], 1)[0][0][0] == "p07"
    assert again.remove("p07") == len(people["p07"]) and "p07" not in again and again.remove("p07") == 0
    assert again.search(q[None], 1)[0][0][0] != "p07" and len(again.templates("p07")) == 0
    assert again.entries == 29 and len(again) == 29
    saved = Path(tempfile.mkdtemp()) / "saved.db"
    again.save(saved)  # either store written out as one SQLite file
    assert Gallery.open(saved).counts() == again.counts()
    with pytest.raises(PartialFaceError, match=r"embeddings must be \(T, 128\)"):
        again.enroll_embeddings("x", np.ones((2, 64)))
    with pytest.raises(PartialFaceError, match="finite and non-zero"):
        again.enroll_embeddings("x", np.zeros((1, 128)))
    again.close()
    with pytest.raises(PartialFaceError, match="made with fusion mean"):
        Gallery(location, fusion="max")
    with pytest.raises(PartialFaceError, match=r"a gallery of model .* not of ours-celeba"):
        Gallery(location, "ours-celeba")
    _set_format(location, "99")
    with pytest.raises(PartialFaceError, match="gallery format 99, this partialface reads format 1"):
        Gallery.open(location)


def test_a_recalibrated_model_file_keeps_its_gallery(tmp_path: Path) -> None:
    """A gallery made with one file of a model opens with the same file recalibrated (new operating points, the same
    tensors: the same embeddings), and identifies with the new thresholds; a file whose weights changed is named
    ("made with another file of model X", not "a gallery of model X, not of X"); a gallery that recorded the
    whole-file digest (before the weights digest) still opens with that file."""
    import sqlite3

    from partialface.evaluation.calibrate import METADATA_KEY
    from partialface.models.catalogue import shipped_model
    from partialface.models.files import file_digest, weights_digest
    from partialface.training.checkpoint import load_weights, save_weights

    tensors, meta = load_weights(shipped_model("ours-celeba"))
    model = tmp_path / "mine.safetensors"
    save_weights(model, tensors, meta)
    before = weights_digest(model)
    g = Gallery(tmp_path / "g.db", str(model))
    g.enroll_embeddings("p", np.eye(1, g.dim))
    g.close()
    points = json.loads(meta[METADATA_KEY])
    points["threshold"]["holistic"]["1e-03"] += 0.01
    save_weights(model, tensors, {**meta, METADATA_KEY: json.dumps(points)})
    assert weights_digest(model) == before and file_digest(model) != before
    g = Gallery.open(tmp_path / "g.db")
    assert g.counts() == {"p": 1} and g._model.points is not None  # the recalibrated file's thresholds
    assert g._model.points.at(1e-3, "holistic") == pytest.approx(points["threshold"]["holistic"]["1e-03"])
    g.close()
    # the whole-file digest a gallery recorded before: the same file still opens it
    with sqlite3.connect(tmp_path / "g.db") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'weights'", (file_digest(model),))
    Gallery.open(tmp_path / "g.db").close()
    changed = {k: v.clone() for k, v in tensors.items()}
    first = next(iter(changed))
    changed[first].view(-1)[0] += 1
    save_weights(model, changed, meta)
    with pytest.raises(PartialFaceError, match=r"made with another file of model mine .*enrol the people again"):
        Gallery.open(tmp_path / "g.db")


def test_no_such_gallery(location: str) -> None:
    with pytest.raises(PartialFaceError, match=r"no such gallery|no gallery in this database"):
        Gallery.open(location)


def test_one_transaction_per_enrolment(location: str) -> None:
    g = Gallery(location)
    people = _people(np.random.default_rng(2), 5)
    _fill(g, people)
    before = g.counts()

    def items() -> Iterator[tuple[str, np.ndarray, list[str]]]:
        yield "new1", _unit(np.ones((2, 128))), ["a", "b"]
        yield "p01", _unit(np.ones((1, 128))), ["c"]
        raise RuntimeError("interrupted mid-enrolment")

    with pytest.raises(RuntimeError, match="interrupted"):
        g.store.add(items())
    assert g.counts() == before and "new1" not in g and g.entries == sum(before.values())
    with pytest.raises(PartialFaceError, match="embeddings must be"):  # a bad item: nothing of the good ones either
        g.enroll_many([("new2", _unit(np.ones((1, 128))), None), ("new3", np.ones((1, 3)), None)])
    assert g.counts() == before
    assert g.enroll_many([("new2", _unit(np.ones((1, 128))), None), ("p00", _unit(-np.ones((2, 128))), None)]) == 3
    assert g.counts()["p00"] == before["p00"] + 2 and g.names[-1] == "new2"


def test_another_connection_sees_changes_on_its_next_query(location: str) -> None:
    a = Gallery(location)
    b = Gallery.open(location)
    assert b.entries == 0
    v = _unit(np.random.default_rng(3).normal(size=(1, 128)))
    a.enroll_embeddings("ada", v)
    assert b.search(v, 1)[0][0][0] == "ada" and b.entries == 1 and "ada" in b
    a.remove("ada")
    assert b.search(v, 1)[0] == [] and b.entries == 0


def test_open_set_decision_follows_the_gallerys_size(location: str) -> None:
    g = Gallery(location)
    people = _people(np.random.default_rng(4), 10)
    _fill(g, people)
    entries = sum(len(t) for t in people.values())
    known = Face(aligned=np.zeros((160, 160, 3), np.uint8), embedding=people["p04"][0])
    stranger = Face(aligned=np.zeros((160, 160, 3), np.uint8),
                    embedding=_unit(np.random.default_rng(99).normal(size=128)))
    hit, miss = g.identify_embedded([known, stranger], top_k=3)
    assert hit.name == "p04" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert hit.fpir == 0.01 and hit.comparisons == entries and hit.far == pytest.approx(1 - 0.99 ** (1 / entries))
    assert f"FPIR 0.01 over {entries} gallery entries" in hit.why
    assert miss.name is None and miss.score < miss.threshold and len(miss.candidates) == 3
    fixed = g.identify_embedded([known], far=1e-3)[0]
    assert fixed.fpir is None and "as asked" in fixed.why
    empty = Gallery(location.replace("g.db", "e.db") if location.endswith(".db") else fresh_url())
    with pytest.raises(PartialFaceError, match="nobody is enrolled yet"):
        empty.identify_embedded([known])


def test_hnsw_option_finds_the_exact_answers_on_a_small_gallery(location: str) -> None:
    rng = np.random.default_rng(5)
    exact = Gallery(location)
    _fill(exact, _people(rng))
    approx = Gallery(location, index="hnsw", ef_search=64)
    probes = _unit(rng.normal(size=(30, 128)))
    assert [c[0][0] for c in approx.search(probes, 1)] == [c[0][0] for c in exact.search(probes, 1)]
    # an HNSW index in the database does not make the default search approximate
    assert exact.search(probes, 5) == Gallery.open(location).search(probes, 5)


def test_two_writers_enrolling_one_name_at_once(location: str) -> None:
    Gallery(location).close()
    rng = np.random.default_rng(6)
    vectors = _unit(rng.normal(size=(2, 15, 128)))
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            g = Gallery.open(location)
            for i in range(15):
                g.enroll_embeddings("same", vectors[w, i : i + 1], [f"w{w}-{i}"])
                g.enroll_embeddings(f"w{w}-{i}", vectors[w, i : i + 1])
            g.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    g = Gallery.open(location)
    assert g.names.count("same") == 1 and g.counts()["same"] == 30 and len(g) == 31 and g.entries == 60


def test_the_cli_takes_either_form(location: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces = make_identities(tmp_path / "faces", 3, 2)
    assert main(["enroll", location, "--folders", str(faces), "--aligned", "--no-progress"]) == 0
    assert "enrolled 6 image(s) of 3 identities" in capsys.readouterr().out
    assert main(["identify", location, str(faces / "id01" / "001.png"), "--aligned", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["name"] == "id01" and got["comparisons"] == 6
    if location.startswith("postgresql"):
        assert ":@" not in got["probe"]


def test_gallery_copy_sqlite_to_postgres_and_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(7)
    src = tmp_path / "src.db"
    g = Gallery(src, fusion="mean")
    people = _people(rng)
    _fill(g, people)
    url = fresh_url()
    assert main(["gallery", "copy", str(src), url]) == 0
    out = capsys.readouterr().out
    assert "copied 30 identities" in out and "password" not in out
    pg = Gallery.open(url)
    assert pg.counts() == g.counts() and pg.fusion == "mean" and pg.names == g.names
    assert all(np.allclose(pg.templates(n), g.templates(n), atol=1e-7) for n in people)
    probes = _unit(rng.normal(size=(10, 128)))
    for a, b in zip(pg.search(probes, 5), g.search(probes, 5), strict=True):
        assert [n for n, _ in a] == [n for n, _ in b] and np.allclose([s for _, s in a], [s for _, s in b], atol=1e-5)
    back = tmp_path / "back.db"
    assert copy_gallery(url, back)["templates"] == sum(len(t) for t in people.values())
    assert Gallery.open(back).counts() == g.counts()
    # refused: a destination that is not empty, or of another model; the source itself; a missing source
    assert main(["gallery", "copy", str(src), url]) == 2
    assert "not empty" in capsys.readouterr().err
    other = tmp_path / "other.db"
    Gallery(other, "ours-celeba").close()
    assert main(["gallery", "copy", str(src), str(other)]) == 2
    assert "a gallery of model ours-celeba" in capsys.readouterr().err
    assert main(["gallery", "copy", str(tmp_path / "nope.db"), str(tmp_path / "x.db")]) == 2
    assert "no such gallery" in capsys.readouterr().err and not (tmp_path / "x.db").exists()
