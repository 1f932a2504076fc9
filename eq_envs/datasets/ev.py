"""EV and phone charging data: ACN-Data sessions, home plug-in windows, phone demands.

ACN-Data sessions (:func:`load_acn_sessions`)
---------------------------------------------
``official/caltech_ev_dataset_detail.csv.gz``: 31,424 Caltech sessions
(Lee, Li, Low, e-Energy 2019), times in local (Pacific) clock time, kept naive.
``duration_h = done_charge − start_time`` and ``rate_kw = energy_kwh / duration_h``
as in the paper. Rows are dropped, each reason counted in the log and
``attrs["report"]`` / ``attrs["dropped"]`` (bundled file, in this order):

======================================  =======
reason                                   rows
======================================  =======
missing/unparsable ``done_charge``        2,055
``done_charge`` before ``start_time``        24
duration < 3 h (7 of them 0 min)         19,426
duration > 12 h                             259
kept (3 h ≤ duration ≤ 12 h)              9,660
======================================  =======

No row has missing start/end/energy or non-positive energy. A ``done_charge``
before ``start_time`` is a data error in that row: it is dropped and counted,
not fatal. Out-of-order start times are fine (the bundled file has 2, both among dropped
rows): the result is sorted by start time (stable) unless ``sort=False``.

The paper's "similar" EV agents (:func:`ev_similar_agents`)
-----------------------------------------------------------
Investigated against ``official/ev_different_agents_{train,test}.csv``: the
similar agents are the ``energy_kwh`` of the filtered sessions **in file order**
(not sorted), truncated to the first :data:`EV_PAPER_N_SESSIONS` = 8,759
(through 2019-12-05 10:09; the number equals the grid year's 8,760 hours minus
one, which suggests the released code cut the sessions to the signal length),
split 70/30 in time order (6,131 = floor(0.7·8,759) train, 2,628 test), each
split ``np.array_split`` into 70 contiguous agents (train 41 × 88 + 29 × 87;
test 38 × 38 + 32 × 37). This reproduces the 28 un-noised agents of the official
files (:data:`EV_UNNOISED_AGENTS`, same ids in train and test) with max
|difference| 3.6e-15 kWh (float round-off); the other 42 carry positive additive
noise (per-agent mean +12.6 to +55 kWh). :func:`ev_similar_agent_rates` gives the
matching per-session ``rate_kw``.

Home windows and phones
-----------------------
:func:`load_home_windows`: NREL OCHRE/EVI-Pro home level-2 events on real 2017
NHTS California travel days. :func:`phone_demands`: the 18 phone charging
demands of the authors' released code.
"""

from __future__ import annotations

from os import PathLike

import numpy as np
import pandas as pd

from .errors import DataError
from .signals import EV_TRAIN_FRACTION, time_split
from .validation import (
    DATA_DIR,
    MISSING_TOKENS,
    Report,
    numeric_column,
    read_csv_text,
    require_columns,
    resolve_path,
)

__all__ = [
    "ACN_MAX_HOURS",
    "ACN_MIN_HOURS",
    "EV_N_AGENTS",
    "EV_PAPER_N_SESSIONS",
    "EV_UNNOISED_AGENTS",
    "HOME_WINDOW_KINDS",
    "PHONE_CHARGE_PER_HOUR",
    "SESSION_ROLES",
    "SESSION_TABLES",
    "agents_from_sessions",
    "ev_similar_agent_rates",
    "ev_similar_agents",
    "load_acn_sessions",
    "load_home_windows",
    "load_sessions",
    "phone_demands",
    "phone_hours_needed",
    "session_table",
]

#: The paper's session filter: ACN_MIN_HOURS <= done_charge - start_time <= ACN_MAX_HOURS.
ACN_MIN_HOURS = 3.0
ACN_MAX_HOURS = 12.0
EV_N_AGENTS = 70
#: Number of filtered sessions (file order) the paper's EV population is built from.
EV_PAPER_N_SESSIONS = 8759
#: Agents of the official EV "different agents" files that carry no noise.
EV_UNNOISED_AGENTS: tuple[int, ...] = (
    2, 4, 7, 8, 9, 14, 15, 16, 20, 21, 26, 29, 30, 32, 35, 38, 40, 43, 45, 46, 47, 48, 49, 52, 53, 65, 68, 69,
)

