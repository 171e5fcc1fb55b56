"""A study is a TOML file: parse and validate it into a frozen StudySpec.

Tables: `[study]` (name, metric, seeds, ...), `[search]` (sampler, scheduler, retries), the fixed
`[data]`, `[model]` and `[train]` values of the cvae config, and `[space]`, one sub-table per searched
parameter. Everything is checked before Ray starts; each problem raises a StudyError whose text is
one line, `<file>: <dotted key>: <reason>`. The file is only ever parsed as TOML: it cannot run code.
A `[data] root` is resolved against the study file here; whether it holds a dataset in the lab's
layout is cvae.data's check, which study.run makes (loading it) before Ray starts.
"""
from __future__ import annotations

import difflib
import logging
import math
import re
import sys
import types
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence, Union, get_args, get_origin

from cvae.config import SECTIONS, Config, ConfigError, build_section, field_types, smoke_config
from cvae.metrics import METRIC_NAMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

TABLES: tuple[str, ...] = ("study", "search", "data", "model", "train", "space")
STUDY_KEYS: tuple[str, ...] = ("name", "description", "metric", "mode", "objective", "num_samples", "seed", "seeds",
                               "max_concurrent", "cpus_per_trial", "gpus_per_trial",
                               "time_budget_s")
SEARCH_KEYS: tuple[str, ...] = ("sampler", "scheduler", "grace_period", "reduction_factor", "max_failures",
                                *("multivariate", "group", "constant_liar", "n_startup_trials"),  # TPE's options
                                "start_from", "points_to_evaluate")  # warm start: the first configurations
TPE_OPTIONS: tuple[str, ...] = ("multivariate", "group", "constant_liar", "n_startup_trials")
PARAM_KEYS: tuple[str, ...] = ("low", "high", "log", "step", "type", "choices", "value", "when")
SAMPLERS: tuple[str, ...] = ("tpe", "grid", "random")
SCHEDULERS: tuple[str, ...] = ("none", "asha")
# A trial's score: the metric at its best epoch, or at its last (study.analyze.trial_objective).
OBJECTIVES: tuple[str, ...] = ("best", "last")
CPU_METRIC = "time/cpu_s"  # added by study.trainable: the trial's process CPU seconds, across restores
METRICS: tuple[str, ...] = (*METRIC_NAMES, CPU_METRIC)  # every per-epoch metric of a trial, in report order
MAX_GRID = 10_000  # grids larger than this are certainly a mistake on a laptop
SMOKE_TRIALS = 2  # trials of a smoke study (smoke_spec)
# A smoke study runs several trials at once: a tiny model too, unlike cvae's single-run smoke config.
SMOKE_MODEL: dict[str, int] = {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16}
_MAX_COMBOS = 4_096  # beyond this, [space] combinations are checked one parameter at a time
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")
# cvae fields that cannot be searched, and why
_UNSEARCHABLE: dict[str, str] = {
    "root": "a dataset path cannot be searched; fix it in [data]",
    "cache_dir": "a cache path cannot be searched; fix it in [data]",
    "seed": "list seeds in [study] seeds = [...] to run every configuration once per seed",
}
# field name -> the cvae config section it belongs to (names are unique across sections)
FIELD_SECTION: dict[str, str] = {name: section for section, klass in SECTIONS.items()
                                 for name in field_types(klass)}
_MISSING: Any = object()


class StudyError(ConfigError):
    """A bad study file: `str(e)` is one line, `<file>: <dotted key>: <reason>`.

    A ConfigError (hence a ValueError), so callers that catch config errors catch these too.
    """

    def __init__(self, path: str | Path, key: str, reason: str) -> None:
        super().__init__(key, " ".join(str(reason).split()), source=path)
        self.path = str(path)


