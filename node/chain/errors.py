"""Turn contract reverts into Python exceptions with a human message.

Every custom error of every pcn contract (and the OpenZeppelin ones they can raise) is
decoded by its 4-byte selector from the deployment ABIs; MESSAGES gives each a sentence a
node operator or requester can act on. A test checks every ABI error has a message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from pcn.chain.types import ParticipantState, RefusalReason, TaskStatus


class ChainError(Exception):
    """Base class of every error the ledger client raises."""


class ChainUnavailable(ChainError):
    """The RPC endpoint cannot be reached."""


class DeploymentError(ChainError):
    """The deployment file is missing, malformed or does not match the chain."""


class TransactionFailed(ChainError):
    """A transaction was mined but reverted without decodable reason, or was dropped."""


class ContractRevert(ChainError):
    """A contract call reverted with a named (custom) error."""

    def __init__(self, name: str, args: dict[str, Any], message: str, raw: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.args_dict = args
        self.message = message
        self.raw = raw

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


def _status(v: Any) -> str:
    try:
        return TaskStatus(int(v)).name.lower()
    except ValueError:
        return str(v)


def _participant_state(v: Any) -> str:
    try:
        return ParticipantState(int(v)).name.lower()
    except ValueError:
        return str(v)


def _eps(v: Any) -> str:
    return f"{int(v) / 1_000_000:g}"


MESSAGES: dict[str, str] = {
    # Consortium
    "OrganisationAlreadyAdmitted": "organisation {account} is already admitted",
    "OrganisationNotAdmitted": "{account} is not an admitted organisation",
    "OrganisationNotActive": "{account} is not an active organisation (not admitted or suspended)",
    "OrganisationAlreadySuspended": "organisation {account} is already suspended",
    "InvalidOrganisationName": "organisation name must be 1 to 64 bytes",
    "InvalidEndpoint": "endpoint must be 1 to 256 bytes",
    "InvalidEncryptionKey": "encryption key must be a non-zero 32-byte X25519 public key",
    "ZeroAccount": "the zero address cannot be used here",
    # AlgorithmRegistry
    "ZeroCodeHash": "algorithm code hash must not be zero",
    "AlgorithmAlreadyRegistered": "algorithm {codeHash} is already registered",
    "UnknownAlgorithm": "no algorithm with code hash {codeHash} is registered",
    "AlgorithmIsDeprecated": "algorithm {codeHash} is deprecated",
    "NotAlgorithmPublisher": "{caller} did not publish algorithm {codeHash} and is not the admin",
    "InvalidAlgorithmLabel": "algorithm kind and version must be 1 to 32 bytes",
    "NotConsortiumAdmin": "{caller} is not the consortium admin",
    "AlgorithmNotApproved": "algorithm {codeHash} is registered but the consortium admin has not approved it",
    "AlgorithmAlreadyApproved": "algorithm {codeHash} is already approved",
    "AlgorithmNotDeprecated": "algorithm {codeHash} is not deprecated",
    "InvalidDropoutSilence": "the dropout silence must be 1 second to 1 day",
    # DatasetRegistry
    "UnknownDataset": "no dataset with id {datasetId}",
    "NotDatasetOwner": "{caller} does not own dataset {datasetId}",
    "InvalidFingerprint": "invalid fingerprint (zero Merkle root or schema hash, or no such version)",
    "TooManyPolicyEntries": "a policy list has {given} entries; at most {max} are allowed",
    "PolicyBelowConsumption": "policy of dataset {datasetId} cannot go below uses or ε already consumed",
    "AlgorithmNotAllowed": "dataset {datasetId}'s policy does not allow algorithm {algorithmHash}",
    "RequesterNotAllowed": "dataset {datasetId}'s policy does not allow requester {requester}",
    "RecipientNotAllowed": "dataset {datasetId}'s policy does not allow result recipient {recipient}",
    "UsesExhausted": "dataset {datasetId} has used {uses} of its {maxUses} allowed uses",
    "PolicyExpired": "dataset {datasetId}'s policy expired at {expiry}",
    "PrivacyBudgetExceeded": "dataset {datasetId}: ε spent {spent} + requested {requested} exceeds budget {total}",
    "NotTaskManager": "{caller} is not the task manager",
    "TaskManagerAlreadySet": "the task manager is already wired",
    "NotDeployer": "only the deployer may wire the task manager",
    # TaskManager
    "InvalidMinSurvivors": "min survivors {given} must be at least 2 and at most the {participants} participants",
    "NotAConsenter": "{account} owns an input of task {taskId}: it approves, it does not consent",
    "AlreadyConsented": "{participant} has already consented to task {taskId}",
    "AlgorithmNotDropoutTolerant": "algorithm {algorithmHash} cannot go on without a party: no dropouts",
    "PartyNotSilent": "{participant} showed a sign of life at {lastSeen}; it may be reported dropped only "
    "after {silence} s of silence (task {taskId})",
    "NotDropped": "{participant} was not reported dropped from task {taskId}",
    "UnknownTask": "no task with id {taskId}",
    "InvalidDatasetCount": "a task needs 1 to 8 input datasets, got {given}",
    "InvalidParticipantCount": "a task needs 1 to 16 participants, got {given}",
    "DuplicateDataset": "dataset {datasetId} is listed twice",
    "DuplicateParticipant": "participant {participant} is listed twice",
    "OwnerNotParticipant": "{owner}, owner of dataset {datasetId}, must be a participant",
    "DeadlineNotInFuture": "deadline {deadline} is not in the future",
    "InvalidEpsilon": "invalid ε",
    "InvalidTaskStatus": "task {taskId} is {status}; this action is not possible now",
    "TaskDeadlinePassed": "task {taskId} is past its deadline {deadline}",
    "TaskNotExpired": "task {taskId} is not past its deadline {deadline} yet",
    "NotAnApprover": "{account} owns none of task {taskId}'s input datasets",
    "AlreadyApproved": "{owner} has already approved task {taskId}",
    "ApprovalSignatureExpired": "the approval signature expired at {deadline}",
    "InvalidApprovalSignature": "the approval is not signed by {expectedOwner} (recovered {recovered}): "
    "wrong signer, wrong chain or altered fields",
    "NotRequester": "{caller} is not the requester of task {taskId}",
    "NotParticipant": "{account} is not a participant of task {taskId}",
    "AlreadyStarted": "{participant} has already started task {taskId}",
    "NotStarted": "{participant} has not started task {taskId}",
    "AlreadyFinished": "{participant} has already finished task {taskId}",
    "NotResultRecipient": "only task {taskId}'s result recipient may report a dropout, not {caller}",
    "CannotDrop": "{participant} cannot be reported dropped from task {taskId}: it is {state}, not a started peer",
    "TooFewRemaining": "task {taskId} would keep fewer than its min survivors: no further dropout can be reported",
    "InvalidTaskRules": (
        "task rules need ε floor ≤ ceiling (ceiling 0 = none), got floor {epsilonFloor} ceiling {epsilonCeiling}"
    ),
    "EpsilonBelowFloor": (
        "dataset {datasetId} is DP-only: a task must spend ε ≥ {floor} (fixed point), this one asks {epsilon}"
    ),
    "EpsilonAboveCeiling": (
        "dataset {datasetId} allows at most ε {ceiling} per task (fixed point), this one asks {epsilon}"
    ),
    "ParticipantNotAllowed": "dataset {datasetId}'s owner has not allowed participant {participant}",
    "RequestHashMismatch": (
        "task {taskId} is not the request that was approved (request hash {given}, the task's is {expected}):"
        " inspect it again with `pcn task status {taskId}`"
    ),
    "InvalidRefusalReason": "refusal reason {reason} is not a known reason code",
    "InvalidReceiptTimes": "receipt finishedAt {finishedAt} is before startedAt {startedAt}",
    "DatasetVersionChanged": "dataset {datasetId} changed from version {submitted} to {current} since submission",
    # AuditLog
    "SequenceNotIncreasing": "log sequence {given} is not above the last anchored {latest}",
    "ZeroHeadHash": "log head hash must not be zero",
    # OpenZeppelin
    "AccessControlUnauthorizedAccount": "{account} lacks the role {neededRole} needed for this action",
    "AccessControlBadConfirmation": "role renouncement must be confirmed by the account itself",
    "InvalidAccountNonce": "signature nonce already used or out of order for {account} (current nonce {currentNonce})",
    "ECDSAInvalidSignature": "invalid ECDSA signature",
    "ECDSAInvalidSignatureLength": "invalid signature length {length}",
    "ECDSAInvalidSignatureS": "invalid signature s value",
    "InvalidShortString": "invalid short string",
    "StringTooLong": "string too long: {str}",
}

_ROLES = {
    "0x" + "00" * 32: "admin (DEFAULT_ADMIN_ROLE)",
    "0x" + keccak(text="pcn.AUDITOR_ROLE").hex(): "auditor (AUDITOR_ROLE)",
}


def _role(v: Any) -> str:
    return _ROLES.get(str(v), str(v))


FORMATTERS: dict[str, Any] = {
    "status": _status,
    "state": _participant_state,
    "spent": _eps,
    "requested": _eps,
    "total": _eps,
    "neededRole": _role,
}

PANIC_CODES = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x32: "array index out of bounds",
    0x41: "out of memory",
}


def _type_string(inp: dict[str, Any]) -> str:
    t = inp["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_type_string(c) for c in inp["components"]) + ")" + t[5:]
    return t


def _fmt(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    return value


class ErrorDecoder:
    """Decodes revert data using the error entries of a set of ABIs."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self._by_selector: dict[bytes, tuple[str, list[dict[str, Any]]]] = {}
        for abi in abis:
            for entry in abi:
                if entry.get("type") != "error":
                    continue
                sig = f"{entry['name']}({','.join(_type_string(i) for i in entry['inputs'])})"
                self._by_selector[keccak(text=sig)[:4]] = (entry["name"], entry["inputs"])

    def error_names(self) -> set[str]:
        return {name for name, _ in self._by_selector.values()}

    def decode(self, data: str | bytes | None) -> ContractRevert | None:
        if data is None:
            return None
        if isinstance(data, str):
            if not data.startswith("0x"):
                return None
            try:
                raw = bytes.fromhex(data[2:])
            except ValueError:
                return None
        else:
            raw = bytes(data)
        if len(raw) < 4:
            return None
        selector, body = raw[:4], raw[4:]
        if selector == keccak(text="Error(string)")[:4]:
            (reason,) = abi_decode(["string"], body)
            return ContractRevert("Error", {"reason": reason}, reason, "0x" + raw.hex())
        if selector == keccak(text="Panic(uint256)")[:4]:
            (code,) = abi_decode(["uint256"], body)
            return ContractRevert("Panic", {"code": code}, PANIC_CODES.get(code, f"panic {code:#x}"), "0x" + raw.hex())
        known = self._by_selector.get(selector)
        if known is None:
            return ContractRevert("UnknownError", {}, f"reverted with unknown error 0x{raw.hex()}", "0x" + raw.hex())
        name, inputs = known
        values = abi_decode([_type_string(i) for i in inputs], body)
        args = {i["name"]: _fmt(v) for i, v in zip(inputs, values, strict=True)}
        shown = {k: FORMATTERS.get(k, lambda x: x)(v) for k, v in args.items()}
        template = MESSAGES.get(name)
        message = template.format(**shown) if template else f"{name}({', '.join(map(str, shown.values()))})"
        return ContractRevert(name, args, message, "0x" + raw.hex())


def refusal_reason_name(code: int) -> str:
    try:
        return RefusalReason(code).name
    except ValueError:
        return f"UNKNOWN_{code}"
