"""study.space: the define-by-run space, the samplers, the seed repeater and the searcher stack."""
from __future__ import annotations

import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from study._compat import asha_max_t
from study.space import (SEED_KEY, SeedRepeater, define_by_run, export_searcher_study, grid_queue, make_sampler, make_scheduler, make_searcher,
                         optuna_search, sqlite_storage)
from study.spec import StudySpec, load_spec
from study_helpers import ROOT

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = """
[space.kl_anneal_type]
choices = ["Monotonic", "Cyclical", "None"]
[space.kl_anneal_cycle]
low = 2
high = 8
step = 2
when = { kl_anneal_type = "Cyclical" }
[space.kl_anneal_ratio]
value = 0.5
when = { kl_anneal_type = ["Cyclical", "Monotonic"] }
[space.lr]
low = 1e-4
high = 1e-2
log = true
[space.tfr_d_step]
low = 0.0
high = 0.5
step = 0.05
[space.tfr_sde]
low = 1
high = 100
log = true
"""


def spec_of(tmp_path: Path, body: str, study: str = "", search: str = "") -> StudySpec:
    text = f'[study]\nname = "t"\nnum_samples = 2\n{study}\n[search]\n{search}\n{body}'
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    return load_spec(path)


def sample(spec: StudySpec, n: int, seed_override: int | None = None, tell: bool = True) -> list[dict[str, Any]]:
    """n configurations from the study's own OptunaSearch (its sampler, or its grid), as Tune drives it."""
    search = optuna_search(spec if seed_override is None else _with_seed(spec, seed_override))
    out = []
    for i in range(n):
        out.append(search.suggest(f"t{i}"))
        if tell:
            search.on_trial_complete(f"t{i}", {spec.metric: float(i % 3)})
    return out


def told(spec: StudySpec, storage: optuna.storages.BaseStorage) -> list[optuna.trial.FrozenTrial]:
    """The Optuna trials the searcher asked for (the grid's queued ones, not yet asked, left out)."""
    study = optuna.load_study(study_name=spec.name, storage=storage)
    return study.get_trials(states=[s for s in optuna.trial.TrialState if s != optuna.trial.TrialState.WAITING])


def _with_seed(spec: StudySpec, seed: int) -> StudySpec:
    import dataclasses
    return dataclasses.replace(spec, seed=seed)


# --- define-by-run ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_conditional_and_ranges(tmp_path: Path, sampler: str) -> None:
    spec = spec_of(tmp_path, SPACE, search=f'sampler = "{sampler}"')
    configs = sample(spec, 40)
    seen = {c["kl_anneal_type"] for c in configs}
    assert seen == {"Monotonic", "Cyclical", "None"}
    for c in configs:
        kind = c["kl_anneal_type"]
        assert ("kl_anneal_cycle" in c) == (kind == "Cyclical")
        assert ("kl_anneal_ratio" in c) == (kind in ("Cyclical", "Monotonic"))
        if "kl_anneal_cycle" in c:
            assert c["kl_anneal_cycle"] in (2, 4, 6, 8)
        if "kl_anneal_ratio" in c:
            assert c["kl_anneal_ratio"] == 0.5
        assert 1e-4 <= c["lr"] <= 1e-2
        assert 0.0 <= c["tfr_d_step"] <= 0.5
        k = c["tfr_d_step"] / 0.05
        assert math.isclose(k, round(k), abs_tol=1e-6)
        assert isinstance(c["tfr_sde"], int) and 1 <= c["tfr_sde"] <= 100
        spec.config_for(c)  # every sampled configuration builds


def test_log_range_is_sampled_on_a_log_scale(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "[space.lr]\nlow = 1e-5\nhigh = 1e-1\nlog = true\n", search='sampler = "random"')
    lrs = [c["lr"] for c in sample(spec, 200, tell=False)]
    below = sum(lr < 1e-3 for lr in lrs) / len(lrs)
    assert 0.35 < below < 0.65  # uniform in log10: half below the geometric middle (a linear scale gives ~1%)


def test_define_by_run_returns_only_constants(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, '[space.tfr]\nchoices = [0.0, 1.0]\n[space.milestones]\nvalue = [3, 6]\n')
    study = optuna.create_study()
    trial = study.ask()
    assert define_by_run(spec)(trial) == {"milestones": [3, 6]}
    assert set(trial.params) == {"tfr"}
    assert define_by_run(spec_of(tmp_path, '[space.tfr]\nchoices = [0.0, 1.0]\n'))(study.ask()) is None


