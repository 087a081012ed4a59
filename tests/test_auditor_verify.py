"""Independent re-verification against the session anvil: tasks (clean, disputed, refused,
receipts missing, never started, policy at the authorisation block), recipients' result
files, and organisations' exported action logs (edited, removed, inserted entries,
truncation, a head that disagrees with the chain's anchor)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from pcn.algorithms.stats.protocol import StatsProtocol
from pcn.auditor.projection import rebuild
from pcn.auditor.store import DatasetUse, EventRow, LogCheck, Store
from pcn.auditor.verify import (
    APPROVALS,
    DATASET_VERSION,
    INPUT_FINGERPRINT,
    OUTCOME,
    PARTICIPATION,
    POLICY_ALGORITHM,
    POLICY_BUDGET,
    POLICY_EXPIRY,
    POLICY_RECIPIENT,
    POLICY_REQUESTER,
    POLICY_USES,
    RECEIPT_ALGORITHM,
    RECEIPTS_AGREE,
    RECEIPTS_PRESENT,
    TIMING,
    CheckStatus,
    LogProblemKind,
    TaskNotIndexed,
    Verdict,
    dumps,
    verify_all,
    verify_node_log,
    verify_result_document,
    verify_result_file,
    verify_task,
)
from pcn.chain.ledger import Ledger
from pcn.chain.types import PolicyLimits, RefusalReason
from pcn.runtime.actionlog import ActionLog, entry_hash
from tests.helpers import build_consortium, h, receipt_for, request_for
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


def _index(deployment, st: Store) -> None:
    indexer(deployment, st).run_once()


def _status(verdict, name: str) -> CheckStatus:
    return verdict.check(name).status


# ---------------------------------------------------------------------------- tasks


def test_a_clean_completed_task_verifies(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=3)
    task_id = run_task(c, [0, 1, 2], result=b"joint mean")
    st = stores.store()
    _index(deployment, st)
    v = verify_task(st, task_id)
    assert v.verdict is Verdict.PASS and v.ok
    assert [ch for ch in v.checks if ch.status is not CheckStatus.PASS] == []
    assert "all 3 dataset owner(s) approved" in v.check(APPROVALS).message
    assert "use 1 of 10" in v.check(POLICY_USES).message
    assert "ε 0.5 of 5 spent" in v.check(POLICY_BUDGET).message
    assert v.check(RECEIPTS_AGREE).tx_hashes  # links to the receipt transactions
    doc = json.loads(json.dumps(v.to_dict()))
    assert doc["verdict"] == "pass" and len(doc["checks"]) == len(v.checks)
    with pytest.raises(TaskNotIndexed):
        verify_task(st, 999)


def test_a_receipt_whose_input_is_not_the_registered_data_is_a_warning(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2)
    task_id = run_task(c, [0, 1])
    c.orgs[0].submit_receipt(task_id, good_receipt(c, 0, h("r")))
    c.orgs[1].submit_receipt(task_id, receipt_for(c, c.orgs[1], h("r")))  # input fingerprint of no dataset
    st = stores.store()
    _index(deployment, st)
    v = verify_task(st, task_id)
    assert _status(v, INPUT_FINGERPRINT) is CheckStatus.WARN
    assert c.orgs[1].address in v.check(INPUT_FINGERPRINT).message
    assert v.verdict is Verdict.PASS  # suspicious, not a proven violation


@pytest.mark.parametrize("fault", ["result", "algorithm"])
def test_a_disputed_task_fails_on_the_disagreeing_receipt(stores: StoreFactory, deployment, snapshot, fault):
    c = build_consortium(deployment, n_orgs=3)
    task_id = run_task(c, [0, 1, 2])
    for i in range(3):
        odd = i == 2
        c.orgs[i].submit_receipt(
            task_id,
            good_receipt(
                c,
                i,
                h("other" if odd and fault == "result" else "agreed"),
                algorithm=h("other-code") if odd and fault == "algorithm" else None,
            ),
        )
    st = stores.store()
    _index(deployment, st)
    v = verify_task(st, task_id)
    assert v.verdict is Verdict.FAIL
    failing = {ch.name for ch in v.failures}
    if fault == "result":
        assert failing == {RECEIPTS_AGREE}
        assert c.orgs[2].address in v.check(RECEIPTS_AGREE).message
    else:
        assert failing == {RECEIPT_ALGORITHM}
    assert _status(v, OUTCOME) is CheckStatus.PASS  # the chain rightly declared a dispute


def test_a_refused_task_fails_participation_with_the_reason(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2)
    task_id, _ = c.orgs[0].submit_task(request_for(c))
    for org in c.orgs:
        org.approve(task_id, org.request_hash(task_id))
    c.orgs[0].start(task_id)
    res = c.orgs[1].refuse(task_id, RefusalReason.FINGERPRINT_MISMATCH, h("tampered"))
    st = stores.store()
    _index(deployment, st)
    v = verify_task(st, task_id)
    assert {ch.name for ch in v.failures} == {PARTICIPATION}
    check = v.check(PARTICIPATION)
    assert "FINGERPRINT_MISMATCH" in check.message and c.orgs[1].address in check.message
    assert check.tx_hashes == (res.tx_hash,)
    assert _status(v, RECEIPTS_PRESENT) is CheckStatus.SKIP


def test_a_missing_receipt_fails_once_the_deadline_has_passed(stores: StoreFactory, deployment, snapshot, devnet):
    c = build_consortium(deployment, n_orgs=3)
    task_id = run_task(c, [0, 1, 2], deadline_in=600)
    for i in (0, 1):
        c.orgs[i].submit_receipt(task_id, good_receipt(c, i, h("r")))
    st = stores.store()
    idx = indexer(deployment, st)
    idx.run_once()
    before = verify_task(st, task_id)
    assert before.verdict is Verdict.INCOMPLETE
    assert _status(before, RECEIPTS_PRESENT) is CheckStatus.SKIP

    advance(devnet.rpc_url, 601)
    idx.run_once()
    late = verify_task(st, task_id)
    assert late.verdict is Verdict.FAIL
    assert {ch.name for ch in late.failures} == {RECEIPTS_PRESENT, OUTCOME}
    assert c.orgs[2].address in late.check(RECEIPTS_PRESENT).message
    assert "after its deadline" in late.check(OUTCOME).message

    c.admin.expire(task_id)  # now the chain says so too
    idx.run_once()
    expired = verify_task(st, task_id)
    assert {ch.name for ch in expired.failures} == {RECEIPTS_PRESENT}


def test_an_authorised_task_nobody_started_fails_participation(stores: StoreFactory, deployment, snapshot, devnet):
    c = build_consortium(deployment, n_orgs=2)
    task_id, _ = c.orgs[0].submit_task(request_for(c, deadline_in=300))
    for org in c.orgs:
        org.approve(task_id, org.request_hash(task_id))
    advance(devnet.rpc_url, 301)
    st = stores.store()
    _index(deployment, st)
    v = verify_task(st, task_id)
    assert "never started before the deadline" in v.check(PARTICIPATION).message
    assert _status(v, PARTICIPATION) is CheckStatus.FAIL


def test_a_pending_task_is_incomplete_with_the_missing_approvals_named(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=3)
    task_id, _ = c.orgs[0].submit_task(request_for(c))
    c.orgs[0].approve(task_id, c.orgs[0].request_hash(task_id))
    st = stores.store()
    _index(deployment, st)
    v = verify_task(st, task_id)
    assert v.verdict is Verdict.INCOMPLETE and not v.failures
    assert "1 of 3 owner approvals" in v.check(APPROVALS).message
    assert c.orgs[2].address in v.check(APPROVALS).message


def test_policy_is_judged_as_it_stood_at_the_authorisation(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2, max_uses=1, epsilon_total=0.5)
    task_id = run_task(c, [0, 1], result=b"r", epsilon=0.5)  # the last use and the whole budget
    owner = c.orgs[1]
    ds = c.datasets[owner.address]
    # Afterwards the owner revokes everything and lets the policy expire: the task stays valid.
    owner.set_algorithm_allowed(ds, c.algorithm, False)
    owner.set_requester_allowed(ds, c.orgs[0].address, False)
    owner.set_recipient_allowed(ds, c.orgs[0].address, False)
    owner.set_policy_limits(ds, PolicyLimits(1, 1, 500_000))
    st = stores.store()
    _index(deployment, st)
    v = verify_task(st, task_id)
    assert v.verdict is Verdict.PASS, [ch.message for ch in v.failures]
    assert "use 1 of 1" in v.check(POLICY_USES).message
    assert "ε 0.5 of 0.5" in v.check(POLICY_BUDGET).message


_FAKE_TX = "0x" + "ee" * 32


@pytest.mark.parametrize(
    ("planted", "check"),
    [
        ({"name": "PolicyAlgorithmSet", "args": {"allowed": False}}, POLICY_ALGORITHM),
        ({"name": "PolicyRequesterSet", "args": {"allowed": False}}, POLICY_REQUESTER),
        ({"name": "PolicyRecipientSet", "args": {"allowed": False}}, POLICY_RECIPIENT),
        ({"name": "PolicySet", "args": {"maxUses": 10, "expiry": 1, "epsilonTotal": 5_000_000}}, POLICY_EXPIRY),
        ({"name": "PolicySet", "args": {"maxUses": 0, "expiry": 2**40, "epsilonTotal": 5_000_000}}, POLICY_USES),
        ({"name": "PolicySet", "args": {"maxUses": 10, "expiry": 2**40, "epsilonTotal": 1}}, POLICY_BUDGET),
        ({"name": "DatasetVersionPublished", "args": {}}, DATASET_VERSION),
    ],
)
def test_a_policy_violation_at_the_authorisation_is_caught(stores: StoreFactory, deployment, snapshot, planted, check):
    """The contracts enforce the policy, but the auditor must not trust them: plant, just
    before the authorisation, an event saying the policy forbade the task (as a faulty
    contract or a forged chain would show it) and re-derive; the right check fails."""
    c = build_consortium(deployment, n_orgs=2)
    task_id = run_task(c, [0, 1], result=b"r")
    st = stores.store()
    _index(deployment, st)
    owner = c.orgs[1]
    ds = c.datasets[owner.address]
    with st.write() as s:
        use = s.scalars(select(DatasetUse).where(DatasetUse.task_id == task_id, DatasetUse.dataset_id == ds)).one()
        args: dict = {"datasetId": ds, **planted["args"]}
        if planted["name"] == "PolicyAlgorithmSet":
            args["algorithmHash"] = "0x" + c.algorithm.hex()
        elif planted["name"] == "PolicyRequesterSet":
            args["requester"] = c.orgs[0].address
        elif planted["name"] == "PolicyRecipientSet":
            args["recipient"] = c.orgs[0].address
        elif planted["name"] == "DatasetVersionPublished":
            args.update(
                owner=owner.address,
                version=2,
                merkleRoot="0x" + h("new").hex(),
                schemaHash="0x" + h("schema").hex(),
                rowCount=1,
                metadataHash="0x" + h("m").hex(),
            )
        s.add(
            EventRow(
                contract="DatasetRegistry",
                name=planted["name"],
                args=args,
                block_number=use.block_number,
                block_hash="0x" + "ab" * 32,
                block_timestamp=use.block_timestamp,
                tx_hash=_FAKE_TX,
                log_index=-1,
                dataset_id=ds,
                actor=owner.address,
            )
        )
        s.flush()
        rebuild(s)
    v = verify_task(st, task_id)
    assert check in {ch.name for ch in v.failures}, v.to_dict()
    assert f"dataset {ds}" in v.check(check).message


def test_an_authorisation_without_every_owner_is_caught(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2)
    task_id = run_task(c, [0, 1], result=b"r")
    st = stores.store()
    _index(deployment, st)
    with st.write() as s:  # as if the chain held no approval from the second owner
        s.execute(
            delete(EventRow).where(
                EventRow.name == "TaskApproved", EventRow.task_id == task_id, EventRow.actor == c.orgs[1].address
            )
        )
        rebuild(s)
    v = verify_task(st, task_id)
    assert _status(v, APPROVALS) is CheckStatus.FAIL
    assert f"without the approval of {c.orgs[1].address}" in v.check(APPROVALS).message


def test_a_receipt_posted_before_the_start_is_a_timing_failure(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2)
    task_id = run_task(c, [0, 1], result=b"r")
    st = stores.store()
    _index(deployment, st)
    with st.write() as s:
        s.execute(delete(EventRow).where(EventRow.name == "TaskStarted", EventRow.actor == c.orgs[1].address))
        rebuild(s)
    v = verify_task(st, task_id)
    assert _status(v, TIMING) is CheckStatus.FAIL
    assert "without a recorded start" in v.check(TIMING).message


# ---------------------------------------------------------------------------- results


def test_a_result_file_is_checked_against_the_on_chain_commitment(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2)  # the algorithm's registered kind is "stats"
    result = json.dumps({"mean": 41.5}).encode()
    opening = h("commit-a") + h("commit-b") + h("salt")
    commitment = StatsProtocol.commitment_for(result, opening)
    task_id = run_task(c, [0, 1])
    for i in (0, 1):
        c.orgs[i].submit_receipt(task_id, good_receipt(c, i, commitment))
    pending, _ = c.orgs[0].submit_task(request_for(c))
    st = stores.store()
    _index(deployment, st)

    ok = verify_result_file(st, task_id, result, opening)
    assert ok.ok and ok.on_chain == ok.computed == "0x" + commitment.hex()
    forged = verify_result_file(st, task_id, json.dumps({"mean": 40.0}).encode(), opening)
    assert not forged.ok and "not the result the participants agreed on" in forged.message
    assert not verify_result_file(st, task_id, result, b"short").ok
    assert "no agreed result" in verify_result_file(st, pending, result, opening).message
    custom = verify_result_file(st, task_id, b"x", b"", commitment_for=lambda r, o: commitment)
    assert custom.ok
    doc = {
        "task_id": task_id,
        "result": result.decode(),
        "opening": opening.hex(),
        "commitment": "0x" + commitment.hex(),
    }
    assert verify_result_document(st, doc).ok
    assert not verify_result_document(st, {**doc, "commitment": "0x" + "00" * 32}).ok


# ---------------------------------------------------------------------------- node logs


@dataclass
class NodeLog:
    path: Path
    org: Ledger
    tasks: list[int]
    lines: list[dict]

    def write(self, lines: list[dict], name: str) -> Path:
        out = self.path.with_name(name)
        out.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
        return out


def _rehash(lines: list[dict], start: int) -> None:
    """Re-chain every entry from index `start` on (what a careful forger does)."""
    for i in range(start, len(lines)):
        if i > 0:
            lines[i]["prev"] = lines[i - 1]["hash"]
        body = {k: v for k, v in lines[i].items() if k != "hash"}
        lines[i]["hash"] = entry_hash(body)


def _node_log(c, tmp_path: Path) -> NodeLog:
    """What the telecom's node logs for a completed and a refused task, anchored after each."""
    telecom = c.orgs[1]
    log = ActionLog(tmp_path / "telecom-actions.jsonl")
    done, _ = c.orgs[0].submit_task(request_for(c, orgs=[0, 1], epsilon=0.1))
    for org in c.orgs[:2]:
        org.approve(done, org.request_hash(done))
    c.orgs[0].start(done)
    start_tx = telecom.start(done).tx_hash
    log.append("queued", done, block=1)
    log.append("verify", done, ok=True, block=1, checks=[["fingerprint", "ok"]])
    log.append("start", done, tx=start_tx, block=1)
    receipt = good_receipt(c, 1, h("agreed"))
    log.append("protocol-done", done, sent=3, received=3, transcript="ab", commitment=h("agreed").hex())
    log.append("delete", done, items=["scratch/1"], hash=receipt.deletion_hash.hex())
    c.orgs[0].submit_receipt(done, good_receipt(c, 0, h("agreed")))
    res = telecom.submit_receipt(done, receipt)
    log.append("receipt", done, tx=res.tx_hash, result_hash=h("agreed").hex())
    telecom.anchor_log(*log.head())

    refused, _ = c.orgs[0].submit_task(request_for(c, orgs=[0, 1]))
    for org in c.orgs[:2]:
        org.approve(refused, org.request_hash(refused))
    log.append("verify", refused, ok=False, block=2, checks=[["fingerprint", "mismatch"]])
    res = telecom.refuse(refused, RefusalReason.FINGERPRINT_MISMATCH, h("detail"))
    log.append("refuse", refused, reason="FINGERPRINT_MISMATCH", detail="rows changed", tx=res.tx_hash)
    telecom.anchor_log(*log.head())
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    return NodeLog(log.path, telecom, [done, refused], lines)


