"""EIA-930 hourly fuel mix (2022) and the carbon / off-site water intensity of the grid.

Bundled files: ``eq_envs/data/grid/eia_fuelmix_2022_<BA>.csv.gz`` (from repo
HewlettPackard/dc-rl, MIT; EIA-930 data), columns ``timestamp`` (UTC, hour
start) ``WND SUN WAT OIL NG COL NUC OTH`` (MWh in the hour) and ``avg_CI``
(dc-rl's own average carbon intensity in gCO2/kWh).

Carbon factors
--------------
:data:`CARBON_FACTORS` are the paper's (Gao et al. 2012) kg CO2 per kWh by fuel.
The ``avg_CI`` column of the dc-rl files uses a *different* factor set. A least
squares fit of ``avg_CI·Σgen = Σ gen_f·x_f`` over all hours recovers it exactly
(max residual < 1e-9 g/kWh, same set for all six regions; fuels a region does not
use come out 0):

    WND 11, SUN 41, WAT 24, NUC 12, NG 490, COL 820, OTH 230, OIL 650  (g/kWh)

These are the IPCC AR5 (WGIII 2014, Annex III) life-cycle medians for wind,
(rooftop) solar PV, hydro, nuclear, gas combined cycle, coal and biomass, plus
650 g/kWh for oil (a common default, e.g. in electricityMaps); kept here as
:data:`AVG_CI_FACTORS_G_PER_KWH`. The two sets differ mostly for solar and
wind (Gao: 20 and 23 g/kWh, i.e. half / double), gas (440 vs 490), coal (968 vs 820)
and other (450 vs 230), so the series differ by region-dependent ratios but are
highly correlated.

Measured with :func:`compare_with_avg_ci` on the hours where the file has data
(ours / avg_CI, both in kg/kWh):

======  ==========  =============  ===========  ===============
region  mean ratio  ratio range    correlation  max |diff| kg
======  ==========  =============  ===========  ===============
CISO    0.903       0.797–1.090    0.9964       0.0446
ERCO    1.028       0.960–1.144    0.9950       0.0372
PJM     1.038       0.972–1.159    0.9823       0.0499
BPAT    0.887       0.583–1.178    0.9947       0.0100
NYIS    0.968       0.905–1.227    0.9320       0.0609
MISO    1.088       1.049–1.140    0.9935       0.0612
======  ==========  =============  ===========  ===============

For CISO our series is ~10 % lower on average: CISO's gas share dominates and
gas is 440 vs 490 g/kWh; at midday its large solar share pushes the ratio up
(41 vs 20 g/kWh for solar counts against dc-rl there), hence the 0.80–1.09 range.

Missing data and negative values
--------------------------------
Hours in which every fuel is missing (CISO 3, PJM 23 (22 of them in a row on
2022-03-13/14), MISO 3 with only OIL present as 0, the other regions none) and
single missing fuel cells are filled by time interpolation (``limit_direction="both"``);
counts and timestamps are logged and kept in ``attrs["report"]``; the filled
timestamps are in ``attrs["filled_hours"]``. ``avg_CI`` is interpolated over the
same hours, but :func:`compare_with_avg_ci` only uses hours the file reports.
None of the six bundled files contains negative generation. EIA-930 can report
small negative *net* generation (storage, plant own use in "other"); by default
(``negative="error"``) a negative cell is a DataError, because in this project's
gross-generation format it more likely means a wrong column or file. Pass
``negative="zero"`` to set negatives to 0 instead, which records the count per fuel.
"""

from __future__ import annotations

from os import PathLike

import numpy as np
import pandas as pd

from .errors import DataError
from .validation import (
    DATA_DIR,
    Report,
    check_strictly_increasing,
    check_year,
    numeric_column,
    parse_timestamps,
    read_csv_text,
    require_columns,
    resolve_path,
)

__all__ = [
    "AVG_CI_FACTORS_G_PER_KWH",
    "CARBON_FACTORS",
    "FUELS",
    "REGIONS",
    "WATER_FACTORS_GAL_PER_MWH",
    "WATER_FACTORS_L_PER_KWH",
    "carbon_intensity",
    "compare_with_avg_ci",
    "fuel_mix_file",
    "load_fuel_mix",
    "offsite_water_intensity",
]

#: Balancing authorities with a bundled 2022 fuel mix.
REGIONS: dict[str, str] = {
    "CISO": "California ISO (the paper's region)",
    "ERCO": "Electric Reliability Council of Texas",
    "PJM": "PJM Interconnection (Mid-Atlantic / Midwest)",
    "BPAT": "Bonneville Power Administration (Pacific Northwest)",
    "NYIS": "New York ISO",
    "MISO": "Midcontinent ISO",
}

