"""Choosing the default on held-out identities (issue #39 item 5): whole, realistic-occluded and cropped faces.

Every aligned face of the held-out identity folders (never LFW) in the six states of
:func:`partialface.evaluation.calibrate_auto.make_states` (whole; a real mask, sunglasses, a hand, a photo crop;
one non-centred PartialLFW part at factor 0.3), at each image quality of
:data:`partialface.evaluation.calibrate_auto.QUALITIES`, compared with every other whole face (whole against whole
once per pair). Per model, state and quality: TAR at FAR 1e-3 and 1e-2 (each state's threshold from its own
impostor pairs) with the TAR's standard error sqrt(p (1 - p) / genuine pairs), and ROC AUC.

The rule (stated before the figures): a candidate replaces the reference (the first ``--model``) only where its
TAR at 1e-3 is above the reference's on the occluded states' mean *and* no state, at either quality, is below the
reference's by more than two standard errors.

    .venv/bin/python benchmarks/heldout_realistic.py --data HELD_OUT_ALIGNED \
        --masks ../shared/data/occluders/masktheface --model sface=FILE \
        --model sface-400 [--model NAME=FILE ...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from partialface.data.folders import identity_folders
from partialface.data.images import read_image
from partialface.errors import script_exit
from partialface.evaluation.calibrate import threshold_at_far
from partialface.evaluation.calibrate_auto import QUALITIES, STATES, degrade, make_states
from partialface.evaluation.embed import load_embedder
from partialface.evaluation.embedders import embed_faces, parse_model_spec
from partialface.geometry.realistic import load_mask_templates
from partialface.inference.hardware import cpu_info
from partialface.metrics import roc_auc

FARS = (1e-3, 1e-2)



def state_figures(e_state: np.ndarray, e_whole: np.ndarray, labels: np.ndarray, whole: bool) -> dict[str, float]:
    """{tar@far, se@far, auc, genuine, impostor} of the pairs (state face i, whole face j), i != j."""
    n = len(labels)
    s = e_state @ e_whole.T
    i, j = np.triu_indices(n, k=1) if whole else np.nonzero(~np.eye(n, dtype=bool))
    sc, same = s[i, j], labels[i] == labels[j]
    gen, imp = sc[same], sc[~same]
    out: dict[str, float] = {"genuine": len(gen), "impostor": len(imp), "auc": roc_auc(sc, same)}
    for far in FARS:
        p = float((gen >= threshold_at_far(imp, far)).mean())
        out[f"tar@{far:g}"], out[f"se@{far:g}"] = p, float(np.sqrt(p * (1 - p) / len(gen)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="held-out aligned identity folders")
    ap.add_argument("--masks", type=Path, required=True, help="MaskTheFace's folder")
    ap.add_argument("--model", action="append", required=True,
                    help="NAME or NAME=FILE, repeated; the first is the reference")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="a --json file of an earlier run on the same data: its models are not embedded again")
    args = ap.parse_args()
    masks = load_mask_templates(args.masks)
    specs = [parse_model_spec(m) for m in args.model]
    embedders = {name: load_embedder(spec, torch.device("cpu")) for name, spec in specs}  # every model before the work
    folders = identity_folders(args.data)
    labels = np.array([c for _, c in folders.samples])
    faces = np.stack([read_image(folders.root / rel) for rel, _ in folders.samples])
    t0 = time.time()
    states = make_states(faces, masks, seed=0)
    shown = {q: {s: degrade(x, q) for s, x in states.items()} for q in QUALITIES}
    earlier = json.loads(args.reuse.read_text()) if args.reuse else {}
    res: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for name, emb in tqdm(embedders.items(), desc="models", unit="model"):
        if name in earlier:
            res[name] = earlier[name]
            continue
        res[name] = {}
        for q in QUALITIES:
            e = {s: embed_faces(emb, x) for s, x in shown[q].items()}
            res[name][q] = {s: state_figures(e[s], e["whole"], labels, s == "whole") for s in STATES}
    print(f"{len(folders.classes)} held-out identities, {len(labels)} faces; {cpu_info().describe()}; "
          f"{time.time() - t0:.0f} s")
    print("TAR % at FAR 1e-3 (± one standard error), state against whole faces:\n")
    print("| model | quality | " + " | ".join(STATES) + " | occluded mean |")
    print("|---|---|" + "---:|" * (len(STATES) + 1))
    occluded = [s for s in STATES if s != "whole"]
    for name, by_q in res.items():
        for q, r in by_q.items():
            cells = " | ".join(f"{100 * r[s]['tar@0.001']:.2f} ±{100 * r[s]['se@0.001']:.2f}" for s in STATES)
            mean = np.mean([r[s]["tar@0.001"] for s in occluded])
            print(f"| {name} | {q} | {cells} | {100 * mean:.2f} |")
    ref = next(iter(res))
    print(f"\nthe rule against {ref}:")
    for name in list(res)[1:]:
        worse = [f"{s}/{q}" for q in QUALITIES for s in STATES
                 if res[name][q][s]["tar@0.001"] < res[ref][q][s]["tar@0.001"] - 2 * res[ref][q][s]["se@0.001"]]
        gain = np.mean([res[name][q][s]["tar@0.001"] - res[ref][q][s]["tar@0.001"]
                        for q in QUALITIES for s in occluded])
        ok = gain > 0 and not worse
        print(f"  {name}: occluded mean {100 * gain:+.2f} points; below by > 2 SE on: {', '.join(worse) or 'none'}"
              f" -> {'replaces' if ok else 'does not replace'} {ref}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    script_exit(main)
