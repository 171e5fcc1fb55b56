from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cvae.metrics import kl_per_frame, psnr_per_frame, ssim_per_frame


def test_psnr_matches_hand_computation() -> None:
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1, 0, 0, 0] = 0.5  # MSE 0.25 / 48
    got = psnr_per_frame(pred, target)
    assert got.shape == (2,)
    assert got[0].item() == pytest.approx(20.0, abs=1e-4)
    assert got[1].item() == pytest.approx(-10 * math.log10(0.25 / 48), abs=1e-4)


def test_psnr_keeps_leading_dims_and_is_inf_for_perfect_frames() -> None:
    x = torch.rand(2, 5, 3, 8, 8)
    assert psnr_per_frame(x, x).shape == (2, 5)
    assert torch.isinf(psnr_per_frame(x, x)).all()


def test_kl_matches_closed_form() -> None:
    torch.manual_seed(0)
    mu = torch.randn(2, 3, 4, 5, 6)
    logvar = torch.randn(2, 3, 4, 5, 6) * 0.3
    got = kl_per_frame(mu, logvar)
    var = logvar.exp()
    # KL(N(mu, var) || N(0, 1)) = 0.5 * (var + mu^2 - 1 - log var), summed, per batch element
    expected = 0.5 * (var + mu**2 - 1 - logvar).sum(dim=(0, 2, 3, 4)) / 2
    assert got.shape == (3,)
    assert torch.allclose(got, expected, rtol=1e-5)
    assert torch.allclose(kl_per_frame(torch.zeros(1, 2, 1, 2, 2), torch.zeros(1, 2, 1, 2, 2)), torch.zeros(2))


def test_ssim_is_one_for_identical_and_matches_scikit_image() -> None:
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((3, 32, 64)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert ssim_per_frame(ta, ta).item() == pytest.approx(1.0, abs=1e-6)
    expected = skm.structural_similarity(
        a, b, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim_per_frame(tb, ta).item() == pytest.approx(expected, abs=1e-4)
    assert ssim_per_frame(torch.stack([ta, tb]), torch.stack([ta, ta])).shape == (2,)
