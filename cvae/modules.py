"""The lab's building blocks and its five modules. No I/O: config in, tensors out.

Everything runs at full frame resolution (the lab's 32x64); nothing downsamples.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as nnf


def conv3x3(i: int, o: int) -> nn.Conv2d:
    return nn.Conv2d(i, o, kernel_size=3, padding=1)


def conv1x1(i: int, o: int) -> nn.Conv2d:
    return nn.Conv2d(i, o, kernel_size=1)


def template_leaky_relu(identity: bool) -> nn.Module:
    # The lab template writes `nn.LeakyReLU(True)`: True lands in `negative_slope` (= 1.0), which makes
    # the "activation" the identity. `identity=True` keeps that behaviour; False is a real LeakyReLU.
    return nn.Identity() if identity else nn.LeakyReLU(0.01)


class ResidualBlock(nn.Module):
    """conv3x3, LeakyReLU, conv3x3, LeakyReLU, plus a skip (conv1x1 when the width changes)."""

    def __init__(self, i: int, o: int, slope: float = 0.01) -> None:
        super().__init__()
        self.conv1 = conv3x3(i, o)
        self.conv2 = conv3x3(o, o)
        self.act = nn.LeakyReLU(slope)
        self.adaptor = conv1x1(i, o) if i != o else None

    def forward(self, x: Tensor) -> Tensor:  # (B, i, H, W) -> (B, o, H, W)
        skip = x if self.adaptor is None else self.adaptor(x)
        return self.act(self.conv2(self.act(self.conv1(x)))) + skip


class DepthConv(nn.Module):
    """conv1x1 i->i, LeakyReLU, depthwise conv3x3, conv1x1 i->o, plus a skip."""

    def __init__(self, i: int, o: int, slope: float = 0.01) -> None:
        super().__init__()
        self.conv1 = conv1x1(i, i)
        self.act = nn.LeakyReLU(slope)
        self.depth_conv = nn.Conv2d(i, i, kernel_size=3, padding=1, groups=i)
        self.conv2 = conv1x1(i, o)
        self.adaptor = conv1x1(i, o) if i != o else None

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(self.depth_conv(self.act(self.conv1(x)))) + skip


class ConvFFN(nn.Module):
    """conv1x1 c->4c, halves a, b; c + conv1x1 2c->c of (a * LeakyReLU(0.1)(b))."""

    def __init__(self, c: int, slope: float = 0.1) -> None:
        super().__init__()
        self.conv = conv1x1(c, 4 * c)
        self.conv_out = conv1x1(2 * c, c)
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return x + self.conv_out(a * nnf.leaky_relu(b, self.slope))


class DepthConvBlock(nn.Sequential):
    """DepthConv(i, o) then ConvFFN(o)."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__(DepthConv(i, o), ConvFFN(o))


