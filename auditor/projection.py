"""From events to tables: how each pcn event changes the auditor's rows.

`apply_event` is a pure function of the session and one stored event (no chain access), so
the derived tables can be rebuilt from the events table alone (`rebuild`), which is what
the indexer does after a reorg. Events must be applied in chain order (block, log index).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_utils import keccak
from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from pcn.auditor.store import (
    DERIVED_TABLES,
    Algorithm,
    Approval,
    Dataset,
    DatasetUse,
    DatasetVersion,
    EventRow,
    LogAnchor,
    Organisation,
    OrgStatusChange,
    PolicyGrant,
    PolicyLimitsChange,
    ReceiptRow,
    Refusal,
    RoleChange,
    TaskDataset,
    TaskParticipant,
    TaskRow,
)
from pcn.chain.types import OrgStatus, ParticipantState, TaskStatus

ADMIN_ROLE = "0x" + "00" * 32
AUDITOR_ROLE = "0x" + keccak(text="pcn.AUDITOR_ROLE").hex()
ROLE_NAMES = {ADMIN_ROLE: "admin", AUDITOR_ROLE: "auditor"}

#: The argument naming the organisation that performed the action an event records.
ACTOR_ARG: dict[str, str] = {
    "TaskSubmitted": "requester",
    "TaskApproved": "owner",
    "TaskStarted": "participant",
    "TaskRefused": "participant",
    "ReceiptSubmitted": "participant",
    "ParticipantDropped": "reportedBy",  # the result recipient reports; the dropped party did nothing
    "ParticipantConsented": "participant",
    "ParticipantHeartbeat": "participant",
    "DropoutContested": "participant",  # the dropped party objects: the task becomes Disputed
    "TaskCancelled": "by",
    "LogAnchored": "org",
    "DatasetRegistered": "owner",
    "DatasetVersionPublished": "owner",
    "AlgorithmRegistered": "publisher",
    "AlgorithmDeprecated": "by",
    "AlgorithmApproved": "by",
    "AlgorithmRevoked": "by",
    "AlgorithmUndeprecated": "by",
    "OrganisationEndpointUpdated": "account",
    "OrganisationKeyUpdated": "account",
}
#: Events emitted on behalf of a dataset's owner (the owner is the actor).
OWNER_EVENTS = frozenset({"PolicySet", "PolicyAlgorithmSet", "PolicyRequesterSet", "PolicyRecipientSet"})

Handler = Callable[[Session, EventRow], None]


def _loc(ev: EventRow) -> dict[str, Any]:
    return {
        "block_number": ev.block_number,
        "block_timestamp": ev.block_timestamp,
        "tx_hash": ev.tx_hash,
        "log_index": ev.log_index,
    }


def annotate(s: Session, ev: EventRow) -> None:
    """Fill the events row's link columns (task, dataset, acting organisation)."""
    a = ev.args
    ev.task_id = int(a["taskId"]) if "taskId" in a else None
    ev.dataset_id = int(a["datasetId"]) if "datasetId" in a else None
    name = ACTOR_ARG.get(ev.name)
    if name is not None:
        ev.actor = str(a[name])
    elif ev.name in OWNER_EVENTS and ev.dataset_id is not None:
        ds = s.get(Dataset, ev.dataset_id)
        ev.actor = ds.owner if ds is not None else None


# ---------------------------------------------------------------------------- consortium


def _org_admitted(s: Session, ev: EventRow) -> None:
    a = ev.args
    s.add(
        Organisation(
            account=a["account"],
            name=a["name"],
            encryption_key=a["encryptionKey"],
            endpoint=a["endpoint"],
            status=int(OrgStatus.ACTIVE),
            admitted_block=ev.block_number,
            admitted_at=ev.block_timestamp,
            admitted_tx=ev.tx_hash,
            status_changed_block=ev.block_number,
            status_changed_at=ev.block_timestamp,
        )
    )
    s.flush()
    s.add(
        OrgStatusChange(
            account=a["account"], change="admitted", status=int(OrgStatus.ACTIVE), by=ev.tx_from, **_loc(ev)
        )
    )


def _org_status(change: str, status: OrgStatus) -> Handler:
    def handle(s: Session, ev: EventRow) -> None:
        org = s.get(Organisation, ev.args["account"])
        if org is not None:
            org.status = int(status)
            org.status_changed_block = ev.block_number
            org.status_changed_at = ev.block_timestamp
            s.add(OrgStatusChange(account=org.account, change=change, status=int(status), by=ev.args["by"], **_loc(ev)))

    return handle


