"""``partialface benchmark-merge OUT PIECE...``: one table from benchmark results made in pieces
(:mod:`partialface.evaluation.merge`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from partialface.errors import PartialFaceError
from partialface.evaluation.benchmark import write_results
from partialface.evaluation.merge import merge_results, read_results


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder: results.json, results.md, per_factor.csv")
    parser.add_argument("pieces", metavar="PIECE", nargs="+",
                        help="a results.json, or a `partialface benchmark --out` folder (a merged results.json is "
                        "a piece too)")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="largest difference (points) allowed where two pieces scored the same benchmark, e.g. "
                        "holistic on two processors; the first piece's result is kept (default 0: identical)")
    parser.add_argument("--models", default=None,
                        help="comma-separated models to keep, in this order (default: every model of the pieces)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    pieces = [read_results(p) for p in args.pieces]  # every piece read and checked before anything is written
    if any(Path(p["_path"]).resolve() == (out / "results.json").resolve() for p in pieces):
        raise PartialFaceError(f"OUT {out}: holds one of the pieces; write the merge to another folder")
    if args.tolerance < 0:
        raise PartialFaceError(f"--tolerance must be >= 0, got {args.tolerance:g}")
    keep = [m.strip() for m in args.models.split(",") if m.strip()] if args.models is not None else None
    if keep is not None and (not keep or len(set(keep)) != len(keep)):
        raise PartialFaceError(f"--models {args.models!r}: give distinct model names, comma-separated")
    merged = merge_results(pieces, tolerance=max(args.tolerance, 1e-9), keep=keep)
    print(write_results(out, merged))
    for d in merged["differences"]:
        print(f"note: {d['model']} {d['name']}: {d['other']} differs from {d['kept']} by {d['difference']:.4f} points "
              "(within --tolerance; the first is kept)")
    print(f"merged {len(pieces)} pieces: {len(merged['benchmarks'])} benchmarks of {len(merged['models'])} models "
          f"-> {out / 'results.json'}")
    return 0
