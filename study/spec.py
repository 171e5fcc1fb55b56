"""A study is a TOML file: parse and validate it into a frozen StudySpec.

Tables: `[study]` (StudyTable: name, metric, seeds, ...), `[search]` (SearchTable: sampler, scheduler,
retries, warm start; plus TPEOptions), the fixed `[data]`, `[model]` and `[train]` values of the cvae
config, and `[space]` (study.params), one sub-table per searched parameter. Each table is a frozen
dataclass built by cvae.config's section builder, so a study file and a run config share one set of
types, ranges and error texts; the rules that span tables are the `check_*` functions below. A file
may start with `base = "other.toml"` and list only what it changes (cvae.config.read_config_file).

Everything is checked before Ray starts; each problem raises a StudyError whose text is one line,
`<file>: <dotted key>: <reason>`. The file is only ever parsed as TOML: it cannot run code. A
`[data] root` is resolved against the file that writes it here; whether it holds a dataset in the
lab's layout is cvae.data's check, which study.run makes (loading it) before Ray starts.
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Collection, Literal, Mapping, Sequence, get_args

from cvae.config import (SECTIONS, Config, ConfigError, ConfigFile, TrainConfig, build_table, check_keys, check_tables,
                         did_you_mean, read_config_file, smoke_config)
from cvae.metrics import METRIC_NAMES
from study.compare import ALPHA, MARGIN_DB
from study.keys import CPU_S
from study.params import FIELD_SECTION, MAX_GRID, Param, active_values, check_combinations, grid_points, parse_space, plain_type

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

Mode = Literal["max", "min"]
# A trial's score: the metric at its best epoch, or at its last (study.ranking.trial_objective).
Objective = Literal["best", "last"]
Sampler = Literal["tpe", "grid", "random"]
Scheduler = Literal["none", "asha"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
CPU_METRIC = CPU_S  # added by study.trainable (study.keys)
METRICS: tuple[str, ...] = (*METRIC_NAMES, CPU_METRIC)  # every per-epoch metric of a trial, in report order
SMOKE_TRIALS = 2  # trials of a smoke study (smoke_spec)
MAX_RACE_SEEDS = 100  # a race beyond this many seeds per configuration is certainly a mistake
# A smoke study runs several trials at once: a tiny model too, unlike cvae's single-run smoke config.
SMOKE_MODEL: dict[str, int] = {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16}
# Paths relative to the file that writes them (trials run with their own dir as working dir).
PATH_KEYS: tuple[str, ...] = ("data.root", "data.cache_dir")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")
# field metadata: the [search] option applies only with this sampler or scheduler (check_applies)
_ASHA = {"only": ("scheduler", "asha")}
_TPE = {"only": ("sampler", "tpe")}


class StudyError(ConfigError):
    """A bad study file: `str(e)` is one line, `<file>: <dotted key>: <reason>`.

    A ConfigError (hence a ValueError), so callers that catch config errors catch these too.
    """

    def __init__(self, path: str | Path, key: str, reason: str) -> None:
        super().__init__(key, " ".join(str(reason).split()), source=path)
        self.path = str(path)


def _check(ok: bool, key: str, reason: str) -> None:
    if not ok:
        raise ConfigError(key, reason)


# --- the tables ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SeedRace:
    """[study] seeds = { min = m, max = M }: a seed race (study.race): every raced configuration runs
    seeds 0..m-1, then the leader and the configurations still open against it one more seed a round."""

    min: int  # seeds every raced configuration runs first (0..min-1)
    max: int  # the most seeds a configuration gets (seeds 0..max-1)

    def __post_init__(self) -> None:
        _check(self.min >= 1, "min", f"must be >= 1, got {self.min}")
        _check(self.max >= max(self.min, 2), "max", f"must be >= min and >= 2, got {self.max} (min {self.min})")
        _check(self.max <= MAX_RACE_SEEDS, "max", f"must be <= {MAX_RACE_SEEDS}, got {self.max}")


@dataclass(frozen=True, kw_only=True)
class StudyTable:
    """[study]: what the study is called and optimises, how many trials it runs and what each may use."""

    name: str  # results/<name>/ and the Optuna study name; default: the study file's name
    num_samples: int  # configurations sampled (grid sampler: repeats of the whole grid; default 1 there)
    description: str | None = None  # free text shown in the report
    metric: str = "val/psnr"  # the reported metric to optimise (one of METRICS)
    mode: Mode = "max"  # "max" | "min": which way the metric is better
    objective: Objective = "best"  # a trial's score: the metric at its best epoch, or at its last
    seed: int = 0  # seed of the Optuna sampler and of the grid's order
    # train.seed values, every configuration runs once per seed; { min, max }: a seed race (SeedRace); None: [train] seed
    seeds: tuple[int, ...] | SeedRace | None = None
    alpha: float = ALPHA  # level of the verdicts' tests and of the seed race's (a clear difference: p < alpha)
    margin_db: float = MARGIN_DB  # "about equal": within +-this, in the metric's unit (dB for val/psnr), by TOST
    paired: bool = False  # the race compares two configurations on the seeds both ran (paired tests)
    max_concurrent: int | None = None  # trials running at once; None: as many as the cluster's resources fit
    cpus_per_trial: float = 1.0  # Ray CPUs reserved per trial
    gpus_per_trial: float = 0.0  # Ray GPUs reserved per trial: 0, a share of one GPU (< 1), or whole GPUs
    time_budget_s: float | None = None  # wall seconds after which the study stops cleanly (a rerun goes on); None: no limit

    def __post_init__(self) -> None:
        _check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        listed = self.seeds if isinstance(self.seeds, tuple) else None
        _check(listed is None or len(listed) > 0, "seeds", "must be a non-empty list of integers, got []")
        _check(listed is None or len(set(listed)) == len(listed), "seeds", f"must not repeat a seed, got {list(listed or ())}")
        _check(0 < self.alpha < 0.5, "alpha", f"must be between 0 and 0.5, got {self.alpha}")
        _check(math.isfinite(self.margin_db) and self.margin_db > 0, "margin_db", f"must be > 0, got {self.margin_db}")
        _check(self.max_concurrent is None or self.max_concurrent >= 1, "max_concurrent",
               f"must be >= 1, got {self.max_concurrent}")
        for key in ("cpus_per_trial", "gpus_per_trial", "time_budget_s"):
            v = getattr(self, key)
            _check(v is None or math.isfinite(v), key, f"must be a finite number, got {v}")
        _check(self.cpus_per_trial > 0, "cpus_per_trial", f"must be > 0, got {self.cpus_per_trial:g}")
        _check(self.gpus_per_trial >= 0, "gpus_per_trial", f"must be >= 0, got {self.gpus_per_trial:g}")
        # Ray's rule: a share of one GPU, or whole GPUs
        _check(self.gpus_per_trial <= 1 or self.gpus_per_trial.is_integer(), "gpus_per_trial",
               f"must be a fraction of one GPU (<= 1) or a whole number of GPUs, got {self.gpus_per_trial:g}")
        _check(self.time_budget_s is None or self.time_budget_s > 0, "time_budget_s",
               f"must be > 0 seconds, got {self.time_budget_s}")


@dataclass(frozen=True, kw_only=True)
class SearchTable:
    """[search]: how configurations are chosen, stopped early and retried (TPE's options: TPEOptions)."""

    sampler: Sampler = "tpe"  # "tpe" (Optuna's TPE) | "grid" (every configuration of a finite space) | "random"
    scheduler: Scheduler = "none"  # "none" (every trial runs all its epochs) | "asha" (stops clearly worse trials)
    grace_period: int = field(default=1, metadata=_ASHA)  # ASHA: epochs before a trial may be stopped
    reduction_factor: float = field(default=3.0, metadata=_ASHA)  # ASHA: keep 1/reduction_factor of the trials a rung
    max_failures: int = 2  # retries of a crashed trial from its last checkpoint
    # tpe/random: after the search, the k best configurations race for the win ([study] seeds = { min, max }); 0: none
    confirm_top: int = 0
    # best.toml files whose values of the searched parameters run first (relative: from the current directory)
    start_from: tuple[str, ...] = ()
    points_to_evaluate: tuple[dict[str, Any], ...] = ()  # then these configurations ({ name = value, ... })

    def __post_init__(self) -> None:
        _check(self.grace_period >= 1, "grace_period", f"must be >= 1, got {self.grace_period}")
        _check(math.isfinite(self.reduction_factor) and self.reduction_factor > 1, "reduction_factor",
               f"must be > 1, got {self.reduction_factor}")
        _check(self.max_failures >= 0, "max_failures", f"must be >= 0, got {self.max_failures}")
        _check(self.confirm_top >= 0, "confirm_top", f"must be >= 0, got {self.confirm_top}")


@dataclass(frozen=True, kw_only=True)
class TPEOptions:
    """TPESampler's options, written in [search] (sampler = "tpe" only). The defaults are what Optuna's
    TPESampler docs give for conditional spaces and trials in flight, and Optuna's 10 startup trials."""

    multivariate: bool = field(default=True, metadata=_TPE)  # model the parameters jointly, not one at a time
    # sample the groups of parameters that are active together separately; None: when multivariate and
    # [space] is conditional
    group: bool | None = field(default=None, metadata=_TPE)
    constant_liar: bool = field(default=True, metadata=_TPE)  # count trials in flight as bad, so parallel ones spread
    n_startup_trials: int = field(default=10, metadata=_TPE)  # random trials before TPE models the results

    def __post_init__(self) -> None:
        _check(not (self.group and not self.multivariate), "group", "needs multivariate = true (Optuna's TPESampler rule)")
        _check(self.n_startup_trials >= 0, "n_startup_trials", f"must be >= 0, got {self.n_startup_trials}")


def _names(*klasses: type) -> tuple[str, ...]:
    return tuple(f.name for klass in klasses for f in fields(klass))


def _values(obj: Any, klass: type) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in _names(klass)}


