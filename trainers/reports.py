"""Tables, claim checks and plots of a study, built from its finished run directories.

For a study NAME under ``OUT`` :func:`write_study_report` writes

* ``OUT/NAME/per_run.csv`` -- one row per run and seed (every split protocol the study was run under);
* ``OUT/NAME/summary.csv`` and ``summary.md`` -- the paper's table format, mean ± std over seeds, per split
  protocol (per-step evaluation; the released code's mean-forecast protocol and the training split in
  further tables), and the validation-selected Plain, Utilitarian and Equitable PMs
  (:mod:`trainers.model_selection`);
* ``OUT/NAME/selected.csv`` -- the held-out metrics of the validation-selected models, one row per seed
  (``selected_configs.csv``: which run and epoch was chosen, with its validation numbers);
* ``OUT/NAME/claims.csv`` and ``claims.md`` -- each claim of the paper checked on the means over seeds (on the
  paper's grid of each setting), per protocol, on the held-out and the training split, and the issue-10
  targets on the selected models;
* PNG plots in ``figures_dir`` (default ``OUT/NAME``; when given, copies of the tables go there too,
  prefixed ``NAME_``): per-agent regret distributions (time protocol), variance and C95 - C5 against q+1
  and the held-out Pareto plot (accuracy against worst agent and variance) per protocol, and for the
  ``estimators`` study the training Equitable Objective against environment samples.

:func:`write_combined` gathers every reported study's ``claims.csv`` and ``selected.csv`` into one of each.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainers.grid import add_train_metrics, agent_regret_table, collect, run_dir
from trainers.model_selection import (
    CLAIM_COLUMNS,
    DEFAULT_ACCURACY_GUARD,
    DEFAULT_WARM_START_ONLY,
    SELECTED_COLUMNS,
    claims_frame,
    plot_pareto,
    select_models,
    selected_markdown,
    selected_table,
    target_claims,
)
from trainers.model_selection import fmt as _fmt
from trainers.studies import PAPER, RunSpec

KEY = ["protocol", "setting", "method", "q_plus_1", "beta", "estimator", "recipe"]
PROTOCOL_TITLES = {"time": "time-ordered split (held-out months after the training months)",
                   "random": "the paper's random per-agent partition (App. A.3.1)",
                   "blocked": "time-ordered test months, validation blocks spread over the training months"}
SUMMARY_METRICS = {"variance": "Variance", "mean": "Mean", "c95_c5": "C95−C5", "mse": "MSE", "worst": "Worst agent",
                   "entropy_ratio": "Entropy ratio"}


def _order(df: pd.DataFrame) -> pd.DataFrame:
    """Settings in study order; inside a setting Equitable PMs by q+1 and beta, the Plain PM last (as the paper)."""
    settings = list(dict.fromkeys(df["setting"]))
    df = df.assign(_p=df["protocol"].map(lambda p: list(PROTOCOL_TITLES).index(p) if p in PROTOCOL_TITLES else 9),
                   _s=df["setting"].map(settings.index), _plain=(df["method"] == "Plain PM").astype(int),
                   _q=df["q_plus_1"].fillna(0.0))
    return df.sort_values(["_p", "_s", "_plain", "_q", "beta", "estimator", "recipe"]) \
        .drop(columns=["_p", "_s", "_plain", "_q"])


def summarize(runs: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """Mean, std and seed count of each metric per (setting, method, q+1, beta, estimator)."""
    cols = [prefix + c for c in SUMMARY_METRICS]
    g = runs.groupby(KEY, dropna=False, sort=False)
    out = g[cols].mean().add_suffix("_mean").join(g[cols].std(ddof=1).add_suffix("_std"))
    out["seeds"] = g.size()
    out = out.reset_index()
    return _order(out)


def markdown_table(summary: pd.DataFrame, prefix: str = "") -> str:
    show_est = summary.loc[summary["method"] != "Plain PM", "estimator"].nunique() > 1
    show_beta = (summary["beta"] > 0).any()
    show_recipe = summary.loc[summary["method"] != "Plain PM", "recipe"].nunique() > 1
    head = ["Setting", "Method", "q+1"] + (["β"] if show_beta else []) + (["Estimator"] if show_est else []) \
        + (["Start"] if show_recipe else []) + list(SUMMARY_METRICS.values()) + ["Seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        cells = [r["setting"], r["method"], "-" if pd.isna(r["q_plus_1"]) else f"{r['q_plus_1']:g}"]
        if show_beta:
            cells.append("-" if r["method"] == "Plain PM" else f"{r['beta']:g}")
        if show_est:
            cells.append(r["estimator"])
        if show_recipe:
            cells.append("-" if r["method"] == "Plain PM" else
                         ("Plain PM" if r["recipe"] == "fine-tune" else "scratch, lr/√(q+1)"))
        n = int(r["seeds"])
        cells += [_fmt(r[f"{prefix}{c}_mean"], r[f"{prefix}{c}_std"], n) for c in SUMMARY_METRICS]
        cells.append(str(n))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_comparison(summary: pd.DataFrame, study: str) -> str:
    """Markdown: the paper's published numbers beside ours (held-out, per-step, mean ± std), row by row."""
    head = ["Setting", "Method", "q+1", "β", "Variance paper", "Variance ours", "Mean paper", "Mean ours",
            "C95−C5 paper", "C95−C5 ours", "MSE paper", "MSE ours"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        q = None if pd.isna(r["q_plus_1"]) else float(r["q_plus_1"])
        paper = PAPER.get((study, r["setting"], q, float(r["beta"])))
        if paper is None:
            continue
        cells = [r["setting"], r["method"], "-" if q is None else f"{q:g}",
                 "-" if r["method"] == "Plain PM" else f"{r['beta']:g}"]
        for value, m in zip(paper, ("variance", "mean", "c95_c5", "mse")):
            cells += ["(figure only)" if value is None else f"{value:.4g}",
                      _fmt(r[f"{m}_mean"], r[f"{m}_std"], int(r["seeds"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


# ----------------------------------------------------------------------------- claims
def _verdict(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def check_claims(runs: pd.DataFrame, study: str, prefix: str = "") -> list[dict[str, Any]]:
    """The paper's claims per setting, checked on the means over seeds.

    Each entry: setting, claim, holds (bool), evidence (the numbers).  Paired
    seed counts say in how many seeds an Equitable PM beat the Plain PM of the same seed.
    ``prefix`` picks the metrics: ``""`` held-out per-step, ``"train_"`` training split, ``"mf_"`` mean forecast.
    """
    out: list[dict[str, Any]] = []
    if prefix:
        cols = ["variance", "c95_c5", "mse", "mean"]
        runs = runs.drop(columns=[c for c in cols if c in runs]).rename(columns={prefix + c: c for c in cols})
    for setting, g in runs.groupby("setting", sort=False):
        plain = g[g["method"] == "Plain PM"]
        eq = g[g["method"] == "Equitable PM"]
        if plain.empty or eq.empty:
            continue
        p = plain[["variance", "c95_c5", "mse", "mean"]].mean()
        by = "beta" if study == "table4" else "q_plus_1"
        means = eq.groupby(by)[["variance", "c95_c5", "mse", "mean"]].mean().sort_index()
        paired = eq.merge(plain[["seed", "variance", "c95_c5"]], on="seed", suffixes=("", "_plain"))
        label = "β" if by == "beta" else "q+1"
        for metric, name in (("variance", "variance"), ("c95_c5", "C95−C5")):
            below = bool((means[metric] < p[metric]).all())
            wins = int((paired[metric] < paired[f"{metric}_plain"]).sum())
            ev = ", ".join(f"{label}={k:g}: {v:.4g}" for k, v in means[metric].items())
            out.append({"setting": setting, "claim": f"Equitable PM {name} below Plain PM for every {label}",
                        "holds": below, "evidence": f"Plain {p[metric]:.4g}; {ev}; Equitable below Plain in "
                                                    f"{wins}/{len(paired)} (run, seed) pairs"})
        if len(means) > 1:
            for metric, name in (("variance", "variance"), ("c95_c5", "C95−C5")):
                vals = means[metric].to_numpy()
                if by == "beta":  # the paper: beta = 0 is the most uniform, equity degrades as beta grows
                    ok = bool(np.all(np.diff(vals) >= 0))
                    claim = f"{name} grows with β (β = 0 most uniform)"
                else:
                    ok = bool(np.all(np.diff(vals) <= 0))
                    claim = f"{name} falls as q grows"
                out.append({"setting": setting, "claim": claim, "holds": ok,
                            "evidence": " → ".join(f"{v:.4g}" for v in vals)})
        if by == "beta":
            vals = means["mse"].to_numpy()
            out.append({"setting": setting, "claim": "MSE falls as β grows", "holds": bool(np.all(np.diff(vals) <= 0)),
                        "evidence": " → ".join(f"{v:.4g}" for v in vals) + f" (Plain {p['mse']:.4g})"})
        ratio = means["mse"] / p["mse"]
        # the paper: equity costs little accuracy; an Equitable PM more accurate than the Plain PM satisfies it too
        out.append({"setting": setting, "claim": "Equitable PM MSE at most slightly above Plain PM (≤ +25%)",
                    "holds": bool((ratio <= 1.25).all()),
                    "evidence": ", ".join(f"{label}={k:g}: ×{v:.3f}" for k, v in ratio.items())})
    return out


def _plain_markdown(df: pd.DataFrame) -> str:
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
                     + ["| " + " | ".join(r) + " |" for r in cells])


# ------------------------------------------------------------------------------ plots
def _label(r: pd.Series) -> str:
    if r["method"] == "Plain PM":
        return "Plain"
    lab = f"q+1={r['q_plus_1']:g}"
    if r["beta"] > 0 or r.get("study") == "table4":
        lab += f", β={r['beta']:g}"
    if r.get("study") == "estimators":
        lab = r["estimator"]
    return lab


def plot_distributions(runs: pd.DataFrame, specs: Sequence[RunSpec], root: Path, path: Path, title: str) -> None:
    """Box plots of per-agent held-out regret (averaged over seeds) per method, one panel per setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_id = {s.run_id: s for s in specs}
    settings = list(dict.fromkeys(runs["setting"]))
    fig, axes = plt.subplots(1, len(settings), figsize=(max(6.5, 4.2 * len(settings)), 3.8), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        g = _order(runs[runs["setting"] == setting])
        data, labels = [], []
        for lab, gg in g.groupby(g.apply(_label, axis=1), sort=False):
            per_seed = [agent_regret_table(root, by_id[i]) for i in gg["run_id"]]
            data.append(pd.concat(per_seed, axis=1).mean(axis=1).to_numpy())
            labels.append(lab)
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(setting, fontsize=9)
        ax.set_ylabel("per-agent held-out regret")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_equity_vs_q(summary: pd.DataFrame, path: Path, title: str, by: str = "q_plus_1") -> None:
    """Variance and C95 - C5 (mean ± std over seeds) against q+1 (or beta), the Plain PM as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(summary["setting"]))
    fig, axes = plt.subplots(2, len(settings), figsize=(max(6.5, 4.0 * len(settings)), 5.6), squeeze=False)
    for j, setting in enumerate(settings):
        g = summary[summary["setting"] == setting]
        eq = g[g["method"] == "Equitable PM"].sort_values(by)
        plain = g[g["method"] == "Plain PM"]
        for i, (m, name) in enumerate((("variance", "variance"), ("c95_c5", "C95−C5"))):
            ax = axes[i][j]
            x = np.arange(len(eq))
            ax.errorbar(x, eq[f"{m}_mean"], yerr=eq[f"{m}_std"].fillna(0), marker="o", capsize=3,
                        label="Equitable PM")
            if not plain.empty:
                pm, ps = float(plain[f"{m}_mean"].iloc[0]), float(plain[f"{m}_std"].fillna(0).iloc[0])
                ax.axhline(pm, ls="--", color="k", label="Plain PM")
                ax.axhspan(pm - ps, pm + ps, color="k", alpha=0.08)
            ax.set_xticks(x, [f"{v:g}" for v in eq[by]])
            ax.set_xlabel("β" if by == "beta" else "q+1")
            ax.set_ylabel(name)
            if i == 0:
                ax.set_title(setting, fontsize=9)
                ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def estimator_curves(runs: pd.DataFrame, specs: Sequence[RunSpec], root: Path) -> pd.DataFrame:
    """Per epoch and estimator: training Equitable Objective (norm form) against environment samples."""
    by_id = {s.run_id: s for s in specs}
    rows = []
    for _, r in runs.iterrows():
        m = pd.read_csv(run_dir(root, by_id[r["run_id"]]) / "metrics.csv")
        per_epoch = r["samples"] / max(len(m), 1)
        for _, e in m.iterrows():
            rows.append({"estimator": r["estimator"], "seed": r["seed"], "epoch": int(e["epoch"]),
                         "samples": per_epoch * e["epoch"], "eq_norm": e["eq_norm"]})
    return pd.DataFrame(rows)


def samples_to_reach(curves: pd.DataFrame, reference: str, window: int = 5) -> pd.DataFrame:
    """Samples each estimator needs to reach the reference estimator's final training objective.

    The target is the reference's mean over seeds of its last ``window`` epochs; an
    estimator reaches it at the first epoch whose ``window``-epoch running mean
    (averaged over seeds) is at or below the target.
    """
    mean = curves.groupby(["estimator", "epoch"])[["eq_norm", "samples"]].mean().reset_index()
    ref = mean[mean["estimator"] == reference].sort_values("epoch")
    target = float(ref["eq_norm"].tail(window).mean())
    rows = []
    for est, g in mean.groupby("estimator"):
        g = g.sort_values("epoch")
        smooth = g["eq_norm"].rolling(window, min_periods=window).mean()
        hit = g[smooth <= target]
        rows.append({"estimator": est, "target_eq_norm": target,
                     "samples_to_target": float(hit["samples"].iloc[0]) if len(hit) else float("nan"),
                     "final_eq_norm": float(g["eq_norm"].tail(window).mean())})
    return pd.DataFrame(rows)


def plot_estimator_curves(curves: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for est, g in curves.groupby("estimator"):
        m = g.groupby("epoch")[["samples", "eq_norm"]].mean()
        s = g.groupby("epoch")["eq_norm"].std().fillna(0)
        ax.plot(m["samples"], m["eq_norm"].rolling(5, min_periods=1).mean(), label=est)
        ax.fill_between(m["samples"], m["eq_norm"] - s, m["eq_norm"] + s, alpha=0.15)
    ax.set_xlabel("environment samples (agent-decisions)")
    ax.set_ylabel("training Equitable Objective (norm form)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ driver
STUDY_TITLES = {
    "table1": "Table 1 / Fig. 2: 50 data centers (CISO)",
    "table2": "Table 2 / Fig. 3: 70 EVs, carbon + water + price (CISO)",
    "table3": "Table 3: mixed data centers, EVs and phones (CISO carbon)",
    "table4": "Table 4 / Fig. 6: combined objective, EV different agents, q+1 = 40",
    "estimators": "Paper REINFORCE vs weighted REINFORCE, EV similar agents, q+1 = 20",
    "region": "Table 1, different agents & different λ, on another region's data (ERCOT unless --regions)",
    "phone": "Phones alone, true decision regret (CISO carbon)",
    "tradeoffs": "Beyond the paper: populations with a real trade-off on a shared input (CISO and ERCOT unless "
                 "--regions)",
}


def write_study_report(study: str, specs: Sequence[RunSpec], root: str | Path,
                       figures_dir: str | Path | None = None,
                       accuracy_guard: float | None = DEFAULT_ACCURACY_GUARD,
                       warm_start_only: bool = DEFAULT_WARM_START_ONLY) -> dict[str, Path]:
    """Write tables, claims and plots of ``study`` from the finished runs under ``root``; returns the paths.

    ``accuracy_guard``, ``warm_start_only``: the model selection's (:func:`trainers.model_selection.select_models`).
    """
    root = Path(root)
    out = root / study
    out.mkdir(parents=True, exist_ok=True)
    figs = Path(figures_dir) if figures_dir is not None else out
    figs.mkdir(parents=True, exist_ok=True)
    add_train_metrics(root, specs)
    runs = collect(root, specs)
    if runs.empty:
        raise RuntimeError(f"study {study}: no finished runs under {root}")
    runs["study"] = study
    paths = {"per_run": out / "per_run.csv", "summary_csv": out / "summary.csv", "summary_md": out / "summary.md",
             "claims": out / "claims.md", "claims_csv": out / "claims.csv", "selected": out / "selected.csv",
             "selected_configs": out / "selected_configs.csv"}
    runs.to_csv(paths["per_run"], index=False)
    summary = summarize(runs)
    summary.to_csv(paths["summary_csv"], index=False)
    selected = select_models(runs, accuracy_guard=accuracy_guard, warm_start_only=warm_start_only)
    selected_table(selected).to_csv(paths["selected"], index=False)
    selected.to_csv(paths["selected_configs"], index=False)
    title = STUDY_TITLES.get(study, study)
    protocols = [p for p in PROTOCOL_TITLES if (runs["protocol"] == p).any()]
    md = [f"## {title}", ""]
    claims: list[dict[str, Any]] = []
    for protocol in protocols:
        r = runs[runs["protocol"] == protocol]
        sm = summary[summary["protocol"] == protocol]
        md += [f"### Split: {PROTOCOL_TITLES[protocol]}", ""]
        comparison = paper_comparison(summarize(r[r["paper_grid"]]), study)  # the paper's grid, fine-tuned
        if comparison:
            md += ["The paper's numbers beside ours (held-out, per-step protocol, mean ± std over seeds):", "",
                   comparison, ""]
        md += ["Held-out split, per-step protocol (every agent decides on every held-out hour), "
               "mean ± std over seeds:", "", markdown_table(sm), "",
               "Released code's protocol (one prediction averaged over the held-out split):", "",
               markdown_table(summarize(r, prefix="mf_"), prefix="mf_"), ""]
        if "train_variance" in r:
            md += ["Training split, per-step protocol (does the model fit what it was trained for?):", "",
                   markdown_table(summarize(r, prefix="train_"), prefix="train_"), ""]
        paper_runs = r[r["paper_grid"]]
        for split, prefix in (("test", ""), ("train", "train_")):
            if prefix and "train_variance" not in r:
                continue
            claims += [{"study": study, "setting": c["setting"], "claim": c["claim"], "protocol": protocol,
                        "split": split, "verdict": _verdict(c["holds"]), "evidence": c["evidence"]}
                       for c in check_claims(paper_runs, study, prefix=prefix)]
    if len(selected):
        md += ["### Selected on validation", "",
               "Per seed, the run (and epoch) standing for each method is chosen on the validation split only "
               "(trainers/model_selection.py); held-out numbers, mean ± std over seeds:", "",
               selected_markdown(selected), ""]
        claims += target_claims(selected)
    missing = runs.attrs.get("missing", [])
    if missing:
        md += [f"Unfinished runs left out: {len(missing)}.", ""]
    if study == "estimators":
        curves = estimator_curves(runs, specs, root)
        reference = "reinforce_paper-norm" if (runs["estimator"] == "reinforce_paper-norm").any() else "reinforce_paper"
        reach = samples_to_reach(curves, reference=reference)
        reach.to_csv(out / "samples_to_target.csv", index=False)
        md += [f"Environment samples to reach the final training objective of {reference} "
               "(norm form, 5-epoch running mean over seeds):", "", _plain_markdown(reach), ""]
        paths["curves"] = figs / f"{study}_curves.png"
        plot_estimator_curves(curves, paths["curves"], title)
    paths["summary_md"].write_text("\n".join(md))
    frame = claims_frame(claims)
    frame.to_csv(paths["claims_csv"], index=False)
    paths["claims"].write_text(claims_markdown_table(claims, title))
    if figs != out:  # the tables travel with the plots (docs/results/ keeps them in the repository)
        for key in ("per_run", "summary_csv", "summary_md", "claims", "claims_csv", "selected", "selected_configs"):
            dst = figs / f"{study}_{paths[key].name}"
            dst.write_bytes(paths[key].read_bytes())
    time_runs = runs[runs["protocol"] == protocols[0]]
    paths["distributions"] = figs / f"{study}_distributions.png"
    plot_distributions(time_runs, specs, root, paths["distributions"], f"{title} ({protocols[0]} split)")
    if study != "estimators":
        for protocol in protocols:
            by = "beta" if study == "table4" else "q_plus_1"
            paths[f"equity_{protocol}"] = figs / f"{study}_{protocol}_equity_vs_{'beta' if by == 'beta' else 'q'}.png"
            r = runs[(runs["protocol"] == protocol) & runs["paper_grid"]]
            plot_equity_vs_q(summarize(r), paths[f"equity_{protocol}"], f"{title} ({protocol} split)", by=by)
            if len(selected):
                paths[f"pareto_{protocol}"] = figs / f"{study}_{protocol}_pareto.png"
                plot_pareto(runs[runs["protocol"] == protocol], selected[selected["protocol"] == protocol],
                            paths[f"pareto_{protocol}"], f"{title}: held-out ({protocol} split)")
    return paths


def claims_markdown_table(claims: Sequence[dict[str, Any]], title: str) -> str:
    """``claims.md``: every claim with its protocol, split, verdict and numbers."""
    lines = [f"## Claims: {title}", "", "| Setting | Claim | Protocol | Split | Verdict | Numbers (means over seeds) |",
             "|---|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['setting']} | {c['claim']} | {c['protocol']} | {c['split']} | **{c['verdict']}** | "
                     f"{c['evidence']} |")
    return "\n".join(lines) + "\n"


def write_combined(root: str | Path, dest: str | Path) -> dict[str, Path]:
    """``dest/claims.csv`` and ``dest/selected.csv``: every study reported under ``root`` (``root/NAME/*.csv``)."""
    root, dest = Path(root), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, columns in (("claims", CLAIM_COLUMNS), ("selected", SELECTED_COLUMNS)):
        parts = [pd.read_csv(p) for p in sorted(root.glob(f"*/{name}.csv"))]
        frame = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
        out[name] = dest / f"{name}.csv"
        frame.to_csv(out[name], index=False)
    return out
