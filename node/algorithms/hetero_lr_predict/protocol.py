"""Joint scoring with a split hetero-lr model (the model of a finished "hetero-lr" task).

Every party loads its own part of the model of training task `model_task` through its
task's `ctx.services.load_model` (the node's sealed model store; tests give a dict lookup):
the guest (the recipient, as in training) its weights, intercept and standardisation plus
the hosts' model commitments; each host its weights and standardisation. The data are new rows with
the same IDs at every party (e.g. a PSI output).

Rounds:
  1 "setup" (everyone -> everyone): a hash of the party's sorted ID list (a mismatch is
    "datasets are not aligned, run PSI first"), its row count, and for a host the
    commitment to its model state (sha256("pcn/hetero-lr/model/v1" | canonical JSON of the
    state, which carries a secret salt)) and an X25519 public key. The guest checks every
    host's commitment against the one recorded in training, so every host scores with
    the model it committed to on chain.
  2 "scores" (host -> guest): u_j = standardised X_j · w_j per row in fixed point (32
    fractional bits, int64 ring), plus pairwise masks agreed between hosts (X25519 shared
    secret -> SHA-256 -> ChaCha20 keystream) that cancel in the sum; parts of at most 8 MiB.
  3 "result-hash" (guest -> hosts): h_r = sha256("pcn/hetero-lr-predict/result/v1" | salt |
    result). Commitment at every party: sha256("pcn/hetero-lr-predict/commit/v1" | host model
    commitments in host order | h_r).

What each party learns: the guest learns the joint score z = X_G·w_G + b + Σ_j u_j of every
row (that is the output) and therefore Σ_j u_j per row; with one host that is the host's
score contribution per row, with several only their sum. Hosts learn nothing but the row
count and the other hosts' commitments (semi-honest, no collusion).

Result (canonical JSON, guest only): {"algorithm": "hetero-lr-predict", "model_task",
"rows", "ids": [sorted normalised IDs], "scores": [P(y = 1) per ID], "threshold": 0.5,
"label_column", "metrics": {"auc", "ks", "accuracy", "log_loss"} when the guest's rows
carry the training label column, else null}.

The helpers shared with hetero-lr (ID hashing, model commitments, pairwise masks, framing,
metrics) are in `pcn.algorithms.vertical`, a top-level module of the algorithms folder and so
covered by both algorithms' registered code hashes; the domains stay this algorithm's own.

Classes, as in hetero-lr: `HeteroLrPredictProtocol` (registered; setup, model loading, commitment)
over `HeteroLrPredictGuest` and `HeteroLrPredictHost`; `HeteroLrPredictProtocol.create(ctx, data)`
builds the class of the party's role.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pcn.algorithms.base import CommitmentScheme, Message, PartyContext, ProtocolError
from pcn.algorithms.vertical import (
    FRAME,
    KIND_RESULT,
    PREDICT_ROUND_RESULT,
    VerticalPrediction,
    add_pair_masks,
    auc,
    frames,
    from_fixed,
    ks,
    log_loss,
    matvec,
    model_column,
    model_task_params,
    pair_seed,
    sigmoid,
    to_fixed,
    x25519_public,
)
from pcn.data.table import Table

DOMAIN = b"pcn/hetero-lr-predict/"
RESULT_DOMAIN = b"pcn/hetero-lr-predict/result/v1"
COMMIT_DOMAIN = b"pcn/hetero-lr-predict/commit/v1"
THRESHOLD = 0.5

# The guest's opening is the hosts' model commitments (host order) | salt.
COMMITMENT = CommitmentScheme(
    RESULT_DOMAIN,
    COMMIT_DOMAIN,
    head_unit=32,
    min_head=32,
    error="an opening is the host model commitments followed by the salt, 32 bytes each",
)

ROUND_SCORES, KIND_SCORES = 2, "scores"  # after the setup round (1); the result hash is round 3


def _floats(values: object, count: int, what: str) -> np.ndarray:
    if not isinstance(values, list) or len(values) != count:
        raise ProtocolError(f"stored model: {what} must be a list of {count} numbers")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ProtocolError(f"stored model: {what} must hold finite numbers")
    return np.array(values, dtype=np.float64)


@dataclass(eq=False)
class HeteroLrPredictProtocol(VerticalPrediction):
    name: ClassVar[str] = "hetero-lr-predict"
    commitment: ClassVar[CommitmentScheme] = COMMITMENT
    training: ClassVar[str] = "hetero-lr"
    id_domain: ClassVar[bytes] = DOMAIN
    host_setup_keys: ClassVar[tuple[str, ...]] = ("model", "x25519")

    _w: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _mean: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _std: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _b: float = field(default=0.0, init=False, repr=False)
    _u: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)

    @classmethod
    def role_class(cls, ctx: PartyContext) -> type[HeteroLrPredictProtocol]:
        """The guest's class for the recipient, the hosts' for every other party."""
        return HeteroLrPredictGuest if ctx.is_recipient else HeteroLrPredictHost

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        return model_task_params(params, "hetero-lr-predict")

    # -- model and data -----------------------------------------------------------------------

    def _load_model_part(self, state: dict[str, Any]) -> None:
        features = state.get("features")
        if not isinstance(features, list) or not all(isinstance(c, str) for c in features):
            raise ProtocolError("stored model: bad feature list")
        d = len(features)
        self._w = _floats(state.get("weights"), d, "weights")
        self._mean = _floats(state.get("mean"), d, "mean")
        self._std = _floats(state.get("std"), d, "std")
        if np.any(self._std <= 0):
            raise ProtocolError("stored model: std must be > 0")
        self._load_role_model(state)

    def _load_role_model(self, state: dict[str, Any]) -> None:
        """Checks and takes what only this role's part of the stored model holds."""

    def _read_rows(self, table: Table) -> None:
        X = np.empty((len(self._ids), len(self._w)))
        for j, c in enumerate(self._model["features"]):
            X[:, j] = model_column(table, c, self._order)
        self._u = matvec((X - self._mean) / self._std, self._w) + self._b
        self._load_labels(table, self._order)

    def _load_labels(self, table: Table, order: np.ndarray) -> None:
        """Reads the rows' labels where this role can score against them."""


