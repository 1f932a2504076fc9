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
* ``phone`` -- beyond the paper: the phones alone, on their true decision regret.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from eq_envs.population import DEFAULT_LAYOUT
from trainers.config import TrainConfig

#: Documented departures from App. A.3.1 (printed into docs/results.md).
DEVIATIONS: dict[str, str] = {
    "epochs": "The paper does not give its epoch counts. Full runs use 150 epochs, the mixed population 20 "
              "epochs with StepLR every 7 and the phones 40 epochs with StepLR every 14; quick runs use 6 epochs "
              "of at most 2 batches. An epoch is one pass over the training split's clock positions: in the "
              "paper's shared layout (time split, validation held out) 39 batches of 128 for the data centers "
              "(5,850 Adam steps in 150 epochs), 163 batches of 32 for the EVs (24,450 steps), 156 batches of 32 "
              "for the mixed population (3,120 steps) and the phones (6,240 steps). These counts were set for "
              "the chunked layout (one batch an epoch for the data centers) and are to be re-chosen on the "
              "validation split for the shared layout.",
    "ev_lr_batch": "EV / phone / mixed: lr 3e-3 with batch 32 instead of the paper's lr 1e-4 with batch 128. "
                   "Measured in the chunked layout, where 88 training positions per agent made batch 128 one "
                   "Adam step per epoch: even at lr 1e-3 (10x the paper's) the Plain PM's training MSE was 70.5 "
                   "after 12 epochs and its held-out MSE 34.4 after 250 epochs, a comparison against an "
                   "untrained model; lr 3e-3 with batch 32 reached a training MSE of 8.6 in 60 epochs. In the "
                   "paper's shared layout batch 128 is 41 steps an epoch, so this reason no longer holds.",
    "layout": "The paper's layout (one public input per hour, shared by every agent; each agent cycles through "
              "its own context values). Our agents pair clock position i with their context i mod N_m; the "
              "released code pairs batch position j of each unshuffled batch of 128 with context j for j < N_m "
              "and leaves the other positions of the batch unscored for that agent. Measured on the training "
              "split for trained and untrained models (benchmarks/bench_context_cycling.py, "
              "docs/tradeoffs.md): the per-agent mean regrets under the two rules correlate at >= 0.996 and "
              "variance, worst agent and mean differ by at most 5 %, with the same order of methods.",
    "validation": "The last 15 % of the training data (hours and each agent's context values, time-ordered) is "
                  "a validation split that is not trained on; the paper has none. The test split is the "
                  "paper's 33 % (data centers, phones, mixed) or 30 % (EVs).",
    "protocol": "Time-ordered split (held-out months after the training months); App. A.3.1 partitions each "
                "agent's data at random, which puts held-out hours between training hours. Both are available "
                "(eqpm reproduce --split-protocol time|random; eq_envs/splits.py).",
    "transformer": "Transformer width 64 (4 heads, 1 encoder layer) instead of 250, to fit 2 CPU cores.",
    "mixed_lr": "Table 3: the paper uses lr 0.05 (Plain) and 0.1 (Equitable) with StepLR decay 0.1 for a "
                "Transformer; we use the same lr 3e-3 for both, so that the methods differ only in the objective.",
    "ev_estimator": "EV / phone / mixed Equitable PMs are trained on the true decision regret with the "
                    "lower-variance weighted REINFORCE (K = 4 samples per input, leave-one-out baseline); the "
                    "released code trains EVs on a differentiable surrogate (the predicted cost of the chosen "
                    "slots). The 'estimators' study compares against the paper's REINFORCE (Eq. 3-4).",
}

#: Layout of the reproduction studies: the paper's (one shared public input per hour).
STUDY_LAYOUT = DEFAULT_LAYOUT
STUDY_NAMES = ("table1", "table2", "table3", "table4", "estimators", "region", "phone")
DEFAULT_SEEDS = (0, 1, 2)

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

