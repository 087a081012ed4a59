"""Sign-In with Ethereum (EIP-4361) for the regulator's dashboard.

- `siwe_message` builds the exact EIP-4361 text (the dashboard, the CLI helper and the tests
  all sign this one format); `parse_siwe` reads it back, strictly;
- `recover_signer` recovers the account that signed a message (EIP-191 personal_sign);
- `NonceStore`: random, single-use nonces that expire (kept server-side);
- `SessionStore`: random session ids mapped to a server-side session that expires;
- `RateLimiter`: a sliding window per key (the client's IP address).

The checks that tie these together (domain, chain id, nonce, expiry, signature, auditor
role on chain) are in `pcn.auditor.web.auth.Authenticator`.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_checksum_address

STATEMENT = "Sign in to the pcn audit dashboard as a regulator. This is a read-only session and costs no gas."
VERSION = "1"
NONCE_TTL = 300.0  # seconds a nonce stays valid
MAX_CLOCK_SKEW = 60  # seconds an Issued At may lie in the future

_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")
_HEADER = re.compile(
    r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+\-.]*)://)?(?P<domain>[^\s/]+)"
    r" wants you to sign in with your Ethereum account:$"
)
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_FIELDS = (
    ("URI", "uri", True),
    ("Version", "version", True),
    ("Chain ID", "chain_id", True),
    ("Nonce", "nonce", True),
    ("Issued At", "issued_at", True),
    ("Expiration Time", "expiration_time", False),
    ("Not Before", "not_before", False),
    ("Request ID", "request_id", False),
)


class SiweError(ValueError):
    """A message that is not a well-formed EIP-4361 message."""


def iso(ts: float | dt.datetime) -> str:
    """RFC 3339 UTC time with a Z, to the second (as EIP-4361 wants it)."""
    when = ts if isinstance(ts, dt.datetime) else dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, what: str) -> float:
    """An RFC 3339 time as unix seconds; a time without an offset is refused."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise SiweError(f"{what} {text!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise SiweError(f"{what} {text!r} has no time zone")
    return when.timestamp()


def siwe_message(
    domain: str,
    address: str,
    uri: str,
    chain_id: int,
    nonce: str,
    issued_at: float | dt.datetime | str,
    expiration: float | dt.datetime | str | None,
    statement: str | None = STATEMENT,
) -> str:
    """The EIP-4361 message text, byte for byte as the spec's ABNF writes it."""

    def stamp(value: float | dt.datetime | str) -> str:
        return value if isinstance(value, str) else iso(value)

    lines = [f"{domain} wants you to sign in with your Ethereum account:", address, ""]
    if statement:
        lines += [statement, ""]
    else:
        lines.append("")
    lines += [
        f"URI: {uri}",
        f"Version: {VERSION}",
        f"Chain ID: {int(chain_id)}",
        f"Nonce: {nonce}",
        f"Issued At: {stamp(issued_at)}",
    ]
    if expiration is not None:
        lines.append(f"Expiration Time: {stamp(expiration)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    statement: str | None
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: str
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = ()
    scheme: str | None = None

    @property
    def issued_ts(self) -> float:
        return parse_time(self.issued_at, "Issued At")

    @property
    def expiration_ts(self) -> float | None:
        return None if self.expiration_time is None else parse_time(self.expiration_time, "Expiration Time")

    @property
    def not_before_ts(self) -> float | None:
        return None if self.not_before is None else parse_time(self.not_before, "Not Before")


def parse_siwe(text: str) -> SiweMessage:
    """Parse an EIP-4361 message; anything that does not follow the format is refused."""
    if not isinstance(text, str) or len(text) > 4096:
        raise SiweError("the message is missing or too long")
    if "\r" in text:
        raise SiweError("the message must use LF line endings")
    lines = text.split("\n")
    if len(lines) < 8:
        raise SiweError("the message is too short to be an EIP-4361 message")
    head = _HEADER.match(lines[0])
    if head is None:
        raise SiweError("the first line must be '<domain> wants you to sign in with your Ethereum account:'")
    address = lines[1]
    if not _ADDRESS.match(address):
        raise SiweError(f"{address!r} is not an Ethereum address")
    if not is_checksum_address(address):
        raise SiweError(f"{address} is not in EIP-55 checksum form")
    if lines[2] != "":
        raise SiweError("an empty line must follow the address")
    i = 3
    statement: str | None = None
    if lines[i] == "":
        i += 1  # no statement: two empty lines
    else:
        statement = lines[i]
        if "\n" in statement or lines[i + 1] != "":
            raise SiweError("the statement must be one line followed by an empty line")
        i += 2
    values: dict[str, str] = {}
    for label, key, required in _FIELDS:
        prefix = f"{label}: "
        if i < len(lines) and lines[i].startswith(prefix):
            values[key] = lines[i][len(prefix) :]
            i += 1
        elif required:
            raise SiweError(f"line {i + 1} must be '{label}: …'")
    resources: list[str] = []
    if i < len(lines) and lines[i] == "Resources:":
        i += 1
        while i < len(lines) and lines[i].startswith("- "):
            resources.append(lines[i][2:])
            i += 1
    if i != len(lines):
        raise SiweError(f"unexpected text at line {i + 1}: {lines[i][:60]!r}")
    if values["version"] != VERSION:
        raise SiweError(f"version must be {VERSION}, not {values['version']!r}")
    if not values["chain_id"].isdigit():
        raise SiweError(f"chain id {values['chain_id']!r} is not a number")
    if not _NONCE.match(values["nonce"]):
        raise SiweError("the nonce must be at least 8 letters or digits")
    uri = urlsplit(values["uri"])
    if not uri.scheme or not uri.netloc:
        raise SiweError(f"URI {values['uri']!r} is not an absolute URI")
    msg = SiweMessage(
        domain=head["domain"],
        address=address,
        statement=statement,
        uri=values["uri"],
        version=values["version"],
        chain_id=int(values["chain_id"]),
        nonce=values["nonce"],
        issued_at=values["issued_at"],
        expiration_time=values.get("expiration_time"),
        not_before=values.get("not_before"),
        request_id=values.get("request_id"),
        resources=tuple(resources),
        scheme=head["scheme"],
    )
    # the times must parse
    _ = msg.issued_ts, msg.expiration_ts, msg.not_before_ts
    return msg


def recover_signer(message: str, signature: str) -> str:
    """The account whose EIP-191 (personal_sign) signature of `message` this is."""
    sig = signature.strip() if isinstance(signature, str) else ""
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{130}", sig):
        raise SiweError("the signature must be 65 bytes of hex (0x…)")
    try:
        return str(
            Account.recover_message(encode_defunct(text=message), signature=bytes.fromhex(sig.removeprefix("0x")))
        )
    except Exception as exc:  # eth_keys raises several types for invalid (r, s, v)
        raise SiweError(f"the signature is invalid: {exc}") from None


def sign_message(message: str, key: str | bytes) -> str:
    """Sign `message` as personal_sign does (what `pcn audit sign` and the tests use)."""
    signed = Account.sign_message(encode_defunct(text=message), private_key=key)
    return "0x" + bytes(signed.signature).hex()


# ---------------------------------------------------------------------------- server-side state


class NonceStore:
    """Random single-use nonces, each valid for `ttl` seconds."""

    def __init__(self, ttl: float = NONCE_TTL, capacity: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self) -> tuple[str, float]:
        """A fresh nonce and its expiry (unix seconds)."""
        now = self._clock()
        with self._lock:
            self._purge(now)
            if len(self._nonces) >= self.capacity:
                raise OverflowError("too many sign-in attempts are pending; try again in a few minutes")
            nonce = secrets.token_hex(16)
            self._nonces[nonce] = now + self.ttl
            return nonce, now + self.ttl

    def consume(self, nonce: str) -> str | None:
        """Burn `nonce`; None when it was valid, else why it is not."""
        now = self._clock()
        with self._lock:
            expires = self._nonces.pop(nonce, None)
            self._purge(now)
        if expires is None:
            return "the nonce is unknown or was already used"
        if expires < now:
            return "the nonce has expired"
        return None

    def _purge(self, now: float) -> None:
        for n in [n for n, exp in self._nonces.items() if exp < now]:
            del self._nonces[n]

    def __len__(self) -> int:
        return len(self._nonces)


@dataclass
class Session:
    id: str
    address: str
    created: float
    expires: float
    checked: float  # when the auditor role was last confirmed on chain
    issued_at: str = ""


@dataclass
class SessionStore:
    """Server-side sessions keyed by a random id; a session ends at its expiry."""

    ttl: float
    _sessions: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, address: str, now: float | None = None) -> Session:
        t = time.time() if now is None else now
        s = Session(secrets.token_urlsafe(32), address, t, t + self.ttl, t)
        with self._lock:
            self._purge(t)
            self._sessions[s.id] = s
        return s

    def get(self, session_id: str | None, now: float | None = None) -> Session | None:
        if not session_id:
            return None
        t = time.time() if now is None else now
        with self._lock:
            s = self._sessions.get(session_id)
            if s is not None and s.expires <= t:
                del self._sessions[session_id]
                return None
            return s

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _purge(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)


class RateLimiter:
    """At most `limit` hits per `window` seconds per key (a sliding window)."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, now: float | None = None) -> float | None:
        """Count one hit; None when allowed, else the seconds to wait."""
        t = time.time() if now is None else now
        with self._lock:
            if len(self._hits) >= self.max_keys:
                for k in [k for k, q in self._hits.items() if not q or q[-1] <= t - self.window]:
                    del self._hits[k]
            q = self._hits.setdefault(key, deque())
            while q and q[0] <= t - self.window:
                q.popleft()
            if len(q) >= self.limit:
                return max(1.0, q[0] + self.window - t)
            q.append(t)
            return None
