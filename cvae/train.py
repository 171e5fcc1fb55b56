"""The lab's full training loop as one function: `run(cfg, report, checkpoint_dir) -> Summary`.

Knows nothing of Ray or Optuna: a caller passes `report(metrics, checkpoint_path)`, called once per
epoch. Also the single-run CLI: `python -m cvae.train --config FILE.toml [--smoke-test]`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from cvae import schedules
from cvae.config import Config, ConfigError, load_config
from cvae.data import Dataset, DatasetError, load_dataset, sequence_batch, to_tensor
from cvae.metrics import kl_per_frame, psnr_per_frame, ssim_per_frame
from cvae.model import CVAE

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any], "Path | None"], None]

STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
FRAMES_FILE = "psnr_per_frame.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or corrupt (names the path and what is wrong)."""


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


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(n: int | None) -> int:
    """Torch intra-op threads = the CPUs this run was given (more only oversubscribes the cores)."""
    n = n or available_cpus()
    torch.set_num_threads(n)
    return n


# -- checkpoints -------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(directory: Path, state: dict[str, Any], cfg: Config, frames: dict[str, Any] | None) -> Path:
    """Write one epoch's checkpoint atomically (a temp dir renamed into place), with a manifest
    of sha256 sums so a corrupt or half-written checkpoint is detected on load."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / STATE_FILE)
    (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
    if frames is not None:
        (tmp / FRAMES_FILE).write_text(json.dumps(frames))
    files = sorted(p.name for p in tmp.iterdir())
    manifest = {"epoch": state["epoch"], "sha256": {f: _sha256(tmp / f) for f in files}}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def verify_checkpoint(directory: str | Path) -> None:
    """Raise CheckpointError unless every file listed in the manifest is there with its sha256."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        sums = manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{manifest_path}: missing or unreadable manifest ({e})") from None
    for name, digest in sums.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in the manifest but missing")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path}: sha256 does not match the manifest (corrupt or truncated)")


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Verified state of a checkpoint directory (tensors and plain data only: weights_only=True)."""
    verify_checkpoint(directory)
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def load_model(directory: str | Path) -> tuple[CVAE, Config]:
    """The trained model (eval mode) and the full config stored in a checkpoint directory."""
    directory = Path(directory)
    state = load_checkpoint(directory)
    try:
        cfg = Config.from_dict(json.loads((directory / CONFIG_FILE).read_text()), source=directory / CONFIG_FILE)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{directory / CONFIG_FILE}: unreadable config ({e})") from None
    model = CVAE(cfg.model)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def epoch_dirs(root: Path) -> list[Path]:
    """Complete epoch checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("epoch_*") if p.is_dir() and not p.name.endswith(".tmp"))


def latest_good_checkpoint(root: Path) -> Path | None:
    """Newest epoch checkpoint under root that verifies; corrupt ones are logged and skipped."""
    for path in reversed(epoch_dirs(root)):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as e:
            log.warning("skipping corrupt checkpoint: %s", e)
    return None


# -- evaluation --------------------------------------------------------------------------------
@torch.inference_mode()
def predict_val(model: CVAE, dataset: Dataset, seed: int) -> tuple[Tensor, Tensor]:
    """Autoregressive rollout over the validation video from its first frame and the poses.

    Returns (predicted, true) frames 1..T-1, each (1, T-1, 3, H, W) in [0, 1]. z is drawn from a
    generator seeded by `seed`, so every validation of a run (and a report rebuilding it from a
    checkpoint) sees the same noise; the training RNG is left untouched.
    """
    was_training = model.training
    model.eval()
    img = to_tensor(dataset.val.img)[None]  # (1, T, 3, H, W)
    label = to_tensor(dataset.val.label)[None]
    z = model.noise(1, img.shape[1] - 1, img, generator=torch.Generator().manual_seed(seed))
    pred = model.rollout(img[:, 0], label, z)  # (1, T-1, 3, H, W)
    model.train(was_training)
    return pred, img[:, 1:]


@torch.inference_mode()
def validate(model: CVAE, dataset: Dataset, seed: int) -> dict[str, Any]:
    """Validation metrics of `predict_val`'s rollout, and the floor of repeating frame 0."""
    start = time.perf_counter()
    pred, target = predict_val(model, dataset, seed)
    seconds = time.perf_counter() - start
    t = target.shape[1] + 1
    first = to_tensor(dataset.val.img[:1])[None]  # (1, 1, 3, H, W)
    psnr = psnr_per_frame(pred, target)[0]  # (T-1,)
    hold = psnr_per_frame(first.expand_as(target), target)[0]
    ssim = ssim_per_frame(pred, target)[0]
    return {
        "psnr": psnr.tolist(),
        "psnr_hold": hold.tolist(),
        "val/psnr": float(psnr.mean()),
        "val/psnr_hold": float(hold.mean()),
        "val/psnr_min": float(psnr.min()),
        "val/ssim": float(ssim.mean()),
        "val/frames_per_s": (t - 1) / seconds,
        "time/val_s": seconds,
    }