#: Charge a phone gains per hour of charging in the released code (same unit as the
#: demands). A phone with demand ``D`` needs ``k = round(D / PHONE_CHARGE_PER_HOUR)``
#: charging hours (see :func:`phone_hours_needed`); the 18 demands give k = 2..6.
PHONE_CHARGE_PER_HOUR = 2.0

HOME_WINDOW_KINDS = ("bev", "phev")
_ACN_FMT = "%Y/%m/%d %H:%M"


def _parse_optional_times(df: pd.DataFrame, col: str) -> pd.Series:
    """Parse to datetime; unparsable or missing cells become NaT (caller counts them)."""
    raw = df[col].astype(str).str.strip()
    ts = pd.to_datetime(raw, format=_ACN_FMT, errors="coerce")
    retry = ts.isna() & ~raw.isin(MISSING_TOKENS)
    if retry.any():
        try:
            again = pd.to_datetime(raw[retry], errors="coerce", format="mixed")
            if getattr(again.dt, "tz", None) is not None:
                again = again.dt.tz_localize(None)
            ts.loc[retry] = again
        except (ValueError, TypeError):  # mixed time zones etc.: leave NaT, counted as unparsable
            pass
    return ts


def load_acn_sessions(
    path: str | PathLike[str] | None = None,
    *,
    sort: bool = True,
    min_hours: float = ACN_MIN_HOURS,
    max_hours: float = ACN_MAX_HOURS,
) -> pd.DataFrame:
    """ACN-Data sessions after the paper's filter (see the module docstring).

    Columns: ``session_id`` (if in the file), ``start``, ``done``, ``end``
    (datetime, local clock), ``energy_kwh`` (= ``total_power``), ``duration_h``,
    ``rate_kw``, ``file_row`` (1-based data row in the file). ``attrs``:
    ``report``, ``dropped`` (reason -> rows), ``n_file_rows``, ``file``.
    Missing columns or an empty result are DataErrors; bad rows are dropped and counted.
    """
    if not (0 <= min_hours < max_hours):
        raise DataError(f"min_hours={min_hours}, max_hours={max_hours}", field="min_hours/max_hours",
                        accepted="0 <= min_hours < max_hours")
    p = resolve_path(path, DATA_DIR / "official" / "caltech_ev_dataset_detail.csv.gz", what="ACN sessions file")
    rep = Report(p.name)
    df = read_csv_text(p)
    require_columns(df, ("start_time", "done_charge", "end_time", "total_power"), p)
    n = len(df)
    start = _parse_optional_times(df, "start_time")
    done = _parse_optional_times(df, "done_charge")
    end = _parse_optional_times(df, "end_time")
    raw_e = df["total_power"].astype(str).str.strip()
    energy = pd.to_numeric(raw_e.where(~raw_e.isin(MISSING_TOKENS), None), errors="coerce").to_numpy(np.float64)
    dur = ((done - start).dt.total_seconds() / 3600.0).to_numpy()

    keep = np.ones(n, dtype=bool)
    dropped: dict[str, int] = {}

    def drop(mask: np.ndarray, reason: str) -> None:
        m = keep & mask
        c = int(m.sum())
        dropped[reason] = c
        if c:
            keep[m] = False
            rep.info(f"{c} sessions dropped: {reason}")

    drop(start.isna().to_numpy(), "missing or unparsable start_time")
    drop(done.isna().to_numpy(), "missing or unparsable done_charge")
    drop(end.isna().to_numpy(), "missing or unparsable end_time")
    drop(~np.isfinite(energy), "missing, unparsable or non-finite total_power")
    drop(~(energy > 0), "non-positive total_power")
    drop(dur < 0, "done_charge before start_time (data error)")
    drop(dur < min_hours, f"duration < {min_hours:g} h")
    drop(dur > max_hours, f"duration > {max_hours:g} h")
    n_keep = int(keep.sum())
    rep.info(f"{n_keep} of {n} sessions kept ({min_hours:g} h <= done_charge - start_time <= {max_hours:g} h)")
    if n_keep == 0:
        raise DataError("no session passes the filter", file=p, accepted=f"sessions with {min_hours:g}-{max_hours:g} h "
                        "between start_time and done_charge and positive total_power")
    out = pd.DataFrame(
        {
            "start": start[keep].to_numpy(),
            "done": done[keep].to_numpy(),
            "end": end[keep].to_numpy(),
            "energy_kwh": energy[keep],
            "duration_h": dur[keep],
        }
    )
    if "session_id" in df.columns:
        out.insert(0, "session_id", df["session_id"].to_numpy()[keep])
    out["rate_kw"] = out["energy_kwh"] / out["duration_h"]
    out["file_row"] = np.flatnonzero(keep) + 1
    n_back = int((np.diff(out["start"].to_numpy().astype("datetime64[ns]").astype(np.int64)) < 0).sum())
    if sort:
        if n_back:
            rep.info(f"{n_back} kept sessions start earlier than the previous row; sorted by start time")
        out = out.sort_values("start", kind="mergesort").reset_index(drop=True)
    out.attrs.update({"dropped": dropped, "n_file_rows": n, "file": str(p), "sorted": sort})
    return rep.attach(out)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}", field="split", accepted=["train", "test"])


