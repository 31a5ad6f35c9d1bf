"""The realistic occlusion test (issue #39): ``partialface benchmark-occluded --realistic``.

Every image of a pairs file is a raw photo (LFW layout, ``.jpg``). For each occluder kind of
:mod:`partialface.geometry.realistic` (a real mask image, sunglasses, a hand, a photo crop) each photo gets its own
occluder (seed ``seed * 1000003 + i`` for image i of the sorted image list), laid on the face that MTCNN finds on
the clean photo, *before* detection. Then the whole pipeline runs on the occluded photo as a user's would:
MTCNN (the spec's settings), the best face by the spec's rule (largest, most central), the benchmark's
alignment, the model. The clean photos go through the same pipeline (kind ``whole``).

Pairs and scoring, as #16's suite and PartialLFW's partial-holistic: **occluded-holistic** = one image of a pair
occluded, the other whole, in both orders (each pair scored twice); kind ``whole`` = both whole. A face the
detector does not find cannot be compared: its pairs score -1 (a non-match, as a user's ``verify`` says
"no face found"). 10-fold accuracy, ROC AUC etc. are the benchmark's (:func:`partialface.metrics.score_benchmark`).
At a model's operating points (the threshold for FAR 1e-3 of the kind a user would choose: ``holistic`` for
whole pairs, ``partial`` for occluded ones, and the holistic one for all, the single-threshold default) the
report gives the real FAR (impostor pairs with both faces found, accepted) and the TAR (genuine pairs accepted;
a missed face is a rejection).

Detection (model-independent) is cached in ``OUT/faces``: the aligned faces of each kind as (N, 160, 160, 3) uint8
``.npy`` files, and ``faces.npz`` (found, landmarks, boxes, whether the face found is the photo's subject, the
landmark shift in eye distances, the ground-truth hidden area in the clean face's aligned frame, bit-packed),
written after every chunk of photos: an interrupted run resumes. Embeddings are cached per model
(``OUT/embeddings/<model>-realistic.npz``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialface.errors import PartialFaceError
from partialface.geometry.realistic import REALISTIC_KINDS, MaskTemplate

#: part of every cache's identity: changes whenever the occluders, the seeding or the face selection change
REALISTIC_VERSION = "realistic-v1"
#: photos per resumable chunk of the detection stage
CHUNK = 128
NOMINAL_FAR = 1e-3


@dataclass
class FaceStore:
    """The detection stage's output for kinds ``kinds`` (``whole`` first) over ``n`` photos: ``faces[kind]`` (N, 160,
    160, 3) uint8 (zeros where no face was found), ``found`` / ``subject`` (K, N) bool, ``landmarks`` (K, N, 5, 2),
    ``shift`` (K, N) landmark shift in eye distances (nan where not found), ``hidden`` (K, N, 3200) uint8 packed
    (160, 160) bool ground truth, ``what`` (K, N) the occluder drawn."""

    kinds: tuple[str, ...]
    faces: dict[str, np.ndarray]
    found: np.ndarray
    subject: np.ndarray
    landmarks: np.ndarray
    shift: np.ndarray
    hidden: np.ndarray
    what: np.ndarray
    done: int

    def hidden_mask(self, kind: str, i: int) -> np.ndarray:
        """(160, 160) bool: what the occluder of photo i hides, in its clean face's aligned frame."""
        k = self.kinds.index(kind)
        return np.unpackbits(self.hidden[k, i])[: 160 * 160].reshape(160, 160).astype(bool)


def _subject_hit(box: Sequence[float], clean_box: Sequence[float], offset: tuple[int, int]) -> bool:
    """Whether a detected box (output photo pixels) is the subject: its centre inside the clean face's box."""
    cx = (box[0] + box[2]) / 2 + offset[0]
    cy = (box[1] + box[3]) / 2 + offset[1]
    return bool(clean_box[0] <= cx <= clean_box[2] and clean_box[1] <= cy <= clean_box[3])


