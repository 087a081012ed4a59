"""Parameters of the hetero-sbt protocol: validation and defaults.

Every party validates the same params JSON; anything wrong is a `ProtocolError` whose
message names the offending key. What needs the participants or the data (the `features`
keys must be participants, the columns must exist, enough training rows for
`min_samples_leaf`) is checked when the protocol is built or after the setup round.
"""

from __future__ import annotations

from typing import Any

from pcn.algorithms.base import ProtocolError, checked_float, checked_int
from pcn.algorithms.vertical import feature_columns, paillier_key_bits, training_label

KEY_BITS = (2048, 3072)  # Paillier moduli of at least 112-bit security (NIST SP 800-57)
# Smaller sizes a test may monkeypatch in for speed (e.g. (1024,)); always empty in a node.
TEST_ONLY_KEY_BITS: tuple[int, ...] = ()
OBJECTIVES = ("binary", "regression")
MAX_TREES = 1000
MAX_DEPTH = 12
MAX_BINS = 255
MAX_SEED = (1 << 64) - 1

DEFAULTS: dict[str, Any] = {
    "features": {},
    "objective": "binary",
    "trees": 10,
    "max_depth": 3,
    "learning_rate": 0.3,
    "l2": 0.1,
    "min_child_weight": 1e-3,
    "min_samples_leaf": 20,
    "min_gain": 0.0,
    "subsample": 1.0,
    "validation_fraction": 0.0,
    "early_stopping_rounds": 0,
    "max_bins": 32,
    "key_bits": 2048,
    "seed": 0,
}
KEYS = frozenset({"label_column", *DEFAULTS})


def _fail(message: str) -> ProtocolError:
    return ProtocolError(f"invalid hetero-sbt params: {message}")


def _float(params: dict[str, Any], key: str, lo: float, hi: float, *, open_lo: bool) -> float:
    return checked_float(params.get(key, DEFAULTS[key]), key, lo, hi, _fail, open_lo=open_lo)


def _int(params: dict[str, Any], key: str, lo: int, hi: int) -> int:
    return checked_int(params.get(key, DEFAULTS[key]), key, lo, hi, _fail)


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Check `params` and return them normalised, with every default filled in."""
    label = training_label(params, KEYS, "the guest's label column", _fail)
    objective = params.get("objective", DEFAULTS["objective"])
    if objective not in OBJECTIVES:
        raise _fail(f"'objective' must be one of {list(OBJECTIVES)}, got {objective!r}")
    key_bits = paillier_key_bits(
        params.get("key_bits", DEFAULTS["key_bits"]), KEY_BITS + TEST_ONLY_KEY_BITS, KEY_BITS, _fail
    )
    out = {
        "label_column": label,
        "features": feature_columns(params.get("features"), label, _fail),
        "objective": objective,
        "trees": _int(params, "trees", 1, MAX_TREES),
        "max_depth": _int(params, "max_depth", 1, MAX_DEPTH),
        "learning_rate": _float(params, "learning_rate", 0.0, 10.0, open_lo=True),
        "l2": _float(params, "l2", 0.0, 1e6, open_lo=False),
        "min_child_weight": _float(params, "min_child_weight", 0.0, 1e6, open_lo=False),
        "min_samples_leaf": _int(params, "min_samples_leaf", 1, 1 << 30),
        "min_gain": _float(params, "min_gain", 0.0, 1e12, open_lo=False),
        "subsample": _float(params, "subsample", 0.0, 1.0, open_lo=True),
        "validation_fraction": _float(params, "validation_fraction", 0.0, 0.5, open_lo=False),
        "early_stopping_rounds": _int(params, "early_stopping_rounds", 0, MAX_TREES),
        "max_bins": _int(params, "max_bins", 2, MAX_BINS),
        "key_bits": key_bits,
        "seed": _int(params, "seed", 0, MAX_SEED),
    }
    if out["early_stopping_rounds"] and not out["validation_fraction"]:
        raise _fail("'early_stopping_rounds' needs a validation split: set 'validation_fraction' > 0")
    return out
