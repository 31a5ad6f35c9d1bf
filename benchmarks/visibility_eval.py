"""How well the visibility net says what is hidden (issue #39): per-region ROC AUC and the masked-street-photo rule.

Per-region ROC AUC: label "region hidden" = its visibility < 0.5 in the ground-truth hidden mask
(:func:`partialface.geometry.regions.region_visibility`), score = 1 - predicted visibility; over the occluded faces
of a set, per occluder kind and pooled ("all"); "n/a" where a kind never (or always) hides a region. Sets:

- ``celeba-procedural``: held-out CelebA identities (aligned), each face with every procedural occluder
  (:func:`partialface.geometry.occlude.occlude`, its default size jittered by the seed), a MaskTheFace mask
  ("image") and a non-centred PartialLFW variant ("partial");
- ``celeba-realistic``: the realistic test (:mod:`partialface.evaluation.realistic`'s detection stage) on held-out
  CelebA photos: a realistic occluder put on the raw photo from MTCNN's landmarks on the clean photo, then
  detection, the best face and the alignment run on the occluded photo, as a user's would; truth: the occluder in
  the clean face's aligned frame; a photo whose subject the detector misses on the occluded photo is counted and
  left out;
- ``lfw-procedural`` / ``lfw-realistic`` (reporting only, never for choices): the same on LFW (aligned faces; raw
  photos, or the faces of a ``benchmark-occluded --realistic`` run, ``--lfw-realistic-store``);
- ``rwmfd``: real masked street photos: every face MTCNN detects, aligned; % with mouth visibility < 0.5, % with
  both eyes >= 0.5; and a contact sheet of faces with their 5 numbers. With ``benchmarks/data/rwmfd_mouth_by_eye.csv``
  (454 of the faces looked at by eye: masked, unmasked, not a face), also the share of the faces that wear a mask
  whose mouth comes out hidden (:func:`masked_by_eye`): the detections include bystanders without a mask, for whom
  "mouth visible" is the right answer.

    python benchmarks/visibility_eval.py \
        --weights partialface/models/weights/visibility-2026-12-07/visibility.safetensors \
        --celeba-test /tmp/pf/celeba-split/test --celeba-raw ../shared/data/celeba-train \
        --celeba-aligned /tmp/pf/celeba-aligned --lfw /tmp/pf/lfw-aligned --out /tmp/pf/vis-eval
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROCEDURAL = ("mask", "sunglasses", "hand", "object", "scarf", "cap", "face")


def aucs(pred: np.ndarray, hidden: np.ndarray) -> dict[str, float]:
    """Per-region AUC (NaN where one class only) of predictions (N, 5) against hidden masks (N, 160, 160)."""
    from partialface.training.visibility import region_aucs

    return region_aucs(pred, hidden)


def table(name: str, groups: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Print and return per-kind and pooled per-region AUCs of ``groups``: kind -> (pred (N, 5), hidden)."""
    from partialface.geometry.regions import REGIONS

    out = {k: aucs(p, h) for k, (p, h) in groups.items()}
    pred = np.concatenate([p for p, _ in groups.values()])
    hid = np.concatenate([h for _, h in groups.values()])
    out["all"] = aucs(pred, hid)
    print(f"\n{name}: per-region ROC AUC (hidden = visibility < 0.5; n faces)")
    print(f"{'kind':<14}{'n':>6}" + "".join(f"{r:>11}" for r in REGIONS))
    for k, row in out.items():
        n = len(hid) if k == "all" else len(groups[k][0])
        print(f"{k:<14}{n:>6}" + "".join(f"{'n/a':>11}" if np.isnan(v) else f"{v:>11.4f}" for v in row.values()))
    sys.stdout.flush()
    return out


