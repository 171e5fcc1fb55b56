"""Fault tolerance proven by breaking things (marked ray): a killed trial worker retried from its
checkpoint and then a corrupt checkpoint file in a killed study, a storage too small to hold one, and
a diverged trial as the analysis and report show it.

Already covered and not repeated here: SIGKILL of the driver + resume, a diverged trial's results,
unwritable storage (test_run.py); a corrupt checkpoint
at unit level (test_trainable.py). The diverge study is conftest's session fixture, shared with test_run.py.
"""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from pathlib import Path

import polars as pl
import pytest

from cvae.checkpoint import STATE_FILE, verify_checkpoint
from study._compat import EXPERIMENT_STATE_GLOB
from study.tables import analyze
from study_helpers import (StudyRun, checkpoints, kill_session, kill_trial_workers, result_rows, run_cli,
                           start_cli, study_cmd, tail, trial_dirs, trial_statuses, wait_for, write_study)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _offered_checkpoint(exp: Path, trial_id: str) -> Path | None:
    """The checkpoint Tune will hand this trial on restore: the latest one in the saved experiment state."""
    # Ray's private record of a trial's checkpoints: its public readers (ResultGrid, ExperimentAnalysis)
    # list the checkpoints on disk, not the one a restore will offer, which is what this test corrupts.
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    states = sorted(exp.glob(EXPERIMENT_STATE_GLOB))
    if not states:
        return None
    for trial_json, meta_json in json.loads(states[-1].read_text())["trial_data"]:
        if json.loads(trial_json)["trial_id"] == trial_id:
            latest = _TrainingRunMetadata.from_json_state(meta_json).checkpoint_manager.latest_checkpoint_result
            return Path(latest.checkpoint.path) if latest else None
    return None


def _recorded_checkpoint(exp: Path) -> Path | None:
    with contextlib.suppress(Exception):  # files mid-write
        for trial in trial_dirs(exp):
            return _offered_checkpoint(exp, result_rows(trial)[0]["trial_id"])
    return None


def test_crashed_trial_retried_then_a_corrupt_checkpoint_after_a_kill_resumes_from_a_good_one(
        tmp_path: Path, cache_dir: Path) -> None:
    """Two faults in one study (one trial, one at a time). First its trial worker is SIGKILLed (a crash,
    as an out-of-memory kill causes it): Tune retries it from its last checkpoint. Then, once the retried
    run has a checkpoint on record, the whole session is killed and that checkpoint's state file is
    overwritten with garbage: the rerun says so and resumes from the previous good one. (One study for
    what were two tests: this one and test_run's crashed-trial test.)"""
    epochs = 8
    study = write_study(tmp_path / "corrupt.toml", study={"name": "corrupt", "num_samples": 1, "max_concurrent": 1},
                        train={"epochs": epochs}, search={"max_failures": 1})
    exp = tmp_path / "results" / "corrupt"
    log = tmp_path / "first.log"
    proc = start_cli(study_cmd(study), tmp_path, cache_dir, log)
    before_crash: set[str] = set()

    def retried_checkpoint_on_record() -> Path | None:
        # The experiment state must name a checkpoint the retried run wrote, with an older one beside it.
        with contextlib.suppress(Exception):  # files mid-write
            for trial in trial_dirs(exp):
                offered = _offered_checkpoint(exp, result_rows(trial)[0]["trial_id"])
                if offered and offered.name not in before_crash and any(p.name < offered.name for p in checkpoints(trial)):
                    return offered
        return None

    try:
        # a checkpoint Tune knows of (the saved state names it), so the retry resumes from it
        wait_for(lambda: exp.is_dir() and _recorded_checkpoint(exp), 240, "a first recorded checkpoint", proc, log)
        before_crash.update(p.name for t in trial_dirs(exp) for p in checkpoints(t))
        assert kill_trial_workers(proc.pid), "no trial worker found in the study's session"
        # Wait until the driver's saved state names a checkpoint of the retried run (waiting for files on
        # disk first raced: a trial frozen between writing its checkpoint and reporting it never lets the
        # state name it). Then freeze the trial so the state, which lags by up to a second and prunes
        # checkpoints meanwhile, settles on one that exists, and kill everything.
        wait_for(lambda: retried_checkpoint_on_record(), 240, "a recorded checkpoint of the retried run", proc, log)
        assert kill_trial_workers(proc.pid, signal.SIGSTOP), "no trial worker found in the study's session"
        wait_for(lambda: (c := retried_checkpoint_on_record()) and c.is_dir(), 60, "a recorded checkpoint", proc, log)
    finally:
        kill_session(proc)
    (trial,) = trial_dirs(exp)
    trial_id = result_rows(trial)[0]["trial_id"]
    assert trial_statuses(exp).get(trial_id) != "TERMINATED", "killed too late: the trial had finished"
    # the crash: on record, and retried from its checkpoint, not restarted
    assert (trial / "error.txt").exists() and "resuming from" in tail(log, 10**6), tail(log)
    retried = [row for row in result_rows(trial) if row["iterations_since_restore"] < row["training_iteration"]]
    assert retried, "the crashed trial was restarted from scratch, not resumed"
    target = _offered_checkpoint(exp, trial_id)
    assert target is not None and target.is_dir(), f"no checkpoint recorded in the experiment state: {target}"
    assert any(p.name < target.name for p in checkpoints(trial)), "no older checkpoint left to fall back to"
    corrupt_epoch = json.loads((target / "manifest.json").read_text())["epoch"]
    state = target / STATE_FILE
    good = state.read_bytes()
    garbage = bytearray(good)
    garbage[len(garbage) // 2: len(garbage) // 2 + 4096] = b"\xde\xad\xbe\xef" * 1024  # overwritten in place
    state.write_bytes(bytes(garbage))

    r = run_cli(study_cmd(study), tmp_path, cache_dir)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert "resuming the unfinished study" in r.stdout
    assert "CORRUPT CHECKPOINT" in out and str(state) in out, out[-4000:]
    assert "resuming from the previous good one" in out
    rows = result_rows(trial)
    assert sorted({row["epoch"] for row in rows}) == list(range(epochs))
    resumed = [row for row in rows if row["iterations_since_restore"] == 1 and row["training_iteration"] > 1]
    assert resumed and resumed[-1]["epoch"] <= corrupt_epoch, "the resumed run skipped the corrupt epoch's training"
    assert trial_statuses(exp) == {trial_id: "TERMINATED"}
    for ckpt in checkpoints(trial):  # what is kept now was written by the resumed run: never the garbage
        verify_checkpoint(ckpt)
        assert (ckpt / STATE_FILE).read_bytes() != bytes(garbage)


def test_storage_without_free_space_is_refused_before_ray(tmp_path: Path, cache_dir: Path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 64 KB tmpfs here (needs root and CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        r = run_cli(study_cmd(write_study(tmp_path / "s.toml"), "--storage", str(tiny / "results")), tmp_path,
                    cache_dir, timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"--storage {tiny / 'results'}" in r.stderr and "MB free" in r.stderr, r.stderr
        assert "Ray" not in r.stdout and not (tiny / "results" / "smoke").exists()
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def test_diverged_trial_is_marked_in_the_analysis_and_the_report(diverged_study: StudyRun) -> None:
    trials = analyze(diverged_study.exp).trials
    status = dict(zip(trials["lr"].to_list(), trials["status"].to_list()))
    assert status == {1e30: "diverged", 1e-3: "completed"}, trials
    html = (diverged_study.exp / "report.html").read_text(encoding="utf-8")
    assert "diverged" in html
    summary = trials.filter(pl.col("status") == "diverged")
    assert summary.height == 1
