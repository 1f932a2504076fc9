"""Tables and plots of a benchmark (:mod:`trainers.benchmark`), always rebuilt from the run directories.

Files written into the output directory:

* ``baselines_runs.csv`` -- one row per reported run (method x seed x setting)
  at equal agent-decisions: the run's totals (``positions``, ``decisions``,
  ``grad_steps``, ``wall_s``: the whole budget), the test metrics of its
  checkpoint chosen on validation, where that checkpoint was (``ckpt_*``) and
  the grid point it ran with;
* ``baselines_runs_equal_inputs.csv`` -- the same at equal inputs: totals and
  the best-on-validation checkpoint within the first ``P*`` clock positions;
* ``baselines_curves.csv`` -- every checkpoint of every run (tuning runs too,
  without test metrics): counts, validation and test metrics;
* ``baselines_grid.csv`` -- the tuning grid of every method, each point's
  validation score and the choice;
* ``baselines_summary.csv`` and ``baselines.md`` -- mean ± std over seeds;
* ``baselines_reach.csv`` -- per reported run, the training wall time, agent-decisions and gradient steps
  at the first checkpoint whose held-out variance is at or below the reference method's (``PPO util``)
  reported held-out variance (mean over seeds), beside the reference's own training wall time; and the
  training wall time per gradient step;
* ``baselines_curves_<setting>.png`` -- held-out variance and mean regret
  against agent-decisions, clock positions and training wall time.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from trainers.baselines import METHODS
from trainers.benchmark import METRICS, Group, Plan, best_criterion, finished_records

HEADS = {"variance": "variance", "mean": "mean regret", "c95_c5": "C95 − C5", "worst": "worst agent", "mse": "MSE"}
COUNTS = ("positions", "decisions", "grad_steps", "wall_s")
REFERENCE = "PPO util"  # the method whose reported held-out variance the reach table measures time to
#: Reference when a setting has no ``REFERENCE`` run: PPO through the window normalisation (bench_baselines' revin).
REFERENCE_WINDOW = "PPO util (window)"


def hp_text(hp: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in hp.items())


def _row(g: Group, rec: dict[str, Any], best: int | None, last: int) -> dict[str, Any]:
    curve = rec["curve"]
    job = rec["job"]
    row: dict[str, Any] = {"population": g.setting.name, "layout": g.setting.layout, "setting": g.setting.label,
                           "q_plus_1": g.setting.q_plus_1, "method": g.method, "family": METHODS[g.method].family,
                           "seed": job["seed"], "hp": hp_text(job["hp"])}
    row.update({k: curve[last][k] for k in COUNTS})
    point = curve[best] if best is not None else None
    for k in METRICS:
        row[k] = point["test"][k] if point is not None else math.nan
    row["val_criterion"] = point["val"]["criterion"] if point is not None else math.inf
    row.update({f"ckpt_{k}": point[k] if point is not None else math.nan for k in COUNTS})
    row["note"], row["run_id"] = rec["note"], rec["run_id"]
    return row


def collect(plan: Plan, root: str | Path) -> dict[str, pd.DataFrame]:
    """DataFrames ``runs``, ``runs_equal_inputs``, ``curves``, ``grid`` from the finished run directories."""
    runs, inputs, curves, grid = [], [], [], []
    for g, tune, evals in finished_records(plan, root):
        chosen = g.choose(tune) if len(tune) == len(g.tune_jobs()) else None
        for rec in tune:
            grid.append({"population": g.setting.name, "layout": g.setting.layout, "method": g.method,
                         "hp_id": rec["job"]["hp_id"], "hp": hp_text(rec["job"]["hp"]), **rec["job"]["hp"],
                         "tune_seed": rec["job"]["seed"], "val_criterion": best_criterion(rec),
                         "at_decisions": rec["curve"][rec["best"]]["decisions"] if rec["best"] is not None else None,
                         "chosen": chosen == rec["job"]["hp_id"], "note": rec["note"]})
        if len(g.grid) == 1 and evals:  # nothing to tune: the one point is the choice
            grid.append({"population": g.setting.name, "layout": g.setting.layout, "method": g.method, "hp_id": 0,
                         "hp": hp_text(g.grid[0]), **g.grid[0], "tune_seed": None, "val_criterion": None,
                         "at_decisions": None, "chosen": True, "note": "one grid point: no tuning run"})
        for rec in [*tune, *evals]:
            job = rec["job"]
            for k, p in enumerate(rec["curve"]):
                row = {"population": g.setting.name, "layout": g.setting.layout, "method": g.method,
                       "role": job["role"], "seed": job["seed"], "hp_id": job["hp_id"], "checkpoint": k,
                       **{c: p[c] for c in COUNTS}}
                row.update({f"val_{m}": p["val"][m] for m in (*METRICS, "criterion")})
                row.update({f"test_{m}": p["test"][m] if "test" in p else math.nan for m in METRICS})
                curves.append(row)
        for rec in evals:
            curve = rec["curve"]
            runs.append(_row(g, rec, rec["best"], len(curve) - 1))
            within = [i for i, p in enumerate(curve) if p["positions"] <= g.inputs_budget]
            r = _row(g, rec, rec["best_inputs"], within[-1] if within else 0)
            r["inputs_budget"] = g.inputs_budget
            inputs.append(r)
    return {"runs": pd.DataFrame(runs), "runs_equal_inputs": pd.DataFrame(inputs), "curves": pd.DataFrame(curves),
            "grid": pd.DataFrame(grid)}


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (``ddof=0``) over seeds of the metrics and counts, one row per setting x method."""
    if runs.empty:
        return pd.DataFrame()
    cols = [*METRICS, *COUNTS, *(f"ckpt_{c}" for c in COUNTS)]
    g = runs.groupby(["population", "layout", "method"], sort=False)
    out = pd.concat({"mean": g[cols].mean(), "std": g[cols].std(ddof=0).fillna(0.0)}, axis=1)
    out[("n", "seeds")] = g.size()
    out[("hp", "chosen")] = g["hp"].first()
    return out


