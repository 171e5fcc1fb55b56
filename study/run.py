"""Run a study: `python -m study.run STUDY.toml [--resume | --fresh] [--address ADDR] [--max-concurrent N]
[--storage PATH_OR_URI] [--smoke-test]`.

The TOML is parsed and checked (study.spec) and its dataset loaded before Ray starts: a bad file
exits with code 2 and touches nothing under results/. Then a local Ray (dashboard on 127.0.0.1,
token auth on) is started, or an existing cluster joined, and the study runs as a Ray Tune
experiment driven by Optuna (study.space) over the trainable study.trainable.train_cvae.

results/<study>/ holds Ray Tune's experiment (one folder per trial: params.json, result.json,
progress.csv, checkpoint_NNNNNN/ with psnr_per_frame.json), a copy of the study file (study.toml),
the Optuna study (optuna.db), and once every trial has ended finished.json, best.toml (the best
configuration as a single-run config) and report.html (if study.report is available).
--storage may also be a URI pyarrow understands (s3://bucket/prefix, ...): see study.storage.

Re-running a study: unfinished -> resumed (Tuner.restore, searcher state included); finished ->
refused unless --fresh, which moves the old folder aside as <name>.old-<timestamp>.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import polars as pl

from cvae.config import ConfigError
from cvae.data import Dataset, DatasetError, clear_cache, load_dataset
from study.analyze import StudyInfo, Tables, analyze, finite, fmt_value, ranking, read_study, winner
from study.spec import SMOKE_TRIALS, StudyError, StudySpec, load_spec, main_error, smoke_spec
from study.storage import RemoteStorage, StorageError, is_uri, open_storage

log = logging.getLogger(__name__)

STUDY_COPY = "study.toml"  # the study file's text, as first started
OPTUNA_DB = "optuna.db"  # Optuna's RDB storage (sqlite): optuna.load_study(study_name=<name>, storage=...)
FINISHED = "finished.json"  # written when every trial has ended: the study is complete
BEST = "best.toml"  # the best configuration as a single-run config for `python -m cvae.train`
TUNER_STATE = "tuner.pkl"  # Ray Tune's restorable experiment marker
REMOTE_SYNC_S = 10  # experiment-state upload period for a URI study (Tune's default is 300 s)
MIN_FREE_BYTES = 64 * 2**20  # free space --storage must have before a study starts
# Metrics shown in the live progress table (column title -> metric).
TABLE_METRICS: dict[str, str] = {"epoch": "epoch", "val/psnr": "val/psnr", "val/psnr_hold": "hold",
                                 "train/loss": "loss", "diverged": "diverged"}


class StudyRunError(RuntimeError):
    """A problem with where or how to run the study (exit code 2): the message says what to do."""


# -- the study's state on disk -------------------------------------------------------------------
def study_state(exp_dir: Path) -> str:
    """What exp_dir holds: "new" (nothing), "finished" (finished.json), "unfinished" (a restorable
    Tune experiment without finished.json), "stale" (a start that never created the experiment)
    or "foreign" (files this tool did not write)."""
    if not exp_dir.exists():
        return state_of(None)
    if not exp_dir.is_dir():
        return "foreign"
    return state_of({p.name for p in exp_dir.iterdir()})


def state_of(names: set[str] | None) -> str:
    """study_state from the entry names of a study folder (None: no such folder)."""
    if not names:
        return "new"
    if FINISHED in names:
        return "finished"
    if TUNER_STATE in names:
        return "unfinished"
    if names <= {STUDY_COPY, OPTUNA_DB}:
        return "stale"
    return "foreign"


def move_aside(exp_dir: Path) -> Path:
    """Rename exp_dir to <name>.old-<timestamp> (never deletes) and return the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = exp_dir.with_name(f"{exp_dir.name}.old-{stamp}")
    n = 1
    while aside.exists():
        aside = exp_dir.with_name(f"{exp_dir.name}.old-{stamp}-{n}")
        n += 1
    exp_dir.rename(aside)
    return aside


def storage_problem(storage: Path) -> str | None:
    """Why results cannot be written under `storage` (creating it if needed), or None."""
    existing = storage
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        storage.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=storage, prefix=".write-test-"):
            pass
    except OSError as e:
        return f"cannot write there ({e.strerror or e})"
    free = shutil.disk_usage(storage).free
    if free < MIN_FREE_BYTES:
        # Checkpoints land there every epoch: a full disk mid-study fails trials one by one.
        return (f"only {free / 2**20:.1f} MB free on {storage} (a study needs at least "
                f"{MIN_FREE_BYTES / 2**20:.0f} MB for its checkpoints); free some space or choose another --storage")
    return None


