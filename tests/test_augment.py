"""Partial-face training augmentation: benchmark geometry, flips, centring, sampling, backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partialface.errors import PartialFaceError
from partialface.geometry import partial_face
from partialface.geometry.template import FACTORS, GREY, PARTS, part_rect
from partialface.training.augment import (
    CENTRED,
    FACTOR,
    FLIP,
    JX,
    JY,
    PART,
    SCALE,
    WHOLE,
    augment_batch,
    fixed_params,
    resolution_jitter,
    sample_params,
    translate,
)
from partialface.training.config import AugmentConfig


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Two random 'aligned faces' (2, 160, 160, 3) uint8: every pixel distinct enough to catch shifts."""
    return np.random.default_rng(7).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)


def _all_variants(centred: bool) -> np.ndarray:
    return np.concatenate([fixed_params(p, f, centred) for p in PARTS for f in FACTORS])


@pytest.mark.parametrize("backend", ["loop", "gather"])
@pytest.mark.parametrize("centred", [False, True])
def test_zero_jitter_is_pixel_identical_to_the_benchmark(faces: np.ndarray, centred: bool, backend: str) -> None:
    # All 36 part x factor variants of one face in one batch, against the exact per-image generator.
    params = _all_variants(centred)
    batch = torch.from_numpy(np.repeat(faces[:1], len(params), axis=0))
    out, labels = augment_batch(batch, params, "bilinear", backend)
    k = 0
    for p in PARTS:
        for f in FACTORS:
            assert np.array_equal(out[k].numpy(), partial_face(faces[0], p, f, centred)), (p, f, centred)
            assert labels[k] == PARTS.index(p)
            k += 1


def test_hand_computed_rectangle_with_jitter(faces: np.ndarray) -> None:
    # Nose (79.71, 98.37) + jitter (2.5, -1.5), f = 0.2: half extents 15 + 24 = 39, 10 + 21 = 31 ->
    # x1 = int(82.21 - 39) = 43, x2 = int(121.21) = 121, y1 = int(96.87 - 31) = 65, y2 = int(127.87) = 127.
    row = fixed_params("Nose", 0.2)
    row[0, JX], row[0, JY] = 2.5, -1.5
    out, _ = augment_batch(torch.from_numpy(faces[:1]), row)
    o = out[0].numpy()
    expect = np.full_like(faces[0], GREY)
    expect[65:128, 43:122] = faces[0, 65:128, 43:122]
    assert np.array_equal(o, expect)


def test_integer_centring_is_a_whole_pixel_shift(faces: np.ndarray) -> None:
    # Mouth centre (79.71, 121.33): shift (80 - 79.71, 80 - 121.33) = (0.29, -41.33) -> rounded (0, -41).
    out, _ = augment_batch(torch.from_numpy(faces[:1]), fixed_params("Mouth", 0.3, centred=True), "integer")
    nc = partial_face(faces[0], "Mouth", 0.3, centred=False)
    expect = np.full_like(nc, GREY)
    expect[: 160 - 41] = nc[41:]
    assert np.array_equal(out[0].numpy(), expect)


def test_jittered_centring_puts_the_rectangle_centre_on_the_image_centre(faces: np.ndarray) -> None:
    # With integer centring and integer-valued shifts, the kept rectangle (non-grey) must be centred at 80.
    white = np.full((1, 160, 160, 3), 255, dtype=np.uint8)
    for jx, jy in ((3.0, -2.0), (-2.71, 1.63)):
        row = fixed_params("lEye", 0.25, centred=True)
        row[0, JX], row[0, JY] = jx, jy
        out, _ = augment_batch(torch.from_numpy(white), row, "integer")
        ys, xs = np.nonzero(out[0, :, :, 0].numpy() == 255)
        # the rectangle is 2*(15+30)+1 = 91 (+-1 for truncation) wide: its centre lands within 1 px of 80
        assert abs((xs.min() + xs.max()) / 2 - 80) <= 1.0 and abs((ys.min() + ys.max()) / 2 - 80) <= 1.0


