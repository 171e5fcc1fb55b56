"""The single-run command: `python -m cvae.train --config FILE.toml [--out DIR] [--fresh] [--smoke-test]`.

Trains once with a progress bar and one line per epoch; resumes an unfinished run in the same
folder, refuses to overwrite a finished one unless `--fresh` (which moves it aside).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

from cvae.checkpoint import epoch_dirs, epoch_of, latest_good_checkpoint, move_aside
from cvae.config import ConfigError, load_config, smoke_config
from cvae.data import DatasetError, load_dataset
from cvae.device import resolve_device
from cvae.train import run


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


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

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
    out = Path(args.out) if args.out else Path("results") / "runs" / (Path(args.config).stem + ("-smoke" if args.smoke_test else ""))
    resume = None
    if epoch_dirs(out):
        if args.fresh:
            print(f"moved the old run aside to {move_aside(out)}")
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
    per_epoch = data.num_sequences(cfg.data.video_len) // cfg.train.batch_size
    if cfg.train.max_steps_per_epoch:
        per_epoch = min(per_epoch, cfg.train.max_steps_per_epoch)
    bar = tqdm(total=per_epoch * cfg.train.epochs, unit="step", dynamic_ncols=True)
    if resume is not None:
        bar.update(per_epoch * (epoch_of(resume) + 1))

    def report(m: dict[str, Any], ckpt: Path | None) -> None:
        bar.set_postfix_str(f"epoch {m['epoch']} loss {m['train/loss']:.4g} val/psnr {m.get('val/psnr', math.nan):.2f} dB")
        tqdm.write(epoch_line(m))

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
