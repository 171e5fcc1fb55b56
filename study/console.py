"""The running study's console: the plan, the trials' epoch lines, and one live progress line.

`StudyConsole` is a Ray Tune ProgressReporter (RunConfig(progress_reporter=...)): in a terminal it
keeps one progress line at the bottom (Ray's own driver-side tqdm, `ray.experimental.tqdm_ray`,
which Ray hides while it prints the trials' log lines, so the two never tear each other); elsewhere
(a log file, CI) it prints that line as plain text every `plain_every_s` seconds and when a trial
ends. `--verbose` gives Ray Tune's status table instead (the CLIReporter it carries).

The line's figures are study.progress's (which `cvae-study status` computes from results/ alone);
--verbose is study.logs'.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ray.tune import ProgressReporter

from study.logs import verbose_choice
from study.progress import Best, Progress, best_so_far, epochs_reported, live_progress
from study.race import summary_text

log = logging.getLogger(__name__)

BEST_EVERY_S = 5.0  # the console's best-so-far is read again at most this often while no trial ends
SYNC_LAG_S = 3.0  # how far Tune's results on disk may lag its trials in memory


class StudyConsole(ProgressReporter):
    """Ray Tune progress reporter of a study (see the module docstring). Picklable: Tune saves it with
    the experiment and a resumed study gets it back; what it draws is rebuilt in each process."""

    race = False  # a console saved before races existed shows none

    def __init__(self, exp_dir: str | Path, metric: str, total: int, epochs: int, concurrency: int,
                 table: Any = None, verbose: bool = False, plain_every_s: float = 30.0, race: bool = False) -> None:
        self.race = race  # total is then the most the seed race may run
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
        self._race: str | None = None
        self._best_key: tuple[int, int] | None = None
        self._best_at = -math.inf
        self._seen_key: tuple[int, int] | None = None
        self._changed_at = -math.inf
        self._last_line = ""
        self._base_epochs: int | None = None
        self._info: Any = None

    def _study(self) -> Any:
        """The study's StudyInfo, read once: its file does not change while it runs."""
        if self._info is None:
            from study.analyze import read_study

            self._info = read_study(self.exp_dir)
        return self._info

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
        choice = verbose_choice()
        return self.verbose if choice is None else choice

    def _interactive(self) -> bool:
        return sys.stderr.isatty() and not self._verbose()

    def should_report(self, trials: Sequence[Any], done: bool = False) -> bool:
        if self._verbose():
            return self.table is not None and self.table.should_report(trials, done)
        if done:
            return True
        key = (sum(epochs_reported(t.last_result) for t in trials), sum(t.status in ("TERMINATED", "ERROR") for t in trials))
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
                self._best, tables = best_so_far(self.exp_dir, self._study())
                if self.race:
                    from study.evidence import race_standings

                    self._race = summary_text(race_standings(tables, self._study(), needed=False) or [])
                if now - self._changed_at >= SYNC_LAG_S:
                    self._best_key = key
            except Exception as e:  # noqa: BLE001 - a console line never breaks a study
                log.debug("best so far of %s: %s", self.exp_dir, e)
        p.best, p.race, p.upto = self._best, self._race, self.race
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


__all__ = ["StudyConsole"]
