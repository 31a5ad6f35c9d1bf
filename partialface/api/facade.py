"""``partialface.embed`` and ``partialface.verify``: faces found in ordinary photos, embedded, compared at a
threshold that means something (a false-accept rate measured on held-out identities, issue #14).

    import partialface
    result = partialface.verify("a.jpg", "b.jpg")            # the default model, FAR 1e-3
    result.same, result.score, result.threshold, result.far
    faces = partialface.embed("group.jpg")                    # every face, best first

An image is a path, a numpy array (H, W, 3) RGB uint8 (or (H, W) grey, (H, W, 4) RGBA) or a PIL image.
Faces are found by MTCNN and aligned to the benchmark's 160x160 template; ``aligned=True`` takes an already
aligned 160x160 face as it is. Several faces: ``embed`` returns them all, best first (the spec's rule);
``verify`` compares the best face of each image and says so in ``notes``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from partialface.errors import PartialFaceError
from partialface.geometry.template import IMAGE_SIZE

Image = Any  # str | os.PathLike | np.ndarray | PIL.Image.Image


@dataclass
class Face:
    """One face: ``box`` (x1, y1, x2, y2) and ``score`` of the detector (None for an aligned input),
    ``landmarks`` (5, 2) in the photo, ``aligned`` (160, 160, 3) uint8, ``embedding`` (D,) float32, L2-normalised;
    attention models also give ``importance`` (K,) (the paper's s) and ``maps`` (K, h, w) (Ã); ``regions``:
    the share of the embedding each region of :data:`partialface.geometry.regions.REGIONS` accounts for
    (sums to 1; see :meth:`_Model.regions`), None where it was not asked for; ``visibility``: how much of each
    region is visible, in [0, 1] (:mod:`partialface.models.visibility`), None where it was not asked for;
    ``detail``: how sharp the aligned face is (:func:`partialface.evaluation.calibrate_auto.face_detail`; kind
    "auto" takes the soft or the sharp operating points by it), measured with the visibility."""

    aligned: np.ndarray
    embedding: np.ndarray
    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    landmarks: np.ndarray | None = None
    importance: np.ndarray | None = None
    maps: np.ndarray | None = None
    regions: dict[str, float] | None = None
    visibility: dict[str, float] | None = None
    detail: float | None = None


@dataclass
class Verification:
    """``same``: score >= threshold; ``score``: cosine of the two embeddings; ``threshold``: the model's operating
    point at ``far`` for pairs of ``kind`` ("holistic", "partial", or with ``kind="auto"`` the visibility level
    it chose, e.g. "auto/visible>=0.90"); ``faces``: the two compared faces; ``regions``: what the decision rested
    on, per region (sums to 1; :meth:`_Model.pair_regions`); ``shared_visibility``: what both faces show (kind
    "auto")."""

    same: bool
    score: float
    threshold: float
    far: float
    kind: str
    model: str
    faces: tuple[Face, Face]
    notes: list[str] = field(default_factory=list)
    regions: dict[str, float] | None = None
    shared_visibility: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The documented JSON fields (no arrays)."""
        return {"same": self.same, "score": self.score, "threshold": self.threshold, "far": self.far,
                "kind": self.kind, "model": self.model, "notes": list(self.notes), "regions": self.regions,
                "shared_visibility": self.shared_visibility,
                "faces": [{"box": f.box, "score": f.score, "regions": f.regions, "visibility": f.visibility,
                           "detail": f.detail}
                          for f in self.faces]}


def to_rgb(image: Image, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB of a path, numpy array or PIL image; PartialFaceError naming ``what`` otherwise."""
    from partialface.data.images import read_image

    if isinstance(image, (str, os.PathLike)):
        return read_image(Path(image))
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise PartialFaceError(f"{what}: a numpy image must be uint8 (got {image.dtype}); convert it first")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] in (3, 4):
            return np.ascontiguousarray(image[:, :, :3])
        raise PartialFaceError(f"{what}: a numpy image must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    raise PartialFaceError(f"{what}: give a path, a numpy array or a PIL image (got {type(image).__name__})")


class _Model:
    """A loaded model for the facade: its embedder, its attention module (if any) and operating points."""

    def __init__(self, spec: str, device: str, infer: str = "auto") -> None:
        from partialface.devices import resolve_device
        from partialface.evaluation.calibrate import read_operating_points
        from partialface.evaluation.embed import load_embedder
        from partialface.training.checkpoint import load_weights

        if infer == "int8":  # its activation ranges come from the benchmark's faces (calibrate); photos have none
            from partialface.inference.runners import CHOICES

            raise PartialFaceError("--infer int8: the benchmark's path (calibrated on its faces); for photos choose "
                                   f"one of {', '.join(c for c in CHOICES if c != 'int8')}")
        self.spec = spec
        self.embedder = load_embedder(spec, resolve_device(device), infer=infer)
        self.name = self.embedder.name
        source = Path(self.embedder.source)
        self.points = read_operating_points(load_weights(source)[1]) if source.suffix == ".safetensors" else None
        self._visibility: Any = None
        #: a holistic model's embeddings of faces with each region greyed out, (R, D) by face (a pair's account reuses
        #: its faces': :meth:`_greyed_embeddings`); in memory only, the last few faces
        self._greyed_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._greyed_lock = threading.Lock()

    def visibility(self, aligned: np.ndarray) -> np.ndarray | None:
        """(N, R) visibility estimates of aligned faces (N, 160, 160, 3) by the shipped visibility network, or None
        where its file is not here."""
        from partialface.models.catalogue import visibility_file
        from partialface.models.visibility import load_visibility, predict_visibility

        if self._visibility is None:
            path = visibility_file()
            if path is None:
                return None
            self._visibility = load_visibility(path, self.embedder.device)
        return predict_visibility(self._visibility, aligned)

    @property
    def weights(self) -> str:
        """What identifies the embedding space: the weights' digest (the fingerprint before any inference path; for
        a .safetensors file its tensors and settings, not its operating points)."""
        return self.embedder.weights_id or self.embedder.source

    def same_weights(self, recorded: str) -> bool:
        """Whether a gallery's recorded digest names this model's embeddings: :attr:`weights`, or the whole-file
        digest that galleries recorded before 2026-12-07 (night) where the file is still the same."""
        if recorded == self.weights:
            return True
        source = Path(self.embedder.source)
        if self.weights.startswith("st-") and source.is_file():
            from partialface.evaluation.embedders import file_digest

            return recorded == file_digest(source)
        return False

    def embed(self, aligned: np.ndarray) -> tuple[np.ndarray, Any]:
        """(N, 160, 160, 3) uint8 -> (L2-normalised (N, D) float32, the attention outputs (s, Ã) or None)."""
        import torch

        from partialface.models.base import FaceModel

        x = torch.from_numpy(np.ascontiguousarray(aligned)).permute(0, 3, 1, 2).to(self.embedder.device)
        with torch.inference_mode():
            f = torch.nn.functional.normalize(self.embedder(x).float(), dim=1).cpu().numpy()
            attention = None
            module, prepare = self.embedder.module, getattr(self.embedder, "prepare", None)
            if isinstance(module, FaceModel) and module.has_attention and prepare is not None:
                out = module.eval()(prepare(x).to(next(module.parameters()).device))
                if out.s is not None and out.A_tilde is not None:
                    attention = (out.s.float().cpu().numpy(), out.A_tilde.float().cpu().numpy())
        return f, attention

    def regions(self, aligned: np.ndarray, f: np.ndarray, attention: Any) -> np.ndarray:
        """(N, R) shares over REGIONS of N faces (N, 160, 160, 3) uint8 with embeddings f (N, D).

        Attention models: sum_k s_k * (the mass of map Ã_k in the region / its whole mass), the maps laid on
        the aligned face through the model's framing. Other models, occlusion sensitivity: the drop
        1 - cos(f, f_r) of the embedding when region r is greyed out, clipped at 0, normalised to sum to 1."""
        from partialface.geometry.regions import cell_regions

        if attention is not None:
            s, maps = attention
            n, k, h, w = maps.shape
            cells = cell_regions(h, w, self.frame)
            mass = maps.reshape(n, k, h * w).astype(np.float64)
            per_map = mass @ cells / np.maximum(mass.sum(-1, keepdims=True), 1e-12)  # (N, K, R)
            shares = (s[:, :, None] * per_map).sum(1)
        else:
            shares = np.maximum(0.0, 1.0 - np.einsum("nrd,nd->nr", self._greyed_embeddings(aligned), f))
        return _normalised(shares)

    def pair_regions(self, a: Face, b: Face) -> np.ndarray:
        """(R,) what a pair's score rests on: attention models, the mean of the two faces' shares; other models,
        the drop of the pair's cosine when region r is greyed out in both faces (clipped at 0, normalised)."""
        from partialface.geometry.regions import REGIONS

        if a.importance is not None and a.regions is not None and b.regions is not None:
            return _normalised(np.array([[(a.regions[r] + b.regions[r]) / 2 for r in REGIONS]]))[0]
        fa, fb = self._greyed_embeddings(np.stack([a.aligned, b.aligned]))
        drop = float(a.embedding @ b.embedding) - (fa * fb).sum(1)
        return _normalised(np.maximum(0.0, drop)[None])[0]

    def _greyed_embeddings(self, aligned: np.ndarray, keep: int = 64) -> np.ndarray:
        """(N, R, D) embeddings of faces (N, 160, 160, 3) with each region greyed out in turn; the last ``keep``
        faces' are kept, so a pair's account costs no embedding beyond its faces' own accounts."""
        from partialface.geometry.regions import REGIONS, grey_out

        keys = [hashlib.blake2b(x.tobytes(), digest_size=16).digest() for x in aligned]
        with self._greyed_lock:
            have = [self._greyed_cache.get(k) for k in keys]
        miss = [i for i, h in enumerate(have) if h is None]
        if miss:
            greyed = np.stack([grey_out(aligned[miss], r) for r in range(len(REGIONS))], axis=1)  # (M, R, 160, 160, 3)
            fr, _ = self.embed(greyed.reshape(-1, *aligned.shape[1:]))
            fr = fr.reshape(len(miss), len(REGIONS), -1)
            with self._greyed_lock:
                for j, i in enumerate(miss):
                    have[i] = self._greyed_cache[keys[i]] = fr[j]
                while len(self._greyed_cache) > keep:
                    self._greyed_cache.popitem(last=False)
        return np.stack(have)  # type: ignore[arg-type]

    @property
    def frame(self) -> np.ndarray:
        """(2, 3): where the model's input (and so its maps) lies on the aligned face,
        :func:`partialface.models.framing.input_frame` of the model's framing."""
        from partialface.models.base import FaceModel
        from partialface.models.framing import framing_of, input_frame

        module = self.embedder.module
        if isinstance(module, FaceModel):
            return input_frame(framing_of(module.config), module.config.input_size)
        return input_frame("resize", 160)


def _normalised(shares: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (a row of zeros becomes uniform)."""
    total = shares.sum(-1, keepdims=True)
    return np.where(total > 0, shares / np.where(total > 0, total, 1.0), 1.0 / shares.shape[-1])


def load(model: str | None = None, device: str = "cpu", infer: str = "auto") -> _Model:
    """The facade's model (cached): a shipped model's name, a run folder, .safetensors or .onnx file;
    None = :data:`partialface.models.catalogue.DEFAULT_MODEL`. ``infer``: the inference path
    (``partialface.inference.runners``): ``auto``, the fastest exact one here, or one forced by name (e.g.
    ``compile-bf16`` for long jobs on a CPU with AMX); the embedding space is the same on every path."""
    from partialface.models.catalogue import DEFAULT_MODEL

    spec = model or DEFAULT_MODEL
    path = Path(spec)
    stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None  # a rewritten file reloads
    return _load(spec, device, infer, stamp)


@lru_cache(maxsize=4)
def _load(model: str, device: str, infer: str, stamp: tuple[int, int] | None) -> _Model:
    """:func:`load`'s cache, keyed on the resolved arguments however they were passed (and a model file's
    modification time and size)."""
    return _Model(model, device, infer)


def photo_detector(detector: str = "auto") -> str:
    """The detector the photo functions use: ``auto`` (the default) is :data:`partialface.detect.policy.OCCLUDED`
    (MTCNN, and YuNet for the faces it misses: masked faces, issue #39) where YuNet's file is here, else MTCNN;
    any other name is checked (:data:`partialface.detect.policy.DETECTORS`)."""
    from partialface.detect.policy import OCCLUDED, check_detector
    from partialface.detect.yunet import installed_yunet_file

    if detector == "auto":
        return OCCLUDED if installed_yunet_file() is not None else "mtcnn"
    return check_detector(detector)


def find_faces(image: Image, aligned: bool = False, what: str = "image", detector: str = "auto",
               detect_side: int | None = None) -> list[dict[str, Any]]:
    """The faces of a photo, best first: dicts of box, score, landmarks (5, 2) and aligned (160, 160, 3);
    ``detector``: :func:`photo_detector`; ``detect_side``: faces are searched for on a copy at most this many pixels
    on its longer side (default :data:`partialface.detect.policy.DETECT_SIDE`; 0: full resolution, for small faces
    in large photos), then cut from the full-resolution photo (:func:`partialface.geometry.align.align_photo`)."""
    from partialface.detect import selection_scores
    from partialface.detect.policy import DETECT_SIDE, detect_photo
    from partialface.geometry.align import align_photo

    rgb = to_rgb(image, what)
    if aligned:
        if rgb.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise PartialFaceError(f"{what}: aligned=True needs a 160x160 face, got {rgb.shape[1]}x{rgb.shape[0]}")
        return [{"aligned": rgb, "box": None, "score": None, "landmarks": None}]
    faces = detect_photo(rgb, detector=photo_detector(detector), device="cpu",
                         detect_side=DETECT_SIDE if detect_side is None else detect_side)
    crit = selection_scores(np.array([f.box for f in faces]), rgb.shape) if faces else np.zeros(0)
    order = np.argsort(-crit, kind="stable")  # the spec's rule; ties keep the detector's order
    out = []
    for i in order:
        pts = np.asarray(faces[i].landmarks, dtype=np.float64).reshape(5, 2)
        out.append({"aligned": align_photo(rgb, pts), "box": tuple(float(v) for v in faces[i].box),
                    "score": float(faces[i].score), "landmarks": pts})
    return out


def embed(image: Image, model: str | None = None, *, aligned: bool = False, regions: bool = True,
          visibility: bool = True, device: str = "cpu", infer: str = "auto", detector: str = "auto",
          detect_side: int | None = None) -> list[Face]:
    """Every face of ``image``, best first, embedded by ``model`` (see :func:`load`); [] when none is found.
    ``regions``: give each face its per-region account (for models without attention: 5 more embeddings);
    ``visibility``: how much of each region it shows (the shipped visibility network); ``detector``:
    :func:`photo_detector`; ``detect_side``: :func:`find_faces`'."""

    m = load(model, device, infer)  # a bad model or path fails before any detection
    photo_detector(detector)
    found = find_faces(image, aligned, detector=detector, detect_side=detect_side)
    if not found:
        return []
    stack = np.stack([d["aligned"] for d in found])
    f, attention = m.embed(stack)
    shares = m.regions(stack, f, attention) if regions else None
    return make_faces(found, f, attention, shares, m.visibility(stack) if visibility else None)


def make_faces(found: list[dict[str, Any]], f: np.ndarray, attention: Any, shares: np.ndarray | None,
               seen: np.ndarray | None) -> list[Face]:
    """:class:`Face` objects of :func:`find_faces`' faces ``found`` (N) from their embeddings f: (N, D), the
    attention model's (importance (N, K), maps (N, K, H, W)) or None, the per-region account (N, R) or None and
    the visibility estimates (N, R) or None (then no detail either)."""
    from partialface.evaluation.calibrate_auto import face_detail
    from partialface.geometry.regions import REGIONS

    detail = face_detail(np.stack([d["aligned"] for d in found])) if seen is not None and found else None
    faces = []
    for i, d in enumerate(found):
        s, maps = (attention[0][i], attention[1][i]) if attention is not None else (None, None)
        account = dict(zip(REGIONS, map(float, shares[i]), strict=True)) if shares is not None else None
        vis = dict(zip(REGIONS, map(float, seen[i]), strict=True)) if seen is not None else None
        faces.append(Face(embedding=f[i], importance=s, maps=maps, regions=account, visibility=vis,
                          detail=None if detail is None else float(detail[i]), **d))
    return faces


def pair_threshold(m: _Model, far: float, kind: str, a: Face, b: Face | None) -> tuple[float, str, float | None]:
    """(threshold, the kind it belongs to, shared visibility) for a pair (``b`` None: a gallery template, taken as
    whole and as sharp as ``a``). ``kind="auto"``: the operating point of what both faces show and of how sharp the
    softer one is (:func:`partialface.evaluation.calibrate_auto.auto_threshold`); else the model's ``kind``
    threshold."""
    from partialface.evaluation.calibrate_auto import auto_threshold, shared_visibility

    assert m.points is not None
    if kind != "auto":
        return m.points.at(far, kind), kind, None
    if a.visibility is None or (b is not None and b.visibility is None):
        return m.points.at(far, "holistic"), "holistic", None
    va = np.array(list(a.visibility.values()))
    vb = np.ones_like(va) if b is None or b.visibility is None else np.array(list(b.visibility.values()))
    share = float(shared_visibility(va, vb))
    detail = a.detail if b is None or a.detail is None or b.detail is None else min(a.detail, b.detail)
    threshold, used = auto_threshold(m.points, far, share, detail)
    return threshold, used, share


def check_kind(m: _Model, far: float, kind: str) -> None:
    """A bad ``far`` or ``kind`` fails here, before any detection; a model without operating points too."""
    if m.points is None:
        raise PartialFaceError(f"--model {m.name}: it has no operating points (thresholds); measure them with "
                               "`partialface calibrate MODEL --data HELD_OUT_FACES --out FILE`")
    if kind not in ("auto", "holistic", "partial"):
        raise PartialFaceError(f"--kind {kind}: choose auto (the default: the operating point follows what both "
                               "faces show), holistic or partial")
    m.points.at(far, "holistic" if kind == "auto" else kind)


def verify(image1: Image, image2: Image, model: str | None = None, *, far: float = 1e-3, kind: str = "auto",
           aligned: bool = False, regions: bool = True, device: str = "cpu", infer: str = "auto",
           detector: str = "auto", detect_side: int | None = None) -> Verification:
    """Same person? The best face of each image, compared at the model's threshold for ``far`` and ``kind``:
    "auto" (the default) takes the operating point of what both faces show (their visibility estimates), "holistic"
    the whole faces' and "partial" the partly hidden faces'; ``regions``: the per-region account of the faces and
    of the pair."""
    m = load(model, device, infer)
    check_kind(m, far, kind)  # a bad --far, kind or detector fails before any detection
    photo_detector(detector)
    pair, notes = [], []
    for image, what in ((image1, "first image"), (image2, "second image")):
        faces = embed(image, model, aligned=aligned, regions=False, device=device, infer=infer, detector=detector,
                      detect_side=detect_side)
        name = str(image) if isinstance(image, (str, os.PathLike)) else what
        if not faces:
            raise PartialFaceError(f"{name}: no face found (give another photo, or an aligned 160x160 face with "
                                   "--aligned)")
        if len(faces) > 1:
            notes.append(f"{name}: {len(faces)} faces; compared the best (the largest, most central)")
        best = faces[0]
        if regions:  # the account of the compared face only (a crowd's other faces are not compared)
            from partialface.geometry.regions import REGIONS

            att = None if best.importance is None or best.maps is None else (best.importance[None], best.maps[None])
            shares = m.regions(best.aligned[None], best.embedding[None], att)[0]
            best.regions = dict(zip(REGIONS, map(float, shares), strict=True))
        pair.append(best)
    return compare(m, pair[0], pair[1], far, kind, notes, regions)


def compare(m: _Model, a: Face, b: Face, far: float, kind: str, notes: list[str], regions: bool) -> Verification:
    """The verdict on two embedded faces: their cosine against the operating point of ``far`` and ``kind``
    (:func:`pair_threshold`; the point used added to ``notes``), with the pair's per-region account where
    ``regions``."""
    score = float(a.embedding @ b.embedding)
    threshold, used, share = pair_threshold(m, far, kind, a, b)
    if kind == "auto":
        notes.append(f"both faces show {share:.2f} of the face: the {used} operating point" if share is not None else
                     "no visibility estimate here (its file is missing): the holistic operating point")
    account = None
    if regions:
        from partialface.geometry.regions import REGIONS

        account = dict(zip(REGIONS, map(float, m.pair_regions(a, b)), strict=True))
    return Verification(score >= threshold, score, threshold, far, used, m.name, (a, b), notes, account, share)
