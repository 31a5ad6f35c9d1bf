"""Merge benchmark results made in pieces (``partialface benchmark-merge``).

The full PartialLFW is 562k embeddings a model; on a small CPU it is run in pieces (``--factors``, ``--settings``,
``--combos``, one model at a time), possibly on several machines, and each piece writes its own ``results.json``.
A protocol's number is a mean over per-benchmark results (spec §3), so the pieces' per-benchmark rows are all a
merge needs: it unions them, checks that they can be merged (one convention, one pair set, one model per name, a
benchmark scored twice scored the same), and averages each protocol again. A merged ``results.json`` is itself
a piece, so a table can grow over sessions.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from partialface.errors import PartialFaceError
from partialface.evaluation.benchmark import METRICS
from partialface.evaluation.protocols import DEFAULT_COMBOS, PROTOCOLS, SETTINGS, aggregate

#: the model fields that must agree where two pieces name the same model (``source`` may be another path)
MODEL_FIELDS = ("embedding_dim", "flip", "autocast", "infer")
_REQUIRED = ("convention", "pairs_file", "dropped_pairs", "models", "benchmarks")


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A piece: a ``results.json`` file, or a ``partialface benchmark --out`` folder holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise PartialFaceError(f"{p}: no such file; give a results.json or a `partialface benchmark --out` folder")
    try:
        res = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PartialFaceError(f"{p}: not a readable results.json ({e})") from None
    missing = [k for k in _REQUIRED if not isinstance(res, dict) or k not in res]
    if missing:
        raise PartialFaceError(f"{p}: not a benchmark results.json (no {', '.join(missing)})")
    res["_path"] = str(p)
    return res


def _order(row: dict[str, Any]) -> tuple[Any, ...]:
    """Canonical benchmark order within a model: protocol, setting, factor, part combination."""
    proto = row["protocol"]
    combos = [list(c) for c in DEFAULT_COMBOS.get(proto, ())]
    return (PROTOCOLS.index(proto) if proto in PROTOCOLS else len(PROTOCOLS),
            SETTINGS.index(row["setting"]) if row["setting"] in SETTINGS else -1,
            row["factor"] if row["factor"] is not None else -1.0,
            combos.index(list(row["parts"])) if list(row["parts"]) in combos else len(combos), row["name"])


def _difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest difference between two results of one benchmark (points; inf if they have other pairs)."""
    if a["pairs"] != b["pairs"]:
        return math.inf
    return max(abs(float(a[k]) - float(b[k])) for k in METRICS)


def merge_results(pieces: Sequence[dict[str, Any]], tolerance: float = 1e-9,
                  keep: Sequence[str] | None = None) -> dict[str, Any]:
    """One results dict (as :func:`partialface.evaluation.benchmark.run_benchmark` returns) from ``pieces``
    (as :func:`read_results` returns): models in first-appearance order, every benchmark once, protocol rows
    averaged again; ``pieces`` lists where each came from, ``differences`` the benchmarks that two pieces scored
    differently within ``tolerance`` (the first piece's result is kept). Pieces made on other processors (or
    other alignments) can differ in the last float bits, and a pair near the threshold can then flip.
    ``keep``: only these models, in this order (the others of the pieces are left out).
    Raises PartialFaceError naming the piece that cannot be merged."""
    if not pieces:
        raise PartialFaceError("benchmark-merge: give at least one piece (results.json or benchmark --out folder)")
    if keep is not None:
        scored = {m["name"] for p in pieces for m in p["models"]}
        absent = [k for k in keep if k not in scored]
        if absent:
            raise PartialFaceError(f"--models: no piece scored {', '.join(map(repr, absent))} "
                                   f"(the pieces have {', '.join(sorted(scored))})")
        pieces = [{**p, "models": [m for m in p["models"] if m["name"] in keep],
                   "benchmarks": [r for r in p["benchmarks"] if r["model"] in keep]} for p in pieces]
        pieces = [p for p in pieces if p["models"]]
    first = pieces[0]
    first_name = first.get("_path", "piece 1")
    models: dict[str, dict[str, Any]] = {}
    rows: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    sources: list[dict[str, Any]] = []
    differences: list[dict[str, Any]] = []
    for piece in pieces:
        where = piece.get("_path", "a piece")
        if piece["convention"] != first["convention"]:
            raise PartialFaceError(f"{where}: scored with another convention than {first_name}; "
                                   "only results of one scoring convention can be averaged")
        if (Path(piece["pairs_file"]).name, piece["dropped_pairs"]) != \
                (Path(first["pairs_file"]).name, first["dropped_pairs"]):
            raise PartialFaceError(f"{where}: other pairs than {first_name} ({piece['pairs_file']}, "
                                   f"{piece['dropped_pairs']} dropped); merge pieces of one pairs file")
        for m in piece["models"]:
            known = models.setdefault(m["name"], m)
            diff = [k for k in MODEL_FIELDS if known.get(k) != m.get(k)]
            if diff:
                raise PartialFaceError(f"{where}: model {m['name']!r} differs from the one of that name in an earlier "
                                       f"piece ({', '.join(diff)}); give them different names (NAME=PATH)")
        names = {m["name"] for m in piece["models"]}
        for r in piece["benchmarks"]:
            if r["model"] not in names:
                raise PartialFaceError(f"{where}: benchmark {r['name']!r} of model {r['model']!r}, "
                                       "which the piece does not list")
            key = (r["model"], r["name"])
            if key in rows:
                old, old_where = rows[key]
                gap = _difference(old, r)
                if gap > tolerance:
                    raise PartialFaceError(f"{where}: {r['model']} {r['name']} was scored differently in {old_where} "
                                           f"(accuracy {old['accuracy']:.4f} vs {r['accuracy']:.4f}); merge pieces of "
                                           "the same weights and data, or allow a difference with --tolerance")
                if gap > 1e-9:
                    differences.append({"model": r["model"], "name": r["name"], "kept": old_where, "other": where,
                                        "difference": gap})
                continue
            rows[key] = (r, where)
        sources.append({"path": where, "models": sorted(names), "benchmarks": len(piece["benchmarks"]),
                        "machine": piece.get("machine", "unknown"), "created": piece.get("created", "unknown"),
                        **({"pieces": piece["pieces"]} if "pieces" in piece else {})})
    if keep is not None:
        models = {name: models[name] for name in keep}
    order = {name: i for i, name in enumerate(models)}
    bench = sorted((r for r, _ in rows.values()), key=lambda r: (order[r["model"]], *_order(r)))
    protocols: list[dict[str, Any]] = []
    for name in models:
        mine = [r for r in bench if r["model"] == name]
        grouped = aggregate([(_Row(r), {k: r[k] for k in METRICS}) for r in mine], by=("protocol", "setting"))
        protocols += [{"model": name, **row} for row in grouped]
    return {
        "convention": first["convention"],
        "pairs_file": first["pairs_file"],
        "data": first.get("data", ""),
        "dropped_pairs": first["dropped_pairs"],
        "models": list(models.values()),
        "benchmarks": bench,
        "protocols": protocols,
        "pieces": sources,
        "differences": differences,
    }


class _Row:
    """A benchmark row seen as :func:`aggregate` groups it (its ``protocol`` and ``setting``)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.protocol = row["protocol"]
        self.setting = row["setting"]
