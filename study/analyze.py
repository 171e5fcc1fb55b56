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
             best/last val/psnr, val/psnr_hold, wall and CPU seconds, node, ..., and every cvae config
             field (a searched one as sampled, null where a conditional one was inactive; the full
             config as JSON in `config`)
    epochs   trial x epoch: every reported metric, plus trial_id, setting, seed
    frames   trial x validation frame: per-frame PSNR at the newest and at the best epoch, and the floor
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import polars as pl

from cvae.config import SECTIONS, Config, ConfigError, field_types
from study.spec import FIELD_SECTION, Param, StudyError, StudySpec, load_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

TABLES_DIR = "tables"
STUDY_FILE = "study.toml"
FINISHED_FILE = "finished.json"
FRAMES_FILE = "psnr_per_frame.json"
CONFIG_FILE = "config.json"
STATUSES: tuple[str, ...] = ("completed", "diverged", "errored", "stopped_early", "running")
SEED = "seed"

# Ray's per-result bookkeeping that is no metric: dropped from the epochs table.
_RAY_DROP = ("config", "date", "pid", "hostname", "node_ip", "checkpoint_dir_name", "should_checkpoint",
             "time_since_restore", "iterations_since_restore", "experiment_tag")
# cvae.train.run's per-epoch metrics in their reporting order (the epochs table's column order).
METRICS: tuple[str, ...] = (
    "epoch", "train/loss", "train/mse", "train/kl", "beta", "tfr", "teacher_forcing", "fast_train",
    "train/sequences", "lr", "train/frames_per_s", "threads", "diverged", "val/psnr", "val/psnr_hold",
    "val/psnr_min", "val/ssim", "val/frames_per_s", "time/val_s", "val/best_psnr", "time/epoch_s", "time/cpu_s")
_BOOL_METRICS = ("fast_train", "diverged", "done")
_INT_METRICS = ("epoch", "training_iteration", "train/sequences", "threads")
# Ray writes NaN/Infinity as bare tokens (Python's json), which is not JSON and which Polars refuses.
_NONFINITE = re.compile(rb"(?<=[:,\[])(\s*)(?:-?Infinity|NaN)(?=\s*[,\]}])")
_TRIAL_DIR = re.compile(r"^(?P<name>.+?)_(?P<id>[0-9a-f]{8}|[0-9a-f]{5}_\d{5})_(?P<n>\d+)(?:_|$)")
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


# -- the study file --------------------------------------------------------------------------------
def read_study(study_dir: str | Path) -> StudyInfo:
    """The study file of a results dir: via load_spec, else the raw TOML tables, else the dir name."""
    study_dir = Path(study_dir)
    path = study_dir / STUDY_FILE
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text:
        try:
            spec = load_spec(path)
            return StudyInfo(spec.name, spec.metric, spec.mode, spec.seeds,
                             tuple(p for p in spec.space if p.kind != "fixed"), text, spec.description, spec,
                             {s: dict(t) for s, t in spec.fixed.items()})
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
    return StudyInfo(str(study.get("name", study_dir.name)), str(study.get("metric", "val/psnr")),
                     mode if mode in ("max", "min") else "max", tuple(int(s) for s in seeds), params, text,
                     study.get("description"), None, fixed)


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
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _dtype(args[0]) if len(args) == 1 else pl.String()
    if origin is Literal or hint is str:
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
                  and ((p / "params.json").is_file() or (p / "result.json").is_file()))


def checkpoints(trial_dir: Path) -> list[Path]:
    """Complete Ray checkpoint dirs of a trial (manifest written last), oldest first."""
    found = [p for p in trial_dir.glob("checkpoint_*") if p.is_dir() and p.name[11:].isdigit()
             and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[11:]))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); ignored", path, e)
        return None


def _params(trial_dir: Path) -> dict[str, Any]:
    raw = _read_json(trial_dir / "params.json") if (trial_dir / "params.json").is_file() else None
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


