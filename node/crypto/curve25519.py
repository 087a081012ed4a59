"""Curve25519 hashing and checking of X25519 u-coordinates, shared by PSI and private query.

Hash to curve: RFC 9380 suite `curve25519_XMD:SHA-512_ELL2_RO_` (expand_message_xmd with
SHA-512, hash_to_field with count 2 and L = 48, the Elligator 2 map of section 6.7.1 with
Z = 2, the sum of the two points, clear_cofactor by h_eff = 8). The output is the
u-coordinate (32 bytes, little-endian as in RFC 7748) of a point of the prime-order subgroup
of Curve25519, never of its twist, so a blinded element X25519(k, H(x)) reveals nothing about
H(x) through which curve it lies on. Assumption (RFC 9380 section 10.1): the encoding is
indifferentiable from a random oracle onto the group when SHA-512 is modelled as a random
oracle; the map is computed in variable time, but only the hashing party runs it, on its own
IDs, so timing is no channel towards a peer.

Field arithmetic is gmpy2 (affine, a few inversions and two square roots per ID); scalar
multiplication stays OpenSSL's X25519 through `cryptography`, it is not done here.

Receipt checks: a u-coordinate received from a peer must be canonical (u < p; the top bit is
then clear), on the curve (u^3 + A u^2 + u a square mod p; points of the twist are refused)
and not of small order (u not one of 0, 1, p - 1 and the two order-8 u-coordinates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import gmpy2

P = 2**255 - 19
A = 486662
L = 2**252 + 27742317777372353535851937790883648493  # order of the prime subgroup
U_BYTES = 32
SUITE_ID = b"curve25519_XMD:SHA-512_ELL2_RO_"

_P = gmpy2.mpz(P)
_A = gmpy2.mpz(A)
_FIELD_BYTES = 48  # L = ceil((ceil(log2(p)) + k) / 8) with k = 128
_C4 = gmpy2.mpz((P - 5) // 8)
_C2 = gmpy2.powmod(2, (P + 3) // 8, _P)
_SQRT_M1 = gmpy2.powmod(2, (P - 1) // 4, _P)  # a square root of -1 (p = 5 mod 8)
_BLOCK = 128  # SHA-512 input block size, s_in_bytes
_MAX_DST = 255
_ZERO_BLOCK = hashlib.sha512(bytes(_BLOCK))

# Every u-coordinate of a point of order 1, 2, 4 or 8 on Curve25519 (the identity has no
# u-coordinate; X25519 encodes it as 0).
SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        P - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


def hash_dst(tag: bytes, context: bytes) -> bytes:
    """A domain separation tag naming the application, this suite and a context (RFC 9380
    section 3.1); tags over 255 bytes are hashed by `expand_message_xmd`."""
    return tag + b"-with-" + SUITE_ID + b"/" + context


def _dst_prime(dst: bytes) -> bytes:
    """DST_prime = DST | I2OSP(len(DST), 1); a DST over 255 bytes is first hashed (5.3.3)."""
    if len(dst) > _MAX_DST:
        dst = hashlib.sha512(b"H2C-OVERSIZE-DST-" + dst).digest()
    return dst + bytes((len(dst),))


def _expand(msg: bytes, dst_prime: bytes, length: int) -> bytes:
    ell = -(-length // 64)
    if ell > 255 or length > 65535:
        raise ValueError("expand_message_xmd: output too long")
    h = _ZERO_BLOCK.copy()  # Z_pad absorbed once per process
    h.update(msg + length.to_bytes(2, "big") + b"\x00" + dst_prime)
    b0 = h.digest()
    b0_int = int.from_bytes(b0, "big")
    blocks = [hashlib.sha512(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        chained = (b0_int ^ int.from_bytes(blocks[-1], "big")).to_bytes(64, "big")
        blocks.append(hashlib.sha512(chained + bytes((i,)) + dst_prime).digest())
    return b"".join(blocks)[:length]


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 section 5.3.1 with SHA-512."""
    return _expand(msg, _dst_prime(dst), length)


def _to_field(uniform: bytes, count: int) -> list[gmpy2.mpz]:
    return [
        gmpy2.mpz(int.from_bytes(uniform[i * _FIELD_BYTES : (i + 1) * _FIELD_BYTES], "big") % P) for i in range(count)
    ]


def hash_to_field(msg: bytes, dst: bytes, count: int) -> list[int]:
    """RFC 9380 section 5.2 for GF(p), m = 1."""
    return [int(u) for u in _to_field(expand_message_xmd(msg, dst, count * _FIELD_BYTES), count)]


