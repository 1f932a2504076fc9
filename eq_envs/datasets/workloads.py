"""Data-centre workload: the Azure Functions 2019 aggregate trace and the paper's agent populations.

Bundled file ``eq_envs/data/official/azure_total_demand.csv.gz`` (the authors'
released file; Azure Functions trace 2019, Shahrad et al. 2020): half-hourly
``Time`` (2019-01-01 11:30 .. 2019-12-27 11:00, no time zone stated; kept naive)
and ``Demand`` (aggregate invocations). 17,280 rows, no gaps.

Hourly series
-------------
Half-hours are summed into the hour they start in (``[hh:00, hh+1:00)``). The
trace starts at 11:30 and ends at 11:00, so its first hour (2019-01-01 11:00)
and last hour (2019-12-27 11:00) hold one half-hour each. By default they are
kept as partial sums — the paper's hourly frame has them (8,641 hours), and its
min–max scaling takes the partial last hour (90,492.67) as the minimum, so the
official agents can only be reproduced with them. ``partial="drop"`` removes
them instead (8,639 hours). Either way they are recorded. Missing half-hours
inside the trace (none in the bundled file) are filled by linear interpolation
and recorded.

The paper's "similar" data-centre agents (:func:`dc_similar_agents`)
---------------------------------------------------------------------
Investigated against ``official/dc_different_agents_{train,test}.csv`` (the
"different agents" population = similar agents with noise added to some):

* scaling: min–max of the whole 8,641-hour frame to [0, 10]
  (min 90,492.67 at 2019-12-27 11:00, max 203,692.21 at 2019-09-22 20:00);
* train: rows ``[-5867:-5]`` of that frame (5,862 hours), ``np.array_split`` into
  50 contiguous agents (12 × 118 then 38 × 117) — as the released code;
* test: rows ``[7:2892]`` (2,885 hours; 35 × 58 then 15 × 57). The released
  code's ``[6:2891]`` is one row earlier; the official file matches only when
  shifted by one, i.e. the released code's frame evidently starts one hour
  later (at 12:00) for the test slice. (Train and test overlap by 118 hours:
  rows 2774-2891.)
* result: the 16 un-noised agents of the official file
  (:data:`DC_UNNOISED_AGENTS`: 4 5 9 12 16 18 21 23 25 26 34 36 39 40 41 49, the
  same in train and test) are reproduced with max |difference| 1.1e-14
  (float round-off) in both splits; the other **34** agents carry positive
  additive noise (per-agent mean +13 to +60 on the 0-10 scale) — not 20 as the
  paper's text says.
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
    numeric_column,
    parse_timestamps,
    read_csv_text,
    require_columns,
    resolve_path,
)

__all__ = [
    "AZURE_TEST_ROWS",
    "AZURE_TEST_ROWS_RELEASED",
    "AZURE_TRAIN_ROWS",
    "DC_N_AGENTS",
    "DC_UNNOISED_AGENTS",
    "azure_paper_scaled",
    "azure_paper_split",
    "dc_similar_agents",
    "load_azure_hourly",
]

DC_N_AGENTS = 50
#: Rows of the hourly frame used for training (released code; reproduces the official file).
AZURE_TRAIN_ROWS = slice(-5867, -5)
#: Rows of the hourly frame that reproduce the official test agents.
AZURE_TEST_ROWS = slice(7, 2892)
#: The test rows written in the released code (one row earlier than the official file).
AZURE_TEST_ROWS_RELEASED = slice(6, 2891)
#: Agents of the official "different agents" files that carry no noise.
DC_UNNOISED_AGENTS: tuple[int, ...] = (4, 5, 9, 12, 16, 18, 21, 23, 25, 26, 34, 36, 39, 40, 41, 49)

_SPLITS = ("train", "test")


def load_azure_hourly(path: str | PathLike[str] | None = None, *, partial: str = "keep") -> pd.Series:
    """Hourly aggregate Azure demand (sum of the half-hours starting in each hour).

    ``path``: a CSV (or .csv.gz) with ``Time`` (``YYYY-MM-DD HH:MM`` on :00/:30)
    and ``Demand`` (finite, >= 0). ``partial``: ``"keep"`` (default; the paper's
    frame) or ``"drop"`` the incomplete first/last hour. ``attrs``: ``report``,
    ``partial_hours`` (ISO strings), ``filled_half_hours`` (int), ``file``.
    """
    if partial not in ("keep", "drop"):
        raise DataError(f"partial={partial!r}", field="partial", accepted=["keep", "drop"])
    p = resolve_path(path, DATA_DIR / "official" / "azure_total_demand.csv.gz", what="workload file")
    rep = Report(p.name)
    df = read_csv_text(p)
    require_columns(df, ("Time", "Demand"), p)
    ts = parse_timestamps(df, "Time", p, accepted="timestamps YYYY-MM-DD HH:MM")
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    check_strictly_increasing(ts, p, "Time")
    idx = pd.DatetimeIndex(ts)
    off = idx != idx.floor("30min")
    if off.any():
        i = int(np.argmax(off))
        raise DataError(f"timestamp {idx[i]} is not on a half hour", file=p, row=i + 1, field="Time",
                        accepted="half-hourly timestamps (HH:00 or HH:30)")
    vals, _ = numeric_column(df, "Demand", p, allow_negative=False)
    s = pd.Series(vals, index=idx)
    full = pd.date_range(idx[0], idx[-1], freq="30min")
    n_fill = len(full) - len(idx)
    if n_fill:
        s = s.reindex(full).interpolate(method="time")
        rep.warning(f"{n_fill} half-hours absent inside the trace filled by linear interpolation")
    hourly = s.resample("h").sum()
    count = s.resample("h").count()
    part = count < 2
    part_hours = list(hourly.index[part.to_numpy()])
    if part_hours:
        what = ", ".join(t.strftime("%Y-%m-%d %H:%M") for t in part_hours)
        if partial == "keep":
            rep.info(f"{len(part_hours)} hours at the ends of the trace hold one of two half-hours ({what}); "
                     "kept as partial sums (the paper's hourly frame)")
        else:
            hourly = hourly[~part.to_numpy()]
            rep.info(f"{len(part_hours)} incomplete hours at the ends of the trace dropped ({what})")
    hourly.name = "demand"
    hourly.index.name = "time"
    hourly.attrs.update({"partial_hours": [t.isoformat() for t in part_hours], "filled_half_hours": n_fill,
                         "file": str(p), "partial": partial})
    return rep.attach(hourly)


def azure_paper_scaled(path: str | PathLike[str] | None = None) -> pd.Series:
    """The hourly frame (partial end hours kept) min–max scaled to [0, 10], as the paper."""
    h = load_azure_hourly(path, partial="keep")
    v = h.to_numpy()
    mn, mx = float(v.min()), float(v.max())
    if mx == mn:
        raise DataError("constant workload cannot be min-max scaled", file=h.attrs["file"], field="Demand")
    s = pd.Series((v - mn) / (mx - mn) * 10.0, index=h.index, name="demand_scaled")
    rep = Report("azure_paper_scaled")
    rep.extend(h.attrs["report"])
    rep.info(f"min-max scaled to [0, 10] with min {mn:.6g}, max {mx:.6g}")
    s.attrs.update({k: v for k, v in h.attrs.items() if k != "report"})
    s.attrs["scale_range"] = (mn, mx)
    return rep.attach(s)


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise DataError(f"unknown split {split!r}", field="split", accepted=_SPLITS)


def _rows(n: int, split: str, path) -> slice:
    sl = AZURE_TRAIN_ROWS if split == "train" else AZURE_TEST_ROWS
    need = 5867 if split == "train" else 2892
    if n < need:
        raise DataError(f"hourly workload has {n} hours; the paper's {split} rows need {need}",
                        file=path, accepted=f"at least {need} hours")
    return sl


def azure_paper_split(
    path: str | PathLike[str] | None = None, *, n_agents: int = DC_N_AGENTS
) -> dict[str, list[np.ndarray]]:
    """Unscaled hourly demand split as the paper: ``{"train": [...], "test": [...]}``.

    Train rows :data:`AZURE_TRAIN_ROWS`, test rows :data:`AZURE_TEST_ROWS` of the
    hourly frame (partial end hours kept), each ``np.array_split`` into ``n_agents``
    contiguous agents.
    """
    h = load_azure_hourly(path, partial="keep").to_numpy()
    return {sp: [a.copy() for a in np.array_split(h[_rows(len(h), sp, path)], n_agents)] for sp in _SPLITS}


def dc_similar_agents(split: str = "train", path: str | PathLike[str] | None = None) -> list[np.ndarray]:
    """The paper's 50 "similar" data-centre agents (workload on the [0, 10] scale).

    Reproduces the un-noised agents of ``official/dc_different_agents_{split}.csv``
    to float round-off (max |diff| ~1e-14; see the module docstring).
    """
    _check_split(split)
    s = azure_paper_scaled(path).to_numpy()
    return [a.copy() for a in np.array_split(s[_rows(len(s), split, path)], DC_N_AGENTS)]
