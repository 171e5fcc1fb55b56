"""A study's results dir -> three tidy Polars tables: trials, epochs and frames.

`load_tables(study_dir)` is the one call: it reads `<study_dir>/tables/*.parquet` when they are newer
than every file they come from, else rebuilds them with `analyze(study_dir)`. Everything is read
from disk (Ray Tune's own trial dirs), so it works for a finished, a partial or a resumed study,
without Ray running:

    <study>/study.toml                      the study file (searched params, seeds, metric/mode)
    <study>/experiment_state-*.json         Ray's trial statuses (optional)
    <study>/finished.json                   the runner's end marker (optional)
    <study>/<trial>/params.json             the sampled config (+ "seed")
    <study>/<trial>/result.json             one JSON object per epoch (metrics + Ray's keys)
    <study>/<trial>/error.txt               when the trial failed
    <study>/<trial>/checkpoint_NNNNNN/      config.json (full cvae Config), psnr_per_frame.json

Tables (one row per ...):
    trials   trial: trial_id, trial (dir name), trial_number, setting, seed, status, epochs_run,
             best/last val/psnr, val/psnr_hold, wall and CPU seconds, gpus (the GPU fraction Ray reserved,
             0 without) and gpu_s (wall seconds x gpus), node, ..., and every cvae config
             field (a searched one as sampled, null where a conditional one was inactive; the full
             config as JSON in `config`)
    epochs   trial x epoch: every reported metric, plus trial_id, setting, seed
    frames   trial x validation frame: per-frame PSNR at the newest and at the best epoch, and the floor

`ranking(tables, info)` is THE ranking of the study's settings (contract 7): each trial scores the
study metric at its best or its last epoch (`[study] objective`, `trial_objective`), a setting the
mean over its seeds, and a setting that lost a seed ranks below complete ones. best.toml, the
report, the console and what Optuna is told (study.space.SeedRepeater) all read it.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import polars as pl

from cvae.checkpoint import CONFIG_FILE, FRAMES_FILE, MANIFEST_FILE
from cvae.config import SECTIONS, Config, ConfigError, field_types
from study._compat import trial_states
from study.keys import CPU_S, GPU_SHARE, SEED
from study.place import FINISHED, STUDY_COPY, TABLES_DIR, TRIAL_ERROR, TRIAL_PARAMS, TRIAL_RESULTS
from study.spec import FIELD_SECTION, METRICS, OBJECTIVES, Param, StudyError, StudySpec, load_spec, plain_type

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("completed", "diverged", "errored", "stopped_early", "running")

# Ray's per-result bookkeeping that is no metric: dropped from the epochs table.
_RAY_DROP = ("config", "date", "pid", "hostname", "node_ip", "checkpoint_dir_name", "should_checkpoint",
             "time_since_restore", "iterations_since_restore", "experiment_tag")
_CHECKPOINT = "checkpoint_dir_name"  # Tune's result key naming the checkpoint reported with it
_BOOL_METRICS = ("fast_train", "diverged", "done")
_INT_METRICS = ("epoch", "training_iteration", "train/sequences", "threads")
# Ray writes NaN/Infinity as bare tokens (Python's json), which is not JSON and which Polars refuses.
_NONFINITE = re.compile(rb"(?<=[:,\[])(\s*)(?:-?Infinity|NaN)(?=\s*[,\]}])")
_RUNNING = ("RUNNING", "PENDING", "PAUSED")


@dataclass(frozen=True)
class Tables:
    """The three tidy tables of a study (see the module docstring)."""

    trials: pl.DataFrame
    epochs: pl.DataFrame
    frames: pl.DataFrame


@dataclass(frozen=True)
class StudyInfo:
    """What the study file says, read leniently (a results dir outlives its dataset path)."""

    name: str
    metric: str  # the optimised metric, e.g. "val/psnr"
    mode: Literal["max", "min"]
    objective: Literal["best", "last"]  # a trial's score: the metric at its best epoch, or its last
    seeds: tuple[int, ...]
    params: tuple[Param, ...]  # searched [space] parameters (fixed-value ones left out), dependency order
    text: str  # the study file as written ("" if missing)
    description: str | None
    spec: StudySpec | None  # None when load_spec failed (e.g. the dataset path is gone)
    fixed: dict[str, dict[str, Any]]  # the [data]/[model]/[train] tables

    @property
    def searched(self) -> tuple[str, ...]:
        """Names of the searched parameters (seed excluded)."""
        return tuple(p.name for p in self.params)

    @property
    def scored_by(self) -> str:
        """What ranks the settings, in words: e.g. "val/psnr (max) at each trial's best epoch"."""
        return f"{self.metric} ({self.mode}) at each trial's {self.objective} epoch"

    @classmethod
    def of(cls, spec: StudySpec) -> StudyInfo:
        """What a loaded study file says."""
        return cls(spec.name, spec.metric, spec.mode, spec.objective, spec.seeds,
                   tuple(p for p in spec.space if p.kind != "fixed"), spec.raw_text, spec.description, spec,
                   {s: dict(t) for s, t in spec.fixed.items()})


# -- the study file --------------------------------------------------------------------------------
def read_study(study_dir: str | Path) -> StudyInfo:
    """The study file of a results dir: via load_spec, else the raw TOML tables, else the dir name."""
    study_dir = Path(study_dir)
    path = study_dir / STUDY_COPY
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text:
        try:
            return StudyInfo.of(load_spec(path))
        except StudyError as e:
            log.info("%s: not a loadable study (%s); reading its raw tables", path, e)
    try:
        raw = tomllib.loads(text) if text else {}
    except tomllib.TOMLDecodeError as e:
        log.warning("%s: not valid TOML (%s); ignoring it", path, e)
        raw = {}
    study = raw.get("study", {}) if isinstance(raw.get("study"), dict) else {}
    fixed = {s: dict(raw[s]) for s in SECTIONS if isinstance(raw.get(s), dict)}
    seeds = study.get("seeds") or [fixed.get("train", {}).get("seed", 0)]
    space = raw.get("space", {}) if isinstance(raw.get("space"), dict) else {}
    params = tuple(p for p in (_raw_param(k, v) for k, v in space.items()) if p is not None)
    mode = study.get("mode", "max")
    objective = study.get("objective", OBJECTIVES[0])
    return StudyInfo(str(study.get("name", study_dir.name)), str(study.get("metric", "val/psnr")),
                     mode if mode in ("max", "min") else "max", objective if objective in OBJECTIVES else OBJECTIVES[0],
                     tuple(int(s) for s in seeds), params, text, study.get("description"), None, fixed)


def _raw_param(name: str, entry: Any) -> Param | None:
    # Best effort for a study file load_spec refuses: enough for labels and Optuna distributions.
    if not isinstance(entry, dict) or "value" in entry or name not in FIELD_SECTION:
        return None
    section = FIELD_SECTION[name]
    if "choices" in entry and isinstance(entry["choices"], list):
        return Param(name, "categorical", choices=tuple(entry["choices"]), section=section)
    if "low" in entry and "high" in entry:
        ints = all(isinstance(entry[k], int) and not isinstance(entry[k], bool) for k in ("low", "high"))
        kind = entry.get("type", "int" if ints else "float")
        return Param(name, kind if kind in ("int", "float") else "float", low=entry["low"], high=entry["high"],
                     log=bool(entry.get("log", False)), step=entry.get("step"), section=section)
    return None


# -- config columns --------------------------------------------------------------------------------
def _dtype(hint: Any) -> pl.DataType:
    hint = plain_type(hint)
    if typing.get_origin(hint) is Literal or hint is str:
        return pl.String()
    if hint is bool:
        return pl.Boolean()
    if hint is int:
        return pl.Int64()
    if hint is float:
        return pl.Float64()
    return pl.String()  # tuples (milestones) are kept as their JSON text


# Every cvae config field as a column (names are unique across sections), with a fixed dtype.
CONFIG_SCHEMA: dict[str, pl.DataType] = {name: _dtype(hint) for klass in SECTIONS.values()
                                         for name, hint in field_types(klass).items()}


def _cell(name: str, value: Any) -> Any:
    if value is None:
        return None
    dtype = CONFIG_SCHEMA.get(name)
    if isinstance(dtype, pl.String):
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, (list, dict, tuple)):
        return None
    if isinstance(dtype, pl.Float64) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for section in SECTIONS for k, v in (config.get(section) or {}).items() if k in CONFIG_SCHEMA}


def _nested(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {section: {k: v for k, v in flat.items() if FIELD_SECTION.get(k) == section} for section in SECTIONS}


def _trial_config(ckpt: Path | None, params: Mapping[str, Any], info: StudyInfo) -> dict[str, Any]:
    """The trial's full cvae config, flat: the checkpoint's config.json, else study + params + defaults."""
    if ckpt is not None and (ckpt / CONFIG_FILE).is_file():
        try:
            return _flat(json.loads((ckpt / CONFIG_FILE).read_text()))
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable (%s); rebuilding the config from the study file", ckpt / CONFIG_FILE, e)
    if info.spec is not None:
        try:
            return _flat(info.spec.config_for(params).to_dict())
        except (ConfigError, KeyError, TypeError) as e:
            log.info("config of %s from the spec failed (%s); merging by hand", dict(params), e)
    tables = {s: dict(t) for s, t in info.fixed.items()}
    for k, v in params.items():
        if k == SEED:
            tables.setdefault("train", {})["seed"] = v
        elif k in FIELD_SECTION:
            tables.setdefault(FIELD_SECTION[k], {})[k] = v
    try:
        return _flat(Config.from_dict(tables).to_dict())
    except ConfigError:
        defaults = _flat(Config().to_dict())
        return {**defaults, **_flat(tables)}


# -- files of one trial ----------------------------------------------------------------------------
def trial_dirs(study_dir: str | Path) -> list[Path]:
    """The trial dirs of a study (those holding params.json or result.json), in name order."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        return []
    return sorted(p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith((".", TABLES_DIR))
                  and ((p / TRIAL_PARAMS).is_file() or (p / TRIAL_RESULTS).is_file()))


