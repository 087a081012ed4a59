"""Horizontal federated learning (FedAvg) with dropout-tolerant secure aggregation.

Parties P_0..P_{N-1} (N >= 3, on-chain order) hold rows with the same feature columns and a
0/1 label column. The recipient S is one of them and acts as the aggregator ("server"); it
trains on its own rows too. R = params.rounds training rounds are followed by one
evaluation round, A = R + 1 aggregation rounds in all, each a secure sum (Bonawitz et al.,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017). The
transport already encrypts and signs every message point to point, so shares travel party
to party directly instead of through the server.

Setup (message round 0)
  "keys"    P_i -> every peer: for each aggregation round a = 1..A an X25519 public key
            pk_{i,a} and c_{i,a} = SHA-256 commitment to the self-mask seed b_{i,a}. The
            private keys and seeds come from the party's secret seed (`secret_bytes`),
            so a resumed worker replays the same keys.
  "shares"  P_i -> P_j (only with dropout_tolerance): for every a, Shamir shares (threshold
            t, field GF(2^521 - 1), x = j + 1) of sk_{i,a} and of b_{i,a}. Every party
            keeps its own share too, so S holds one share of every secret.

Aggregation round a (message round a)
  "model"   S -> each active party: the active set A_a (bitmask) and the global model
            theta_{a-1} (float64). theta_0 is a public function of the params.
  "update"  P_i -> S: y_i = x_i + sum_{j in A_a, j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij)
            + PRG(b_{i,a}) mod 2^64, where s_ij is from X25519(sk_{i,a}, pk_{j,a}) and PRG
            is ChaCha20. x_i (fixed point, see model.py) holds, in training rounds, the
            locally trained model times the party's weight factor and the weight factor;
            in every round, metrics of theta_{a-1} on the party's rows (BCE sum, correct
            predictions, rows, logit histograms of positives and negatives for the AUC).
  "unmask"  S -> each party in U_a (those whose update S got): the set U_a. With
            dropout_tolerance only; without it the masks cancel as soon as all of A_a
            sent, and any dropout fails the task.
  "unmask-shares" P_j -> S: its shares of sk_{u,a} for each u in A_a \\ U_a (dropped) and
            of b_{v,a} for each v in U_a, never both for one party in one round. A party
            refuses a set smaller than max(t, 3) or not inside A_a.
  S reconstructs from t shares (its own first), checks each key against pk_{u,a} and each
  seed against c_{u,a}, removes the dropped parties' pairwise masks and the survivors'
  self-masks, and decodes: theta_a = sum(w_i q_i) / (sum(w_i) 2^24) over U_a, metrics of
  theta_{a-1} over U_a. A_{a+1} = the parties that answered "unmask". A party whose
  "unmask-shares" S never got is dropped from the next round on; its update stays in
  round a's sum and its self-mask seed is rebuilt from the others' shares.

End (message round A + 1)
  "result-hash" S -> each remaining party: h = SHA-256("pcn/fedavg/result/v1" | salt |
  result) with S's secret 32-byte salt.

Every remaining party commits to SHA-256("pcn/fedavg/commit/v1" | K | M | h), with K the
digest of all parties' setup keys and M a running digest of the "model" messages; the two
agree exactly when everyone saw the same keys and the same sequence of global models.
S's `commitment_opening()` is K | M | salt.

Seeds are fresh per aggregation round: a survivor's self-mask seed of round a is revealed
(rebuilt) in round a, and its mask key of round a never is, so nothing of an earlier round
becomes unmaskable when a party drops later.

What each party learns. S: for every round the sum of the weighted updates, the total
weight and the metric sums over the parties in U_a (its own included), and who dropped;
with its own contribution known, that is the sum over the others, so every aggregate
must have at least two contributors besides S (else ProtocolError: a lone survivor's
update would be revealed). Differences between rounds with different U_a are aggregates
of the difference (e.g. the row count of a party that dropped); no DP noise is added.
Other parties: the global model of every round, the active sets, the result hash. Nobody
sees another party's rows or individual update. Security model: semi-honest parties (S
sends every party the same sets; it holds one share of every secret itself), and the
transport authenticates every message; corrupt updates are caught only when they break
the range checks. S together with t - 1 other parties holds t shares of everything and
could unmask individual updates; any smaller coalition learns nothing more.

Dropouts. `params.simulate_dropout` = {address: round | {"round", "phase"}} makes a party
stop sending before its update ("update") or before its unmask shares ("unmask") of that
round; S, reading the same params, does not wait for it. In the real runtime a party that
misses a deadline is reported with `declare_dropped` at S (see there).

Classes: `FedAvgProtocol`, the class registered for the kind, holds what every party does
(setup keys and shares, masked updates, unmask shares, the commitment); `FedAvgAggregator` is S,
which also runs the rounds and aggregates, `FedAvgParty` every other party.
`FedAvgProtocol.create(ctx, data)` builds the class of the party's role.

Result (canonical JSON, at S only): {"algorithm": "fedavg", "params", "participants",
"aggregator", "threshold", "rounds": [{"round", "kind": "train" | "evaluate",
"contributors", "dropped", "weight_total"}], "metrics": [{"model_after_round", "loss",
"accuracy", "auc", "samples", "parties"}], "final", "dropped": {address: {"round",
"phase"}}, "model": {"type", "features", "label_column", "activation", "output",
"standardize", "layers": [{"weights", "bias"}]}, "secure_aggregation": {...}}.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pcn.algorithms.base import CommitmentScheme, Message, PartyContext, Protocol, ProtocolError, canonical_json
from pcn.algorithms.fedavg import model as mdl
from pcn.algorithms.fedavg import secagg
from pcn.algorithms.fedavg.params import resolve_threshold
from pcn.algorithms.fedavg.params import validate_params as _validate_params

RESULT_DOMAIN = b"pcn/fedavg/result/v1"
COMMIT_DOMAIN = b"pcn/fedavg/commit/v1"
KEYS_DOMAIN = b"pcn/fedavg/keys/v2"
MODELS_DOMAIN = b"pcn/fedavg/models/v2"
DIGEST_BYTES = 32
MIN_CONTRIBUTORS = 3  # the aggregator and at least two others in every aggregate

ROUND_SETUP = 0
KIND_KEYS, KIND_SHARES = "keys", "shares"
KIND_MODEL, KIND_UPDATE, KIND_UNMASK, KIND_UNMASK_SHARES = "model", "update", "unmask", "unmask-shares"
KIND_RESULT = "result-hash"

KEY_RECORD = 2 * secagg.KEY_BYTES  # pk | seed commitment, per aggregation round
SHARE_RECORD = 2 * secagg.ELEMENT_BYTES  # share of sk | share of b, per aggregation round

# The aggregator's opening is K | M | salt.
COMMITMENT = CommitmentScheme(
    RESULT_DOMAIN,
    COMMIT_DOMAIN,
    head_unit=DIGEST_BYTES,
    min_head=2 * DIGEST_BYTES,
    max_head=2 * DIGEST_BYTES,
    error="a fedavg opening is keys digest | models digest | salt, 32 bytes each",
)


@dataclass(eq=False)
class FedAvgProtocol(Protocol):
    name: ClassVar[str] = "fedavg"
    participant_range: ClassVar[tuple[int, int]] = (3, 0xFFFF)
    commitment: ClassVar[CommitmentScheme] = COMMITMENT
    dropout_tolerant: ClassVar[bool] = True
    role: ClassVar[str]  # "aggregator" or "party"

    _params: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _threshold: int | None = field(default=None, init=False, repr=False)
    _sim: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _shapes: list[tuple[int, int]] = field(default_factory=list, init=False, repr=False)
    _num_params: int = field(default=0, init=False, repr=False)
    _x: np.ndarray | None = field(default=None, init=False, repr=False)
    _y: np.ndarray | None = field(default=None, init=False, repr=False)
    # setup
    _keys: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)  # party -> "keys" payload
    _held: dict[str, list[tuple[int, int]]] = field(default_factory=dict, init=False, repr=False)
    # rounds
    _round: int = field(default=0, init=False, repr=False)
    _active: list[str] = field(default_factory=list, init=False, repr=False)
    _survivors: list[str] = field(default_factory=list, init=False, repr=False)
    _models_digest: bytes = field(default=b"", init=False, repr=False)
    _dropped_at: dict[str, Any] | None = field(default=None, init=False, repr=False)
    # own x_i (and, at S, the unmasked sums) of the last round, or of every round with _trace
    _trace: bool = field(default=False, init=False, repr=False)
    _plain: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    # outcome
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        ctx = self.ctx
        n = len(ctx.participants)
        if n < 3 or len(set(ctx.participants)) != n:
            raise ProtocolError("fedavg needs at least 3 distinct participants")
        self._check_context("the aggregator")
        if not isinstance(self, self.role_class(ctx)):
            raise ProtocolError(f"{type(self).__name__} plays the {self.role}, which {ctx.me!r} is not in this task")
        self._params = self.validate_params(ctx.params)
        p = self._params
        self._threshold = resolve_threshold(p, n)
        by_lower = {q.lower(): q for q in ctx.participants}
        for who, when in p["simulate_dropout"].items():
            if who not in by_lower:
                raise ProtocolError(f"invalid fedavg params: 'simulate_dropout' names {who!r}, not a participant")
            if by_lower[who] == ctx.recipient:
                raise ProtocolError("invalid fedavg params: the recipient aggregates and cannot drop out")
            self._sim[by_lower[who]] = when
        self._shapes = mdl.layer_shapes(len(p["features"]), p["hidden"])
        self._num_params = mdl.num_parameters(self._shapes)
        self._active = list(ctx.participants)
        self._models_digest = hashlib.sha256(MODELS_DOMAIN + ctx.binding).digest()

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        """The params normalised (defaults filled in); ProtocolError on anything wrong."""
        return _validate_params(params)

    @classmethod
    def role_class(cls, ctx: PartyContext) -> type[FedAvgProtocol]:
        """The aggregator's class for the recipient, the parties' for every other participant."""
        return FedAvgAggregator if ctx.is_recipient else FedAvgParty

    # -- small helpers ------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        return self._params

    @property
    def threshold(self) -> int | None:
        return self._threshold

    @property
    def num_aggregations(self) -> int:
        return int(self._params["rounds"]) + 1

    @property
    def dropped_at(self) -> dict[str, Any] | None:
        """Where this party dropped out ({"round", "phase"}), or None."""
        return self._dropped_at

    def _index(self, party: str) -> int:
        return self.ctx.participants.index(party)

    def _mask_private(self, round_: int) -> bytes:
        return self.secret_bytes(f"mask-key/{round_}", secagg.KEY_BYTES)

    def _self_seed(self, round_: int) -> bytes:
        return self.secret_bytes(f"self-mask/{round_}", secagg.KEY_BYTES)

    def _vector_size(self, round_: int) -> int:
        training = self._num_params + 1 if round_ <= self._params["rounds"] else 0
        return training + mdl.METRIC_SIZE

    def _public_key(self, party: str, round_: int) -> bytes:
        off = (round_ - 1) * KEY_RECORD
        return self._keys[party][off : off + secagg.KEY_BYTES]

    def _seed_commitment(self, party: str, round_: int) -> bytes:
        off = (round_ - 1) * KEY_RECORD + secagg.KEY_BYTES
        return self._keys[party][off : off + secagg.KEY_BYTES]

    def _simulated(self, party: str, round_: int, phase: str) -> bool:
        when = self._sim.get(party)
        return when is not None and when["round"] == round_ and when["phase"] == phase

    def _keys_digest(self) -> bytes:
        h = hashlib.sha256(KEYS_DOMAIN + self.ctx.binding)
        for party in self.ctx.participants:
            name = party.encode()
            h.update(len(name).to_bytes(4, "big") + name + self._keys[party])
        return h.digest()

    def _min_survivors(self) -> int:
        return max(self._threshold or 0, MIN_CONTRIBUTORS)

    # -- setup --------------------------------------------------------------------------

    def start(self) -> list[Message]:
        self._mark_started()
        ctx, p = self.ctx, self._params
        self.report(0.0, "reading the training rows")
        self._x, self._y = mdl.prepare_data(self.data, p)
        rounds = range(1, self.num_aggregations + 1)
        me = ctx.index
        keys = b"".join(
            secagg.public_bytes(self._mask_private(a)) + secagg.seed_commitment(self._self_seed(a), ctx.binding, a, me)
            for a in rounds
        )
        self._keys[ctx.me] = keys
        out = [self.send(peer, ROUND_SETUP, KIND_KEYS, keys) for peer in ctx.peers]
        if self._threshold is not None:
            xs = [i + 1 for i in range(len(ctx.participants))]
            t = self._threshold
            per_party: list[list[tuple[int, int]]] = [[] for _ in xs]
            for a in rounds:
                sk = int.from_bytes(self._mask_private(a), "big")
                b = int.from_bytes(self._self_seed(a), "big")
                sk_shares = secagg.share(sk, t, xs, self.secret_bytes(f"shamir/sk/{a}", secagg.COEFF_BYTES * (t - 1)))
                b_shares = secagg.share(b, t, xs, self.secret_bytes(f"shamir/b/{a}", secagg.COEFF_BYTES * (t - 1)))
                for k in range(len(xs)):
                    per_party[k].append((sk_shares[k], b_shares[k]))
            self._held[ctx.me] = per_party[me]
            for peer in ctx.peers:
                flat = [v for pair in per_party[self._index(peer)] for v in pair]
                out.append(self.send(peer, ROUND_SETUP, KIND_SHARES, secagg.encode_elements(flat)))
        self.report(
            0.02, f"sent setup keys{' and Shamir shares' if self._threshold else ''} to {len(ctx.peers)} parties"
        )
        return out + self._maybe_ready()

    def _ready(self) -> bool:
        parties = len(self.ctx.participants)
        return len(self._keys) == parties and (self._threshold is None or len(self._held) == parties)

    def _maybe_ready(self) -> list[Message]:
        if not self._ready():
            return []
        return self._on_ready()

    @abstractmethod
    def _on_ready(self) -> list[Message]:
        """What this party does once it holds every party's setup keys (and shares)."""

    # -- dispatch -----------------------------------------------------------------------

    def receive(self, msg: Message) -> list[Message]:
        self._check_delivery(msg)
        if self._dropped_at is not None:
            return []  # a party that dropped out hears nothing any more
        if msg.round == ROUND_SETUP and msg.kind == KIND_KEYS:
            self._expect(msg, msg.sender not in self._keys, KEY_RECORD * self.num_aggregations)
            self._keys[msg.sender] = msg.payload
            return self._maybe_ready()
        if msg.round == ROUND_SETUP and msg.kind == KIND_SHARES:
            if self._threshold is None:
                raise ProtocolError(f"{msg.sender!r} sent Shamir shares but dropout_tolerance is off")
            self._expect(msg, msg.sender not in self._held, SHARE_RECORD * self.num_aggregations)
            values = secagg.decode_elements(msg.payload, f"setup shares from {msg.sender!r}")
            self._held[msg.sender] = list(zip(values[0::2], values[1::2], strict=True))
            return self._maybe_ready()
        return self._on_round_message(msg)

    @abstractmethod
    def _on_round_message(self, msg: Message) -> list[Message]:
        """A message of an aggregation round or of the end (setup messages are handled above)."""

    @staticmethod
    def _expect(msg: Message, first: bool, length: int) -> None:
        if not first:
            raise ProtocolError(f"duplicate {msg.kind!r} message from {msg.sender!r} (round {msg.round})")
        if len(msg.payload) != length:
            raise ProtocolError(
                f"{msg.kind!r} message from {msg.sender!r} has {len(msg.payload)} bytes, expected {length}"
            )

    # -- what every party does in a round ---------------------------------------------

    def _note_model(self, r: int, payload: bytes) -> None:
        self._models_digest = hashlib.sha256(self._models_digest + r.to_bytes(4, "big") + payload).digest()

    def _masked_update(self, r: int, theta: np.ndarray) -> np.ndarray:
        """x_i of this round plus its pairwise masks and its self-mask, in Z_{2^64}."""
        ctx, p = self.ctx, self._params
        assert self._x is not None and self._y is not None
        x, y = self._x, self._y
        parts = []
        if r <= p["rounds"]:
            trained = mdl.local_train(theta, x, y, p, lambda e: self.secret_permutation(f"minibatch/{r}/{e}", len(y)))
            parts.append(mdl.encode_update(trained, mdl.weight_factor(len(y), p), len(ctx.participants)))
        parts.append(mdl.encode_metrics(*mdl.evaluate(theta, x, y, p)))
        plain = mdl.to_ring(np.concatenate(parts))
        if not self._trace:
            self._plain.clear()
        self._plain[r] = plain.copy()
        masked = plain.copy()
        me, sk = ctx.index, self._mask_private(r)
        size = len(plain)
        for peer in self._active:
            if peer == ctx.me:
                continue
            j = self._index(peer)
            mask = secagg.expand(secagg.pair_key(sk, self._public_key(peer, r), ctx.binding, r, me, j), size)
            if me < j:
                masked += mask
            else:
                masked -= mask
        if self._threshold is not None:
            masked += secagg.expand(secagg.self_key(self._self_seed(r), ctx.binding, r, me), size)
        return masked

    def _shares_for(self, r: int, survivors: list[str]) -> list[int]:
        """This party's shares of sk_{u,r} for dropped u, then of b_{v,r} for surviving v."""
        dropped = [q for q in self._active if q not in survivors]
        return [self._held[u][r - 1][0] for u in dropped] + [self._held[v][r - 1][1] for v in survivors]

    def awaiting(self) -> list[str]:
        """The parties this party is waiting for right now (for the runtime's deadline: at the
        aggregator, whom `declare_dropped` would name)."""
        ctx = self.ctx
        if self._done or not self._started:
            return []
        if not self._ready():
            missing = [q for q in ctx.peers if q not in self._keys]
            if self._threshold is not None:
                missing += [q for q in ctx.peers if q not in self._held and q not in missing]
            return [q for q in ctx.participants if q in missing]
        return self._awaiting_in_round()

    @abstractmethod
    def _awaiting_in_round(self) -> list[str]:
        """`awaiting` once the setup round is over."""

    def declare_dropped(self, parties: Iterable[str]) -> list[Message]:
        """The runtime's hook for real dropouts, at the aggregator only (see there); at any
        other party, ProtocolError."""
        raise ProtocolError("only the aggregator (the recipient) can declare parties dropped")

    # -- outcome ------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    def result_commitment(self) -> bytes:
        if self._dropped_at is not None:
            raise ProtocolError(
                f"this party dropped out in round {self._dropped_at['round']} and has no result commitment"
            )
        if not self._done or self._result_hash is None:
            raise ProtocolError("the fedavg protocol has not finished")
        return COMMITMENT.commit(self._keys_digest() + self._models_digest, self._result_hash)

    def commitment_opening(self) -> bytes:
        """K | M (keys and models digests), followed at the recipient by its 32-byte result
        salt; with the result bytes, `commitment_for` recomputes `result_commitment()`."""
        if not self._done or self._result_hash is None:
            raise ProtocolError("the fedavg protocol has not finished")
        return self._keys_digest() + self._models_digest


