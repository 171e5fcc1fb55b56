"""Where a run computes and at what precision: `[train] device` and `[train] precision` made real.

Nothing else in cvae names a device: the loop asks `resolve_device` once and moves the model, the
optimiser state and the training frames there; autocast and the GradScaler come from here.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from cvae.config import ConfigError

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. under taskset), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def busy_cpus(samples: int = 5, interval_s: float = 0.05) -> float | None:
    """How many CPUs other work keeps busy: the larger of the machine's runnable tasks beyond this
    process now (/proc/loadavg's instantaneous count, the median of a few samples) and its 1-minute
    load average (a short sample misses work that waits on I/O between bursts). None off Linux."""
    counts = []
    load = 0.0
    for i in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                fields = f.read().split()
            load, running = float(fields[0]), int(fields[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(max(running - 1, 0))  # the reading process is one of them
        if i + 1 < samples:
            time.sleep(interval_s)
    return max(float(statistics.median(counts)), round(load, 1))


# At the studies' size and below (F_dim x frame_H x frame_W of 32 x 16 x 32) a training step is
# overhead-bound: benchmarks/throughput.py --busy 0 measured 39 frames/s with 1 thread and 2.4 with 2
# on this 2-core machine (2026-12-02, other work on it at load ~1.6), so a run that small takes one.
SMALL_WORK = 32 * 16 * 32


@dataclass(frozen=True)
class ThreadChoice:
    """A single run's torch threads when its config leaves `threads` unset, and why."""

    threads: int
    cpus: int  # the CPUs this process may use (available_cpus)
    busy: float | None  # of the machine's CPUs, how many other work keeps busy (busy_cpus)
    small: bool = False  # a model and frame size at or under SMALL_WORK: one thread measured fastest

    @property
    def why(self) -> str:
        if self.small:
            return "a model this small trains fastest on one thread (benchmarks/throughput.py --busy)"
        if self.busy is None:
            return f"the {self.cpus} CPUs this process may use"
        return f"{self.cpus} CPUs, {self.busy:g} busy with other work: {self.threads} free"


def choose_threads(work: int | None = None) -> ThreadChoice:
    """A single run's threads: one for a small run (work = F_dim x frame_H x frame_W at or under
    SMALL_WORK), else never more than the CPUs that are free: OpenMP threads on busy cores spin against
    the other work (a 2-thread run beside a loaded `make test` took 100 s a step, 1 thread seconds);
    benchmarks/throughput.py --busy N measures both."""
    cpus = available_cpus()
    busy = busy_cpus()
    if work is not None and work <= SMALL_WORK:
        return ThreadChoice(1, cpus, busy, small=True)
    free = cpus if busy is None else min(cpus, max(1, cpus - round(busy)))
    return ThreadChoice(free, cpus, busy)


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when CUDA is available, else cpu; `cuda`/`cuda:N` checked against what is there.

    Raises ConfigError (key train.device) for a CUDA device this process cannot see, before any work.
    """
    device = torch.device(("cuda" if cuda_count() else "cpu") if name == "auto" else name)
    if device.type != "cuda":
        return device
    n = cuda_count()
    if n == 0:
        raise ConfigError("train.device", f"{name!r} asked for, but this process sees no CUDA device "
                                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
    if device.index is not None and device.index >= n:
        raise ConfigError("train.device", f"{name!r} asked for, but this process sees {n} CUDA device(s): cuda:0..cuda:{n - 1}")
    # Always with an index (torch.cuda.set_device refuses a bare "cuda"): the process's current one.
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def autocast(device: torch.device, precision: str) -> ContextManager[Any]:
    """torch.autocast for the forward passes at `precision` (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler that scales only for fp16 (bf16 and fp32 have fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def setup(device: torch.device) -> None:
    """Per-process settings of a device: cuDNN picks its fastest kernels (fixed shapes every step)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.set_device(device)


def rng_states(device: torch.device) -> dict[str, Any]:
    """The global RNG states a checkpoint needs for an exact resume on this device kind."""
    states: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in states:
        torch.cuda.set_rng_state_all(states["cuda_rng"])
