"""What names one task in one deployment: the task binding every per-task secret and every
protocol domain is derived from.

Task ids are a counter of one TaskManager: they restart at 1 after a redeployment or a devnet
reset with the same chain id, so a secret derived from (chain id, task id) alone repeats
across runs — the same additive shares, DP noise, masks and PSI blinding for two different
computations, whose differences then leak the inputs. The binding is

    request_hash = keccak256(abi.encode(chainId, TaskManager, taskId, requester, algorithmHash)
                          | abi.encode(datasetIds, datasetVersions, merkleRoots, participants)
                          | abi.encode(paramsHash, resultRecipient, deadline, epsilon, createdAt))
    binding      = SHA-256("pcn/task-binding/v1" | u256 chainId | TaskManager address (20 bytes)
                           | u256 taskId | request_hash)

The request hash is computed once by the TaskManager at submission (`TaskManager.requestHash`,
#13.6): owners' approvals name it, and the node takes the binding's input from the chain, so
the two cannot disagree. `request_hash` below is the Python recomputation, tested to equal the
contract's on a real anvil; the CLI uses it to check that what it shows is what gets approved.
over the task exactly as the chain holds it (the request fields are immutable once submitted;
`createdAt` is the submission block's timestamp; `merkleRoots` are the registered fingerprints
of the pinned dataset versions, since dataset ids and versions restart on a reset too), so two
tasks share a binding only if they are the same request over the same data to the same
contract on the same chain, submitted in the same second — and then they compute the same
thing, so repeated secrets reveal nothing new.
It is public: it separates domains, it is not a secret. Each party's per-task seed is an HMAC
of the binding under the party's own key (`pcn.runtime.execute.task_seed`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from eth_abi import encode
from eth_utils import keccak, to_canonical_address, to_checksum_address

from pcn.chain.types import Task

BINDING_DOMAIN = b"pcn/task-binding/v1"
# The three groups of TaskManager._hashRequest; new request fields go at the end of the last.
REQUEST_HEAD_TYPES = ["uint256", "address", "uint256", "address", "bytes32"]
REQUEST_LISTS_TYPES = ["uint256[]", "uint32[]", "bytes32[]", "address[]"]
REQUEST_TAIL_TYPES = ["bytes32", "address", "uint64", "uint64", "uint64", "uint8"]


def request_hash(
    chain_id: int,
    task_manager: str,
    task: Task,
    datasets: Sequence[tuple[int, int]],
    roots: Sequence[bytes],
    participants: Sequence[str],
    min_survivors: int,
) -> bytes:
    """keccak256 of the whole on-chain request of `task` as TaskManager.requestHash computes it:
    datasets as (id, pinned version) with the Merkle root registered for each pinned version,
    in the same order, and the survivor threshold the owners approve."""
    if len(roots) != len(datasets):
        raise ValueError("one Merkle root per pinned dataset version")
    head = encode(
        REQUEST_HEAD_TYPES,
        [
            int(chain_id),
            to_checksum_address(task_manager),
            int(task.task_id),
            to_checksum_address(task.requester),
            bytes(task.algorithm_hash),
        ],
    )
    lists = encode(
        REQUEST_LISTS_TYPES,
        [
            [int(d) for d, _ in datasets],
            [int(v) for _, v in datasets],
            [bytes(r) for r in roots],
            [to_checksum_address(p) for p in participants],
        ],
    )
    tail = encode(
        REQUEST_TAIL_TYPES,
        [
            bytes(task.params_hash),
            to_checksum_address(task.result_recipient),
            int(task.deadline),
            int(task.epsilon),
            int(task.created_at),
            int(min_survivors),
        ],
    )
    return keccak(head + lists + tail)


def task_binding(chain_id: int, task_manager: str, task_id: int, request: bytes) -> bytes:
    """32 public bytes naming task `task_id` of the TaskManager at `task_manager` on `chain_id`
    with the request hashing to `request`."""
    if len(request) != 32:
        raise ValueError("the request hash must be 32 bytes")
    return hashlib.sha256(
        BINDING_DOMAIN
        + int(chain_id).to_bytes(32, "big")
        + to_canonical_address(task_manager)
        + int(task_id).to_bytes(32, "big")
        + request
    ).digest()
