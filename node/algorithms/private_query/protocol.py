"""Keyword private query (匿踪查询) by an ECDH OPRF on X25519: the querier looks keys up in the
holder's table; the holder does not learn which keys.

Parties: exactly two. The querier Q is the task's result recipient; its table's key column
(params "query_column", else its dataset's ID column) is the list of keys to look up. The
holder H is the other participant; its table has a key column (params "key_column", else its
ID column) and the "value_columns" Q asks for. Keys on both sides are normalised (strip
surrounding whitespace, Unicode NFC; case is kept); null or empty keys match nothing, and Q's
duplicates are asked once.

Construction (2HashDH OPRF of Jarecki-Kiayias-Krawczyk, keyword PIR by shipping the
OPRF-encrypted table; the scheme behind the ECDH-OPRF private query of industrial stacks):

  H(x) is hash-to-curve on Curve25519 with the epoch as domain; X25519(s, P) is [s]P on
  x-coordinates (see `group.py`). H has an epoch secret scalar b and, once per (table
  content, columns, epoch), builds the encrypted table (see `encrypted.py`): for every key
  k, T_k = X25519(b, H(k)); its rows are encrypted under a key derived from (k, T_k) and
  filed under the tag SHA-256(k, T_k)[:16]. That preprocessing is cached and reused by
  every query of the epoch.

  Round 1  Q -> H "query-head": n, the number of distinct keys, followed by the digest of the
                 encrypted table Q kept from an earlier task when it has one (warm, below).
           Q -> H "blinded" (batches of batch_size): X25519(a, H(q)) for each key q, with a
                 Q's per-task secret scalar.
           H -> Q "table-head": rows, entries, slot size, chunk count, digest of the table.
           H -> Q "table" (chunks of <= 65,536 entries, <= 8 MiB): the encrypted table, unless
                 Q announced the digest of H's current table: then the head says 0 chunks and
                 Q uses its copy.
  Round 2  H -> Q "evaluated" (same batches, same order): X25519(b, X25519(a, H(q))).
           Q unblinds with clamped u1, u2 where a·u1·u2 ≡ 1 mod L (X25519 has no scalar
           inverse, see `group.py`): X25519(u2, X25519(u1, ·)) = X25519(b, H(q)) = T_q, finds
           tag(q, T_q) in the table and decrypts the rows of each hit.
  Round 3  Q -> H "result-hash": h_r = SHA-256("pcn/pq/result/v1" | salt | result), salt
           Q's secret, so h_r cannot confirm a guessed result.

  Both parties then commit to SHA-256("pcn/pq/commit/v1" | d_query | d_eval | d_table | h_r),
  where d_query and d_eval hash the payloads of the query-head and blinded messages, and of
  the evaluated messages, and d_table is the table digest; equal at both parties in an honest
  run. Q's `commitment_opening()` is d_query | d_eval | d_table | salt.

Warm queries (the querier's cache). The encrypted table is the same for every query of an
epoch on one table version, so Q keeps the copy it received (in its node's cache, under the
table's digest) and announces that digest in later tasks' query-heads; H sends the table only
when the announced digest is not its current table's. A warm query then costs the wire 40 + 36
bytes per batch of one key plus the heads: the table never travels twice per epoch and version.
Q checks its copy against the digest in H's table head, which the commitment binds (d_query
covers the announced digest, d_table the head's), so a stale or damaged copy is never used: a
changed table or a new epoch has another digest and travels again. What Q announces in a task is
fixed the first time the task starts at Q (recorded in the cache under the task's binding), so a
resumed querier sends the same query-head again.

Cost (measured on this machine, one core): preprocessing 1 X25519 per distinct key, about
60-100 us per row all included (100k rows: 5.8 s, measured with the v1 try-and-increment hash;
the RFC 9380 hash of #13.1 adds about 40 us of CPU per key), cached. Per query key: 3 X25519
at Q (blind, two to unblind) plus hashing, 1 X25519 at H, 64 bytes on the wire. Per task: the whole
encrypted table (entries * (32 + slot size) bytes) travels to Q, whatever n is; lookups are
binary searches. Rounds: 3 message rounds, the first two pipelined per batch.

Leakage (semi-honest parties, no collusion; one-more-DH assumption in the prime-order
subgroup, SHA-512 as random oracle for the RFC 9380 hash):
  - H learns n (the number of distinct non-empty query keys) and nothing else: every element
    it sees is [a]H(q) for Q's secret clamped scalar a (fresh per task), which under DDH in
    the prime-order subgroup is indistinguishable from a random subgroup element; queries are
    unlinkable across tasks. (Hiding is computational, as in every X25519 ECDH-PSI: clamped
    scalars cover half of Z_L, not all of it.)
  - Q learns, for each of its keys, whether H's table has it and then all of its rows (the
    value columns only, grouped in table order). Beyond that it learns the table's row count,
    the number of entries (the number of distinct non-empty keys, plus extra slots for keys
    whose rows exceed 4 KiB) and the slot size (the largest entry, capped at 4 KiB). Entries
    are equal-sized and sorted by pseudorandom tags: they reveal no row order, no key and no
    value. With n evaluations Q can open at most n entries (one-more DH), whichever keys it
    chooses: it learns what it asked for, as the functionality says.
  - A copy Q keeps (the warm cache, or any copy a dishonest Q keeps anyway: it received the
    table) lets it open nothing later on its own: opening an entry needs T_k = X25519(b, H(k)),
    and b never leaves H. Each later opening needs an evaluation by H in a task the chain
    records, whose n is announced, bound by the commitment and capped by the task's declared
    max_keys and the owners' use rules. The copy does tell Q, by its digest, whether H's table
    changed within the epoch, which the table head of any task tells it anyway. H learns from a
    warm query-head that Q kept the table of an earlier task, which H served.
  - The epoch secret b is the same for every query of an epoch on the same table content and
    columns (that is what lets the encrypted table be reused); it is derived per table id, so
    an OPRF value obtained for one table or column selection does not open another's entries.
    Changing the epoch (e.g. monthly) re-keys everything.
  - A malicious Q could send its elements in any order or repeat them; it still gets at most
    n OPRF evaluations, which is what H agreed to. H cannot prove it evaluated with the same b
    as the table (no DLEQ proof): a dishonest H can make keys miss, but not learn them. The
    chain binds what was exchanged through the commitment.

Classes: `PrivateQueryProtocol`, the class registered for the kind, holds what both parties
share (parameters, batches, the transcript digests, the commitment); `PrivateQueryQuerier` and
`PrivateQueryHolder` each role's messages. `PrivateQueryProtocol.create(ctx, data)` builds the
class of the party's role.

The holder's task services (`ctx.services`, given per task by the runtime):
  - `epoch_key`: label -> 32 secret bytes, an organisation-level KDF (e.g. HMAC of a node
    master key) that is stable across tasks. H calls it with "pq-epoch/<epoch>/<table id hex>";
    a context without one cannot hold a table.
  - `cache`: a `TaskCache` (get/put of bytes by hex key). The key is SHA-256 of the table id,
    the epoch and a one-way fingerprint of the epoch secret. Values hold only tags and
    ciphertexts. The default keeps nothing: every task preprocesses.

Result (canonical JSON, at Q only): {"algorithm": "private-query", "hits": {key: [{column:
cell-or-null, ...}, ...]}, "misses": [key, ...] (sorted), "queried": n, "table_rows": m}, keys
normalised. A key that is not in the holder's current registered table is a miss. Only if the
holder sent an entry that matches a queried key but does not decrypt (a dishonest holder: an
honest one cannot produce it), the result also has "unreadable": [key, ...]; the querier does
not abort then, because an abort the holder can see would be a selective-failure channel
telling it that the key was asked. Every other malformed message is a ProtocolError.
"""

