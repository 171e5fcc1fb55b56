"""A real smoke-study results dir, made once per test session by the CLI exactly as a user types it:

    cd <tmp> && CVAE_CACHE=<cache> python -m study.run <repo>/search_spaces/smoke.toml --storage <tmp>/results

Import the `smoke_results` fixture into a test module (`from smoke_study import smoke_results`).
A module-level cache makes the study run once even though each importing module registers the
fixture anew. Skips (with the reason) while study/run.py does not exist.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "search_spaces" / "smoke.toml"
_CACHE: dict[str, Path | str] = {}


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """results/smoke of a finished smoke study (3 TPE trials, optuna.db, checkpoints, report.html)."""
    if not (ROOT / "study" / "run.py").is_file():
        pytest.skip("study/run.py does not exist yet: no real smoke study to analyze")
    if "error" in _CACHE:
        pytest.fail(str(_CACHE["error"]))
    if "dir" not in _CACHE:
        work = tmp_path_factory.mktemp("smoke-study")
        env = {**os.environ, "CVAE_CACHE": str(cache_dir), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-m", "study.run", str(SMOKE), "--storage", str(work / "results")],
                              cwd=work, env=env, capture_output=True, text=True, timeout=1500)
        (work / "run.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        out = work / "results" / "smoke"
        if proc.returncode != 0 or not out.is_dir():
            _CACHE["error"] = (f"python -m study.run {SMOKE} failed with exit code {proc.returncode}:\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            pytest.fail(str(_CACHE["error"]))
        _CACHE["dir"] = out
    return Path(_CACHE["dir"])
