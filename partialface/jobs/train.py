"""``partialface train --config FILE|PRESET [--out DIR] [--resume] [SECTION.OPTION=VALUE ...]``.

Runs under torchrun for several processes (``torchrun --nproc_per_node N -m partialface.cli train ...``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from partialface.errors import PartialFaceError

if TYPE_CHECKING:
    from partialface.training.config import TrainConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="YAML config file, or a packaged preset: paper, cpu, tiny, dlib (default with --resume: OUT/config.yaml)",
    )
    parser.add_argument("--out", help="run folder (same as run.out=DIR)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in the run folder from its latest checkpoint"
    )
    parser.add_argument("--pack-only", action="store_true", help="only build data.pack from data.root, then exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "overrides", nargs="*", metavar="SECTION.OPTION=VALUE", help="config overrides, e.g. optim.lr=0.05 model.K=8"
    )


def load_config(args: argparse.Namespace) -> TrainConfig:
    """The config named by --config (or the run's saved one with --resume --out), with the overrides."""
    from partialface.training.config import TrainConfig

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"run.out={args.out}")
    if args.config:
        return TrainConfig.from_yaml(args.config, overrides)
    if args.resume and args.out:
        saved = Path(args.out) / "config.yaml"
        if not saved.is_file():
            raise PartialFaceError(f"--resume: {saved} not found; pass --config as well")
        return TrainConfig.from_yaml(saved, overrides)
    raise PartialFaceError("--config: give a YAML file or a preset (paper, cpu, tiny, dlib), or --resume --out RUN")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if args.pack_only:
        from partialface.training.data import open_source

        if not cfg.data.pack:
            raise PartialFaceError("--pack-only: set data.pack to the folder to build")
        source = open_source(cfg.data, build_pack=True, progress=cfg.run.progress)
        print(f"packed {len(source)} images of {len(source.classes)} identities into {cfg.data.pack}")
        return 0
    from partialface.training.loop import train

    result = train(cfg, resume=args.resume)
    if result.rank != 0:
        return 0
    loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
    weights = result.out / "model.safetensors"
    print(f"trained {result.step}/{result.total_steps} steps; last loss {loss}; weights in {weights}")
    return 0
