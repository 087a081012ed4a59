"""The JSON API: the same read models the pages render (`pcn.auditor.web.views`), and the
OpenAPI schema that describes it, all behind the session."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from pcn.auditor.web import models
from pcn.auditor.web.deps import DashboardDep, SessionDep, StoreDep, ViewsDep, require_session
from pcn.auditor.web.params import report_for

router = APIRouter(
    prefix="/api",
    tags=["api"],
    dependencies=[Depends(require_session)],
    responses={401: {"model": models.ErrorResponse, "description": "No session: sign in first"}},
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": models.ErrorResponse, "description": "Not in the store"}}
BAD_REQUEST: dict[int | str, dict[str, Any]] = {400: {"model": models.ErrorResponse, "description": "Bad parameters"}}

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
HASH = r"^0x[0-9a-fA-F]{64}$"
StoreInt = Annotated[int, PathParam(ge=0, lt=2**63)]  # what an SQL integer holds


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/session", response_model=models.SessionInfo, response_model_exclude_unset=True)
def api_session(session: SessionDep, dashboard: DashboardDep) -> dict[str, Any]:
    return {
        "address": session.address,
        "created": int(session.created),
        "expires_at": int(session.expires),
        "chain_id": dashboard.auth.chain_id,
    }


@router.get("/overview", response_model=models.Overview, response_model_exclude_unset=True)
def api_overview(views: ViewsDep) -> dict[str, Any]:
    return views.overview()


@router.get("/orgs", response_model=list[models.OrgSummary], response_model_exclude_unset=True)
def api_orgs(views: ViewsDep) -> list[dict[str, Any]]:
    return views.orgs()


@router.get("/orgs/{account}", response_model=models.OrgDetail, response_model_exclude_unset=True, responses=NOT_FOUND)
def api_org(views: ViewsDep, account: Annotated[str, PathParam(pattern=ADDRESS)]) -> dict[str, Any]:
    o = views.org(account)
    if o is None:
        raise HTTPException(404, f"no organisation {account}")
    return o


@router.get("/datasets", response_model=list[models.DatasetSummary], response_model_exclude_unset=True)
def api_datasets(views: ViewsDep) -> list[dict[str, Any]]:
    return views.datasets()


@router.get(
    "/datasets/{dataset_id}",
    response_model=models.DatasetDetail,
    response_model_exclude_unset=True,
    responses=NOT_FOUND,
)
def api_dataset(views: ViewsDep, dataset_id: StoreInt) -> dict[str, Any]:
    d = views.dataset(dataset_id)
    if d is None:
        raise HTTPException(404, f"no dataset {dataset_id}")
    return d


@router.get("/algorithms", response_model=list[models.AlgorithmSummary], response_model_exclude_unset=True)
def api_algorithms(views: ViewsDep) -> list[dict[str, Any]]:
    return views.algorithms()


@router.get("/tasks", response_model=models.TaskPage, response_model_exclude_unset=True, responses=BAD_REQUEST)
def api_tasks(
    views: ViewsDep,
    status: str | None = None,
    org: Annotated[str | None, Query(pattern=ADDRESS)] = None,
    dataset: Annotated[int | None, Query(ge=0, lt=2**63)] = None,
    algorithm: Annotated[str | None, Query(pattern=HASH)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    try:
        return views.tasks(status or None, org, dataset, algorithm, page, per_page)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


@router.get(
    "/tasks/{task_id}", response_model=models.TaskDetail, response_model_exclude_unset=True, responses=NOT_FOUND
)
def api_task(views: ViewsDep, task_id: StoreInt) -> dict[str, Any]:
    x = views.task(task_id)
    if x is None:
        raise HTTPException(404, f"no task {task_id} in the auditor's store")
    return x


@router.get("/anomalies", response_model=models.AnomalyPage, response_model_exclude_unset=True, responses=BAD_REQUEST)
def api_anomalies(
    views: ViewsDep,
    kind: str | None = None,
    severity: str | None = None,
    state: Annotated[str, Query(pattern="^(open|resolved|all)$")] = "open",
    org: Annotated[str | None, Query(pattern=ADDRESS)] = None,
    task: Annotated[int | None, Query(ge=0, lt=2**63)] = None,
    dataset: Annotated[int | None, Query(ge=0, lt=2**63)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    try:
        return views.anomalies(kind, severity, state, org, task, dataset, page, per_page)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("/tx/{tx_hash}", response_model=models.Transaction, response_model_exclude_unset=True, responses=NOT_FOUND)
def api_tx(views: ViewsDep, tx_hash: Annotated[str, PathParam(pattern=HASH)]) -> dict[str, Any]:
    x = views.tx(tx_hash)
    if x is None:
        raise HTTPException(404, f"no pcn event from transaction {tx_hash}")
    return x


@router.get("/report", response_model=models.Report, response_model_exclude_unset=True, responses=BAD_REQUEST)
def api_report(
    store: StoreDep,
    from_: Annotated[str, Query(alias="from", max_length=40)],
    to: Annotated[str, Query(max_length=40)],
    org: Annotated[str | None, Query(max_length=64)] = None,
    dataset: Annotated[int | None, Query(ge=0, lt=2**63)] = None,
) -> dict[str, Any]:
    """The audit report for a period (dates, date-times or unix seconds)."""
    return report_for(store, from_, to, org, str(dataset) if dataset is not None else None)
