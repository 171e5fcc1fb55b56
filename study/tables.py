"""A study's results dir -> three tidy Polars tables: trials, epochs and frames.

`load_tables(study_dir)` is the one call: it reads `<study_dir>/tables/*.parquet` when they are newer
than every file they come from, else rebuilds them with `analyze(study_dir)`. Everything is read
from disk (Ray Tune's own trial dirs), so it works for a finished, a partial or a resumed study,
without Ray running: the study file (study.analyze.read_study), the trial folders (study.results) and
finished.json.

Tables (one row per ...):
    trials   trial: trial_id, trial (dir name), trial_number, setting, seed, status, epochs_run,
             best/last val/psnr, val/psnr_hold, wall and CPU seconds, gpus (the GPU fraction Ray reserved,
             0 without) and gpu_s (wall seconds x gpus), node, ..., and every cvae config
             field (a searched one as sampled, null where a conditional one was inactive; the full
             config as JSON in `config`)
    epochs   trial x epoch: every reported metric, plus trial_id, setting, seed
    frames   trial x validation frame: per-frame PSNR at the newest and at the best epoch, and the floor

`ranking(tables, info)` is THE ranking of the study's settings (docs/ARCHITECTURE.md, contract 7): each trial scores the
study metric at its best or its last epoch (`[study] objective`, `study.ranking.trial_objective`), a setting the
mean over its seeds, and a setting that lost a seed ranks below complete ones. best.toml, the
report, the console and what Optuna is told (study.space.SeedRepeater) all read it.
"""
from __future__ import annotations

import json
import logging
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import polars as pl

from cvae.checkpoint import CONFIG_FILE, FRAMES_FILE, MANIFEST_FILE
from cvae.config import SECTIONS, Config, ConfigError, field_types
from cvae.files import atomic_write
from study._compat import trial_states
from study.analyze import StudyInfo, read_study
from study.keys import CPU_S, GPU_SHARE, SEED
from study.place import FINISHED, TABLES_DIR, TRIAL_ERROR, TRIAL_RESULTS
from study.race import contenders, race_arms
from study.ranking import fmt_value, setting_label, sort_key, trial_objective
from study.results import (CHECKPOINT_KEY, FRAME_SCHEMA, checkpoints, frame_rows, last_line, read_results, sources,
                           trial_dirs, trial_params, trial_start)
from study.spec import FIELD_SECTION, METRICS, plain_type

log = logging.getLogger(__name__)


STATUSES: tuple[str, ...] = ("completed", "diverged", "errored", "stopped_early", "running")


# Ray's per-result bookkeeping that is no metric: dropped from the epochs table.
_RAY_DROP = ("config", "date", "pid", "hostname", "node_ip", "checkpoint_dir_name", "should_checkpoint",
             "time_since_restore", "iterations_since_restore", "experiment_tag")


_BOOL_METRICS = ("fast_train", "diverged", "done")


_INT_METRICS = ("epoch", "training_iteration", "train/sequences", "threads")


_RUNNING = ("RUNNING", "PENDING", "PAUSED")


@dataclass(frozen=True)
class Tables:
    """The three tidy tables of a study (see the module docstring)."""

    trials: pl.DataFrame
    epochs: pl.DataFrame
    frames: pl.DataFrame


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


def _meta(study_dir: Path, info: StudyInfo) -> tuple[pl.DataFrame, list[pl.DataFrame], list[pl.DataFrame]]:
    """Per-trial facts from its files, and the raw epoch and frame frames (one loop over trial dirs)."""
    states = trial_states(study_dir)
    searched = info.searched or ()
    rows: list[dict[str, Any]] = []
    results: list[pl.DataFrame] = []
    frames: list[pl.DataFrame] = []
    dirs = trial_dirs(study_dir)
    params_of = {d: trial_params(d) for d in dirs}
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
        row.update(trial_id=trial_id, trial=d.name, started=trial_start(res),
                   seed=None if seed is None else int(seed), setting=setting_label(params, searched),
                   ray_status=status, has_error=error is not None, error=last_line(error) if error else None,
                   checkpoint=f"{d.name}/{ckpts[-1].name}" if ckpts else None)
        rows.append(row)
        if res.height:
            results.append(res.with_columns(trial_id=pl.lit(trial_id), trial=pl.lit(d.name)))
        curve = next((c / FRAMES_FILE for c in reversed(ckpts) if (c / FRAMES_FILE).is_file()), None)
        if curve is not None:
            frames.append(frame_rows(curve, trial_id))
    schema = {**CONFIG_SCHEMA, "trial_id": pl.String(), "trial": pl.String(), "started": pl.Float64(),
              "seed": pl.Int64(), "setting": pl.String(), "ray_status": pl.String(), "has_error": pl.Boolean(),
              "error": pl.String(), "checkpoint": pl.String(), "config": pl.String()}
    meta = pl.DataFrame(rows, schema=schema, strict=False)
    # Trials numbered in the order they started (a pending one, with no result yet, last).
    meta = meta.sort(["started", "trial"], nulls_last=True).with_row_index("trial_number", offset=1)
    return meta.with_columns(pl.col("trial_number").cast(pl.Int64)).drop("started"), results, frames


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
         else pl.lit(None, dtype=pl.Int64())).alias("best_val_psnr_epoch"),
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


