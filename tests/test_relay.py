"""The relay (#17): what it takes, to whom it hands it, what it refuses, and that it keeps
what it accepted. Its HTTP API in-process over a real, durable Redis of its own."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from pcn.algorithms.base import Message
from pcn.chain.errors import ChainUnavailable
from pcn.chain.types import Organisation, OrgStatus, RefusalReason, Task, TaskStatus
from pcn.devnet.localnet import RedisServer
from pcn.runtime import puller as puller_module
from pcn.runtime.envelope import open_envelope, seal
from pcn.runtime.peers import UnknownPeer, UnknownTask
from pcn.runtime.puller import Puller, relay_route
from pcn.runtime.relay import RelayStore, create_relay_app
from pcn.runtime.reqauth import sign_request

CHAIN_ID, TASK_MANAGER = 31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3"


class Party:
    def __init__(self) -> None:
        self.account: LocalAccount = Account.create()
        self.x25519 = X25519PrivateKey.generate()

    @property
    def address(self) -> str:
        return str(self.account.address)

    @property
    def public(self) -> bytes:
        return self.x25519.public_key().public_bytes_raw()


def opened(body: bytes, receiver: Party) -> Message:
    """What the addressee reads: the envelope checked and decrypted as its mailbox does."""

    def active(sender: str) -> Organisation:
        return Organisation(sender, "peer", b"", "", OrgStatus.ACTIVE, 0, 0)

    msg, _task, _digest = open_envelope(
        body,
        me=receiver.address,
        my_x25519=receiver.x25519,
        chain_id=CHAIN_ID,
        task_manager=TASK_MANAGER,
        sender_key=active,
    )
    return msg


def stored_bytes(store: RelayStore) -> bytes:
    """Everything the relay's Redis holds, values of its streams included."""
    out = []
    for key in store.r.scan_iter("*"):
        if store.r.type(key) == b"stream":
            out += [v for _id, fields in store.r.xrange(key) for v in fields.values()]
    return b"".join(out)


class Chain:
    """The chain as the relay reads it (the `PeerLookup` it is given), over dictionaries:
    admitted organisations and their status, and tasks (participants, requester, status)."""

    def __init__(self) -> None:
        self.orgs: dict[str, OrgStatus] = {}
        self.tasks: dict[int, tuple[list[str], str, TaskStatus]] = {}
        self.down = False

    def admit(self, *parties: Party, status: OrgStatus = OrgStatus.ACTIVE) -> None:
        for p in parties:
            self.orgs[p.address] = status

    def add_task(
        self, task_id: int, parties: list[Party], requester: Party, status: TaskStatus = TaskStatus.RUNNING
    ) -> None:
        self.tasks[task_id] = ([p.address for p in parties], requester.address, status)

    def join(self, task_id: int, *parties: Party) -> None:
        """Admit `parties` and make them participants of `task_id` (the first one requests it
        if the task is new)."""
        self.admit(*parties)
        members, requester, status = self.tasks.get(task_id, ([], parties[0].address, TaskStatus.RUNNING))
        self.tasks[task_id] = ([*members, *(p.address for p in parties if p.address not in members)], requester, status)

    def organisation(self, address: str) -> Organisation:
        if self.down:
            raise ChainUnavailable("rpc down")
        if address not in self.orgs:
            raise UnknownPeer(address)
        return Organisation(address, "org", b"", "", self.orgs[address], 0, 0)

    def endpoint(self, address: str) -> str:
        return self.organisation(address).endpoint

    def participants(self, task_id: int) -> list[str]:
        if self.down:
            raise ChainUnavailable("rpc down")
        if task_id not in self.tasks:
            raise UnknownTask(task_id)
        return list(self.tasks[task_id][0])

    def task(self, task_id: int) -> Task:
        _members, requester, status = self.tasks[task_id]
        zero = b"\x00" * 32
        return Task(task_id, requester, status, 1, 1, 0, 0, RefusalReason(0), requester, 0, 0, 0, 0, zero, zero, zero)

    def invalidate(self, address: str) -> None:
        return None


CHAIN = Chain()  # the relay fixture's chain, fresh per test


