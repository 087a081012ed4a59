"""Parameters of the FedAvg protocol: validation and defaults.

Every party validates the same params JSON and derives the same model layout and vector
layout from it, so masked vectors line up entry by entry. Anything wrong is a
`ProtocolError` whose message names the offending key. The threshold default depends on
the number of parties, which `validate_params` does not know: it is kept as null there and
resolved by `resolve_threshold` when the protocol is built.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from pcn.algorithms.base import ProtocolError, checked_float, checked_int, is_finite_number

MODELS = ("logreg", "mlp")
ACTIVATIONS = ("relu", "tanh")
WEIGHTINGS = ("samples", "uniform")
PHASES = ("update", "unmask")

MAX_FEATURES = 10_000
MAX_HIDDEN = 4096
MAX_PARAMETERS = 2_000_000  # model parameters (8 bytes each on the wire, per party and round)
MAX_ROUNDS = 10_000
MAX_EPOCHS = 1_000
MAX_BATCH = 1 << 24
MAX_LEARNING_RATE = 100.0
MAX_SEED = (1 << 64) - 1

_KEYS = {
    "label_column",
    "features",
    "model",
    "hidden",
    "activation",
    "rounds",
    "local_epochs",
    "learning_rate",
    "batch_size",
    "l2",
    "weighting",
    "standardize",
    "dropout_tolerance",
    "threshold",
    "simulate_dropout",
    "seed",
}


def _fail(message: str) -> ProtocolError:
    return ProtocolError(f"invalid fedavg params: {message}")


def _int(params: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    return checked_int(params.get(key, default), key, lo, hi, _fail)


def _float(params: dict[str, Any], key: str, default: float, lo: float, hi: float, *, open_lo: bool) -> float:
    return checked_float(params.get(key, default), key, lo, hi, _fail, open_lo=open_lo)


def _choice(params: dict[str, Any], key: str, options: tuple[str, ...]) -> str:
    v = params.get(key, options[0])
    if v not in options:
        raise _fail(f"{key!r} must be one of {list(options)}, got {v!r}")
    return str(v)


def _name(v: object, what: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _fail(f"{what} must be a non-empty column name, got {v!r}")
    return v


def _standardize(v: object, num_features: int) -> dict[str, list[float]] | None:
    if v is None:
        return None
    if not isinstance(v, dict) or set(v) != {"mean", "std"}:
        raise _fail("'standardize' must be null or an object with exactly the keys 'mean' and 'std'")
    out: dict[str, list[float]] = {}
    for key in ("mean", "std"):
        values = v[key]
        if not isinstance(values, list) or len(values) != num_features:
            raise _fail(f"'standardize.{key}' must be a list of {num_features} numbers, one per feature")
        if not all(is_finite_number(x) for x in values):
            raise _fail(f"'standardize.{key}' must hold finite numbers only")
        out[key] = [float(x) for x in values]
    if any(s <= 0 for s in out["std"]):
        raise _fail("'standardize.std' entries must be > 0")
    return out


def _dropouts(v: object, rounds: int) -> dict[str, dict[str, Any]]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _fail("'simulate_dropout' must be an object {party address: round or {round, phase}}")
    out: dict[str, dict[str, Any]] = {}
    for who, when in v.items():
        if not isinstance(who, str) or not who:
            raise _fail(f"'simulate_dropout' key {who!r} is not a party address")
        if isinstance(when, dict):
            if set(when) - {"round", "phase"} or "round" not in when:
                raise _fail(f"'simulate_dropout.{who}' must be a round or an object with 'round' and 'phase'")
            rnd, phase = when["round"], when.get("phase", "update")
        else:
            rnd, phase = when, "update"
        if isinstance(rnd, bool) or not isinstance(rnd, int) or not 1 <= rnd <= rounds:
            raise _fail(f"'simulate_dropout.{who}' round must be an integer between 1 and rounds={rounds}, got {rnd!r}")
        if phase not in PHASES:
            raise _fail(f"'simulate_dropout.{who}' phase must be one of {list(PHASES)}, got {phase!r}")
        key = who.lower()
        if key in out:
            raise _fail(f"'simulate_dropout' names {who!r} twice")
        out[key] = {"round": rnd, "phase": phase}
    return out


def num_parameters(num_features: int, hidden: list[int]) -> int:
    sizes = [num_features, *hidden, 1]
    return sum(a * b + b for a, b in pairwise(sizes))


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """The params normalised (defaults filled in); ProtocolError on anything wrong."""
    if not isinstance(params, dict):
        raise _fail("params must be a JSON object")
    unknown = set(params) - _KEYS
    if unknown:
        raise _fail(f"unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    if "label_column" not in params:
        raise _fail("'label_column' is required")
    label = _name(params["label_column"], "'label_column'")
    features = params.get("features")
    if not isinstance(features, list) or not features:
        raise _fail("'features' must be a non-empty list of column names")
    if len(features) > MAX_FEATURES:
        raise _fail(f"'features' has {len(features)} columns; at most {MAX_FEATURES}")
    features = [_name(f, "every entry of 'features'") for f in features]
    if len(set(features)) != len(features):
        raise _fail("'features' names a column twice")
    if label in features:
        raise _fail(f"the label column {label!r} cannot also be a feature")

    model = _choice(params, "model", MODELS)
    if model == "logreg":
        # [] and null are what normalisation writes, so validated params validate again
        if params.get("hidden", []) != [] or params.get("activation") is not None:
            raise _fail("'hidden' and 'activation' are only for model 'mlp'")
        hidden: list[int] = []
        activation = None
    else:
        hidden = params.get("hidden", [16])
        if not isinstance(hidden, list) or not 1 <= len(hidden) <= 2:
            raise _fail("'hidden' must be a list of one or two layer widths")
        if any(isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_HIDDEN for h in hidden):
            raise _fail(f"'hidden' layer widths must be integers between 1 and {MAX_HIDDEN}")
        hidden = list(hidden)
        activation = _choice(params, "activation", ACTIVATIONS)
    if num_parameters(len(features), hidden) > MAX_PARAMETERS:
        raise _fail(f"the model has more than {MAX_PARAMETERS} parameters")

    rounds = _int(params, "rounds", 10, 1, MAX_ROUNDS)
    tolerance = params.get("dropout_tolerance", True)
    if not isinstance(tolerance, bool):
        raise _fail(f"'dropout_tolerance' must be true or false, got {tolerance!r}")
    threshold = params.get("threshold")
    if threshold is not None:
        if not tolerance:
            raise _fail("'threshold' is only meaningful with dropout_tolerance true")
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 2:
            raise _fail(f"'threshold' must be an integer >= 2, got {threshold!r}")
    seed = _int(params, "seed", 0, 0, MAX_SEED)
    return {
        "label_column": label,
        "features": features,
        "model": model,
        "hidden": hidden,
        "activation": activation,
        "rounds": rounds,
        "local_epochs": _int(params, "local_epochs", 1, 1, MAX_EPOCHS),
        "learning_rate": _float(params, "learning_rate", 0.1, 0.0, MAX_LEARNING_RATE, open_lo=True),
        "batch_size": _int(params, "batch_size", 32, 1, MAX_BATCH),
        "l2": _float(params, "l2", 0.0, 0.0, 1e6, open_lo=False),
        "weighting": _choice(params, "weighting", WEIGHTINGS),
        "standardize": _standardize(params.get("standardize"), len(features)),
        "dropout_tolerance": tolerance,
        "threshold": threshold,
        "simulate_dropout": _dropouts(params.get("simulate_dropout"), rounds),
        "seed": seed,
    }


def default_threshold(num_parties: int) -> int:
    """A strict majority: floor(N/2) + 1 (2 of 3, 3 of 4, 3 of 5, 4 of 7)."""
    return num_parties // 2 + 1


def resolve_threshold(params: dict[str, Any], num_parties: int) -> int | None:
    """The Shamir threshold t for N parties (None without dropout tolerance): 2 <= t <= N - 1."""
    if not params["dropout_tolerance"]:
        return None
    t = params["threshold"]
    if t is None:
        return default_threshold(num_parties)
    if not 2 <= t <= num_parties - 1:
        raise _fail(f"'threshold' must be between 2 and N - 1 = {num_parties - 1} for {num_parties} parties, got {t}")
    return int(t)
