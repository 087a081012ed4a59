"""Private set intersection (ECDH-PSI over X25519) for n >= 2 parties, output to one recipient.

Group and hashing. Elements are X25519 u-coordinates (32 bytes, little-endian, RFC 7748).
An ID x is hashed with RFC 9380 `curve25519_XMD:SHA-512_ELL2_RO_` (`pcn.crypto.curve25519`)
under the DST "pcn/psi/v2-with-curve25519_XMD:SHA-512_ELL2_RO_/" | binding, binding the
task's 32-byte `ctx.binding`: H(x) is a point of the prime-order subgroup of Curve25519,
never of its twist. (v1 took SHA-256 as a u-coordinate, which lands on the twist for half of
the IDs; X25519 keeps a point on the curve it starts on and one Legendre symbol tells which,
so every blinded element leaked one bit of H(x) per task: issue #13.1.) Party i blinds with
its per-task secret k_i (32 bytes from its seed): B_i(u) = X25519(k_i, u). Clamped scalars
are multiples of the cofactor 8 and X25519 is a scalar multiplication on the Montgomery
x-line, so blinding commutes: B_i(B_j(u)) = B_j(B_i(u)), and every element on the wire is a
uniformly random-looking element of the prime-order subgroup. An own ID hashing to the
identity (probability ~2^-250) gives the all-zero u, which X25519 refuses; it is dropped.
Every received element must be a canonical u-coordinate (< 2^255 - 19) of a point of
Curve25519 (u^3 + A u^2 + u a square: no twist point) that is not of small order; anything
else is a ProtocolError naming the element, so no party ever applies its key to a point a
peer chose off the curve. (A large point with a small-order component, which no honest party
sends, is not looked for: that would cost a scalar multiplication, and the first clamped
scalar maps it into the prime-order subgroup.) Security assumption: the decisional Diffie-Hellman problem is hard
in the prime-order subgroup of Curve25519, with SHA-512 modelled as a random oracle (RFC 9380
makes H indifferentiable from a random oracle onto the group). The curve arithmetic of the
blinding is OpenSSL's (via `cryptography`); the hash's field arithmetic is gmpy2.

ID normalisation (every party applies the same rules): null cells are skipped; a text cell
is stripped of surrounding whitespace (`str.strip`, Unicode whitespace), put in Unicode NFC,
and with params `"casefold": true` case-folded (`str.casefold`, then NFC again); cells that
are empty after that are skipped and counted. Nothing else is changed: "007" and "7" differ,
as do "a" and "A" without casefold. Duplicates (after normalisation) are removed before
blinding: PSI has set semantics.

Notation: P_1..P_n the participants in on-chain order, R the recipient, N = the
non-recipients in participant order, A = N[0] the aggregator (n >= 3 only). Every party
shuffles its own deduplicated IDs with a secret permutation before hashing. A set travels
along a path of parties, each applying its key; a message carries one bucket of one set.

Two parties (R and S):
  round 1 "set":    S -> R  B_S(X_S), shuffled;            R -> S  B_R(X_R)
  round 2 "return": S -> R  B_S(B_R(X_R)), in the order received (shuffled again in
                    cardinality mode)
  R computes B_R(B_S(X_S)) itself and intersects: an own ID is in the result iff its
  double-blinded value is in the double-blinded set of S.
  round 4 "result-hash": R -> S  h_r (below); round 3 (the aggregator's intersection) is
  not needed with two parties

n >= 3 parties. R uses two keys a, b (its "psi-key" and "psi-key-final"), so that no
non-recipient ever holds R's set under all the keys (it would then compare it with the fully
blinded sets it forwards). Paths:
  X_j, j in N: j -> R (applies a and b) -> the other non-recipients in cyclic participant
               order after j; every hop shuffles. The last hop sends the fully blinded,
               shuffled set to A (kind "final", round n), or keeps it if it is A.
  X_R:         R (applies a) -> N[0] -> ... -> N[-1] -> R (kind "return", round n), and R
               applies b. Hops keep the order (shuffle in cardinality mode).
  Rounds: a "set" message whose receiver is the i-th hop of the path (i >= 1) has round i;
  "final" and "return" have round n; A sends the shuffled intersection of the fully blinded
  non-recipient sets to R (kind "intersection", round n + 1); R intersects it with its own
  fully blinded set in its order and broadcasts h_r (kind "result-hash", round n + 2).
  Every party meets every other party's set with a different subset of keys applied (the
  cyclic order guarantees it among non-recipients; R's set never carries b on the way), so
  no party can compare two sets except where stated below.

Messages: "set", "final", "return", "intersection" payloads are a header (owner index u16,
bucket index u32, bucket count u32, set size u64; big-endian) followed by the bucket's
elements, 32 bytes each; bucket i of a set of size m holds min(bucket_size, m - i *
bucket_size) elements and an empty set is one empty bucket. Each stream is checked at the
receiver: expected (kind, round, sender, owner), buckets in order, consistent size and count,
exact length, valid elements (above), sizes consistent with what the
party has seen before; anything else is a ProtocolError.

What each party learns (semi-honest parties, no collusion):
  - every party learns the size of every party's deduplicated set;
  - R learns the intersection of all sets (or only its size in cardinality mode) and, for
    n >= 3, the size of the intersection of the non-recipients' sets;
  - A (n >= 3) holds every non-recipient's set under all keys, shuffled, so it learns the
    sizes of the intersections of any subfamily of the non-recipients' sets (e.g. each
    pairwise intersection size among non-recipients), never which IDs, and nothing about R's
    set beyond its size;
  - other parties learn nothing beyond the sizes.
In ids mode R's set keeps its (secretly permuted) order through the hops so R can map back;
in cardinality mode every hop shuffles it, so R only counts matches. Colluding parties pool
their keys and views and learn more (e.g. A with R learns which of R's IDs are in each
non-recipient's set); that is outside the model.

Commitment: R computes the canonical JSON result and h_r = sha256("pcn/psi/result/v1" |
salt | result) with its secret 32-byte salt, and broadcasts h_r. Every party's
result_commitment() = sha256("pcn/psi/commit/v1" | u64 size of each party's set in
participant order | h_r); every party has seen every set size (they are in the bucket
headers of sets it blinded). R's commitment_opening() is the sizes followed by the salt, so
`PsiProtocol.commitment_for(result, opening)` recomputes the commitment.

Result (canonical JSON, at R only): {"algorithm": "psi", "output": "ids" | "cardinality",
"ids": [the intersection, sorted, as normalised strings] (ids mode only), "size": k,
"party_sizes": {address: deduplicated set size}, "casefold": bool, "parties": n,
"skipped_empty": R's null/empty cells, "duplicates_removed": R's duplicate cells}.

Performance: blinding is most of the cost (one X25519 per element per party, two at R for
n >= 3); hashing an own ID costs about one more X25519 (two square roots in the field). Own
sets (hashed and blinded) and every received bucket are cut into pieces of PIECE elements and
blinded with `self.pmap` (the node's worker processes), in order, so the result stays
deterministic. Sets are held as packed 32-byte elements (not Python objects); hops that keep
the order forward each bucket as soon as it is blinded, hops that shuffle keep one packed
copy of the set.
"""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, ClassVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from pcn.algorithms.base import CommitmentScheme, Message, Protocol, ProtocolError, canonical_json
from pcn.crypto.curve25519 import first_invalid_u, hash_dst, hash_many