from __future__ import annotations

import hashlib
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pcn.algorithms.base import CommitmentScheme, Message, PartyContext, Protocol, ProtocolError, canonical_json
from pcn.algorithms.private_query.encrypted import (
    AEAD_OVERHEAD,
    HEADER_BYTES,
    JOB_KEYS,
    MAGIC,
    MIN_SLOT,
    SLOT_CAP,
    TAG_BYTES,
    EncryptedTable,
    UnreadableEntry,
    cache_key,
    chunk_entries,
    normalise_key,
    preprocess_table,
    table_id,
)
from pcn.algorithms.private_query.group import (
    POINT_BYTES,
    clamp,
    h2c_prefix,
    hash_and_multiply,
    multiply,
    scalar_bytes,
    unblinding_scalars,
)
from pcn.algorithms.private_query.params import validate_params as _validate_params

RESULT_DOMAIN = b"pcn/pq/result/v1"
COMMIT_DOMAIN = b"pcn/pq/commit/v1"
QUERY_DOMAIN = b"pcn/pq/query-transcript/v1"
EVAL_DOMAIN = b"pcn/pq/eval-transcript/v1"

ROUND_QUERY, ROUND_EVAL, ROUND_RESULT = 1, 2, 3
KIND_QUERY_HEAD, KIND_BLINDED, KIND_TABLE_HEAD, KIND_TABLE = "query-head", "blinded", "table-head", "table"
KIND_EVALUATED, KIND_RESULT = "evaluated", "result-hash"
QUERY_HEAD_BYTES = 8  # n; a warm query-head adds the digest of the querier's copy of the table
QUERIER_CACHE_DOMAIN = b"pcn/pq/querier-cache/v1"

