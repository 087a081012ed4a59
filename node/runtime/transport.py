"""Delivering envelopes and task parameters to peers' mailboxes, with retries.

A peer may be restarting, its chain view may be a block behind, or it may not yet have an
earlier message of ours (HTTP requests on different connections can overtake each other):
connection errors, timeouts, 5xx and 409 "gap" answers are retried with exponential
backoff and jitter (0.1 s doubling to a 5 s cap) until the caller's deadline. Anything else
the peer refuses (bad signature, not a participant, replay, ...) will not get better by
retrying and raises :class:`DeliveryRejected` at once. Re-sending is safe: envelopes are
deterministic, so a message that did arrive before a lost answer comes back "duplicate".

Endpoints come from the chain, so a participant chooses where our node connects: every
delivery checks the scheme (https; http only with `allow_http`), resolves the host once,
refuses loopback, private, link-local, multicast, unspecified, reserved and other
non-global addresses (unless `allow_private`, for devnets and test networks), and connects
to the checked IP itself (Host header and TLS SNI keep the registered name), so a second DNS
answer cannot redirect it. A peer's response body never reaches an error: only its status
and a short error code, so a refusal cannot relay an internal page.
"""

from __future__ import annotations

import ipaddress
import random
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
MIN_ATTEMPT_TIMEOUT = 0.05
RETRY_STATUSES = frozenset({408, 425, 429})  # transient 4xx besides 409 gap

RetryHook = Callable[[int, float, str], None]  # (attempt number, delay in s, reason)
Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP addresses
ERROR_CODE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")  # what a peer's "error" may be to be kept

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DeliveryError(Exception):
    """A message or parameters could not be delivered to a peer."""


class PeerUnreachable(DeliveryError):
    """The peer did not accept before the deadline; ``last_error`` says what went wrong last."""

    def __init__(self, endpoint: str, last_error: str) -> None:
        super().__init__(f"peer {endpoint} unreachable: {last_error}")
        self.endpoint = endpoint
        self.last_error = last_error


class DeliveryRejected(DeliveryError):
    """The peer refused for good (a 4xx other than a transient one). Only the status and a
    short code are kept: the peer's body is never repeated."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"peer refused with {status} {code}")
        self.status = status
        self.code = code


class EndpointRefused(DeliveryError):
    """A registered endpoint this node will not connect to; ``reason`` says why."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"refused to connect to the registered endpoint {endpoint!r}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


def _error_code(resp: httpx.Response) -> str:
    """The peer's short error code ("replay", "gap", ...) if it sent one, else http-<status>."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    code = body.get("error") if isinstance(body, dict) else None
    if isinstance(code, str) and ERROR_CODE.fullmatch(code):
        return code
    return f"http-{resp.status_code}"


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host:port (TCP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_problem(ip: IpAddress) -> str | None:
    """Why a peer must not be reached at `ip`, or None for a global unicast address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, what in (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
    ):
        if test:
            return f"{ip} is a {what} address"
    if not ip.is_global:
        return f"{ip} is not a globally routable address"
    return None


@dataclass(frozen=True)
class CheckedEndpoint:
    """Where to connect: `base` has the checked IP as its host; `host` is the registered
    name for the Host header and TLS SNI/certificate check."""

    base: str
    host: str
    host_header: str
    https: bool


def check_endpoint(
    endpoint: str, *, allow_private: bool, allow_http: bool, resolve: Resolver = system_resolver
) -> CheckedEndpoint:
    """Validate a registered endpoint and resolve it once; :class:`EndpointRefused` if it may
    not be used, :class:`socket.gaierror` (OSError) if its name does not resolve now."""
    try:
        url = urlsplit(endpoint)
        port = url.port
    except ValueError as exc:
        raise EndpointRefused(endpoint, f"not a valid URL ({exc})") from None
    if url.scheme != "https" and not (url.scheme == "http" and allow_http):
        allowed = "https or http" if allow_http else "https (http is allowed only with allow_http_endpoints)"
        raise EndpointRefused(endpoint, f"scheme {url.scheme!r} is not allowed; use {allowed}")
    if url.username is not None or url.password is not None:
        raise EndpointRefused(endpoint, "credentials in the URL are not allowed")
    if url.query or url.fragment:
        raise EndpointRefused(endpoint, "a query or fragment is not allowed")
    host = url.hostname
    if not host:
        raise EndpointRefused(endpoint, "no host")
    port = port or (443 if url.scheme == "https" else 80)
    try:
        addresses: list[IpAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(host, port)]
        if not addresses:
            raise socket.gaierror(f"{host} has no address") from None
    if not allow_private:
        for ip in addresses:
            problem = address_problem(ip)
            if problem is not None:
                raise EndpointRefused(endpoint, f"{problem} (set allow_private_endpoints only on a test network)")
    # Prefer IPv4: mailboxes usually bind an IPv4 interface, and "localhost" often lists ::1 first.
    ip = next((a for a in addresses if a.version == 4), addresses[0])
    netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    host_header = url.netloc.rsplit("@", 1)[-1]
    return CheckedEndpoint(f"{url.scheme}://{netloc}{url.path.rstrip('/')}", host, host_header, url.scheme == "https")


