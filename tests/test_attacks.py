"""Attacks and bad input, at the level a user meets them: the `pcn` CLI, the mailbox as a
node serves it (`pcn.runtime.services.mailbox_app`, over the real chain and Redis), the
regulator's dashboard, and the contracts through the Python ledger. Each gets a clear error
or an on-chain refusal, and nothing already stored is lost.

The cases other test files already cover are listed, with these, in the README's "Attacks
and bad input" table. The world here is cheap: two admitted organisations with one dataset
each and no node processes (the CLI commands under test never need them), a private Redis
for the mailbox, and an empty auditor store for the dashboard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pcn.algorithms.base import Message
from pcn.auditor.indexer import Indexer
from pcn.auditor.store import Store
from pcn.auditor.web import create_dashboard_app
from pcn.auditor.web.siwe import sign_message
from pcn.chain.deployment import Deployment
from pcn.chain.errors import ContractRevert
from pcn.chain.ledger import Ledger
from pcn.chain.types import PolicyGrants, PolicyLimits, epsilon_to_fixed
from pcn.cli.main import app as cli_app
from pcn.crypto import sealed
from pcn.devnet.anvil import DevnetStatus, rpc_call
from pcn.devnet.deploy import devnet_key
from pcn.runtime import services
from pcn.runtime.context import NodeContext
from pcn.runtime.envelope import DOMAIN, canonical_header, seal
from pcn.runtime.inbox import Inbox
from pcn.runtime.operations import approve_algorithm, init_org, register_algorithm, register_dataset, submit_task
from pcn.runtime.reqauth import sign_request
from pcn.runtime.results import result_context
from tests.nodes import PASSWORD, RedisServer, free_port, fund, write_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
PCN = Path(sys.executable).with_name("pcn")
if not PCN.exists():
    PCN = REPO / ".venv" / "bin" / "pcn"

COUNT = {"column": "income", "statistics": ["count", "sum"]}
TOO_BIG = str(2**256)  # one past the largest uint256 id

Proc = subprocess.CompletedProcess[str]


# ---------------------------------------------------------------------------- world


@dataclass
class Member:
    name: str
    config_path: Path
    ctx: NodeContext
    data_file: Path
    dataset_id: int = 0

    @property
    def address(self) -> str:
        return self.ctx.address

    @property
    def cfg(self) -> list[str]:
        return ["--config", str(self.config_path)]


@dataclass
class World:
    root: Path
    deployment: Deployment
    admin: Ledger
    redis: RedisServer
    bank: Member
    telecom: Member
    stats: bytes  # the stats algorithm's code hash
    env: dict[str, str]

    def new_task(self, recipient: str = "bank") -> int:
        sub = submit_task(
            self.bank.ctx.ledger,
            algorithm="stats",
            dataset_ids=[self.bank.dataset_id, self.telecom.dataset_id],
            params=COUNT,
            recipient=recipient,
            push=False,
        )
        return sub.task_id

    def authorised_task(self) -> int:
        """A task both owners approved: mailboxes take its messages (not a Pending one's)."""
        task = self.new_task()
        for org in (self.bank, self.telecom):
            org.ctx.ledger.approve(task, org.ctx.ledger.request_hash(task))
        return task


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, deployment: Deployment, devnet: DevnetStatus) -> Iterator[World]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("attacks")
    redis_server = RedisServer(root / "redis")
    saved = os.environ.get("PCN_KEYSTORE_PASSWORD")
    os.environ["PCN_KEYSTORE_PASSWORD"] = PASSWORD
    try:
        admin = Ledger(deployment, account=Account.from_key(devnet_key(0)))
        members = []
        for name in ("bank", "telecom"):
            path = root / name / "node.toml"
            cfg, keys = init_org(
                path,
                name=name,
                rpc_url=deployment.rpc_url,
                deployment=deployment.path,  # type: ignore[arg-type]
                redis_url=redis_server.url,
                endpoint=f"http://127.0.0.1:{free_port()}",  # nobody listens: no node runs here
                password=PASSWORD,
                kdf_iterations=2**10,
            )
            fund(admin, keys.address)
            admin.admit(keys.address, name, keys.x25519_public, cfg.endpoint)
            members.append(Member(name, path, NodeContext(cfg), root / name / f"{name}.csv"))
        bank, telecom = members
        stats, _ = register_algorithm(bank.ctx.ledger, "stats")
        approve_algorithm(admin, stats)
        everyone = [m.address for m in members]
        expiry = admin.block_timestamp() + 30 * 24 * 3600
        for i, m in enumerate(members):
            write_dataset(m.data_file, 40, seed=i + 1)
            m.dataset_id = register_dataset(
                m.ctx,
                m.data_file,
                name=f"{m.name} customers",
                id_column="customer_id",
                limits=PolicyLimits(10, expiry, epsilon_to_fixed(5.0)),
                grants=PolicyGrants([stats], everyone, everyone),
            ).dataset_id
        env = {k: v for k, v in os.environ.items() if not k.startswith("PCN_")}
        env.update({"PCN_KEYSTORE_PASSWORD": PASSWORD, "NO_COLOR": "1", "COLUMNS": "250"})
        yield World(root, deployment, admin, redis_server, bank, telecom, stats, env)
    finally:
        redis_server.stop()
        if saved is None:
            os.environ.pop("PCN_KEYSTORE_PASSWORD", None)
        else:
            os.environ["PCN_KEYSTORE_PASSWORD"] = saved
        rpc_call(devnet.rpc_url, "evm_revert", [snap])