try:  # the binding X25519PublicKey.from_public_bytes wraps, without its per-call backend check (~5%)
    from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

    _public_key: Any = _rust_openssl.x25519.from_public_bytes
except (ImportError, AttributeError):  # pragma: no cover - other cryptography layouts
    _public_key = X25519PublicKey.from_public_bytes

ELEMENT = 32
HASH_DOMAIN = b"pcn/psi/v2"  # v1 hashed onto the curve or its twist (issue #13.1)
RESULT_DOMAIN = b"pcn/psi/result/v1"
COMMIT_DOMAIN = b"pcn/psi/commit/v1"

KIND_SET, KIND_FINAL, KIND_RETURN, KIND_INTERSECTION, KIND_RESULT = (
    "set",
    "final",
    "return",
    "intersection",
    "result-hash",
)
STREAM_KINDS = (KIND_SET, KIND_FINAL, KIND_RETURN, KIND_INTERSECTION)

HEADER = struct.Struct(">HIIQ")  # owner index, bucket index, bucket count, set size
SIZE = struct.Struct(">Q")
MAX_SET = 1 << 40
PIECE = 2048  # elements per unit of parallel work (~0.1 s of X25519 on one core)

OUTPUTS = ("ids", "cardinality")
DEFAULT_BUCKET = 65_536
MIN_BUCKET, MAX_BUCKET = 1024, 1_048_576
PARAM_KEYS = frozenset({"id_column", "output", "casefold", "bucket_size"})