def _same_study(copy_text: str | None, spec: StudySpec) -> bool:
    # Compare parsed TOML, so edited comments or layout do not count as a change.
    try:
        old = tomllib.loads(copy_text) if copy_text is not None else None
    except tomllib.TOMLDecodeError:
        old = None
    if old is None:
        return True  # no copy to compare with (an older layout): trust the user
    return old == tomllib.loads(spec.raw_text)


@dataclass
class Place:
    """Where one study's results live: a local folder, or a URI with a local mirror (study.storage).

    exp_dir is the folder the driver reads and writes (the study folder itself, or the mirror)."""

    exp_dir: Path
    remote: RemoteStorage | None = None

    @property
    def name(self) -> str:
        return self.exp_dir.name

    def shown(self) -> str:
        return self.remote.show(self.name) if self.remote else str(self.exp_dir)

    def state(self) -> str:
        return state_of(self.remote.names(self.name)) if self.remote else study_state(self.exp_dir)

    def move_aside(self) -> str:
        if self.remote is None:
            return str(move_aside(self.exp_dir))
        aside = self.remote.move_aside(self.name)
        shutil.rmtree(self.exp_dir, ignore_errors=True)  # the mirror is only a cache of the URI
        return aside

    def study_copy(self) -> str | None:
        """The text of the study file the results were started with, if any."""
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if self.remote:
                return self.remote.read_text(self.name, STUDY_COPY)
            return (self.exp_dir / STUDY_COPY).read_text(encoding="utf-8")
        return None

    def prepare(self) -> None:
        """Make exp_dir ready: for a URI, a fresh (empty) mirror."""
        if self.remote is not None:
            shutil.rmtree(self.exp_dir, ignore_errors=True)  # the mirror is only a cache of the URI
        self.exp_dir.mkdir(parents=True, exist_ok=True)

    def push(self, *files: str) -> None:
        """Upload these files of exp_dir to the URI (nothing for a local study)."""
        if self.remote is None:
            return
        for f in files:
            path = self.exp_dir / f
            if path.is_file():
                self.remote.upload(path, self.name)

    def pull(self) -> None:
        """Copy the whole study from the URI into the mirror (nothing for a local study)."""
        if self.remote is not None:
            self.remote.download(self.name, self.exp_dir)

    def location(self, local: Path) -> str:
        """A path inside exp_dir as the user should look for it (on the URI for a remote study)."""
        if self.remote is None:
            return str(local)
        with contextlib.suppress(ValueError):
            return self.remote.show(self.name, *local.relative_to(self.exp_dir).parts)
        return str(local)

    def tune_storage(self) -> dict[str, Any]:
        """RunConfig's storage arguments."""
        if self.remote is None:
            return {"storage_path": str(self.exp_dir.parent)}
        return {"storage_path": self.remote.root, "storage_filesystem": self.remote.fs}

    def tune_path(self) -> str:
        return self.remote.path(self.name) if self.remote else str(self.exp_dir)


# -- the best configuration: THE ranking's first setting ------------------------------------------
def _per_seed(best: Mapping[str, Any], tables: Tables) -> list[tuple[int, float]]:
    scored = tables.trials.filter((pl.col("setting") == best["setting"]) & pl.col("objective").is_not_null())
    return sorted((int(seed), value) for seed, value in scored.select("seed", "objective").iter_rows())


def _epoch_row(tables: Tables, trial_id: str, epoch: int | None) -> dict[str, Any]:
    rows = tables.epochs.filter((pl.col("trial_id") == trial_id) & (pl.col("epoch") == epoch))
    return rows.row(0, named=True) if rows.height else {}


def _scored_by(info: StudyInfo) -> str:
    return f"{info.metric} ({info.mode}) at each trial's {info.objective} epoch"


