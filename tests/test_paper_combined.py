"""The paper's combined objective (Eq. 36) and its REINFORCE estimator (Eq. 37): ``reinforce_paper_combined``.

Two independent checks: the update equals Eq. 37 computed sample by sample
(hand-written Gaussian log-density, regrets and squared errors in numpy) on a
tiny network; and, on a closed-form problem, the estimator's mean is the exact
gradient of Eq. 36's expectation -- including the pull of the sampled
predictions' squared error on the policy's scale, which the project's
``beta`` (MSE of the mean prediction) does not have.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from trainers.config import TrainConfig
from trainers.networks import build_public_model
from trainers.rollout import collect_rollout
from trainers.training import train
from trainers.updates import make_update_rule

RULE = "reinforce_paper_combined"


def _step(rule, model, rollout) -> torch.Tensor:
    """Parameters before minus after one SGD step with lr 1: the rule's gradient, float64."""
    before = [p.detach().clone() for p in model.parameters()]
    rule.update(model, torch.optim.SGD(model.parameters(), lr=1.0), rollout)
    return torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, model.parameters())]).double()


@pytest.mark.parametrize("beta,q,form", [(0.3, 1.0, "power"), (0.7, 2.0, "power"), (0.5, 1.5, "norm")])
def test_update_is_eq37_computed_sample_by_sample(beta: float, q: float, form: str) -> None:
    torch.manual_seed(3)
    H, L, M, B, K = 2, 4, 2, 3, 3
    model = build_public_model({"backbone": "mlp", "backbone_kwargs": {"hidden": [5]}, "head": "gaussian",
                                "head_kwargs": {"init_mean": 1.0, "init_std": 0.7}, "seq_len": L, "horizon": H})
    x = torch.rand(B, L)
    y = torch.rand(B, H) * 2
    targets = np.array([[0.5, 1.5], [2.0, 0.2]])  # agent m's regret: sum_h |ŷ_h - targets[m, h]|

    def regret_fn(pred: torch.Tensor) -> torch.Tensor:  # [M|1, N, H] -> [M, N]
        return (pred - torch.as_tensor(targets, dtype=pred.dtype)[:, None, :]).abs().sum(-1).expand(M, -1)

    rule = make_update_rule(RULE, q=q, beta=beta, form=form, num_samples=K)
    rollout = collect_rollout(model, x, regret_fn, num_agents=M, num_samples=K, y_true=y,
                              generator=torch.Generator().manual_seed(11))
    pred = rollout.pred.double().numpy()  # [K, M, B, H]

    # the oracle: F_k from numpy, the scores from a hand-written Gaussian log-density
    regret = np.abs(pred - targets[None, :, None, :]).sum(-1)  # [K, M, B]
    cbar = regret.mean(-1)  # [K, M]
    eq = (cbar ** (q + 1)).sum(-1)
    if form == "norm":
        eq = eq ** (1 / (q + 1))
    lf = ((pred - y.double().numpy()[None, None]) ** 2).sum(-1).mean(-1).sum(-1)  # Σ_m (1/B) Σ_i ‖y_i - ŷ‖²
    F = (1 - beta) * eq + beta * lf
    params = list(model.parameters())
    dist = model.distribution(x)
    mu, sd = dist.base_dist.loc.double(), dist.base_dist.scale.double()  # [B, H]
    grad = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for k in range(K):
        for m in range(M):
            for i in range(B):
                yk = torch.as_tensor(pred[k, m, i])
                logp = (-(yk - mu[i]) ** 2 / (2 * sd[i] ** 2) - torch.log(sd[i]) - 0.5 * math.log(2 * math.pi)).sum()
                g = torch.autograd.grad(logp, params, retain_graph=True, allow_unused=True)
                for acc, gi in zip(grad, g):
                    if gi is not None:
                        acc += F[k] * gi.double() / K
    expected = torch.cat([g.reshape(-1) for g in grad])
    step = _step(rule, model, rollout)
    torch.testing.assert_close(step, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


class MuSigmaModel(nn.Module):
    """``ŷ ~ N(μ, σ²)`` for every input; parameters ``μ`` and ``log σ`` (float64)."""

    def __init__(self, mu: float, sigma: float) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu, dtype=torch.float64))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma), dtype=torch.float64))

    def distribution(self, x: torch.Tensor) -> Independent:
        n = x.shape[0]
        return Independent(Normal(self.mu.expand(n, 1), self.log_sigma.exp().expand(n, 1)), 1)


