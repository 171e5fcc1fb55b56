"""The lab's loop, step by step, one frame at a time: the yardstick for the fast paths in model.py.

Used by the equivalence tests and benchmarks/throughput.py; training never calls it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from cvae.model import CVAE, ForwardPass


def forward_reference(model: CVAE, img: Tensor, label: Tensor, teacher_forcing: bool, eps: Tensor) -> ForwardPass:
    """Same contract as `CVAE.forward`, computed as the lab template does: for t = 1..T-1, encode
    frame t and pose t, sample the posterior, encode the previous frame, decode."""
    t = img.shape[1]
    preds, mus, logvars = [], [], []
    prev = img[:, 0]
    for i in range(1, t):
        frame_feat = model.frame_transformation(img[:, i])
        label_feat = model.label_transformation(label[:, i])
        z, mu, logvar = model.Gaussian_Predictor(frame_feat, label_feat, eps[i - 1])
        if teacher_forcing:
            prev = img[:, i - 1]
        x = model.decode(model.frame_transformation(prev), label_feat, z)
        preds.append(x)
        mus.append(mu)
        logvars.append(logvar)
        prev = x
    return ForwardPass(torch.stack(preds, 1), torch.stack(mus, 1), torch.stack(logvars, 1))


@torch.no_grad()
def rollout_reference(model: CVAE, first: Tensor, label: Tensor, z: Tensor) -> Tensor:
    """Same contract as `CVAE.rollout`, one `model.step` per frame under no_grad as the lab did."""
    t = label.shape[1]
    prev = first
    out = []
    for i in range(1, t):
        prev = model.step(prev, label[:, i], z[i - 1])
        out.append(prev)
    return torch.stack(out, 1)