# ---------------------------------------------------------------------------- CLI plumbing


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout + self.stderr


def cli(world: World, *args: str) -> Run:
    """`pcn ARGS` in this process (the same Typer app as the console script): fast enough to
    try dozens of bad inputs. An exception that escapes the command is a test failure."""
    result = CliRunner(env=world.env).invoke(cli_app, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"pcn {' '.join(args)} raised {result.exception!r}") from result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


def pcn(world: World, *args: str) -> Proc:
    """`pcn ARGS` as a separate process (for what can crash the interpreter itself)."""
    return subprocess.run(
        [str(PCN), *args], env=world.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def pcn_many(world: World, calls: Sequence[Sequence[str]]) -> list[Proc]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: pcn(world, *args), calls))


def refused(run: Run | Proc, code: int = 1) -> str:
    """A clean failure: the exit code, a message, no traceback."""
    rc = run.code if isinstance(run, Run) else run.returncode
    out = run.stdout + run.stderr
    assert rc == code, f"exit {rc}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in out and 'File "' not in out, out
    assert out.strip(), "no message at all"
    return " ".join(out.split())  # rich wraps long lines


def local_state(m: Member) -> dict[str, bytes]:
    """Every file of the organisation's dataset store (index and salts), by relative path."""
    data = m.ctx.config.data_path
    files = [data / "datasets.json", *sorted((data / "salts").glob("*"))]
    return {str(p.relative_to(data)): p.read_bytes() for p in files if p.is_file()}


# ---------------------------------------------------------------------------- HTTP plumbing


@pytest.fixture
def mailbox(world: World) -> Iterator[TestClient]:
    """bank's mailbox exactly as `pcn node start` serves it (a fresh peer cache per test)."""
    saved = os.environ.get("PCN_CONFIG")
    os.environ["PCN_CONFIG"] = str(world.bank.config_path)
    try:
        app = services.mailbox_app()
    finally:
        if saved is None:
            os.environ.pop("PCN_CONFIG", None)
        else:
            os.environ["PCN_CONFIG"] = saved
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def envelope(
    world: World,
    sender: Member,
    task_id: int,
    seq: int,
    payload: bytes,
    *,
    chain_id: int | None = None,
    task_manager: str | None = None,
) -> bytes:
    """A message from `sender` to bank, sealed as a peer's worker seals it."""
    msg = Message(sender.address, world.bank.address, 1, "share", payload, seq)
    return seal(
        msg,
        task_id,
        world.deployment.chain_id if chain_id is None else chain_id,
        task_manager or world.deployment.contracts["TaskManager"].address,
        sender.ctx.keys.account,
        world.bank.ctx.keys.x25519_public,
    )


def post(client: TestClient, task_id: int, body: bytes, what: str = "messages"):
    return client.post(f"/v1/tasks/{task_id}/{what}", content=body)


def inbox_of(world: World, task_id: int) -> list[tuple[str, int, bytes]]:
    inbox = Inbox(world.bank.ctx.redis, world.bank.ctx.key())
    return [(m.sender, m.seq, m.payload) for m in inbox.read(task_id, 0)]


AUDITOR_KEY = devnet_key(1)


