"""The embedded gallery store: one SQLite file (the standard library's; no server) and a FAISS index built in the
process that opens it (``flat``: exact inner product; ``hnsw``: approximate, rebuilt after a change).

Several processes may share one file: every search first checks SQLite's ``data_version`` and rebuilds its index
when another connection has committed a change; deletions overwrite the removed rows' bytes (``PRAGMA
secure_delete``). A new file appears whole or not at all (written beside, then renamed).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from partialface.api.stores.base import EF_SEARCH, Item, Store, check_meta
from partialface.errors import PartialFaceError

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE templates (id INTEGER PRIMARY KEY, identity INTEGER NOT NULL REFERENCES identities(id),
                        source TEXT NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX templates_identity ON templates(identity);
"""

#: below this many probes a search runs on one thread: FAISS's OpenMP threads, left spinning after a small
#: search, slow the next embedding (ONNX Runtime's and PyTorch's own threads) more than they save
SMALL_SEARCH = 16


def _corrupt(path: Path, err: Exception) -> PartialFaceError:
    return PartialFaceError(f"{path}: not a readable partialface gallery ({err}); restore it from a copy or "
                            "enrol into a new file")


def faiss_search(index: Any, q: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
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


class SQLiteStore(Store):
    """A gallery file (``path``) or, with ``path`` None, an in-memory gallery."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None, index: str, ef_search: int) -> None:
        self._conn, self.path, self.index_kind, self.ef_search = conn, path, index, ef_search
        self.label = str(path) if path is not None else "the gallery"
        meta = self.meta()
        self.fusion, self.dim = meta["fusion"], int(meta["dim"])
        self._index: Any = None
        self._version: int | None = None  # SQLite's data_version when the index was built

    # ------------------------------------------------------------------------------------------- open / create
    @classmethod
    def open(cls, path: Path, *, index: str = "flat", ef_search: int = EF_SEARCH) -> SQLiteStore:
        if not path.is_file():
            raise PartialFaceError(f"{path}: not a file (a gallery is one .db file)")
        try:
            conn = sqlite3.connect(str(path), isolation_level=None)  # transactions are explicit
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")  # a removed person's templates are overwritten, not just unlinked
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            raise _corrupt(path, err) from None
        check_meta(str(path), rows)
        return cls(conn, path, index, ef_search)

    @classmethod
    def create(cls, path: Path | None, meta: dict[str, str], *, index: str = "flat", ef_search: int = EF_SEARCH
               ) -> SQLiteStore:
        def fill(conn: sqlite3.Connection) -> None:
            conn.executescript(_SCHEMA)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
            conn.commit()

        if path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            conn.execute("PRAGMA secure_delete=ON")
            fill(conn)
            return cls(conn, None, index, ef_search)
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
        return cls.open(path, index=index, ef_search=ef_search)

    # ------------------------------------------------------------------------------------------- reads
    def meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def names(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM identities ORDER BY id")]

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0])

    def contains(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM identities WHERE name = ?", (name,)).fetchone() is not None

    def counts(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._conn.execute(
            "SELECT i.name, COUNT(t.id) FROM identities i LEFT JOIN templates t ON t.identity = i.id "
            "GROUP BY i.id ORDER BY i.id")}

    def templates(self, name: str) -> np.ndarray:
        rows = self._conn.execute("SELECT t.embedding FROM templates t JOIN identities i ON t.identity = i.id "
                                  "WHERE i.name = ? ORDER BY t.id", (name,)).fetchall()
        return np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows]) if rows else np.zeros((0, self.dim),
                                                                                                     np.float32)

    def items(self) -> Iterator[Item]:
        for ident, name in self._conn.execute("SELECT id, name FROM identities ORDER BY id").fetchall():
            rows = self._conn.execute("SELECT source, embedding FROM templates WHERE identity = ? ORDER BY id",
                                      (ident,)).fetchall()
            yield name, np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]) if rows else \
                np.zeros((0, self.dim), np.float32), [r[0] for r in rows]

    # ------------------------------------------------------------------------------------------- writes
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers of a shared file take turns), rolled back on any
        error; the in-process index is rebuilt on the next search."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            self._index = None

    def add(self, items: Iterable[Item]) -> int:
        added = 0
        with self._write() as conn:
            for name, e, src in items:
                conn.execute("INSERT OR IGNORE INTO identities(name) VALUES (?)", (name,))
                ident = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()[0]
                conn.executemany("INSERT INTO templates(identity, source, embedding) VALUES (?, ?, ?)",
                                 [(ident, s, np.asarray(v, np.float32).tobytes()) for s, v in zip(src, e, strict=True)])
                added += len(e)
        return added

    def remove(self, name: str) -> int:
        n = 0
        with self._write() as conn:
            row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            if row is not None:
                n = conn.execute("DELETE FROM templates WHERE identity = ?", (row[0],)).rowcount
                conn.execute("DELETE FROM identities WHERE id = ?", (row[0],))
        return n

    def backup(self, dest: Path) -> None:
        """Write the gallery to ``dest`` (atomically: a temp file, then rename)."""
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
            index.hnsw.efSearch = self.ef_search
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

    def entries(self) -> int:
        return int(self._current()[0].ntotal)

    def search(self, q: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
        index, names, most = self._current()
        if index.ntotal == 0:
            return [[] for _ in q]
        # with max fusion the k-th best identity's best template ranks at most (k - 1) * most + 1
        depth = min(index.ntotal, (top_k - 1) * most + 1 if self.fusion == "max" else top_k)
        scores, rows = faiss_search(index, q, depth)
        out = []
        for srow, irow in zip(scores, rows, strict=True):
            best: dict[str, float] = {}
            for score, i in zip(srow, irow, strict=True):
                if i >= 0 and names[i] not in best:
                    best[names[i]] = float(score)
            out.append(sorted(best.items(), key=lambda kv: -kv[1])[:top_k])
        return out
