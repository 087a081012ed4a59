"""Live updates: every page polls /api/status every 2 s and reloads its content when `stamp` changes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from pcn.auditor.web import models
from pcn.auditor.web.deps import DashboardDep, require_session

router = APIRouter(
    tags=["api"],
    dependencies=[Depends(require_session)],
    responses={401: {"model": models.ErrorResponse, "description": "No session: sign in first"}},
)


@router.get("/api/status", response_model=models.Status)
def api_status(dashboard: DashboardDep) -> dict[str, Any]:
    """Index position and counters; `stamp` changes whenever anything shown may have changed."""
    return dashboard.status()
