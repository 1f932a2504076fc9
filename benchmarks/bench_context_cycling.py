"""Does it matter how agents cycle through their contexts on the shared clock?  (docs/tradeoffs.md)

In the paper's layout every agent is served at the same hour; agents differ in
how they pair hours with their own context values (workloads, EV needs):

* ours (``layout="shared"``): at clock position ``i`` agent ``m`` uses context
  ``i mod N_m`` -- every hour is scored by every agent;
* the released code: the training hours go through an unshuffled data loader
  in batches of 128, and in every batch agent ``m`` pairs batch position ``j``
  with its context ``j`` for ``j < N_m`` (``N_m`` = 117/118 for data centers, 87/88
  for EVs); positions ``j >= N_m`` of a batch are not scored by agent ``m``
  (``calculate_cost_in_cuda`` / ``cost_group_loss`` truncate to the shorter length).

For a few public models (untrained, a Plain PM, Equitable PMs) this scores
every agent's mean regret on the paper's whole training part
(``val_fraction=0``) under both rules and reports how far they differ: the
largest relative difference of a per-agent mean, the correlation across agents,
and the equity metrics under each rule.

    EQPM_THREADS=1 python benchmarks/bench_context_cycling.py
"""
from __future__ import annotations

import os

import numpy as np
import torch

from eq_envs.population import Population
from trainers.config import TrainConfig
from trainers.evaluation import predict
from trainers.metrics import equity_metrics
from trainers.networks import build_public_model
from trainers.training import train

RELEASED_BATCH = 128
POPULATIONS = ("dc-different-different-lambda", "ev-different")


def per_agent_regret(pop: Population, pred: torch.Tensor, released: bool) -> np.ndarray:
    """Mean regret ``[M]`` over the split's clock positions under one context-cycling rule."""
    idx = torch.arange(pop.num_steps)
    truth = pop.truth(idx)
    ctx_index = idx % RELEASED_BATCH if released else idx
    total, count = [], []
    for g in pop.groups:
        reg = g.evaluate(pred.unsqueeze(0), truth, ctx_index).regret  # [M_g, N]; context read at ctx_index
        lengths = torch.tensor(g.context_lengths())
        scored = (ctx_index.unsqueeze(0) < lengths.unsqueeze(1)) if released else torch.ones_like(reg, dtype=bool)
        total.append((reg * scored).sum(1))
        count.append(scored.sum(1))
    return (torch.cat(total) / torch.cat(count)).numpy()


def models_for(population: str) -> dict[str, torch.nn.Module]:
    base = {"population": population, "layout": "shared", "val_fraction": 0.0, "seed": 0, "epochs": 6,
            "max_batches": 20}
    if not population.startswith("dc-"):
        base.update(batch_size=64, lr=3e-3)
    slot = {} if population.startswith("dc-") else {"estimator": "reinforce_weighted", "baseline": "loo",
                                                    "num_samples": 4}
    torch.manual_seed(0)
    out = {"untrained": build_public_model(TrainConfig.from_dict(base).model_config)}
    out["Plain PM"] = train(TrainConfig.from_dict({**base, "objective": "mse"})).model
    for qp1 in (1.0, 20.0):
        out[f"Equitable PM q+1={qp1:g}"] = train(TrainConfig.from_dict({**base, "q_plus_1": qp1, **slot})).model
    return out


def main() -> None:
    torch.set_num_threads(int(os.environ.get("EQPM_THREADS", "1")))
    print("| population | model | max rel. diff of an agent's mean regret | correlation across agents | "
          "variance (ours / released) | worst (ours / released) | mean (ours / released) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in POPULATIONS:
        cfg = TrainConfig(population=name, layout="shared", val_fraction=0.0)
        pop = cfg.build_population("train")
        for label, model in models_for(name).items():
            pred = predict(model, pop)
            ours, rel = per_agent_regret(pop, pred, False), per_agent_regret(pop, pred, True)
            a, b = equity_metrics(ours), equity_metrics(rel)
            diff = float(np.max(np.abs(ours - rel) / np.maximum(rel, 1e-12)))
            corr = float(np.corrcoef(ours, rel)[0, 1])
            print(f"| {name} | {label} | {diff:.3f} | {corr:.4f} | {a['variance']:.4g} / {b['variance']:.4g} | "
                  f"{a['worst']:.4g} / {b['worst']:.4g} | {a['mean']:.4g} / {b['mean']:.4g} |", flush=True)


if __name__ == "__main__":
    main()
