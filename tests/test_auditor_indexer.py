"""The auditor's indexer against the session anvil: every table, idempotent re-indexing,
restarts (clean, after a crash inside a batch, after SIGKILL), reorgs, confirmation
depth, uint64 extremes, schema migrations. On SQLite and, when reachable, PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text, update
from web3 import Web3

from pcn.auditor.indexer import ConcurrentIndexer, Indexer, IndexerError
from pcn.auditor.migrations import LATEST_VERSION, MigrationError, migrate, schema_diff
from pcn.auditor.store import (
    U64_MAX,
    Algorithm,
    Approval,
    Dataset,
    DatasetUse,
    DatasetVersion,
    EventRow,
    IndexState,
    LogAnchor,
    Organisation,
    OrgStatusChange,
    PolicyGrant,
    PolicyLimitsChange,
    ReceiptRow,
    Refusal,
    RoleChange,
    SchemaVersion,
    Store,
    TaskDataset,
    TaskParticipant,
    TaskRow,
    table_contents,
)
from pcn.chain.ledger import Ledger
from pcn.chain.types import Fingerprint, PolicyGrants, PolicyLimits, RefusalReason, TaskStatus
from pcn.devnet.anvil import rpc_call
from tests.helpers import build_consortium, h
from tests.test_auditor_support import (
    BACKENDS,
    StoreFactory,
    good_receipt,
    indexer,
    mine,
    populate,
    run_task,
    store_factory,
)


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path) -> Iterator[StoreFactory]:
    yield from store_factory(request, tmp_path)


def _count(st: Store, model: type) -> int:
    with st.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _chain_logs(ledger: Ledger, start: int, end: int) -> list[dict]:
    return list(ledger.w3.eth.get_logs({"fromBlock": start, "toBlock": end, "address": ledger.logs.addresses}))


def test_a_full_history_lands_in_every_table(stores: StoreFactory, deployment, snapshot, devnet):
    sc = populate(deployment)
    c = sc.c
    st = stores.store()
    idx = indexer(deployment, st, confirmations=1)
    mine(devnet.rpc_url)
    head = idx.ledger.w3.eth.block_number
    n = idx.run_once()
    ledger = idx.ledger

    logs = _chain_logs(ledger, deployment.deploy_block, head - 1)
    assert n == len(logs) == _count(st, EventRow)
    state = st.index_state()
    assert state is not None and state.next_block == head and state.indexed_block == head - 1
    assert state.indexed_timestamp == ledger.w3.eth.get_block(head - 1)["timestamp"]

    with st.read() as s:
        # every event row is the chain's log, with its block's time and its sender
        for ev in s.scalars(select(EventRow)).all():
            block = ledger.w3.eth.get_block(ev.block_number)
            assert "0x" + bytes(block["hash"]).hex() == ev.block_hash
            assert block["timestamp"] == ev.block_timestamp
            tx = ledger.w3.eth.get_transaction(ev.tx_hash)
            assert tx["from"] == ev.tx_from
        relayed = s.scalars(select(Approval).where(Approval.task_id == sc.completed, Approval.relayer == sc.relayer))
        assert [a.owner for a in relayed] == [c.orgs[2].address]

        # organisations and their status history
        for org in ledger.organisations():
            row = s.get(Organisation, org.account)
            assert row is not None
            assert (row.name, row.endpoint, row.status) == (org.name, org.endpoint, int(org.status))
            assert (row.admitted_at, row.status_changed_at) == (org.admitted_at, org.status_changed_at)
            assert row.encryption_key == "0x" + org.encryption_key.hex()
        changes = s.scalars(select(OrgStatusChange).where(OrgStatusChange.account == c.orgs[2].address)).all()
        assert [ch.change for ch in sorted(changes, key=lambda r: r.position)] == [
            "admitted",
            "suspended",
            "reinstated",
        ]
        roles = s.scalars(select(RoleChange).where(RoleChange.role_name == "auditor")).all()
        assert [(r.account, r.granted) for r in roles] == [(sc.relayer, True)]

        # algorithms
        for algo in ledger.algorithms():
            row = s.get(Algorithm, "0x" + algo.code_hash.hex())
            assert row is not None
            assert (row.kind, row.version, row.publisher, row.deprecated) == (
                algo.kind,
                algo.version,
                algo.publisher,
                algo.deprecated,
            )
            assert row.registered_at == algo.registered_at

        # datasets, every fingerprint version, current grants
        for dataset_id in range(1, ledger.dataset_count() + 1):
            ds = ledger.dataset(dataset_id)
            row = s.get(Dataset, dataset_id)
            assert row is not None
            assert (row.owner, row.version, row.max_uses, row.uses, row.expiry) == (
                ds.owner,
                ds.version,
                ds.max_uses,
                ds.uses,
                ds.expiry,
            )
            assert (row.epsilon_total, row.epsilon_spent) == (ds.epsilon_total, ds.epsilon_spent)
            for version in range(1, ds.version + 1):
                fp = ledger.fingerprint(dataset_id, version)
                v = s.scalars(
                    select(DatasetVersion).where(
                        DatasetVersion.dataset_id == dataset_id, DatasetVersion.version == version
                    )
                ).one()
                assert (v.merkle_root, v.schema_hash, v.row_count) == (
                    "0x" + fp.merkle_root.hex(),
                    "0x" + fp.schema_hash.hex(),
                    fp.row_count,
                )
                assert v.block_timestamp == fp.registered_at
            latest: dict[tuple[str, str], bool] = {}
            for g in sorted(
                s.scalars(select(PolicyGrant).where(PolicyGrant.dataset_id == dataset_id)).all(),
                key=lambda r: r.position,
            ):
                latest[(g.kind, g.subject)] = g.allowed
            for (kind, subject), allowed in latest.items():
                assert ledger.is_allowed(dataset_id, **{kind: subject}) is allowed
        assert ledger.is_allowed(c.datasets[c.orgs[2].address], requester=c.orgs[1].address) is False

        # policy limits history, uses per task, pinned dataset versions
        ds_hospital = c.datasets[c.orgs[2].address]
        limits = sorted(
            s.scalars(select(PolicyLimitsChange).where(PolicyLimitsChange.dataset_id == ds_hospital)).all(),
            key=lambda r: r.position,
        )
        now = ledger.dataset(ds_hospital)
        assert len(limits) == 2 and (limits[-1].max_uses, limits[-1].expiry, limits[-1].epsilon_total) == (
            now.max_uses,
            now.expiry,
            now.epsilon_total,
        )
        for dataset_id in range(1, ledger.dataset_count() + 1):
            uses = s.scalars(select(DatasetUse).where(DatasetUse.dataset_id == dataset_id)).all()
            assert len(uses) == ledger.dataset(dataset_id).uses
        for task_id in range(1, ledger.task_count() + 1):
            pinned = s.scalars(select(TaskDataset).where(TaskDataset.task_id == task_id).order_by(TaskDataset.position))
            assert [(d.dataset_id, d.version) for d in pinned] == ledger.task_datasets(task_id)

        # tasks, their participants, receipts and refusals
        assert _count(st, TaskRow) == ledger.task_count() == 4
        for task_id in range(1, ledger.task_count() + 1):
            t = ledger.task(task_id)
            row = s.get(TaskRow, task_id)
            assert row is not None
            assert TaskStatus(row.status) is t.status
            assert (row.requester, row.result_recipient, row.deadline, row.epsilon) == (
                t.requester,
                t.result_recipient,
                t.deadline,
                t.epsilon,
            )
            assert (row.required_approvals, row.approvals, row.started_count, row.receipt_count) == (
                t.required_approvals,
                t.approvals,
                t.started_count,
                t.receipt_count,
            )
            assert row.refusal_reason == int(t.refusal_reason)
            assert row.algorithm_hash == "0x" + t.algorithm_hash.hex()
            assert row.params_hash == "0x" + t.params_hash.hex()
            assert row.submitted_at == t.created_at
            assert (row.authorised_at or 0) == t.authorised_at
            assert (row.result_hash or "0x" + "00" * 32) == "0x" + t.result_hash.hex()
            for p in ledger.task_participants(task_id):
                part = s.get(TaskParticipant, (task_id, p))
                assert part is not None and part.state == int(ledger.participant_state(task_id, p))
                r = ledger.receipt(task_id, p)
                row_r = s.scalars(
                    select(ReceiptRow).where(ReceiptRow.task_id == task_id, ReceiptRow.participant == p)
                ).one_or_none()
                if r.result_hash == b"\x00" * 32:
                    assert row_r is None
                else:
                    assert row_r is not None
                    assert (row_r.result_hash, row_r.input_fingerprint, row_r.deletion_hash) == (
                        "0x" + r.result_hash.hex(),
                        "0x" + r.input_fingerprint.hex(),
                        "0x" + r.deletion_hash.hex(),
                    )
                    assert (row_r.started_at, row_r.finished_at) == (r.started_at, r.finished_at)
        refusal = s.scalars(select(Refusal)).one()
        assert (refusal.task_id, refusal.participant, refusal.reason) == (
            sc.refused,
            c.orgs[1].address,
            int(RefusalReason.FINGERPRINT_MISMATCH),
        )
        assert refusal.detail_hash == "0x" + h("fingerprint differs").hex()
        closed_by = s.get(TaskRow, sc.cancelled)
        assert closed_by is not None and closed_by.closed_by == c.orgs[0].address

        # anchors
        for org in c.orgs[:2]:
            latest_anchor = ledger.latest_anchor(org.address)
            assert latest_anchor is not None
            rows = s.scalars(select(LogAnchor).where(LogAnchor.org == org.address)).all()
            assert len(rows) == latest_anchor.count
            top = max(rows, key=lambda r: r.sequence)
            assert (top.sequence, top.head_hash) == (latest_anchor.sequence, "0x" + latest_anchor.head_hash.hex())
            assert top.block_timestamp == latest_anchor.anchored_at


def test_reindexing_the_same_blocks_changes_nothing(stores: StoreFactory, deployment, snapshot):
    populate(deployment)
    st = stores.store()
    first = indexer(deployment, st)
    n = first.run_once()
    assert n > 0
    before = table_contents(st)
    assert first.run_once() == 0  # nothing new

    # Rewind the stored cursor to the deployment block: a new indexer reads every block again.
    with st.write() as s:
        s.execute(update(IndexState).values(next_block=deployment.deploy_block, recent="{}"))
    again = indexer(deployment, st)
    assert again.run_once() == n
    assert table_contents(st) == before
    # Re-deriving every table from the stored events gives the same rows too.
    assert again.rebuild() == n
    assert table_contents(st) == before


def test_restart_mid_index_resumes_from_the_stored_cursor(stores: StoreFactory, deployment, snapshot):
    populate(deployment)
    reference = stores.store()
    total = indexer(deployment, reference).run_once()

    st = stores.store()
    first = indexer(deployment, st, batch_size=3)
    partial = first.run_once(max_batches=4)
    state = st.index_state()
    assert state is not None and state.next_block == deployment.deploy_block + 12 and state.batches == 4
    assert 0 < partial < total == partial + indexer(deployment, st, batch_size=3).run_once()
    assert table_contents(st) == table_contents(reference)


class _CrashingIndexer(Indexer):
    """Dies inside a batch after `crash_after` events have been applied."""

    crash_after = 0

    def _handle(self, ev) -> None:  # type: ignore[no-untyped-def]
        if self.crash_after == 0:
            raise RuntimeError("simulated crash inside a batch")
        self.crash_after -= 1
        super()._handle(ev)


def test_a_crash_inside_a_batch_rolls_it_back_and_it_is_read_again(stores: StoreFactory, deployment, snapshot):
    populate(deployment)
    reference = stores.store()
    indexer(deployment, reference).run_once()

    st = stores.store()
    crashing = _CrashingIndexer(Ledger(deployment), st, confirmations=0, batch_size=4)
    crashing.crash_after = 9
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.run_once()
    state = st.index_state()
    assert state is not None
    with st.read() as s:  # only whole batches were committed, with their cursor
        assert s.scalar(select(func.max(EventRow.block_number))) < state.next_block
        stored = int(s.scalar(select(func.count()).select_from(EventRow)) or 0)
    assert stored < 9 + 1
    on_chain = _chain_logs(crashing.ledger, deployment.deploy_block, state.next_block - 1)
    assert stored == len(on_chain)
    # The crashed instance itself recovers too: its reader went back to the stored cursor.
    crashing.crash_after = 10**9
    crashing.run_once()
    assert table_contents(st) == table_contents(reference)


_CHILD = r"""
import sys, time
from pcn.auditor.indexer import Indexer
from pcn.chain.deployment import load_deployment
from pcn.chain.ledger import Ledger

