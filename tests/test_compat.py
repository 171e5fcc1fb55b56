"""study._compat: the only reads past Ray Tune's public API. These fail loudly when Ray or Optuna moves
what they read (a version outside pyproject's pins, say), instead of a report quietly losing statuses."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from study import _compat
from study.space import make_searcher, optuna_search, sqlite_storage
from study.spec import load_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_optuna_search_keeps_its_study_where_compat_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text('[space.tfr]\nchoices = [0.0, 1.0]\n[study]\nnum_samples = 1\n', encoding="utf-8")
    search = optuna_search(load_spec(path))
    assert isinstance(search._ot_study, optuna.Study), "OptunaSearch no longer keeps its study in _ot_study"
    search.suggest("a")
    search.save(str(tmp_path / "searcher-state-x.pkl"))
    study = _compat.searcher_study(tmp_path)
    assert isinstance(study, optuna.Study) and len(study.trials) == 1


def test_nothing_to_read(tmp_path: Path) -> None:
    from ray.tune import Tuner

    assert _compat.trial_states(tmp_path) == {} and _compat.searcher_study(tmp_path) is None
    assert _compat.restorable(tmp_path) is False and Tuner.can_restore(str(tmp_path)) is False
    (tmp_path / "experiment_state-2026.json").write_text("{not json")
    assert _compat.trial_states(tmp_path) == {}


@pytest.mark.ray
def test_compat_reads_a_real_tune_experiment(tmp_path: Path) -> None:
    """Tune's own files, as Ray 2.60 writes them: every trial's id and status, and the searcher's study."""
    import ray
    from ray import tune

    path = tmp_path / "tiny.toml"
    path.write_text('[study]\nnum_samples = 2\n[space.tfr]\nchoices = [0.0, 1.0]\n', encoding="utf-8")
    spec = load_spec(path)

    def trainable(config: dict[str, Any]) -> None:
        tune.report({"val/psnr": 10.0 + config["tfr"], "epoch": 0})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=make_searcher(spec, sqlite_storage(tmp_path / "optuna.db")),
                                        num_samples=spec.num_trials),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "results"), name=spec.name, verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    exp = tmp_path / "results" / spec.name
    assert _compat.restorable(exp) and tune.Tuner.can_restore(str(exp))  # the same answer, without Ray
    from pyarrow import fs as pafs

    assert _compat.restorable(str(exp), pafs.LocalFileSystem())
    states = _compat.trial_states(exp)
    assert sorted(states.values()) == sorted((r.metrics["trial_id"], "TERMINATED") for r in results), states
    assert {Path(r.path).name for r in results} == set(states)
    study = _compat.searcher_study(exp)
    assert isinstance(study, optuna.Study) and len(study.trials) == spec.num_trials
    assert {t.value for t in study.trials} <= {10.0, 11.0}
