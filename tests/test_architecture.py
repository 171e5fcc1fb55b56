"""The architecture's rules (docs/ARCHITECTURE.md), held by tests: cvae/ knows nothing of Ray or Optuna,
the report imports no training code, `cvae-study status` reads a folder without importing Ray or torch,
and `python -m cvae.train` executes train.py once."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fake_results import write_fake_study
from study_helpers import ROOT


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running code (which must not print)."""
    r = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return set(json.loads(r.stdout.splitlines()[-1]))


def _top(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


@pytest.mark.slow
def test_cvae_imports_neither_ray_nor_optuna() -> None:
    names = sorted(p.stem for p in (ROOT / "cvae").glob("*.py") if p.stem != "__main__")
    mods = _modules_after("\n".join(f"import cvae.{n}" for n in names))
    assert {f"cvae.{n}" for n in names} <= mods
    assert not {"ray", "optuna"} & _top(mods)


@pytest.mark.slow
def test_the_report_imports_no_training_code() -> None:
    mods = _modules_after("import study.report, study.report.cli")
    assert not {"cvae.train", "study.trainable", "study.run", "ray"} & (mods | _top(mods))


@pytest.mark.slow
def test_status_reads_a_study_without_importing_ray_or_torch(tmp_path: Path) -> None:
    exp = write_fake_study(tmp_path)
    mods = _modules_after("import contextlib, io\nfrom study.cli import main\n"
                          f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['status', {str(exp)!r}]) == 0\n"
                          f"    assert main(['list', {str(tmp_path)!r}]) == 0")
    assert "study.console" in mods or "study.progress" in mods
    # a folder read answers in about a second: no Ray, no torch (~2 s to import), no scipy without a race
    assert not {"ray", "torch", "scipy"} & _top(mods)


@pytest.mark.slow
def test_python_m_cvae_train_executes_train_py_once() -> None:
    code = ("import runpy, sys\nsys.argv = ['cvae.train', '--help']\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    runpy.run_module('cvae.train', run_name='__main__', alter_sys=True)")
    mods = _modules_after(code)
    assert "cvae.cli" in mods and "cvae.train" not in mods  # __main__ is train.py; no second copy was imported
