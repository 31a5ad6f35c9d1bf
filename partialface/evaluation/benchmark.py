"""The benchmark: score models on the PartialLFW protocols (spec §3) with the spec's convention (§4).

Steps: read the pairs; find the images (``--drop-missing`` leaves out pairs whose images are missing and
says how many); align the data once into ``OUT/aligned`` (cached, resumable) unless it is aligned already
(``--aligned``, or a tree of 160x160 PNG faces whose sample passes :func:`check_alignment`; one line says
which it decided);
embed every unique image once per needed variant per model (cache ``OUT/embeddings/<model>.npz``,
resumable); score every benchmark; write ``results.json``, ``results.md``, ``per_factor.csv`` and
``scores/<model>.npz``; then the HTML report if :mod:`partialface.evaluation.report` is installed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from partialface.data.images import atomic_write_bytes
from partialface.data.lfw import PairsFile, read_pairs, resolve_images
from partialface.devices import resolve_device
from partialface.errors import PartialFaceError
from partialface.evaluation.embed import EmbedStats, cache_name, decode_aligned, embed_dataset, load_embedder, save_npz
from partialface.evaluation.embedders import Embedder
from partialface.evaluation.protocols import (
    DEFAULT_COMBOS,
    HOLISTIC,
    PROTOCOLS,
    SETTINGS,
    TABLE_COLUMNS,
    Benchmark,
    aggregate,
    build_benchmarks,
    required_variants,
)
from partialface.geometry.template import FACTORS, visible_fraction
from partialface.metrics import cosine_scores, score_benchmark

CONVENTION = (
    "Embeddings are L2-normalised; a pair's score is their cosine similarity ('same' if score >= threshold). "
    "k-fold accuracy: for each fold the threshold is chosen on the other folds only (candidates: the distinct "
    "training scores; the winner maximises training accuracy; ties go to the smallest), then accuracy is "
    "measured on that fold; mean and population std over folds, in %. ROC AUC, EER and TAR@FAR=1e-3/1e-2 use "
    "all pairs of a benchmark at once. A protocol's number is the mean over its part combinations and factors "
    "(the ± is the mean of the benchmarks' fold std)."
)
METRICS = ("accuracy", "accuracy_std", "auc", "eer", "tar_far_1e3", "tar_far_1e2")


def _combo_name(protocol: str, pair: tuple[str, str]) -> str:
    """A part pair as --combos names it (as ``Benchmark.combo``): 'holistic', 'lEye-holistic', 'lEye-Nose'."""
    if protocol == "holistic":
        return HOLISTIC
    a, b = pair
    return f"{b}-{HOLISTIC}" if a == HOLISTIC else f"{a}-{b}"


def _combo_overrides(combos: Sequence[str] | None, protocols: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """--combos names (e.g. 'lEye-holistic', 'lEye-Nose') -> per-protocol part pairs; a partial protocol none
    of whose combinations is named is left out (holistic is scored whenever it is in --protocols)."""
    if not combos:
        return {}
    known = {p: {_combo_name(p, c): c for c in DEFAULT_COMBOS[p]} for p in PROTOCOLS if p in protocols}
    out: dict[str, list[tuple[str, str]]] = {p: [] for p in known}
    for name in combos:
        hits = [p for p in known if name in known[p]]
        if not hits:
            choices = sorted({n for p in known for n in known[p]})
            raise PartialFaceError(f"--combos {name!r} is not a part combination of the chosen protocols; "
                                   f"choose from {', '.join(choices)}")
        for p in hits:
            out[p].append(known[p][name])
    return out


def _select_folds(pairs: PairsFile, folds: Sequence[int] | None) -> PairsFile:
    if not folds:
        return pairs
    bad = [f for f in folds if not 1 <= f <= pairs.folds]
    if bad:
        raise PartialFaceError(f"--folds {bad[0]}: {pairs.name} has folds 1..{pairs.folds}")
    keep = {f - 1 for f in folds}
    if len(keep) < 2:
        raise PartialFaceError("--folds: give at least 2 folds (each fold's threshold is chosen on the others)")
    kept = tuple(p for p in pairs.pairs if p.fold in keep)
    return PairsFile(kept, pairs.folds, pairs.per_fold, pairs.path, pairs.dropped)


def _link_needed(found: dict[str, Path], data: Path, dst: Path) -> Path:
    """A folder of links to just the images the pairs need (``dst/NAME/NAME_000N.jpg``), so that aligning
    skips the rest of the dataset (LFW: 7,701 of 13,233 images). Falls back to copies where links fail."""
    import shutil

    for path in found.values():
        rel = path.relative_to(data)
        link = dst / rel
        if link.is_file():
            continue
        if link.is_symlink():  # dangling: the data moved
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(path.resolve())
        except OSError:
            shutil.copy2(path, link)
    return dst


#: faces of a tree of 160x160 PNG images that :func:`check_alignment` detects before the tree is scored as aligned
ALIGN_SAMPLE = 20
#: the most the sampled faces may be off the template (pixels of the 160x160 face; the median over the sample of
#: :func:`template_offset`). Measured on 16 LFW photos: aligned by the benchmark, a median 1.2 px off (the worst
#: 5.8: the detector's own scatter); the same photos cropped to 160x160 without alignment 8 px, resized whole to
#: 160x160 37 px; the aligned faces shifted 5 px 5.6 px, scaled 1.1x 4.3 px, rotated 10 degrees 10.6 px.
ALIGN_TOLERANCE = 4.0


def template_offset(landmarks: np.ndarray) -> float:
    """How far the face with 5 ``landmarks`` (5, 2) in a 160x160 image is from the template: the largest distance
    (pixels) that the benchmark's alignment warp (:func:`partialface.geometry.align.alignment_matrix`) would move a
    template point (:func:`partialface.geometry.template.aligned_points`); about 0 for an aligned face."""
    from partialface.geometry.align import alignment_matrix
    from partialface.geometry.template import aligned_points

    m = alignment_matrix(landmarks)
    pts = aligned_points()
    return float(np.linalg.norm(pts @ m[:, :2].T + m[:, 2] - pts, axis=1).max())


def check_alignment(paths: Sequence[Path], device: Any = "cpu", sample: int = ALIGN_SAMPLE) -> tuple[int, list[float]]:
    """Detect the faces of ``sample`` images of ``paths`` (evenly spread; all of them when fewer), which must be
    160x160 (PartialFaceError otherwise, from :func:`decode_aligned`). Returns (images sampled, the
    :func:`template_offset` of each face found), MTCNN with the spec's settings, the face its rule picks."""
    from partialface.detect import detect_faces_batch, select_face

    ordered = sorted(paths)
    idx = sorted({round(i) for i in np.linspace(0, len(ordered) - 1, min(sample, len(ordered)))}) if ordered else []
    images = [decode_aligned(ordered[i]) for i in idx]
    offsets = []
    for img, faces in zip(images, detect_faces_batch(images, device=device) if images else [], strict=True):
        face = select_face(faces, img.shape)
        if face is not None:
            offsets.append(template_offset(np.asarray(face.landmarks, np.float64)))
    return len(images), offsets


