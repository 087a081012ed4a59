"""The regulator's dashboard against the session anvil: Sign-In with Ethereum (happy path,
replayed nonce, expired message, wrong domain/chain/URI, non-auditor, tampered message,
rate limit, session expiry and role revocation), every route behind the session, the pages
(task timeline and verdict, datasets, anomalies, escaping), reports (JSON, CSV, HTML, from
the dashboard too) and the `pcn audit` commands run as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select

from pcn.auditor.anomalies import detect_and_record
from pcn.auditor.reports import build_report, parse_when, read_csv_sections, report_csv
from pcn.auditor.store import EventRow, Store, TaskRow
from pcn.auditor.web import create_dashboard_app, siwe_message
from pcn.auditor.web.auth import Authenticator, AuthError
from pcn.auditor.web.dashboard import COOKIE
from pcn.auditor.web.render import report_html
from pcn.auditor.web.siwe import SiweError, iso, parse_siwe, recover_signer, sign_message
from pcn.chain.deployment import Deployment
from pcn.chain.errors import ChainUnavailable
from pcn.chain.ledger import Ledger
from pcn.chain.types import Fingerprint, PolicyGrants, PolicyLimits, epsilon_to_fixed
from pcn.devnet.anvil import rpc_call
from pcn.devnet.deploy import devnet_key
from pcn.runtime.actionlog import ActionLog
from tests.helpers import h, request_for
from tests.test_auditor_support import (
    BACKENDS,
    Scenario,
    StoreFactory,
    good_receipt,
    indexer,
    populate,
    store_factory,
)

REPO = Path(__file__).resolve().parents[1]
PCN = Path(sys.executable).with_name("pcn")
if not PCN.exists():
    PCN = REPO / ".venv" / "bin" / "pcn"

DOMAIN = "testserver"  # TestClient's host
AUDITOR_KEY = devnet_key(1)  # populate() grants the auditor role to anvil account 1
AUDITOR = Account.from_key(AUDITOR_KEY).address


@dataclass
class World:
    sc: Scenario
    store: Store
    url: str
    deployment: Deployment
    rpc_url: str

    def ledger(self) -> Ledger:
        return Ledger(self.deployment)


@contextmanager
def populated(devnet, deployment: Deployment, folder: Path) -> Iterator[World]:
    """populate()'s chain (completed, refused, cancelled and disputed tasks, policy changes, a
    suspension…), indexed into a store in `folder` with its anomalies recorded; the chain is
    reverted afterwards."""
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    st = None
    try:
        sc = populate(deployment)
        path = folder / "auditor.sqlite"
        st = Store(path)
        indexer(deployment, st).run_once()
        detect_and_record(st)
        yield World(sc, st, f"sqlite:///{path}", deployment, devnet.rpc_url)
    finally:
        if st is not None:
            st.dispose()
        rpc_call(devnet.rpc_url, "evm_revert", [snap])


@pytest.fixture(scope="module")
def world(devnet, deployment, tmp_path_factory) -> Iterator[World]:
    """One populated, indexed chain for the whole module (tests that write take `snapshot`)."""
    with populated(devnet, deployment, tmp_path_factory.mktemp("auditor-web")) as w:
        yield w


def make_client(world: World, **kw) -> TestClient:
    kw.setdefault("domain", DOMAIN)
    app = create_dashboard_app(world.store, world.ledger(), **kw)
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def client(world: World) -> TestClient:
    return make_client(world)


def fresh_message(client: TestClient, address: str = AUDITOR) -> str:
    r = client.get("/auth/nonce", params={"address": address})
    assert r.status_code == 200, r.text
    return r.json()["message"]


def sign_in(client: TestClient, key: str = AUDITOR_KEY, message: str | None = None):
    address = Account.from_key(key).address
    message = message if message is not None else fresh_message(client, address)
    return client.post("/auth/verify", json={"message": message, "signature": sign_message(message, key)})


def logged_in(world: World, **kw) -> TestClient:
    c = make_client(world, **kw)
    r = sign_in(c)
    assert r.status_code == 200, r.text
    return c


def api_routes(app) -> list:
    """Every path operation of the app (FastAPI keeps each included router as one node of `app.routes`)."""
    return [r for r in iter_route_contexts(app.routes) if isinstance(r.original_route, APIRoute)]


def nonce_of(message: str) -> str:
    return parse_siwe(message).nonce


# ---------------------------------------------------------------------------- EIP-4361 text


def test_siwe_message_is_the_eip4361_text_and_parses_back():
    address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    text = siwe_message(
        "example.com",
        address,
        "https://example.com/login",
        1,
        "32891756",
        "2021-09-30T16:25:24Z",
        "2021-10-01T16:25:24Z",
        statement="I accept the ServiceOrg Terms of Service: https://example.com/tos",
    )
    assert text == (
        "example.com wants you to sign in with your Ethereum account:\n"
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n\n"
        "I accept the ServiceOrg Terms of Service: https://example.com/tos\n\n"
        "URI: https://example.com/login\n"
        "Version: 1\n"
        "Chain ID: 1\n"
        "Nonce: 32891756\n"
        "Issued At: 2021-09-30T16:25:24Z\n"
        "Expiration Time: 2021-10-01T16:25:24Z"
    )
    m = parse_siwe(text)
    assert (m.domain, m.address, m.chain_id, m.nonce, m.uri) == (
        "example.com",
        address,
        1,
        "32891756",
        "https://example.com/login",
    )
    assert m.expiration_ts == parse_when("2021-10-01T16:25:24Z")
    bare = siwe_message("example.com", address, "https://example.com/", 1, "abcdefgh12", 0, None, statement=None)
    assert "account:\n" + address + "\n\n\nURI:" in bare
    assert parse_siwe(bare).statement is None and parse_siwe(bare).expiration_time is None
    for bad in (
        text.replace("Version: 1", "Version: 2"),
        text.replace(address, address.lower()),  # not EIP-55
        text.replace("Nonce: 32891756", "Nonce: short"),
        text + "\nsomething else",
        text.replace("\n", "\r\n"),
        text.replace("Issued At: 2021-09-30T16:25:24Z", "Issued At: yesterday"),
        "hello",
    ):
        with pytest.raises(SiweError):
            parse_siwe(bad)
    key = Account.create()
    own = siwe_message("example.com", key.address, "https://example.com/", 1, "abcdefgh12", 0, 10)
    assert recover_signer(own, sign_message(own, key.key)) == key.address
    with pytest.raises(SiweError):
        recover_signer(own, "0x1234")


# ---------------------------------------------------------------------------- sign-in


def test_sign_in_sets_a_strict_http_only_session_cookie(world: World, client: TestClient):
    issued = client.get("/auth/nonce", params={"address": AUDITOR.lower()}).json()
    assert issued["domain"] == DOMAIN and issued["chain_id"] == world.deployment.chain_id
    assert issued["address"] == AUDITOR and issued["expires_in"] == 300
    assert len(issued["nonce"]) >= 16 and issued["nonce"] in issued["message"]
    assert client.get("/auth/nonce").json()["nonce"] != issued["nonce"]  # random, fresh each time
    r = client.post(
        "/auth/verify", json={"message": issued["message"], "signature": sign_message(issued["message"], AUDITOR_KEY)}
    )
    assert r.status_code == 200, r.text
    assert r.json()["address"] == AUDITOR
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    assert client.get("/api/session").json()["address"] == AUDITOR
    page = client.get("/")
    assert page.status_code == 200 and "Overview" in page.text and "Signed in as" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    # the login page now sends a signed-in regulator on
    assert client.get("/login", params={"next": "/tasks"}).headers["location"] == "/tasks"


def test_the_login_form_works_without_javascript(world: World, client: TestClient):
    page = client.get("/login", params={"address": AUDITOR.lower(), "next": "/anomalies"})
    assert page.status_code == 200
    assert "wants you to sign in with your Ethereum account:" in page.text
    message = fresh_message(client)
    form = {
        "message": message.replace("\n", "\r\n"),
        "signature": sign_message(message, AUDITOR_KEY),
        "next": "/anomalies",
    }
    r = client.post("/auth/verify", data=form)
    assert r.status_code == 303 and r.headers["location"] == "/anomalies"
    assert client.get("/anomalies").status_code == 200
    # an open redirect is not possible
    other = make_client(world)
    message = fresh_message(other)
    r = other.post(
        "/auth/verify",
        data={"message": message, "signature": sign_message(message, AUDITOR_KEY), "next": "//evil.example/x"},
    )
    assert r.headers["location"] == "/"
    # a refused form sign-in shows the login page again with the reason
    again = other.post("/auth/verify", data={"message": message, "signature": sign_message(message, AUDITOR_KEY)})
    assert again.status_code == 401 and "Sign-in refused" in again.text and "already used" in again.text


def test_a_nonce_cannot_be_used_twice(world: World, client: TestClient):
    message = fresh_message(client)
    signature = sign_message(message, AUDITOR_KEY)
    assert client.post("/auth/verify", json={"message": message, "signature": signature}).status_code == 200
    replay = make_client(world)
    r = replay.post("/auth/verify", json={"message": message, "signature": signature})
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad-nonce"
    assert COOKIE not in r.cookies
    # a nonce the dashboard never issued
    now = time.time()
    made_up = siwe_message(
        DOMAIN, AUDITOR, f"http://{DOMAIN}/", world.deployment.chain_id, "deadbeef1234", now, now + 60
    )
    r = replay.post("/auth/verify", json={"message": made_up, "signature": sign_message(made_up, AUDITOR_KEY)})
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad-nonce"
    # a failed attempt burns the nonce too: one try per nonce
    message = fresh_message(replay)
    bad = replay.post("/auth/verify", json={"message": message, "signature": sign_message(message, devnet_key(5))})
    assert bad.status_code == 401
    good = replay.post("/auth/verify", json={"message": message, "signature": sign_message(message, AUDITOR_KEY)})
    assert good.status_code == 401 and good.json()["error"]["code"] == "bad-nonce"


def _message(client: TestClient, world: World, **override) -> str:
    nonce = client.get("/auth/nonce").json()["nonce"]
    now = time.time()
    parts = {
        "domain": DOMAIN,
        "address": AUDITOR,
        "uri": f"http://{DOMAIN}/",
        "chain_id": world.deployment.chain_id,
        "nonce": nonce,
        "issued_at": now,
        "expiration": now + 120,
    }
    parts.update(override)
    return siwe_message(**parts)


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"expiration": time.time() - 5, "issued_at": time.time() - 65}, "expired"),
        ({"expiration": None}, "no-expiry"),
        ({"issued_at": time.time() + 3600, "expiration": time.time() + 7200}, "issued-in-future"),
        ({"domain": "evil.example"}, "wrong-domain"),
        ({"domain": "evil.example", "uri": "http://evil.example/"}, "wrong-domain"),
        ({"uri": "http://evil.example/"}, "wrong-uri"),
        ({"chain_id": 1}, "wrong-chain"),
    ],
)
def test_a_message_for_another_site_chain_or_time_is_refused(world: World, client: TestClient, override, code):
    message = _message(client, world, **override)
    r = client.post("/auth/verify", json={"message": message, "signature": sign_message(message, AUDITOR_KEY)})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == code
    assert client.get("/api/session").status_code == 401


def test_an_account_without_the_auditor_role_is_forbidden(world: World, client: TestClient):
    bank = devnet_key(2)  # an admitted organisation, but not an auditor
    r = sign_in(client, bank)
    assert r.status_code == 403 and r.json()["error"]["code"] == "not-auditor"
    stranger = Account.create()
    r = sign_in(client, "0x" + bytes(stranger.key).hex())
    assert r.status_code == 403
    assert client.get("/api/session").status_code == 401
    assert sign_in(client).status_code == 200  # the auditor's own account works


def test_a_tampered_message_or_a_foreign_signature_is_refused(world: World, client: TestClient):
    # the statement changed after signing
    message = fresh_message(client)
    signature = sign_message(message, AUDITOR_KEY)
    tampered = message.replace("read-only", "read-write")
    assert tampered != message
    r = client.post("/auth/verify", json={"message": tampered, "signature": signature})
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad-signature"
    # the auditor's address, signed by someone else
    message = fresh_message(client)
    r = client.post("/auth/verify", json={"message": message, "signature": sign_message(message, devnet_key(3))})
    assert r.status_code == 401 and r.json()["error"]["code"] == "bad-signature"
    # garbage
    assert client.post("/auth/verify", json={"message": "hello", "signature": "0x00"}).status_code == 400
    assert (
        client.post("/auth/verify", json={"message": fresh_message(client), "signature": "0x1234"}).status_code == 401
    )
    assert (
        client.post("/auth/verify", content=b"not json", headers={"content-type": "application/json"}).status_code
        == 400
    )
    assert client.post("/auth/verify", json=["a"]).status_code == 400
    # a cross-site post is refused outright
    message = fresh_message(client)
    r = client.post(
        "/auth/verify",
        json={"message": message, "signature": sign_message(message, AUDITOR_KEY)},
        headers={"origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert client.get("/api/session").status_code == 401


def test_login_attempts_are_rate_limited_per_client(world: World):
    c = make_client(world, login_limit=3)
    for _ in range(3):
        message = fresh_message(c)
        assert c.post("/auth/verify", json={"message": message, "signature": "0x" + "11" * 65}).status_code == 401
    r = sign_in(c)  # even a good attempt waits now
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate-limited"
    form = c.post("/auth/verify", data={"message": "x", "signature": "y"})
    assert form.status_code == 429 and "too many" in form.text
    # nonces are limited as well
    n = make_client(world, nonce_limit=2)
    assert [n.get("/auth/nonce").status_code for _ in range(3)] == [200, 200, 429]


def test_sessions_expire_and_end_at_logout(world: World):
    c = logged_in(world, session_ttl=1)
    assert c.get("/api/status").status_code == 200
    time.sleep(1.3)
    assert c.get("/api/status").status_code == 401
    assert c.get("/").status_code == 303
    c = logged_in(world)
    assert c.get("/").status_code == 200
    r = c.post("/auth/logout")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert c.get("/api/status").status_code == 401
    forged = make_client(world)
    forged.cookies.set(COOKIE, "made-up-session-id")
    assert forged.get("/api/status").status_code == 401


def test_a_revoked_auditor_loses_the_session(world: World, snapshot):
    c = logged_in(world, role_recheck=0)
    assert c.get("/api/status").status_code == 200
    admin = Ledger(world.deployment, account=Account.from_key(devnet_key(0)))
    role = admin.call("Consortium", "AUDITOR_ROLE")
    admin.transact("Consortium", "revokeRole", role, AUDITOR)
    assert c.get("/api/status").status_code == 401
    assert sign_in(c).status_code == 403


# ---------------------------------------------------------------------------- every route needs a session

SAMPLES = {
    "account": "0x" + "ab" * 20,
    "dataset_id": "1",
    "task_id": "1",
    "tx_hash": "0x" + "cd" * 32,
}


def _sample_path(path: str) -> str:
    for name, value in SAMPLES.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, path
    return path


def test_every_page_and_api_route_needs_a_session_and_the_dashboard_is_read_only(world: World, client: TestClient):
    public = {"/login", "/auth/nonce", "/auth/verify", "/auth/logout"}
    routes = api_routes(client.app)
    assert len(routes) >= 25
    checked = 0
    for route in routes:
        if route.path in public:
            continue
        assert route.methods <= {"GET", "HEAD"}, f"{route.path} changes state: {route.methods}"
        path = _sample_path(route.path)
        r = client.get(path)
        if path.startswith("/api/"):
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "no-session"
        else:
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/login?next=")
        checked += 1
    assert checked >= 25
    state_changing = {(r.path, m) for r in routes for m in r.methods if m not in ("GET", "HEAD")}
    assert state_changing == {("/auth/verify", "POST"), ("/auth/logout", "POST")}
    for path in ("/api/openapi.json", "/nowhere", "/docs", "/static/../app.py"):
        assert client.get(path).status_code in (303, 401, 404), path
    assert client.get("/api/openapi.json").status_code == 401
    # public: the login page and the static files (Chart.js served locally)
    assert client.get("/login").status_code == 200
    js = client.get("/static/vendor/chart.umd.js")
    assert js.status_code == 200 and "Chart.js v4" in js.text[:200]
    # signed in: nothing can be written
    c = logged_in(world)
    for method in ("post", "put", "delete", "patch"):
        assert getattr(c, method)("/tasks").status_code == 405
        assert getattr(c, method)("/api/tasks").status_code == 405
    assert c.get("/api/openapi.json").status_code == 200


def test_the_openapi_schema_documents_the_status_a_bad_parameter_gets(world: World):
    c = logged_in(world)
    schema = c.get("/api/openapi.json").json()
    tasks = schema["paths"]["/api/tasks"]["get"]["responses"]
    assert "422" not in tasks and tasks["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    assert all("422" not in op["responses"] for item in schema["paths"].values() for op in item.values())
    served = c.get("/api/tasks", params={"per_page": "many"})
    assert served.status_code == 400 and "per_page" in served.json()["error"]["message"]


# ---------------------------------------------------------------------------- pages


def test_pages_render_the_task_timeline_and_verdict(world: World):
    c = logged_in(world)
    sc = world.sc
    with world.store.read() as s:
        events = s.scalars(
            select(EventRow).where(EventRow.task_id == sc.completed).order_by(EventRow.block_number, EventRow.log_index)
        ).all()
    page = c.get(f"/tasks/{sc.completed}")
    assert page.status_code == 200
    text = page.text
    assert "Timeline: every step recorded on chain" in text
    assert "Task submitted by bank0" in text and "Authorised: every data owner has approved" in text
    assert "Completed: all receipts agree on the result" in text
    assert "signed approval, sent by" in text  # the hospital's relayed EIP-712 approval
    for e in events:
        assert f'href="/tx/{e.tx_hash}"' in text
        assert f"#{e.block_number:,}" in text
    assert "Independent re-verification" in text and ">Verified<" in text
    assert "Every data owner approved" in text and "All receipts agree on the result" in text
    api = c.get(f"/api/tasks/{sc.completed}").json()
    assert [(e["block"], e["tx"]) for e in api["timeline"]] == [(e.block_number, e.tx_hash) for e in events]
    assert api["verdict"]["verdict"] == "pass" and api["status"]["key"] == "completed"
    assert api["progress"] == {"approvals": [3, 3], "started": [3, 3], "receipts": [3, 3], "dropped": [0, 3]}

    disputed = c.get(f"/tasks/{sc.disputed}").text
    assert "Problems found" in disputed and "Disputed" in disputed and "check-fail" in disputed
    assert c.get(f"/api/tasks/{sc.disputed}").json()["verdict"]["failed"] == ["receipts-agree"]
    refused = c.get(f"/tasks/{sc.refused}").text
    assert "refused: The local data did not match its registered fingerprint" in refused

    assert c.get("/tasks/999").status_code == 404 and "no task 999" in c.get("/tasks/999").text
    assert c.get("/tasks/abc").status_code == 400
    assert c.get("/api/tasks/999").status_code == 404
    assert c.get("/api/tasks/-1").status_code in (400, 422)


def test_every_page_renders_for_a_regulator(world: World):
    c = logged_in(world)
    sc = world.sc
    bank = sc.c.orgs[0].address
    with world.store.read() as s:
        a_tx = s.scalars(select(TaskRow.submit_tx).where(TaskRow.id == sc.completed)).one()
    pages = {
        "/": ["Tasks over time", "Refusals over time", "Anomalies over time", 'id="chart-tasks"', "chart.umd.js"],
        "/orgs": ["bank0", "telecom1", "hospital2", "Active"],
        f"/orgs/{bank}": ["Membership history", "Admitted to the consortium", "Log anchors on chain"],
        f"/orgs/{sc.c.orgs[2].address}": ["Suspended", "Reinstated"],
        "/datasets": ["Uses vs quota", "Privacy budget"],
        f"/datasets/{sc.c.datasets[bank]}": [
            "Who used it, when, and for what",
            f"Task {sc.completed}",
            "Fingerprint versions",
        ],
        f"/datasets/{sc.c.datasets[sc.c.orgs[1].address]}": ["v2", "Data changed while its policy was live"],
        "/algorithms": ["Joint statistics", "Withdrawn", "Private set intersection"],
        "/tasks": [f"Task {sc.cancelled}", "Cancelled", "Refused", "Disputed"],
        "/tasks?status=refused": [f"Task {sc.refused}"],
        "/anomalies": ["Task refused by a participant", "Participants&#39; results disagree"],
        "/anomalies?kind=refusal&severity=high": ["Task refused by a participant", f'href="/tasks/{sc.refused}"'],
        f"/tx/{a_tx}": ["Task submitted by bank0", "TaskSubmitted"],
        "/reports": ["Show report", 'type="date"'],
    }
    for path, needles in pages.items():
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        for needle in needles:
            assert needle in r.text, (path, needle)
    only_refused = c.get("/tasks?status=refused").text
    assert f"Task {sc.completed}<" not in only_refused
    refusals = c.get("/api/anomalies", params={"kind": "refusal"}).json()
    assert [a["kind"] for a in refusals["items"]] == ["refusal"] and refusals["total"] == 1
    assert c.get("/tasks?status=nonsense").status_code == 400
    assert c.get("/anomalies?severity=nonsense").status_code == 400
    assert c.get("/anomalies?org=not-an-address").status_code == 400
    overview = c.get("/api/overview").json()
    assert overview["counts"]["tasks"] == 4 and overview["counts"]["refusals"] == 1
    assert sum(sum(d["data"]) for d in overview["charts"]["tasks"]["datasets"]) == 4
    status = c.get("/api/status").json()
    assert status["indexed_block"] is not None and status["head_block"] >= status["indexed_block"]


def test_chain_supplied_text_is_escaped(world: World, snapshot, tmp_path):
    admin = Ledger(world.deployment, account=Account.from_key(devnet_key(0)))
    evil = Account.from_key(devnet_key(8)).address
    admin.admit(evil, "<img src=x onerror=alert(1)>", h("k"), "javascript:alert(1)")
    st = Store(tmp_path / "evil.sqlite")
    try:
        indexer(world.deployment, st).run_once()
        app = create_dashboard_app(st, world.ledger(), domain=DOMAIN)
        c = TestClient(app, follow_redirects=False)
        assert sign_in(c).status_code == 200
        for path in ("/orgs", f"/orgs/{evil}", "/"):
            text = c.get(path).text
            assert "<img src=x" not in text, path
            assert "&lt;img src=x onerror=alert(1)&gt;" in text, path
    finally:
        st.dispose()


def test_the_dashboard_follows_the_chain_live(world: World, snapshot, tmp_path):
    """run_indexer: a new task appears, with its progress, without anyone re-indexing."""
    st = Store(tmp_path / "live.sqlite")
    try:
        app = create_dashboard_app(st, world.ledger(), domain=DOMAIN, run_indexer=True, poll_interval=0.2)
        with TestClient(app, follow_redirects=False) as c:
            assert sign_in(c).status_code == 200
            deadline = time.time() + 60
            while c.get("/api/status").json()["indexed_block"] is None and time.time() < deadline:
                time.sleep(0.2)
            before = c.get("/api/overview").json()["counts"]["tasks"]
            sc = world.sc
            task_id, _ = sc.c.orgs[0].submit_task(request_for(sc.c, orgs=[0, 1]))
            sc.c.orgs[0].approve(task_id, sc.c.orgs[0].request_hash(task_id))

            def approvals() -> list[int] | None:
                r = c.get(f"/api/tasks/{task_id}")
                return r.json()["progress"]["approvals"] if r.status_code == 200 else None

            while approvals() != [1, 2] and time.time() < deadline:
                time.sleep(0.2)
            x = c.get(f"/api/tasks/{task_id}").json()
            assert x["status"]["key"] == "pending" and x["progress"]["approvals"] == [1, 2]
            assert c.get("/api/overview").json()["counts"]["tasks"] == before + 1
            sc.c.orgs[1].approve(task_id, sc.c.orgs[1].request_hash(task_id))
            sc.c.orgs[0].start(task_id)
            while c.get(f"/api/tasks/{task_id}").json()["status"]["key"] != "running" and time.time() < deadline:
                time.sleep(0.2)
            x = c.get(f"/api/tasks/{task_id}").json()
            assert x["progress"]["started"] == [1, 2] and x["verdict"]["verdict"] == "incomplete"
            page = c.get(f"/tasks/{task_id}").text
            assert "Running" in page and "In progress" in page and "<progress" in page
            # anomalies are detected by the background watcher
            while c.get("/api/status").json()["open_anomalies"] == 0 and time.time() < deadline:
                time.sleep(0.2)
            assert c.get("/api/anomalies").json()["total"] > 0
    finally:
        st.dispose()


# ---------------------------------------------------------------------------- reports


def _period(world: World) -> tuple[int, int]:
    with world.store.read() as s:
        stamps = list(s.scalars(select(TaskRow.submitted_at)))
        st = world.store.index_state()
    assert st is not None
    return min(stamps), int(st.indexed_timestamp or max(stamps))


def test_reports_hold_the_right_tasks(world: World):
    sc = world.sc
    lo, hi = _period(world)
    r = build_report(world.store, lo, hi)
    by_id = {t["task_id"]: t for t in r["tasks"]}
    assert set(by_id) == {sc.completed, sc.refused, sc.cancelled, sc.disputed}
    assert by_id[sc.completed]["status"] == "completed" and by_id[sc.completed]["verdict"] == "pass"
    assert by_id[sc.disputed]["verdict"] == "fail" and by_id[sc.disputed]["failed_checks"] == ["receipts-agree"]
    assert by_id[sc.refused]["status"] == "refused" and by_id[sc.refused]["refusal_reason"] == "fingerprint_mismatch"
    assert by_id[sc.completed]["participant_names"] == ["bank0", "telecom1", "hospital2"]
    assert r["refusals_by_reason"] == [
        {"reason": "fingerprint_mismatch", "reason_code": 4, "count": 1, "tasks": [sc.refused]}
    ]
    assert any(a["kind"] == "refusal" and a["task_id"] == sc.refused for a in r["anomalies"])
    assert any(a["kind"] == "dispute" for a in r["anomalies"])
    usage = {u["dataset_id"]: u for u in r["dataset_usage"]}
    bank_ds = sc.c.datasets[sc.c.orgs[0].address]
    # bank's dataset: used by the completed, refused and disputed tasks (authorised), not the cancelled one
    assert usage[bank_ds]["uses_in_period"] == 3 and usage[bank_ds]["max_uses"] == 10
    assert usage[bank_ds]["epsilon_in_period"] == pytest.approx(0.5 + 0.5 + 0.25)
    orgs = {o["name"]: o for o in r["organisations"]}
    assert orgs["bank0"]["tasks_requested"] == 4 and orgs["telecom1"]["refusals"] == 1
    assert r["summary"]["tasks"] == 4 and r["summary"]["verdicts"]["fail"] >= 1

    hospital = build_report(world.store, lo, hi, org="hospital2")
    assert {t["task_id"] for t in hospital["tasks"]} == {sc.completed, sc.disputed}
    assert [o["name"] for o in hospital["organisations"]] == ["hospital2"]
    telecom_ds = sc.c.datasets[sc.c.orgs[1].address]
    by_ds = build_report(world.store, lo, hi, dataset=telecom_ds)
    assert {t["task_id"] for t in by_ds["tasks"]} == {sc.completed, sc.refused, sc.cancelled, sc.disputed}
    assert [u["dataset_id"] for u in by_ds["dataset_usage"]] == [telecom_ds]
    empty = build_report(world.store, lo - 10_000, lo - 1)
    assert empty["tasks"] == [] and empty["summary"]["tasks"] == 0

    sections = read_csv_sections(report_csv(r))
    assert sorted(int(row["task_id"]) for row in sections["Tasks"]) == sorted(by_id)
    assert {row["status"] for row in sections["Tasks"]} == {"completed", "refused", "cancelled", "disputed"}
    assert any(row["kind"] == "refusal" for row in sections["Anomalies"])
    assert sections["Refusals by reason"][0]["reason"] == "fingerprint_mismatch"
    html = report_html(r)
    assert html.startswith("<!doctype html>") and "Refusals by reason" in html
    for task_id in by_id:
        assert f"#{task_id}<" in html
    with pytest.raises(ValueError, match="no organisation"):
        build_report(world.store, lo, hi, org="nobody")
    # hi may equal lo when the devnet mined every task in the same second, so the inverted period is built explicitly
    with pytest.raises(ValueError, match="before it starts"):
        build_report(world.store, lo + 1, lo)


def test_reports_from_the_dashboard(world: World):
    c = logged_in(world)
    lo, hi = _period(world)
    q = {"from": iso(lo - 1), "to": iso(hi + 1)}
    page = c.get("/reports", params=q)
    assert page.status_code == 200 and "Download CSV" in page.text and f"#{world.sc.refused}<" in page.text
    csv_r = c.get("/reports/download", params={**q, "format": "csv"})
    assert csv_r.status_code == 200 and csv_r.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_r.headers["content-disposition"]
    rows = read_csv_sections(csv_r.text)["Tasks"]
    assert len(rows) == 4
    js = c.get("/reports/download", params={**q, "format": "json"}).json()
    assert js["summary"]["tasks"] == 4
    assert c.get("/api/report", params=q).json()["summary"]["tasks"] == 4
    html = c.get("/reports/download", params={**q, "format": "html"})
    assert html.status_code == 200 and "<!doctype html>" in html.text
    assert c.get("/reports/download", params={**q, "format": "pdf"}).status_code == 400
    assert c.get("/reports", params={"from": "yesterday", "to": "today"}).status_code == 400


# ---------------------------------------------------------------------------- CLI


def _env(world: World, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCN_")}
    env.update(
        PCN_RUN_DIR=str(tmp_path / "run"),
        PCN_DEPLOYMENT=str(world.deployment.path),
        PCN_AUDITOR_DB=world.url,
        NO_COLOR="1",
        COLUMNS="250",
    )
    return env


def pcn(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PCN), "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def _clean_failure(proc: subprocess.CompletedProcess[str]) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    return out


def test_cli_report_verify_and_anomalies(world: World, tmp_path: Path):
    env = _env(world, tmp_path)
    sc = world.sc
    lo, hi = _period(world)
    proc = pcn("report", "--from", str(lo), "--to", str(hi), "--format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {t["task_id"] for t in report["tasks"]} == {sc.completed, sc.refused, sc.cancelled, sc.disputed}
    out = tmp_path / "r.csv"
    proc = pcn(
        "report", "--from", iso(lo), "--to", iso(hi), "--org", "telecom1", "--format", "csv", "--out", str(out), env=env
    )
    assert proc.returncode == 0, proc.stderr
    rows = read_csv_sections(out.read_text())["Tasks"]
    assert {int(r["task_id"]) for r in rows} == {sc.completed, sc.refused, sc.cancelled, sc.disputed}
    proc = pcn("report", "--from", iso(lo), "--to", iso(hi), "--format", "html", env=env)
    assert proc.returncode == 0 and "<!doctype html>" in proc.stdout
    assert "--format must be one of" in _clean_failure(
        pcn("report", "--from", "1", "--to", "2", "--format", "pdf", env=env)
    )
    assert "not a time" in _clean_failure(pcn("report", "--from", "soon", "--to", "later", env=env))
    assert "no organisation" in _clean_failure(pcn("report", "--from", str(lo), "--to", str(hi), "--org", "x", env=env))

    proc = pcn("verify", str(sc.completed), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "pass"
    proc = pcn("verify", str(sc.completed), env=env)
    assert proc.returncode == 0 and "Verified" in proc.stdout and "Every data owner approved" in proc.stdout
    proc = pcn("verify", str(sc.disputed), env=env)
    assert "Problems found" in _clean_failure(proc)
    out = _clean_failure(pcn("verify", "999", env=env))
    assert "TaskNotIndexed" in out and "task 999" in out
    out = _clean_failure(pcn("verify", "999", "--json", env=env))
    assert json.loads(out)["error"]["name"] == "TaskNotIndexed"
    empty = {**env, "PCN_AUDITOR_DB": f"sqlite:///{tmp_path / 'empty.sqlite'}"}
    assert "indexed nothing yet" in _clean_failure(pcn("verify", "1", env=empty))
    assert "no database driver for nope" in _clean_failure(pcn("verify", "1", "--store", "nope://", env=env))

    proc = pcn("anomalies", "--json", "--kind", "refusal", env=env)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert [a["task_id"] for a in found] == [sc.refused]
    proc = pcn("anomalies", "--severity", "high", env=env)
    assert proc.returncode == 0 and "Task refused by a participant" in proc.stdout


def test_cli_verify_log(world: World, deployment, snapshot, tmp_path: Path):
    """A newcomer's faithful log agrees with the chain; an edited entry is located; errors are clean."""
    sc = world.sc
    bank = sc.c.orgs[0]
    newcomer = Ledger(deployment, account=Account.from_key(devnet_key(8)))
    sc.c.admin.admit(newcomer.address, "newcomer", h("x25519-new"), "http://127.0.0.1:9200")
    expiry = bank.block_timestamp() + 86400
    ds_new, _ = newcomer.register_dataset(
        Fingerprint(h("root-new"), h("schema"), h("meta-new"), 10),
        PolicyLimits(5, expiry, epsilon_to_fixed(5)),
        PolicyGrants([sc.c.algorithm], [bank.address], [bank.address]),
    )
    req = request_for(sc.c, orgs=[0])
    req = type(req)(
        req.algorithm_hash,
        [sc.c.datasets[bank.address], ds_new],
        [bank.address, newcomer.address],
        req.params_hash,
        bank.address,
        req.deadline,
        req.epsilon,
    )
    task_id, _ = bank.submit_task(req)
    bank.approve(task_id, bank.request_hash(task_id))
    newcomer.approve(task_id, newcomer.request_hash(task_id))
    log = ActionLog(tmp_path / "newcomer.jsonl")
    log.append("queued", task_id, block=1)
    bank.start(task_id)
    log.append("start", task_id, tx=newcomer.start(task_id).tx_hash, block=1)
    bank.submit_receipt(task_id, good_receipt(sc.c, 0, h("r")))
    receipt = good_receipt(sc.c, 0, h("r"))
    log.append("receipt", task_id, tx=newcomer.submit_receipt(task_id, receipt).tx_hash, result_hash=h("r").hex())
    newcomer.anchor_log(*log.head())
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    env = {**_env(world, tmp_path), "PCN_AUDITOR_DB": url}
    proc = pcn("index", "--confirmations", "0", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["events"] > 0

    proc = pcn("verify-log", str(log.path), "--org", "newcomer", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "agrees with the chain" in proc.stdout
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    lines[1]["data"] = {**lines[1]["data"], "block": 2}  # edit the start entry
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
    out = _clean_failure(pcn("verify-log", str(edited), "--org", newcomer.address, env=env))
    assert "disagrees with the chain" in out and "Entry edited" in out
    proc = pcn("verify-log", str(edited), "--org", newcomer.address, "--json", env=env)
    assert proc.returncode == 1 and json.loads(proc.stdout)["first_bad_seq"] == 2
    # the failed check is now an anomaly
    proc = pcn("anomalies", "--kind", "log-mismatch", "--json", env=env)
    assert [a["org"] for a in json.loads(proc.stdout)] == [newcomer.address]
    assert "no organisation named" in _clean_failure(pcn("verify-log", str(log.path), "--org", "ghost", env=env))
    assert "is not a file" in _clean_failure(pcn("verify-log", str(tmp_path / "nope"), "--org", "newcomer", env=env))


def test_cli_sign_in_helpers_sign_what_the_dashboard_accepts(world: World, tmp_path: Path):
    env = _env(world, tmp_path)
    c = make_client(world)
    nonce = c.get("/auth/nonce").json()["nonce"]
    key_file = tmp_path / "auditor.key"
    key_file.write_text(AUDITOR_KEY + "\n")
    proc = pcn(
        "sign-in-message",
        "--address",
        AUDITOR.lower(),
        "--domain",
        DOMAIN,
        "--chain-id",
        str(world.deployment.chain_id),
        "--nonce",
        nonce,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout.rstrip("\n")
    assert parse_siwe(message).nonce == nonce
    msg_file = tmp_path / "message.txt"
    msg_file.write_text(message)
    proc = pcn("sign", "--key-file", str(key_file), "--message-file", str(msg_file), env=env)
    assert proc.returncode == 0, proc.stderr
    signature = proc.stdout.strip()
    assert c.post("/auth/verify", json={"message": message, "signature": signature}).status_code == 200
    # from standard input, and refusing a key that is not the message's account
    proc = pcn("sign", "--key-file", str(key_file), env=env, stdin=message)
    assert proc.returncode == 0 and proc.stdout.strip() == signature
    other = tmp_path / "other.key"
    other.write_text(devnet_key(3))
    assert "the message is for" in _clean_failure(
        pcn("sign", "--key-file", str(other), "--message-file", str(msg_file), env=env)
    )
    assert "SiweError" in _clean_failure(pcn("sign", "--key-file", str(key_file), env=env, stdin="hi"))
    assert "--domain" in _clean_failure(pcn("sign-in-message", "--address", AUDITOR, env=env))


# ---------------------------------------------------------------------------- both databases


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield from store_factory(request, tmp_path)


def test_every_route_answers_the_same_on_sqlite_and_postgresql(world: World, stores: StoreFactory):
    """Each GET route with real ids answers 200, and the JSON equals what the module's SQLite store gives."""
    st = stores.store()
    indexer(world.deployment, st).run_once()
    detect_and_record(st)
    sc = world.sc
    with st.read() as s:
        tx = s.scalars(select(TaskRow.submit_tx).where(TaskRow.id == sc.refused)).one()
    real = {
        "account": sc.c.orgs[1].address,
        "dataset_id": str(sc.c.datasets[sc.c.orgs[1].address]),
        "task_id": str(sc.disputed),
        "tx_hash": tx,
    }
    lo, hi = _period(world)
    here = TestClient(create_dashboard_app(st, world.ledger(), domain=DOMAIN), follow_redirects=False)
    reference = logged_in(world)
    assert sign_in(here).status_code == 200
    for route in api_routes(here.app):
        if "GET" not in route.methods or route.path.startswith(("/auth/", "/login")):
            continue
        path = route.path
        for name, value in real.items():
            path = path.replace("{" + name + "}", value)
        params = {"from": str(lo), "to": str(hi)} if "report" in path else {}
        r = here.get(path, params=params)
        assert r.status_code == 200, (stores.backend, path, r.text[:300])
        if path.startswith("/api/") and path not in ("/api/status", "/api/session", "/api/openapi.json"):
            mine, theirs = r.json(), reference.get(path, params=params).json()
            if "report" in path:
                for doc in (mine, theirs):
                    doc.pop("generated_at")
            if path == "/api/anomalies" or path.startswith(("/api/orgs/", "/api/datasets/", "/api/tasks/")):
                for doc in (mine, theirs):  # anomaly bookkeeping times are wall-clock
                    for a in doc.get("items", doc.get("anomalies", [])):
                        a.pop("first_seen"), a.pop("last_seen")
            if path == "/api/overview":
                for doc in (mine, theirs):
                    for a in doc["recent_anomalies"]:
                        a.pop("first_seen"), a.pop("last_seen")
            assert mine == theirs, (stores.backend, path)


def test_cli_serve_runs_the_dashboard_and_follows_the_chain(world: World, tmp_path: Path):
    from tests.conftest import free_port

    port = free_port()
    env = {**_env(world, tmp_path), "PCN_AUDITOR_DB": f"sqlite:///{tmp_path / 'served.sqlite'}"}
    proc = subprocess.Popen(
        [str(PCN), "audit", "serve", "--port", str(port), "--session-ttl", "10m"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import httpx

        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/login", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, "the dashboard did not start"
            time.sleep(0.3)
        with httpx.Client(base_url=base, follow_redirects=False) as http:
            assert http.get("/api/status").status_code == 401
            issued = http.get("/auth/nonce", params={"address": AUDITOR}).json()
            assert issued["domain"] == f"127.0.0.1:{port}"
            message = issued["message"]
            r = http.post("/auth/verify", json={"message": message, "signature": sign_message(message, AUDITOR_KEY)})
            assert r.status_code == 200, r.text
            while http.get("/api/overview").json()["counts"]["tasks"] < 4 and time.time() < deadline:
                time.sleep(0.3)  # the live indexer catches up with the chain
            assert http.get("/api/overview").json()["counts"]["tasks"] == 4
            assert http.get(f"/tasks/{world.sc.completed}").status_code == 200
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "pcn audit dashboard: http://127.0.0.1:" in out
    assert "Traceback" not in out, out
    # a store that indexes another chain is refused with a clean error
    other = Store(tmp_path / "served.sqlite")
    try:
        with other.write() as s:
            from pcn.auditor.store import IndexState

            s.get(IndexState, "main").chain_id = 1
    finally:
        other.dispose()
    out = _clean_failure(pcn("serve", "--port", str(free_port()), env=env))
    assert "indexes chain 1" in out


def _signed_in_message(auth: Authenticator, key: str) -> tuple[str, str]:
    nonce, _ = auth.nonces.issue()
    now = time.time()
    address = Account.from_key(key).address
    text = siwe_message(DOMAIN, address, f"http://{DOMAIN}/login", auth.chain_id, nonce, now - 1, now + 300)
    return text, sign_message(text, key)


def test_a_chain_outage_during_sign_in_is_a_503_and_a_bug_is_not_hidden_as_one():
    key = devnet_key(5)

    def chain_down(address: str) -> bool:
        raise ChainUnavailable("cannot reach the chain")

    auth = Authenticator(31337, chain_down, DOMAIN, session_ttl=60)
    with pytest.raises(AuthError) as err:
        auth.verify(*_signed_in_message(auth, key))
    assert (err.value.status, err.value.code) == (503, "chain-unavailable")

    def broken(address: str) -> bool:
        raise KeyError("a bug in the role check")

    auth = Authenticator(31337, broken, DOMAIN, session_ttl=60)
    with pytest.raises(KeyError):  # surfaces as a 500 with its traceback, not as "chain down"
        auth.verify(*_signed_in_message(auth, key))
