"""Does ``kind="auto"`` keep the real FAR near nominal on small, soft photos too? (issue #39)

Reads the realistic test's cached detection stage (``partialface benchmark-occluded --realistic --out OUT``:
``OUT/faces``) and scores LFW's pairs for some kinds twice: the aligned faces as they are, and every face of
every pair degraded to the calibration's ``low`` quality (``calibrate_auto.degrade``: 48 px, JPEG 60, scaled back:
a small, soft photo). Per kind and quality: the real FAR (impostor pairs with both faces found, accepted) and the
TAR at FAR 1e-3 of the single holistic threshold, of ``kind="auto"`` with the pooled levels only (the detail
unknown) and of ``kind="auto"`` with the levels for soft and sharp pairs (the default), with the share of sharp
pairs. The degradation is applied to the aligned face, not the raw photo (detection is not run again). Then the
same over every pair of different photos (``evaluation.realistic.all_pairs_rates``: tens of millions of impostor
pairs, so the real FAR comes with a tight interval).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/realistic_quality.py --out OUT --pairs ../shared/data/lfw/pairs.txt \
        [--model sface-real-1600] [--kinds whole,sunglasses]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from partialface.data.lfw import read_pairs
from partialface.errors import PartialFaceError, script_exit
from partialface.evaluation.calibrate import read_operating_points
from partialface.evaluation.calibrate_auto import auto_thresholds, degrade, detail_edge, face_detail, shared_visibility
from partialface.evaluation.embed import load_embedder
from partialface.evaluation.embedders import embed_faces
from partialface.evaluation.realistic import NOMINAL_FAR, PairSide, all_pairs_rates, far_multiple
from partialface.models.catalogue import shipped_model, visibility_file
from partialface.models.visibility import load_visibility, predict_visibility
from partialface.training.checkpoint import load_weights

FAR = NOMINAL_FAR



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="a `benchmark-occluded --realistic --out` folder")
    ap.add_argument("--pairs", type=Path, required=True, help="LFW's pairs.txt")
    ap.add_argument("--model", default="sface-real-1600", help="a shipped model's name or a model file")
    ap.add_argument("--kinds", default="whole,sunglasses")
    args = ap.parse_args()
    faces_dir = args.out / "faces"
    if not (faces_dir / "faces.npz").is_file():
        raise PartialFaceError(f"--out {args.out}: no faces/faces.npz (run benchmark-occluded --realistic first)")
    kinds = args.kinds.split(",")
    file = Path(args.model) if Path(args.model).is_file() else shipped_model(args.model)
    points = read_operating_points(load_weights(file)[1])
    edge = detail_edge(points)
    if points is None or edge is None:
        raise PartialFaceError(f"--model {args.model}: no levels for soft and sharp pairs (calibrate --auto)")
    emb = load_embedder(str(file), torch.device("cpu"))
    vis_file = visibility_file()
    assert vis_file is not None
    net = load_visibility(vis_file)
    with np.load(faces_dir / "faces.npz", allow_pickle=False) as z:
        found = z["found"]
    order = ("whole", "mask", "sunglasses", "hand", "crop")
    pairs = read_pairs(args.pairs)
    index = pairs.image_index()
    a = np.array([index[p.a] for p in pairs.pairs])
    b = np.array([index[p.b] for p in pairs.pairs])
    same = np.array([p.same for p in pairs.pairs])
    ident = np.array([k.split("/")[0] for k in pairs.images()])  # LFW layout: identity/image
    every: dict[tuple[str, str], list[dict]] = {}
    print(f"{file.name}: FAR {FAR:g}, threshold holistic {points.at(FAR, 'holistic'):.4f}, "
          f"detail edge {edge:.4f}")
    print("| quality | kind | sharp pairs | real FAR single | auto pooled | auto soft/sharp | TAR single | "
          "auto pooled | auto soft/sharp |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for quality in ("as-is", "low"):
        got: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for kind in dict.fromkeys(["whole", *kinds]):
            rows = np.flatnonzero(found[order.index(kind)])
            x = degrade(np.asarray(np.load(faces_dir / f"{kind}.npy", mmap_mode="r")[rows]), quality)
            e, v, d = np.zeros((found.shape[1], emb.embedding_dim), np.float32), np.ones((found.shape[1], 5)), \
                np.full(found.shape[1], np.nan)
            e[rows], v[rows], d[rows] = embed_faces(emb, x), predict_visibility(net, x), face_detail(x)
            got[kind] = (e, v, d)
        ok0 = found[0]
        for kind in kinds:
            ew, vw, dw = got["whole"]
            ek, vk, dk = got[kind]
            okk = found[order.index(kind)]
            if kind == "whole":
                s, y, valid = (ew[a] * ew[b]).sum(1), same, ok0[a] & ok0[b]
                share, det = shared_visibility(vw[a], vw[b]), np.minimum(dw[a], dw[b])
            else:
                s = np.concatenate([(ek[a] * ew[b]).sum(1), (ew[a] * ek[b]).sum(1)])
                y, valid = np.concatenate([same, same]), np.concatenate([okk[a] & ok0[b], ok0[a] & okk[b]])
                share = np.concatenate([shared_visibility(vk[a], vw[b]), shared_visibility(vw[a], vk[b])])
                det = np.concatenate([np.minimum(dk[a], dw[b]), np.minimum(dw[a], dk[b])])
            cols = [np.full(len(s), points.at(FAR, "holistic")), auto_thresholds(points, FAR, share),
                    auto_thresholds(points, FAR, share, det)]
            imp, gen = valid & ~y, y
            far = [f"{(s[imp] >= t[imp]).mean():.4f} ({int((s[imp] >= t[imp]).sum())})" for t in cols]
            tar = [f"{100 * ((s >= t) & valid)[gen].mean():.2f}" for t in cols]
            sharp = float((det[valid] >= edge).mean())
            print(f"| {quality} | {kind} | {100 * sharp:.0f} % | {' | '.join(far)} | {' | '.join(tar)} |")
            whole_side = PairSide(ew, ok0, vw, dw)
            side = whole_side if kind == "whole" else PairSide(ek, okk, vk, dk)
            every[(quality, kind)] = [all_pairs_rates(side, whole_side, ident, {"single": points.at(FAR, "holistic")},
                                                      points=points, same_images=kind == "whole")]
            pooled = PairSide(side.emb, side.found, side.vis, None)
            every[(quality, kind)].append(all_pairs_rates(pooled, PairSide(ew, ok0, vw, None), ident, {},
                                                          points=points, same_images=kind == "whole"))
    print("\nEvery pair of different photos (real FAR as a multiple of nominal, its 95 % interval; TAR %):\n")
    print("| quality | kind | impostor pairs | FAR single | auto pooled | auto soft/sharp | TAR single | auto pooled | "
          "auto soft/sharp |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (quality, kind), (full, pooled_r) in every.items():
        rates = [full["single"], pooled_r["auto"], full["auto"]]
        far = [far_multiple(x) for x in rates]
        print(f"| {quality} | {kind} | {full['impostors']:,} | {' | '.join(far)} | "
              + " | ".join(f"{100 * x['tar']:.2f}" for x in rates) + " |")


if __name__ == "__main__":
    script_exit(main)