A = torch.tensor([4.0, 5.0, 7.0], dtype=torch.float64)
MU, SIGMA, B = 5.5, 1.0, 4
Y = torch.tensor([[5.0], [6.5], [4.0], [6.0]], dtype=torch.float64)


def _exact_gradient(beta: float) -> tuple[float, float]:
    """∂/∂μ and ∂/∂log σ of (1-β) Σ_m E[C̄_m²] + β E[L_f] for C_m = (ŷ - a_m)², q = 1, power form.

    With d = μ - a_m: E[C̄_m²] = (d²+σ²)² + (2σ⁴ + 4d²σ²)/B, so ∂/∂μ = 4d(d²+σ²) + 8dσ²/B and
    ∂/∂σ = 4σ(d²+σ²) + 8σ(σ²+d²)/B;  E[L_f] = Σ_m (1/B) Σ_i ((y_i-μ)² + σ²), so ∂/∂μ = 2M(μ - ȳ), ∂/∂σ = 2Mσ.
    """
    d, s, M = MU - A, SIGMA, len(A)
    eq_mu = float((4 * d * (d**2 + s**2) + 8 * d * s**2 / B).sum())
    eq_s = float((4 * s * (d**2 + s**2) + 8 * s * (s**2 + d**2) / B).sum())
    f_mu, f_s = 2 * M * (MU - float(Y.mean())), 2 * M * s
    return (1 - beta) * eq_mu + beta * f_mu, s * ((1 - beta) * eq_s + beta * f_s)


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_estimator_is_unbiased_for_eq36_including_the_scale(beta: float) -> None:
    torch.manual_seed(0)
    x = torch.zeros(B, 1, dtype=torch.float64)

    def regret_fn(pred: torch.Tensor) -> torch.Tensor:
        return (pred[..., 0] - A[:, None]) ** 2

    draws = []
    for _ in range(80):
        model = MuSigmaModel(MU, SIGMA)
        rule = make_update_rule(RULE, q=1.0, beta=beta, num_samples=2000)
        rollout = collect_rollout(model, x, regret_fn, num_agents=3, num_samples=2000, y_true=Y)
        draws.append(_step(rule, model, rollout))
    g = torch.stack(draws)
    mean, se = g.mean(0), g.std(0) / math.sqrt(len(draws))
    exact = torch.tensor(_exact_gradient(beta), dtype=torch.float64)
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)
    if beta == 1.0:
        # the sampled predictions' squared error pulls the scale down (∂/∂log σ = 2Mσ² > 0), while the
        # project's beta (MSE of the mean prediction) leaves the scale alone at beta = 1
        assert exact[1] > 10 * se[1]
        model = MuSigmaModel(MU, SIGMA)
        ours = make_update_rule("reinforce_paper", q=1.0, beta=1.0, num_samples=4)
        rollout = collect_rollout(model, x, regret_fn, num_agents=3, num_samples=4, y_true=Y)
        assert float(_step(ours, model, rollout)[1]) == 0.0


def test_trains_from_the_config_and_the_cli_name(tmp_path) -> None:
    cfg = TrainConfig(population="phone", estimator=RULE, q_plus_1=3, beta=0.5, num_samples=2, epochs=2,
                      max_batches=2, batch_size=16, lr=1e-3, val_fraction=0.15)
    res = train(cfg, tmp_path / "run", tensorboard=False)
    assert len(res.history) == 2 and all(math.isfinite(h["loss"]) for h in res.history)
    assert (tmp_path / "run" / "model.pt").is_file()
    with pytest.raises(ValueError, match="does not apply"):
        make_update_rule(RULE, q=1.0, baseline="loo", num_samples=2)
