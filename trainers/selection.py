"""Validation during training: per-epoch metrics on the validation stretch, best-epoch selection, early stopping.

The validation split (:mod:`eq_envs.splits`: the last ``val_fraction`` of the
training data, never the test split) is scored after every epoch with the
held-out protocol (:func:`trainers.evaluation.agent_regrets`: the deterministic
prediction at every clock position, regrets averaged per agent).  A
*criterion* (lower is better) picks the epoch whose model becomes ``model.pt``:

* ``"equitable"`` (default for Equitable PMs): the norm-form Equitable Objective
  ``(Σ_m w_m^(q+1) C̄_m^(q+1))^(1/(q+1))`` of the (group-weighted) per-agent
  validation regrets at the run's ``q`` -- the quantity the run optimises, on the
  same scale whatever ``form`` it trains with;
* ``"worst"``, ``"variance"``, ``"mean"``: those equity metrics of the raw
  per-agent validation regrets;
* ``"mse"`` (default for the Plain PM): the validation MSE;
* ``"last"``: no selection, the last epoch's model.

An optional *accuracy guard* admits an epoch only if its validation MSE (or
mean regret, for agents that only rank predictions) is within ``accuracy_guard``
(a fraction: 0.05 = 5 %) of a reference model's -- typically the Plain PM's
``model.pt`` -- on the same validation split.  ``patience`` stops training after
that many validations without an admissible improvement.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from eq_envs.population import Population
from trainers.evaluation import agent_regrets
from trainers.metrics import equity_metrics
from trainers.objectives import equitable_loss

CRITERIA = ("equitable", "worst", "variance", "mean", "mse", "last")
GUARD_METRICS = ("mse", "mean")
#: Columns a validated epoch adds to ``metrics.csv``.
VAL_FIELDS = ("val_eq_norm", "val_variance", "val_mean", "val_worst", "val_mse", "val_admissible", "selected_epoch")


def validation_metrics(model: Any, pop: Population, q: float) -> dict[str, float]:
    """Held-out-protocol metrics of ``model`` on ``pop`` (the validation split) with ``val_`` names."""
    regrets, mse = agent_regrets(model, pop)
    m = equity_metrics(regrets, pop.agent_names, mse)
    weighted = torch.as_tensor(regrets, dtype=torch.float64) * pop.agent_weights
    return {"val_eq_norm": float(equitable_loss(weighted.clamp_min(0), q, form="norm")),
            "val_variance": float(m["variance"]), "val_mean": float(m["mean"]), "val_worst": float(m["worst"]),
            "val_mse": float(mse)}


def criterion_value(metrics: dict[str, float], criterion: str) -> float:
    key = {"equitable": "val_eq_norm", "worst": "val_worst", "variance": "val_variance", "mean": "val_mean",
           "mse": "val_mse"}[criterion]
    return metrics[key]


@dataclass
class Selector:
    """Tracks the best admissible epoch (state saved in checkpoints so resume stays exact).

    Args:
        criterion: one of :data:`CRITERIA`.
        patience: stop after this many validations without an admissible improvement (``None``: never).
        guard_limit: the largest admissible value of ``guard_metric`` (``None``: no guard).
        guard_metric: ``"mse"`` or ``"mean"``.
    """

    criterion: str
    patience: int | None = None
    guard_limit: float | None = None
    guard_metric: str = "mse"
    best_value: float = math.inf
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    since_best: int = 0

    def admissible(self, metrics: dict[str, float]) -> bool:
        if self.guard_limit is None:
            return True
        return metrics[f"val_{self.guard_metric}"] <= self.guard_limit

    def update(self, epoch: int, metrics: dict[str, float], model: torch.nn.Module) -> bool:
        """Record a validated epoch; True if it is the new best (its weights are kept)."""
        ok = self.admissible(metrics)
        value = math.inf if self.criterion == "last" else criterion_value(metrics, self.criterion)
        better = ok and (self.criterion == "last" or value < self.best_value)
        if better:
            self.best_value, self.best_epoch = value, epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.since_best = 0
        else:
            self.since_best += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": -1 if self.best_epoch is None else self.best_epoch,
                "best_state": self.best_state or {}, "since_best": self.since_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = float(state["best_value"])
        self.best_epoch = None if int(state["best_epoch"]) < 0 else int(state["best_epoch"])
        self.best_state = copy.copy(state["best_state"]) or None
        self.since_best = int(state["since_best"])
