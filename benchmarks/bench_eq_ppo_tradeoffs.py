"""Issue 10's trade-off target with issue 9's trainer: ``eq_ppo`` on the populations with a real trade-off.

On ``ev-home-slots``, ``ev-home-windows`` and ``phone-home-windows`` (docs/tradeoffs.md), CISO and ERCOT, shared
layout, time split, the window-normalised MLP (``input_norm="window"``), 3 seeds, ``eqpm benchmark``'s protocol
(docs/benchmark.md: every method its 6-point grid on tuning seed 100, grid point and checkpoint chosen on the
validation stretch by the norm-form Equitable Objective at the run's q+1, held-out test metrics):

* **Equitable PM** -- ``eq_ppo`` at q+1 = 20;
* **Utilitarian PM** -- ``eq_ppo`` at q+1 = 1 (its criterion is then the mean regret);
* **Plain PM** -- ``mse`` (chosen by the q+1 = 20 criterion, as in the EV parts of bench_baselines.py).

Every run gets 30,000 clock positions (agent-decisions = 30,000 x the population's agents). One ``eqpm benchmark``
call per population, region and q+1 (output under ``benchmarks/results/tradeoffs_eq_ppo/``, runs in their
``runs/``, which git does not track); then issue 10's per-setting targets on the held-out months
(``trainers.model_selection.target_claims``) are printed and written to ``targets.md`` / ``selected.csv``.

    python benchmarks/bench_eq_ppo_tradeoffs.py                  # ~10 min on 2 cores
    python benchmarks/bench_eq_ppo_tradeoffs.py --report-only    # the targets from the finished runs
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from trainers.cli import main
from trainers.model_selection import fmt, method_summary, target_claims

RESULTS = Path("benchmarks/results/tradeoffs_eq_ppo")
REVIN = '{"backbone": "mlp", "backbone_kwargs": {"hidden": [64, 64]}, "input_norm": "window"}'
#: population -> number of agents (the budget is 30,000 clock positions for each)
POPULATIONS = {"ev-home-slots": 10, "ev-home-windows": 18, "phone-home-windows": 18}
REGIONS = ("CISO", "ERCO")
POSITIONS = 30_000
EQUITABLE_Q = 20


def out_dir(pop: str, region: str, q: int) -> Path:
    return RESULTS / f"{pop}-{region}-q{q}"


def command(pop: str, region: str, q: int, extra: list[str]) -> list[str]:
    methods = ["eq_ppo", "mse"] if q == EQUITABLE_Q else ["eq_ppo"]
    return ["benchmark", "--population", pop, "--region", region, "--q-plus-1", str(q), "--model", REVIN,
            "--seeds", "0", "1", "2", "--layout", "shared", "--budget", str(POSITIONS * POPULATIONS[pop]),
            "--methods", *methods, "--out", str(out_dir(pop, region, q)), *extra]


def selected() -> pd.DataFrame:
    """One row per setting, method and seed: the held-out metrics of each reported (validation-chosen) run."""
    rows = []
    for pop in POPULATIONS:
        for region in REGIONS:
            for q, method, name in ((EQUITABLE_Q, "mse", "Plain PM"), (1, "eq_ppo", "Utilitarian PM"),
                                    (EQUITABLE_Q, "eq_ppo", "Equitable PM")):
                path = out_dir(pop, region, q) / "baselines_runs.csv"
                if not path.exists():
                    continue
                runs = pd.read_csv(path)
                for _, r in runs[runs["method"] == method].iterrows():
                    rows.append({"study": "tradeoffs (eq_ppo)", "setting": f"{pop}, {region}", "protocol": "time",
                                 "method": name, "seed": int(r["seed"]), "start": False,
                                 **{k: float(r[k]) for k in ("variance", "worst", "mean", "mse", "c95_c5")}})
    return pd.DataFrame(rows)


def report() -> None:
    sel = selected()
    if sel.empty:
        print("no finished runs under", RESULTS)
        return
    sel.to_csv(RESULTS / "selected.csv", index=False)
    claims = pd.DataFrame(target_claims(sel))
    summary = method_summary(sel)
    summary.to_csv(RESULTS / "summary.csv", index=False)
    lines = ["# Trade-off populations with eq_ppo (bench_eq_ppo_tradeoffs.py)", "",
             "Held-out months, mean ± std over seeds 0 1 2:", "",
             "| setting | method | variance | worst agent | mean regret | MSE |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r.setting} | {r.method} | " + " | ".join(fmt(getattr(r, f"{k}_mean"), getattr(r, f"{k}_std"), 3)
                                                         for k in ("variance", "worst", "mean", "mse")) + " |"
              for r in summary.itertuples()]
    lines += ["", "| setting | target | verdict | evidence |", "|---|---|---|---|"]
    lines += [f"| {c.setting} | {c.claim.removeprefix('Target: ')} | {c.verdict} | {c.evidence} |"
              for c in claims.itertuples()]
    (RESULTS / "targets.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    extra = sys.argv[1:]
    if "--report-only" not in extra:
        for pop in POPULATIONS:
            for region in REGIONS:
                for q in (EQUITABLE_Q, 1):
                    code = main(command(pop, region, q, extra))
                    if code:
                        sys.exit(code)
    report()
