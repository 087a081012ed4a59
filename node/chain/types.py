"""Python mirrors of the on-chain types (contracts/src/PcnTypes.sol and the structs).

The enum values are part of the on-chain format; tests check they match the Solidity source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

EPSILON_SCALE = 1_000_000  # ε is fixed point with 6 decimals on chain
MAX_PARTICIPANTS = 16
MAX_DATASETS_PER_TASK = 8
MAX_POLICY_ENTRIES = 32
ZERO_HASH = b"\x00" * 32


class RefusalReason(IntEnum):
    """Why a node refused a task; one code per check of DESIGN §5."""

    NONE = 0
    TASK_NOT_AUTHORISED = 1
    TASK_EXPIRED = 2
    TASK_CANCELLED = 3
    FINGERPRINT_MISMATCH = 4
    ALGORITHM_HASH_MISMATCH = 5
    ALGORITHM_NOT_APPROVED = 6
    REQUESTER_NOT_ALLOWED = 7
    RECIPIENT_NOT_ALLOWED = 8
    USES_EXHAUSTED = 9
    POLICY_EXPIRED = 10
    PRIVACY_BUDGET_EXCEEDED = 11
    PEER_NOT_ACTIVE = 12
    BAD_PEER_SIGNATURE = 13
    DATA_UNAVAILABLE = 14
    INVALID_PARAMETERS = 15
    PEER_UNREACHABLE = 16
    PROTOCOL_FAILURE = 17
    DP_NOT_APPLIED = 18  # a DP-only dataset, parameters that do not apply its ε floor (#13.6)
    KEY_CAP_EXCEEDED = 19  # a private query declaring more keys than a dataset allows (#13.6)


class OrgStatus(IntEnum):
    NONE = 0
    ACTIVE = 1
    SUSPENDED = 2


class TaskStatus(IntEnum):
    NONE = 0
    PENDING = 1
    AUTHORISED = 2
    RUNNING = 3
    COMPLETED = 4
    DISPUTED = 5
    REFUSED = 6
    CANCELLED = 7
    EXPIRED = 8

    @property
    def is_final(self) -> bool:
        return self in (
            TaskStatus.COMPLETED,
            TaskStatus.DISPUTED,
            TaskStatus.REFUSED,
            TaskStatus.CANCELLED,
            TaskStatus.EXPIRED,
        )


class ParticipantState(IntEnum):
    NONE = 0
    INVITED = 1
    STARTED = 2
    REFUSED = 3
    RECEIPTED = 4
    DROPPED = 5  # reported by the result recipient after it stopped answering (reportDropout)


def epsilon_to_fixed(epsilon: float) -> int:
    """ε as the chain stores it (6 decimals), rounding to the nearest micro-ε."""
    if epsilon < 0:
        raise ValueError("epsilon must not be negative")
    return round(epsilon * EPSILON_SCALE)


def epsilon_from_fixed(value: int) -> float:
    return value / EPSILON_SCALE


@dataclass(frozen=True)
class Organisation:
    account: str
    name: str
    encryption_key: bytes
    endpoint: str
    status: OrgStatus
    admitted_at: int
    status_changed_at: int


@dataclass(frozen=True)
class Algorithm:
    code_hash: bytes
    publisher: str
    kind: str
    version: str
    description_hash: bytes
    registered_at: int
    deprecated: bool
    approved: bool = False  # by the consortium admin: unusable until then
    dropout_tolerant: bool = False  # set by the admin at approval; reportDropout needs it

    @property
    def usable(self) -> bool:
        return self.approved and not self.deprecated


@dataclass(frozen=True)
class Fingerprint:
    merkle_root: bytes
    schema_hash: bytes
    metadata_hash: bytes
    row_count: int
    registered_at: int = 0

    def as_tuple(self) -> tuple:
        return (self.merkle_root, self.schema_hash, self.metadata_hash, self.row_count, self.registered_at)


@dataclass(frozen=True)
class PolicyLimits:
    max_uses: int
    expiry: int
    epsilon_total: int  # fixed point, see epsilon_to_fixed

    def as_tuple(self) -> tuple:
        return (self.max_uses, self.expiry, self.epsilon_total)


@dataclass(frozen=True)
class PolicyGrants:
    algorithms: list[bytes] = field(default_factory=list)
    requesters: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)

    def as_tuple(self) -> tuple:
        return (list(self.algorithms), list(self.requesters), list(self.recipients))


@dataclass(frozen=True)
class TaskRules:
    """What every task over a dataset must satisfy (DatasetRegistry.TaskRules); 0 = no rule."""

    epsilon_floor: int = 0  # fixed point; > 0 makes the dataset DP-only
    epsilon_ceiling: int = 0  # fixed point
    max_keys: int = 0  # keys per private query
    participants_listed: bool = False  # only participants named by setParticipantAllowed

    def as_tuple(self) -> tuple:
        return (self.epsilon_floor, self.epsilon_ceiling, self.max_keys, self.participants_listed)


@dataclass(frozen=True)
class Dataset:
    dataset_id: int
    owner: str
    version: int
    max_uses: int
    uses: int
    expiry: int
    epsilon_total: int
    epsilon_spent: int


@dataclass(frozen=True)
class TaskRequest:
    algorithm_hash: bytes
    dataset_ids: list[int]
    participants: list[str]
    params_hash: bytes
    result_recipient: str
    deadline: int
    epsilon: int = 0  # fixed point
    # fewest participants that must receipt (2..participants); None: every participant
    min_survivors: int | None = None

    def survivors(self) -> int:
        return len(self.participants) if self.min_survivors is None else self.min_survivors

    def as_tuple(self) -> tuple:
        return (
            self.algorithm_hash,
            list(self.dataset_ids),
            list(self.participants),
            self.params_hash,
            self.result_recipient,
            self.deadline,
            self.epsilon,
            self.survivors(),
        )


@dataclass(frozen=True)
class Task:
    task_id: int
    requester: str
    status: TaskStatus
    required_approvals: int
    approvals: int
    started_count: int
    receipt_count: int
    refusal_reason: RefusalReason
    result_recipient: str
    deadline: int
    epsilon: int
    created_at: int
    authorised_at: int
    algorithm_hash: bytes
    params_hash: bytes
    result_hash: bytes


@dataclass(frozen=True)
class Receipt:
    result_hash: bytes
    transcript_hash: bytes
    input_fingerprint: bytes
    algorithm_hash: bytes
    deletion_hash: bytes
    started_at: int
    finished_at: int

    def as_tuple(self) -> tuple:
        return (
            self.result_hash,
            self.transcript_hash,
            self.input_fingerprint,
            self.algorithm_hash,
            self.deletion_hash,
            self.started_at,
            self.finished_at,
        )


@dataclass(frozen=True)
class Anchor:
    org: str
    sequence: int
    anchored_at: int
    head_hash: bytes
    count: int
