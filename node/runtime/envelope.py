"""Sealed, signed envelopes for protocol messages between organisations (DESIGN §4 step 6, §5).

Wire format (binary, big-endian)::

    envelope   = u16(len(header)) ‖ header ‖ signature ‖ ciphertext
    header     = canonical JSON (UTF-8, sorted keys, no whitespace, ASCII only, ≤ 2048 bytes)
                 {"chain_id":int, "eph":hex(32 bytes), "kind":str, "receiver":address,
                  "round":int, "sender":address, "seq":int, "task_id":int,
                  "task_manager":address, "v":1}
                 addresses are EIP-55 checksummed, hex is lower case without 0x
    signature  = 65 bytes r ‖ s ‖ v: the sender's Ethereum key over EIP-191
                 encode_defunct(sha256(DOMAIN ‖ body)), body = u16(len(header)) ‖ header ‖ ciphertext
    ciphertext = ChaCha20-Poly1305(key, nonce = 12 zero bytes, payload, aad = header)
    key        = HKDF-SHA256(X25519(eph, receiver's registered key), salt = DOMAIN, info = header)
    digest     = sha256(body) — what the Inbox compares to tell a duplicate from a replay

The nonce can be fixed because every key is used once: it comes from a fresh ephemeral key.
Sealing is deterministic: the ephemeral key is derived (HMAC-SHA256 keyed by the sender's
private key) from everything else in the header, the receiver's encryption key and the
payload. A resumed worker re-sending a message it had already sent therefore produces the
very same envelope and digest, which the receiver's Inbox acknowledges as a duplicate,
while a different payload under a used sequence number gets a different digest and is
refused as a replay. Equal messages produce equal envelopes; nothing else is revealed.

What is in clear: the header (task, round, kind, sequence number, sender, receiver) and the
payload length. What is bound: the header by the signature, the AEAD's associated data and
the key derivation; the chain id and TaskManager address bind an envelope to one deployment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import is_checksum_address, to_checksum_address

from pcn.algorithms.base import Message
from pcn.chain.types import Organisation, OrgStatus

VERSION = 1
DOMAIN = b"pcn/envelope/v1\x00"
MAX_HEADER_SIZE = 2048
MAX_KIND_LENGTH = 64
# A task's parameters, sealed by its requester to each participant (round 0, seq 0): the
# mailbox takes them only in this form, so no carrier (a relay, a TLS-terminating proxy)
# reads them; their sha256 is on chain.
PARAMS_KIND = "task-params"
MAX_ENVELOPE_SIZE = 16 * 1024 * 1024 + 4096  # default cap of open_envelope (the mailbox passes its own)
SIGNATURE_SIZE = 65
TAG_SIZE = 16
X25519_KEY_SIZE = 32
MAX_UINT256 = 2**256 - 1
MAX_COUNTER = 2**63 - 1

_NONCE = b"\x00" * 12
_LEN = struct.Struct(">H")
_HEADER_KEYS = frozenset(
    {"v", "chain_id", "task_manager", "task_id", "round", "kind", "seq", "sender", "receiver", "eph"}
)


class EnvelopeError(Exception):
    """An envelope cannot be accepted. ``code`` is a short, stable reason for peers and logs."""

    code: ClassVar[str] = "envelope-error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MalformedEnvelope(EnvelopeError):
    """Not an envelope: truncated, oversized, not canonical, or a field of the wrong type."""

    code = "malformed"


class WrongDomain(EnvelopeError):
    """Another format version, chain or TaskManager contract."""

    code = "wrong-domain"


class Misbound(EnvelopeError):
    """Addressed to another organisation."""

    code = "misbound"


class BadSignature(EnvelopeError):
    """The signature does not recover to the sender named in the header."""

    code = "bad-signature"


class SenderNotActive(EnvelopeError):
    """The sender is not an admitted, active organisation on chain."""

    code = "sender-not-active"


class DecryptFailed(EnvelopeError):
    """The ciphertext does not decrypt (tampered, or sealed to another key)."""

    code = "decrypt-failed"


def canonical_header(header: dict[str, Any]) -> bytes:
    """The one byte string a header is signed, authenticated and hashed as."""
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _body(header: bytes, ciphertext: bytes) -> bytes:
    return _LEN.pack(len(header)) + header + ciphertext


def envelope_digest(header: bytes, ciphertext: bytes) -> bytes:
    """sha256 of the framed canonical header and the ciphertext (the signature is left out, so
    a re-encoded but equivalent signature cannot turn a duplicate into a "replay")."""
    return hashlib.sha256(_body(header, ciphertext)).digest()


def _signing_hash(header: bytes, ciphertext: bytes) -> bytes:
    return hashlib.sha256(DOMAIN + _body(header, ciphertext)).digest()


def _derive_key(shared: bytes, header: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=DOMAIN, info=header).derive(shared)


def _raw_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not an address")
    try:
        return str(to_checksum_address(value))
    except (ValueError, TypeError):
        raise ValueError(f"{what} is not an address: {value!r}") from None


def _ephemeral(
    sender: LocalAccount, unsigned_header: bytes, receiver_public: bytes, payload: bytes
) -> X25519PrivateKey:
    secret = bytes(sender.key)
    material = DOMAIN + b"ephemeral\x00" + unsigned_header + receiver_public + hashlib.sha256(payload).digest()
    return X25519PrivateKey.from_private_bytes(hmac.new(secret, material, hashlib.sha256).digest())


def seal(
    msg: Message,
    task_id: int,
    chain_id: int,
    task_manager: str,
    sender: LocalAccount,
    receiver_x25519_public: bytes,
) -> bytes:
    """Encrypt ``msg.payload`` to the receiver's registered X25519 key and sign the envelope.

    ``msg.sender`` must be ``sender``'s address. Raises ValueError on an invalid argument."""
    if _address(msg.sender, "msg.sender") != sender.address:
        raise ValueError(f"msg.sender {msg.sender} is not the signing account {sender.address}")
    receiver_public = bytes(receiver_x25519_public)
    if len(receiver_public) != X25519_KEY_SIZE or receiver_public == b"\x00" * X25519_KEY_SIZE:
        raise ValueError("the receiver's encryption key must be a non-zero 32-byte X25519 public key")
    for name, value, top in (
        ("task_id", task_id, MAX_UINT256),
        ("chain_id", chain_id, MAX_UINT256),
        ("round", msg.round, MAX_COUNTER),
        ("seq", msg.seq, MAX_COUNTER),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ValueError(f"{name} must be an integer in [0, {top}], got {value!r}")
    if not isinstance(msg.kind, str) or not 0 < len(msg.kind) <= MAX_KIND_LENGTH:
        raise ValueError(f"kind must be 1 to {MAX_KIND_LENGTH} characters")
    fields: dict[str, Any] = {
        "v": VERSION,
        "chain_id": chain_id,
        "task_manager": _address(task_manager, "task_manager"),
        "task_id": task_id,
        "round": msg.round,
        "kind": msg.kind,
        "seq": msg.seq,
        "sender": sender.address,
        "receiver": _address(msg.receiver, "msg.receiver"),
    }
    payload = bytes(msg.payload)
    eph = _ephemeral(sender, canonical_header(fields), receiver_public, payload)
    fields["eph"] = _raw_public(eph).hex()
    header = canonical_header(fields)
    if len(header) > MAX_HEADER_SIZE:
        raise ValueError("envelope header too large")
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(receiver_public))
    except ValueError as exc:  # a low-order point: not a usable key
        raise ValueError(f"the receiver's encryption key is not usable: {exc}") from None
    ciphertext = ChaCha20Poly1305(_derive_key(shared, header)).encrypt(_NONCE, payload, header)
    signed = sender.sign_message(encode_defunct(primitive=_signing_hash(header, ciphertext)))
    signature = bytes(signed.signature)
    if len(signature) != SIGNATURE_SIZE:  # pragma: no cover - eth-account always gives 65 bytes
        raise ValueError("unexpected signature length")
    return _LEN.pack(len(header)) + header + signature + ciphertext


