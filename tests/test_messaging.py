"""Peer messaging: sealed envelopes, the peer directory, the mailbox over real HTTP and a
real Redis, and delivery with retries. The chain is replaced by small in-memory fakes of
the lookups; the crypto, HTTP and Redis are real."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from pcn.algorithms.base import Message
from pcn.chain.errors import ChainUnavailable, ContractRevert
from pcn.chain.types import Organisation, OrgStatus, RefusalReason, Task, TaskStatus
from pcn.runtime import envelope as env
from pcn.runtime.config import ConfigError, OrgConfig, load_config
from pcn.runtime.envelope import (
    PARAMS_KIND,
    BadSignature,
    DecryptFailed,
    EnvelopeError,
    MalformedEnvelope,
    Misbound,
    SenderNotActive,
    WrongDomain,
    open_envelope,
    seal,
)
from pcn.runtime.inbox import Inbox
from pcn.runtime.mailbox import MAX_BODY, create_mailbox_app
from pcn.runtime.peers import PeerDirectory, UnknownPeer, UnknownTask
from pcn.runtime.reqauth import sign_request
from pcn.runtime.transport import DeliveryRejected, PeerClient, PeerUnreachable

CHAIN_ID = 31337
TASK_MANAGER = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_CONTRACT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
TASK = 7
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- fixtures


@dataclass
class Org:
    account: LocalAccount
    x25519_private: X25519PrivateKey
    status: OrgStatus = OrgStatus.ACTIVE

    @property
    def address(self) -> str:
        return str(self.account.address)

    @property
    def x25519_public(self) -> bytes:
        return self.x25519_private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def organisation(self, endpoint: str = "http://127.0.0.1:1") -> Organisation:
        return Organisation(self.address, "org", self.x25519_public, endpoint, self.status, 1, 1)


def new_org(status: OrgStatus = OrgStatus.ACTIVE) -> Org:
    return Org(Account.create(), X25519PrivateKey.generate(), status)


class FakePeers:
    """The PeerDirectory methods the mailbox uses, over dictionaries instead of the chain."""

    def __init__(self, orgs: list[Org], tasks: dict[int, list[str]]) -> None:
        self.orgs = {o.address: o for o in orgs}
        self.tasks = tasks
        self.chain_down = False
        self.status: dict[int, TaskStatus] = {}  # default Running
        self.deadline = int(time.time()) + 3600
        self.requester = ""

    def organisation(self, address: str) -> Organisation:
        if self.chain_down:
            raise ChainUnavailable("rpc down")
        if address not in self.orgs:
            raise UnknownPeer(address)
        return self.orgs[address].organisation()

    def endpoint(self, address: str) -> str:
        return self.organisation(address).endpoint

    def participants(self, task_id: int) -> list[str]:
        if task_id not in self.tasks:
            raise UnknownTask(task_id)
        return list(self.tasks[task_id])

    def task(self, task_id: int) -> Task:
        if self.chain_down:
            raise ChainUnavailable("rpc down")
        if task_id not in self.tasks:
            raise UnknownTask(task_id)
        status = self.status.get(task_id, TaskStatus.RUNNING)
        zero = b"\x00" * 32
        requester = self.requester or self.tasks[task_id][0]
        return Task(
            task_id,
            requester,
            status,
            1,
            1,
            0,
            0,
            RefusalReason(0),
            requester,
            self.deadline,
            0,
            0,
            0,
            zero,
            zero,
            zero,
        )

    def invalidate(self, address: str) -> None:
        pass


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    assert port != 6379
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            REDIS_BIN,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.025)
        else:
            raise RuntimeError("redis-server did not start")
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def r(redis_port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_port)
    client.flushdb()
    yield client
    client.close()


@contextlib.contextmanager
def serve(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """Run the app with uvicorn in a background thread; yield its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class World:
    me: Org
    alice: Org
    bob: Org
    outsider: Org
    suspended: Org
    peers: FakePeers
    inbox: Inbox
    url: str
    params: dict[int, bytes]
    http: httpx.Client

    def seal(self, sender: Org, seq: int = 0, payload: bytes = b"hello", **kw: object) -> bytes:
        msg = Message(sender.address, str(kw.pop("receiver", self.me.address)), 1, "share", payload, seq)
        args: dict[str, object] = {
            "task_id": TASK,
            "chain_id": CHAIN_ID,
            "task_manager": TASK_MANAGER,
            "receiver_x25519_public": self.me.x25519_public,
            **kw,
        }
        return seal(msg, sender=sender.account, **args)  # type: ignore[arg-type]

    def seal_params(self, sender: Org, payload: bytes = b"", task_id: int = TASK, kind: str = PARAMS_KIND) -> bytes:
        """A task's parameters as a requester hands them over: sealed to this mailbox's org."""
        msg = Message(sender.address, self.me.address, 0, kind, payload)
        return seal(msg, task_id, CHAIN_ID, TASK_MANAGER, sender.account, self.me.x25519_public)

    def post(self, body: bytes, task_id: int = TASK) -> httpx.Response:
        return self.http.post(
            f"{self.url}/v1/tasks/{task_id}/messages",
            content=body,
            headers={"content-type": "application/octet-stream"},
        )


PARAMS = b'{"column":"age"}'


def make_app(w: World, max_body: int = 8 * 1024 * 1024, **options: Any) -> FastAPI:
    def on_params(task_id: int, body: bytes) -> None:
        if hashlib.sha256(body).digest() != hashlib.sha256(PARAMS).digest():
            raise ValueError("params hash does not match the chain")
        w.params[task_id] = body

    return create_mailbox_app(
        me=w.me.address,
        keys=w.me,
        inbox=w.inbox,
        peers=w.peers,
        chain_id=CHAIN_ID,
        task_manager=TASK_MANAGER,
        max_body=max_body,
        on_params=on_params,
        **options,
    )