def _paper_sessions(split: str, path) -> pd.DataFrame:
    _check_split(split)
    s = load_acn_sessions(path, sort=False)
    n = min(EV_PAPER_N_SESSIONS, len(s))
    if n < 2 * EV_N_AGENTS:
        raise DataError(f"only {n} sessions pass the filter", file=s.attrs["file"],
                        accepted=f"at least {2 * EV_N_AGENTS} sessions")
    tr, te = time_split(n, EV_TRAIN_FRACTION)
    return s.iloc[tr if split == "train" else te]


def ev_similar_agents(split: str = "train", path: str | PathLike[str] | None = None) -> list[np.ndarray]:
    """The paper's 70 "similar" EV agents: arrays of session energy demands (kWh).

    Reproduces the 28 un-noised agents of the official files exactly (module docstring).
    """
    s = _paper_sessions(split, path)
    return [a.copy() for a in np.array_split(s["energy_kwh"].to_numpy(np.float64), EV_N_AGENTS)]


def ev_similar_agent_rates(split: str = "train", path: str | PathLike[str] | None = None) -> list[np.ndarray]:
    """Per-session charging rate (kW) matching :func:`ev_similar_agents` element by element."""
    s = _paper_sessions(split, path)
    return [a.copy() for a in np.array_split(s["rate_kw"].to_numpy(np.float64), EV_N_AGENTS)]


