"""Independent re-verification, from the indexed chain data alone.

- `verify_task`: recompute, for one task, everything the contracts and the nodes claim —
  approvals complete, the dataset policies respected *as they stood at the authorisation*
  (reconstructed from the policy events), every participant's receipt present and
  agreeing, input fingerprints and deletion attested, every step within the deadline — and
  whether the status the contract declared follows from those events. A participant the
  result recipient reported dropped owes no receipt; each dropout is checked against the
  contract's rules and named in the verdict, never passed over in silence.
- `verify_result_file`: a recipient's result (and its opening) against the on-chain result hash.
- `verify_node_log`: an organisation's exported local action log against its hash chain,
  its on-chain anchors and its on-chain actions; tampering is located by sequence number.

Nothing here talks to the chain or trusts a node: the inputs are the events table and the
rows derived from it (see `pcn.auditor.projection`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pcn.auditor.chainview import (
    ZERO,
    Position,
    chain_time,
    dropout_tolerant,
    eps,
    org_status_at,
    policy_at,
    pos,
    short,
)
from pcn.auditor.logcheck import (
    LogProblem,
    LogProblemKind,
    LogVerdict,
    latest_log_checks,
    read_log,
    record_log_verdict,
    verify_node_log,
)
from pcn.auditor.store import (
    Algorithm,
    Approval,
    Dataset,
    DatasetUse,
    DatasetVersion,
    EventRow,
    ReceiptRow,
    Refusal,
    Store,
    TaskDataset,
    TaskParticipant,
    TaskRow,
    using_store,
)
from pcn.chain.types import OrgStatus, RefusalReason, TaskStatus

__all__ = [
    "Check",
    "CheckStatus",
    "LogProblem",
    "LogProblemKind",
    "LogVerdict",
    "ResultVerdict",
    "TaskNotIndexed",
    "TaskVerdict",
    "Verdict",
    "dumps",
    "expected_status",
    "input_commitment",
    "latest_log_checks",
    "read_log",
    "record_log_verdict",
    "verify_all",
    "verify_node_log",
    "verify_result_document",
    "verify_result_file",
    "verify_task",
]

OPEN_STATUSES = (TaskStatus.PENDING, TaskStatus.AUTHORISED, TaskStatus.RUNNING)


class TaskNotIndexed(LookupError):
    """The store has no such task (unknown id, or not indexed yet)."""


# ---------------------------------------------------------------------------- verdicts


class CheckStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"  # suspicious, not a proven violation
    SKIP = "skip"  # not applicable (yet) to this task


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCOMPLETE = "incomplete"  # nothing wrong so far, the task is still open


# Check names, in the order they are reported.
SUBMISSION = "submission"
APPROVALS = "approvals"
POLICY_ALGORITHM = "policy-algorithm"
POLICY_REQUESTER = "policy-requester"
POLICY_RECIPIENT = "policy-recipient"
POLICY_EXPIRY = "policy-expiry"
POLICY_USES = "policy-uses"
POLICY_BUDGET = "policy-budget"
DATASET_VERSION = "dataset-version"
PARTICIPATION = "participation"
DROPOUTS = "dropouts"
RECEIPTS_PRESENT = "receipts-present"
RECEIPTS_AGREE = "receipts-agree"
RECEIPT_ALGORITHM = "receipt-algorithm"
INPUT_FINGERPRINT = "input-fingerprint"
DELETION = "deletion"
TIMING = "timing"
OUTCOME = "outcome"


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    message: str
    tx_hashes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is not CheckStatus.FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "message": self.message,
            "tx_hashes": list(self.tx_hashes),
        }


@dataclass(frozen=True)
class TaskVerdict:
    task_id: int
    status: TaskStatus
    checks: tuple[Check, ...]
    as_of_block: int | None
    as_of_time: int

    @property
    def verdict(self) -> Verdict:
        if any(c.status is CheckStatus.FAIL for c in self.checks):
            return Verdict.FAIL
        if self.status in OPEN_STATUSES:
            return Verdict.INCOMPLETE
        return Verdict.PASS

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.PASS

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status is CheckStatus.FAIL]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status is CheckStatus.WARN]

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "status": self.status.name.lower(),
            "verdict": str(self.verdict),
            "as_of_block": self.as_of_block,
            "as_of_time": self.as_of_time,
            "checks": [c.to_dict() for c in self.checks],
        }


def input_commitment(merkle_roots: Iterable[str]) -> str:
    """The input fingerprint a pcn node puts in its receipt: a hash over the registered
    Merkle roots of its datasets in the task, by dataset id (pcn.runtime.execute)."""
    data = b"".join(bytes.fromhex(r.removeprefix("0x")) for r in merkle_roots)
    return "0x" + hashlib.sha256(b"pcn/input/v1" + data).hexdigest()


def _event(s: Session, name: str, task_id: int) -> EventRow | None:
    return s.scalars(
        select(EventRow).where(EventRow.name == name, EventRow.task_id == task_id).order_by(EventRow.block_number)
    ).first()


# ---------------------------------------------------------------------------- verify_task


@dataclass
class _Facts:
    task: TaskRow
    datasets: list[tuple[TaskDataset, Dataset | None]]
    participants: list[TaskParticipant]
    approvals: list[Approval]
    receipts: dict[str, ReceiptRow]
    refusals: list[Refusal]
    uses: dict[int, DatasetUse]
    submitted: Position
    authorised: EventRow | None
    cancelled: EventRow | None
    expired: EventRow | None
    completed: EventRow | None
    disputed: EventRow | None
    now: int
    owners: list[str] = field(default_factory=list)

    @property
    def deadline(self) -> int:
        return int(self.task.deadline)

    @property
    def dropped(self) -> list[TaskParticipant]:
        """Participants the result recipient reported dropped, in chain order."""
        return sorted(
            (p for p in self.participants if p.dropped_block is not None),
            key=lambda p: (p.dropped_block, p.drop_log_index or 0),
        )

    @property
    def due(self) -> list[TaskParticipant]:
        """Participants that owe a receipt: all but the dropped ones."""
        return [p for p in self.participants if p.dropped_block is None]

    @property
    def past_deadline(self) -> bool:
        return self.now > self.deadline

    @property
    def is_open(self) -> bool:
        return TaskStatus(self.task.status) in OPEN_STATUSES


def _facts(s: Session, task_id: int, now: int) -> _Facts:
    task = s.get(TaskRow, task_id)
    if task is None:
        raise TaskNotIndexed(f"task {task_id} is not in the auditor's store (unknown, or not indexed yet)")
    tds = s.scalars(select(TaskDataset).where(TaskDataset.task_id == task_id).order_by(TaskDataset.position)).all()
    datasets = [(td, s.get(Dataset, td.dataset_id)) for td in tds]
    owners: list[str] = []
    for _, ds in datasets:
        if ds is not None and ds.owner not in owners:
            owners.append(ds.owner)
    submit = _event(s, "TaskSubmitted", task_id)
    return _Facts(
        task=task,
        datasets=datasets,
        participants=list(
            s.scalars(
                select(TaskParticipant).where(TaskParticipant.task_id == task_id).order_by(TaskParticipant.position)
            ).all()
        ),
        approvals=sorted(s.scalars(select(Approval).where(Approval.task_id == task_id)).all(), key=pos),
        receipts={r.participant: r for r in s.scalars(select(ReceiptRow).where(ReceiptRow.task_id == task_id)).all()},
        refusals=sorted(s.scalars(select(Refusal).where(Refusal.task_id == task_id)).all(), key=pos),
        uses={u.dataset_id: u for u in s.scalars(select(DatasetUse).where(DatasetUse.task_id == task_id)).all()},
        submitted=pos(submit) if submit is not None else (task.submitted_block, 0),
        authorised=_event(s, "TaskAuthorised", task_id),
        cancelled=_event(s, "TaskCancelled", task_id),
        expired=_event(s, "TaskExpired", task_id),
        completed=_event(s, "TaskCompleted", task_id),
        disputed=_event(s, "TaskDisputed", task_id),
        now=now,
        owners=owners,
    )


def _check_submission(s: Session, f: _Facts) -> Check:
    t, problems = f.task, []
    for who, account in (("requester", t.requester), ("recipient", t.result_recipient)):
        if org_status_at(s, account, f.submitted) is not OrgStatus.ACTIVE:
            problems.append(f"the {who} {account} was not an active organisation")
    inactive = [p.account for p in f.participants if org_status_at(s, p.account, f.submitted) is not OrgStatus.ACTIVE]
    if inactive:
        problems.append(f"participants not active: {', '.join(inactive)}")
    algo = s.get(Algorithm, t.algorithm_hash)
    if algo is None or (algo.registered_block, 0) > f.submitted:
        problems.append(f"algorithm {short(t.algorithm_hash)} was not registered")
    else:
        for ev in s.scalars(select(EventRow).where(EventRow.name == "AlgorithmDeprecated")).all():
            if str(ev.args.get("codeHash", "")).lower() == t.algorithm_hash.lower() and pos(ev) < f.submitted:
                problems.append(f"algorithm {short(t.algorithm_hash)} was deprecated at block {ev.block_number}")
    accounts = {p.account for p in f.participants}
    for td, ds in f.datasets:
        if ds is None:
            problems.append(f"dataset {td.dataset_id} is not registered")
            continue
        if ds.owner not in accounts:
            problems.append(f"the owner {ds.owner} of dataset {ds.id} is not a participant")
        current = policy_at(s, ds.id, f.submitted).version
        if td.version != current:
            problems.append(f"dataset {ds.id} is pinned at version {td.version}, the current one was {current}")
    if t.deadline <= t.submitted_at:
        problems.append("the deadline was not in the future")
    if problems:
        return Check(SUBMISSION, CheckStatus.FAIL, "; ".join(problems), (t.submit_tx,))
    return Check(
        SUBMISSION,
        CheckStatus.PASS,
        f"submitted by {t.requester} at block {t.submitted_block}: {len(f.datasets)} dataset(s), "
        f"{len(f.participants)} participant(s), recipient {t.result_recipient}",
        (t.submit_tx,),
    )


def _check_approvals(s: Session, f: _Facts) -> Check:
    approved = {a.owner: a for a in f.approvals}
    txs = tuple(a.tx_hash for a in f.approvals)
    missing = [o for o in f.owners if o not in approved]
    if f.authorised is None:
        acted = any(p.started_block is not None for p in f.participants) or f.receipts
        if acted:
            return Check(APPROVALS, CheckStatus.FAIL, "participants acted on a task that was never authorised", txs)
        return Check(
            APPROVALS,
            CheckStatus.SKIP,
            f"not authorised: {len(f.owners) - len(missing)} of {len(f.owners)} owner approvals"
            + (f", missing {', '.join(missing)}" if missing else ""),
            txs,
        )
    auth = pos(f.authorised)
    problems = []
    if missing:
        problems.append(f"authorised without the approval of {', '.join(missing)}")
    for a in f.approvals:
        if a.owner not in f.owners:
            problems.append(f"{a.owner} approved but owns none of the input datasets")
        if pos(a) > auth:
            problems.append(f"{a.owner} approved after the authorisation (block {a.block_number})")
        if org_status_at(s, a.owner, pos(a)) is not OrgStatus.ACTIVE:
            problems.append(f"{a.owner} approved while not active")
    if problems:
        return Check(APPROVALS, CheckStatus.FAIL, "; ".join(problems), (*txs, f.authorised.tx_hash))
    relayed = sum(1 for a in f.approvals if a.relayer != a.owner)
    return Check(
        APPROVALS,
        CheckStatus.PASS,
        f"all {len(f.owners)} dataset owner(s) approved before the authorisation at block "
        f"{f.authorised.block_number}" + (f" ({relayed} by signed approval, relayed)" if relayed else ""),
        (*txs, f.authorised.tx_hash),
    )


def _check_policy(s: Session, f: _Facts) -> list[Check]:
    names = (POLICY_ALGORITHM, POLICY_REQUESTER, POLICY_RECIPIENT, POLICY_EXPIRY, POLICY_USES, POLICY_BUDGET)
    if f.authorised is None:
        return [Check(n, CheckStatus.SKIP, "the task was never authorised") for n in [*names, DATASET_VERSION]]
    t = f.task
    auth_ts = f.authorised.block_timestamp
    found: dict[str, list[str]] = {n: [] for n in [*names, DATASET_VERSION]}
    good: dict[str, list[str]] = {n: [] for n in [*names, DATASET_VERSION]}
    txs: list[str] = [f.authorised.tx_hash]
    for td, _ds in f.datasets:
        d = td.dataset_id
        use = f.uses.get(d)
        if use is None:
            for n in names:
                found[n].append(f"dataset {d}: no use was recorded at the authorisation")
            continue
        txs.append(use.tx_hash)
        p = policy_at(s, d, pos(use))
        for name, kind, subject in (
            (POLICY_ALGORITHM, "algorithm", t.algorithm_hash),
            (POLICY_REQUESTER, "requester", t.requester),
            (POLICY_RECIPIENT, "recipient", t.result_recipient),
        ):
            (good if p.allowed(kind, subject) else found)[name].append(
                f"dataset {d}: {kind} {short(subject, 12)} {'allowed' if p.allowed(kind, subject) else 'NOT allowed'}"
            )
        if p.limits is None:
            for n in (POLICY_EXPIRY, POLICY_USES, POLICY_BUDGET):
                found[n].append(f"dataset {d}: no policy limits were set")
        else:
            lim = p.limits
            if auth_ts <= lim.expiry:
                good[POLICY_EXPIRY].append(f"dataset {d}: policy valid until {lim.expiry}")
            else:
                found[POLICY_EXPIRY].append(f"dataset {d}: policy expired at {lim.expiry}, authorised at {auth_ts}")
            if p.uses_before < lim.max_uses and use.uses == p.uses_before + 1:
                good[POLICY_USES].append(f"dataset {d}: use {use.uses} of {lim.max_uses}")
            elif p.uses_before >= lim.max_uses:
                found[POLICY_USES].append(
                    f"dataset {d}: {p.uses_before} of {lim.max_uses} uses were already spent before this task"
                )
            else:
                found[POLICY_USES].append(
                    f"dataset {d}: the chain counted use {use.uses}, the events give {p.uses_before + 1}"
                )
            spent = p.epsilon_before + t.epsilon
            if spent <= lim.epsilon_total and use.epsilon_spent == spent:
                good[POLICY_BUDGET].append(f"dataset {d}: ε {eps(spent)} of {eps(lim.epsilon_total)} spent")
            elif spent > lim.epsilon_total:
                found[POLICY_BUDGET].append(
                    f"dataset {d}: ε {eps(p.epsilon_before)} + {eps(t.epsilon)} exceeds the budget "
                    f"{eps(lim.epsilon_total)}"
                )
            else:
                found[POLICY_BUDGET].append(
                    f"dataset {d}: the chain counted ε {eps(use.epsilon_spent)} spent, the events give {eps(spent)}"
                )
        if p.version == td.version:
            good[DATASET_VERSION].append(f"dataset {d}: version {td.version} unchanged")
        else:
            found[DATASET_VERSION].append(
                f"dataset {d}: submitted on version {td.version}, version {p.version} was current at the authorisation"
            )
    checks = []
    for n in [*names, DATASET_VERSION]:
        if found[n]:
            checks.append(Check(n, CheckStatus.FAIL, "; ".join(found[n]), tuple(txs)))
        else:
            checks.append(Check(n, CheckStatus.PASS, "; ".join(good[n]) or "no datasets", tuple(txs)))
    return checks


def _check_participation(f: _Facts) -> Check:
    if f.refusals:
        msg = "; ".join(
            f"{r.participant} refused: {RefusalReason(r.reason).name} "
            f"(block {r.block_number}, detail {short(r.detail_hash)})"
            for r in f.refusals
        )
        return Check(PARTICIPATION, CheckStatus.FAIL, msg, tuple(r.tx_hash for r in f.refusals))
    if f.authorised is None:
        return Check(PARTICIPATION, CheckStatus.SKIP, "the task was never authorised")
    started = [p for p in f.participants if p.started_block is not None]
    txs = tuple(p.start_tx for p in started if p.start_tx)
    missing = [p.account for p in f.participants if p.started_block is None]
    if not missing:
        later = f" ({len(f.dropped)} later reported dropped)" if f.dropped else ""
        return Check(PARTICIPATION, CheckStatus.PASS, f"all {len(started)} participants started{later}", txs)
    if f.cancelled is not None and not started:
        return Check(PARTICIPATION, CheckStatus.SKIP, "cancelled by the requester before any start", txs)
    if f.past_deadline or not f.is_open:
        return Check(PARTICIPATION, CheckStatus.FAIL, f"never started before the deadline: {', '.join(missing)}", txs)
    return Check(PARTICIPATION, CheckStatus.SKIP, f"{len(started)} of {len(f.participants)} started so far", txs)


def _closing(f: _Facts) -> Position | None:
    """Where the task left the open statuses (its first closing event), if it did."""
    ends = [pos(e) for e in (f.completed, f.disputed, f.cancelled, f.expired) if e is not None]
    ends += [pos(r) for r in f.refusals]
    return min(ends, default=None)


def _start(p: TaskParticipant) -> Position:
    return (int(p.started_block or 0), int(p.start_log_index or 0))


def _check_dropouts(s: Session, f: _Facts) -> Check:
    """Every participant reported dropped, named, and each report held to the contract's
    rules: by the result recipient, itself started and not yet receipted; of a participant
    that had started and never receipted nor refused; while the task was running and before
    its deadline; with at least two participants left."""
    t = f.task
    dropped = f.dropped
    if not dropped:
        if not any(p.started_block is not None for p in f.participants):
            return Check(DROPOUTS, CheckStatus.SKIP, "nothing ran")
        return Check(DROPOUTS, CheckStatus.PASS, "no participant was reported dropped")
    txs = tuple(p.drop_tx for p in dropped if p.drop_tx)
    by_account = {p.account: p for p in f.participants}
    refused = {r.participant for r in f.refusals}
    closed = _closing(f)
    problems: list[str] = []
    for i, p in enumerate(dropped):
        at = (int(p.dropped_block or 0), int(p.drop_log_index or 0))
        reporter = by_account.get(p.dropped_by or "")
        if p.dropped_by != t.result_recipient:
            problems.append(f"{p.account} was reported dropped by {p.dropped_by}, not the result recipient")
        if reporter is None or reporter.started_block is None or _start(reporter) > at:
            problems.append(f"{p.dropped_by} reported {p.account} dropped without having started the task itself")
        elif reporter.account in f.receipts and pos(f.receipts[reporter.account]) < at:
            problems.append(f"{p.dropped_by} reported {p.account} dropped after posting its own receipt")
        if org_status_at(s, p.dropped_by or "", at) is not OrgStatus.ACTIVE:
            problems.append(f"{p.dropped_by} reported {p.account} dropped while not active")
        if p.account == p.dropped_by:
            problems.append(f"{p.account} reported itself dropped")
        if p.started_block is None or _start(p) > at:
            problems.append(f"{p.account} was reported dropped without having started (a no-show is not a dropout)")
        if p.account in f.receipts:
            problems.append(f"{p.account} was reported dropped yet has a receipt on chain")
        if p.account in refused:
            problems.append(f"{p.account} was reported dropped yet refused")
        if f.authorised is None or pos(f.authorised) > at or (closed is not None and closed < at):
            problems.append(f"{p.account} was reported dropped while the task was not running")
        if p.dropped_at is not None and p.dropped_at > t.deadline:
            problems.append(f"{p.account} was reported dropped at {p.dropped_at}, after the deadline {t.deadline}")
        if len(f.participants) - (i + 1) < 2:
            problems.append(f"dropping {p.account} left fewer than two participants")
    named = ", ".join(f"{p.account} (reported by {p.dropped_by} at block {p.dropped_block})" for p in dropped)
    said = f"participants dropped: {named}; no receipt or deletion attestation is due from them"
    if problems:
        return Check(DROPOUTS, CheckStatus.FAIL, f"{said}; but " + "; ".join(problems), txs)
    algo = s.get(Algorithm, t.algorithm_hash)
    kind = algo.kind if algo is not None else None
    tolerant = dropout_tolerant(kind)
    if tolerant:
        return Check(DROPOUTS, CheckStatus.PASS, f"{said}; {kind} tolerates dropouts, the others went on", txs)
    why = (
        f"{kind} is not built to go on without a participant"
        if tolerant is False
        else "the algorithm is not one pcn ships, so whether it tolerates dropouts is unknown"
    )
    return Check(DROPOUTS, CheckStatus.WARN, f"{said}; {why}: ask the result recipient how the task went on", txs)


def _check_receipts(s: Session, f: _Facts) -> list[Check]:
    names = (RECEIPTS_PRESENT, RECEIPTS_AGREE, RECEIPT_ALGORITHM, INPUT_FINGERPRINT, DELETION)
    t = f.task
    receipts = [f.receipts[p.account] for p in f.participants if p.account in f.receipts]
    txs = tuple(r.tx_hash for r in receipts)
    checks: list[Check] = []
    refused = {r.participant for r in f.refusals}
    dropped = {p.account for p in f.dropped}  # reported dropped: no receipt, no deletion attestation due
    started = any(p.started_block is not None for p in f.participants)
    if not receipts and (f.refusals or not started):
        why = "the task was refused" if f.refusals else "no participant started"
        return [Check(n, CheckStatus.SKIP, why) for n in names]
    # present
    missing = [
        p.account
        for p in f.participants
        if p.account not in f.receipts and p.account not in refused and p.account not in dropped
    ]
    if not missing and dropped:
        checks.append(
            Check(
                RECEIPTS_PRESENT,
                CheckStatus.PASS,
                f"all {len(receipts)} receipts due present; {len(dropped)} dropped participant(s) owe none",
                txs,
            )
        )
    elif not missing:
        checks.append(Check(RECEIPTS_PRESENT, CheckStatus.PASS, f"all {len(receipts)} receipts present", txs))
    elif f.refusals:
        checks.append(Check(RECEIPTS_PRESENT, CheckStatus.SKIP, "refused: no further receipts due", txs))
    elif f.past_deadline or not f.is_open:
        checks.append(
            Check(
                RECEIPTS_PRESENT,
                CheckStatus.FAIL,
                f"no receipt by the deadline {t.deadline} from {', '.join(missing)}",
                txs,
            )
        )
    else:
        checks.append(Check(RECEIPTS_PRESENT, CheckStatus.SKIP, f"waiting for receipts from {', '.join(missing)}", txs))
    # agree
    groups: dict[str, list[str]] = {}
    for r in receipts:
        groups.setdefault(r.result_hash.lower(), []).append(r.participant)
    if not receipts:
        checks.append(Check(RECEIPTS_AGREE, CheckStatus.SKIP, "no receipts yet"))
    elif len(groups) > 1:
        detail = "; ".join(f"{short(h)} from {', '.join(who)}" for h, who in groups.items())
        checks.append(Check(RECEIPTS_AGREE, CheckStatus.FAIL, f"receipts disagree on the result: {detail}", txs))
    elif t.result_hash is not None and t.result_hash.lower() not in groups:
        checks.append(
            Check(
                RECEIPTS_AGREE,
                CheckStatus.FAIL,
                f"the completed task's result hash {short(t.result_hash)} differs from every receipt's",
                txs,
            )
        )
    else:
        (only,) = groups
        checks.append(Check(RECEIPTS_AGREE, CheckStatus.PASS, f"all receipts name result {short(only)}", txs))
    # algorithm
    wrong = [r.participant for r in receipts if r.algorithm_hash.lower() != t.algorithm_hash.lower()]
    if not receipts:
        checks.append(Check(RECEIPT_ALGORITHM, CheckStatus.SKIP, "no receipts yet"))
    elif wrong:
        checks.append(
            Check(
                RECEIPT_ALGORITHM,
                CheckStatus.FAIL,
                f"ran other code than the registered algorithm {short(t.algorithm_hash)}: {', '.join(wrong)}",
                txs,
            )
        )
    else:
        checks.append(Check(RECEIPT_ALGORITHM, CheckStatus.PASS, "every receipt names the task's algorithm hash", txs))
    # input fingerprints
    if not receipts:
        checks.append(Check(INPUT_FINGERPRINT, CheckStatus.SKIP, "no receipts yet"))
    else:
        zero = [r.participant for r in receipts if r.input_fingerprint.lower() == ZERO]
        odd = []
        for r in receipts:
            mine = sorted(
                (td.dataset_id, td.version) for td, ds in f.datasets if ds is not None and ds.owner == r.participant
            )
            roots = []
            for dataset_id, version in mine:
                v = s.scalars(
                    select(DatasetVersion).where(
                        DatasetVersion.dataset_id == dataset_id, DatasetVersion.version == version
                    )
                ).one_or_none()
                if v is not None:
                    roots.append(v.merkle_root)
            if r.input_fingerprint.lower() != ZERO and (
                not roots or input_commitment(roots) != r.input_fingerprint.lower()
            ):
                odd.append(r.participant)
        if zero:
            checks.append(
                Check(INPUT_FINGERPRINT, CheckStatus.FAIL, f"no input fingerprint from {', '.join(zero)}", txs)
            )
        elif odd:
            checks.append(
                Check(
                    INPUT_FINGERPRINT,
                    CheckStatus.WARN,
                    "input fingerprint present but not the commitment to the registered Merkle roots "
                    f"that a pcn node reports: {', '.join(odd)}",
                    txs,
                )
            )
        else:
            checks.append(
                Check(
                    INPUT_FINGERPRINT,
                    CheckStatus.PASS,
                    "every receipt commits to the registered fingerprints of its datasets",
                    txs,
                )
            )
    # deletion
    if not receipts:
        checks.append(Check(DELETION, CheckStatus.SKIP, "no receipts yet"))
    else:
        none = [r.participant for r in receipts if r.deletion_hash.lower() == ZERO]
        if none:
            checks.append(Check(DELETION, CheckStatus.FAIL, f"deletion not attested by {', '.join(none)}", txs))
        else:
            owe = f" (the {len(dropped)} dropped participant(s) owe none)" if dropped else ""
            checks.append(Check(DELETION, CheckStatus.PASS, f"deletion attested by all {len(receipts)}{owe}", txs))
    return checks


def _check_timing(f: _Facts) -> Check:
    t = f.task
    problems, warnings, txs = [], [], []
    auth = pos(f.authorised) if f.authorised is not None else None
    for p in f.participants:
        if p.started_block is None:
            continue
        txs.append(p.start_tx or "")
        if p.started_at is not None and p.started_at > t.deadline:
            problems.append(f"{p.account} started at {p.started_at}, after the deadline {t.deadline}")
        if auth is None or (p.started_block, p.start_log_index or 0) < auth:
            problems.append(f"{p.account} started before the task was authorised")
        r = f.receipts.get(p.account)
        if r is None:
            continue
        txs.append(r.tx_hash)
        if r.block_timestamp > t.deadline:
            problems.append(f"{p.account}'s receipt was mined at {r.block_timestamp}, after the deadline {t.deadline}")
        if pos(r) < (p.started_block, p.start_log_index or 0):
            problems.append(f"{p.account}'s receipt precedes its start")
        if r.finished_at < r.started_at:
            problems.append(f"{p.account} reports finishing ({r.finished_at}) before starting ({r.started_at})")
        elif r.finished_at > t.deadline:
            warnings.append(f"{p.account} reports finishing at {r.finished_at}, after the deadline {t.deadline}")
    for p in f.participants:
        r = f.receipts.get(p.account)
        if r is not None and p.started_block is None:
            problems.append(f"{p.account} posted a receipt without a recorded start")
            txs.append(r.tx_hash)
    if not txs:
        return Check(TIMING, CheckStatus.SKIP, "nothing ran")
    if problems:
        return Check(TIMING, CheckStatus.FAIL, "; ".join(problems + warnings), tuple(txs))
    if warnings:
        return Check(TIMING, CheckStatus.WARN, "; ".join(warnings), tuple(txs))
    last = max([r.block_timestamp for r in f.receipts.values()] + [p.started_at or 0 for p in f.participants])
    return Check(
        TIMING,
        CheckStatus.PASS,
        f"every start and receipt within the deadline ({t.deadline}; last step at {last})",
        tuple(txs),
    )


def expected_status(f: _Facts) -> TaskStatus:
    """The status the events imply, decided as the contract should have decided it."""
    t = f.task
    if f.refusals:
        return TaskStatus.REFUSED
    if f.cancelled is not None:
        return TaskStatus.CANCELLED
    if f.expired is not None:
        return TaskStatus.EXPIRED
    due = f.due  # as the contract: receipts + dropped == participants
    if due and all(p.account in f.receipts for p in due):
        results = {f.receipts[p.account].result_hash.lower() for p in due}
        algos = {f.receipts[p.account].algorithm_hash.lower() for p in due}
        agree = len(results) == 1 and algos == {t.algorithm_hash.lower()}
        return TaskStatus.COMPLETED if agree else TaskStatus.DISPUTED
    if any(p.started_block is not None for p in f.participants):
        return TaskStatus.RUNNING
    if f.authorised is not None:
        return TaskStatus.AUTHORISED
    return TaskStatus.PENDING


def _check_outcome(f: _Facts) -> Check:
    t = f.task
    declared = TaskStatus(t.status)
    expected = expected_status(f)
    closing = [e.tx_hash for e in (f.completed, f.disputed, f.cancelled, f.expired) if e is not None]
    if declared is not expected:
        return Check(
            OUTCOME,
            CheckStatus.FAIL,
            f"the chain declares the task {declared.name.lower()}, its events imply {expected.name.lower()}",
            tuple(closing),
        )
    gone = f" ({len(f.dropped)} participant(s) reported dropped, not waited for)" if f.dropped else ""
    if declared is TaskStatus.COMPLETED:
        msg = f"completed with result {short(t.result_hash)}, as every receipt agrees{gone}"
    elif declared is TaskStatus.DISPUTED:
        msg = f"disputed: the receipts disagree, as recorded{gone}"
    else:
        msg = f"status {declared.name.lower()} follows from the events{gone}"
    if declared in OPEN_STATUSES and f.past_deadline:
        return Check(OUTCOME, CheckStatus.FAIL, f"still {declared.name.lower()} after its deadline {t.deadline}")
    return Check(OUTCOME, CheckStatus.PASS, msg, tuple(closing))


def verify_task(store: Store | str | Path, task_id: int, now: int | None = None) -> TaskVerdict:
    """Re-verify one task from the indexed chain data alone. `now` (unix seconds) defaults to
    the timestamp of the newest indexed block: deadlines are judged by the chain's clock."""
    with using_store(store) as st, st.read() as s:
        block, head_time = chain_time(s)
        at = head_time if now is None else now
        f = _facts(s, task_id, at)
        checks = [_check_submission(s, f), _check_approvals(s, f), *_check_policy(s, f), _check_participation(f)]
        checks.append(_check_dropouts(s, f))
        checks += _check_receipts(s, f)
        checks += [_check_timing(f), _check_outcome(f)]
        return TaskVerdict(task_id, TaskStatus(f.task.status), tuple(checks), block, at)


