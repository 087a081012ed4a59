"""The ledger client: the one way node, CLI and auditor talk to pcn's contracts.

Typed methods for every contract call, local signing with eth-account, a nonce manager
safe for concurrent senders, receipts awaited to a confirmation depth, and every custom
error turned into a ContractRevert with a readable message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError
from web3.types import BlockIdentifier, TxParams

from pcn import paths
from pcn.chain.binding import request_hash, task_binding
from pcn.chain.deployment import Deployment
from pcn.chain.errors import ContractRevert, DeploymentError, ErrorDecoder, TransactionFailed
from pcn.chain.events import ChainEvent, EventReader, FileCursorStore, LogDecoder
from pcn.chain.nonce import NonceManager
from pcn.chain.rpc import connect
from pcn.chain.types import (
    Algorithm,
    Anchor,
    Dataset,
    Fingerprint,
    Organisation,
    OrgStatus,
    ParticipantState,
    PolicyGrants,
    PolicyLimits,
    Receipt,
    RefusalReason,
    Task,
    TaskRequest,
    TaskRules,
    TaskStatus,
)

GAS_MARGIN = 1.25
# Calls whose cost depends on what others do concurrently: the approval that happens to be
# last also authorises the task (consuming every dataset's quota and ε), the receipt that is
# last also finalises it. An estimate taken while others' transactions were pending is too
# low for that path, so these get a limit that covers the worst case (unused gas is refunded).
GAS_FLOOR: dict[tuple[str, str], int] = {
    ("TaskManager", "approve"): 800_000,
    ("TaskManager", "approveBySig"): 800_000,
    ("TaskManager", "submitReceipt"): 800_000,
    ("TaskManager", "refuse"): 400_000,
    ("TaskManager", "start"): 400_000,
    ("TaskManager", "reportDropout"): 400_000,
    ("TaskManager", "consent"): 800_000,  # the last consent may authorise, like approve
}


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    events: list[ChainEvent] = field(default_factory=list)

    def event(self, name: str) -> ChainEvent:
        for ev in self.events:
            if ev.name == name:
                return ev
        raise KeyError(f"transaction {self.tx_hash} emitted no {name} event")


@dataclass(frozen=True)
class SignedApproval:
    task_id: int
    request_hash: bytes
    owner: str
    nonce: int
    deadline: int
    signature: bytes


def _b32(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = bytes.fromhex(value.removeprefix("0x"))
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return value


class Ledger:
    """A connection to one pcn deployment, optionally with a signing account."""

    def __init__(
        self,
        deployment: Deployment,
        rpc_url: str | None = None,
        account: LocalAccount | None = None,
        confirmations: int = 1,
        receipt_timeout: float = 120.0,
        nonce_dir: Path | None = None,
        w3: Web3 | None = None,
    ) -> None:
        self.deployment = deployment
        self.rpc_url = rpc_url or deployment.rpc_url
        self.w3 = w3 or connect(self.rpc_url)
        self.account = account
        self.confirmations = max(1, confirmations)
        self.receipt_timeout = receipt_timeout
        self._nonce_dir = nonce_dir or paths.run_dir() / "nonces"
        self.contracts: dict[str, Contract] = {
            name: self.w3.eth.contract(address=to_checksum_address(c.address), abi=c.abi)
            for name, c in deployment.contracts.items()
        }
        self.errors = ErrorDecoder(c.abi for c in deployment.contracts.values())
        self.logs = LogDecoder({n: (c.address, c.abi) for n, c in deployment.contracts.items()})
        self._nonces: NonceManager | None = None

    # ------------------------------------------------------------------ plumbing

    def with_account(self, account: LocalAccount | str) -> Ledger:
        """The same connection, signing as another account (key or LocalAccount)."""
        acct = Account.from_key(account) if isinstance(account, str) else account
        return Ledger(
            self.deployment,
            self.rpc_url,
            acct,
            self.confirmations,
            self.receipt_timeout,
            self._nonce_dir,
            self.w3,
        )

    @property
    def signer(self) -> LocalAccount:
        """The account this ledger signs with; TransactionFailed if it has none."""
        if self.account is None:
            raise TransactionFailed("this ledger has no signing account")
        return self.account

    @property
    def address(self) -> ChecksumAddress:
        return self.signer.address

    @property
    def chain_id(self) -> int:
        return self.deployment.chain_id

    def check_connection(self) -> None:
        """Raise ChainUnavailable / DeploymentError unless the RPC serves this deployment."""
        chain_id = self.w3.eth.chain_id
        if chain_id != self.deployment.chain_id:
            raise DeploymentError(
                f"{self.rpc_url} serves chain id {chain_id}, the deployment is for {self.deployment.chain_id}"
            )
        code = self.w3.eth.get_code(self.contracts["TaskManager"].address)
        if len(code) == 0:
            raise DeploymentError(
                f"no TaskManager code at {self.contracts['TaskManager'].address}: "
                "the chain was reset; run `pcn deploy` again"
            )

    def head_block(self) -> int:
        """The number of the latest block."""
        return int(self.w3.eth.block_number)

    def block_timestamp(self, *, block: int | str = "latest") -> int:
        return int(self.w3.eth.get_block(cast(BlockIdentifier, block))["timestamp"])

    def chain_now(self) -> int:
        """The timestamp a transaction sent now is mined under (the pending block's). The latest
        block's can lag it by minutes on a chain that mines on demand (a devnet): a deadline
        computed from it passes gas estimation, which runs on the latest block, and then
        reverts when mined."""
        return self.block_timestamp(block="pending")

    def _revert(self, exc: Exception) -> Exception:
        data = getattr(exc, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        decoded = self.errors.decode(data)
        if decoded is not None:
            return decoded
        message = getattr(exc, "message", None) or str(exc)
        return ContractRevert("Reverted", {}, message)

    def call(self, contract: str, fn: str, *args: Any, block: int | str = "latest") -> Any:
        """A read-only call of any contract function at `block`; reverts become ContractRevert.
        The typed readers below are the way to read pcn state; this serves the rest."""
        try:
            return getattr(self.contracts[contract].functions, fn)(*args).call(block_identifier=block)
        except ContractLogicError as exc:
            raise self._revert(exc) from None

    def transact(self, contract: str, fn: str, *args: Any) -> TxResult:
        """Sign and send a transaction, wait for its receipt to the confirmation depth."""
        sender = self.address
        bound = getattr(self.contracts[contract].functions, fn)(*args)
        base = {"from": sender, "chainId": self.chain_id}
        try:
            gas = bound.estimate_gas(base)
        except ContractLogicError as exc:  # reverts are found here, before a nonce is used
            raise self._revert(exc) from None
        if self._nonces is None:
            self._nonces = NonceManager(self.chain_id, sender, self._pending_count, self._nonce_dir)
        for attempt in range(3):
            with self._nonces.reserve() as nonce:
                limit = max(int(gas * GAS_MARGIN), GAS_FLOOR.get((contract, fn), 0))
                tx = bound.build_transaction({**base, "nonce": nonce, "gas": limit, **self._fees()})
                signed = self.signer.sign_transaction(tx)
                try:
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except Web3RPCError as exc:
                    # Someone outside this lock used the same key: count again and retry.
                    if "nonce" in str(exc).lower() and attempt < 2:
                        continue
                    raise TransactionFailed(f"the node rejected the transaction: {exc}") from exc
            return self._await(tx_hash, tx)
        raise TransactionFailed("could not find a free nonce after 3 attempts")

    def _fees(self) -> dict[str, int]:
        return eip1559_fees(self.w3)

    def _pending_count(self) -> int:
        return int(self.w3.eth.get_transaction_count(self.address, "pending"))

    def _await(self, tx_hash: HexBytes, tx: TxParams) -> TxResult:
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout, poll_latency=0.05)
        except TimeExhausted as exc:
            raise TransactionFailed(f"transaction 0x{tx_hash.hex()} not mined in {self.receipt_timeout:.0f}s") from exc
        if receipt["status"] != 1:
            # Another transaction changed the state between estimate and inclusion: replay
            # the call on the block before to name the error.
            try:
                self.w3.eth.call({"from": tx["from"], "to": tx["to"], "data": tx["data"]}, receipt["blockNumber"] - 1)
            except ContractLogicError as exc:
                raise self._revert(exc) from None
            raise TransactionFailed(f"transaction 0x{tx_hash.hex()} reverted")
        target = receipt["blockNumber"] + self.confirmations - 1
        deadline = time.monotonic() + self.receipt_timeout
        while self.w3.eth.block_number < target:
            if time.monotonic() > deadline:
                raise TransactionFailed(f"transaction 0x{tx_hash.hex()} not confirmed {self.confirmations} deep")
            time.sleep(0.2)
        return TxResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=self.logs.decode_all(receipt["logs"]),
        )

    def event_reader(
        self,
        cursor_file: Path,
        confirmations: int = 0,
        start_block: int | None = None,
        batch_size: int = 2000,
    ) -> EventReader:
        """A resumable reader of every pcn event, starting at the deployment block."""
        start = self.deployment.deploy_block if start_block is None else start_block
        return EventReader(self.w3, self.logs, FileCursorStore(cursor_file), start, confirmations, batch_size)

    # ------------------------------------------------------------------ consortium

    def admit(self, account: str, name: str, encryption_key: bytes | str, endpoint: str) -> TxResult:
        return self.transact("Consortium", "admit", to_checksum_address(account), name, _b32(encryption_key), endpoint)

    def suspend(self, account: str) -> TxResult:
        return self.transact("Consortium", "suspend", to_checksum_address(account))

    def reinstate(self, account: str) -> TxResult:
        return self.transact("Consortium", "reinstate", to_checksum_address(account))

    def update_endpoint(self, endpoint: str) -> TxResult:
        return self.transact("Consortium", "updateEndpoint", endpoint)

    def update_encryption_key(self, key: bytes | str) -> TxResult:
        return self.transact("Consortium", "updateEncryptionKey", _b32(key))

    def grant_auditor(self, account: str) -> TxResult:
        role = self.call("Consortium", "AUDITOR_ROLE")
        return self.transact("Consortium", "grantRole", role, to_checksum_address(account))

    def is_auditor(self, account: str, *, block: int | str = "latest") -> bool:
        role = self.call("Consortium", "AUDITOR_ROLE")
        return bool(self.call("Consortium", "hasRole", role, to_checksum_address(account), block=block))

    def is_admin(self, account: str, *, block: int | str = "latest") -> bool:
        role = self.call("Consortium", "DEFAULT_ADMIN_ROLE")
        return bool(self.call("Consortium", "hasRole", role, to_checksum_address(account), block=block))

    def organisation(self, account: str, *, block: int | str = "latest") -> Organisation:
        r = self.call("Consortium", "organisation", to_checksum_address(account), block=block)
        return Organisation(to_checksum_address(account), r[0], bytes(r[1]), r[2], OrgStatus(r[3]), r[4], r[5])

    def organisations(self, *, block: int | str = "latest") -> list[Organisation]:
        count = self.call("Consortium", "organisationCount", block=block)
        return [
            self.organisation(self.call("Consortium", "organisationAt", i, block=block), block=block)
            for i in range(count)
        ]

    def is_active(self, account: str, *, block: int | str = "latest") -> bool:
        return bool(self.call("Consortium", "isActive", to_checksum_address(account), block=block))

    # ------------------------------------------------------------------ algorithms

    def register_algorithm(
        self, code_hash: bytes | str, kind: str, version: str, description_hash: bytes | str
    ) -> TxResult:
        return self.transact("AlgorithmRegistry", "register", _b32(code_hash), kind, version, _b32(description_hash))

    def deprecate_algorithm(self, code_hash: bytes | str) -> TxResult:
        return self.transact("AlgorithmRegistry", "deprecate", _b32(code_hash))

    def approve_algorithm(self, code_hash: bytes | str, dropout_tolerant: bool = False) -> TxResult:
        """As the consortium admin: make a registered algorithm usable."""
        return self.transact("AlgorithmRegistry", "approve", _b32(code_hash), dropout_tolerant)

    def revoke_algorithm(self, code_hash: bytes | str) -> TxResult:
        """As the consortium admin: remove a wrong registration (the hash can be registered again)."""
        return self.transact("AlgorithmRegistry", "revoke", _b32(code_hash))

    def undeprecate_algorithm(self, code_hash: bytes | str) -> TxResult:
        return self.transact("AlgorithmRegistry", "undeprecate", _b32(code_hash))

    def algorithm(self, code_hash: bytes | str, *, block: int | str = "latest") -> Algorithm | None:
        """The registration of `code_hash`; None if it was never registered or was revoked."""
        h = _b32(code_hash)
        r = self.call("AlgorithmRegistry", "algorithm", h, block=block)
        if int(r[0], 16) == 0:
            return None
        return Algorithm(h, to_checksum_address(r[0]), r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7])

    def algorithms(self, *, block: int | str = "latest") -> list[Algorithm]:
        count = self.call("AlgorithmRegistry", "algorithmCount", block=block)
        out = []
        for i in range(count):
            algo = self.algorithm(self.call("AlgorithmRegistry", "algorithmAt", i, block=block), block=block)
            if algo is not None:
                out.append(algo)
        return out

    # ------------------------------------------------------------------ datasets

    def register_dataset(
        self, fingerprint: Fingerprint, limits: PolicyLimits, grants: PolicyGrants
    ) -> tuple[int, TxResult]:
        grants = PolicyGrants(
            [_b32(a) for a in grants.algorithms],
            [to_checksum_address(a) for a in grants.requesters],
            [to_checksum_address(a) for a in grants.recipients],
        )
        res = self.transact("DatasetRegistry", "register", fingerprint.as_tuple(), limits.as_tuple(), grants.as_tuple())
        return int(res.event("DatasetRegistered").args["datasetId"]), res

    def publish_version(self, dataset_id: int, fingerprint: Fingerprint) -> tuple[int, TxResult]:
        res = self.transact("DatasetRegistry", "publishVersion", dataset_id, fingerprint.as_tuple())
        return int(res.event("DatasetVersionPublished").args["version"]), res

    def set_policy_limits(self, dataset_id: int, limits: PolicyLimits) -> TxResult:
        return self.transact("DatasetRegistry", "setPolicyLimits", dataset_id, limits.as_tuple())

    def set_algorithm_allowed(self, dataset_id: int, code_hash: bytes | str, allowed: bool = True) -> TxResult:
        return self.transact("DatasetRegistry", "setAlgorithmAllowed", dataset_id, _b32(code_hash), allowed)

    def set_requester_allowed(self, dataset_id: int, requester: str, allowed: bool = True) -> TxResult:
        return self.transact(
            "DatasetRegistry", "setRequesterAllowed", dataset_id, to_checksum_address(requester), allowed
        )

    def set_recipient_allowed(self, dataset_id: int, recipient: str, allowed: bool = True) -> TxResult:
        return self.transact(
            "DatasetRegistry", "setRecipientAllowed", dataset_id, to_checksum_address(recipient), allowed
        )

    def set_participant_allowed(self, dataset_id: int, participant: str, allowed: bool = True) -> TxResult:
        return self.transact(
            "DatasetRegistry", "setParticipantAllowed", dataset_id, to_checksum_address(participant), allowed
        )

    def set_task_rules(self, dataset_id: int, rules: TaskRules) -> TxResult:
        return self.transact("DatasetRegistry", "setTaskRules", dataset_id, rules.as_tuple())

    def task_rules(self, dataset_id: int, *, block: int | str = "latest") -> TaskRules:
        r = self.call("DatasetRegistry", "taskRules", dataset_id, block=block)
        return TaskRules(int(r[0]), int(r[1]), int(r[2]), bool(r[3]))

    def dataset(self, dataset_id: int, *, block: int | str = "latest") -> Dataset:
        r = self.call("DatasetRegistry", "dataset", dataset_id, block=block)
        return Dataset(dataset_id, to_checksum_address(r[0]), *r[1:])

    def owner_of(self, dataset_id: int, *, block: int | str = "latest") -> str:
        return to_checksum_address(self.call("DatasetRegistry", "ownerOf", dataset_id, block=block))

    def dataset_count(self, *, block: int | str = "latest") -> int:
        return int(self.call("DatasetRegistry", "datasetCount", block=block))

    def fingerprint(self, dataset_id: int, version: int | None = None, *, block: int | str = "latest") -> Fingerprint:
        """The fingerprint of `version` (by default the current one at `block`)."""
        if version is None:
            version = self.dataset(dataset_id, block=block).version
        r = self.call("DatasetRegistry", "fingerprint", dataset_id, version, block=block)
        return Fingerprint(bytes(r[0]), bytes(r[1]), bytes(r[2]), r[3], r[4])

    def is_allowed(
        self,
        dataset_id: int,
        *,
        algorithm: bytes | str | None = None,
        requester: str | None = None,
        recipient: str | None = None,
        block: int | str = "latest",
    ) -> bool:
        """Whether dataset `dataset_id`'s policy grants the one algorithm, requester or recipient named."""
        if algorithm is not None:
            return bool(self.call("DatasetRegistry", "algorithmAllowed", dataset_id, _b32(algorithm), block=block))
        if requester is not None:
            return bool(
                self.call(
                    "DatasetRegistry", "requesterAllowed", dataset_id, to_checksum_address(requester), block=block
                )
            )
        if recipient is not None:
            return bool(
                self.call(
                    "DatasetRegistry", "recipientAllowed", dataset_id, to_checksum_address(recipient), block=block
                )
            )
        raise ValueError("name one of algorithm, requester, recipient")

    # ------------------------------------------------------------------ tasks

    def submit_task(self, request: TaskRequest) -> tuple[int, TxResult]:
        req = TaskRequest(
            _b32(request.algorithm_hash),
            list(request.dataset_ids),
            [to_checksum_address(p) for p in request.participants],
            _b32(request.params_hash),
            to_checksum_address(request.result_recipient),
            request.deadline,
            request.epsilon,
            request.min_survivors,
        )
        res = self.transact("TaskManager", "submit", req.as_tuple())
        return int(res.event("TaskSubmitted").args["taskId"]), res

    def approve(self, task_id: int, request_hash: bytes | str) -> TxResult:
        """Approve task `task_id` as a dataset owner; `request_hash` is the hash of the request the
        owner inspected (`computed_request_hash`): the chain reverts RequestHashMismatch when
        task `task_id` is another request."""
        return self.transact("TaskManager", "approve", task_id, _b32(request_hash))

    def approval_nonce(self, owner: str, *, block: int | str = "latest") -> int:
        return int(self.call("TaskManager", "nonces", to_checksum_address(owner), block=block))

    def sign_approval(
        self, task_id: int, request_hash: bytes | str, deadline: int, nonce: int | None = None
    ) -> SignedApproval:
        """Sign an EIP-712 approval of task `task_id` with request hash `request_hash` as this
        ledger's account (no transaction)."""
        request_hash = _b32(request_hash)
        owner = self.address
        if nonce is None:
            nonce = self.approval_nonce(owner)
        signable = encode_typed_data(
            domain_data={
                "name": "pcn TaskManager",
                "version": "1",
                "chainId": self.chain_id,
                "verifyingContract": self.contracts["TaskManager"].address,
            },
            message_types={
                "Approval": [
                    {"name": "taskId", "type": "uint256"},
                    {"name": "requestHash", "type": "bytes32"},
                    {"name": "owner", "type": "address"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ]
            },
            message_data={
                "taskId": task_id,
                "requestHash": request_hash,
                "owner": owner,
                "nonce": nonce,
                "deadline": deadline,
            },
        )
        signed = self.signer.sign_message(signable)
        return SignedApproval(task_id, request_hash, owner, nonce, deadline, bytes(signed.signature))

    def approve_by_sig(self, approval: SignedApproval) -> TxResult:
        """Relay another owner's signed approval (any account may send it)."""
        return self.transact(
            "TaskManager",
            "approveBySig",
            approval.task_id,
            approval.request_hash,
            to_checksum_address(approval.owner),
            approval.nonce,
            approval.deadline,
            approval.signature,
        )

    def cancel(self, task_id: int) -> TxResult:
        return self.transact("TaskManager", "cancel", task_id)

    def expire(self, task_id: int) -> TxResult:
        return self.transact("TaskManager", "expire", task_id)

    def start(self, task_id: int) -> TxResult:
        return self.transact("TaskManager", "start", task_id)

    def refuse(self, task_id: int, reason: RefusalReason | int, detail_hash: bytes | str) -> TxResult:
        return self.transact("TaskManager", "refuse", task_id, int(reason), _b32(detail_hash))

    def report_dropout(self, task_id: int, participant: str) -> TxResult:
        """As the task's result recipient: `participant` stopped answering mid-protocol."""
        return self.transact("TaskManager", "reportDropout", task_id, to_checksum_address(participant))

    def consent(self, task_id: int) -> TxResult:
        """As a participant owning none of the task's datasets: agree to take part."""
        return self.transact("TaskManager", "consent", task_id)

    def task_consents(self, task_id: int, *, block: int | str = "latest") -> dict[str, bool]:
        parties, given = self.call("TaskManager", "taskConsents", task_id, block=block)
        return {to_checksum_address(p): bool(g) for p, g in zip(parties, given, strict=True)}

    def heartbeat(self, task_id: int) -> TxResult:
        return self.transact("TaskManager", "heartbeat", task_id)

    def contest_dropout(self, task_id: int) -> TxResult:
        """As a participant reported dropped: object; the running task becomes Disputed."""
        return self.transact("TaskManager", "contestDropout", task_id)

    def min_survivors(self, task_id: int, *, block: int | str = "latest") -> int:
        return int(self.call("TaskManager", "minSurvivors", task_id, block=block))

    def last_seen(self, task_id: int, participant: str, *, block: int | str = "latest") -> int:
        return int(self.call("TaskManager", "lastSeen", task_id, to_checksum_address(participant), block=block))

    def dropout_silence(self, *, block: int | str = "latest") -> int:
        return int(self.call("Consortium", "dropoutSilence", block=block))

    def set_dropout_silence(self, seconds: int) -> TxResult:
        return self.transact("Consortium", "setDropoutSilence", seconds)

    def dropped_count(self, task_id: int, *, block: int | str = "latest") -> int:
        return int(self.call("TaskManager", "droppedCount", task_id, block=block))

    def submit_receipt(self, task_id: int, receipt: Receipt) -> TxResult:
        r = Receipt(
            _b32(receipt.result_hash),
            _b32(receipt.transcript_hash),
            _b32(receipt.input_fingerprint),
            _b32(receipt.algorithm_hash),
            _b32(receipt.deletion_hash),
            receipt.started_at,
            receipt.finished_at,
        )
        return self.transact("TaskManager", "submitReceipt", task_id, r.as_tuple())

    def task(self, task_id: int, *, block: int | str = "latest") -> Task:
        r = self.call("TaskManager", "task", task_id, block=block)
        return Task(
            task_id,
            to_checksum_address(r[0]),
            TaskStatus(r[1]),
            r[2],
            r[3],
            r[4],
            r[5],
            RefusalReason(r[6]),
            to_checksum_address(r[7]),
            r[8],
            r[9],
            r[10],
            r[11],
            bytes(r[12]),
            bytes(r[13]),
            bytes(r[14]),
        )

    def task_count(self, *, block: int | str = "latest") -> int:
        return int(self.call("TaskManager", "taskCount", block=block))

    def task_datasets(self, task_id: int, *, block: int | str = "latest") -> list[tuple[int, int]]:
        """(dataset id, version pinned at submission) of each input."""
        ids, versions = self.call("TaskManager", "taskDatasets", task_id, block=block)
        return list(zip(ids, versions, strict=True))

    def task_participants(self, task_id: int, *, block: int | str = "latest") -> list[str]:
        return [to_checksum_address(a) for a in self.call("TaskManager", "taskParticipants", task_id, block=block)]

    def request_hash(self, task_id: int, *, block: int | str = "latest") -> bytes:
        """The request hash the TaskManager stored at submission (what approvals name)."""
        return bytes(self.call("TaskManager", "requestHash", task_id, block=block))

    def computed_request_hash(self, task_id: int, *, block: int | str = "latest") -> bytes:
        """The request hash recomputed here from the task's fields as read from the chain: an
        owner approving with it approves exactly the request it read."""
        task = self.task(task_id, block=block)
        datasets = self.task_datasets(task_id, block=block)
        roots = [self.fingerprint(d, v, block=block).merkle_root for d, v in datasets]
        participants = self.task_participants(task_id, block=block)
        tm = self.deployment.contracts["TaskManager"].address
        return request_hash(
            self.chain_id, tm, task, datasets, roots, participants, self.min_survivors(task_id, block=block)
        )

    def task_binding(self, task_id: int, *, block: int | str = "latest") -> bytes:
        """The public 32-byte binding of task `task_id` to this chain, this TaskManager and its
        whole request (`pcn.chain.binding`): every per-task secret and protocol domain derives from it.
        Its request input is the hash the TaskManager stored: one source of truth."""
        tm = self.deployment.contracts["TaskManager"].address
        return task_binding(self.chain_id, tm, task_id, self.request_hash(task_id, block=block))

    def task_approvers(self, task_id: int, *, block: int | str = "latest") -> dict[str, bool]:
        """Each input owner (in the task's order) and whether it has approved."""
        owners, approved = self.call("TaskManager", "taskApprovers", task_id, block=block)
        return {to_checksum_address(o): bool(a) for o, a in zip(owners, approved, strict=True)}

    def participant_state(self, task_id: int, participant: str, *, block: int | str = "latest") -> ParticipantState:
        state = self.call("TaskManager", "participantState", task_id, to_checksum_address(participant), block=block)
        return ParticipantState(state)

    def receipt(self, task_id: int, participant: str, *, block: int | str = "latest") -> Receipt:
        result, transcript, inputs, algorithm, deletion, started_at, finished_at = self.call(
            "TaskManager", "receipt", task_id, to_checksum_address(participant), block=block
        )
        return Receipt(
            bytes(result), bytes(transcript), bytes(inputs), bytes(algorithm), bytes(deletion), started_at, finished_at
        )

    def receipt_tx(self, task_id: int, participant: str) -> str | None:
        """The hash of the transaction that recorded `participant`'s receipt of the task (None
        if there is none): a node that died right after submitting finds its own receipt."""
        logs = self.contracts["TaskManager"].events.ReceiptSubmitted.get_logs(
            from_block=self.deployment.deploy_block,
            argument_filters={"taskId": task_id, "participant": to_checksum_address(participant)},
        )
        return "0x" + bytes(logs[-1]["transactionHash"]).hex() if logs else None

    def refusal_tx(self, task_id: int, participant: str) -> str | None:
        """The hash of the transaction that recorded `participant`'s refusal of the task (None if
        there is none): a node that died right after refusing finds its own refusal."""
        logs = self.contracts["TaskManager"].events.TaskRefused.get_logs(
            from_block=self.deployment.deploy_block,
            argument_filters={"taskId": task_id, "participant": to_checksum_address(participant)},
        )
        return "0x" + bytes(logs[-1]["transactionHash"]).hex() if logs else None

    # ------------------------------------------------------------------ audit anchors

    def anchor_log(self, sequence: int, head_hash: bytes | str) -> TxResult:
        return self.transact("AuditLog", "anchor", sequence, _b32(head_hash))

    def latest_anchor(self, org: str, *, block: int | str = "latest") -> Anchor | None:
        anchor, count = self.call("AuditLog", "latest", to_checksum_address(org), block=block)
        if count == 0:
            return None
        return Anchor(to_checksum_address(org), anchor[0], anchor[1], bytes(anchor[2]), count)


def eip1559_fees(w3: Web3) -> dict[str, int]:
    """EIP-1559 fees: twice the current base fee plus the node's suggested tip."""
    tip = int(w3.eth.max_priority_fee)
    base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
    return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base + tip}


def addresses_of(items: Sequence[LocalAccount]) -> list[str]:
    return [a.address for a in items]
