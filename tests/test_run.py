"""`python -m study.run` (study.run): bad input refused before Ray, results refused to be overwritten,
how many trials fit the cluster, and (marked ray) real studies end to end: results on disk, resume
after SIGKILL (watched by the console and `cvae-study status` as it runs, is killed and ends),
--fresh, a diverged trial, the dashboard's token and GPUs Ray is told of (--smoke-test on a shipped
study is test_driver.py's two-drivers study; a crashed trial retried is test_faults.py's)."""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import optuna
import pytest

from cvae.checkpoint import verify_checkpoint
from cvae.config import load_config
from study import run as study_run
from study._compat import EXPERIMENT_STATE_GLOB
from study.driver_state import COPIES_DIR
from study.run import main, refusal, trials_that_fit
from study.spec import load_spec, smoke_spec
from study_helpers import (CONTRACT, RAY_BIN, ROOT, SMOKE, StudyRun, checkpoints, copy_of, dashboard_get, kill_session,
                           overlap, ray_head, result_rows, run_cli, session_titles, start_cli, study_cmd, tail,
                           trial_dirs, trial_span, trial_statuses, wait_for, wait_for_first_checkpoint, write_study)


# -- bad input: exit 2 before Ray, nothing under results/ ----------------------------------------
BAD_STUDIES = {
    "unknown_key": ({"train": {"epoch": 3}}, "train.epoch"),
    "wrong_type": ({"study": {"max_concurrent": "two"}}, "study.max_concurrent"),
    "missing_dataset": ({"data": {"root": "no/such/dataset"}}, "data.root"),
    "not_the_lab_layout": ({"data": {"root": "."}}, "data.root"),  # cvae.data's check, made before Ray
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


@pytest.fixture(scope="module")
def smoke_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """smoke.toml without the embedded test split, which a refused run loads and never uses (5 x 630 frames, 5 s)."""
    return write_study(tmp_path_factory.mktemp("study") / "smoke.toml", data={"synthetic_test_sequences": 0})


@pytest.mark.slow
def test_finished_study_is_refused_with_a_hint(smoke_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "results" / "smoke"
    _fake_experiment(exp, finished=True, study_text=smoke_file.read_text())
    for flags in ([], ["--resume"]):
        assert main([str(smoke_file), "--storage", str(tmp_path / "results"), *flags]) == 2
        err = capsys.readouterr().err
        assert "finished" in err and "--fresh" in err
    assert sorted(p.name for p in exp.iterdir()) == ["finished.json", "study.toml", "tuner.pkl"]


def test_resume_needs_something_to_resume(smoke_file: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(smoke_file), "--storage", str(tmp_path / "results"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_no_dashboard_is_for_a_local_ray_only(smoke_file: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # a cluster's dashboard is the cluster's: asking to leave it out while joining one is refused
    with pytest.raises(SystemExit) as info:
        main([str(smoke_file), "--storage", str(tmp_path / "results"), "--address", "127.0.0.1:6379", "--no-dashboard"])
    assert info.value.code == 2
    assert "--no-dashboard: not allowed with argument --address" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_changed_study_file_is_not_resumed(smoke_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "results" / "smoke"
    changed = smoke_file.read_text().replace("num_samples = 3", "num_samples = 5")
    _fake_experiment(exp, finished=False, study_text=changed)
    assert main([str(smoke_file), "--storage", str(tmp_path / "results")]) == 2
    assert "changed since" in capsys.readouterr().err


def test_foreign_folder_is_not_overwritten(smoke_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "results" / "smoke"
    exp.mkdir(parents=True)
    (exp / "notes.txt").write_text("mine")
    assert main([str(smoke_file), "--storage", str(tmp_path / "results")]) == 2
    assert "--fresh" in capsys.readouterr().err
    assert (exp / "notes.txt").read_text() == "mine"


# -- resources: GPUs, and how many trials at once -------------------------------------------------
def test_max_concurrent_defaults_to_what_the_cluster_holds() -> None:
    assert trials_that_fit({"CPU": 2.0}, 1) == 2  # the shipped CPU studies' 2 at a time, on 2 cores
    assert trials_that_fit({"CPU": 16.0, "GPU": 1.0}, 1, 0.25) == 4  # the GPU is the limit
    assert trials_that_fit({"CPU": 16.0, "GPU": 1.0}, 1, 0.1) == 10  # 1 / 0.1 is 10, not 9.99..
    assert trials_that_fit({"CPU": 3.0, "GPU": 8.0}, 1, 0.5) == 3  # the CPUs are
    assert trials_that_fit({"CPU": 3.0}, 2) == 1 and trials_that_fit({"CPU": 0.5}, 1) == 1


def test_a_cluster_without_what_a_trial_needs_is_named() -> None:
    assert refusal({"CPU": 2.0, "GPU": 1.0}, 1, 0.5) is None and refusal({"CPU": 1.0}, 1) is None
    assert refusal({"CPU": 2.0}, 1, 0.25, "s.toml") == \
        "s.toml: study.gpus_per_trial: 0.25 asked for, but the Ray cluster has 0 GPUs (2 CPUs)"
    assert refusal({"CPU": 4.0, "GPU": 1.0}, 1, 2) == \
        "study.gpus_per_trial: 2 asked for, but the Ray cluster has 1 GPU (4 CPUs)"
    assert refusal({"CPU": 1.0}, 1.5) == \
        "study.cpus_per_trial: 1.5 asked for, but the Ray cluster has 1 CPU: no trial could ever start"


def test_gpu_study_on_a_cluster_without_gpus_exits_2_before_any_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    study = write_study(tmp_path / "gpu.toml", study={"gpus_per_trial": 0.5}, data={"synthetic_test_sequences": 0})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: types.SimpleNamespace(dashboard_url=None))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "memory": 1e9})
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(study_run, "run_study", lambda *a: pytest.fail("a trial started"))
    assert main([str(study), "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {study}: study.gpus_per_trial: 0.5 asked for, but the Ray cluster has 0 GPUs (2 CPUs)\n"


# -- pieces of the runner ------------------------------------------------------------------------
def test_smoke_spec_is_small_and_separate(tmp_path: Path) -> None:
    from cvae.config import smoke_config

    kl = load_spec(ROOT / "search_spaces" / "kl.toml")
    smoke = smoke_spec(kl)
    assert smoke.name == "kl-smoke" and smoke.num_trials == 2 and smoke.seeds == (0,)
    assert smoke.sampler == "random"  # a grid would not fit in 2 trials
    cfg = smoke.config_for({"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 2})
    single = smoke_config(kl.config_for({"kl_anneal_type": "Cyclical", "kl_anneal_cycle": 2}))
    assert cfg.train == single.train and cfg.data == single.data  # cvae's one smoke definition
    assert cfg.model.F_dim == 16  # and a tiny model: a smoke study runs several trials at once
    # its own study file, so results/kl-smoke/study.toml says what ran
    copy = tmp_path / "study.toml"
    copy.write_text(smoke.raw_text)
    assert load_spec(copy).name == "kl-smoke" and load_spec(copy).base_config() == smoke.base_config()


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


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_study_end_to_end(smoke_study: StudyRun) -> None:
    exp, r = smoke_study.exp, smoke_study.proc
    spec = load_spec(SMOKE)
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
    assert "best configuration (val/psnr (max) at each trial's best epoch)" in r.stdout and "val/psnr_hold" in r.stdout
    assert str(exp) in r.stdout
    assert re.search(r"Ray dashboard: http://127\.0\.0\.1:\d+", r.stdout)


@pytest.mark.ray
@pytest.mark.slow
def test_finished_study_refused_then_fresh_moves_it_aside(smoke_study: StudyRun, tmp_path: Path,
                                                         cache_dir: Path) -> None:
    """--fresh moves the finished study aside whole and starts a new one in its place, which is
    killed once it has begun (what follows is any new study's run, which the other tests follow to
    its end)."""
    cwd, exp, _ = copy_of(smoke_study, tmp_path / "copy")  # --fresh moves the study aside: the session's stays
    old_trials = {p.name for p in trial_dirs(exp)}
    r = run_cli(study_cmd(SMOKE), cwd, cache_dir, timeout=120)
    assert r.returncode == 2 and "--fresh" in r.stderr
    log = tmp_path / "fresh.log"
    proc = start_cli(study_cmd(SMOKE, "--fresh"), cwd, cache_dir, log)
    try:
        wait_for(lambda: "plan: " in tail(log, 10**6), 120, "the fresh study's plan", proc, log)
    finally:
        kill_session(proc)
    assert "moved the old results aside" in tail(log, 10**6)
    (aside,) = list((cwd / "results").glob("smoke.old-*"))
    assert {p.name for p in trial_dirs(aside)} == old_trials and (aside / "finished.json").exists()
    # the new study in its place: its own study.toml, none of the old trials, not finished
    assert (exp / "study.toml").read_text() == SMOKE.read_text()
    assert not (exp / "finished.json").exists() and not {p.name for p in trial_dirs(exp)} & old_trials


def _dashboard_answers_only_with_the_token(log: Path, proc: subprocess.Popen[bytes]) -> None:
    """The running study's Ray dashboard: its API answers with `ray get-auth-token`'s token only, and
    lists the study as the driver job."""
    url = wait_for(lambda: (m := re.search(r"Ray dashboard: (http://127\.0\.0\.1:\d+)", tail(log, 10**6)))
                   and m.group(1), 180, "the dashboard URL", proc, log)
    token = subprocess.run([str(RAY_BIN), "get-auth-token"], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert token
    wait_for(lambda: dashboard_get(f"{url}/api/version", token)[0] == 200, 60, "the dashboard API", proc, log)
    for path in ("/api/version", "/api/jobs/"):
        assert dashboard_get(url + path, token)[0] == 200, path
        assert dashboard_get(url + path, None)[0] == 401, path
        assert dashboard_get(url + path, "not-the-token")[0] in (401, 403), path
    code, jobs = dashboard_get(f"{url}/api/jobs/", token)
    assert code == 200 and any("study.run" in (job.get("entrypoint") or "") for job in jobs), jobs  # the study is the driver job


def _status(exp: Path, cwd: Path, cache: Path) -> str:
    r = run_cli([sys.executable, "-m", "study.cli", "status", str(exp)], cwd, cache, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def _saved_statuses(exp: Path) -> dict[str, str]:
    """trial_statuses, or {} while Tune is rewriting its state file in place (cut short, not yet JSON)."""
    try:
        return trial_statuses(exp)
    except ValueError:
        return {}


@pytest.mark.ray
@pytest.mark.slow
def test_killed_study_resumes_without_rerunning_or_losing_trials(tmp_path: Path, cache_dir: Path) -> None:
    """SIGKILL of the driver once a trial has ended and others run, then the same command: no trial lost or
    rerun, even with Tune's experiment state cut short by the kill (its whole copy is put back: the
    race test once met a real one, which Tune could not restore). Along the way, what a user watching sees: the Ray dashboard (token only), the quiet
    console, and `cvae-study status` of the study running, killed (interrupted) and finished (the
    --verbose rerun shows Tune's table). (One study for what were three tests: this one, the
    dashboard's and test_console's watched study.)"""
    study = write_study(tmp_path / "resume.toml", study={"name": "resume", "num_samples": 3, "max_concurrent": 1},
                        train={"epochs": 3})
    spec = load_spec(study)
    exp = tmp_path / "results" / "resume"
    log = tmp_path / "first.log"
    proc = start_cli(study_cmd(study, dashboard=True), tmp_path, cache_dir, log)
    try:
        _dashboard_answers_only_with_the_token(log, proc)
        wait_for_first_checkpoint(exp, proc, log)
        titles = session_titles(proc.pid).values()
        # the trials run in their actors, and the local Ray prestarted no idle workers beside them
        assert any(t.startswith("ray::ImplicitFunc") for t in titles) and "ray::IDLE" not in titles, titles
        running = _status(exp, tmp_path, cache_dir)
        assert f"{exp}: running" in running and "ETA" in running, running
        # killed once a trial has ended, so the rerun has a finished trial to leave alone: as the whole copy
        # of Tune's state says (the one put back below). One trial at a time, so the next one has at most
        # 2 checkpoints by then and Tune (num_to_keep=2) has deleted none that the copy names (one that
        # is gone would send that trial back to an older checkpoint, study._compat.repoint_lost_checkpoints,
        # repeating epochs this test counts exactly; test_compat holds that case)
        wait_for(lambda: "TERMINATED" in _saved_statuses(exp / COPIES_DIR).values(), 240, "a trial to end", proc, log)
    finally:
        kill_session(proc)
    statuses = trial_statuses(exp)
    assert len(statuses) < spec.num_trials or set(statuses.values()) != {"TERMINATED"}, "killed too late"
    done_before = {t.name: (t / "result.json").read_bytes() for t in trial_dirs(exp)
                   if statuses.get(result_rows(t)[-1]["trial_id"] if result_rows(t) else "") == "TERMINATED"}
    assert done_before, statuses
    first = log.read_text(errors="replace")
    assert "plan: 9 trial-epochs (3 trials x 3 epochs)" in first
    assert re.search(r"\[trial \w+\] epoch 0 val/psnr", first)
    assert re.search(r"\d/3 trials done, \d running, \d pending \| best", first), tail(log)
    for noise in ("== Status ==", "repeated", "Checkpoint successfully created"):
        assert noise not in first, f"{noise!r} in the quiet console:\n{first[-3000:]}"
    assert (exp / "driver.json").is_file()  # SIGKILL: the mark stays, its pid is gone
    assert f"{exp}: interrupted" in _status(exp, tmp_path, cache_dir)
    # a kill while Tune copies its experiment state into the folder leaves it cut short, often empty
    (state,) = exp.glob(EXPERIMENT_STATE_GLOB)
    state.write_bytes(b"")

    r = run_cli(study_cmd(study, "--verbose"), tmp_path, cache_dir)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert "resuming the unfinished study" in r.stdout and "== Status ==" in r.stdout
    # resumed with --no-dashboard (study_cmd's default): Ray itself gave no dashboard URL to print
    assert "started a local Ray without its dashboard (--no-dashboard)" in r.stdout and "Ray dashboard:" not in r.stdout
    assert f"{state.name} was cut short (0 bytes) when its driver was killed: put back its last whole copy" in r.stdout
    assert "Failed to restore" not in r.stdout + r.stderr
    assert not (exp / "driver.json").exists()
    trials = trial_dirs(exp)
    assert len(trials) == spec.num_trials
    for trial in trials:
        assert [row["epoch"] for row in result_rows(trial)] == list(range(3)), trial.name  # no loss, no repeats
    for name, before in done_before.items():
        assert (exp / name / "result.json").read_bytes() == before, f"finished trial {name} was rerun"
    assert set(trial_statuses(exp).values()) == {"TERMINATED"}
    assert (exp / "finished.json").exists() and (exp / "best.toml").exists()
    study_db = optuna.load_study(study_name="resume", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study_db.trials) == spec.num_trials
    done = _status(exp, tmp_path, cache_dir)
    assert f"{exp}: finished" in done and "3 of 3 ended" in done and "over the floor" in done


@pytest.mark.ray
@pytest.mark.slow
def test_diverged_trial_ends_marked_and_the_study_completes(diverged_study: StudyRun) -> None:
    exp, r = diverged_study.exp, diverged_study.proc
    by_lr = {json.loads((t / "params.json").read_text())["lr"]: t for t in trial_dirs(exp)}
    assert sorted(by_lr) == [1e-3, 1e30]
    last = result_rows(by_lr[1e30])[-1]
    assert last["diverged"] is True and not (by_lr[1e30] / "error.txt").exists()
    assert all(row["diverged"] is False for row in result_rows(by_lr[1e-3]))
    assert set(trial_statuses(exp).values()) == {"TERMINATED"}
    assert load_config(exp / "best.toml").train.lr == 1e-3
    assert "1 diverged" in r.stdout


# -- GPUs that Ray is told of but CUDA does not have (the scheduling path, testable without a GPU) --
@pytest.mark.ray
@pytest.mark.slow
def test_trials_share_a_fake_gpu_and_never_touch_cuda(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray with 1 declared GPU and no CUDA: two trials of 0.5 GPU each run at once, both assigned
    GPU 0; device "auto" trains on the CPU (this torch has no CUDA at all, so anything initialising
    CUDA would have failed the trial); a study asking for a GPU without --address (where a local Ray
    would find none) is refused with exit 2 before Ray starts."""
    root = Path(tempfile.mkdtemp(prefix="rg-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    try:
        study = write_study(root / "gpu.toml", study={"name": "gpu", "num_samples": 2, "gpus_per_trial": 0.5},
                            train={"epochs": 3})
        study_toml = study.read_text().replace("max_concurrent = 2\n", "")  # the default: what the cluster holds
        study.write_text(study_toml)
        r = run_cli(study_cmd(study, "--storage", str(root / "local")), root, cache_dir, timeout=120)
        assert r.returncode == 2, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert re.search(rf"error: {re.escape(str(study))}: study.gpus_per_trial: 0.5 asked for, but the Ray cluster "
                         r"has 0 GPUs \(\d+ CPUs?\)", r.stderr), r.stderr
        assert "started a local Ray" not in r.stdout  # refused before Ray started: Ray's count, asked without it
        monkeypatch.setenv("RAY_AUTH_MODE", "token")  # as the head started below
        with ray_head(root, cache_dir, "--num-cpus=2", "--num-gpus=1") as address:
            r = run_cli(study_cmd(study, "--address", address, "--storage", str(root / "results")), root, cache_dir)
        assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
        assert "(2 CPUs, 1 GPU)" in r.stdout and "2 trials at a time" in r.stdout, r.stdout[-4000:]
        assert re.search(r"step \d+\.\d\d \(copy \d+\.\d\d\) loss", r.stdout)  # the epoch line's one-step diagnostic
        trials = trial_dirs(root / "results" / "gpu")
        assert len(trials) == 2
        spans = []
        for trial in trials:
            rows = result_rows(trial)
            assert [row["epoch"] for row in rows] == [0, 1, 2]
            for row in rows:
                assert (row["gpu_ids"], row["resources/gpu"], row["device"]) == (["0"], 0.5, "cpu"), row
            spans.append(trial_span(rows))
        assert overlap(spans), f"the two trials did not run at once: {spans}"
        assert "CUDA" not in r.stderr and set(trial_statuses(root / "results" / "gpu").values()) == {"TERMINATED"}
        # the list and share columns go through the analysis into the report
        assert (root / "results" / "gpu" / "report.html").is_file() and "report failed" not in r.stdout + r.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