def load_home_windows(kind: str = "bev", path: str | PathLike[str] | None = None) -> pd.DataFrame:
    """Home plug-in windows (NREL EVI-Pro on 2017 NHTS California travel days).

    Returns ``arrival_h`` (home arrival, hours after midnight, from
    ``start_time`` minutes), ``window_h`` (plugged-in time, from ``duration``
    minutes), ``energy_kwh`` (``total_charge``), ``avg_power_kw``, plus
    ``day_id`` and ``day_of_week`` when present. Validation: start_time in
    [0, 1440) min, duration > 0, total_charge >= 0, avg_power_kw > 0, all finite.
    """
    if kind not in HOME_WINDOW_KINDS:
        raise DataError(f"unknown kind {kind!r}", field="kind", accepted=HOME_WINDOW_KINDS)
    bundled = DATA_DIR / "ev_windows" / f"nhts2017_ca_home_{kind}_level2.csv.gz"
    p = resolve_path(path, bundled if path is None else None, what="home-window file")
    rep = Report(p.name)
    df = read_csv_text(p)
    require_columns(df, ("start_time", "duration", "total_charge", "avg_power_kw"), p)
    st, _ = numeric_column(df, "start_time", p, allow_negative=False)
    late = st >= 1440
    if late.any():
        i = int(np.argmax(late))
        raise DataError(f"start_time {st[i]} min", file=p, row=i + 1, field="start_time",
                        accepted="minutes after midnight in [0, 1440)")
    dur, _ = numeric_column(df, "duration", p, positive=True)
    energy, _ = numeric_column(df, "total_charge", p, allow_negative=False)
    power, _ = numeric_column(df, "avg_power_kw", p, positive=True)
    out = pd.DataFrame({"arrival_h": st / 60.0, "window_h": dur / 60.0, "energy_kwh": energy, "avg_power_kw": power})
    if "day_id" in df.columns:
        out.insert(0, "day_id", df["day_id"].to_numpy())
    if "day_of_week" in df.columns:
        dow, _ = numeric_column(df, "day_of_week", p, allow_negative=False)
        out.insert(1 if "day_id" in out.columns else 0, "day_of_week", dow.astype(np.int64))
    out.attrs.update({"kind": kind, "file": str(p)})
    return rep.attach(out)


def phone_demands(path: str | PathLike[str] | None = None) -> np.ndarray:
    """The 18 phone charging demands of the authors' released code (float64 array).

    File ``eq_envs/data/phone/phone_demands.csv`` (columns ``phone, demand``); a
    user file needs a ``demand`` column of finite values > 0.
    """
    p = resolve_path(path, DATA_DIR / "phone" / "phone_demands.csv", what="phone demand file")
    df = read_csv_text(p)
    require_columns(df, ("demand",), p)
    v, _ = numeric_column(df, "demand", p, positive=True)
    return v


def phone_hours_needed(demands) -> np.ndarray:
    """Charging hours per phone: ``k = round(demand / PHONE_CHARGE_PER_HOUR)``, at least 1.

    ``np.round`` rounds halves to even; none of the bundled demands is an exact half.
    """
    d = np.asarray(demands, dtype=np.float64)
    if not np.isfinite(d).all() or (d <= 0).any():
        raise DataError("phone demands must be finite and > 0", field="demand", accepted="values > 0")
    return np.maximum(np.round(d / PHONE_CHARGE_PER_HOUR), 1).astype(np.int64)


# ------------------------------------------------------------------ sessions from any table
#: Roles a session table's columns can play (``load_sessions(columns=...)``).
SESSION_ROLES = ("start", "end", "duration", "energy", "power", "vehicle")

#: Bundled session tables and how their columns map to the roles.
SESSION_TABLES: dict[str, dict] = {
    "acn-caltech": {"file": "official/caltech_ev_dataset_detail.csv.gz",
                    "columns": {"start": "start_time", "end": "done_charge", "energy": "total_power"},
                    "time_format": _ACN_FMT},
    "norway-residential": {"file": "ev_sessions/norway_residential_2018_2020.csv.gz",
                           "columns": {"start": "Start_plugin", "end": "End_plugout", "energy": "El_kWh",
                                       "vehicle": "User_ID"},
                           "sep": ";", "decimal": ",", "time_format": "%d.%m.%Y %H:%M"},
}
AGENT_LAYOUTS = ("per_vehicle",)


def session_table(name: str) -> dict:
    """Settings of a bundled session table (a copy, with ``file`` as an absolute path)."""
    if name not in SESSION_TABLES:
        raise DataError(f"unknown session table {name!r}", field="sessions", accepted=sorted(SESSION_TABLES))
    t = dict(SESSION_TABLES[name])
    t["file"] = str(DATA_DIR / t["file"])
    return t


