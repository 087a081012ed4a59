"""Delivering envelopes and task parameters to peers' mailboxes, with retries.

A peer may be restarting, its chain view may be a block behind, or it may not yet have an
earlier message of ours (HTTP requests on different connections can overtake each other):
connection errors, timeouts, 5xx and 409 "gap" answers are retried with exponential
backoff and jitter (0.1 s doubling to a 5 s cap) until the caller's deadline. Anything else
the peer refuses (bad signature, not a participant, replay, ...) will not get better by
retrying and raises :class:`DeliveryRejected` at once. Re-sending is safe: envelopes are
deterministic, so a message that did arrive before a lost answer comes back "duplicate".
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import httpx

BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
MIN_ATTEMPT_TIMEOUT = 0.05
RETRY_STATUSES = frozenset({408, 425, 429})  # transient 4xx besides 409 gap

RetryHook = Callable[[int, float, str], None]  # (attempt number, delay in s, reason)


class DeliveryError(Exception):
    """A message or parameters could not be delivered to a peer."""


class PeerUnreachable(DeliveryError):
    """The peer did not accept before the deadline; ``last_error`` says what went wrong last."""

    def __init__(self, endpoint: str, last_error: str) -> None:
        super().__init__(f"peer {endpoint} unreachable: {last_error}")
        self.endpoint = endpoint
        self.last_error = last_error


class DeliveryRejected(DeliveryError):
    """The peer refused for good (a 4xx other than a transient one)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"peer refused with {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


def _error_of(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"], str(body.get("detail", ""))
    return f"http-{resp.status_code}", resp.text[:200]


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
    ) -> None:
        self.timeout = timeout
        self._sleep = sleep
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

        url = f"{endpoint.rstrip('/')}/v1/tasks/{task_id}/messages"
        return self._post(endpoint, url, envelope, deadline, on_retry, accepted)

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

        url = f"{endpoint.rstrip('/')}/v1/tasks/{task_id}/params"
        self._post(endpoint, url, params_bytes, deadline, on_retry, accepted)

    def _post(
        self,
        endpoint: str,
        url: str,
        body: bytes,
        deadline: float,
        on_retry: RetryHook | None,
        accepted: Callable[[httpx.Response], str | None],
    ) -> str:
        attempt = 0
        last_error = "no attempt made"
        headers = {"content-type": "application/octet-stream"}
        while True:
            remaining = deadline - time.monotonic()
            if attempt > 0 and remaining <= 0:
                raise PeerUnreachable(endpoint, last_error)
            timeout = max(MIN_ATTEMPT_TIMEOUT, min(self.timeout, remaining))
            try:
                resp = self._client.post(url, content=body, headers=headers, timeout=timeout)
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                done = accepted(resp)
                if done is not None:
                    return done
                code, detail = _error_of(resp)
                retryable = resp.status_code >= 500 or resp.status_code in RETRY_STATUSES
                retryable = retryable or (resp.status_code == 409 and code == "gap")
                if not retryable:
                    raise DeliveryRejected(resp.status_code, code, detail)
                last_error = f"{resp.status_code} {code}: {detail}"
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
