"""The HTTP JSON-RPC connection every pcn chain client uses.

Each request passes through one wrapper. It turns a transport failure (connection refused
or reset, a timeout, HTTP 5xx, a reply that is not JSON or not JSON-RPC) into
`ChainUnavailable`, which callers retry. A failure that waiting will not fix (a malformed
RPC URL, HTTP 4xx) becomes a plain `ChainError`. JSON-RPC error replies and contract
reverts pass through unchanged for the ledger to decode.
"""

from __future__ import annotations

import json
from typing import Any, cast

import requests
from web3 import HTTPProvider, Web3
from web3.exceptions import BadResponseFormat
from web3.manager import RequestManager

from pcn.chain.errors import ChainError, ChainUnavailable

RPC_TIMEOUT = 30.0

# HTTP statuses that mean "not now" rather than "never": server errors, timeouts and rate limits.
_TRANSIENT_HTTP = frozenset({408, 425, 429})

# A reply the node sent but the client cannot read: usually a proxy in front of a restarting
# node or a connection cut mid-body.
_UNREADABLE_REPLY = (json.JSONDecodeError, UnicodeDecodeError, BadResponseFormat)


def _as_chain_error(url: str, exc: Exception) -> ChainError | None:
    """The pcn error for a failure of the request itself, None for anything else."""
    if isinstance(exc, _UNREADABLE_REPLY):
        return ChainUnavailable(f"the chain RPC at {url} sent an unreadable reply: {exc}")
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500 or status in _TRANSIENT_HTTP:
            return ChainUnavailable(f"the chain RPC at {url} answered HTTP {status}: {exc}")
        return ChainError(f"the chain RPC at {url} refused the request (HTTP {status}): {exc}")
    if isinstance(exc, requests.RequestException) and isinstance(exc, ValueError):
        return ChainError(f"the chain RPC URL {url!r} is not usable: {exc}")  # MissingSchema, InvalidURL, ...
    if isinstance(exc, OSError):  # every other requests error, and socket errors it did not wrap
        return ChainUnavailable(f"cannot reach the chain at {url}: {exc}")
    return None


class _ChainRequestManager(RequestManager):
    """web3's request manager; a failed request raises a pcn ChainError (see the module doc)."""

    def request_blocking(self, method: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().request_blocking(method, params, *args, **kwargs)
        except Exception as exc:
            mapped = _as_chain_error(str(cast(HTTPProvider, self.provider).endpoint_uri), exc)
            if mapped is None:
                raise
            raise mapped from exc


class _ChainWeb3(Web3):
    RequestManager = _ChainRequestManager


def connect(rpc_url: str, timeout: float = RPC_TIMEOUT) -> Web3:
    """A web3 client of `rpc_url` whose request failures are pcn ChainErrors."""
    return _ChainWeb3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