def prepare_faces(
    paths: Sequence[Path], out: Path, *, kinds: Sequence[str], masks: dict[str, MaskTemplate] | None, seed: int,
    progress: bool = True,
) -> FaceStore:
    """Run the detection stage (module docstring) over ``paths`` (raw photos, the pairs' sorted images) into
    ``out`` (resumes where a previous call stopped); returns the store."""
    from tqdm import tqdm

    from partialface.data.images import atomic_write_bytes, read_image
    from partialface.detect import detect_faces_batch, selection_scores
    from partialface.evaluation.embed import save_npz
    from partialface.geometry.align import align_face
    from partialface.geometry.realistic import occlude_photo_realistic

    all_kinds = ("whole", *kinds)
    n, k = len(paths), len(all_kinds)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"version": REALISTIC_VERSION, "seed": seed, "kinds": all_kinds, "n": n,
                       "first": str(paths[0].name) if n else "", "last": str(paths[-1].name) if n else ""})
    info_file = out / "faces.npz"
    state: dict[str, np.ndarray] = {}
    if info_file.is_file():
        with np.load(info_file, allow_pickle=False) as z:
            if str(z["meta"]) == meta:
                state = {name: z[name] for name in z.files}
            else:
                print(f"note: {out} holds faces of other photos or settings; detecting again", file=sys.stderr)
    done = int(state["done"]) if state else 0
    if not state:
        state = {"found": np.zeros((k, n), bool), "subject": np.zeros((k, n), bool),
                 "landmarks": np.full((k, n, 5, 2), np.nan, np.float32), "shift": np.full((k, n), np.nan, np.float32),
                 "hidden": np.zeros((k, n, 3200), np.uint8), "what": np.full((k, n), "", dtype="<U40")}
    mode = "r+" if done else "w+"
    faces = {kind: np.lib.format.open_memmap(out / f"{kind}.npy", mode=mode, dtype=np.uint8, shape=(n, 160, 160, 3))
             for kind in all_kinds}
    bar = tqdm(total=n, initial=done, desc="realistic: occlude, detect, align", unit="photo", disable=not progress)
    for start in range(done, n, CHUNK):
        for i in range(start, min(n, start + CHUNK)):
            photo = read_image(paths[i])
            clean = detect_faces_batch([photo], device="cpu")[0]
            if clean:
                best = clean[int(np.argmax(selection_scores(np.array([f.box for f in clean]), photo.shape)))]
                ref = np.asarray(best.landmarks, np.float64).reshape(5, 2)
                occ = [occlude_photo_realistic(photo, ref, kind, seed=seed * 1000003 + i, masks=masks)
                       for kind in kinds]
                images = [o.photo for o in occ]
                found = [clean, *detect_faces_batch(images, device="cpu")]
                offsets = [(0, 0)] + [o.offset for o in occ]
                eye = float(np.linalg.norm(ref[1] - ref[0]))
                for j, o in enumerate(occ, start=1):
                    state["hidden"][j, i] = np.packbits(o.hidden_aligned.ravel())
                    state["what"][j, i] = o.what
                shots = [photo, *images]
                for j, fs in enumerate(found):
                    if not fs:
                        continue
                    pick = fs[int(np.argmax(selection_scores(np.array([f.box for f in fs]), shots[j].shape)))]
                    pts = np.asarray(pick.landmarks, np.float64).reshape(5, 2)
                    faces[all_kinds[j]][i] = align_face(shots[j], pts)
                    state["found"][j, i] = True
                    state["subject"][j, i] = _subject_hit(pick.box, best.box, offsets[j])
                    state["landmarks"][j, i] = pts
                    state["shift"][j, i] = np.linalg.norm(pts + np.array(offsets[j]) - ref, axis=1).mean() / eye
            bar.update(1)
        for arr in faces.values():
            arr.flush()
        state["done"] = np.array(min(n, start + CHUNK))
        save_npz(info_file, {"meta": np.array(meta), **state})
    bar.close()
    atomic_write_bytes(out / "README.txt", (__doc__ or "").encode("utf-8"))
    return FaceStore(all_kinds, {kk: np.load(out / f"{kk}.npy", mmap_mode="r") for kk in all_kinds},
                     state["found"], state["subject"], state["landmarks"], state["shift"], state["hidden"],
                     state["what"], int(state.get("done", n)))


