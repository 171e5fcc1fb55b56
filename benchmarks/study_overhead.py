"""What the study harness costs: the same small trials run (a) as plain sequential `cvae.train.run`
calls in one process with 1 thread, (b) through `python -m study.run` one at a time on 1 CPU each,
(c) through `python -m study.run` two at a time on 2 CPUs, and (d) as two plain processes side by
side, each running half of the trials: the speedup the machine itself allows for (c), without any
harness (two trials on two cores share memory bandwidth and caches).

    python benchmarks/study_overhead.py [--trials 4] [--epochs 3] [--steps 10] [--dims 32,8,4,48]

The trials are fixed: a grid over `tfr` with one value per trial, so (a), (b) and (c) train exactly
the same configurations (same data, seed, checkpoints every epoch). Prints one JSON line per run,
then one summary line: overhead (b)/(a) - 1 (target <= 0.10) and the same without Ray's start-up
and shutdown (Tune's own "seconds for the tuning loop"), speedup (a)/(c) (target >= 1.7) and the
machine's ceiling (a)/(d).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvae.data import load_dataset  # noqa: E402
from cvae.train import run  # noqa: E402
from study.spec import load_spec  # noqa: E402

_LOOP = re.compile(r"Total run time: ([\d.]+) seconds \(([\d.]+) seconds for the tuning loop\)")


def write_study(path: Path, name: str, trials: int, epochs: int, steps: int, dims: list[int], cache: Path) -> Path:
    video_len = 8
    study = {
        "study": {"name": name, "metric": "val/psnr", "mode": "max", "num_samples": 1, "seed": 0,
                  "max_concurrent": 1, "cpus_per_trial": 1},
        "search": {"sampler": "grid", "max_failures": 0},
        "model": dict(zip(("F_dim", "L_dim", "N_dim", "D_out_dim"), dims)),
        # Exactly `steps` batches of 2 sequences per epoch.
        "data": {"synthetic_test_sequences": 0, "video_len": video_len, "val_video_len": 48, "synthetic_train_videos": 2,
                 "synthetic_train_frames": steps * video_len, "cache_dir": str(cache)},
        "train": {"epochs": epochs, "max_steps_per_epoch": steps, "val_every": 1},
        "space": {"tfr": {"choices": [round(i / max(trials - 1, 1), 4) for i in range(trials)]}},
    }
    path.write_text(tomli_w.dumps(study), encoding="utf-8")
    return path


def plain(study: Path, out: Path, part: int = 0, parts: int = 1) -> dict[str, float]:
    """(a): every trial's config (or every `parts`-th from `part`) through cvae.train.run, one after
    the other, 1 thread."""
    spec = load_spec(study)
    torch.set_num_threads(1)
    data = load_dataset(spec.base_config().data)  # loaded once, as the study's driver does
    start = time.perf_counter()
    for i, value in enumerate(spec.space[0].choices):
        if i % parts == part:
            cfg = spec.config_for({"tfr": value}).replace(train={"threads": 1})
            run(cfg, None, out / f"trial{i}", dataset=data)
    return {"wall_s": time.perf_counter() - start}


def plain_side_by_side(study: Path, out: Path) -> dict[str, float]:
    """(d): two processes, each running half of the trials as in (a), at the same time."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, __file__, "--plain-part", str(study), str(out)]
    start = time.perf_counter()
    procs = [subprocess.Popen([*cmd, str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    for p in procs:
        o, e = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(p.args)} failed ({p.returncode}):\n{o[-3000:]}\n{e[-3000:]}")
    return {"wall_s": time.perf_counter() - start}


def through_study(study: Path, storage: Path, concurrent: int) -> dict[str, float]:
    """(b)/(c): the study CLI as a user types it; wall time of the whole command."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "study.run", str(study), "--max-concurrent", str(concurrent), "--storage", str(storage)]
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    m = _LOOP.search(r.stdout + r.stderr)
    trial_s = []
    for result in storage.glob("*/*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        trial_s.append(rows[-1]["time_total_s"])
    return {"wall_s": wall, "tuning_loop_s": float(m.group(2)) if m else float("nan"),
            "trials_total_s": sum(trial_s), "trials": len(trial_s)}


def main() -> None:
    if sys.argv[1:2] == ["--plain-part"]:  # (d)'s worker: --plain-part STUDY OUT PART
        study, out, part = sys.argv[2:5]
        plain(Path(study), Path(out), int(part), 2)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="training steps (batches of 2 sequences) per epoch")
    p.add_argument("--dims", default="32,8,4,48", help="F,L,N,D of the model")
    args = p.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    with tempfile.TemporaryDirectory(prefix="study-overhead-") as tmp:
        tmp_path = Path(tmp)
        study = write_study(tmp_path / "overhead.toml", "overhead", args.trials, args.epochs, args.steps, dims,
                            tmp_path / "cache")
        load_dataset(load_spec(study).base_config().data)  # generate the data outside every timing
        size = {"trials": args.trials, "epochs": args.epochs, "steps": args.steps, "dims": dims}
        a = plain(study, tmp_path / "plain")
        print(json.dumps({"run": "a_plain_sequential", **size, **a}), flush=True)
        b = through_study(study, tmp_path / "b", 1)
        print(json.dumps({"run": "b_study_1_concurrent", **size, **b}), flush=True)
        c = through_study(study, tmp_path / "c", 2)
        print(json.dumps({"run": "c_study_2_concurrent", **size, **c}), flush=True)
        d = plain_side_by_side(study, tmp_path / "d")
        print(json.dumps({"run": "d_plain_2_side_by_side", **size, **d}), flush=True)
    print(json.dumps({
        "run": "summary", **size,
        "overhead": b["wall_s"] / a["wall_s"] - 1, "overhead_target": 0.10,
        "overhead_excl_ray_startup": b["tuning_loop_s"] / a["wall_s"] - 1,
        "ray_startup_shutdown_s": b["wall_s"] - b["tuning_loop_s"],
        "speedup_2_concurrent": a["wall_s"] / c["wall_s"], "speedup_target": 1.7,
        "speedup_2_concurrent_excl_ray_startup": a["wall_s"] / c["tuning_loop_s"],
        "speedup_ceiling_plain_side_by_side": a["wall_s"] / d["wall_s"],
    }), flush=True)


if __name__ == "__main__":
    main()
