"""Sealed boxes: data encrypted to an organisation's registered X25519 key, so that only
the holder of the matching private key can read it (results at rest, results in transit
to a recipient). Ephemeral X25519 → HKDF-SHA256 → ChaCha20-Poly1305; the ephemeral public
key, the recipient key and the caller's context are bound as associated data."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MAGIC = b"pcn-sealed/1"
_NONCE = b"\x00" * 12  # each key encrypts exactly one message


class SealedError(ValueError):
    """The sealed data is malformed, for another key, or was modified."""


def _key(shared: bytes, eph: bytes, recipient: bytes, context: bytes) -> bytes:
    info = MAGIC + eph + recipient + len(context).to_bytes(4, "big") + context
    return HKDF(hashes.SHA256(), 32, salt=MAGIC, info=info).derive(shared)


def seal(recipient_public: bytes, plaintext: bytes, context: bytes = b"") -> bytes:
    eph = X25519PrivateKey.from_private_bytes(os.urandom(32))
    eph_pub = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    key = _key(shared, eph_pub, recipient_public, context)
    return MAGIC + eph_pub + ChaCha20Poly1305(key).encrypt(_NONCE, plaintext, context)


def open_sealed(private: X25519PrivateKey, blob: bytes, context: bytes = b"") -> bytes:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 32 + 16:
        raise SealedError("not a pcn sealed box")
    eph_pub = blob[len(MAGIC) : len(MAGIC) + 32]
    mine = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        return ChaCha20Poly1305(_key(shared, eph_pub, mine, context)).decrypt(_NONCE, blob[len(MAGIC) + 32 :], context)
    except (InvalidTag, ValueError) as exc:
        raise SealedError("cannot open: sealed to another key, for another context, or modified") from exc
