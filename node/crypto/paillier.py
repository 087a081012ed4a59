"""Fast Paillier encryption on gmpy2: keys, encryption, CRT decryption, homomorphic
arithmetic, fixed-point encoding of (negative) floats, numpy vector helpers and packing.

The scheme is textbook Paillier with g = n + 1 (the choice `phe` makes too, so the two
libraries read each other's ciphertexts): Enc(m; r) = (1 + n·m) · r^n mod n², and
Dec(c) = L(c^λ mod n²)·μ mod n, computed with the CRT modulo p² and q².

Homomorphic operations (all on gmpy2.mpz modulo n²):
    Enc(a)·Enc(b) = Enc(a + b)            Enc(a)·(1 + n·k) = Enc(a + k)
    Enc(a)^k      = Enc(k·a)              Enc(a)^-1        = Enc(-a)  (mod n)
A negative constant -k is the residue n - k; Enc(a)^(n-k) decrypts like Enc(a)^-k, which
is what is computed (one modular inverse, then a short exponent).

Fixed-point encoding: a real x is stored as round(x · 2^precision_bits) modulo n, negative
values as n - |v|. Decoding takes the sign from the upper part of Z_n: residues up to
n/3 are positive, from 2n/3 up negative, and anything in between is reported as an
overflow (the same band `phe` uses), so most wrap-arounds are detected.

Speed-ups and the security assumption each one rests on
-------------------------------------------------------
Plain encryption draws r uniformly from Z*_n and computes r^n mod n² (one |n|-bit
exponentiation modulo n²). It is semantically secure under the Decisional Composite
Residuosity assumption (DCR) -- the baseline assumption of Paillier.

(a) CRT encryption by the key holder (`CRTObfuscator`, `PaillierPrivateKey.encrypt`).
    An n-th residue modulo n² is determined by its residues modulo p² and q², and
    r^n mod p² = (r^q mod p)^p mod p². So the key holder draws y_p ∈ Z*_p, y_q ∈ Z*_q
    uniformly and computes y_p^p mod p², y_q^q mod q² (half-size exponents, half-size
    moduli) and recombines with the CRT. The result has *exactly* the distribution of
    r^n mod n² for uniform r, so security is plain Paillier's (DCR), no extra assumption.
    It needs p and q, so only the key holder can use it (≈ 2.5-3x faster than plain).

(b) Fixed-base obfuscation (`FixedBaseObfuscator`), the Damgård-Jurik-Nielsen (DJN)
    technique. Once per key: h = (-x²)^n mod n² for a random x ∈ Z*_n. Then every
    obfuscator is h^e mod n² for a fresh random e of `exponent_bits` bits, computed with a
    precomputed fixed-base window table (no squarings; ceil(exponent_bits/window_bits) - 1
    modular multiplications, 27 for the defaults, vs ~2400 for a full r^n). This is NOT
    plain Paillier: the obfuscators are n-th residues, but only of a short-exponent
    subset. Security rests on the *small-exponent* variant of DCR: that h^e for a short
    uniform e is computationally indistinguishable from a uniform n-th residue
    (Damgård, Jurik, Nielsen, "A generalization of Paillier's public-key system with
    applications to electronic voting", IJIS 2010; cf. the short-exponent discrete-log
    assumption). The best known attacks on a short exponent (Pollard's kangaroo,
    baby-step giant-step) take about 2^(exponent_bits/2) steps, so the default is
    exponent_bits = 2·λ, with λ the key's security level: 224 bits for 2048-bit keys
    (λ = 112), 256 bits for 3072-bit keys (λ = 128). DJN's own, more conservative choice
    is |n|/2 bits (pass `exponent_bits=key_bits // 2`; ≈ 4.5x the per-encryption cost).
    h is public and may be shared; anyone holding only the public key can use it.

(c) Obfuscator pool (`ObfuscatorPool`): obfuscators do not depend on the message, so
    they are generated in bulk ahead of time (optionally in worker processes) and each is
    used exactly once (popped from the pool, never reused: reusing r^n would let anyone
    compute Enc(a)/Enc(b) = (1+n)^(a-b) and learn a - b). Same assumption as the source
    it draws from (plain, CRT or fixed-base). Benchmarks count the generation time.

(d) Packing (`Packer`): several fixed-point values share one plaintext, slot by slot,
    each offset to be non-negative and given `headroom` bits so that up to
    `max_additions` packed vectors can be added without a carry crossing a slot. This is
    an encoding, not a cryptographic change: the ciphertext is an ordinary Paillier
    ciphertext (same assumption as its obfuscator). Only addition of packed vectors is
    supported; the decryptor learns every slot, i.e. exactly the aggregated vector.

Not a speed-up with a security cost: `EncryptedVector.dot` (encrypted vector times a
plaintext vector or matrix, the hetero-LR gradient) uses Pippenger multi-exponentiation
and the ciphertext inverses for negative entries; the result is the same ciphertext.

Keys: n = p·q with p, q random primes of exactly |n|/2 bits (top two bits set, so n has
exactly |n| bits), |p - q| > 2^(|n|/2 - 100) (no Fermat factoring), gcd(n, φ(n)) = 1.
Key sizes: 2048 (default) or 3072 bits; smaller keys only with `allow_weak=True`, which
exists for fast tests and must not be used for real data.

Limitations: not constant-time (gmpy2/GMP is not side-channel hardened); ciphertexts are
malleable by design (no integrity -- authenticate them in the protocol); wrap-around
beyond n/3 is detected only when it lands in the middle band; packed slots are not
overflow-checked beyond the declared `max_additions`.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import re
import secrets
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Protocol

import gmpy2
import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

__all__ = [
    "DEFAULT_KEY_BITS",
    "DEFAULT_PRECISION_BITS",
    "KEY_BITS",
    "CRTObfuscator",
    "EncodingError",
    "EncryptedNumber",
    "EncryptedVector",
    "FixedBaseObfuscator",
    "Obfuscator",
    "ObfuscatorPool",
    "PackedVector",
    "Packer",
    "PaillierError",
    "PaillierKeyError",
    "PaillierOverflowError",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "PlainObfuscator",
    "decode",
    "decode_int",
    "decrypt_vector",
    "default_exponent_bits",
    "dot",
    "encode",
    "encode_array",
    "encrypt_vector",
    "generate_keypair",
    "multi_pow",
    "security_bits",
    "sum_encrypted",
]

DEFAULT_KEY_BITS = 2048
KEY_BITS: tuple[int, ...] = (2048, 3072)
MIN_WEAK_KEY_BITS = 512
DEFAULT_PRECISION_BITS = 40
_PRIME_ROUNDS = 40  # Miller-Rabin rounds on top of next_prime's own test
_PUBLIC_KIND = "pcn.paillier.public"
_PRIVATE_KIND = "pcn.paillier.private"
_FORMAT_VERSION = 1
_HEX = re.compile(r"[0-9a-fA-F]+")
_SMALL_PRIMES_PRODUCT = math.prod(int(p) for p in range(3, 2000, 2) if gmpy2.is_prime(p))

Number = int | float | Integral | Real


class PaillierError(ValueError):
    """A Paillier operation was given something it cannot work with."""


class PaillierKeyError(PaillierError):
    """A key is malformed, too weak, inconsistent or tampered with."""


class EncodingError(PaillierError):
    """A value cannot be encoded (NaN, infinite, or outside the encodable range)."""


class PaillierOverflowError(PaillierError, OverflowError):
    """A decrypted value lies outside the encodable range: the computation overflowed."""


# --------------------------------------------------------------------------- parameters


def security_bits(key_bits: int) -> int:
    """Security level λ of an RSA-type modulus of `key_bits` bits (NIST SP 800-57)."""
    if key_bits >= 15360:
        return 256
    if key_bits >= 7680:
        return 192
    if key_bits >= 3072:
        return 128
    if key_bits >= 2048:
        return 112
    return 80


def default_exponent_bits(key_bits: int) -> int:
    """Fixed-base (DJN) exponent length: 2·λ, see the module docstring (b)."""
    return 2 * security_bits(key_bits)


def _check_key_bits(key_bits: int, allow_weak: bool) -> None:
    if key_bits in KEY_BITS:
        return
    if allow_weak and key_bits >= MIN_WEAK_KEY_BITS and key_bits % 2 == 0:
        return
    allowed = " or ".join(str(b) for b in KEY_BITS)
    hint = "" if allow_weak else f" (smaller even sizes >= {MIN_WEAK_KEY_BITS} need allow_weak=True, for tests only)"
    raise PaillierKeyError(f"key size {key_bits} bits is not allowed: use {allowed}{hint}")


# --------------------------------------------------------------------------- encoding


def _to_python_number(x: object) -> int | float:
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int | np.integer | mpz):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x)
    if isinstance(x, Integral):
        return int(x)
    if isinstance(x, Real):
        return float(x)
    raise EncodingError(f"cannot encode a {type(x).__name__}: expected an int or a float")


def _scaled(x: object, precision_bits: int) -> int:
    """round(x · 2^precision_bits) as a Python int, exactly."""
    if precision_bits < 0:
        raise EncodingError(f"precision_bits must be >= 0, got {precision_bits}")
    v = _to_python_number(x)
    if isinstance(v, int):
        return v << precision_bits
    if not math.isfinite(v):
        raise EncodingError(f"cannot encode {v}: only finite numbers are encodable")
    try:
        return round(math.ldexp(v, precision_bits))
    except OverflowError as exc:
        raise EncodingError(f"{v} · 2^{precision_bits} is too large to encode") from exc


def _max_int(n: mpz) -> mpz:
    return n // 3


def encode(x: Number, n: int | mpz, precision_bits: int = DEFAULT_PRECISION_BITS) -> mpz:
    """Fixed-point encoding of an int or float as a residue modulo n.

    round(x · 2^precision_bits), negative values as n - |v|; |v| must not exceed n/3.
    Ints are encoded exactly; floats with an error of at most 2^-(precision_bits+1)."""
    n = mpz(n)
    v = _scaled(x, precision_bits)
    if abs(v) > _max_int(n):
        raise EncodingError(f"{x} at {precision_bits} precision bits exceeds the encodable range (n/3)")
    return mpz(v) % n


def encode_array(values: npt.ArrayLike, n: int | mpz, precision_bits: int = DEFAULT_PRECISION_BITS) -> list[mpz]:
    """`encode` for every element of a 1-D array-like (numpy floats or ints)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise EncodingError(f"expected a 1-D array, got shape {arr.shape}")
    n = mpz(n)
    limit = _max_int(n)
    if arr.dtype.kind in "iub":
        scaled = [int(v) << precision_bits for v in arr.tolist()]
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise EncodingError("cannot encode NaN or infinite values")
        if precision_bits < 0:
            raise EncodingError(f"precision_bits must be >= 0, got {precision_bits}")
        with np.errstate(over="raise"):
            try:
                scaled = [int(v) for v in np.rint(np.ldexp(arr.astype(np.float64), precision_bits)).tolist()]
            except FloatingPointError as exc:
                raise EncodingError(f"values · 2^{precision_bits} are too large to encode") from exc
    else:
        return [encode(v, n, precision_bits) for v in arr.tolist()]
    out: list[mpz] = []
    for v in scaled:
        if abs(v) > limit:
            raise EncodingError(f"value {v} (scaled) exceeds the encodable range (n/3)")
        out.append(mpz(v) % n)
    return out


