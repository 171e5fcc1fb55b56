"""The lab's conditional VAE: training forward (learned posterior) and inference (z ~ N(0, 1)).

The fast paths batch over time wherever the maths allows it exactly:
- the RGB_Encoder and Gaussian_Predictor have no normalisation, so the posterior of all T-1 target
  frames is one call over B*(T-1) frames;
- the Label_Encoder's convolutions run over all frames at once while its BatchNorm still uses the
  per-step statistics of B frames (`Label_Encoder.forward_grouped`), unless
  `ModelConfig.batch_label_encoder` asks for statistics over B*(T-1) frames (changes the numbers);
- with teacher forcing the previous frames are the ground truth, so the whole decoder is one call.
`cvae/reference.py` keeps the lab's step-by-step loop; tests hold the two equal.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from cvae.config import ModelConfig
from cvae.modules import Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder


class ForwardPass(NamedTuple):
    """The training pass's output: the predicted frames and the posterior's parameters."""

    pred: Tensor  # (B, T-1, 3, H, W) predicted frames 1..T-1
    mu: Tensor  # (B, T-1, N, H, W)
    logvar: Tensor  # (B, T-1, N, H, W)


def bt(x: Tensor) -> Tensor:
    """(B, T, ...) -> (B*T, ...)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unbt(x: Tensor, b: int) -> Tensor:
    """(B*T, ...) -> (B, T, ...)."""
    return x.reshape(b, x.shape[0] // b, *x.shape[1:])


class CVAE(nn.Module):
    """Next-frame predictor: frame_{t-1}, pose_t (, frame_t for the posterior) -> frame_t."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f, l, n, d = cfg.dims
        # attribute names as in the lab template, so its checkpoints' keys line up
        self.frame_transformation = RGB_Encoder(3, f)
        self.label_transformation = Label_Encoder(3, l, act_identity=cfg.act_identity)
        self.Gaussian_Predictor = Gaussian_Predictor(f + l, n, act_identity=cfg.act_identity)
        self.Decoder_Fusion = Decoder_Fusion(f + l + n, d)
        self.Generator = Generator(d, 3)

    # -- pieces shared by every path -------------------------------------------------------------
    def output(self, h: Tensor) -> Tensor:
        x = self.Generator(h)
        return torch.sigmoid(x) if self.cfg.output_sigmoid else x

    def decode(self, prev_feat: Tensor, label_feat: Tensor, z: Tensor) -> Tensor:
        """(B, F/L/N, H, W) features -> predicted frame (B, 3, H, W)."""
        return self.output(self.Decoder_Fusion(prev_feat, label_feat, z))

    def encode_labels(self, label: Tensor) -> Tensor:
        """Pose images (B, T, 3, H, W) -> features (B, T, L, H, W), BatchNorm per time step."""
        if self.cfg.batch_label_encoder or not self.training:
            return self._chunked(self.label_transformation, label)
        # grouped by time step, like T separate calls of B frames each, in time order
        parts = []
        for s, e in self._spans(label.shape[1]):
            x = label[:, s:e].transpose(0, 1)  # (k, B, 3, H, W)
            parts.append(unbt(self.label_transformation.forward_grouped(bt(x), groups=e - s), e - s).transpose(0, 1))
        return torch.cat(parts, dim=1)

    def _spans(self, t: int) -> list[tuple[int, int]]:
        k = self.cfg.time_chunk
        return [(s, min(s + k, t)) for s in range(0, t, k)]

    def _chunked(self, fn, *xs: Tensor) -> Tensor:
        """Apply a per-frame module to (B, T, ...) inputs, B * time_chunk frames per call."""
        b = xs[0].shape[0]
        outs = [unbt(fn(*(bt(x[:, s:e]) for x in xs)), b) for s, e in self._spans(xs[0].shape[1])]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def noise(self, b: int, steps: int, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """eps ~ N(0, 1) for `steps` frames, (steps, B, N, H, W): drawn at once so every path sees the same."""
        h, w = like.shape[-2:]
        return torch.randn(steps, b, self.cfg.N_dim, h, w, device=like.device, dtype=like.dtype, generator=generator)

    # -- training -------------------------------------------------------------------------------
    def forward(self, img: Tensor, label: Tensor, teacher_forcing: bool, eps: Tensor | None = None) -> ForwardPass:
        """Training forward over a sequence batch, img/label (B, T, 3, H, W).

        Predicts frames 1..T-1, each from the previous frame (ground truth with teacher forcing,
        else the model's own previous prediction, gradients flowing through the chain), the pose
        and z from the learned posterior q(z | frame_t, pose_t). eps (T-1, B, N, H, W) optional.
        """
        b, t = img.shape[:2]
        if eps is None:
            eps = self.noise(b, t - 1, img)
        frame_feat = self._chunked(self.frame_transformation, img)  # (B, T, F, H, W), all gt frames
        label_feat = self.encode_labels(label[:, 1:])  # (B, T-1, L, H, W)
        post = self._chunked(lambda f, l, e: torch.cat(self.Gaussian_Predictor(f, l, e), dim=1),
                             frame_feat[:, 1:], label_feat, eps.transpose(0, 1))
        z, mu, logvar = post.split(self.cfg.N_dim, dim=2)  # each (B, T-1, N, H, W)
        if teacher_forcing:
            pred = self._chunked(self.decode, frame_feat[:, :-1], label_feat, z)
            return ForwardPass(pred, mu, logvar)
        preds = []
        prev_feat = frame_feat[:, 0]
        for i in range(t - 1):
            x = self.decode(prev_feat, label_feat[:, i], z[:, i])  # (B, 3, H, W)
            preds.append(x)
            if i + 1 < t - 1:
                prev_feat = self.frame_transformation(x)
        return ForwardPass(torch.stack(preds, dim=1), mu, logvar)

    # -- inference ------------------------------------------------------------------------------
    def step(self, prev: Tensor, label: Tensor, z: Tensor | None = None) -> Tensor:
        """One inference step: previous frame (B, 3, H, W), pose (B, 3, H, W) -> next frame.

        No target frame is needed: z ~ N(0, 1) replaces the posterior sample.
        """
        label_feat = self.label_transformation(label)
        if z is None:
            z = torch.randn(prev.shape[0], self.cfg.N_dim, *prev.shape[-2:], device=prev.device, dtype=prev.dtype)
        return self.decode(self.frame_transformation(prev), label_feat, z)

    def rollout(self, first: Tensor, label: Tensor, z: Tensor | None = None, chunk: int = 128) -> Tensor:
        """Autoregressive rollout: first frame (B, 3, H, W), poses (B, T, 3, H, W) -> frames 1..T-1, (B, T-1, 3, H, W).

        The pose encodings are batched (in eval mode BatchNorm is per-sample, so this is exact);
        z (T-1, B, N, H, W) ~ N(0, 1) is drawn up front unless given.
        """
        b, t = label.shape[:2]
        if z is None:
            z = self.noise(b, t - 1, first)
        label_feat = torch.cat([self.label_transformation(bt(label[:, s : s + chunk])).unflatten(0, (b, -1))
                                for s in range(1, t, chunk)], dim=1)  # eval mode: BatchNorm per sample
        prev = first
        out = torch.empty(b, t - 1, *first.shape[1:], device=first.device, dtype=first.dtype)
        for i in range(t - 1):
            prev = self.decode(self.frame_transformation(prev), label_feat[:, i], z[i])
            out[:, i] = prev
        return out