@pytest.fixture
def world(r: redis.Redis) -> Iterator[World]:
    me, alice, bob, outsider = new_org(), new_org(), new_org(), new_org()
    suspended = new_org(OrgStatus.SUSPENDED)
    members = [me.address, alice.address, bob.address, suspended.address]
    peers = FakePeers([me, alice, bob, outsider, suspended], {TASK: members, TASK + 1: [alice.address, bob.address]})
    inbox = Inbox(r, f"pcn:{me.address}")
    with httpx.Client(timeout=10) as http:
        w = World(me, alice, bob, outsider, suspended, peers, inbox, "", {}, http)
        with serve(make_app(w)) as url:
            w.url = url
            yield w


# ----------------------------------------------------------------------------- envelope


def opener(receiver: Org, lookup: dict[str, Org]) -> Callable[..., tuple[Message, int, bytes]]:
    def sender_key(address: str) -> Organisation:
        if address not in lookup:
            raise UnknownPeer(address)
        return lookup[address].organisation()

    def open_(raw: bytes, **kw: object) -> tuple[Message, int, bytes]:
        args: dict[str, object] = {
            "me": receiver.address,
            "my_x25519": receiver.x25519_private,
            "chain_id": CHAIN_ID,
            "task_manager": TASK_MANAGER,
            "sender_key": sender_key,
            **kw,
        }
        return open_envelope(raw, **args)  # type: ignore[arg-type]

    return open_


def split(raw: bytes) -> tuple[bytes, bytes, bytes]:
    (n,) = struct.unpack(">H", raw[:2])
    return raw[2 : 2 + n], raw[2 + n : 2 + n + 65], raw[2 + n + 65 :]


def join(header: bytes, sig: bytes, ct: bytes) -> bytes:
    return struct.pack(">H", len(header)) + header + sig + ct


def resign(signer: LocalAccount, header: bytes, ct: bytes) -> bytes:
    body = struct.pack(">H", len(header)) + header + ct
    h = hashlib.sha256(env.DOMAIN + body).digest()
    return bytes(signer.sign_message(encode_defunct(primitive=h)).signature)


def with_header(raw: bytes, **changes: object) -> bytes:
    header, sig, ct = split(raw)
    fields = json.loads(header)
    fields.update(changes)
    return join(env.canonical_header(fields), sig, ct)


def test_envelope_round_trip_and_determinism() -> None:
    alice, bob = new_org(), new_org()
    open_ = opener(bob, {alice.address: alice})
    payload = bytes(range(256)) * 40
    msg = Message(alice.address, bob.address, 3, "share", payload, 5)
    raw = seal(msg, 11, CHAIN_ID, TASK_MANAGER, alice.account, bob.x25519_public)
    got, task_id, digest = open_(raw)
    assert got == msg and task_id == 11
    header, _sig, ct = split(raw)
    assert digest == hashlib.sha256(struct.pack(">H", len(header)) + header + ct).digest()
    assert payload not in raw and b"\x00\x01\x02\x03\x04\x05" not in ct  # encrypted
    fields = json.loads(header)
    assert fields["v"] == 1 and fields["sender"] == alice.address and fields["receiver"] == bob.address
    # Deterministic: a resumed worker re-sends byte-identical envelopes.
    assert seal(msg, 11, CHAIN_ID, TASK_MANAGER, alice.account, bob.x25519_public) == raw
    other = seal(replace(msg, payload=b"other"), 11, CHAIN_ID, TASK_MANAGER, alice.account, bob.x25519_public)
    assert split(other)[0] != header  # another ephemeral key
    assert open_(other)[2] != digest
    # Lower-case addresses are accepted by seal and normalised.
    low = replace(msg, sender=alice.address.lower(), receiver=bob.address.lower())
    assert seal(low, 11, CHAIN_ID, TASK_MANAGER, alice.account, bob.x25519_public) == raw
    # Empty payloads work.
    empty = seal(replace(msg, payload=b""), 11, CHAIN_ID, TASK_MANAGER, alice.account, bob.x25519_public)
    assert open_(empty)[0].payload == b""


def test_seal_refuses_bad_arguments() -> None:
    alice, bob = new_org(), new_org()
    msg = Message(alice.address, bob.address, 0, "share", b"x", 0)
    with pytest.raises(ValueError, match="signing account"):
        seal(msg, 1, CHAIN_ID, TASK_MANAGER, bob.account, bob.x25519_public)
    with pytest.raises(ValueError, match="encryption key"):
        seal(msg, 1, CHAIN_ID, TASK_MANAGER, alice.account, b"\x00" * 32)
    with pytest.raises(ValueError, match="seq"):
        seal(replace(msg, seq=-1), 1, CHAIN_ID, TASK_MANAGER, alice.account, bob.x25519_public)
    with pytest.raises(ValueError, match="kind"):
        seal(replace(msg, kind=""), 1, CHAIN_ID, TASK_MANAGER, alice.account, bob.x25519_public)


def test_envelope_tampering_is_detected() -> None:
    alice, bob, mallory = new_org(), new_org(), new_org()
    open_ = opener(bob, {alice.address: alice, mallory.address: mallory})
    raw = seal(
        Message(alice.address, bob.address, 1, "share", b"secret", 0),
        TASK,
        CHAIN_ID,
        TASK_MANAGER,
        alice.account,
        bob.x25519_public,
    )
    header, sig, ct = split(raw)

    flipped = bytearray(ct)
    flipped[0] ^= 1
    with pytest.raises(BadSignature):  # the signature covers the ciphertext
        open_(join(header, sig, bytes(flipped)))
    with pytest.raises(BadSignature):  # ... and the header
        open_(with_header(raw, seq=1))
    with pytest.raises(BadSignature):
        open_(with_header(raw, round=2))
    bad_sig = bytearray(sig)
    bad_sig[10] ^= 1
    with pytest.raises(BadSignature):
        open_(join(header, bytes(bad_sig), ct))
    with pytest.raises(BadSignature):
        open_(join(header, b"\x00" * 65, ct))

    # Forged: a valid signature, but by someone other than header.sender.
    with pytest.raises(BadSignature, match="not by the sender"):
        open_(join(header, resign(mallory.account, header, ct), ct))
    # Claiming another sender in the header and signing with one's own key: still caught.
    claimed = env.canonical_header({**json.loads(header), "sender": alice.address})
    with pytest.raises(BadSignature):
        open_(join(claimed, resign(mallory.account, claimed, ct), ct))

    # A sender who re-signs a tampered ciphertext passes the signature but not the AEAD.
    with pytest.raises(DecryptFailed):
        open_(join(header, resign(alice.account, header, bytes(flipped)), bytes(flipped)))
    # A signed header with another kind: the AEAD (aad = header) and key derivation catch it.
    changed = env.canonical_header({**json.loads(header), "kind": "other"})
    with pytest.raises(DecryptFailed):
        open_(join(changed, resign(alice.account, changed, ct), ct))


