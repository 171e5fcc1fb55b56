"""What ASHA early stopping saves: one fixed small study run at full budget and again with
`scheduler = "asha"`, comparing the best val/psnr found and the trial-epochs spent.

    python benchmarks/asha_savings.py [--trials 16] [--epochs 8] [--steps 4] [--reduction-factor 3]

Both runs sample the same configurations (Optuna's random sampler, same seed, over tfr,
kl_anneal_type and lr); trial-epochs are counted from the results on disk (study.analyze).
Prints one JSON line per run and a summary line with the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from study.tables import analyze  # noqa: E402


def write_study(path: Path, name: str, args: argparse.Namespace, asha: bool, cache: Path) -> Path:
    video_len = 8
    search: dict[str, object] = {"sampler": "random", "max_failures": 0}
    if asha:
        search.update(scheduler="asha", grace_period=1, reduction_factor=args.reduction_factor)
    study = {
        "study": {"name": name, "metric": "val/psnr", "mode": "max", "num_samples": args.trials, "seed": 0,
                  "max_concurrent": 2, "cpus_per_trial": 1},
        "search": search,
        "model": {"F_dim": 16, "L_dim": 4, "N_dim": 4, "D_out_dim": 16},
        "data": {"synthetic_test_sequences": 0, "video_len": video_len, "val_video_len": 32, "synthetic_train_videos": 2,
                 "synthetic_train_frames": args.steps * video_len, "cache_dir": str(cache)},
        "train": {"epochs": args.epochs, "max_steps_per_epoch": args.steps, "val_every": 1},
        "space": {"tfr": {"low": 0.0, "high": 1.0},
                  "kl_anneal_type": {"choices": ["Monotonic", "Cyclical", "None"]},
                  "lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    }
    path.write_text(tomli_w.dumps(study), encoding="utf-8")
    return path


def run_study(study: Path, storage: Path, name: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "study.run", str(study), "--storage", str(storage)]
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    trials = analyze(storage / name).trials
    statuses = trials["status"].value_counts().sort("status").rows()
    return {"wall_s": wall, "best_val_psnr": trials["best_val_psnr"].max(),
            "trial_epochs": int(trials["epochs_run"].sum()), "trials": trials.height,
            "statuses": dict(statuses)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="training steps (batches of 2 sequences) per epoch")
    p.add_argument("--reduction-factor", type=int, default=3)
    args = p.parse_args()
    size = {"trials": args.trials, "epochs": args.epochs, "steps": args.steps}
    with tempfile.TemporaryDirectory(prefix="asha-savings-") as tmp:
        tmp_path = Path(tmp)
        out = {}
        for arm, asha in (("full_budget", False), ("asha", True)):
            name = f"bench-{arm.replace('_', '-')}"
            study = write_study(tmp_path / f"{name}.toml", name, args, asha, tmp_path / "cache")
            out[arm] = run_study(study, tmp_path / "results", name)
            extra = {"grace_period": 1, "reduction_factor": args.reduction_factor} if asha else {}
            print(json.dumps({"run": arm, **size, **extra, **out[arm]}), flush=True)
    full, asha = out["full_budget"], out["asha"]
    print(json.dumps({
        "run": "summary", **size,
        "trial_epochs_ratio": asha["trial_epochs"] / full["trial_epochs"],
        "wall_ratio": asha["wall_s"] / full["wall_s"],
        "best_val_psnr_delta_db": asha["best_val_psnr"] - full["best_val_psnr"],
    }), flush=True)


if __name__ == "__main__":
    main()