def test_flip_comes_first_so_lEye_is_the_persons_right_eye(faces: np.ndarray) -> None:
    f = 0.3
    row = fixed_params("lEye", f, flip=True)
    out, labels = augment_batch(torch.from_numpy(faces[:1]), row)
    mirrored = np.ascontiguousarray(faces[0, :, ::-1])
    assert np.array_equal(out[0].numpy(), partial_face(mirrored, "lEye", f, False))
    assert labels.tolist() == [PARTS.index("lEye")]
    # In the ORIGINAL image, the kept pixels are the mirror of the lEye rectangle, which is (within the
    # template's 0.5 px asymmetry) the rEye rectangle: the label names the output image's left eye.
    r = part_rect("lEye", f).clipped()
    orig_x1, orig_x2 = 159 - r.x2, 159 - r.x1
    re = part_rect("rEye", f).clipped()
    assert abs(orig_x1 - re.x1) <= 1 and abs(orig_x2 - re.x2) <= 1
    assert np.array_equal(
        out[0, r.y1 : r.y2 + 1, r.x1 : r.x2 + 1].numpy(), faces[0, r.y1 : r.y2 + 1, orig_x1 : orig_x2 + 1][:, ::-1]
    )


def test_whole_faces_are_untouched(faces: np.ndarray) -> None:
    cfg = AugmentConfig(p_whole=1.0, hflip=0.0, p_lowres=0.0)
    rng = np.random.default_rng(0)
    params = np.stack([sample_params(cfg, rng) for _ in range(2)])
    assert (params[:, PART] == WHOLE).all()
    out, labels = augment_batch(torch.from_numpy(faces), params)
    assert torch.equal(out, torch.from_numpy(faces)) and labels.tolist() == [-1, -1]
    # enabled=False also keeps every face whole
    cfg = AugmentConfig(enabled=False, p_whole=0.0, hflip=0.0)
    assert all(sample_params(cfg, rng)[PART] == WHOLE for _ in range(50))


def test_input_is_not_modified(faces: np.ndarray) -> None:
    x = torch.from_numpy(faces.copy())
    augment_batch(x, np.concatenate([fixed_params("Nose", 0.1, True, flip=True), fixed_params(None, flip=True)]))
    assert np.array_equal(x.numpy(), faces)


def test_sample_params_follow_the_options() -> None:
    cfg = AugmentConfig(
        p_whole=0.3,
        parts=("lEye", "Mouth"),
        factor_min=0.2,
        factor_max=0.4,
        p_centred=0.25,
        jitter=2.0,
        hflip=0.5,
        p_lowres=0.1,
        lowres_min=0.5,
    )
    rng = np.random.default_rng(1)
    p = np.stack([sample_params(cfg, rng) for _ in range(4000)])
    whole = p[:, PART] == WHOLE
    assert abs(whole.mean() - 0.3) < 0.03
    assert set(np.unique(p[~whole, PART]).tolist()) == {PARTS.index("lEye"), PARTS.index("Mouth")}
    assert p[:, FACTOR].min() >= 0.2 and p[:, FACTOR].max() <= 0.4
    assert abs(p[:, CENTRED].mean() - 0.25) < 0.03 and abs(p[:, FLIP].mean() - 0.5) < 0.03
    assert np.abs(p[:, [JX, JY]]).max() <= 2.0 and np.abs(p[:, JX]).max() > 1.9
    low = p[:, SCALE] < 1.0
    assert abs(low.mean() - 0.1) < 0.02 and p[low, SCALE].min() >= 0.5
    # the same generator state gives the same draw; other options do not reshuffle the other numbers
    a = sample_params(cfg, np.random.default_rng([3, 4, 5]))
    b = sample_params(
        AugmentConfig(
            p_whole=0.3, parts=("lEye", "Mouth"), factor_min=0.2, factor_max=0.4, p_centred=0.25, jitter=2.0, hflip=0.0
        ),
        np.random.default_rng([3, 4, 5]),
    )
    assert a[FACTOR] == b[FACTOR] and a[JX] == b[JX] and a[PART] == b[PART]


