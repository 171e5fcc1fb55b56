"""[search] TPE options, the warm start (start_from, points_to_evaluate) and [study] time_budget_s:
checked in the spec, read back from the sampler and OptunaSearch, and (marked ray) a study that a
budget ends and a rerun resumes, whose first trials are the warm-start configurations."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from study._compat import tpe_options
from study.space import first_points, grid_queue, make_sampler, make_searcher
from study.spec import SMOKE_TRIALS, StudyError, load_spec, smoke_spec
from study_helpers import SMOKE, result_rows, run_cli, study_cmd, trial_dirs, write_study

CONDITIONAL = {"kl_anneal_type": {"choices": ["Monotonic", "Cyclical", "None"]},
               "kl_anneal_cycle": {"choices": [2, 5], "when": {"kl_anneal_type": "Cyclical"}}}


def _tpe(sampler: object) -> tuple[object, ...]:
    o = tpe_options(sampler)  # Optuna has no public getters for these
    return (o["multivariate"], o["group"], o["constant_liar"], o["n_startup_trials"])


def test_tpe_defaults_suit_a_conditional_space_with_trials_in_flight(tmp_path: Path) -> None:
    flat = load_spec(SMOKE)
    assert _tpe(make_sampler(flat)) == (True, False, True, 10)
    cond = load_spec(write_study(tmp_path / "c.toml", space=CONDITIONAL))
    assert _tpe(make_sampler(cond)) == (True, True, True, 10)


def test_tpe_options_reach_the_sampler(tmp_path: Path) -> None:
    spec = load_spec(write_study(tmp_path / "s.toml", space=CONDITIONAL, search={
        "multivariate": True, "group": False, "constant_liar": False, "n_startup_trials": 3}))
    assert _tpe(make_sampler(spec)) == (True, False, False, 3)


@pytest.mark.parametrize("search, key", [
    ({"sampler": "random", "multivariate": True}, "search.multivariate"),
    ({"multivariate": False, "group": True}, "search.group"),
    ({"n_startup_trials": -1}, "search.n_startup_trials"),
    ({"constant_liar": "yes"}, "search.constant_liar"),
    ({"points_to_evaluate": [{"nope": 1}]}, "search.points_to_evaluate[0]"),
    ({"points_to_evaluate": [{"tfr": 2.0}]}, "search.points_to_evaluate[0]"),
    ({"start_from": ["no/such/best.toml"]}, "search.start_from"),
    ({"points_to_evaluate": [{"tfr": 0.1}] * 4}, "search.points_to_evaluate"),  # more than num_samples
])
def test_bad_search_options_are_refused(tmp_path: Path, search: dict, key: str) -> None:
    with pytest.raises(StudyError) as e:
        load_spec(write_study(tmp_path / "bad.toml", search=search))
    assert e.value.key == key


def test_bad_time_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StudyError) as e:
        load_spec(write_study(tmp_path / "bad.toml", study={"time_budget_s": 0}))
    assert e.value.key == "study.time_budget_s"


def test_warm_start_from_best_toml_then_explicit_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    best = tmp_path / "results" / "kl" / "best.toml"
    best.parent.mkdir(parents=True)
    # a best.toml of another study: its values of this study's parameters are taken, the rest ignored
    best.write_text('# Best configuration\n\n[train]\ntfr = 0.75\nkl_anneal_type = "Cyclical"\nkl_anneal_cycle = 5\n'
                    'epochs = 9\n\n[model]\nF_dim = 32\n')
    monkeypatch.chdir(tmp_path)  # a relative start_from is from the current directory, where results/ is
    spec = load_spec(write_study(tmp_path / "warm.toml", space={**CONDITIONAL, "tfr": {"low": 0.0, "high": 1.0}},
                                 search={"start_from": ["results/kl/best.toml"],
                                         "points_to_evaluate": [{"kl_anneal_type": "None", "kl_anneal_cycle": 2}]}))
    assert first_points(spec) == [{"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 5, "tfr": 0.75},
                                  {"kl_anneal_type": "None"}]  # an inactive conditional value is dropped
    searcher = make_searcher(spec)
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    assert configs[0] == {"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 5, "tfr": 0.75}
    assert configs[1]["kl_anneal_type"] == "None" and "kl_anneal_cycle" not in configs[1]


def test_smoke_test_keeps_as_many_warm_points_as_it_runs(tmp_path: Path) -> None:
    points = [{"tfr": 0.1}, {"tfr": 0.2}, {"tfr": 0.3}]
    spec = load_spec(write_study(tmp_path / "w.toml", search={"points_to_evaluate": points}))
    assert first_points(smoke_spec(spec)) == points[:SMOKE_TRIALS]


def test_grid_keeps_its_queue_and_refuses_a_warm_start(tmp_path: Path) -> None:
    grid = load_spec(write_study(tmp_path / "g.toml", space=CONDITIONAL, search={"sampler": "grid"},
                                 study={"num_samples": 1}))
    assert first_points(grid) == grid_queue(grid) and len(grid_queue(grid)) == 4
    with pytest.raises(StudyError, match="grid"):
        load_spec(write_study(tmp_path / "g2.toml", space=CONDITIONAL, study={"num_samples": 1},
                              search={"sampler": "grid", "points_to_evaluate": [{"kl_anneal_type": "None"}]}))


@pytest.mark.ray
@pytest.mark.slow
def test_time_budget_ends_the_study_and_a_rerun_resumes_it(tmp_path: Path, cache_dir: Path) -> None:
    # 2 trials one after the other, ~24 s of work here: more than the 15 s budget, and a rerun's
    # budget (with its new trial process) holds the rest, so it ends in 2 runs on this machine
    study = write_study(tmp_path / "budget.toml", study={"name": "budget", "num_samples": 2, "max_concurrent": 1,
                                                          "time_budget_s": 15},
                        train={"epochs": 4}, search={"sampler": "random", "points_to_evaluate": [{"tfr": 0.25}]})
    exp = tmp_path / "results" / "budget"
    r = run_cli(study_cmd(study), tmp_path, cache_dir)
    assert r.returncode == 1, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"  # unfinished: rerun to resume
    assert "time budget of 15 s reached" in r.stdout and "run the same command again" in r.stdout
    # The budget ended it before every trial ran to its end (how many had started depends on the machine's speed).
    ended = [d for d in trial_dirs(exp) if (rows := result_rows(d)) and rows[-1]["epoch"] == 3]
    assert not (exp / "finished.json").exists() and len(ended) < 2
    # Each rerun has the whole budget again and goes on from the trials' checkpoints: it ends when the
    # work is done, however slow the machine. Judged by work, not seconds: a rerun must add epochs.
    stuck = 0
    while r.returncode != 0:
        before = sum(len(result_rows(d)) for d in trial_dirs(exp))
        r = run_cli(study_cmd(study), tmp_path, cache_dir)
        assert "resuming the unfinished study" in r.stdout, r.stdout[-3000:]
        stuck = 0 if sum(len(result_rows(d)) for d in trial_dirs(exp)) > before else stuck + 1
        assert stuck < 3, f"three reruns in a row added no epoch:\n{r.stdout[-3000:]}"
    assert r.returncode == 0 and (exp / "finished.json").exists(), r.stdout[-3000:]
    trials = sorted(trial_dirs(exp), key=lambda d: result_rows(d)[0]["timestamp"])
    assert len(trials) == 2
    for trial in trials:
        assert [row["epoch"] for row in result_rows(trial)][-1] == 3, trial.name  # every trial ran to its end
    assert json.loads((trials[0] / "params.json").read_text())["tfr"] == 0.25  # the warm start came first
