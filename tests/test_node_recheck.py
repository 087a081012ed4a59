"""#13.10: checks do not happen only once. A node verifies a task before it starts; while the
task runs, an owner may withdraw its policy grant, the consortium may suspend the recipient
or deprecate the algorithm. Each node re-checks those on chain every `recheck_every` seconds
and before each delivery (the receiver's status, cached a few seconds), and stops with an
on-chain refusal instead of sending more of its data."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pcn.chain.types import ParticipantState, RefusalReason, TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.devnet.localnet import Org
from pcn.runtime.actionlog import Entry
from pcn.runtime.operations import submit_task
from tests.nodes import Network, approve_all, breast_cancer_split, network_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("recheck-net")
    yield from network_fixture(root, deployment, ["bank", "telecom"], rows=100, message_timeout=60.0)
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


@pytest.fixture(scope="module")
def datasets(net: Network) -> tuple[int, int]:
    g, h, *_ = breast_cancer_split(net, "bank", "telecom")
    return g, h


def _long_training(net: Network, datasets: tuple[int, int]) -> int:
    guest = net.by_name("bank")
    params = {"label_column": "label", "epochs": 400, "batch_size": 64}
    sub = submit_task(guest.ledger, algorithm="hetero-lr", dataset_ids=list(datasets), params=params, recipient="bank")
    approve_all(net, sub.task_id)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        phases = [o.progress(sub.task_id).get("phase") for o in net.orgs]
        if all(p in ("running", "waiting") for p in phases):
            return sub.task_id
        assert not net.admin.task(sub.task_id).status.is_final, net.admin.task(sub.task_id)
        time.sleep(0.1)
    pytest.fail(f"the training never got running: {[o.progress(sub.task_id) for o in net.orgs]}")


def _logged_refusals(org: Org, task_id: int) -> list[Entry]:
    """The node's refuse entries; the node writes one after its refusal transaction is mined."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in org.ctx.log.entries() if e.task_id == task_id and e.action == "refuse"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_an_owner_withdrawing_its_policy_grant_mid_task_stops_its_node(net: Network, datasets: tuple[int, int]) -> None:
    telecom = net.by_name("telecom")
    task_id = _long_training(net, datasets)
    algorithm = net.admin.task(task_id).algorithm_hash
    telecom.ledger.set_algorithm_allowed(datasets[1], algorithm, False)
    try:
        assert net.wait_final(task_id, timeout=120) is TaskStatus.REFUSED
    finally:
        telecom.ledger.set_algorithm_allowed(datasets[1], algorithm, True)
    task = net.admin.task(task_id)
    assert task.refusal_reason is RefusalReason.ALGORITHM_NOT_APPROVED
    # every node re-checks every input's policy, so whichever re-checks first refuses
    refusers = [o for o in net.orgs if net.admin.participant_state(task_id, o.address) is ParticipantState.REFUSED]
    assert refusers
    for org in refusers:
        refusals = _logged_refusals(org, task_id)
        assert len(refusals) == 1 and "does not allow this algorithm" in refusals[0].data["detail"], org.name
    assert not any(net.admin.participant_state(task_id, o.address) is ParticipantState.RECEIPTED for o in net.orgs)


def test_a_recipient_suspended_mid_task_gets_nothing_more(net: Network, datasets: tuple[int, int]) -> None:
    bank = net.by_name("bank")
    task_id = _long_training(net, datasets)
    net.admin.suspend(bank.address)
    try:
        assert net.wait_final(task_id, timeout=120) is TaskStatus.REFUSED
    finally:
        net.admin.reinstate(bank.address)
    assert net.admin.task(task_id).refusal_reason is RefusalReason.PEER_NOT_ACTIVE
    telecom = net.by_name("telecom")
    assert net.admin.participant_state(task_id, telecom.address) is ParticipantState.REFUSED
    refusals = _logged_refusals(telecom, task_id)
    assert len(refusals) == 1 and "active organisation" in refusals[0].data["detail"]
