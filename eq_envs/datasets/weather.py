"""Typical-year EPW weather, wet-bulb temperature and the data centre's on-site WUE.

Bundled files: ``eq_envs/data/weather/*.epw.gz`` (repo HewlettPackard/dc-rl, MIT;
climate.onebuilding.org TMYx / climate-normals files). EPW rows are hourly in
*local standard time* (no daylight saving), *hour ending*: the row with hour
``h`` (1..24) covers ``[h-1, h)`` local standard time. The UTC offset of local
standard time is field 9 of the ``LOCATION`` header line (e.g. -8.0 for San Jose).

On-site water use
-----------------
Wet-bulb temperature from dry-bulb temperature and relative humidity with the
empirical formula of Stull (2011), "Wet-bulb temperature from relative humidity
and air temperature", J. Appl. Meteor. Climatol. 50, 2267-2269. It is fitted for
RH 5-99 % and T -20..50 °C at standard sea-level pressure (error mostly within
±1 °C); values outside that range are still computed and their count is
recorded. On-site water usage effectiveness of an evaporative cooling tower
(DESIGN.md §3, from Li et al. 2023)::

    WUE = w/(w-1) · (6e-5·Tw³ - 0.01·Tw² + 0.61·Tw - 10.4)   [L/kWh], Tw in °F

with ``w = 6`` cycles of concentration, clipped below at 0.05 L/kWh (the cubic
falls below the floor for wet-bulb temperatures under about -2.6 °C / 27.4 °F). Hours that
hit the clip are counted. Measured clip counts of the bundled files (hours of 8760):
San Jose (CISO) 2, Dallas (ERCO) 30, Leesburg (PJM) 808, Seattle (BPAT) 228,
New York (NYIS) 447, Chicago (MISO) 1598. Hours outside Stull's fitted range
(nearly all RH 100 %): CISO 43, ERCO 90, PJM 1340, BPAT 56, NYIS 0, MISO 115 (+6 below -20 °C).

UTC alignment (:func:`onsite_wue_utc`)
-------------------------------------
A typical-year file has no real year, so it is aligned by calendar position:
each UTC hour ``t`` of the target year is shifted to local standard time
``t + offset`` and takes the EPW row with the same (month, day, hour). Hours that
fall into the previous/next year after the shift wrap around the typical year
(e.g. 2022-01-01 00:00 UTC = Dec 31 16:00 PST takes the Dec 31 row). For a leap
target year, Feb 29 takes Feb 28's values (recorded).
"""

from __future__ import annotations

import gzip
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .validation import DATA_DIR, Report, resolve_path

__all__ = [
    "EPW_MISSING",
    "REGION_WEATHER",
    "STULL_RH_RANGE",
    "STULL_T_RANGE",
    "WUE_FLOOR",
    "epw_file",
    "load_epw",
    "onsite_wue",
    "onsite_wue_at",
    "onsite_wue_utc",
    "wet_bulb_stull",
]

#: Bundled EPW file for each balancing authority.
REGION_WEATHER: dict[str, str] = {
    "CISO": "USA_CA_San.Jose-Mineta.epw.gz",
    "ERCO": "USA_TX_Dallas-Fort.Worth.epw.gz",
    "PJM": "USA_VA_Leesburg.Exec.epw.gz",
    "BPAT": "USA_WA_Seattle-Tacoma.epw.gz",
    "NYIS": "USA_NY_New.York-Kennedy.epw.gz",
    "MISO": "USA_IL_Chicago.OHare.epw.gz",
}

#: EPW "missing" codes: a value >= the code is missing (EnergyPlus Auxiliary Programs, EPW format).
EPW_MISSING: dict[str, float] = {
    "dry_bulb_c": 99.9,
    "dew_point_c": 99.9,
    "rel_humidity_pct": 999.0,
    "pressure_pa": 999999.0,
}

#: Fitted range of Stull's (2011) wet-bulb formula.
STULL_RH_RANGE = (5.0, 99.0)
STULL_T_RANGE = (-20.0, 50.0)

#: Lower clip of the on-site WUE (L/kWh).
WUE_FLOOR = 0.05

