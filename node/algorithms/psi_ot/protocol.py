"""Private set intersection by OT extension (KKRT16 batched OPRF), two parties, semi-honest.

Roles: the recipient R (the task's result recipient) cuckoo-hashes its set into m bins and is
the OPRF receiver; the other participant S is the OPRF sender. The primitives, their
construction and security argument are in `kkrt.py`: 512 Bellare-Micali base OTs on
edwards25519 (libsodium through PyNaCl) with S as the base-OT receiver holding the secret
choice string s, AES-128-CTR as the PRG, a 512-bit AES-based pseudo-random code, fixed-key AES
hashing (chained Matyas-Meyer-Oseas) as the OPRF's final hash H.

ID normalisation, duplicates and empty cells follow psi exactly (`normalise_id`, the
`casefold` param): null or empty cells are skipped and counted, duplicates after normalisation
are removed (set semantics).

Messages (payload bytes; every size checked, anything else a ProtocolError):
  round 1 "ot-points"   S -> R  u64 n_S | 512 base-OT points P_j (32 bytes each)
  round 2 "ot-reply"    R -> S  u32 m | u8 cuckoo attempt | u32 row messages | the point R
  round 2 "rows"        R -> S  u32 index | u32 count | u^j for the bins of this message:
                                512 columns of ROW_BINS bits (fewer in the last message)
  round 3 "values"      S -> R  u32 index | u32 count | OPRF values, `prf_bytes(m, n_S)` each;
                                3 n_S values in all, the n_S values of hash function 0 (in a
                                secret random order), then those of 1, then of 2
  round 4 "result-hash" R -> S  h_r (32 bytes)
Each message stays below 4 MB (the mailbox takes 8 MiB bodies). R's bin count m = 1.27 n_R + 32
rounded up to a multiple of 128; the cuckoo hash keys are public (task binding and an attempt
counter, the first attempt that places every item; its number travels in "ot-reply"). R
compares its own value of each item with the values of the hash function that placed it.

What each party learns (semi-honest): R learns the intersection (its own IDs in it) and n_S;
S learns m, i.e. n_R up to the rounding of the bin count (and the cuckoo attempt number, almost
always 0). In "cardinality" mode the result holds only the size, but R's node still computes
which of its own values matched (KKRT gives R the OPRF outputs themselves); unlike psi's
cardinality mode it is a result format, not a stronger privacy guarantee against R.

Commitment: h_r = sha256("pcn/psi-ot/result/v1" | salt | result) broadcast by R; every
party's result_commitment() = sha256("pcn/psi-ot/commit/v1" | u64 n_S | u64 m | h_r), the two
numbers both parties know. R's commitment_opening() is u64 n_S | u64 m | salt.

Result (canonical JSON, at R only), psi's shape: {"algorithm": "psi-ot", "output",
"ids" (ids mode), "size", "party_sizes", "casefold", "parties": 2, "skipped_empty",
"duplicates_removed"}.

Determinism: every secret (choice string, base-OT scalars, cuckoo eviction walk, shuffles, salt)
comes from the party's seed; the heavy work runs through `self.pmap` in pieces of ROW_BINS bins
(PRG expansion, code, transposes, OPRF hashing) or PIECE IDs (digests) and comes back in
order, so a resumed party re-emits byte-identical messages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pcn.algorithms.base import (
    INBOX_ENTRY_ALLOWANCE,
    CommitmentScheme,
    Message,
    Protocol,
    ProtocolError,
    canonical_json,
)
from pcn.algorithms.psi.protocol import IdSet, validate_id_params
from pcn.algorithms.psi_ot import kkrt

RESULT_DOMAIN = b"pcn/psi-ot/result/v1"
COMMIT_DOMAIN = b"pcn/psi-ot/commit/v1"

KIND_POINTS, KIND_REPLY, KIND_ROWS, KIND_VALUES, KIND_RESULT = "ot-points", "ot-reply", "rows", "values", "result-hash"
ROUNDS = {KIND_POINTS: 1, KIND_REPLY: 2, KIND_ROWS: 2, KIND_VALUES: 3, KIND_RESULT: 4}

SIZE = struct.Struct(">Q")
REPLY = struct.Struct(">IBI")  # bins, cuckoo attempt, row messages
PART = struct.Struct(">II")  # message index, message count
HASH = 32
MAX_SET = 1 << 31
MAX_BINS = kkrt.bin_count(MAX_SET)
ROW_BINS = 32_768  # bins per "rows" message and per piece of work: 2 MiB of u
ROW_BATCH = 8  # pieces per parallel map: what a party holds of the extension at a time
VALUES_PER_MESSAGE = 1 << 18  # at most 14 bytes each: < 4 MB
PIECE = 16_384  # IDs per digest job
DIGEST_BATCH = 16  # digest jobs per parallel map: IDs held as bytes objects at a time
ATTEMPTS = 4

PARAM_KEYS = frozenset({"id_column", "output", "casefold"})

# The opening is u64 n_S | u64 m | salt.
COMMITMENT = CommitmentScheme(
    RESULT_DOMAIN,
    COMMIT_DOMAIN,
    head_unit=2 * SIZE.size,
    min_head=2 * SIZE.size,
    max_head=2 * SIZE.size,
    error="a psi-ot opening is u64 sender set size | u64 bin count | 32-byte salt",
)


def parts(total: int, per: int) -> int:
    """Messages for `total` items, `per` a message; an empty stream is one empty message."""
    return max(1, -(-total // per))


@dataclass
class _Stream:
    """Numbered messages of one kind from the peer."""

    count: int
    received: int = 0
    chunks: list[bytes] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.received == self.count

    def next_index(self, kind: str, payload: bytes) -> int:
        """The index of the next message of this stream, checked: a message after the last one,
        one too short for its header, or one out of order is a ProtocolError."""
        if self.complete:
            raise ProtocolError(f"{kind!r} message after the last one")
        if len(payload) < PART.size:
            raise ProtocolError(f"{kind!r} message shorter than its header")
        index, count = PART.unpack_from(payload)
        if count != self.count or index != self.received:
            raise ProtocolError(f"{kind!r} message {index} of {count}; expected {self.received} of {self.count}")
        return int(index)


@dataclass
class _Pairs:
    """S's (item, hash function) pairs, pair p = 3 item + hash, grouped by the row piece their
    bin lies in: `bins[p]` the bin of pair p (uint32), `order[bounds[i] : bounds[i + 1]]` the
    pairs of piece i."""

    bins: np.ndarray
    order: np.ndarray
    bounds: np.ndarray

    @classmethod
    def group(cls, cands: np.ndarray, pieces: int) -> _Pairs:
        bins = cands.reshape(-1)
        piece = bins // np.uint32(ROW_BINS)
        if pieces <= 1 << 16:  # numpy's stable sort is a radix sort on 16-bit keys
            piece = piece.astype(np.uint16)
        order = np.argsort(piece, kind="stable")
        bounds = np.searchsorted(piece[order], np.arange(pieces + 1))
        return cls(bins, order.astype(np.int32) if len(order) < 1 << 31 else order, bounds)

    def of_piece(self, i: int) -> np.ndarray:
        return self.order[self.bounds[i] : self.bounds[i + 1]]


def _keys(values: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each value (k, size) uint8, zero-padded, as a uint64 sort key."""
    head = np.zeros((len(values), 8), dtype=np.uint8)
    width = min(8, values.shape[1])
    head[:, :width] = values[:, :width]
    return head.view(">u8").reshape(-1)


