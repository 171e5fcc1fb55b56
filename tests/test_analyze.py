"""study.analyze: a results dir -> the trials, epochs and frames tables (hand-made dirs; one real, marked)."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import polars as pl
import pytest
from fake_results import EPOCHS, HOLD, VAL_FRAMES, write_fake_study

from study.analyze import read_study
from study.ranking import trial_objective
from study.results import read_results, trial_params
from study.tables import CONFIG_SCHEMA, STATUSES, analyze, build_tables, load_tables, ranking, setting_label, winner
from study_helpers import StudyRun

TRIAL_COLUMNS = {
    "trial_id": pl.String, "trial": pl.String, "trial_number": pl.Int64, "setting": pl.String, "seed": pl.Int64,
    "status": pl.String, "epochs_run": pl.Int64, "epochs": pl.Int64, "best_val_psnr": pl.Float64,
    "best_val_psnr_epoch": pl.Int64, "last_val_psnr": pl.Float64, "val_psnr_hold": pl.Float64, "objective": pl.Float64,
    "wall_s": pl.Float64, "cpu_s": pl.Float64, "train_frames_per_s": pl.Float64, "hostname": pl.String,
    "node_ip": pl.String, "diverged": pl.Boolean, "error": pl.String, "checkpoint": pl.String, "config": pl.String,
    "kl_anneal_type": pl.String, "kl_anneal_cycle": pl.Int64, "tfr": pl.Float64, "F_dim": pl.Int64,
}
EPOCH_COLUMNS = {
    "trial_id": pl.String, "setting": pl.String, "seed": pl.Int64, "epoch": pl.Int64, "train/loss": pl.Float64,
    "train/mse": pl.Float64, "train/kl": pl.Float64, "beta": pl.Float64, "tfr": pl.Float64,
    "teacher_forcing": pl.Float64, "fast_train": pl.Boolean, "train/sequences": pl.Int64, "lr": pl.Float64,
    "train/frames_per_s": pl.Float64, "threads": pl.Int64, "diverged": pl.Boolean, "val/psnr": pl.Float64,
    "val/psnr_hold": pl.Float64, "val/psnr_min": pl.Float64, "val/ssim": pl.Float64, "val/best_psnr": pl.Float64,
    "time/epoch_s": pl.Float64, "time/cpu_s": pl.Float64, "time_total_s": pl.Float64,
}
FRAME_COLUMNS = {"trial_id": pl.String, "setting": pl.String, "seed": pl.Int64, "frame": pl.Int64,
                 "psnr_final": pl.Float64, "psnr_best": pl.Float64, "psnr_hold": pl.Float64}
CYC2, CYC4, NONE = ("kl_anneal_type=Cyclical, kl_anneal_cycle=2", "kl_anneal_type=Cyclical, kl_anneal_cycle=4",
                    "kl_anneal_type=None")


def _status(trials: pl.DataFrame, setting: str, seed: int) -> str:
    return trials.filter((pl.col("setting") == setting) & (pl.col("seed") == seed))["status"].item()


def _check_schema(df: pl.DataFrame, expected: dict[str, type]) -> None:
    for name, dtype in expected.items():
        assert name in df.columns, f"missing column {name}"
        assert df.schema[name] == dtype, f"{name}: {df.schema[name]} != {dtype}"


def test_tables_have_the_right_rows_columns_and_dtypes(fake: Path) -> None:
    t = build_tables(fake)
    assert t.trials.height == 9
    assert t.trials["trial_id"].n_unique() == 9
    _check_schema(t.trials, TRIAL_COLUMNS)
    assert set(CONFIG_SCHEMA) <= set(t.trials.columns)  # every cvae config field
    # 6 completed x 6 epochs + errored 3 + stopped 2 + diverged 4
    assert t.epochs.height == 6 * EPOCHS + 3 + 2 + 4
    _check_schema(t.epochs, EPOCH_COLUMNS)
    assert "config" not in t.epochs.columns and "hostname" not in t.epochs.columns
    assert t.frames.height == 9 * (VAL_FRAMES - 1)  # every trial has a checkpoint with a curve
    _check_schema(t.frames, FRAME_COLUMNS)
    assert t.frames["frame"].min() == 1 and t.frames["frame"].max() == VAL_FRAMES - 1
    assert t.trials["trial_number"].to_list() == list(range(1, 10))


def test_statuses(fake: Path) -> None:
    t = build_tables(fake).trials
    assert set(t["status"]) <= set(STATUSES)
    assert _status(t, CYC2, 2) == "errored"
    assert _status(t, CYC4, 2) == "stopped_early"
    assert _status(t, NONE, 1) == "diverged"
    assert t.filter(pl.col("status") == "completed").height == 6
    errored = t.filter(pl.col("status") == "errored").row(0, named=True)
    assert errored["error"] == "RuntimeError: simulated crash" and errored["epochs_run"] == 3
    stopped = t.filter(pl.col("status") == "stopped_early").row(0, named=True)
    assert stopped["epochs_run"] == 2 and stopped["epochs"] == EPOCHS and stopped["error"] is None


def test_per_trial_figures(fake: Path) -> None:
    t = build_tables(fake).trials
    best = t.filter((pl.col("setting") == CYC4) & (pl.col("seed") == 1)).row(0, named=True)
    # the fake's val/psnr = base + seed offset + 0.3 e - 0.02 e^2 rises over its 6 epochs
    assert best["best_val_psnr"] == pytest.approx(22.0 + 0.2 + 0.3 * 5 - 0.02 * 25)
    assert best["best_val_psnr_epoch"] == 5 and best["last_val_psnr"] == best["best_val_psnr"]
    assert best["val_psnr_hold"] == HOLD and best["objective"] == best["last_val_psnr"]
    assert best["wall_s"] == pytest.approx(sum(10.0 + 5 for _ in range(EPOCHS)))
    assert best["cpu_s"] == pytest.approx(0.9 * best["wall_s"])
    assert best["train_frames_per_s"] == pytest.approx(21.0)
    assert best["hostname"] == "node1" and best["node_ip"] == "10.0.0.2"
    assert best["checkpoint"].endswith("/checkpoint_000005")
    assert best["F_dim"] == 16 and best["epochs"] == EPOCHS and best["tfr"] == 0.8  # fixed, from config.json


def test_diverged_trial_keeps_its_rows_with_nulls(fake: Path) -> None:
    t = build_tables(fake)
    tid = t.trials.filter(pl.col("status") == "diverged")["trial_id"].item()
    rows = t.epochs.filter(pl.col("trial_id") == tid).sort("epoch")
    assert rows.height == 4 and rows["diverged"].to_list() == [False, False, False, True]
    last = rows.row(-1, named=True)
    assert last["train/loss"] is None and last["val/psnr"] is None  # NaN in result.json -> null
    best = t.trials.filter(pl.col("trial_id") == tid).row(0, named=True)
    assert best["best_val_psnr_epoch"] == 2 and best["diverged"] is True


def test_conditional_params_are_null_where_inactive(fake: Path) -> None:
    t = build_tables(fake).trials
    none = t.filter(pl.col("kl_anneal_type") == "None")
    assert none.height == 3 and none["kl_anneal_cycle"].null_count() == 3
    assert set(t.filter(pl.col("kl_anneal_type") == "Cyclical")["kl_anneal_cycle"]) == {2, 4}
    # ... while the config actually used keeps the fallback value
    assert {json.loads(c)["train"]["kl_anneal_cycle"] for c in none["config"]} == {4}
    assert set(t["setting"]) == {CYC2, CYC4, NONE}
    assert "__trial_index__" not in t.columns  # unknown keys of params.json are ignored


@pytest.mark.slow
def test_ranking(fake: Path) -> None:
    t = build_tables(fake)
    r = ranking(t, read_study(fake))
    assert r["setting"].to_list() == [CYC4, CYC2, NONE] and r["rank"].to_list() == [1, 2, 3]  # best mean first
    top = r.row(0, named=True)
    values = [22.0 + o + 0.3 * e - 0.02 * e * e for o, e in ((0.0, 5), (0.2, 5), (-0.15, 1))]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert top["n"] == 3 and top["mean"] == pytest.approx(mean) and top["sd"] == pytest.approx(sd)
    assert top["kl_anneal_cycle"] == 4 and top["n_stopped_early"] == 1 and top["seeds"] == [0, 1, 2]
    assert top["lost"] == 0 and top["complete"] and top["best_seed"] == 1 and top["best_epoch"] == 5
    assert top["best_value"] == pytest.approx(max(values)) and top["best_checkpoint"].endswith("/checkpoint_000005")
    assert top["best_trial"] == t.trials.filter(pl.col("trial_id") == top["best_trial_id"])["trial"].item()
    assert r.filter(pl.col("setting") == NONE)["kl_anneal_cycle"].item() is None
    assert winner(r) == top and winner(r.head(0)) is None


@pytest.mark.slow
def test_ranking_puts_a_setting_that_lost_a_seed_below_complete_ones(fake: Path) -> None:
    """The diverged trial of None lost its only scored epochs: None then ranks last, even when best."""
    t = build_tables(fake)
    lost = t.trials.with_columns(objective=pl.when((pl.col("setting") == NONE) & (pl.col("status") == "diverged"))
                                 .then(None).otherwise(pl.col("objective")))
    lost = lost.with_columns(objective=pl.when(pl.col("setting") == NONE).then(pl.col("objective") + 10)
                             .otherwise(pl.col("objective")))
    r = ranking(type(t)(lost, t.epochs, t.frames), read_study(fake))
    assert r["setting"].to_list() == [CYC4, CYC2, NONE]
    none = r.row(2, named=True)
    assert none["lost"] == 1 and not none["complete"] and none["n"] == 2 and none["mean"] > r["mean"][0]


@pytest.mark.parametrize(("objective", "mode", "want"), [
    ("best", "max", (5.0, 1)), ("best", "min", (1.0, 0)), ("last", "max", (None, None)), ("last", "min", (None, None))])
def test_trial_objective(objective: str, mode: str, want: tuple) -> None:
    # epoch 1 reported twice (a resumed trial): the later report wins; the last epoch is NaN
    reports = [(0, 1.0), (1, 9.0), (1, 5.0), (2, 3.0), (3, math.nan)]
    assert trial_objective(reports, objective, mode) == want
    assert trial_objective(reports[:-1], "last", mode) == (3.0, 2)
    assert trial_objective([(0, 2.0), (1, 2.0)], "best", "max") == (2.0, 0)  # the first epoch that reached it
    assert trial_objective([], objective, mode) == (None, None)
    assert trial_objective([(0, None), (1, float("inf"))], objective, mode) == (None, None)


@pytest.mark.slow
def test_partial_study(tmp_path: Path) -> None:
    """Caught mid-run: a running trial without checkpoint, a pending one with params.json only."""
    t = build_tables(write_fake_study(tmp_path, partial=True))
    assert t.trials.height == 10
    running = t.trials.filter(pl.col("status") == "running").sort("trial_number")
    assert running.height == 2
    first, pending = running.row(0, named=True), running.row(1, named=True)
    assert first["epochs_run"] == 2 and first["checkpoint"] is None and first["best_val_psnr"] is not None
    assert pending["epochs_run"] == 0 and pending["best_val_psnr"] is None and pending["setting"] == NONE
    assert not t.frames.filter(pl.col("trial_id").is_in([first["trial_id"], pending["trial_id"]])).height


@pytest.mark.slow
@pytest.mark.parametrize("partial", [False, True])
def test_without_ray_experiment_state(tmp_path: Path, partial: bool) -> None:
    """No experiment_state-*.json: error.txt, finished.json and epoch counts decide."""
    t = build_tables(write_fake_study(tmp_path, partial=partial, state=False)).trials
    assert _status(t, CYC2, 2) == "errored"
    assert _status(t, NONE, 1) == "diverged"
    # a short trial is stopped early once the study has finished, else it may still be running
    assert _status(t, CYC4, 2) == ("running" if partial else "stopped_early")


def test_retried_trial_with_error_txt_is_judged_by_ray(fake: Path) -> None:
    """A crash retried from its checkpoint leaves error.txt; Ray's TERMINATED + all epochs = completed."""
    d = next(d for d in fake.iterdir() if d.name.startswith("train_cvae_") and "seed=0" in d.name)
    (d / "error.txt").write_text("RuntimeError: a crash that a retry fixed\n")
    t = build_tables(fake).trials
    assert t.filter(pl.col("trial") == d.name)["status"].item() == "completed"


