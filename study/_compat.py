"""The only places where the study reaches past Ray Tune's public API, because it offers no public form.

Everything else in study/ uses public APIs of Ray 2.60 and Optuna 5.0 (the ranges pyproject pins).
tests/test_compat.py runs a real Tune experiment and fails loudly when any of these moves:

- `trial_states(exp_dir)`: each trial's id and last status as the driver saved them in
  `experiment_state-*.json`. ResultGrid/ExperimentAnalysis give no status of a RUNNING or PENDING
  trial and need a Tune-written state to load, where the report must also read a half-copied or
  hand-made folder.
- `restorable(path, fs)`: whether Tuner.restore can resume the experiment at path, as
  `Tuner.can_restore` answers it (the Tuner's state file is there), without importing Ray: `cvae-study
  status` and `list` must not start Ray's import of half a cluster runtime to read a folder.
- `searcher_study(exp_dir)`: the Optuna study inside the searcher state Tune saved with the
  experiment (`searcher-state-*.pkl`); OptunaSearch restores from that file (public) but keeps the
  study in `_ot_study`.
- `tpe_options(sampler)` and `asha_max_t(scheduler)`: what a TPESampler and an ASHAScheduler were
  built with, which neither library shows publicly; the tests read back that a study file's options
  reached them.
- `local_gpus()`: the GPUs a local Ray started here would count, by Ray's own detection
  (`ResourceAndLabelSpec._get_current_node_accelerator`: each accelerator manager, capped by
  CUDA_VISIBLE_DEVICES), so a study that asks for a GPU the machine does not have is refused before
  Ray starts (seconds and ~10 CPU-s sooner). None when that function has moved: then Ray starts
  and its count decides, as on a cluster. tests/test_compat.py checks it answers.
- `repoint_lost_checkpoints(exp_dir)`: before a resume, an unfinished trial whose saved state names a
  checkpoint Tune has since deleted is pointed at its newest one left (the trial's checkpoint manager in
  the experiment state is a cloudpickled private object); without this it fails to restore and errors.
- `LOCAL_RAY_SYSTEM_CONFIG`: ray.init's `_system_config` for the local Ray a study starts. Ray
  prestarts one idle Python worker per CPU for the first driver (`ray::IDLE`, ~0.7 CPU-s and ~370 MB
  each); a study's trials never use them (they run in actors started with the job's runtime_env), so
  they are only a cost. An unknown key makes ray.init fail, so a rename is caught by every Ray test;
  tests/test_run.py checks that a running study has no `ray::IDLE` worker.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cvae.files import atomic_write_text

log = logging.getLogger(__name__)

EXPERIMENT_STATE_GLOB = "experiment_state-*.json"  # written by Tune's driver (TuneController)
SEARCHER_STATE_GLOB = "searcher-state-*.pkl"  # written by SearchGenerator.save_to_dir
SEARCH_GEN_STATE_GLOB = "search_gen_state-*.json"  # written by SearchGenerator.save_to_dir, beside it
TUNER_STATE = "tuner.pkl"  # ray.tune.impl.tuner_internal._TUNER_PKL: what Tuner.can_restore looks for
LOCAL_RAY_SYSTEM_CONFIG: dict[str, Any] = {"prestart_worker_first_driver": False}  # Ray's ray_config_def.h


def restorable(path: str | Path, fs: Any = None) -> bool:
    """Tuner.can_restore(path, storage_filesystem=fs), without Ray: the Tuner's state file is at path."""
    if fs is None:
        return (Path(path) / TUNER_STATE).is_file()
    from pyarrow import fs as pafs

    return fs.get_file_info(f"{str(path).rstrip('/')}/{TUNER_STATE}").type != pafs.FileType.NotFound


def trial_states(exp_dir: str | Path) -> dict[str, tuple[str, str]]:
    """Trial folder name -> (trial id, Tune status: TERMINATED, ERROR, RUNNING, PENDING, ...), from the
    newest experiment state on disk ({} when there is none or it cannot be read)."""
    # Newest by the session start in the name: a restored run re-syncs the older sessions' files
    # when it ends, so their mtimes are newer than the state that run itself saved.
    states = sorted(Path(exp_dir).glob(EXPERIMENT_STATE_GLOB), key=lambda p: (p.name, p.stat().st_mtime))
    if not states:
        return {}
    try:
        raw = json.loads(states[-1].read_text())
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); ignored", states[-1], e)
        return {}
    out: dict[str, tuple[str, str]] = {}
    for entry in raw.get("trial_data", []) if isinstance(raw, dict) else []:
        try:
            trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            out[Path(trial["relative_logdir"]).name] = (str(trial["trial_id"]), str(trial["status"]))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return out


