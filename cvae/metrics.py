"""PSNR per frame, SSIM and the KL term: plain tensor functions, data range 1.0."""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as nnf


def psnr_per_frame(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR of each frame, pred/target (..., C, H, W) -> (...,): 20 log10(range) - 10 log10(MSE).

    A perfect frame (MSE 0) gives +inf, as the definition does.
    """
    mse = (pred.float() - target.float()).pow(2).mean(dim=(-3, -2, -1))
    return 20 * math.log10(data_range) - 10 * torch.log10(mse)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
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
    b = mu.shape[0]
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=(0, 2, 3, 4)) / b


# The metrics `cvae.train.run` reports every epoch (contract 1 of DESIGN.md): the one list of their names.
TRAIN_METRICS: tuple[str, ...] = (
    "epoch", "train/loss", "train/mse", "train/kl", "beta", "tfr", "teacher_forcing", "fast_train",
    "train/sequences", "lr", "train/frames_per_s", "threads", "device", "diverged")
# Written at each validation and carried forward on epochs without one, so every row has them.
VAL_CARRIED: tuple[str, ...] = (
    "val/psnr", "val/psnr_hold", "val/psnr_min", "val/ssim", "val/psnr_step", "val/psnr_step_hold")
VAL_METRICS: tuple[str, ...] = (*VAL_CARRIED, "val/frames_per_s", "time/val_s", "val/best_psnr")
METRIC_NAMES: tuple[str, ...] = (*TRAIN_METRICS, *VAL_METRICS, "time/epoch_s")
