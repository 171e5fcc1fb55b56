"""Run a study: `python -m study.run STUDY.toml [--resume | --fresh] [--address ADDR | --no-dashboard]
[--max-concurrent N] [--storage PATH_OR_URI] [--smoke-test] [--verbose]` (also `cvae-study run`).

The TOML is parsed and checked (study.spec) and its dataset loaded before Ray starts: a bad file
exits with code 2 and touches nothing under results/. Then a local Ray (dashboard on 127.0.0.1
unless --no-dashboard, token auth on) is started, or an existing cluster joined, and the study runs as a Ray Tune
experiment driven by Optuna (study.space) over the trainable study.trainable.train_cvae, with
study.callbacks.ReportCallback rebuilding the report as trials end. The console is study.console's:
the plan, one line per trial epoch and one progress line (--verbose: Ray Tune's status table and
Ray's and Optuna's INFO logs).

Where the results go and what is already there is study.place's: results/<study>/ holds Ray Tune's
experiment (one folder per trial), a copy of the study file, the Optuna study, and once every trial
has ended finished.json, best.toml and report.html (study.best, study.report). --storage may also be
a URI pyarrow understands (s3://bucket/prefix, ...): see study.storage.

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
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from cvae.config import ConfigError
from cvae.data import Dataset, DatasetError, clear_cache, load_dataset
from cvae.device import available_cpus
from study._compat import LOCAL_RAY_SYSTEM_CONFIG, local_gpus, trial_states
from study.analyze import StudyInfo
from study.best import conclude
from study.driver import DriverLock
from study.driver_state import repair as repair_driver_state
from study.manifest import record_run
from study.place import BEST, FINISHED, OPTUNA_DB, REPORT, RESULTS_DIR, STUDY_COPY, Place, PlaceError, State, same_study, study_place
from study.spec import SMOKE_TRIALS, StudyError, StudySpec, load_spec, main_error, smoke_spec

log = logging.getLogger(__name__)

REMOTE_SYNC_S = 10  # experiment-state upload period for a URI study (Tune's default is 300 s)
# Metrics shown in the live progress table (column title -> metric).
TABLE_METRICS: dict[str, str] = {"epoch": "epoch", "val/psnr": "val/psnr", "val/psnr_hold": "hold",
                                 "train/loss": "loss", "diverged": "diverged"}


class StudyRunError(RuntimeError):
    """A problem with how to run the study (exit code 2): the message says what to do."""


# -- the report (written by study.report) ---------------------------------------------------------
def build_report(exp_dir: Path) -> Path | None:
    """study.report.build_report(exp_dir), or None with a warning: a report never fails a study."""
    try:
        from study.report import build_report as build

        return Path(build(exp_dir))
    except Exception as e:  # noqa: BLE001 - any failure only costs the report; the results are intact
        log.warning("building the report failed (%s: %s); the results are intact", type(e).__name__, e)
        return None


# -- Ray ------------------------------------------------------------------------------------------
def _count(n: float, what: str) -> str:
    """`n what`, plural unless n is 1: "2 GPUs", "1 CPU"."""
    return f"{n:g} {what}" + ("" if n == 1 else "s")


def refusal(resources: dict[str, float], cpus_per_trial: float, gpus_per_trial: float = 0.0,
            source: str | Path = "") -> str | None:
    """Why no trial could ever start on a cluster with `resources` (Ray's totals), or None if one can."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    where = f"{source}: " if source else ""
    if gpus < gpus_per_trial:
        return (f"{where}study.gpus_per_trial: {gpus_per_trial:g} asked for, but the Ray cluster has "
                f"{_count(gpus, 'GPU')} ({_count(cpus, 'CPU')})")
    if cpus < cpus_per_trial:
        return (f"{where}study.cpus_per_trial: {cpus_per_trial:g} asked for, but the Ray cluster has "
                f"{_count(cpus, 'CPU')}: no trial could ever start")
    return None


def trials_that_fit(resources: dict[str, float], cpus_per_trial: float, gpus_per_trial: float = 0.0) -> int:
    """How many trials the cluster's CPUs and GPUs hold at once (at least 1): the default max_concurrent."""
    fits = [resources.get("CPU", 0.0) / cpus_per_trial]
    if gpus_per_trial > 0:
        fits.append(resources.get("GPU", 0.0) / gpus_per_trial)
    return max(1, math.floor(min(fits) + 1e-9))  # 1 / 0.1 GPUs is 10 trials, not 9.999...


def _quiet_workers() -> dict[str, Any]:
    """ray.init's runtime_env for a local Ray without --verbose: the trials' workers log no
    per-epoch "Checkpoint successfully created" line (study.logs.quiet_worker)."""
    from study import logs

    return {} if logs.is_verbose() else {"runtime_env": {"worker_process_setup_hook": "study.logs.quiet_worker"}}


def start_ray(address: str | None, cpus_per_trial: float, gpus_per_trial: float = 0.0,
              source: str | Path = "", dashboard: bool = True) -> dict[str, float]:
    """Join `address` (or RAY_ADDRESS), else start a local Ray with token authentication on (the Ray
    default for local clusters) and, unless `dashboard` is False, the dashboard on 127.0.0.1. Prints
    how to reach it and returns the cluster's resources; refuses (StudyRunError, Ray shut down) a
    cluster where no trial fits."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        if not dashboard:
            print(f"--no-dashboard: nothing to leave out, the cluster at {address} (RAY_ADDRESS) runs its own")
        ctx = ray.init(address=address)
        where = f"joined the Ray cluster at {address}"
    else:
        # "local": a new instance even if some `ray start` cluster runs on this machine; the CPUs this
        # process may use (its affinity, e.g. under taskset), where Ray would count the machine's.
        # Ray counts the GPUs itself (CUDA_VISIBLE_DEVICES is respected): what it would count refuses
        # a study no trial of which fits before Ray starts. No idle workers prestarted for this
        # driver: the trials never use them (study._compat.LOCAL_RAY_SYSTEM_CONFIG).
        cpus, gpus = available_cpus(), local_gpus()
        why = None if gpus is None else refusal({"CPU": float(cpus), "GPU": gpus}, cpus_per_trial, gpus_per_trial,
                                                source)
        if why:
            raise StudyRunError(why)
        ctx = ray.init(address="local", num_cpus=cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                       _system_config=LOCAL_RAY_SYSTEM_CONFIG, **_quiet_workers())
        where = "started a local Ray" + ("" if dashboard else " without its dashboard (--no-dashboard)")
    resources = {k: float(v) for k, v in ray.cluster_resources().items()}
    why = refusal(resources, cpus_per_trial, gpus_per_trial, source)
    if why:
        ray.shutdown()
        raise StudyRunError(why)
    url = getattr(ctx, "dashboard_url", None)
    gpus = resources.get("GPU", 0.0)
    print(f"{where} ({_count(resources.get('CPU', 0.0), 'CPU')}{', ' + _count(gpus, 'GPU') if gpus else ''})")
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
              "(ImplicitFunc) and their logs (one line per epoch); per-trial views are the console, "
              "`cvae-study status` and the report")
    return resources


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


def _console(spec: StudySpec, place: Place) -> Any:
    """The progress reporter: study.console's progress line, carrying Tune's table for --verbose."""
    from study.console import StudyConsole

    return StudyConsole(place.exp_dir, spec.metric, spec.num_trials, spec.max_epochs,
                        spec.max_concurrent or 1, table=_progress_reporter(spec), race=spec.race is not None)


def run_study(spec: StudySpec, place: Place, dataset: Dataset | None, restore: bool) -> Any:
    """Fit a new Tune experiment for spec at `place` (or restore the one there) and return Tune's
    ResultGrid."""
    from ray import tune

    from study.callbacks import ReportCallback, StateCopies, TimeBudget
    from study.space import make_scheduler, make_searcher, sqlite_storage
    from study.trainable import train_cvae

    trainable = tune.with_resources(tune.with_parameters(train_cvae, spec=spec, dataset=dataset),
                                    {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
    if restore:
        # Finished trials stay as they are; interrupted ones continue from their last checkpoint.
        # Errored ones already used their FailureConfig retries: they stay recorded as failed.
        # The restored experiment keeps its own callbacks (ReportCallback follows a moved folder).
        tuner = tune.Tuner.restore(place.tune_path(), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False,
                                   storage_filesystem=place.remote.fs if place.remote else None)
        return tuner.fit()
    # A URI study keeps its Optuna study in memory, so that Tune's saved searcher state (on the URI,
    # what a resume reads) is its only copy and can never disagree with a separately uploaded
    # sqlite file; optuna.db is exported from that state at the end (export_searcher_study).
    searcher = make_searcher(spec, sqlite_storage(place.exp_dir / OPTUNA_DB) if place.remote is None else None)
    # rebuilds report.html as trials end (logs, never raises); for a URI study the trials' results
    # are on the URI: the report is built once, at the end
    # and, in a local folder, keeps whole copies of Tune's state for a resume after a kill mid-write
    hooks = [ReportCallback(place.exp_dir), StateCopies(place.exp_dir)] if place.remote is None else []
    if spec.time_budget_s is not None:
        hooks.append(TimeBudget(spec.time_budget_s))
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
            progress_reporter=_console(spec, place),
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
    ray_at = p.add_mutually_exclusive_group()
    ray_at.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")
    ray_at.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                        help="start the local Ray without its dashboard: ~6 CPU-seconds and a few processes less "
                             "per run, for small machines and CI; the console, `cvae-study status` and the report "
                             "follow the study as before")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="trials at once (overrides study.max_concurrent; without either: as many as the "
                        "cluster's CPUs and GPUs hold)")
    p.add_argument("--storage", default=RESULTS_DIR, metavar="PATH_OR_URI",
                   help="results folder, or a URI pyarrow understands (s3://bucket/prefix, gs://..., file://...); "
                        "the study goes to <storage>/<name>/ (default: results)")
    p.add_argument("--smoke-test", action="store_true",
                   help=f"a seconds-long version: {SMOKE_TRIALS} trials of 2 short epochs, saved as <name>-smoke")
    p.add_argument("--steal-lock", action="store_true",
                   help="take a URI study whose driver died on another machine without releasing it (its mark "
                        "goes stale by itself after a few minutes)")
    p.add_argument("--verbose", action="store_true",
                   help="Ray Tune's status table and Ray's and Optuna's logs instead of the one progress line")
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
    """Decide between a new study and a restore (True) from the state of its place; refuse
    (PlaceError) what would lose data."""
    state = place.state()
    where = place.shown()
    hint_report = f"python -m study.report {place.exp_dir}"
    if args.fresh and state != State.NEW:
        print(f"moved the old results aside to {place.move_aside()}")
        return False
    if state == State.FINISHED:
        if args.resume:
            raise PlaceError(f"{where} holds a finished study: nothing to resume. Use --fresh to move it "
                                f"aside and start over; `{hint_report}` rebuilds its report")
        raise PlaceError(f"{where} already holds a finished study. Use --fresh to move it aside and start "
                            f"over, or --storage/[study] name to run it elsewhere; `{hint_report}` rebuilds its report")
    if state == State.FOREIGN:
        raise PlaceError(f"{where} exists but holds no Ray Tune experiment of this tool; move it away or "
                            f"use --fresh (which renames it, deleting nothing)")
    if state == State.UNFINISHED:
        if not same_study(place.study_copy(), spec.raw_text):
            raise PlaceError(f"{spec.path} changed since {where} was started (its copy is {where}/{STUDY_COPY}); "
                                f"a resumed study keeps its first definition. Restore the file, or use --fresh")
        if args.max_concurrent is not None:
            print("note: --max-concurrent applies to new studies; a resumed one keeps its limit")
        print(f"resuming the unfinished study in {where}")
        if place.remote is None:  # Tune's state as a kill left it: made resumable (study.driver_state.repair)
            for line in repair_driver_state(place.exp_dir):
                print(line)
        return True
    if args.resume:
        raise PlaceError(f"nothing to resume: {where} holds no unfinished study (run without --resume to start it)")
    if state == State.STALE and place.remote is None:  # a start that died before the Tune experiment existed
        with contextlib.suppress(FileNotFoundError):
            (place.exp_dir / OPTUNA_DB).unlink()
    return False


def _race_over(exp_dir: Path, spec: StudySpec) -> bool:
    """Whether the study's seed race is over, recomputed from its results (study.evidence.race_over)."""
    from study.evidence import race_over
    from study.tables import build_tables

    return race_over(build_tables(exp_dir), StudyInfo.of(spec))


def _all_ended(results: Any, expected: int) -> tuple[bool, str]:
    n = len(results)
    ended = results.num_terminated + results.num_errors
    ok = ended == n and n >= expected
    return ok, f"{n} of {expected} trials created, {results.num_terminated} terminated, {results.num_errors} errored"


def _announce(spec: StudySpec, place: Place) -> None:
    searched = [p.name for p in spec.space if p.kind != "fixed"]
    at_once = f"{spec.max_concurrent} at a time" if spec.max_concurrent else "as many at a time as the cluster holds"
    gpus = f" and {spec.gpus_per_trial:g} GPU" if spec.gpus_per_trial else ""
    if spec.race is None:
        trials = f"{spec.num_trials} trials"
        seeds = f", {len(spec.seeds)} seeds each" if len(spec.seeds) > 1 else ""
    else:
        trials = f"{spec.min_trials} to {spec.num_trials} trials"
        who = "each configuration" if spec.sampler == "grid" else f"the {spec.confirm_top} best configurations"
        seeds = (f", a seed race: {spec.race.min} seeds each, then up to {spec.race.max} for {who} while a comparison "
                 f"with the leader is open (alpha {spec.alpha:g}, equivalence +-{spec.margin_db:g}"
                 f"{', paired tests' if spec.paired else ''})")
    print(f"study {spec.name}: {trials} ({spec.sampler} over {', '.join(searched) or 'nothing'}{seeds}), "
          f"{StudyInfo.of(spec).scored_by}, {at_once}, {spec.cpus_per_trial:g} CPU{gpus} each")
    print(f"plan: {'at most ' if spec.race else ''}{spec.num_trials * spec.max_epochs} trial-epochs ({spec.num_trials} "
          f"trials x {spec.max_epochs} epochs{', fewer as ASHA stops trials' if spec.scheduler == 'asha' else ''})")
    print(f"results: {place.shown()}" + (f" (local copy of the study's own files: {place.exp_dir})" if place.remote else ""))


def _fit(spec: StudySpec, place: Place, dataset: Dataset | None, restore: bool, address: str | None,
         source: str, verbose: bool = False, dashboard: bool = True) -> Any:
    """Start or join Ray, run the study to its end (or an interruption) and return Tune's ResultGrid."""
    # Tune's live table (CLIReporter) instead of the newer output engine, which cannot show
    # define-by-run parameters; experiment state saved often, so a killed driver loses little.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # ... which Tune then warns is often: it is this study's choice, not a problem to report
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    from study.logs import quiet_logs

    quiet_logs(verbose)

    here = os.getcwd()
    resources = start_ray(address, spec.cpus_per_trial, spec.gpus_per_trial, source, dashboard)
    if spec.max_concurrent is None and not restore:  # a restored study keeps its searcher's limit
        spec = dataclasses.replace(spec, max_concurrent=trials_that_fit(resources, spec.cpus_per_trial,
                                                                        spec.gpus_per_trial))
        print(f"{spec.max_concurrent} trials at a time: what the cluster's resources hold "
              f"(study.max_concurrent or --max-concurrent sets it)")
    # A Ray Job's driver runs in the job's working_dir, which Ray may delete and re-extract under it
    # (seen on a one-machine cluster whose nodes share a temp dir; ray-project/ray#52343 looks alike);
    # Tune then fails when fit() ends. Re-enter the folder by path; every study path is absolute by now.
    try:
        os.chdir(here)
    except OSError:
        os.chdir(place.exp_dir)
    try:
        return run_study(spec, place, dataset, restore)
    finally:
        ray.shutdown()


def _finish(spec: StudySpec, place: Place, results: Any, smoke_test: bool) -> bool:
    """Everything after the Tuner: the mirror of a URI study, finished.json (if every trial ended),
    best.toml and the console's last lines (study.best), the report. True when finished."""
    exp_dir = place.exp_dir
    finished, counts = _all_ended(results, spec.min_trials)
    if place.remote is not None:  # every trial's results and checkpoints into the mirror, and optuna.db
        from study.space import export_searcher_study

        place.pull()
        export_searcher_study(exp_dir, exp_dir / OPTUNA_DB, spec.name)
    if finished and spec.race is not None and not _race_over(exp_dir, spec):
        finished, counts = False, f"{counts}; the seed race gives more seeds still"
    if finished and any(status not in ("TERMINATED", "ERROR") for _, status in trial_states(exp_dir).values()):
        # Interrupted (Ctrl-C, the time budget) after its last trial started: the ResultGrid counts the
        # stopped trials as terminated, Tune's saved state (what a resume reads) does not.
        finished, counts = False, f"{counts}; interrupted while trials ran"
    if finished:  # before the analysis: it tells a trial stopped early from one still running
        (exp_dir / FINISHED).write_text(json.dumps({
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "trials": len(results), "expected": spec.num_trials,
            "terminated": results.num_terminated, "errored": results.num_errors, "smoke_test": smoke_test,
        }, indent=2) + "\n", encoding="utf-8")
    conclude(exp_dir, place.location)
    report = build_report(exp_dir)
    if report is not None:
        print(f"  report: {report}")
    if place.remote is not None:
        place.push(OPTUNA_DB, BEST, REPORT, FINISHED)  # finished.json last: the URI's "complete" mark
        print(f"  uploaded {OPTUNA_DB}, {BEST}, {REPORT}{', ' + FINISHED if finished else ''} to {place.shown()}")
    if not finished:
        print(f"\nthe study is not finished ({counts}); run the same command again to resume it")
    return finished


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Before Ray is imported: Ray's log deduplication folds the trials' epoch lines, which differ only
    # in their numbers, into "[repeated 3x across cluster]" notes.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from study import logs

    logs.set_verbose(args.verbose)
    try:
        spec, dataset = _prepare(args)
    except StudyError as e:
        return main_error(e)
    except ConfigError as e:
        print(f"error: {args.study}: {e}", file=sys.stderr)
        return 2
    try:
        place = study_place(args.storage, spec.name)
        # Before anything is decided about the study: a second driver is refused here, touching nothing.
        lock = DriverLock(place, command=" ".join(["python -m study.run", *(argv or sys.argv[1:])]),
                          steal=args.steal_lock)
        lock.acquire()
    except PlaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        try:
            restore = _plan(spec, place, args)
        except PlaceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        place.prepare()
        if warning := record_run(place, spec, resumed=restore):  # results/<study>/manifest.json
            print(f"warning: {warning}")
        lock.mark()
        if not restore:  # a resumed study keeps the copy it was started with
            (place.exp_dir / STUDY_COPY).write_text(spec.raw_text, encoding="utf-8")
            place.push(STUDY_COPY)
        _announce(spec, place)
        try:
            results = _fit(spec, place, dataset, restore, args.address, args.study, args.verbose, args.dashboard)
        except StudyRunError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0 if _finish(spec, place, results, args.smoke_test) else 1
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
