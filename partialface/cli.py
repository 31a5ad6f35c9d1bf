"""The ``partialface`` command line: a thin layer over the package.

Each subcommand lives in its own module, imported only when that subcommand runs. A command module
provides ``configure(parser)`` (adds its options) and ``run(args) -> int`` (the exit status).
User errors (PartialFaceError) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import sys
from collections.abc import Sequence

from partialface.errors import PartialFaceError
from partialface.inference.memory import keep_freed_memory

#: name -> (module implementing configure/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "align": ("partialface.jobs.align", "align a dataset (LFW layout or identity folders) to 160x160 faces"),
    "export-partial": (
        "partialface.jobs.export_partial",
        "write the published PartialLFW folder tree from aligned faces",
    ),
    "synth": ("partialface.jobs.synth", "write synthetic identity-labelled faces (training set + LFW-layout test set)"),
    "split": ("partialface.jobs.split", "hold out identities of a training set as an LFW-layout test set (+ pairs)"),
    "train": ("partialface.jobs.train", "train a model from a YAML config"),
    "train-visibility": ("partialface.jobs.train_visibility", "train the per-region visibility net (what is hidden)"),
    "benchmark": ("partialface.jobs.benchmark", "score models on PartialLFW protocols (LFW-layout data + pairs)"),
    "benchmark-merge": ("partialface.jobs.benchmark_merge",
                        "one table from benchmark results made in pieces (factors, settings, models, machines)"),
    "benchmark-identify": ("partialface.jobs.benchmark_identify",
                           "open-set 1:N identification (rank-1, CMC, DIR@FPIR) on an LFW-layout folder"),
    "benchmark-occluded": ("partialface.jobs.benchmark_occluded",
                           "the occlusion suite: occluded-holistic / -occluded pairs per occluder and coverage"),
    "models": ("partialface.jobs.models", "list registered models and presets (parameters, FLOPs)"),
    "weights": ("partialface.jobs.weights",
                "import dlib's face ResNet; export a trained model (safetensors, fp16, ONNX)"),
    "calibrate": ("partialface.jobs.calibrate",
                  "measure a model's operating points (thresholds at FAR 1e-2..1e-4) on held-out faces"),
    "verify": ("partialface.jobs.verify", "same person? two photos, a verdict at a calibrated false-accept rate"),
    "embed": ("partialface.jobs.embed", "embed the faces of photos (folders, files, lists) into an .npz file"),
    "enroll": ("partialface.jobs.enroll", "add identities to a gallery (NAME IMAGES... or --folders DIR)"),
    "identify": ("partialface.jobs.identify", "who is it? photos against a gallery, unknown faces said so"),
    "gallery": ("partialface.jobs.gallery", "gallery stores: copy SRC DST between a .db file and a postgresql:// URL"),
    "demo": ("partialface.jobs.demo", "run the main job end to end on an embedded default"),
    "serve": ("partialface.jobs.serve", "the HTTP service: verify, embed, identify and a gallery over a REST API"),
    "keys": ("partialface.jobs.keys", "make an API key for serve (printed once; its hash appended to a key file)"),
}


#: Environment defaults set before any command module (and so torch and its OpenMP runtime) is loaded; a
#: user's own setting wins. Threads waiting at a barrier sleep instead of spinning: with spinning, a training
#: step with 2 threads on a 2-core machine whose other core is busy ran 20x slower than with 1 thread (9 vs
#: 184 images/s; sleeping: 199 and 188), and the benchmark, whose PyTorch threads (variants) and ONNX Runtime
#: threads (the model) take turns on the same cores, embedded 1.4x faster (docs/history/benchmarks.md).
OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
#: ... except for the compiled paths (``--infer compile`` / ``compile-bf16``): all their work is PyTorch's, in
#: many short parallel regions back to back, and sleeping threads cost them 25 % (dlib, AMX Xeon, idle: 613 vs
#: 820 faces/s); a short spin (libgomp's count; its default is 300,000) keeps 96 % of that speed and stays
#: well-behaved on a busy machine (docs/history/benchmarks.md).
COMPILED_OMP_ENV = {"GOMP_SPINCOUNT": "10000"}


def omp_env(argv: Sequence[str] = ()) -> dict[str, str]:
    """The OpenMP environment defaults for a command line: :data:`COMPILED_OMP_ENV` for ``--infer compile*``,
    else :data:`OMP_ENV`."""
    infer = [b for a, b in itertools.pairwise(argv) if a == "--infer"]
    infer += [a.partition("=")[2] for a in argv if a.startswith("--infer=")]
    return COMPILED_OMP_ENV if infer and infer[-1].startswith("compile") else OMP_ENV


def build_parser(command: str | None = None, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported (to add its options), after the OpenMP
    environment of :func:`omp_env` (a user's own setting wins)."""
    for key, value in omp_env(argv).items():
        os.environ.setdefault(key, value)

    parser = argparse.ArgumentParser(prog="partialface", description=__doc__.splitlines()[0])
    from partialface import version

    parser.add_argument("--version", action="version", version=f"partialface {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None, argv)
    args = parser.parse_args(argv)
    keep_freed_memory()  # every command is a long loop of same-sized buffers: no page faults per call
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except PartialFaceError as e:
        print(f"partialface: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("partialface: interrupted (finished work is kept; run the command again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
