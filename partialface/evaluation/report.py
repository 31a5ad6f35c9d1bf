"""The benchmark report: figures (PNG) and a self-contained ``report.html`` from a benchmark's output folder.

Reads ``out_dir/results.json`` and ``out_dir/scores/<model>.npz`` (arrays ``"<benchmark>|scores"``,
``"<benchmark>|same"``, ``"<benchmark>|fold"``) as written by ``partialface benchmark`` and writes:

- ``figures/accuracy_vs_area_<protocol>_<setting>.png``: 10-fold accuracy (mean, std band) against the
  visible area of the partial image(s), one panel per part combination, one line per model;
- ``figures/roc_<protocol>.png``: ROC curves (log FAR axis), all pairs of a protocol and setting pooled;
- ``figures/attention_<model>.png``: for models whose output has ``A_tilde``, sample faces in a few
  variants with every recalibrated map Ã_k over them and its importance s_k;
- ``report.html``: the paper-style table, the scoring convention, the figures, links to the raw tables.

matplotlib (Agg) is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from partialface.data.images import atomic_write_bytes
from partialface.errors import PartialFaceError
from partialface.evaluation.protocols import HOLISTIC, PROTOCOLS, SETTINGS, TABLE_COLUMNS

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

#: Variants of the sample faces in the attention figures: (label, part, factor, centred).
ATTENTION_VARIANTS: tuple[tuple[str, str | None, float | None, bool], ...] = (
    ("holistic", None, None, False),
    ("lEye 0.3 non-centred", "lEye", 0.3, False),
    ("Mouth 0.3 centred", "Mouth", 0.3, True),
)
#: How many sample faces the attention figures show at most.
MAX_ATTENTION_FACES = 3
_DPI = 100


def safe_name(name: str) -> str:
    """A model name as a file-name stem: anything but letters, digits, '.', '_', '-' becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def format_accuracy(mean: float, std: float) -> str:
    """Table cell of an accuracy in %: 'mean ± std' with two decimals."""
    return f"{mean:.2f} ± {std:.2f}"


def load_results(out_dir: Path) -> dict[str, Any]:
    """``out_dir/results.json`` parsed; PartialFaceError when missing or not the benchmark's JSON."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise PartialFaceError(f"{path}: no results.json; run 'partialface benchmark --out {out_dir}' first")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PartialFaceError(f"{path}: cannot read the results ({e}); rerun the benchmark") from None
    if not isinstance(results, dict) or not isinstance(results.get("benchmarks"), list):
        raise PartialFaceError(f"{path}: not a benchmark results file (no 'benchmarks' list); rerun the benchmark")
    return results


def _model_names(results: Mapping[str, Any]) -> list[str]:
    """Models in report order: results["models"], then any others seen in the rows."""
    names = [str(m["name"]) for m in results.get("models", [])]
    for key in ("benchmarks", "protocols"):
        for row in results.get(key, []):
            names.append(str(row["model"]))
    return list(dict.fromkeys(names))


def _colours(names: Sequence[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: Path) -> Path:
    """Render a figure to PNG and write it atomically; closes the figure."""
    plt = _pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def accuracy_vs_area_figures(results: Mapping[str, Any], fig_dir: Path) -> list[Path]:
    """One figure per partial protocol and setting: accuracy (%) against visible area (%), a panel per part
    combination, a line per model with its std band; each model's holistic accuracy as a dotted line."""
    plt = _pyplot()
    names = _model_names(results)
    colours = _colours(names)
    rows = results.get("benchmarks", [])
    holistic = {r["model"]: float(r["accuracy"]) for r in rows if r["protocol"] == HOLISTIC}
    out: list[Path] = []
    for proto in PROTOCOLS[1:]:
        for setting in SETTINGS:
            sel = [r for r in rows if r["protocol"] == proto and r["setting"] == setting]
            if not sel:
                continue
            combos = list(dict.fromkeys(str(r["combo"]) for r in sel))
            nr, nc = _grid(len(combos))
            fig, axes = plt.subplots(
                nr, nc, figsize=(4.2 * nc, 3.4 * nr + 0.5), squeeze=False, sharex=True, sharey=True
            )
            for ax, combo in zip(axes.flat, combos, strict=False):
                for model in names:
                    pts = sorted(
                        (float(r["visible_fraction"]) * 100, float(r["accuracy"]), float(r["accuracy_std"]))
                        for r in sel
                        if r["combo"] == combo and r["model"] == model
                    )
                    if not pts:
                        continue
                    x, y, s = (np.array(v) for v in zip(*pts, strict=True))
                    c = colours[model]
                    ax.plot(x, y, marker="o", ms=3.5, color=c, label=model)
                    ax.fill_between(x, y - s, y + s, color=c, alpha=0.18, linewidth=0)
                    if model in holistic:
                        ax.axhline(holistic[model], color=c, linestyle=":", linewidth=1)
                ax.set_title(combo, fontsize=10)
                ax.set_xlabel("visible area (%)")
                ax.tick_params(labelbottom=True)
                ax.grid(True, alpha=0.3)
            for ax in axes.flat[len(combos) :]:
                ax.set_visible(False)
            for ax in axes[:, 0]:
                ax.set_ylabel("accuracy (%)")
            handles, labels = axes.flat[0].get_legend_handles_labels()
            fig.suptitle(f"{proto}, {setting}: accuracy vs visible area (dotted: holistic)", fontsize=11)
            fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False, fontsize=9)
            fig.tight_layout(rect=(0, 0.4 / (3.4 * nr + 0.5), 1, 1))
            out.append(_save(fig, fig_dir / f"accuracy_vs_area_{proto}_{setting}.png"))
    return out


