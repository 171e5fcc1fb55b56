"""The Tune callbacks of a running study (study.callbacks): ReportCallback rebuilds report.html as
trials end, inline or as a background `python -m study.report`, and follows a moved study."""
from __future__ import annotations

import logging
import pickle
import time
import types
from pathlib import Path

import pytest

from study.callbacks import ReportCallback


@pytest.mark.slow
def test_report_callback_follows_a_moved_study(fake: Path, tmp_path: Path) -> None:
    """After Tuner.restore of a moved folder the pickled callback's path is stale; Tune's trials know."""
    cb = pickle.loads(pickle.dumps(ReportCallback(tmp_path / "old-place", background=False)))
    trial = next(p for p in fake.iterdir() if (p / "params.json").is_file())
    cb.on_trial_complete(iteration=1, trials=[], trial=types.SimpleNamespace(path=str(trial)))
    assert cb.study_dir == str(fake.resolve()) and (fake / "report.html").is_file()


@pytest.mark.slow
def test_report_callback(fake: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from ray.tune import Callback

    cb = ReportCallback(fake, background=False)
    assert isinstance(cb, Callback)
    clone = pickle.loads(pickle.dumps(cb))
    assert type(clone) is ReportCallback and clone.study_dir == str(fake.resolve()) and not clone.background
    clone.on_trial_complete(iteration=1, trials=[], trial="t1")
    assert (fake / "report.html").is_file() and str(fake / "report.html") in capsys.readouterr().out
    (fake / "report.html").unlink()
    clone.on_trial_error(iteration=2, trials=[], trial="t2")
    assert (fake / "report.html").is_file()
    broken = ReportCallback(fake / "missing", background=False)
    with caplog.at_level(logging.ERROR, logger="study.callbacks"):
        broken.on_trial_complete(iteration=1, trials=[], trial="t3")  # logged, never raised
    assert "rebuilding the report" in caplog.text


def _step_until_said(cb: ReportCallback, capsys: pytest.CaptureFixture[str], timeout_s: float = 120) -> str:
    """Tune's loop as the callback sees it: a step every 0.1 s until it reports something."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cb.on_step_end(iteration=0, trials=[])
        if out := capsys.readouterr().out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"no report build ended within {timeout_s} s")


@pytest.mark.slow  # starts report builds as subprocesses
def test_report_callback_builds_in_the_background(fake: Path, caplog: pytest.LogCaptureFixture,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The default: the run's start counts as a build, so a trial's end within min_interval_s of it
    only leaves a build pending; past the interval a trial's end starts `python -m study.report` and
    returns at once; ends while it runs are coalesced into one more build, started no sooner than
    min_interval_s after the last; the experiment's end stops a running build."""
    cb = pickle.loads(pickle.dumps(ReportCallback(fake, min_interval_s=3600)))  # as Tune restores it
    report = Path(cb.study_dir) / "report.html"
    assert cb.background and cb.min_interval_s == 3600
    cb.on_trial_complete(iteration=1, trials=[], trial="t0")
    for _ in range(5):  # within the interval of the run's start: nothing starts on the next steps
        cb.on_step_end(iteration=1, trials=[])
    assert capsys.readouterr().out == "" and not report.exists()
    cb.min_interval_s = 0  # the interval has passed
    cb.on_trial_complete(iteration=1, trials=[], trial="t1")
    cb.min_interval_s = 3600
    assert not report.exists()  # still building (a new interpreter, seconds): the Tune loop did not wait
    cb.on_trial_complete(iteration=2, trials=[], trial="t2")
    cb.on_trial_error(iteration=3, trials=[], trial="t3")
    saved = pickle.loads(pickle.dumps(cb))  # a running build (a process, its stderr file) never goes into Tune's state
    saved.wait(timeout=1)
    assert capsys.readouterr().out == ""  # nothing running, nothing pending in the saved copy
    assert _step_until_said(cb, capsys) == f"report updated (trial t1 completed): {report}\n"  # collected on a step
    built = report.stat().st_mtime_ns
    for _ in range(5):  # the pending build waits for the interval: nothing starts on the next steps
        cb.on_step_end(iteration=4, trials=[])
    cb.wait()  # e.g. a caller with no final build of its own: the pending build runs now, once, the latest reason
    assert capsys.readouterr().out == f"report updated (trial t3 errored): {report}\n"
    assert report.stat().st_mtime_ns > built and cb.min_interval_s == 3600
    cb.wait(timeout=1)  # nothing left running or pending
    assert capsys.readouterr().out == ""

    cb.on_trial_complete(iteration=5, trials=[], trial="t5")  # within the interval: only pending
    built = report.stat().st_mtime_ns
    cb.on_experiment_end(trials=[])  # study.run builds the final report itself: pending dropped
    cb.wait(timeout=1)
    assert "t5" not in capsys.readouterr().out and report.stat().st_mtime_ns == built

    cb.min_interval_s = 0
    cb.on_trial_complete(iteration=6, trials=[], trial="t6")  # a build starts ...
    cb.on_experiment_end(trials=[])  # ... and is stopped: its results are older than the final build's
    cb.wait(timeout=1)
    assert "t6" not in capsys.readouterr().out and report.stat().st_mtime_ns == built
    assert sorted(p.name for p in report.parent.glob(".report.html.*")) == []  # no half-written page left

    broken = ReportCallback(fake / "missing", min_interval_s=0)
    with caplog.at_level(logging.ERROR, logger="study.callbacks"):
        broken.on_trial_complete(iteration=1, trials=[], trial="t4")
        broken.wait()
    assert "rebuilding the report" in caplog.text and "no such results dir" in caplog.text