def write_best_toml(best: Mapping[str, Any], tables: Tables, info: StudyInfo, exp_dir: Path,
                    where: Callable[[Path], str] = str) -> Path:
    """results/<study>/best.toml: the ranking's first setting as a `python -m cvae.train --config`
    file: the config its best-scoring trial ran, and the checkpoint of the epoch that scored."""
    import tomli_w

    trial = tables.trials.filter(pl.col("trial") == best["best_trial"]).row(0, named=True)
    config = json.loads(trial["config"])
    config.get("train", {}).pop("threads", None)  # a single run uses the CPUs of wherever it runs
    hold = _epoch_row(tables, trial["trial_id"], best["best_epoch"]).get("val/psnr_hold")
    per_seed = _per_seed(best, tables)
    lines = [f"# Best configuration of study {info.name!r} by {_scored_by(info)}: {best['setting']}.",
             f"# {info.metric} {best['best_value']:.4g} at epoch {best['best_epoch']} of trial {best['best_trial']}"
             + (f" (val/psnr_hold {hold:.4g} for reference)" if finite(hold) else "")]
    if len(per_seed) > 1:
        lines.append(f"# Ranked by the mean over its {len(per_seed)} seeded trials: {best['mean']:.4g} "
                     f"({', '.join(f'seed {s}: {v:.4g}' for s, v in per_seed)}); train.seed is the best one's.")
    ckpt = best["best_checkpoint"]
    lines.append(f"# Best checkpoint: {where(exp_dir / ckpt) if ckpt else '(not kept)'}")
    lines.append(f"# Rerun: python -m cvae.train --config {exp_dir / BEST}")
    path = exp_dir / BEST
    path.write_text("\n".join(lines) + "\n\n" + tomli_w.dumps(config), encoding="utf-8")
    return path


def print_best(best: Mapping[str, Any] | None, tables: Tables, info: StudyInfo, exp_dir: Path,
               best_toml: Path | None, where: Callable[[Path], str] = str) -> None:
    """The console's last lines: the trials, and the ranking's first setting with its floor."""
    counts = {s: n for s, n in tables.trials.group_by("status").len().iter_rows()}
    n_div, n_err = counts.get("diverged", 0), counts.get("errored", 0)
    print(f"\n{tables.trials.height} trials in {exp_dir}" + (f" ({n_div} diverged)" if n_div else "")
          + (f" ({n_err} failed)" if n_err else ""))
    if best is None:
        print(f"no trial reported a finite {info.metric}: no best configuration")
        return
    shown = ", ".join(f"{p} = {fmt_value(best[p])}" for p in info.searched if best.get(p) is not None)
    print(f"best configuration ({_scored_by(info)}): {shown or '(the fixed values: nothing searched)'}")
    per_seed = _per_seed(best, tables)
    if len(per_seed) > 1:
        seeds = ", ".join(f"seed {s}: {v:.2f}" for s, v in per_seed)
        print(f"  {info.metric} {best['mean']:.4g} = mean over its {len(per_seed)} seeded trials ({seeds}); "
              f"ranked by that mean, not by one lucky seed")
    else:
        print(f"  {info.metric} {best['best_value']:.4g} at epoch {best['best_epoch']}")
    row = _epoch_row(tables, best["best_trial_id"], best["best_epoch"])
    if finite(row.get("val/psnr_hold")):
        print(f"  val/psnr_hold {row['val/psnr_hold']:.2f} dB (repeating frame 0: the floor to beat), val/psnr "
              f"{row.get('val/psnr') or math.nan:.2f} dB at that epoch")
    ckpt = best["best_checkpoint"]
    print(f"  trial: {where(exp_dir / best['best_trial'])}")
    print(f"  checkpoint: {where(exp_dir / ckpt) if ckpt else '(not kept)'}")
    if best_toml is not None:
        print(f"  rerun it alone: python -m cvae.train --config {best_toml}")


def conclude(exp_dir: Path, where: Callable[[Path], str] = str) -> dict[str, Any] | None:
    """The end of a study, from its results on disk: THE ranking -> best.toml and the console lines."""
    info = read_study(exp_dir)
    tables = analyze(exp_dir)
    best = winner(ranking(tables, info))
    best_toml = write_best_toml(best, tables, info, exp_dir, where) if best is not None else None
    print_best(best, tables, info, exp_dir, best_toml, where)
    return best


# -- the report (written by study.report, if present) --------------------------------------------
def build_report(exp_dir: Path) -> Path | None:
    """study.report.build_report(exp_dir), or None with a warning: a report never fails a study."""
    try:
        from study.report import build_report as build

        return Path(build(exp_dir))
    except Exception as e:  # noqa: BLE001 - any failure only costs the report; the results are intact
        log.warning("building the report failed (%s: %s); the results are intact", type(e).__name__, e)
        return None


