"""Sealed boxes to an organisation's X25519 key."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pcn.crypto.sealed import SealedError, open_sealed, seal


def _pair() -> tuple[X25519PrivateKey, bytes]:
    k = X25519PrivateKey.generate()
    return k, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_round_trip_and_every_tamper_is_refused() -> None:
    k, pub = _pair()
    blob = seal(pub, b"the joint mean is 42", b"ctx")
    assert open_sealed(k, blob, b"ctx") == b"the joint mean is 42"
    assert b"joint mean" not in blob
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(SealedError):
            open_sealed(k, bytes(bad), b"ctx")
    with pytest.raises(SealedError):
        open_sealed(k, blob, b"other context")
    with pytest.raises(SealedError):
        open_sealed(_pair()[0], blob, b"ctx")
    with pytest.raises(SealedError):
        open_sealed(k, b"garbage", b"ctx")


def test_two_seals_of_the_same_data_differ() -> None:
    _, pub = _pair()
    assert seal(pub, b"x") != seal(pub, b"x")