def _embed_store(emb: Any, store: FaceStore, cache_file: Path, batch_size: int, progress: bool
                 ) -> dict[str, np.ndarray]:
    """{kind: (N, D) float32 L2-normalised embeddings} of the store's faces (rows not found: zeros), cached."""
    import torch
    from tqdm import tqdm

    from partialface.evaluation.embed import save_npz
    from partialface.evaluation.occluded import _cache

    meta = json.dumps({"fingerprint": emb.fingerprint, "version": REALISTIC_VERSION, "n": int(store.found.shape[1]),
                       "kinds": store.kinds})
    have = _cache(cache_file, meta)
    for k, kind in enumerate(store.kinds):
        if kind in have:
            continue
        rows = np.flatnonzero(store.found[k])
        out = np.zeros((store.found.shape[1], emb.embedding_dim), np.float32)
        for s in tqdm(range(0, len(rows), batch_size), desc=f"{emb.name} {kind}", disable=not progress):
            idx = rows[s : s + batch_size]
            x = torch.from_numpy(np.ascontiguousarray(store.faces[kind][idx])).to(emb.device).permute(0, 3, 1, 2)
            with torch.inference_mode():
                out[idx] = torch.nn.functional.normalize(emb(x).float(), dim=1).cpu().numpy()
        have[kind] = out
        save_npz(cache_file, {"meta": np.array(meta), **have})
    return have


def _rates(s: np.ndarray, y: np.ndarray, valid: np.ndarray, t: float) -> dict[str, float]:
    """Real FAR (impostor pairs with both faces found, accepted at t) and TAR (genuine pairs accepted)."""
    imp = ~y & valid
    return {"threshold": float(t), "far": float((s[imp] >= t).mean()) if imp.any() else float("nan"),
            "impostors": int(imp.sum()), "tar": float((s[y] >= t).mean()) if y.any() else float("nan")}


