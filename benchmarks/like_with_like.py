"""Like with like (issue #39): when one face of a pair is occluded, does comparing on what both show help?

On held-out identities (aligned identity folders, never LFW): each face i is occluded by each realistic kind
(:func:`partialface.evaluation.calibrate_auto.make_states`, seed = i) and compared with whole faces j: all of its
identity's other faces (genuine) and ``--impostors`` faces of other identities (seeded). Two scores per pair:

- plain: cos(f(occluded i), f(whole j));
- like with like: cos(f(occluded i), f(whole j with the cells the visibility network finds hidden in i greyed
  out)) — the occluder's mask carried to the other face through the template (both faces are aligned to it).

Per kind: TAR at FAR 1e-3 and 1e-2 (each method's threshold from its own impostor pairs) and ROC AUC. Prints a
short table; the choice of the facade's default is made on these held-out figures.

    .venv/bin/python benchmarks/like_with_like.py --data HELD_OUT_ALIGNED --masks ../shared/data/occluders/masktheface \
        [--model sface-400] [--visibility FILE] [--faces 600] [--impostors 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from partialface.data.folders import identity_folders
from partialface.data.images import read_image
from partialface.errors import PartialFaceError, script_exit
from partialface.evaluation.calibrate import threshold_at_far
from partialface.evaluation.calibrate_auto import make_states
from partialface.evaluation.embed import load_embedder
from partialface.evaluation.embedders import embed_faces
from partialface.geometry.realistic import load_mask_templates
from partialface.metrics import roc_auc
from partialface.models.catalogue import visibility_file
from partialface.models.visibility import VisibilityNet, load_visibility


def _hidden(net: VisibilityNet, faces: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, 160, 160) bool: the cells of the visibility network's map more likely hidden than visible."""
    out = []
    for i in range(0, len(faces), batch):
        with torch.inference_mode():
            _, logits = net.maps(torch.from_numpy(np.ascontiguousarray(faces[i : i + batch])))
        cells = (logits < 0).numpy()  # sigmoid < 0.5
        k = 160 // cells.shape[-1]
        out.append(cells.repeat(k, axis=1).repeat(k, axis=2))
    return np.concatenate(out)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="held-out aligned identity folders")
    ap.add_argument("--masks", type=Path, required=True, help="MaskTheFace's folder")
    ap.add_argument("--model", default="sface-400")
    ap.add_argument("--visibility", type=Path, default=None, help="visibility network (default: the shipped one)")
    ap.add_argument("--faces", type=int, default=600, help="occluded faces per kind (default 600)")
    ap.add_argument("--impostors", type=int, default=10, help="impostor partners per face (default 10)")
    args = ap.parse_args()
    masks = load_mask_templates(args.masks)
    vis_path = args.visibility or visibility_file()
    if vis_path is None:
        raise PartialFaceError("--visibility: the shipped visibility network is missing; give a file")
    net = load_visibility(vis_path)
    emb = load_embedder(args.model, torch.device("cpu"))
    folders = identity_folders(args.data)
    labels = np.array([c for _, c in folders.samples])
    rng = np.random.default_rng(0)
    keep = np.sort(rng.permutation(len(labels))[: args.faces])
    faces = np.stack([read_image(folders.root / folders.samples[i][0]) for i in keep])
    lab = labels[keep]
    t0 = time.perf_counter()
    states = make_states(faces, masks)
    whole = embed_faces(emb, faces)
    print(f"{len(faces)} faces of {len(set(lab))} identities; model {args.model}")
    print("| kind | method | TAR@1e-3 | TAR@1e-2 | AUC |\n|---|---|---:|---:|---:|")
    for kind in ("mask", "sunglasses", "hand", "crop", "partial"):
        occ = states[kind]
        f_occ = embed_faces(emb, occ)
        hidden = _hidden(net, occ)  # (N, 160, 160) bool
        pairs = []
        for i in range(len(faces)):
            gen = np.flatnonzero((lab == lab[i]) & (np.arange(len(lab)) != i))
            others = np.flatnonzero(lab != lab[i])
            imp = rng.choice(others, size=min(args.impostors, len(others)), replace=False)
            pairs += [(i, j, True) for j in gen] + [(i, j, False) for j in imp]
        a = np.array([p[0] for p in pairs])
        b = np.array([p[1] for p in pairs])
        y = np.array([p[2] for p in pairs])
        greyed = faces[b].copy()
        greyed[hidden[a]] = 128
        plain = (f_occ[a] * whole[b]).sum(1)
        lwl = (f_occ[a] * embed_faces(emb, greyed)).sum(1)
        for name, s in (("plain", plain), ("like with like", lwl)):
            tars = [float((s[y] >= threshold_at_far(s[~y], far)).mean()) for far in (1e-3, 1e-2)]
            print(f"| {kind} | {name} | {100 * tars[0]:.2f} | {100 * tars[1]:.2f} | {roc_auc(s, y):.4f} |")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    script_exit(main)