# table -> its keys, in the order an error lists them
TABLES: dict[str, tuple[str, ...]] = {"study": _names(StudyTable), "search": _names(SearchTable, TPEOptions),
                                      **{s: _names(SECTIONS[s]) for s in ("data", "model", "train")}, "space": ()}


# --- the spec ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StudySpec(StudyTable, SearchTable, TPEOptions):
    """A validated study file: every field of its [study], [search] and TPE tables (spec.metric,
    spec.sampler, ...; `seeds` and TPE's `group` decided), its fixed cvae tables and its [space],
    in dependency order (a param comes after those its `when` names)."""

    path: Path  # the study file, absolute
    # train.seed values, in the order configurations run them: [study] seeds, 0..max-1 for a race, else [train] seed
    seeds: tuple[int, ...]
    race: SeedRace | None = None  # [study] seeds = { min, max }: the seed race's bounds
    fixed: dict[str, dict[str, Any]]  # section -> key -> value, with data.root/cache_dir made absolute
    space: tuple[Param, ...]
    raw_text: str  # the study as saved beside its results (resolved_text)
    # the first configurations to run ([search] start_from's best.toml files, then points_to_evaluate)
    warm_start: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for table in (StudyTable, SearchTable, TPEOptions):  # the tables' rules hold for a replace() too
            table.__post_init__(self)

    @property
    def tpe(self) -> dict[str, Any]:
        """TPESampler's keyword options; {} for the other samplers."""
        return _values(self, TPEOptions) if self.sampler == "tpe" else {}

    def base_config(self) -> Config:
        """The config of the fixed values alone (first seed; [space] parameters at their fallback)."""
        return self.config_for({})

    def config_for(self, sampled: Mapping[str, Any]) -> Config:
        """Fixed values + one sampled configuration (+ `seed`, the train seed, if present).

        Raises ConfigError for a name that is not a [space] parameter or a combination that does not build.
        """
        tables = {section: dict(table) for section, table in self.fixed.items()}
        params = {p.name: p for p in self.space}
        seed = self.seeds[0]
        for key, value in sampled.items():
            if key == "seed":
                seed = value
                continue
            p = params.get(key)
            if p is None:
                raise ConfigError(key, f"not a [space] parameter of study {self.name!r}{did_you_mean(key, params)}")
            tables.setdefault(p.section, {})[key] = value
        tables.setdefault("train", {})["seed"] = seed
        return Config.from_dict(tables)

    def grid_points(self) -> list[dict[str, Any]] | None:
        """Every distinct configuration of a finite space, or None (study.params.grid_points)."""
        return grid_points(self.space)

    def grid_size(self) -> int | None:
        """The number of distinct configurations of a finite space, else None (see grid_points)."""
        points = self.grid_points()
        return None if points is None else len(points)

    @property
    def max_epochs(self) -> int:
        """The most epochs any trial trains (ASHA's max_t): the largest searched value, else the fixed one."""
        for p in self.space:
            if p.name == "epochs":
                return int(max(p.grid_values() or (p.high,)))
        return self.base_config().train.epochs

    @property
    def num_configs(self) -> int:
        """Configurations the searcher hands out: num_samples, times the grid size for the grid sampler."""
        if self.sampler == "grid":
            return self.num_samples * (self.grid_size() or 0)
        return self.num_samples

    @property
    def num_trials(self) -> int:
        """Ray Tune trials = configurations x seeds, the most a race may use: pass this as
        TuneConfig(num_samples=...) (a race ends sooner by telling Tune it is finished)."""
        if self.race is None:
            return self.num_configs * len(self.seeds)
        if self.sampler == "grid":
            return self.num_configs * self.race.max
        return self.num_configs * self.race.min + self.confirm_top * (self.race.max - self.race.min)

    @property
    def min_trials(self) -> int:
        """The fewest trials the study runs: num_trials, or a race's first round."""
        if self.race is None:
            return self.num_trials
        return self.num_configs * self.race.min

    @property
    def first_seeds(self) -> int:
        """Seeds every configuration runs before any race: all of them, or a race's min."""
        return self.race.min if self.race else len(self.seeds)

    @property
    def race_rule(self) -> Any:
        """The seed race's rule (study.race.RaceRule), None when the seeds are a fixed list."""
        from study.race import RaceRule

        return RaceRule.of(self.race, self.mode, self.alpha, self.margin_db, self.paired)

    @property
    def race_top(self) -> int | None:
        """How many configurations race: all (None, a grid), or confirm_top after a search."""
        return self.confirm_top or None

    def param(self, name: str) -> Param:
        """The [space] parameter called `name` (KeyError if there is none)."""
        for p in self.space:
            if p.name == name:
                return p
        raise KeyError(name)


