"""One driver per study (study.driver): the lock, the mark and its heartbeat, the liveness test that
status/list use, a URI study's lock between machines, and (marked ray) two real drivers started
together on one study."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study._compat import EXPERIMENT_STATE_GLOB
from study.driver import STALE_S, DriverBusy, DriverLock, Mark, driver_alive, lock_held, lock_path, read_mark
from study.place import DRIVER, Place, state_of, study_place
from study_helpers import ROOT, driver_holding, result_rows, run_cli, start_cli, study_cmd, tail, trial_dirs

def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


@pytest.mark.slow
def test_a_second_driver_is_refused_naming_the_first_and_a_killed_one_blocks_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("study.driver.LOCK_WAIT_S", 0.2)  # the second driver's wait for the lock, shortened
    exp = tmp_path / "results" / "s"
    exp.mkdir(parents=True)
    with driver_holding(exp) as holder:
        assert lock_held(exp) is True and driver_alive(exp) is True
        mark = read_mark(exp)
        assert mark is not None and mark.pid == holder.pid and mark.command == "holder"
        with pytest.raises(DriverBusy) as e:
            DriverLock(Place(exp)).acquire()
        msg = str(e.value)
        assert f"pid {holder.pid} on {socket.gethostname()}, since " in msg and f"cvae-study status {exp}" in msg
    # SIGKILLed: its mark stays, its lock went with it
    assert read_mark(exp) is not None and lock_held(exp) is False and driver_alive(exp) is False
    with DriverLock(Place(exp)) as lock:
        lock.mark()
        assert read_mark(exp) == lock.me and driver_alive(exp) is True
    assert not (exp / DRIVER).exists() and lock_path(exp).exists()


def test_a_stale_mark_without_a_lock_file_does_not_block(tmp_path: Path) -> None:
    exp = tmp_path / "s"
    exp.mkdir()
    (exp / DRIVER).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": 1.0}))
    assert driver_alive(exp) is False  # a mark an older version wrote: no heartbeat, its pid gone
    with DriverLock(Place(exp)) as lock:
        lock.mark()
        assert read_mark(exp).pid == lock.me.pid  # replaced
    assert state_of({DRIVER}, False) == "new"  # the mark alone is no study


def test_another_hosts_mark_is_alive_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    exp = tmp_path / "s"
    exp.mkdir()
    (exp / DRIVER).write_text(Mark(1, "elsewhere", 0.0, time.time()).text())
    assert driver_alive(exp) is True
    (exp / DRIVER).write_text(Mark(1, "elsewhere", 0.0, time.time() - 2 * STALE_S).text())
    assert driver_alive(exp) is False
    assert driver_alive(tmp_path / "nothing-here") is None


def test_a_uri_study_is_locked_between_machines_unless_stolen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("study.driver.READBACK_S", 0.0)
    storage = f"file://{tmp_path / 'bucket'}"
    (tmp_path / "bucket" / "s").mkdir(parents=True)
    (tmp_path / "bucket" / "s" / DRIVER).write_text(Mark(7, "other-machine", time.time() - 60, time.time()).text())
    with pytest.raises(DriverBusy) as e:
        DriverLock(study_place(storage, "s")).acquire()
    assert "pid 7 on other-machine" in str(e.value) and "--steal-lock" in str(e.value)
    lock = DriverLock(study_place(storage, "s"), steal=True)
    lock.acquire()
    assert Mark.parse((tmp_path / "bucket" / "s" / DRIVER).read_text()).is_mine()
    lock.release()
    assert not (tmp_path / "bucket" / "s" / DRIVER).exists()
    # a fresh mark from this host is a killed driver's (a live one would hold the local flock): no refusal
    (tmp_path / "bucket" / "s" / DRIVER).write_text(Mark(_dead_pid(), socket.gethostname(), 0.0, time.time()).text())
    with DriverLock(study_place(storage, "s")):
        pass
    # a mark that stopped beating is a dead driver's: no --steal-lock needed
    (tmp_path / "bucket" / "s" / DRIVER).write_text(Mark(7, "other-machine", 0.0, time.time() - 2 * STALE_S).text())
    with DriverLock(study_place(storage, "s")):
        pass


@pytest.mark.ray
@pytest.mark.slow
def test_two_drivers_started_together_one_runs_the_other_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    """Two `python -m study.run search_spaces/kl.toml --smoke-test` at once: one runs the study, the
    other is refused. The study it runs is kl.toml shrunk by --smoke-test (2 trials of 2 epochs, in
    results/kl-smoke, results/kl untouched). (One study for what were two tests: this one and
    test_run's --smoke-test study.)"""
    cmd = study_cmd(ROOT / "search_spaces" / "kl.toml", "--smoke-test")
    procs = [start_cli(cmd, tmp_path, cache_dir, tmp_path / f"driver{i}.log") for i in range(2)]
    codes = [p.wait(timeout=900) for p in procs]
    logs = [tail(tmp_path / f"driver{i}.log", 20000) for i in range(2)]
    assert sorted(codes) == [0, 2], logs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert f"is being run by pid {procs[winner].pid} on {socket.gethostname()}" in logs[loser], logs[loser]
    assert "cvae-study status" in logs[loser] and "Traceback" not in logs[loser]
    exp = tmp_path / "results" / "kl-smoke"
    assert (exp / "finished.json").exists() and not (exp / DRIVER).exists() and (exp / "best.toml").exists()
    assert not (tmp_path / "results" / "kl").exists()
    assert len(list(exp.glob(EXPERIMENT_STATE_GLOB))) == 1  # one driver session
    trials = trial_dirs(exp)
    assert len(trials) == 2
    for trial in trials:  # each trial ran once, shrunk to 2 epochs: every epoch reported exactly once
        assert [r["epoch"] for r in result_rows(trial)] == [0, 1], trial.name
    # and a third driver on the finished study is refused as before, the lock free again
    r = run_cli(cmd, tmp_path, cache_dir, timeout=300)
    assert r.returncode == 2 and "--fresh" in r.stderr
