"""The node's local, hash-chained action log.

Every action a node takes (verification outcome, start, refusal, messages, receipt,
deletion) is appended as one JSON line whose hash covers the previous entry's hash, so
editing, removing or inserting an entry breaks the chain from that point on. The node
anchors (sequence, head hash) on chain after each task; the auditor compares an exported
log with those anchors. Appends from several worker processes are serialised by a lock file.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

GENESIS = "0x" + "00" * 32


class LogCorrupt(Exception):
    """The log's hash chain is broken; `seq` is the first entry that does not verify."""

    def __init__(self, seq: int, why: str) -> None:
        super().__init__(f"entry {seq}: {why}")
        self.seq = seq
        self.why = why


@dataclass(frozen=True)
class Entry:
    seq: int
    at: float
    action: str
    task_id: int | None
    data: dict[str, Any]
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "action": self.action,
            "task_id": self.task_id,
            "data": self.data,
            "prev": self.prev,
        }


def entry_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "0x" + hashlib.sha256(b"pcn/action-log/v1\n" + canonical.encode()).hexdigest()


def parse_line(line: str) -> Entry:
    raw = json.loads(line)
    return Entry(
        int(raw["seq"]),
        float(raw["at"]),
        str(raw["action"]),
        raw.get("task_id"),
        dict(raw["data"]),
        str(raw["prev"]),
        str(raw["hash"]),
    )


def verify_entries(entries: list[Entry]) -> tuple[int, str]:
    """Check the chain from genesis; return (head seq, head hash) or raise LogCorrupt."""
    prev, expected_seq = GENESIS, 1
    for e in entries:
        if e.seq != expected_seq:
            raise LogCorrupt(e.seq, f"sequence {e.seq} where {expected_seq} was expected (entry removed or inserted)")
        if e.prev != prev:
            raise LogCorrupt(e.seq, "previous-hash link broken (an entry before it changed or is missing)")
        if entry_hash(e.body()) != e.hash:
            raise LogCorrupt(e.seq, "content does not match its hash (entry edited)")
        prev, expected_seq = e.hash, expected_seq + 1
    return expected_seq - 1, prev


class ActionLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path) + ".lock")

    def entries(self) -> Iterator[Entry]:
        if not self.path.is_file():
            return
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield parse_line(line)
                    except (ValueError, KeyError, TypeError) as exc:
                        raise LogCorrupt(n, f"unreadable line: {exc}") from exc

    def _tail(self) -> tuple[int, str]:
        """(seq, hash) of the last entry, reading only the end of the file."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with self.path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            chunk = min(size, 1 << 16)
            while True:
                f.seek(size - chunk)
                lines = f.read(chunk).splitlines()
                if len(lines) > 1 or chunk == size:
                    last = parse_line(lines[-1].decode())
                    return last.seq, last.hash
                chunk = min(size, chunk * 2)

    def append(self, action: str, task_id: int | None = None, **data: Any) -> Entry:
        with self._lock:
            seq, prev = self._tail()
            body: dict[str, Any] = {
                "seq": seq + 1,
                "at": round(time.time(), 6),
                "action": action,
                "task_id": task_id,
                "data": data,
                "prev": prev,
            }
            entry = Entry(**body, hash=entry_hash(body))
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({**body, "hash": entry.hash}, sort_keys=True, ensure_ascii=False) + "\n")
                f.flush()
            return entry

    def head(self) -> tuple[int, str]:
        with self._lock:
            return self._tail()

    def verify(self) -> tuple[int, str]:
        return verify_entries(list(self.entries()))

    def export(self, out: Path) -> int:
        """Copy the verified log to `out`; return the number of entries."""
        entries = list(self.entries())
        verify_entries(entries)
        with Path(out).open("w", encoding="utf-8") as f:
            for e in entries:
                f.write(json.dumps({**e.body(), "hash": e.hash}, sort_keys=True, ensure_ascii=False) + "\n")
        return len(entries)