def procedural_set(net: Any, faces: np.ndarray, masks_root: Path | None, seed: int) -> dict[str, Any]:
    """kind -> (pred, hidden) for every procedural kind, MaskTheFace ("image") and partial faces on ``faces``."""
    from partialface.geometry.occlude import masktheface_templates, occlude
    from partialface.geometry.template import FACTORS, GREY, PARTS, part_rect
    from partialface.models.visibility import predict_visibility

    groups: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n = len(faces)
    templates = masktheface_templates(masks_root) if masks_root is not None else []
    kinds = list(PROCEDURAL) + (["image"] if templates else []) + ["partial"]
    for kind in kinds:
        imgs, hid = np.empty_like(faces), np.empty((n, 160, 160), bool)
        rng = np.random.default_rng([seed, kinds.index(kind)])
        for i in range(n):
            if kind == "partial":
                part = PARTS[int(rng.integers(4))]
                r = part_rect(part, float(FACTORS[int(rng.integers(len(FACTORS)))])).clipped()
                h = np.ones((160, 160), bool)
                h[r.y1 : r.y2 + 1, r.x1 : r.x2 + 1] = False
                img = faces[i].copy()
                img[h] = GREY
            elif kind == "image":
                _, rgba, anchors = templates[int(rng.integers(len(templates)))]
                img, h = occlude(faces[i], "image", occluder=rgba, anchors=anchors, seed=seed * 100003 + i)
            else:
                other = faces[(i + 1 + int(rng.integers(n - 1))) % n] if kind == "face" else None
                img, h = occlude(faces[i], kind, seed=seed * 100003 + i, other=other)
            imgs[i], hid[i] = img, h
        groups[kind] = (predict_visibility(net, imgs), hid)
    return groups


def store_set(net: Any, store: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """The realistic test's occluded faces (a :class:`partialface.evaluation.realistic.FaceStore`): kind -> (pred,
    hidden in the clean face's aligned frame) over the photos done whose subject the detector found on the occluded
    photo; and kind -> photos left out (no face, or not the subject)."""
    from partialface.models.visibility import predict_visibility

    groups, left = {}, {}
    for k, kind in enumerate(store.kinds):
        if kind == "whole":
            continue
        rows = np.flatnonzero(store.found[k, : store.done] & store.subject[k, : store.done])
        left[kind] = int(store.found[0, : store.done].sum() - len(rows))
        if not len(rows):
            continue
        imgs = np.ascontiguousarray(store.faces[kind][rows])
        groups[kind] = (predict_visibility(net, imgs), np.stack([store.hidden_mask(kind, int(i)) for i in rows]))
    return groups, left


def realistic_photos(net: Any, photos: list[Path], out: Path, masks_root: Path, seed: int
                     ) -> tuple[dict[str, Any], dict[str, int]]:
    """The realistic test's detection stage (:func:`partialface.evaluation.realistic.prepare_faces`: occluders on the
    raw photos, then MTCNN, the best face, the alignment) over ``photos`` into ``out`` (resumable), then
    :func:`store_set`."""
    from partialface.evaluation.realistic import prepare_faces
    from partialface.geometry.realistic import REALISTIC_KINDS, load_mask_templates

    store = prepare_faces(photos, out, kinds=REALISTIC_KINDS, masks=load_mask_templates(masks_root), seed=seed,
                          progress=False)
    return store_set(net, store)


def load_store(folder: Path) -> Any:
    """A realistic test's FaceStore from its ``OUT/faces`` folder (as far as it got)."""
    from partialface.evaluation.realistic import FaceStore

    with np.load(folder / "faces.npz", allow_pickle=False) as z:
        st = {k: z[k] for k in z.files}
    kinds = tuple(json.loads(str(st["meta"]))["kinds"])
    faces = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in kinds}
    return FaceStore(kinds, faces, st["found"], st["subject"], st["landmarks"], st["shift"], st["hidden"], st["what"],
                     int(st["done"]))


BY_EYE = Path(__file__).parent / "data" / "rwmfd_mouth_by_eye.csv"


def masked_by_eye(names: list[str], mouth_hidden: np.ndarray, labels: Path = BY_EYE) -> dict[str, Any] | None:
    """The mouth rule on the faces that wear a mask, from the look in ``labels`` (face, label M / U / X: masked,
    unmasked, not a face or cannot tell; weight: 1 for every face the shipped net called mouth-visible, all of
    them looked at, and 1,285 / 150 for a random 150 of those it called mouth-hidden): the stratified estimate of
    the share of masked faces whose mouth comes out hidden; None without the file or where the faces differ."""
    import csv

    if not labels.is_file():
        return None
    with labels.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    index = {n: i for i, n in enumerate(names)}
    if any(r["face"] not in index for r in rows):
        return None
    masked = [(float(r["weight"]), bool(mouth_hidden[index[r["face"]]])) for r in rows if r["label"] == "M"]
    total = sum(w for w, _ in masked)
    return {"labelled": len(rows), "masked_labelled": len(masked),
            "masked_mouth_hidden_pct": 100 * sum(w for w, h in masked if h) / total if total else float("nan")}


