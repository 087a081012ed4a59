"""The regulator's dashboard: a read-only FastAPI app behind Sign-In with Ethereum.

`create_dashboard_app(store, ledger, ...)` builds it. Routes (every one but /login,
/auth/* and /static/* needs a session; HTML pages redirect to /login, /api/* answer 401):

- pages: / (overview), /orgs, /orgs/{account}, /datasets, /datasets/{id}, /algorithms,
  /tasks, /tasks/{id}, /anomalies, /tx/{hash}, /reports, /reports/download;
- JSON: /api/status (polled by the pages every 2 s for live updates), /api/session,
  /api/overview, /api/orgs[/{account}], /api/datasets[/{id}], /api/algorithms,
  /api/tasks[/{id}], /api/anomalies, /api/tx/{hash}, /api/report, /api/openapi.json;
- auth: GET /login, GET /auth/nonce, POST /auth/verify, POST /auth/logout.

The only state-changing routes are sign-in and sign-out. See `pcn.auditor.web.auth` for the
checks a sign-in passes.

Behind a reverse proxy, sign-in rate limits and nonce limits would key on the proxy's
address (one client locks everyone out) unless the proxy is named: `trusted_proxies` (CIDRs;
`pcn audit serve --trusted-proxy` / $PCN_AUDITOR_TRUSTED_PROXIES). Only a request whose peer
is such a proxy has its X-Forwarded-For read, and then the rightmost hop that is not a
trusted proxy is the client (hops to its left are the client's own claims). The same proxy's
X-Forwarded-Proto: https marks the session cookie Secure, as does `secure_cookies=True`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from eth_utils import is_address, to_checksum_address
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from pcn.auditor import reports as reports_mod
from pcn.auditor.store import Store, open_store
from pcn.auditor.web import pages
from pcn.auditor.web.auth import Authenticator, AuthError
from pcn.auditor.web.html import Html
from pcn.auditor.web.live import LiveAuditor
from pcn.auditor.web.siwe import STATEMENT, RateLimiter, iso, siwe_message
from pcn.auditor.web.views import Views
from pcn.chain.ledger import Ledger

log = logging.getLogger("pcn.auditor.web")

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "pcn_audit_session"
MAX_AUTH_BODY = 16 * 1024
MAX_URL = 8 * 1024  # path + query string; longer is 414 before any routing or session lookup
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


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


def _safe_next(value: str | None) -> str:
    """Only a path on this site (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed `limit` bytes (from Content-Length,
    or while a chunked body streams in): an oversized body is never buffered whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def _int_param(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number, not {value!r}") from None
    if number < 0 or number >= 2**63:
        raise HTTPException(400, f"{name} is out of range")
    return number


def _address_param(value: str | None, name: str = "org") -> str | None:
    if value is None or value == "":
        return None
    if not is_address(value):
        raise HTTPException(400, f"{name} must be an Ethereum address, not {value!r}")
    return to_checksum_address(value)


def create_dashboard_app(
    store: Store | str | Path,
    ledger: Ledger,
    *,
    session_ttl: float = 8 * 3600,
    domain: str | None = None,
    run_indexer: bool = False,
    watch_anomalies: bool | None = None,
    confirmations: int = 0,
    login_limit: int = 10,
    login_window: float = 60.0,
    nonce_limit: int = 60,
    nonce_ttl: float = 300.0,
    role_recheck: float = 60.0,
    secure_cookies: bool | None = None,
    poll_interval: float = 1.0,
    trusted_proxies: Iterable[str] = (),
) -> FastAPI:
    """The dashboard over `store`, checking sign-ins against `ledger`'s deployment.

    `domain` is the host[:port] regulators reach the dashboard at (the EIP-4361 domain a
    message must name); None accepts the Host the browser used (development only).
    `run_indexer` follows the chain live in a background thread (Indexer.run_forever with
    `confirmations`); `watch_anomalies` (default: as run_indexer) re-runs anomaly detection
    whenever the indexed chain changes. Sessions end after `session_ttl` seconds, or
    earlier when the account loses the auditor role (re-checked every `role_recheck` s).
    `trusted_proxies` are the CIDRs of reverse proxies whose X-Forwarded-For/-Proto count;
    `secure_cookies` None marks the cookie Secure when the browser's scheme is https.
    """
    _client = ClientAddress(parse_trusted_proxies(trusted_proxies))
    st = open_store(store)
    views = Views(st)
    auth = Authenticator(ledger.chain_id, ledger.is_auditor, domain, session_ttl, nonce_ttl)
    login_limiter = RateLimiter(login_limit, login_window)
    nonce_limiter = RateLimiter(nonce_limit, login_window)
    live = LiveAuditor(
        st,
        ledger,
        run_indexer=run_indexer,
        watch_anomalies=run_indexer if watch_anomalies is None else watch_anomalies,
        confirmations=confirmations,
        interval=poll_interval,
    )
    head_cache: dict[str, Any] = {"at": 0.0, "block": None}
    head_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        live.start()
        try:
            yield
        finally:
            live.stop()

    app = FastAPI(
        title="pcn audit dashboard",
        version="1",
        description="Read-only regulator dashboard over the pcn auditor's store (Sign-In with Ethereum).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.store = st
    app.state.views = views
    app.state.auth = auth
    app.state.live = live
    app.state.login_limiter = login_limiter
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def status_info() -> dict[str, Any]:
        info = views.status()
        now = time.monotonic()
        with head_lock:
            if now - head_cache["at"] > 1.5:
                try:
                    head_cache["block"] = int(ledger.w3.eth.block_number)
                except Exception:
                    head_cache["block"] = None
                head_cache["at"] = now
            info["head_block"] = head_cache["block"]
        info["indexing"] = live.run_indexer
        return info

    def secure(request: Request) -> bool:
        return _client.https(request) if secure_cookies is None else secure_cookies

    def user_of(request: Request) -> str | None:
        session = getattr(request.state, "session", None)
        return session.address if session is not None else None

    def html(
        request: Request, title: str, content: Html, active: str = "", charts: bool = False, live_page: bool = True
    ) -> HTMLResponse:
        return HTMLResponse(
            pages.layout(
                title,
                content,
                user=user_of(request),
                status=status_info(),
                active=active,
                charts=charts,
                live=live_page,
            )
        )

    # ------------------------------------------------------------------ middleware

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        raw_path = request.scope.get("raw_path") or path.encode()
        if len(raw_path) + len(request.scope.get("query_string") or b"") > MAX_URL:
            response: Response = JSONResponse(
                {"error": {"code": "uri-too-long", "message": f"the URL is longer than {MAX_URL} bytes"}},
                status_code=414,
            )
            _headers(response)
            return response
        public = path.startswith("/static/") or path == "/login" or path.startswith("/auth/")
        if not public:
            session = auth.sessions.get(request.cookies.get(COOKIE))
            if session is not None and time.time() - session.checked > role_recheck:
                try:
                    still = await run_in_threadpool(ledger.is_auditor, session.address)
                except Exception as exc:  # the chain is down: keep the session it already proved
                    log.warning("cannot re-check the auditor role of %s: %s", session.address, exc)
                    still = True
                if still:
                    session.checked = time.time()
                else:
                    auth.sessions.drop(session.id)
                    session = None
            if session is None:
                if _is_api(request):
                    response = JSONResponse(
                        {"error": {"code": "no-session", "message": "sign in first: GET /login"}},
                        status_code=401,
                        headers={"WWW-Authenticate": 'SIWE realm="pcn audit"'},
                    )
                else:
                    target = path + (f"?{request.url.query}" if request.url.query else "")
                    response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
                _headers(response)
                return response
            request.state.session = session
        response = await call_next(request)
        _headers(response, static=path.startswith("/static/"))
        return response

    def _headers(response: Response, static: bool = False) -> None:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on form posts
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not static:
            response.headers.setdefault("Cache-Control", "no-store")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _is_api(request) or request.url.path.startswith("/auth/"):
            return JSONResponse(
                {"error": {"code": str(exc.status_code), "message": str(exc.detail)}},
                status_code=exc.status_code,
                headers=exc.headers,
            )
        titles = {400: "That request is not valid", 404: "Not found", 405: "Not allowed"}
        return HTMLResponse(
            pages.error_page(
                exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail), user_of(request), status_info()
            ),
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in exc.errors()
        )
        return await http_error(
            request, HTTPException(400 if not request.url.path.startswith(("/tasks/", "/datasets/")) else 404, problems)
        )

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
        return await http_error(request, HTTPException(exc.status_code, exc.detail, exc.headers))

    # ------------------------------------------------------------------ auth

    def _origin_ok(request: Request) -> bool:
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        expected = {request.headers.get("host", "")}
        if domain:
            expected.add(domain)
        return urlsplit(origin).netloc in expected

    def _issue(request: Request, address: str) -> dict[str, Any]:
        wait = nonce_limiter.hit(_client(request))
        if wait is not None:
            raise HTTPException(
                429, f"too many sign-in messages asked for; wait {int(wait)} s", {"Retry-After": str(int(wait))}
            )
        try:
            nonce, expires = auth.nonces.issue()
        except OverflowError as exc:
            raise HTTPException(503, str(exc)) from None
        now = expires - auth.nonces.ttl
        host = auth.expected_domain(request.headers.get("host"))
        uri = f"{request.url.scheme}://{host}/"
        message = siwe_message(host, address, uri, auth.chain_id, nonce, now, expires)
        return {
            "nonce": nonce,
            "domain": host,
            "uri": uri,
            "chain_id": auth.chain_id,
            "statement": STATEMENT,
            "issued_at": iso(now),
            "expiration_time": iso(expires),
            "expires_in": round(expires - now),
            "address": address,
            "message": message,
        }

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login(request: Request, next: str | None = None, address: str | None = None) -> Response:
        next_url = _safe_next(next)
        session = auth.sessions.get(request.cookies.get(COOKIE))
        if session is not None and address is None:
            return RedirectResponse(next_url, status_code=303)
        message, error, expires_in, shown = "", None, None, address or ""
        if address:
            if not is_address(address.strip()):
                error = f"{address!r} is not an Ethereum address (0x followed by 40 hex digits)."
            else:
                shown = to_checksum_address(address.strip())
                try:
                    issued = _issue(request, shown)
                    message, expires_in = issued["message"], issued["expires_in"]
                except HTTPException as exc:
                    error = str(exc.detail)
        return HTMLResponse(
            pages.login_page(
                chain_id=auth.chain_id,
                domain=auth.expected_domain(request.headers.get("host")),
                address=shown,
                message=message,
                next_url=next_url,
                error=error,
                expires_in=expires_in,
            ),
            status_code=429 if error and error.startswith("too many") else 200,
        )

    @app.get("/auth/nonce", tags=["auth"])
    def nonce(request: Request, address: str | None = None) -> dict[str, Any]:
        """A fresh single-use nonce (valid 5 minutes); with `address`, the whole EIP-4361
        message to sign as well."""
        if address is not None and not is_address(address):
            raise HTTPException(400, f"{address!r} is not an Ethereum address")
        issued = _issue(request, to_checksum_address(address) if address else "")
        if not address:
            issued["message"] = None
            issued["address"] = None
        return issued

    @app.post("/auth/verify", tags=["auth"])
    async def verify(request: Request) -> Response:
        """Sign in: body {message, signature} as JSON, or a form post from /login."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        is_form = ctype == "application/x-www-form-urlencoded"

        def fail(
            status: int, code: str, message: str, address: str = "", headers: dict[str, str] | None = None
        ) -> Response:
            if is_form:
                return HTMLResponse(
                    pages.login_page(
                        chain_id=auth.chain_id,
                        domain=auth.expected_domain(request.headers.get("host")),
                        address=address,
                        message="",
                        next_url=next_url,
                        error=f"Sign-in refused: {message}",
                        expires_in=None,
                    ),
                    status_code=status,
                    headers=headers,
                )
            return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)

        next_url = "/"
        if not _origin_ok(request):
            return fail(403, "bad-origin", "the request came from another site")
        wait = login_limiter.hit(_client(request))
        if wait is not None:
            return fail(
                429,
                "rate-limited",
                f"too many sign-in attempts; wait {int(wait)} s",
                headers={"Retry-After": str(int(wait))},
            )
        body = await _read_capped(request, MAX_AUTH_BODY)
        if body is None:
            return fail(413, "too-large", "the request is too large")
        try:
            if is_form:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
                data = {k: v[0] for k, v in form.items()}
            else:
                data = json.loads(body or b"null")
            if not isinstance(data, dict):
                raise ValueError("expected an object")
            message, signature = data.get("message"), data.get("signature")
            next_url = _safe_next(data.get("next") if isinstance(data.get("next"), str) else None)
            if not isinstance(message, str) or not isinstance(signature, str):
                raise ValueError("message and signature are required strings")
        except (ValueError, UnicodeDecodeError) as exc:
            return fail(400, "bad-request", f"send {{message, signature}}: {exc}")
        message = message.replace("\r\n", "\n").strip("\n") if is_form else message
        try:
            session = await run_in_threadpool(auth.verify, message, signature.strip(), request.headers.get("host"))
        except AuthError as exc:
            log.info("sign-in refused from %s: %s", _client(request), exc.message)
            lines = message.split("\n")
            return fail(exc.status, exc.code, exc.message, lines[1] if len(lines) > 1 and is_address(lines[1]) else "")
        log.info("%s signed in from %s", session.address, _client(request))
        response: Response
        if is_form:
            response = RedirectResponse(next_url, status_code=303)
        else:
            response = JSONResponse(
                {"ok": True, "address": session.address, "expires_at": int(session.expires), "next": next_url}
            )
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(session_ttl),
            httponly=True,
            samesite="strict",
            secure=secure(request),
            path="/",
        )
        return response

    @app.post("/auth/logout", tags=["auth"])
    async def logout(request: Request) -> Response:
        """End the session."""
        if not _origin_ok(request):
            return JSONResponse(
                {"error": {"code": "bad-origin", "message": "the request came from another site"}}, status_code=403
            )
        auth.sessions.drop(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure(request))
        return response

    # ------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview_page(request: Request) -> Response:
        return html(request, "Overview", pages.overview(views.overview()), "/", charts=True)

    @app.get("/orgs", response_class=HTMLResponse, include_in_schema=False)
    def orgs_page(request: Request) -> Response:
        return html(request, "Organisations", pages.orgs(views.orgs()), "/orgs")

    @app.get("/orgs/{account}", response_class=HTMLResponse, include_in_schema=False)
    def org_page(request: Request, account: str) -> Response:
        o = views.org(_address_param(account, "account") or "")
        if o is None:
            raise HTTPException(404, f"no organisation {account} in the auditor's store")
        return html(request, o["name"], pages.org(o), "/orgs")

    @app.get("/datasets", response_class=HTMLResponse, include_in_schema=False)
    def datasets_page(request: Request) -> Response:
        return html(request, "Datasets", pages.datasets(views.datasets()), "/datasets")

    @app.get("/datasets/{dataset_id}", response_class=HTMLResponse, include_in_schema=False)
    def dataset_page(request: Request, dataset_id: str) -> Response:
        ds_id = _int_param(dataset_id, "dataset id")
        d = views.dataset(ds_id) if ds_id is not None else None
        if d is None:
            raise HTTPException(404, f"no dataset {dataset_id} in the auditor's store")
        return html(request, f"Dataset {ds_id}", pages.dataset(d), "/datasets")

    @app.get("/algorithms", response_class=HTMLResponse, include_in_schema=False)
    def algorithms_page(request: Request) -> Response:
        return html(request, "Algorithms", pages.algorithms(views.algorithms()), "/algorithms")

    @app.get("/tasks", response_class=HTMLResponse, include_in_schema=False)
    def tasks_page(
        request: Request,
        status: str | None = None,
        org: str | None = None,
        dataset: str | None = None,
        algorithm: str | None = None,
        page: str | None = None,
    ) -> Response:
        params = {"status": status or "", "org": org or "", "dataset": dataset or "", "algorithm": algorithm or ""}
        try:
            v = views.tasks(
                status or None,
                _address_param(org),
                _int_param(dataset, "dataset"),
                algorithm or None,
                _int_param(page, "page") or 1,
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        content = pages.tasks(v, params, views.org_choices(), views.dataset_choices())
        return html(request, "Tasks", content, "/tasks")

    @app.get("/tasks/{task_id}", response_class=HTMLResponse, include_in_schema=False)
    def task_page(request: Request, task_id: str) -> Response:
        tid = _int_param(task_id, "task id")
        x = views.task(tid) if tid is not None else None
        if x is None:
            raise HTTPException(404, f"no task {task_id} in the auditor's store (unknown, or not indexed yet)")
        return html(request, f"Task {tid}", pages.task(x), "/tasks")

    @app.get("/anomalies", response_class=HTMLResponse, include_in_schema=False)
    def anomalies_page(
        request: Request,
        kind: str | None = None,
        severity: str | None = None,
        state: str | None = None,
        org: str | None = None,
        task: str | None = None,
        dataset: str | None = None,
        page: str | None = None,
    ) -> Response:
        params = {
            "kind": kind or "",
            "severity": severity or "",
            "state": state or "open",
            "org": org or "",
            "task": task or "",
            "dataset": dataset or "",
        }
        try:
            v = views.anomalies(
                kind or None,
                severity or None,
                state or "open",
                _address_param(org),
                _int_param(task, "task"),
                _int_param(dataset, "dataset"),
                _int_param(page, "page") or 1,
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return html(request, "Anomalies", pages.anomalies(v, params, views.org_choices()), "/anomalies")

    @app.get("/tx/{tx_hash}", response_class=HTMLResponse, include_in_schema=False)
    def tx_page(request: Request, tx_hash: str) -> Response:
        x = views.tx(tx_hash)
        if x is None:
            raise HTTPException(404, f"no pcn event from transaction {tx_hash} in the auditor's store")
        return html(request, "Transaction", pages.tx(x), live_page=False)

    def _report(from_: str | None, to: str | None, org: str | None, dataset: str | None) -> dict[str, Any]:
        if not from_ or not to:
            raise HTTPException(400, "give both a start (from) and an end (to) date")
        try:
            return reports_mod.build_report(
                st,
                reports_mod.parse_when(from_),
                reports_mod.parse_when(to, end=True),
                org or None,
                _int_param(dataset, "dataset"),
            )
        except reports_mod.ReportError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/reports", response_class=HTMLResponse, include_in_schema=False)
    def reports_page(
        request: Request,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
        org: str | None = None,
        dataset: str | None = None,
    ) -> Response:
        import datetime as dt

        params: dict[str, Any] = {"from": from_ or "", "to": to or "", "org": org or "", "dataset": dataset or ""}
        preview, error = None, None
        if from_ or to:
            try:
                preview = Html(reports_mod.report_html(_report(from_, to, org, dataset), standalone=False))
            except HTTPException as exc:
                error = str(exc.detail)
        else:
            info = views.status()
            end = info.get("indexed_at") or int(time.time())
            params["to"] = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%Y-%m-%d")
            params["from"] = dt.datetime.fromtimestamp(end - 30 * 86400, dt.UTC).strftime("%Y-%m-%d")
        content = pages.reports(params, views.org_choices(), views.dataset_choices(), preview, error)
        response = html(request, "Reports", content, "/reports", live_page=False)
        if error:
            response.status_code = 400
        return response

    @app.get("/reports/download", include_in_schema=False)
    def report_download(
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
        org: str | None = None,
        dataset: str | None = None,
        format: str = "csv",
    ) -> Response:
        if format not in reports_mod.FORMATS:
            raise HTTPException(400, f"format must be one of {', '.join(reports_mod.FORMATS)}")
        report = _report(from_, to, org, dataset)
        body = reports_mod.render(report, format)
        media = {"json": "application/json", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}[
            format
        ]
        name = f"pcn-audit-report_{report['period']['from'][:10]}_{report['period']['to'][:10]}.{format}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if format == "html":
            headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
        return Response(body, media_type=media, headers=headers)

    # ------------------------------------------------------------------ JSON API

    @app.get("/api/status", tags=["api"])
    def api_status() -> dict[str, Any]:
        """Index position and counters; `stamp` changes whenever anything shown may have changed."""
        return status_info()

    @app.get("/api/session", tags=["api"])
    def api_session(request: Request) -> dict[str, Any]:
        s = request.state.session
        return {
            "address": s.address,
            "created": int(s.created),
            "expires_at": int(s.expires),
            "chain_id": auth.chain_id,
        }

    @app.get("/api/overview", tags=["api"])
    def api_overview() -> dict[str, Any]:
        return views.overview()

    @app.get("/api/orgs", tags=["api"])
    def api_orgs() -> list[dict[str, Any]]:
        return views.orgs()

    @app.get("/api/orgs/{account}", tags=["api"])
    def api_org(account: Annotated[str, PathParam(pattern=r"^0x[0-9a-fA-F]{40}$")]) -> dict[str, Any]:
        o = views.org(account)
        if o is None:
            raise HTTPException(404, f"no organisation {account}")
        return o

    @app.get("/api/datasets", tags=["api"])
    def api_datasets() -> list[dict[str, Any]]:
        return views.datasets()

    @app.get("/api/datasets/{dataset_id}", tags=["api"])
    def api_dataset(dataset_id: Annotated[int, PathParam(ge=0, lt=2**63)]) -> dict[str, Any]:
        d = views.dataset(dataset_id)
        if d is None:
            raise HTTPException(404, f"no dataset {dataset_id}")
        return d

    @app.get("/api/algorithms", tags=["api"])
    def api_algorithms() -> list[dict[str, Any]]:
        return views.algorithms()

    @app.get("/api/tasks", tags=["api"])
    def api_tasks(
        status: str | None = None,
        org: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$")] = None,
        dataset: Annotated[int | None, Query(ge=0, lt=2**63)] = None,
        algorithm: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{64}$")] = None,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        per_page: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        try:
            return views.tasks(status or None, org, dataset, algorithm, page, per_page)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/api/tasks/{task_id}", tags=["api"])
    def api_task(task_id: Annotated[int, PathParam(ge=0, lt=2**63)]) -> dict[str, Any]:
        x = views.task(task_id)
        if x is None:
            raise HTTPException(404, f"no task {task_id} in the auditor's store")
        return x

    @app.get("/api/anomalies", tags=["api"])
    def api_anomalies(
        kind: str | None = None,
        severity: str | None = None,
        state: Annotated[str, Query(pattern="^(open|resolved|all)$")] = "open",
        org: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$")] = None,
        task: Annotated[int | None, Query(ge=0, lt=2**63)] = None,
        dataset: Annotated[int | None, Query(ge=0, lt=2**63)] = None,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        try:
            return views.anomalies(kind, severity, state, org, task, dataset, page, per_page)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/api/tx/{tx_hash}", tags=["api"])
    def api_tx(tx_hash: Annotated[str, PathParam(pattern=r"^0x[0-9a-fA-F]{64}$")]) -> dict[str, Any]:
        x = views.tx(tx_hash)
        if x is None:
            raise HTTPException(404, f"no pcn event from transaction {tx_hash}")
        return x

    @app.get("/api/report", tags=["api"])
    def api_report(
        from_: Annotated[str, Query(alias="from", max_length=40)],
        to: Annotated[str, Query(max_length=40)],
        org: Annotated[str | None, Query(max_length=64)] = None,
        dataset: Annotated[int | None, Query(ge=0, lt=2**63)] = None,
    ) -> dict[str, Any]:
        """The audit report for a period (dates, date-times or unix seconds)."""
        return _report(from_, to, org, str(dataset) if dataset is not None else None)

    return app
