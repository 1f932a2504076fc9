r"""Decision-focused learning for slot agents: a PyEPO solver of the top-k slot problem and the SPO+ / PFYL losses.

The EV and phone agents (:mod:`agents.slot_scheduling`) decide by a linear
program in the predicted signal: agent ``m`` at clock position ``i`` needs
``k`` of the ``H`` slots and solves

    min_x  ĉ·x   s.t.  Σ_t x_t >= k,  0 <= x_t <= 1,  x_t = 0 for unavailable slots,

whose optimum (the constraint matrix is totally unimodular) is the ``k``
cheapest available slots plus every further available slot of negative cost.
Decision-focused learning trains the predictor through this program with a
surrogate of the regret; PyEPO (Tang & Khalil, 2022) implements the two
standard ones, which this module feeds:

* **SPO+** (Elmachtoub & Grigas, 2022, Management Science 68(1)):
  ``ℓ(ĉ, c) = -z(2ĉ - c) + 2ĉ·w*(c) - z*(c)``, a convex upper bound of the
  regret with subgradient ``2 (w*(c) - w*(2ĉ - c))``;
* **perturbed Fenchel-Young** (Berthet et al., 2020, NeurIPS):
  ``ℓ(ĉ, w*) = E_Z[z(ĉ + σZ)]``-based Fenchel-Young loss with gradient
  ``w*(c) - E_Z[w*(ĉ + σZ)]``, ``Z`` standard normal, ``n_samples`` draws.

**One solver for every instance.**  PyEPO's losses call one
:class:`pyepo.model.opt.optModel` with a cost vector per instance
(``setObj(c)`` then ``solve()``); only the objective changes between calls.
Our instances also differ in ``k`` and in the available slots, so an instance
is written as ``2H`` costs (:func:`encode`): the ``H`` real slots (unavailable
ones at a cost ``+2·big`` that is never chosen) followed by ``H`` *dummy*
slots, ``H - k`` of them at ``-big`` and ``k`` at ``+big``, with the one fixed
constraint ``Σ x >= H``.  The optimum takes the ``H - k`` cheap dummies and
then exactly the real optimum above (``k`` cheapest available slots plus the
negative ones), as long as ``big`` exceeds every real cost (chosen per batch).
The dummy costs are the same in the predicted and the true vector, so their
terms cancel in both losses, and :attr:`TopKSlotModel.c_pred_index` tells
PyEPO's perturbation to leave them alone.  Tested against the agents' own
fast path (:meth:`agents.slot_scheduling.SlotSchedulingAgent.decide`) and
against an LP solver.

**Scale.**  The cost of a schedule is ``rate · signal``; a positive factor
does not change the decision, so the losses are taken on the signal scale
(``ĉ = ŷ``, ``c = y``: the perturbation ``σ`` is in signal units) and each
instance's loss is multiplied by its rate and its agent's regret weight.
For SPO+ this is exactly SPO+ of the cost vectors ``rate · ŷ`` (the loss is
positively homogeneous); for the Fenchel-Young loss it is the loss of
``rate · ŷ`` with perturbation scale ``rate · σ``.

Following PyEPO's split of solvers, data, losses and metrics, nothing here
imports training code: :mod:`trainers.baselines.dfl_training` is the loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pyepo.func import SPOPlus, perturbedFenchelYoung
from pyepo.model.opt import optModel
from torch import Tensor

from agents.slot_scheduling import SlotSchedulingAgent
from eq_envs.population import Population

LOSSES = ("spo+", "pfyl")


class TopKSlotModel(optModel):
    """The slot problem of one instance as a PyEPO ``optModel`` over ``2H`` encoded costs (module doc).

    ``solve()`` is exact and solver-free: choose the ``H`` cheapest entries
    (stable order: ties go to the earlier entry) and every negative one, the
    optimum of ``min c·x s.t. Σ x >= H, 0 <= x <= 1``.
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = int(horizon)
        self._cost = np.zeros(2 * self.horizon)
        super().__init__()

    def _getModel(self) -> tuple[None, list[int]]:
        return None, list(range(2 * self.horizon))  # no solver object; one variable per encoded cost

    def setObj(self, c) -> None:
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        if c.shape != (2 * self.horizon,):
            raise ValueError(f"TopKSlotModel: {c.shape[0]} costs; accepted: 2 x horizon = {2 * self.horizon}")
        self._cost = c

    def solve(self) -> tuple[np.ndarray, float]:
        c = self._cost
        sol = np.zeros_like(c)
        sol[np.argsort(c, kind="stable")[: self.horizon]] = 1.0
        sol[c < 0] = 1.0
        return sol, float(c @ sol)

    @property
    def c_pred_index(self) -> np.ndarray:
        """The real slots: PyEPO perturbs only these (the dummy costs encode the instance, they are not predicted)."""
        return np.arange(self.horizon)


def solve_encoded(cost: Tensor) -> Tensor:
    """:meth:`TopKSlotModel.solve` for a batch ``[N, 2H]`` of encoded costs at once (``[N, 2H]`` 0/1 float64)."""
    H = cost.shape[-1] // 2
    order = torch.argsort(cost, dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(2 * H, device=cost.device).expand_as(order))
    return ((ranks < H) | (cost < 0)).to(torch.float64)