def test_envelope_binding_and_status() -> None:
    alice, bob, carol = new_org(), new_org(), new_org()
    suspended, stranger = new_org(OrgStatus.SUSPENDED), new_org()
    open_ = opener(bob, {alice.address: alice, suspended.address: suspended})

    def sealed(sender: Org = alice, receiver: Org = bob, key: bytes | None = None, **kw: object) -> bytes:
        args: dict[str, object] = {"task_id": TASK, "chain_id": CHAIN_ID, "task_manager": TASK_MANAGER, **kw}
        msg = Message(sender.address, receiver.address, 1, "share", b"p", 0)
        return seal(msg, sender=sender.account, receiver_x25519_public=key or receiver.x25519_public, **args)  # type: ignore[arg-type]

    with pytest.raises(WrongDomain) as e:
        open_(sealed(chain_id=1))
    assert e.value.code == "wrong-domain"
    with pytest.raises(WrongDomain):
        open_(sealed(task_manager=OTHER_CONTRACT))
    with pytest.raises(WrongDomain):
        open_(with_header(sealed(), v=2))
    with pytest.raises(Misbound) as m:  # addressed to carol, even if encrypted to bob's key
        open_(sealed(receiver=carol, key=bob.x25519_public))
    assert m.value.code == "misbound"
    with pytest.raises(SenderNotActive, match="suspended"):
        open_(sealed(sender=suspended))
    with pytest.raises(SenderNotActive, match="not an admitted"):
        open_(sealed(sender=stranger))
    with pytest.raises(DecryptFailed) as d:  # addressed to bob but sealed to another key
        open_(sealed(key=carol.x25519_public))
    assert d.value.code == "decrypt-failed"

    def chain_down(_address: str) -> Organisation:
        raise ChainUnavailable("down")

    with pytest.raises(ChainUnavailable):  # infrastructure errors are not verdicts
        open_(sealed(), sender_key=chain_down)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\x00\x00" + b"x" * 100,
        b"\xff\xff" + b"x" * 100,
        b"\x00\x05hello" + b"\x00" * 100,
        b"\x00\x02[]" + b"\x00" * 100,
        bytes(range(256)) * 4,
    ],
)
def test_malformed_envelopes(raw: bytes) -> None:
    bob = new_org()
    with pytest.raises(MalformedEnvelope) as e:
        opener(bob, {})(raw)
    assert e.value.code == "malformed" and isinstance(e.value, EnvelopeError)


def test_non_canonical_and_oversized_envelopes() -> None:
    alice, bob = new_org(), new_org()
    open_ = opener(bob, {alice.address: alice})
    raw = seal(
        Message(alice.address, bob.address, 1, "share", b"x" * 1000, 0),
        TASK,
        CHAIN_ID,
        TASK_MANAGER,
        alice.account,
        bob.x25519_public,
    )
    header, sig, ct = split(raw)
    spaced = json.dumps(json.loads(header), sort_keys=True).encode()
    with pytest.raises(MalformedEnvelope, match="canonical"):
        open_(join(spaced, sig, ct))
    lower = env.canonical_header({**json.loads(header), "sender": alice.address.lower()})
    with pytest.raises(MalformedEnvelope, match="checksummed"):
        open_(join(lower, sig, ct))
    extra = env.canonical_header({**json.loads(header), "x": 1})
    with pytest.raises(MalformedEnvelope):
        open_(join(extra, sig, ct))
    with pytest.raises(MalformedEnvelope):
        open_(with_header(raw, seq=True))
    with pytest.raises(MalformedEnvelope):
        open_(with_header(raw, seq=-1))
    with pytest.raises(MalformedEnvelope):
        open_(join(header, sig, ct[:10]))  # shorter than a tag
    with pytest.raises(MalformedEnvelope, match="exceeds"):
        open_(raw, max_size=len(raw) - 1)
    assert open_(raw, max_size=len(raw))[0].payload == b"x" * 1000


# ----------------------------------------------------------------------------- peers


class FakeLedger:
    def __init__(self) -> None:
        self.orgs: dict[str, Organisation] = {}
        self.tasks: dict[int, list[str]] = {}
        self.statuses: dict[int, TaskStatus] = {}
        self.calls: list[tuple[str, object]] = []

    def organisation(self, account: str) -> Organisation:
        self.calls.append(("organisation", account))
        return self.orgs.get(account) or Organisation(account, "", b"\x00" * 32, "", OrgStatus.NONE, 0, 0)

    def task_participants(self, task_id: int) -> list[str]:
        self.calls.append(("task_participants", task_id))
        if task_id not in self.tasks:
            raise ContractRevert("UnknownTask", {"taskId": task_id}, f"no task {task_id}")
        return [a.lower() for a in self.tasks[task_id]]

    def task(self, task_id: int) -> Task:
        self.calls.append(("task", task_id))
        if task_id not in self.tasks:
            raise ContractRevert("UnknownTask", {"taskId": task_id}, f"no task {task_id}")
        status = self.statuses.get(task_id, TaskStatus.RUNNING)
        zero = b"\x00" * 32
        who = self.tasks[task_id][0]
        return Task(task_id, who, status, 1, 1, 0, 0, RefusalReason(0), who, 0, 0, 0, 0, zero, zero, zero)