def decode_int(residue: int | mpz, n: int | mpz) -> int:
    """Signed integer of a residue: up to n/3 positive, from 2n/3 negative, else overflow."""
    n = mpz(n)
    r = mpz(residue) % n
    limit = _max_int(n)
    if r <= limit:
        return int(r)
    if r >= n - limit:
        return int(r - n)
    raise PaillierOverflowError(
        "decrypted value lies in the overflow band (n/3, 2n/3): the homomorphic computation exceeded the "
        "encodable range or mixed keys"
    )


def decode(residue: int | mpz, n: int | mpz, precision_bits: int = DEFAULT_PRECISION_BITS) -> float:
    """Inverse of `encode`: the signed residue divided by 2^precision_bits (correctly rounded)."""
    v = decode_int(residue, n)
    try:
        return v / (1 << precision_bits) if precision_bits else float(v)
    except OverflowError as exc:
        raise PaillierOverflowError(f"decoded value {v} / 2^{precision_bits} does not fit a float") from exc


# --------------------------------------------------------------------------- keys


def _random_prime(bits: int) -> mpz:
    """A random prime of exactly `bits` bits with its top two bits set (so p·q has 2·bits bits)."""
    while True:
        candidate = mpz(secrets.randbits(bits)) | (mpz(3) << (bits - 2)) | 1
        p = gmpy2.next_prime(candidate)
        if p.bit_length() == bits and gmpy2.is_prime(p, _PRIME_ROUNDS):
            return mpz(p)


def _hex(v: int | mpz) -> str:
    return format(int(v), "x")


def _parse_hex(d: dict[str, Any], name: str, what: str) -> mpz:
    if name not in d:
        raise PaillierKeyError(f"{what}: missing field {name!r}")
    s = d[name]
    if not isinstance(s, str) or not _HEX.fullmatch(s):
        raise PaillierKeyError(f"{what}: field {name!r} must be a hex string without prefix, got {s!r:.40}")
    return mpz(s, 16)