@pytest.fixture
def node_log(deployment, snapshot, tmp_path) -> NodeLog:
    c = build_consortium(deployment, n_orgs=2)
    return _node_log(c, tmp_path)


def test_a_faithful_log_agrees_with_the_chain(stores: StoreFactory, deployment, node_log: NodeLog):
    st = stores.store()
    _index(deployment, st)
    v = verify_node_log(st, node_log.org.address, node_log.path, record=True)
    assert v.ok, [p.message for p in v.problems]
    assert v.chain_intact and v.entries == len(node_log.lines) == v.head_seq
    assert v.anchors_checked == 2 and v.actions_checked == 3  # start, receipt, refusal
    with st.read() as s:
        assert s.scalars(select(LogCheck.ok)).one() is True


def test_an_edited_entry_is_located(stores: StoreFactory, deployment, node_log: NodeLog):
    st = stores.store()
    _index(deployment, st)
    lines = [dict(x) for x in node_log.lines]
    lines[1]["data"] = {**lines[1]["data"], "ok": False}  # the verification outcome, rewritten
    v = verify_node_log(st, node_log.org.address, node_log.write(lines, "edited.jsonl"))
    assert not v.chain_intact and v.first_bad_seq == 2
    assert [(p.kind, p.seq) for p in v.problems] == [(LogProblemKind.EDITED, 2)]