def _parse(raw: bytes, max_size: int) -> tuple[bytes, dict[str, Any], bytes, bytes]:
    """Split and strictly validate the envelope's structure; nothing is verified yet."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MalformedEnvelope("envelope must be bytes")
    raw = bytes(raw)
    if len(raw) > max_size:
        raise MalformedEnvelope(f"envelope of {len(raw)} bytes exceeds {max_size}")
    if len(raw) < _LEN.size:
        raise MalformedEnvelope("truncated envelope")
    (hlen,) = _LEN.unpack_from(raw)
    if hlen == 0 or hlen > MAX_HEADER_SIZE:
        raise MalformedEnvelope(f"header length {hlen} out of range")
    end = _LEN.size + hlen
    if len(raw) < end + SIGNATURE_SIZE + TAG_SIZE:
        raise MalformedEnvelope("truncated envelope")
    header = raw[_LEN.size : end]
    signature = raw[end : end + SIGNATURE_SIZE]
    ciphertext = raw[end + SIGNATURE_SIZE :]
    try:
        fields = json.loads(header.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedEnvelope("header is not ASCII JSON") from None
    if not isinstance(fields, dict):
        raise MalformedEnvelope("header is not a JSON object")
    if fields.get("v") != VERSION or isinstance(fields.get("v"), bool):
        raise WrongDomain(f"unsupported envelope version {fields.get('v')!r}")
    if set(fields) != _HEADER_KEYS:
        raise MalformedEnvelope("header fields are not the expected set")
    for name, top in (
        ("chain_id", MAX_UINT256),
        ("task_id", MAX_UINT256),
        ("round", MAX_COUNTER),
        ("seq", MAX_COUNTER),
    ):
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise MalformedEnvelope(f"header field {name} is not an integer in range")
    kind = fields["kind"]
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_KIND_LENGTH:
        raise MalformedEnvelope("header field kind is not a short string")
    for name in ("task_manager", "sender", "receiver"):
        value = fields[name]
        if not isinstance(value, str) or not is_checksum_address(value):
            raise MalformedEnvelope(f"header field {name} is not a checksummed address")
    eph = fields["eph"]
    if not isinstance(eph, str) or len(eph) != 2 * X25519_KEY_SIZE or eph != eph.lower():
        raise MalformedEnvelope("header field eph is not 32 bytes of lower-case hex")
    try:
        bytes.fromhex(eph)
    except ValueError:
        raise MalformedEnvelope("header field eph is not hex") from None
    if canonical_header(fields) != header:
        raise MalformedEnvelope("header is not in canonical form")
    return header, fields, signature, ciphertext


def _check_signature(header: bytes, fields: dict[str, Any], signature: bytes, ciphertext: bytes) -> None:
    sender = fields["sender"]
    try:
        recovered = Account.recover_message(
            encode_defunct(primitive=_signing_hash(header, ciphertext)), signature=signature
        )
    except Exception:  # any failure to recover is a bad signature
        raise BadSignature("signature does not recover") from None
    if recovered != sender:
        raise BadSignature(f"signature is by {recovered}, not by the sender {sender}")


@dataclass(frozen=True)
class Route:
    """What anyone can check of an envelope without the receiver's key: its structure and
    that its sender signed it. A relay routes and meters by it and can read nothing more."""

    task_id: int
    sender: str
    receiver: str
    chain_id: int
    task_manager: str
    size: int


def envelope_route(raw: bytes, *, max_size: int = MAX_ENVELOPE_SIZE) -> Route:
    """The checked route of an envelope (MalformedEnvelope, WrongDomain, BadSignature as
    `open_envelope` raises them); the sender's on-chain status and the payload are the
    receiver's to check."""
    header, fields, signature, ciphertext = _parse(raw, max_size)
    _check_signature(header, fields, signature, ciphertext)
    return Route(
        fields["task_id"], fields["sender"], fields["receiver"], fields["chain_id"], fields["task_manager"], len(raw)
    )


