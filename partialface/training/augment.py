"""Online partial-face augmentation, batched in torch on the batch's device.

Two halves, so the random draws are cheap and reproducible while the pixel work runs on the GPU:

1. :func:`sample_params` draws the augmentation of ONE sample from a numpy Generator (the data pipeline
   seeds it from (seed, epoch, sample index), so the result does not depend on worker count, DDP world
   size or where a resumed run restarts). A sample's parameters are a float64 row of ``N_PARAMS``:
   [flip, part (-1 = whole face, else an index into template.PARTS), factor, centred, jitter x, jitter y,
   scale (1 = no resolution jitter), occluder (0 = none, else 1 + an index into ``augment.occluders``),
   occluder level, occluder look].
2. :func:`augment_batch` applies a batch of parameter rows to a uint8 batch (B, 160, 160, 3).

Order per sample: horizontal flip -> resolution jitter -> occluder (whole faces only; an
:class:`partialface.geometry.occlude.OccluderBank` look, kind "face" takes the next sample of the batch) ->
keep the part's rectangle (grey elsewhere) -> centring translation. The flip comes first, so a part name
always refers to the OUTPUT image: "lEye" is the rectangle around the eye on the image's left, i.e. for a
flipped sample the person's right eye (whose mirrored position is near the template's rEye). The rectangle is
``template.part_rect(part, factor, centre=part_centre + jitter)`` (inclusive, clipped), exactly the
benchmark's for zero jitter. Centring translates by ``(S/2 - cx', S/2 - cy')`` where (cx', cy') is the
jittered centre: "bilinear" reproduces OpenCV's ``warpAffine`` fixed-point bilinear shift (1/32 pixel
steps, weights (32 - a)(32 - b), rounding (sum + 512) >> 10 — bit-exact to
``partialface.geometry.partial_face(..., centred=True)`` for zero jitter), "integer" rounds the shift
to whole pixels (round half up) and copies. Pixels shifted in from outside are GREY.
"""

from __future__ import annotations

from functools import cache, partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from partialface.geometry.template import GREY, IMAGE_SIZE, PARTS, Part, half_extent, part_centre, part_rect
from partialface.geometry.warp import fixed_point_blend, fixed_point_shift, fixed_point_shift_t
from partialface.training.config import AugmentConfig

FLIP, PART, FACTOR, CENTRED, JX, JY, SCALE, OCC, OCC_LEVEL, OCC_LOOK = range(10)
N_PARAMS = 10
WHOLE = -1