def test_define_by_run_pickles(tmp_path: Path) -> None:
    fn = define_by_run(spec_of(tmp_path, SPACE))
    again = pickle.loads(pickle.dumps(fn))
    assert [p.name for p in again.space] == [p.name for p in fn.space]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_same_seed_same_configs_other_seed_differs(tmp_path: Path, sampler: str) -> None:
    spec = spec_of(tmp_path, SPACE, search=f'sampler = "{sampler}"')
    n = 14  # past TPE's 10 random start-up trials
    assert sample(spec, n) == sample(spec, n)
    assert sample(spec, n) != sample(spec, n, seed_override=spec.seed + 1)


# --- the grid --------------------------------------------------------------------------------------

GRID = """
[space.kl_anneal_type]
choices = ["Monotonic", "Cyclical", "None"]
[space.kl_anneal_cycle]
choices = [2, 5]
when = { kl_anneal_type = "Cyclical" }
[space.tfr]
choices = [0.0, 1.0]
"""


def searched(spec: StudySpec, point: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if spec.param(k).kind != "fixed"}


def key(c: dict[str, Any]) -> tuple:
    return tuple(sorted(c.items()))


def test_grid_enumerates_distinct_points_then_repeats(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, GRID, search='sampler = "grid"')
    points = spec.grid_points()
    assert points is not None and spec.grid_size() == 8  # (Monotonic, None, Cyclical x 2) x tfr 2, not 3 x 2 x 2
    assert spec.num_samples == 2 and len(grid_queue(spec)) == 2 * 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "re-evaluating" or study.stop() complaints
        configs = sample(spec, 2 * 8)
    want = sorted(key(p) for p in points)
    for rep in range(2):
        assert sorted(key(c) for c in configs[rep * 8:(rep + 1) * 8]) == want


def test_grid_with_concurrent_trials(tmp_path: Path) -> None:
    # Tune asks for several trials before telling any: the grid must still be covered exactly.
    spec = spec_of(tmp_path, GRID, search='sampler = "grid"')
    configs = sample(spec, 16, tell=False)
    counts: dict[tuple, int] = {}
    for c in configs:
        counts[key(c)] = counts.get(key(c), 0) + 1
    assert len(counts) == 8 and set(counts.values()) == {2}


def test_grid_order_depends_on_seed(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, GRID, search='sampler = "grid"')
    assert sample(spec, 8) == sample(spec, 8)
    others = [sample(spec, 8, seed_override=s) for s in (1, 2, 3)]
    assert any(o != sample(spec, 8) for o in others)


def test_grid_of_fixed_values_and_float_steps(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "[space.tfr_d_step]\nlow = 0.0\nhigh = 0.2\nstep = 0.1\n[space.tfr]\nvalue = 0.0\n",
                   search='sampler = "grid"')
    assert len(grid_queue(spec)) == 3 * spec.num_samples and all("tfr" not in c for c in grid_queue(spec))
    configs = sample(spec, 3)
    assert sorted(c["tfr_d_step"] for c in configs) == [0.0, 0.1, 0.2]
    assert all(c["tfr"] == 0.0 for c in configs)


def test_grid_of_empty_space(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "", study="seeds = [0, 1]", search='sampler = "grid"')
    assert spec.grid_size() == 1 and spec.num_trials == 2 * 1 * 2
    assert sample(spec, 2) == [{}, {}]


# --- the seed repeater -----------------------------------------------------------------------------


def test_seed_repeater_repeats_and_tells_the_mean(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, GRID, study="seeds = [10, 11, 12]", search='sampler = "grid"')
    storage = optuna.storages.InMemoryStorage()
    rep = SeedRepeater(optuna_search(spec, storage), spec.seeds)
    assert rep.metric == "val/psnr" and rep.mode == "max"
    ids = [f"t{i}" for i in range(6)]
    configs = [rep.suggest(i) for i in ids]
    assert [c[SEED_KEY] for c in configs] == [10, 11, 12, 10, 11, 12]
    assert all(searched(spec, {k: v for k, v in c.items() if k != SEED_KEY})
               == {k: v for k, v in configs[0 if n < 3 else 3].items() if k != SEED_KEY}
               for n, c in enumerate(configs))
    assert rep.group_of("t2") == "t0" and rep.group_of("t4") == "t3"
    for c in configs:  # the trainable's view: each builds with its own seed
        assert spec.config_for(c).train.seed == c[SEED_KEY]
    # completions arrive out of order, one seed diverges (NaN): the mean of the finite rest is told
    rep.on_trial_complete("t4", {"val/psnr": 20.0})
    rep.on_trial_complete("t0", {"val/psnr": 10.0})
    rep.on_trial_complete("t1", {"val/psnr": 13.0})
    assert [t.state for t in told(spec, storage)] == [optuna.trial.TrialState.RUNNING] * 2
    rep.on_trial_complete("t2", {"val/psnr": float("nan")})
    rep.on_trial_complete("t3", {"val/psnr": 22.0})
    rep.on_trial_complete("t3", {"val/psnr": 99.0})  # a repeated completion changes nothing
    rep.on_trial_complete("t5", {"val/psnr": 24.0})
    assert [(t.state, t.value) for t in told(spec, storage)] == [(optuna.trial.TrialState.COMPLETE, 11.5),
                                                                 (optuna.trial.TrialState.COMPLETE, 22.0)]