_OBJECTIVE_SCHEMA = {"trial_id": pl.String(), "objective": pl.Float64(), "objective_epoch": pl.Int64(),
                     "objective_checkpoint": pl.String()}


def _objectives(epochs: pl.DataFrame, info: StudyInfo, study_dir: Path) -> pl.DataFrame:
    """Per trial: its score (trial_objective of the study metric), the epoch that gave it, and that
    epoch's checkpoint (`<trial>/<checkpoint>`, null if Tune did not keep it)."""
    rows = []
    if epochs.height and info.metric in epochs.columns:
        ckpt = CHECKPOINT_KEY in epochs.columns
        for (trial_id,), g in epochs.filter(pl.col("epoch").is_not_null()).group_by("trial_id", maintain_order=True):
            value, epoch = trial_objective(zip(g["epoch"], g[info.metric]), info.objective, info.mode)
            name = None
            if epoch is not None and ckpt:
                name = g.filter(pl.col("epoch") == epoch)[CHECKPOINT_KEY][0]
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
    frames = (pl.concat(frame_parts) if frame_parts else pl.DataFrame(schema=FRAME_SCHEMA))
    frames = (frames.join(group, on="trial_id", how="left")
              .select("trial_id", "setting", "seed", "frame", "psnr_final", "psnr_best", "psnr_hold",
                      "epoch", "best_epoch"))
    first = ["trial_id", "trial", "trial_number", "setting", "seed", "status", "epochs_run", "epochs",
             "objective", "objective_epoch", "objective_checkpoint", "best_val_psnr", "best_val_psnr_epoch", "last_val_psnr",
             "val_psnr_hold"]
    trials = trials.select(first + [c for c in trials.columns if c not in first])
    return Tables(trials=trials, epochs=epochs, frames=frames)


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    atomic_write(path, df.write_parquet)  # a concurrent reader never sees half a file


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


def load_tables(study_dir: str | Path) -> Tables:
    """The study's tables: read from tables/*.parquet if newer than every source file, else analyze()."""
    study_dir = Path(study_dir)
    paths = [study_dir / TABLES_DIR / f"{n}.parquet" for n in ("trials", "epochs", "frames")]
    if all(p.is_file() for p in paths):
        built = min(p.stat().st_mtime for p in paths)
        newest = max((p.stat().st_mtime for p in sources(study_dir) if p.exists()), default=0.0)
        if newest <= built:
            return Tables(*(pl.read_parquet(p) for p in paths))
    return analyze(study_dir)


def ranking(tables: Tables, info: StudyInfo) -> pl.DataFrame:
    """THE ranking of the study's settings (docs/ARCHITECTURE.md, contract 7), best first: one row per setting.

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
        .with_columns(complete=pl.col("lost") == 0)
        .pipe(_ranked, info.mode, _confirmed(t, info))
        .with_row_index("rank", offset=1)
    )


def trial_arms(trials: pl.DataFrame) -> dict[str, dict[int, float | None]]:
    """setting -> seed -> score of the ended trials (study.race's arms; running ones left out)."""
    if not trials.height or "objective" not in trials.columns:
        return {}
    ended = trials.filter(pl.col("status") != "running")
    return race_arms(ended.select("setting", "seed", "objective").iter_rows())


def _confirmed(trials: pl.DataFrame, info: StudyInfo) -> set[str] | None:
    """The settings of a confirmation race (study.race.contenders), None in any other study."""
    rule = info.race_rule
    if rule is None or info.race_top is None or not trials.height:
        return None
    return set(contenders(trial_arms(trials), rule, info.race_top))


def _ranked(agg: pl.DataFrame, mode: str, racing: set[str] | None) -> pl.DataFrame:
    # the order is study.ranking.sort_key's, the one rule the seed race's leader follows too
    keys = [sort_key(m, lost, s, mode, racing is None or s in racing)
            for m, lost, s in agg.select("mean", "lost", "setting").iter_rows()]
    return agg[sorted(range(agg.height), key=keys.__getitem__)] if agg.height else agg


def winner(ranked: pl.DataFrame) -> dict[str, Any] | None:
    """The ranking's first setting, if it has a score (None before any trial measured one)."""
    if not ranked.height or ranked["mean"][0] is None:
        return None
    return ranked.row(0, named=True)


__all__ = ["CONFIG_SCHEMA", "STATUSES", "Tables", "analyze", "build_tables", "fmt_value", "load_tables", "ranking",
           "setting_label", "trial_arms", "winner"]
