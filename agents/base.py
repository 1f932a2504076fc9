"""Base class for downstream decision makers ("agents").

An :class:`AgentGroup` holds ``M`` agents of one kind together with their
private contexts (workloads, energy needs, charging rates, ...).  Every method
works on batched torch tensors laid out as ``agents x samples x horizon`` so a
whole population is evaluated in one call, and differentiable agents keep
autograd.

Shapes used throughout:

* ``pred``  -- predicted signal, ``[M, B, H]`` or ``[1, B, H]`` (one prediction
  shared by all agents, broadcast);
* ``truth`` -- true signal, ``[B, H]`` (all agents share one clock) or
  ``[M, B, H]``;
* ``index`` -- long tensor ``[B]`` of time-step indices into the current split;
  each agent maps it to its own context with :meth:`AgentGroup.context`.

Regret of a decision ``a_hat = decide(pred)`` is
``cost(a_hat, truth) - oracle_cost(truth) >= 0``.

Memory: :meth:`AgentGroup.evaluate` and :meth:`AgentGroup.regret` work through
the agents in contiguous *shards* so that the temporaries of one shard
(decisions, costs and their intermediates) stay within a memory budget
(:data:`DEFAULT_MEMORY_BUDGET`, 32 MiB, or the caller's ``memory_budget``);
:meth:`AgentGroup.bytes_per_decision` is each kind's estimate of those
temporaries per agent and clock position.  Every agent's numbers depend on its
own row only, so sharding changes no number (tested bit for bit).  Hooks
therefore take their agent count from ``ctx`` / ``pred``, not from
``self.num_agents``: within a shard ``ctx`` holds the shard's rows.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Context = Mapping[str, Tensor]
#: The true signal: a tensor ``[B, H]`` / ``[M, B, H]``, or a callable returning the rows
#: ``[B, H]`` / ``[rows, B, H]`` of an agent range (so per-agent truths are built one shard at a time).
Truth = Tensor | Callable[[slice], Tensor]

#: Default bound (bytes) on the temporaries the batched fast path holds at once.  Small enough that a
#: shard's tensors stay below glibc's largest mmap threshold (32 MiB): freed shards are reused from the
#: heap instead of being faulted in afresh from the kernel (at 50,000 EVs x 128 positions, 256 MiB
#: spent more time in page faults than in the computation; 32 MiB made the call 1.8x faster).
DEFAULT_MEMORY_BUDGET = 32 * 2**20


def check_memory_budget(memory_budget: int) -> int:
    """Return ``memory_budget`` as an int after checking it is a whole number of bytes ``>= 1``."""
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1:
        raise ValueError(f"memory_budget={memory_budget!r}; accepted: an integer number of bytes >= 1 "
                         f"(default {DEFAULT_MEMORY_BUDGET})")
    return memory_budget


def agent_shards(num_agents: int, bytes_per_agent: int, memory_budget: int) -> list[slice]:
    """Contiguous agent ranges of ``memory_budget // bytes_per_agent`` agents (at least one each)."""
    size = max(1, check_memory_budget(memory_budget) // max(1, int(bytes_per_agent)))
    return [slice(s, min(s + size, num_agents)) for s in range(0, num_agents, size)]


def stack_rows(blocks: Iterable[tuple[slice, Tensor]], num_rows: int) -> Tensor:
    """Join per-shard ``[rows, ...]`` tensors into ``[num_rows, ...]``.

    One block covering every row is returned as is.  Without gradients the
    blocks are copied into one preallocated output as they arrive (the peak
    holds the output and one block, not every block and a copy of them all);
    with gradients they are concatenated, keeping the autograd graph.
    """
    out: Tensor | None = None
    kept: list[Tensor] = []
    for sl, block in blocks:
        if sl.stop - sl.start == num_rows:
            return block
        if out is None and (kept or block.requires_grad):
            kept.append(block)
            continue
        if out is None:
            out = block.new_empty((num_rows, *block.shape[1:]))
        out[sl] = block
    return torch.cat(kept) if out is None else out


@dataclass
class Evaluation:
    """Result of evaluating a batch of predictions for a group of agents.

    All tensors are ``[M, B]`` except ``decision`` whose trailing shape depends on
    the agent kind (``[M, B]`` capacities for data centers, ``[M, B, H]`` binary
    schedules for slot-scheduling agents).
    """

    regret: Tensor
    cost: Tensor
    oracle_cost: Tensor
    decision: Tensor
    clamped: Tensor  # bool [M, B]: prediction raised to the agent's positive floor


class AgentGroup(ABC):
    """``M`` downstream agents of one kind.

    Subclasses implement :meth:`context`, :meth:`decide`, :meth:`cost` and
    :meth:`oracle_cost`; :meth:`evaluate` and :meth:`regret` combine them.
    ``horizon`` is the number of predicted steps an agent's decision uses.

    Attributes every group has (:data:`REQUIRED_ATTRIBUTES`; :meth:`check_attributes`
    names a missing one): ``kind``, ``num_agents``, ``horizon`` and ``names`` --
    the last three are set by ``super().__init__(num_agents, horizon)``.

    Optional hooks that let populations treat every kind alike (no
    ``isinstance`` checks anywhere): :meth:`context_lengths` (how long each
    agent's own context sequence is; at clock position ``i`` an agent uses
    element ``i mod N``) and :meth:`context_samples` (the per-agent values the
    paper's pairwise Wasserstein range is computed over).
    """

    kind: str = "agent"
    #: True when regret is differentiable in the prediction (pathwise gradients).
    differentiable: bool = False
    #: Attribute -> what it must hold; checked by :meth:`check_attributes` (subclasses extend it).
    REQUIRED_ATTRIBUTES: dict[str, str] = {
        "kind": "a short str naming the agent kind (class attribute)",
        "num_agents": "the number of agents, set by super().__init__(num_agents, horizon)",
        "horizon": "the predicted steps a decision uses, set by super().__init__(num_agents, horizon)",
        "names": "one name per agent, set by super().__init__(num_agents, horizon, names)",
    }
    #: What :meth:`context_samples` holds (used in Wasserstein report keys), e.g. ``"workload"``.
    context_name: str = "context"

    def __init__(self, num_agents: int, horizon: int, names: list[str] | None = None) -> None:
        if num_agents < 1:
            raise ValueError(f"{type(self).__name__}: num_agents must be >= 1, got {num_agents}")
        if horizon < 1:
            raise ValueError(f"{type(self).__name__}: horizon must be >= 1, got {horizon}")
        self.num_agents = int(num_agents)
        self.horizon = int(horizon)
        self.names = list(names) if names is not None else [f"{self.kind}_{m}" for m in range(num_agents)]
        if len(self.names) != self.num_agents:
            raise ValueError(f"{type(self).__name__}: {len(self.names)} names for {num_agents} agents")

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def context(self, index: Tensor) -> dict[str, Tensor]:
        """Per-agent contexts at time-step ``index`` ``[B]``: tensors ``[M, B, ...]``."""

    @abstractmethod
    def decide(self, pred: Tensor, ctx: Context) -> Tensor:
        """The agents' decisions given predicted signal ``pred``."""

    @abstractmethod
    def cost(self, decision: Tensor, truth: Tensor, ctx: Context) -> Tensor:
        """Cost ``[M, B]`` of ``decision`` under the true signal."""

    def oracle_cost(self, truth: Tensor, ctx: Context) -> Tensor:
        """Cost ``[M, B]`` of the best decision in hindsight (default: decide on the truth)."""
        return self.cost(self.decide(self._broadcast(truth), ctx), truth, ctx)

    def prepare(self, pred: Tensor) -> tuple[Tensor, Tensor]:
        """Validate / adapt a prediction before :meth:`decide`.

        Returns the prediction to use and a bool ``[M|1, B]`` mask of samples that
        were altered (e.g. raised to a positive floor).  Default: unchanged.
        """
        return pred, torch.zeros(pred.shape[:-1], dtype=torch.bool, device=pred.device)

    def score(self, pred: Tensor, decision: Tensor, truth: Tensor, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        """``(cost, oracle_cost, regret)`` of ``decision``; override for a more exact regret."""
        cost = self.cost(decision, truth, ctx)
        oracle = self.oracle_cost(truth, ctx)
        return cost, oracle, cost - oracle

    def context_lengths(self) -> list[int] | None:
        """Length of each agent's own context sequence, or ``None`` (no per-agent sequence).

        At clock position ``i`` agent ``m`` uses element ``i mod N_m`` of its
        sequence (:class:`agents.context.ContextTable`); the released code's
        context cycling differs, and ``benchmarks/bench_context_cycling.py``
        uses these lengths to replay it.
        """
        return None

    def context_samples(self) -> list[Tensor] | None:
        """Per-agent samples of the context that tells agents apart (for the Wasserstein range), or ``None``."""
        return None

    def check_attributes(self) -> None:
        """Raise a clear ``TypeError`` naming the first required attribute a subclass did not set."""
        who = type(self).__name__
        for name, what in self.REQUIRED_ATTRIBUTES.items():
            if not hasattr(self, name):
                raise TypeError(f"{who}: attribute {name!r} is not set; accepted: {what} (see docs/agents.md)")
        if not isinstance(self.kind, str) or not self.kind:
            raise TypeError(f"{who}: kind={self.kind!r}; accepted: a non-empty str")
        for name in ("num_agents", "horizon"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TypeError(f"{who}: {name}={v!r}; accepted: an int >= 1")
        if len(self.names) != self.num_agents:
            raise TypeError(f"{who}: {len(self.names)} names for {self.num_agents} agents; accepted: one per agent")

    def bytes_per_decision(self) -> int:
        """Memory model: peak bytes of temporaries per agent and clock position during :meth:`evaluate`.

        Sets the shard size (``memory_budget // (bytes_per_decision · B)`` agents).
        The default assumes a dozen float64 values per predicted step; kinds with
        a known footprint override it.
        """
        return 96 * self.horizon + 64

    # -------------------------------------------------------------- combined
    def evaluate(self, pred: Tensor, truth: Truth, index: Tensor, ctx: Context | None = None, *,
                 memory_budget: int | None = None) -> Evaluation:
        """Decide on ``pred``, score against ``truth``; see module doc for shapes and sharding.

        ``truth`` may also be a callable giving the truth rows of an agent range
        (:data:`Truth`).  ``memory_budget``: bytes of temporaries one shard of
        agents may hold (default :data:`DEFAULT_MEMORY_BUDGET`).
        """
        blocks = [ev for _, ev in self._blocks(pred, truth, index, ctx, memory_budget)]
        if len(blocks) == 1:
            return blocks[0]
        return Evaluation(
            regret=torch.cat([e.regret for e in blocks]),
            cost=torch.cat([e.cost for e in blocks]),
            oracle_cost=torch.cat([e.oracle_cost for e in blocks]),
            decision=torch.cat([e.decision for e in blocks]),
            clamped=torch.cat([e.clamped for e in blocks]),
        )

    def regret(self, pred: Tensor, truth: Truth, index: Tensor, *, memory_budget: int | None = None) -> Tensor:
        """Regret ``[M, B]`` of deciding on ``pred`` (see :meth:`evaluate`); only the regrets are kept."""
        return stack_rows(((sl, ev.regret) for sl, ev in self._blocks(pred, truth, index, None, memory_budget)),
                          self.num_agents)

    def _blocks(self, pred: Tensor, truth: Truth, index: Tensor, ctx: Context | None,
                memory_budget: int | None) -> Iterator[tuple[slice, Evaluation]]:
        """Evaluate shard by shard; yields ``(agent range, its Evaluation)``."""
        pred = self.check_pred(pred)
        if ctx is None:
            ctx = self.context(index)
        M, B = self.num_agents, int(pred.shape[1])
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
        for sl in agent_shards(M, self.bytes_per_decision() * B, budget):
            whole = sl.stop - sl.start == M
            y = self._check_truth(truth(sl) if callable(truth) else truth, pred)
            if whole:
                yield sl, self._evaluate_block(pred, y, ctx, M)
                continue
            rows = {k: v[sl] if v.dim() and v.shape[0] == M else v for k, v in ctx.items()}
            p = pred if pred.shape[0] == 1 else pred[sl]
            y = y if y.shape[0] == 1 or callable(truth) else y[sl]
            yield sl, self._evaluate_block(p, y, rows, sl.stop - sl.start)

    def _evaluate_block(self, pred: Tensor, truth: Tensor, ctx: Context, num_agents: int) -> Evaluation:
        used, clamped = self.prepare(pred)
        decision = self.decide(used, ctx)
        cost, oracle, regret = self.score(used, decision, truth, ctx)
        M, B = num_agents, pred.shape[1]
        return Evaluation(
            regret=regret,
            cost=cost,
            oracle_cost=oracle.expand(M, B),
            decision=decision,
            clamped=clamped.expand(M, B),
        )

    # ------------------------------------------------------------- checking
    def check_pred(self, pred: Tensor) -> Tensor:
        """Raise a clear error unless ``pred`` is ``[M|1, B, H]`` and finite."""
        if not isinstance(pred, Tensor):
            raise TypeError(f"{self.kind}: prediction must be a torch.Tensor, got {type(pred).__name__}")
        if pred.dim() != 3 or pred.shape[0] not in (1, self.num_agents) or pred.shape[2] != self.horizon:
            raise ValueError(
                f"{self.kind}: prediction has shape {tuple(pred.shape)}; accepted: "
                f"[{self.num_agents} or 1, B, {self.horizon}] (agents x samples x horizon)"
            )
        if not torch.isfinite(pred).all():
            raise ValueError(f"{self.kind}: prediction contains NaN or inf")
        return pred

    def _check_truth(self, truth: Tensor, pred: Tensor) -> Tensor:
        if truth.dim() == 2:
            truth = truth.unsqueeze(0)
        if truth.dim() != 3 or truth.shape[1] != pred.shape[1] or truth.shape[2] != self.horizon:
            raise ValueError(
                f"{self.kind}: truth has shape {tuple(truth.shape)}; accepted: [B, {self.horizon}] "
                f"or [M, B, {self.horizon}] with B = {pred.shape[1]}"
            )
        return truth

    def _broadcast(self, x: Tensor) -> Tensor:
        return x if x.dim() == 3 else x.unsqueeze(0)

    def describe(self) -> dict[str, Any]:
        """Plain-data summary used in logs and population reports."""
        return {"kind": self.kind, "num_agents": self.num_agents, "horizon": self.horizon}
