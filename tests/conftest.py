"""The fixtures every test file shares. Plain helpers live in study_helpers.py (running the CLI, reading a
study's folder), fake_results.py (hand-made results) and split_helpers.py (hand-made test splits).

The expensive ones run once per session, whichever files ask for them: the real smoke study and the
diverge study (each a real Ray run of about a minute). They are read, never changed: a test that
changes a study works on `copy_of(smoke_study, tmp_path / ...)`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fake_results import write_fake_study
from study_helpers import ROOT, SMOKE, StudyRun, run_cli, study_cmd, write_study

__all__ = ["ROOT"]  # test_architecture.py reads it from here; study_helpers.py defines it

# Module fixtures that take about a second or more to build: every test that uses one is slow, so
# make test-fast (the unit tier, `-m "not slow ..."`) neither builds them nor runs those tests.
HEAVY_FIXTURES = frozenset({
    "data",  # test_predict: a two-sequence test split in the lab's format (2 x 630 frames of PNGs)
    "predicted",  # test_predict: that split rolled out and written as CSV, GIFs, PNGs
    "small",  # test_predict: a checkpoint at another frame size
    "world",  # test_cli: a study in every state, as a folder and as a URI
    "fake_report",  # test_report: the hand-made study's whole report
})


@pytest.hookimpl(tryfirst=True)  # before pytest's -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """A fresh hand-made study folder (fake_results.write_fake_study): every trial fate, no Ray."""
    return write_fake_study(tmp_path)


def _ran(cmd: list[str], cwd: Path, cache: Path, name: str) -> StudyRun:
    r = run_cli(cmd, cwd, cache)
    assert r.returncode == 0, (f"{' '.join(cmd)} (in {cwd}) exited {r.returncode}:\n"
                               f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}")
    return StudyRun(cwd, cwd / "results" / name, r)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> StudyRun:
    """search_spaces/smoke.toml, finished, as a user types it: `cd <tmp> && python -m study.run
    <repo>/search_spaces/smoke.toml` (3 TPE trials, storage the default results/)."""
    return _ran(study_cmd(SMOKE), tmp_path_factory.mktemp("smoke-study"), cache_dir, "smoke")


@pytest.fixture(scope="session")
def diverged_study(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> StudyRun:
    """A finished grid of two trials over lr, one of them (lr = 1e30) diverging, run as the smoke study is."""
    cwd = tmp_path_factory.mktemp("diverged")
    study = write_study(cwd / "diverge.toml", study={"name": "diverge", "num_samples": 1},
                        search={"sampler": "grid"}, space={"lr": {"choices": [1e-3, 1e30]}})
    return _ran(study_cmd(study), cwd, cache_dir, "diverge")
