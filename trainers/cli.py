"""``eqpm``: train, evaluate and compare socially-equitable public models.

    eqpm train --population dc-different-different-lambda --q-plus-1 3 --epochs 300 --run-dir runs/eq3
    eqpm evaluate runs/eq3/model.pt runs/plain/model.pt --population dc-different-different-lambda
    eqpm compare                       # the main job: Plain, Utilitarian and Equitable PMs on EV home slots
    eqpm reproduce table1 --quick      # a paper study as a grid of runs (on local Ray), tables and plots
    eqpm benchmark --population ev-similar --quick   # ours against SB3 and decision-focused baselines
    eqpm train --population-file my_population.toml --run-dir runs/mine   # your own agents and data
    eqpm train --population ev-similar --workers 2 --run-dir runs/ev2      # agents split over 2 Ray Train workers

Every command takes --population-file FILE (TOML or JSON; docs/populations.md)
instead of --population: your own signal, data files and agent classes.

Every expected failure -- an invalid setting, unusable data or path, a run
directory another run holds, a diverging run -- prints one line
``eqpm: error: ...`` and exits with status 2; settings are checked before
anything is written.  ``--debug`` shows the traceback instead.  Ctrl-C stops a
run, keeps its last checkpoint, says where it stopped and exits with 130; the
same command resumes it.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from eq_envs.datasets.errors import DataError
from eq_envs.datasets.grid import REGIONS
from eq_envs.population import LAYOUTS, Population
from eq_envs.population_file import load_population_file, population_label
from eq_envs.presets import POPULATIONS, PRESETS
from eq_envs.splits import PROTOCOLS as SPLIT_PROTOCOLS
from eq_envs.splits import SPLITS, VAL_FRACTION
from trainers.baselines import DEFAULT_METHODS, METHODS
from trainers.config import EQUITABLE_ONLY, ESTIMATOR_CHOICES, OBJECTIVES, SCALES, ConfigError, TrainConfig
from trainers.distributed import train_distributed
from trainers.errors import DivergenceError
from trainers.estimators import BASELINES, CREDITS
from trainers.evaluation import PROTOCOLS, evaluate
from trainers.grid import BACKENDS, collect, run_grid
from trainers.model_selection import (
    DEFAULT_ACCURACY_GUARD,
    DEFAULT_WARM_START_ONLY,
    method_summary,
    select_models,
    selected_markdown,
    target_claims,
)
from trainers.networks import load_public_model
from trainers.objectives import FORMS
from trainers.reports import STUDY_TITLES, write_combined, write_study_report
from trainers.rundir import RunDirError, check_output_dir, check_output_file, last_epochs
from trainers.selection import CRITERIA, GUARD_METRICS
from trainers.studies import (
    DEFAULT_SEEDS,
    FINE_TUNE_EPOCHS,
    PLAIN_EPOCHS,
    QUICK,
    REGION_STUDIES,
    STUDY_LAYOUT,
    STUDY_NAMES,
    compare_specs,
    population_study_specs,
    study_specs,
)
from trainers.studies import SPLIT_PROTOCOLS as STUDY_PROTOCOLS
from trainers.training import build_update_rule, train

#: The main job's population, grid and exponents: a real, stationary trade-off on a shared input, where the
#: Equitable PM beat both the Plain and the Utilitarian PM on held-out months (docs/tradeoffs.md, docs/results.md).
COMPARE_POPULATION = "ev-home-slots"
COMPARE_REGION = "ERCO"
COMPARE_EXPONENTS = (1.0, 5.0, 20.0)
#: The main job's public model: window-normalised (RevIN; docs/trainer.md), the strongest Plain PM we measured on
#: this setting (benchmarks/bench_input_norm.py), so that the Equitable PM is compared with a good forecaster.
COMPARE_MODEL = {"input_norm": "window"}
#: Settings that say which population (and which split of it) a run is trained and scored on.
POPULATION_SETTINGS = ("population", "region", "preset", "layout", "protocol", "val_fraction", "split_seed")


class CLIError(Exception):
    """A bad command line (reported as one line, exit status 2)."""


class Interrupted(Exception):
    """Ctrl-C, with what the user needs to know to resume (reported as one line, exit status 130)."""


#: Failures the user can act on: one line on stderr, exit status 2 (``--debug``: the traceback).
EXPECTED_ERRORS = (CLIError, ConfigError, DataError, DivergenceError, RunDirError, OSError)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``eqpm train: error: ...; see eqpm train --help``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _add_debug(p: argparse.ArgumentParser, top: bool = False) -> None:
    # accepted before or after the command; SUPPRESS keeps a command's default from hiding the top-level flag
    p.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="show the full traceback of an error instead of the one-line message")


def _add_population_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--population-file", type=Path, dest="population_file", metavar="FILE",
                   help="a population file (TOML or JSON: signal, data files, agent groups; docs/populations.md) "
                        "instead of --population")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--population", choices=sorted(POPULATIONS), metavar="NAME",
                   help=f"agent population; one of: {', '.join(POPULATIONS)} (default: from --config or "
                        "dc-different-different-lambda)")
    _add_population_file(p)
    p.add_argument("--region", choices=sorted(REGIONS), metavar="BA",
                   help=f"balancing authority whose grid data is used; one of {', '.join(REGIONS)} (default CISO)")
    p.add_argument("--preset", choices=PRESETS, help="'paper' scales signals to [0, 10] as the paper; 'physical' keeps "
                                                     "units (default paper)")
    p.add_argument("--layout", choices=LAYOUTS, help="'shared' (default, the paper's: one public input per hour for "
                                                     "every agent) or 'chunked' (each agent its own stretch of time)")
    p.add_argument("--split-protocol", choices=SPLIT_PROTOCOLS, dest="protocol",
                   help="'time' (default: held-out months after the training months), 'random' (the paper's "
                        "App. A.3.1 random per-agent partition, seeded by --split-seed) or 'blocked' (the time "
                        "split's test months; validation blocks spread over the training months)")
    p.add_argument("--val-fraction", type=float, dest="val_fraction",
                   help=f"share of the training data held out as the validation split, in [0, 0.5) "
                        f"(default {VAL_FRACTION})")
    p.add_argument("--split-seed", type=int, dest="split_seed", help="seed of the random split protocol (default 0)")


def _add_train_options(p: argparse.ArgumentParser, with_objective: bool = True) -> None:
    _add_common(p)
    _add_debug(p)
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig settings; flags override it")
    if with_objective:
        p.add_argument("--objective", choices=OBJECTIVES, help="'equitable' (Equitable PM) or 'mse' (Plain PM)")
    # compare takes its exponents from --q-values: there --q / --q-plus-1 are refused with that hint, not listed
    # (and not grouped: argparse cannot wrap the usage line of a group whose members are all suppressed)
    q = p.add_mutually_exclusive_group() if with_objective else p
    q.add_argument("--q", type=float, help="equity parameter q >= 0; the objective is sum_m Cbar_m^(q+1)"
                   if with_objective else argparse.SUPPRESS)
    q.add_argument("--q-plus-1", type=float, dest="q_plus_1", help="the exponent q+1 >= 1 as the paper's tables "
                   "list it" if with_objective else argparse.SUPPRESS)
    p.add_argument("--beta", type=float, help="weight of the MSE term in (1-beta)*L_q + beta*MSE, in [0, 1] (default 0)")
    p.add_argument("--estimator", choices=ESTIMATOR_CHOICES,
                   help="gradient estimator; 'auto' = pathwise for differentiable agents, else reinforce_weighted")
    p.add_argument("--baseline", choices=BASELINES, help="baseline of reinforce_weighted (default deterministic)")
    p.add_argument("--credit", choices=CREDITS, help="credit of reinforce_weighted's per-agent weights (default "
                                                     "difference)")
    p.add_argument("--form", choices=FORMS, help="form of the Equitable Objective: 'norm' (sum C^(q+1))^(1/(q+1)) or "
                                                 "the paper's 'power' sum C^(q+1) (default: the estimator's)")
    p.add_argument("--num-samples", type=int, dest="num_samples", help="prediction samples per input (default 1)")
    p.add_argument("--epochs", type=int, help="training epochs (default 10 for train, 150 for compare)")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="clock positions per batch (default 128)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 0.05 data centers, 1e-3 otherwise)")
    p.add_argument("--max-batches", type=int, dest="max_batches", help="cap on batches per epoch")
    p.add_argument("--checkpoint-every", type=int, dest="checkpoint_every", help="epochs between checkpoints")
    p.add_argument("--init-from", dest="init_from", help="warm-start from this model.pt (same architecture), e.g. "
                                                         "a Plain PM")
    p.add_argument("--update", nargs="+", metavar="KEY=VALUE", type=_key_value,
                   help="settings of the update rule, e.g. for --estimator eq_ppo: epochs=4 minibatches=4 "
                        "clip_range=0.2 target_kl=0.02 max_grad_norm=0.5 weight_rate=0.1 normalize_advantage=true "
                        "(values are JSON; see docs/trainer.md)")
    p.add_argument("--scale", choices=SCALES, help="the policy's scale: 'learned' (default), 'fixed' at the head's "
                                                   "init_std, or 'anneal' to --scale-final over the run")
    p.add_argument("--scale-final", type=float, dest="scale_final", help="final standard deviation of --scale anneal")
    p.add_argument("--selection", choices=CRITERIA,
                   help="validation criterion that picks the saved epoch (default: equitable; mse for the Plain PM; "
                        "'last' without a validation split)")
    p.add_argument("--validate-every", type=int, dest="validate_every",
                   help="validate every N epochs (default 1; 0: never, with --selection last)")
    p.add_argument("--patience", type=int, help="stop after this many epochs without a better validation criterion")
    p.add_argument("--accuracy-guard", type=float, dest="accuracy_guard", metavar="FRACTION",
                   help="admit only epochs whose validation --guard-metric is within FRACTION (0.05 = 5%%) of "
                        "--guard-reference's")
    p.add_argument("--guard-metric", choices=GUARD_METRICS, dest="guard_metric",
                   help="'mse' (default) or 'mean' regret (for agents that only rank predictions)")
    p.add_argument("--guard-reference", dest="guard_reference", metavar="MODEL_PT",
                   help="the model whose validation --guard-metric sets the guard (e.g. the Plain PM's model.pt)")
    p.add_argument("--memory-budget-mib", type=float, dest="memory_budget_mib", metavar="MIB",
                   help="bound on the regret fast path's temporaries: agents are scored in shards that fit it "
                        "(default 32; changes no number, only peak memory and speed)")


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at column {exc.colno}); accepted: a JSON object") \
            from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("accepted: a JSON object, e.g. '{\"backbone\": \"mlp\"}'")
    return value


#: ``--select-from`` choices: which runs model selection may deploy (``warm_start_only`` when "fine-tunes").
SELECT_FROM = ("fine-tunes", "all")


def _select_guard(text: str) -> float | None:
    """``--select-guard``: a fraction >= 0, or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted; accepted: a fraction >= 0 (0.25 = 25 %) or none")
    return value


