"""study.race and study.compare: the seed race's rule on scores with known answers, its tests
against statsmodels and scipy, and the searcher that runs it (study.space.SeedRepeater)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
import pytest
from scipy import stats
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from study.compare import paired, seeds_needed, tost, tost_paired, welch
from study.race import (EQUIVALENT, LEADER, NOT_RACED, OPEN, WORSE, RaceRule, contenders, next_round, race_arms, replay,
                        standings, summary_text)
from study.ranking import sort_key
from study.space import SEED_KEY, SeedRepeater, optuna_search
from study.spec import StudyError, load_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

RULE = RaceRule(2, 8)


def arms(**per: list[float | None]) -> dict[str, dict[int, float | None]]:
    return {name: dict(enumerate(xs)) for name, xs in per.items()}


# --- the tests the race judges with, against the libraries -----------------------------------------


def test_tost_and_paired_tests_are_the_libraries() -> None:
    a, b = [31.2, 30.9, 31.4, 31.0, 31.3], [31.1, 31.0, 31.2, 30.8, 31.3]
    e = tost(a, b, 0.5)
    assert e.p == pytest.approx(ttost_ind(a, b, -0.5, 0.5, usevar="unequal")[0]) and e.equivalent
    assert e.test.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    pa, pb = dict(enumerate(a)), dict(enumerate(b))
    ep = tost_paired(pa, pb, 0.5)
    assert ep.p == pytest.approx(ttost_paired(np.asarray(a), np.asarray(b), -0.5, 0.5)[0])
    t = paired(pa, pb)
    assert t.paired and t.p == pytest.approx(stats.ttest_rel(a, b).pvalue) and t.n_a == 5
    # pairs are the seeds both scored: seed 1 lost on one side, seed 9 run by one side only
    t2 = paired({0: 1.0, 1: None, 2: 3.0, 3: 4.5, 9: 7.0}, {0: 0.5, 1: 2.0, 2: 2.0, 3: 4.0})
    assert t2.n_a == 3 and t2.p == pytest.approx(stats.ttest_rel([1.0, 3.0, 4.5], [0.5, 2.0, 4.0]).pvalue)
    # a level other than 0.05 decides "clear"
    w = welch([25.0, 25.6, 24.9], [24.0, 24.4, 24.2])
    assert w.clear and not welch([25.0, 25.6, 24.9], [24.0, 24.4, 24.2], alpha=w.p / 2).clear


def test_seeds_needed_is_statsmodels_power() -> None:
    a, b = [31.0, 32.0, 30.5], [30.0, 30.8, 31.2]
    n = seeds_needed(a, b, equality=False)
    pooled = ((stats.tvar(a) * 2 + stats.tvar(b) * 2) / 4) ** 0.5
    effect = abs(sum(a) / 3 - sum(b) / 3) / pooled
    ref = TTestIndPower().solve_power(effect_size=effect, alpha=0.05, power=0.8, alternative="two-sided")
    assert n == max(int(-(-float(ref) // 1)), 2)


# --- the rule ----------------------------------------------------------------------------------------


def test_a_clearly_worse_configuration_gets_no_more_seeds() -> None:
    a = arms(best=[32.0, 32.1], close=[31.5, 32.5], bad=[20.0, 20.1])
    table = standings(a, RaceRule(2, 8, alpha=0.5))  # one look's level: 0.5 / 7
    assert [st.setting for st in table][0] == "best" and table[0].state == LEADER
    bad = next(st for st in table if st.setting == "bad")
    assert bad.state == WORSE and bad.settled
    grow = next_round(a, RaceRule(2, 8, alpha=0.5))
    assert "bad" not in grow and set(grow) == {"best", "close"}


def test_equal_configurations_end_equivalent_once_the_interval_fits_the_margin() -> None:
    rng = random.Random(3)
    same = [30.0 + rng.gauss(0, 0.05) for _ in range(8)]
    other = [30.0 + rng.gauss(0, 0.05) for _ in range(8)]
    counts, table, rounds = replay({"a": same, "b": other}, RULE)
    st = {s.setting: s for s in table}
    assert {st["a"].state, st["b"].state} == {LEADER, EQUIVALENT}
    assert max(counts.values()) < 8  # settled before max
    # the rule on the recorded scores: no more seeds
    assert next_round({k: dict(enumerate(v[:counts[k]])) for k, v in {"a": same, "b": other}.items()}, RULE) == []
    assert rounds[0] == {"a": 2, "b": 2}


def test_an_open_pair_gets_seeds_until_max_then_is_reported_open_with_the_seeds_needed() -> None:
    rng = random.Random(0)
    a = [30.0 + rng.gauss(0, 2.0) for _ in range(6)]
    b = [29.7 + rng.gauss(0, 2.0) for _ in range(6)]
    rule = RaceRule(2, 6)
    counts, table, rounds = replay({"a": a, "b": b}, rule)
    assert counts == {"a": 6, "b": 6} and len(rounds) == 5  # 2, 3, 4, 5, 6 seeds
    other = next(s for s in table if s.state != LEADER)
    assert other.state == OPEN and other.needed is None  # replay leaves out the power estimate
    full = standings({"a": dict(enumerate(a)), "b": dict(enumerate(b))}, rule, needed=True)
    assert full[1].state == OPEN and full[1].needed is not None and full[1].needed > 6
    assert summary_text(full) == "1 comparison open, 0 settled"


def test_the_leader_is_the_ranking_first_and_a_lost_seed_ranks_below() -> None:
    a = arms(x=[30.0, None], y=[25.0, 25.5], z=[26.0, 26.5])
    order = [st.setting for st in standings(a, RULE)]
    assert order == sorted(a, key=lambda s: sort_key(*_mean_lost(a[s]), s, "max")) == ["z", "y", "x"]
    mins = arms(x=[3.0, 3.1], y=[2.0, 2.1])
    assert standings(mins, RaceRule(2, 4, mode="min"))[0].setting == "y"


def _mean_lost(scores: dict[int, float | None]) -> tuple[float | None, int]:
    xs = [v for v in scores.values() if v is not None]
    return (sum(xs) / len(xs) if xs else None), len(scores) - len(xs)


def test_a_confirmation_race_takes_the_top_k_by_their_first_seeds() -> None:
    a = arms(a=[30.0, 30.2, 20.0], b=[29.0, 29.1], c=[28.0, 28.2], d=[10.0, 10.1])
    assert contenders(a, RULE, 2) == ["a", "b"]  # a's third seed does not change who raced
    table = {st.setting: st.state for st in standings(a, RULE, top=2)}
    assert table["c"] == NOT_RACED and table["d"] == NOT_RACED
    assert set(next_round(a, RULE, top=2)) <= {"a", "b"}


def test_a_configuration_short_of_its_first_seeds_comes_first() -> None:
    assert next_round(arms(a=[1.0, 2.0], b=[3.0]), RULE) == ["b"]


def test_race_arms_keep_the_last_row_of_a_seed() -> None:
    assert race_arms([("a", 0, 1.0), ("a", 1, float("nan")), ("a", 0, 2.0)]) == {"a": {0: 2.0, 1: None}}


def test_a_race_rule_checks_its_bounds() -> None:
    with pytest.raises(ValueError, match="min <= max"):
        RaceRule(3, 2)
    assert RaceRule(2, 8).looks == 7 and RaceRule(2, 8).level == pytest.approx(0.05 / 7)


# --- the study file ------------------------------------------------------------------------------------

GRID = """
[space.kl_anneal_type]
choices = ["Monotonic", "Cyclical", "None"]
"""


def spec_of(tmp_path: Path, study: str = "", search: str = 'sampler = "grid"', space: str = GRID) -> Any:
    path = tmp_path / "s.toml"
    path.write_text(f'[study]\nname = "t"\n{study}\n[search]\n{search}\n{space}', encoding="utf-8")
    return load_spec(path)


def test_the_race_in_a_study_file(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "seeds = { min = 2, max = 6 }\nalpha = 0.1\nmargin_db = 0.25\npaired = true")
    assert spec.seeds == (0, 1, 2, 3, 4, 5) and spec.min_trials == 6 and spec.num_trials == 18
    rule = spec.race_rule
    assert (rule.min_seeds, rule.max_seeds, rule.alpha, rule.margin, rule.paired) == (2, 6, 0.1, 0.25, True)
    tpe = spec_of(tmp_path, "num_samples = 5\nseeds = { min = 2, max = 4 }", 'sampler = "random"\nconfirm_top = 2')
    assert tpe.min_trials == 10 and tpe.num_trials == 10 + 2 * 2 and tpe.race_top == 2
    assert spec_of(tmp_path, "seeds = [0, 1]").race is None


@pytest.mark.parametrize(("study", "search", "key", "reason"), [
    ("seeds = { min = 2, maxx = 6 }", 'sampler = "grid"', "study.seeds.maxx", "did you mean 'max'"),
    ("seeds = { min = 4, max = 3 }", 'sampler = "grid"', "study.seeds.max", "must be >= min"),
    ("seeds = { min = 0, max = 3 }", 'sampler = "grid"', "study.seeds.min", "must be >= 1"),
    ("seeds = { min = 2, max = 3 }\nalpha = 0.7", 'sampler = "grid"', "study.alpha", "between 0 and 0.5"),
    ("margin_db = 0", 'sampler = "grid"', "study.margin_db", "must be > 0"),
    ("num_samples = 3\nseeds = [0, 1]", 'sampler = "random"\nconfirm_top = 2', "search.confirm_top", "needs a seed race"),
    ("seeds = { min = 2, max = 3 }", 'sampler = "grid"\nconfirm_top = 2', "search.confirm_top", "races every configuration"),
    ("num_samples = 4\nseeds = { min = 2, max = 3 }", 'sampler = "random"', "study.seeds", "confirm_top"),
    ("num_samples = 2\nseeds = { min = 2, max = 3 }", 'sampler = "random"\nconfirm_top = 3', "search.confirm_top", "<= study.num_samples"),
])
def test_a_bad_race_is_refused_naming_the_key(tmp_path: Path, study: str, search: str, key: str, reason: str) -> None:
    with pytest.raises(StudyError) as e:
        spec_of(tmp_path, study, search)
    assert f": {key}: " in str(e.value) and reason in str(e.value)


# --- the searcher ----------------------------------------------------------------------------------------


def drive(rep: SeedRepeater, scores: dict[str, list[float]], concurrency: int = 2) -> list[tuple[str, int]]:
    """Tune's loop in miniature: ask while fewer than `concurrency` run, end the oldest; returns the
    (setting, seed) of each trial in the order handed out."""
    running: list[tuple[str, dict[str, Any]]] = []
    out: list[tuple[str, int]] = []
    n = 0
    while True:
        finished = False
        while len(running) < concurrency:
            tid = f"t{n}"
            config = rep.suggest(tid)
            if config is None:
                break
            if config == SeedRepeater.FINISHED:
                finished = True
                break
            n += 1
            running.append((tid, config))
            out.append((config["kl_anneal_type"], config[SEED_KEY]))
        if not running:
            assert finished, "the searcher waits with nothing running"
            return out
        tid, config = running.pop(0)
        rep.on_trial_complete(tid, {"val/psnr": scores[config["kl_anneal_type"]][config[SEED_KEY]], "epoch": 0})


def test_the_searcher_races_as_the_rule_replays(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "seeds = { min = 2, max = 6 }")
    rng = random.Random(1)
    scores = {"None": [32.0 + rng.gauss(0, 0.4) for _ in range(6)],
              "Monotonic": [31.8 + rng.gauss(0, 0.4) for _ in range(6)],
              "Cyclical": [25.0 + rng.gauss(0, 0.4) for _ in range(6)]}
    storage = optuna.storages.InMemoryStorage()
    rep = SeedRepeater(optuna_search(spec, storage), spec.seeds, key=SEED_KEY, race=spec.race_rule,
                       num_configs=spec.num_configs, searched=["kl_anneal_type"])
    ran = drive(rep, scores)
    counts, _, _ = replay({k: v for k, v in scores.items()}, spec.race_rule)
    assert {k: sum(1 for s, _ in ran if s == k) for k in scores} == counts
    assert spec.min_trials <= len(ran) <= spec.num_trials
    for k in scores:  # seeds in order, none twice
        assert [seed for s, seed in ran if s == k] == list(range(counts[k]))
    # Optuna is told each configuration's mean over its first seeds, once
    study = optuna.load_study(study_name="t", storage=storage)
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(done) == 3
    by = {t.params["kl_anneal_type"]: t.value for t in done}
    assert by["Cyclical"] == pytest.approx(sum(scores["Cyclical"][:2]) / 2)


def test_a_confirmation_race_after_a_random_search(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "num_samples = 3\nseeds = { min = 2, max = 5 }", 'sampler = "random"\nconfirm_top = 2',
                   '[space.kl_anneal_type]\nchoices = ["Monotonic", "Cyclical", "None", "x"]\n'.replace(', "x"', ""))
    rep = SeedRepeater(optuna_search(spec), spec.seeds, key=SEED_KEY, race=spec.race_rule,
                       num_configs=spec.num_configs, top=spec.race_top, searched=["kl_anneal_type"])
    rng = random.Random(2)
    scores = {k: [m + rng.gauss(0, 1.0) for _ in range(5)] for k, m in (("None", 30), ("Monotonic", 29.8), ("Cyclical", 29.9))}
    ran = drive(rep, scores)
    firsts = ran[:6]
    assert all(seed < 2 for _, seed in firsts)  # the search: 3 configurations x 2 seeds
    settings = {s for s, _ in firsts}
    extra = [s for s, seed in ran[6:]]
    assert len(set(extra)) <= 2 and len(ran) <= spec.num_trials
    if len(settings) == 3:  # the third is never raced
        arms_ = {s: {seed: scores[s][seed] for t, seed in firsts if t == s} for s in settings}
        assert set(extra) <= set(contenders(arms_, spec.race_rule, 2))


def test_a_race_state_survives_a_restart_between_rounds(tmp_path: Path) -> None:
    import pickle

    spec = spec_of(tmp_path, "seeds = { min = 2, max = 4 }")
    scores = {"None": [30.0, 30.5, 30.2, 30.1], "Monotonic": [29.9, 30.6, 30.0, 30.3], "Cyclical": [20.0, 20.4, 20.1, 20.2]}
    rep = SeedRepeater(optuna_search(spec), spec.seeds, key=SEED_KEY, race=spec.race_rule,
                       num_configs=spec.num_configs, searched=["kl_anneal_type"])
    for i in range(6):  # the first round, ended
        c = rep.suggest(f"a{i}")
        rep.on_trial_complete(f"a{i}", {"val/psnr": scores[c["kl_anneal_type"]][c[SEED_KEY]]})
    ckpt = tmp_path / "inner.pkl"
    state = pickle.loads(pickle.dumps(rep.get_state()))
    rep.save(str(ckpt))
    again = SeedRepeater(optuna_search(spec), spec.seeds, key=SEED_KEY)
    again.set_state(state)
    again.restore(str(ckpt))
    nxt = again.suggest("b0")
    assert nxt is not None and nxt != SeedRepeater.FINISHED and nxt[SEED_KEY] == 2


# --- a race through Ray, killed mid-race and resumed ---------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_a_smoke_race_killed_mid_race_resumes_with_no_trial_lost_or_run_twice(tmp_path: Path, cache_dir: Path) -> None:
    from study.analyze import read_study
    from study.evidence import race_standings
    from study.tables import trial_arms
    from study.tables import analyze
    from study_helpers import kill_session, result_rows, run_cli, start_cli, study_cmd, trial_dirs, wait_for, write_study

    # a grid of 2 configurations; a level and a margin that settle nothing, so the race goes to max
    study = write_study(tmp_path / "race.toml", study={"name": "race", "num_samples": 1, "seeds": {"min": 2, "max": 3}, "alpha": 0.01,
                                                       "margin_db": 0.01, "max_concurrent": 2},
                        search={"sampler": "grid", "max_failures": 1}, train={"epochs": 2},
                        space={"kl_anneal_type": {"choices": ["Monotonic", "None"]}})
    spec = load_spec(study)
    assert (spec.min_trials, spec.num_trials) == (4, 6)
    exp = tmp_path / "results" / "race"
    log = tmp_path / "first.log"
    proc = start_cli(study_cmd(study), tmp_path, cache_dir, log)
    try:  # into the race's second round: a fifth trial has started
        wait_for(lambda: exp.is_dir() and len(trial_dirs(exp)) >= 5, 600, "the race's second round", proc, log)
    finally:
        kill_session(proc)
    assert not (exp / "finished.json").exists(), "killed too late"

    r = run_cli(study_cmd(study), tmp_path, cache_dir)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert "resuming the unfinished study" in r.stdout and (exp / "finished.json").exists()
    trials = trial_dirs(exp)
    assert spec.min_trials <= len(trials) <= spec.num_trials
    for trial in trials:
        assert [row["epoch"] for row in result_rows(trial)] == [0, 1], trial.name  # no loss, no repeats
    tables, info = analyze(exp), read_study(exp)
    seeds = tables.trials.group_by("setting").agg(pl.col("seed").sort()).rows()
    assert all(s == list(range(len(s))) for _, s in seeds), seeds  # seeds 0.. in order, none twice
    # what the rule gives on the recorded scores: the race is over, and replaying it uses these trials
    arms = trial_arms(tables.trials)
    assert next_round(arms, spec.race_rule) == []
    counts, _, _ = replay({k: [v[s] for s in sorted(v)] for k, v in arms.items()}, spec.race_rule)
    assert counts == {k: len(v) for k, v in arms.items()}
    assert {st.state for st in race_standings(tables, info)} <= {LEADER, OPEN, WORSE, EQUIVALENT}


@pytest.mark.slow
def test_a_confirmation_race_ranks_the_raced_configurations_first(tmp_path: Path) -> None:
    """A configuration only searched (2 lucky seeds) never outranks the race's leader: THE ranking,
    best.toml's source, and the race agree on the winner."""
    import re

    from fake_results import write_scores_study
    from study.analyze import read_study
    from study.evidence import race_standings
    from study.tables import analyze, ranking

    # by their first 2 seeds A and B are the top 2 and race; C (mean 29.95) is searched only, and ends
    # above both raced means
    scores = {"Monotonic": [30.0, 31.0, 27.0, 27.0], "Cyclical": [30.0, 30.4, 28.0, 28.0], "None": [29.9, 30.0]}
    exp = write_scores_study(tmp_path, scores, name="confirm")
    text = (exp / "study.toml").read_text()
    text = re.sub(r"seeds = \[[^]]*\]", "seeds = { min = 2, max = 4 }\nnum_samples = 3", text)
    (exp / "study.toml").write_text(text.replace('sampler = "grid"', 'sampler = "random"\nconfirm_top = 2'))
    info = read_study(exp)
    assert info.confirm_top == 2 and info.race_rule is not None
    tables = analyze(exp)
    ranked = ranking(tables, info)["setting"].to_list()
    assert ranked == ["kl_anneal_type=Cyclical", "kl_anneal_type=Monotonic", "kl_anneal_type=None"]
    table = race_standings(tables, info, needed=False)
    assert table is not None and table[0].setting == ranked[0] and table[0].state == LEADER
    assert next(st for st in table if st.setting.endswith("None")).state == NOT_RACED
