"""Finding occluded faces (issue #39, item 2): MTCNN, YuNet and their combinations on real masked photos.

Per detector (``partialface.detect.policy``; YuNet variants ``yunet@T`` / ``mtcnn+yunet@T`` with score threshold T,
``-up`` = small images enlarged to ``--upscale`` px on the shorter side first; ``yunet-ms@T`` /
``mtcnn+yunet-ms@T[-x1+2+4]``: YuNet at the image's size and enlarged by each factor, faces merged across scales):

- **rwmfd** (real street photos of masked people, ``occluders/rwmfd``, no labels): the share of images where it
  finds at least one face, the faces it returns, and the time per image (one thread);
- **by eye** (``--counts``, default ``benchmarks/data/rwmfd_count_by_eye.csv``): on a seeded sample of rwmfd
  images counted by eye, faces found / faces a person can see, and false detections per image;
- **CelebA held-out** (the 250x250 in-the-wild photos of ``celeba-train``, never LFW or rwmfd): MTCNN's face on
  the clean photo gets an occluder (``occlude_photo``: mask, sunglasses, hand, MaskTheFace image; and, where
  ``partialface.geometry.realistic`` is there, its mask, sunglasses, hand and crop), at the photo's size and
  shrunk so that the face is 24-48 px wide (``/small``, as in rwmfd) and 12-24 px wide (``/tiny``); found = a
  detected box centre inside the clean box.
  ``other/photo``: detections elsewhere, per photo (clean and occluded): the false-detection proxy the choice
  is made with;
- **LFW** (a seeded sample of ``lfw-deepfunneled``): detections per photo (MTCNN's are the reference; more means
  more false detections or more background faces, ``--sheets`` draws the extra ones to check by eye).

Each detector's blocks run once per image (MTCNN, MTCNN's low-threshold pass, YuNet at the lowest threshold asked
per upscale) and the policies are composed from them as ``partialface.detect.policy`` composes them (checked
against the policy functions on the first images); time per image = the sum of its blocks' times.

``--sheets DIR`` writes the by-eye contact sheets (3x3 tiles, every candidate box numbered, green = MTCNN found
it, yellow = only YuNet, red = only MTCNN's low pass) and ``DIR/candidates.tsv`` (which detector found which
candidate); ``--labels FILE`` (lines ``file<TAB>visible faces<TAB>ids of the candidates that are faces``) turns
the look into the counts file.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detect_masked.py --shared ../shared [--celeba-photos 100] \
        [--lfw-photos 300] [--cache /tmp/detect_masked.pkl] [--sheets /tmp/sheets] [--labels /tmp/labels.tsv]
"""

from __future__ import annotations

import argparse
import csv
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from partialface.data.folders import list_images
from partialface.data.images import read_image
from partialface.detect import policy
from partialface.detect.mtcnn import Face, detect_faces, selection_scores
from partialface.detect.policy import LOW_THRESHOLDS, box_overlap, merge_faces
from partialface.detect.yunet import YuNet, scaled_size
from partialface.errors import PartialFaceError, script_exit

BY_EYE_SAMPLE = 112
MIN_SCORED_PX = 11  # by eye: a face counts from ~12 px wide; narrower boxes are neither found nor false
FLOOR = 0.3  # YuNet runs once at this threshold; higher thresholds filter its output (the same faces)


# ---------------------------------------------------------------------------------------------- detector blocks
@dataclass
class Blocks:
    """The raw outputs for one image: MTCNN (spec), MTCNN's low pass, YuNet per upscale; seconds per block."""

    shape: tuple[int, ...]
    mtcnn: list[Face]
    low: list[Face]
    yunet: dict[int | str, list[Face]]  # int: an upscale (0 = as is); "x<f>": enlarged by factor f (capped)
    seconds: dict[str, float]


