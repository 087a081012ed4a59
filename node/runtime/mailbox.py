"""The organisation's mailbox: the HTTP endpoint registered on chain, where peers deliver
sealed protocol messages (see :mod:`pcn.runtime.envelope`) and task parameters.

Routes::

    GET  /v1/health                     200 {"ok": true, "org": <address>}
    POST /v1/tasks/{task_id}/messages   body: one envelope (application/octet-stream)
         202 {"outcome": "new"}          accepted into the task's Inbox
         200 {"outcome": "duplicate"}    already accepted (a resumed peer re-sent it)
         409 {"error": "replay", ...}    another message under a used sequence number
         409 {"error": "gap", "expected_seq": n, ...}   an earlier message is missing: retry later
    POST /v1/tasks/{task_id}/params     body: the task's parameter bytes; 201 {"ok": true}

Every error is JSON {"error": code, "detail": text}, never a stack trace:

    400 malformed | wrong-domain | decrypt-failed | task-mismatch | params-mismatch
    401 bad-signature            403 misbound | sender-not-active | not-participant
    404 unknown-task | not-found 413 too-large    501 not-supported
    503 chain-unavailable | store-unavailable (transient: the sender retries)
    500 internal

The body size is enforced before the body is read (Content-Length) and while it streams in
(chunked uploads). Chain and Redis calls are blocking, so the verification runs in the
threadpool, never on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import redis
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_utils import to_checksum_address
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pcn.chain.errors import ChainError
from pcn.runtime.envelope import EnvelopeError, open_envelope
from pcn.runtime.inbox import Inbox
from pcn.runtime.peers import PeerLookup, UnknownTask

log = logging.getLogger("pcn.mailbox")

MAX_BODY = 8 * 1024 * 1024
MAX_PARAMS = 1024 * 1024

ENVELOPE_STATUS: dict[str, int] = {
    "malformed": 400,
    "wrong-domain": 400,
    "misbound": 403,
    "bad-signature": 401,
    "sender-not-active": 403,
    "decrypt-failed": 400,
}


class HasX25519(Protocol):
    @property
    def x25519_private(self) -> X25519PrivateKey: ...


class Problem(Exception):
    """An error answer: HTTP status, short code, human detail (and optional extra fields)."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "detail": self.detail, **self.extra}, status_code=self.status)


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise Problem(400, "malformed", "invalid Content-Length") from None
        if size < 0:
            raise Problem(400, "malformed", "invalid Content-Length")
        if size > limit:
            raise Problem(413, "too-large", f"body of {size} bytes exceeds the limit of {limit}")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise Problem(413, "too-large", f"body exceeds the limit of {limit} bytes")
    return bytes(buf)


def _task_id(value: int) -> int:
    if value < 0 or value >= 2**256:
        raise Problem(400, "malformed", "task id out of range")
    return value


