"""The paper's agent populations on the bundled real data.

``build_population(name, split=..., preset=..., region=...)`` returns a
:class:`eq_envs.population.Population`.  Names (see :data:`POPULATIONS`):

* ``dc-{similar,different}-{same,different}-lambda`` -- 50 data centers (Sec. 5.1):
  "similar" workloads are the Azure 2019 hourly trace cut into 50 contiguous
  agents as the authors' code does; "different" are the paper's released
  agents (20 of the 50 with added noise).  Same lambda = 2; different lambda =
  2, 4, ..., 100.  Signal: carbon intensity, horizon 1, split 67/33.
* ``ev-{similar,different}`` -- 70 EVs (Sec. 5.2): energy needs and rates from
  ACN-Data sessions (filtered 3-12 h as the paper does), or the paper's released
  "different" needs with the similar agents' rates.  Signal: carbon + water +
  price (gamma = eta = 1), horizon 12, split 70/30.
* ``phone`` -- 18 phones (App. A.4), ``k = round(demand / 2)``, carbon, horizon 12.
* ``mixed`` -- data centers (lambda = 2, mean of the 12 predicted steps), EVs and
  phones on one carbon forecaster (App. A.4, Table 3), regret weights 10 / 1 / 0.2
  as the released code.

Beyond the paper, populations whose agents want different predictions from one
shared public input (``docs/tradeoffs.md``), from the NREL EVI-Pro home
charging events on real NHTS 2017 travel days (``eq_envs/data/ev_windows``):

* ``ev-home-windows`` -- one EV agent per vehicle kind (BEV, PHEV) and plug-in
  window in whole slots (2..12 of the 12-slot horizon): agents differ in how
  many of the coming hours they can use;
* ``ev-home-slots`` -- EVs plugged in for the whole 12-slot window, one agent per
  kind and number of slots needed (1..11): agents differ in how many of the
  cheapest hours they buy;
* ``phone-home-windows`` -- the 18 phones of ``phone`` (``k`` = 2..6 slots), each
  on its charger as long as one 18th of the home events sorted by plug-in
  window: different windows and different needs.

Both EV populations use the EV study's signal and 70 / 30 split; events that
must charge in every available slot (no decision to make) are left out and
counted in ``Population.notes``.

Layouts (``layout=``, :mod:`eq_envs.population`): ``"shared"`` (default, the
paper's) puts every agent at the same hour, one public input serving
everybody, each agent cycling through its own context sequence
(:class:`agents.context.ContextTable`); ``"chunked"`` (a variant, not the
paper's) gives each agent its own equal stretch of the split.  Splits
(``split=``, ``protocol=``, ``val_fraction=``, ``split_seed=``,
:mod:`eq_envs.splits`): ``"train"``, ``"val"`` and ``"test"``, in time order
(default) or by the paper's random per-agent partition.

Presets: ``"paper"`` min-max scales every signal component to [0, 10] (the
paper's preprocessing); ``"physical"`` keeps physical units (kg CO2/kWh,
L/kWh, $/kWh).  Agent contexts (workloads, kWh needs) are the same in both.
"""
from __future__ import annotations

import copy
from functools import lru_cache

import numpy as np
import pandas as pd

from agents.data_center import DataCenterAgent
from agents.ev_charging import EVChargingAgent, slots_needed
from agents.phone_charging import PhoneChargingAgent
from eq_envs.datasets import ev as ev_data
from eq_envs.datasets import official, signals, workloads
from eq_envs.datasets.grid import REGIONS
from eq_envs.population import DEFAULT_LAYOUT, LAYOUTS, LOOKBACK, Population, wasserstein_ranges
from eq_envs.splits import VAL_FRACTION, check_split_settings, signal_positions, split_contexts

