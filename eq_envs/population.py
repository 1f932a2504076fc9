"""Populations of downstream agents sharing one clock on one public signal.

A :class:`Population` binds a signal series (what the public model predicts),
one split of it (``"train"``, ``"val"`` or ``"test"``, see :mod:`eq_envs.splits`:
the rows where the split's predictions start, ``positions``), and one or more
:class:`agents.base.AgentGroup` s.  At clock position ``i`` agent ``m`` is
served at signal row ``t_m(i)``: the public input is ``signal[t - lookback :
t]``, the truth ``signal[t : t + horizon]``, and the agent uses its own context
at ``i`` (element ``i mod N_m`` of its context sequence of length ``N_m``,
:class:`agents.context.ContextTable`).

Two layouts say how agents map to time (``layout``):

* ``"shared"`` (default) -- every agent at the same hour, ``t_m(i) =
  positions[i]``: one public input and one prediction per clock position, the
  same for everybody, each agent cycling through its own context sequence.
  This is the paper's layout: its released code builds one data loader over
  the single signal series and every agent scores the *same* batch of
  predictions with its own context values (``../shared/DESIGN.md`` §8;
  ``docs/tradeoffs.md`` says how its context cycling differs from ours and
  that the difference does not matter).
* ``"chunked"`` -- a variant, not the paper's: the split's positions are cut
  into ``M`` contiguous stretches of equal length ``S = len(positions) // M``
  (the last ``len(positions) mod M`` positions are left out) and agent ``m``
  owns stretch ``m``: ``t_m(i) = positions[m S + i]``, ``0 <= i < S``.  Agents
  then see different public inputs (``observation`` returns ``[M, B, L]``)
  and differ in their stretch of the signal as well as in their context, so
  the public model can tell agents apart by season: an Equitable PM can favour
  one agent's stretch without that carrying over to later months.  Equal
  stretches mean that one pass over the clock scores every agent on each of
  its own positions exactly once (even weighting) and no stretch overlaps
  another.

:meth:`Population.evaluate` is the batched fast path (all agents x a batch of
clock positions in one call) that the environments and the trainer share.  It
evaluates each group's agents in shards whose temporaries fit
``memory_budget`` bytes (:data:`agents.base.DEFAULT_MEMORY_BUDGET`, 32 MiB,
unless set on the population or per call); sharding changes no number.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from torch import Tensor

from agents.base import DEFAULT_MEMORY_BUDGET, AgentGroup, Truth, check_memory_budget
from eq_envs.splits import PROTOCOLS, SPLITS

#: Past signal values the public model sees (the paper's sequence length).
LOOKBACK = 12
LAYOUTS = ("shared", "chunked")
#: The layout of populations built without one (the paper's, see the module docstring).
DEFAULT_LAYOUT = "shared"


@dataclass
class PopulationEvaluation:
    """Batched result over all agents of a population (tensors ``[M, B]``)."""

    regret: Tensor
    cost: Tensor
    oracle_cost: Tensor
    clamped: Tensor
    decisions: list[Tensor]  # one per group, in group order


@dataclass
class Population:
    """Agents of one or more kinds on one signal and split.

    Attributes:
        name: preset name (see :mod:`eq_envs.presets`).
        signal: the whole series (float64, preset units).
        split: ``"train"``, ``"val"`` or ``"test"``; ``split_range`` the ``[start, stop)``
            rows its windows lie in (with ``protocol="random"`` the whole series).
        groups: agent groups; agents are numbered group by group.
        weights: per-group regret weight for training objectives (the released
            code weights the mixed population's data-center / EV / phone regrets
            10 / 1 / 0.2); environment rewards are always the raw regret.
        horizon: predicted steps per decision (1 or 12).
        layout: ``"shared"`` or ``"chunked"`` (module docstring).
        positions: rows where the split's predictions start (sorted); ``None``:
            every row of ``split_range`` with a full input window and horizon.
        protocol: how the split was drawn (:mod:`eq_envs.splits`), for the record.
        memory_budget: bytes of temporaries the fast path may hold at once; each
            group's agents are evaluated in shards of
            ``memory_budget // (bytes_per_decision · B)`` agents (see
            :meth:`agents.base.AgentGroup.bytes_per_decision`).  Outputs
            (``[M, B]`` regrets) and contexts come on top.
    """

    name: str
    signal: np.ndarray
    split: str
    split_range: tuple[int, int]
    groups: list[AgentGroup]
    horizon: int
    weights: list[float] = field(default_factory=list)
    lookback: int = LOOKBACK
    layout: str = DEFAULT_LAYOUT
    positions: np.ndarray | None = None
    protocol: str = "time"
    signal_name: str = "carbon"
    units: str = ""
    notes: list[str] = field(default_factory=list)
    memory_budget: int = DEFAULT_MEMORY_BUDGET

    def __post_init__(self) -> None:
        try:
            check_memory_budget(self.memory_budget)
        except ValueError as exc:
            raise ValueError(f"population {self.name}: {exc}") from None
        if self.split not in SPLITS:
            raise ValueError(f"population {self.name}: split={self.split!r}; accepted: {SPLITS}")
        if not self.weights:
            self.weights = [1.0] * len(self.groups)
        if len(self.weights) != len(self.groups):
            raise ValueError(f"population {self.name}: {len(self.weights)} weights for {len(self.groups)} groups")
        for g in self.groups:
            g.check_attributes()
            if g.horizon != self.horizon:
                raise ValueError(f"population {self.name}: group {g.kind} has horizon {g.horizon}, "
                                 f"population horizon is {self.horizon}")
        start, stop = self.split_range
        if self.layout not in LAYOUTS:
            raise ValueError(f"population {self.name}: layout={self.layout!r}; accepted: {LAYOUTS}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"population {self.name}: protocol={self.protocol!r}; accepted: {PROTOCOLS}")
        if self.positions is None:
            rows = np.arange(start + self.lookback, stop - self.horizon + 1, dtype=np.int64)
        else:
            rows = np.asarray(self.positions, dtype=np.int64).reshape(-1)
            if rows.size and (rows.min() < self.lookback or rows.max() > len(self.signal) - self.horizon):
                raise ValueError(f"population {self.name}: positions must lie in [{self.lookback}, "
                                 f"{len(self.signal) - self.horizon}] (full input window and horizon)")
            if (np.diff(rows) <= 0).any():
                raise ValueError(f"population {self.name}: positions must be strictly increasing signal rows")
        if self.layout == "chunked":
            stretch = len(rows) // self.num_agents
            if stretch < 1:
                raise ValueError(f"population {self.name}: split {self.split} has {len(rows)} positions, fewer "
                                 f"than its {self.num_agents} agents; the chunked layout needs at least one each")
            self._rows = torch.from_numpy(rows[: stretch * self.num_agents].reshape(self.num_agents, stretch))
        else:
            if len(rows) < 1:
                raise ValueError(f"population {self.name}: split {self.split} has {stop - start} rows, fewer than "
                                 f"lookback + horizon + 1 = {self.lookback + self.horizon + 1}")
            self._rows = torch.from_numpy(rows)
        self._signal_t = torch.from_numpy(np.array(self.signal, dtype=np.float64, copy=True))
        self._signal_f32 = self._signal_t.float()

    # ---------------------------------------------------------------- sizes
    @property
    def num_agents(self) -> int:
        return sum(g.num_agents for g in self.groups)

    @property
    def num_steps(self) -> int:
        """Clock positions: the split's positions (shared) or one agent's stretch of them (chunked)."""
        return int(self._rows.shape[-1])

    @property
    def per_agent_inputs(self) -> bool:
        """True when agents see different public inputs (chunked layout)."""
        return self.layout == "chunked"

    @property
    def agent_names(self) -> list[str]:
        return [n for g in self.groups for n in g.names]

    @property
    def agent_weights(self) -> Tensor:
        """Per-agent regret weight ``[M]`` (float64)."""
        return torch.cat([torch.full((g.num_agents,), float(w), dtype=torch.float64)
                          for g, w in zip(self.groups, self.weights)])

    @property
    def signal_bounds(self) -> tuple[float, float]:
        return float(self.signal.min()), float(self.signal.max())

    @property
    def differentiable(self) -> bool:
        """True when every group's regret is differentiable (pathwise gradients apply)."""
        return all(g.differentiable for g in self.groups)

    # ------------------------------------------------------------- the clock
    def check_index(self, index: Tensor | Sequence[int] | int) -> Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_steps):
            raise IndexError(f"population {self.name}: clock index out of range [0, {self.num_steps}) "
                             f"for split {self.split}: got min {int(idx.min())}, max {int(idx.max())}")
        return idx

    def time_step(self, index: Tensor | Sequence[int] | int) -> Tensor:
        """Signal row where the prediction starts: ``[B]`` (shared) or ``[M, B]`` (chunked)."""
        idx = self.check_index(index)
        return self._rows[..., idx]

    def observation(self, index: Tensor | Sequence[int] | int) -> Tensor:
        """Public input (float32): ``[B, lookback]`` (shared) or ``[M, B, lookback]`` (chunked)."""
        t = self.time_step(index)
        return self._signal_f32[t.unsqueeze(-1) + torch.arange(-self.lookback, 0)]

    def agent_observation(self, index: Tensor | Sequence[int] | int, agent: int) -> Tensor:
        """Public input ``[B, lookback]`` that agent ``agent`` sees."""
        obs = self.observation(index)
        return obs[agent] if obs.dim() == 3 else obs

    def truth(self, index: Tensor | Sequence[int] | int) -> Tensor:
        """True signal (float64): ``[B, horizon]`` (shared) or ``[M, B, horizon]`` (chunked)."""
        return self._truth_at(self.time_step(index))

    def _truth_at(self, t: Tensor) -> Tensor:
        return self._signal_t[t.unsqueeze(-1) + torch.arange(self.horizon)]

    # ----------------------------------------------------------- fast path
    def evaluate(self, pred: Tensor, index: Tensor | Sequence[int] | int, *,
                 memory_budget: int | None = None) -> PopulationEvaluation:
        """Regret of every agent for predictions ``pred`` ``[M|1, B, H]`` at clock ``index`` ``[B]``.

        ``memory_budget`` overrides :attr:`memory_budget` for this call.
        """
        pred, idx = self._check(pred, index)
        parts = []
        for g, p, y in self._group_inputs(pred, idx):
            parts.append(g.evaluate(p, y, idx, memory_budget=self._budget(memory_budget)))
        if len(parts) == 1:
            e = parts[0]
            return PopulationEvaluation(e.regret, e.cost, e.oracle_cost, e.clamped, [e.decision])
        return PopulationEvaluation(
            regret=torch.cat([e.regret for e in parts]),
            cost=torch.cat([e.cost for e in parts]),
            oracle_cost=torch.cat([e.oracle_cost for e in parts]),
            clamped=torch.cat([e.clamped for e in parts]),
            decisions=[e.decision for e in parts],
        )

    def regret(self, pred: Tensor, index: Tensor | Sequence[int] | int, *,
               memory_budget: int | None = None) -> Tensor:
        """Regret ``[M, B]`` (see :meth:`evaluate`); decisions and costs are not kept."""
        pred, idx = self._check(pred, index)
        parts = [g.regret(p, y, idx, memory_budget=self._budget(memory_budget))
                 for g, p, y in self._group_inputs(pred, idx)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _budget(self, memory_budget: int | None) -> int:
        return self.memory_budget if memory_budget is None else check_memory_budget(memory_budget)

    def _check(self, pred: Tensor, index: Tensor | Sequence[int] | int) -> tuple[Tensor, Tensor]:
        idx = self.check_index(index)
        if not isinstance(pred, Tensor):
            pred = torch.as_tensor(np.asarray(pred))
        if pred.dim() != 3 or pred.shape[0] not in (1, self.num_agents) or pred.shape[1] != idx.numel() \
                or pred.shape[2] != self.horizon:
            raise ValueError(f"population {self.name}: prediction has shape {tuple(pred.shape)}; accepted: "
                             f"[{self.num_agents} or 1, {idx.numel()}, {self.horizon}] (agents x batch x horizon)")
        return pred, idx

    def _group_inputs(self, pred: Tensor, idx: Tensor) -> Iterator[tuple[AgentGroup, Tensor, Truth]]:
        """Per group: ``(group, its prediction rows, its truth)``.

        Chunked layout: the truth is per agent (``[M, B, H]`` float64), so each
        group gets a callable that builds the rows of one shard of agents at a time.
        """
        t = self.time_step(idx)
        offset = 0
        for g in self.groups:
            p = pred if pred.shape[0] == 1 else pred[offset: offset + g.num_agents]
            if t.dim() == 1:
                y: Truth = self._truth_at(t)
            else:
                def y(rows: slice, t_group: Tensor = t[offset: offset + g.num_agents]) -> Tensor:
                    return self._truth_at(t_group[rows])
            yield g, p, y
            offset += g.num_agents

    # --------------------------------------------------------------- report
    def describe(self) -> dict:
        """Plain-data summary: sizes, split, groups, Wasserstein ranges."""
        return {
            "name": self.name, "split": self.split, "num_agents": self.num_agents, "num_steps": self.num_steps,
            "horizon": self.horizon, "layout": self.layout, "protocol": self.protocol, "signal": self.signal_name,
            "units": self.units,
            "groups": [g.describe() for g in self.groups], "weights": list(self.weights), "notes": list(self.notes),
        }


def pairwise_wasserstein_range(samples: Sequence[np.ndarray]) -> tuple[float, float]:
    """Min and max 1-Wasserstein distance over all pairs of agents' context samples.

    The paper calls a population "similar" or "different" by this range (data
    centers: workloads; EVs: energy needs ``D - I``).
    """
    if len(samples) < 2:
        raise ValueError("pairwise_wasserstein_range needs at least two agents")
    lo, hi = math.inf, -math.inf
    for a, b in combinations(samples, 2):  # running extremes: M^2 / 2 distances, none of them kept
        d = wasserstein_distance(a, b)
        lo, hi = min(lo, d), max(hi, d)
    return float(lo), float(hi)


def wasserstein_ranges(pop: Population) -> dict[str, tuple[float, float]]:
    """Pairwise Wasserstein range per group, over each group's :meth:`~agents.base.AgentGroup.context_samples`.

    Keys are ``"<kind> <context_name>"`` (e.g. ``"ev need (kWh)"``); groups without
    samples or with a single agent are left out.
    """
    out: dict[str, tuple[float, float]] = {}
    for g in pop.groups:
        samples = g.context_samples()
        if samples is not None and len(samples) >= 2:
            out[f"{g.kind} {g.context_name}"] = pairwise_wasserstein_range(
                [np.asarray(torch.as_tensor(s).double().reshape(-1)) for s in samples])
    return out
