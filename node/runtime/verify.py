"""What a node checks before it takes part in a task (DESIGN §5), against the chain at
one pinned block, before the task's data is handed to any protocol.

Checks run cheapest first; the first failure decides the refusal reason (one code per
check). The data file is read only by the last check, to recompute its fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pcn import jsonsafe
from pcn.algorithms import BUILTIN
from pcn.algorithms.codehash import CodeHashError, algorithm_code_hash
from pcn.chain.errors import ContractRevert
from pcn.chain.ledger import Ledger
from pcn.chain.types import (
    Fingerprint,
    ParticipantState,
    RefusalReason,
    Task,
    TaskStatus,
    epsilon_from_fixed,
    epsilon_to_fixed,
)
from pcn.data.errors import DataError
from pcn.runtime.store import DatasetStore, LocalDataset, UnknownLocalDataset

FingerprintFn = Callable[[LocalDataset, bytes], Fingerprint]


class Refused(Exception):
    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason.name}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Verdict:
    task_id: int
    block: int
    reason: RefusalReason = RefusalReason.NONE
    detail: str = ""
    checks: list[tuple[str, str]] = field(default_factory=list)  # (check, outcome) in order
    my_datasets: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reason is RefusalReason.NONE

    @property
    def detail_hash(self) -> bytes:
        return hashlib.sha256(f"{self.reason.name}:{self.detail}".encode()).digest()


def params_hash(params: bytes) -> bytes:
    return hashlib.sha256(params).digest()


def verify_task(
    ledger: Ledger,
    task_id: int,
    me: str,
    store: DatasetStore,
    fingerprint: FingerprintFn,
    params: bytes | None = None,
    block: int | None = None,
    requested_epsilon: float = 0.0,
) -> Verdict:
    """Run every check; return a Verdict whose reason is NONE when the node may start.
    `requested_epsilon` is the privacy loss the parameters ask for; it must not exceed the ε
    the chain charged to every dataset's budget when it authorised the task."""
    block = ledger.w3.eth.block_number if block is None else block
    verdict = Verdict(task_id, block)
    try:
        _run_checks(ledger, task_id, me, store, fingerprint, params, block, verdict, requested_epsilon)
    except Refused as r:
        verdict.reason, verdict.detail = r.reason, r.detail
        verdict.checks.append((r.reason.name, "failed: " + r.detail))
    return verdict


def _passed(verdict: Verdict, check: str) -> None:
    verdict.checks.append((check, "ok"))


