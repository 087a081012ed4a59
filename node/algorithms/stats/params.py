"""Parameters of the joint-statistics protocol: validation, defaults and the derived layout.

Every party validates the same params JSON and derives the same vector layout from it,
so the shares they exchange line up entry by entry. Anything wrong is a `ProtocolError`
whose message names the offending key.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from pcn.algorithms.base import ProtocolError, is_finite_number

STATISTICS = ("count", "sum", "mean", "variance", "histogram")
DEFAULT_STATISTICS = ("count", "sum", "mean", "variance")
MECHANISMS = ("laplace", "gaussian")
OTHER_GROUP = "__other__"
ALL_GROUP = "__all__"
RESERVED_GROUPS = (OTHER_GROUP, ALL_GROUP)

MAX_DECIMALS = 12
MAX_GROUPS = 10_000
MAX_EDGES = 10_001
MAX_VECTOR_ENTRIES = 1_000_000  # ring elements per party vector (32 bytes each on the wire)
MAX_FIXED = 2**62  # |value| * 10^decimals must stay below this (int64 with headroom)

_KEYS = {"column", "group_by", "groups", "statistics", "histogram", "decimals", "dp"}
_DP_KEYS = {"epsilon", "mechanism", "delta", "clip"}


def _fail(message: str) -> ProtocolError:
    return ProtocolError(f"invalid stats params: {message}")


def fixed(x: float, decimals: int) -> int:
    """round(x * 10^decimals), half to even, exactly as the data path does it (float64 product)."""
    return int(np.rint(float(x) * float(10**decimals)))


def _validate_dp(dp: object, decimals: int, noised: int) -> dict[str, Any] | None:
    if dp is None:
        return None
    if not isinstance(dp, dict):
        raise _fail(f"'dp' must be null or an object, got {type(dp).__name__}")
    unknown = set(dp) - _DP_KEYS
    if unknown:
        raise _fail(f"unknown key(s) in 'dp': {sorted(unknown)}; allowed: {sorted(_DP_KEYS)}")
    mechanism = dp.get("mechanism", "laplace")
    if mechanism not in MECHANISMS:
        raise _fail(f"'dp.mechanism' must be one of {list(MECHANISMS)}, got {mechanism!r}")
    epsilon = dp.get("epsilon")
    if not is_finite_number(epsilon) or epsilon <= 0:
        raise _fail(f"'dp.epsilon' must be a finite number > 0, got {epsilon!r}")
    delta = dp.get("delta")
    if mechanism == "gaussian":
        if not is_finite_number(delta) or not 0 < delta < 1:
            raise _fail(f"'dp.delta' must be a number in (0, 1) for the gaussian mechanism, got {delta!r}")
    elif delta is not None:
        raise _fail("'dp.delta' is only used by the gaussian mechanism; drop it or set it to null")
    clip = dp.get("clip")
    if not isinstance(clip, list | tuple) or len(clip) != 2 or not all(is_finite_number(c) for c in clip):
        raise _fail(f"'dp.clip' must be [lo, hi] with two finite numbers, got {clip!r}")
    lo, hi = float(clip[0]), float(clip[1])
    if abs(lo) * 10**decimals >= MAX_FIXED or abs(hi) * 10**decimals >= MAX_FIXED:
        raise _fail(f"'dp.clip' bounds are too large for decimals={decimals}")
    if not fixed(lo, decimals) < fixed(hi, decimals):
        raise _fail(f"'dp.clip' needs lo < hi at {decimals} decimals, got {clip!r}")
    if noised == 0:
        raise _fail("'dp' is set but no statistic is requested")
    out: dict[str, Any] = {"epsilon": float(epsilon), "mechanism": mechanism, "clip": [lo, hi]}
    out["delta"] = float(delta) if delta is not None else None  # a number exactly for the gaussian mechanism
    return out


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Check `params` and return them normalised, with every default filled in."""
    if not isinstance(params, dict):
        raise _fail(f"params must be a JSON object, got {type(params).__name__}")
    unknown = set(params) - _KEYS
    if unknown:
        raise _fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")

    column = params.get("column")
    if not isinstance(column, str) or not column:
        raise _fail("'column' (the numeric column to aggregate) is required and must be a non-empty string")

    group_by = params.get("group_by")
    groups = params.get("groups")
    if group_by is None:
        if groups is not None:
            raise _fail("'groups' is only allowed together with 'group_by'")
        group_list: list[str] = []
    else:
        if not isinstance(group_by, str) or not group_by:
            raise _fail("'group_by' must be null or a non-empty column name")
        if not isinstance(groups, list) or not groups:
            raise _fail("'groups' (the public list of categories) is required when 'group_by' is set")
        if not all(isinstance(g, str) for g in groups):
            raise _fail("'groups' must be a list of strings")
        if len(set(groups)) != len(groups):
            raise _fail("'groups' has duplicates")
        if any(g in RESERVED_GROUPS for g in groups):
            raise _fail(f"'groups' must not contain the reserved names {list(RESERVED_GROUPS)}")
        if len(groups) > MAX_GROUPS:
            raise _fail(f"at most {MAX_GROUPS} groups are supported, got {len(groups)}")
        group_list = list(groups)

    statistics = params.get("statistics")
    if statistics is None:
        stats_list = list(DEFAULT_STATISTICS)
    else:
        if not isinstance(statistics, list) or not statistics:
            raise _fail(f"'statistics' must be a non-empty list drawn from {list(STATISTICS)}")
        bad = [s for s in statistics if s not in STATISTICS]
        if bad:
            raise _fail(f"unknown statistic(s) {bad}; allowed: {list(STATISTICS)}")
        if len(set(statistics)) != len(statistics):
            raise _fail("'statistics' has duplicates")
        stats_list = [s for s in STATISTICS if s in statistics]  # canonical order

    decimals = params.get("decimals", 6)
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= MAX_DECIMALS:
        raise _fail(f"'decimals' must be an integer in [0, {MAX_DECIMALS}], got {decimals!r}")

    histogram = params.get("histogram")
    edges: list[float] | None = None
    if "histogram" in stats_list:
        if not isinstance(histogram, dict):
            raise _fail("'histogram': {\"edges\": [...]} is required when 'histogram' is in 'statistics'")
        if set(histogram) != {"edges"}:
            raise _fail(f"'histogram' must have exactly the key 'edges', got {sorted(histogram)}")
        raw = histogram["edges"]
        if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_EDGES or not all(is_finite_number(e) for e in raw):
            raise _fail(f"'histogram.edges' must be a list of 2 to {MAX_EDGES} finite numbers")
        if any(abs(float(e)) * 10**decimals >= MAX_FIXED for e in raw):
            raise _fail(f"'histogram.edges' are too large for decimals={decimals}")
        fixed_edges = [fixed(e, decimals) for e in raw]
        if any(a >= b for a, b in pairwise(fixed_edges)):
            raise _fail(f"'histogram.edges' must be strictly increasing at {decimals} decimals")
        edges = [float(e) for e in raw]
    elif histogram is not None:
        raise _fail("'histogram' is given but 'histogram' is not in 'statistics'; add it there")

    layout = Layout.build(len(group_list) + 1 if group_by else 1, stats_list, 0 if edges is None else len(edges))
    if layout.size > MAX_VECTOR_ENTRIES:
        raise _fail(f"too many groups x histogram bins ({layout.size} entries; at most {MAX_VECTOR_ENTRIES})")
    dp = _validate_dp(params.get("dp"), decimals, len(layout.noised_components))

    return {
        "column": column,
        "group_by": group_by,
        "groups": group_list if group_by else None,
        "statistics": stats_list,
        "histogram": None if edges is None else {"edges": edges},
        "decimals": decimals,
        "dp": dp,
    }


@dataclass(frozen=True)
class Layout:
    """Which components each group's vector holds, in order.

    Per group: missing, then count (for count/mean/variance), sum (for sum/mean/variance),
    sumsq (for variance), then the histogram bins [underflow, edges..., overflow]."""

    num_groups: int
    components: tuple[str, ...]  # per-group scalar components, in order
    num_bins: int  # 0 without histogram, else len(edges) + 1

    @staticmethod
    def build(num_groups: int, statistics: list[str], num_edges: int) -> Layout:
        wanted = set(statistics)
        comps = ["missing"]
        if wanted & {"count", "mean", "variance"}:
            comps.append("count")
        if wanted & {"sum", "mean", "variance"}:
            comps.append("sum")
        if "variance" in wanted:
            comps.append("sumsq")
        return Layout(num_groups, tuple(comps), num_edges + 1 if "histogram" in wanted else 0)

    @property
    def per_group(self) -> int:
        return len(self.components) + self.num_bins

    @property
    def size(self) -> int:
        return self.num_groups * self.per_group

    @property
    def noised_components(self) -> list[str]:
        """The statistics sharing the epsilon budget (the missing count has its own, see DP notes)."""
        return [c for c in self.components if c != "missing"] + (["histogram"] if self.num_bins else [])
