"""Drives one party's protocol of one task: its messages out and in, until the protocol is done.

`ProtocolDriver` is step 5 of a task's run (`pcn.runtime.execute`): the task runner verifies,
starts, builds the protocol and hands it over; the driver delivers what the protocol sends
(sealed, to the receiver's registered endpoint), reads the inbox and feeds the protocol,
and between messages keeps the run honest and bounded:

- a non-recipient of a dropout-tolerant algorithm posts its on-chain heartbeat;
- every `recheck_every` seconds the task's standing is checked again (suspensions, policy
  grants, deprecation): a failed check is raised as `Refused` before more data leaves;
- idle for `message_timeout` seconds (or past the task's deadline): `PeerUnreachable`;
- every 2 s while idle, the chain: the task turned final, or this party was reported dropped,
  ends the run with `TaskAborted`;
- at the recipient of a dropout-tolerant protocol, a party silent or unreachable for
  `dropout_after` seconds is reported dropped on chain and the protocol goes on without it.
  Each declaration is recorded (`RunRecord`) with the inbox index where it happened, so that
  a resumed run replays it at the same point, like a message.

A resumed run replays the inbox from the start, re-sends the same deterministic messages
(peers drop them as duplicates), skips messages below the protocol's `resume_from` (already
inside the checkpoint it resumed from) and arrives where the killed run was.

Everything the driver touches comes in as a collaborator typed by a small structural
interface below, and time through a `Clock`, so it runs in unit tests without Redis, a chain
or HTTP.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pcn.algorithms.base import MAX_PAYLOAD, Message, ProtocolError
from pcn.algorithms.base import Protocol as PartyProtocol
from pcn.chain.errors import ContractRevert
from pcn.chain.types import Algorithm, Organisation, OrgStatus, ParticipantState, RefusalReason, Task
from pcn.runtime.failpoints import failpoint
from pcn.runtime.inbox import message_digest
from pcn.runtime.taskstate import DropDeclaration, Phase
from pcn.runtime.transport import PeerUnreachable
from pcn.runtime.verify import Refused


class TaskAborted(Exception):
    """The task cannot go on here; the reason was recorded on chain."""


# ---------------------------------------------------------------------- collaborators


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The process's clocks: `time.monotonic` for waits, `time.time` for on-chain deadlines."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Transaction(Protocol):
    @property
    def tx_hash(self) -> str: ...


class DriverLedger(Protocol):
    """What the driver reads from and sends to the chain (`pcn.chain.ledger.Ledger`)."""

    def task(self, task_id: int) -> Task: ...

    def participant_state(self, task_id: int, participant: str) -> ParticipantState: ...

    def algorithm(self, code_hash: bytes) -> Algorithm | None: ...

    def dropout_silence(self) -> int: ...

    def heartbeat(self, task_id: int) -> Transaction: ...

    def report_dropout(self, task_id: int, participant: str) -> Transaction: ...


class InboxReader(Protocol):
    """The task's accepted messages (`pcn.runtime.inbox.Inbox`)."""

    def read(self, task_id: int, start: int, wait: float = 0.0, limit: int | None = None) -> list[Message]: ...


class Courier(Protocol):
    """Carries one envelope to a peer's mailbox (`pcn.runtime.transport.PeerClient`); raises
    PeerUnreachable when the peer took nothing before `deadline` (a monotonic instant)."""

    def deliver(self, endpoint: str, task_id: int, envelope: bytes, *, deadline: float) -> str: ...


class Organisations(Protocol):
    """Peers' registrations (`pcn.runtime.peers.PeerDirectory`)."""

    def organisation(self, address: str) -> Organisation: ...


class ProgressBoard(Protocol):
    """The task's progress record (`pcn.runtime.taskstate.Progress`)."""

    def set(self, phase: Phase, fraction: float, detail: str = "", **extra: Any) -> None: ...