def _add_selection_options(p: argparse.ArgumentParser) -> None:
    """How ``compare`` and ``reproduce`` choose the run standing for each method (trainers/model_selection.py)."""
    default = "none" if DEFAULT_ACCURACY_GUARD is None else f"{DEFAULT_ACCURACY_GUARD:g}"
    p.add_argument("--select-guard", type=_select_guard, dest="select_guard", default=DEFAULT_ACCURACY_GUARD,
                   metavar="FRACTION",
                   help="model selection across runs: a Utilitarian or Equitable run stands for its method only "
                        "if its validation MSE is at most (1 + FRACTION) times its seed's Plain PM's, else the "
                        f"Plain PM does (docs/fresh_check.md); 'none' switches it off (default {default}). Not "
                        "--accuracy-guard, which picks epochs inside one run")
    p.add_argument("--select-from", choices=SELECT_FROM, dest="select_from",
                   default="fine-tunes" if DEFAULT_WARM_START_ONLY else "all",
                   help="which runs may stand for the Utilitarian and Equitable PMs: 'fine-tunes' (from the seed's "
                        "Plain PM, and that Plain PM itself) or 'all' (runs from scratch too); default "
                        f"{'fine-tunes' if DEFAULT_WARM_START_ONLY else 'all'} (docs/fresh_check.md)")


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a JSON value (a bare word is taken as a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="eqpm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true", help="log data-loading reports and progress details")
    _add_debug(ap, top=True)
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one public model (resumes from RUN_DIR/checkpoint.pt if present)")
    _add_train_options(t)
    t.add_argument("--seed", type=int, help="random seed (same seed, same numbers on CPU)")
    t.add_argument("--run-dir", required=True, dest="run_dir",
                   help="directory for config, logs, checkpoints and model.pt (created if missing; one run at a "
                        "time: a second run on a busy directory is refused)")
    t.add_argument("--no-resume", action="store_true", help="refuse to continue an existing checkpoint")
    t.add_argument("--workers", type=int, default=1,
                   help="split the agents over this many Ray Train worker processes (data-parallel, the same "
                        "numbers as one process; default 1: this process alone)")
    t.add_argument("--address", help="with --workers: the Ray cluster to run them on (e.g. auto or ray://host:10001; "
                                     "default: a local Ray instance on this machine)")
    t.add_argument("--cpus-per-worker", type=int, default=1, dest="cpus_per_worker",
                   help="with --workers: CPUs (and torch threads) per worker (default 1)")

    e = sub.add_parser("evaluate", help="equity table of saved models on the held-out split",
                       description="Population, region, preset, layout and split settings are read from the "
                                   "config.json of each model's run directory (beside model.pt); flags override them.")
    e.add_argument("models", nargs="+", type=Path, help="model.pt files written by 'eqpm train'")
    _add_common(e)
    _add_debug(e)
    e.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate on (default test)")
    e.add_argument("--protocol", choices=PROTOCOLS, default="per-step", dest="protocol_scoring",
                   help="'per-step' decisions (default) or the released code's one averaged forecast")
    e.add_argument("--out", type=Path, help="write the table to this CSV (and per-agent regrets beside it)")

    c = sub.add_parser("compare", help="the main job: Plain, Utilitarian and Equitable PMs, chosen on validation, "
                                       "compared on held-out months",
                       description="Per seed: the Plain PM (MSE), then the Utilitarian PM (q+1 = 1) and Equitable PMs "
                                   "(--q-values) fine-tuned from it at a tenth of its learning rate (for agents that "
                                   "rank predictions also each trained from scratch at its rate / sqrt(q+1)); every "
                                   "run keeps its best validation epoch, and per seed the model standing for each method is "
                                   "chosen on the validation split (trainers/model_selection.py). Prints each "
                                   "method's held-out point. Defaults: 10 epochs (the studies' first budget; their "
                                   "ranking agents now train 40, docs/results.md) on "
                                   f"{COMPARE_POPULATION} ({COMPARE_REGION}), a population with a real trade-off "
                                   "(docs/tradeoffs.md), with the window-normalised public model (input_norm; "
                                   "docs/trainer.md).")
    _add_train_options(c, with_objective=False)
    c.add_argument("--q-values", type=float, nargs="+", dest="q_values", metavar="Q_PLUS_1",
                   default=list(COMPARE_EXPONENTS),
                   help="exponents q+1 of the Equitable PMs; q+1 = 1 (the Utilitarian PM) is always trained "
                        f"(default: {' '.join(f'{q:g}' for q in COMPARE_EXPONENTS)})")
    c.add_argument("--fine-tune-epochs", type=int, dest="fine_tune_epochs", default=FINE_TUNE_EPOCHS,
                   help=f"epochs of each fine-tune from the Plain PM (default {FINE_TUNE_EPOCHS}; --epochs sets "
                        f"the Plain PM's, default {PLAIN_EPOCHS})")
    c.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                   help="seeds; the table reports mean ± std (default 0 1 2)")
    _add_selection_options(c)
    c.add_argument("--out-dir", type=Path, default=Path("runs/compare"),
                   help="where runs and the table go (default runs/compare)")
    r = sub.add_parser("reproduce", help="run a study of the paper (or beyond it) as a grid of runs; tables and plots",
                       description="Studies: " + "; ".join(f"{k}: {v}" for k, v in STUDY_TITLES.items())
                                   + ". 'all' runs every study.")
    r.add_argument("studies", nargs="*", metavar="STUDY",
                   help=f"one or more of: {', '.join(STUDY_NAMES)}, all (none with --population-file)")
    _add_population_file(r)
    _add_debug(r)
    r.add_argument("--q-values", type=float, nargs="+", dest="q_values", metavar="Q_PLUS_1",
                   help="with --population-file: exponents q+1 of the Equitable PMs (default: 1 3)")
    r.add_argument("--quick", action="store_true",
                   help=f"smoke-size runs ({QUICK['epochs']} epochs of at most {QUICK['max_batches']} batches, seed 0)")
    r.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; --quick: 0)")
    r.add_argument("--layout", choices=LAYOUTS,
                   help=f"time layout of every run (default {STUDY_LAYOUT}, the paper's; 'chunked': the variant; "
                        "a population file sets its own)")
    r.add_argument("--regions", nargs="+", choices=sorted(REGIONS), metavar="BA",
                   help=f"grid data of these balancing authorities instead of the study's (studies "
                        f"{', '.join(REGION_STUDIES)} only; accepted: {', '.join(sorted(REGIONS))})")
    r.add_argument("--split-protocol", choices=SPLIT_PROTOCOLS, nargs="+", default=list(STUDY_PROTOCOLS),
                   dest="protocol", help="'time' (held-out months after the training months), the paper's "
                                         "'random' per-agent partition (App. A.3.1) and/or 'blocked' (the time "
                                         "split's test months, validation blocks spread over the training months); "
                                         f"default: {' '.join(STUDY_PROTOCOLS)}")
    _add_selection_options(r)
    r.add_argument("--out", type=Path, help="root of run directories and reports (default runs/reproduce, "
                                            "--quick: runs/reproduce-quick)")
    r.add_argument("--figures-dir", type=Path, dest="figures_dir", help="where the PNG plots go (default beside "
                                                                         "each study's tables)")
    _add_grid_backend(r, "train nothing; rebuild tables and plots from the finished run directories")
    _add_benchmark(sub)
    return ap


