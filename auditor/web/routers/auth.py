"""Sign-In with Ethereum: the login page, nonces, sign-in and sign-out (public routes; see
`pcn.auditor.web.auth` for the checks a sign-in passes). Sign-in and sign-out are the only
state-changing routes; both refuse a request from another site (Origin)."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from pcn.auditor.web import models
from pcn.auditor.web.auth import AuthError
from pcn.auditor.web.dashboard import COOKIE, Dashboard
from pcn.auditor.web.deps import DashboardDep
from pcn.auditor.web.params import read_capped, safe_next
from pcn.auditor.web.render import render
from pcn.auditor.web.siwe import STATEMENT, iso, siwe_message

log = logging.getLogger("pcn.auditor.web")

MAX_AUTH_BODY = 16 * 1024

router = APIRouter()


def _origin_ok(request: Request, domain: str | None) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    expected = {request.headers.get("host", "")}
    if domain:
        expected.add(domain)
    return urlsplit(origin).netloc in expected


def _issue(request: Request, dashboard: Dashboard, address: str) -> dict[str, Any]:
    wait = dashboard.nonce_limiter.hit(dashboard.client(request))
    if wait is not None:
        raise HTTPException(
            429, f"too many sign-in messages asked for; wait {int(wait)} s", {"Retry-After": str(int(wait))}
        )
    auth = dashboard.auth
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


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login(request: Request, dashboard: DashboardDep, next: str | None = None, address: str | None = None) -> Response:
    next_url = safe_next(next)
    session = dashboard.auth.sessions.get(request.cookies.get(COOKIE))
    if session is not None and address is None:
        return RedirectResponse(next_url, status_code=303)
    message, error, expires_in, shown = "", None, None, address or ""
    if address:
        if not is_address(address.strip()):
            error = f"{address!r} is not an Ethereum address (0x followed by 40 hex digits)."
        else:
            shown = to_checksum_address(address.strip())
            try:
                issued = _issue(request, dashboard, shown)
                message, expires_in = issued["message"], issued["expires_in"]
            except HTTPException as exc:
                error = str(exc.detail)
    return HTMLResponse(
        render(
            "login.html",
            chain_id=dashboard.auth.chain_id,
            domain=dashboard.auth.expected_domain(request.headers.get("host")),
            address=shown,
            message=message,
            next_url=next_url,
            error=error,
            expires_in=expires_in,
        ),
        status_code=429 if error and error.startswith("too many") else 200,
    )


@router.get(
    "/auth/nonce",
    tags=["auth"],
    response_model=models.NonceIssued,
    responses={
        400: {"model": models.ErrorResponse, "description": "Not an Ethereum address"},
        429: {"model": models.ErrorResponse, "description": "Too many sign-in messages asked for"},
    },
)
def nonce(request: Request, dashboard: DashboardDep, address: str | None = None) -> dict[str, Any]:
    """A fresh single-use nonce (valid 5 minutes); with `address`, the whole EIP-4361
    message to sign as well."""
    if address is not None and not is_address(address):
        raise HTTPException(400, f"{address!r} is not an Ethereum address")
    issued = _issue(request, dashboard, to_checksum_address(address) if address else "")
    if not address:
        issued["message"] = None
        issued["address"] = None
    return issued


@router.post(
    "/auth/verify",
    tags=["auth"],
    responses={
        200: {"model": models.SignedIn, "description": "Signed in (JSON body); a form post is redirected (303)"},
        **{
            status: {"model": models.ErrorResponse, "description": "Sign-in refused"}
            for status in (400, 401, 403, 413, 429, 503)
        },
    },
)
async def verify(request: Request, dashboard: DashboardDep) -> Response:
    """Sign in: body {message, signature} as JSON, or a form post from /login."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_form = ctype == "application/x-www-form-urlencoded"
    auth, client = dashboard.auth, dashboard.client

    def fail(
        status: int, code: str, message: str, address: str = "", headers: dict[str, str] | None = None
    ) -> Response:
        if is_form:
            return HTMLResponse(
                render(
                    "login.html",
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
    if not _origin_ok(request, dashboard.domain):
        return fail(403, "bad-origin", "the request came from another site")
    wait = dashboard.login_limiter.hit(client(request))
    if wait is not None:
        return fail(
            429,
            "rate-limited",
            f"too many sign-in attempts; wait {int(wait)} s",
            headers={"Retry-After": str(int(wait))},
        )
    body = await read_capped(request, MAX_AUTH_BODY)
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
        next_url = safe_next(data.get("next") if isinstance(data.get("next"), str) else None)
        if not isinstance(message, str) or not isinstance(signature, str):
            raise ValueError("message and signature are required strings")
    except (ValueError, UnicodeDecodeError) as exc:
        return fail(400, "bad-request", f"send {{message, signature}}: {exc}")
    message = message.replace("\r\n", "\n").strip("\n") if is_form else message
    try:
        session = await run_in_threadpool(auth.verify, message, signature.strip(), request.headers.get("host"))
    except AuthError as exc:
        log.info("sign-in refused from %s: %s", client(request), exc.message)
        lines = message.split("\n")
        return fail(exc.status, exc.code, exc.message, lines[1] if len(lines) > 1 and is_address(lines[1]) else "")
    log.info("%s signed in from %s", session.address, client(request))
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
        max_age=int(dashboard.session_ttl),
        httponly=True,
        samesite="strict",
        secure=dashboard.secure(request),
        path="/",
    )
    return response


@router.post(
    "/auth/logout",
    tags=["auth"],
    status_code=303,
    responses={403: {"model": models.ErrorResponse, "description": "From another site"}},
)
async def logout(request: Request, dashboard: DashboardDep) -> Response:
    """End the session."""
    if not _origin_ok(request, dashboard.domain):
        return JSONResponse(
            {"error": {"code": "bad-origin", "message": "the request came from another site"}}, status_code=403
        )
    dashboard.auth.sessions.drop(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=dashboard.secure(request))
    return response
