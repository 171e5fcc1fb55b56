"""The keys study/ adds to what cvae reports: a trial's own result keys and the seed in its config.

One definition each (cvae.metrics holds the training metrics); study.trainable writes them,
study.analyze, study.spec and study.space read them. No imports: anything may import this.
"""
from __future__ import annotations

SEED = "seed"  # the config key study.space's SeedRepeater sets per trial; StudySpec.config_for maps it to train.seed
CPU_S = "time/cpu_s"  # result key: the trial process's CPU seconds so far, carried across restores
GPU_SHARE = "resources/gpu"  # result key: the GPUs (a fraction: a share of one) Ray reserved for the trial; 0 without
GPU_IDS = "gpu_ids"  # result key: the GPUs Ray assigned to the trial (its CUDA_VISIBLE_DEVICES), as strings

__all__ = ["CPU_S", "GPU_IDS", "GPU_SHARE", "SEED"]
