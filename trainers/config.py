"""Training configuration: one validated dataclass, JSON round-trip, paper defaults."""
from __future__ import annotations

import json
import math
from dataclasses import InitVar, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from agents.base import DEFAULT_MEMORY_BUDGET
from eq_envs.datasets.errors import DataError
from eq_envs.datasets.grid import REGIONS
from eq_envs.population import DEFAULT_LAYOUT, LAYOUTS, Population
from eq_envs.population_file import make_population, normalize_spec, population_label
from eq_envs.presets import POPULATIONS, PRESETS
from eq_envs.splits import PROTOCOLS, VAL_FRACTION
from trainers.estimators import BASELINES, CREDITS
from trainers.networks import WINDOW_HEAD, build_public_model
from trainers.objectives import check_beta, check_q
from trainers.updates import RULES, make_update_rule

OBJECTIVES = ("equitable", "mse")
#: Settings added to :class:`TrainConfig` after runs were written, with the value those older runs had
#: (a ``config.json`` or checkpoint without the key was trained with it).
ADDED_SETTINGS: dict[str, Any] = {"layout": "chunked", "protocol": "time", "val_fraction": 0.0, "split_seed": 0,
                                  "update": {}, "scale": "learned", "scale_final": None, "selection": "last",
                                  "validate_every": 1, "patience": None, "accuracy_guard": None, "guard_metric": "mse",
                                  "guard_reference": None, "memory_budget_mib": None}
#: Settings that change no number of a run (the fast path's shards, :mod:`agents.base`): a run may be resumed
#: with another value.
RESUMABLE_CHANGES = ("epochs", "memory_budget_mib")
#: ``estimator`` choices: ``auto`` and every registered update rule but the Plain PM's (``objective="mse"``).
ESTIMATOR_CHOICES = ("auto", *(n for n in RULES if n != "mse"))
#: How the policy's scale σ is controlled: learned by the optimizer, fixed at the head's ``init_std``, or
#: annealed log-linearly from ``init_std`` to ``scale_final`` over the run's batches.
SCALES = ("learned", "fixed", "anneal")
#: Settings of the Equitable Objective, its update rule and the policy's scale: a Plain PM (objective="mse") fits
#: the mean prediction and uses none of them.
EQUITABLE_ONLY = ("q", "beta", "estimator", "baseline", "credit", "num_samples", "form", "scale", "scale_final")
#: Seeds go to torch.manual_seed, which takes at most 64 bits; 63 keep them plain signed integers everywhere.
MAX_SEED = 2**63 - 1


def choice(name: str, value: Any, accepted: tuple | dict) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ConfigError(f"{name}={value!r} is not accepted; accepted: {', '.join(map(str, accepted))}")


class ConfigError(ValueError):
    """An invalid training setting (the CLI prints it as one line and exits with 2)."""