def checkpoints(trial_dir: Path, results: pl.DataFrame) -> list[Path]:
    """The trial's complete checkpoints that Tune still keeps (manifest written last), oldest first,
    as its result rows name them."""
    if _CHECKPOINT not in results.columns:
        return []
    names = results[_CHECKPOINT].drop_nulls().unique(maintain_order=True).to_list()
    return [trial_dir / n for n in names if (trial_dir / n / MANIFEST_FILE).is_file()]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); ignored", path, e)
        return None


def _params(trial_dir: Path) -> dict[str, Any]:
    raw = _read_json(trial_dir / TRIAL_PARAMS) if (trial_dir / TRIAL_PARAMS).is_file() else None
    if not isinstance(raw, dict):
        return {}
    # Only scalar config fields and the seed: the runner may add constants or Ray its own keys.
    return {k: v for k, v in raw.items()
            if (k == SEED or k in FIELD_SECTION) and isinstance(v, (str, int, float, bool))}


def read_results(path: Path) -> pl.DataFrame:
    """One result.json as a DataFrame (NaN/inf -> null, a half-written last line dropped)."""
    data = path.read_bytes() if path.is_file() else b""
    lines = [ln for ln in _NONFINITE.sub(rb"\1null", data).splitlines() if ln.strip()]
    error: Exception | None = None
    # A running trial's last line may be half written: on failure, retry once without it.
    for keep in (lines, lines[:-1]):
        if not keep:
            break
        try:
            df = pl.read_ndjson(io.BytesIO(b"\n".join(keep)), infer_schema_length=None)
            return df.drop([c for c in df.columns if c == "config"])
        except Exception as e:  # noqa: BLE001 - Polars raises several kinds for bad JSON
            error = e
    if lines:
        log.warning("%s: unreadable (%s); ignored", path, error)
    return pl.DataFrame()


