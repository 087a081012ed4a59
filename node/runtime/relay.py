"""The relay: how an organisation whose node accepts no inbound connection still takes part
(`pcn relay serve`).

Such an organisation registers `<relay>/o/<its address>` as its endpoint on chain. Peers
deliver to that URL exactly as to a mailbox; the relay keeps each envelope, durably, in its
own Redis until the organisation's node fetches it over an outbound connection (long
polling), hands it to its own mailbox and acknowledges it.

What the relay can and cannot do. It only ever holds sealed, signed envelopes: it reads
their clear header (task, round, kind, sequence number, sender, receiver, size; what the
envelope format leaves in clear for any carrier) and checks the sender's signature, so its
per-sender quotas meter the real sender. It reads the consortium's chain too, and keeps an
envelope only from an admitted, active organisation, for a task on chain that is not final,
sent by a participant (parameters: by the task's requester) to a participant: nobody outside
the consortium can fill an organisation's queue. It cannot read a payload (sealed to the addressee's
registered X25519 key) nor forge or alter one (the addressee checks the signature, the
sender's on-chain status and the AEAD tag, as for a direct delivery). What it can do, drop,
delay, reorder or replay, is what a lossy network can do: the addressee's inbox refuses gaps
and replays, peers retry, and a task that cannot go on ends PEER_UNREACHABLE before its
deadline. A fetch and an acknowledgement are requests signed by the organisation's
registered key; an acknowledgement names the last envelope it covers in its signed path, so
a replayed one acknowledges nothing new.

Task parameters travel through it as they reach a mailbox: an envelope signed by the task's
requester and sealed to the addressee (their hash is on chain), so a relay operator reads
no parameters either; it sees that a task's parameters passed, their size and the requester.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
from eth_utils import is_address, to_checksum_address
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pcn.chain.errors import ChainError
from pcn.chain.types import OrgStatus
from pcn.runtime.envelope import EnvelopeError, Route, envelope_route
from pcn.runtime.mailbox import (
    MAX_BODY,
    MAX_INFLIGHT,
    MAX_PARAMS,
    PARAMS_SEAL_OVERHEAD,
    Problem,
    api_app,
    check_declared_size,
    read_capped,
)
from pcn.runtime.peers import PeerLookup, UnknownPeer, UnknownTask
from pcn.runtime.reqauth import RequestAuthError, request_signer

log = logging.getLogger("pcn.relay")
T = TypeVar("T")

ADDRESSEE_QUOTA = 2 * 1024 * 1024 * 1024  # bytes the relay holds for one organisation
SENDER_QUOTA = 512 * 1024 * 1024  # bytes one sender may have waiting at one organisation
EXPIRE_AFTER = 7 * 24 * 3600  # seconds an envelope nobody fetched is kept
MAX_FETCH = 64  # envelopes per fetch
MAX_WAIT = 30.0  # seconds a fetch may wait for the first envelope
ONLINE_GRACE = 10.0  # seconds after its last fetch ended that a node still counts as fetching
MAX_PROGRESS = 64 * 1024  # bytes of one progress snapshot
MAX_READERS = 1024  # accounts one snapshot may name as its readers
PROGRESS_TTL = 7 * 24 * 3600  # seconds a snapshot is kept after its last update (as a node keeps its own)
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
COUNTERS = (
    "accepted",
    "delivered",
    "expired",
    "refused-quota",
    "refused-envelope",
    "refused-by-chain",
    "dropped-by-fault",
)
Entries = list[tuple[bytes, dict[bytes, bytes]]]  # what XRANGE answers (redis-py types it loosely)


@dataclass(frozen=True)
class Item:
    """One envelope (or a task's parameters) waiting for its addressee."""

    id: str
    kind: str  # "message" or "params"
    task_id: int
    sender: str  # the envelope's signer (for parameters, the task's requester)
    body: bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "task_id": self.task_id,
            "sender": self.sender,
            "body": base64.b64encode(self.body).decode(),
        }