def load_sessions(
    file: str | PathLike[str],
    columns: dict[str, str],
    *,
    time_format: str | None = None,
    sep: str = ",",
    decimal: str = ".",
    min_hours: float = ACN_MIN_HOURS,
    max_hours: float = ACN_MAX_HOURS,
) -> pd.DataFrame:
    """EV charging sessions from any table, by a column mapping.

    ``columns`` maps roles to the file's column names: ``start`` (required); the
    session's length as ``end`` (a timestamp) or ``duration`` (hours); its energy
    as ``energy`` (kWh) or ``power`` (kW, energy = power x duration); optionally
    ``vehicle`` (an id: one agent per vehicle, :func:`agents_from_sessions`).
    Times are parsed with ``time_format`` (strptime codes; default: any ISO-like
    form) and kept naive; ``sep``/``decimal`` read e.g. ``;``-separated files with
    decimal commas. Sessions are kept when ``min_hours <= duration <= max_hours``
    (the paper's 3-12 h by default). Rows with a missing or unparsable start,
    end/duration or energy, a negative duration or a non-positive energy are
    dropped, each reason counted in the report and ``attrs["dropped"]``.

    Returns columns ``vehicle`` (when mapped), ``start``, ``end``, ``energy_kwh``,
    ``duration_h``, ``rate_kw`` (= energy / duration, as the paper), ``file_row``,
    sorted by start (stable).
    """
    unknown = sorted(set(columns) - set(SESSION_ROLES))
    if unknown:
        raise DataError(f"unknown column role(s) {', '.join(unknown)}", field="columns", accepted=SESSION_ROLES)
    for need, alts in (("start", ("start",)), ("end or duration", ("end", "duration")),
                       ("energy or power", ("energy", "power"))):
        if sum(a in columns for a in alts) != 1:
            raise DataError(f"columns must map exactly one of {need}", field="columns",
                            accepted="start; end or duration; energy or power; optionally vehicle")
    if not (0 <= min_hours < max_hours):
        raise DataError(f"min_hours={min_hours}, max_hours={max_hours}", field="min_hours/max_hours",
                        accepted="0 <= min_hours < max_hours")
    p = resolve_path(file, None, what="session file")
    rep = Report(p.name)
    df = read_csv_text(p, sep=sep)
    require_columns(df, list(columns.values()), p)

    def times(role: str) -> pd.Series:
        raw = df[columns[role]].astype(str).str.strip()
        ts = pd.to_datetime(raw, format=time_format, errors="coerce") if time_format else \
            pd.to_datetime(raw, errors="coerce", format="mixed")
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_localize(None)
        return ts

    def number(role: str) -> np.ndarray:
        raw = df[columns[role]].astype(str).str.strip()
        if decimal != ".":
            raw = raw.str.replace(decimal, ".", regex=False)
        return pd.to_numeric(raw.where(~raw.isin(MISSING_TOKENS), None), errors="coerce").to_numpy(np.float64)

    start = times("start")
    if "end" in columns:
        end = times("end")
        dur = ((end - start).dt.total_seconds() / 3600.0).to_numpy()
    else:
        dur = number("duration")
        end = start + pd.to_timedelta(np.where(np.isfinite(dur), dur, 0.0), unit="h")
    energy = number("energy") if "energy" in columns else number("power") * dur
    keep = np.ones(len(df), dtype=bool)
    dropped: dict[str, int] = {}

    def drop(mask: np.ndarray, reason: str) -> None:
        m = keep & mask
        dropped[reason] = int(m.sum())
        if m.any():
            keep[m] = False
            rep.info(f"{int(m.sum())} sessions dropped: {reason}")

    drop(start.isna().to_numpy(), f"missing or unparsable {columns['start']}")
    length_col = columns.get("end", columns.get("duration"))
    drop(~np.isfinite(dur), f"missing or unparsable {length_col}")
    drop(~np.isfinite(energy), f"missing or unparsable {columns.get('energy', columns.get('power'))}")
    drop(dur < 0, "session ends before it starts (data error)")
    drop(~(energy > 0), "non-positive energy")
    drop(dur < min_hours, f"duration < {min_hours:g} h")
    drop(dur > max_hours, f"duration > {max_hours:g} h")
    n_keep = int(keep.sum())
    rep.info(f"{n_keep} of {len(df)} sessions kept ({min_hours:g} h <= duration <= {max_hours:g} h)")
    if n_keep == 0:
        raise DataError("no session passes the filter", file=p,
                        accepted=f"sessions of {min_hours:g}-{max_hours:g} h with positive energy")
    out = pd.DataFrame({"start": start[keep].to_numpy(), "end": pd.Series(end)[keep].to_numpy(),
                        "energy_kwh": energy[keep], "duration_h": dur[keep]})
    if "vehicle" in columns:
        out.insert(0, "vehicle", df[columns["vehicle"]].astype(str).str.strip().to_numpy()[keep])
    out["rate_kw"] = out["energy_kwh"] / out["duration_h"]
    out["file_row"] = np.flatnonzero(keep) + 1
    out = out.sort_values("start", kind="mergesort").reset_index(drop=True)
    out.attrs.update({"dropped": dropped, "n_file_rows": len(df), "file": str(p)})
    return rep.attach(out)