POPULATIONS: dict[str, str] = {
    "dc-similar-same-lambda": "50 data centers, Azure workload chunks, lambda = 2",
    "dc-similar-different-lambda": "50 data centers, Azure workload chunks, lambda = 2..100",
    "dc-different-same-lambda": "50 data centers, paper's 'different' workloads, lambda = 2",
    "dc-different-different-lambda": "50 data centers, paper's 'different' workloads, lambda = 2..100",
    "ev-similar": "70 EVs, ACN-Data needs and rates",
    "ev-different": "70 EVs, paper's 'different' needs, ACN-Data rates",
    "phone": "18 phones, k = round(demand / 2) slots",
    "mixed": "data centers + EVs + phones on one carbon forecaster (weights 10 / 1 / 0.2)",
    "ev-home-windows": "EVs by plug-in window (2..12 slots), NREL EVI-Pro home events on NHTS 2017 days",
    "ev-home-slots": "EVs with the whole 12-slot window by slots needed (1..11), NREL EVI-Pro home events",
    "phone-home-windows": "18 phones (k = 2..6) with home plug-in windows of 18 bands of the home events",
}
#: Beyond the paper: agents that want different predictions from one shared input (docs/tradeoffs.md).
TRADEOFF_POPULATIONS = ("ev-home-windows", "ev-home-slots", "phone-home-windows")
PAPER_POPULATIONS = tuple(n for n in POPULATIONS if n not in TRADEOFF_POPULATIONS)
PRESETS = ("paper", "physical")
NUM_DC_AGENTS, NUM_EV_AGENTS = 50, 70
#: Regret weights of the mixed population's groups (data center, EV, phone), as the released code.
MIXED_WEIGHTS = (10.0, 1.0, 0.2)


def check_choice(value: str, accepted, what: str) -> str:
    """Raise a clear ``ValueError`` unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")
    return value


@lru_cache(maxsize=32)
def _signal(name: str, region: str, preset: str, gamma: float, eta: float) -> np.ndarray:
    s = signals.signal_series(name, region=region, preset=preset, gamma=gamma, eta=eta)
    s = np.asarray(s, dtype=np.float64)
    s.setflags(write=False)
    return s


def dc_workloads(kind: str, split: str) -> list[np.ndarray]:
    """Workload sequences of the 50 data centers ("similar" or "different") in the paper's ``split`` part
    (``"train"`` or ``"test"``; :func:`build_population` cuts validation from the train part)."""
    if kind == "similar":
        return [np.asarray(a, dtype=np.float64) for a in workloads.dc_similar_agents(split)]
    return [np.asarray(a, dtype=np.float64) for a in official.load_official_agents("dc", split)]


def dc_lambdas(kind: str, num_agents: int = NUM_DC_AGENTS) -> np.ndarray:
    """``lambda = 2`` for every agent ("same") or ``2, 4, ..., 2M`` ("different")."""
    return np.full(num_agents, 2.0) if kind == "same" else 2.0 * np.arange(1, num_agents + 1)


def ev_needs_rates(kind: str, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Energy needs (kWh) and charging rates (kWh per hourly slot) of the 70 EVs in the paper's ``split`` part."""
    rates = [np.asarray(r, dtype=np.float64) for r in ev_data.ev_similar_agent_rates(split)]
    if kind == "similar":
        needs = [np.asarray(a, dtype=np.float64) for a in ev_data.ev_similar_agents(split)]
    else:
        needs = [np.asarray(a, dtype=np.float64) for a in official.load_official_agents("ev", split)]
        # The released "different" needs carry no rates: agent m keeps the similar
        # agent m's session rates, cycled to the length of its needs.
        rates = [np.resize(r, len(n)) for r, n in zip(rates, needs)]
    return needs, rates


def build_population(name: str, split: str = "train", preset: str = "paper", region: str = "CISO",
                     gamma: float = 1.0, eta: float = 1.0, layout: str = DEFAULT_LAYOUT, protocol: str = "time",
                     val_fraction: float = VAL_FRACTION, split_seed: int = 0) -> Population:
    """Build one of :data:`POPULATIONS` for ``split`` on ``region``'s grid data.

    Args:
        split: ``"train"``, ``"val"`` (the last ``val_fraction`` of the training
            data, time-ordered under ``protocol="time"``) or ``"test"``.
        layout: ``"shared"`` (default, the paper's: one public input per hour for
            every agent) or ``"chunked"`` (a variant: each agent its own equal
            stretch of the split); see :mod:`eq_envs.population`.
        protocol: ``"time"`` (default: held-out hours after the training hours)
            or ``"random"`` (the paper's App. A.3.1 random partition, seeded by
            ``split_seed``) or ``"blocked"`` (the time split's test hours,
            validation blocks spread over the training hours); see :mod:`eq_envs.splits`.
        val_fraction: share of the training data held out as the ``"val"``
            split (0: none; the training split is then the paper's whole train part).
    """
    check_choice(layout, LAYOUTS, "layout")
    try:
        check_split_settings(split, protocol, val_fraction)
    except ValueError as exc:
        raise ValueError(f"population {name}: {exc}") from None
    pop = copy.copy(_build(name, split, preset, region, float(gamma), float(eta), protocol, float(val_fraction),
                           int(split_seed)))  # the cache keeps its own
    if layout != pop.layout:
        pop.layout = layout
        pop.__post_init__()
    return pop


