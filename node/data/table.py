"""A dataset as the node hands it to a protocol: named columns of canonical text cells.

Readers (CSV, Parquet) produce it; protocols consume it and parse the columns they need
(`numeric` for statistics and modelling, `column` for IDs and keys). Cells are the
canonical text the fingerprint was computed over, so what a protocol reads is exactly
what the chain committed to.

A column is held either as a Python list of cells or as an Arrow string array (what the
readers produce: a million-row column costs no Python objects until a protocol asks for
it). `column` turns an Arrow column into a list on first use and keeps that list; the
fingerprint reads the Arrow array directly (`arrow_column`). Arrow columns are brought to
Unicode NFC when the table is built, so both views always hold the same canonical cells;
list columns are kept as given (the fingerprint normalises them as it encodes them).
Treat the lists `column` returns as read-only.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from pcn.data.errors import DataError

if TYPE_CHECKING:  # pyarrow is imported when an Arrow column is met, not to import this module
    import pyarrow as pa

_normalize = unicodedata.normalize


def _is_arrow(cells: object) -> bool:
    if not type(cells).__module__.startswith("pyarrow"):
        return False
    import pyarrow as pa

    return isinstance(cells, pa.Array | pa.ChunkedArray)


# A column's cells as a list: what `nfc_cells` takes and gives back.
Cells = TypeVar("Cells", list[str], list[str | None])


def nfc_cells(cells: Cells) -> Cells:
    """`cells` with every value in Unicode NFC (`cells` itself when nothing changes).

    "\\n" is a stable code point (it neither composes nor reorders with its neighbours), so
    a column joined with "\\n" is NFC exactly when every cell is: one C-level check decides
    for the whole column."""
    if None in cells:
        values = [c for c in cells if c is not None]
        joined = "\n".join(values)
        if joined.isascii() or unicodedata.is_normalized("NFC", joined):
            return cells
        return [None if c is None else (c if c.isascii() else _normalize("NFC", c)) for c in cells]
    strings = cast("list[str]", cells)  # no None, checked above
    joined = "\n".join(strings)
    if joined.isascii() or unicodedata.is_normalized("NFC", joined):
        return cells
    return [c if c.isascii() else _normalize("NFC", c) for c in strings]


def canonical_arrow(cells: Any) -> tuple[pa.ChunkedArray, list[str | None] | None]:
    """An Arrow string column in NFC, and its cells as a list when that list had to be built
    to normalise it (None for an all-ASCII column, which is NFC as it stands)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = cells if isinstance(cells, pa.ChunkedArray) else pa.chunked_array([cells], type=cells.type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        is_view = getattr(pa.types, "is_string_view", None)
        if is_view is None or not is_view(col.type):
            raise TypeError(f"an Arrow column of a Table must hold strings, not {col.type}")
        col = col.cast(pa.large_string())
    if len(col) == 0 or col.null_count == len(col) or pc.all(pc.string_is_ascii(col)).as_py():
        return col, None
    values: list[str | None] = col.to_pylist()
    normalised = nfc_cells(values)
    if normalised is not values:
        col = pa.chunked_array([pa.array(normalised, type=pa.large_string())])
    return col, normalised


class Table:
    def __init__(
        self, columns: Mapping[str, Sequence[str | None] | pa.Array | pa.ChunkedArray], source: str = "<memory>"
    ) -> None:
        """`columns` maps each name to its cells: a sequence of str / None (kept as given), or
        an Arrow string array (brought to NFC, see the module docstring)."""
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise DataError(f"columns have different lengths {sorted(lengths)}", path=source)
        self._lists: dict[str, list[str | None] | None] = {}
        self._arrow: dict[str, pa.ChunkedArray] = {}
        for name, cells in columns.items():
            if _is_arrow(cells):
                self._arrow[name], self._lists[name] = canonical_arrow(cells)
            else:
                self._lists[name] = list(cells)
        self.source = source
        self.num_rows = lengths.pop() if lengths else 0

    @property
    def names(self) -> list[str]:
        return list(self._lists)

    def __contains__(self, name: object) -> bool:
        return name in self._lists

    def column(self, name: str) -> list[str | None]:
        try:
            cells = self._lists[name]
        except KeyError:
            raise DataError(f"no column {name!r}; columns are {self.names}", path=self.source) from None
        if cells is None:
            cells = self._arrow[name].to_pylist()
            self._lists[name] = cells
        return cells

    def arrow_column(self, name: str) -> pa.ChunkedArray | None:
        """The column as an Arrow string array of canonical (NFC) cells when the table holds
        it that way, else None (the column is only a list)."""
        if name not in self._lists:
            raise DataError(f"no column {name!r}; columns are {self.names}", path=self.source)
        return self._arrow.get(name)

    def cell(self, name: str, index: int) -> str | None:
        """One cell, without turning an Arrow column into a list."""
        cells = self._lists.get(name)
        if cells is not None:
            return cells[index]
        if name not in self._lists:
            raise DataError(f"no column {name!r}; columns are {self.names}", path=self.source)
        value: str | None = self._arrow[name][index].as_py()
        return value

    def numeric(self, name: str, *, allow_null: bool = False) -> np.ndarray:
        """The column as float64; a cell that is not a number is a DataError naming its row.
        With `allow_null`, null and empty cells become NaN."""
        cells = self.column(name)
        try:  # fast path: every cell parses
            out = np.asarray(cells, dtype=np.float64)
            if out.shape == (len(cells),):
                return out
        except (ValueError, TypeError):
            pass
        out = np.empty(len(cells), dtype=np.float64)
        for i, cell in enumerate(cells):
            if cell is None or cell.strip() == "":
                if not allow_null:
                    raise DataError("empty cell where a number is needed", path=self.source, row=i + 1, column=name)
                out[i] = np.nan
                continue
            try:
                out[i] = float(cell)
            except ValueError:
                raise DataError(f"{cell!r} is not a number", path=self.source, row=i + 1, column=name) from None
        return out