def test_an_edited_and_rehashed_entry_is_located(stores: StoreFactory, deployment, node_log: NodeLog):
    st = stores.store()
    _index(deployment, st)
    lines = [dict(x) for x in node_log.lines]
    lines[3]["data"] = {**lines[3]["data"], "sent": 99}
    lines[3]["hash"] = entry_hash({k: v for k, v in lines[3].items() if k != "hash"})
    v = verify_node_log(st, node_log.org.address, node_log.write(lines, "rehashed.jsonl"))
    assert (LogProblemKind.EDITED, 4) in [(p.kind, p.seq) for p in v.problems]
    assert v.first_bad_seq == 4


def test_a_consistently_rewritten_log_is_caught_by_the_anchors(stores: StoreFactory, deployment, node_log: NodeLog):
    st = stores.store()
    _index(deployment, st)
    lines = [dict(x) for x in node_log.lines]
    lines[4]["data"] = {**lines[4]["data"], "items": []}  # hide what was deleted, re-chain everything after
    _rehash(lines, 4)
    v = verify_node_log(st, node_log.org.address, node_log.write(lines, "rewritten.jsonl"))
    assert v.chain_intact  # the chain itself verifies...
    kinds = [(p.kind, p.seq) for p in v.problems]
    assert (LogProblemKind.ANCHOR_MISMATCH, 6) in kinds and (LogProblemKind.ANCHOR_MISMATCH, 8) in kinds
    assert "between entries 1 and 6" in next(p.message for p in v.problems if p.seq == 6)


