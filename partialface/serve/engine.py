"""The service's work, off the event loop: one model per process, one detection thread, one embedding thread (the
micro-batcher) and one gallery thread (the gallery's SQLite or PostgreSQL connection lives there). A PostgreSQL
gallery that cannot be reached answers 503 (:class:`partialface.api.stores.GalleryUnavailable`) and the next
request reconnects; at start, the engine waits for it.

Faces are found one photo at a time on the detection thread (as ``partialface embed`` does offline; YuNet's
OpenCV network is not safe to call from two threads at once), embedded in batches across concurrent requests
(:class:`partialface.serve.batcher.MicroBatcher`) and turned into :class:`partialface.api.Face` objects here;
every decision is the facade's (:func:`partialface.api.facade.pair_threshold`) or the gallery's
(:meth:`partialface.api.Gallery.identify_embedded`, ``enroll_embeddings``, ``remove``).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from partialface import version
from partialface.api.facade import (
    Face,
    Verification,
    check_kind,
    compare,
    find_faces,
    load,
    make_faces,
    photo_detector,
)
from partialface.api.gallery import Gallery
from partialface.api.stores import GalleryUnavailable
from partialface.errors import PartialFaceError
from partialface.serve.batcher import MicroBatcher
from partialface.serve.config import ServeConfig
from partialface.serve.problems import Problem

T = TypeVar("T")
log = logging.getLogger("partialface.serve")
#: seconds between tries to open a gallery database that cannot be reached at start
RETRY_S = 2.0


class Engine:
    """Loads the gallery and its model (:meth:`start`, with a warm-up pass) and answers the routes' questions; every
    method blocks and is safe to call from many threads."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.ready = False
        self.error: str | None = None
        self._detect = ThreadPoolExecutor(1, thread_name_prefix="partialface-detect")
        self._store = ThreadPoolExecutor(1, thread_name_prefix="partialface-gallery")
        self._draw = threading.Lock()  # matplotlib's pyplot is not thread-safe
        self.gallery: Gallery | None = None
        self.batcher: MicroBatcher | None = None
        self.model: Any = None

    # ------------------------------------------------------------------------------------------- start-up
    def start(self) -> None:
        """Open (or create) the gallery, load its model, warm every stage up; then :attr:`ready`."""
        try:
            c = self.config
            while True:  # a gallery database that is down at start: /readyz says so (503) until it is back
                try:
                    self.gallery = self._store.submit(Gallery, c.gallery, c.model, device=c.device, infer=c.infer,
                                                      detector=c.detector).result()
                    break
                except GalleryUnavailable as e:
                    self.error = str(e)
                    log.warning("gallery unreachable, trying again in %g s: %s", RETRY_S, e)
                    time.sleep(RETRY_S)
            self.error = None
            self.model = load(self.store(lambda g: g.meta["model_spec"]), c.device, c.infer)
            self.batcher = MicroBatcher(self.model.embed, c.batch, c.batch_wait_ms / 1000)
            self._warm_up()
            self.ready = True
        except PartialFaceError as e:
            self.error = str(e)
            log.error("not ready: %s", e)
        except Exception as e:  # reported by /readyz as one line, never a traceback
            self.error = f"start-up failed ({type(e).__name__})"
            log.error("not ready: start-up failed: %s: %s", type(e).__name__, e)

    def _warm_up(self) -> None:
        """One pass through every stage (detection, embedding, visibility, the per-region account, the index, the
        explanation's drawing library), so the first request is as fast as the next."""
        rng = np.random.default_rng(0)
        photo = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        self._detect.submit(find_faces, photo, False, "warm-up", self.config.detector).result()
        face = np.full((1, 160, 160, 3), 128, np.uint8)
        assert self.batcher is not None
        f, attention = self.batcher.embed(np.concatenate([face, face]))
        self.model.visibility(face)
        self.model.regions(face, f[:1], None if attention is None else tuple(a[:1] for a in attention))
        self.store(lambda g: g.entries)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.gallery is not None:
            self._store.submit(self.gallery.close).result()
        self._detect.shutdown(wait=False)
        self._store.shutdown(wait=False)

    def store(self, fn: Callable[[Gallery], T]) -> T:
        """Run ``fn(gallery)`` on the gallery's thread."""
        assert self.gallery is not None
        gallery = self.gallery
        return self._store.submit(fn, gallery).result()

    # ------------------------------------------------------------------------------------------- faces
    def faces(self, photos: Sequence[tuple[np.ndarray, str, int | None]], *, regions: bool = False
              ) -> list[tuple[list[Face], int]]:
        """For each (photo, label, most faces or None): (its faces, best first, embedded; how many were found).
        Detection runs photo by photo on the detection thread; all the kept faces are embedded in one call of the
        micro-batcher (with other requests' faces); ``regions``: each face's per-region account too."""
        found = []
        for photo, label, most in photos:
            faces = self._detect.submit(find_faces, photo, False, label, self.config.detector).result()
            keep = min(len(faces), self.config.max_faces if most is None else most)
            found.append((faces[:keep], len(faces)))
        kept = [d for faces, _ in found for d in faces]
        if not kept:
            return [([], n) for _, n in found]
        stack = np.stack([d["aligned"] for d in kept])
        assert self.batcher is not None
        f, attention = self.batcher.embed(stack)
        made = make_faces(kept, f, attention, self.model.regions(stack, f, attention) if regions else None,
                          self.model.visibility(stack))
        out, i = [], 0
        for faces, n in found:
            out.append((made[i : i + len(faces)], n))
            i += len(faces)
        return out

    # ------------------------------------------------------------------------------------------- routes
    def verify(self, a: np.ndarray, b: np.ndarray, far: float, kind: str, explain: bool) -> dict[str, Any]:
        """POST /v1/verify: :func:`partialface.verify`'s answer (its ``--json`` fields) for the best face of each
        photo; ``explain``: the per-region account and the ``--explain`` picture (PNG, base64) too."""
        m = self.model
        check_kind(m, far, kind)
        notes: list[str] = []
        pair = []
        for (faces, n), name in zip(self.faces([(a, "a", 1), (b, "b", 1)], regions=explain), ("a", "b"),
                                    strict=True):
            if not faces:
                raise Problem(422, f"{name}: no face found (send another photo of a face)", "no-face")
            if n > 1:
                notes.append(f"{name}: {n} faces; compared the best (the largest, most central)")
            pair.append(faces[0])
        res = compare(m, pair[0], pair[1], far, kind, notes, explain)
        out = res.as_dict()
        if explain:
            out["explain_png"] = self._explain(res)
        return out

    def _explain(self, res: Verification) -> str:
        """The ``--explain`` picture of ``res`` as base64 PNG (drawn into a temporary file, then read back)."""
        import tempfile

        from partialface.api.explain import explain

        with self._draw, tempfile.TemporaryDirectory(prefix="partialface-explain-") as tmp:
            path = explain(res, Path(tmp) / "explain.png", self.model.spec)
            return base64.b64encode(path.read_bytes()).decode("ascii")

    def embed(self, photo: np.ndarray, regions: bool, embeddings: bool) -> dict[str, Any]:
        """POST /v1/embed: every face (at most ``max_faces``), best first: box, detector score, landmarks,
        per-region account, visibility, detail; the embedding only when asked."""
        (faces, n), = self.faces([(photo, "image", None)], regions=regions)
        notes = [f"image: {n} faces; answered the best {len(faces)} (--max-faces)"] if n > len(faces) else []
        rows = []
        for f in faces:
            row: dict[str, Any] = {"box": f.box, "score": f.score, "regions": f.regions, "visibility": f.visibility,
                                   "detail": f.detail,
                                   "landmarks": None if f.landmarks is None else f.landmarks.tolist()}
            if embeddings:
                row["embedding"] = [float(v) for v in f.embedding]
            rows.append(row)
        return {"model": self.model.name, "faces": rows, "found": n, "notes": notes}

    def identify(self, photo: np.ndarray, top_k: int, far: float | None, fpir: float | None, kind: str,
                 all_faces: bool) -> dict[str, Any]:
        """POST /v1/identify: per face (the best, or every face with ``all_faces``), the gallery's open-set answer:
        name or None, score, threshold and why, candidates."""
        def check(g: Gallery) -> None:
            g.check_rule(far, fpir, kind)
            if g.entries == 0:  # before any detection
                raise PartialFaceError(f"{g.label}: nobody is enrolled yet")

        self.store(check)
        (faces, n), = self.faces([(photo, "image", None if all_faces else 1)])
        if not faces:
            raise Problem(422, "image: no face found (send another photo of a face)", "no-face")
        found = self.store(lambda g: (g.identify_embedded(faces, top_k, far, fpir=fpir, kind=kind), len(g)))
        notes = []
        if n > len(faces):
            notes.append(f"image: {n} faces; identified the best" + (" (all_faces=true for every face)" if not
                                                                     all_faces else f" {len(faces)} (--max-faces)"))
        return {"faces": [r.as_dict() for r in found[0]], "found": n, "gallery_size": found[1], "notes": notes}

    def enroll(self, name: str, photos: Sequence[tuple[np.ndarray, str]], deadline: float) -> dict[str, Any]:
        """POST /v1/subjects/{name}/faces: the best face of every photo added to ``name`` in ONE transaction;
        nothing is written unless every photo holds a face, nor once ``deadline`` (monotonic) has passed."""
        embedded = self.faces([(photo, label, 1) for photo, label in photos])
        for (faces, _), (_, label) in zip(embedded, photos, strict=True):
            if not faces:
                raise Problem(422, f"{label}: no face found; nothing was enrolled (send another photo)", "no-face")
        vectors = np.stack([faces[0].embedding for faces, _ in embedded])

        def write(g: Gallery) -> dict[str, Any]:
            if time.monotonic() > deadline:
                raise Problem(503, "the request ran past its time limit; nothing was enrolled (try again)",
                              "timeout", {"Retry-After": "5"})
            added = g.enroll_embeddings(name, vectors, [label for _, label in photos])
            return {"name": name, "added": added, "templates": len(g.templates(name)), "gallery_size": len(g)}

        return self.store(write)

    def remove(self, name: str) -> dict[str, Any]:
        """DELETE /v1/subjects/{name}: the person and their templates (overwritten in the file)."""
        def drop(g: Gallery) -> dict[str, Any]:
            if name not in g:
                raise Problem(404, "name: nobody of that name is enrolled (GET /v1/subjects lists them)",
                              "unknown-subject")
            return {"name": name, "removed": g.remove(name), "gallery_size": len(g)}

        return self.store(drop)

    def subjects(self) -> dict[str, Any]:
        counts = self.store(lambda g: g.counts())
        return {"subjects": [{"name": n, "templates": c} for n, c in counts.items()], "count": len(counts)}

    def subject(self, name: str) -> dict[str, Any]:
        def one(g: Gallery) -> dict[str, Any]:
            if name not in g:
                raise Problem(404, "name: nobody of that name is enrolled (GET /v1/subjects lists them)",
                              "unknown-subject")
            return {"name": name, "templates": len(g.templates(name))}

        return self.store(one)

    def info(self) -> dict[str, Any]:
        from partialface.evaluation.openset import DEFAULT_FPIR

        m, c = self.model, self.config
        size, entries, meta = self.store(lambda g: (len(g), g.entries, g.meta))
        points = m.points
        return {"version": version(), "model": m.name, "embedding_size": int(m.embedder.embedding_dim),
                "operating_points": None if points is None else {"threshold": points.threshold, "tar": points.tar},
                "gallery": {"size": size, "entries": entries, "fusion": meta["fusion"]},
                "defaults": {"verify_far": 1e-3, "identify_fpir": DEFAULT_FPIR, "kind": "auto"},
                "detector": photo_detector(c.detector),
                "limits": {"max_body_mb": c.max_body_mb, "max_pixels": c.max_pixels, "max_faces": c.max_faces,
                           "timeout_s": c.timeout_s},
                "batching": {"max_batch": c.batch, "wait_ms": c.batch_wait_ms, **(self.batcher.stats
                                                                                  if self.batcher else {})}}
