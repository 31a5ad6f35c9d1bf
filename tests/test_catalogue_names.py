"""Every command that takes a model takes a shipped model's name (issue #42): the commands are walked (each
command's parser, and the actions of ``weights``), and each one that has a model argument is run for real, cheaply,
in-process, with a catalogue name. Also ``partialface models`` (the short list, ``--all``) and ``--version``."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from test_benchmark import _make_data

from partialface.cli import COMMANDS, build_parser, main
from partialface.models.catalogue import CATALOGUE, CURRENT, DEFAULT_MODEL, SHORT_LIST_MAX, short_list

#: a cheap shipped model (185 KB, 0.07 GFLOPs per face) for the commands that embed many faces; the others run
#: the default, whatever it is
SMALL = "resnet41-celeba"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def model_commands() -> set[str]:
    """Every command (``weights ACTION`` for weights' actions) with an argument that names a model: ``--model`` or
    a positional MODEL."""
    found = set()
    for name in COMMANDS:
        top = _subparsers(build_parser(name))[name]
        parsers = {name: top, **{f"{name} {a}": p for a, p in _subparsers(top).items()}}
        for key, p in parsers.items():
            if any(a.dest == "model" or a.metavar == "MODEL" for a in p._actions):
                found.add(key)
    return found


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """12 identities x 3 aligned 160x160 PNG faces and one of 1 (LFW layout, which is also identity folders), a
    2-fold pairs file; a smaller tree of 3 identities x 2 faces for the commands that run the default model."""
    root = tmp_path_factory.mktemp("names")
    faces, pairs, _ = _make_data(root)
    (faces / "solo").mkdir()  # an identity of one image: open-set identification's unknown probes
    (faces / "solo" / "solo_0001.png").write_bytes((faces / "id00" / "id00_0003.png").read_bytes())
    few = root / "few"
    for i in range(3):
        for j in (1, 2):
            src = faces / f"id{i:02d}" / f"id{i:02d}_{j:04d}.png"
            (few / src.parent.name).mkdir(parents=True, exist_ok=True)
            (few / src.parent.name / src.name).write_bytes(src.read_bytes())
    return {"root": root, "faces": faces, "pairs": pairs, "few": few}


def _serve(d: dict[str, Path], tmp: Path) -> list[str]:
    return ["serve", "--gallery", str(tmp / "served.db"), "--model", DEFAULT_MODEL]


#: command -> its invocation with a catalogue name (data folders, a scratch folder)
INVOCATIONS: dict[str, Callable[[dict[str, Path], Path], list[str]]] = {
    "benchmark": lambda d, t: ["benchmark", "--model", SMALL, "--data", str(d["faces"]), "--aligned", "--pairs",
                               str(d["pairs"]), "--out", str(t / "b"), "--factors", "0.5", "--protocols", "holistic",
                               "--device", "cpu", "--infer", "eager", "--workers", "1", "--no-progress"],
    "benchmark-occluded": lambda d, t: ["benchmark-occluded", "--model", SMALL, "--data", str(d["faces"]), "--pairs",
                                        str(d["pairs"]), "--out", str(t / "o"), "--kinds", "mask", "--coverages",
                                        "0.3", "--looks", "1", "--device", "cpu", "--infer", "eager", "--workers",
                                        "1", "--no-progress"],
    "benchmark-identify": lambda d, t: ["benchmark-identify", "--model", SMALL, "--data", str(d["faces"]), "--out",
                                        str(t / "i"), "--parts", "lEye", "--device", "cpu", "--workers", "1",
                                        "--no-progress"],
    "calibrate": lambda d, t: ["calibrate", SMALL, "--data", str(d["faces"]), "--out", str(t / "c.safetensors"),
                               "--device", "cpu", "--workers", "1", "--no-progress"],
    "weights export": lambda d, t: ["weights", "export", DEFAULT_MODEL, str(t / "e.safetensors"), "--fp16"],
    "weights export-onnx": lambda d, t: ["weights", "export-onnx", SMALL, str(t / "e.onnx")],
    "weights interpolate": lambda d, t: ["weights", "interpolate", DEFAULT_MODEL, str(t / "w.safetensors"),
                                         "--alpha", "0.5", "--fp16"],
    "verify": lambda d, t: ["verify", str(d["few"] / "id00" / "id00_0001.png"), str(d["few"] / "id00" /
                            "id00_0002.png"), "--aligned", "--model", DEFAULT_MODEL, "--json"],
    "embed": lambda d, t: ["embed", str(d["few"]), "--out", str(t / "e.npz"), "--aligned", "--model", DEFAULT_MODEL,
                           "--no-progress"],
    "enroll": lambda d, t: ["enroll", str(t / "g.db"), "--folders", str(d["few"]), "--aligned", "--model",
                            DEFAULT_MODEL, "--no-progress"],
    "identify": lambda d, t: ["identify", str(t / "g.db"), str(d["few"] / "id01" / "id01_0001.png"), "--aligned",
                              "--model", DEFAULT_MODEL, "--json"],  # after enroll (the order of this dict)
    "serve": _serve,
}
#: where a command's model needs an extra that may be missing: (the command, what its one-line error then says)
NEEDS_EXTRA = {"weights interpolate": "sface extra", "serve": "needs the extra"}


def test_the_walk_covers_every_command_that_takes_a_model() -> None:
    """A new command with a model argument must join INVOCATIONS (and so be run with a catalogue name below)."""
    assert model_commands() == set(INVOCATIONS), "a command takes a model but is not walked (or is walked but gone)"


def test_every_command_that_takes_a_model_takes_a_catalogue_name(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.dict(os.environ))  # serve hands its settings to its workers there
        if importlib.util.find_spec("uvicorn") is not None:  # serve: everything but starting the server
            stack.enter_context(mock.patch("uvicorn.run", lambda *a, **k: None))
        for command, make in INVOCATIONS.items():
            rc = main(make(data, tmp_path))
            err = capsys.readouterr().err
            assert "no such run folder" not in err and "no such file or folder" not in err, (command, err)
            if rc != 0 and not (command in NEEDS_EXTRA and NEEDS_EXTRA[command] in err):
                failed[command] = (rc, err.strip().splitlines()[-1:] if err.strip() else "")
    assert not failed, failed
    gallery = tmp_path / "g.db"
    assert gallery.is_file() and (tmp_path / "e.onnx").is_file() and (tmp_path / "c.safetensors").is_file()
    from partialface.training.checkpoint import load_weights

    _, meta = load_weights(tmp_path / "e.safetensors")
    assert meta["exported_from"] == DEFAULT_MODEL and meta["dtype"] == "float16"


def test_a_name_that_is_neither_a_file_nor_shipped_is_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["weights", "export-onnx", "no-such-model", str(tmp_path / "x.onnx")],
                 ["weights", "export", "no-such-model", str(tmp_path / "x.safetensors")],
                 ["calibrate", "no-such-model", "--data", str(tmp_path), "--out", str(tmp_path / "x.safetensors")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "nor a shipped model's name" in err[0], err


# ---------------------------------------------------------------------------------------------- the short list
def test_models_lists_at_most_8_by_default_and_every_entry_with_all(capsys: pytest.CaptureFixture[str]) -> None:
    from partialface.evaluation.embedders import DLIB_MODELS, SFACE_MODELS

    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = [m.group(2) for line in out if (m := re.match(r"^([* ]) (\S+)  ", line))]
    assert 0 < len(listed) <= SHORT_LIST_MAX == 8, out
    assert listed == [n for n, _ in short_list()] and listed[0] == DEFAULT_MODEL
    assert next(line for line in out if line.startswith("* ")).split()[1] == DEFAULT_MODEL
    assert all(n in CATALOGUE or n in DLIB_MODELS or n in SFACE_MODELS for n in CURRENT)  # every name runs
    assert "--all" in out[-1] and str(len(CATALOGUE) - sum(n in CATALOGUE for n in listed)) in out[-1]
    assert main(["models", "--all"]) == 0
    text = capsys.readouterr().out
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^[* ] (\S+) +(current|history) ", text, re.M)}
    assert set(rows) == set(CATALOGUE), set(CATALOGUE) ^ set(rows)
    assert all((rows[n] == "current") == (n in CURRENT) for n in CATALOGUE)


# ---------------------------------------------------------------------------------------------- version
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    from partialface import version as cli_version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"partialface \d+\.\d+\.\d+\S*", out) and out == f"partialface {version('partialface')}"
    with mock.patch("importlib.metadata.version", side_effect=__import__("importlib.metadata").metadata
                    .PackageNotFoundError("partialface")):
        import partialface

        assert cli_version() == partialface.__version__  # a source tree that is not installed
    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{version('partialface')}]" in changelog, "CHANGELOG.md has no section for this version"