#: Fuel columns, in file order.
FUELS: tuple[str, ...] = ("WND", "SUN", "WAT", "OIL", "NG", "COL", "NUC", "OTH")

#: kg CO2 per kWh generated, by fuel (Gao et al. 2012, as used in the paper).
CARBON_FACTORS: dict[str, float] = {
    "COL": 0.968,
    "NG": 0.44,
    "NUC": 0.015,
    "OIL": 0.89,
    "OTH": 0.45,
    "SUN": 0.02,
    "WAT": 0.014,
    "WND": 0.023,
}

#: Off-site energy water intensity factor (EWIF), US gallons per MWh (DESIGN.md §3).
WATER_FACTORS_GAL_PER_MWH: dict[str, float] = {
    "NG": 300.0,
    "COL": 450.0,
    "NUC": 600.0,
    "OIL": 350.0,
    "OTH": 475.0,
    "SUN": 0.0,
    "WAT": 0.0,
    "WND": 0.0,
}

#: EWIF in litres per kWh: gal/MWh × 3.785 L/gal / 1000 kWh/MWh.
WATER_FACTORS_L_PER_KWH: dict[str, float] = {
    f: v * 3.785 / 1000.0 for f, v in WATER_FACTORS_GAL_PER_MWH.items()
}

#: The factor set (g CO2/kWh) that reproduces dc-rl's ``avg_CI`` column exactly (least squares).
AVG_CI_FACTORS_G_PER_KWH: dict[str, float] = {
    "WND": 11.0,
    "SUN": 41.0,
    "WAT": 24.0,
    "OIL": 650.0,
    "NG": 490.0,
    "COL": 820.0,
    "NUC": 12.0,
    "OTH": 230.0,
}


def fuel_mix_file(region: str):
    """Bundled fuel-mix file of a region; DataError listing the accepted regions."""
    if region not in REGIONS:
        raise DataError(f"unknown region {region!r}", field="region", accepted=sorted(REGIONS))
    return DATA_DIR / "grid" / f"eia_fuelmix_2022_{region}.csv.gz"


