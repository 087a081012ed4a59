"""The holder's encrypted table: the preprocessing done once per (table content, key epoch).

For every distinct normalised key k of the holder's table (rows grouped by key, in table
order), with the epoch secret b and T_k = X25519(b, H(k)):

    frame_k  = len(json_k) (4 bytes, big-endian) | json_k, zero-padded to n_k·S bytes
    json_k   = canonical JSON (UTF-8) of [{column: cell-or-null, ...}, ...] for k's rows
    K_k      = HKDF-SHA256(ikm = T_k, salt = "pcn/pq/value-salt/v1", info = "pcn/pq/value" | len(k) | k)
    slot j   = tag_{k,j} = SHA-256("pcn/pq/tag/v1" | j | len(k) | k | T_k)[:16]
               ciphertext_{k,j} = ChaCha20-Poly1305(K_k, nonce = j, aad = tag_{k,j}, frame_k[jS : (j+1)S])

S, the slot size, is one value for the whole table: the largest frame, capped at
`SLOT_CAP` bytes (a key whose rows need more spans several slots). Every entry has the same
size, entries are sorted by tag (pseudorandom), so an entry says nothing about which row or
key it belongs to. The tag and the value key are the 2HashDH OPRF output (key and T_k hashed
together) under two domains: whoever knows T_k for a key can find and open its entry, and
nobody else can tell the entry from random bytes.

Nothing here is secret once built (b and the T_k never leave this module's functions), so
the serialised table can be cached on disk and shipped to any querier of the epoch.
"""

from __future__ import annotations

import hashlib
import json
import struct
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pcn import jsonsafe
from pcn.algorithms.base import ProtocolError
from pcn.algorithms.private_query.group import POINT_BYTES, clamp, h2c_prefix, hash_and_multiply, scalar_bytes
from pcn.data.table import Table

TAG_BYTES = 16
AEAD_OVERHEAD = 16
LENGTH_BYTES = 4
MIN_SLOT = 16
SLOT_CAP = 4096  # bytes of plaintext per entry at most; larger groups span several entries
MAX_SLOTS_PER_KEY = 1 << 20
CHUNK_BYTES = 8 * 1024 * 1024  # per table message, well under the 16 MiB envelope cap
MAX_CHUNK_ENTRIES = 65_536
JOB_KEYS = 2048  # keys per parallel job
WAVE_JOBS = 32  # jobs per progress report

MAGIC = b"PCNPQET1"
_HEADER = struct.Struct(">8sQQI")  # magic, table rows, entries, slot size
HEADER_BYTES = _HEADER.size

TAG_DOMAIN = b"pcn/pq/tag/v1"
VALUE_SALT = b"pcn/pq/value-salt/v1"
VALUE_INFO = b"pcn/pq/value"
DIGEST_DOMAIN = b"pcn/pq/table-digest/v1"
TABLE_ID_DOMAIN = b"pcn/pq/table-id/v1"
CACHE_DOMAIN = b"pcn/pq/cache/v2"  # v2: tables hashed with RFC 9380 (#13.1)
EPOCH_KEY_ID_DOMAIN = b"pcn/pq/epoch-key-id/v1"


class UnreadableEntry(ProtocolError):
    """An entry whose tag matches a queried key does not decrypt to rows. Only a dishonest
    holder causes it; the querier must not abort on it (aborting would tell the holder that
    this key was asked), so the protocol reports the key as unreadable instead."""


def normalise_key(cell: str | None) -> str | None:
    """Surrounding whitespace stripped (str.strip, Unicode whitespace), then Unicode NFC.
    Null and empty keys are None: they match nothing. Case is kept ("ABC" != "abc")."""
    if cell is None:
        return None
    key = unicodedata.normalize("NFC", cell.strip())
    return key or None


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def entry_tag(t: bytes, key: bytes, slot: int) -> bytes:
    return hashlib.sha256(TAG_DOMAIN + slot.to_bytes(4, "big") + _lp(key) + t).digest()[:TAG_BYTES]


def value_key(t: bytes, key: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, VALUE_SALT, VALUE_INFO + _lp(key)).derive(t)


def _nonce(slot: int) -> bytes:
    return slot.to_bytes(12, "big")