def run_blocks(image: np.ndarray, yunets: dict[int | str, Callable[[np.ndarray], list[Face]]]) -> Blocks:
    """All blocks on one RGB uint8 image (H, W, 3)."""
    sec: dict[str, float] = {}
    t = time.perf_counter()
    m = detect_faces(image, device="cpu")
    sec["mtcnn"] = time.perf_counter() - t
    t = time.perf_counter()
    low = detect_faces(image, device="cpu", thresholds=LOW_THRESHOLDS)
    sec["low"] = time.perf_counter() - t
    ys = {}
    for up, det in yunets.items():
        t = time.perf_counter()
        ys[up] = det(image)
        sec[f"yunet{up}"] = time.perf_counter() - t
    return Blocks(image.shape, m, low, ys, sec)


@dataclass(frozen=True)
class Detector:
    """A policy: ``base`` in policy.DETECTORS, YuNet's score threshold and upscale."""

    name: str
    base: str
    threshold: float = 0.0
    upscale: int = 0
    scales: tuple[float, ...] = ()

    @property
    def key(self) -> str:
        """The settings in one word (the counts file's columns): mtcnn, mtcnn+low, yunet@0.7-up480, ..."""
        if "yunet" not in self.base:
            return self.base
        if self.scales:
            return f"{self.base}@{self.threshold:g}-x" + "+".join(f"{f:g}" for f in self.scales)
        return f"{self.base}@{self.threshold:g}" + (f"-up{self.upscale}" if self.upscale else "")

    def block_keys(self, shape: tuple[int, ...]) -> list[int | str]:
        """The YuNet blocks it uses on an image of this shape (factors capped to the same size: once)."""
        if not self.scales:
            return [self.upscale]
        h, w = shape[:2]
        sizes: dict[tuple[int, int], float] = {}
        for f in self.scales:  # the block of a factor holds it capped (YuNet.at_scale)
            sizes.setdefault(scaled_size(w, h, f), f)
        return [0 if scaled_size(w, h, f) == (w, h) else scale_key(f) for f in sizes.values()]

    def faces(self, b: Blocks) -> list[Face]:
        """Its faces, composed from the blocks as ``partialface.detect.policy`` does."""
        if self.base == "mtcnn":
            return b.mtcnn
        if self.base == "mtcnn+low":
            return merge_faces(b.mtcnn, b.low, b.shape)
        ys = [f for k in self.block_keys(b.shape) for f in b.yunet[k] if f.score >= self.threshold]
        if self.scales:  # as YuNet.__call__: every scale's faces, best first by the published rule, merged
            order = np.argsort(-selection_scores(np.array([f.box for f in ys]).reshape(-1, 4), b.shape), kind="stable")
            ys = merge_faces([], [ys[i] for i in order.tolist()], b.shape)
        return ys if self.base in ("yunet", "yunet-ms") else merge_faces(b.mtcnn, ys, b.shape)

    def seconds(self, b: Blocks) -> float:
        """Its time on the image: the sum of its blocks'."""
        s = {"mtcnn": ["mtcnn"], "mtcnn+low": ["mtcnn", "low"]}.get(self.base)
        if s is None:
            s = ["mtcnn"] * self.base.startswith("mtcnn+") + [f"yunet{k}" for k in self.block_keys(b.shape)]
        return sum(b.seconds[k] for k in s)

    def policy_faces(self, image: np.ndarray) -> list[Face]:
        """The same through ``partialface.detect.policy.detect_faces`` (the check)."""
        return policy.detect_faces(image, detector=self.base, device="cpu", yunet_threshold=self.threshold,
                                   yunet_upscale=self.upscale, yunet_scales=self.scales or None)


def scale_key(factor: float) -> int | str:
    """The block of a (capped) enlargement factor: 0 (the image as it is) or ``x<factor>``."""
    return 0 if factor == 1.0 else f"x{factor:g}"


