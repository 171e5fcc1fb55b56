"""StudySpec -> the searcher Ray Tune runs: an Optuna define-by-run space behind OptunaSearch.

`define_by_run` is the only place that calls `trial.suggest_*`. `make_searcher` wraps OptunaSearch
in a SeedRepeater and a ConcurrencyLimiter:

    ConcurrencyLimiter(max_concurrent)      counts Ray trials, i.e. single-seed runs
      SeedRepeater(seeds, objective)        one Optuna suggestion -> one trial per seed; tells Optuna
                                            the mean of the seeds' scores and the per-epoch means
        OptunaSearch(define_by_run(spec), metric, mode, sampler, storage, study_name,
                     points_to_evaluate=the grid (grid sampler) or the warm start)

Pass `spec.num_trials` as TuneConfig(num_samples=...) and metric/mode to no one else but the
scheduler (`make_scheduler`): OptunaSearch already has them.
"""
from __future__ import annotations

import copy
import logging
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from study._compat import searcher_study
from study.keys import SEED
from study.race import race_arms
from study.ranking import finite, setting_label, trial_objective
from study.params import Param
from study.spec import StudySpec

log = logging.getLogger(__name__)

SEED_KEY = SEED  # (study.keys)


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


def grid_queue(spec: StudySpec) -> list[dict[str, Any]]:
    """The grid sampler's configurations in the order they run: every distinct point of the spec's
    finite space (a conditional parameter multiplies only its own branch, where Optuna's
    GridSampler would take the full product and repeat configurations), in a seed-shuffled order,
    `num_samples` times over. Fixed values are left out: the define-by-run function returns them."""
    points = spec.grid_points()
    if points is None:
        raise ValueError(f"study {spec.name!r}: the space is not a finite grid")
    searched = {p.name for p in spec.space if p.kind != "fixed"}
    points = [{k: v for k, v in point.items() if k in searched} for point in points]
    random.Random(spec.seed).shuffle(points)
    return points * spec.num_samples


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The study's Optuna sampler, seeded with spec.seed: TPE with spec.tpe's options
    (multivariate, group, constant_liar, n_startup_trials), or random. The grid sampler is a queue
    of configurations (grid_queue, OptunaSearch's points_to_evaluate) that Optuna serves before its
    sampler: random, never reached."""
    if spec.sampler == "tpe":
        with warnings.catch_warnings():
            # `group` is marked experimental since Optuna 2.8; the study file chose it knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=spec.seed, **spec.tpe)
    return optuna.samplers.RandomSampler(seed=spec.seed)


def first_points(spec: StudySpec) -> list[dict[str, Any]] | None:
    """What Optuna runs before its sampler (OptunaSearch's points_to_evaluate, enqueued trials): the
    grid's queue, or the warm start ([search] start_from, points_to_evaluate); None if neither."""
    if spec.sampler == "grid":
        return grid_queue(spec)
    return [dict(p) for p in spec.warm_start] or None


def optuna_search(spec: StudySpec, storage: optuna.storages.BaseStorage | None = None) -> OptunaSearch:
    """OptunaSearch over the study's space, with its sampler and first points (first_points)."""
    return OptunaSearch(
        space=define_by_run(spec), metric=spec.metric, mode=spec.mode, sampler=make_sampler(spec),
        storage=storage, study_name=spec.name, points_to_evaluate=first_points(spec),
    )


def sqlite_storage(path: str | Path) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage in a sqlite file, for make_searcher (and later optuna.load_study)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{path}")


def export_searcher_study(exp_dir: str | Path, db: str | Path, study_name: str) -> bool:
    """Write the Optuna study held in a Tune experiment's newest searcher state into the sqlite file
    `db` as `study_name`, replacing any earlier export. For studies whose searcher keeps its Optuna
    study in memory (URI storage): the export is then exactly what the search knew. Returns False
    when the experiment has no searcher state."""
    study = searcher_study(exp_dir)
    if study is None:
        return False
    db = Path(db).resolve()
    tmp = db.with_name(f".{db.name}.export")
    tmp.unlink(missing_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}")
    try:
        out = optuna.create_study(storage=storage, study_name=study_name, directions=study.directions)
        for k, v in study.user_attrs.items():
            out.set_user_attr(k, v)
        out.add_trials(study.get_trials(deepcopy=False))
    finally:
        storage.remove_session()
        storage.engine.dispose()
    tmp.replace(db)
    return True


def make_searcher(spec: StudySpec, storage: optuna.storages.BaseStorage | None = None) -> Searcher:
    """OptunaSearch over the study's space behind a SeedRepeater (which tells it the study's
    objective) and a ConcurrencyLimiter of spec.max_concurrent (none when it is None).

    Run it with TuneConfig(search_alg=..., num_samples=spec.num_trials) and no metric/mode there.
    """
    repeated = SeedRepeater(optuna_search(spec, storage), spec.seeds, spec.objective,
                            key=SEED_KEY if len(spec.seeds) > 1 else None, race=spec.race_rule,
                            num_configs=spec.num_configs, top=spec.race_top,
                            searched=[p.name for p in spec.space if p.kind != "fixed"])
    if spec.max_concurrent is None:  # as many at once as the cluster's resources hold (study.run sets it)
        return repeated
    return ConcurrencyLimiter(repeated, max_concurrent=spec.max_concurrent)


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
    reports: dict[str, dict[int, Any]] = field(default_factory=dict)  # trial id -> epoch -> metric value
    ended: set[str] = field(default_factory=set)  # trial ids that completed or errored


class SeedRepeater(Searcher):
    """Runs each suggestion of `searcher` once per seed and tells it the group's score; with a race,
    gives more seeds only where a comparison is open (study.race).

    Trial k of a group gets `config[key] = seeds[k]` (no key: one seed, the config as suggested).
    The wrapped searcher sees one trial per group (the first one's id). Once the group's first seeds
    (all of them; a race's min) have ended it is told, as intermediate results, the mean over those
    seeds of the metric at each epoch (Optuna's intermediate values), then as the final result the
    mean over seeds of each seed's score, `study.ranking.trial_objective` ("best": its best epoch's
    value, "last": its last epoch's): the same score `study.tables.ranking` ranks by. A group in
    which no seed scored is told as an error. Without a race, Tune's num_samples must be a multiple
    of len(seeds) (StudySpec.num_trials is); a partial last group is never told.

    With a race (`race`, a study.race.RaceRule): the first `num_configs` suggestions run min seeds
    each; then, once every trial handed out has ended, `study.race.next_round` on the groups' scores
    names the configurations (all, or the `top` best after a search) that get one more seed; when it
    names none, the searcher tells Tune it is finished. Seeds beyond the first are not told to the
    wrapped searcher (Optuna has the configuration's score already).
    Unlike ray.tune.search.Repeater it sets the seed itself (not a `__trial_index__`), skips
    NaN/inf results, and reports a group with no finite result as an error.
    """

    def __init__(self, searcher: Searcher, seeds: Sequence[int], objective: str = "best",
                 key: str | None = SEED_KEY, race: Any = None, num_configs: int | None = None,
                 top: int | None = None, searched: Sequence[str] = ()) -> None:
        if not seeds:
            raise ValueError("SeedRepeater needs at least one seed")
        if key is None and len(seeds) > 1:
            raise ValueError("SeedRepeater needs a config key to give several seeds")
        if race is not None and (num_configs is None or race.max_seeds > len(seeds)):
            raise ValueError("a seed race needs num_configs and max_seeds seeds")
        self.searcher = searcher  # `searcher` is the attribute Tune follows to save/restore wrappers
        self.seeds = tuple(seeds)
        self.objective = objective
        self.key = key
        self.race = race
        self.num_configs = num_configs
        self.top = top
        self.searched = tuple(searched)
        self._groups: list[_SeedGroup] = []
        self._by_trial: dict[str, _SeedGroup] = {}
        self._queue: list[int] = []  # race: indices of the groups whose next seed is due
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def metric(self) -> str:
        return self.searcher.metric

    @property
    def mode(self) -> str:
        return self.searcher.mode

    @property
    def first(self) -> int:
        """Seeds each configuration runs before any race (all of them without one)."""
        return self.race.min_seeds if self.race is not None else len(self.seeds)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._queue:
            return self._give(self._groups[self._queue.pop(0)], trial_id)
        group = self._groups[-1] if self._groups else None
        if group is None or len(group.seeds) >= self.first:
            if self.race is not None and len(self._groups) >= (self.num_configs or 0):
                return self._next_round(trial_id)
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            group = _SeedGroup(trial_id, copy.deepcopy(config))
            self._groups.append(group)
        return self._give(group, trial_id)

    def _give(self, group: _SeedGroup, trial_id: str) -> dict[str, Any]:
        seed = self.seeds[len(group.seeds)]
        group.seeds[trial_id] = seed
        self._by_trial[trial_id] = group
        config = copy.deepcopy(group.config)
        return {**config, self.key: seed} if self.key else config

    def _next_round(self, trial_id: str) -> dict[str, Any] | str | None:
        """The race's next trial: None while the round runs, FINISHED once no configuration gets a seed."""
        from study.race import next_round

        if any(t not in g.ended for g in self._groups for t in g.seeds):
            return None  # a round is decided on every score of the one before it
        labels = {}
        for i, g in enumerate(self._groups):
            labels.setdefault(setting_label(g.config, self.searched), i)  # a repeated configuration: its first group
        grow = next_round(self.race_arms(), self.race, self.top)
        self._queue = [labels[s] for s in grow if len(self._groups[labels[s]].seeds) < len(self.seeds)]
        if not self._queue:
            return Searcher.FINISHED
        return self._give(self._groups[self._queue.pop(0)], trial_id)

    def race_arms(self) -> dict[str, dict[int, float | None]]:
        """setting -> seed -> score of every ended trial (study.race's arms)."""
        rows = []
        for g in self._groups:
            label = setting_label(g.config, self.searched)
            for t, seed in g.seeds.items():
                if t in g.ended:
                    rows.append((label, seed, self._score(g, t)))
        return race_arms(rows)

    def _score(self, group: _SeedGroup, trial_id: str) -> float | None:
        return trial_objective(group.reports.get(trial_id, {}).items(), self.objective, self.mode)[0]

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        group = self._by_trial.get(trial_id)
        if group is not None and trial_id not in group.ended:
            self._record(group, trial_id, result)

    def _record(self, group: _SeedGroup, trial_id: str, result: dict) -> None:
        epoch = result.get("epoch", result.get(TRAINING_ITERATION, 1) - 1)
        if epoch is not None and self.metric in result:
            group.reports.setdefault(trial_id, {})[int(epoch)] = result[self.metric]  # a re-report replaces

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        group = self._by_trial.get(trial_id)
        if group is None:
            log.warning("SeedRepeater: completion of unknown trial %s ignored", trial_id)
            return
        if trial_id in group.ended:
            return
        if result:
            self._record(group, trial_id, result)
        group.ended.add(trial_id)
        firsts = list(group.seeds)[:self.first]
        if trial_id in firsts and all(t in group.ended for t in firsts) and len(firsts) == self.first:
            self._tell(group, firsts)

    def _tell(self, group: _SeedGroup, trials: Sequence[str]) -> None:
        scores = [self._score(group, t) for t in trials]
        scored = [s for s in scores if s is not None]
        for epoch, value in _epoch_means(group.reports.get(t, {}) for t in trials):
            self.searcher.on_trial_result(group.primary, {self.metric: value, TRAINING_ITERATION: epoch})
        if not scored:
            self.searcher.on_trial_complete(group.primary, result=None, error=True)
            return
        if len(scored) < len(scores):
            log.warning("SeedRepeater: trial group %s: %d of %d seeds gave no %s score; telling the mean of the rest",
                        group.primary, len(scores) - len(scored), len(scores), self.metric)
        self.searcher.on_trial_complete(group.primary, result={self.metric: sum(scored) / len(scored)}, error=False)

    def group_of(self, trial_id: str) -> str | None:
        """The id of the trial the wrapped searcher knows for `trial_id`'s group (None if unknown)."""
        group = self._by_trial.get(trial_id)
        return group.primary if group else None

    def get_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "searcher"}

    def set_state(self, state: dict[str, Any]) -> None:
        # a state saved before races existed lacks their fields: no race
        self.__dict__.update({"race": None, "num_configs": None, "top": None, "searched": (), "_queue": [], **state})

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def _epoch_means(reports: Any) -> list[tuple[int, float]]:
    """(epoch, mean over seeds of the finite values reported for it), epochs in order."""
    by_epoch: dict[int, list[float]] = {}
    for values in reports:
        for epoch, v in values.items():
            if finite(v):
                by_epoch.setdefault(epoch, []).append(float(v))
    return [(e, sum(vs) / len(vs)) for e, vs in sorted(by_epoch.items())]


__all__ = ["DefineByRun", "SEED_KEY", "SeedRepeater", "define_by_run", "export_searcher_study", "first_points", "grid_queue",
           "make_sampler", "make_scheduler", "make_searcher", "optuna_search", "sqlite_storage"]
