"""schemathesis against the dashboard's OpenAPI schema: generated requests to every API
route, signed in as a regulator, never produce a server error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings

from pcn.auditor.web.app import create_dashboard_app
from tests.conftest import free_port
from tests.test_auditor_web import AUDITOR_KEY, World, populated, sign_message

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def served(devnet, deployment, tmp_path_factory) -> Iterator[tuple[str, requests.Session, dict]]:
    with populated(devnet, deployment, tmp_path_factory.mktemp("auditor-schema")) as world:
        yield from _serve(world)


def _serve(world: World) -> Iterator[tuple[str, requests.Session, dict]]:
    from eth_account import Account

    port = free_port()
    domain = f"127.0.0.1:{port}"
    app = create_dashboard_app(world.store, world.ledger(), domain=domain)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{domain}"
    # uvicorn says when its lifespan has run and its socket listens; polling /login instead
    # raced a busy machine (a 1 s read timeout escaped the loop that only caught refusals)
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    session = requests.Session()
    address = Account.from_key(AUDITOR_KEY).address
    message = session.get(base + "/auth/nonce", params={"address": address}, timeout=5).json()["message"]
    r = session.post(
        base + "/auth/verify", json={"message": message, "signature": sign_message(message, AUDITOR_KEY)}, timeout=10
    )
    assert r.status_code == 200, r.text
    raw = session.get(base + "/api/openapi.json", timeout=10).json()
    yield base, session, raw
    server.should_exit = True
    thread.join(10)


def test_no_generated_request_makes_a_server_error(served) -> None:
    base, session, raw = served
    schema = schemathesis.openapi.from_dict(raw)
    operations = [op.ok() for op in schema.get_all_operations()]
    api = [op for op in operations if op.path.startswith("/api/")]
    assert len(api) >= 8, [op.path for op in operations]
    failures: list[str] = []
    for op in api:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def run(case) -> None:
            response = case.call(base_url=base, session=session)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

        run()
    assert not failures, failures