def seeds_of(study: StudyTable, train: Mapping[str, Any]) -> tuple[int, ...]:
    """The train seeds of a study in the order configurations run them: [study] seeds, a race's
    0..max-1 (seed k is the same data order and initialisation in every configuration), else the
    [train] seed alone."""
    if isinstance(study.seeds, SeedRace):
        return tuple(range(study.seeds.max))
    return study.seeds or (int(train.get("seed", TrainConfig.seed)),)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study TOML file; any problem raises StudyError naming the file and key."""
    return _spec(Path(path), None)


def parse_spec(text: str, path: str | Path) -> StudySpec:
    """Validate a study's TOML text as if it were the file `path` (relative paths resolve against it)."""
    return _spec(Path(path), text)


def smoke_spec(spec: StudySpec) -> StudySpec:
    """A seconds-long variant of spec, run as `<name>-smoke`: every trial gets cvae's single-run smoke
    values (cvae.config.smoke_config: tiny data, 2 short epochs) and a tiny model unless [space]
    searches a model dim; SMOKE_TRIALS trials of the same space (random sampler for a grid), one
    seed. [space] entries that the smoke values replace are dropped. It is a study file of its own
    (raw_text), so results/<name>-smoke/study.toml describes what ran."""
    import tomli_w

    raw = tomllib.loads(spec.raw_text)
    space = raw.setdefault("space", {})
    base = spec.base_config()
    before, after = base.to_dict(), smoke_config(base).to_dict()
    changes = {section: {k: v for k, v in table.items() if before[section].get(k) != v} for section, table in after.items()}
    if not set(space) & set(SMOKE_MODEL):
        changes["model"].update(SMOKE_MODEL)
    needed = {dep for entry in space.values() if isinstance(entry, dict) for dep in entry.get("when", {})}
    for section, table in changes.items():
        for key, value in table.items():
            if key not in needed:  # a parameter that a condition reads stays searched
                space.pop(key, None)
                raw.setdefault(section, {})[key] = value
    study = raw.setdefault("study", {})
    study.update(name=f"{spec.name}-smoke", num_samples=SMOKE_TRIALS)
    if "seeds" in study:
        study["seeds"] = list(spec.seeds[:1])
    search = raw.setdefault("search", {})
    search.pop("confirm_top", None)  # one seed: nothing to race
    if spec.sampler == "grid":
        search["sampler"] = "random"  # a grid would not fit in SMOKE_TRIALS trials
    if spec.scheduler == "asha":
        search["grace_period"] = 1
    # the warm start's first configurations, as many as the smoke study runs
    files = search.get("start_from", [])[:SMOKE_TRIALS]
    points = search.get("points_to_evaluate", [])[:SMOKE_TRIALS - len(files)]
    for key, value in (("start_from", files), ("points_to_evaluate", points)):
        if key in search:
            search[key] = value
    # the leading comments (with a base, the line naming the base files) stay on the smoke study's copy
    lines = spec.raw_text.splitlines(keepends=True)
    head = "".join(lines[:next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))])
    return parse_spec(head + tomli_w.dumps(raw), spec.path)


