"""A task's state at one node, in the organisation's Redis, and who owns each key.

Keys are `NodeContext.key(name, task_id)`; this module and the modules it names are the only
writers of each:

- `lock:<task>`: `TaskLock`, one worker per task at a time;
- `progress:<task>`: `Progress`, read by the mailbox's progress route;
- `params:<task>`: `handle_params`, the parameters the requester pushed, once they hash right;
- `sent:<task>` and `dropped:<task>`: `RunRecord`, what the protocol driver
  (`pcn.runtime.driver`) sent and which parties it declared dropped; with the inbox's keys
  (`pcn.runtime.inbox`) the run's intermediates (`intermediate_keys`), deleted before the receipt;
- `finishing:<task>` and `refusing:<task>`: the task runner's durable records of a receipt or
  a refusal it has started to submit (`pcn.runtime.execute`);
- `open-tasks`: the watcher's tasks queued and not yet finished here (`pcn.runtime.watcher`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from pcn.chain.errors import ContractRevert
from pcn.chain.types import TaskStatus
from pcn.runtime.context import NodeContext
from pcn.runtime.inbox import Inbox
from pcn.runtime.procs import pid_alive


def reply_bytes(reply: bytes | str) -> bytes:
    """A reply of the node's Redis client, which returns bytes (it does not decode responses;
    redis-py types every reply as bytes | str whatever the client's settings)."""
    if isinstance(reply, str):
        raise TypeError("the node's Redis client must not decode responses (decode_responses in redis_url?)")
    return reply


class Phase(StrEnum):
    """Where a task's run is at one node, as its progress record says (the strings are what the
    mailbox's progress route serves and `pcn task status` shows)."""

    WAITING_PARAMS = "waiting-params"
    VERIFYING = "verifying"
    RUNNING = "running"
    WAITING = "waiting"  # for peers' messages
    RECEIPT = "receipt"  # submitting the receipt
    DONE = "done"
    REFUSED = "refused"
    ABORTED = "aborted"  # another party ended the task
    DROPPED = "dropped"  # reported dropped; the others went on


# Phases in which a participant holds nobody up: it is itself waiting, or it has finished.
NOT_BLOCKING = frozenset({Phase.WAITING, Phase.DONE, Phase.REFUSED, Phase.ABORTED, Phase.DROPPED})


OWN_PREFIX = "own."  # progress fields that only this organisation may read


def shared_fields(fields: dict[str, str]) -> dict[str, str]:
    """What peers and the requester may read of a progress record: all but the own fields."""
    return {k: v for k, v in fields.items() if not k.startswith(OWN_PREFIX)}


class Progress:
    """Per-task progress in the organisation's Redis, read by the mailbox's status route."""

    def __init__(self, ctx: NodeContext, task_id: int) -> None:
        self.r = ctx.redis
        self.key = ctx.key("progress", task_id)

    def read(self) -> dict[str, str]:
        return {reply_bytes(k).decode(): reply_bytes(v).decode() for k, v in self.r.hgetall(self.key).items()}

    def set_own(self, figures: dict[str, str]) -> None:
        """Figures for this organisation's operator alone (OWN_PREFIX: the mailbox and the
        relay publisher leave them out of what anyone else reads)."""
        self.r.hset(self.key, mapping={OWN_PREFIX + k: str(v) for k, v in figures.items()})
        self.r.expire(self.key, 7 * 24 * 3600)

    def set(self, phase: Phase, fraction: float, detail: str = "", **extra: Any) -> None:
        now = time.time()
        fields: dict[FieldT, EncodableT] = {
            "phase": phase,
            "fraction": f"{fraction:.4f}",
            "detail": detail,
            "updated": f"{now:.3f}",
        }
        fields.update({k: str(v) for k, v in extra.items()})
        if phase is Phase.RUNNING:
            self.r.hsetnx(self.key, "running_since", f"{now:.3f}")
        self.r.hset(self.key, mapping=fields)
        self.r.expire(self.key, 7 * 24 * 3600)


# Names of the run's own keys (`RunRecord`) and of the pushed parameters (`handle_params`).
_SENT = "sent"
_DROPPED = "dropped"
_PARAMS = "params"


@dataclass(frozen=True)
class DropDeclaration:
    """Parties the result recipient declared dropped, at the inbox index where it did, so a
    resumed run replays the declaration at the same point, like a message."""

    at: int
    parties: list[str]