def envelope(
    sender: Party,
    receiver: Party,
    task_id: int = 7,
    seq: int = 0,
    payload: bytes = b"secret rows",
    *,
    members: bool = True,
) -> bytes:
    """A protocol message `sender` sealed to `receiver`; with `members`, both are admitted on
    the relay's chain and participants of the task."""
    if members:
        CHAIN.join(task_id, sender, receiver)
    msg = Message(sender.address, receiver.address, 3, "blinded", payload, seq)
    return seal(msg, task_id, CHAIN_ID, TASK_MANAGER, sender.account, receiver.public)


@pytest.fixture(scope="module")
def relay_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("relay-redis"), persist=True)
    yield server
    server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def relay(relay_redis: RedisServer) -> Iterator[tuple[TestClient, RelayStore, Clock]]:
    import redis

    r = redis.Redis.from_url(relay_redis.url)
    r.flushall()
    clock = Clock()
    store = RelayStore(r, addressee_quota=4096, sender_quota=2048, expire_after=3600, clock=clock)
    CHAIN.__init__()
    app = create_relay_app(store, peers=CHAIN, chain_id=CHAIN_ID, task_manager=TASK_MANAGER, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, store, clock


def post(client: TestClient, org: Party, body: bytes, task_id: int = 7) -> httpx.Response:
    return client.post(f"/o/{org.address}/v1/tasks/{task_id}/messages", content=body)


def fetch(client: TestClient, org: Party, now: float, signer: Party | None = None) -> httpx.Response:
    path = f"/o/{org.address}/fetch"
    return client.get(path, headers=sign_request((signer or org).account, "GET", path, 0, now))


def test_an_envelope_waits_for_its_addressee_who_alone_fetches_and_opens_it(relay: tuple) -> None:
    client, store, clock = relay
    a, b, mallory = Party(), Party(), Party()
    sealed = envelope(a, b)
    r = post(client, b, sealed)
    assert r.status_code == 202 and r.json()["outcome"] == "relayed"
    # the relay holds only what was sealed: the payload is nowhere in its store
    assert sealed in stored_bytes(store) and b"secret rows" not in stored_bytes(store)
    assert client.get(f"/o/{b.address}/fetch").status_code == 401  # unsigned
    assert fetch(client, b, clock.now, signer=mallory).status_code == 403  # another organisation
    stale = fetch(client, b, clock.now - 3600)
    assert stale.status_code == 401 and stale.json()["error"] == "expired"
    got = fetch(client, b, clock.now)
    assert got.status_code == 200
    (item,) = got.json()["items"]
    assert item["kind"] == "message" and item["task_id"] == 7 and item["sender"] == a.address
    body = base64.b64decode(item["body"])
    assert body == sealed  # byte for byte what the sender sealed and signed
    assert opened(body, b).payload == b"secret rows"
    # acknowledged: gone, and counted
    path = f"/o/{b.address}/ack/{item['id']}"
    assert client.post(path, headers=sign_request(b.account, "POST", path, 0, clock.now)).json() == {"acknowledged": 1}
    assert fetch(client, b, clock.now).json()["items"] == []
    stats = store.stats()[b.address]
    assert stats["accepted"] == 1 and stats["delivered"] == 1 and stats["waiting"] == 0 and stats["waiting_bytes"] == 0


def test_forged_misaddressed_and_foreign_envelopes_are_refused_and_nothing_is_kept(relay: tuple) -> None:
    client, store, clock = relay
    a, b, c = Party(), Party(), Party()
    sealed = bytearray(envelope(a, b))
    sealed[-1] ^= 1  # the ciphertext changed after signing: the signature no longer covers it
    r = post(client, b, bytes(sealed))
    assert r.status_code == 400 and r.json()["error"] == "bad-signature"
    r = post(client, c, envelope(a, b))  # addressed to b, delivered to c's queue
    assert r.status_code == 400 and r.json()["error"] == "misbound"
    r = post(client, b, envelope(a, b, task_id=7), task_id=8)
    assert r.status_code == 400 and r.json()["error"] == "task-mismatch"
    assert post(client, b, b"\x00\x05hello").json()["error"] == "malformed"
    assert client.post("/o/not-an-address/v1/tasks/7/messages", content=b"x").status_code == 404
    assert fetch(client, b, clock.now).json()["items"] == []
    assert store.stats()[b.address]["refused-envelope"] == 3 and store.stats()[c.address]["refused-envelope"] == 1


def test_the_chain_decides_what_the_relay_keeps(relay: tuple) -> None:
    """A relay reads the consortium's chain: only an admitted, active organisation's envelope
    for a live task, from a participant (parameters: from the requester) to a participant,
    is kept. Anyone else, a flood of fresh keys included, fills no organisation's queue."""
    from pcn.runtime.envelope import PARAMS_KIND

    client, store, _clock = relay
    a, b, outsider, suspended, third = Party(), Party(), Party(), Party(), Party()
    CHAIN.join(7, a, b)
    CHAIN.admit(suspended, status=OrgStatus.SUSPENDED)
    CHAIN.admit(third)  # admitted, but no participant of task 7
    CHAIN.add_task(9, [a, b], requester=a, status=TaskStatus.COMPLETED)
    refusals = [  # (addressee, task, envelope, status, code)
        (b, 7, envelope(outsider, b, members=False), 403, "sender-not-active"),
        (b, 7, envelope(suspended, b, members=False), 403, "sender-not-active"),
        (b, 9, envelope(a, b, task_id=9, members=False), 409, "task-final"),
        (outsider, 7, envelope(a, outsider, members=False), 403, "not-participant"),  # addressee outside the task
        (b, 7, envelope(third, b, members=False), 403, "not-participant"),  # sender outside the task
    ]
    for addressee, task, body, status, code in refusals:
        r = post(client, addressee, body, task_id=task)
        assert (r.status_code, r.json()["error"]) == (status, code), (code, r.json())
    r = post(client, b, envelope(a, b, task_id=77, members=False), task_id=77)  # not on (this view of) the chain
    assert (r.status_code, r.json()["error"]) == (425, "too-early")  # the sender retries; nothing counted
    foreign = seal(Message(a.address, b.address, 3, "x", b"p"), 7, CHAIN_ID + 1, TASK_MANAGER, a.account, b.public)
    assert post(client, b, foreign).json()["error"] == "wrong-domain"
    by_b = seal(Message(b.address, a.address, 0, PARAMS_KIND, b"{}"), 7, CHAIN_ID, TASK_MANAGER, b.account, a.public)
    r = client.post(f"/o/{a.address}/v1/tasks/7/params", content=by_b)  # b takes part, a requested task 7
    assert (r.status_code, r.json()["error"]) == (403, "not-requester")
    CHAIN.down = True
    r = post(client, b, envelope(a, b, seq=0))
    assert (r.status_code, r.json()["error"]) == (503, "chain-unavailable")
    CHAIN.down = False
    flood = [post(client, b, envelope(Party(), b, payload=bytes(900), members=False)) for _ in range(10)]
    assert {r.status_code for r in flood} == {403}
    stats = store.stats()[b.address]
    assert stats["waiting"] == 0 and stats["waiting_bytes"] == 0
    # counted: 2 not admitted, the final task, the outsider sender, the foreign domain, the flood
    # (not the 425 and 503 answers, which the sender retries)
    assert stats["refused-by-chain"] == 2 + 1 + 1 + 1 + 10
    assert post(client, b, envelope(a, b)).status_code == 202  # a member's envelope still goes through


def test_task_parameters_pass_only_sealed_and_are_metered_to_the_requester(relay: tuple) -> None:
    """Parameters reach the relay as an envelope the requester signed and sealed to the
    addressee: the relay keeps it under the requester's name and reads nothing; parameters
    in clear are refused, and counted, as any malformed envelope."""
    from pcn.runtime.envelope import PARAMS_KIND

    client, store, clock = relay
    requester, org = Party(), Party()
    CHAIN.admit(requester, org)
    CHAIN.add_task(7, [org], requester=requester)  # the requester owns none of its datasets
    params = b'{"column":"income","statistics":["count"]}'
    clear = client.post(f"/o/{org.address}/v1/tasks/7/params", content=params)
    assert clear.status_code == 400 and store.stats()[org.address]["refused-envelope"] == 1
    sealed = seal(Message(requester.address, org.address, 0, PARAMS_KIND, params), 7, CHAIN_ID, TASK_MANAGER,
                  requester.account, org.public)  # fmt: skip
    assert client.post(f"/o/{org.address}/v1/tasks/7/params", content=sealed).status_code == 202
    assert b"income" not in stored_bytes(store)
    (item,) = fetch(client, org, clock.now).json()["items"]
    assert item["kind"] == "params" and item["sender"] == requester.address
    assert opened(base64.b64decode(item["body"]), org).payload == params


def test_quotas_per_sender_and_per_addressee(relay: tuple) -> None:
    _client, store, clock = relay
    a, b, c = Party(), Party(), Party()
    size = len(envelope(a, b, payload=bytes(900)))
    # room for two envelopes per sender and three per addressee
    metered = RelayStore(store.r, sender_quota=2 * size, addressee_quota=3 * size, clock=clock)
    with TestClient(
        create_relay_app(metered, peers=CHAIN, chain_id=CHAIN_ID, task_manager=TASK_MANAGER, clock=clock),
        raise_server_exceptions=False,
    ) as client:
        assert post(client, b, envelope(a, b, seq=0, payload=bytes(900))).status_code == 202
        assert post(client, b, envelope(a, b, seq=1, payload=bytes(900))).status_code == 202
        over = post(client, b, envelope(a, b, seq=2, payload=bytes(900)))
        assert over.status_code == 413 and over.json()["error"] == "quota-exceeded"
        # another sender is not held back by a's backlog, until the organisation's quota is used up
        assert post(client, b, envelope(c, b, seq=0, payload=bytes(900))).status_code == 202
        assert post(client, b, envelope(c, b, seq=1, payload=bytes(900))).status_code == 413
        items = fetch(client, b, clock.now).json()["items"]
        assert [(i["sender"], i["task_id"]) for i in items] == [(a.address, 7), (a.address, 7), (c.address, 7)]
        assert metered.stats()[b.address]["refused-quota"] == 2
        # what is handed over frees its room
        path = f"/o/{b.address}/ack/{items[0]['id']}"
        client.post(path, headers=sign_request(b.account, "POST", path, 0, clock.now))
        assert post(client, b, envelope(a, b, seq=2, payload=bytes(900))).status_code == 202


def test_what_nobody_fetches_expires_and_an_acknowledgement_covers_only_what_it_names(relay: tuple) -> None:
    client, store, clock = relay
    a, b = Party(), Party()
    for seq in range(3):
        assert post(client, b, envelope(a, b, seq=seq)).status_code == 202
    items = fetch(client, b, clock.now).json()["items"]
    first = items[0]["id"]
    path = f"/o/{b.address}/ack/{first}"
    headers = sign_request(b.account, "POST", path, 0, clock.now)
    assert client.post(path, headers=headers).json() == {"acknowledged": 1}
    # replaying that signed acknowledgement acknowledges nothing more
    assert client.post(path, headers=headers).json() == {"acknowledged": 0}
    assert len(fetch(client, b, clock.now).json()["items"]) == 2
    clock.now += 3601
    assert fetch(client, b, clock.now).json()["items"] == []
    assert store.stats()[b.address]["expired"] == 2


def test_the_relay_keeps_what_it_accepted_across_its_redis_restart(relay: tuple, relay_redis: RedisServer) -> None:
    client, _store, clock = relay
    a, b = Party(), Party()
    sealed = envelope(a, b)
    assert post(client, b, sealed).status_code == 202
    relay_redis.restart()
    (item,) = fetch(client, b, clock.now).json()["items"]
    assert base64.b64decode(item["body"]) == sealed


def test_the_puller_hands_over_in_order_and_keeps_what_the_mailbox_cannot_take_yet(
    relay: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node side: fetched items go to the local mailbox; a final answer acknowledges them,
    a temporary one (the task not authorised yet here) keeps that item and those after it."""
    client, store, _clock = relay
    a, b = Party(), Party()
    for seq in range(3):
        post(client, b, envelope(a, b, seq=seq))
    answers = iter([202, 425, 202, 202])
    handed: list[bytes] = []

    def mailbox(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status < 300:
            handed.append(request.content)
        return httpx.Response(status, json={"outcome": "new"} if status < 300 else {"error": "too-early"})

    routes = httpx.Client(transport=httpx.MockTransport(mailbox))

    class Both(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.host == "mailbox.local":
                return routes._transport.handle_request(request)
            return client._transport.handle_request(request)  # the relay, in-process

    both = httpx.Client(transport=Both())
    puller = Puller("http://testserver", "http://mailbox.local", b.account, client=both, local=both)
    monkeypatch.setattr(puller_module, "RETRY_AFTER", 0.0)
    assert relay_route("http://testserver/", b.address) == f"http://testserver/o/{b.address}"
    assert puller.step(wait=0) == 1  # the second item is too early: it and the third stay
    assert store.stats()[b.address]["waiting"] == 2
    assert puller.step(wait=0) == 2
    assert store.stats()[b.address]["waiting"] == 0 and puller.handed == 3
    assert [opened(h, b).seq for h in handed] == [0, 1, 2]


STOPPABLE_PULLER = """
import sys
from eth_account import Account
from pcn.runtime.puller import Puller
Puller(sys.argv[1], "http://127.0.0.1:9", Account.create()).run_forever()
print("stopped", flush=True)
"""


def test_the_puller_stops_at_once_while_the_relay_holds_its_fetch_open() -> None:
    """`pcn node stop` sends SIGTERM: a puller waiting in a long poll ends it and exits cleanly
    rather than waiting out the relay's hold (or being killed when stop loses patience)."""
    import http.server
    import signal
    import threading

    fetching, release = threading.Event(), threading.Event()

    class HoldingRelay(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # a fetch: held open as the relay does when nothing waits
            fetching.set()
            release.wait(60)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"items": []}')

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HoldingRelay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    proc = subprocess.Popen([sys.executable, "-c", STOPPABLE_PULLER, url], stdout=subprocess.PIPE, text=True)
    try:
        assert fetching.wait(30), "the puller never fetched"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)  # the hold is 60 s and the client's timeout 30 s
        assert proc.returncode == 0 and out.strip() == "stopped"
    finally:
        proc.kill()
        release.set()
        server.shutdown()


def test_the_route_health_says_whether_the_node_is_fetching(relay: tuple) -> None:
    """A peer or requester asking an outbound-only organisation's route for its health learns
    whether its node is connected, not only that the relay is up: a node that never fetched,
    or whose last fetch ended more than ONLINE_GRACE ago, is reported offline."""
    from pcn.runtime.relay import ONLINE_GRACE

    client, store, clock = relay
    b = Party()
    health = client.get(f"/o/{b.address}/v1/health").json()
    assert health["ok"] is True and health["relay"] is True  # the relay takes deliveries for it
    assert health["node_online"] is False and health["node_seen_s_ago"] is None
    # a key the chain never admitted may not fetch, and leaves no record behind
    r = fetch(client, b, clock.now)
    assert (r.status_code, r.json()["error"]) == (403, "not-admitted")
    assert store.seen_ago(b.address) is None
    CHAIN.admit(b)
    assert fetch(client, b, clock.now).status_code == 200
    health = client.get(f"/o/{b.address}/v1/health").json()
    assert health["node_online"] is True and health["node_seen_s_ago"] == 0
    assert store.stats()[b.address]["last_fetch_s_ago"] == 0
    clock.now += ONLINE_GRACE + 1
    health = client.get(f"/o/{b.address}/v1/health").json()
    assert health["node_online"] is False and health["node_seen_s_ago"] == pytest.approx(ONLINE_GRACE + 1)
    # a fetch held open counts as connected for as long as it may be held
    store.mark_fetching(b.address, clock.now + 25)
    clock.now += 20
    assert client.get(f"/o/{b.address}/v1/health").json()["node_online"] is True
    # someone else's fetch (refused) does not make the node look alive
    clock.now += 60
    assert fetch(client, b, clock.now, signer=Party()).status_code == 403
    assert client.get(f"/o/{b.address}/v1/health").json()["node_online"] is False


def test_relay_cli_status_reads_the_queues(relay: tuple, relay_redis: RedisServer, tmp_path: Path) -> None:
    client, _store, _clock = relay
    a, b = Party(), Party()
    post(client, b, envelope(a, b))
    pcn = str(Path(sys.executable).parent / "pcn")
    out = subprocess.run(
        [pcn, "relay", "status", "--redis-url", relay_redis.url, "--json"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[b.address]["waiting"] == 1
    assert json.loads(out.stdout)[b.address]["last_fetch_s_ago"] == -1  # its node never fetched
    table = subprocess.run(
        [pcn, "relay", "status", "--redis-url", relay_redis.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},  # one line per row
    )
    assert table.returncode == 0 and "last fetch" in table.stdout and "never" in table.stdout
    bad = subprocess.run(
        [pcn, "relay", "status", "--redis-url", "redis://127.0.0.1:1/0"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "cannot be reached" in bad.stdout + bad.stderr


def test_progress_published_by_the_node_is_served_to_the_readers_it_named(relay: tuple) -> None:
    client, _store, clock = relay
    org, requester, outsider = Party(), Party(), Party()
    path = f"/o/{org.address}/progress/9"
    snapshot = {"fields": {"phase": "running", "fraction": "0.4"}, "readers": [org.address, requester.address]}
    read = f"/o/{org.address}/v1/tasks/9/progress"
    assert client.get(read, headers=sign_request(requester.account, "GET", read, 9, clock.now)).status_code == 404

    def publish(body: dict, signer: Party, task_id: int = 9) -> httpx.Response:
        return client.put(path, json=body, headers=sign_request(signer.account, "PUT", path, task_id, clock.now))

    # only the organisation itself publishes its progress, signed for this very task, and only
    # an admitted organisation, of a task it takes part in (random keys store nothing here)
    assert publish(snapshot, outsider).status_code == 403
    assert publish(snapshot, org, task_id=8).status_code == 401
    assert publish(snapshot, org).json()["error"] == "not-admitted"
    CHAIN.admit(org)
    assert (publish(snapshot, org).status_code, publish(snapshot, org).json()["error"]) == (425, "too-early")
    CHAIN.add_task(9, [requester], requester=requester)
    assert publish(snapshot, org).json()["error"] == "not-participant"
    CHAIN.join(9, org)
    bad = publish({"fields": {"phase": 1}, "readers": []}, org)
    assert bad.status_code == 400 and bad.json()["error"] == "malformed"
    assert publish(snapshot, org).status_code == 200
    got = client.get(read, headers=sign_request(requester.account, "GET", read, 9, clock.now))
    assert got.status_code == 200
    assert got.json() == {"org": org.address, "task_id": 9, "phase": "running", "fraction": "0.4"}
    denied = client.get(read, headers=sign_request(outsider.account, "GET", read, 9, clock.now))
    assert denied.status_code == 403 and denied.json()["error"] == "not-authorised"
    assert client.get(read).status_code == 401


def test_accept_and_drop_keep_the_counts_exact_even_when_the_clock_steps_back(relay: tuple) -> None:
    """An accepted item, its held bytes and its count are one atomic step in the relay's Redis
    (so is an acknowledgement): a relay killed mid-request cannot leave delivered > accepted.
    A clock that stepped back still queues in order."""
    _client, store, clock = relay
    a, b = Party(), Party()
    first = store.accept(b.address, "message", 7, a.address, b"x" * 100)
    clock.now -= 100  # the relay's clock stepped back behind its newest item
    second = store.accept(b.address, "message", 7, a.address, b"y" * 50)
    assert first and second and tuple(map(int, second.split("-"))) > tuple(map(int, first.split("-")))
    stats = store.stats()[b.address]
    assert (stats["accepted"], stats["waiting"], stats["waiting_bytes"]) == (2, 2, 150)
    assert store.ack(b.address, second) == 2 and store.ack(b.address, second) == 0  # a replayed ack
    stats = store.stats()[b.address]
    assert (stats["delivered"], stats["waiting"], stats["waiting_bytes"]) == (2, 0, 0)
    assert int(store.r.get(store._key("held", b.address, a.address)) or 0) == 0


def test_relay_serve_refuses_to_start_without_the_consortiums_chain(
    relay_redis: RedisServer, tmp_path: Path, deployment
) -> None:
    """The relay checks senders against the chain: no deployment or no RPC, no relay (a clear
    message, no traceback)."""
    pcn = str(Path(sys.executable).parent / "pcn")
    serve = [pcn, "relay", "serve", "--redis-url", relay_redis.url, "--host", "127.0.0.1", "--port", "0"]
    missing = subprocess.run([*serve, "--deployment", str(tmp_path / "none.json")], capture_output=True, text=True)
    out = missing.stdout + missing.stderr
    assert missing.returncode == 1 and "Traceback" not in out and "none.json not found" in out, out
    no_rpc = [*serve, "--deployment", str(deployment.path), "--rpc-url", "http://127.0.0.1:1"]
    down = subprocess.run(no_rpc, capture_output=True, text=True, timeout=60)
    out = " ".join((down.stdout + down.stderr).split())
    assert down.returncode == 1 and "Traceback" not in out, out
    assert "cannot reach the chain at http://127.0.0.1:1" in out, out