def test_a_removed_entry_is_located_and_its_on_chain_action_missed(stores: StoreFactory, deployment, node_log: NodeLog):
    st = stores.store()
    _index(deployment, st)
    lines = [dict(x) for x in node_log.lines]
    start = lines.pop(2)  # the "start" entry
    assert start["action"] == "start"
    v = verify_node_log(st, node_log.org.address, node_log.write(lines, "removed.jsonl"))
    kinds = {(p.kind, p.seq) for p in v.problems}
    assert (LogProblemKind.REMOVED, 3) in kinds
    missing = [p for p in v.problems if p.kind is LogProblemKind.MISSING_ENTRY]
    assert [p.tx_hash for p in missing] == [start["data"]["tx"]]
    assert v.first_bad_seq == 3


def test_an_inserted_entry_is_located(stores: StoreFactory, deployment, node_log: NodeLog):
    st = stores.store()
    _index(deployment, st)
    lines = [dict(x) for x in node_log.lines]
    # A forged entry 3 chained onto entry 2, placed before the genuine entry 3.
    forged = {
        "seq": 3,
        "at": lines[2]["at"],
        "action": "verify",
        "task_id": node_log.tasks[0],
        "data": {"ok": True, "note": "forged"},
        "prev": lines[1]["hash"],
    }
    forged["hash"] = entry_hash(forged)
    lines.insert(2, forged)
    v = verify_node_log(st, node_log.org.address, node_log.write(lines, "inserted.jsonl"))
    assert [(p.kind, p.seq, p.line) for p in v.problems] == [(LogProblemKind.INSERTED, 3, 3)]


