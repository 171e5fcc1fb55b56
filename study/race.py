"""The seed race: more seeds only where a comparison with the leader is still open.

A study with `[study] seeds = { min = m, max = M }` runs every configuration it races with seeds
0..m-1 first. Then, in rounds, each configuration is compared with the leader (THE ranking's first,
study.ranking.sort_key) on the scores of the seeds it has run:

    clearly worse   the test of the difference (Welch's, or paired on the shared seeds) is clear
    equivalent      TOST puts the difference within +-margin
    open            neither

Each round's tests run at alpha / (max - min + 1), Bonferroni over the rounds a comparison can be
judged in: judging the same pair again after every seed at alpha itself would call equal settings
different far more often than alpha (benchmarks/racing.py measures it).

While any comparison is open, the leader and every open configuration get one more seed (the next
integer, the same data order and initialisation everywhere), up to M; a clearly worse or equivalent
one keeps the trials it has. The race ends when no comparison is open or no open one can get
another seed. A round's seeds all end before the next round is decided, so the trials a race uses
are a function of the scores alone, not of which trial happened to finish first (F-race does the
same); a resumed study recomputes the race from its results.

With a searched sampler (`[search] confirm_top = k`) the race is a confirmation: after the search,
the k best configurations by their first m seeds race as above and the others are "not raced".

Pure functions of the scores: no Ray, no Polars. The searcher (study.space.SeedRepeater) decides
with `next_round`; `cvae-study status`, the console and the report show `standings`;
benchmarks/racing.py replays finished studies with `replay`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Mapping, Sequence

from study.compare import ALPHA, MARGIN_DB, Equivalence, seeds_needed, shared_pairs, tost, tost_paired
from study.ranking import finite, sort_key

LEADER, WORSE, EQUIVALENT, OPEN, NOT_RACED = "leader", "clearly worse", "equivalent", "open", "not raced"
STATES: tuple[str, ...] = (LEADER, WORSE, EQUIVALENT, OPEN, NOT_RACED)

Scores = Mapping[int, "float | None"]  # seed -> the trial's score (None: it ended without one)


@dataclass(frozen=True)
class RaceRule:
    """How a race decides: the seeds it may give, its tests' level and the equivalence margin."""

    min_seeds: int  # seeds every raced configuration runs first
    max_seeds: int  # the most seeds a configuration gets
    mode: str = "max"  # which way the score is better
    alpha: float = ALPHA  # level of the difference test and of TOST
    margin: float = MARGIN_DB  # equivalence margin, in the metric's unit
    paired: bool = False  # compare on the seeds both ran (paired t-test, paired TOST)

    @classmethod
    def of(cls, race: Any, mode: str, alpha: float, margin: float, paired: bool) -> RaceRule | None:
        """The rule of a study's [study] seeds = { min, max } (study.spec.SeedRace; None: no race)."""
        return None if race is None else cls(race.min, race.max, mode, alpha, margin, paired)

    @property
    def looks(self) -> int:
        """Rounds in which a comparison can be judged: at min_seeds, min_seeds + 1, ..., max_seeds."""
        return self.max_seeds - self.min_seeds + 1

    @property
    def level(self) -> float:
        """The level of each round's tests: alpha / looks (Bonferroni over the rounds), so a
        comparison judged again after every seed is still wrong at most alpha of the time."""
        return self.alpha / self.looks

    def __post_init__(self) -> None:
        if not 1 <= self.min_seeds <= self.max_seeds:
            raise ValueError(f"a race needs 1 <= min <= max seeds, got min {self.min_seeds}, max {self.max_seeds}")


@dataclass(frozen=True)
class Standing:
    """One configuration's place in the race, beside the leader."""

    setting: str
    state: str  # one of STATES
    seeds: int  # seeds that ended (scored or not)
    n: int  # seeds that scored
    mean: float | None
    p: float | None = None  # the difference test's two-sided p against the leader
    tost_p: float | None = None  # TOST's p against the leader
    needed: int | None = None  # open: seeds per configuration the observed spread would need (compare.seeds_needed)
    low: float | None = None  # 95% CI of (this - leader)
    high: float | None = None

    @property
    def settled(self) -> bool:
        return self.state in (WORSE, EQUIVALENT)


def _mean(scores: Scores) -> float | None:
    xs = [float(v) for v in scores.values() if finite(v)]
    return sum(xs) / len(xs) if xs else None


def _lost(scores: Scores) -> int:
    return sum(not finite(v) for v in scores.values())


def ranked(arms: Mapping[str, Scores], mode: str, racing: Collection[str] | None = None) -> list[str]:
    """The settings in THE ranking's order (study.ranking.sort_key), best first; `racing`: the
    configurations of a confirmation race, which rank before the others."""
    return sorted(arms, key=lambda s: sort_key(_mean(arms[s]), _lost(arms[s]), s, mode,
                                               racing is None or s in racing))


def contenders(arms: Mapping[str, Scores], rule: RaceRule, top: int | None) -> list[str]:
    """The configurations that race: all of them (top None), or the `top` best by their first
    min_seeds seeds (a confirmation race after a search), in ranking order."""
    if top is None:
        return list(arms)
    first = {s: {seed: v for seed, v in sorted(sc.items())[:rule.min_seeds]} for s, sc in arms.items()}
    return ranked(first, rule.mode)[:top]