def encode(values: Tensor, slots: Tensor, big: float, available: Tensor | None = None) -> Tensor:
    """Encoded costs ``[N, 2H]`` (float64) of ``N`` instances (module doc).

    Args:
        values: real slot costs ``[N, H]`` (keeps autograd).
        slots: slots needed ``k`` ``[N]`` (integers ``0..H``; at most the available slots).
        big: a cost larger than any ``|value|`` (the dummies sit at ``±big``).
        available: available slots at the start of the window ``[N]``, or ``None`` (all).
    """
    v = values.to(torch.float64)
    N, H = v.shape
    t = torch.arange(H, device=v.device)
    if available is not None:
        v = torch.where(t.unsqueeze(0) < available.unsqueeze(-1), v, torch.full_like(v, 2.0 * big))
    dummies = torch.where(t.unsqueeze(0) < (H - slots.to(v.device)).unsqueeze(-1), -big, big).to(torch.float64)
    return torch.cat([v, dummies.expand(N, H)], dim=-1)


@dataclass
class SlotInstances:
    """The slot instances of a batch: one per (slot agent, clock position), flattened agent-major.

    ``pred``/``truth``: encoded costs ``[N, 2H]`` (``pred`` keeps the
    predictor's graph); ``true_sol``/``true_obj``: the optimum of the true
    costs ``[N, 2H]`` / ``[N, 1]``; ``scale``: each instance's loss factor
    (rate x agent weight) ``[N]``.
    """

    pred: Tensor
    truth: Tensor
    true_sol: Tensor
    true_obj: Tensor
    scale: Tensor


def check_slot_population(pop: Population) -> str | None:
    """Why decision-focused losses do not apply to ``pop`` (one line), or ``None`` when they do."""
    other = [g.kind for g in pop.groups if not isinstance(g, SlotSchedulingAgent)]
    if other:
        return (f"the decisions of its {', '.join(other)} agents are not a linear program in the signal "
                "(SPO+ and PFYL apply to slot agents: EV, phone)")
    return None


def slot_instances(pop: Population, index: Tensor, pred: Tensor, margin: float = 0.0) -> SlotInstances:
    """Encode the instances of every agent at clock positions ``index`` ``[B]``.

    ``pred``: the predictor's deterministic prediction ``[B, H]`` (one public
    input per position) or ``[M, B, H]`` (per-agent inputs).  ``margin``: the
    largest perturbation the loss adds to a predicted cost (``big`` is chosen
    above every real, perturbed or ``2ĉ - c`` cost).
    """
    why = check_slot_population(pop)
    if why is not None:
        raise ValueError(f"population {pop.name}: {why}")
    idx = pop.check_index(index)
    truth = pop.truth(idx)
    B, H = idx.numel(), pop.horizon
    y_all = truth.unsqueeze(0).expand(pop.num_agents, B, H) if truth.dim() == 2 else truth
    p_all = pred.unsqueeze(0).expand(pop.num_agents, B, H) if pred.dim() == 2 else pred
    big = 10.0 * (1.0 + 3.0 * max(float(p_all.detach().abs().max()), float(y_all.abs().max())) + margin)
    parts: dict[str, list[Tensor]] = {"pred": [], "truth": [], "scale": []}
    offset = 0
    for g, w in zip(pop.groups, pop.weights):
        assert isinstance(g, SlotSchedulingAgent)
        ctx = g.context(idx)
        k = ctx["slots"].reshape(-1)
        avail = ctx["available"].reshape(-1) if "available" in ctx else None
        sl = slice(offset, offset + g.num_agents)
        parts["pred"].append(encode(p_all[sl].reshape(-1, H), k, big, avail))
        parts["truth"].append(encode(y_all[sl].reshape(-1, H), k, big, avail))
        parts["scale"].append(float(w) * ctx["rate"].reshape(-1).to(torch.float64))
        offset += g.num_agents
    pred_c, true_c = torch.cat(parts["pred"]), torch.cat(parts["truth"])
    sol = solve_encoded(true_c)
    return SlotInstances(pred_c, true_c, sol, (true_c * sol).sum(-1, keepdim=True), torch.cat(parts["scale"]))


class SlotDFLLoss:
    """SPO+ (``"spo+"``) or perturbed Fenchel-Young (``"pfyl"``) loss of a batch, through PyEPO.

    Args:
        kind: ``"spo+"`` or ``"pfyl"``.
        horizon: ``H``.
        n_samples: PFYL's perturbation draws per instance (PyEPO's default 10).
        sigma: PFYL's perturbation scale, in signal units (PyEPO's default 1.0).
        seed: seed of PFYL's perturbations.

    ``loss(pop, index, pred)`` returns the mean over the batch's instances of
    the scaled per-instance losses (a utilitarian sum over agents, as the
    losses are defined), and :attr:`solves_per_instance` the decisions each
    instance costs (1 for SPO+: the problem at ``2ĉ - c``; ``n_samples`` for PFYL).
    """

    def __init__(self, kind: str, horizon: int, n_samples: int = 10, sigma: float = 1.0, seed: int = 0) -> None:
        if kind not in LOSSES:
            raise ValueError(f"loss {kind!r}; accepted: {', '.join(LOSSES)}")
        self.kind = kind
        self.model = TopKSlotModel(horizon)
        self.sigma = float(sigma)
        if kind == "spo+":
            self.module: SPOPlus | perturbedFenchelYoung = SPOPlus(self.model, reduction="none")
            self.solves_per_instance = 1
        else:
            self.module = perturbedFenchelYoung(self.model, n_samples=n_samples, sigma=sigma, seed=seed,
                                                reduction="none")
            self.solves_per_instance = int(n_samples)

    def __call__(self, pop: Population, index: Tensor, pred: Tensor) -> Tensor:
        margin = 8.0 * self.sigma if self.kind == "pfyl" else 0.0  # 8 sigma: a normal draw beyond it has p < 1e-15
        inst = slot_instances(pop, index, pred, margin)
        if self.kind == "spo+":
            per = self.module(inst.pred, inst.truth, inst.true_sol, inst.true_obj)
        else:
            per = self.module(inst.pred, inst.true_sol)
        return (per * inst.scale).mean()