def _org_endpoint(s: Session, ev: EventRow) -> None:
    org = s.get(Organisation, ev.args["account"])
    if org is not None:
        org.endpoint = ev.args["endpoint"]


def _org_key(s: Session, ev: EventRow) -> None:
    org = s.get(Organisation, ev.args["account"])
    if org is not None:
        org.encryption_key = ev.args["encryptionKey"]


def _role(granted: bool) -> Handler:
    def handle(s: Session, ev: EventRow) -> None:
        a = ev.args
        role = str(a["role"])
        s.add(
            RoleChange(
                role=role,
                role_name=ROLE_NAMES.get(role, role),
                account=a["account"],
                sender=a["sender"],
                granted=granted,
                **_loc(ev),
            )
        )

    return handle


# ---------------------------------------------------------------------------- algorithms


def _algorithm_registered(s: Session, ev: EventRow) -> None:
    a = ev.args
    s.add(
        Algorithm(
            code_hash=a["codeHash"],
            publisher=a["publisher"],
            kind=a["kind"],
            version=a["version"],
            description_hash=a["descriptionHash"],
            registered_block=ev.block_number,
            registered_at=ev.block_timestamp,
            registered_tx=ev.tx_hash,
            deprecated=False,
        )
    )


def _algorithm_deprecated(s: Session, ev: EventRow) -> None:
    algo = s.get(Algorithm, ev.args["codeHash"])
    if algo is not None:
        algo.deprecated = True
        algo.deprecated_by = ev.args["by"]
        algo.deprecated_block = ev.block_number
        algo.deprecated_at = ev.block_timestamp
        algo.deprecated_tx = ev.tx_hash


# ---------------------------------------------------------------------------- datasets


def _fingerprint_row(ev: EventRow) -> DatasetVersion:
    a = ev.args
    return DatasetVersion(
        dataset_id=int(a["datasetId"]),
        version=int(a["version"]),
        merkle_root=a["merkleRoot"],
        schema_hash=a["schemaHash"],
        metadata_hash=a["metadataHash"],
        row_count=int(a["rowCount"]),
        **_loc(ev),
    )


def _dataset_registered(s: Session, ev: EventRow) -> None:
    a = ev.args
    s.add(
        Dataset(
            id=int(a["datasetId"]),
            owner=a["owner"],
            version=int(a["version"]),
            max_uses=0,
            uses=0,
            expiry=0,
            epsilon_total=0,
            epsilon_spent=0,
            registered_block=ev.block_number,
            registered_at=ev.block_timestamp,
            registered_tx=ev.tx_hash,
        )
    )
    s.flush()
    s.add(_fingerprint_row(ev))


def _dataset_version(s: Session, ev: EventRow) -> None:
    ds = s.get(Dataset, int(ev.args["datasetId"]))
    if ds is not None:
        ds.version = int(ev.args["version"])
        s.add(_fingerprint_row(ev))


def _policy_set(s: Session, ev: EventRow) -> None:
    a = ev.args
    ds = s.get(Dataset, int(a["datasetId"]))
    if ds is None:
        return
    ds.max_uses, ds.expiry, ds.epsilon_total = int(a["maxUses"]), int(a["expiry"]), int(a["epsilonTotal"])
    s.add(
        PolicyLimitsChange(
            dataset_id=ds.id, max_uses=ds.max_uses, expiry=ds.expiry, epsilon_total=ds.epsilon_total, **_loc(ev)
        )
    )


def _grant(kind: str, arg: str) -> Handler:
    def handle(s: Session, ev: EventRow) -> None:
        a = ev.args
        if s.get(Dataset, int(a["datasetId"])) is None:
            return
        s.add(
            PolicyGrant(
                dataset_id=int(a["datasetId"]), kind=kind, subject=str(a[arg]), allowed=bool(a["allowed"]), **_loc(ev)
            )
        )

    return handle


def _dataset_used(s: Session, ev: EventRow) -> None:
    a = ev.args
    ds = s.get(Dataset, int(a["datasetId"]))
    if ds is None:
        return
    ds.uses, ds.epsilon_spent = int(a["uses"]), int(a["epsilonSpent"])
    s.add(
        DatasetUse(dataset_id=ds.id, task_id=int(a["taskId"]), uses=ds.uses, epsilon_spent=ds.epsilon_spent, **_loc(ev))
    )


# ---------------------------------------------------------------------------- tasks


