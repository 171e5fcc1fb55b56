"""Train and validation-rollout throughput: the fast path (cvae/model.py) vs the lab's step-by-step
loop (cvae/reference.py), measured interleaved in one process so the ratio is honest on a noisy
machine.

    python benchmarks/throughput.py [--dims F,L,N,D ...] [--data PATH] [--steps N] [--threads N]
                                    [--device cpu|cuda|cuda:N] [--precision fp32|bf16|fp16] [--compile]
    python benchmarks/throughput.py --busy N [--busy-steps K]

--busy N measures what a single run's thread choice (cvae.device.choose_threads) rests on: with N
CPU-bound background processes running (each ends by itself after --busy-max-s, and is stopped when
the benchmark ends), the fast path's training frames/s at the studies' size (dims 32,8,4,48, 16x32
frames, 8-frame sequences, batch 2) with 1 thread and with 2, interleaved, and the threads
choose_threads picks under that load. One JSON line per thread count, then one with the choice.

Prints one JSON line per measurement, then one line per case and dims with "impl": "ratio", and
one with "impl": "flop_ratio": the FLOPs (torch's FlopCounterMode: convolutions and matmuls,
backward included) the reference spends per frame over those of the fast path. Both paths compute
the same maths, so the time ratio can only exceed the FLOP ratio by running the same kernels more
efficiently (batching); a compute-bound model on a CPU gets little of that.

--device, --precision and --compile run both paths there, under torch.autocast at that precision,
the fast path's five modules compiled (torch.compile; its warm-up is untimed); every JSON line
carries those fields. On CUDA the timings wait for the device (torch.cuda.synchronize).
"""
from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from cvae.config import DataConfig, ModelConfig
from cvae.data import Dataset, load_dataset, sequence_batch, to_tensor
from cvae.device import autocast, choose_threads, resolve_device
from cvae.metrics import kl_per_frame
from cvae.model import CVAE
from cvae.reference import forward_reference, rollout_reference

LAB, SMALL = (128, 32, 12, 192), (32, 8, 4, 48)


class Run:
    """Where and how the benchmark computes: device, precision, compiled or not."""

    def __init__(self, device: str = "cpu", precision: str = "fp32", compile: bool = False) -> None:
        self.device, self.precision, self.compile = resolve_device(device), precision, compile

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def fields(self) -> dict[str, object]:
        return {"device": str(self.device), "precision": self.precision, "compile": self.compile}


RUN = Run()


def train_step(model: CVAE, opt: torch.optim.Optimizer, img, label, tf: bool, eps, reference: bool) -> None:
    with autocast(RUN.device, RUN.precision):
        out = forward_reference(model, img, label, tf, eps) if reference else model(img, label, tf, eps)
    loss = (out.pred.float() - img[:, 1:]).pow(2).mean() + 0.5 * kl_per_frame(out.mu.float(), out.logvar.float()).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def bench_train(dims, data: Dataset, steps: int, batch: int, video_len: int, tf_mode: str) -> dict[str, float]:
    torch.manual_seed(0)
    fast = CVAE(ModelConfig(*dims)).to(RUN.device)
    ref = copy.deepcopy(fast)
    if RUN.compile:
        for module in fast.children():
            module.compile()
    opts = {"fast": torch.optim.Adam(fast.parameters(), 1e-3), "reference": torch.optim.Adam(ref.parameters(), 1e-3)}
    seconds = {"fast": 0.0, "reference": 0.0}
    rng = np.random.default_rng(0)
    n_seq = data.num_sequences(video_len)
    for step in range(steps + 1):  # step 0 warms both up, untimed
        img, label = (x.to(RUN.device) for x in sequence_batch(data.train, rng.choice(n_seq, size=batch, replace=False), video_len))
        tf = {"on": True, "off": False}.get(tf_mode, step % 2 == 0) if step else None
        eps = fast.noise(batch, video_len - 1, img)
        order = [("fast", fast), ("reference", ref)] if step % 2 else [("reference", ref), ("fast", fast)]
        for name, model in order:
            for warm in ([True, False] if tf is None else [tf]):  # step 0 warms up (and compiles) both modes
                RUN.sync()
                start = time.perf_counter()
                train_step(model, opts[name], img, label, warm, eps, reference=name == "reference")
                RUN.sync()
                if step:
                    seconds[name] += time.perf_counter() - start
    return seconds