# The recipient's opening is the u64 set size of each party (at least two) | salt.
COMMITMENT = CommitmentScheme(
    RESULT_DOMAIN,
    COMMIT_DOMAIN,
    head_unit=SIZE.size,
    min_head=2 * SIZE.size,
    error="a psi opening is u64 size of each party's set | 32-byte salt",
)


# -- module-level work functions (picklable for a process pool) ---------------------------


def _apply_keys(keys: tuple[bytes, ...], elements: list[bytes]) -> tuple[bytes, list[int]]:
    """Blind each element with every key in turn; (packed outputs, indices of the elements
    whose output was all-zero, i.e. small-order inputs, which are left out)."""
    privs = [X25519PrivateKey.from_private_bytes(k) for k in keys]
    public = _public_key
    out: list[bytes] = []
    bad: list[int] = []
    if len(privs) == 1:
        exchange = privs[0].exchange
        for i, u in enumerate(elements):
            try:
                out.append(exchange(public(u)))
            except ValueError:
                bad.append(i)
        return b"".join(out), bad
    for i, u in enumerate(elements):
        try:
            for priv in privs:
                u = priv.exchange(public(u))
        except ValueError:
            bad.append(i)
            continue
        out.append(u)
    return b"".join(out), bad


def blind_piece(job: tuple[tuple[bytes, ...], bytes]) -> tuple[bytes, list[int]]:
    """(keys, packed 32-byte elements) -> (packed blinded elements, indices dropped)."""
    keys, packed = job
    return _apply_keys(keys, [packed[i : i + ELEMENT] for i in range(0, len(packed), ELEMENT)])


def hash_to_element(dst: bytes, ident: bytes) -> bytes:
    """H(x): RFC 9380 hash to Curve25519 (see `pcn.crypto.curve25519`), an X25519 u-coordinate."""
    return hash_elements(dst, [ident])[0]


def hash_elements(dst: bytes, idents: list[bytes]) -> list[bytes]:
    return hash_many(dst, idents)


def hash_blind_piece(job: tuple[bytes, tuple[bytes, ...], list[bytes]]) -> tuple[bytes, list[int]]:
    """(hash DST, keys, normalised IDs as UTF-8) -> (packed blinded elements, indices dropped)."""
    dst, keys, idents = job
    return _apply_keys(keys, hash_elements(dst, idents))


# -- helpers --------------------------------------------------------------------------------


def normalise_id(cell: Any, casefold: bool) -> str | None:
    """The normalised ID of a cell, or None for a null or empty one (see the module doc)."""
    if cell is None:
        return None
    if not isinstance(cell, str):
        raise ProtocolError(f"ID cell {cell!r} is not text")
    s = unicodedata.normalize("NFC", cell.strip())
    if casefold:
        s = unicodedata.normalize("NFC", s.casefold())
    return s or None


# The characters `str.strip()` removes from an ASCII string: str.isspace among code points < 128.
ASCII_SPACE = "".join(c for c in map(chr, range(128)) if c.isspace())
_EDGE_SPACE = "^[{0}]|[{0}]$".format("".join(f"\\x{ord(c):02x}" for c in ASCII_SPACE))  # an RE2 pattern


