"""Plain words for every code the chain and the auditor use, with a colour tone each.

A regulator reads "Refused by a participant", not ``REFUSED = 6``. Tones are the CSS classes
of the templates' `badge` macro: ok (green), bad (red), warn (amber), run (blue), info
(blue-grey), idle (grey).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from pcn.chain.types import OrgStatus, ParticipantState, RefusalReason, TaskStatus

# (label, tone, explanation)
TASK_STATUS: dict[int, tuple[str, str, str]] = {
    int(TaskStatus.NONE): ("Unknown", "idle", "The chain holds no such task."),
    int(TaskStatus.PENDING): ("Awaiting approval", "info", "Submitted; waiting for every data owner to approve."),
    int(TaskStatus.AUTHORISED): ("Approved", "run", "Every data owner approved; no participant has started yet."),
    int(TaskStatus.RUNNING): ("Running", "run", "The participants are computing; receipts are being posted."),
    int(TaskStatus.COMPLETED): (
        "Completed",
        "ok",
        "Every participant posted a receipt (except any reported dropped out) and all receipts agree.",
    ),
    int(TaskStatus.DISPUTED): (
        "Disputed",
        "bad",
        "Every participant posted a receipt (except any reported dropped out) but the receipts disagree.",
    ),
    int(TaskStatus.REFUSED): ("Refused", "warn", "A participant refused to take part after its checks failed."),
    int(TaskStatus.CANCELLED): ("Cancelled", "idle", "The requester withdrew the task before it ran."),
    int(TaskStatus.EXPIRED): ("Expired", "warn", "The deadline passed before the task finished."),
}

TASK_STATUS_KEYS: dict[str, int] = {s.name.lower(): int(s) for s in TaskStatus if s is not TaskStatus.NONE}

ORG_STATUS: dict[int, tuple[str, str]] = {
    int(OrgStatus.NONE): ("Not a member", "idle"),
    int(OrgStatus.ACTIVE): ("Active", "ok"),
    int(OrgStatus.SUSPENDED): ("Suspended", "bad"),
}

ORG_CHANGE: dict[str, str] = {
    "admitted": "Admitted to the consortium",
    "suspended": "Suspended",
    "reinstated": "Reinstated",
}

PARTICIPANT_STATE: dict[int, tuple[str, str]] = {
    int(ParticipantState.NONE): ("Not invited", "idle"),
    int(ParticipantState.INVITED): ("Not started", "idle"),
    int(ParticipantState.STARTED): ("Computing", "run"),
    int(ParticipantState.REFUSED): ("Refused", "warn"),
    int(ParticipantState.RECEIPTED): ("Receipt posted", "ok"),
    int(ParticipantState.DROPPED): ("Dropped out", "warn"),
}

REFUSAL_REASON: dict[int, str] = {
    int(RefusalReason.NONE): "No reason given",
    int(RefusalReason.TASK_NOT_AUTHORISED): "The task was not authorised by every data owner",
    int(RefusalReason.TASK_EXPIRED): "The task was past its deadline",
    int(RefusalReason.TASK_CANCELLED): "The task had been cancelled",
    int(RefusalReason.FINGERPRINT_MISMATCH): "The local data did not match its registered fingerprint",
    int(RefusalReason.ALGORITHM_HASH_MISMATCH): "The code to run did not match the registered algorithm",
    int(RefusalReason.ALGORITHM_NOT_APPROVED): "The algorithm is not approved for the dataset",
    int(RefusalReason.REQUESTER_NOT_ALLOWED): "The requester is not allowed by the dataset's policy",
    int(RefusalReason.RECIPIENT_NOT_ALLOWED): "The result recipient is not allowed by the dataset's policy",
    int(RefusalReason.USES_EXHAUSTED): "The dataset's number of allowed uses was used up",
    int(RefusalReason.POLICY_EXPIRED): "The dataset's usage policy had expired",
    int(RefusalReason.PRIVACY_BUDGET_EXCEEDED): "The dataset's privacy budget (ε) would be exceeded",
    int(RefusalReason.PEER_NOT_ACTIVE): "A peer is not an active consortium member",
    int(RefusalReason.BAD_PEER_SIGNATURE): "A peer's message carried a bad signature",
    int(RefusalReason.DATA_UNAVAILABLE): "The local data was unavailable",
    int(RefusalReason.INVALID_PARAMETERS): "The task's parameters were invalid",
    int(RefusalReason.PEER_UNREACHABLE): "A peer could not be reached",
    int(RefusalReason.PROTOCOL_FAILURE): "The computation protocol failed",
    int(RefusalReason.DP_NOT_APPLIED): "The parameters did not apply the differential privacy the dataset requires",
    int(RefusalReason.KEY_CAP_EXCEEDED): "The private query declared more keys than the dataset allows",
}


def refusal_reason(code: int) -> str:
    return REFUSAL_REASON.get(int(code), f"Reason code {code}")


SEVERITY: dict[str, tuple[str, str]] = {
    "critical": ("Critical", "bad"),
    "high": ("High", "bad"),
    "medium": ("Medium", "warn"),
    "low": ("Low", "info"),
}
SEVERITY_ORDER = ("critical", "high", "medium", "low")

ANOMALY_KIND: dict[str, str] = {
    "refusal": "Task refused by a participant",
    "dispute": "Participants' results disagree",
    "task-expired": "Task expired without an outcome",
    "never-started": "Approved but never started",
    "receipt-missing": "Receipt missing after the deadline",
    "participant-dropped": "Participant dropped out mid-computation",
    "fingerprint-changed": "Data changed while its policy was live",
    "quota-near": "Dataset uses near the limit",
    "quota-exhausted": "Dataset uses at the limit",
    "quota-over": "Dataset uses over the limit",
    "budget-near": "Privacy budget (ε) near the limit",
    "budget-exhausted": "Privacy budget (ε) used up",
    "budget-over": "Privacy budget (ε) over the limit",
    "participant-suspended": "Participant suspended during a task",
    "acted-while-suspended": "Organisation acted while suspended",
    "log-mismatch": "Local log disagrees with the chain",
}


# What each kind means, for a reader who is not an engineer.
ANOMALY_HELP: dict[str, str] = {
    "refusal": "A participant declined to take part after its own checks failed; the reason is recorded on chain.",
    "dispute": "The participants finished but report different results (or ran other code than the registered "
    "algorithm), so no result was accepted.",
    "task-expired": "The deadline passed before the task produced an outcome.",
    "never-started": "Every data owner approved the task, but no participant began it before the deadline.",
    "receipt-missing": "A participant of a task that ran did not post its receipt (its proof of what it "
    "computed and that it deleted the intermediate data) by the deadline.",
    "participant-dropped": "A participant stopped answering in the middle of the computation. The organisation "
    "receiving the result reported it on chain and the others finished without it; the dropped participant "
    "owes no receipt. Some algorithms (federated learning with secure aggregation) are built to allow this, "
    "others are not. Either way, the result was computed without that participant's further contribution, "
    "on the recipient's word: worth a look, especially when it recurs.",
    "fingerprint-changed": "A data owner published a new version of its data while its usage policy was live "
    "and tasks had been approved on the older version.",
    "quota-near": "A dataset has used 80 % or more of the number of uses its owner allows.",
    "quota-exhausted": "A dataset has used every use its owner allows: no further task can use it unless the "
    "owner raises the limit.",
    "quota-over": "A dataset was used more often than its owner allows, which the contracts should prevent.",
    "budget-near": "A dataset has spent 80 % or more of its privacy budget (ε).",
    "budget-exhausted": "A dataset has spent its whole privacy budget (ε): no further task can use it unless the "
    "owner raises the budget.",
    "budget-over": "A dataset spent more privacy budget (ε) than its owner allows, which the contracts should prevent.",
    "participant-suspended": "An organisation was suspended from the consortium while it took part in an open task.",
    "acted-while-suspended": "A suspended organisation still acted on chain, which the contracts forbid: a sign of "
    "a contract or chain fault.",
    "log-mismatch": "An organisation's own record of its actions does not match what the chain shows: entries "
    "were edited, removed or inserted, or on-chain actions are missing from it.",
}


def anomaly_kind(kind: str) -> str:
    return ANOMALY_KIND.get(kind, kind.replace("-", " ").capitalize())


def anomaly_help(kind: str) -> str:
    return ANOMALY_HELP.get(kind, "")


CHECK_STATUS: dict[str, tuple[str, str]] = {
    "pass": ("Passed", "ok"),
    "fail": ("Failed", "bad"),
    "warn": ("Warning", "warn"),
    "skip": ("Not applicable yet", "idle"),
}

VERDICT: dict[str, tuple[str, str, str]] = {
    "pass": ("Verified", "ok", "Re-checked from the chain alone: every check passed."),
    "fail": ("Problems found", "bad", "Re-checked from the chain alone: at least one check failed (see below)."),
    "incomplete": ("In progress", "run", "The task is still open; nothing wrong has been found so far."),
}

CHECK_NAME: dict[str, str] = {
    "submission": "The request was valid when submitted",
    "approvals": "Every data owner approved",
    "policy-algorithm": "The algorithm is allowed for every dataset",
    "policy-requester": "The requester is allowed for every dataset",
    "policy-recipient": "The result recipient is allowed for every dataset",
    "policy-expiry": "Every dataset's policy was still valid",
    "policy-uses": "Within every dataset's allowed number of uses",
    "policy-budget": "Within every dataset's privacy budget (ε)",
    "dataset-version": "The data version used is the registered one",
    "participation": "Every participant started",
    "dropouts": "Any participant dropping out was reported by the rules",
    "receipts-present": "Every participant posted a receipt (dropped-out ones owe none)",
    "receipts-agree": "All receipts agree on the result",
    "receipt-algorithm": "Every participant ran the registered algorithm",
    "input-fingerprint": "Inputs match the registered data fingerprints",
    "deletion": "Deletion of intermediate data was attested",
    "timing": "Every step happened before the deadline",
    "outcome": "The final status follows from the recorded steps",
}

ALGORITHM_KIND: dict[str, str] = {
    "psi": "Private set intersection",
    "psi-ot": "Private set intersection (OT extension)",
    "stats": "Joint statistics",
    "private-query": "Private query",
    "fedavg": "Horizontal federated learning (FedAvg)",
    "hetero-lr": "Vertical federated logistic regression",
    "hetero_lr": "Vertical federated logistic regression",
    "hetero-lr-predict": "Vertical federated prediction",
    "hetero-sbt": "Vertical federated gradient-boosted trees (SecureBoost)",
    "hetero-sbt-predict": "Vertical federated prediction with trees",
}


def algorithm_kind(kind: str) -> str:
    label = ALGORITHM_KIND.get(kind.lower())
    return f"{label} ({kind})" if label else kind


LOG_PROBLEM: dict[str, str] = {
    "unreadable": "Unreadable line",
    "edited": "Entry edited",
    "removed": "Entry removed",
    "inserted": "Entry inserted",
    "anchor-mismatch": "Differs from the on-chain anchor",
    "anchor-beyond-end": "Entries cut off after an anchor",
    "missing-entry": "On-chain action missing from the log",
    "unknown-tx": "Log names a transaction not on chain",
    "content-mismatch": "Log's account differs from the chain",
}


def event_text(name: str, args: dict[str, Any], org_name: Any) -> str:
    """One on-chain event in plain words. `org_name(address)` names an organisation."""
    a = args

    def who(key: str) -> str:
        return str(org_name(a.get(key))) if a.get(key) else "someone"

    texts = {
        "TaskSubmitted": lambda: f"Task submitted by {who('requester')}",
        "TaskRequestHashed": lambda: f"Request hash {a.get('requestHash')} recorded (what owners approve)",
        "TaskApproved": lambda: (
            f"Approved by data owner {who('owner')}"
            + (
                f" (signed approval, sent by {who('relayer')})"
                if a.get("relayer") and str(a.get("relayer")).lower() != str(a.get("owner")).lower()
                else ""
            )
        ),
        "DatasetUsed": lambda: (
            f"Use of dataset {a.get('datasetId')} counted: use {a.get('uses')}, "
            f"ε spent so far {int(a.get('epsilonSpent', 0)) / 1_000_000:g}"
        ),
        "TaskAuthorised": lambda: "Authorised: every data owner has approved",
        "TaskStarted": lambda: f"{who('participant')} started its part of the computation",
        "TaskRefused": lambda: f"{who('participant')} refused: {refusal_reason(int(a.get('reason', 0)))}",
        "ReceiptSubmitted": lambda: f"{who('participant')} posted its receipt (result, transcript and deletion proof)",
        "ParticipantDropped": lambda: (
            f"{who('participant')} stopped answering: reported dropped out by the result recipient "
            f"{who('reportedBy')}; the others go on without it"
        ),
        "TaskCompleted": lambda: "Completed: all receipts agree on the result",
        "TaskDisputed": lambda: "Disputed: the receipts disagree",
        "TaskCancelled": lambda: f"Cancelled by {who('by')}",
        "TaskExpired": lambda: f"Marked expired (reported by {who('by')})",
        "OrganisationAdmitted": lambda: f"{a.get('name')} admitted to the consortium",
        "OrganisationSuspended": lambda: f"{who('account')} suspended",
        "OrganisationReinstated": lambda: f"{who('account')} reinstated",
        "OrganisationEndpointUpdated": lambda: f"{who('account')} changed its endpoint to {a.get('endpoint')}",
        "OrganisationKeyUpdated": lambda: f"{who('account')} changed its encryption key",
        "RoleGranted": lambda: f"Role granted to {who('account')}",
        "RoleRevoked": lambda: f"Role revoked from {who('account')}",
        "AlgorithmRegistered": lambda: f"Algorithm {a.get('kind')} {a.get('version')} registered by {who('publisher')}",
        "AlgorithmDeprecated": lambda: f"Algorithm deprecated by {who('by')}",
        "DatasetRegistered": lambda: f"Dataset {a.get('datasetId')} registered by {who('owner')}",
        "DatasetVersionPublished": lambda: (
            f"Dataset {a.get('datasetId')} published fingerprint version {a.get('version')}"
        ),
        "PolicySet": lambda: (
            f"Dataset {a.get('datasetId')} policy limits set: {a.get('maxUses')} uses, "
            f"ε budget {int(a.get('epsilonTotal', 0)) / 1_000_000:g}"
        ),
        "PolicyAlgorithmSet": lambda: (
            f"Dataset {a.get('datasetId')}: algorithm {'allowed' if a.get('allowed') else 'no longer allowed'}"
        ),
        "PolicyRequesterSet": lambda: (
            f"Dataset {a.get('datasetId')}: requester {who('requester')} "
            f"{'allowed' if a.get('allowed') else 'no longer allowed'}"
        ),
        "PolicyRecipientSet": lambda: (
            f"Dataset {a.get('datasetId')}: recipient {who('recipient')} "
            f"{'allowed' if a.get('allowed') else 'no longer allowed'}"
        ),
        "LogAnchored": lambda: f"{who('org')} anchored its local log at entry {a.get('sequence')}",
    }
    fn = texts.get(name)
    try:
        return fn() if fn is not None else name
    except (TypeError, ValueError):
        return name


EVENT_TONE: dict[str, str] = {
    "TaskRefused": "warn",
    "ParticipantDropped": "warn",
    "TaskDisputed": "bad",
    "TaskCompleted": "ok",
    "TaskExpired": "warn",
    "TaskCancelled": "idle",
    "TaskAuthorised": "run",
    "OrganisationSuspended": "bad",
}


_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{40}\b")
_UNIX_TIME = re.compile(r"(?<![\w.…])(1[5-9]\d{8}|20\d{8})(?!\w|\.\d)")
_REASON = re.compile(r"\b[A-Z]{2,}(?:_[A-Z]+)+\b")
_REASONS = {r.name: refusal_reason(int(r)) for r in RefusalReason}


def humanize(text: str, name_of: Callable[[str], str | None] | None = None) -> str:
    """A finding in plain words: chain times (unix seconds, 2017-2033) as UTC dates, refusal
    codes as sentences and, with `name_of`, member accounts by name. The raw text stays
    available (the API's `message`)."""

    def when(m: re.Match[str]) -> str:
        return dt.datetime.fromtimestamp(int(m.group(1)), dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def reason(m: re.Match[str]) -> str:
        label = _REASONS.get(m.group(0))
        return f"“{label[0].lower()}{label[1:]}”" if label else m.group(0)

    def account(m: re.Match[str]) -> str:
        name = name_of(m.group(0)) if name_of is not None else None
        return name or m.group(0)

    out = _UNIX_TIME.sub(when, text)
    out = _REASON.sub(reason, out)
    return _ADDRESS.sub(account, out) if name_of is not None else out