@pytest.fixture(scope="module")
def auditor_store(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """An auditor's store with this module's chain indexed; anvil account 1 holds the auditor role."""
    world.admin.grant_auditor(Account.from_key(AUDITOR_KEY).address)
    store = Store(tmp_path_factory.mktemp("attacks-auditor") / "auditor.sqlite")
    try:
        Indexer(Ledger(world.deployment), store, confirmations=0).run_once()
        yield store
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def dashboard(world: World, auditor_store: Store) -> object:
    return create_dashboard_app(auditor_store, Ledger(world.deployment), domain="testserver", login_limit=1000)


def signed_in(app: object) -> TestClient:
    client = TestClient(app, follow_redirects=False, raise_server_exceptions=False)  # type: ignore[arg-type]
    address = Account.from_key(AUDITOR_KEY).address
    message = client.get("/auth/nonce", params={"address": address}).json()["message"]
    r = client.post("/auth/verify", json={"message": message, "signature": sign_message(message, AUDITOR_KEY)})
    assert r.status_code == 200, r.text
    return client


@dataclass
class Served:
    host: str
    port: int

    def raw(self, request: bytes, timeout: float = 10.0) -> bytes:
        """Send raw bytes; the first bytes of the answer (b"" if the server just closed)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            with contextlib.suppress(OSError):  # the server may answer and close before reading it all
                s.sendall(request)
            try:
                return s.recv(4096)
            except ConnectionResetError:
                return b""

    def chunked(self, request_line: bytes, limit: int) -> tuple[int, bytes]:
        """Stream a chunked body of up to `limit` bytes, stopping when the server answers;
        (bytes sent, the answer)."""
        chunk = b"x" * 65536
        frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        sent = 0
        with socket.create_connection((self.host, self.port), timeout=10) as s:
            s.sendall(
                request_line + b" HTTP/1.1\r\nHost: testserver\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            while sent < limit:
                if select.select([s], [], [], 0)[0]:
                    break
                try:
                    s.sendall(frame)
                except OSError:
                    break
                sent += len(chunk)
            try:
                return sent, s.recv(4096)
            except OSError:
                return sent, b""


@contextlib.contextmanager
def serve(app: object) -> Iterator[Served]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served("127.0.0.1", port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ============================================================================ (a) forged and replayed peer messages


def test_mailbox_refuses_forged_and_replayed_messages_and_keeps_what_it_accepted(world: World, mailbox) -> None:
    task = world.authorised_task()
    telecom = world.telecom
    first = envelope(world, telecom, task, 0, b"first share")
    assert post(mailbox, task, first).json() == {"outcome": "new"}

    mallory = Account.create()
    foreign_contract = world.deployment.contracts["Consortium"].address
    attempts = {
        # the very same envelope again (a resumed peer, or someone who recorded it): acknowledged, not stored twice
        "duplicate": (first, 200, None),
        # another payload under a used sequence number
        "replay": (envelope(world, telecom, task, 0, b"other share"), 409, "replay"),
        # telecom's header, signed by a key that is not telecom's
        "forged": (_resign(envelope(world, telecom, task, 1, b"x"), mallory), 401, "bad-signature"),
        # a genuine envelope of this task and sender, but for another chain or another TaskManager
        "other chain": (envelope(world, telecom, task, 1, b"x", chain_id=1), 400, "wrong-domain"),
        "other deployment": (
            envelope(world, telecom, task, 1, b"x", task_manager=foreign_contract),
            400,
            "wrong-domain",
        ),
        # an account the consortium never admitted, signing as itself
        "stranger": (
            seal(
                Message(mallory.address, world.bank.address, 1, "share", b"x", 0),
                task,
                world.deployment.chain_id,
                world.deployment.contracts["TaskManager"].address,
                mallory,
                world.bank.ctx.keys.x25519_public,
            ),
            403,
            "sender-not-active",
        ),
        # a recorded envelope whose header was edited (the sequence number), signature kept
        "edited header": (_edit_header(first, seq=5), 401, "bad-signature"),
    }
    for name, (body, status, code) in attempts.items():
        r = post(mailbox, task, body)
        assert r.status_code == status, (name, r.text)
        if code is not None:
            assert r.json()["error"] == code, (name, r.text)
        assert "Traceback" not in r.text
    # nothing lost, nothing added: exactly the one genuine message
    assert inbox_of(world, task) == [(telecom.address, 0, b"first share")]
    assert post(mailbox, task, envelope(world, telecom, task, 1, b"second share")).status_code == 202


def _split(raw: bytes) -> tuple[bytes, bytes, bytes]:
    hlen = int.from_bytes(raw[:2], "big")
    return raw[2 : 2 + hlen], raw[2 + hlen : 2 + hlen + 65], raw[2 + hlen + 65 :]


def _resign(raw: bytes, account: LocalAccount) -> bytes:
    """The same header and ciphertext, signed by `account` instead of the named sender."""
    header, _sig, ct = _split(raw)
    body = len(header).to_bytes(2, "big") + header + ct
    digest = hashlib.sha256(DOMAIN + body).digest()
    sig = bytes(account.sign_message(encode_defunct(primitive=digest)).signature)
    return len(header).to_bytes(2, "big") + header + sig + ct


def _edit_header(raw: bytes, **changes: object) -> bytes:
    hlen = int.from_bytes(raw[:2], "big")
    header = json.loads(raw[2 : 2 + hlen])
    new = canonical_header({**header, **changes})
    return len(new).to_bytes(2, "big") + new + raw[2 + hlen :]


# ============================================================================ (b) a suspended organisation's messages


def test_mailbox_refuses_a_suspended_organisations_messages(world: World, mailbox, snapshot) -> None:
    """The mailbox asks the chain (through its peer cache, `PeerDirectory.ttl` = 5 s) for the
    sender's status: once the admin suspends telecom, its messages are refused with 403, and
    what telecom delivered while active stays where it was."""
    task = world.authorised_task()
    pending = world.new_task()
    telecom = world.telecom
    assert post(mailbox, task, envelope(world, telecom, task, 0, b"while active")).status_code == 202
    world.admin.suspend(telecom.address)
    suspended_at = time.monotonic()
    seq = 1
    while (r := post(mailbox, task, envelope(world, telecom, task, seq, b"after"))).status_code == 202:
        # accepted only while the cached "active" lasts (at most the directory's 5 s)
        assert time.monotonic() - suspended_at < 6.0, "still accepted long after the suspension"
        seq += 1
        time.sleep(0.25)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "sender-not-active" and "suspended" in r.json()["detail"]
    assert inbox_of(world, task)[0] == (telecom.address, 0, b"while active")
    # and on chain a suspended organisation cannot approve or submit either
    with pytest.raises(ContractRevert):
        telecom.ctx.ledger.approve(pending, telecom.ctx.ledger.request_hash(pending))


# ============================================================================ (c) an EIP-712 approval replayed


def test_approval_signed_for_another_task_manager_is_refused(world: World, snapshot) -> None:
    """The signature binds the TaskManager's address (EIP-712 verifyingContract): an approval
    signed for another deployment on the same chain does not count here. (Another chain id,
    a used nonce and a past deadline: tests/test_policy_and_errors.py and the Foundry tests.)"""
    task = world.new_task()
    telecom = world.telecom.ctx.ledger
    other = dataclasses.replace(
        world.deployment,
        contracts={
            **world.deployment.contracts,
            "TaskManager": dataclasses.replace(
                world.deployment.contracts["TaskManager"],
                address=world.deployment.contracts["DatasetRegistry"].address,
            ),
        },
    )
    elsewhere = Ledger(other, account=telecom.account)
    deadline = telecom.block_timestamp() + 600
    nonce = telecom.approval_nonce(telecom.address)
    foreign = elsewhere.sign_approval(task, telecom.request_hash(task), deadline, nonce=nonce)
    with pytest.raises(ContractRevert) as e:
        world.admin.approve_by_sig(foreign)
    assert e.value.name == "InvalidApprovalSignature"
    assert world.admin.task_approvers(task)[telecom.address] is False
    assert telecom.approval_nonce(telecom.address) == nonce  # the nonce was not used up
    world.admin.approve_by_sig(
        telecom.sign_approval(task, telecom.request_hash(task), deadline)
    )  # the genuine one still works
    assert world.admin.task_approvers(task)[telecom.address] is True


def test_cli_approve_shows_the_request_and_aborts_on_no(world: World, snapshot) -> None:
    """#13.6 (c): `pcn task approve` shows what it approves and signs only after "y"; the
    approval names the request hash, so it cannot land on another task."""
    task = world.new_task()
    telecom = world.telecom
    args = ["task", "approve", str(task), *telecom.cfg]
    result = CliRunner(env=world.env).invoke(cli_app, args, input="n\n", catch_exceptions=False)
    out = " ".join(result.stdout.split())
    assert result.exit_code == 1, out
    for shown in (
        "stats",
        "0x" + telecom.ctx.ledger.task(task).algorithm_hash.hex(),
        f"#{world.bank.dataset_id} v1",
        f"#{telecom.dataset_id} v1",
        "recipient: bank",
        "epsilon: 0.0",
        "0x" + telecom.ctx.ledger.request_hash(task).hex(),
        "approve this request? [y/N]",
        "not approved",
    ):
        assert shown in out, (shown, out)
    assert world.admin.task_approvers(task)[telecom.address] is False  # nothing was signed

    result = CliRunner(env=world.env).invoke(cli_app, args, input="y\n", catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    assert world.admin.task_approvers(task)[telecom.address] is True
    # scripts: --json needs --yes (no prompt can be answered), and then approves
    other = world.new_task()
    assert "--yes" in refused(cli(world, "task", "approve", str(other), "--json", *telecom.cfg))
    done = json.loads(cli(world, "task", "approve", str(other), "--yes", "--json", *telecom.cfg).stdout)
    assert done["approvals"] == 1 and done["request"]["request_hash"] == "0x" + world.admin.request_hash(other).hex()


def test_an_approval_for_another_request_with_the_same_id_is_refused(world: World, snapshot) -> None:
    """#13.6 (b): bank approves task N as it read it; the chain is reset (or reorgs) and task N
    is now a different request. The direct approval and the EIP-712 one both revert."""
    telecom = world.telecom.ctx.ledger
    snap = rpc_call(world.deployment.rpc_url, "evm_snapshot")
    first = world.new_task()
    seen = telecom.computed_request_hash(first)
    signed = telecom.sign_approval(first, seen, telecom.block_timestamp() + 600)
    rpc_call(world.deployment.rpc_url, "evm_revert", [snap])
    again = world.new_task(recipient="telecom")  # another request, the same id
    assert again == first and telecom.request_hash(again) != seen
    with pytest.raises(ContractRevert) as e:
        telecom.approve(again, seen)
    assert e.value.name == "RequestHashMismatch"
    with pytest.raises(ContractRevert) as e:
        world.admin.approve_by_sig(signed)
    assert e.value.name == "RequestHashMismatch"
    assert world.admin.task_approvers(again)[telecom.address] is False


# ============================================================================ (d) a non-recipient fetching a result


def test_a_non_recipient_cannot_read_a_result_even_with_a_copy(world: World) -> None:
    task = world.new_task(recipient="bank")
    telecom = world.telecom
    assert "only the named recipient" in refused(cli(world, "task", "result", str(task), *telecom.cfg))
    # a copy of the recipient's sealed result file does not open with another organisation's key
    doc = json.dumps({"result": "{}", "algorithm": "stats", "commitment": "0x00", "opening": ""}).encode()
    results = telecom.ctx.results_dir()
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{task}.sealed").write_bytes(sealed.seal(world.bank.ctx.keys.x25519_public, doc, result_context(task)))
    out = refused(cli(world, "task", "result", str(task), *telecom.cfg, "--json"))
    assert "OperationError" in out and "cannot open" in out


# ============================================================================ (e) a dataset changed by one byte


def test_a_parquet_dataset_changed_by_one_byte_is_caught(world: World) -> None:
    """CSV files changed by one byte: tests/test_node_refusals.py (refused on chain) and
    tests/test_cli_node.py (`pcn data verify`/`prove`); here the Parquet reader's side."""
    bank = world.bank
    path = bank.ctx.config.data_path / "accounts.parquet"
    table = pa.table({"customer_id": [f"C{i:04d}" for i in range(30)], "balance": [f"{i}.50" for i in range(30)]})
    pq.write_table(table, path, compression="none")
    local = register_dataset(
        bank.ctx,
        path,
        name="accounts",
        id_column="customer_id",
        limits=PolicyLimits(5, world.admin.block_timestamp() + 86400, 0),
        grants=PolicyGrants([world.stats], [bank.address], [bank.address]),
    )
    ds = str(local.dataset_id)
    assert cli(world, "data", "verify", ds, *bank.cfg).code == 0
    raw = bytearray(path.read_bytes())
    at = raw.index(b"C0017")
    raw[at + 4] = ord("8")  # C0017 -> C0018: one byte, still a valid Parquet file
    path.write_bytes(bytes(raw))
    before = local_state(bank)
    out = refused(cli(world, "data", "verify", ds, *bank.cfg))
    assert "FingerprintMismatch" in out and "merkle_root" in out
    assert "FingerprintMismatch" in refused(cli(world, "data", "prove", ds, "--row", "0", *bank.cfg))
    # a byte that breaks the file: still a clean error
    raw[len(raw) - 6] ^= 0xFF  # inside the footer's length / magic
    path.write_bytes(bytes(raw))
    assert "not a readable Parquet file" in refused(cli(world, "data", "verify", ds, *bank.cfg))
    assert local_state(bank) == before  # the registration record and salts are untouched
    assert world.admin.fingerprint(local.dataset_id).merkle_root.hex() == local.merkle_root[2:]


# ============================================================================ (f) malformed CSV, Parquet, params


def _bad_data_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error must say)."""
    folder.mkdir(exist_ok=True)
    good = folder / "good.parquet"
    pq.write_table(pa.table({"customer_id": ["C1", "C2"], "income": [1.0, 2.0]}), good)
    raw = good.read_bytes()
    blobs: dict[str, tuple[str, bytes, str]] = {
        "ragged rows": ("ragged.csv", b"customer_id,income\nC1,10\nC2,20,extra\n", "line 3: row 2 has 3 cells"),
        "bad encoding": ("latin1.csv", "customer_id,city\nC1,Zürich\n".encode("latin-1"), "not valid UTF-8"),
        "missing id column": ("noid.csv", b"id,income\nC1,10\n", "no id column 'customer_id'"),
        "duplicate header": ("dup.csv", b"customer_id,income,income\nC1,1,2\n", "duplicate column name 'income'"),
        "empty csv": ("empty.csv", b"", "the file is empty"),
        "unclosed quote": ("quote.csv", b'customer_id,income\n"C1,10\n', "line 2: malformed CSV"),
        "not parquet": ("text.parquet", b"customer_id,income\nC1,10\n", "not a readable Parquet file"),
        "empty parquet": ("empty.parquet", b"", "not a readable Parquet file"),
        "truncated parquet": ("truncated.parquet", raw[: len(raw) // 2], "not a readable Parquet file"),
        "garbage parquet": ("garbage.parquet", os.urandom(4096), "not a readable Parquet file"),
        "unknown suffix": ("data.txt", b"customer_id\nC1\n", "cannot tell the format"),
    }
    out = {}
    for name, (file, content, message) in blobs.items():
        (folder / file).write_bytes(content)
        out[name] = (folder / file, message)
    binary = folder / "binary.parquet"
    pq.write_table(pa.table({"customer_id": ["C1"], "blob": [b"\x00\x01"]}), binary)
    out["unsupported column type"] = (binary, "column 'blob': column type binary is not supported")
    dup = folder / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["C1"]), pa.array(["x"])], names=["customer_id", "customer_id"]), dup)
    out["duplicate parquet column"] = (dup, "duplicate column name 'customer_id'")
    (folder / "adir.csv").mkdir(exist_ok=True)
    out["a directory"] = (folder / "adir.csv", "is a directory")
    out["missing file"] = (folder / "nowhere.csv", "file not found")
    return out


def test_malformed_data_files_are_refused_and_nothing_is_registered(world: World) -> None:
    bank = world.bank
    policy = world.root / "policy.toml"
    policy.write_text(
        'algorithms = ["stats"]\nrequesters = ["bank"]\nrecipients = ["bank"]\nmax_uses = 3\nexpires_in_days = 5\n'
    )
    cases = _bad_data_files(world.root / "bad-data")
    datasets, before = world.admin.dataset_count(), local_state(bank)
    args = ["--name", "bad", "--id-column", "customer_id", "--policy", str(policy), *bank.cfg]
    for name, (file, message) in cases.items():
        out = refused(cli(world, "data", "register", str(file), *args))
        assert message in out, (name, out)
        assert str(file) in out, (name, out)  # the error names the file
    # an explicit --format that does not match the content
    csv_file = cases["missing id column"][0]
    assert "not a readable Parquet file" in refused(
        cli(world, "data", "register", str(csv_file), "--format", "parquet", *args)
    )
    assert world.admin.dataset_count() == datasets
    assert local_state(bank) == before  # no salt written, no dataset record changed


def test_malformed_params_files_are_refused_before_any_transaction(world: World) -> None:
    """A params file the algorithm would refuse is refused by `pcn task submit` itself: a task
    with it would be approved, spend its datasets' uses and ε, then be refused by every node."""
    bank = world.bank
    folder = world.root / "bad-params"
    folder.mkdir(exist_ok=True)
    files = {
        "invalid JSON": (b'{"column": "income",', "is not valid JSON"),
        "empty": (b"", "is not valid JSON"),
        "not an object": (b'["income"]', "must hold a JSON object, not list"),
        "not UTF-8": ('{"column": "revenu é"}'.encode("latin-1"), "is not UTF-8 text"),
        "unknown key": (json.dumps({**COUNT, "colour": "red"}).encode(), "unknown key(s) ['colour']"),
        "wrong type": (json.dumps({"column": 5}).encode(), "'column'"),
        "wrong list": (json.dumps({"column": "income", "statistics": "count"}).encode(), "'statistics'"),
        "unknown statistic": (json.dumps({"column": "income", "statistics": ["median"]}).encode(), "median"),
        "NaN": (b'{"column": "income", "decimals": NaN}', "decimals"),
    }
    for i, (content, _) in enumerate(files.values()):
        (folder / f"p{i}.json").write_bytes(content)
    tasks = world.admin.task_count()
    datasets = f"{bank.dataset_id},{world.telecom.dataset_id}"
    submit = ["task", "submit", "--datasets", datasets, "--recipient", "bank", *bank.cfg]
    for i, (name, (_, message)) in enumerate(files.items()):
        for algo in ("stats", "0x" + world.stats.hex()):  # by name, and by code hash (kind looked up on chain)
            out = refused(cli(world, *submit, "--algo", algo, "--params", str(folder / f"p{i}.json")))
            assert "InvalidParameters" in out and message in out, (name, algo, out)
    out = refused(cli(world, *submit, "--algo", "stats", "--params", str(folder / "nowhere.json")))
    assert "InvalidParameters" in out and "cannot read parameters file" in out
    assert world.admin.task_count() == tasks  # nothing reached the chain