DIGEST_BYTES = 32
INDEX_BYTES = 4
TABLE_HEAD_BYTES = HEADER_BYTES + INDEX_BYTES + DIGEST_BYTES
MAX_QUERIES = 100_000_000
JOB_POINTS = 1024  # group elements per parallel job
WAVE_JOBS = 32

# The querier's opening is d_query | d_eval | d_table | salt.
COMMITMENT = CommitmentScheme(
    RESULT_DOMAIN,
    COMMIT_DOMAIN,
    head_unit=DIGEST_BYTES,
    min_head=3 * DIGEST_BYTES,
    max_head=3 * DIGEST_BYTES,
    error="a private-query opening is d_query | d_eval | d_table | salt, 32 bytes each",
)


def _index(payload: bytes) -> int:
    return int.from_bytes(payload[:INDEX_BYTES], "big")


@dataclass(eq=False)
class PrivateQueryProtocol(Protocol):
    name: ClassVar[str] = "private-query"
    participant_range: ClassVar[tuple[int, int]] = (2, 2)
    commitment: ClassVar[CommitmentScheme] = COMMITMENT
    role: ClassVar[str]  # "querier" or "holder"

    _params: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _done: bool = field(default=False, init=False, repr=False)
    _n: int | None = field(default=None, init=False, repr=False)  # number of distinct query keys
    _q_digest: Any = field(default=None, init=False, repr=False)
    _e_digest: Any = field(default=None, init=False, repr=False)
    _table_digest: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        ctx = self.ctx
        if len(ctx.participants) != 2 or len(set(ctx.participants)) != 2:
            raise ProtocolError("private-query needs exactly 2 distinct participants: the querier and the holder")
        self._check_context("the querier")
        if not isinstance(self, self.role_class(ctx)):
            raise ProtocolError(f"{type(self).__name__} plays the {self.role}, which {ctx.me!r} is not in this task")
        self._params = self.validate_params(ctx.params)
        self._q_digest = hashlib.sha256(QUERY_DOMAIN)
        self._e_digest = hashlib.sha256(EVAL_DOMAIN)

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        """The params normalised (defaults filled in); ProtocolError on anything wrong."""
        return _validate_params(params)

    @classmethod
    def role_class(cls, ctx: PartyContext) -> type[PrivateQueryProtocol]:
        """The querier's class for the recipient, the holder's for the other party."""
        return PrivateQueryQuerier if ctx.is_recipient else PrivateQueryHolder

    # -- helpers -----------------------------------------------------------------------

    @property
    def holder(self) -> str:
        return next(p for p in self.ctx.participants if p != self.ctx.recipient)

    def _key_column(self, param: str) -> str:
        column = self._params[param] or self.ctx.id_column
        if not column:
            raise ProtocolError(f"no key column: set params {param!r} or register the dataset with an ID column")
        return column

    def _batches(self) -> int:
        assert self._n is not None
        return -(-self._n // self._params["batch_size"])

    def _batch_len(self, index: int) -> int:
        assert self._n is not None
        size = self._params["batch_size"]
        return min(size, self._n - index * size)

    def _point_jobs(self, scalars: tuple[bytes, ...], points: bytes) -> list[tuple[tuple[bytes, ...], bytes, int]]:
        step = JOB_POINTS * POINT_BYTES
        return [(scalars, points[i : i + step], i // POINT_BYTES) for i in range(0, len(points), step)]

    # -- protocol ----------------------------------------------------------------------

    def start(self) -> list[Message]:
        self._mark_started()
        return self._first_messages()

    @abstractmethod
    def _first_messages(self) -> list[Message]:
        """What this party sends first."""

    def receive(self, msg: Message) -> list[Message]:
        self._check_delivery(msg)
        handler = self._handlers().get((msg.round, msg.kind))
        if handler is None:
            raise ProtocolError(
                f"unexpected message round {msg.round} kind {msg.kind!r} from {msg.sender!r} at the {self.role}"
            )
        return handler(msg)

    @abstractmethod
    def _handlers(self) -> dict[tuple[int, str], Callable[[Message], list[Message]]]:
        """(round, kind) -> what this party does with such a message from its peer."""

    @staticmethod
    def _length(msg: Message, expected: int) -> None:
        if len(msg.payload) != expected:
            raise ProtocolError(
                f"{msg.kind!r} message from {msg.sender!r} has {len(msg.payload)} bytes, expected {expected}"
            )

    @staticmethod
    def _in_order(msg: Message, expected: int, total: int) -> None:
        if len(msg.payload) < INDEX_BYTES:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} is too short")
        got = _index(msg.payload)
        if got != expected or expected >= total:
            what = "duplicate or out-of-order" if got < expected else "unexpected"
            raise ProtocolError(
                f"{what} {msg.kind!r} message {got} from {msg.sender!r} (expected {expected} of {total})"
            )

    # -- outcome -----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    def _digests(self) -> bytes:
        if not self._done or self._result_hash is None or self._table_digest is None:
            raise ProtocolError("the private-query protocol has not finished")
        return self._q_digest.digest() + self._e_digest.digest() + self._table_digest

    def result_commitment(self) -> bytes:
        digests = self._digests()
        assert self._result_hash is not None
        return COMMITMENT.commit(digests, self._result_hash)

    def commitment_opening(self) -> bytes:
        """d_query | d_eval | d_table, followed at the querier by its 32-byte result salt; with
        the result bytes, `commitment_for` recomputes `result_commitment()`."""
        return self._digests()


@dataclass(eq=False)
class PrivateQueryQuerier(PrivateQueryProtocol):
    """The querier: the recipient, which looks its keys up in the holder's table."""

    role: ClassVar[str] = "querier"

    _queries: list[str] = field(default_factory=list, init=False, repr=False)
    _unblind: tuple[bytes, bytes] | None = field(default=None, init=False, repr=False)
    _head: tuple[int, int, int, int] | None = field(default=None, init=False, repr=False)  # rows, entries, slot, chunks
    _body: bytearray = field(default_factory=bytearray, init=False, repr=False)
    _next_chunk: int = field(default=0, init=False, repr=False)
    _evaluated: list[bytes] = field(default_factory=list, init=False, repr=False)
    _copy: EncryptedTable | None = field(default=None, init=False, repr=False)  # the table kept from a past task
    warm: bool = field(default=False, init=False, repr=False)  # the holder did not send its table

    def _salt(self) -> bytes:
        return self.secret_bytes("pq/result-salt", 32)

    def _waves(self, fn: Callable[[Any], bytes], jobs: list[Any], lo: float, hi: float, what: str) -> bytes:
        """pmap over jobs in waves, reporting progress between waves; results concatenated."""
        out = bytearray()
        for w in range(0, len(jobs), WAVE_JOBS):
            for blob in self.pmap(fn, jobs[w : w + WAVE_JOBS]):
                out += blob
            done = min(len(jobs), w + WAVE_JOBS)
            self.report(lo + (hi - lo) * done / max(1, len(jobs)), what)
        return bytes(out)

    def _handlers(self) -> dict[tuple[int, str], Callable[[Message], list[Message]]]:
        return {
            (ROUND_QUERY, KIND_TABLE_HEAD): self._on_table_head,
            (ROUND_QUERY, KIND_TABLE): self._on_table_chunk,
            (ROUND_EVAL, KIND_EVALUATED): self._on_evaluated,
        }

    def _first_messages(self) -> list[Message]:
        p = self._params
        column = self._key_column("query_column")
        self.report(0.0, "normalising query keys")
        self._queries = sorted({k for k in map(normalise_key, self.data.column(column)) if k is not None})
        self._n = n = len(self._queries)
        cap = p.get("max_keys")
        if cap is not None and n > cap:
            raise ProtocolError(f"this table has {n:,} distinct query keys; the task declares at most {cap:,}")
        a = clamp(self.secret_bytes("pq/blind", 32))
        u1, u2 = unblinding_scalars(a, lambda i: self.secret_bytes(f"pq/unblind/{i}", 32))
        self._unblind = (scalar_bytes(u1), scalar_bytes(u2))
        prefix = h2c_prefix(p["epoch"])
        jobs = [(scalar_bytes(a), prefix, self._queries[i : i + JOB_KEYS]) for i in range(0, n, JOB_KEYS)]
        blinded = self._waves(hash_and_multiply, jobs, 0.0, 0.3, f"hashing and blinding {n:,} query keys")
        holder = self.holder
        self._copy = self._kept_table()
        head = n.to_bytes(QUERY_HEAD_BYTES, "big") + (self._copy.digest() if self._copy is not None else b"")
        self._q_digest.update(head)
        out = [self.send(holder, ROUND_QUERY, KIND_QUERY_HEAD, head)]
        step = p["batch_size"] * POINT_BYTES
        for b in range(self._batches()):
            payload = b.to_bytes(INDEX_BYTES, "big") + blinded[b * step : (b + 1) * step]
            self._q_digest.update(payload)
            out.append(self.send(holder, ROUND_QUERY, KIND_BLINDED, payload))
        self.report(0.3, f"sent {n:,} blinded keys in {self._batches()} batches")
        return out

    # -- the querier's copies of encrypted tables (see "Warm queries" above) ------------------

    def _cache_key(self, what: str, *parts: bytes) -> str:
        h = hashlib.sha256(QUERIER_CACHE_DOMAIN + b"/" + what.encode())
        for part in parts:
            h.update(len(part).to_bytes(8, "big") + part)
        return f"pq-querier/{what}/{h.hexdigest()}"

    def _table_slot(self) -> str:
        """Where the digest of this holder's latest table for this epoch and columns is kept."""
        p = self._params
        selection = canonical_json([p["epoch"], p["key_column"], p["value_columns"]])
        return self._cache_key("latest", self.holder.encode(), selection)

    def _kept_table(self) -> EncryptedTable | None:
        """The copy of the holder's table to announce in this task, or None (cold). Decided
        once per task and recorded under the task's binding, so a resumed querier announces the
        same; a copy that is gone or damaged by then is a ProtocolError, not a silent change."""
        cache = self.ctx.services.cache
        decision_key = self._cache_key("decision", self.ctx.binding, self.ctx.me.encode())
        decided = cache.get(decision_key)
        if decided is None:
            latest = cache.get(self._table_slot())
            copy = self._read_copy(latest) if latest is not None and len(latest) == DIGEST_BYTES else None
            cache.put(decision_key, copy.digest() if copy is not None else b"")
            return copy
        if not decided:
            return None
        copy = self._read_copy(decided)
        if copy is None:
            raise ProtocolError(
                "this task announced the querier's cached copy of the encrypted table, which is no longer "
                "in the node's cache (evicted or damaged); run the query again as a new task"
            )
        return copy

    def _read_copy(self, digest: bytes) -> EncryptedTable | None:
        blob = self.ctx.services.cache.get(self._cache_key("table", digest))
        if blob is None:
            return None
        try:
            copy = EncryptedTable.from_bytes(blob)
        except ProtocolError:
            return None
        if copy.digest() != digest:
            return None
        self.report(0.3, f"using the encrypted table kept from an earlier task ({copy.num_entries:,} entries)")
        return copy

    def _keep(self, enc: EncryptedTable) -> None:
        cache = self.ctx.services.cache
        cache.put(self._cache_key("table", enc.digest()), enc.to_bytes())
        cache.put(self._table_slot(), enc.digest())

    def _on_table_head(self, msg: Message) -> list[Message]:
        if self._head is not None:
            raise ProtocolError(f"duplicate {msg.kind!r} message from {msg.sender!r}")
        self._length(msg, TABLE_HEAD_BYTES)
        magic = msg.payload[:8]
        rows = int.from_bytes(msg.payload[8:16], "big")
        entries = int.from_bytes(msg.payload[16:24], "big")
        slot = int.from_bytes(msg.payload[24:28], "big")
        chunks = int.from_bytes(msg.payload[HEADER_BYTES : HEADER_BYTES + INDEX_BYTES], "big")
        digest = msg.payload[HEADER_BYTES + INDEX_BYTES :]
        if magic != MAGIC or not MIN_SLOT <= slot <= SLOT_CAP:
            raise ProtocolError(f"table head from {msg.sender!r} is malformed")
        if chunks == 0 and entries > 0:  # the holder points at the querier's copy
            copy = self._copy
            if copy is None or copy.digest() != digest or copy.header() != msg.payload[:HEADER_BYTES]:
                raise ProtocolError(
                    f"table head from {msg.sender!r} sends no table, but this querier announced no copy of that table"
                )
            self.warm = True
        elif chunks != -(-entries // chunk_entries(slot)):
            raise ProtocolError(f"table head from {msg.sender!r}: {chunks} chunks for {entries} entries")
        self._head = (rows, entries, slot, chunks)
        self._table_digest = digest
        return self._maybe_finish_querier()

    def _on_table_chunk(self, msg: Message) -> list[Message]:
        if self._head is None:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} before the table head")
        _rows, entries, slot, chunks = self._head
        self._in_order(msg, self._next_chunk, chunks)
        per = chunk_entries(slot)
        count = min(per, entries - self._next_chunk * per)
        self._length(msg, INDEX_BYTES + count * (TAG_BYTES + slot + AEAD_OVERHEAD))
        self._body += msg.payload[INDEX_BYTES:]
        self._next_chunk += 1
        self.report(0.3 + 0.4 * self._next_chunk / chunks, f"received table chunk {self._next_chunk} of {chunks}")
        return self._maybe_finish_querier()

    def _on_evaluated(self, msg: Message) -> list[Message]:
        total = self._batches()
        self._in_order(msg, len(self._evaluated), total)
        self._length(msg, INDEX_BYTES + self._batch_len(len(self._evaluated)) * POINT_BYTES)
        self._e_digest.update(msg.payload)
        self._evaluated.append(msg.payload[INDEX_BYTES:])
        return self._maybe_finish_querier()

    def _maybe_finish_querier(self) -> list[Message]:
        if self._done or self._head is None or self._next_chunk < self._head[3]:
            return []
        if len(self._evaluated) < self._batches():
            return []
        rows, _entries, slot, _chunks = self._head
        if self.warm:
            assert self._copy is not None
            enc = self._copy
        else:
            enc = EncryptedTable(rows, slot, bytes(self._body))
            if enc.digest() != self._table_digest:
                raise ProtocolError("the encrypted table does not match the digest in its head")
            self._body = bytearray()
        assert self._unblind is not None
        points = b"".join(self._evaluated)
        self._evaluated = [b""] * len(self._evaluated)  # keep the count, free the memory
        unblinded = self._waves(multiply, self._point_jobs(self._unblind, points), 0.7, 0.9, "unblinding")
        self.report(0.9, "looking up and decrypting")
        hits: dict[str, list[dict[str, str | None]]] = {}
        misses: list[str] = []
        unreadable: list[str] = []
        for i, q in enumerate(self._queries):
            try:
                found = enc.open(q, unblinded[i * POINT_BYTES : (i + 1) * POINT_BYTES])
            except UnreadableEntry:  # never abort here: that would tell the holder q was asked
                unreadable.append(q)
                continue
            if found is None:
                misses.append(q)
            else:
                hits[q] = found
        assert self._n is not None
        out: dict[str, Any] = {
            "algorithm": self.name,
            "hits": hits,
            "misses": misses,
            "queried": self._n,
            "table_rows": rows,
        }
        if unreadable:
            out["unreadable"] = unreadable
        self._result = canonical_json(out)
        self._result_hash = COMMITMENT.result_hash(self._salt(), self._result)
        if not self.warm and enc.num_entries:
            self._keep(enc)
        self._done = True
        self.report(1.0, "done; the querier holds the result")
        return [self.send(self.holder, ROUND_RESULT, KIND_RESULT, self._result_hash)]

    def commitment_opening(self) -> bytes:
        return super().commitment_opening() + self._salt()


@dataclass(eq=False)
class PrivateQueryHolder(PrivateQueryProtocol):
    """The holder: the other party, whose table the querier looks its keys up in."""

    role: ClassVar[str] = "holder"

    _next_batch: int = field(default=0, init=False, repr=False)
    _scalar: bytes | None = field(default=None, init=False, repr=False)
    _table_rows: int = field(default=0, init=False, repr=False)
    _enc: EncryptedTable | None = field(default=None, init=False, repr=False)
    preprocess_seconds: float = field(default=0.0, init=False, repr=False)
    cache_hit: bool = field(default=False, init=False, repr=False)

    def _handlers(self) -> dict[tuple[int, str], Callable[[Message], list[Message]]]:
        return {
            (ROUND_QUERY, KIND_QUERY_HEAD): self._on_query_head,
            (ROUND_QUERY, KIND_BLINDED): self._on_blinded,
            (ROUND_RESULT, KIND_RESULT): self._on_result_hash,
        }

    def _epoch_secret(self, label: str) -> bytes:
        secret = self.ctx.services.epoch_key(label)
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise ProtocolError("the epoch key service must return 32 bytes")
        return secret

    def _encrypted_table(self) -> EncryptedTable:
        p = self._params
        column = self._key_column("key_column")
        table = self.data
        self.report(0.0, "fingerprinting the table")
        tid = table_id(table, column, p["value_columns"])
        secret = self._epoch_secret(f"pq-epoch/{p['epoch']}/{tid.hex()}")
        self._scalar = scalar_bytes(clamp(secret))
        cache = self.ctx.services.cache
        key = cache_key(tid, p["epoch"], secret)
        blob = cache.get(key)
        if blob is not None:
            try:
                enc = EncryptedTable.from_bytes(blob)
                if enc.table_rows == table.num_rows:
                    self.cache_hit = True
                    self.report(0.5, f"reusing the encrypted table of epoch {p['epoch']!r} from the cache")
                    return enc
            except ProtocolError:
                pass  # a damaged cache entry: rebuild it
        t0 = time.perf_counter()
        enc = preprocess_table(
            table,
            column,
            p["value_columns"],
            secret,
            p["epoch"],
            pmap=self.pmap,
            progress=lambda f, what: self.report(0.5 * f, what),
        )
        self.preprocess_seconds = time.perf_counter() - t0
        cache.put(key, enc.to_bytes())
        return enc

    def _first_messages(self) -> list[Message]:
        """The table is ready (built or from the cache); it goes out with the answer to the
        query head, which says whether the querier kept a copy of it."""
        self._enc = enc = self._encrypted_table()
        self._table_rows = enc.table_rows
        self._table_digest = enc.digest()
        return []

    def _table_messages(self, announced: bytes) -> list[Message]:
        enc = self._enc
        assert enc is not None and self._table_digest is not None
        querier = self.ctx.recipient
        if announced == self._table_digest:
            head = enc.header() + bytes(INDEX_BYTES) + self._table_digest
            self.report(0.5, "the querier kept this table from an earlier task: sent its head only")
            return [self.send(querier, ROUND_QUERY, KIND_TABLE_HEAD, head)]
        chunks = enc.chunks()
        head = enc.header() + len(chunks).to_bytes(INDEX_BYTES, "big") + self._table_digest
        out = [self.send(querier, ROUND_QUERY, KIND_TABLE_HEAD, head)]
        for i, chunk in enumerate(chunks):
            out.append(self.send(querier, ROUND_QUERY, KIND_TABLE, i.to_bytes(INDEX_BYTES, "big") + chunk))
        self.report(0.5, f"sent the encrypted table ({enc.num_entries:,} entries in {len(chunks)} messages)")
        return out

    def _on_query_head(self, msg: Message) -> list[Message]:
        if self._n is not None:
            raise ProtocolError(f"duplicate {msg.kind!r} message from {msg.sender!r}")
        if len(msg.payload) not in (QUERY_HEAD_BYTES, QUERY_HEAD_BYTES + DIGEST_BYTES):
            raise ProtocolError(
                f"{msg.kind!r} message from {msg.sender!r} has {len(msg.payload)} bytes, "
                f"expected {QUERY_HEAD_BYTES} or {QUERY_HEAD_BYTES + DIGEST_BYTES}"
            )
        n = int.from_bytes(msg.payload[:QUERY_HEAD_BYTES], "big")
        if n > MAX_QUERIES:
            raise ProtocolError(f"the querier announces {n:,} keys; at most {MAX_QUERIES:,} per task")
        cap = self._params.get("max_keys")
        if cap is not None and n > cap:  # the declared cap the owners' rules were checked against
            raise ProtocolError(f"the querier announces {n:,} keys; the task declares at most {cap:,}")
        self._n = n
        self._q_digest.update(msg.payload)
        out = self._table_messages(msg.payload[QUERY_HEAD_BYTES:])
        self.report(0.5, f"the querier asks {n:,} keys")
        return out + self._maybe_finish_holder()

    def _on_blinded(self, msg: Message) -> list[Message]:
        if self._n is None:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} before the query head")
        total = self._batches()
        self._in_order(msg, self._next_batch, total)
        index = self._next_batch
        self._length(msg, INDEX_BYTES + self._batch_len(index) * POINT_BYTES)
        assert self._scalar is not None
        jobs = self._point_jobs((self._scalar,), msg.payload[INDEX_BYTES:])
        evaluated = b"".join(self.pmap(multiply, jobs))
        self._q_digest.update(msg.payload)
        self._next_batch += 1
        payload = index.to_bytes(INDEX_BYTES, "big") + evaluated
        self._e_digest.update(payload)
        self.report(0.5 + 0.45 * self._next_batch / total, f"evaluated batch {self._next_batch} of {total}")
        return [self.send(msg.sender, ROUND_EVAL, KIND_EVALUATED, payload)]

    def _on_result_hash(self, msg: Message) -> list[Message]:
        if self._result_hash is not None:
            raise ProtocolError(f"duplicate {msg.kind!r} message from {msg.sender!r}")
        if self._n is None or self._next_batch < self._batches():
            raise ProtocolError(f"{msg.kind!r} from {msg.sender!r} before every batch was evaluated")
        self._length(msg, DIGEST_BYTES)
        self._result_hash = msg.payload
        return self._maybe_finish_holder()

    def _maybe_finish_holder(self) -> list[Message]:
        if self._result_hash is not None and not self._done:
            self._done = True
            self.report(1.0, "done; the querier holds the result")
        return []
