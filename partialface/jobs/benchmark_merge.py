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


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    pieces = [read_results(p) for p in args.pieces]  # every piece read and checked before anything is written
    if any(Path(p["_path"]).resolve() == (out / "results.json").resolve() for p in pieces):
        raise PartialFaceError(f"OUT {out}: holds one of the pieces; write the merge to another folder")
    merged = merge_results(pieces)
    print(write_results(out, merged))
    print(f"merged {len(pieces)} pieces: {len(merged['benchmarks'])} benchmarks of {len(merged['models'])} models "
          f"-> {out / 'results.json'}")
    return 0
