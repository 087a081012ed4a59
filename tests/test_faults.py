"""Faults over real nodes: a Celery worker process killed with SIGKILL in the middle of a
protocol. The task still completes, every participant receipts exactly once, and nothing
is left behind — the redelivered task message resumes the party (acks_late,
reject_on_worker_lost, an expiring task lock, deterministic protocols replayed from the
inbox, peers dropping re-sent messages as duplicates)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcn.chain.types import ParticipantState, TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.runtime import services
from pcn.runtime.operations import read_result, submit_task
from tests.nodes import Network, approve_all, network_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("fault-net")
    yield from network_fixture(root, deployment, ["bank", "telecom"], rows=40_000, message_timeout=60.0)
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


@pytest.mark.parametrize("victim", ["telecom", "bank"])
def test_worker_killed_mid_psi_resumes_and_completes(net: Network, victim: str) -> None:
    org = net.by_name(victim)
    task_id = net.submit_psi(bucket_size=4096)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        p = org.progress(task_id)
        if p.get("phase") == "running" and float(p.get("fraction", 0)) > 0.05:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"{victim} never got running: {org.progress(task_id)}")
    assert net.admin.task(task_id).status is TaskStatus.RUNNING
    killed = org.worker_processes()
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)

    assert net.wait_final(task_id, timeout=300) is TaskStatus.COMPLETED
    for o in net.orgs:
        assert net.admin.participant_state(task_id, o.address) is ParticipantState.RECEIPTED
        receipts = [e for e in o.ctx.log.entries() if e.task_id == task_id and e.action == "receipt"]
        assert len(receipts) == 1, f"{o.name} receipted {len(receipts)} times"
        assert not o.ctx.task_dir(task_id).exists()
        assert o.leftovers_after(task_id) == []
    # the killed party ran its verification twice: once before the kill, once on resume
    verifies = [e for e in org.ctx.log.entries() if e.task_id == task_id and e.action == "verify"]
    assert len(verifies) >= 2
    result = read_result(net.by_name("bank").ctx, task_id)["result"]
    expected = set(net.by_name("bank").values["customer_id"].tolist()) & set(
        net.by_name("telecom").values["customer_id"].tolist()
    )
    assert set(result["ids"]) == expected


@pytest.mark.parametrize("victim", ["bank", "telecom"])
def test_worker_killed_mid_training_resumes_from_the_last_epoch(net: Network, victim: str) -> None:
    """Vertical LR: the killed party restarts from its last epoch checkpoint, not from zero."""
    from tests.nodes import breast_cancer_split

    org = net.by_name(victim)
    g, h, *_ = breast_cancer_split(net, "bank", "telecom")
    params = {"label_column": "label", "epochs": 4, "key_bits": 2048, "batch_size": 128, "tol": 0}
    sub = submit_task(
        net.by_name("bank").ledger, algorithm="hetero-lr", dataset_ids=[g, h], params=params, recipient="bank"
    )
    approve_all(net, sub.task_id)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if any(e.action == "checkpoint" and e.task_id == sub.task_id for e in org.ctx.log.entries()):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"{victim} never checkpointed an epoch")
    for pid in org.worker_processes():
        os.kill(pid, signal.SIGKILL)
    assert net.wait_final(sub.task_id, timeout=400) is TaskStatus.COMPLETED
    entries = [e for e in org.ctx.log.entries() if e.task_id == sub.task_id]
    resumed = [e for e in entries if e.action == "resume"]
    assert resumed and resumed[0].data["epochs_done"] >= 1  # not from zero
    for o in net.orgs:
        receipts = [e for e in o.ctx.log.entries() if e.task_id == sub.task_id and e.action == "receipt"]
        assert len(receipts) == 1
        assert not o.ctx.task_dir(sub.task_id).exists()
    metrics = read_result(net.by_name("bank").ctx, sub.task_id)["result"]["metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]


@pytest.mark.parametrize("victim", ["bank", "telecom"])
def test_worker_killed_mid_boosting_resumes_from_the_last_tree(net: Network, victim: str) -> None:
    """hetero-sbt: the killed party restarts from its last tree checkpoint, not from zero, and
    the model has every tree once."""
    from tests.nodes import breast_cancer_split

    org = net.by_name(victim)
    g, h, *_ = breast_cancer_split(net, "bank", "telecom")
    params = {"label_column": "label", "trees": 5, "max_depth": 3, "key_bits": 2048, "validation_fraction": 0.2}
    sub = submit_task(
        net.by_name("bank").ledger, algorithm="hetero-sbt", dataset_ids=[g, h], params=params, recipient="bank"
    )
    approve_all(net, sub.task_id)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if any(e.action == "checkpoint" and e.task_id == sub.task_id for e in org.ctx.log.entries()):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"{victim} never checkpointed a tree")
    for pid in org.worker_processes():
        os.kill(pid, signal.SIGKILL)
    _assert_clean_completion(net, sub.task_id)
    resumed = [e for e in org.ctx.log.entries() if e.task_id == sub.task_id and e.action == "resume"]
    assert resumed and resumed[0].data["epochs_done"] >= 1  # not from zero
    result = read_result(net.by_name("bank").ctx, sub.task_id)["result"]
    assert result["trees_built"] == 5 and [m["tree"] for m in result["metrics"]] == [1, 2, 3, 4, 5]


def _assert_clean_completion(net: Network, task_id: int) -> None:
    assert net.wait_final(task_id, timeout=400) is TaskStatus.COMPLETED
    for o in net.orgs:
        actions = [e.action for e in o.ctx.log.entries() if e.task_id == task_id]
        assert actions.count("receipt") == 1, f"{o.name} receipted {actions.count('receipt')} times"
        assert not o.ctx.task_dir(task_id).exists()
        assert o.leftovers_after(task_id) == []


def test_repeated_worker_kills_during_psi(net: Network) -> None:
    """Ten SIGKILLs, alternating between the parties, each landing while a PSI runs. When a
    task completes before the next kill, the next kill goes into a new task."""
    rng = random.Random(8)
    kills, tasks = 0, []
    while kills < 10:
        task_id = net.submit_psi(bucket_size=1024)
        tasks.append(task_id)
        since = 0.0
        while kills < 10:
            victim = net.orgs[kills % 2]
            if not net.kill_workers_when_busy(victim, task_id, since, rng.uniform(0.0, 0.4)):
                break
            since = time.time()
            kills += 1
        _assert_clean_completion(net, task_id)
    expected = set(net.by_name("bank").values["customer_id"].tolist()) & set(
        net.by_name("telecom").values["customer_id"].tolist()
    )
    for task_id in tasks:
        assert set(read_result(net.by_name("bank").ctx, task_id)["result"]["ids"]) == expected


def test_repeated_worker_kills_across_training_epochs(net: Network) -> None:
    """Six SIGKILLs in one vertical LR training, each after a further epoch checkpoint,
    alternating guest and host: each resume starts from a later epoch, never from zero."""
    from tests.nodes import breast_cancer_split

    g, h, *_ = breast_cancer_split(net, "bank", "telecom")
    params = {"label_column": "label", "epochs": 10, "key_bits": 2048, "batch_size": 128, "tol": 0}
    sub = submit_task(
        net.by_name("bank").ledger, algorithm="hetero-lr", dataset_ids=[g, h], params=params, recipient="bank"
    )
    approve_all(net, sub.task_id)
    kills = 0
    for target_epoch in range(1, 7):
        victim = net.orgs[target_epoch % 2]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            done = [
                e.data["epochs_done"]
                for e in victim.ctx.log.entries()
                if e.action == "checkpoint" and e.task_id == sub.task_id
            ]
            if done and max(done) >= target_epoch:
                break
            assert not net.admin.task(sub.task_id).status.is_final, "training ended before all kills"
            time.sleep(0.05)
        else:
            pytest.fail(f"{victim.name} never checkpointed epoch {target_epoch}")
        for pid in victim.worker_processes():
            os.kill(pid, signal.SIGKILL)
        kills += 1
    assert kills == 6
    _assert_clean_completion(net, sub.task_id)
    resumes = [
        e.data["epochs_done"]
        for o in net.orgs
        for e in o.ctx.log.entries()
        if e.action == "resume" and e.task_id == sub.task_id
    ]
    assert len(resumes) >= 6 and min(resumes) >= 1  # every restart resumed from a checkpoint
    metrics = read_result(net.by_name("bank").ctx, sub.task_id)["result"]["metrics"]
    assert [m["epoch"] for m in metrics] == list(range(1, 11))


def test_a_slow_party_is_named_in_the_task_progress(net: Network) -> None:
    """One party stalls (its worker processes stopped with SIGSTOP, as a machine swapping or a
    saturated host would): `task_progress` — what `pcn task status` shows — says the other
    party is waiting, and for whom. Once the slow party resumes, the task completes."""
    from pcn.cli.node_cmds import _progress_view
    from pcn.runtime.operations import task_progress

    slow = net.by_name("telecom")
    task_id = net.submit_psi(bucket_size=1024)
    deadline = time.monotonic() + 120
    while slow.progress(task_id).get("phase") != "running":
        assert time.monotonic() < deadline, f"telecom never got running: {slow.progress(task_id)}"
        time.sleep(0.02)
    stalled = slow.worker_processes()
    for pid in stalled:
        os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 30
        while True:
            rows = {r["name"]: r for r in task_progress(net.by_name("bank").ledger, task_id)["participants"]}
            if rows["bank"].get("phase") == "waiting":
                break
            assert time.monotonic() < deadline, f"bank never reported waiting: {rows}"
            time.sleep(0.2)
        assert rows["bank"]["waiting_for"] == ["telecom"]
        assert rows["telecom"].get("phase") == "running"
        from rich.console import Console

        console = Console(width=200, record=True)
        console.print(_progress_view(task_progress(net.by_name("bank").ledger, task_id)))
        assert "waiting for telecom" in console.export_text()
    finally:
        for pid in stalled:
            os.kill(pid, signal.SIGCONT)
    _assert_clean_completion(net, task_id)
    rows = {r["name"]: r for r in task_progress(net.by_name("bank").ledger, task_id)["participants"]}
    assert all("waiting_for" not in r for r in rows.values())


def test_a_peer_unreachable_for_a_while_is_retried_and_the_task_completes(net: Network) -> None:
    """The telecom's mailbox stops answering (its process frozen, as behind a network
    partition) while the bank starts a PSI: the bank's deliveries back off and retry for 8 s,
    and once the mailbox answers again the task completes."""
    telecom = net.by_name("telecom")
    mailbox = telecom.node_pid("mailbox")
    sub = submit_task(
        net.by_name("bank").ledger,
        algorithm="psi",
        dataset_ids=[o.dataset_id for o in net.orgs],
        params={"bucket_size": 1024},
        recipient="bank",
    )
    os.kill(mailbox, signal.SIGSTOP)  # before the protocol starts: the bank's first message must wait
    try:
        approve_all(net, sub.task_id)
        bank = net.by_name("bank")
        deadline = time.monotonic() + 60
        while bank.progress(sub.task_id).get("phase") != "running":
            assert time.monotonic() < deadline, f"bank never got running: {bank.progress(sub.task_id)}"
            time.sleep(0.05)
        time.sleep(8.0)
        assert bank.progress(sub.task_id).get("phase") == "running"  # still delivering, not refused
        assert not net.admin.task(sub.task_id).status.is_final  # nobody gave up while it was away
    finally:
        os.kill(mailbox, signal.SIGCONT)
    _assert_clean_completion(net, sub.task_id)


def test_a_worker_dying_right_after_its_refusal_was_mined_logs_it_once(net: Network, tmp_path: Path) -> None:
    """A worker exits after its refusal transaction was mined and before it wrote the log entry
    (#16: the log would otherwise miss a refusal the chain holds, and the auditor would call it
    wrong). The redelivered run writes the entry, with the real transaction, and nothing else."""
    telecom = net.by_name("telecom")
    assert telecom.data_file is not None
    original = telecom.data_file.read_bytes()
    marker = tmp_path / "after-refusal-mined.fired"
    services.stop(telecom.config)
    services.start(telecom.config, env={"PCN_FAILPOINTS": f"after-refusal-mined={marker}"}, timeout=90)
    try:
        lines = original.split(b"\n")
        lines[1] = lines[1].replace(b",", b",1", 1)  # one byte: telecom's fingerprint no longer matches
        telecom.data_file.write_bytes(b"\n".join(lines))
        task_id = net.submit_psi(algorithm="psi-ot")
        assert net.wait_final(task_id, timeout=300) is TaskStatus.REFUSED
        task = net.admin.task(task_id)
        logs = {o.name: [(e.action, e.data) for e in o.ctx.log.entries() if e.task_id == task_id] for o in net.orgs}
        assert net.admin.participant_state(task_id, telecom.address) is ParticipantState.REFUSED, (task, logs)
        deadline = time.monotonic() + 90
        while not marker.is_file() or not [
            e for e in telecom.ctx.log.entries() if e.task_id == task_id and e.action == "refuse"
        ]:
            assert time.monotonic() < deadline, f"fired: {marker.is_file()}; the refusal was never logged"
            time.sleep(0.2)
        refusals = [e for e in telecom.ctx.log.entries() if e.task_id == task_id and e.action == "refuse"]
        assert len(refusals) == 1
        assert refusals[0].data["recovered"] is True
        assert refusals[0].data["tx"] == net.admin.refusal_tx(task_id, telecom.address)
        assert refusals[0].data["reason"] == "FINGERPRINT_MISMATCH"
        assert telecom.leftovers_after(task_id) == []
    finally:
        telecom.data_file.write_bytes(original)
        services.stop(telecom.config)
        services.start(telecom.config, timeout=90)


@pytest.mark.parametrize(
    ("point", "victim"),
    [("after-finishing-record", "telecom"), ("after-delete", "bank"), ("after-receipt-mined", "telecom")],
)
def test_a_worker_dying_while_it_finishes_a_task_finishes_it_once(
    net: Network, tmp_path: Path, point: str, victim: str
) -> None:
    """A worker process exits at an exact step of finishing (a failpoint: after the durable
    finishing record, after deleting the inputs a protocol re-run would need, after its
    receipt was mined but before it was logged). The redelivered run finishes from the record:
    one receipt on chain and one in the log, with its real transaction, nothing left."""
    org = net.by_name(victim)
    marker = tmp_path / f"{point}.fired"
    services.stop(org.config)
    services.start(org.config, env={"PCN_FAILPOINTS": f"{point}={marker}"}, timeout=90)
    try:
        task_id = net.submit_psi(algorithm="psi-ot")  # the finishing steps are the same for every algorithm
        assert net.wait_final(task_id, timeout=300) is TaskStatus.COMPLETED
        assert marker.is_file(), f"the {point} failpoint never fired"
        for o in net.orgs:
            assert net.admin.participant_state(task_id, o.address) is ParticipantState.RECEIPTED
            receipts = [e for e in o.ctx.log.entries() if e.task_id == task_id and e.action == "receipt"]
            assert len(receipts) == 1, f"{o.name} logged {len(receipts)} receipts"
            assert receipts[0].data["tx"] == net.admin.receipt_tx(task_id, o.address)
            assert o.leftovers_after(task_id) == []
        resumed = [e for e in org.ctx.log.entries() if e.task_id == task_id and e.action == "resume"]
        if point != "after-receipt-mined":
            assert resumed and resumed[0].data.get("finishing") is True  # not a protocol re-run
        result = read_result(net.by_name("bank").ctx, task_id)["result"]
        expected = set(net.by_name("bank").values["customer_id"].tolist()) & set(
            net.by_name("telecom").values["customer_id"].tolist()
        )
        assert set(result["ids"]) == expected
    finally:
        services.stop(org.config)
        services.start(org.config, timeout=90)


@pytest.mark.parametrize("victim", ["bank", "telecom"])
def test_a_worker_dying_mid_psi_ot_resumes_from_its_inbox(net: Network, tmp_path: Path, victim: str) -> None:
    """psi-ot runs a 40 k x 40 k PSI in about a second: too fast to SIGKILL from outside at a
    known step, so the worker exits at the `after-protocol-message` failpoint, right after its
    first protocol message was delivered (the receiver bank: its "ot-reply", the "rows" still
    to come; telecom: its base-OT points, everything else to come). The redelivered run
    replays the inbox, re-sends byte-identical messages that the peer drops as duplicates,
    and the task completes with one receipt per party and the Python set intersection."""
    org = net.by_name(victim)
    marker = tmp_path / f"psi-ot-{victim}.fired"
    services.stop(org.config)
    services.start(org.config, env={"PCN_FAILPOINTS": f"after-protocol-message={marker}"}, timeout=90)
    try:
        bank, telecom = net.by_name("bank"), net.by_name("telecom")
        sub = submit_task(
            bank.ledger,
            algorithm="psi-ot",
            dataset_ids=[bank.dataset_id, telecom.dataset_id],
            params={},
            recipient="bank",
        )
        approve_all(net, sub.task_id)
        assert net.wait_final(sub.task_id, timeout=300) is TaskStatus.COMPLETED
        assert marker.is_file(), "the after-protocol-message failpoint never fired"
        for o in net.orgs:
            assert net.admin.participant_state(sub.task_id, o.address) is ParticipantState.RECEIPTED
            receipts = [e for e in o.ctx.log.entries() if e.task_id == sub.task_id and e.action == "receipt"]
            assert len(receipts) == 1, f"{o.name} logged {len(receipts)} receipts"
            assert o.leftovers_after(sub.task_id) == []
        # the killed party verified twice: once before the kill, once on the resumed run
        verifies = [e for e in org.ctx.log.entries() if e.task_id == sub.task_id and e.action == "verify"]
        assert len(verifies) >= 2
        got = read_result(bank.ctx, sub.task_id)
        assert got["matches_chain"] is True and got["result"]["algorithm"] == "psi-ot"
        expected = set(bank.values["customer_id"].tolist()) & set(telecom.values["customer_id"].tolist())
        assert expected and set(got["result"]["ids"]) == expected
    finally:
        services.stop(org.config)
        services.start(org.config, timeout=90)
