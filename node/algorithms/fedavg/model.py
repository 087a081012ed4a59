"""The models FedAvg trains, in plain numpy, and their fixed-point encoding.

One code path covers both models: a feed-forward network with a sigmoid output and binary
cross-entropy loss. Logistic regression is the network without hidden layers; the MLP has
one or two hidden layers with ReLU or tanh. Parameters are held as one flat float64 vector
theta = W_1 | b_1 | W_2 | b_2 | ... (each W row-major, shape fan_in x fan_out), which is
what the server broadcasts and what the parties aggregate.

Training is mini-batch gradient descent: for every local epoch a permutation of the local
rows (a secret permutation from the party's seed, `Protocol.secret_permutation`), batches of `batch_size` in that
order, gradient of the mean BCE over the batch plus l2 * W (weights only, not biases).

Fixed point (what enters the secure sum, ring Z_{2^64}, numpy uint64 wraparound):
- model entries: round(theta * 2^24) * w_i, where w_i is the party's weight factor (its
  row count with weighting "samples", 1 with "uniform"); |theta| <= 2^10 is enforced, so
  an entry stays below 2^34 * w_i, and w_i <= 2^28 / N keeps the sum of N parties < 2^62;
- the weight factor w_i itself;
- metrics of the global model on the party's rows: BCE sum (each row's loss capped at
  2^10) * 2^16, correct predictions, row count, and two histograms (positives, negatives)
  of the logit clipped to [-16, 16] in 1024 equal bins, from which the server computes an
  AUC (ties inside a bin count one half).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from pcn.algorithms.base import ProtocolError
from pcn.data.errors import DataError

FRAC_BITS = 24
SCALE = float(1 << FRAC_BITS)
MAX_ABS_WEIGHT = float(1 << 10)  # |theta| bound a party enforces before encoding
MAX_ENTRY_PER_WEIGHT = 1 << (FRAC_BITS + 10)  # |round(theta * 2^24)| <= 2^34
SUM_BOUND = 1 << 62  # no aggregated entry may reach this in absolute value
LOSS_FRAC_BITS = 16
MAX_ROW_LOSS = float(1 << 10)
AUC_BINS = 1024
LOGIT_CLIP = 16.0
METRIC_SIZE = 3 + 2 * AUC_BINS
EVAL_CHUNK = (
    1 << 14
)  # rows per forward pass when evaluating  # loss, correct, count, positives histogram, negatives histogram


# -- layout -----------------------------------------------------------------------------


def layer_shapes(num_features: int, hidden: Sequence[int]) -> list[tuple[int, int]]:
    sizes = [num_features, *hidden, 1]
    return list(pairwise(sizes))


def num_parameters(shapes: Sequence[tuple[int, int]]) -> int:
    return sum(a * b + b for a, b in shapes)


def unflatten(theta: np.ndarray, shapes: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) per layer, as views into theta."""
    out = []
    pos = 0
    for fan_in, fan_out in shapes:
        w = theta[pos : pos + fan_in * fan_out].reshape(fan_in, fan_out)
        pos += fan_in * fan_out
        b = theta[pos : pos + fan_out]
        pos += fan_out
        out.append((w, b))
    return out


def initial_model(params: dict[str, Any]) -> np.ndarray:
    """theta_0, a public function of the params: zeros for logistic regression; for the MLP
    He (ReLU) or Xavier (tanh) normal weights from the params' `seed`, zero biases."""
    shapes = layer_shapes(len(params["features"]), params["hidden"])
    theta = np.zeros(num_parameters(shapes), dtype=np.float64)
    if params["model"] == "logreg":
        return theta
    rng = np.random.default_rng([0xFEDA76, params["seed"]])
    gain = 2.0 if params["activation"] == "relu" else 1.0
    for k, (w, _b) in enumerate(unflatten(theta, shapes)):
        fan_in = w.shape[0]
        std = np.sqrt((gain if k < len(shapes) - 1 else 1.0) / fan_in)
        w[...] = rng.standard_normal(w.shape) * std
    return theta


