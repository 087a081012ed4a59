"""What operators and requesters do, as functions: the CLI, the demo and the tests call
these, so there is one way of doing each thing.

- `init_org`: an organisation's config file and keys (the admin then admits it on chain);
- `register_dataset`: fingerprint a local file and register it with its policy;
- `register_algorithm` / `approve_algorithm`: by the hash of the code on disk;
- `submit_task`: a contract call, then the parameters pushed to every participant's mailbox;
- `task_progress`: the chain's view plus each participant's live progress;
- `read_result`: the recipient's result, checked against the on-chain commitment.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from pcn.algorithms import BUILTIN, protocol_class
from pcn.algorithms.base import Message, ProtocolError
from pcn.algorithms.codehash import algorithm_code_hash
from pcn.chain.deployment import load_deployment
from pcn.chain.ledger import Ledger, TxResult
from pcn.chain.types import PolicyGrants, PolicyLimits, TaskRequest, epsilon_to_fixed
from pcn.crypto.keys import OrgKeys
from pcn.crypto.sealed import SealedError, open_sealed
from pcn.data.fingerprint import new_dataset_salt
from pcn.data.readers import infer_format, read_table, read_table_digest
from pcn.runtime.cache import fingerprint_with_cache
from pcn.runtime.config import DEVNET_CHAIN_IDS, OrgConfig
from pcn.runtime.context import NodeContext
from pcn.runtime.envelope import PARAMS_KIND, seal
from pcn.runtime.reqauth import sign_request
from pcn.runtime.results import result_context
from pcn.runtime.store import LocalDataset
from pcn.runtime.taskstate import NOT_BLOCKING, OWN_PREFIX, Phase
from pcn.runtime.transport import EndpointRefused, PeerClient, get_checked


class OperationError(ValueError):
    """A user-level mistake (unknown name, missing file, result not here...)."""


class InvalidParameters(OperationError):
    """Task parameters the algorithm would refuse: submitted, the task would be approved and
    use its datasets' uses and budget, then be refused by every node."""

    def __init__(self, kind: str, problem: str) -> None:
        super().__init__(f"not valid for {kind}: {problem}")
        self.kind = kind
        self.problem = problem


def _builtin_kind(ledger: Ledger | None, algorithm: str) -> str | None:
    """The built-in kind `algorithm` names: a built-in name, or a code hash whose kind is
    looked up on `ledger`; None without a ledger or for an algorithm that is not built in."""
    kind = algorithm if algorithm in BUILTIN else None
    if kind is None and ledger is not None and algorithm.startswith("0x") and len(algorithm) == 66:
        try:
            found = ledger.algorithm(bytes.fromhex(algorithm[2:]))
        except ValueError:
            found = None  # not hex: algorithm_hash names the problem
        kind = found.kind if found is not None and found.kind in BUILTIN else None
    return kind


def check_params(ledger: Ledger | None, algorithm: str, params: dict[str, Any]) -> None:
    """Raise InvalidParameters for parameters the algorithm's nodes would refuse. `algorithm`
    is a built-in name, or a code hash whose kind is looked up on `ledger` (not checked
    without one, nor for an algorithm that is not built in: its nodes judge)."""
    kind = _builtin_kind(ledger, algorithm)
    if kind is None:
        return
    try:
        protocol_class(kind).validate_params(params)
    except (ProtocolError, ValueError, TypeError, LookupError) as exc:
        raise InvalidParameters(kind, str(exc)) from None


def check_participants(ledger: Ledger | None, algorithm: str, participants: int) -> None:
    """Raise InvalidParameters when the algorithm does not take that many participants (its
    `participant_range`; psi-ot and private-query take exactly 2): the nodes would refuse the
    task INVALID_PARAMETERS. Same lookup of `algorithm` as `check_params`."""
    kind = _builtin_kind(ledger, algorithm)
    if kind is None:
        return
    try:
        protocol_class(kind).check_participant_count(participants)
    except ProtocolError as exc:
        raise InvalidParameters(kind, str(exc)) from None


