"""The dashboard's state, one per app (`app.state.dashboard`): the store and its read models,
sign-in and sessions, rate limits, the live indexer, and how a request's client is told apart.

Routers reach it through the dependencies of `pcn.auditor.web.deps`, never through globals.

Behind a reverse proxy, sign-in rate limits and nonce limits would key on the proxy's
address (one client locks everyone out) unless the proxy is named: `trusted_proxies` (CIDRs;
`pcn audit serve --trusted-proxy` / $PCN_AUDITOR_TRUSTED_PROXIES). Only a request whose peer
is such a proxy has its X-Forwarded-For read, and then the rightmost hop that is not a
trusted proxy is the client (hops to its left are the client's own claims). The same proxy's
X-Forwarded-Proto: https marks the session cookie Secure, as does `secure_cookies=True`.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pcn.auditor.store import Store
from pcn.auditor.web.auth import Authenticator
from pcn.auditor.web.live import LiveAuditor
from pcn.auditor.web.siwe import RateLimiter, Session
from pcn.auditor.web.views import Views
from pcn.chain.errors import ChainError
from pcn.chain.ledger import Ledger

log = logging.getLogger("pcn.auditor.web")

COOKIE = "pcn_audit_session"
TRUSTED_PROXIES_ENV = "PCN_AUDITOR_TRUSTED_PROXIES"
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted_proxies(values: Iterable[str]) -> tuple[IpNetwork, ...]:
    """CIDRs (or single addresses), each value possibly a comma- or space-separated list."""
    networks = []
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"trusted proxy {part!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _ip(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class ClientAddress:
    """The address rate limits key on, and whether the browser used https, honouring
    X-Forwarded-For/-Proto only from a trusted proxy."""

    def __init__(self, trusted: tuple[IpNetwork, ...]) -> None:
        self.trusted = trusted

    def _is_trusted(self, ip: IpAddress | None) -> bool:
        return ip is not None and any(ip in network for network in self.trusted)

    def via_proxy(self, request: Request) -> bool:
        return request.client is not None and self._is_trusted(_ip(request.client.host))

    def __call__(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        if not self.via_proxy(request):
            return peer  # a client's own X-Forwarded-For is never believed
        hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
        hops = [hop for hop in hops if hop]
        for hop in reversed(hops):  # the proxies append on the right; the left is the client's claim
            ip = _ip(hop)
            if ip is None:
                return peer  # malformed: never key on text a client chose
            if not self._is_trusted(ip):
                return str(ip)
        first = _ip(hops[0]) if hops else None
        return str(first) if first is not None else peer

    def https(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        if not self.via_proxy(request):
            return False
        proto = request.headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
        return proto == "https"


class Dashboard:
    """Everything the routes of one dashboard app share (see `create_dashboard_app` for the settings)."""

    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        *,
        session_ttl: float,
        domain: str | None,
        live: LiveAuditor,
        login_limit: int,
        login_window: float,
        nonce_limit: int,
        nonce_ttl: float,
        role_recheck: float,
        secure_cookies: bool | None,
        trusted_proxies: Iterable[str],
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.views = Views(store)
        self.auth = Authenticator(ledger.chain_id, ledger.is_auditor, domain, session_ttl, nonce_ttl)
        self.domain = domain
        self.session_ttl = session_ttl
        self.live = live
        self.login_limiter = RateLimiter(login_limit, login_window)
        self.nonce_limiter = RateLimiter(nonce_limit, login_window)
        self.role_recheck = role_recheck
        self.secure_cookies = secure_cookies
        self.client = ClientAddress(parse_trusted_proxies(trusted_proxies))
        self._head_block: int | None = None
        self._head_read_at = 0.0
        self._head_lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        """The store's index position and counters, with the chain head (read at most every 1.5 s)."""
        info = self.views.status()
        now = time.monotonic()
        with self._head_lock:
            if now - self._head_read_at > 1.5:
                try:
                    self._head_block = self.ledger.head_block()
                except ChainError:
                    self._head_block = None
                self._head_read_at = now
            info["head_block"] = self._head_block
        info["indexing"] = self.live.run_indexer
        return info

    def secure(self, request: Request) -> bool:
        """Whether the session cookie is marked Secure for this request."""
        return self.client.https(request) if self.secure_cookies is None else self.secure_cookies

    async def session_of(self, request: Request) -> Session | None:
        """The request's live session: its cookie names one that has not expired and whose
        account still holds the auditor role (re-checked on chain every `role_recheck` s)."""
        session = self.auth.sessions.get(request.cookies.get(COOKIE))
        if session is None or time.time() - session.checked <= self.role_recheck:
            return session
        try:
            still = await run_in_threadpool(self.ledger.is_auditor, session.address)
        except ChainError as exc:  # the chain is down: keep the session it already proved
            log.warning("cannot re-check the auditor role of %s: %s", session.address, exc)
            still = True
        if not still:
            self.auth.sessions.drop(session.id)
            return None
        session.checked = time.time()
        return session
