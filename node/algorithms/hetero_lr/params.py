"""Parameters of the hetero-lr protocol: validation and defaults.

Every party validates the same params JSON; anything wrong is a `ProtocolError` whose
message names the offending key. What needs the participants or the data (the `features`
keys must be participants, the columns must exist, batches must be larger than every
party's feature count) is checked when the protocol is built or after the setup round.
"""

from __future__ import annotations

from typing import Any

from pcn.algorithms.base import ProtocolError, checked_float, checked_int, is_finite_number
from pcn.algorithms.vertical import feature_columns, paillier_key_bits, training_label

KEY_BITS = (2048, 3072)  # Paillier moduli of at least 112-bit security (NIST SP 800-57)
# Smaller sizes a test may monkeypatch in for speed (e.g. (1024,)); always empty in a node.
TEST_ONLY_KEY_BITS: tuple[int, ...] = ()
MAX_EPOCHS = 1000
MAX_BATCH = 1 << 24
MIN_BATCH = 16
MAX_LEARNING_RATE = 100.0
MAX_L2 = 1e6
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
    label = training_label(params, KEYS, "the guest's 0/1 label column", _fail)
    batch = params.get("batch_size", DEFAULTS["batch_size"])
    if isinstance(batch, bool) or not isinstance(batch, int) or not (batch == -1 or MIN_BATCH <= batch <= MAX_BATCH):
        raise _fail(f"'batch_size' must be -1 (full batch) or an integer in [{MIN_BATCH}, {MAX_BATCH}], got {batch!r}")
    standardize = params.get("standardize", DEFAULTS["standardize"])
    if not isinstance(standardize, bool):
        raise _fail(f"'standardize' must be true or false, got {standardize!r}")
    key_bits = paillier_key_bits(
        params.get("key_bits", DEFAULTS["key_bits"]), KEY_BITS + TEST_ONLY_KEY_BITS, KEY_BITS, _fail
    )
    seed_split = params.get("seed_split")
    if seed_split is not None and (isinstance(seed_split, bool) or not isinstance(seed_split, int)):
        raise _fail(f"'seed_split' must be null or an integer, got {seed_split!r}")
    if seed_split is not None and not 0 <= seed_split <= MAX_SEED:
        raise _fail(f"'seed_split' must be between 0 and {MAX_SEED}, got {seed_split}")
    return {
        "label_column": label,
        "features": feature_columns(params.get("features"), label, _fail),
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
