"""Joint scoring with a split hetero-sbt model (the trees of a finished "hetero-sbt" task).

Every party loads its own part of the model of training task `model_task` through its task's
`ctx.services.load_model`: the guest (the recipient, as in training) its trees (its own
splits with their thresholds, the hosts' splits as opaque ids, every leaf weight), the initial
score and the hosts' model commitments; each host its split table (split id -> feature,
threshold). The data are new rows with the same IDs at every party (e.g. a PSI output).

Rounds:
  1 "setup" (everyone -> everyone): a hash of the party's sorted ID list (a mismatch is
    "datasets are not aligned, run PSI first"), its row count, the model task, and for a host
    the commitment to its model state (sha256("pcn/hetero-sbt/model/v1" | canonical JSON of
    the state, which carries a secret salt)). The guest checks every host's commitment
    against the one recorded in training, so a host answers with the split table it
    committed to; every party keeps every host's commitment for the result commitment.
  2 "decisions" (host -> guest): for every split id of the host's table, in id order, one bit
    per row: the row's value of the split's feature is <= its threshold (goes left). Parts of
    at most 8 MiB.
  3 "result-hash" (guest -> hosts): h_r = sha256("pcn/hetero-sbt-predict/result/v1" | salt |
    result). Commitment at every party: sha256("pcn/hetero-sbt-predict/commit/v1" | host model
    commitments in host order | h_r).

What each party learns: the guest learns every row's score (the output) and, for every row
and every host split of the model, which side of the split the row falls on, whether or not
the row reaches that node (one round, no instance space sent to the hosts: hosts learn
nothing but the row count and the other hosts' commitments). This is more than FATE's
node-by-node inference shows the guest (there, a host answers only for the rows at its nodes,
and learns which rows reach them); the choice keeps every host blind to the paths. Semi-honest parties, no collusion.

Result (canonical JSON, guest only): {"algorithm": "hetero-sbt-predict", "model_task",
"objective", "rows", "ids": [sorted normalised IDs], "scores": [P(y = 1) ("binary") or the
prediction ("regression") per ID], "threshold": 0.5 for "binary", "label_column", "metrics":
{"auc", "log_loss", "accuracy"} ("binary", both classes present) or {"mse"} when the guest's
rows carry the training label column, else null}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pcn.algorithms.base import CommitmentScheme, Message, PartyContext, ProtocolError
from pcn.algorithms.hetero_sbt.trees import MODEL_DOMAIN, sigmoid
from pcn.algorithms.vertical import (
    KIND_RESULT,
    PREDICT_ROUND_RESULT,
    Assembly,
    VerticalPrediction,
    add_frame,
    auc,
    frames,
    log_loss,
    model_column,
    model_task_params,
)
from pcn.data.table import Table

DOMAIN = b"pcn/hetero-sbt-predict/"
RESULT_DOMAIN = b"pcn/hetero-sbt-predict/result/v1"
COMMIT_DOMAIN = b"pcn/hetero-sbt-predict/commit/v1"
THRESHOLD = 0.5

COMMITMENT = CommitmentScheme(
    RESULT_DOMAIN,
    COMMIT_DOMAIN,
    head_unit=32,
    min_head=32,
    error="an opening is the host model commitments followed by the salt, 32 bytes each",
)

ROUND_DECISIONS, KIND_DECISIONS = 2, "decisions"  # after the setup round (1); the result hash is round 3


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(eq=False)
class HeteroSbtPredictProtocol(VerticalPrediction):
    name: ClassVar[str] = "hetero-sbt-predict"
    commitment: ClassVar[CommitmentScheme] = COMMITMENT
    training: ClassVar[str] = "hetero-sbt"
    model_domain: ClassVar[bytes] = MODEL_DOMAIN
    id_domain: ClassVar[bytes] = DOMAIN

    @classmethod
    def role_class(cls, ctx: PartyContext) -> type[HeteroSbtPredictProtocol]:
        """The guest's class for the recipient, the hosts' for every other party."""
        return HeteroSbtPredictGuest if ctx.is_recipient else HeteroSbtPredictHost

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        return model_task_params(params, "hetero-sbt-predict")


@dataclass(eq=False)
class HeteroSbtPredictGuest(HeteroSbtPredictProtocol):
    """The guest: walks its trees, with the hosts' split decisions for the hosts' nodes."""

    role: ClassVar[str] = "guest"

    _X: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _y: np.ndarray | None = field(default=None, init=False, repr=False)
    _host_splits: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    _decisions: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _parts: dict[Any, Assembly] = field(default_factory=dict, init=False, repr=False)

    def _load_model_part(self, state: dict[str, Any]) -> None:
        commits = state.get("host_commitments")
        if not isinstance(commits, dict) or sorted(commits) != sorted(self._hosts):
            raise ProtocolError("stored model: host commitments missing")
        if state.get("objective") not in ("binary", "regression") or not _finite(state.get("init_score")):
            raise ProtocolError("stored model: bad objective or initial score")
        trees = state.get("trees")
        if not isinstance(trees, list) or not all(isinstance(t, list) and t for t in trees):
            raise ProtocolError("stored model: bad trees")
        used: dict[str, set[int]] = {h: set() for h in self._hosts}
        for tree in trees:
            ids = {n.get("id") for n in tree if isinstance(n, dict)}
            for node in tree:
                if not isinstance(node, dict) or not isinstance(node.get("id"), int):
                    raise ProtocolError("stored model: bad tree node")
                if "leaf" in node:
                    if not _finite(node["leaf"]):
                        raise ProtocolError("stored model: bad leaf weight")
                    continue
                if node.get("left") not in ids or node.get("right") not in ids:
                    raise ProtocolError("stored model: a split node without its children")
                owner = node.get("owner")
                if owner == "guest":
                    if not isinstance(node.get("feature"), str) or not _finite(node.get("threshold")):
                        raise ProtocolError("stored model: bad guest split")
                elif owner in used and isinstance(node.get("split"), int):
                    used[owner].add(node["split"])
                else:
                    raise ProtocolError("stored model: bad host split")
        for h, sids in used.items():
            if sids != set(range(len(sids))):
                raise ProtocolError(f"stored model: the split ids of {h!r} are not 0..{len(sids) - 1}")
            self._host_splits[h] = sorted(sids)

    def _read_rows(self, table: Table) -> None:
        names = {n["feature"] for t in self._model["trees"] for n in t if n.get("owner") == "guest"}
        self._X = {c: model_column(table, c, self._order) for c in sorted(names)}
        label = self._model.get("label_column")
        if isinstance(label, str) and label in table:
            y = model_column(table, label, self._order)
            if self._model["objective"] == "regression" or (np.all((y == 0) | (y == 1)) and 0 < y.sum() < len(y)):
                self._y = y

    def _after_setup(self) -> list[Message]:
        return self._maybe_finish()

    def _on_message(self, msg: Message) -> list[Message] | None:
        if (msg.kind, msg.round) != (KIND_DECISIONS, ROUND_DECISIONS) or msg.sender in self._decisions:
            return None
        if msg.sender not in self._hosts:
            return None
        who = msg.sender
        data = add_frame(self._parts, who, msg.payload, f"decisions from {who!r}")
        if data is None:
            return []
        n, count = len(self._ids), len(self._host_splits[who])
        size = (n + 7) // 8
        if len(data) != count * size:
            raise ProtocolError(f"decisions from {who!r}: {len(data)} bytes, expected {count} splits of {size} bytes")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8).reshape(count, size), axis=1)
        if bits[:, n:].any():
            raise ProtocolError(f"decisions from {who!r}: padding bits set")
        self._decisions[who] = bits[:, :n].astype(bool)
        return self._maybe_finish()

    def _maybe_finish(self) -> list[Message]:
        if self._done or len(self._setups) < len(self.ctx.peers) or len(self._decisions) < len(self._hosts):
            return []
        n = len(self._ids)
        raw = np.full(n, float(self._model["init_score"]))
        for tree in self._model["trees"]:
            nodes = {node["id"]: node for node in tree}
            at = np.zeros(n, dtype=np.int64)  # the node id each row has reached
            active = np.ones(n, dtype=bool)
            while active.any():
                for nid in np.unique(at[active]).tolist():
                    node = nodes[nid]
                    rows = np.flatnonzero(active & (at == nid))
                    if "leaf" in node:
                        raw[rows] += float(node["leaf"])
                        active[rows] = False
                        continue
                    if node["owner"] == "guest":
                        left = self._X[node["feature"]][rows] <= float(node["threshold"])
                    else:
                        left = self._decisions[node["owner"]][node["split"], rows]
                    at[rows] = np.where(left, node["left"], node["right"])
        objective = self._model["objective"]
        metrics: dict[str, float] | None = None
        if objective == "binary":
            scores = sigmoid(raw)
            if self._y is not None:
                y = self._y
                metrics = {
                    "auc": auc(y, raw),
                    "log_loss": log_loss(y, scores),
                    "accuracy": float(np.mean((scores > THRESHOLD) == (y == 1))),
                }
        else:
            scores = raw
            if self._y is not None:
                metrics = {"mse": float(np.mean((raw - self._y) ** 2))}
        result = {
            "algorithm": self.name,
            "model_task": self._p["model_task"],
            "objective": objective,
            "rows": n,
            "ids": self._ids,
            "scores": [float(v) for v in scores.tolist()],
            "threshold": THRESHOLD if objective == "binary" else None,
            "label_column": self._model.get("label_column"),
            "metrics": metrics,
        }
        self._decisions.clear()
        return self._publish_result(result)


@dataclass(eq=False)
class HeteroSbtPredictHost(HeteroSbtPredictProtocol):
    """A host: answers every split of its table for every row, in one message."""

    role: ClassVar[str] = "host"

    _bits: bytes = field(default=b"", init=False, repr=False)

    def _load_model_part(self, state: dict[str, Any]) -> None:
        splits = state.get("splits")
        if not isinstance(splits, list):
            raise ProtocolError("stored model: bad split table")
        for k, s in enumerate(splits):
            if (
                not isinstance(s, dict)
                or s.get("id") != k
                or not isinstance(s.get("feature"), str)
                or not _finite(s.get("threshold"))
            ):
                raise ProtocolError("stored model: bad split table")

    def _read_rows(self, table: Table) -> None:
        columns: dict[str, np.ndarray] = {}
        rows: list[bytes] = []
        for s in self._model["splits"]:
            c = s["feature"]
            if c not in columns:
                columns[c] = model_column(table, c, self._order)
            rows.append(np.packbits(columns[c] <= float(s["threshold"])).tobytes())
        self._bits = b"".join(rows)

    def _after_setup(self) -> list[Message]:
        self._commits[self.ctx.me] = self._commitment
        self.report(0.5, "sent split decisions to the guest")
        return [self.send(self._guest, ROUND_DECISIONS, KIND_DECISIONS, part) for part in frames(self._bits)]

    def _on_message(self, msg: Message) -> list[Message] | None:
        if (msg.kind, msg.round) != (KIND_RESULT, PREDICT_ROUND_RESULT) or msg.sender != self._guest:
            return None
        return self._on_result_hash(msg)
