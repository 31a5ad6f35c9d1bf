"""Inference speed of every model family on every inference path, against the machine's matrix-product limit (#12).

One run, the same faces for every row. For each model x path (``partialface.inference.runners``):
- bare: the runner on ready, normalised input batches (``--batch``): images/s and achieved GFLOP/s (FLOPs per
  image from ``torch.utils.flop_counter``, 2 x multiply-adds of convolutions and matrix products); runners that
  take the uint8 faces themselves (``takes_pixels``) get them as the benchmark gives them (NHWC);
- x eager: the ratio to the eager float32 path of the same model; x mm: GFLOP/s over the float32 matrix-product
  limit measured first in the same run (the best of PyTorch's and ONNX Runtime's 2048x2048 float32 product,
  ``--threads`` threads: the machine's practical float32 limit);
- e2e: ``embed_dataset`` on aligned PNGs (decoding in the background, variants made in memory, normalisation,
  forward, normalisation, cache write) in embeddings/s (``--e2e``; default: the auto path), its GFLOP/s against
  the matrix product, and its ratio to the *sustained* bare rate: the same forward alone on ready batches of
  the same variants for the same number of embeddings, interleaved with the e2e runs (``--rounds``, medians);
- cos: the smallest cosine to eager float32 over the faces.
Weights: dlib's pretrained network where the extra is installed (``dlib_resnet`` as ``--model dlib`` runs it:
160x160 faces in, dlib's exact resize to 150 and the network; the resize runs in its block form, 4 flops per
output, which the FLOP count leaves out), otherwise and for the other models random initial weights (speed does
not depend on them).
``--profile`` prints where the eager float32 time of each model goes (torch.profiler, top operators).

    .venv/bin/python benchmarks/bench_infer.py                       # all families, all paths of this machine
    .venv/bin/python benchmarks/bench_infer.py --models dlib_resnet --paths eager,onnx,int8 --profile
    .venv/bin/python benchmarks/bench_infer.py --device cuda --batch 512 --paths eager,bf16,fp16,onnx
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from partialface.cli import omp_env  # imports no torch
from partialface.inference.memory import keep_freed_memory

# OpenMP waits as the CLI sets them, before torch loads: a short spin when only compiled paths are measured
_PATHS_ARG = [b for a, b in itertools.pairwise(sys.argv) if a == "--paths"]
OMP = omp_env(["--infer", "compile"] if _PATHS_ARG and all(
    p.startswith("compile") for p in _PATHS_ARG[-1].split(",") if p) else [])
for _k, _v in OMP.items():
    os.environ.setdefault(_k, _v)
MALLOC = keep_freed_memory()  # as the CLI does (PARTIALFACE_MALLOC=system measures without it)
import torch  # noqa: E402

from partialface.errors import PartialFaceError, script_exit  # noqa: E402
from partialface.inference.hardware import cpu_info  # noqa: E402
from partialface.inference.runners import PATHS, EmbeddingOf, make_runner, unavailable  # noqa: E402

FAMILIES = ("dlib_resnet", "ours_dlib", "ours:cpu", "ours:paper", "resnet50:paper")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_rate(fn: Callable[[], object], work: float, device: torch.device, repeats: int) -> float:
    """work / second of the best of ``repeats`` timed calls after one untimed call (least disturbed figure)."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return work / min(times)


