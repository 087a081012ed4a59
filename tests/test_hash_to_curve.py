"""RFC 9380 hashing to Curve25519 and the checks on received u-coordinates (issue #13.1)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from pcn.crypto import curve25519
from pcn.crypto.curve25519 import (
    SMALL_ORDER_U,
    A,
    L,
    P,
    expand_message_xmd,
    first_invalid_u,
    hash_dst,
    hash_many,
    hash_to_curve,
    hash_to_field,
    map_to_curve,
    u_coordinate_error,
)

# RFC 9380 appendix J.4.1 (curve25519_XMD:SHA-512_ELL2_RO_) and K.3 (expand_message_xmd, SHA-512)
RFC_DST = b"QUUX-V01-CS02-with-curve25519_XMD:SHA-512_ELL2_RO_"
RFC_P_X = {
    b"": 0x2DE3780ABB67E861289F5749D16D3E217FFA722192D16BBD9D1BFB9D112B98C0,
    b"abc": 0x2B4419F1F2D48F5872DE692B0ACA72CC7B0A60915DD70BDE432E826B6ABC526D,
    b"abcdef0123456789": 0x68CA1EA5A6ACF4E9956DAA101709B1EEE6C1BB0DF1DE3B90D4602382A104C036,
}
RFC_EMPTY_U = (
    0x005FE8A7B8FEF0A16C105E6CADF5A6740B3365E18692A9C05BFBB4D97F645A6A,
    0x1347EDBEC6A2B5D8C02E058819819BEE177077C9D10A4CE165AAB0FD0252261A,
)
RFC_EMPTY_Q = (
    (
        0x36B4DF0C864C64707CBF6CF36E9EE2C09A6CB93B28313C169BE29561BB904F98,
        0x6CD59D664FB58C66C892883CD0EB792E52055284DAC3907DD756B45D15C3983D,
    ),
    (
        0x3FA114783A505C0B2B2FBEEF0102853C0B494E7757F2A089D0DAAE7ED9A0DB2B,
        0x76C0FE7FEC932AAAFB8EEFB42D9CBB32EB931158F469FF3050AF15CFDBBEFF94,
    ),
)
EXPANDER_DST = b"QUUX-V01-CS02-with-expander"


def legendre(x: int) -> int:
    r = pow(x % P, (P - 1) // 2, P)
    return -1 if r == P - 1 else r


def on_twist(u: bytes) -> bool:
    x = int.from_bytes(u, "little")
    return legendre(x * x * x + A * x * x + x) == -1


def blind(key: bytes, u: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(key).exchange(X25519PublicKey.from_public_bytes(u))


def ladder(k: int, u: int) -> int | None:
    """x([k] P) by the Montgomery ladder of RFC 7748 without clamping; None for the identity."""
    x2, z2, x3, z3 = 1, 0, u, 1
    for t in reversed(range(k.bit_length())):
        bit = (k >> t) & 1
        if bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        a, b, c, d = x2 + z2, x2 - z2, x3 + z3, x3 - z3
        aa, bb, da, cb = a * a, b * b, d * a, c * b
        e = aa - bb
        x3, z3 = (da + cb) ** 2 % P, u * (da - cb) ** 2 % P
        x2, z2 = aa * bb % P, e * (aa + 121665 * e) % P
        if bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
    return None if z2 % P == 0 else x2 * pow(z2, -1, P) % P


def old_v1_hash(prefix: bytes, ident: bytes) -> bytes:
    """The PSI hash before #13.1: SHA-256 with the top bit cleared, read as a u-coordinate."""
    d = hashlib.sha256(prefix + ident).digest()
    return d[:31] + bytes((d[31] & 0x7F,))


# -- the standard -------------------------------------------------------------------------


def test_expand_message_xmd_sha512_vectors() -> None:
    assert (
        expand_message_xmd(b"abc", EXPANDER_DST, 32).hex()
        == "0eeda81f69376c80c0f8986496f22f21124cb3c562cf1dc608d2c13005553b0f"
    )
    assert expand_message_xmd(b"", EXPANDER_DST, 128).hex() == (
        "0687ce02eba5eb3faf1c3c539d1f04babd3c0f420edae244eeb2253b6c6d6865145c31458e824b4e87ca61c3442dc7c8"
        "c9872b0b7250aa33e0668ccebbd2b386de658ca11a1dcceb51368721ae6dcd2d4bc86eaebc4e0d11fa02ad053289c9b2"
        "8a03da6c942b2e12c14e88dbde3b0ba619d6214f47212b628f3e1b537b66efcf"
    )


