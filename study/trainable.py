"""The Ray Tune function trainable of a study: one trial = one `cvae.train.run` of a sampled config.

`study.run` wraps `train_cvae` with `tune.with_parameters(train_cvae, spec=..., dataset=...)`, so the
trial config holds only what the searcher sampled (plus `seed` when the study repeats seeds) and
each trial's params.json stays a clean record of its configuration. The dataset travels once per
node through the object store; the spec carries the fixed tables with every path already absolute
(trials run with the trial dir as their working dir).

Devices: a trial trains on the GPU share Ray reserved for it (`[study] gpus_per_trial`): Ray sets
CUDA_VISIBLE_DEVICES, so `[train] device = "auto"` finds it as cuda:0 where CUDA is really there and
falls back to the CPU where Ray's GPUs are only declared (nothing then initialises CUDA). A trial
that reserved no GPU trains on the CPU even on a GPU machine. Every result row records `device`
(cvae's), `gpu_ids` (Ray's assignment) and `resources/gpu` (the share reserved), beside `time/cpu_s`.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from cvae.config import Config
from cvae.data import Dataset, load_dataset
from cvae.checkpoint import CheckpointError, verify_checkpoint
from cvae.train import run
from study.keys import CPU_S, GPU_IDS, GPU_SHARE
from study.spec import METRICS, StudySpec

log = logging.getLogger(__name__)

_CPU_META = "cpu_s"  # the same figure in the checkpoint's Ray metadata


def _reserved(resource: str) -> float | None:
    """What Ray reserved for this trial of `resource` ("CPU", "GPU"); None outside a Tune session."""
    with contextlib.suppress(Exception):  # outside a Tune session, or an older context API
        return float(tune.get_context().get_trial_resources().required_resources.get(resource, 0.0))
    return None


def trial_threads(fallback: float) -> int:
    """Torch threads for this trial: the CPUs Ray reserved for it (whole CPUs, at least 1)."""
    cpus = _reserved("CPU") or fallback
    return max(1, int(cpus))


def trial_config(spec: StudySpec, config: dict[str, Any], threads: int) -> Config:
    """The cvae Config of one trial: the spec's fixed tables + the sampled values + its threads.

    Without a GPU reserved (gpus_per_trial = 0), device "auto" becomes "cpu": the trial must not
    take a GPU of the machine that Ray did not give it (spec.py refuses "cuda" there).
    """
    sampled = {k: v for k, v in config.items() if not k.startswith("__")}  # Tune-internal keys, if any
    cfg = spec.config_for(sampled)
    train: dict[str, Any] = {"threads": threads}
    if spec.gpus_per_trial == 0 and cfg.train.device == "auto":
        train["device"] = "cpu"
    return cfg.replace(train=train)


def gpu_assignment(fallback: float) -> dict[str, Any]:
    """`gpu_ids` and `resources/gpu` of this trial: Ray's GPU ids (CUDA_VISIBLE_DEVICES) and its share.

    Reads Ray's bookkeeping only: nothing here touches CUDA.
    """
    ids: list[str] = []
    if ray.is_initialized():  # outside Ray, get_gpu_ids() would start a local Ray (its auto-init) to say []
        with contextlib.suppress(Exception):
            ids = [str(i) for i in ray.get_gpu_ids()]
    share = _reserved("GPU")
    return {GPU_IDS: ids, GPU_SHARE: fallback if share is None else share}


def _stdout_logger() -> logging.Logger:
    # The trial's worker log (dashboard, and the driver's console) shows stdout: one line per epoch.
    out = logging.getLogger(f"{__name__}.progress")
    if not out.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        out.addHandler(handler)
        out.setLevel(logging.INFO)
        out.propagate = False
    return out


def resume_point(checkpoint: tune.Checkpoint | None, stack: contextlib.ExitStack, trial: str) -> tuple[Path | None, float]:
    """The verified directory of Tune's checkpoint for this trial (None: start from scratch) and
    the CPU seconds spent before it. A corrupt checkpoint is logged and never loaded."""
    if checkpoint is None:
        return None, 0.0
    cpu_before = 0.0
    with contextlib.suppress(Exception):
        cpu_before = float(checkpoint.get_metadata().get(_CPU_META, 0.0))
    try:
        path = Path(stack.enter_context(checkpoint.as_directory()))
        verify_checkpoint(path)
    except (CheckpointError, OSError) as e:
        older = _older_good_checkpoint(checkpoint)
        if older is not None:
            log.error("[trial %s] checkpoint is corrupt, resuming from the previous good one %s: %s", trial, older, e)
            _stdout_logger().info("[trial %s] CORRUPT CHECKPOINT, resuming from the previous good one %s: %s",
                                  trial, older, e)
            return older, cpu_before  # CPU seconds of the newer one: an upper bound, slightly over
        log.error("[trial %s] checkpoint is corrupt, restarting this trial from scratch: %s", trial, e)
        _stdout_logger().info("[trial %s] CORRUPT CHECKPOINT, restarting from scratch: %s", trial, e)
        return None, cpu_before
    return path, cpu_before


def _older_good_checkpoint(checkpoint: tune.Checkpoint) -> Path | None:
    """The newest verified sibling `checkpoint_*` older than `checkpoint`, if the trial's storage is a
    local (or mounted shared) filesystem; None otherwise (then the trial starts from scratch)."""
    fs = getattr(checkpoint, "filesystem", None)
    if fs is not None and getattr(fs, "type_name", "local") != "local":
        return None
    current = Path(checkpoint.path)
    siblings = sorted(p for p in current.parent.glob("checkpoint_*") if p.is_dir() and p.name < current.name)
    for older in reversed(siblings):
        try:
            verify_checkpoint(older)
        except CheckpointError as e:
            log.warning("skipping corrupt checkpoint: %s", e)
            continue
        return older
    return None


def train_cvae(config: dict[str, Any], spec: StudySpec | None = None, dataset: Dataset | None = None) -> None:
    """Ray Tune function trainable: train one sampled configuration of `spec`, reporting every epoch.

    config: the sampled [space] values (+ "seed"). spec: the study (fixed tables, paths absolute).
    dataset: the shared dataset, or None to load it here (when [space] searches a [data] key).
    Each epoch goes to `tune.report(metrics, checkpoint=...)` with the epoch's checkpoint directory
    (weights, optimizer, RNG, config.json and the per-frame PSNR curve). Resumes from
    `tune.get_checkpoint()` after a crash or a restored study; a diverged run returns normally
    with `diverged = True` in its last result.
    """
    if spec is None:
        raise ValueError("train_cvae needs the study: wrap it with tune.with_parameters(train_cvae, spec=...)")
    trial = tune.get_context().get_trial_id() or "?"
    out = _stdout_logger()
    cfg = trial_config(spec, config, trial_threads(spec.cpus_per_trial))
    gpus = gpu_assignment(spec.gpus_per_trial)
    data = dataset if dataset is not None else load_dataset(cfg.data)
    cpu_start = time.process_time()
    node_id = ray.get_runtime_context().get_node_id()

    with contextlib.ExitStack() as stack:
        resume, cpu_before = resume_point(tune.get_checkpoint(), stack, trial)
        # cvae.train writes each epoch here; tune.report copies it into the trial dir synchronously.
        # Inside the trial's working dir (in Ray's session dir, not synced to storage) when Tune
        # chdirs there, so even a SIGKILLed trial leaves nothing in the system temp dir.
        in_trial_dir = os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0"
        local = Path(tempfile.mkdtemp(prefix=".cvae-epochs-", dir=Path.cwd() if in_trial_dir else None))
        stack.callback(shutil.rmtree, local, True)
        if resume is not None:
            out.info("[trial %s] resuming from %s", trial, resume)

        def report(metrics: dict[str, Any], checkpoint: Path | None) -> None:
            metrics = dict(metrics)
            for key in (*METRICS, spec.metric):
                # Tune rejects a result without the searched metric (e.g. before a first
                # validation, or a run diverging in its first epoch): NaN says "not measured".
                metrics.setdefault(key, math.nan)
            cpu_s = cpu_before + time.process_time() - cpu_start
            metrics[CPU_S] = cpu_s
            # Ray's own node_ip is the same for every node of a loopback cluster: the node id is not.
            metrics.setdefault("node_id", node_id)
            metrics.update(gpus)
            ckpt = None
            if checkpoint is not None:
                ckpt = tune.Checkpoint.from_directory(str(checkpoint))
                ckpt.set_metadata({_CPU_META: cpu_s, "epoch": metrics["epoch"]})
            line = (f"[trial {trial}] epoch {metrics['epoch']} val/psnr {metrics['val/psnr']:.2f} dB "
                    f"(hold {metrics['val/psnr_hold']:.2f}) step {metrics['val/psnr_step']:.2f} "
                    f"(copy {metrics['val/psnr_step_hold']:.2f}) loss {metrics['train/loss']:.5f}")
            if metrics.get("diverged"):
                line += "  DIVERGED (NaN/inf loss): the trial ends here"
            out.info(line)
            tune.report(metrics, checkpoint=ckpt)

        summary = run(cfg, report, local, resume_from=resume, dataset=data)
    if summary.diverged:
        log.warning("[trial %s] diverged at epoch %s; ended cleanly", trial, summary.last_metrics.get("epoch"))


__all__ = ["gpu_assignment", "resume_point", "train_cvae", "trial_config", "trial_threads"]
