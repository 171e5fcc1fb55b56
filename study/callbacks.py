"""Ray Tune callbacks of a running study: ReportCallback rebuilds report.html as trials end;
TimeBudget ends the study cleanly after `[study] time_budget_s`.

The report callback belongs to running a study (study.run adds it to the Tuner), not to drawing one: it only starts
`python -m study.report <study_dir>`, which reads the results on disk like any later rebuild.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from cvae.files import temp_path
from study.driver_state import keep_copies
from study.place import REPORT

log = logging.getLogger(__name__)


def _lower_priority() -> None:  # in the report build's child process: trials come first
    os.nice(10)


def study_dir_of(trial: Any, known: str) -> str:
    """Where the study folder of Tune's `trial` is now (a restored experiment may have moved with its
    folder: its trials know where it is), else `known`."""
    path = getattr(trial, "path", None)
    if isinstance(path, str) and Path(path).parent.is_dir():
        return str(Path(path).parent.resolve())
    return known


class ReportCallback(Callback):
    """Rebuilds results/<study>/report.html whenever a trial completes or errors.

    The rebuild runs as a background `python -m study.report` (niced), so Tune's loop never waits
    for it: one build at a time, at most one start per `min_interval_s` (a build costs a few CPU
    seconds that running trials would otherwise get), and one more if a trial ended meanwhile. The
    run's start counts as a build: a study shorter than the interval builds no background report at
    all (in a 40 s smoke study one would cost ~7 CPU-s, an eighth of the study), only the final one.
    It is polled on every Tune step. When the experiment ends, a running build is stopped and a
    pending one dropped: `study.run` builds the final report right after (with finished.json in
    place), and the page a stopped build was writing is never half-written (page.write is atomic).
    `background=False` builds inline, every time. Picklable (Tune saves its callbacks with the
    experiment); after a restore it follows the study folder to where Tune's trials now are.
    Every failure is logged, never raised: a report must never break a study.
    """

    def __init__(self, study_dir: str | Path, background: bool = True, min_interval_s: float = 60.0) -> None:
        self.study_dir = str(Path(study_dir).resolve())
        self.background = background
        self.min_interval_s = min_interval_s
        self._proc: Any = None  # the running build: (Popen, its stderr file, why)
        self._pending: str | None = None
        self._last_start = time.monotonic()  # the run's start: the first build waits min_interval_s

    def __getstate__(self) -> dict[str, Any]:
        return {"study_dir": self.study_dir, "background": self.background, "min_interval_s": self.min_interval_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["study_dir"], state.get("background", True), state.get("min_interval_s", 60.0))

    def _follow(self, trial: Any) -> None:
        self.study_dir = study_dir_of(trial, self.study_dir)

    def _rebuild(self, why: str) -> None:
        if not self.background:
            try:
                from study.report import build_report

                path = build_report(self.study_dir)
                # the driver's console is the user's view of a running study, as Tune's own table
                print(f"report updated ({why}): {path}", flush=True)
            except Exception:  # noqa: BLE001
                log.exception("rebuilding the report of %s failed (the study goes on)", self.study_dir)
            return
        self._pending = why
        self._poll()

    def _collect(self) -> bool:
        """Collect the running build if it has ended (logging how); False while it still runs."""
        if self._proc is None:
            return True
        proc, err, why = self._proc
        if proc.poll() is None:
            return False
        self._proc = None
        err.seek(0)
        tail = err.read().decode("utf-8", "replace")[-2000:]
        err.close()
        if proc.returncode == 0:
            print(f"report updated ({why}): {Path(self.study_dir) / REPORT}", flush=True)
        else:
            log.error("rebuilding the report of %s failed (exit %s; the study goes on):\n%s",
                      self.study_dir, proc.returncode, tail)
        return True

    def _poll(self, force: bool = False) -> None:
        """Collect a finished build; start the pending one if none runs (and, unless force,
        min_interval_s has passed since the last start)."""
        if not self._collect():
            return
        if self._pending is None or (not force and time.monotonic() - self._last_start < self.min_interval_s):
            return
        why, self._pending = self._pending, None
        self._last_start = time.monotonic()
        err = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "study.report", self.study_dir],
                                    stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_lower_priority)
        except OSError:
            err.close()
            log.exception("starting the report build of %s failed (the study goes on)", self.study_dir)
            return
        self._proc = (proc, err, why)

    def wait(self, timeout: float = 300.0, pending: bool = True) -> None:
        """Let the running build finish (and the pending one, unless pending=False: dropped);
        stop a build that hangs."""
        if not pending:
            self._pending = None
        deadline = time.monotonic() + timeout
        while self._proc is not None or self._pending is not None:
            if time.monotonic() > deadline:
                if self._proc is not None:
                    log.error("the report build of %s ran past %g s and was stopped (the study goes on)",
                              self.study_dir, timeout)
                self.stop()
            self._poll(force=True)
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the running build, if any (its half-written page goes with it), and drop the pending one."""
        self._pending = None
        if self._proc is None:
            return
        proc, err, _ = self._proc
        self._proc = None
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err.close()
        temp_path(Path(self.study_dir, REPORT), proc.pid).unlink(missing_ok=True)

    def on_trial_complete(self, iteration: int = 0, trials: Any = None, trial: Any = None, **info: Any) -> None:
        self._follow(trial)
        self._rebuild(f"trial {trial} completed")

    def on_trial_error(self, iteration: int = 0, trials: Any = None, trial: Any = None, **info: Any) -> None:
        self._follow(trial)
        self._rebuild(f"trial {trial} errored")

    def on_step_end(self, iteration: int = 0, trials: Any = None, **info: Any) -> None:
        self._poll()

    def on_experiment_end(self, trials: Any = None, **info: Any) -> None:
        self.stop()  # study.run builds the final report next: a build of older results is moot