@pytest.mark.parametrize("preset", [None, "paper", "cpu", "dlib"])
def test_the_papers_augmentation_trains_on_non_centred_partial_faces_only(preset: str | None) -> None:
    # spec (method.md): the parts are NOT centred in training; centring is an ablation option
    from partialface.training.config import TrainConfig

    cfg = AugmentConfig() if preset is None else TrainConfig.from_yaml(preset).augment
    assert cfg.p_centred == 0.0
    p = np.stack([sample_params(cfg, np.random.default_rng([7, i])) for i in range(2000)])
    partial = p[:, PART] != WHOLE
    assert partial.mean() > 0.5 and not p[partial, CENTRED].any()


def test_backends_agree_on_random_jittered_batches(faces: np.ndarray) -> None:
    cfg = AugmentConfig(p_whole=0.1, p_centred=0.6, jitter=4.0, hflip=0.5, p_lowres=0.3)
    rng = np.random.default_rng(5)
    params = np.stack([sample_params(cfg, rng) for _ in range(24)])
    batch = torch.from_numpy(np.repeat(faces, 12, axis=0))
    assert (params[:, SCALE] < 1).any() and (params[:, CENTRED] > 0).any() and (params[:, PART] == WHOLE).any()
    for mode in ("bilinear", "integer"):
        a, la = augment_batch(batch, params, mode, "loop")
        b, lb = augment_batch(batch, torch.from_numpy(params), mode, "gather")
        assert torch.equal(a, b) and torch.equal(la, lb), mode


def test_translate_bilinear_half_pixel_is_the_rounded_mean() -> None:
    # A shift by exactly +0.5 px in x: OpenCV's fixed point gives weights 16/16, result (a + b + 1) >> 1.
    img = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 160, 160, 3), dtype=np.uint8))
    out = translate(img, [0.5], [0.0])[0].numpy().astype(int)
    src = img[0].numpy().astype(int)
    assert np.array_equal(out[:, 1:], (src[:, :-1] + src[:, 1:] + 1) >> 1)
    assert np.array_equal(out[:, 0], (GREY + src[:, 0] + 1) >> 1)


def test_resolution_jitter() -> None:
    flat = torch.full((160, 160, 3), 77, dtype=torch.uint8)
    assert torch.equal(resolution_jitter(flat, 0.3), flat)
    noise = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (160, 160, 3), dtype=np.uint8))
    low = resolution_jitter(noise, 0.25).float()
    # high frequencies are gone: neighbouring pixels become much more alike
    assert (low[:, 1:] - low[:, :-1]).abs().mean() < 0.3 * (noise[:, 1:].float() - noise[:, :-1].float()).abs().mean()
    row = fixed_params(None)
    row[0, SCALE] = 0.25
    out, _ = augment_batch(noise[None], row)
    assert torch.equal(out[0], resolution_jitter(noise, 0.25))


# ---------------------------------------------------------------------------------------------- occluders
def test_occluder_rows_leave_the_other_draws_alone() -> None:
    from partialface.training.augment import OCC, OCC_LEVEL, OCC_LOOK

    plain = AugmentConfig(p_whole=0.5)
    occluding = AugmentConfig(p_whole=0.5, p_occlude=1.0, occluders=("mask", "hand"), occluder_levels=2,
                              occluder_looks=4)
    a = np.stack([sample_params(plain, np.random.default_rng([0, i])) for i in range(400)])
    b = np.stack([sample_params(occluding, np.random.default_rng([0, i])) for i in range(400)])
    assert np.array_equal(a[:, :OCC], b[:, :OCC]) and (a[:, OCC] == 0).all()
    whole = b[:, PART] == WHOLE
    assert (b[whole, OCC] > 0).all() and (b[~whole, OCC] == 0).all()  # only whole faces wear one
    assert set(b[whole, OCC]) == {1.0, 2.0} and set(b[whole, OCC_LEVEL]) == {0.0, 1.0}
    assert set(b[whole, OCC_LOOK]) <= {0.0, 1.0, 2.0, 3.0}


