"""ONNX Runtime with and without the export forms (``partialface.inference.onnx_export.export_forms``).

Some modules export an exact rewrite of themselves that ONNX Runtime runs faster: SFace's conv + BN + PReLU
becomes two convs, ``a z + relu((1 - a) z)`` (``partialface.models.sface.SplitPReLU``). For each ``--model``
(a shipped name, run folder or .safetensors file) this exports the embedding graph twice, as the project
does and as the plain module, and runs both on the same random batch, alternately, ``--repeats`` times
(each graph warmed up first): the median images/s of each, their ratio, each graph's smallest cosine to
PyTorch float32, and how many PRelu nodes are left.

    .venv/bin/python benchmarks/bench_export_forms.py --model sface-400 --batch 64 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch

from partialface.errors import PartialFaceError, script_exit
from partialface.evaluation.embed import load_embedder
from partialface.evaluation.embedders import ModelEmbedder
from partialface.inference.hardware import cpu_info
from partialface.inference.onnx_export import export_bytes
from partialface.inference.runners import EmbeddingOf, OnnxRunner


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="repeatable (default: sface-400)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    print(f"# bench_export_forms: {cpu_info().describe()}; onnxruntime {ort.__version__}, {args.threads} threads, "
          f"batch {args.batch}, {time.strftime('%Y-%m-%d')}")
    print("| model | graph | PRelu nodes | img/s (median) | x plain | min cos to PyTorch |")
    print("|---|---|---:|---:|---:|---:|")
    for spec in args.model or ["sface-400"]:
        emb = load_embedder(spec, torch.device("cpu"), infer="eager")
        if not isinstance(emb, ModelEmbedder) or emb.module is None:
            raise PartialFaceError(f"--model {spec}: give a PyTorch model (a name, run folder or safetensors file)")
        module = EmbeddingOf(emb.module).float().eval()
        x = np.random.default_rng(0).uniform(0, 255, (args.batch, 3, emb.input_size, emb.input_size))
        x = x.astype(np.float32)
        with torch.inference_mode():
            ref = module(torch.from_numpy(x)).numpy()
        graphs = {"plain": export_bytes(module, emb.input_size, ["f"], forms=False),
                  "export forms": export_bytes(module, emb.input_size, ["f"])}
        runners = {k: OnnxRunner(g, torch.device("cpu"), threads=args.threads) for k, g in graphs.items()}
        times: dict[str, list[float]] = {k: [] for k in graphs}
        outs = {k: r.run(x)[0] for k, r in runners.items()}  # warm-up
        for _ in range(args.repeats):
            for k, r in runners.items():
                t = time.perf_counter()
                r.run(x)
                times[k].append(time.perf_counter() - t)
        rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
        for k in ("plain", "export forms"):
            prelu = sum(n.op_type == "PRelu" for n in onnx.load_from_string(graphs[k]).graph.node)
            print(f"| {emb.name} | {k} | {prelu} | {rate[k]:.1f} | {rate[k] / rate['plain']:.2f} | "
                  f"{_cos(outs[k], ref):.7f} |")


if __name__ == "__main__":
    script_exit(main)
