"""``partialface weights export``: a trained model as one small file, float32 or float16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training import make_identities

from partialface.cli import main
from partialface.training import checkpoint as ckpt
from partialface.training.config import TrainConfig
from partialface.training.loop import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    faces = make_identities(tmp_path_factory.mktemp("faces"), 6, 4)
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig.from_yaml("tiny", [f"data.root={faces}", f"run.out={out}", "run.threads=1",
                                         "optim.max_steps=2", "run.verify_every=0", "data.holdout_identities=0"])
    train(cfg)
    return out


def test_export_keeps_the_model_drops_the_head_and_halves_in_fp16(run_dir: Path, tmp_path: Path) -> None:
    full, _ = ckpt.load_weights(run_dir / ckpt.WEIGHTS)
    assert any(not k.startswith("model.") for k in full)  # the run's file holds the classifier head too
    f32, f16 = tmp_path / "m32.safetensors", tmp_path / "m16.safetensors"
    assert main(["weights", "export", str(run_dir), str(f32)]) == 0
    assert main(["weights", "export", str(run_dir), str(f16), "--fp16"]) == 0
    t32, meta = ckpt.load_weights(f32)
    t16, _ = ckpt.load_weights(f16)
    model_keys = {k for k in full if k.startswith("model.")}
    assert set(t32) == set(t16) == model_keys
    assert all(torch.equal(t32[k], full[k]) for k in model_keys)
    assert all(t16[k].dtype == torch.float16 for k in model_keys if full[k].is_floating_point())
    assert all(torch.equal(t16[k].float(), full[k].half().float()) for k in model_keys if full[k].is_floating_point())
    assert meta["dtype"] == "float32"
    # both load as the trained model; the float16 one gives the same embeddings up to fp16 rounding
    ref, a, b = ckpt.load_model(run_dir), ckpt.load_model(f32), ckpt.load_model(f16)
    x = torch.randn(3, 3, ref.config.input_size, ref.config.input_size)
    with torch.no_grad():
        e_ref, e_a, e_b = ref(x).f, a(x).f, b(x).f
    assert torch.equal(e_ref, e_a)
    assert bool((torch.nn.functional.cosine_similarity(e_ref, e_b) > 0.999).all())
    assert f16.stat().st_size < 0.6 * f32.stat().st_size


def test_export_errors_are_one_line(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "export", str(tmp_path / "nope"), str(tmp_path / "m.safetensors")]) == 2
    assert main(["weights", "export", str(run_dir), str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such run" in err[0] and ".safetensors" in err[1]


def test_export_uniform_mix(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--uniform-mix 1 writes an attention model whose f is the mean over k of W_k GAP(F) + b_k (every map
    uniform), computed here from the weights by hand; the operating points go. Errors: sum pooling (the tiny
    run), a model without attention."""
    import json

    from partialface.models import ModelConfig, create_model

    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", pooling="mean")
    m = create_model(cfg).eval()
    src, out = tmp_path / "mean.safetensors", tmp_path / "mixed.safetensors"
    ckpt.save_weights(src, {f"model.{k}": v for k, v in m.state_dict().items()},
                      {"model_config": json.dumps(cfg.to_dict()), "operating_points": "{}"})
    assert main(["weights", "export", str(src), str(out), "--uniform-mix", "1"]) == 0
    mixed = ckpt.load_model(out)
    _, meta = ckpt.load_weights(out)
    assert mixed.config.uniform_mix == 1.0 and "operating_points" not in meta
    x = torch.randn(2, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        g = m.forward_features(x).mean(dim=(2, 3))  # (B, C)
        want = torch.stack([g @ w.T + b for w, b in zip(m.aggregate.weight, m.aggregate.bias, strict=True)]).mean(0)
        torch.testing.assert_close(mixed(x).f, want, rtol=1e-4, atol=1e-5)
    capsys.readouterr()
    assert main(["weights", "export", str(run_dir), str(tmp_path / "a.safetensors"), "--uniform-mix", "0.5"]) == 2
    base = create_model(ModelConfig.preset("tiny", name="resnet50", pooling="mean"))
    plain = tmp_path / "plain.safetensors"
    ckpt.save_weights(plain, {f"model.{k}": v for k, v in base.state_dict().items()},
                      {"model_config": json.dumps(base.config.to_dict())})
    assert main(["weights", "export", str(plain), str(tmp_path / "b.safetensors"), "--uniform-mix", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "pooling=mean" in err[0] and "not an attention model" in err[1]
