"""Decision-focused baselines: PyEPO's solver for the slot problem and its SPO+ / PFYL losses on our agents."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pyepo.func.utils import _solve_batch_np
from scipy.optimize import linprog

from agents.ev_charging import EVChargingAgent
from eq_envs.presets import build_population
from trainers.baselines.dfl import SlotDFLLoss, TopKSlotModel, check_slot_population, encode, slot_instances, solve_encoded

H = 12


def _instances(seed: int = 0, n: int = 300):
    """Random slot instances: values with negatives and ties, needs k, availability windows."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-2.0, 10.0, (n, H))
    values[::3] = np.round(values[::3])  # ties
    avail = rng.integers(1, H + 1, n)
    k = np.minimum(rng.integers(0, H + 1, n), avail)
    return torch.from_numpy(values), torch.from_numpy(k).double(), torch.from_numpy(avail).double()


def _agent_decisions(values, k, avail):
    """The agents' own fast path: one EV per instance, deciding on ``values``."""
    n = values.shape[0]
    agent = EVChargingAgent([[float(x)] for x in k.tolist()], rates=1.0, horizon=H,
                            windows=[[float(a)] for a in avail.tolist()])
    ctx = agent.context(torch.zeros(1, dtype=torch.long))
    return agent.decide(values.reshape(n, 1, H), ctx)[:, 0]  # [n, H]


def test_topk_optmodel_and_batch_solver_equal_the_agents_fast_path() -> None:
    values, k, avail = _instances()
    costs = encode(values, k, big=100.0, available=avail)
    model = TopKSlotModel(H)
    sol, obj = _solve_batch_np(costs.numpy(), model, processes=1, pool=None)  # PyEPO's own per-instance loop
    want = _agent_decisions(values, k, avail).numpy()
    np.testing.assert_array_equal(sol[:, :H], want)
    np.testing.assert_array_equal(solve_encoded(costs).numpy(), sol)
    np.testing.assert_allclose(obj, (costs.numpy() * sol).sum(1))
    # the dummy slots take exactly H - k of the 2H entries, the real part the agent's schedule
    np.testing.assert_array_equal(sol[:, H:].sum(1), H - k.numpy())


def test_topk_optmodel_solves_the_linear_program() -> None:
    """Against an LP solver on the problem as stated: min c.x, sum x >= k, 0 <= x <= 1, x = 0 after the window."""
    values, k, avail = _instances(seed=1, n=40)
    model = TopKSlotModel(H)
    for v, kk, a in zip(values.numpy(), k.numpy(), avail.numpy()):
        v = v + np.linspace(0, 1e-6, H)  # no ties: the LP optimum is unique
        bounds = [(0, 1 if t < a else 0) for t in range(H)]
        lp = linprog(v, A_ub=-np.ones((1, H)), b_ub=[-kk], bounds=bounds, method="highs")
        model.setObj(encode(torch.from_numpy(v)[None], torch.tensor([kk]), 100.0, torch.tensor([a]))[0].numpy())
        sol, _ = model.solve()
        np.testing.assert_allclose(sol[:H], lp.x, atol=1e-9)


def test_pyepo_spo_plus_equals_the_published_formula_on_real_agents() -> None:
    """SPO+ through PyEPO on the encoded instances = -min_w (2ĉ-c)w + 2ĉ w*(c) - z*(c) on the EVs' own decisions,
    times the rate; its gradient 2 (w*(c) - w*(2ĉ-c)) times the rate."""
    pop = build_population("ev-similar", split="test", layout="shared")
    index = torch.arange(20, 28)
    torch.manual_seed(0)
    pred = (pop.truth(index) + 3 * torch.randn(8, H, dtype=torch.float64)).requires_grad_(True)
    inst = slot_instances(pop, index, pred)
    loss = SlotDFLLoss("spo+", H)
    per = loss.module(inst.pred, inst.truth, inst.true_sol, inst.true_obj)  # [M * B]
    g = pop.groups[0]
    ctx = g.context(index)
    y = pop.truth(index).unsqueeze(0).expand(pop.num_agents, -1, -1)
    p = pred.detach().unsqueeze(0).expand_as(y)
    w_true, w_spo = g.decide(y, ctx), g.decide(2 * p - y, ctx)
    want = (-((2 * p - y) * w_spo).sum(-1) + 2 * (p * w_true).sum(-1) - (y * w_true).sum(-1)) * ctx["rate"]
    np.testing.assert_allclose((per * inst.scale).detach().numpy(), want.reshape(-1).numpy(), rtol=1e-9, atol=1e-9)
    assert (want >= -1e-9).all()  # SPO+ bounds the regret from above, so it is non-negative
    (per * inst.scale).sum().backward()
    grad_want = (2 * (w_true - w_spo) * ctx["rate"].unsqueeze(-1)).sum(0)
    np.testing.assert_allclose(pred.grad.numpy(), grad_want.numpy(), rtol=1e-9, atol=1e-9)


def test_pfyl_gradient_is_the_solution_residual_and_shrinks_with_a_perfect_prediction() -> None:
    pop = build_population("ev-similar", split="test", layout="shared")
    index = torch.arange(5)
    loss = SlotDFLLoss("pfyl", H, n_samples=16, sigma=0.05, seed=0)
    truth = pop.truth(index).clone().requires_grad_(True)
    loss(pop, index, truth).backward()
    near = truth.grad.abs().max()
    far = (pop.truth(index) * 0 + torch.linspace(10, 0, H)).requires_grad_(True)  # ranks the slots backwards
    loss(pop, index, far).backward()
    assert float(near) < 0.2 * float(far.grad.abs().max())


def test_dfl_applies_to_slot_agents_only() -> None:
    assert check_slot_population(build_population("phone")) is None
    why = check_slot_population(build_population("dc-similar-same-lambda"))
    assert why is not None and "datacenter" in why
    with pytest.raises(ValueError, match="linear program"):
        slot_instances(build_population("mixed"), torch.arange(2), torch.zeros(2, H))
