"""Hourly grid signals (carbon, water, price), the combined signal and the paper's scaling/splits.

``grid_signals`` puts three physical series on the fuel mix's UTC hours (2022 for
the bundled data):

* ``carbon`` — kg CO2/kWh, :func:`~eq_envs.datasets.grid.carbon_intensity` (Gao et al. 2012 factors);
* ``water`` — L/kWh of IT energy: ``onsite_wue + pue · offsite_EWIF``. The
  on-site cooling-tower water is per kWh of server energy; the off-site
  (generation) water is per kWh drawn from the grid, which is ``pue`` kWh per
  IT kWh — the accounting of Li et al. (2023), "Making AI less thirsty". With
  the default ``pue=1.0`` the two are simply added, as the released code does;
* ``price`` — $/kWh, aligned by (month, day, hour) UTC (see :mod:`.prices`).

``combined_signal`` forms ``E = E^C + γ·E^W + η·E^P`` (paper Eq. 13). Preset
``"paper"`` first min–max scales each component to [0, 10] (as the paper does),
so E lies in [0, 10·(1+γ+η)]. Preset ``"physical"`` adds the raw series; their
units differ (kg/kWh, L/kWh, $/kWh), so γ and η then act as conversion weights
(e.g. γ in kg-CO2-equivalent per litre, η in kg per $).

Paper price band: the paper keeps only prices with 10 < p < 100 $/MWh. Dropping
rows breaks the hourly alignment, so :func:`signal_series` with
``preset="paper"`` instead *clips* prices to [0.010, 0.100] $/kWh
(:data:`PAPER_PRICE_BAND`) before scaling; the number of clipped hours is
recorded. Without the band the few price spikes (up to ~1 $/kWh) squash the
scaled price near 0.
"""

from __future__ import annotations

import copy
import functools
import math
from os import PathLike

import numpy as np
import pandas as pd

from .errors import DataError
from .grid import REGIONS, carbon_intensity, load_fuel_mix, offsite_water_intensity
from .prices import DEFAULT_PRICE_SOURCE, PRICE_SOURCES, price_for_grid_year
from .validation import (
    Report,
    check_strictly_increasing,
    numeric_column,
    parse_timestamps,
    read_csv_text,
    require_columns,
    resolve_path,
)
from .weather import epw_file, onsite_wue_at

__all__ = [
    "DC_TRAIN_FRACTION",
    "EV_TRAIN_FRACTION",
    "PAPER_PRICE_BAND",
    "PRESETS",
    "SIGNAL_NAMES",
    "combined_signal",
    "grid_signals",
    "load_signal_csv",
    "minmax_scale",
    "signal_series",
    "time_split",
]

#: Train fraction of the data-centre study (App. A.3.1: 67 % / 33 %).
DC_TRAIN_FRACTION = 0.67
#: Train fraction of the EV study (App. A.3.1: 70 % / 30 %).
EV_TRAIN_FRACTION = 0.70
#: Price band ($/kWh) the paper keeps (10 < p < 100 $/MWh); used as a clip in the paper preset.
PAPER_PRICE_BAND = (0.010, 0.100)
SIGNAL_NAMES = ("carbon", "water", "price", "combined")
PRESETS = ("paper", "physical")


def _default_price(region: str, rep: Report) -> tuple[str, int | None]:
    if region in DEFAULT_PRICE_SOURCE:
        return DEFAULT_PRICE_SOURCE[region]
    src = DEFAULT_PRICE_SOURCE["CISO"]
    rep.warning(f"no bundled price for region {region}; using {src[0]} {src[1]} (CAISO) as a stand-in")
    return src


