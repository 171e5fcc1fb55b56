"""The fast paths of model.py against the lab's step-by-step loop (cvae/reference.py)."""
from __future__ import annotations

import copy

import pytest
import torch

from cvae.config import ModelConfig
from cvae.metrics import kl_per_frame
from cvae.model import CVAE
from cvae.reference import forward_reference, rollout_reference


def _loss(out, img: torch.Tensor) -> torch.Tensor:
    return (out.pred - img[:, 1:]).pow(2).mean() + 0.7 * kl_per_frame(out.mu, out.logvar).mean()


@pytest.mark.slow
@pytest.mark.parametrize("teacher_forcing", [True, False], ids=["tf", "no-tf"])
def test_fast_training_forward_equals_reference(teacher_forcing: bool) -> None:
    torch.manual_seed(0)
    fast = CVAE(ModelConfig(32, 8, 4, 48))
    ref = copy.deepcopy(fast)
    img, label = torch.rand(2, 6, 3, 32, 64), torch.rand(2, 6, 3, 32, 64)
    eps = fast.noise(2, 5, img)
    a = fast(img, label, teacher_forcing, eps)
    b = forward_reference(ref, img, label, teacher_forcing, eps)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-5, rtol=1e-4)
    la, lb = _loss(a, img), _loss(b, img)
    assert la.item() == pytest.approx(lb.item(), rel=1e-5)
    la.backward()
    lb.backward()
    scale = max(p.grad.abs().max().item() for p in ref.parameters())
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        # 1e-4 of the largest gradient: float summation order differs, nothing else
        assert torch.allclose(p.grad, q.grad, atol=1e-4 * scale, rtol=1e-3), name
    # BatchNorm running statistics moved exactly as T-1 per-step calls move them
    for x, y in zip(fast.label_transformation[2].buffers(), ref.label_transformation[2].buffers()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6)


@pytest.mark.slow
def test_batched_label_encoder_is_an_option_that_changes_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    base = CVAE(ModelConfig(32, 8, 4, 48))
    batched = CVAE(ModelConfig(32, 8, 4, 48, batch_label_encoder=True))
    batched.load_state_dict(base.state_dict())
    img, label = torch.rand(2, 6, 3, 32, 64), torch.rand(2, 6, 3, 32, 64)
    eps = base.noise(2, 5, img)
    a, b = base(img, label, True, eps), batched(img, label, True, eps)
    assert not torch.allclose(a.pred, b.pred, atol=1e-6)


@pytest.mark.slow
def test_fast_rollout_equals_reference() -> None:
    torch.manual_seed(0)
    model = CVAE(ModelConfig(32, 8, 4, 48)).eval()
    labels, first = torch.rand(1, 9, 3, 32, 64), torch.rand(1, 3, 32, 64)
    z = model.noise(1, 8, first)
    with torch.inference_mode():
        fast = model.rollout(first, labels, z, chunk=3)
    assert torch.allclose(fast, rollout_reference(model, first, labels, z), atol=1e-5)
