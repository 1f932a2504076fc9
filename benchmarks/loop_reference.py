"""A plain per-sample, per-agent Python reference of the EV regret, the Equitable loss and its REINFORCE gradient.

This is the "obvious" implementation the batched fast path replaces, written
the way the paper's released code computes the EV loss (``main_ev_charging.py``:
a Python loop over agents, and within each agent a loop over the batch's
samples, each one a separate top-k on one 12-slot instance):

* :func:`loop_ev_regret` -- one agent, one sample: the ``k`` cheapest slots of
  the prediction (stable order: ties go to the earlier slot, plus any slot with
  a negative predicted value, the exact optimum of the slot problem, see
  :mod:`agents.slot_scheduling`), its cost on the truth, minus the cost of the
  ``k`` truly cheapest slots;
* :func:`loop_population_regret` -- all agents x all samples by two nested
  Python loops (contexts ``k = min(H, ceil(need / rate))`` and the truth window
  read from the raw per-agent sequences, shared or chunked layout);
* :func:`loop_reinforce_paper` -- the paper's Eq. 3/4 estimator built from it:
  the regrets from the loop above, the log-probabilities of all samples in one
  vectorised call (as any implementation would compute them; an earlier version
  built one ``Normal`` per sample, which made the reference ~20 times slower and
  the quoted speed-up 360x instead of ~21x, BENCHMARKS.md), and the surrogate ``F(C̄) · Σ_m Σ_i log σ(ŷ_{m,i} | x_i)`` with
  ``F = Σ_m C̄_m^(q+1)`` (power form, Python floats) differentiated with one
  ``backward()``;
* :func:`loop_epoch` -- one training epoch of :func:`trainers.training.train`
  (same batches, same Adam/StepLR, same random draws) with the loss above.

Used by ``benchmarks/bench_throughput.py`` (speed) and ``tests/test_loop_reference.py``
(it must equal :meth:`eq_envs.population.Population.regret`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Independent

from agents.ev_charging import SLOT_TOLERANCE, EVChargingAgent
from eq_envs.population import Population


def loop_schedule(values: np.ndarray, k: int) -> np.ndarray:
    """Boolean schedule of one instance: the ``k`` lowest values (stable order) plus negative ones."""
    order = np.argsort(values, kind="stable")
    chosen = np.zeros(len(values), dtype=bool)
    chosen[order[:k]] = True
    chosen |= values < 0
    return chosen


def loop_ev_regret(pred: np.ndarray, truth: np.ndarray, k: int, rate: float) -> float:
    """Regret of one EV on one instance: cost of deciding on ``pred`` minus the oracle's, both on ``truth``."""
    cost = rate * float(truth[loop_schedule(pred, k)].sum())
    oracle = rate * float(truth[loop_schedule(truth, k)].sum())
    return cost - oracle


def ev_sequences(pop: Population) -> tuple[list[list[float]], list[list[float]]]:
    """Per-agent energy needs and rates (Python lists) of a population of one EV group."""
    if len(pop.groups) != 1 or not isinstance(pop.groups[0], EVChargingAgent):
        raise ValueError(f"loop reference: population {pop.name} is not one EV group")
    g = pop.groups[0]
    return [list(map(float, n)) for n in g.needs], [list(map(float, r)) for r in g.rate.sequences()]


def loop_population_regret(pop: Population, pred: np.ndarray, index) -> np.ndarray:
    """Regret ``[M, B]`` for predictions ``pred [1|M, B, H]`` at clock positions ``index [B]``, one instance at a time."""
    needs, rates = ev_sequences(pop)
    pred = np.asarray(pred, dtype=np.float64)
    index = [int(i) for i in index]
    M, H, L = pop.num_agents, pop.horizon, pop.lookback
    # the split's prediction rows, from their definition (eq_envs.population): given, or every row of the range
    start, stop = pop.split_range
    rows = list(pop.positions) if pop.positions is not None else list(range(start + L, stop - H + 1))
    stretch = len(rows) // M  # chunked: agent m owns rows[m * stretch : (m + 1) * stretch]
    out = np.zeros((M, len(index)))
    for m in range(M):
        for b, i in enumerate(index):
            j = i % len(needs[m])
            k = int(min(H, max(0, math.ceil(needs[m][j] / rates[m][j] - SLOT_TOLERANCE))))
            t = int(rows[i] if pop.layout == "shared" else rows[m * stretch + i])
            truth = pop.signal[t:t + H]
            p = pred[0 if pred.shape[0] == 1 else m, b]
            out[m, b] = loop_ev_regret(p, truth, k, rates[m][j])
    return out


def loop_reinforce_paper(dist: Independent, pop: Population, index, q: float, pred: torch.Tensor) -> dict:
    """Paper's Eq. 3/4 surrogate from per-agent, per-sample loops; calls ``backward()`` on it.

    ``dist``: the public model's distribution (batch ``[B]`` shared layout or
    ``[M, B]`` chunked); ``pred``: the sampled predictions ``[M, B, H]`` (detached).
    Returns the regrets ``[M, B]`` (numpy), ``F`` and the surrogate value.
    """
    regret = loop_population_regret(pop, pred.detach().numpy(), index)
    M, B = regret.shape
    # one vectorised log-probability of every sample (the [B] batch of a shared input broadcasts over the agents):
    # nobody builds a distribution per sample, so neither does the reference; the regrets above stay a loop
    log_prob = dist.log_prob(pred)  # [M, B]
    cbar = [float(sum(regret[m])) / B for m in range(M)]
    F = sum(c ** (q + 1.0) for c in cbar)
    surrogate = F * log_prob.sum()
    surrogate.backward()
    return {"regret": regret, "F": F, "surrogate": float(surrogate.detach())}


def loop_epoch(model, pop: Population, opt, sched, gen: torch.Generator, batch_size: int, q: float,
               max_batches: int | None = None) -> list[float]:
    """One epoch of :func:`trainers.training.train` (``reinforce_paper``, K = 1) with the loop reference loss.

    Draws exactly as the trainer does: ``randperm`` of the clock positions, then
    for each batch standard-normal noise ``[1, M, B, H]`` from ``gen``.  Returns
    the per-batch ``F`` values.
    """
    model.train()
    steps = pop.num_steps
    perm = torch.randperm(steps, generator=gen)
    n = (steps + batch_size - 1) // batch_size
    if max_batches is not None:
        n = min(n, max_batches)
    out = []
    for b in range(n):
        index = perm[b * batch_size:(b + 1) * batch_size]
        x = pop.observation(index)
        opt.zero_grad(set_to_none=True)
        dist = model.distribution(x)
        mean = dist.mean
        shape = (1, pop.num_agents) if mean.dim() == 2 else (1,)
        eps = torch.randn((*shape, *mean.shape), generator=gen, dtype=mean.dtype)
        base = dist.base_dist
        pred = (base.loc + base.scale * eps).detach()[0]  # [M, B, H]
        out.append(loop_reinforce_paper(dist, pop, index.tolist(), q, pred)["F"])
        opt.step()
    sched.step()
    return out