@dataclass(eq=False)
class HeteroLrPredictGuest(HeteroLrPredictProtocol):
    """The guest: the recipient, which adds its score and intercept to the hosts' masked
    scores and holds the result."""

    role: ClassVar[str] = "guest"

    _y: np.ndarray | None = field(default=None, init=False, repr=False)
    _scores: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _parts: dict[str, list[bytes]] = field(default_factory=dict, init=False, repr=False)

    def _load_role_model(self, state: dict[str, Any]) -> None:
        b = state.get("intercept")
        if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b):
            raise ProtocolError("stored model: bad intercept")
        self._b = float(b)
        commits = state.get("host_commitments")
        if not isinstance(commits, dict) or sorted(commits) != sorted(self._hosts):
            raise ProtocolError("stored model: host commitments missing")

    def _load_labels(self, table: Table, order: np.ndarray) -> None:
        label = self._model.get("label_column")
        if isinstance(label, str) and label in table:
            y = model_column(table, label, order)
            if np.all((y == 0) | (y == 1)) and 0 < y.sum() < len(y):
                self._y = y

    def _on_message(self, msg: Message) -> list[Message] | None:
        if (msg.kind, msg.round) == (KIND_SCORES, ROUND_SCORES) and msg.sender in self._hosts:
            return self._on_scores(msg)
        return None

    def _after_setup(self) -> list[Message]:
        return self._maybe_finish()

    def _on_scores(self, msg: Message) -> list[Message]:
        who = msg.sender
        if who in self._scores or len(msg.payload) < FRAME.size:
            raise ProtocolError(f"unexpected scores message from {who!r}")
        index, count = FRAME.unpack_from(msg.payload)
        parts = self._parts.setdefault(who, [])
        if index != len(parts) or index >= count:
            raise ProtocolError(f"scores from {who!r}: part {index} of {count} out of order")
        parts.append(msg.payload[FRAME.size :])
        if len(parts) < count:
            return []
        data = b"".join(self._parts.pop(who))
        if len(data) != 8 * len(self._ids):
            raise ProtocolError(f"scores from {who!r} have {len(data)} bytes, expected {8 * len(self._ids)}")
        self._scores[who] = np.frombuffer(data, dtype="<u8").astype(np.uint64)
        return self._maybe_finish()

    def _maybe_finish(self) -> list[Message]:
        ctx = self.ctx
        if self._done or len(self._setups) < len(ctx.peers) or len(self._scores) < len(self._hosts):
            return []
        total = np.zeros(len(self._ids), dtype=np.uint64)
        for h in self._hosts:
            total = total + self._scores[h]
        z = self._u + from_fixed(total)
        probs = sigmoid(z)
        metrics: dict[str, float] | None = None
        if self._y is not None:  # both classes present (checked on loading), as auc and ks need
            y = self._y
            metrics = {
                "auc": auc(y, z),
                "ks": ks(y, z),
                # on the probabilities, not z > 0 like hetero-lr: the two differ for |z| < 2^-53
                "accuracy": float(np.mean((probs > THRESHOLD) == (y == 1))),
                "log_loss": log_loss(y, probs),
            }
        result = {
            "algorithm": self.name,
            "model_task": self._p["model_task"],
            "rows": len(self._ids),
            "ids": self._ids,
            "scores": [float(v) for v in probs.tolist()],
            "threshold": THRESHOLD,
            "label_column": self._model.get("label_column"),
            "metrics": metrics,
        }
        self._scores.clear()
        return self._publish_result(result)


