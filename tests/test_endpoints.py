"""#13.12 (endpoints): a registered endpoint cannot aim this node at internal addresses, and a
peer's response body never reaches a refusal."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from pcn.runtime.config import OrgConfig, load_config
from pcn.runtime.transport import DeliveryRejected, EndpointRefused, PeerClient, PeerUnreachable, get_checked
from tests.test_messaging import serve

TASK = 7
SECRET = "ami-secret-AKIAIOSFODNN7EXAMPLE"


def strict_client(**kw: object) -> PeerClient:
    return PeerClient(timeout=1, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("https://127.0.0.1:8443", "127.0.0.1 is a loopback address"),
        ("https://10.20.30.40", "10.20.30.40 is a private address"),
        ("https://192.168.1.1:9000/", "private"),
        ("https://[::1]:9000", "loopback"),
        ("https://[::ffff:169.254.169.254]", "169.254.169.254 is a link-local address"),
        ("https://[fe80::1]", "link-local"),
        ("https://0.0.0.0:9000", "unspecified"),
        ("https://224.0.0.1", "multicast"),
        ("https://240.0.0.1", "reserved"),
        ("https://100.64.0.1", "not a globally routable address"),
    ],
)
def test_an_endpoint_at_an_internal_address_is_refused(endpoint: str, reason: str) -> None:
    with strict_client() as client, pytest.raises(EndpointRefused) as e:
        client.deliver(endpoint, TASK, b"envelope", deadline=time.monotonic() + 5)
    assert reason in e.value.reason and "allow_private_endpoints" in e.value.reason
    assert endpoint in str(e.value)


def test_a_name_resolving_to_an_internal_address_is_refused() -> None:
    names = {"meta.attacker.example": ["169.254.169.254"], "mixed.attacker.example": ["93.184.216.34", "10.0.0.1"]}
    with strict_client(resolve=lambda host, _port: names[host]) as client:
        for host, why in (("meta.attacker.example", "link-local"), ("mixed.attacker.example", "10.0.0.1 is a private")):
            with pytest.raises(EndpointRefused) as e:
                client.post_params(f"https://{host}", TASK, b"{}", time.monotonic() + 5)
            assert why in e.value.reason


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("http://peer.example", "scheme 'http' is not allowed"),
        ("ftp://peer.example", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("https://user:pw@peer.example", "credentials"),
        ("https://peer.example:99999", "not a valid URL"),
        ("https:///v1", "no host"),
    ],
)
def test_bad_endpoint_urls_are_refused(endpoint: str, reason: str) -> None:
    with strict_client(resolve=lambda *_: ["93.184.216.34"]) as client, pytest.raises(EndpointRefused) as e:
        client.deliver(endpoint, TASK, b"envelope", deadline=time.monotonic() + 5)
    assert reason in e.value.reason


def recording_app(hits: list[Request]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/tasks/{task_id}/messages")
    def messages(task_id: int, request: Request) -> Response:
        hits.append(request)
        if len(hits) == 1:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        return JSONResponse({"outcome": "new"}, status_code=201)

    return app


def test_loopback_mailbox_is_not_contacted_without_allow_private() -> None:
    hits: list[Request] = []
    with serve(recording_app(hits)) as url:
        with strict_client(allow_http_endpoints=True) as client, pytest.raises(EndpointRefused) as e:
            client.deliver(url, TASK, b"envelope", deadline=time.monotonic() + 5)
        assert "loopback" in e.value.reason and hits == []
        with PeerClient(timeout=1, allow_private_endpoints=True, allow_http_endpoints=True) as client:
            assert client.deliver(url, TASK, b"envelope", deadline=time.monotonic() + 5) == "new"


def test_the_name_is_resolved_once_and_the_checked_ip_is_what_is_contacted() -> None:
    hits: list[Request] = []
    lookups: list[str] = []
    answers = iter([["127.0.0.1"], ["10.66.66.66"]])  # a rebinding resolver: its second answer differs

    def resolve(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    with serve(recording_app(hits)) as url:
        port = url.rsplit(":", 1)[1]
        client = PeerClient(timeout=1, allow_private_endpoints=True, allow_http_endpoints=True, resolve=resolve)
        with client:
            outcome = client.deliver(f"http://mailbox.peer.test:{port}", TASK, b"e", deadline=time.monotonic() + 5)
    assert outcome == "new" and len(hits) == 2  # a retry after the 503, to the same checked IP
    assert lookups == ["mailbox.peer.test"]  # one resolution for the whole delivery
    assert {h.headers["host"] for h in hits} == {f"mailbox.peer.test:{port}"}


def test_a_peers_response_body_never_reaches_the_refusal() -> None:
    app = FastAPI()

    @app.post("/v1/tasks/{task_id}/messages")
    def refuse(task_id: int, request: Request) -> Response:
        kind = request.headers.get("x-test-kind", "")
        if task_id == 1:
            return JSONResponse({"error": "not-participant", "detail": SECRET}, status_code=403)
        if task_id == 2:
            return PlainTextResponse(f"<html><h1>internal admin</h1>{SECRET}</html>", status_code=400)
        if task_id == 3:
            return JSONResponse({"error": f"<b>{SECRET}</b>", "detail": "x"}, status_code=404)
        return PlainTextResponse(SECRET + kind, status_code=500)

    with serve(app) as url, PeerClient(timeout=1, allow_private_endpoints=True, allow_http_endpoints=True) as client:
        seen = []
        for task, code in ((1, "not-participant"), (2, "http-400"), (3, "http-404")):
            with pytest.raises(DeliveryRejected) as e:
                client.deliver(url, task, b"e", deadline=time.monotonic() + 5)
            assert e.value.code == code
            seen.append(str(e.value))
        with pytest.raises(PeerUnreachable) as unreachable:
            client.deliver(url, 4, b"e", deadline=time.monotonic() + 0.5)
        seen.append(str(unreachable.value))
    assert "500 http-500" in seen[-1]
    assert not any(SECRET in s or "internal admin" in s for s in seen)


def test_private_endpoints_are_a_config_setting_off_by_default(tmp_path: Path) -> None:
    cfg = OrgConfig("bank", "http://127.0.0.1:8545", "d.json", "redis://127.0.0.1:6379", "data", "https://pcn.bank")
    assert cfg.allow_private_endpoints is False and cfg.allow_http_endpoints is False
    cfg.allow_private_endpoints = cfg.allow_http_endpoints = True
    loaded = load_config(cfg.save(tmp_path / "node.toml"))
    assert loaded.allow_private_endpoints is True and loaded.allow_http_endpoints is True
    (tmp_path / "bad.toml").write_text(
        cfg.to_toml().replace("allow_http_endpoints = true", 'allow_http_endpoints = "yes"')
    )
    with pytest.raises(ValueError, match="allow_http_endpoints must be true or false"):
        load_config(tmp_path / "bad.toml")


def test_the_progress_query_goes_through_the_same_checks() -> None:
    with pytest.raises(EndpointRefused) as e:
        get_checked("https://169.254.169.254", "/v1/tasks/1/progress", allow_private=False, allow_http=False, timeout=1)
    assert "link-local" in e.value.reason
