"""Real data bundled with eq_envs, and loaders that validate what they read.

Modules: :mod:`.grid` (EIA-930 fuel mix, carbon and off-site water intensity),
:mod:`.weather` (EPW weather, wet-bulb, on-site WUE), :mod:`.prices`
(CAISO/ERCOT prices and year alignment), :mod:`.signals` (hourly grid signals,
combined signal, paper scaling and splits), :mod:`.workloads` (Azure trace and
data-centre agents), :mod:`.ev` (ACN sessions, EV agents, home windows, phones),
:mod:`.official` (the paper's released agent populations). Sources and
licences: ``eq_envs/data/DATA.md``.

Every loader raises :class:`DataError` for bad input and records whatever it
drops, fills or rewrites in the ``eq_envs.data`` logger and in the result's
``attrs["report"]``.
"""

from .errors import DataError
from .ev import (
    EV_PAPER_N_SESSIONS,
    EV_UNNOISED_AGENTS,
    PHONE_CHARGE_PER_HOUR,
    ev_similar_agent_rates,
    ev_similar_agents,
    load_acn_sessions,
    load_home_windows,
    phone_demands,
    phone_hours_needed,
)
from .grid import (
    AVG_CI_FACTORS_G_PER_KWH,
    CARBON_FACTORS,
    FUELS,
    REGIONS,
    WATER_FACTORS_L_PER_KWH,
    carbon_intensity,
    compare_with_avg_ci,
    load_fuel_mix,
    offsite_water_intensity,
)
from .official import load_official_agents
from .prices import (
    DEFAULT_PRICE_SOURCE,
    PRICE_SOURCES,
    load_caiso_bayshore,
    load_caiso_da_2020,
    load_ercot_dam_2022,
    price_for_grid_year,
)
from .signals import (
    DC_TRAIN_FRACTION,
    EV_TRAIN_FRACTION,
    PAPER_PRICE_BAND,
    combined_signal,
    grid_signals,
    minmax_scale,
    signal_series,
    time_split,
)
from .validation import DATA_DIR
from .weather import (
    REGION_WEATHER,
    load_epw,
    onsite_wue,
    onsite_wue_utc,
    wet_bulb_stull,
)
from .workloads import (
    DC_UNNOISED_AGENTS,
    azure_paper_split,
    dc_similar_agents,
    load_azure_hourly,
)

__all__ = [
    "AVG_CI_FACTORS_G_PER_KWH",
    "CARBON_FACTORS",
    "DATA_DIR",
    "DC_TRAIN_FRACTION",
    "DC_UNNOISED_AGENTS",
    "DEFAULT_PRICE_SOURCE",
    "EV_PAPER_N_SESSIONS",
    "EV_TRAIN_FRACTION",
    "EV_UNNOISED_AGENTS",
    "FUELS",
    "PAPER_PRICE_BAND",
    "PHONE_CHARGE_PER_HOUR",
    "PRICE_SOURCES",
    "REGIONS",
    "REGION_WEATHER",
    "WATER_FACTORS_L_PER_KWH",
    "DataError",
    "azure_paper_split",
    "carbon_intensity",
    "combined_signal",
    "compare_with_avg_ci",
    "dc_similar_agents",
    "ev_similar_agent_rates",
    "ev_similar_agents",
    "grid_signals",
    "load_acn_sessions",
    "load_azure_hourly",
    "load_caiso_bayshore",
    "load_caiso_da_2020",
    "load_epw",
    "load_ercot_dam_2022",
    "load_fuel_mix",
    "load_home_windows",
    "load_official_agents",
    "minmax_scale",
    "offsite_water_intensity",
    "onsite_wue",
    "onsite_wue_utc",
    "phone_demands",
    "phone_hours_needed",
    "price_for_grid_year",
    "signal_series",
    "time_split",
    "wet_bulb_stull",
]
