"""Phone green-charging agent (paper App. A.4).

Phone ``o`` needs ``k`` one-hour slots of charging in a 12-slot window and
minimises carbon ``sum_t mu x_t E^C_t`` with a binary schedule: the same
structure as the EV agent on a carbon-only signal (see
:mod:`agents.slot_scheduling`).  The authors' released code lists 18 charging
demands with a charging efficiency of 2 per hour, ``k = round(demand / 2)``;
in training it redraws ``k`` uniformly from 1..10 without a seed.  Here ``k`` is
an explicit, seeded part of each phone agent: ``k_mode="demand"`` keeps each
phone's own ``k`` (heterogeneous agents), ``k_mode="uniform"`` gives every phone a
seeded sequence of ``k`` drawn from 1..10 (the released code's training draw).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agents.slot_scheduling import SlotSchedulingAgent

#: Charge per hour in the released code ("charging efficiency 2 per hour").
PHONE_CHARGE_PER_HOUR = 2.0
K_MODES = ("demand", "uniform")


def phone_slots(demands: Sequence[float], charge_per_hour: float = PHONE_CHARGE_PER_HOUR,
                horizon: int = 12) -> np.ndarray:
    """``k = round(demand / charge_per_hour)`` clipped to ``1..horizon`` (numpy rounds half to even)."""
    d = np.asarray(demands, dtype=np.float64)
    if not np.isfinite(d).all() or (d <= 0).any():
        i = int(np.flatnonzero(~np.isfinite(d) | (d <= 0))[0])
        raise ValueError(f"phone: demand {i} is {d[i]}; accepted: finite, > 0")
    return np.clip(np.round(d / charge_per_hour), 1, horizon)


class PhoneChargingAgent(SlotSchedulingAgent):
    """``M`` phones, one per charging demand.

    Args:
        demands: one charging demand per phone (released-code units).
        k_mode: ``"demand"`` (fixed ``k`` per phone) or ``"uniform"`` (seeded draws).
        sessions: length of each phone's ``k`` sequence for ``k_mode="uniform"``.
        seed: seed of the ``uniform`` draws (recorded in :meth:`describe`).
        mu: energy per charged hour (cost weight).
        windows: optional per-phone sequences of hours on the charger; slots
            beyond ``floor(window)`` (at least 1, at most ``horizon``) are
            unavailable and ``k`` is capped there (see
            :class:`agents.slot_scheduling.SlotSchedulingAgent`).
    """

    kind = "phone"

    def __init__(self, demands: Sequence[float], k_mode: str = "demand", horizon: int = 12,
                 sessions: int = 256, seed: int = 0, mu: float = PHONE_CHARGE_PER_HOUR,
                 windows: Sequence[Sequence[float]] | None = None, names: list[str] | None = None) -> None:
        if k_mode not in K_MODES:
            raise ValueError(f"phone: k_mode={k_mode!r}; accepted: {K_MODES}")
        base = phone_slots(demands, mu, horizon)
        if k_mode == "demand":
            slots = [[k] for k in base]
        else:
            rng = np.random.default_rng(seed)
            slots = [rng.integers(1, min(10, horizon) + 1, size=sessions).astype(float) for _ in base]
        available = None if windows is None else \
            [np.clip(np.floor(np.asarray(w, dtype=np.float64)), 1, horizon) for w in windows]
        super().__init__(slots, rate=float(mu), horizon=horizon, available=available, names=names)
        self.k_mode, self.seed, self.demands = k_mode, seed, np.asarray(demands, dtype=np.float64)

    def describe(self) -> dict:
        d = super().describe()
        d.update(k_mode=self.k_mode, seed=self.seed)
        return d