def model_document(theta: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
    """The trained model as JSON: enough to score new rows with `predict_logits`."""
    shapes = layer_shapes(len(params["features"]), params["hidden"])
    return {
        "type": params["model"],
        "features": params["features"],
        "label_column": params["label_column"],
        "activation": params["activation"],
        "output": "sigmoid",
        "standardize": params["standardize"],
        "layers": [{"weights": w.tolist(), "bias": b.tolist()} for w, b in unflatten(theta, shapes)],
    }


def theta_from_document(doc: dict[str, Any]) -> np.ndarray:
    parts = []
    for layer in doc["layers"]:
        parts.append(np.asarray(layer["weights"], dtype=np.float64).ravel())
        parts.append(np.asarray(layer["bias"], dtype=np.float64).ravel())
    return np.concatenate(parts)


def predict_proba(doc: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """P(label = 1) for raw feature rows (the model's standardisation is applied here)."""
    x = np.asarray(x, dtype=np.float64)
    if doc["standardize"] is not None:
        x = (x - np.asarray(doc["standardize"]["mean"])) / np.asarray(doc["standardize"]["std"])
    params = {"features": doc["features"], "hidden": [len(layer["bias"]) for layer in doc["layers"][:-1]]}
    shapes = layer_shapes(len(params["features"]), params["hidden"])
    logits = forward(theta_from_document(doc), x, shapes, doc["activation"])[0]
    return sigmoid(logits)


# -- data -------------------------------------------------------------------------------


def prepare_data(table: Any, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) from a `Table`: the feature columns as float64 (standardised with the public
    `standardize` when given), labels as 0.0 / 1.0. Missing or non-numeric cells and labels
    other than 0 / 1 are a DataError naming the row."""
    source = getattr(table, "source", "<memory>")
    columns = []
    for name in params["features"]:
        col = table.numeric(name)
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            raise DataError("feature is not a finite number", path=source, row=int(bad[0]) + 1, column=name)
        columns.append(col)
    n = table.num_rows
    x = np.column_stack(columns) if columns else np.zeros((n, 0))
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(n, len(params["features"]))
    label = params["label_column"]
    y = table.numeric(label)
    bad = np.flatnonzero((y != 0.0) & (y != 1.0))
    if bad.size:
        row = int(bad[0])
        raise DataError(f"label {table.cell(label, row)!r} is not 0 or 1", path=source, row=row + 1, column=label)
    if params["standardize"] is not None:
        x = (x - np.asarray(params["standardize"]["mean"])) / np.asarray(params["standardize"]["std"])
    return x, y


# -- forward / backward -------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _act(z: np.ndarray, activation: str | None) -> np.ndarray:
    return np.maximum(z, 0.0) if activation == "relu" else np.tanh(z)


def forward(
    theta: np.ndarray, x: np.ndarray, shapes: Sequence[tuple[int, int]], activation: str | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Output logits (1-D) and the activations entering each layer (for backprop)."""
    layers = unflatten(theta, shapes)
    inputs = [x]
    a = x
    for w, b in layers[:-1]:
        a = _act(a @ w + b, activation)
        inputs.append(a)
    w, b = layers[-1]
    return (a @ w + b)[:, 0], inputs


def gradient(
    theta: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    shapes: Sequence[tuple[int, int]],
    activation: str | None,
    l2: float,
) -> np.ndarray:
    """Gradient of mean BCE over the rows plus (l2 / 2) * ||W||^2 (weights, not biases)."""
    logits, inputs = forward(theta, x, shapes, activation)
    layers = unflatten(theta, shapes)
    grad = np.zeros_like(theta)
    grads = unflatten(grad, shapes)
    delta = ((sigmoid(logits) - y) / len(y))[:, None]
    for k in range(len(layers) - 1, -1, -1):
        w, _b = layers[k]
        gw, gb = grads[k]
        gw[...] = inputs[k].T @ delta
        if l2:
            gw += l2 * w
        gb[...] = delta.sum(axis=0)
        if k:
            back = delta @ w.T
            a = inputs[k]
            delta = back * (a > 0.0) if activation == "relu" else back * (1.0 - a * a)
    return grad


def local_train(
    theta: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    order: Callable[[int], np.ndarray],
) -> np.ndarray:
    """`local_epochs` epochs of mini-batch gradient descent from theta; `order(e)` gives
    epoch e's row permutation."""
    shapes = layer_shapes(len(params["features"]), params["hidden"])
    theta = theta.copy()
    n = len(y)
    if n == 0:
        return theta
    lr, bs, l2, act = params["learning_rate"], params["batch_size"], params["l2"], params["activation"]
    for epoch in range(params["local_epochs"]):
        perm = order(epoch)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            theta -= lr * gradient(theta, x[idx], y[idx], shapes, act, l2)
    return theta


# -- fixed-point vectors -----------------------------------------------------------------


def weight_factor(num_rows: int, params: dict[str, Any]) -> int:
    return num_rows if params["weighting"] == "samples" else 1


def encode_update(theta: np.ndarray, weight: int, num_parties: int) -> np.ndarray:
    """round(theta * 2^24) * weight | weight as int64 (two's complement in the uint64 ring)."""
    if not np.all(np.isfinite(theta)) or float(np.max(np.abs(theta), initial=0.0)) > MAX_ABS_WEIGHT:
        raise ProtocolError(
            f"local model weights left [-{MAX_ABS_WEIGHT:g}, {MAX_ABS_WEIGHT:g}]: training diverged; "
            "lower learning_rate or raise l2"
        )
    if weight * MAX_ENTRY_PER_WEIGHT * num_parties >= SUM_BOUND:
        raise ProtocolError(
            f"weight factor {weight} is too large for the 64-bit fixed-point ring with {num_parties} parties "
            f"(at most {SUM_BOUND // (MAX_ENTRY_PER_WEIGHT * num_parties) - 1} rows per party with weighting 'samples')"
        )
    q = np.rint(theta * SCALE).astype(np.int64) * np.int64(weight)
    return np.concatenate([q, np.array([weight], dtype=np.int64)])


def evaluate(
    theta: np.ndarray, x: np.ndarray, y: np.ndarray, params: dict[str, Any]
) -> tuple[float, int, int, np.ndarray, np.ndarray]:
    """BCE sum, correct predictions, rows, positives' and negatives' logit histograms."""
    shapes = layer_shapes(len(params["features"]), params["hidden"])
    if len(y) == 0:
        empty = np.zeros(AUC_BINS, dtype=np.int64)
        return 0.0, 0, 0, empty, empty.copy()
    logits = np.concatenate(
        [forward(theta, x[k : k + EVAL_CHUNK], shapes, params["activation"])[0] for k in range(0, len(y), EVAL_CHUNK)]
    )
    losses = np.minimum(np.logaddexp(0.0, logits) - y * logits, MAX_ROW_LOSS)
    correct = int(np.count_nonzero((logits > 0.0) == (y == 1.0)))
    bins = np.clip(((np.clip(logits, -LOGIT_CLIP, LOGIT_CLIP) + LOGIT_CLIP) * (AUC_BINS / (2 * LOGIT_CLIP))), 0, None)
    bins = np.minimum(bins.astype(np.int64), AUC_BINS - 1)
    pos = np.bincount(bins[y == 1.0], minlength=AUC_BINS).astype(np.int64)
    neg = np.bincount(bins[y == 0.0], minlength=AUC_BINS).astype(np.int64)
    return float(losses.sum()), correct, len(y), pos, neg


def encode_metrics(loss: float, correct: int, count: int, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    head = np.array([int(np.rint(loss * (1 << LOSS_FRAC_BITS))), correct, count], dtype=np.int64)
    return np.concatenate([head, pos.astype(np.int64), neg.astype(np.int64)])


def to_ring(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v, dtype=np.int64).view(np.uint64)


def signed(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v, dtype=np.uint64).view(np.int64)


def decode_average(total: np.ndarray, num_params: int) -> tuple[np.ndarray, int]:
    """The new global theta from an unmasked aggregate (signed int64 view): sum(w_i q_i) /
    (sum(w_i) * 2^24), and sum(w_i). ProtocolError when the aggregate is out of the range
    honest updates can reach (a corrupted masked update or share)."""
    weight = int(total[num_params])
    if weight <= 0 or weight * MAX_ENTRY_PER_WEIGHT >= SUM_BOUND:
        raise ProtocolError(
            f"aggregated weight {weight} is impossible: a masked update or a share was corrupted"
            if weight
            else "the surviving parties hold no training rows (total weight 0)"
        )
    q = total[:num_params]
    if q.size and int(np.max(np.abs(q))) > weight * MAX_ENTRY_PER_WEIGHT:
        raise ProtocolError("aggregated model entries are out of range: a masked update or a share was corrupted")
    return q.astype(np.float64) / (float(weight) * SCALE), weight


def decode_metrics(m: np.ndarray) -> dict[str, Any]:
    """Loss, accuracy, AUC and row count from an unmasked metrics aggregate."""
    loss_fixed, correct, count = (int(v) for v in m[:3])
    pos, neg = m[3 : 3 + AUC_BINS], m[3 + AUC_BINS :]
    if (
        count < 0
        or not 0 <= correct <= count
        or not 0 <= loss_fixed <= (count * int(MAX_ROW_LOSS) << LOSS_FRAC_BITS) + (1 << LOSS_FRAC_BITS)
        or np.any(pos < 0)
        or np.any(neg < 0)
        or int(pos.sum()) + int(neg.sum()) != count
    ):
        raise ProtocolError("aggregated metrics are inconsistent: a masked update or a share was corrupted")
    out: dict[str, Any] = {"samples": count, "loss": None, "accuracy": None, "auc": None}
    if count:
        out["loss"] = loss_fixed / (count * float(1 << LOSS_FRAC_BITS))
        out["accuracy"] = correct / count
    npos, nneg = int(pos.sum()), int(neg.sum())
    if npos and nneg:
        below = np.concatenate([[0], np.cumsum(neg)[:-1]]).astype(np.float64)
        auc = float(np.sum(pos.astype(np.float64) * (below + 0.5 * neg.astype(np.float64)))) / (npos * nneg)
        out["auc"] = auc
    return out
