"""Reading what a request asks for: numbers and addresses from page URLs (a bad one is a 400
with a plain message, not a validation dump), the report period, redirect targets, capped bodies."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from eth_utils import is_address, to_checksum_address
from fastapi import HTTPException, Request

from pcn.auditor import reports
from pcn.auditor.store import Store


def int_param(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number, not {value!r}") from None
    if number < 0 or number >= 2**63:
        raise HTTPException(400, f"{name} is out of range")
    return number


def address_param(value: str | None, name: str = "org") -> str | None:
    if value is None or value == "":
        return None
    if not is_address(value):
        raise HTTPException(400, f"{name} must be an Ethereum address, not {value!r}")
    return to_checksum_address(value)


def safe_next(value: str | None) -> str:
    """Only a path on this site (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


async def read_capped(request: Request, limit: int) -> bytes | None:
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


def report_for(store: Store, from_: str | None, to: str | None, org: str | None, dataset: str | None) -> dict[str, Any]:
    """The audit report a page or the API asks for; a bad period, organisation or dataset is a 400."""
    if not from_ or not to:
        raise HTTPException(400, "give both a start (from) and an end (to) date")
    try:
        return reports.build_report(
            store,
            reports.parse_when(from_),
            reports.parse_when(to, end=True),
            org or None,
            int_param(dataset, "dataset"),
        )
    except reports.ReportError as exc:
        raise HTTPException(400, str(exc)) from None
