"""The paper's case studies (and ours beyond them) as grids of training runs.

A *study* is a list of :class:`RunSpec`: one training run each (setting x
method x q+1 x beta x estimator x seed).  :func:`study_specs` builds them;
:mod:`trainers.grid` runs them (on Ray or sequentially) and
:mod:`trainers.reports` turns the finished run directories into the paper's
tables and plots.

Studies (``eqpm reproduce NAME``):

* ``table1`` -- Table 1 / Fig. 2: 50 data centers in three settings, each
  against the Plain PM;
* ``table2`` -- Fig. 3 / Table 2: 70 EVs on carbon + water + price
  (gamma = eta = 1), "similar" and "different" agents, q+1 in {20, 30, 40};
* ``table3`` -- Table 3: the mixed population (data centers, EVs, phones on one
  carbon forecaster), q+1 in {1, 1.1};
* ``table4`` -- Table 4 / Fig. 6: the combined objective on the "different"
  EVs, q+1 = 40, beta in {0, 0.2, 0.8};
* ``estimators`` -- beyond the paper: the paper's REINFORCE (on the power form
  as published, and on the norm form) against the lower-variance weighted
  REINFORCE at the same number of environment samples;
* ``region`` -- beyond the paper: Table 1's hardest setting on ERCOT (Texas)
  grid data instead of CAISO;
* ``phone`` -- beyond the paper: the phones alone, on their true decision regret;
* ``tradeoffs`` -- beyond the paper: the populations with a real trade-off on a
  shared input (``ev-home-slots``, ``ev-home-windows``, ``phone-home-windows``;
  docs/tradeoffs.md) on CAISO and ERCOT, q+1 in {1, 5, 20}.

``region`` and ``tradeoffs`` run on other balancing authorities' data with
``study_specs(..., regions=[...])`` (``eqpm reproduce tradeoffs --regions PJM
MISO``): the same runs, a check of their findings on data they were not
developed on (docs/fresh_check.md).

In every setting and seed the Plain PM is trained first; the Utilitarian PM
(q+1 = 1, added where the paper's grid lacks it) and the Equitable PMs are
fine-tuned from it (``init_from`` naming the Plain PM's run inside the grid,
:func:`init_path`), and every run's ``model.pt`` is its best validation epoch
(:mod:`trainers.selection`).  Which configuration stands for each method is
chosen on validation by :mod:`trainers.model_selection`.

Every run uses the paper's layout (``layout="shared"``: one public input per
hour for every agent, :mod:`eq_envs.population`) unless a study is built with
``layout="chunked"`` (a variant; its settings are then labelled "(chunked
layout)"), and the time-ordered split with a validation stretch at the end of
the training data unless built with ``protocol="random"`` (the paper's App.
A.3.1 partition; :attr:`RunSpec.protocol`).

Hyper-parameters follow App. A.3.1 (Adam, StepLR step 50 x 0.5, sequence
length 12, batch 128, LSTM hidden 50, lr 0.05 for the data centers) except
where :data:`DEVIATIONS` says why not.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eq_envs.population import DEFAULT_LAYOUT
from eq_envs.presets import TRADEOFF_POPULATIONS
from trainers.config import TrainConfig

#: Documented departures from App. A.3.1 (printed into docs/results.md).
DEVIATIONS: dict[str, str] = {
    "budget": "The paper does not give its epoch counts. To fit every study under both split protocols in under "
              "two hours of one CPU core (measured: 85 minutes for 540 runs), the Plain PM (and a run from "
              "scratch) trains 10 epochs and every fine-tune from the Plain PM 8 epochs. An epoch is one pass over "
              "the training split for the data centers (39 batches of 128 in the time protocol: 390 Adam steps "
              "for the Plain PM, 312 for a fine-tune) and 25 batches of 64 for every other population (250 and "
              "200 steps). The studies of ranking agents (Tables 2-4, phones, trade-off populations) train 4 "
              "times longer (RANKING_EPOCHS: 40 epochs, 32 for a fine-tune; 1,000 and 800 steps): at 10 epochs "
              "the Plain PMs were still improving, and on ERCOT an under-trained Plain PM flattered the regret-"
              "trained models (docs/results.md shows both budgets). Quick runs: 2 epochs of 2 batches.",
    "fine_tune": "The paper trains every model from scratch at one learning rate. Here each Utilitarian / Equitable "
                 "configuration starts from the Plain PM of the same seed, setting and protocol (init_from) and is "
                 "fine-tuned at a tenth of its learning rate (0.005 data centers, 3e-4 otherwise); for ranking "
                 "agents (EVs, phones, mixed, trade-off populations) every exponent is also trained from scratch at "
                 "the Plain PM's budget with the step rule lr = 3e-3 / sqrt(q+1), and validation chooses between "
                 "them. Measured on the training and validation splits (benchmarks/bench_overshoot.py, 2 seeds, "
                 "docs/results.md): from scratch at the studies' rate, q+1 = 20 on the EV home-slot agents ends at "
                 "a validation variance of 290 against the Plain PM's 122 and q+1 = 40 on the 'different' EVs at "
                 "34.5 against 16.4; lr / sqrt(q+1) gives 64 and 7.9, the fine-tune 83 and 10.6. On the data "
                 "centers every recipe ends above the Plain PM's validation variance (q+1 = 20: 3.6e-5 to 3.9e-5 "
                 "against 2.8e-5), so the Plain PM itself stays a candidate (DEVIATIONS['selection']).",
    "selection": "model.pt of every run is its best validation epoch (the Plain PM: validation MSE; the others: the "
                 "norm-form Equitable Objective at their own q). Across a setting's configurations, per seed, the "
                 "Utilitarian PM is, among the q+1 = 1 runs and the Plain PM they were fine-tuned from, the one "
                 "with the lowest validation mean regret, and the Equitable PM is, among the q+1 > 1 runs (every "
                 "beta and start) and that Plain PM, the one with the lowest validation worst-agent regret whose "
                 "validation mean regret is within 5 % of the selected Utilitarian PM's (if none is, the lowest "
                 "validation mean regret). The paper selects nothing on validation.",
    "slot_lr_batch": "EV / phone / mixed / trade-off populations: lr 3e-3 with batch 64 (25 batches an epoch) instead "
                     "of the paper's lr 1e-4 with batch 128: at the paper's rate the Plain PM barely moves within "
                     "the budget (measured in the chunked layout: training MSE 70.5 after 12 epochs at lr 1e-3).",
    "layout": "The paper's layout (one public input per hour, shared by every agent; each agent cycles through "
              "its own context values). Our agents pair clock position i with their context i mod N_m; the "
              "released code pairs batch position j of each unshuffled batch of 128 with context j for j < N_m "
              "and leaves the other positions of the batch unscored for that agent. Measured on the training "
              "split for trained and untrained models (benchmarks/bench_context_cycling.py, "
              "docs/tradeoffs.md): the per-agent mean regrets under the two rules correlate at >= 0.996 and "
              "variance, worst agent and mean differ by at most 5 %, with the same order of methods.",
    "validation": "The last 15 % of the training data (hours and each agent's context values, time-ordered; under "
                  "the random protocol as many randomly drawn) is a validation split that is not trained on; the "
                  "paper has none. The test split is the paper's 33 % (data centers, phones, mixed) or 30 % (EVs).",
    "protocol": "Every study is run under both split protocols: time order (held-out months after the training "
                "months, our main protocol) and the paper's App. A.3.1 random per-agent partition, which puts "
                "held-out hours between training hours (eq_envs/splits.py).",
    "transformer": "Transformer width 64 (4 heads, 1 encoder layer) instead of 250, to fit 2 CPU cores.",
    "mixed_lr": "Table 3: the paper uses lr 0.05 (Plain) and 0.1 (Equitable) with StepLR decay 0.1 for a "
                "Transformer; we use lr 3e-3 for the Plain PM and its fine-tunes, so that the methods differ "
                "only in the objective.",
    "ev_estimator": "EV / phone / mixed Equitable PMs are trained on the true decision regret with the "
                    "lower-variance weighted REINFORCE (K = 4 samples per input, leave-one-out baseline); the "
                    "released code trains EVs on a differentiable surrogate (the predicted cost of the chosen "
                    "slots). The 'estimators' study compares against the paper's REINFORCE (Eq. 3-4).",
    "combined_objective": "beta > 0 (Table 4) minimises (1 - beta) N_q + beta MSE, with N_q the norm form of the "
                          "Equitable Objective and MSE that of the mean (deterministic) prediction averaged over "
                          "batch and horizon, differentiated directly. The paper's Eq. 36/37 instead uses the "
                          "power form sum_m Cbar_m^(q+1) and the squared error of the *sampled* predictions summed "
                          "over horizon and agents, inside its REINFORCE term; that is available as "
                          "estimator='reinforce_paper_combined' (trainers/updates/reinforce_paper_combined.py). Its "
                          "accuracy term also pulls the policy's scale to zero (E||y - yhat||^2 = "
                          "||y - mu||^2 + tr Sigma), its scale is M*H times ours for the same beta, and at "
                          "q+1 = 40 its power form overflows float32 once an agent's mean regret exceeds about 9 "
                          "(the divergence guard stops such a run).",
}

#: Layout of the reproduction studies: the paper's (one shared public input per hour).
STUDY_LAYOUT = DEFAULT_LAYOUT
STUDY_NAMES = ("table1", "table2", "table3", "table4", "estimators", "region", "phone", "tradeoffs")
DEFAULT_SEEDS = (0, 1, 2)
SPLIT_PROTOCOLS = ("time", "random")

# Table 1 settings: (label, population, exponents q+1) as the paper lists them.
TABLE1_SETTINGS = (
    ("Similar agents, different λ", "dc-similar-different-lambda", (1.0, 1.1, 1.5)),
    ("Different agents, same λ", "dc-different-same-lambda", (1.0, 3.0, 20.0)),
    ("Different agents, different λ", "dc-different-different-lambda", (1.0, 3.0, 10.0)),
)
TABLE2_SETTINGS = (("Similar agents", "ev-similar"), ("Different agents", "ev-different"))
TABLE2_EXPONENTS = (20.0, 30.0, 40.0)
TABLE3_EXPONENTS = (1.0, 1.1)
TABLE4_BETAS = (0.0, 0.2, 0.8)
PHONE_EXPONENTS = (1.0, 3.0, 10.0)
#: Beyond the paper: populations with a real trade-off on a shared input (docs/tradeoffs.md), on two grids.
TRADEOFF_REGIONS = ("CISO", "ERCO")
#: Studies whose grid data can be another balancing authority's (``study_specs(..., regions=...)``).
REGION_STUDIES = ("region", "tradeoffs")
TRADEOFF_EXPONENTS = (1.0, 5.0, 20.0)

#: TrainConfig settings added after study runs were written, with the value at which they are left out of a run's
#: config (so the ids, and the finished runs, of those studies stay valid).
LATER_SETTINGS: dict[str, Any] = {"init_from": None, "validate_every": 1, "memory_budget_mib": None}
#: Budgets (module doc of docs/results.md, DEVIATIONS["budget"]): the Plain PM, then fine-tunes from it.
PLAIN_EPOCHS = 10
FINE_TUNE_EPOCHS = 8
#: Studies of ranking agents (Tables 2-4, phones, trade-offs): Plain PM / from-scratch epochs (fine-tunes: 80 % of
#: it); DEVIATIONS["budget"].
RANKING_EPOCHS = 40
RANKING_BUDGET = {"plain_kw": {"epochs": RANKING_EPOCHS}, "fine_tune_epochs": RANKING_EPOCHS * FINE_TUNE_EPOCHS
                  // PLAIN_EPOCHS}
#: Fine-tunes run at this fraction of the Plain PM's learning rate (DEVIATIONS["fine_tune"]).
FINE_TUNE_LR_FACTOR = 0.1
#: Ranking agents (non-differentiable regrets) also get every exponent trained from scratch at the Plain PM's
#: budget with the step rule lr / sqrt(q+1); model selection chooses between the two starts on validation.
SCRATCH = True
DC_TRAINING = {"batch_size": 128, "lr": 0.05}  # the paper's; an epoch is the whole training split
SLOT_TRAINING = {"lr": 3e-3, "batch_size": 64, "max_batches": 25}
QUICK = {"epochs": 2, "max_batches": 2}
WEIGHTED = {"estimator": "reinforce_weighted", "baseline": "loo", "num_samples": 4}
PAPER_REINFORCE = {"estimator": "reinforce_paper", "num_samples": 4}
# The paper's estimator on the norm form of the objective: same minimisers, gradients that fit in float32
# (in the power form at q+1 = 20 Adam's second moment overflows and every update is 0; BENCHMARKS.md).
PAPER_REINFORCE_NORM = {"estimator": "reinforce_paper", "num_samples": 4, "form": "norm"}
#: ``init_from`` of a study run names another run of the same grid by this root-relative path; the grid resolves
#: it against its root (so a run's id does not depend on where the grid lives).
INIT_PREFIX = "runs/"


def init_path(run_id: str) -> str:
    """The root-relative ``init_from`` of a run that starts from run ``run_id``'s ``model.pt``."""
    return f"{INIT_PREFIX}{run_id}/model.pt"


