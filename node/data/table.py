"""A dataset as the node hands it to a protocol: named columns of canonical text cells.

Readers (CSV, Parquet) produce it; protocols consume it and parse the columns they need
(`numeric` for statistics and modelling, `column` for IDs and keys). Cells are the
canonical text the fingerprint was computed over, so what a protocol reads is exactly
what the chain committed to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pcn.data.errors import DataError


class Table:
    def __init__(self, columns: Mapping[str, Sequence[str | None]], source: str = "<memory>") -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise DataError(f"columns have different lengths {sorted(lengths)}", path=source)
        self._columns = {name: list(cells) for name, cells in columns.items()}
        self.source = source
        self.num_rows = lengths.pop() if lengths else 0

    @property
    def names(self) -> list[str]:
        return list(self._columns)

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def column(self, name: str) -> list[str | None]:
        try:
            return self._columns[name]
        except KeyError:
            raise DataError(f"no column {name!r}; columns are {self.names}", path=self.source) from None

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
