"""A node's on-disk cache for reusable protocol preprocessing (e.g. the private-query
holder's encrypted table, built once per dataset version and key epoch). Values hold no
secret; keys are content hashes chosen by the protocol. Writes are atomic; a damaged or
missing file is a miss; the oldest files go when the cache exceeds its size."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class FileCache:
    def __init__(self, directory: Path, max_bytes: int = 2 << 30) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.dir / (hashlib.sha256(key.encode()).hexdigest() + ".bin")

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        self.hits += 1
        os.utime(path)  # least recently used goes first
        return data

    def put(self, key: str, value: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(key)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(value)
        tmp.replace(path)
        self._evict()

    def _evict(self) -> None:
        files = sorted(self.dir.glob("*.bin"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        while files and total > self.max_bytes:
            victim = files.pop(0)
            total -= victim.stat().st_size
            victim.unlink(missing_ok=True)
