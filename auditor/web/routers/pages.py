"""The server-rendered pages a regulator browses, all behind the session."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from pcn.auditor import reports
from pcn.auditor.web import pages
from pcn.auditor.web.deps import PageDep, StoreDep, ViewsDep, require_session
from pcn.auditor.web.html import Html
from pcn.auditor.web.params import address_param, int_param, report_for

router = APIRouter(
    default_response_class=HTMLResponse, include_in_schema=False, dependencies=[Depends(require_session)]
)


@router.get("/")
def overview_page(page: PageDep, views: ViewsDep) -> Response:
    return page("Overview", pages.overview(views.overview()), "/", charts=True)


@router.get("/orgs")
def orgs_page(page: PageDep, views: ViewsDep) -> Response:
    return page("Organisations", pages.orgs(views.orgs()), "/orgs")


@router.get("/orgs/{account}")
def org_page(page: PageDep, views: ViewsDep, account: str) -> Response:
    o = views.org(address_param(account, "account") or "")
    if o is None:
        raise HTTPException(404, f"no organisation {account} in the auditor's store")
    return page(o["name"], pages.org(o), "/orgs")


@router.get("/datasets")
def datasets_page(page: PageDep, views: ViewsDep) -> Response:
    return page("Datasets", pages.datasets(views.datasets()), "/datasets")


@router.get("/datasets/{dataset_id}")
def dataset_page(page: PageDep, views: ViewsDep, dataset_id: str) -> Response:
    ds_id = int_param(dataset_id, "dataset id")
    d = views.dataset(ds_id) if ds_id is not None else None
    if d is None:
        raise HTTPException(404, f"no dataset {dataset_id} in the auditor's store")
    return page(f"Dataset {ds_id}", pages.dataset(d), "/datasets")


@router.get("/algorithms")
def algorithms_page(page: PageDep, views: ViewsDep) -> Response:
    return page("Algorithms", pages.algorithms(views.algorithms()), "/algorithms")


@router.get("/tasks")
def tasks_page(
    page: PageDep,
    views: ViewsDep,
    status: str | None = None,
    org: str | None = None,
    dataset: str | None = None,
    algorithm: str | None = None,
    page_number: Annotated[str | None, Query(alias="page")] = None,
) -> Response:
    params = {"status": status or "", "org": org or "", "dataset": dataset or "", "algorithm": algorithm or ""}
    try:
        v = views.tasks(
            status or None,
            address_param(org),
            int_param(dataset, "dataset"),
            algorithm or None,
            int_param(page_number, "page") or 1,
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    content = pages.tasks(v, params, views.org_choices(), views.dataset_choices())
    return page("Tasks", content, "/tasks")


@router.get("/tasks/{task_id}")
def task_page(page: PageDep, views: ViewsDep, task_id: str) -> Response:
    tid = int_param(task_id, "task id")
    x = views.task(tid) if tid is not None else None
    if x is None:
        raise HTTPException(404, f"no task {task_id} in the auditor's store (unknown, or not indexed yet)")
    return page(f"Task {tid}", pages.task(x), "/tasks")


@router.get("/anomalies")
def anomalies_page(
    page: PageDep,
    views: ViewsDep,
    kind: str | None = None,
    severity: str | None = None,
    state: str | None = None,
    org: str | None = None,
    task: str | None = None,
    dataset: str | None = None,
    page_number: Annotated[str | None, Query(alias="page")] = None,
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
            address_param(org),
            int_param(task, "task"),
            int_param(dataset, "dataset"),
            int_param(page_number, "page") or 1,
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return page("Anomalies", pages.anomalies(v, params, views.org_choices()), "/anomalies")


@router.get("/tx/{tx_hash}")
def tx_page(page: PageDep, views: ViewsDep, tx_hash: str) -> Response:
    x = views.tx(tx_hash)
    if x is None:
        raise HTTPException(404, f"no pcn event from transaction {tx_hash} in the auditor's store")
    return page("Transaction", pages.tx(x), live=False)


@router.get("/reports")
def reports_page(
    page: PageDep,
    views: ViewsDep,
    store: StoreDep,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    org: str | None = None,
    dataset: str | None = None,
) -> Response:
    params: dict[str, Any] = {"from": from_ or "", "to": to or "", "org": org or "", "dataset": dataset or ""}
    preview, error = None, None
    if from_ or to:
        try:
            preview = Html(reports.report_html(report_for(store, from_, to, org, dataset), standalone=False))
        except HTTPException as exc:
            error = str(exc.detail)
    else:  # the last 30 days of chain time
        end = views.status().get("indexed_at") or int(time.time())
        params["to"] = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%Y-%m-%d")
        params["from"] = dt.datetime.fromtimestamp(end - 30 * 86400, dt.UTC).strftime("%Y-%m-%d")
    content = pages.reports(params, views.org_choices(), views.dataset_choices(), preview, error)
    response = page("Reports", content, "/reports", live=False)
    if error:
        response.status_code = 400
    return response


@router.get("/reports/download")
def report_download(
    store: StoreDep,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    org: str | None = None,
    dataset: str | None = None,
    format: str = "csv",
) -> Response:
    if format not in reports.FORMATS:
        raise HTTPException(400, f"format must be one of {', '.join(reports.FORMATS)}")
    report = report_for(store, from_, to, org, dataset)
    body = reports.render(report, format)
    media = {"json": "application/json", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}[format]
    name = f"pcn-audit-report_{report['period']['from'][:10]}_{report['period']['to'][:10]}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "html":
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return Response(body, media_type=media, headers=headers)