# -- the loop ----------------------------------------------------------------------------------
def _epoch_sequences(n_seq: int, epoch: int, cfg: Config, rng: torch.Generator) -> Tensor:
    """Training sequence indices for one epoch: shuffled, and only `fast_partial` of them during
    the first `fast_train_epoch` epochs (the lab's fast-train)."""
    order = torch.randperm(n_seq, generator=rng)
    t = cfg.train
    if epoch < t.fast_train_epoch:
        order = order[: max(t.batch_size, int(n_seq * t.fast_partial))]
    return order


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
    threads = set_threads(t.threads)
    rng = seed_everything(t.seed)
    data = dataset if dataset is not None else load_dataset(cfg.data)
    n_seq = data.num_sequences(cfg.data.video_len)
    if n_seq < t.batch_size:
        raise DatasetError(f"{data.train.root}: {n_seq} training sequences of {cfg.data.video_len} frames, fewer than one batch of {t.batch_size}")

    model = CVAE(cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(t.milestones), gamma=t.gamma)
    start_epoch, best, best_epoch, best_curve = 0, -math.inf, -1, None
    history: list[dict[str, Any]] = []
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch = state["epoch"] + 1
        best, best_epoch, best_curve = state["best_val_psnr"], state["best_epoch"], state["best_curve"]
        history = list(state.get("history", []))
        log.info("resumed from %s at epoch %d", resume_from, start_epoch)

    ckpt_root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last_ckpt: Path | None = None
    diverged = False
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, t.epochs):
        epoch_start = time.perf_counter()
        tfr = schedules.tfr(epoch, t.tfr, t.tfr_sde, t.tfr_d_step)
        beta = schedules.beta(epoch, t.kl_anneal_type, t.kl_anneal_cycle, t.kl_anneal_ratio)
        teacher_forcing = bool(torch.rand((), generator=rng) < tfr)  # once per epoch, as the lab does
        order = _epoch_sequences(n_seq, epoch, cfg, rng)
        steps = len(order) // t.batch_size  # drop_last, as the lab's loader
        if t.max_steps_per_epoch is not None:
            steps = min(steps, t.max_steps_per_epoch)
        model.train()
        sums = torch.zeros(3, dtype=torch.float64)  # loss, mse, kl
        tf_steps = 0
        train_start = time.perf_counter()
        for step in range(steps):
            idx = order[step * t.batch_size : (step + 1) * t.batch_size].numpy()
            img, label = sequence_batch(data.train, idx, cfg.data.video_len)  # (B, T, 3, H, W)
            if t.tf_per == "batch":
                teacher_forcing = bool(torch.rand((), generator=rng) < tfr)
            tf_steps += teacher_forcing
            eps = model.noise(img.shape[0], img.shape[1] - 1, img, generator=rng)
            out = model(img, label, teacher_forcing, eps)
            mse = (out.pred - img[:, 1:]).pow(2).mean(dim=(0, 2, 3, 4)).mean()  # mean over the T-1 frames
            kl = kl_per_frame(out.mu, out.logvar).mean()
            loss = mse + beta * kl
            if not torch.isfinite(loss):
                diverged = True
                log.warning("epoch %d step %d: loss is %s, stopping (diverged)", epoch, step, loss.item())
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            sums += torch.tensor([loss.item(), mse.item(), kl.item()], dtype=torch.float64)
            if progress is not None:
                progress(1)
        train_s = time.perf_counter() - train_start
        done = max(step + (0 if diverged else 1), 1) if steps else 1
        frames = done * t.batch_size * (cfg.data.video_len - 1)
        lr = optimizer.param_groups[0]["lr"]
        if not diverged:
            scheduler.step()
        metrics = {
            "epoch": epoch,
            "train/loss": float(sums[0] / done) if not diverged else math.nan,
            "train/mse": float(sums[1] / done) if not diverged else math.nan,
            "train/kl": float(sums[2] / done) if not diverged else math.nan,
            "beta": beta,
            "tfr": tfr,
            "teacher_forcing": tf_steps / max(done, 1),
            "fast_train": epoch < t.fast_train_epoch,
            "train/sequences": done * t.batch_size,
            "lr": lr,
            "train/frames_per_s": frames / train_s if train_s > 0 else math.nan,
            "threads": threads,
            "diverged": diverged,
        }
        frames_record = None
        validate_now = (epoch + 1) % t.val_every == 0 or epoch == t.epochs - 1
        if not diverged and validate_now:
            val = validate(model, data, t.seed)
            if not math.isfinite(val["val/psnr"]):
                diverged = metrics["diverged"] = True
            curve, hold = val.pop("psnr"), val.pop("psnr_hold")
            metrics.update(val)
            if val["val/psnr"] > best:
                best, best_epoch, best_curve = val["val/psnr"], epoch, curve
            frames_record = {"epoch": epoch, "psnr": curve, "psnr_hold": hold,
                             "best_epoch": best_epoch, "best_psnr": best_curve}
        elif history:  # carry the last validation forward so every row has the val columns
            for k in ("val/psnr", "val/psnr_hold", "val/psnr_min", "val/ssim"):
                if k in history[-1]:
                    metrics[k] = history[-1][k]
        metrics["val/best_psnr"] = best if math.isfinite(best) else math.nan
        metrics["time/epoch_s"] = time.perf_counter() - epoch_start
        history.append(dict(metrics))

        ckpt = None
        if ckpt_root is not None and not diverged:
            state = {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng.get_state(),
                "torch_rng": torch.get_rng_state(),
                "best_val_psnr": best,
                "best_epoch": best_epoch,
                "best_curve": best_curve,
                "history": history,
            }
            ckpt = save_checkpoint(ckpt_root / f"epoch_{epoch:04d}", state, cfg, frames_record)
            last_ckpt = ckpt
            _prune(ckpt_root, t.keep_checkpoints, keep_epoch=best_epoch)
        if report is not None:
            report(dict(metrics), ckpt)
        if diverged:
            break

    return Summary(
        epochs_run=len(history),
        best_val_psnr=best,
        best_epoch=best_epoch,
        last_metrics=metrics,
        diverged=diverged,
        checkpoint=last_ckpt,
        history=history,
    )