def load_fuel_mix(
    region: str = "CISO",
    path: str | PathLike[str] | None = None,
    *,
    negative: str = "error",
) -> pd.DataFrame:
    """Hourly generation by fuel (MWh) and ``avg_CI`` (gCO2/kWh, dc-rl's), UTC index.

    Parameters
    ----------
    region
        Balancing authority code (see :data:`REGIONS`); used to pick the bundled
        file when ``path`` is None, and as a label otherwise.
    path
        Your own file in the same format (``.csv`` or ``.csv.gz``): a ``timestamp``
        column (UTC or with an offset; naive values are read as UTC) and the eight
        fuel columns; ``avg_CI`` is optional (NaN when absent). A first column whose
        header cell is empty (what ``DataFrame.to_csv`` writes for an unnamed index)
        is taken as the timestamp.
    negative
        ``"error"`` (default): a negative generation value is a DataError.
        ``"zero"``: negatives are set to 0 and counted per fuel in the report.

    Returns a DataFrame indexed by tz-aware UTC hourly timestamps with columns
    ``WND SUN WAT OIL NG COL NUC OTH avg_CI`` (float64). Duplicated or out-of-order
    timestamps are a DataError; missing hours (gaps in the timestamps) are
    inserted and, like missing cells, filled by time interpolation and recorded.
    A file whose name states a year (``eia_fuelmix_2022_CISO.csv``) must cover
    exactly that UTC year (a wrong year or a file cut short is a DataError).
    ``attrs``: ``report`` (list of str), ``region``, ``file``,
    ``all_fuels_missing_hours`` (int), ``filled_cells`` (dict fuel -> count),
    ``filled_hours`` (list of ISO timestamps with any filled value).
    """
    if negative not in ("error", "zero"):
        raise DataError(f"unknown negative={negative!r}", field="negative", accepted=["error", "zero"])
    bundled = fuel_mix_file(region) if path is None else None
    p = resolve_path(path, bundled, what="fuel-mix file")
    rep = Report(p.name)
    df = read_csv_text(p)
    if "timestamp" not in df.columns and len(df.columns) and df.columns[0] in ("", "Unnamed: 0"):
        # a CSV written with an unnamed index column (pandas' DataFrame.to_csv): that column is the timestamp
        df = df.rename(columns={df.columns[0]: "timestamp"})
        rep.info("first header cell is empty; its column is read as the timestamp")
    require_columns(df, ("timestamp", *FUELS), p)

    ts = parse_timestamps(df, "timestamp", p, utc=True)
    check_strictly_increasing(ts, p, "timestamp")
    check_year(ts, p, "timestamp")
    idx = pd.DatetimeIndex(ts).floor("us")
    off_hour = (idx != idx.floor("h"))
    if off_hour.any():
        i = int(np.argmax(off_hour))
        raise DataError(
            f"timestamp {idx[i]} is not on the hour", file=p, row=i + 1, field="timestamp",
            accepted="hourly timestamps (hour start, UTC)",
        )

    cols: dict[str, np.ndarray] = {}
    for f in FUELS:
        vals, _ = numeric_column(df, f, p, allow_missing=True, allow_negative=True)
        neg = vals < 0
        if neg.any():
            if negative == "error":
                i = int(np.argmax(neg))
                raise DataError(
                    f"negative generation {vals[i]!r} MWh", file=p, row=i + 1, field=f,
                    accepted="values >= 0 (or load_fuel_mix(..., negative='zero'))",
                )
            rep.warning(f"{int(neg.sum())} negative {f} values set to 0 (negative='zero')")
            vals = np.where(neg, 0.0, vals)
        cols[f] = vals
    if "avg_CI" in df.columns:
        ci, _ = numeric_column(df, "avg_CI", p, allow_missing=True, allow_negative=False)
    else:
        ci = np.full(len(df), np.nan)
        rep.info("no avg_CI column; avg_CI is NaN")
    cols["avg_CI"] = ci
    out = pd.DataFrame(cols, index=idx)
    out.index.name = "timestamp"

    # gaps in the hourly sequence
    full = pd.date_range(idx[0], idx[-1], freq="h")
    inserted = ~full.isin(idx)
    if len(full) != len(idx):
        n_gap = len(full) - len(idx)
        out = out.reindex(full)
        out.index.name = "timestamp"
        rep.warning(f"{n_gap} hours absent from the file were inserted and filled by time interpolation")

    fuel = out[list(FUELS)]
    empty = [f for f in FUELS if fuel[f].isna().all()]
    if empty:
        raise DataError(f"column(s) {', '.join(empty)} have no values", file=p, field=empty[0],
                        accepted="at least one value per fuel column (0 for an unused fuel)")
    # hours inserted for gaps are reported above; count the file's own empty hours here
    in_file = ~inserted
    all_missing = fuel.isna().all(axis=1) & in_file
    any_missing = fuel.isna().any(axis=1)
    n_all = int(all_missing.sum())
    filled_cells = {f: int(fuel[f].isna().sum()) for f in FUELS}
    if n_all:
        when = ", ".join(t.strftime("%Y-%m-%d %H:%M") for t in out.index[all_missing][:5])
        more = "" if n_all <= 5 else f" and {n_all - 5} more"
        rep.warning(
            f"{n_all} hours with every fuel missing ({when}{more} UTC) filled by time interpolation"
        )
    partial = any_missing & ~fuel.isna().all(axis=1)
    if partial.any():
        per = {f: int(fuel.loc[partial, f].isna().sum()) for f in FUELS}
        per = {f: n for f, n in per.items() if n}
        rep.warning(
            f"{int(partial.sum())} hours with some fuels missing; cells filled by time interpolation: {per}"
        )
    if any_missing.all():
        raise DataError("every hour has missing fuel values", file=p, accepted="at least one complete hour")
    filled_mask = any_missing.to_numpy().copy()
    if "avg_CI" in df.columns:
        filled_mask |= out["avg_CI"].isna().to_numpy()
    filled_hours = out.index[filled_mask]
    if any_missing.any():
        out[list(FUELS)] = fuel.interpolate(method="time", limit_direction="both")
    ci_missing = out["avg_CI"].isna()
    if "avg_CI" in df.columns and ci_missing.any() and not ci_missing.all():
        rep.info(f"{int(ci_missing.sum())} missing avg_CI values filled by time interpolation")
        out["avg_CI"] = out["avg_CI"].interpolate(method="time", limit_direction="both")

    total = out[list(FUELS)].sum(axis=1).to_numpy()
    if (total <= 0).any():
        i = int(np.argmax(total <= 0))
        raise DataError(
            f"total generation is zero at {out.index[i]}", file=p, row=i + 1, field="timestamp",
            accepted="hours with positive total generation",
        )

    out.attrs["region"] = str(region)
    out.attrs["file"] = str(p)
    out.attrs["all_fuels_missing_hours"] = n_all
    out.attrs["filled_cells"] = filled_cells
    out.attrs["filled_hours"] = [t.isoformat() for t in filled_hours]
    return rep.attach(out)


