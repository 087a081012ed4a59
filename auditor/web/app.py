"""The regulator's dashboard: a read-only FastAPI app behind Sign-In with Ethereum.

`create_dashboard_app(store, ledger, ...)` assembles it: the routers (`pcn.auditor.web.routers`:
pages, JSON API, auth, live status), the static files, the security middleware and the error
handlers, over one `Dashboard` (the shared state, in `app.state.dashboard`). Every route but
/login, /auth/* and /static/* needs a session; HTML pages redirect to /login, /api/* answer 401:

- pages: / (overview), /orgs, /orgs/{account}, /datasets, /datasets/{id}, /algorithms,
  /tasks, /tasks/{id}, /anomalies, /tx/{hash}, /reports, /reports/download;
- JSON: /api/status (polled by the pages every 2 s for live updates), /api/session,
  /api/overview, /api/orgs[/{account}], /api/datasets[/{id}], /api/algorithms,
  /api/tasks[/{id}], /api/anomalies, /api/tx/{hash}, /api/report, /api/openapi.json;
- auth: GET /login, GET /auth/nonce, POST /auth/verify, POST /auth/logout.

The only state-changing routes are sign-in and sign-out. See `pcn.auditor.web.auth` for the
checks a sign-in passes and `pcn.auditor.web.dashboard` for reverse proxies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pcn.auditor.store import Store, open_store
from pcn.auditor.web.dashboard import Dashboard
from pcn.auditor.web.deps import SignInRequired
from pcn.auditor.web.live import LiveAuditor
from pcn.auditor.web.render import render
from pcn.auditor.web.routers import api, auth, live
from pcn.auditor.web.routers import pages as page_routes
from pcn.chain.ledger import Ledger

STATIC_DIR = Path(__file__).parent / "static"
MAX_URL = 8 * 1024  # path + query string; longer is 414 before any routing or session lookup
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
ERROR_TITLES = {400: "That request is not valid", 404: "Not found", 405: "Not allowed"}


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _is_public(path: str) -> bool:
    return path.startswith("/static/") or path == "/login" or path.startswith("/auth/")


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
    st = open_store(store)
    live_auditor = LiveAuditor(
        st,
        ledger,
        run_indexer=run_indexer,
        watch_anomalies=run_indexer if watch_anomalies is None else watch_anomalies,
        confirmations=confirmations,
        interval=poll_interval,
    )
    dashboard = Dashboard(
        st,
        ledger,
        session_ttl=session_ttl,
        domain=domain,
        live=live_auditor,
        login_limit=login_limit,
        login_window=login_window,
        nonce_limit=nonce_limit,
        nonce_ttl=nonce_ttl,
        role_recheck=role_recheck,
        secure_cookies=secure_cookies,
        trusted_proxies=trusted_proxies,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        live_auditor.start()
        try:
            yield
        finally:
            live_auditor.stop()

    app = FastAPI(
        title="pcn audit dashboard",
        version="1",
        description="Read-only regulator dashboard over the pcn auditor's store (Sign-In with Ethereum).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by the API router, behind the session
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    for router in (auth.router, live.router, api.router, page_routes.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_security(app)
    _add_error_handlers(app, dashboard)
    _describe_validation_errors_as_served(app)
    return app


def _describe_validation_errors_as_served(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route with parameters; this app answers a request
    that fails validation with a 400 (a 404 for a page's malformed id, never under /api), in
    its own error shape. The published schema says what clients actually get."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault(
                        "400",
                        {
                            "description": "Invalid request parameters",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
                        },
                    )
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema


def _security_headers(response: Response, static: bool = False) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on form posts
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if not static:
        response.headers.setdefault("Cache-Control", "no-store")


def _add_security(app: FastAPI) -> None:
    @app.middleware("http")
    async def security(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        if len(raw_path) + len(request.scope.get("query_string") or b"") > MAX_URL:
            response: Response = JSONResponse(
                {"error": {"code": "uri-too-long", "message": f"the URL is longer than {MAX_URL} bytes"}},
                status_code=414,
            )
        else:
            response = await call_next(request)
        _security_headers(response, static=request.url.path.startswith("/static/"))
        return response


def _sign_in_first(request: Request) -> Response:
    if _is_api(request):
        return JSONResponse(
            {"error": {"code": "no-session", "message": "sign in first: GET /login"}},
            status_code=401,
            headers={"WWW-Authenticate": 'SIWE realm="pcn audit"'},
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _add_error_handlers(app: FastAPI, dashboard: Dashboard) -> None:
    @app.exception_handler(SignInRequired)
    async def no_session(request: Request, _exc: SignInRequired) -> Response:
        return _sign_in_first(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        session = getattr(request.state, "session", None)
        if session is None and not _is_public(request.url.path):
            # no route ran its session guard (an unknown path or method): say nothing without one
            session = await dashboard.session_of(request)
            if session is None:
                return _sign_in_first(request)
        if _is_api(request) or request.url.path.startswith("/auth/"):
            return JSONResponse(
                {"error": {"code": str(exc.status_code), "message": str(exc.detail)}},
                status_code=exc.status_code,
                headers=exc.headers,
            )
        return HTMLResponse(
            render(
                "error.html",
                title=ERROR_TITLES.get(exc.status_code, "Error"),
                message=str(exc.detail),
                user=session.address if session is not None else None,
                status=dashboard.status() if session is not None else None,  # nothing of the chain to a stranger
                active="",
                charts=False,
                live=False,
            ),
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in exc.errors()
        )
        status = 404 if request.url.path.startswith(("/tasks/", "/datasets/")) else 400
        return await http_error(request, HTTPException(status, problems))

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
        return await http_error(request, HTTPException(exc.status_code, exc.detail, exc.headers))
