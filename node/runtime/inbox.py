"""A task's inbox in the organisation's Redis: accepted protocol messages, in per-sender
sequence order, each accepted exactly once.

Accepting is one atomic Lua script: a message with the next expected sequence number of
its sender is appended; an exact duplicate of an accepted one is acknowledged and dropped
(a resumed peer replays what it already sent); a different message under a used sequence
number is a replay attack; a message from the future is refused until the gap is filled.
The worker reads the list by index, so a resumed worker re-reads it from the start.

Each entry is the message's fields as a short JSON head followed by the payload's raw bytes
(no base64: a 1 M-ID psi-ot moves about 110 MB through the inbox), and beside the list the
script keeps each message's digest (`message_digest`), so the transcript hash at the end of
a run reads 32 bytes per message instead of every payload again.

The same script enforces the byte quotas (per task and per sender, counted in a hash beside
the list) and sets every key's expiry, so a flood can neither grow the organisation's Redis
(also the Celery broker) past the quotas nor outlive the task.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import redis

from pcn.algorithms.base import Message

_ACCEPT = """
if redis.call('EXISTS', KEYS[5]) == 1 then return 'closed' end
local expected = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq < expected then
  if redis.call('HGET', KEYS[3], ARGV[1] .. ':' .. ARGV[2]) == ARGV[3] then return 'duplicate' end
  return 'replay'