def _add_grid_backend(p: argparse.ArgumentParser, report_only_help: str) -> None:
    """Where a grid of runs executes (``reproduce``, ``benchmark``), and ``--report-only``."""
    p.add_argument("--backend", choices=BACKENDS, default="ray",
                   help="'ray' (default: local Ray on this machine's cores, or --address) or 'sequential'")
    p.add_argument("--address", help="address of an existing Ray cluster (e.g. auto or ray://host:10001)")
    p.add_argument("--num-cpus", type=int, dest="num_cpus", help="cores of the local Ray instance (default: all)")
    p.add_argument("--report-only", action="store_true", dest="report_only", help=report_only_help)


def _add_benchmark(sub: Any) -> None:
    b = sub.add_parser("benchmark", help="our update rules against SB3 and decision-focused baselines at equal "
                                         "budgets, tuned and checkpointed on validation; tables and curves",
                       description="Every method gets the same agent-decision budget and the same tuning grid "
                                   "(learning rate x batch-like size), chooses its grid point and checkpoint on the "
                                   "validation split by the norm-form Equitable Objective at q+1, and is reported on "
                                   "the test split over several seeds (trainers/benchmark.py; BENCHMARKS.md).")
    b.add_argument("--population", nargs="+", choices=sorted(POPULATIONS), metavar="NAME",
                   help=f"one or more presets: {', '.join(POPULATIONS)}")
    _add_population_file(b)
    b.add_argument("--layout", nargs="+", choices=LAYOUTS, help="one or more of: shared (default), chunked")
    b.add_argument("--region", choices=sorted(REGIONS), metavar="BA", help="grid data of this balancing authority "
                                                                         "(default CISO)")
    b.add_argument("--preset", choices=PRESETS, help="signal scaling (default paper)")
    b.add_argument("--methods", nargs="+", metavar="METHOD",
                   help=f"methods by name (default, those that apply: {', '.join(DEFAULT_METHODS)}); all: "
                        f"{', '.join(repr(m) for m in METHODS)}")
    b.add_argument("--q-plus-1", type=float, default=20.0, dest="q_plus_1",
                   help="equity exponent q+1 of the equitable methods and of the selection criterion (default 20)")
    b.add_argument("--budget", type=int, help="agent-decisions per run (default 2,000,000; --quick 20,000)")
    b.add_argument("--model", type=_json_object, metavar="JSON",
                   help="public-model settings for every method that trains our public model (ours, the Plain PM, "
                        "SPO+, PFYL), e.g. '{\"backbone\": \"mlp\", \"backbone_kwargs\": {\"hidden\": [64, 64]}}' "
                        "(default: the trainer's model for the population)")
    b.add_argument("--checkpoints", type=int, help="evaluated checkpoints per run besides the initial model and "
                                                   "the equal-inputs point (default 6; --quick 2)")
    b.add_argument("--seeds", type=int, nargs="+", help="reported seeds (default 0 1 2; --quick 0)")
    b.add_argument("--tune-seed", type=int, default=100, dest="tune_seed",
                   help="seed of the tuning runs, not a reported seed (default 100)")
    b.add_argument("--quick", action="store_true", help="smoke size: 20,000 decisions, 2 grid points, 1 seed")
    b.add_argument("--out", type=Path, help="tables, plots and runs/ (default runs/benchmark, --quick: "
                                            "runs/benchmark-quick)")
    _add_grid_backend(b, "train nothing; rebuild the tables and plots from the finished runs")