def test_peer_directory_caches_task_records_except_while_pending() -> None:
    """The mailbox asks for the task's status on every message: a Pending record is re-read
    each time (authorisation shows at once), an active one is cached for the TTL, a final one for good."""
    now = [100.0]
    ledger = FakeLedger()
    ledger.tasks[3] = [new_org().address]
    ledger.statuses[3] = TaskStatus.PENDING
    peers = PeerDirectory(ledger, ttl=5.0, clock=lambda: now[0])
    assert peers.task(3).status == TaskStatus.PENDING and peers.task(3).status == TaskStatus.PENDING
    assert ledger.calls.count(("task", 3)) == 2
    ledger.statuses[3] = TaskStatus.AUTHORISED
    assert peers.task(3).status == TaskStatus.AUTHORISED
    ledger.statuses[3] = TaskStatus.COMPLETED
    now[0] += 4.9
    assert peers.task(3).status == TaskStatus.AUTHORISED  # cached
    now[0] += 0.2
    assert peers.task(3).status == TaskStatus.COMPLETED
    calls = ledger.calls.count(("task", 3))
    now[0] += 1000
    assert peers.task(3).status == TaskStatus.COMPLETED and ledger.calls.count(("task", 3)) == calls  # final: kept
    with pytest.raises(UnknownTask):
        peers.task(99)


def test_peer_directory_caches_and_expires() -> None:
    now = [100.0]
    ledger = FakeLedger()
    alice, bob = new_org(), new_org()
    ledger.orgs[alice.address] = alice.organisation("http://alice:9000/")
    ledger.tasks[3] = [alice.address, bob.address]
    peers = PeerDirectory(ledger, ttl=5.0, clock=lambda: now[0])

    assert peers.organisation(alice.address.lower()).account == alice.address
    assert peers.endpoint(alice.address) == "http://alice:9000"
    assert peers.is_active(alice.address)
    assert ledger.calls == [("organisation", alice.address)]  # one chain call for three lookups
    ledger.orgs[alice.address] = replace(ledger.orgs[alice.address], status=OrgStatus.SUSPENDED)
    now[0] += 4.9
    assert peers.organisation(alice.address).status == OrgStatus.ACTIVE  # still cached
    now[0] += 0.2
    assert peers.organisation(alice.address).status == OrgStatus.SUSPENDED  # expired, re-read
    ledger.orgs[alice.address] = replace(ledger.orgs[alice.address], status=OrgStatus.ACTIVE)
    peers.invalidate(alice.address)
    assert peers.organisation(alice.address).status == OrgStatus.ACTIVE

    with pytest.raises(UnknownPeer):
        peers.organisation(bob.address)
    assert not peers.is_active(bob.address)

    assert peers.participants(3) == [alice.address, bob.address]  # checksummed
    now[0] += 1e6
    assert peers.participants(3) == [alice.address, bob.address]
    assert ledger.calls.count(("task_participants", 3)) == 1  # participants never change
    with pytest.raises(UnknownTask):
        peers.participants(4)


def test_peer_directory_is_thread_safe() -> None:
    ledger = FakeLedger()
    orgs = [new_org() for _ in range(8)]
    for o in orgs:
        ledger.orgs[o.address] = o.organisation()
    ledger.tasks[1] = [o.address for o in orgs]
    peers = PeerDirectory(ledger, ttl=0.001)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(300):
                o = orgs[i % len(orgs)]
                assert peers.organisation(o.address).account == o.address
                assert peers.participants(1)[0] == orgs[0].address
                if i % 7 == 0:
                    peers.invalidate(o.address)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ----------------------------------------------------------------------------- mailbox


def test_health(world: World) -> None:
    resp = world.http.get(f"{world.url}/v1/health")
    assert resp.status_code == 200 and resp.json() == {"ok": True, "org": world.me.address}


def test_mailbox_round_trip(world: World) -> None:
    resp = world.post(world.seal(world.alice, 0, b"first"))
    assert resp.status_code == 202 and resp.json() == {"outcome": "new"}
    assert world.post(world.seal(world.alice, 1, b"second")).status_code == 202
    assert world.post(world.seal(world.bob, 0, b"from bob")).status_code == 202
    got = world.inbox.read(TASK, 0)
    assert [(m.sender, m.seq, m.payload) for m in got] == [
        (world.alice.address, 0, b"first"),
        (world.alice.address, 1, b"second"),
        (world.bob.address, 0, b"from bob"),
    ]
    assert all(m.receiver == world.me.address and m.kind == "share" and m.round == 1 for m in got)


def test_inbox_reads_are_bounded_and_each_goes_through_every_message(world: World) -> None:
    for i in range(5):
        assert world.post(world.seal(world.alice, i, b"m%d" % i)).status_code == 202
    assert [m.payload for m in world.inbox.read(TASK, 1, limit=2)] == [b"m1", b"m2"]
    assert [m.payload for m in world.inbox.read(TASK, 4, limit=2)] == [b"m4"]
    assert [m.payload for m in world.inbox.each(TASK, batch=2)] == [b"m%d" % i for i in range(5)]
    assert [m.payload for m in world.inbox.each(TASK, 3, batch=1)] == [b"m3", b"m4"]


def test_inbox_entries_hold_raw_payloads_and_the_digests_beside_them(world: World) -> None:
    from pcn.runtime.inbox import decode, encode, message_digest

    payloads = [b"", b'{"looks": "like json"}', bytes(range(256)) * 40, b"\x01\x00\x00\x00\x05"]
    for i, payload in enumerate(payloads):
        assert world.post(world.seal(world.alice, i, payload)).status_code == 202
    got = list(world.inbox.each(TASK))
    assert [m.payload for m in got] == payloads
    # stored as the payload's raw bytes and a short head: no base64 (which adds a third)
    stored = world.inbox.r.lrange(f"pcn:{world.me.address}:inbox:{TASK}:list", 0, -1)
    assert all(len(x) < len(p) + 200 for x, p in zip(stored, payloads, strict=True))
    assert world.inbox.received_digests(TASK) == [message_digest(m) for m in got]
    # an inbox filled before the digests were kept: they are computed from the messages
    world.inbox.r.delete(f"pcn:{world.me.address}:inbox:{TASK}:received")
    assert world.inbox.received_digests(TASK) == [message_digest(m) for m in got]
    # an entry written as JSON with a base64 payload (before this form) still reads
    legacy = json.dumps(
        {
            "sender": got[2].sender,
            "receiver": got[2].receiver,
            "round": 1,
            "kind": "share",
            "seq": 2,
            "payload": base64.b64encode(payloads[2]).decode(),
        }
    )
    assert decode(legacy.encode()) == got[2] and decode(encode(got[2])) == got[2]
    with pytest.raises(ValueError, match="unknown inbox entry version"):
        decode(b"\x02" + encode(got[2])[1:])


