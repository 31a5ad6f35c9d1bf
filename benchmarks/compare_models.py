"""Margins between two scored models against their fold spread, on the benchmarks both have.

Reads benchmark results (``results.json`` files or ``partialface benchmark`` / ``benchmark-merge`` folders), and
for each ``--pair A:B`` keeps the benchmarks (protocol, setting, part combination, factor) that both models were
scored on, averages each protocol again as the benchmark does (:func:`partialface.evaluation.merge.merge_results`)
and prints A, B, A - B and the spread (the larger of the two protocol fold stds). A margin counts as "above" or
"below" only beyond the spread; otherwise it is "inside". So a model scored on 5 of PartialLFW's 9 factors is
compared with one scored on all 9 at those 5 factors.

    .venv/bin/python benchmarks/compare_models.py docs/data/sface-ftc-partiallfw docs/data/sface-partiallfw \
        --pair sface-ftc:sface --pair ours_sface-ftc:sface --pair ours_sface-ftc:sface-ftc

Prints one markdown table per pair and the factors it used.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from partialface.errors import PartialFaceError
from partialface.evaluation.merge import merge_results, read_results

COLUMNS = [("holistic", None, "holistic"), ("partial-holistic", "non-centred", "NC p-hol"),
           ("partial-same", "non-centred", "NC p-same"), ("partial-cross", "non-centred", "NC p-cross"),
           ("partial-holistic", "centred", "C p-hol"), ("partial-same", "centred", "C p-same"),
           ("partial-cross", "centred", "C p-cross")]


def compare(results: list[dict[str, Any]], a: str, b: str) -> tuple[list[dict[str, Any]], list[float]]:
    """Per column: A, B (accuracy, fold std), A - B, spread, verdict; and the factors used."""
    scored = {m["name"] for res in results for m in res["models"]}
    for m in (a, b):
        if m not in scored:
            raise PartialFaceError(f"--pair {a}:{b}: no results file scored a model named {m!r}")
    # each model's benchmarks from every file that scored it (the first file's result where two differ)
    pa, pb = (merge_results(results, tolerance=math.inf, keep=[m]) for m in (a, b))
    common = {r["name"] for r in pa["benchmarks"]} & {r["name"] for r in pb["benchmarks"]}
    if not common:
        raise PartialFaceError(f"{a} and {b} share no benchmark")
    pieces = [{**p, "benchmarks": [r for r in p["benchmarks"] if r["name"] in common]} for p in (pa, pb)]
    merged = merge_results(pieces)
    means = {(r["model"], r["protocol"], r["setting"]): r for r in merged["protocols"]}
    rows = []
    for proto, setting, label in COLUMNS:
        ra, rb = means.get((a, proto, setting)), means.get((b, proto, setting))
        if ra is None or rb is None:
            continue
        diff = ra["accuracy"] - rb["accuracy"]
        spread = max(ra["accuracy_std"], rb["accuracy_std"])
        verdict = "above" if diff > spread else "below" if diff < -spread else "inside"
        rows.append({"column": label, "a": ra["accuracy"], "b": rb["accuracy"], "diff": diff, "spread": spread,
                     "verdict": verdict})
    factors = sorted({r["factor"] for r in merged["benchmarks"] if r["factor"] is not None})
    return rows, factors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results.json files or benchmark output folders")
    ap.add_argument("--pair", action="append", required=True, metavar="A:B", help="models to compare (repeatable)")
    args = ap.parse_args(argv)
    try:
        results = [read_results(p) for p in args.results]
        for pair in args.pair:
            a, sep, b = pair.partition(":")
            if not sep or not a or not b:
                raise PartialFaceError(f"--pair {pair!r}: give two model names as A:B")
            rows, factors = compare(results, a, b)
            print(f"\n{a} - {b}, factors {', '.join(f'{f:g}' for f in factors) or 'none'}\n")
            print("| column | A | B | A - B | spread | |\n|---|---:|---:|---:|---:|---|")
            for r in rows:
                print(f"| {r['column']} | {r['a']:.2f} | {r['b']:.2f} | {r['diff']:+.2f} | {r['spread']:.2f} | "
                      f"{r['verdict']} |")
    except PartialFaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