def test_only_the_requester_hands_out_a_tasks_parameters(world: World) -> None:
    """`pcn task push-params` signs and seals each copy as the requester; another organisation
    (even a participant) is refused before anything is sent, as are parameters whose hash is
    not the chain's (and a mailbox would refuse a copy sealed by anyone but the requester)."""
    from pcn.runtime.operations import submit_task

    bank, telecom = world.bank, world.telecom
    params = world.root / "push-count.json"
    params.write_text(json.dumps(COUNT))
    sub = submit_task(
        bank.ctx.ledger, algorithm="stats", dataset_ids=[bank.dataset_id, telecom.dataset_id], params=COUNT,
        recipient=bank.address, push=False,
    )  # fmt: skip
    push = ["task", "push-params", str(sub.task_id), "--params", str(params)]
    out = refused(cli(world, *push, *telecom.cfg))
    assert "NotRequester" in out and "bank" in out, out
    other = world.root / "push-other.json"
    other.write_text(json.dumps({**COUNT, "statistics": ["count"]}))
    out = refused(cli(world, "task", "push-params", str(sub.task_id), "--params", str(other), *bank.cfg))
    assert "InvalidParameters" in out and "does not hash" in out
    bank.ctx.ledger.cancel(sub.task_id)  # the requester withdraws it: nothing left pending