def init_org(
    config_path: Path,
    *,
    name: str,
    rpc_url: str,
    deployment: Path,
    redis_url: str,
    endpoint: str,
    password: str,
    workers: int = 2,
    data_dir: Path | None = None,
    kdf_iterations: int | None = None,
    password_file: Path | None = None,
    relay_url: str = "",
    listen_port: int = 0,
) -> tuple[OrgConfig, OrgKeys]:
    """Write an organisation's config and create its keystore. `password_file`, if given, is
    recorded in the config so its commands unlock the keystore without $PCN_KEYSTORE_PASSWORD.
    With `relay_url` the node is outbound-only: its endpoint becomes the relay's route for its
    new address (`endpoint` is ignored) and its mailbox listens on loopback `listen_port`."""
    from pcn.runtime.puller import relay_route

    devnet = load_deployment(deployment).chain_id in DEVNET_CHAIN_IDS
    cfg = OrgConfig(
        name=name,
        rpc_url=rpc_url,
        deployment=str(Path(deployment).resolve()),
        redis_url=redis_url,
        data_dir=str((data_dir or config_path.parent / "data").resolve()),
        endpoint=endpoint,
        workers=workers,
        allow_private_endpoints=devnet,
        allow_http_endpoints=devnet,
        password_file=str(Path(password_file).resolve()) if password_file is not None else "",
        relay_url=relay_url,
        listen_port=listen_port,
    )
    if relay_url:
        cfg.endpoint = relay_route(relay_url, "0x" + "00" * 20)  # checked now, the address comes with the keys
    cfg.validate()
    if Path(config_path).exists():
        raise OperationError(f"{config_path} exists already; pcn never overwrites an organisation's config")
    keys = OrgKeys.create(cfg.keystore_dir, password, kdf_iterations=kdf_iterations)
    if relay_url:
        cfg.endpoint = relay_route(relay_url, keys.address)
    cfg.save(config_path)
    return cfg, keys


def algorithm_hash(name_or_hash: str) -> bytes:
    """A built-in algorithm's name (hashed from the code on disk) or a 0x code hash."""
    if name_or_hash.startswith("0x") and len(name_or_hash) == 66:
        return bytes.fromhex(name_or_hash[2:])
    if name_or_hash not in BUILTIN:
        raise OperationError(f"no built-in algorithm {name_or_hash!r}; known: {sorted(BUILTIN)}")
    return algorithm_code_hash(name_or_hash)


def resolve_org(ledger: Ledger, name_or_address: str) -> str:
    if name_or_address.startswith("0x") and len(name_or_address) == 42:
        return ledger.w3.to_checksum_address(name_or_address)
    for org in ledger.organisations():
        if org.name == name_or_address:
            return org.account
    raise OperationError(f"no organisation named {name_or_address!r} on chain")


def approve_algorithm(admin: Ledger, code_hash: bytes, dropout_tolerant: bool = False) -> TxResult | None:
    """As the consortium admin: approve a registered algorithm (nothing when approved already)."""
    algo = admin.algorithm(code_hash)
    if algo is None:
        raise OperationError(f"algorithm 0x{code_hash.hex()} is not registered")
    if algo.approved:
        return None
    return admin.approve_algorithm(code_hash, dropout_tolerant)


def register_algorithm(
    ledger: Ledger, name: str, version: str = "1.0.0", description: str = ""
) -> tuple[bytes, TxResult | None]:
    code = algorithm_code_hash(name)
    if ledger.algorithm(code) is not None:
        return code, None
    desc = hashlib.sha256((description or f"pcn built-in {name}").encode()).digest()
    return code, ledger.register_algorithm(code, name, version, desc)


