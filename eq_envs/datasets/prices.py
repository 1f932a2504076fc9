"""Electricity prices and their alignment to the grid year's UTC hours.

Bundled files (``eq_envs/data/prices``, see DATA.md):

* ``caiso_bayshore_hourly_2016_2019.csv.gz`` — CAISO OASIS LMPs at node
  BAYSHOR2_1_N001, 2016-01-01 08:00 UTC .. 2019-05-01 06:00 UTC, $/MWh. The
  file the paper used (it reads ``hasp_price_per_mwh``). 115 hours are absent
  (2016: 37, 2017: 39, 2018: 30, 2019: 9) and negative prices occur.
* ``caiso_da_hourly_2020.csv.gz`` — a CAISO day-ahead price for 2020 (DER-VET),
  in **$/kWh** in the file; node undocumented; hour-ending clock without DST.
* ``ercot_dam_hourly_2022.csv.gz`` — ERCOT day-ahead settlement point prices
  2022, $/MWh, Central prevailing time with DST (CC BY-NC-SA 4.0: non-commercial).

All loaders return a Series in **$/MWh** on a complete hourly UTC index (hour
start); :func:`price_for_grid_year` returns **$/kWh**.

Alignment rule (:func:`price_for_grid_year`)
--------------------------------------------
Each UTC hour of the target year takes the source price of the same
(month, day, hour) in UTC of ``source_year``. Reasons: the fuel-mix year (2022)
and the price years differ; matching by calendar position keeps the seasonal
and daily shape, and every target hour gets exactly one value (8760 in, 8760
out). The authors' released code instead drops prices outside 10-100 $/MWh and
then pairs the remaining rows with the carbon rows *by position*, which shifts
every later hour and breaks the hourly alignment; this is not reproduced.
Details:

* a leap target year's Feb 29 takes the source's Feb 28 (when the source year
  is not leap); a leap source year's Feb 29 is unused for a non-leap target (recorded);
* target hours whose (month, day, hour) the source year lacks at the edges
  (e.g. ERCOT 2022 starts at 2022-01-01 06:00 UTC) take the same
  (month, day, hour) of the next, else the previous, year in the file (recorded);
* UTC matching means that, between the two years' daylight-saving dates, local
  clock hours are one hour apart for a few days (e.g. 2018-03-11 vs 2022-03-13).

Default price source per region (:data:`DEFAULT_PRICE_SOURCE`): CISO uses the
paper's file and column (Bayshore HASP) from 2018, the last calendar year the
file covers completely (2019 stops on Apr 30); ERCO uses ERCOT 2022, the same
year as the fuel mix, hub average ``HB_HUBAVG`` (the whole ERCOT footprint, as the
EIA ERCO balancing authority is). Other regions have no bundled price; the
signals module falls back to the CISO default and records a warning.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

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
    "BAYSHORE_COLUMNS",
    "DEFAULT_PRICE_SOURCE",
    "ERCOT_COLUMNS",
    "PRICE_SOURCES",
    "align_by_calendar",
    "load_caiso_bayshore",
    "load_caiso_da_2020",
    "load_ercot_dam_2022",
    "load_price_source",
    "price_for_grid_year",
]

PRICE_DIR = DATA_DIR / "prices"
BAYSHORE_COLUMNS = ("dam_price_per_mwh", "hasp_price_per_mwh", "rtm_price_per_mwh")
ERCOT_COLUMNS = (
    "HB_BUSAVG", "HB_HOUSTON", "HB_HUBAVG", "HB_NORTH", "HB_PAN", "HB_SOUTH", "HB_WEST",
    "LZ_AEN", "LZ_CPS", "LZ_HOUSTON", "LZ_LCRA", "LZ_NORTH", "LZ_RAYBN", "LZ_SOUTH", "LZ_WEST",
)

#: name -> (description, default source year)
PRICE_SOURCES: dict[str, tuple[str, int]] = {
    "caiso_bayshore_hasp": ("CAISO Bayshore node, hour-ahead (HASP) LMP; the paper's column", 2018),
    "caiso_bayshore_dam": ("CAISO Bayshore node, day-ahead LMP", 2018),
    "caiso_bayshore_rtm": ("CAISO Bayshore node, real-time LMP (hourly mean)", 2018),
    "caiso_da_2020": ("CAISO day-ahead price 2020 (DER-VET; node undocumented)", 2020),
    "ercot_dam_2022": ("ERCOT day-ahead settlement point price 2022 (default hub HB_HUBAVG)", 2022),
}

#: region -> (price source, source year)
DEFAULT_PRICE_SOURCE: dict[str, tuple[str, int]] = {
    "CISO": ("caiso_bayshore_hasp", 2018),
    "ERCO": ("ercot_dam_2022", 2022),
}


def _fill_gaps(s: pd.Series, rep: Report, what: str) -> pd.Series:
    """Reindex to the full hourly range; interpolate absent hours and NaN cells."""
    full = pd.date_range(s.index[0], s.index[-1], freq="h")
    absent = len(full) - len(s)
    nan_cells = int(s.isna().sum())
    out = s.reindex(full)
    miss = out.isna()
    out.attrs["missing_hours"] = int(miss.sum())
    out.attrs["filled_hours"] = [t.isoformat() for t in out.index[miss]]
    if miss.any():
        by_year = pd.Series(out.index[miss].year).value_counts().sort_index().to_dict()
        rep.warning(
            f"{int(miss.sum())} missing hours of {what} ({absent} absent rows, {nan_cells} empty cells; "
            f"per UTC year {by_year}) filled by time interpolation"
        )
        out = out.interpolate(method="time", limit_direction="both")
    out.index.name = "timestamp"
    return out


def _note_negative(s: pd.Series, rep: Report, what: str) -> None:
    n = int((s < 0).sum())
    s.attrs["negative_hours"] = n
    if n:
        rep.info(f"{n} negative {what} prices kept (negative prices are real market outcomes)")


def _price_series(vals: np.ndarray, idx: pd.DatetimeIndex, name: str, p: Path, rep: Report) -> pd.Series:
    """$/MWh series on ``idx``: gaps filled and negatives counted in ``rep``, file recorded."""
    s = _fill_gaps(pd.Series(vals, index=idx, name=name), rep, name)
    _note_negative(s, rep, name)
    s.attrs["unit"] = "$/MWh"
    s.attrs["file"] = str(p)
    return rep.attach(s)


def load_caiso_bayshore(
    path: str | PathLike[str] | None = None, column: str = "hasp_price_per_mwh"
) -> pd.Series:
    """CAISO Bayshore hourly LMP in $/MWh on a full hourly UTC index (hour start).

    ``column`` is one of :data:`BAYSHORE_COLUMNS` (any numeric column for a
    user file). Absent hours (115 in the bundled file) and empty cells are
    inserted and filled by time interpolation, counted in ``attrs["missing_hours"]``
    and the report; negative prices are kept and counted (``attrs["negative_hours"]``).
    """
    p = resolve_path(path, PRICE_DIR / "caiso_bayshore_hourly_2016_2019.csv.gz", what="price file")
    if path is None and column not in BAYSHORE_COLUMNS:
        raise DataError(f"unknown column {column!r}", file=p, field="column", accepted=BAYSHORE_COLUMNS)
    rep = Report(p.name)
    df = read_csv_text(p)
    require_columns(df, ("start_datetime", column), p)
    ts = parse_timestamps(df, "start_datetime", p, utc=True)
    check_strictly_increasing(ts, p, "start_datetime")
    check_year(ts, p, "start_datetime")
    idx = pd.DatetimeIndex(ts)
    if (idx != idx.floor("h")).any():
        i = int(np.argmax(idx != idx.floor("h")))
        raise DataError(f"timestamp {idx[i]} is not on the hour", file=p, row=i + 1, field="start_datetime",
                        accepted="hourly UTC timestamps")
    vals, _ = numeric_column(df, column, p, allow_missing=True)
    return _price_series(vals, idx, column, p, rep)


def load_caiso_da_2020(path: str | PathLike[str] | None = None) -> pd.Series:
    """CAISO day-ahead price 2020 in **$/MWh** (the file's ``DA Price ($/kWh)`` × 1000).

    The ``Datetime (he)`` clock is hour ending and has no DST shifts, so it is
    read as Pacific *standard* time (UTC−8): hour ending ``t`` → UTC start
    ``t − 1 h + 8 h``. Gaps are filled by time interpolation and recorded.
    """
    p = resolve_path(path, PRICE_DIR / "caiso_da_hourly_2020.csv.gz", what="price file")
    rep = Report(p.name)
    df = read_csv_text(p)
    tcol, vcol = "Datetime (he)", "DA Price ($/kWh)"
    require_columns(df, (tcol, vcol), p)
    ts = parse_timestamps(df, tcol, p, fmt="%m/%d/%Y %H:%M", accepted="m/d/YYYY H:MM (hour ending)")
    check_strictly_increasing(ts, p, tcol)
    check_year(pd.DatetimeIndex(ts) - pd.Timedelta(hours=1), p, tcol)  # hour starts, in the file's clock
    idx = (pd.DatetimeIndex(ts) - pd.Timedelta(hours=1) + pd.Timedelta(hours=8)).tz_localize("UTC")
    vals, _ = numeric_column(df, vcol, p, allow_missing=True)
    rep.info("converted $/kWh to $/MWh; hour-ending Pacific standard time (UTC-8) shifted to UTC hour start")
    return _price_series(vals * 1000.0, idx, "da_price_per_mwh", p, rep)


def load_ercot_dam_2022(path: str | PathLike[str] | None = None, column: str = "HB_HUBAVG") -> pd.Series:
    """ERCOT day-ahead settlement point price 2022 in $/MWh, UTC hour-start index.

    Default ``column="HB_HUBAVG"``: the average of ERCOT's trading hubs, the
    most system-wide figure in the file (the EIA "ERCO" fuel mix covers all of
    ERCOT); any of :data:`ERCOT_COLUMNS` may be chosen. Rows are
    ``delivery_date`` + ``hour_ending`` (1..24) in US Central prevailing time;
    ``repeated_hour_flag == "Y"`` marks the second (standard-time) copy of the
    repeated hour at the end of DST. The DST-start day has 23 rows.
    """
    p = resolve_path(path, PRICE_DIR / "ercot_dam_hourly_2022.csv.gz", what="price file")
    if path is None and column not in ERCOT_COLUMNS:
        raise DataError(f"unknown column {column!r}", file=p, field="column", accepted=ERCOT_COLUMNS)
    rep = Report(p.name)
    df = read_csv_text(p)
    require_columns(df, ("delivery_date", "hour_ending", "repeated_hour_flag", column), p)
    day = parse_timestamps(df, "delivery_date", p, fmt="%Y-%m-%d", accepted="YYYY-MM-DD")
    he, _ = numeric_column(df, "hour_ending", p)
    bad = (he < 1) | (he > 24) | (he != np.round(he))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"hour_ending {he[i]}", file=p, row=i + 1, field="hour_ending", accepted="integers 1..24")
    flag = df["repeated_hour_flag"].str.strip().str.upper()
    badf = ~flag.isin(["Y", "N"])
    if badf.any():
        i = int(np.argmax(badf.to_numpy()))
        raise DataError(f"flag {flag.iloc[i]!r}", file=p, row=i + 1, field="repeated_hour_flag", accepted=["Y", "N"])
    local = pd.DatetimeIndex(day) + pd.to_timedelta(he - 1, unit="h")
    check_year(local, p, "delivery_date")
    try:
        idx = local.tz_localize("America/Chicago", ambiguous=(flag == "N").to_numpy(), nonexistent="raise")
    except Exception as e:  # pytz/zoneinfo raise several types for nonexistent times
        raise DataError(f"local times cannot be placed in US Central time ({e})", file=p,
                        field="delivery_date/hour_ending", accepted="ERCOT hour-ending rows with DST flags") from e
    idx = idx.tz_convert("UTC")
    check_strictly_increasing(idx, p, "delivery_date/hour_ending")
    vals, _ = numeric_column(df, column, p, allow_missing=True)
    return _price_series(vals, idx, column, p, rep)


def load_price_source(source: str, path: str | PathLike[str] | None = None, column: str | None = None) -> pd.Series:
    """Load a named price source (see :data:`PRICE_SOURCES`) in $/MWh, UTC index."""
    if source not in PRICE_SOURCES:
        raise DataError(f"unknown price source {source!r}", field="source", accepted=sorted(PRICE_SOURCES))
    if source.startswith("caiso_bayshore_"):
        return load_caiso_bayshore(path, column or f"{source.rsplit('_', 1)[1]}_price_per_mwh")
    if source == "caiso_da_2020":
        return load_caiso_da_2020(path)
    return load_ercot_dam_2022(path, column or "HB_HUBAVG")


def align_by_calendar(
    series: pd.Series, source_year: int, target_index: pd.DatetimeIndex, *, name: str = "price"
) -> pd.Series:
    """Values of ``series`` (UTC index) for ``target_index`` by (month, day, hour) UTC of ``source_year``.

    See the module docstring for the rule. DataError if ``source_year`` covers
    less than 99 % of its hours in ``series`` or a target hour cannot be matched.
    """
    rep = Report(f"align[{name}: {source_year} -> target]")
    rep.extend(series.attrs.get("report", []))
    src = series.copy()
    src.index = pd.DatetimeIndex(src.index).tz_convert("UTC")
    years = src.index.year
    n_year = 366 * 24 if pd.Timestamp(f"{source_year}-01-01").is_leap_year else 365 * 24
    have = int((years == source_year).sum())
    if have < 0.99 * n_year:
        counts = pd.Series(years).value_counts()
        ok = [int(y) for y in sorted(counts.index)
              if counts[y] >= 0.99 * (8784 if pd.Timestamp(f"{y}-01-01").is_leap_year else 8760)]
        raise DataError(
            f"source year {source_year} covers {have} of its {n_year} hours", field="source_year",
            file=series.attrs.get("file"), accepted=ok or "none: the source has no nearly complete year",
        )
    keyed = pd.Series(src.to_numpy(), index=pd.MultiIndex.from_arrays(
        [years, src.index.month, src.index.day, src.index.hour]))
    tgt = pd.DatetimeIndex(target_index).tz_convert("UTC")
    m, d, h = tgt.month.to_numpy(), tgt.day.to_numpy().copy(), tgt.hour.to_numpy()
    src_leap = pd.Timestamp(f"{source_year}-01-01").is_leap_year
    feb29 = (m == 2) & (d == 29)
    if feb29.any() and not src_leap:
        d[feb29] = 28
        rep.info(f"{int(feb29.sum())} target Feb-29 hours take the source's Feb 28 values")
    tgt_has_feb29 = feb29.any()
    if src_leap and not tgt_has_feb29:
        rep.info(f"the {source_year} Feb-29 hours are not used (target year has no Feb 29)")
    vals = keyed.reindex(pd.MultiIndex.from_arrays([np.full(len(tgt), source_year), m, d, h])).to_numpy().copy()
    for other in (source_year + 1, source_year - 1):
        miss = np.isnan(vals)
        if not miss.any():
            break
        alt = keyed.reindex(pd.MultiIndex.from_arrays([np.full(int(miss.sum()), other), m[miss], d[miss], h[miss]]))
        alt = alt.to_numpy()
        got = ~np.isnan(alt)
        if got.any():
            idx_m = np.flatnonzero(miss)[got]
            vals[idx_m] = alt[got]
            rep.info(f"{int(got.sum())} target hours absent from {source_year} (edge of the file) take "
                     f"the same (month, day, hour) of {other}")
    if np.isnan(vals).any():
        i = int(np.argmax(np.isnan(vals)))
        raise DataError(f"no source value for target hour {tgt[i]} in {source_year} or adjacent years",
                        field="source_year", file=series.attrs.get("file"))
    filled = pd.DatetimeIndex(pd.to_datetime(series.attrs.get("filled_hours", []), utc=True))
    used_src = pd.DatetimeIndex(
        pd.to_datetime(
            {"year": np.full(len(tgt), source_year), "month": m, "day": d, "hour": h}, errors="coerce"
        )
    ).tz_localize("UTC")
    n_filled = int(used_src.isin(filled).sum())
    rep.info(f"{len(tgt)} target hours aligned to {source_year} by (month, day, hour) UTC; "
             f"{n_filled} of them use interpolated source hours; {int((vals < 0).sum())} are negative")
    out = pd.Series(vals, index=target_index, name=name)
    out.attrs.update({k: v for k, v in series.attrs.items() if k != "report"})
    return rep.attach(out)


def price_for_grid_year(
    source: str = "caiso_bayshore_hasp",
    source_year: int | None = None,
    target_year: int = 2022,
    *,
    path: str | PathLike[str] | None = None,
    column: str | None = None,
    target_index: pd.DatetimeIndex | None = None,
) -> pd.Series:
    """Price in **$/kWh** on every UTC hour of ``target_year`` (or ``target_index``).

    ``source`` is a key of :data:`PRICE_SOURCES`; ``source_year`` defaults to
    that source's default year (2018 for the Bayshore columns). Alignment by
    (month, day, hour) UTC as in the module docstring. ``attrs``: ``report``,
    ``source``, ``source_year``, ``unit``.
    """
    if source not in PRICE_SOURCES:
        raise DataError(f"unknown price source {source!r}", field="source", accepted=sorted(PRICE_SOURCES))
    year = PRICE_SOURCES[source][1] if source_year is None else int(source_year)
    mwh = load_price_source(source, path, column)
    if target_index is None:
        target_index = pd.date_range(f"{int(target_year)}-01-01", f"{int(target_year) + 1}-01-01",
                                     freq="h", tz="UTC", inclusive="left")
    aligned = align_by_calendar(mwh, year, target_index, name="price")
    out = pd.Series(aligned.to_numpy() / 1000.0, index=aligned.index, name="price")
    out.attrs.update(aligned.attrs)
    out.attrs["report"] = list(aligned.attrs.get("report", []))
    out.attrs.update({"source": source, "source_year": year, "unit": "$/kWh"})
    return out
