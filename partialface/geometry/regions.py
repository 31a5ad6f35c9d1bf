"""The face regions of the per-region account (issue #14): left eye, right eye, nose, mouth and the rest of
the face, as a partition of the aligned 160x160 face.

A pixel belongs to a part when it lies in that part's smallest PartialLFW rectangle (factor 0.1, the
benchmark's own part boxes, :func:`partialface.geometry.template.part_rect`); where two boxes overlap it
goes to the part whose centre is nearer in units of the box's half extents; every other pixel is ``rest``.
"""

from __future__ import annotations

import numpy as np

from partialface.geometry.template import GREY, IMAGE_SIZE, PARTS, half_extent, part_centre, part_rect

#: the regions, in the order of every array and dict of the account
REGIONS: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth", "rest")
#: the PartialLFW factor whose kept rectangles are the part regions
REGION_FACTOR = 0.1


def region_labels(size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size) int64: the index into :data:`REGIONS` of each pixel of an aligned face (size must be 160)."""
    if size != IMAGE_SIZE:
        raise ValueError(f"regions are defined on the {IMAGE_SIZE}x{IMAGE_SIZE} aligned face")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    hw, hh = half_extent(REGION_FACTOR)
    dist = np.full((len(PARTS), size, size), np.inf)
    for i, part in enumerate(PARTS):
        r = part_rect(part, REGION_FACTOR)
        inside = (xx >= r.x1) & (xx <= r.x2) & (yy >= r.y1) & (yy <= r.y2)
        cx, cy = part_centre(part)
        d = np.maximum(np.abs(xx - cx) / hw, np.abs(yy - cy) / hh)
        dist[i][inside] = d[inside]
    labels = np.argmin(dist, axis=0)
    labels[np.isinf(dist.min(axis=0))] = len(PARTS)  # in no part's box: the rest of the face
    return labels


def labels_at(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Region indices of points (any shape) in aligned-face pixel coordinates (pixel j's centre at j, the
    coordinates of the part rectangles); a point takes its pixel's label, points off the face are ``rest``."""
    labels = region_labels()
    xi, yi = np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)
    on = (xi >= 0) & (xi < IMAGE_SIZE) & (yi >= 0) & (yi < IMAGE_SIZE)
    out = np.full(np.shape(x), len(PARTS), dtype=np.int64)
    out[on] = labels[yi[on], xi[on]]
    return out


def cell_regions(h: int, w: int, frame: np.ndarray, samples: int | None = None) -> np.ndarray:
    """(h * w, len(REGIONS)) float64: the fraction of each cell of an h x w feature grid in each region, when
    ``frame`` (2, 3) maps the grid's (u, v) in [0, 1]^2 (its outer edges) to the aligned face's pixel
    coordinates (a model's input frame, :func:`partialface.models.framing.input_frame`); rows sum to 1.
    Each cell is sampled on a ``samples`` x ``samples`` grid of points (default: at least one per pixel of a
    cell, and at least 16; exact pixel counts when the cells are whole pixels of a whole-face frame)."""
    if samples is None:
        samples = max(16, -(-IMAGE_SIZE // min(h, w)))
    t = (np.arange(samples) + 0.5) / samples
    u = (np.arange(w)[:, None] + t[None, :]).ravel() / w  # (w * samples,) in [0, 1]
    v = (np.arange(h)[:, None] + t[None, :]).ravel() / h
    uu, vv = np.meshgrid(u, v)  # (h * s, w * s)
    xs = frame[0, 0] * uu + frame[0, 1] * vv + frame[0, 2]
    ys = frame[1, 0] * uu + frame[1, 1] * vv + frame[1, 2]
    onehot = np.eye(len(REGIONS))[labels_at(xs, ys)].reshape(h, samples, w, samples, len(REGIONS))
    return onehot.mean(axis=(1, 3)).reshape(h * w, len(REGIONS))


def grey_out(aligned: np.ndarray, region: int, grey: int = GREY) -> np.ndarray:
    """A copy of aligned faces (..., 160, 160, 3) uint8 with region ``region`` (index into REGIONS) set to grey."""
    out = aligned.copy()
    out[..., region_labels() == region, :] = grey
    return out


def region_visibility(hidden: np.ndarray) -> np.ndarray:
    """(..., 160, 160) bool hidden masks (True = hidden, e.g. :func:`partialface.geometry.occlude.occlude`'s) ->
    (..., 5) float64: the fraction of each region's pixels (order :data:`REGIONS`) that are NOT hidden.

    The four parts count all their pixels (:func:`region_labels`); ``rest`` counts only its pixels inside the face
    area (:func:`partialface.geometry.occlude.face_area` on the template's landmarks), not the background."""
    hidden = np.asarray(hidden, dtype=bool)
    if hidden.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"hidden masks must be (..., {IMAGE_SIZE}, {IMAGE_SIZE}), got {hidden.shape}")
    counted = region_pixels().reshape(len(REGIONS), -1).astype(np.float64)  # (5, 160 * 160) 0 / 1
    visible = (~hidden).reshape(*hidden.shape[:-2], IMAGE_SIZE * IMAGE_SIZE).astype(np.float64)
    return (visible @ counted.T) / counted.sum(axis=1)  # whole pixel counts: exact fractions


def region_pixels() -> np.ndarray:
    """(5, 160, 160) bool: the pixels :func:`region_visibility` counts for each region (the parts: all their pixels;
    ``rest``: its pixels inside the face area)."""
    from partialface.geometry.occlude import face_area

    labels = region_labels()
    counted = np.stack([labels == r for r in range(len(REGIONS))])
    counted[-1] &= face_area()
    return counted


def region_weights() -> np.ndarray:
    """(5, 160 * 160) float64: row r is 1 / n_r on the n_r pixels region r's visibility counts (:func:`region_pixels`),
    0 elsewhere: the visible mask (flattened) times its transpose is :func:`region_visibility`."""
    w = region_pixels().reshape(len(REGIONS), -1).astype(np.float64)
    return w / w.sum(axis=1, keepdims=True)