def slots_for(frame_len: int, slot_size: int) -> int:
    return -(-frame_len // slot_size)


def seal_chunk(job: tuple[bytes, bytes, int, Sequence[str], Sequence[bytes]]) -> bytes:
    """(epoch scalar, hash-to-curve prefix, slot size, keys, plaintexts) -> the entries of
    those keys, concatenated (unsorted). Module-level for the runtime's process pool."""
    scalar, prefix, slot_size, keys, plaintexts = job
    points = hash_and_multiply((scalar, prefix, keys))
    out = bytearray()
    for i, (key, plaintext) in enumerate(zip(keys, plaintexts, strict=True)):
        t = points[i * POINT_BYTES : (i + 1) * POINT_BYTES]
        kb = key.encode()
        frame = len(plaintext).to_bytes(LENGTH_BYTES, "big") + plaintext
        n = slots_for(len(frame), slot_size)
        frame += bytes(n * slot_size - len(frame))
        aead = ChaCha20Poly1305(value_key(t, kb))
        for j in range(n):
            tag = entry_tag(t, kb, j)
            out += tag + aead.encrypt(_nonce(j), frame[j * slot_size : (j + 1) * slot_size], tag)
    return bytes(out)


@dataclass(eq=False)
class EncryptedTable:
    """Fixed-size entries (tag | ciphertext), sorted by tag, plus the public header."""

    table_rows: int
    slot_size: int
    body: bytes
    _hi: np.ndarray | None = field(default=None, init=False, repr=False)
    _lo: np.ndarray | None = field(default=None, init=False, repr=False)
    _digest: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.table_rows < 0 or not MIN_SLOT <= self.slot_size <= SLOT_CAP:
            raise ProtocolError(f"encrypted table header is out of range (slot size {self.slot_size})")
        if len(self.body) % self.entry_size:
            raise ProtocolError("encrypted table body is not a whole number of entries")
        hi, lo = self._tag_arrays()
        if len(hi) > 1 and not bool(np.all((hi[1:] > hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] > lo[:-1])))):
            raise ProtocolError("encrypted table entries are not sorted by distinct tags")

    @property
    def entry_size(self) -> int:
        return TAG_BYTES + self.slot_size + AEAD_OVERHEAD

    @property
    def num_entries(self) -> int:
        return len(self.body) // self.entry_size

    def header(self) -> bytes:
        return _HEADER.pack(MAGIC, self.table_rows, self.num_entries, self.slot_size)

    def to_bytes(self) -> bytes:
        return self.header() + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedTable:
        if len(data) < HEADER_BYTES:
            raise ProtocolError("encrypted table is shorter than its header")
        magic, rows, entries, slot = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ProtocolError("not a pcn encrypted table (bad magic)")
        body = data[HEADER_BYTES:]
        if not MIN_SLOT <= slot <= SLOT_CAP or len(body) != entries * (TAG_BYTES + slot + AEAD_OVERHEAD):
            raise ProtocolError("encrypted table length does not match its header")
        return cls(rows, slot, body)

    def digest(self) -> bytes:
        if self._digest is None:
            h = hashlib.sha256(DIGEST_DOMAIN)
            h.update(self.header())
            h.update(self.body)
            self._digest = h.digest()
        return self._digest

    def entries_per_chunk(self) -> int:
        return chunk_entries(self.slot_size)

    def chunks(self) -> list[bytes]:
        step = self.entries_per_chunk() * self.entry_size
        return [self.body[i : i + step] for i in range(0, len(self.body), step)]

    def _tag_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._hi is None or self._lo is None:
            rows = np.frombuffer(self.body, dtype=np.uint8).reshape(-1, self.entry_size)
            self._hi = np.ascontiguousarray(rows[:, :8]).view(">u8").ravel()
            self._lo = np.ascontiguousarray(rows[:, 8:TAG_BYTES]).view(">u8").ravel()
        return self._hi, self._lo

    def find(self, tag: bytes) -> bytes | None:
        """The ciphertext of the entry with this tag, or None."""
        hi, lo = self._tag_arrays()
        th, tl = int.from_bytes(tag[:8], "big"), int.from_bytes(tag[8:TAG_BYTES], "big")
        i = int(np.searchsorted(hi, np.uint64(th), side="left"))
        while i < len(hi) and int(hi[i]) == th:
            if int(lo[i]) == tl:
                start = i * self.entry_size + TAG_BYTES
                return self.body[start : start + self.slot_size + AEAD_OVERHEAD]
            i += 1
        return None

    def open(self, key: str, t: bytes) -> list[dict[str, str | None]] | None:
        """The rows of `key` given its OPRF value T_k, None if the table has no such key.
        UnreadableEntry if an entry with the right tag does not decrypt to rows (tampering)."""
        kb = key.encode()
        first_tag = entry_tag(t, kb, 0)
        first = self.find(first_tag)
        if first is None:
            return None
        aead = ChaCha20Poly1305(value_key(t, kb))
        try:
            frame = aead.decrypt(_nonce(0), first, first_tag)
            length = int.from_bytes(frame[:LENGTH_BYTES], "big")
            n = slots_for(LENGTH_BYTES + length, self.slot_size)
            if n > MAX_SLOTS_PER_KEY:
                raise UnreadableEntry(f"the entry for key {key!r} claims {n} slots")
            parts = [frame]
            for j in range(1, n):
                tag = entry_tag(t, kb, j)
                ct = self.find(tag)
                if ct is None:
                    raise UnreadableEntry(f"the entry for key {key!r} is missing slot {j} of {n}")
                parts.append(aead.decrypt(_nonce(j), ct, tag))
        except InvalidTag:
            raise UnreadableEntry(f"the encrypted entry for key {key!r} fails authentication") from None
        plain = b"".join(parts)[LENGTH_BYTES : LENGTH_BYTES + length]
        try:
            rows = jsonsafe.loads(plain.decode())  # the holder's entry: too deep is an error, not a crash
        except (UnicodeDecodeError, ValueError):
            raise UnreadableEntry(f"the entry for key {key!r} is not valid JSON") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UnreadableEntry(f"the entry for key {key!r} is not a list of rows")
        return rows