end
if seq > expected then return 'gap:' .. expected end
local size = string.len(ARGV[4])
if tonumber(redis.call('HGET', KEYS[6], '*') or '0') + size > tonumber(ARGV[5]) then return 'quota:task' end
if tonumber(redis.call('HGET', KEYS[6], ARGV[1]) or '0') + size > tonumber(ARGV[6]) then return 'quota:sender' end
redis.call('HINCRBY', KEYS[6], '*', size)
redis.call('HINCRBY', KEYS[6], ARGV[1], size)
redis.call('HSET', KEYS[1], ARGV[1], seq + 1)
redis.call('HSET', KEYS[3], ARGV[1] .. ':' .. ARGV[2], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('RPUSH', KEYS[7], ARGV[8])
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[6], KEYS[7]}) do redis.call('EXPIRE', key, ARGV[7]) end
redis.call('PUBLISH', KEYS[4], '1')
return 'new'
"""

Outcome = Literal["new", "duplicate", "replay", "gap", "closed", "quota"]

# Defaults of the byte quotas (node config `mailbox_task_quota`, `mailbox_sender_quota`).
TASK_QUOTA = 1024 * 1024 * 1024
SENDER_QUOTA = 256 * 1024 * 1024

# Messages a reader takes from Redis at a time (each at most the mailbox's 8 MiB body).
READ_BATCH = 16

# How long a finished task's inbox stays closed: late re-sends from a resumed peer are then
# acknowledged without storing anything (no inbox is recreated after its deletion).
CLOSED_TTL = 30 * 86_400


@dataclass(frozen=True)
class Accepted:
    outcome: Outcome
    expected_seq: int | None = None
    quota: str = ""  # "task" or "sender": which quota a refused message would exceed


def message_digest(msg: Message) -> bytes:
    """sha256 of a message's routing fields and of its payload's sha256: what a party's
    transcript hash is made of, for the messages it sent and received."""
    head = f"{msg.sender.lower()}|{msg.receiver.lower()}|{msg.round}|{msg.kind}|{msg.seq}|".encode()
    return hashlib.sha256(head + hashlib.sha256(msg.payload).digest()).digest()


_ENTRY_VERSION = b"\x01"
_HEAD_LEN = struct.Struct(">I")


def encode(msg: Message) -> bytes:
    """An inbox entry: version byte, u32 length of the JSON head, the head, the raw payload."""
    head = json.dumps(
        {"sender": msg.sender, "receiver": msg.receiver, "round": msg.round, "kind": msg.kind, "seq": msg.seq},
        sort_keys=True,
    ).encode()
    return _ENTRY_VERSION + _HEAD_LEN.pack(len(head)) + head + bytes(msg.payload)


def decode(raw: bytes | str) -> Message:
    if isinstance(raw, str) or raw[:1] == b"{":  # an entry written before the binary form: JSON, base64 payload
        d = json.loads(raw)
        payload = base64.b64decode(d["payload"])
    else:
        if raw[:1] != _ENTRY_VERSION:
            raise ValueError(f"unknown inbox entry version {raw[:1]!r}")
        (size,) = _HEAD_LEN.unpack_from(raw, 1)
        start = 1 + _HEAD_LEN.size
        d = json.loads(raw[start : start + size])
        payload = raw[start + size :]
    return Message(d["sender"], d["receiver"], int(d["round"]), d["kind"], payload, int(d["seq"]))


class Inbox:
    def __init__(
        self,
        r: redis.Redis,
        prefix: str,
        *,
        task_quota: int = TASK_QUOTA,
        sender_quota: int = SENDER_QUOTA,
    ) -> None:
        if task_quota <= 0 or sender_quota <= 0:
            raise ValueError("inbox quotas must be positive byte counts")
        self.r = r
        self.prefix = prefix  # e.g. "pcn:<account>"
        self.task_quota = task_quota
        self.sender_quota = sender_quota
        self._accept = r.register_script(_ACCEPT)

    def _keys(self, task_id: int) -> list[str]:
        p = f"{self.prefix}:inbox:{task_id}"
        return [p + ":next", p + ":list", p + ":digests", p + ":notify", p + ":closed", p + ":bytes", p + ":received"]

    def keys(self, task_id: int) -> list[str]:
        """The keys holding a task's messages (what `delete` removes)."""
        k = self._keys(task_id)
        return [*k[:3], k[5], k[6]]

    def accept(self, task_id: int, msg: Message, digest: bytes, *, ttl: int = CLOSED_TTL) -> Accepted:
        """Accept one message; every key of the inbox then expires ``ttl`` seconds from now."""
        if ttl <= 0:
            raise ValueError("the inbox TTL must be a positive number of seconds")
        args: list[str | int | bytes] = [
            msg.sender.lower(),
            msg.seq,
            digest.hex(),
            encode(msg),
            self.task_quota,
            self.sender_quota,
            ttl,
            message_digest(msg),
        ]
        reply = self._accept(keys=self._keys(task_id), args=args)
        out = reply.decode() if isinstance(reply, bytes) else str(reply)
        if out.startswith("quota:"):
            return Accepted("quota", quota=out[6:])
        if out.startswith("gap:"):
            return Accepted("gap", int(out[4:]))
        match out:
            case "new" | "duplicate" | "replay" | "closed":
                return Accepted(out)
        raise RuntimeError(f"the inbox's accept script returned {out!r}")

    def read(self, task_id: int, start: int, wait: float = 0.0, limit: int | None = None) -> list[Message]:
        """Messages from index `start` on, at most `limit` of them (None: all); waits up to
        `wait` seconds for at least one. A limit bounds what a reader holds at once: a task's
        inbox can hold a gigabyte (a 10 M psi-ot's rows) when the reader falls behind."""
        key = self._keys(task_id)[1]
        stop = -1 if limit is None else start + max(1, limit) - 1
        deadline = time.monotonic() + wait
        while True:
            raw = self.r.lrange(key, start, stop)
            if raw or time.monotonic() >= deadline:
                return [decode(x) for x in raw]
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def received_digests(self, task_id: int) -> list[bytes]:
        """`message_digest` of every message in the inbox, in inbox order (what a transcript
        hashes), read without the payloads. An inbox filled before the digests were kept
        beside it has fewer digests than messages: its digests are computed from the messages."""
        keys = self._keys(task_id)
        pipe = self.r.pipeline()
        pipe.lrange(keys[6], 0, -1)
        pipe.llen(keys[1])
        digests, count = pipe.execute()
        if len(digests) == count:
            return [bytes(d) for d in digests]
        return [message_digest(m) for m in self.each(task_id)]

    def each(self, task_id: int, start: int = 0, batch: int = READ_BATCH) -> Iterator[Message]:
        """Every message from index `start` on, read `batch` at a time."""
        while msgs := self.read(task_id, start, limit=batch):
            yield from msgs
            start += len(msgs)

    def delete(self, task_id: int) -> list[str]:
        """Delete a task's messages and close its inbox to late arrivals."""
        keys = self.keys(task_id)
        pipe = self.r.pipeline()
        pipe.set(self._keys(task_id)[4], "1", ex=CLOSED_TTL)
        pipe.delete(*keys)
        pipe.execute()
        return keys