def fmt_value(v: Any) -> str:
    """A parameter value as the report and the console show it (floats to 4 significant digits)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def setting_label(params: Mapping[str, Any], searched: Sequence[str]) -> str:
    """`name=value, ...` of the searched params present (seed excluded): trials of one setting group."""
    parts = [f"{k}={fmt_value(params[k])}" for k in searched if params.get(k) is not None]
    return ", ".join(parts) if parts else "default"


# -- the tables ------------------------------------------------------------------------------------
def _meta(study_dir: Path, info: StudyInfo) -> tuple[pl.DataFrame, list[pl.DataFrame], list[pl.DataFrame]]:
    """Per-trial facts from its files, and the raw epoch and frame frames (one loop over trial dirs)."""
    states = trial_states(study_dir)
    searched = info.searched or ()
    rows: list[dict[str, Any]] = []
    results: list[pl.DataFrame] = []
    frames: list[pl.DataFrame] = []
    dirs = trial_dirs(study_dir)
    params_of = {d: _params(d) for d in dirs}
    if not info.params:  # no study file: every sampled key (seed aside) is a searched one
        searched = tuple(dict.fromkeys(k for p in params_of.values() for k in p if k != SEED))
    for d in dirs:
        params = params_of[d]
        res = read_results(d / TRIAL_RESULTS)
        ckpts = checkpoints(d, res)
        state_id, status = states.get(d.name, (d.name, None))
        trial_id = str(res["trial_id"][0]) if "trial_id" in res.columns and res.height else state_id
        config = _trial_config(ckpts[-1] if ckpts else None, params, info)
        seed = params.get(SEED, config.get("seed"))
        error = (d / TRIAL_ERROR).read_text(errors="replace").strip() if (d / TRIAL_ERROR).is_file() else None
        # searched params as sampled (an inactive conditional one is null), the rest as configured
        row = {name: _cell(name, params.get(name) if name in searched else config.get(name)) for name in CONFIG_SCHEMA}
        row["config"] = json.dumps(_nested(config), sort_keys=True)
        row.update(trial_id=trial_id, trial=d.name, started=_started(res),
                   seed=None if seed is None else int(seed), setting=setting_label(params, searched),
                   ray_status=status, has_error=error is not None, error=_last_line(error) if error else None,
                   checkpoint=f"{d.name}/{ckpts[-1].name}" if ckpts else None)
        rows.append(row)
        if res.height:
            results.append(res.with_columns(trial_id=pl.lit(trial_id), trial=pl.lit(d.name)))
        curve = next((c / FRAMES_FILE for c in reversed(ckpts) if (c / FRAMES_FILE).is_file()), None)
        if curve is not None:
            frames.append(_frame_rows(curve, trial_id))
    schema = {**CONFIG_SCHEMA, "trial_id": pl.String(), "trial": pl.String(), "started": pl.Float64(),
              "seed": pl.Int64(), "setting": pl.String(), "ray_status": pl.String(), "has_error": pl.Boolean(),
              "error": pl.String(), "checkpoint": pl.String(), "config": pl.String()}
    meta = pl.DataFrame(rows, schema=schema, strict=False)
    # Trials numbered in the order they started (a pending one, with no result yet, last).
    meta = meta.sort(["started", "trial"], nulls_last=True).with_row_index("trial_number", offset=1)
    return meta.with_columns(pl.col("trial_number").cast(pl.Int64)).drop("started"), results, frames


def _started(results: pl.DataFrame) -> float | None:
    """When the trial started (epoch seconds), from Tune's auto-filled timestamp and time_total_s."""
    if not {"timestamp", "time_total_s"} <= set(results.columns) or not results.height:
        return None
    start = results.select((pl.col("timestamp") - pl.col("time_total_s")).min()).item()
    return None if start is None else float(start)


