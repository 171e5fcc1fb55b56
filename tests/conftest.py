from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# Tests share the machine's 2 cores with each other's subprocesses: one thread each avoids
# OpenMP threads spinning against each other.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic-data cache for the whole session (datasets are keyed by their sizes)."""
    return tmp_path_factory.mktemp("cvae-cache")


@pytest.fixture(autouse=True)
def _cache_env(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVAE_CACHE", str(cache_dir))