class Slow(Indexer):
    def _handle(self, ev):
        time.sleep(0.03)
        super()._handle(ev)

Slow(Ledger(load_deployment(sys.argv[1])), sys.argv[2], confirmations=0, batch_size=2).run_once()
print("finished", flush=True)
"""


def test_an_indexer_killed_with_sigkill_resumes_where_it_committed(deployment, snapshot, tmp_path):
    populate(deployment)
    reference = Store(tmp_path / "reference.sqlite")
    indexer(deployment, reference).run_once()
    url = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    Store(url).dispose()  # migrated before the child starts
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(deployment.path), url], stdout=subprocess.PIPE, env=os.environ.copy()
    )
    st = Store(url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = st.index_state()
            if state is not None and state.batches >= 3:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the child indexer made no progress")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    partial = _count(st, EventRow)
    assert 0 < partial < _count(reference, EventRow)
    indexer(deployment, st, batch_size=2).run_once()
    assert table_contents(st) == table_contents(reference)


def test_a_reorg_is_followed_and_every_table_rederived(stores: StoreFactory, deployment, snapshot, devnet):
    c = build_consortium(deployment, n_orgs=2)
    task_id = run_task(c, [0, 1])
    c.orgs[0].submit_receipt(task_id, good_receipt(c, 0, h("agreed")))
    st = stores.store()
    idx = indexer(deployment, st)
    idx.run_once()
    last = c.orgs[1].submit_receipt(task_id, good_receipt(c, 1, h("agreed")))
    idx.run_once()
    with st.read() as s:
        row = s.get(TaskRow, task_id)
        assert row is not None and row.status == int(TaskStatus.COMPLETED)
        assert s.scalar(select(func.count()).select_from(EventRow).where(EventRow.tx_hash == last.tx_hash)) == 2

    # The block with the second receipt (and the completion) is replaced by an empty one.
    rpc_call(devnet.rpc_url, "anvil_reorg", [1, []])
    idx.run_once()
    with st.read() as s:
        row = s.get(TaskRow, task_id)
        assert row is not None and row.status == int(TaskStatus.RUNNING) and row.receipt_count == 1
        assert row.result_hash is None and row.closed_block is None
        assert s.scalar(select(func.count()).select_from(EventRow).where(EventRow.tx_hash == last.tx_hash)) == 0
        part = s.get(TaskParticipant, (task_id, c.orgs[1].address))
        assert part is not None and part.state == 2  # started, no receipt any more

    # On the new branch the second participant disagrees: the index follows the new branch.
    c.orgs[1].submit_receipt(task_id, good_receipt(c, 1, h("something else")))
    idx.run_once()
    with st.read() as s:
        row = s.get(TaskRow, task_id)
        assert row is not None and row.status == int(TaskStatus.DISPUTED)
    fresh = stores.store()
    indexer(deployment, fresh).run_once()
    assert table_contents(st) == table_contents(fresh)


def test_confirmation_depth_holds_back_the_newest_blocks(stores: StoreFactory, deployment, snapshot, devnet):
    c = build_consortium(deployment, n_orgs=1)
    st = stores.store()
    idx = indexer(deployment, st, confirmations=2)
    mine(devnet.rpc_url, 2)
    idx.run_once()
    res = c.orgs[0].anchor_log(5, h("head"))
    assert idx.run_once() == 0
    mine(devnet.rpc_url, 1)
    assert idx.run_once() == 0
    mine(devnet.rpc_url, 1)
    assert idx.run_once() == 1
    with st.read() as s:
        anchor = s.scalars(select(LogAnchor)).one()
        assert (anchor.sequence, anchor.tx_hash, anchor.block_number) == (5, res.tx_hash, res.block_number)


def test_uint64_extremes_are_kept_exactly(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=1)
    org = c.orgs[0]
    dataset_id, _ = org.register_dataset(
        Fingerprint(h("r"), h("s"), h("m"), U64_MAX),
        PolicyLimits(U64_MAX, U64_MAX, U64_MAX - 1),
        PolicyGrants([c.algorithm], [org.address], [org.address]),
    )
    org.anchor_log(U64_MAX, h("far"))
    st = stores.store()
    indexer(deployment, st).run_once()
    with st.read() as s:
        ds = s.get(Dataset, dataset_id)
        assert ds is not None and (ds.max_uses, ds.expiry, ds.epsilon_total) == (U64_MAX, U64_MAX, U64_MAX - 1)
        assert (
            s.scalars(select(DatasetVersion.row_count).where(DatasetVersion.dataset_id == dataset_id)).one() == U64_MAX
        )
        # ordering and comparison stay exact across the 2^63 boundary
        big = s.scalars(select(Dataset.id).where(Dataset.max_uses > 2**63).order_by(Dataset.max_uses)).all()
        assert big == [dataset_id]
        assert s.scalars(select(LogAnchor.sequence)).one() == U64_MAX


def test_two_indexers_cannot_write_one_store(stores: StoreFactory, deployment, snapshot):
    c = build_consortium(deployment, n_orgs=1)
    url = stores.url()
    a = indexer(deployment, url)
    b = indexer(deployment, url)
    a.run_once()
    c.orgs[0].anchor_log(1, h("x"))
    with pytest.raises(ConcurrentIndexer):
        b.run_once()
    assert indexer(deployment, url).run_once() == 1  # a fresh instance starts from the stored cursor


def test_a_store_of_another_deployment_is_refused(stores: StoreFactory, deployment, snapshot):
    st = stores.store()
    indexer(deployment, st)
    with st.write() as s:
        s.execute(update(IndexState).values(chain_id=1))
    with pytest.raises(IndexerError, match="chain 1"):
        indexer(deployment, st)


def test_migrations_build_exactly_the_model_schema_and_are_idempotent(stores: StoreFactory):
    st = stores.store()
    assert schema_diff(st.engine) == []
    assert migrate(st.engine) == []
    with st.read() as s:
        assert [v.version for v in s.scalars(select(SchemaVersion))] == list(range(1, LATEST_VERSION + 1))
    with st.write() as s:
        s.add(SchemaVersion(version=LATEST_VERSION + 1, name="from the future", applied_at=0))
    with pytest.raises(MigrationError, match="newer than this pcn"):
        Store(st.url)


def test_schema_diff_notices_a_model_change_without_migration(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    with st.engine.begin() as conn:
        conn.execute(text("ALTER TABLE tasks ADD COLUMN surprise INTEGER"))
        conn.execute(text("DROP INDEX ix_events_position"))
    problems = schema_diff(st.engine)
    assert any("tasks.surprise" in p for p in problems)
    assert any("events" in p and "block_number" in p for p in problems)


def test_status_reports_the_lag(stores: StoreFactory, deployment, snapshot, devnet):
    build_consortium(deployment, n_orgs=1)
    idx = indexer(deployment, stores.store(), confirmations=1)
    idx.run_once()
    status = idx.status()
    assert status.lag == 1 and status.events > 0
    assert json.loads(json.dumps(status.__dict__))["chain_id"] == deployment.chain_id
    assert Web3.is_checksum_address(idx.store.index_state().task_manager)  # type: ignore[union-attr]


def test_a_reorg_below_every_remembered_block_reindexes_from_scratch(stores: StoreFactory, deployment, snapshot):
    populate(deployment)
    reference = stores.store()
    indexer(deployment, reference).run_once()
    st = stores.store()
    indexer(deployment, st).run_once()
    with st.write() as s:  # every remembered block hash now disagrees with the chain
        row = s.get(IndexState, "main")
        assert row is not None
        row.recent = json.dumps({k: "0x" + "00" * 32 for k in json.loads(row.recent)})
    idx = indexer(deployment, st)
    assert idx.run_once() == _count(reference, EventRow)
    assert table_contents(st) == table_contents(reference)


def test_run_forever_follows_the_chain_until_stopped(stores: StoreFactory, deployment, snapshot):
    import threading

    c = build_consortium(deployment, n_orgs=1)
    st = stores.store()
    idx = indexer(deployment, st)
    stop = threading.Event()
    worker = threading.Thread(target=idx.run_forever, args=(stop, 0.05), daemon=True)
    worker.start()
    try:
        c.orgs[0].anchor_log(1, h("live"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _count(st, LogAnchor) == 0:
            time.sleep(0.05)
        assert _count(st, LogAnchor) == 1
    finally:
        stop.set()
        worker.join(timeout=10)
    assert not worker.is_alive()