class StateCopies(Callback):
    """Keeps the last whole copy of Tune's driver state files in `<study>/.driver-state/` (study.driver_state:
    a driver killed while Tune copies one into the study folder leaves it cut short, and a resume puts
    the copy back). Checked at most every `every_s` on Tune's steps (a tenth of Tune's 1-s sync: the
    copy put back should be the last version Tune wrote whole, not an older one); only changed files are read.
    Picklable; after a restore it follows the study folder to where Tune's trials now are. Every
    failure is logged, never raised."""

    def __init__(self, study_dir: str | Path, every_s: float = 0.1) -> None:
        self.study_dir = str(Path(study_dir).resolve())
        self.every_s = every_s
        self._seen: dict[str, tuple[int, int]] = {}
        self._last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {"study_dir": self.study_dir, "every_s": self.every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["study_dir"], state.get("every_s", 0.1))

    def on_step_end(self, iteration: int = 0, trials: Any = None, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        if trials:
            self.study_dir = study_dir_of(trials[0], self.study_dir)
        try:
            keep_copies(self.study_dir, self._seen)
        except Exception:  # noqa: BLE001
            log.exception("keeping a copy of Tune's state in %s failed (the study goes on)", self.study_dir)


class TimeBudget(Callback):
    """Ends this run of the study after `seconds`, as Ctrl-C does: Tune saves its state, trials that
    have ended are kept, the running ones stay unfinished and the rest are not created; rerunning
    the study resumes it (with a new budget). It sends the driver SIGUSR1, Tune's own signal for
    "stop gracefully". TuneConfig(time_budget_s) is not used: it terminates the running trials as if
    they had completed and marks the searcher finished, so a resumed study would never go on.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._start: float | None = None
        self._sent = False

    def __getstate__(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["seconds"])

    def setup(self, **info: Any) -> None:
        self._start, self._sent = time.monotonic(), False  # each run of the study has the whole budget

    def on_step_end(self, iteration: int = 0, trials: Any = None, **info: Any) -> None:
        if self._start is None:
            self._start = time.monotonic()
        if not self._sent and time.monotonic() - self._start >= self.seconds:
            self._sent = True
            print(f"time budget of {self.seconds:g} s reached: stopping cleanly (ended trials are kept; "
                  f"run the same command again to go on)", flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)


__all__ = ["ReportCallback", "StateCopies", "TimeBudget"]
