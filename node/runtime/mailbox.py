"""The organisation's mailbox: the HTTP endpoint registered on chain, where peers deliver
sealed protocol messages (see :mod:`pcn.runtime.envelope`) and task parameters.

Routes::

    GET  /v1/health                     200 {"ok": true, "org": <address>}
    POST /v1/tasks/{task_id}/messages   body: one envelope (application/octet-stream)
         202 {"outcome": "new"}          accepted into the task's Inbox
         200 {"outcome": "duplicate"}    already accepted (a resumed peer re-sent it)
         409 {"error": "replay", ...}    another message under a used sequence number
         409 {"error": "gap", "expected_seq": n, ...}   an earlier message is missing: retry later
    POST /v1/tasks/{task_id}/params     body: one envelope of kind "task-params", signed by the
         task's requester and sealed to this organisation, whose payload is the parameter bytes
         (their sha256 is on chain); 201 {"ok": true}
    GET  /v1/tasks/{task_id}/progress   signed (see :mod:`pcn.runtime.reqauth`) by a participant
         or the requester: 200 {"org", "task_id", "phase", "fraction", "detail", ...}

A message is taken only for a task that is Authorised or Running on chain (425 too-early while
Pending, 409 task-final once Completed/Disputed/Refused/Cancelled/Expired), only when this node
and the sender are participants, and only within the task's and the sender's byte quotas
(413 quota-exceeded); the task, status and membership are checked before the body is read.
The inbox keys expire ``ttl_margin`` seconds after the task's deadline. At most
``max_inflight`` requests are served at once; more get 503 busy with Retry-After.

Every error is JSON {"error": code, "detail": text}, never a stack trace:

    400 malformed | wrong-domain | decrypt-failed | task-mismatch | params-mismatch
    401 bad-signature | unsigned | expired
    403 misbound | sender-not-active | not-participant | not-authorised | not-requester
    404 unknown-task | not-found 409 task-final   413 too-large | quota-exceeded
    425 too-early                501 not-supported
    503 chain-unavailable | store-unavailable | busy (transient: the sender retries)
    500 internal

The body size is enforced before the body is read (Content-Length) and while it streams in
(chunked uploads). Chain and Redis calls are blocking, so the verification runs in the
threadpool, never on the event loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import redis
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_utils import to_checksum_address
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from pcn.algorithms.base import Message
from pcn.chain.errors import ChainError
from pcn.chain.types import TaskStatus
from pcn.runtime.envelope import PARAMS_KIND, EnvelopeError, open_envelope
from pcn.runtime.inbox import Inbox
from pcn.runtime.peers import PeerLookup, UnknownTask
from pcn.runtime.reqauth import RequestAuthError, request_signer
from pcn.runtime.taskstate import shared_fields

log = logging.getLogger("pcn.mailbox")
T = TypeVar("T")

MAX_BODY = 8 * 1024 * 1024
MAX_PARAMS = 1024 * 1024
PARAMS_SEAL_OVERHEAD = 4096  # an envelope's header, signature and tag around the parameters
MAX_INFLIGHT = 64
TTL_MARGIN = 3600

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


def check_declared_size(request: Request, limit: int) -> None:
    """Refuse with 413 a body whose Content-Length exceeds ``limit`` (nothing is read)."""
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


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it is known to exceed ``limit``."""
    check_declared_size(request, limit)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise Problem(413, "too-large", f"body exceeds the limit of {limit} bytes")
    return bytes(buf)