def main_error(e: StudyError) -> int:
    """For entry points: print `error: <file>: <key>: <reason>` to stderr and return exit code 2."""
    print(f"error: {e}", file=sys.stderr)
    return 2


def resolved_text(file: ConfigFile) -> str:
    """What a results folder keeps of a study file (study.toml, spec.raw_text): the file's own text;
    for a file with a base, every value it runs with, as TOML, under a line naming its base files."""
    if not file.bases:
        return file.text
    import tomli_w

    names = ", ".join(os.path.relpath(b, file.path.parent) for b in file.bases)
    order = sorted(file.tables, key=lambda t: list(TABLES).index(t) if t in TABLES else len(TABLES))
    return (f"# {file.path.name} with its base files ({names}) resolved: every value this study runs with\n\n"
            + tomli_w.dumps({t: file.tables[t] for t in order}))


# --- building ------------------------------------------------------------------------------------


def _spec(path: Path, text: str | None) -> StudySpec:
    file = None
    try:
        file = read_config_file(path, text, rebase=PATH_KEYS)
        return build_spec(file)
    except StudyError:
        raise
    except ConfigError as e:
        source = e.source or (file.source_of(e.key) if file is not None else path)
        raise StudyError(source, e.key, e.reason) from None


def build_spec(file: ConfigFile) -> StudySpec:
    """The StudySpec of a read study file; a problem raises ConfigError on its dotted key."""
    raw = file.tables
    check_tables(raw, TABLES)
    given_study, given_search = raw.get("study", {}), raw.get("search", {})
    search_keys, tpe_keys = _split("search", given_search, SearchTable, TPEOptions)
    search = build_table("search", SearchTable, search_keys)
    tpe = build_table("search", TPEOptions, tpe_keys)
    check_applies(search, given_search)
    defaults = {"name": file.path.stem, **({"num_samples": 1} if search.sampler == "grid" else {})}
    study = build_table("study", StudyTable, {**defaults, **given_study})
    check_name(study, given_study)
    check_metric(study)
    fixed = _fixed(raw, file.path)
    check_seeds(study, fixed)
    space = parse_space(raw.get("space", {}), fixed)
    check_devices(fixed, space, study.gpus_per_trial)
    if tpe.group is None:
        tpe = replace(tpe, group=tpe.multivariate and any(p.when for p in space))
    check_warm_start_sampler(search)
    warm_start = _warm_start(search, space, file.path)
    check_warm_start_fits(search, study, warm_start)
    check_grid_finite(search, space)
    tables = {**_values(study, StudyTable), **_values(search, SearchTable), **_values(tpe, TPEOptions)}
    race = study.seeds if isinstance(study.seeds, SeedRace) else None
    spec = StudySpec(**{**tables, "seeds": seeds_of(study, fixed["train"])}, race=race, path=file.path.resolve(),
                     fixed=fixed, space=space, raw_text=resolved_text(file), warm_start=warm_start)
    check_grid_size(spec)
    check_race(spec)
    check_combinations(space, spec.config_for)
    check_grace_period(spec)
    if spec.scheduler == "asha" and len(spec.seeds) > 1:
        log.warning("%s: ASHA with %d seeds: seeds of one configuration may be stopped at different "
                    "epochs, and the searcher sees the mean of their scores", file.path, len(spec.seeds))
    return spec


