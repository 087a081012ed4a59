"""The protocol driver (`pcn.runtime.driver`) on its own: a small real protocol driven over a
fake chain, inbox, courier and peer directory, with a fake clock, so waits of minutes take no
time and no Redis, chain or HTTP is involved."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import pytest

from pcn.algorithms.base import MAX_PAYLOAD, Message, PartyContext, Protocol, ProtocolError
from pcn.chain.errors import ContractRevert
from pcn.chain.types import (
    Algorithm,
    Organisation,
    OrgStatus,
    ParticipantState,
    RefusalReason,
    Task,
    TaskStatus,
)
from pcn.runtime.driver import InboxQuotas, ProtocolDriver, TaskAborted, Timeouts, message_digest
from pcn.runtime.inbox import decode, encode
from pcn.runtime.taskstate import DropDeclaration, Phase
from pcn.runtime.transport import PeerUnreachable
from pcn.runtime.verify import Refused

TASK_ID = 7
# Mixed case on purpose: the driver compares addresses in lower case.
R, B, C, D = "0xRecipient", "0xBob", "0xCarol", "0xDave"
START = 1_700_000_000.0  # the fake wall clock at monotonic 0


# ---------------------------------------------------------------------- a tiny protocol


@dataclass
class Tally(Protocol):
    """Every peer sends the recipient `count` numbers (its data); the recipient adds them up
    and sends every peer the total (the driver sends nothing to a peer declared dropped).
    Dropout-tolerant: the recipient can go on without peers while one is left; it names as
    silent (`awaiting`) the peers it has heard nothing from (one midway is slow, not gone).
    `trace` is what the recipient saw, in order."""

    name: ClassVar[str] = "tally"
    dropout_tolerant: ClassVar[bool] = True
    resumable: ClassVar[bool] = True
    got: dict[str, int] = field(default_factory=dict, init=False)
    total: int = field(default=0, init=False)
    dropped: set[str] = field(default_factory=set, init=False)
    trace: list[tuple[Any, ...]] = field(default_factory=list, init=False)
    _done: bool = field(default=False, init=False)

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        return params

    @property
    def count(self) -> int:
        return int(self.ctx.params["count"])

    def start(self) -> list[Message]:
        self._mark_started()
        if self.ctx.is_recipient:
            return []
        return [self.send(self.ctx.recipient, 0, "value", str(self.data).encode()) for _ in range(self.count)]

    def receive(self, msg: Message) -> list[Message]:
        self._check_delivery(msg)
        if not self.ctx.is_recipient:
            if msg.kind != "total":
                raise ProtocolError(f"a peer expects the total, not {msg.kind!r}")
            self.total = int(msg.payload)
            self._done = True
            return []
        if msg.seq != self.got.get(msg.sender, 0):
            raise ProtocolError(f"{msg.sender}'s message {msg.seq} delivered out of order")
        self.got[msg.sender] = msg.seq + 1
        self.total += int(msg.payload)
        self.trace.append(("recv", msg.sender, msg.seq))
        return self._finish_if_all_in()

    def _finish_if_all_in(self) -> list[Message]:
        if self._missing():
            return []
        self._done = True
        return [self.send(p, 1, "total", str(self.total).encode()) for p in self.ctx.peers]

    @property
    def done(self) -> bool:
        return self._done

    def result_commitment(self) -> bytes:
        return hashlib.sha256(str(self.total).encode()).digest()

    def _missing(self) -> list[str]:
        return [p for p in self.ctx.peers if p not in self.dropped and self.got.get(p, 0) < self.count]

    def awaiting(self) -> list[str]:
        if not self.ctx.is_recipient or self._done:
            return []
        return [p for p in self._missing() if p not in self.got]

    def declare_dropped(self, parties: Iterable[str]) -> list[Message]:
        parties = list(parties)
        if all(p in self.dropped or p in parties for p in self.ctx.peers):
            raise ProtocolError("nobody would be left to add up")
        self.dropped.update(parties)
        self.trace.append(("drop", tuple(parties), sum(self.got.values())))
        return [] if self._done else self._finish_if_all_in()

    def checkpoint(self) -> bytes:
        return json.dumps({"got": self.got, "total": self.total}).encode()

    @classmethod
    def resume(cls, ctx: PartyContext, data: Any, checkpoint: bytes) -> Self:
        state = json.loads(checkpoint)
        proto = cls(ctx, data)
        proto.got = {str(k): int(v) for k, v in state["got"].items()}
        proto.total = int(state["total"])
        proto.resume_from = dict(proto.got)
        return proto


@dataclass
class StrictTally(Tally):
    """The same protocol without dropout tolerance."""

    dropout_tolerant: ClassVar[bool] = False


def party(cls: type[Tally], me: str, data: int, *, peers: tuple[str, ...] = (B, C), count: int = 2) -> Tally:
    ctx = PartyContext(TASK_ID, me, [R, *peers], R, {"count": count}, b"s" * 32)
    return cls(ctx, data)


# ---------------------------------------------------------------------- fakes


class FakeClock:
    """Monotonic time from 0, wall time from START; `at` runs a callback once time passes an
    instant (a peer's message arriving, the chain changing)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events: list[tuple[float, Callable[[], None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return START + self.now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self.events.append((when, fn))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [e for e in self.events if e[0] <= self.now]
        self.events = [e for e in self.events if e[0] > self.now]
        for _, fn in sorted(due, key=lambda e: e[0]):
            fn()


class FakeInbox:
    """The driven party's accepted messages; an empty read waits (on the fake clock)."""

    def __init__(self, clock: FakeClock, messages: Iterable[Message] = ()) -> None:
        self.clock = clock
        self.messages = list(messages)
        self.reads = 0
        self.largest_read = 0

    def read(self, task_id: int, start: int, wait: float = 0.0, limit: int | None = None) -> list[Message]:
        assert task_id == TASK_ID
        self.reads += 1
        assert self.reads < 100_000, "the driver loops without waiting"
        if start >= len(self.messages):
            self.clock.advance(wait)
        self.largest_read = max(self.largest_read, len(self.messages[start:][:limit]))
        return list(self.messages[start:][:limit])


@dataclass
class Tx:
    tx_hash: str


class FakeLedger:
    def __init__(self, clock: FakeClock, *, dropout_tolerant: bool = True, silence: int = 60) -> None:
        self.clock = clock
        self.status = TaskStatus.RUNNING
        self.states: dict[str, ParticipantState] = {}
        self.dropout_tolerant = dropout_tolerant
        self.silence = silence
        self.heartbeats: list[float] = []
        self.heartbeat_error = ""  # a revert name every heartbeat gets
        self.reported: list[str] = []
        self.report_calls = 0
        self.silent_from = 0.0  # report_dropout reverts PartyNotSilent before this instant
        self.report_error = ""  # a revert name every report_dropout gets

    def task(self, task_id: int) -> Task:
        assert task_id == TASK_ID
        return make_task(self.status)

    def participant_state(self, task_id: int, participant: str) -> ParticipantState:
        return self.states.get(participant.lower(), ParticipantState.STARTED)

    def algorithm(self, code_hash: bytes) -> Algorithm | None:
        return Algorithm(code_hash, R, "tally", "1", b"", 0, False, True, self.dropout_tolerant)

    def dropout_silence(self) -> int:
        return self.silence

    def heartbeat(self, task_id: int) -> Tx:
        if self.heartbeat_error:
            raise ContractRevert(self.heartbeat_error, {}, "no")
        self.heartbeats.append(self.clock.now)
        return Tx(f"0xheartbeat{len(self.heartbeats)}")

    def report_dropout(self, task_id: int, participant: str) -> Tx:
        self.report_calls += 1
        assert self.report_calls < 10_000, "the driver reports without waiting"
        if self.report_error:
            raise ContractRevert(self.report_error, {}, "no")
        if self.clock.now < self.silent_from:
            raise ContractRevert("PartyNotSilent", {}, "seen lately")
        self.reported.append(participant)
        return Tx(f"0xdrop-{participant}")


def make_task(status: TaskStatus = TaskStatus.RUNNING) -> Task:
    return Task(
        TASK_ID, R, status, 1, 1, 3, 0, RefusalReason.NONE, R, int(START) + 3600, 0, 0, 0, b"\x01" * 32, b"", b""
    )


class FakePeers:
    def __init__(self) -> None:
        self.status: dict[str, OrgStatus] = {}

    def organisation(self, address: str) -> Organisation:
        status = self.status.get(address, OrgStatus.ACTIVE)
        return Organisation(address, address, key_of(address), endpoint_of(address), status, 0, 0)


def key_of(address: str) -> bytes:
    return b"x25519:" + address.encode()


def endpoint_of(address: str) -> str:
    return f"https://{address.lower()}.example"


def fake_seal(msg: Message, key: bytes) -> bytes:
    """An "envelope" the courier can open: the message, and the key it was sealed to."""
    return json.dumps({"msg": base64.b64encode(encode(msg)).decode(), "key": key.decode()}).encode()


class FakeCourier:
    """Hands envelopes to the other parties' protocols in this process; their replies to the
    driven party land in its inbox. A party in `unreachable` never takes anything."""

    def __init__(self, clock: FakeClock, me: str, inbox: FakeInbox, others: Iterable[Tally] = ()) -> None:
        self.clock = clock
        self.me = me
        self.inbox = inbox
        self.others = {endpoint_of(p.ctx.me): p for p in others}
        self.unreachable: set[str] = set()
        self.delivered: list[tuple[str, Message, float]] = []

    def deliver(self, endpoint: str, task_id: int, envelope: bytes, *, deadline: float) -> str:
        assert task_id == TASK_ID
        doc = json.loads(envelope)
        msg = decode(base64.b64decode(doc["msg"]))
        assert endpoint == endpoint_of(msg.receiver) and doc["key"] == key_of(msg.receiver).decode()
        if endpoint in self.unreachable:
            self.clock.advance(max(0.0, deadline - self.clock.now))  # retried until the deadline
            raise PeerUnreachable(endpoint, "connection refused")
        self.delivered.append((msg.receiver, msg, deadline))
        receiver = self.others.get(endpoint)
        if receiver is not None:
            self.inbox.messages.extend(m for m in receiver.receive(msg) if m.receiver == self.me)
        return "new"


class FakeRecord:
    def __init__(self, drops: Iterable[DropDeclaration] = ()) -> None:
        self.sent: dict[str, str] = {}
        self.drop_list = list(drops)

    def record_sent(self, receiver: str, seq: int, digest: bytes) -> None:
        self.sent[f"{receiver.lower()}:{seq:012d}"] = digest.hex()

    def drops(self) -> list[DropDeclaration]:
        return list(self.drop_list)

    def add_drop(self, drop: DropDeclaration) -> None:
        self.drop_list.append(drop)


class FakeProgress:
    def __init__(self) -> None:
        self.updates: list[tuple[Phase, float, str, dict[str, Any]]] = []

    def set(self, phase: Phase, fraction: float, detail: str = "", **extra: Any) -> None:
        self.updates.append((phase, fraction, detail, extra))


class FakeLog:
    def __init__(self) -> None:
        self.entries: list[tuple[str, int | None, dict[str, Any]]] = []

    def append(self, action: str, task_id: int | None = None, **data: Any) -> object:
        self.entries.append((action, task_id, data))
        return None


@dataclass
class Rig:
    """One driven party with everything around it."""

    clock: FakeClock
    ledger: FakeLedger
    inbox: FakeInbox
    courier: FakeCourier
    peers: FakePeers
    record: FakeRecord
    progress: FakeProgress
    log: FakeLog
    rechecks: list[float]
    driver: ProtocolDriver


def rig(
    me: str,
    others: Iterable[Tally] = (),
    incoming: Iterable[Message] = (),
    *,
    drops: Iterable[DropDeclaration] = (),
    dropout_tolerant: bool = True,
    silence: int = 60,
    message_timeout: float = 120.0,
    dropout_after: float = 0.0,
    recheck_every: float = 5.0,
    recheck: Callable[[float], Refused | None] = lambda now: None,
    quotas: InboxQuotas | None = None,
) -> Rig:
    clock = FakeClock()
    ledger = FakeLedger(clock, dropout_tolerant=dropout_tolerant, silence=silence)
    inbox = FakeInbox(clock, incoming)
    courier = FakeCourier(clock, me, inbox, others)
    peers, record, progress, log = FakePeers(), FakeRecord(drops), FakeProgress(), FakeLog()
    rechecks: list[float] = []

    def do_recheck() -> Refused | None:
        rechecks.append(clock.now)
        return recheck(clock.now)

    driver = ProtocolDriver(
        make_task(),
        me,
        ledger=ledger,
        inbox=inbox,
        client=courier,
        peers=peers,
        progress=progress,
        log=log,
        record=record,
        seal=fake_seal,
        recheck=do_recheck,
        timeouts=Timeouts.of(message_timeout, dropout_after, recheck_every),
        clock=clock,
        quotas=quotas,
    )
    return Rig(clock, ledger, inbox, courier, peers, record, progress, log, rechecks, driver)


def started(*parties: Tally) -> list[Message]:
    """The first messages of `parties`, in order."""
    return [m for p in parties for m in p.start()]


# ---------------------------------------------------------------------- tests


def test_messages_are_delivered_sealed_recorded_and_counted() -> None:
    bob, carol = party(Tally, B, 3), party(Tally, C, 4)
    t = rig(R, others=[bob, carol], incoming=started(bob, carol))
    recipient = party(Tally, R, 0)
    t.driver.run(recipient)

    assert recipient.done and recipient.total == 2 * 3 + 2 * 4
    assert bob.done and bob.total == 14 and carol.done and carol.total == 14  # the totals reached them
    assert (t.driver.sent, t.driver.received, t.driver.index) == (2, 4, 4)
    assert [(to, m.kind) for to, m, _ in t.courier.delivered] == [(B, "total"), (C, "total")]
    # every message sent recorded by (receiver, seq) with its digest, receivers in lower case
    assert t.record.sent == {f"{to.lower()}:{m.seq:012d}": message_digest(m).hex() for to, m, _ in t.courier.delivered}
    # a tolerant recipient retries a delivery for dropout_after (half the message timeout)
    assert all(deadline == pytest.approx(60.0) for *_, deadline in t.courier.delivered)
    assert t.progress.updates[0][:3] == (Phase.RUNNING, 0.0, "protocol started")
    assert t.driver.seconds > 0


def test_a_backlog_is_read_a_batch_at_a_time() -> None:
    """A task's inbox can hold a gigabyte when this party falls behind (a 10 M psi-ot's rows):
    the driver takes READ_BATCH messages per turn, never the whole backlog."""
    bob, carol = party(Tally, B, 1, count=40), party(Tally, C, 2, count=40)
    t = rig(R, others=[bob, carol], incoming=started(bob, carol))
    recipient = party(Tally, R, 0, count=40)
    t.driver.run(recipient)
    assert recipient.done and recipient.total == 40 * 1 + 40 * 2
    assert t.driver.received == 80 and t.inbox.largest_read == ProtocolDriver.READ_BATCH < 80


def test_a_non_recipient_delivers_with_the_message_timeout_and_counts_replies() -> None:
    recipient, carol = party(StrictTally, R, 0), party(StrictTally, C, 5)
    recipient.start()
    for m in carol.start():
        recipient.receive(m)
    t = rig(B, others=[recipient], dropout_tolerant=False, message_timeout=30.0)
    bob = party(StrictTally, B, 1)
    t.driver.run(bob)
    assert bob.done and bob.total == 12
    assert (t.driver.sent, t.driver.received) == (2, 1)
    assert [d for *_, d in t.courier.delivered] == [30.0, 30.0]
    assert t.ledger.heartbeats == []  # not a dropout-tolerant algorithm on chain: no heartbeat


def test_a_resumed_run_skips_the_messages_inside_its_checkpoint() -> None:
    bob, carol = party(Tally, B, 3), party(Tally, C, 4)
    incoming = started(bob, carol)  # B0 B1 C0 C1
    t = rig(R, others=[bob, carol], incoming=incoming)
    # the killed run had taken B's first message into its checkpoint
    recipient = Tally.resume(party(Tally, R, 0).ctx, 0, json.dumps({"got": {B: 1}, "total": 3}).encode())
    t.driver.run(recipient)
    assert recipient.trace == [("recv", B, 1), ("recv", C, 0), ("recv", C, 1)]
    assert recipient.total == 14 and bob.total == 14
    assert (t.driver.received, t.driver.index) == (4, 4)  # counted, though not delivered again


def test_a_peer_that_never_answers_is_unreachable_after_the_message_timeout() -> None:
    bob = party(StrictTally, B, 3)
    t = rig(R, incoming=started(bob), dropout_tolerant=False, message_timeout=30.0)  # C is silent
    recipient = party(StrictTally, R, 0)
    with pytest.raises(PeerUnreachable, match="no message for 30 s"):
        t.driver.run(recipient)
    assert 30.0 < t.clock.now <= 30.0 + ProtocolDriver.READ_WAIT + 1e-9
    assert recipient.trace == [("recv", B, 0), ("recv", B, 1)]
    waiting = [u for u in t.progress.updates if u[0] is Phase.WAITING]
    assert len(waiting) == 1 and waiting[0][2] == "waiting for peers' messages"
    assert float(waiting[0][3]["waiting_since"]) == pytest.approx(START, abs=0.01)
    assert t.ledger.reported == []  # not dropout-tolerant: nobody is reported dropped
    assert len(t.rechecks) >= 5  # the standing was re-checked every 5 s meanwhile


def test_the_task_ending_on_chain_mid_wait_aborts_the_run() -> None:
    t = rig(R, incoming=started(party(Tally, B, 3)), dropout_tolerant=False)
    t.clock.at(10.0, lambda: setattr(t.ledger, "status", TaskStatus.REFUSED))
    with pytest.raises(TaskAborted, match="task became refused on chain"):
        t.driver.run(party(StrictTally, R, 0))
    assert 10.0 <= t.clock.now <= 10.0 + ProtocolDriver.STATUS_EVERY + ProtocolDriver.READ_WAIT + 1e-9


def test_this_party_reported_dropped_aborts_the_run_and_heartbeats_until_then() -> None:
    recipient = party(Tally, R, 0)
    recipient.start()  # takes B's numbers, then never answers: C is silent
    t = rig(B, others=[recipient], silence=6)  # dropout-tolerant: a heartbeat every 2 s
    t.clock.at(15.0, lambda: t.ledger.states.update({B.lower(): ParticipantState.DROPPED}))
    with pytest.raises(TaskAborted, match="the result recipient reported this party dropped out"):
        t.driver.run(party(Tally, B, 3))
    assert 15.0 <= t.clock.now <= 15.0 + ProtocolDriver.STATUS_EVERY + ProtocolDriver.READ_WAIT + 1e-9
    beats = t.ledger.heartbeats
    assert len(beats) >= 5 and all(b - a > 2.0 for a, b in itertools.pairwise(beats))


def test_a_refused_heartbeat_stops_the_heartbeats_and_is_logged() -> None:
    recipient = party(Tally, R, 0)
    recipient.start()
    t = rig(B, others=[recipient], silence=6, message_timeout=20.0)
    t.ledger.heartbeat_error = "CannotHeartbeat"
    with pytest.raises(PeerUnreachable):
        t.driver.run(party(Tally, B, 3))
    assert [e for e in t.log.entries if e[0] == "heartbeat-refused"] == [
        ("heartbeat-refused", TASK_ID, {"error": "CannotHeartbeat"})
    ]


def test_a_recheck_that_now_refuses_is_raised() -> None:
    refusal = Refused(RefusalReason.PEER_NOT_ACTIVE, f"{C} was suspended")
    t = rig(
        R,
        incoming=started(party(StrictTally, B, 3)),
        dropout_tolerant=False,
        recheck=lambda now: refusal if now > 7.0 else None,
    )
    with pytest.raises(Refused) as caught:
        t.driver.run(party(StrictTally, R, 0))
    assert caught.value is refusal
    assert len(t.rechecks) == 2 and 7.0 < t.rechecks[-1] <= 10.0 + 2 * ProtocolDriver.READ_WAIT


def test_a_silent_party_is_declared_dropped_and_the_declaration_replays_at_its_index() -> None:
    bob, dave = party(Tally, B, 3, peers=(B, C, D)), party(Tally, D, 5, peers=(B, C, D))
    from_bob, from_dave = started(bob), started(dave)
    t = rig(R, others=[bob, dave], incoming=[*from_bob, from_dave[0]], dropout_after=10.0)
    t.clock.at(20.0, lambda: t.inbox.messages.append(from_dave[1]))  # D is slow; C never answers
    first = party(Tally, R, 0, peers=(B, C, D))
    t.driver.run(first)

    assert first.trace == [("recv", B, 0), ("recv", B, 1), ("recv", D, 0), ("drop", (C,), 3), ("recv", D, 1)]
    assert 10.0 < t.clock.now < 21.0  # dropped after dropout_after, not the message timeout
    assert t.ledger.reported == [C]
    assert ("report-dropout", TASK_ID, {"party": C, "tx": f"0xdrop-{C}"}) in t.log.entries
    assert t.record.drop_list == [DropDeclaration(3, [C])]
    assert (Phase.RUNNING, 0.0, f"went on without {C} (reported dropped on chain)", {}) in t.progress.updates
    assert [to for to, m, _ in t.courier.delivered] == [B, D]  # C gets nothing more
    assert f"{C.lower()}:{0:012d}" in t.record.sent  # though its total is in the transcript
    assert bob.total == dave.total == 16 and t.driver.sent == 2

    # A worker killed after that resumes: all four messages are in the inbox at once; the
    # declaration is replayed after the third, where it happened, and not reported again.
    bob2, dave2 = party(Tally, B, 3, peers=(B, C, D)), party(Tally, D, 5, peers=(B, C, D))
    bob2.start()
    dave2.start()
    resumed = rig(R, others=[bob2, dave2], incoming=[*from_bob, *from_dave], drops=t.record.drop_list)
    second = party(Tally, R, 0, peers=(B, C, D))
    resumed.driver.run(second)
    assert second.trace == first.trace
    assert resumed.ledger.reported == [] and resumed.record.drop_list == t.record.drop_list
    assert [to for to, m, _ in resumed.courier.delivered] == [B, D]
    assert resumed.record.sent == t.record.sent  # the same messages, recorded alike
    assert resumed.clock.now == 0.0  # nothing was waited for
    assert bob2.total == dave2.total == 16


def test_an_unreachable_party_is_declared_dropped_by_a_tolerant_recipient() -> None:
    bob, carol = party(Tally, B, 3), party(Tally, C, 4)
    t = rig(R, others=[bob, carol], incoming=started(bob, carol), dropout_after=10.0)
    t.courier.unreachable.add(endpoint_of(C))
    recipient = party(Tally, R, 0)
    t.driver.run(recipient)  # C answered, then went away before its total reached it
    assert t.ledger.reported == [C] and t.record.drop_list == [DropDeclaration(4, [C])]
    assert t.driver.sent == 1 and t.clock.now == pytest.approx(10.0)  # waited dropout_after, not longer


def test_an_unreachable_party_ends_a_run_that_cannot_drop_it() -> None:
    bob, carol = party(StrictTally, B, 3), party(StrictTally, C, 4)
    t = rig(R, others=[bob, carol], incoming=started(bob, carol), dropout_tolerant=False, message_timeout=30.0)
    t.courier.unreachable.add(endpoint_of(C))
    with pytest.raises(PeerUnreachable, match="connection refused"):
        t.driver.run(party(StrictTally, R, 0))
    assert t.ledger.reported == [] and t.clock.now == pytest.approx(30.0)


def test_a_drop_waits_until_the_chain_sees_the_party_silent() -> None:
    t = rig(R, incoming=started(party(Tally, B, 3)), dropout_after=10.0)
    t.ledger.silent_from = 40.0  # C's last heartbeat was recent
    recipient = party(Tally, R, 0)
    t.driver.run(recipient)
    assert t.ledger.reported == [C] and 40.0 <= t.clock.now <= 41.0 + 1e-9
    assert len(t.ledger.heartbeats) >= 29  # its own sign of life each second meanwhile
    assert recipient.done and recipient.trace[-1] == ("drop", (C,), 2)


def test_a_chain_that_refuses_the_drop_ends_the_run_unreachable() -> None:
    t = rig(R, incoming=started(party(Tally, B, 3)), dropout_after=10.0)
    t.ledger.report_error = "TooFewRemaining"
    with pytest.raises(PeerUnreachable, match="too few participants would remain"):
        t.driver.run(party(Tally, R, 0))
    assert t.record.drop_list == []


def test_a_drop_the_protocol_cannot_take_is_logged_and_the_run_times_out() -> None:
    t = rig(R, dropout_after=10.0, message_timeout=30.0)  # neither B nor C ever answers
    with pytest.raises(PeerUnreachable, match="no message for 30 s"):
        t.driver.run(party(Tally, R, 0))
    refused = [e for e in t.log.entries if e[0] == "dropout-not-possible"]
    # logged once, not at every idle poll until the timeout
    assert len(refused) == 1 and refused[0][2] == {"parties": [B, C], "why": "nobody would be left to add up"}
    assert t.ledger.reported == []


def test_a_suspended_receiver_stops_the_run_before_anything_reaches_it() -> None:
    t = rig(B, others=[party(Tally, R, 0)])
    t.peers.status[R] = OrgStatus.SUSPENDED
    with pytest.raises(Refused) as caught:
        t.driver.run(party(Tally, B, 3))
    assert caught.value.reason is RefusalReason.PEER_NOT_ACTIVE
    assert caught.value.detail == f"{R} is no longer an active organisation"
    assert t.courier.delivered == [] and t.driver.sent == 0
    assert list(t.record.sent) == [f"{R.lower()}:{0:012d}"]  # recorded, as a resumed run would


class Announcing(Tally):
    """A Tally that, once a message from a peer came in, announces how much each peer will send."""

    announced: dict[str, int] | None = None

    def inbound_bytes(self) -> dict[str, int]:
        return dict(self.announced or {}) if self.got else {}


@pytest.mark.parametrize(
    ("announced", "quota", "match"),
    [
        ({B: 5_000_000}, "mailbox_sender_quota", "up to 4.8 MiB from .* more than its mailbox_sender_quota of 3.8 MiB"),
        ({B: 3_000_000, C: 3_000_000}, "mailbox_task_quota", "up to 5.7 MiB into this node's inbox, more than"),
    ],
)
def test_an_announced_inbound_volume_beyond_the_quotas_is_refused_at_once(
    announced: dict[str, int], quota: str, match: str
) -> None:
    bob, carol = party(Tally, B, 3), party(Tally, C, 4)
    t = rig(R, others=[bob, carol], incoming=started(bob, carol), quotas=InboxQuotas(5_000_000, 4_000_000))
    recipient = party(Announcing, R, 0)
    recipient.announced = announced
    with pytest.raises(Refused) as caught:
        t.driver.run(recipient)
    assert caught.value.reason is RefusalReason.PROTOCOL_FAILURE
    assert re.search(match, caught.value.detail) and f"raise {quota}" in caught.value.detail
    assert t.driver.received == 1  # refused on the first message that told the volume, not at the quota


def test_an_announced_inbound_volume_within_the_quotas_runs() -> None:
    bob, carol = party(Tally, B, 3), party(Tally, C, 4)
    t = rig(R, others=[bob, carol], incoming=started(bob, carol), quotas=InboxQuotas(5_000_000, 4_000_000))
    recipient = party(Announcing, R, 0)
    recipient.announced = {B: 2_000_000, C: 2_000_000}
    t.driver.run(recipient)
    assert recipient.done and recipient.total == 14


class Oversized(Tally):
    """A Tally whose total message is one byte over what a message may carry."""

    def start(self) -> list[Message]:
        return [self.send(self.ctx.recipient, 0, "value", bytes(MAX_PAYLOAD + 1))]


def test_a_message_over_the_largest_payload_is_a_protocol_error_before_anything_is_sent() -> None:
    t = rig(B, others=[party(Tally, R, 0)])
    with pytest.raises(ProtocolError, match=r"made a 'value' message of 8,372,225 bytes; one message carries at most"):
        t.driver.run(party(Oversized, B, 3))
    assert t.courier.delivered == [] and t.driver.sent == 0


def test_progress_reports_carry_the_fraction_into_waiting() -> None:
    t = rig(R, incoming=started(party(StrictTally, B, 3)), dropout_tolerant=False, message_timeout=5.0)
    t.driver.report(0.25, "adding up")
    with pytest.raises(PeerUnreachable):
        t.driver.run(party(StrictTally, R, 0))
    assert t.progress.updates[0] == (Phase.RUNNING, 0.25, "adding up", {"waiting_since": ""})
    waiting = [u for u in t.progress.updates if u[0] is Phase.WAITING]
    assert waiting and waiting[0][1] == 0.25
