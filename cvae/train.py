"""The lab's full training loop as one function: `run(cfg, report, checkpoint_dir) -> Summary`.

Knows nothing of Ray or Optuna: a caller passes `report(metrics, checkpoint_path)`, called once per
epoch. Built from small steps: set up (or restore) the run state, train one epoch, validate, save.
The single-run CLI (`python -m cvae.train`) lives in cvae/cli.py.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from cvae import schedules
from cvae.checkpoint import epoch_dir, load_checkpoint, prune, save_checkpoint
from cvae.config import Config
from cvae.data import Dataset, DatasetError, DeviceFrames, load_dataset
from cvae.device import autocast, available_cpus, grad_scaler, resolve_device, rng_states, set_rng_states, setup
from cvae.evaluate import validate
from cvae import metrics as M
from cvae.metrics import kl_per_frame
from cvae.model import CVAE

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any], "Path | None"], None]

# Steps between checks of the loss for NaN/inf: each check waits for the device, so not every step.
# The epoch's end (before any checkpoint is written) always checks.
FINITE_CHECK_EVERY = 16


@dataclass
class Summary:
    """What a run did: its last metrics, its best validation and where its checkpoints are."""

    epochs_run: int
    best_val_psnr: float
    best_epoch: int
    last_metrics: dict[str, Any]
    diverged: bool
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch's global RNG; return the run's own generator.

    The generator drives every random choice of the loop (sequence order, teacher forcing, the
    posterior noise), so its state in the checkpoint is all an exact resume needs.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(n: int | None) -> int:
    """Torch intra-op threads = the CPUs this run was given (more only oversubscribes the cores)."""
    n = n or available_cpus()
    torch.set_num_threads(n)
    return n


@dataclass
class RunState:
    """Everything that changes as a run trains, and all a checkpoint must hold to resume it exactly."""

    model: CVAE
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler
    rng: torch.Generator  # CPU: sequence order and teacher-forcing draws
    noise: torch.Generator  # on the device: the posterior's eps (the same generator as rng on a CPU)
    device: torch.device
    epoch: int = 0  # the next epoch to train
    best: float = -math.inf  # best val/psnr so far
    best_epoch: int = -1
    best_curve: list[float] | None = None  # per-frame PSNR of the best validation
    history: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self.rng.get_state(),
            **({"noise_rng": self.noise.get_state()} if self.noise is not self.rng else {}),
            **rng_states(self.device),
            "best_val_psnr": self.best,
            "best_epoch": self.best_epoch,
            "best_curve": self.best_curve,
            "history": self.history,
        }


def new_state(cfg: Config, device: torch.device) -> RunState:
    """A fresh run on `device`: seeded RNGs, a new model, Adam and the lab's MultiStepLR."""
    t = cfg.train
    rng = seed_everything(t.seed)
    model = CVAE(cfg.model).to(device)
    if t.compile:
        for module in model.children():  # in place: the state_dict keys stay the lab's
            module.compile()
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(t.milestones), gamma=t.gamma)
    # A CPU run draws its noise from rng, as it always has; a CUDA run needs a generator on the device.
    noise = rng if device.type == "cpu" else torch.Generator(device).manual_seed(t.seed)
    return RunState(model, optimizer, scheduler, grad_scaler(device, t.precision), rng, noise, device)


def restore(run: RunState, checkpoint: str | Path) -> None:
    """Continue `run` exactly where a checkpoint left off (epoch, weights, optimizer, schedules, RNG)."""
    state = load_checkpoint(checkpoint)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:
        run.scaler.load_state_dict(state["scaler"])
    run.rng.set_state(state["rng"])
    if run.noise is not run.rng and "noise_rng" in state:
        run.noise.set_state(state["noise_rng"])
    set_rng_states(state, run.device)
    run.epoch = state["epoch"] + 1
    run.best, run.best_epoch, run.best_curve = state["best_val_psnr"], state["best_epoch"], state["best_curve"]
    run.history = list(state.get("history", []))
    log.info("resumed from %s at epoch %d", checkpoint, run.epoch)