def _task_submitted(s: Session, ev: EventRow) -> None:
    a = ev.args
    task_id = int(a["taskId"])
    owners: list[str] = []
    for dataset_id in a["datasetIds"]:
        ds = s.get(Dataset, int(dataset_id))
        if ds is not None and ds.owner not in owners:
            owners.append(ds.owner)
    s.add(
        TaskRow(
            id=task_id,
            requester=a["requester"],
            algorithm_hash=a["algorithmHash"],
            params_hash=a["paramsHash"],
            result_recipient=a["resultRecipient"],
            deadline=int(a["deadline"]),
            epsilon=int(a["epsilon"]),
            status=int(TaskStatus.PENDING),
            refusal_reason=0,
            required_approvals=len(owners),
            approvals=0,
            started_count=0,
            receipt_count=0,
            dropped_count=0,
            submitted_block=ev.block_number,
            submitted_at=ev.block_timestamp,
            submit_tx=ev.tx_hash,
        )
    )
    s.flush()
    for i, (dataset_id, version) in enumerate(zip(a["datasetIds"], a["datasetVersions"], strict=True)):
        s.add(TaskDataset(task_id=task_id, position=i, dataset_id=int(dataset_id), version=int(version)))
    for i, account in enumerate(a["participants"]):
        s.add(TaskParticipant(task_id=task_id, account=account, position=i, state=int(ParticipantState.INVITED)))


def _task(s: Session, ev: EventRow) -> TaskRow | None:
    return s.get(TaskRow, int(ev.args["taskId"]))


def _close(task: TaskRow, ev: EventRow, status: TaskStatus, by: str | None = None) -> None:
    task.status = int(status)
    task.closed_block = ev.block_number
    task.closed_at = ev.block_timestamp
    task.close_tx = ev.tx_hash
    task.closed_by = by


def _task_approved(s: Session, ev: EventRow) -> None:
    task = _task(s, ev)
    if task is None:
        return
    task.approvals += 1
    s.add(Approval(task_id=task.id, owner=ev.args["owner"], relayer=ev.args["relayer"], **_loc(ev)))


def _task_authorised(s: Session, ev: EventRow) -> None:
    task = _task(s, ev)
    if task is None:
        return
    task.status = int(TaskStatus.AUTHORISED)
    task.authorised_block = ev.block_number
    task.authorised_at = ev.block_timestamp
    task.authorise_tx = ev.tx_hash


def _set_state(s: Session, task: TaskRow, participant: str, state: ParticipantState) -> TaskParticipant | None:
    """Move one participant of a task to `state`; the row, for the caller to add details."""
    part = s.get(TaskParticipant, (task.id, participant))
    if part is not None:
        part.state = int(state)
    return part


def _task_started(s: Session, ev: EventRow) -> None:
    task = _task(s, ev)
    if task is None:
        return
    part = _set_state(s, task, ev.args["participant"], ParticipantState.STARTED)
    if part is not None:
        part.started_block = ev.block_number
        part.started_at = ev.block_timestamp
        part.start_tx = ev.tx_hash
        part.start_log_index = ev.log_index
    task.started_count += 1
    task.status = int(TaskStatus.RUNNING)
    if task.first_started_block is None:
        task.first_started_block = ev.block_number
        task.first_started_at = ev.block_timestamp


def _task_refused(s: Session, ev: EventRow) -> None:
    task = _task(s, ev)
    if task is None:
        return
    a = ev.args
    _set_state(s, task, a["participant"], ParticipantState.REFUSED)
    task.refusal_reason = int(a["reason"])
    _close(task, ev, TaskStatus.REFUSED, a["participant"])
    s.add(
        Refusal(
            task_id=task.id,
            participant=a["participant"],
            reason=int(a["reason"]),
            detail_hash=a["detailHash"],
            **_loc(ev),
        )
    )


def _receipt(s: Session, ev: EventRow) -> None:
    task = _task(s, ev)
    if task is None:
        return
    a = ev.args
    _set_state(s, task, a["participant"], ParticipantState.RECEIPTED)
    task.receipt_count += 1
    s.add(
        ReceiptRow(
            task_id=task.id,
            participant=a["participant"],
            result_hash=a["resultHash"],
            transcript_hash=a["transcriptHash"],
            input_fingerprint=a["inputFingerprint"],
            algorithm_hash=a["algorithmHash"],
            deletion_hash=a["deletionHash"],
            started_at=int(a["startedAt"]),
            finished_at=int(a["finishedAt"]),
            **_loc(ev),
        )
    )


def _participant_dropped(s: Session, ev: EventRow) -> None:
    """The result recipient reported a started participant that stopped answering: it owes
    no receipt, and the task completes on the others' receipts."""
    task = _task(s, ev)
    if task is None:
        return
    a = ev.args
    part = _set_state(s, task, a["participant"], ParticipantState.DROPPED)
    if part is not None:
        part.dropped_block = ev.block_number
        part.dropped_at = ev.block_timestamp
        part.drop_tx = ev.tx_hash
        part.drop_log_index = ev.log_index
        part.dropped_by = a["reportedBy"]
    task.dropped_count += 1


