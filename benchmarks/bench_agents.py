"""General agents: PuLP backend solves/s (CBC vs HiGHS) and Gymnasium envs as agents (sync vs async).

Part 1 -- the home-battery price-arbitrage LP of ``docs/examples/home_battery.py``
(16 households with capacities 5-13.5 kWh, horizon 12, bundled CISO price,
paper preset), decisions for ``B`` clock positions x 16 households:

* PuLP + CBC, one solve per instance (the backend before issue 11);
* HiGHS in memory, one fresh model per instance (``objective()`` disabled);
* HiGHS re-using each household's model (only the objective changes), 1 process;
* the same over ``--workers`` processes;
* the batched torch dynamic programme (``HomeBatteryDP``), whose regrets are
  checked against the LP's (column *max |diff|*).

Part 2 -- envs following the agent contract, stepped through Gymnasium's vector API
(``agents.gym_env_group``): ``DownstreamAgentEnv`` (cheap steps: one EV top-k)
and ``HomeBatteryEnv`` (an LP per step), sync vs async, against the population's
batched fast path on the same decisions.

    python benchmarks/bench_agents.py [--positions 64] [--repeats 3] [--workers 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "docs" / "examples")]

from home_battery import HomeBattery, HomeBatteryDP, HomeBatteryEnv  # noqa: E402

from agents.gym_env_group import GymEnvAgentGroup  # noqa: E402
from agents.pulp_backend import cbc_solver  # noqa: E402
from benchmarks.timing import median_time  # noqa: E402
from eq_envs.agent_env import DownstreamAgentEnv  # noqa: E402
from eq_envs.datasets.signals import signal_series, time_split  # noqa: E402
from eq_envs.population import Population  # noqa: E402
from eq_envs.presets import build_population  # noqa: E402
from trainers.reports import _plain_markdown  # noqa: E402

HOUSEHOLDS = pd.DataFrame({"capacity_kwh": np.tile([5.0, 7.5, 10.0, 13.5], 4),
                           "power_kw": np.tile([2.5, 3.0, 5.0, 5.0], 4),
                           "start_kwh": np.repeat([0.0, 2.5, 5.0, 2.0], 4)})


def price_population() -> Population:
    """The bundled CISO price (paper preset) on the shared layout, training split (70 %)."""
    sig = signal_series("price", "CISO", "paper")
    train, _ = time_split(len(sig), 0.7)
    return Population("batteries", sig, "train", (0, train.stop), [HomeBatteryDP(HOUSEHOLDS)], horizon=12,
                      layout="shared")


def timed_regret(group, pred, truth, idx, ref, repeats: int) -> tuple[float, float]:
    """Median seconds of ``group.evaluate`` and the max |regret - ref| of its result."""
    t = median_time(lambda: group.evaluate(pred, truth, idx), repeats)
    return t, float((group.evaluate(pred, truth, idx).regret - ref).abs().max())


def bench_pulp(args: argparse.Namespace) -> list[dict]:
    pop = price_population()
    idx = torch.arange(args.positions)
    truth = pop.truth(idx)
    pred = (truth + torch.randn(truth.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    pred = pred.unsqueeze(0)
    dp = pop.groups[0]
    M = dp.num_agents

    def lp(**kw):
        return HomeBattery(HOUSEHOLDS, **kw)

    parallel = lp(workers=args.workers)
    parallel.min_parallel = 64  # processes even for the small calls of this benchmark
    fresh = lp(workers=1)
    fresh.objective = lambda signal, ctx: None  # no model re-use: every instance formulated and solved afresh
    variants = [("PuLP + CBC (before)", lp(workers=1, solver=cbc_solver()), max(1, args.positions // 8)),
                ("HiGHS, fresh model", fresh, args.positions),
                ("HiGHS, model re-use, 1 process", lp(workers=1), args.positions),
                (f"HiGHS, model re-use, {args.workers} processes", parallel, args.positions),
                ("torch DP fast path", dp, args.positions)]
    rows, ref = [], dp.evaluate(pred, truth, idx).regret
    for name, group, positions in variants:
        t, diff = timed_regret(group, pred[:, :positions], truth[:positions], idx[:positions], ref[:, :positions],
                               args.repeats)
        # two solves per regret: the decision on the prediction and the oracle on the truth
        rows.append({"agent": name, "instances": M * positions * 2, "solves/s": M * positions * 2 / t,
                     "max |diff| vs DP": diff})
    base = rows[0]["solves/s"]
    for r in rows:
        r["vs CBC"] = r["solves/s"] / base
    return rows


def bench_envs(args: argparse.Namespace) -> list[dict]:
    rows = []
    ev = build_population("ev-similar", layout="shared")
    M = 8
    idx = torch.arange(args.positions)
    g = torch.Generator().manual_seed(1)
    pred = ev.truth(idx).unsqueeze(0).expand(M, -1, -1) + torch.randn(M, args.positions, 12, generator=g,
                                                                      dtype=torch.float64)
    full = torch.cat([pred, torch.zeros(ev.num_agents - M, args.positions, 12, dtype=torch.float64)])
    ref = ev.regret(full, idx)[:M]
    t_fast = median_time(lambda: ev.regret(full, idx), args.repeats)
    rows.append({"env": "EV (DownstreamAgentEnv)", "path": "population fast path (all 70 agents)",
                 "decisions/s": ev.num_agents * args.positions / t_fast, "max |diff|": 0.0})
    for vec in ("sync", "async"):
        group = GymEnvAgentGroup([lambda m=m: DownstreamAgentEnv(ev, agent=m, episode_length=1) for m in range(M)],
                                 horizon=12, vectorization=vec)
        t, diff = timed_regret(group, pred, ev.truth(idx), idx, ref, args.repeats)
        rows.append({"env": "EV (DownstreamAgentEnv)", "path": f"{vec} vector env, {M} envs",
                     "decisions/s": M * args.positions / t, "max |diff|": diff})
        group.close()
    pop = price_population()
    first = pop.split_range[0] + pop.lookback
    truth = pop.truth(idx)
    pred = truth.unsqueeze(0) + torch.randn(M, args.positions, 12, generator=g, dtype=torch.float64)
    sub = HOUSEHOLDS.iloc[:M].reset_index(drop=True)
    ref = HomeBatteryDP(sub).evaluate(pred, truth, idx).regret
    for vec in ("sync", "async"):
        group = GymEnvAgentGroup([lambda m=m: HomeBatteryEnv(sub, m, pop.signal, first) for m in range(M)],
                                 horizon=12, vectorization=vec)
        t, diff = timed_regret(group, pred, truth, idx, ref, args.repeats)
        rows.append({"env": "home battery (HomeBatteryEnv, LP per step)", "path": f"{vec} vector env, {M} envs",
                     "decisions/s": M * args.positions / t, "max |diff|": diff})
        group.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=64, help="clock positions per call (default 64)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported (default 3)")
    ap.add_argument("--workers", type=int, default=2, help="processes of the parallel HiGHS variant (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("Home-battery LP (16 households, H = 12):")
    print(_plain_markdown(pd.DataFrame(bench_pulp(args))))
    print("\nGymnasium envs as agents (agents.gym_env_group):")
    print(_plain_markdown(pd.DataFrame(bench_envs(args))))


if __name__ == "__main__":
    main()
