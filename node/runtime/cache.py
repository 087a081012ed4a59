"""A node's on-disk cache for reusable protocol preprocessing (e.g. the private-query
holder's encrypted table, built once per dataset version and key epoch). Values hold no
secret; keys are content hashes chosen by the protocol (or, for dataset fingerprints,
`fingerprint_with_cache`). Writes are atomic; a damaged or
missing file is a miss; the oldest files go when the cache exceeds its size."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pcn.chain.types import Fingerprint
    from pcn.data.canonical import Schema
    from pcn.data.table import Table


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


# -- a dataset's fingerprint, by the bytes of its file -----------------------------------------

_FINGERPRINT_DOMAIN = b"pcn/fingerprint-cache/v1"
_data_code: bytes | None = None


def _data_code_hash() -> bytes:
    """What the canonical rows depend on besides the file: the code of `pcn.data` (readers,
    canonical encoding, fingerprint) and the Arrow it parses with. A change to either
    invalidates every cached fingerprint."""
    global _data_code
    if _data_code is None:
        import pyarrow

        import pcn.data

        h = hashlib.sha256(pyarrow.__version__.encode())
        for source in sorted(Path(pcn.data.__file__).parent.glob("*.py")):
            h.update(source.name.encode() + b"\0" + source.read_bytes())
        _data_code = h.digest()
    return _data_code


def fingerprint_with_cache(
    cache: FileCache,
    table: Table,
    schema: Schema,
    salt: bytes,
    file_digest: bytes,
    fmt: str,
    metadata: Mapping[str, Any],
) -> Fingerprint:
    """`fingerprint_table`, reusing the root computed earlier for the same file bytes.

    The cache key is HMAC-SHA256(salt, domain || SHA-256 of the file's bytes || format ||
    the `pcn.data` code hash): a hit needs the very bytes (`read_table_digest` hashes the
    bytes it parsed), the same salt and the same canonicalisation code, so it gives the
    root a recomputation would give unless SHA-256 collides. A changed file, salt or reader
    is a miss and is recomputed. The key reveals neither the salt nor the file; the value
    is the root, schema hash and row count (all on chain once registered)."""
    from pcn.chain.types import Fingerprint as Found
    from pcn.data.fingerprint import fingerprint_table, metadata_hash

    key = hmac.new(
        salt, _FINGERPRINT_DOMAIN + file_digest + fmt.encode() + b"\0" + _data_code_hash(), "sha256"
    ).hexdigest()
    raw = cache.get(key)
    if raw is not None:
        try:
            held = json.loads(raw)
            root, schema_hash, rows = bytes.fromhex(held["root"]), bytes.fromhex(held["schema"]), int(held["rows"])
        except (ValueError, KeyError, TypeError):
            held = None  # a damaged entry is a miss
        if held is not None and (schema_hash, rows) == (schema.hash, table.num_rows) and len(root) == 32:
            return Found(root, schema_hash, metadata_hash(metadata), rows)
    fp = fingerprint_table(table, schema, salt, metadata)
    entry = {"root": fp.merkle_root.hex(), "schema": fp.schema_hash.hex(), "rows": fp.row_count}
    cache.put(key, json.dumps(entry).encode())
    return fp