def grid_signals(
    region: str = "CISO",
    *,
    fuel_mix_path: str | PathLike[str] | None = None,
    epw_path: str | PathLike[str] | None = None,
    price_source: str | None = None,
    price_path: str | PathLike[str] | None = None,
    price_source_year: int | None = None,
    price_band: tuple[float, float] | None = None,
    pue: float = 1.0,
) -> pd.DataFrame:
    """Hourly ``carbon`` (kg/kWh), ``water`` (L/kWh), ``price`` ($/kWh) on the fuel mix's UTC index.

    ``region`` picks the bundled fuel mix, weather file and default price
    (:data:`~eq_envs.datasets.prices.DEFAULT_PRICE_SOURCE`; regions without a
    bundled price use the CISO default, with a warning in the report). Paths
    override the bundled files; ``price_source`` is a key of
    :data:`~eq_envs.datasets.prices.PRICE_SOURCES`. ``price_band=(lo, hi)`` in
    $/kWh clips prices (recorded). ``water = onsite_wue + pue·offsite`` (module doc).
    ``attrs["report"]`` merges the reports of every component. Results built only
    from bundled files are cached per argument set (a fresh copy is returned each
    call; the log lines are emitted on the first call only).
    """
    if not (isinstance(pue, (int, float)) and math.isfinite(pue) and pue >= 1.0):
        raise DataError(f"pue={pue!r}", field="pue", accepted="a finite number >= 1")
    band = None
    if price_band is not None:
        try:
            if len(price_band) != 2:
                raise TypeError
            band = (float(price_band[0]), float(price_band[1]))
        except (TypeError, ValueError) as e:
            raise DataError(f"price_band={price_band!r}", field="price_band",
                            accepted="(lo, hi) with lo < hi, $/kWh") from e
        if not band[0] < band[1]:
            raise DataError(f"price_band={price_band!r}", field="price_band", accepted="(lo, hi) with lo < hi, $/kWh")
    if fuel_mix_path is None and epw_path is None and price_path is None:
        # bundled inputs only: cache the (immutable) result, hand out copies
        cached = _bundled_signals(region, price_source, price_source_year, band, pue)
        out = cached.copy()
        out.attrs = copy.deepcopy(cached.attrs)
        return out
    return _grid_signals(region, fuel_mix_path, epw_path, price_source, price_path,
                         price_source_year, band, pue)


@functools.lru_cache(maxsize=32)
def _bundled_signals(region, price_source, price_source_year, price_band, pue) -> pd.DataFrame:
    return _grid_signals(region, None, None, price_source, None, price_source_year, price_band, pue)


def _grid_signals(region, fuel_mix_path, epw_path, price_source, price_path, price_source_year,
                  price_band, pue) -> pd.DataFrame:
    if fuel_mix_path is None and region not in REGIONS:
        raise DataError(f"unknown region {region!r}", field="region", accepted=sorted(REGIONS))
    rep = Report(f"grid_signals[{region}]")
    fm = load_fuel_mix(region, fuel_mix_path)
    rep.extend(fm.attrs["report"])
    carbon = carbon_intensity(fm)
    off = offsite_water_intensity(fm)
    wue_region = region if region in REGIONS else "CISO"
    if epw_path is None and region not in REGIONS:
        rep.warning(f"no bundled weather for region {region}; using CISO's")
    onsite = onsite_wue_at(fm.index, wue_region, epw_path)
    rep.extend(onsite.attrs["report"])
    if price_source is None:
        price_source, default_year = _default_price(region, rep) if price_path is None else ("caiso_bayshore_hasp", None)
        if price_source_year is None:
            price_source_year = default_year
    elif price_source not in PRICE_SOURCES:
        raise DataError(f"unknown price source {price_source!r}", field="price_source", accepted=sorted(PRICE_SOURCES))
    price = price_for_grid_year(price_source, price_source_year, path=price_path, target_index=fm.index)
    rep.extend(price.attrs["report"])
    price_v = price.to_numpy()
    if price_band is not None:
        lo, hi = price_band
        n_lo, n_hi = int((price_v < lo).sum()), int((price_v > hi).sum())
        price_v = np.clip(price_v, lo, hi)
        rep.info(f"price clipped to [{lo}, {hi}] $/kWh: {n_lo} hours raised, {n_hi} hours lowered")
    out = pd.DataFrame(
        {
            "carbon": carbon.to_numpy(),
            "water": onsite.to_numpy() + pue * off.to_numpy(),
            "price": price_v,
        },
        index=fm.index,
    )
    # name the file at fault: carbon and off-site water come from the fuel mix, on-site water from the weather
    for part, values, file in (("carbon", carbon.to_numpy(), fm.attrs.get("file")),
                               ("off-site water", off.to_numpy(), fm.attrs.get("file")),
                               ("on-site water", onsite.to_numpy(), epw_path or epw_file(wue_region)),
                               ("price", price_v, price.attrs.get("file"))):
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(f"{part} signal is not finite at {out.index[int(np.argmax(bad))]} after alignment",
                            file=file, accepted="finite values")
    out.attrs.update({"region": region, "pue": pue, "price_source": price_source,
                      "price_source_year": price.attrs.get("source_year"),
                      "units": {"carbon": "kg/kWh", "water": "L/kWh", "price": "$/kWh"}})
    return rep.attach(out)


