"""``partialface.Gallery``: enrolled identities and open-set 1:N identification (issue #14).

    gallery = partialface.Gallery("people.db")               # created on first use; Gallery() = in memory
    gallery.enroll("Ada", ["ada1.jpg", "ada2.jpg"])
    result = gallery.identify("someone.jpg")                  # result.name is None for an unknown face

Stores (:mod:`partialface.api.stores`, issue #41), behind the same API: a path is one SQLite file (the standard
library's; no server) searched by a FAISS index built in the process; a ``postgresql://`` URL is a PostgreSQL
database with pgvector (the extra ``partialface[postgres]``), searched in the database and shared by several
processes and machines. Either holds the identities, their templates (one embedding per enrolled image) and the
gallery's metadata: format version, model (name, spec, weights digest), embedding size, fusion rule. Every change
is one transaction, so a killed ``enroll`` leaves the gallery as it was. Search is exact by default
(``index="flat"``: FAISS's flat index, or pgvector's inner product over every row); ``"hnsw"`` is approximate, for
large galleries (``ef_search``: its breadth).

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

Several processes may share one gallery: a search sees every enrolment committed before it (SQLite: the index is
rebuilt when ``data_version`` moved; PostgreSQL: every query reads the committed rows). ``remove`` deletes a person
and their templates in one transaction (SQLite overwrites their bytes, ``PRAGMA secure_delete``; PostgreSQL frees
them at its next VACUUM: docs/galleries.md). ``partialface gallery copy SRC DST`` (:func:`copy_gallery`) moves a
gallery between stores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from partialface.api.facade import Face, Image, check_kind, embed, load, pair_threshold, photo_detector
from partialface.api.stores import (
    EF_SEARCH,
    FORMAT,
    FUSIONS,
    INDEXES,
    GalleryUnavailable,
    Item,
    Store,
    create_store,
    describe,
    is_url,
    new_meta,
    open_store,
)
from partialface.api.stores.sqlite import SMALL_SEARCH, SQLiteStore
from partialface.errors import PartialFaceError
from partialface.evaluation.openset import DEFAULT_FPIR, per_comparison_far, threshold_between


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


class Gallery:
    """Identities and their templates, searchable by face. ``path``: a gallery file (SQLite), a ``postgresql://``
    URL (PostgreSQL with pgvector), or None: in memory (``save`` writes it out); a missing gallery is created (whole
    or not at all) on the spot. ``model`` None: the gallery's own model for an existing gallery, the default model
    for a new one; another model than the gallery's is refused. ``fusion`` (new galleries only): ``max`` or ``mean``
    (module docstring); ``index``: ``flat`` (exact) or ``hnsw`` (``ef_search``: its breadth); ``infer``: the
    inference path of the faces it embeds (:func:`partialface.api.load`)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, model: str | None = None, *,
                 fusion: str | None = None, index: str = "flat", device: str = "cpu", infer: str = "auto",
                 detector: str = "auto", ef_search: int = EF_SEARCH) -> None:
        if index not in INDEXES:
            raise PartialFaceError(f"--index {index}: choose one of {', '.join(INDEXES)}")
        if fusion is not None and fusion not in FUSIONS:
            raise PartialFaceError(f"--fusion {fusion}: choose one of {', '.join(FUSIONS)}")
        if ef_search < 1:
            raise PartialFaceError(f"--ef-search {ef_search}: must be >= 1")
        #: the gallery file (None for a URL or in memory); :attr:`label` names any gallery in messages
        self.path = None if path is None or is_url(path) else Path(path)
        self.location = None if path is None else str(path) if is_url(path) else Path(path)
        self.label = describe(path)
        self.index_kind, self.device, self.infer, self.detector = index, device, infer, photo_detector(detector)
        store = open_store(self.location, index=index, ef_search=ef_search)
        if store is None:
            self._model = load(model, device, infer)
            store = create_store(self.location, new_meta(self._model, fusion or "max"), index=index,
                                 ef_search=ef_search)
        try:
            meta = store.meta()
            if fusion is not None and fusion != meta["fusion"]:
                raise PartialFaceError(f"--fusion {fusion}: {self.label} was made with fusion {meta['fusion']} "
                                       "(fixed when a gallery is made)")
            self._model = load(model or meta["model_spec"], device, infer)
            same = self._model.same_weights(meta["weights"])
            if not same and self._model.name == meta["model"]:
                raise PartialFaceError(
                    f"{self.label}: made with another file of model {meta['model']} (weights digest "
                    f"{meta['weights'][:12]}, this one's {self._model.weights[:12]}: retrained since); "
                    "enrol the people again into a new gallery")
            if not same:
                raise PartialFaceError(
                    f"{self.label}: a gallery of model {meta['model']}, not of {self._model.name} (their embeddings "
                    f"do not compare); use --model {meta['model_spec']}, or enrol into a new gallery")
        except BaseException:
            store.close()
            raise
        self._store: Store = store
        self.fusion = meta["fusion"]

    @property
    def store(self) -> Store:
        """Where the gallery lives (:mod:`partialface.api.stores`)."""
        return self._store

    @property
    def meta(self) -> dict[str, str]:
        """The gallery's metadata (kind, format, model, model_spec, weights, dim, fusion)."""
        return self._store.meta()

    @property
    def model(self) -> str:
        return self._model.name

    @property
    def names(self) -> list[str]:
        """The enrolled identities, in enrolment order."""
        return self._store.names()

    def __len__(self) -> int:
        return self._store.count()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._store.contains(name)

    def counts(self) -> dict[str, int]:
        """{name: its number of templates}, in enrolment order."""
        return self._store.counts()

    def templates(self, name: str) -> np.ndarray:
        """(T, D) float32: the embeddings enrolled for ``name``."""
        return self._store.templates(name)

    @property
    def dim(self) -> int:
        return self._store.dim

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
        rows: list[Item] = []
        for name, embeddings, sources in items:
            e = np.asarray(embeddings, dtype=np.float32)
            if e.ndim != 2 or e.shape[1] != self.dim:
                raise PartialFaceError(f"enroll {name}: embeddings must be (T, {self.dim}), got {e.shape}")
            norms = np.linalg.norm(e, axis=1, keepdims=True)
            if not np.all(np.isfinite(e)) or np.any(norms == 0):
                raise PartialFaceError(f"enroll {name}: embeddings must be finite and non-zero")
            if not isinstance(name, str) or not name.strip() or "\x00" in name:
                raise PartialFaceError(f"enroll {name!r}: a name must be non-empty text without NUL characters")
            src = list(sources) if sources is not None else [""] * len(e)
            if len(src) != len(e) or any("\x00" in s for s in src):
                raise PartialFaceError(f"enroll {name}: give one source label (no NUL characters) per embedding")
            rows.append((name, e / norms, src))
        return self._store.add(rows)

    def remove(self, name: str) -> int:
        """Remove ``name`` and its templates; the number of templates removed (0 if not enrolled)."""
        return self._store.remove(name)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the gallery to the file ``path`` (atomically: a temp file, then rename)."""
        if isinstance(self._store, SQLiteStore):
            self._store.backup(Path(path))
        else:
            copy_gallery(self._store, Path(path))

    @classmethod
    def open(cls, path: str | os.PathLike[str], model: str | None = None, *, index: str = "flat",
             device: str = "cpu", infer: str = "auto", detector: str = "auto", ef_search: int = EF_SEARCH
             ) -> Gallery:
        """An existing gallery (PartialFaceError when there is none at ``path``)."""
        if not is_url(path) and not Path(path).exists():
            raise PartialFaceError(f"{path}: no such gallery (enrol someone first: partialface enroll {path} NAME "
                                   "IMAGES...)")
        if is_url(path):
            store = open_store(path, index=index, ef_search=ef_search)
            if store is None:
                raise PartialFaceError(f"{describe(path)}: no gallery in this database yet (enrol someone first: "
                                       "partialface enroll URL NAME IMAGES...)")
            store.close()
        return cls(path, model, index=index, device=device, infer=infer, detector=detector, ef_search=ef_search)

    def close(self) -> None:
        self._store.close()

    # ------------------------------------------------------------------------------------------- search
    @property
    def entries(self) -> int:
        """How many gallery entries a probe is compared with: the templates (``max`` fusion) or the identities
        (``mean``), as the gallery is now."""
        return self._store.entries()

    def search(self, embeddings: np.ndarray, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Ranked (name, score) candidates (at most ``top_k`` identities) for each probe embedding (Q, D),
        scored by the gallery's fusion rule."""
        if top_k < 1:
            raise PartialFaceError(f"--top-k {top_k}: must be >= 1")
        q = np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)
        q = np.ascontiguousarray(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12))
        return self._store.search(q, top_k)

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
            raise PartialFaceError(f"{self.label}: nobody is enrolled yet (partialface enroll first)")
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
            raise PartialFaceError(f"{self.label}: nobody is enrolled yet (partialface enroll first)")
        name, score = candidates[0]
        notes = list(notes or [])
        size = len(self)
        if fpir is None and size * far > 0.05:  # with a fixed far, unknown faces pass more often as the gallery grows
            notes.append(f"{size} identities at FAR {far:g} per comparison: an unknown face may be taken for someone "
                         f"in up to {min(1.0, size * far):.0%} of cases; the default --fpir follows the gallery's "
                         "size")
        return Identification(name if score >= threshold else None, score, threshold, far, kind, candidates, face,
                              notes, fpir)


