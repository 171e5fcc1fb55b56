"""How much a study's driver and its trials' workers say: the --verbose flag, held once per process.

Without --verbose the console is study.console's (the plan, epoch lines, one progress line) and Ray
Tune's and Optuna's INFO chatter is off; with it, Tune's status table and every log.
"""
from __future__ import annotations

import logging

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


def verbose_choice() -> bool | None:
    """This process's choice, None when it made none (a reporter then keeps its own)."""
    return _VERBOSE


__all__ = ["is_verbose", "quiet_logs", "quiet_worker", "set_verbose"]
