"""A nonce manager safe for several concurrent senders of one account.

Threads and processes that send from the same account serialise on a lock file per
(chain id, account) from the moment they read the account's pending transaction count
until the node has accepted the signed transaction. Inside that window the pending count
is exact: every earlier sender's transaction is already in the node's pool, and nothing is
cached locally that could go stale (a devnet restart or reorg that drops transactions
simply lowers the count). This assumes the senders of one account share one RPC node,
which is how a pcn organisation runs; a sender elsewhere using the same key is detected by
the node ("nonce too low") and the ledger retries with a fresh count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from filelock import FileLock


class NonceManager:
    _thread_locks: ClassVar[dict[str, threading.Lock]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, chain_id: int, address: str, pending_count: Callable[[], int], lock_dir: Path) -> None:
        self.address = address
        self._pending_count = pending_count
        lock_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{chain_id}-{address.lower()}"
        self._file_lock = FileLock(str(lock_dir / f"{stem}.lock"))
        with NonceManager._guard:
            self._thread_lock = NonceManager._thread_locks.setdefault(stem, threading.Lock())

    @contextmanager
    def reserve(self) -> Iterator[int]:
        """Hold the account's send lock and yield the next nonce. Send inside the block."""
        with self._thread_lock, self._file_lock:
            yield self._pending_count()
