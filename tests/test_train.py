from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch

from cvae.config import Config, ConfigError
from cvae.data import Dataset, Frames, load_dataset
from cvae.model import CVAE
from cvae.checkpoint import CheckpointError, epoch_dirs, latest_good_checkpoint, load_checkpoint
from cvae.evaluate import load_model, validate
from cvae.metrics import CONTRACT, METRIC_NAMES
from cvae.train import run, seed_everything
from study_helpers import PYTHON, ROOT



def tiny(cache: Path, **train: object) -> Config:
    """The smallest run: dims 16/4/4/16, 16x32 frames (bf16 and fp16 autocast are slow on a CPU)."""
    return Config.from_dict({
        "model": {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16},
        "data": {"frame_H": 16, "frame_W": 32, "video_len": 4, "val_video_len": 8, "synthetic_train_videos": 1,
                 "synthetic_train_frames": 16, "synthetic_test_sequences": 0, "cache_dir": str(cache)},
        "train": {"epochs": 2, "batch_size": 2, "max_steps_per_epoch": 2, "threads": 1, **train},
    })


@pytest.mark.slow
def test_reports_contract_metrics_every_epoch_and_checkpoints(tmp_path: Path, cache_dir: Path) -> None:
    seen: list[tuple[dict, Path | None]] = []
    summary = run(tiny(cache_dir, epochs=3, kl_anneal_type="Monotonic", kl_anneal_cycle=2),
                  lambda m, c: seen.append((m, c)), tmp_path / "ckpt")
    assert [m["epoch"] for m, _ in seen] == [0, 1, 2]
    for m, ckpt in seen:
        assert set(m) == set(METRIC_NAMES)  # the one list of metric names is what a run reports, no more, no less
        assert all(math.isfinite(m[k]) for k in CONTRACT)
    assert [m["beta"] for m, _ in seen] == [0.0, 0.5, 1.0]
    assert summary.epochs_run == 3 and not summary.diverged
    assert [p.name for p in epoch_dirs(tmp_path / "ckpt")][-1] == "epoch_0002"
    frames = (seen[-1][1] / "psnr_per_frame.json").read_text()
    assert '"psnr"' in frames and '"psnr_hold"' in frames
    model, cfg = load_model(seen[-1][1])
    assert cfg == tiny(cache_dir, epochs=3, kl_anneal_type="Monotonic", kl_anneal_cycle=2)


@pytest.mark.slow  # 16 epochs
def test_learning_beats_its_start_on_a_short_clip(cache_dir: Path) -> None:
    """Overfit test: a small model on one short clip, validated on that clip, learns within a
    few dozen steps (the smallest dims that keep RGB colour intact through the network)."""
    cfg = Config.from_dict({
        "model": {"F_dim": 32, "L_dim": 8, "N_dim": 4, "D_out_dim": 32},
        "data": {"frame_H": 16, "frame_W": 32, "video_len": 4, "val_video_len": 12, "synthetic_train_videos": 1,
                 "synthetic_train_frames": 32, "cache_dir": str(cache_dir)},
        "train": {"epochs": 16, "batch_size": 2, "lr": 3e-3, "milestones": [100], "threads": 1,
                  "kl_anneal_type": "None", "tfr": 1.0},
    })
    d = load_dataset(cfg.data)
    clip = Dataset(train=d.train, val=Frames(d.train.img[:12], d.train.label[:12], d.train.root), root=d.root)
    seed_everything(0)
    before = validate(CVAE(cfg.model), clip, seed=0)["val/psnr"]
    summary = run(cfg, dataset=clip)
    first, last = summary.history[0], summary.history[-1]
    assert last["train/mse"] < 0.6 * first["train/mse"]
    assert summary.best_val_psnr > before + 3.0


@pytest.mark.slow
def test_resume_is_exact(tmp_path: Path, cache_dir: Path) -> None:
    cfg = tiny(cache_dir, epochs=2, tfr=0.5)
    straight = run(cfg, checkpoint_dir=tmp_path / "a")
    first = run(cfg.replace(train={"epochs": 1}), checkpoint_dir=tmp_path / "b")
    resumed = run(cfg, checkpoint_dir=tmp_path / "b", resume_from=first.checkpoint)
    a = load_checkpoint(straight.checkpoint)["model"]
    b = load_checkpoint(resumed.checkpoint)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = {"time/epoch_s", "train/frames_per_s", "val/frames_per_s", "time/val_s"}
    strip = lambda h: [{k: v for k, v in m.items() if k not in drop} for m in h]
    assert strip(resumed.history) == strip(straight.history)


@pytest.mark.slow
def test_nan_loss_stops_cleanly_with_a_diverged_flag(tmp_path: Path, cache_dir: Path) -> None:
    seen: list[dict] = []
    summary = run(tiny(cache_dir, epochs=5, lr=1e30, max_steps_per_epoch=4), lambda m, c: seen.append(m), tmp_path)
    assert summary.diverged
    assert seen[-1]["diverged"] is True
    assert len(seen) < 5
    assert math.isnan(seen[-1]["train/loss"])


