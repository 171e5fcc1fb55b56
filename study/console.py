"""The running study's console: the plan, the trials' epoch lines, and one live progress line.

`StudyConsole` is a Ray Tune ProgressReporter (RunConfig(progress_reporter=...)): in a terminal it
keeps one progress line at the bottom (Ray's own driver-side tqdm, `ray.experimental.tqdm_ray`,
which Ray hides while it prints the trials' log lines, so the two never tear each other); elsewhere
(a log file, CI) it prints that line as plain text every `plain_every_s` seconds and when a trial
ends. `--verbose` gives Ray Tune's status table instead (the CLIReporter it carries).

The line: trials done / running / pending of the total, THE ranking's best setting so far with its
margin over the floor (`val/psnr_hold`), and an ETA from the measured epoch times. `snapshot` computes
the same figures from results/ alone for `cvae-study status` (running, killed or finished study).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ray.tune import ProgressReporter

log = logging.getLogger(__name__)

FLOOR = "val/psnr_hold"  # the floor every PSNR stands beside (contract 9)
BEST_EVERY_S = 5.0  # the console's best-so-far is read again at most this often while no trial ends
SYNC_LAG_S = 3.0  # how far Tune's results on disk may lag its trials in memory
_VERBOSE: bool | None = None  # this process's choice (set_verbose); a restored reporter follows it


def quiet_logs(verbose: bool) -> None:
    """The driver's own loggers: Ray Tune's and Optuna's INFO chatter only with --verbose."""
    import optuna

    level = logging.INFO if verbose else logging.WARNING
    for name in ("ray.tune", "ray.train", "ray._private.worker"):
        logging.getLogger(name).setLevel(level)
    optuna.logging.set_verbosity(level)


def quiet_worker() -> None:
    """Ray's worker_process_setup_hook: no "Checkpoint successfully created" line per epoch."""
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def set_verbose(verbose: bool) -> None:
    """This run's choice; a reporter restored with its experiment (Tuner.restore) follows it too."""
    global _VERBOSE
    _VERBOSE = verbose


def is_verbose() -> bool:
    """Whether this run asked for --verbose (set_verbose)."""
    return bool(_VERBOSE)


def fmt_s(s: float | None) -> str:
    """Seconds as 1h02m, 3m05s or 42s ('?' when unknown)."""
    if s is None or not math.isfinite(s):
        return "?"
    s = int(round(max(s, 0.0)))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


@dataclass
class Best:
    """THE ranking's first setting so far (study.analyze.ranking)."""

    setting: str
    value: float
    n: int  # seeds scored
    floor: float | None  # val/psnr_hold at the scoring epoch of its best trial

    def line(self, metric: str, short: bool = False) -> str:
        over = self.floor is not None and metric == "val/psnr"
        if short:
            return f"best {self.setting}: {self.value:.2f}" + (f" ({self.value - self.floor:+.2f} dB vs floor)" if over else "")
        margin = f", {self.value - self.floor:+.2f} dB over the floor" if over else ""
        seeds = f" (mean of {self.n} seeds)" if self.n > 1 else ""
        return f"best {self.setting}: {metric} {self.value:.2f}{seeds}{margin}"


def best_so_far(exp_dir: str | Path) -> tuple[Best | None, Any]:
    """The ranking's best setting from the study's files, and the tables it came from."""
    import polars as pl

    from study.analyze import build_tables, finite, ranking, read_study, winner

    info = read_study(exp_dir)
    tables = build_tables(exp_dir)
    best = winner(ranking(tables, info))
    if best is None:
        return None, tables
    rows = tables.epochs.filter((pl.col("trial_id") == best["best_trial_id"]) & (pl.col("epoch") == best["best_epoch"]))
    floor = rows[FLOOR][0] if rows.height and FLOOR in rows.columns else None
    return Best(best["setting"], float(best["mean"]), int(best["n"]), float(floor) if finite(floor) else None), tables


@dataclass
class Progress:
    """How far along a study is: trials by state, trial-epochs done of planned, time."""

    total: int  # trials planned
    done: int = 0  # ended: completed, stopped early, diverged or errored
    running: int = 0
    errored: int = 0
    epochs_done: int = 0  # trial-epochs reported
    epochs_left: int = 0  # trial-epochs still to run (an upper bound under ASHA)
    epoch_s: float | None = None  # mean wall seconds of one trial-epoch
    concurrency: int = 1
    elapsed_s: float | None = None
    best: Best | None = None
    counts: dict[str, int] = field(default_factory=dict)  # status -> trials (study.analyze's statuses)

    @property
    def pending(self) -> int:
        return max(self.total - self.done - self.running, 0)

    @property
    def eta_s(self) -> float | None:
        if self.epochs_left == 0:
            return 0.0
        if self.epoch_s is None:
            return None
        return self.epochs_left * self.epoch_s / max(min(self.concurrency, self.running + self.pending), 1)

    def line(self, metric: str, short: bool = False) -> str:
        """The progress line; `short` leaves out the times (the bar shows them) and trims the best."""
        parts = [f"{self.done}/{self.total} trials done, {self.running} running, {self.pending} pending"
                 + (f" ({self.errored} errored)" if self.errored else "")]
        parts.append(self.best.line(metric, short) if self.best else f"best: no {metric} yet")
        if not short:
            parts.append(f"elapsed {fmt_s(self.elapsed_s)}, ETA {fmt_s(self.eta_s)}")
        return " | ".join(parts)


