"""Which populations give a shared public model something to trade off?  (docs/tradeoffs.md)

For each population, on the paper's shared layout, trains the Plain PM (MSE),
the utilitarian PM (q + 1 = 1: the mean regret) and Equitable PMs (q + 1 = 5
and 20) with the project's trainer at one small budget each, and scores every
agent's mean regret on the training split and on the held-out test split
(time-ordered, per-step decisions).  A population has a trade-off when raising
q *redistributes* regret between agents -- the worst agent's regret falls while
others' rise -- rather than scaling every agent's regret together.  The
column ``spread`` measures that: the standard deviation over agents of
``log(C_m(q) / C_m(q+1 = 1))``; it is 0 when every agent's regret changes by the
same factor (nothing traded) and grows with the redistribution.  Its noise
floor, printed last, is the same spread between two seeds of the utilitarian PM.

    EQPM_THREADS=1 python benchmarks/bench_tradeoffs.py [--seeds 0 1] [--warm-start] [--out runs/tradeoffs]

``--warm-start``: the utilitarian and Equitable PMs start from the Plain PM of
the same seed (``TrainConfig.init_from``) and fine-tune it at a lower
learning rate (:data:`FINE_TUNE_LR`) for the same number of steps, so that
every q starts from one good forecaster and the comparison shows where each q
moves the agents, not how fast REINFORCE learns from scratch.

Runs are resumable: a finished run (``result.json`` in its directory) is not
trained again.  Writes ``tradeoffs_runs.csv`` (one row per run and split) and
``tradeoffs_agents.csv`` (per-agent regrets) into ``--results`` and prints the
markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainers.config import TrainConfig
from trainers.evaluation import agent_regrets
from trainers.metrics import equity_metrics
from trainers.networks import load_public_model
from trainers.training import train

#: The control (data centers on a shared clock: no trade-off by the algebra), then the candidates.
POPULATIONS = ("dc-different-different-lambda", "phone", "ev-home-slots", "ev-home-windows", "phone-home-windows",
               "mixed")
METHODS = (("Plain PM", None), ("Utilitarian PM", 1.0), ("Equitable PM", 5.0), ("Equitable PM", 20.0))
#: One small budget per population kind (Adam steps = epochs x max_batches), the same for every method.
BUDGET_DC = {"epochs": 12, "max_batches": 25, "batch_size": 128}  # lr 0.05 (the paper's), pathwise
BUDGET_SLOTS = {"epochs": 15, "max_batches": 30, "batch_size": 64, "lr": 3e-3}
WEIGHTED = {"estimator": "reinforce_weighted", "baseline": "loo", "num_samples": 4}
#: Learning rates of the warm-started fine-tuning (data centers, slot agents): a tenth / a third of the above.
FINE_TUNE_LR = {"dc": 5e-3, "slots": 1e-3}


def run_config(population: str, qp1: float | None, seed: int, init_from: Path | None = None) -> TrainConfig:
    dc = population.startswith("dc-")
    d = {"population": population, "seed": seed, "layout": "shared", "protocol": "time", "checkpoint_every": 5}
    d.update(BUDGET_DC if dc else BUDGET_SLOTS)
    if qp1 is None:
        d["objective"] = "mse"
    else:
        d.update(objective="equitable", q_plus_1=qp1)
        if not dc:
            d.update(WEIGHTED)
        if init_from is not None:
            d.update(init_from=str(init_from), lr=FINE_TUNE_LR["dc" if dc else "slots"])
    return TrainConfig.from_dict(d)


def run_one(out: Path, population: str, method: str, qp1: float | None, seed: int, warm: bool = False) -> dict:
    tag = "plain" if qp1 is None else f"{'ws-' if warm else ''}q{qp1:g}"
    run_dir = out / population / f"{tag}-seed{seed}"
    done = run_dir / "result.json"
    plain = out / population / f"plain-seed{seed}" / "model.pt"
    cfg = run_config(population, qp1, seed, plain if warm and qp1 is not None else None)
    if done.is_file() and json.loads(done.read_text())["config"] == cfg.to_dict():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    train(cfg, run_dir, tensorboard=False)
    model = load_public_model(run_dir / "model.pt")
    rec = {"population": population, "method": method, "q_plus_1": qp1, "seed": seed, "config": cfg.to_dict(),
           "start": "warm" if cfg.init_from else "scratch",
           "train_seconds": time.perf_counter() - t0, "splits": {}}
    for split in ("train", "test"):
        pop = cfg.build_population(split)
        regrets, mse = agent_regrets(model, pop)
        rec["splits"][split] = {"agents": pop.agent_names, "regret": regrets.tolist(),
                                **equity_metrics(regrets, pop.agent_names, mse)}
    done.write_text(json.dumps(rec, indent=1))
    return rec


def spread(reg: np.ndarray, ref: np.ndarray) -> float:
    """Std over agents of log(C_m / C_m,ref) (agents with zero regret in either model left out)."""
    ok = (reg > 0) & (ref > 0)
    return float(np.log(reg[ok] / ref[ok]).std()) if ok.sum() > 1 else float("nan")


def tables(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, agents = [], []
    util = {(r["population"], r["seed"]): r for r in records if r["q_plus_1"] == 1.0}
    for r in records:
        for split, s in r["splits"].items():
            ref = util.get((r["population"], r["seed"]))
            sp = spread(np.array(s["regret"]), np.array(ref["splits"][split]["regret"])) if ref else float("nan")
            rows.append({"population": r["population"], "start": r.get("start", "scratch"), "method": r["method"],
                         "q_plus_1": r["q_plus_1"],
                         "seed": r["seed"], "split": split, "variance": s["variance"], "worst": s["worst"],
                         "mean": s["mean"], "mse": s["mse"], "jain": s["jain"], "spread_vs_utilitarian": sp,
                         "train_seconds": r["train_seconds"]})
            agents += [{"population": r["population"], "method": r["method"], "q_plus_1": r["q_plus_1"],
                        "seed": r["seed"], "split": split, "agent": a, "regret": c}
                       for a, c in zip(s["agents"], s["regret"])]
    return pd.DataFrame(rows), pd.DataFrame(agents)


def seed_noise(records: list[dict]) -> pd.DataFrame:
    """The same spread between two seeds of the utilitarian PM: how much agents move by training noise alone."""
    rows = []
    for population in dict.fromkeys(r["population"] for r in records):
        util = [r for r in records if r["population"] == population and r["q_plus_1"] == 1.0]
        for split in ("test", "train"):
            pairs = [spread(np.array(a["splits"][split]["regret"]), np.array(b["splits"][split]["regret"]))
                     for i, a in enumerate(util) for b in util[i + 1:]]
            if pairs:
                rows.append({"population": population, "split": split, "seed_to_seed_spread": float(np.mean(pairs))})
    return pd.DataFrame(rows)


def markdown(runs: pd.DataFrame) -> str:
    g = runs.groupby(["population", "split", "method", "q_plus_1"], dropna=False, sort=False)
    m = g[["variance", "worst", "mean", "mse", "spread_vs_utilitarian"]].agg(["mean", "std"]).reset_index()
    n = g.size().to_numpy()
    lines = ["| population | split | method | q+1 | seeds | variance | worst agent | mean | MSE | spread vs q+1=1 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(row, col):
        mu, sd = row[(col, "mean")], row[(col, "std")]
        return "-" if pd.isna(mu) else (f"{mu:.4g}" if pd.isna(sd) else f"{mu:.4g} ± {sd:.2g}")

    for (_, row), k in zip(m.iterrows(), n):
        q = row[("q_plus_1", "")]
        lines.append(f"| {row[('population', '')]} | {row[('split', '')]} | {row[('method', '')]} | "
                     f"{'-' if pd.isna(q) else f'{q:g}'} | {k} | " +
                     " | ".join(cell(row, c) for c in ("variance", "worst", "mean", "mse", "spread_vs_utilitarian"))
                     + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--populations", nargs="+", default=list(POPULATIONS))
    ap.add_argument("--out", type=Path, default=Path("runs/tradeoffs"), help="run directories")
    ap.add_argument("--results", type=Path, default=Path("docs/results"), help="where the CSVs go")
    ap.add_argument("--warm-start", action="store_true", dest="warm",
                    help="fine-tune the utilitarian / Equitable PMs from the Plain PM (module docstring)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("EQPM_THREADS", "1")))
    records = []
    for population in args.populations:
        for seed in args.seeds:
            for method, qp1 in METHODS:
                rec = run_one(args.out, population, method, qp1, seed, args.warm)
                records.append(rec)
                te = rec["splits"]["test"]
                print(f"{population} seed {seed} {method} q+1={qp1}: {rec['train_seconds']:.0f} s, test variance "
                      f"{te['variance']:.4g}, worst {te['worst']:.4g}, mean {te['mean']:.4g}", flush=True)
    runs, agents = tables(records)
    args.results.mkdir(parents=True, exist_ok=True)
    suffix = "_warm" if args.warm else ""
    runs.to_csv(args.results / f"tradeoffs{suffix}_runs.csv", index=False)
    agents.to_csv(args.results / f"tradeoffs{suffix}_agents.csv", index=False)
    print(markdown(runs))
    noise = seed_noise(records)
    if len(noise):
        print("\nSeed-to-seed spread of the utilitarian PM (the noise floor of the spread column):")
        print(noise.to_string(index=False))


if __name__ == "__main__":
    main()
