r"""Pathwise (reparameterisation) gradient of the batch Equitable Objective, for differentiable regrets.

``ŷ = g_θ(x, ε)`` with the rollout's noise ``ε``; the surrogate is
``mean_k F(C̄_k)`` with ``C̄_{k,m} = (1/B) Σ_i C_m(g_θ(x_i, ε_{k,m,i}))``, and
its gradient is an unbiased estimate of ``∇ E_ε[F(C̄)]`` (the paper's Eq. 3
target).  Applies to data centers (closed-form, smooth regret); a top-k
decision's regret is piecewise constant, so slot agents need a REINFORCE rule.
"""
from __future__ import annotations

from trainers.networks import reparameterized_sample
from trainers.objectives import equitable_loss
from trainers.rollout import Rollout, score
from trainers.updates.base import SingleStepRule, UpdateStats, register


@register
class Pathwise(SingleStepRule):
    name = "pathwise"
    differentiable = True

    def surrogate(self, rollout: Rollout):
        assert rollout.noise is not None
        pred = reparameterized_sample(rollout.dist, rollout.noise)  # the rollout's draws, now with a graph
        regret = score(rollout.regret_fn, pred)
        if not regret.requires_grad and self.beta < 1:
            raise ValueError("pathwise: regret_fn returned a tensor without gradient (non-differentiable agent); "
                             "use estimator='reinforce_weighted', 'eq_ppo' or 'reinforce_paper'")
        eq_surrogate = equitable_loss(regret.mean(dim=-1), self.q, form=self.form).mean()
        eq_value = float(eq_surrogate.detach())
        surrogate, loss, mse = self.combine(eq_surrogate, eq_value, self.mse_term(rollout.dist, rollout.y_true))
        return surrogate, UpdateStats(loss=loss, eq_loss=eq_value, mse=mse, grad_steps=1)