def verify_all(store: Store | str | Path, now: int | None = None) -> list[TaskVerdict]:
    with using_store(store) as st:
        with st.read() as s:
            ids = list(s.scalars(select(TaskRow.id).order_by(TaskRow.id)).all())
        return [verify_task(st, i, now) for i in ids]


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ResultVerdict:
    task_id: int
    ok: bool
    message: str
    on_chain: str | None
    computed: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CommitmentFn = Callable[[bytes, bytes], bytes]


def verify_result_file(
    store: Store | str | Path,
    task_id: int,
    result: bytes,
    opening: bytes,
    commitment_for: CommitmentFn | None = None,
) -> ResultVerdict:
    """Check a recipient's result against the task's on-chain result hash.

    `commitment_for(result, opening)` recomputes the commitment the nodes put in their
    receipts; by default it is the built-in algorithm's, found by the task's registered kind.
    """
    with using_store(store) as st:
        with st.read() as s:
            task = s.get(TaskRow, task_id)
            if task is None:
                raise TaskNotIndexed(f"task {task_id} is not in the auditor's store")
            on_chain = task.result_hash
            kind = None
            algo = s.get(Algorithm, task.algorithm_hash)
            if algo is not None:
                kind = algo.kind
        if TaskStatus(task.status) is not TaskStatus.COMPLETED or on_chain is None:
            return ResultVerdict(
                task_id,
                False,
                f"task {task_id} is {TaskStatus(task.status).name.lower()}: no agreed result",
                None,
                None,
            )
        if commitment_for is None:
            from pcn.algorithms import UnknownAlgorithm, protocol_class

            try:
                commitment_for = protocol_class(kind or "").commitment_for
            except UnknownAlgorithm as exc:
                return ResultVerdict(task_id, False, f"cannot recompute the commitment: {exc}", on_chain, None)
        try:
            computed = "0x" + bytes(commitment_for(result, opening)).hex()
        except Exception as exc:  # a malformed opening is the file's fault, reported as such
            return ResultVerdict(task_id, False, f"the opening is malformed: {exc}", on_chain, None)
        if computed.lower() == on_chain.lower():
            return ResultVerdict(task_id, True, "the result matches the on-chain result hash", on_chain, computed)
        return ResultVerdict(
            task_id,
            False,
            f"the result hashes to {short(computed, 18)}, the chain holds {short(on_chain, 18)}: "
            "this is not the result the participants agreed on",
            on_chain,
            computed,
        )


def verify_result_document(store: Store | str | Path, document: dict[str, Any]) -> ResultVerdict:
    """Check a decrypted result document as a pcn node stores it
    ({task_id, result, opening (hex), commitment})."""
    task_id = int(document["task_id"])
    result = document["result"]
    data = result.encode() if isinstance(result, str) else bytes(result)
    verdict = verify_result_file(store, task_id, data, bytes.fromhex(str(document.get("opening", ""))))
    claimed = str(document.get("commitment", ""))
    if verdict.ok and claimed and claimed.lower() != (verdict.on_chain or "").lower():
        return ResultVerdict(
            task_id, False, "the document's stated commitment differs from the chain", verdict.on_chain, claimed
        )
    return verdict


def dumps(obj: TaskVerdict | LogVerdict | ResultVerdict) -> str:
    """A verdict as indented JSON (for the CLI and reports)."""
    return json.dumps(obj.to_dict(), indent=2, sort_keys=True)
