"""What each dashboard page shows, as plain JSON-ready dicts read from the auditor's store.

The HTML pages (templates/) and the JSON API render the same dicts, so what
a regulator sees and what a script reads cannot drift apart. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from pcn.auditor import labels
from pcn.auditor.chainview import chain_time, pos
from pcn.auditor.store import (
    Algorithm,
    AnomalyRow,
    Approval,
    Dataset,
    DatasetUse,
    DatasetVersion,
    EventRow,
    IndexState,
    LogAnchor,
    LogCheck,
    Organisation,
    OrgStatusChange,
    PolicyGrant,
    PolicyLimitsChange,
    ReceiptRow,
    Refusal,
    RoleChange,
    Store,
    TaskDataset,
    TaskParticipant,
    TaskRow,
)
from pcn.auditor.verify import TaskNotIndexed, verify_task
from pcn.chain.types import EPSILON_SCALE, OrgStatus, ParticipantState, TaskStatus

OPEN_STATUSES = (int(TaskStatus.PENDING), int(TaskStatus.AUTHORISED), int(TaskStatus.RUNNING))
U64_MAX = 2**64 - 1


def _date(ts: int) -> str:
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, ValueError, OSError):
        return f"unix time {ts}"


def eps(value: int | None) -> float:
    return (value or 0) / EPSILON_SCALE


class Names:
    """Organisation names by account, for one request."""

    def __init__(self, s: Session) -> None:
        self.by_account = {o.account: o.name for o in s.scalars(select(Organisation))}
        self._lower = {k.lower(): v for k, v in self.by_account.items()}

    def __call__(self, account: str | None) -> str:
        if not account:
            return "—"
        name = self._lower.get(str(account).lower())
        return name if name else f"{account[:8]}…{account[-4:]}"

    def is_member(self, account: str) -> bool:
        return account.lower() in self._lower

    def ref(self, account: str | None) -> dict[str, Any] | None:
        if not account:
            return None
        return {"account": account, "name": self(account), "member": str(account).lower() in self._lower}


def humanize(text: str, names: Names | None = None) -> str:
    """A finding in plain words, with organisations by name (see labels.humanize)."""
    return labels.humanize(text, (lambda a: names(a) if names.is_member(a) else None) if names is not None else None)


def task_status(code: int) -> dict[str, Any]:
    label, tone, help_text = labels.TASK_STATUS.get(int(code), (str(code), "idle", ""))
    key = TaskStatus(int(code)).name.lower() if int(code) in {int(s) for s in TaskStatus} else str(code)
    return {"key": key, "label": label, "tone": tone, "help": help_text}


def _anomaly(a: AnomalyRow, names: Names) -> dict[str, Any]:
    sev_label, sev_tone = labels.SEVERITY.get(a.severity, (a.severity, "info"))
    return {
        "key": a.key,
        "kind": a.kind,
        "kind_label": labels.anomaly_kind(a.kind),
        "kind_help": labels.anomaly_help(a.kind),
        "severity": a.severity,
        "severity_label": sev_label,
        "severity_tone": sev_tone,
        "message": a.message,
        "text": humanize(a.message, names),
        "task_id": a.task_id,
        "dataset_id": a.dataset_id,
        "org": names.ref(a.org),
        "tx_hashes": list(a.tx_hashes or []),
        "block_number": a.block_number,
        "occurred_at": a.occurred_at,
        "first_seen": a.first_seen,
        "last_seen": a.last_seen,
        "resolved_at": a.resolved_at,
        "open": a.resolved_at is None,
        "detail": a.detail,
    }


def _bucketing(lo: int, hi: int, max_buckets: int = 90) -> tuple[int, str]:
    """A bucket width (seconds) and its label format for the span lo..hi."""
    span = max(0, hi - lo)
    for width, fmt in (
        (60, "%H:%M"),
        (300, "%H:%M"),
        (3600, "%m-%d %H:00"),
        (6 * 3600, "%m-%d %H:00"),
        (86400, "%Y-%m-%d"),
        (7 * 86400, "%Y-%m-%d"),
        (30 * 86400, "%Y-%m"),
    ):
        if span // width < max_buckets:
            return width, fmt
    return 365 * 86400, "%Y"


def time_series(
    series: dict[str, Iterable[int]], lo: int | None, hi: int | None, tones: dict[str, str] | None = None
) -> dict[str, Any]:
    """Counts per time bucket for each named series, on one shared axis."""
    stamps = [ts for values in series.values() for ts in values]
    if lo is None:
        lo = min(stamps, default=None)
    if hi is None:
        hi = max(stamps, default=None)
    if lo is None or hi is None:
        return {"labels": [], "starts": [], "width": 0, "datasets": []}
    hi = max(hi, lo)
    width, fmt = _bucketing(lo, hi)
    first = lo - lo % width
    n = (hi - first) // width + 1
    starts = [first + i * width for i in range(n)]
    out = []
    for name, values in series.items():
        counts = [0] * n
        for ts in values:
            i = (ts - first) // width
            if 0 <= i < n:
                counts[i] += 1
        out.append({"label": name, "data": counts, "tone": (tones or {}).get(name, "info")})
    return {
        "labels": [dt.datetime.fromtimestamp(s, dt.UTC).strftime(fmt) for s in starts],
        "starts": starts,
        "width": width,
        "datasets": out,
    }


class Views:
    """Read models of the dashboard over one store."""

    def __init__(self, store: Store, verdict_cache_size: int = 512) -> None:
        self.store = store
        self._verdicts: OrderedDict[tuple[int, Any, Any], dict[str, Any]] = OrderedDict()
        self._verdict_lock = threading.Lock()
        self._cache_size = verdict_cache_size

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        with self.store.read() as s:
            st = s.get(IndexState, "main")
            events = int(s.scalar(select(func.count()).select_from(EventRow)) or 0)
            open_anoms = int(
                s.scalar(select(func.count()).select_from(AnomalyRow).where(AnomalyRow.resolved_at.is_(None))) or 0
            )
            last_seen = s.scalar(select(func.max(AnomalyRow.last_seen)))
            resolved = s.scalar(select(func.max(AnomalyRow.resolved_at)))
            running = int(
                s.scalar(select(func.count()).select_from(TaskRow).where(TaskRow.status.in_(OPEN_STATUSES))) or 0
            )
        indexed_block = st.indexed_block if st is not None else None
        stamp = f"{indexed_block}:{st.indexed_hash if st else ''}:{events}:{open_anoms}:{last_seen}:{resolved}"
        return {
            "chain_id": st.chain_id if st is not None else None,
            "deploy_block": st.deploy_block if st is not None else None,
            "indexed_block": indexed_block,
            "indexed_at": st.indexed_timestamp if st is not None else None,
            "index_updated_at": st.updated_at if st is not None else None,
            "events": events,
            "open_anomalies": open_anoms,
            "open_tasks": running,
            "stamp": stamp,
        }

    # ------------------------------------------------------------------ overview

    def overview(self) -> dict[str, Any]:
        with self.store.read() as s:
            names = Names(s)
            orgs = s.scalars(select(Organisation)).all()
            algos = s.scalars(select(Algorithm)).all()
            datasets = s.scalars(select(Dataset)).all()
            by_status = Counter(int(x) for x in s.scalars(select(TaskRow.status)))
            tasks_t = s.execute(select(TaskRow.submitted_at, TaskRow.status)).all()
            refusals = s.execute(select(Refusal.block_timestamp, Refusal.reason)).all()
            anomalies = s.scalars(select(AnomalyRow)).all()
            open_tasks = s.scalars(
                select(TaskRow).where(TaskRow.status.in_(OPEN_STATUSES)).order_by(TaskRow.id.desc()).limit(15)
            ).all()
            open_progress = [self._task_brief(s, t, names) for t in open_tasks]
            recent_events = s.scalars(
                select(EventRow).order_by(EventRow.block_number.desc(), EventRow.log_index.desc()).limit(12)
            ).all()
            recent = [self._event(e, names) for e in recent_events]
            _, now = chain_time(s)
        statuses = [
            {**task_status(code), "count": by_status.get(code, 0)}
            for code in sorted(labels.TASK_STATUS)
            if code != int(TaskStatus.NONE)
        ]
        groups = {
            "Completed": (int(TaskStatus.COMPLETED),),
            "In progress": OPEN_STATUSES,
            "Refused or disputed": (int(TaskStatus.REFUSED), int(TaskStatus.DISPUTED)),
            "Cancelled or expired": (int(TaskStatus.CANCELLED), int(TaskStatus.EXPIRED)),
        }
        group_tone = {
            "Completed": "ok",
            "In progress": "run",
            "Refused or disputed": "bad",
            "Cancelled or expired": "idle",
        }
        stamps = [int(ts) for ts, _ in tasks_t] + [int(ts) for ts, _ in refusals]
        stamps += [int(a.occurred_at) for a in anomalies if a.occurred_at is not None]
        lo = min(stamps, default=None)
        hi = max([*stamps, now], default=None) if stamps else None
        tasks_series = time_series(
            {g: [int(ts) for ts, st in tasks_t if int(st) in codes] for g, codes in groups.items()},
            lo,
            hi,
            group_tone,
        )
        reasons = sorted({int(r) for _, r in refusals})
        refusal_series = time_series(
            {labels.refusal_reason(r): [int(ts) for ts, rr in refusals if int(rr) == r] for r in reasons}
            or {"Refusals": []},
            lo,
            hi,
            {labels.refusal_reason(r): "warn" for r in reasons},
        )
        sev_series = time_series(
            {
                labels.SEVERITY[sev][0]: [int(a.occurred_at) for a in anomalies if a.severity == sev and a.occurred_at]
                for sev in labels.SEVERITY_ORDER
            },
            lo,
            hi,
            {labels.SEVERITY[sev][0]: sev for sev in labels.SEVERITY_ORDER},
        )
        open_anoms = [a for a in anomalies if a.resolved_at is None]
        sev_order = {k: i for i, k in enumerate(labels.SEVERITY_ORDER)}
        open_anoms.sort(key=lambda a: (sev_order.get(a.severity, 9), -(a.block_number or 0)))
        datasets_attention = [
            d.id
            for d in datasets
            if (d.max_uses and d.uses >= 0.8 * d.max_uses)
            or (d.epsilon_total and d.epsilon_spent >= 0.8 * d.epsilon_total)
        ]
        return {
            "counts": {
                "organisations": len(orgs),
                "organisations_active": sum(1 for o in orgs if o.status == int(OrgStatus.ACTIVE)),
                "organisations_suspended": sum(1 for o in orgs if o.status == int(OrgStatus.SUSPENDED)),
                "datasets": len(datasets),
                "datasets_near_limit": len(datasets_attention),
                "algorithms": len(algos),
                "algorithms_deprecated": sum(1 for a in algos if a.deprecated),
                "tasks": sum(by_status.values()),
                "tasks_open": sum(by_status.get(c, 0) for c in OPEN_STATUSES),
                "refusals": len(refusals),
                "anomalies_open": len(open_anoms),
                "anomalies_resolved": len(anomalies) - len(open_anoms),
            },
            "tasks_by_status": statuses,
            "anomalies_by_severity": [
                {
                    "severity": sev,
                    "label": labels.SEVERITY[sev][0],
                    "tone": labels.SEVERITY[sev][1],
                    "count": sum(1 for a in open_anoms if a.severity == sev),
                }
                for sev in labels.SEVERITY_ORDER
            ],
            "charts": {"tasks": tasks_series, "refusals": refusal_series, "anomalies": sev_series},
            "open_tasks": open_progress,
            "recent_anomalies": [_anomaly(a, names) for a in open_anoms[:6]],
            "recent_events": recent,
            "chain_time": now,
        }

    # ------------------------------------------------------------------ organisations

    def orgs(self) -> list[dict[str, Any]]:
        with self.store.read() as s:
            names = Names(s)
            requested = Counter(s.scalars(select(TaskRow.requester)))
            took_part = Counter(s.scalars(select(TaskParticipant.account)))
            owned = Counter(s.scalars(select(Dataset.owner)))
            refused = Counter(s.scalars(select(Refusal.participant)))
            anoms = Counter(s.scalars(select(AnomalyRow.org).where(AnomalyRow.resolved_at.is_(None))))
            changes = Counter(s.scalars(select(OrgStatusChange.account)))
            out = []
            for o in s.scalars(select(Organisation).order_by(Organisation.admitted_block, Organisation.name)):
                label, tone = labels.ORG_STATUS.get(o.status, (str(o.status), "idle"))
                out.append(
                    {
                        "account": o.account,
                        "name": o.name,
                        "status": OrgStatus(o.status).name.lower(),
                        "status_label": label,
                        "status_tone": tone,
                        "endpoint": o.endpoint,
                        "admitted_at": o.admitted_at,
                        "admitted_block": o.admitted_block,
                        "admitted_tx": o.admitted_tx,
                        "status_changed_at": o.status_changed_at,
                        "status_changes": changes.get(o.account, 0),
                        "datasets": owned.get(o.account, 0),
                        "tasks_requested": requested.get(o.account, 0),
                        "tasks_participated": took_part.get(o.account, 0),
                        "refusals": refused.get(o.account, 0),
                        "open_anomalies": anoms.get(o.account, 0),
                    }
                )
            del names
            return out

    def org(self, account: str) -> dict[str, Any] | None:
        with self.store.read() as s:
            names = Names(s)
            o = s.scalars(select(Organisation).where(func.lower(Organisation.account) == account.lower())).first()
            if o is None:
                return None
            acc = o.account
            label, tone = labels.ORG_STATUS.get(o.status, (str(o.status), "idle"))
            history = [
                {
                    "change": c.change,
                    "label": labels.ORG_CHANGE.get(c.change, c.change),
                    "status_label": labels.ORG_STATUS.get(c.status, (str(c.status), "idle"))[0],
                    "status_tone": labels.ORG_STATUS.get(c.status, (str(c.status), "idle"))[1],
                    "by": names.ref(c.by),
                    "block": c.block_number,
                    "time": c.block_timestamp,
                    "tx": c.tx_hash,
                }
                for c in sorted(s.scalars(select(OrgStatusChange).where(OrgStatusChange.account == acc)), key=pos)
            ]
            profile = [
                self._event(e, names)
                for e in s.scalars(
                    select(EventRow)
                    .where(
                        EventRow.actor == acc,
                        EventRow.name.in_(("OrganisationEndpointUpdated", "OrganisationKeyUpdated")),
                    )
                    .order_by(EventRow.block_number, EventRow.log_index)
                )
            ]
            roles = [
                {
                    "role": r.role_name,
                    "granted": r.granted,
                    "by": names.ref(r.sender),
                    "block": r.block_number,
                    "time": r.block_timestamp,
                    "tx": r.tx_hash,
                }
                for r in sorted(s.scalars(select(RoleChange).where(RoleChange.account == acc)), key=pos)
            ]
            datasets = [self._dataset_brief(d) for d in s.scalars(select(Dataset).where(Dataset.owner == acc))]
            task_ids = set(s.scalars(select(TaskRow.id).where(TaskRow.requester == acc)))
            task_ids |= set(s.scalars(select(TaskParticipant.task_id).where(TaskParticipant.account == acc)))
            tasks = [
                self._task_brief(s, t, names)
                for t in s.scalars(
                    select(TaskRow).where(TaskRow.id.in_(task_ids)).order_by(TaskRow.id.desc()).limit(100)
                )
            ]
            anomalies = [
                _anomaly(a, names)
                for a in s.scalars(
                    select(AnomalyRow).where(AnomalyRow.org == acc).order_by(AnomalyRow.occurred_at.desc()).limit(100)
                )
            ]
            checks = [
                {
                    "id": c.id,
                    "ok": c.ok,
                    "checked_at": c.checked_at,
                    "entries": c.entries,
                    "head_seq": c.head_seq,
                    "indexed_block": c.indexed_block,
                    "problems": c.problems,
                }
                for c in s.scalars(
                    select(LogCheck).where(LogCheck.org == acc).order_by(LogCheck.checked_at.desc()).limit(20)
                )
            ]
            anchors = [
                {
                    "sequence": a.sequence,
                    "head_hash": a.head_hash,
                    "block": a.block_number,
                    "time": a.block_timestamp,
                    "tx": a.tx_hash,
                }
                for a in s.scalars(
                    select(LogAnchor).where(LogAnchor.org == acc).order_by(LogAnchor.sequence.desc()).limit(20)
                )
            ]
            return {
                "account": acc,
                "name": o.name,
                "status": OrgStatus(o.status).name.lower(),
                "status_label": label,
                "status_tone": tone,
                "endpoint": o.endpoint,
                "encryption_key": o.encryption_key,
                "admitted_at": o.admitted_at,
                "admitted_block": o.admitted_block,
                "admitted_tx": o.admitted_tx,
                "history": history,
                "profile_changes": profile,
                "roles": roles,
                "datasets": datasets,
                "tasks": tasks,
                "task_count": len(task_ids),
                "anomalies": anomalies,
                "log_checks": checks,
                "anchors": anchors,
            }

    # ------------------------------------------------------------------ datasets

    def _dataset_brief(self, d: Dataset) -> dict[str, Any]:
        return {
            "id": d.id,
            "owner": d.owner,
            "version": d.version,
            "uses": d.uses,
            "max_uses": d.max_uses,
            "epsilon_spent": eps(d.epsilon_spent),
            "epsilon_total": eps(d.epsilon_total),
            "expiry": d.expiry,
            "expiry_never": d.expiry >= U64_MAX,
            "registered_at": d.registered_at,
            "registered_block": d.registered_block,
            "registered_tx": d.registered_tx,
        }

    def datasets(self) -> list[dict[str, Any]]:
        with self.store.read() as s:
            names = Names(s)
            tasks = Counter(s.scalars(select(TaskDataset.dataset_id)))
            last_use = dict(
                s.execute(
                    select(DatasetUse.dataset_id, func.max(DatasetUse.block_timestamp)).group_by(DatasetUse.dataset_id)
                ).all()
            )
            out = []
            for d in s.scalars(select(Dataset).order_by(Dataset.id)):
                row = self._dataset_brief(d)
                row["owner_ref"] = names.ref(d.owner)
                row["tasks"] = tasks.get(d.id, 0)
                row["last_used_at"] = last_use.get(d.id)
                out.append(row)
            return out

    def dataset(self, dataset_id: int) -> dict[str, Any] | None:
        with self.store.read() as s:
            names = Names(s)
            d = s.get(Dataset, dataset_id)
            if d is None:
                return None
            algos = {a.code_hash.lower(): a for a in s.scalars(select(Algorithm))}
            row = self._dataset_brief(d)
            row["owner_ref"] = names.ref(d.owner)
            row["versions"] = [
                {
                    "version": v.version,
                    "merkle_root": v.merkle_root,
                    "schema_hash": v.schema_hash,
                    "metadata_hash": v.metadata_hash,
                    "row_count": v.row_count,
                    "block": v.block_number,
                    "time": v.block_timestamp,
                    "tx": v.tx_hash,
                }
                for v in sorted(s.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == d.id)), key=pos)
            ]
            policy: list[dict[str, Any]] = []
            for lim in s.scalars(select(PolicyLimitsChange).where(PolicyLimitsChange.dataset_id == d.id)):
                policy.append(
                    {
                        "pos": pos(lim),
                        "what": f"Limits set: {lim.max_uses} uses, ε budget {eps(lim.epsilon_total):g}, valid until "
                        + ("never expires" if lim.expiry >= U64_MAX else _date(lim.expiry)),
                        "expiry": lim.expiry,
                        "block": lim.block_number,
                        "time": lim.block_timestamp,
                        "tx": lim.tx_hash,
                    }
                )
            grants: dict[tuple[str, str], bool] = {}
            for g in sorted(s.scalars(select(PolicyGrant).where(PolicyGrant.dataset_id == d.id)), key=pos):
                grants[(g.kind, g.subject)] = g.allowed
                if g.kind == "algorithm":
                    a = algos.get(g.subject.lower())
                    subject = f"algorithm {a.kind} {a.version}" if a else f"algorithm {g.subject[:10]}…"
                else:
                    subject = f"{g.kind} {names(g.subject)}"
                policy.append(
                    {
                        "pos": pos(g),
                        "what": f"{subject[0].upper()}{subject[1:]} {'allowed' if g.allowed else 'no longer allowed'}",
                        "block": g.block_number,
                        "time": g.block_timestamp,
                        "tx": g.tx_hash,
                    }
                )
            policy.sort(key=lambda p: p["pos"])
            for p in policy:
                del p["pos"]
            row["policy_history"] = policy
            allowed: dict[str, list[Any]] = {"algorithm": [], "requester": [], "recipient": []}
            for (kind, subject), ok in grants.items():
                if ok and kind in allowed:
                    if kind == "algorithm":
                        a = algos.get(subject.lower())
                        allowed[kind].append(
                            {"hash": subject, "kind": a.kind if a else None, "version": a.version if a else None}
                        )
                    else:
                        allowed[kind].append(names.ref(subject))
            row["allowed"] = allowed
            usage = []
            for u in sorted(s.scalars(select(DatasetUse).where(DatasetUse.dataset_id == d.id)), key=pos):
                t = s.get(TaskRow, u.task_id)
                a = algos.get(t.algorithm_hash.lower()) if t is not None else None
                usage.append(
                    {
                        "task_id": u.task_id,
                        "use": u.uses,
                        "max_uses": d.max_uses,
                        "requester": names.ref(t.requester) if t else None,
                        "recipient": names.ref(t.result_recipient) if t else None,
                        "algorithm": {
                            "hash": t.algorithm_hash if t else None,
                            "kind": a.kind if a else None,
                            "version": a.version if a else None,
                        },
                        "epsilon": eps(t.epsilon) if t else 0.0,
                        "epsilon_spent_after": eps(u.epsilon_spent),
                        "status": task_status(t.status) if t else None,
                        "block": u.block_number,
                        "time": u.block_timestamp,
                        "tx": u.tx_hash,
                    }
                )
            row["usage"] = usage
            pinned = s.execute(
                select(TaskDataset.task_id, TaskDataset.version).where(TaskDataset.dataset_id == d.id)
            ).all()
            used_ids = {u["task_id"] for u in usage}
            row["other_tasks"] = [
                {"task_id": tid, "version": v, **self._status_of(s, tid)} for tid, v in pinned if tid not in used_ids
            ]
            row["anomalies"] = [
                _anomaly(a, names)
                for a in s.scalars(
                    select(AnomalyRow).where(AnomalyRow.dataset_id == d.id).order_by(AnomalyRow.occurred_at.desc())
                )
            ]
            return row

    def _status_of(self, s: Session, task_id: int) -> dict[str, Any]:
        t = s.get(TaskRow, task_id)
        return {"status": task_status(t.status) if t else None, "submitted_at": t.submitted_at if t else None}

    # ------------------------------------------------------------------ algorithms

    def algorithms(self) -> list[dict[str, Any]]:
        with self.store.read() as s:
            names = Names(s)
            uses = Counter(x.lower() for x in s.scalars(select(TaskRow.algorithm_hash)))
            grants: dict[tuple[int, str], bool] = {}
            for g in sorted(s.scalars(select(PolicyGrant).where(PolicyGrant.kind == "algorithm")), key=pos):
                grants[(g.dataset_id, g.subject.lower())] = g.allowed
            allowed_by: dict[str, list[int]] = defaultdict(list)
            for (ds, subject), ok in grants.items():
                if ok:
                    allowed_by[subject].append(ds)
            out = []
            for a in s.scalars(select(Algorithm).order_by(Algorithm.registered_block)):
                out.append(
                    {
                        "code_hash": a.code_hash,
                        "kind": a.kind,
                        "kind_label": labels.algorithm_kind(a.kind),
                        "version": a.version,
                        "description_hash": a.description_hash,
                        "publisher": names.ref(a.publisher),
                        "registered_at": a.registered_at,
                        "registered_block": a.registered_block,
                        "registered_tx": a.registered_tx,
                        "deprecated": a.deprecated,
                        "deprecated_at": a.deprecated_at,
                        "deprecated_tx": a.deprecated_tx,
                        "deprecated_by": names.ref(a.deprecated_by),
                        "tasks": uses.get(a.code_hash.lower(), 0),
                        "allowed_for_datasets": sorted(allowed_by.get(a.code_hash.lower(), [])),
                    }
                )
            return out

    # ------------------------------------------------------------------ tasks

    def _task_brief(self, s: Session, t: TaskRow, names: Names) -> dict[str, Any]:
        n = int(s.scalar(select(func.count()).select_from(TaskParticipant).where(TaskParticipant.task_id == t.id)) or 0)
        ds = list(
            s.scalars(select(TaskDataset.dataset_id).where(TaskDataset.task_id == t.id).order_by(TaskDataset.position))
        )
        algo = s.get(Algorithm, t.algorithm_hash)
        return {
            "id": t.id,
            "status": task_status(t.status),
            "requester": names.ref(t.requester),
            "recipient": names.ref(t.result_recipient),
            "algorithm": {
                "hash": t.algorithm_hash,
                "kind": algo.kind if algo else None,
                "version": algo.version if algo else None,
            },
            "datasets": ds,
            "participants": n,
            "submitted_at": t.submitted_at,
            "submitted_block": t.submitted_block,
            "closed_at": t.closed_at,
            "deadline": t.deadline,
            "epsilon": eps(t.epsilon),
            "refusal_reason": labels.refusal_reason(t.refusal_reason) if t.refusal_reason else None,
            "progress": {
                "approvals": [t.approvals, t.required_approvals],
                "started": [t.started_count, n],
                "receipts": [t.receipt_count, n - t.dropped_count],  # the dropped owe none
                "dropped": [t.dropped_count, n],
            },
        }

    def tasks(
        self,
        status: str | None = None,
        org: str | None = None,
        dataset: int | None = None,
        algorithm: str | None = None,
        page: int = 1,
        per_page: int = 50,
        with_verdicts: bool = True,
    ) -> dict[str, Any]:
        page = max(1, page)
        with self.store.read() as s:
            names = Names(s)
            q = select(TaskRow)
            if status:
                code = labels.TASK_STATUS_KEYS.get(status)
                if code is None:
                    raise ValueError(f"unknown status {status!r}; known: {', '.join(labels.TASK_STATUS_KEYS)}")
                q = q.where(TaskRow.status == code)
            if org:
                parts = select(TaskParticipant.task_id).where(func.lower(TaskParticipant.account) == org.lower())
                q = q.where(
                    or_(
                        func.lower(TaskRow.requester) == org.lower(),
                        func.lower(TaskRow.result_recipient) == org.lower(),
                        TaskRow.id.in_(parts),
                    )
                )
            if dataset is not None:
                q = q.where(TaskRow.id.in_(select(TaskDataset.task_id).where(TaskDataset.dataset_id == dataset)))
            if algorithm:
                q = q.where(func.lower(TaskRow.algorithm_hash) == algorithm.lower())
            total = int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)
            rows = s.scalars(q.order_by(TaskRow.id.desc()).offset((page - 1) * per_page).limit(per_page)).all()
            items = [self._task_brief(s, t, names) for t in rows]
        if with_verdicts:
            for item in items:
                v = self.verdict(item["id"])
                item["verdict"] = {k: v[k] for k in ("verdict", "label", "tone", "failed", "warnings")} if v else None
        return {"total": total, "page": page, "per_page": per_page, "items": items}

    def verdict(self, task_id: int) -> dict[str, Any] | None:
        """verify_task with labels, cached per indexed block (the verdict only changes with the chain)."""
        st = self.store.index_state()
        key = (task_id, st.indexed_block if st else None, st.indexed_hash if st else None)
        with self._verdict_lock:
            if key in self._verdicts:
                self._verdicts.move_to_end(key)
                return self._verdicts[key]
        try:
            v = verify_task(self.store, task_id)
        except TaskNotIndexed:
            return None
        d = v.to_dict()
        label, tone, help_text = labels.VERDICT[d["verdict"]]
        d.update(label=label, tone=tone, help=help_text)
        d["failed"] = [c["name"] for c in d["checks"] if c["status"] == "fail"]
        d["warnings"] = [c["name"] for c in d["checks"] if c["status"] == "warn"]
        with self.store.read() as s:
            names = Names(s)
        for c in d["checks"]:
            c["text"] = humanize(c["message"], names)
            c["label"] = labels.CHECK_NAME.get(c["name"], c["name"])
            c["status_label"], c["tone"] = labels.CHECK_STATUS.get(c["status"], (c["status"], "idle"))
        with self._verdict_lock:
            self._verdicts[key] = d
            while len(self._verdicts) > self._cache_size:
                self._verdicts.popitem(last=False)
        return d

    def _event(self, e: EventRow, names: Names) -> dict[str, Any]:
        return {
            "name": e.name,
            "contract": e.contract,
            "text": labels.event_text(e.name, e.args or {}, names),
            "tone": labels.EVENT_TONE.get(e.name, ""),
            "actor": names.ref(e.actor),
            "sender": names.ref(e.tx_from),
            "task_id": e.task_id,
            "dataset_id": e.dataset_id,
            "block": e.block_number,
            "log_index": e.log_index,
            "time": e.block_timestamp,
            "tx": e.tx_hash,
            "args": e.args,
        }

    def task(self, task_id: int) -> dict[str, Any] | None:
        with self.store.read() as s:
            names = Names(s)
            t = s.get(TaskRow, task_id)
            if t is None:
                return None
            brief = self._task_brief(s, t, names)
            datasets = []
            for td in s.scalars(select(TaskDataset).where(TaskDataset.task_id == t.id).order_by(TaskDataset.position)):
                d = s.get(Dataset, td.dataset_id)
                datasets.append(
                    {"id": td.dataset_id, "version": td.version, "owner": names.ref(d.owner) if d else None}
                )
            receipts = {r.participant: r for r in s.scalars(select(ReceiptRow).where(ReceiptRow.task_id == t.id))}
            refusals = {r.participant: r for r in s.scalars(select(Refusal).where(Refusal.task_id == t.id))}
            approvals = {a.owner: a for a in s.scalars(select(Approval).where(Approval.task_id == t.id))}
            participants = []
            for p in s.scalars(
                select(TaskParticipant).where(TaskParticipant.task_id == t.id).order_by(TaskParticipant.position)
            ):
                label, tone = labels.PARTICIPANT_STATE.get(p.state, (str(p.state), "idle"))
                known = int(p.state) in {int(x) for x in ParticipantState}
                r = receipts.get(p.account)
                ref = refusals.get(p.account)
                ap = approvals.get(p.account)
                participants.append(
                    {
                        **(names.ref(p.account) or {}),
                        "state": ParticipantState(p.state).name.lower() if known else str(p.state),
                        "state_label": label,
                        "state_tone": tone,
                        "approved_at": ap.block_timestamp if ap else None,
                        "approval_tx": ap.tx_hash if ap else None,
                        "started_at": p.started_at,
                        "start_tx": p.start_tx,
                        "receipt": None
                        if r is None
                        else {
                            "result_hash": r.result_hash,
                            "transcript_hash": r.transcript_hash,
                            "input_fingerprint": r.input_fingerprint,
                            "algorithm_hash": r.algorithm_hash,
                            "deletion_hash": r.deletion_hash,
                            "reported_started_at": r.started_at,
                            "reported_finished_at": r.finished_at,
                            "time": r.block_timestamp,
                            "tx": r.tx_hash,
                        },
                        "refusal": None
                        if ref is None
                        else {
                            "reason": labels.refusal_reason(ref.reason),
                            "code": ref.reason,
                            "detail_hash": ref.detail_hash,
                            "time": ref.block_timestamp,
                            "tx": ref.tx_hash,
                        },
                        "dropout": None
                        if p.dropped_block is None
                        else {
                            "reported_by": names.ref(p.dropped_by),
                            "block": p.dropped_block,
                            "time": p.dropped_at,
                            "tx": p.drop_tx,
                        },
                    }
                )
            timeline = [
                self._event(e, names)
                for e in s.scalars(
                    select(EventRow).where(EventRow.task_id == t.id).order_by(EventRow.block_number, EventRow.log_index)
                )
            ]
            anomalies = [
                _anomaly(a, names)
                for a in s.scalars(select(AnomalyRow).where(AnomalyRow.task_id == t.id).order_by(AnomalyRow.key))
            ]
            _, now = chain_time(s)
        return {
            **brief,
            "params_hash": t.params_hash,
            "result_hash": t.result_hash,
            "submit_tx": t.submit_tx,
            "authorised_at": t.authorised_at,
            "authorise_tx": t.authorise_tx,
            "close_tx": t.close_tx,
            "closed_by": names.ref(t.closed_by),
            "past_deadline": now > t.deadline,
            "chain_time": now,
            "dataset_refs": datasets,
            "participant_list": participants,
            "timeline": timeline,
            "verdict": self.verdict(t.id),
            "anomalies": anomalies,
        }

    # ------------------------------------------------------------------ anomalies

    def anomalies(
        self,
        kind: str | None = None,
        severity: str | None = None,
        state: str = "open",
        org: str | None = None,
        task: int | None = None,
        dataset: int | None = None,
        page: int = 1,
        per_page: int = 100,
    ) -> dict[str, Any]:
        page = max(1, page)
        if state not in ("open", "resolved", "all"):
            raise ValueError("state must be open, resolved or all")
        with self.store.read() as s:
            names = Names(s)
            q = select(AnomalyRow)
            if kind:
                q = q.where(AnomalyRow.kind == kind)
            if severity:
                if severity not in labels.SEVERITY:
                    raise ValueError(f"unknown severity {severity!r}; known: {', '.join(labels.SEVERITY_ORDER)}")
                q = q.where(AnomalyRow.severity == severity)
            if state == "open":
                q = q.where(AnomalyRow.resolved_at.is_(None))
            elif state == "resolved":
                q = q.where(AnomalyRow.resolved_at.is_not(None))
            if org:
                q = q.where(func.lower(AnomalyRow.org) == org.lower())
            if task is not None:
                q = q.where(AnomalyRow.task_id == task)
            if dataset is not None:
                q = q.where(AnomalyRow.dataset_id == dataset)
            rows = s.scalars(q).all()
            kinds = sorted(set(s.scalars(select(AnomalyRow.kind))))
        sev_order = {k: i for i, k in enumerate(labels.SEVERITY_ORDER)}
        rows = sorted(rows, key=lambda a: (sev_order.get(a.severity, 9), -(a.occurred_at or 0), a.key))
        total = len(rows)
        items = [_anomaly(a, names) for a in rows[(page - 1) * per_page : page * per_page]]
        return {
            "total": total,
            "page": page,
            "per_page": per_page,
            "items": items,
            "kinds": [{"kind": k, "label": labels.anomaly_kind(k), "help": labels.anomaly_help(k)} for k in kinds],
        }

    # ------------------------------------------------------------------ transactions

    def tx(self, tx_hash: str) -> dict[str, Any] | None:
        with self.store.read() as s:
            names = Names(s)
            events = s.scalars(
                select(EventRow).where(func.lower(EventRow.tx_hash) == tx_hash.lower()).order_by(EventRow.log_index)
            ).all()
            if not events:
                return None
            first = events[0]
            return {
                "tx_hash": first.tx_hash,
                "block": first.block_number,
                "block_hash": first.block_hash,
                "time": first.block_timestamp,
                "sender": names.ref(first.tx_from),
                "events": [self._event(e, names) for e in events],
            }

    def org_choices(self) -> list[tuple[str, str]]:
        with self.store.read() as s:
            return [(o.account, o.name) for o in s.scalars(select(Organisation).order_by(Organisation.name))]

    def dataset_choices(self) -> list[tuple[str, str]]:
        with self.store.read() as s:
            names = Names(s)
            return [
                (str(d.id), f"Dataset {d.id} ({names(d.owner)})")
                for d in s.scalars(select(Dataset).order_by(Dataset.id))
            ]
