"""Recompute a benchmark's table from its cached embeddings and check it against docs/history/results.md.

For every model of ``BENCH/results.json`` (a ``partialface benchmark --out BENCH`` folder) this reads the
cached embeddings (``BENCH/embeddings/<model>.npz``) and the pairs file, rebuilds every scored pair list
straight from the pairs (each pair once for holistic / partial-same, in both orders for partial-holistic /
partial-cross), scores it with :mod:`partialface.metrics` (cosine scores, 10-fold accuracy, AUC, EER),
averages each protocol's benchmarks and compares the result with results.json (to 1e-9) and, with
``--doc``, with the rows of that model in the markdown tables of the document (to the printed 2 decimals).
``--protocols`` limits the check (e.g. ``holistic,partial-holistic``) for a quick run. A ``partialface
benchmark-merge`` folder has no embeddings: there the per-benchmark results are taken as they are and only the
protocol means and the document are checked (check each piece when it is made).

    .venv/bin/python benchmarks/reproduce_results.py --bench runs/demo/benchmark --doc docs/history/results.md \
        --section "The demo on synthetic faces"

Prints one table row per model (recomputed) and the largest difference found; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from partialface.data.lfw import read_pairs
from partialface.errors import script_exit
from partialface.metrics import cosine_scores, score_benchmark

COLUMNS = [("holistic", None), ("partial-holistic", "non-centred"), ("partial-same", "non-centred"),
           ("partial-cross", "non-centred"), ("partial-holistic", "centred"), ("partial-same", "centred"),
           ("partial-cross", "centred")]


def variant_name(part: str, setting: str | None, factor: float | None) -> str:
    """The cache's name of a variant: 'holistic', 'PART/0.3' (non-centred) or 'PART_centered/0.3'."""
    if part == "holistic":
        return "holistic"
    return f"{part}{'_centered' if setting == 'centred' else ''}/{factor}"


def recompute(bench: Path, model: str, benchmarks: list[dict], pairs_file: Path) -> dict[str, dict[str, float]]:
    """{benchmark name: metrics} recomputed from the cached embeddings of ``model``."""
    z = np.load(bench / "embeddings" / f"{model}.npz")
    row = {k: i for i, k in enumerate(z["keys"].tolist())}
    pairs = read_pairs(pairs_file)
    kept = [p for p in pairs.pairs if p.a in row and p.b in row]  # --drop-missing dropped the others
    a = np.array([row[p.a] for p in kept])
    b = np.array([row[p.b] for p in kept])
    same = np.array([p.same for p in kept])
    fold = np.array([p.fold for p in kept])
    out: dict[str, dict[str, float]] = {}
    for bm in benchmarks:
        first, second = bm["parts"]
        ea = z[variant_name(first, bm["setting"], bm["factor"])]
        eb = z[variant_name(second, bm["setting"], bm["factor"])]
        if bm["protocol"] in ("partial-holistic", "partial-cross"):
            left, right = np.concatenate([a, b]), np.concatenate([b, a])
            y, f = np.concatenate([same, same]), np.concatenate([fold, fold])
        else:
            left, right, y, f = a, b, same, fold
        out[bm["name"]] = score_benchmark(cosine_scores(ea[left], eb[right]), y, f).as_dict()
    return out


def section_lines(doc: Path, section: str = "") -> list[str]:
    """The lines of a markdown file under the headings that contain ``section`` (subsections stay inside their
    section); every line when ``section`` is empty."""
    out: list[str] = []
    level = 0  # heading level of the section being read (0: none)
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            depth = len(line) - len(line.lstrip("#"))
            if section in line and not level:
                level = depth
            elif level and depth <= level:
                level = 0
        if level or not section:
            out.append(line)
    return out


def doc_rows(doc: Path, section: str = "") -> dict[str, list[list[tuple[float, float] | None]]]:
    """{model name: [cells of each table row naming it]} from a markdown file (only under the headings that
    contain ``section``, if given); a cell is (mean, std), or None for "—"."""
    rows: dict[str, list[list[tuple[float, float] | None]]] = {}
    for line in section_lines(doc, section):
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        pairs = [re.fullmatch(r"\*{0,2}([0-9.]+) ± ([0-9.]+)\*{0,2}", c) for c in cells[1:]]
        if len(cells) >= 8 and all(m or c == "—" for m, c in zip(pairs[-7:], cells[-7:], strict=True)) \
                and any(pairs[-7:]):  # "—": a column the table does not have
            name = cells[0].strip("` ")
            rows.setdefault(name, []).append([(float(m.group(1)), float(m.group(2))) if m else None
                                              for m in pairs[-7:]])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", type=Path, required=True, help="a `partialface benchmark --out` folder")
    ap.add_argument("--doc", type=Path, default=None, help="markdown file whose table rows must match")
    ap.add_argument("--section", default="", help="only the --doc tables under headings containing this text")
    ap.add_argument("--protocols", default="", help="comma-separated protocols to check (default all)")
    args = ap.parse_args()
    res = json.loads((args.bench / "results.json").read_text(encoding="utf-8"))
    wanted = set(filter(None, args.protocols.split(","))) or {p for p, _ in COLUMNS}
    documented = doc_rows(args.doc, args.section) if args.doc else {}
    worst_json, worst_doc, bad = 0.0, 0.0, False
    print("| model | holistic | NC p-hol | NC p-same | NC p-cross | C p-hol | C p-same | C p-cross |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in [m["name"] for m in res["models"]]:
        mine = [b for b in res["benchmarks"] if b["model"] == model and b["protocol"] in wanted]
        if (args.bench / "embeddings" / f"{model}.npz").is_file():
            got = recompute(args.bench, model, mine, Path(res["pairs_file"]))
        else:  # a `benchmark-merge` folder: only the averaging and the document are checked
            print(f"  {model}: no cached embeddings here (a merged table?); per-benchmark results taken from "
                  "results.json, check each piece against its embeddings when it is made", file=sys.stderr)
            got = {b["name"]: b for b in mine}
        for b in mine:
            worst_json = max(worst_json, abs(got[b["name"]]["accuracy"] - b["accuracy"]),
                             abs(got[b["name"]]["accuracy_std"] - b["accuracy_std"]))
        cells: list[tuple[float, float] | None] = []
        for protocol, setting in COLUMNS:
            members = [b for b in mine if b["protocol"] == protocol and b["setting"] == setting]
            cells.append((float(np.mean([got[b["name"]]["accuracy"] for b in members])),
                          float(np.mean([got[b["name"]]["accuracy_std"] for b in members]))) if members else None)
        print(f"| {model} | " + " | ".join(f"{c[0]:.2f} ± {c[1]:.2f}" if c else "—" for c in cells) + " |")
        if args.doc:
            if model not in documented:
                print(f"  {model}: no table row in {args.doc}", file=sys.stderr)
                bad = True
                continue
            for doc_cells in documented[model]:
                for c, d in zip(cells, doc_cells, strict=True):
                    if (c is None) != (d is None):
                        print(f"  {model}: a column is scored in one and not the other", file=sys.stderr)
                        bad = True
                    elif c is not None and d is not None:
                        diff = max(abs(round(c[0], 2) - d[0]), abs(round(c[1], 2) - d[1]))
                        worst_doc = max(worst_doc, diff)
    bad = bad or worst_json > 1e-9 or worst_doc > 0.0051
    print(f"\nlargest difference to results.json: {worst_json:.2e} points"
          + (f"; to {args.doc}: {worst_doc:.2f} points" if args.doc else "") + (" — MISMATCH" if bad else " — ok"))
    return 1 if bad else 0


if __name__ == "__main__":
    script_exit(main)
