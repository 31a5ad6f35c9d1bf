"""``--explain OUT.png``: a verification as a picture a person reads at a glance — the two aligned faces with what
the embedding rests on laid over them and how much of each region they show (their visibility estimates,
issue #39), the per-region shares, and the verdict with the operating point used (issue #14).

Attention models: the recalibrated maps sum_k Ã_k, laid on the aligned face through the model's framing.
Other models: each region painted with its occlusion-sensitivity share per pixel (``_Model.regions``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from partialface.api.facade import Face, Verification, load


def heat_map(face: Face, frame: np.ndarray) -> np.ndarray:
    """(160, 160) float in [0, 1]: where ``face``'s embedding rests (module docstring); ``frame``: the part of the
    aligned face the maps cover, (2, 3) from (u, v) in [0, 1]^2 to its pixels (``_Model.frame``)."""
    from partialface.geometry.regions import REGIONS, region_labels

    if face.maps is not None:
        maps = face.maps.sum(0)  # (h, w): Ã already carries s
        h, w = maps.shape
        inv = np.linalg.inv(np.vstack([frame, [0.0, 0.0, 1.0]]))  # aligned pixel -> (u, v)
        yy, xx = np.mgrid[0:160, 0:160].astype(np.float64)  # pixel centres
        u = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
        v = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
        ju, iv = np.floor(u * w).astype(int), np.floor(v * h).astype(int)
        ok = (ju >= 0) & (ju < w) & (iv >= 0) & (iv < h)
        heat = np.zeros((160, 160))
        heat[ok] = maps[iv[ok], ju[ok]]
    elif face.regions is not None:
        labels = region_labels()
        area = np.bincount(labels.ravel(), minlength=len(REGIONS))
        density = np.array([face.regions[r] for r in REGIONS]) / np.maximum(area, 1)
        heat = density[labels]
    else:
        raise ValueError("the face has neither attention maps nor a region account (embed with regions=True)")
    top = heat.max()
    return heat / top if top > 0 else heat


def explain(result: Verification, out: str | os.PathLike[str], model: str | None = None) -> Path:
    """Draw ``result`` (a :func:`partialface.verify` result with regions) into the PNG ``out`` (atomic write)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from partialface.data.images import atomic_write_bytes
    from partialface.geometry.regions import REGIONS

    frame = load(model).frame
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.25]})
    for ax, face, title in zip(axes[:2], result.faces, ("A", "B"), strict=True):
        ax.imshow(face.aligned)
        ax.imshow(heat_map(face, frame), cmap="inferno", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
        if face.visibility is not None:  # what the face shows, per region (the visibility estimate)
            seen = ", ".join(f"{r.replace('_', ' ')} {face.visibility[r]:.0%}" for r in REGIONS)
            ax.text(0.5, -0.04, "visible: " + seen, transform=ax.transAxes, ha="center", va="top", fontsize=6.5,
                    wrap=True)
    ax = axes[2]
    labels = [r.replace("_", " ") for r in REGIONS]
    y = np.arange(len(REGIONS))
    series = [("pair", result.regions, 0.0, "tab:blue")]
    series += [(t, f.regions, o, c) for t, f, o, c in zip(("A", "B"), result.faces, (0.27, -0.27),
                                                          ("tab:gray", "silver"), strict=True)]
    for name, shares, offset, colour in series:
        if shares is not None:
            ax.barh(y + offset, [shares[r] * 100 for r in REGIONS], height=0.25, color=colour, label=name)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("share of what the embedding rests on (%)")
    ax.legend(loc="lower right", fontsize=8)
    verdict = "same person" if result.same else "different people"
    fig.suptitle(f"{verdict}: score {result.score:.3f} {'>=' if result.same else '<'} threshold "
                 f"{result.threshold:.3f} (FAR {result.far:g}, {result.kind}; {result.model})", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(out)
    atomic_write_bytes(path, buf.getvalue())
    return path
