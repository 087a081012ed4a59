"""The server-rendered pages a regulator browses, all behind the session."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from pcn.auditor.web.deps import PageDep, StoreDep, ViewsDep, require_session
from pcn.auditor.web.params import address_param, int_param, report_for
from pcn.auditor.web.render import FORMATS, render_report

router = APIRouter(
    default_response_class=HTMLResponse, include_in_schema=False, dependencies=[Depends(require_session)]
)


@router.get("/")
def overview_page(page: PageDep, views: ViewsDep) -> Response:
    return page("overview.html", "Overview", "/", charts=True, v=views.overview())


@router.get("/orgs")
def orgs_page(page: PageDep, views: ViewsDep) -> Response:
    return page("orgs.html", "Organisations", "/orgs", items=views.orgs())


@router.get("/orgs/{account}")
def org_page(page: PageDep, views: ViewsDep, account: str) -> Response:
    o = views.org(address_param(account, "account") or "")
    if o is None:
        raise HTTPException(404, f"no organisation {account} in the auditor's store")
    return page("org.html", o["name"], "/orgs", o=o)


@router.get("/datasets")
def datasets_page(page: PageDep, views: ViewsDep) -> Response:
    return page("datasets.html", "Datasets", "/datasets", items=views.datasets())


@router.get("/datasets/{dataset_id}")
def dataset_page(page: PageDep, views: ViewsDep, dataset_id: str) -> Response:
    ds_id = int_param(dataset_id, "dataset id")
    d = views.dataset(ds_id) if ds_id is not None else None
    if d is None:
        raise HTTPException(404, f"no dataset {dataset_id} in the auditor's store")
    return page("dataset.html", f"Dataset {ds_id}", "/datasets", d=d)


@router.get("/algorithms")
def algorithms_page(page: PageDep, views: ViewsDep) -> Response:
    return page("algorithms.html", "Algorithms", "/algorithms", items=views.algorithms())


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
    return page(
        "tasks.html",
        "Tasks",
        "/tasks",
        v=v,
        params=params,
        org_choices=views.org_choices(),
        dataset_choices=views.dataset_choices(),
    )


@router.get("/tasks/{task_id}")
def task_page(page: PageDep, views: ViewsDep, task_id: str) -> Response:
    tid = int_param(task_id, "task id")
    x = views.task(tid) if tid is not None else None
    if x is None:
        raise HTTPException(404, f"no task {task_id} in the auditor's store (unknown, or not indexed yet)")
    return page("task.html", f"Task {tid}", "/tasks", x=x)


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
    return page("anomalies.html", "Anomalies", "/anomalies", v=v, params=params, org_choices=views.org_choices())


@router.get("/tx/{tx_hash}")
def tx_page(page: PageDep, views: ViewsDep, tx_hash: str) -> Response:
    x = views.tx(tx_hash)
    if x is None:
        raise HTTPException(404, f"no pcn event from transaction {tx_hash} in the auditor's store")
    return page("tx.html", "Transaction", live=False, x=x)


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
    report, error = None, None
    if from_ or to:
        try:
            report = report_for(store, from_, to, org, dataset)
        except HTTPException as exc:
            error = str(exc.detail)
    else:  # the last 30 days of chain time
        end = views.status().get("indexed_at") or int(time.time())
        params["to"] = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%Y-%m-%d")
        params["from"] = dt.datetime.fromtimestamp(end - 30 * 86400, dt.UTC).strftime("%Y-%m-%d")
    response = page(
        "reports.html",
        "Reports",
        "/reports",
        live=False,
        params=params,
        org_choices=views.org_choices(),
        dataset_choices=views.dataset_choices(),
        report=report,
        error=error,
    )
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
    if format not in FORMATS:
        raise HTTPException(400, f"format must be one of {', '.join(FORMATS)}")
    report = report_for(store, from_, to, org, dataset)
    body = render_report(report, format)
    media = {"json": "application/json", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}[format]
    name = f"pcn-audit-report_{report['period']['from'][:10]}_{report['period']['to'][:10]}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format == "html":
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return Response(body, media_type=media, headers=headers)
