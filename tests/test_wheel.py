"""``pip install .`` gives a working tool (issue #42 item 1): the README's install line, run into a fresh virtual
environment outside the repository, then ``partialface verify`` on two LFW photos with the default model found
inside the installed package — no repository, no ``checkpoints/``, no ``PARTIALFACE_CHECKPOINTS``.

The fresh environment borrows the project's dependencies (torch, OpenCV, ...) from the test's own environment by
links, so nothing large is downloaded; partialface itself (the editable install) is left out of it, so what runs is
what ``pip install .`` put there."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_install_line() -> str:
    """The command after the README's ``<!-- install-line -->`` marker (its code block's first line)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- install-line -->\s*```bash\n([^\n#]+)", text)
    assert m, "README.md: no install line after <!-- install-line -->"
    return m.group(1).strip()


def test_readme_install_line_gives_a_working_verify(tmp_path: Path, lfw_root: Path) -> None:
    line = readme_install_line()
    assert line == "pip install ."  # from a clone; what the test runs below, word for word
    src = tmp_path / "src"  # the clone's files that a build reads (the rest of a clone is data and docs)
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "partialface", src / "partialface", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():  # the dependencies, by link; never partialface's own (editable) install
        if not re.match(r"(__editable__|partialface)", entry.name, re.I):
            (purelib / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PARTIALFACE_CHECKPOINTS")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    proc = subprocess.run([str(py), "-m", *line.split()], cwd=src, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    where = subprocess.run([str(py), "-c", "import partialface; print(partialface.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(purelib), where  # the installed copy, not the repository
    a, b = (lfw_root / "lfw-deepfunneled" / "Abel_Pacheco" / f"Abel_Pacheco_000{i}.jpg" for i in (1, 4))  # pair 1
    proc = subprocess.run([str(venv / "bin" / "partialface"), "verify", str(a), str(b), "--json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["same"] is True and out["score"] > out["threshold"]
    assert not (tmp_path / "checkpoints").exists() and str(REPO) not in out.get("model", "")
