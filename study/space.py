"""StudySpec -> the searcher Ray Tune runs: an Optuna define-by-run space behind OptunaSearch.

`define_by_run` is the only place that calls `trial.suggest_*`. `make_searcher` wraps OptunaSearch
in a SeedRepeater (when the study lists several seeds) and a ConcurrencyLimiter:

    ConcurrencyLimiter(max_concurrent)      counts Ray trials, i.e. single-seed runs
      SeedRepeater(seeds)                   one Optuna suggestion -> one trial per seed; tells Optuna the mean
        OptunaSearch(define_by_run(spec), metric, mode, sampler, storage, study_name)

Pass `spec.num_trials` as TuneConfig(num_samples=...) and metric/mode to no one else but the
scheduler (`make_scheduler`): OptunaSearch already has them.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from study.spec import Param, StudySpec

log = logging.getLogger(__name__)

SEED_KEY = "seed"  # the config key SeedRepeater sets; StudySpec.config_for maps it to train.seed


class DefineByRun:
    """Optuna define-by-run function of a study's [space] (a class, so the searcher pickles).

    Calling it on a trial suggests each active parameter in dependency order and returns the
    active fixed values (constants), which OptunaSearch merges into the trial config.
    """

    def __init__(self, space: Sequence[Param]) -> None:
        self.space = tuple(space)

    def __call__(self, trial: optuna.trial.Trial) -> dict[str, Any] | None:
        values: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for p in self.space:
            if not p.active(values):
                continue
            if p.kind == "fixed":
                v = constants[p.name] = copy.deepcopy(p.value)
            elif p.kind == "categorical":
                v = trial.suggest_categorical(p.name, list(p.choices))
            elif p.kind == "int":
                v = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                v = trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step, log=p.log)
            values[p.name] = v
        return constants or None


def define_by_run(spec: StudySpec) -> Callable[[optuna.trial.Trial], dict[str, Any] | None]:
    """The study's Optuna define-by-run function (see DefineByRun)."""
    return DefineByRun(spec.space)


class SpaceGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler over a study's distinct configurations, repeatable.

    Two changes to GridSampler: the grid is the spec's distinct points (a conditional parameter
    multiplies only its own branch, where GridSampler would take the full product and repeat
    configurations), and trial n gets grid point n mod size, so `num_samples` repeats of the grid
    cover every point exactly that many times, in a seed-shuffled order, whatever the concurrency.
    """

    def __init__(self, spec: StudySpec) -> None:
        points = spec.grid_points()
        if points is None:
            raise ValueError(f"study {spec.name!r}: the space is not a finite grid")
        searched = [p for p in spec.space if p.kind != "fixed"]  # constants are returned, never suggested
        super().__init__({p.name: list(p.grid_values() or ()) for p in searched}, seed=spec.seed)
        grids = [tuple(pt.get(name) for name in self._param_names) for pt in points]
        self._rng.rng.shuffle(grids)
        self._all_grids = grids
        self._n_min_trials = len(grids)

    @property
    def size(self) -> int:
        """Distinct configurations in one pass of the grid."""
        return self._n_min_trials

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
            return
        study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
        study._storage.set_trial_system_attr(trial._trial_id, "grid_id", trial.number % self._n_min_trials)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any, values: Any) -> None:
        # GridSampler calls study.stop() here, which raises outside study.optimize() (Tune uses
        # ask/tell); Tune's num_samples is what ends a study.
        return None


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The study's Optuna sampler, seeded with spec.seed: TPE, random, or the grid of its finite space."""
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return SpaceGridSampler(spec)


def sqlite_storage(path: str | Path) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage in a sqlite file, for make_searcher (and later optuna.load_study)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{path}")


def export_searcher_study(exp_dir: str | Path, db: str | Path, study_name: str) -> bool:
    """Write the Optuna study held in a Tune experiment's newest searcher state
    (`searcher-state-*.pkl`, the OptunaSearch Tune saved with the experiment) into the sqlite file
    `db` as `study_name`, replacing any earlier export. For studies whose searcher keeps its
    Optuna study in memory (URI storage): the export is then exactly what the search knew.
    Returns False when the experiment has no searcher state."""
    states = sorted(Path(exp_dir).glob("searcher-state-*.pkl"))
    if not states:
        return False
    searcher = OptunaSearch()
    searcher.restore(str(states[-1]))
    db = Path(db).resolve()
    tmp = db.with_name(f".{db.name}.export")
    tmp.unlink(missing_ok=True)
    optuna.copy_study(from_study_name=searcher._ot_study.study_name, from_storage=searcher._ot_study._storage,
                      to_storage=f"sqlite:///{tmp}", to_study_name=study_name)
    tmp.replace(db)
    return True


