"""Teacher forcing and KL annealing as pure functions of the epoch (counted from 0)."""
from __future__ import annotations


def tfr(epoch: int, tfr0: float, sde: int, d_step: float) -> float:
    """Teacher-forcing ratio used in `epoch`.

    Starts at tfr0; at the end of every epoch e >= sde it drops by d_step (so epochs 0..sde use
    tfr0, epoch sde+1 uses tfr0 - d_step, ...), floored at 0.
    """
    decays = max(0, epoch - sde)
    return max(0.0, tfr0 - decays * d_step)


def beta(epoch: int, kind: str, cycle: int, ratio: float) -> float:
    """KL weight used in `epoch` (Fu et al. 2019, frange_cycle_linear, per epoch).

    Cyclical: ramps 0 -> 1 over the first `ratio` of each `cycle`-epoch period, then holds 1.
    Monotonic: one ramp over the first `cycle * ratio` epochs, then 1 forever.
    None: no annealing, beta = 1.
    """
    if kind == "None":
        return 1.0
    ramp = cycle * ratio  # epochs from 0 to 1
    if kind == "Cyclical":
        return min(1.0, (epoch % cycle) / ramp)
    if kind == "Monotonic":
        return min(1.0, epoch / ramp)
    raise ValueError(f"kl_anneal_type must be Monotonic, Cyclical or None, got {kind!r}")
