"""Audit reports: from a single query to the periodic report a regulator files.

`build_report(store, from_ts, to_ts, org=None, dataset=None)` gathers, from the indexed
chain data alone, for the period [from_ts, to_ts] (chain time, unix seconds, inclusive):

- every task submitted in the period (optionally only those an organisation took part in,
  or that read a dataset) with its status, requester, recipient, algorithm, datasets,
  participants (and those reported dropped out) and its independent re-verification verdict;
- refusals in the period, by reason;
- anomalies that occurred in the period (detected afresh, so the report does not depend on
  a dashboard having run);
- per dataset: uses and ε consumed in the period, against its quota and budget;
- per organisation: what it did in the period.

`report_json` and `report_csv` render it (the printable HTML page is the dashboard's,
`pcn.auditor.web.render.report_html`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address
from sqlalchemy import func, select

from pcn.auditor.anomalies import detect
from pcn.auditor.chainview import chain_time
from pcn.auditor.store import (
    Algorithm,
    Approval,
    Dataset,
    DatasetUse,
    DatasetVersion,
    EventRow,
    IndexState,
    Organisation,
    OrgStatusChange,
    ReceiptRow,
    Refusal,
    Store,
    TaskDataset,
    TaskParticipant,
    TaskRow,
    using_store,
)
from pcn.auditor.verify import verify_task
from pcn.chain.types import EPSILON_SCALE, OrgStatus, RefusalReason, TaskStatus

REPORT_VERSION = 1
U64_MAX = 2**64 - 1


class ReportError(ValueError):
    """The report cannot be built as asked (bad period, unknown organisation or dataset)."""


# ---------------------------------------------------------------------------- time


def parse_when(text: str | int | float, end: bool = False) -> int:
    """Unix seconds from unix seconds, a date (YYYY-MM-DD: its first second, or its last with
    `end`), or an ISO 8601 date-time (UTC unless it names an offset)."""
    if isinstance(text, (int, float)):
        return int(text)
    value = str(text).strip()
    if re.fullmatch(r"\d{9,}", value):
        if len(value) > 19 or int(value) >= 2**63:  # what an SQL integer holds
            shown = value[:24] + ("…" if len(value) > 24 else "")
            raise ReportError(f"{shown} is out of range for unix seconds")
        return int(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            day = dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC)
        except ValueError:
            raise ReportError(f"{value!r} is not a valid date") from None
        return int(day.timestamp()) + (86399 if end else 0)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(
            f"{value!r} is not a time: give a date (2026-01-31), a date-time (2026-01-31T12:00Z) or unix seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def iso(ts: int | float | None) -> str:
    if ts is None:
        return ""
    try:
        return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return str(int(ts))


def _eps(value: int | None) -> float:
    return (value or 0) / EPSILON_SCALE


def _status(code: int) -> str:
    return TaskStatus(int(code)).name.lower()


# ---------------------------------------------------------------------------- build


def _resolve_org(s: Any, org: str | None) -> Organisation | None:
    if org is None or org == "":
        return None
    if is_address(org):
        found = s.get(Organisation, to_checksum_address(org))
    else:
        found = s.scalars(select(Organisation).where(Organisation.name == org)).first()
    if found is None:
        raise ReportError(f"no organisation {org!r} in the auditor's store (give its name or account)")
    return found


def build_report(
    store: Store | str | Path,
    from_ts: int,
    to_ts: int,
    org: str | None = None,
    dataset: int | None = None,
    *,
    verify: bool = True,
) -> dict[str, Any]:
    """The report for chain time [from_ts, to_ts] (see the module docstring)."""
    if to_ts < from_ts:
        raise ReportError(f"the period ends ({iso(to_ts)}) before it starts ({iso(from_ts)})")
    from_ts, to_ts = (min(max(int(x), 0), 2**63 - 1) for x in (from_ts, to_ts))  # what a BIGINT column holds
    with using_store(store) as st:
        with st.read() as s:
            state = s.get(IndexState, "main")
            as_of_block, as_of_time = chain_time(s)
            org_row = _resolve_org(s, org)
            if dataset is not None and s.get(Dataset, int(dataset)) is None:
                raise ReportError(f"no dataset {dataset} in the auditor's store")
            orgs = {o.account: o for o in s.scalars(select(Organisation))}
            algos = {a.code_hash.lower(): a for a in s.scalars(select(Algorithm))}

            def name(account: str | None) -> str:
                if not account:
                    return ""
                o = orgs.get(account)
                return o.name if o else ""

            # -- tasks in the period
            q = select(TaskRow).where(TaskRow.submitted_at >= from_ts, TaskRow.submitted_at <= to_ts)
            acc = org_row.account if org_row is not None else None
            if acc is not None:
                q = q.where(
                    (TaskRow.requester == acc)
                    | (TaskRow.result_recipient == acc)
                    | TaskRow.id.in_(select(TaskParticipant.task_id).where(TaskParticipant.account == acc))
                )
            if dataset is not None:
                q = q.where(TaskRow.id.in_(select(TaskDataset.task_id).where(TaskDataset.dataset_id == int(dataset))))
            task_rows = s.scalars(q.order_by(TaskRow.id)).all()
            task_ids = [t.id for t in task_rows]
            tds: dict[int, list[tuple[int, int]]] = defaultdict(list)
            parts: dict[int, list[str]] = defaultdict(list)
            dropped: dict[int, list[str]] = defaultdict(list)
            if task_ids:
                for td in s.scalars(
                    select(TaskDataset).where(TaskDataset.task_id.in_(task_ids)).order_by(TaskDataset.position)
                ):
                    tds[td.task_id].append((td.dataset_id, td.version))
                for p in s.scalars(
                    select(TaskParticipant)
                    .where(TaskParticipant.task_id.in_(task_ids))
                    .order_by(TaskParticipant.position)
                ):
                    parts[p.task_id].append(p.account)
                    if p.dropped_block is not None:
                        dropped[p.task_id].append(p.account)
            # -- refusals in the period
            rq = select(Refusal).where(Refusal.block_timestamp >= from_ts, Refusal.block_timestamp <= to_ts)
            refusals = s.scalars(rq.order_by(Refusal.block_number, Refusal.log_index)).all()
            if acc is not None or dataset is not None:
                scope = set(task_ids)
                refusals = [r for r in refusals if r.task_id in scope or (acc is not None and r.participant == acc)]
            # -- dataset usage
            dq = select(Dataset).order_by(Dataset.id)
            if dataset is not None:
                dq = dq.where(Dataset.id == int(dataset))
            elif acc is not None:
                dq = dq.where(Dataset.owner == acc)
            ds_rows = s.scalars(dq).all()
            usage: list[dict[str, Any]] = []
            for d in ds_rows:
                uses = s.scalars(
                    select(DatasetUse).where(
                        DatasetUse.dataset_id == d.id,
                        DatasetUse.block_timestamp >= from_ts,
                        DatasetUse.block_timestamp <= to_ts,
                    )
                ).all()
                eps_period = 0
                requesters: Counter[str] = Counter()
                for u in uses:
                    t = s.get(TaskRow, u.task_id)
                    if t is not None:
                        eps_period += t.epsilon
                        requesters[t.requester] += 1
                version = s.scalars(
                    select(DatasetVersion).where(DatasetVersion.dataset_id == d.id, DatasetVersion.version == d.version)
                ).first()
                usage.append(
                    {
                        "dataset_id": d.id,
                        "owner": d.owner,
                        "owner_name": name(d.owner),
                        "version": d.version,
                        "fingerprint": version.merkle_root if version else None,
                        "uses_in_period": len(uses),
                        "epsilon_in_period": _eps(eps_period),
                        "tasks_in_period": [u.task_id for u in uses],
                        "requesters_in_period": [
                            {"account": a, "name": name(a), "uses": n} for a, n in sorted(requesters.items())
                        ],
                        "uses_total": d.uses,
                        "max_uses": d.max_uses,
                        "epsilon_spent_total": _eps(d.epsilon_spent),
                        "epsilon_budget": _eps(d.epsilon_total),
                        "policy_expiry": None if d.expiry >= U64_MAX else d.expiry,
                    }
                )
            # -- organisations
            org_list = [org_row] if org_row is not None else sorted(orgs.values(), key=lambda o: o.admitted_block)
            acts: dict[str, Counter[str]] = defaultdict(Counter)
            for model, col, what in (
                (TaskRow, TaskRow.requester, "tasks_requested"),
                (Approval, Approval.owner, "approvals"),
                (ReceiptRow, ReceiptRow.participant, "receipts"),
                (Refusal, Refusal.participant, "refusals"),
                (Dataset, Dataset.owner, "datasets_registered"),
            ):
                ts_col = {
                    TaskRow: TaskRow.submitted_at,
                    Approval: Approval.block_timestamp,
                    ReceiptRow: ReceiptRow.block_timestamp,
                    Refusal: Refusal.block_timestamp,
                    Dataset: Dataset.registered_at,
                }[model]
                for who, n in s.execute(
                    select(col, func.count()).where(ts_col >= from_ts, ts_col <= to_ts).group_by(col)
                ).all():
                    acts[who][what] = int(n)
            for who, n in s.execute(
                select(TaskParticipant.account, func.count())
                .join(TaskRow, TaskRow.id == TaskParticipant.task_id)
                .where(TaskRow.submitted_at >= from_ts, TaskRow.submitted_at <= to_ts)
                .group_by(TaskParticipant.account)
            ).all():
                acts[who]["tasks_participated"] = int(n)
            for actor, n in s.execute(
                select(EventRow.actor, func.count())
                .where(
                    EventRow.name == "TaskStarted",
                    EventRow.block_timestamp >= from_ts,
                    EventRow.block_timestamp <= to_ts,
                )
                .group_by(EventRow.actor)
            ).all():
                if actor:
                    acts[actor]["starts"] = int(n)
            changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for c in s.scalars(
                select(OrgStatusChange)
                .where(OrgStatusChange.block_timestamp >= from_ts, OrgStatusChange.block_timestamp <= to_ts)
                .order_by(OrgStatusChange.block_number, OrgStatusChange.log_index)
            ):
                changes[c.account].append({"change": c.change, "time": iso(c.block_timestamp), "tx": c.tx_hash})
            organisations = [
                {
                    "account": o.account,
                    "name": o.name,
                    "status": OrgStatus(o.status).name.lower(),
                    "status_changes": changes.get(o.account, []),
                    **{
                        k: acts[o.account].get(k, 0)
                        for k in (
                            "tasks_requested",
                            "tasks_participated",
                            "approvals",
                            "starts",
                            "receipts",
                            "refusals",
                            "datasets_registered",
                        )
                    },
                }
                for o in org_list
            ]
            chain_id = state.chain_id if state is not None else None
        # -- verdicts (each in its own read)
        tasks = []
        verdicts: Counter[str] = Counter()
        for t in task_rows:
            item: dict[str, Any] = {
                "task_id": t.id,
                "submitted_at": iso(t.submitted_at),
                "submitted_block": t.submitted_block,
                "submit_tx": t.submit_tx,
                "status": _status(t.status),
                "requester": t.requester,
                "requester_name": name(t.requester),
                "recipient": t.result_recipient,
                "recipient_name": name(t.result_recipient),
                "algorithm_hash": t.algorithm_hash,
                "algorithm": (
                    f"{algos[t.algorithm_hash.lower()].kind} {algos[t.algorithm_hash.lower()].version}"
                    if t.algorithm_hash.lower() in algos
                    else ""
                ),
                "datasets": [d for d, _ in tds.get(t.id, [])],
                "dataset_versions": [v for _, v in tds.get(t.id, [])],
                "participants": parts.get(t.id, []),
                "participant_names": [name(p) for p in parts.get(t.id, [])],
                "dropped": dropped.get(t.id, []),  # reported dropped out by the result recipient
                "epsilon": _eps(t.epsilon),
                "deadline": iso(t.deadline) if t.deadline < U64_MAX else "",
                "closed_at": iso(t.closed_at),
                "result_hash": t.result_hash or "",
                "refusal_reason": RefusalReason(t.refusal_reason).name.lower() if t.refusal_reason else "",
            }
            if verify:
                v = verify_task(st, t.id)
                item["verdict"] = str(v.verdict)
                item["failed_checks"] = [c.name for c in v.failures]
                item["warnings"] = [c.name for c in v.warnings]
                verdicts[str(v.verdict)] += 1
            tasks.append(item)
        # -- anomalies (detected afresh)
        scope_tasks = set(task_ids)
        owned = {d.id for d in ds_rows}
        anomalies = []
        for a in detect(st):
            if a.occurred_at is not None and not (from_ts <= a.occurred_at <= to_ts):
                continue
            if acc is not None and not (
                a.org == acc or (a.task_id is not None and a.task_id in scope_tasks) or a.dataset_id in owned
            ):
                continue
            if dataset is not None and not (
                a.dataset_id == int(dataset) or (a.task_id is not None and a.task_id in scope_tasks)
            ):
                continue
            found = a.to_dict()
            found["org_name"] = name(a.org)
            found["occurred_at"] = iso(a.occurred_at) if a.occurred_at is not None else ""
            anomalies.append(found)
    by_reason: dict[int, list[int]] = defaultdict(list)
    for r in refusals:
        by_reason[int(r.reason)].append(r.task_id)
    refusals_out = [
        {
            "reason": RefusalReason(code).name.lower(),
            "reason_code": code,
            "count": len(ids),
            "tasks": sorted(set(ids)),
        }
        for code, ids in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    status_counts = Counter(t["status"] for t in tasks)
    severity_counts = Counter(a["severity"] for a in anomalies)
    return {
        "report": "pcn audit report",
        "version": REPORT_VERSION,
        "generated_at": iso(time.time()),
        "chain_id": chain_id,
        "as_of_block": as_of_block,
        "as_of_time": iso(as_of_time) if as_of_time else "",
        "period": {"from": iso(from_ts), "to": iso(to_ts), "from_ts": from_ts, "to_ts": to_ts},
        "filters": {
            "org": org_row.account if org_row is not None else None,
            "org_name": org_row.name if org_row is not None else None,
            "dataset": int(dataset) if dataset is not None else None,
        },
        "summary": {
            "tasks": len(tasks),
            "tasks_by_status": dict(sorted(status_counts.items())),
            "verdicts": dict(sorted(verdicts.items())),
            "refusals": len(refusals),
            "anomalies": len(anomalies),
            "anomalies_by_severity": dict(sorted(severity_counts.items())),
            "datasets_used": sum(1 for u in usage if u["uses_in_period"]),
            "epsilon_spent": round(sum(u["epsilon_in_period"] for u in usage), 6),
        },
        "tasks": tasks,
        "refusals_by_reason": refusals_out,
        "anomalies": anomalies,
        "dataset_usage": usage,
        "organisations": organisations,
    }


# ---------------------------------------------------------------------------- render


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False) + "\n"


TASK_COLUMNS = (
    "task_id",
    "submitted_at",
    "status",
    "verdict",
    "requester",
    "requester_name",
    "recipient",
    "recipient_name",
    "algorithm",
    "algorithm_hash",
    "datasets",
    "participants",
    "dropped",
    "epsilon",
    "deadline",
    "closed_at",
    "refusal_reason",
    "failed_checks",
    "warnings",
    "result_hash",
    "submit_tx",
)
ANOMALY_COLUMNS = (
    "severity",
    "kind",
    "occurred_at",
    "task_id",
    "dataset_id",
    "org",
    "org_name",
    "message",
    "tx_hashes",
)
USAGE_COLUMNS = (
    "dataset_id",
    "owner",
    "owner_name",
    "version",
    "uses_in_period",
    "epsilon_in_period",
    "uses_total",
    "max_uses",
    "epsilon_spent_total",
    "epsilon_budget",
)
ORG_COLUMNS = (
    "account",
    "name",
    "status",
    "tasks_requested",
    "tasks_participated",
    "approvals",
    "starts",
    "receipts",
    "refusals",
    "datasets_registered",
)


# A spreadsheet reads a cell starting with one of these as a formula (=HYPERLINK(...), +cmd|...).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell; text that a spreadsheet would run as a formula (organisation names, refusal
    details and the like come from the chain) gets a leading apostrophe, so it stays text."""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def report_csv(report: dict[str, Any]) -> str:
    """Sections, each a title row, a header row, its rows and an empty row: Tasks, then
    Anomalies, Refusals by reason, Dataset usage and Organisations. Rows end in CRLF (RFC 4180);
    cells that would start a formula are neutralised (`_cell`)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    p = report["period"]
    w.writerow(["pcn audit report", f"period {p['from']} to {p['to']}", f"as of block {report['as_of_block']}"])
    w.writerow([])

    def section(title: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        w.writerow([title])
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])
        w.writerow([])

    section("Tasks", TASK_COLUMNS, report["tasks"])
    section("Anomalies", ANOMALY_COLUMNS, report["anomalies"])
    section("Refusals by reason", ("reason", "reason_code", "count", "tasks"), report["refusals_by_reason"])
    section("Dataset usage", USAGE_COLUMNS, report["dataset_usage"])
    section("Organisations", ORG_COLUMNS, report["organisations"])
    return out.getvalue()


def read_csv_sections(text: str) -> dict[str, list[dict[str, str]]]:
    """The sections of `report_csv`'s output, as lists of rows (for tests and tools)."""
    rows = list(csv.reader(io.StringIO(text)))
    sections: dict[str, list[dict[str, str]]] = {}
    i = 2
    while i < len(rows):
        if not rows[i]:
            i += 1
            continue
        title, header = rows[i][0], rows[i + 1]
        i += 2
        items = []
        while i < len(rows) and rows[i]:
            items.append(dict(zip(header, rows[i], strict=False)))
            i += 1
        sections[title] = items
    return sections