def test_the_mailbox_takes_a_message_of_the_largest_payload_and_vertical_parts_fit(world: World) -> None:
    """A protocol may put MAX_PAYLOAD bytes in one message: sealed, it fits the mailbox's body
    limit; the vertical algorithms' parts (frame header included) are no larger. (Their parts
    were 8 MiB of payload, over the 8 MiB body limit: 413 too-large at 100 k rows.)"""
    from pcn.algorithms.base import MAX_PAYLOAD
    from pcn.algorithms.vertical import frames

    raw = world.seal(world.alice, 0, bytes(MAX_PAYLOAD))
    assert len(raw) <= MAX_BODY
    assert world.post(raw).status_code == 202
    parts = frames(bytes(3 * MAX_PAYLOAD))
    assert len(parts) == 4 and all(len(p) <= MAX_PAYLOAD for p in parts) and len(parts[0]) == MAX_PAYLOAD


def test_mailbox_duplicate_and_replay(world: World) -> None:
    raw = world.seal(world.alice, 0, b"share-0")
    assert world.post(raw).status_code == 202
    again = world.seal(world.alice, 0, b"share-0")  # a resumed worker re-seals the same message
    assert again == raw
    resp = world.post(again)
    assert resp.status_code == 200 and resp.json() == {"outcome": "duplicate"}
    resp = world.post(world.seal(world.alice, 0, b"something else"))
    assert resp.status_code == 409 and resp.json()["error"] == "replay"
    assert [m.payload for m in world.inbox.read(TASK, 0)] == [b"share-0"]


def test_a_closed_inbox_takes_late_messages_without_storing_them(world: World) -> None:
    """After a task's inbox is deleted (the task finished here), a late re-send from a resumed
    peer is acknowledged and nothing is stored: no inbox key comes back."""
    assert world.post(world.seal(world.alice, 0, b"early")).status_code == 202
    world.inbox.delete(TASK)
    assert not world.inbox.read(TASK, 0)
    resp = world.post(world.seal(world.alice, 1, b"late"))
    assert resp.status_code == 200 and resp.json() == {"outcome": "closed"}
    assert not world.inbox.read(TASK, 0)
    left = world.inbox.r.keys(f"{world.inbox.prefix}:inbox:{TASK}:*")
    assert [k for k in left if not k.endswith(b":closed")] == []


def test_mailbox_gap_then_fill(world: World) -> None:
    resp = world.post(world.seal(world.alice, 1, b"one"))
    assert resp.status_code == 409
    assert resp.json()["error"] == "gap" and resp.json()["expected_seq"] == 0
    assert world.inbox.read(TASK, 0) == []
    assert world.post(world.seal(world.alice, 0, b"zero")).status_code == 202
    assert world.post(world.seal(world.alice, 1, b"one")).status_code == 202
    assert [m.payload for m in world.inbox.read(TASK, 0)] == [b"zero", b"one"]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("forged", 401, "bad-signature"),
        ("tampered", 401, "bad-signature"),
        ("misbound", 403, "misbound"),
        ("other-chain", 400, "wrong-domain"),
        ("other-contract", 400, "wrong-domain"),
        ("suspended", 403, "sender-not-active"),
        ("stranger", 403, "sender-not-active"),
        ("wrong-key", 400, "decrypt-failed"),
        ("outsider", 403, "not-participant"),
        ("me-not-member", 403, "not-participant"),
        ("task-mismatch", 400, "task-mismatch"),
        ("unknown-task", 404, "unknown-task"),
        ("malformed", 400, "malformed"),
        ("empty", 400, "malformed"),
        ("chain-down", 503, "chain-unavailable"),
    ],
)
def test_mailbox_refusals(world: World, case: str, status: int, code: str) -> None:
    w = world
    task = TASK
    if case == "forged":
        header, _sig, ct = split(w.seal(w.alice))
        body = join(header, resign(w.bob.account, header, ct), ct)
    elif case == "tampered":
        header, sig, ct = split(w.seal(w.alice))
        body = join(header, sig, ct[:-1] + bytes([ct[-1] ^ 1]))
    elif case == "misbound":
        body = w.seal(w.alice, receiver=w.bob.address)
    elif case == "other-chain":
        body = w.seal(w.alice, chain_id=CHAIN_ID + 1)
    elif case == "other-contract":
        body = w.seal(w.alice, task_manager=OTHER_CONTRACT)
    elif case == "suspended":
        body = w.seal(w.suspended)
    elif case == "stranger":
        body = w.seal(new_org())
    elif case == "wrong-key":
        body = w.seal(w.alice, receiver_x25519_public=w.bob.x25519_public)
    elif case == "outsider":
        body = w.seal(w.outsider)
    elif case == "me-not-member":
        task = TASK + 1
        body = w.seal(w.alice, task_id=task)
    elif case == "task-mismatch":
        body = w.seal(w.alice, task_id=TASK + 1)
    elif case == "unknown-task":
        task = 999
        body = w.seal(w.alice, task_id=task)
    elif case == "malformed":
        body = b"\x00\x10" + b"not an envelope at all" * 10
    elif case == "empty":
        body = b""
    else:
        w.peers.chain_down = True
        body = w.seal(w.alice)
    resp = w.post(body, task_id=task)
    assert resp.status_code == status, resp.text
    data = resp.json()
    assert data["error"] == code and isinstance(data["detail"], str)
    assert "Traceback" not in resp.text
    assert w.inbox.read(task, 0) == []


def test_mailbox_bad_paths(world: World) -> None:
    resp = world.http.post(f"{world.url}/v1/tasks/abc/messages", content=b"x")
    assert resp.status_code == 400 and resp.json()["error"] == "malformed"
    resp = world.http.post(f"{world.url}/v1/tasks/-1/messages", content=b"x")
    assert resp.status_code == 400 and resp.json()["error"] == "malformed"
    resp = world.http.get(f"{world.url}/v1/nothing")
    assert resp.status_code == 404 and resp.json()["error"] == "not-found"


