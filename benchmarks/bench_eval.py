"""Benchmark pipeline throughput (issue #4): end-to-end embedding rate vs the bare forward rate, in one run.

bare forward: the embedder's runner (the ``--infer`` path) on pre-made, already normalised input tensors
of batch ``--batch`` — the most the model can do on that path. end-to-end:
``partialface.evaluation.embed.embed_dataset`` on a folder of aligned 160x160 PNGs written by this script
(decoding in the background thread + every variant made in memory + training's normalisation + forward +
L2 normalisation + cache write), counted in embeddings (image x variant) per second. The two are measured
alternately ``--repeats`` times on the same machine; the table shows the best of each (on a shared
machine the best is the least disturbed figure) and the median, by wall clock and by the CPU time this
process used (all its threads; on a machine shared with other jobs the CPU-time rates are the steadier
comparison; the decoding thread's CPU time counts against the end-to-end rate). Target: end-to-end /
bare >= 0.9.

    .venv/bin/python benchmarks/bench_eval.py --threads 2
    .venv/bin/python benchmarks/bench_eval.py --device cuda --preset paper --images 2048 --batch 256
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from partialface.data.images import write_image
from partialface.data.lfw import PairsFile
from partialface.errors import script_exit
from partialface.evaluation.embed import EmbedStats, embed_dataset
from partialface.evaluation.embedders import TorchEmbedder
from partialface.evaluation.protocols import build_benchmarks, required_variants
from partialface.models import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ours")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=256, help="aligned faces written and embedded")
    ap.add_argument("--variants", type=int, default=12,
                    help="variants per image (first N of the full benchmark's 73; fewer = decoding matters more)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1, help="decoding threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--infer", default="auto", help="inference path (partialface.inference.runners; default auto)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model, preset=args.preset).eval()
    emb = TorchEmbedder(f"{args.model}-{args.preset}", model, device, infer=args.infer)
    size = emb.input_size
    variants = required_variants(build_benchmarks(PairsFile((), 1, 1)))[: args.variants]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        keys = [f"p{i // 4:04d}/p{i // 4:04d}_{i % 4 + 1:04d}.png" for i in range(args.images)]
        for k in keys:
            base = rng.integers(0, 256, (20, 20, 3)).astype(np.float64)
            img = np.clip(np.kron(base, np.ones((8, 8, 1))) + rng.normal(0, 20, (160, 160, 3)), 0, 255)
            write_image(root / "data" / k, img.astype(np.uint8))
        paths = [root / "data" / k for k in keys]

        if emb.needs_calibration:  # int8: activation ranges from the first faces
            from partialface.data.images import read_image

            emb.calibrate(torch.from_numpy(np.stack([read_image(p) for p in paths[:64]])).permute(0, 3, 1, 2))
        x = torch.randn(args.batch, 3, size, size, device=device)
        if emb.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        runner = emb.runner
        n_batches = max(1, args.images * len(variants) // args.batch)

        def bare() -> tuple[float, float]:
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n_batches):
                runner(x)
            _sync(device)
            n = n_batches * args.batch
            return n / (time.perf_counter() - t0), n / (time.process_time() - c0)

        def end_to_end(i: int) -> tuple[float, float]:
            st = EmbedStats()
            t0, c0 = time.perf_counter(), time.process_time()
            embed_dataset(emb, keys, paths, variants, root / f"cache{i}.npz", batch_size=args.batch,
                          workers=args.workers, progress=False, stats=st)
            _sync(device)
            return st.computed / (time.perf_counter() - t0), st.computed / (time.process_time() - c0)

        bare()  # warm-up
        end_to_end(-1)
        b_runs, e_runs = [], []
        for i in range(args.repeats):
            b_runs.append(bare())
            e_runs.append(end_to_end(i))

    print(f"model {args.model} preset {args.preset} on {device}, path {emb.path} ({torch.get_num_threads()} threads), "
          f"{args.images} aligned PNGs x {len(variants)} variants, batch {args.batch}, {args.workers} decoder(s)")
    for j, clock in enumerate(("wall clock", "CPU time of this process (all threads)")):
        b_rates, e_rates = [r[j] for r in b_runs], [r[j] for r in e_runs]
        print(f"{'images/s, ' + clock:<44}{'best':>10}{'median':>10}")
        print(f"{'  bare forward (pre-made tensors)':<44}{max(b_rates):>10.1f}{statistics.median(b_rates):>10.1f}")
        print(f"{'  end-to-end (decode+variants+fwd)':<44}{max(e_rates):>10.1f}{statistics.median(e_rates):>10.1f}")
        print(f"{'  ratio end-to-end / bare':<44}{max(e_rates) / max(b_rates):>10.3f}"
              f"{statistics.median(e_rates) / statistics.median(b_rates):>10.3f}")


if __name__ == "__main__":
    script_exit(main)