def test_occluded_rows_are_the_banks_occluders_on_both_backends() -> None:
    from partialface.geometry.occlude import occlude
    from partialface.training.augment import OCC, OCC_LEVEL, OCC_LOOK, occluder_levels

    cfg = AugmentConfig(p_occlude=1.0, occluders=("sunglasses", "face"), occlude_coverage=(0.2, 0.4),
                        occluder_levels=2, occluder_looks=3)
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 256, (3, 160, 160, 3), dtype=np.uint8))
    rows = fixed_params(None, n=3)
    rows[0, [OCC, OCC_LEVEL, OCC_LOOK]] = (1, 1, 2)  # sunglasses at coverage 0.4, look 2
    rows[1, [OCC, OCC_LEVEL, OCC_LOOK]] = (2, 0, 1)  # the next face in front, coverage 0.2, look 1
    loop, _ = augment_batch(images, rows, backend="loop", occlusion=cfg)
    gather, _ = augment_batch(images, rows, backend="gather", occlusion=cfg)
    assert torch.equal(loop, gather)
    assert occluder_levels(cfg) == pytest.approx([0.2, 0.4])
    want, _ = occlude(images[0].numpy(), "sunglasses", coverage=0.4, seed=2)  # bank seed 0: look j is seed j
    assert np.array_equal(loop[0].numpy(), want)
    _, mask = occlude(images[1].numpy(), "face", coverage=0.2, seed=1, other=images[2].numpy())
    assert torch.equal(loop[1][torch.from_numpy(~mask)], images[1][torch.from_numpy(~mask)])
    assert not torch.equal(loop[1], images[1]) and torch.equal(loop[2], images[2])
    with pytest.raises(ValueError, match="need the config"):
        augment_batch(images, rows)


def test_realistic_occluders_in_training() -> None:
    """Kinds real-*: look j is the realistic occluder of seed j drawn on a grey face, laid by its hidden mask."""
    from partialface.geometry.realistic import occlude_aligned_realistic
    from partialface.training.augment import OCC, OCC_LOOK

    cfg = AugmentConfig(p_occlude=1.0, occluders=("real-hand", "real-crop", "real-sunglasses"), occluder_looks=4)
    rng = np.random.default_rng(2)
    images = torch.from_numpy(rng.integers(0, 256, (3, 160, 160, 3), dtype=np.uint8))
    rows = fixed_params(None, n=3)
    rows[:, OCC] = (1, 2, 3)
    rows[:, OCC_LOOK] = (3, 1, 0)
    out, _ = augment_batch(images, rows, occlusion=cfg)
    grey = np.full((160, 160, 3), 128, np.uint8)
    for i, (kind, look) in enumerate((("hand", 3), ("crop", 1), ("sunglasses", 0))):
        layer, hidden = occlude_aligned_realistic(grey, kind, seed=look)
        assert hidden.any()
        assert np.array_equal(out[i].numpy()[hidden], layer[hidden])
        assert np.array_equal(out[i].numpy()[~hidden], images[i].numpy()[~hidden])
    with pytest.raises(PartialFaceError, match=r"augment\.masks"):
        AugmentConfig(p_occlude=0.5, occluders=("real-mask",), masks="/nonexistent")


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"p_occlude": 1.5}, "augment.p_occlude"),
    ({"occluders": ("helmet",)}, "augment.occluders"),
    ({"occlude_coverage": (0.5, 0.2)}, "augment.occlude_coverage"),
    ({"occluder_looks": 0}, "occluder_looks"),
])
def test_occluder_options_are_checked(overrides: dict, needle: str) -> None:
    with pytest.raises(PartialFaceError, match=needle):
        AugmentConfig(**overrides)
