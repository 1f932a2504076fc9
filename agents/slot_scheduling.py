"""Binary slot-scheduling agents: charge in the cheapest slots of a window.

The shared structure of the paper's EV (Eq. 13) and phone (App. A.4) agents:
over a window of ``T`` slots, an agent that needs ``k`` slots at a constant
energy per slot ``r`` solves

    min_x  sum_t r * E_t * x_t   s.t.  sum_t x_t >= k,  x_t in {0, 1},
                                       x_t = 0 for unavailable slots

(the energy constraint ``sum_t r x_t >= need`` with ``k = ceil(need / r)``).
Its exact solution is: the ``k`` cheapest available slots, plus every further
available slot whose signal is negative (being paid to consume lowers cost).
For a non-negative signal -- every signal of the "paper" preset -- that is the
paper's top-k rule.  The decision uses the *predicted* signal, the cost the
*true* one; regret is piecewise constant in the prediction.

This module is the batched fast path; :mod:`agents.pulp_backend` solves the same
problem (and its general form with per-slot power caps) as a PuLP MILP, and the
tests check the two agree.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from agents.base import AgentGroup, Context
from agents.context import ContextTable


class SlotSchedulingAgent(AgentGroup):
    """``M`` agents choosing binary charging schedules over ``horizon`` slots.

    Args:
        slots: per-agent sequences of the number of slots ``k`` needed
            (integers ``0..horizon``; clock position ``t`` uses ``t mod len``).
        rate: per-agent sequences (or one value per agent, or one value) of the
            energy delivered per charged slot ``r > 0``; cost is ``r * sum E_t x_t``.
        available: optional per-agent sequences of the number of available slots
            at the start of the window (``1..horizon``); later slots are
            unavailable (the car has left).  ``k`` above it is capped and the
            shortfall reported by :meth:`unmet_slots`.
    """

    kind = "slots"
    differentiable = False
    context_name = "slots"

    def __init__(self, slots: Sequence[Sequence[float]] | Tensor, rate: float | Sequence | Tensor = 1.0,
                 horizon: int = 12, available: Sequence[Sequence[float]] | Tensor | None = None,
                 names: list[str] | None = None) -> None:
        table = ContextTable(slots, name="slots")
        super().__init__(table.num_agents, horizon, names)
        k = table.values
        if (k != k.round()).any() or (k < 0).any() or (k > horizon).any():
            m, i = ((k != k.round()) | (k < 0) | (k > horizon)).nonzero()[0].tolist()
            raise ValueError(f"{self.kind}: slots needed by agent {m} at position {i} is {float(k[m, i])}; "
                             f"accepted: integers 0..{horizon}")
        self.slots = table
        self.rate = _as_table(rate, self.num_agents, "rate")
        if (self.rate.values <= 0).any():
            m, i = (self.rate.values <= 0).nonzero()[0].tolist()
            if i < int(self.rate.lengths[m]):
                raise ValueError(f"{self.kind}: rate of agent {m} at position {i} is "
                                 f"{float(self.rate.values[m, i])}; accepted: > 0")
        self.available = None if available is None else ContextTable(available, name="available")
        if self.available is not None:
            a = self.available.values
            if self.available.num_agents != self.num_agents:
                raise ValueError(f"{self.kind}: available has {self.available.num_agents} agents, "
                                 f"slots has {self.num_agents}")
            bad = ((a < 1) | (a > horizon) | (a != a.round())) & _valid_mask(self.available)
            if bad.any():
                m, i = bad.nonzero()[0].tolist()
                raise ValueError(f"{self.kind}: available slots of agent {m} at position {i} is "
                                 f"{float(a[m, i])}; accepted: integers 1..{horizon}")

    # ---------------------------------------------------------------- context
    def context_lengths(self) -> list[int]:
        return [int(n) for n in self.slots.lengths]

    def context_samples(self) -> list[Tensor]:
        return [torch.as_tensor(s) for s in self.slots.sequences()]

    def context(self, index: Tensor) -> dict[str, Tensor]:
        k = self.slots.at(index)
        ctx = {"slots": k, "rate": self.rate.at(index)}
        if self.available is not None:
            avail = self.available.at(index)
            ctx["available"] = avail
            ctx["slots"] = torch.minimum(k, avail)
        return ctx

    def unmet_slots(self, index: Tensor) -> Tensor:
        """Slots needed beyond the available window ``[M, B]`` (0 when all is met)."""
        if self.available is None:
            return torch.zeros(self.num_agents, len(index))
        return (self.slots.at(index) - self.available.at(index)).clamp_min(0)

    # -------------------------------------------------------------- decisions
    def _availability(self, ctx: Context, device: torch.device) -> Tensor | None:
        if "available" not in ctx:
            return None
        t = torch.arange(self.horizon, device=device)
        return t.view(1, 1, -1) < ctx["available"].unsqueeze(-1)  # [M, B, T]

    def decide(self, pred: Tensor, ctx: Context) -> Tensor:
        """Binary schedule ``[M, B, T]`` (float 0/1): k cheapest available slots + negative ones.

        Ties go to the earlier slot.  A prediction shared by all agents
        (``[1, B, T]``: the truth in the shared layout, a deterministic baseline)
        is ranked once for everybody (:func:`prefix_ranks`); per-agent
        predictions are sorted per agent.
        """
        pred = pred.detach()
        M, B = ctx["slots"].shape
        avail = self._availability(ctx, pred.device)
        if pred.shape[0] == 1 and M > 1:
            table = prefix_ranks(pred[0])  # [B, T, T + 1]
            if avail is None:
                ranks = table[..., self.horizon]  # [B, T]: ranks among all slots, shared
            else:  # rank of slot t among the agent's available slots 0..a-1
                ranks = table[torch.arange(B, device=pred.device).view(1, B, 1),
                              torch.arange(self.horizon, device=pred.device).view(1, 1, -1),
                              ctx["available"].long().unsqueeze(-1)]  # [M, B, T]
        else:
            pred = pred.expand(M, B, self.horizon)
            if avail is not None:
                pred = torch.where(avail, pred, torch.full_like(pred, float("inf")))
            # rank of every slot in ascending predicted order (stable: ties go to the earlier slot)
            order = torch.argsort(pred, dim=-1, stable=True)
            ranks = torch.empty_like(order)
            ranks.scatter_(-1, order, torch.arange(self.horizon, device=pred.device).expand_as(order))
        chosen = ranks < ctx["slots"].unsqueeze(-1).to(ranks.dtype)
        chosen = chosen | (pred < 0)
        if avail is not None:
            chosen = chosen & avail
        return chosen.to(torch.float64)

    def cost(self, decision: Tensor, truth: Tensor, ctx: Context) -> Tensor:
        truth = self._broadcast(truth).to(torch.float64)
        return ctx["rate"] * (decision * truth).sum(dim=-1)

    def score(self, pred: Tensor, decision: Tensor, truth: Tensor, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        truth3 = self._broadcast(truth)
        oracle_x = self.decide(truth3, ctx)
        cost = self.cost(decision, truth3, ctx)
        oracle = self.cost(oracle_x, truth3, ctx)
        # regret as one sum over slots of the schedule difference: identical schedules
        # give exactly 0 (no cancellation error between two large sums).
        regret = ctx["rate"] * ((decision - oracle_x) * truth3.to(torch.float64)).sum(-1)
        return cost, oracle, regret

    def bytes_per_decision(self) -> int:
        # Per slot, at the peak of score(): the decision and the oracle decision (float64), two float64
        # temporaries of the regret sum, and the sort's int64 order and ranks of the decision before it.
        return 48 * self.horizon

    def describe(self) -> dict:
        d = super().describe()
        k = torch.cat([torch.as_tensor(s) for s in self.slots.sequences()])
        d.update(slots_min=int(k.min()), slots_max=int(k.max()), has_window=self.available is not None)
        return d


def prefix_ranks(pred: Tensor) -> Tensor:
    """Ranks of one prediction per position among every prefix of slots: ``[B, T, T + 1]``.

    ``out[b, t, a]`` is the number of slots ``s < a`` ranked before slot ``t``
    in ascending predicted order, ties going to the earlier slot (the ranks a
    stable sort gives), so ``out[b, t, T]`` is slot ``t``'s rank among all
    slots and, for ``t < a``, ``out[b, t, a]`` its rank among the first ``a``
    (the available) slots.  ``pred`` is ``[B, T]``; the table costs
    ``B·T·(T+1)`` small integers whatever the number of agents sharing it.
    """
    T = pred.shape[-1]
    slot = torch.arange(T, device=pred.device)
    p_t, p_s = pred.unsqueeze(-1), pred.unsqueeze(-2)  # [B, T(t), 1], [B, 1, T(s)]
    before = (p_s < p_t) | ((p_s == p_t) & (slot.view(1, 1, T) < slot.view(1, T, 1)))  # [B, T(t), T(s)]
    counts = torch.cumsum(before, dim=-1, dtype=torch.int16 if T < 2**15 else torch.long)
    return torch.nn.functional.pad(counts, (1, 0))


def _valid_mask(table: ContextTable) -> Tensor:
    return torch.arange(table.values.shape[1]).unsqueeze(0) < table.lengths.unsqueeze(1)


def _as_table(values: float | Sequence | Tensor, num_agents: int, name: str) -> ContextTable:
    """A per-agent constant or per-agent sequence as a :class:`ContextTable`."""
    if isinstance(values, (int, float)):
        return ContextTable([[float(values)]] * num_agents, name=name)
    seqs = list(values) if not isinstance(values, Tensor) else [values[m] for m in range(values.shape[0])]
    if len(seqs) != num_agents:
        raise ValueError(f"{name}: {len(seqs)} entries for {num_agents} agents; accepted: one value, "
                         f"one per agent, or one sequence per agent")
    seqs = [[float(s)] if isinstance(s, (int, float)) or (isinstance(s, Tensor) and s.dim() == 0) else s
            for s in seqs]
    return ContextTable(seqs, name=name)