@dataclass
class _Matcher:
    """R's own OPRF values split by the hash function that placed each item, every group sorted
    by its first 8 bytes (`keys`), with the rest of each value and its item: S's values of hash
    function i are looked up in group i as their messages arrive, and never kept. A key found is
    a match only when the whole value is equal."""

    keys: list[np.ndarray]
    rests: list[np.ndarray]
    items: list[np.ndarray]
    repeated: list[bool]  # whether a group has two equal keys

    @classmethod
    def build(cls, own: np.ndarray, which: np.ndarray) -> _Matcher:
        keys, rests, items = [], [], []
        for i in range(kkrt.HASHES):
            mine = np.flatnonzero(which == i)
            group_keys = _keys(own[mine])
            order = np.argsort(group_keys, kind="stable")
            keys.append(group_keys[order])
            rests.append(own[mine[order], 8:])
            items.append(mine[order])
        repeated = [bool(np.any(k[1:] == k[:-1])) for k in keys]
        return cls(keys, rests, items, repeated)

    def mark(self, hash_index: int, theirs: np.ndarray, hits: np.ndarray) -> None:
        """hits[x] = True for every own item x of this hash function whose value is among
        `theirs` ((k, size) uint8)."""
        keys, rests, items = self.keys[hash_index], self.rests[hash_index], self.items[hash_index]
        wanted = _keys(theirs)
        order = np.argsort(wanted)  # sorted needles: each search starts where the last one ended
        wanted, theirs = wanted[order], theirs[order]
        lo = np.searchsorted(keys, wanted, side="left")
        if self.repeated[hash_index]:
            hi = np.searchsorted(keys, wanted, side="right")
        else:  # distinct keys (all but about 2^-24 of groups at 10 M): found iff keys[lo] == wanted
            hi = lo + (keys[np.minimum(lo, len(keys) - 1)] == wanted) if len(keys) else lo
        one = np.flatnonzero(hi - lo == 1)
        at = lo[one]
        equal = np.all(rests[at] == theirs[one, 8:], axis=1)
        hits[items[at[equal]]] = True
        for j in np.flatnonzero(hi - lo > 1).tolist():  # equal keys of own values: about 2^-24 at 10 M
            for t in range(int(lo[j]), int(hi[j])):
                if np.array_equal(rests[t], theirs[j, 8:]):
                    hits[items[t]] = True


