"""Driving resumable protocols in-process as the runtime does: per-link FIFO, replays dropped,
a worker killed and resumed from its last checkpoint."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from pcn.algorithms.base import Message, Protocol, TaskServices

P = TypeVar("P", bound=Protocol)


def drive(
    parties: dict[str, P],
    initial: list[Message],
    crash: tuple[str, Callable[[P], bool]] | None = None,
    lose_output: bool = False,
) -> None:
    """run_local with the runtime's inbox semantics: per-link FIFO, duplicates (a replaying
    party re-sending a sequence number already delivered) are dropped after checking they
    are byte-identical. With `crash` = (party, when), that party's worker is killed once
    `when(party)` holds after a delivery and resumed from its last checkpoint: the runtime
    replays the messages it received from `resume_from` on. With `lose_output`, the worker
    dies before delivering what it sent in that last call."""
    queues: dict[tuple[str, str], deque[Message]] = {}
    sent: dict[tuple[str, str, int], Message] = {}
    delivered: dict[str, list[Message]] = {me: [] for me in parties}
    for me, p in parties.items():
        for sender, seq in p.resume_from.items():
            for s in range(seq):
                sent[(sender, me, s)] = Message(sender, me, -1, "already-delivered", b"", s)

    def post(msgs: list[Message]) -> None:
        for m in msgs:
            key = (m.sender, m.receiver, m.seq)
            if key in sent:
                if sent[key].kind != "already-delivered":
                    assert sent[key] == m, "a replayed message differs from the original"
                continue
            sent[key] = m
            queues.setdefault((m.sender, m.receiver), deque()).append(m)

    post(initial)
    crashed = False
    while True:
        links = [k for k, q in queues.items() if q]
        if not links:
            break
        msg = queues[links[0]].popleft()
        receiver = parties[msg.receiver]
        delivered[msg.receiver].append(msg)
        out = list(receiver.receive(msg))
        if crash is not None and not crashed and msg.receiver == crash[0] and crash[1](receiver):
            crashed = True
            if not lose_output:
                post(out)
            blob = receiver.checkpoint()
            assert blob is not None
            new = type(receiver).resume(receiver.ctx, receiver.data, blob)
            parties[msg.receiver] = new
            post(list(new.start()))
            for old in delivered[msg.receiver]:
                if old.seq >= new.resume_from.get(old.sender, 0):
                    post(list(new.receive(old)))
        else:
            post(out)
    assert crash is None or crashed
    assert all(p.done for p in parties.values())


def party_services(
    me: str,
    checkpoints: dict[tuple[str, int], bytes] | None = None,
    operator: dict[str, list[dict[str, str]]] | None = None,
) -> TaskServices:
    """A party's services in an in-process run: with `checkpoints`, its saved checkpoints
    land there by (party, units done), as the node's per-task checkpoint file would; with
    `operator`, the figures it shows its own operator, by party."""
    kw: dict[str, Any] = {}
    if checkpoints is not None:
        saved = checkpoints
        kw["save_checkpoint"] = lambda done, blob: saved.__setitem__((me, done), blob)
    if operator is not None:
        kw["report_to_operator"] = operator.setdefault(me, []).append
    return TaskServices(**kw)
