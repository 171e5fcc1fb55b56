"""What a seed race saves and what it gets wrong: a finished fixed-seed study replayed as a race, and
races on simulated populations whose true means are known.

    python benchmarks/racing.py [--study results/kl-fixed8] [--run] [--min 2] [--max M] [--reps 200]
    python benchmarks/racing.py --simulate [--reps 200]       # the simulation only
    python benchmarks/racing.py --no-simulate --study DIR     # the replay only

Replay: a finished study whose configurations all ran the same M seeds (a fixed `[study] seeds`
list) is replayed with study.race.replay as if it had been `seeds = { min, max }` (max default M;
alpha, margin_db and paired the study's unless given): the race sees only the seeds it would have
run, in seed order. Its line gives the trials both used, both leaders (the fixed study's is THE
ranking's first, study.tables.ranking) and every settled verdict of the race beside what all M
seeds say of the same pair (the configuration and the race's leader, at the study's alpha):

    "clearly worse" is contradicted when, on all M seeds, its mean is not below the leader's
        (not above, mode "min"): the full data rank it level with or ahead of the leader;
    "equivalent" is contradicted when, on all M seeds, the difference is clearly beyond the margin:
        a one-sided t-test (statsmodels, Welch's or paired as the rule) that the difference
        exceeds +margin, or one that it is below -margin, is clear at alpha. A clear difference
        inside the margin is no contradiction: equivalence claims |difference| < margin, not 0.

Targets (replay): the same leader; no contradicted settled verdict; race trials <= 50% of the
fixed study's. `--run` first runs the fixed 8-seed kl study (search_spaces/kl.toml with seeds
0..7, named after --study's folder; tens of minutes on 2 cores); the default --study is replayed
when it exists, else the line says so.

Simulation: per population (true means and sds known), --reps races on scores drawn from normal
distributions (numpy's seeded Generator), min 2, max 8 unless given. A "clearly worse" verdict is
wrong when the configuration's true mean is not below the race leader's (not above, "min"); an
"equivalent" one when the true difference to the leader is at least the margin. Rates: wrong per
comparison (each non-leader configuration's final standing against the leader, settled or not) and
wrong per settled verdict (for information). Target: the per-comparison rate <= alpha, the level
the race's Bonferroni over rounds (study.race.RaceRule.level) is meant to keep; the Wilson 95%
interval of the rate (statsmodels) is printed beside it, since `reps` races estimate it.

Prints JSON lines: one "replay" line (or its "skipped" line), one "simulate" line per population.
Exit 2, with a one-line error, when the study cannot be replayed (missing, unequal seed sets).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from study.compare import ALPHA, MARGIN_DB, finite_values, paired, shared_pairs, welch  # noqa: E402
from study.race import EQUIVALENT, LEADER, OPEN, WORSE, RaceRule, Standing, replay  # noqa: E402

DEFAULT_STUDY = Path("results/kl-fixed8")
KL = ROOT / "search_spaces" / "kl.toml"
FIXED_SEEDS = 8  # the fixed kl study `--run` runs: the race's default max in the kl study


class Refused(Exception):
    """The study cannot be replayed: its message is the one-line error."""


# -- the replay of a finished fixed-seed study -------------------------------------------------------


def fixed_variant(study_dir: Path, seeds: int) -> Path:
    """Write search_spaces/kl.toml as a fixed-seed study named after study_dir, beside it
    (<study_dir>.toml), with its base made absolute (a base is relative to the file naming it)."""
    raw = tomllib.loads(KL.read_text(encoding="utf-8"))
    if "base" in raw:
        raw["base"] = str((KL.parent / raw["base"]).resolve())
    root = raw.get("data", {}).get("root")
    if root and not Path(root).expanduser().is_absolute():
        raw["data"]["root"] = str((KL.parent / root).resolve())
    raw["study"]["seeds"] = list(range(seeds))  # replaces a { min, max } race too
    raw["study"]["name"] = study_dir.name
    raw["study"]["description"] = (f"The kl study ({KL.name}) with a fixed list of {seeds} seeds, which "
                                   "benchmarks/racing.py replays as a seed race.")
    raw.get("search", {}).pop("confirm_top", None)  # confirms a race's best: a fixed list has no race
    path = study_dir.with_name(f"{study_dir.name}.toml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by benchmarks/racing.py --run from {KL}\n" + tomli_w.dumps(raw), encoding="utf-8")
    return path


def run_fixed(study_dir: Path, seeds: int) -> None:
    """Run the fixed kl study into study_dir (resumed if unfinished, kept if finished)."""
    from study.place import FINISHED

    if (study_dir / FINISHED).is_file():
        print(json.dumps({"benchmark": "racing", "run": "fixed study", "study": str(study_dir),
                          "skipped": "already finished: replaying it"}), flush=True)
        return
    path = fixed_variant(study_dir, seeds)
    cmd = [sys.executable, "-m", "study.run", str(path), "--storage", str(study_dir.resolve().parent)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)  # its progress goes to the terminal: tens of minutes
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed ({done.returncode})")
    print(json.dumps({"benchmark": "racing", "run": "fixed study", "study": str(study_dir), "file": str(path),
                      "wall_s": round(time.perf_counter() - start, 1)}), flush=True)


def fixed_scores(study_dir: Path) -> tuple[dict[str, dict[int, float | None]], list[int], Any, str | None]:
    """setting -> seed -> score of a finished study, its common seeds, its StudyInfo and THE
    ranking's leader; Refused unless every configuration ran the same seeds."""
    from study.analyze import read_study
    from study.tables import load_tables, ranking, trial_arms, winner

    if not study_dir.is_dir():
        raise Refused(f"{study_dir}: no such study results dir (`--run` runs the fixed kl study)")
    info = read_study(study_dir)
    tables = load_tables(study_dir)
    arms = trial_arms(tables.trials)
    if not arms:
        raise Refused(f"{study_dir}: no ended trials to replay")
    seed_sets = {s: sorted(sc) for s, sc in arms.items()}
    seeds = next(iter(seed_sets.values()))
    if any(v != seeds for v in seed_sets.values()):
        shown = "; ".join(f"{s}: {v}" for s, v in seed_sets.items())
        raise Refused(f"{study_dir}: configurations ran different seeds ({shown}); a replay needs one fixed seed list")
    best = winner(ranking(tables, info))
    return arms, seeds, info, best["setting"] if best else None


