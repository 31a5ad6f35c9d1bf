"""Which detector finds the faces (issue #39): MTCNN (the benchmark's, spec §1), YuNet, or both.

``detect_faces(image, detector=...)`` -> list[Face], best face first (the published rule), [] when none:

==============  ===============================================================================================
detector        what runs
==============  ===============================================================================================
mtcnn           the spec's MTCNN, exactly :func:`partialface.detect.mtcnn.detect_faces` (the default: the
                benchmark's detector, bit for bit)
yunet           YuNet alone (:mod:`partialface.detect.yunet`, score >= ``yunet_threshold``)
mtcnn+yunet     MTCNN first; YuNet's faces that overlap no MTCNN face are added (the recommended option for
                occluded faces, :data:`OCCLUDED`): MTCNN's faces keep their boxes, scores and landmarks
yunet-ms        YuNet at several scales (``yunet_scales``, default :data:`partialface.detect.yunet.MS_SCALES`:
                the image as it is, enlarged 2x and 4x, capped at ``MAX_SIDE`` px), faces merged across scales;
                threshold ``yunet_threshold`` (default :data:`partialface.detect.yunet.MS_THRESHOLD`)
mtcnn+yunet-ms  MTCNN first, then yunet-ms's faces that overlap no MTCNN face: more small and masked faces found
                than mtcnn+yunet, but more false boxes and twice the time (``benchmarks/detect_masked.py``)
mtcnn+low       MTCNN, then a second MTCNN pass with lower stage thresholds (``LOW_THRESHOLDS``) whose faces
                that overlap no first-pass face are added
==============  ===============================================================================================

Two faces are the same when their boxes' intersection covers more than ``MERGE_OVERLAP`` of the smaller box
(a face masked below the nose may get a shorter box from one detector than from the other, so the plain IoU
of the two can be small). The choice and its figures: ``benchmarks/detect_masked.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from partialface.detect import mtcnn
from partialface.detect.mtcnn import FACTOR, MIN_FACE_SIZE, THRESHOLDS, Face, selection_scores
from partialface.errors import PartialFaceError

DETECTORS: tuple[str, ...] = ("mtcnn", "yunet", "mtcnn+yunet", "mtcnn+low", "yunet-ms", "mtcnn+yunet-ms")
#: the recommended detector for occluded faces (chosen on held-out CelebA photos with occluders)
OCCLUDED = "mtcnn+yunet"
#: stage thresholds of the second pass of ``mtcnn+low``
LOW_THRESHOLDS = (0.5, 0.5, 0.5)
#: two boxes are one face when their intersection covers more than this fraction of the smaller box
MERGE_OVERLAP = 0.4


def check_detector(detector: str) -> str:
    """``detector`` if it is one of :data:`DETECTORS`, else a one-line PartialFaceError listing them."""
    if detector not in DETECTORS:
        raise PartialFaceError(f"detector {detector!r}: choose one of {', '.join(DETECTORS)}")
    return detector


def box_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, for boxes a (N, 4) and b (M, 4) x1, y1, x2, y2 -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(smaller > 0, w * h / smaller, 0.0)


def merge_faces(primary: Sequence[Face], extra: Sequence[Face], image_shape: Sequence[int],
                overlap: float = MERGE_OVERLAP) -> list[Face]:
    """``primary``'s faces, unchanged, plus each face of ``extra`` that overlaps (:func:`box_overlap` >
    ``overlap``) no face kept so far (extra's faces visited by score, highest first); the result is sorted best
    first by the published rule (stable: primary's faces keep their order among themselves)."""
    kept = list(primary)
    for f in sorted(extra, key=lambda f: -f.score):
        if not kept or box_overlap(np.array([f.box]), np.array([k.box for k in kept])).max() <= overlap:
            kept.append(f)
    if len(kept) == len(primary):
        return list(primary)
    order = np.argsort(-selection_scores(np.array([f.box for f in kept]), image_shape), kind="stable")
    return [kept[i] for i in order.tolist()]


def detect_faces(
    image: np.ndarray,
    *,
    detector: str = "mtcnn",
    device: str | torch.device | None = None,
    min_face_size: float = MIN_FACE_SIZE,
    thresholds: Sequence[float] = THRESHOLDS,
    factor: float = FACTOR,
    yunet_threshold: float | None = None,
    yunet_upscale: int | None = None,
    yunet_scales: Sequence[float] | None = None,
) -> list[Face]:
    """Faces in one RGB uint8 image (H, W, 3), best face first; [] if none. ``detector``: see the module
    docstring (``"mtcnn"``, the default, is :func:`partialface.detect.mtcnn.detect_faces` exactly). MTCNN's
    settings apply to its passes; ``yunet_threshold``: YuNet's score threshold (default
    :data:`partialface.detect.yunet.SCORE_THRESHOLD`, for the ``-ms`` detectors
    :data:`partialface.detect.yunet.MS_THRESHOLD`); ``yunet_upscale``: the shorter side small images are enlarged
    to for YuNet (default :data:`partialface.detect.yunet.UPSCALE`; 0 = never; not used by the ``-ms`` detectors);
    ``yunet_scales``: the ``-ms`` detectors' enlargement factors (default
    :data:`partialface.detect.yunet.MS_SCALES`)."""
    return detect_faces_batch([image], detector=detector, device=device, min_face_size=min_face_size,
                              thresholds=thresholds, factor=factor, yunet_threshold=yunet_threshold,
                              yunet_upscale=yunet_upscale, yunet_scales=yunet_scales)[0]


def detect_faces_batch(
    images: Sequence[np.ndarray],
    *,
    detector: str = "mtcnn",
    device: str | torch.device | None = None,
    min_face_size: float = MIN_FACE_SIZE,
    thresholds: Sequence[float] = THRESHOLDS,
    factor: float = FACTOR,
    yunet_threshold: float | None = None,
    yunet_upscale: int | None = None,
    yunet_scales: Sequence[float] | None = None,
    compile: bool = False,
) -> list[list[Face]]:
    """:func:`detect_faces` for many RGB uint8 images (H_i, W_i, 3) of any sizes; MTCNN's passes run batched
    (:func:`partialface.detect.mtcnn.detect_faces_batch`, the same faces as one at a time), YuNet per image."""
    check_detector(detector)
    mt = dict(device=device, min_face_size=min_face_size, factor=factor, compile=compile)
    if detector == "mtcnn":
        return mtcnn.detect_faces_batch(images, thresholds=thresholds, **mt)  # type: ignore[arg-type]
    if detector == "mtcnn+low":
        first = mtcnn.detect_faces_batch(images, thresholds=thresholds, **mt)  # type: ignore[arg-type]
        low = tuple(min(a, b) for a, b in zip(thresholds, LOW_THRESHOLDS, strict=True))
        second = mtcnn.detect_faces_batch(images, thresholds=low, **mt)  # type: ignore[arg-type]
        return [merge_faces(f, s, im.shape) for f, s, im in zip(first, second, images, strict=True)]
    from partialface.detect.yunet import MS_SCALES, MS_THRESHOLD, SCORE_THRESHOLD, UPSCALE, default_yunet

    if detector.endswith("-ms"):
        scales = tuple(float(f) for f in (MS_SCALES if yunet_scales is None else yunet_scales))
        if not scales:
            raise PartialFaceError(f"detector {detector!r}: yunet_scales must name at least one factor")
        yunet = default_yunet(MS_THRESHOLD if yunet_threshold is None else float(yunet_threshold), 0, scales)
    else:
        yunet = default_yunet(SCORE_THRESHOLD if yunet_threshold is None else float(yunet_threshold),
                              UPSCALE if yunet_upscale is None else int(yunet_upscale))
    found = [yunet(im) for im in images]
    if detector in ("yunet", "yunet-ms"):
        return found
    first = mtcnn.detect_faces_batch(images, thresholds=thresholds, **mt)  # type: ignore[arg-type]
    return [merge_faces(f, y, im.shape) for f, y, im in zip(first, found, images, strict=True)]
