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
from partialface.detect.mtcnn import (  # noqa: F401  (box_overlap, merge_faces: part of this module's API)
    FACTOR,
    MERGE_OVERLAP,
    MIN_FACE_SIZE,
    THRESHOLDS,
    Face,
    box_overlap,
    merge_faces,
    selection_scores,
)
from partialface.errors import PartialFaceError

DETECTORS: tuple[str, ...] = ("mtcnn", "yunet", "mtcnn+yunet", "mtcnn+low", "yunet-ms", "mtcnn+yunet-ms")
#: the recommended detector for occluded faces (chosen on held-out CelebA photos with occluders)
OCCLUDED = "mtcnn+yunet"
#: stage thresholds of the second pass of ``mtcnn+low``
LOW_THRESHOLDS = (0.5, 0.5, 0.5)
#: photos are searched for faces on a copy whose longer side is at most this many pixels (:func:`detect_photo`):
#: a phone photo's face is hundreds of pixels wide, and detection's cost grows with the pixels (issue #42)
DETECT_SIDE = 1024


def check_detector(detector: str) -> str:
    """``detector`` if it is one of :data:`DETECTORS`, else a one-line PartialFaceError listing them."""
    if detector not in DETECTORS:
        raise PartialFaceError(f"detector {detector!r}: choose one of {', '.join(DETECTORS)}")
    return detector




def detect_photo(image: np.ndarray, *, detector: str = "mtcnn", detect_side: int = DETECT_SIDE,
                 device: str | torch.device | None = None) -> list[Face]:
    """:func:`detect_faces` on a copy of ``image`` (H, W, 3) downscaled by the smallest whole factor (area filter)
    that makes its longer side at most ``detect_side`` pixels (0: the full resolution, for small faces in large
    crowd photos); boxes and landmarks are mapped back to ``image``'s pixels."""
    import cv2

    h, w = image.shape[:2]
    if detect_side < 0:
        raise PartialFaceError(f"detect_side {detect_side}: give 0 (full resolution) or a side in pixels")
    k = -(-max(h, w) // detect_side) if detect_side else 1  # the smallest whole factor that fits
    if k <= 1:
        return detect_faces(image, detector=detector, device=device)
    # a whole factor: OpenCV's area filter is then an exact k x k mean (and 3x faster); the last < k rows and
    # columns are left out of the copy
    small = cv2.resize(image[: h // k * k, : w // k * k], (w // k, h // k), interpolation=cv2.INTER_AREA)
    # pixel centres: x_full + 0.5 = (x_small + 0.5) * k
    return [Face(box=(f.box[0] * k, f.box[1] * k, f.box[2] * k, f.box[3] * k), score=f.score,
                 landmarks=(np.asarray(f.landmarks, np.float64) + 0.5) * k - 0.5)
            for f in detect_faces(small, detector=detector, device=device)]


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
