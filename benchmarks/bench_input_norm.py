"""Window-normalised public models (``input_norm="window"``, RevIN) against the default on held-out months.

The EV and phone public models read the last 12 hours of the signal and predict the next 12.  Under the
time-ordered split the held-out months (autumn) have another level and daily amplitude than the training months,
which an accuracy-trained model extrapolates poorly and a regret-trained model may learn the wrong shape from.
``input_norm="window"`` (Kim et al., ICLR 2022, "Reversible instance normalization"; ``trainers/networks.py``)
standardises each input window by its own mean and spread and maps the prediction back, so a shifted or stretched
season gives a shifted or stretched prediction and the same ranking of the hours.

For each setting and seed this trains, with and without it, the studies' runs at their first budget
(``trainers/studies.py``, 10 epochs, fine-tunes 8; the studies of ranking agents now train 40): the Plain PM; with
``--grid`` also the Utilitarian PM and the Equitable PMs at q + 1 in {5, 20}, fine-tuned and from scratch, on
the paper's shared layout; selects as the studies do (each run's epoch and, per seed, the Utilitarian
and Equitable PM on validation; ``trainers/model_selection.py``), and reports the held-out metrics, mean ± std
over seeds.  The test split is only read to report.

    EQPM_THREADS=1 python benchmarks/bench_input_norm.py [--grid] [--settings ev-home-slots:CISO ...] \
        [--seeds 0 1 2] [--protocol time] [--backend sequential|ray] [--out runs/bench_input_norm]

Resumable (a finished run is not trained again).  Writes ``input_norm_runs.csv`` and ``input_norm.md`` into
``--results``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from trainers import studies as S
from trainers.grid import collect, run_grid
from trainers.model_selection import select_models
from trainers.networks import WINDOW_HEAD

WINDOW = {"input_norm": "window", "head_kwargs": dict(WINDOW_HEAD)}
DEFAULT_SETTINGS = ("ev-similar:CISO", "ev-different:CISO", "ev-home-slots:CISO", "ev-home-windows:CISO",
                    "phone-home-windows:CISO", "ev-home-slots:ERCO", "ev-home-windows:ERCO")
METRICS = ("mse", "variance", "worst", "mean")


def specs_for(setting: str, variant: str, seeds: tuple[int, ...], protocol: str, grid: bool) -> list[S.RunSpec]:
    pop, region = setting.split(":")
    model = {"model": WINDOW} if variant == "window" else {}
    label = f"{pop}, {region}"
    if grid:
        return list(S._setting("input_norm", label, pop, seeds, False, S.TRADEOFF_EXPONENTS, region=region,
                               protocol=protocol, **model))
    return [S._plain("input_norm", label, pop, s, False, region=region, protocol=protocol, **model) for s in seeds]


def table(rows: pd.DataFrame) -> str:
    g = rows.groupby(["setting", "method", "input_norm"], sort=False)
    out = ["| setting | method | input_norm | " + " | ".join(f"held-out {m}" for m in METRICS) + " |",
           "|---|---|---|" + "---:|" * len(METRICS)]
    for (setting, method, variant), r in g:
        cells = [f"{r[m].mean():.4g} ± {r[m].std(ddof=1):.2g}" if len(r) > 1 else f"{r[m].mean():.4g}"
                 for m in METRICS]
        out.append(f"| {setting} | {method} | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), metavar="POPULATION:REGION")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--protocol", choices=S.SPLIT_PROTOCOLS, default="time")
    ap.add_argument("--grid", action="store_true", help="also the Utilitarian and Equitable PMs, selected on "
                                                        "validation as in the studies")
    ap.add_argument("--backend", choices=("sequential", "ray"), default="sequential")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_input_norm"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    parts = []
    for variant in ("none", "window"):
        specs = [sp for st in args.settings
                 for sp in specs_for(st, variant, tuple(args.seeds), args.protocol, args.grid)]
        print(run_grid(specs, args.out, backend=args.backend, num_cpus=2 if args.backend == "ray" else None),
              flush=True)
        runs = collect(args.out, specs).assign(study="input_norm")
        chosen = select_models(runs) if args.grid else runs.assign(method="Plain PM")
        parts.append(chosen.assign(input_norm=variant))
    rows = pd.concat(parts, ignore_index=True)
    rows = rows.sort_values(["setting", "method", "input_norm"], kind="stable")
    args.results.mkdir(parents=True, exist_ok=True)
    rows[["setting", "method", "input_norm", "seed", "run_id", *METRICS]].to_csv(
        args.results / "input_norm_runs.csv", index=False)
    md = table(rows)
    (args.results / "input_norm.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