def test_deeply_nested_files_are_an_error_not_a_crash(world: World) -> None:
    """web3's py_ecc raises the recursion limit to 100000, where json's C decoder overflows
    the C stack on deep nesting: `pcn task submit` and `pcn data check-proof` (a proof file
    anyone may hand over) used to die with SIGSEGV. Separate processes, so a crash is a failure."""
    deep = world.root / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    bank = world.bank
    submit, check = pcn_many(
        world,
        [
            ["task", "submit", "--algo", "stats", "--datasets", str(bank.dataset_id), "--params", str(deep),
             "--recipient", "bank", *bank.cfg],
            ["data", "check-proof", str(deep), "--dataset", str(bank.dataset_id), *bank.cfg],
        ],
    )  # fmt: skip
    out = refused(submit)
    assert "InvalidParameters" in out and "nested too deeply" in out
    out = refused(check)
    assert "DataError" in out and "nested too deeply" in out


# ============================================================================ (g) unknown task and dataset ids


def test_unknown_ids_at_the_cli(world: World) -> None:
    bank, telecom = world.bank, world.telecom
    proof = world.root / "proof.json"
    proof.write_text("{}")
    params = world.root / "count.json"
    params.write_text(json.dumps(COUNT))
    tasks, datasets = world.admin.task_count(), world.admin.dataset_count()
    named = {
        ("task", "status", "999999"): "UnknownTask: no task with id 999999",
        ("task", "approve", "999999"): "UnknownTask",
        ("task", "cancel", "999999"): "UnknownTask",
        ("task", "expire", "999999"): "UnknownTask",
        ("task", "result", "999999"): "no result of task 999999 at this node",
        ("task", "push-params", "999999", "--params", str(params)): "UnknownTask",
        ("data", "usage", "999999"): "UnknownDataset: no dataset with id 999999",
        ("data", "verify", "999999"): "UnknownLocalDataset: this node holds no dataset 999999",
        ("data", "prove", "999999", "--row", "0"): "UnknownLocalDataset",
        ("algo", "approve", "stats", "--dataset", "999999"): "UnknownDataset",
        ("algo", "approve", "stats", "--dataset", str(telecom.dataset_id)): "NotDatasetOwner",
    }
    for args, message in named.items():
        out = refused(cli(world, *args, *bank.cfg))
        assert message in out, (args, out)
    submit = ["task", "submit", "--algo", "stats", "--params", str(params)]
    out = refused(cli(world, *submit, "--datasets", f"{bank.dataset_id},999999", "--recipient", "bank", *bank.cfg))
    assert "UnknownDataset" in out
    # ids past uint256 are usage errors (exit 2), not ABI tracebacks
    too_big = [
        ("task", "status", TOO_BIG),
        ("task", "approve", TOO_BIG),
        ("data", "usage", TOO_BIG),
        ("data", "check-proof", str(proof), "--dataset", TOO_BIG),
    ]
    for args in too_big:
        assert "Invalid value for" in refused(cli(world, *args, *bank.cfg), code=2), args
    out = refused(cli(world, *submit, "--datasets", TOO_BIG, "--recipient", "bank", *bank.cfg))
    assert "--datasets" in out
    assert "greater than or equal to 0" in refused(cli(world, "task", "status", *bank.cfg, "--", "-1"), code=2)
    assert (world.admin.task_count(), world.admin.dataset_count()) == (tasks, datasets)


