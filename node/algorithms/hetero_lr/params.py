"""Parameters of the hetero-lr protocol: validation and defaults.

Every party validates the same params JSON; anything wrong is a `ProtocolError` whose
message names the offending key. What needs the participants or the data (the `features`
keys must be participants, the columns must exist, batches must be larger than every
party's feature count) is checked when the protocol is built or after the setup round.
"""

from __future__ import annotations

from typing import Any

from pcn.algorithms.base import ProtocolError, checked_float, checked_int, is_finite_number

KEY_BITS = (2048, 3072)  # Paillier moduli of at least 112-bit security (NIST SP 800-57)
# Smaller sizes a test may monkeypatch in for speed (e.g. (1024,)); always empty in a node.
TEST_ONLY_KEY_BITS: tuple[int, ...] = ()
MAX_EPOCHS = 1000
MAX_BATCH = 1 << 24
MIN_BATCH = 16
MAX_LEARNING_RATE = 100.0
MAX_L2 = 1e6
MAX_FEATURES = 10_000
MAX_CLASS_WEIGHT = 1e6
MAX_SEED = (1 << 64) - 1

DEFAULTS: dict[str, Any] = {
    "features": {},
    "learning_rate": 0.15,
    "l2": 0.01,
    "batch_size": 256,
    "epochs": 10,
    "tol": 1e-4,
    "class_weight": None,
    "standardize": True,
    "key_bits": 2048,
    "seed_split": None,
}
KEYS = frozenset({"label_column", *DEFAULTS})


def _fail(message: str) -> ProtocolError:
    return ProtocolError(f"invalid hetero-lr params: {message}")


def _float(params: dict[str, Any], key: str, lo: float, hi: float, *, open_lo: bool) -> float:
    return checked_float(params.get(key, DEFAULTS[key]), key, lo, hi, _fail, open_lo=open_lo)


def _int(params: dict[str, Any], key: str, lo: int, hi: int) -> int:
    return checked_int(params.get(key, DEFAULTS[key]), key, lo, hi, _fail)


def _column(v: object, what: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _fail(f"{what} must be a non-empty column name, got {v!r}")
    return v


def _features(v: object, label: str) -> dict[str, list[str]]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _fail("'features' must be an object {participant address: [column, ...]}")
    out: dict[str, list[str]] = {}
    for who, cols in v.items():
        if not isinstance(who, str) or not who:
            raise _fail(f"'features' key {who!r} is not a participant address")
        key = who.lower()
        if key in out:
            raise _fail(f"'features' names {who!r} twice")
        if not isinstance(cols, list):
            raise _fail(f"'features.{who}' must be a list of column names")
        names = [_column(c, f"'features.{who}' entry") for c in cols]
        if len(set(names)) != len(names):
            raise _fail(f"'features.{who}' has duplicate columns")
        if label in names:
            raise _fail(f"'features.{who}' must not contain the label column {label!r}")
        if len(names) > MAX_FEATURES:
            raise _fail(f"'features.{who}' has more than {MAX_FEATURES} columns")
        out[key] = names
    return out


def _class_weight(v: object) -> str | dict[str, float] | None:
    if v is None or v == "balanced":
        return v
    if not isinstance(v, dict) or set(v) != {"0", "1"}:
        raise _fail(f'\'class_weight\' must be null, "balanced" or {{"0": w0, "1": w1}}, got {v!r}')
    out: dict[str, float] = {}
    for k in ("0", "1"):
        w = v[k]
        if not is_finite_number(w) or not 0 < float(w) <= MAX_CLASS_WEIGHT:
            raise _fail(f"'class_weight.{k}' must be a number in (0, {MAX_CLASS_WEIGHT:g}], got {w!r}")
        out[k] = float(w)
    return out


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Check `params` and return them normalised, with every default filled in."""
    if not isinstance(params, dict):
        raise _fail(f"params must be a JSON object, got {type(params).__name__}")
    unknown = set(params) - KEYS
    if unknown:
        raise _fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(KEYS)}")
    if "label_column" not in params:
        raise _fail("'label_column' (the guest's 0/1 label column) is required")
    label = _column(params["label_column"], "'label_column'")
    batch = params.get("batch_size", DEFAULTS["batch_size"])
    if isinstance(batch, bool) or not isinstance(batch, int) or not (batch == -1 or MIN_BATCH <= batch <= MAX_BATCH):
        raise _fail(f"'batch_size' must be -1 (full batch) or an integer in [{MIN_BATCH}, {MAX_BATCH}], got {batch!r}")
    standardize = params.get("standardize", DEFAULTS["standardize"])
    if not isinstance(standardize, bool):
        raise _fail(f"'standardize' must be true or false, got {standardize!r}")
    key_bits = params.get("key_bits", DEFAULTS["key_bits"])
    if isinstance(key_bits, bool) or key_bits not in KEY_BITS + TEST_ONLY_KEY_BITS:
        raise _fail(
            f"'key_bits' must be one of {list(KEY_BITS)} (smaller Paillier keys are below 112-bit security), "
            f"got {key_bits!r}"
        )
    seed_split = params.get("seed_split")
    if seed_split is not None and (isinstance(seed_split, bool) or not isinstance(seed_split, int)):
        raise _fail(f"'seed_split' must be null or an integer, got {seed_split!r}")
    if seed_split is not None and not 0 <= seed_split <= MAX_SEED:
        raise _fail(f"'seed_split' must be between 0 and {MAX_SEED}, got {seed_split}")
    return {
        "label_column": label,
        "features": _features(params.get("features"), label),
        "learning_rate": _float(params, "learning_rate", 0.0, MAX_LEARNING_RATE, open_lo=True),
        "l2": _float(params, "l2", 0.0, MAX_L2, open_lo=False),
        "batch_size": batch,
        "epochs": _int(params, "epochs", 1, MAX_EPOCHS),
        "tol": _float(params, "tol", 0.0, 1e6, open_lo=False),
        "class_weight": _class_weight(params.get("class_weight")),
        "standardize": standardize,
        "key_bits": key_bits,
        "seed_split": seed_split,
    }