def test_resumed_trial_reports_each_epoch_once(fake: Path) -> None:
    """After a restore Ray re-reports the epochs after the last checkpoint: the newest row wins."""
    d = sorted(d for d in fake.iterdir() if d.name.startswith("train_cvae_"))[0]
    lines = (d / "result.json").read_text().splitlines()
    again = json.loads(lines[-1])
    again["val/psnr"] = 99.0
    with (d / "result.json").open("a") as f:
        f.write(json.dumps(again) + "\n")
        f.write('{"epoch": 6, "train/loss": 0.1, "val/ps')  # a line Ray was writing when we read
    t = build_tables(fake)
    tid = t.trials.filter(pl.col("trial") == d.name)["trial_id"].item()
    rows = t.epochs.filter(pl.col("trial_id") == tid)
    assert rows.height == EPOCHS and rows["epoch"].n_unique() == EPOCHS
    assert rows.sort("epoch")["val/psnr"][-1] == 99.0


def test_read_results_nonfinite_and_empty(tmp_path: Path) -> None:
    p = tmp_path / "result.json"
    p.write_text('{"epoch": 0, "a": NaN, "b": Infinity, "c": -Infinity, "s": "NaN"}\n')
    df = read_results(p)
    assert df.row(0, named=True) == {"epoch": 0, "a": None, "b": None, "c": None, "s": "NaN"}
    p.write_text("")
    assert read_results(p).height == 0
    assert read_results(tmp_path / "missing.json").height == 0


