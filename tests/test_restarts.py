"""Infrastructure restarts in the middle of a task, over real nodes on a chain of their own
(restarting the chain must not disturb the rest of the suite):

- the organisations' Redis (broker, inboxes, progress) stopped and started again;
- anvil stopped and restarted from its state file;
- a run message lost between the broker and a worker that was then killed.

Every task still completes, every participant receipts exactly once, the watcher resumes
from its cursor (no task queued twice from one event), and nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcn.chain.deployment import Deployment
from pcn.chain.types import ParticipantState, TaskStatus
from pcn.devnet import anvil
from pcn.devnet.deploy import deploy
from pcn.runtime import services
from pcn.runtime.operations import read_result
from tests.nodes import Network, RedisServer, free_port, network_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, run_dir: Path) -> Iterator[tuple[int, Path, Deployment]]:
    root = tmp_path_factory.mktemp("restart-chain")
    port = free_port()
    state = root / "anvil-state.json"
    st = anvil.up(port=port, state_file=state)
    try:
        yield port, state, deploy(st.rpc_url, out=root / "deployment.json")
    finally:
        anvil.down(port)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, chain: tuple[int, Path, Deployment]) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("restart-net")
    redis = RedisServer(root / "redis", persist=True)
    yield from network_fixture(
        root, chain[2], ["bank", "telecom"], rows=40_000, redis_server=redis, message_timeout=90.0, requeue_after=8.0
    )


def _wait_running(net: Network, task_id: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        phases = [o.ctx.redis.hget(o.ctx.key("progress", task_id), "phase") for o in net.orgs]
        if all(p in (b"running", b"waiting") for p in phases):
            return
        time.sleep(0.02)
    pytest.fail(f"task {task_id} never got running on every node: {phases}")


def _check_outcome(net: Network, task_id: int) -> None:
    assert net.wait_final(task_id, timeout=400) is TaskStatus.COMPLETED
    for o in net.orgs:
        assert net.admin.participant_state(task_id, o.address) is ParticipantState.RECEIPTED
        entries = [e for e in o.ctx.log.entries() if e.task_id == task_id]
        assert [e.action for e in entries].count("receipt") == 1, f"{o.name}: {[e.action for e in entries]}"
        assert [e.action for e in entries].count("queued") == 1, f"{o.name} queued the task more than once"
        assert not o.ctx.task_dir(task_id).exists()
    result = read_result(net.by_name("bank").ctx, task_id)["result"]
    expected = set(net.by_name("bank").values["customer_id"].tolist()) & set(
        net.by_name("telecom").values["customer_id"].tolist()
    )
    assert set(result["ids"]) == expected


def test_redis_restarted_mid_task(net: Network) -> None:
    task_id = net.submit_psi(bucket_size=2048)
    _wait_running(net, task_id)
    net.redis.restart(down_for=3.0)
    _check_outcome(net, task_id)
    # the nodes still take new work after the restart
    _check_outcome(net, net.submit_psi(bucket_size=2048))


def test_anvil_restarted_from_its_state_file_mid_task(net: Network, chain: tuple[int, Path, Deployment]) -> None:
    port, state, _ = chain
    task_id = net.submit_psi(bucket_size=2048)
    _wait_running(net, task_id)
    anvil.down(port)
    time.sleep(3.0)
    anvil.up(port=port, state_file=state)
    assert net.admin.task(task_id).status is not TaskStatus.NONE  # the chain kept the task
    _check_outcome(net, task_id)
    _check_outcome(net, net.submit_psi(bucket_size=2048))


def test_a_lost_run_message_is_queued_again_by_the_watchers_sweep(net: Network) -> None:
    """The bank's run message vanishes from its queue before any worker took it (a broker
    restored from an older snapshot, say). The watcher's sweep sees an open task that no
    worker holds, no queue holds and nobody has reported on, and queues it again."""
    bank = net.by_name("bank")
    os.killpg(bank.node_pid("worker"), signal.SIGKILL)  # no consumer: the message waits in the queue
    task_id = net.submit_psi(bucket_size=2048)
    deadline = time.monotonic() + 60
    while not any(e.action == "queued" and e.task_id == task_id for e in bank.ctx.log.entries()):
        assert time.monotonic() < deadline, "the bank's watcher never queued the task"
        time.sleep(0.1)
    assert bank.ctx.redis.delete(bank.ctx.queue) == 1  # the message is lost
    time.sleep(2 * bank.config.poll_interval + 1.0)  # the watcher has saved its cursor past the event
    services.start(bank.config, timeout=90)  # the bank's workers come back (with a fresh watcher)
    _check_outcome(net, task_id)
    requeued = [e for e in bank.ctx.log.entries() if e.task_id == task_id and e.action == "requeued"]
    assert len(requeued) == 1
    telecom = net.by_name("telecom")
    assert not [e for e in telecom.ctx.log.entries() if e.task_id == task_id and e.action == "requeued"]
