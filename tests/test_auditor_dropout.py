"""Participant dropouts (TaskManager.reportDropout) through the auditor, against the session
anvil: the result recipient of a 3-party task reports one started participant dropped and
the two others receipt. The indexer projects the dropout (state, reporter, block, tx), the
re-verification passes and names it, the anomaly detector flags it (never as a missing
receipt), the dashboard shows it on the task page and the anomalies page. Survivors that
disagree still make a dispute; a forged dropout fails the re-verification; a store of the
first schema holding dropout events is brought up to date by its migration."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select, update

from pcn.auditor.anomalies import Anomaly, Severity, detect, detect_and_record
from pcn.auditor.migrations import migrate, schema_diff
from pcn.auditor.projection import rebuild
from pcn.auditor.reports import build_report, read_csv_sections, report_csv
from pcn.auditor.store import EventRow, Store, TaskParticipant, TaskRow, make_engine, table_contents
from pcn.auditor.verify import (
    DELETION,
    DROPOUTS,
    OUTCOME,
    PARTICIPATION,
    RECEIPTS_AGREE,
    RECEIPTS_PRESENT,
    CheckStatus,
    Verdict,
    verify_task,
)
from pcn.auditor.web import create_dashboard_app
from pcn.auditor.web.render import report_html
from pcn.chain.errors import ContractRevert
from pcn.chain.ledger import TxResult
from pcn.chain.types import ParticipantState, TaskStatus
from pcn.devnet.deploy import devnet_key
from tests.helpers import Consortium, build_consortium, h
from tests.test_auditor_anomalies import _plant
from tests.test_auditor_support import (
    BACKENDS,
    StoreFactory,
    advance,
    good_receipt,
    indexer,
    run_task,
    store_factory,
)
from tests.test_auditor_web import DOMAIN, sign_in


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path) -> Iterator[StoreFactory]:
    yield from store_factory(request, tmp_path)


@dataclass
class Dropout:
    c: Consortium
    task_id: int
    report: TxResult  # the reportDropout transaction

    @property
    def recipient(self) -> str:  # bank0: requester, result recipient and participant
        return self.c.orgs[0].address

    @property
    def survivor(self) -> str:  # telecom1
        return self.c.orgs[1].address

    @property
    def dropped(self) -> str:  # hospital2
        return self.c.orgs[2].address


def dropout_task(deployment, kind: str = "fedavg", results: tuple[str, str] | None = ("model", "model")) -> Dropout:
    """A 3-party task (bank0 requests and receives the result), all started; bank0 reports
    hospital2 dropped; then bank0 and telecom1 receipt `results` (none when None)."""
    c = build_consortium(deployment, n_orgs=3, kind=kind)
    task_id = run_task(c, [0, 1, 2], min_survivors=2)
    advance(c.admin.rpc_url, c.admin.dropout_silence() + 1)  # hospital2 silent long enough
    report = c.orgs[0].report_dropout(task_id, c.orgs[2].address)
    if results is not None:
        for i, result in enumerate(results):
            c.orgs[i].submit_receipt(task_id, good_receipt(c, i, h(result)))
    return Dropout(c, task_id, report)


def _indexed(deployment, st: Store) -> Store:
    indexer(deployment, st).run_once()
    return st


def _of(found: list[Anomaly], kind: str) -> list[Anomaly]:
    return [a for a in found if a.kind == kind]


# ---------------------------------------------------------------------------- chain, tables, verdict, anomaly


def test_a_dropout_is_projected_verified_and_flagged(stores: StoreFactory, deployment, snapshot):
    d = dropout_task(deployment)
    ledger = d.c.orgs[0]
    assert ledger.task(d.task_id).status is TaskStatus.COMPLETED and ledger.dropped_count(d.task_id) == 1
    assert ledger.participant_state(d.task_id, d.dropped) is ParticipantState.DROPPED
    st = _indexed(deployment, stores.store())

    # projection: state, reporter, where; the event's actor is the reporter
    with st.read() as s:
        parts = {p.account: p for p in s.scalars(select(TaskParticipant).where(TaskParticipant.task_id == d.task_id))}
        task = s.get(TaskRow, d.task_id)
        ev = s.scalars(select(EventRow).where(EventRow.name == "ParticipantDropped")).one()
    gone = parts[d.dropped]
    assert gone.state == int(ParticipantState.DROPPED)
    assert gone.dropped_by == d.recipient and gone.drop_tx == d.report.tx_hash
    assert gone.dropped_block == d.report.block_number and gone.dropped_at == ev.block_timestamp
    assert gone.started_block is not None  # it had started: a dropout, not a no-show
    assert {parts[a].state for a in (d.recipient, d.survivor)} == {int(ParticipantState.RECEIPTED)}
    assert all(parts[a].dropped_block is None for a in (d.recipient, d.survivor))
    assert task is not None and task.status == int(TaskStatus.COMPLETED)
    assert (task.receipt_count, task.dropped_count) == (2, 1)
    assert ev.task_id == d.task_id and ev.actor == d.recipient and ev.tx_from == d.recipient
    assert ev.args["participant"] == d.dropped and ev.args["reportedBy"] == d.recipient

    # a rebuild from the events alone gives the same tables
    before = table_contents(st)
    with st.write() as s:
        rebuild(s)
    assert table_contents(st) == before

    # re-verification: passes, and says who dropped and who reported it
    v = verify_task(st, d.task_id)
    assert v.verdict is Verdict.PASS
    assert [c.name for c in v.checks if c.status is not CheckStatus.PASS] == []
    drop = v.check(DROPOUTS)
    assert f"participants dropped: {d.dropped} (reported by {d.recipient} at block {d.report.block_number})" in (
        drop.message
    )
    assert "fedavg tolerates dropouts" in drop.message and drop.tx_hashes == (d.report.tx_hash,)
    assert "all 2 receipts due present; 1 dropped participant(s) owe none" in v.check(RECEIPTS_PRESENT).message
    assert "dropped participant(s) owe none" in v.check(DELETION).message
    assert "1 later reported dropped" in v.check(PARTICIPATION).message
    assert "reported dropped, not waited for" in v.check(OUTCOME).message
    assert verify_task(st, d.task_id).to_dict()["checks"][-1]["name"] == OUTCOME

    # the anomaly: one, low for fedavg, linked to task, dropped org, reporter and transaction
    found = detect(st)
    (a,) = _of(found, "participant-dropped")
    assert a.key == f"participant-dropped:{d.task_id}:{d.dropped}"
    assert a.severity is Severity.LOW and a.task_id == d.task_id and a.org == d.dropped
    assert a.tx_hashes == (d.report.tx_hash,) and a.block_number == d.report.block_number
    assert a.occurred_at == ev.block_timestamp
    assert a.detail["reported_by"] == d.recipient and a.detail["dropout_tolerant"] is True
    assert "hospital2" in a.message and "bank0" in a.message and "result recipient" in a.message
    assert {x.kind for x in found if x.task_id == d.task_id} == {"participant-dropped"}
    detect_and_record(st)
    assert [x.kind for x in detect_and_record(st) if x.task_id == d.task_id] == ["participant-dropped"]


def test_an_algorithm_not_built_for_dropouts_cannot_drop_anyone(deployment, snapshot):
    """#13.5: the chain itself refuses a dropout for an algorithm the admin did not approve as
    dropout-tolerant (stats), however long the party has been silent."""
    with pytest.raises(ContractRevert) as err:
        dropout_task(deployment, kind="stats")
    assert err.value.name == "AlgorithmNotDropoutTolerant"


def test_survivors_that_disagree_still_make_a_dispute(stores: StoreFactory, deployment, snapshot):
    d = dropout_task(deployment, results=("model", "other model"))
    assert d.c.orgs[0].task(d.task_id).status is TaskStatus.DISPUTED
    st = _indexed(deployment, stores.store())
    with st.read() as s:
        task = s.get(TaskRow, d.task_id)
        assert task is not None and task.status == int(TaskStatus.DISPUTED) and task.dropped_count == 1
    v = verify_task(st, d.task_id)
    assert v.verdict is Verdict.FAIL and v.status is TaskStatus.DISPUTED
    assert {c.name for c in v.failures} == {RECEIPTS_AGREE}
    assert d.dropped not in v.check(RECEIPTS_AGREE).message  # the dropped party is no side of the dispute
    assert v.check(OUTCOME).status is CheckStatus.PASS and "disputed" in v.check(OUTCOME).message
    assert v.check(DROPOUTS).status is CheckStatus.PASS
    found = detect(st)
    (dispute,) = _of(found, "dispute")
    assert dispute.task_id == d.task_id and "hospital2" in dispute.message
    assert "was reported dropped by bank0" in dispute.message and "owed no receipt" in dispute.message
    assert dispute.detail["dropped"] == [d.dropped]
    assert len(_of(found, "participant-dropped")) == 1


def test_a_dropped_participant_is_never_a_missing_receipt(stores: StoreFactory, deployment, snapshot, devnet):
    """Recipient reports hospital2 dropped and receipts; telecom1 goes silent; the deadline
    passes: only telecom1 owes a receipt."""
    d = dropout_task(deployment, results=None)
    d.c.orgs[0].submit_receipt(d.task_id, good_receipt(d.c, 0, h("model")))
    st = stores.store()
    idx = indexer(deployment, st)
    idx.run_once()
    running = verify_task(st, d.task_id)
    assert running.verdict is Verdict.INCOMPLETE
    assert running.check(RECEIPTS_PRESENT).message == f"waiting for receipts from {d.survivor}"

    advance(devnet.rpc_url, 3601)
    idx.run_once()
    found = detect(st)
    assert [a.org for a in _of(found, "receipt-missing")] == [d.survivor]
    (expired,) = _of(found, "task-expired")
    assert "1 of 2 receipts (1 participant(s) reported dropped owe none)" in expired.message
    assert len(_of(found, "participant-dropped")) == 1
    late = verify_task(st, d.task_id)
    assert {c.name for c in late.failures} == {RECEIPTS_PRESENT, OUTCOME}
    missing = late.check(RECEIPTS_PRESENT).message
    assert d.survivor in missing and d.dropped not in missing

    d.c.admin.expire(d.task_id)
    idx.run_once()
    expired_v = verify_task(st, d.task_id)
    assert {c.name for c in expired_v.failures} == {RECEIPTS_PRESENT}
    assert expired_v.check(DROPOUTS).status is CheckStatus.PASS  # reported while running, before the deadline


def test_a_dropout_against_the_rules_fails_the_reverification(stores: StoreFactory, deployment, snapshot):
    """A ParticipantDropped a faulty contract could emit: by a participant that is not the
    recipient, of a party that had receipted, after the task had completed."""
    c = build_consortium(deployment, n_orgs=3, kind="fedavg")
    task_id = run_task(c, [0, 1, 2], result=b"model")
    st = _indexed(deployment, stores.store())
    with st.read() as s:
        task = s.get(TaskRow, task_id)
        assert task is not None and task.closed_block is not None
        closed_block, closed_at = task.closed_block, task.closed_at
    forged = {"taskId": task_id, "participant": c.orgs[2].address, "reportedBy": c.orgs[1].address}
    _plant(st, "ParticipantDropped", "TaskManager", forged, closed_block + 1, closed_at + 1, c.orgs[1].address)
    v = verify_task(st, task_id)
    assert v.verdict is Verdict.FAIL and {ch.name for ch in v.failures} == {DROPOUTS}
    msg = v.check(DROPOUTS).message
    for needle in ("not the result recipient", "after posting its own receipt", "yet has a receipt on chain"):
        assert needle in msg, needle
    assert "while the task was not running" in msg


# ---------------------------------------------------------------------------- migration


def test_the_migration_projects_dropouts_a_first_schema_store_already_holds(stores: StoreFactory, deployment, snapshot):
    """A store of schema 1 written by a pcn that did not know ParticipantDropped (the event
    stored, not projected) reaches exactly what indexing with this pcn gives."""
    d = dropout_task(deployment)
    reference = _indexed(deployment, stores.store())
    url = stores.url()
    old = make_engine(url)
    try:
        assert migrate(old, target=1) == [1]
        v1 = MetaData()
        v1.reflect(old)
        ref = MetaData()
        ref.reflect(reference.engine)
        with reference.engine.connect() as src, old.begin() as dst:
            for tbl in v1.sorted_tables:
                if tbl.name == "schema_version":
                    continue
                names = [c.name for c in tbl.columns]
                rows = src.execute(select(*(ref.tables[tbl.name].c[n] for n in names))).all()
                if rows:
                    dst.execute(tbl.insert(), [dict(zip(names, r, strict=True)) for r in rows])
            # what the older pcn had made of the event: nothing
            parts, events = v1.tables["task_participants"], v1.tables["events"]
            dst.execute(update(parts).where(parts.c.account == d.dropped).values(state=int(ParticipantState.STARTED)))
            dst.execute(update(events).where(events.c.name == "ParticipantDropped").values(actor=None))
    finally:
        old.dispose()
    upgraded = Store(url)  # migrates to the newest schema on opening
    try:
        assert schema_diff(upgraded.engine) == []
        assert migrate(upgraded.engine) == []
        assert table_contents(upgraded) == table_contents(reference)
    finally:
        upgraded.dispose()


# ---------------------------------------------------------------------------- dashboard


def _utc(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def test_the_dashboard_shows_the_dropout(deployment, snapshot, tmp_path):
    d = dropout_task(deployment)
    d.c.admin.grant_auditor(Account.from_key(devnet_key(1)).address)  # the dashboard's regulator
    st = _indexed(deployment, Store(tmp_path / "auditor.sqlite"))
    try:
        detect_and_record(st)
        with st.read() as s:
            ev = s.scalars(select(EventRow).where(EventRow.name == "ParticipantDropped")).one()
        client = TestClient(create_dashboard_app(st, d.c.admin, domain=DOMAIN), follow_redirects=False)
        assert sign_in(client).status_code == 200

        # the task page: the step in the timeline (block, time, tx, reporter), the participant's state
        page = client.get(f"/tasks/{d.task_id}")
        assert page.status_code == 200
        text = page.text
        step = "hospital2 stopped answering: reported dropped out by the result recipient bank0"
        assert step in text
        row = text[text.index(step) - 600 : text.index(step) + 600]
        assert f"#{ev.block_number:,}" in row and _utc(ev.block_timestamp) in row
        assert f'href="/tx/{d.report.tx_hash}"' in row
        assert "Dropped out" in text and "reported dropped out by" in text and "no receipt due" in text
        assert "1 dropped out" in text and "receipts 2/2" in text
        assert ">Verified<" in text and "Any participant dropping out was reported by the rules" in text
        assert "participants dropped: hospital2 (reported by bank0" in text
        assert "Participant dropped out mid-computation" in text  # the task's anomalies

        api = client.get(f"/api/tasks/{d.task_id}").json()
        assert api["status"]["key"] == "completed" and api["verdict"]["verdict"] == "pass"
        assert api["progress"] == {"approvals": [3, 3], "started": [3, 3], "receipts": [2, 2], "dropped": [1, 3]}
        by_name = {p["name"]: p for p in api["participant_list"]}
        assert by_name["hospital2"]["state"] == "dropped" and by_name["hospital2"]["state_label"] == "Dropped out"
        assert by_name["hospital2"]["receipt"] is None
        assert by_name["hospital2"]["dropout"] == {
            "reported_by": {"account": d.recipient, "name": "bank0", "member": True},
            "block": ev.block_number,
            "time": ev.block_timestamp,
            "tx": d.report.tx_hash,
        }
        assert by_name["telecom1"]["state"] == "receipted" and by_name["telecom1"]["dropout"] is None
        (step_json,) = [e for e in api["timeline"] if e["name"] == "ParticipantDropped"]
        assert (step_json["block"], step_json["time"], step_json["tx"]) == (
            ev.block_number,
            ev.block_timestamp,
            d.report.tx_hash,
        )
        assert step_json["actor"]["name"] == "bank0" and step_json["tone"] == "warn"
        check = next(c for c in api["verdict"]["checks"] if c["name"] == DROPOUTS)
        assert check["status"] == "pass" and "hospital2 (reported by bank0" in check["text"]

        # the anomalies page: the kind, its plain-words label and explanation, its links
        anomalies = client.get("/anomalies").text
        assert "Participant dropped out mid-computation" in anomalies
        assert "stopped answering in the middle of the computation" in anomalies  # the explanation
        filtered = client.get("/anomalies", params={"kind": "participant-dropped"}).text
        assert f'href="/tasks/{d.task_id}"' in filtered and f'href="/tx/{d.report.tx_hash}"' in filtered
        assert '<p class="kind-help"><b>Participant dropped out mid-computation</b>: A participant stopped' in filtered
        assert "hospital2" in filtered and "bank0" in filtered
        listed = client.get("/api/anomalies", params={"kind": "participant-dropped"}).json()
        assert listed["total"] == 1
        (item,) = listed["items"]
        assert item["kind_label"] == "Participant dropped out mid-computation" and item["severity"] == "low"
        assert "stopped answering" in item["kind_help"]
        assert item["task_id"] == d.task_id and item["org"]["name"] == "hospital2"
        assert item["tx_hashes"] == [d.report.tx_hash] and item["detail"]["reported_by"] == d.recipient
        kinds = {k["kind"]: k for k in listed["kinds"]}
        assert kinds["participant-dropped"]["label"] == "Participant dropped out mid-computation"
        assert not [a for a in client.get("/api/anomalies").json()["items"] if a["kind"] == "receipt-missing"]

        # the periodic report names the dropout too
        report = build_report(st, ev.block_timestamp - 3600, ev.block_timestamp + 3600)
        (item,) = [x for x in report["tasks"] if x["task_id"] == d.task_id]
        assert item["dropped"] == [d.dropped] and item["verdict"] == "pass"
        assert [a["kind"] for a in report["anomalies"]] == ["participant-dropped"]
        (row,) = read_csv_sections(report_csv(report))["Tasks"]
        assert row["dropped"] == d.dropped
        assert "hospital2 (dropped out)" in report_html(report)
    finally:
        st.dispose()