# -- Ray ------------------------------------------------------------------------------------------
def start_ray(address: str | None, cpus_per_trial: float) -> Any:
    """Join `address` (or RAY_ADDRESS), else start a local Ray with the dashboard on 127.0.0.1 and
    token authentication on (the Ray default for local clusters). Prints how to reach it."""
    import ray
    from cvae.train import available_cpus

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ctx = ray.init(address=address)
        where = f"joined the Ray cluster at {address}"
    else:
        # "local": a new instance even if some `ray start` cluster runs on this machine.
        ctx = ray.init(address="local", num_cpus=available_cpus(), include_dashboard=True,
                       dashboard_host="127.0.0.1")
        where = "started a local Ray"
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < cpus_per_trial:
        ray.shutdown()
        raise StudyRunError(f"the Ray cluster has {cpus:g} CPUs, fewer than study.cpus_per_trial = "
                            f"{cpus_per_trial:g}: no trial could ever start")
    url = getattr(ctx, "dashboard_url", None)
    print(f"{where} ({cpus:g} CPUs)")
    if url:
        print(f"Ray dashboard: http://{url}")
        mode = os.environ.get("RAY_AUTH_MODE", "").lower()
        if mode == "disabled":
            print("  token authentication is OFF (RAY_AUTH_MODE=disabled): anyone who reaches that port can run code")
        elif address and mode != "token":
            print("  if the cluster uses token authentication, `ray get-auth-token` prints the token the dashboard asks for")
        else:
            print("  token authentication is on: `ray get-auth-token` prints the token the dashboard asks for")
        print("  the dashboard has no Tune tab: the study shows as the driver job, its trial actors "
              "(ImplicitFunc) and their logs (one line per epoch); per-trial views are the progress "
              "table below and the report")
    return ctx


def _progress_reporter(spec: StudySpec) -> Any:
    from ray.tune import CLIReporter

    params = {p.name: p.name for p in spec.space if p.kind != "fixed"}
    if len(spec.seeds) > 1:
        params["seed"] = "seed"
    # Ray's "current best trial" line looks every parameter column up in the best trial's config and
    # raises KeyError for a conditional parameter that trial lacks: no metric (so no such line) then.
    ranked = {} if any(p.when for p in spec.space) else {"metric": spec.metric, "mode": spec.mode, "sort_by_metric": True}
    return CLIReporter(metric_columns=dict(TABLE_METRICS), parameter_columns=params or None,
                       max_report_frequency=10, **ranked)


def _checkpoint_config(spec: StudySpec) -> Any:
    """Two checkpoints per trial, always including the one its score comes from (best.toml and the
    report's frames name it): the best two by the metric, or the newest two (objective "last")."""
    from ray import tune

    if spec.objective == "last":
        return tune.CheckpointConfig(num_to_keep=2)
    return tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=spec.metric, checkpoint_score_order=spec.mode)


def run_study(spec: StudySpec, place: Place, dataset: Dataset | None, restore: bool) -> Any:
    """Fit a new Tune experiment for spec at `place` (or restore the one there) and return Tune's
    ResultGrid."""
    from ray import tune

    from study.report import ReportCallback
    from study.space import make_scheduler, make_searcher, sqlite_storage
    from study.trainable import train_cvae

    trainable = tune.with_resources(tune.with_parameters(train_cvae, spec=spec, dataset=dataset),
                                    {"cpu": spec.cpus_per_trial})
    exp_dir = place.exp_dir
    # rebuilds report.html as trials end (logs, never raises); for a URI study the trials' results
    # are on the URI: the report is built once, at the end
    hooks = [ReportCallback(exp_dir)] if place.remote is None else []
    if restore:
        # Finished trials stay as they are; interrupted ones continue from their last checkpoint.
        # Errored ones already used their FailureConfig retries: they stay recorded as failed.
        tuner = tune.Tuner.restore(place.tune_path(), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False,
                                   storage_filesystem=place.remote.fs if place.remote else None)
        run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
        if run_config is not None:  # the pickled hooks may point at the folder's old place
            run_config.callbacks = hooks
        return tuner.fit()
    # A URI study keeps its Optuna study in memory, so that Tune's saved searcher state (on the URI,
    # what a resume reads) is its only copy and can never disagree with a separately uploaded
    # sqlite file; optuna.db is exported from that state at the end (export_searcher_study).
    searcher = make_searcher(spec, sqlite_storage(exp_dir / OPTUNA_DB) if place.remote is None else None)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(spec), num_samples=spec.num_trials,
                                    # one worker process per concurrent slot, kept across trials: a
                                    # trial then skips process start, imports and the dataset fetch
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=spec.name,
            **place.tune_storage(),
            # Tune uploads its experiment state (what a resume reads) at most every sync_period;
            # its default 300 s would let a killed driver of a URI study lose minutes of progress.
            sync_config=tune.SyncConfig(sync_period=REMOTE_SYNC_S) if place.remote else None,
            checkpoint_config=_checkpoint_config(spec),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            progress_reporter=_progress_reporter(spec),
            verbose=1,
            callbacks=hooks,
        ),
    )
    return tuner.fit()


