"""The protocol framework every pcn algorithm is written against.

A protocol is pure: it never touches sockets, Redis or the chain. It is driven by
messages in and messages out, so the same code runs in-process in tests
(`run_local`) and over Celery + signed HTTP in the node runtime.

Determinism is part of the contract: given the same context (including `seed`) and the
same incoming messages in the same order, a party emits the same messages with the same
sequence numbers. The runtime relies on it to resume a killed worker by replaying the
messages it had already received; peers drop the duplicates by sequence number.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import typing
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar, Self, TypeGuard

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class ProtocolError(Exception):
    """A peer sent something the protocol cannot accept (wrong round, shape, or value)."""


class ModelUnavailable(ProtocolError):
    """`TaskServices.load_model` holds no model of the task asked for (or not this party's part
    of it): the one error a model store raises, so the protocol can say what is missing."""


# -- results, result hashes and result commitments -----------------------------------------
#
# Every algorithm ends the same way: the recipient serialises its result as canonical JSON,
# broadcasts h_r = SHA-256(RESULT_DOMAIN | salt | result) with a secret 32-byte salt, and every
# party reports SHA-256(COMMIT_DOMAIN | head | h_r), `head` being what all parties saw alike.
# The recipient's opening is head | salt. The domains and the shape of `head` are each
# algorithm's own (its `CommitmentScheme`); the arithmetic lives here once, so
# `commitment_for` (what the auditor re-checks) and `result_commitment` cannot drift apart.

SALT_BYTES = 32
# Bytes a node's inbox may store per message beyond its payload (the message's routing head):
# what `Protocol.inbound_bytes` adds per message to the payloads it expects.
INBOX_ENTRY_ALLOWANCE = 256
# The largest payload one message may carry: a node's mailbox takes envelopes of up to 8 MiB,
# and the envelope (a header of up to 2 KiB, the signature, the AEAD tag) needs the rest.
MAX_PAYLOAD = 8 * 1024 * 1024 - 16 * 1024


def canonical_json(obj: Any, *, ensure_ascii: bool = True) -> bytes:
    """Sorted keys, no whitespace, no NaN or Infinity. `ensure_ascii=False` writes non-ASCII
    text as UTF-8 instead of \\u escapes: different bytes for the same document, so each
    algorithm keeps the variant its results (and hashes of them) have always used."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=False).encode()


def salted_result_hash(domain: bytes, salt: bytes, result: bytes) -> bytes:
    """h_r = SHA-256(domain | salt | result); the salt is the recipient's secret, so h_r
    cannot be used to confirm a guessed result."""
    return hashlib.sha256(domain + salt + result).digest()


@dataclass(frozen=True)
class CommitmentScheme:
    """One algorithm's result hash and result commitment: its two domains and the shape of
    the head of its opening, a multiple of `head_unit` bytes in [min_head, max_head]
    (`max_head` None: no upper bound); `error` is its own message for any other opening."""

    result_domain: bytes
    commit_domain: bytes
    _: KW_ONLY
    head_unit: int
    min_head: int
    error: str
    max_head: int | None = None

    def result_hash(self, salt: bytes, result: bytes) -> bytes:
        return salted_result_hash(self.result_domain, salt, result)

    def commit(self, head: bytes, result_hash: bytes) -> bytes:
        """SHA-256(commit domain | head | h_r), the result commitment every party reports."""
        return hashlib.sha256(self.commit_domain + head + result_hash).digest()

    def open(self, result: bytes, opening: bytes) -> bytes:
        """The commitment `result` with `opening` = head | salt hashes to (`commitment_for`)."""
        size = len(opening) - SALT_BYTES
        if size < self.min_head or size % self.head_unit or (self.max_head is not None and size > self.max_head):
            raise ProtocolError(self.error)
        return self.commit(opening[:size], self.result_hash(opening[size:], result))


# -- parameter checks shared by the algorithms' validate_params ---------------------------
#
# `fail` turns a message into the algorithm's own error ("invalid fedavg params: ...").