def test_unknown_ids_at_the_auditor_cli(world: World, auditor_store: Store) -> None:
    store = ["--store", str(auditor_store.url)]
    out = refused(cli(world, "audit", "verify", "999999", *store))
    assert "TaskNotIndexed" in out and "999999" in out
    # the store's ids are SQL integers: larger ones are usage errors, not an OverflowError
    assert "Invalid value for" in refused(cli(world, "audit", "verify", str(2**63), *store), code=2)
    report = ["audit", "report", "--from", "2020-01-01", "--to", "2030-01-01", *store]
    assert "Invalid value for" in refused(cli(world, *report, "--dataset", str(2**63)), code=2)
    assert "out of range" in refused(cli(world, "audit", "report", "--from", "9" * 30, "--to", "2030-01-01", *store))
    assert "no dataset 999999" in refused(cli(world, *report, "--dataset", "999999"))


def test_unknown_task_ids_at_the_mailbox(world: World, mailbox) -> None:
    task = world.new_task()
    bank = world.bank.ctx.keys.account
    for path, status, code in [
        ("/v1/tasks/999999/progress", 404, "unknown-task"),
        (f"/v1/tasks/{TOO_BIG}/progress", 400, "malformed"),
        ("/v1/tasks/abc/progress", 400, "malformed"),
    ]:
        r = mailbox.get(path, headers=sign_request(bank, "GET", path, 999999))
        assert (r.status_code, r.json()["error"]) == (status, code), (path, r.text)
    path = f"/v1/tasks/{task}/progress"
    r = mailbox.get(path)  # progress is answered to signed requests only
    assert (r.status_code, r.json()["error"]) == (401, "unsigned")
    r = mailbox.get(path, headers=sign_request(bank, "GET", path, task))  # a real task nobody has started
    assert r.status_code == 200 and r.json()["task_id"] == task
    from pcn.runtime.operations import params_bytes_of, seal_params

    bank_ledger = world.bank.ctx.ledger  # the requester, handing its parameters to its own mailbox
    r = post(mailbox, 999999, b"x" * 64, "params")
    assert (r.status_code, r.json()["error"]) == (404, "unknown-task")
    r = post(mailbox, 999999, envelope(world, world.telecom, 999999, 0, b"x"))
    assert (r.status_code, r.json()["error"]) == (404, "unknown-task")
    assert inbox_of(world, 999999) == []
    sealed = seal_params(bank_ledger, task, params_bytes_of(COUNT), world.bank.address)
    assert post(mailbox, task, sealed, "params").status_code == 201  # the real one is stored


