"""Exploration behind BENCHMARKS.md's "why we lose" (not a benchmark row): can ``eq_ppo`` improve the benchmark's
Plain PM on ev-different shared by fine-tuning it, with the epoch chosen on validation?

Needs the finished ``shared`` part of ``benchmarks/bench_baselines.py`` (its runs under
``benchmarks/results/baselines/shared/runs``): the Plain PM of a seed is that run's validation-chosen model
(``best.pt``). The fine-tune: ``eq_ppo`` at q + 1 = 20, K = 2, batch 128, 10 epochs of 20 batches (358,400
agent-decisions), validation every epoch, the epoch with the best validation Equitable Objective kept; then
both models are scored on the test split with the benchmark's evaluation code.

    python benchmarks/explore_finetune.py SEED LR BETA      # e.g. 0 1e-4 0
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from trainers.config import TrainConfig
from trainers.evaluation import agent_regrets
from trainers.metrics import equity_metrics
from trainers.networks import load_public_model
from trainers.training import train

RUNS = Path("benchmarks/results/baselines/shared/runs/ev-different-shared/mse")
MLP = {"backbone": "mlp", "backbone_kwargs": {"hidden": [64, 64]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed", type=int)
    ap.add_argument("lr", type=float)
    ap.add_argument("beta", type=float)
    ap.add_argument("--out", type=Path, default=Path("runs/explore-finetune"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    found = sorted(RUNS.glob(f"eval-*-seed{args.seed}-*/best.pt"))
    if not found:
        raise SystemExit(f"no Plain PM of seed {args.seed} under {RUNS}: run benchmarks/bench_baselines.py shared first")
    cfg = TrainConfig(population="ev-different", layout="shared", q_plus_1=20, estimator="eq_ppo", num_samples=2,
                      model=MLP, lr=args.lr, beta=args.beta, batch_size=128, epochs=10, max_batches=20,
                      seed=args.seed, init_from=str(found[0]), validate_every=1, selection="equitable")
    run = args.out / f"seed{args.seed}-lr{args.lr:g}-beta{args.beta:g}"
    train(cfg, run, tensorboard=False)
    test = cfg.build_population("test")
    for name, path in (("Plain PM", found[0]), ("eq_ppo fine-tune", run / "model.pt")):
        regret, mse = agent_regrets(load_public_model(path), test)
        m = equity_metrics(regret)
        print(f"seed {args.seed} lr {args.lr:g} beta {args.beta:g} {name}: test variance {m['variance']:.3f}, "
              f"mean {m['mean']:.3f}, worst {np.max(regret):.3f}, MSE {mse:.2f}")


if __name__ == "__main__":
    main()