def minmax_scale(x, lo: float = 0.0, hi: float = 10.0):
    """Min–max scale to ``[lo, hi]``; returns ``(scaled, (min, max))`` of the input.

    Series in → Series out (attrs kept), otherwise a float64 ndarray. A constant or
    non-finite input is a DataError.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise DataError("cannot min-max scale an empty or non-finite series", accepted="finite values")
    mn, mx = float(arr.min()), float(arr.max())
    if mx == mn:
        raise DataError(f"cannot min-max scale a constant series (value {mn})", accepted="a non-constant series")
    scaled = lo + (arr - mn) / (mx - mn) * (hi - lo)
    if isinstance(x, pd.Series):
        s = pd.Series(scaled, index=x.index, name=x.name)
        s.attrs.update(x.attrs)
        return s, (mn, mx)
    return scaled, (mn, mx)


def combined_signal(
    signals: pd.DataFrame, gamma: float = 1.0, eta: float = 1.0, preset: str = "paper"
) -> pd.Series:
    """``E = E^C + gamma·E^W + eta·E^P`` from a :func:`grid_signals` frame.

    ``preset="paper"``: each column min–max scaled to [0, 10] first (the scale
    ranges are recorded in the report and ``attrs["scale_ranges"]``).
    ``preset="physical"``: raw units combined; gamma/eta are conversion weights.
    """
    if preset not in PRESETS:
        raise DataError(f"unknown preset {preset!r}", field="preset", accepted=PRESETS)
    missing = [c for c in ("carbon", "water", "price") if c not in signals.columns]
    if missing:
        raise DataError(f"signals lack column(s) {', '.join(missing)}", accepted="columns carbon, water, price")
    rep = Report(f"combined[{preset}]")
    rep.extend(signals.attrs.get("report", []))
    comps = {}
    ranges = {}
    for c in ("carbon", "water", "price"):
        if preset == "paper":
            comps[c], ranges[c] = minmax_scale(signals[c].to_numpy())
        else:
            comps[c] = signals[c].to_numpy(dtype=np.float64)
    if preset == "paper":
        rep.info("components min-max scaled to [0, 10] from " + ", ".join(
            f"{c} [{a:.6g}, {b:.6g}]" for c, (a, b) in ranges.items()))
    e = comps["carbon"] + gamma * comps["water"] + eta * comps["price"]
    s = pd.Series(e, index=signals.index, name="combined")
    s.attrs.update({"preset": preset, "gamma": gamma, "eta": eta, "scale_ranges": ranges})
    return rep.attach(s)


def time_split(n: int, train_fraction: float) -> tuple[slice, slice]:
    """Time-ordered split of ``n`` items: ``(slice(0, k), slice(k, n))``, ``k = floor(n·f)``.

    No shuffling. With ``f = 0.7`` and the paper's 8759 EV sessions, k = 6131,
    the size of the official EV train split.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise DataError(f"n={n!r}", field="n", accepted="an integer >= 2")
    if not 0.0 < float(train_fraction) < 1.0:
        raise DataError(f"train_fraction={train_fraction!r}", field="train_fraction", accepted="0 < f < 1")
    k = math.floor(n * float(train_fraction) + 1e-9)
    k = min(max(k, 1), n - 1)
    return slice(0, k), slice(k, int(n))


