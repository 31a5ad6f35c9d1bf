"""The stores' shared parts: the :class:`Store` interface, the format version, the metadata checks and
:class:`GalleryUnavailable` (the package's docstring says what a store is)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from partialface.errors import PartialFaceError

#: the gallery's format version (the ``format`` row of its metadata), the same for every store
FORMAT = 1
FUSIONS = ("max", "mean")
INDEXES = ("flat", "hnsw")
#: HNSW's search breadth when none is given (FAISS's ``efSearch``, pgvector's ``hnsw.ef_search``)
EF_SEARCH = 128
#: an item to write: (name, L2-normalised embeddings (T, D) float32, a source label per template)
Item = tuple[str, np.ndarray, list[str]]


class GalleryUnavailable(PartialFaceError):
    """The gallery's database cannot be reached (down, restarting, connection lost): nothing was written by the
    call that raised it, unless its message says the outcome is unknown (the connection went while a write was
    committing and the server could not be asked); the next call reconnects. The service answers 503 for it."""


def is_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL gallery (``postgresql://`` or ``postgres://``)."""
    return isinstance(location, str) and location.split("://", 1)[0].lower() in ("postgresql", "postgres")


class Store(ABC):
    """The storage and search of one gallery (module docstring). ``label``: its location for messages (no
    password); ``fusion``, ``dim``: from its metadata."""

    label: str
    fusion: str
    dim: int

    @abstractmethod
    def meta(self) -> dict[str, str]:
        """The gallery's metadata (kind, format, model, model_spec, weights, dim, fusion)."""

    @abstractmethod
    def names(self) -> list[str]:
        """The enrolled identities, in enrolment order."""

    @abstractmethod
    def count(self) -> int:
        """The number of identities."""

    @abstractmethod
    def contains(self, name: str) -> bool: ...

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """{name: its number of templates}, in enrolment order."""

    @abstractmethod
    def templates(self, name: str) -> np.ndarray:
        """(T, D) float32: ``name``'s templates, in enrolment order."""

    @abstractmethod
    def add(self, items: Iterable[Item]) -> int:
        """Write the items in ONE transaction (all or none; an exception from ``items`` itself rolls back too); the
        number of templates added. A name already enrolled gets more templates."""

    @abstractmethod
    def remove(self, name: str) -> int:
        """Delete ``name`` and its templates in one transaction; the number of templates removed."""

    @abstractmethod
    def entries(self) -> int:
        """The gallery entries a probe is compared with: templates (``max``) or identities (``mean``)."""

    @abstractmethod
    def search(self, q: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
        """Ranked (name, score) for each L2-normalised probe of ``q`` (Q, D), at most ``top_k`` identities."""

    @abstractmethod
    def items(self) -> Iterator[Item]:
        """Every identity with its templates and sources, in enrolment order (streamed: for copying)."""

    @abstractmethod
    def close(self) -> None: ...


def new_meta(model: Any, fusion: str) -> dict[str, str]:
    """A new gallery's metadata for a loaded model (:func:`partialface.api.load`)."""
    return {"kind": "partialface-gallery", "format": str(FORMAT), "model": model.name, "model_spec": model.spec,
            "weights": model.weights, "dim": str(model.embedder.embedding_dim), "fusion": fusion}


def check_meta(label: str, rows: dict[str, str]) -> None:
    """A store's metadata read back: a partialface gallery of this format, or PartialFaceError."""
    if rows.get("kind") != "partialface-gallery":
        raise PartialFaceError(f"{label}: not a partialface gallery")
    if rows.get("format") != str(FORMAT):
        raise PartialFaceError(f"{label}: gallery format {rows.get('format')}, this partialface reads format "
                               f"{FORMAT}; re-enrol with this version")


