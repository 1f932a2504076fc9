r"""The paper's REINFORCE estimator (Eq. 3/4), exactly.

``∇J ≈ mean_k [Σ_{m,i} ∇log σ_θ(ŷ_{k,m,i} | x_i)] · F(C̄_k)`` with ``F(C̄_k)``
detached: every sample's score is multiplied by the whole batch objective.
Unbiased for ``∇ E[F(C̄)]``, but its variance grows with ``M·B·F²``.  The paper
uses the power form ``F = Σ_m C̄_m^(q+1)`` (the default here), which overflows
float32 for large ``q`` (see :mod:`trainers.objectives`); ``form="norm"``
gives the same estimator of the equivalent norm.
"""
from __future__ import annotations

import torch

from trainers.objectives import equitable_loss
from trainers.rollout import Rollout
from trainers.updates.base import SingleStepRule, UpdateStats, register


def score_function_surrogate(rollout: Rollout, signal: torch.Tensor) -> torch.Tensor:
    """``mean_k Σ_{m,i} signal_{k,m,i} · log σ_θ(ŷ_{k,m,i} | x_i)`` with the rollout's graph (signal detached)."""
    assert rollout.pred is not None
    log_prob = rollout.dist.log_prob(rollout.pred)  # [K, M, B], differentiable in θ
    return (signal.detach() * log_prob).sum(dim=(1, 2)).mean()


@register
class ReinforcePaper(SingleStepRule):
    name = "reinforce_paper"
    default_form = "power"

    def surrogate(self, rollout: Rollout):
        assert rollout.regret is not None
        with torch.no_grad():
            per_replica = equitable_loss(rollout.regret.mean(dim=-1), self.q, form=self.form)  # [K]
            rollout.credit = per_replica[:, None, None].expand_as(rollout.regret)
        eq_value = float(per_replica.mean())
        eq_surrogate = score_function_surrogate(rollout, rollout.credit)
        surrogate, loss, mse = self.combine(eq_surrogate, eq_value, self.mse_term(rollout.dist, rollout.y_true))
        return surrogate, UpdateStats(loss=loss, eq_loss=eq_value, mse=mse, grad_steps=1)
