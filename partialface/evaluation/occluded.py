"""The occlusion suite (issue #16): ``partialface benchmark-occluded``, PartialLFW's convention on occluded faces.

For each occluder kind (:mod:`partialface.geometry.occlude`) and coverage level, on any pairs file:

- **occluded-holistic**: one image of a pair occluded, the other whole, in both orders (each pair scored
  twice, as PartialLFW's partial-holistic);
- **occluded-occluded**: both images occluded by the same kind, each with its own look.

Image i of the pairs' sorted image list wears look ``i % looks`` of the kind's :class:`OccluderBank` (drawn once
on the template's landmarks, seed ``--seed``), so a face's occluder is fixed for a given pairs file. Kind
"face" puts in front of image i the face of another identity: the image half the list away (the next one
whose identity differs). Scores, 10-fold accuracy and the other metrics are the benchmark's
(:func:`partialface.metrics.score_benchmark`); a kind's number is the mean over its coverage levels, and the
suite's is the mean over kinds. Embeddings are cached per model (``OUT/embeddings``), one array per kind and
level, written as soon as it is done (an interrupted run resumes at the next one).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partialface.errors import PartialFaceError
from partialface.geometry.occlude import KINDS, OccluderBank

SUITE_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k != "image")
COVERAGES: tuple[float, ...] = (0.2, 0.3, 0.4)
PROTOCOLS = ("occluded-holistic", "occluded-occluded")
#: changes whenever the banks' drawing or the look assignment changes (part of the cache's identity)
SUITE_VERSION = "occluded-v1"


def _others(keys: Sequence[str]) -> np.ndarray:
    """Row of the face in front of each image for kind "face": half the list away, a different identity."""
    ids = [k.split("/")[0] for k in keys]
    n, out = len(keys), np.zeros(len(keys), dtype=np.int64)
    for i in range(n):
        j = (i + n // 2) % n
        for _ in range(n):
            if ids[j] != ids[i]:
                break
            j = (j + 1) % n
        out[i] = j
    return out


def _embed_occluded(embedder: Any, paths: Sequence[Path], bank: OccluderBank, others: np.ndarray, batch_size: int,
                    workers: int) -> np.ndarray:
    """(N, D) float32 L2-normalised embeddings of the faces ``paths`` under ``bank`` (look i % looks)."""
    from partialface.evaluation.embed import decode_aligned, prefetch_batches

    out = np.zeros((len(paths), embedder.embedding_dim), np.float32)
    for start, batch in prefetch_batches(list(paths), batch_size, workers):
        rows = np.arange(start, start + len(batch))
        front = np.stack([decode_aligned(paths[int(j)]) for j in others[rows]]) if bank.kind == "face" else None
        occ = bank.apply(batch, rows, front)
        x = torch.from_numpy(occ).to(embedder.device).permute(0, 3, 1, 2)
        with torch.inference_mode():
            f = torch.nn.functional.normalize(embedder(x).float(), dim=1)
        out[start : start + len(batch)] = f.cpu().numpy()
    return out


def _cache(path: Path, meta: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["meta"]) != meta:
                print(f"note: {path} was made by other weights or settings; embedding again", file=sys.stderr)
                return {}
            return {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError):
        return {}


def run_occluded_benchmark(
    models: Sequence[str], data: str | os.PathLike[str], pairs_file: str | os.PathLike[str],
    out: str | os.PathLike[str], *, kinds: Sequence[str] = SUITE_KINDS, coverages: Sequence[float] = COVERAGES,
    looks: int = 61, seed: int = 0, device: str = "auto", infer: str | None = None, batch_size: int = 128,
    workers: int = 2, progress: bool = True,
) -> dict[str, Any]:
    """Score ``models`` on the suite (module docstring) over the aligned LFW-layout folder ``data``; writes
    ``out``/occluded.json, occluded.md and a figure of accuracy against coverage; returns the json's content.
    ``infer``: the inference path (``partialface benchmark --infer``; default the exact float32 one)."""
    from tqdm import tqdm

    from partialface.data.images import atomic_write_bytes
    from partialface.data.lfw import read_pairs, resolve_images
    from partialface.devices import resolve_device
    from partialface.evaluation.embed import cache_name, embed_dataset, load_embedder, save_npz
    from partialface.geometry.partial import Variant
    from partialface.metrics import cosine_scores, score_benchmark

    bad = [k for k in kinds if k not in SUITE_KINDS]
    if bad:
        raise PartialFaceError(f"--kinds {bad[0]}: choose from {', '.join(SUITE_KINDS)}")
    if any(not 0 < c < 1 for c in coverages) or not coverages:
        raise PartialFaceError("--coverages: give levels in (0, 1), e.g. 0.2,0.3,0.4")
    pairs = read_pairs(pairs_file)
    found = resolve_images(pairs, Path(data), suffixes=(".png",))
    dev = resolve_device(device)
    embedders = [load_embedder(m, dev, infer=infer) for m in models]  # every model checked before the long work
    banks = {(k, c): OccluderBank(k, c, looks, seed) for k in kinds for c in coverages}
    keys = pairs.images()
    paths = [found[k] for k in keys]
    index = pairs.image_index()
    a = np.array([index[p.a] for p in pairs.pairs])
    b = np.array([index[p.b] for p in pairs.pairs])
    same = np.array([p.same for p in pairs.pairs])
    fold = np.array([p.fold for p in pairs.pairs])
    others = _others(keys)
    out_p = Path(out)
    rows: list[dict[str, Any]] = []
    for emb in embedders:
        base = out_p / "embeddings" / cache_name(emb.name)
        # (not with_suffix: a name like "m-p0.5" would lose ".5" and share "m-p0"'s file)
        hol = embed_dataset(emb, keys, paths, [Variant()], base.with_name(base.name + ".npz"), batch_size=batch_size,
                            workers=workers, progress=progress)["holistic"]
        meta = json.dumps({"fingerprint": emb.fingerprint, "keys": len(keys), "looks": looks, "seed": seed,
                           "version": SUITE_VERSION})
        cache_file = base.with_name(base.name + "-occluded.npz")
        have = _cache(cache_file, meta)
        for (kind, cov), bank in tqdm(banks.items(), desc=f"occluded {emb.name}", disable=not progress):
            name = f"{kind}/{cov:g}"
            if name not in have:
                have[name] = _embed_occluded(emb, paths, bank, others, batch_size, workers)
                save_npz(cache_file, {"meta": np.array(meta), **have})
            occ = have[name]
            for protocol in PROTOCOLS:
                if protocol == "occluded-holistic":
                    s = np.concatenate([cosine_scores(occ[a], hol[b]), cosine_scores(hol[a], occ[b])])
                    y, f = np.concatenate([same, same]), np.concatenate([fold, fold])
                else:
                    s, y, f = cosine_scores(occ[a], occ[b]), same, fold
                m = score_benchmark(s, y, f).as_dict()
                rows.append({"model": emb.name, "protocol": protocol, "kind": kind, "coverage": cov, "pairs": len(s),
                             **{k: m[k] for k in ("accuracy", "accuracy_std", "auc", "eer")}})
        h = score_benchmark(cosine_scores(hol[a], hol[b]), same, fold).as_dict()
        rows.append({"model": emb.name, "protocol": "holistic", "kind": "none", "coverage": 0.0, "pairs": len(a),
                     **{k: h[k] for k in ("accuracy", "accuracy_std", "auc", "eer")}})
    result = {"convention": (__doc__ or "").strip(), "pairs_file": str(pairs_file), "data": str(data),
              "looks": looks, "seed": seed, "rows": rows}
    out_p.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_p / "occluded.json", json.dumps(result, indent=1).encode("utf-8"))
    atomic_write_bytes(out_p / "occluded.md", occluded_markdown(rows).encode("utf-8"))
    _figure(rows, out_p / "occluded_accuracy_vs_coverage.png")
    return result


def occluded_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One table per protocol: a row per model and kind, accuracy (%) at each coverage and their mean; then the
    mean over kinds."""
    lines: list[str] = []
    models = list(dict.fromkeys(r["model"] for r in rows))
    for protocol in PROTOCOLS:
        sel = [r for r in rows if r["protocol"] == protocol]
        covs = sorted({r["coverage"] for r in sel})
        lines += [f"**{protocol}** (10-fold accuracy %, mean ± fold std)", "",
                  "| model | occluder | " + " | ".join(f"coverage {c:g}" for c in covs) + " | mean |",
                  "|" + "---|" * (len(covs) + 3)]
        for model in models:
            kinds = list(dict.fromkeys(r["kind"] for r in sel if r["model"] == model))
            means = []
            for kind in kinds:
                cells = {r["coverage"]: r for r in sel if r["model"] == model and r["kind"] == kind}
                mean = float(np.mean([cells[c]["accuracy"] for c in covs]))
                means.append(mean)
                lines.append(f"| {model} | {kind} | " + " | ".join(
                    f"{cells[c]['accuracy']:.2f} ± {cells[c]['accuracy_std']:.2f}" for c in covs) + f" | {mean:.2f} |")
            lines.append(f"| {model} | **mean over kinds** | " + " | ".join("" for _ in covs) +
                         f" | **{np.mean(means):.2f}** |")
        lines.append("")
    hol = [r for r in rows if r["protocol"] == "holistic"]
    if hol:
        lines.append("Holistic (no occluder): " + ", ".join(
            f"{r['model']} {r['accuracy']:.2f} ± {r['accuracy_std']:.2f}" for r in hol))
    return "\n".join(lines) + "\n"


def _figure(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from partialface.data.images import atomic_write_bytes

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, protocol in zip(axes, PROTOCOLS, strict=True):
        for model in dict.fromkeys(r["model"] for r in rows):
            for kind in dict.fromkeys(r["kind"] for r in rows if r["protocol"] == protocol):
                sel = sorted((r for r in rows if r["protocol"] == protocol and r["model"] == model
                              and r["kind"] == kind), key=lambda r: r["coverage"])
                ax.plot([r["coverage"] for r in sel], [r["accuracy"] for r in sel], marker="o",
                        label=f"{model} {kind}")
        ax.set(title=protocol, xlabel="coverage of the face area", ylabel="10-fold accuracy (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