def test_unknown_ids_at_the_dashboard(world: World, dashboard) -> None:
    c = signed_in(dashboard)
    for path, status in [
        ("/tasks/999999", 404),
        ("/datasets/999999", 404),
        ("/api/tasks/999999", 404),
        ("/api/datasets/999999", 404),
        ("/orgs/0x" + "00" * 20, 404),
        ("/api/orgs/0x" + "00" * 20, 404),
        ("/tx/0x" + "00" * 32, 404),
        ("/datasets/" + "9" * 5000, 400),
        ("/api/tasks/" + "9" * 30, 400),
        ("/tasks?page=" + "9" * 5000, 400),
        ("/reports?from=" + "9" * 5000 + "&to=2030-01-01", 400),  # was a 500
        ("/reports?from=99999999999999999999&to=2030-01-01", 400),
        ("/reports/download?from=" + "9" * 20 + "&to=2030-01-01", 400),
    ]:
        r = c.get(path)
        assert r.status_code == status, (path[:60], r.status_code, r.text[:300])
        assert "Traceback" not in r.text


# ============================================================================ (h) oversized requests


def test_oversized_requests_to_the_dashboard(dashboard) -> None:
    anonymous = TestClient(dashboard, follow_redirects=False, raise_server_exceptions=False)  # type: ignore[arg-type]
    json_type = {"content-type": "application/json"}
    # a huge sign-in body (chunked uploads: over a socket, in the next test)
    r = anonymous.post("/auth/verify", content=b"x" * (20 * 1024 * 1024), headers=json_type)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too-large"
    # very long URLs, signed in or not
    c = signed_in(dashboard)
    for client in (anonymous, c):
        for path in ("/tasks?status=" + "x" * 9000, "/" + "a" * 9000, "/login?next=/" + "a" * 9000):
            r = client.get(path)
            assert r.status_code == 414 and r.json()["error"]["code"] == "uri-too-long", path[:40]
    assert c.get("/tasks?status=" + "x" * 2000).status_code == 400  # long but allowed: an ordinary error
    assert c.get("/api/session").status_code == 200  # and the dashboard is still fine