def decide_aligned(paths: Sequence[Path], data: Path, out: Path, aligned: bool, device: Any) -> bool:
    """Whether ``data`` is scored as it is (True) or aligned into ``out/aligned`` first (False), said in one line
    on stderr: ``aligned`` (``--aligned``) is trusted; a tree of 160x160 PNG images is scored as aligned only when the
    median :func:`template_offset` of a sample's faces is within :data:`ALIGN_TOLERANCE`, aligned when it is not,
    and refused (PartialFaceError) when too few faces are found in the sample to tell; anything else is aligned."""
    if aligned:
        print(f"--data {data}: scored as aligned 160x160 faces, as --aligned says (not checked)", file=sys.stderr)
        return True
    photos = f"--data {data}: not a tree of 160x160 PNG faces; aligning it into {out / 'aligned'}"
    if not paths or any(p.suffix.lower() != ".png" for p in paths):
        print(photos, file=sys.stderr)
        return False
    try:
        sampled, offsets = check_alignment(paths, device)
    except PartialFaceError:  # a sampled image is not 160x160
        print(photos, file=sys.stderr)
        return False
    if 2 * len(offsets) < sampled:
        raise PartialFaceError(
            f"--data {data}: 160x160 PNG images, but a face was found in only {len(offsets)} of {sampled} sampled, so "
            "their alignment cannot be checked; give --aligned if they are faces aligned to the benchmark's template")
    median = float(np.median(offsets))
    checked = (f"the faces of {len(offsets)} sampled images are a median {median:.1f} px off the template "
               f"(tolerance {ALIGN_TOLERANCE:g} px)")
    if median <= ALIGN_TOLERANCE:
        print(f"--data {data}: 160x160 PNG faces, scored as aligned: {checked}", file=sys.stderr)
        return True
    print(f"--data {data}: 160x160 PNG images but not aligned: {checked}; aligning them into {out / 'aligned'} "
          "(--aligned scores them as they are)", file=sys.stderr)
    return False