class ActionRecorder(Protocol):
    """The organisation's action log (`pcn.runtime.actionlog.ActionLog`)."""

    def append(self, action: str, task_id: int | None = None, **data: Any) -> object: ...


class RunRecorder(Protocol):
    """What the run sent and declared (`pcn.runtime.taskstate.RunRecord`)."""

    def record_sent(self, receiver: str, seq: int, digest: bytes) -> None: ...

    def drops(self) -> list[DropDeclaration]: ...

    def add_drop(self, drop: DropDeclaration) -> None: ...


# (message, receiver's X25519 key) -> the signed, encrypted envelope for it
Sealer = Callable[[Message, bytes], bytes]
# the task's standing re-checked at the latest block: the refusal it now earns, or None
Rechecker = Callable[[], Refused | None]


@dataclass(frozen=True)
class Timeouts:
    """The node's waits, in seconds (`OrgConfig`)."""

    message_timeout: float  # idle this long: the peers are unreachable
    dropout_after: float  # the recipient's wait before reporting a silent party dropped
    recheck_every: float  # how often the task's standing is checked again

    @classmethod
    def of(cls, message_timeout: float, dropout_after: float, recheck_every: float) -> Timeouts:
        """`dropout_after` 0 means half the message timeout (the config's default)."""
        return cls(message_timeout, dropout_after or message_timeout / 2, recheck_every)


@dataclass(frozen=True)
class InboxQuotas:
    """This node's mailbox quotas (`OrgConfig.mailbox_task_quota`, `mailbox_sender_quota`)."""

    task: int
    sender: int


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


# ---------------------------------------------------------------------- the driver