class InflightLimit:
    """At most ``limit`` requests in flight; more are answered 503 at once, before their body
    is read, so a flood cannot pile up request bodies or threadpool work. Health is exempt."""

    def __init__(self, app: ASGIApp, limit: int = MAX_INFLIGHT, retry_after: int = 1) -> None:
        if limit <= 0:
            raise ValueError("the in-flight limit must be positive")
        self.app = app
        self.limit = limit
        self.retry_after = retry_after
        self.inflight = 0  # the event loop is single-threaded: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/v1/health":
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            body = json.dumps({"error": "busy", "detail": f"more than {self.limit} requests in flight, retry later"})
            headers = [
                (b"content-type", b"application/json"),
                (b"retry-after", str(self.retry_after).encode()),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


def _task_id(value: int) -> int:
    if value < 0 or value >= 2**256:
        raise Problem(400, "malformed", "task id out of range")
    return value


def api_app(title: str, max_inflight: int) -> FastAPI:
    """A FastAPI app answering every error as JSON {"error": code, "detail": …} (a Problem's
    own status, 400 for a bad path or parameter, 404/405, 500 with nothing leaked) and
    shedding load beyond `max_inflight` concurrent requests: the mailbox's and the relay's."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(InflightLimit, limit=max_inflight)

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

    return app


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
    max_inflight: int = MAX_INFLIGHT,
    ttl_margin: int = TTL_MARGIN,
    clock: Callable[[], float] = time.time,
    progress: Callable[[int], dict[str, str]] | None = None,
) -> FastAPI:
    """The mailbox of organisation ``me``.

    ``on_params(task_id, body)`` stores a task's parameters; it raises ValueError when their
    hash is not the one on chain (400 params-mismatch) and LookupError for an unknown task.
    ``progress(task_id)`` reads the task's live progress fields (empty before it starts)."""
    me = to_checksum_address(me)
    my_key = keys.x25519_private
    app = api_app("pcn mailbox", max_inflight)

    def _guarded(fn: Callable[[], T], what: str) -> T:
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

    def _admit(task_id: int) -> tuple[list[str], int]:
        """Before the body is read: the task's participants and the inbox TTL, or a refusal."""
        members = _participants(task_id)
        if me.lower() not in members:  # no dataset here and never asked to consent
            raise Problem(403, "not-participant", f"{me} is not a participant of task {task_id}")
        try:
            task = peers.task(task_id)
        except UnknownTask:
            raise Problem(404, "unknown-task", f"no task {task_id} on chain") from None
        if task.status == TaskStatus.PENDING:
            raise Problem(425, "too-early", f"task {task_id} is not authorised yet", task_status="pending")
        if task.status not in (TaskStatus.AUTHORISED, TaskStatus.RUNNING):
            status = task.status.name.lower()
            raise Problem(409, "task-final", f"task {task_id} is {status}: it takes no messages", task_status=status)
        return members, int(max(0.0, task.deadline - clock())) + ttl_margin

    def _opened(task_id: int, body: bytes, max_size: int, what: str) -> tuple[Message, bytes]:
        """The envelope `body` checked, decrypted and bound to `task_id` (its message and
        digest), or the refusal its defect calls for."""
        try:
            msg, header_task, digest = open_envelope(
                body,
                me=me,
                my_x25519=my_key,
                chain_id=chain_id,
                task_manager=task_manager,
                sender_key=peers.organisation,
                max_size=max_size,
            )
        except EnvelopeError as exc:
            log.warning("task %s: refused %s: %s (%s)", task_id, what, exc.code, exc.detail)
            raise Problem(ENVELOPE_STATUS.get(exc.code, 400), exc.code, exc.detail) from None
        if header_task != task_id:
            raise Problem(400, "task-mismatch", f"envelope is for task {header_task}, not task {task_id}")
        return msg, digest

    def _accept_message(task_id: int, body: bytes, members: list[str], ttl: int) -> JSONResponse:
        msg, digest = _opened(task_id, body, max_body, "an envelope")
        if msg.sender.lower() not in members:
            log.warning("task %s: message from non-participant %s", task_id, msg.sender)
            raise Problem(403, "not-participant", f"{msg.sender} is not a participant of task {task_id}")
        accepted = inbox.accept(task_id, msg, digest, ttl=ttl)
        if accepted.outcome == "new":
            return JSONResponse({"outcome": "new"}, status_code=202)
        if accepted.outcome == "duplicate":
            return JSONResponse({"outcome": "duplicate"}, status_code=200)
        if accepted.outcome == "closed":  # this node finished the task: nothing more is needed
            return JSONResponse({"outcome": "closed"}, status_code=200)
        if accepted.outcome == "quota":
            log.warning("task %s: %s quota exceeded by %s", task_id, accepted.quota, msg.sender)
            raise Problem(
                413,
                "quota-exceeded",
                f"the {accepted.quota} byte quota of task {task_id} is used up",
                quota=accepted.quota,
            )
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
        msg, _digest = _opened(task_id, body, max_params + PARAMS_SEAL_OVERHEAD, "parameters")
        if msg.kind != PARAMS_KIND:
            raise Problem(400, "malformed", f"a {msg.kind!r} envelope is not a task's parameters")
        try:
            requester = peers.task(task_id).requester
        except UnknownTask:
            raise Problem(404, "unknown-task", f"no task {task_id} on chain") from None
        if msg.sender.lower() != requester.lower():
            log.warning("task %s: parameters sealed by %s, not the requester", task_id, msg.sender)
            raise Problem(403, "not-requester", f"{msg.sender} is not the requester of task {task_id}")
        try:
            on_params(task_id, msg.payload)
        except ValueError as exc:
            raise Problem(400, "params-mismatch", str(exc) or "the parameters do not match the chain") from None
        except LookupError:
            raise Problem(404, "unknown-task", f"no task {task_id} on chain") from None
        return JSONResponse({"ok": True}, status_code=201)

    def _read_progress(task_id: int, signer: str) -> JSONResponse:
        if progress is None:
            raise Problem(501, "not-supported", "this node does not publish progress")
        members = _participants(task_id)
        try:
            requester = peers.task(task_id).requester.lower()
        except UnknownTask:
            raise Problem(404, "unknown-task", f"no task {task_id} on chain") from None
        if signer.lower() not in members and signer.lower() != requester:
            log.warning("task %s: progress asked by %s, neither participant nor requester", task_id, signer)
            raise Problem(
                403, "not-authorised", f"{signer} is neither a participant nor the requester of task {task_id}"
            )
        fields = progress(task_id)
        if signer.lower() != me.lower():  # the organisation's own figures are its operator's alone
            fields = shared_fields(fields)
        return JSONResponse({"org": me, "task_id": task_id, **fields})

    @app.get("/v1/tasks/{task_id}/progress")
    async def task_progress(task_id: int, request: Request) -> JSONResponse:
        task_id = _task_id(task_id)
        try:
            signer = request_signer(request.headers, "GET", request.url.path, task_id, clock())
        except RequestAuthError as exc:
            raise Problem(401, exc.code, exc.detail) from None
        return await run_in_threadpool(_guarded, lambda: _read_progress(task_id, signer), f"task {task_id} progress")

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "org": me}

    @app.post("/v1/tasks/{task_id}/messages")
    async def messages(task_id: int, request: Request) -> JSONResponse:
        task_id = _task_id(task_id)
        what = f"task {task_id} message"
        check_declared_size(request, max_body)
        members, ttl = await run_in_threadpool(_guarded, lambda: _admit(task_id), what)
        body = await read_capped(request, max_body)
        return await run_in_threadpool(_guarded, lambda: _accept_message(task_id, body, members, ttl), what)

    @app.post("/v1/tasks/{task_id}/params")
    async def params(task_id: int, request: Request) -> JSONResponse:
        task_id = _task_id(task_id)
        body = await read_capped(request, max_params + PARAMS_SEAL_OVERHEAD)
        return await run_in_threadpool(_guarded, lambda: _store_params(task_id, body), f"task {task_id} params")

    return app