#: TrainConfig settings added after the first study runs; omitted from a run's config while unset.
LATER_SETTINGS = ("init_from", "memory_budget_mib")
FULL_EPOCHS = 150
# populations with 324 training positions (11 batches of 32 an epoch): about as many Adam steps as the EV runs
EPOCHS = {"mixed": {"epochs": 20, "step_size": 7}, "phone": {"epochs": 40, "step_size": 14}}
QUICK = {"epochs": 6, "max_batches": 2}
SLOT_TRAINING = {"lr": 3e-3, "batch_size": 32}
WEIGHTED = {"estimator": "reinforce_weighted", "baseline": "loo", "num_samples": 4}
PAPER_REINFORCE = {"estimator": "reinforce_paper", "num_samples": 4}
# The paper's estimator on the norm form of the objective: same minimisers, gradients that fit in float32
# (in the power form at q+1 = 20 Adam's second moment overflows and every update is 0; BENCHMARKS.md).
PAPER_REINFORCE_NORM = {"estimator": "reinforce_paper", "num_samples": 4, "form": "norm"}


@dataclass(frozen=True)
class RunSpec:
    """One training run of a study: what to train and how to label it in the tables."""

    study: str
    setting: str
    method: str  # "Plain PM" or "Equitable PM"
    config: dict[str, Any] = field(hash=False)
    seed: int = 0
    q_plus_1: float | None = None
    beta: float = 0.0
    estimator: str = "mse"
    protocol: str = "time"  # how the data were split: "time" or the paper's "random" (eq_envs.splits)

    @property
    def run_id(self) -> str:
        """A readable, unique directory name; the hash ties it to the exact settings."""
        c = self.config
        pop = c["population"]
        head = f"{pop['name']}-spec" if isinstance(pop, dict) else f"{pop}-{c['region']}"
        if self.method == "Plain PM":
            tag = "plain"
        else:
            tag = f"eq-q{self.q_plus_1:g}-b{self.beta:g}-{self.estimator}"
        digest = hashlib.sha1(json.dumps(c, sort_keys=True).encode()).hexdigest()[:8]
        return f"{head}/{tag}-seed{self.seed}-{digest}"

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config, source=f"run {self.run_id}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "run_id": self.run_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = {k: v for k, v in d.items() if k != "run_id"}
        return cls(**d)


def _config(population: str | dict[str, Any], seed: int, quick: bool, region: str = "CISO", *,
            layout: str = STUDY_LAYOUT, protocol: str = "time", **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"population": population, "region": region, "seed": seed, "epochs": FULL_EPOCHS,
                         "checkpoint_every": 10, "protocol": protocol}
    if isinstance(population, str):
        d["layout"] = layout  # a spec carries its own layout
    if not (isinstance(population, str) and population.startswith("dc-")):
        d.update(SLOT_TRAINING)
    if isinstance(population, str):
        d.update(EPOCHS.get(population, {}))
    d.update(kw)
    if quick:
        d.update(QUICK)
        d["checkpoint_every"] = 1
    # normalise through TrainConfig so equal runs hash equally however they were written; settings added to
    # TrainConfig later are left out while unset, so existing run ids (and finished runs) stay valid
    full = TrainConfig.from_dict(d).to_dict()
    return {k: v for k, v in full.items() if not (k in LATER_SETTINGS and v is None)}


def _label(setting: str, cfg: dict[str, Any]) -> str:
    """A setting's name in the tables: the paper's, marked where a preset's layout is not the paper's."""
    return setting if cfg["layout"] == STUDY_LAYOUT or isinstance(cfg["population"], dict) \
        else f"{setting} ({cfg['layout']} layout)"


def _plain(study: str, setting: str, population: str | dict[str, Any], seed: int, quick: bool, **kw: Any) -> RunSpec:
    cfg = _config(population, seed, quick, objective="mse", **kw)
    return RunSpec(study, _label(setting, cfg), "Plain PM", cfg, seed, protocol=cfg["protocol"])


def _equitable(study: str, setting: str, population: str | dict[str, Any], seed: int, quick: bool, q_plus_1: float,
               beta: float = 0.0, estimator_kw: dict[str, Any] | None = None, **kw: Any) -> RunSpec:
    est = dict(estimator_kw if estimator_kw is not None else
               ({} if isinstance(population, str) and population.startswith("dc-") else WEIGHTED))
    cfg = _config(population, seed, quick, objective="equitable", q=q_plus_1 - 1.0, beta=beta, **est, **kw)
    estimator = cfg["estimator"] if cfg["estimator"] != "auto" else "pathwise"
    if cfg["estimator"] == "reinforce_paper" and cfg["form"] == "norm":
        estimator += "-norm"
    return RunSpec(study, _label(setting, cfg), "Equitable PM", cfg, seed, q_plus_1, beta, estimator,
                   protocol=cfg["protocol"])