def _scores_file(out_dir: Path, model: str) -> Path | None:
    for stem in dict.fromkeys((model, safe_name(model))):
        p = out_dir / "scores" / f"{stem}.npz"
        if p.is_file():
            return p
    return None


def pooled_scores(
    out_dir: Path, results: Mapping[str, Any], model: str, protocol: str, setting: str | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """All pairs of one model, protocol and setting (its benchmarks concatenated): (scores (P,), same (P,)),
    or None when the model has no scores file or none of these benchmarks."""
    path = _scores_file(out_dir, model)
    if path is None:
        return None
    names = [
        str(r["name"])
        for r in results.get("benchmarks", [])
        if r["model"] == model and r["protocol"] == protocol and r["setting"] == setting
    ]
    try:
        with np.load(path, allow_pickle=False) as z:
            have = [n for n in names if f"{n}|scores" in z.files]
            if not have:
                return None
            scores = np.concatenate([np.asarray(z[f"{n}|scores"], dtype=np.float64) for n in have])
            same = np.concatenate([np.asarray(z[f"{n}|same"], dtype=bool) for n in have])
    except (OSError, ValueError, KeyError) as e:
        raise PartialFaceError(f"{path}: cannot read the scores ({e}); rerun the benchmark") from None
    return scores, same


def roc_figures(out_dir: Path, results: Mapping[str, Any], fig_dir: Path) -> list[Path]:
    """One figure per protocol, a panel per setting (holistic: one), a ROC curve per model (log FAR axis)."""
    from sklearn.metrics import auc, roc_curve

    plt = _pyplot()
    names = _model_names(results)
    colours = _colours(names)
    out: list[Path] = []
    for proto in PROTOCOLS:
        settings: list[str | None] = [None] if proto == HOLISTIC else list(SETTINGS)
        panels: list[tuple[str | None, list[tuple[str, np.ndarray, np.ndarray, float]]]] = []
        for setting in settings:
            curves = []
            for model in names:
                pooled = pooled_scores(out_dir, results, model, proto, setting)
                if pooled is None or pooled[1].all() or not pooled[1].any():
                    continue
                fpr, tpr, _ = roc_curve(pooled[1], pooled[0])
                curves.append((model, fpr, tpr, float(auc(fpr, tpr))))
            if curves:
                panels.append((setting, curves))
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
        for ax, (setting, curves) in zip(axes[0], panels, strict=True):
            lo = 1.0
            for model, fpr, tpr, area in curves:
                pos = fpr[fpr > 0]
                lo = min(lo, float(pos.min()) if pos.size else 1.0)
                ax.plot(fpr, tpr, color=colours[model], label=f"{model} (AUC {area:.3f})")
            ax.set_xscale("log")
            ax.set_xlim(max(min(lo, 1e-1) * 0.7, 1e-6), 1.0)
            ax.set_ylim(0.0, 1.01)
            ax.set_xlabel("false accept rate (log)")
            ax.set_ylabel("true accept rate")
            ax.set_title(proto if setting is None else f"{proto}, {setting}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
        fig.suptitle(f"ROC, {proto} (all pairs of the protocol pooled)", fontsize=11)
        fig.tight_layout()
        out.append(_save(fig, fig_dir / f"roc_{proto}.png"))
    return out


def attention_outputs(
    model: torch.nn.Module, faces: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None:
    """Run ``model`` on ``faces`` shown in :data:`ATTENTION_VARIANTS`, fed as in training.

    faces: (n, 160, 160, 3) uint8. Returns (row labels, images (R, 160, 160, 3) uint8,
    A_tilde upsampled (R, K, 160, 160) float32, s (R, K) float32) with R = n x variants (face-major),
    or None when the model's output has no ``A_tilde``.
    """
    import torch
    import torch.nn.functional as F

    from partialface.geometry.partial import PartialFaceBatcher, Variant
    from partialface.models import ModelConfig
    from partialface.models.framing import framing_of, to_model_input

    batch = torch.from_numpy(np.ascontiguousarray(faces))
    batcher = PartialFaceBatcher(batch)
    views = []
    for _, part, factor, centred in ATTENTION_VARIANTS:
        v = Variant() if part is None else Variant(part, factor, centred)  # type: ignore[arg-type]
        views.append(batcher.variant(v).permute(0, 2, 3, 1).contiguous())  # (n, 160, 160, 3)
    images = torch.stack(views, dim=1).reshape(-1, *faces.shape[1:])  # face-major rows
    labels = [f"face {i + 1}, {lab}" for i in range(faces.shape[0]) for lab, *_ in ATTENTION_VARIANTS]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    cfg = getattr(model, "config", None)
    input_size = int(getattr(cfg, "input_size", images.shape[1]))
    framing = framing_of(cfg) if isinstance(cfg, ModelConfig) else "resize"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(to_model_input(images.to(device), input_size, framing=framing))
    finally:
        model.train(was_training)
    a_tilde, s = getattr(out, "A_tilde", None), getattr(out, "s", None)
    if a_tilde is None or s is None:
        return None
    up = F.interpolate(a_tilde.float(), size=images.shape[1:3], mode="bilinear", align_corners=False)
    return labels, images.numpy(), up.cpu().numpy(), s.float().cpu().numpy()


def attention_figure(model: torch.nn.Module, faces: np.ndarray, path: Path, title: str) -> Path | None:
    """The attention overlay figure of one model (see :func:`attention_outputs`), or None without A_tilde.

    A row per image: the image, then every Ã_k (bilinear, 'jet', on one colour scale per row spanning the
    row's range, so the maps' relative weight shows) over it with s_k in the panel title.
    """
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[1:] != (160, 160, 3) or faces.dtype != np.uint8:
        raise ValueError(f"sample_faces must be (n, 160, 160, 3) uint8, got {faces.shape} {faces.dtype}")
    got = attention_outputs(model, faces[:MAX_ATTENTION_FACES])
    if got is None:
        return None
    labels, images, maps, s = got
    plt = _pyplot()
    rows, k = maps.shape[0], maps.shape[1]
    cell = 1.35
    fig, axes = plt.subplots(rows, k + 1, figsize=(cell * (k + 1), cell * rows + 0.6), squeeze=False)
    for r in range(rows):
        vmin, vmax = float(maps[r].min()), float(maps[r].max())
        vmax = vmax if vmax > vmin else vmin + 1e-6
        ax = axes[r, 0]
        ax.imshow(images[r])
        ax.set_title(labels[r], fontsize=7)
        for j in range(k):
            ax = axes[r, j + 1]
            ax.imshow(images[r])
            ax.imshow(maps[r, j], cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
            ax.set_title(rf"$\tilde{{A}}_{{{j + 1}}}$  $s_{{{j + 1}}}$={s[r, j]:.2f}", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    shown = title.replace("$", r"\$")  # a '$' in a model name must not start mathtext
    fig.suptitle(
        rf"{shown}: recalibrated attention maps $\tilde{{A}}_k$ (one colour scale per row) and importance $s_k$",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (cell * rows + 0.6)), pad=0.4, h_pad=0.6, w_pad=0.2)
    return _save(fig, path)


def _protocol_row(results: Mapping[str, Any], model: str, proto: str, setting: str | None) -> Mapping[str, Any] | None:
    for r in results.get("protocols", []):
        if r["model"] == model and r["protocol"] == proto and r.get("setting") == setting:
            return dict(r)
    return None


def results_table_html(results: Mapping[str, Any]) -> str:
    """The paper-style accuracy table (rows: models; columns: :data:`TABLE_COLUMNS`), 'mean ± std' in %."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for *_, h in TABLE_COLUMNS)
    lines = [f"<table class='results'><thead><tr><th>model</th>{head}</tr></thead><tbody>"]
    for model in _model_names(results):
        cells = []
        for proto, setting, _ in TABLE_COLUMNS:
            row = _protocol_row(results, model, proto, setting)
            text = "–" if row is None else format_accuracy(float(row["accuracy"]), float(row["accuracy_std"]))
            cells.append(f"<td>{e(text)}</td>")
        lines.append(f"<tr><th>{e(model)}</th>{''.join(cells)}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def metrics_table_html(results: Mapping[str, Any]) -> str:
    """Every protocol row of results.json: accuracy, AUC, EER, TAR@FAR (fractions shown in %)."""
    e = html.escape
    cols = (
        "model",
        "protocol",
        "setting",
        "benchmarks",
        "accuracy (%)",
        "AUC",
        "EER (%)",
        "TAR@1e-3 (%)",
        "TAR@1e-2 (%)",
    )
    lines = ["<table class='metrics'><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr></thead><tbody>"]
    for r in results.get("protocols", []):
        vals = (
            str(r["model"]),
            str(r["protocol"]),
            "" if r.get("setting") is None else str(r["setting"]),
            str(r.get("benchmarks", "")),
            format_accuracy(float(r["accuracy"]), float(r["accuracy_std"])),
            f"{float(r['auc']):.4f}",
            f"{100 * float(r['eer']):.2f}",
            f"{100 * float(r['tar_far_1e3']):.2f}",
            f"{100 * float(r['tar_far_1e2']):.2f}",
        )
        lines.append("<tr>" + "".join(f"<td>{e(v)}</td>" for v in vals) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
thead th { background: #f0f0f0; } tbody th { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
.convention { white-space: pre-wrap; background: #f7f7f7; padding: 0.8em; border-left: 3px solid #999; }
"""


def render_html(results: Mapping[str, Any], figures: Sequence[Path], out_dir: Path) -> str:
    """The report page; figure paths are linked relative to ``out_dir``."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'><title>partialface benchmark report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>PartialLFW benchmark report</h1>",
        "<p>",
        f"pairs file: <code>{e(str(results.get('pairs_file', '?')))}</code>; ",
        f"data: <code>{e(str(results.get('data', '?')))}</code>; ",
        f"pairs dropped (missing images): {e(str(results.get('dropped_pairs', 0)))}",
        "</p>",
    ]
    models = results.get("models", [])
    if models:
        parts.append("<h2>Models</h2><ul>")
        for m in models:
            parts.append(
                f"<li><b>{e(str(m.get('name')))}</b>: {e(str(m.get('source', '')))}, "
                f"{e(str(m.get('embedding_dim', '?')))}-d embedding, flip {e(str(m.get('flip', False)))}</li>"
            )
        parts.append("</ul>")
    parts += [
        "<h2>Accuracy (%, mean ± std over folds)</h2>",
        "<p>NC: non-centred, C: centred; p-hol: partial-holistic, p-same: partial-same, p-cross: partial-cross. "
        "A partial protocol's number is the mean over its part combinations and size factors "
        "(its ± is the per-benchmark standard deviation over folds, averaged the same way).</p>",
        results_table_html(results),
        "<p>Per benchmark: <a href='per_factor.csv'>per_factor.csv</a> · "
        "<a href='results.json'>results.json</a> · <a href='results.md'>results.md</a></p>",
        "<h2>All metrics per protocol</h2>",
        metrics_table_html(results),
        "<h2>Scoring convention</h2>",
        f"<div class='convention'>{e(str(results.get('convention', '')))}</div>",
    ]
    groups = (
        ("Accuracy vs visible area", "accuracy_vs_area_"),
        ("ROC curves", "roc_"),
        ("Attention maps", "attention_"),
    )
    for title, prefix in groups:
        figs = [f for f in figures if f.name.startswith(prefix)]
        if not figs:
            continue
        parts.append(f"<h2>{e(title)}</h2>")
        for f in figs:
            rel = f.relative_to(out_dir).as_posix()
            parts.append(f"<figure><img src='{e(rel)}' alt='{e(f.stem)}'><figcaption>{e(f.stem)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(out_dir: Path, models: Mapping[str, torch.nn.Module | None], sample_faces: np.ndarray) -> Path:
    """Write the figures into ``out_dir/figures/`` and ``out_dir/report.html``; returns the HTML's path.

    models: benchmark model name -> module (None for models that are not torch modules, e.g. dlib); an
    attention figure is made for each module whose output has A_tilde. sample_faces: (n, 160, 160, 3) uint8
    aligned faces (the first :data:`MAX_ATTENTION_FACES` are shown; n = 0 makes no attention figures).
    """
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    fig_dir = out_dir / "figures"
    figures = accuracy_vs_area_figures(results, fig_dir)
    figures += roc_figures(out_dir, results, fig_dir)
    faces = np.asarray(sample_faces)
    if faces.size:
        for name, model in models.items():
            if model is None:
                continue
            fig = attention_figure(model, faces, fig_dir / f"attention_{safe_name(name)}.png", name)
            if fig is not None:
                figures.append(fig)
    path = out_dir / "report.html"
    atomic_write_bytes(path, render_html(results, figures, out_dir).encode("utf-8"))
    return path