def _ray_statuses(study_dir: Path) -> dict[str, str]:
    """Trial dir name -> Ray's last saved status (TERMINATED, ERROR, RUNNING, ...)."""
    states = sorted(study_dir.glob("experiment_state-*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    if not states:
        return {}
    raw = _read_json(states[-1])
    out: dict[str, str] = {}
    for entry in (raw or {}).get("trial_data", []) if isinstance(raw, dict) else []:
        try:
            trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            out[Path(trial["relative_logdir"]).name] = str(trial["status"])
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def setting_label(params: Mapping[str, Any], searched: Sequence[str]) -> str:
    """`name=value, ...` of the searched params present (seed excluded): trials of one setting group."""
    parts = [f"{k}={_fmt(params[k])}" for k in searched if params.get(k) is not None]
    return ", ".join(parts) if parts else "default"


# -- the tables ------------------------------------------------------------------------------------
def _meta(study_dir: Path, info: StudyInfo) -> tuple[pl.DataFrame, list[pl.DataFrame], list[pl.DataFrame]]:
    """Per-trial facts from its files, and the raw epoch and frame frames (one loop over trial dirs)."""
    statuses = _ray_statuses(study_dir)
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
        ckpts = checkpoints(d)
        res = read_results(d / "result.json")
        m = _TRIAL_DIR.match(d.name)
        trial_id = (str(res["trial_id"][0]) if "trial_id" in res.columns and res.height
                    else m.group("id") if m else d.name)
        config = _trial_config(ckpts[-1] if ckpts else None, params, info)
        seed = params.get(SEED, config.get("seed"))
        error = (d / "error.txt").read_text(errors="replace").strip() if (d / "error.txt").is_file() else None
        # searched params as sampled (an inactive conditional one is null), the rest as configured
        row = {name: _cell(name, params.get(name) if name in searched else config.get(name)) for name in CONFIG_SCHEMA}
        row["config"] = json.dumps(_nested(config), sort_keys=True)
        row.update(trial_id=trial_id, trial=d.name, trial_number=int(m.group("n")) if m else None,
                   seed=None if seed is None else int(seed), setting=setting_label(params, searched),
                   ray_status=statuses.get(d.name), has_error=error is not None,
                   error=_last_line(error) if error else None,
                   checkpoint=f"{d.name}/{ckpts[-1].name}" if ckpts else None)
        rows.append(row)
        if res.height:
            results.append(res.with_columns(trial_id=pl.lit(trial_id), trial=pl.lit(d.name)))
        curve = next((c / FRAMES_FILE for c in reversed(ckpts) if (c / FRAMES_FILE).is_file()), None)
        if curve is not None:
            frames.append(_frame_rows(curve, trial_id))
    schema = {**CONFIG_SCHEMA, "trial_id": pl.String(), "trial": pl.String(), "trial_number": pl.Int64(),
              "seed": pl.Int64(), "setting": pl.String(), "ray_status": pl.String(), "has_error": pl.Boolean(),
              "error": pl.String(), "checkpoint": pl.String(), "config": pl.String()}
    return pl.DataFrame(rows, schema=schema, strict=False), results, frames


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


def _aggregate(epochs: pl.DataFrame, metric: str) -> pl.DataFrame:
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
        last("time/cpu_s").alias("cpu_s"),
        agg("train/frames_per_s", "mean").alias("train_frames_per_s"),
        (pl.col("diverged").fill_null(False).any() if "diverged" in epochs.columns else pl.lit(False)).alias("diverged"),
        (pl.col("done").fill_null(False).any() if "done" in epochs.columns else pl.lit(False)).alias("done"),
        last(metric).alias("objective"),
        last("hostname", pl.String()).alias("hostname"),
        last("node_ip", pl.String()).alias("node_ip"),
        (pl.col("timestamp").max() if "timestamp" in epochs.columns else pl.lit(None)).cast(pl.Float64).alias("last_report"),
    ]
    return epochs.group_by("trial_id").agg(exprs)


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
    finished = (study_dir / FINISHED_FILE).is_file()
    keep = [c for c in METRICS if c in raw.columns]
    keep += sorted(c for c in raw.columns if c not in _RAY_DROP and c not in keep and c not in ("trial_id", "trial"))
    trials = (
        meta.join(_aggregate(raw, info.metric), on="trial_id", how="left")
        .with_columns(diverged=pl.col("diverged").fill_null(False), done=pl.col("done").fill_null(False),
                      epochs_run=pl.col("epochs_run").fill_null(0))
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
             "best_val_psnr", "best_epoch", "last_val_psnr", "val_psnr_hold", "objective"]
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
    yield from (study_dir / n for n in (STUDY_FILE, FINISHED_FILE))
    yield from study_dir.glob("experiment_state-*.json")
    for d in trial_dirs(study_dir):
        yield d
        yield from (d / n for n in ("params.json", "result.json", "error.txt"))
        yield from checkpoints(d)


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


def summary_by_setting(trials: pl.DataFrame, params: Sequence[str] = ()) -> pl.DataFrame:
    """Best val/psnr per setting over its seeds: n, mean, sd (null if n < 2), min, max, statuses.

    A trial counts when it validated at least once (stopped-early and diverged ones included, as
    their status counts show). Sorted best mean first; `params` columns (if given) come along.
    """
    x = pl.col("best_val_psnr")
    extra = [pl.col(p).drop_nulls().first().alias(p) for p in params if p in trials.columns]
    status = [(pl.col("status") == s).sum().alias(f"n_{s}") for s in STATUSES]
    return (
        trials.group_by("setting")
        .agg(*extra, x.count().alias("n"), x.mean().alias("mean"), x.std(ddof=1).alias("sd"), x.min().alias("min"),
             x.max().alias("max"), pl.len().alias("trials"), pl.col("seed").sort().alias("seeds"), *status)
        .sort(["mean", "setting"], descending=[True, False], nulls_last=True)
    )


__all__ = ["CONFIG_SCHEMA", "STATUSES", "StudyInfo", "Tables", "analyze", "build_tables", "checkpoints",
           "load_tables", "read_results", "read_study", "setting_label", "summary_by_setting", "trial_dirs"]