@dataclass(eq=False)
class HeteroLrPredictHost(HeteroLrPredictProtocol):
    """A host: scores its rows with its part of the model and sends them, pair-masked, to the guest."""

    role: ClassVar[str] = "host"

    _sent_scores: bool = field(default=False, init=False, repr=False)

    def _x25519(self) -> bytes:
        return self.secret_bytes("hetero-lr-predict/x25519", 32)

    def _setup_keys(self) -> dict[str, str]:
        return {**super()._setup_keys(), "x25519": x25519_public(self._x25519()).hex()}

    def _on_message(self, msg: Message) -> list[Message] | None:
        if (msg.kind, msg.round) == (KIND_RESULT, PREDICT_ROUND_RESULT) and msg.sender == self._guest:
            return self._on_result_hash(msg)
        return None

    def _after_setup(self) -> list[Message]:
        ctx = self.ctx
        if self._sent_scores:
            raise ProtocolError("scores were already sent")
        self._commits[ctx.me] = self._commitment
        fixed = to_fixed(self._u, "scores are not finite or too large for the fixed-point encoding")
        # The pair seed itself keys the mask stream (hetero-lr hashes a label in per use):
        # there is one masked vector per task.
        secret = self._x25519()
        seeds: dict[str, bytes] = {}
        for other in self._hosts:
            if other == ctx.me:
                continue
            try:
                public = bytes.fromhex(self._setups[other]["x25519"])
            except ValueError as exc:
                raise ProtocolError(f"bad X25519 key from {other!r}: {exc}") from None
            seeds[other] = pair_seed(DOMAIN, secret, public, ctx.binding, ctx.me, other, who=repr(other))
        out = add_pair_masks(fixed, ctx.me, self._hosts, seeds)
        self._sent_scores = True
        self.report(0.5, "sent masked scores to the guest")
        return [self.send(self._guest, ROUND_SCORES, KIND_SCORES, part) for part in frames(out.astype("<u8").tobytes())]
