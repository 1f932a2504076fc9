"""PuLP backend: agents whose decision is a (mixed-integer) linear program.

A new agent kind writes its optimisation model once, for one instance, in
:meth:`PulpAgentGroup.formulate` (a ``pulp.LpProblem`` and the list of decision
variables) and its batched cost in torch; the backend solves the model for
every agent x sample instance (``M x B`` solves with CBC, the solver bundled with
PuLP), collects the decisions into a tensor and scores them like any other
agent.  It is exact but slow; agents with a closed form or a sorting rule
(data centers, :mod:`agents.slot_scheduling`) use a fast path and are checked
against their PuLP twin in the tests.
"""
from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import pulp
import torch
from torch import Tensor

from agents.base import AgentGroup, Context
from agents.context import ContextTable
from agents.ev_charging import SLOT_TOLERANCE


def default_solver() -> pulp.LpSolver:
    """CBC as bundled with PuLP 3 (its deprecation notice about PuLP 4 is silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False)


class SolverError(RuntimeError):
    """A PuLP model did not solve to optimality."""


class PulpAgentGroup(AgentGroup):
    """Base for agents decided by a PuLP model, one solve per (agent, sample).

    Subclasses implement :meth:`context`, :meth:`formulate` and :meth:`cost`.
    """

    #: Number of decision variables per instance (the decision tensor's last axis).
    decision_size: int

    def __init__(self, num_agents: int, horizon: int, names: list[str] | None = None,
                 solver: pulp.LpSolver | None = None) -> None:
        super().__init__(num_agents, horizon, names)
        self.solver = solver if solver is not None else default_solver()

    @abstractmethod
    def formulate(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> tuple[pulp.LpProblem, list[pulp.LpVariable]]:
        """The model for one instance: ``signal`` ``[H]`` and this instance's context values."""

    def solve_one(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> np.ndarray:
        """Solve one instance; returns the decision variables' values."""
        problem, variables = self.formulate(signal, ctx)
        status = problem.solve(self.solver)
        if pulp.LpStatus[status] != "Optimal":
            raise SolverError(f"{self.kind}: PuLP status {pulp.LpStatus[status]!r} for signal={signal.tolist()}, "
                              f"context={ {k: np.asarray(v).tolist() for k, v in ctx.items()} }")
        return np.array([v.value() or 0.0 for v in variables], dtype=np.float64)

    def decide(self, pred: Tensor, ctx: Context) -> Tensor:
        M, B = next(iter(ctx.values())).shape[:2]
        signal = pred.detach().expand(M, B, pred.shape[-1]).cpu().double().numpy()
        ctx_np = {k: v.detach().cpu().numpy() for k, v in ctx.items()}
        out = np.empty((M, B, self.decision_size), dtype=np.float64)
        for m in range(M):
            for b in range(B):
                out[m, b] = self.solve_one(signal[m, b], {k: v[m, b] for k, v in ctx_np.items()})
        return torch.from_numpy(out)


class SlotMILPAgent(PulpAgentGroup):
    """General slot scheduling as a MILP: per-slot power caps and unavailable slots.

    Energy per charged slot is ``e_t = rate * cap_t`` (``cap_t`` in (0, 1] is the
    agent's per-slot power cap as a fraction of its rate, 0 where unavailable):

        min  sum_t E_t e_t x_t   s.t.  sum_t e_t x_t >= min(need, sum_t e_t),  x_t in {0,1}

    With every ``cap_t = 1`` this is exactly :class:`agents.ev_charging.EVChargingAgent`
    (the k cheapest slots plus any negative ones), which the tests check.

    Args:
        needs: per-agent sequences of energy needed (>= 0).
        rates: per-agent sequences (aligned with ``needs``) or one value per agent.
        caps: ``[M, T]`` per-slot cap fractions in [0, 1] (default all 1).
        windows: optional per-agent sequences of available slots from the start.
    """

    kind = "ev_milp"

    def __init__(self, needs: Sequence[Sequence[float]], rates: Sequence | float, horizon: int = 12,
                 caps: np.ndarray | None = None, windows: Sequence[Sequence[float]] | None = None,
                 names: list[str] | None = None, solver: pulp.LpSolver | None = None) -> None:
        self.needs = ContextTable(needs, name="need")
        super().__init__(self.needs.num_agents, horizon, names, solver)
        if isinstance(rates, (int, float)):
            rates = [[float(rates)]] * self.num_agents
        self.rates = ContextTable([np.atleast_1d(np.asarray(r, dtype=np.float64)) for r in rates], name="rate")
        caps = np.ones((self.num_agents, horizon)) if caps is None else np.asarray(caps, dtype=np.float64)
        if caps.shape != (self.num_agents, horizon) or not np.isfinite(caps).all() or (caps < 0).any() or (caps > 1).any():
            raise ValueError(f"{self.kind}: caps has shape {caps.shape}; accepted: [{self.num_agents}, {horizon}] "
                             "fractions in [0, 1]")
        self.caps = torch.from_numpy(caps)
        self.windows = None if windows is None else ContextTable(windows, name="window")
        self.decision_size = horizon

    def context(self, index: Tensor) -> dict[str, Tensor]:
        need, rate = self.needs.at(index), self.rates.at(index)
        caps = self.caps.unsqueeze(1).expand(-1, len(index), -1).clone()  # [M, B, T]
        if self.windows is not None:
            avail = torch.clamp(torch.floor(self.windows.at(index)), 1, self.horizon)
            caps = torch.where(torch.arange(self.horizon).view(1, 1, -1) < avail.unsqueeze(-1), caps,
                               torch.zeros_like(caps))
        return {"need": need, "rate": rate, "slot_energy": rate.unsqueeze(-1) * caps}

    def formulate(self, signal: np.ndarray, ctx: dict[str, np.ndarray]) -> tuple[pulp.LpProblem, list[pulp.LpVariable]]:
        e = ctx["slot_energy"]
        T = len(signal)
        problem = pulp.LpProblem("slot_schedule", pulp.LpMinimize)
        x = [problem.add_variable(f"x{t}", cat=pulp.LpBinary) for t in range(T)]
        problem += pulp.lpSum(float(signal[t] * e[t]) * x[t] for t in range(T))
        target = min(float(ctx["need"]), float(e.sum())) - SLOT_TOLERANCE * float(ctx["rate"])
        problem += pulp.lpSum(float(e[t]) * x[t] for t in range(T)) >= target
        for t in range(T):
            if e[t] == 0:
                problem += x[t] == 0
        return problem, x

    def cost(self, decision: Tensor, truth: Tensor, ctx: Context) -> Tensor:
        truth = self._broadcast(truth).to(torch.float64)
        return (decision * ctx["slot_energy"] * truth).sum(-1)
