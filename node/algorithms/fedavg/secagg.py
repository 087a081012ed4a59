"""Secure-aggregation primitives (Bonawitz et al., CCS 2017): X25519 pairwise seeds,
ChaCha20 mask expansion, Shamir secret sharing over GF(2^521 - 1).

Masks live in the ring Z_{2^64} (numpy uint64, which wraps on overflow). A mask of n
entries is the ChaCha20 keystream (all-zero nonce; every key is used for one mask only)
read as n little-endian uint64 words. Keys are SHA-256 of a domain tag, the task id, the
aggregation round, the party indexes and the secret (X25519 shared secret or self-mask
seed), so no key repeats across tasks, rounds or pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from pcn.algorithms.base import ProtocolError

PRIME = (1 << 521) - 1  # a Mersenne prime: room for 256-bit secrets
ELEMENT_BYTES = 66  # one field element, big-endian
COEFF_BYTES = 82  # 656 random bits per coefficient: bias mod PRIME below 2^-135
KEY_BYTES = 32

PAIR_DOMAIN = b"pcn/fedavg/pair-mask/v2"
SELF_DOMAIN = b"pcn/fedavg/self-mask/v2"
SEED_COMMIT_DOMAIN = b"pcn/fedavg/self-seed/v2"
_NONCE = bytes(16)


def _context(binding: bytes, round_: int, *indexes: int) -> bytes:
    return binding + round_.to_bytes(4, "big") + b"".join(i.to_bytes(4, "big") for i in indexes)


def expand(key: bytes, n: int) -> np.ndarray:
    """n uint64 words of ChaCha20 keystream under `key` (encrypting zeros)."""
    encryptor = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(8 * n)), dtype="<u8").astype(np.uint64)


def private_key(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def public_bytes(raw: bytes) -> bytes:
    return private_key(raw).public_key().public_bytes_raw()


def pair_key(my_private: bytes, their_public: bytes, binding: bytes, round_: int, i: int, j: int) -> bytes:
    """The round's mask key of parties i and j: SHA-256 over their X25519 shared secret."""
    try:
        shared = private_key(my_private).exchange(X25519PublicKey.from_public_bytes(their_public))
    except ValueError:
        raise ProtocolError(f"round {round_}: the X25519 public key of party #{j} is invalid") from None
    lo, hi = min(i, j), max(i, j)
    return hashlib.sha256(PAIR_DOMAIN + _context(binding, round_, lo, hi) + shared).digest()


def self_key(seed: bytes, binding: bytes, round_: int, i: int) -> bytes:
    return hashlib.sha256(SELF_DOMAIN + _context(binding, round_, i) + seed).digest()


def seed_commitment(seed: bytes, binding: bytes, round_: int, i: int) -> bytes:
    """Published in setup so a reconstructed self-mask seed can be checked."""
    return hashlib.sha256(SEED_COMMIT_DOMAIN + _context(binding, round_, i) + seed).digest()


# -- Shamir -----------------------------------------------------------------------------


def share(secret: int, threshold: int, xs: Sequence[int], randomness: bytes) -> list[int]:
    """f(x) for each x, f of degree threshold - 1 with f(0) = secret and the other
    coefficients from `randomness` (COEFF_BYTES each)."""
    if not 0 <= secret < PRIME:
        raise ValueError("secret out of the field")
    if len(randomness) < COEFF_BYTES * (threshold - 1):
        raise ValueError("not enough randomness for the polynomial")
    coeffs = [secret] + [
        int.from_bytes(randomness[k * COEFF_BYTES : (k + 1) * COEFF_BYTES], "big") % PRIME for k in range(threshold - 1)
    ]
    out = []
    for x in xs:
        acc = 0
        for c in reversed(coeffs):
            acc = (acc * x + c) % PRIME
        out.append(acc)
    return out


def reconstruct(points: Sequence[tuple[int, int]]) -> int:
    """f(0) by Lagrange interpolation through the points (x distinct, nonzero)."""
    total = 0
    for j, (xj, yj) in enumerate(points):
        num, den = 1, 1
        for m, (xm, _) in enumerate(points):
            if m != j:
                num = num * (-xm) % PRIME
                den = den * (xj - xm) % PRIME
        total = (total + yj * num * pow(den, -1, PRIME)) % PRIME
    return total


def encode_elements(values: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(ELEMENT_BYTES, "big") for v in values)


def decode_elements(payload: bytes, what: str) -> list[int]:
    if len(payload) % ELEMENT_BYTES:
        raise ProtocolError(f"{what}: {len(payload)} bytes is not a whole number of field elements")
    out = [int.from_bytes(payload[i : i + ELEMENT_BYTES], "big") for i in range(0, len(payload), ELEMENT_BYTES)]
    if any(v >= PRIME for v in out):
        raise ProtocolError(f"{what}: a share is not a field element")
    return out


# -- party sets -------------------------------------------------------------------------


def encode_set(indexes: Sequence[int], n: int) -> bytes:
    bits = bytearray((n + 7) // 8)
    for i in indexes:
        bits[i // 8] |= 1 << (i % 8)
    return bytes(bits)


def decode_set(payload: bytes, n: int) -> list[int]:
    if len(payload) != (n + 7) // 8:
        raise ProtocolError(f"a party set of {n} parties is {(n + 7) // 8} bytes, got {len(payload)}")
    members = [i for i in range(8 * len(payload)) if payload[i // 8] >> (i % 8) & 1]
    if members and members[-1] >= n:
        raise ProtocolError("a party set names a party index beyond the participants")
    return members
