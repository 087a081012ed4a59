"""Anomaly detection against the session anvil: every kind that can be produced on chain
is produced there; the two the contracts make impossible (acting while suspended, a quota
overrun) are planted as events a faulty contract would emit. Persistence is idempotent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from pcn.auditor.anomalies import Anomaly, Severity, detect, detect_and_record, record
from pcn.auditor.projection import rebuild
from pcn.auditor.store import AnomalyRow, EventRow, Store
from pcn.auditor.verify import verify_node_log
from pcn.chain.types import Fingerprint, PolicyLimits, RefusalReason
from pcn.runtime.actionlog import ActionLog
from tests.helpers import build_consortium, h, request_for
from tests.test_auditor_support import (
    BACKENDS,
    StoreFactory,
    advance,
    good_receipt,
    indexer,
    populate,
    run_task,
    store_factory,
)


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path) -> Iterator[StoreFactory]:
    yield from store_factory(request, tmp_path)


def _indexed(deployment, stores: StoreFactory) -> Store:
    st = stores.store()
    indexer(deployment, st).run_once()
    return st


def _of(found: list[Anomaly], kind: str) -> list[Anomaly]:
    return [a for a in found if a.kind == kind]


def _plant(st: Store, name: str, contract: str, args: dict, block: int, timestamp: int, actor: str | None) -> None:
    """Insert an event a faulty contract could have emitted, then re-derive every table."""
    with st.write() as s:
        s.add(
            EventRow(
                contract=contract,
                name=name,
                args=args,
                block_number=block,
                block_hash="0x" + "ab" * 32,
                block_timestamp=timestamp,
                tx_hash="0x" + "ee" * 32,
                log_index=999,
                task_id=args.get("taskId"),
                dataset_id=args.get("datasetId"),
                actor=actor,
            )
        )
        s.flush()
        rebuild(s)


@pytest.mark.parametrize(
    ("reason", "severity"),
    [
        (RefusalReason.FINGERPRINT_MISMATCH, Severity.HIGH),
        (RefusalReason.USES_EXHAUSTED, Severity.MEDIUM),
        (RefusalReason.PEER_UNREACHABLE, Severity.LOW),
    ],
)
def test_refusals_by_reason(stores: StoreFactory, deployment, snapshot, reason, severity):
    c = build_consortium(deployment, n_orgs=2)
    task_id, _ = c.orgs[0].submit_task(request_for(c))
    for org in c.orgs:
        org.approve(task_id, org.request_hash(task_id))
    res = c.orgs[1].refuse(task_id, reason, h("why"))
    found = detect(_indexed(deployment, stores))
    (a,) = _of(found, "refusal")
    assert a.severity is severity and a.detail["reason"] == reason.name
    assert (a.task_id, a.org, a.tx_hashes) == (task_id, c.orgs[1].address, (res.tx_hash,))
    assert reason.name in a.message and "telecom1" in a.message


def test_a_dispute(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=3)
    task_id = run_task(c, [0, 1, 2])
    for i in range(3):
        c.orgs[i].submit_receipt(task_id, good_receipt(c, i, h("odd" if i == 1 else "even")))
    (a,) = _of(detect(_indexed(deployment, stores)), "dispute")
    assert a.severity is Severity.HIGH and a.task_id == task_id
    assert len(a.tx_hashes) == 4  # three receipts and the dispute
    minority = a.message.split(";")[1]
    assert "telecom1" in minority and "bank0" not in minority and a.message.count("result 0x") == 2


def test_deadline_anomalies(stores: StoreFactory, deployment, snapshot, devnet):
    c = build_consortium(deployment, n_orgs=3)
    pending, _ = c.orgs[0].submit_task(request_for(c, deadline_in=600))
    c.orgs[0].approve(pending, c.orgs[0].request_hash(pending))
    unstarted, _ = c.orgs[0].submit_task(request_for(c, orgs=[0, 1], deadline_in=600))
    for i in (0, 1):
        c.orgs[i].approve(unstarted, c.orgs[i].request_hash(unstarted))
    partial = run_task(c, [0, 1, 2], deadline_in=600)
    c.orgs[0].submit_receipt(partial, good_receipt(c, 0, h("r")))
    finished = run_task(c, [0, 1], result=b"fine", deadline_in=600)

    st = stores.store()
    idx = indexer(deployment, st)
    idx.run_once()
    kinds = {a.kind for a in detect(st)}
    assert not kinds & {"task-expired", "never-started", "receipt-missing"}

    advance(devnet.rpc_url, 601)
    c.admin.expire(pending)
    idx.run_once()
    found = detect(st)
    expired = {a.task_id: a for a in _of(found, "task-expired")}
    assert set(expired) == {pending, partial}
    assert expired[pending].severity is Severity.LOW and "never authorised" in expired[pending].message
    assert expired[pending].detail["marked"] is True and expired[partial].detail["marked"] is False
    assert [a.task_id for a in _of(found, "never-started")] == [unstarted]
    missing = _of(found, "receipt-missing")
    assert sorted((a.task_id, a.org) for a in missing) == sorted(
        [(partial, c.orgs[1].address), (partial, c.orgs[2].address)]
    )
    assert all(a.severity is Severity.HIGH for a in missing)
    assert finished not in {a.task_id for a in found}


def test_a_fingerprint_changed_under_a_live_policy(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2)
    open_task = run_task(c, [0, 1])  # authorised and running on version 1
    telecom = c.orgs[1]
    _, res = telecom.publish_version(c.datasets[telecom.address], Fingerprint(h("v2"), h("schema"), h("m2"), 7))
    bank = c.orgs[0]
    bank.publish_version(c.datasets[bank.address], Fingerprint(h("v2b"), h("schema"), h("m2"), 7))
    found = _of(detect(_indexed(deployment, stores)), "fingerprint-changed")
    by_dataset = {a.dataset_id: a for a in found}
    assert set(by_dataset) == {c.datasets[telecom.address], c.datasets[bank.address]}
    a = by_dataset[c.datasets[telecom.address]]
    assert a.severity is Severity.HIGH and a.task_id == open_task and a.org == telecom.address
    assert a.detail["open_tasks"] == [open_task] and res.tx_hash in a.tx_hashes
    assert "version 2" in a.message


def test_a_fingerprint_change_without_tasks_on_the_old_version_is_low(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=1)
    org = c.orgs[0]
    org.publish_version(c.datasets[org.address], Fingerprint(h("v2"), h("schema"), h("m2"), 7))
    (a,) = _of(detect(_indexed(deployment, stores)), "fingerprint-changed")
    assert a.severity is Severity.LOW and a.task_id is None


def test_quota_and_budget_near_and_at_the_limit(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=1, max_uses=5, epsilon_total=1.0)
    for _ in range(4):
        run_task(c, [0], epsilon=0.2)  # 4 of 5 uses, ε 0.8 of 1
    st = stores.store()
    idx = indexer(deployment, st)
    idx.run_once()
    found = detect(st)
    ds = c.datasets[c.orgs[0].address]
    assert {(a.kind, a.dataset_id) for a in found if a.kind.startswith(("quota", "budget"))} == {
        ("quota-near", ds),
        ("budget-near", ds),
    }
    run_task(c, [0], epsilon=0.2)
    idx.run_once()
    found = detect(st)
    (quota,) = _of(found, "quota-exhausted")
    (budget,) = _of(found, "budget-exhausted")
    assert "5 of 5 uses" in quota.message and "1 of 1 ε" in budget.message
    assert quota.severity is Severity.MEDIUM and quota.task_id is not None and quota.tx_hashes


def test_a_quota_overrun_is_critical(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=1, max_uses=5)
    run_task(c, [0])
    run_task(c, [0])
    st = _indexed(deployment, stores)
    ds = c.datasets[c.orgs[0].address]
    head = c.admin.w3.eth.get_block("latest")
    _plant(
        st,
        "PolicySet",
        "DatasetRegistry",
        {"datasetId": ds, "maxUses": 1, "expiry": 2**40, "epsilonTotal": 5_000_000},
        head["number"],
        head["timestamp"],
        c.orgs[0].address,
    )
    (a,) = _of(detect(st), "quota-over")
    assert a.severity is Severity.CRITICAL and "2 of 1 uses" in a.message


def test_suspension_while_taking_part_and_acting_while_suspended(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=3)
    task_id = run_task(c, [0, 1, 2])
    hospital = c.orgs[2]
    res = c.admin.suspend(hospital.address)
    st = _indexed(deployment, stores)
    found = detect(st)
    (susp,) = _of(found, "participant-suspended")
    assert (susp.task_id, susp.org, susp.tx_hashes) == (task_id, hospital.address, (res.tx_hash,))
    assert not _of(found, "acted-while-suspended")

    # The contracts reject a suspended organisation's receipt; a faulty contract would not.
    block = c.admin.w3.eth.get_block("latest")
    _plant(
        st,
        "ReceiptSubmitted",
        "TaskManager",
        {
            "taskId": task_id,
            "participant": hospital.address,
            "resultHash": "0x" + h("r").hex(),
            "transcriptHash": "0x" + h("t").hex(),
            "inputFingerprint": "0x" + h("i").hex(),
            "algorithmHash": "0x" + c.algorithm.hex(),
            "deletionHash": "0x" + h("d").hex(),
            "startedAt": 1,
            "finishedAt": 2,
        },
        block["number"],
        block["timestamp"],
        hospital.address,
    )
    (acted,) = _of(detect(st), "acted-while-suspended")
    assert acted.severity is Severity.CRITICAL and acted.task_id == task_id and acted.org == hospital.address
    assert "ReceiptSubmitted" in acted.message and res.tx_hash in acted.tx_hashes


def test_a_local_log_that_disagrees_with_the_chain(stores: StoreFactory, deployment, snapshot, tmp_path):
    c = build_consortium(deployment, n_orgs=1)
    org = c.orgs[0]
    log = ActionLog(tmp_path / "log.jsonl")
    log.append("verify", 1, ok=True)
    log.append("abort", 1, why="x")
    org.anchor_log(*log.head())
    st = _indexed(deployment, stores)
    lines = [json.loads(x) for x in log.path.read_text().splitlines()]
    lines[0]["data"]["ok"] = False
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(x) + "\n" for x in lines))
    verify_node_log(st, org.address, bad, record=True)
    (a,) = _of(detect(st), "log-mismatch")
    assert a.org == org.address and a.severity is Severity.HIGH
    assert a.detail["first_bad_seq"] == 1 and "edited" in a.message
    # The organisation hands over its genuine log: the newest check passes, the anomaly goes.
    assert verify_node_log(st, org.address, log.path, record=True).ok
    assert not _of(detect(st), "log-mismatch")


def test_anomalies_are_persisted_idempotently_and_resolved(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=1, max_uses=5)
    for _ in range(4):
        run_task(c, [0])
    task_id, _ = c.orgs[0].submit_task(request_for(c, orgs=[0]))
    c.orgs[0].approve(task_id, c.orgs[0].request_hash(task_id))
    c.orgs[0].start(task_id)
    c.orgs[0].refuse(task_id, RefusalReason.DATA_UNAVAILABLE, h("disk"))
    st = stores.store()
    idx = indexer(deployment, st)
    idx.run_once()

    first = detect_and_record(st)
    keys = {a.key for a in first}
    assert {a.kind for a in first} >= {"refusal", "quota-exhausted"}
    with st.read() as s:
        rows = {r.key: (r.kind, r.message, r.first_seen, r.resolved_at) for r in s.scalars(select(AnomalyRow))}
    assert set(rows) == keys
    again = record(st, detect(st), seen_at=2_000_000_000)
    assert (again.new, again.updated, again.resolved) == (0, 0, 0)
    with st.read() as s:
        assert {r.key: r.first_seen for r in s.scalars(select(AnomalyRow))} == {k: v[2] for k, v in rows.items()}

    # The owner raises the quota: the quota anomaly is resolved, the refusal stays open.
    c.orgs[0].set_policy_limits(c.datasets[c.orgs[0].address], PolicyLimits(50, 2**40, 5_000_000))
    idx.run_once()
    result = record(st, detect(st), seen_at=2_000_000_100)
    assert result.resolved == 1 and result.new == 0
    with st.read() as s:
        resolved = {r.kind for r in s.scalars(select(AnomalyRow).where(AnomalyRow.resolved_at.isnot(None)))}
        open_ = {r.kind for r in s.scalars(select(AnomalyRow).where(AnomalyRow.resolved_at.is_(None)))}
    assert resolved == {"quota-exhausted"} and "refusal" in open_


def test_the_anomalies_of_a_full_history(stores: StoreFactory, deployment, snapshot):
    sc = populate(deployment)
    found = detect(_indexed(deployment, stores))
    assert sorted(a.kind for a in found) == ["dispute", "fingerprint-changed", "refusal"]
    (changed,) = _of(found, "fingerprint-changed")
    # every task on the telecom's old version had closed when it changed: medium, not high
    assert changed.severity is Severity.MEDIUM
    assert changed.detail["authorised_tasks"] == [sc.completed, sc.refused, sc.disputed]
