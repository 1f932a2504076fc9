"""A contiguous range of a population's agents as a population of its own (data-parallel shards).

Data-parallel training (:mod:`trainers.distributed`) gives each worker a
contiguous range of the agents, numbered as in the whole population (group by
group).  :func:`population_shard` builds the population of that range: the same
signal, split and clock, and groups that are :class:`AgentRange` views of the
whole population's groups.  A view computes its rows of the group's contexts
and decides and scores through the group's own hooks, so every agent of the
shard gets exactly the numbers it gets in the whole population (tested): the
hooks take their agent count from ``ctx`` and ``pred``, never from
``num_agents`` (the contract :mod:`agents.base` states for sharded evaluation).

Layouts: in the shared layout a shard sees the same public inputs as the whole
population; in the chunked layout agent ``m`` owns the ``m``-th stretch of the
split's positions, and the shard keeps each of its agents' own stretch.

A group that scores itself by overriding :meth:`agents.base.AgentGroup.evaluate`
(the Gymnasium-env group, which steps one env per agent) cannot be viewed this
way; :func:`check_shardable` names it.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from agents.base import AgentGroup, Context
from eq_envs.population import Population


class AgentRange(AgentGroup):
    """Agents ``rows`` (a contiguous ``slice``) of ``group``, deciding and scoring through ``group``'s hooks."""

    def __init__(self, group: AgentGroup, rows: slice) -> None:
        start, stop, _ = rows.indices(group.num_agents)
        if stop <= start:
            raise ValueError(f"{group.kind}: agent range {start}..{stop} of {group.num_agents} agents is empty")
        self.group, self.rows = group, slice(start, stop)
        self.kind, self.differentiable, self.context_name = group.kind, group.differentiable, group.context_name
        super().__init__(stop - start, group.horizon, group.names[start:stop])

    def context(self, index: Tensor) -> dict[str, Tensor]:
        M = self.group.num_agents
        return {k: v[self.rows] if v.dim() and v.shape[0] == M else v for k, v in self.group.context(index).items()}

    def prepare(self, pred: Tensor) -> tuple[Tensor, Tensor]:
        return self.group.prepare(pred)

    def decide(self, pred: Tensor, ctx: Context) -> Tensor:
        return self.group.decide(pred, ctx)

    def cost(self, decision: Tensor, truth: Tensor, ctx: Context) -> Tensor:
        return self.group.cost(decision, truth, ctx)

    def oracle_cost(self, truth: Tensor, ctx: Context) -> Tensor:
        return self.group.oracle_cost(truth, ctx)

    def score(self, pred: Tensor, decision: Tensor, truth: Tensor, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        return self.group.score(pred, decision, truth, ctx)

    def bytes_per_decision(self) -> int:
        return self.group.bytes_per_decision()  # the memory budget shards the view as it shards the group

    def describe(self) -> dict:
        return {**self.group.describe(), "num_agents": self.num_agents, "agents": [self.rows.start, self.rows.stop]}


def check_shardable(pop: Population) -> None:
    """Raise a one-line ``ValueError`` naming a group of ``pop`` that scores itself (cannot be sharded)."""
    for g in pop.groups:
        if type(g).evaluate is not AgentGroup.evaluate:
            raise ValueError(f"population {pop.name}: agent group {g.kind!r} ({type(g).__name__}) scores its agents "
                             f"itself (it overrides evaluate), so its agents cannot be split over workers; accepted: "
                             f"groups that decide through the AgentGroup hooks (context, decide, cost)")


def shard_ranges(num_agents: int, shards: int) -> list[slice]:
    """``shards`` contiguous agent ranges covering ``num_agents``, sizes differing by at most one."""
    if not 1 <= shards <= num_agents:
        raise ValueError(f"{shards} shards of {num_agents} agents; accepted: 1 to {num_agents} shards")
    bounds = [num_agents * s // shards for s in range(shards + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def population_shard(pop: Population, agents: slice) -> Population:
    """The population of agents ``agents`` (a contiguous range) of ``pop``; see the module docstring."""
    start, stop, _ = agents.indices(pop.num_agents)
    if stop <= start:
        raise ValueError(f"population {pop.name}: agent range {start}..{stop} of {pop.num_agents} agents is empty")
    check_shardable(pop)
    groups, weights, offset = [], [], 0
    for g, w in zip(pop.groups, pop.weights):
        lo, hi = max(start, offset), min(stop, offset + g.num_agents)
        if lo < hi:
            whole = hi - lo == g.num_agents
            groups.append(g if whole else AgentRange(g, slice(lo - offset, hi - offset)))
            weights.append(w)
        offset += g.num_agents
    positions = pop.positions
    if pop.per_agent_inputs:  # chunked: the shard's agents keep their own stretches, in order
        rows = pop.time_step(torch.arange(pop.num_steps))  # [M, S]
        positions = rows[start:stop].reshape(-1).numpy()
    return dataclasses.replace(pop, groups=groups, weights=weights, positions=positions)