@dataclass(eq=False)
class FedAvgAggregator(FedAvgProtocol):
    """S, the recipient: a party that also runs the rounds, unmasks the sums and builds the result."""

    role: ClassVar[str] = "aggregator"

    _phase: str = field(default="setup", init=False, repr=False)
    _theta: np.ndarray | None = field(default=None, init=False, repr=False)
    _updates: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _unmask: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    _gone: set[str] = field(default_factory=set, init=False, repr=False)
    _dropped: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _rounds_log: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _metrics: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _aggregates: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)  # unmasked sums

    def _salt(self) -> bytes:
        return self.secret_bytes("result-salt", 32)

    def _on_ready(self) -> list[Message]:
        if self._phase != "setup":
            return []
        self._theta = mdl.initial_model(self._params)
        return self._start_round(1)

    def _on_round_message(self, msg: Message) -> list[Message]:
        if msg.sender in self._gone:
            return []  # declared dropped: whatever it still sends is too late and discarded
        if msg.kind == KIND_UPDATE:
            return self._on_update(msg)
        if msg.kind == KIND_UNMASK_SHARES:
            return self._on_unmask_shares(msg)
        raise ProtocolError(f"unexpected message round {msg.round} kind {msg.kind!r} from {msg.sender!r}")

    def _start_round(self, r: int) -> list[Message]:
        ctx = self.ctx
        assert self._theta is not None
        if len(self._active) < self._min_survivors():
            raise ProtocolError(self._too_few(r, len(self._active), "are still active"))
        n = len(ctx.participants)
        payload = secagg.encode_set([self._index(q) for q in self._active], n) + self._theta.astype("<f8").tobytes()
        self._note_model(r, payload)
        self._round, self._phase = r, "update"
        self._updates, self._unmask, self._survivors = {}, {}, []
        out = [self.send(peer, r, KIND_MODEL, payload) for peer in self._active if peer != ctx.me]
        self._updates[ctx.me] = self._masked_update(r, self._theta)
        return out + self._close_updates()

    def _too_few(self, r: int, have: int, what: str) -> str:
        t = self._threshold
        need = self._min_survivors()
        why = (
            f"the Shamir threshold is t={t}"
            if t is not None and t >= MIN_CONTRIBUTORS
            else "every aggregate needs the aggregator and at least two other parties, or a lone survivor's "
            "update would be revealed"
        )
        gone = sorted(self._dropped)
        return f"round {r}: only {have} parties {what}, fewer than {need} ({why}); dropped so far: {gone}"

    def _on_update(self, msg: Message) -> list[Message]:
        r = msg.round
        if self._phase != "update" or r != self._round:
            raise ProtocolError(
                f"masked update for round {r} from {msg.sender!r} while the aggregator is in round "
                f"{self._round} ({self._phase})"
            )
        if msg.sender not in self._active:
            raise ProtocolError(f"masked update from {msg.sender!r}, which is not active in round {r}")
        self._expect(msg, msg.sender not in self._updates, 8 * self._vector_size(r))
        self._updates[msg.sender] = np.frombuffer(msg.payload, dtype="<u8").astype(np.uint64)
        return self._close_updates()

    def _close_updates(self) -> list[Message]:
        ctx, r = self.ctx, self._round
        if self._phase != "update" or self.awaiting():
            return []
        survivors = [q for q in self._active if q in self._updates]
        dropped = [q for q in self._active if q not in self._updates]
        for q in dropped:
            self._dropped[q] = {"round": r, "phase": "update"}
        if self._threshold is None:
            if dropped:
                raise ProtocolError(
                    f"round {r}: {dropped} sent no masked update and dropout_tolerance is off; "
                    "their pairwise masks cannot be removed"
                )
            self._survivors = survivors
            return self._finish_round(self._sum(survivors))
        if len(survivors) < self._min_survivors():
            raise ProtocolError(self._too_few(r, len(survivors), "sent their masked update"))
        self._survivors = survivors
        self._phase = "unmask"
        payload = secagg.encode_set([self._index(q) for q in survivors], len(ctx.participants))
        out = [self.send(q, r, KIND_UNMASK, payload) for q in survivors if q != ctx.me]
        self._unmask[ctx.me] = self._shares_for(r, survivors)
        return out + self._close_unmask()

    def _on_unmask_shares(self, msg: Message) -> list[Message]:
        r = msg.round
        if self._phase != "unmask" or r != self._round:
            raise ProtocolError(
                f"unmask shares for round {r} from {msg.sender!r} while the aggregator is in round "
                f"{self._round} ({self._phase})"
            )
        if msg.sender not in self._survivors:
            raise ProtocolError(f"unmask shares from {msg.sender!r}, which was not asked in round {r}")
        self._expect(msg, msg.sender not in self._unmask, secagg.ELEMENT_BYTES * len(self._active))
        self._unmask[msg.sender] = secagg.decode_elements(msg.payload, f"unmask shares from {msg.sender!r}")
        return self._close_unmask()

    def _close_unmask(self) -> list[Message]:
        r, ctx = self._round, self.ctx
        if self._phase != "unmask" or self.awaiting():
            return []
        responders = [ctx.me] + [q for q in self._survivors if q in self._unmask and q != ctx.me]
        t = self._threshold
        assert t is not None
        if len(responders) < t:
            raise ProtocolError(
                f"round {r}: only {len(responders)} parties sent their unmask shares, fewer than the threshold t={t}; "
                f"the aggregate cannot be unmasked (dropped so far: {sorted(self._dropped)})"
            )
        for q in self._survivors:
            if q not in self._unmask:
                self._dropped[q] = {"round": r, "phase": "unmask"}
        self.report(r / (self.num_aggregations + 1), f"round {r}: reconstructing masks from {t} of {len(responders)}")
        total = self._sum(self._survivors)
        dropped = [q for q in self._active if q not in self._survivors]
        xs = [self._index(q) + 1 for q in responders[:t]]
        size = len(total)
        for k, u in enumerate(dropped):
            value = secagg.reconstruct(list(zip(xs, [self._unmask[q][k] for q in responders[:t]], strict=True)))
            if value >= 1 << 256:
                raise ProtocolError(
                    f"round {r}: the shares of {u!r}'s mask key are inconsistent (a share was corrupted)"
                )
            sk = value.to_bytes(secagg.KEY_BYTES, "big")
            if secagg.public_bytes(sk) != self._public_key(u, r):
                raise ProtocolError(
                    f"round {r}: the shares of {u!r}'s mask key do not rebuild its public key (a share was corrupted)"
                )
            iu = self._index(u)
            for v in self._survivors:
                iv = self._index(v)
                mask = secagg.expand(secagg.pair_key(sk, self._public_key(v, r), ctx.binding, r, iu, iv), size)
                if iv < iu:
                    total -= mask  # v added +mask for the higher-indexed u
                else:
                    total += mask
        for k, v in enumerate(self._survivors, start=len(dropped)):
            value = secagg.reconstruct(list(zip(xs, [self._unmask[q][k] for q in responders[:t]], strict=True)))
            seed = value.to_bytes(secagg.KEY_BYTES, "big") if value < 1 << 256 else b""
            iv = self._index(v)
            if not seed or secagg.seed_commitment(seed, ctx.binding, r, iv) != self._seed_commitment(v, r):
                raise ProtocolError(
                    f"round {r}: the shares of {v!r}'s self-mask seed do not match its commitment "
                    "(a share was corrupted)"
                )
            total -= secagg.expand(secagg.self_key(seed, ctx.binding, r, iv), size)
        self._active = [q for q in self._active if q in responders]
        return self._finish_round(total)

    def _sum(self, parties: list[str]) -> np.ndarray:
        total = np.zeros(self._vector_size(self._round), dtype=np.uint64)
        for q in parties:
            total += self._updates[q]
        return total

    def _finish_round(self, total: np.ndarray) -> list[Message]:
        r, p = self._round, self._params
        if not self._trace:
            self._aggregates.clear()
        self._aggregates[r] = total.copy()
        values = mdl.signed(total)
        training = r <= p["rounds"]
        weight: int | None = None
        if training:
            theta, weight = mdl.decode_average(values[: self._num_params + 1], self._num_params)
            metrics = mdl.decode_metrics(values[self._num_params + 1 :])
        else:
            metrics = mdl.decode_metrics(values)
        dropped_now = sorted(q for q, when in self._dropped.items() if when["round"] == r)
        self._rounds_log.append(
            {
                "round": r,
                "kind": "train" if training else "evaluate",
                "contributors": list(self._survivors),
                "dropped": dropped_now,
                "weight_total": weight,
            }
        )
        self._metrics.append({"model_after_round": r - 1, "parties": len(self._survivors), **metrics})
        if training:
            self._theta = theta
        self.report(  # loss and accuracy are result-derived: never in progress
            r / (self.num_aggregations + 1),
            (f"round {r}/{p['rounds']}" if training else "final evaluation")
            + f": model after round {r - 1} evaluated"
            + (f"; dropped {dropped_now}" if dropped_now else ""),
        )
        self._updates, self._unmask = {}, {}
        if r < self.num_aggregations:
            return self._start_round(r + 1)
        return self._finish()

    def _finish(self) -> list[Message]:
        ctx, p = self.ctx, self._params
        assert self._theta is not None
        doc = {
            "algorithm": self.name,
            "params": p,
            "participants": list(ctx.participants),
            "aggregator": ctx.recipient,
            "threshold": self._threshold,
            "rounds": self._rounds_log,
            "metrics": self._metrics,
            "final": self._metrics[-1],
            "dropped": {q: self._dropped[q] for q in ctx.participants if q in self._dropped},
            "model": mdl.model_document(self._theta, p),
            "secure_aggregation": {
                "ring": "Z_2^64",
                "fraction_bits": mdl.FRAC_BITS,
                "pairwise_masks": "X25519 seeds expanded with ChaCha20",
                "self_masks": "ChaCha20" if self._threshold is not None else None,
                "secret_sharing": "Shamir over GF(2^521 - 1)" if self._threshold is not None else None,
            },
        }
        self._result = canonical_json(doc)
        self._result_hash = COMMITMENT.result_hash(self._salt(), self._result)
        self._phase = "done"
        self._done = True
        out = [
            self.send(q, self.num_aggregations + 1, KIND_RESULT, self._result_hash) for q in self._active if q != ctx.me
        ]
        self.report(1.0, "done; the aggregator holds the model")
        return out

    def _awaiting_in_round(self) -> list[str]:
        if self._phase == "update":
            got: dict[str, Any] = self._updates
            parties, phase = self._active, "update"
        else:
            got, parties, phase = self._unmask, self._survivors, "unmask"
        r = self._round
        return [q for q in parties if q not in got and q not in self._gone and not self._simulated(q, r, phase)]

    def declare_dropped(self, parties: Iterable[str]) -> list[Message]:
        """The runtime's hook for real dropouts, at the aggregator only: stop waiting for
        these parties (a deadline passed) and go on with the others. Their late messages
        are discarded. For resumption the runtime must log the call and replay it at the
        same point among the incoming messages, like a message."""
        ctx = self.ctx
        if not self._started or self._done:
            raise ProtocolError("declare_dropped outside the training rounds")
        names = list(parties)
        for q in names:
            if q not in ctx.peers:
                raise ProtocolError(f"cannot declare {q!r} dropped: not a peer in this task")
        if self._phase == "setup":
            raise ProtocolError(
                f"{names} did not finish the setup round; fedavg tolerates dropouts only once training has started"
            )
        self._gone.update(names)
        return self._close_updates() if self._phase == "update" else self._close_unmask()

    # -- outcome ------------------------------------------------------------------------

    def commitment_opening(self) -> bytes:
        return super().commitment_opening() + self._salt()