# One accepted envelope, atomically: the quota reservation, the stream entry and its count
# either all happen or none does (a relay killed between them must not leave the counts or
# the held bytes wrong). KEYS: held bytes of the addressee, of the sender, the queue, the
# counters. ARGV: size, addressee quota, sender quota, the relay clock in ms, then the fields.
_ACCEPT = """
local size = tonumber(ARGV[1])
local total = redis.call('INCRBY', KEYS[1], size)
local by_sender = redis.call('INCRBY', KEYS[2], size)
if total > tonumber(ARGV[2]) or by_sender > tonumber(ARGV[3]) then
  redis.call('DECRBY', KEYS[1], size)
  redis.call('DECRBY', KEYS[2], size)
  redis.call('HINCRBY', KEYS[4], 'refused-quota', 1)
  return false
end
local fields = {'kind', ARGV[5], 'task', ARGV[6], 'sender', ARGV[7], 'body', ARGV[8]}
local ok, id = pcall(redis.call, 'XADD', KEYS[3], ARGV[4] .. '-*', unpack(fields))
if not ok then  -- the clock stepped back behind the newest item: Redis numbers it
  id = redis.call('XADD', KEYS[3], '*', unpack(fields))
end
redis.call('HINCRBY', KEYS[4], 'accepted', 1)
return id
"""

# Items leaving the queue, atomically with their held bytes and their count (an
# acknowledgement, an expiry, or a faulty relay's discard). KEYS: the queue, the addressee's
# held bytes, the counters. ARGV: first id, last id, the counter ('' for none), the prefix of
# a sender's held-bytes key.
_DROP = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2])
for _, entry in ipairs(entries) do
  local f = entry[2]
  local size, sender = 0, '-'
  for i = 1, #f, 2 do
    if f[i] == 'body' then size = string.len(f[i + 1]) end
    if f[i] == 'sender' and f[i + 1] ~= '' then sender = f[i + 1] end
  end
  redis.call('DECRBY', KEYS[2], size)
  redis.call('DECRBY', ARGV[4] .. sender, size)
  redis.call('XDEL', KEYS[1], entry[1])