def agents_from_sessions(
    sessions: pd.DataFrame,
    agents: int | str = "per_vehicle",
    split: str = "train",
    train_fraction: float = EV_TRAIN_FRACTION,
    min_sessions: int = 2,
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Agent names, energy needs (kWh) and charging rates (kW) from :func:`load_sessions`.

    ``agents="per_vehicle"``: one agent per vehicle id, its sessions in time
    order; each vehicle's first ``floor(train_fraction * n)`` sessions are its
    training split and the rest its test split, so the same agents appear in
    both (vehicles with fewer than ``min_sessions`` sessions are left out and
    recorded). ``agents=N``: the paper's layout -- all sessions in time order,
    split ``train_fraction`` / rest, each split cut into ``N`` contiguous agents.
    """
    _check_split(split)
    rep = Report("agents_from_sessions")
    if isinstance(agents, str):
        if agents not in AGENT_LAYOUTS:
            raise DataError(f"agents={agents!r}", field="agents", accepted="per_vehicle or a number of agents")
        if "vehicle" not in sessions.columns:
            raise DataError("agents='per_vehicle' needs a vehicle column", field="columns.vehicle",
                            accepted="a column mapping with vehicle = <id column>")
        if not (isinstance(min_sessions, int) and min_sessions >= 2):
            raise DataError(f"min_sessions={min_sessions!r}", field="min_sessions", accepted="an integer >= 2")
        names, needs, rates, few = [], [], [], []
        for vid, g in sessions.groupby("vehicle", sort=True):
            if len(g) < min_sessions:
                few.append(str(vid))
                continue
            tr, te = time_split(len(g), train_fraction)
            part = g.iloc[tr if split == "train" else te]
            names.append(f"ev_{vid}")
            needs.append(part["energy_kwh"].to_numpy(np.float64, copy=True))
            rates.append(part["rate_kw"].to_numpy(np.float64, copy=True))
        if few:
            rep.info(f"{len(few)} vehicles with fewer than {min_sessions} sessions left out: {', '.join(few[:10])}"
                     + (" ..." if len(few) > 10 else ""))
        if len(names) < 1:
            raise DataError("no vehicle has enough sessions", field="min_sessions",
                            accepted=f"at least one vehicle with >= {min_sessions} sessions")
        return names, needs, rates
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
        raise DataError(f"agents={agents!r}", field="agents", accepted="per_vehicle or a number of agents >= 1")
    tr, te = time_split(len(sessions), train_fraction)
    part = sessions.iloc[tr if split == "train" else te]
    if len(part) < agents:
        raise DataError(f"{len(part)} {split} sessions for {agents} agents", field="agents",
                        accepted=f"at most {len(part)} agents")
    needs = [a.copy() for a in np.array_split(part["energy_kwh"].to_numpy(np.float64), agents)]
    rates = [a.copy() for a in np.array_split(part["rate_kw"].to_numpy(np.float64), agents)]
    return [f"ev_{m}" for m in range(agents)], needs, rates