def _tests(c: Scores, leader: Scores, rule: RaceRule) -> Equivalence:
    # TOST carries the two-sided test of the same samples (Equivalence.test)
    if rule.paired:
        return tost_paired(c, leader, rule.margin, alpha=rule.level, needs=False)
    return tost(list(c.values()), list(leader.values()), rule.margin, alpha=rule.level, needs=False)


def compare_with_leader(setting: str, scores: Scores, leader: Scores, rule: RaceRule, needed: bool = False) -> Standing:
    """One contender's comparison with the leader: clearly worse, equivalent, or open (`needed`: with
    the seeds an open one would need, a power estimate the race itself does not use)."""
    e = _tests(scores, leader, rule)
    t = e.test
    worse = t.diff < 0 if rule.mode == "max" else t.diff > 0
    if t.clear and worse:
        state = WORSE
    elif e.equivalent:
        state = EQUIVALENT
    else:
        state = OPEN
    n_needed = None
    if state == OPEN and needed:
        a, b = shared_pairs(scores, leader) if rule.paired else (list(scores.values()), list(leader.values()))
        n_needed = seeds_needed(a, b, equality=False, alpha=rule.level, pairs=rule.paired)
    n = sum(finite(v) for v in scores.values())
    return Standing(setting, state, len(scores), n, _mean(scores), t.p, e.p, n_needed, t.low, t.high)


def standings(arms: Mapping[str, Scores], rule: RaceRule, top: int | None = None, needed: bool = False) -> list[Standing]:
    """Every configuration's standing, leader first, then the rest in ranking order (arms: setting ->
    seed -> score of its ended trials; `needed`: open ones with the seeds they would need). Before
    the leader has two scores nothing is settled."""
    racing = set(contenders(arms, rule, top))
    order = ranked(arms, rule.mode, racing)
    in_race = [s for s in order if s in racing]
    out: list[Standing] = []
    leader = in_race[0] if in_race else None
    for s in order:
        scores = arms[s]
        n = sum(finite(v) for v in scores.values())
        if s not in racing:
            out.append(Standing(s, NOT_RACED, len(scores), n, _mean(scores)))
        elif s == leader:
            out.append(Standing(s, LEADER, len(scores), n, _mean(scores)))
        else:
            out.append(compare_with_leader(s, scores, arms[leader], rule, needed))  # type: ignore[index]
    return out


def next_round(arms: Mapping[str, Scores], rule: RaceRule, top: int | None = None,
               table: Sequence[Standing] | None = None) -> list[str]:
    """The configurations that get one more seed now (each of them: its next seed), or [] when the
    race is over. Call it once every trial of the last round has ended. `table`: the standings of
    these arms, when the caller has them already."""
    racing = contenders(arms, rule, top)
    short = [s for s in racing if len(arms[s]) < rule.min_seeds]
    if short:  # the first seeds of a configuration come before any comparison
        return short
    table = standings(arms, rule, top) if table is None else table
    open_ = [st.setting for st in table if st.state == OPEN]
    if not open_:
        return []
    leader = next(st.setting for st in table if st.state == LEADER)
    return [s for s in (leader, *open_) if len(arms[s]) < rule.max_seeds]


def summary(table: Sequence[Standing]) -> tuple[int, int]:
    """(open, settled) comparisons with the leader."""
    return sum(st.state == OPEN for st in table), sum(st.settled for st in table)


def summary_text(table: Sequence[Standing]) -> str:
    """"2 comparisons open, 3 settled" (the console's and status's words)."""
    o, s = summary(table)
    return f"{o} comparison{'s' if o != 1 else ''} open, {s} settled"


def replay(per_seed: Mapping[str, Sequence[float | None]], rule: RaceRule, seeds: Sequence[int] | None = None,
           top: int | None = None) -> tuple[dict[str, int], list[Standing], list[dict[str, int]]]:
    """Run the race on known scores (per_seed[setting][k]: the score of seed k; `seeds` the seed
    integers, default 0..): the seeds each configuration ends with, the final standings, and the
    seed counts after each round. What a study with these scores would do, trial for trial."""
    seeds = list(seeds if seeds is not None else range(max(len(v) for v in per_seed.values())))
    counts = {s: 0 for s in per_seed}
    rounds: list[dict[str, int]] = []

    def arms() -> dict[str, dict[int, float | None]]:
        return {s: {seeds[k]: per_seed[s][k] for k in range(n)} for s, n in counts.items()}

    # the first round: min seeds for every configuration (a search's configurations all get them)
    for s in counts:
        counts[s] = min(rule.min_seeds, len(per_seed[s]))
    rounds.append(dict(counts))
    while True:
        grow = [s for s in next_round(arms(), rule, top) if counts[s] < len(per_seed[s])]
        if not grow:
            break
        for s in grow:
            counts[s] += 1
        rounds.append(dict(counts))
    return counts, standings(arms(), rule, top), rounds


def race_arms(rows: Collection[tuple[str, int, float | None]]) -> dict[str, dict[int, float | None]]:
    """(setting, seed, score) of ended trials -> setting -> seed -> score (a later row of a seed replaces)."""
    out: dict[str, dict[int, float | None]] = {}
    for setting, seed, score in rows:
        out.setdefault(setting, {})[int(seed)] = float(score) if finite(score) else None
    return out


__all__ = ["EQUIVALENT", "LEADER", "NOT_RACED", "OPEN", "RaceRule", "STATES", "Standing", "WORSE", "compare_with_leader",
           "contenders", "next_round", "race_arms", "ranked", "replay", "standings", "summary", "summary_text"]
