"""Selecting one configuration per setting instead of one run per seed (exploration, issue 10; no training).

The studies pick, per seed, the Utilitarian and the Equitable PM among that seed's runs on validation
(``trainers/model_selection.py``).  With a short validation stretch that can pick noise ("winner's curse").  This
re-analyses the studies' per-run tables with the alternative: one configuration (q + 1, β, start, rule) per setting
and protocol, the one with the best validation score averaged over the seeds (same criteria: the Utilitarian PM
by mean regret; the Equitable PM by worst agent among those within 5 % of the Utilitarian's mean), then each
seed's run of that configuration.  It prints the three verdicts of issue 10's targets per setting.

    python benchmarks/explore_config_selection.py [docs/results/table2_per_run.csv ...]
"""
from __future__ import annotations

import glob
import sys

import pandas as pd

GUARD = 0.05  # as trainers.model_selection.MEAN_GUARD
HELD_OUT = ["variance", "worst", "mean"]


def configs(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run of one setting and protocol labelled by its configuration (the Plain PM is 'start')."""
    runs = runs.copy()
    recipe = runs["recipe"].fillna("scratch")
    runs["cfg"] = [f"q+1={q:g} beta={b:g} {r} {e}" for q, b, r, e in
                   zip(runs.q_plus_1, runs.beta, recipe, runs.estimator)]
    runs.loc[runs.method == "Plain PM", "cfg"] = "start"
    return runs


def select(g: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The held-out rows (one per seed) of the Plain, Utilitarian and Equitable PM of one setting and protocol."""
    plain = g[g.method == "Plain PM"]
    eq = g[g.method == "Equitable PM"]
    val = ["val_mean", "val_worst", "val_variance"]
    util = pd.concat([eq[(eq.q_plus_1 == 1) & (eq.beta == 0)], plain]).groupby("cfg")[val].mean()
    u = util["val_mean"].idxmin()
    cands = pd.concat([eq[eq.q_plus_1 > 1], plain]).groupby("cfg")[val].mean()
    ok = cands[cands.val_mean <= util.loc[u, "val_mean"] * (1 + GUARD)]
    e = (ok if len(ok) else cands).sort_values(["val_worst", "val_variance"]).index[0]
    return {"Plain PM": plain, "Utilitarian PM": g[g.cfg == u], "Equitable PM": g[g.cfg == e], "cfg": e}


def main() -> None:
    files = sys.argv[1:] or sorted(glob.glob("docs/results/*_per_run.csv"))
    out = []
    for f in files:
        d = pd.read_csv(f)
        if not {"val_mean", "protocol", "init_run"} <= set(d.columns):
            continue  # an older table without validation columns
        study = f.rsplit("/", 1)[-1].removesuffix("_per_run.csv")
        for (setting, protocol), g in configs(d).groupby(["setting", "protocol"]):
            if not (g.method == "Equitable PM").any():
                continue
            s = select(g)
            P, U, E = (s[m][HELD_OUT].agg(["mean", "std"]) for m in ("Plain PM", "Utilitarian PM", "Equitable PM"))
            spread = {k: max(E.loc["std", k], P.loc["std", k]) for k in HELD_OUT}
            m = {k: (P.loc["mean", k], U.loc["mean", k], E.loc["mean", k]) for k in HELD_OUT}
            out.append({
                "study": study, "setting": setting, "protocol": protocol, "equitable": s["cfg"],
                "plain var/worst": f"{m['variance'][0]:.4g}/{m['worst'][0]:.4g}",
                "util var/worst/mean": f"{m['variance'][1]:.4g}/{m['worst'][1]:.4g}/{m['mean'][1]:.4g}",
                "equitable var/worst/mean": f"{m['variance'][2]:.4g}/{m['worst'][2]:.4g}/{m['mean'][2]:.4g}",
                "no over-shoot": all(m[k][2] <= m[k][0] + spread[k] for k in ("variance", "worst")),
                "beats Plain": all(m[k][2] < m[k][0] for k in ("variance", "worst")),
                "beats both": all(m[k][2] < min(m[k][0], m[k][1]) for k in ("variance", "worst"))
                and m["mean"][2] <= (1 + GUARD) * m["mean"][1]})
    pd.set_option("display.width", 300)
    pd.set_option("display.max_colwidth", 50)
    print(pd.DataFrame(out).to_string(index=False))


if __name__ == "__main__":
    main()
