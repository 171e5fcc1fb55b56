"""How far along a study is, from Tune's trials in memory (the driver's console) or from results/
alone (`cvae-study status`): trials done / running / pending, THE ranking's best setting so far with
its margin over the floor (`val/psnr_hold`), and an ETA from the measured epoch times.

No Ray here: `status` and `list` read a folder (docs/ARCHITECTURE.md: tests/test_architecture.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cvae.metrics import EPOCH_S, VAL_PSNR, VAL_PSNR_HOLD
from study.place import State


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
    """THE ranking's first setting so far (study.tables.ranking)."""

    setting: str
    value: float
    n: int  # seeds scored
    floor: float | None  # val/psnr_hold at the scoring epoch of its best trial
    running: int = 0  # of those seeds, the ones still training (scored by their epochs so far)

    def line(self, metric: str, short: bool = False) -> str:
        over = self.floor is not None and metric == VAL_PSNR
        if short:
            return f"best {self.setting}: {self.value:.2f}" + (f" ({self.value - self.floor:+.2f} dB vs floor)" if over else "")
        margin = f", {self.value - self.floor:+.2f} dB over the floor" if over else ""
        still = f"{self.running} still running" if self.running else ""
        seeds = (f" (mean of {self.n} seeds{', ' + still if still else ''})" if self.n > 1
                 else f" ({still})" if still else "")
        return f"best {self.setting}: {metric} {self.value:.2f}{seeds}{margin}"


def best_so_far(exp_dir: str | Path, info: Any = None) -> tuple[Best | None, Any]:
    """The ranking's best setting from the study's files, and the tables it came from (`info`: the
    study's StudyInfo, read from exp_dir when not given)."""
    import polars as pl

    from study.analyze import read_study
    from study.ranking import finite
    from study.tables import build_tables, ranking, winner

    info = info if info is not None else read_study(exp_dir)
    tables = build_tables(exp_dir)
    best = winner(ranking(tables, info))
    if best is None:
        return None, tables
    rows = tables.epochs.filter((pl.col("trial_id") == best["best_trial_id"]) & (pl.col("epoch") == best["best_epoch"]))
    floor = rows[VAL_PSNR_HOLD][0] if rows.height and VAL_PSNR_HOLD in rows.columns else None
    return Best(best["setting"], float(best["mean"]), int(best["n"]), float(floor) if finite(floor) else None,
                int(best["n_running"])), tables


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
    race: str | None = None  # a seed race's comparisons, "2 comparisons open, 3 settled" (study.race.summary_text)
    standings: list[Any] | None = None  # the race's study.race.Standing rows, leader first (snapshot only)
    upto: bool = False  # `total` is the most a race may run, not a plan
    info: Any = None  # the study's study.analyze.StudyInfo (snapshot only), read once for the whole status

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
        of = f"up to {self.total}" if self.upto else f"{self.total}"
        parts = [f"{self.done}/{of} trials done, {self.running} running"
                 + ("" if self.upto else f", {self.pending} pending") + (f" ({self.errored} errored)" if self.errored else "")]
        if self.race:
            parts.append(self.race)
        parts.append(self.best.line(metric, short) if self.best else f"best: no {metric} yet")
        if not short:
            parts.append(f"elapsed {fmt_s(self.elapsed_s)}, ETA {'at most ' if self.upto else ''}{fmt_s(self.eta_s)}")
        return " | ".join(parts)


def epochs_reported(result: dict[str, Any] | None) -> int:
    """Epochs a trial has reported, from its last Tune result (None: none yet)."""
    return int((result or {}).get("training_iteration") or 0)


def live_progress(trials: Sequence[Any], total: int, epochs: int, concurrency: int) -> Progress:
    """Progress from Tune's trials in memory (the driver's view: pending trials not yet created
    count as pending)."""
    p = Progress(total=max(total, len(trials)), concurrency=concurrency)
    times: list[float] = []
    for t in trials:
        ran = epochs_reported(t.last_result)
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


def snapshot(exp_dir: str | Path, state: State | None = None) -> tuple[State, Progress]:
    """A study's state and progress from its results folder alone (docs/ARCHITECTURE.md, contract 5),
    for `cvae-study status` on a running, interrupted or finished study. The state is study.driver.study_state's (study.place's,
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
    best, tables = best_so_far(exp_dir, info)
    t = tables.trials
    counts = {s: n for s, n in t.group_by("status").len().iter_rows()} if t.height else {}
    p = Progress(total=max(total, t.height), best=best, counts=counts, upto=bool(spec and spec.race), info=info)
    if state == State.FINISHED:  # a finished race ran what it needed: nothing is pending
        p.total, p.upto = t.height, False
    from study.evidence import race_standings

    p.standings = race_standings(tables, info, needed=True)
    if p.standings is not None:
        from study.race import summary_text

        p.race = summary_text(p.standings)
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
    if EPOCH_S in e.columns and e.height:
        p.epoch_s = float(e[EPOCH_S].drop_nans().mean() or 0) or None
    heartbeat = tune_heartbeat(exp_dir)
    if state != State.RUNNING:  # trials that had not ended are not running now
        p.running = 0
    # without [study] max_concurrent, the study ran as many as its cluster held: as many as run now
    p.concurrency = (spec.max_concurrent if spec else None) or max(p.running, 1)
    started = _started(exp_dir)
    if started is not None:
        end = time.time() if state == State.RUNNING else (heartbeat or time.time())
        p.elapsed_s = max(end - started, 0.0)
    return state, p


def _started(exp_dir: Path) -> float | None:
    """When the study started: its first trial's start (study.results.trial_start)."""
    from study.place import TRIAL_RESULTS
    from study.results import read_results, trial_dirs, trial_start

    starts = [s for d in trial_dirs(exp_dir) if (s := trial_start(read_results(d / TRIAL_RESULTS))) is not None]
    return min(starts) if starts else None


__all__ = ["Best", "Progress", "best_so_far", "epochs_reported", "fmt_s", "live_progress", "snapshot"]