class ProtocolDriver:
    """Runs one protocol instance at this node to its end (`run`). Per-run state lives in
    attributes: messages sent and received, the inbox index reached, the parties gone
    (declared dropped), declarations still to replay, the last progress fraction, whether the
    progress says "waiting", and the timers of the loop."""

    # How long one inbox read blocks for a message, how long idle before the progress says
    # "waiting", how often the chain is asked whether the task or this party is over.
    READ_WAIT = 0.5
    READ_BATCH = 16  # messages taken from the inbox per turn: a backlog is never read whole
    WAITING_AFTER = 1.0
    STATUS_EVERY = 2.0

    def __init__(
        self,
        task: Task,
        me: str,
        *,
        ledger: DriverLedger,
        inbox: InboxReader,
        client: Courier,
        peers: Organisations,
        progress: ProgressBoard,
        log: ActionRecorder,
        record: RunRecorder,
        seal: Sealer,
        recheck: Rechecker,
        timeouts: Timeouts,
        clock: Clock | None = None,
        quotas: InboxQuotas | None = None,
    ) -> None:
        self.task = task
        self.task_id = task.task_id
        self.me = me
        self.ledger = ledger
        self.inbox = inbox
        self.client = client
        self.peers = peers
        self.board = progress
        self.log = log
        self.record = record
        self.seal = seal
        self.recheck = recheck
        self.timeouts = timeouts
        self.quotas = quotas
        self.clock: Clock = clock or SystemClock()
        # per-run state
        self.sent = 0
        self.received = 0
        self.index = 0  # inbox messages read so far
        self.gone: set[str] = set()  # declared dropped (lower case): sent nothing more
        self.replay: list[DropDeclaration] = []  # recorded declarations not yet replayed
        # The silent parties the protocol last said it cannot go on without: not offered again
        # (nor logged again) until the set of silent parties changes.
        self.undroppable: frozenset[str] = frozenset()
        self.last_fraction = 0.0
        self.waiting = False  # the progress says "waiting for peers' messages"
        self.can_drop = False
        self.heartbeat_every: float | None = None
        self.resume_from: dict[str, int] = {}
        self.task_left = 1.0
        self.idle_since = self.last_status_check = self.last_recheck = self.last_heartbeat = 0.0
        self.seconds = 0.0  # how long the protocol ran, for the receipt's timings
        self._proto: PartyProtocol | None = None
        self._bounds_checked: dict[str, int] = {}

    @property
    def proto(self) -> PartyProtocol:
        if self._proto is None:
            raise RuntimeError("the driver has no protocol yet: run(protocol) first")
        return self._proto

    def report(self, fraction: float, what: str) -> None:
        """The protocol's progress callback (`PartyContext.progress`)."""
        self.last_fraction = fraction
        self.board.set(Phase.RUNNING, fraction, what, waiting_since="")

    # ------------------------------------------------------------------ the run

    def run(self, proto: PartyProtocol) -> None:
        """Start `proto`, replay what a previous run of it recorded, and feed it its messages
        until it is done."""
        self._proto = proto
        self.resume_from = {k.lower(): v for k, v in proto.resume_from.items()}
        self.task_left = max(1.0, self.task.deadline - self.clock.time())
        self.board.set(Phase.RUNNING, 0.0, "protocol started")
        self.replay = self.record.drops()
        self.gone = {q.lower() for d in self.replay for q in d.parties}
        self.can_drop = type(proto).dropout_tolerant and proto.ctx.is_recipient
        self.heartbeat_every = None if proto.ctx.is_recipient else self._heartbeat_interval()
        t0 = time.perf_counter()
        self.deliver(proto.start())
        self.check_inbound()
        self.replay_drops()
        now = self.clock.monotonic()
        self.idle_since = self.last_status_check = self.last_recheck = self.last_heartbeat = now
        self.waiting = False
        while not proto.done:
            self.step()
        self.seconds = time.perf_counter() - t0

    def step(self) -> None:
        """One turn of the loop: heartbeat and recheck when due, then the messages that came
        in (or, when none did, what being idle calls for)."""
        self._heartbeat_if_due()
        self._recheck_if_due()
        msgs = self.inbox.read(self.task_id, self.index, wait=self.READ_WAIT, limit=self.READ_BATCH)
        if not msgs:
            self.idle()
            return
        self.idle_since = self.clock.monotonic()
        if self.waiting:
            self.waiting = False
            self.board.set(Phase.RUNNING, self.last_fraction, "protocol running", waiting_since="")
        for m in msgs:
            self.receive(m)

    def receive(self, msg: Message) -> None:
        """The inbox's next message: counted, and given to the protocol unless it is inside the
        checkpoint the party resumed from."""
        self.index += 1
        self.received += 1
        if msg.seq < self.resume_from.get(msg.sender.lower(), 0):
            return  # already inside the checkpoint the party resumed from
        self.deliver(self.proto.receive(msg))
        self.check_inbound()
        self.replay_drops()

    def check_inbound(self) -> None:
        """Refuse at once (PROTOCOL_FAILURE, saying which quota to raise and to what) when the
        protocol's bound on what its peers will send exceeds this node's mailbox quotas: the
        mailbox would answer 413 only after the peer had sent up to the quota."""
        bounds = self.proto.inbound_bytes()
        if self.quotas is None or not bounds or bounds == self._bounds_checked:
            return
        self._bounds_checked = dict(bounds)
        algorithm = type(self.proto).name
        for sender, size in sorted(bounds.items()):
            if size > self.quotas.sender:
                raise Refused(
                    RefusalReason.PROTOCOL_FAILURE,
                    f"{algorithm} will bring up to {_mib(size)} from {sender} into this node's inbox, more than "
                    f"its mailbox_sender_quota of {_mib(self.quotas.sender)}: raise mailbox_sender_quota (node "
                    f"config) to at least {size:,} bytes and submit the task again",
                )
        total = sum(bounds.values())
        if total > self.quotas.task:
            raise Refused(
                RefusalReason.PROTOCOL_FAILURE,
                f"{algorithm} will bring up to {_mib(total)} into this node's inbox, more than its "
                f"mailbox_task_quota of {_mib(self.quotas.task)}: raise mailbox_task_quota (node config) to at "
                f"least {total:,} bytes and submit the task again",
            )

    def idle(self) -> None:
        """No message came: declare silent parties dropped (recipient of a dropout-tolerant
        protocol), say "waiting" in the progress, give up after the message timeout, and
        every few seconds ask the chain whether the task or this party is over."""
        waited = self.clock.monotonic() - self.idle_since
        if self.can_drop and waited > self.timeouts.dropout_after and not self.replay:
            silent = self.proto.awaiting()
            if silent and frozenset(q.lower() for q in silent) != self.undroppable and self.declare_dropped(silent):
                self.idle_since = self.clock.monotonic()
                return
        if not self.waiting and waited > self.WAITING_AFTER:
            # Idle with nothing to compute: say so, so `pcn task status` can tell the
            # operators which party the others are waiting for.
            self.waiting = True
            since = f"{self.clock.time() - waited:.3f}"
            self.board.set(Phase.WAITING, self.last_fraction, "waiting for peers' messages", waiting_since=since)
        if waited > self.timeouts.message_timeout or self.clock.time() > self.task.deadline:
            raise PeerUnreachable("peers", f"no message for {waited:.0f} s")
        if self.clock.monotonic() - self.last_status_check > self.STATUS_EVERY:
            self.last_status_check = self.clock.monotonic()
            self.check_still_on()

    def check_still_on(self) -> None:
        """Another participant refused, or the task expired, or the recipient reported this
        party dropped: stop waiting at once."""
        status = self.ledger.task(self.task_id).status
        if status.is_final:
            raise TaskAborted(f"task became {status.name.lower()} on chain")
        if self.ledger.participant_state(self.task_id, self.me) is ParticipantState.DROPPED:
            raise TaskAborted("the result recipient reported this party dropped out")

    # ------------------------------------------------------------------ messages out

    def deliver(self, msgs: Iterable[Message]) -> None:
        """Record and send what the protocol emitted. A receiver declared dropped gets nothing;
        a suspended one stops the run (Refused PEER_NOT_ACTIVE); an unreachable one is declared
        dropped when the protocol allows it, else PeerUnreachable."""
        for m in msgs:
            if len(m.payload) > MAX_PAYLOAD:  # a protocol bug: say so, not the mailbox's 413
                raise ProtocolError(
                    f"{type(self.proto).name} made a {m.kind!r} message of {len(m.payload):,} bytes; "
                    f"one message carries at most {MAX_PAYLOAD:,}"
                )
            self.record.record_sent(m.receiver, m.seq, message_digest(m))
            if m.receiver.lower() in self.gone:
                continue  # reported dropped: nobody there is listening any more
            org = self.peers.organisation(m.receiver)  # cached for a few seconds
            if org.status != OrgStatus.ACTIVE:
                # Suspended since the task started: it gets nothing more from this node.
                raise Refused(RefusalReason.PEER_NOT_ACTIVE, f"{m.receiver} is no longer an active organisation")
            env = self.seal(m, org.encryption_key)
            # A peer may be down for a while (retries with backoff), but not for longer than
            # the message timeout: then this node refuses PEER_UNREACHABLE, well before the deadline.
            wait = min(self.task_left, self.timeouts.dropout_after if self.can_drop else self.timeouts.message_timeout)
            try:
                self.client.deliver(org.endpoint, self.task_id, env, deadline=self.clock.monotonic() + wait)
            except PeerUnreachable:
                if not (self.can_drop and self.declare_dropped([m.receiver])):
                    raise
                continue
            self.sent += 1
            # Fault tests: the worker dies with this message delivered and the rest of the run
            # ahead; the redelivered run replays its inbox and re-sends (peers drop duplicates).
            failpoint("after-protocol-message")

    # ------------------------------------------------------------------ dropouts

    def declare_dropped(self, parties: list[str]) -> bool:
        """At the recipient of a dropout-tolerant protocol: report `parties` dropped on chain,
        record the declaration at the current inbox index and go on without them. False when
        the protocol cannot go on without them (the task then ends PEER_UNREACHABLE)."""
        try:
            out = self.proto.declare_dropped(parties)
        except ProtocolError as exc:
            self.log.append("dropout-not-possible", self.task_id, parties=parties, why=str(exc))
            self.undroppable = frozenset(q.lower() for q in parties)
            return False
        for party in parties:
            try:
                res = self._report_when_silent(party)
                self.log.append("report-dropout", self.task_id, party=party, tx=res.tx_hash)
            except ContractRevert as exc:
                if exc.name == "TooFewRemaining":
                    raise PeerUnreachable(party, "too few participants would remain to go on without it") from None
                if exc.name in ("AlgorithmNotDropoutTolerant", "PartyNotSilent"):
                    raise PeerUnreachable(party, f"the chain refuses to drop it: {exc}") from None
                if exc.name != "CannotDrop":  # CannotDrop: reported already, before a restart
                    raise
        self.record.add_drop(DropDeclaration(self.index, parties))
        self.board.set(Phase.RUNNING, 0.0, f"went on without {', '.join(parties)} (reported dropped on chain)")
        self.gone.update(q.lower() for q in parties)
        self.deliver(out)
        return True

    def replay_drops(self) -> None:
        """A resumed run: the declarations recorded at the current inbox index, made again to
        the protocol (they are on chain already)."""
        while self.replay and self.replay[0].at == self.index:
            self.deliver(self.proto.declare_dropped(self.replay.pop(0).parties))

    def _report_when_silent(self, party: str) -> Transaction:
        """Report `party` dropped once the chain allows it: after the consortium's dropout
        silence since its last sign of life on chain (PartyNotSilent until then)."""
        give_up = self.clock.monotonic() + self.ledger.dropout_silence() + 60
        while True:
            try:
                return self.ledger.report_dropout(self.task_id, party)
            except ContractRevert as exc:
                if exc.name != "PartyNotSilent" or self.clock.monotonic() > give_up:
                    raise
                self.clock.sleep(1.0)
                # Our own sign of life; it also moves block time on a chain that mines only
                # on transactions (a devnet), where the silence could otherwise never pass.
                with contextlib.suppress(ContractRevert):
                    self.ledger.heartbeat(self.task_id)

    # ------------------------------------------------------------------ between messages

    def _heartbeat_interval(self) -> float | None:
        """How often this party posts its on-chain sign of life, so the recipient can report it
        dropped only when its node is really gone (silent for the consortium's `dropoutSilence`),
        never while it works: a third of the silence. None when the algorithm is not
        dropout-tolerant (nobody can be dropped from it)."""
        algorithm = self.ledger.algorithm(self.task.algorithm_hash)
        if algorithm is None or not algorithm.dropout_tolerant:
            return None
        return max(1.0, self.ledger.dropout_silence() / 3)

    def _heartbeat_if_due(self) -> None:
        if self.heartbeat_every is None or self.clock.monotonic() - self.last_heartbeat <= self.heartbeat_every:
            return
        self.last_heartbeat = self.clock.monotonic()
        try:
            self.ledger.heartbeat(self.task_id)
        except ContractRevert as exc:
            # The chain takes no more (the task ended, or this party was dropped: its operator
            # may `pcn task contest-dropout` while the task runs).
            self.log.append("heartbeat-refused", self.task_id, error=exc.name)
            self.heartbeat_every = None

    def _recheck_if_due(self) -> None:
        """Verification held at the start; a suspension, a withdrawn policy grant or a
        deprecation since then stops this node before it sends any more of its data."""
        if self.clock.monotonic() - self.last_recheck <= self.timeouts.recheck_every:
            return
        self.last_recheck = self.clock.monotonic()
        refused = self.recheck()
        if refused is not None:
            raise refused