@pytest.mark.slow
def test_corrupt_checkpoint_is_detected_and_skipped(tmp_path: Path, cache_dir: Path) -> None:
    run(tiny(cache_dir, epochs=2, keep_checkpoints=2), checkpoint_dir=tmp_path)
    newest = epoch_dirs(tmp_path)[-1]
    state = newest / "state.pt"
    state.write_bytes(state.read_bytes()[:-100] + b"\0" * 100)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(newest)
    assert latest_good_checkpoint(tmp_path) == epoch_dirs(tmp_path)[0]


@pytest.mark.slow
def test_cli_smoke_run_as_a_user_types_it(tmp_path: Path, cache_dir: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('[model]\nF_dim = 16\nL_dim = 4\nN_dim = 4\nD_out_dim = 16\n[train]\nepochs = 3\n')
    cmd = [PYTHON, "-m", "cvae.train", "--config", str(cfg), "--smoke-test"]
    env = {"CVAE_CACHE": str(cache_dir), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "val/psnr" in done.stdout and "val/psnr_hold" in done.stdout
    assert (tmp_path / "results/runs/run-smoke/epoch_0001/state.pt").is_file()
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--fresh" in again.stderr  # finished: refused, nothing lost
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nkl_anneal_cylce = 3\n")
    rej = subprocess.run([PYTHON, "-m", "cvae.train", "--config", str(bad)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert rej.returncode == 2
    assert "bad.toml" in rej.stderr and "train.kl_anneal_cylce" in rej.stderr and "kl_anneal_cycle" in rej.stderr


# -- device and precision -----------------------------------------------------------------------
def _numbers(summary) -> list[tuple]:
    return [(m["train/loss"], m["train/mse"], m["train/kl"], m["val/psnr"], m["val/psnr_step"]) for m in summary.history]


@pytest.mark.slow
def test_cpu_and_auto_give_the_same_numbers_on_a_cpu_machine(cache_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("auto means CUDA on this machine")
    cpu = run(tiny(cache_dir, device="cpu", tfr=0.5))
    auto = run(tiny(cache_dir, device="auto", tfr=0.5))
    assert _numbers(cpu) == _numbers(auto)
    assert cpu.history[-1]["device"] == "cpu"


def test_asking_for_cuda_without_it_is_a_config_error(cache_dir: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="train.device.*no CUDA device"):
        run(tiny(cache_dir, device="cuda"), checkpoint_dir=tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()  # refused before any work


@pytest.mark.slow
def test_bf16_autocast_trains_close_to_fp32(cache_dir: Path) -> None:
    fp32 = run(tiny(cache_dir, epochs=3, precision="fp32", kl_anneal_type="None"))
    bf16 = run(tiny(cache_dir, epochs=3, precision="bf16", kl_anneal_type="None"))
    for a, b in zip(fp32.history, bf16.history):
        # bf16 keeps 8 bits of mantissa: the same run, within a few percent on a short run
        assert b["train/mse"] == pytest.approx(a["train/mse"], rel=0.05)
        assert b["val/psnr"] == pytest.approx(a["val/psnr"], abs=0.5)
    assert all(math.isfinite(m["train/loss"]) for m in bf16.history)


# fp16 autocast is slow on a CPU: a slow test, bf16 keeps the path in the unit tier
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])
def test_resume_is_exact_with_precision_set(tmp_path: Path, cache_dir: Path, precision: str) -> None:
    cfg = tiny(cache_dir, epochs=2, tfr=0.5, precision=precision, device="cpu")
    straight = run(cfg, checkpoint_dir=tmp_path / "a")
    first = run(cfg.replace(train={"epochs": 1}), checkpoint_dir=tmp_path / "b")
    resumed = run(cfg, checkpoint_dir=tmp_path / "b", resume_from=first.checkpoint)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["scaler"] == b["scaler"]
    assert _numbers(straight) == _numbers(resumed)
    model, loaded = load_model(resumed.checkpoint)
    assert loaded.train.precision == precision and next(model.parameters()).device.type == "cpu"


@pytest.mark.slow
def test_compiled_modules_train_like_eager(cache_dir: Path) -> None:
    eager = run(tiny(cache_dir, epochs=1, max_steps_per_epoch=2, kl_anneal_type="None"))
    compiled = run(tiny(cache_dir, epochs=1, max_steps_per_epoch=2, kl_anneal_type="None", compile=True))
    assert compiled.history[0]["train/mse"] == pytest.approx(eager.history[0]["train/mse"], rel=1e-3)
    assert compiled.history[0]["val/psnr"] == pytest.approx(eager.history[0]["val/psnr"], abs=1e-2)


@pytest.mark.slow
def test_cli_refuses_a_cuda_device_it_cannot_see(tmp_path: Path, cache_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = tmp_path / "run.toml"
    cfg.write_text('[train]\ndevice = "cuda"\n')
    env = {"CVAE_CACHE": str(cache_dir), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([PYTHON, "-m", "cvae.train", "--config", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "train.device" in done.stderr and "no CUDA device" in done.stderr
    assert not (tmp_path / "results").exists()