def _last_line(text: str) -> str:
    # The error's last non-empty line is its message (a traceback ends with it).
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else text[:500]


_FRAME_SCHEMA = {"trial_id": pl.String(), "frame": pl.Int64(), "psnr_final": pl.Float64(),
                 "psnr_best": pl.Float64(), "psnr_hold": pl.Float64(), "epoch": pl.Int64(), "best_epoch": pl.Int64()}


def _frame_rows(path: Path, trial_id: str) -> pl.DataFrame:
    raw = _read_json(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("psnr"), list):
        return pl.DataFrame(schema=_FRAME_SCHEMA)
    n = len(raw["psnr"])

    def col(key: str) -> list[float | None]:
        v = raw.get(key)
        v = list(v) if isinstance(v, list) else []
        return [None if x is None or not math.isfinite(x) else float(x) for x in (v + [None] * n)[:n]]

    return pl.DataFrame({
        "trial_id": [trial_id] * n, "frame": list(range(1, n + 1)), "psnr_final": col("psnr"),
        "psnr_best": col("best_psnr"), "psnr_hold": col("psnr_hold"),
        "epoch": [raw.get("epoch")] * n, "best_epoch": [raw.get("best_epoch")] * n,
    }, schema=_FRAME_SCHEMA)


def _epochs(results: list[pl.DataFrame]) -> pl.DataFrame:
    if not results:
        return pl.DataFrame(schema={"trial_id": pl.String(), "trial": pl.String(), "epoch": pl.Int64()})
    raw = pl.concat(results, how="diagonal_relaxed")
    if "epoch" not in raw.columns:
        raw = raw.with_columns(epoch=pl.col("training_iteration") - 1)
    casts = []
    for c, dtype in raw.schema.items():
        if c in _BOOL_METRICS:
            casts.append(pl.col(c).cast(pl.Boolean, strict=False))
        elif c in _INT_METRICS:
            casts.append(pl.col(c).cast(pl.Int64, strict=False))
        elif dtype.is_numeric() or dtype == pl.Null:
            if c not in ("timestamp", "pid"):
                casts.append(pl.col(c).cast(pl.Float64, strict=False))
    # A trial resumed from a checkpoint re-reports the epochs after it: the newest report wins.
    return (raw.with_columns(casts)
            .unique(subset=["trial_id", "epoch"], keep="last", maintain_order=True)
            .sort(["trial_id", "epoch"]))


