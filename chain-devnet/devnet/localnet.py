"""A consortium of real pcn nodes on one machine — the embedded default of DESIGN §7,
used by `make demo`, the benchmarks and the end-to-end tests.

Each organisation has its own config file, keystore, data directory, mailbox process,
watcher process and Celery worker processes; all talk over real HTTP, a real Redis (a
private instance on its own port, never the machine's shared one) and a real chain.
Nothing here is needed on a real deployment, where each organisation runs `pcn org init`
and `pcn node start` on its own host.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from eth_account import Account

from pcn.algorithms import BUILTIN, protocol_class
from pcn.chain.deployment import Deployment
from pcn.chain.ledger import Ledger
from pcn.chain.types import ParticipantState, PolicyGrants, PolicyLimits, TaskStatus, epsilon_to_fixed
from pcn.devnet.deploy import devnet_key
from pcn.runtime import services
from pcn.runtime.config import OrgConfig
from pcn.runtime.context import NodeContext
from pcn.runtime.operations import (
    approve_algorithm,
    init_org,
    register_algorithm,
    register_dataset,
    submit_task,
)
from pcn.runtime.taskstate import Phase, Progress, intermediate_keys

PASSWORD = "correct horse battery staple"
REGIONS = ["north", "south", "east", "west"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server on a free port (never the machine's shared 6379).

    `persist=True` is how a node's Redis must run in production: every write is appended to
    an fsynced log (AOF, `appendfsync always`), so a Redis restart loses no queued Celery
    task, inbox message or progress record."""

    def __init__(self, workdir: Path, port: int | None = None, persist: bool = False) -> None:
        self.port = port or free_port()
        self.dir = workdir
        self.persist = persist
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        import redis

        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *durability, "--dir", str(self.dir)]
        proc = subprocess.Popen(
            [binary, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return proc
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server, stay down `down_for` seconds, start it again on the same port."""
        self.stop()
        time.sleep(down_for)
        self.proc = self._spawn()


class RelayProcess:
    """`pcn relay serve` on a free port, its queues in its own durable Redis (AOF, fsync
    always): the relay outbound-only organisations register as their endpoint."""

    def __init__(
        self, workdir: Path, deployment: Deployment, port: int | None = None, serves: list[str] | None = None
    ) -> None:
        self.deployment = deployment  # the chain it checks senders against
        self.port = port or free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(workdir / "redis", persist=True)
        self.serves = serves
        self.faults = ""
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        pcn = str(Path(sys.executable).parent / "pcn")
        cmd = [pcn, "relay", "serve", "--redis-url", self.redis.url, "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--deployment", str(self.deployment.path), "--rpc-url", self.deployment.rpc_url]
        for a in self.serves or []:
            cmd += ["--serve", a]
        if self.faults:
            cmd += ["--test-faults", self.faults]
        with (self.dir / "relay.log").open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1.0, trust_env=False).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"the relay did not start:\n{_tail(self.dir / 'relay.log')}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL the relay process (its Redis keeps what it accepted)."""
        self.proc.kill()
        self.proc.wait(10)

    def start(self, faults: str = "") -> None:
        """Start it again on the same port; `faults` (test only) makes it misbehave."""
        self.faults = faults
        self.proc = self._spawn()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.redis.stop()


def write_dataset(path: Path, rows: int, seed: int) -> dict[str, np.ndarray]:
    """A synthetic customer table. IDs come from one shared pool of 2·rows customers, so
    every two organisations share about half their customers (what PSI and private query
    need); income is log-normal, region uniform."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"C{k:09d}" for k in rng.choice(2 * rows, rows, replace=False)])
    income = np.round(rng.lognormal(10, 0.6, rows), 2)
    region = rng.choice(REGIONS, rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "income", "region"])
        w.writerows(zip(ids.tolist(), [f"{x:.2f}" for x in income], region.tolist(), strict=True))
    return {"customer_id": ids, "income": income, "region": region}


@dataclass
class Org:
    name: str
    config: OrgConfig
    ctx: NodeContext
    dataset_id: int = 0
    data_file: Path | None = None
    values: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.ctx.address

    @property
    def ledger(self) -> Ledger:
        return self.ctx.ledger

    def node_pid(self, process: str) -> int:
        """The pid of one of this node's processes: "mailbox", "watcher" or "worker" (the Celery master)."""
        return int(json.loads((self.config.data_path / "run" / "node.json").read_text())["pids"][process])

    def process_names(self) -> list[str]:
        """The node's processes by name ("mailbox", "watcher", "worker", "puller" in pull mode)."""
        return sorted(json.loads((self.config.data_path / "run" / "node.json").read_text())["pids"])

    def worker_processes(self) -> list[int]:
        """The Celery pool's worker processes (the ones that run tasks)."""
        out = subprocess.run(["pgrep", "-P", str(self.node_pid("worker"))], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def task_leftovers(self, task_id: int) -> list[str]:
        """What this node still holds of a task besides its result: scratch files and Redis keys
        (the inbox's closed marker aside, which is meant to stay)."""
        scratch = self.ctx.task_dir(task_id)
        files = [str(p) for p in scratch.rglob("*")] if scratch.exists() else []
        markers = ("finishing", "refusing", "lock")
        names = [*intermediate_keys(self.ctx, task_id), *(self.ctx.key(k, task_id) for k in markers)]
        return files + [k for k in names if self.ctx.redis.exists(k)]

    def leftovers_after(self, task_id: int, seconds: float = 5.0) -> list[str]:
        """`task_leftovers` once the node has had `seconds` to clean up. The chain and the log
        show a task final before its worker returns and releases the task lock; `seconds` stays
        well under the lock's 15 s expiry, so a lock that is never released still shows."""
        deadline = time.monotonic() + seconds
        while (left := self.task_leftovers(task_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def progress(self, task_id: int) -> dict[str, str]:
        """This node's live progress record of a task (what its mailbox's progress route serves)."""
        return Progress(self.ctx, task_id).read()


@dataclass
class Network:
    admin: Ledger
    orgs: list[Org]
    redis: RedisServer
    algorithm: bytes  # the stats algorithm's code hash
    algorithms: dict[str, bytes] = field(default_factory=dict)  # every built-in, by name

    def by_name(self, name: str) -> Org:
        return next(o for o in self.orgs if o.name == name)

    def wait_final(self, task_id: int, timeout: float = 120.0) -> TaskStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.admin.task(task_id).status
            if st.is_final and (st is not TaskStatus.COMPLETED or self._all_runners_done(task_id)):
                return st
            time.sleep(0.25)
        logs = {o.name: _tail(o.config.data_path / "logs" / "worker.log") for o in self.orgs}
        raise AssertionError(f"task {task_id} not final after {timeout} s: {self.admin.task(task_id)}\n{logs}")

    def submit_psi(self, requester: str = "bank", bucket_size: int = 1024, algorithm: str = "psi") -> int:
        """Submit and approve a PSI (`algorithm` "psi", in buckets of `bucket_size`, or the
        two-party "psi-ot") of every organisation's registered dataset, the requester receiving
        the intersection; return the task id."""
        sub = submit_task(
            self.by_name(requester).ledger,
            algorithm=algorithm,
            dataset_ids=[o.dataset_id for o in self.orgs],
            params={"bucket_size": bucket_size} if algorithm == "psi" else {},
            recipient=requester,
        )
        approve_all(self, sub.task_id)
        return sub.task_id

    def kill_workers_when_busy(self, org: Org, task_id: int, after: float, delay: float = 0.0) -> bool:
        """SIGKILL `org`'s Celery worker processes `delay` seconds after its run of the task is
        busy in the protocol with progress newer than `after` (a wall-clock time); False if
        the task became final first. Fault tests and bench/faults.py use it."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.admin.task(task_id).status.is_final:
                return False
            p = org.progress(task_id)
            if p.get("phase") in (Phase.RUNNING, Phase.WAITING) and float(p.get("updated", 0)) > after:
                time.sleep(delay)
                for pid in org.worker_processes():
                    os.kill(pid, signal.SIGKILL)
                return True
            time.sleep(0.02)
        raise AssertionError(f"{org.name} never got busy on task {task_id}: {org.progress(task_id)}")

    def _all_runners_done(self, task_id: int) -> bool:
        """The chain says COMPLETED as soon as the last receipt is mined; the node that sent it
        still has to log the receipt and anchor its log. Callers that then read node logs
        must not race that tail, so a completed task is final once every runner says done."""
        participants = {a.lower() for a in self.admin.task_participants(task_id)}
        for o in self.orgs:
            if o.address.lower() in participants:
                if self.admin.participant_state(task_id, o.address) is ParticipantState.DROPPED:
                    continue  # the others went on without it; it owes nothing
                if o.progress(task_id).get("phase") != Phase.DONE:
                    return False
        return True

    def stop(self) -> None:
        for o in self.orgs:
            services.stop(o.config)


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else "<no log>"


def fund(admin: Ledger, address: str, ether: int = 100) -> None:
    w3 = admin.w3
    acct = admin.signer
    tx: dict[str, Any] = {
        "to": address,
        "value": ether * 10**18,
        "gas": 21000,
        "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
        "chainId": admin.chain_id,
        "maxFeePerGas": 2 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    signed = acct.sign_transaction(tx)
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))


def build_network(
    root: Path,
    deployment: Deployment,
    names: list[str],
    rows: int = 1000,
    workers: int = 1,
    epsilon_total: float = 5.0,
    max_uses: int = 20,
    redis_server: RedisServer | None = None,
    kdf_iterations: int = 2**10,
    message_timeout: float = 30.0,
    requeue_after: float = 60.0,
    dropout_after: float = 0.0,
    password_files: bool = False,
    progress: Callable[[str], None] | None = None,
    mailbox_quotas: tuple[int, int] | None = None,
    relay: RelayProcess | None = None,
    outbound_only: tuple[str, ...] = (),
) -> Network:
    """Admit `names` as organisations with fresh keys, register one synthetic dataset each
    and the built-in `stats` algorithm, and start every organisation's node processes.

    With `password_files` each organisation's keystore password is also written to
    ROOT/NAME/keystore-password (mode 0600) and named in its config, so the CLI can act as
    it with nothing in the environment (the demo); otherwise $PCN_KEYSTORE_PASSWORD unlocks it.
    `mailbox_quotas` (task, sender), in bytes, replaces the nodes' default inbox quotas.
    The organisations named in `outbound_only` take part through `relay`: their registered
    endpoint is the relay's, their mailbox listens on a loopback port no peer is told of, and
    their node's puller fetches what the relay holds for them."""
    if outbound_only and relay is None:
        raise ValueError("outbound-only organisations need a relay")
    say = progress or (lambda _msg: None)
    os.environ["PCN_KEYSTORE_PASSWORD"] = PASSWORD
    admin = Ledger(deployment, account=Account.from_key(devnet_key(0)))
    redis_server = redis_server or RedisServer(root / "redis")
    orgs: list[Org] = []
    for name in names:
        port = free_port()
        password_file = _write_password_file(root / name / "keystore-password") if password_files else None
        cfg, keys = init_org(
            root / name / "node.toml",
            name=name,
            rpc_url=deployment.rpc_url,
            deployment=deployment.path,
            redis_url=redis_server.url,
            endpoint=f"http://127.0.0.1:{port}",
            password=PASSWORD,
            workers=workers,
            kdf_iterations=kdf_iterations,
            password_file=password_file,
            relay_url=relay.url if relay is not None and name in outbound_only else "",
            listen_port=port if name in outbound_only else 0,
        )
        cfg.message_timeout = message_timeout
        cfg.requeue_after = requeue_after
        cfg.dropout_after = dropout_after
        if mailbox_quotas is not None:
            cfg.mailbox_task_quota, cfg.mailbox_sender_quota = mailbox_quotas
        cfg.save(Path(cfg.path))
        fund(admin, keys.address)
        admin.admit(keys.address, name, keys.x25519_public, cfg.endpoint)
        orgs.append(Org(name, cfg, NodeContext(cfg)))
        say(f"admitted {name} ({keys.address}), mailbox {cfg.endpoint}")
    algorithms = {name: register_algorithm(orgs[0].ledger, name)[0] for name in BUILTIN}
    for name, code in algorithms.items():  # the consortium admin reviews and approves each
        approve_algorithm(admin, code, dropout_tolerant=protocol_class(name).dropout_tolerant)
    algorithm = algorithms["stats"]
    everyone = [o.address for o in orgs]
    expiry = admin.block_timestamp() + 30 * 24 * 3600
    for i, org in enumerate(orgs):
        org.data_file = root / org.name / f"{org.name}.csv"
        org.values = write_dataset(org.data_file, rows, seed=i + 1)
        local = register_dataset(
            org.ctx,
            org.data_file,
            name=f"{org.name} customers",
            id_column="customer_id",
            limits=PolicyLimits(max_uses, expiry, epsilon_to_fixed(epsilon_total)),
            grants=PolicyGrants(list(algorithms.values()), everyone, everyone),
        )
        org.dataset_id = local.dataset_id
        say(f"{org.name} registered dataset {local.dataset_id}: {rows} rows, root {local.merkle_root[:18]}…")
    net = Network(admin, orgs, redis_server, algorithm, algorithms)
    try:
        services.start_all([org.config for org in orgs], timeout=90)
        for org in orgs:
            say(f"{org.name}'s node is up: mailbox, watcher, {org.config.workers} Celery worker(s)")
    except Exception:
        net.stop()
        redis_server.stop()
        raise
    return net


def _write_password_file(path: Path) -> Path:
    """The devnet password in a file only its owner can read (a new file: never a reused one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(PASSWORD + "\n")
    return path


def approve_all(net: Network, task_id: int) -> None:
    """Every participant owning no input consents (an operator decision: `pcn task consent`),
    then every owner approves."""
    for org in net.orgs:
        if net.admin.task_consents(task_id).get(org.address) is False:
            org.ledger.consent(task_id)
    for org in net.orgs:
        if net.admin.task_approvers(task_id).get(org.address) is False:
            org.ledger.approve(task_id, org.ledger.request_hash(task_id))


def register_rows(net: Network, name: str, header: list[str], rows: list[list[str]], tag: str, uses: int = 10) -> int:
    """Write `rows` as a CSV in `name`'s data directory and register it (every built-in
    algorithm and every member allowed); return the dataset id. The first column is the ID."""
    org = net.by_name(name)
    path = org.config.data_path / f"{tag}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    everyone = [o.address for o in net.orgs]
    expiry = net.admin.block_timestamp() + 30 * 24 * 3600
    return register_dataset(
        org.ctx,
        path,
        name=f"{name} {tag}",
        id_column=header[0],
        limits=PolicyLimits(uses, expiry, 0),
        grants=PolicyGrants(list(net.algorithms.values()), everyone, everyone),
    ).dataset_id
