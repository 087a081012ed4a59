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
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pcn import jsonsafe
from pcn.algorithms.base import CommitmentScheme, Message, ModelUnavailable, PartyContext, Protocol, ProtocolError
from pcn.algorithms.hetero_sbt.trees import model_commitment, sigmoid
from pcn.algorithms.vertical import (
    Assembly,
    add_frame,
    auc,
    canonical_json,
    frames,
    ids_hash,
    log_loss,
    numeric,
    sort_ids,
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

ROUND_SETUP, ROUND_DECISIONS, ROUND_RESULT = 1, 2, 3
KIND_SETUP, KIND_DECISIONS, KIND_RESULT = "setup", "decisions", "result-hash"
PARAM_KEYS = frozenset({"model_task"})


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _column(table: Table, column: str, order: np.ndarray) -> np.ndarray:
    if column not in table:
        raise ProtocolError(f"column {column!r} of the model is not in the dataset; columns are {table.names}")
    return numeric(table, column, order)


@dataclass(eq=False)
class HeteroSbtPredictProtocol(Protocol):
    name: ClassVar[str] = "hetero-sbt-predict"
    commitment: ClassVar[CommitmentScheme] = COMMITMENT
    role: ClassVar[str]

    _p: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _guest: str = field(default="", init=False, repr=False)
    _hosts: list[str] = field(default_factory=list, init=False, repr=False)
    _model: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _commitment: bytes = field(default=b"", init=False, repr=False)
    _ids: list[str] = field(default_factory=list, init=False, repr=False)
    _order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), init=False, repr=False)
    _ids_hash: bytes = field(default=b"", init=False, repr=False)
    _setups: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _recv_next: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _commits: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        ctx = self.ctx
        n = len(ctx.participants)
        if n < 2 or len(set(ctx.participants)) != n:
            raise ProtocolError("hetero-sbt-predict needs at least 2 distinct participants (a guest and a host)")
        self._check_context("the guest")
        if not isinstance(self, self.role_class(ctx)):
            raise ProtocolError(f"{type(self).__name__} plays a {self.role}, which {ctx.me!r} is not in this task")
        self._p = self.validate_params(ctx.params)
        self._guest = ctx.recipient
        self._hosts = [p for p in ctx.participants if p != self._guest]
        self._load_model()
        self._load_data()

    @classmethod
    def role_class(cls, ctx: PartyContext) -> type[HeteroSbtPredictProtocol]:
        """The guest's class for the recipient, the hosts' for every other party."""
        return HeteroSbtPredictGuest if ctx.is_recipient else HeteroSbtPredictHost

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise ProtocolError("invalid hetero-sbt-predict params: expected a JSON object")
        unknown = set(params) - PARAM_KEYS
        if unknown:
            raise ProtocolError(
                f"invalid hetero-sbt-predict params: unknown key(s) {sorted(unknown)}; allowed: model_task"
            )
        task = params.get("model_task")
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < 2**256:
            raise ProtocolError(
                "invalid hetero-sbt-predict params: 'model_task' (the training task id) must be a uint256, "
                f"got {task!r}"
            )
        return {"model_task": task}

    # -- model and data -----------------------------------------------------------------------

    def _load_model(self) -> None:
        ctx, task = self.ctx, self._p["model_task"]
        try:
            state = ctx.services.load_model(task, ctx.me)
        except ModelUnavailable as exc:
            raise ModelUnavailable(f"this party holds no hetero-sbt model of task {task}: {exc}") from None
        if not isinstance(state, dict) or state.get("algorithm") != "hetero-sbt" or state.get("task_id") != task:
            raise ProtocolError(f"the stored model of task {task} is not a hetero-sbt model of that task")
        if state.get("role") != self.role or state.get("party") != ctx.me:
            raise ProtocolError(f"the stored model of task {task} is not this party's {self.role} part")
        if state.get("guest") != self._guest:
            raise ProtocolError(f"the recipient must be the guest of training task {task} ({state.get('guest')!r})")
        hosts = state.get("hosts")
        if not isinstance(hosts, list) or sorted(hosts) != sorted(self._hosts):
            raise ProtocolError(f"the participants must be the parties of training task {task}: guest and {hosts}")
        self._load_role_model(state)
        self._model = state
        self._commitment = model_commitment(state)

    @abstractmethod
    def _load_role_model(self, state: dict[str, Any]) -> None:
        """Checks what only this role's part of the stored model holds."""

    def _load_data(self) -> None:
        ctx, table = self.ctx, self.data
        if not isinstance(table, Table):
            raise ProtocolError(f"hetero-sbt-predict needs a Table, got {type(table).__name__}")
        if not ctx.id_column or ctx.id_column not in table:
            raise ProtocolError(f"no ID column {ctx.id_column!r}; columns are {table.names}")
        self._ids, self._order = sort_ids(table, ctx.id_column, self.name)
        if not self._ids:
            raise ProtocolError("no rows to score")
        self._ids_hash = ids_hash(DOMAIN, ctx.binding, self._ids)
        self._read_columns(table)

    @abstractmethod
    def _read_columns(self, table: Table) -> None:
        """Reads the columns this role's part of the model splits on (rows in ID order)."""

    # -- protocol -------------------------------------------------------------------------------

    def start(self) -> list[Message]:
        self._mark_started()
        body: dict[str, Any] = {
            "role": self.role,
            "ids": self._ids_hash.hex(),
            "rows": len(self._ids),
            "model_task": self._p["model_task"],
        }
        if self.role == "host":
            body["model"] = self._commitment.hex()
        payload = canonical_json(body)
        self.report(0.1, f"scoring with the model of task {self._p['model_task']}")
        return [self.send(peer, ROUND_SETUP, KIND_SETUP, payload) for peer in self.ctx.peers]

    def receive(self, msg: Message) -> list[Message]:
        self._check_delivery(msg)
        if self._done:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} after the protocol finished")
        expected = self._recv_next.get(msg.sender, 0)
        if msg.seq != expected:
            raise ProtocolError(f"message #{msg.seq} from {msg.sender!r} where #{expected} was expected")
        self._recv_next[msg.sender] = expected + 1
        if (msg.kind, msg.round) == (KIND_SETUP, ROUND_SETUP):
            if msg.sender in self._setups:
                raise ProtocolError(f"duplicate setup from {msg.sender!r}")
            self._setups[msg.sender] = self._check_setup(msg)
            return self._after_setup() if len(self._setups) == len(self.ctx.peers) else []
        if msg.sender not in self._setups:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} before its setup")
        out = self._on_message(msg)
        if out is None:
            raise ProtocolError(f"unexpected {msg.kind!r} message round {msg.round} from {msg.sender!r}")
        return out

    def _check_setup(self, msg: Message) -> dict[str, Any]:
        who = msg.sender
        try:
            info = jsonsafe.loads(msg.payload)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(f"setup from {who!r} is not JSON") from None
        if not isinstance(info, dict):
            raise ProtocolError(f"setup from {who!r} is not an object")
        role = "guest" if who == self._guest else "host"
        if info.get("role") != role or info.get("model_task") != self._p["model_task"]:
            raise ProtocolError(f"setup from {who!r}: wrong role or model task")
        if info.get("ids") != self._ids_hash.hex() or info.get("rows") != len(self._ids):
            raise ProtocolError(f"datasets are not aligned, run PSI first: the ID list of {who!r} differs")
        if role == "host":
            v = info.get("model")
            if not isinstance(v, str) or len(v) != 64:
                raise ProtocolError(f"setup from {who!r}: bad 'model'")
            self._check_host_model(who, bytes.fromhex(v))
            self._commits[who] = bytes.fromhex(v)
        return info

    def _check_host_model(self, host: str, commit: bytes) -> None:
        """Refuses a host that answers with a model other than the one it committed to."""

    @abstractmethod
    def _after_setup(self) -> list[Message]:
        """What this party sends once it has its peers' setups."""

    @abstractmethod
    def _on_message(self, msg: Message) -> list[Message] | None:
        """A message after the setup round; None when this role takes no such message."""

    # -- outcome --------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    def _commit_bytes(self) -> bytes:
        return b"".join(self._commits[h] for h in self._hosts)

    def result_commitment(self) -> bytes:
        if not self._done or self._result_hash is None:
            raise ProtocolError("the hetero-sbt-predict protocol has not finished")
        return COMMITMENT.commit(self._commit_bytes(), self._result_hash)

    def commitment_opening(self) -> bytes:
        if not self._done:
            raise ProtocolError("the hetero-sbt-predict protocol has not finished")
        return self._commit_bytes()