def copy_gallery(src: str | os.PathLike[str] | Store, dst: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy the gallery ``src`` (a path, URL or open store) to ``dst`` (a new gallery, or an empty one of the same
    model and fusion): identities, templates and sources in enrolment order, in ONE transaction of ``dst``; then the
    counts are compared. {"identities", "templates", "model", "fusion"}. No model is loaded."""
    source = src if isinstance(src, Store) else open_store(src)
    if source is None:
        raise PartialFaceError(f"{describe(src)}: no such gallery")  # type: ignore[arg-type]
    try:
        meta = source.meta()
        if describe(dst) == source.label:
            raise PartialFaceError(f"{source.label}: source and destination are the same gallery")
        target = open_store(dst)
        made = target is None
        if target is None:
            target = create_store(dst, meta)
        try:
            _check_target(source.label, meta, target)
            want = source.counts()
            target.add(_streamed(source.items(), meta))
            got = target.counts()
            if got != want or target.meta()["weights"] != meta["weights"]:
                raise PartialFaceError(f"{target.label}: the copy does not match {source.label} ({sum(got.values())} "
                                       f"templates of {len(got)} identities, not {sum(want.values())} of {len(want)})")
            return {"identities": len(got), "templates": sum(got.values()), "model": meta["model"],
                    "fusion": meta["fusion"]}
        except BaseException:
            if made and isinstance(target, SQLiteStore) and target.path is not None:
                target.close()
                target.path.unlink(missing_ok=True)  # a failed copy leaves no new file behind
            raise
        finally:
            target.close()
    finally:
        if not isinstance(src, Store):
            source.close()


def _check_target(label: str, meta: dict[str, str], target: Store) -> None:
    have = target.meta()
    if have["weights"] != meta["weights"] or have["dim"] != meta["dim"]:
        raise PartialFaceError(f"{target.label}: a gallery of model {have['model']}, {label} is of {meta['model']} "
                               "(their embeddings do not compare); copy into a new gallery")
    if have["fusion"] != meta["fusion"]:
        raise PartialFaceError(f"{target.label}: made with fusion {have['fusion']}, {label} with {meta['fusion']}; "
                               "copy into a new gallery")
    if target.count():
        raise PartialFaceError(f"{target.label}: not empty ({target.count()} identities); copy into a new gallery")


def _streamed(items: Iterator[Item], meta: dict[str, str]) -> Iterator[Item]:
    dim = int(meta["dim"])
    for name, e, src in items:
        if e.ndim != 2 or e.shape[1] != dim:
            raise PartialFaceError(f"{name}: templates of size {e.shape[-1]}, the gallery's are {dim}")
        yield name, e, src


__all__ = ["FORMAT", "FUSIONS", "INDEXES", "SMALL_SEARCH", "Gallery", "GalleryUnavailable", "Identification",
           "copy_gallery"]
