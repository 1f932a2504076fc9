r"""Weighted REINFORCE: the chain-rule estimator of the Equitable Objective's gradient, one step per rollout.

Each sample's score ``∇log σ_θ(ŷ_{k,m,i} | x_i)`` is multiplied by a detached
credit (:mod:`trainers.updates.credit`):

* ``credit="linear"``: ``w_m(C̄_k) · (C_{k,m,i} - b_{k,m,i}) / B`` with plug-in
  weights at the sampled ``C̄_k``; biased by ``O(1/B)`` because ``C̄_k`` depends on
  the sample itself (zero for ``q = 0``);
* ``credit="difference"`` (default): the sample's exact marginal effect
  ``F(C̄_k) - F(C̄_k with C_{k,m,i} replaced by b_{k,m,i})``, unbiased at every
  ``B`` and equal to the linear credit to first order in ``1/B``.

Baselines: ``"deterministic"`` (default), ``"loo"`` (needs ``K >= 2``), ``"none"``.
Measured gradient variance: ~1e-7 of the paper's estimator on the same
objective (BENCHMARKS.md).
"""
from __future__ import annotations

import torch

from trainers.objectives import equitable_loss, equitable_weights
from trainers.rollout import Rollout
from trainers.updates.base import SingleStepRule, UpdateStats, register
from trainers.updates.credit import baseline_regret, difference_credit, linear_credit
from trainers.updates.reinforce_paper import score_function_surrogate


@register
class ReinforceWeighted(SingleStepRule):
    name = "reinforce_weighted"
    uses = ("baseline", "credit")

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        if self.baseline == "loo" and self.num_samples < 2:
            raise ValueError("baseline='loo' needs num_samples >= 2 (the mean over the other samples of the same input)")

    @property
    def wants_deterministic_regret(self) -> bool:
        return (self.baseline or "deterministic") == "deterministic"

    def surrogate(self, rollout: Rollout):
        regret = rollout.regret
        assert regret is not None
        with torch.no_grad():
            cbar = regret.mean(dim=-1)  # [K, M]
            eq_value = float(equitable_loss(cbar, self.q, form=self.form).mean())
            base = baseline_regret(rollout, self.baseline or "deterministic")
            if (self.credit_kind or "difference") == "linear":
                rollout.credit = linear_credit(equitable_weights(cbar, self.q, form=self.form), regret, base)
            else:
                rollout.credit = difference_credit(cbar, regret, base, self.q, self.form)
        eq_surrogate = score_function_surrogate(rollout, rollout.credit)
        surrogate, loss, mse = self.combine(eq_surrogate, eq_value, self.mse_term(rollout.dist, rollout.y_true))
        return surrogate, UpdateStats(loss=loss, eq_loss=eq_value, mse=mse, grad_steps=1)
