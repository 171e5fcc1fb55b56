"""The fixtures every test file shares. Plain helpers live in study_helpers.py (running the CLI, reading a
study's folder), fake_results.py (hand-made results) and split_helpers.py (hand-made test splits).

The expensive ones run once per session, whichever files ask for them: the real smoke study and the
diverge study (each a real Ray run of about a minute). They are read, never changed: a test that
changes a study works on `copy_of(smoke_study, tmp_path / ...)`.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import torch
from filelock import FileLock

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


# Under pytest-xdist (make test runs a worker per core, at most 4) the files whose module fixtures
# are costly (a real cluster, an S3 server, the HEAVY_FIXTURES above) go to one worker each, whole,
# so each fixture is still built once; the session's studies (smoke, diverge) are built once for all
# workers (`_shared`). xdist's `xdist_group` mark would do the first, but pytest 9.2 ignores the
# nodeid suffix it relies on (pytest-xdist issue 1386): the scheduler below groups by file name.
SHARED_MODULES = frozenset({"test_predict.py", "test_cli.py", "test_report.py", "test_cluster.py", "test_storage.py"})


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without the plugin
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class SharedModuleScheduling(LoadScopeScheduling):
        """Each test on its own, except the files of SHARED_MODULES, each whole on one worker."""

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if Path(path).name in SHARED_MODULES else nodeid

    return SharedModuleScheduling(config, log)


def _cost(item: pytest.Item) -> int:
    """A rank of how long a test takes: the real Ray and cluster runs first, so the workers do not
    end on one long run while the others idle; the order inside a rank is the files' own."""
    marks = {m.name for m in item.iter_markers()}
    return 0 if marks & {"cluster", "ray", "browser"} else 1 if "slow" in marks else 2


@pytest.hookimpl(tryfirst=True)  # before pytest's -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=_cost)


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's temp folder, or under xdist the one folder all of this run's workers share."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


# Tests share the machine's 2 cores with each other's subprocesses: one thread each avoids
# OpenMP threads spinning against each other.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic-data cache for the whole run, all workers (datasets are keyed by their sizes;
    cvae.synthetic generates each under a file lock, so workers asking at once wait for one)."""
    cache = _shared_root(tmp_path_factory) / "cvae-cache"
    cache.mkdir(exist_ok=True)
    return cache


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


def _shared(tmp_path_factory: pytest.TempPathFactory, key: str, run: Callable[[Path], StudyRun]) -> StudyRun:
    """run(<a new folder>) once for the whole test run: the first worker to ask runs it (under a file
    lock), the others wait and read what it left (the folder and the command's output, ran.json)."""
    root = _shared_root(tmp_path_factory)
    record = root / key / "ran.json"
    with FileLock(str(root / f"{key}.lock")):
        if record.is_file():
            saved = json.loads(record.read_text())
            if "failed" in saved:  # another worker's run failed: fail the same way, do not run it twice
                raise AssertionError(saved["failed"])
            proc = subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])
            return StudyRun(Path(saved["cwd"]), Path(saved["exp"]), proc)
        (root / key).mkdir()
        try:
            done = run(root / key)
        except Exception as e:
            record.write_text(json.dumps({"failed": f"{type(e).__name__}: {e}"}))
            raise
        record.write_text(json.dumps({"cwd": str(done.cwd), "exp": str(done.exp), "args": done.proc.args,
                                      "returncode": done.proc.returncode, "stdout": done.proc.stdout,
                                      "stderr": done.proc.stderr}))
        return done


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> StudyRun:
    """search_spaces/smoke.toml, finished, as a user types it: `cd <tmp> && python -m study.run
    <repo>/search_spaces/smoke.toml` (3 TPE trials, storage the default results/)."""
    return _shared(tmp_path_factory, "smoke-study", lambda cwd: _ran(study_cmd(SMOKE, dashboard=True), cwd, cache_dir,
                                                                     "smoke"))


@pytest.fixture(scope="session")
def diverged_study(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> StudyRun:
    """A finished grid of two trials over lr, one of them (lr = 1e30) diverging, run as the smoke study is
    (one trial at a time: one trial process for both)."""
    def run(cwd: Path) -> StudyRun:
        study = write_study(cwd / "diverge.toml", study={"name": "diverge", "num_samples": 1, "max_concurrent": 1},
                            search={"sampler": "grid"}, space={"lr": {"choices": [1e-3, 1e30]}})
        return _ran(study_cmd(study), cwd, cache_dir, "diverge")

    return _shared(tmp_path_factory, "diverged", run)