# -- the command ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.run", description="Run a TOML study as a Ray Tune + Optuna search.")
    p.add_argument("study", help="the study file, e.g. search_spaces/kl.toml")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="resume an unfinished study (error if there is none)")
    again.add_argument("--fresh", action="store_true",
                       help="move existing results aside (<name>.old-<timestamp>) and start over")
    p.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="trials at once (overrides study.max_concurrent)")
    p.add_argument("--storage", default="results", metavar="PATH_OR_URI",
                   help="results folder, or a URI pyarrow understands (s3://bucket/prefix, gs://..., file://...); "
                        "the study goes to <storage>/<name>/ (default: results)")
    p.add_argument("--smoke-test", action="store_true",
                   help=f"a seconds-long version: {SMOKE_TRIALS} trials of 2 short epochs, saved as <name>-smoke")
    return p


def _prepare(args: argparse.Namespace) -> tuple[StudySpec, Dataset | None]:
    spec = load_spec(args.study)
    if args.smoke_test:
        spec = smoke_spec(spec)
    if args.max_concurrent is not None:
        if args.max_concurrent < 1:
            raise StudyError(args.study, "--max-concurrent", f"must be >= 1, got {args.max_concurrent}")
        spec = dataclasses.replace(spec, max_concurrent=args.max_concurrent)
    # The dataset is checked (cvae.data: the lab's layout, enough frames) and loaded before Ray starts:
    # one copy for every trial, so trials never race for it. When [space] searches a [data] key each
    # trial loads its own; the base one is then only the check.
    data = spec.base_config().data
    try:
        dataset = load_dataset(data)
    except DatasetError as e:
        raise StudyError(args.study, "data.root" if data.root else "data", str(e)) from None
    if any(p.section == "data" for p in spec.space):
        dataset = None
        clear_cache()
    return spec, dataset


def _plan(spec: StudySpec, place: Place, args: argparse.Namespace) -> bool:
    """Decide between a new study and a restore (True); refuse (StudyRunError) what would lose data."""
    state = place.state()
    where = place.shown()
    hint_report = f"python -m study.report {place.exp_dir}"
    if args.fresh and state != "new":
        print(f"moved the old results aside to {place.move_aside()}")
        return False
    if state == "finished":
        if args.resume:
            raise StudyRunError(f"{where} holds a finished study: nothing to resume. Use --fresh to move it "
                                f"aside and start over; `{hint_report}` rebuilds its report")
        raise StudyRunError(f"{where} already holds a finished study. Use --fresh to move it aside and start "
                            f"over, or --storage/[study] name to run it elsewhere; `{hint_report}` rebuilds its report")
    if state == "foreign":
        raise StudyRunError(f"{where} exists but holds no Ray Tune experiment of this tool; move it away or "
                            f"use --fresh (which renames it, deleting nothing)")
    if state == "unfinished":
        if not _same_study(place.study_copy(), spec):
            raise StudyRunError(f"{spec.path} changed since {where} was started (its copy is {where}/{STUDY_COPY}); "
                                f"a resumed study keeps its first definition. Restore the file, or use --fresh")
        if args.max_concurrent is not None:
            print("note: --max-concurrent applies to new studies; a resumed one keeps its limit")
        print(f"resuming the unfinished study in {where}")
        return True
    if args.resume:
        raise StudyRunError(f"nothing to resume: {where} holds no unfinished study (run without --resume to start it)")
    if state == "stale" and place.remote is None:  # a start that died before the Tune experiment existed
        with contextlib.suppress(FileNotFoundError):
            (place.exp_dir / OPTUNA_DB).unlink()
    return False


