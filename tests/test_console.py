"""The study's console (study.console) and `cvae-study` (study.cli): the progress line from Tune's
trials, the same figures from results/ alone for `status`. A real study watched while it runs, after
it is killed and after it finished is test_run.py's killed-study test (one Ray study for both)."""
from __future__ import annotations

import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fake_results import HOLD, write_fake_study
from study._compat import EXPERIMENT_STATE_GLOB
from study import logs
from study.analyze import read_study
from study.tables import analyze, ranking, winner
from study.cli import main as cli
from study.console import StudyConsole
from study.progress import Best, fmt_s, live_progress, snapshot
from study.driver import STALE_S, DriverLock, Mark, study_state
from study.place import Place
from study_helpers import ROOT


def _trial(status: str, epochs: int, epoch_s: float = 2.0) -> SimpleNamespace:
    result = {"training_iteration": epochs, "time_total_s": epochs * epoch_s} if epochs else {}
    return SimpleNamespace(status=status, last_result=result)


def test_live_progress_counts_trials_and_estimates_from_epoch_times() -> None:
    trials = [_trial("TERMINATED", 4), _trial("ERROR", 1), _trial("RUNNING", 2), _trial("PENDING", 0)]
    p = live_progress(trials, total=6, epochs=4, concurrency=2)
    assert (p.done, p.running, p.pending, p.errored) == (2, 1, 3, 1)
    assert p.epochs_done == 7
    assert p.epochs_left == 2 + 4 + 2 * 4  # the running trial's rest, the pending one, two not created yet
    assert p.epoch_s == pytest.approx(2.0)
    assert p.eta_s == pytest.approx(14 * 2.0 / 2)  # two at a time
    line = p.line("val/psnr")
    assert "2/6 trials done, 1 running, 3 pending (1 errored)" in line and "ETA 14s" in line


def test_the_best_line_says_how_many_of_its_seeds_still_run() -> None:
    assert Best("None", 30.0, 3, 20.0).line("val/psnr") == "best None: val/psnr 30.00 (mean of 3 seeds), +10.00 dB over the floor"
    assert Best("None", 30.0, 3, 20.0, running=1).line("val/psnr") == \
        "best None: val/psnr 30.00 (mean of 3 seeds, 1 still running), +10.00 dB over the floor"
    assert Best("None", 30.0, 1, None, running=1).line("val/psnr") == "best None: val/psnr 30.00 (1 still running)"
    assert Best("None", 30.0, 1, None).line("val/psnr") == "best None: val/psnr 30.00"


def test_fmt_s() -> None:
    assert [fmt_s(s) for s in (None, 4.4, 65, 3725)] == ["?", "4s", "1m05s", "1h02m"]


@pytest.mark.slow
def test_console_line_best_is_the_ranking_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = write_fake_study(tmp_path)
    info = read_study(exp)
    best = winner(ranking(analyze(exp), info))
    reporter = StudyConsole(exp, "val/psnr", total=9, epochs=6, concurrency=2)
    reporter = pickle.loads(pickle.dumps(reporter))  # Tune saves it with the experiment
    reporter.setup(start_time=time.time() - 65)
    trials = [_trial("TERMINATED", 6)] * 9
    assert reporter.should_report(trials, done=False)
    reporter.report(trials, True)
    out = capsys.readouterr().out
    assert "9/9 trials done, 0 running, 0 pending" in out and "elapsed 1m05s, ETA 0s" in out
    assert f"best {best['setting']}: val/psnr {best['mean']:.2f} (mean of 3 seeds)" in out
    assert re.search(r"[+-]\d+\.\d\d dB over the floor", out)


def test_verbose_gives_tunes_table(tmp_path: Path) -> None:
    calls = []
    table = SimpleNamespace(should_report=lambda trials, done=False: True, setup=lambda **kw: None,
                            report=lambda trials, done, *info: calls.append(done))
    reporter = StudyConsole(tmp_path, "val/psnr", total=1, epochs=1, concurrency=1, table=table)
    logs.set_verbose(True)
    try:
        reporter.setup()
        assert reporter.should_report([], False)
        reporter.report([], False)
    finally:
        logs.set_verbose(False)
    assert calls == [False]


