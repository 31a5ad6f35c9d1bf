"""``partialface weights``: import pretrained weights from outside the project; export trained models.

``partialface weights import-dlib [PATH] [--out FILE]``: convert dlib's face-recognition ResNet
(``dlib_face_recognition_resnet_model_v1.dat``; default: the one in an installed face-recognition-models)
to safetensors for ``dlib_resnet`` (default FILE: the cache, ``$PARTIALFACE_HOME`` or ``~/.cache/partialface``).
No dlib needed, nothing downloaded, nothing unpickled.

``partialface weights export RUN OUT.safetensors [--fp16]``: the model of a trained run (run folder, step
folder or model.safetensors) as a file to share: the model's tensors and config only (no classifier head,
which is only for training), optionally in float16 (half the size; float32 again when loaded). It loads
wherever a run's weights do (``--model`` of the benchmark, ``partialface.training.checkpoint.load_model``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from partialface.errors import PartialFaceError


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser(
        "import-dlib",
        help="convert dlib's face recognition ResNet (.dat) to safetensors for the dlib_resnet model",
        description="Convert dlib's face recognition ResNet (.dat) to safetensors for the dlib_resnet model.",
    )
    p.add_argument("path", nargs="?", type=Path, metavar="PATH",
                   help="dlib_face_recognition_resnet_model_v1.dat (default: from the installed "
                        "face-recognition-models, pip install 'partialface[dlib]')")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="output .safetensors (default: the cache file that load_dlib_resnet reads)")
    p = sub.add_parser(
        "export",
        help="a trained model as one small file to share (no classifier head; --fp16 halves it)",
        description="Write a trained model (weights + config, no classifier head) as one safetensors file.",
    )
    p.add_argument("src", type=Path, metavar="RUN", help="run folder, step folder or model.safetensors")
    p.add_argument("out", type=Path, metavar="OUT", help="output file (.safetensors)")
    p.add_argument("--fp16", action="store_true", help="store floating-point tensors as float16")


def export_model(src: Path, out: Path, fp16: bool = False) -> tuple[int, int]:
    """Write the model of run ``src`` to ``out`` (model tensors + metadata, atomically); float16 with ``fp16``.
    Returns (tensors, bytes written)."""
    import torch

    from partialface.training.checkpoint import _weights_file, load_weights, save_weights

    if out.suffix != ".safetensors":
        raise PartialFaceError(f"{out}: give a file name ending in .safetensors")
    if not src.exists():
        raise PartialFaceError(f"{src}: no such run folder or weights file")
    tensors, meta = load_weights(_weights_file(src))
    if "model_config" not in meta:
        raise PartialFaceError(f"{src}: no model_config in its metadata (not written by `partialface train`)")
    model = {k: (v.half() if fp16 and v.is_floating_point() else v) for k, v in tensors.items()
             if k.startswith("model.")}
    if fp16 and any(torch.isinf(v).any() for v in model.values() if v.dtype == torch.float16):
        raise PartialFaceError(f"{src}: weights overflow float16; export without --fp16")
    save_weights(out, model, {**meta, "exported_from": str(src), "dtype": "float16" if fp16 else "float32"})
    return len(model), out.stat().st_size


def run(args: argparse.Namespace) -> int:
    if args.weights_command == "export":
        n, size = export_model(args.src, args.out, args.fp16)
        print(f"wrote {args.out} ({n} tensors, {size / 1e6:.2f} MB{', float16' if args.fp16 else ''}) from {args.src}")
        return 0
    if args.weights_command != "import-dlib":  # pragma: no cover - argparse only offers import-dlib and export
        raise PartialFaceError(f"weights: unknown action {args.weights_command!r}")
    from partialface.models.dlib_dat import convert
    from partialface.models.dlib_resnet import CACHE_FILE, cache_dir, installed_dat_file, missing_weights_error

    src: Path | None = args.path
    if src is None:
        src = installed_dat_file()
        if src is None:
            raise missing_weights_error("weights import-dlib")
    elif not src.is_file():
        raise PartialFaceError(f"{src}: no such file (give dlib_face_recognition_resnet_model_v1.dat)")
    out: Path = args.out if args.out is not None else cache_dir() / CACHE_FILE
    if out.suffix != ".safetensors":
        raise PartialFaceError(f"--out {out}: give a file name ending in .safetensors")
    arrays = convert(src, out)
    n = sum(int(a.size) for a in arrays.values())
    print(f"wrote {out} ({len(arrays)} tensors, {n:,} values) from {src}")
    return 0