def test_mailbox_oversized_body(r: redis.Redis) -> None:
    me, alice = new_org(), new_org()
    inbox = Inbox(r, f"pcn:{me.address}")
    w = World(
        me,
        alice,
        alice,
        alice,
        alice,
        FakePeers([me, alice], {TASK: [me.address, alice.address]}),
        inbox,
        "",
        {},
        httpx.Client(timeout=10),
    )
    big = w.seal(alice, 0, b"x" * 5000)
    small = w.seal(alice, 0, b"x" * 100)
    with serve(make_app(w, max_body=4096)) as url, w.http:
        w.url = url
        resp = w.post(big)
        assert resp.status_code == 413 and resp.json()["error"] == "too-large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the streaming cap applies
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        resp = w.http.post(f"{url}/v1/tasks/{TASK}/messages", content=chunks())
        assert resp.status_code == 413 and resp.json()["error"] == "too-large"
        assert inbox.read(TASK, 0) == []
        assert r.keys(f"pcn:{me.address}:inbox:*") == []
        assert w.post(small).status_code == 202  # the server is still fine
        assert [m.payload for m in inbox.read(TASK, 0)] == [b"x" * 100]


def test_params_route(world: World) -> None:
    """Parameters come sealed by the task's requester (the first member here, `me`): in clear,
    from anyone else, as another kind of message, for another task, or with a hash other than
    the chain's, they are refused and nothing is stored."""
    url = f"{world.url}/v1/tasks/{TASK}/params"
    requester = world.me
    refusals = [
        (world.seal_params(requester, b'{"column":"income"}'), 400, "params-mismatch"),
        (PARAMS, 400, "malformed"),  # the right bytes, but in clear
        (world.seal_params(world.alice, PARAMS), 403, "not-requester"),  # a participant, not the requester
        (world.seal_params(requester, PARAMS, kind="share"), 400, "malformed"),
        (world.seal_params(requester, PARAMS, task_id=TASK + 1), 400, "task-mismatch"),
        (world.seal_params(requester, PARAMS)[:-1] + b"\0", 401, "bad-signature"),  # altered in transit
    ]
    for body, status, code in refusals:
        resp = world.http.post(url, content=body)
        assert (resp.status_code, resp.json()["error"]) == (status, code), (code, resp.json())
        assert world.params == {}
    resp = world.http.post(url, content=world.seal_params(requester, PARAMS))
    assert resp.status_code == 201
    assert world.params == {TASK: PARAMS}
    resp = world.http.post(url, content=b"x" * (1024 * 1024 + 4096 + 1))
    assert resp.status_code == 413


# ----------------------------------------------------------------------------- transport


def test_deliver_outcomes_and_rejections(world: World) -> None:
    with PeerClient(timeout=5, allow_private_endpoints=True, allow_http_endpoints=True) as client:
        deadline = time.monotonic() + 10
        raw = world.seal(world.alice, 0, b"a")
        assert client.deliver(world.url, TASK, raw, deadline=deadline) == "new"
        assert client.deliver(world.url + "/", TASK, raw, deadline=deadline) == "duplicate"
        with pytest.raises(DeliveryRejected) as e:
            client.deliver(world.url, TASK, world.seal(world.alice, 0, b"b"), deadline=deadline)
        assert e.value.status == 409 and e.value.code == "replay"
        started = time.monotonic()
        with pytest.raises(DeliveryRejected) as e:
            client.deliver(world.url, TASK, world.seal(world.outsider), deadline=deadline)
        assert e.value.status == 403 and e.value.code == "not-participant"
        assert time.monotonic() - started < 1.0  # no retry on a refusal
        client.post_params(world.url, TASK, world.seal_params(world.me, PARAMS), deadline)
        with pytest.raises(DeliveryRejected) as e:
            client.post_params(world.url, TASK, world.seal_params(world.me, b"{}"), deadline)
        assert e.value.code == "params-mismatch"


def test_deliver_waits_for_the_gap_to_fill(world: World) -> None:
    retries: list[tuple[int, float, str]] = []
    result: list[str] = []
    with PeerClient(timeout=5, allow_private_endpoints=True, allow_http_endpoints=True) as client:
        later = threading.Thread(
            target=lambda: result.append(
                client.deliver(
                    world.url,
                    TASK,
                    world.seal(world.alice, 1, b"one"),
                    deadline=time.monotonic() + 10,
                    on_retry=lambda *a: retries.append(a),
                )
            )
        )
        later.start()
        while not retries:
            time.sleep(0.01)
        assert (
            client.deliver(world.url, TASK, world.seal(world.alice, 0, b"zero"), deadline=time.monotonic() + 5) == "new"
        )
        later.join(timeout=10)
    assert result == ["new"]
    assert "gap" in retries[0][2]
    assert [m.payload for m in world.inbox.read(TASK, 0)] == [b"zero", b"one"]


def test_deliver_retries_until_the_peer_comes_up(world: World) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    retries: list[tuple[int, float, str]] = []
    up = threading.Event()
    stop = threading.Event()

    def start_later() -> None:
        time.sleep(0.8)
        with serve(make_app(world), port=port):
            up.set()
            stop.wait(15)

    starter = threading.Thread(target=start_later, daemon=True)
    starter.start()
    try:
        with PeerClient(timeout=2, allow_private_endpoints=True, allow_http_endpoints=True) as client:
            raw = world.seal(world.alice, 0, b"late")
            outcome = client.deliver(
                url, TASK, raw, deadline=time.monotonic() + 15, on_retry=lambda *a: retries.append(a)
            )
        assert outcome == "new" and up.is_set()
        assert len(retries) >= 2
        assert all(delay <= 5.0 for _, delay, _ in retries)
        assert [a for a, _, _ in retries] == list(range(1, len(retries) + 1))
        assert "ConnectError" in retries[0][2]
        assert [m.payload for m in world.inbox.read(TASK, 0)] == [b"late"]
    finally:
        stop.set()
        starter.join(timeout=15)