def test_an_entry_naming_a_transaction_the_chain_lacks_is_flagged(stores: StoreFactory, deployment, node_log: NodeLog):
    st = stores.store()
    _index(deployment, st)
    log = ActionLog(node_log.path)
    log.append("receipt", node_log.tasks[1], tx="0x" + "12" * 32, result_hash="00")
    v = verify_node_log(st, node_log.org.address, node_log.path)
    assert [(p.kind, p.seq) for p in v.problems] == [(LogProblemKind.UNKNOWN_TX, len(node_log.lines) + 1)]


def test_a_truncated_log_is_caught_by_an_anchor_beyond_its_end(stores: StoreFactory, deployment, node_log: NodeLog):
    st = stores.store()
    _index(deployment, st)
    lines = node_log.lines[:6]  # everything after the first anchor removed
    v = verify_node_log(st, node_log.org.address, node_log.write(lines, "truncated.jsonl"))
    kinds = [(p.kind, p.seq) for p in v.problems]
    assert kinds == [(LogProblemKind.ANCHOR_BEYOND_END, 7)]
    assert "entries 7…8 were removed" in v.problems[0].message


def test_a_head_that_disagrees_with_the_on_chain_anchor(stores: StoreFactory, deployment, node_log: NodeLog):
    log = ActionLog(node_log.path)
    log.append("abort", node_log.tasks[1], why="late")
    seq, _head = log.head()
    node_log.org.anchor_log(seq, h("not the head of the log"))
    st = stores.store()
    _index(deployment, st)
    v = verify_node_log(st, node_log.org.address, node_log.path)
    assert v.chain_intact
    assert [(p.kind, p.seq) for p in v.problems] == [(LogProblemKind.ANCHOR_MISMATCH, seq)]


