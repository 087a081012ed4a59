"""Background work that keeps the dashboard live: the indexer following the chain, and the
anomaly detector re-run whenever the indexed chain (or a stored log check) changes.

Both are daemon threads stopped through one `threading.Event`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from pcn.auditor.anomalies import detect_and_record
from pcn.auditor.indexer import Indexer
from pcn.auditor.store import IndexState, LogCheck, Store
from pcn.chain.ledger import Ledger

log = logging.getLogger("pcn.auditor.web.live")


class LiveAuditor:
    """Runs `Indexer.run_forever` (confirmations 0 by default: the dashboard shows what the
    chain holds now; a reorg is rolled back by the indexer) and an anomaly watcher."""

    def __init__(
        self,
        store: Store,
        ledger: Ledger | None,
        *,
        run_indexer: bool,
        watch_anomalies: bool,
        confirmations: int = 0,
        interval: float = 1.0,
        anomaly_interval: float = 2.0,
        anomaly_max_age: float = 30.0,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.run_indexer = run_indexer and ledger is not None
        self.watch_anomalies = watch_anomalies
        self.confirmations = confirmations
        self.interval = interval
        self.anomaly_interval = anomaly_interval
        self.anomaly_max_age = anomaly_max_age
        self.stop_event = threading.Event()
        # created now, so a store that indexes another chain is refused before serving starts
        self.indexer: Indexer | None = (
            Indexer(ledger, store, confirmations=confirmations) if self.run_indexer and ledger is not None else None
        )
        self.threads: list[threading.Thread] = []
        self.last_detection: float | None = None
        self.detections = 0
        self.errors: list[str] = []

    def start(self) -> None:
        if self.threads:
            return
        self.stop_event.clear()
        if self.indexer is not None:
            th = threading.Thread(target=self._index, name="pcn-audit-indexer", daemon=True)
            th.start()
            self.threads.append(th)
        if self.watch_anomalies:
            th = threading.Thread(target=self._watch, name="pcn-audit-anomalies", daemon=True)
            th.start()
            self.threads.append(th)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for th in self.threads:
            th.join(timeout)
        self.threads = []

    def _index(self) -> None:
        assert self.indexer is not None
        try:
            self.indexer.run_forever(self.stop_event, interval=self.interval)
        except Exception as exc:  # an IndexerError (wrong store) stops indexing; the dashboard stays up
            log.error("the indexer stopped: %s", exc)
            self.errors.append(f"indexer: {exc}")

    def _fingerprint(self) -> tuple[Any, ...]:
        with self.store.read() as s:
            st = s.get(IndexState, "main")
            checks = s.scalar(select(func.max(LogCheck.id)))
            return (st.indexed_block if st else None, st.indexed_hash if st else None, checks)

    def _watch(self) -> None:
        seen: tuple[Any, ...] | None = None
        while not self.stop_event.is_set():
            try:
                current = self._fingerprint()
                stale = self.last_detection is None or time.monotonic() - self.last_detection > self.anomaly_max_age
                if current != seen or stale:
                    detect_and_record(self.store)
                    self.detections += 1
                    self.last_detection = time.monotonic()
                    seen = current
            except OperationalError as exc:
                log.warning("anomaly detection failed, retrying: %s", exc)
            except Exception as exc:
                log.exception("anomaly detection failed")
                self.errors.append(f"anomalies: {exc}")
            self.stop_event.wait(self.anomaly_interval)
