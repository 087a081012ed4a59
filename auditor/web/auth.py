"""The dashboard's sign-in: EIP-4361 checks against the deployment and the chain.

A regulator asks for a nonce, signs the EIP-4361 message naming it, and posts message and
signature. `Authenticator.verify` accepts only if, in this order:

1. the message is well-formed EIP-4361 (version 1, EIP-55 address, RFC 3339 times);
2. its nonce was issued here, is unused and unexpired — the nonce is burnt now, whatever
   follows, so every nonce allows exactly one attempt;
3. its domain (and its URI's authority) is the dashboard's configured domain;
4. its chain id is the deployment's;
5. it carries an expiration time that is still in the future, was not issued in the
   future, and any Not Before has passed;
6. the signature recovers to the address in the message;
7. that address holds the AUDITOR role on chain at the current block.

Failures 1-6 are 400/401, a signer without the role 403, an unreachable chain 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pcn.auditor.web.siwe import (
    MAX_CLOCK_SKEW,
    NonceStore,
    Session,
    SessionStore,
    SiweError,
    parse_siwe,
    recover_signer,
)
from pcn.chain.errors import ChainError

log = logging.getLogger("pcn.auditor.web.auth")


@dataclass
class AuthError(Exception):
    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return self.message


class Authenticator:
    def __init__(
        self,
        chain_id: int,
        is_auditor: Callable[[str], bool],
        domain: str | None,
        session_ttl: float,
        nonce_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.chain_id = chain_id
        self.is_auditor = is_auditor
        self.domain = domain
        self.nonces = NonceStore(nonce_ttl, clock=clock)
        self.sessions = SessionStore(session_ttl)
        self.clock = clock

    def expected_domain(self, host: str | None) -> str:
        """The configured domain, else (development) the Host the browser used."""
        return self.domain or (host or "")

    def verify(self, message: str, signature: str, host: str | None = None) -> Session:
        try:
            msg = parse_siwe(message)
        except SiweError as exc:
            raise AuthError(400, "malformed-message", f"not a valid sign-in message: {exc}") from None
        why = self.nonces.consume(msg.nonce)
        if why is not None:
            raise AuthError(401, "bad-nonce", f"{why}: ask for a new sign-in message")
        domain = self.expected_domain(host)
        if msg.domain != domain:
            raise AuthError(401, "wrong-domain", f"the message is for {msg.domain!r}, this dashboard is {domain!r}")
        if urlsplit(msg.uri).netloc != domain:
            raise AuthError(401, "wrong-uri", f"the message's URI {msg.uri!r} is not on {domain!r}")
        if msg.chain_id != self.chain_id:
            raise AuthError(
                401, "wrong-chain", f"the message is for chain {msg.chain_id}, this deployment is chain {self.chain_id}"
            )
        now = self.clock()
        expires = msg.expiration_ts
        if expires is None:
            raise AuthError(401, "no-expiry", "the message must carry an Expiration Time")
        if expires <= now:
            raise AuthError(401, "expired", f"the message expired at {msg.expiration_time}")
        if msg.issued_ts > now + MAX_CLOCK_SKEW:
            raise AuthError(
                401, "issued-in-future", f"the message claims to be issued at {msg.issued_at}, in the future"
            )
        nb = msg.not_before_ts
        if nb is not None and nb > now:
            raise AuthError(401, "not-yet-valid", f"the message is not valid before {msg.not_before}")
        try:
            signer = recover_signer(message, signature)
        except SiweError as exc:
            raise AuthError(401, "bad-signature", str(exc)) from None
        if signer.lower() != msg.address.lower():
            raise AuthError(401, "bad-signature", f"the signature is by {signer}, not by {msg.address}")
        try:
            auditor = self.is_auditor(msg.address)
        except ChainError as exc:
            log.warning("cannot check the auditor role of %s: %s", msg.address, exc)
            raise AuthError(503, "chain-unavailable", "the chain cannot be reached to check the auditor role") from None
        if not auditor:
            raise AuthError(403, "not-auditor", f"{msg.address} does not hold the auditor role on chain")
        session = self.sessions.create(msg.address, now)
        session.issued_at = msg.issued_at
        return session
