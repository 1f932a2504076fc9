r"""Rollout collection: the public model acts, every downstream agent decides and is scored.

This is the first half of every update (Stable-Baselines3's ``collect_rollouts``);
the second half, turning a rollout into parameter updates, is an update rule
(:mod:`trainers.updates`).

One rollout is ``B`` public inputs ``x_i`` (clock positions of the training
split).  The public model is a stochastic policy ``σ_θ(ŷ | x)``; every agent
``m`` draws ``K`` predictions of its own for every input,
``ŷ_{k,m,i} ~ σ_θ(· | x_i)`` (``x_{m,i}`` in the chunked layout, where agents see
different inputs), decides on each and is scored by its regret ``C_{k,m,i}``.
The predictions are drawn by reparameterisation, ``ŷ = g_θ(x, ε)`` with
standard-normal noise ``ε`` (:func:`trainers.networks.reparameterized_sample`),
so a pathwise rule can rebuild the same draws with a graph.

Shapes: ``pred``/``noise`` ``[K, M, B, H]``; ``log_prob``, ``regret``
``[K, M, B]``; ``det_regret`` (the regret of the deterministic prediction, the
distribution's mean) ``[M, B]``.  Regrets are multiplied by the per-agent
``agent_weights`` when given (the mixed population's group weights); the raw
regret is ``regret / agent_weights``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from trainers.networks import reparameterized_sample

#: ``regret_fn(pred [M|1, N, H]) -> regret [M, N]``; ``N`` may be any multiple of the batch (replica-major).
RegretFn = Callable[[Tensor], Tensor]


@dataclass
class Rollout:
    """One batch of experience (see the module doc for shapes).

    Attributes:
        x: public inputs ``[B, L]`` / ``[B, L, F]`` (shared) or ``[M, B, ...]`` (per-agent).
        y_true: true signal ``[B, H]`` or ``[M, B, H]`` (float32), for MSE terms; may be ``None``.
        dist: the sampling policy's distribution at ``x``, *with* its autograd graph,
            so a rule taking one gradient step needs no second forward pass.
        noise: the standard-normal draws ``ε`` ``[K, M, B, H]`` (``None`` without sampling).
        pred: sampled predictions ``[K, M, B, H]``, detached (``None`` without sampling).
        log_prob: ``log σ_old(ŷ | x)`` ``[K, M, B]`` under the policy that sampled, detached.
        regret: (weighted) regret of every sample ``[K, M, B]`` (``None`` without sampling).
        det_regret: (weighted) regret of the deterministic prediction ``[M, B]`` (``None`` if not asked for).
        regret_fn: the scorer the rollout was collected with (pathwise rules re-score with a graph).
        agent_weights: per-agent regret weights ``[M]`` already applied to the regrets, or ``None``.
        credit: per-sample credit ``[K, M, B]`` set by the update rule that consumes the rollout.
    """

    x: Tensor
    y_true: Tensor | None
    dist: Distribution
    noise: Tensor | None
    pred: Tensor | None
    log_prob: Tensor | None
    regret: Tensor | None
    det_regret: Tensor | None
    regret_fn: RegretFn
    num_agents: int
    agent_weights: Tensor | None = None
    credit: Tensor | None = None

    @property
    def num_samples(self) -> int:
        """``K``: predictions per agent and input (0 for a rollout of deterministic predictions only)."""
        return 0 if self.pred is None else int(self.pred.shape[0])

    @property
    def batch_size(self) -> int:
        """``B``: public inputs (clock positions) in the rollout."""
        return int(self.dist.batch_shape[-1])

    @property
    def per_agent_inputs(self) -> bool:
        return len(self.dist.batch_shape) == 2

    @property
    def decisions(self) -> int:
        """Agent-decisions scored: ``K·M·B`` (``M·B`` for the deterministic prediction only)."""
        return max(self.num_samples, 1) * self.num_agents * self.batch_size

    def raw(self, regret: Tensor) -> Tensor:
        """Undo the per-agent weights of a ``[..., M, B]`` regret tensor."""
        if self.agent_weights is None:
            return regret
        return regret / self.agent_weights.to(regret.dtype).unsqueeze(-1)


def sample_noise(dist: Distribution, num_agents: int, num_samples: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """Standard-normal noise ``[K, M, B, H]`` for ``dist`` (batch ``[B]`` or ``[M, B]``, event ``[H]``).

    With a shared input (batch ``[B]``) every agent gets its own noise, so agents draw independent predictions.
    """
    mean = dist.mean
    lead = (int(num_samples), int(num_agents)) if len(dist.batch_shape) == 1 else (int(num_samples),)
    return torch.randn((*lead, *mean.shape), generator=generator, device=mean.device, dtype=mean.dtype)


def score(regret_fn: RegretFn, pred: Tensor) -> Tensor:
    """Call ``regret_fn`` on ``pred [K, M, B, H]`` folded to ``[M, K·B, H]``; return ``[K, M, B]``."""
    K, M, B, H = pred.shape
    folded = pred.permute(1, 0, 2, 3).reshape(M, K * B, H)
    r = regret_fn(folded)
    if not isinstance(r, Tensor) or tuple(r.shape) != (M, K * B):
        got = tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__
        raise ValueError(f"regret_fn returned {got}; expected [M, K·B] = [{M}, {K * B}]")
    return r.reshape(M, K, B).permute(1, 0, 2)


def check_distribution(dist: Distribution, num_agents: int) -> None:
    per_agent = len(dist.batch_shape) == 2
    if len(dist.batch_shape) not in (1, 2) or len(dist.event_shape) != 1 or \
            (per_agent and dist.batch_shape[0] != num_agents):
        raise ValueError(f"model.distribution(x) must have batch shape [B] or [M, B] and event shape [H]; got "
                         f"{tuple(dist.batch_shape)} and {tuple(dist.event_shape)}")


def collect_rollout(model, x: Tensor, regret_fn: RegretFn, *, num_agents: int, num_samples: int = 1,
                    y_true: Tensor | None = None, generator: torch.Generator | None = None,
                    deterministic_regret: bool = False, agent_weights: Tensor | None = None) -> Rollout:
    """Sample predictions from ``model`` at ``x``, score them with ``regret_fn``; no parameter changes.

    Args:
        model: anything with ``distribution(x)`` (a :class:`trainers.networks.PublicModel`).
        x: public inputs ``[B, L]`` (shared by all agents) or ``[M, B, L]`` (per agent).
        regret_fn: ``pred [M|1, N, H] -> regret [M, N]`` (weighted by ``agent_weights`` if given).
        num_agents: ``M``.
        num_samples: ``K >= 1`` predictions per agent and input; ``0`` draws nothing (a Plain PM
            rollout: only the deterministic prediction is scored).
        y_true: true signal, kept for MSE terms.
        generator: RNG of the noise (resume-exact training passes its own).
        deterministic_regret: also score the deterministic prediction (the mean) -> ``det_regret``.
        agent_weights: the per-agent weights ``regret_fn`` applies, recorded so raw regrets can be logged.
    """
    K, M = int(num_samples), int(num_agents)
    if K < 0 or M < 1:
        raise ValueError(f"num_samples must be >= 0 and num_agents >= 1, got {num_samples} and {num_agents}")
    dist = model.distribution(x)
    check_distribution(dist, M)
    noise = pred = log_prob = regret = det = None
    if K > 0:
        with torch.no_grad():
            noise = sample_noise(dist, M, K, generator)
            pred = reparameterized_sample(dist, noise)
            log_prob = dist.log_prob(pred)
            regret = score(regret_fn, pred)
    if deterministic_regret or K == 0:
        with torch.no_grad():
            mean = dist.mean.detach()
            det = regret_fn(mean if len(dist.batch_shape) == 2 else mean.unsqueeze(0))
            if tuple(det.shape) != (M, mean.shape[-2]):
                raise ValueError(f"regret_fn on the mean prediction returned {tuple(det.shape)}; "
                                 f"expected [M, B] = [{M}, {mean.shape[-2]}]")
    return Rollout(x=x, y_true=y_true, dist=dist, noise=noise, pred=pred, log_prob=log_prob, regret=regret,
                   det_regret=det, regret_fn=regret_fn, num_agents=M, agent_weights=agent_weights)
