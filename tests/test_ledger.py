"""The ledger client's error types on a broken RPC endpoint, and its readers pinned to a block."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from eth_account import Account

from pcn.chain.deployment import ContractInfo, Deployment
from pcn.chain.errors import ChainError, ChainUnavailable
from pcn.chain.ledger import Ledger
from pcn.chain.types import Fingerprint, OrgStatus, ParticipantState, RefusalReason, TaskRules, TaskStatus
from pcn.devnet.deploy import devnet_key
from pcn.runtime.verify import verify_task
from tests.conftest import free_port
from tests.helpers import build_consortium, h, request_for

# Just enough of the TaskManager for a read and a transaction: nothing here reaches a chain.
_TASK_MANAGER_ABI = [
    {
        "type": "function",
        "name": "taskCount",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint256"}],
        "stateMutability": "view",
    },
    {
        "type": "function",
        "name": "cancel",
        "inputs": [{"name": "taskId", "type": "uint256"}],
        "outputs": [],
        "stateMutability": "nonpayable",
    },
]


def _ledger_at(rpc_url: str) -> Ledger:
    address = "0x" + "11" * 20
    deployment = Deployment(
        chain_id=31337,
        rpc_url=rpc_url,
        deployer=address,
        deploy_block=0,
        compiler_version="",
        source_hash="",
        contracts={"TaskManager": ContractInfo("TaskManager", address, _TASK_MANAGER_ABI, 0, "")},
        path=Path("/nonexistent/deployment.json"),  # never saved
    )
    return Ledger(deployment, account=Account.from_key(devnet_key(0)))


@pytest.fixture
def rpc_answering() -> Iterator[Callable[[int, bytes], str]]:
    """Start a tiny HTTP server that answers every request with one fixed status and body."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, body: bytes) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                """Quiet: the tests read the client's errors, not the server's access log."""

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _assert_unavailable(ledger: Ledger) -> None:
    for attempt in (ledger.task_count, ledger.check_connection, lambda: ledger.cancel(1)):
        with pytest.raises(ChainUnavailable) as err:
            attempt()
        assert ledger.rpc_url in str(err.value)


def test_a_closed_port_is_chain_unavailable_for_reads_checks_and_transactions():
    _assert_unavailable(_ledger_at(f"http://127.0.0.1:{free_port()}"))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, b"<html>Bad Gateway</html>"),
        (200, b"<html>a captive portal</html>"),  # not JSON
        (200, b"\xff\xfe\x00"),  # not even text
        (200, b'{"result": "0x1"}'),  # JSON, but not a JSON-RPC reply
        (200, b"[]"),
    ],
)
def test_a_failing_or_garbled_rpc_is_chain_unavailable(rpc_answering, status: int, body: bytes):
    _assert_unavailable(_ledger_at(rpc_answering(status, body)))


def test_a_refusing_endpoint_or_unusable_url_is_a_chain_error_that_waiting_will_not_fix(rpc_answering):
    for url in (rpc_answering(404, b"not found"), "localhost:8545"):
        with pytest.raises(ChainError) as err:
            _ledger_at(url).task_count()
        assert not isinstance(err.value, ChainUnavailable)
        assert url in str(err.value)


def test_typed_readers_return_the_state_as_of_the_block_asked(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=3)
    bank, telecom, hospital = c.orgs
    bank_ds = c.datasets[bank.address]
    task_id, _ = bank.submit_task(request_for(c))
    before = bank.w3.eth.block_number

    bank.approve(task_id, bank.request_hash(task_id))
    telecom.approve(task_id, telecom.request_hash(task_id))
    hospital.approve(task_id, hospital.request_hash(task_id))
    bank.start(task_id)
    bank.set_requester_allowed(bank_ds, telecom.address, False)
    bank.set_task_rules(bank_ds, TaskRules(max_keys=5))
    bank.publish_version(bank_ds, Fingerprint(h("root-v2"), h("schema"), h("meta-v2"), 1001))
    c.admin.suspend(hospital.address)
    c.admin.set_dropout_silence(120)
    c.orgs[0].deprecate_algorithm(c.algorithm)

    at = {"block": before}
    assert bank.task(task_id, **at).status is TaskStatus.PENDING
    assert bank.task(task_id).status is TaskStatus.RUNNING
    assert not any(bank.task_approvers(task_id, **at).values())
    assert all(bank.task_approvers(task_id).values())
    assert bank.participant_state(task_id, bank.address, **at) is ParticipantState.INVITED
    assert bank.participant_state(task_id, bank.address) is ParticipantState.STARTED
    assert bank.is_allowed(bank_ds, requester=telecom.address, **at)
    assert not bank.is_allowed(bank_ds, requester=telecom.address)
    assert bank.task_rules(bank_ds, **at) == TaskRules()
    assert bank.task_rules(bank_ds).max_keys == 5
    assert bank.dataset(bank_ds, **at).version == 1 and bank.dataset(bank_ds).version == 2
    assert bank.dataset(bank_ds, **at).uses == 0 and bank.dataset(bank_ds).uses == 1
    assert bank.fingerprint(bank_ds, **at).merkle_root == h("root-0")  # the version current then
    assert bank.fingerprint(bank_ds).merkle_root == h("root-v2")
    assert bank.is_active(hospital.address, **at) and not bank.is_active(hospital.address)
    assert bank.organisation(hospital.address, **at).status is OrgStatus.ACTIVE
    assert bank.organisation(hospital.address).status is OrgStatus.SUSPENDED
    assert bank.dropout_silence(**at) == 60 and bank.dropout_silence() == 120
    assert not bank.algorithm(c.algorithm, **at).deprecated and bank.algorithm(c.algorithm).deprecated
    assert bank.owner_of(bank_ds, **at) == bank.address
    assert bank.task_count(block=before - 1) == 0 and bank.task_count(**at) == 1


def test_verify_task_judges_the_chain_as_of_its_pinned_block(deployment, snapshot):
    # An algorithm kind this node has no code for: verification stops there, before any data check.
    c = build_consortium(deployment, n_orgs=3, kind="not-built-in")
    bank, telecom = c.orgs[:2]
    task_id, _ = bank.submit_task(request_for(c))
    for org in c.orgs:
        org.approve(task_id, org.request_hash(task_id))
    authorised = bank.w3.eth.block_number
    c.admin.suspend(telecom.address)

    no_store = None  # never reached: both verdicts come before the data checks
    pinned = verify_task(bank, task_id, bank.address, no_store, lambda *_: None, block=authorised)
    assert pinned.block == authorised
    assert pinned.reason is RefusalReason.ALGORITHM_HASH_MISMATCH, pinned.checks  # every peer was active then
    assert ("every peer admitted and active", "ok") in pinned.checks
    latest = verify_task(bank, task_id, bank.address, no_store, lambda *_: None)
    assert latest.reason is RefusalReason.PEER_NOT_ACTIVE and telecom.address in latest.detail