def test_a_log_that_misreports_an_action_is_flagged(stores: StoreFactory, deployment, snapshot, tmp_path):
    c = build_consortium(deployment, n_orgs=2)
    nl = _node_log(c, tmp_path)
    lines = [dict(x) for x in nl.lines]
    lines[5]["data"] = {**lines[5]["data"], "result_hash": h("something else").hex()}  # the receipt entry
    lines[4]["data"] = {**lines[4]["data"], "hash": h("other deletion").hex()}  # the delete entry
    _rehash(lines, 4)
    path = nl.write(lines, "misreported.jsonl")
    st = stores.store()
    _index(deployment, st)
    v = verify_node_log(st, nl.org.address, path)
    mismatches = [p for p in v.problems if p.kind is LogProblemKind.CONTENT_MISMATCH]
    assert {p.seq for p in mismatches} == {5, 6}
    assert any("result hash" in p.message for p in mismatches)
    assert any("deletion" in p.message for p in mismatches)


def test_every_task_of_a_full_history(stores: StoreFactory, deployment, snapshot):
    sc = populate(deployment)
    st = stores.store()
    _index(deployment, st)
    verdicts = {v.task_id: v for v in verify_all(st)}
    assert set(verdicts) == {sc.completed, sc.refused, sc.cancelled, sc.disputed}
    assert verdicts[sc.completed].verdict is Verdict.PASS
    assert verdicts[sc.cancelled].verdict is Verdict.PASS  # cancelled before anything ran: nothing wrong
    assert {c.name for c in verdicts[sc.refused].failures} == {PARTICIPATION}
    assert {c.name for c in verdicts[sc.disputed].failures} == {RECEIPTS_AGREE}
    assert "relayed" in verdicts[sc.completed].check(APPROVALS).message
    assert json.loads(dumps(verdicts[sc.disputed]))["verdict"] == "fail"
