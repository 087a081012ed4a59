"""The auditor's indexer: every pcn event, from the deployment block, into the SQL store.

It drives the ledger's `EventReader` (block ranges, confirmation depth, reorg detection by
block hashes) with a cursor kept in the store itself: each batch of blocks — its events,
the rows derived from them and the advanced cursor — is one database transaction. A crash
anywhere in a batch rolls the whole batch back and the next run reads it again, so every
event is applied exactly once; events are also keyed by (transaction hash, log index), so
reading blocks that are already indexed changes nothing.

On a reorg the reader names the first block that changed: the indexer deletes the events
from that block on and re-derives every other table from the events that remain (no chain
access needed), in the same transaction as the rewound cursor.

Only one indexer may write a store: each batch locks the cursor row and checks that the
cursor is where this indexer left it, else it stops with `ConcurrentIndexer`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from eth_typing import HexStr
from eth_utils import to_checksum_address
from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from web3.types import TxData

from pcn.auditor.projection import annotate, apply_event, clear_derived, rebuild
from pcn.auditor.store import EventRow, IndexState, Store, StoreError, open_store
from pcn.chain.errors import ChainError
from pcn.chain.events import ChainEvent, Cursor, EventReader, ReorgTooDeep
from pcn.chain.ledger import Ledger

log = logging.getLogger("pcn.auditor.indexer")

STATE_KEY = "main"
BLOCK_CACHE_SIZE = 4096


class IndexerError(StoreError):
    """The indexer cannot go on (wrong store, inconsistent data)."""


class ConcurrentIndexer(IndexerError):
    """Another indexer moved this store's cursor: two indexers must not write one store."""


# What a retry can fix: the chain or the database briefly away, another indexer holding the lock.
TRANSIENT_INDEX_ERRORS = (ChainError, OperationalError, ConcurrentIndexer)


@dataclass(frozen=True)
class BlockInfo:
    number: int
    hash: str
    timestamp: int
    senders: dict[str, str]  # tx hash -> sender


@dataclass(frozen=True)
class IndexStatus:
    chain_id: int
    deploy_block: int
    next_block: int
    indexed_block: int | None
    indexed_timestamp: int | None
    head_block: int
    events: int

    @property
    def lag(self) -> int:
        return max(0, self.head_block - (self.indexed_block if self.indexed_block is not None else -1))