def default_model(population: str | dict[str, Any]) -> dict[str, Any]:
    """The public model the paper uses for a population.

    Data centers: LSTM with hidden size 50 (App. A.3.1), one step ahead, with a
    log-normal head (positive samples: the data-center regret is undefined for
    a non-positive prediction).  EV, phone and mixed populations: a one-layer
    Transformer encoder over the 12 past values predicting the next 12, with a
    Gaussian head.  The paper's feature size is 250; the default here is 64,
    which trains several times faster on 2 CPU cores -- pass
    ``{"backbone_kwargs": {"d_model": 250, "nhead": 5}}`` for the paper's width.
    A population spec (:mod:`eq_envs.population_file`) gets the data centers'
    model when its horizon is 1 and the Transformer with its horizon otherwise.
    """
    if isinstance(population, dict):
        h = int(population["horizon"])
        cfg = default_model("dc-" if h == 1 else "transformer")
        cfg["horizon"] = h
        return cfg
    if population.startswith("dc-"):
        return {"backbone": "lstm", "backbone_kwargs": {"hidden_size": 50}, "head": "lognormal",
                "head_kwargs": {"init_mean": 5.0, "init_std": 0.1}, "seq_len": 12, "horizon": 1}
    return {"backbone": "transformer", "backbone_kwargs": {"d_model": 64, "nhead": 4, "num_layers": 1},
            "head": "gaussian", "head_kwargs": {"init_mean": 5.0, "init_std": 0.5}, "seq_len": 12, "horizon": 12}


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved as ``config.json`` in the run directory).

    ``q`` is the equity parameter: the Equitable Objective is
    ``sum_m Cbar_m^(q+1)``; the paper's tables list the exponent ``q + 1``
    (give it with :meth:`from_dict` key ``q_plus_1``).  ``objective="mse"`` trains
    the Plain PM (``q``, ``beta`` and the estimator are then unused).
    ``estimator="auto"`` picks ``pathwise`` when every agent's regret is
    differentiable (data centers) and ``reinforce_weighted`` otherwise.
    ``lr=None`` takes the paper's learning rate for the population (0.05 data
    centers; 1e-3 for the others, ten times the paper's 1e-4 because our runs
    are tens of epochs, not hundreds); with ``estimator="eq_ppo"``, which takes
    many minibatch steps per rollout, 3e-3 for data centers and 3e-4 (PPO's
    default) for the others.  ``step_size``/``lr_gamma`` are the
    paper's StepLR, stepped once per epoch.  ``layout`` is the population's
    time layout (:mod:`eq_envs.population`): ``"shared"`` (default, the
    paper's: every agent at the same hour, one public input per clock position,
    also the layout of ``eq_envs/PublicModel-v0``) or ``"chunked"`` (a variant:
    each agent its own stretch of time).  ``protocol``, ``val_fraction`` and
    ``split_seed`` say how the data are split (:mod:`eq_envs.splits`):
    ``"time"`` order (default) or the paper's ``"random"`` per-agent partition
    seeded by ``split_seed`` (or ``"blocked"``: time order, the validation
    split in blocks spread over the training data); the last ``val_fraction`` of the training data is
    the validation split (:meth:`build_population` with ``split="val"``) and is
    not trained on.
    Validation (:mod:`trainers.selection`): with ``val_fraction > 0`` every
    epoch is scored on the validation split and ``model.pt`` is the epoch with
    the best ``selection`` criterion (default ``"equitable"``, the norm-form
    objective at ``q``; ``"mse"`` for the Plain PM; ``"worst"``, ``"variance"``,
    ``"mean"``, or ``"last"`` for no selection); ``patience`` stops after that
    many validations without improvement; ``validate_every`` validates every
    that many epochs (and at the last; 0: never, with ``selection="last"``); ``accuracy_guard`` (e.g. 0.05) admits only
    epochs whose validation ``guard_metric`` (``"mse"`` or ``"mean"`` regret) is
    within that fraction of the ``guard_reference`` model's (a Plain PM's ``model.pt``).
    ``init_from`` warm-starts the public model from a saved ``model.pt`` (e.g. a
    Plain PM) with the same architecture; the optimizer starts fresh.
    ``update`` holds the update rule's own settings (e.g. ``{"epochs": 10,
    "clip_range": 0.2}`` for ``estimator="eq_ppo"``; see
    :mod:`trainers.updates`).  ``scale`` controls the policy's scale σ
    (:data:`SCALES`): ``"learned"`` (default), ``"fixed"`` at the head's
    ``init_std``, or ``"anneal"``: log-linear from ``init_std`` to
    ``scale_final`` over the run's batches (not learned).
    ``memory_budget_mib`` bounds the temporaries of the regret fast path: every
    group's agents are evaluated in shards whose temporaries fit it
    (:attr:`eq_envs.population.Population.memory_budget`; ``None``: the default,
    32 MiB); the numbers do not depend on it, so a run may be resumed with
    another value.

    ``population`` is a preset name (:data:`eq_envs.presets.POPULATIONS`) or a
    population spec -- a dict as :func:`eq_envs.population_file.load_population_file`
    returns, with its own signal, data files and agent classes; it is stored
    normalised (paths absolute) so ``config.json`` records it.  A spec carries
    its own region, preset and layout: those settings must then stay at their defaults.
    ``q_plus_1`` may be given instead of ``q`` (``TrainConfig(q_plus_1=3)``).
    """

    population: str | dict[str, Any] = "dc-different-different-lambda"
    region: str = "CISO"
    preset: str = "paper"
    objective: str = "equitable"
    q: float = 0.0
    beta: float = 0.0
    estimator: str = "auto"
    baseline: str | None = None
    credit: str | None = None
    num_samples: int = 1
    form: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None
    step_size: int = 50
    lr_gamma: float = 0.5
    max_batches: int | None = None
    seed: int = 0
    checkpoint_every: int = 1
    init_from: str | None = None
    layout: str = DEFAULT_LAYOUT
    protocol: str = "time"
    val_fraction: float = VAL_FRACTION
    split_seed: int = 0
    update: dict[str, Any] = field(default_factory=dict)
    scale: str = "learned"
    scale_final: float | None = None
    selection: str | None = None
    validate_every: int = 1
    patience: int | None = None
    accuracy_guard: float | None = None
    guard_metric: str = "mse"
    guard_reference: str | None = None
    memory_budget_mib: float | None = None
    q_plus_1: InitVar[float | None] = None

    def __post_init__(self, q_plus_1: float | None = None) -> None:
        if q_plus_1 is not None:
            if self.q != 0.0:
                raise ConfigError("give q or q_plus_1, not both")
            if isinstance(q_plus_1, bool) or not isinstance(q_plus_1, (int, float)) or not q_plus_1 >= 1:
                raise ConfigError(f"q_plus_1={q_plus_1!r} is not accepted; accepted: a number >= 1")
            self.q = float(q_plus_1) - 1.0
        self.validate()

    # ------------------------------------------------------------- derived
    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        dc = isinstance(self.population, str) and self.population.startswith("dc-")
        if self.objective == "equitable" and self.estimator == "eq_ppo":
            # many small steps per rollout: a tenth of the one-step rules' rates (measured on validation, docs/trainer.md)
            return 3e-3 if dc else 3e-4
        return 0.05 if dc else 1e-3

    @property
    def population_name(self) -> str:
        """The preset's name or the spec's ``name``."""
        return population_label(self.population)

    def build_population(self, split: str = "train") -> Population:
        """The configured population on ``split`` (``"train"``, ``"val"`` or ``"test"``): a preset with its
        region, preset and layout, or the spec; split by :attr:`protocol`, :attr:`val_fraction`, :attr:`split_seed`;
        its fast path's shards bounded by :attr:`memory_budget_mib`."""
        try:
            pop = make_population(self.population, split, preset=self.preset, region=self.region, layout=self.layout,
                                  protocol=self.protocol, val_fraction=self.val_fraction, split_seed=self.split_seed)
        except DataError:
            raise
        except ValueError as exc:  # e.g. split="val" with val_fraction=0: one line, as every config error
            raise ConfigError(str(exc)) from None
        pop.memory_budget = self.memory_budget
        return pop

    @property
    def memory_budget(self) -> int:
        """:attr:`memory_budget_mib` in bytes (what :class:`eq_envs.population.Population` takes)."""
        return DEFAULT_MEMORY_BUDGET if self.memory_budget_mib is None else int(self.memory_budget_mib * 2**20)

    @property
    def model_config(self) -> dict[str, Any]:
        cfg = default_model(self.population)
        if self.model.get("input_norm") == "window" and "head_kwargs" not in self.model:
            # the default head's init_mean is in the signal's units; a window-normalised head predicts in the window's
            cfg["head_kwargs"] = dict(WINDOW_HEAD)
        cfg.update(self.model)
        return cfg

    # ---------------------------------------------------------- validation
    def validate(self) -> None:
        self._validate_population()
        choice("region", self.region, REGIONS)
        choice("preset", self.preset, PRESETS)
        choice("objective", self.objective, OBJECTIVES)
        # read the registry now, not at import: a rule registered later (docs/trainer.md) is accepted too
        choice("estimator", self.estimator, ("auto", *(n for n in RULES if n != "mse")))
        choice("layout", self.layout, LAYOUTS)
        choice("protocol", self.protocol, PROTOCOLS)
        if not (isinstance(self.val_fraction, (int, float)) and not isinstance(self.val_fraction, bool)
                and 0 <= self.val_fraction < 0.5):
            raise ConfigError(f"val_fraction={self.val_fraction!r} is not accepted; accepted: a number in [0, 0.5)")
        if not isinstance(self.split_seed, int) or isinstance(self.split_seed, bool) or self.split_seed < 0:
            raise ConfigError(f"split_seed={self.split_seed!r} is not accepted; accepted: an integer >= 0")
        if self.baseline is not None:
            choice("baseline", self.baseline, BASELINES)
        if self.credit is not None:
            choice("credit", self.credit, CREDITS)
        if self.form is not None:
            choice("form", self.form, ("norm", "power"))
        try:
            check_q(self.q)
            check_beta(self.beta)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for name in ("epochs", "batch_size", "num_samples", "step_size", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name}={v!r} is not accepted; accepted: an integer >= 1")
        if self.max_batches is not None and (not isinstance(self.max_batches, int) or self.max_batches < 1):
            raise ConfigError(f"max_batches={self.max_batches!r} is not accepted; accepted: an integer >= 1 or null")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} is not accepted; accepted: a number > 0")
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"lr_gamma={self.lr_gamma!r} is not accepted; accepted: a number in (0, 1]")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ConfigError(f"init_from={self.init_from!r} is not accepted; accepted: the path of a model.pt "
                              "written by 'eqpm train', or null")
        b = self.memory_budget_mib
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))
                              or not (math.isfinite(b) and b * 2**20 >= 1)):
            raise ConfigError(f"memory_budget_mib={b!r} is not accepted; accepted: a number of MiB of at least one "
                              f"byte (2**-20), or null for the default {DEFAULT_MEMORY_BUDGET / 2**20:g}")
        if not isinstance(self.model, dict):
            raise ConfigError(f"model={self.model!r} is not accepted; accepted: a dict of public-model settings")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed={self.seed!r} is not accepted; accepted: an integer in [0, {MAX_SEED}]")
        if self.objective == "mse":
            defaults = {f.name: f.default for f in fields(self)}
            for name in EQUITABLE_ONLY:
                if getattr(self, name) != defaults[name]:
                    raise ConfigError(f"{name}={getattr(self, name)!r} does not apply to objective='mse' (the Plain "
                                      f"PM fits the mean prediction by MSE); accepted: leave it unset, or "
                                      f"objective='equitable'")
        choice("scale", self.scale, SCALES)
        if self.scale == "anneal":
            f = self.scale_final
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and f > 0):
                raise ConfigError(f"scale_final={f!r} is not accepted; accepted: a number > 0 (the policy's final "
                                  "standard deviation) with scale='anneal'")
        elif self.scale_final is not None:
            raise ConfigError(f"scale_final={self.scale_final!r} applies to scale='anneal' only (scale={self.scale!r})")
        self._check_update_rule()
        try:  # build it once (without touching the global RNG) so that bad model settings fail here, not mid-run
            with torch.random.fork_rng(devices=[]):
                build_public_model(self.model_config)
        except (ValueError, TypeError, KeyError, RuntimeError, OverflowError) as exc:
            why = (str(exc).splitlines() or [repr(exc)])[0]
            raise ConfigError(f"model={self.model!r} is not accepted ({why}); accepted: the keys and constructor "
                              f"arguments of trainers.networks.build_public_model") from None
        self._check_selection()

    def _check_selection(self) -> None:
        from trainers.selection import CRITERIA, GUARD_METRICS
        v = self.validate_every
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"validate_every={v!r} is not accepted; accepted: an integer >= 0 (0: never)")
        if v == 0 and self.selection_criterion != "last":
            raise ConfigError(f"validate_every=0 turns validation off, but selection={self.selection_criterion!r} needs "
                              "it; accepted: validate_every >= 1, or selection='last'")
        if self.selection is not None:
            choice("selection", self.selection, CRITERIA)
            if self.selection != "last" and self.val_fraction == 0:
                raise ConfigError(f"selection={self.selection!r} needs a validation split; accepted with "
                                  "val_fraction=0: selection='last' (or null)")
        if self.patience is not None:
            if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 1:
                raise ConfigError(f"patience={self.patience!r} is not accepted; accepted: an integer >= 1 or null")
            if self.selection_criterion == "last":
                raise ConfigError("patience needs a validation criterion; accepted: val_fraction > 0 and a selection "
                                  "other than 'last'")
        choice("guard_metric", self.guard_metric, GUARD_METRICS)
        g = self.accuracy_guard
        if g is not None:
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not (math.isfinite(g) and g >= 0):
                raise ConfigError(f"accuracy_guard={g!r} is not accepted; accepted: a fraction >= 0 (0.05 = 5 %) or null")
            if not self.guard_reference:
                raise ConfigError("accuracy_guard needs guard_reference: the model.pt (e.g. the Plain PM's) whose "
                                  f"validation {self.guard_metric} sets the limit")
            if self.selection_criterion == "last":
                raise ConfigError("accuracy_guard needs a validation split (val_fraction > 0) and a selection other "
                                  "than 'last'")
        elif self.guard_reference is not None:
            raise ConfigError("guard_reference applies with accuracy_guard only; give both or neither")

    @property
    def selection_criterion(self) -> str:
        """The validation criterion in force: ``selection``, or its default for the objective and split."""
        if self.selection is not None:
            return self.selection
        if self.val_fraction == 0:
            return "last"
        return "mse" if self.objective == "mse" else "equitable"

    def _check_update_rule(self) -> None:
        """Build the update rule once so that a bad combination fails here, before anything is written."""
        if not isinstance(self.update, dict):
            raise ConfigError(f"update={self.update!r} is not accepted; accepted: a dict of the update rule's settings")
        if self.objective == "mse" or self.estimator == "auto":
            if self.update:
                what = "objective='mse'" if self.objective == "mse" else "estimator='auto'"
                raise ConfigError(f"update settings {sorted(self.update)} do not apply with {what}; "
                                  "accepted: an explicit estimator whose rule has these settings (e.g. eq_ppo)")
            return
        try:
            make_update_rule(self.estimator, **self.rule_kwargs)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def rule_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`trainers.updates.make_update_rule` for this run."""
        return dict(q=self.q, form=self.form, beta=self.beta, num_samples=self.num_samples, baseline=self.baseline,
                    credit=self.credit, **self.update)

    def _validate_population(self) -> None:
        pop = self.population
        if isinstance(pop, Population):
            raise ConfigError("population=<Population> is not accepted (a built population cannot be recorded in "
                              "config.json); accepted: a preset name, a population spec dict, or "
                              "eq_envs.population_file.load_population_file(path)")
        if isinstance(pop, dict):
            try:
                self.population = normalize_spec(pop)
            except DataError as exc:
                raise ConfigError(f"population spec: {exc}") from None
            defaults = {f.name: f.default for f in fields(self)}
            for name in ("region", "preset", "layout"):
                if name == "layout" and self.layout == self.population["layout"]:
                    continue  # the spec's own layout (a run's config.json records both)
                if getattr(self, name) != defaults[name]:
                    raise ConfigError(f"{name}={getattr(self, name)!r} does not apply to a population spec; "
                                      f"accepted: set it in the spec ({'signal.region' if name == 'region' else name})")
            return
        if pop not in POPULATIONS:
            raise ConfigError(f"population={pop!r} is not accepted; accepted: {', '.join(POPULATIONS)}, or a "
                              "population spec (--population-file)")

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a dict; accepts ``q_plus_1`` as an alias of ``q + 1``."""
        data = dict(data)
        if "q_plus_1" in data and "q" in data:
            raise ConfigError(f"{source}: give q or q_plus_1, not both")
        known = {f.name for f in fields(cls)} | {"q_plus_1"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except ConfigError as exc:
            if "q_plus_1" in str(exc):
                raise ConfigError(f"{source}: {exc}") from None
            raise

    @classmethod
    def from_json(cls, path: str | Path, *, written_by_run: bool = False) -> TrainConfig:
        """Read a JSON file of settings; ``written_by_run``: a run's own ``config.json``, where a setting
        missing because the run predates it takes the value the run had (:data:`ADDED_SETTINGS`)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; accepted: a JSON file of TrainConfig settings")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {p}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") \
                from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p}: top level must be an object of settings")
        if written_by_run:
            data = {**ADDED_SETTINGS, **data}
        return cls.from_dict(data, source=f"config file {p}")
