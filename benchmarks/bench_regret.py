"""Regret-evaluation throughput: batched fast path against the per-instance solver path.

For each agent kind at M = 70 agents, B = 128 time steps, H = 12 on the bundled
real data, times one batched ``evaluate`` call (decide on the prediction,
oracle on the truth, regret) and the same regrets computed instance by
instance with the reference solver: PuLP/CBC for the EV and phone MILPs, and a
numerical minimisation of Eq. 12 (scipy) for data centers, whose cost is not
linear so PuLP cannot model it.  The solver path is timed on a random subset of
the instances and checked to give the same regrets.  Prints a markdown table of
medians and the fast/solver ratio.

    python benchmarks/bench_regret.py [--repeats 7] [--solver-instances 150]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from timing import median_time  # benchmarks/timing.py (this script's folder is on sys.path)

from agents import DataCenterAgent, EVChargingAgent, PhoneChargingAgent, SlotMILPAgent
from eq_envs.datasets import ev as ev_data
from eq_envs.presets import dc_lambdas, dc_workloads, ev_needs_rates

M, B, H = 70, 128, 12


def build_agents() -> dict[str, tuple[object, object]]:
    """(fast agent, reference agent or None) per kind, 70 agents each, real contexts."""
    work = dc_workloads("different", "train")
    dc = DataCenterAgent([work[m % len(work)] for m in range(M)], lam=dc_lambdas("different", M), horizon=H)
    needs, rates = ev_needs_rates("similar", "train")
    ev = EVChargingAgent(needs, rates, horizon=H)
    ev_ref = SlotMILPAgent(needs, rates, horizon=H)
    demands = ev_data.phone_demands()
    phone = PhoneChargingAgent([demands[m % len(demands)] for m in range(M)], k_mode="uniform", seed=0)
    k = [s for s in phone.slots.sequences()]
    phone_ref = SlotMILPAgent([kk * phone.rate.values[0, 0].item() for kk in k], float(phone.rate.values[0, 0]),
                              horizon=H)
    return {"datacenter": (dc, None), "ev": (ev, ev_ref), "phone": (phone, phone_ref)}


def dc_reference_regret(agent: DataCenterAgent, pred: np.ndarray, truth: np.ndarray, w: np.ndarray,
                        lam: np.ndarray) -> float:
    """One instance by numerical minimisation of Eq. 12 (decision on pred, oracle on truth)."""
    c_hat, c = float(pred.mean()), float(truth.mean())

    def best_slack(carbon: float) -> float:
        res = minimize_scalar(lambda s: s * carbon + lam * w / s, bounds=(1e-9, 1e7), method="bounded",
                              options={"xatol": 1e-12})
        return float(res.x)

    cost = lambda s: (w + s) * c + lam * w / s  # noqa: E731
    return cost(best_slack(c_hat)) - cost(best_slack(c))




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats of the fast path (median reported)")
    ap.add_argument("--solver-instances", type=int, default=150, help="instances timed on the solver path")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the target is on 2 cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = np.random.default_rng(0)
    idx = torch.arange(B)
    truth = torch.from_numpy(g.uniform(0.5, 10, (B, H)))
    pred = torch.from_numpy(g.uniform(0.5, 10, (M, B, H)))
    rows = []
    for kind, (fast, ref) in build_agents().items():
        t_fast = median_time(lambda f=fast: f.evaluate(pred, truth, idx), args.repeats)
        fast_regret = fast.evaluate(pred, truth, idx).regret
        picks = [(int(m), int(b)) for m, b in zip(g.integers(0, M, args.solver_instances),
                                                  g.integers(0, B, args.solver_instances))]
        t0 = time.perf_counter()
        if ref is None:
            ctx = fast.context(idx)
            got = [dc_reference_regret(fast, pred[m, b].numpy(), truth[b].numpy(), float(ctx["workload"][m, b]),
                                       float(ctx["lam"][m, b])) for m, b in picks]
            tol = 1e-4
        else:
            ctx = {k: v.numpy() for k, v in ref.context(idx).items()}
            got = []
            for m, b in picks:
                # one regret = two MILP solves (decision on the prediction, oracle on the truth)
                c = {k: v[m, b] for k, v in ctx.items()}
                y = truth[b].numpy()
                x_hat, x_star = ref.solve_one(pred[m, b].numpy(), c), ref.solve_one(y, c)
                got.append(float(((x_hat - x_star) * c["slot_energy"] * y).sum()))
            tol = 1e-9
        t_ref = (time.perf_counter() - t0) / len(picks)
        want = np.array([float(fast_regret[m, b]) for m, b in picks])
        err = float(np.max(np.abs(np.array(got) - want) / np.maximum(1.0, np.abs(want))))
        assert err < tol, f"{kind}: solver path and fast path disagree (max rel err {err:.2e})"
        fast_rate = M * B / t_fast
        ref_rate = 1.0 / t_ref
        rows.append((kind, fast_rate, ref_rate, fast_rate / ref_rate, t_fast, err,
                     "scipy minimize_scalar" if ref is None else "PuLP CBC MILP"))
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads; M={M}, B={B}, H={H}")
    print("| agent kind | fast path decisions/s | reference decisions/s | ratio | fast batch median (ms) "
          "| max rel. diff | reference |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for kind, fr, rr, ratio, tf, err, ref in rows:
        print(f"| {kind} | {fr:,.0f} | {rr:,.1f} | {ratio:,.0f}x | {tf * 1e3:.2f} | {err:.1e} | {ref} |")


if __name__ == "__main__":
    main()