def _epochs(result: dict[str, Any] | None) -> int:
    return int((result or {}).get("training_iteration") or 0)


def live_progress(trials: Sequence[Any], total: int, epochs: int, concurrency: int) -> Progress:
    """Progress from Tune's trials in memory (the driver's view: pending trials not yet created
    count as pending)."""
    p = Progress(total=max(total, len(trials)), concurrency=concurrency)
    times: list[float] = []
    for t in trials:
        ran = _epochs(t.last_result)
        p.epochs_done += ran
        if t.status in ("TERMINATED", "ERROR"):
            p.done += 1
            p.errored += t.status == "ERROR"
        else:
            p.running += t.status == "RUNNING"
            p.epochs_left += max(epochs - ran, 0)
        total_s = (t.last_result or {}).get("time_total_s")
        if ran and total_s:
            times.append(float(total_s) / ran)
    p.epochs_left += max(p.total - len(trials), 0) * epochs
    p.epoch_s = sum(times) / len(times) if times else None
    return p


class StudyConsole(ProgressReporter):
    """Ray Tune progress reporter of a study (see the module docstring). Picklable: Tune saves it with
    the experiment and a resumed study gets it back; what it draws is rebuilt in each process."""

    def __init__(self, exp_dir: str | Path, metric: str, total: int, epochs: int, concurrency: int,
                 table: Any = None, verbose: bool = False, plain_every_s: float = 30.0) -> None:
        self.exp_dir = str(exp_dir)
        self.metric = metric
        self.total = total
        self.epochs = epochs
        self.concurrency = concurrency
        self.table = table  # Ray Tune's CLIReporter, for --verbose
        self.verbose = verbose
        self.plain_every_s = plain_every_s
        self._reset()

    def _reset(self) -> None:
        self._bar: Any = None
        self._start = time.time()
        self._last_print = -math.inf
        self._last_key: tuple[int, int] | None = None
        self._best: Best | None = None
        self._best_key: tuple[int, int] | None = None
        self._best_at = -math.inf
        self._seen_key: tuple[int, int] | None = None
        self._changed_at = -math.inf
        self._last_line = ""
        self._base_epochs: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- Tune's ProgressReporter interface
    def setup(self, start_time: float | None = None, total_samples: int | None = None, metric: str | None = None,
              mode: str | None = None, **kwargs: Any) -> None:
        self._start = start_time or time.time()
        if self._verbose() and self.table is not None:
            self.table.setup(start_time=start_time, total_samples=total_samples, metric=metric, mode=mode, **kwargs)

    def _verbose(self) -> bool:
        return self.verbose if _VERBOSE is None else _VERBOSE

    def _interactive(self) -> bool:
        return sys.stderr.isatty() and not self._verbose()

    def should_report(self, trials: Sequence[Any], done: bool = False) -> bool:
        if self._verbose():
            return self.table is not None and self.table.should_report(trials, done)
        if done:
            return True
        key = (sum(_epochs(t.last_result) for t in trials), sum(t.status in ("TERMINATED", "ERROR") for t in trials))
        changed = key != self._last_key
        every = 1.0 if self._interactive() else self.plain_every_s
        ended = key[1] != (self._last_key or (0, 0))[1]
        if (changed and self._interactive()) or ended or time.monotonic() - self._last_print >= every:
            self._last_key = key
            return True
        return False

    def report(self, trials: Sequence[Any], done: bool, *sys_info: str) -> None:
        if self._verbose():
            if self.table is not None:
                self.table.report(trials, done, *sys_info)
            return
        self._last_print = time.monotonic()
        p = live_progress(trials, self.total, self.epochs, self.concurrency)
        p.elapsed_s = time.time() - self._start
        # The ranking only moves when a trial reports or ends. It is read from the results on disk,
        # which Tune syncs from its staging folder with the experiment state (about every second):
        # read again until a read comes SYNC_LAG_S after the last change. It reads every trial's
        # results, so a new epoch alone refreshes it at most every BEST_EVERY_S seconds.
        now, key = time.monotonic(), (p.epochs_done, p.done)
        if key != self._seen_key:
            self._seen_key, self._changed_at = key, now
        due = now - self._best_at >= BEST_EVERY_S or p.done != (self._best_key or (0, -1))[1]
        if done or (key != self._best_key and due):
            self._best_at = now
            try:
                self._best, _ = best_so_far(self.exp_dir)
                if now - self._changed_at >= SYNC_LAG_S:
                    self._best_key = key
            except Exception as e:  # noqa: BLE001 - a console line never breaks a study
                log.debug("best so far of %s: %s", self.exp_dir, e)
        p.best = self._best
        if self._interactive():
            self._draw(p, done)
        else:
            line = p.line(self.metric)
            state = line.rsplit(" | elapsed", 1)[0]
            if not (done and state == self._last_line):  # the last step's line, once
                print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
            self._last_line = state

    def _draw(self, p: Progress, done: bool) -> None:
        from ray.experimental import tqdm_ray

        if self._base_epochs is None:  # a resumed study: count this session's epochs, so the rate is real
            self._base_epochs = p.epochs_done
        desc = p.line(self.metric, short=True)
        if self._bar is None:
            self._bar = tqdm_ray.tqdm(desc=desc, total=p.epochs_done - self._base_epochs + p.epochs_left,
                                      unit=" trial-epochs", flush_interval_s=0.0)
        self._bar.set_description(desc)
        self._bar.total = p.epochs_done - self._base_epochs + p.epochs_left
        self._bar.n = p.epochs_done - self._base_epochs
        self._bar.refresh()
        if done:
            self._bar.close()
            self._bar = None


