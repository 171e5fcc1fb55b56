"""How a trial is scored: THE ranking's rule for one trial (docs/ARCHITECTURE.md, contract 7).

No Polars and no results reading here: the searcher (study.space) tells Optuna the same score the
ranking (study.tables.ranking) ranks by, and imports only this.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence


def finite(v: Any) -> bool:
    """A number that is neither NaN nor infinite (a bool is no number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def trial_objective(reports: Iterable[tuple[int, Any]], objective: str, mode: str) -> tuple[float | None, int | None]:
    """A trial's score and the epoch that gave it, from its (epoch, value) reports in order.

    A later report of an epoch replaces an earlier one (a resumed trial re-reports); a value that is
    not a finite number was not measured. "best": the best finite value by `mode`, at the first epoch
    that reached it; "last": the value of the last epoch reported (None if it was not finite).
    (None, None) when nothing counts. Optuna is told the same (study.space.SeedRepeater).
    """
    values = {int(epoch): float(v) if finite(v) else None for epoch, v in reports}
    if not values:
        return None, None
    if objective == "last":
        epoch = max(values)
        return (values[epoch], epoch) if values[epoch] is not None else (None, None)
    measured = [(e, v) for e, v in sorted(values.items()) if v is not None]
    if not measured:
        return None, None
    pick = max if mode == "max" else min
    epoch, value = pick(measured, key=lambda ev: ev[1])  # max/min keep the first of equals
    return value, epoch


def sort_key(mean: float | None, lost: int, setting: str, mode: str, raced: bool = True) -> tuple[Any, ...]:
    """THE ranking's order of settings (sorted ascending: the first is the best): a setting with a
    score before one with none; in a confirmation race (study.race), one that raced before one that
    was only searched (its mean over a few lucky seeds was never confirmed); one that lost no seed
    (an ended trial without a score) before one that lost some; then by its mean over the seeds that
    scored (`mode`), then by name."""
    scored = mean is not None and math.isfinite(mean)
    value = (-mean if mode == "max" else mean) if scored else math.inf  # type: ignore[operator]
    return (not scored, not raced, lost > 0, value, setting)


def fmt_value(v: Any) -> str:
    """A parameter value as the report and the console show it (floats to 4 significant digits)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def setting_label(params: Mapping[str, Any], searched: Sequence[str]) -> str:
    """`name=value, ...` of the searched params present (seed excluded): trials of one setting group."""
    parts = [f"{k}={fmt_value(params[k])}" for k in searched if params.get(k) is not None]
    return ", ".join(parts) if parts else "default"


__all__ = ["finite", "fmt_value", "setting_label", "sort_key", "trial_objective"]