def _population_file(args: argparse.Namespace) -> dict[str, Any] | None:
    """The spec of ``--population-file`` (validated), or None."""
    path = getattr(args, "population_file", None)
    if path is None:
        return None
    if getattr(args, "population", None) is not None:
        raise CLIError("give --population or --population-file, not both")
    return load_population_file(path)


def _config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    data: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        data = TrainConfig.from_json(args.config).to_dict()
    spec = _population_file(args)
    if spec is not None:
        data["population"] = spec
    for key in ("population", "region", "preset", "objective", "q", "beta", "estimator", "baseline", "num_samples",
                "epochs", "batch_size", "lr", "max_batches", "checkpoint_every", "seed", "init_from", "scale",
                "scale_final", "credit", "form", "layout", "protocol", "val_fraction", "split_seed", "selection",
                "validate_every", "patience", "accuracy_guard", "guard_metric", "guard_reference",
                "memory_budget_mib"):
        v = getattr(args, key, None)
        if v is not None:
            data[key] = v
    if getattr(args, "update", None):
        data["update"] = {**data.get("update", {}), **dict(args.update)}
    if getattr(args, "q_plus_1", None) is not None:
        data.pop("q", None)
        data["q_plus_1"] = args.q_plus_1
    data.update(overrides)
    cfg = TrainConfig.from_dict(data, source="command line")
    if cfg.objective == "mse":  # flags given with their default value are still flags that do nothing
        given = [f"--{k.replace('_', '-')}" for k in (*EQUITABLE_ONLY, "q_plus_1") if getattr(args, k, None) is not None]
        if given:
            raise CLIError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to the Plain PM "
                           f"(objective mse); accepted: leave {'it' if len(given) == 1 else 'them'} out, or "
                           f"--objective equitable")
    return cfg