def _run_checks(
    ledger: Ledger,
    task_id: int,
    me: str,
    store: DatasetStore,
    fingerprint: FingerprintFn,
    params: bytes | None,
    block: int,
    verdict: Verdict,
    requested_epsilon: float = 0.0,
) -> None:
    R = RefusalReason
    task = ledger.task(task_id, block=block)
    now = ledger.block_timestamp(block=block)
    if task.status is TaskStatus.CANCELLED:
        raise Refused(R.TASK_CANCELLED, "the requester cancelled the task")
    if task.status is TaskStatus.EXPIRED or now > task.deadline:
        raise Refused(R.TASK_EXPIRED, f"deadline {task.deadline} passed (block time {now})")
    if task.status not in (TaskStatus.AUTHORISED, TaskStatus.RUNNING):
        raise Refused(R.TASK_NOT_AUTHORISED, f"task is {task.status.name.lower()}")
    missing = [owner for owner, approved in ledger.task_approvers(task_id, block=block).items() if not approved]
    if missing:
        raise Refused(R.TASK_NOT_AUTHORISED, f"owners {missing} have not approved")
    _passed(verdict, "task authorised and within deadline")

    state = ledger.participant_state(task_id, me, block=block)
    if state not in (ParticipantState.INVITED, ParticipantState.STARTED):
        raise Refused(R.TASK_NOT_AUTHORISED, f"this node is {state.name.lower()} in the task")
    _check_peers_active(ledger, task_id, task, block)
    _passed(verdict, "every peer admitted and active")

    kind = _check_algorithm_usable(ledger, task, block)
    if kind not in BUILTIN:
        raise Refused(R.ALGORITHM_HASH_MISMATCH, f"this node has no code for algorithm kind {kind!r}")
    try:
        running = algorithm_code_hash(kind)
    except CodeHashError as e:  # code the hash cannot pin is code this node will not run
        raise Refused(R.ALGORITHM_HASH_MISMATCH, f"the code of {kind!r} cannot be pinned: {e}") from None
    if running != task.algorithm_hash:
        raise Refused(
            R.ALGORITHM_HASH_MISMATCH,
            f"code about to run hashes to 0x{running.hex()}, registered 0x{task.algorithm_hash.hex()}",
        )
    _passed(verdict, "running code hash equals the registered hash")

    if params is not None and params_hash(params) != task.params_hash:
        raise Refused(R.INVALID_PARAMETERS, "parameters do not match the on-chain params hash")
    if epsilon_to_fixed(requested_epsilon) > task.epsilon:
        raise Refused(
            R.PRIVACY_BUDGET_EXCEEDED,
            f"parameters spend ε {requested_epsilon} but the chain charged ε {epsilon_from_fixed(task.epsilon)}",
        )

    datasets = _check_policies(ledger, task_id, task, block, now)
    _passed(verdict, "every dataset's policy allows algorithm, requester, recipient, uses, expiry and ε")
    _check_task_rules(ledger, [dataset_id for dataset_id, _ in datasets], kind, params, requested_epsilon, block)
    _passed(verdict, "every dataset's task rules (DP floor, key cap) hold for these parameters")

    for dataset_id, version in datasets:
        if ledger.owner_of(dataset_id, block=block).lower() != me.lower():
            continue
        try:
            local = store.get(dataset_id)
            salt = store.salt(str(dataset_id))
        except UnknownLocalDataset as exc:
            raise Refused(R.DATA_UNAVAILABLE, str(exc)) from None
        if not Path(local.path).is_file():
            raise Refused(R.DATA_UNAVAILABLE, f"dataset {dataset_id}'s file {local.path} is missing")
        try:
            registered = ledger.fingerprint(dataset_id, version, block=block)
        except ContractRevert as exc:
            raise Refused(R.FINGERPRINT_MISMATCH, str(exc)) from None
        try:
            actual = fingerprint(local, salt)
        except DataError as exc:  # the file no longer even parses the way it did at registration
            raise Refused(R.FINGERPRINT_MISMATCH, f"dataset {dataset_id}'s file no longer reads: {exc}") from None
        if (actual.merkle_root, actual.schema_hash, actual.row_count) != (
            registered.merkle_root,
            registered.schema_hash,
            registered.row_count,
        ):
            raise Refused(
                R.FINGERPRINT_MISMATCH,
                f"local data of dataset {dataset_id} has root 0x{actual.merkle_root.hex()}, "
                f"version {version} on chain has 0x{registered.merkle_root.hex()}",
            )
        verdict.my_datasets.append(int(dataset_id))
    _passed(verdict, "local data fingerprint equals the registered fingerprint")


def _check_peers_active(ledger: Ledger, task_id: int, task: Task, block: int | str) -> None:
    participants = ledger.task_participants(task_id, block=block)
    for account in [*participants, task.requester, task.result_recipient]:
        if not ledger.is_active(account, block=block):
            raise Refused(RefusalReason.PEER_NOT_ACTIVE, f"{account} is not an active organisation")


def _declared_key_cap(params: bytes | None) -> int | None:
    """The private query's declared `max_keys` (None when absent or unreadable)."""
    if params is None:
        return None
    try:
        doc = jsonsafe.loads(params)
    except ValueError:
        return None
    cap = doc.get("max_keys") if isinstance(doc, dict) else None
    return cap if isinstance(cap, int) and not isinstance(cap, bool) else None


