"""The auditor over a live network of real nodes: it indexes what the nodes did (with a
restart mid-index), independently re-verifies their tasks, checks each node's exported
local log against its on-chain anchors and actions, and flags the refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pcn.auditor.anomalies import detect
from pcn.auditor.indexer import Indexer
from pcn.auditor.logcheck import verify_node_log
from pcn.auditor.store import Store, table_contents
from pcn.auditor.verify import verify_task
from pcn.chain.types import RefusalReason, TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.runtime.operations import submit_task
from tests.nodes import Network, approve_all, network_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("audit-net")
    yield from network_fixture(root, deployment, ["bank", "telecom", "insurer"], rows=500)
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


def _task(net: Network, params: dict) -> int:
    sub = submit_task(
        net.by_name("bank").ledger,
        algorithm="stats",
        dataset_ids=[o.dataset_id for o in net.orgs],
        params=params,
        recipient="bank",
    )
    approve_all(net, sub.task_id)
    net.wait_final(sub.task_id)
    return sub.task_id


def test_auditor_reverifies_what_real_nodes_did(net: Network, tmp_path: Path) -> None:
    done = _task(net, {"column": "income", "statistics": ["count", "mean"]})
    telecom = net.by_name("telecom")
    assert telecom.data_file is not None
    original = telecom.data_file.read_bytes()
    telecom.data_file.write_bytes(original + b"C999,1.00,north\n")  # a row added after registration
    try:
        refused = _task(net, {"column": "income", "statistics": ["count"]})
    finally:
        telecom.data_file.write_bytes(original)
    assert net.admin.task(done).status is TaskStatus.COMPLETED
    assert net.admin.task(refused).status is TaskStatus.REFUSED
    rpc_call(net.admin.rpc_url, "evm_mine")  # one block on top, so the last one is confirmed
    # Every index below reads the chain as of this block: nodes may still anchor their logs
    # after the chain shows the refused task final, and an index run later would see more.
    upto = int(str(rpc_call(net.admin.rpc_url, "eth_blockNumber")), 16) - 1

    # index in small batches, stopping after two: a new indexer resumes from the stored cursor
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    first = Indexer(net.admin, url, confirmations=1, batch_size=5)
    first.run_once(max_batches=2, to_block=upto)
    Indexer(net.admin, url, confirmations=1, batch_size=5).run_once(to_block=upto)
    full = f"sqlite:///{tmp_path / 'audit-full.sqlite'}"
    Indexer(net.admin, full, confirmations=1, batch_size=1000).run_once(to_block=upto)
    assert table_contents(Store(url)) == table_contents(Store(full))  # the restart lost and repeated nothing

    ok = verify_task(url, done)
    assert ok.ok, [c for c in ok.failures]
    bad = verify_task(url, refused)
    assert not bad.ok
    anomalies = detect(url)
    refusal = [a for a in anomalies if a.task_id == refused and a.kind == "refusal"]
    assert refusal and RefusalReason.FINGERPRINT_MISMATCH.name in refusal[0].message + str(refusal[0].detail)

    # every node's own log agrees with the chain; an edited copy does not
    for org in net.orgs:
        exported = tmp_path / f"{org.name}.jsonl"
        org.ctx.log.export(exported)
        verdict = verify_node_log(url, org.address, exported)
        assert verdict.ok, verdict.problems
    edited = tmp_path / "bank-edited.jsonl"
    lines = (tmp_path / "bank.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"action": "', '"action": "x', 1)
    edited.write_text("\n".join(lines) + "\n")
    verdict = verify_node_log(url, net.by_name("bank").address, edited)
    assert not verdict.ok and verdict.first_bad_seq == 3
