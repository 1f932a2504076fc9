r"""The paper's combined objective (App. A.5, Eq. 36) with its REINFORCE estimator (Eq. 37), exactly.

The paper adds the public model's prediction loss to the Equitable Objective
*inside* the score-function estimator, on the **sampled** predictions:

    L(θ) = (1 - β) Σ_m C̄_m^(q+1)  +  β L_f,      L_f = Σ_m (1/B) Σ_i ‖y_i - ŷ_{m,i}‖²      (Eq. 36)

    ∇L ≈ (1/K) Σ_k [Σ_{m,i} ∇log σ_θ(ŷ_{k,m,i} | x_i)] · F_k,                                   (Eq. 37)
    F_k = Σ_m [ (1 - β) C̄_{m,k}^(q+1) + β (1/B) Σ_i ‖y_i - ŷ_{k,m,i}‖² ]

with ``C̄_{m,k} = (1/B) Σ_i C_{k,m,i}`` and ``F_k`` detached: every sample's
score is multiplied by the whole batch value of the combined objective of its
replica.  ``‖·‖²`` sums over the horizon and ``L_f`` over the agents, as Eq. 36
writes it (each agent scores its own sampled predictions).  ``form="power"``
(default) is the paper's ``Σ_m C̄_m^(q+1)``; ``form="norm"`` replaces it by the
norm ``(Σ_m C̄_m^(q+1))^(1/(q+1))`` (same minimisers of the equitable part).

How this differs from ``beta`` in the project's other rules (e.g.
``reinforce_paper`` or ``reinforce_weighted`` with ``beta > 0``): those minimise
``(1 - β) F + β MSE(mean prediction, y)``, the MSE of the *deterministic*
prediction averaged over batch and horizon, differentiated directly (a pathwise
term with no sampling noise).  Here the accuracy term is the expected squared
error of the *sampled* predictions, which equals the squared error of the mean
plus the policy's variance (``E‖y - ŷ‖² = ‖y - μ‖² + tr Σ``), so it also pulls the
policy's scale towards zero; it is summed over horizon and agents (``M·H`` times
the per-element MSE), which changes what a given ``β`` means; and its gradient is
estimated by the score function, with the variance that brings.  No baseline is
used, as in Eq. 37.

``UpdateStats.mse`` logs the MSE of the mean prediction (the column every rule
logs); ``loss`` is the batch value of Eq. 36 averaged over replicas and
``eq_loss`` its equitable part.

On a data-parallel worker (:mod:`trainers.distributed`) both sums over agents
in ``F_k`` -- the equitable part's mean regrets and ``L_f``'s per-agent terms --
are gathered over every worker's agents (:class:`trainers.updates.base.AgentShard`),
so each worker weighs its agents' scores by the single process's ``F_k``.
"""
from __future__ import annotations

import math

import torch

from trainers.objectives import equitable_loss, mse_loss
from trainers.rollout import Rollout
from trainers.updates.base import ALL_AGENTS, AgentShard, SingleStepRule, UpdateStats, register
from trainers.updates.reinforce_paper import score_function_surrogate


def sampled_prediction_loss(rollout: Rollout, shard: AgentShard = ALL_AGENTS) -> torch.Tensor:
    """``L_f`` of Eq. 36 per replica ``[K]``: ``Σ_m (1/B) Σ_i ‖y_i - ŷ_{k,m,i}‖²`` on the sampled predictions
    (over every agent of the population when the rollout holds ``shard``'s)."""
    assert rollout.pred is not None
    if rollout.y_true is None:
        raise ValueError("update rule 'reinforce_paper_combined' needs the true signal (rollout.y_true)")
    y = rollout.y_true.to(rollout.pred.dtype)  # [B, H] (shared input) or [M, B, H] (per-agent inputs)
    sq = ((rollout.pred - y) ** 2).sum(dim=-1)  # [K, M, B]
    return shard.gather(sq.mean(dim=-1)).sum(dim=-1)


@register
class ReinforcePaperCombined(SingleStepRule):
    """Eq. 37: the paper's score-function estimator of the combined objective of Eq. 36 (module doc)."""

    name = "reinforce_paper_combined"
    default_form = "power"
    shardable = True

    def surrogate(self, rollout: Rollout):
        assert rollout.regret is not None
        with torch.no_grad():
            eq = equitable_loss(self.shard.gather(rollout.regret.mean(dim=-1)), self.q, form=self.form)  # [K]
            lf = sampled_prediction_loss(rollout, self.shard) if self.beta > 0 else torch.zeros_like(eq)
            per_replica = (1.0 - self.beta) * eq + self.beta * lf if self.beta < 1 else lf  # F_k
            rollout.credit = per_replica[:, None, None].expand_as(rollout.regret)
            mse = math.nan if rollout.y_true is None else \
                float(self.shard.input_mean(mse_loss(rollout.dist.mean, rollout.y_true)))
        surrogate = score_function_surrogate(rollout, rollout.credit)
        return surrogate, UpdateStats(loss=float(per_replica.mean()), eq_loss=float(eq.mean()), mse=mse, grad_steps=1)