_EPW_FIELDS = {6: "dry_bulb_c", 7: "dew_point_c", 8: "rel_humidity_pct", 9: "pressure_pa"}
_PLAUSIBLE = {
    "dry_bulb_c": (-70.0, 70.0),
    "dew_point_c": (-90.0, 70.0),
    "rel_humidity_pct": (0.0, 110.0),
    "pressure_pa": (31000.0, 120000.0),
}
_HEADER_LINES = 8
_N_HOURS = 8760


def epw_file(region: str) -> Path:
    if region not in REGION_WEATHER:
        raise DataError(f"unknown region {region!r}", field="region", accepted=sorted(REGION_WEATHER))
    return DATA_DIR / "weather" / REGION_WEATHER[region]


def _read_lines(p: Path) -> list[str]:
    try:
        if p.name.lower().endswith(".gz"):
            with gzip.open(p, "rt", encoding="latin-1") as fh:
                return fh.read().splitlines()
        return p.read_text(encoding="latin-1").splitlines()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot be read ({e})", file=p) from e


def load_epw(region: str = "CISO", path: str | PathLike[str] | None = None) -> pd.DataFrame:
    """Hourly weather of a typical year from an EPW file.

    Returns a DataFrame indexed by hour of year 0..8759 (``hour_of_year``; row 0 is
    Jan 1, 00:00-01:00 local standard time) with ``dry_bulb_c``, ``dew_point_c``,
    ``rel_humidity_pct``, ``pressure_pa`` and ``month``, ``day``, ``hour`` (EPW's
    1..24, hour ending). ``attrs``: ``utc_offset_h`` (local standard time − UTC),
    ``location``, ``file``, ``report``.

    Validation (DataError with file, data row and field; the text line is row + 8):
    8 header lines starting with ``LOCATION`` and ending with ``DATA PERIODS``,
    exactly 8760 data rows in calendar order of a non-leap year, numeric fields.
    EPW missing-value codes (:data:`EPW_MISSING`) are replaced by linear
    interpolation over the hour of year, and counted in the report.
    """
    bundled = epw_file(region) if path is None else None
    p = resolve_path(path, bundled, exts=(".epw", ".epw.gz"), what="EPW weather file")
    rep = Report(p.name)
    lines = _read_lines(p)
    if len(lines) < _HEADER_LINES or not lines[0].startswith("LOCATION"):
        raise DataError("first line must be the EPW LOCATION header", file=p, accepted="EPW files with 8 header lines")
    if not lines[_HEADER_LINES - 1].startswith("DATA PERIODS"):
        raise DataError(
            f"line {_HEADER_LINES} must be the DATA PERIODS header", file=p,
            accepted="EPW files with 8 header lines",
        )
    loc = lines[0].split(",")
    try:
        offset = float(loc[8])
    except (IndexError, ValueError) as e:
        raise DataError("LOCATION line has no numeric time zone (field 9)", file=p, field="LOCATION") from e
    if offset != round(offset) or not -12 <= offset <= 14:
        raise DataError(f"time zone {offset} h is not a whole-hour offset", file=p, field="LOCATION",
                        accepted="whole-hour UTC offsets -12..14")
    data = [ln for ln in lines[_HEADER_LINES:] if ln.strip()]
    if len(data) != _N_HOURS:
        raise DataError(f"{len(data)} data rows", file=p, accepted=f"{_N_HOURS} hourly rows (a non-leap typical year)")
    rows = [ln.split(",") for ln in data]
    short = [i for i, r in enumerate(rows) if len(r) < 10]
    if short:
        i = short[0]
        raise DataError(f"only {len(rows[i])} fields (line {i + 1 + _HEADER_LINES})", file=p, row=i + 1,
                        accepted="EPW rows with at least 10 comma-separated fields")
    cols: dict[str, np.ndarray] = {}
    for j, name in [(1, "month"), (2, "day"), (3, "hour"), *_EPW_FIELDS.items()]:
        raw = pd.Series([r[j].strip() for r in rows])
        vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(vals)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"cannot parse {raw.iloc[i]!r} as a number (line {i + 1 + _HEADER_LINES})",
                            file=p, row=i + 1, field=name, accepted="finite numbers")
        cols[name] = vals
    # calendar order of a non-leap year
    cal = pd.date_range("2001-01-01", periods=_N_HOURS, freq="h")
    expect = np.stack([cal.month, cal.day, cal.hour + 1], axis=1)
    got = np.stack([cols["month"], cols["day"], cols["hour"]], axis=1)
    wrong = (got != expect).any(axis=1)
    if wrong.any():
        i = int(np.argmax(wrong))
        raise DataError(
            f"month/day/hour {tuple(int(v) for v in got[i])} out of calendar order (line {i + 1 + _HEADER_LINES}); "
            f"expected {tuple(int(v) for v in expect[i])}",
            file=p, row=i + 1, field="month/day/hour", accepted="hourly rows Jan 1 hour 1 .. Dec 31 hour 24",
        )
    out = pd.DataFrame({k: cols[k].astype(int) for k in ("month", "day", "hour")})
    for name in _EPW_FIELDS.values():
        v = cols[name].copy()
        miss = v >= EPW_MISSING[name]
        lo, hi = _PLAUSIBLE[name]
        bad = ~miss & ((v < lo) | (v > hi))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"implausible value {v[i]} (line {i + 1 + _HEADER_LINES})", file=p, row=i + 1,
                            field=name, accepted=f"{lo}..{hi} or the EPW missing code {EPW_MISSING[name]}")
        if miss.all():
            raise DataError("every value is the EPW missing code", file=p, field=name)
        if miss.any():
            v[miss] = np.nan
            v = pd.Series(v).interpolate(limit_direction="both").to_numpy()
            rep.warning(f"{int(miss.sum())} {name} values are the EPW missing code {EPW_MISSING[name]}; "
                        "filled by linear interpolation over the hour of year")
        if name == "rel_humidity_pct" and (v > 100).any():
            n = int((v > 100).sum())
            v = np.minimum(v, 100.0)
            rep.warning(f"{n} relative humidity values above 100 % clipped to 100 %")
        out[name] = v
    out = out[["dry_bulb_c", "dew_point_c", "rel_humidity_pct", "pressure_pa", "month", "day", "hour"]]
    out.index = pd.RangeIndex(_N_HOURS, name="hour_of_year")
    out.attrs["utc_offset_h"] = offset
    out.attrs["location"] = ",".join(loc[1:4])
    out.attrs["file"] = str(p)
    return rep.attach(out)


