"""The JSON API's response models: what each /api route and /auth/nonce answers, so the
OpenAPI schema (/api/openapi.json) describes it field by field.

The read models (`pcn.auditor.web.views`) build plain dicts that the pages render too; these
models check them on the way out. Unknown keys are an error (`extra="forbid"`), so a view
cannot grow a field the schema does not describe; the routes leave out keys a view did not
set (`response_model_exclude_unset`), so optional fields stay absent rather than null.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ErrorDetail(Model):
    code: str
    message: str


class ErrorResponse(Model):
    error: ErrorDetail


# ---------------------------------------------------------------------------- shared pieces


class OrgRef(Model):
    account: str
    name: str
    member: bool = Field(description="whether the account is a consortium member (else only its address is known)")


class TaskStatusInfo(Model):
    key: str
    label: str
    tone: str
    help: str


class AlgorithmRef(Model):
    hash: str | None
    kind: str | None
    version: str | None


class Anomaly(Model):
    key: str
    kind: str
    kind_label: str
    kind_help: str
    severity: str
    severity_label: str
    severity_tone: str
    message: str = Field(description="the finding as the detector wrote it")
    text: str = Field(description="the finding in plain words")
    task_id: int | None
    dataset_id: int | None
    org: OrgRef | None
    tx_hashes: list[str]
    block_number: int | None
    occurred_at: int | None
    first_seen: int
    last_seen: int
    resolved_at: int | None
    open: bool
    detail: dict[str, Any] | None


class Event(Model):
    name: str
    contract: str
    text: str
    tone: str
    actor: OrgRef | None
    sender: OrgRef | None
    task_id: int | None
    dataset_id: int | None
    block: int
    log_index: int
    time: int
    tx: str
    args: dict[str, Any] | None


class Series(Model):
    label: str
    data: list[int]
    tone: str


class TimeSeries(Model):
    labels: list[str]
    starts: list[int]
    width: int
    datasets: list[Series]


class Progress(Model):
    approvals: list[int] = Field(description="[approved, required]")
    started: list[int] = Field(description="[started, participants]")
    receipts: list[int] = Field(description="[posted, due]")
    dropped: list[int] = Field(description="[dropped out, participants]")


class TaskBrief(Model):
    id: int
    status: TaskStatusInfo
    requester: OrgRef | None
    recipient: OrgRef | None
    algorithm: AlgorithmRef
    datasets: list[int]
    participants: int
    submitted_at: int
    submitted_block: int
    closed_at: int | None
    deadline: int
    epsilon: float
    refusal_reason: str | None
    progress: Progress


class DatasetBrief(Model):
    id: int
    owner: str
    version: int
    uses: int
    max_uses: int
    epsilon_spent: float
    epsilon_total: float
    expiry: int
    expiry_never: bool
    registered_at: int
    registered_block: int
    registered_tx: str


# ---------------------------------------------------------------------------- status and session


class Status(Model):
    chain_id: int | None
    deploy_block: int | None
    indexed_block: int | None
    indexed_at: int | None
    index_updated_at: int | None
    events: int
    open_anomalies: int
    open_tasks: int
    stamp: str = Field(description="changes whenever anything a page shows may have changed")
    head_block: int | None = Field(description="the chain's head, None when the chain cannot be reached")
    indexing: bool


class SessionInfo(Model):
    address: str
    created: int
    expires_at: int
    chain_id: int


# ---------------------------------------------------------------------------- overview


class Counts(Model):
    organisations: int
    organisations_active: int
    organisations_suspended: int
    datasets: int
    datasets_near_limit: int
    algorithms: int
    algorithms_deprecated: int
    tasks: int
    tasks_open: int
    refusals: int
    anomalies_open: int
    anomalies_resolved: int


class StatusCount(TaskStatusInfo):
    count: int


class SeverityCount(Model):
    severity: str
    label: str
    tone: str
    count: int


class Charts(Model):
    tasks: TimeSeries
    refusals: TimeSeries
    anomalies: TimeSeries


class Overview(Model):
    counts: Counts
    tasks_by_status: list[StatusCount]
    anomalies_by_severity: list[SeverityCount]
    charts: Charts
    open_tasks: list[TaskBrief]
    recent_anomalies: list[Anomaly]
    recent_events: list[Event]
    chain_time: int


# ---------------------------------------------------------------------------- organisations


class OrgIdentity(Model):
    """What the consortium registry says about an organisation: shared by the list and detail views."""

    account: str
    name: str
    status: str
    status_label: str
    status_tone: str
    endpoint: str
    admitted_at: int
    admitted_block: int
    admitted_tx: str


class OrgSummary(OrgIdentity):
    status_changed_at: int | None
    status_changes: int
    datasets: int
    tasks_requested: int
    tasks_participated: int
    refusals: int
    open_anomalies: int


class OrgStatusChange(Model):
    change: str
    label: str
    status_label: str
    status_tone: str
    by: OrgRef | None
    block: int
    time: int
    tx: str


class RoleChange(Model):
    role: str
    granted: bool
    by: OrgRef | None
    block: int
    time: int
    tx: str


class LogCheck(Model):
    id: int
    ok: bool
    checked_at: int
    entries: int
    head_seq: int | None
    indexed_block: int | None
    problems: list[dict[str, Any]] | None


class LogAnchor(Model):
    sequence: int
    head_hash: str
    block: int
    time: int
    tx: str


class OrgDetail(OrgIdentity):
    encryption_key: str
    history: list[OrgStatusChange]
    profile_changes: list[Event]
    roles: list[RoleChange]
    datasets: list[DatasetBrief]
    tasks: list[TaskBrief]
    task_count: int
    anomalies: list[Anomaly]
    log_checks: list[LogCheck]
    anchors: list[LogAnchor]


# ---------------------------------------------------------------------------- datasets


class DatasetSummary(DatasetBrief):
    owner_ref: OrgRef | None
    tasks: int
    last_used_at: int | None


class DatasetVersion(Model):
    version: int
    merkle_root: str
    schema_hash: str
    metadata_hash: str
    row_count: int
    block: int
    time: int
    tx: str


class PolicyChange(Model):
    what: str
    expiry: int | None = Field(None, description="set by a change of the limits only")
    block: int
    time: int
    tx: str


class Allowed(Model):
    algorithm: list[AlgorithmRef]
    requester: list[OrgRef | None]
    recipient: list[OrgRef | None]


class DatasetUse(Model):
    task_id: int
    use: int
    max_uses: int
    requester: OrgRef | None
    recipient: OrgRef | None
    algorithm: AlgorithmRef
    epsilon: float
    epsilon_spent_after: float
    status: TaskStatusInfo | None
    block: int
    time: int
    tx: str


class PinnedTask(Model):
    task_id: int
    version: int
    status: TaskStatusInfo | None
    submitted_at: int | None


class DatasetDetail(DatasetBrief):
    owner_ref: OrgRef | None
    versions: list[DatasetVersion]
    policy_history: list[PolicyChange]
    allowed: Allowed
    usage: list[DatasetUse]
    other_tasks: list[PinnedTask]
    anomalies: list[Anomaly]


# ---------------------------------------------------------------------------- algorithms


class AlgorithmSummary(Model):
    code_hash: str
    kind: str
    kind_label: str
    version: str
    description_hash: str
    publisher: OrgRef | None
    registered_at: int
    registered_block: int
    registered_tx: str
    deprecated: bool
    deprecated_at: int | None
    deprecated_tx: str | None
    deprecated_by: OrgRef | None
    tasks: int
    allowed_for_datasets: list[int]


# ---------------------------------------------------------------------------- tasks


class VerdictSummary(Model):
    verdict: str
    label: str
    tone: str
    failed: list[str]
    warnings: list[str]


class TaskListItem(TaskBrief):
    verdict: VerdictSummary | None


class TaskPage(Model):
    total: int
    page: int
    per_page: int
    items: list[TaskListItem]


class Check(Model):
    name: str
    status: str
    message: str
    tx_hashes: list[str]
    text: str
    label: str
    status_label: str
    tone: str


class Verdict(Model):
    task_id: int
    status: str
    verdict: str
    as_of_block: int | None
    as_of_time: int
    checks: list[Check]
    label: str
    tone: str
    help: str
    failed: list[str]
    warnings: list[str]


class DatasetPin(Model):
    id: int
    version: int
    owner: OrgRef | None


class Receipt(Model):
    result_hash: str
    transcript_hash: str
    input_fingerprint: str
    algorithm_hash: str
    deletion_hash: str
    reported_started_at: int
    reported_finished_at: int
    time: int
    tx: str


class RefusalInfo(Model):
    reason: str
    code: int
    detail_hash: str
    time: int
    tx: str


class Dropout(Model):
    reported_by: OrgRef | None
    block: int
    time: int | None
    tx: str | None


class Participant(OrgRef):
    state: str
    state_label: str
    state_tone: str
    approved_at: int | None
    approval_tx: str | None
    started_at: int | None
    start_tx: str | None
    receipt: Receipt | None
    refusal: RefusalInfo | None
    dropout: Dropout | None


class TaskDetail(TaskBrief):
    params_hash: str
    result_hash: str | None
    submit_tx: str
    authorised_at: int | None
    authorise_tx: str | None
    close_tx: str | None
    closed_by: OrgRef | None
    past_deadline: bool
    chain_time: int
    dataset_refs: list[DatasetPin]
    participant_list: list[Participant]
    timeline: list[Event]
    verdict: Verdict | None
    anomalies: list[Anomaly]


# ---------------------------------------------------------------------------- anomalies and transactions


class AnomalyKind(Model):
    kind: str
    label: str
    help: str


class AnomalyPage(Model):
    total: int
    page: int
    per_page: int
    items: list[Anomaly]
    kinds: list[AnomalyKind]


class Transaction(Model):
    tx_hash: str
    block: int
    block_hash: str
    time: int
    sender: OrgRef | None
    events: list[Event]


# ---------------------------------------------------------------------------- reports (build_report)


class ReportPeriod(Model):
    from_: str = Field(alias="from")
    to: str
    from_ts: int
    to_ts: int


class ReportFilters(Model):
    org: str | None
    org_name: str | None
    dataset: int | None


class ReportSummary(Model):
    tasks: int
    tasks_by_status: dict[str, int]
    verdicts: dict[str, int]
    refusals: int
    anomalies: int
    anomalies_by_severity: dict[str, int]
    datasets_used: int
    epsilon_spent: float


class ReportTask(Model):
    task_id: int
    submitted_at: str
    submitted_block: int
    submit_tx: str
    status: str
    requester: str
    requester_name: str
    recipient: str
    recipient_name: str
    algorithm_hash: str
    algorithm: str
    datasets: list[int]
    dataset_versions: list[int]
    participants: list[str]
    participant_names: list[str]
    dropped: list[str]
    epsilon: float
    deadline: str
    closed_at: str
    result_hash: str
    refusal_reason: str
    verdict: str | None = None
    failed_checks: list[str] | None = None
    warnings: list[str] | None = None


class ReportRefusals(Model):
    reason: str
    reason_code: int
    count: int
    tasks: list[int]


class ReportAnomaly(Model):
    key: str
    kind: str
    severity: str
    message: str
    task_id: int | None
    dataset_id: int | None
    org: str | None
    org_name: str
    tx_hashes: list[str]
    block_number: int | None
    occurred_at: str
    detail: dict[str, Any]


class ReportRequester(Model):
    account: str
    name: str
    uses: int


class ReportDatasetUsage(Model):
    dataset_id: int
    owner: str
    owner_name: str
    version: int
    fingerprint: str | None
    uses_in_period: int
    epsilon_in_period: float
    tasks_in_period: list[int]
    requesters_in_period: list[ReportRequester]
    uses_total: int
    max_uses: int
    epsilon_spent_total: float
    epsilon_budget: float
    policy_expiry: int | None


class ReportStatusChange(Model):
    change: str
    time: str
    tx: str


class ReportOrganisation(Model):
    account: str
    name: str
    status: str
    status_changes: list[ReportStatusChange]
    tasks_requested: int
    tasks_participated: int
    approvals: int
    starts: int
    receipts: int
    refusals: int
    datasets_registered: int


class Report(Model):
    report: str
    version: int
    generated_at: str
    chain_id: int | None
    as_of_block: int | None
    as_of_time: str
    period: ReportPeriod
    filters: ReportFilters
    summary: ReportSummary
    tasks: list[ReportTask]
    refusals_by_reason: list[ReportRefusals]
    anomalies: list[ReportAnomaly]
    dataset_usage: list[ReportDatasetUsage]
    organisations: list[ReportOrganisation]


# ---------------------------------------------------------------------------- sign-in


class NonceIssued(Model):
    nonce: str
    domain: str
    uri: str
    chain_id: int
    statement: str
    issued_at: str
    expiration_time: str
    expires_in: int
    address: str | None = Field(description="the account the message is for; None without ?address=")
    message: str | None = Field(description="the EIP-4361 message to sign; None without ?address=")


class SignedIn(Model):
    ok: bool
    address: str
    expires_at: int
    next: str