def _one_sided_beyond(a: Sequence[float], b: Sequence[float], margin: float, pairs: bool) -> float:
    """The smaller p of "a - b > +margin" and "a - b < -margin" (statsmodels' t-tests; nan: no spread)."""
    from statsmodels.stats.weightstats import DescrStatsW, ttest_ind

    if pairs:
        d = DescrStatsW(np.subtract(a, b))
        ps = [d.ttest_mean(margin, alternative="larger")[1], d.ttest_mean(-margin, alternative="smaller")[1]]
    else:
        ps = [ttest_ind(a, b, alternative="larger", usevar="unequal", value=margin)[1],
              ttest_ind(a, b, alternative="smaller", usevar="unequal", value=-margin)[1]]
    return float(np.nanmin(ps)) if not np.all(np.isnan(ps)) else math.nan


def check_verdict(st: Standing, scores: Mapping[int, float | None], leader: Mapping[int, float | None],
                  rule: RaceRule) -> dict[str, Any]:
    """A settled verdict of the race beside all the seeds' answer for the same pair (see the docstring)."""
    if rule.paired:
        a, b = shared_pairs(scores, leader)
        t = paired(scores, leader, alpha=rule.alpha, needs=False)
    else:
        a, b = finite_values(list(scores.values())), finite_values(list(leader.values()))
        t = welch(a, b, alpha=rule.alpha, needs=False)
    out: dict[str, Any] = {"setting": st.setting, "state": st.state, "seeds": st.seeds, "race_p": _sig(st.p),
                           "race_tost_p": _sig(st.tost_p), "fixed_diff": round(t.diff, 4), "fixed_p": _sig(t.p)}
    if st.state == WORSE:
        out["contradicted"] = not (t.diff < 0 if rule.mode == "max" else t.diff > 0)
    else:
        p = _one_sided_beyond(a, b, rule.margin, rule.paired)
        out["fixed_p_beyond_margin"] = None if math.isnan(p) else _sig(p)
        out["contradicted"] = p < rule.alpha
    return out


