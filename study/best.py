"""What a study found, from THE ranking (study.tables.ranking): best.toml and the console's last lines.

`conclude(exp_dir)` reads the results on disk (docs/ARCHITECTURE.md, contract 5), so it says the same for a study that
just ended as the report does at any later time.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from study.analyze import StudyInfo, read_study
from study.ranking import finite
from study.tables import Tables, analyze, fmt_value, ranking, winner
from study.place import BEST


def _per_seed(best: Mapping[str, Any], tables: Tables) -> list[tuple[int, float]]:
    scored = tables.trials.filter((pl.col("setting") == best["setting"]) & pl.col("objective").is_not_null())
    return sorted((int(seed), value) for seed, value in scored.select("seed", "objective").iter_rows())


def _epoch_row(tables: Tables, trial_id: str, epoch: int | None) -> dict[str, Any]:
    rows = tables.epochs.filter((pl.col("trial_id") == trial_id) & (pl.col("epoch") == epoch))
    return rows.row(0, named=True) if rows.height else {}


def write_best_toml(best: Mapping[str, Any], tables: Tables, info: StudyInfo, exp_dir: Path,
                    where: Callable[[Path], str] = str) -> Path:
    """results/<study>/best.toml: the ranking's first setting as a `python -m cvae.train --config`
    file: the config its best-scoring trial ran, and the checkpoint of the epoch that scored."""
    import tomli_w

    trial = tables.trials.filter(pl.col("trial") == best["best_trial"]).row(0, named=True)
    config = json.loads(trial["config"])
    if "device" not in info.fixed.get("train", {}) and "device" not in info.searched:
        # The trial ran where Ray put it ("auto" is the CPU without a reserved GPU); a rerun picks its own.
        config.get("train", {}).pop("device", None)
    hold = _epoch_row(tables, trial["trial_id"], best["best_epoch"]).get("val/psnr_hold")
    per_seed = _per_seed(best, tables)
    lines = [f"# Best configuration of study {info.name!r} by {info.scored_by}: {best['setting']}.",
             f"# {info.metric} {best['best_value']:.4g} at epoch {best['best_epoch']} of trial {best['best_trial']}"
             + (f" (val/psnr_hold {hold:.4g} for reference)" if finite(hold) else "")]
    if len(per_seed) > 1:
        lines.append(f"# Ranked by the mean over its {len(per_seed)} seeded trials: {best['mean']:.4g} "
                     f"({', '.join(f'seed {s}: {v:.4g}' for s, v in per_seed)}); train.seed is the best one's.")
    threads = config.get("train", {}).get("threads")
    if threads is not None:
        # The thread count changes the order of float sums, so every number after the first step.
        lines.append(f"# train.threads = {threads} is the trial's (cpus_per_trial): with it, a rerun on the same "
                     f"device kind reproduces the trial's numbers exactly (same kind of processor)")
    ckpt = best["best_checkpoint"]
    lines.append(f"# Best checkpoint: {where(exp_dir / ckpt) if ckpt else '(not kept)'}")
    lines.append(f"# Rerun: python -m cvae.train --config {exp_dir / BEST}")
    path = exp_dir / BEST
    path.write_text("\n".join(lines) + "\n\n" + tomli_w.dumps(config), encoding="utf-8")
    return path


def print_best(best: Mapping[str, Any] | None, tables: Tables, info: StudyInfo, exp_dir: Path,
               best_toml: Path | None, where: Callable[[Path], str] = str) -> None:
    """The console's last lines: the trials, and the ranking's first setting with its floor."""
    counts = {s: n for s, n in tables.trials.group_by("status").len().iter_rows()}
    n_div, n_err = counts.get("diverged", 0), counts.get("errored", 0)
    print(f"\n{tables.trials.height} trials in {exp_dir}" + (f" ({n_div} diverged)" if n_div else "")
          + (f" ({n_err} failed)" if n_err else ""))
    if best is None:
        print(f"no trial reported a finite {info.metric}: no best configuration")
        return
    shown = ", ".join(f"{p} = {fmt_value(best[p])}" for p in info.searched if best.get(p) is not None)
    print(f"best configuration ({info.scored_by}): {shown or '(the fixed values: nothing searched)'}")
    per_seed = _per_seed(best, tables)
    if len(per_seed) > 1:
        seeds = ", ".join(f"seed {s}: {v:.2f}" for s, v in per_seed)
        print(f"  {info.metric} {best['mean']:.4g} = mean over its {len(per_seed)} seeded trials ({seeds}); "
              f"ranked by that mean, not by one lucky seed")
    else:
        print(f"  {info.metric} {best['best_value']:.4g} at epoch {best['best_epoch']}")
    row = _epoch_row(tables, best["best_trial_id"], best["best_epoch"])
    if finite(row.get("val/psnr_hold")):
        print(f"  val/psnr_hold {row['val/psnr_hold']:.2f} dB (repeating frame 0: the floor to beat), val/psnr "
              f"{row.get('val/psnr') or math.nan:.2f} dB at that epoch")
    ckpt = best["best_checkpoint"]
    print(f"  trial: {where(exp_dir / best['best_trial'])}")
    print(f"  checkpoint: {where(exp_dir / ckpt) if ckpt else '(not kept)'}")
    if best_toml is not None:
        print(f"  rerun it alone: python -m cvae.train --config {best_toml}")


def conclude(exp_dir: Path, where: Callable[[Path], str] = str) -> dict[str, Any] | None:
    """The end of a study, from its results on disk: THE ranking -> best.toml and the console lines."""
    info = read_study(exp_dir)
    tables = analyze(exp_dir)
    best = winner(ranking(tables, info))
    best_toml = write_best_toml(best, tables, info, exp_dir, where) if best is not None else None
    print_best(best, tables, info, exp_dir, best_toml, where)
    return best


__all__ = ["conclude", "print_best", "write_best_toml"]
