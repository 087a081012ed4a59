"""Joint statistics end to end: three organisations' real nodes (mailbox, watcher, Celery
worker processes), real Redis, real HTTP, the session's anvil. The result equals the
plaintext numpy computation; receipts agree; the task completes on chain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pcn.chain.types import ParticipantState, RefusalReason, TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.runtime.actionlog import verify_entries
from pcn.runtime.operations import read_result, submit_task, task_progress
from tests.nodes import REGIONS, Network, approve_all, network_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("stats-net")
    yield from network_fixture(root, deployment, ["bank", "telecom", "insurer"], rows=2000)
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


def _submit(net: Network, params: dict, epsilon: float = 0.0, recipient: str = "bank") -> int:
    bank = net.by_name("bank")
    sub = submit_task(
        bank.ledger,
        algorithm="stats",
        dataset_ids=[o.dataset_id for o in net.orgs],
        params=params,
        recipient=recipient,
        epsilon=epsilon,
    )
    assert all(v == "ok" for v in sub.delivered.values()), sub.delivered
    approve_all(net, sub.task_id)
    return sub.task_id


def test_joint_statistics_equal_numpy(net: Network) -> None:
    edges = [0, 10_000, 20_000, 50_000, 100_000]
    params = {
        "column": "income",
        "group_by": "region",
        "groups": REGIONS,
        "statistics": ["count", "sum", "mean", "variance", "histogram"],
        "histogram": {"edges": edges},
    }
    task_id = _submit(net, params)
    assert net.wait_final(task_id) is TaskStatus.COMPLETED

    bank = net.by_name("bank")
    got = read_result(bank.ctx, task_id)
    assert got["matches_chain"] is True
    income = np.concatenate([o.values["income"] for o in net.orgs])
    region = np.concatenate([o.values["region"] for o in net.orgs])
    groups = got["result"]["groups"]
    for g in REGIONS:
        x = income[region == g]
        assert groups[g]["count"] == len(x)
        assert groups[g]["sum"] == pytest.approx(float(np.sum(x)), rel=1e-12)
        assert groups[g]["mean"] == pytest.approx(float(np.mean(x)), rel=1e-12)
        assert groups[g]["variance"] == pytest.approx(float(np.var(x, ddof=1)), rel=1e-9)
        inner = np.histogram(x, bins=edges)[0].tolist()
        hist = groups[g]["histogram"]
        assert inner == hist[1:-1] if len(hist) == len(edges) + 1 else hist == inner

    # every participant receipted the same result and algorithm hash
    receipts = [net.admin.receipt(task_id, o.address) for o in net.orgs]
    assert len({r.result_hash for r in receipts}) == 1
    assert receipts[0].result_hash == net.admin.task(task_id).result_hash
    assert all(r.algorithm_hash == net.algorithm for r in receipts)
    assert all(r.deletion_hash != b"\x00" * 32 for r in receipts)
    # intermediates are gone, and only the recipient holds a result
    for o in net.orgs:
        assert not o.ctx.task_dir(task_id).exists()
        has_result = (o.ctx.results_dir() / f"{task_id}.sealed").exists()
        assert has_result is (o.name == "bank")
    # each node's local log verifies and its head is anchored on chain
    for o in net.orgs:
        seq, _head = verify_entries(list(o.ctx.log.entries()))
        anchor = net.admin.latest_anchor(o.address)
        assert anchor is not None and anchor.sequence <= seq
        actions = [e.action for e in o.ctx.log.entries() if e.task_id == task_id]
        assert {"verify", "protocol-done", "delete", "receipt"} <= set(actions)


def test_non_recipient_cannot_read_result(net: Network) -> None:
    task_id = _submit(net, {"column": "income", "statistics": ["count", "sum"]})
    assert net.wait_final(task_id) is TaskStatus.COMPLETED
    from pcn.runtime.operations import OperationError

    with pytest.raises(OperationError, match="only the named recipient"):
        read_result(net.by_name("telecom").ctx, task_id)
    result = read_result(net.by_name("bank").ctx, task_id)["result"]
    assert result["groups"]["__all__"]["count"] == sum(len(o.values["income"]) for o in net.orgs)
    # the stored result is sealed to the recipient's registered key: a copy is useless elsewhere
    sealed = net.by_name("bank").ctx.results_dir() / f"{task_id}.sealed"
    assert b"__all__" not in sealed.read_bytes()
    telecom = net.by_name("telecom").ctx
    telecom.results_dir().mkdir(parents=True, exist_ok=True)
    (telecom.results_dir() / sealed.name).write_bytes(sealed.read_bytes())
    with pytest.raises(OperationError, match="cannot open"):
        read_result(telecom, task_id)
    # and a modified one is refused rather than shown
    blob = bytearray(sealed.read_bytes())
    blob[-5] ^= 1
    (telecom.results_dir() / sealed.name).unlink()
    tampered = net.by_name("bank").ctx.results_dir() / f"{task_id}.sealed"
    original = tampered.read_bytes()
    tampered.write_bytes(bytes(blob))
    try:
        with pytest.raises(OperationError, match="modified"):
            read_result(net.by_name("bank").ctx, task_id)
    finally:
        tampered.write_bytes(original)


def test_differential_privacy_within_noise(net: Network) -> None:
    eps = 1.0
    params = {
        "column": "income",
        "statistics": ["count", "sum"],
        "dp": {"epsilon": eps, "mechanism": "laplace", "clip": [0, 200_000]},
    }
    before = net.admin.dataset(net.orgs[0].dataset_id)
    task_id = _submit(net, params, epsilon=eps)
    assert net.wait_final(task_id) is TaskStatus.COMPLETED
    res = read_result(net.by_name("bank").ctx, task_id)["result"]
    income = np.clip(np.concatenate([o.values["income"] for o in net.orgs]), 0, 200_000)
    g = res["groups"]["__all__"]
    scales = {k: v["scale"] for k, v in res["dp"]["noise"].items()}
    # Laplace tail: P(|noise| > 12 b) = e^-12 ≈ 6e-6 — a failure here is a real bug
    assert abs(g["count"] - len(income)) <= 12 * float(scales["count"])
    assert abs(g["sum"] - float(income.sum())) <= 12 * float(scales["sum"])
    after = net.admin.dataset(net.orgs[0].dataset_id)
    assert after.epsilon_spent - before.epsilon_spent == 1_000_000  # ε charged on chain


def test_progress_and_status_report_every_participant(net: Network) -> None:
    task_id = _submit(net, {"column": "income", "statistics": ["count"]})
    assert net.wait_final(task_id) is TaskStatus.COMPLETED
    status = task_progress(net.orgs[0].ledger, task_id)  # a participant: progress reads are signed
    assert status["status"] == "completed"
    assert [p["state"] for p in status["participants"]] == ["receipted"] * 3
    assert all(p.get("phase") == "done" for p in status["participants"]), json.dumps(status)


def test_dataset_byte_changed_is_refused_without_running(net: Network) -> None:
    telecom = net.by_name("telecom")
    assert telecom.data_file is not None
    original = telecom.data_file.read_bytes()
    try:
        # one byte of one income cell changes (1 -> 2 or any digit -> another)
        text = original.decode()
        pos = text.index("\n") + 1 + text[text.index("\n") + 1 :].index(",") + 1
        changed = text[:pos] + ("9" if text[pos] != "9" else "8") + text[pos + 1 :]
        telecom.data_file.write_bytes(changed.encode())
        task_id = _submit(net, {"column": "income", "statistics": ["count"]})
        assert net.wait_final(task_id) is TaskStatus.REFUSED
        task = net.admin.task(task_id)
        assert task.refusal_reason is RefusalReason.FINGERPRINT_MISMATCH
        assert net.admin.participant_state(task_id, telecom.address) is ParticipantState.REFUSED
        entries = [e for e in telecom.ctx.log.entries() if e.task_id == task_id]
        assert any(e.action == "refuse" and e.data["reason"] == "FINGERPRINT_MISMATCH" for e in entries)
        assert not any(e.action == "protocol-done" for e in entries)
    finally:
        telecom.data_file.write_bytes(original)


def test_params_with_wrong_hash_are_rejected_by_the_mailbox(net: Network, tmp_path: Path) -> None:
    """Other parameters than the chain's, even sealed by the requester itself, or the right ones
    sealed by another organisation, or any in clear: refused; the task runs on the chain's."""
    import httpx

    from pcn.runtime.operations import params_bytes_of, seal_params

    params = {"column": "income", "statistics": ["count"]}
    task_id = _submit(net, params)
    telecom = net.by_name("telecom")
    url = f"{telecom.config.endpoint}/v1/tasks/{task_id}/params"
    other = seal_params(net.by_name("bank").ledger, task_id, b'{"column":"region"}', telecom.address)
    r = httpx.post(url, content=other, timeout=5)
    assert (r.status_code, r.json()["error"]) == (400, "params-mismatch")
    third = next(o for o in net.orgs if o.name not in ("bank", "telecom"))  # a participant, not the requester
    by_third = seal_params(third.ledger, task_id, params_bytes_of(params), telecom.address)
    r = httpx.post(url, content=by_third, timeout=5)
    assert (r.status_code, r.json()["error"]) == (403, "not-requester")
    r = httpx.post(url, content=params_bytes_of(params), timeout=5)
    assert (r.status_code, r.json()["error"]) == (400, "malformed")
    assert net.wait_final(task_id) is TaskStatus.COMPLETED