def reach(runs: pd.DataFrame, curves: pd.DataFrame,
          reference: tuple[str, ...] = (REFERENCE, REFERENCE_WINDOW)) -> pd.DataFrame:
    """Per reported run: how soon its held-out variance first reaches the reference's reported one.

    The reference of a setting is the first method of ``reference`` that it ran (column ``reference``).

    The target of a setting is the mean over seeds of the reference's reported held-out variance (its
    checkpoint chosen on validation). A run's ``reach_*`` counts are those of its first checkpoint at or
    below the target (NaN where none is): the test split is only read, never used to choose anything,
    and the resolution is the checkpoint spacing (the budget's even fractions), so a reach time is an
    upper bound. ``ref_wall_s`` is the reference's whole training wall time (mean over its seeds) and
    ``wall_ratio`` = ``reach_wall_s / ref_wall_s``. ``s_per_step`` is the run's training wall time per
    gradient step (rollout collection included).
    """
    if runs.empty or curves.empty or not set(reference) & set(runs["method"]):
        return pd.DataFrame()
    rows = []
    for (pop, layout), d in runs.groupby(["population", "layout"], sort=False):
        name = next((m for m in reference if (d["method"] == m).any()), None)
        if name is None:
            continue
        ref = d[d["method"] == name]
        target, ref_wall = float(ref["variance"].mean()), float(ref["wall_s"].mean())
        ev = curves[(curves["population"] == pop) & (curves["layout"] == layout) & (curves["role"] == "eval")]
        for r in d.itertuples():
            c = ev[(ev["method"] == r.method) & (ev["seed"] == r.seed)].sort_values("checkpoint")
            hit = c[c["test_variance"] <= target]
            first = hit.iloc[0] if len(hit) else None
            rows.append({"population": pop, "layout": layout, "method": r.method, "seed": r.seed,
                         "reference": name, "target_variance": target, "ref_wall_s": ref_wall,
                         **{f"reach_{k}": float(first[k]) if first is not None else math.nan
                            for k in ("wall_s", "decisions", "grad_steps")},
                         "wall_ratio": float(first["wall_s"]) / ref_wall if first is not None and ref_wall > 0
                         else math.nan,
                         "s_per_step": r.wall_s / r.grad_steps if r.grad_steps else math.nan})
    return pd.DataFrame(rows)


