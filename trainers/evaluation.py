"""Held-out evaluation: per-agent regret of the deterministic public model, equity table.

Protocol (``per-step``): at every clock position of the split the public model
predicts from the last 12 values with its deterministic counterpart (the mean
of its distribution), every agent decides on that prediction, and its regret
is averaged over the split.  The authors' released code instead reduces all
test predictions to one averaged forecast before scoring
(``protocol="mean-forecast"`` reproduces that for comparison).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eq_envs.population import Population
from trainers.metrics import METRIC_COLUMNS, equity_metrics
from trainers.networks import PublicModel

PROTOCOLS = ("per-step", "mean-forecast")


@torch.no_grad()
def predict(model: PublicModel, pop: Population, batch_size: int = 2048) -> torch.Tensor:
    """Deterministic predictions at every clock position: ``[N, H]`` (shared) or ``[M, N, H]`` (chunked)."""
    model.eval()
    out = []
    for s in range(0, pop.num_steps, batch_size):
        idx = torch.arange(s, min(s + batch_size, pop.num_steps))
        out.append(model.mean(pop.observation(idx)).double())
    return torch.cat(out, dim=-2)


@torch.no_grad()
def agent_regrets(model: PublicModel, pop: Population, protocol: str = "per-step") -> tuple[np.ndarray, float]:
    """Per-agent mean regret ``[M]`` over the split and the prediction MSE.

    Every agent is scored once at each clock position (in the chunked layout:
    each position of its own stretch).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}; accepted: {PROTOCOLS}")
    pred = predict(model, pop)
    idx = torch.arange(pop.num_steps)
    truth = pop.truth(idx)
    if pred.dim() == 2:
        pred = pred.unsqueeze(0)
    mse = float(((pred - truth) ** 2).mean())
    if protocol == "mean-forecast":  # one averaged forecast per agent (the chunked layout: over its own stretch)
        pred = pred.mean(dim=1, keepdim=True).expand_as(pred)
    total = torch.zeros(pop.num_agents, dtype=torch.float64)
    for s in range(0, pop.num_steps, 1024):
        sl = slice(s, min(s + 1024, pop.num_steps))
        total += pop.regret(pred[:, sl], idx[sl]).sum(dim=1)
    return (total / pop.num_steps).numpy(), mse


def evaluate(models: Mapping[str, PublicModel], pop: Population, *, protocol: str = "per-step",
             csv_path: str | Path | None = None, agents_csv_path: str | Path | None = None) -> pd.DataFrame:
    """Equity table (one row per model) on ``pop``; optionally written as CSV.

    Columns: ``model`` and :data:`trainers.metrics.METRIC_COLUMNS`.  With
    ``agents_csv_path`` the per-agent regrets are written too (one column per model).
    """
    rows, per_agent = [], {}
    for name, model in models.items():
        regrets, mse = agent_regrets(model, pop, protocol)
        per_agent[name] = regrets
        rows.append({"model": name, **equity_metrics(regrets, pop.agent_names, mse)})
    table = pd.DataFrame(rows, columns=["model", *METRIC_COLUMNS])
    if csv_path is not None:
        table.to_csv(csv_path, index=False)
    if agents_csv_path is not None:
        pd.DataFrame(per_agent, index=pd.Index(pop.agent_names, name="agent")).to_csv(agents_csv_path)
    return table