def test_params_cut_short_are_read_from_the_result_rows(tmp_path: Path) -> None:
    """Tune's driver rewrites params.json in place on every sync: one killed meanwhile is empty or cut
    short, and the trial's sampled values come from the config Tune writes into each result row."""
    trial = tmp_path / "train_cvae_1"
    trial.mkdir()
    config = {"tfr": 0.25, "kl_anneal_type": "Cyclical", "seed": 2}
    (trial / "result.json").write_text(json.dumps({"epoch": 0, "config": config}) + "\n")
    for cut in ("", '{"tfr": 0.2'):
        (trial / "params.json").write_text(cut)
        assert trial_params(trial) == config
    (trial / "params.json").write_text(json.dumps({"tfr": 0.5, "kl_anneal_type": "None", "seed": 0}))
    assert trial_params(trial)["tfr"] == 0.5  # a whole params.json is the record


@pytest.mark.slow
def test_parquet_written_and_load_tables_round_trips(fake: Path) -> None:
    built = analyze(fake)
    for name in ("trials", "epochs", "frames"):
        assert (fake / "tables" / f"{name}.parquet").is_file()
    loaded = load_tables(fake)
    for name in ("trials", "epochs", "frames"):
        assert getattr(loaded, name).equals(getattr(built, name)), name
    # a newer result on disk makes load_tables rebuild instead of serving stale tables
    d = sorted(d for d in fake.iterdir() if d.name.startswith("train_cvae_"))[0]
    future = time.time() + 5
    (d / "error.txt").write_text("RuntimeError: late\n")
    os.utime(d / "error.txt", (future, future))
    assert load_tables(fake).trials.filter(pl.col("trial") == d.name)["error"].item() == "RuntimeError: late"


