r"""Gradient estimators for the Equitable Objective of a stochastic public model.

Each estimator returns a *surrogate* scalar whose ``.backward()`` leaves a
gradient estimate in the model's ``.grad`` fields, and the loss value for logs.
The estimators are the single-step update rules of :mod:`trainers.updates`
(one file each); :func:`estimate` is a rollout
(:func:`trainers.rollout.collect_rollout`) followed by the rule's surrogate,
without the optimizer step.  This module keeps the maths and the credit
function they share.

Target
------
For a batch of ``B`` public inputs ``x_i`` (shared by all ``M`` agents), every
agent ``m`` draws its own prediction ``ŷ_{m,i} ~ σ_θ(· | x_i)`` and gets regret
``C_{m,i}``; ``C̄_m = (1/B) Σ_i C_{m,i}``.  All estimators target the paper's
(Eq. 3) expected *batch* objective

    J(θ) = E_ŷ[ F(C̄) ],   F = Σ_m C̄_m^(q+1)  (form="power")  or  (Σ_m C̄_m^(q+1))^(1/(q+1))  (form="norm").

At finite ``B`` this differs from ``F(E[C̄])`` (Jensen); both coincide as
``B -> ∞``.  Example (tested): ``ŷ ~ N(μ, σ²)``, ``C_m = (ŷ - a_m)²``, ``q = 1``,
power form, ``d_m = μ - a_m``: ``∂J/∂μ = Σ_m 4 d_m (d_m² + σ²) + 8 d_m σ² / B``
while ``∂F(E C̄)/∂μ = Σ_m 4 d_m (d_m² + σ²)``.

Sample layout
-------------
With ``K = num_samples`` independent replicas, predictions are drawn as
``[K, M, B, H]`` (replica, agent, input, horizon); ``J`` is estimated by the mean
of ``F`` over the ``K`` replicas, each replica being one full batch of ``M·B``
draws.  ``regret_fn`` is called once on all replicas at a time with
``pred [M, K·B, H]`` laid out replica-major (column ``k·B + i`` is replica ``k``
of input ``i``), and must return ``[M, K·B]``; :func:`make_regret_fn` builds such
a callable for an :class:`agents.base.AgentGroup` by tiling ``truth`` and
``index``.  The deterministic baseline calls it with ``pred [1, B, H]``.

Estimators
----------
``pathwise``
    ``rsample`` and backpropagate ``mean_k F(C̄_k)`` through a differentiable
    regret (e.g. :class:`agents.data_center.DataCenterAgent`).  Unbiased for ``∇J``.
``reinforce_paper``
    Exactly the paper's Eq. (3)/(4): ``[Σ_{m,i} ∇log σ(ŷ_{m,i}|x_i)] · F(C̄)`` with
    ``F(C̄)`` detached.  The paper uses the *power* form, so that is the default
    here (``form=None``); ``form="norm"`` gives the same estimator for the norm.
    Unbiased for ``∇J`` but its variance grows with ``M·B·F²`` (every sample's
    score is multiplied by the whole batch loss).  With the power form ``F``
    overflows float32 for large ``q`` (see :mod:`trainers.objectives`), making the
    surrogate ``inf``/NaN.
``reinforce_weighted``
    Lower variance.  By the chain rule ``∇F = Σ_m w_m ∇C̄_m`` with
    ``w_m = ∂F/∂C̄_m`` (:func:`trainers.objectives.equitable_weights`:
    ``(q+1) C̄_m^q`` for the power form, ``(C̄_m/N)^q = N·softmax((q+1) log C̄)_m/C̄_m``
    for the norm form) and ``∇C̄_m = (1/B) Σ_i E[(C_{m,i} - b_{m,i}) ∇log σ(ŷ_{m,i}|x_i)]``
    for any baseline ``b_{m,i}`` independent of ``ŷ_{m,i}``.  Each sample's score
    is multiplied by a detached per-sample *credit*:

    * ``credit="linear"`` (the chain rule above, as first proposed):
      ``w_m(C̄) · (C_{m,i} - b_{m,i}) / B``.  The weights are plug-in values at
      the sampled ``C̄``, which depends on ``ŷ_{m,i}`` itself, so at finite ``B``
      the estimator is biased by ``O(1/B)`` (zero for ``q = 0``, where ``w = 1``).
      In the example above, with ``b`` = regret of the mean prediction, its mean
      is ``Σ_m 4 d_m (d_m² + σ²) + 20 d_m σ² / B`` instead of ``... + 8 d_m σ² / B``
      (``+ 16 d_m σ²/B`` with the leave-one-out baseline).
    * ``credit="difference"`` (default): the exact marginal effect of the sample,
      ``F(C̄) - F(C̄ with C_{m,i} replaced by b_{m,i})``.  The subtracted term does
      not depend on ``ŷ_{m,i}``, so this is an unbiased estimator of ``∇J`` at
      every ``B``; to first order in ``1/B`` it equals the linear credit, with the
      same low variance.  Computed in log space for the norm form.  It is the
      default because the linear credit's bias is measurable: on the tests'
      data-center problem (``B = 16``, ``q+1`` = 2 and 4, 10^4 draws) the linear
      credit's mean is about 10% longer than the pathwise gradient (9-10 standard
      errors along it); the difference credit's is within 2.3 standard errors.

    Baselines: ``"deterministic"`` (regret of the mean prediction, no grad),
    ``"loo"`` (mean regret of the other ``K - 1`` replicas of the same agent and
    input; needs ``num_samples >= 2``) or ``"none"``.

Combined objective
------------------
``beta > 0`` adds ``beta · MSE(mean prediction, y_true)`` (and scales the
equitable part by ``1 - beta``), differentiated pathwise through the mean --
the deterministic prediction used at inference.  The paper's Eq. (37) instead
puts the MSE of the *sampled* predictions inside its REINFORCE term, whose
expectation also penalises the predictive variance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trainers.objectives import _logsumexp, _masked_log, check_q, logsumexp_excluding_each
from trainers.rollout import RegretFn, collect_rollout

if TYPE_CHECKING:
    from agents.base import AgentGroup

ESTIMATORS = ("pathwise", "reinforce_paper", "reinforce_weighted")
BASELINES = ("deterministic", "loo", "none")
CREDITS = ("linear", "difference")


@dataclass
class EstimatorOutput:
    """Result of :func:`estimate`.

    ``surrogate``: scalar to call ``.backward()`` on (its value is not the loss);
    ``loss``: ``(1-beta)·eq_loss + beta·mse``; ``eq_loss``: mean over replicas of
    the batch Equitable Objective ``F(C̄)``; ``mse``: MSE of the mean prediction
    (NaN without ``y_true``); ``mean_regret``: ``[M]`` mean regret per agent
    (over replicas and inputs); ``regret``: ``[K, M, B]`` sampled regrets.
    """

    surrogate: Tensor
    loss: float
    eq_loss: float
    mse: float
    mean_regret: Tensor
    regret: Tensor


def make_regret_fn(agents: AgentGroup, truth: Tensor, index: Tensor) -> RegretFn:
    """``regret_fn`` for an agent group at time steps ``index [B]`` with ``truth [B, H]`` (or ``[M, B, H]``).

    The returned callable accepts ``pred [M|1, r·B, H]`` for any integer ``r``
    (replica-major layout) by tiling ``truth`` and ``index`` ``r`` times.
    """
    index = torch.as_tensor(index, dtype=torch.long)
    B = int(index.shape[0])

    def regret_fn(pred: Tensor) -> Tensor:
        n = int(pred.shape[1])
        if n % B:
            raise ValueError(f"regret_fn: prediction has {n} columns, not a multiple of the batch size {B}")
        r = n // B
        if r == 1:
            return agents.regret(pred, truth, index)
        t = truth.repeat(r, 1) if truth.dim() == 2 else truth.repeat(1, r, 1)
        return agents.regret(pred, t, index.repeat(r))

    return regret_fn


def _check_choice(name: str, value: str, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise ValueError(f"{name}={value!r}; accepted: {accepted}")
    return value


def difference_credit(mean_regret: Tensor, regret: Tensor, baseline: Tensor, q: float, form: str, *,
                      agents: slice = slice(None)) -> Tensor:
    """``F(C̄) - F(C̄ with C_{m,i} replaced by b_{m,i})`` per sample: ``[K, M, B]``.

    ``mean_regret [K, M]``, ``regret`` and ``baseline`` ``[K, M, B]`` (all ``>= 0``).
    With ``agents`` (a contiguous range of the ``M``), ``regret`` and ``baseline``
    hold those agents only and so does the result; ``F`` is still over all ``M``
    (a data-parallel worker's shard, :mod:`trainers.distributed`).
    For ``q = 0`` this is ``(C - b) / B``.  The norm form is evaluated as
    ``N - N' = -N · expm1(log N' - log N)`` with
    ``log N' = logaddexp(logsumexp_{k≠m}(p log C̄_k), p log C̄'_{m,i}) / p``; the
    leave-one-out log-sum-exp comes from the full one in O(M) memory
    (:func:`trainers.objectives.logsumexp_excluding_each`).
    """
    p = check_q(q) + 1.0
    B = regret.shape[-1]
    cbar = mean_regret[..., agents].unsqueeze(-1)
    if p == 1.0:
        return (regret - baseline) / B
    new = (cbar - (regret - baseline) / B).clamp_min(0)
    if form == "power":
        return cbar.pow(p) - new.pow(p)
    z = p * _masked_log(mean_regret)  # [K, M]
    log_n = (_logsumexp(z) / p)[..., None, None]  # [K, 1, 1]
    lse_excl = logsumexp_excluding_each(z)[..., agents]  # over the agents other than m, for m in agents; O(M)
    log_new = torch.logaddexp(lse_excl.unsqueeze(-1), p * _masked_log(new)) / p  # [K, M, B]
    finite = torch.isfinite(log_n)
    ln = torch.where(finite, log_n, torch.zeros_like(log_n))
    return torch.where(finite, -torch.exp(ln) * torch.expm1(log_new - ln), -torch.exp(log_new))


def estimate(model: Any, x: Tensor, regret_fn: RegretFn, *, q: float, estimator: str, num_agents: int,
             beta: float = 0.0, y_true: Tensor | None = None, baseline: str | None = None,
             credit: str | None = None, num_samples: int = 1, form: str | None = None,
             generator: torch.Generator | None = None) -> EstimatorOutput:
    """One gradient estimate of ``(1-beta)·J + beta·MSE`` (see module doc), without touching the parameters.

    A rollout (:func:`trainers.rollout.collect_rollout`) followed by the
    surrogate of the single-step update rule ``estimator``
    (:mod:`trainers.updates`); call ``.surrogate.backward()`` for the estimate.

    Args:
        model: any object with ``distribution(x)`` returning a distribution with
            batch shape ``[B]`` and event shape ``[H]`` (e.g. ``PublicModel``).
        x: public input ``[B, L]`` (or ``[B, L, F]``), shared by all agents.
        regret_fn: ``pred [M|1, N, H] -> regret [M, N]`` (module doc: layout).
        q: equity parameter (exponent ``q + 1``).
        estimator: ``"pathwise" | "reinforce_paper" | "reinforce_weighted"``.
        num_agents: ``M``.
        beta: weight of the MSE term, in ``[0, 1]``; ``> 0`` needs ``y_true [B, H]``.
        y_true: true signal ``[B, H]``; when given the MSE is reported.
        baseline: ``reinforce_weighted`` only; default ``"deterministic"``.
        credit: ``reinforce_weighted`` only; ``"difference"`` (default, unbiased) or ``"linear"``.
        num_samples: ``K`` independent replicas of the whole batch (>= 1).
        form: ``"norm" | "power"``; default ``"power"`` for ``reinforce_paper``
            (the paper's estimator), ``"norm"`` otherwise.
        generator: optional ``torch.Generator`` (on the model's device) for the sampling noise.
    """
    from trainers.updates import make_update_rule  # the rules import this module's credit functions

    _check_choice("estimator", estimator, ESTIMATORS)
    if estimator != "reinforce_weighted" and (baseline is not None or credit is not None):
        raise ValueError(f"baseline/credit apply to estimator='reinforce_weighted' only (got estimator={estimator!r})")
    K, M = int(num_samples), int(num_agents)
    if K < 1 or M < 1:
        raise ValueError(f"num_samples and num_agents must be >= 1, got {num_samples} and {num_agents}")
    rule = make_update_rule(estimator, q=q, form=form, beta=beta, num_samples=K, baseline=baseline, credit=credit)
    if rule.beta > 0 and y_true is None:
        raise ValueError(f"beta={beta} > 0 needs y_true for the MSE term")
    rollout = collect_rollout(model, x, regret_fn, num_agents=M, num_samples=K, y_true=y_true, generator=generator,
                              deterministic_regret=rule.wants_deterministic_regret)
    surrogate, stats = rule.surrogate(rollout)
    assert rollout.regret is not None
    return EstimatorOutput(surrogate=surrogate, loss=stats.loss, eq_loss=stats.eq_loss, mse=stats.mse,
                           mean_regret=rollout.regret.mean(dim=(0, 2)), regret=rollout.regret)