@dataclass(eq=False)
class HeteroSbtPredictGuest(HeteroSbtPredictProtocol):
    """The guest: walks its trees, with the hosts' split decisions for the hosts' nodes."""

    role: ClassVar[str] = "guest"

    _X: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _y: np.ndarray | None = field(default=None, init=False, repr=False)
    _host_splits: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    _decisions: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _parts: dict[Any, Assembly] = field(default_factory=dict, init=False, repr=False)

    def _load_role_model(self, state: dict[str, Any]) -> None:
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

    def _read_columns(self, table: Table) -> None:
        names = {n["feature"] for t in self._model["trees"] for n in t if n.get("owner") == "guest"}
        self._X = {c: _column(table, c, self._order) for c in sorted(names)}
        label = self._model.get("label_column")
        if isinstance(label, str) and label in table:
            y = _column(table, label, self._order)
            if self._model["objective"] == "regression" or (np.all((y == 0) | (y == 1)) and 0 < y.sum() < len(y)):
                self._y = y

    def _check_host_model(self, host: str, commit: bytes) -> None:
        if self._model["host_commitments"].get(host) != commit.hex():
            raise ProtocolError(
                f"host {host!r} answers with a model other than the one it committed to in training task "
                f"{self._p['model_task']}"
            )

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
        self._result = canonical_json(result)
        self._result_hash = COMMITMENT.result_hash(self._salt(), self._result)
        self._done = True
        self._decisions.clear()
        self.report(1.0, "scored; the guest holds the scores")
        return [self.send(h, ROUND_RESULT, KIND_RESULT, self._result_hash) for h in self._hosts]

    def _salt(self) -> bytes:
        return self.secret_bytes("hetero-sbt-predict/result-salt", 32)

    def commitment_opening(self) -> bytes:
        return super().commitment_opening() + self._salt()


