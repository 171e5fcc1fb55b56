"""Two settings' seed scores compared: a clear difference (Welch's t-test), equality within a margin
(TOST), the paired forms on the seeds both ran, and how many seeds an open comparison would need.

No Polars and no results reading: the report's verdicts (study.evidence) and the seed race that
the searcher runs (study.race) judge with these same functions. Seeds are the samples; NaNs and
nulls are dropped (a trial that never scored is no sample). Every test is a library's (scipy,
statsmodels), never written out by hand; both are imported where they are used, as study.spec
reads this module's defaults and `cvae-study status` should not pay for them.
"""
from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

ALPHA = 0.05  # a difference is "clear" when the two-sided p-value is below this ([study] alpha)
MARGIN_DB = 0.5  # "about equal": the difference of means within +-this, shown by TOST at ALPHA ([study] margin_db)
POWER = 0.8  # the chance of settling a verdict that the seeds-needed estimate aims at
MAX_SEEDS = 1000  # beyond this many seeds per setting a verdict is called out of reach


@dataclass(frozen=True)
class Test:
    """A t-test of mean(a) - mean(b), seeds as samples: Welch's, or paired on the shared seeds."""

    a: str
    b: str
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    p: float | None  # two-sided p-value; None with fewer than two scores on a side (pairs, when paired)
    low: float | None  # 95% confidence interval of mean_a - mean_b
    high: float | None
    unit: str = " dB"
    needed: int | None = None  # seeds per setting the observed spread would need to settle it (seeds_needed)
    alpha: float = ALPHA
    paired: bool = False

    @property
    def diff(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def testable(self) -> bool:
        return self.p is not None

    @property
    def clear(self) -> bool:
        """True when the difference is clear at alpha (either sign)."""
        return self.p is not None and self.p < self.alpha

    @property
    def name(self) -> str:
        return "paired t-test" if self.paired else "Welch's t-test"

    def stats_text(self) -> str:
        if self.p is None:
            if self.paired:
                return "fewer than two shared seeds: no spread"
            return "one seed: no spread" if min(self.n_a, self.n_b) == 1 else "no scores to compare"
        f = (lambda x: f"{x:+.2f}") if self.unit.strip() == "dB" else (lambda x: f"{x:+.3g}")  # noqa: E731
        return (f"{self.name} {p_text(self.p)}, 95% CI of the difference "
                f"[{f(self.low)}, {f(self.high)}]{self.unit}, n = {self.n_a} vs {self.n_b}")

    def verdict(self) -> str:
        """The difference in words with the test's figures, e.g. "a clear difference (Welch's ...)"."""
        if self.clear:
            return f"a clear difference ({self.stats_text()})"
        if self.p is None:
            return f"not testable ({self.stats_text()})"
        return f"undecided ({self.stats_text()}; {needs_text(self.needed)})"

    def swapped(self) -> Test:
        """The same test of mean(b) - mean(a)."""
        return Test(self.b, self.a, self.mean_b, self.mean_a, self.n_b, self.n_a, self.p,
                    None if self.high is None else -self.high, None if self.low is None else -self.low, self.unit,
                    self.needed, self.alpha, self.paired)

    def sentence(self) -> str:
        """`a` vs `b` in words, with the test's figures (a clear winner named first, its interval positive)."""
        if self.clear:
            t = self if self.diff > 0 else self.swapped()
            return f"{t.a} beats {t.b} by {t.diff:.2f}{t.unit} ({t.stats_text()})"
        return f"{self.a} vs {self.b}: {self.diff:+.2f}{self.unit}, {self.verdict()}"


def p_text(p: float) -> str:
    """A p-value as the report prints it: "p = 0.042", "p < 0.001"."""
    return f"p = {p:.2g}" if p >= 1e-3 else "p < 0.001"


def finite_values(xs: Sequence[float | None]) -> list[float]:
    """The finite numbers of xs, as floats (a seed that never scored is no sample)."""
    return [float(x) for x in xs if x is not None and math.isfinite(x)]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _flat(xs: Sequence[float]) -> bool:
    return max(xs) == min(xs)


def welch(a: Sequence[float | None], b: Sequence[float | None], a_name: str = "a", b_name: str = "b",
          unit: str = " dB", alpha: float = ALPHA, needs: bool = True) -> Test:
    """Welch's t-test of two samples' means (NaNs and nulls dropped); `needs`: an undecided one with
    the seeds it would need (seeds_needed, a power solve: the race, which judges often, skips it)."""
    xa, xb = finite_values(a), finite_values(b)
    p = low = high = None
    if len(xa) >= 2 and len(xb) >= 2:
        if _flat(xa) and _flat(xb):  # no spread at all: the test is undefined
            p = 1.0 if xa[0] == xb[0] else 0.0
            low = high = xa[0] - xb[0]
        else:
            # here, not at the top: study.spec reads this module's constants, and one seed needs no test
            from scipy import stats

            res = stats.ttest_ind(xa, xb, equal_var=False)
            ci = res.confidence_interval(0.95)
            p, low, high = float(res.pvalue), float(ci.low), float(ci.high)
    needed = seeds_needed(xa, xb, equality=False, alpha=alpha) if needs and p is not None and p >= alpha else None
    return Test(a_name, b_name, _mean(xa), _mean(xb), len(xa), len(xb), p, low, high, unit, needed, alpha)


def shared_pairs(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> tuple[list[float], list[float]]:
    """The scores of the seeds both settings ran and scored, in seed order (seed k is the same data
    order and initialisation in every setting, so these are pairs)."""
    seeds = sorted(s for s in set(a) & set(b) if finite_values([a[s], b[s]]) == [a[s], b[s]])
    return [float(a[s]) for s in seeds], [float(b[s]) for s in seeds]  # type: ignore[arg-type]


def paired(a: Mapping[int, float | None], b: Mapping[int, float | None], a_name: str = "a", b_name: str = "b",
           unit: str = " dB", alpha: float = ALPHA, needs: bool = True) -> Test:
    """The paired t-test (scipy's ttest_rel) of mean(a) - mean(b) on the seeds both scored."""
    xa, xb = shared_pairs(a, b)
    p = low = high = None
    if len(xa) >= 2:
        d = [x - y for x, y in zip(xa, xb)]
        if _flat(d):  # every pair differs by the same amount: the test is undefined
            p = 1.0 if d[0] == 0 else 0.0
            low = high = d[0]
        else:
            from scipy import stats  # as in welch: imported only for a test to run

            res = stats.ttest_rel(xa, xb)
            ci = res.confidence_interval(0.95)
            p, low, high = float(res.pvalue), float(ci.low), float(ci.high)
    needed = seeds_needed(xa, xb, equality=False, alpha=alpha, pairs=True) if needs and p is not None and p >= alpha else None
    return Test(a_name, b_name, _mean(xa), _mean(xb), len(xa), len(xb), p, low, high, unit, needed, alpha, True)


@dataclass(frozen=True)
class Equivalence:
    """TOST of |mean(a) - mean(b)| < margin (two one-sided t-tests), seeds as samples."""

    test: Test  # the two-sided test of the same samples (the difference and its interval)
    margin: float
    p: float | None  # TOST p-value (the larger one-sided p); None with fewer than two scores on a side

    @property
    def equivalent(self) -> bool:
        return self.p is not None and self.p < self.test.alpha


def tost(a: Sequence[float | None], b: Sequence[float | None], margin: float = MARGIN_DB, a_name: str = "a",
         b_name: str = "b", alpha: float = ALPHA, needs: bool = True) -> Equivalence:
    """Whether two samples' means are equal within +-margin: statsmodels' ttost_ind, unequal variances."""
    t = welch(a, b, a_name, b_name, alpha=alpha, needs=needs)
    xa, xb = finite_values(a), finite_values(b)
    p = None
    if len(xa) >= 2 and len(xb) >= 2:
        if _flat(xa) and _flat(xb):  # no spread: the tests are undefined
            p = 0.0 if abs(xa[0] - xb[0]) < margin else 1.0
        else:
            from statsmodels.stats.weightstats import ttost_ind  # as in welch: only for a test to run

            p = float(ttost_ind(xa, xb, -margin, margin, usevar="unequal")[0])
    return Equivalence(t, margin, p)


def tost_paired(a: Mapping[int, float | None], b: Mapping[int, float | None], margin: float = MARGIN_DB,
                a_name: str = "a", b_name: str = "b", alpha: float = ALPHA, needs: bool = True) -> Equivalence:
    """TOST on the seeds both scored: statsmodels' ttost_paired."""
    t = paired(a, b, a_name, b_name, alpha=alpha, needs=needs)
    xa, xb = shared_pairs(a, b)
    p = None
    if len(xa) >= 2:
        d = [x - y for x, y in zip(xa, xb)]
        if _flat(d):  # every pair differs by the same amount: the tests are undefined
            p = 0.0 if abs(d[0]) < margin else 1.0
        else:
            import numpy as np
            from statsmodels.stats.weightstats import ttost_paired  # as in welch: only for a test to run

            p = float(ttost_paired(np.asarray(xa), np.asarray(xb), -margin, margin)[0])
    return Equivalence(t, margin, p)


def seeds_needed(a: Sequence[float | None], b: Sequence[float | None], equality: bool,
                 margin: float = MARGIN_DB, alpha: float = ALPHA, pairs: bool = False) -> int | None:
    """Seeds per setting that the observed means and spread would need to settle the comparison with
    power POWER at alpha: a clear difference (two-sided), or for an equality claim equivalence within
    +-margin (each one-sided test of TOST). statsmodels' TTestIndPower on the pooled sd (TTestPower on
    the sd of the differences for pairs). None when no number of seeds would (no spread to estimate
    from; or, for equality, a difference beyond the margin)."""
    xa, xb = finite_values(a), finite_values(b)
    if len(xa) < 2 or len(xb) < 2:
        return None
    from statsmodels.stats.power import TTestIndPower, TTestPower  # as in welch: only for a solve to run

    if pairs:
        sd = statistics.stdev([x - y for x, y in zip(xa, xb)])
    else:  # the pooled sd: the effect size's scale
        sd = math.sqrt((statistics.variance(xa) * (len(xa) - 1) + statistics.variance(xb) * (len(xb) - 1))
                       / (len(xa) + len(xb) - 2))
    diff = abs(_mean(xa) - _mean(xb))
    if sd == 0:
        return None
    if equality:
        if diff >= margin:
            return None
        effect, alternative = (margin - diff) / sd, "larger"
    else:
        if diff == 0:
            return None
        effect, alternative = diff / sd, "two-sided"
    power = TTestPower() if pairs else TTestIndPower()
    if power.power(effect, MAX_SEEDS, alpha, alternative=alternative) < POWER:
        return MAX_SEEDS + 1  # out of reach: the solver need not search that far (it stops converging)
    try:
        with warnings.catch_warnings():  # a solver that does not converge answers nan: None below
            warnings.simplefilter("ignore")
            n = power.solve_power(effect_size=effect, alpha=alpha, power=POWER, alternative=alternative)
    except (ValueError, RuntimeError):
        return None
    import numpy as np

    n = float(np.asarray(n).reshape(-1)[0])  # solve_power answers a 0-d or 1-element array
    return max(math.ceil(n), 2) if math.isfinite(n) else None


def needs_text(n: int | None, equality: bool = False) -> str:
    """How many seeds per setting would settle a verdict, in words (seeds_needed's answer)."""
    if n is None:
        return ("no number of seeds would show equality at this margin: the observed difference exceeds it"
                if equality else "the observed spread gives no estimate of the seeds it would need")
    if n > MAX_SEEDS:
        return f"more than {MAX_SEEDS} seeds per setting would be needed to settle it"
    return f"about {n} seeds per setting would settle it"


__all__ = ["ALPHA", "Equivalence", "MARGIN_DB", "MAX_SEEDS", "POWER", "Test", "finite_values", "needs_text", "p_text",
           "paired", "seeds_needed", "shared_pairs", "tost", "tost_paired", "welch"]
