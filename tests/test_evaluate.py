"""Validation metrics: the one-step diagnostic beside its floor, exact against a per-frame loop."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from torch import Tensor

from cvae import evaluate
from cvae.config import Config, ModelConfig, load_config
from cvae.data import load_dataset, to_tensor
from cvae.evaluate import predict_steps, val_noise, validate
from cvae.metrics import psnr_per_frame
from cvae.model import CVAE
from study_helpers import PYTHON, ROOT, benchmark


class Copycat(CVAE):
    """A stand-in model that returns its input frame unchanged: it scores exactly the copy floors."""

    def step(self, prev: Tensor, label: Tensor, z: Tensor | None = None) -> Tensor:
        return prev.clone()

    def rollout(self, first: Tensor, label: Tensor, z: Tensor | None = None, chunk: int = 128) -> Tensor:
        return first[:, None].expand(-1, label.shape[1] - 1, -1, -1, -1).clone()


def small(cache: Path, val: int = 40) -> Config:
    return Config.from_dict({
        "model": {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16},
        "data": {"video_len": 4, "val_video_len": val, "synthetic_train_videos": 1,
                 "synthetic_train_frames": 8, "synthetic_test_sequences": 0, "cache_dir": str(cache)},
    })


def test_a_model_that_copies_its_input_scores_the_copy_floors(cache_dir: Path) -> None:
    cfg = small(cache_dir)
    data = load_dataset(cfg.data)
    m = validate(Copycat(cfg.model), data, seed=0)
    assert m["val/psnr_step"] == pytest.approx(m["val/psnr_step_hold"], abs=1e-9)
    assert m["val/psnr"] == pytest.approx(m["val/psnr_hold"], abs=1e-9)
    frames = to_tensor(data.val.img)  # (T, 3, H, W): consecutive true frames, computed directly here
    mse = ((frames[1:] - frames[:-1]) ** 2).mean(dim=(1, 2, 3)).double()
    assert m["val/psnr_step_hold"] == pytest.approx(float((-10 * torch.log10(mse)).mean()), abs=1e-4)
    # the dancer moves: copying the previous frame beats repeating frame 0 on this video
    assert m["val/psnr_step_hold"] > m["val/psnr_hold"]


@pytest.mark.slow
def test_batched_one_step_pass_equals_one_step_per_frame(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small(cache_dir, val=23)
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = CVAE(ModelConfig(16, 4, 4, 16)).eval()
    monkeypatch.setattr(evaluate, "STEP_CHUNK", 5)  # cross several chunk boundaries, a ragged last one
    fast = predict_steps(model, data, seed=3)[0]  # (T-1, 3, H, W)
    img, label = to_tensor(data.val.img), to_tensor(data.val.label)
    z = val_noise(model, data, seed=3)
    with torch.no_grad():
        slow = torch.stack([model.step(img[i - 1:i], label[i:i + 1], z[i - 1])[0] for i in range(1, len(img))])
    assert fast.shape == slow.shape == (22, 3, 32, 64)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    m = validate(model, data, seed=3)
    assert m["val/psnr_step"] == pytest.approx(float(psnr_per_frame(slow, img[1:]).mean()), abs=1e-4)
    assert math.isfinite(m["val/psnr_step"])


@pytest.mark.slow
def test_learning_budget_prints_its_json_lines(tmp_path: Path, cache_dir: Path) -> None:
    cmd = [PYTHON, str(ROOT / "benchmarks/learning_budget.py"), "--config", str(ROOT / "configs/demo.toml"),
           "--smoke-test", "--seeds", "0,1", "--set", "data.val_video_len=12"]
    env = {"CVAE_CACHE": str(cache_dir), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    points = [x for x in lines if "seed" in x]
    assert [(p["seed"], p["epoch"]) for p in points] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    per_epoch = points[0]["steps"]  # the smoke config's steps per epoch (at most 3)
    assert 1 <= per_epoch <= 3
    for p in points:
        assert p["gain_db"] == pytest.approx(p["val_psnr"] - p["val_psnr_hold"], abs=2e-3)
        assert p["cpu_s"] > 0 and p["steps"] == per_epoch * p["epoch"]
        assert {"val_psnr_step", "val_psnr_step_hold", "db_per_cpu_min"} <= set(p)
    means = [x for x in lines if "gain_db_mean" in x]
    assert [x["epoch"] for x in means] == [1, 2]
    bad = subprocess.run([*cmd[:2], "--config", str(ROOT / "configs/demo.toml"), "--set", "train.nope=1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "train.nope" in bad.stderr


@pytest.mark.slow
def test_learning_budget_frontier_on_the_lab_style_stand_in(tmp_path: Path, cache_dir: Path) -> None:
    """--epochs: one run per budget (its own schedule), one point at its end, on lab-style data."""
    cmd = [PYTHON, str(ROOT / "benchmarks/learning_budget.py"), "--config", str(ROOT / "configs/cpu.toml"),
           "--smoke-test", "--seeds", "0", "--epochs", "2,1", "--set", "data.synthetic_style=lab",
           "--set", "data.val_video_len=12"]
    env = {"CVAE_CACHE": str(cache_dir), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    points = [json.loads(x) for x in done.stdout.splitlines()]
    assert [(p["seed"], p["epoch"]) for p in points] == [(0, 1), (0, 2)]  # budgets in order, each its own run
    assert points[1]["steps"] == 2 * points[0]["steps"] and points[1]["cpu_s"] > 0
    floor = points[0]["val_psnr_hold"]  # the lab-style stand-in's floor, not the bold dancer's ~20 dB
    assert floor > 28 and all(p["val_psnr_hold"] == floor for p in points)
    for p in points:
        assert p["gain_db"] == pytest.approx(p["val_psnr"] - floor, abs=2e-3)


def test_scaled_budgets_keep_the_schedule_in_proportion() -> None:
    scaled = benchmark("learning_budget").scaled
    cfg = load_config(ROOT / "configs/cpu.toml")  # 20 epochs, milestones [16]
    assert (cfg.train.epochs, cfg.train.milestones) == (20, (16,))
    assert scaled(cfg, 40).train.milestones == (32,) and scaled(cfg, 40).train.epochs == 40
    assert scaled(cfg, 10).train.milestones == (8,)
    assert scaled(cfg, 1).train.milestones == ()  # a decay at or past the end is no decay
