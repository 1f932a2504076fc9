"""Over-shoot at large exponents: which training recipe keeps an Equitable PM at least as equitable as the Plain PM?

Issue 10, item 3.  Measured on the **training and validation splits only**
(time-ordered, paper's shared layout; the test split is never read here).
For each population and exponent, every recipe gets the same number of
optimizer steps:

* ``scratch``       -- from a random initialisation at the studies' learning rate
                       (data centers 0.05, pathwise; slot agents 3e-3, weighted REINFORCE, K = 4, loo);
* ``scratch-lr/p``  -- the same with the learning rate divided by ``sqrt(q + 1)`` (a per-exponent step rule);
* ``warm``          -- fine-tuned from the Plain PM of the same seed (``init_from``) at a tenth of that rate;
* ``warm-beta``     -- ``warm`` with the combined objective, beta = 0.5 (slot agents only).

Every run selects its ``model.pt`` on validation (the default equitable
criterion); the table reports, per recipe, the validation metrics of the
selected epoch and of the last epoch against the Plain PM's, and the training
split's metrics of the selected model.  Over-shoot = the last epoch's
validation variance / worst agent above the Plain PM's.

    EQPM_THREADS=1 python benchmarks/bench_overshoot.py [--seeds 0] [--out runs/overshoot]

Resumable: a finished run (``summary.json``) is not trained again.  Prints a
markdown table and writes ``overshoot.csv`` into ``--results``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pandas as pd
import torch

from trainers.config import TrainConfig
from trainers.evaluation import agent_regrets
from trainers.metrics import equity_metrics
from trainers.networks import load_public_model
from trainers.training import train

#: (population, exponents q+1): Table 1's and Table 2/4's largest exponents, the phones' and a trade-off population.
CASES = (("dc-different-same-lambda", (20.0,)), ("dc-different-different-lambda", (10.0,)),
         ("ev-different", (40.0,)), ("phone", (10.0,)), ("ev-home-slots", (20.0,)))
BUDGET_DC = {"epochs": 12, "batch_size": 128, "lr": 0.05}  # the whole training split an epoch (39 batches)
BUDGET_SLOTS = {"epochs": 12, "batch_size": 64, "max_batches": 25, "lr": 3e-3}
WEIGHTED = {"estimator": "reinforce_weighted", "baseline": "loo", "num_samples": 4}
RECIPES = ("scratch", "scratch-lr/p", "warm", "warm-beta")


def config(population: str, recipe: str | None, qp1: float | None, seed: int, plain: Path | None) -> dict:
    dc = population.startswith("dc-")
    d = {"population": population, "seed": seed, "checkpoint_every": 100, **(BUDGET_DC if dc else BUDGET_SLOTS)}
    if recipe is None:
        return {**d, "objective": "mse"}
    d.update(objective="equitable", q_plus_1=qp1, **({} if dc else WEIGHTED))
    if recipe == "scratch-lr/p":
        d["lr"] = d["lr"] / math.sqrt(qp1)
    if recipe.startswith("warm"):
        d.update(init_from=str(plain), lr=d["lr"] / 10)
    if recipe == "warm-beta":
        d["beta"] = 0.5
    return d


def run(out: Path, name: str, cfg: dict) -> dict:
    run_dir = out / name
    done = run_dir / "summary.json"
    if done.is_file() and json.loads(done.read_text())["config"] == cfg:
        return json.loads(done.read_text())
    c = TrainConfig.from_dict(cfg)
    res = train(c, run_dir, tensorboard=False)
    hist = pd.DataFrame(res.history)
    sel = hist[hist["epoch"] == res.selected_epoch].iloc[0] if res.selected_epoch else hist.iloc[-1]
    last = hist.iloc[-1]
    regrets, mse = agent_regrets(load_public_model(run_dir / "model.pt"), c.build_population("train"))
    tr = equity_metrics(regrets, None, mse)
    rec = {"config": cfg, "selected_epoch": int(sel["epoch"]),
           **{f"sel_{k}": float(sel[f"val_{k}"]) for k in ("variance", "worst", "mean", "mse")},
           **{f"last_{k}": float(last[f"val_{k}"]) for k in ("variance", "worst", "mean", "mse")},
           **{f"train_{k}": float(tr[k]) for k in ("variance", "worst", "mean", "mse")}}
    done.write_text(json.dumps(rec, indent=1))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--cases", nargs="+", help="populations to run (default: all of CASES)")
    ap.add_argument("--out", type=Path, default=Path("runs/overshoot"))
    ap.add_argument("--results", type=Path, default=Path("docs/results"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("EQPM_THREADS", "1")))
    rows = []
    for population, exps in CASES:
        if args.cases and population not in args.cases:
            continue
        for seed in args.seeds:
            plain_name = f"{population}/plain-seed{seed}"
            p = run(args.out, plain_name, config(population, None, None, seed, None))
            rows.append({"population": population, "q_plus_1": None, "recipe": "Plain PM", "seed": seed, **p})
            for qp1 in exps:
                for recipe in RECIPES:
                    if recipe == "warm-beta" and population.startswith("dc-"):
                        continue
                    cfg = config(population, recipe, qp1, seed, (args.out / plain_name / "model.pt").resolve())
                    r = run(args.out, f"{population}/{recipe.replace('/', '_')}-q{qp1:g}-seed{seed}", cfg)
                    rows.append({"population": population, "q_plus_1": qp1, "recipe": recipe, "seed": seed, **r})
                    print(f"{population} q+1={qp1:g} {recipe} seed {seed}: val sel var {r['sel_variance']:.4g} "
                          f"worst {r['sel_worst']:.4g}; last var {r['last_variance']:.4g} worst {r['last_worst']:.4g};"
                          f" Plain var {p['sel_variance']:.4g} worst {p['sel_worst']:.4g}", flush=True)
    df = pd.DataFrame(rows).drop(columns=["config"])
    args.results.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.results / "overshoot.csv", index=False)
    cols = ["population", "q_plus_1", "recipe", "selected_epoch", "sel_variance", "sel_worst", "sel_mean", "sel_mse",
            "last_variance", "last_worst", "last_mean", "train_variance", "train_worst", "train_mean"]
    g = df[cols].groupby(["population", "q_plus_1", "recipe"], dropna=False, sort=False).mean().reset_index()
    print(g.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