@pytest.mark.slow
def test_status_of_a_finished_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = write_fake_study(tmp_path)
    (exp / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    state, p = snapshot(exp)
    best = winner(ranking(analyze(exp), read_study(exp)))
    assert state == "finished" and p.best is not None and p.best.setting == best["setting"]
    assert p.best.floor == pytest.approx(HOLD)
    assert cli(["status", str(exp)]) == 0
    out = capsys.readouterr().out
    assert f"{exp}: finished" in out and "9 of 9 ended" in out and "1 errored" in out
    assert f"best {best['setting']}" in out


@pytest.mark.slow
def test_status_and_the_progress_line_of_a_seed_race(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fake_results import write_scores_study
    from study.evidence import race_text
    from study.tables import trial_arms
    from study.race import standings, summary_text

    scores = {"None": [33.0, 33.4, 32.9, 33.2], "Monotonic": [32.8, 33.5, 33.1, 32.7], "Cyclical": [20.0, 20.3]}
    exp = write_scores_study(tmp_path, scores, name="raced")
    text = (exp / "study.toml").read_text()
    (exp / "study.toml").write_text(re.sub(r"seeds = \[[^]]*\]", "seeds = { min = 2, max = 4 }", text))
    (exp / "tuner.pkl").write_bytes(b"")
    info = read_study(exp)
    assert info.race_rule is not None
    expected = standings(trial_arms(analyze(exp).trials), info.race_rule, needed=True)
    state, p = snapshot(exp)  # finished: the race ran what it needed, nothing is pending
    assert state == "finished" and not p.upto and p.total == 10 and p.pending == 0
    assert p.race == summary_text(expected) and summary_text(expected) in p.line("val/psnr")
    (exp / "finished.json").unlink()
    state, p = snapshot(exp)  # interrupted: the race may still give 2 more seeds
    assert state != "finished" and p.upto and p.total == 3 * 4 and "up to 12" in p.line("val/psnr")
    assert cli(["status", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "10 of up to 12 ended" in out
    assert f"seed race (2 to 4 seeds): {summary_text(expected)}" in out
    for st in expected:
        assert f"{st.setting}: {st.seeds} seeds, mean {st.mean:.2f}, {race_text(st, info.race_rule)}" in out


@pytest.mark.slow
def test_status_of_a_running_and_of_an_interrupted_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = write_fake_study(tmp_path, partial=True)
    (exp / "tuner.pkl").write_bytes(b"")
    assert study_state(exp) == "running"  # Tune's state saved just now: a live driver
    _, p = snapshot(exp)
    assert p.running == 1 and p.pending == 1 and p.eta_s is not None
    best = winner(ranking(analyze(exp), read_study(exp)))
    assert p.best is not None and (p.best.n, p.best.running) == (best["n"], best["n_running"])
    old = time.time() - 2 * STALE_S
    for f in exp.glob(EXPERIMENT_STATE_GLOB):
        os.utime(f, (old, old))
    state, p = snapshot(exp)
    assert state == "interrupted" and p.running == 0 and p.pending == 2
    assert cli(["status", str(exp)]) == 0
    assert "interrupted (not running: rerun `cvae-study run" in capsys.readouterr().out
    lock = DriverLock(Place(exp))
    lock.acquire()
    lock.mark()  # this process drives it: alive, whatever the state's age
    assert study_state(exp) == "running"
    lock.release()
    assert not (exp / "driver.json").exists() and study_state(exp) == "interrupted"
    # a killed driver leaves its mark: its lock is free and its pid gone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (exp / "driver.json").write_text(Mark(int(dead.stdout), socket.gethostname(), old, time.time()).text())
    assert study_state(exp) == "interrupted"


@pytest.mark.slow
def test_best_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = write_fake_study(tmp_path / "results")
    assert cli(["best", str(exp)]) == 1  # no best.toml yet
    assert "no best.toml yet" in capsys.readouterr().err
    (exp / "best.toml").write_text("")
    assert cli(["best", str(exp)]) == 0
    assert f"python -m cvae.train --config {exp / 'best.toml'}" in capsys.readouterr().out
    write_fake_study(tmp_path / "results", "other", partial=True)
    assert cli(["list", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["fake", "finished"], ["other", "foreign"]]


@pytest.mark.slow  # two interpreters that import Ray; in-process the forward is test_cli's
def test_cli_help_forwards_run_and_report() -> None:
    for cmd, prog in (("run", "python -m study.run"), ("report", "python -m study.report")):
        r = subprocess.run([sys.executable, "-m", "study.cli", cmd, "--help"], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
        assert r.returncode == 0 and prog in r.stdout
    assert "--verbose" in r.stdout or cmd == "report"