end
if #entries > 0 and ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[3], ARGV[3], #entries)
end
return #entries
"""


class RelayStore:
    """The relay's queues in its own Redis: one stream per organisation (entries stay until
    acknowledged or expired), the bytes held per organisation and per sender, and counters
    for the operator."""

    def __init__(
        self,
        r: redis.Redis,
        *,
        prefix: str = "pcnrelay",
        addressee_quota: int = ADDRESSEE_QUOTA,
        sender_quota: int = SENDER_QUOTA,
        expire_after: float = EXPIRE_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.r, self.prefix = r, prefix
        self.addressee_quota, self.sender_quota = addressee_quota, sender_quota
        self.expire_after, self.clock = expire_after, clock
        self._accept_script = r.register_script(_ACCEPT)
        self._drop_script = r.register_script(_DROP)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def count(self, org: str, counter: str, n: int = 1) -> None:
        self.r.hincrby(self._key("stats", org), counter, n)

    def accept(self, org: str, kind: str, task_id: int, sender: str, body: bytes) -> str | None:
        """Queue `body` for `org`; its id, or None when a quota is used up (nothing kept)."""
        self.expire(org)
        keys = [self._key("held", org), self._key("held", org, sender or "-"), self._key("q", org)]
        keys.append(self._key("stats", org))
        # ids carry the relay's clock, which expiry reads them by
        args = [len(body), self.addressee_quota, self.sender_quota, int(self.clock() * 1000)]
        item_id = self._accept_script(keys=keys, args=[*args, kind, str(task_id), sender, body])
        if item_id is None:
            return None
        return item_id.decode() if isinstance(item_id, bytes) else str(item_id)

    def fetch(self, org: str, limit: int = MAX_FETCH, wait: float = 0.0) -> list[Item]:
        """The oldest waiting items of `org`, waiting up to `wait` seconds for a first one."""
        self.expire(org)
        block = int(wait * 1000) if wait > 0 else None
        # Acknowledged entries are deleted, so reading after 0-0 gives the oldest waiting ones
        # at once, or blocks until one arrives.
        got = cast(list[tuple[bytes, Entries]], self.r.xread({self._key("q", org): "0-0"}, count=limit, block=block))
        return [self._item(entry_id, fields) for _stream, entries in got or [] for entry_id, fields in entries]

    @staticmethod
    def _item(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Item:
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return Item(
            eid, fields[b"kind"].decode(), int(fields[b"task"]), fields[b"sender"].decode(), bytes(fields[b"body"])
        )

    def _drop(self, org: str, first: str, last: str, counter: str) -> int:
        """Remove the items of `org` from `first` to `last` (ids, inclusive) with their held
        bytes, counting them under `counter` ('' for none), in one atomic step."""
        keys = [self._key("q", org), self._key("held", org), self._key("stats", org)]
        return int(self._drop_script(keys=keys, args=[first, last, counter, self._key("held", org, "")]))

    def discard(self, org: str, item_id: str) -> int:
        """Delete one item unseen (only a faulty relay does: `Faults`)."""
        return self._drop(org, item_id, item_id, "")

    def ack(self, org: str, upto: str) -> int:
        """Forget every item of `org` up to and including `upto`: it was handed over."""
        return self._drop(org, "-", upto, "delivered")

    def expire(self, org: str) -> int:
        """Drop what waited longer than `expire_after` (counted: the operator sees it)."""
        cutoff = int((self.clock() - self.expire_after) * 1000)
        if cutoff <= 0:
            return 0
        dropped = self._drop(org, "-", f"{cutoff}-0", "expired")
        if dropped:
            log.warning("expired %d envelope(s) for %s that nobody fetched", dropped, org)
        return dropped

    def mark_fetching(self, org: str, until: float) -> None:
        """`org`'s node is connected (fetching) until `until` on the relay's clock: the start of
        a held fetch marks its end, its answer marks now."""
        self.r.set(self._key("seen", org), repr(until))

    def seen_ago(self, org: str) -> float | None:
        """Seconds since `org`'s node was last connected (0 while a fetch is held open); None
        if it never fetched."""
        raw = cast(bytes | None, self.r.get(self._key("seen", org)))
        return None if raw is None else max(0.0, self.clock() - float(raw))

    def put_progress(self, org: str, task_id: int, fields: dict[str, str], readers: list[str]) -> None:
        """The latest progress snapshot `org` published for a task, and who may read it."""
        value = json.dumps({"fields": fields, "readers": readers})
        self.r.set(self._key("progress", org, str(task_id)), value, ex=PROGRESS_TTL)

    def progress(self, org: str, task_id: int) -> tuple[dict[str, str], list[str]] | None:
        raw = cast(bytes | None, self.r.get(self._key("progress", org, str(task_id))))
        if raw is None:
            return None
        snap = json.loads(raw)
        return dict(snap["fields"]), list(snap["readers"])

    def stats(self) -> dict[str, dict[str, int]]:
        """Per organisation: seconds since its node last fetched (-1: never), waiting items and
        bytes, and the counters."""
        keys = [*self.r.scan_iter(self._key("stats", "*")), *self.r.scan_iter(self._key("q", "*"))]
        keys += self.r.scan_iter(self._key("seen", "*"))
        orgs = {bytes(k).decode().split(":")[-1] for k in keys}
        out: dict[str, dict[str, int]] = {}
        for org in sorted(orgs):
            raw = cast(dict[bytes, bytes], self.r.hgetall(self._key("stats", org)))
            counters = {k.decode(): int(v) for k, v in raw.items()}
            ago = self.seen_ago(org)
            out[org] = {
                "last_fetch_s_ago": -1 if ago is None else int(ago),
                "waiting": int(self.r.xlen(self._key("q", org))),
                "waiting_bytes": int(self.r.get(self._key("held", org)) or 0),
                **{c: counters.get(c, 0) for c in COUNTERS},
            }
        return out


@dataclass
class Faults:
    """Test only: a relay that misbehaves as a dishonest or broken one could, on each fetch.
    `drop`: each item is deleted unseen with this probability; `delay`: the answer waits
    `delay_seconds` with this probability; `reorder`: the batch is shuffled; `replay`: an item
    handed over earlier is added again. The seed makes a run repeatable."""

    drop: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    replay: float = 0.0
    delay_seconds: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        import random

        self._rng = random.Random(self.seed)
        self._seen: dict[str, list[Item]] = {}

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """ "drop=0.05,reorder=0.5,replay=0.2,delay=0.1,delay_seconds=2,seed=7"."""
        values: dict[str, float] = {}
        for part in filter(None, spec.split(",")):
            name, _, value = part.partition("=")
            if name not in {"drop", "delay", "reorder", "replay", "delay_seconds", "seed"}:
                raise ValueError(f"unknown fault {name!r}")
            values[name] = float(value)
        seed = int(values.pop("seed", 0))
        return cls(**values, seed=seed)

    def apply(self, store: RelayStore, org: str, items: list[Item]) -> list[Item]:
        kept = []
        for item in items:
            if self._rng.random() < self.drop:
                store.discard(org, item.id)
                store.count(org, "dropped-by-fault")
            else:
                kept.append(item)
        seen = self._seen.setdefault(org, [])
        if seen and self._rng.random() < self.replay:
            kept.append(self._rng.choice(seen))
        seen.extend(kept)
        del seen[:-64]
        if self._rng.random() < self.reorder:
            self._rng.shuffle(kept)
        if self._rng.random() < self.delay:
            time.sleep(self.delay_seconds)
        return kept


def _org(value: str, serves: frozenset[str] | None) -> str:
    if not is_address(value):
        raise Problem(404, "not-served", f"{value!r} is not an organisation address")
    org = to_checksum_address(value)
    if serves is not None and org not in serves:
        raise Problem(404, "not-served", f"this relay does not serve {org}")
    return org


def _task_id(value: int) -> int:
    if not 0 <= value < 2**256:
        raise Problem(400, "malformed", "task id out of range")
    return value


def create_relay_app(
    store: RelayStore,
    *,
    peers: PeerLookup,
    chain_id: int,
    task_manager: str,
    serves: frozenset[str] | None = None,
    max_body: int = MAX_BODY,
    max_params: int = MAX_PARAMS,
    max_inflight: int = MAX_INFLIGHT,
    clock: Callable[[], float] = time.time,
    faults: Faults | None = None,
) -> FastAPI:
    """The relay's HTTP API. Peers and requesters use the mailbox routes under
    `/o/<organisation>`; the organisation's node fetches (`GET /o/<org>/fetch`) and
    acknowledges (`POST /o/<org>/ack/<last id>`) with requests signed by its key. `serves`
    (checksummed addresses) limits the organisations it takes envelopes for; None: any.
    `peers` is the chain's view (`PeerDirectory`) of the deployment (`chain_id`,
    `task_manager`) whose envelopes it keeps: only an admitted, active organisation's
    envelope for a live task of which it may send that envelope to that addressee is kept,
    so nobody outside the consortium can fill an organisation's queue."""
    serves = frozenset(to_checksum_address(a) for a in serves) if serves is not None else None
    task_manager = to_checksum_address(task_manager)
    app = api_app("pcn relay", max_inflight)

    def _guarded(fn: Callable[[], T], what: str) -> T:
        try:
            return fn()
        except Problem:
            raise
        except ChainError as exc:
            log.warning("%s: chain unavailable: %s", what, exc)
            raise Problem(503, "chain-unavailable", "the chain cannot be reached, retry later") from None
        except redis.RedisError as exc:
            log.warning("%s: redis unavailable: %s", what, exc)
            raise Problem(503, "store-unavailable", "the relay's store cannot be reached, retry later") from None

    def _signer(request: Request, task_id: int = 0) -> str:
        try:
            return request_signer(request.headers, request.method, request.url.path, task_id, clock())
        except RequestAuthError as exc:
            raise Problem(401, exc.code, exc.detail) from None

    def _signed_by(request: Request, org: str, task_id: int = 0) -> None:
        signer = _signer(request, task_id)
        if signer != org:
            raise Problem(403, "not-addressee", f"{signer} may not act for {org} at this relay")

    def _accept(org: str, kind: str, task_id: int, sender: str, body: bytes) -> JSONResponse:
        item = store.accept(org, kind, task_id, sender, body)
        if item is None:
            raise Problem(413, "quota-exceeded", f"the relay's quota for {org} or for this sender is used up")
        return JSONResponse({"outcome": "relayed", "id": item}, status_code=202)

    @app.get("/v1/health")
    def relay_health() -> dict[str, Any]:
        return {"ok": True, "relay": True}

    @app.get("/o/{org}/v1/health")
    def health(org: str) -> dict[str, Any]:
        """The relay takes deliveries for `org` ("ok"); whether its node is fetching them, as
        far as the relay can tell (a held fetch, or one answered within ONLINE_GRACE)."""
        addressee = _org(org, serves)
        ago = _guarded(lambda: store.seen_ago(addressee), "relay health")
        online = ago is not None and ago <= ONLINE_GRACE
        return {"ok": True, "org": addressee, "relay": True, "node_online": online, "node_seen_s_ago": ago}

    def _on_chain(route: Route, kind: str) -> None:
        """What the chain says of an envelope before the relay keeps it (its signature is
        checked already): the sender admitted and active; the task known and not final; the
        addressee a participant; a message's sender a participant, parameters' sender the
        task's requester."""
        if route.chain_id != chain_id or route.task_manager != task_manager:
            where = f"chain {route.chain_id}, TaskManager {route.task_manager}"
            raise Problem(400, "wrong-domain", f"envelope is for {where}, not this consortium's")
        try:
            sender = peers.organisation(route.sender)
        except UnknownPeer:
            raise Problem(403, "sender-not-active", f"{route.sender} is not an admitted organisation") from None
        if sender.status != OrgStatus.ACTIVE:
            raise Problem(403, "sender-not-active", f"{route.sender} is {sender.status.name.lower()}")
        try:
            members = [p.lower() for p in peers.participants(route.task_id)]
            task = peers.task(route.task_id)
        except UnknownTask:  # the relay's view of the chain may lag the sender's: retry
            raise Problem(425, "too-early", f"no task {route.task_id} on chain (yet)") from None
        if task.status.is_final:
            status = task.status.name.lower()
            raise Problem(409, "task-final", f"task {route.task_id} is {status}: it takes no envelopes")
        if route.receiver.lower() not in members:
            raise Problem(403, "not-participant", f"{route.receiver} is not a participant of task {route.task_id}")
        if kind == "params" and route.sender.lower() != task.requester.lower():
            raise Problem(403, "not-requester", f"{route.sender} is not the requester of task {route.task_id}")
        if kind == "message" and route.sender.lower() not in members:
            raise Problem(403, "not-participant", f"{route.sender} is not a participant of task {route.task_id}")

    def _admitted(org: str) -> None:
        """Only an organisation the chain admitted may fetch or publish here: random keys
        cannot make the relay keep records for them."""
        try:
            peers.organisation(org)
        except UnknownPeer:
            raise Problem(403, "not-admitted", f"{org} is not an admitted organisation") from None

    def _participant(org: str, task_id: int) -> None:
        _admitted(org)
        try:
            members = [p.lower() for p in peers.participants(task_id)]
        except UnknownTask:
            raise Problem(425, "too-early", f"no task {task_id} on chain (yet)") from None
        if org.lower() not in members:
            raise Problem(403, "not-participant", f"{org} is not a participant of task {task_id}")

    def _keep(addressee: str, kind: str, route: Route, body: bytes) -> JSONResponse:
        try:
            _on_chain(route, kind)
        except Problem as exc:
            if exc.status not in (425, 503):  # a final refusal is counted; a retry is not
                store.count(addressee, "refused-by-chain")
            raise
        return _accept(addressee, kind, route.task_id, route.sender, body)

    async def _relay(org: str, task_id: int, request: Request, kind: str, cap: int) -> JSONResponse:
        """Keep a signed envelope for its addressee: a protocol message, or a task's parameters
        sealed by its requester (the mailbox checks who may send which)."""
        addressee, task_id = _org(org, serves), _task_id(task_id)
        check_declared_size(request, cap)
        body = await read_capped(request, cap)
        try:
            route = envelope_route(body, max_size=cap)
            if route.receiver != addressee:
                raise Problem(400, "misbound", f"envelope is addressed to {route.receiver}, not {addressee}")
            if route.task_id != task_id:
                raise Problem(400, "task-mismatch", f"envelope is for task {route.task_id}, not task {task_id}")
        except (EnvelopeError, Problem) as exc:
            await run_in_threadpool(_guarded, lambda: store.count(addressee, "refused-envelope"), "relay count")
            if isinstance(exc, Problem):
                raise
            raise Problem(400, exc.code, exc.detail) from None
        return await run_in_threadpool(_guarded, lambda: _keep(addressee, kind, route, body), f"relay {kind}")

    @app.post("/o/{org}/v1/tasks/{task_id}/messages")
    async def messages(org: str, task_id: int, request: Request) -> JSONResponse:
        return await _relay(org, task_id, request, "message", max_body)

    @app.post("/o/{org}/v1/tasks/{task_id}/params")
    async def params(org: str, task_id: int, request: Request) -> JSONResponse:
        return await _relay(org, task_id, request, "params", max_params + PARAMS_SEAL_OVERHEAD)

    @app.get("/o/{org}/v1/tasks/{task_id}/progress")
    async def progress(org: str, task_id: int, request: Request) -> JSONResponse:
        """What a mailbox's progress route answers, from the snapshot the node published: to
        the accounts the node named (the task's participants and requester) only."""
        addressee, task_id = _org(org, serves), _task_id(task_id)
        signer = _signer(request, task_id)
        snap = await run_in_threadpool(_guarded, lambda: store.progress(addressee, task_id), "relay progress")
        if snap is None:
            raise Problem(404, "no-progress", f"{addressee} has published no progress of task {task_id}")
        fields, readers = snap
        if signer.lower() not in readers:
            raise Problem(
                403, "not-authorised", f"{signer} is neither a participant nor the requester of task {task_id}"
            )
        return JSONResponse({"org": addressee, "task_id": task_id, **fields})

    @app.put("/o/{org}/progress/{task_id}")
    async def publish_progress(org: str, task_id: int, request: Request) -> JSONResponse:
        """The node publishes its progress of a task, naming who may read it."""
        addressee, task_id = _org(org, serves), _task_id(task_id)
        _signed_by(request, addressee, task_id)
        body = await read_capped(request, MAX_PROGRESS)
        try:
            snap = json.loads(body)
            fields, readers = snap["fields"], snap["readers"]
            if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
                raise ValueError("fields must map names to strings")
            if not isinstance(readers, list) or len(readers) > MAX_READERS or not all(map(is_address, readers)):
                raise ValueError(f"readers must be at most {MAX_READERS} addresses")
        except (ValueError, KeyError, TypeError) as exc:
            raise Problem(400, "malformed", f"not a progress snapshot: {exc}") from None
        lowered = [str(a).lower() for a in readers]

        def put() -> None:
            _participant(addressee, task_id)  # progress of its own tasks only
            store.put_progress(addressee, task_id, fields, lowered)

        await run_in_threadpool(_guarded, put, "relay progress")
        return JSONResponse({"ok": True})

    @app.get("/o/{org}/fetch")
    async def fetch(org: str, request: Request, wait: float = 0.0, limit: int = MAX_FETCH) -> JSONResponse:
        addressee = _org(org, serves)
        _signed_by(request, addressee)
        wait, limit = max(0.0, min(wait, MAX_WAIT)), max(1, min(limit, MAX_FETCH))

        def held_fetch() -> list[Item]:
            _admitted(addressee)
            store.mark_fetching(addressee, store.clock() + wait)
            got = store.fetch(addressee, limit, wait)
            store.mark_fetching(addressee, store.clock())
            return got

        items = await run_in_threadpool(_guarded, held_fetch, "relay fetch")
        if faults is not None:
            items = await run_in_threadpool(faults.apply, store, addressee, items)
        return JSONResponse({"items": [i.as_json() for i in items]})

    @app.post("/o/{org}/ack/{upto}")
    async def ack(org: str, upto: str, request: Request) -> JSONResponse:
        addressee = _org(org, serves)
        _signed_by(request, addressee)
        if not STREAM_ID.match(upto):
            raise Problem(400, "malformed", f"{upto!r} is not an item id")
        dropped = await run_in_threadpool(_guarded, lambda: store.ack(addressee, upto), "relay ack")
        return JSONResponse({"acknowledged": dropped})

    return app
