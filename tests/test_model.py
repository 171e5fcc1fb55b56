from __future__ import annotations

import pytest
import torch

from cvae.config import ModelConfig
from cvae.model import CVAE
from cvae.modules import Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder

LAB = (128, 32, 12, 192)
SMALL = (32, 8, 4, 48)
H, W = 32, 64


@pytest.mark.slow
@pytest.mark.parametrize("dims", [LAB, SMALL], ids=["lab", "small"])
def test_every_module_keeps_resolution_and_maps_channels(dims: tuple[int, int, int, int]) -> None:
    f, l, n, d = dims
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        ff = RGB_Encoder(3, f)(x)
        lf = Label_Encoder(3, l)(x)
        z, mu, logvar = Gaussian_Predictor(f + l, n)(ff, lf)
        h = Decoder_Fusion(f + l + n, d)(ff, lf, z)
        out = Generator(d, 3)(h)
    assert ff.shape == (2, f, H, W)
    assert lf.shape == (2, l, H, W)
    assert z.shape == mu.shape == logvar.shape == (2, n, H, W)
    assert h.shape == (2, d, H, W)
    assert out.shape == (2, 3, H, W)


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_training_forward_shapes(teacher_forcing: bool) -> None:
    model = CVAE(ModelConfig(*SMALL))
    h, w = H // 2, W // 2  # the modules keep any resolution (above); a quarter of the pixels is enough here
    img, label = torch.rand(2, 5, 3, h, w), torch.rand(2, 5, 3, h, w)
    out = model(img, label, teacher_forcing)
    assert out.pred.shape == (2, 4, 3, h, w)
    assert out.mu.shape == out.logvar.shape == (2, 4, 4, h, w)
    assert 0 <= out.pred.min() and out.pred.max() <= 1  # sigmoid output


def test_reparameterization_statistics() -> None:
    torch.manual_seed(0)
    mu = torch.full((200_000,), 1.5)
    logvar = torch.full((200_000,), 2 * torch.log(torch.tensor(0.5)).item())  # sigma 0.5
    z = Gaussian_Predictor.reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(1.5, abs=0.01)
    assert z.std().item() == pytest.approx(0.5, abs=0.01)
    eps = torch.randn(10)
    assert torch.equal(Gaussian_Predictor.reparameterize(torch.zeros(10), torch.zeros(10), eps), eps)


def test_posterior_gradient_flows_through_the_sample() -> None:
    mu = torch.zeros(4, requires_grad=True)
    logvar = torch.zeros(4, requires_grad=True)
    Gaussian_Predictor.reparameterize(mu, logvar, torch.ones(4)).sum().backward()
    assert torch.allclose(mu.grad, torch.ones(4))
    assert torch.allclose(logvar.grad, torch.full((4,), 0.5))


def test_inference_step_needs_no_target_frame() -> None:
    model = CVAE(ModelConfig(*SMALL)).eval()
    prev, pose = torch.rand(1, 3, H, W), torch.rand(1, 3, H, W)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model.step(prev, pose)
        torch.manual_seed(2)
        b = model.step(prev, pose)
    assert a.shape == (1, 3, H, W)
    assert not torch.equal(a, b)  # z ~ N(0, 1) is sampled, not taken from a posterior


@pytest.mark.slow
def test_rollout_chains_its_own_predictions() -> None:
    model = CVAE(ModelConfig(*SMALL)).eval()
    labels = torch.rand(1, 6, 3, H, W)
    first = torch.rand(1, 3, H, W)
    z = model.noise(1, 5, first)
    with torch.no_grad():
        out = model.rollout(first, labels, z, chunk=2)
        x = first
        for i in range(5):
            x = model.step(x, labels[:, i + 1], z[i])
            assert torch.allclose(out[:, i], x, atol=1e-5)


def test_template_leaky_true_is_identity_by_default_and_optional() -> None:
    assert isinstance(CVAE(ModelConfig(*SMALL)).label_transformation[3], torch.nn.Identity)
    assert isinstance(CVAE(ModelConfig(*SMALL, act_identity=False)).label_transformation[3], torch.nn.LeakyReLU)


@pytest.mark.parametrize("bad", [{"F_dim": 12}, {"L_dim": 3}, {"N_dim": 6}, {"D_out_dim": 20}])
def test_bad_dims_are_rejected_with_the_key(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ModelConfig(**bad)
