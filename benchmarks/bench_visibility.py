"""The visibility net's cost against the default model's embedding (issue #39: <= 10 %).

Times, on the same batch of aligned faces (float32, one thread by default, best of ``--repeats`` after a
warm-up), ``partialface.api.load(MODEL).embedder`` (the default inference path, ``infer="auto"``) and
:class:`partialface.models.visibility.VisibilityNet`, and prints both and their ratio::

    python benchmarks/bench_visibility.py [--model sface-400] [--weights FILE] [--batch 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sface-400", help="the embedding model (default sface-400)")
    parser.add_argument("--weights", default="partialface/models/weights/visibility-2026-12-07/visibility.safetensors",
                        help="visibility weights (a fresh net of the default config if the file is absent)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import torch

    from partialface.api import load
    from partialface.errors import PartialFaceError
    from partialface.models.visibility import VisibilityNet, load_visibility

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    faces = torch.from_numpy(rng.integers(0, 256, (args.batch, 3, 160, 160), dtype=np.uint8))
    model = load(args.model)
    embedder = model.embedder
    try:
        net = load_visibility(args.weights)
    except PartialFaceError:
        net = VisibilityNet().eval()
    with torch.inference_mode():
        t_emb = best_time(lambda: embedder(faces), args.repeats)
        t_vis = best_time(lambda: net(faces), args.repeats)
    n = args.batch
    print(f"batch {n}, {args.threads} thread(s), float32")
    name = f"embedding ({args.model}, {type(embedder).__name__}):"
    print(f"{name} {t_emb * 1e3:9.2f} ms  ({t_emb / n * 1e3:.3f} ms/face)")
    print(f"visibility (VisibilityNet):        {t_vis * 1e3:9.2f} ms  ({t_vis / n * 1e3:.3f} ms/face)")
    print(f"ratio visibility / embedding: {t_vis / t_emb:.3f} ({100 * t_vis / t_emb:.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
