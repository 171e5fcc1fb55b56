"""How much a single-run config learns per CPU-second: dB over the floor at a few budgets.

    python benchmarks/learning_budget.py --config configs/demo.toml
    python benchmarks/learning_budget.py --study search_spaces/kl.toml --params '{"kl_anneal_type": "None"}'
    python benchmarks/learning_budget.py --study search_spaces/kl.toml --set data.synthetic_dancers=0 --seeds 0,1
    python benchmarks/learning_budget.py --config configs/cpu.toml --set data.synthetic_style=lab --epochs 10,20,40 --seeds 0,1,2

Trains the config once per seed (1 thread unless --threads), validating every epoch as the studies
do, and prints one JSON line per budget (the epochs in --at, default about five points up to the
last), each a point of the learning curve:

    {"config": ..., "seed": ..., "epoch": ..., "budget": ..., "steps": ..., "cpu_s": ..., "val_psnr": ...,
     "val_psnr_hold": ..., "gain_db": val_psnr - val_psnr_hold, "val_psnr_step": ...,
     "val_psnr_step_hold": ..., "db_per_cpu_min": gain_db / (cpu_s / 60)}

budget is the run's epoch count (its schedule's length); a point with epoch == budget is a run's end.
cpu_s is the process CPU time spent so far, training and validation both (what a study's trial
pays). A budget is the epoch count of one run with the config's own schedules; to ask "what if the
run were shorter", pass --set train.epochs=N (and milestones to match), not a point of a longer run.
`--epochs 10,20,40` does that for each budget: one run per budget and seed, each with the config's
milestones scaled to it (milestone m of an E0-epoch config becomes round(m * E / E0)), one point at
its end: the frontier of what a budget buys. With several seeds a last line per budget gives the
mean and sd of gain_db over them.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvae.config import Config, ConfigError, load_config, smoke_config  # noqa: E402
from cvae.train import run  # noqa: E402


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as Cyclical


def overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """["train.lr=3e-3", "data.synthetic_dancers=1"] -> {"train": {"lr": 0.003}, "data": {...}}."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ConfigError(pair, "expected section.key=value, e.g. train.epochs=10")
        out.setdefault(section, {})[name] = _value(text)
    return out


def base_config(args: argparse.Namespace) -> tuple[str, Config]:
    if args.study:
        from study.spec import load_spec

        spec = load_spec(args.study)
        params = json.loads(args.params) if args.params else {}
        return f"{Path(args.study).stem}{json.dumps(params, sort_keys=True) if params else ''}", spec.config_for(params)
    return Path(args.config).stem, load_config(args.config)


def budgets(epochs: int, at: str | None) -> list[int]:
    """Epochs (1-based counts) at which to print a point: --at, else ~5 points ending at the last."""
    if at:
        return sorted({int(x) for x in at.split(",") if 1 <= int(x) <= epochs})
    points = {max(1, round(epochs * f)) for f in (0.2, 0.4, 0.6, 0.8, 1.0)}
    return sorted(points)


def scaled(cfg: Config, epochs: int) -> Config:
    """The config as an `epochs`-epoch run: its milestones scaled by epochs / its own epoch count."""
    at = {max(1, round(m * epochs / cfg.train.epochs)) for m in cfg.train.milestones}
    return cfg.replace(train={"epochs": epochs, "milestones": tuple(sorted(m for m in at if m < epochs))})


def curve(name: str, cfg: Config, seed: int, at: list[int]) -> list[dict[str, Any]]:
    """Train one run and return its points at the `at` budgets."""
    cfg = cfg.replace(train={"seed": seed, "val_every": 1})
    start = time.process_time()
    steps = 0
    points: list[dict[str, Any]] = []

    def progress(n: int) -> None:
        nonlocal steps
        steps += n

    def report(m: dict[str, Any], _ckpt: Path | None) -> None:
        if m["epoch"] + 1 not in at:
            return
        cpu_s = time.process_time() - start
        gain = m.get("val/psnr", math.nan) - m.get("val/psnr_hold", math.nan)
        point = {"config": name, "seed": seed, "epoch": m["epoch"] + 1, "budget": cfg.train.epochs, "steps": steps, "cpu_s": round(cpu_s, 1),
                 "val_psnr": round(m.get("val/psnr", math.nan), 3), "val_psnr_hold": round(m.get("val/psnr_hold", math.nan), 3),
                 "gain_db": round(gain, 3), "val_psnr_step": round(m.get("val/psnr_step", math.nan), 3),
                 "val_psnr_step_hold": round(m.get("val/psnr_step_hold", math.nan), 3),
                 "train_mse": round(m["train/mse"], 6), "db_per_cpu_min": round(gain / (cpu_s / 60), 3) if cpu_s else None}
        points.append(point)
        print(json.dumps(point), flush=True)

    run(cfg, report, progress=progress)
    return points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="a single-run TOML ([model], [data], [train])")
    src.add_argument("--study", help="a study TOML: its fixed tables, plus --params for the searched keys")
    p.add_argument("--params", help='JSON of searched values for --study, e.g. \'{"kl_anneal_type": "None"}\'')
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--at", help="comma-separated epoch budgets to print (default: ~5 up to the last epoch)")
    p.add_argument("--epochs", help="comma-separated budgets, one run each with milestones scaled to it (the frontier)")
    p.add_argument("--seeds", default="0", help="comma-separated train seeds (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a study's trial)")
    p.add_argument("--smoke-test", action="store_true", help="the config's seconds-long smoke variant")
    args = p.parse_args(argv)
    try:
        name, cfg = base_config(args)
        cfg = cfg.replace(**overrides(args.set)) if args.set else cfg
        cfg = cfg.replace(train={"threads": args.threads})
        if args.smoke_test:
            cfg = smoke_config(cfg)
    except (ConfigError, ValueError) as e:  # StudyError is a ValueError too
        print(f"error: {e}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.epochs:  # the frontier: one run per budget, its end point
        try:
            plan = [(scaled(cfg, e), [e]) for e in sorted({int(x) for x in args.epochs.split(",")})]
        except (ConfigError, ValueError) as e:
            print(f"error: --epochs: {e}", file=sys.stderr)
            return 2
    else:
        plan = [(cfg, budgets(cfg.train.epochs, args.at))]
    for run_cfg, at in plan:
        runs = [curve(name, run_cfg, seed, at) for seed in seeds]
        if len(seeds) > 1:
            _means(name, seeds, at, runs, run_cfg.train.epochs)
    return 0


def _means(name: str, seeds: list[int], at: list[int], runs: list[list[dict[str, Any]]], budget: int) -> None:
    """One line per budget: the mean and sd of gain_db over the seeds."""
    for i, epoch in enumerate(at):
        gains = [r[i]["gain_db"] for r in runs if i < len(r)]
        cpu = [r[i]["cpu_s"] for r in runs if i < len(r)]
        print(json.dumps({"config": name, "seeds": seeds, "epoch": epoch, "budget": budget, "cpu_s": round(statistics.mean(cpu), 1),
                          "gain_db_mean": round(statistics.mean(gains), 3),
                          "gain_db_sd": round(statistics.stdev(gains), 3) if len(gains) > 1 else None}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