@pytest.mark.parametrize(("objective", "score"), [("best", (25.0 + 23.0) / 2), ("last", (19.0 + 23.0) / 2)])
def test_seed_repeater_tells_the_objective_and_the_curves(tmp_path: Path, objective: str, score: float) -> None:
    """Optuna gets the score study.tables.ranking ranks by, and the per-epoch means as intermediate values."""
    spec = spec_of(tmp_path, GRID, study=f'seeds = [0, 1]\nobjective = "{objective}"', search='sampler = "grid"')
    storage = optuna.storages.InMemoryStorage()
    rep = SeedRepeater(optuna_search(spec, storage), spec.seeds, spec.objective)
    rep.suggest("a")
    rep.suggest("b")
    for tid, curve in {"a": [20.0, 30.0, 19.0], "b": [21.0, 22.0, 23.0]}.items():
        for epoch, value in enumerate(curve):
            rep.on_trial_result(tid, {"epoch": epoch, "val/psnr": value})
    rep.on_trial_result("a", {"epoch": 1, "val/psnr": 25.0})  # resumed from epoch 0: the re-report wins
    rep.on_trial_complete("a", {"epoch": 2, "val/psnr": 19.0})
    rep.on_trial_complete("b", {"epoch": 2, "val/psnr": 23.0})
    (trial,) = told(spec, storage)
    assert trial.value == pytest.approx(score)
    assert trial.intermediate_values == pytest.approx({0: 20.5, 1: 23.5, 2: 21.0})


def test_seed_repeater_group_without_results_fails(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, GRID, study="seeds = [0, 1]", search='sampler = "grid"')
    storage = optuna.storages.InMemoryStorage()
    rep = SeedRepeater(optuna_search(spec, storage), spec.seeds)
    rep.suggest("a")
    rep.suggest("b")
    rep.on_trial_complete("a", None, error=True)
    rep.on_trial_complete("b", {"epoch": 3})
    rep.on_trial_complete("zzz", {"val/psnr": 1.0})  # unknown trial: ignored
    assert [t.state for t in told(spec, storage)] == [optuna.trial.TrialState.FAIL]


def test_seed_repeater_passes_on_none_and_finished() -> None:
    class Fixed(Searcher):
        def __init__(self, answers: list[Any]) -> None:
            super().__init__(metric="m", mode="min")
            self.answers = answers

        def suggest(self, trial_id: str) -> Any:
            return self.answers.pop(0)

    rep = SeedRepeater(Fixed([None, {"x": 1}, Searcher.FINISHED]), [0, 1])
    assert rep.suggest("a") is None
    assert rep.suggest("b") == {"x": 1, "seed": 0}
    assert rep.suggest("c") == {"x": 1, "seed": 1}
    assert rep.suggest("d") == Searcher.FINISHED


@pytest.mark.slow
def test_seed_repeater_state_round_trip(tmp_path: Path) -> None:
    # Tune saves wrappers with get_state and the innermost searcher with save (SearchGenerator.save_to_dir).
    spec = spec_of(tmp_path, GRID, study="seeds = [0, 1]", search='sampler = "grid"')
    rep = SeedRepeater(optuna_search(spec), spec.seeds)
    first = rep.suggest("a")
    rep.on_trial_complete("a", {"val/psnr": 1.0})
    state = pickle.loads(pickle.dumps(rep.get_state()))
    ckpt = tmp_path / "searcher.pkl"
    rep.save(str(ckpt))

    again = SeedRepeater(optuna_search(spec), spec.seeds)
    again.set_state(state)
    again.restore(str(ckpt))
    second = again.suggest("b")  # the open group continues with the next seed
    assert second == {**first, SEED_KEY: 1}
    again.on_trial_complete("b", {"val/psnr": 3.0})
    ckpt.unlink()
    again.save(str(ckpt))  # what Tune saves is what export_searcher_study reads
    (tmp_path / "searcher-state-s.pkl").write_bytes(ckpt.read_bytes())
    assert export_searcher_study(tmp_path, tmp_path / "optuna.db", "t")
    assert [t.value for t in told(spec, f"sqlite:///{tmp_path / 'optuna.db'}")] == [2.0]


