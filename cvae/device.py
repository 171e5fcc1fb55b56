"""Where a run computes and at what precision: `[train] device` and `[train] precision` made real.

Nothing else in cvae names a device: the loop asks `resolve_device` once and moves the model, the
optimiser state and the training frames there; autocast and the GradScaler come from here.
"""
from __future__ import annotations

import contextlib
import os
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