@dataclass(eq=False)
class PsiOtProtocol(Protocol):
    name: ClassVar[str] = "psi-ot"
    commitment: ClassVar[CommitmentScheme] = COMMITMENT
    participant_range: ClassVar[tuple[int, int]] = (2, 2)

    _params: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _peer: str = field(default="", init=False, repr=False)
    _ids: IdSet = field(default_factory=lambda: IdSet([], 0, 0), init=False, repr=False)
    _digests: np.ndarray = field(default_factory=lambda: np.zeros((0, kkrt.DIGEST), np.uint8), init=False, repr=False)
    _n_sender: int | None = field(default=None, init=False, repr=False)
    _bins: int = field(default=0, init=False, repr=False)
    _attempt: int = field(default=0, init=False, repr=False)
    # R: the cuckoo table, which hash placed each item, and each item's own OPRF value
    _which: np.ndarray | None = field(default=None, init=False, repr=False)
    _table: np.ndarray | None = field(default=None, init=False, repr=False)
    # R: its own OPRF values by the hash function that placed the item, sorted, with the items
    _matcher: _Matcher | None = field(default=None, init=False, repr=False)
    _hits: np.ndarray | None = field(default=None, init=False, repr=False)
    # S: choice string, base-OT scalars and points, then the seeds it received
    _choices: bytes = field(default=b"", init=False, repr=False)
    _scalars: list[bytes] = field(default_factory=list, init=False, repr=False)
    _points: bytes = field(default=b"", init=False, repr=False)
    _seeds: list[bytes] = field(default_factory=list, init=False, repr=False)
    # S: its (item, hash) pairs grouped by row piece, and their OPRF values as they are computed
    _pairs: _Pairs | None = field(default=None, init=False, repr=False)
    _evaluated: np.ndarray | None = field(default=None, init=False, repr=False)
    _rows: _Stream | None = field(default=None, init=False, repr=False)
    _values: _Stream | None = field(default=None, init=False, repr=False)
    _sent_values: bool = field(default=False, init=False, repr=False)
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        ctx = self.ctx
        self.check_participant_count(len(ctx.participants))
        if len(set(ctx.participants)) != len(ctx.participants):
            raise ProtocolError("psi-ot needs 2 distinct participants")
        self._check_context()
        self._params = self.validate_params(ctx.params)
        if not (self._params["id_column"] or ctx.id_column):
            raise ProtocolError("no ID column: set params id_column or register the dataset with one")
        self._peer = ctx.peers[0]

    # -- parameters -------------------------------------------------------------------------

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        """The params normalised (defaults filled in); ProtocolError on anything wrong."""
        return validate_id_params("psi-ot", params, PARAM_KEYS)

    # -- keys and sizes -----------------------------------------------------------------------

    def _key(self, label: str, size: int = 32) -> bytes:
        return kkrt.derive(self.ctx.binding, label.encode(), size)

    def _hash_key(self, attempt: int) -> bytes:
        return self._key(f"cuckoo/{attempt}", 16)

    @property
    def _value_size(self) -> int:
        return kkrt.prf_bytes(self._bins, self._n_sender or 0)

    def inbound_bytes(self) -> dict[str, int]:
        """What the peer will have put in this inbox by the end, once the sizes are known: at S
        (after 'ot-reply', which names m) R's reply, its 64 bytes per bin of rows and the result
        hash; at R (after 'ot-points', which names n_S) S's points and its 3 n_S values."""
        per = INBOX_ENTRY_ALLOWANCE
        if self.ctx.is_recipient:
            if self._n_sender is None:
                return {}
            count = parts(kkrt.HASHES * self._n_sender, VALUES_PER_MESSAGE)
            points = SIZE.size + kkrt.WIDTH * kkrt.POINT + per
            values = kkrt.HASHES * self._n_sender * self._value_size + count * (PART.size + per)
            return {self._peer: points + values}
        if self._rows is None:
            return {}
        count = parts(self._bins, ROW_BINS)
        reply = REPLY.size + kkrt.POINT + per
        rows = self._bins * kkrt.WIDTH_BYTES + count * (PART.size + per)
        return {self._peer: reply + rows + HASH + per}

    def _row_pieces(self) -> list[tuple[int, int]]:
        return [(b, min(ROW_BINS, self._bins - b)) for b in range(0, self._bins, ROW_BINS)]

    # -- protocol -----------------------------------------------------------------------------

    def _load_set(self) -> None:
        p = self._params
        column = p["id_column"] or self.ctx.id_column
        self.report(0.0, f"normalising IDs of column {column!r}")
        ids = self._ids = IdSet.of(self.data, column, p["casefold"])
        n = len(ids)
        self.report(0.02, f"hashing {n} IDs")
        keys = (self._key("digest-prp", 16), self._key("digest"))
        digests = np.empty((n, kkrt.DIGEST), dtype=np.uint8)
        firsts = list(range(0, n, PIECE))
        for b in range(0, len(firsts), DIGEST_BATCH):  # bounded: a batch of IDs as bytes at a time
            batch = firsts[b : b + DIGEST_BATCH]
            jobs = [(*keys, *ids.utf8(i, min(i + PIECE, n))) for i in batch]
            for i, packed in zip(batch, self.pmap(kkrt.id_digests, jobs), strict=True):
                digests[i : i + len(packed) // kkrt.DIGEST] = np.frombuffer(packed, dtype=np.uint8).reshape(
                    -1, kkrt.DIGEST
                )
        self._digests = digests

    def start(self) -> Iterable[Message]:
        self._mark_started()
        self._load_set()
        if self.ctx.is_recipient:
            self._place()
            self.report(0.1, "waiting for the base OTs")
            return []
        self._choices = self.secret_bytes("psi-ot/choices", kkrt.WIDTH_BYTES)
        material = self.secret_bytes("psi-ot/base-ot", 64 * kkrt.WIDTH)
        self._scalars = [kkrt.scalar(material[64 * j : 64 * (j + 1)]) for j in range(kkrt.WIDTH)]
        choice_bits = np.unpackbits(np.frombuffer(self._choices, dtype=np.uint8))
        self._points = kkrt.ot_receiver_points(kkrt.ot_base(self.ctx.binding), choice_bits, self._scalars)
        self.report(0.1, "base OTs sent")
        return [self.send(self._peer, 1, KIND_POINTS, SIZE.pack(len(self._ids)) + self._points)]

    def _place(self) -> None:
        """Cuckoo-hash R's set: the first attempt (public hash keys) that places every item."""
        n = len(self._ids)
        self._bins = kkrt.bin_count(n)
        self.report(0.05, f"cuckoo hashing {n} IDs into {self._bins} bins")
        for attempt in range(ATTEMPTS):
            cands = kkrt.candidate_bins(self._hash_key(attempt), self._digests, self._bins)
            placed = kkrt.cuckoo(cands, self._bins)
            if placed is not None:
                self._attempt = attempt
                self._table, self._which = placed
                return
        raise ProtocolError(f"cuckoo hashing failed {ATTEMPTS} times for {n} IDs (probability negligible)")

    def receive(self, msg: Message) -> Iterable[Message]:
        self._check_delivery(msg)
        want = ROUNDS.get(msg.kind)
        if want is None:
            raise ProtocolError(f"unexpected message kind {msg.kind!r} from {msg.sender!r}")
        if msg.round != want:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} in round {msg.round}, expected {want}")
        recipient = self.ctx.is_recipient
        if msg.kind in (KIND_POINTS, KIND_VALUES) and not recipient:
            raise ProtocolError(f"{msg.kind!r} message sent to the OPRF sender")
        if msg.kind in (KIND_REPLY, KIND_ROWS, KIND_RESULT) and recipient:
            raise ProtocolError(f"{msg.kind!r} message sent to the recipient")
        if msg.kind == KIND_POINTS:
            return self._on_points(msg.payload)
        if msg.kind == KIND_REPLY:
            return self._on_reply(msg.payload)
        if msg.kind == KIND_ROWS:
            return self._on_rows(msg.payload)
        if msg.kind == KIND_VALUES:
            return self._on_values(msg.payload)
        return self._on_result_hash(msg.payload)

    # -- R --------------------------------------------------------------------------------------

    def _on_points(self, payload: bytes) -> Iterable[Message]:
        if self._n_sender is not None:
            raise ProtocolError("duplicate 'ot-points' message")
        if len(payload) != SIZE.size + kkrt.WIDTH * kkrt.POINT:
            raise ProtocolError(f"'ot-points' message has {len(payload)} bytes, expected {SIZE.size + kkrt.WIDTH * 32}")
        (n_s,) = SIZE.unpack_from(payload)
        if n_s > MAX_SET:
            raise ProtocolError(f"'ot-points' announces {n_s} IDs; at most {MAX_SET}")
        points = payload[SIZE.size :]
        r = kkrt.scalar(self.secret_bytes("psi-ot/base-ot", 64))
        try:
            reply, seeds0, seeds1 = kkrt.ot_sender(self.ctx.binding, kkrt.ot_base(self.ctx.binding), points, r)
        except kkrt.OtError as exc:
            raise ProtocolError(f"'ot-points': {exc}") from None
        self._n_sender = n_s
        self._values = _Stream(parts(kkrt.HASHES * n_s, VALUES_PER_MESSAGE))
        self.report(0.2, "base OTs done; extending")
        header = REPLY.pack(self._bins, self._attempt, len(self._row_pieces()))
        return self._extension(header + reply, seeds0, seeds1)

    def _extension(self, reply: bytes, seeds0: list[bytes], seeds1: list[bytes]) -> Iterator[Message]:
        """The 'ot-reply' message, then the u columns, ROW_BATCH pieces at a time (each batch is
        sent before the next is computed: R never holds more of the extension than that), while
        R keeps its own OPRF value of each item for the matching."""
        yield self.send(self._peer, 2, KIND_REPLY, reply)
        table, which = self._table, self._which
        assert table is not None and which is not None
        size, code_key, prf_key = self._value_size, self._key("code", 16), self._key("prf", 16)
        own = np.empty((len(self._ids), size), dtype=np.uint8)
        pieces = self._row_pieces()
        count = len(pieces)
        for start in range(0, count, ROW_BATCH):
            jobs = []
            for first, bins in pieces[start : start + ROW_BATCH]:
                local = np.flatnonzero(table[first : first + bins] >= 0)
                xs = table[first + local]
                jobs.append((seeds0, seeds1, first, bins, code_key, prf_key, size, local, self._digests[xs], which[xs]))
            out = self.pmap(kkrt.receiver_piece, jobs)
            for job, (_, vals) in zip(jobs, out, strict=True):
                own[table[job[2] + job[7]]] = np.frombuffer(vals, dtype=np.uint8).reshape(-1, size)
            del jobs
            for i, (u, _) in enumerate(out, start):
                yield self.send(self._peer, 2, KIND_ROWS, PART.pack(i, count) + u)
            del out
            done = min(start + ROW_BATCH, count)
            self.report(0.2 + 0.4 * done / count, f"extension sent for {done}/{count} row pieces")
        self._matcher = _Matcher.build(own, which)
        self._hits = np.zeros(len(self._ids), dtype=bool)
        self._table = self._which = None
        self._digests = np.zeros((0, kkrt.DIGEST), dtype=np.uint8)  # frees the digests (a slice would keep them)
        self.report(0.6, "extension sent; waiting for the OPRF values")

    def _on_values(self, payload: bytes) -> list[Message]:
        stream, n_s = self._values, self._n_sender
        if stream is None or n_s is None:
            raise ProtocolError("'values' message before the base OTs")
        index = stream.next_index(KIND_VALUES, payload)
        matcher, hits = self._matcher, self._hits
        if matcher is None or hits is None:
            raise ProtocolError("'values' message before this party sent all its rows")
        total, size = kkrt.HASHES * n_s, self._value_size
        want = size * min(VALUES_PER_MESSAGE, total - index * VALUES_PER_MESSAGE)
        if len(payload) - PART.size != want:
            raise ProtocolError(f"'values' message {index} has {len(payload) - PART.size} bytes, expected {want}")
        theirs = np.frombuffer(payload, dtype=np.uint8, offset=PART.size).reshape(-1, size)
        at = index * VALUES_PER_MESSAGE
        while len(theirs):  # S sends the values of hash function 0, then 1, then 2
            group = at // n_s
            take = min(len(theirs), (group + 1) * n_s - at)
            matcher.mark(group, theirs[:take], hits)
            theirs, at = theirs[take:], at + take
        stream.received += 1
        if not stream.complete:
            return []
        return self._finish(hits)

    def _finish(self, hits: np.ndarray) -> list[Message]:
        self.report(0.95, "intersecting")
        assert self._n_sender is not None
        self._matcher = self._hits = None
        ctx, output, ids = self.ctx, self._params["output"], self._ids
        result: dict[str, Any] = {
            "algorithm": self.name,
            "output": output,
            "size": int(hits.sum()),
            "party_sizes": {ctx.me: len(ids), self._peer: self._n_sender},
            "casefold": self._params["casefold"],
            "parties": 2,
            "skipped_empty": ids.skipped,
            "duplicates_removed": ids.duplicates,
        }
        if output == "ids":
            result["ids"] = sorted(ids.pick(np.flatnonzero(hits)))
        self._result = canonical_json(result, ensure_ascii=False)
        self._result_hash = COMMITMENT.result_hash(self._salt(), self._result)
        self._done = True
        self.report(1.0, "done; the recipient holds the result")
        return [self.send(self._peer, 4, KIND_RESULT, self._result_hash)]

    # -- S --------------------------------------------------------------------------------------

    def _on_reply(self, payload: bytes) -> list[Message]:
        if self._rows is not None:
            raise ProtocolError("duplicate 'ot-reply' message")
        if len(payload) != REPLY.size + kkrt.POINT:
            raise ProtocolError(f"'ot-reply' message has {len(payload)} bytes")
        bins, attempt, count = REPLY.unpack_from(payload)
        if not 0 < bins <= MAX_BINS or bins % kkrt.BIN_ALIGN:
            raise ProtocolError(f"'ot-reply' announces {bins} bins (a positive multiple of 128 is needed)")
        if attempt >= ATTEMPTS:
            raise ProtocolError(f"'ot-reply' names cuckoo attempt {attempt}; at most {ATTEMPTS - 1}")
        if count != parts(bins, ROW_BINS):
            raise ProtocolError(f"'ot-reply' announces {count} row messages for {bins} bins")
        try:
            seeds = kkrt.ot_receiver_seeds(self.ctx.binding, self._points, payload[REPLY.size :], self._scalars)
        except kkrt.OtError as exc:
            raise ProtocolError(f"'ot-reply': {exc}") from None
        self._seeds, self._bins, self._attempt = seeds, bins, attempt
        n = self._n_sender = len(self._ids)
        cands = kkrt.candidate_bins(self._hash_key(attempt), self._digests, bins)
        self._pairs = _Pairs.group(cands, count)
        self._evaluated = np.empty((kkrt.HASHES * n, self._value_size), dtype=np.uint8)
        self._rows = _Stream(count)
        self.report(0.2, "base OTs done")
        return []

    def _on_rows(self, payload: bytes) -> Iterable[Message]:
        stream = self._rows
        if stream is None:
            raise ProtocolError("'rows' message before 'ot-reply'")
        index = stream.next_index(KIND_ROWS, payload)
        want = kkrt.WIDTH * min(ROW_BINS, self._bins - index * ROW_BINS) // 8
        if len(payload) - PART.size != want:
            raise ProtocolError(f"'rows' message {index} has {len(payload) - PART.size} bytes, expected {want}")
        stream.chunks.append(payload[PART.size :])
        stream.received += 1
        if len(stream.chunks) == ROW_BATCH or stream.complete:
            self._evaluate(stream.received - len(stream.chunks), stream.chunks)
            stream.chunks = []
        self.report(
            0.2 + 0.6 * stream.received / stream.count, f"OPRF evaluated for rows {stream.received}/{stream.count}"
        )
        if not stream.complete:
            return []
        self._digests = np.zeros((0, kkrt.DIGEST), dtype=np.uint8)  # frees the digests (a slice would keep them)
        self._pairs = None
        return self._send_values()

    def _evaluate(self, first_piece: int, columns: list[bytes]) -> None:
        """S's OPRF values of every pair whose bin lies in the row pieces first_piece, ... (their
        u columns given), written to `_evaluated` at the pairs' positions."""
        pairs, evaluated = self._pairs, self._evaluated
        assert pairs is not None and evaluated is not None
        size, code_key, prf_key = self._value_size, self._key("code", 16), self._key("prf", 16)
        pieces = self._row_pieces()
        jobs, selections = [], []
        for i, u in enumerate(columns, first_piece):
            first, bins = pieces[i]
            sel = pairs.of_piece(i)
            local = pairs.bins[sel].astype(np.int64) - first
            items = self._digests[sel // kkrt.HASHES]
            jobs.append(
                (self._seeds, self._choices, first, bins, u, code_key, prf_key, size, local, items, sel % kkrt.HASHES)
            )
            selections.append(sel)
        for sel, vals in zip(selections, self.pmap(kkrt.sender_piece, jobs), strict=True):
            evaluated[sel] = np.frombuffer(vals, dtype=np.uint8).reshape(-1, size)

    def _send_values(self) -> Iterator[Message]:
        """The 3 n_S values, those of hash function 0 in a secret random order, then 1, then 2,
        cut into messages of VALUES_PER_MESSAGE values; each message is sent before the next is
        gathered."""
        evaluated = self._evaluated
        assert evaluated is not None
        n, size = len(self._ids), self._value_size
        groups = evaluated.reshape(n, kkrt.HASHES, size)
        count = parts(kkrt.HASHES * n, VALUES_PER_MESSAGE)
        step, index, have = VALUES_PER_MESSAGE, 0, 0
        held: list[bytes] = []
        for i in range(kkrt.HASHES):
            perm = self.secret_permutation(f"psi-ot/values/{i}", n)
            for a in range(0, n, step):
                block = groups[perm[a : a + step], i]
                while len(block):
                    take = min(step - have, len(block))
                    held.append(block[:take].tobytes())
                    have, block = have + take, block[take:]
                    if have == step:
                        yield self.send(self._peer, 3, KIND_VALUES, PART.pack(index, count) + b"".join(held))
                        index, have, held = index + 1, 0, []
        if have or index == 0:  # the last, shorter message (or the one empty message of n = 0)
            yield self.send(self._peer, 3, KIND_VALUES, PART.pack(index, count) + b"".join(held))
            index += 1
        assert index == count
        self._evaluated = None
        self._sent_values = True
        self.report(0.9, "OPRF values sent")

    def _on_result_hash(self, payload: bytes) -> list[Message]:
        if self._result_hash is not None:
            raise ProtocolError("duplicate result hash")
        if not self._sent_values:
            raise ProtocolError("result hash arrived before this party's part was complete")
        if len(payload) != HASH:
            raise ProtocolError(f"result hash has {len(payload)} bytes, expected 32")
        self._result_hash = payload
        self._done = True
        self.report(1.0, "done; the recipient holds the result")
        return []

    # -- outcome ------------------------------------------------------------------------------

    def _salt(self) -> bytes:
        return self.secret_bytes("psi-ot-result-salt", 32)

    @property
    def done(self) -> bool:
        return self._done

    def _head(self) -> bytes:
        return SIZE.pack(self._n_sender or 0) + SIZE.pack(self._bins)

    def result_commitment(self) -> bytes:
        if not self._done or self._result_hash is None:
            raise ProtocolError("the psi-ot protocol has not finished")
        return COMMITMENT.commit(self._head(), self._result_hash)

    def commitment_opening(self) -> bytes:
        """u64 n_S | u64 bin count, followed at the recipient by its 32-byte result salt; with
        the result bytes, `commitment_for` recomputes `result_commitment()`."""
        if not self._done:
            raise ProtocolError("the psi-ot protocol has not finished")
        return self._head() + self._salt() if self.ctx.is_recipient else self._head()
