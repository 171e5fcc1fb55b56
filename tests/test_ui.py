"""The viewers of the README's "Watching a study" ([ui] extra), on a real smoke study: every trial's
scalars as TensorBoard events under results/<study>, read back with tensorboard's own reader, and
the Optuna database served by optuna-dashboard's own app."""
from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pytest

from study_helpers import CONTRACT, PYTHON, StudyRun, result_rows, trial_dirs

TB_PREFIX = "ray/tune/"  # Ray Tune's TensorBoard logger files every metric under this tag prefix


@pytest.mark.ray
@pytest.mark.slow
def test_tensorboard_events_hold_every_trials_metrics(smoke_study: StudyRun) -> None:
    # imported here, not at the top: make test-fast collects this file without running it
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="tensorboard is in the [ui] and [dev] extras")
    for trial in trial_dirs(smoke_study.exp):
        (events,) = trial.glob("events.out.tfevents.*")
        acc = event_accumulator.EventAccumulator(str(events), size_guidance={event_accumulator.SCALARS: 0})
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        rows = result_rows(trial)
        for metric in CONTRACT:
            tag = TB_PREFIX + metric
            assert tag in tags, f"{trial.name}: no {tag} in {sorted(tags)}"
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            want = [(row["training_iteration"], pytest.approx(row[metric], rel=1e-5, abs=1e-6)) for row in rows]
            assert got == want, f"{trial.name}: {metric}"


@pytest.mark.ray
@pytest.mark.slow
def test_optuna_dashboard_serves_the_study(smoke_study: StudyRun) -> None:
    optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is in the [ui] and [dev] extras")
    app = optuna_dashboard.wsgi(f"sqlite:///{smoke_study.exp / 'optuna.db'}")
    environ: dict = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), status
    studies = {s["study_name"]: s for s in json.loads(body)["study_summaries"]}
    assert "smoke" in studies


@pytest.mark.slow
def test_the_viewers_commands_exist() -> None:
    for cmd in (["tensorboard", "--version_tb"], ["optuna-dashboard", "--version"]):
        exe = Path(PYTHON).parent / cmd[0]
        r = subprocess.run([str(exe), *cmd[1:]], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