@dataclass
class IdSet:
    """A column's normalised IDs with duplicates removed, in order of first occurrence, and what
    normalisation dropped: `skipped` null or empty cells, `duplicates` repeated IDs.

    `ids` is a list of str, or (when the table holds the column as an all-ASCII Arrow array, as
    the node's readers give it) an Arrow string array: normalised and deduplicated in Arrow's C++
    kernels without a Python object per cell, which is what lets a 10-million-row column fit in
    a party's memory. Both forms hold the same IDs in the same order (`normalise_id` rules: for
    ASCII text, strip == trimming ASCII_SPACE, NFC changes nothing and casefold == lower)."""

    ids: Any
    skipped: int
    duplicates: int

    @classmethod
    def of(cls, table: Any, column: str, casefold: bool) -> IdSet:
        arrow = table.arrow_column(column) if hasattr(table, "arrow_column") else None
        if arrow is not None:
            import pyarrow.compute as pc

            if len(arrow) == arrow.null_count or pc.all(pc.string_is_ascii(arrow)).as_py():
                import pyarrow as pa

                # Each step only when it changes something: a copy of a 10 M-row column is 200 MB.
                kept = arrow
                if pc.any(pc.match_substring_regex(kept, _EDGE_SPACE)).as_py():
                    kept = pc.utf8_trim(kept, characters=ASCII_SPACE)
                if casefold:
                    kept = pc.ascii_lower(kept)
                if kept.null_count or pc.any(pc.equal(pc.binary_length(kept), 0)).as_py():
                    kept = pc.drop_null(pc.if_else(pc.equal(pc.binary_length(kept), 0), None, kept))
                unique = pc.unique(kept)  # in order of first occurrence
                skipped, total = len(arrow) - len(kept), len(kept)
                del kept
                pa.default_memory_pool().release_unused()  # the hash table of `unique`, several times the column
                return cls(unique, skipped, total - len(unique))
        seen: dict[str, None] = {}
        skipped = 0
        cells = table.column(column)
        for cell in cells:
            ident = normalise_id(cell, casefold)
            if ident is None:
                skipped += 1
            else:
                seen[ident] = None
        return cls(list(seen), skipped, len(cells) - skipped - len(seen))

    def __len__(self) -> int:
        return len(self.ids)

    def utf8(self, start: int, stop: int) -> tuple[bytes, np.ndarray]:
        """IDs [start, stop) as UTF-8 (lone surrogates kept, as every engine hashes them), packed:
        (bytes, int64 offsets), ID i being bytes[offsets[i] : offsets[i + 1]]."""
        if isinstance(self.ids, list):
            encoded = [x.encode("utf-8", "surrogatepass") for x in self.ids[start:stop]]
            offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
            np.cumsum([len(x) for x in encoded], out=offsets[1:])
            return b"".join(encoded), offsets
        import pyarrow as pa

        part = self.ids.slice(start, stop - start)
        if len(part) == 0:
            return b"", np.zeros(1, dtype=np.int64)
        _, offset_buffer, data = part.buffers()
        width = np.int64 if pa.types.is_large_string(part.type) else np.int32
        offsets = np.frombuffer(offset_buffer, dtype=width)[part.offset : part.offset + len(part) + 1].astype(np.int64)
        first, last = int(offsets[0]), int(offsets[-1])
        return (bytes(memoryview(data)[first:last]) if data is not None else b""), offsets - first

    def pick(self, indices: np.ndarray) -> list[str]:
        """The IDs at `indices`, as str."""
        if isinstance(self.ids, list):
            return [self.ids[i] for i in indices.tolist()]
        return self.ids.take(indices).to_pylist()

    def as_list(self) -> list[str]:
        return self.ids if isinstance(self.ids, list) else self.ids.to_pylist()


def validate_id_params(algorithm: str, params: Any, allowed: frozenset[str]) -> dict[str, Any]:
    """The parameters every PSI engine shares (id_column, output, casefold), normalised, after
    refusing a non-object and any key outside `allowed`; ProtocolError on anything wrong."""
    if not isinstance(params, dict):
        raise ProtocolError(f"{algorithm} params must be an object")
    unknown = set(params) - allowed
    if unknown:
        raise ProtocolError(f"unknown {algorithm} params {sorted(unknown)}; allowed: {sorted(allowed)}")
    id_column = params.get("id_column")
    if id_column is not None and (not isinstance(id_column, str) or not id_column):
        raise ProtocolError("id_column must be a non-empty string")
    output = params.get("output", "ids")
    if output not in OUTPUTS:
        raise ProtocolError(f"output must be one of {list(OUTPUTS)}, not {output!r}")
    casefold = params.get("casefold", False)
    if not isinstance(casefold, bool):
        raise ProtocolError("casefold must be true or false")
    return {"id_column": id_column, "output": output, "casefold": casefold}


