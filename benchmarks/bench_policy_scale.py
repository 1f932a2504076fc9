"""Ablations of the policy-gradient trainer on the validation split: the policy's scale σ, eq_ppo's passes.

Issue 9 asks which control of σ works (learned, scheduled or fixed).  Every run
trains on the training split (minus the validation stretch) at the same budget
of agent-decisions and is scored on the validation split only (the test split
is never read): the value at the validation-selected epoch (what ``model.pt``
holds) and at the last epoch.  Criterion: the norm-form Equitable Objective at
the run's q+1 of the per-agent validation regrets (``val_eq_norm``).

    python benchmarks/bench_policy_scale.py [--population ev-similar] [--budget 1000000] [--seeds 0 1]

Writes ``benchmarks/results/policy_scale.csv`` and prints a markdown table
(mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import pandas as pd
import torch

from trainers.config import TrainConfig
from trainers.training import train

VARIANTS = {
    "eq_ppo, scale learned": dict(estimator="eq_ppo", num_samples=2),
    "eq_ppo, scale fixed": dict(estimator="eq_ppo", num_samples=2, scale="fixed"),
    "eq_ppo, scale annealed to 0.1": dict(estimator="eq_ppo", num_samples=2, scale="anneal", scale_final=0.1),
    "eq_ppo, 10 passes (PPO's default)": dict(estimator="eq_ppo", num_samples=2, update={"epochs": 10}),
    "reinforce_weighted, scale learned": dict(estimator="reinforce_weighted", baseline="loo", num_samples=4),
    "reinforce_weighted, scale fixed": dict(estimator="reinforce_weighted", baseline="loo", num_samples=4,
                                            scale="fixed"),
    "reinforce_weighted, scale annealed to 0.1": dict(estimator="reinforce_weighted", baseline="loo", num_samples=4,
                                                      scale="anneal", scale_final=0.1),
}
CHECKPOINTS = 8


def run(population: str, qp1: float, budget: int, seed: int, kw: dict) -> dict:
    probe = TrainConfig(population=population, **kw)
    steps = probe.build_population("train").num_steps
    K = kw.get("num_samples", 1)
    per_batch = probe.batch_size * probe.build_population("train").num_agents * K
    batches = max(CHECKPOINTS, round(budget / per_batch))
    full = math.ceil(steps / probe.batch_size)
    epochs, max_batches = (CHECKPOINTS, max(1, round(batches / CHECKPOINTS))) if batches < CHECKPOINTS * full \
        else (round(batches / full), None)
    cfg = TrainConfig.from_dict({"population": population, "q_plus_1": qp1, "seed": seed, "epochs": epochs,
                                 "max_batches": max_batches, **kw})
    t0 = time.perf_counter()
    res = train(cfg, tensorboard=False)
    h = res.history
    sel = h[(res.selected_epoch or len(h)) - 1]
    return {"selected_eq_norm": sel["val_eq_norm"], "selected_variance": sel["val_variance"],
            "selected_mean": sel["val_mean"], "selected_worst": sel["val_worst"],
            "last_eq_norm": h[-1]["val_eq_norm"], "last_variance": h[-1]["val_variance"],
            "last_mean": h[-1]["val_mean"], "final_std": h[-1].get("policy_std", math.nan),
            "decisions": h[-1]["decisions"], "grad_steps": h[-1]["grad_steps"], "wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--population", default="ev-similar")
    ap.add_argument("--q-plus-1", type=float, default=20.0, dest="qp1")
    ap.add_argument("--budget", type=int, default=1_000_000, help="agent-decisions per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="NAME", default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("eq_envs.data").setLevel(logging.ERROR)
    rows = []
    for name in args.variants:
        for seed in args.seeds:
            r = run(args.population, args.qp1, args.budget, seed, VARIANTS[name])
            rows.append({"variant": name, "seed": seed, **r})
            print(f"{name:45s} seed {seed}: selected val eq_norm {r['selected_eq_norm']:.3f} "
                  f"(variance {r['selected_variance']:.3f}, mean {r['selected_mean']:.3f}); last {r['last_eq_norm']:.3f}; "
                  f"std {r['final_std']:.3f}; {r['wall_s']:.0f} s", flush=True)
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "policy_scale.csv", index=False)
    cols = ["selected_eq_norm", "selected_variance", "selected_mean", "last_eq_norm", "final_std"]
    g = df.groupby("variant", sort=False)[cols]
    mean, std = g.mean(), g.std(ddof=0)
    print(f"\n{args.population}, shared layout, q+1 = {args.qp1:g}, {args.budget:,} agent-decisions, seeds "
          f"{' '.join(map(str, args.seeds))}; validation split (mean ± std over seeds)\n")
    print("| variant | val eq. objective (selected epoch) | val variance | val mean regret | val eq. objective "
          "(last epoch) | final σ |")
    print("|---|---:|---:|---:|---:|---:|")
    for v in mean.index:
        cells = [f"{mean.loc[v, c]:.3f} ± {std.loc[v, c]:.3f}" for c in cols[:-1]] + [f"{mean.loc[v, 'final_std']:.3f}"]
        print(f"| {v} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
