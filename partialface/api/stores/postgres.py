"""The PostgreSQL gallery store (issue #41): a ``postgresql://`` URL, PostgreSQL ≥ 14 with pgvector ≥ 0.5, psycopg 3
and the ``pgvector`` client (the extra ``partialface[postgres]``).

Tables (in the URL's ``?schema=NAME``, created when missing, else the connection's current schema):
``partialface_meta`` (key, value: the gallery's metadata), ``partialface_stats`` (one row: the numbers of identities
and templates; every write locks it first, so writes from several processes and machines take turns),
``partialface_identities`` (id, name UNIQUE, centroid: the normalised mean of the templates, kept for ``mean``
fusion) and ``partialface_templates`` (id, identity, source, embedding ``vector(D)``).

Search runs in the database: the probe's inner product with every stored vector (pgvector's ``<#>`` on L2-normalised
vectors) and only the best rows come back; ``max`` fusion keeps the best template per identity from the top rows
(fetching deeper until ``top_k`` identities are found: exact), ``mean`` ranks the identities' centroids. Exact
search is the default (a sequential scan, even where an HNSW index exists); ``index="hnsw"`` creates an HNSW index
(``vector_ip_ops``) when missing and searches it with ``hnsw.ef_search``. Every query sees what other processes
have committed. A lost connection fails the call with :class:`~partialface.api.stores.GalleryUnavailable` (its
transaction is rolled back by the server: nothing half-written) and the next call reconnects; a write whose
connection went while it was committing asks the server whether it committed (``pg_xact_status``): a success where
it did, and where the server cannot be asked, an error that says the outcome is unknown (never "nothing written").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from partialface.api.stores.base import EF_SEARCH, GalleryUnavailable, Item, Store, check_meta
from partialface.errors import PartialFaceError

#: the oldest pgvector whose HNSW index and ``<#>`` this store relies on
MIN_PGVECTOR = (0, 5)
#: names whose identities and templates are written with one statement each
CHUNK = 2000
_DDL = (
    "CREATE TABLE partialface_meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE partialface_stats (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
    "identities bigint NOT NULL DEFAULT 0, templates bigint NOT NULL DEFAULT 0)",
    "INSERT INTO partialface_stats DEFAULT VALUES",
    "CREATE TABLE partialface_identities (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, centroid vector({dim}))",
    "CREATE TABLE partialface_templates (id bigserial PRIMARY KEY, identity bigint NOT NULL "
    "REFERENCES partialface_identities(id) ON DELETE CASCADE, source text NOT NULL, embedding vector({dim}) NOT NULL)",
    "CREATE INDEX partialface_templates_identity ON partialface_templates (identity)",
)


def split_url(url: str) -> tuple[str, str | None]:
    """(the URL for libpq, the ``schema`` query parameter or None)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def redact(url: str) -> str:
    """``url`` without its password (in the user part or a ``password`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _params(dsn: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return dict(conninfo_to_dict(dsn))
    except Exception as e:  # psycopg.ProgrammingError: a malformed URL
        raise PartialFaceError(f"{redact(dsn)}: not a usable PostgreSQL URL ({_first_line(str(e), None)})") from None


def _first_line(text: str, secret: str | None) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "no reason given")
    line = line.removeprefix("connection failed: ")
    if secret:
        line = line.replace(secret, "***")
    return line[:240]


class PostgresStore(Store):
    """A gallery in a PostgreSQL database (module docstring); one connection, reopened after it is lost."""

    def __init__(self, url: str, index: str = "flat", ef_search: int = EF_SEARCH, *, create: bool = False) -> None:
        try:
            import psycopg  # noqa: F401
            from pgvector.psycopg import register_vector  # noqa: F401
        except ImportError:
            raise PartialFaceError(f"{redact(url)}: a PostgreSQL gallery needs the extra: pip install "
                                   "'partialface[postgres]' (psycopg 3, pgvector)") from None
        self.url, self.index_kind, self.ef_search = url, index, ef_search
        self._dsn, self._schema = split_url(url)
        self.label = redact(url)
        p = _params(self._dsn)
        self._secret = p.get("password") or None
        host = p.get("host") or p.get("hostaddr") or "localhost"
        self.where = f"PostgreSQL at {host}:{p.get('port') or 5432}"
        self._timeout = None if "connect_timeout" in p else 10
        self._conn: Any = None
        self.has_vector = False
        self._conn = self._connect(create)
        self.fusion, self.dim = "max", 0

    # ------------------------------------------------------------------------------------------- connection
    def _connect(self, create: bool = False) -> Any:
        import psycopg
        from pgvector.psycopg import register_vector

        kwargs: dict[str, Any] = {"autocommit": True, "application_name": "partialface"}
        if self._timeout is not None:
            kwargs["connect_timeout"] = self._timeout
        try:
            conn = psycopg.connect(self._dsn, **kwargs)
        except psycopg.Error as e:
            raise GalleryUnavailable(f"{self.where}: cannot connect ({_first_line(str(e), self._secret)}); is the "
                                     "server running, and the URL's host, port, user and password right?") from None
        try:
            self.has_vector = self._vector(conn, create)
            if self._schema is not None:
                conn.execute("SELECT set_config('search_path', quote_ident(%s) || ', ' || "
                             "current_setting('search_path'), false)", (self._schema,))
            else:
                row = conn.execute("SELECT current_schema()").fetchone()
                self._schema = None if row is None else row[0]
                if self._schema is None:
                    raise PartialFaceError(f"{self.label}: no schema to keep the gallery in (add ?schema=NAME)")
            if self.has_vector:
                register_vector(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _vector(self, conn: Any, create: bool) -> bool:
        """pgvector ≥ 0.5 in the database (created here for a new gallery where the role may), else one line;
        False where it is missing and ``create`` is not asked."""
        import psycopg

        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if row is None and create:
            if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone() is None:
                raise PartialFaceError(f"{self.where}: the server has no pgvector extension (install pgvector >= 0.5 "
                                       "on the server, then CREATE EXTENSION vector in the database)")
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('partialface: create extension'))")
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.errors.InsufficientPrivilege:
                raise PartialFaceError(f"{self.label}: the database has no pgvector extension and this role may not "
                                       "create it; ask its owner to run CREATE EXTENSION vector") from None
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if row is None and not create:
            return False  # then there is no gallery here either (its tables need the extension's type)
        if row is None:
            raise PartialFaceError(f"{self.label}: the database has no pgvector extension (run CREATE EXTENSION "
                                   "vector as its owner; pgvector >= 0.5)")
        version = tuple(int(x) for x in str(row[0]).split(".")[:2] if x.isdigit())
        if version < MIN_PGVECTOR:
            raise PartialFaceError(f"{self.label}: pgvector {row[0]}, partialface needs >= 0.5 (ALTER EXTENSION "
                                   "vector UPDATE)")
        return True

    @contextlib.contextmanager
    def _db(self) -> Iterator[Any]:
        """A live connection (reopened when lost); a connection error becomes :class:`GalleryUnavailable`."""
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._conn = self._connect()
        try:
            yield self._conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            with contextlib.suppress(Exception):
                if self._conn.broken or self._conn.closed:
                    self._conn.close()
            raise GalleryUnavailable(f"{self.where}: the gallery database is unreachable "
                                     f"({_first_line(str(e), self._secret)}); nothing was written by this call; "
                                     "try again") from None
        except psycopg.errors.UndefinedTable:
            raise PartialFaceError(f"{self.label}: the gallery's tables are gone (dropped?); enrol into a new "
                                   "gallery or restore the database") from None

    def _exists(self, conn: Any) -> bool:
        return conn.execute("SELECT to_regclass(quote_ident(%s) || '.partialface_meta')",
                            (self._schema,)).fetchone()[0] is not None

    def _load(self) -> None:
        meta = self.meta()
        check_meta(self.label, meta)
        self.fusion, self.dim = meta["fusion"], int(meta["dim"])
        if self.index_kind == "hnsw":
            table, column = ("partialface_templates", "embedding") if self.fusion == "max" else \
                ("partialface_identities", "centroid")
            with self._db() as conn:
                conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw ({column} "
                             "vector_ip_ops)")

    # ------------------------------------------------------------------------------------------- open / create
    @classmethod
    def open(cls, url: str, *, index: str = "flat", ef_search: int = EF_SEARCH) -> PostgresStore | None:
        store = cls(url, index, ef_search)
        try:
            with store._db() as conn:
                if not store.has_vector or not store._exists(conn):
                    store.close()
                    return None
            store._load()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def create(cls, url: str, meta: dict[str, str], *, index: str = "flat", ef_search: int = EF_SEARCH
               ) -> PostgresStore:
        store = cls(url, index, ef_search, create=True)
        try:
            with store._db() as conn, conn.transaction():
                # replicas starting at once: one makes the tables, the others find them
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"partialface: {store._schema}",))
                if not store._exists(conn):
                    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(conn, store._schema)}")
                    for statement in _DDL:
                        conn.execute(statement.format(dim=int(meta["dim"])))
                    with conn.cursor() as cur:
                        cur.executemany("INSERT INTO partialface_meta VALUES (%s, %s)", sorted(meta.items()))
            store._load()
        except BaseException:
            store.close()
            raise
        return store

    # ------------------------------------------------------------------------------------------- reads
    def meta(self) -> dict[str, str]:
        with self._db() as conn:
            return {k: v for k, v in conn.execute("SELECT key, value FROM partialface_meta").fetchall()}

    def names(self) -> list[str]:
        with self._db() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM partialface_identities ORDER BY id")]

    def _stats(self) -> tuple[int, int]:
        with self._db() as conn:
            row = conn.execute("SELECT identities, templates FROM partialface_stats").fetchone()
            return int(row[0]), int(row[1])

    def count(self) -> int:
        return self._stats()[0]

    def entries(self) -> int:
        identities, templates = self._stats()
        return templates if self.fusion == "max" else identities

    def contains(self, name: str) -> bool:
        with self._db() as conn:
            return conn.execute("SELECT 1 FROM partialface_identities WHERE name = %s", (name,)).fetchone() is not None

    def counts(self) -> dict[str, int]:
        with self._db() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(
                "SELECT i.name, COUNT(t.id) FROM partialface_identities i LEFT JOIN partialface_templates t "
                "ON t.identity = i.id GROUP BY i.id ORDER BY i.id")}

    def templates(self, name: str) -> np.ndarray:
        with self._db() as conn:
            rows = conn.execute("SELECT t.embedding FROM partialface_templates t JOIN partialface_identities i ON "
                                "t.identity = i.id WHERE i.name = %s ORDER BY t.id", (name,)).fetchall()
        return np.stack([_array(r[0]) for r in rows]) if rows else np.zeros((0, self.dim), np.float32)

    def items(self) -> Iterator[Item]:
        with self._db() as conn, conn.transaction(), conn.cursor(name="partialface_items") as cur:
            cur.itersize = 5000
            cur.execute("SELECT i.name, t.source, t.embedding FROM partialface_identities i JOIN "
                        "partialface_templates t ON t.identity = i.id ORDER BY i.id, t.id")
            name: str | None = None
            vectors: list[np.ndarray] = []
            sources: list[str] = []
            for n, s, v in cur:
                if n != name and name is not None:
                    yield name, np.stack(vectors), sources
                    vectors, sources = [], []
                name = n
                vectors.append(_array(v))
                sources.append(s)
            if name is not None:
                yield name, np.stack(vectors), sources

    # ------------------------------------------------------------------------------------------- writes
    @contextlib.contextmanager
    def _write_tx(self) -> Iterator[Any]:
        """A write transaction (writers take turns on the stats row). Where the connection is lost, the outcome is
        asked of the server by the transaction's id: a transaction that committed before the connection went is a
        success; one the server rolled back raises :class:`GalleryUnavailable` ("nothing was written"); where the
        server cannot be asked (it is down), the error says the outcome is unknown."""
        xid: list[str] = []
        try:
            with self._db() as conn, conn.transaction():
                conn.execute("SELECT 1 FROM partialface_stats FOR UPDATE")  # writers take turns (module docstring)
                xid.append(conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
                yield conn
        except GalleryUnavailable as e:
            if not xid or self._outcome(xid[0]) != "committed":
                raise e from None

    def _outcome(self, xid: str, polls: int = 20) -> str:
        """"committed" or "aborted", as the server says of transaction ``xid``; raises :class:`GalleryUnavailable`
        (the outcome unknown) where it cannot be asked or the transaction is still open after ``polls`` x 0.1 s."""
        import time

        for _ in range(polls):
            try:
                with self._db() as conn:
                    status = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()[0]
            except GalleryUnavailable:
                break
            if status != "in progress":
                return "committed" if status == "committed" else "aborted"
            time.sleep(0.1)
        raise GalleryUnavailable(f"{self.where}: the connection was lost while this write was committing and the "
                                 "server cannot say whether it landed; look (e.g. the person's templates) before "
                                 "writing it again") from None

    def add(self, items: Iterable[Item]) -> int:
        added = 0
        with self._write_tx() as conn:
            new = 0
            chunk: list[Item] = []
            for item in items:
                chunk.append(item)
                if len(chunk) >= CHUNK:
                    a, n = self._write(conn, chunk)
                    added, new, chunk = added + a, new + n, []
            if chunk:
                a, n = self._write(conn, chunk)
                added, new = added + a, new + n
            conn.execute("UPDATE partialface_stats SET identities = identities + %s, templates = templates + %s",
                         (new, added))
        return added

    def _write(self, conn: Any, chunk: list[Item]) -> tuple[int, int]:
        """Write ``chunk`` inside the caller's transaction: (templates added, identities new)."""
        names = list(dict.fromkeys(name for name, _, _ in chunk))
        new = conn.execute("INSERT INTO partialface_identities (name) SELECT n FROM unnest(%s::text[]) WITH "
                           "ORDINALITY AS u(n, k) ORDER BY k ON CONFLICT (name) DO NOTHING RETURNING id",
                           (names,)).fetchall()
        ids = dict(conn.execute("SELECT name, id FROM partialface_identities WHERE name = ANY(%s)",
                                (names,)).fetchall())
        added = 0
        with conn.cursor() as cur, cur.copy("COPY partialface_templates (identity, source, embedding) FROM STDIN "
                                            "WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "vector"])
            for name, e, src in chunk:
                for s, v in zip(src, e, strict=True):
                    copy.write_row((ids[name], s, np.asarray(v, np.float32)))
                added += len(e)
        if self.fusion == "mean":
            touched = [ids[n] for n in names]
            sums: dict[int, np.ndarray] = {}
            for ident, v in conn.execute("SELECT identity, embedding FROM partialface_templates WHERE identity = "
                                         "ANY(%s)", (touched,)):
                sums[ident] = sums.get(ident, 0) + _array(v).astype(np.float64)
            with conn.cursor() as cur:
                cur.executemany("UPDATE partialface_identities SET centroid = %s WHERE id = %s",
                                [((s / np.linalg.norm(s)).astype(np.float32), i) for i, s in sums.items()])
        return added, len(new)

    def remove(self, name: str) -> int:
        n = 0
        with self._write_tx() as conn:
            row = conn.execute("SELECT id FROM partialface_identities WHERE name = %s", (name,)).fetchone()
            if row is not None:
                n = conn.execute("DELETE FROM partialface_templates WHERE identity = %s", (row[0],)).rowcount
                conn.execute("DELETE FROM partialface_identities WHERE id = %s", (row[0],))
                conn.execute("UPDATE partialface_stats SET identities = identities - 1, templates = templates - %s",
                             (n,))
        return int(n)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # ------------------------------------------------------------------------------------------- search
    def search(self, q: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
        with self._db() as conn, conn.transaction():
            if self.index_kind == "hnsw":
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)",
                             (str(min(1000, max(self.ef_search, top_k))),))
            else:  # exact: a sequential scan, even where another user of the gallery made an HNSW index
                conn.execute("SET LOCAL enable_indexscan = off")
            return [self._one(conn, np.asarray(v, np.float32), top_k) for v in q]

    def _one(self, conn: Any, v: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        if self.fusion == "mean":
            rows = conn.execute("SELECT name, -(centroid <#> %(q)s) FROM partialface_identities WHERE centroid IS NOT "
                                "NULL ORDER BY centroid <#> %(q)s LIMIT %(n)s", {"q": v, "n": top_k}).fetchall()
            return [(r[0], float(r[1])) for r in rows]
        depth = max(8 * top_k, 32)
        while True:  # the best template of each identity: the first time it appears among the best templates
            rows = conn.execute(
                "SELECT i.name, -s.d FROM (SELECT identity, embedding <#> %(q)s AS d FROM partialface_templates "
                "ORDER BY embedding <#> %(q)s LIMIT %(n)s) s JOIN partialface_identities i ON i.id = s.identity "
                "ORDER BY s.d", {"q": v, "n": depth}).fetchall()
            best: dict[str, float] = {}
            for name, score in rows:
                best.setdefault(name, float(score))
            if len(best) >= top_k or len(rows) < depth:
                return list(best.items())[:top_k]
            depth *= 4


def _array(v: Any) -> np.ndarray:
    """A vector read back (pgvector's ``Vector`` or a numpy array) as float32 numpy."""
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, np.float32)


def _ident(conn: Any, name: str | None) -> str:
    from psycopg import sql

    return sql.Identifier(name or "public").as_string(conn)