def test_deliver_gives_up_at_the_deadline() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    retries: list[tuple[int, float, str]] = []
    with PeerClient(timeout=1, allow_private_endpoints=True, allow_http_endpoints=True) as client:
        started = time.monotonic()
        with pytest.raises(PeerUnreachable) as e:
            client.deliver(url, TASK, b"envelope", deadline=started + 1.0, on_retry=lambda *a: retries.append(a))
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0
    assert e.value.endpoint == url and "ConnectError" in e.value.last_error
    assert len(retries) >= 3
    delays = [d for _, d, _ in retries]
    assert delays[0] <= 0.1 + 1e-9 and max(delays) <= 1.0


def test_deliver_retries_5xx_then_gives_up() -> None:
    calls: list[int] = []
    app = FastAPI()

    @app.post("/v1/tasks/{task_id}/messages")
    def flaky(task_id: int) -> None:
        calls.append(task_id)
        raise RuntimeError("boom")

    with (
        serve(app) as url,
        PeerClient(timeout=1, allow_private_endpoints=True, allow_http_endpoints=True) as client,
        pytest.raises(PeerUnreachable) as e,
    ):
        client.deliver(url, TASK, b"x", deadline=time.monotonic() + 0.8)
    assert len(calls) >= 2 and "500" in e.value.last_error


# ----------------------------------------------------------------------------- #13.8 mailbox flooding


def inbox_keys(w: World) -> list[bytes]:
    return sorted(w.inbox.r.keys(f"pcn:{w.me.address}:inbox:*"))


@pytest.mark.parametrize(
    ("status", "code", "http"),
    [
        (TaskStatus.PENDING, "too-early", 425),
        (TaskStatus.COMPLETED, "task-final", 409),
        (TaskStatus.CANCELLED, "task-final", 409),
        (TaskStatus.DISPUTED, "task-final", 409),
        (TaskStatus.REFUSED, "task-final", 409),
        (TaskStatus.EXPIRED, "task-final", 409),
    ],
)
def test_messages_for_a_task_not_running_are_refused_and_nothing_is_stored(
    world: World, status: TaskStatus, code: str, http: int
) -> None:
    w = world
    w.peers.status[TASK] = status
    for seq in range(3):
        resp = w.post(w.seal(w.alice, seq, b"x" * 4096))
        assert resp.status_code == http, resp.text
        assert resp.json()["error"] == code and resp.json()["task_status"] == status.name.lower()
    assert inbox_keys(w) == [] and w.inbox.read(TASK, 0) == []
    w.peers.status[TASK] = TaskStatus.AUTHORISED  # once authorised, the same message is taken
    assert w.post(w.seal(w.alice, 0, b"x" * 4096)).status_code == 202


def test_a_node_that_is_no_participant_refuses_before_reading_the_body(world: World) -> None:
    w = world
    # TASK + 1 is between alice and bob. The request declares 4 MiB but sends 10 bytes: a
    # mailbox that read the body would wait for the rest; this one answers 403 at once.
    port = int(w.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"POST /v1/tasks/{TASK + 1}/messages HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {4 << 20}\r\n\r\n".encode()
            + b"x" * 10
        )
        head = ""
        while "}" not in head and (chunk := s.recv(65536)):  # times out (fails) if no answer comes
            head += chunk.decode(errors="replace")
    assert head.startswith("HTTP/1.1 403"), head
    assert '"not-participant"' in head
    resp = w.post(w.seal(w.outsider, 0, b"x" * 4096))  # a sender outside the task
    assert resp.status_code == 403 and resp.json()["error"] == "not-participant"
    assert inbox_keys(w) == []


def test_a_flood_beyond_the_quotas_is_refused_and_redis_stays_bounded(r: redis.Redis) -> None:
    me, alice, bob = new_org(), new_org(), new_org()
    task_quota, sender_quota, chunk = 256 * 1024, 160 * 1024, 32 * 1024
    inbox = Inbox(r, f"pcn:{me.address}", task_quota=task_quota, sender_quota=sender_quota)
    peers = FakePeers([me, alice, bob], {TASK: [me.address, alice.address, bob.address]})
    w = World(me, alice, bob, alice, alice, peers, inbox, "", {}, httpx.Client(timeout=10))
    with serve(make_app(w)) as url, w.http:
        w.url = url
        before = int(r.info("memory")["used_memory"])
        statuses = []
        seq = 0
        for i in range(120):  # 120 x 32 KiB = 3.75 MiB offered by one sender
            resp = w.post(w.seal(alice, seq, bytes([i % 251]) * chunk))
            statuses.append(resp.status_code)
            if resp.status_code == 202:
                seq += 1
            else:
                assert resp.status_code == 413, resp.text
                assert resp.json()["error"] == "quota-exceeded" and resp.json()["quota"] == "sender"
        assert seq == 4  # each stored message is its 32 KiB payload and a ~170-byte head: four fit in 160 KiB
        assert statuses.count(413) == 116
        stored = int(r.hget(f"pcn:{me.address}:inbox:{TASK}:bytes", alice.address.lower()) or 0)
        assert stored <= sender_quota
        # Another member still has room until the task's quota is used up.
        bob_seq = 0
        while (resp := w.post(w.seal(bob, bob_seq, b"b" * chunk))).status_code == 202:
            bob_seq += 1
        assert resp.status_code == 413 and resp.json()["quota"] == "task"
        assert bob_seq == 3
        total = int(r.hget(f"pcn:{me.address}:inbox:{TASK}:bytes", "*") or 0)
        assert total <= task_quota
        assert sum(len(x) for x in r.lrange(f"pcn:{me.address}:inbox:{TASK}:list", 0, -1)) == total
        grown = int(r.info("memory")["used_memory"]) - before
        assert grown < 2 * task_quota, f"Redis grew by {grown} bytes under a 3.75 MiB flood"
        # Duplicates of accepted messages are still acknowledged (a resumed peer re-sends).
        assert w.post(w.seal(alice, 0, bytes([0]) * chunk)).status_code == 200
        # Deleting the inbox frees the counters with the messages.
        inbox.delete(TASK)
        assert r.exists(f"pcn:{me.address}:inbox:{TASK}:bytes") == 0


