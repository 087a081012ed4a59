"""The dashboard in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
never a downloaded browser) against the dashboard served by uvicorn over a populated chain
that the dashboard's own live indexer follows.

A regulator opens the dashboard, is sent to the sign-in page, signs in with the auditor key
(the message is prepared by the page, signed with the key in Python as `pcn audit sign`
would, and pasted), sees the overview with its Chart.js charts (served from /static: no
request leaves 127.0.0.1), watches a new task appear live, opens a task's timeline and
verdict, finds the refusal among the anomalies, and downloads a CSV report. A replayed
message, a non-auditor account and a visit without a session are turned away.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from eth_account import Account
from sqlalchemy import func, select

from pcn.auditor.reports import read_csv_sections
from pcn.auditor.store import AnomalyRow, EventRow, Store
from pcn.auditor.web import create_dashboard_app
from pcn.auditor.web.siwe import sign_message
from pcn.devnet.deploy import devnet_key
from tests.conftest import free_port
from tests.helpers import request_for
from tests.test_auditor_web import AUDITOR, AUDITOR_KEY, World, populated

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and shutil.which(str(CHROMIUM))),
        reason="Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@dataclass
class Served:
    world: World
    base: str
    store: Store
    screenshots: Path


def _wait(predicate, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def served(devnet, deployment, tmp_path_factory) -> Iterator[Served]:
    import uvicorn

    folder = tmp_path_factory.mktemp("auditor-browser")
    with populated(devnet, deployment, folder) as world:
        port = free_port()
        store = Store(folder / "dashboard.sqlite")  # the dashboard indexes the chain itself
        app = create_dashboard_app(
            store, world.ledger(), domain=f"127.0.0.1:{port}", run_indexer=True, poll_interval=0.3
        )
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
        thread.start()
        try:
            _wait(lambda: server.started, 30, "uvicorn to start")
            head = int(world.ledger().w3.eth.block_number)

            def caught_up() -> bool:
                st = store.index_state()
                with store.read() as s:
                    anomalies = s.scalar(select(func.count()).select_from(AnomalyRow))
                return st is not None and (st.indexed_block or 0) >= head and bool(anomalies)

            _wait(caught_up, 90, "the dashboard's indexer and anomaly watcher")
            yield Served(world, f"http://127.0.0.1:{port}", store, folder)
        finally:
            server.should_exit = True
            thread.join(15)
            store.dispose()


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _sign_in_page(page, base: str, key: str) -> str:
    """Fill the sign-in page as a regulator does; return the message that was signed."""
    address = Account.from_key(key).address
    page.fill("#address", address)
    page.click("#prepare")
    page.wait_for_function("document.getElementById('message').value.includes('Nonce:')")
    message = page.input_value("#message")
    page.fill("#signature", sign_message(message, key))  # what `pcn audit sign --key-file` prints
    page.click("#signin")
    page.wait_for_load_state()
    return message


def test_a_regulator_audits_through_the_browser(served: Served, browser) -> None:
    from playwright.sync_api import expect

    base, sc = served.base, served.world.sc
    context = browser.new_context(viewport={"width": 1366, "height": 800}, accept_downloads=True)
    page = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # no session: sent to the sign-in page, which names where to come back to
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
    expect(page.locator("h1")).to_contain_text("regulator sign-in")

    # sign in with the auditor's key
    _sign_in_page(page, base, AUDITOR_KEY)
    expect(page).to_have_url(base + "/")
    expect(page.locator(".who")).to_contain_text("Signed in as")

    # the overview, with its three charts drawn by Chart.js loaded from /static
    page.wait_for_function("window.Chart !== undefined && document.querySelectorAll('canvas[data-ready]').length === 3")
    assert page.evaluate("Chart.version").startswith("4.")
    sizes = page.evaluate("[...document.querySelectorAll('canvas')].map(c => [c.width, c.height])")
    assert len(sizes) == 3 and all(w > 100 and h > 100 for w, h in sizes), sizes
    tasks_tile = page.locator('.tile-n[data-count="Tasks"]')
    expect(tasks_tile).to_have_text("4")
    page.screenshot(path=str(served.screenshots / "overview.png"), full_page=True)

    # live: a new task on chain shows up without a reload
    c = sc.c
    c.orgs[0].submit_task(request_for(c, orgs=[0, 1]))
    expect(tasks_tile).to_have_text("5", timeout=30_000)
    expect(page.locator("#live-note")).to_contain_text("Live")

    # a task's timeline and verdict
    page.click("nav >> text=Tasks")
    page.click(f'a[href="/tasks/{sc.completed}"] >> nth=0')
    expect(page).to_have_url(f"{base}/tasks/{sc.completed}")
    with served.store.read() as s:
        n_events = s.scalar(select(func.count()).select_from(EventRow).where(EventRow.task_id == sc.completed))
    rows = page.locator("table.timeline tbody tr")
    expect(rows).to_have_count(int(n_events))
    expect(rows.first).to_contain_text("Task submitted by bank0")
    expect(rows.last).to_contain_text("Completed: all receipts agree on the result")
    assert re.search(r"0x[0-9a-f]{8}", rows.first.inner_text())  # its transaction hash
    expect(page.locator("#verdict")).to_contain_text("Verified")
    expect(page.locator("table.checks")).to_contain_text("Every data owner approved")
    page.screenshot(path=str(served.screenshots / "task.png"), full_page=True)

    # the refusal among the anomalies, linking to its task
    page.click("nav >> text=Anomalies")
    page.select_option("select[name=kind]", "refusal")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"kind=refusal"))
    anomaly_rows = page.locator("table.anomalies tbody tr")
    expect(anomaly_rows).to_have_count(1)
    expect(anomaly_rows.first).to_contain_text("Task refused by a participant")
    expect(anomaly_rows.first).to_contain_text("the local data did not match its registered fingerprint")
    page.screenshot(path=str(served.screenshots / "anomalies.png"), full_page=True)
    anomaly_rows.first.locator(f'a[href="/tasks/{sc.refused}"]').click()
    expect(page.locator("table.timeline")).to_contain_text("The local data did not match its registered fingerprint")

    # a dataset: who used it, when, for what, against its quota and budget
    page.click("nav >> text=Datasets")
    page.click(f'a[href="/datasets/{sc.c.datasets[sc.c.orgs[1].address]}"]')
    expect(page.locator("body")).to_contain_text("Who used it, when, and for what")
    expect(page.locator("body")).to_contain_text("Data changed while its policy was live")
    page.screenshot(path=str(served.screenshots / "dataset.png"), full_page=True)

    # a CSV report, downloaded, with the right rows
    page.click("nav >> text=Reports")
    with served.store.read() as s:
        first = s.scalar(select(func.min(EventRow.block_timestamp)))
    day = time.strftime("%Y-%m-%d", time.gmtime(first))
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    page.fill("input[name=from]", day)
    page.fill("input[name=to]", today)
    page.click("text=Show report")
    expect(page.locator(".report-preview")).to_contain_text("Refusals by reason")
    with page.expect_download() as info:
        page.click("#download-csv")
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    text = Path(download.path()).read_text(encoding="utf-8")
    sections = read_csv_sections(text)
    ids = {int(r["task_id"]): r for r in sections["Tasks"]}
    assert {sc.completed, sc.refused, sc.cancelled, sc.disputed} <= set(ids) and len(ids) == 5
    assert ids[sc.completed]["verdict"] == "pass" and ids[sc.refused]["status"] == "refused"
    assert next(iter(csv.reader(io.StringIO(text))))[0] == "pcn audit report"
    page.screenshot(path=str(served.screenshots / "report.png"), full_page=True)

    # sign out: the session is gone
    page.click("text=Sign out")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(base + "/anomalies")
    expect(page).to_have_url(re.compile(r"/login\?next="))

    hosts = {urlsplit(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, hosts
    assert any(u.endswith("/static/vendor/chart.umd.js") for u in requests)
    assert not errors, errors
    context.close()


def test_the_browser_refuses_replays_non_auditors_and_visits_without_a_session(served: Served, browser) -> None:
    from playwright.sync_api import expect

    base = served.base
    context = browser.new_context()
    page = context.new_page()

    # no session: every page sends the visitor to the sign-in page; the API says 401
    page.goto(f"{base}/tasks/{served.world.sc.completed}")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Ftasks%2F"))
    assert page.request.get(f"{base}/api/tasks").status == 401

    # a non-auditor account (an admitted organisation) is refused
    page.goto(base + "/login")
    _sign_in_page(page, base, devnet_key(2))
    expect(page.locator("#login-error")).to_contain_text("does not hold the auditor role")
    assert page.request.get(f"{base}/api/session").status == 401

    # a replayed message: it worked once, the second time it is refused
    page.goto(base + "/login")
    message = _sign_in_page(page, base, AUDITOR_KEY)
    expect(page).to_have_url(base + "/")
    replay = browser.new_context()
    other = replay.new_page()
    other.goto(base + "/login")
    other.fill("#message", message)
    other.fill("#signature", sign_message(message, AUDITOR_KEY))
    other.click("#signin")
    expect(other.locator("#login-error")).to_contain_text("already used")
    assert other.request.get(f"{base}/api/session").status == 401
    other.screenshot(path=str(served.screenshots / "refused.png"), full_page=True)
    replay.close()
    context.close()


def test_sign_in_with_a_browser_wallet(served: Served, browser) -> None:
    """An EIP-1193 wallet (window.ethereum, personal_sign): here a shim whose signing is done
    by the auditor's key in Python through Playwright's expose_function."""
    from playwright.sync_api import expect

    base = served.base
    context = browser.new_context()
    signed: list[str] = []

    def wallet_sign(hex_message: str) -> str:
        message = bytes.fromhex(hex_message.removeprefix("0x")).decode("utf-8")
        signed.append(message)
        return sign_message(message, AUDITOR_KEY)

    context.expose_function("pcnTestWalletSign", wallet_sign)
    context.add_init_script(
        "window.ethereum = { request: async ({ method, params }) => {"
        f"  if (method === 'eth_requestAccounts') return ['{AUDITOR.lower()}'];"
        "  if (method === 'personal_sign') return await window.pcnTestWalletSign(params[0]);"
        "  throw new Error('unsupported ' + method); } };"
    )
    page = context.new_page()
    page.goto(base + "/tasks")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Ftasks$"))
    wallet = page.locator("#wallet")
    expect(wallet).to_be_visible()
    wallet.click()
    expect(page).to_have_url(base + "/tasks")
    assert len(signed) == 1 and f"\n{AUDITOR}\n" in signed[0]
    expect(page.locator(".who")).to_contain_text("Signed in as")
    context.close()
