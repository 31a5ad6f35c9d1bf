"""Shared test fixtures: the real-data locations (skipped with a reason when absent) and markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PARTIALFACE_SHARED", REPO.parent / "shared"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    """../shared/data/lfw (LFW images + pairs.txt); skips where the real data is absent."""
    root = SHARED / "data" / "lfw"
    if not (root / "pairs.txt").is_file() or not (root / "lfw-deepfunneled").is_dir():
        pytest.skip(f"real LFW not found at {root} (set PARTIALFACE_SHARED to the folder holding data/lfw)")
    return root


@pytest.fixture(scope="session")
def celeba_root() -> Path:
    """../shared/data/celeba-train (identity folders); skips where absent."""
    root = SHARED / "data" / "celeba-train"
    if not root.is_dir():
        pytest.skip(f"celeba-train not found at {root} (set PARTIALFACE_SHARED)")
    return root
