"""Chain state reconstructed from the auditor's store at any chain position.

Shared by re-verification and anomaly detection: an organisation's status, a dataset's
policy (limits, allow-lists, uses and ε consumed, current version) just before a given
(block, log index), the chain time of the newest indexed block, and whether an algorithm
is built to go on without a participant that dropped out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pcn.auditor.store import (
    DatasetUse,
    DatasetVersion,
    EventRow,
    IndexState,
    OrgStatusChange,
    PolicyGrant,
    PolicyLimitsChange,
    TaskRow,
)
from pcn.chain.types import EPSILON_SCALE, OrgStatus

ZERO = "0x" + "00" * 32
Position = tuple[int, int]


def short(value: str | None, n: int = 10) -> str:
    """A hash or address shortened for messages."""
    if not value:
        return "-"
    return value[:n] + "…" if len(value) > n + 2 else value


def eps(value: int) -> str:
    """A fixed-point ε as a decimal number."""
    return f"{value / EPSILON_SCALE:g}"


def pos(row: Any) -> Position:
    """The chain position (block, log index) of an event or event-derived row."""
    return (int(row.block_number), int(row.log_index))


def chain_time(s: Session) -> tuple[int | None, int]:
    """(block, timestamp) of the newest indexed block: "now" for deadline checks."""
    state = s.get(IndexState, "main")
    if state is not None and state.indexed_timestamp is not None:
        return state.indexed_block, int(state.indexed_timestamp)
    newest = s.execute(
        select(EventRow.block_number, EventRow.block_timestamp).order_by(EventRow.block_number.desc()).limit(1)
    ).first()
    if newest is None:
        return None, 0
    return int(newest[0]), int(newest[1])


@functools.cache
def dropout_tolerant(kind: str | None) -> bool | None:
    """Whether the built-in algorithm of this registered kind goes on without a participant
    that stopped answering (its protocol is `dropout_tolerant`, as fedavg's secure
    aggregation is); None when pcn ships no such algorithm, so nobody can tell."""
    from pcn.algorithms import UnknownAlgorithm, protocol_class

    try:
        cls = protocol_class(kind or "")
    except (UnknownAlgorithm, ImportError):
        return None
    return cls.dropout_tolerant


def org_status_at(s: Session, account: str, at: Position) -> OrgStatus:
    """An organisation's status just before chain position `pos`."""
    status = OrgStatus.NONE
    rows = s.scalars(select(OrgStatusChange).where(OrgStatusChange.account == account)).all()
    for row in sorted(rows, key=pos):
        if pos(row) >= at:
            break
        status = OrgStatus(row.status)
    return status


@dataclass
class PolicyAt:
    """A dataset's policy reconstructed at one chain position, from its events."""

    dataset_id: int
    limits: PolicyLimitsChange | None
    grants: dict[tuple[str, str], bool]
    uses_before: int
    epsilon_before: int
    version: int

    def allowed(self, kind: str, subject: str) -> bool:
        return self.grants.get((kind, subject.lower()), False)


def policy_at(s: Session, dataset_id: int, at: Position) -> PolicyAt:
    """A dataset's policy just before chain position `at`."""
    grants: dict[tuple[str, str], bool] = {}
    for g in sorted(s.scalars(select(PolicyGrant).where(PolicyGrant.dataset_id == dataset_id)).all(), key=pos):
        if pos(g) < at:
            grants[(g.kind, g.subject.lower())] = g.allowed
    limits = None
    for lim in sorted(
        s.scalars(select(PolicyLimitsChange).where(PolicyLimitsChange.dataset_id == dataset_id)).all(), key=pos
    ):
        if pos(lim) < at:
            limits = lim
    uses = [u for u in s.scalars(select(DatasetUse).where(DatasetUse.dataset_id == dataset_id)).all() if pos(u) < at]
    epsilon = 0
    for u in uses:
        t = s.get(TaskRow, u.task_id)
        epsilon += t.epsilon if t is not None else 0
    versions = [
        v.version
        for v in s.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)).all()
        if pos(v) < at
    ]
    return PolicyAt(dataset_id, limits, grants, len(uses), epsilon, max(versions, default=0))