def create_mailbox_app(
    *,
    me: str,
    keys: HasX25519,
    inbox: Inbox,
    peers: PeerLookup,
    chain_id: int,
    task_manager: str,
    max_body: int = MAX_BODY,
    on_params: Callable[[int, bytes], None] | None = None,
    max_params: int = MAX_PARAMS,
) -> FastAPI:
    """The mailbox of organisation ``me``.

    ``on_params(task_id, body)`` stores a task's parameters; it raises ValueError when their
    hash is not the one on chain (400 params-mismatch) and LookupError for an unknown task."""
    me = to_checksum_address(me)
    my_key = keys.x25519_private
    app = FastAPI(title="pcn mailbox", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, _exc: RequestValidationError) -> JSONResponse:
        return Problem(400, "malformed", "invalid request path or parameters").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, f"http-{exc.status_code}")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, _exc: Exception) -> JSONResponse:
        return Problem(500, "internal", "internal error").response()

    def _guarded(fn: Callable[[], JSONResponse], what: str) -> JSONResponse:
        """Run a blocking handler body; map infrastructure failures to clean answers."""
        try:
            return fn()
        except Problem:
            raise
        except ChainError as exc:
            log.warning("%s: chain unavailable: %s", what, exc)
            raise Problem(503, "chain-unavailable", "the chain cannot be reached, retry later") from None
        except redis.RedisError as exc:
            log.warning("%s: redis unavailable: %s", what, exc)
            raise Problem(503, "store-unavailable", "the message store cannot be reached, retry later") from None
        except Exception:
            log.exception("%s failed", what)
            raise Problem(500, "internal", "internal error") from None

    def _participants(task_id: int) -> list[str]:
        try:
            return [p.lower() for p in peers.participants(task_id)]
        except UnknownTask:
            raise Problem(404, "unknown-task", f"no task {task_id} on chain") from None

    def _accept_message(task_id: int, body: bytes) -> JSONResponse:
        try:
            msg, header_task, digest = open_envelope(
                body,
                me=me,
                my_x25519=my_key,
                chain_id=chain_id,
                task_manager=task_manager,
                sender_key=peers.organisation,
                max_size=max_body,
            )
        except EnvelopeError as exc:
            log.warning("task %s: refused an envelope: %s (%s)", task_id, exc.code, exc.detail)
            raise Problem(ENVELOPE_STATUS.get(exc.code, 400), exc.code, exc.detail) from None
        if header_task != task_id:
            raise Problem(400, "task-mismatch", f"envelope is for task {header_task}, not task {task_id}")
        members = _participants(task_id)
        if msg.sender.lower() not in members:
            log.warning("task %s: message from non-participant %s", task_id, msg.sender)
            raise Problem(403, "not-participant", f"{msg.sender} is not a participant of task {task_id}")
        if me.lower() not in members:
            raise Problem(403, "not-participant", f"{me} is not a participant of task {task_id}")
        accepted = inbox.accept(task_id, msg, digest)
        if accepted.outcome == "new":
            return JSONResponse({"outcome": "new"}, status_code=202)
        if accepted.outcome == "duplicate":
            return JSONResponse({"outcome": "duplicate"}, status_code=200)
        if accepted.outcome == "closed":  # this node finished the task: nothing more is needed
            return JSONResponse({"outcome": "closed"}, status_code=200)
        if accepted.outcome == "gap":
            raise Problem(
                409,
                "gap",
                f"expected sequence number {accepted.expected_seq} from {msg.sender}, got {msg.seq}",
                expected_seq=accepted.expected_seq,
            )
        log.warning("task %s: replay from %s at seq %s", task_id, msg.sender, msg.seq)
        raise Problem(409, "replay", f"sequence number {msg.seq} of {msg.sender} was used by another message")

    def _store_params(task_id: int, body: bytes) -> JSONResponse:
        if on_params is None:
            raise Problem(501, "not-supported", "this node does not accept task parameters")
        _participants(task_id)  # 404 unknown-task before anything is stored or hashed
        try:
            on_params(task_id, body)
        except ValueError as exc:
            raise Problem(400, "params-mismatch", str(exc) or "the parameters do not match the chain") from None
        except LookupError:
            raise Problem(404, "unknown-task", f"no task {task_id} on chain") from None
        return JSONResponse({"ok": True}, status_code=201)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "org": me}

    @app.post("/v1/tasks/{task_id}/messages")
    async def messages(task_id: int, request: Request) -> JSONResponse:
        task_id = _task_id(task_id)
        body = await read_capped(request, max_body)
        return await run_in_threadpool(_guarded, lambda: _accept_message(task_id, body), f"task {task_id} message")

    @app.post("/v1/tasks/{task_id}/params")
    async def params(task_id: int, request: Request) -> JSONResponse:
        task_id = _task_id(task_id)
        body = await read_capped(request, max_params)
        return await run_in_threadpool(_guarded, lambda: _store_params(task_id, body), f"task {task_id} params")

    return app
