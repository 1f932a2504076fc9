"""Downstream agents: closed forms, exactness of fast paths against PuLP, regret properties."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from agents import DataCenterAgent, EVChargingAgent, PhoneChargingAgent, SlotMILPAgent, SlotSchedulingAgent
from agents.base import AgentGroup
from agents.phone_charging import phone_slots


# ----------------------------------------------------------------- data center
def _dc(seed: int = 0, M: int = 5, N: int = 7) -> DataCenterAgent:
    g = np.random.default_rng(seed)
    return DataCenterAgent([g.uniform(0.5, 50, N) for _ in range(M)], lam=g.uniform(1, 100, M))


def test_datacenter_regret_matches_closed_form_and_numerical_minimum() -> None:
    agent = _dc()
    g = torch.Generator().manual_seed(1)
    B = 9
    idx = torch.arange(B)
    truth = torch.rand(B, 1, generator=g, dtype=torch.float64) * 10 + 0.05
    pred = torch.rand(agent.num_agents, B, 1, generator=g, dtype=torch.float64) * 10 + 0.05
    ev = agent.evaluate(pred, truth, idx)
    ctx = agent.context(idx)
    w, lam = ctx["workload"], ctx["lam"]
    c, c_hat = truth[:, 0].expand_as(w), pred[..., 0]
    closed = torch.sqrt(lam * w) * (c.sqrt() - c_hat.sqrt()) ** 2 / c_hat.sqrt()
    torch.testing.assert_close(ev.regret, closed, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ev.cost - ev.oracle_cost, closed, rtol=1e-7, atol=1e-9)
    # the oracle is the true minimum of Eq. 12, found numerically
    for m, b in [(0, 0), (2, 5), (4, 8)]:
        wm, lm, cm = float(w[m, b]), float(lam[m, b]), float(c[m, b])
        res = minimize_scalar(lambda s, wm=wm, cm=cm, lm=lm: (wm + s) * cm + lm * wm / s, bounds=(1e-9, 1e6), method="bounded",
                              options={"xatol": 1e-10})
        assert res.fun == pytest.approx(float(ev.oracle_cost[m, b]), rel=1e-7)
    assert (ev.regret >= 0).all()


def test_datacenter_exact_prediction_has_zero_regret_and_gradient() -> None:
    agent = _dc()
    idx = torch.arange(4)
    truth = torch.tensor([[0.3], [2.0], [7.5], [10.0]], dtype=torch.float64)
    assert torch.equal(agent.regret(truth.unsqueeze(0), truth, idx), torch.zeros(5, 4, dtype=torch.float64))
    pred = (truth.unsqueeze(0) * 1.3).expand(5, 4, 1).clone().requires_grad_(True)
    agent.regret(pred, truth, idx).sum().backward()
    assert pred.grad is not None and (pred.grad > 0).all()  # over-prediction: regret grows with c_hat


def test_datacenter_floor_is_recorded() -> None:
    agent = DataCenterAgent([[1.0]], lam=2.0, min_prediction=0.01)
    ev = agent.evaluate(torch.tensor([[[0.0], [0.5]]]), torch.tensor([[1.0], [1.0]]), torch.arange(2))
    assert ev.clamped.tolist() == [[True, False]]
    assert torch.isfinite(ev.regret).all()


def test_datacenter_horizon12_uses_mean_of_steps() -> None:
    agent = DataCenterAgent([[3.0]], lam=2.0, horizon=12, reduce="mean")
    one = DataCenterAgent([[3.0]], lam=2.0, horizon=1)
    truth, pred = torch.rand(2, 12, dtype=torch.float64) + 1, torch.rand(1, 2, 12, dtype=torch.float64) + 1
    r12 = agent.regret(pred, truth, torch.arange(2))
    r1 = one.regret(pred.mean(-1, keepdim=True), truth.mean(-1, keepdim=True), torch.arange(2))
    torch.testing.assert_close(r12, r1)


# --------------------------------------------------------------- slot agents
def _brute_force(signal: np.ndarray, energy: np.ndarray, need: float) -> float:
    """Exhaustive minimum of sum E e x s.t. sum e x >= min(need, sum e) over binary x."""
    target = min(need, energy.sum()) - 1e-9
    best = np.inf
    for x in itertools.product((0, 1), repeat=len(signal)):
        x = np.array(x)
        if (energy * x).sum() >= target:
            best = min(best, float((signal * energy * x).sum()))
    return best


instances = st.integers(min_value=0, max_value=2**31 - 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=instances, negative=st.booleans(), windows=st.booleans())
def test_ev_fast_path_equals_pulp_milp(seed: int, negative: bool, windows: bool) -> None:
    g = np.random.default_rng(seed)
    M, B, H = int(g.integers(1, 4)), 2, 12
    needs = [g.uniform(0, 40, 3) for _ in range(M)]
    rates = [g.uniform(1, 7, 3) for _ in range(M)]
    wins = [g.uniform(1, 14, 3) for _ in range(M)] if windows else None
    fast = EVChargingAgent(needs, rates, horizon=H, windows=wins)
    milp = SlotMILPAgent(needs, rates, horizon=H, windows=wins)
    lo = -2.0 if negative else 0.0
    truth = torch.from_numpy(g.uniform(lo, 10, (B, H)))
    pred = torch.from_numpy(g.uniform(lo, 10, (M, B, H)))
    idx = torch.from_numpy(g.integers(0, 3, B))
    ef, em = fast.evaluate(pred, truth, idx), milp.evaluate(pred, truth, idx)
    torch.testing.assert_close(ef.oracle_cost, em.oracle_cost, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ef.regret, em.regret, rtol=1e-9, atol=1e-9)
    assert (ef.regret >= -1e-12).all()


@settings(max_examples=60, deadline=None)
@given(seed=instances)
def test_milp_with_power_caps_matches_brute_force(seed: int) -> None:
    g = np.random.default_rng(seed)
    H = 7
    caps = np.where(g.random((1, H)) < 0.2, 0.0, g.uniform(0.2, 1.0, (1, H)))
    need, rate = float(g.uniform(0, 20)), float(g.uniform(1, 6))
    milp = SlotMILPAgent([[need]], [[rate]], horizon=H, caps=caps)
    signal = g.uniform(-1, 10, H)
    ev = milp.evaluate(torch.from_numpy(signal).view(1, 1, H), torch.from_numpy(signal).view(1, H), torch.tensor([0]))
    assert float(ev.oracle_cost[0, 0]) == pytest.approx(_brute_force(signal, rate * caps[0], need), abs=1e-7)
    assert float(ev.regret[0, 0]) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(seed=instances, transform=st.sampled_from(["identity", "exp", "affine", "cube", "log1p"]))
def test_slot_regret_zero_for_truth_and_increasing_transforms(seed: int, transform: str) -> None:
    g = np.random.default_rng(seed)
    M, B, H = 4, 5, 12
    agent = EVChargingAgent([g.uniform(0, 50, 6) for _ in range(M)], [g.uniform(1, 7, 6) for _ in range(M)])
    truth = torch.from_numpy(g.uniform(0, 10, (B, H)))
    f = {"identity": lambda x: x, "exp": torch.exp, "affine": lambda x: 3 * x + 7, "cube": lambda x: x ** 3,
         "log1p": torch.log1p}[transform]
    idx = torch.from_numpy(g.integers(0, 6, B))
    assert torch.equal(agent.regret(f(truth).unsqueeze(0), truth, idx), torch.zeros(M, B, dtype=torch.float64))
    noisy = truth.unsqueeze(0) + torch.from_numpy(g.normal(0, 2, (M, B, H)))
    assert (agent.regret(noisy, truth, idx) >= 0).all()


def test_ev_slots_and_errors() -> None:
    agent = EVChargingAgent([[6.0, 6.0000000001, 100.0, 0.0]], [[2.0, 2.0, 2.0, 2.0]])
    assert agent.slots.sequences()[0].tolist() == [3, 3, 12, 0]
    with pytest.raises(ValueError, match="energy need of agent 0 at position 1 is -1"):
        EVChargingAgent([[1.0, -1.0]], 2.0)
    with pytest.raises(ValueError, match="rate of agent 0 at position 0"):
        EVChargingAgent([[1.0]], [[0.0]])
    with pytest.raises(ValueError, match=r"accepted: \[1 or 1, B, 12\]"):
        agent.regret(torch.zeros(1, 2, 11), torch.zeros(2, 11), torch.arange(2))
    with pytest.raises(ValueError, match="NaN or inf"):
        agent.regret(torch.full((1, 1, 12), float("nan")), torch.zeros(1, 12), torch.arange(1))


def test_phone_agents() -> None:
    assert phone_slots([5.18, 10.45, 11.16]).tolist() == [3, 5, 6]
    p = PhoneChargingAgent([5.18, 10.45], k_mode="uniform", seed=3, sessions=50)
    q = PhoneChargingAgent([5.18, 10.45], k_mode="uniform", seed=3, sessions=50)
    assert torch.equal(p.slots.values, q.slots.values)
    assert p.slots.values.min() >= 1 and p.slots.values.max() <= 10
    with pytest.raises(ValueError, match="k_mode"):
        PhoneChargingAgent([5.0], k_mode="random")
    fixed = PhoneChargingAgent([5.18, 10.45])
    truth = torch.rand(3, 12, dtype=torch.float64)
    ev = fixed.evaluate(torch.rand(1, 3, 12, dtype=torch.float64), truth, torch.arange(3))
    assert ev.decision.sum(-1).tolist() == [[3, 3, 3], [5, 5, 5]]
    assert (ev.regret >= 0).all()


def test_new_agent_kind_in_a_few_lines() -> None:
    """The extension point: any AgentGroup subclass plugs into the batched API."""

    class ThresholdAgent(AgentGroup):
        kind = "threshold"

        def __init__(self, thresholds: list[float]) -> None:
            super().__init__(len(thresholds), horizon=1)
            self.th = torch.tensor(thresholds, dtype=torch.float64)

        def context(self, index):
            return {"th": self.th.unsqueeze(1).expand(-1, len(index))}

        def decide(self, pred, ctx):  # run (1) when the predicted price is below the threshold
            return (pred[..., 0] < ctx["th"]).double()

        def cost(self, decision, truth, ctx):  # pay the price when running, the threshold when not
            t = self._broadcast(truth)[..., 0]
            return decision * t + (1 - decision) * ctx["th"]

    a = ThresholdAgent([1.0, 5.0])
    r = a.regret(torch.tensor([[[0.5], [6.0]]]), torch.tensor([[2.0], [3.0]]), torch.arange(2))
    assert r.tolist() == [[1.0, 0.0], [0.0, 2.0]]


def test_slot_agent_rejects_bad_slots() -> None:
    with pytest.raises(ValueError, match="accepted: integers 0..12"):
        SlotSchedulingAgent([[13]], horizon=12)


def test_phone_window_caps_its_slots_and_hides_later_hours() -> None:
    # demand 10 -> k = 5 hours, but on the charger 3 hours only (window 3.7 h -> 3 whole slots)
    phones = PhoneChargingAgent([10.0, 10.0], windows=[[3.7], [12.0]], horizon=12)
    pred = torch.tensor([[[9.0, 8, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1]]], dtype=torch.float64)
    ev = phones.evaluate(pred, pred[0], torch.arange(1))
    np.testing.assert_array_equal(ev.decision[0, 0].numpy(), [1, 1, 1] + [0] * 9)  # all it can use, however dear
    assert int(ev.decision[1, 0].sum()) == 5 and ev.decision[1, 0, :3].sum() == 0  # the 5 cheapest of 12
    np.testing.assert_array_equal(phones.unmet_slots(torch.arange(1)).numpy(), [[2.0], [0.0]])
