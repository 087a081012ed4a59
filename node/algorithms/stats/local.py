"""One party's exact local aggregates, as signed integers in the shared vector layout.

Values are parsed as float64 (`Table.numeric`) and rounded half-to-even to the fixed-point
grid: x_int = rint(x * 10^decimals). Sums and sums of squares are exact Python integers
(no int64 overflow, whatever the row count). Histogram binning compares fixed-point
integers, so a value equal to an edge always lands in the bin that starts at that edge.
"""

from __future__ import annotations

from operator import mul
from typing import Any

import numpy as np

from pcn.algorithms.stats.params import ALL_GROUP, MAX_FIXED, OTHER_GROUP, Layout, fixed
from pcn.data.errors import DataError
from pcn.data.table import Table


def group_names(params: dict[str, Any]) -> list[str]:
    """The public group names, in vector order."""
    return [*params["groups"], OTHER_GROUP] if params["group_by"] else [ALL_GROUP]


def _group_index(table: Table, params: dict[str, Any], num_groups: int) -> np.ndarray:
    if not params["group_by"]:
        return np.zeros(table.num_rows, dtype=np.int64)
    lookup = {name: i for i, name in enumerate(params["groups"])}
    other = num_groups - 1
    cells = table.column(params["group_by"])
    return np.fromiter((lookup.get(c, other) for c in cells), dtype=np.int64, count=len(cells))


def _values(table: Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(float values, missing mask); null and empty cells are missing, anything else must be finite."""
    values = table.numeric(column, allow_null=True)
    missing = np.isnan(values)
    if missing.any():
        cells = table.column(column)
        for i in np.flatnonzero(missing).tolist():
            cell = cells[i]
            if cell is not None and cell.strip() != "":
                raise DataError(f"{cell!r} is not a finite number", path=table.source, row=i + 1, column=column)
    infinite = np.isinf(values)
    if infinite.any():
        i = int(np.flatnonzero(infinite)[0])
        raise DataError(
            f"{table.column(column)[i]!r} is not a finite number", path=table.source, row=i + 1, column=column
        )
    return values, missing


def local_vector(table: Table, params: dict[str, Any], layout: Layout) -> list[int]:
    """The party's signed integer vector: per group [missing, count?, sum?, sumsq?, bins...]."""
    decimals = params["decimals"]
    scale = 10**decimals
    column = params["column"]
    num_groups = layout.num_groups
    values, missing = _values(table, column)
    group = _group_index(table, params, num_groups)

    present = ~missing
    scaled = values[present] * float(scale)
    if scaled.size and float(np.max(np.abs(scaled))) >= MAX_FIXED:
        raise DataError(
            f"a value in column {column!r} is too large for decimals={decimals} (|x| * 10^decimals must be < 2^62)",
            path=table.source,
            column=column,
        )
    x = np.rint(scaled).astype(np.int64)
    if params["dp"] is not None:
        lo, hi = (fixed(c, decimals) for c in params["dp"]["clip"])
        x = np.clip(x, lo, hi)
    g = group[present]

    missing_counts = np.bincount(group[missing], minlength=num_groups).tolist()
    counts = np.bincount(g, minlength=num_groups).tolist()
    sums = [0] * num_groups
    sumsqs = [0] * num_groups
    if "sum" in layout.components:
        if num_groups == 1:
            segments = [x]
        else:
            ordered = x[np.argsort(g, kind="stable")]
            segments = np.split(ordered, np.cumsum(counts)[:-1])
        for k, seg in enumerate(segments):
            ints = seg.tolist()  # Python ints: exact, no overflow
            sums[k] = sum(ints)
            if "sumsq" in layout.components:
                sumsqs[k] = sum(map(mul, ints, ints))
    hist: list[list[int]] = [[] for _ in range(num_groups)]
    if layout.num_bins:
        edges = np.array([fixed(e, decimals) for e in params["histogram"]["edges"]], dtype=np.int64)
        bins = np.searchsorted(edges, x, side="right")  # 0 = underflow, len(edges) = overflow
        flat = np.bincount(g * layout.num_bins + bins, minlength=num_groups * layout.num_bins)
        hist = flat.reshape(num_groups, layout.num_bins).tolist()

    vector: list[int] = []
    for k in range(num_groups):
        parts = {"missing": missing_counts[k] * scale, "count": counts[k] * scale, "sum": sums[k], "sumsq": sumsqs[k]}
        vector.extend(parts[c] for c in layout.components)
        vector.extend(h * scale for h in hist[k])
    return vector
