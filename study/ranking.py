"""How a trial is scored: THE ranking's rule for one trial (docs/ARCHITECTURE.md, contract 7).

No Polars and no results reading here: the searcher (study.space) tells Optuna the same score the
ranking (study.tables.ranking) ranks by, and imports only this.
"""
from __future__ import annotations

import math
from typing import Any, Iterable


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


__all__ = ["finite", "trial_objective"]
