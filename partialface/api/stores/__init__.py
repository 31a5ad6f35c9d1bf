"""Where a :class:`partialface.Gallery` keeps its identities and templates (issue #41): one interface, two stores.

* :class:`~partialface.api.stores.sqlite.SQLiteStore` (a path, or None for memory): one SQLite file, searched by a
  FAISS index built in the process (``flat``: exact; ``hnsw``: approximate). The embedded default.
* :class:`~partialface.api.stores.postgres.PostgresStore` (a ``postgresql://`` URL; the extra
  ``partialface[postgres]``): PostgreSQL with the pgvector extension, searched in the database (exact inner
  product by default, an HNSW index as an option); several processes and machines share it.

A store holds L2-normalised float32 templates and the gallery's metadata (kind, format, model, model_spec,
weights, dim, fusion); it ranks identities by the fusion rule (``max``: the best template; ``mean``: the
normalised mean of the templates). Every write is one transaction. The facade's rules (model check, thresholds,
the open-set decision) live in :mod:`partialface.api.gallery`, the same for both.
"""

from __future__ import annotations

import os
from pathlib import Path

from partialface.api.stores.base import (
    EF_SEARCH,
    FORMAT,
    FUSIONS,
    INDEXES,
    GalleryUnavailable,
    Item,
    Store,
    check_meta,
    is_url,
    new_meta,
)

__all__ = ["EF_SEARCH", "FORMAT", "FUSIONS", "INDEXES", "GalleryUnavailable", "Item", "Store", "check_meta",
           "create_store", "describe", "is_url", "new_meta", "open_store"]


def describe(location: str | os.PathLike[str] | None) -> str:
    """A gallery's location for messages: the path, or the URL without its password."""
    if location is None:
        return "the gallery"
    if is_url(location):
        from partialface.api.stores.postgres import redact

        return redact(str(location))
    return str(location)


def open_store(location: str | os.PathLike[str] | None, *, index: str = "flat", ef_search: int = EF_SEARCH
               ) -> Store | None:
    """The existing gallery at ``location`` (None where there is none yet; in memory: always None)."""
    if location is None:
        return None
    if is_url(location):
        from partialface.api.stores.postgres import PostgresStore

        return PostgresStore.open(str(location), index=index, ef_search=ef_search)
    from partialface.api.stores.sqlite import SQLiteStore

    path = Path(location)
    return SQLiteStore.open(path, index=index, ef_search=ef_search) if path.exists() else None


def create_store(location: str | os.PathLike[str] | None, meta: dict[str, str], *, index: str = "flat",
                 ef_search: int = EF_SEARCH) -> Store:
    """A new, empty gallery at ``location`` (made whole or not at all; where another process made one first, that
    one, opened)."""
    if is_url(location):
        from partialface.api.stores.postgres import PostgresStore

        return PostgresStore.create(str(location), meta, index=index, ef_search=ef_search)
    from partialface.api.stores.sqlite import SQLiteStore

    return SQLiteStore.create(None if location is None else Path(location), meta, index=index, ef_search=ef_search)
