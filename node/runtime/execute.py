"""One organisation's side of one task, from verification to anchored receipt.

Runs inside a Celery worker (`pcn.runtime.worker`). Every step is idempotent and keyed by
(task id, organisation, step), so a task message that is delivered again — a worker
killed mid-task, `acks_late` redelivery — resumes instead of repeating:

1. read the chain: if this organisation already refused or receipted, stop;
2. wait for the task's parameters (pushed by the requester to every mailbox, accepted
   only when their hash equals the on-chain params hash);
3. verify every check of DESIGN §5 (`verify.py`) — the data file is read only by the
   last check; a failure calls `refuse(reason)` on chain and stops;
4. `start` on chain (skipped when already started);
5. run the algorithm's pure protocol (`pcn.runtime.driver.ProtocolDriver`), carrying its
   messages as signed, encrypted envelopes over HTTP; a resumed worker replays the inbox,
   re-sends the same deterministic messages (peers drop them as duplicates) and arrives
   where it was;
6. store the result (recipient only), delete intermediates, submit the receipt;
7. anchor the local action log's head on chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from pcn import jsonsafe
from pcn.algorithms import protocol_class
from pcn.algorithms.base import Message, ModelUnavailable, PartyContext, Protocol, ProtocolError, TaskServices
from pcn.algorithms.codehash import algorithm_code_hash
from pcn.chain.errors import ChainUnavailable, ContractRevert
from pcn.chain.types import (
    Fingerprint,
    ParticipantState,
    Receipt,
    RefusalReason,
    Task,
)
from pcn.crypto import sealed
from pcn.data.readers import read_table_digest
from pcn.data.table import Table
from pcn.runtime.cache import FileCache, fingerprint_with_cache
from pcn.runtime.context import NodeContext
from pcn.runtime.driver import InboxQuotas, ProtocolDriver, TaskAborted, Timeouts
from pcn.runtime.envelope import seal
from pcn.runtime.failpoints import failpoint
from pcn.runtime.inbox import Inbox
from pcn.runtime.peers import PeerDirectory
from pcn.runtime.pool import compute_pool_map
from pcn.runtime.results import load_sealed_model, model_context, result_context
from pcn.runtime.store import LocalDataset
from pcn.runtime.taskstate import (
    Phase,
    Progress,
    RunRecord,
    TaskLock,
    holds_intermediates,
    intermediate_keys,
    reply_bytes,
)
from pcn.runtime.transport import DeliveryRejected, EndpointRefused, PeerClient, PeerUnreachable
from pcn.runtime.verify import Refused, Verdict, recheck_running_task, verify_task

# Failures that go away by themselves: the task is retried (and resumes) instead of refused.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ChainUnavailable,
    redis.ConnectionError,
    redis.TimeoutError,
)


# A resumable protocol's latest checkpoint, in the task's scratch folder.
CHECKPOINT_FILE = "checkpoint.bin"


@dataclass
class Outcome:
    task_id: int
    status: str  # "receipted" | "refused" | "skipped"
    reason: str = ""
    result_hash: str = ""


def task_seed(org_key: bytes, binding: bytes) -> bytes:
    """This party's per-task secret randomness: stable across resumes, unknown to peers, and
    never the same for two tasks — `binding` (`Ledger.task_binding`) names the chain, the
    TaskManager, the task id and the whole request, so a redeployment that restarts task ids
    does not repeat any share, mask, noise or blinding key."""
    if len(binding) != 32:
        raise ValueError("the task binding must be 32 bytes")
    return hmac.new(org_key, b"pcn/task-seed/v2/" + binding, hashlib.sha256).digest()


def task_services(ctx: NodeContext, task_id: int, algorithm: str, *, chain_id: int, task_manager: str) -> TaskServices:
    """What the protocol of `task_id` may use of this node, bound to that task: a stable secret
    per label (a key epoch that outlives one task, bound to the deployment), this
    organisation's stored models, the task's checkpoint file, an on-disk cache for the
    algorithm's reusable preprocessing and figures for this organisation's operator alone."""
    org_key = bytes(ctx.keys.account.key)
    me = ctx.address.lower()
    scratch = ctx.task_dir(task_id)

    def epoch_key(label: str) -> bytes:
        # Bound to the deployment too: a redeployment never reuses an epoch's key.
        material = f"pcn/org-secret/v2/{chain_id}/{task_manager.lower()}/{label}".encode()
        return hmac.new(org_key, material, hashlib.sha256).digest()

    def load_model(model_task: int, party: str) -> dict[str, Any]:
        if party.lower() != me:
            raise ModelUnavailable(f"a node holds only its own part of a model, not {party}'s")
        return load_sealed_model(ctx, model_task)

    def save_checkpoint(epochs_done: int, checkpoint: bytes) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        tmp = scratch / "checkpoint.tmp"
        tmp.write_bytes(checkpoint)
        tmp.replace(scratch / CHECKPOINT_FILE)  # atomic: a kill never leaves half a checkpoint
        ctx.log.append("checkpoint", task_id, epochs_done=epochs_done)

    def report_to_operator(figures: dict[str, str]) -> None:
        Progress(ctx, task_id).set_own(figures)

    return TaskServices(
        epoch_key=epoch_key,
        load_model=load_model,
        save_checkpoint=save_checkpoint,
        cache=FileCache(ctx.config.data_path / "cache" / algorithm),
        report_to_operator=report_to_operator,
    )


class TaskRunner:
    def __init__(self, ctx: NodeContext, task_id: int, client: PeerClient | None = None) -> None:
        self.ctx = ctx
        self.task_id = task_id
        self.ledger = ctx.ledger
        self.me = ctx.address
        self.peers = PeerDirectory(self.ledger)
        self.client = client or PeerClient(
            allow_private_endpoints=ctx.config.allow_private_endpoints,
            allow_http_endpoints=ctx.config.allow_http_endpoints,
        )
        self.inbox = Inbox(ctx.redis, ctx.key())
        self.progress = Progress(ctx, task_id)
        self.log = ctx.log
        self._tables: dict[int, Table] = {}
        self.timings: dict[str, float] = {}  # seconds per phase, reported with the receipt

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - t0

    # ------------------------------------------------------------------ entry point

    def run(self) -> Outcome:
        task = self.ledger.task(self.task_id)
        state = self.ledger.participant_state(self.task_id, self.me)
        if state is ParticipantState.RECEIPTED and self.ctx.redis.exists(self.ctx.key("finishing", self.task_id)):
            return self._close_after_receipt()
        if state is ParticipantState.DROPPED:
            return self._close_after_dropout()
        if state is ParticipantState.REFUSED and self.ctx.redis.exists(self.ctx.key("refusing", self.task_id)):
            return self._close_after_refusal()
        if state in (ParticipantState.REFUSED, ParticipantState.RECEIPTED):
            return Outcome(self.task_id, "skipped", f"already {state.name.lower()}")
        if state is ParticipantState.NONE:
            return Outcome(self.task_id, "skipped", "not a participant")
        if task.status.is_final:
            why = f"task is {task.status.name.lower()}"
            if self.has_leftovers():  # this node was down when the task ended elsewhere
                self._delete_intermediates()
                self.log.append("cleanup", self.task_id, why=why)
                self._anchor()
            return Outcome(self.task_id, "skipped", why)
        finishing = self.ctx.redis.get(self.ctx.key("finishing", self.task_id))
        if finishing is not None and state is ParticipantState.STARTED:
            # A worker died after the protocol had finished (its inputs may be deleted already):
            # finish from the durable record instead of running the protocol again.
            record = json.loads(finishing)
            self.log.append("resume", self.task_id, finishing=True)
            return self._finish(record)
        self.progress.set(Phase.WAITING_PARAMS, 0.0)
        with self._timed("wait_params"):
            params_raw = self._wait_params(task)
        if params_raw is None:
            return self._refuse(Refused(RefusalReason.INVALID_PARAMETERS, "parameters never arrived"), task)
        try:
            params = jsonsafe.loads(params_raw)  # a member may submit "[[[[…": an error, not a crash
            if not isinstance(params, dict):
                raise ValueError("parameters must be a JSON object")
            kind = self.ledger.algorithm(task.algorithm_hash)
            proto_cls = protocol_class(kind.kind if kind else "")
            params = proto_cls.validate_params(params)
            participants = [p.lower() for p in self.ledger.task_participants(self.task_id)]
            proto_cls.check_participant_count(len(participants))
            if task.result_recipient.lower() not in participants:
                raise ValueError(f"the result recipient {task.result_recipient} must be one of the participants")
        except (ValueError, ProtocolError, LookupError) as exc:
            return self._refuse(Refused(RefusalReason.INVALID_PARAMETERS, str(exc)), task)

        self.progress.set(Phase.VERIFYING, 0.0)
        with self._timed("verify"):
            verdict = verify_task(
                self.ledger,
                self.task_id,
                self.me,
                self.ctx.store,
                self._fingerprint,
                params_raw,
                requested_epsilon=proto_cls.privacy_cost(params),
            )
        self.log.append("verify", self.task_id, ok=verdict.ok, block=verdict.block, checks=verdict.checks)
        if not verdict.ok:
            return self._refuse(Refused(verdict.reason, verdict.detail), task, verdict)
        if state is ParticipantState.INVITED:
            try:
                with self._timed("chain_start"):
                    res = self.ledger.start(self.task_id)
                self.log.append("start", self.task_id, tx=res.tx_hash, block=res.block_number)
            except ContractRevert as exc:
                if exc.name != "AlreadyStarted":
                    raise
        started_at = int(time.time())
        try:
            return self._execute(task, verdict, params, proto_cls, started_at)
        except (PeerUnreachable, EndpointRefused) as exc:
            return self._refuse(Refused(RefusalReason.PEER_UNREACHABLE, str(exc)), task)
        except Refused as refused:  # a check that held at the start stopped holding mid-task
            return self._refuse(refused, task)
        except (ProtocolError, DeliveryRejected) as exc:
            return self._refuse(Refused(RefusalReason.PROTOCOL_FAILURE, str(exc)), task)
        except TaskAborted as exc:
            self._delete_intermediates()
            self.log.append("abort", self.task_id, why=str(exc))
            self.progress.set(Phase.ABORTED, 1.0, str(exc))
            self._anchor()
            return Outcome(self.task_id, "skipped", str(exc))
        except TRANSIENT_ERRORS:
            raise  # the chain or Redis is briefly away: the worker retries the task (it resumes)
        except Exception as exc:  # a bug or bad data met mid-protocol: say so on chain, never hang peers
            return self._refuse(Refused(RefusalReason.PROTOCOL_FAILURE, f"{type(exc).__name__}: {exc}"), task)

    # ------------------------------------------------------------------ steps

    def _wait_params(self, task: Task) -> bytes | None:
        key = self.ctx.key("params", self.task_id)
        deadline = time.monotonic() + self.ctx.config.message_timeout
        while time.monotonic() < deadline and time.time() < task.deadline:
            raw = self.ctx.redis.get(key)
            if raw is not None:
                return reply_bytes(raw)
            time.sleep(0.1)
        return None

    def _fingerprint(self, local: LocalDataset, salt: bytes) -> Fingerprint:
        with self._timed("read_data"):
            table, schema, file_digest = read_table_digest(Path(local.path), local.fmt)
        self._tables[local.dataset_id] = table
        with self._timed("fingerprint"):
            return fingerprint_with_cache(self.ctx.fingerprints, table, schema, salt, file_digest, local.fmt, {})

    def _refuse(self, refused: Refused, task: Task, verdict: Verdict | None = None) -> Outcome:
        detail_hash = hashlib.sha256(f"{refused.reason.name}:{refused.detail}".encode()).digest()
        self.progress.set(Phase.REFUSED, 1.0, f"{refused.reason.name}: {refused.detail}")
        self._delete_intermediates()
        # What the log entry will say, kept until it is written: a worker that dies between the
        # mined refusal and its log entry logs it when the task is redelivered.
        refusing = self.ctx.key("refusing", self.task_id)
        self.ctx.redis.set(
            refusing, json.dumps({"reason": refused.reason.name, "detail": refused.detail}), ex=7 * 86_400
        )
        try:
            res = self.ledger.refuse(self.task_id, refused.reason, detail_hash)
            tx = res.tx_hash
            failpoint("after-refusal-mined")
        except ContractRevert as exc:  # task already closed (expired, refused by another party...)
            tx = f"not recorded: {exc.name}"
        self.log.append("refuse", self.task_id, reason=refused.reason.name, detail=refused.detail, tx=tx)
        self.ctx.redis.delete(refusing)
        self._anchor()
        return Outcome(self.task_id, "refused", refused.reason.name)

    def _close_after_refusal(self) -> Outcome:
        """The worker died between its refusal being mined and its logging it: log the refusal
        with the transaction the chain holds (the auditor matches log and chain by it)."""
        refusing = self.ctx.key("refusing", self.task_id)
        record = json.loads(self.ctx.redis.get(refusing) or b"{}")
        tx = self.ledger.refusal_tx(self.task_id, self.me)
        reason = str(record.get("reason", ""))
        self.log.append(
            "refuse", self.task_id, reason=reason, detail=str(record.get("detail", "")), tx=tx, recovered=True
        )
        self.ctx.redis.delete(refusing)
        self._anchor()
        self.progress.set(Phase.REFUSED, 1.0, f"{reason}: {record.get('detail', '')}")
        return Outcome(self.task_id, "refused", reason)

    def _execute(
        self, task: Task, verdict: Verdict, params: dict[str, Any], proto_cls: type[Protocol], started_at: int
    ) -> Outcome:
        participants = self.ledger.task_participants(self.task_id)
        table = self._tables[verdict.my_datasets[0]]
        fingerprints = [self.ctx.store.get(d).merkle_root.removeprefix("0x") for d in sorted(verdict.my_datasets)]
        input_fp = hashlib.sha256(b"pcn/input/v1" + b"".join(bytes.fromhex(f) for f in fingerprints)).digest()
        scratch = self.ctx.task_dir(self.task_id)
        scratch.mkdir(parents=True, exist_ok=True)

        run_record = RunRecord(self.ctx, self.task_id)
        config = self.ctx.config
        driver = ProtocolDriver(
            task,
            self.me,
            ledger=self.ledger,
            inbox=self.inbox,
            client=self.client,
            peers=self.peers,
            progress=self.progress,
            log=self.log,
            record=run_record,
            seal=self._seal,
            recheck=lambda: recheck_running_task(self.ledger, self.task_id),
            timeouts=Timeouts.of(config.message_timeout, config.dropout_after, config.recheck_every),
            quotas=InboxQuotas(config.mailbox_task_quota, config.mailbox_sender_quota),
        )
        binding = self.ledger.task_binding(self.task_id)
        pctx = PartyContext(
            self.task_id,
            self.me,
            participants,
            task.result_recipient,
            params,
            task_seed(bytes(self.ctx.keys.account.key), binding),
            driver.report,
            id_column=self.ctx.store.get(verdict.my_datasets[0]).id_column,
            parallel_map=compute_pool_map(
                config.compute_processes or os.cpu_count() or 1, on_rebuild=self._pool_rebuilt
            ),
            binding=binding,
            services=task_services(
                self.ctx, self.task_id, proto_cls.name, chain_id=self.ledger.chain_id, task_manager=self._tm_address
            ),
        )
        proto = self._protocol(proto_cls, pctx, table, scratch / CHECKPOINT_FILE)
        driver.run(proto)
        sent, received = driver.sent, driver.received
        self.timings["protocol"] = driver.seconds
        transcript = self._transcript(run_record)
        result = proto.result()
        commitment = proto.result_commitment()
        if result is not None:
            self._store_result(result, proto, commitment)
        model = proto.model_state()
        if model is not None:
            self._store_model(model)
        items = self._intermediates()
        deletion_hash = hashlib.sha256(("\n".join(items)).encode()).digest()
        self.log.append(
            "protocol-done",
            self.task_id,
            sent=sent,
            received=received,
            transcript=transcript.hex(),
            commitment=commitment.hex(),
        )
        receipt = Receipt(
            commitment,
            transcript,
            input_fp,
            algorithm_code_hash(proto_cls.name),
            deletion_hash,
            started_at,
            max(started_at, int(time.time())),
        )
        record = {
            "receipt": [v.hex() if isinstance(v, bytes) else v for v in receipt.as_tuple()],
            "items": items,
            "sent": sent,
            "received": received,
        }
        # Durable before anything is deleted: from here a redelivered run finishes from this
        # record (the inputs a protocol re-run would need are about to go).
        self.ctx.redis.set(
            self.ctx.key("finishing", self.task_id),
            json.dumps(record),
            ex=max(3600, int(task.deadline - time.time()) + 86_400),
        )
        failpoint("after-finishing-record")
        return self._finish(record)

    def _protocol(self, proto_cls: type[Protocol], pctx: PartyContext, table: Table, checkpoint: Path) -> Protocol:
        """This party's protocol instance: fresh, or resumed from the last checkpoint a killed
        worker saved (a resumable protocol continues from an epoch boundary, not from zero)."""
        if checkpoint.is_file() and proto_cls.resumable:
            proto = proto_cls.resume(pctx, table, checkpoint.read_bytes())
            self.log.append("resume", self.task_id, epochs_done=proto.checkpoint_epoch)
            return proto
        return proto_cls.create(pctx, table)

    def _seal(self, msg: Message, encryption_key: bytes) -> bytes:
        """`msg` as a signed envelope for this task, encrypted to the receiver's key."""
        return seal(msg, self.task_id, self.ledger.chain_id, self._tm_address, self.ctx.keys.account, encryption_key)

    def _pool_rebuilt(self, rebuilds: int, why: str) -> None:
        """A compute pool process died mid-task: recorded, so operators see it happen."""
        self.log.append("compute-pool-rebuilt", self.task_id, rebuilds=rebuilds, why=why)

    def has_leftovers(self) -> bool:
        return holds_intermediates(self.ctx, self.task_id)

    def _close_after_dropout(self) -> Outcome:
        """This party was reported dropped (it was down or too slow): the others went on
        without it. Delete what it still holds of the task; no receipt is owed or accepted."""
        if self.ctx.redis.hget(self.ctx.key("progress", self.task_id), "phase") != b"dropped":
            self._delete_intermediates()
            self.ctx.redis.delete(self.ctx.key("finishing", self.task_id))
            self.log.append("dropped", self.task_id)
            self.progress.set(Phase.DROPPED, 1.0, "reported dropped by the result recipient; the others went on")
            self._anchor()
        return Outcome(self.task_id, "skipped", "reported dropped")

    def _close_after_receipt(self) -> Outcome:
        """The worker died between its receipt being mined and its logging it: log the receipt
        as the chain holds it (the auditor matches log and chain by transaction), then close."""
        record = json.loads(self.ctx.redis.get(self.ctx.key("finishing", self.task_id)) or b"{}")
        tx = self.ledger.receipt_tx(self.task_id, self.me)
        on_chain = self.ledger.receipt(self.task_id, self.me)
        self.log.append("receipt", self.task_id, tx=tx, result_hash=on_chain.result_hash.hex(), recovered=True)
        self.ctx.redis.delete(self.ctx.key("finishing", self.task_id))
        self._anchor()
        sent, received = record.get("sent", 0), record.get("received", 0)
        self.progress.set(Phase.DONE, 1.0, "receipt submitted", sent=sent, received=received)
        return Outcome(self.task_id, "receipted", result_hash="0x" + on_chain.result_hash.hex())

    def _finish(self, record: dict[str, Any]) -> Outcome:
        """Delete the intermediates, attest it in the receipt, submit the receipt, anchor the
        log. Every step is idempotent, so a worker killed anywhere in here is simply resumed."""
        result, transcript, inputs, algorithm, deletion, started_at, finished_at = record["receipt"]
        receipt = Receipt(
            bytes.fromhex(result),
            bytes.fromhex(transcript),
            bytes.fromhex(inputs),
            bytes.fromhex(algorithm),
            bytes.fromhex(deletion),
            started_at,
            finished_at,
        )
        commitment = receipt.result_hash
        self._delete_intermediates()
        self.log.append("delete", self.task_id, items=record["items"], hash=receipt.deletion_hash.hex())
        failpoint("after-delete")
        self.progress.set(Phase.RECEIPT, 0.99, "submitting receipt")
        try:
            t0 = time.perf_counter()
            res = self.ledger.submit_receipt(self.task_id, receipt)
            failpoint("after-receipt-mined")
            self.timings["chain_receipt"] = time.perf_counter() - t0
            self.log.append(
                "receipt",
                self.task_id,
                tx=res.tx_hash,
                result_hash=commitment.hex(),
                timings={k: round(v, 4) for k, v in self.timings.items()},
            )
        except ContractRevert as exc:
            if exc.name != "AlreadyFinished":
                raise
        self.ctx.redis.delete(self.ctx.key("finishing", self.task_id))
        with self._timed("chain_anchor"):
            self._anchor()
        self.progress.set(
            Phase.DONE,
            1.0,
            "receipt submitted",
            sent=record["sent"],
            received=record["received"],
            timings=json.dumps({k: round(v, 4) for k, v in self.timings.items()}),
        )
        return Outcome(self.task_id, "receipted", result_hash="0x" + commitment.hex())

    @property
    def _tm_address(self) -> str:
        return str(self.ledger.deployment.contracts["TaskManager"].address)

    def _transcript(self, record: RunRecord) -> bytes:
        """Hash of every message this party sent and received, each once, in a canonical order
        (sent by receiver and sequence, received in inbox order), so a resumed worker reports
        the same transcript as one that never stopped."""
        h = hashlib.sha256(b"pcn/transcript/v2")
        for field, digest in record.sent():
            h.update(b"S" + field + b"=" + digest)
        for digest in self.inbox.received_digests(self.task_id):
            h.update(b"R" + digest)
        return h.digest()

    def _store_model(self, state: dict[str, Any]) -> None:
        """This party's part of a split model (e.g. a host's weights in vertical LR), sealed to
        its own key; later prediction tasks load it through `load_sealed_model`."""
        out = self.ctx.config.data_path / "models"
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = out / f"{self.task_id}.sealed"
        blob = sealed.seal(self.ctx.keys.x25519_public, json.dumps(state).encode(), model_context(self.task_id))
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.chmod(0o600)
        tmp.replace(path)
        self.log.append("model-stored", self.task_id, path=str(path), sha256=hashlib.sha256(blob).hexdigest())

    def _store_result(self, result: bytes, proto: Protocol, commitment: bytes) -> None:
        """The result, sealed to this organisation's registered X25519 key (readable only with
        its keystore), next to the opening that ties it to the on-chain commitment."""
        doc = {
            "task_id": self.task_id,
            "algorithm": proto.name,
            "result": result.decode(),
            "opening": proto.commitment_opening().hex(),
            "commitment": "0x" + commitment.hex(),
        }
        blob = sealed.seal(self.ctx.keys.x25519_public, json.dumps(doc).encode(), result_context(self.task_id))
        out = self.ctx.results_dir()
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = out / f"{self.task_id}.sealed"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.chmod(0o600)
        tmp.replace(path)
        self.log.append("result-stored", self.task_id, path=str(path), commitment=commitment.hex())

    def _redis_intermediates(self) -> list[str]:
        return intermediate_keys(self.ctx, self.task_id)

    def _intermediates(self) -> list[str]:
        """What `_delete_intermediates` removes, sorted: the receipt's deletion hash covers it."""
        scratch = self.ctx.task_dir(self.task_id)
        files = [str(p.relative_to(scratch.parent)) for p in scratch.rglob("*")] if scratch.exists() else []
        return sorted(files + [f"redis:{k}" for k in self._redis_intermediates()])

    def _delete_intermediates(self) -> None:
        """Idempotent: a resumed worker may delete what is already gone."""
        shutil.rmtree(self.ctx.task_dir(self.task_id), ignore_errors=True)
        self.inbox.delete(self.task_id)
        self.ctx.redis.delete(*self._redis_intermediates())
        self._tables.clear()

    def _anchor(self) -> None:
        seq, head = self.log.head()
        if seq == 0:
            return
        with contextlib.suppress(ContractRevert):  # anchored already at this sequence (a resumed worker)
            self.ledger.anchor_log(seq, head)


def run_task(ctx: NodeContext, task_id: int, on_done: Callable[[Outcome], None] | None = None) -> Outcome:
    with TaskLock(ctx, task_id):
        outcome = TaskRunner(ctx, task_id).run()
    if on_done is not None:
        on_done(outcome)
    return outcome
