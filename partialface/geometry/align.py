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


def align_photo(image: np.ndarray, landmarks: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """:func:`align_face` for a user's photo of any size (the facade's path, not the benchmark's): where the warp
    shrinks the face by more than 2x (a large face in a large photo), the region the aligned face is cut from is
    first downscaled with an area filter to the warp's scale, so the face is not aliased (a plain bilinear warp
    samples 1 of every k^2 pixels). Otherwise exactly :func:`align_face`. (S, S, 3) uint8."""
    m = alignment_matrix(landmarks, size)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale >= 0.5:
        return align_face(image, landmarks, size)
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(np.floor(v)) - 2) for v in corners.min(0))
    x1, y1 = min(w, int(np.ceil(corners[:, 0].max())) + 2), min(h, int(np.ceil(corners[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:  # the face's square lies outside the photo: the plain warp gives the grey it would
        return align_face(image, landmarks, size)
    crop = image[y0:y1, x0:x1]
    small = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    kx, ky = small.shape[1] / crop.shape[1], small.shape[0] / crop.shape[0]
    # full-photo pixel x maps to small pixel (x - x0 + 0.5) * kx - 0.5; compose the warp with its inverse
    to_full = np.array([[1 / kx, 0, x0 + 0.5 / kx - 0.5], [0, 1 / ky, y0 + 0.5 / ky - 0.5], [0, 0, 1]])
    m_small = m @ to_full
    return cv2.warpAffine(small, m_small, (size, size), flags=cv2.INTER_LINEAR, borderValue=(GREY, GREY, GREY))


def resize_fallback(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """What the recipe stores when no face is found: the whole image resized to (S, S, 3), bilinear.

    The published code used skimage's anti-aliased resize; this uses OpenCV's area-free bilinear
    resize, so fallback images (counted as failures) are not pixel-identical to it.
    """
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
