"""Equity metrics over per-agent mean regrets (paper Sec. 5 and Def. 4.1-4.2).

Given per-agent mean regrets ``C_1..C_M`` on the held-out split:

* ``variance`` -- population variance (``ddof = 0``), Def. 4.1 / the tables;
* ``mean`` -- mean regret across agents;
* ``c95_c5`` -- 95th minus 5th percentile (numpy's linear interpolation);
* ``worst`` -- the largest agent regret, and ``worst_agent`` its name;
* ``entropy`` -- normalized-performance entropy of Def. 4.2,
  ``-sum p_m log p_m`` with ``p_m = C_m / sum C``; higher is more equitable,
  at most ``log M`` (``entropy_ratio = entropy / log M`` in [0, 1]);
* ``jain`` -- Jain's index ``(sum C)^2 / (M sum C^2)``, 1 when all are equal;
* ``mse`` -- mean squared error of the deterministic predictions, when given.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_COLUMNS = ("variance", "mean", "c95_c5", "worst", "worst_agent", "entropy", "entropy_ratio", "jain", "mse")


def equity_metrics(agent_regret: Sequence[float] | np.ndarray, names: Sequence[str] | None = None,
                   mse: float | None = None) -> dict[str, float | str]:
    """Equity metrics of per-agent mean regrets (see module docstring)."""
    c = np.asarray(agent_regret, dtype=np.float64).reshape(-1)
    if c.size == 0:
        raise ValueError("equity_metrics: no agents")
    if not np.isfinite(c).all():
        raise ValueError(f"equity_metrics: per-agent regret contains NaN or inf at agents "
                         f"{np.flatnonzero(~np.isfinite(c))[:5].tolist()}")
    if (c < -1e-9).any():
        raise ValueError(f"equity_metrics: negative regret {c.min()} at agent {int(c.argmin())}; regret is >= 0")
    total = c.sum()
    if total > 0:
        p = c / total
        nz = p > 0
        entropy = float(-(p[nz] * np.log(p[nz])).sum())
    else:  # every agent has zero regret: perfectly equal
        entropy = float(np.log(c.size))
    worst = int(np.argmax(c))
    sq = float((c ** 2).sum())
    return {
        "variance": float(c.var()),
        "mean": float(c.mean()),
        "c95_c5": float(np.percentile(c, 95) - np.percentile(c, 5)),
        "worst": float(c[worst]),
        "worst_agent": names[worst] if names is not None else str(worst),
        "entropy": entropy,
        "entropy_ratio": entropy / float(np.log(c.size)) if c.size > 1 else 1.0,
        "jain": float(total ** 2 / (c.size * sq)) if sq > 0 else 1.0,
        "mse": float(mse) if mse is not None else float("nan"),
    }
