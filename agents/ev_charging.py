"""EV charging agent (paper Eq. 13) on its batched top-k fast path.

EV ``m`` in session ``i`` needs energy ``need = D - I`` (kWh) and charges at a
constant rate ``zeta`` (kWh per one-hour slot) over a window of ``T = 12``
slots, so it must charge ``k = min(T, ceil(need / zeta))`` slots.  It chooses the
``k`` slots with the lowest *predicted* signal and pays ``zeta * sum E_t`` under
the *true* signal (see :mod:`agents.slot_scheduling`).  With ``window`` (hours
the car stays plugged in, from the home-arrival data) later slots are
unavailable.  Per-slot power caps make the problem a general MILP:
:class:`agents.pulp_backend.SlotMILPAgent` solves it with PuLP.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from agents.slot_scheduling import SlotSchedulingAgent

#: Tolerance in ``ceil(need / rate)``: 3.0000000001 slots is 3 slots, not 4.
SLOT_TOLERANCE = 1e-9


def slots_needed(need: np.ndarray, rate: np.ndarray, horizon: int) -> np.ndarray:
    """``min(horizon, ceil(need / rate))`` as integers (vectorised)."""
    k = np.ceil(np.asarray(need, dtype=np.float64) / np.asarray(rate, dtype=np.float64) - SLOT_TOLERANCE)
    return np.clip(k, 0, horizon)


class EVChargingAgent(SlotSchedulingAgent):
    """``M`` EVs with per-session energy needs and charging rates.

    Args:
        needs: per-agent sequences of energy needed per session (kWh, >= 0).
        rates: charging rate in kWh per slot: one value, one per agent, or one
            sequence per agent aligned with ``needs`` (> 0).
        horizon: slots in the window (the paper: 12 hourly slots).
        windows: optional per-agent sequences of plugged-in hours; slots beyond
            ``floor(window)`` (at least 1, at most ``horizon``) are unavailable.
    """

    kind = "ev"
    context_name = "need (kWh)"

    def __init__(self, needs: Sequence[Sequence[float]], rates: float | Sequence = 3.3, horizon: int = 12,
                 windows: Sequence[Sequence[float]] | None = None, names: list[str] | None = None) -> None:
        needs_np = [np.asarray(n, dtype=np.float64) for n in needs]
        rate_seqs = _rate_sequences(rates, needs_np)
        for m, (n, r) in enumerate(zip(needs_np, rate_seqs)):
            if not np.isfinite(n).all() or (n < 0).any():
                i = int(np.flatnonzero(~np.isfinite(n) | (n < 0))[0])
                raise ValueError(f"ev: energy need of agent {m} at position {i} is {n[i]}; accepted: finite, >= 0")
            if not np.isfinite(r).all() or (r <= 0).any():
                i = int(np.flatnonzero(~np.isfinite(r) | (r <= 0))[0])
                raise ValueError(f"ev: rate of agent {m} at position {i} is {r[i]}; accepted: finite, > 0")
        slots = [slots_needed(n, r, horizon) for n, r in zip(needs_np, rate_seqs)]
        available = None
        if windows is not None:
            available = [np.clip(np.floor(np.asarray(w, dtype=np.float64)), 1, horizon) for w in windows]
        super().__init__(slots, rate=rate_seqs, horizon=horizon, available=available, names=names)
        self.needs = needs_np

    def context_samples(self) -> list[torch.Tensor]:
        """Energy needs (kWh): the paper's Wasserstein range for EVs is over ``D - I``."""
        return [torch.from_numpy(n.copy()) for n in self.needs]

    def describe(self) -> dict:
        d = super().describe()
        alln = np.concatenate(self.needs)
        d.update(need_kwh_median=float(np.median(alln)), need_kwh_max=float(alln.max()))
        return d


def _rate_sequences(rates: float | Sequence, needs: list[np.ndarray]) -> list[np.ndarray]:
    """Rates aligned with each agent's need sequence."""
    if isinstance(rates, (int, float)):
        return [np.full(len(n), float(rates)) for n in needs]
    rates = list(rates)
    if len(rates) != len(needs):
        raise ValueError(f"ev: {len(rates)} rate entries for {len(needs)} agents; accepted: one value, "
                         "one per agent, or one sequence per agent")
    out = []
    for m, (r, n) in enumerate(zip(rates, needs)):
        r = np.asarray(r, dtype=np.float64).reshape(-1)
        if r.size == 1:
            r = np.full(len(n), float(r[0]))
        if r.size != len(n):
            raise ValueError(f"ev: agent {m} has {r.size} rates for {len(n)} sessions; accepted: equal lengths")
        out.append(r)
    return out