@dataclass(frozen=True)
class RunSpec:
    """One training run of a study: what to train and how to label it in the tables.

    ``paper_grid`` is False for runs the paper's table does not list (the Utilitarian PM q+1 = 1 added to
    Table 2's settings for model selection); the paper's claims are checked on the others.
    """

    study: str
    setting: str
    method: str  # "Plain PM" or "Equitable PM" (q+1 = 1 is the Utilitarian PM)
    config: dict[str, Any] = field(hash=False)
    seed: int = 0
    q_plus_1: float | None = None
    beta: float = 0.0
    estimator: str = "mse"
    protocol: str = "time"  # how the data were split: "time" or the paper's "random" (eq_envs.splits)
    paper_grid: bool = True

    @property
    def run_id(self) -> str:
        """A readable, unique directory name; the hash ties it to the exact settings."""
        c = self.config
        pop = c["population"]
        head = f"{pop['name']}-spec" if isinstance(pop, dict) else f"{pop}-{c['region']}"
        if self.method == "Plain PM":
            tag = "plain"
        else:
            tag = f"eq-q{self.q_plus_1:g}-b{self.beta:g}-{self.estimator}" + ("-ft" if self.init_run else "")
        digest = hashlib.sha1(json.dumps(c, sort_keys=True).encode()).hexdigest()[:8]
        return f"{head}/{tag}-{self.protocol}-seed{self.seed}-{digest}"

    @property
    def init_run(self) -> str | None:
        """The run id this run is fine-tuned from (its ``init_from`` inside the grid), or None."""
        path = self.config.get("init_from")
        if isinstance(path, str) and path.startswith(INIT_PREFIX) and path.endswith("/model.pt"):
            return path[len(INIT_PREFIX):-len("/model.pt")]
        return None

    def train_config(self, root: str | Path | None = None) -> TrainConfig:
        """The run's TrainConfig; with ``root``, a grid-relative ``init_from`` becomes a path under ``root``."""
        c = self.config
        if root is not None and self.init_run is not None:
            c = {**c, "init_from": str(Path(root) / c["init_from"])}
        return TrainConfig.from_dict(c, source=f"run {self.run_id}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "run_id": self.run_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = {k: v for k, v in d.items() if k != "run_id"}
        return cls(**d)


def _config(population: str | dict[str, Any], seed: int, quick: bool, region: str = "CISO", *,
            layout: str = STUDY_LAYOUT, protocol: str = "time", **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"population": population, "region": region, "seed": seed, "epochs": PLAIN_EPOCHS,
                         "checkpoint_every": 5, "protocol": protocol}
    if isinstance(population, str):
        d["layout"] = layout  # a spec carries its own layout
    d.update(DC_TRAINING if _differentiable(population) else SLOT_TRAINING)
    d.update(kw)
    if quick:
        d.update(QUICK)
        d["checkpoint_every"] = 1
    # normalise through TrainConfig so equal runs hash equally however they were written; settings added to
    # TrainConfig later are left out while unset, so existing run ids (and finished runs) stay valid
    full = TrainConfig.from_dict(d).to_dict()
    return {k: v for k, v in full.items() if not (k in LATER_SETTINGS and v == LATER_SETTINGS[k])}


def _differentiable(population: str | dict[str, Any]) -> bool:
    """Data-center presets (pathwise gradient, the paper's lr 0.05 and batch 128)."""
    return isinstance(population, str) and population.startswith("dc-")


def _label(setting: str, cfg: dict[str, Any]) -> str:
    """A setting's name in the tables: the paper's, marked where a preset's layout is not the paper's."""
    return setting if cfg["layout"] == STUDY_LAYOUT or isinstance(cfg["population"], dict) \
        else f"{setting} ({cfg['layout']} layout)"


def _plain(study: str, setting: str, population: str | dict[str, Any], seed: int, quick: bool, **kw: Any) -> RunSpec:
    cfg = _config(population, seed, quick, objective="mse", **kw)
    return RunSpec(study, _label(setting, cfg), "Plain PM", cfg, seed, protocol=cfg["protocol"])


def _equitable(study: str, setting: str, population: str | dict[str, Any], seed: int, quick: bool, q_plus_1: float,
               beta: float = 0.0, estimator_kw: dict[str, Any] | None = None, init: RunSpec | None = None,
               paper_grid: bool = True, **kw: Any) -> RunSpec:
    """An Equitable PM at ``q_plus_1``; with ``init`` (a Plain PM) fine-tuned from it (DEVIATIONS["fine_tune"])."""
    est = dict(estimator_kw if estimator_kw is not None else ({} if _differentiable(population) else WEIGHTED))
    if init is not None:
        kw = {"epochs": FINE_TUNE_EPOCHS, "init_from": init_path(init.run_id),
              "lr": init.config["lr"] * FINE_TUNE_LR_FACTOR, **kw}
    cfg = _config(population, seed, quick, objective="equitable", q=q_plus_1 - 1.0, beta=beta, **est, **kw)
    estimator = cfg["estimator"] if cfg["estimator"] != "auto" else "pathwise"
    if cfg["estimator"] == "reinforce_paper" and cfg["form"] == "norm":
        estimator += "-norm"
    return RunSpec(study, _label(setting, cfg), "Equitable PM", cfg, seed, q_plus_1, beta, estimator,
                   protocol=cfg["protocol"], paper_grid=paper_grid)


def _setting(study: str, label: str, population: str | dict[str, Any], seeds, quick: bool,
             exponents: tuple[float, ...], betas: tuple[float, ...] = (0.0,),
             estimator_kw: dict[str, Any] | None = None, plain_kw: dict[str, Any] | None = None,
             fine_tune_epochs: int | None = None, **kw: Any):
    """Per seed: the Plain PM, then the Utilitarian PM (q+1 = 1, added where the grid lacks it) and the
    Equitable PMs at ``exponents`` x ``betas``, each fine-tuned from that Plain PM; for ranking agents also
    every exponent (beta = 0) from scratch at the Plain PM's rate over sqrt(q+1) (:data:`SCRATCH`).

    ``plain_kw`` go to the Plain PM only, ``fine_tune_epochs`` to the fine-tunes, ``kw`` to every run.
    """
    exps = tuple(dict.fromkeys(exponents if 1.0 in exponents else (1.0, *exponents)))
    for s in seeds:
        plain = _plain(study, label, population, s, quick, **kw, **(plain_kw or {}))
        yield plain
        ft = {} if fine_tune_epochs is None else {"epochs": fine_tune_epochs}
        for e in exps:
            for b in (betas if e in exponents else (0.0,)):
                yield _equitable(study, label, population, s, quick, e, beta=b, estimator_kw=estimator_kw,
                                 init=plain, paper_grid=e in exponents, **ft, **kw)
        if SCRATCH and not _differentiable(population):
            for e in exps:
                yield _equitable(study, label, population, s, quick, e, estimator_kw=estimator_kw, paper_grid=False,
                                 lr=plain.config["lr"] / math.sqrt(e), epochs=plain.config["epochs"], **kw)


def _table1(seeds, quick, region="CISO", study="table1", suffix="", **kw):
    for label, pop, exps in TABLE1_SETTINGS if study == "table1" else TABLE1_SETTINGS[2:]:
        yield from _setting(study, label + suffix, pop, seeds, quick, exps, region=region, **kw)


def _table2(seeds, quick, **kw):
    for label, pop in TABLE2_SETTINGS:
        yield from _setting("table2", label, pop, seeds, quick, TABLE2_EXPONENTS, **RANKING_BUDGET, **kw)


def _table3(seeds, quick, **kw):
    yield from _setting("table3", "Mixed agents", "mixed", seeds, quick, TABLE3_EXPONENTS, **RANKING_BUDGET, **kw)


def _table4(seeds, quick, **kw):
    yield from _setting("table4", "Different agents", "ev-different", seeds, quick, (40.0,), betas=TABLE4_BETAS,
                        **RANKING_BUDGET, **kw)


def _estimators(seeds, quick, **kw):
    # from scratch: the study measures how fast each estimator learns, at the Plain PM's budget
    for s in seeds:
        for est in (PAPER_REINFORCE, PAPER_REINFORCE_NORM, WEIGHTED):
            yield _equitable("estimators", "Similar agents", "ev-similar", s, quick, 20.0, estimator_kw=est, **kw)


def _region(seeds, quick, regions=("ERCO",), **kw):
    for r in regions:  # the region in the setting's name unless it is the study's own (ERCOT)
        yield from _table1(seeds, quick, region=r, study="region", suffix="" if regions == ("ERCO",) else f", {r}",
                           **kw)


def _phone(seeds, quick, **kw):
    yield from _setting("phone", "Phones", "phone", seeds, quick, PHONE_EXPONENTS, **RANKING_BUDGET, **kw)


def _tradeoffs(seeds, quick, regions=TRADEOFF_REGIONS, **kw):
    for region in regions:
        for pop in TRADEOFF_POPULATIONS:
            yield from _setting("tradeoffs", f"{pop}, {region}", pop, seeds, quick, TRADEOFF_EXPONENTS,
                                region=region, **RANKING_BUDGET, **kw)


_BUILDERS: dict[str, Callable[..., Any]] = {
    "table1": _table1, "table2": _table2, "table3": _table3, "table4": _table4,
    "estimators": _estimators, "region": _region, "phone": _phone, "tradeoffs": _tradeoffs,
}


def population_study_specs(spec: dict[str, Any], seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS,
                           quick: bool = False, q_values: tuple[float, ...] = (1.0, 3.0),
                           protocol: str = "time") -> list[RunSpec]:
    """Plain PM, Utilitarian PM (q+1 = 1, always) and Equitable PMs at ``q_values`` x ``seeds`` on a population
    spec (``--population-file``), in the spec's layout, split by ``protocol``.

    Settings as the studies' slot populations (lr 3e-3, batch 64, 25 batches an epoch; the Utilitarian and
    Equitable PMs fine-tuned from the Plain PM); the estimator is pathwise when every agent's regret is
    differentiable, else the weighted REINFORCE (K = 4).
    """
    from eq_envs.population_file import build_population_from_spec

    if not seeds:
        raise ValueError("at least one seed is needed")
    pop = build_population_from_spec(spec, "train")  # also checks every data file before any run starts
    est = {} if pop.differentiable else WEIGHTED
    study, setting = f"population-{spec['name']}", spec["name"]
    return list(_setting(study, setting, spec, tuple(seeds), quick, tuple(q_values), estimator_kw=est,
                         protocol=protocol))


#: TrainConfig settings that belong to the update rule: a compare run gives them to the fine-tunes only.
RULE_SETTINGS = ("estimator", "baseline", "credit", "form", "num_samples", "update", "beta", "scale", "scale_final")
#: Settings of the Plain PM only in a compare run (the fine-tunes have their own epochs and a tenth of the rate).
PLAIN_SETTINGS = ("epochs", "lr")


def compare_specs(settings: dict[str, Any], q_values: tuple[float, ...] | list[float],
                  seeds: tuple[int, ...] | list[int], fine_tune_epochs: int = FINE_TUNE_EPOCHS) -> list[RunSpec]:
    """The runs of ``eqpm compare``: per seed the Plain PM, then the Utilitarian PM (q+1 = 1, always included) and
    the Equitable PMs at ``q_values``, fine-tuned from it -- the studies' recipe on one population.

    ``settings`` are TrainConfig settings given by the user (``population`` required); the studies' budgets
    fill in the rest.  :data:`RULE_SETTINGS` go to the fine-tunes only, :data:`PLAIN_SETTINGS` to the Plain PM
    only (the fine-tunes run ``fine_tune_epochs`` epochs at :data:`FINE_TUNE_LR_FACTOR` times its rate).
    """
    if not seeds:
        raise ValueError("at least one seed is needed")
    d = dict(settings)
    population = d.pop("population")
    d.pop("seed", None)
    common = {k: v for k, v in d.items() if k not in RULE_SETTINGS + PLAIN_SETTINGS}
    plain_kw = {k: d[k] for k in PLAIN_SETTINGS if k in d}
    rule_kw = {k: d[k] for k in RULE_SETTINGS if k in d and k != "beta"}
    beta = float(d.get("beta", 0.0))
    estimator_kw = rule_kw if "estimator" in rule_kw else \
        {**({} if _differentiable(population) else WEIGHTED), **rule_kw}
    label = population if isinstance(population, str) else population["name"]
    exps = tuple(dict.fromkeys(float(q) for q in q_values if q > 1))
    return list(_setting("compare", label, population, tuple(seeds), False, exps, betas=(beta,),
                         estimator_kw=estimator_kw, plain_kw=plain_kw, fine_tune_epochs=fine_tune_epochs, **common))


def study_specs(name: str, seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS, quick: bool = False,
                layout: str = STUDY_LAYOUT, protocol: str = "time",
                regions: tuple[str, ...] | list[str] | None = None) -> list[RunSpec]:
    """The runs of study ``name`` (one of :data:`STUDY_NAMES`) in ``layout`` under the split ``protocol``.

    ``regions`` (studies in :data:`REGION_STUDIES` only) replaces the study's balancing authorities, e.g. to
    check its findings on grid data it was not developed on.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown study {name!r}; accepted: {', '.join(STUDY_NAMES)}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    kw: dict[str, Any] = {}
    if regions is not None:
        if name not in REGION_STUDIES:
            raise ValueError(f"regions apply to the studies {', '.join(REGION_STUDIES)} only, not {name!r}")
        if not regions:
            raise ValueError("at least one region is needed")
        kw["regions"] = tuple(dict.fromkeys(regions))
    return list(_BUILDERS[name](tuple(seeds), quick, layout=layout, protocol=protocol, **kw))


#: The paper's published numbers, keyed by (study, setting, q+1 or None for the Plain PM, beta):
#: (variance, mean, C95-C5, MSE); None where the paper gives the value only as a figure.
#: Table 1 and Table 3 from the main text / App. A.4; EV MSEs from Table 2 (App. A.3.3) and Table 4 (App. A.5).
PAPER: dict[tuple[str, str, float | None, float], tuple[float | None, float | None, float | None, float | None]] = {
    ("table1", "Similar agents, different λ", 1.0, 0.0): (0.0029, 0.1591, 0.1687, 4.6308),
    ("table1", "Similar agents, different λ", 1.1, 0.0): (0.0003, 0.0544, 0.0576, 4.2465),
    ("table1", "Similar agents, different λ", 1.5, 0.0): (0.0002, 0.0465, 0.0493, 4.2194),
    ("table1", "Similar agents, different λ", None, 0.0): (0.0085, 0.2732, 0.2897, 4.2054),
    ("table1", "Different agents, same λ", 1.0, 0.0): (0.0008, 0.0909, 0.0809, 5.0991),
    ("table1", "Different agents, same λ", 3.0, 0.0): (0.0001, 0.0345, 0.0306, 4.4338),
    ("table1", "Different agents, same λ", 20.0, 0.0): (1.71e-5, 0.0136, 0.0121, 4.2028),
    ("table1", "Different agents, same λ", None, 0.0): (0.0009, 0.0988, 0.0879, 4.2013),
    ("table1", "Different agents, different λ", 1.0, 0.0): (0.0181, 0.2619, 0.4229, 4.6607),
    ("table1", "Different agents, different λ", 3.0, 0.0): (0.0068, 0.1603, 0.2588, 4.4182),
    ("table1", "Different agents, different λ", 10.0, 0.0): (0.0055, 0.1444, 0.2331, 4.3819),
    ("table1", "Different agents, different λ", None, 0.0): (0.0602, 0.4779, 0.7717, 4.2013),
    ("table2", "Similar agents", 20.0, 0.0): (None, None, None, 6.63),
    ("table2", "Similar agents", 30.0, 0.0): (None, None, None, 6.57),
    ("table2", "Similar agents", 40.0, 0.0): (None, None, None, 6.55),
    ("table2", "Similar agents", None, 0.0): (None, None, None, 6.54),
    ("table2", "Different agents", 20.0, 0.0): (None, None, None, 6.52),
    ("table2", "Different agents", 30.0, 0.0): (None, None, None, 6.47),
    ("table2", "Different agents", 40.0, 0.0): (None, None, None, 6.48),
    ("table2", "Different agents", None, 0.0): (None, None, None, 6.45),
    ("table3", "Mixed agents", 1.0, 0.0): (18.14, 7.06, 9.28, 9.66),
    ("table3", "Mixed agents", 1.1, 0.0): (15.72, 6.14, 8.39, 9.67),
    ("table3", "Mixed agents", None, 0.0): (18.89, 7.24, 9.45, 7.20),
    ("table4", "Different agents", 40.0, 0.0): (None, None, None, 6.48),
    ("table4", "Different agents", 40.0, 0.2): (None, None, None, 6.48),
    ("table4", "Different agents", 40.0, 0.8): (None, None, None, 6.46),
    ("table4", "Different agents", None, 0.0): (None, None, None, 6.45),
}
