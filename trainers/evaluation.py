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

    In the chunked layout agent ``m`` is scored on its own ``N_m`` steps.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}; accepted: {PROTOCOLS}")
    pred = predict(model, pop)
    idx = torch.arange(pop.num_steps)
    truth = pop.truth(idx)
    if pred.dim() == 2:
        pred = pred.unsqueeze(0)
    # each agent counts its own steps once (chunked agents shorter than the clock wrap around)
    steps = torch.full((pop.num_agents,), pop.num_steps, dtype=torch.long)
    if pop.layout == "chunked":
        steps = torch.tensor(pop.chunk_lengths, dtype=torch.long)
    valid = idx.unsqueeze(0) < steps.unsqueeze(1)  # [M, N]
    if pred.shape[0] == 1:
        mse = float(((pred[0] - truth) ** 2).mean())
    else:
        mse = float((((pred - truth) ** 2).mean(-1) * valid).sum() / valid.sum())
    if protocol == "mean-forecast":
        n = valid.sum(1).clamp_min(1).view(-1, 1, 1) if pred.shape[0] > 1 else pop.num_steps
        w = valid.unsqueeze(-1) if pred.shape[0] > 1 else 1.0
        pred = ((pred * w).sum(dim=1, keepdim=True) / n).expand_as(pred)
    total = torch.zeros(pop.num_agents, dtype=torch.float64)
    for s in range(0, pop.num_steps, 1024):
        sl = slice(s, min(s + 1024, pop.num_steps))
        total += (pop.regret(pred[:, sl], idx[sl]) * valid[:, sl]).sum(dim=1)
    return (total / steps).numpy(), mse


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