def _as_array(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def wet_bulb_stull(t_c, rh_pct, *, report: Report | None = None):
    """Wet-bulb temperature (°C) from air temperature (°C) and RH (%), Stull (2011).

    ``Tw = T·atan(0.151977·(RH + 8.313659)^0.5) + atan(T + RH) − atan(RH − 1.676331)
    + 0.00391838·RH^1.5·atan(0.023101·RH) − 4.686035``.

    Valid for RH 5–99 % and T −20..50 °C; values outside are computed anyway and
    their count is logged (and added to ``report``/``attrs["report"]``). Returns a
    Series (with ``attrs["report"]``) when ``t_c`` is a Series, else an ndarray.
    """
    t = _as_array(t_c)
    rh = _as_array(rh_pct)
    if not (np.isfinite(t).all() and np.isfinite(rh).all()):
        raise DataError("temperature and relative humidity must be finite", field="t_c/rh_pct")
    if (rh < 0).any():
        raise DataError("negative relative humidity", field="rh_pct", accepted="0..100 %")
    tw = (
        t * np.arctan(0.151977 * np.sqrt(rh + 8.313659))
        + np.arctan(t + rh)
        - np.arctan(rh - 1.676331)
        + 0.00391838 * rh**1.5 * np.arctan(0.023101 * rh)
        - 4.686035
    )
    rep = report if report is not None else Report("wet_bulb_stull")
    out_rh = int(((rh < STULL_RH_RANGE[0]) | (rh > STULL_RH_RANGE[1])).sum())
    out_t = int(((t < STULL_T_RANGE[0]) | (t > STULL_T_RANGE[1])).sum())
    if out_rh:
        rep.info(f"{out_rh} of {rh.size} hours have RH outside Stull's fitted 5-99 % (computed anyway)")
    if out_t:
        rep.info(f"{out_t} of {t.size} hours have T outside Stull's fitted -20..50 °C (computed anyway)")
    if isinstance(t_c, pd.Series):
        s = pd.Series(tw, index=t_c.index, name="wet_bulb_c")
        return rep.attach(s)
    return tw


def onsite_wue(wet_bulb_c, cycles: float = 6.0, *, report: Report | None = None):
    """On-site WUE (L/kWh) of a cooling tower from wet-bulb temperature (°C).

    ``WUE = w/(w−1)·(6e-5·Tw³ − 0.01·Tw² + 0.61·Tw − 10.4)`` with ``Tw`` in °F,
    ``w = cycles`` of concentration (> 1), clipped below at :data:`WUE_FLOOR`;
    the number of clipped hours is logged / recorded. Series in → Series out.
    """
    if not cycles > 1:
        raise DataError(f"cycles={cycles}", field="cycles", accepted="cycles of concentration > 1")
    tw_c = _as_array(wet_bulb_c)
    if not np.isfinite(tw_c).all():
        raise DataError("wet-bulb temperature must be finite", field="wet_bulb_c")
    tw = tw_c * 9.0 / 5.0 + 32.0
    raw = cycles / (cycles - 1.0) * (6e-5 * tw**3 - 0.01 * tw**2 + 0.61 * tw - 10.4)
    clipped = raw < WUE_FLOOR
    wue = np.where(clipped, WUE_FLOOR, raw)
    rep = report if report is not None else Report("onsite_wue")
    if clipped.any():
        rep.info(f"{int(clipped.sum())} of {wue.size} hours clipped to the WUE floor {WUE_FLOOR} L/kWh")
    if isinstance(wet_bulb_c, pd.Series):
        s = pd.Series(wue, index=wet_bulb_c.index, name="wue_onsite")
        s.attrs["clipped_hours"] = int(clipped.sum())
        return rep.attach(s)
    return wue


def _local_wue(region: str, path, cycles: float, rep: Report) -> tuple[pd.Series, float]:
    w = load_epw(region, path)
    rep.extend(w.attrs["report"])
    tw = wet_bulb_stull(w["dry_bulb_c"].to_numpy(), w["rel_humidity_pct"].to_numpy(), report=rep)
    wue = onsite_wue(tw, cycles, report=rep)
    s = pd.Series(wue, index=pd.MultiIndex.from_arrays([w["month"], w["day"], w["hour"] - 1]))
    return s, float(w.attrs["utc_offset_h"])


def onsite_wue_at(
    utc_index: pd.DatetimeIndex,
    region: str = "CISO",
    path: str | PathLike[str] | None = None,
    cycles: float = 6.0,
) -> pd.Series:
    """On-site WUE (L/kWh) for arbitrary UTC hours by the calendar rule of the module doc."""
    idx = pd.DatetimeIndex(utc_index)
    if idx.tz is None:
        raise DataError("utc_index must be tz-aware (UTC)", field="utc_index")
    rep = Report(f"onsite_wue[{region if path is None else Path(path).name}]")
    local_wue, offset = _local_wue(region, path, cycles, rep)
    local = idx.tz_convert("UTC").tz_localize(None) + pd.Timedelta(hours=offset)
    month, day = local.month.to_numpy(), local.day.to_numpy().copy()
    leap = (month == 2) & (day == 29)
    if leap.any():
        day[leap] = 28
        rep.info(f"{int(leap.sum())} Feb-29 hours take Feb 28's typical-year values")
    key = pd.MultiIndex.from_arrays([month, day, local.hour.to_numpy()])
    vals = local_wue.reindex(key).to_numpy()
    s = pd.Series(vals, index=idx, name="wue_onsite")
    s.attrs["utc_offset_h"] = offset
    s.attrs["clipped_hours_typical_year"] = int((local_wue.to_numpy() <= WUE_FLOOR).sum())
    return rep.attach(s)


def onsite_wue_utc(
    region: str = "CISO",
    year: int = 2022,
    path: str | PathLike[str] | None = None,
    cycles: float = 6.0,
) -> pd.Series:
    """On-site WUE (L/kWh) on every UTC hour of ``year`` (8760 or 8784 values).

    Local standard time is shifted to UTC with the EPW's offset and the typical
    year is matched by (month, day, hour) — see the module docstring.
    """
    idx = pd.date_range(f"{int(year)}-01-01", f"{int(year) + 1}-01-01", freq="h", tz="UTC", inclusive="left")
    return onsite_wue_at(idx, region, path, cycles)