def _visible(bench: Benchmark) -> float:
    fr = [1.0 if p == HOLISTIC else visible_fraction(p, bench.factor) for p in bench.parts]  # type: ignore[arg-type]
    if bench.protocol == "partial-holistic":
        return fr[1]
    return float(np.mean(fr))


def _fmt(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    return f"{row['accuracy']:.2f} ± {row['accuracy_std']:.2f}"


def results_markdown(model_names: Sequence[str], protocol_rows: Sequence[dict[str, Any]], convention: str) -> str:
    """The paper-style table: rows models; columns holistic, then NC and C partial-holistic/same/cross."""
    lines = ["# PartialLFW results", "", "Accuracy in % (mean ± std over folds).", ""]
    lines.append("| model | " + " | ".join(h for _, _, h in TABLE_COLUMNS) + " |")
    lines.append("|---|" + "---:|" * len(TABLE_COLUMNS))
    for m in model_names:
        cells = []
        for proto, setting, _ in TABLE_COLUMNS:
            row = next((r for r in protocol_rows if r["model"] == m and r["protocol"] == proto
                        and r["setting"] == setting), None)
            cells.append(_fmt(row))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "NC: non-centred, C: centred; p-hol / p-same / p-cross: partial-holistic / partial-same / "
              "partial-cross.", "", f"Scoring convention: {convention}", ""]
    return "\n".join(lines)


def coverage_notes(bench_rows: Sequence[dict[str, Any]]) -> list[str]:
    """What a table averages where it is less than PartialLFW (all part combinations x the 9 factors): one line
    per model whose partial protocols all lack the same factors, else one per protocol/setting short of its
    benchmarks. Such a number is not comparable with the paper's."""
    notes: list[str] = []
    by_model: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {}
    for r in bench_rows:
        if r["protocol"] != "holistic":
            by_model.setdefault(r["model"], {}).setdefault((r["protocol"], r["setting"]), []).append(r)
    for model, groups in by_model.items():
        short = {k: rows for k, rows in groups.items()
                 if len(rows) < len(DEFAULT_COMBOS[k[0]]) * len(FACTORS)}  # type: ignore[index]
        if not short:
            continue
        factor_sets = {tuple(sorted({float(r["factor"]) for r in rows})) for rows in groups.values()}
        whole_factors = all(len(rows) == len(DEFAULT_COMBOS[k[0]]) * len({r["factor"] for r in rows})  # type: ignore[index]
                            for k, rows in groups.items())
        if len(factor_sets) == 1 and whole_factors:
            (fs,) = factor_sets
            notes.append(f"{model}: every partial protocol averages {len(fs)} of PartialLFW's {len(FACTORS)} factors "
                         f"({', '.join(f'{f:g}' for f in fs)})")
            continue
        for (protocol, setting), rows in short.items():
            full = len(DEFAULT_COMBOS[protocol]) * len(FACTORS)  # type: ignore[index]
            fs_short = sorted({float(r["factor"]) for r in rows})
            notes.append(f"{model}: {protocol}/{setting} averages {len(rows)} of PartialLFW's {full} benchmarks "
                         f"(factors {', '.join(f'{f:g}' for f in fs_short)})")
    return notes


def write_results(out: Path, results: dict[str, Any]) -> str:
    """``results.json``, ``results.md`` (the table, then :func:`coverage_notes`) and ``per_factor.csv`` of
    ``results`` (as :func:`run_benchmark` returns it) into ``out``, each written atomically; returns the
    markdown."""
    notes = coverage_notes(results["benchmarks"])
    md = results_markdown([m["name"] for m in results["models"]], results["protocols"], results["convention"])
    if notes:
        md += "\nNot the full PartialLFW:\n" + "".join(f"- {n}\n" for n in notes)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode("utf-8"))
    atomic_write_bytes(out / "results.md", md.encode("utf-8"))
    fields = ["model", "protocol", "setting", "combo", "factor", "visible_fraction", "pairs", *METRICS]
    atomic_write_bytes(out / "per_factor.csv", _csv_text(results["benchmarks"], fields).encode("utf-8"))
    return md


