"""Shared reading and validation helpers for the dataset loaders.

Everything here raises :class:`~eq_envs.datasets.errors.DataError` (never a bare
pandas or ``KeyError``) and records every change it makes to the data in a
:class:`Report`, which logs to ``logging.getLogger("eq_envs.data")`` and is
attached to the returned pandas object as ``obj.attrs["report"]`` (a list of str).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = [
    "DATA_DIR",
    "LOG",
    "MAX_MAGNITUDE",
    "Report",
    "check_strictly_increasing",
    "check_year",
    "numeric_column",
    "parse_timestamps",
    "read_csv_text",
    "require_columns",
    "resolve_path",
    "year_in_name",
]

#: Folder of the data bundled with the package (``eq_envs/data``).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

#: Logger every loader reports to.
LOG = logging.getLogger("eq_envs.data")

CSV_EXTS = (".csv", ".csv.gz")
MISSING_TOKENS = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "null", "NULL", "None"})
#: Largest magnitude a numeric cell may have.  No quantity in these files comes near it (MWh per hour,
#: $/MWh, kWh, workload units); a larger one is a corrupt cell, and its products and squares in later steps
#: (unit conversions, scaling, regrets) would overflow to inf and fail far from the file at fault.
MAX_MAGNITUDE = 1e15


class Report:
    """Collects what a loader dropped, filled or rewrote; logs each message.

    Messages are prefixed with ``[source]`` so that merged reports stay readable.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []

    def _add(self, level: int, msg: str) -> None:
        text = f"[{self.source}] {msg}"
        LOG.log(level, text)
        self.messages.append(text)

    def info(self, msg: str) -> None:
        self._add(logging.INFO, msg)

    def warning(self, msg: str) -> None:
        self._add(logging.WARNING, msg)

    def extend(self, messages: Iterable[str]) -> None:
        """Add messages already logged elsewhere (no second log line)."""
        self.messages.extend(messages)

    def attach(self, obj):
        """Set ``obj.attrs["report"]`` to a copy of the messages and return ``obj``."""
        obj.attrs["report"] = list(self.messages)
        return obj


def _has_ext(p: Path, exts: Sequence[str]) -> bool:
    name = p.name.lower()
    return any(name.endswith(e) for e in exts)


def resolve_path(
    path: str | PathLike[str] | None,
    bundled: Path | None,
    exts: Sequence[str] = CSV_EXTS,
    what: str = "data file",
) -> Path:
    """Return the user ``path`` if given, else the bundled file; check it exists.

    Raises DataError naming the file and the accepted formats.
    """
    p = Path(path) if path is not None else bundled
    if p is None:
        raise DataError(f"no {what} given", accepted=f"a path to a {' or '.join(exts)} file")
    if not _has_ext(p, exts):
        raise DataError(
            f"unsupported file type for a {what}", file=p, accepted=" or ".join(exts) + " files"
        )
    if not p.is_file():
        kind = "bundled" if path is None else "given"
        raise DataError(
            f"{kind} {what} not found",
            file=p,
            accepted=f"an existing {' or '.join(exts)} file",
        )
    return p


def read_csv_text(p: Path, **kwargs) -> pd.DataFrame:
    """Read a (possibly gzipped) CSV with every cell kept as text.

    Parsing is done by the caller so that the first bad row and field can be
    named.  A row with more fields than the header, or fewer (the last row of
    a file cut short), is a DataError naming the row.
    """
    try:
        opener = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except (UnicodeDecodeError, gzip.BadGzipFile, zlib.error, EOFError) as e:
        raise DataError(f"cannot be parsed as CSV ({e or 'compressed data ends early: file cut short?'})",
                        file=p) from e
    except OSError as e:
        raise DataError(f"cannot be read ({e})", file=p) from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False, index_col=False,
                             **kwargs)
    except pd.errors.ParserWarning as e:
        raise DataError(f"some rows have more fields than the header ({e})", file=p,
                        accepted="one value per header column in every row") from e
    except pd.errors.EmptyDataError as e:
        raise DataError("file is empty", file=p) from e
    except pd.errors.ParserError as e:
        raise DataError(f"cannot be parsed as CSV ({e})", file=p) from e
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise DataError("file has a header but no data rows", file=p)
    sep = kwargs.get("sep", ",")
    if isinstance(sep, str) and len(sep) == 1:  # (a regex separator is pandas' business alone)
        _check_short_rows(text, len(df.columns), p, sep)
    return df


def _check_short_rows(text: str, n_fields: int, p: Path, sep: str) -> None:
    # pandas pads a short row with empty cells, which later read as "missing" and get filled or dropped:
    # a file cut mid-row would load as a shorter series.  Count the fields of every row (blank lines skipped,
    # as pandas does).
    rows = (r for r in csv.reader(io.StringIO(text), delimiter=sep) if r)
    next(rows, None)  # header
    for i, row in enumerate(rows, start=1):
        if len(row) < n_fields:
            raise DataError(f"{len(row)} fields where the header has {n_fields} (a row cut short: is the file "
                            f"truncated?)", file=p, row=i, accepted="one value per header column in every row")


def year_in_name(p: Path) -> tuple[int, int] | None:
    """``(first, last)`` year a file name states (``..._2022...`` or ``..._2016_2019...``), else None."""
    years = [int(y) for y in re.findall(r"(?<!\d)((?:19|20)\d{2})(?!\d)", Path(p).name)]
    if len(years) == 1:
        return years[0], years[0]
    if len(years) == 2 and years[0] < years[1]:
        return years[0], years[1]
    return None