def _place(args: argparse.Namespace, spec: StudySpec) -> Place:
    """Where the study goes, checked: StudyRunError (exit 2) if results cannot be written there."""
    if is_uri(args.storage):
        try:
            remote = open_storage(args.storage)
        except StorageError as e:
            raise StudyRunError(f"--storage {args.storage}: {e}") from e
        problem = remote.problem()
        if problem:
            raise StudyRunError(f"--storage {remote.show()}: {problem}")
        return Place(remote.mirror(Path("results").resolve()) / spec.name, remote)
    storage = Path(args.storage).expanduser().resolve()
    problem = storage_problem(storage)
    if problem:
        raise StudyRunError(f"--storage {args.storage}: {problem}")
    return Place(storage / spec.name)


def _all_ended(results: Any, expected: int) -> tuple[bool, str]:
    n = len(results)
    ended = results.num_terminated + results.num_errors
    ok = ended == n and n >= expected
    return ok, f"{n} of {expected} trials created, {results.num_terminated} terminated, {results.num_errors} errored"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec, dataset = _prepare(args)
    except StudyError as e:
        return main_error(e)
    except ConfigError as e:
        print(f"error: {args.study}: {e}", file=sys.stderr)
        return 2

    try:
        place = _place(args, spec)
        restore = _plan(spec, place, args)
    except StudyRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    exp_dir = place.exp_dir
    place.prepare()
    if not restore:  # a resumed study keeps the copy it was started with
        (exp_dir / STUDY_COPY).write_text(spec.raw_text, encoding="utf-8")
        place.push(STUDY_COPY)

    searched = [p.name for p in spec.space if p.kind != "fixed"]
    print(f"study {spec.name}: {spec.num_trials} trials ({spec.sampler} over {', '.join(searched) or 'nothing'}"
          f"{f', {len(spec.seeds)} seeds each' if len(spec.seeds) > 1 else ''}), {spec.metric} ({spec.mode}), "
          f"{spec.max_concurrent} at a time, {spec.cpus_per_trial:g} CPU each")
    print(f"results: {place.shown()}" + (f" (local copy of the study's own files: {exp_dir})" if place.remote else ""))

    # Tune's live table (CLIReporter) instead of the newer output engine, which cannot show
    # define-by-run parameters; experiment state saved often, so a killed driver loses little.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    import ray

    here = os.getcwd()
    try:
        start_ray(args.address, spec.cpus_per_trial)
    except StudyRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # A Ray Job's driver runs in the job's working_dir, which Ray may delete and re-extract under it
    # (seen on a one-machine cluster whose nodes share a temp dir; ray-project/ray#52343 looks alike);
    # Tune then fails when fit() ends. Re-enter the folder by path; every study path is absolute by now.
    try:
        os.chdir(here)
    except OSError:
        os.chdir(exp_dir)
    try:
        results = run_study(spec, place, dataset, restore)
        finished, counts = _all_ended(results, spec.num_trials)
    finally:
        ray.shutdown()

    if place.remote is not None:  # every trial's results and checkpoints into the mirror, and optuna.db
        from study.space import export_searcher_study

        place.pull()
        export_searcher_study(exp_dir, exp_dir / OPTUNA_DB, spec.name)
    if finished:  # before the analysis: it tells a trial stopped early from one still running
        (exp_dir / FINISHED).write_text(json.dumps({
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "trials": len(results), "expected": spec.num_trials,
            "terminated": results.num_terminated, "errored": results.num_errors, "smoke_test": args.smoke_test,
        }, indent=2) + "\n", encoding="utf-8")
    conclude(exp_dir, place.location)
    report = build_report(exp_dir)
    if report is not None:
        print(f"  report: {report}")
    if place.remote is not None:
        place.push(OPTUNA_DB, BEST, "report.html", FINISHED)  # finished.json last: the URI's "complete" mark
        print(f"  uploaded {OPTUNA_DB}, {BEST}, report.html{', ' + FINISHED if finished else ''} to {place.shown()}")
    if not finished:
        print(f"\nthe study is not finished ({counts}); run the same command again to resume it")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
