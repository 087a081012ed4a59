"""Who the peers are, from the chain, with a short cache.

Every envelope a mailbox receives needs the sender's on-chain status and every message a
worker sends needs the receiver's endpoint and encryption key. Asking the chain each time
would put an RPC round trip on every message, so organisations are cached for ``ttl``
seconds (a suspension takes effect within that time; :meth:`PeerDirectory.invalidate`
forces it at once). A task's participant list is fixed at submission, so it is cached for
good (bounded, least recently used first out). A task's on-chain record (status, deadline,
requester) is cached for ``ttl`` seconds while the task is Authorised or Running and for good
once final; a Pending task is asked again each time, so its authorisation is seen at once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from eth_utils import to_checksum_address

from pcn.chain.errors import ContractRevert
from pcn.chain.types import Organisation, OrgStatus, Task, TaskStatus


class UnknownPeer(LookupError):
    """The address is not an admitted organisation."""

    def __init__(self, address: str) -> None:
        super().__init__(f"{address} is not an admitted organisation")
        self.address = address


class UnknownTask(LookupError):
    """No task with this id on chain."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"no task {task_id} on chain")
        self.task_id = task_id


class PeerLookup(Protocol):
    """What the mailbox and the workers need from a peer directory."""

    def organisation(self, address: str) -> Organisation: ...

    def endpoint(self, address: str) -> str: ...

    def participants(self, task_id: int) -> list[str]: ...

    def task(self, task_id: int) -> Task: ...

    def invalidate(self, address: str) -> None: ...


class PeerDirectory:
    """Organisations and task participants from a :class:`pcn.chain.ledger.Ledger`. Thread-safe.

    Chain calls are made outside the lock, so a slow RPC never blocks lookups that hit the
    cache; two threads missing the same entry at once may both ask the chain."""

    def __init__(
        self,
        ledger: Any,
        ttl: float = 5.0,
        *,
        max_tasks: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.ttl = ttl
        self.max_tasks = max_tasks
        self._clock = clock
        self._lock = threading.Lock()
        self._orgs: dict[str, tuple[float, Organisation]] = {}
        self._tasks: OrderedDict[int, list[str]] = OrderedDict()
        self._records: OrderedDict[int, tuple[float, Task]] = OrderedDict()

    def organisation(self, address: str) -> Organisation:
        """The organisation as registered (any status); :class:`UnknownPeer` if never admitted.

        Chain errors (ChainUnavailable, ...) propagate."""
        key = to_checksum_address(address)
        now = self._clock()
        with self._lock:
            hit = self._orgs.get(key)
            if hit is not None and hit[0] > now:
                org = hit[1]
                if org.status == OrgStatus.NONE:
                    raise UnknownPeer(key)
                return org
        org = self.ledger.organisation(key)
        with self._lock:
            self._orgs[key] = (self._clock() + self.ttl, org)
        if org.status == OrgStatus.NONE:
            raise UnknownPeer(key)
        return org

    def is_active(self, address: str) -> bool:
        try:
            return self.organisation(address).status == OrgStatus.ACTIVE
        except UnknownPeer:
            return False

    def endpoint(self, address: str) -> str:
        """The mailbox URL the organisation registered (no trailing slash)."""
        return self.organisation(address).endpoint.rstrip("/")

    def encryption_key(self, address: str) -> bytes:
        """The organisation's registered X25519 public key."""
        return self.organisation(address).encryption_key

    def participants(self, task_id: int) -> list[str]:
        """The task's participants in on-chain order (checksummed); :class:`UnknownTask` if none."""
        with self._lock:
            hit = self._tasks.get(task_id)
            if hit is not None:
                self._tasks.move_to_end(task_id)
                return list(hit)
        try:
            found: list[str] = [to_checksum_address(a) for a in self.ledger.task_participants(task_id)]
        except ContractRevert as exc:
            if exc.name == "UnknownTask":
                raise UnknownTask(task_id) from None
            raise
        with self._lock:
            self._tasks[task_id] = found
            self._tasks.move_to_end(task_id)
            while len(self._tasks) > self.max_tasks:
                self._tasks.popitem(last=False)
        return list(found)

    def task(self, task_id: int) -> Task:
        """The task's on-chain record; :class:`UnknownTask` if none."""
        now = self._clock()
        with self._lock:
            hit = self._records.get(task_id)
            if hit is not None and (hit[0] > now or hit[1].status.is_final):
                self._records.move_to_end(task_id)
                return hit[1]
        try:
            record = self.ledger.task(task_id)
        except ContractRevert as exc:
            if exc.name == "UnknownTask":
                raise UnknownTask(task_id) from None
            raise
        if record.status == TaskStatus.NONE:
            raise UnknownTask(task_id)
        if record.status != TaskStatus.PENDING:
            with self._lock:
                self._records[task_id] = (self._clock() + self.ttl, record)
                self._records.move_to_end(task_id)
                while len(self._records) > self.max_tasks:
                    self._records.popitem(last=False)
        return record

    def invalidate(self, address: str) -> None:
        """Forget the cached organisation, so the next lookup asks the chain."""
        with self._lock:
            self._orgs.pop(to_checksum_address(address), None)

    def clear(self) -> None:
        with self._lock:
            self._orgs.clear()
            self._tasks.clear()
            self._records.clear()
