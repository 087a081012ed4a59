"""The group: X25519 (RFC 7748) through `cryptography`/OpenSSL, no hand-written curve arithmetic.

Everything the protocol needs from Curve25519 is scalar multiplication of x-coordinates,
which is exactly the X25519 function: X25519(s, u) = x([clamp(s)] P) for any P with x(P) = u.
Facts relied on (all standard):

- Clamped scalars are multiples of 8 in [2^254, 2^255). The curve has order 8·L (L prime,
  about 2^252), so multiplying by a clamped scalar kills any small-order component: every
  output lies in the prime-order subgroup, and X25519(s2, X25519(s1, u)) = x([s1·s2] P).
  Hence the blinding commutes: X25519(b, X25519(a, u)) = X25519(a, X25519(b, u)).
- Hash-to-curve is RFC 9380 `curve25519_XMD:SHA-512_ELL2_RO_`, shared with PSI
  (`pcn.crypto.curve25519`), under the DST "pcn/pq/hash-to-curve/v2-with-<suite>/" | u32
  len(epoch) | epoch: a point of the prime-order subgroup, indifferentiable from a random
  oracle onto the group with SHA-512 as random oracle. (v1 was SHA-256 try-and-increment:
  also on the curve only, but a second way of doing the same thing, and not a random oracle
  onto the group.) Only the hashing party runs it, so its variable time is no side channel
  towards the peer.
- Inverse scalars: X25519 only takes clamped scalars, and the inverse of a clamped scalar
  mod L is usually not one. The querier therefore unblinds with two clamped scalars u1, u2
  chosen (deterministically from its secret) so that a·u1·u2 ≡ 1 (mod L): u1 is random and
  clamped, u2 is the representative of (a·u1)^-1 mod L that is ≡ 0 mod 8; about half of the
  u1 give a u2 in the clamped range [2^254, 2^255). Unblinding costs two X25519 calls.
- Received elements are checked to be canonical (u < p) x-coordinates of points on the
  curve, not its twist, and not of small order (`pcn.crypto.curve25519.u_coordinate_error`);
  an element whose product is still the neutral element is rejected too (OpenSSL returns
  all zeros, `cryptography` raises). So a peer cannot make a party apply its secret scalar
  on the twist; Curve25519's twist security (the twist has a 2^253-bit prime-order
  subgroup) is defence in depth, not something the protocol needs.

Hardness assumption: (one-more) computational and decisional Diffie-Hellman in the
prime-order subgroup of Curve25519, i.e. the 2HashDH OPRF assumption of Jarecki, Kiayias and
Krawczyk (One-More Gap-DH), with SHA-512 as random oracle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from pcn.algorithms.base import ProtocolError
from pcn.crypto.curve25519 import L, hash_dst, hash_many, u_coordinate_error
from pcn.crypto.curve25519 import P as P  # re-exported: the group's field and hash
from pcn.crypto.curve25519 import hash_to_curve as hash_to_curve

POINT_BYTES = 32
_CLAMP_LOW = 2**254
_CLAMP_HIGH = 2**255

H2C_DOMAIN = b"pcn/pq/hash-to-curve/v2"  # v2: RFC 9380, shared with PSI (#13.1)


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


def is_valid_point(point: bytes) -> bool:
    """A canonical u-coordinate of a point of the curve (not the twist), not of small order."""
    return u_coordinate_error(point) is None


def h2c_prefix(epoch: str) -> bytes:
    """The hash-to-curve DST of an epoch."""
    e = epoch.encode()
    return hash_dst(H2C_DOMAIN, len(e).to_bytes(4, "big") + e)


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
    """(scalar, hash-to-curve DST, keys) -> X25519(scalar, H(key)) for each key, concatenated."""
    scalar, dst, keys = job
    sk = X25519PrivateKey.from_private_bytes(scalar)
    out = bytearray()
    for i, point in enumerate(hash_many(dst, [key.encode() for key in keys])):
        out += _exchange(sk, point, i)
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
        why = u_coordinate_error(point)
        if why is not None:
            raise ProtocolError(f"group element {index} is not a canonical point of Curve25519: {why}")
        for sk in keys:
            point = _exchange(sk, point, index)
        out += point
    return bytes(out)