def bench_rollout(dims, data: Dataset, frames: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = CVAE(ModelConfig(*dims)).to(RUN.device).eval()
    img = to_tensor(data.val.img[:frames])[None].to(RUN.device)
    label = to_tensor(data.val.label[:frames])[None].to(RUN.device)
    z = model.noise(1, frames - 1, img)
    seconds = {"fast": 0.0, "reference": 0.0}
    short = label[:, :3]
    for rep in range(repeats):
        for name in (("fast", "reference") if rep % 2 == 0 else ("reference", "fast")):
            if rep == 0:  # warm-up
                with torch.inference_mode():
                    model.rollout(img[:, 0], short, z[:2])
                rollout_reference(model, img[:, 0], short, z[:2])
            RUN.sync()
            start = time.perf_counter()
            with autocast(RUN.device, RUN.precision):
                if name == "fast":
                    with torch.inference_mode():
                        model.rollout(img[:, 0], label, z)
                else:
                    rollout_reference(model, img[:, 0], label, z)
            RUN.sync()
            seconds[name] += time.perf_counter() - start
    return seconds


def flops_per_frame(dims, data: Dataset, batch: int, video_len: int, tf_mode: str, frames: int) -> dict[str, dict[str, float]]:
    """GFLOP per frame of one training step and one rollout, fast and reference, counted (not timed)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = CVAE(ModelConfig(*dims))
    img, label = sequence_batch(data.train, np.arange(batch), video_len)
    eps = model.noise(batch, video_len - 1, img)
    modes = {"on": [True], "off": [False]}.get(tf_mode, [True, False])
    out: dict[str, dict[str, float]] = {"train": {}, "rollout": {}}
    for impl in ("fast", "reference"):
        total = 0
        for tf in modes:
            counter = FlopCounterMode(display=False)
            with counter:
                o = forward_reference(model, img, label, tf, eps) if impl == "reference" else model(img, label, tf, eps)
                ((o.pred - img[:, 1:]).pow(2).mean() + 0.5 * kl_per_frame(o.mu, o.logvar).mean()).backward()
            total += counter.get_total_flops()
            model.zero_grad(set_to_none=True)
        out["train"][impl] = total / len(modes) / (batch * (video_len - 1)) / 1e9
    model.eval()
    vimg = to_tensor(data.val.img[:frames])[None]
    vlabel = to_tensor(data.val.label[:frames])[None]
    z = model.noise(1, frames - 1, vimg)
    for impl in ("fast", "reference"):
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            if impl == "fast":
                model.rollout(vimg[:, 0], vlabel, z)
            else:
                rollout_reference(model, vimg[:, 0], vlabel, z)
        out["rollout"][impl] = counter.get_total_flops() / (frames - 1) / 1e9
    return out


def _spin(until: float) -> None:
    """A CPU-bound background process: pure-Python arithmetic until `until` (time.time())."""
    x = 0
    while time.time() < until:
        for i in range(10_000):
            x = (x * 31 + i) % 1_000_003


def bench_busy(n_busy: int, steps: int, max_s: float) -> None:
    """Training frames/s at the studies' size with 1 and 2 threads while n_busy processes spin."""
    data = load_dataset(DataConfig(frame_H=16, frame_W=32, video_len=8, val_video_len=16, synthetic_test_sequences=0,
                                   synthetic_train_videos=4, synthetic_train_frames=64, synthetic_dancers=1))
    ctx = multiprocessing.get_context("spawn")
    busy = [ctx.Process(target=_spin, args=(time.time() + max_s,), daemon=True) for _ in range(n_busy)]
    for b in busy:
        b.start()
    try:
        time.sleep(1.0 if n_busy else 0.0)  # let the load arrive before measuring
        torch.manual_seed(0)
        model = CVAE(ModelConfig(*SMALL))
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        rng = np.random.default_rng(0)
        seconds = {1: 0.0, 2: 0.0}
        n_seq = data.num_sequences(8)
        for step in range(steps + 1):  # step 0 warms up, untimed
            img, label = sequence_batch(data.train, rng.choice(n_seq, size=2, replace=False), 8)
            eps = model.noise(2, 7, img)
            for threads in ((1, 2) if step % 2 else (2, 1)):
                torch.set_num_threads(threads)
                start = time.perf_counter()
                train_step(model, opt, img, label, step % 2 == 0, eps, reference=False)
                if step:
                    seconds[threads] += time.perf_counter() - start
        frames = steps * 2 * 7
        for threads, s in seconds.items():
            print(json.dumps({"benchmark": "busy", "busy": n_busy, "threads": threads, "dims": list(SMALL),
                              "frame": [16, 32], "frames": frames, "seconds": round(s, 4),
                              "frames_per_s": round(frames / s, 2)}), flush=True)
        choice = choose_threads()
        print(json.dumps({"benchmark": "busy", "busy": n_busy, "chosen_threads": choice.threads,
                          "cpus": choice.cpus, "busy_cpus_seen": choice.busy, "why": choice.why}), flush=True)
    finally:
        for b in busy:
            b.terminate()
            b.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", action="append", help="F,L,N,D (repeatable; default: lab 128,32,12,192 and small 32,8,4,48)")
    p.add_argument("--data", help="a lab-layout dataset (default: the synthetic one)")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per implementation")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all available CPUs)")
    p.add_argument("--batch", type=int, default=2, help="sequences per training step (lab: 2)")
    p.add_argument("--video-len", type=int, default=16, help="frames per training sequence (lab: 16)")
    p.add_argument("--rollout-frames", type=int, default=48, help="validation frames rolled out per repeat")
    p.add_argument("--repeats", type=int, default=2, help="rollout repeats per implementation")
    p.add_argument("--tf", choices=["mix", "on", "off"], default="mix", help="teacher forcing in the train case (mix alternates)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast precision (default fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path's five modules")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (it runs on the CPU)")
    p.add_argument("--busy", type=int, metavar="N", help="threads 1 vs 2 with N CPU-bound processes beside (see above)")
    p.add_argument("--busy-steps", type=int, default=20, help="timed steps per thread count under --busy")
    p.add_argument("--busy-max-s", type=float, default=300.0, help="the background processes end after this long")
    args = p.parse_args(argv)
    if args.busy is not None:
        bench_busy(args.busy, args.busy_steps, args.busy_max_s)
        return
    global RUN
    RUN = Run(args.device, args.precision, args.compile)

    threads = args.threads or len(__import__("os").sched_getaffinity(0))
    torch.set_num_threads(threads)
    dims_list = [tuple(int(x) for x in d.split(",")) for d in args.dims] if args.dims else [LAB, SMALL]
    cfg = DataConfig(root=str(Path(args.data).resolve()) if args.data else None, video_len=args.video_len,
                     synthetic_test_sequences=0,
                     val_video_len=max(args.rollout_frames, 2))
    data = load_dataset(cfg)

    def emit(**row: object) -> None:
        print(json.dumps({**row, **RUN.fields()}), flush=True)

    for dims in dims_list:
        results = {}
        secs = bench_train(dims, data, args.steps, args.batch, args.video_len, args.tf)
        frames = args.steps * args.batch * (args.video_len - 1)
        for impl, s in secs.items():
            results[("train", impl)] = frames / s
            emit(case="train", impl=impl, dims=list(dims), batch=args.batch, frames=frames, seconds=round(s, 4),
                 frames_per_s=round(frames / s, 3), threads=threads, teacher_forcing=args.tf)
        secs = bench_rollout(dims, data, args.rollout_frames, args.repeats)
        frames = args.repeats * (args.rollout_frames - 1)
        for impl, s in secs.items():
            results[("rollout", impl)] = frames / s
            emit(case="rollout", impl=impl, dims=list(dims), batch=1, frames=frames, seconds=round(s, 4),
                 frames_per_s=round(frames / s, 3), threads=threads)
        for case in ("train", "rollout"):
            emit(case=case, impl="ratio", dims=list(dims), ratio=round(results[(case, "fast")] / results[(case, "reference")], 3))
        if args.no_flops:
            continue
        flops = flops_per_frame(dims, data, args.batch, args.video_len, args.tf, min(args.rollout_frames, 8))
        for case, per in flops.items():
            emit(case=case, impl="flop_ratio", dims=list(dims), fast_gflop_per_frame=round(per["fast"], 4),
                 reference_gflop_per_frame=round(per["reference"], 4), ratio=round(per["reference"] / per["fast"], 3))


if __name__ == "__main__":
    main()