def parse_detectors(spec: str, upscale: int) -> list[Detector]:
    """``mtcnn,mtcnn+low,yunet@0.6,mtcnn+yunet@0.6-up,mtcnn+yunet-ms@0.7-x1+3,...`` -> detectors (``yunet``,
    ``yunet-ms``: the module defaults)."""
    from partialface.detect.yunet import MS_SCALES, MS_THRESHOLD, SCORE_THRESHOLD, UPSCALE

    out = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        base, _, rest = name.partition("@")
        policy.check_detector(base)
        if base in ("mtcnn", "mtcnn+low"):
            out.append(Detector(name, base))
            continue
        if base.endswith("-ms"):
            thr, _, xs = rest.partition("-x")
            try:
                t = float(thr) if thr else MS_THRESHOLD
                scales = tuple(float(v) for v in xs.split("+")) if xs else MS_SCALES
            except ValueError:
                raise PartialFaceError(f"--detectors {name}: give e.g. {base}@0.7-x1+2+4") from None
            if not FLOOR <= t <= 1 or any(f < 1 for f in scales):
                raise PartialFaceError(f"--detectors {name}: threshold in [{FLOOR}, 1], factors >= 1")
            out.append(Detector(name, base, t, 0, scales))
            continue
        if not rest:
            out.append(Detector(name, base, SCORE_THRESHOLD, UPSCALE))
            continue
        thr, up = (rest[:-3], upscale) if rest.endswith("-up") else (rest, 0)
        try:
            t = float(thr)
        except ValueError:
            raise PartialFaceError(f"--detectors {name}: give a YuNet threshold after @, e.g. yunet@0.6") from None
        if not FLOOR <= t <= 1:
            raise PartialFaceError(f"--detectors {name}: the threshold must be in [{FLOOR}, 1]")
        out.append(Detector(name, base, t, up))
    return out