def _interrupted(run_dir: Path) -> Interrupted:
    logged, ckpt = last_epochs(run_dir)
    resume = f" (from the checkpoint of epoch {ckpt})" if ckpt is not None else " (no checkpoint yet: from epoch 1)"
    return Interrupted(f"interrupted at epoch {(logged or 0) + 1}; run the same command again to resume{resume}")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)
    run_dir = Path(args.run_dir)
    if args.no_resume and args.run_dir.strip() and (run_dir / "checkpoint.pt").exists():
        raise CLIError(f"{run_dir / 'checkpoint.pt'} exists and --no-resume was given; choose another --run-dir")
    for flag, value in (("--workers", args.workers), ("--cpus-per-worker", args.cpus_per_worker)):
        if value < 1:
            raise CLIError(f"{flag} {value} is not accepted; accepted: an integer >= 1")
    if args.workers == 1 and args.address is None and args.cpus_per_worker != 1:
        raise CLIError("--cpus-per-worker applies with --workers N > 1 or --address only")
    try:
        if args.workers == 1 and args.address is None:
            res = train(cfg, args.run_dir, resume=not args.no_resume, progress=True)
        else:
            res = train_distributed(cfg, args.run_dir, workers=args.workers, address=args.address,
                                    cpus_per_worker=args.cpus_per_worker, resume=not args.no_resume, progress=True)
    except KeyboardInterrupt:  # the batch is abandoned; checkpoint.pt is replaced atomically, so it is intact
        res = None
    if res is None:  # raised here, not in the except block, so the run's frames (and progress bar) are closed first
        raise _interrupted(run_dir)
    last = res.history[-1] if res.history else {}
    print(json.dumps({"run_dir": str(args.run_dir), "epochs": len(res.history), **{k: last.get(k) for k in
                                                                                    ("loss", "mse", "mean_regret")}}))
    return 0


