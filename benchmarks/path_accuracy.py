"""Accuracy of each inference path against eager float32 on real faces (issue #12's bar for reduced precision).

For each model and path: ``partialface benchmark`` on LFW holistic and the non-centred partial-holistic
protocol at factor 0.3 (the issue's bar: a reduced-precision path may move each by at most 0.1 point), its
accuracy, the change against the eager float32 path, the smallest and median cosine of its embeddings to
eager's (all faces, all variants). Each path scores into OUT/<model>-<path>, its own cache (a second run
reuses it; speed is bench_infer.py's job).

    .venv/bin/python benchmarks/path_accuracy.py --model dlib \
        --model ours=checkpoints/celeba-cpu-2026-11-27/ours.safetensors \
        --data runs/lfw-aligned --pairs ../shared/data/lfw/pairs.txt --out runs/path-accuracy
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from partialface.errors import script_exit


def main() -> None:
    from partialface.evaluation.benchmark import run_benchmark
    from partialface.evaluation.embed import cache_name
    from partialface.evaluation.embedders import parse_model_spec
    from partialface.inference.hardware import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True,
                    help="--model value of the benchmark (repeatable)")
    ap.add_argument("--data", type=Path, required=True, help="aligned LFW faces (partialface align)")
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--paths", default="eager,onnx,int8,bf16", help="paths; eager first (the reference)")
    ap.add_argument("--factor", type=float, default=0.3)
    args = ap.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    if paths[0] != "eager":
        paths.insert(0, "eager")
    print(f"# path_accuracy on {cpu_info().describe()}; {time.strftime('%Y-%m-%d')}; factor {args.factor}")
    print("| model | path | holistic | Δ | NC p-hol | Δ | min cos | median cos |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for spec in args.model:
        name = parse_model_spec(spec)[0]
        ref_acc: dict[str, float] = {}
        ref_emb: dict[str, np.ndarray] = {}
        for path in paths:
            out = args.out / f"{cache_name(name)}-{path}"
            res = run_benchmark([spec], args.data, args.pairs, out, aligned=True, factors=[args.factor],
                                settings=["non-centred"], protocols=["holistic", "partial-holistic"], infer=path,
                                progress=False, report=False)
            acc = {r["protocol"]: r["accuracy"] for r in res["protocols"]}
            with np.load(out / "embeddings" / f"{cache_name(name)}.npz") as z:
                emb = {k: z[k] for k in z.files if k not in ("keys", "meta")}
            if path == "eager":
                ref_acc, ref_emb = acc, emb
            cos = np.concatenate([(emb[k] * ref_emb[k]).sum(1) for k in ref_emb])
            h, p = acc["holistic"], acc["partial-holistic"]
            print(f"| {name} | {path} | {h:.2f} | {h - ref_acc['holistic']:+.2f} | {p:.2f} | "
                  f"{p - ref_acc['partial-holistic']:+.2f} | {cos.min():.5f} | {np.median(cos):.6f} |",
                  flush=True)


if __name__ == "__main__":
    script_exit(main)
