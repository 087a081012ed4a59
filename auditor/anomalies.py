"""Anomaly detection over the indexed chain data.

`detect(store, now)` returns every anomaly the store shows at chain time `now`, each with a
stable key (the same anomaly found again has the same key), a kind, a severity, a message a
regulator can read, and links to the task, dataset, organisation and transactions behind
it. `record(store, anomalies, now)` persists them idempotently: new keys are inserted,
known ones updated, and those no longer detected are marked resolved.

Kinds:
- ``refusal``: a participant refused a task (severity by reason: a fingerprint or code
  mismatch or a bad peer signature is high);
- ``dispute``: the receipts of a task disagree;
- ``task-expired``: a task reached its deadline without an outcome (marked expired or not);
- ``never-started``: authorised, but nobody started before the deadline;
- ``receipt-missing``: a participant started but posted no receipt by the deadline (one the
  result recipient reported dropped owes none);
- ``participant-dropped``: the result recipient reported a participant that stopped answering
  mid-protocol, and the task went on without it (low when the algorithm is built for that,
  fedavg's secure aggregation; medium when it is not, or unknown);
- ``fingerprint-changed``: a dataset published a new fingerprint while its policy was live
  and tasks had been authorised on the older version (high when one was still open);
- ``quota-near`` / ``quota-exhausted`` / ``quota-over``, ``budget-near`` /
  ``budget-exhausted`` / ``budget-over``: uses or ε at ≥ 80 %, at, or over the limit;
- ``participant-suspended``: an organisation was suspended while taking part in an open task;
- ``acted-while-suspended``: an organisation acted (submit, approve, start, refuse, receipt,
  anchor, register, change a policy) while suspended — the contracts forbid it, so this
  means a contract or chain fault, and is critical;
- ``log-mismatch``: the newest stored check of an organisation's local log disagrees with the chain.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pcn.auditor.chainview import chain_time, dropout_tolerant, eps, pos, short
from pcn.auditor.logcheck import latest_log_checks
from pcn.auditor.store import (
    Algorithm,
    AnomalyRow,
    Dataset,
    DatasetUse,
    DatasetVersion,
    EventRow,
    Organisation,
    OrgStatusChange,
    PolicyLimitsChange,
    ReceiptRow,
    Refusal,
    Store,
    TaskDataset,
    TaskParticipant,
    TaskRow,
    using_store,
)
from pcn.chain.types import OrgStatus, ParticipantState, RefusalReason, TaskStatus

NEAR_LIMIT = 0.8
OPEN = (int(TaskStatus.PENDING), int(TaskStatus.AUTHORISED), int(TaskStatus.RUNNING))
CLOSED_BY_DEADLINE = (*OPEN, int(TaskStatus.EXPIRED))


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


REFUSAL_SEVERITY: dict[RefusalReason, Severity] = {
    RefusalReason.FINGERPRINT_MISMATCH: Severity.HIGH,
    RefusalReason.ALGORITHM_HASH_MISMATCH: Severity.HIGH,
    RefusalReason.BAD_PEER_SIGNATURE: Severity.HIGH,
    RefusalReason.TASK_NOT_AUTHORISED: Severity.MEDIUM,
    RefusalReason.ALGORITHM_NOT_APPROVED: Severity.MEDIUM,
    RefusalReason.REQUESTER_NOT_ALLOWED: Severity.MEDIUM,
    RefusalReason.RECIPIENT_NOT_ALLOWED: Severity.MEDIUM,
    RefusalReason.USES_EXHAUSTED: Severity.MEDIUM,
    RefusalReason.POLICY_EXPIRED: Severity.MEDIUM,
    RefusalReason.PRIVACY_BUDGET_EXCEEDED: Severity.MEDIUM,
    RefusalReason.PEER_NOT_ACTIVE: Severity.MEDIUM,
    RefusalReason.DP_NOT_APPLIED: Severity.MEDIUM,
    RefusalReason.KEY_CAP_EXCEEDED: Severity.MEDIUM,
}

#: Events that are an organisation acting (the `actor` column names it).
ACTING_EVENTS = frozenset(
    {
        "TaskSubmitted",
        "TaskApproved",
        "TaskStarted",
        "TaskRefused",
        "ReceiptSubmitted",
        "ParticipantDropped",
        "TaskCancelled",
        "LogAnchored",
        "DatasetRegistered",
        "DatasetVersionPublished",
        "PolicySet",
        "PolicyAlgorithmSet",
        "PolicyRequesterSet",
        "PolicyRecipientSet",
        "AlgorithmRegistered",
        "OrganisationEndpointUpdated",
        "OrganisationKeyUpdated",
    }
)


@dataclass(frozen=True)
class Anomaly:
    key: str
    kind: str
    severity: Severity
    message: str
    task_id: int | None = None
    dataset_id: int | None = None
    org: str | None = None
    tx_hashes: tuple[str, ...] = ()
    block_number: int | None = None  # when it happened on chain
    occurred_at: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["severity"] = str(self.severity)
        d["tx_hashes"] = list(self.tx_hashes)
        return d


def _name(orgs: dict[str, Organisation], account: str | None) -> str:
    if account is None:
        return "-"
    org = orgs.get(account)
    return f"{org.name} ({short(account)})" if org is not None else account


# ---------------------------------------------------------------------------- detectors


def _refusals(s: Session, orgs: dict[str, Organisation]) -> Iterable[Anomaly]:
    for r in s.scalars(select(Refusal).order_by(Refusal.block_number, Refusal.log_index)):
        reason = RefusalReason(r.reason)
        yield Anomaly(
            key=f"refusal:{r.tx_hash}:{r.log_index}",
            kind="refusal",
            severity=REFUSAL_SEVERITY.get(reason, Severity.LOW),
            message=f"{_name(orgs, r.participant)} refused task {r.task_id}: {reason.name} "
            f"(detail hash {short(r.detail_hash)})",
            task_id=r.task_id,
            org=r.participant,
            tx_hashes=(r.tx_hash,),
            block_number=r.block_number,
            occurred_at=r.block_timestamp,
            detail={"reason": reason.name, "reason_code": int(reason), "detail_hash": r.detail_hash},
        )


def _disputes(s: Session, orgs: dict[str, Organisation]) -> Iterable[Anomaly]:
    for t in s.scalars(select(TaskRow).where(TaskRow.status == int(TaskStatus.DISPUTED))):
        receipts = s.scalars(select(ReceiptRow).where(ReceiptRow.task_id == t.id)).all()
        by_result: dict[str, list[str]] = defaultdict(list)
        wrong_code = []
        for r in receipts:
            by_result[r.result_hash].append(_name(orgs, r.participant))
            if r.algorithm_hash.lower() != t.algorithm_hash.lower():
                wrong_code.append(_name(orgs, r.participant))
        parts = [f"result {short(h)} from {', '.join(who)}" for h, who in by_result.items()]
        if wrong_code:
            parts.append(f"other code than the registered algorithm run by {', '.join(wrong_code)}")
        dropped = s.scalars(
            select(TaskParticipant).where(TaskParticipant.task_id == t.id, TaskParticipant.dropped_block.is_not(None))
        ).all()
        parts += [
            f"{_name(orgs, p.account)} was reported dropped by {_name(orgs, p.dropped_by)} and owed no receipt"
            for p in dropped
        ]
        yield Anomaly(
            key=f"dispute:{t.id}",
            kind="dispute",
            severity=Severity.HIGH,
            message=f"task {t.id}: the receipts disagree — " + "; ".join(parts),
            task_id=t.id,
            tx_hashes=tuple(r.tx_hash for r in receipts) + ((t.close_tx,) if t.close_tx else ()),
            block_number=t.closed_block,
            occurred_at=t.closed_at,
            detail={
                "results": {h: len(w) for h, w in by_result.items()},
                "wrong_algorithm": wrong_code,
                "dropped": [p.account for p in dropped],
            },
        )


def _deadlines(s: Session, orgs: dict[str, Organisation], now: int) -> Iterable[Anomaly]:
    tasks = s.scalars(select(TaskRow).where(TaskRow.status.in_(CLOSED_BY_DEADLINE))).all()
    for t in tasks:
        if t.status != int(TaskStatus.EXPIRED) and now <= t.deadline:
            continue
        parts = s.scalars(select(TaskParticipant).where(TaskParticipant.task_id == t.id)).all()
        receipted = {r.participant for r in s.scalars(select(ReceiptRow).where(ReceiptRow.task_id == t.id))}
        started = [p for p in parts if p.started_block is not None]
        dropped = [p for p in parts if p.state == int(ParticipantState.DROPPED)]
        marked = t.status == int(TaskStatus.EXPIRED)
        txs = tuple(x for x in (t.submit_tx, t.authorise_tx, t.close_tx) if x)
        when = "marked expired" if marked else "deadline passed, not yet marked expired"
        if t.authorised_block is None:
            yield Anomaly(
                key=f"task-expired:{t.id}",
                kind="task-expired",
                severity=Severity.LOW,
                message=f"task {t.id} ({when}) was never authorised: {t.approvals} of "
                f"{t.required_approvals} owner approvals by the deadline {t.deadline}",
                task_id=t.id,
                org=t.requester,
                tx_hashes=txs,
                block_number=t.closed_block,
                occurred_at=t.closed_at or t.deadline,
                detail={"deadline": t.deadline, "marked": marked},
            )
        elif not started:
            yield Anomaly(
                key=f"never-started:{t.id}",
                kind="never-started",
                severity=Severity.MEDIUM,
                message=f"task {t.id} was authorised at block {t.authorised_block} but no participant "
                f"started it before its deadline {t.deadline} ({when})",
                task_id=t.id,
                org=t.requester,
                tx_hashes=txs,
                block_number=t.closed_block or t.authorised_block,
                occurred_at=t.closed_at or t.deadline,
                detail={"deadline": t.deadline, "marked": marked},
            )
        else:
            yield Anomaly(
                key=f"task-expired:{t.id}",
                kind="task-expired",
                severity=Severity.MEDIUM,
                message=f"task {t.id} started but did not finish by its deadline {t.deadline} ({when}): "
                f"{len(receipted)} of {len(parts) - len(dropped)} receipts"
                + (f" ({len(dropped)} participant(s) reported dropped owe none)" if dropped else ""),
                task_id=t.id,
                org=t.requester,
                tx_hashes=txs,
                block_number=t.closed_block or t.first_started_block,
                occurred_at=t.closed_at or t.deadline,
                detail={"deadline": t.deadline, "marked": marked},
            )
        if started:
            for p in parts:
                # refusers and participants reported dropped owe no receipt
                if p.account in receipted or p.state in (int(ParticipantState.REFUSED), int(ParticipantState.DROPPED)):
                    continue
                did = "started" if p.started_block is not None else "never started"
                yield Anomaly(
                    key=f"receipt-missing:{t.id}:{p.account}",
                    kind="receipt-missing",
                    severity=Severity.HIGH,
                    message=f"{_name(orgs, p.account)} {did} task {t.id} but posted no receipt by the deadline "
                    f"{t.deadline}",
                    task_id=t.id,
                    org=p.account,
                    tx_hashes=tuple(x for x in (p.start_tx,) if x),
                    block_number=p.started_block,
                    occurred_at=t.deadline,
                    detail={"deadline": t.deadline, "started": p.started_block is not None},
                )


def _dropouts(s: Session, orgs: dict[str, Organisation]) -> Iterable[Anomaly]:
    """Every participant the result recipient reported dropped. Legitimate for an algorithm
    built to go on without a party (fedavg's secure aggregation), yet a regulator should see
    each one: the result was finished without that participant, on the recipient's word."""
    rows = s.execute(
        select(TaskParticipant, TaskRow)
        .join(TaskRow, TaskRow.id == TaskParticipant.task_id)
        .where(TaskParticipant.dropped_block.is_not(None))
        .order_by(TaskParticipant.dropped_block, TaskParticipant.drop_log_index)
    ).all()
    for p, t in rows:
        algo = s.get(Algorithm, t.algorithm_hash)
        kind = algo.kind if algo is not None else None
        tolerant = dropout_tolerant(kind)
        if tolerant:
            why = f"{kind} is built to go on without a participant"
        elif tolerant is False:
            why = f"{kind} is not built to go on without a participant"
        else:
            why = "the algorithm is not one pcn ships, so whether it tolerates dropouts is unknown"
        yield Anomaly(
            key=f"participant-dropped:{t.id}:{p.account}",
            kind="participant-dropped",
            severity=Severity.LOW if tolerant else Severity.MEDIUM,
            message=f"{_name(orgs, p.account)} stopped answering during task {t.id} and was reported dropped by "
            f"the result recipient {_name(orgs, p.dropped_by)} at block {p.dropped_block}; the others went on "
            f"without it ({why})",
            task_id=t.id,
            org=p.account,
            tx_hashes=(p.drop_tx,) if p.drop_tx else (),
            block_number=p.dropped_block,
            occurred_at=p.dropped_at,
            detail={
                "participant": p.account,
                "reported_by": p.dropped_by,
                "started_block": p.started_block,
                "algorithm": kind,
                "dropout_tolerant": tolerant,
            },
        )


def _fingerprint_changes(s: Session, orgs: dict[str, Organisation]) -> Iterable[Anomaly]:
    for v in s.scalars(select(DatasetVersion).where(DatasetVersion.version > 1)):
        at = pos(v)
        limits = [
            lim
            for lim in s.scalars(select(PolicyLimitsChange).where(PolicyLimitsChange.dataset_id == v.dataset_id))
            if pos(lim) < at
        ]
        if not limits:
            continue
        lim = max(limits, key=pos)
        uses = [u for u in s.scalars(select(DatasetUse).where(DatasetUse.dataset_id == v.dataset_id)) if pos(u) < at]
        live = v.block_timestamp <= lim.expiry and len(uses) < lim.max_uses
        if not live:
            continue
        older = s.execute(
            select(TaskRow, TaskDataset)
            .join(TaskDataset, TaskDataset.task_id == TaskRow.id)
            .where(TaskDataset.dataset_id == v.dataset_id, TaskDataset.version < v.version)
        ).all()
        authorised = [t for t, _ in older if t.authorised_block is not None and (t.authorised_block, 0) <= at]
        still_open = [t for t in authorised if t.closed_block is None or (t.closed_block, 1 << 30) > at]
        pending = [t for t, _ in older if t.authorised_block is None and t.status == int(TaskStatus.PENDING)]
        ds = s.get(Dataset, v.dataset_id)
        owner = ds.owner if ds is not None else None
        if still_open:
            severity, what = Severity.HIGH, f"tasks {', '.join(str(t.id) for t in still_open)} were still open on it"
        elif authorised:
            severity, what = (
                Severity.MEDIUM,
                f"tasks {', '.join(str(t.id) for t in authorised)} had used the old version",
            )
        else:
            severity, what = Severity.LOW, "no task had used the old version"
        if pending:
            what += f"; pending tasks {', '.join(str(t.id) for t in pending)} can no longer be authorised"
        yield Anomaly(
            key=f"fingerprint-changed:{v.dataset_id}:{v.version}",
            kind="fingerprint-changed",
            severity=severity,
            message=f"dataset {v.dataset_id} of {_name(orgs, owner)} changed its fingerprint to version {v.version} "
            f"(root {short(v.merkle_root)}) while its policy was live ({len(uses)} of {lim.max_uses} uses, "
            f"valid until {lim.expiry}): {what}",
            dataset_id=v.dataset_id,
            org=owner,
            task_id=(still_open or authorised)[0].id if (still_open or authorised) else None,
            tx_hashes=(v.tx_hash, *(t.authorise_tx for t in authorised if t.authorise_tx)),
            block_number=v.block_number,
            occurred_at=v.block_timestamp,
            detail={
                "version": v.version,
                "open_tasks": [t.id for t in still_open],
                "authorised_tasks": [t.id for t in authorised],
                "pending_tasks": [t.id for t in pending],
            },
        )


def _limits(s: Session, orgs: dict[str, Organisation]) -> Iterable[Anomaly]:
    for ds in s.scalars(select(Dataset).order_by(Dataset.id)):
        for kind, used, limit, fmt in (
            ("quota", ds.uses, ds.max_uses, str),
            ("budget", ds.epsilon_spent, ds.epsilon_total, eps),
        ):
            if limit == 0:
                if used > 0:
                    level, severity = "over", Severity.CRITICAL
                else:
                    continue
            elif used > limit:
                level, severity = "over", Severity.CRITICAL
            elif used == limit:
                level, severity = "exhausted", Severity.MEDIUM
            elif used >= NEAR_LIMIT * limit:
                level, severity = "near", Severity.LOW
            else:
                continue
            last = s.scalars(
                select(DatasetUse).where(DatasetUse.dataset_id == ds.id).order_by(DatasetUse.block_number.desc())
            ).first()
            noun = "uses" if kind == "quota" else "ε"
            word = {"over": "over the limit", "exhausted": "at the limit", "near": "near the limit"}[level]
            yield Anomaly(
                key=f"{kind}-{level}:{ds.id}",
                kind=f"{kind}-{level}",
                severity=severity,
                message=f"dataset {ds.id} of {_name(orgs, ds.owner)}: "
                f"{fmt(used)} of {fmt(limit)} {noun} spent ({word})",
                dataset_id=ds.id,
                org=ds.owner,
                task_id=last.task_id if last is not None else None,
                tx_hashes=(last.tx_hash,) if last is not None else (),
                block_number=last.block_number if last is not None else None,
                occurred_at=last.block_timestamp if last is not None else None,
                detail={"used": used, "limit": limit, "ratio": (used / limit) if limit else None},
            )


def _suspensions(s: Session, orgs: dict[str, Organisation]) -> Iterable[Anomaly]:
    changes: dict[str, list[OrgStatusChange]] = defaultdict(list)
    for c in s.scalars(select(OrgStatusChange)):
        changes[c.account].append(c)
    for account, rows in changes.items():
        rows.sort(key=pos)
        intervals: list[tuple[OrgStatusChange, OrgStatusChange | None]] = []
        for i, c in enumerate(rows):
            if c.status == int(OrgStatus.SUSPENDED):
                end = next((r for r in rows[i + 1 :] if r.status == int(OrgStatus.ACTIVE)), None)
                intervals.append((c, end))
        if not intervals:
            continue
        acts = s.scalars(select(EventRow).where(EventRow.actor == account, EventRow.name.in_(ACTING_EVENTS))).all()
        for start, end in intervals:
            lo, hi = pos(start), pos(end) if end is not None else (1 << 62, 0)
            for ev in acts:
                if lo < pos(ev) < hi:
                    yield Anomaly(
                        key=f"acted-while-suspended:{ev.tx_hash}:{ev.log_index}",
                        kind="acted-while-suspended",
                        severity=Severity.CRITICAL,
                        message=f"{_name(orgs, account)} acted while suspended (since block {start.block_number}): "
                        f"{ev.name} at block {ev.block_number}"
                        + (f" on task {ev.task_id}" if ev.task_id is not None else ""),
                        task_id=ev.task_id,
                        dataset_id=ev.dataset_id,
                        org=account,
                        tx_hashes=(ev.tx_hash, start.tx_hash),
                        block_number=ev.block_number,
                        occurred_at=ev.block_timestamp,
                        detail={"event": ev.name, "suspended_at_block": start.block_number},
                    )
            # open tasks the organisation was part of when it was suspended
            involved = s.execute(
                select(TaskRow, TaskParticipant)
                .join(TaskParticipant, TaskParticipant.task_id == TaskRow.id)
                .where(TaskParticipant.account == account)
            ).all()
            for t, _p in involved:
                submitted = (t.submitted_block, 1 << 30)
                closed = (t.closed_block, 0) if t.closed_block is not None else (1 << 62, 0)
                if submitted < lo < closed:
                    yield Anomaly(
                        key=f"participant-suspended:{t.id}:{account}:{start.block_number}",
                        kind="participant-suspended",
                        severity=Severity.MEDIUM,
                        message=f"{_name(orgs, account)} was suspended at block {start.block_number} while taking "
                        f"part in open task {t.id}",
                        task_id=t.id,
                        org=account,
                        tx_hashes=(start.tx_hash,),
                        block_number=start.block_number,
                        occurred_at=start.block_timestamp,
                        detail={"reinstated_at_block": end.block_number if end is not None else None},
                    )


def _logs(s: Session, orgs: dict[str, Organisation]) -> Iterable[Anomaly]:
    for check in latest_log_checks(s):
        if check.ok:
            continue
        problems = check.problems or []
        first = min((p["seq"] for p in problems if p.get("seq") is not None), default=None)
        kinds = sorted({str(p.get("kind")) for p in problems})
        where = f", first at entry {first}" if first is not None else ""
        yield Anomaly(
            key=f"log-mismatch:{check.org}:{check.id}",
            kind="log-mismatch",
            severity=Severity.HIGH,
            message=f"the local log of {_name(orgs, check.org)} disagrees with the chain: {len(problems)} problem(s) "
            f"({', '.join(kinds)}){where}",
            org=check.org,
            task_id=next((p.get("task_id") for p in problems if p.get("task_id") is not None), None),
            tx_hashes=tuple(dict.fromkeys(p["tx_hash"] for p in problems if p.get("tx_hash")))[:20],
            block_number=check.indexed_block,
            occurred_at=check.checked_at,
            detail={"check_id": check.id, "kinds": kinds, "first_bad_seq": first, "entries": check.entries},
        )


def detect(store: Store | str | Path, now: int | None = None) -> list[Anomaly]:
    """Every anomaly the store shows at chain time `now` (unix seconds; default: the
    timestamp of the newest indexed block), most severe first."""
    with using_store(store) as st:
        with st.read() as s:
            if now is None:
                _, now = chain_time(s)
            orgs = {o.account: o for o in s.scalars(select(Organisation))}
            found: list[Anomaly] = []
            found += _refusals(s, orgs)
            found += _disputes(s, orgs)
            found += _deadlines(s, orgs, now)
            found += _dropouts(s, orgs)
            found += _fingerprint_changes(s, orgs)
            found += _limits(s, orgs)
            found += _suspensions(s, orgs)
            found += _logs(s, orgs)
        order = {Severity.CRITICAL: 0, Severity.HIGH: 1, Severity.MEDIUM: 2, Severity.LOW: 3}
        unique = {a.key: a for a in found}
        return sorted(unique.values(), key=lambda a: (order[a.severity], -(a.block_number or 0), a.key))


@dataclass(frozen=True)
class RecordResult:
    new: int
    updated: int
    resolved: int


def record(store: Store | str | Path, anomalies: Iterable[Anomaly], seen_at: int | None = None) -> RecordResult:
    """Persist `anomalies` by key: insert new ones, refresh known ones (reopening any that
    had been resolved), and mark resolved every open anomaly that is no longer detected.
    `seen_at` (unix seconds, default now) stamps first_seen, last_seen and resolved_at."""
    with using_store(store) as st:
        stamp = int(time.time()) if seen_at is None else seen_at
        new = updated = resolved = 0
        current = {a.key: a for a in anomalies}
        with st.write() as s:
            existing = {row.key: row for row in s.scalars(select(AnomalyRow))}
            for key, a in current.items():
                values = {
                    "kind": a.kind,
                    "severity": str(a.severity),
                    "message": a.message,
                    "task_id": a.task_id,
                    "dataset_id": a.dataset_id,
                    "org": a.org,
                    "tx_hashes": list(a.tx_hashes),
                    "detail": a.detail,
                    "block_number": a.block_number,
                    "occurred_at": a.occurred_at,
                }
                row = existing.get(key)
                if row is None:
                    s.add(AnomalyRow(key=key, first_seen=stamp, last_seen=stamp, resolved_at=None, **values))
                    new += 1
                else:
                    changed = any(getattr(row, k) != v for k, v in values.items()) or row.resolved_at is not None
                    for k, v in values.items():
                        setattr(row, k, v)
                    row.last_seen = stamp
                    row.resolved_at = None
                    updated += int(changed)
            for key, row in existing.items():
                if key not in current and row.resolved_at is None:
                    row.resolved_at = stamp
                    resolved += 1
        return RecordResult(new, updated, resolved)


def detect_and_record(store: Store | str | Path, now: int | None = None) -> list[Anomaly]:
    """`detect` then `record`: the store's anomalies table mirrors what the chain shows."""
    with using_store(store) as st:
        found = detect(st, now)
        record(st, found)
        return found