@dataclass(frozen=True)
class Param:
    """One `[space.<name>]` entry: a float/int range, a categorical or a fixed value, maybe conditional."""

    name: str  # the cvae config field
    kind: Literal["float", "int", "categorical", "fixed"]
    low: float | int | None = None  # range bounds, both inclusive
    high: float | int | None = None
    log: bool = False  # sample the range on a log scale
    step: float | int | None = None  # range discretisation (None: continuous float / step 1 int)
    choices: tuple[Any, ...] = ()  # categorical values
    value: Any = None  # fixed value
    when: dict[str, tuple[Any, ...]] | None = None  # other [space] param -> values for which this one is active
    section: Literal["train", "model", "data"] = "train"  # the config table the field lives in

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether every `when` condition holds, given the values decided so far (inactive params absent)."""
        if not self.when:
            return True
        return all(dep in values and any(_same(values[dep], a) for a in allowed)
                   for dep, allowed in self.when.items())

    def grid_values(self) -> tuple[Any, ...] | None:
        """The finite values this parameter can take, or None for a continuous float range."""
        if self.kind == "fixed":
            return (self.value,)
        if self.kind == "categorical":
            return self.choices
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        lo, hi, st = Decimal(str(self.low)), Decimal(str(self.high)), Decimal(str(self.step))
        n = int((hi - lo) / st)
        return tuple(float(lo + i * st) for i in range(n + 1))

    def can_take(self, v: Any) -> bool:
        """Whether `v` is one of the values this parameter can take (used to check `when` values)."""
        if self.kind == "fixed":
            return _same(self.value, v)
        if self.kind == "categorical":
            return any(_same(c, v) for c in self.choices)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if not self.low <= v <= self.high:
            return False
        if self.kind == "int":
            return float(v).is_integer() and (int(v) - int(self.low)) % int(self.step or 1) == 0
        return self.step is None or _on_step(self.low, v, self.step)


@dataclass(frozen=True)
class StudySpec:
    """A validated study file. `space` is in dependency order (a param comes after those its `when` names)."""

    path: Path  # the study file, absolute
    name: str  # results/<name>/ and the Optuna study name
    metric: str  # the reported metric to optimise, e.g. "val/psnr"
    mode: Literal["max", "min"]
    objective: Literal["best", "last"]  # a trial's score: the metric at its best epoch, or at its last
    num_samples: int  # sampled configurations (grid sampler: repeats of the whole grid)
    seed: int  # seed of the Optuna sampler
    seeds: tuple[int, ...]  # train.seed values: every configuration runs once per seed
    max_concurrent: int | None  # trials running at once; None: as many as the cluster's resources fit (study.run)
    cpus_per_trial: float  # Ray CPUs reserved per trial
    gpus_per_trial: float  # Ray GPUs reserved per trial: 0 (none), a fraction < 1 (trials share a GPU), or whole GPUs
    sampler: Literal["tpe", "grid", "random"]
    scheduler: Literal["none", "asha"]
    grace_period: int  # ASHA: epochs before a trial may be stopped
    reduction_factor: float  # ASHA: keep 1/reduction_factor of the trials at each rung
    max_failures: int  # retries of a crashed trial from its last checkpoint
    fixed: dict[str, dict[str, Any]]  # section -> key -> value, with data.root/cache_dir made absolute
    space: tuple[Param, ...]
    description: str | None  # free text shown in the report
    raw_text: str  # the file's text, to copy beside the results
    # TPESampler's options (multivariate, group, constant_liar, n_startup_trials); {} for other samplers
    tpe: dict[str, Any] = field(default_factory=dict)
    # the first configurations to run ([search] start_from's best.toml files, then points_to_evaluate)
    warm_start: tuple[dict[str, Any], ...] = ()
    time_budget_s: float | None = None  # the study stops cleanly after this long (None: no limit)

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
                raise ConfigError(key, f"not a [space] parameter of study {self.name!r}{_hint(key, params)}")
            tables.setdefault(p.section, {})[key] = value
        tables.setdefault("train", {})["seed"] = seed
        return Config.from_dict(tables)

    def grid_points(self) -> list[dict[str, Any]] | None:
        """Every distinct configuration of a finite space (only active params, fixed ones included).

        None when a range is continuous or there are more than MAX_GRID points. A conditional
        parameter multiplies only the branch where its condition holds, so no point repeats.
        """
        values = {p.name: p.grid_values() for p in self.space}
        if any(v is None for v in values.values()):
            return None
        if math.prod(len(v) for v in values.values()) > MAX_GRID and _count_points(self.space, values) > MAX_GRID:
            return None
        return _enumerate_points(self.space, values)

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
        """Ray Tune trials = configurations x seeds: pass this as TuneConfig(num_samples=...)."""
        return self.num_configs * len(self.seeds)

    def param(self, name: str) -> Param:
        """The [space] parameter called `name` (KeyError if there is none)."""
        for p in self.space:
            if p.name == name:
                return p
        raise KeyError(name)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study TOML file; any problem raises StudyError naming the file and key."""
    return _Parser(Path(path)).parse()


def parse_spec(text: str, path: str | Path) -> StudySpec:
    """Validate a study's TOML text as if it were the file `path` (relative paths resolve against it)."""
    return _Parser(Path(path)).parse(text)


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
    return parse_spec(tomli_w.dumps(raw), spec.path)


