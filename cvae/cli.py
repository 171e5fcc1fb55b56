"""The single-run command: `python -m cvae.train --config FILE.toml [--out DIR] [--fresh] [--smoke-test]`.

Trains once with a progress bar and one line per epoch; resumes an unfinished run in the same
folder, refuses to overwrite a finished one unless `--fresh` (which moves it aside).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Callable

from cvae.checkpoint import METRICS_FILE, RESULTS_DIR, RUNS_DIR, epoch_dirs, epoch_of, latest_good_checkpoint, load_config_of, move_aside
from cvae.config import Config, ConfigError, load_config, smoke_config
from cvae.data import DatasetError, load_dataset
from cvae.device import choose_threads, resolve_device


def _finished(out: Path, epochs: int) -> bool:
    last = epoch_dirs(out)
    return bool(last) and epoch_of(last[-1]) >= epochs - 1


def epoch_line(m: dict[str, Any]) -> str:
    """One line per epoch: training loss terms, schedules, the rollout beside its floor and the
    one-step diagnostic beside its own (see cvae.evaluate.validate)."""
    return (
        f"epoch {m['epoch']:3d}  loss {m['train/loss']:.5f}  mse {m['train/mse']:.5f}  kl {m['train/kl']:.4g}  "
        f"beta {m['beta']:.2f}  tfr {m['tfr']:.2f}  val/psnr {m.get('val/psnr', math.nan):.2f} dB  "
        f"(hold {m.get('val/psnr_hold', math.nan):.2f})  step {m.get('val/psnr_step', math.nan):.2f} "
        f"(copy {m.get('val/psnr_step_hold', math.nan):.2f})  {m['train/frames_per_s']:.1f} frames/s"
    )


def with_threads(cfg: Config, resume: Path | None = None) -> tuple[Config, str]:
    """The run's torch threads, fixed before it starts (so its checkpoints record them: the thread count
    changes float sums, and with it every number; a resume keeps the count it started with), and the
    line that says why."""
    if cfg.train.threads is not None:
        return cfg, f"threads: {cfg.train.threads} ([train] threads)"
    if resume is not None:
        started = load_config_of(resume).train.threads
        if started is not None:
            return cfg.replace(train={"threads": started}), f"threads: {started} (as the run started with)"
    choice = choose_threads(cfg.model.F_dim * cfg.data.frame_H * cfg.data.frame_W)
    return cfg.replace(train={"threads": choice.threads}), f"threads: {choice.threads} ({choice.why}; [train] threads sets it)"


def _metrics_log(out: Path, resume: Path | None) -> Path:
    """out/metrics.jsonl, holding only the epochs up to the one a resume starts after."""
    path = out / METRICS_FILE
    if resume is None or not path.exists():
        path.unlink(missing_ok=True)
        return path
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("epoch", -1) <= epoch_of(resume)]
    path.write_text("".join(f"{line}\n" for line in keep), encoding="utf-8")
    return path


def main(argv: list[str] | None = None, train: Callable[..., Any] | None = None) -> int:
    """The command; `train` is cvae.train.run, passed in by `python -m cvae.train` (train.py runs as
    __main__ there: importing cvae.train here would execute it a second time)."""
    from tqdm import tqdm

    if train is None:
        from cvae.train import run as train

    p = argparse.ArgumentParser(prog="python -m cvae.train", description="Train the lab's CVAE once.")
    p.add_argument("--config", required=True, help="TOML file with [model], [data], [train] tables")
    p.add_argument("--out", help="checkpoint directory (default: results/runs/<config name>)")
    p.add_argument("--fresh", action="store_true", help="move an existing run aside and start over")
    p.add_argument("--smoke-test", action="store_true", help="tiny data and 2 short epochs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        cfg = load_config(args.config)
        if args.smoke_test:
            cfg = smoke_config(cfg)
        resolve_device(cfg.train.device)  # a CUDA device that is not there: exit 2 before any work
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(RESULTS_DIR) / RUNS_DIR / (Path(args.config).stem + ("-smoke" if args.smoke_test else ""))
    resume = None
    if epoch_dirs(out):
        if args.fresh:
            print(f"moved the old run aside to {move_aside(out)}")
        elif _finished(out, cfg.train.epochs):
            print(f"error: {out} already holds a finished run; use --fresh to move it aside, or --out DIR", file=sys.stderr)
            return 2
        else:
            resume = latest_good_checkpoint(out)
    cfg, threads_line = with_threads(cfg, resume)
    print(threads_line)
    if resume is not None:
        print(f"resuming from {resume}")
    try:
        data = load_dataset(cfg.data)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    per_epoch = data.num_sequences(cfg.data.video_len) // cfg.train.batch_size
    if cfg.train.max_steps_per_epoch:
        per_epoch = min(per_epoch, cfg.train.max_steps_per_epoch)
    out.mkdir(parents=True, exist_ok=True)
    log = _metrics_log(out, resume)
    bar = tqdm(total=per_epoch * cfg.train.epochs, unit="step", dynamic_ncols=True)
    if resume is not None:
        bar.update(per_epoch * (epoch_of(resume) + 1))

    def report(m: dict[str, Any], ckpt: Path | None) -> None:
        bar.set_postfix_str(f"epoch {m['epoch']} loss {m['train/loss']:.4g} val/psnr {m.get('val/psnr', math.nan):.2f} dB")
        tqdm.write(epoch_line(m))
        with log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(m, default=str) + "\n")

    summary = train(cfg, report, out, resume_from=resume, dataset=data, progress=bar.update)
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