def map_to_curve(u: int | gmpy2.mpz) -> tuple[gmpy2.mpz, gmpy2.mpz, gmpy2.mpz]:
    """Elligator 2 for Curve25519 (RFC 9380 section 6.7.1, straight-line as in appendix
    G.2.1: one exponentiation, no inversion): (xn, xd, y), the point (xn / xd, y)."""
    m = gmpy2.mpz(u)
    tv1 = 2 * m * m % _P
    xd = tv1 + 1  # non-zero: -1 is a square mod p and 2 u^2 is not
    x1n = -_A
    tv2 = xd * xd % _P
    gxd = tv2 * xd % _P
    gx1 = (_A * tv1 * x1n + tv2) * x1n % _P
    tv3 = gxd * gxd % _P
    tv2 = tv3 * tv3 % _P
    tv3 = tv3 * gxd * gx1 % _P
    y11 = gmpy2.powmod(tv2 * tv3 % _P, _C4, _P) * tv3 % _P
    if y11 * y11 * gxd % _P == gx1:  # g(x1) is a square, y11 its root
        xn, y = x1n % _P, y11
    elif (y11 * _SQRT_M1) ** 2 * gxd % _P == gx1:
        xn, y = x1n % _P, y11 * _SQRT_M1 % _P
    else:  # x2 = 2 u^2 x1, g(x2) = 2 u^2 g(x1)
        y21 = y11 * m * _C2 % _P
        gx2 = gx1 * tv1 % _P
        xn = x1n * tv1 % _P
        y = y21 if y21 * y21 * gxd % _P == gx2 else y21 * _SQRT_M1 % _P
        if y % 2 == 1:  # sgn0(y) = 0 on this branch
            y = _P - y
        return xn, xd, y
    if y % 2 == 0:  # sgn0(y) = 1 on this branch
        y = (_P - y) % _P
    return xn, xd, y


def _invert_all(values: list[gmpy2.mpz]) -> list[gmpy2.mpz]:
    """Inverses mod p of non-zero values with one inversion (Montgomery's trick)."""
    prefix = [gmpy2.mpz(1)]
    for v in values:
        prefix.append(prefix[-1] * v % _P)
    inv = gmpy2.invert(prefix[-1], _P)
    out = [gmpy2.mpz(0)] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % _P
        inv = inv * values[i] % _P
    return out


def _double(x: gmpy2.mpz, z: gmpy2.mpz) -> tuple[gmpy2.mpz, gmpy2.mpz]:
    """x-only doubling in projective (X : Z); the identity is (1 : 0)."""
    xx, zz, xz = x * x, z * z, x * z
    return (xx - zz) ** 2 % _P, 4 * xz * (xx + _A * xz + zz) % _P


def hash_many(dst: bytes, msgs: Sequence[bytes]) -> list[bytes]:
    """hash_to_curve of each message: the u-coordinate of 8 * (map(u0) + map(u1)), 32 bytes
    little-endian; all zeros (which X25519 refuses) for the identity (probability ~2^-250).
    Everything stays projective; the batch shares one field inversion."""
    projective = []
    dst_prime = _dst_prime(dst)
    for msg in msgs:
        u0, u1 = _to_field(_expand(msg, dst_prime, 2 * _FIELD_BYTES), 2)
        n0, d0, y0 = map_to_curve(u0)
        n1, d1, y1 = map_to_curve(u1)
        diff = (n1 * d0 - n0 * d1) % _P  # (x1 - x0) d0 d1
        if diff:  # R = Q0 + Q1 by the chord: x(R) = slope^2 - A - x0 - x1
            dd = d0 * d1 % _P
            slope_n = (y1 - y0) * dd % _P  # slope = slope_n / diff
            diff2 = diff * diff % _P
            x, z = (slope_n * slope_n * dd - (_A * dd + n0 * d1 + n1 * d0) * diff2) % _P, diff2 * dd % _P
            doublings = 3
        elif (y0 + y1) % _P:  # Q1 = Q0: 8 * R = 16 * Q0
            x, z, doublings = n0, d0, 4
        else:  # Q1 = -Q0: R is the identity
            x, z, doublings = gmpy2.mpz(1), gmpy2.mpz(0), 0
        for _ in range(doublings):  # clear_cofactor: h_eff = 8
            x, z = _double(x, z)
        projective.append((x, z))
    inverses = _invert_all([z or gmpy2.mpz(1) for _, z in projective])
    return [
        (int(x * inv % _P) if z else 0).to_bytes(U_BYTES, "little")
        for (x, z), inv in zip(projective, inverses, strict=True)
    ]


def hash_to_curve(dst: bytes, msg: bytes) -> bytes:
    """H(msg) under `dst` as an X25519 u-coordinate (see `hash_many`)."""
    return hash_many(dst, [msg])[0]


def u_coordinate_error(point: bytes) -> str | None:
    """Why `point` is not an acceptable u-coordinate from a peer, or None if it is."""
    if len(point) != U_BYTES:
        return f"{len(point)} bytes, not {U_BYTES}"
    u = int.from_bytes(point, "little")
    if u >= P:
        return "not a canonical u-coordinate (u >= 2^255 - 19)"
    if u in SMALL_ORDER_U:
        return "a point of small order"
    m = gmpy2.mpz(u)
    if gmpy2.legendre(m * (m * (m + _A) + 1) % _P, _P) != 1:
        return "a point of the twist, not of Curve25519"
    return None


def is_valid_u(point: bytes) -> bool:
    return u_coordinate_error(point) is None


def first_invalid_u(packed: bytes) -> tuple[int, str] | None:
    """(index, reason) of the first unacceptable 32-byte u-coordinate in `packed`, or None."""
    for i in range(0, len(packed), U_BYTES):
        reason = u_coordinate_error(packed[i : i + U_BYTES])
        if reason is not None:
            return i // U_BYTES, reason
    return None
