"""Headroom on the held-out months: how equitable can one shared forecast be *there*?  (exploration, issue 10)

An Equitable PM trained on earlier months can only be as good on the held-out months as the best shared
forecast for those months.  This trains the studies' recipes (``trainers/studies.py``: the Plain PM, then
q + 1 in {1, 5, 20} from scratch at 3e-3 / sqrt(q + 1) and fine-tuned from that Plain PM at 3e-4, 250 Adam steps
each, last epoch) **on the test split itself** and scores them in-sample on it.  It is an oracle, never a model
anyone could deploy: the gap between its numbers and the validation-selected models of docs/results.md is what
the training months fail to teach, and its spread between q + 1 = 1 and 20 is how much a shared forecast has to
trade on those months at all.

    EQPM_THREADS=1 python benchmarks/explore_headroom.py ev-home-slots:CISO ev-home-windows:CISO [--epochs 10]

Writes nothing but its run directories under ``--out`` and prints the table (mean over seeds 0 1 2).
"""
from __future__ import annotations

import argparse
import math
from multiprocessing import Pool
from pathlib import Path

import pandas as pd
import torch

from trainers import studies as S
from trainers.config import TrainConfig
from trainers.evaluation import evaluate
from trainers.training import train

_BUILD = TrainConfig.build_population


def _train_on_test(self: TrainConfig, split: str = "train"):
    # the oracle: the trainer's "train" split is the test split (no validation: last epoch)
    return _BUILD(self, "test" if split == "train" else split)


def headroom(args: tuple[str, str, int, str, int]) -> list[dict]:
    pop, region, seed, root, epochs = args
    TrainConfig.build_population = _train_on_test
    torch.set_num_threads(1)
    base = dict(population=pop, region=region, seed=seed, layout="shared", protocol="time", validate_every=0,
                selection="last", checkpoint_every=10_000, **S.SLOT_TRAINING)
    rows = []

    def run(name: str, **kw) -> str:
        cfg = TrainConfig.from_dict({**base, **kw})
        out = f"{root}/{pop}-{region}-s{seed}-{name}"
        model = train(cfg, out, tensorboard=False).model
        t = evaluate({name: model}, _BUILD(cfg, "test")).iloc[0]
        rows.append({"setting": f"{pop}, {region}", "seed": seed, "run": name,
                     **{k: float(t[k]) for k in ("variance", "worst", "mean", "mse")}})
        return out

    plain = run("Plain PM", objective="mse", epochs=epochs)
    for q1 in (1.0, 5.0, 20.0):
        eq = dict(objective="equitable", q=q1 - 1, **S.WEIGHTED)
        run(f"q+1={q1:g} scratch", lr=S.SLOT_TRAINING["lr"] / math.sqrt(q1), epochs=epochs, **eq)
        run(f"q+1={q1:g} fine-tune", lr=S.SLOT_TRAINING["lr"] * S.FINE_TUNE_LR_FACTOR, epochs=epochs,
            init_from=f"{plain}/model.pt", **eq)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("settings", nargs="+", metavar="POPULATION:REGION")
    ap.add_argument("--epochs", type=int, default=S.PLAIN_EPOCHS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/explore_headroom"))
    a = ap.parse_args()
    jobs = [(*st.split(":"), s, str(a.out), a.epochs) for st in a.settings for s in a.seeds]
    with Pool(a.processes) as pool:
        rows = [r for rs in pool.imap_unordered(headroom, jobs) for r in rs]
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print(df.groupby(["setting", "run"], sort=False)[["variance", "worst", "mean", "mse"]].mean().round(3))


if __name__ == "__main__":
    main()
