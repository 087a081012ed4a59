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
import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ProtocolError(Exception):
    """A peer sent something the protocol cannot accept (wrong round, shape, or value)."""


@dataclass(frozen=True)
class Message:
    sender: str
    receiver: str
    round: int
    kind: str
    payload: bytes
    seq: int = 0  # per (sender, receiver) counter, assigned by Protocol.send


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
    ctx: PartyContext
    data: Any
    _seq: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def send(self, receiver: str, round_: int, kind: str, payload: bytes) -> Message:
        """Build an outgoing message with the next sequence number for that receiver."""
        seq = self._seq.get(receiver, 0)
        self._seq[receiver] = seq + 1
        return Message(self.ctx.me, receiver, round_, kind, payload, seq)

    def rng(self, label: str) -> random.Random:
        """A deterministic RNG for a labelled purpose, derived from the party's seed.

        Use `secret_bytes` for anything cryptographic; this is for shuffles and sampling."""
        return random.Random(hashlib.sha256(self.ctx.seed + label.encode()).digest())

    def secret_bytes(self, label: str, n: int) -> bytes:
        """n deterministic, secret, uniformly random bytes derived from the seed (SHAKE-256)."""
        return hashlib.shake_256(b"pcn/secret/" + self.ctx.seed + b"/" + label.encode()).digest(n)

    def pmap(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """`[fn(x) for x in items]`, spread over the node's cores when the runtime offers it.
        Results come back in order, so determinism is kept."""
        if self.ctx.parallel_map is not None and len(items) > 1:
            return list(self.ctx.parallel_map(fn, items))
        return [fn(x) for x in items]

    def report(self, fraction: float, what: str) -> None:
        if self.ctx.progress is not None:
            self.ctx.progress(max(0.0, min(1.0, fraction)), what)

    @abstractmethod
    def start(self) -> list[Message]:
        """First messages of this party."""

    @abstractmethod
    def receive(self, msg: Message) -> list[Message]:
        """Handle one incoming message; return the messages it causes."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """True once this party has finished (it may still have sent final messages)."""

    @abstractmethod
    def result(self) -> bytes | None:
        """The serialised result: bytes at the recipient, None at every other party."""

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

    @staticmethod
    def commitment_for(result: bytes, opening: bytes) -> bytes:
        """The on-chain result hash that `result` with `opening` must match (recipient, auditor)."""
        raise NotImplementedError


def run_local(
    protocols: Iterable[Protocol], shuffle_seed: int | None = None, max_messages: int = 10_000_000
) -> list[Message]:
    """Drive parties in-process until all are done; return the transcript.

    With `shuffle_seed`, deliveries are interleaved in a random (but per-link FIFO) order,
    which is what a real network guarantees."""
    parties = {p.ctx.me: p for p in protocols}
    queues: dict[tuple[str, str], deque[Message]] = {}
    transcript: list[Message] = []

    def post(msgs: list[Message]) -> None:
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
