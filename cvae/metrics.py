"""PSNR per frame, SSIM and the KL term: plain tensor functions, data range 1.0; and the names of
the metrics a run reports.

torch is imported inside the functions: study/ reads the names below in commands that never touch
a tensor (`cvae-study status` answers in a fraction of a second instead of paying torch's ~2 s import).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def psnr_per_frame(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR of each frame, pred/target (..., C, H, W) -> (...,): 20 log10(range) - 10 log10(MSE).

    A perfect frame (MSE 0) gives +inf, as the definition does.
    """
    import torch

    mse = (pred.float() - target.float()).pow(2).mean(dim=(-3, -2, -1))
    return 20 * math.log10(data_range) - 10 * torch.log10(mse)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
    import torch

    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()  # (size, size)


def ssim_per_frame(pred: Tensor, target: Tensor, data_range: float = 1.0, win: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM (Wang et al. 2004) of each frame, (..., C, H, W) -> (...,), mean over channels and pixels.

    Gaussian window (11, sigma 1.5), K1 = 0.01, K2 = 0.03, population covariances, only windows that
    fit inside the frame: the same numbers as scikit-image's `structural_similarity(...,
    gaussian_weights=True, use_sample_covariance=False)`.
    """
    import torch
    from torch.nn import functional as nnf

    lead = pred.shape[:-3]
    c, h, w = pred.shape[-3:]
    win = min(win, h, w) | 1  # odd and no larger than the frame
    x = pred.float().reshape(-1, 1, h, w)
    y = target.float().reshape(-1, 1, h, w)
    k = _gaussian_window(win, sigma, x.device)[None, None]
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(-1, 1, h, w)
    m = nnf.conv2d(stack, k).reshape(x.shape[0], 5, h - win + 1, w - win + 1)
    mx, my, mxx, myy, mxy = m.unbind(dim=1)
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1)).reshape(*lead, c).mean(dim=-1)


def kl_per_frame(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per predicted frame, the lab's way: summed over everything but
    time, divided by the batch size. mu/logvar (B, T, N, H, W) -> (T,)."""
    import torch

    b = mu.shape[0]
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=(0, 2, 3, 4)) / b


# The metric keys `cvae.train.run` reports every epoch (docs/ARCHITECTURE.md, "the metric contract"):
# one definition each; train.py and evaluate.py build their dicts from these names, study/ reads them,
# and tests/test_train.py holds the reported keys equal to METRIC_NAMES.
EPOCH = "epoch"  # 0-based epoch index
TRAIN_LOSS = "train/loss"  # mean over the epoch's steps of MSE + beta * KL
TRAIN_MSE = "train/mse"
TRAIN_KL = "train/kl"  # the lab's KL term, per predicted frame, divided by the batch size
BETA = "beta"  # the KL weight of this epoch (cvae.schedules.beta)
TFR = "tfr"  # the teacher-forcing ratio of this epoch (cvae.schedules.tfr)
TEACHER_FORCING = "teacher_forcing"  # the fraction of this epoch's steps that were teacher-forced
FAST_TRAIN = "fast_train"  # whether this epoch trained on fast_partial of the sequences
TRAIN_SEQUENCES = "train/sequences"  # sequences trained on this epoch
LR = "lr"  # the learning rate this epoch trained with
TRAIN_FPS = "train/frames_per_s"  # predicted training frames per wall second
THREADS = "threads"  # torch intra-op threads
DEVICE = "device"
DIVERGED = "diverged"  # the loss (or the rollout) became NaN/inf: the run ends
VAL_PSNR = "val/psnr"  # mean PSNR per frame of the autoregressive validation rollout (dB): the headline
VAL_PSNR_HOLD = "val/psnr_hold"  # the same for repeating frame 0: the floor to beat
VAL_PSNR_MIN = "val/psnr_min"  # the rollout's worst frame
VAL_SSIM = "val/ssim"
VAL_PSNR_STEP = "val/psnr_step"  # one-step predictions from the true previous frame
VAL_PSNR_STEP_HOLD = "val/psnr_step_hold"  # copying the true previous frame: the one-step floor
VAL_FPS = "val/frames_per_s"
VAL_S = "time/val_s"  # wall seconds of the validation
VAL_BEST = "val/best_psnr"  # the best val/psnr so far in the run
EPOCH_S = "time/epoch_s"  # wall seconds of the whole epoch, validation included

TRAIN_METRICS: tuple[str, ...] = (
    EPOCH, TRAIN_LOSS, TRAIN_MSE, TRAIN_KL, BETA, TFR, TEACHER_FORCING, FAST_TRAIN, TRAIN_SEQUENCES, LR, TRAIN_FPS,
    THREADS, DEVICE, DIVERGED)
# Written at each validation and carried forward on epochs without one, so every row has them.
VAL_CARRIED: tuple[str, ...] = (VAL_PSNR, VAL_PSNR_HOLD, VAL_PSNR_MIN, VAL_SSIM, VAL_PSNR_STEP, VAL_PSNR_STEP_HOLD)
VAL_METRICS: tuple[str, ...] = (*VAL_CARRIED, VAL_FPS, VAL_S, VAL_BEST)
METRIC_NAMES: tuple[str, ...] = (*TRAIN_METRICS, *VAL_METRICS, EPOCH_S)
# docs/ARCHITECTURE.md, contract 1: the metrics a run must report every epoch, at the least (all finite).
CONTRACT: tuple[str, ...] = (EPOCH, TRAIN_LOSS, TRAIN_MSE, TRAIN_KL, BETA, TFR, VAL_PSNR, VAL_SSIM, VAL_PSNR_HOLD,
                             EPOCH_S, TRAIN_FPS)
