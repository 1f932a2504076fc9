"""A home battery doing price arbitrage: a new agent kind written outside the package.

Each household ``m`` owns a battery of capacity ``E_m`` kWh and power ``P_m`` kW
that starts the ``H``-hour window at ``S_m`` kWh. Given a (predicted) price
``p`` it plans charging ``c_t`` and discharging ``d_t`` per hour:

    min_{c, d, s}  sum_t p_t (c_t - d_t)
    s.t.  s_t = s_{t-1} + c_t - d_t,  s_{-1} = S,  0 <= s_t <= E,
          0 <= c_t, d_t <= P,          s_{H-1} >= S   (end at least as full as it started)

and pays ``sum_t price_t (c_t - d_t)`` under the true price.  Regret is that
cost minus the cost of the plan made on the true price.

Two implementations of the same agent:

* :class:`HomeBattery` -- the LP, written once for one instance in PuLP
  (:class:`agents.pulp_backend.PulpAgentGroup`); the backend solves every
  agent x sample instance with HiGHS in memory, re-using each household's
  model (only the objective changes with the price), over several processes.
* :class:`HomeBatteryEnv` -- one household as a Gymnasium env following the
  agent contract (:mod:`agents.gym_env_group`): an agent written as an env;
  :class:`HomeBatteryEnvs` steps all households' envs as one agent group.
* :class:`HomeBatteryDP` -- a batched torch fast path: with the energies on a
  grid of ``unit`` kWh (``E``, ``P``, ``S`` multiples of it) the LP's constraint
  matrix is an interval (network) matrix, so an optimal plan lies on the grid
  and a dynamic programme over the ``E/unit + 1`` states of charge solves all
  instances at once.  ``tests/test_docs.py`` checks it against the LP.

Households come from a CSV with columns ``capacity_kwh, power_kw, start_kwh``
(one row per household), e.g.::

    capacity_kwh,power_kw,start_kwh
    13.5,5,6.5
"""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pulp
import torch

from agents.base import AgentGroup
from agents.gym_env_group import GymEnvAgentGroup
from agents.pulp_backend import PulpAgentGroup
from eq_envs.datasets.signals import signal_series, time_split