def _split(name: str, table: Mapping[str, Any], *klasses: type) -> list[dict[str, Any]]:
    # One file table holding the fields of several dataclasses ([search]: SearchTable and TPEOptions).
    try:
        check_keys(table, _names(*klasses))
    except ConfigError as e:
        raise ConfigError(f"{name}.{e.key}", e.reason) from None
    return [{k: v for k, v in table.items() if k in _names(klass)} for klass in klasses]


def _fixed(raw: Mapping[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    fixed = {section: dict(raw.get(section, {})) for section in SECTIONS}
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        value = fixed[section].get(key)
        if value == "":
            raise ConfigError(dotted, "must be a path, got ''")
        if isinstance(value, str):
            p = Path(value).expanduser()
            fixed[section][key] = str(p if p.is_absolute() else (path.parent / p).resolve())
    Config.from_dict(fixed)
    return fixed


def _warm_start(search: SearchTable, space: Sequence[Param], src: Path) -> tuple[dict[str, Any], ...]:
    """[search] start_from (best.toml files: their values of this study's searched parameters) and
    points_to_evaluate (tables of parameter values), in that order."""
    searched = [p for p in space if p.kind != "fixed"]
    out = [_point_from_file(f, searched, src) for f in search.start_from]
    names = {p.name: p for p in searched}
    for i, pt in enumerate(search.points_to_evaluate):
        key = f"search.points_to_evaluate[{i}]"
        for name, v in pt.items():
            p = names.get(name)
            if p is None:
                raise ConfigError(key, f"{name!r} is not a searched [space] parameter{did_you_mean(name, names)}")
            if not p.can_take(v):
                raise ConfigError(key, f"{name} = {v!r} is not a value of space.{name}")
        out.append(active_values(pt, searched))
    return tuple(out)


def _point_from_file(f: str, searched: Sequence[Param], src: Path) -> dict[str, Any]:
    # A relative path is from the current directory, where results/ is (as --storage).
    path = Path(f).expanduser().resolve()
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError("search.start_from", f"{f}: cannot read it ({e.strerror or e}); a relative path is "
                                               f"from the current directory, e.g. results/kl/best.toml") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("search.start_from", f"{f}: not TOML ({e})") from None
    point: dict[str, Any] = {}
    for p in searched:
        v = config.get(p.section, {}).get(p.name) if isinstance(config.get(p.section), dict) else None
        if v is not None and p.can_take(v):  # a value outside this study's range: Optuna samples it
            point[p.name] = v
        elif v is not None:
            log.warning("%s: start_from %s: %s = %r is outside space.%s; sampled instead", src, f, p.name, v, p.name)
    return active_values(point, searched)


# --- the rules that span tables (or need more than one value) ------------------------------------


def check_applies(search: SearchTable, given: Collection[str]) -> None:
    """A [search] key of a sampler or scheduler the study does not use would do nothing: refuse it."""
    for f in (*fields(SearchTable), *fields(TPEOptions)):
        if "only" in f.metadata and f.name in given:
            option, value = f.metadata["only"]
            _check(getattr(search, option) == value, f"search.{f.name}", f'only applies with {option} = "{value}"')


def check_name(study: StudyTable, given: Collection[str]) -> None:
    """The name is a folder under results/ (the file's name when [study] name is not set)."""
    origin = "" if "name" in given else " (the file's name, as [study] name is not set)"
    _check(_SAFE_NAME.fullmatch(study.name) is not None, "study.name",
           f"must be a folder name of letters, digits, '-' and '_', got {study.name!r}{origin}")


def check_metric(study: StudyTable) -> None:
    """The metric is one the trials report: a typo would otherwise only surface after Ray started."""
    _check(study.metric in METRICS, "study.metric", f"unknown metric {study.metric!r}{did_you_mean(study.metric, METRICS)}; "
                                                    f"expected one of {', '.join(METRICS)}")


def check_seeds(study: StudyTable, fixed: Mapping[str, Mapping[str, Any]]) -> None:
    """Seeds come from one place: [study] seeds, or a single [train] seed."""
    _check(study.seeds is None or "seed" not in fixed["train"], "train.seed",
           "conflicts with study.seeds; list every seed in study.seeds")


def check_devices(fixed: Mapping[str, Mapping[str, Any]], space: Sequence[Param], gpus_per_trial: float) -> None:
    """A trial sees only the GPUs Ray reserved for it, renumbered from cuda:0 (CUDA_VISIBLE_DEVICES)."""
    p = next((p for p in space if p.name == "device"), None)
    if p is not None:
        key, devices = f"space.device.{'value' if p.kind == 'fixed' else 'choices'}", p.grid_values() or ()
    else:
        key, devices = "train.device", (fixed["train"].get("device", TrainConfig.device),)
    visible = max(1, math.ceil(gpus_per_trial))
    for device in (str(d) for d in devices if str(d).startswith("cuda")):
        _check(gpus_per_trial > 0, key, f"{device!r} needs study.gpus_per_trial > 0: a trial uses only the GPUs Ray "
                                        "reserved for it (or use device = \"auto\", which then trains on the CPU)")
        _check(int(device.partition(":")[2] or 0) < visible, key, f"{device!r}: a trial sees only the GPUs Ray reserved "
               f"for it, as cuda:0..cuda:{visible - 1} (study.gpus_per_trial = {gpus_per_trial:g})")


def check_warm_start_sampler(search: SearchTable) -> None:
    """The grid runs every configuration already: a warm start is for tpe and random."""
    if search.sampler == "grid" and (search.start_from or search.points_to_evaluate):
        key = "search.start_from" if search.start_from else "search.points_to_evaluate"
        raise ConfigError(key, "the grid sampler runs every configuration already; use tpe or random to start from these")


def check_warm_start_fits(search: SearchTable, study: StudyTable, points: Sequence[Mapping[str, Any]]) -> None:
    """Every warm-start configuration runs: there are at most num_samples of them."""
    _check(len(points) <= study.num_samples, "search.start_from" if search.start_from else "search.points_to_evaluate",
           f"{len(points)} warm-start configurations, more than study.num_samples = {study.num_samples}")


def check_grid_finite(search: SearchTable, space: Sequence[Param]) -> None:
    """The grid sampler enumerates every value: each parameter needs finitely many."""
    for p in space:
        _check(search.sampler != "grid" or p.kind == "fixed" or p.grid_values() is not None, f"space.{p.name}",
               "the grid sampler needs finite values: give the float range a step, or list choices")


def check_grid_size(spec: StudySpec) -> None:
    """A grid of more than MAX_GRID configurations is certainly a mistake."""
    _check(spec.sampler != "grid" or spec.grid_size() is not None, "space",
           f"the grid has more than {MAX_GRID} configurations; narrow it or use tpe/random")


def check_grace_period(spec: StudySpec) -> None:
    """ASHA's grace period fits in the epochs a trial trains."""
    if spec.scheduler == "asha":
        _check(spec.grace_period <= spec.max_epochs, "search.grace_period",
               f"must be <= train.epochs ({spec.max_epochs}), got {spec.grace_period}")


def check_race(spec: StudySpec) -> None:
    """A grid races every configuration; a search confirms its confirm_top best by a race, which
    needs the race's seeds; confirm_top is at most the configurations searched."""
    if spec.race is None:
        _check(spec.confirm_top == 0, "search.confirm_top",
               "needs a seed race: [study] seeds = { min = 2, max = 6 } (a list is a fixed number of seeds)")
        return
    if spec.sampler == "grid":
        _check(spec.confirm_top == 0, "search.confirm_top", "the grid sampler races every configuration already; "
                                                           "confirm_top is for tpe and random")
        return
    _check(spec.confirm_top >= 2, "study.seeds", f"a seed race with sampler = \"{spec.sampler}\" confirms the best "
           "configurations after the search: set [search] confirm_top = k (k >= 2), or list the seeds")
    _check(spec.confirm_top <= spec.num_configs, "search.confirm_top",
           f"must be <= study.num_samples ({spec.num_configs}), got {spec.confirm_top}")


__all__ = ["CPU_METRIC", "FIELD_SECTION", "METRICS", "OBJECTIVES", "Param", "SearchTable", "SeedRace", "StudyError", "StudySpec",
           "StudyTable", "TPEOptions", "build_spec", "load_spec", "main_error", "parse_spec", "plain_type", "resolved_text",
           "seeds_of", "smoke_spec"]