def _load_model(p: Path, horizon: int, lookback: int):
    """A model.pt for ``eqpm evaluate``, or a CLIError saying what is wrong with the file."""
    try:
        model = load_public_model(p)
    except ValueError as exc:
        raise CLIError(f"{str(exc).removeprefix('load_public_model: ')}; accepted: model.pt files written by "
                       f"'eqpm train'") from None
    cfg = model.config
    if model.horizon != horizon or int(cfg.get("seq_len", lookback)) != lookback or int(cfg.get("input_size", 1)) != 1:
        raise CLIError(f"model file {p} maps {cfg.get('seq_len')} past values to {model.horizon} predicted step(s); "
                       f"this population needs {lookback} -> {horizon}; accepted: a model trained on a population "
                       f"with horizon {horizon} (choose --population to match)")
    return model


def evaluation_population(args: argparse.Namespace) -> Population:
    """The population ``eqpm evaluate`` scores on: the models' runs' settings, overridden by flags.

    Each model's run directory (beside ``model.pt``) holds its ``config.json``;
    runs that disagree on a setting need the flag to choose.
    """
    spec = _population_file(args)
    if spec is not None and (args.preset or args.region):
        raise CLIError("--preset and --region do not apply to --population-file; set them in the file")
    runs = []
    for p in args.models:
        cfg_path = p.parent / "config.json"
        if cfg_path.is_file():
            cfg = TrainConfig.from_json(cfg_path, written_by_run=True)
            runs.append((cfg_path, {k: getattr(cfg, k) for k in POPULATION_SETTINGS}))
    chosen: dict[str, Any] = {}
    differ: list[str] = []
    for key in POPULATION_SETTINGS:
        if key == "population" and spec is not None:
            chosen[key] = spec
        elif getattr(args, key, None) is not None:
            chosen[key] = getattr(args, key)
        elif len({json.dumps(r[key]) for _, r in runs}) > 1:
            differ.append(key)
        elif runs:
            chosen[key] = runs[0][1][key]
    if differ:
        flags = ", ".join("--split-protocol" if k == "protocol" else "--" + k.replace("_", "-") for k in differ)
        values = "; ".join(f"{k}: " + ", ".join(f"{population_label(r[k])} ({p})" for p, r in runs) for k in differ)
        raise CLIError(f"the models' runs differ in {', '.join(differ)} ({values}); pass {flags} to choose")
    chosen.setdefault("population", "dc-different-different-lambda")
    return TrainConfig.from_dict(chosen, source="command line").build_population(args.split)