def bucket_count(size: int, bucket_size: int) -> int:
    return max(1, -(-size // bucket_size))


def check_elements(packed: bytes, what: str) -> None:
    """Every element must be a canonical u-coordinate of a Curve25519 point of large order
    (what X25519 outputs from a hashed ID): not the twist, not small order."""
    if not packed:
        return
    arr = np.frombuffer(packed, dtype=np.uint8).reshape(-1, ELEMENT)
    top = arr[:, 31]
    if (top & 0x80).any():
        raise ProtocolError(f"{what}: element with the top bit set")
    # p = 2^255 - 19 = ed ff .. ff 7f (little-endian); >= p only if ff .. ff 7f above byte 0
    if ((top == 0x7F) & (arr[:, 1:31] == 0xFF).all(axis=1) & (arr[:, 0] >= 0xED)).any():
        raise ProtocolError(f"{what}: element not reduced modulo 2^255 - 19")
    if (~arr.any(axis=1)).any():
        raise ProtocolError(f"{what}: all-zero element")
    bad = first_invalid_u(packed)
    if bad is not None:
        raise ProtocolError(f"{what}: element {bad[0]} is {bad[1]}")


def _as_points(packed: bytes) -> np.ndarray:
    return np.frombuffer(packed, dtype="V32")


@dataclass
class _Stream:
    """One set arriving in buckets from one sender."""

    size: int
    count: int
    received: int = 0
    parts: list[bytes] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.received == self.count


@dataclass(eq=False)
class PsiProtocol(Protocol):
    name: ClassVar[str] = "psi"
    participant_range: ClassVar[tuple[int, int]] = (2, 0xFFFF)
    commitment: ClassVar[CommitmentScheme] = COMMITMENT

    _params: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _n: int = field(default=0, init=False, repr=False)
    _nonrec: list[str] = field(default_factory=list, init=False, repr=False)
    _aggregator: str | None = field(default=None, init=False, repr=False)
    _paths: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    _expected: set[tuple[str, int, str, str]] = field(default_factory=set, init=False, repr=False)
    _keys_own: tuple[bytes, ...] = field(default=(), init=False, repr=False)
    _keys_peer: tuple[bytes, ...] = field(default=(), init=False, repr=False)
    _keys_return: tuple[bytes, ...] = field(default=(), init=False, repr=False)
    _streams: dict[tuple[str, int, str, str], _Stream] = field(default_factory=dict, init=False, repr=False)
    _sizes: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _ids: list[str] = field(default_factory=list, init=False, repr=False)
    _skipped: int = field(default=0, init=False, repr=False)
    _duplicates: int = field(default=0, init=False, repr=False)
    _sinks: dict[str, list[bytes]] = field(default_factory=dict, init=False, repr=False)
    _complete: set[str] = field(default_factory=set, init=False, repr=False)
    _aggregated: bool = field(default=False, init=False, repr=False)
    _work_done: int = field(default=0, init=False, repr=False)
    _progress: float = field(default=0.0, init=False, repr=False)
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        ctx = self.ctx
        n = len(ctx.participants)
        if n < 2 or len(set(ctx.participants)) != n:
            raise ProtocolError("psi needs at least 2 distinct participants")
        if n > 0xFFFF:
            raise ProtocolError("psi supports at most 65535 participants")
        self._check_context()
        self._params = self.validate_params(ctx.params)
        if not (self._params["id_column"] or ctx.id_column):
            raise ProtocolError("no ID column: set params id_column or register the dataset with one")
        self._n = n
        rec = ctx.recipient
        self._nonrec = [p for p in ctx.participants if p != rec]
        self._build_paths()
        self._build_keys()

    # -- parameters -------------------------------------------------------------------------

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        """The params normalised (defaults filled in); ProtocolError on anything wrong."""
        common = validate_id_params("psi", params, PARAM_KEYS)
        id_column, output, casefold = common["id_column"], common["output"], common["casefold"]
        bucket = params.get("bucket_size", DEFAULT_BUCKET)
        if isinstance(bucket, bool) or not isinstance(bucket, int) or not MIN_BUCKET <= bucket <= MAX_BUCKET:
            raise ProtocolError(f"bucket_size must be an integer in [{MIN_BUCKET}, {MAX_BUCKET}]")
        return {"id_column": id_column, "output": output, "casefold": casefold, "bucket_size": bucket}

    # -- setup --------------------------------------------------------------------------------

    @property
    def _cardinality(self) -> bool:
        return bool(self._params["output"] == "cardinality")

    @property
    def _bucket(self) -> int:
        return int(self._params["bucket_size"])

    def _build_paths(self) -> None:
        ctx, rec, nonrec = self.ctx, self.ctx.recipient, self._nonrec
        if self._n == 2:
            (other,) = nonrec
            self._paths = {other: [other, rec], rec: [rec, other]}
        else:
            self._aggregator = nonrec[0]
            for i, j in enumerate(nonrec):
                self._paths[j] = [j, rec, *nonrec[i + 1 :], *nonrec[:i]]
            self._paths[rec] = [rec, *nonrec]
        for owner, path in self._paths.items():
            for i in range(1, len(path)):
                if path[i] == ctx.me:
                    self._expected.add((KIND_SET, i, path[i - 1], owner))
            if path[-1] == ctx.me:
                continue
            if owner == rec and ctx.is_recipient:
                self._expected.add((KIND_RETURN, self._n, path[-1], rec))
            elif owner != rec and ctx.me == self._aggregator:
                self._expected.add((KIND_FINAL, self._n, path[-1], owner))
        if ctx.is_recipient and self._aggregator is not None:
            self._expected.add((KIND_INTERSECTION, self._n + 1, self._aggregator, self._aggregator))

    def _build_keys(self) -> None:
        k = self.secret_bytes("psi-key", 32)
        if self.ctx.is_recipient and self._n >= 3:
            b = self.secret_bytes("psi-key-final", 32)
            self._keys_own, self._keys_peer, self._keys_return = (k,), (k, b), (b,)
        else:
            self._keys_own, self._keys_peer, self._keys_return = (k,), (k,), ()

    # -- progress -----------------------------------------------------------------------------

    def _work_total(self) -> int:
        """Element blindings this party does; sizes not seen yet are estimated by its own."""
        own = self._sizes.get(self.ctx.me, 0)
        total = own * (len(self._keys_own) + len(self._keys_return))
        for p in self.ctx.peers:
            total += self._sizes.get(p, own) * len(self._keys_peer)
        return max(total, 1)

    def _did(self, elements: int, keys: int, what: str) -> None:
        self._work_done += elements * keys
        frac = 0.02 + 0.95 * min(1.0, self._work_done / self._work_total())
        self._progress = max(self._progress, frac)
        self.report(self._progress, what)

    # -- blinding -----------------------------------------------------------------------------

    def _blind(self, packed: bytes, keys: tuple[bytes, ...], sender: str) -> bytes:
        step = PIECE * ELEMENT
        jobs = [(keys, packed[i : i + step]) for i in range(0, len(packed), step)]
        out = self.pmap(blind_piece, jobs)
        if any(bad for _, bad in out):
            raise ProtocolError(f"{sender!r} sent a small-order element")
        return b"".join(blob for blob, _ in out)

    def _emit(
        self, receiver: str, round_: int, kind: str, owner: str, packed: bytes, shuffle: str | None = None
    ) -> list[Message]:
        """A whole set as buckets; with a `shuffle` label, in a secret order derived from it
        (taken bucket by bucket, so the set is not copied whole once more)."""
        size, bs = len(packed) // ELEMENT, self._bucket
        count, index = bucket_count(size, bs), self.ctx.participants.index(owner)
        perm: np.ndarray | None = None
        if shuffle is not None and size > 1:
            perm = self.secret_permutation(shuffle, size)
        points = _as_points(packed)
        out = []
        for i in range(count):
            if perm is None:
                body = packed[i * bs * ELEMENT : (i + 1) * bs * ELEMENT]
            else:
                body = points[perm[i * bs : (i + 1) * bs]].tobytes()
            out.append(self.send(receiver, round_, kind, HEADER.pack(index, i, count, size) + body))
        return out

    # -- protocol -----------------------------------------------------------------------------

    def start(self) -> list[Message]:
        self._mark_started()
        ctx, p = self.ctx, self._params
        column = p["id_column"] or ctx.id_column
        self.report(0.0, f"normalising IDs of column {column!r}")
        idset = IdSet.of(self.data, column, p["casefold"])
        self._skipped, self._duplicates = idset.skipped, idset.duplicates
        unique = idset.as_list()
        del idset
        ids = [unique[i] for i in self.secret_permutation("psi/shuffle/own", len(unique)).tolist()]
        del unique
        self._sizes[ctx.me] = len(ids)
        self.report(0.01, "hashing and blinding the IDs")
        dst = hash_dst(HASH_DOMAIN, ctx.binding)
        jobs = [
            (dst, self._keys_own, [x.encode("utf-8", "surrogatepass") for x in ids[i : i + PIECE]])
            for i in range(0, len(ids), PIECE)
        ]
        out = self.pmap(hash_blind_piece, jobs)
        dropped = {i * PIECE + j for i, (_, bad) in enumerate(out) for j in bad}
        packed = b"".join(blob for blob, _ in out)
        del out, jobs
        if dropped:  # an own ID hashed to a small-order point (probability ~2^-250)
            ids = [x for i, x in enumerate(ids) if i not in dropped]
        self._sizes[ctx.me] = len(ids)
        if ctx.is_recipient and not self._cardinality:
            self._ids = ids
        self._did(len(ids), len(self._keys_own), f"blinded own {len(ids)} IDs")
        path = self._paths[ctx.me]
        return self._emit(path[1], 1, KIND_SET, ctx.me, packed)

    def receive(self, msg: Message) -> list[Message]:
        ctx = self.ctx
        self._check_delivery(msg)
        if msg.kind == KIND_RESULT:
            return self._receive_result_hash(msg)
        if msg.kind not in STREAM_KINDS:
            raise ProtocolError(f"unexpected message kind {msg.kind!r} from {msg.sender!r}")
        if len(msg.payload) < HEADER.size:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} is shorter than its header")
        owner_index, index, count, size = HEADER.unpack_from(msg.payload)
        if owner_index >= self._n:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} names owner #{owner_index}")
        owner = ctx.participants[owner_index]
        key = (msg.kind, msg.round, msg.sender, owner)
        if key not in self._expected:
            raise ProtocolError(
                f"unexpected {msg.kind!r} message round {msg.round} from {msg.sender!r} with the set of {owner!r}"
            )
        what = f"{msg.kind!r} bucket {index} of {owner!r}'s set from {msg.sender!r}"
        stream = self._streams.get(key)
        if stream is None:
            if size > MAX_SET or count != bucket_count(size, self._bucket):
                raise ProtocolError(f"{what}: {count} buckets for {size} elements")
            self._check_size(msg.kind, owner, size, what)
            stream = self._streams[key] = _Stream(size, count)
        if stream.complete:
            raise ProtocolError(f"{what}: the set is already complete")
        if (size, count) != (stream.size, stream.count):
            raise ProtocolError(f"{what}: size or bucket count changed within the set")
        if index != stream.received:
            raise ProtocolError(f"{what}: expected bucket {stream.received}")
        body = msg.payload[HEADER.size :]
        want = ELEMENT * min(self._bucket, size - index * self._bucket)
        if len(body) != want:
            raise ProtocolError(f"{what}: {len(body)} bytes, expected {want}")
        check_elements(body, what)
        stream.received += 1
        if msg.kind == KIND_SET:
            return self._on_set(msg, owner, stream, index, body)
        if msg.kind == KIND_RETURN:
            if self._keys_return:
                body = self._blind(body, self._keys_return, msg.sender)
                self._did(len(body) // ELEMENT, len(self._keys_return), "unblinding own set")
            return self._sink("own", body, stream.complete)
        if msg.kind == KIND_FINAL:
            return self._sink(f"final/{owner}", body, stream.complete)
        return self._sink("intersection", body, stream.complete)

    def _check_size(self, kind: str, owner: str, size: int, what: str) -> None:
        known = self._sizes.get(owner)
        if kind == KIND_INTERSECTION:
            bound = min((self._sizes.get(p, 0) for p in self._nonrec), default=0)
            if size > bound:
                raise ProtocolError(f"{what}: intersection of {size} elements exceeds the smallest set ({bound})")
        elif known is None:
            if kind != KIND_SET:
                raise ProtocolError(f"{what}: the set of {owner!r} has not been seen before")
            self._sizes[owner] = size
        elif known != size:
            raise ProtocolError(f"{what}: the set of {owner!r} had {known} elements, now {size}")

    def _on_set(self, msg: Message, owner: str, stream: _Stream, index: int, body: bytes) -> list[Message]:
        ctx, rec = self.ctx, self.ctx.recipient
        path = self._paths[owner]
        hop = msg.round
        blinded = self._blind(body, self._keys_peer, msg.sender)
        self._did(len(body) // ELEMENT, len(self._keys_peer), f"blinded bucket {index + 1}/{stream.count} of {owner}")
        shuffle = owner != rec or self._cardinality
        if hop < len(path) - 1:
            dest, round_, kind = path[hop + 1], hop + 1, KIND_SET
        elif owner == rec:
            dest, round_, kind = rec, self._n, KIND_RETURN
        elif self._n == 2:  # R holds the other set under both keys
            return self._sink("others", blinded, stream.complete)
        elif ctx.me == self._aggregator:
            return self._sink(f"final/{owner}", blinded, stream.complete)
        else:
            dest, round_, kind = self._aggregator or "", self._n, KIND_FINAL
        if not shuffle:
            header = HEADER.pack(ctx.participants.index(owner), index, stream.count, stream.size)
            return [self.send(dest, round_, kind, header + blinded)]
        stream.parts.append(blinded)
        if not stream.complete:
            return []
        packed = b"".join(stream.parts)
        stream.parts.clear()
        return self._emit(dest, round_, kind, owner, packed, shuffle=f"psi/shuffle/{owner}/{hop}")

    def _sink(self, name: str, body: bytes, complete: bool) -> list[Message]:
        """Keep a set that ends here; act when the sets needed are complete."""
        self._sinks.setdefault(name, []).append(body)
        if not complete:
            return []
        self._complete.add(name)
        if self.ctx.me == self._aggregator and not self._aggregated:
            return self._maybe_aggregate()
        if self.ctx.is_recipient:
            return self._maybe_finish()
        return []

    def _maybe_aggregate(self) -> list[Message]:
        names = [f"final/{p}" for p in self._nonrec]
        if not all(name in self._complete for name in names):
            return []
        self._aggregated = True
        self.report(self._progress, "intersecting the fully blinded sets")
        sets = sorted((_as_points(b"".join(self._sinks.pop(name))) for name in names), key=len)
        common = reduce(np.intersect1d, sets[1:], np.unique(sets[0]))
        rec, packed = self.ctx.recipient, common.tobytes()
        return self._emit(rec, self._n + 1, KIND_INTERSECTION, self.ctx.me, packed, shuffle="psi/shuffle/intersection")

    def _maybe_finish(self) -> list[Message]:
        other = "others" if self._n == 2 else "intersection"
        if self._done or "own" not in self._complete or other not in self._complete:
            return []
        self.report(0.98, "intersecting")
        own = _as_points(b"".join(self._sinks.pop("own")))
        theirs = _as_points(b"".join(self._sinks.pop(other)))
        if len(own) != self._sizes[self.ctx.me]:
            raise ProtocolError("own set came back with a different size")
        hits = np.isin(own, theirs)
        result: dict[str, Any] = {
            "algorithm": self.name,
            "output": self._params["output"],
            "size": int(hits.sum()),
            "party_sizes": {p: self._sizes[p] for p in self.ctx.participants},
            "casefold": self._params["casefold"],
            "parties": self._n,
            "skipped_empty": self._skipped,
            "duplicates_removed": self._duplicates,
        }
        if not self._cardinality:
            result["ids"] = sorted(self._ids[i] for i in np.flatnonzero(hits).tolist())
            self._ids = []
        self._result = canonical_json(result, ensure_ascii=False)  # IDs as UTF-8, as psi always wrote them
        self._result_hash = COMMITMENT.result_hash(self._salt(), self._result)
        self._done = True
        out = [self.send(peer, self._n + 2, KIND_RESULT, self._result_hash) for peer in self.ctx.peers]
        self.report(1.0, "done; the recipient holds the result")
        return out

    def _receive_result_hash(self, msg: Message) -> list[Message]:
        ctx = self.ctx
        if ctx.is_recipient or msg.sender != ctx.recipient or msg.round != self._n + 2:
            raise ProtocolError(f"unexpected result hash from {msg.sender!r} (round {msg.round})")
        if self._result_hash is not None:
            raise ProtocolError(f"duplicate result hash from {msg.sender!r}")
        if len(msg.payload) != ELEMENT:
            raise ProtocolError(f"result hash from {msg.sender!r} has {len(msg.payload)} bytes, expected 32")
        pending = sum(1 for key in self._expected if key not in self._streams or not self._streams[key].complete)
        if pending or len(self._sizes) < self._n:
            raise ProtocolError(f"result hash from {msg.sender!r} arrived before this party's part was complete")
        self._result_hash = msg.payload
        self._done = True
        self.report(1.0, "done; the recipient holds the result")
        return []

    def _salt(self) -> bytes:
        return self.secret_bytes("psi-result-salt", 32)

    # -- outcome ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    def _size_bytes(self) -> bytes:
        return b"".join(SIZE.pack(self._sizes[p]) for p in self.ctx.participants)

    def result_commitment(self) -> bytes:
        if not self._done or self._result_hash is None:
            raise ProtocolError("the psi protocol has not finished")
        return COMMITMENT.commit(self._size_bytes(), self._result_hash)

    def commitment_opening(self) -> bytes:
        """The u64 set sizes (participant order), followed at the recipient by its 32-byte
        result salt; with the result bytes, `commitment_for` recomputes `result_commitment()`."""
        if not self._done:
            raise ProtocolError("the psi protocol has not finished")
        sizes = self._size_bytes()
        return sizes + self._salt() if self.ctx.is_recipient else sizes
