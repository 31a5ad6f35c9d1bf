"""``partialface.Gallery``: enrolled identities and open-set 1:N identification (issue #14).

    gallery = partialface.Gallery("people.db")               # created on first use; Gallery() = in memory
    gallery.enroll("Ada", ["ada1.jpg", "ada2.jpg"])
    result = gallery.identify("someone.jpg")                  # result.name is None for an unknown face

Store: one SQLite file (the standard library's; no server) holds the identities, their templates (one
embedding per enrolled image) and the gallery's metadata: format version, model (name, spec, weights
digest), embedding size, fusion rule. Every change is one SQLite transaction, so a killed ``enroll``
leaves the gallery as it was. Searches run on a FAISS index built from the stored embeddings when the
gallery opens: ``index="flat"`` (exact inner product, the default) or ``"hnsw"`` (approximate, for large
galleries; rebuilt after a change).

Fusion (several images per identity), fixed when the gallery is made: ``max`` (default) scores an
identity by its best template (cosine of the probe with its nearest template); ``mean`` by the cosine of
the probe with the L2-normalised mean of its templates. The open-set decision: the best identity is
the answer when its score reaches the threshold, otherwise the face is unknown (``name`` None).

The threshold (issue #40). By default it follows a false-positive identification rate ``fpir`` (1 %): the
share of unknown faces that may be named as someone. A probe is compared with every entry of the index (each
template with ``max`` fusion, each identity with ``mean``), so the per-comparison rate is
``1 - (1 - fpir) ** (1 / entries)`` (:func:`partialface.evaluation.openset.per_comparison_far`) for the gallery's
size at the moment of the search, and its threshold comes from the model's calibrated operating points
(interpolated on log FAR between them; below the strictest one, that one, said so:
:func:`partialface.evaluation.openset.threshold_between`). ``far=`` instead fixes the per-comparison rate (a
calibrated one) whatever the gallery's size. Every answer says which threshold and why (``why``).

Several processes may share one file: every search first checks SQLite's ``data_version`` and rebuilds its
index when another connection has committed a change; deletions overwrite the removed rows' bytes
(``PRAGMA secure_delete``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partialface.api.facade import Face, Image, check_kind, embed, load, pair_threshold, photo_detector
from partialface.errors import PartialFaceError
from partialface.evaluation.openset import DEFAULT_FPIR, per_comparison_far, threshold_between

#: the gallery file's format version (the ``format`` row of its meta table)
FORMAT = 1
FUSIONS = ("max", "mean")
INDEXES = ("flat", "hnsw")
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE templates (id INTEGER PRIMARY KEY, identity INTEGER NOT NULL REFERENCES identities(id),
                        source TEXT NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX templates_identity ON templates(identity);
"""


@dataclass
class Identification:
    """``name``: the decided identity, or None for an unknown face (best score under ``threshold``);
    ``score``: the best identity's score; ``candidates``: the top (name, score) pairs, best first;
    ``threshold``: the operating point for ``kind`` pairs at the per-comparison rate ``far``; ``fpir``: the
    false-positive identification rate it was derived from (None when ``far`` was given); ``comparisons``: the
    gallery entries each probe was compared with; ``why``: which threshold and why, one sentence;
    ``face``: the probe's face."""

    name: str | None
    score: float
    threshold: float
    far: float
    kind: str
    candidates: list[tuple[str, float]]
    face: Face | None = None
    notes: list[str] = field(default_factory=list)
    fpir: float | None = None
    comparisons: int | None = None
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The documented JSON fields."""
        return {"name": self.name, "score": self.score, "threshold": self.threshold, "far": self.far,
                "fpir": self.fpir, "comparisons": self.comparisons, "why": self.why,
                "kind": self.kind, "candidates": [[n, s] for n, s in self.candidates], "notes": list(self.notes),
                "face": None if self.face is None else {"box": self.face.box, "score": self.face.score}}


def _corrupt(path: Path, err: Exception) -> PartialFaceError:
    return PartialFaceError(f"{path}: not a readable partialface gallery ({err}); restore it from a copy or "
                            "enrol into a new file")


#: below this many probes a search runs on one thread: FAISS's OpenMP threads, left spinning after a small
#: search, slow the next embedding (ONNX Runtime's and PyTorch's own threads) more than they save
SMALL_SEARCH = 16


def _search(index: Any, q: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(q, depth)``, single-threaded for fewer than :data:`SMALL_SEARCH` probes q (Q, D)."""
    import faiss

    if len(q) >= SMALL_SEARCH:
        return index.search(q, depth)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(q, depth)
    finally:
        faiss.omp_set_num_threads(threads)