def open_envelope(
    raw: bytes,
    *,
    me: str,
    my_x25519: X25519PrivateKey,
    chain_id: int,
    task_manager: str,
    sender_key: Callable[[str], Organisation],
    max_size: int = MAX_ENVELOPE_SIZE,
) -> tuple[Message, int, bytes]:
    """Verify and decrypt an envelope addressed to ``me``; return (message, task_id, digest).

    Checks, in order: structure and size (:class:`MalformedEnvelope`), version, chain id and
    TaskManager (:class:`WrongDomain`), receiver (:class:`Misbound`), signature
    (:class:`BadSignature`), the sender's on-chain status via ``sender_key``
    (:class:`SenderNotActive`; a LookupError from it means "not admitted"), decryption
    (:class:`DecryptFailed`). Other exceptions of ``sender_key`` (the chain is down)
    propagate. Sequence numbers and replays are the Inbox's business."""
    header, fields, signature, ciphertext = _parse(raw, max_size)
    if fields["chain_id"] != chain_id:
        raise WrongDomain(f"envelope is for chain {fields['chain_id']}, this is chain {chain_id}")
    if fields["task_manager"] != to_checksum_address(task_manager):
        raise WrongDomain(f"envelope is for TaskManager {fields['task_manager']}")
    if fields["receiver"] != to_checksum_address(me):
        raise Misbound(f"envelope is addressed to {fields['receiver']}")
    sender = fields["sender"]
    _check_signature(header, fields, signature, ciphertext)
    try:
        org = sender_key(sender)
    except LookupError:
        raise SenderNotActive(f"{sender} is not an admitted organisation") from None
    if org.status != OrgStatus.ACTIVE:
        raise SenderNotActive(f"{sender} is {OrgStatus(org.status).name.lower()}, not active")
    try:
        shared = my_x25519.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(fields["eph"])))
        payload = ChaCha20Poly1305(_derive_key(shared, header)).decrypt(_NONCE, ciphertext, header)
    except (InvalidTag, ValueError):
        raise DecryptFailed("ciphertext does not decrypt with this organisation's key") from None
    msg = Message(sender, fields["receiver"], fields["round"], fields["kind"], payload, fields["seq"])
    return msg, fields["task_id"], envelope_digest(header, ciphertext)