def same_faces(a: Sequence[Face], b: Sequence[Face]) -> bool:
    return len(a) == len(b) and all(x.box == y.box and x.score == y.score for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------- data
def rwmfd_files(root: Path) -> list[Path]:
    return [root / f for f in list_images(root, what="rwmfd folder")]


def sample(files: Sequence[Any], n: int, seed: int) -> list[Any]:
    """A seeded random sample of n items (all when n >= len), in a fixed order."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(files), size=min(n, len(files)), replace=False))
    return [files[i] for i in idx.tolist()]


def shrink(photo: np.ndarray, box: tuple[float, float, float, float], rng: np.random.Generator,
           widths: tuple[float, float] = (24, 48)) -> tuple[np.ndarray, float]:
    """The photo shrunk (INTER_AREA) so that the face box is 24-48 px (``widths``) wide -> (photo, scale)."""
    width = box[2] - box[0]
    s = min(1.0, float(rng.uniform(*widths)) / max(width, 1.0))
    h, w = photo.shape[:2]
    size = (max(12, round(w * s)), max(12, round(h * s)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_AREA), s


def celeba_cases(root: Path, masks_root: Path, n: int, seed: int) -> list[tuple[str, np.ndarray, tuple[float, ...]]]:
    """Held-out occluded photos: (variant name, photo (H, W, 3) uint8, the clean face's box in its pixels)."""
    from partialface.geometry.occlude import masktheface_templates, occlude_photo

    try:
        from partialface.geometry import realistic
    except ImportError:
        realistic = None  # type: ignore[assignment]
    files = [f for f in list_images(root, what="celeba-train folder")]
    photos = []
    for f in sample(files, 4 * n, seed):  # the 250x250 in-the-wild photos only
        im = read_image(root / f)
        if im.shape[:2] == (250, 250):
            photos.append((f, im))
        if len(photos) == n:
            break
    templates = masktheface_templates(masks_root)
    rmasks = realistic.load_mask_templates(masks_root) if realistic is not None else None
    cases = []
    for i, (f, im) in enumerate(photos):
        faces = detect_faces(im, device="cpu")
        if not faces:
            continue
        box, lm = faces[0].box, faces[0].landmarks
        variants: list[tuple[str, np.ndarray, tuple[float, ...]]] = [("clean", im, box)]
        for kind in ("mask", "sunglasses", "hand"):
            variants.append((kind, occlude_photo(im, lm, kind, seed=i)[0], box))
        _, rgba, anchors = templates[i % len(templates)]
        variants.append(("image", occlude_photo(im, lm, "image", seed=i, occluder=rgba, anchors=anchors)[0], box))
        if realistic is not None:
            for kind in realistic.REALISTIC_KINDS:
                occ = realistic.occlude_photo_realistic(im, lm, kind, seed=i, masks=rmasks)
                x0, y0 = occ.offset
                variants.append((f"real-{kind}", occ.photo, (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)))
        rng = np.random.default_rng([seed, i])
        tiny_rng = np.random.default_rng([seed, i, 12])
        for name, photo, b in list(variants):
            small, s = shrink(photo, b, rng)  # type: ignore[arg-type]
            variants.append((f"{name}/small", small, tuple(v * s for v in b)))
            tiny, s = shrink(photo, b, tiny_rng, (12, 24))  # type: ignore[arg-type]
            variants.append((f"{name}/tiny", tiny, tuple(v * s for v in b)))
        cases += [(f"{f}:{name}", photo, b) for name, photo, b in variants]
    return cases


def hit(face: Face, box: Sequence[float]) -> bool:
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


# ---------------------------------------------------------------------------------------------- by eye
def candidates(b: Blocks, dets: Sequence[Detector]) -> tuple[list[Face], dict[str, list[int]]]:
    """The distinct boxes any detector returned (clustered as the policies merge) and, per detector, the
    candidate each of its faces falls on (-1 never happens: every face is a candidate)."""
    cands: list[Face] = []
    per: dict[str, list[int]] = {}
    for d in dets:
        ids = []
        for f in d.faces(b):
            ov = box_overlap(np.array([f.box]), np.array([c.box for c in cands]))[0] if cands else np.zeros(0)
            if ov.size and ov.max() > policy.MERGE_OVERLAP:
                ids.append(int(np.argmax(ov)))
            else:
                cands.append(f)
                ids.append(len(cands) - 1)
        per[d.name] = ids
    return cands, per


def write_sheets(out: Path, files: Sequence[Path], blocks: dict[str, Blocks], dets: Sequence[Detector]) -> None:
    """3x3 contact sheets of the by-eye sample with numbered candidates, and ``candidates.tsv``."""
    out.mkdir(parents=True, exist_ok=True)
    tiles, rows = [], ["# file\tcandidate\tx1\ty1\tx2\ty2\tfound by"]
    tile = 420
    for f in files:
        b = blocks[str(f)]
        cands, per = candidates(b, dets)
        im = cv2.cvtColor(read_image(f), cv2.COLOR_RGB2BGR)
        s = tile / max(im.shape[:2])
        im = cv2.resize(im, (round(im.shape[1] * s), round(im.shape[0] * s)), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((tile + 22, tile, 3), 40, np.uint8)
        canvas[22 : 22 + im.shape[0], : im.shape[1]] = im
        for k, c in enumerate(cands):
            by = [d.name for d in dets if k in per[d.name]]
            rows.append(f"{f.parent.name}/{f.name}\t{k}\t" + "\t".join(f"{v:.0f}" for v in c.box) + "\t" + " ".join(by))
            colour = (0, 220, 0) if "mtcnn" in by else (0, 0, 255) if by == ["mtcnn+low"] else (0, 230, 255)
            x1, y1, x2, y2 = (round(v * s) for v in c.box)
            cv2.rectangle(canvas, (x1, y1 + 22), (x2, y2 + 22), colour, 1)
            cv2.putText(canvas, str(k), (x1 + 1, max(y1 + 22 - 2, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
        cv2.putText(canvas, f"{f.parent.name}/{f.name[:28]}", (2, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255), 1)
        tiles.append(canvas)
    for n in range(0, len(tiles), 9):
        group = tiles[n : n + 9] + [np.zeros_like(tiles[0])] * (9 - len(tiles[n : n + 9]))
        sheet = np.concatenate([np.concatenate(group[r * 3 : r * 3 + 3], axis=1) for r in range(3)], axis=0)
        cv2.imwrite(str(out / f"sheet_{n // 9:02d}.png"), sheet)
    (out / "candidates.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def labels_to_counts(labels: Path, files: Sequence[Path], blocks: dict[str, Blocks], dets: Sequence[Detector],
                     counts: Path) -> None:
    """Turn the look (``file<TAB>visible<TAB>face candidate ids<TAB>ignored ids``) into the counts CSV: per image
    the faces a person can see and, per detector, the faces it found and its false detections. A second box on a
    face is false; a box on a real face below the rule (ignored ids, or narrower than ``MIN_SCORED_PX``) is
    neither. The candidate ids are those of the sheets, so use the same ``--detectors`` as for ``--sheets``."""
    looked: dict[str, tuple[int, set[int], set[int]]] = {}
    for line in labels.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [*line.split("\t"), "", ""]
        faces = {int(v) for v in parts[2].split()}
        ignore = {int(v) for v in parts[3].split()}  # real faces below the rule: neither found nor false
        looked[parts[0]] = (int(parts[1]), faces, ignore)
    header = ["file", "visible_faces"] + [f"{k}_{d.key}" for d in dets for k in ("found", "false")]
    lines = [header]
    for f in files:
        rel = f"{f.parent.name}/{f.name}"
        if rel not in looked:
            raise PartialFaceError(f"{labels}: no line for {rel} (every image of the sample needs one)")
        visible, faces, ignore = looked[rel]
        cands, per = candidates(blocks[str(f)], dets)
        # boxes narrower than MIN_SCORED_PX on no listed face are below the rule: not scored either way
        ignore |= {k for k, c in enumerate(cands) if c.box[2] - c.box[0] < MIN_SCORED_PX and k not in faces}
        row: list[Any] = [rel, visible]
        for d in dets:
            ids = per[d.name]
            found = len(set(ids) & faces)
            false = sum(1 for k in ids if k not in faces and k not in ignore) + (len([k for k in ids if k in faces])
                                                                                 - found)
            row += [found, false]
        lines.append(row)
    counts.parent.mkdir(parents=True, exist_ok=True)
    with counts.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(lines)


def read_counts(counts: Path) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """The counts CSV -> (images, faces a person can see, {detector: (found, false)})."""
    with counts.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise PartialFaceError(f"{counts}: no rows")
    names = [k[len("found_"):] for k in rows[0] if k.startswith("found_")]
    visible = sum(int(r["visible_faces"]) for r in rows)
    return len(rows), visible, {n: (sum(int(r[f"found_{n}"]) for r in rows), sum(int(r[f"false_{n}"]) for r in rows))
                                for n in names}


# ---------------------------------------------------------------------------------------------- main
def cached(cache: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    if key not in cache:
        cache[key] = fn()
    return cache[key]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_shared = Path(os.environ.get("PARTIALFACE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--shared", type=Path, default=default_shared, help="the folder holding data/ (default ../shared)")
    ap.add_argument("--detectors", default="mtcnn,mtcnn+low,yunet,mtcnn+yunet",
                    help="comma-separated; yunet@T / mtcnn+yunet@T[-up] for other YuNet settings")
    ap.add_argument("--upscale", type=int, default=480, help="the shorter side small images are enlarged to (-up)")
    ap.add_argument("--celeba-photos", type=int, default=100)
    ap.add_argument("--lfw-photos", type=int, default=300)
    ap.add_argument("--rwmfd-limit", type=int, default=0, help="only the first N rwmfd images (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--counts", type=Path, default=Path(__file__).parent / "data" / "rwmfd_count_by_eye.csv")
    ap.add_argument("--cache", type=Path, default=None, help="a pickle of the blocks' outputs, reused if there")
    ap.add_argument("--sheets", type=Path, default=None, help="write the by-eye contact sheets here")
    ap.add_argument("--labels", type=Path, default=None, help="write --counts from this look (see the docstring)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: rwmfd, celeba, lfw")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    data = args.shared / "data"
    rw_root, lfw_root = data / "occluders" / "rwmfd", data / "lfw" / "lfw-deepfunneled"
    celeba_root, masks_root = data / "celeba-train", data / "occluders" / "masktheface"
    for p in (rw_root, lfw_root, celeba_root, masks_root):
        if not p.is_dir():
            raise PartialFaceError(f"{p}: no such folder (--shared: give the folder holding data/)")
    if args.labels is not None and not args.labels.is_file():
        raise PartialFaceError(f"{args.labels}: no such labels file")
    dets = parse_detectors(args.detectors, args.upscale)
    ups: list[int | str] = sorted({d.upscale for d in dets if "yunet" in d.base and not d.scales} | {0})
    ups += sorted({scale_key(f) for d in dets for f in d.scales} - {0}, key=str)
    plain = YuNet(score_threshold=FLOOR, upscale=0)

    def at_factor(f: float) -> Callable[[np.ndarray], list[Face]]:
        return lambda im: plain.at_scale(im, f)

    yunets: dict[int | str, Callable[[np.ndarray], list[Face]]] = {
        u: YuNet(score_threshold=FLOOR, upscale=u) if isinstance(u, int) else at_factor(float(u[1:])) for u in ups}
    cache: dict[str, Any] = {}
    if args.cache is not None and args.cache.is_file():
        cache = pickle.loads(args.cache.read_bytes())
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    def blocks_of(key: str, image: Callable[[], np.ndarray]) -> Blocks:
        b = cached(cache, key, lambda: run_blocks(image(), yunets))
        if any(u not in b.yunet for u in ups):  # an upscale not in the cache yet
            im = image()
            for u in ups:
                if u not in b.yunet:
                    t = time.perf_counter()
                    b.yunet[u] = yunets[u](im)
                    b.seconds[f"yunet{u}"] = time.perf_counter() - t
        return b

    results: dict[str, dict[str, str]] = {d.name: {} for d in dets}
    files = rwmfd_files(rw_root)
    if args.rwmfd_limit:
        files = files[: args.rwmfd_limit]
    rw: dict[str, Blocks] = {}
    if "rwmfd" not in skip:
        run_blocks(read_image(files[0]), yunets)  # warm-up: the first call builds the networks
        for f in files:
            rw[str(f)] = blocks_of(f"rwmfd:{f}", lambda f=f: read_image(f))  # type: ignore[misc]
        if args.cache is not None:
            args.cache.write_bytes(pickle.dumps(cache))
        im0 = read_image(files[0])
        for d in dets:  # the composition is the policy
            if not same_faces(d.faces(rw[str(files[0])]), d.policy_faces(im0)):
                raise AssertionError(f"{d.name}: composed faces differ from partialface.detect.policy's")
        for d in dets:
            found = [d.faces(b) for b in rw.values()]
            ms = 1000 * np.mean([d.seconds(b) for b in rw.values()])
            results[d.name]["rwmfd images with a face"] = f"{np.mean([bool(x) for x in found]):.1%}"
            results[d.name]["rwmfd faces"] = f"{sum(len(x) for x in found):,}"
            results[d.name]["ms / rwmfd image"] = f"{ms:.1f}"
    eye_files = sample(files, BY_EYE_SAMPLE, args.seed) if rw else []
    if args.sheets is not None and eye_files:
        write_sheets(args.sheets, eye_files, rw, dets)
        print(f"contact sheets of {len(eye_files)} images in {args.sheets}")
    if args.labels is not None and eye_files:
        labels_to_counts(args.labels, eye_files, rw, dets, args.counts)
        print(f"counts written to {args.counts}")
    if args.counts.is_file():
        n_img, visible, by = read_counts(args.counts)
        for d in dets:
            if d.key in by:
                n_found, n_false = by[d.key]
                results[d.name]["by eye: found / visible"] = f"{n_found / max(visible, 1):.1%} ({n_found}/{visible})"
                results[d.name]["by eye: false / image"] = f"{n_false / n_img:.2f}"
    if "celeba" not in skip:
        key = f"celeba-cases:{args.celeba_photos}:{args.seed}:tiny"
        if key not in cache or any(u not in cache[f"celeba:{k}"].yunet for k, _, _ in cache[key] for u in ups):
            full = celeba_cases(celeba_root, masks_root, args.celeba_photos, args.seed)
            for k, photo, _ in full:
                blocks_of(f"celeba:{k}", lambda p=photo: p)  # type: ignore[misc]
            cache[key] = [(k, None, b) for k, _, b in full]
        cases = cache[key]
        kinds = sorted({k.split(":", 1)[1] for k, _, _ in cases})
        per_kind: dict[str, dict[str, float]] = {d.name: {} for d in dets}
        for d in dets:
            occl, other, n = [], 0, 0
            for k, _, box in cases:
                faces = d.faces(cache[f"celeba:{k}"])
                ok = any(hit(f, box) for f in faces)
                other += sum(not hit(f, box) for f in faces)
                n += 1
                variant = k.split(":", 1)[1]
                per_kind[d.name].setdefault(variant, 0.0)
                per_kind[d.name][variant] += ok
                if not variant.startswith("clean"):
                    occl.append(ok)
            results[d.name]["CelebA occluded found"] = f"{np.mean(occl):.1%}"
            results[d.name]["CelebA other / photo"] = f"{other / n:.3f}"
        n_photos = sum(1 for k, _, _ in cases if k.endswith(":clean"))
        print(f"CelebA held-out: {n_photos} photos, {len(cases) - 3 * n_photos} occluded variants "
              "(found, per variant):")
        print("| detector | " + " | ".join(kinds) + " |")
        print("|---|" + "---:|" * len(kinds))
        for d in dets:
            print(f"| {d.name} | " + " | ".join(f"{per_kind[d.name][v] / n_photos:.0%}" for v in kinds) + " |")
    if "lfw" not in skip:
        lfw = sample([lfw_root / f for f in list_images(lfw_root, what="LFW folder")], args.lfw_photos, args.seed)
        lb = [blocks_of(f"lfw:{f}", lambda f=f: read_image(f)) for f in lfw]  # type: ignore[misc]
        for d in dets:
            results[d.name]["LFW detections / photo"] = f"{np.mean([len(d.faces(b)) for b in lb]):.3f}"
        if args.sheets is not None:
            extra = [(f, b) for f, b in zip(lfw, lb, strict=True) if any(len(d.faces(b)) > len(b.mtcnn) for d in dets)]
            write_sheets(args.sheets / "lfw_extra", [f for f, _ in extra], {str(f): b for f, b in extra}, dets)
            print(f"{len(extra)} LFW photos where a detector returns more faces than MTCNN: "
                  f"{args.sheets / 'lfw_extra'}")
    if args.cache is not None:
        args.cache.write_bytes(pickle.dumps(cache))
    cols = list(dict.fromkeys(c for r in results.values() for c in r))
    print("\n| detector | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for d in dets:
        label = d.name if d.name == d.key else f"{d.name} ({d.key})"
        print(f"| {label} | " + " | ".join(results[d.name].get(c, "") for c in cols) + " |")
    return 0


if __name__ == "__main__":
    script_exit(main)