def _prune(root: Path, keep: int, keep_epoch: int) -> None:
    dirs = epoch_dirs(root)
    for path in dirs[:-keep]:
        if path.name != f"epoch_{keep_epoch:04d}":
            shutil.rmtree(path, ignore_errors=True)


# -- CLI -----------------------------------------------------------------------------------------
def smoke_config(cfg: Config) -> Config:
    """A seconds-long variant of cfg: tiny data, 2 epochs of a few steps each."""
    return cfg.replace(
        data={"synthetic_train_videos": 2, "synthetic_train_frames": 2 * cfg.data.video_len,
              "val_video_len": min(cfg.data.val_video_len, 24)},
        train={"epochs": 2, "max_steps_per_epoch": 3},
    )


def _finished(out: Path, epochs: int) -> bool:
    last = epoch_dirs(out)
    return bool(last) and int(last[-1].name.split("_")[1]) >= epochs - 1


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    p = argparse.ArgumentParser(prog="python -m cvae.train", description="Train the lab's CVAE once.")
    p.add_argument("--config", required=True, help="TOML file with [model], [data], [train] tables")
    p.add_argument("--out", help="checkpoint directory (default: results/runs/<config name>)")
    p.add_argument("--fresh", action="store_true", help="move an existing finished run aside and start over")
    p.add_argument("--smoke-test", action="store_true", help="tiny data and 2 short epochs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        cfg = load_config(args.config)
        if args.smoke_test:
            cfg = smoke_config(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("results") / "runs" / (Path(args.config).stem + ("-smoke" if args.smoke_test else ""))
    resume = None
    if epoch_dirs(out):
        if args.fresh:
            aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            out.rename(aside)
            print(f"moved the old run aside to {aside}")
        elif _finished(out, cfg.train.epochs):
            print(f"error: {out} already holds a finished run; use --fresh to move it aside, or --out DIR", file=sys.stderr)
            return 2
        else:
            resume = latest_good_checkpoint(out)
            if resume is not None:
                print(f"resuming from {resume}")
    try:
        data = load_dataset(cfg.data)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_seq = data.num_sequences(cfg.data.video_len)
    per_epoch = n_seq // cfg.train.batch_size
    if cfg.train.max_steps_per_epoch:
        per_epoch = min(per_epoch, cfg.train.max_steps_per_epoch)
    bar = tqdm(total=per_epoch * cfg.train.epochs, unit="step", dynamic_ncols=True)
    if resume is not None:
        bar.update(per_epoch * (int(resume.name.split("_")[1]) + 1))

    def report(m: dict[str, Any], ckpt: Path | None) -> None:
        bar.set_postfix_str(f"epoch {m['epoch']} loss {m['train/loss']:.4g} val/psnr {m.get('val/psnr', math.nan):.2f} dB")
        tqdm.write(
            f"epoch {m['epoch']:3d}  loss {m['train/loss']:.5f}  mse {m['train/mse']:.5f}  kl {m['train/kl']:.4g}  "
            f"beta {m['beta']:.2f}  tfr {m['tfr']:.2f}  val/psnr {m.get('val/psnr', math.nan):.2f} dB  "
            f"(hold {m.get('val/psnr_hold', math.nan):.2f} dB)  {m['train/frames_per_s']:.1f} frames/s"
        )

    summary = run(cfg, report, out, resume_from=resume, dataset=data, progress=bar.update)
    bar.close()
    m = summary.last_metrics
    hold = m.get("val/psnr_hold", math.nan)
    if summary.diverged:
        print(f"DIVERGED at epoch {m.get('epoch')}: loss became NaN/inf. Checkpoints in {out}")
        return 1
    print(
        f"done: {summary.epochs_run} epochs, val/psnr {m['val/psnr']:.2f} dB vs val/psnr_hold {hold:.2f} dB "
        f"({m['val/psnr'] - hold:+.2f} dB over repeating frame 0), best {summary.best_val_psnr:.2f} dB at epoch "
        f"{summary.best_epoch}, checkpoints in {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
