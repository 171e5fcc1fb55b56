"""On a real CUDA device (`make gpu-check`): training, exact resume and bf16 there, and a study whose
trials share the GPU. Skipped without CUDA."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from cvae.checkpoint import load_checkpoint
from cvae.config import Config
from cvae.evaluate import load_model
from cvae.train import run
from study_helpers import overlap, result_rows, run_cli, study_cmd, trial_dirs, trial_span, trial_statuses, write_study

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


def small(cache: Path, **train: object) -> Config:
    return Config.from_dict({
        "model": {"F_dim": 32, "L_dim": 8, "N_dim": 4, "D_out_dim": 48},
        "data": {"video_len": 8, "val_video_len": 24, "synthetic_train_videos": 2,
                 "synthetic_train_frames": 32, "cache_dir": str(cache)},
        "train": {"epochs": 2, "batch_size": 2, "max_steps_per_epoch": 4, "device": "cuda", **train},
    })


def test_resume_on_cuda_is_exact_and_the_checkpoint_opens_on_a_cpu(tmp_path: Path, cache_dir: Path) -> None:
    cfg = small(cache_dir, tfr=0.5)
    straight = run(cfg, checkpoint_dir=tmp_path / "a")
    first = run(cfg.replace(train={"epochs": 1}), checkpoint_dir=tmp_path / "b")
    resumed = run(cfg, checkpoint_dir=tmp_path / "b", resume_from=first.checkpoint)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert "cuda_rng" in a and "noise_rng" in a
    assert [m["val/psnr"] for m in straight.history] == [m["val/psnr"] for m in resumed.history]
    assert straight.history[-1]["device"].startswith("cuda")
    model, _ = load_model(straight.checkpoint)  # opens on the CPU, as the report does
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cuda(cache_dir: Path, precision: str) -> None:
    fp32 = run(small(cache_dir, epochs=3, kl_anneal_type="None"))
    mixed = run(small(cache_dir, epochs=3, kl_anneal_type="None", precision=precision))
    assert all(math.isfinite(m["train/loss"]) for m in mixed.history)
    assert mixed.history[-1]["train/mse"] == pytest.approx(fp32.history[-1]["train/mse"], rel=0.1)


def test_study_trials_share_the_gpu(tmp_path: Path, cache_dir: Path) -> None:
    """The smoke study at 0.5 GPU per trial on a local Ray, which finds the GPU itself: both trials
    train on CUDA, each records GPU 0 and its half, and the two share the GPU at once."""
    study = write_study(tmp_path / "gpu.toml", study={"name": "gpu", "num_samples": 2, "gpus_per_trial": 0.5},
                        train={"epochs": 3})
    study.write_text(study.read_text().replace("max_concurrent = 2\n", ""))  # the default: what the cluster holds
    r = run_cli(study_cmd(study), tmp_path, cache_dir)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert re.search(r"\d+ trials at a time", r.stdout)
    exp = tmp_path / "results" / "gpu"
    spans = []
    for trial in trial_dirs(exp):
        rows = result_rows(trial)
        assert [row["epoch"] for row in rows] == [0, 1, 2]
        for row in rows:
            assert row["device"].startswith("cuda") and len(row["gpu_ids"]) == 1 and row["resources/gpu"] == 0.5, row
            assert math.isfinite(row["val/psnr"])
        spans.append(trial_span(rows))
    assert overlap(spans), f"the two trials did not share the GPU at once: {spans}"
    assert set(trial_statuses(exp).values()) == {"TERMINATED"}


def test_auto_and_cuda_resolve_to_an_indexed_device() -> None:
    from cvae.device import resolve_device, setup

    for name in ("auto", "cuda"):
        device = resolve_device(name)
        assert device.type == "cuda" and device.index is not None
        setup(device)  # torch.cuda.set_device needs the index
