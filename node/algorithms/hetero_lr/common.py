"""Building blocks of hetero-lr: deterministic randomness for Paillier, aligned local data,
pairwise-masked fixed-point vectors, message framing and the metrics.

Determinism. A resumed worker must re-emit byte-identical messages, so nothing here draws
from the OS: the Paillier key pair, the fixed base h and every obfuscation exponent and
mask come from `Drbg`, the ChaCha20 keystream (RFC 8439 cipher, via `cryptography`) under
a 32-byte key the protocol derives from its secret seed with a label naming the purpose
and the (epoch, step) (`Protocol.secret_bytes`). A ChaCha20 keystream under a secret
uniform key is a standard CSPRNG (the construction of e.g. Linux's getrandom), so the
security of what is drawn is that of fresh OS randomness as long as the seed is secret.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from gmpy2 import mpz

from pcn.algorithms.base import ProtocolError
from pcn.crypto.paillier import (
    EncryptedVector,
    FixedBaseObfuscator,
    PaillierError,
    PaillierPrivateKey,
    PaillierPublicKey,
)
from pcn.data.errors import DataError
from pcn.data.table import Table

DOMAIN = b"pcn/hetero-lr/"
MODEL_DOMAIN = b"pcn/hetero-lr/model/v1"
FIXED_BITS = 32  # fractional bits of the pairwise-masked fixed-point vectors (scores)
FIXED_LIMIT = float(1 << 30)  # |value| bound of a masked fixed-point entry (int64 ring with headroom)
PART_BYTES = 8 * 1024 * 1024  # a message carries at most this much payload (the envelope cap is 16 MiB)
FRAME = struct.Struct(">II")  # part index, part count
_PRIME_ROUNDS = 40


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# -- deterministic randomness -------------------------------------------------------------


class Drbg:
    """The ChaCha20 keystream under a 32-byte key, read as random bits."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a Drbg key is 32 bytes")
        self._enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def read(self, n: int) -> bytes:
        return self._enc.update(bytes(n))

    def randbits(self, k: int) -> int:
        nbytes = (k + 7) // 8
        return int.from_bytes(self.read(nbytes), "big") >> (8 * nbytes - k)

    def below(self, bound: int) -> int:
        """Uniform in [0, bound), by rejection."""
        k = int(bound).bit_length()
        while True:
            v = self.randbits(k)
            if v < bound:
                return v

    def uint64(self, count: int) -> np.ndarray:
        return np.frombuffer(self.read(8 * count), dtype="<u8").astype(np.uint64)


def _prime(drbg: Drbg, bits: int) -> mpz:
    while True:
        candidate = mpz(drbg.randbits(bits)) | (mpz(3) << (bits - 2)) | 1
        p = gmpy2.next_prime(candidate)
        if p.bit_length() == bits and gmpy2.is_prime(p, _PRIME_ROUNDS):
            return mpz(p)