def _aggregate(epochs: pl.DataFrame) -> pl.DataFrame:
    """Per-trial summaries of the epochs table (Polars expressions, one group_by)."""

    def last(c: str, dtype: pl.DataType = pl.Float64()) -> pl.Expr:
        if c not in epochs.columns:
            return pl.lit(None, dtype=dtype)
        return pl.col(c).drop_nulls().last().cast(dtype)

    def agg(c: str, how: str) -> pl.Expr:
        if c not in epochs.columns:
            return pl.lit(None, dtype=pl.Float64())
        return getattr(pl.col(c), how)().cast(pl.Float64)

    psnr_ok = "val/psnr" in epochs.columns
    exprs = [
        (pl.col("epoch").max() + 1).alias("epochs_run"),
        agg("val/psnr", "max").alias("best_val_psnr"),
        (pl.col("epoch").sort_by("val/psnr", descending=True, nulls_last=True).first() if psnr_ok
         else pl.lit(None, dtype=pl.Int64())).alias("best_epoch"),
        last("val/psnr").alias("last_val_psnr"),
        last("val/psnr_hold").alias("val_psnr_hold"),
        last("val/ssim").alias("last_val_ssim"),
        agg("time_total_s", "max").alias("wall_s"),
        last(CPU_S).alias("cpu_s"),
        last(GPU_SHARE).fill_null(0.0).alias("gpus"),
        agg("train/frames_per_s", "mean").alias("train_frames_per_s"),
        (pl.col("diverged").fill_null(False).any() if "diverged" in epochs.columns else pl.lit(False)).alias("diverged"),
        (pl.col("done").fill_null(False).any() if "done" in epochs.columns else pl.lit(False)).alias("done"),
        last("hostname", pl.String()).alias("hostname"),
        last("node_ip", pl.String()).alias("node_ip"),
        (pl.col("timestamp").max() if "timestamp" in epochs.columns else pl.lit(None)).cast(pl.Float64).alias("last_report"),
    ]
    # GPU-seconds: the trial's wall time x the GPU fraction Ray reserved for it (0 without GPUs)
    return epochs.group_by("trial_id").agg(exprs).with_columns(gpu_s=pl.col("wall_s") * pl.col("gpus"))


def finite(v: Any) -> bool:
    """A number that is neither NaN nor infinite (a bool is no number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def trial_objective(reports: Iterable[tuple[int, Any]], objective: str, mode: str) -> tuple[float | None, int | None]:
    """A trial's score and the epoch that gave it, from its (epoch, value) reports in order.

    A later report of an epoch replaces an earlier one (a resumed trial re-reports); a value that is
    not a finite number was not measured. "best": the best finite value by `mode`, at the first epoch
    that reached it; "last": the value of the last epoch reported (None if it was not finite).
    (None, None) when nothing counts. Optuna is told the same (study.space.SeedRepeater).
    """
    values = {int(epoch): float(v) if finite(v) else None for epoch, v in reports}
    if not values:
        return None, None
    if objective == "last":
        epoch = max(values)
        return (values[epoch], epoch) if values[epoch] is not None else (None, None)
    measured = [(e, v) for e, v in sorted(values.items()) if v is not None]
    if not measured:
        return None, None
    pick = max if mode == "max" else min
    epoch, value = pick(measured, key=lambda ev: ev[1])  # max/min keep the first of equals
    return value, epoch


_OBJECTIVE_SCHEMA = {"trial_id": pl.String(), "objective": pl.Float64(), "objective_epoch": pl.Int64(),
                     "objective_checkpoint": pl.String()}


def _objectives(epochs: pl.DataFrame, info: StudyInfo, study_dir: Path) -> pl.DataFrame:
    """Per trial: its score (trial_objective of the study metric), the epoch that gave it, and that
    epoch's checkpoint (`<trial>/<checkpoint>`, null if Tune did not keep it)."""
    rows = []
    if epochs.height and info.metric in epochs.columns:
        ckpt = _CHECKPOINT in epochs.columns
        for (trial_id,), g in epochs.filter(pl.col("epoch").is_not_null()).group_by("trial_id", maintain_order=True):
            value, epoch = trial_objective(zip(g["epoch"], g[info.metric]), info.objective, info.mode)
            name = None
            if epoch is not None and ckpt:
                name = g.filter(pl.col("epoch") == epoch)[_CHECKPOINT][0]
            trial = g["trial"][0]
            kept = name is not None and (study_dir / trial / name / MANIFEST_FILE).is_file()
            rows.append({"trial_id": trial_id, "objective": value, "objective_epoch": epoch,
                         "objective_checkpoint": f"{trial}/{name}" if kept else None})
    return pl.DataFrame(rows, schema=_OBJECTIVE_SCHEMA)