def epoch_sequences(n_seq: int, epoch: int, cfg: Config, rng: torch.Generator) -> Tensor:
    """Training sequence indices for one epoch: shuffled, and only `fast_partial` of them during
    the first `fast_train_epoch` epochs (the lab's fast-train)."""
    order = torch.randperm(n_seq, generator=rng)
    t = cfg.train
    if epoch < t.fast_train_epoch:
        order = order[: max(t.batch_size, int(n_seq * t.fast_partial))]
    return order


def train_epoch(run: RunState, cfg: Config, frames: DeviceFrames, progress: Callable[[int], None] | None) -> dict[str, Any]:
    """One epoch of the lab's training: teacher forcing drawn once per epoch (or per batch),
    loss = MSE + beta * KL averaged over the T-1 predicted frames, clipped Adam steps.
    Returns the epoch's training metrics; `diverged` is True if the loss became NaN/inf.
    The loss sums stay on the device: the host waits for it only every FINITE_CHECK_EVERY steps."""
    t, epoch, rng, model = cfg.train, run.epoch, run.rng, run.model
    tfr = schedules.tfr(epoch, t.tfr, t.tfr_sde, t.tfr_d_step)
    beta = schedules.beta(epoch, t.kl_anneal_type, t.kl_anneal_cycle, t.kl_anneal_ratio)
    teacher_forcing = bool(torch.rand((), generator=rng) < tfr)  # once per epoch, as the lab does
    order = epoch_sequences(len(frames) // cfg.data.video_len, epoch, cfg, rng)
    steps = len(order) // t.batch_size  # drop_last, as the lab's loader
    if t.max_steps_per_epoch is not None:
        steps = min(steps, t.max_steps_per_epoch)
    model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=run.device)  # loss, mse, kl
    done = tf_steps = 0
    start = time.perf_counter()
    for step in range(steps):
        idx = order[step * t.batch_size : (step + 1) * t.batch_size]
        img, label = frames.batch(idx, cfg.data.video_len)  # (B, T, 3, H, W)
        if t.tf_per == "batch":
            teacher_forcing = bool(torch.rand((), generator=rng) < tfr)
        eps = model.noise(img.shape[0], img.shape[1] - 1, img, generator=run.noise)
        with autocast(run.device, t.precision):
            out = model(img, label, teacher_forcing, eps)
        mse = (out.pred.float() - img[:, 1:]).pow(2).mean(dim=(0, 2, 3, 4)).mean()  # mean over the T-1 frames
        kl = kl_per_frame(out.mu.float(), out.logvar.float()).mean()
        loss = mse + beta * kl
        if (step + 1) % FINITE_CHECK_EVERY == 0 and not torch.isfinite(loss):
            break  # weights may already be NaN: the check below ends the run
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        sums += torch.stack([loss.detach(), mse.detach(), kl.detach()]).double()
        done += 1
        tf_steps += teacher_forcing
        if progress is not None:
            progress(1)
    mean = (sums / max(done, 1)).tolist()  # the epoch's one wait for the device
    seconds = time.perf_counter() - start
    diverged = done < steps or not all(math.isfinite(x) for x in mean)
    if diverged:
        log.warning("epoch %d: the loss became NaN/inf, stopping (diverged)", epoch)
        mean = [math.nan] * 3
    lr = run.optimizer.param_groups[0]["lr"]
    if not diverged:
        run.scheduler.step()
    n_frames = max(done, 1) * t.batch_size * (cfg.data.video_len - 1)  # predicted frames trained on
    return {
        M.EPOCH: epoch,
        M.TRAIN_LOSS: mean[0],
        M.TRAIN_MSE: mean[1],
        M.TRAIN_KL: mean[2],
        M.BETA: beta,
        M.TFR: tfr,
        M.TEACHER_FORCING: tf_steps / max(done, 1),
        M.FAST_TRAIN: epoch < t.fast_train_epoch,
        M.TRAIN_SEQUENCES: max(done, 1) * t.batch_size,
        M.LR: lr,
        M.TRAIN_FPS: n_frames / seconds if seconds > 0 else math.nan,
        M.DIVERGED: diverged,
    }