def get_checked(
    endpoint: str,
    path: str,
    *,
    allow_private: bool,
    allow_http: bool,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One GET of `path` at a registered endpoint, through the same checks as a delivery
    (:class:`EndpointRefused`, or OSError/httpx.HTTPError when it cannot be reached)."""
    checked = check_endpoint(endpoint, allow_private=allow_private, allow_http=allow_http)
    extensions = {"sni_hostname": checked.host} if checked.https else {}
    # trust_env=False: a node talks to peers directly, never through an HTTP(S)_PROXY of the host
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        return client.get(
            checked.base + path, headers={**(headers or {}), "host": checked.host_header}, extensions=extensions
        )


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1-based): 0.1 s doubling to 5 s, jittered to 50-100 %."""
    base = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt - 1, 32))
    return base * (0.5 + 0.5 * (rng or random).random())


class PeerClient:
    """One HTTP client (keep-alive connection pool) for all peers. Thread-safe."""

    def __init__(
        self,
        timeout: float = 10.0,
        *,
        verify: bool | str = True,
        trust_env: bool = False,
        max_connections: int = 64,
        sleep: Callable[[float], None] = time.sleep,
        allow_private_endpoints: bool = False,
        allow_http_endpoints: bool = False,
        resolve: Resolver = system_resolver,
    ) -> None:
        self.timeout = timeout
        self._sleep = sleep
        self.allow_private_endpoints = allow_private_endpoints
        self.allow_http_endpoints = allow_http_endpoints
        self._resolve = resolve
        self._rng = random.Random()
        self._client = httpx.Client(
            timeout=timeout,
            verify=verify,
            trust_env=trust_env,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=30.0
            ),
            headers={"user-agent": "pcn-node"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def deliver(
        self,
        endpoint: str,
        task_id: int,
        envelope: bytes,
        *,
        deadline: float,
        on_retry: RetryHook | None = None,
    ) -> str:
        """POST one envelope to ``{endpoint}/v1/tasks/{task_id}/messages``; "new" or "duplicate".

        ``deadline`` is a time.monotonic() instant."""

        def accepted(resp: httpx.Response) -> str | None:
            if resp.status_code in (200, 201, 202):
                try:
                    outcome = resp.json().get("outcome")
                except (ValueError, AttributeError):
                    outcome = None
                if outcome in ("new", "duplicate"):
                    return str(outcome)
                return "duplicate" if resp.status_code == 200 else "new"
            return None

        return self._post(endpoint, f"/v1/tasks/{task_id}/messages", envelope, deadline, on_retry, accepted)

    def post_params(
        self,
        endpoint: str,
        task_id: int,
        params_bytes: bytes,
        deadline: float,
        *,
        on_retry: RetryHook | None = None,
    ) -> None:
        """POST a task's parameters to ``{endpoint}/v1/tasks/{task_id}/params``."""

        def accepted(resp: httpx.Response) -> str | None:
            return "stored" if 200 <= resp.status_code < 300 else None

        self._post(endpoint, f"/v1/tasks/{task_id}/params", params_bytes, deadline, on_retry, accepted)

    def _post(
        self,
        endpoint: str,
        path: str,
        body: bytes,
        deadline: float,
        on_retry: RetryHook | None,
        accepted: Callable[[httpx.Response], str | None],
    ) -> str:
        attempt = 0
        last_error = "no attempt made"
        checked: CheckedEndpoint | None = None
        while True:
            remaining = deadline - time.monotonic()
            if attempt > 0 and remaining <= 0:
                raise PeerUnreachable(endpoint, last_error)
            timeout = max(MIN_ATTEMPT_TIMEOUT, min(self.timeout, remaining))
            try:
                if checked is None:  # resolved once; every attempt then goes to this checked IP
                    checked = check_endpoint(
                        endpoint,
                        allow_private=self.allow_private_endpoints,
                        allow_http=self.allow_http_endpoints,
                        resolve=self._resolve,
                    )
                headers = {"content-type": "application/octet-stream", "host": checked.host_header}
                extensions = {"sni_hostname": checked.host} if checked.https else {}
                resp = self._client.post(
                    checked.base + path, content=body, headers=headers, timeout=timeout, extensions=extensions
                )
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except OSError as exc:  # the name does not resolve (now): DNS may be briefly away
                last_error = f"cannot resolve the endpoint: {type(exc).__name__}"
            else:
                done = accepted(resp)
                if done is not None:
                    return done
                code = _error_code(resp)
                retryable = resp.status_code >= 500 or resp.status_code in RETRY_STATUSES
                retryable = retryable or (resp.status_code == 409 and code == "gap")
                if not retryable:
                    raise DeliveryRejected(resp.status_code, code)
                last_error = f"{resp.status_code} {code}"
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerUnreachable(endpoint, last_error)
            delay = min(backoff_delay(attempt, self._rng), remaining)
            if on_retry is not None:
                on_retry(attempt, delay, last_error)
            self._sleep(delay)

    def __repr__(self) -> str:
        return f"PeerClient(timeout={self.timeout})"

    @property
    def client(self) -> httpx.Client:
        return self._client

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """A plain GET through the shared pool (health checks)."""
        return self._client.get(url, **kwargs)