def _reach_table(rc: pd.DataFrame) -> list[str]:
    if rc.empty:
        return []
    lines = [f"Time to reach {rc['reference'].iloc[0]}'s held-out variance ({rc['target_variance'].iloc[0]:.4g}, its mean over "
             f"seeds; its training took {rc['ref_wall_s'].iloc[0]:.1f} s): the first checkpoint at or below it "
             "(median over seeds; `—` where a seed never reaches it; resolution: the checkpoint spacing), and the "
             "training wall time per gradient step:", "",
             "| method | seeds reaching | wall (s) | ÷ reference's wall | agent-decisions | ms per grad step |",
             "|---|---:|---:|---:|---:|---:|"]
    for method, d in rc.groupby("method", sort=False):
        ok = d.dropna(subset=["reach_wall_s"])
        every = len(ok) == len(d)  # a median over the seeds that reach it alone would flatter the method
        wall, ratio, dec = ((f"{ok['reach_wall_s'].median():.3g}", f"{ok['wall_ratio'].median():.3g}",
                             f"{ok['reach_decisions'].median():,.0f}") if every else ("—", "—", "—"))
        lines.append(f"| {method} | {len(ok)} of {len(d)} | {wall} | {ratio} | {dec} | "
                     f"{1e3 * d['s_per_step'].median():.3g} |")
    return lines


def fmt(mean: float, std: float) -> str:
    """``mean ± std`` with 4 significant digits for the mean (small values stay readable: 2.1e-05 ± 3e-06)."""
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.4g} ± {std:.2g}"


def _table(runs: pd.DataFrame, title: str) -> list[str]:
    heads = [HEADS[k] for k in METRICS]
    lines = [title, "", "| method | chosen grid point | " + " | ".join(heads)
             + " | positions | agent-decisions | grad steps | train wall (s) | chosen checkpoint (decisions) |",
             "|---|---|" + "---:|" * (len(heads) + 5)]
    for method, d in runs.groupby("method", sort=False):
        cells = [fmt(d[k].mean(), d[k].std(ddof=0)) for k in METRICS]
        label = f"{method} (Plain PM)" if method == "mse" else method
        lines.append(f"| {label} | {d['hp'].iloc[0]} | " + " | ".join(cells)
                     + f" | {d['positions'].mean():,.0f} | {d['decisions'].mean():,.0f} | "
                       f"{d['grad_steps'].mean():,.0f} | {d['wall_s'].mean():.1f} | {d['ckpt_decisions'].mean():,.0f} |")
    return lines


def markdown(plan: Plan, tables: dict[str, pd.DataFrame]) -> str:
    """The benchmark's tables as Markdown, one section per setting."""
    runs, inputs, grid = tables["runs"], tables["runs_equal_inputs"], tables["grid"]
    rc = tables.get("reach", pd.DataFrame())
    lines = [f"Budget {plan.budget:,} agent-decisions per run; checkpoints at the initial model and {plan.checkpoints} "
             f"even fractions of the budget (and at P*); reported seeds {' '.join(map(str, plan.seeds))}, tuned on "
             f"seed {plan.tune_seed}; mean ± std over seeds (ddof 0); held-out test split, per-step protocol, at each "
             "run's checkpoint with the lowest validation criterion (the norm-form Equitable Objective at q + 1 of "
             "the per-agent validation regrets).", ""]
    for s in plan.settings:
        sel = (runs["population"] == s.name) & (runs["layout"] == s.layout) if not runs.empty else None
        lines += [f"### {s.label}, q + 1 = {s.q_plus_1:g}", ""]
        if sel is None or not sel.any():
            lines += ["(no finished runs)", ""]
            continue
        lines += _table(runs[sel], "At equal agent-decisions (the whole budget):") + [""]
        isel = (inputs["population"] == s.name) & (inputs["layout"] == s.layout)
        p_star = int(inputs.loc[isel, "inputs_budget"].iloc[0])
        lines += _table(inputs[isel], f"At equal inputs (the first P* = {p_star:,} clock positions; counts are "
                                      "those spent within them):") + [""]
        rsel = (rc["population"] == s.name) & (rc["layout"] == s.layout) if not rc.empty else None
        if rsel is not None and rsel.any():
            lines += _reach_table(rc[rsel]) + [""]
        lines += ["<details><summary>Per-seed rows (equal agent-decisions)</summary>", "",
                  "| method | seed | " + " | ".join(HEADS[k] for k in METRICS)
                  + " | positions | agent-decisions | grad steps | train wall (s) | note |",
                  "|---|---:|" + "---:|" * (len(METRICS) + 4) + "---|"]
        for r in runs[sel].itertuples():
            lines.append(f"| {r.method} | {r.seed} | " + " | ".join(f"{getattr(r, k):.4g}" for k in METRICS)
                         + f" | {r.positions:,} | {r.decisions:,} | {r.grad_steps:,} | {r.wall_s:.1f} | {r.note} |")
        lines += ["", "</details>", ""]
        gsel = (grid["population"] == s.name) & (grid["layout"] == s.layout) if not grid.empty else None
        if gsel is not None and gsel.any():
            lines += ["Tuning (validation criterion of each grid point's best checkpoint, tuning seed; **chosen**):", ""]
            for method, d in grid[gsel].groupby("method", sort=False):
                pts = [(f"**{r.hp}: {r.val_criterion:.4g}**" if r.chosen else f"{r.hp}: {r.val_criterion:.4g}")
                       if r.val_criterion is not None and not pd.isna(r.val_criterion) else f"{r.hp}: (not tuned)"
                       for r in d.itertuples()]
                lines.append(f"* {method}: " + "; ".join(pts))
            lines.append("")
        notes = runs.loc[sel & (runs["note"] != ""), ["method", "seed", "note"]]
        for r in notes.itertuples():
            lines.append(f"* note: {r.method} seed {r.seed}: {r.note}")
        skipped = plan.skipped.get(s.label, {})
        for n, why in skipped.items():
            lines.append(f"* {n} does not apply: {why}")
        if len(notes) or skipped:
            lines.append("")
    return "\n".join(lines)


