"""``partialface models``: the shipped models to choose from.

By default a short list (at most :data:`partialface.models.catalogue.SHORT_LIST_MAX` models): the default and the
models the current results compare, each with one line on what it is for
(:data:`partialface.models.catalogue.CURRENT`). ``--all``: every shipped model (the others marked as history: their
names keep working), with its file and whether it carries operating points, and the built-in untouched networks.
``--architectures``: before that, the table of registered architectures x presets with parameters and FLOPs per
image (``--models`` / ``--presets`` choose its rows).

FLOPs = 2 x multiply-adds of convolutions and matrix products (torch.utils.flop_counter), one image.
The architectures are built on the meta device, so the table costs neither memory nor compute.
"""

from __future__ import annotations

import argparse

from partialface.errors import PartialFaceError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true",
                        help="every shipped model, the project's history too (their names keep working)")
    parser.add_argument("--architectures", action="store_true",
                        help="also the registered architectures x presets: parameters and FLOPs per image (implies "
                        "--all)")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="registered architectures for that table (implies --architectures; default: all)")
    parser.add_argument("--presets", nargs="+", metavar="PRESET",
                        help="model presets for that table (implies --architectures; default: all)")


def run(args: argparse.Namespace) -> int:
    if not (args.architectures or args.models or args.presets):
        print(shipped_table() if args.all else short_table())
        return 0
    from partialface.models.config import ModelConfig
    from partialface.models.registry import list_models
    from partialface.models.summary import format_table, summarize

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


def _builtin_missing(name: str) -> str | None:
    """Why a built-in model (``sface``, ``dlib``, ``dlib-chip``, ``dlib-bin``) cannot run here, or None."""
    if name == "sface":
        from partialface.models.sface import installed_sface_file

        return None if installed_sface_file() is not None else "needs pip install 'partialface[sface]'"
    from partialface.models.dlib_resnet import CACHE_FILE, cache_dir, installed_dat_file

    if name == "dlib-bin":
        import importlib.util

        return None if importlib.util.find_spec("dlib") is not None else "needs pip install 'partialface[dlib]'"
    here = (cache_dir() / CACHE_FILE).is_file() or installed_dat_file() is not None
    return None if here else "needs pip install 'partialface[dlib]'"


def short_table() -> str:
    """The short list: the default (marked *) and the models the current results compare, one line each."""
    from partialface.models.catalogue import CATALOGUE, DEFAULT_MODEL, shipped_model, short_list

    shown = short_list()
    width = max(len(n) for n, _ in shown)
    lines = ["Models (--model NAME; * = the default of verify, embed, enroll and identify):"]
    for name, what in shown:
        missing: str | None
        if name in CATALOGUE:
            try:
                shipped_model(name)
                missing = None
            except PartialFaceError:
                missing = "file missing: set PARTIALFACE_CHECKPOINTS"
        else:
            missing = _builtin_missing(name)
        mark = "*" if name == DEFAULT_MODEL else " "
        lines.append(f"{mark} {name:<{width}}  {what}" + (f" ({missing})" if missing else ""))
    rest = len(CATALOGUE) - sum(n in CATALOGUE for n, _ in shown)
    lines.append(f"{rest} more: the project's history, names still working (partialface models --all; "
                 "architectures: --architectures)")
    return "\n".join(lines)


def shipped_table() -> str:
    """The shipped models (``--model NAME``): file, whether it is here, whether it has operating points."""
    from pathlib import Path

    from safetensors import safe_open

    from partialface.evaluation.calibrate import METADATA_KEY
    from partialface.models.catalogue import CATALOGUE, CURRENT, DEFAULT_MODEL, shipped_model

    lines = ["Shipped models (--model NAME; * = the default; current: compared in the current results; "
             "history: earlier steps):"]
    for name in sorted(CATALOGUE, key=lambda n: (n != DEFAULT_MODEL, n not in CURRENT)):  # current first, stable
        rel, mark = CATALOGUE[name], "*" if name == DEFAULT_MODEL else " "
        when = "current" if name in CURRENT else "history"
        try:
            path = shipped_model(name)
        except PartialFaceError:
            lines.append(f"{mark} {name:<28} {when:<8} checkpoints/{rel} (missing)")
            continue
        try:
            with safe_open(str(path), "pt") as f:  # the header only: the metadata, no tensors read
                meta = f.metadata() or {}
            points = "operating points" if METADATA_KEY in meta else "no operating points"
        except Exception:  # safetensors raises its own errors for a damaged file
            points = "unreadable"
        where = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path  # wherever it resolved
        lines.append(f"{mark} {name:<28} {when:<8} {where} ({points})")
    builtin = [n for n in CURRENT if n not in CATALOGUE] + [n for n in ("dlib", "dlib-bin") if n not in CURRENT]
    lines.append("Built in (the untouched networks, from the extras): "
                 + ", ".join(f"{n} ({'current, ' if n in CURRENT else ''}{_builtin_missing(n) or 'here'})"
                             for n in builtin))
    return "\n".join(lines)