def test_inbox_keys_expire_after_the_task_deadline(world: World) -> None:
    w = world
    w.peers.deadline = int(time.time()) + 1000
    assert w.post(w.seal(w.alice, 0)).status_code == 202
    keys = inbox_keys(w)
    names = {k.decode().rsplit(":", 1)[1] for k in keys}
    assert names == {"next", "list", "digests", "bytes", "received"}
    for key in keys:
        ttl = w.inbox.r.ttl(key)
        assert 1000 + 3600 - 30 <= ttl <= 1000 + 3600, (key, ttl)


def test_the_mailbox_answers_503_with_retry_after_beyond_its_in_flight_limit(r: redis.Redis) -> None:
    me, alice = new_org(), new_org()
    inbox = Inbox(r, f"pcn:{me.address}")
    peers = FakePeers([me, alice], {TASK: [me.address, alice.address]})
    w = World(me, alice, alice, alice, alice, peers, inbox, "", {}, httpx.Client(timeout=10))
    body = w.seal(alice, 0, b"slow")
    release = threading.Event()
    started = threading.Event()

    def trickle() -> Iterator[bytes]:  # a slow upload that holds its request in flight
        yield body[:10]
        started.set()
        release.wait(10)
        yield body[10:]

    with serve(make_app(w, max_inflight=1)) as url, w.http:
        w.url = url
        slow: list[httpx.Response] = []

        def send_slow() -> None:
            with httpx.Client(timeout=20) as c:
                slow.append(c.post(f"{url}/v1/tasks/{TASK}/messages", content=trickle()))

        t = threading.Thread(target=send_slow)
        t.start()
        assert started.wait(10)
        time.sleep(0.2)
        resp = w.post(w.seal(alice, 1, b"next"))
        assert resp.status_code == 503 and resp.json()["error"] == "busy"
        assert resp.headers["retry-after"] == "1"
        assert w.http.get(f"{url}/v1/health").status_code == 200  # health stays answerable
        release.set()
        t.join(20)
        assert slow[0].status_code == 202
        assert w.post(w.seal(alice, 1, b"next")).status_code == 202


# ----------------------------------------------------------------------------- #13.9 signed progress


def test_progress_answers_only_signed_requests_of_participants_and_the_requester(r: redis.Redis) -> None:
    me, alice, bob, outsider = new_org(), new_org(), new_org(), new_org()
    requester = new_org()  # submitted the task but owns none of its datasets
    peers = FakePeers([me, alice, bob, outsider, requester], {TASK: [me.address, alice.address, bob.address]})
    peers.requester = requester.address
    w = World(
        me, alice, bob, outsider, outsider, peers, Inbox(r, f"pcn:{me.address}"), "", {}, httpx.Client(timeout=10)
    )
    shared = {"phase": "running", "fraction": "0.5000", "detail": "epoch 3/10 evaluated"}
    live = {TASK: {**shared, "own.validation_auc": "0.8123"}}  # a figure for me's operator alone
    path = f"/v1/tasks/{TASK}/progress"
    with serve(make_app(w, progress=lambda task_id: live.get(task_id, {}))) as url, w.http:

        def get(headers: dict[str, str] | None = None, at: str = path) -> httpx.Response:
            return w.http.get(url + at, headers=headers or {})

        resp = get()
        assert resp.status_code == 401 and resp.json()["error"] == "unsigned"
        assert "epoch" not in resp.text
        old = sign_request(alice.account, "GET", path, TASK, now=time.time() - 600)
        assert (get(old).status_code, get(old).json()["error"]) == (401, "expired")
        ahead = sign_request(alice.account, "GET", path, TASK, now=time.time() + 600)
        assert get(ahead).status_code == 401
        other_task = sign_request(alice.account, "GET", f"/v1/tasks/{TASK + 1}/progress", TASK + 1)
        assert (get(other_task).status_code, get(other_task).json()["error"]) == (401, "bad-signature")
        # the signature binds the method and path: one made for another route proves nothing
        for_other_route = sign_request(alice.account, "POST", path, TASK)
        assert get(for_other_route).status_code == 401
        garbled = {**sign_request(alice.account, "GET", path, TASK), "x-pcn-signature": "0x1234"}
        assert (get(garbled).status_code, get(garbled).json()["error"]) == (401, "bad-signature")
        resp = get(sign_request(outsider.account, "GET", path, TASK))
        assert resp.status_code == 403 and resp.json()["error"] == "not-authorised"
        assert "epoch" not in resp.text
        for member in (alice, bob, requester):
            resp = get(sign_request(member.account, "GET", path, TASK))
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"org": me.address, "task_id": TASK, **shared}
            assert "0.8123" not in resp.text
        resp = get(sign_request(me.account, "GET", path, TASK))  # the organisation itself sees its own figures
        assert resp.json() == {"org": me.address, "task_id": TASK, **live[TASK]}
        unknown = "/v1/tasks/999/progress"
        resp = get(sign_request(alice.account, "GET", unknown, 999), at=unknown)
        assert resp.status_code == 404 and resp.json()["error"] == "unknown-task"
        assert get(at="/v1/health").json() == {"ok": True, "org": me.address}  # health carries nothing of tasks


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mailbox_task_quota", 0, "mailbox_task_quota must be a positive integer"),
        ("mailbox_sender_quota", -1, "mailbox_sender_quota must be a positive integer"),
        ("mailbox_max_inflight", 1.5, "mailbox_max_inflight must be a positive integer"),
        ("mailbox_ttl_margin", True, "mailbox_ttl_margin must be a positive integer"),
        ("mailbox_sender_quota", 2 * 1024**3, "must not exceed mailbox_task_quota"),
    ],
)
def test_mailbox_limits_in_the_node_config_are_validated(tmp_path: Path, key: str, value: object, message: str) -> None:
    cfg = OrgConfig(
        "acme", "http://127.0.0.1:8545", "d.json", "redis://127.0.0.1:6379", "data", "http://127.0.0.1:9000"
    )
    path = cfg.save(tmp_path / "node.toml")
    assert load_config(path).mailbox_task_quota == 1024**3  # the defaults are valid
    text = path.read_text().replace(f"{key} = {getattr(cfg, key)}", f"{key} = {str(value).lower()}")
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