def snapshot(exp_dir: str | Path, state: str | None = None) -> tuple[str, Progress]:
    """A study's state and progress from its results folder alone (contract 5): for `cvae-study status`
    on a running, interrupted or finished study. The state is study.driver.study_state's (study.place's,
    with an unfinished study "running" while its driver lives, else "interrupted") unless given."""
    import polars as pl

    from study.analyze import read_study
    from study.driver import study_state, tune_heartbeat

    exp_dir = Path(exp_dir)
    state = state or study_state(exp_dir)  # a URI study's mirror: its caller judged the URI (place_state)
    info = read_study(exp_dir)
    spec = info.spec
    total = spec.num_trials if spec else 0
    epochs = spec.max_epochs if spec else 0
    best, tables = best_so_far(exp_dir)
    t = tables.trials
    counts = {s: n for s, n in t.group_by("status").len().iter_rows()} if t.height else {}
    p = Progress(total=max(total, t.height), best=best, counts=counts)
    p.done = t.height - counts.get("running", 0)
    if t.height:  # analyze's "running" holds Tune's PENDING trials too (not ended)
        p.running = t.filter((pl.col("status") == "running") & (pl.col("ray_status").fill_null("") != "PENDING")).height
    p.errored = counts.get("errored", 0)
    e = tables.epochs
    p.epochs_done = e.height
    if t.height:
        running = t.filter(pl.col("status") == "running")
        p.epochs_left = int(sum(max(epochs - int(n or 0), 0) for n in running["epochs_run"]))
    p.epochs_left += max(p.total - t.height, 0) * epochs
    if "time/epoch_s" in e.columns and e.height:
        p.epoch_s = float(e["time/epoch_s"].drop_nans().mean() or 0) or None
    heartbeat = tune_heartbeat(exp_dir)
    if state != "running":  # trials that had not ended are not running now
        p.running = 0
    # without [study] max_concurrent, the study ran as many as its cluster held: as many as run now
    p.concurrency = (spec.max_concurrent if spec else None) or max(p.running, 1)
    started = _started(exp_dir)
    if started is not None:
        end = time.time() if state == "running" else (heartbeat or time.time())
        p.elapsed_s = max(end - started, 0.0)
    return state, p


def _started(exp_dir: Path) -> float | None:
    """When the study started: its first trial's start (Tune's timestamp minus time_total_s)."""
    from study.analyze import read_results, trial_dirs
    from study.place import TRIAL_RESULTS

    starts = []
    for d in trial_dirs(exp_dir):
        res = read_results(d / TRIAL_RESULTS)
        if res.height and {"timestamp", "time_total_s"} <= set(res.columns):
            starts.append(float((res["timestamp"] - res["time_total_s"]).min()))
    return min(starts) if starts else None


__all__ = ["Best", "Progress", "StudyConsole", "best_so_far", "fmt_s", "is_verbose", "live_progress", "quiet_logs",
           "quiet_worker", "set_verbose", "snapshot"]
