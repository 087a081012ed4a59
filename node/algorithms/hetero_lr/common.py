"""Building blocks of hetero-lr: deterministic randomness for Paillier, aligned local data,
pairwise-masked fixed-point vectors and the metrics. What hetero-lr-predict needs as well
(ID hashing, model commitments, masks, framing, metric functions) is in
`pcn.algorithms.vertical`, which both algorithms' code hashes cover.

Determinism. A resumed worker must re-emit byte-identical messages, so nothing here draws
from the OS: the Paillier key pair, the fixed base h, every obfuscation exponent and mask
and the uniform r of the masks sent to a key holder come from `vertical.Drbg`, the
ChaCha20 keystream (RFC 8439 cipher, via `cryptography`) under a 32-byte key the protocol
derives from its secret seed with a label naming the purpose and the (epoch, step)
(`Protocol.secret_bytes`). A ChaCha20 keystream under a secret uniform key is a standard
CSPRNG (the construction of e.g. Linux's getrandom), so the security of what is drawn is
that of fresh OS randomness as long as the seed is secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2
import numpy as np
from gmpy2 import mpz

from pcn.algorithms.base import ProtocolError
from pcn.algorithms.vertical import (
    FIXED_LIMIT,
    Drbg,
    add_pair_masks,
    auc,
    ks,
    log_loss,
    numeric,
    sigmoid,
    sort_ids,
    to_fixed,
)
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
_PRIME_ROUNDS = 40


# -- deterministic randomness -------------------------------------------------------------


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


def uniform_units(drbg: Drbg, n: int, count: int) -> list[int]:
    """`count` values uniform in Z_n* (rejection sampling from the stream; a draw sharing a
    factor with n, probability about 2^-1023, is skipped), each used once."""
    out: list[int] = []
    while len(out) < count:
        r = drbg.below(n)
        if r > 0 and gmpy2.gcd(r, n) == 1:
            out.append(r)
    return out


def nth_powers_job(job: tuple[int, list[int]]) -> list[int]:
    """(n, [r_i]) -> [r_i^n mod n²]: the costly half of a full Paillier re-randomisation, one
    unit of parallel work for `Protocol.pmap`."""
    n, rs = job
    nn, nsq = mpz(n), mpz(n) * mpz(n)
    return [int(gmpy2.powmod(r, nn, nsq)) for r in rs]


def mask_ciphertexts(public_key: PaillierPublicKey, masks: Sequence[int], nth_powers: Sequence[int]) -> list[mpz]:
    """Enc(R_i) = (1 + R_i·n)·r_i^n mod n² for residues R_i in [0, n) and r_i uniform in Z_n*:
    a ciphertext multiplied by it has uniform randomness, whatever randomness it had before."""
    return [public_key.raw_encrypt(m, mpz(rn)) for m, rn in zip(masks, nth_powers, strict=True)]


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


def masked_vector(
    values: np.ndarray, me: str, hosts: Sequence[str], seeds: dict[str, bytes], label: str, what: str
) -> np.ndarray:
    """to_fixed(values) plus the pairwise masks of `me` with every other host for `label`:
    the pair's ChaCha20 key is SHA-256(pair seed | label), fresh for every label."""
    fixed = to_fixed(values, f"{what}: values are not finite or exceed {FIXED_LIMIT:g} (training diverged?)")
    keys = {other: hashlib.sha256(seed + label.encode()).digest() for other, seed in seeds.items()}
    return add_pair_masks(fixed, me, hosts, keys)


# -- local data -----------------------------------------------------------------------------


@dataclass
class LocalData:
    ids: list[str]  # sorted
    order: np.ndarray  # table row of each sorted ID
    features: list[str]
    raw: np.ndarray  # (rows, features) in sorted-ID order


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
    sorted_ids, order = sort_ids(table, id_column, "hetero-lr")
    if features is None:
        features = [c for c in table.names if c != id_column and c not in exclude and is_numeric(table, c)]
    else:
        missing = [c for c in features if c not in table]
        if missing:
            raise ProtocolError(f"feature column(s) {missing} not in the dataset; columns are {table.names}")
        if id_column in features:
            raise ProtocolError(f"the ID column {id_column!r} cannot be a feature")
    raw = np.empty((len(sorted_ids), len(features)), dtype=np.float64)
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


def classification_metrics(y: np.ndarray, z: np.ndarray) -> dict[str, float]:
    return {
        "auc": auc(y, z),
        "ks": ks(y, z),
        "accuracy": float(np.mean((z > 0) == (y == 1))),
        "log_loss": log_loss(y, sigmoid(z)),
    }
