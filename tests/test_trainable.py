"""A study's Ray Tune trainable (study.trainable): a trial's config, threads and GPUs, and a corrupt
checkpoint that restarts the trial instead of loading it."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import pytest
from ray import tune

from cvae.config import Config
from cvae.train import run
from study.spec import load_spec
from study.trainable import resume_point, gpu_assignment, trial_config, trial_threads
from study_helpers import SMOKE


@pytest.mark.filterwarnings("ignore:`get_trial_resources`")
def test_a_trial_uses_only_the_gpus_ray_gave_it() -> None:
    spec = load_spec(SMOKE)
    assert spec.base_config().train.device == "auto"
    # no GPU reserved: "auto" trains on the CPU, even on a machine with a GPU (Ray did not give it one)
    assert trial_config(spec, {}, threads=1).train.device == "cpu"
    shared = dataclasses.replace(spec, gpus_per_trial=0.5)
    assert trial_config(shared, {}, threads=1).train.device == "auto"  # the GPU Ray assigned, if CUDA is there


@pytest.mark.filterwarnings("ignore:`get_trial_resources`")
def test_outside_ray_a_trial_has_no_gpu_ids_and_the_share_the_study_asks_for() -> None:
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray of another test is up in this process")
    assert gpu_assignment(0.5) == {"gpu_ids": [], "resources/gpu": 0.5}
    assert not ray.is_initialized()  # asking did not start a local Ray (ray.get_gpu_ids' auto-init)


@pytest.mark.filterwarnings("ignore:`get_trial_resources`")
def test_trial_config_and_threads_outside_tune() -> None:
    spec = load_spec(SMOKE)
    assert trial_threads(1.5) == 1 and trial_threads(2) == 2
    cfg = trial_config(spec, {"tfr": 0.25, "kl_anneal_type": "None", "seed": 7}, threads=1)
    assert cfg.train.tfr == 0.25 and cfg.train.kl_anneal_type == "None" and cfg.train.seed == 7
    assert cfg.train.threads == 1 and cfg.model.F_dim == 16


@pytest.mark.slow
def test_corrupt_checkpoint_restarts_the_trial_from_scratch(tmp_path: Path, cache_dir: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # train_cvae, the usual entry, takes its checkpoint from tune.get_checkpoint(),
    # which only a running Tune session has. The same path through a real study is test_faults'.
    cfg = Config.from_dict({
        "model": {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16},
        "data": {"video_len": 4, "val_video_len": 8, "synthetic_train_videos": 1, "synthetic_train_frames": 16,
                 "synthetic_test_sequences": 0, "cache_dir": str(cache_dir)},
        "train": {"epochs": 1, "max_steps_per_epoch": 1, "threads": 1},
    })
    summary = run(cfg, None, tmp_path / "ckpt")
    ckpt = tune.Checkpoint.from_directory(str(summary.checkpoint))
    ckpt.set_metadata({"cpu_s": 3.5})
    with contextlib.ExitStack() as stack:
        path, cpu = resume_point(ckpt, stack, "t0")
        assert path == summary.checkpoint and cpu == 3.5
    state = summary.checkpoint / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])  # truncated, as by a crash mid-write
    with caplog.at_level(logging.ERROR), contextlib.ExitStack() as stack:
        path, cpu = resume_point(ckpt, stack, "t0")
    assert path is None and cpu == 3.5
    assert "corrupt" in caplog.text and "from scratch" in caplog.text
