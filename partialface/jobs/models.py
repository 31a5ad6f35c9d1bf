"""``partialface models``: table of registered models x presets with parameters and FLOPs per image.

FLOPs = 2 x multiply-adds of convolutions and matrix products (torch.utils.flop_counter), one image.
The models are built on the meta device, so the table costs neither memory nor compute.
"""

from __future__ import annotations

import argparse

from partialface.errors import PartialFaceError
from partialface.models.config import ModelConfig
from partialface.models.registry import list_models
from partialface.models.summary import format_table, summarize


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", metavar="NAME", help="registered models to list (default: all)")
    parser.add_argument("--presets", nargs="+", metavar="PRESET", help="model presets to list (default: all)")


def run(args: argparse.Namespace) -> int:
    known_models, known_presets = list_models(), ModelConfig.presets()
    models = args.models or known_models
    presets = args.presets or known_presets
    for m in models:
        if m not in known_models:
            raise PartialFaceError(f"--models: unknown model {m!r}; registered models: {', '.join(known_models)}")
    for p in presets:
        if p not in known_presets:
            raise PartialFaceError(f"--presets: unknown preset {p!r}; known presets: {', '.join(known_presets)}")
    rows = [summarize(ModelConfig.preset(p, name=m)) for p in presets for m in models]
    print(format_table(rows))
    print("FLOPs: 2 x multiply-adds of convolutions and matrix products (torch.utils.flop_counter).")
    print()
    print(shipped_table())
    return 0


def shipped_table() -> str:
    """The shipped models (``--model NAME``): file, whether it is here, whether it has operating points."""
    from partialface.evaluation.calibrate import METADATA_KEY
    from partialface.models.catalogue import CATALOGUE, DEFAULT_MODEL, shipped_model
    from partialface.training.checkpoint import load_weights

    lines = ["Shipped models (--model NAME; * = the default of `partialface verify`):"]
    for name, rel in CATALOGUE.items():
        try:
            path = shipped_model(name)
        except PartialFaceError:
            lines.append(f"  {name:<28} checkpoints/{rel} (missing)")
            continue
        points = "operating points" if METADATA_KEY in load_weights(path)[1] else "no operating points"
        mark = "*" if name == DEFAULT_MODEL else " "
        lines.append(f"{mark} {name:<28} checkpoints/{rel} ({points})")
    return "\n".join(lines)
