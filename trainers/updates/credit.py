r"""Per-sample credit: baselines, and how much of the Equitable Objective a sample is responsible for.

By the chain rule ``∇F(C̄) = Σ_m w_m ∇C̄_m`` with ``w_m = ∂F/∂C̄_m``
(:func:`trainers.objectives.equitable_weights`), and
``∇C̄_m = (1/B) Σ_i E[(C_{m,i} - b_{m,i}) ∇log σ(ŷ_{m,i} | x_i)]`` for any baseline
``b_{m,i}`` that does not depend on ``ŷ_{m,i}``.  So each sample's score can be
multiplied by a *credit*: its agent's weight times its regret minus a baseline.
The baselines here are such functions:

* ``"deterministic"``: the regret of the deterministic prediction (the mean) at the same input;
* ``"loo"``: the mean regret of the other ``K - 1`` samples of the same agent and input;
* ``"none"``: zero.
"""
from __future__ import annotations

import torch
from torch import Tensor

from trainers.estimators import difference_credit
from trainers.rollout import Rollout

__all__ = ["baseline_regret", "difference_credit", "linear_credit"]


def baseline_regret(rollout: Rollout, kind: str) -> Tensor:
    """Baseline ``b`` ``[K, M, B]`` of kind ``"deterministic" | "loo" | "none"`` (module doc)."""
    regret = rollout.regret
    assert regret is not None
    if kind == "deterministic":
        if rollout.det_regret is None:
            raise ValueError("baseline='deterministic' needs a rollout collected with deterministic_regret=True")
        return rollout.det_regret.unsqueeze(0).to(regret.dtype).expand_as(regret)
    if kind == "loo":
        K = regret.shape[0]
        if K < 2:
            raise ValueError("baseline='loo' needs num_samples >= 2 (the mean over the other samples of the same input)")
        return (regret.sum(dim=0, keepdim=True) - regret) / (K - 1)
    if kind == "none":
        return torch.zeros_like(regret)
    raise ValueError(f"baseline={kind!r}; accepted: deterministic, loo, none")


def linear_credit(weights: Tensor, regret: Tensor, baseline: Tensor) -> Tensor:
    """``w_m · (C_{k,m,i} - b_{k,m,i}) / B`` ``[K, M, B]`` for weights ``[K, M]`` or ``[M]``."""
    w = weights if weights.dim() == 2 else weights.unsqueeze(0)
    return w.unsqueeze(-1) * (regret - baseline) / regret.shape[-1]
