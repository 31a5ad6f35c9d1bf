"""Recompute the occlusion suite's tables from cached embeddings and check them against docs/history/results.md.

For every model of each ``OUT/occluded.json`` given (``partialface benchmark-occluded --out OUT``) this reads the
cached embeddings (``OUT/embeddings/<model>.npz``: the whole faces; ``<model>-occluded.npz``: one array per
occluder and coverage), rebuilds the scored pairs straight from the pairs file (occluded-holistic: each pair in
both orders; occluded-occluded: once), scores them with :mod:`partialface.metrics` and compares every accuracy
with the json (to 1e-9). It prints two tables, a row per model: the holistic accuracy, each kind's mean over
the coverage levels, and the mean over kinds, for occluded-holistic and then occluded-occluded. With ``--doc``
the rows of the tables whose first header cell names the protocol (``| model (occluded-holistic) | ...``),
under the headings that contain ``--section``, must match to the printed 2 decimals.

    .venv/bin/python benchmarks/reproduce_occluded.py OUT1 OUT2 ... --doc docs/history/results.md --section "Occluders"

Exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from reproduce_results import section_lines  # (benchmarks/, this script's folder)

from partialface.data.lfw import read_pairs
from partialface.errors import script_exit
from partialface.evaluation.embed import cache_name
from partialface.metrics import cosine_scores, score_benchmark

PROTOCOLS = ("occluded-holistic", "occluded-occluded")


def recompute(out: Path, result: dict[str, Any], model: str) -> dict[tuple[str, str, float], float]:
    """{(protocol, kind, coverage): accuracy} of ``model`` from its caches; ("holistic", "none", 0.0) too."""
    base = out / "embeddings" / cache_name(model)
    with np.load(base.with_name(base.name + ".npz")) as z:
        keys, hol = z["keys"].tolist(), z["holistic"]
    row = {k: i for i, k in enumerate(keys)}
    pairs = read_pairs(result["pairs_file"])
    a = np.array([row[p.a] for p in pairs.pairs])
    b = np.array([row[p.b] for p in pairs.pairs])
    same = np.array([p.same for p in pairs.pairs])
    fold = np.array([p.fold for p in pairs.pairs])
    # the occluded arrays follow the pairs' sorted image list, the holistic cache its own key order
    order = np.array([row[k] for k in pairs.images()])
    got = {("holistic", "none", 0.0): score_benchmark(cosine_scores(hol[a], hol[b]), same, fold).accuracy}
    with np.load(base.with_name(base.name + "-occluded.npz")) as z:
        for name in z.files:
            if name == "meta":
                continue
            kind, cov = name.rsplit("/", 1)
            occ = np.zeros_like(hol)
            occ[order] = z[name]  # rows in the holistic cache's order
            s = np.concatenate([cosine_scores(occ[a], hol[b]), cosine_scores(hol[a], occ[b])])
            got[("occluded-holistic", kind, float(cov))] = score_benchmark(
                s, np.concatenate([same, same]), np.concatenate([fold, fold])).accuracy
            got[("occluded-occluded", kind, float(cov))] = score_benchmark(
                cosine_scores(occ[a], occ[b]), same, fold).accuracy
    return got


def summary(got: dict[tuple[str, str, float], float], protocol: str, kinds: list[str]) -> list[float]:
    """[holistic, mean over coverages of each kind..., mean over kinds]."""
    means = [float(np.mean([v for (p, k, _), v in got.items() if p == protocol and k == kind])) for kind in kinds]
    return [got[("holistic", "none", 0.0)], *means, float(np.mean(means))]


def doc_tables(doc: Path, section: str) -> dict[str, dict[str, list[float]]]:
    """{protocol: {model: numbers of its row}} from the tables of ``doc`` under headings containing ``section``
    whose first header cell is ``model (PROTOCOL)``."""
    tables: dict[str, dict[str, list[float]]] = {}
    protocol = None
    for line in section_lines(doc, section):
        if not line.startswith("|"):
            protocol = None
            continue
        cells = [c.strip().strip("*").strip("`") for c in line.strip().strip("|").split("|")]
        head = re.fullmatch(r"model \((occluded-\w+)\)", cells[0])
        if head:
            protocol = head.group(1)
            continue
        if protocol and all(re.fullmatch(r"[0-9.]+", c) for c in cells[1:]):
            tables.setdefault(protocol, {})[cells[0]] = [float(c) for c in cells[1:]]
    return tables


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("outs", type=Path, nargs="+", help="`partialface benchmark-occluded --out` folders")
    ap.add_argument("--doc", type=Path, default=None, help="markdown file whose table rows must match")
    ap.add_argument("--section", default="", help="only the --doc tables under headings containing this text")
    args = ap.parse_args()
    rows: dict[str, list[list[float]]] = {p: [] for p in PROTOCOLS}
    names: list[str] = []
    worst_json, kinds = 0.0, []
    for out in args.outs:
        result = json.loads((out / "occluded.json").read_text(encoding="utf-8"))
        for model in dict.fromkeys(r["model"] for r in result["rows"]):
            got = recompute(out, result, model)
            mine = [r for r in result["rows"] if r["model"] == model]
            for r in mine:
                worst_json = max(worst_json, abs(got[(r["protocol"], r["kind"], float(r["coverage"]))] - r["accuracy"]))
            kinds = list(dict.fromkeys(r["kind"] for r in mine if r["protocol"] in PROTOCOLS))
            names.append(model)
            for p in PROTOCOLS:
                rows[p].append(summary(got, p, kinds))
    documented = doc_tables(args.doc, args.section) if args.doc else {}
    worst_doc, bad = 0.0, False
    for p in PROTOCOLS:
        print(f"\n| model ({p}) | holistic | " + " | ".join(kinds) + " | mean over kinds |")
        print("|---|" + "---:|" * (len(kinds) + 2))
        for name, nums in zip(names, rows[p], strict=True):
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in nums) + " |")
            if args.doc:
                doc_row = documented.get(p, {}).get(name)
                if doc_row is None or len(doc_row) != len(nums):
                    print(f"  {name}: no matching {p} row in {args.doc}", file=sys.stderr)
                    bad = True
                    continue
                worst_doc = max(worst_doc, *(abs(round(v, 2) - d) for v, d in zip(nums, doc_row, strict=True)))
    bad = bad or worst_json > 1e-9 or worst_doc > 0.0051
    print(f"\nlargest difference to occluded.json: {worst_json:.2e} points"
          + (f"; to {args.doc}: {worst_doc:.2f} points" if args.doc else "") + (" — MISMATCH" if bad else " — ok"))
    return 1 if bad else 0


if __name__ == "__main__":
    script_exit(main)