def _sig(p: float | None) -> float | None:
    return None if p is None else float(f"{p:.3g}")


def replay_study(study_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The replay line of a finished fixed-seed study."""
    arms, seeds, info, fixed_leader = fixed_scores(study_dir)
    m = len(seeds)
    hi = args.max if args.max is not None else m
    if hi > m:
        raise Refused(f"--max {hi}: the study ran only {m} seeds per configuration")
    try:
        rule = RaceRule(args.min, hi, info.mode, args.alpha if args.alpha is not None else info.alpha,
                        args.margin if args.margin is not None else info.margin,
                        args.paired if args.paired is not None else info.paired)
    except ValueError as e:
        raise Refused(str(e)) from None
    per_seed = {s: [sc[k] for k in seeds] for s, sc in arms.items()}
    counts, table, rounds = replay(per_seed, rule, seeds)
    race_leader = next(st.setting for st in table if st.state == LEADER)
    verdicts = [check_verdict(st, arms[st.setting], arms[race_leader], rule) for st in table if st.settled]
    fixed_trials, race_trials = len(arms) * m, sum(counts.values())
    ratio = race_trials / fixed_trials
    targets = {"same leader": race_leader == fixed_leader,
               "no contradicted settled verdict": not any(v["contradicted"] for v in verdicts),
               "race trials <= 50% of the fixed study's": ratio <= 0.5}
    return {"benchmark": "racing", "run": "replay", "study": str(study_dir), "configurations": len(arms), "seeds": m,
            "rule": _rule(rule), "fixed_trials": fixed_trials, "race_trials": race_trials, "trials_ratio": round(ratio, 4),
            "race_seeds": counts, "rounds": len(rounds), "fixed_leader": fixed_leader, "race_leader": race_leader,
            "same_leader": race_leader == fixed_leader, "verdicts": verdicts,
            "open": [st.setting for st in table if st.state == OPEN], "targets": targets,
            "targets_met": all(targets.values())}


def _rule(rule: RaceRule) -> dict[str, Any]:
    return {"min": rule.min_seeds, "max": rule.max_seeds, "mode": rule.mode, "alpha": rule.alpha,
            "level": round(rule.level, 6), "margin": rule.margin, "paired": rule.paired}


# -- the simulation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Population:
    """Configurations with known true means and sds of their per-seed scores (dB)."""

    name: str
    means: tuple[float, ...]
    sds: tuple[float, ...]


POPULATIONS = (
    Population("all equal", (31.0, 31.0, 31.0, 31.0), (0.8, 0.8, 0.8, 0.8)),
    # the shipped kl study's order of magnitude: one ahead, three close together, unequal spreads
    Population("kl-like", (32.5, 31.2, 31.1, 30.9), (1.1, 0.65, 0.4, 1.6)),
    # a tie within the margin (0.2 < 0.5 dB) and one far behind
    Population("near tie + far worse", (31.0, 30.8, 28.0), (0.5, 0.5, 0.5)),
)


def simulate(pop: Population, rule: RaceRule, reps: int, rng: np.random.Generator) -> dict[str, Any]:
    """`reps` races on scores drawn for `pop`: trials used, verdicts and how often they are wrong."""
    names = [f"c{i}" for i in range(len(pop.means))]
    true = dict(zip(names, pop.means))
    sign = 1.0 if rule.mode == "max" else -1.0
    start = time.perf_counter()
    trials = comparisons = settled = wrong_worse = wrong_equivalent = open_ = best_leads = 0
    states = {WORSE: 0, EQUIVALENT: 0}
    for _ in range(reps):
        draws = rng.normal(pop.means, pop.sds, size=(rule.max_seeds, len(names)))  # (seeds, configurations)
        counts, table, _ = replay({s: draws[:, i].tolist() for i, s in enumerate(names)}, rule)
        trials += sum(counts.values())
        leader = next(st.setting for st in table if st.state == LEADER)
        best_leads += sign * true[leader] >= max(sign * v for v in pop.means)
        for st in table:
            if st.state == LEADER:
                continue
            comparisons += 1
            gap = sign * (true[leader] - true[st.setting])  # > 0: truly behind the leader
            if st.state == WORSE:
                wrong_worse += gap <= 0
            elif st.state == EQUIVALENT:
                wrong_equivalent += abs(gap) >= rule.margin
            else:
                open_ += 1
            if st.settled:
                settled += 1
                states[st.state] += 1
    wrong = wrong_worse + wrong_equivalent
    per_comparison = wrong / comparisons
    return {"benchmark": "racing", "run": "simulate", "population": pop.name, "means": list(pop.means),
            "sds": list(pop.sds), "reps": reps, "rule": _rule(rule),
            "trials_fraction": round(trials / (reps * len(names) * rule.max_seeds), 4),
            "settled_per_rep": round(settled / reps, 3), "clearly_worse_per_rep": round(states[WORSE] / reps, 3),
            "equivalent_per_rep": round(states[EQUIVALENT] / reps, 3), "open_per_rep": round(open_ / reps, 3),
            "true_best_leads": round(best_leads / reps, 3), "comparisons": comparisons, "settled": settled,
            "wrong_clearly_worse": wrong_worse, "wrong_equivalent": wrong_equivalent,
            "wrong_per_comparison": round(per_comparison, 4), "wrong_per_comparison_ci95": _wilson(wrong, comparisons),
            "wrong_per_settled": round(wrong / settled, 4) if settled else None,
            "target": "wrong_per_comparison <= alpha", "target_met": per_comparison <= rule.alpha,
            "wall_s": round(time.perf_counter() - start, 2)}


def _wilson(k: int, n: int) -> list[float]:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return [round(float(low), 4), round(float(high), 4)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--study", type=Path, help=f"a finished fixed-seed study's results dir (default {DEFAULT_STUDY}, "
                   "replayed when it exists)")
    p.add_argument("--run", action="store_true", help=f"first run the fixed {FIXED_SEEDS}-seed kl study into --study "
                   "(tens of minutes; kept if finished)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--simulate", action="store_true", help="the simulation only")
    only.add_argument("--no-simulate", action="store_true", help="the replay only")
    p.add_argument("--min", type=int, default=2, help="seeds every configuration runs first (default 2)")
    p.add_argument("--max", type=int, help="the most seeds (default: the study's seed count; 8 in the simulation)")
    p.add_argument("--alpha", type=float, help=f"the race's alpha (default: the study's; {ALPHA} in the simulation)")
    p.add_argument("--margin", type=float, help=f"the equivalence margin (default: the study's; {MARGIN_DB} in the simulation)")
    p.add_argument("--paired", action=argparse.BooleanOptionalAction, default=None,
                   help="paired tests (default: the study's; unpaired in the simulation)")
    p.add_argument("--reps", type=int, default=200, help="races per simulated population (default 200)")
    p.add_argument("--seed", type=int, default=0, help="the simulation's numpy seed (default 0)")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    study_dir = args.study or DEFAULT_STUDY
    if not args.simulate:
        if args.run:
            run_fixed(study_dir, FIXED_SEEDS)
        if args.study is None and not args.run and not study_dir.is_dir():
            print(json.dumps({"benchmark": "racing", "run": "replay", "study": str(study_dir),
                              "skipped": "no such study: `--run` runs the fixed kl study (tens of minutes); "
                                         "the simulation runs alone"}), flush=True)
        else:
            try:
                print(json.dumps(replay_study(study_dir, args)), flush=True)
            except Refused as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
    if args.no_simulate:
        return 0
    try:
        rule = RaceRule(args.min, args.max if args.max is not None else FIXED_SEEDS, "max",
                        args.alpha if args.alpha is not None else ALPHA, args.margin if args.margin is not None else MARGIN_DB,
                        bool(args.paired))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    for pop in POPULATIONS:
        print(json.dumps(simulate(pop, rule, args.reps, rng)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
