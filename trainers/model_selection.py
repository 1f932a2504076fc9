"""Model selection across a study's configurations, on validation only; held-out points, targets and Pareto plots.

Each run of a study (:mod:`trainers.studies`) already saved its best
validation epoch.  Per setting, split protocol and seed, this module picks
which run stands for each method, reading only the runs' **validation**
metrics (``val_*`` columns of :func:`trainers.grid.collect`):

* ``Plain PM`` -- the Plain PM run (its epoch chosen on validation MSE);
* ``Utilitarian PM`` -- among the q+1 = 1 runs (beta = 0) and, when they were
  fine-tuned from the Plain PM, that starting point ("epoch 0"): the lowest
  validation mean regret (the utilitarian objective);
* ``Equitable PM`` -- among the q+1 > 1 runs (every beta and learning rate) and
  the starting point: the lowest validation worst-agent regret among those whose
  validation mean regret is within :data:`MEAN_GUARD` (5 %) of the selected
  Utilitarian PM's; if none is, the lowest validation mean regret.

With ``accuracy_guard=g`` (off by default; ``benchmarks/explore_accuracy_guard.py``
measures it, docs/fresh_check.md checks it on fresh data) a Utilitarian or
Equitable run is a candidate only if its validation MSE is at most ``(1 + g)``
times the Plain PM's: a public model that must stay a usable forecast.  The
starting point always is.  ``guard_metric="mean"`` guards validation mean
regret instead (the issue's option for agents that only rank predictions; it
rarely binds, as the Utilitarian PM's mean regret is below the Plain PM's).

With ``warm_start_only=True`` (off by default; docs/fresh_check.md, second
check) the Utilitarian and Equitable candidates are the fine-tunes from the
seed's Plain PM and that starting point only: runs from scratch are not
deployed (issue 10 item 3's warm start).  Settings without fine-tunes keep
their runs.

Counting the starting point as a candidate is early stopping with epoch 0
included: a fine-tune that never beats the Plain PM on validation is not
deployed.  The rows then say so (``start=True``; the held-out numbers are the
Plain PM's).

:func:`selected_table` gives those rows with their held-out (test) metrics,
:func:`target_claims` the issue's targets checked on them, and
:func:`plot_pareto` the held-out accuracy against worst agent and variance of
every configuration, the Plain PM, the Utilitarian PM and the selected
Equitable PM marked.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

METHODS = ("Plain PM", "Utilitarian PM", "Equitable PM")
#: The Equitable PM's validation mean regret may exceed the Utilitarian PM's by at most this fraction.
MEAN_GUARD = 0.05
#: What an accuracy guard compares with the Plain PM's: validation MSE, or mean regret (agents that only rank).
GUARD_METRICS = ("mse", "mean")
#: The accuracy guard of the studies' and ``eqpm compare``'s selection (``--select-guard``; None: no guard).
DEFAULT_ACCURACY_GUARD: float | None = None
#: Whether the studies and ``eqpm compare`` deploy fine-tunes from the Plain PM only (``--select-from``).
DEFAULT_WARM_START_ONLY = False
#: Columns of ``selected.csv`` (issue 10): the held-out metrics of the validation-selected models, one row per seed.
SELECTED_COLUMNS = ["study", "setting", "protocol", "method", "seed", "variance", "worst", "mean", "mse"]
#: Columns of ``claims.csv``.
CLAIM_COLUMNS = ["study", "setting", "claim", "protocol", "split", "verdict"]
_HELD_OUT = ("variance", "worst", "mean", "mse", "c95_c5")


def _candidate(row: pd.Series, method: str, start: bool = False) -> dict[str, Any]:
    """One selected row: which run (or the starting point), its configuration and its held-out metrics."""
    return {"study": row["study"], "setting": row["setting"], "protocol": row["protocol"], "method": method,
            "seed": int(row["seed"]), **{k: float(row[k]) for k in _HELD_OUT},
            "run_id": row["run_id"], "start": start, "recipe": "start" if start else row.get("recipe"),
            "q_plus_1": np.nan if start or method == "Plain PM" else float(row["q_plus_1"]),
            "beta": 0.0 if start else float(row["beta"]), "lr": row.get("lr"),
            "epoch": 0 if start else row.get("selected_epoch"),
            **{f"val_{k}": float(row[f"val_{k}"]) for k in ("variance", "worst", "mean", "mse")}}


def select_seed(group: pd.DataFrame, guard: float = MEAN_GUARD, accuracy_guard: float | None = None,
                guard_metric: str = "mse", warm_start_only: bool = False) -> list[dict[str, Any]]:
    """The three methods' selected rows for one (study, setting, protocol, seed); see the module doc."""
    plain = group[group["method"] == "Plain PM"]
    if len(plain) != 1 or "val_mean" not in group or group["val_mean"].isna().all():
        return []
    p = plain.iloc[0]
    eq = group[group["method"] == "Equitable PM"]
    fine_tuned = bool(eq["init_run"].eq(p["run_id"]).any()) if len(eq) else False
    if warm_start_only and fine_tuned:  # runs from scratch are not candidates
        eq = eq[eq["init_run"].eq(p["run_id"])]
    if accuracy_guard is not None:  # after fine_tuned: the starting point stays a candidate when no run passes
        if guard_metric not in GUARD_METRICS:
            raise ValueError(f"guard_metric {guard_metric!r} is not accepted; accepted: {', '.join(GUARD_METRICS)}")
        col = f"val_{guard_metric}"
        eq = eq[eq[col] <= (1.0 + accuracy_guard) * p[col]]
    out = [_candidate(p, "Plain PM")]

    def options(cands: pd.DataFrame, method: str, with_start: bool) -> list[dict[str, Any]]:
        opts = [_candidate(r, method) for _, r in cands.iterrows()]
        return opts + [_candidate(p, method, start=True)] if with_start else opts

    def best(opts: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
        return min(opts, key=lambda c: tuple(c[k] for k in keys))

    util = eq[(eq["q_plus_1"] == 1.0) & (eq["beta"] == 0.0)]
    if util.empty and not (accuracy_guard is not None and fine_tuned):
        return out
    u = best(options(util, "Utilitarian PM", fine_tuned), ("val_mean",))
    out.append(u)
    cands = eq[eq["q_plus_1"] > 1.0]
    if cands.empty and not (accuracy_guard is not None and fine_tuned):
        return out
    limit = u["val_mean"] * (1.0 + guard)
    admissible = [c for c in options(cands, "Equitable PM", fine_tuned) if c["val_mean"] <= limit]
    fallback = options(cands, "Equitable PM", False) or options(cands, "Equitable PM", True)  # start if no run
    out.append(best(admissible, ("val_worst", "val_variance")) if admissible else best(fallback, ("val_mean",)))
    return out


def select_models(runs: pd.DataFrame, guard: float = MEAN_GUARD, accuracy_guard: float | None = None,
                  guard_metric: str = "mse", warm_start_only: bool = False) -> pd.DataFrame:
    """Selected rows (one per study, setting, protocol, seed and method) from :func:`trainers.grid.collect` rows
    (with a ``study`` column)."""
    rows: list[dict[str, Any]] = []
    for _, g in runs.groupby(["study", "setting", "protocol", "seed"], sort=False):
        rows.extend(select_seed(g, guard, accuracy_guard, guard_metric, warm_start_only))
    return pd.DataFrame(rows)


def selected_table(selected: pd.DataFrame) -> pd.DataFrame:
    """``selected.csv``: :data:`SELECTED_COLUMNS` only."""
    return selected[SELECTED_COLUMNS] if len(selected) else pd.DataFrame(columns=SELECTED_COLUMNS)


def method_summary(selected: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the held-out metrics per (study, setting, protocol, method)."""
    g = selected.groupby(["study", "setting", "protocol", "method"], sort=False)
    out = g[list(_HELD_OUT)].mean().add_suffix("_mean").join(g[list(_HELD_OUT)].std(ddof=1).add_suffix("_std"))
    out["seeds"] = g.size()
    out["start_chosen"] = g["start"].sum()
    return out.reset_index()


def _verdict(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def target_claims(selected: pd.DataFrame, guard: float = MEAN_GUARD) -> list[dict[str, Any]]:
    """The issue's per-setting targets on the held-out split, from the selected models (means over seeds).

    * no over-shoot: the Equitable PM's variance and worst agent exceed the Plain PM's by at most the seed spread
      (the larger of the two methods' standard deviations over seeds);
    * beats the Plain PM: lower variance and lower worst agent;
    * beats both: lower variance and worst agent than the Plain and the Utilitarian PM, with mean regret within
      ``guard`` of the Utilitarian PM's.

    Each claim row carries its numbers in ``evidence``.
    """
    out = []
    s = method_summary(selected)
    for (study, setting, protocol), g in s.groupby(["study", "setting", "protocol"], sort=False):
        by = {r["method"]: r for _, r in g.iterrows()}
        if "Equitable PM" not in by:
            continue
        e, p, u = by["Equitable PM"], by["Plain PM"], by.get("Utilitarian PM")

        spread = {m: float(np.nanmax([e[f"{m}_std"], p[f"{m}_std"], 0.0])) for m in ("variance", "worst")}
        no_over = all(e[f"{m}_mean"] - p[f"{m}_mean"] <= spread[m] for m in ("variance", "worst"))
        beats_plain = all(e[f"{m}_mean"] < p[f"{m}_mean"] for m in ("variance", "worst"))
        nums = (f"Equitable variance {e['variance_mean']:.4g} ± {e['variance_std']:.2g}, worst {e['worst_mean']:.4g} "
                f"± {e['worst_std']:.2g}, mean {e['mean_mean']:.4g}; Plain {p['variance_mean']:.4g} ± "
                f"{p['variance_std']:.2g}, {p['worst_mean']:.4g} ± {p['worst_std']:.2g}, {p['mean_mean']:.4g}")
        base = {"study": study, "setting": setting, "protocol": protocol, "split": "test"}
        out.append({**base, "claim": "Target: selected Equitable PM not worse than the Plain PM on variance or "
                                     "worst agent beyond the seed spread", "verdict": _verdict(no_over),
                    "evidence": nums})
        out.append({**base, "claim": "Target: selected Equitable PM below the Plain PM on variance and worst agent",
                    "verdict": _verdict(beats_plain), "evidence": nums})
        if u is not None:
            beats_both = beats_plain and all(e[f"{m}_mean"] < u[f"{m}_mean"] for m in ("variance", "worst")) \
                and e["mean_mean"] <= (1 + guard) * u["mean_mean"]
            out.append({**base, "claim": "Target: selected Equitable PM below the Plain and the Utilitarian PM on "
                                         "variance and worst agent, mean regret within 5 % of the Utilitarian's",
                        "verdict": _verdict(beats_both),
                        "evidence": nums + f"; Utilitarian {u['variance_mean']:.4g}, {u['worst_mean']:.4g}, "
                                           f"{u['mean_mean']:.4g} (mean ratio {e['mean_mean'] / u['mean_mean']:.3f})"})
    return out


def claims_frame(claims: list[dict[str, Any]]) -> pd.DataFrame:
    """Claim rows as ``claims.csv`` (:data:`CLAIM_COLUMNS`)."""
    return pd.DataFrame(claims, columns=CLAIM_COLUMNS) if claims else pd.DataFrame(columns=CLAIM_COLUMNS)


# ------------------------------------------------------------------------------ Pareto plots
def accuracy_metric(runs: pd.DataFrame) -> str:
    """``mse`` where agents use the prediction's level (every Equitable PM pathwise: data centers), else ``mean``
    regret (ranking agents, for whom the level does not matter)."""
    eq = runs[runs["method"] == "Equitable PM"]
    return "mse" if len(eq) and (eq["estimator"] == "pathwise").all() else "mean"


def _config_label(r: pd.Series) -> str:
    lab = f"q+1={r['q_plus_1']:g}"
    lab += f", β={r['beta']:g}" if r["beta"] > 0 else ""
    return lab + (", scratch" if r.get("recipe") == "scratch" else "")


def plot_pareto(runs: pd.DataFrame, selected: pd.DataFrame, path: str | Path, title: str) -> None:
    """Held-out accuracy (MSE or mean regret) against worst agent and against variance, one row per setting.

    Points are means over seeds: every Equitable configuration (its validation-selected epoch; "scratch" marks
    the runs not fine-tuned from the Plain PM), the Plain PM (square), the q+1 = 1 runs (triangles, open from
    scratch) and the validation-selected Equitable PM (star).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(runs["setting"]))
    fig, axes = plt.subplots(len(settings), 2, figsize=(9.0, 3.2 * len(settings)), squeeze=False)
    for row, setting in zip(axes, settings):
        g = runs[runs["setting"] == setting]
        acc = accuracy_metric(g)
        means = g.groupby(["method", "q_plus_1", "beta", "recipe"], dropna=False)[["variance", "worst", acc]] \
            .mean().reset_index()
        sel = selected[(selected["setting"] == setting) & (selected["method"] == "Equitable PM")]
        for ax, metric in zip(row, ("worst", "variance")):
            for _, r in means.iterrows():
                if r["method"] == "Plain PM":
                    ax.plot(r[metric], r[acc], "ks", ms=8, label="Plain PM")
                elif r["q_plus_1"] == 1.0 and r["beta"] == 0.0:
                    ax.plot(r[metric], r[acc], "^", color="C1", ms=8, label="Utilitarian PM (q+1=1)",
                            fillstyle="none" if r["recipe"] == "scratch" else "full")
                else:
                    ax.plot(r[metric], r[acc], "o", color="C0", alpha=0.6)
                    ax.annotate(_config_label(r), (r[metric], r[acc]), fontsize=6, xytext=(3, 3),
                                textcoords="offset points")
            if len(sel):
                ax.plot(sel[metric].mean(), sel[acc].mean(), "*", color="C3", ms=13,
                        label="Equitable PM (selected on validation)")
            ax.set_xlabel(f"{metric} of per-agent regret (held-out)")
            ax.set_ylabel("MSE (held-out)" if acc == "mse" else "mean regret (held-out)")
            ax.set_title(setting, fontsize=9)
            handles, labels = ax.get_legend_handles_labels()
            uniq = dict(zip(labels, handles))
            ax.legend(uniq.values(), uniq.keys(), fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fmt(mean: float, std: float, n: int) -> str:
    """``mean ± std`` (std only with more than one seed)."""
    def g(v: float) -> str:
        return f"{v:.3g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4g}"
    return f"{g(mean)} ± {std:.2g}" if n > 1 and math.isfinite(std) else g(mean)


def selected_markdown(selected: pd.DataFrame) -> str:
    """Per setting and protocol: the three methods' held-out points (mean ± std over seeds) and what was chosen."""
    s = method_summary(selected)
    lines = ["| Setting | Protocol | Method | Variance | Worst agent | Mean | MSE | Configurations chosen (per seed) |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        rows = selected[(selected["setting"] == r["setting"]) & (selected["protocol"] == r["protocol"])
                        & (selected["method"] == r["method"])]
        chosen = "; ".join("start (Plain PM)" if c["start"] else
                           ("-" if r["method"] == "Plain PM" else _config_label(c)) + f", epoch {c['epoch']:g}"
                           for _, c in rows.iterrows())
        n = int(r["seeds"])
        lines.append(f"| {r['setting']} | {r['protocol']} | {r['method']} | "
                     + " | ".join(fmt(r[f"{m}_mean"], r[f"{m}_std"], n) for m in ("variance", "worst", "mean", "mse"))
                     + f" | {chosen} |")
    return "\n".join(lines)
