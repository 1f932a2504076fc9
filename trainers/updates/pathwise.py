r"""Pathwise (reparameterisation) gradient of the batch Equitable Objective, for differentiable regrets.

``ŷ = g_θ(x, ε)`` with the rollout's noise ``ε``; the surrogate is
``mean_k F(C̄_k)`` with ``C̄_{k,m} = (1/B) Σ_i C_m(g_θ(x_i, ε_{k,m,i}))``, and
its gradient is an unbiased estimate of ``∇ E_ε[F(C̄)]`` (the paper's Eq. 3
target).  Applies to data centers (closed-form, smooth regret); a top-k
decision's regret is piecewise constant, so slot agents need a REINFORCE rule.

On a data-parallel worker holding a shard of the agents
(:mod:`trainers.distributed`) the surrogate is the chain rule's
``mean_k Σ_{m in shard} w_{k,m} C̄_{k,m}`` with the detached weights
``w = ∂F/∂C̄`` at every agent's means: the workers' surrogates add up to one whose
gradient is that of ``mean_k F(C̄_k)``, computed through the weights instead of
through ``F`` (the same gradient up to rounding).
"""
from __future__ import annotations

from trainers.networks import reparameterized_sample
from trainers.objectives import equitable_loss, equitable_weights
from trainers.rollout import Rollout, score
from trainers.updates.base import SingleStepRule, UpdateStats, register


@register
class Pathwise(SingleStepRule):
    name = "pathwise"
    differentiable = True
    shardable = True

    def surrogate(self, rollout: Rollout):
        assert rollout.noise is not None
        pred = reparameterized_sample(rollout.dist, rollout.noise)  # the rollout's draws, now with a graph
        regret = score(rollout.regret_fn, pred)
        if not regret.requires_grad and self.beta < 1:
            raise ValueError("pathwise: regret_fn returned a tensor without gradient (non-differentiable agent); "
                             "use estimator='reinforce_weighted', 'eq_ppo' or 'reinforce_paper'")
        cbar = regret.mean(dim=-1)  # [K, M]
        if self.shard.agents == slice(None):
            eq_surrogate = equitable_loss(cbar, self.q, form=self.form).mean()
            eq_value = float(eq_surrogate.detach())
        else:
            every = self.shard.gather(cbar.detach())
            weights = self.shard.local(equitable_weights(every, self.q, form=self.form))
            eq_surrogate = (weights * cbar).sum(dim=-1).mean()
            eq_value = float(equitable_loss(every, self.q, form=self.form).mean())
        surrogate, loss, mse = self.combine(eq_surrogate, eq_value, self.mse_term(rollout.dist, rollout.y_true))
        return surrogate, UpdateStats(loss=loss, eq_loss=eq_value, mse=mse, grad_steps=1)