def cmd_evaluate(args: argparse.Namespace) -> int:
    agents_out = None
    if args.out is not None:
        check_output_file(args.out, "--out")
        agents_out = check_output_file(args.out.with_name(args.out.stem + "_agents.csv"), "--out (per-agent file)")
    for p in args.models:
        if not p.is_file():
            what = "is a directory" if p.is_dir() else "does not exist"
            raise CLIError(f"model file {p} {what}; accepted: model.pt files written by 'eqpm train'")
    pop = evaluation_population(args)
    models = {str(p): _load_model(p, pop.horizon, pop.lookback) for p in args.models}
    table = evaluate(models, pop, protocol=args.protocol_scoring, csv_path=args.out, agents_csv_path=agents_out)
    print(f"{pop.name}, {pop.split} split ({pop.protocol} protocol), {pop.layout} layout:")
    print(table.to_string(index=False))
    return 0


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig settings the command line (and --config) gives, validated, without defaults filled in."""
    cfg = _config_from_args(args)  # validates every flag before anything is written
    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        data = TrainConfig.from_json(args.config).to_dict()
        if data.get("init_from"):
            raise CLIError(f"--config {args.config}: init_from does not apply to compare, which fine-tunes from its "
                           "own Plain PM")
        defaults = TrainConfig().to_dict()  # a setting left at its default is not given: the studies' budget applies
        data = {k: v for k, v in data.items() if v != defaults[k] and k not in ("objective", "q", "seed")}
    data["population"] = cfg.population
    for key in ("region", "preset", "estimator", "baseline", "num_samples", "epochs", "batch_size", "lr",
                "max_batches", "checkpoint_every", "scale", "scale_final", "credit", "form", "beta", "layout",
                "protocol", "val_fraction", "split_seed", "selection", "patience", "accuracy_guard", "guard_metric",
                "guard_reference", "update"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(cfg, key)
    return data


def _distinct(values: list, flag: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            shown = f"{v:g}" if isinstance(v, float) else str(v)
            raise CLIError(f"{flag}: {shown} is given twice; accepted: distinct values (each would be one run "
                           f"counted twice)")
        seen.add(v)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.q is not None or args.q_plus_1 is not None:
        raise CLIError("--q / --q-plus-1 do not apply to compare; accepted: the exponents q+1 as --q-values, "
                       "e.g. --q-values 1 3 10")
    if args.init_from is not None:
        raise CLIError("--init-from does not apply to compare, which fine-tunes from its own Plain PM; use it with "
                       "'eqpm train'")
    if args.fine_tune_epochs < 1:
        raise CLIError(f"--fine-tune-epochs {args.fine_tune_epochs} is not accepted; accepted: an integer >= 1")
    for qp1 in args.q_values:
        if not qp1 >= 1:
            raise CLIError(f"--q-values: {qp1} is not accepted; accepted: exponents q+1 >= 1")
    _distinct(args.seeds, "--seeds")
    _distinct(args.q_values, "--q-values")
    settings = _given_settings(args)
    if getattr(args, "population", None) is None and getattr(args, "population_file", None) is None \
            and not getattr(args, "config", None):  # the main job: a population with a real trade-off
        settings["population"] = COMPARE_POPULATION
        settings.setdefault("region", COMPARE_REGION)
        settings.setdefault("model", dict(COMPARE_MODEL))
    try:
        specs = compare_specs(settings, args.q_values, args.seeds, fine_tune_epochs=args.fine_tune_epochs)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    first = specs[0].train_config()
    if first.val_fraction == 0:
        raise CLIError("--val-fraction 0 is not accepted by compare, which selects every model on the validation "
                       "split; accepted: a number in (0, 0.5)")
    train_pop = first.build_population("train")
    for spec in specs:  # every run's settings are checked before the first one trains (e.g. the rule 'auto' picks)
        build_update_rule(spec.train_config(), train_pop)
    check_output_dir(args.out_dir, "--out-dir")
    threads = torch.get_num_threads()
    if not os.environ.get("EQPM_THREADS"):  # small models: one thread is faster than two contending (measured)
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        run_grid(specs, args.out_dir, backend="sequential", progress=True)
    except KeyboardInterrupt:
        raise Interrupted("interrupted; run the same command again to resume (finished runs are kept, the "
                          "interrupted one resumes from its checkpoint)") from None
    finally:
        torch.set_num_threads(threads)
    runs = collect(args.out_dir, specs)
    runs["study"] = "compare"
    runs.to_csv(args.out_dir / "per_run.csv", index=False)
    selected = select_models(runs, accuracy_guard=args.select_guard,
                             warm_start_only=args.select_from == "fine-tunes")
    selected.to_csv(args.out_dir / "selected.csv", index=False)
    summary = method_summary(selected)
    summary.to_csv(args.out_dir / "summary.csv", index=False)
    where = f"{first.region}, preset {first.preset}" if isinstance(first.population, str) else \
        f"spec {first.population.get('source', '(dict)')}"
    scratch = any(s.method != "Plain PM" and s.init_run is None for s in specs)
    print(f"\nPopulation {first.population_name} ({where}), {first.layout} layout, {first.protocol} split, seeds "
          f"{args.seeds}; Plain PM {first.epochs} epochs, Utilitarian (q+1 = 1) and Equitable PMs (q+1 in "
          f"{', '.join(f'{q:g}' for q in args.q_values if q > 1) or 'none'}) fine-tuned from it for "
          f"{args.fine_tune_epochs} epochs" + (f" and trained from scratch at lr / sqrt(q+1) for {first.epochs}"
                                                if scratch else "")
          + "; every model chosen on the validation split"
          + ("" if args.select_guard is None else f", its MSE within +{args.select_guard:.0%} of the Plain PM's")
          + (", fine-tunes only" if args.select_from == "fine-tunes" else "")
          + f" ({time.perf_counter() - t0:.0f} s).")
    print("Held-out (test split) per-agent regret, mean ± std over seeds:\n")
    print(selected_markdown(selected))
    verdicts = target_claims(selected)
    for c in verdicts:
        if c["claim"].startswith("Target: selected Equitable PM below the Plain and"):
            print(f"\nEquitable PM below both the Plain and the Utilitarian PM on variance and worst agent, with mean "
                  f"regret within 5 % of the Utilitarian's: {c['verdict']}.")
    print(f"Runs, per-run and per-seed tables under {args.out_dir}.")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    spec = _population_file(args)
    if spec is not None and args.studies:
        raise CLIError("--population-file runs its own grid (Plain PM and Equitable PMs at --q-values); "
                       "give no study names with it")
    if spec is None and not args.studies:
        raise CLIError(f"no study given; accepted: {', '.join(STUDY_NAMES)}, all, or --population-file FILE")
    if spec is None and args.q_values:
        raise CLIError("--q-values applies to --population-file only")
    if spec is not None and args.layout is not None:
        raise CLIError("--layout does not apply to --population-file; accepted: set 'layout' in the file")
    names = list(STUDY_NAMES) if "all" in args.studies else list(dict.fromkeys(args.studies))
    for n in names:
        if n not in STUDY_NAMES:
            raise CLIError(f"unknown study {n!r}; accepted: {', '.join(STUDY_NAMES)}, all")
    if args.regions is not None:
        if spec is not None:
            raise CLIError("--regions does not apply to --population-file; accepted: set each agent's data in the file")
        other = [n for n in names if n not in REGION_STUDIES]
        if other:
            raise CLIError(f"--regions applies to the studies {', '.join(REGION_STUDIES)} only, not "
                           f"{', '.join(other)}")
        _distinct(args.regions, "--regions")
    if args.num_cpus is not None and args.num_cpus < 1:
        raise CLIError(f"--num-cpus {args.num_cpus} is not accepted; accepted: an integer >= 1")
    if args.address is not None and args.backend != "ray":
        raise CLIError("--address needs --backend ray")
    seeds = args.seeds or ([0] if args.quick else list(DEFAULT_SEEDS))
    _distinct(seeds, "--seeds")
    out = args.out or Path("runs/reproduce-quick" if args.quick else "runs/reproduce")
    check_output_dir(out, "--out")
    if args.figures_dir is not None:
        check_output_dir(args.figures_dir, "--figures-dir")
    if spec is not None:
        for qp1 in args.q_values or ():
            if not qp1 >= 1:
                raise CLIError(f"--q-values: {qp1} is not accepted; accepted: exponents q+1 >= 1")
        names = [f"population-{spec['name']}"]
        specs = {names[0]: [s for p in dict.fromkeys(args.protocol) for s in population_study_specs(
            spec, seeds, quick=args.quick, q_values=tuple(args.q_values or (1.0, 3.0)), protocol=p)]}
    else:
        specs = {n: [s for p in dict.fromkeys(args.protocol)
                     for s in study_specs(n, seeds, quick=args.quick, layout=args.layout or STUDY_LAYOUT,
                                             protocol=p, regions=args.regions)] for n in names}
    t0 = time.perf_counter()
    if not args.report_only:
        try:
            run_grid([s for v in specs.values() for s in v], out, backend=args.backend, address=args.address,
                     num_cpus=args.num_cpus)
        except KeyboardInterrupt:
            raise Interrupted("interrupted; run the same command again to resume (finished runs are kept, "
                              "unfinished ones continue from their checkpoints)") from None
    for n in names:
        try:
            paths = write_study_report(n, specs[n], out, args.figures_dir, accuracy_guard=args.select_guard,
                                       warm_start_only=args.select_from == "fine-tunes")
        except RuntimeError as exc:  # no finished runs: say so on one line
            raise CLIError(f"{exc}; run 'eqpm reproduce {n}' without --report-only first") from None
        print(paths["summary_md"].read_text())
        print(paths["claims"].read_text())
    combined = write_combined(out, args.figures_dir or out)
    print(f"claims of every reported study: {combined['claims']}; selected models: {combined['selected']}")
    print(f"wall time {time.perf_counter() - t0:.0f} s; tables and plots under {out}"
          + (f" and {args.figures_dir}" if args.figures_dir else ""))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from trainers.benchmark import Setting, make_plan, run_plan
    from trainers.benchmark_report import write_report

    spec = _population_file(args)
    if spec is not None:
        given = [f for f, v in (("--layout", args.layout), ("--region", args.region), ("--preset", args.preset)) if v]
        if given:
            raise CLIError(f"{', '.join(given)}: not accepted with --population-file; accepted: the layout, region "
                           "and preset set in the file")
        settings = [Setting(spec, spec["layout"], args.q_plus_1, model=args.model or {})]
    elif not args.population:
        raise CLIError("no population given; accepted: --population NAME [NAME ...] or --population-file FILE")
    else:
        settings = [Setting(p, lay, args.q_plus_1, region=args.region or "CISO", preset=args.preset or "paper",
                            model=args.model or {})
                    for p in dict.fromkeys(args.population) for lay in dict.fromkeys(args.layout or ["shared"])]
    if args.num_cpus is not None and args.num_cpus < 1:
        raise CLIError(f"--num-cpus {args.num_cpus} is not accepted; accepted: an integer >= 1")
    if args.address is not None and args.backend != "ray":
        raise CLIError("--address needs --backend ray")
    try:
        plan = make_plan(settings, args.methods, budget=args.budget, checkpoints=args.checkpoints, seeds=args.seeds,
                         tune_seed=args.tune_seed, quick=args.quick)
    except ValueError as exc:  # also ConfigError and DataError: one line, nothing written
        raise CLIError(str(exc)) from None
    out = check_output_dir(args.out or Path("runs/benchmark-quick" if args.quick else "runs/benchmark"), "--out")
    t0 = time.perf_counter()
    if not args.report_only:
        run_plan(plan, out, backend=args.backend, address=args.address, num_cpus=args.num_cpus)
    try:
        paths = write_report(plan, out, out)
    except RuntimeError as exc:
        raise CLIError(f"{exc}; run 'eqpm benchmark' without --report-only first") from None
    print(paths["markdown"].read_text())
    print(f"wall time {time.perf_counter() - t0:.0f} s; tables, curves and runs under {out}")
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the ``eqpm`` command line; the one place where errors become messages and exit statuses."""
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        logging.getLogger("eq_envs.data").setLevel(logging.ERROR)
    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate, "compare": cmd_compare,
                "reproduce": cmd_reproduce, "benchmark": cmd_benchmark}[args.command](args)
    except KeyboardInterrupt:  # outside a training run: nothing to resume from
        if args.debug:
            raise
        ap.exit(130, "eqpm: interrupted\n")
    except Interrupted as exc:
        ap.exit(130, f"eqpm: {exc}\n")
    except EXPECTED_ERRORS as exc:
        if args.debug:
            raise
        ap.exit(2, f"eqpm: error: {_one_line(exc)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