def check_year(ts: pd.Series | pd.DatetimeIndex, p: Path, field: str) -> None:
    """Where the file name states a year, every (hourly) timestamp must lie in it.

    A single year (``eia_fuelmix_2022_CISO.csv``) must also be covered from its
    first hour to its last, so that a file of the wrong year or one cut short
    at a row boundary is refused.  ``ts`` is in the file's own clock.
    """
    span = year_in_name(p)
    if span is None:
        return
    t = pd.DatetimeIndex(ts)
    first, last = span
    outside = (t.year < first) | (t.year > last)
    what = f"{first}" if first == last else f"{first}-{last}"
    if outside.any():
        i = int(np.argmax(outside))
        raise DataError(f"timestamp {t[i]} lies outside {what}, the year(s) in the file name", file=p, row=i + 1,
                        field=field, accepted=f"timestamps in {what}, or a file name without a year")
    if first == last:
        start, end = pd.Timestamp(f"{first}-01-01 00:00"), pd.Timestamp(f"{first}-12-31 23:00")
        lo, hi = t[0].tz_localize(None), t[-1].tz_localize(None)
        if lo != start or hi != end:
            raise DataError(f"covers {lo} to {hi}, not the whole year {first} of its name (cut short?)", file=p,
                            field=field, accepted=f"hourly rows from {start} to {end}, or a file name without a "
                                                  f"year")


def require_columns(df: pd.DataFrame, required: Sequence[str], p: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"missing column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))})",
            file=p,
            accepted="files with columns " + ", ".join(required),
        )


def numeric_column(
    df: pd.DataFrame,
    col: str,
    p: Path,
    *,
    allow_missing: bool = False,
    allow_negative: bool = True,
    positive: bool = False,
    row_offset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Parse a text column to float64.

    Returns ``(values, missing_mask)``; missing cells (empty, ``nan``, ``NA``...)
    are NaN in ``values``. Raises DataError at the first row that is
    unparsable, infinite, larger in magnitude than :data:`MAX_MAGNITUDE` (an
    overflow waiting to happen), missing (unless ``allow_missing``), negative
    (unless ``allow_negative``) or not > 0 (if ``positive``). ``row_offset`` is added to
    the 0-based position to give the 1-based data row (default: position + 1).
    """
    raw = df[col].astype(str).str.strip()
    missing = raw.isin(MISSING_TOKENS).to_numpy()
    vals = pd.to_numeric(raw.where(~missing, None), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(vals) & ~missing
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"cannot parse {raw.iloc[i]!r} as a number", file=p, row=i + 1 + row_offset, field=col,
            accepted="decimal numbers",
        )
    inf = np.isinf(vals)
    if inf.any():
        i = int(np.argmax(inf))
        raise DataError(
            f"non-finite value {raw.iloc[i]!r}", file=p, row=i + 1 + row_offset, field=col,
            accepted="finite numbers",
        )
    huge = np.abs(vals) > MAX_MAGNITUDE
    if huge.any():
        i = int(np.argmax(huge))
        raise DataError(
            f"value {raw.iloc[i]!r} is too large (it would overflow in later arithmetic)", file=p,
            row=i + 1 + row_offset, field=col, accepted=f"finite numbers of magnitude <= {MAX_MAGNITUDE:g}",
        )
    if missing.any() and not allow_missing:
        i = int(np.argmax(missing))
        raise DataError(
            f"missing value ({raw.iloc[i]!r})", file=p, row=i + 1 + row_offset, field=col,
            accepted="a finite number in every row",
        )
    if positive:
        nonpos = ~missing & (vals <= 0)
        if nonpos.any():
            i = int(np.argmax(nonpos))
            raise DataError(
                f"non-positive value {vals[i]!r}", file=p, row=i + 1 + row_offset, field=col,
                accepted="values > 0",
            )
    elif not allow_negative:
        neg = ~missing & (vals < 0)
        if neg.any():
            i = int(np.argmax(neg))
            raise DataError(
                f"negative value {vals[i]!r}", file=p, row=i + 1 + row_offset, field=col,
                accepted="values >= 0",
            )
    return vals, missing


def parse_timestamps(
    df: pd.DataFrame,
    col: str,
    p: Path,
    *,
    fmt: str | None = None,
    utc: bool = False,
    row_offset: int = 0,
    accepted: str = "ISO timestamps such as 2022-01-01 00:00:00+00:00",
) -> pd.Series:
    """Parse a text column of timestamps; DataError at the first unparsable row."""
    raw = df[col].astype(str).str.strip()
    try:
        if fmt is not None:
            ts = pd.to_datetime(raw, format=fmt, errors="coerce", utc=utc)
        else:
            ts = pd.to_datetime(raw, errors="coerce", utc=utc, format="mixed")
    except (ValueError, TypeError) as e:  # e.g. mixed tz-aware / naive entries
        raise DataError(f"timestamps cannot be parsed ({e})", file=p, field=col, accepted=accepted) from e
    bad = ts.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"cannot parse {raw.iloc[i]!r} as a timestamp", file=p, row=i + 1 + row_offset,
            field=col, accepted=accepted,
        )
    return ts


def check_strictly_increasing(ts: pd.Series | pd.DatetimeIndex, p: Path, col: str, *, row_offset: int = 0) -> None:
    """DataError naming the first duplicated or out-of-order timestamp."""
    v = pd.DatetimeIndex(ts).asi8
    if len(v) < 2:
        return
    d = np.diff(v)
    if (d <= 0).any():
        i = int(np.argmax(d <= 0)) + 1
        t = pd.DatetimeIndex(ts)
        if d[i - 1] == 0:
            msg = f"duplicated timestamp {t[i]} (same as row {i + row_offset})"
        else:
            msg = f"timestamp {t[i]} is earlier than the previous row's {t[i - 1]} (out of order)"
        raise DataError(msg, file=p, row=i + 1 + row_offset, field=col, accepted="strictly increasing timestamps")
