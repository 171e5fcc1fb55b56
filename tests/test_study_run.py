"""`python -m study.run`: bad input refused before Ray, and (marked ray) real studies end to end:
results on disk, best.toml, resume after SIGKILL, --fresh, a diverged trial, the dashboard's token."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import subprocess
import sys
import types
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from ray import tune

from conftest import ROOT
from cvae.config import Config, load_config
from cvae.checkpoint import verify_checkpoint
from cvae.train import run
from study import run as study_run
from study.run import Best, TrialRecord, main, pick_best, read_trials, smoke_spec, study_state
from study.spec import load_spec
from study.trainable import _restorable, trial_config, trial_threads
from study_helpers import (CONTRACT, SMOKE, checkpoints, kill_session, kill_trial_workers, result_rows, run_cli, start_cli, study_cmd,
                           tail, trial_dirs, trial_statuses, wait_for, write_study)

RAY_BIN = Path(sys.executable).parent / "ray"


# -- bad input: exit 2 before Ray, nothing under results/ ----------------------------------------
BAD_STUDIES = {
    "unknown_key": ({"train": {"epoch": 3}}, "train.epoch"),
    "wrong_type": ({"study": {"max_concurrent": "two"}}, "study.max_concurrent"),
    "missing_dataset": ({"data": {"root": "no/such/dataset"}}, "data.root"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_bad_study_exits_2_before_anything_is_written(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables, key = BAD_STUDIES[case]
    study = write_study(tmp_path / f"{case}.toml", **tables)
    assert main([str(study), "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert str(study) in err and key in err and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()


def test_when_on_an_unknown_parameter_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = write_study(tmp_path / "when.toml", space={"tfr": {"low": 0.0, "high": 1.0, "when": {"nope": 1}}})
    assert main([str(study), "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "space.tfr" in err and "nope" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_cli_bad_study_and_unwritable_storage_exit_2(tmp_path: Path, cache_dir: Path) -> None:
    bad = write_study(tmp_path / "bad.toml", train={"lr": -1.0})
    r = run_cli(study_cmd(bad), tmp_path, cache_dir, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "bad.toml" in r.stderr and "train.lr" in r.stderr
    assert not (tmp_path / "results").exists()
    # Root ignores permission bits: a path below a regular file fails for everyone.
    (tmp_path / "file.txt").write_text("not a folder")
    r = run_cli(study_cmd(SMOKE, "--storage", "file.txt/results"), tmp_path, cache_dir, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "--storage file.txt/results" in r.stderr and "not a folder" in r.stderr
    assert "Ray" not in r.stdout


# -- refusals that protect existing results (decided from disk, before Ray) ----------------------
def _fake_experiment(exp: Path, finished: bool, study_text: str) -> None:
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(b"")
    (exp / "study.toml").write_text(study_text)
    if finished:
        (exp / "finished.json").write_text("{}")


def test_finished_study_is_refused_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "results" / "smoke"
    _fake_experiment(exp, finished=True, study_text=SMOKE.read_text())
    for flags in ([], ["--resume"]):
        assert main([str(SMOKE), "--storage", str(tmp_path / "results"), *flags]) == 2
        err = capsys.readouterr().err
        assert "finished" in err and "--fresh" in err
    assert sorted(p.name for p in exp.iterdir()) == ["finished.json", "study.toml", "tuner.pkl"]


def test_resume_needs_something_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(SMOKE), "--storage", str(tmp_path / "results"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_changed_study_file_is_not_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "results" / "smoke"
    _fake_experiment(exp, finished=False, study_text=SMOKE.read_text().replace("num_samples = 3", "num_samples = 5"))
    assert main([str(SMOKE), "--storage", str(tmp_path / "results")]) == 2
    assert "changed since" in capsys.readouterr().err


def test_foreign_folder_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "results" / "smoke"
    exp.mkdir(parents=True)
    (exp / "notes.txt").write_text("mine")
    assert main([str(SMOKE), "--storage", str(tmp_path / "results")]) == 2
    assert "--fresh" in capsys.readouterr().err
    assert (exp / "notes.txt").read_text() == "mine"


def test_study_state_and_move_aside(tmp_path: Path) -> None:
    exp = tmp_path / "s"
    assert study_state(exp) == "new"
    exp.mkdir()
    (exp / "study.toml").write_text("")
    assert study_state(exp) == "stale"
    (exp / "tuner.pkl").write_bytes(b"")
    assert study_state(exp) == "unfinished"
    (exp / "finished.json").write_text("{}")
    assert study_state(exp) == "finished"
    aside = study_run.move_aside(exp)
    assert not exp.exists() and aside.name.startswith("s.old-") and (aside / "finished.json").exists()


# -- pieces of the runner ------------------------------------------------------------------------
def test_smoke_spec_is_small_and_separate() -> None:
    kl = load_spec(ROOT / "search_spaces" / "kl.toml")
    smoke = smoke_spec(kl)
    assert smoke.name == "kl-smoke" and smoke.num_trials == 2 and smoke.seeds == (0,)
    assert smoke.sampler == "random"  # a grid would not fit in 2 trials
    cfg = smoke.config_for({"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 2})
    assert cfg.train.epochs == 2 and cfg.train.max_steps_per_epoch == 2 and cfg.data.val_video_len <= 24


def _record(tmp: Path, name: str, params: dict, best: float | None) -> TrialRecord:
    return TrialRecord(path=tmp / name, params=params, best=best, row={"epoch": 1}, epochs=2,
                       diverged=best is None, errored=False)


def test_pick_best_uses_the_mean_over_seeds(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "search_spaces" / "kl.toml")  # 3 seeds, mode max
    a = {"kl_anneal_type": "None"}
    b = {"kl_anneal_type": "Monotonic"}
    trials = [_record(tmp_path, "a0", {**a, "seed": 0}, 30.0),  # one lucky seed, mean 16.7
              _record(tmp_path, "a1", {**a, "seed": 1}, 10.0),
              _record(tmp_path, "a2", {**a, "seed": 2}, 10.0),
              _record(tmp_path, "b0", {**b, "seed": 0}, 20.0),
              _record(tmp_path, "b1", {**b, "seed": 1}, 21.0),
              _record(tmp_path, "b2", {**b, "seed": 2}, None)]  # diverged: no finite value
    best = pick_best(trials, spec)
    assert isinstance(best, Best)
    assert best.config_params == a and best.value == pytest.approx(50 / 3)  # b lost a seed: ranked below
    assert best.trial.path.name == "a0" and best.per_seed == [(0, 30.0), (1, 10.0), (2, 10.0)]
    trials[-1] = _record(tmp_path, "b2", {**b, "seed": 2}, 19.0)
    best = pick_best(trials, spec)
    assert best is not None and best.config_params == b and best.value == pytest.approx(20.0)
    assert best.trial.path.name == "b1" and [s for s, _ in best.per_seed] == [0, 1, 2]


def test_read_trials_takes_each_trials_best_epoch(tmp_path: Path) -> None:
    trial = tmp_path / "t1"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"tfr": 0.5}))
    (trial / "checkpoint_000001").mkdir()
    rows = [{"epoch": 0, "val/psnr": 10.0, "checkpoint_dir_name": "checkpoint_000000"},
            {"epoch": 1, "val/psnr": 12.0, "checkpoint_dir_name": "checkpoint_000001"},
            {"epoch": 2, "val/psnr": float("nan"), "diverged": True}]
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (rec,) = read_trials(tmp_path, "val/psnr", "max")
    assert rec.best == 12.0 and rec.row["epoch"] == 1 and rec.diverged and rec.epochs == 3
    assert rec.checkpoint == trial / "checkpoint_000001"


@pytest.mark.filterwarnings("ignore:`get_trial_resources`")
def test_trial_config_and_threads_outside_tune() -> None:
    spec = load_spec(SMOKE)
    assert trial_threads(1.5) == 1 and trial_threads(2) == 2
    cfg = trial_config(spec, {"tfr": 0.25, "kl_anneal_type": "None", "seed": 7}, threads=1)
    assert cfg.train.tfr == 0.25 and cfg.train.kl_anneal_type == "None" and cfg.train.seed == 7
    assert cfg.train.threads == 1 and cfg.model.F_dim == 16


def test_corrupt_checkpoint_restarts_the_trial_from_scratch(tmp_path: Path, cache_dir: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    cfg = Config.from_dict({
        "model": {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16},
        "data": {"video_len": 4, "val_video_len": 8, "synthetic_train_videos": 1, "synthetic_train_frames": 16,
                 "cache_dir": str(cache_dir)},
        "train": {"epochs": 1, "max_steps_per_epoch": 1, "threads": 1},
    })
    summary = run(cfg, None, tmp_path / "ckpt")
    ckpt = tune.Checkpoint.from_directory(str(summary.checkpoint))
    ckpt.set_metadata({"cpu_s": 3.5})
    with contextlib.ExitStack() as stack:
        path, cpu = _restorable(ckpt, stack, "t0")
        assert path == summary.checkpoint and cpu == 3.5
    state = summary.checkpoint / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])  # truncated, as by a crash mid-write
    with caplog.at_level(logging.ERROR), contextlib.ExitStack() as stack:
        path, cpu = _restorable(ckpt, stack, "t0")
    assert path is None and cpu == 3.5
    assert "corrupt" in caplog.text and "from scratch" in caplog.text


def test_report_problems_never_fail_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def build_report(study_dir: Path) -> Path:
        raise RuntimeError("no disk")

    monkeypatch.setattr("study.report.build_report", build_report)
    with caplog.at_level(logging.WARNING):
        assert study_run.build_report(tmp_path) is None
    assert "no disk" in caplog.text


# -- real studies (Ray) --------------------------------------------------------------------------
def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """search_spaces/smoke.toml run once as a user types it, in a fresh folder."""
    cwd = tmp_path_factory.mktemp("smoke-study")
    r = run_cli(study_cmd(SMOKE), cwd, cache_dir)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    return cwd, r


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_study_end_to_end(smoke_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, r = smoke_run
    spec = load_spec(SMOKE)
    exp = cwd / "results" / "smoke"
    trials = trial_dirs(exp)
    assert len(trials) == spec.num_trials
    epochs = spec.base_config().train.epochs
    for trial in trials:
        params = json.loads((trial / "params.json").read_text())
        assert set(params) == {"tfr", "kl_anneal_type"}  # the sampled values, nothing else
        rows = result_rows(trial)
        assert [row["epoch"] for row in rows] == list(range(epochs))
        for row in rows:
            missing = set(CONTRACT) - set(row)
            assert not missing, f"{trial.name} epoch {row['epoch']} lacks {missing}"
            assert all(_finite(row[k]) for k in CONTRACT)
            assert row["time/cpu_s"] > 0 and row["node_ip"] and row["hostname"] and row["diverged"] is False
        kept = checkpoints(trial)
        assert kept
        for ckpt in kept:
            verify_checkpoint(ckpt)
            frames = json.loads((ckpt / "psnr_per_frame.json").read_text())
            assert len(frames["psnr"]) == spec.base_config().data.val_video_len - 1
    assert (exp / "study.toml").read_text() == SMOKE.read_text()
    assert json.loads((exp / "finished.json").read_text())["trials"] == spec.num_trials
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == spec.num_trials
    assert "best configuration (val/psnr, max)" in r.stdout and "val/psnr_hold" in r.stdout
    assert str(exp) in r.stdout
    assert re.search(r"Ray dashboard: http://127\.0\.0\.1:\d+", r.stdout)


@pytest.mark.ray
@pytest.mark.slow
def test_best_toml_reruns_as_a_single_run(smoke_run: tuple[Path, subprocess.CompletedProcess[str]],
                                          cache_dir: Path) -> None:
    cwd, _ = smoke_run
    best = cwd / "results" / "smoke" / "best.toml"
    text = best.read_text()
    ckpt = re.search(r"^# Best checkpoint: (.+)$", text, re.M)
    assert ckpt and Path(ckpt.group(1)).is_dir()
    verify_checkpoint(ckpt.group(1))
    cfg = load_config(best)
    assert cfg.model.F_dim == 16 and cfg.train.threads is None
    r = run_cli([sys.executable, "-m", "cvae.train", "--config", str(best), "--smoke-test", "--out", str(cwd / "rerun")],
                cwd, cache_dir)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.ray
@pytest.mark.slow
def test_finished_study_refused_then_fresh_moves_it_aside(smoke_run: tuple[Path, subprocess.CompletedProcess[str]],
                                                         cache_dir: Path) -> None:
    cwd, _ = smoke_run  # runs last among the smoke_run tests: it moves that study aside
    exp = cwd / "results" / "smoke"
    old_trials = {p.name for p in trial_dirs(exp)}
    r = run_cli(study_cmd(SMOKE), cwd, cache_dir, timeout=120)
    assert r.returncode == 2 and "--fresh" in r.stderr
    r = run_cli(study_cmd(SMOKE, "--fresh"), cwd, cache_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    (aside,) = list((cwd / "results").glob("smoke.old-*"))
    assert {p.name for p in trial_dirs(aside)} == old_trials and (aside / "finished.json").exists()
    assert len(trial_dirs(exp)) == load_spec(SMOKE).num_trials and (exp / "finished.json").exists()
    assert "moved the old results aside" in r.stdout


@pytest.mark.ray
@pytest.mark.slow
def test_killed_study_resumes_without_rerunning_or_losing_trials(tmp_path: Path, cache_dir: Path) -> None:
    study = write_study(tmp_path / "resume.toml", study={"name": "resume", "num_samples": 4}, train={"epochs": 4})
    spec = load_spec(study)
    exp = tmp_path / "results" / "resume"
    log = tmp_path / "first.log"
    proc = start_cli(study_cmd(study), tmp_path, cache_dir, log)
    try:
        wait_for(lambda: exp.is_dir() and any(checkpoints(t) for t in trial_dirs(exp)), 240,
                 "a first trial checkpoint", proc, log)
    finally:
        kill_session(proc)
    statuses = trial_statuses(exp)
    assert len(statuses) < spec.num_trials or set(statuses.values()) != {"TERMINATED"}, "killed too late"
    done_before = {t.name: (t / "result.json").read_bytes() for t in trial_dirs(exp)
                   if statuses.get(result_rows(t)[-1]["trial_id"] if result_rows(t) else "") == "TERMINATED"}

    r = run_cli(study_cmd(study), tmp_path, cache_dir)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert "resuming the unfinished study" in r.stdout
    trials = trial_dirs(exp)
    assert len(trials) == spec.num_trials
    for trial in trials:
        assert [row["epoch"] for row in result_rows(trial)] == list(range(4)), trial.name  # no loss, no repeats
    for name, before in done_before.items():
        assert (exp / name / "result.json").read_bytes() == before, f"finished trial {name} was rerun"
    assert set(trial_statuses(exp).values()) == {"TERMINATED"}
    assert (exp / "finished.json").exists() and (exp / "best.toml").exists()
    study_db = optuna.load_study(study_name="resume", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study_db.trials) == spec.num_trials


@pytest.mark.ray
@pytest.mark.slow
def test_crashed_trial_is_retried_from_its_last_checkpoint(tmp_path: Path, cache_dir: Path) -> None:
    study = write_study(tmp_path / "crash.toml", study={"name": "crash", "num_samples": 1}, train={"epochs": 4},
                        search={"max_failures": 1})
    exp = tmp_path / "results" / "crash"
    log = tmp_path / "crash.log"
    proc = start_cli(study_cmd(study), tmp_path, cache_dir, log)
    try:
        wait_for(lambda: exp.is_dir() and any(len(checkpoints(t)) >= 2 for t in trial_dirs(exp)), 240,
                 "a trial's second checkpoint", proc, log)
        assert kill_trial_workers(proc.pid), "no trial worker found in the study's session"
        assert proc.wait(timeout=300) == 0, tail(log)
    finally:
        kill_session(proc)
    (trial,) = trial_dirs(exp)
    rows = result_rows(trial)
    assert sorted({row["epoch"] for row in rows}) == list(range(4)), tail(log)
    assert rows[-1]["iterations_since_restore"] < rows[-1]["training_iteration"]  # resumed, not restarted
    assert (trial / "error.txt").exists()  # the crash is on record
    assert "resuming from" in tail(log, 10**6) and trial_statuses(exp) == {rows[-1]["trial_id"]: "TERMINATED"}


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_test_flag_shrinks_a_real_study(tmp_path: Path, cache_dir: Path) -> None:
    r = run_cli(study_cmd(ROOT / "search_spaces" / "kl.toml", "--smoke-test"), tmp_path, cache_dir)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    exp = tmp_path / "results" / "kl-smoke"
    trials = trial_dirs(exp)
    assert len(trials) == 2 and not (tmp_path / "results" / "kl").exists()
    for trial in trials:
        assert [row["epoch"] for row in result_rows(trial)] == [0, 1]
    assert (exp / "best.toml").exists() and (exp / "finished.json").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_diverged_trial_ends_marked_and_the_study_completes(tmp_path: Path, cache_dir: Path) -> None:
    study = write_study(tmp_path / "diverge.toml", study={"name": "diverge", "num_samples": 1},
                        search={"sampler": "grid"}, space={"lr": {"choices": [1e-3, 1e30]}})
    r = run_cli(study_cmd(study), tmp_path, cache_dir)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    exp = tmp_path / "results" / "diverge"
    by_lr = {json.loads((t / "params.json").read_text())["lr"]: t for t in trial_dirs(exp)}
    assert sorted(by_lr) == [1e-3, 1e30]
    last = result_rows(by_lr[1e30])[-1]
    assert last["diverged"] is True and not (by_lr[1e30] / "error.txt").exists()
    assert all(row["diverged"] is False for row in result_rows(by_lr[1e-3]))
    assert set(trial_statuses(exp).values()) == {"TERMINATED"}
    assert load_config(exp / "best.toml").train.lr == 1e-3
    assert "1 diverged" in r.stdout


def _get(url: str, token: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


@pytest.mark.ray
@pytest.mark.slow
def test_dashboard_answers_only_with_the_token(tmp_path: Path, cache_dir: Path) -> None:
    study = write_study(tmp_path / "dash.toml", study={"name": "dash", "num_samples": 1}, train={"epochs": 50})
    log = tmp_path / "dash.log"
    proc = start_cli(study_cmd(study), tmp_path, cache_dir, log)
    try:
        url = wait_for(lambda: (m := re.search(r"Ray dashboard: (http://127\.0\.0\.1:\d+)", tail(log, 10**6)))
                       and m.group(1), 180, "the dashboard URL", proc, log)
        token = subprocess.run([str(RAY_BIN), "get-auth-token"], capture_output=True, text=True,
                               check=True).stdout.strip()
        assert token
        wait_for(lambda: _get(f"{url}/api/version", token) == 200, 60, "the dashboard API", proc, log)
        for path in ("/api/version", "/api/jobs/"):
            assert _get(url + path, token) == 200, path
            assert _get(url + path, None) == 401, path
            assert _get(url + path, "not-the-token") in (401, 403), path
        req = urllib.request.Request(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            jobs = json.loads(resp.read())
        assert any("study.run" in (job.get("entrypoint") or "") for job in jobs), jobs  # the study is the driver job
    finally:
        kill_session(proc)