def validate_epoch(run: RunState, cfg: Config, data: Dataset, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Validate after this epoch if it is due (every `val_every` epochs and the last), adding the
    val/ metrics to `metrics` and updating the run's best. Returns the per-frame PSNR record to
    save beside the checkpoint, or None when nothing was validated (the last validation's values
    are then carried forward, so every row has the val columns)."""
    t = cfg.train
    due = (run.epoch + 1) % t.val_every == 0 or run.epoch == t.epochs - 1
    if metrics[M.DIVERGED] or not due:
        if run.history:
            metrics.update({k: run.history[-1][k] for k in M.VAL_CARRIED if k in run.history[-1]})
        return None
    val = validate(run.model, data, t.seed, t.precision)
    if not math.isfinite(val[M.VAL_PSNR]):
        metrics[M.DIVERGED] = True
    curve, hold = val.pop("psnr"), val.pop("psnr_hold")
    metrics.update(val)
    if val[M.VAL_PSNR] > run.best:
        run.best, run.best_epoch, run.best_curve = val[M.VAL_PSNR], run.epoch, curve
    return {"epoch": run.epoch, "psnr": curve, "psnr_hold": hold, "best_epoch": run.best_epoch, "best_psnr": run.best_curve}


def run(
    cfg: Config,
    report: Report | None = None,
    checkpoint_dir: str | Path | None = None,
    *,
    resume_from: str | Path | None = None,
    dataset: Dataset | None = None,
    progress: Callable[[int], None] | None = None,
) -> Summary:
    """Train and validate for cfg.train.epochs epochs; call `report(metrics, checkpoint)` each epoch.

    checkpoint_dir: where epoch checkpoints go (`epoch_NNNN/`, the newest `keep_checkpoints`
    kept, plus the best); None writes none. resume_from: a checkpoint directory to continue from
    exactly (same epoch, weights, optimizer, scheduler, schedules and RNG). dataset: an already
    loaded dataset (e.g. shared by a study's trials). progress: called with the number of
    optimisation steps done, for progress bars. A NaN/inf loss ends the run cleanly with
    `diverged = True` in its last metrics.
    """
    t = cfg.train
    device = resolve_device(t.device)  # a CUDA device that is not there: ConfigError before any work
    setup(device)
    threads = set_threads(t.threads)
    state = new_state(cfg, device)
    data = dataset if dataset is not None else load_dataset(cfg.data)
    n_seq = data.num_sequences(cfg.data.video_len)
    if n_seq < t.batch_size:
        raise DatasetError(data.train.root, f"{n_seq} training sequences of {cfg.data.video_len} frames, "
                                            f"fewer than one batch of {t.batch_size}")
    frames = DeviceFrames(data.train, device)  # uploaded once, uint8
    if resume_from is not None:
        restore(state, resume_from)
    ckpt_root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last_ckpt: Path | None = None
    metrics: dict[str, Any] = {}
    while state.epoch < t.epochs:
        epoch_start = time.perf_counter()
        metrics = train_epoch(state, cfg, frames, progress)
        metrics[M.THREADS] = threads
        metrics[M.DEVICE] = str(device)
        frames_record = validate_epoch(state, cfg, data, metrics)
        metrics[M.VAL_BEST] = state.best if math.isfinite(state.best) else math.nan
        metrics[M.EPOCH_S] = time.perf_counter() - epoch_start
        state.history.append(dict(metrics))
        ckpt = None
        if ckpt_root is not None and not metrics[M.DIVERGED]:  # never save NaN weights
            ckpt = save_checkpoint(epoch_dir(ckpt_root, state.epoch), state.state_dict(state.epoch), cfg, frames_record)
            last_ckpt = ckpt
            prune(ckpt_root, t.keep_checkpoints, keep_epoch=state.best_epoch)
        if report is not None:
            report(dict(metrics), ckpt)
        if metrics[M.DIVERGED]:
            break
        state.epoch += 1

    return Summary(
        epochs_run=len(state.history),
        best_val_psnr=state.best,
        best_epoch=state.best_epoch,
        last_metrics=metrics,
        diverged=bool(metrics.get(M.DIVERGED, False)),
        checkpoint=last_ckpt,
        history=state.history,
    )


if __name__ == "__main__":  # `python -m cvae.train` stays the single-run command
    import sys

    from cvae.cli import main

    sys.exit(main(train=run))