def _status(finished: bool) -> pl.Expr:
    c, ray = pl.col, pl.col("ray_status")
    short = c("epochs_run").fill_null(0) < c("epochs")
    return (
        pl.when(c("diverged")).then(pl.lit("diverged"))
        # error.txt stays after a successful retry: Ray's status, when saved, is the judge
        .when((ray == "ERROR") | (ray.is_null() & c("has_error") & short)).then(pl.lit("errored"))
        .when(~short).then(pl.lit("completed"))
        .when(ray.is_in(_RUNNING) & pl.lit(not finished)).then(pl.lit("running"))
        .when((ray == "TERMINATED") | pl.lit(finished) | c("done")).then(pl.lit("stopped_early"))
        .otherwise(pl.lit("running"))
    )


def build_tables(study_dir: str | Path) -> Tables:
    """The three tables of a study dir, built from its files (nothing written)."""
    study_dir = Path(study_dir)
    info = read_study(study_dir)
    meta, results, frame_parts = _meta(study_dir, info)
    raw = _epochs(results)
    finished = (study_dir / FINISHED).is_file()
    keep = [c for c in METRICS if c in raw.columns]
    keep += sorted(c for c in raw.columns if c not in _RAY_DROP and c not in keep and c not in ("trial_id", "trial"))
    trials = (
        meta.join(_aggregate(raw), on="trial_id", how="left").join(_objectives(raw, info, study_dir), on="trial_id", how="left")
        .with_columns(diverged=pl.col("diverged").fill_null(False), done=pl.col("done").fill_null(False),
                      epochs_run=pl.col("epochs_run").fill_null(0), gpus=pl.col("gpus").fill_null(0.0))
        .with_columns(status=_status(finished))
        .sort(["trial_number", "trial"], nulls_last=True)
    )
    group = trials.select("trial_id", "setting", "seed")
    epochs = (raw.select("trial_id", *keep).join(group, on="trial_id", how="left")
              .select("trial_id", "setting", "seed", *keep)
              if raw.height else pl.DataFrame(schema={"trial_id": pl.String(), "setting": pl.String(),
                                                      "seed": pl.Int64(), "epoch": pl.Int64()}))
    frames = (pl.concat(frame_parts) if frame_parts else pl.DataFrame(schema=_FRAME_SCHEMA))
    frames = (frames.join(group, on="trial_id", how="left")
              .select("trial_id", "setting", "seed", "frame", "psnr_final", "psnr_best", "psnr_hold",
                      "epoch", "best_epoch"))
    first = ["trial_id", "trial", "trial_number", "setting", "seed", "status", "epochs_run", "epochs",
             "objective", "objective_epoch", "objective_checkpoint", "best_val_psnr", "best_epoch", "last_val_psnr",
             "val_psnr_hold"]
    trials = trials.select(first + [c for c in trials.columns if c not in first])
    return Tables(trials=trials, epochs=epochs, frames=frames)


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.write_parquet(tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file


def analyze(study_dir: str | Path) -> Tables:
    """Build the tables from a study dir's files and write them to `<study_dir>/tables/*.parquet`."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f"{study_dir}: no such study results dir")
    tables = build_tables(study_dir)
    out = study_dir / TABLES_DIR
    out.mkdir(exist_ok=True)
    for name in ("trials", "epochs", "frames"):
        _write_parquet(getattr(tables, name), out / f"{name}.parquet")
    log.info("%s: %d trials, %d epoch rows, %d frame rows -> %s", study_dir, tables.trials.height,
             tables.epochs.height, tables.frames.height, out)
    return tables


def _sources(study_dir: Path) -> Iterable[Path]:
    yield from (study_dir / n for n in (STUDY_COPY, FINISHED))
    yield from study_dir.glob("experiment_state-*.json")
    for d in trial_dirs(study_dir):
        yield d
        yield from (d / n for n in (TRIAL_PARAMS, TRIAL_RESULTS, TRIAL_ERROR))
        yield from (p for p in d.iterdir() if p.is_dir())  # its checkpoints


def load_tables(study_dir: str | Path) -> Tables:
    """The study's tables: read from tables/*.parquet if newer than every source file, else analyze()."""
    study_dir = Path(study_dir)
    paths = [study_dir / TABLES_DIR / f"{n}.parquet" for n in ("trials", "epochs", "frames")]
    if all(p.is_file() for p in paths):
        built = min(p.stat().st_mtime for p in paths)
        newest = max((p.stat().st_mtime for p in _sources(study_dir) if p.exists()), default=0.0)
        if newest <= built:
            return Tables(*(pl.read_parquet(p) for p in paths))
    return analyze(study_dir)


def ranking(tables: Tables, info: StudyInfo) -> pl.DataFrame:
    """THE ranking of the study's settings (contract 7), best first: one row per setting.

    A trial scores its `objective` (trial_objective of the study metric); a setting scores the mean
    over its seeds that have a score. A setting that lost a seed (an ended trial without a score:
    it diverged or failed before measuring, or for "last", ended on NaN) ranks below every setting
    that lost none; a setting with no score at all ranks last. Columns: rank, setting, the searched
    parameters, n (seeds scored), mean, sd (null if n < 2), min, max, trials, lost, complete, seeds,
    n_<status> counts, and the setting's best-scoring trial: best_trial (its folder), best_trial_id,
    best_seed, best_value, best_epoch (the epoch its score comes from) and best_checkpoint (that
    epoch's checkpoint, `<trial>/<checkpoint>`, null if Tune did not keep it).
    """
    t = tables.trials
    x = pl.col("objective")
    desc = info.mode == "max"
    lost = x.is_null() & (pl.col("status") != "running")
    params = [pl.col(p).drop_nulls().first().alias(p) for p in info.searched if p in t.columns]
    status = [(pl.col("status") == s).sum().alias(f"n_{s}") for s in STATUSES]
    best = (t.filter(x.is_not_null()).sort(["objective", "trial_number"], descending=[desc, False])
            .group_by("setting", maintain_order=True).first()
            .select("setting", best_trial="trial", best_trial_id="trial_id", best_seed="seed", best_value="objective",
                    best_epoch="objective_epoch", best_checkpoint="objective_checkpoint"))
    return (
        t.group_by("setting")
        .agg(*params, x.count().alias("n"), x.mean().alias("mean"), x.std(ddof=1).alias("sd"), x.min().alias("min"),
             x.max().alias("max"), pl.len().alias("trials"), lost.sum().alias("lost"),
             pl.col("seed").sort().alias("seeds"), *status)
        .join(best, on="setting", how="left")
        .with_columns(complete=pl.col("lost") == 0, _scored=pl.col("mean").is_not_null())
        .sort(["_scored", "complete", "mean", "setting"], descending=[True, True, desc, False], nulls_last=True)
        .drop("_scored")
        .with_row_index("rank", offset=1)
    )


def winner(ranked: pl.DataFrame) -> dict[str, Any] | None:
    """The ranking's first setting, if it has a score (None before any trial measured one)."""
    if not ranked.height or ranked["mean"][0] is None:
        return None
    return ranked.row(0, named=True)


__all__ = ["CONFIG_SCHEMA", "STATUSES", "StudyInfo", "Tables", "analyze", "build_tables", "checkpoints", "finite", "fmt_value",
           "load_tables", "ranking", "read_results", "read_study", "setting_label", "trial_dirs", "trial_objective",
           "winner"]