def chunk_entries(slot_size: int) -> int:
    return max(1, min(MAX_CHUNK_ENTRIES, CHUNK_BYTES // (TAG_BYTES + slot_size + AEAD_OVERHEAD)))


def group_rows(table: Table, key_column: str, value_columns: Sequence[str]) -> dict[str, bytes]:
    """normalised key -> canonical JSON plaintext of its rows (table order)."""
    keys = table.column(key_column)
    columns = [table.column(c) for c in value_columns]
    groups: dict[str, list[int]] = {}
    for i, cell in enumerate(keys):
        key = normalise_key(cell)
        if key is not None:
            groups.setdefault(key, []).append(i)
    out: dict[str, bytes] = {}
    names = list(value_columns)
    for key, rows in groups.items():
        payload = [dict(zip(names, (col[i] for col in columns), strict=True)) for i in rows]
        out[key] = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    return out


def preprocess_table(
    table: Table,
    key_column: str,
    value_columns: Sequence[str],
    epoch_secret: bytes,
    epoch_id: str,
    *,
    pmap: Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> EncryptedTable:
    """Build the encrypted table (see the module docstring). `epoch_secret` is 32 secret
    bytes (clamped into the X25519 scalar b); `pmap` spreads the work over processes.
    Deterministic: the same inputs give byte-identical output."""
    run = pmap or (lambda fn, items: [fn(x) for x in items])
    if not value_columns:
        raise ProtocolError("at least one value column is needed")
    grouped = group_rows(table, key_column, value_columns)
    keys = list(grouped)
    plaintexts = [grouped[k] for k in keys]
    longest = max((LENGTH_BYTES + len(p) for p in plaintexts), default=0)
    slot_size = max(MIN_SLOT, min(SLOT_CAP, longest))
    scalar = scalar_bytes(clamp(epoch_secret))
    prefix = h2c_prefix(epoch_id)
    jobs = [
        (scalar, prefix, slot_size, keys[i : i + JOB_KEYS], plaintexts[i : i + JOB_KEYS])
        for i in range(0, len(keys), JOB_KEYS)
    ]
    entry_size = TAG_BYTES + slot_size + AEAD_OVERHEAD
    entries: list[bytes] = []
    for w in range(0, len(jobs), WAVE_JOBS):
        for blob in run(seal_chunk, jobs[w : w + WAVE_JOBS]):
            entries.extend(blob[i : i + entry_size] for i in range(0, len(blob), entry_size))
        if progress is not None:
            done = min(len(keys), (w + WAVE_JOBS) * JOB_KEYS)
            progress(done / max(1, len(keys)), f"encrypted {done:,} of {len(keys):,} keys")
    entries.sort()
    return EncryptedTable(table.num_rows, slot_size, b"".join(entries))


def table_id(table: Table, key_column: str, value_columns: Sequence[str]) -> bytes:
    """A content hash of what the encrypted table is built from: the columns used and every
    cell of them (order included). Equal tables give equal ids, whatever their source."""
    h = hashlib.sha256(TABLE_ID_DOMAIN)
    h.update(_lp(json.dumps([key_column, list(value_columns)]).encode()))
    h.update(table.num_rows.to_bytes(8, "big"))
    for name in [key_column, *value_columns]:
        h.update(_lp(json.dumps(table.column(name), ensure_ascii=False, separators=(",", ":")).encode()))
    return h.digest()


def cache_key(tid: bytes, epoch: str, epoch_secret: bytes) -> str:
    """Cache key of an encrypted table: its content id, the epoch, and a one-way fingerprint
    of the epoch secret (so a table built under another secret is never reused by mistake)."""
    secret_id = hashlib.sha256(EPOCH_KEY_ID_DOMAIN + epoch_secret).digest()
    return hashlib.sha256(CACHE_DOMAIN + tid + _lp(epoch.encode()) + secret_id).hexdigest()


class MemoryTableCache:
    """An in-process LRU `TaskCache` of encrypted tables, with hit and miss counters."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.puts = 0

    def get(self, key: str) -> bytes | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: bytes) -> None:
        self.puts += 1
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