def is_finite_number(x: object) -> TypeGuard[int | float]:
    """A JSON number usable as a parameter: int or float, not bool, finite as a float."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def checked_int(v: Any, key: str, lo: int, hi: int, fail: Callable[[str], ProtocolError]) -> int:
    """`v`, the value of integer parameter `key`, if it is an integer in [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise fail(f"{key!r} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise fail(f"{key!r} must be between {lo} and {hi}, got {v}")
    return v


def checked_float(
    v: Any, key: str, lo: float, hi: float, fail: Callable[[str], ProtocolError], *, open_lo: bool
) -> float:
    """`v`, the value of number parameter `key`, as a float in [lo, hi] ((lo, hi] with `open_lo`)."""
    if not is_finite_number(v):
        raise fail(f"{key!r} must be a finite number, got {v!r}")
    f = float(v)
    if (f <= lo if open_lo else f < lo) or f > hi:
        bound = f"> {lo}" if open_lo else f">= {lo}"
        raise fail(f"{key!r} must be {bound} and <= {hi}, got {v!r}")
    return f


@dataclass(frozen=True)
class Message:
    sender: str
    receiver: str
    round: int
    kind: str
    payload: bytes
    seq: int = 0  # per (sender, receiver) counter, assigned by Protocol.send


def local_binding(task_id: int) -> bytes:
    """The binding of a task run in-process without a chain (tests, benchmarks)."""
    return hashlib.sha256(b"pcn/task-binding/local/v1" + task_id.to_bytes(32, "big")).digest()


def secret_permutation(key: bytes, n: int) -> np.ndarray:
    """A uniformly random permutation of range(n) drawn from a CSPRNG: AES-256-CTR under the
    32-byte secret `key` gives every position a 64-bit sort key, and the permutation sorts them.
    I.i.d. keys make every ordering equally likely once they are distinct; a tie (probability
    about n^2 / 2^65) draws all keys again from the next counter range, so the result is exactly
    uniform under AES as a PRF. Deterministic in `key`, which the resume of a task relies on."""
    if len(key) != 32:
        raise ValueError("a permutation key is 32 bytes")
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    for attempt in range(16):
        # The initial counter block puts the attempt in the high 64 bits: ranges never overlap.
        enc = Cipher(algorithms.AES(key), modes.CTR((attempt << 64).to_bytes(16, "big"))).encryptor()
        keys = np.frombuffer(enc.update(bytes(8 * n)), dtype="<u8")
        order = np.argsort(keys, kind="stable")
        ranked = keys[order]
        if not np.any(ranked[1:] == ranked[:-1]):
            return order.astype(np.int64, copy=False)
    raise RuntimeError("16 draws of 64-bit keys all had a tie: the key stream is not random")


# -- per-task services ------------------------------------------------------------------------
#
# What a protocol needs from the node it runs on besides its data and messages. The runtime
# builds them for each task (`pcn.runtime.execute`) and passes them in the party's context, so
# two tasks in one process never share them. No I/O here: only the typed callables.


class TaskCache(typing.Protocol):  # typing's structural type, not a pcn Protocol
    """Where a node keeps reusable preprocessing between tasks (bytes by content-hash key).
    Values must hold no secret; a miss is None."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


class NoCache:
    """A cache that keeps nothing: every task preprocesses."""

    def get(self, key: str) -> bytes | None:
        return None

    def put(self, key: str, value: bytes) -> None:
        """Keeps nothing: the next `get` of `key` is a miss again."""


def _no_epoch_key(label: str) -> bytes:
    raise ProtocolError(f"no organisation epoch key in this context (asked for {label!r}); the node runtime gives one")


def _no_model_store(task_id: int, party: str) -> dict[str, Any]:
    raise ModelUnavailable(f"no model store in this context (asked for task {task_id}); the node runtime gives one")


def _keep_checkpoints_in_memory(epochs_done: int, checkpoint: bytes) -> None:
    """Nowhere to persist a checkpoint: the protocol still keeps its latest one in memory."""


def _no_operator(figures: dict[str, str]) -> None:
    """No operator to show figures to (an in-process run)."""


@dataclass(frozen=True, kw_only=True)
class TaskServices:
    """One task's services at one party, given by name. The defaults suit in-process runs
    (tests, benchmarks): no organisation key and no model store (using either is a
    ProtocolError saying so), checkpoints not persisted, no cache."""

    # label -> 32 secret bytes, stable across this organisation's tasks on one deployment
    # (a key epoch that outlives a task, e.g. the private-query holder's table key).
    epoch_key: Callable[[str], bytes] = _no_epoch_key
    # (training task id, party) -> that party's stored `Protocol.model_state()` of that task;
    # raises ModelUnavailable, and only ModelUnavailable, when there is none.
    load_model: Callable[[int, str], dict[str, Any]] = _no_model_store
    # (epochs done, checkpoint) -> None: persists THIS task's party's latest checkpoint, which
    # a restarted worker passes to `Protocol.resume`.
    save_checkpoint: Callable[[int, bytes], None] = _keep_checkpoints_in_memory
    cache: TaskCache = field(default_factory=NoCache)
    # name -> value shown to THIS organisation's operator alone, beside the task's progress
    # (never to peers or the requester). Only for what this party's own result will hold
    # anyway: the recipient's result-derived figures as they form (README #13.9).
    report_to_operator: Callable[[dict[str, str]], None] = _no_operator


@dataclass
class PartyContext:
    task_id: int
    me: str
    participants: list[str]  # in on-chain order; every party sees the same list
    recipient: str  # the one party that learns the result
    params: dict[str, Any]
    seed: bytes  # this party's secret per-task randomness (32 bytes)
    progress: Callable[[float, str], None] | None = None  # fraction done, what is happening
    id_column: str = ""  # the ID / key column this party registered its dataset with
    # The runtime's parallel map (worker processes); `fn` must be a module-level function.
    # None: run in this process. Protocols call `self.pmap`, never this directly.
    parallel_map: Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]] | None = None
    # The task's public binding (`pcn.chain.binding`: chain id, TaskManager, task id, whole
    # request). Every protocol domain uses it, never the bare task id, which restarts at 1 on a
    # redeployment. The runtime always passes the chain's; an in-process run with no chain
    # (unit tests, benchmarks) that passes none gets `local_binding(task_id)`.
    binding: bytes = b""
    services: TaskServices = field(default_factory=TaskServices)

    def __post_init__(self) -> None:
        if not self.binding and isinstance(self.task_id, int) and 0 <= self.task_id < 2**256:
            self.binding = local_binding(self.task_id)

    @property
    def index(self) -> int:
        return self.participants.index(self.me)

    @property
    def peers(self) -> list[str]:
        return [p for p in self.participants if p != self.me]

    @property
    def is_recipient(self) -> bool:
        return self.me == self.recipient


@dataclass
class Protocol(ABC):
    """One party's side of an algorithm."""

    name: ClassVar[str]
    commitment: ClassVar[CommitmentScheme | None] = None  # the algorithm's result hash and commitment
    # Optional features, off by default; an algorithm that has one sets its flag and overrides
    # the methods that go with it (below), which the runtime then calls.
    # `declare_dropped` and `awaiting`: the recipient can go on without parties that stopped answering.
    dropout_tolerant: ClassVar[bool] = False
    # `resume`, `checkpoint_epoch` and `resume_from`: a restarted worker goes on from the last
    # checkpoint the party saved through `ctx.services.save_checkpoint`.
    resumable: ClassVar[bool] = False
    # How many participants the algorithm takes, inclusive (the task's participant list);
    # `check_participant_count` refuses any other number.
    participant_range: ClassVar[tuple[int, int]] = (2, 0xFFFF)
    ctx: PartyContext
    data: Any
    # After `resume`: per sender, the first incoming sequence number to deliver again.
    resume_from: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _seq: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    # What every algorithm keeps alike: whether start() ran, the result (at the recipient)
    # and h_r, the salted result hash the recipient broadcasts.
    _started: bool = field(default=False, init=False, repr=False)
    _result: bytes | None = field(default=None, init=False, repr=False)
    _result_hash: bytes | None = field(default=None, init=False, repr=False)

    @classmethod
    def role_class(cls, ctx: PartyContext) -> type[Protocol]:
        """The class that plays `ctx.me`'s part in the task: `cls` itself, unless the algorithm
        keeps each role in a class of its own (hetero-lr's guest and hosts, FATE-style); then its
        registered class overrides this to pick the subclass for the party's role."""
        return cls

    @classmethod
    def check_participant_count(cls, n: int) -> None:
        """ProtocolError unless a task of `n` participants is one this algorithm runs. Nodes call
        it in their parameter step (refusing INVALID_PARAMETERS) and `operations.submit_task`
        before anything reaches the chain."""
        lo, hi = cls.participant_range
        if not lo <= n <= hi:
            want = f"exactly {lo}" if lo == hi else f"between {lo} and {hi}"
            raise ProtocolError(f"{cls.name} takes {want} participants, not {n}")

    @classmethod
    def create(cls, ctx: PartyContext, data: Any) -> Self:
        """This party's side of the algorithm: the one way to build a protocol (the runtime,
        tests, benchmarks), so that a role-split algorithm gets the class of the party's role
        (`role_class`). Called on a role's class (or a subclass of it) for a party of that role,
        it builds that class; for a party of another role, ProtocolError."""
        role = cls.role_class(ctx)
        if issubclass(cls, role):
            return cls(ctx, data)
        if issubclass(role, cls):
            return role(ctx, data)
        raise ProtocolError(f"{ctx.me!r} plays the part of {role.__name__} in this task, not of {cls.__name__}")

    def send(self, receiver: str, round_: int, kind: str, payload: bytes) -> Message:
        """Build an outgoing message with the next sequence number for that receiver."""
        seq = self._seq.get(receiver, 0)
        self._seq[receiver] = seq + 1
        return Message(self.ctx.me, receiver, round_, kind, payload, seq)

    def secret_bytes(self, label: str, n: int) -> bytes:
        """n deterministic, secret, uniformly random bytes derived from the seed (SHAKE-256)."""
        return hashlib.shake_256(b"pcn/secret/" + self.ctx.seed + b"/" + label.encode()).digest(n)

    def secret_permutation(self, label: str, n: int) -> np.ndarray:
        """A secret, uniformly random permutation of range(n) for a labelled purpose (shuffles),
        from a CSPRNG keyed by the party's seed (`secret_permutation`)."""
        return secret_permutation(self.secret_bytes("permutation/" + label, 32), n)

    def pmap(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """`[fn(x) for x in items]`, spread over the node's cores when the runtime offers it.
        Results come back in order, so determinism is kept."""
        if self.ctx.parallel_map is not None and len(items) > 1:
            return list(self.ctx.parallel_map(fn, items))
        return [fn(x) for x in items]

    def report(self, fraction: float, what: str) -> None:
        if self.ctx.progress is not None:
            self.ctx.progress(max(0.0, min(1.0, fraction)), what)

    def _check_context(self, recipient_role: str = "") -> None:
        """The context checks every algorithm makes after its own participant-count check;
        `recipient_role` names the recipient in the error ("the guest", ...)."""
        ctx = self.ctx
        if ctx.me not in ctx.participants or ctx.recipient not in ctx.participants:
            role = f" ({recipient_role})" if recipient_role else ""
            raise ProtocolError(f"both this party and the recipient{role} must be participants")
        if not isinstance(ctx.task_id, int) or not 0 <= ctx.task_id < 2**256:
            raise ProtocolError(f"task id {ctx.task_id!r} is not a uint256")
        if not isinstance(ctx.seed, bytes) or len(ctx.seed) < 16:
            raise ProtocolError("the party seed must be at least 16 secret bytes")
        if not isinstance(ctx.binding, bytes) or len(ctx.binding) != 32:
            raise ProtocolError("the task binding must be 32 bytes")

    def _mark_started(self) -> None:
        """What every `start` begins with: it runs once."""
        if self._started:
            raise ProtocolError("start() called twice")
        self._started = True

    def _check_delivery(self, msg: Message) -> None:
        """The checks every `receive` begins with: started, addressed here, from a peer."""
        ctx = self.ctx
        if not self._started:
            raise ProtocolError("message received before start()")
        if msg.receiver != ctx.me:
            raise ProtocolError(f"message for {msg.receiver!r} delivered to {ctx.me!r}")
        if msg.sender not in ctx.peers:
            raise ProtocolError(f"message from {msg.sender!r}, who is not a peer in this task")

    @staticmethod
    @abstractmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        """The task's parameters checked and normalised, or ProtocolError/ValueError naming what
        is wrong. A node refuses INVALID_PARAMETERS on it before reading data, and
        `operations.submit_task` calls it before a task is submitted at all."""

    # `start` and `receive` may return any iterable of messages, a generator included: the
    # runtime sends each message before it takes the next, so a protocol whose output is large
    # (psi-ot's extension) computes and sends it piece by piece in bounded memory. A generator
    # runs only as it is iterated: every check of the incoming message belongs before it, and
    # the output must be consumed in full before the next `receive`.

    @abstractmethod
    def start(self) -> Iterable[Message]:
        """First messages of this party."""

    @abstractmethod
    def receive(self, msg: Message) -> Iterable[Message]:
        """Handle one incoming message; return the messages it causes."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """True once this party has finished (it may still have sent final messages)."""

    def result(self) -> bytes | None:
        """The serialised result: bytes at the recipient, None at every other party."""
        return self._result if self.ctx.is_recipient else None

    @abstractmethod
    def result_commitment(self) -> bytes:
        """32 bytes every party reports in its receipt; equal at all parties in an honest run."""

    def commitment_opening(self) -> bytes:
        """What the recipient keeps beside the result so that `commitment_for(result, opening)`
        recomputes `result_commitment()` (salts, per-party commitments)."""
        return b""

    @staticmethod
    def privacy_cost(params: dict[str, Any]) -> float:
        """The differential-privacy ε these (validated) parameters spend; 0 without DP.
        A node refuses a task whose parameters spend more than the ε charged on chain."""
        return 0.0

    def model_state(self) -> dict[str, Any] | None:
        """This party's part of a model the task trained (JSON-serialisable), which the node
        stores for later tasks (`TaskServices.load_model`); None when the algorithm trains none."""
        return None

    @classmethod
    def resume(cls, ctx: PartyContext, data: Any, checkpoint: bytes) -> Self:
        """This party rebuilt from a checkpoint it saved; call `start()` next, then deliver the
        peers' messages from `resume_from[sender]` on. Only `resumable` algorithms have it; it
        builds the party with `create`, so a role-split algorithm resumes the party's role."""
        raise NotImplementedError(f"{cls.__name__} does not resume from checkpoints")

    @property
    def checkpoint_epoch(self) -> int:
        """Epochs completed in the latest checkpoint (0: none)."""
        return 0

    def inbound_bytes(self) -> dict[str, int]:
        """Upper bounds of what each peer will have put in this party's inbox by the end of the
        task (payloads plus `INBOX_ENTRY_ALLOWANCE` per message), for the peers the protocol
        can bound by now. The runtime refuses the task at once when a bound exceeds its
        mailbox quotas, before the bulk is sent. Empty: nothing known (the default)."""
        return {}

    def awaiting(self) -> list[str]:
        """The parties this party waits for right now; what `declare_dropped` would be given
        when the wait is too long. Only `dropout_tolerant` algorithms tell."""
        return []

    def declare_dropped(self, parties: Iterable[str]) -> list[Message]:
        """At the recipient: stop waiting for `parties` and go on without them; the messages
        that causes. ProtocolError when it cannot go on without them. Only
        `dropout_tolerant` algorithms have it."""
        raise NotImplementedError(f"{type(self).__name__} is not dropout-tolerant")

    @classmethod
    def commitment_for(cls, result: bytes, opening: bytes) -> bytes:
        """The on-chain result hash that `result` with `opening` must match (recipient, auditor),
        by the algorithm's `commitment` scheme."""
        if cls.commitment is None:
            raise NotImplementedError(f"{cls.__name__} has no commitment scheme")
        return cls.commitment.open(result, opening)


def run_local(
    protocols: Iterable[Protocol], shuffle_seed: int | None = None, max_messages: int = 10_000_000
) -> list[Message]:
    """Drive parties in-process until all are done; return the transcript.

    With `shuffle_seed`, deliveries are interleaved in a random (but per-link FIFO) order,
    which is what a real network guarantees."""
    parties = {p.ctx.me: p for p in protocols}
    queues: dict[tuple[str, str], deque[Message]] = {}
    transcript: list[Message] = []

    def post(msgs: Iterable[Message]) -> None:
        for m in msgs:
            if m.receiver not in parties:
                raise ProtocolError(f"message to unknown party {m.receiver}")
            queues.setdefault((m.sender, m.receiver), deque()).append(m)

    for p in parties.values():
        post(p.start())
    rng = random.Random(shuffle_seed)
    while True:
        links = [k for k, q in queues.items() if q]
        if not links:
            break
        link = rng.choice(links) if shuffle_seed is not None else links[0]
        msg = queues[link].popleft()
        transcript.append(msg)
        if len(transcript) > max_messages:
            raise ProtocolError("protocol did not terminate")
        post(parties[msg.receiver].receive(msg))
    unfinished = [me for me, p in parties.items() if not p.done]
    if unfinished:
        raise ProtocolError(f"parties {unfinished} are stuck with no message in flight")
    return transcript