def _hex(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    text = str(value)
    return text if text.startswith("0x") else "0x" + text


class SqlCursorStore:
    """The EventReader's cursor store, kept in the `index_state` row: `save` commits the
    indexer's open batch transaction together with the cursor."""

    def __init__(self, indexer: Indexer) -> None:
        self._indexer = indexer

    def load(self) -> Cursor | None:
        with self._indexer.store.read() as s:
            row = s.get(IndexState, STATE_KEY)
            if row is None:
                return None
            recent = {int(k): str(v) for k, v in json.loads(row.recent or "{}").items()}
            return Cursor(int(row.next_block), recent)

    def save(self, cursor: Cursor) -> None:
        self._indexer._commit(cursor)


class Indexer:
    """Follows every pcn contract event into the auditor's SQL store."""

    def __init__(
        self,
        ledger: Ledger,
        store_url: Store | str | Path | None = None,
        confirmations: int = 1,
        batch_size: int = 500,
        start_block: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.store = open_store(store_url)
        self.confirmations = max(0, confirmations)
        self.start_block = ledger.deployment.deploy_block if start_block is None else start_block
        self._session: Session | None = None
        self._blocks: OrderedDict[str, BlockInfo] = OrderedDict()
        self._ensure_state()
        self._cursors = SqlCursorStore(self)
        self.reader = EventReader(
            ledger.w3,
            ledger.logs,
            self._cursors,
            self.start_block,
            self.confirmations,
            batch_size,
        )
        self._stored_next = self.reader.cursor.next_block

    # ------------------------------------------------------------------ public

    def run_once(self, max_batches: int | None = None, to_block: int | None = None) -> int:
        """Index every confirmed block after the cursor (or `max_batches` batches of them, or
        up to `to_block` at most: the chain as of that block); return the number of events read."""
        try:
            return self.reader.poll(self._handle, on_reorg=self._on_reorg, max_batches=max_batches, to_block=to_block)
        except ReorgTooDeep:
            self._abort()
            log.warning("the chain changed below every remembered block: re-indexing from block %d", self.start_block)
            self.reset()
            return self.reader.poll(self._handle, on_reorg=self._on_reorg, max_batches=max_batches, to_block=to_block)
        except BaseException:
            self._abort()
            raise

    def run_forever(self, stop_event: threading.Event, interval: float = 1.0, max_backoff: float = 30.0) -> None:
        """Index until `stop_event` is set; transient chain or database errors are logged and
        retried with backoff."""
        wait = interval
        while not stop_event.is_set():
            try:
                n = self.run_once()
                if n:
                    log.info("indexed %d events up to block %d", n, self.reader.cursor.next_block - 1)
                wait = interval
            except TRANSIENT_INDEX_ERRORS as exc:
                log.warning("indexing failed, retrying in %.0f s: %s", wait, exc)
                wait = min(max_backoff, max(interval, wait * 2))
            stop_event.wait(wait)

    def rebuild(self) -> int:
        """Re-derive every table from the stored events (no chain access); return the count."""
        with self.store.write() as s:
            return rebuild(s)

    def reset(self) -> None:
        """Forget everything indexed and start again from the start block."""
        with self.store.write() as s:
            clear_derived(s)
            s.execute(delete(EventRow))
            row = s.get(IndexState, STATE_KEY)
            assert row is not None
            row.next_block = self.start_block
            row.recent = "{}"
            row.indexed_block = row.indexed_hash = row.indexed_timestamp = None
            row.updated_at = int(time.time())
        self.reader.cursor = Cursor(self.start_block)
        self._stored_next = self.start_block

    def status(self) -> IndexStatus:
        with self.store.read() as s:
            row = s.get(IndexState, STATE_KEY)
            assert row is not None
            events = int(s.scalar(select(func.count()).select_from(EventRow)) or 0)
            return IndexStatus(
                row.chain_id,
                row.deploy_block,
                row.next_block,
                row.indexed_block,
                row.indexed_timestamp,
                int(self.ledger.w3.eth.block_number),
                events,
            )

    # ------------------------------------------------------------------ state row

    def _ensure_state(self) -> None:
        dep = self.ledger.deployment
        task_manager = to_checksum_address(dep.contracts["TaskManager"].address)
        with self.store.write() as s:
            row = s.get(IndexState, STATE_KEY)
            if row is None:
                s.add(
                    IndexState(
                        name=STATE_KEY,
                        chain_id=dep.chain_id,
                        task_manager=task_manager,
                        deploy_block=dep.deploy_block,
                        next_block=self.start_block,
                        recent="{}",
                        batches=0,
                        updated_at=int(time.time()),
                    )
                )
            elif row.chain_id != dep.chain_id or row.task_manager != task_manager:
                raise IndexerError(
                    f"{self.store.url} indexes chain {row.chain_id}, TaskManager {row.task_manager}; "
                    f"this deployment is chain {dep.chain_id}, TaskManager {task_manager}: use another store"
                )

    def _batch(self) -> Session:
        """The open batch transaction, begun with the cursor row locked and checked."""
        if self._session is None:
            s = self.store.session()
            s.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            row = s.scalars(select(IndexState).where(IndexState.name == STATE_KEY).with_for_update()).one_or_none()
            found = None if row is None else row.next_block
            if found != self._stored_next:
                s.rollback()
                s.close()
                raise ConcurrentIndexer(
                    f"the store's cursor is at block {found}, this indexer left it at {self._stored_next}: "
                    "is another indexer writing this store?"
                )
            self._session = s
        return self._session

    def _commit(self, cursor: Cursor) -> None:
        s = self._batch()
        row = s.get(IndexState, STATE_KEY)
        assert row is not None
        row.next_block = cursor.next_block
        row.recent = json.dumps({str(k): v for k, v in sorted(cursor.recent.items())})
        last = cursor.next_block - 1
        if last >= self.start_block:
            info = self._block(cursor.recent.get(last), last)
            row.indexed_block, row.indexed_hash, row.indexed_timestamp = last, info.hash, info.timestamp
        else:
            row.indexed_block = row.indexed_hash = row.indexed_timestamp = None
        row.batches = (row.batches or 0) + 1
        row.updated_at = int(time.time())
        try:
            s.commit()
        finally:
            s.close()
            self._session = None
        self._stored_next = cursor.next_block

    def _abort(self) -> None:
        """Roll back the open batch and put the reader back on the stored cursor."""
        if self._session is not None:
            try:
                self._session.rollback()
            finally:
                self._session.close()
                self._session = None
        self.reader.cursor = self._cursors.load() or Cursor(self.start_block)
        self._stored_next = self.reader.cursor.next_block

    # ------------------------------------------------------------------ blocks

    def _block(self, block_hash: str | None, number: int) -> BlockInfo:
        """Timestamp and transaction senders of a block, cached by hash."""
        if block_hash is not None and block_hash in self._blocks:
            self._blocks.move_to_end(block_hash)
            return self._blocks[block_hash]
        block = self.ledger.w3.eth.get_block(
            HexStr(block_hash) if block_hash is not None else number, full_transactions=True
        )
        # full_transactions=True: the block lists transactions, not their hashes
        transactions = cast("Sequence[TxData]", block["transactions"])
        info = BlockInfo(
            int(block["number"]),
            _hex(block["hash"]),
            int(block["timestamp"]),
            {_hex(tx["hash"]): to_checksum_address(tx["from"]) for tx in transactions},
        )
        if block_hash is not None and info.hash != block_hash:
            raise IndexerError(f"block {number}: asked for {block_hash}, the node returned {info.hash}")
        self._blocks[info.hash] = info
        while len(self._blocks) > BLOCK_CACHE_SIZE:
            self._blocks.popitem(last=False)
        return info

    # ------------------------------------------------------------------ events

    def _handle(self, ev: ChainEvent) -> None:
        s = self._batch()
        existing = s.scalars(
            select(EventRow).where(EventRow.tx_hash == ev.tx_hash, EventRow.log_index == ev.log_index)
        ).one_or_none()
        if existing is not None:
            if existing.block_hash != ev.block_hash:
                raise IndexerError(
                    f"event {ev.tx_hash}#{ev.log_index} is indexed from block {existing.block_hash} "
                    f"but now comes from {ev.block_hash}: a reorg went unnoticed; re-index this store"
                )
            return
        info = self._block(ev.block_hash, ev.block_number)
        row = EventRow(
            contract=ev.contract,
            name=ev.name,
            args=ev.args,
            block_number=ev.block_number,
            block_hash=ev.block_hash,
            block_timestamp=info.timestamp,
            tx_hash=ev.tx_hash,
            log_index=ev.log_index,
            tx_from=info.senders.get(ev.tx_hash),
        )
        annotate(s, row)
        s.add(row)
        apply_event(s, row)

    def _on_reorg(self, rewind: int) -> None:
        s = self._batch()
        # a DELETE's result is a CursorResult, which SQLAlchemy's Session.execute types as Result
        deleted = cast("CursorResult[Any]", s.execute(delete(EventRow).where(EventRow.block_number >= rewind)))
        removed = deleted.rowcount
        log.warning("reorg: dropped %s events from block %d on; re-deriving every table", removed, rewind)
        rebuild(s)