def _table1(seeds, quick, region="CISO", study="table1", **kw):
    for label, pop, exps in TABLE1_SETTINGS if study == "table1" else TABLE1_SETTINGS[2:]:
        for s in seeds:
            yield _plain(study, label, pop, s, quick, region=region, **kw)
            for e in exps:
                yield _equitable(study, label, pop, s, quick, e, region=region, **kw)


def _table2(seeds, quick, **kw):
    for label, pop in TABLE2_SETTINGS:
        for s in seeds:
            yield _plain("table2", label, pop, s, quick, **kw)
            for e in TABLE2_EXPONENTS:
                yield _equitable("table2", label, pop, s, quick, e, **kw)


def _table3(seeds, quick, **kw):
    for s in seeds:
        yield _plain("table3", "Mixed agents", "mixed", s, quick, **kw)
        for e in TABLE3_EXPONENTS:
            yield _equitable("table3", "Mixed agents", "mixed", s, quick, e, **kw)


def _table4(seeds, quick, **kw):
    for s in seeds:
        yield _plain("table4", "Different agents", "ev-different", s, quick, **kw)
        for b in TABLE4_BETAS:
            yield _equitable("table4", "Different agents", "ev-different", s, quick, 40.0, beta=b, **kw)


def _estimators(seeds, quick, **kw):
    for s in seeds:
        for est in (PAPER_REINFORCE, PAPER_REINFORCE_NORM, WEIGHTED):
            yield _equitable("estimators", "Similar agents", "ev-similar", s, quick, 20.0, estimator_kw=est, **kw)


def _region(seeds, quick, **kw):
    yield from _table1(seeds, quick, region="ERCO", study="region", **kw)


def _phone(seeds, quick, **kw):
    for s in seeds:
        yield _plain("phone", "Phones", "phone", s, quick, **kw)
        for e in PHONE_EXPONENTS:
            yield _equitable("phone", "Phones", "phone", s, quick, e, **kw)


_BUILDERS: dict[str, Callable[..., Any]] = {
    "table1": _table1, "table2": _table2, "table3": _table3, "table4": _table4,
    "estimators": _estimators, "region": _region, "phone": _phone,
}


def population_study_specs(spec: dict[str, Any], seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS,
                           quick: bool = False, q_values: tuple[float, ...] = (1.0, 3.0),
                           protocol: str = "time") -> list[RunSpec]:
    """Plain PM and Equitable PMs at ``q_values`` x ``seeds`` on a population spec (``--population-file``),
    in the spec's layout, split by ``protocol``.

    Settings as the paper's EV studies (lr 3e-3, batch 32, 150 epochs; quick: 6 epochs of 2 batches); the
    estimator is pathwise when every agent's regret is differentiable, else the weighted REINFORCE (K = 4).
    """
    from eq_envs.population_file import build_population_from_spec

    if not seeds:
        raise ValueError("at least one seed is needed")
    pop = build_population_from_spec(spec, "train")  # also checks every data file before any run starts
    est = {} if pop.differentiable else WEIGHTED
    study, setting = f"population-{spec['name']}", spec["name"]
    out = []
    for s in seeds:
        out.append(_plain(study, setting, spec, s, quick, protocol=protocol))
        out.extend(_equitable(study, setting, spec, s, quick, e, estimator_kw=est, protocol=protocol)
                   for e in q_values)
    return out


def study_specs(name: str, seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS, quick: bool = False,
                layout: str = STUDY_LAYOUT, protocol: str = "time") -> list[RunSpec]:
    """The runs of study ``name`` (one of :data:`STUDY_NAMES`) in ``layout`` under the split ``protocol``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown study {name!r}; accepted: {', '.join(STUDY_NAMES)}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    return list(_BUILDERS[name](tuple(seeds), quick, layout=layout, protocol=protocol))


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
