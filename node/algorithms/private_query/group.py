"""The group: X25519 (RFC 7748) through `cryptography`/OpenSSL, no hand-written curve arithmetic.

Everything the protocol needs from Curve25519 is scalar multiplication of x-coordinates,
which is exactly the X25519 function: X25519(s, u) = x([clamp(s)] P) for any P with x(P) = u.
Facts relied on (all standard):

- Clamped scalars are multiples of 8 in [2^254, 2^255). The curve has order 8·L (L prime,
  about 2^252), so multiplying by a clamped scalar kills any small-order component: every
  output lies in the prime-order subgroup, and X25519(s2, X25519(s1, u)) = x([s1·s2] P).
  Hence the blinding commutes: X25519(b, X25519(a, u)) = X25519(a, X25519(b, u)).
- Hash-to-curve is try-and-increment: u = SHA-256(domain | epoch | counter | key) with the
  top bit cleared, the first counter whose u is < p and is the x-coordinate of a curve point
  (u^3 + A u^2 + u a non-zero square mod p). About two tries per key. Only the hashing party
  sees the (data-dependent) number of tries, so it is no side channel towards the peer. The
  map is not indifferentiable from a random oracle onto the group (as RFC 9380's Elligator
  is); as in every X25519 ECDH-PSI, we treat SHA-256 of the key as the random oracle and the
  resulting point as a random curve point.
- Inverse scalars: X25519 only takes clamped scalars, and the inverse of a clamped scalar
  mod L is usually not one. The querier therefore unblinds with two clamped scalars u1, u2
  chosen (deterministically from its secret) so that a·u1·u2 ≡ 1 (mod L): u1 is random and
  clamped, u2 is the representative of (a·u1)^-1 mod L that is ≡ 0 mod 8; about half of the
  u1 give a u2 in the clamped range [2^254, 2^255). Unblinding costs two X25519 calls.
- Received elements are checked to be canonical (u < p) x-coordinates of points on the
  curve, not its twist; an element whose product is the neutral element (a small-order
  input) is rejected (OpenSSL returns all zeros, `cryptography` raises). So a peer cannot
  make a party apply its secret scalar on the twist; Curve25519's twist security (the twist
  has a 2^253-bit prime-order subgroup) is defence in depth, not something the protocol
  needs.

Hardness assumption: (one-more) computational and decisional Diffie-Hellman in the
prime-order subgroup of Curve25519, i.e. the 2HashDH OPRF assumption of Jarecki, Kiayias and
Krawczyk (One-More Gap-DH), with SHA-256 as random oracle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import gmpy2
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from pcn.algorithms.base import ProtocolError

P = 2**255 - 19
A = 486662
L = 2**252 + 27742317777372353535851937790883648493  # order of the prime subgroup
POINT_BYTES = 32
_P_MPZ = gmpy2.mpz(P)
_TOP_BIT_MASK = (1 << 255) - 1
_CLAMP_LOW = 2**254
_CLAMP_HIGH = 2**255

H2C_DOMAIN = b"pcn/pq/hash-to-curve/v1"


def clamp(raw: bytes) -> int:
    """RFC 7748 clamping of 32 bytes, as an integer (little-endian)."""
    if len(raw) != 32:
        raise ValueError("a scalar is 32 bytes")
    k = bytearray(raw)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return int.from_bytes(k, "little")


def is_clamped(s: int) -> bool:
    return s % 8 == 0 and _CLAMP_LOW <= s < _CLAMP_HIGH


def scalar_bytes(s: int) -> bytes:
    if not is_clamped(s):
        raise ValueError("X25519 scalars must be clamped")
    return s.to_bytes(32, "little")


def _on_curve(u: int) -> bool:
    m = gmpy2.mpz(u)
    rhs = (m * m * m + A * m * m + m) % _P_MPZ
    return rhs != 0 and gmpy2.legendre(rhs, _P_MPZ) == 1


def is_valid_point(point: bytes) -> bool:
    """A canonical x-coordinate (< p, so the top bit is clear) of a point on the curve (not
    the twist) that is not the order-2 point u = 0."""
    if len(point) != POINT_BYTES:
        return False
    u = int.from_bytes(point, "little")
    return u < P and _on_curve(u)


def h2c_prefix(epoch: str) -> bytes:
    e = epoch.encode()
    return H2C_DOMAIN + len(e).to_bytes(4, "big") + e


def hash_to_curve(prefix: bytes, key: bytes) -> bytes:
    """The curve point (x-coordinate, 32 bytes little-endian) of a normalised key."""
    for counter in range(256):
        digest = hashlib.sha256(prefix + bytes([counter]) + key).digest()
        u = int.from_bytes(digest, "little") & _TOP_BIT_MASK
        if u < P and _on_curve(u):
            return u.to_bytes(32, "little")
    raise ProtocolError("hash-to-curve found no point in 256 tries")  # probability 2^-256


def unblinding_scalars(a: int, draw: Callable[[int], bytes]) -> tuple[int, int]:
    """Clamped u1, u2 with a·u1·u2 ≡ 1 (mod L); `draw(i)` gives 32 secret bytes per attempt."""
    if not is_clamped(a):
        raise ValueError("the blinding scalar must be clamped")
    l_inv_mod_8 = pow(L, -1, 8)
    for attempt in range(512):
        u1 = clamp(draw(attempt))
        r = pow(a * u1 % L, -1, L)
        u2 = r + ((-r * l_inv_mod_8) % 8) * L
        if is_clamped(u2):
            return u1, u2
    raise ProtocolError("no unblinding scalars found")  # probability about 2^-512


def _exchange(key: X25519PrivateKey, point: bytes, index: int) -> bytes:
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(point))
    except ValueError:  # all-zero output: a small-order input
        raise ProtocolError(f"group element {index} has small order") from None


# -- chunk functions for Protocol.pmap (module-level, picklable arguments) ---------------------


def hash_and_multiply(job: tuple[bytes, bytes, Sequence[str]]) -> bytes:
    """(scalar, hash-to-curve prefix, keys) -> X25519(scalar, H(key)) for each key, concatenated."""
    scalar, prefix, keys = job
    sk = X25519PrivateKey.from_private_bytes(scalar)
    out = bytearray()
    for i, key in enumerate(keys):
        out += _exchange(sk, hash_to_curve(prefix, key.encode()), i)
    return bytes(out)


def multiply(job: tuple[Sequence[bytes], bytes, int]) -> bytes:
    """(scalars, concatenated points, index of the first point) -> every point multiplied by
    every scalar in turn. Each input point is validated first (canonical, on the curve)."""
    scalars, points, first = job
    if len(points) % POINT_BYTES:
        raise ProtocolError(f"{len(points)} bytes is not a whole number of {POINT_BYTES}-byte group elements")
    keys = [X25519PrivateKey.from_private_bytes(s) for s in scalars]
    out = bytearray()
    for off in range(0, len(points), POINT_BYTES):
        point = points[off : off + POINT_BYTES]
        index = first + off // POINT_BYTES
        if not is_valid_point(point):
            raise ProtocolError(f"group element {index} is not a canonical point of Curve25519")
        for sk in keys:
            point = _exchange(sk, point, index)
        out += point
    return bytes(out)
