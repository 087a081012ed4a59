"""Signed read requests to a node's mailbox (EIP-191 personal messages).

A task's live progress is answered only to the task's participants and its requester. The
caller signs, with its account key, the text ``request_text(method, path, task_id,
timestamp)`` and sends its address, the timestamp and the signature in the headers
``X-PCN-Signer``, ``X-PCN-Timestamp`` and ``X-PCN-Signature``; the mailbox recovers the
signer (secp256k1 ECDSA via eth-account), refuses unless it is the named address, and
accepts a timestamp within ``WINDOW`` seconds of its own clock.

Assumption: ECDSA over secp256k1 is unforgeable and the signer's key is its own. Leakage: a
captured request can be replayed to any node for the same task and path within the window;
it then returns what the signer itself may read, so it gives an eavesdropper nothing more
than the answer it already saw (run the mailbox behind TLS to hide answers on the wire).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

WINDOW = 60  # seconds a signed request stays valid either side of the mailbox's clock
TIMESTAMP_HEADER = "x-pcn-timestamp"
SIGNATURE_HEADER = "x-pcn-signature"
SIGNER_HEADER = "x-pcn-signer"


class RequestAuthError(Exception):
    """The request is unsigned, expired or its signature is invalid (HTTP 401)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def request_text(method: str, path: str, task_id: int, timestamp: int) -> str:
    """The text a caller signs: every part of the request that selects what it reads."""
    return f"pcn signed request\n{method.upper()}\n{path}\ntask {task_id}\ntimestamp {timestamp}"


def sign_request(
    account: LocalAccount, method: str, path: str, task_id: int, now: float | None = None
) -> dict[str, str]:
    """The headers of a request to ``path`` signed by ``account``."""
    timestamp = int(time.time() if now is None else now)
    signed = account.sign_message(encode_defunct(text=request_text(method, path, task_id, timestamp)))
    return {
        SIGNER_HEADER: str(account.address),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: "0x" + bytes(signed.signature).hex(),
    }


def request_signer(
    headers: Mapping[str, str], method: str, path: str, task_id: int, now: float, window: int = WINDOW
) -> str:
    """The checksummed address that signed the request; :class:`RequestAuthError` otherwise."""
    claimed, stamp, signature = (headers.get(h) for h in (SIGNER_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
    if not claimed or not stamp or not signature:
        raise RequestAuthError(
            "unsigned", f"sign the request: {SIGNER_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required"
        )
    if not stamp.isdigit() or len(stamp) > 12:
        raise RequestAuthError("bad-signature", f"{TIMESTAMP_HEADER} must be a Unix time in seconds")
    timestamp = int(stamp)
    if abs(now - timestamp) > window:
        raise RequestAuthError(
            "expired", f"the request was signed {now - timestamp:.0f} s away from now (window {window} s)"
        )
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
        if len(raw) != 65:
            raise ValueError("length")
        signer = Account.recover_message(
            encode_defunct(text=request_text(method, path, task_id, timestamp)), signature=raw
        )
    except Exception:  # eth-account raises several types for malformed signatures
        raise RequestAuthError("bad-signature", "the signature is not a valid 65-byte secp256k1 signature") from None
    if signer.lower() != claimed.lower():  # a signature over another request recovers another address
        raise RequestAuthError("bad-signature", f"the signature is not {claimed}'s over this request")
    return to_checksum_address(signer)
