"""Event reader (cursor, restart, reorg) and the concurrent-sender nonce manager."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from eth_account import Account

from pcn.chain.deployment import load_deployment
from pcn.chain.errors import ChainUnavailable
from pcn.chain.events import ChainEvent
from pcn.chain.ledger import Ledger
from pcn.devnet import anvil
from pcn.devnet.anvil import rpc_call
from pcn.devnet.deploy import deploy, devnet_key
from tests.conftest import free_port
from tests.helpers import build_consortium, h


def _collect(reader, sink: list[ChainEvent], reorgs: list[int] | None = None) -> int:
    return reader.poll(sink.append, on_reorg=(reorgs.append if reorgs is not None else None))


def test_reader_delivers_every_event_once_and_resumes_from_its_cursor(deployment, snapshot, tmp_path):
    cursor = tmp_path / "cursor.json"
    c = build_consortium(deployment, n_orgs=2)
    first: list[ChainEvent] = []
    _collect(c.admin.event_reader(cursor, batch_size=3), first)
    names = [e.name for e in first]
    assert names.count("OrganisationAdmitted") == 2 and names.count("DatasetRegistered") == 2
    assert "TaskManagerSet" in names  # from the deployment itself
    assert len({e.key for e in first}) == len(first)

    c.orgs[0].anchor_log(1, h("head"))
    c.orgs[1].anchor_log(1, h("head"))
    resumed: list[ChainEvent] = []
    _collect(c.admin.event_reader(cursor), resumed)  # a new reader: as after a process restart
    assert [e.name for e in resumed] == ["LogAnchored", "LogAnchored"]
    assert resumed[0].args["org"] == c.orgs[0].address
    assert _collect(c.admin.event_reader(cursor), []) == 0


def test_handler_failure_does_not_advance_the_cursor(deployment, snapshot, tmp_path):
    cursor = tmp_path / "cursor.json"
    c = build_consortium(deployment, n_orgs=1)
    reader = c.admin.event_reader(cursor)
    _collect(reader, [])
    c.orgs[0].anchor_log(1, h("a"))

    def boom(_ev: ChainEvent) -> None:
        raise RuntimeError("handler crashed")

    with pytest.raises(RuntimeError):
        reader.poll(boom)
    again: list[ChainEvent] = []
    _collect(c.admin.event_reader(cursor), again)
    assert [e.name for e in again] == ["LogAnchored"]


def test_confirmation_depth_holds_back_recent_blocks(deployment, snapshot, tmp_path, devnet):
    c = build_consortium(deployment, n_orgs=1)
    reader = c.admin.event_reader(tmp_path / "cursor.json", confirmations=2)
    rpc_call(devnet.rpc_url, "anvil_mine", [2])
    _collect(reader, [])
    c.orgs[0].anchor_log(1, h("a"))
    seen: list[ChainEvent] = []
    _collect(reader, seen)
    assert seen == []
    rpc_call(devnet.rpc_url, "anvil_mine", [2])
    _collect(reader, seen)
    assert [e.name for e in seen] == ["LogAnchored"]


def test_reader_survives_a_reorg(deployment, snapshot, tmp_path, devnet):
    c = build_consortium(deployment, n_orgs=1)
    org = c.orgs[0]
    reader = c.admin.event_reader(tmp_path / "cursor.json")
    _collect(reader, [])
    org.anchor_log(1, h("on-the-old-branch"))
    old: list[ChainEvent] = []
    _collect(reader, old)
    assert old[0].args["headHash"] == "0x" + h("on-the-old-branch").hex()
    # Replace the last block (and its anchor) with an empty one, then anchor something else.
    rpc_call(devnet.rpc_url, "anvil_reorg", [1, []])
    org.anchor_log(2, h("on-the-new-branch"))
    reorgs: list[int] = []
    new: list[ChainEvent] = []
    _collect(reader, new, reorgs)
    assert reorgs == [old[0].block_number]
    assert [e.args["headHash"] for e in new] == ["0x" + h("on-the-new-branch").hex()]
    assert org.latest_anchor(org.address).sequence == 2


def test_reader_resumes_after_the_devnet_restarts(tmp_path, run_dir):
    port = free_port()
    state = tmp_path / "state.json"
    st = anvil.up(port=port, state_file=state)
    try:
        dep = deploy(st.rpc_url, out=tmp_path / "dep.json")
        c = build_consortium(dep, n_orgs=1)
        cursor = tmp_path / "cursor.json"
        before: list[ChainEvent] = []
        _collect(c.admin.event_reader(cursor), before)
        anvil.down(port)
        saved = cursor.read_text()
        with pytest.raises(ChainUnavailable, match=st.rpc_url):  # an outage, not a reorg: no rewind
            _collect(c.admin.event_reader(cursor), [])
        assert cursor.read_text() == saved
        anvil.up(port=port, state_file=state)
        ledger = Ledger(load_deployment(tmp_path / "dep.json"), account=Account.from_key(devnet_key(2)))
        ledger.check_connection()
        ledger.anchor_log(7, h("after-restart"))
        after: list[ChainEvent] = []
        _collect(ledger.event_reader(cursor), after)
        assert [e.name for e in after] == ["LogAnchored"]
        assert len(before) > 5
    finally:
        anvil.down(port)


def _send_from_process(deployment_path: str, key: str, n: int, lock_dir: str) -> None:
    ledger = Ledger(load_deployment(deployment_path), account=Account.from_key(key), nonce_dir=Path(lock_dir))
    for i in range(n):
        ledger.update_endpoint(f"http://proc-{i}")


def test_concurrent_senders_of_one_account_never_collide(deployment, snapshot, tmp_path):
    c = build_consortium(deployment, n_orgs=1)
    org = c.orgs[0]
    key = devnet_key(2)
    start_nonce = org.w3.eth.get_transaction_count(org.address)
    lock_dir = tmp_path / "nonces"
    errors: list[BaseException] = []

    def thread_sender(k: int) -> None:
        try:
            ledger = Ledger(deployment, account=Account.from_key(key), nonce_dir=lock_dir)
            for i in range(5):
                ledger.update_endpoint(f"http://thread-{k}-{i}")
        except BaseException as exc:
            errors.append(exc)

    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_send_from_process, args=(str(deployment.path), key, 5, str(lock_dir))) for _ in range(2)
    ]
    threads = [threading.Thread(target=thread_sender, args=(k,)) for k in range(3)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for p in procs:
        p.join(120)
    assert not errors, errors
    assert [p.exitcode for p in procs] == [0, 0]
    assert org.w3.eth.get_transaction_count(org.address) == start_nonce + 25


def test_reader_reads_the_chain_as_of_a_block(deployment, snapshot, tmp_path):
    """`to_block` stops the reader at that block (the auditor indexes "as of block N"); the
    next poll without it goes on from there."""
    cursor = tmp_path / "cursor.json"
    c = build_consortium(deployment, n_orgs=2)
    c.orgs[0].anchor_log(1, h("head"))
    upto = c.admin.w3.eth.block_number
    c.orgs[1].anchor_log(1, h("head"))
    before: list[ChainEvent] = []
    c.admin.event_reader(cursor).poll(before.append, to_block=upto)
    assert [e.args["org"] for e in before if e.name == "LogAnchored"] == [c.orgs[0].address]
    assert max(e.block_number for e in before) <= upto
    after: list[ChainEvent] = []
    c.admin.event_reader(cursor).poll(after.append)
    assert [(e.name, e.args["org"]) for e in after] == [("LogAnchored", c.orgs[1].address)]