@pytest.mark.slow
def test_searcher_stack_survives_tunes_save_and_restore(tmp_path: Path) -> None:
    # What Tuner.restore does with the searcher: SearchGenerator saves each wrapper's get_state and
    # the innermost OptunaSearch, then restores them into a freshly built stack.
    from ray.tune.search import SearchGenerator

    spec = spec_of(tmp_path, GRID, study="seeds = [0, 1, 2]\nmax_concurrent = 4", search='sampler = "grid"')
    gen = SearchGenerator(make_searcher(spec))
    first = [gen.searcher.suggest(i) for i in ("a", "b")]
    gen.searcher.on_trial_complete("a", {"val/psnr": 3.0})
    gen.save_to_dir(str(tmp_path), session_str="s")

    again = SearchGenerator(make_searcher(spec))
    again.restore_from_dir(str(tmp_path))
    c = again.searcher.suggest("c")
    assert c == {**first[0], SEED_KEY: 2}  # the open group goes on with its last seed
    assert again.searcher.suggest("d")[SEED_KEY] == 0  # then a new Optuna suggestion
    again.searcher.on_trial_complete("b", {"val/psnr": 4.0})
    again.searcher.on_trial_complete("c", {"val/psnr": 5.0})
    again.save_to_dir(str(tmp_path), session_str="t")  # what a resumed study saves; export reads the newest
    assert export_searcher_study(tmp_path, tmp_path / "optuna.db", "t")
    assert told(spec, f"sqlite:///{tmp_path / 'optuna.db'}")[0].value == 4.0


# --- the searcher stack ----------------------------------------------------------------------------


def test_make_searcher_stack(tmp_path: Path) -> None:
    single = spec_of(tmp_path, GRID, study="max_concurrent = 3")
    one = make_searcher(single)
    assert isinstance(one, ConcurrencyLimiter) and one.max_concurrent == 3
    assert isinstance(one.searcher, SeedRepeater) and isinstance(one.searcher.searcher, OptunaSearch)
    assert isinstance(make_sampler(single), optuna.samplers.TPESampler)
    assert SEED_KEY not in one.suggest("x")  # one seed: the config as sampled, params.json stays clean

    spec = spec_of(tmp_path, GRID, study="seeds = [0, 1, 2]\nmax_concurrent = 2", search='sampler = "grid"')
    stack = make_searcher(spec)
    assert isinstance(stack, ConcurrencyLimiter) and isinstance(stack.searcher, SeedRepeater)
    assert isinstance(stack.searcher.searcher, OptunaSearch)
    assert (stack.metric, stack.mode) == ("val/psnr", "max")
    # the limiter counts single-seed trials
    assert stack.suggest("a")[SEED_KEY] == 0 and stack.suggest("b")[SEED_KEY] == 1
    assert stack.suggest("c") is None
    stack.on_trial_complete("a", {"val/psnr": 1.0})
    assert stack.suggest("c")[SEED_KEY] == 2
    pickle.dumps(stack)  # Tune pickles the searcher with the experiment state


@pytest.mark.slow
def test_sqlite_storage_keeps_the_study(tmp_path: Path) -> None:
    # max_concurrent: study.run sets it from the cluster when the file does not
    spec = spec_of(tmp_path, GRID, study="max_concurrent = 1", search='sampler = "random"')
    db = tmp_path / "results" / "optuna.db"
    searcher = make_searcher(spec, storage=sqlite_storage(db))
    config = searcher.suggest("a")
    searcher.on_trial_complete("a", {"val/psnr": 7.5})
    pickle.loads(pickle.dumps(searcher))
    study = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{db}")
    (trial,) = study.trials
    assert trial.value == 7.5 and trial.params == config


def test_make_scheduler(tmp_path: Path) -> None:
    assert make_scheduler(spec_of(tmp_path, GRID)) is None
    asha = make_scheduler(spec_of(tmp_path, GRID + "[train]\nepochs = 6\n",
                                  search='scheduler = "asha"\ngrace_period = 2\nreduction_factor = 2'))
    assert isinstance(asha, ASHAScheduler) and asha.metric == "val/psnr" and asha_max_t(asha) == 6
    searched_epochs = spec_of(tmp_path, GRID + "[space.epochs]\nchoices = [3, 9]\n", search='scheduler = "asha"')
    assert asha_max_t(make_scheduler(searched_epochs)) == 9


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_studies_make_searchers(path: Path) -> None:
    spec = load_spec(path)
    searcher = make_searcher(spec)
    config = searcher.suggest("a")
    assert config is not None
    spec.config_for(config)
