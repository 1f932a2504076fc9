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

Layouts (``layout=``): ``"chunked"`` (default) pairs each agent with its own
contiguous stretch of time, as the released code does; ``"shared"`` puts every
agent at the same hour (one public input serves everybody), each cycling
through its own context sequence (:class:`agents.context.ContextTable`); see
``docs/agents.md``.

Presets: ``"paper"`` min-max scales every signal component to [0, 10] (the
paper's preprocessing); ``"physical"`` keeps physical units (kg CO2/kWh,
L/kWh, $/kWh).  Agent contexts (workloads, kWh needs) are the same in both.
"""
from __future__ import annotations

import copy
from functools import lru_cache

import numpy as np

from agents.data_center import DataCenterAgent
from agents.ev_charging import EVChargingAgent
from agents.phone_charging import PhoneChargingAgent
from eq_envs.datasets import ev as ev_data
from eq_envs.datasets import official, signals, workloads
from eq_envs.datasets.grid import REGIONS
from eq_envs.population import LAYOUTS, SPLITS, Population, wasserstein_ranges

POPULATIONS: dict[str, str] = {
    "dc-similar-same-lambda": "50 data centers, Azure workload chunks, lambda = 2",
    "dc-similar-different-lambda": "50 data centers, Azure workload chunks, lambda = 2..100",
    "dc-different-same-lambda": "50 data centers, paper's 'different' workloads, lambda = 2",
    "dc-different-different-lambda": "50 data centers, paper's 'different' workloads, lambda = 2..100",
    "ev-similar": "70 EVs, ACN-Data needs and rates",
    "ev-different": "70 EVs, paper's 'different' needs, ACN-Data rates",
    "phone": "18 phones, k = round(demand / 2) slots",
    "mixed": "data centers + EVs + phones on one carbon forecaster (weights 10 / 1 / 0.2)",
}
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


def _split_range(n: int, train_fraction: float, split: str) -> tuple[int, int]:
    train, test = signals.time_split(n, train_fraction)
    sl = train if split == "train" else test
    start, stop, _ = sl.indices(n)
    return start, stop


def dc_workloads(kind: str, split: str) -> list[np.ndarray]:
    """Workload sequences of the 50 data centers ("similar" or "different")."""
    if kind == "similar":
        return [np.asarray(a, dtype=np.float64) for a in workloads.dc_similar_agents(split)]
    return [np.asarray(a, dtype=np.float64) for a in official.load_official_agents("dc", split)]


def dc_lambdas(kind: str, num_agents: int = NUM_DC_AGENTS) -> np.ndarray:
    """``lambda = 2`` for every agent ("same") or ``2, 4, ..., 2M`` ("different")."""
    return np.full(num_agents, 2.0) if kind == "same" else 2.0 * np.arange(1, num_agents + 1)


def ev_needs_rates(kind: str, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Energy needs (kWh) and charging rates (kWh per hourly slot) of the 70 EVs."""
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
                     gamma: float = 1.0, eta: float = 1.0, layout: str = "chunked") -> Population:
    """Build one of :data:`POPULATIONS` for ``split`` on ``region``'s grid data.

    ``layout`` (see :mod:`eq_envs.population`): ``"chunked"`` (default, the
    paper's: each agent owns a contiguous stretch of the split as long as its
    context sequence) or ``"shared"`` (every agent at the same hour).
    """
    check_choice(layout, LAYOUTS, "layout")
    pop = copy.copy(_build(name, split, preset, region, float(gamma), float(eta)))  # the cache keeps its own
    if layout == "chunked":
        pop.layout = "chunked"
        pop.chunk_lengths = chunk_lengths(pop)
        pop.__post_init__()
    return pop


def chunk_lengths(pop: Population) -> list[int]:
    """Stretch of time each agent owns in the chunked layout.

    The length of the agent's context sequence (:meth:`agents.base.AgentGroup.context_lengths`;
    the paper cut workloads and EV needs into per-agent contiguous chunks of time); groups without
    per-agent sequences (phones: one value each) split the usable steps evenly.
    """
    out: list[int] = []
    for g in pop.groups:
        lengths = g.context_lengths()
        if lengths is None or max(lengths) == 1:
            lengths = [max(1, pop.usable_steps // g.num_agents)] * g.num_agents
        out.extend(int(n) for n in lengths)
    return out


@lru_cache(maxsize=64)
def _build(name: str, split: str, preset: str, region: str, gamma: float, eta: float) -> Population:
    check_choice(name, POPULATIONS, "population")
    check_choice(split, SPLITS, "split")
    check_choice(preset, PRESETS, "preset")
    check_choice(region, REGIONS, "region")
    units = "scaled to [0, 10] per component" if preset == "paper" else "physical"
    notes: list[str] = []

    if name.startswith("dc-"):
        _, wkind, lkind, _ = name.split("-")
        sig = _signal("carbon", region, preset, 1.0, 1.0)
        w = dc_workloads(wkind, split)
        groups = [DataCenterAgent(w, lam=dc_lambdas(lkind, len(w)), horizon=1)]
        return Population(name, sig, split, _split_range(len(sig), signals.DC_TRAIN_FRACTION, split), groups,
                          horizon=1, signal_name="carbon", units=units, notes=notes)

    if name.startswith("ev-"):
        sig = _signal("combined", region, preset, gamma, eta)
        needs, rates = ev_needs_rates(name.split("-")[1], split)
        groups = [EVChargingAgent(needs, rates, horizon=12)]
        return Population(name, sig, split, _split_range(len(sig), signals.EV_TRAIN_FRACTION, split), groups,
                          horizon=12, signal_name=f"combined (gamma={gamma}, eta={eta})", units=units, notes=notes)

    sig = _signal("carbon", region, preset, 1.0, 1.0)
    phones = PhoneChargingAgent(ev_data.phone_demands(), horizon=12)
    rng = _split_range(len(sig), signals.DC_TRAIN_FRACTION, split)
    if name == "phone":
        return Population(name, sig, split, rng, [phones], horizon=12, signal_name="carbon", units=units)
    # mixed
    dcs = DataCenterAgent(dc_workloads("similar", split), lam=2.0, horizon=12, reduce="mean")
    needs, rates = ev_needs_rates("similar", split)
    evs = EVChargingAgent(needs, rates, horizon=12)
    return Population(name, sig, split, rng, [dcs, evs, phones], horizon=12, weights=list(MIXED_WEIGHTS),
                      signal_name="carbon", units=units, notes=notes)


def wasserstein_report(name: str, split: str = "train") -> dict[str, tuple[float, float]]:
    """Pairwise 1-Wasserstein range of each group's agent contexts (see the paper, Sec. 5)."""
    check_choice(name, POPULATIONS, "population")
    return wasserstein_ranges(_build(name, split, "paper", "CISO", 1.0, 1.0))