def _positions(n_rows: int, train_fraction: float, horizon: int, split: str, protocol: str, val_fraction: float,
               seed: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Prediction rows of ``split`` and the ``[start, stop)`` rows their windows lie in."""
    rows = signal_positions(n_rows, train_fraction, LOOKBACK, horizon, split, protocol, val_fraction, seed)
    if len(rows) == 0:
        raise ValueError(f"split {split!r} has no position with a full input window and horizon "
                         f"(val_fraction {val_fraction})")
    return rows, (int(rows[0]) - LOOKBACK, int(rows[-1]) + horizon)


def _dc_group(kind: str, lam_kind: str, horizon: int, reduce: str, split: str, protocol: str, val_fraction: float,
              seed: int) -> DataCenterAgent:
    w = split_contexts([[a] for a in dc_workloads(kind, "train")], [[a] for a in dc_workloads(kind, "test")],
                       split, protocol, val_fraction, seed)
    return DataCenterAgent([c[0] for c in w], lam=dc_lambdas(lam_kind, len(w)), horizon=horizon, reduce=reduce)


def _ev_group(kind: str, split: str, protocol: str, val_fraction: float, seed: int) -> EVChargingAgent:
    parts = {p: ev_needs_rates(kind, p) for p in ("train", "test")}
    c = split_contexts([list(x) for x in zip(*parts["train"])], [list(x) for x in zip(*parts["test"])],
                       split, protocol, val_fraction, seed)
    return EVChargingAgent([x[0] for x in c], [x[1] for x in c], horizon=12)


def home_event_agents(by: str) -> tuple[list[str], list[pd.DataFrame], dict[str, int]]:
    """Home charging events (NREL EVI-Pro on NHTS 2017, BEV and PHEV files) grouped into agents.

    ``by="window"``: one agent per vehicle kind and plug-in window in whole
    slots ``a = min(12, floor(window_h))``; ``by="slots"``: among events with
    the whole 12-slot window, one agent per kind and slots needed ``k =
    ceil(energy / power)``.  Events that must charge in every available slot
    (``k >= a``: no decision, regret 0 whatever the forecast) are left out and
    counted, and so (``by="slots"``) are events with a shorter window.  Each
    agent's events stay in file order (its context sequence).
    """
    names, groups, dropped = [], [], {}
    for kind in ev_data.HOME_WINDOW_KINDS:
        d = ev_data.load_home_windows(kind)
        a = np.clip(np.floor(d["window_h"].to_numpy()), 1, 12).astype(int)
        k = slots_needed(d["energy_kwh"].to_numpy(), d["avg_power_kw"].to_numpy(), 12).astype(int)
        keep = k < a
        dropped[f"{kind}: must charge in every available slot"] = int((~keep).sum())
        if by == "slots":
            dropped[f"{kind}: window under 12 slots"] = int((keep & (a < 12)).sum())
            keep &= a == 12
        key = a if by == "window" else k
        for v in sorted(set(key[keep])):
            sel = keep & (key == v)
            if sel.sum() >= 2:
                names.append(f"{kind}_{by}{v}")
                groups.append(d[sel].reset_index(drop=True))
    return names, groups, dropped


def _train_test_parts(sequences: list[list[np.ndarray]], train_fraction: float):
    """Cut each agent's aligned sequences into a train part (first ``floor(f n)``) and a test part."""
    cut = [int(np.floor(len(seqs[0]) * train_fraction)) for seqs in sequences]
    return [[a[:n] for a in seqs] for seqs, n in zip(sequences, cut)], \
        [[a[n:] for a in seqs] for seqs, n in zip(sequences, cut)]


def _home_ev_group(by: str, split: str, protocol: str, val_fraction: float, seed: int) -> tuple[EVChargingAgent, str]:
    """EV agents of :func:`home_event_agents` (train part: the first 70 % of each agent's events, as the EV study)."""
    names, events, dropped = home_event_agents(by)
    seqs = [[e[col].to_numpy(np.float64) for col in ("energy_kwh", "avg_power_kw", "window_h")] for e in events]
    c = split_contexts(*_train_test_parts(seqs, signals.EV_TRAIN_FRACTION), split, protocol, val_fraction, seed)
    group = EVChargingAgent([x[0] for x in c], [x[1] for x in c], horizon=12, windows=[x[2] for x in c],
                            names=[f"ev_{n}" for n in names])
    note = "home events left out: " + "; ".join(f"{k} {v}" for k, v in dropped.items())
    return group, note


def phone_home_windows(num_phones: int) -> list[np.ndarray]:
    """Plug-in windows (hours) of ``num_phones`` quantile bands of the home events (BEV and PHEV pooled).

    Events sorted by window and cut into equal bands, band ``o`` in file order:
    phone ``o`` is at home (on its charger) as long as the people of band ``o``.
    """
    w = pd.concat([ev_data.load_home_windows(k)["window_h"] for k in ev_data.HOME_WINDOW_KINDS], ignore_index=True)
    order = np.argsort(w.to_numpy(), kind="stable")
    return [w.to_numpy()[np.sort(band)] for band in np.array_split(order, num_phones)]


@lru_cache(maxsize=64)
def _build(name: str, split: str, preset: str, region: str, gamma: float, eta: float, protocol: str,
           val_fraction: float, seed: int) -> Population:
    check_choice(name, POPULATIONS, "population")
    check_choice(preset, PRESETS, "preset")
    check_choice(region, REGIONS, "region")
    units = "scaled to [0, 10] per component" if preset == "paper" else "physical"
    split_kw = {"split": split, "protocol": protocol, "val_fraction": val_fraction, "seed": seed}

    def population(sig: np.ndarray, fraction: float, groups: list, horizon: int, signal_name: str,
                   weights: list[float] | None = None, notes: list[str] | None = None) -> Population:
        rows, bounds = _positions(len(sig), fraction, horizon, split, protocol, val_fraction, seed)
        return Population(name, sig, split, bounds, groups, horizon=horizon, weights=list(weights or []),
                          positions=rows, protocol=protocol, signal_name=signal_name, units=units,
                          notes=list(notes or []))

    carbon = _signal("carbon", region, preset, 1.0, 1.0)
    dc_frac = signals.DC_TRAIN_FRACTION
    if name.startswith("dc-"):
        _, wkind, lkind, _ = name.split("-")
        return population(carbon, dc_frac, [_dc_group(wkind, lkind, 1, "mean", **split_kw)], 1, "carbon")

    combined = _signal("combined", region, preset, gamma, eta)
    combined_name = f"combined (gamma={gamma}, eta={eta})"
    if name in ("ev-similar", "ev-different"):
        return population(combined, signals.EV_TRAIN_FRACTION, [_ev_group(name.split("-")[1], **split_kw)], 12,
                          combined_name)
    if name in ("ev-home-windows", "ev-home-slots"):
        group, note = _home_ev_group("window" if name == "ev-home-windows" else "slots", **split_kw)
        return population(combined, signals.EV_TRAIN_FRACTION, [group], 12, combined_name, notes=[note])

    demands = ev_data.phone_demands()
    if name == "phone":
        return population(carbon, dc_frac, [PhoneChargingAgent(demands, horizon=12)], 12, "carbon")
    if name == "phone-home-windows":
        parts = _train_test_parts([[w] for w in phone_home_windows(len(demands))], dc_frac)
        windows = [c[0] for c in split_contexts(*parts, **split_kw)]
        return population(carbon, dc_frac, [PhoneChargingAgent(demands, horizon=12, windows=windows)], 12, "carbon")
    # mixed
    groups = [_dc_group("similar", "same", 12, "mean", **split_kw), _ev_group("similar", **split_kw),
              PhoneChargingAgent(demands, horizon=12)]
    return population(carbon, dc_frac, groups, 12, "carbon", weights=list(MIXED_WEIGHTS))


def wasserstein_report(name: str, split: str = "train") -> dict[str, tuple[float, float]]:
    """Pairwise 1-Wasserstein range of each group's agent contexts in the paper's ``split`` part (Sec. 5)."""
    check_choice(name, POPULATIONS, "population")
    return wasserstein_ranges(_build(name, split, "paper", "CISO", 1.0, 1.0, "time", 0.0, 0))
