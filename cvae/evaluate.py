"""Validation of a trained model: the autoregressive rollout, its metrics and their floors.

Also loads a trained model from a checkpoint: what the report imports to draw frames, without the
training loop.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cvae.checkpoint import load_checkpoint, load_config_of
from cvae.config import Config
from cvae.data import Dataset, to_tensor
from cvae.device import autocast
from cvae import metrics as M
from cvae.metrics import psnr_per_frame, ssim_per_frame
from cvae.model import CVAE

# Frames per call of the one-step pass (batched over time: each step's input is a true frame).
STEP_CHUNK = 128


def _device(model: CVAE) -> torch.device:
    return next(model.parameters()).device


def val_frames(dataset: Dataset, device: torch.device) -> tuple[Tensor, Tensor]:
    """The validation video's frames and poses, each (T, 3, H, W) float32 on `device`."""
    return to_tensor(dataset.val.img).to(device), to_tensor(dataset.val.label).to(device)


def val_noise(model: CVAE, dataset: Dataset, seed: int) -> Tensor:
    """z ~ N(0, 1) of the validation video, (T-1, 1, N, H, W), on the model's device: drawn on the CPU
    from a generator seeded by `seed`, so every validation of a run, on any device (and a report
    rebuilding it), sees the same noise, and the training RNG is left untouched."""
    img = to_tensor(dataset.val.img[:1])
    z = model.noise(1, len(dataset.val) - 1, img, generator=torch.Generator().manual_seed(seed))
    return z.to(_device(model))


@torch.inference_mode()
def predict_val(model: CVAE, dataset: Dataset, seed: int, precision: str = "fp32") -> tuple[Tensor, Tensor]:
    """Autoregressive rollout over the validation video from its first frame and the poses.

    Returns (predicted, true) frames 1..T-1, each (1, T-1, 3, H, W) in [0, 1] float32, on the
    model's device.
    """
    was_training = model.training
    model.eval()
    img, label = (x[None] for x in val_frames(dataset, _device(model)))  # (1, T, 3, H, W)
    with autocast(_device(model), precision):
        pred = model.rollout(img[:, 0], label, val_noise(model, dataset, seed))  # (1, T-1, 3, H, W)
    model.train(was_training)
    return pred.float(), img[:, 1:]


@torch.inference_mode()
def predict_steps(model: CVAE, dataset: Dataset, seed: int, precision: str = "fp32") -> Tensor:
    """One-step predictions over the validation video: frame t from the TRUE frame t-1, pose t and
    the rollout's z_t, for t = 1..T-1 -> (1, T-1, 3, H, W). Batched over time (each input is known
    up front); in eval mode BatchNorm is per sample, so this equals T-1 single `model.step` calls."""
    was_training = model.training
    model.eval()
    img, label = val_frames(dataset, _device(model))  # (T, 3, H, W)
    z = val_noise(model, dataset, seed)[:, 0]  # (T-1, N, H, W)
    t = img.shape[0]
    with autocast(_device(model), precision):
        pred = torch.cat([model.step(img[s:e - 1], label[s + 1:e], z[s:e - 1])
                          for s, e in ((s, min(s + STEP_CHUNK, t - 1) + 1) for s in range(0, t - 1, STEP_CHUNK))])
    model.train(was_training)
    return pred.float()[None]


@torch.inference_mode()
def validate(model: CVAE, dataset: Dataset, seed: int, precision: str = "fp32") -> dict[str, Any]:
    """Validation metrics of the rollout beside its floors, and the one-step diagnostic.

    val/psnr: the rollout's mean PSNR per frame; val/psnr_hold: repeating frame 0 (the floor).
    val/psnr_step: one-step predictions from the true previous frame; val/psnr_step_hold: copying
    the true previous frame. A model that carries the previous frame forward has step near or above
    its copy floor; one that paints from the pose alone has step ~ rollout; a good step with a poor
    rollout means the rollout fails by compounding its own errors.
    """
    start = time.perf_counter()
    pred, target = predict_val(model, dataset, seed, precision)
    psnr = psnr_per_frame(pred, target)[0].cpu()  # (T-1,); waits for the rollout
    seconds = time.perf_counter() - start
    step = predict_steps(model, dataset, seed, precision)
    frames = to_tensor(dataset.val.img[:1]).to(target.device)[None]  # (1, 1, 3, H, W): frame 0
    hold = psnr_per_frame(frames.expand_as(target), target)[0].cpu()
    ssim = ssim_per_frame(pred, target)[0]
    prev = torch.cat([frames, target[:, :-1]], dim=1)  # the true previous frames 0..T-2
    return {
        "psnr": psnr.tolist(),
        "psnr_hold": hold.tolist(),
        M.VAL_PSNR: float(psnr.mean()),
        M.VAL_PSNR_HOLD: float(hold.mean()),
        M.VAL_PSNR_MIN: float(psnr.min()),
        M.VAL_SSIM: float(ssim.mean()),
        M.VAL_PSNR_STEP: float(psnr_per_frame(step, target)[0].mean()),
        M.VAL_PSNR_STEP_HOLD: float(psnr_per_frame(prev, target)[0].mean()),
        M.VAL_FPS: target.shape[1] / seconds,
        M.VAL_S: seconds,
    }


def load_model(directory: str | Path) -> tuple[CVAE, Config]:
    """The trained model (eval mode, on the CPU) and the full config stored in a checkpoint directory."""
    state = load_checkpoint(directory)
    cfg = load_config_of(directory)
    model = CVAE(cfg.model)
    model.load_state_dict(state["model"])
    return model.eval(), cfg
