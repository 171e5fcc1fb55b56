from __future__ import annotations

import pytest

from cvae.schedules import beta, tfr


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 0.0), (1, 0.1), (5, 0.5), (9, 0.9), (10, 0.0), (11, 0.1), (19, 0.9), (20, 0.0)],
)
def test_cyclical_ratio_1_restarts_every_cycle(epoch: int, expected: float) -> None:
    assert beta(epoch, "Cyclical", cycle=10, ratio=1.0) == pytest.approx(expected)


@pytest.mark.parametrize("epoch, expected", [(0, 0.0), (4, 0.8), (5, 1.0), (9, 1.0), (10, 0.0), (12, 0.4), (15, 1.0)])
def test_cyclical_ratio_half_ramps_then_holds(epoch: int, expected: float) -> None:
    assert beta(epoch, "Cyclical", cycle=10, ratio=0.5) == pytest.approx(expected)


@pytest.mark.parametrize("epoch, expected", [(0, 0.0), (5, 0.5), (10, 1.0), (11, 1.0), (25, 1.0)])
def test_monotonic_ramps_once_then_stays_at_one(epoch: int, expected: float) -> None:
    assert beta(epoch, "Monotonic", cycle=10, ratio=1.0) == pytest.approx(expected)


def test_cycle_longer_than_the_run_never_reaches_one() -> None:
    values = [beta(e, "Cyclical", cycle=100, ratio=1.0) for e in range(10)]
    assert values == pytest.approx([e / 100 for e in range(10)])
    assert [beta(e, "Monotonic", cycle=100, ratio=1.0) for e in range(10)] == pytest.approx(values)


def test_none_is_always_one() -> None:
    assert {beta(e, "None", cycle=3, ratio=0.5) for e in range(12)} == {1.0}


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="kl_anneal_type"):
        beta(0, "cyclical", 10, 1.0)


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 1.0), (9, 1.0), (10, 1.0), (11, 0.9), (12, 0.8), (20, 0.0), (21, 0.0), (100, 0.0)],
)
def test_tfr_holds_until_sde_then_decays_floored_at_zero(epoch: int, expected: float) -> None:
    assert tfr(epoch, tfr0=1.0, sde=10, d_step=0.1) == pytest.approx(expected)


def test_tfr_zero_stays_zero_and_no_decay_keeps_it() -> None:
    assert [tfr(e, 0.0, 0, 0.1) for e in range(5)] == [0.0] * 5
    assert [tfr(e, 0.7, 0, 0.0) for e in range(5)] == pytest.approx([0.7] * 5)