def _check_task_rules(
    ledger: Ledger, ids: list[int], kind: str, params: bytes | None, requested_epsilon: float, block: int | str
) -> None:
    """The rules only the parameters show (#13.6): the chain holds the task's ε within each
    dataset's floor and ceiling, but only the parameters say whether that DP is applied, and
    how many keys a private query may look up (they reach the chain as a hash)."""
    R = RefusalReason
    for dataset_id in ids:
        rules = ledger.task_rules(dataset_id, block=block)
        if rules.epsilon_floor and epsilon_to_fixed(requested_epsilon) < rules.epsilon_floor:
            raise Refused(
                R.DP_NOT_APPLIED,
                f"dataset {dataset_id} is DP-only (ε ≥ {epsilon_from_fixed(rules.epsilon_floor)}); "
                f"the parameters apply ε {requested_epsilon}",
            )
        if rules.max_keys and kind == "private-query":
            cap = _declared_key_cap(params)
            if cap is None or cap > rules.max_keys:
                raise Refused(
                    R.KEY_CAP_EXCEEDED,
                    f"dataset {dataset_id} allows at most {rules.max_keys} keys per query; "
                    f"the parameters declare {'no cap' if cap is None else cap}",
                )


def _check_algorithm_usable(ledger: Ledger, task: Task, block: int | str) -> str:
    """The algorithm's registered kind, unless it is deprecated, revoked or not approved."""
    algo = ledger.algorithm(task.algorithm_hash, block=block)
    if algo is None or not algo.approved:  # revoked (a wrong registration) or never approved
        raise Refused(RefusalReason.ALGORITHM_NOT_APPROVED, "the consortium admin has not approved the algorithm")
    if algo.deprecated:
        raise Refused(RefusalReason.ALGORITHM_NOT_APPROVED, f"algorithm {algo.kind} is deprecated")
    return algo.kind


def _check_policies(
    ledger: Ledger, task_id: int, task: Task, block: int | str, now: int, *, limits: bool = True
) -> list[tuple[int, int]]:
    """Every input dataset's policy allows this task's algorithm, requester and recipient and,
    with `limits`, is within its expiry, uses and ε; (dataset id, pinned version) of each input."""
    R = RefusalReason
    datasets = ledger.task_datasets(task_id, block=block)
    for dataset_id, _version in datasets:
        if not ledger.is_allowed(dataset_id, algorithm=task.algorithm_hash, block=block):
            raise Refused(R.ALGORITHM_NOT_APPROVED, f"dataset {dataset_id} does not allow this algorithm")
        if not ledger.is_allowed(dataset_id, requester=task.requester, block=block):
            raise Refused(R.REQUESTER_NOT_ALLOWED, f"dataset {dataset_id} does not allow requester {task.requester}")
        if not ledger.is_allowed(dataset_id, recipient=task.result_recipient, block=block):
            raise Refused(
                R.RECIPIENT_NOT_ALLOWED,
                f"dataset {dataset_id} does not allow recipient {task.result_recipient}",
            )
        if not limits:
            continue
        ds = ledger.dataset(dataset_id, block=block)
        if now > ds.expiry:
            raise Refused(R.POLICY_EXPIRED, f"dataset {dataset_id}'s policy expired at {ds.expiry}")
        if ds.uses > ds.max_uses:
            raise Refused(R.USES_EXHAUSTED, f"dataset {dataset_id} used {ds.uses} of {ds.max_uses}")
        if ds.epsilon_spent > ds.epsilon_total:
            raise Refused(
                R.PRIVACY_BUDGET_EXCEEDED, f"dataset {dataset_id} spent ε {ds.epsilon_spent} of {ds.epsilon_total}"
            )
    return datasets


def recheck_running_task(ledger: Ledger, task_id: int) -> Refused | None:
    """What an admin or an owner can withdraw while a task runs, at the latest block: every
    participant, the requester and the recipient still active, the algorithm not deprecated,
    every dataset's policy still granting the algorithm, requester and recipient. (Uses, ε and
    the expiry were settled when the chain authorised the task and are not re-checked.) Run by the
    node during the protocol (`TaskRunner`), so a suspension, a revoked policy or a deprecation
    stops it from sending more of its shares; None when everything still holds."""
    block = ledger.w3.eth.block_number
    try:
        task = ledger.task(task_id, block=block)
        now = ledger.block_timestamp(block=block)
        _check_peers_active(ledger, task_id, task, block)
        _check_algorithm_usable(ledger, task, block)
        _check_policies(ledger, task_id, task, block, now, limits=False)
    except Refused as refused:
        return refused
    return None
