"""Equitable Objective, per-agent weights, MSE and combined loss."""
from __future__ import annotations

import math

import pytest
import torch

from trainers.objectives import (
    check_beta,
    check_q,
    combined_loss,
    equitable_loss,
    equitable_weights,
    log_equitable_power,
    mse_loss,
    q_from_exponent,
)

C3 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)


def test_hand_computed_values():
    assert float(equitable_loss(C3, 1.0, form="power")) == pytest.approx(14.0, rel=1e-12)
    assert float(equitable_loss(C3, 1.0, form="norm")) == pytest.approx(math.sqrt(14.0), rel=1e-12)
    assert float(equitable_loss(C3, 2.0, form="power")) == pytest.approx(36.0, rel=1e-12)
    assert float(equitable_loss(C3, 2.0, form="norm")) == pytest.approx(36.0 ** (1 / 3), rel=1e-12)
    assert float(equitable_loss(C3, 0.5, form="power")) == pytest.approx(1 + 2**1.5 + 3**1.5, rel=1e-12)
    assert float(log_equitable_power(C3, 1.0)) == pytest.approx(math.log(14.0), rel=1e-12)
    # batched: reduces over the last (agent) axis only
    batch = torch.stack([C3, 2 * C3])
    torch.testing.assert_close(equitable_loss(batch, 1.0, form="power"),
                               torch.tensor([14.0, 56.0], dtype=torch.float64))


def test_q_zero_is_the_sum():
    c = torch.tensor([0.3, 0.0, 5.0, 1e-4])
    for form in ("power", "norm"):
        assert float(equitable_loss(c, 0.0, form=form)) == pytest.approx(float(c.sum()), rel=1e-6)


def test_large_q_approaches_max():
    c = torch.tensor([0.5, 2.0, 3.0, 2.9])
    for p in (100, 1000):
        v = float(equitable_loss(c, q_from_exponent(p), form="norm"))
        # max <= N_q <= M^(1/p) max
        assert 3.0 * (1 - 1e-6) <= v <= 3.0 * 4 ** (1 / p) * (1 + 1e-6)
    assert float(equitable_loss(c, 999.0)) == pytest.approx(3.0, rel=2e-3)


def _reference_norm(c64: torch.Tensor, p: float) -> torch.Tensor:
    return (c64**p).sum() ** (1.0 / p)


@pytest.mark.parametrize("p", [1.0, 40.0, 100.0])
def test_float32_norm_matches_float64(p):
    c64 = torch.logspace(-4, 3, 15, dtype=torch.float64)
    c32 = c64.float().requires_grad_(True)
    v32 = equitable_loss(c32, p - 1, form="norm")
    (g32,) = torch.autograd.grad(v32, c32)
    c64r = c64.clone().requires_grad_(True)
    ref = _reference_norm(c64r, p)
    (g64,) = torch.autograd.grad(ref, c64r)
    assert torch.isfinite(v32) and torch.isfinite(g32).all()
    assert float(v32.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-30)
    # the weights are the same derivative
    torch.testing.assert_close(equitable_weights(c64, p - 1, form="norm"), g64, rtol=1e-10, atol=1e-300)


def test_power_form_float32_overflow_documented():
    c64 = torch.logspace(-4, 3, 15, dtype=torch.float64)
    for p in (1.0, 40.0, 100.0):
        ref = float((c64**p).sum())
        v32 = float(equitable_loss(c64.float(), p - 1, form="power"))
        if ref < torch.finfo(torch.float32).max:
            assert v32 == pytest.approx(ref, rel=1e-5)
        else:
            assert v32 == math.inf  # documented: overflow returns +inf
        # the log of the power form is always finite
        assert float(log_equitable_power(c64.float(), p - 1)) == pytest.approx(math.log(ref), rel=1e-6)
    small = torch.logspace(-4, math.log10(2.0), 9, dtype=torch.float64)
    v = float(equitable_loss(small.float(), 39.0, form="power"))
    assert v == pytest.approx(float((small**40).sum()), rel=1e-5)


@pytest.mark.parametrize("form", ["norm", "power"])
@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 3.0, 39.0])
def test_weights_are_the_gradient(form, q):
    c = torch.tensor([0.2, 1.0, 1.5, 0.7], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(equitable_loss(c, q, form=form), c)
    torch.testing.assert_close(equitable_weights(c, q, form=form), g, rtol=1e-9, atol=1e-300)
    w = equitable_weights(c, q, normalize=True)
    torch.testing.assert_close(w, c.detach() ** q / (c.detach() ** q).sum())
    assert float(w.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("form", ["norm", "power"])
@pytest.mark.parametrize("q", [0.0, 1.0, 39.0, 99.0])
def test_zero_regrets_finite(form, q):
    for dtype in (torch.float32, torch.float64):
        c = torch.tensor([0.0, 1.0, 2.0, 0.0], dtype=dtype, requires_grad=True)
        v = equitable_loss(c, q, form=form)
        (g,) = torch.autograd.grad(v, c)
        assert torch.isfinite(g).all() and (torch.isfinite(v) or form == "power")
        expected_zero_grad = 1.0 if q == 0 else 0.0
        assert float(g[0]) == expected_zero_grad and float(g[3]) == expected_zero_grad
        w = equitable_weights(c, q, form=form)
        assert torch.isfinite(w).all() and float(w[0]) == expected_zero_grad
        z = torch.zeros(3, dtype=dtype, requires_grad=True)
        vz = equitable_loss(z, q, form=form)
        (gz,) = torch.autograd.grad(vz, z)
        assert float(vz.detach()) == 0.0 and torch.isfinite(gz).all()
        assert torch.isfinite(equitable_weights(z, q, form=form)).all()


def test_nan_propagates_and_negative_rejected():
    assert math.isnan(float(equitable_loss(torch.tensor([1.0, float("nan")]), 1.0)))
    with pytest.raises(ValueError, match=">= 0"):
        equitable_loss(torch.tensor([1.0, -0.5]), 1.0)
    # round-off negatives are zeros
    assert float(equitable_loss(torch.tensor([1.0, -1e-9]), 1.0)) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [-1.0, -1e-9, float("nan"), float("inf"), "1", None, True])
def test_invalid_q(bad):
    with pytest.raises(ValueError, match="q"):
        check_q(bad)
    with pytest.raises(ValueError, match="q"):
        equitable_loss(C3, bad)


def test_q_from_exponent():
    assert q_from_exponent(40) == 39.0
    assert q_from_exponent(1) == 0.0
    for bad in (0.5, 0, float("nan"), -3):
        with pytest.raises(ValueError, match="q\\+1"):
            q_from_exponent(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", None])
def test_invalid_beta(bad):
    with pytest.raises(ValueError, match="beta"):
        check_beta(bad)
    with pytest.raises(ValueError, match="beta"):
        combined_loss(1.0, 1.0, bad)


def test_combined_and_mse():
    pred = torch.tensor([[1.0], [3.0]])
    y = torch.tensor([[0.0], [1.0]])
    assert float(mse_loss(pred, y)) == pytest.approx(2.5)
    assert combined_loss(4.0, 2.0, 0.25) == pytest.approx(3.5)
    assert combined_loss(math.inf, 2.0, 1.0) == 2.0  # no 0 * inf = NaN
    assert combined_loss(3.0, None, 0.0) == 3.0
    with pytest.raises(ValueError, match="MSE"):
        combined_loss(3.0, None, 0.5)
    with pytest.raises(ValueError, match="form"):
        equitable_loss(C3, 1.0, form="max")
