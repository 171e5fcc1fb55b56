"""How many trials one GPU holds: k = 1, 2, 4, 8 trials at once on one GPU through Ray's fractional
GPUs (each asks for 1/k of it, as `[study] gpus_per_trial = 1/k` does), lab dims, a fixed number of
steps each -> the aggregate training frames/s and its speed-up over k = 1.

    python benchmarks/gpu_packing.py [--ks 1,2,4,8] [--steps 60] [--dims 128,32,12,192] [--precision bf16]

Each trial is a plain `cvae.train.run` in a Ray task: epoch 0 warms up (cuDNN autotuning, the
allocator), epoch 1 is timed, epoch 2 ends with a short validation. The aggregate is all trials'
timed frames over the span from the first timed epoch's start to the last one's end. Prints one
JSON line per k and a summary line. On a machine without CUDA it prints one line saying so and
exits 0 (`--cpu` runs the same logic on the CPU with Ray's logical GPUs, for testing the script).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cvae.config import Config  # noqa: E402

LAB = (128, 32, 12, 192)


def trial_config(dims: tuple[int, ...], steps: int, precision: str, device: str, cache: str | None) -> Config:
    return Config.from_dict({
        "model": dict(zip(("F_dim", "L_dim", "N_dim", "D_out_dim"), dims)),
        "data": {"synthetic_test_sequences": 0, "video_len": 16, "val_video_len": 16, "synthetic_train_videos": 4, "synthetic_train_frames": 128,
                 **({"cache_dir": cache} if cache else {})},
        "train": {"epochs": 3, "batch_size": 2, "max_steps_per_epoch": steps, "val_every": 100, "lr": 1e-3,
                  "precision": precision, "device": device, "threads": 1},
    })


def one_trial(cfg_dict: dict[str, Any], seed: int) -> dict[str, float]:
    """A Ray task: train, and return the timed epoch's span (wall clock) and frames."""
    from cvae.train import run

    cfg = Config.from_dict(cfg_dict).replace(train={"seed": seed})
    timed: dict[str, float] = {}

    def report(m: dict[str, Any], _ckpt: Any) -> None:
        if m["epoch"] == 1:
            end = time.time() - 0.0
            timed.update(end=end, start=end - m["time/epoch_s"],
                         frames=m["train/sequences"] * (cfg.data.video_len - 1), frames_per_s=m["train/frames_per_s"])

    run(cfg, report)
    return timed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ks", default="1,2,4,8", help="trials per GPU to try (default 1,2,4,8)")
    p.add_argument("--steps", type=int, default=60, help="optimisation steps per epoch of each trial")
    p.add_argument("--dims", default=",".join(map(str, LAB)), help="F,L,N,D (default: the lab's)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--cpu", action="store_true", help="no CUDA needed: the CPU stands in (tests the script)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu:
        print(json.dumps({"benchmark": "gpu_packing", "skipped": "no CUDA device on this machine"}))
        return 0
    import ray

    ks = [int(k) for k in args.ks.split(",")]
    dims = tuple(int(x) for x in args.dims.split(","))
    device = "cpu" if args.cpu else "cuda"
    cfg = trial_config(dims, args.steps, args.precision, device, os.environ.get("CVAE_CACHE"))
    from cvae.data import load_dataset

    load_dataset(cfg.data)  # generate the synthetic data once, before the trials race for it
    ray.init(address="local", num_gpus=1, num_cpus=max(ks) + 1, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    rows = []
    try:
        for k in ks:
            task = ray.remote(num_gpus=1 / k, num_cpus=1)(one_trial)
            out = ray.get([task.remote(cfg.to_dict(), seed) for seed in range(k)])
            span = max(o["end"] for o in out) - min(o["start"] for o in out)
            frames = sum(o["frames"] for o in out)
            row = {"benchmark": "gpu_packing", "k": k, "gpus_per_trial": round(1 / k, 4), "dims": list(dims),
                   "precision": args.precision, "device": device, "frames": frames, "span_s": round(span, 3),
                   "aggregate_frames_per_s": round(frames / span, 2),
                   "per_trial_frames_per_s": [round(o["frames_per_s"], 2) for o in out]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
    base = rows[0]["aggregate_frames_per_s"]
    print(json.dumps({"benchmark": "gpu_packing", "summary": {str(r["k"]): round(r["aggregate_frames_per_s"] / base, 2)
                                                             for r in rows}, "speedup_over": f"k={rows[0]['k']}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