def sample_params(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One sample's augmentation: (N_PARAMS,) float64. The same numbers are drawn whatever the options,
    so changing one probability does not reshuffle the others."""
    u = rng.random(12)  # the first 9 draws are those of the options before occluders: same rows as before
    out = np.zeros(N_PARAMS, dtype=np.float64)
    out[FLIP] = float(u[0] < cfg.hflip)
    whole = (not cfg.enabled) or u[1] < cfg.p_whole
    part = cfg.parts[min(int(u[2] * len(cfg.parts)), len(cfg.parts) - 1)]
    out[PART] = WHOLE if whole else PARTS.index(part)
    out[FACTOR] = cfg.factor_min + (cfg.factor_max - cfg.factor_min) * u[3]
    out[CENTRED] = float(u[4] < cfg.p_centred)
    out[JX] = cfg.jitter * (2.0 * u[5] - 1.0)
    out[JY] = cfg.jitter * (2.0 * u[6] - 1.0)
    out[SCALE] = cfg.lowres_min + (1.0 - cfg.lowres_min) * u[8] if u[7] < cfg.p_lowres else 1.0
    if out[PART] == WHOLE and u[9] < cfg.p_occlude:
        out[OCC] = 1 + int(rng.integers(len(cfg.occluders)))
        out[OCC_LEVEL] = min(int(u[10] * cfg.occluder_levels), cfg.occluder_levels - 1)
        out[OCC_LOOK] = min(int(u[11] * cfg.occluder_looks), cfg.occluder_looks - 1)
    return out


def fixed_params(
    part: Part | None, factor: float = 0.0, centred: bool = False, flip: bool = False, n: int = 1
) -> np.ndarray:
    """Parameter rows (n, N_PARAMS) for a fixed variant with no jitter (e.g. the benchmark's)."""
    row = np.zeros(N_PARAMS, dtype=np.float64)
    row[FLIP] = float(flip)
    row[PART] = WHOLE if part is None else PARTS.index(part)
    row[FACTOR] = factor
    row[CENTRED] = float(centred)
    row[SCALE] = 1.0
    return np.tile(row, (n, 1))


def sample_rect(params: np.ndarray) -> tuple[int, int, int, int]:
    """The kept rectangle (x1, y1, x2, y2), inclusive and clipped, of a partial sample's parameter row."""
    part = PARTS[int(params[PART])]
    cx, cy = part_centre(part)
    r = part_rect(part, float(params[FACTOR]), centre=(cx + float(params[JX]), cy + float(params[JY])))
    r = r.clipped(IMAGE_SIZE)
    return r.x1, r.y1, r.x2, r.y2


def _window_loop(images: Tensor, iy: list[int], ix: list[int], h: int, w: int) -> Tensor:
    """images (n, H, W, 3) uint8; per-sample integer offsets -> uint8 (n, h, w, 3) with
    out[b, y, x] = images[b, y + iy[b], x + ix[b]], GREY off the image. One slice copy per sample."""
    n, H, W, _ = images.shape
    out = torch.full((n, h, w, 3), GREY, dtype=torch.uint8, device=images.device)
    for b in range(n):
        y0, y1 = max(0, -iy[b]), min(h, H - iy[b])
        x0, x1 = max(0, -ix[b]), min(w, W - ix[b])
        if y0 < y1 and x0 < x1:
            out[b, y0:y1, x0:x1] = images[b, y0 + iy[b] : y1 + iy[b], x0 + ix[b] : x1 + ix[b]]
    return out


def _window_gather(images: Tensor, iy: Tensor, ix: Tensor, h: int, w: int) -> Tensor:
    """:func:`_window_loop` with offsets as (n,) int64 tensors on the images' device: one batched gather,
    no per-sample work and no host synchronisation."""
    n, H, W, _ = images.shape
    dev = images.device
    sy = torch.arange(h, device=dev)[None, :] + iy[:, None]  # (n, h)
    sx = torch.arange(w, device=dev)[None, :] + ix[:, None]  # (n, w)
    valid = (((sy >= 0) & (sy < H))[:, :, None] & ((sx >= 0) & (sx < W))[:, None, :])[..., None]
    bi = torch.arange(n, device=dev)[:, None, None]
    g = images[bi, sy.clamp(0, H - 1)[:, :, None], sx.clamp(0, W - 1)[:, None, :]]
    return torch.where(valid, g, torch.full_like(g, GREY))


def _translate_gather(images: Tensor, dx: Tensor, dy: Tensor, mode: str) -> Tensor:
    """Batched translation by float64 shift tensors (n,) on the images' device (0 = unchanged)."""
    _, H, W, _ = images.shape
    if mode == "integer":
        return _window_gather(images, -torch.floor(dy + 0.5).long(), -torch.floor(dx + 0.5).long(), H, W)
    ix, ax = fixed_point_shift_t(dx)
    iy, ay = fixed_point_shift_t(dy)
    win = _window_gather(images, iy, ix, H + 1, W + 1)
    return fixed_point_blend(win, ax.float()[:, None, None, None], ay.float()[:, None, None, None])


def translate(
    images: Tensor,
    dx: list[float],
    dy: list[float],
    mode: str = "bilinear",
    backend: str = "auto",
    boxes: list[tuple[int, int, int, int]] | None = None,
) -> Tensor:
    """Translate each image by (dx[b], dy[b]) pixels, GREY border: (n, H, W, 3) uint8 -> same.

    "bilinear": OpenCV warpAffine's fixed-point bilinear (see the module docstring); "integer": the shift
    rounded half up to whole pixels. backend "loop" (one slice per sample; default on CPU) or "gather"
    (batched indexing; default elsewhere) — same bytes. ``boxes`` (x1, y1, x2, y2 inclusive, per image):
    where the image may differ from GREY (everything else must be GREY); "loop" then only blends those.
    """
    n, H, W, _ = images.shape
    if mode not in ("bilinear", "integer"):
        raise ValueError(f"centring mode must be 'bilinear' or 'integer', got {mode!r}")
    if backend == "auto":
        backend = "loop" if images.device.type == "cpu" else "gather"
    if backend == "gather":
        t = partial(torch.tensor, dtype=torch.float64, device=images.device)
        return _translate_gather(images, t(dx), t(dy), mode)
    if mode == "integer":
        return _window_loop(images, [-int(np.floor(d + 0.5)) for d in dy], [-int(np.floor(d + 0.5)) for d in dx], H, W)
    out = torch.full_like(images, GREY)
    for b in range(n):
        (sx, ax), (sy, ay) = fixed_point_shift(dx[b]), fixed_point_shift(dy[b])
        x1, y1, x2, y2 = boxes[b] if boxes is not None else (0, 0, W - 1, H - 1)
        # output pixels whose 2x2 source taps (y + sy .. y + sy + 1) touch the box
        oy0, oy1 = max(0, y1 - sy - 1), min(H - 1, y2 - sy)
        ox0, ox1 = max(0, x1 - sx - 1), min(W - 1, x2 - sx)
        if oy0 > oy1 or ox0 > ox1:
            continue
        win = _window_loop(images[b : b + 1], [oy0 + sy], [ox0 + sx], oy1 - oy0 + 2, ox1 - ox0 + 2)
        out[b, oy0 : oy1 + 1, ox0 : ox1 + 1] = fixed_point_blend(win[0], float(ax), float(ay))
    return out


def resolution_jitter(image: Tensor, scale: float) -> Tensor:
    """One image (H, W, 3) uint8 down-sampled to round(scale * side) (bilinear, antialiased) and back up
    (bilinear)."""
    H, W, _ = image.shape
    small = (max(1, round(H * scale)), max(1, round(W * scale)))
    x = image.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)


@cache
def _centre_table(device: torch.device) -> Tensor:
    """Part centres (len(PARTS), 2) float64 on ``device``, from template.part_centre."""
    return torch.tensor([part_centre(p) for p in PARTS], dtype=torch.float64, device=device)


@cache
def _bank(kind: str, coverage: float, looks: int, masks: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(layer (L, 160, 160, 3) uint8, mask (L, 160, 160) bool, shift (L, 2)) of an OccluderBank, drawn once; kinds
    ``real-*``: look j is :func:`partialface.geometry.realistic.occlude_aligned_realistic` with seed j on a mid-grey
    face (the template's landmarks; ``coverage`` unused), ``masks`` MaskTheFace's folder for real-mask."""
    if kind.startswith("real-"):
        from partialface.geometry.realistic import load_mask_templates, occlude_aligned_realistic

        real = kind.removeprefix("real-")
        templates = load_mask_templates(masks) if real == "mask" else None
        grey = np.full((160, 160, 3), 128, np.uint8)
        drawn = [occlude_aligned_realistic(grey, real, seed=j, masks=templates) for j in range(looks)]
        return (np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn]),
                np.zeros((looks, 2), np.float32))
    from partialface.geometry.occlude import OccluderBank

    bank = OccluderBank(kind, coverage, looks, seed=0)
    return bank.layer, bank.mask, bank.shift


def occluder_levels(cfg: AugmentConfig) -> list[float]:
    """The coverage of each occluder level: ``occluder_levels`` even steps over ``occlude_coverage``."""
    lo, hi = cfg.occlude_coverage
    n = cfg.occluder_levels
    return [lo] if n == 1 else [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _occlude_rows(x: Tensor, p: np.ndarray, cfg: AugmentConfig | None) -> Tensor:
    """Lay each row's occluder (column OCC > 0) on its face of x (B, 160, 160, 3) uint8, on x's device; kind
    "face" puts the next sample of the batch in front, moved by the look's shift rounded to whole pixels."""
    rows = np.flatnonzero(p[:, OCC] > 0)
    if not rows.size or cfg is None:
        return x
    out = x.clone()
    levels = occluder_levels(cfg)
    for i in rows:
        kind = cfg.occluders[int(p[i, OCC]) - 1]
        layer, mask, shift = _bank(kind, levels[int(p[i, OCC_LEVEL])], cfg.occluder_looks, cfg.masks)
        j = int(p[i, OCC_LOOK]) % len(mask)
        m = torch.from_numpy(mask[j]).to(x.device)
        if kind == "face":
            dx, dy = (int(np.floor(v + 0.5)) for v in shift[j])
            src = torch.roll(x[(int(i) + 1) % x.shape[0]], shifts=(dy, dx), dims=(0, 1))
        else:
            src = torch.from_numpy(layer[j]).to(x.device)
        out[int(i)] = torch.where(m[:, :, None], src, out[int(i)])
    return out


def augment_batch(
    images: Tensor, params: np.ndarray | Tensor, centring: str = "bilinear", backend: str = "auto",
    occlusion: AugmentConfig | None = None,
) -> tuple[Tensor, Tensor]:
    """Apply parameter rows to a batch of aligned faces.

    images: (B, 160, 160, 3) uint8 on any device (not modified); params: (B, N_PARAMS) (numpy or a tensor,
    e.g. the DataLoader's pinned CPU tensor).
    Returns (augmented (B, 160, 160, 3) uint8 on the same device, part labels (B,) long on the CPU:
    -1 = whole face, else the index into template.PARTS of the part kept, named in the output image).
    backend "loop" (per-sample slices on the samples that need them; CPU default) or "gather" (every
    step batched over the whole batch from one non-blocking copy of ``params``: no host synchronisation,
    GPU default). Both give the same bytes. ``occlusion``: the config whose occluder options the rows' occluder
    columns index (needed when a row has one).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"images must be (B, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) uint8, got {tuple(images.shape)}")
    if centring not in ("bilinear", "integer"):
        raise ValueError(f"centring mode must be 'bilinear' or 'integer', got {centring!r}")
    p = params.detach().cpu().numpy() if isinstance(params, Tensor) else np.asarray(params, dtype=np.float64)
    if p.shape != (images.shape[0], N_PARAMS):
        raise ValueError(f"params must be ({images.shape[0]}, {N_PARAMS}), got {p.shape}")
    labels = torch.from_numpy(p[:, PART].astype(np.int64))
    if backend == "auto":
        backend = "loop" if images.device.type == "cpu" else "gather"
    if (p[:, OCC] > 0).any() and occlusion is None:
        raise ValueError("rows with an occluder need the config that names the occluders (occlusion=)")
    if backend == "gather":
        pt = params if isinstance(params, Tensor) else torch.from_numpy(p)
        return _augment_gather(images, pt.to(images.device, torch.float64, non_blocking=True), p, centring,
                               occlusion), labels
    dev = images.device
    out = images.clone()
    flip = np.flatnonzero(p[:, FLIP] > 0.5)
    if flip.size:
        idx = torch.from_numpy(flip).to(dev)
        out[idx] = out[idx].flip(2)
    for i in np.flatnonzero(p[:, SCALE] < 1.0):
        out[int(i)] = resolution_jitter(out[int(i)], float(p[i, SCALE]))
    out = _occlude_rows(out, p, occlusion)
    for i in np.flatnonzero(p[:, PART] >= 0):
        x1, y1, x2, y2 = sample_rect(p[i])
        masked = torch.full_like(out[i], GREY)
        if x1 <= x2 and y1 <= y2:
            masked[y1 : y2 + 1, x1 : x2 + 1] = out[i, y1 : y2 + 1, x1 : x2 + 1]
        if p[i, CENTRED] > 0.5:
            cx, cy = part_centre(PARTS[int(p[i, PART])])
            dx = IMAGE_SIZE / 2 - (cx + float(p[i, JX]))
            dy = IMAGE_SIZE / 2 - (cy + float(p[i, JY]))
            masked = translate(masked[None], [dx], [dy], centring, "loop", [(x1, y1, x2, y2)])[0]
        out[int(i)] = masked
    return out, labels


def _augment_gather(images: Tensor, P: Tensor, p: np.ndarray, centring: str,
                    occlusion: AugmentConfig | None = None) -> Tensor:
    """The "gather" backend: P (B, N_PARAMS) float64 on the images' device; ``p`` is the host copy, used
    only for the (rare, per-sample) resolution jitter. The rectangle is template.part_rect's arithmetic on
    float64 tensors (same IEEE operations as the Python floats, int() = trunc), so the bytes match."""
    x = torch.where((P[:, FLIP] > 0.5)[:, None, None, None], images.flip(2), images)
    low = np.flatnonzero(p[:, SCALE] < 1.0)
    if low.size:
        x = x.clone()
        for i in low:
            x[int(i)] = resolution_jitter(x[int(i)], float(p[i, SCALE]))
    x = _occlude_rows(x, p, occlusion)
    part = P[:, PART].long()
    partial_ = part >= 0
    centre = _centre_table(images.device)[part.clamp_min(0)]
    cx = centre[:, 0] + P[:, JX]
    cy = centre[:, 1] + P[:, JY]
    hw, hh = half_extent(P[:, FACTOR])  # type: ignore[arg-type]
    x1, x2 = torch.trunc(cx - hw), torch.trunc(cx + hw)
    y1, y2 = torch.trunc(cy - hh), torch.trunc(cy + hh)
    pos = torch.arange(IMAGE_SIZE, device=images.device, dtype=torch.float64)
    in_x = (pos[None, :] >= x1[:, None]) & (pos[None, :] <= x2[:, None])  # (B, W)
    in_y = (pos[None, :] >= y1[:, None]) & (pos[None, :] <= y2[:, None])  # (B, H)
    keep = (in_y[:, :, None] & in_x[:, None, :]) | ~partial_[:, None, None]
    x = torch.where(keep[..., None], x, torch.full_like(x, GREY))
    centred = partial_ & (P[:, CENTRED] > 0.5)
    if bool(p[:, CENTRED].astype(bool)[p[:, PART] >= 0].any()):
        zero = torch.zeros_like(cx)
        dx = torch.where(centred, IMAGE_SIZE / 2 - cx, zero)
        dy = torch.where(centred, IMAGE_SIZE / 2 - cy, zero)
        x = _translate_gather(x, dx, dy, centring)  # a zero shift leaves a sample unchanged (weights 32/0)
    return x