def _check_fuels(fuel_mix: pd.DataFrame) -> pd.DataFrame:
    missing = [f for f in FUELS if f not in fuel_mix.columns]
    if missing:
        raise DataError(f"fuel mix lacks column(s) {', '.join(missing)}", accepted="columns " + ", ".join(FUELS))
    return fuel_mix[list(FUELS)].astype(np.float64)


def _weighted(fuel_mix: pd.DataFrame, factors: dict[str, float], name: str) -> pd.Series:
    gen = _check_fuels(fuel_mix)
    if gen.isna().any().any() or (gen.to_numpy() < 0).any():
        raise DataError("fuel mix has NaN or negative generation; load it with load_fuel_mix()")
    total = gen.sum(axis=1)
    if (total <= 0).any():
        raise DataError("fuel mix has hours with zero total generation")
    w = np.array([factors[f] for f in FUELS])
    s = pd.Series(gen.to_numpy() @ w / total.to_numpy(), index=fuel_mix.index, name=name)
    s.attrs["report"] = list(fuel_mix.attrs.get("report", []))
    return s


def carbon_intensity(fuel_mix: pd.DataFrame, factors: dict[str, float] | None = None) -> pd.Series:
    """Average carbon intensity in kg CO2/kWh: Σ gen_f·factor_f / Σ gen_f.

    ``factors`` defaults to :data:`CARBON_FACTORS` (Gao et al. 2012, kg/kWh).
    """
    return _weighted(fuel_mix, factors or CARBON_FACTORS, "carbon")


def offsite_water_intensity(fuel_mix: pd.DataFrame) -> pd.Series:
    """Off-site (generation) water intensity in L/kWh: Σ gen_f·EWIF_f / Σ gen_f."""
    return _weighted(fuel_mix, WATER_FACTORS_L_PER_KWH, "water_offsite")


def compare_with_avg_ci(region: str = "CISO", path: str | PathLike[str] | None = None) -> dict:
    """Compare :func:`carbon_intensity` with the file's ``avg_CI`` (g/kWh → kg/kWh).

    Uses only hours where the file reports data (filled hours are excluded).
    Returns ``n_hours``, ``mean_ratio`` (mean of ours/avg_CI), ``ratio_min``,
    ``ratio_max``, ``correlation`` (Pearson), ``max_abs_diff`` and
    ``mean_abs_diff`` (kg/kWh), and ``lsq_factors_g_per_kwh`` /
    ``lsq_max_abs_residual`` (the factor set that reproduces avg_CI, see module doc).
    """
    fm = load_fuel_mix(region, path)
    filled = pd.DatetimeIndex(pd.to_datetime(fm.attrs.get("filled_hours", []), utc=True))
    keep = ~fm.index.isin(filled) & fm["avg_CI"].notna().to_numpy()
    fm_k = fm.loc[keep]
    if len(fm_k) < 2:
        raise DataError("fewer than 2 hours with avg_CI to compare", file=fm.attrs.get("file"), field="avg_CI")
    ours = carbon_intensity(fm_k).to_numpy()
    ref = fm_k["avg_CI"].to_numpy() / 1000.0
    ratio = ours / ref
    gen = fm_k[list(FUELS)].to_numpy()
    total = gen.sum(axis=1)
    x, *_ = np.linalg.lstsq(gen, fm_k["avg_CI"].to_numpy() * total, rcond=None)
    resid = gen @ x / total - fm_k["avg_CI"].to_numpy()
    return {
        "region": region,
        "n_hours": len(fm_k),
        "mean_ratio": float(ratio.mean()),
        "ratio_min": float(ratio.min()),
        "ratio_max": float(ratio.max()),
        "correlation": float(np.corrcoef(ours, ref)[0, 1]),
        "max_abs_diff": float(np.abs(ours - ref).max()),
        "mean_abs_diff": float(np.abs(ours - ref).mean()),
        "lsq_factors_g_per_kwh": {f: float(round(v, 6)) + 0.0 for f, v in zip(FUELS, x)},
        "lsq_max_abs_residual": float(np.abs(resid).max()),
    }