def rwmfd(net: Any, root: Path, sheet: Path, per_sheet: int = 48) -> dict[str, Any]:
    """The masked-street-photo rule on every face MTCNN finds under ``root``; writes a contact sheet."""
    from partialface.data.images import read_image
    from partialface.detect import detect_faces
    from partialface.geometry.align import align_face
    from partialface.models.visibility import predict_visibility

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    aligned, names = [], []
    unreadable = 0
    for p in files:
        try:
            img = read_image(p)
        except Exception:  # a broken photo is counted, not fatal
            unreadable += 1
            continue
        for j, f in enumerate(detect_faces(img)):
            aligned.append(align_face(img, f.landmarks))
            names.append(f"{p.relative_to(root)}#{j}")
    faces = np.stack(aligned)
    pred = predict_visibility(net, faces)
    mouth_hidden = pred[:, 3] < 0.5
    eyes_visible = (pred[:, 0] >= 0.5) & (pred[:, 1] >= 0.5)
    res: dict[str, Any] = {"photos": len(files), "unreadable": unreadable, "faces": len(faces),
           "mouth_hidden_pct": 100 * float(mouth_hidden.mean()),
           "both_eyes_visible_pct": 100 * float(eyes_visible.mean()),
           "nose_hidden_pct": 100 * float((pred[:, 2] < 0.5).mean())}
    best = np.array([n.endswith("#0") for n in names])  # each photo's best face (largest, most central)
    res["best_faces"] = int(best.sum())
    res["best_mouth_hidden_pct"] = 100 * float(mouth_hidden[best].mean())
    res["best_both_eyes_visible_pct"] = 100 * float(eyes_visible[best].mean())
    print(f"\nrwmfd: {res['faces']:,} faces detected in {res['photos']:,} photos; mouth hidden (< 0.5) "
          f"{res['mouth_hidden_pct']:.1f} %, both eyes visible (>= 0.5) {res['both_eyes_visible_pct']:.1f} %, "
          f"nose hidden {res['nose_hidden_pct']:.1f} %; each photo's best face only ({res['best_faces']:,}): mouth "
          f"hidden {res['best_mouth_hidden_pct']:.1f} %, both eyes visible {res['best_both_eyes_visible_pct']:.1f} %")
    eye = masked_by_eye(names, mouth_hidden)
    if eye is not None:
        res["by_eye"] = eye
        print(f"by eye ({BY_EYE.name}: {eye['labelled']} faces looked at, {eye['masked_labelled']} wearing a mask): of "
              f"the detected faces that wear a mask, the mouth comes out hidden for "
              f"{eye['masked_mouth_hidden_pct']:.1f} % (stratified estimate)")
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(faces), min(per_sheet, len(faces)), replace=False))
    contact_sheet(faces[pick], pred[pick], sheet)
    fails = np.nonzero(~mouth_hidden | ~eyes_visible)[0][:per_sheet]
    if len(fails):
        contact_sheet(faces[fails], pred[fails], sheet.with_name(sheet.stem + "_failures.png"))
    res["failures"] = [names[i] for i in fails]
    return res