def main_error(e: StudyError) -> int:
    """For entry points: print `error: <file>: <key>: <reason>` to stderr and return exit code 2."""
    print(f"error: {e}", file=sys.stderr)
    return 2


# --- parsing -------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.src = str(path)

    def err(self, key: str, reason: str) -> StudyError:
        return StudyError(self.src, key, reason)

    def parse(self, text: str | None = None) -> StudySpec:
        text, raw = self._read(text)
        for k in raw:
            # A key written above the first table header lands at the top level: say where it belongs.
            home = "study" if k in STUDY_KEYS else "search" if k in SEARCH_KEYS else FIELD_SECTION.get(k)
            if k not in TABLES and home is not None:
                raise self.err(k, f"belongs in the [{home}] table (write it below the [{home}] header)")
        self._keys(raw, TABLES, "", "table")
        for t in TABLES:
            if t in raw and not isinstance(raw[t], dict):
                raise self.err(t, f"must be a table ([{t}]), got {_typename(raw[t])}")
        study = raw.get("study", {})
        search = raw.get("search", {})
        self._keys(study, STUDY_KEYS, "study.")
        self._keys(search, SEARCH_KEYS, "search.")

        sampler = self._choice(search, "search.sampler", SAMPLERS, "tpe")
        scheduler = self._choice(search, "search.scheduler", SCHEDULERS, "none")
        if scheduler != "asha":
            for k in ("grace_period", "reduction_factor"):
                if k in search:
                    raise self.err(f"search.{k}", 'only applies with scheduler = "asha"')
        grace_period = self._int(search, "search.grace_period", 1, minimum=1)
        reduction_factor = self._number(search, "search.reduction_factor", 3.0)
        if reduction_factor <= 1:
            raise self.err("search.reduction_factor", f"must be > 1, got {reduction_factor}")
        max_failures = self._int(search, "search.max_failures", 2, minimum=0)

        name = self._str(study, "study.name", self.path.stem)
        if not _SAFE_NAME.fullmatch(name):
            origin = "" if "name" in study else " (the file's name, as [study] name is not set)"
            raise self.err("study.name", f"must be a folder name of letters, digits, '-' and '_', got {name!r}{origin}")
        description = self._str(study, "study.description", None)
        metric = self._str(study, "study.metric", "val/psnr")
        if metric not in METRICS:
            # a typo would otherwise only surface when the first trial reports, after Ray started
            raise self.err("study.metric", f"unknown metric {metric!r}{_hint(metric, METRICS)}; "
                                           f"expected one of {', '.join(METRICS)}")
        mode = self._choice(study, "study.mode", ("max", "min"), "max")
        objective = self._choice(study, "study.objective", OBJECTIVES, "best")
        num_samples = self._int(study, "study.num_samples", 1 if sampler == "grid" else _MISSING, minimum=1)
        seed = self._int(study, "study.seed", 0)
        # unset: as many as the cluster holds, which study.run knows once Ray is up
        max_concurrent = self._int(study, "study.max_concurrent", None, minimum=1) if "max_concurrent" in study else None
        cpus_per_trial = self._number(study, "study.cpus_per_trial", 1.0)
        if cpus_per_trial <= 0:
            raise self.err("study.cpus_per_trial", f"must be > 0, got {cpus_per_trial}")
        gpus_per_trial = self._number(study, "study.gpus_per_trial", 0.0)
        if gpus_per_trial < 0:
            raise self.err("study.gpus_per_trial", f"must be >= 0, got {gpus_per_trial:g}")
        if gpus_per_trial > 1 and not gpus_per_trial.is_integer():
            # Ray's rule: a share of one GPU, or whole GPUs
            raise self.err("study.gpus_per_trial", f"must be a fraction of one GPU (<= 1) or a whole number of GPUs, "
                                                   f"got {gpus_per_trial:g}")

        fixed = self._fixed(raw)
        seeds = self._seeds(study, fixed)
        self._build(fixed, seeds[0])
        space = self._space(raw.get("space", {}), fixed)
        self._check_devices(fixed, space, gpus_per_trial)
        tpe = self._tpe(search, sampler, space)
        warm_start = self._warm_start(search, sampler, space)
        if len(warm_start) > num_samples:
            raise self.err("search.start_from" if "start_from" in search else "search.points_to_evaluate",
                           f"{len(warm_start)} warm-start configurations, more than study.num_samples = {num_samples}")
        time_budget_s = None
        if "time_budget_s" in study:
            time_budget_s = self._number(study, "study.time_budget_s", None)
            if time_budget_s <= 0:
                raise self.err("study.time_budget_s", f"must be > 0 seconds, got {time_budget_s}")

        if sampler == "grid":
            for p in space:
                if p.kind != "fixed" and p.grid_values() is None:
                    raise self.err(f"space.{p.name}", "the grid sampler needs finite values: give the float "
                                                      "range a step, or list choices")
        spec = StudySpec(
            path=self.path.resolve(), name=name, metric=metric, mode=mode, objective=objective, num_samples=num_samples, seed=seed,
            seeds=seeds, max_concurrent=max_concurrent, cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial, sampler=sampler,
            scheduler=scheduler, grace_period=grace_period, reduction_factor=reduction_factor,
            max_failures=max_failures, fixed=fixed, space=space, description=description, raw_text=text,
            tpe=tpe, warm_start=warm_start, time_budget_s=time_budget_s,
        )
        if sampler == "grid" and spec.grid_size() is None:
            raise self.err("space", f"the grid has more than {MAX_GRID} configurations; narrow it or use tpe/random")
        self._check_combinations(spec)
        if scheduler == "asha":
            if grace_period > spec.max_epochs:
                raise self.err("search.grace_period", f"must be <= train.epochs ({spec.max_epochs}), got {grace_period}")
            if len(seeds) > 1:
                log.warning("%s: ASHA with %d seeds: seeds of one configuration may be stopped at different "
                            "epochs, and the searcher sees the mean of their scores", self.src, len(seeds))
        return spec

    def _check_devices(self, fixed: Mapping[str, Any], space: Sequence[Param], gpus_per_trial: float) -> None:
        # A trial sees only the GPUs Ray reserved for it, renumbered from cuda:0 (CUDA_VISIBLE_DEVICES).
        try:
            p = next(p for p in space if p.name == "device")
            key, devices = f"space.device.{'value' if p.kind == 'fixed' else 'choices'}", p.grid_values() or ()
        except StopIteration:
            key, devices = "train.device", (fixed["train"].get("device", "auto"),)
        visible = max(1, math.ceil(gpus_per_trial))
        for device in devices:
            if not str(device).startswith("cuda"):
                continue
            if gpus_per_trial == 0:
                raise self.err(key, f"{device!r} needs study.gpus_per_trial > 0: a trial uses only the GPUs Ray "
                                    "reserved for it (or use device = \"auto\", which then trains on the CPU)")
            index = int(str(device).partition(":")[2] or 0)
            if index >= visible:
                raise self.err(key, f"{device!r}: a trial sees only the GPUs Ray reserved for it, as cuda:0.."
                                    f"cuda:{visible - 1} (study.gpus_per_trial = {gpus_per_trial:g})")

    def _read(self, text: str | None) -> tuple[str, dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8") if text is None else text
        except UnicodeDecodeError:
            raise self.err("-", "not a UTF-8 text file") from None
        except OSError as e:
            raise self.err("-", f"cannot read file: {e.strerror or e}") from None
        try:
            return text, tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise self.err("-", f"not valid TOML: {e}") from None

    # typed getters: each names the dotted key and the bad value

    def _keys(self, table: Mapping[str, Any], allowed: Sequence[str], prefix: str, what: str = "key") -> None:
        for k in table:
            if k not in allowed:
                raise self.err(f"{prefix}{k}", f"unknown {what}{_hint(k, allowed)}; expected one of {', '.join(allowed)}")

    def _get(self, table: Mapping[str, Any], key: str, default: Any) -> Any:
        short = key.rsplit(".", 1)[-1]
        if short in table:
            return table[short]
        if default is _MISSING:
            raise self.err(key, "missing (required)")
        return default

    def _int(self, table: Mapping[str, Any], key: str, default: Any, minimum: int | None = None) -> int:
        v = self._get(table, key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(key, f"must be an integer, got {_typename(v)} {v!r}")
        if minimum is not None and v < minimum:
            raise self.err(key, f"must be >= {minimum}, got {v}")
        return v

    def _number(self, table: Mapping[str, Any], key: str, default: Any) -> float:
        v = self._get(table, key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(key, f"must be a finite number, got {_typename(v)} {v!r}")
        return float(v)

    def _str(self, table: Mapping[str, Any], key: str, default: Any) -> Any:
        v = self._get(table, key, default)
        if v is not None and not isinstance(v, str):
            raise self.err(key, f"must be a string, got {_typename(v)} {v!r}")
        return v

    def _choice(self, table: Mapping[str, Any], key: str, choices: Sequence[str], default: str) -> Any:
        v = self._str(table, key, default)
        if v not in choices:
            raise self.err(key, f"must be one of {', '.join(map(repr, choices))}, got {v!r}{_hint(v, choices)}")
        return v

    def _bool(self, table: Mapping[str, Any], key: str, default: Any) -> bool:
        v = self._get(table, key, default)
        if not isinstance(v, bool):
            raise self.err(key, f"must be true or false, got {_typename(v)} {v!r}")
        return v

    # [search]: the sampler's options and the warm start

    def _tpe(self, search: Mapping[str, Any], sampler: str, space: Sequence[Param]) -> dict[str, Any]:
        """TPESampler's options. Defaults: multivariate TPE, with group decomposition when [space] is
        conditional and the constant liar for trials in flight (what Optuna's TPESampler docs give for
        conditional spaces and parallel trials); Optuna's 10 random startup trials."""
        if sampler != "tpe":
            for k in TPE_OPTIONS:
                if k in search:
                    raise self.err(f"search.{k}", 'only applies with sampler = "tpe"')
            return {}
        multivariate = self._bool(search, "search.multivariate", True)
        group = self._bool(search, "search.group", multivariate and any(p.when for p in space))
        if group and not multivariate:
            raise self.err("search.group", "needs multivariate = true (Optuna's TPESampler rule)")
        return {"multivariate": multivariate, "group": group,
                "constant_liar": self._bool(search, "search.constant_liar", True),
                "n_startup_trials": self._int(search, "search.n_startup_trials", 10, minimum=0)}

    def _warm_start(self, search: Mapping[str, Any], sampler: str, space: Sequence[Param]) -> tuple[dict[str, Any], ...]:
        """[search] start_from (best.toml files: their values of this study's searched parameters) and
        points_to_evaluate (tables of parameter values), in that order."""
        files = search.get("start_from", [])
        points = search.get("points_to_evaluate", [])
        if (files or points) and sampler == "grid":
            key = "search.start_from" if files else "search.points_to_evaluate"
            raise self.err(key, "the grid sampler runs every configuration already; use tpe or random to start from these")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise self.err("search.start_from", f"must be a list of best.toml paths, got {files!r}")
        if not isinstance(points, list) or not all(isinstance(pt, dict) for pt in points):
            raise self.err("search.points_to_evaluate", f"must be a list of tables ({{ name = value, ... }}), got {points!r}")
        searched = [p for p in space if p.kind != "fixed"]
        out: list[dict[str, Any]] = []
        for f in files:
            out.append(self._point_from_file(f, searched))
        for i, pt in enumerate(points):
            key = f"search.points_to_evaluate[{i}]"
            names = {p.name: p for p in searched}
            point: dict[str, Any] = {}
            for name, v in pt.items():
                p = names.get(name)
                if p is None:
                    raise self.err(key, f"{name!r} is not a searched [space] parameter{_hint(name, names)}")
                if not p.can_take(v):
                    raise self.err(key, f"{name} = {v!r} is not a value of space.{name}")
                point[name] = v
            out.append(_active(point, searched))
        return tuple(out)

    def _point_from_file(self, f: str, searched: Sequence[Param]) -> dict[str, Any]:
        # A relative path is from the current directory, where results/ is (as --storage).
        path = Path(f).expanduser().resolve()
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise self.err("search.start_from", f"{f}: cannot read it ({e.strerror or e}); a relative path is "
                                                f"from the current directory, e.g. results/kl/best.toml") from None
        except tomllib.TOMLDecodeError as e:
            raise self.err("search.start_from", f"{f}: not TOML ({e})") from None
        point: dict[str, Any] = {}
        for p in searched:
            v = config.get(p.section, {}).get(p.name) if isinstance(config.get(p.section), dict) else None
            if v is not None and p.can_take(v):  # a value outside this study's range: Optuna samples it
                point[p.name] = v
            elif v is not None:
                log.warning("%s: start_from %s: %s = %r is outside space.%s; sampled instead", self.src, f, p.name, v, p.name)
        return _active(point, searched)

    # the fixed [data], [model] and [train] tables

    def _fixed(self, raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        fixed = {section: dict(raw.get(section, {})) for section in SECTIONS}
        data = fixed["data"]
        for key in ("root", "cache_dir"):
            if key in data:
                if not isinstance(data[key], str) or not data[key]:
                    raise self.err(f"data.{key}", f"must be a path string, got {_typename(data[key])} {data[key]!r}")
                # Trials run with the trial dir as working dir: resolve against the study file now.
                p = Path(data[key]).expanduser()
                data[key] = str(p if p.is_absolute() else (self.path.parent / p).resolve())
        try:
            Config.from_dict(fixed)
        except ConfigError as e:
            raise self.err(e.key, e.reason) from None
        return fixed

    def _seeds(self, study: Mapping[str, Any], fixed: dict[str, dict[str, Any]]) -> tuple[int, ...]:
        if "seeds" not in study:
            seed = fixed["train"].get("seed", 0)
            return (int(seed),)
        if "seed" in fixed["train"]:
            raise self.err("train.seed", "conflicts with study.seeds; list every seed in study.seeds")
        seeds = study["seeds"]
        if not isinstance(seeds, list) or not seeds:
            raise self.err("study.seeds", f"must be a non-empty list of integers, got {seeds!r}")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int):
                raise self.err("study.seeds", f"must be a list of integers, got {_typename(s)} {s!r}")
        if len(set(seeds)) != len(seeds):
            raise self.err("study.seeds", f"must not repeat a seed, got {seeds}")
        return tuple(seeds)

    def _build(self, fixed: dict[str, dict[str, Any]], seed: int) -> Config:
        tables = {s: dict(t) for s, t in fixed.items()}
        tables["train"]["seed"] = seed
        try:
            return Config.from_dict(tables)
        except ConfigError as e:
            raise self.err(e.key, e.reason) from None

    # [space]

    def _space(self, table: Mapping[str, Any], fixed: dict[str, dict[str, Any]]) -> tuple[Param, ...]:
        params: dict[str, Param] = {}
        for name, entry in table.items():
            params[name] = self._param(name, entry, fixed)
        for p in params.values():
            self._check_when(p, params)
        return tuple(self._ordered(params))

    def _param(self, name: str, entry: Any, fixed: dict[str, dict[str, Any]]) -> Param:
        key = f"space.{name}"
        if name in _UNSEARCHABLE:
            raise self.err(key, _UNSEARCHABLE[name])
        section = FIELD_SECTION.get(name)
        if section is None:
            raise self.err(key, f"unknown parameter{_hint(name, FIELD_SECTION)}; [space] entries are "
                                "fields of [train], [model] or [data]")
        if not isinstance(entry, dict):
            raise self.err(key, "must be a table: { low = ..., high = ... }, { choices = [...] } or { value = ... }, "
                                f"got {_typename(entry)} {entry!r}")
        self._keys(entry, PARAM_KEYS, f"{key}.")
        forms = [f for f, present in (("low/high", "low" in entry or "high" in entry),
                                      ("choices", "choices" in entry), ("value", "value" in entry)) if present]
        if len(forms) != 1:
            raise self.err(key, "give exactly one of low/high (a range), choices or value"
                                + (f", got {' and '.join(forms)}" if forms else ""))
        if forms[0] != "low/high":
            for k in ("log", "step", "type"):
                if k in entry:
                    raise self.err(f"{key}.{k}", "only applies to a range (low/high)")
        when = self._when(key, entry.get("when"))
        if name in fixed[section] and when is None:
            raise self.err(key, f"searched here and also fixed in [{section}] ({section}.{name}); remove one "
                                f"(a [{section}] value is only allowed as the fallback of a conditional, `when`, parameter)")
        hint = field_types(SECTIONS[section])[name]
        context = fixed[section]
        if forms[0] == "low/high":
            return self._range(key, name, section, entry, hint, context, when)
        if forms[0] == "choices":
            choices = entry["choices"]
            if not isinstance(choices, list):
                raise self.err(f"{key}.choices", f"must be a list, got {_typename(choices)} {choices!r}")
            if not choices:
                raise self.err(f"{key}.choices", "must not be empty")
            for i, c in enumerate(choices):
                if isinstance(c, (list, dict)):
                    raise self.err(f"{key}.choices", f"choices must be strings, numbers or booleans, got {c!r} "
                                                     "(a list can only be fixed: { value = [...] })")
                if any(_same(c, d) for d in choices[:i]):
                    raise self.err(f"{key}.choices", f"repeats {c!r}")
                self._check_value(f"{key}.choices", section, name, c, context)
            return Param(name, "categorical", choices=tuple(choices), when=when, section=section)
        value = entry["value"]
        if isinstance(value, dict):
            raise self.err(f"{key}.value", f"must be a plain value, got a table {value!r}")
        self._check_value(f"{key}.value", section, name, value, context)
        return Param(name, "fixed", value=value, when=when, section=section)

    def _range(self, key: str, name: str, section: str, entry: Mapping[str, Any], hint: Any,
               context: Mapping[str, Any], when: dict[str, tuple[Any, ...]] | None) -> Param:
        for k in ("low", "high"):
            if k not in entry:
                raise self.err(key, f"a range needs both low and high; {k} is missing")
            v = entry[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise self.err(f"{key}.{k}", f"must be a finite number, got {_typename(v)} {v!r}")
        low, high = entry["low"], entry["high"]
        log_ = entry.get("log", False)
        if not isinstance(log_, bool):
            raise self.err(f"{key}.log", f"must be true or false, got {_typename(log_)} {log_!r}")
        step = entry.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
                raise self.err(f"{key}.step", f"must be a number > 0, got {step!r}")
            if log_:
                raise self.err(f"{key}.step", "cannot be combined with log = true")
        all_ints = all(isinstance(v, int) for v in (low, high, step) if v is not None)
        kind = entry.get("type", "int" if all_ints else "float")
        if kind not in ("float", "int"):
            raise self.err(f"{key}.type", f"must be 'float' or 'int', got {kind!r}")
        numeric = plain_type(hint)
        if numeric not in (int, float):
            raise self.err(key, f"{name} is not a number; search it with choices = [...]")
        if numeric is int and kind == "float":
            raise self.err(key, f"{name} is an integer; give integer low/high/step (or type = \"int\")")
        if kind == "int":
            for k, v in (("low", low), ("high", high), ("step", step)):
                if v is not None and not float(v).is_integer():
                    raise self.err(f"{key}.{k}", f"must be an integer for an int range, got {v!r}")
            low, high = int(low), int(high)
            step = int(step) if step is not None else None
        else:
            low, high = float(low), float(high)
            step = float(step) if step is not None else None
        if low >= high:
            raise self.err(key, f"low must be < high, got low = {low}, high = {high}")
        if log_ and low <= 0:
            raise self.err(f"{key}.low", f"must be > 0 for a log range, got {low}")
        if step is not None and not _on_step(low, high, step):
            raise self.err(f"{key}.step", f"high - low must be a multiple of step, got low = {low}, high = {high}, "
                                          f"step = {step}")
        self._check_value(f"{key}.low", section, name, low, context)
        self._check_value(f"{key}.high", section, name, high, context)
        return Param(name, kind, low=low, high=high, log=log_, step=step, when=when, section=section)

    def _check_value(self, key: str, section: str, name: str, value: Any, context: Mapping[str, Any]) -> None:
        # The config dataclasses own the range rules; build one with this value to reuse them.
        try:
            build_section(SECTIONS[section], {**context, name: value})
        except ConfigError as e:
            raise self.err(key, e.reason if e.key == name else f"{e.key}: {e.reason}") from None

    def _when(self, key: str, when: Any) -> dict[str, tuple[Any, ...]] | None:
        if when is None:
            return None
        if not isinstance(when, dict) or not when:
            raise self.err(f"{key}.when", f"must be a table like {{ kl_anneal_type = \"Cyclical\" }}, got {when!r}")
        out: dict[str, tuple[Any, ...]] = {}
        for dep, allowed in when.items():
            values = allowed if isinstance(allowed, list) else [allowed]
            if not values:
                raise self.err(f"{key}.when.{dep}", "must name at least one value")
            for v in values:
                if isinstance(v, (list, dict)):
                    raise self.err(f"{key}.when.{dep}", f"values must be strings, numbers or booleans, got {v!r}")
            out[dep] = tuple(values)
        return out

    def _check_when(self, p: Param, params: Mapping[str, Param]) -> None:
        for dep, allowed in (p.when or {}).items():
            key = f"space.{p.name}.when.{dep}"
            if dep == p.name:
                raise self.err(key, "a parameter cannot depend on itself")
            q = params.get(dep)
            if q is None:
                if dep in FIELD_SECTION:
                    raise self.err(key, f"{dep!r} is not a [space] parameter; add [space.{dep}] or drop the condition")
                raise self.err(key, f"unknown [space] parameter {dep!r}{_hint(dep, list(params))}")
            for v in allowed:
                if not q.can_take(v):
                    raise self.err(key, f"{dep} never takes the value {v!r}{_values_hint(q, v)}")

    def _ordered(self, params: dict[str, Param]) -> list[Param]:
        # Topological order, otherwise file order: a `when` can only be evaluated after its parameter.
        done: list[Param] = []
        placed: set[str] = set()
        pending = list(params.values())
        while pending:
            ready = [p for p in pending if all(d in placed for d in (p.when or {}))]
            if not ready:
                p = pending[0]
                raise self.err(f"space.{p.name}.when", "circular conditions between "
                                                       + ", ".join(q.name for q in pending))
            done.append(ready[0])
            placed.add(ready[0].name)
            pending.remove(ready[0])
        return done

    def _check_combinations(self, spec: StudySpec) -> None:
        # Cross-field rules (e.g. F_dim + L_dim + N_dim divisible by 4) need whole configs: try every
        # combination of choices and range ends, or each parameter alone if there are too many.
        candidates = {p.name: _candidates(p) for p in spec.space}
        if _count_points(spec.space, candidates, cap=_MAX_COMBOS) <= _MAX_COMBOS:
            points = _enumerate_points(spec.space, candidates)
        else:
            points = [{p.name: v} for p in spec.space for v in candidates[p.name]]
        names = {p.name for p in spec.space}
        for point in points:
            try:
                spec.config_for(point)
            except ConfigError as e:
                field = e.key.rsplit(".", 1)[-1]
                key = f"space.{field}" if field in names else e.key
                shown = ", ".join(f"{k} = {v!r}" for k, v in point.items() if spec.param(k).kind != "fixed")
                raise self.err(key, f"{e.reason} (when sampled with {shown})" if shown else e.reason) from None


# --- helpers -------------------------------------------------------------------------------------


def _hint(key: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _values_hint(q: Param, v: Any) -> str:
    if q.kind == "categorical":
        if isinstance(v, str):
            h = _hint(v, [c for c in q.choices if isinstance(c, str)])
            if h:
                return h
        return f"; its choices are {', '.join(map(repr, q.choices))}"
    if q.kind == "fixed":
        return f"; it is fixed to {q.value!r}"
    return f"; it ranges over [{q.low}, {q.high}]" + (f" in steps of {q.step}" if q.step else "")


def _typename(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "list",
            dict: "table"}.get(type(v), type(v).__name__)


def _same(a: Any, b: Any) -> bool:
    # true == 1 in Python; a TOML boolean and a number are different values here.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and a == b


def _on_step(low: float, v: float, step: float) -> bool:
    # Decimal on the shortest repr, so 0.0 .. 1.0 in steps of 0.1 is exact.
    try:
        return (Decimal(str(v)) - Decimal(str(low))) % Decimal(str(step)) == 0
    except InvalidOperation:  # pragma: no cover
        return False


def plain_type(hint: Any) -> Any:
    """A config field's type hint without its `| None` (None for a union of several types)."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return plain_type(args[0]) if len(args) == 1 else None
    return hint


def _candidates(p: Param) -> tuple[Any, ...]:
    values = p.grid_values()
    if values is not None and len(values) <= 8:
        return values
    return (p.low, p.high)


def _active(point: Mapping[str, Any], space: Sequence[Param]) -> dict[str, Any]:
    """The values of `point` whose parameter is active given the others (a `when` that fails drops it)."""
    out: dict[str, Any] = {}
    for p in space:  # dependency order
        if p.name in point and p.active(out):
            out[p.name] = point[p.name]
    return out


def _count_points(params: Sequence[Param], values: Mapping[str, Sequence[Any]], cap: int = MAX_GRID) -> int:
    # Stops early past `cap`, so a huge space costs no more than cap points.
    n = 0
    for _ in _iter_points(params, values, 0, {}):
        n += 1
        if n > cap:
            break
    return n


def _enumerate_points(params: Sequence[Param], values: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(p) for p in _iter_points(params, values, 0, {})]


def _iter_points(params: Sequence[Param], values: Mapping[str, Sequence[Any]], i: int,
                 point: dict[str, Any]) -> Iterable[dict[str, Any]]:
    # Depth-first over params in dependency order; an inactive param adds no branch.
    if i == len(params):
        yield point
        return
    p = params[i]
    if not p.active(point):
        yield from _iter_points(params, values, i + 1, point)
        return
    for v in values[p.name]:
        yield from _iter_points(params, values, i + 1, {**point, p.name: v})


__all__ = ["CPU_METRIC", "FIELD_SECTION", "METRICS", "OBJECTIVES", "Param", "StudyError", "StudySpec", "load_spec",
           "main_error", "parse_spec", "plain_type", "smoke_spec"]
