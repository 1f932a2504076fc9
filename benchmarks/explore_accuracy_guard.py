"""Model selection with an accuracy guard (exploration, issue 10 item 2; no training).

A public model is a forecast many agents read, not only a ranking.  The studies' selection
(``trainers/model_selection.py``) lets the Utilitarian and Equitable PM give up the forecast's level (validation MSE
135 against the Plain PM's 10 for a run from scratch on ranking agents).  This re-analyses the studies' per-run
tables with one more rule: a candidate run is admissible only if its validation MSE is at most ``(1 + GUARD)``
times its seed's Plain PM's (``select_models(..., accuracy_guard=GUARD)``; the paper's "accuracy barely worse"
claim, docs/results.md, uses +25 %); the selection is otherwise the studies'.  Prints issue 10's three target
verdicts per setting, with and without the guard, from validation-only choices.

    python benchmarks/explore_accuracy_guard.py [--guard 0.25] [docs/results/table2_per_run.csv ...]
    python benchmarks/explore_accuracy_guard.py --warm-start-only [FILES]   # no runs from scratch instead
"""
from __future__ import annotations

import argparse
import glob

import pandas as pd

from trainers.model_selection import select_models, target_claims

SHORT = {"not worse": "no over-shoot", "below the Plain PM on": "beats Plain", "below the Plain and": "beats both"}


def verdicts(runs: pd.DataFrame, accuracy_guard: float | None = None, metric: str = "mse",
             warm_start_only: bool = False) -> pd.DataFrame:
    c = pd.DataFrame(target_claims(select_models(runs, accuracy_guard=accuracy_guard, guard_metric=metric,
                                                 warm_start_only=warm_start_only)))
    c["target"] = [next(v for k, v in SHORT.items() if k in claim) for claim in c.claim]
    return c.pivot_table(index=["study", "setting", "protocol"], columns="target", values="verdict", aggfunc="first")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--guard", type=float, default=0.25)
    ap.add_argument("--metric", choices=("mse", "mean"), default="mse")
    ap.add_argument("--warm-start-only", action="store_true",
                    help="compare the studies' rule with warm_start_only=True (no runs from scratch) instead")
    a = ap.parse_args()
    files = a.files or [f for f in sorted(glob.glob("docs/results/*_per_run.csv")) if "10epochs" not in f]
    frames = []
    for f in files:
        d = pd.read_csv(f)
        if {"val_mse", "init_run", "protocol"} <= set(d.columns):
            frames.append(d.assign(study=f.rsplit("/", 1)[-1].removesuffix("_per_run.csv")))
    runs = pd.concat(frames, ignore_index=True)
    if a.warm_start_only:
        g = verdicts(runs, warm_start_only=True)
        g.columns = [f"{c} (warm start only)" for c in g.columns]
    else:
        g = verdicts(runs, a.guard, a.metric)
        g.columns = [f"{c} ({a.metric} guard {a.guard:g})" for c in g.columns]
    both = verdicts(runs).join(g)
    pd.set_option("display.width", 250)
    print(both.to_string())
    for col in both.columns:
        for proto in ("time", "random"):
            n = (both.xs(proto, level="protocol")[col] == "holds").sum()
            print(f"{col:28s} {proto:6s}: holds in {n} of {len(both.xs(proto, level='protocol'))}")


if __name__ == "__main__":
    main()