class Gallery:
    """Identities and their templates, searchable by face. ``path`` None: in memory (``save`` writes it out);
    a missing file is created (atomically) on the spot. ``model`` None: the gallery's own model for an
    existing file, the default model for a new one; another model than the gallery's is refused.
    ``fusion`` (new galleries only): ``max`` or ``mean`` (module docstring); ``index``: ``flat`` or ``hnsw``;
    ``infer``: the inference path of the faces it embeds (:func:`partialface.api.load`)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, model: str | None = None, *,
                 fusion: str | None = None, index: str = "flat", device: str = "cpu", infer: str = "auto",
                 detector: str = "auto") -> None:
        if index not in INDEXES:
            raise PartialFaceError(f"--index {index}: choose one of {', '.join(INDEXES)}")
        if fusion is not None and fusion not in FUSIONS:
            raise PartialFaceError(f"--fusion {fusion}: choose one of {', '.join(FUSIONS)}")
        self.path = Path(path) if path is not None else None
        self.index_kind, self.device, self.infer, self.detector = index, device, infer, photo_detector(detector)
        if self.path is not None and self.path.exists():
            self._conn = self._open(self.path)
            meta = self.meta
            if fusion is not None and fusion != meta["fusion"]:
                raise PartialFaceError(f"--fusion {fusion}: {self.path} was made with fusion {meta['fusion']} "
                                       "(fixed when a gallery is made)")
            self._model = load(model or meta["model_spec"], device, infer)
            if self._model.weights != meta["weights"]:
                raise PartialFaceError(
                    f"{self.path}: a gallery of model {meta['model']}, not of {self._model.name} (their embeddings "
                    f"do not compare); use --model {meta['model_spec']}, or enrol into a new gallery")
        else:
            self._model = load(model, device, infer)
            self._conn = self._create(self.path, self._model, fusion or "max")
        self.fusion = self.meta["fusion"]
        self._index: Any = None
        self._version: int | None = None  # SQLite's data_version when the index was built

    # ------------------------------------------------------------------------------------------- storage
    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        if not path.is_file():
            raise PartialFaceError(f"{path}: not a file (a gallery is one .db file)")
        try:
            conn = sqlite3.connect(str(path), isolation_level=None)  # transactions are explicit
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")  # a removed person's templates are overwritten, not just unlinked
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            raise _corrupt(path, err) from None
        if rows.get("kind") != "partialface-gallery":
            raise PartialFaceError(f"{path}: not a partialface gallery")
        if rows.get("format") != str(FORMAT):
            raise PartialFaceError(f"{path}: gallery format {rows.get('format')}, this partialface reads format "
                                   f"{FORMAT}; re-enrol with this version")
        return conn

    @staticmethod
    def _create(path: Path | None, model: Any, fusion: str) -> sqlite3.Connection:
        meta = {"kind": "partialface-gallery", "format": str(FORMAT), "model": model.name, "model_spec": model.spec,
                "weights": model.weights, "dim": str(model.embedder.embedding_dim), "fusion": fusion}

        def fill(conn: sqlite3.Connection) -> None:
            conn.executescript(_SCHEMA)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
            conn.commit()

        if path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            conn.execute("PRAGMA secure_delete=ON")
            fill(conn)
            return conn
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            with sqlite3.connect(str(tmp)) as new:
                fill(new)
            new.close()
            os.replace(tmp, path)  # a new gallery appears whole or not at all
        finally:
            tmp.unlink(missing_ok=True)
        return Gallery._open(path)

    @property
    def meta(self) -> dict[str, str]:
        """The gallery's metadata (kind, format, model, model_spec, weights, dim, fusion)."""
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    @property
    def model(self) -> str:
        return self._model.name

    @property
    def names(self) -> list[str]:
        """The enrolled identities, in enrolment order."""
        return [r[0] for r in self._conn.execute("SELECT name FROM identities ORDER BY id")]

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0])

    def __contains__(self, name: object) -> bool:
        return self._conn.execute("SELECT 1 FROM identities WHERE name = ?", (name,)).fetchone() is not None

    def counts(self) -> dict[str, int]:
        """{name: its number of templates}, in enrolment order."""
        return {r[0]: int(r[1]) for r in self._conn.execute(
            "SELECT i.name, COUNT(t.id) FROM identities i LEFT JOIN templates t ON t.identity = i.id "
            "GROUP BY i.id ORDER BY i.id")}

    def templates(self, name: str) -> np.ndarray:
        """(T, D) float32: the embeddings enrolled for ``name``."""
        rows = self._conn.execute("SELECT t.embedding FROM templates t JOIN identities i ON t.identity = i.id "
                                  "WHERE i.name = ? ORDER BY t.id", (name,)).fetchall()
        return np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows]) if rows else np.zeros((0, self.dim),
                                                                                                     np.float32)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    # ------------------------------------------------------------------------------------------- changes
    def enroll(self, name: str, images: Image | list[Image], *, aligned: bool = False) -> int:
        """Add a template per image to ``name`` (new or enrolled); the number added. Every image must hold a
        face (the best one is enrolled); nothing is written unless all of them do."""
        items = images if isinstance(images, list) else [images]
        if not items:
            raise PartialFaceError(f"enroll {name}: give at least one image")
        vectors, sources = [], []
        for image in items:
            label = str(image) if isinstance(image, (str, os.PathLike)) else f"an image of {name}"
            faces = embed(image, self._model.spec, aligned=aligned, regions=False, device=self.device,
                          infer=self.infer, detector=self.detector)
            if not faces:
                raise PartialFaceError(f"{label}: no face found; nothing enrolled for {name} (give another photo)")
            vectors.append(faces[0].embedding)
            sources.append(label)
        return self.enroll_embeddings(name, np.stack(vectors), sources)

    def enroll_embeddings(self, name: str, embeddings: np.ndarray, sources: list[str] | None = None) -> int:
        """Add templates (T, D) (L2-normalised here) to ``name`` in one transaction; the number added."""
        return self.enroll_many([(name, embeddings, sources)])

    def enroll_many(self, items: Sequence[tuple[str, np.ndarray, list[str] | None]]) -> int:
        """Add (name, embeddings (T, D), sources) items in ONE transaction: all of them or, if interrupted,
        none. The number of templates added."""
        rows = []
        for name, embeddings, sources in items:
            e = np.asarray(embeddings, dtype=np.float32)
            if e.ndim != 2 or e.shape[1] != self.dim:
                raise PartialFaceError(f"enroll {name}: embeddings must be (T, {self.dim}), got {e.shape}")
            norms = np.linalg.norm(e, axis=1, keepdims=True)
            if not np.all(np.isfinite(e)) or np.any(norms == 0):
                raise PartialFaceError(f"enroll {name}: embeddings must be finite and non-zero")
            e = e / norms
            src = sources if sources is not None else [""] * len(e)
            rows.append((name, e, src))
        conn, added = self._conn, 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name, e, src in rows:
                conn.execute("INSERT OR IGNORE INTO identities(name) VALUES (?)", (name,))
                ident = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()[0]
                conn.executemany("INSERT INTO templates(identity, source, embedding) VALUES (?, ?, ?)",
                                 [(ident, s, v.tobytes()) for s, v in zip(src, e, strict=True)])
                added += len(e)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._index = None
        return added

    def remove(self, name: str) -> int:
        """Remove ``name`` and its templates; the number of templates removed (0 if not enrolled)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            n = 0
            if row is not None:
                n = conn.execute("DELETE FROM templates WHERE identity = ?", (row[0],)).rowcount
                conn.execute("DELETE FROM identities WHERE id = ?", (row[0],))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._index = None
        return n

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the gallery to ``path`` (atomically: a temp file, then rename)."""
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            out = sqlite3.connect(str(tmp))
            self._conn.backup(out)
            out.close()
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def open(cls, path: str | os.PathLike[str], model: str | None = None, *, index: str = "flat",
             device: str = "cpu", infer: str = "auto", detector: str = "auto") -> Gallery:
        """An existing gallery file (PartialFaceError when it is missing)."""
        if not Path(path).exists():
            raise PartialFaceError(f"{path}: no such gallery (enrol someone first: partialface enroll {path} NAME "
                                   "IMAGES...)")
        return cls(path, model, index=index, device=device, infer=infer, detector=detector)

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------------------------------------- search
    def _build(self) -> tuple[Any, np.ndarray, int]:
        """(FAISS index, the identity name of each index row, the most templates of one identity)."""
        import faiss

        rows = self._conn.execute("SELECT i.name, t.embedding FROM templates t JOIN identities i "
                                  "ON t.identity = i.id ORDER BY i.id, t.id").fetchall()
        names = np.array([r[0] for r in rows], dtype=object)
        vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]) if rows else \
            np.zeros((0, self.dim), np.float32)
        most = 1
        if self.fusion == "mean" and len(rows):
            uniq, inverse = np.unique(names.astype(str), return_inverse=True)
            sums = np.zeros((len(uniq), self.dim), np.float64)
            np.add.at(sums, inverse, vectors)
            vectors = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
            names = uniq.astype(object)
        elif len(rows):
            most = int(np.unique(names.astype(str), return_counts=True)[1].max())
        index: Any
        if self.index_kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
        else:
            index = faiss.IndexFlatIP(self.dim)
        if len(vectors):
            index.add(np.ascontiguousarray(vectors))
        return index, names, most

    def _current(self) -> tuple[Any, np.ndarray, int]:
        """The search index, rebuilt when this connection changed the gallery or another one committed a change
        since it was built (SQLite's ``data_version``: another process's enrolment is seen on the next search)."""
        version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        if self._index is None or version != self._version:
            self._index, self._version = self._build(), version
        return self._index

    @property
    def entries(self) -> int:
        """How many gallery entries a probe is compared with: the templates (``max`` fusion) or the identities
        (``mean``), as the gallery is now."""
        return int(self._current()[0].ntotal)

    def search(self, embeddings: np.ndarray, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Ranked (name, score) candidates (at most ``top_k`` identities) for each probe embedding (Q, D),
        scored by the gallery's fusion rule."""
        if top_k < 1:
            raise PartialFaceError(f"--top-k {top_k}: must be >= 1")
        index, names, most = self._current()
        q = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        q = np.ascontiguousarray(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12))
        if index.ntotal == 0:
            return [[] for _ in q]
        # with max fusion the k-th best identity's best template ranks at most (k - 1) * most + 1
        depth = min(index.ntotal, (top_k - 1) * most + 1 if self.fusion == "max" else top_k)
        scores, rows = _search(index, q, depth)
        out = []
        for srow, irow in zip(scores, rows, strict=True):
            best: dict[str, float] = {}
            for score, i in zip(srow, irow, strict=True):
                if i >= 0 and names[i] not in best:
                    best[names[i]] = float(score)
            out.append(sorted(best.items(), key=lambda kv: -kv[1])[:top_k])
        return out

    def identify(self, image: Image, top_k: int = 5, far: float | None = None, *, fpir: float | None = None,
                 kind: str = "auto", aligned: bool = False) -> Identification:
        """Who is this? The best face of ``image`` against the gallery, decided open-set (module docstring): by
        default at the false-positive identification rate ``fpir`` (1 %) over the gallery's current size;
        ``far``: a fixed per-comparison rate instead."""
        found = self.identify_faces(image, top_k, far, fpir=fpir, kind=kind, aligned=aligned)
        if len(found) > 1:
            label = str(image) if isinstance(image, (str, os.PathLike)) else "probe"
            found[0].notes.append(f"{label}: {len(found)} faces; identified the best (the largest, most central)")
        return found[0]

    def identify_faces(self, image: Image, top_k: int = 5, far: float | None = None, *, fpir: float | None = None,
                       kind: str = "auto", aligned: bool = False) -> list[Identification]:
        """:meth:`identify` for every face of ``image``, best first."""
        self.check_rule(far, fpir, kind)  # a bad far, fpir or kind fails before any detection
        faces = embed(image, self._model.spec, aligned=aligned, regions=False, device=self.device,
                      infer=self.infer, detector=self.detector)
        if not faces:
            label = str(image) if isinstance(image, (str, os.PathLike)) else "probe"
            raise PartialFaceError(f"{label}: no face found (give another photo, or an aligned 160x160 face with "
                                   "--aligned)")
        return self.identify_embedded(faces, top_k, far, fpir=fpir, kind=kind)

    def check_rule(self, far: float | None, fpir: float | None, kind: str) -> None:
        """A bad ``far``, ``fpir`` or ``kind`` (or both rates at once) fails here, before any photo is read."""
        if far is not None and fpir is not None:
            raise PartialFaceError("give --fpir (over the gallery) or --far (per comparison), not both")
        if far is not None:
            self.threshold(far, kind)
        else:
            self.threshold(1e-3, kind)  # the model has operating points, the kind is known
            per_comparison_far(DEFAULT_FPIR if fpir is None else fpir, 1)

    def identify_embedded(self, faces: Sequence[Face], top_k: int = 5, far: float | None = None, *,
                          fpir: float | None = None, kind: str = "auto") -> list[Identification]:
        """The open-set decision for faces already embedded by the gallery's model (:func:`partialface.embed`), in
        their order: the threshold of each (module docstring; ``kind="auto"`` follows what the face shows), then
        :meth:`decide`."""
        self.check_rule(far, fpir, kind)
        if top_k < 1:
            raise PartialFaceError(f"--top-k {top_k}: must be >= 1")
        entries = self.entries
        if entries == 0:
            raise PartialFaceError(f"{self.path or 'the gallery'}: nobody is enrolled yet (partialface enroll first)")
        out = []
        for f in faces:
            def at(x: float, f: Face = f) -> float:
                return pair_threshold(self._model, x, kind, f, None)[0]

            _, used, share = pair_threshold(self._model, far or 1e-3, kind, f, None)  # the kind follows the face
            rule_fpir = None if far is not None else DEFAULT_FPIR if fpir is None else fpir
            if rule_fpir is None:
                assert far is not None
                threshold, rate = at(far), far
                why = f"threshold {threshold:.4f}: the {used} operating point at FAR {far:g} per comparison, as asked"
            else:
                rate = per_comparison_far(rule_fpir, entries)
                point = threshold_between(rate, at)
                threshold = point.threshold
                why = (f"threshold {threshold:.4f}: FPIR {rule_fpir:g} over {entries} gallery entr"
                       f"{'y' if entries == 1 else 'ies'} = FAR {rate:.3g} per comparison; {point.how} "
                       f"({used} pairs)")
            notes = [f"the face shows {share:.2f} of itself: the {used} operating point"] if share is not None else []
            res = self.decide(f.embedding, top_k, threshold, rate, used, f, notes, fpir=rule_fpir)
            res.comparisons, res.why = entries, why
            out.append(res)
        return out

    def threshold(self, far: float, kind: str = "holistic") -> float:
        """The model's operating point at ``far`` for ``kind`` pairs ("auto": the whole faces' one; each probe's own
        follows its visibility, :meth:`identify_faces`)."""
        if self._model.points is None:
            raise PartialFaceError(f"--model {self.model}: it has no operating points (thresholds); measure them "
                                   "with `partialface calibrate`")
        check_kind(self._model, far, kind)
        return self._model.points.at(far, "holistic" if kind == "auto" else kind)

    def decide(self, embedding: np.ndarray, top_k: int, threshold: float, far: float, kind: str = "holistic",
               face: Face | None = None, notes: list[str] | None = None, *, fpir: float | None = None
               ) -> Identification:
        """The open-set decision for one probe embedding (D,)."""
        candidates = self.search(embedding[None], top_k)[0]
        if not candidates:
            raise PartialFaceError(f"{self.path or 'the gallery'}: nobody is enrolled yet (partialface enroll first)")
        name, score = candidates[0]
        notes = list(notes or [])
        size = len(self)
        if fpir is None and size * far > 0.05:  # with a fixed far, unknown faces pass more often as the gallery grows
            notes.append(f"{size} identities at FAR {far:g} per comparison: an unknown face may be taken for someone "
                         f"in up to {min(1.0, size * far):.0%} of cases; the default --fpir follows the gallery's "
                         "size")
        return Identification(name if score >= threshold else None, score, threshold, far, kind, candidates, face,
                              notes, fpir)