def _check_kind(d: object, kind: str, what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise PaillierKeyError(f"{what}: expected a dict, got {type(d).__name__}")
    if d.get("kind") != kind:
        raise PaillierKeyError(f"{what}: kind must be {kind!r}, got {d.get('kind')!r}")
    if d.get("version") != _FORMAT_VERSION:
        raise PaillierKeyError(f"{what}: unsupported version {d.get('version')!r} (expected {_FORMAT_VERSION})")
    return d


def _validate_modulus(n: mpz, allow_weak: bool, what: str) -> None:
    _check_key_bits(int(n.bit_length()), allow_weak)
    if n % 2 == 0:
        raise PaillierKeyError(f"{what}: n is even")
    if gmpy2.is_square(n):
        raise PaillierKeyError(f"{what}: n is a perfect square")
    if gmpy2.gcd(n, _SMALL_PRIMES_PRODUCT) != 1:
        raise PaillierKeyError(f"{what}: n has a small prime factor")
    if gmpy2.is_prime(n, 10):
        raise PaillierKeyError(f"{what}: n is prime, not a product of two primes")


@dataclass(frozen=True, eq=False)
class PaillierPublicKey:
    """Public key (n, g = n + 1). Compares and hashes by n."""

    n: mpz
    nsquare: mpz = field(init=False, repr=False)
    max_int: mpz = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = mpz(self.n)
        if n < 15 or n % 2 == 0:
            raise PaillierKeyError("public key: n must be an odd composite modulus")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "nsquare", n * n)
        object.__setattr__(self, "max_int", _max_int(n))

    def __repr__(self) -> str:
        return f"PaillierPublicKey(bits={self.bits}, fingerprint={self.fingerprint()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(int(self.n))

    @property
    def g(self) -> mpz:
        return self.n + 1

    @property
    def bits(self) -> int:
        return int(self.n.bit_length())

    def fingerprint(self) -> str:
        """First 16 hex digits of SHA-256 over n (big-endian): a short key identifier."""
        return hashlib.sha256(int(self.n).to_bytes((self.bits + 7) // 8, "big")).hexdigest()[:16]

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"kind": _PUBLIC_KIND, "version": _FORMAT_VERSION, "n": _hex(self.n)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, allow_weak: bool = False) -> PaillierPublicKey:
        """Load and validate (size, parity, not square/prime, no small factors)."""
        what = "public key"
        _check_kind(d, _PUBLIC_KIND, what)
        n = _parse_hex(d, "n", what)
        _validate_modulus(n, allow_weak, what)
        return cls(n)

    # -- encoding
    def encode(self, x: Number, precision_bits: int = DEFAULT_PRECISION_BITS) -> mpz:
        return encode(x, self.n, precision_bits)

    def decode(self, residue: int | mpz, precision_bits: int = DEFAULT_PRECISION_BITS) -> float:
        return decode(residue, self.n, precision_bits)

    # -- obfuscation and encryption
    def random_r(self) -> mpz:
        return mpz(secrets.randbelow(int(self.n) - 1) + 1)

    def obfuscation(self) -> mpz:
        """A fresh r^n mod n² for uniform r (plain Paillier)."""
        return gmpy2.powmod(self.random_r(), self.n, self.nsquare)

    def fixed_base_obfuscator(self, **kwargs: Any) -> FixedBaseObfuscator:
        return FixedBaseObfuscator(self, **kwargs)

    def _combine(self, m: mpz, rn: mpz) -> mpz:
        # (1 + n·m)·rn = rn + n·(m·rn mod n)  (mod n²): cheaper than a full product mod n².
        n = self.n
        return (rn + n * (m * rn % n)) % self.nsquare

    def raw_encrypt(self, m: int | mpz, obfuscation: mpz | None = None) -> mpz:
        """Enc(m) for a residue 0 <= m < n, with the given r^n (or a fresh plain one)."""
        m = mpz(m)
        if not 0 <= m < self.n:
            raise PaillierError("raw plaintext must be in [0, n)")
        return self._combine(m, self.obfuscation() if obfuscation is None else obfuscation)

    def encrypt(
        self, value: Number, precision_bits: int | None = None, obfuscator: Obfuscator | None = None
    ) -> EncryptedNumber:
        """Encrypt an int (exact, precision 0 unless given) or a float (fixed point, default 40 bits)."""
        f = _default_precision(value, precision_bits)
        rn = obfuscator() if obfuscator is not None else self.obfuscation()
        return EncryptedNumber(self, self._combine(encode(value, self.n, f), rn), f)

    def encrypt_vector(
        self,
        values: npt.ArrayLike,
        precision_bits: int | None = None,
        obfuscator: Obfuscator | None = None,
        *,
        threads: int = 1,
    ) -> EncryptedVector:
        """Encrypt a 1-D array; floats at `precision_bits` (default 40), ints exactly.

        `threads` > 1 runs plain obfuscation in threads (gmpy2 releases the GIL)."""
        arr = np.asarray(values)
        f = precision_bits if precision_bits is not None else (0 if arr.dtype.kind in "iub" else DEFAULT_PRECISION_BITS)
        ms = encode_array(arr, self.n, f)
        source = obfuscator if obfuscator is not None else PlainObfuscator(self, threads=threads)
        rns = source.batch(len(ms))
        combine = self._combine
        return EncryptedVector(self, [combine(m, rn) for m, rn in zip(ms, rns, strict=True)], f)

    def ciphertext(self, c: int | mpz, precision_bits: int = 0) -> EncryptedNumber:
        """Wrap a received ciphertext integer, checking 0 < c < n²."""
        c = mpz(c)
        if not 0 < c < self.nsquare:
            raise PaillierError("ciphertext out of range (0, n²): not a ciphertext under this key")
        return EncryptedNumber(self, c, precision_bits)


@dataclass(frozen=True, eq=False)
class PaillierPrivateKey:
    """Private key: the factors p < q of n and the CRT constants for decryption."""

    public_key: PaillierPublicKey
    p: mpz = field(repr=False)
    q: mpz = field(repr=False)
    psquare: mpz = field(init=False, repr=False)
    qsquare: mpz = field(init=False, repr=False)
    hp: mpz = field(init=False, repr=False)
    hq: mpz = field(init=False, repr=False)
    p_inverse: mpz = field(init=False, repr=False)  # p^-1 mod q
    psquare_inverse: mpz = field(init=False, repr=False)  # (p²)^-1 mod q²
    _crt: CRTObfuscator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        p, q = mpz(self.p), mpz(self.q)
        if p == q:
            raise PaillierKeyError("private key: p and q must be different primes")
        if p * q != self.public_key.n:
            raise PaillierKeyError("private key: p·q does not equal the public modulus n")
        if q < p:
            p, q = q, p
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "q", q)
        psq, qsq = p * p, q * q
        object.__setattr__(self, "psquare", psq)
        object.__setattr__(self, "qsquare", qsq)
        g = self.public_key.g
        # h_p = L_p(g^(p-1) mod p²)^-1 mod p, likewise for q.
        object.__setattr__(self, "hp", gmpy2.invert((gmpy2.powmod(g, p - 1, psq) - 1) // p, p))
        object.__setattr__(self, "hq", gmpy2.invert((gmpy2.powmod(g, q - 1, qsq) - 1) // q, q))
        object.__setattr__(self, "p_inverse", gmpy2.invert(p, q))
        object.__setattr__(self, "psquare_inverse", gmpy2.invert(psq, qsq))
        object.__setattr__(self, "_crt", CRTObfuscator(self))

    def __repr__(self) -> str:
        return f"PaillierPrivateKey(bits={self.public_key.bits}, fingerprint={self.public_key.fingerprint()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPrivateKey) and self.public_key == other.public_key and self.p == other.p

    def __hash__(self) -> int:
        return hash(self.public_key)

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": _PRIVATE_KIND,
            "version": _FORMAT_VERSION,
            "n": _hex(self.public_key.n),
            "p": _hex(self.p),
            "q": _hex(self.q),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, allow_weak: bool = False) -> PaillierPrivateKey:
        """Load and validate: p and q prime, distinct, of equal size, p·q = n, gcd(n, φ(n)) = 1."""
        what = "private key"
        _check_kind(d, _PRIVATE_KIND, what)
        n, p, q = (_parse_hex(d, k, what) for k in ("n", "p", "q"))
        _validate_modulus(n, allow_weak, what)
        if p * q != n:
            raise PaillierKeyError(f"{what}: p·q does not equal n (tampered or mismatched fields)")
        if p == q:
            raise PaillierKeyError(f"{what}: p and q must be different primes")
        if p.bit_length() != q.bit_length() or p.bit_length() * 2 != n.bit_length():
            raise PaillierKeyError(f"{what}: p and q must both have {n.bit_length() // 2} bits")
        for name, f in (("p", p), ("q", q)):
            if not gmpy2.is_prime(f, _PRIME_ROUNDS):
                raise PaillierKeyError(f"{what}: {name} is not prime")
        if gmpy2.gcd(n, (p - 1) * (q - 1)) != 1:
            raise PaillierKeyError(f"{what}: gcd(n, φ(n)) != 1")
        return cls(PaillierPublicKey(n), p, q)

    # -- decryption
    def raw_decrypt(self, c: int | mpz) -> mpz:
        """The residue m in [0, n) of a ciphertext, via CRT modulo p² and q²."""
        c = mpz(c)
        if not 0 < c < self.public_key.nsquare:
            raise PaillierError("ciphertext out of range (0, n²)")
        p, q = self.p, self.q
        mp = (gmpy2.powmod(c, p - 1, self.psquare) - 1) // p * self.hp % p
        mq = (gmpy2.powmod(c, q - 1, self.qsquare) - 1) // q * self.hq % q
        return mp + p * ((mq - mp) * self.p_inverse % q)

    def raw_decrypt_many(self, cs: Sequence[mpz], *, threads: int = 1) -> list[mpz]:
        """`raw_decrypt` of many ciphertexts; the exponentiations run in gmpy2's C loop
        (and in `threads` threads, since it releases the GIL)."""
        nsq = self.public_key.nsquare
        for c in cs:
            if not 0 < c < nsq:
                raise PaillierError("ciphertext out of range (0, n²)")
        p, q, psq, qsq = self.p, self.q, self.psquare, self.qsquare
        xp = _powmod_base_list([c % psq for c in cs], p - 1, psq, threads)
        xq = _powmod_base_list([c % qsq for c in cs], q - 1, qsq, threads)
        hp, hq, pinv = self.hp, self.hq, self.p_inverse
        out: list[mpz] = []
        for a, b in zip(xp, xq, strict=True):
            mp = (a - 1) // p * hp % p
            mq = (b - 1) // q * hq % q
            out.append(mp + p * ((mq - mp) * pinv % q))
        return out

    def _check(self, x: EncryptedNumber | EncryptedVector) -> None:
        if x.public_key != self.public_key:
            raise PaillierError("ciphertext is under a different public key")

    def decrypt(self, x: EncryptedNumber) -> float:
        """Decrypt and decode to a float (value / 2^precision_bits)."""
        self._check(x)
        return decode(self.raw_decrypt(x.ciphertext), self.public_key.n, x.precision_bits)

    def decrypt_int(self, x: EncryptedNumber) -> int:
        """Decrypt to the signed encoded integer (value · 2^precision_bits; the value itself when 0)."""
        self._check(x)
        return decode_int(self.raw_decrypt(x.ciphertext), self.public_key.n)

    def decrypt_vector(self, x: EncryptedVector, *, threads: int = 1) -> npt.NDArray[np.float64]:
        self._check(x)
        n, f = self.public_key.n, x.precision_bits
        return np.array([decode(m, n, f) for m in self.raw_decrypt_many(x.ciphertexts, threads=threads)])

    def decrypt_vector_int(self, x: EncryptedVector, *, threads: int = 1) -> list[int]:
        self._check(x)
        n = self.public_key.n
        return [decode_int(m, n) for m in self.raw_decrypt_many(x.ciphertexts, threads=threads)]

    # -- the key holder's fast encryption (speed-up (a))
    @property
    def crt_obfuscator(self) -> CRTObfuscator:
        return self._crt

    def encrypt(
        self, value: Number, precision_bits: int | None = None, obfuscator: Obfuscator | None = None
    ) -> EncryptedNumber:
        """Encrypt under the public key, obfuscating with the CRT shortcut unless told otherwise."""
        return self.public_key.encrypt(value, precision_bits, obfuscator if obfuscator is not None else self._crt)

    def encrypt_vector(
        self,
        values: npt.ArrayLike,
        precision_bits: int | None = None,
        obfuscator: Obfuscator | None = None,
        *,
        threads: int = 1,
    ) -> EncryptedVector:
        source = obfuscator if obfuscator is not None else CRTObfuscator(self, threads=threads)
        return self.public_key.encrypt_vector(values, precision_bits, source)


def generate_keypair(
    key_bits: int = DEFAULT_KEY_BITS, *, allow_weak: bool = False
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """New key pair: n = p·q of exactly `key_bits` bits (2048 or 3072; smaller with allow_weak)."""
    _check_key_bits(key_bits, allow_weak)
    half = key_bits // 2
    while True:
        p, q = _random_prime(half), _random_prime(half)
        n = p * q
        if p == q or n.bit_length() != key_bits:
            continue
        if abs(p - q).bit_length() <= half - 100:  # Fermat factoring guard (FIPS 186-4 style)
            continue
        if gmpy2.gcd(n, (p - 1) * (q - 1)) != 1:
            continue
        public = PaillierPublicKey(n)
        return public, PaillierPrivateKey(public, p, q)


# --------------------------------------------------------------------------- obfuscators


class Obfuscator(Protocol):
    """A source of fresh n-th residues r^n mod n² (each value must be used once)."""

    def __call__(self) -> mpz: ...

    def batch(self, count: int) -> list[mpz]: ...


def _powmod_base_list(bases: list[mpz], exp: mpz, mod: mpz, threads: int) -> list[mpz]:
    if threads <= 1 or len(bases) < 2 * threads:
        return list(gmpy2.powmod_base_list(bases, exp, mod))
    size = -(-len(bases) // threads)
    chunks = [bases[i : i + size] for i in range(0, len(bases), size)]
    with ThreadPoolExecutor(max_workers=threads) as ex:
        parts = list(ex.map(lambda ch: gmpy2.powmod_base_list(ch, exp, mod), chunks))
    return [v for part in parts for v in part]


class PlainObfuscator:
    """r^n mod n² for uniform r ∈ Z*_n (plain Paillier, DCR)."""

    def __init__(self, public_key: PaillierPublicKey, *, threads: int = 1) -> None:
        self.public_key = public_key
        self.threads = threads

    def __call__(self) -> mpz:
        return self.public_key.obfuscation()

    def batch(self, count: int) -> list[mpz]:
        pk = self.public_key
        return _powmod_base_list([pk.random_r() for _ in range(count)], pk.n, pk.nsquare, self.threads)


class CRTObfuscator:
    """Key holder's r^n mod n² via CRT: y_p^p mod p², y_q^q mod q², recombined (speed-up (a))."""

    def __init__(self, private_key: PaillierPrivateKey, *, threads: int = 1) -> None:
        self.private_key = private_key
        self.threads = threads

    def _recombine(self, a: mpz, b: mpz) -> mpz:
        sk = self.private_key
        return a + sk.psquare * ((b - a) * sk.psquare_inverse % sk.qsquare)

    def __call__(self) -> mpz:
        sk = self.private_key
        a = gmpy2.powmod(mpz(secrets.randbelow(int(sk.p) - 1) + 1), sk.p, sk.psquare)
        b = gmpy2.powmod(mpz(secrets.randbelow(int(sk.q) - 1) + 1), sk.q, sk.qsquare)
        return self._recombine(a, b)

    def batch(self, count: int) -> list[mpz]:
        sk = self.private_key
        p, q = int(sk.p), int(sk.q)
        a = _powmod_base_list([mpz(secrets.randbelow(p - 1) + 1) for _ in range(count)], sk.p, sk.psquare, self.threads)
        b = _powmod_base_list([mpz(secrets.randbelow(q - 1) + 1) for _ in range(count)], sk.q, sk.qsquare, self.threads)
        recombine = self._recombine
        return [recombine(x, y) for x, y in zip(a, b, strict=True)]


class FixedBaseObfuscator:
    """DJN fixed-base obfuscation (speed-up (b)): h^e mod n² for a fresh short random e.

    h = (-x²)^n mod n² for random x (or a given public h). A window table of h with
    `window_bits`-bit digits makes each h^e cost ceil(exponent_bits / window_bits) - 1
    modular multiplications. Security: small-exponent DCR, see the module docstring."""

    def __init__(
        self,
        public_key: PaillierPublicKey,
        *,
        h: int | mpz | None = None,
        exponent_bits: int | None = None,
        window_bits: int = 8,
    ) -> None:
        self.public_key = public_key
        n, nsq = public_key.n, public_key.nsquare
        self.exponent_bits = exponent_bits if exponent_bits is not None else default_exponent_bits(public_key.bits)
        if self.exponent_bits < 2 * security_bits(public_key.bits) and exponent_bits is not None:
            raise PaillierError(
                f"exponent_bits={exponent_bits} is below 2·λ = {2 * security_bits(public_key.bits)} for this key size"
            )
        if not 1 <= window_bits <= 16:
            raise PaillierError("window_bits must be between 1 and 16")
        self.window_bits = window_bits
        if h is None:
            x = public_key.random_r()
            h = gmpy2.powmod(n - x * x % n, n, nsq)
        h = mpz(h)
        if not 1 < h < nsq or gmpy2.gcd(h, n) != 1:
            raise PaillierError("fixed base h must be a unit modulo n² other than 1")
        self.h = h
        self._windows = -(-self.exponent_bits // window_bits)
        self._table: list[list[mpz]] | None = None

    @classmethod
    def sized_for(
        cls, public_key: PaillierPublicKey, expected_uses: int, *, max_table_mb: float = 64.0, **kwargs: Any
    ) -> FixedBaseObfuscator:
        """Pick the window that minimises table building + `expected_uses` encryptions
        (8 bits for a few thousand, 11-12 bits for ~10^5), within `max_table_mb` of table."""
        e_bits = kwargs.get("exponent_bits") or default_exponent_bits(public_key.bits)
        entry = (int(public_key.nsquare.bit_length()) + 7) // 8 + 32
        best, best_cost = 8, math.inf
        for w in range(4, 17):
            rows = -(-e_bits // w)
            if rows * (1 << w) * entry > max_table_mb * 2**20:
                break
            cost = rows * (1 << w) + expected_uses * (rows - 1)
            if cost < best_cost:
                best, best_cost = w, cost
        return cls(public_key, window_bits=best, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_table"] = None  # rebuilt where it is used (cheaper than shipping it)
        return state

    def _build(self) -> list[list[mpz]]:
        nsq = self.public_key.nsquare
        size = 1 << self.window_bits
        table: list[list[mpz]] = []
        base = self.h
        for _ in range(self._windows):
            row = [mpz(1), base]
            for _ in range(size - 2):
                row.append(row[-1] * base % nsq)
            table.append(row)
            base = row[-1] * base % nsq  # base^(2^w)
        return table

    def prepare(self) -> FixedBaseObfuscator:
        """Build the window table now (it is built on first use otherwise)."""
        if self._table is None:
            self._table = self._build()
        return self

    def power(self, e: int) -> mpz:
        """h^e mod n² for 0 <= e < 2^exponent_bits, from the table."""
        table = self._table if self._table is not None else self.prepare()._table
        assert table is not None
        nsq = self.public_key.nsquare
        w, mask = self.window_bits, (1 << self.window_bits) - 1
        acc: mpz | None = None
        for row in table:
            d = e & mask
            e >>= w
            if d:
                acc = row[d] if acc is None else acc * row[d] % nsq
        if e:
            raise PaillierError("exponent longer than exponent_bits")
        return mpz(1) if acc is None else acc

    def __call__(self) -> mpz:
        return self.power(secrets.randbits(self.exponent_bits))

    def batch(self, count: int) -> list[mpz]:
        power, bits = self.power, self.exponent_bits
        return [power(secrets.randbits(bits)) for _ in range(count)]


def _pool_batch(source: Obfuscator, count: int) -> list[mpz]:
    return source.batch(count)


class ObfuscatorPool:
    """Pregenerated obfuscators (speed-up (c)); each value is handed out once.

    `fill(count)` generates in bulk, in `workers` processes when workers > 1 (the source
    is pickled; a fixed-base source rebuilds its table in each worker). With the default
    "spawn" context the calling script needs the `if __name__ == "__main__":` guard; inside
    a daemonic process (a Celery prefork child) generation falls back to this process.
    Process start-up costs ~0.5 s, so workers pay off for plain/CRT sources or large fills
    made ahead of time. When the pool is empty, values come straight from the source
    (counted in `misses`)."""

    def __init__(self, source: Obfuscator, *, workers: int = 1, mp_context: str = "spawn") -> None:
        self.source = source
        self.workers = max(1, workers)
        self.mp_context = mp_context
        self._values: deque[mpz] = deque()
        self.misses = 0

    def __len__(self) -> int:
        return len(self._values)

    def fill(self, count: int) -> None:
        if count <= 0:
            return
        # Daemonic processes (e.g. Celery prefork children) may not start processes: generate inline.
        if self.workers == 1 or count < 2 * self.workers or multiprocessing.current_process().daemon:
            self._values.extend(self.source.batch(count))
            return
        size, extra = divmod(count, self.workers)
        counts = [size + (1 if i < extra else 0) for i in range(self.workers)]
        ctx = multiprocessing.get_context(self.mp_context)
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as ex:
            for part in ex.map(_pool_batch, [self.source] * self.workers, counts):
                self._values.extend(part)

    def __call__(self) -> mpz:
        if self._values:
            return self._values.popleft()
        self.misses += 1
        return self.source()

    def batch(self, count: int) -> list[mpz]:
        take = min(count, len(self._values))
        out = [self._values.popleft() for _ in range(take)]
        if take < count:
            self.misses += count - take
            out.extend(self.source.batch(count - take))
        return out


# --------------------------------------------------------------------------- ciphertexts


def _default_precision(value: object, precision_bits: int | None) -> int:
    if precision_bits is not None:
        return precision_bits
    return DEFAULT_PRECISION_BITS if isinstance(value, float | np.floating) else 0


def _same_key(a: PaillierPublicKey, b: PaillierPublicKey) -> None:
    if a is not b and a.n != b.n:
        raise PaillierError("ciphertexts are under different public keys")


def _raise_precision(c: mpz, by: int, nsq: mpz) -> mpz:
    """Enc(m) -> Enc(m · 2^by): `by` modular squarings."""
    for _ in range(by):
        c = c * c % nsq
    return c


def _mul_const(c: mpz, k: mpz, pk: PaillierPublicKey) -> mpz:
    """Enc(m)^k for a residue k; 'negative' k (> n/2, i.e. n - |k|) via the inverse and |k|."""
    if k > pk.n >> 1:
        return gmpy2.powmod(gmpy2.invert(c, pk.nsquare), pk.n - k, pk.nsquare)
    return gmpy2.powmod(c, k, pk.nsquare)


class EncryptedNumber:
    """A ciphertext (mpz modulo n²) and the fixed-point precision of what it encrypts."""

    __slots__ = ("ciphertext", "precision_bits", "public_key")
    __array_ufunc__ = None  # make numpy defer to our reflected operators

    def __init__(self, public_key: PaillierPublicKey, ciphertext: mpz, precision_bits: int = 0) -> None:
        self.public_key = public_key
        self.ciphertext = ciphertext
        self.precision_bits = precision_bits

    def __repr__(self) -> str:
        return f"EncryptedNumber(key={self.public_key.fingerprint()}, precision_bits={self.precision_bits})"

    def _new(self, c: mpz, f: int | None = None) -> EncryptedNumber:
        return EncryptedNumber(self.public_key, c, self.precision_bits if f is None else f)

    def _aligned(self, other: EncryptedNumber) -> tuple[mpz, mpz, int]:
        _same_key(self.public_key, other.public_key)
        nsq = self.public_key.nsquare
        a, b, fa, fb = self.ciphertext, other.ciphertext, self.precision_bits, other.precision_bits
        if fa < fb:
            a = _raise_precision(a, fb - fa, nsq)
        elif fb < fa:
            b = _raise_precision(b, fa - fb, nsq)
        return a, b, max(fa, fb)

    def __add__(self, other: EncryptedNumber | Number) -> EncryptedNumber:
        pk = self.public_key
        if isinstance(other, EncryptedNumber):
            a, b, f = self._aligned(other)
            return self._new(a * b % pk.nsquare, f)
        f = self.precision_bits
        c = self.ciphertext
        if f == 0 and isinstance(other, float | np.floating) and not float(other).is_integer():
            f = DEFAULT_PRECISION_BITS
            c = _raise_precision(c, f, pk.nsquare)
        k = encode(other, pk.n, f)
        n = pk.n
        return self._new((c + n * (k * c % n)) % pk.nsquare, f)  # c·(1 + n·k)

    __radd__ = __add__

    def __neg__(self) -> EncryptedNumber:
        return self._new(gmpy2.invert(self.ciphertext, self.public_key.nsquare))

    def __sub__(self, other: EncryptedNumber | Number) -> EncryptedNumber:
        if isinstance(other, EncryptedNumber):
            return self + (-other)
        return self + (-_to_python_number(other))

    def __rsub__(self, other: Number) -> EncryptedNumber:
        return (-self) + other

    def mul(self, k: Number, precision_bits: int | None = None) -> EncryptedNumber:
        """Enc(m·k) for a plaintext constant; a float k is encoded at `precision_bits`
        (default 40) and the result's precision is the sum of both."""
        fk = _default_precision(k, precision_bits)
        pk = self.public_key
        return self._new(_mul_const(self.ciphertext, encode(k, pk.n, fk), pk), self.precision_bits + fk)

    def __mul__(self, k: Number) -> EncryptedNumber:
        if isinstance(k, EncryptedNumber):
            return NotImplemented
        return self.mul(k)

    __rmul__ = __mul__

    def obfuscate(self, obfuscator: Obfuscator | None = None) -> EncryptedNumber:
        """A re-randomised ciphertext of the same value (do this before sending a result
        computed from someone else's ciphertext)."""
        rn = obfuscator() if obfuscator is not None else self.public_key.obfuscation()
        return self._new(self.ciphertext * rn % self.public_key.nsquare)

    def to_bytes(self) -> bytes:
        return int(self.ciphertext).to_bytes(_ct_width(self.public_key), "big")

    @classmethod
    def from_bytes(cls, public_key: PaillierPublicKey, data: bytes, precision_bits: int = 0) -> EncryptedNumber:
        if len(data) != _ct_width(public_key):
            raise PaillierError(f"ciphertext must be {_ct_width(public_key)} bytes, got {len(data)}")
        return public_key.ciphertext(int.from_bytes(data, "big"), precision_bits)


def _ct_width(pk: PaillierPublicKey) -> int:
    return (int(pk.nsquare.bit_length()) + 7) // 8


def sum_encrypted(items: Iterable[EncryptedNumber]) -> EncryptedNumber:
    """Σ of many ciphertexts (one modular product each; precisions aligned to the largest)."""
    it = list(items)
    if not it:
        raise PaillierError("cannot sum an empty sequence of ciphertexts")
    pk = it[0].public_key
    nsq = pk.nsquare
    f = max(x.precision_bits for x in it)
    acc: mpz | None = None
    for x in it:
        _same_key(pk, x.public_key)
        c = x.ciphertext if x.precision_bits == f else _raise_precision(x.ciphertext, f - x.precision_bits, nsq)
        acc = c if acc is None else acc * c % nsq
    assert acc is not None
    return EncryptedNumber(pk, acc, f)


def _best_window(count: int, bits: int) -> int:
    best, best_cost = 1, math.inf
    for w in range(1, 17):
        cost = -(-bits // w) * (count + 2 * (1 << w)) + bits
        if cost < best_cost:
            best, best_cost = w, cost
    return best


def multi_pow(bases: Sequence[mpz], exponents: Sequence[int], modulus: mpz) -> mpz:
    """∏ bases[i]^exponents[i] mod modulus for non-negative exponents (Pippenger's bucket
    method: shared squarings, ≈ count + 2^(w+1) multiplications per w-bit window)."""
    pairs = [(b, int(e)) for b, e in zip(bases, exponents, strict=True) if e]
    if any(e < 0 for _, e in pairs):
        raise PaillierError("multi_pow needs non-negative exponents")
    if not pairs:
        return mpz(1)
    if len(pairs) < 4:
        acc = mpz(1)
        for b, e in pairs:
            acc = acc * gmpy2.powmod(b, e, modulus) % modulus
        return acc
    bits = max(e.bit_length() for _, e in pairs)
    w = _best_window(len(pairs), bits)
    mask = (1 << w) - 1
    acc_: mpz | None = None
    for j in reversed(range(-(-bits // w))):
        if acc_ is not None:
            for _ in range(w):
                acc_ = acc_ * acc_ % modulus
        buckets: list[mpz | None] = [None] * (mask + 1)
        shift = j * w
        for b, e in pairs:
            d = (e >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = b if cur is None else cur * b % modulus
        running: mpz | None = None
        total: mpz | None = None
        for d in range(mask, 0, -1):
            bd = buckets[d]
            if bd is not None:
                running = bd if running is None else running * bd % modulus
            if running is not None:
                total = running if total is None else total * running % modulus
        if total is not None:
            acc_ = total if acc_ is None else acc_ * total % modulus
    return mpz(1) if acc_ is None else acc_


class EncryptedVector:
    """A 1-D vector of ciphertexts under one key, all at one fixed-point precision.

    Supports + / - with ciphertext vectors, plaintext arrays and scalars, * by plaintext
    arrays (elementwise) and scalars, `dot` / `@` with plaintext vectors and matrices,
    `sum`, `obfuscate` and fixed-width byte serialisation."""

    __slots__ = ("ciphertexts", "precision_bits", "public_key")
    __array_ufunc__ = None

    def __init__(self, public_key: PaillierPublicKey, ciphertexts: list[mpz], precision_bits: int = 0) -> None:
        self.public_key = public_key
        self.ciphertexts = ciphertexts
        self.precision_bits = precision_bits

    def __repr__(self) -> str:
        key = self.public_key.fingerprint()
        return f"EncryptedVector(len={len(self)}, key={key}, precision_bits={self.precision_bits})"

    def __len__(self) -> int:
        return len(self.ciphertexts)

    def __iter__(self) -> Iterator[EncryptedNumber]:
        pk, f = self.public_key, self.precision_bits
        return (EncryptedNumber(pk, c, f) for c in self.ciphertexts)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return EncryptedVector(self.public_key, self.ciphertexts[i], self.precision_bits)
        return EncryptedNumber(self.public_key, self.ciphertexts[i], self.precision_bits)

    def _new(self, cs: list[mpz], f: int | None = None) -> EncryptedVector:
        return EncryptedVector(self.public_key, cs, self.precision_bits if f is None else f)

    def _check_len(self, k: int) -> None:
        if k != len(self):
            raise PaillierError(f"length mismatch: {len(self)} ciphertexts vs {k} values")

    def __add__(self, other: EncryptedVector | npt.ArrayLike | Number) -> EncryptedVector:
        pk = self.public_key
        nsq, n = pk.nsquare, pk.n
        if isinstance(other, EncryptedVector):
            _same_key(pk, other.public_key)
            self._check_len(len(other))
            f = max(self.precision_bits, other.precision_bits)
            a = self.with_precision(f).ciphertexts
            b = other.with_precision(f).ciphertexts
            return self._new([x * y % nsq for x, y in zip(a, b, strict=True)], f)
        arr = np.asarray(other)
        me = self
        if me.precision_bits == 0 and arr.dtype.kind == "f":
            me = me.with_precision(DEFAULT_PRECISION_BITS)
        f = me.precision_bits
        if arr.ndim == 0:
            ks = [encode(arr.item(), n, f)] * len(self)
        else:
            self._check_len(arr.shape[0])
            ks = encode_array(arr, n, f)
        return self._new([(c + n * (k * c % n)) % nsq for c, k in zip(me.ciphertexts, ks, strict=True)], f)

    __radd__ = __add__

    def __neg__(self) -> EncryptedVector:
        nsq = self.public_key.nsquare
        return self._new([gmpy2.invert(c, nsq) for c in self.ciphertexts])

    def __sub__(self, other: EncryptedVector | npt.ArrayLike | Number) -> EncryptedVector:
        if isinstance(other, EncryptedVector):
            return self + (-other)
        return self + (-np.asarray(other))

    def __rsub__(self, other: npt.ArrayLike | Number) -> EncryptedVector:
        return (-self) + other

    def mul(self, k: npt.ArrayLike | Number, precision_bits: int | None = None) -> EncryptedVector:
        """Elementwise Enc(m_i · k_i) (or by one scalar); floats encoded at `precision_bits`."""
        pk = self.public_key
        arr = np.asarray(k)
        fk = (
            precision_bits if precision_bits is not None else (0 if arr.dtype.kind in "iub" else DEFAULT_PRECISION_BITS)
        )
        if arr.ndim == 0:
            kk = encode(arr.item(), pk.n, fk)
            if kk > pk.n >> 1:
                nsq, e = pk.nsquare, pk.n - kk
                return self._new(
                    [gmpy2.powmod(gmpy2.invert(c, nsq), e, nsq) for c in self.ciphertexts], self.precision_bits + fk
                )
            return self._new(_powmod_base_list(self.ciphertexts, kk, pk.nsquare, 1), self.precision_bits + fk)
        self._check_len(arr.shape[0])
        ks = encode_array(arr, pk.n, fk)
        return self._new(
            [_mul_const(c, kk, pk) for c, kk in zip(self.ciphertexts, ks, strict=True)], self.precision_bits + fk
        )

    def __mul__(self, k: npt.ArrayLike | Number) -> EncryptedVector:
        if isinstance(k, EncryptedVector | EncryptedNumber):
            return NotImplemented
        return self.mul(k)

    __rmul__ = __mul__

    def with_precision(self, precision_bits: int) -> EncryptedVector:
        """The same values at a higher precision (Enc(m · 2^d))."""
        d = precision_bits - self.precision_bits
        if d < 0:
            raise PaillierError("cannot lower the precision of ciphertexts")
        if d == 0:
            return self
        return self._new(_powmod_base_list(self.ciphertexts, mpz(1) << d, self.public_key.nsquare, 1), precision_bits)

    def sum(self) -> EncryptedNumber:
        nsq = self.public_key.nsquare
        acc = mpz(1)
        for c in self.ciphertexts:
            acc = acc * c % nsq
        return EncryptedNumber(self.public_key, acc, self.precision_bits)

    def dot(self, plain: npt.ArrayLike, precision_bits: int | None = None) -> Any:
        """Σ_i Enc(m_i)·x_i for a plaintext vector x (→ EncryptedNumber) or a matrix X of
        shape (len, k) (→ EncryptedVector of length k: the encrypted row vector times X).
        Negative entries use the ciphertext inverses; products via `multi_pow`."""
        pk = self.public_key
        n, nsq = pk.n, pk.nsquare
        arr = np.asarray(plain)
        if arr.ndim not in (1, 2) or arr.shape[0] != len(self):
            raise PaillierError(f"dot needs a plaintext of shape ({len(self)},) or ({len(self)}, k), got {arr.shape}")
        fk = (
            precision_bits if precision_bits is not None else (0 if arr.dtype.kind in "iub" else DEFAULT_PRECISION_BITS)
        )
        cols = [arr] if arr.ndim == 1 else [arr[:, j] for j in range(arr.shape[1])]
        half = n >> 1
        inverses: list[mpz] | None = None
        results: list[mpz] = []
        for col in cols:
            ks = encode_array(col, n, fk)
            if inverses is None and any(k > half for k in ks):
                inverses = [gmpy2.invert(c, nsq) for c in self.ciphertexts]
            bases: list[mpz] = []
            exps: list[int] = []
            for i, k in enumerate(ks):
                if k > half:
                    assert inverses is not None
                    bases.append(inverses[i])
                    exps.append(int(n - k))
                elif k:
                    bases.append(self.ciphertexts[i])
                    exps.append(int(k))
            results.append(multi_pow(bases, exps, nsq))
        f = self.precision_bits + fk
        if arr.ndim == 1:
            return EncryptedNumber(pk, results[0], f)
        return EncryptedVector(pk, results, f)

    def __matmul__(self, plain: npt.ArrayLike) -> Any:
        return self.dot(plain)

    def __rmatmul__(self, plain: npt.ArrayLike) -> Any:
        return self.dot(np.asarray(plain).T)

    def obfuscate(self, obfuscator: Obfuscator | None = None) -> EncryptedVector:
        nsq = self.public_key.nsquare
        source = obfuscator if obfuscator is not None else PlainObfuscator(self.public_key)
        rns = source.batch(len(self))
        return self._new([c * r % nsq for c, r in zip(self.ciphertexts, rns, strict=True)])

    def to_bytes(self) -> bytes:
        w = _ct_width(self.public_key)
        return b"".join(int(c).to_bytes(w, "big") for c in self.ciphertexts)

    @classmethod
    def from_bytes(cls, public_key: PaillierPublicKey, data: bytes, precision_bits: int = 0) -> EncryptedVector:
        w = _ct_width(public_key)
        if len(data) % w:
            raise PaillierError(f"ciphertext bytes must be a multiple of {w}, got {len(data)}")
        nsq = public_key.nsquare
        cs = [mpz(int.from_bytes(data[i : i + w], "big")) for i in range(0, len(data), w)]
        if any(not 0 < c < nsq for c in cs):
            raise PaillierError("ciphertext out of range (0, n²): not ciphertexts under this key")
        return cls(public_key, cs, precision_bits)


def encrypt_vector(
    public_key: PaillierPublicKey | PaillierPrivateKey,
    values: npt.ArrayLike,
    precision_bits: int | None = None,
    obfuscator: Obfuscator | None = None,
) -> EncryptedVector:
    """Encrypt a numpy vector (the key holder passes its private key for CRT obfuscation)."""
    return public_key.encrypt_vector(values, precision_bits, obfuscator)


def decrypt_vector(private_key: PaillierPrivateKey, x: EncryptedVector) -> npt.NDArray[np.float64]:
    return private_key.decrypt_vector(x)


def dot(x: EncryptedVector, plain: npt.ArrayLike, precision_bits: int | None = None) -> Any:
    """Encrypted vector · plaintext vector (→ EncryptedNumber) or · matrix (→ EncryptedVector)."""
    return x.dot(plain, precision_bits)


# --------------------------------------------------------------------------- packing


class PackedVector:
    """Ciphertexts of a packed vector; `count` is how many vectors were summed into it."""

    __slots__ = ("ciphertexts", "count", "length", "packer", "public_key")

    def __init__(
        self, public_key: PaillierPublicKey, packer: Packer, ciphertexts: list[mpz], length: int, count: int = 1
    ) -> None:
        self.public_key = public_key
        self.packer = packer
        self.ciphertexts = ciphertexts
        self.length = length
        self.count = count

    def __len__(self) -> int:
        return self.length

    def __add__(self, other: PackedVector) -> PackedVector:
        if not isinstance(other, PackedVector):
            return NotImplemented
        _same_key(self.public_key, other.public_key)
        if other.packer != self.packer or other.length != self.length:
            raise PaillierError("packed vectors differ in layout (packer or length)")
        count = self.count + other.count
        if count > self.packer.max_additions:
            raise PaillierError(
                f"adding would make {count} packed summands, more than max_additions={self.packer.max_additions}: "
                "slots could carry into each other"
            )
        nsq = self.public_key.nsquare
        cs = [a * b % nsq for a, b in zip(self.ciphertexts, other.ciphertexts, strict=True)]
        return PackedVector(self.public_key, self.packer, cs, self.length, count)

    @staticmethod
    def sum(items: Iterable[PackedVector]) -> PackedVector:
        it = list(items)
        if not it:
            raise PaillierError("cannot sum an empty sequence of packed vectors")
        first = it[0]
        count = sum(x.count for x in it)
        if count > first.packer.max_additions:
            raise PaillierError(f"{count} packed summands exceed max_additions={first.packer.max_additions}")
        nsq = first.public_key.nsquare
        acc = list(first.ciphertexts)
        for x in it[1:]:
            _same_key(first.public_key, x.public_key)
            if x.packer != first.packer or x.length != first.length:
                raise PaillierError("packed vectors differ in layout (packer or length)")
            acc = [a * b % nsq for a, b in zip(acc, x.ciphertexts, strict=True)]
        return PackedVector(first.public_key, first.packer, acc, first.length, count)


@dataclass(frozen=True)
class Packer:
    """Slot-wise packing of fixed-point values into one plaintext (speed-up (d)).

    Each slot has `slot_bits` bits: `headroom` = bit length of max_additions - 1 bits of
    carry room on top of `value_bits` = slot_bits - headroom for the value itself. A value v
    (after scaling by 2^precision_bits) must satisfy -2^(value_bits-1) <= v < 2^(value_bits-1);
    it is stored as v + 2^(value_bits-1) >= 0, and after summing `count` packed vectors
    the offset count·2^(value_bits-1) is subtracted per slot on unpack."""

    slot_bits: int
    slots: int
    max_additions: int = 1024
    precision_bits: int = 0

    def __post_init__(self) -> None:
        if self.slots < 1 or self.max_additions < 1:
            raise PaillierError("Packer needs slots >= 1 and max_additions >= 1")
        if self.value_bits < 2:
            raise PaillierError(
                f"slot_bits={self.slot_bits} leaves no room for values after {self.headroom} headroom bits"
            )

    @classmethod
    def for_key(
        cls, public_key: PaillierPublicKey, value_bits: int, max_additions: int = 1024, precision_bits: int = 0
    ) -> Packer:
        """As many slots as fit below n, each value_bits + headroom bits wide."""
        slot_bits = value_bits + (max_additions - 1).bit_length()
        slots = (public_key.bits - 1) // slot_bits
        if slots < 1:
            raise PaillierError("the key is too small for one slot")
        return cls(slot_bits, slots, max_additions, precision_bits)

    @property
    def headroom(self) -> int:
        return (self.max_additions - 1).bit_length()

    @property
    def value_bits(self) -> int:
        return self.slot_bits - self.headroom

    @property
    def offset(self) -> int:
        return 1 << (self.value_bits - 1)

    def check_key(self, public_key: PaillierPublicKey) -> None:
        if self.slot_bits * self.slots > public_key.bits - 1:
            raise PaillierError(
                f"{self.slots} slots of {self.slot_bits} bits do not fit a {public_key.bits}-bit key"
                f" (at most {(public_key.bits - 1) // self.slot_bits} slots)"
            )

    def _scaled(self, values: npt.ArrayLike) -> list[int]:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise EncodingError(f"expected a 1-D array, got shape {arr.shape}")
        f = self.precision_bits
        if arr.dtype.kind in "iub":
            ints = [int(v) << f for v in arr.tolist()]
        else:
            arr = arr.astype(np.float64)
            if not np.all(np.isfinite(arr)):
                raise EncodingError("cannot pack NaN or infinite values")
            ints = [int(v) for v in np.rint(np.ldexp(arr, f)).tolist()]
        off = self.offset
        for v in ints:
            if not -off <= v < off:
                raise EncodingError(
                    f"value {v / (1 << f)} does not fit a slot of {self.value_bits} value bits at precision {f}"
                    f" (|v| < {off / (1 << f)})"
                )
        return ints

    def pack(self, values: npt.ArrayLike) -> list[mpz]:
        """Plaintexts (one per `slots` values); slot i of a plaintext is bits [i·slot_bits, (i+1)·slot_bits)."""
        ints = self._scaled(values)
        off, sb = self.offset, self.slot_bits
        out: list[mpz] = []
        for start in range(0, len(ints), self.slots):
            acc = 0
            for v in reversed(ints[start : start + self.slots]):
                acc = (acc << sb) | (v + off)
            out.append(mpz(acc))
        return out

    def unpack(self, plaintexts: Sequence[int | mpz], length: int, count: int = 1) -> npt.NDArray[Any]:
        """Values of `length` slots from plaintexts that are the sum of `count` packed vectors:
        float64 when precision_bits > 0, else int64 (object ints if a slot is wider than 63 bits)."""
        if count > self.max_additions:
            raise PaillierError(f"count={count} exceeds max_additions={self.max_additions}")
        mask, sb, off = (1 << self.slot_bits) - 1, self.slot_bits, count * self.offset
        vals: list[int] = []
        for pt in plaintexts:
            x = int(pt)
            for _ in range(self.slots):
                if len(vals) == length:
                    break
                vals.append((x & mask) - off)
                x >>= sb
        if len(vals) != length:
            raise PaillierError(f"plaintexts hold {len(vals)} slots, expected {length}")
        if self.precision_bits:
            scale = 1 << self.precision_bits
            return np.array([v / scale for v in vals], dtype=np.float64)
        return np.array(vals, dtype=np.int64 if self.slot_bits <= 63 else object)

    def encrypt(
        self, public_key: PaillierPublicKey, values: npt.ArrayLike, obfuscator: Obfuscator | None = None
    ) -> PackedVector:
        self.check_key(public_key)
        arr = np.asarray(values)
        pts = self.pack(arr)
        source = obfuscator if obfuscator is not None else PlainObfuscator(public_key)
        rns = source.batch(len(pts))
        cs = [public_key._combine(m, r) for m, r in zip(pts, rns, strict=True)]
        return PackedVector(public_key, self, cs, int(arr.shape[0]))

    def decrypt(self, private_key: PaillierPrivateKey, packed: PackedVector, *, threads: int = 1) -> npt.NDArray[Any]:
        if packed.public_key != private_key.public_key:
            raise PaillierError("packed vector is under a different public key")
        if packed.packer != self:
            raise PaillierError("packed vector was made with a different packer")
        pts = private_key.raw_decrypt_many(packed.ciphertexts, threads=threads)
        return self.unpack(pts, packed.length, packed.count)