def _task_completed(s: Session, ev: EventRow) -> None:
    task = _task(s, ev)
    if task is not None:
        task.result_hash = ev.args["resultHash"]
        _close(task, ev, TaskStatus.COMPLETED)


def _task_closed(status: TaskStatus, by_arg: str | None) -> Handler:
    def handle(s: Session, ev: EventRow) -> None:
        task = _task(s, ev)
        if task is not None:
            _close(task, ev, status, ev.args[by_arg] if by_arg else None)

    return handle


def _log_anchored(s: Session, ev: EventRow) -> None:
    a = ev.args
    s.add(LogAnchor(org=a["org"], sequence=int(a["sequence"]), head_hash=a["headHash"], **_loc(ev)))


HANDLERS: dict[tuple[str, str], Handler] = {
    ("Consortium", "OrganisationAdmitted"): _org_admitted,
    ("Consortium", "OrganisationSuspended"): _org_status("suspended", OrgStatus.SUSPENDED),
    ("Consortium", "OrganisationReinstated"): _org_status("reinstated", OrgStatus.ACTIVE),
    ("Consortium", "OrganisationEndpointUpdated"): _org_endpoint,
    ("Consortium", "OrganisationKeyUpdated"): _org_key,
    ("Consortium", "RoleGranted"): _role(True),
    ("Consortium", "RoleRevoked"): _role(False),
    ("AlgorithmRegistry", "AlgorithmRegistered"): _algorithm_registered,
    ("AlgorithmRegistry", "AlgorithmDeprecated"): _algorithm_deprecated,
    ("DatasetRegistry", "DatasetRegistered"): _dataset_registered,
    ("DatasetRegistry", "DatasetVersionPublished"): _dataset_version,
    ("DatasetRegistry", "PolicySet"): _policy_set,
    ("DatasetRegistry", "PolicyAlgorithmSet"): _grant("algorithm", "algorithmHash"),
    ("DatasetRegistry", "PolicyRequesterSet"): _grant("requester", "requester"),
    ("DatasetRegistry", "PolicyRecipientSet"): _grant("recipient", "recipient"),
    ("DatasetRegistry", "DatasetUsed"): _dataset_used,
    ("TaskManager", "TaskSubmitted"): _task_submitted,
    ("TaskManager", "TaskApproved"): _task_approved,
    ("TaskManager", "TaskAuthorised"): _task_authorised,
    ("TaskManager", "TaskStarted"): _task_started,
    ("TaskManager", "TaskRefused"): _task_refused,
    ("TaskManager", "ReceiptSubmitted"): _receipt,
    ("TaskManager", "ParticipantDropped"): _participant_dropped,
    ("TaskManager", "TaskCompleted"): _task_completed,
    ("TaskManager", "TaskDisputed"): _task_closed(TaskStatus.DISPUTED, None),
    ("TaskManager", "TaskCancelled"): _task_closed(TaskStatus.CANCELLED, "by"),
    ("TaskManager", "TaskExpired"): _task_closed(TaskStatus.EXPIRED, "by"),
    ("AuditLog", "LogAnchored"): _log_anchored,
}


def apply_event(s: Session, ev: EventRow) -> None:
    """Apply one stored event to the derived tables (events without a handler, such as
    TaskManagerSet or RoleAdminChanged, live in the events table only)."""
    handler = HANDLERS.get((ev.contract, ev.name))
    if handler is not None:
        handler(s, ev)


def clear_derived(s: Session) -> None:
    for model in DERIVED_TABLES:
        s.execute(delete(model))


def rebuild(s: Session, page: int = 2000) -> int:
    """Empty every derived table and replay the events table in chain order; return how
    many events were replayed. Runs inside the caller's transaction."""
    s.flush()
    clear_derived(s)
    s.expunge_all()
    replayed = 0
    last: tuple[int, int] = (-1, -1)
    while True:
        batch = s.scalars(
            select(EventRow)
            .where(
                or_(
                    EventRow.block_number > last[0],
                    and_(EventRow.block_number == last[0], EventRow.log_index > last[1]),
                )
            )
            .order_by(EventRow.block_number, EventRow.log_index)
            .limit(page)
        ).all()
        if not batch:
            break
        for ev in batch:
            apply_event(s, ev)
            replayed += 1
        last = batch[-1].position
        s.flush()
        s.expunge_all()
    return replayed
