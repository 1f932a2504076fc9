"""Update rules: how a rollout (:mod:`trainers.rollout`) becomes parameter updates.

============================  ======================================================================
name                          rule
============================  ======================================================================
``mse``                       the Plain PM: MSE of the mean prediction (no sampling)
``pathwise``                  reparameterisation gradient through a differentiable regret
``reinforce_paper``           the paper's Eq. 3/4 REINFORCE, one step per rollout
``reinforce_weighted``        chain-rule credit with a baseline, one step per rollout
``reinforce_paper_combined``  the paper's combined objective (Eq. 36) with its estimator (Eq. 37)
``eq_ppo``                    clipped-ratio, multi-epoch minibatch updates on running equitable weights
============================  ======================================================================

Adding a rule is one file -- a subclass of :class:`~trainers.updates.base.UpdateRule`
decorated with :func:`~trainers.updates.base.register` -- plus its import below
(docs/trainer.md walks through an example).
"""
from __future__ import annotations

from typing import Any

from trainers.updates import (  # noqa: F401  (registration)
    eq_ppo,
    mse,
    pathwise,
    reinforce_paper,
    reinforce_paper_combined,
    reinforce_weighted,
)
from trainers.updates.base import (
    BASELINES,
    CREDITS,
    RULES,
    NonFiniteError,
    SingleStepRule,
    UpdateRule,
    UpdateStats,
    apply_gradients,
    register,
)

__all__ = ["BASELINES", "CREDITS", "RULES", "NonFiniteError", "SingleStepRule", "UpdateRule", "UpdateStats",
           "apply_gradients", "make_update_rule", "register"]


def make_update_rule(name: str, **kw: Any) -> UpdateRule:
    """The registered rule ``name`` built with ``kw`` (see :class:`~trainers.updates.base.UpdateRule`)."""
    if name not in RULES:
        raise ValueError(f"update rule {name!r} is not registered; accepted: {', '.join(RULES)}")
    return RULES[name](**kw)
