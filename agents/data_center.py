"""Data-center capacity agent (paper Eq. 12).

Each data center ``m`` with workload ``w`` provisions capacity ``p > w`` to
minimise ``cost(p; c) = p*c + lambda_m * w / (p - w)``, carbon plus queueing
delay.  For a predicted carbon intensity ``c_hat > 0`` the optimum is
``p = w + sqrt(lambda w / c_hat)`` and, scored under the true ``c``, the regret
has the closed form ``sqrt(lambda w) * (sqrt(c) - sqrt(c_hat))**2 / sqrt(c_hat)``.

Regret is smooth in ``c_hat`` (pathwise gradients work) but blows up as
``c_hat -> 0``: predictions below ``min_prediction`` are raised to it and the
raise is reported in :attr:`agents.base.Evaluation.clamped`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from agents.base import AgentGroup, Context
from agents.context import ContextTable, agent_values

#: How a multi-step prediction becomes the single carbon value a data center uses.
REDUCTIONS = ("first", "mean")


class DataCenterAgent(AgentGroup):
    """``M`` data centers with workload sequences and delay weights ``lambda``.

    Args:
        workloads: one workload sequence per agent (clock position ``t`` uses
            element ``t mod len``); values must be >= 0.
        lam: delay weight, one value or one per agent (> 0).
        horizon: predicted steps received; with ``horizon > 1`` the agent uses
            ``reduce`` of the predicted (and true) steps, as the paper's mixed
            population does with the mean of 12 steps.
        min_prediction: positive floor for predicted carbon (recorded when used).
    """

    kind = "datacenter"
    differentiable = True
    context_name = "workload"

    def __init__(self, workloads: Sequence[Sequence[float]] | Tensor, lam: float | Sequence[float] = 2.0,
                 horizon: int = 1, reduce: str = "mean", min_prediction: float = 1e-3,
                 names: list[str] | None = None) -> None:
        table = ContextTable(workloads, name="workload")
        super().__init__(table.num_agents, horizon, names)
        if (table.values < 0).any():
            m, i = (table.values < 0).nonzero()[0].tolist()
            raise ValueError(f"datacenter: workload of agent {m} at position {i} is negative "
                             f"({float(table.values[m, i])}); accepted: >= 0")
        if reduce not in REDUCTIONS:
            raise ValueError(f"datacenter: reduce={reduce!r}; accepted: {REDUCTIONS}")
        if not min_prediction > 0:
            raise ValueError(f"datacenter: min_prediction must be > 0, got {min_prediction}")
        self.workloads = table
        self.lam = agent_values(lam, self.num_agents, "datacenter lambda")
        if (self.lam <= 0).any():
            raise ValueError("datacenter: lambda must be > 0 for every agent")
        self.reduce = reduce
        self.min_prediction = float(min_prediction)

    def context_lengths(self) -> list[int]:
        return [int(n) for n in self.workloads.lengths]

    def context_samples(self) -> list[Tensor]:
        return [torch.as_tensor(s) for s in self.workloads.sequences()]

    def context(self, index: Tensor) -> dict[str, Tensor]:
        w = self.workloads.at(index)  # [M, B]
        return {"workload": w, "lam": self.lam.unsqueeze(1).expand_as(w)}

    def _carbon(self, signal: Tensor) -> Tensor:
        """``[M|1, B, H]`` -> ``[M|1, B]`` carbon value the decision uses."""
        if self.horizon == 1 or self.reduce == "first":
            return signal[..., 0]
        return signal.mean(dim=-1)

    def prepare(self, pred: Tensor) -> tuple[Tensor, Tensor]:
        c = self._carbon(pred)
        clamped = c < self.min_prediction
        return c.clamp_min(self.min_prediction).unsqueeze(-1), clamped

    def decide(self, pred: Tensor, ctx: Context) -> Tensor:
        """Capacity ``p = w + sqrt(lambda w / c_hat)`` ``[M, B]``."""
        c_hat = self._carbon(pred) if pred.shape[-1] == self.horizon else pred[..., 0]
        w, lam = ctx["workload"], ctx["lam"]
        return w + torch.sqrt(lam * w / c_hat)

    def cost(self, decision: Tensor, truth: Tensor, ctx: Context) -> Tensor:
        c = self._carbon(self._broadcast(truth))
        w, lam = ctx["workload"], ctx["lam"]
        slack = decision - w
        # w = 0: no work, no delay term (0/0 taken as 0) and the optimum p = 0.
        delay = torch.where(w > 0, lam * w / torch.where(w > 0, slack, torch.ones_like(slack)), torch.zeros_like(w))
        return decision * c + delay

    def oracle_cost(self, truth: Tensor, ctx: Context) -> Tensor:
        # The true optimum, in closed form: p* c + lambda w/(p* - w) = w c + 2 sqrt(lambda w c).
        c = self._carbon(self._broadcast(truth))
        w, lam = ctx["workload"], ctx["lam"]
        return w * c + 2.0 * torch.sqrt(lam * w * c)

    def score(self, pred: Tensor, decision: Tensor, truth: Tensor, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        cost = self.cost(decision, truth, ctx)
        oracle = self.oracle_cost(truth, ctx)
        # The closed form avoids the cancellation of cost - oracle (exactly 0 at c_hat = c).
        c_hat = self._carbon(pred)
        c = self._carbon(self._broadcast(truth))
        regret = torch.sqrt(ctx["lam"] * ctx["workload"]) * (c.sqrt() - c_hat.sqrt()) ** 2 / c_hat.sqrt()
        return cost, oracle, regret

    def bytes_per_decision(self) -> int:
        # A handful of float64 [M, B] temporaries (capacity, delay, costs, the closed-form regret) plus a
        # per-agent truth of H steps in the chunked layout; measured about 50 bytes at H = 1.
        return 8 * self.horizon + 64

    def describe(self) -> dict:
        d = super().describe()
        d.update(lam_min=float(self.lam.min()), lam_max=float(self.lam.max()), reduce=self.reduce,
                 min_prediction=self.min_prediction)
        return d
