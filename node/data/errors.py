"""The one exception type of `pcn.data`."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A dataset file cannot be read, or does not have the shape the caller asked for.

    The message always names the file and, where there is one, the line (CSV), row or
    column at fault, in words a data team can act on. `path`, `line`, `row` and `column`
    carry the same context for programs.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(": ".join([*where, message]))
        self.path = None if path is None else str(path)
        self.line = line
        self.row = row
        self.column = column
        self.reason = message