class RGB_Encoder(nn.Sequential):
    """Frame (B, 3, H, W) -> feature (B, F, H, W)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        c = out_chans
        super().__init__(
            ResidualBlock(in_chans, c // 8),
            DepthConvBlock(c // 8, c // 8),
            ResidualBlock(c // 8, c // 4),
            DepthConvBlock(c // 4, c // 4),
            ResidualBlock(c // 4, c // 2),
            DepthConvBlock(c // 2, c // 2),
            nn.Conv2d(c // 2, c, kernel_size=3, padding=1),
        )


class Label_Encoder(nn.Sequential):
    """Pose image (B, 3, H, W) -> feature (B, L, H, W). Index 2 is its only BatchNorm."""

    def __init__(self, in_chans: int, out_chans: int, act_identity: bool = True) -> None:
        super().__init__(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_chans, out_chans // 2, kernel_size=7, padding=0),
            nn.BatchNorm2d(out_chans // 2),
            template_leaky_relu(act_identity),
            ResidualBlock(out_chans // 2, out_chans),
        )

    def forward_grouped(self, x: Tensor, groups: int) -> Tensor:
        """Encode G groups of B frames at once, x (G*B, 3, H, W), with BatchNorm statistics per group.

        Equals calling the encoder on each group in turn (train mode: each group normalised by its
        own batch statistics, running statistics updated group after group), with the convolutions
        batched. In eval mode BatchNorm is per-sample already, so this is just forward(x).
        """
        pad, conv, bn, act, res = self
        if not (bn.training and bn.track_running_stats) or groups == 1:
            return super().forward(x)
        h = conv(pad(x))  # (G*B, C, H, W)
        gb, c, height, width = h.shape
        g = h.view(groups, gb // groups, c, height, width)
        mean = g.mean(dim=(1, 3, 4))  # (G, C)
        var = g.var(dim=(1, 3, 4), unbiased=False)  # (G, C), what BatchNorm normalises with
        g = (g - mean[:, None, :, None, None]) * torch.rsqrt(var[:, None, :, None, None] + bn.eps)
        g = g * bn.weight[None, None, :, None, None] + bn.bias[None, None, :, None, None]
        n = (gb // groups) * height * width
        with torch.no_grad():  # running stats move exactly as G sequential calls would move them
            unbiased = var * (n / max(n - 1, 1))
            m = bn.momentum if bn.momentum is not None else None
            for k in range(groups):
                bn.num_batches_tracked += 1
                f = m if m is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.mul_(1 - f).add_(mean[k].detach(), alpha=f)
                bn.running_var.mul_(1 - f).add_(unbiased[k].detach(), alpha=f)
        return res(act(g.reshape(gb, c, height, width)))


class Gaussian_Predictor(nn.Sequential):
    """(frame feature, pose feature) -> z, mu, logvar, each (B, N, H, W)."""

    def __init__(self, in_chans: int, out_chans: int, act_identity: bool = True) -> None:
        n = out_chans
        super().__init__(
            ResidualBlock(in_chans, n // 4),
            DepthConvBlock(n // 4, n // 4),
            ResidualBlock(n // 4, n // 2),
            DepthConvBlock(n // 2, n // 2),
            ResidualBlock(n // 2, n),
            template_leaky_relu(act_identity),  # the template's `nn.LeakyReLU(True)` here too
            nn.Conv2d(n, 2 * n, kernel_size=1),
        )

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
        """z = mu + sigma * eps, eps ~ N(0, 1) (drawn here unless given, so callers can share noise)."""
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, img: Tensor, label: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = super().forward(torch.cat([img, label], dim=1)).chunk(2, dim=1)
        return self.reparameterize(mu, logvar, eps), mu, logvar


class Decoder_Fusion(nn.Sequential):
    """(frame feature, pose feature, z) -> decoder feature (B, D, H, W)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        i, d = in_chans, out_chans
        super().__init__(
            DepthConvBlock(i, i),
            ResidualBlock(i, i // 4),
            DepthConvBlock(i // 4, i // 2),
            ResidualBlock(i // 2, i // 2),
            DepthConvBlock(i // 2, d // 2),
            nn.Conv2d(d // 2, d, kernel_size=1),
        )

    def forward(self, img: Tensor, label: Tensor, z: Tensor) -> Tensor:
        return super().forward(torch.cat([img, label, z], dim=1))


class Generator(nn.Sequential):
    """Decoder feature (B, D, H, W) -> frame (B, 3, H, W) (before the output activation)."""

    def __init__(self, in_chans: int, out_chans: int = 3) -> None:
        d = in_chans
        super().__init__(
            DepthConvBlock(d, d),
            ResidualBlock(d, d // 2),
            DepthConvBlock(d // 2, d // 2),
            ResidualBlock(d // 2, d // 4),
            DepthConvBlock(d // 4, d // 4),
            ResidualBlock(d // 4, d // 8),
            DepthConvBlock(d // 8, d // 8),
            nn.Conv2d(d // 8, out_chans, kernel_size=1),
        )