def derive_keypair(key_bits: int, seed: bytes) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A Paillier key pair drawn from `Drbg(seed)` with the checks of `generate_keypair`
    (exact size, |p - q| > 2^(|n|/2 - 100), gcd(n, φ(n)) = 1): the same seed gives the same key."""
    drbg = Drbg(seed)
    half = key_bits // 2
    while True:
        p, q = _prime(drbg, half), _prime(drbg, half)
        n = p * q
        if p == q or n.bit_length() != key_bits or abs(p - q).bit_length() <= half - 100:
            continue
        if gmpy2.gcd(n, (p - 1) * (q - 1)) != 1:
            continue
        public = PaillierPublicKey(n)
        return public, PaillierPrivateKey(public, p, q)


class SeededObfuscator(FixedBaseObfuscator):
    """DJN fixed-base obfuscation (see `pcn.crypto.paillier`, speed-up (b)) whose base and
    exponents come from a `Drbg`: `reseed(key)` before each use makes the obfuscators of
    that use a function of the key, so a replay re-emits the same ciphertexts."""

    _drbg: Drbg | None = None

    @classmethod
    def derive(cls, public_key: PaillierPublicKey, seed: bytes, expected_uses: int) -> SeededObfuscator:
        """h = (-x²)^n mod n² for x from `Drbg(seed)`; window sized for `expected_uses`."""
        drbg = Drbg(seed)
        n = public_key.n
        while True:
            x = mpz(drbg.below(int(n) - 2) + 2)
            if gmpy2.gcd(x, n) == 1:
                break
        h = gmpy2.powmod(n - x * x % n, n, public_key.nsquare)
        obf = cls.sized_for(public_key, max(1, expected_uses), max_table_mb=32.0, h=h)
        assert isinstance(obf, SeededObfuscator)
        return obf

    def reseed(self, key: bytes) -> SeededObfuscator:
        self._drbg = Drbg(key)
        return self

    def _stream(self) -> Drbg:
        if self._drbg is None:
            raise RuntimeError("SeededObfuscator used before reseed()")
        return self._drbg

    def __call__(self) -> mpz:
        return self.power(self._stream().randbits(self.exponent_bits))

    def batch(self, count: int) -> list[mpz]:
        drbg, bits, power = self._stream(), self.exponent_bits, self.power
        return [power(drbg.randbits(bits)) for _ in range(count)]


def masked_encrypt(public_key: PaillierPublicKey, obf: SeededObfuscator, masks: Sequence[int]) -> list[mpz]:
    """Enc(R_i) for residues R_i in [0, n)."""
    return [public_key.raw_encrypt(r, obf()) for r in masks]


def public_key_from_hex(value: object, key_bits: int, what: str) -> PaillierPublicKey:
    if not isinstance(value, str):
        raise ProtocolError(f"{what}: Paillier modulus missing")
    try:
        pk = PaillierPublicKey.from_dict(
            {"kind": "pcn.paillier.public", "version": 1, "n": value}, allow_weak=key_bits < 2048
        )
    except PaillierError as exc:
        raise ProtocolError(f"{what}: bad Paillier public key: {exc}") from None
    if pk.bits != key_bits:
        raise ProtocolError(f"{what}: Paillier key of {pk.bits} bits, params say {key_bits}")
    return pk


def ciphertexts(public_key: PaillierPublicKey, data: bytes, count: int, precision: int, what: str) -> EncryptedVector:
    width = (int(public_key.nsquare.bit_length()) + 7) // 8
    if len(data) != count * width:
        raise ProtocolError(f"{what}: {len(data)} bytes, expected {count} ciphertexts of {width} bytes")
    try:
        return EncryptedVector.from_bytes(public_key, data, precision)
    except PaillierError as exc:
        raise ProtocolError(f"{what}: {exc}") from None


def residue_width(public_key: PaillierPublicKey) -> int:
    return (public_key.bits + 7) // 8


def pack_residues(values: Sequence[int | mpz], width: int) -> bytes:
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def unpack_residues(data: bytes, count: int, public_key: PaillierPublicKey, what: str) -> list[int]:
    width = residue_width(public_key)
    if len(data) != count * width:
        raise ProtocolError(f"{what}: {len(data)} bytes, expected {count} residues of {width} bytes")
    out = [int.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)]
    if any(v >= public_key.n for v in out):
        raise ProtocolError(f"{what}: residue not reduced modulo n")
    return out


def dot_job(job: tuple[int, int, bytes, np.ndarray]) -> bytes:
    """(n, precision of the matrix, ciphertext bytes, matrix (m, k)) -> Enc(row vector · matrix)
    as bytes: one unit of parallel work for `Protocol.pmap`."""
    n, precision, data, matrix = job
    pk = PaillierPublicKey(mpz(n))
    result = EncryptedVector.from_bytes(pk, data).dot(matrix, precision)
    out: bytes = result.to_bytes()
    return out


# -- pairwise masks among hosts -----------------------------------------------------------


def x25519_public(secret: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def pair_seed(secret: bytes, peer_public: bytes, task_id: int, a: str, b: str) -> bytes:
    """The seed two hosts share: SHA-256 over the X25519 secret and both addresses (sorted)."""
    try:
        shared = X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise ProtocolError(f"bad X25519 key from a peer: {exc}") from None
    lo, hi = sorted((a.lower(), b.lower()))
    return hashlib.sha256(
        DOMAIN + b"pair/v1" + task_id.to_bytes(32, "big") + lo.encode() + b"|" + hi.encode() + shared
    ).digest()


def to_fixed(values: np.ndarray, what: str) -> np.ndarray:
    """float64 -> int64 fixed point (FIXED_BITS fractional bits), viewed as uint64 for ring arithmetic."""
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) >= FIXED_LIMIT):
        raise ProtocolError(f"{what}: values are not finite or exceed {FIXED_LIMIT:g} (training diverged?)")
    return np.rint(np.ldexp(values, FIXED_BITS)).astype(np.int64).view(np.uint64)


def from_fixed(values: np.ndarray) -> np.ndarray:
    return np.ldexp(values.view(np.int64).astype(np.float64), -FIXED_BITS)


def masked_vector(
    values: np.ndarray, me: str, hosts: Sequence[str], seeds: dict[str, bytes], label: str, what: str
) -> np.ndarray:
    """to_fixed(values) plus the pairwise masks of `me` with every other host for `label`:
    the lower-indexed host of a pair adds PRG(seed, label), the higher one subtracts it, so
    the masks cancel in the sum over all hosts (mod 2^64)."""
    out = to_fixed(values, what)
    index = hosts.index(me)
    for j, other in enumerate(hosts):
        if other == me:
            continue
        key = hashlib.sha256(seeds[other] + label.encode()).digest()
        mask = Drbg(key).uint64(len(out))
        out = out + mask if index < j else out - mask
    return out


# -- message framing ----------------------------------------------------------------------


def frames(payload: bytes) -> list[bytes]:
    """A payload cut into parts of at most PART_BYTES, each prefixed by (index, count)."""
    count = max(1, -(-len(payload) // PART_BYTES))
    return [FRAME.pack(i, count) + payload[i * PART_BYTES : (i + 1) * PART_BYTES] for i in range(count)]


@dataclass
class Assembly:
    count: int
    parts: list[bytes]


def add_frame(pending: dict[Any, Assembly], key: Any, data: bytes, what: str) -> bytes | None:
    """Add one part; the whole payload once its last part arrived, else None."""
    if len(data) < FRAME.size:
        raise ProtocolError(f"{what}: shorter than its frame header")
    index, count = FRAME.unpack_from(data)
    body = data[FRAME.size :]
    entry = pending.get(key)
    if entry is None:
        if count < 1 or index != 0:
            raise ProtocolError(f"{what}: part {index} of {count} where part 0 was expected")
        entry = pending[key] = Assembly(count, [])
    if count != entry.count or index != len(entry.parts):
        want = f"part {len(entry.parts)} of {entry.count}"
        raise ProtocolError(f"{what}: part {index} of {count} where {want} was expected")
    if index < count - 1 and len(body) != PART_BYTES:
        raise ProtocolError(f"{what}: a middle part of {len(body)} bytes")
    entry.parts.append(body)
    if len(entry.parts) < count:
        return None
    del pending[key]
    return b"".join(entry.parts)


# -- local data -----------------------------------------------------------------------------


def normalise_id(cell: str | None) -> str:
    if cell is None:
        raise ProtocolError("the ID column has an empty cell")
    s = unicodedata.normalize("NFC", cell.strip())
    if not s:
        raise ProtocolError("the ID column has an empty cell")
    return s


def ids_hash(task_id: int, ids: Sequence[str]) -> bytes:
    h = hashlib.sha256(DOMAIN + b"ids/v1" + task_id.to_bytes(32, "big") + len(ids).to_bytes(8, "big"))
    for x in ids:
        b = x.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(4, "big") + b)
    return h.digest()


@dataclass
class LocalData:
    ids: list[str]  # sorted
    order: np.ndarray  # table row of each sorted ID
    features: list[str]
    raw: np.ndarray  # (rows, features) in sorted-ID order


def numeric(table: Table, column: str, order: np.ndarray | None = None) -> np.ndarray:
    try:
        values = table.numeric(column)
    except DataError as exc:
        raise ProtocolError(f"column {column!r}: {exc}") from None
    if not np.all(np.isfinite(values)):
        raise ProtocolError(f"column {column!r} has a non-finite value")
    return values if order is None else values[order]


def is_numeric(table: Table, column: str) -> bool:
    try:
        values = table.numeric(column)
    except (DataError, ValueError):
        return False
    return bool(np.all(np.isfinite(values)))


def load_local(table: Table, id_column: str, features: list[str] | None, exclude: set[str]) -> LocalData:
    """Rows sorted by ID (IDs unique and non-empty) and the feature matrix in that order;
    `features` None means every numeric column not in `exclude`."""
    if not isinstance(table, Table):
        raise ProtocolError(f"hetero-lr needs a Table, got {type(table).__name__}")
    if not id_column:
        raise ProtocolError("this party's dataset has no ID column")
    if id_column not in table:
        raise ProtocolError(f"no ID column {id_column!r}; columns are {table.names}")
    ids = [normalise_id(c) for c in table.column(id_column)]
    order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
    sorted_ids = [ids[i] for i in order.tolist()]
    for a, b in itertools.pairwise(sorted_ids):
        if a == b:
            raise ProtocolError(f"ID {a!r} appears twice: hetero-lr needs one row per ID (run PSI first)")
    if features is None:
        features = [c for c in table.names if c != id_column and c not in exclude and is_numeric(table, c)]
    else:
        missing = [c for c in features if c not in table]
        if missing:
            raise ProtocolError(f"feature column(s) {missing} not in the dataset; columns are {table.names}")
        if id_column in features:
            raise ProtocolError(f"the ID column {id_column!r} cannot be a feature")
    raw = np.empty((len(ids), len(features)), dtype=np.float64)
    for j, c in enumerate(features):
        raw[:, j] = numeric(table, c, order)
    return LocalData(sorted_ids, order, list(features), raw)


def standardisation(raw: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per column (population std; 1 for a constant column); (0, 1) when disabled."""
    d = raw.shape[1]
    if not enabled or raw.shape[0] == 0:
        return np.zeros(d), np.ones(d)
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    std[std < 1e-12] = 1.0
    return mean, std