def test_rfc9380_curve25519_ro_vectors() -> None:
    assert tuple(hash_to_field(b"", RFC_DST, 2)) == RFC_EMPTY_U
    for u, (qx, qy) in zip(RFC_EMPTY_U, RFC_EMPTY_Q, strict=True):
        xn, xd, y = map_to_curve(u)
        assert (xn * pow(xd, -1, P) % P, y) == (qx, qy)
    outputs = hash_many(RFC_DST, list(RFC_P_X))
    for (msg, px), out in zip(RFC_P_X.items(), outputs, strict=True):
        assert out == px.to_bytes(32, "little") == hash_to_curve(RFC_DST, msg)


def test_an_oversized_dst_is_hashed_first() -> None:
    long_dst = b"d" * 300
    short = hashlib.sha512(b"H2C-OVERSIZE-DST-" + long_dst).digest()
    assert expand_message_xmd(b"m", long_dst, 96) == expand_message_xmd(b"m", short, 96)
    assert hash_to_curve(long_dst, b"m") == hash_to_curve(short, b"m")


# -- the twist-bit attack (#13.1) -------------------------------------------------------------


def test_twist_bit_attack_old_hash_leaks_new_hash_does_not() -> None:
    """A peer sees X25519(k, H(x)); one Legendre symbol says whether H(x) was on the twist."""
    key = hashlib.sha256(b"a party's per-task key").digest()
    ids = [f"customer-{i}".encode() for i in range(400)]
    old = [on_twist(blind(key, old_v1_hash(b"pcn/psi/v1" + bytes(32), x))) for x in ids]
    assert 140 < sum(old) < 260  # about half: one bit of H(x) per element and task
    dst = hash_dst(b"pcn/psi/v2", bytes(32))
    hashed = hash_many(dst, ids)
    assert not any(on_twist(h) for h in hashed)
    assert not any(on_twist(blind(key, h)) for h in hashed)


def test_outputs_are_in_the_prime_order_subgroup() -> None:
    for h in hash_many(b"subgroup", [str(i).encode() for i in range(8)]):
        u = int.from_bytes(h, "little")
        assert u_coordinate_error(h) is None
        assert ladder(L, u) is None  # [L] H(x) is the identity
        assert ladder(8, u) is not None  # and H(x) is not of small order


def test_deterministic_and_domain_separated() -> None:
    ids = [b"alice", b"bob", b""]
    first = hash_many(hash_dst(b"pcn/psi/v2", bytes(32)), ids)
    assert first == hash_many(hash_dst(b"pcn/psi/v2", bytes(32)), ids)
    assert first == [hash_to_curve(hash_dst(b"pcn/psi/v2", bytes(32)), x) for x in ids]
    assert len(set(first)) == 3 and hash_many(b"any", []) == []
    other_task = hash_many(hash_dst(b"pcn/psi/v2", b"\x01" + bytes(31)), ids)
    private_query = hash_many(hash_dst(b"pcn/pq/hash-to-curve/v2", bytes(32)), ids)
    assert not set(first) & set(other_task) and not set(first) & set(private_query)


# -- received u-coordinates -------------------------------------------------------------------


def test_every_listed_small_order_u_is_on_the_curve_and_killed_by_x25519() -> None:
    key = hashlib.sha256(b"k").digest()
    for u in SMALL_ORDER_U:
        assert u == 0 or ladder(8, u) is None  # order divides 8
        with pytest.raises(ValueError):  # X25519 gives the all-zero output
            blind(key, u.to_bytes(32, "little"))


def test_twist_small_order_and_unreduced_u_are_refused() -> None:
    twist = next(u for u in range(2, 100) if legendre(u**3 + A * u * u + u) == -1)
    good = hash_to_curve(b"t", b"x")
    cases = {
        twist.to_bytes(32, "little"): "twist",
        (P - 1).to_bytes(32, "little"): "small order",
        (1).to_bytes(32, "little"): "small order",
        (P).to_bytes(32, "little"): "u >= 2^255 - 19",
        (P + 1).to_bytes(32, "little"): "u >= 2^255 - 19",
        (2**256 - 1).to_bytes(32, "little"): "u >= 2^255 - 19",
        good[:31]: "31 bytes",
    }
    for point, reason in cases.items():
        error = u_coordinate_error(point)
        assert error is not None and reason in error
    assert u_coordinate_error(good) is None
    assert u_coordinate_error(blind(hashlib.sha256(b"k").digest(), good)) is None
    assert first_invalid_u(good * 3 + twist.to_bytes(32, "little") + good) == (
        3,
        curve25519.u_coordinate_error(twist.to_bytes(32, "little")),
    )
    assert first_invalid_u(good * 4) is None