@dataclass(eq=False)
class FedAvgParty(FedAvgProtocol):
    """Every participant but the recipient: it trains on its rows and answers the aggregator."""

    role: ClassVar[str] = "party"

    _pending: list[Message] = field(default_factory=list, init=False, repr=False)
    _answered: bool = field(default=False, init=False, repr=False)

    def _on_ready(self) -> list[Message]:
        out: list[Message] = []
        pending, self._pending = self._pending, []
        for msg in pending:
            if self._dropped_at is None:
                out += self._from_server(msg)
        return out

    def _on_round_message(self, msg: Message) -> list[Message]:
        if msg.kind in (KIND_MODEL, KIND_UNMASK, KIND_RESULT):
            if msg.sender != self.ctx.recipient:
                raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r}, who is not the aggregator")
            if not self._ready():
                self._pending.append(msg)
                return []
            return self._from_server(msg)
        raise ProtocolError(f"unexpected message round {msg.round} kind {msg.kind!r} from {msg.sender!r}")

    def _from_server(self, msg: Message) -> list[Message]:
        if msg.kind == KIND_MODEL:
            return self._on_model(msg)
        if msg.kind == KIND_UNMASK:
            return self._on_unmask(msg)
        return self._on_result(msg)

    def _drop(self, round_: int, phase: str) -> list[Message]:
        self._dropped_at = {"round": round_, "phase": phase}
        self._done = True
        self.report(1.0, f"simulated dropout in round {round_} before sending its {phase}")
        return []

    def _on_model(self, msg: Message) -> list[Message]:
        n = len(self.ctx.participants)
        r = msg.round
        if r != self._round + 1 or r > self.num_aggregations or (self._round and not self._answered):
            raise ProtocolError(f"global model for round {r} arrived while in round {self._round}")
        set_bytes = (n + 7) // 8
        self._expect(msg, True, set_bytes + 8 * self._num_params)
        active = [self.ctx.participants[i] for i in secagg.decode_set(msg.payload[:set_bytes], n)]
        self._check_active(active, r)
        theta = np.frombuffer(msg.payload[set_bytes:], dtype="<f8").astype(np.float64)
        if not np.all(np.isfinite(theta)):
            raise ProtocolError(f"the global model of round {r} holds a non-finite weight")
        self._note_model(r, msg.payload)
        self._round, self._active, self._answered, self._survivors = r, active, False, []
        if self._simulated(self.ctx.me, r, "update"):
            return self._drop(r, "update")
        update = self._masked_update(r, theta)
        self._answered = self._threshold is None  # without dropout tolerance there is no unmask step
        self.report(r / (self.num_aggregations + 1), f"round {r}: masked update sent to the aggregator")
        return [self.send(self.ctx.recipient, r, KIND_UPDATE, update.astype("<u8").tobytes())]

    def _check_active(self, active: list[str], r: int) -> None:
        ctx = self.ctx
        if ctx.me not in active or ctx.recipient not in active:
            raise ProtocolError(f"round {r}: the active set must include this party and the aggregator")
        allowed = self._survivors or self._active  # the previous round's survivors, once known
        if not set(active) <= set(allowed):
            raise ProtocolError(f"round {r}: the active set re-admits a party that had dropped out")
        if self._threshold is None and len(active) != len(ctx.participants):
            raise ProtocolError(f"round {r}: parties dropped out but dropout_tolerance is off")
        if len(active) < self._min_survivors():
            raise ProtocolError(f"round {r}: {len(active)} active parties, fewer than {self._min_survivors()}")

    def _on_unmask(self, msg: Message) -> list[Message]:
        r = msg.round
        if self._threshold is None:
            raise ProtocolError("unmask request, but dropout_tolerance is off")
        if r != self._round or self._answered or self._survivors:
            raise ProtocolError(f"unmask request for round {r} while in round {self._round}")
        n = len(self.ctx.participants)
        survivors = [self.ctx.participants[i] for i in secagg.decode_set(msg.payload, n)]
        if not set(survivors) <= set(self._active) or self.ctx.me not in survivors:
            raise ProtocolError(f"round {r}: the survivor set must lie inside the active set and include this party")
        if self.ctx.recipient not in survivors:
            raise ProtocolError(f"round {r}: the survivor set must include the aggregator")
        if len(survivors) < self._min_survivors():
            raise ProtocolError(
                f"round {r}: the aggregator asks to unmask a sum of {len(survivors)} parties, "
                f"fewer than {self._min_survivors()}; refusing to reveal shares"
            )
        self._survivors = survivors
        if self._simulated(self.ctx.me, r, "unmask"):
            return self._drop(r, "unmask")
        self._answered = True
        payload = secagg.encode_elements(self._shares_for(r, survivors))
        return [self.send(self.ctx.recipient, r, KIND_UNMASK_SHARES, payload)]

    def _on_result(self, msg: Message) -> list[Message]:
        if (
            msg.round != self.num_aggregations + 1
            or self._round != self.num_aggregations
            or not self._answered
            or self._result_hash is not None
        ):
            raise ProtocolError(f"result hash arrived in round {self._round}, before the last aggregation")
        self._expect(msg, True, DIGEST_BYTES)
        self._result_hash = msg.payload
        self._done = True
        self.report(1.0, "done; the aggregator holds the model")
        return []

    def _awaiting_in_round(self) -> list[str]:
        return [self.ctx.recipient]