class RunRecord:
    """What one run of a task's protocol leaves at this node besides its inbox: the digest of
    every message it sent, by receiver and sequence (`sent:<task>`, hashed into the receipt's
    transcript), and its dropout declarations in order (`dropped:<task>`)."""

    def __init__(self, ctx: NodeContext, task_id: int) -> None:
        self.r = ctx.redis
        self.sent_key = ctx.key(_SENT, task_id)
        self.drops_key = ctx.key(_DROPPED, task_id)

    def record_sent(self, receiver: str, seq: int, digest: bytes) -> None:
        # Keyed by (receiver, seq): a resumed worker re-sending a message records it once.
        self.r.hset(self.sent_key, f"{receiver.lower()}:{seq:012d}", digest.hex())

    def sent(self) -> list[tuple[bytes, bytes]]:
        """(receiver:seq, digest in hex) of every message sent, sorted."""
        return sorted((reply_bytes(k), reply_bytes(v)) for k, v in self.r.hgetall(self.sent_key).items())

    def drops(self) -> list[DropDeclaration]:
        """Every dropout declaration, in the order it was made."""
        records = [json.loads(x) for x in self.r.lrange(self.drops_key, 0, -1)]
        return [DropDeclaration(int(d["at"]), list(d["parties"])) for d in records]

    def add_drop(self, drop: DropDeclaration) -> None:
        self.r.rpush(self.drops_key, json.dumps({"at": drop.at, "parties": drop.parties}))


def intermediate_keys(ctx: NodeContext, task_id: int) -> list[str]:
    """The Redis keys a task's run creates and deletes before its receipt."""
    inbox = Inbox(ctx.redis, ctx.key()).keys(task_id)
    return [*inbox, *(ctx.key(k, task_id) for k in (_SENT, _PARAMS, _DROPPED))]


def holds_intermediates(ctx: NodeContext, task_id: int) -> bool:
    """Does this node still hold intermediates of the task (scratch files, messages)?"""
    return ctx.task_dir(task_id).exists() or bool(ctx.redis.exists(*intermediate_keys(ctx, task_id)))


def _process_space() -> str:
    """Names the pid space this process lives in (kernel boot and pid namespace), so that a
    pid in a lock token is only ever checked on the machine, and in the container, it is from."""
    boot = Path("/proc/sys/kernel/random/boot_id")
    boot_id = boot.read_text().strip() if boot.is_file() else "unknown-boot"
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = "unknown-ns"
    return f"{boot_id}/{pid_ns}"


# Deletes the lock only if it still holds the dead worker's token (no race with a new holder).
_BREAK_LOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class TaskLock:
    """One worker per (task, organisation) at a time. The lock expires unless renewed, so a
    worker killed with SIGKILL frees it within `ttl` seconds for the redelivered message.
    Faster still: the token names the holder's process; a worker that finds the lock held
    by a process of its own pid space that no longer exists breaks it at once."""

    def __init__(self, ctx: NodeContext, task_id: int, ttl: float = 15.0) -> None:
        self.redis = ctx.redis
        self.name = ctx.key("lock", task_id)
        # thread_local=False: the renewing thread must see the token the acquiring thread set
        self.lock = ctx.redis.lock(self.name, timeout=ttl, thread_local=False)
        self.ttl = ttl
        self.space = _process_space()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _break_if_holder_died(self) -> bool:
        raw = self.redis.get(self.name)
        if raw is None:
            return False
        space, _, pid = reply_bytes(raw).decode(errors="replace").rpartition("|")[0].rpartition("|")
        if space != self.space or not pid.isdigit() or pid_alive(int(pid)):
            return False
        return bool(self.redis.eval(_BREAK_LOCK, 1, self.name, raw))

    def __enter__(self) -> TaskLock:
        token = f"{self.space}|{os.getpid()}|{os.urandom(8).hex()}"
        deadline = time.monotonic() + self.ttl * 4
        while not self.lock.acquire(blocking=False, token=token):
            if not self._break_if_holder_died():
                if time.monotonic() > deadline:
                    raise TimeoutError("another worker holds this task")
                time.sleep(0.1)
        self._thread = threading.Thread(target=self._renew, daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.lock.extend(self.ttl, replace_ttl=True)
            except redis.exceptions.LockError:
                return  # the lock expired and is someone else's now
            except redis.RedisError:
                continue  # Redis briefly away (restarting): keep renewing once it is back

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.lock.release()


def handle_params(ctx: NodeContext, task_id: int, body: bytes) -> None:
    """Accept a task's parameters only when they hash to the on-chain params hash."""
    try:
        task = ctx.ledger.task(task_id)
    except ContractRevert as exc:
        raise ValueError(f"task {task_id}: {exc}") from None
    if task.status is TaskStatus.NONE:
        raise ValueError(f"task {task_id} does not exist")
    if hashlib.sha256(body).digest() != task.params_hash:
        raise ValueError("parameters do not hash to the task's on-chain params hash")
    ctx.redis.set(ctx.key(_PARAMS, task_id), body, ex=max(60, int(task.deadline - time.time()) + 3600))