def _csv_text(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- the run
def run_benchmark(
    models: Sequence[str | Embedder],
    data: str | os.PathLike[str],
    pairs_file: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    aligned: bool = False,
    landmarks: str | os.PathLike[str] | None = None,
    settings: Sequence[str] = SETTINGS,
    factors: Sequence[float] = FACTORS,
    protocols: Sequence[str] = PROTOCOLS,
    combos: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    device: str = "auto",
    amp: str = "auto",
    infer: str | None = None,
    batch_size: int = 128,
    workers: int = 2,
    flip: bool = False,
    drop_missing: bool = False,
    progress: bool = True,
    report: bool = True,
    stats: dict[str, EmbedStats] | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the results.json content.

    ``aligned``: ``data`` holds aligned 160x160 faces (trusted, not checked); else a tree of 160x160 PNG images is
    checked on a sample (:func:`decide_aligned`) and photos are aligned into ``OUT/aligned``.
    ``models``: ``--model`` values (PATH or NAME=PATH) or ready :class:`Embedder` objects; ``infer``: the
    inference path of the models given as values (``partialface.inference.runners``; default from ``amp``,
    :data:`partialface.evaluation.embedders.AMP_MODES`). Every model is loaded, and every option checked, before
    any image is aligned or embedded.
    ``stats``: if given, filled with each model's :class:`EmbedStats` (images decoded, embeddings computed).
    """
    check_options(batch_size, workers, factors)
    out_p, data_p = Path(out), Path(data)
    pairs = _select_folds(read_pairs(pairs_file), folds)
    benchmarks = build_benchmarks(pairs, settings, factors, protocols, _combo_overrides(combos, list(protocols)))
    if not benchmarks:
        raise PartialFaceError("nothing to score: the chosen --protocols/--combos/--settings leave no benchmark")
    found = resolve_images(pairs, data_p, drop_missing=drop_missing)
    pairs = pairs.keep_only(found)
    dev = resolve_device(device)
    # fail before the long work: every model is loaded (and named) before anything is aligned or embedded
    embedders = [m if isinstance(m, Embedder) else load_embedder(m, dev, amp, infer) for m in models]
    names = [e.name for e in embedders]
    if len(set(names)) != len(names):
        raise PartialFaceError(f"--model: two models are named the same ({', '.join(names)}); use NAME=PATH")
    data_used = data_p
    if not decide_aligned(list(found.values()), data_p, out_p, aligned, dev):
        data_used = out_p / "aligned"  # aligned once, cached and resumable
        _align(found, data_p, out_p, landmarks, workers, device, progress)
        found = resolve_images(pairs, data_used, suffixes=(".png",), drop_missing=drop_missing)
        pairs = pairs.keep_only(found)
    if pairs.dropped:
        print(f"note: dropped {pairs.dropped} of {pairs.dropped + len(pairs)} pairs with missing or unaligned "
              "images (--drop-missing); folds are kept", file=sys.stderr)
    if not len(pairs):
        raise PartialFaceError(f"{pairs_file}: no pairs left to score")
    benchmarks = [Benchmark(b.protocol, b.setting, b.parts, b.factor, pairs) for b in benchmarks]
    keys = pairs.images()
    paths = [found[k] for k in keys]
    variants = required_variants(benchmarks)
    if infer is None and amp == "auto":  # the user chose nothing: say what the machine could do instead
        from partialface.inference.runners import faster_path_note

        for note in {faster_path_note(getattr(e, "path", ""), dev, len(keys) * len(variants)) for e in embedders}:
            if note:
                print(note, file=sys.stderr)
    bench_rows: list[dict[str, Any]] = []
    proto_rows: list[dict[str, Any]] = []
    model_rows: list[dict[str, Any]] = []
    for emb in embedders:
        st = EmbedStats()
        if stats is not None:
            stats[emb.name] = st
        E = embed_dataset(emb, keys, paths, variants, out_p / "embeddings" / f"{cache_name(emb.name)}.npz",
                          flip=flip, batch_size=batch_size, workers=workers, progress=progress, stats=st)
        precision = getattr(emb, "autocast", None)
        model_rows.append({"name": emb.name, "source": emb.source, "embedding_dim": emb.embedding_dim, "flip": flip,
                           "autocast": str(precision).removeprefix("torch.") if precision is not None else "none",
                           "infer": getattr(emb, "path", "")})
        rows, per_protocol = _score_model(emb.name, E, benchmarks, pairs.image_index(), out_p, progress)
        bench_rows += rows
        proto_rows += per_protocol
    results: dict[str, Any] = {
        "convention": CONVENTION,
        "machine": machine(dev),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "pairs_file": str(pairs_file),
        "data": str(data_used),
        "dropped_pairs": int(pairs.dropped),
        "models": model_rows,
        "benchmarks": bench_rows,
        "protocols": proto_rows,
    }
    write_results(out_p, results)
    if report:
        _report(out_p, embedders, paths)
    return results


def _align(
    found: dict[str, Path], data: Path, out: Path, landmarks: str | os.PathLike[str] | None, workers: int,
    device: str, progress: bool,
) -> None:
    """Align the raw images the pairs need into ``out/aligned`` (through links in ``out/raw`` if ``data``
    holds more than they need)."""
    from partialface.detect.dataset import align_dataset

    src = _link_needed(found, data, out / "raw")
    align_dataset(src, out / "aligned", landmarks=landmarks, batch_size=32, workers=workers, device=device,
                  progress=progress)


def machine(device: Any) -> str:
    """Where embeddings were computed, for the record: the CUDA device's name, or the processor
    (:meth:`partialface.inference.hardware.CpuInfo.describe`)."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return f"CUDA {torch.cuda.get_device_name(device)}"
    from partialface.inference.hardware import cpu_info

    return cpu_info().describe()


def check_options(batch_size: int, workers: int, factors: Sequence[float]) -> None:
    if batch_size < 1:
        raise PartialFaceError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 0:
        raise PartialFaceError(f"--workers must be >= 0, got {workers}")
    bad = [f for f in factors if not 0 < f <= max(FACTORS)]
    if bad:
        raise PartialFaceError(f"--factors {bad[0]:g}: size factors must be in (0, {max(FACTORS):g}] (PartialLFW's: "
                               f"{','.join(f'{f:g}' for f in FACTORS)}); a larger part leaves the 160x160 face")


def _score_model(
    name: str, E: dict[str, np.ndarray], benchmarks: Sequence[Benchmark], index: dict[str, int], out: Path,
    progress: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score every benchmark on one model's embeddings ``E`` (variant name -> (N, D)); writes its
    ``scores/<model>.npz``; returns (a row per benchmark, a row per protocol and setting)."""
    from tqdm import tqdm

    bench_rows: list[dict[str, Any]] = []
    per_model: list[tuple[Benchmark, dict[str, float]]] = []
    score_arrays: dict[str, np.ndarray] = {}
    for b in tqdm(benchmarks, desc=f"score {name}", disable=not progress, dynamic_ncols=True):
        sp = b.scored_pairs(index)
        s = cosine_scores(E[str(sp.left)][sp.left_index], E[str(sp.right)][sp.right_index])
        m = score_benchmark(s, sp.same, sp.fold).as_dict()
        metrics = {k: m[k] for k in METRICS}
        per_model.append((b, metrics))
        score_arrays[f"{b.name}|scores"] = s
        score_arrays[f"{b.name}|same"] = sp.same
        score_arrays[f"{b.name}|fold"] = sp.fold
        bench_rows.append({"model": name, "name": b.name, "protocol": b.protocol, "setting": b.setting,
                           "combo": b.combo, "parts": list(b.parts), "factor": b.factor,
                           "visible_fraction": _visible(b), "pairs": len(b), **metrics})
    save_npz(out / "scores" / f"{cache_name(name)}.npz", score_arrays)
    return bench_rows, [{"model": name, **row} for row in aggregate(per_model, by=("protocol", "setting"))]


def _report(out: Path, embedders: Sequence[Embedder], paths: Sequence[Path]) -> None:
    try:
        from partialface.evaluation.report import write_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("note: partialface.evaluation.report is not installed; skipping figures and report.html",
              file=sys.stderr)
        return
    firsts: dict[str, Path] = {}
    for p in paths:  # the first face of up to 4 identities
        firsts.setdefault(p.parent.name, p)
    chosen = list(firsts.values())[:4]
    sample = np.stack([decode_aligned(p) for p in chosen]) if chosen else np.zeros((0, 160, 160, 3), np.uint8)
    path = write_report(out, {e.name: e.module for e in embedders}, sample)
    print(f"report: {path}", file=sys.stderr)