def test_oversized_requests_to_a_served_dashboard(dashboard) -> None:
    """Over a real socket, as `pcn audit serve` runs it (uvicorn): a declared 100 MB body gets
    413 at once (the server does not wait for it), a 1 MB request line a 4xx, never a hang."""
    with serve(dashboard) as served:
        answer = served.raw(
            b"POST /auth/verify HTTP/1.1\r\nHost: testserver\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n" + b"x" * 65536
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        sent, answer = served.chunked(b"POST /auth/verify", limit=256 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent <= 4 * 1024 * 1024, f"the server read {sent} bytes of a body it was going to refuse"
        answer = served.raw(b"GET /tasks?x=" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: testserver\r\n\r\n")
        assert answer == b"" or answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 414", b"HTTP/1.1 431"), answer[:200]
        answer = served.raw(b"GET /tasks?x=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: testserver\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 414"), answer[:200]
        assert served.raw(b"GET /login HTTP/1.1\r\nHost: testserver\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_oversized_requests_to_the_mailbox(world: World, mailbox) -> None:
    """The body caps of the mailbox (8 MiB per envelope, 1 MiB of parameters and 4 KiB for
    the envelope around them); chunked uploads and the streaming cap are in
    tests/test_messaging.py."""
    task = world.new_task()
    r = post(mailbox, task, b"\x00" * (8 * 1024 * 1024 + 1))
    assert (r.status_code, r.json()["error"]) == (413, "too-large")
    r = post(mailbox, task, b"{" + b" " * (1024 * 1024 + 4096) + b"}", "params")
    assert (r.status_code, r.json()["error"]) == (413, "too-large")
    r = mailbox.get(f"/v1/tasks/{'9' * 5000}/progress")
    assert r.status_code == 400 and r.json()["error"] == "malformed"
    assert inbox_of(world, task) == []
    assert mailbox.get("/v1/health").json()["ok"] is True