@dataclass(eq=False)
class HeteroSbtPredictHost(HeteroSbtPredictProtocol):
    """A host: answers every split of its table for every row, in one message."""

    role: ClassVar[str] = "host"

    _bits: bytes = field(default=b"", init=False, repr=False)

    def _load_role_model(self, state: dict[str, Any]) -> None:
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

    def _read_columns(self, table: Table) -> None:
        columns: dict[str, np.ndarray] = {}
        rows: list[bytes] = []
        for s in self._model["splits"]:
            c = s["feature"]
            if c not in columns:
                columns[c] = _column(table, c, self._order)
            rows.append(np.packbits(columns[c] <= float(s["threshold"])).tobytes())
        self._bits = b"".join(rows)

    def _after_setup(self) -> list[Message]:
        self._commits[self.ctx.me] = self._commitment
        self.report(0.5, "sent split decisions to the guest")
        return [self.send(self._guest, ROUND_DECISIONS, KIND_DECISIONS, part) for part in frames(self._bits)]

    def _on_message(self, msg: Message) -> list[Message] | None:
        if (msg.kind, msg.round) != (KIND_RESULT, ROUND_RESULT) or msg.sender != self._guest:
            return None
        if self._result_hash is not None or len(self._setups) < len(self.ctx.peers):
            raise ProtocolError(f"unexpected result hash from {msg.sender!r}")
        if len(msg.payload) != 32:
            raise ProtocolError(f"result hash from the guest has {len(msg.payload)} bytes, expected 32")
        self._result_hash = msg.payload
        self._done = True
        self.report(1.0, "done; the guest holds the scores")
        return []