def contact_sheet(faces: np.ndarray, pred: np.ndarray, path: Path, cols: int = 8) -> None:
    """A PNG grid of faces (N, 160, 160, 3), each with its 5 numbers (lE rE N M R) under it; red = < 0.5."""
    from partialface.data.images import atomic_write_bytes

    n = len(faces)
    rows = -(-n // cols)
    cell_h = 160 + 22
    sheet = np.full((rows * cell_h, cols * 160, 3), 255, np.uint8)
    for i in range(n):
        y, x = (i // cols) * cell_h, (i % cols) * 160
        sheet[y : y + 160, x : x + 160] = faces[i][:, :, ::-1]
        for r, v in enumerate(pred[i]):
            colour = (0, 0, 200) if v < 0.5 else (0, 120, 0)
            cv2.putText(sheet, f"{v:.2f}", (x + 2 + 31 * r, y + 176), cv2.FONT_HERSHEY_SIMPLEX, 0.36, colour, 1,
                        cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", sheet)
    if ok:
        atomic_write_bytes(path, buf.tobytes())


def read_aligned(folder: Path, n: int, seed: int) -> np.ndarray:
    """``n`` random aligned faces (N, 160, 160, 3) uint8 under ``folder`` (all if fewer)."""
    from partialface.training.visibility import list_faces, read_faces

    files = list_faces(folder)
    pick = np.random.default_rng(seed).choice(len(files), min(n, len(files)), replace=False)
    return read_faces([files[i] for i in sorted(pick)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="partialface/models/weights/visibility-2026-12-07/visibility.safetensors")
    parser.add_argument("--celeba-test", type=Path, help="held-out aligned CelebA faces (split's test/)")
    parser.add_argument("--celeba-raw", type=Path, default=SHARED / "celeba-train",
                        help="the raw CelebA photos (for the realistic test on photos)")
    parser.add_argument("--lfw", type=Path, help="LFW aligned faces (reporting only)")
    parser.add_argument("--lfw-raw", type=Path, default=SHARED / "lfw" / "lfw-deepfunneled",
                        help="LFW's raw photos, for the realistic test on a sample of them (reporting only)")
    parser.add_argument("--lfw-realistic-store", type=Path, default=None,
                        help="OUT/faces of a `benchmark-occluded --realistic` run on LFW: score its occluded faces")
    parser.add_argument("--masks", type=Path, default=SHARED / "occluders" / "masktheface")
    parser.add_argument("--rwmfd", type=Path, default=SHARED / "occluders" / "rwmfd")
    parser.add_argument("--n", type=int, default=400, help="faces per procedural set (default 400)")
    parser.add_argument("--n-realistic", type=int, default=200, help="faces / photos per realistic set (default 200)")
    parser.add_argument("--sets", default="celeba-procedural,celeba-realistic,lfw-procedural,lfw-realistic,rwmfd")
    parser.add_argument("--out", type=Path, default=Path("runs/visibility-eval"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from partialface.models.visibility import load_visibility

    torch.set_num_threads(args.threads)
    net = load_visibility(args.weights)
    masks = args.masks if (args.masks / "masks" / "masks.cfg").is_file() else None
    sets = args.sets.split(",")
    results: dict[str, Any] = {"weights": str(args.weights)}
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.celeba_test and "celeba-procedural" in sets:
        faces = read_aligned(args.celeba_test, args.n, args.seed)
        results["celeba-procedural"] = table("celeba-procedural (held-out identities)",
                                             procedural_set(net, faces, masks, args.seed))
    if args.celeba_test and "celeba-realistic" in sets and masks is not None:
        names = args.celeba_test / "names.tsv"
        rows = [r.split("\t") for r in names.read_text().splitlines() if r and not r.startswith("#")]
        src = [args.celeba_raw / Path(s).with_suffix(".jpg") for _, s in rows]
        src = [p for p in src if p.is_file()]
        pick = np.random.default_rng(args.seed).choice(len(src), min(args.n_realistic, len(src)), replace=False)
        groups, left = realistic_photos(net, [src[i] for i in sorted(pick)], args.out / "celeba-realistic-faces",
                                        masks, args.seed)
        results["celeba-realistic"] = table("celeba-realistic: the realistic test on held-out CelebA photos", groups)
        results["celeba-realistic-left-out"] = left
        print(f"photos left out (subject not found on the occluded photo): {left}")
    if args.lfw and "lfw-procedural" in sets:
        faces = read_aligned(args.lfw, args.n, args.seed)
        results["lfw-procedural"] = table("lfw-procedural (reporting only)",
                                          procedural_set(net, faces, masks, args.seed))
    if "lfw-realistic" in sets and (args.lfw_realistic_store or (args.lfw_raw and masks is not None)):
        if args.lfw_realistic_store:  # a finished (or running) `benchmark-occluded --realistic` on LFW: its faces
            groups, left = store_set(net, load_store(args.lfw_realistic_store))
        else:
            photos = sorted(args.lfw_raw.rglob("*.jpg"))
            pick = np.random.default_rng(args.seed).choice(len(photos), min(args.n_realistic, len(photos)),
                                                           replace=False)
            assert masks is not None
            groups, left = realistic_photos(net, [photos[i] for i in sorted(pick)], args.out / "lfw-realistic-faces",
                                            masks, args.seed)
        results["lfw-realistic"] = table("lfw-realistic: the realistic test on LFW photos (reporting only)", groups)
        results["lfw-realistic-left-out"] = left
        print(f"photos left out (subject not found on the occluded photo): {left}")
    if "rwmfd" in sets and args.rwmfd.is_dir():
        results["rwmfd"] = rwmfd(net, args.rwmfd, args.out / "rwmfd_sheet.png")
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"\n{time.perf_counter() - t0:.0f} s; results in {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