def matmul_limit(device: torch.device, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an n x n float32 (and bf16) matrix product: PyTorch, and ONNX Runtime's MatMul (CPU)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = {"torch fp32": _best_rate(lambda: a @ b, 2 * n**3 / 1e9, device, repeats)}
    ab, bb = a.bfloat16(), b.bfloat16()
    out["torch bf16"] = _best_rate(lambda: ab @ bb, 2 * n**3 / 1e9, device, repeats)
    if device.type == "cpu" and unavailable("onnx", device) is None:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        an, bn = a.numpy(), b.numpy()
        out["onnxruntime fp32"] = _best_rate(lambda: s.run(None, {"a": an, "b": bn}), 2 * n**3 / 1e9, device, repeats)
    return out


def build(family: str) -> tuple[torch.nn.Module, int, str]:
    """(embedding module x -> f, input size, weights note) of a family 'name[:preset]'."""
    from partialface.models import create_model

    name, _, preset = family.partition(":")
    if name == "dlib_resnet":  # as `--model dlib` runs it: dlib's framing (exact resize to 150) + the network
        from partialface.evaluation.dlib_model import FramedDlib
        from partialface.models.dlib_resnet import DlibResNet, load_dlib_resnet, resolve_weights

        try:
            net: torch.nn.Module = load_dlib_resnet(resolve_weights(None))
            note = "dlib's weights"
        except Exception:
            net, note = create_model("dlib_resnet", preset="paper"), "random"
        assert isinstance(net, DlibResNet)
        return FramedDlib(net).eval(), 160, note + ", framing included"
    model = create_model(name, preset=preset or "paper").eval()
    return EmbeddingOf(model).eval(), model.config.input_size, "random"


def faces_dir(root: Path, n: int, src: Path | None) -> Path:
    """A folder of ``n`` aligned 160x160 PNGs: the first n of ``src`` (aligned faces), else synthetic blobs."""
    from partialface.data.images import write_image

    out = root / "faces"
    if src is not None:
        files = sorted(src.rglob("*.png"))[:n]
        if len(files) < n:
            sys.exit(f"--faces {src}: {len(files)} PNG faces, fewer than --images {n}")
        for i, f in enumerate(files):
            (out / f"p{i // 100}").mkdir(parents=True, exist_ok=True)
            (out / f"p{i // 100}" / f"{i:05d}.png").symlink_to(f.resolve())
        return out
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:160] / 160.0
    for i in range(n):
        img = np.zeros((160, 160, 3))
        for _ in range(6):
            (cx, cy), r = rng.uniform(0.2, 0.8, 2).tolist(), float(rng.uniform(0.05, 0.3))
            img += rng.uniform(40, 120, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        write_image(out / f"p{i // 100}" / f"{i:05d}.png", np.clip(img + 60, 0, 255).astype(np.uint8))
    return out


def e2e_rate(family: str, path: str, folder: Path, device: torch.device, batch: int, variants: int,
             tmp: Path, rounds: int = 2) -> tuple[float, float]:
    """(e2e, sustained bare) embeddings/s, interleaved ``rounds`` times, medians. e2e: the benchmark's
    embed_dataset on ``folder`` (the first ``variants`` of the full 73; after one warm-up call, so a compiled
    path's one-off compile is not in it); sustained bare: the same embedder's
    forward alone on ready batches of those variants (real faces), the same number of embeddings. Like with
    like: the best-of-3 bare column times one call of a warm batch, a peak a whole run does not sustain."""
    from partialface.data.lfw import PairsFile
    from partialface.evaluation.embed import EmbedStats, decode_aligned, embed_dataset
    from partialface.evaluation.embedders import TorchEmbedder
    from partialface.evaluation.protocols import build_benchmarks, required_variants
    from partialface.geometry.partial import PartialFaceBatcher
    from partialface.models import create_model

    paths = sorted(folder.rglob("*.png"))
    keys = [str(p.relative_to(folder)) for p in paths]
    vs = required_variants(build_benchmarks(PairsFile((), 1, 0)))[:variants]
    name, _, preset = family.partition(":")
    if name == "dlib_resnet":
        from partialface.evaluation.dlib_model import DlibEmbedder

        emb: TorchEmbedder | DlibEmbedder = DlibEmbedder(device, infer=path)
    else:
        emb = TorchEmbedder(family, create_model(name, preset=preset or "paper"), device, infer=path)
    if emb.needs_calibration:
        from partialface.data.images import read_image

        emb.calibrate(torch.from_numpy(np.stack([read_image(p) for p in paths[:64]])).permute(0, 3, 1, 2))
    imgs = torch.from_numpy(np.stack([decode_aligned(p) for p in paths[:batch]])).to(device)
    ready = []
    for _, x in PartialFaceBatcher(imgs).variants(vs[:8]):
        ready.append(emb.runner_input(x).clone())
        emb(x)  # one-off set-up out of the timing: a compiled path's compile, the uint8 session of ONNX Runtime
    e2e, bare = [], []
    for r in range(rounds):
        st = EmbedStats()
        t = time.perf_counter()
        embed_dataset(emb, keys, paths, vs, tmp / f"e2e-{r}-{time.monotonic_ns()}.npz", batch_size=batch,
                      workers=1, progress=False, stats=st)
        e2e.append(st.computed / (time.perf_counter() - t))
        done, i = 0, 0
        _sync(device)
        t = time.perf_counter()
        while done < st.computed:
            x = ready[i % len(ready)]
            emb.runner(x)
            done, i = done + x.shape[0], i + 1
        _sync(device)
        bare.append(done / (time.perf_counter() - t))
    return float(np.median(e2e)), float(np.median(bare))


def profile_eager(module: torch.nn.Module, x: torch.Tensor, top: int = 8) -> str:
    """The top operators by self CPU time of one eager float32 channels_last forward."""
    from torch.profiler import ProfilerActivity, profile

    m = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    xc = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        m(xc)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            m(xc)
    return str(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(FAMILIES),
                    help=f"families name[:preset] (default {','.join(FAMILIES)})")
    ap.add_argument("--paths", default="", help=f"comma-separated paths (default: every one of {','.join(PATHS)} "
                    "that runs here)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: as set)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=256, help="faces for e2e and cosine")
    ap.add_argument("--faces", type=Path, default=None, help="folder of aligned faces to use (default: synthetic)")
    ap.add_argument("--e2e", default="auto", help="paths whose end-to-end rate is measured: auto (the auto path), "
                    "all, none, or a comma-separated list")
    ap.add_argument("--variants", type=int, default=73, help="variants per image in e2e (default: all 73, as "
                    "the full PartialLFW)")
    ap.add_argument("--rounds", type=int, default=2, help="e2e / sustained-bare pairs, interleaved (medians)")
    ap.add_argument("--profile", action="store_true", help="print the eager float32 profile of each model")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from partialface.inference.runners import choose_path
    from partialface.models.summary import flops_per_image

    paths = [p for p in (args.paths.split(",") if args.paths else PATHS) if p]
    skipped = {p: unavailable(p, device) for p in paths if unavailable(p, device)}
    paths = [p for p in paths if p not in skipped]
    if "eager" not in paths:
        paths.insert(0, "eager")
    auto = choose_path("auto", device)
    e2e = set(paths if args.e2e == "all" else [] if args.e2e == "none" else [auto] if args.e2e == "auto"
              else args.e2e.split(","))
    cpu = cpu_info()
    print(f"# bench_infer: {cpu.describe()}; device {device}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; batch {args.batch}; OpenMP "
          f"{' '.join(f'{k}={os.environ.get(k)}' for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT'))}; "
          f"malloc {'keeps freed memory' if MALLOC else 'as the system has it'}; {time.strftime('%Y-%m-%d')}")
    for p, why in skipped.items():
        print(f"# path {p} skipped: {why}")
    mm = matmul_limit(device)
    limit = max(v for k, v in mm.items() if "fp32" in k)
    print("# matrix product 2048x2048: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in mm.items())
          + f"; float32 limit = {limit:.0f}")
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp_s:
        tmp = Path(tmp_s)
        folder = faces_dir(tmp, args.images, args.faces)
        from partialface.data.images import read_image

        faces = torch.from_numpy(np.stack([read_image(p) for p in sorted(folder.rglob("*.png"))[:64]]))
        print("| model | path | bare img/s | GFLOP/s | x eager | x mm | sustained bare | e2e emb/s | e2e/sustained "
              "| e2e GFLOP/s | e2e x mm | min cos |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for family in [f for f in args.models.split(",") if f]:
            module, size, note = build(family)
            gflop = flops_per_image(module, size, device="cpu") / 1e9
            x = torch.nn.functional.interpolate((faces.permute(0, 3, 1, 2).float() - 127.5) / 128, size=size,
                                                mode="bilinear", antialias=True)
            reps = (args.batch + len(x) - 1) // len(x)
            xb = x.repeat(reps, 1, 1, 1)[: args.batch].to(device)
            fb = faces.repeat(reps, 1, 1, 1)[: args.batch]  # (B, 160, 160, 3) uint8
            with torch.inference_mode():
                ref = module.to(device)(x.to(device)).float().cpu()
            rates: dict[str, float] = {}
            for path in paths:
                try:  # a path that fails here (a compiler, a provider) is a row saying why; the others still run
                    runner = make_runner(module, path, device, size,
                                         calibration=x.numpy() if path == "int8" else None)
                    fmt = torch.channels_last if runner.channels_last else torch.contiguous_format
                    xin, xone = xb.contiguous(memory_format=fmt), x.to(device).contiguous(memory_format=fmt)
                    if runner.takes_pixels and size == faces.shape[1]:  # as the benchmark feeds it: uint8 NHWC
                        xin, xone = (f.to(device).permute(0, 3, 1, 2) for f in (fb, faces))
                    rate = _best_rate(lambda r=runner, xi=xin: r(xi), args.batch, device,  # type: ignore[misc]
                                      args.repeats)
                except PartialFaceError as err:
                    if path == "eager":
                        raise
                    print(f"| {family} | {path} | failed: {err} |" + " |" * 9)
                    continue
                rates[path] = rate
                got = runner(xone).cpu()
                cos = float(torch.nn.functional.cosine_similarity(got, ref).min())
                if path in e2e:
                    e, sb = e2e_rate(family, path, folder, device, args.batch, args.variants, tmp, args.rounds)
                    cells = f"{sb:.1f} | {e:.1f} | {e / sb:.2f} | {e * gflop:.0f} | {e * gflop / limit:.2f}"
                else:
                    cells = " | | | | "
                print(f"| {family} | {path}{' (auto)' if path == auto else ''} | {rate:.1f} | {rate * gflop:.0f} | "
                      f"{rate / rates['eager']:.2f} | {rate * gflop / limit:.2f} | {cells} | {cos:.6f} |")
                del runner
            print(f"<!-- {family}: {gflop:.3f} GFLOP/image at {size}x{size}, weights: {note} -->")
            if args.profile:
                print(profile_eager(module.to(device), xb), file=sys.stderr)


if __name__ == "__main__":
    script_exit(main)
