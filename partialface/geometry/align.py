"""Face alignment exactly as the published PartialLFW recipe (spec §1).

A least-squares similarity (Umeyama, reflection excluded) from the 5 detected landmarks to the 5
template points gives a rotation angle and a scale; the warp rotates/scales about the midpoint of the
eyes and moves that midpoint to (0.5 S, 0.4 S). Bilinear, grey (128) border. The arithmetic follows
the published code step by step (same operations, same order, float64), so the warp matrix and hence
every pixel agree with it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from partialface.geometry.template import EYE_CENTRE_FRACTION, GREY, IMAGE_SIZE, PADDING, template_points


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity dst ≈ c·R·src + t (Umeyama; rotation only, no reflection).

    src, dst: (N, 2) points. Returns (M, t): M = c·R (2, 2) and t (2,), float64.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need two equal sets of >= 2 points, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    mean_src = src.mean(axis=0)
    mean_dst = dst.mean(axis=0)
    sigma_src = 0.0
    cov = np.zeros((2, 2))
    for i in range(n):
        d = float(np.linalg.norm(src[i] - mean_src))
        sigma_src += d * d
        cov += np.outer(dst[i] - mean_dst, src[i] - mean_src)
    sigma_src /= n
    cov /= n
    u, d_, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(cov) < 0:
        if d_[1] < d_[0]:
            s[1, 1] = -1
        else:
            s[0, 0] = -1
    r = u @ s @ vt
    c = 1.0 if sigma_src == 0 else 1.0 / sigma_src * float(np.trace(np.diag(d_) @ s))
    t = mean_dst - c * (r @ mean_src)
    return c * r, t


def alignment_matrix(landmarks: np.ndarray, size: int = IMAGE_SIZE, padding: float = PADDING) -> np.ndarray:
    """The (2, 3) affine warp matrix of the published recipe for 5 landmarks (5, 2) in image pixels."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise ValueError(f"landmarks must be a finite (5, 2) array, got shape {pts.shape}")
    m, _ = similarity_transform(pts, template_points(size, padding))
    probe = m @ np.array([1.0, 0.0])
    scale = float(np.linalg.norm(probe))
    angle = 180.0 / math.pi * math.atan2(probe[1], probe[0])
    eye_centre = ((pts[0, 0] + pts[1, 0]) / 2.0, (pts[0, 1] + pts[1, 1]) / 2.0)
    rot = cv2.getRotationMatrix2D(eye_centre, -1 * angle, scale)
    rot[0][2] += size * EYE_CENTRE_FRACTION[0] - eye_centre[0]
    rot[1][2] += size * EYE_CENTRE_FRACTION[1] - eye_centre[1]
    return rot


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Align a face: image (H, W, 3) uint8 + landmarks (5, 2) [lEye, rEye, nose, mouthL, mouthR] -> (S, S, 3) uint8."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    m = alignment_matrix(landmarks, size)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=(GREY, GREY, GREY))


def resize_fallback(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """What the recipe stores when no face is found: the whole image resized to (S, S, 3), bilinear.

    The published code used skimage's anti-aliased resize; this uses OpenCV's area-free bilinear
    resize, so fallback images (counted as failures) are not pixel-identical to it.
    """
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