def read_households(path: str | Path) -> pd.DataFrame:
    """The households' batteries; one clear error for a bad file."""
    df = pd.read_csv(path)
    missing = {"capacity_kwh", "power_kw", "start_kwh"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; accepted: capacity_kwh, power_kw, start_kwh")
    bad = (df["capacity_kwh"] <= 0) | (df["power_kw"] <= 0) | (df["start_kwh"] < 0) | \
        (df["start_kwh"] > df["capacity_kwh"])
    if bad.any():
        raise ValueError(f"{path}, row {int(np.argmax(bad.to_numpy())) + 1}: accepted: capacity_kwh > 0, "
                         "power_kw > 0, 0 <= start_kwh <= capacity_kwh")
    return df


class _Batteries:
    """What both implementations share: the households' data, context and cost."""

    kind = "home_battery"
    context_name = "capacity (kWh)"

    def _setup(self, households: str | Path | pd.DataFrame) -> int:
        df = households if isinstance(households, pd.DataFrame) else read_households(households)
        self.capacity = torch.tensor(df["capacity_kwh"].to_numpy(np.float64))
        self.power = torch.tensor(df["power_kw"].to_numpy(np.float64))
        self.start = torch.tensor(df["start_kwh"].to_numpy(np.float64))
        return len(df)

    def context(self, index):
        B = len(index)
        return {"capacity": self.capacity.unsqueeze(1).expand(-1, B), "power": self.power.unsqueeze(1).expand(-1, B),
                "start": self.start.unsqueeze(1).expand(-1, B)}

    def cost(self, decision, truth, ctx):
        # decision [M, B, 2H]: charge then discharge per hour
        H = decision.shape[-1] // 2
        net = decision[..., :H] - decision[..., H:]
        return (net * self._broadcast(truth).double()).sum(-1)

    def context_samples(self):
        return [c.reshape(1) for c in self.capacity]


class HomeBattery(_Batteries, PulpAgentGroup):
    """Home batteries as a PuLP LP (solved with HiGHS, models re-used per household).

    Args:
        households: CSV path (or DataFrame) with ``capacity_kwh, power_kw, start_kwh``.
        horizon: hours in the planning window.
        workers: processes for the solves (``None``: all cores).
    """

    def __init__(self, households, horizon: int = 12, workers: int | None = None, solver=None) -> None:
        n = self._setup(households)
        super().__init__(n, horizon, solver=solver, workers=workers)
        self.decision_size = 2 * horizon  # charge and discharge per hour

    def formulate(self, signal, ctx):
        H, E, P, S = len(signal), float(ctx["capacity"]), float(ctx["power"]), float(ctx["start"])
        lp = pulp.LpProblem("home_battery", pulp.LpMinimize)
        c = [lp.add_variable(f"c{t}", 0, P) for t in range(H)]
        d = [lp.add_variable(f"d{t}", 0, P) for t in range(H)]
        s = [lp.add_variable(f"s{t}", 0, E) for t in range(H)]
        lp += pulp.lpSum(float(signal[t]) * (c[t] - d[t]) for t in range(H))
        for t in range(H):
            lp += s[t] == (s[t - 1] if t else S) + c[t] - d[t]
        lp += s[H - 1] >= S
        return lp, c + d

    def objective(self, signal, ctx):
        # only the objective depends on the price: the backend re-uses each household's model
        return np.concatenate([signal, -signal])


class HomeBatteryDP(_Batteries, AgentGroup):
    """The same households decided by a batched dynamic programme over the state of charge (torch).

    Exact when capacity, power and start are multiples of ``unit`` kWh (checked).
    """

    def __init__(self, households, horizon: int = 12, unit: float = 0.5) -> None:
        n = self._setup(households)
        super().__init__(n, horizon)
        self.unit = float(unit)
        for name in ("capacity", "power", "start"):
            v = getattr(self, name) / self.unit
            if not torch.allclose(v, v.round(), atol=1e-9):
                raise ValueError(f"{self.kind}: {name} must be a multiple of unit={unit} kWh for the DP to be exact")
        self.levels = int(torch.round(self.capacity.max() / self.unit)) + 1

    def bytes_per_decision(self):
        # the DP's [M, B, K, K] float64 and bool moves over K states of charge set the shard size
        return 24 * self.levels**2

    def decide(self, pred, ctx):
        price = pred.detach().double().expand(*ctx["capacity"].shape, self.horizon)  # a shard's agents
        M, B, H = price.shape
        K, u = self.levels, self.unit
        level = torch.arange(K, dtype=torch.float64)                       # state k = k * unit kWh
        cap = (ctx["capacity"] / u).round().unsqueeze(-1)                   # [M, B, 1]
        step = (ctx["power"] / u).round().unsqueeze(-1)
        s0 = (ctx["start"] / u).round().long()                              # [M, B]
        inf = torch.tensor(float("inf"), dtype=torch.float64)
        move = level.view(1, 1, 1, K) - level.view(1, 1, K, 1)              # from k to k'
        allowed = (move.abs() <= step.unsqueeze(-1)) & (level.view(1, 1, 1, K) <= cap.unsqueeze(-1))
        # value[t][k]: cheapest cost of hours t..H-1 starting hour t at level k; end level >= start
        value = torch.where(level.view(1, 1, K) >= s0.unsqueeze(-1), 0.0, inf).expand(M, B, K)
        choices = []
        for t in reversed(range(H)):
            total = price[..., t, None, None] * u * move + value.unsqueeze(-2)   # [M, B, K, K]
            total = torch.where(allowed, total, inf)
            value, best = total.min(-1)
            choices.append(best)
        choices.reverse()
        k = s0
        net = torch.empty(M, B, H, dtype=torch.float64)
        for t in range(H):
            nxt = choices[t].gather(-1, k.unsqueeze(-1)).squeeze(-1)
            net[..., t] = (nxt - k).double() * u
            k = nxt
        return torch.cat([net.clamp_min(0), (-net).clamp_min(0)], dim=-1)


class HomeBatteryEnv(gym.Env):
    """One household as a Gymnasium env following the agent contract of :mod:`agents.gym_env_group`.

    ``signal`` is the price series and ``first`` the row where clock position 0
    predicts (``split start + lookback`` of a shared-layout population): the
    observation is the 12 prices before the clock's hour, the action the
    predicted next ``horizon`` prices, the reward minus the LP's regret.
    """

    def __init__(self, households, row: int, signal: np.ndarray, first: int, horizon: int = 12) -> None:
        df = households if isinstance(households, pd.DataFrame) else read_households(households)
        self.battery = HomeBattery(df.iloc[[row]].reset_index(drop=True), horizon=horizon, workers=1)
        self.signal, self.first, self.horizon = np.asarray(signal, dtype=np.float64), int(first), horizon
        lo, hi = float(self.signal.min()), float(self.signal.max())
        self.observation_space = gym.spaces.Box(lo, hi, shape=(12,), dtype=np.float64)
        self.action_space = gym.spaces.Box(lo - (hi - lo), hi + (hi - lo), shape=(horizon,), dtype=np.float64)
        self.t = self.first

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = self.first + int((options or {}).get("index", 0))
        return self.signal[self.t - 12:self.t].copy(), {}

    def step(self, action):
        truth = torch.from_numpy(self.signal[self.t:self.t + self.horizon]).view(1, -1)
        ev = self.battery.evaluate(torch.as_tensor(np.asarray(action, dtype=np.float64)).view(1, 1, -1), truth,
                                   torch.zeros(1, dtype=torch.long))
        regret = float(ev.regret[0, 0])
        info = {"regret": regret, "cost": float(ev.cost[0, 0]), "oracle_cost": float(ev.oracle_cost[0, 0])}
        return self.signal[self.t - 11:self.t + 1].copy(), -regret, True, False, info


class HomeBatteryEnvs(GymEnvAgentGroup):
    """Every household as a :class:`HomeBatteryEnv`, stepped through Gymnasium's vector API.

    For a population file (``class = "home_battery.py:HomeBatteryEnvs"``) whose
    signal is the same bundled price (``region``, ``name = "price"``, paper
    preset, shared layout, the same ``train_fraction``): the envs then score
    exactly the hours the public model is shown.
    """

    def __init__(self, households, horizon: int = 12, split: str = "train", region: str = "CISO",
                 train_fraction: float = 0.7, vectorization: str = "sync") -> None:
        signal = signal_series("price", region, "paper")
        part = time_split(len(signal), train_fraction)[0 if split == "train" else 1]
        first = part.start + 12  # the population's lookback
        df = households if isinstance(households, pd.DataFrame) else read_households(households)
        super().__init__([lambda m=m: HomeBatteryEnv(df, m, signal, first, horizon) for m in range(len(df))],
                         horizon, vectorization=vectorization, kind="home_battery_env")