@pytest.mark.slow
def test_study_file_fallbacks(tmp_path: Path) -> None:
    d = write_fake_study(tmp_path)
    info = read_study(d)
    assert info.spec is not None and info.searched == ("kl_anneal_type", "kl_anneal_cycle")
    # a dataset that is gone does not matter here (study.run checks the dataset, not load_spec)
    text = (d / "study.toml").read_text()
    (d / "study.toml").write_text(text.replace("[data]\n", '[data]\nroot = "/no/such/dataset"\n'))
    assert read_study(d).spec is not None
    # a key this version does not know (say, from a newer one): load_spec refuses, the raw tables answer
    (d / "study.toml").write_text(text.replace("[study]\n", "[study]\nfrom_the_future = 1\n"))
    info = read_study(d)
    assert info.spec is None and info.name == "fake" and info.seeds == (0, 1, 2)
    assert set(info.searched) == {"kl_anneal_type", "kl_anneal_cycle"}
    assert set(build_tables(d).trials["setting"]) == {CYC2, CYC4, NONE}
    # no study file at all: the sampled keys are the searched ones
    (d / "study.toml").unlink()
    t = build_tables(d).trials
    assert read_study(d).name == "fake" and t.height == 9
    assert t.filter(pl.col("setting") == NONE).height == 3


def test_setting_label() -> None:
    assert setting_label({"tfr": 0.548813, "kl_anneal_type": "None", "seed": 1}, ["tfr", "kl_anneal_type"]) == \
        "tfr=0.5488, kl_anneal_type=None"
    assert setting_label({"seed": 3}, []) == "default"


def test_empty_and_missing_dirs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    t = build_tables(tmp_path / "empty")
    assert t.trials.height == 0 and t.epochs.height == 0 and t.frames.height == 0
    with pytest.raises(FileNotFoundError):
        analyze(tmp_path / "missing")


@pytest.mark.ray
@pytest.mark.slow
def test_real_smoke_study(smoke_study: StudyRun) -> None:
    exp = smoke_study.exp
    t = analyze(exp)
    info = read_study(exp)
    assert info.searched and info.name == "smoke"
    assert t.trials.height >= 1
    _check_schema(t.trials, {k: v for k, v in TRIAL_COLUMNS.items() if k not in ("kl_anneal_cycle",)})
    assert set(t.trials["status"]) <= set(STATUSES)
    done = t.trials.filter(pl.col("status") == "completed")
    assert done.height >= 1
    row = done.row(0, named=True)
    assert row["epochs_run"] == row["epochs"] and row["best_val_psnr"] is not None and row["checkpoint"]
    assert row["val_psnr_hold"] is not None and row["wall_s"] > 0 and row["cpu_s"] is not None
    _check_schema(t.epochs, {k: v for k, v in EPOCH_COLUMNS.items()})
    assert t.epochs.height == t.trials["epochs_run"].sum()
    assert t.frames.height > 0 and t.frames["psnr_final"].null_count() == 0
    _check_schema(t.frames, FRAME_COLUMNS)
    assert load_tables(exp).trials.equals(t.trials)