def searcher_study(exp_dir: str | Path) -> Any:
    """The optuna.Study held by the newest OptunaSearch state Tune saved in exp_dir (None if none)."""
    from ray.tune.search.optuna import OptunaSearch

    states = sorted(Path(exp_dir).glob(SEARCHER_STATE_GLOB))
    if not states:
        return None
    searcher = OptunaSearch()
    searcher.restore(str(states[-1]))
    return searcher._ot_study


def repoint_lost_checkpoints(exp_dir: str | Path) -> list[str]:
    """Before Tuner.restore of a local study (study.driver_state.repair): each unfinished trial whose latest checkpoint, as the newest
    experiment state names it, is no longer on disk is pointed at its newest checkpoint that is (or, with
    none left, at none: it starts over). Returns one line per trial changed.

    A state saved before Tune deleted that checkpoint (CheckpointConfig.num_to_keep drops the worst
    scored one each time a trial saves, and Tune copies its state into the folder only every second;
    a put-back copy of the state is older still) would make the trial fail to restore ("does not exist
    on storage anymore") on every retry and end as an error. The state keeps each trial's
    checkpoints in its run metadata (ray.train._internal.checkpoint_manager._CheckpointManager,
    cloudpickled), read and written here as Tune does (Trial.restore_run_metadata, get_json_state).
    """
    exp_dir = Path(exp_dir)
    states = sorted(exp_dir.glob(EXPERIMENT_STATE_GLOB))
    if not states:
        return []
    raw = json.loads(states[-1].read_text())
    lines = []
    for entry in raw.get("trial_data", []):
        trial = json.loads(entry[0])
        if trial.get("status") in ("TERMINATED", "ERROR"):
            continue  # not restored
        folder = exp_dir / Path(trial["relative_logdir"]).name
        # Ray only for a trial Tune will restore (a finished study's state needs no decoding)
        from ray.tune.utils.serialization import TuneFunctionEncoder, _loads_with_cloudpickle

        meta = _loads_with_cloudpickle(entry[1])  # the study's own state, written by its own driver
        manager = meta.get("checkpoint_manager")
        latest = getattr(manager, "_latest_checkpoint_result", None)
        if latest is None or (folder / Path(latest.checkpoint.path).name).is_dir():
            continue
        kept = [r for r in manager._checkpoint_results if (folder / Path(r.checkpoint.path).name).is_dir()]
        newest = max(kept, key=lambda r: Path(r.checkpoint.path).name, default=None)
        manager._checkpoint_results, manager._latest_checkpoint_result = kept, newest
        entry[1] = json.dumps(meta, indent=2, cls=TuneFunctionEncoder)
        lost = Path(latest.checkpoint.path).name
        then = f"{Path(newest.checkpoint.path).name} instead" if newest else "its start (no checkpoint of it is left)"
        lines.append(f"trial {trial['trial_id']}: its saved state names {lost}, which Ray Tune deleted after "
                     f"saving that state; it resumes from {then}")
    if lines:
        atomic_write_text(states[-1], json.dumps(raw))
    return lines


def tpe_options(sampler: Any) -> dict[str, Any]:
    """The options an optuna TPESampler was built with: multivariate, group, constant_liar,
    n_startup_trials (set by TPESampler.__init__, no public getter)."""
    return {"multivariate": sampler._multivariate, "group": sampler._group,
            "constant_liar": sampler._constant_liar, "n_startup_trials": sampler._n_startup_trials}


def asha_max_t(scheduler: Any) -> int:
    """The max_t an ASHAScheduler was built with (the epochs after which every trial stops)."""
    return int(scheduler._max_t)


def local_gpus() -> float | None:
    """The GPUs ray.init would find on this machine (Ray's detection, as its node resolves its
    resources); None when Ray's private function has moved or RAY_OVERRIDE_RESOURCES overrides it."""
    if "RAY_OVERRIDE_RESOURCES" in os.environ:
        return None
    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        manager, count = ResourceAndLabelSpec._get_current_node_accelerator(None, {})
        if manager is None:
            return 0.0
        return float(count) if manager.get_resource_name() == "GPU" else 0.0
    except Exception as e:  # noqa: BLE001 - Ray moved it: let the Ray that starts count
        log.debug("Ray's accelerator detection is not where it was (%s): Ray will count the GPUs", e)
        return None


__all__ = ["EXPERIMENT_STATE_GLOB", "LOCAL_RAY_SYSTEM_CONFIG", "SEARCHER_STATE_GLOB", "SEARCH_GEN_STATE_GLOB", "TUNER_STATE",
           "asha_max_t", "local_gpus", "repoint_lost_checkpoints", "restorable", "searcher_study", "tpe_options",
           "trial_states"]

