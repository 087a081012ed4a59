"""Parameters of the private-query protocol: validation and defaults.

    {"key_column"?: str | null,     holder's key column (default: its dataset's ID column)
     "query_column"?: str | null,   querier's key column (default: its dataset's ID column)
     "value_columns": [str, ...],   holder's columns the querier learns for matching keys
     "epoch"?: str,                 key epoch of the holder (default "default")
     "batch_size"?: int,            blinded keys per message, 1..65536 (default 4096)
     "max_keys"?: int | null}       the most keys the querier may look up (#13.6); the holder
                                    refuses a larger query, nodes refuse a value over a
                                    dataset's `maxKeys` rule (default null: no declared cap)

The normalised form has every key, so validating it again gives the same dict.
"""

from __future__ import annotations

from typing import Any

from pcn.algorithms.base import ProtocolError

DEFAULT_EPOCH = "default"
DEFAULT_BATCH = 4096
MAX_BATCH = 65_536
MAX_VALUE_COLUMNS = 1000
MAX_NAME = 256

_KEYS = {"key_column", "query_column", "value_columns", "epoch", "batch_size", "max_keys"}


def _fail(message: str) -> ProtocolError:
    return ProtocolError(f"invalid private-query params: {message}")


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise _fail(f"{what} must be a non-empty string of at most {MAX_NAME} characters, got {value!r}")
    return value


def validate_params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise _fail(f"params must be a JSON object, got {type(params).__name__}")
    unknown = set(params) - _KEYS
    if unknown:
        raise _fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    out: dict[str, Any] = {}
    for opt in ("key_column", "query_column"):
        value = params.get(opt)
        out[opt] = None if value is None else _name(value, f"'{opt}'")
    columns = params.get("value_columns")
    if not isinstance(columns, list) or not columns:
        raise _fail(f"'value_columns' must be a non-empty list of column names, got {columns!r}")
    if len(columns) > MAX_VALUE_COLUMNS:
        raise _fail(f"'value_columns' has {len(columns)} entries; at most {MAX_VALUE_COLUMNS}")
    out["value_columns"] = [_name(c, "every entry of 'value_columns'") for c in columns]
    if len(set(columns)) != len(columns):
        raise _fail(f"'value_columns' has duplicates: {columns!r}")
    out["epoch"] = _name(params.get("epoch", DEFAULT_EPOCH), "'epoch'")
    batch = params.get("batch_size", DEFAULT_BATCH)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise _fail(f"'batch_size' must be an integer from 1 to {MAX_BATCH}, got {batch!r}")
    out["batch_size"] = batch
    cap = params.get("max_keys")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 2**32 - 1):
        raise _fail(f"'max_keys' must be null or an integer from 1 to 2^32 - 1, got {cap!r}")
    out["max_keys"] = cap
    return out
