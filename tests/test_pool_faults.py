"""Faults in a worker's compute pool (#13.13): the processes a Celery worker spawns for a
protocol's heavy parallel parts, killed with SIGKILL as the kernel's OOM killer would (it
picks the process with the highest `oom_score`). A dead pool process is a transient fault:
the worker drops the broken pool, runs the map again on a new one and the task completes;
the worker's next task is not poisoned by it; a pool that dies on every rebuild ends the
task in a clear refusal after `COMPUTE_POOL_REBUILDS` rebuilds instead of looping."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcn.chain.types import ParticipantState, TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.runtime.operations import read_result, submit_task
from pcn.runtime.pool import COMPUTE_POOL_REBUILDS
from tests.nodes import Network, Org, approve_all, network_fixture
from tests.pool_jobs import die, square_slowly

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("pool-fault-net")
    # One Celery worker per organisation: the task after a pool fault runs in the same worker.
    yield from network_fixture(root, deployment, ["bank", "telecom"], rows=40_000, message_timeout=60.0)
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


def pool_processes(org: Org) -> list[int]:
    """The compute pool's processes: `spawn`ed children of the org's Celery worker processes."""
    out: list[int] = []
    for worker in org.worker_processes():
        kids = subprocess.run(["pgrep", "-P", str(worker)], capture_output=True, text=True).stdout.split()
        for pid in map(int, kids):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # gone already
            if b"spawn_main" in cmdline:  # not the resource tracker
                out.append(pid)
    return out


def oom_victim(pids: list[int]) -> int:
    """The process the kernel's OOM killer would pick among `pids`: the highest oom_score."""

    def score(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/oom_score").read_text())
        except (OSError, ValueError):
            return -1

    return max(pids, key=score)


def kill_busiest_pool_process(org: Org, timeout: float = 240.0) -> int:
    """SIGKILL the OOM killer's pick among `org`'s compute pool processes once there are any."""
    deadline = time.monotonic() + timeout
    while not (pids := pool_processes(org)):
        assert time.monotonic() < deadline, f"{org.name} never started its compute pool"
        time.sleep(0.01)
    victim = oom_victim(pids)
    os.kill(victim, signal.SIGKILL)
    return victim


def entries(org: Org, task_id: int, action: str) -> list:
    return [e for e in org.ctx.log.entries() if e.task_id == task_id and e.action == action]


def logged(org: Org, task_id: int, action: str, timeout: float = 30.0) -> list:
    """The entries once there is one: a node logs a refusal after its transaction is mined
    (the entry names the transaction), so the chain can show REFUSED a moment before it."""
    deadline = time.monotonic() + timeout
    while not (found := entries(org, task_id, action)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def assert_completed_once_each(net: Network, task_id: int) -> None:
    assert net.wait_final(task_id, timeout=400) is TaskStatus.COMPLETED
    for o in net.orgs:
        assert net.admin.participant_state(task_id, o.address) is ParticipantState.RECEIPTED
        assert len(entries(o, task_id, "receipt")) == 1, f"{o.name} did not receipt exactly once"
        assert entries(o, task_id, "refuse") == []
        assert o.leftovers_after(task_id) == []


def expected_intersection(net: Network) -> set[str]:
    return set(net.by_name("bank").values["customer_id"].tolist()) & set(
        net.by_name("telecom").values["customer_id"].tolist()
    )


@pytest.mark.parametrize("victim", ["telecom", "bank"])
def test_pool_process_killed_mid_psi_is_rebuilt_and_the_task_completes(net: Network, victim: str) -> None:
    org = net.by_name(victim)
    for pid in pool_processes(org):  # a pool left by an earlier test: the kill must land mid-map
        # the first kill breaks the pool and its manager terminates the others: one may be gone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    task_id = net.submit_psi(bucket_size=4096)
    kill_busiest_pool_process(org)
    assert_completed_once_each(net, task_id)
    rebuilt = entries(org, task_id, "compute-pool-rebuilt")
    assert rebuilt and rebuilt[0].data["rebuilds"] == 1
    assert set(read_result(net.by_name("bank").ctx, task_id)["result"]["ids"]) == expected_intersection(net)


def test_pool_processes_killed_during_training_are_rebuilt_and_the_model_is_complete(net: Network) -> None:
    """Vertical LR (2048-bit Paillier): the guest's busiest pool process is killed in the first
    epoch, the host's after the guest's first checkpoint; training ends with every epoch."""
    from tests.nodes import breast_cancer_split

    guest, host = net.by_name("bank"), net.by_name("telecom")
    g, h, *_ = breast_cancer_split(net, "bank", "telecom")
    params = {"label_column": "label", "epochs": 4, "key_bits": 2048, "batch_size": 128, "tol": 0}
    sub = submit_task(guest.ledger, algorithm="hetero-lr", dataset_ids=[g, h], params=params, recipient="bank")
    approve_all(net, sub.task_id)
    deadline = time.monotonic() + 240
    while guest.progress(sub.task_id).get("phase") != "running":
        assert time.monotonic() < deadline, f"the guest never got running: {guest.progress(sub.task_id)}"
        time.sleep(0.02)
    kill_busiest_pool_process(guest)
    while not entries(guest, sub.task_id, "checkpoint"):
        assert time.monotonic() < deadline, "the guest never checkpointed an epoch"
        assert not net.admin.task(sub.task_id).status.is_final, "training ended before the second kill"
        time.sleep(0.05)
    kill_busiest_pool_process(host)
    assert_completed_once_each(net, sub.task_id)
    for o in (guest, host):
        assert entries(o, sub.task_id, "compute-pool-rebuilt"), f"{o.name} never rebuilt its pool"
    metrics = read_result(guest.ctx, sub.task_id)["result"]["metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]


def test_a_pool_killed_between_tasks_does_not_poison_the_next_task(net: Network) -> None:
    """Every pool process of both nodes dies while they are idle (after a task): the next task
    each node's only Celery worker runs rebuilds the pool and completes."""
    first = net.submit_psi(bucket_size=4096)
    assert_completed_once_each(net, first)
    killed = [pid for o in net.orgs for pid in pool_processes(o)]
    assert killed, "the first task left no compute pool to kill"
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):  # the broken pool's manager ended it first
            os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)  # the pools notice their dead processes and mark themselves broken
    task_id = net.submit_psi(bucket_size=4096)
    assert_completed_once_each(net, task_id)
    assert set(read_result(net.by_name("bank").ctx, task_id)["result"]["ids"]) == expected_intersection(net)
    for o in net.orgs:
        assert entries(o, task_id, "compute-pool-rebuilt"), f"{o.name} ran on its broken pool"


def test_a_pool_that_keeps_dying_ends_in_a_refusal_after_bounded_rebuilds(net: Network) -> None:
    """Every compute process the telecom spawns is killed at once (a real out-of-memory each
    time): after COMPUTE_POOL_REBUILDS rebuilds the telecom refuses PROTOCOL_FAILURE, saying
    why, instead of rebuilding forever; its next task completes."""
    telecom = net.by_name("telecom")
    stop = threading.Event()
    kills: list[int] = []

    def oom_every_time() -> None:
        deadline = time.monotonic() + 300  # bounded even if the test fails
        while not stop.is_set() and time.monotonic() < deadline:
            for pid in pool_processes(telecom):
                with contextlib.suppress(ProcessLookupError):  # it died on its own meanwhile
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
            time.sleep(0.01)

    killer = threading.Thread(target=oom_every_time, daemon=True)
    killer.start()
    try:
        task_id = net.submit_psi(bucket_size=4096)
        status = net.wait_final(task_id, timeout=300)
    finally:
        stop.set()
        killer.join()
    assert status is not TaskStatus.COMPLETED
    assert net.admin.participant_state(task_id, telecom.address) is ParticipantState.REFUSED
    rebuilt = entries(telecom, task_id, "compute-pool-rebuilt")
    assert [e.data["rebuilds"] for e in rebuilt] == list(range(1, COMPUTE_POOL_REBUILDS + 1))
    (refusal,) = logged(telecom, task_id, "refuse")
    assert refusal.data["reason"] == "PROTOCOL_FAILURE"
    assert "compute pool processes died" in refusal.data["detail"]
    assert len(kills) > COMPUTE_POOL_REBUILDS
    # the memory came back: the same worker's next task completes
    assert_completed_once_each(net, net.submit_psi(bucket_size=4096))


def test_compute_pool_map_rebuilds_after_a_kill_and_returns_the_undisturbed_result() -> None:
    """The map itself, in this process: one pool process killed mid-map; the same, ordered
    results come back, the rebuild is reported once, and the next map reuses the new pool."""
    from pcn.runtime import pool as runtime_pool

    rebuilt: list[tuple[int, str]] = []
    pmap = runtime_pool.compute_pool_map(2, on_rebuild=lambda n, why: rebuilt.append((n, why)))
    assert pmap is not None
    items = list(range(24))

    def kill_one_when_busy() -> None:
        deadline = time.monotonic() + 60
        while not (pids := _pool_pids()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # the processes are up and squaring
        os.kill(oom_victim(pids), signal.SIGKILL)

    killer = threading.Thread(target=kill_one_when_busy, daemon=True)
    killer.start()
    try:
        assert pmap(square_slowly, items) == [x * x for x in items]
        assert [n for n, _ in rebuilt] == [1]
        assert "terminated abruptly" in rebuilt[0][1]
        kept = runtime_pool._POOL
        assert pmap(square_slowly, [3, 4]) == [9, 16]
        assert runtime_pool._POOL is kept and len(rebuilt) == 1
    finally:
        killer.join()
        if runtime_pool._POOL is not None:
            runtime_pool._drop_pool(runtime_pool._POOL)


def test_compute_pool_map_gives_up_after_bounded_rebuilds() -> None:
    from pcn.runtime import pool as runtime_pool

    rebuilt: list[int] = []
    pmap = runtime_pool.compute_pool_map(2, on_rebuild=lambda n, _why: rebuilt.append(n), max_rebuilds=3)
    assert pmap is not None
    with pytest.raises(runtime_pool.ComputePoolFailed, match="died 4 times"):
        pmap(die, [1, 2, 3])
    assert rebuilt == [1, 2, 3]
    assert runtime_pool._POOL is None  # the broken pool is not kept for the next task


def test_a_dropped_pool_leaves_no_process_behind() -> None:
    """A broken pool's manager thread terminates the processes it knows of without the lock
    `submit` holds, so a process spawned by a `submit` in that moment outlives the pool: idle,
    holding memory, and taken for the live pool by anyone listing the worker's children (the
    fault tests' kill once landed on such a process, and the task it meant to disturb never
    saw a fault). Dropping the pool ends every process it started, that one included."""
    import multiprocessing

    from pcn.runtime import pool as runtime_pool

    pool = runtime_pool._compute_pool(2)
    try:
        assert list(pool.map(square_slowly, [1, 2])) == [1, 4]
        assert len(_pool_pids()) == 2
        os.kill(oom_victim(_pool_pids()), signal.SIGKILL)
        deadline = time.monotonic() + 30
        manager = pool._executor_manager_thread  # type: ignore[attr-defined]
        while manager is not None and manager.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool._broken  # type: ignore[attr-defined]
        # the process a racing submit spawned: in the pool's table, missed by its clean-up
        late = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(120,))
        late.start()
        pool._processes[late.pid] = late  # type: ignore[attr-defined]
        assert late.is_alive()
    finally:
        runtime_pool._drop_pool(pool)
    assert not late.is_alive()
    assert runtime_pool._POOL is None and _pool_pids() == []


def _pool_pids() -> list[int]:
    """This process's spawned pool processes."""
    kids = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.split()
    return [int(p) for p in kids if b"spawn_main" in _cmdline(int(p))]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
