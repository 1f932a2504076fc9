"""The Plain PM: fit the mean prediction to the truth by MSE (no sampling, no agents in the gradient)."""
from __future__ import annotations

import math

from trainers.objectives import mse_loss
from trainers.rollout import Rollout
from trainers.updates.base import SingleStepRule, UpdateStats, register


@register
class MSE(SingleStepRule):
    """``min_θ mean ||μ_θ(x) - y||²``: the accuracy-only public model (``objective="mse"``)."""

    name = "mse"
    samples = False

    def surrogate(self, rollout: Rollout):
        if rollout.y_true is None:
            raise ValueError("update rule 'mse' needs the true signal (rollout.y_true)")
        loss = mse_loss(rollout.dist.mean, rollout.y_true)
        value = float(loss.detach())
        return loss, UpdateStats(loss=value, eq_loss=math.nan, mse=value, grad_steps=1)