def signal_series(
    name: str = "carbon",
    region: str = "CISO",
    preset: str = "paper",
    gamma: float = 1.0,
    eta: float = 1.0,
    **paths,
) -> np.ndarray:
    """One hourly signal as a float64 array (8760 values for the bundled 2022 data).

    ``name``: ``"carbon" | "water" | "price" | "combined"``. ``preset="paper"``
    returns the series min–max scaled to [0, 10] (``combined``: each component
    scaled, then combined, so [0, 10·(1+γ+η)]) and clips prices to
    :data:`PAPER_PRICE_BAND` first; ``"physical"`` returns raw units (kg/kWh,
    L/kWh, $/kWh; combined with γ, η as conversion weights). ``**paths`` are
    passed to :func:`grid_signals` (``fuel_mix_path``, ``epw_path``,
    ``price_source``, ``price_path``, ``price_source_year``, ``price_band``, ``pue``).
    """
    if name not in SIGNAL_NAMES:
        raise DataError(f"unknown signal {name!r}", field="name", accepted=SIGNAL_NAMES)
    if preset not in PRESETS:
        raise DataError(f"unknown preset {preset!r}", field="preset", accepted=PRESETS)
    allowed = {"fuel_mix_path", "epw_path", "price_source", "price_path", "price_source_year", "price_band", "pue"}
    unknown = sorted(set(paths) - allowed)
    if unknown:
        raise DataError(f"unknown keyword(s) {', '.join(unknown)}", accepted=sorted(allowed))
    if preset == "paper":
        paths.setdefault("price_band", PAPER_PRICE_BAND)
    sig = grid_signals(region, **paths)
    if name == "combined":
        return combined_signal(sig, gamma, eta, preset).to_numpy(dtype=np.float64)
    v = sig[name].to_numpy(dtype=np.float64)
    if preset == "paper":
        v = minmax_scale(v)[0]
    return np.ascontiguousarray(v, dtype=np.float64)


def load_signal_csv(
    path: str | PathLike[str],
    column: str,
    *,
    timestamp: str | None = None,
    sep: str = ",",
    decimal: str = ".",
) -> pd.Series:
    """Any hourly signal from a plain CSV: one value per row, in time order.

    ``column`` holds the values (finite numbers; a missing cell is a DataError
    naming its row: nothing is filled silently). With ``timestamp`` the rows
    must be strictly increasing hours without gaps (checked; the index is then
    that column), otherwise the rows are taken as consecutive hours.
    ``sep``/``decimal`` read e.g. ``;``-separated files with decimal commas.
    Returns a float64 Series with ``attrs["file"]`` and ``attrs["report"]``.
    """
    p = resolve_path(path, None, what="signal file")
    rep = Report(p.name)
    df = read_csv_text(p, sep=sep)
    require_columns(df, (column,) + ((timestamp,) if timestamp else ()), p)
    if decimal != ".":
        df[column] = df[column].str.replace(decimal, ".", regex=False)
    vals, _ = numeric_column(df, column, p)
    index = pd.RangeIndex(len(vals), name="hour")
    if timestamp:
        ts = parse_timestamps(df, timestamp, p, utc=True)
        check_strictly_increasing(ts, p, timestamp)
        idx = pd.DatetimeIndex(ts)
        off = np.asarray((idx[1:] - idx[:-1]) != pd.Timedelta(hours=1))
        if off.any():
            i = int(np.argmax(off)) + 1
            raise DataError(f"{idx[i]} is not one hour after the previous row", file=p, row=i + 1,
                            field=timestamp, accepted="consecutive hourly timestamps (no gaps)")
        index = pd.DatetimeIndex(ts, name=timestamp)
    if len(vals) < 2:
        raise DataError(f"{len(vals)} rows", file=p, accepted="at least 2 hourly values")
    s = pd.Series(vals, index=index, name=column)
    s.attrs["file"] = str(p)
    rep.info(f"{len(vals)} hourly values of {column!r}")
    return rep.attach(s)
