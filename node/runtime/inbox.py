"""A task's inbox in the organisation's Redis: accepted protocol messages, in per-sender
sequence order, each accepted exactly once.

Accepting is one atomic Lua script: a message with the next expected sequence number of
its sender is appended; an exact duplicate of an accepted one is acknowledged and dropped
(a resumed peer replays what it already sent); a different message under a used sequence
number is a replay attack; a message from the future is refused until the gap is filled.
The worker reads the list by index, so a resumed worker re-reads it from the start.
"""

from __future__ import annotations

import base64
import json
import time
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
redis.call('HSET', KEYS[1], ARGV[1], seq + 1)
redis.call('HSET', KEYS[3], ARGV[1] .. ':' .. ARGV[2], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('PUBLISH', KEYS[4], '1')
return 'new'
"""

Outcome = Literal["new", "duplicate", "replay", "gap", "closed"]

# How long a finished task's inbox stays closed: late re-sends from a resumed peer are then
# acknowledged without storing anything (no inbox is recreated after its deletion).
CLOSED_TTL = 30 * 86_400


@dataclass(frozen=True)
class Accepted:
    outcome: Outcome
    expected_seq: int | None = None


def encode(msg: Message) -> str:
    return json.dumps(
        {
            "sender": msg.sender,
            "receiver": msg.receiver,
            "round": msg.round,
            "kind": msg.kind,
            "seq": msg.seq,
            "payload": base64.b64encode(msg.payload).decode(),
        },
        sort_keys=True,
    )


def decode(raw: bytes | str) -> Message:
    d = json.loads(raw)
    return Message(
        d["sender"], d["receiver"], int(d["round"]), d["kind"], base64.b64decode(d["payload"]), int(d["seq"])
    )


class Inbox:
    def __init__(self, r: redis.Redis, prefix: str) -> None:
        self.r = r
        self.prefix = prefix  # e.g. "pcn:<account>"
        self._accept = r.register_script(_ACCEPT)

    def _keys(self, task_id: int) -> list[str]:
        p = f"{self.prefix}:inbox:{task_id}"
        return [p + ":next", p + ":list", p + ":digests", p + ":notify", p + ":closed"]

    def keys(self, task_id: int) -> list[str]:
        """The keys holding a task's messages (what `delete` removes)."""
        return self._keys(task_id)[:3]

    def accept(self, task_id: int, msg: Message, digest: bytes) -> Accepted:
        out = self._accept(keys=self._keys(task_id), args=[msg.sender.lower(), msg.seq, digest.hex(), encode(msg)])
        out = out.decode() if isinstance(out, bytes) else str(out)
        if out == "closed":
            return Accepted("closed")
        if out.startswith("gap:"):
            return Accepted("gap", int(out[4:]))
        return Accepted(out)  # type: ignore[arg-type]

    def read(self, task_id: int, start: int, wait: float = 0.0) -> list[Message]:
        """Messages from index `start` on; waits up to `wait` seconds for at least one."""
        key = self._keys(task_id)[1]
        deadline = time.monotonic() + wait
        while True:
            raw = self.r.lrange(key, start, -1)
            if raw or time.monotonic() >= deadline:
                return [decode(x) for x in raw]
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def delete(self, task_id: int) -> list[str]:
        """Delete a task's messages and close its inbox to late arrivals."""
        keys = self.keys(task_id)
        pipe = self.r.pipeline()
        pipe.set(self._keys(task_id)[4], "1", ex=CLOSED_TTL)
        pipe.delete(*keys)
        pipe.execute()
        return keys