def run_realistic_benchmark(
    models: Sequence[str], data: str | os.PathLike[str], pairs_file: str | os.PathLike[str],
    out: str | os.PathLike[str], *, masks: str | os.PathLike[str], kinds: Sequence[str] = REALISTIC_KINDS,
    seed: int = 0, device: str = "auto", infer: str | None = None, batch_size: int = 128, progress: bool = True,
) -> dict[str, Any]:
    """Score ``models`` on the realistic test (module docstring) over the raw LFW-layout folder ``data``; writes
    ``out``/realistic.json and realistic.md; returns the json's content."""
    from partialface.data.images import atomic_write_bytes
    from partialface.data.lfw import read_pairs, resolve_images
    from partialface.devices import resolve_device
    from partialface.evaluation.calibrate import read_operating_points
    from partialface.evaluation.embed import cache_name, load_embedder
    from partialface.geometry.realistic import load_mask_templates
    from partialface.metrics import cosine_scores, score_benchmark
    from partialface.training.checkpoint import load_weights

    bad = [k for k in kinds if k not in REALISTIC_KINDS]
    if bad or not kinds:
        raise PartialFaceError(f"--kinds {bad[0] if bad else ''}: choose from {', '.join(REALISTIC_KINDS)}")
    templates = load_mask_templates(masks) if "mask" in kinds else None
    pairs = read_pairs(pairs_file)
    found = resolve_images(pairs, Path(data), suffixes=(".jpg", ".jpeg", ".png"))
    dev = resolve_device(device)
    embedders = [load_embedder(m, dev, infer=infer) for m in models]  # every model checked before the long work
    keys = pairs.images()
    out_p = Path(out)
    store = prepare_faces([found[k] for k in keys], out_p / "faces", kinds=kinds, masks=templates, seed=seed,
                          progress=progress)
    index = pairs.image_index()
    a = np.array([index[p.a] for p in pairs.pairs])
    b = np.array([index[p.b] for p in pairs.pairs])
    same = np.array([p.same for p in pairs.pairs])
    fold = np.array([p.fold for p in pairs.pairs])
    detection = {kind: {"found": float(store.found[j].mean()), "subject": float(store.subject[j].mean()),
                        "shift_median": float(np.nanmedian(store.shift[j])) if store.found[j].any() else None,
                        "shift_p90": float(np.nanpercentile(store.shift[j], 90)) if store.found[j].any() else None}
                 for j, kind in enumerate(store.kinds)}
    rows: list[dict[str, Any]] = []
    for emb in embedders:
        source = Path(getattr(emb, "source", "") or "")
        points = read_operating_points(load_weights(source)[1]) if source.suffix == ".safetensors" else None
        base = out_p / "embeddings" / cache_name(emb.name)
        e = _embed_store(emb, store, base.with_name(base.name + "-realistic.npz"), batch_size, progress)
        hol, hol_ok = e["whole"], store.found[0]
        for j, kind in enumerate(store.kinds):
            occ, ok = e[kind], store.found[j]
            if kind == "whole":
                s = np.where(hol_ok[a] & hol_ok[b], cosine_scores(hol[a], hol[b]), -1.0)
                y, f, valid = same, fold, hol_ok[a] & hol_ok[b]
            else:
                s = np.concatenate([np.where(ok[a] & hol_ok[b], cosine_scores(occ[a], hol[b]), -1.0),
                                    np.where(hol_ok[a] & ok[b], cosine_scores(hol[a], occ[b]), -1.0)])
                y, f = np.concatenate([same, same]), np.concatenate([fold, fold])
                valid = np.concatenate([ok[a] & hol_ok[b], hol_ok[a] & ok[b]])
            m = score_benchmark(s, y, f).as_dict()
            row: dict[str, Any] = {"model": emb.name, "kind": kind, "pairs": len(s), "compared": float(valid.mean()),
                                   **{k: m[k] for k in ("accuracy", "accuracy_std", "auc", "eer", "tar_far_1e3")}}
            if points is not None:
                row["single"] = _rates(s, y, valid, points.at(NOMINAL_FAR, "holistic"))
                row["by_kind"] = _rates(s, y, valid, points.at(NOMINAL_FAR, "holistic" if kind == "whole"
                                                                else "partial"))
            rows.append(row)
    result = {"convention": (__doc__ or "").strip(), "version": REALISTIC_VERSION, "pairs_file": str(pairs_file),
              "data": str(data), "seed": seed, "detection": detection, "rows": rows}
    atomic_write_bytes(out_p / "realistic.json", json.dumps(result, indent=1).encode("utf-8"))
    atomic_write_bytes(out_p / "realistic.md", realistic_markdown(result).encode("utf-8"))
    return result


def realistic_markdown(result: dict[str, Any]) -> str:
    """Detection per kind; then per model and kind: accuracy, AUC, and FAR / TAR at the operating points."""
    det = result["detection"]
    lines = ["**Detection** (MTCNN, the spec's settings; subject: the face used is the photo's own)", "",
             "| kind | face found | the subject | landmark shift median | 90th pct |", "|---|---:|---:|---:|---:|"]
    for kind, d in det.items():
        med = "—" if d["shift_median"] is None else f"{d['shift_median']:.3f}"
        p90 = "—" if d["shift_p90"] is None else f"{d['shift_p90']:.3f}"
        lines.append(f"| {kind} | {100 * d['found']:.1f} % | {100 * d['subject']:.1f} % | {med} | {p90} |")
    lines += ["", "**Verification** (occluded-holistic pairs in both orders; whole: both whole; 10-fold accuracy %, "
              f"FAR / TAR at the FAR {NOMINAL_FAR:g} threshold: single = holistic for every pair, by kind = partial "
              "for occluded pairs)", "",
              "| model | kind | accuracy | AUC | TAR@1e-3 | FAR single | TAR single | FAR by kind | TAR by kind |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        cells = []
        for key in ("single", "by_kind"):
            x = r.get(key)
            cells += ["—", "—"] if x is None else [f"{x['far']:.4f}", f"{100 * x['tar']:.2f}"]
        lines.append(f"| {r['model']} | {r['kind']} | {r['accuracy']:.2f} ± {r['accuracy_std']:.2f} | {r['auc']:.4f} | "
                     f"{100 * r['tar_far_1e3']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