def split_key(seed_split: int) -> bytes:
    """The batch-order key when params fix `seed_split` (public: anyone can recompute the batches)."""
    return hashlib.sha256(DOMAIN + b"seed-split/v1" + seed_split.to_bytes(8, "big")).digest()


def epoch_batches(shuffle_key: bytes, epoch: int, rows: int, batch_size: int) -> list[np.ndarray]:
    """The batches of an epoch: a permutation from ChaCha20 keys (identical at every party,
    independent of the numpy version), cut into max(1, rows // batch_size) near-equal parts,
    so that every batch has at least batch_size rows."""
    count = batch_count(rows, batch_size)
    if count == 1:
        return [np.arange(rows, dtype=np.int64)]
    keys = Drbg(hashlib.sha256(DOMAIN + b"shuffle/v1" + shuffle_key + epoch.to_bytes(8, "big")).digest()).uint64(rows)
    perm = np.argsort(keys, kind="stable").astype(np.int64)
    return list(np.array_split(perm, count))


def batch_count(rows: int, batch_size: int) -> int:
    return 1 if batch_size == -1 or batch_size >= rows else rows // batch_size


def min_batch(rows: int, batch_size: int) -> int:
    return rows // batch_count(rows, batch_size)


# -- metrics ----------------------------------------------------------------------------------


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        raise ProtocolError("AUC needs both classes in the labels")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def ks(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic: max |TPR - FPR| over all score thresholds."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        raise ProtocolError("KS needs both classes in the labels")
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], y[order]
    tp, fp = np.cumsum(t), np.cumsum(1 - t)
    last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
    return float(np.max(np.abs(tp[last] / pos - fp[last] / neg)))


def sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def classification_metrics(y: np.ndarray, z: np.ndarray) -> dict[str, float]:
    p = np.clip(sigmoid(z), 1e-15, 1 - 1e-15)
    return {
        "auc": auc(y, z),
        "ks": ks(y, z),
        "accuracy": float(np.mean((z > 0) == (y == 1))),
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
    }