def register_dataset(
    ctx: NodeContext,
    path: Path,
    *,
    name: str,
    id_column: str,
    limits: PolicyLimits,
    grants: PolicyGrants,
    fmt: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> LocalDataset:
    """Fingerprint `path` locally (salted rows → Merkle root) and register it on chain.
    The salt is saved before the transaction, so a crash after it loses nothing."""
    path = Path(path).resolve()
    fmt = infer_format(path, fmt)
    table, schema, file_digest = read_table_digest(path, fmt)
    if id_column not in table:
        raise OperationError(f"{path}: no id column {id_column!r}; columns are {table.names}")
    salt = new_dataset_salt()
    meta = {"name": name, "id_column": id_column, "format": fmt, **(metadata or {})}
    # computed through the cache, so the tasks that verify this file reuse the root
    fp = fingerprint_with_cache(ctx.fingerprints, table, schema, salt, file_digest, fmt, meta)
    ctx.store.save_salt("root-" + fp.merkle_root.hex(), salt)
    dataset_id, tx = ctx.ledger.register_dataset(fp, limits, grants)
    ctx.store.save_salt(str(dataset_id), salt)
    local = LocalDataset(
        dataset_id=dataset_id,
        name=name,
        path=str(path),
        fmt=fmt,
        id_column=id_column,
        version=1,
        merkle_root="0x" + fp.merkle_root.hex(),
        schema_hash="0x" + fp.schema_hash.hex(),
        metadata_hash="0x" + fp.metadata_hash.hex(),
        row_count=fp.row_count,
        registered_tx=tx.tx_hash,
    )
    ctx.store.put(local)
    ctx.log.append("dataset-registered", None, dataset_id=dataset_id, root=local.merkle_root, tx=tx.tx_hash)
    return local


@dataclass
class Submitted:
    task_id: int
    tx: TxResult
    params_hash: bytes
    delivered: dict[str, str]  # participant -> "ok" or the delivery error


def submit_task(
    ledger: Ledger,
    *,
    algorithm: str,
    dataset_ids: list[int],
    params: dict[str, Any],
    recipient: str,
    deadline_in: int = 3600,
    epsilon: float = 0.0,
    participants: list[str] | None = None,
    push: bool = True,
    min_survivors: int | None = None,
) -> Submitted:
    """Submit by contract call, then push the parameters to every participant's mailbox
    (each node accepts them only if they hash to the on-chain params hash). Parameters the
    algorithm would refuse raise InvalidParameters before anything is sent."""
    if not dataset_ids:
        raise OperationError("a task needs at least one input dataset")
    check_params(ledger, algorithm, params)
    owners = [ledger.owner_of(d) for d in dataset_ids]
    parts = participants or list(dict.fromkeys(owners))
    check_participants(ledger, algorithm, len(parts))
    params_bytes = params_bytes_of(params)
    params_hash = hashlib.sha256(params_bytes).digest()
    request = TaskRequest(
        algorithm_hash=algorithm_hash(algorithm),
        dataset_ids=dataset_ids,
        participants=parts,
        params_hash=params_hash,
        result_recipient=resolve_org(ledger, recipient),
        deadline=ledger.chain_now() + deadline_in,
        epsilon=epsilon_to_fixed(epsilon),
        min_survivors=min_survivors,
    )
    task_id, tx = ledger.submit_task(request)
    delivered = push_params(ledger, task_id, params_bytes) if push else {}
    return Submitted(task_id, tx, params_hash, delivered)


def params_bytes_of(params: dict[str, Any]) -> bytes:
    """The canonical bytes of a task's parameters (their sha256 is the on-chain params hash)."""
    return json.dumps(params, sort_keys=True, separators=(",", ":")).encode()


def seal_params(ledger: Ledger, task_id: int, params_bytes: bytes, participant: str) -> bytes:
    """The task's parameters as its requester (the ledger's account) hands them to one
    participant: signed, and sealed to that participant's registered X25519 key, so whoever
    carries them (a relay, a proxy) reads nothing; the participant checks their hash on chain."""
    org = ledger.organisation(participant)
    msg = Message(str(ledger.signer.address), org.account, 0, PARAMS_KIND, params_bytes)
    task_manager = str(ledger.deployment.contracts["TaskManager"].address)
    return seal(msg, task_id, ledger.chain_id, task_manager, ledger.signer, org.encryption_key)


def push_params(ledger: Ledger, task_id: int, params_bytes: bytes, timeout: float = 30.0) -> dict[str, str]:
    """Hand the task's parameters to every participant's mailbox, sealed to each (see
    `seal_params`); per participant "ok" or why not (the operator can push again)."""
    devnet = ledger.chain_id in DEVNET_CHAIN_IDS  # elsewhere, endpoints must be public https
    client = PeerClient(allow_private_endpoints=devnet, allow_http_endpoints=devnet)
    out: dict[str, str] = {}
    for p in ledger.task_participants(task_id):
        try:
            endpoint = ledger.organisation(p).endpoint
            sealed = seal_params(ledger, task_id, params_bytes, p)
            client.post_params(endpoint, task_id, sealed, deadline=time.monotonic() + timeout)
            out[p] = "ok"
        except Exception as exc:  # reported, not fatal: the operator can push again
            out[p] = f"{type(exc).__name__}: {exc}"
    return out


def _eta(live: dict[str, Any]) -> float | None:
    """Seconds left for a running participant, from its rate so far (None when unknown)."""
    try:
        fraction, since, updated = float(live["fraction"]), float(live["running_since"]), float(live["updated"])
    except (KeyError, ValueError):
        return None
    if live.get("phase") != Phase.RUNNING or not 0.01 <= fraction < 1.0:
        return None
    return round((updated - since) / fraction * (1.0 - fraction), 1)


def _who_waits_for_whom(rows: list[dict[str, Any]]) -> None:
    """A participant idle in the protocol waits for those still busy (computing, verifying,
    not started, unreachable): the slow party is the one every other row names. When all
    are waiting, a message is in flight (or being retried to a peer that is down)."""
    busy = [r["name"] for r in rows if r.get("phase") not in NOT_BLOCKING]
    for r in rows:
        if r.get("phase") != Phase.WAITING:
            continue
        r["waiting_for"] = [n for n in busy if n != r["name"]]
        with contextlib.suppress(KeyError, ValueError):
            r["waiting_seconds"] = round(max(0.0, time.time() - float(r["waiting_since"])), 1)


def task_progress(ledger: Ledger, task_id: int) -> dict[str, Any]:
    """The task on chain and each participant's live progress. Mailboxes answer progress only
    to the task's participants and requester, so the requests are signed with the ledger's
    account; a read-only ledger gets the on-chain part alone (each row says why)."""
    task = ledger.task(task_id)
    parts = ledger.task_participants(task_id)
    devnet = ledger.chain_id in DEVNET_CHAIN_IDS  # elsewhere, endpoints must be public https
    rows = []
    for p in parts:
        org = ledger.organisation(p)
        row: dict[str, Any] = {
            "participant": p,
            "name": org.name,
            "state": ledger.participant_state(task_id, p).name.lower(),
        }
        if ledger.account is None:
            row["phase"] = "unsigned"
            row["detail"] = "live progress needs an organisation's key (--org/--config with its keystore password)"
            rows.append(row)
            continue
        path = f"/v1/tasks/{task_id}/progress"
        # signed over the whole path the endpoint serves it at (a relay's has a prefix)
        headers = sign_request(ledger.account, "GET", urlsplit(org.endpoint).path.rstrip("/") + path, task_id)
        try:
            r = get_checked(org.endpoint, path, allow_private=devnet, allow_http=devnet, timeout=2.0, headers=headers)
            if r.status_code in (401, 403):
                row["phase"] = "not authorised"
                row["detail"] = f"the node answered HTTP {r.status_code} to this account's signed request"
            if r.status_code == 200:
                live = r.json()
                row.update(
                    {k: live[k] for k in ("phase", "fraction", "detail", "updated", "waiting_since") if live.get(k)}
                )
                row["eta_seconds"] = _eta(live)
                # figures a node shows its own organisation only (its mailbox leaves them out
                # for anyone else): present when this ledger's account is that organisation
                own = {k[len(OWN_PREFIX) :]: str(v) for k, v in live.items() if k.startswith(OWN_PREFIX)}
                if own:
                    row["own"] = own
        except EndpointRefused as exc:
            row["phase"] = f"endpoint refused: {exc.reason}"
        except (httpx.HTTPError, OSError):
            row["phase"] = "node unreachable"
        rows.append(row)
    _who_waits_for_whom(rows)
    return {
        "task_id": task_id,
        "status": task.status.name.lower(),
        "refusal": task.refusal_reason.name if task.refusal_reason.value else "",
        "result_hash": "0x" + task.result_hash.hex(),
        "deadline": task.deadline,
        "participants": rows,
    }


def read_result(ctx: NodeContext, task_id: int) -> dict[str, Any]:
    """The stored result of `task_id`, checked against the on-chain result hash."""
    path = ctx.results_dir() / f"{task_id}.sealed"
    if not path.is_file():
        raise OperationError(
            f"no result of task {task_id} at this node ({ctx.config.name}); only the named recipient holds it"
        )
    try:
        doc = json.loads(open_sealed(ctx.keys.x25519_private, path.read_bytes(), result_context(task_id)))
    except SealedError as exc:
        raise OperationError(f"{path}: {exc}") from None
    task = ctx.ledger.task(task_id)
    result = doc["result"].encode()
    stored = bytes.fromhex(doc["commitment"][2:])
    recomputed = protocol_class(doc["algorithm"]).commitment_for(result, bytes.fromhex(doc["opening"]))
    return {
        "task_id": task_id,
        "status": task.status.name.lower(),
        "result": json.loads(result),
        "commitment": doc["commitment"],
        "on_chain": "0x" + task.result_hash.hex(),
        "matches_chain": recomputed == stored == task.result_hash,
    }


PSI_KINDS = ("psi", "psi-ot")  # the algorithms whose result lists the intersection IDs (same shape)


def derive_aligned_dataset(
    ctx: NodeContext,
    task_id: int,
    *,
    name: str,
    limits: PolicyLimits,
    grants: PolicyGrants,
) -> LocalDataset:
    """The aligned sample of a PSI task (psi or psi-ot), as a new registered dataset: the recipient's own rows
    of the task's input whose IDs are in the (chain-checked) intersection. Its metadata names
    the source task and dataset, so an auditor can follow the lineage."""
    from pcn.algorithms.psi.protocol import normalise_id

    got = read_result(ctx, task_id)
    result = got["result"]
    if result.get("algorithm") not in PSI_KINDS or result.get("output") != "ids":
        raise OperationError(f"task {task_id} is not a PSI task whose result lists the intersection IDs")
    if not got["matches_chain"]:
        raise OperationError(f"task {task_id}'s stored result does not match its on-chain commitment")
    mine = [d for d, _v in ctx.ledger.task_datasets(task_id) if ctx.store.has(d)]
    if not mine:
        raise OperationError(f"none of task {task_id}'s input datasets is held by this node")
    source = ctx.store.get(mine[0])
    table, _schema = read_table(Path(source.path), source.fmt)
    wanted = set(result["ids"])
    keys = [normalise_id(c, bool(result.get("casefold"))) for c in table.column(source.id_column)]
    keep = [i for i, k in enumerate(keys) if k is not None and k in wanted]
    out = ctx.config.data_path / "derived" / f"psi-task-{task_id}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(table.names)
        columns = [table.column(n) for n in table.names]
        for i in keep:
            w.writerow(["" if col[i] is None else col[i] for col in columns])
    return register_dataset(
        ctx,
        out,
        name=name,
        id_column=source.id_column,
        limits=limits,
        grants=grants,
        fmt="csv",
        metadata={"derived_from_task": task_id, "source_dataset": source.dataset_id, "result_hash": got["on_chain"]},
    )