def make_searcher(spec: StudySpec, storage: optuna.storages.BaseStorage | None = None) -> Searcher:
    """OptunaSearch over the study's space, repeated per seed if several, behind a ConcurrencyLimiter.

    Run it with TuneConfig(search_alg=..., num_samples=spec.num_trials) and no metric/mode there.
    """
    searcher: Searcher = OptunaSearch(
        space=define_by_run(spec), metric=spec.metric, mode=spec.mode, sampler=make_sampler(spec),
        storage=storage, study_name=spec.name,
    )
    if len(spec.seeds) > 1:
        searcher = SeedRepeater(searcher, spec.seeds)
    return ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)


def make_scheduler(spec: StudySpec) -> TrialScheduler | None:
    """ASHA (one rung check per reported epoch) when the study asks for it, else None (FIFO)."""
    if spec.scheduler != "asha":
        return None
    return ASHAScheduler(time_attr="training_iteration", metric=spec.metric, mode=spec.mode, max_t=spec.max_epochs,
                         grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)


@dataclass
class _SeedGroup:
    primary: str  # the trial id the wrapped searcher knows
    config: dict[str, Any]
    seeds: dict[str, int] = field(default_factory=dict)  # trial id -> its seed
    scores: dict[str, float | None] = field(default_factory=dict)  # trial id -> final metric (None: none)


class SeedRepeater(Searcher):
    """Runs each suggestion of `searcher` once per seed and tells it the mean over seeds.

    Trial k of a group gets `config[key] = seeds[k]`. The wrapped searcher sees one trial per
    group (the first one's id) and, once every seed has finished, its mean final metric over
    the seeds that produced a finite one (a failure if none did). Intermediate results are not
    forwarded: the groups' seeds would report interleaved steps for one Optuna trial. Tune's
    num_samples must be a multiple of len(seeds) (StudySpec.num_trials is); a partial last
    group is never told.
    Unlike ray.tune.search.Repeater it sets the seed itself (not a `__trial_index__`), skips
    NaN/inf results, and reports a group with no finite result as an error.
    """

    def __init__(self, searcher: Searcher, seeds: Sequence[int], key: str = SEED_KEY) -> None:
        if not seeds:
            raise ValueError("SeedRepeater needs at least one seed")
        self.searcher = searcher  # `searcher` is the attribute Tune follows to save/restore wrappers
        self.seeds = tuple(seeds)
        self.key = key
        self._groups: list[_SeedGroup] = []
        self._by_trial: dict[str, _SeedGroup] = {}
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def metric(self) -> str:
        return self.searcher.metric

    @property
    def mode(self) -> str:
        return self.searcher.mode

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        group = self._groups[-1] if self._groups else None
        if group is None or len(group.seeds) == len(self.seeds):
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            group = _SeedGroup(trial_id, copy.deepcopy(config))
            self._groups.append(group)
        seed = self.seeds[len(group.seeds)]
        group.seeds[trial_id] = seed
        self._by_trial[trial_id] = group
        return {**copy.deepcopy(group.config), self.key: seed}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        group = self._by_trial.get(trial_id)
        if group is None:
            log.warning("SeedRepeater: completion of unknown trial %s ignored", trial_id)
            return
        if trial_id in group.scores:
            return
        score = result.get(self.metric) if result else None
        ok = isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
        group.scores[trial_id] = float(score) if ok else None
        if len(group.scores) < len(self.seeds):
            return
        finite = [s for s in group.scores.values() if s is not None]
        if not finite:
            self.searcher.on_trial_complete(group.primary, result=None, error=True)
            return
        if len(finite) < len(self.seeds):
            log.warning("SeedRepeater: trial group %s: %d of %d seeds gave no finite %s; telling the mean of the rest",
                        group.primary, len(self.seeds) - len(finite), len(self.seeds), self.metric)
        self.searcher.on_trial_complete(group.primary, result={self.metric: sum(finite) / len(finite)}, error=False)

    def group_of(self, trial_id: str) -> str | None:
        """The id of the trial the wrapped searcher knows for `trial_id`'s group (None if unknown)."""
        group = self._by_trial.get(trial_id)
        return group.primary if group else None

    def get_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "searcher"}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


__all__ = ["DefineByRun", "SEED_KEY", "SeedRepeater", "SpaceGridSampler", "define_by_run", "make_sampler",
           "make_scheduler", "make_searcher", "sqlite_storage"]
