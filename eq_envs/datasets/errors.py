"""The one exception every loader in :mod:`eq_envs.datasets` raises for bad input."""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike

__all__ = ["DataError"]


def _fmt_accepted(accepted: object) -> str:
    if isinstance(accepted, str):
        return accepted
    if isinstance(accepted, Iterable):
        return ", ".join(str(a) for a in accepted)
    return str(accepted)


class DataError(ValueError):
    """A data file (bundled or user supplied) could not be used as it is.

    ``str(err)`` reads ``"<file>, row <row>, field '<field>': <message>; accepted: <accepted>"``
    with the missing parts left out, for example::

        eia_fuelmix_2022_CISO.csv, row 12, field 'NG': negative generation -3.0; accepted: values >= 0

    ``row`` is the 1-based number of the *data* row, counting the first row after
    the header as row 1, i.e. the row as a user sees it in a spreadsheet below the
    header line. In a CSV file with one header line the text line is ``row + 1``;
    in an EPW file (8 header lines) it is ``row + 8`` (EPW messages say the line too).

    The parts are kept as attributes (``file``, ``row``, ``field``, ``accepted``,
    ``message``) so callers can inspect them without parsing the text.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike[str] | None = None,
        row: int | None = None,
        field: str | None = None,
        accepted: object = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.row = None if row is None else int(row)
        self.field = field
        self.accepted = accepted
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        text = ", ".join(where)
        text = f"{text}: {self.message}" if text else self.message
        if self.accepted is not None:
            text += f"; accepted: {_fmt_accepted(self.accepted)}"
        return text

    def __str__(self) -> str:  # keep the rendered form even if args are changed
        return self._render()