def plot_curves(plan: Plan, curves: pd.DataFrame, out: Path) -> list[Path]:
    """Per setting: test variance and mean regret of the reported runs (mean ± std over seeds) against
    agent-decisions, clock positions and training wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if curves.empty:
        return paths
    ev = curves[curves["role"] == "eval"]
    for s in plan.settings:
        d = ev[(ev["population"] == s.name) & (ev["layout"] == s.layout)]
        if d.empty:
            continue
        fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
        for i, (method, dm) in enumerate(d.groupby("method", sort=False)):
            agg = dm.groupby("checkpoint").agg(**{c: (c, "mean") for c in COUNTS},
                                               **{f"{m}_mean": (f"test_{m}", "mean") for m in ("variance", "mean")},
                                               **{f"{m}_std": (f"test_{m}", "std") for m in ("variance", "mean")})
            agg = agg.fillna({"variance_std": 0.0, "mean_std": 0.0})
            ls = "-" if METHODS[method].family == "ours" else ("--" if METHODS[method].family == "sb3" else ":")
            for row, metric in enumerate(("variance", "mean")):
                for col, x in enumerate(("decisions", "positions", "wall_s")):
                    a = agg if col == 0 else agg[agg[x] > 0]
                    ax = axes[row, col]
                    ax.plot(a[x], a[f"{metric}_mean"], ls, marker="o", ms=3, color=f"C{i % 10}", label=method)
                    ax.fill_between(a[x], a[f"{metric}_mean"] - a[f"{metric}_std"],
                                    a[f"{metric}_mean"] + a[f"{metric}_std"], color=f"C{i % 10}", alpha=0.12)
        for row, metric in enumerate(("held-out variance of per-agent regret", "held-out mean regret")):
            for col, x in enumerate(("agent-decisions", "clock positions (inputs), log scale",
                                     "training wall time (s), log scale")):
                ax = axes[row, col]
                ax.set_xlabel(x)
                ax.set_ylabel(metric)
                ax.set_yscale("log")
                if col:
                    ax.set_xscale("log")
                ax.grid(alpha=0.3, which="both")
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"{s.label}, q+1 = {s.q_plus_1:g}: test split at every checkpoint (mean ± std over seeds; "
                     "solid: ours, dashed: SB3, dotted: decision-focused)", fontsize=10)
        fig.tight_layout()
        p = out / f"baselines_curves_{s.slug}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths


def write_report(plan: Plan, root: str | Path, out: str | Path) -> dict[str, Path]:
    """Collect the finished runs and write every file of the module doc into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = collect(plan, root)
    if tables["runs"].empty:
        raise RuntimeError(f"no finished reported runs under {Path(root) / 'runs'}")
    tables["reach"] = reach(tables["runs"], tables["curves"])
    paths = {}
    for key, name in (("runs", "baselines_runs.csv"), ("runs_equal_inputs", "baselines_runs_equal_inputs.csv"),
                      ("curves", "baselines_curves.csv"), ("grid", "baselines_grid.csv"),
                      ("reach", "baselines_reach.csv")):
        paths[key] = out / name
        tables[key].to_csv(paths[key], index=False)
    paths["summary"] = out / "baselines_summary.csv"
    summarize(tables["runs"]).to_csv(paths["summary"])
    paths["markdown"] = out / "baselines.md"
    paths["markdown"].write_text(markdown(plan, tables) + "\n")
    for p in plot_curves(plan, tables["curves"], out):
        paths[p.stem] = p
    return paths

