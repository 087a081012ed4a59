"""Scale-out, shown rather than claimed: every organisation on a host of its own.

Each organisation lives in its own Linux network namespace — its own loopback, its own
`eth0` (one end of a veth pair whose other end is on a bridge in a "switch" namespace),
its own address in a random private 10.a.b.0/24, no route anywhere else. The chain (anvil)
lives in another namespace and listens on that namespace's address only. Every
organisation runs, inside its namespace, its own redis-server (on 127.0.0.1:6379 — the same
address and port everywhere, which on one machine could not work), its own mailbox (on
its own address, port 8700 everywhere), chain watcher and Celery worker, all started with
`pcn node start` under `ip netns exec`. Everything an operator does (`pcn org init`,
`pcn algo register`, `pcn data register`, `pcn node start`, `pcn task submit|approve|result`)
runs as the CLI inside that organisation's namespace; the consortium admin (funding,
admission) and the test's own chain reads run in the root namespace, which has one more
address on the bridge. Only configuration differs from the one-machine demo.

Then a joint-statistics task, a three-party PSI and a vertical logistic regression (bank
as guest, telecom as host) complete across the hosts, checked against the plaintext
computation, every participant receipted; and the isolation is checked, so the success
cannot come from a shortcut over a shared loopback.

The same consortium is built twice more with outbound-only organisations (#17): first the
telecom, then the telecom and the insurer. Such a host accepts no inbound connection at all:
its namespace's firewall (nftables, input hook, policy drop) lets in only loopback traffic
and the replies to connections it opened itself, which the test checks by listing the
ruleset and by a listener on its address that the others cannot reach. Its mailbox listens
on its own loopback, its registered endpoint is a relay on a fourth host (`pcn relay serve`
in a namespace of its own, with its own Redis), and its node's puller fetches from there
over an outbound connection. The same tasks complete and agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from eth_account import Account

from pcn import paths
from pcn.chain.ledger import Ledger
from pcn.chain.types import ParticipantState, TaskStatus
from pcn.devnet.anvil import DEFAULT_MNEMONIC, rpc_call
from pcn.devnet.deploy import deploy, devnet_key
from pcn.runtime import services
from pcn.runtime.config import load_config
from pcn.runtime.operations import algorithm_hash
from tests.nodes import PASSWORD, REGIONS, fund, write_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

IP = shutil.which("ip")
NFT = shutil.which("nft")
if os.geteuid() != 0 or IP is None:
    pytest.skip(
        "needs root and iproute2's `ip` to create network namespaces, veth pairs and a bridge",
        allow_module_level=True,
    )

ORGS = ["bank", "telecom", "insurer"]
ROWS = 500
RPC_PORT = 8545
REDIS_PORT = 6379  # the same in every organisation's namespace
MAILBOX_PORT = 8700  # likewise
RELAY_PORT = 8800
STRAY_PORT = 9099  # a listener the test opens on an outbound-only host's address

LISTENER = r"""
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("listening", flush=True)
time.sleep(600)
"""
PCN = Path(sys.executable).with_name("pcn")
CLEARED = ("PCN_CONFIG", "PCN_HOME", "PCN_DEPLOYMENT", "PCN_RPC_URL", "PCN_REDIS_URL", "PCN_PRIVATE_KEY")
POLICY = """
algorithms = ["stats", "psi"]
requesters = ["bank", "telecom", "insurer"]
recipients = ["bank", "telecom", "insurer"]
max_uses = 10
expires_in_days = 30
epsilon_total = 0
"""
VERTICAL_POLICY = POLICY.replace('["stats", "psi"]', '["hetero-lr"]')

# An outbound-only host's firewall: nothing comes in but loopback traffic and the replies to
# connections the host opened (conntrack); everything else that arrives is dropped unanswered.
NO_INBOUND = """
table inet pcn_no_inbound {
  chain inbound {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
  }
}
"""

# Run inside a namespace: try each target, print what happened (a TCP connect and, for
# http targets, GET /v1/health).
PROBE = r"""
import json, socket, sys, urllib.request
out = {}
for target in sys.argv[1:]:
    if target.startswith("http"):
        try:
            with urllib.request.urlopen(target + "/v1/health", timeout=3) as r:
                out[target] = json.loads(r.read())
        except Exception as exc:
            out[target] = type(exc).__name__ + ": " + str(getattr(exc, "reason", exc))
        continue
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, int(port)))
        out[target] = "open"
    except ConnectionRefusedError:
        out[target] = "refused"
    except OSError as exc:
        out[target] = type(exc).__name__ + ": " + str(exc)
    finally:
        s.close()
print(json.dumps(out))
"""


def run(*cmd: str, timeout: float = 30, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    if "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert IP is not None
    return run(IP, *args, check=check)


def netns_inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


def process_netns_inode(pid: int) -> int:
    return int(os.readlink(f"/proc/{pid}/ns/net").split("[")[1].rstrip("]"))


@dataclass
class Host:
    """One organisation's host: a namespace, an address, a Redis, a node."""

    name: str
    ns: str
    ip: str
    dir: Path
    env: dict[str, str]
    redis: subprocess.Popen[bytes] | None = None
    config: Path | None = None
    address: str = ""
    encryption_key: str = ""
    dataset_id: int = 0
    values: dict[str, np.ndarray] = field(default_factory=dict)
    registered: str = ""  # an outbound-only host's endpoint: its route at the relay

    @property
    def endpoint(self) -> str:
        return self.registered or f"http://{self.ip}:{MAILBOX_PORT}"

    @property
    def outbound_only(self) -> bool:
        return bool(self.registered)

    def exec(self, *cmd: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command on this host (inside its network namespace)."""
        assert IP is not None
        return run(IP, "netns", "exec", self.ns, *cmd, timeout=timeout, check=check, env=self.env)

    def pcn(self, *args: str, timeout: float = 120) -> Any:
        """`pcn … --json` on this host, as this organisation; the parsed output."""
        cmd = [str(PCN), *args]
        if self.config is not None and args[:2] != ("org", "init"):
            cmd += ["--config", str(self.config)]
        proc = self.exec(*cmd, "--json", timeout=timeout)
        assert "Traceback" not in proc.stderr, proc.stderr
        return json.loads(proc.stdout)

    def probe(self, *targets: str) -> dict[str, Any]:
        return json.loads(self.exec(sys.executable, "-c", PROBE, *targets, timeout=60).stdout)


@dataclass
class Consortium:
    tag: str
    subnet: str
    switch_ns: str
    chain_ns: str
    chain_ip: str
    driver_ip: str
    rpc_url: str
    admin: Ledger
    hosts: dict[str, Host]
    relay_ns: str = ""
    relay_ip: str = ""

    def all(self) -> list[Host]:
        return list(self.hosts.values())


def _free_subnet() -> tuple[int, int]:
    """A 10.a.b.0/24 that no address or route on this machine mentions."""
    used = ip("-4", "-o", "addr").stdout + ip("-4", "route").stdout
    rng = random.SystemRandom()
    for _ in range(200):
        a, b = rng.randrange(64, 250), rng.randrange(1, 250)
        if f"10.{a}." not in used:
            return a, b
    raise AssertionError("no free 10.a.b.0/24 subnet found")


class Fabric:
    """Namespaces, veths and a bridge, and every process started in them, undone in reverse."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tag = secrets.token_hex(3)
        self.namespaces: list[str] = []
        self.root_veth = f"pcn{self.tag}h"  # 10 characters (the limit is 15)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.configs: list[Path] = []

    def add_ns(self, role: str) -> str:
        ns = f"pcn-{self.tag}-{role}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def forbid_inbound(self, ns: str) -> None:
        """The namespace accepts no inbound connection (its nftables input hook drops them)."""
        assert NFT is not None, "nft (Debian's nftables) not found: run `make deps`"
        assert IP is not None
        run(IP, "netns", "exec", ns, NFT, "-f", "-", input=NO_INBOUND)

    def wire(self, ns: str, switch: str, address: str, port_name: str) -> None:
        """eth0 in `ns`, its peer `port_name` on the bridge in `switch`."""
        ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port_name, "netns", switch)
        ip("-n", switch, "link", "set", port_name, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")

    def spawn(self, ns: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        assert IP is not None
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [IP, "netns", "exec", ns, *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        errors: list[str] = []
        for cfg in self.configs:  # the nodes' mailboxes, watchers and workers (process groups)
            try:
                services.stop(load_config(cfg))
            except Exception as exc:  # keep cleaning up
                errors.append(f"stop {cfg}: {exc}")
        for proc in reversed(self.procs):  # redis-servers, anvil
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for ns in self.namespaces:  # anything of ours still inside a namespace
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        ip("link", "del", self.root_veth, check=False)
        for ns in reversed(self.namespaces):  # deleting a namespace deletes its veth ends and bridge
            res = ip("netns", "del", ns, check=False)
            if res.returncode != 0:
                errors.append(f"netns del {ns}: {res.stderr.strip()}")
        if errors:
            raise AssertionError("clean-up: " + "; ".join(errors))


def _org_env(host_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(
        {
            "PCN_KEYSTORE_PASSWORD": PASSWORD,
            "PCN_RUN_DIR": str(host_dir / "run"),
            "NO_COLOR": "1",
            "COLUMNS": "250",
        }
    )
    return env


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # not up yet
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout:.0f} s (last: {last!r})")


def _build(fabric: Fabric, root: Path, outbound: tuple[str, ...] = ()) -> Consortium:
    a, b = _free_subnet()
    net = f"10.{a}.{b}"
    switch = fabric.add_ns("sw")
    ip("-n", switch, "link", "add", "br0", "type", "bridge")
    ip("-n", switch, "link", "set", "br0", "up")

    chain_ns = fabric.add_ns("chain")
    chain_ip = f"{net}.1"
    fabric.wire(chain_ns, switch, chain_ip, "chain")
    hosts: dict[str, Host] = {}
    for i, name in enumerate(ORGS):
        ns = fabric.add_ns(name)
        fabric.wire(ns, switch, f"{net}.{11 + i}", name)
        if name in outbound:
            fabric.forbid_inbound(ns)
        host_dir = root / name
        host_dir.mkdir(parents=True)
        hosts[name] = Host(name, ns, f"{net}.{11 + i}", host_dir, _org_env(host_dir))

    # the consortium admin's (and this test's) host: the root namespace, one more port on the bridge
    driver_ip = f"{net}.254"
    ip("link", "add", fabric.root_veth, "type", "veth", "peer", "name", "driver", "netns", switch)
    ip("-n", switch, "link", "set", "driver", "master", "br0", "up")
    ip("addr", "add", f"{driver_ip}/24", "dev", fabric.root_veth)
    ip("link", "set", fabric.root_veth, "up")
    # traffic to the test subnet must leave through our veth and nowhere else
    assert f"dev {fabric.root_veth} " in ip("route", "get", chain_ip).stdout

    # the chain host: anvil on its namespace's address only
    anvil = paths.tool("anvil")
    assert anvil.exists(), f"anvil not found at {anvil}: run `make deps`"
    anvil_cmd = [str(anvil), "--host", chain_ip, "--port", str(RPC_PORT), "--chain-id", "31337", "--accounts", "4"]
    fabric.spawn(chain_ns, [*anvil_cmd, "--mnemonic", DEFAULT_MNEMONIC, "--silent"], root / "anvil.log")
    rpc_url = f"http://{chain_ip}:{RPC_PORT}"
    _wait(lambda: rpc_call(rpc_url, "eth_chainId"), 30, f"anvil at {rpc_url}")
    deployment = deploy(rpc_url, out=root / "deployment.json")
    admin = Ledger(deployment, account=Account.from_key(devnet_key(0)))
    cons = Consortium(fabric.tag, f"{net}.0/24", switch, chain_ns, chain_ip, driver_ip, rpc_url, admin, hosts)

    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"

    relay_url = ""
    if outbound:  # the relay's host: its own namespace, its own durable Redis, `pcn relay serve`
        cons.relay_ns, cons.relay_ip = fabric.add_ns("relay"), f"{net}.5"
        fabric.wire(cons.relay_ns, switch, cons.relay_ip, "relay")
        relay_dir = root / "relay"
        relay_dir.mkdir()
        relay_redis = [redis_server, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", ""]
        relay_redis += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(relay_dir)]
        fabric.spawn(cons.relay_ns, relay_redis, relay_dir / "redis.log")
        relay_url = f"http://{cons.relay_ip}:{RELAY_PORT}"
        relay_dep = relay_dir / "deployment.json"  # the admin hands the relay operator a copy too
        shutil.copy(deployment.path, relay_dep)
        serve = [str(PCN), "relay", "serve", "--host", cons.relay_ip, "--port", str(RELAY_PORT)]
        serve += ["--deployment", str(relay_dep), "--rpc-url", rpc_url]
        serve += ["--redis-url", f"redis://127.0.0.1:{REDIS_PORT}/0"]
        fabric.spawn(cons.relay_ns, serve, relay_dir / "relay.log")
        _wait(
            lambda: httpx.get(f"{relay_url}/v1/health", timeout=2, trust_env=False).status_code == 200, 30, "the relay"
        )

    def init(host: Host) -> None:
        # each organisation's own Redis, on its own loopback
        (host.dir / "redis").mkdir()
        redis_cmd = [redis_server, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", ""]
        redis_cmd += ["--appendonly", "no", "--dir", str(host.dir / "redis")]
        host.redis = fabric.spawn(host.ns, redis_cmd, host.dir / "redis.log")
        _wait(
            lambda: host.exec("redis-cli", "-p", str(REDIS_PORT), "ping", check=False).stdout.strip() == "PONG",
            15,
            f"{host.name}'s redis",
        )
        # the deployment file as the admin hands it to each member (a copy, not a shared path)
        dep = host.dir / "deployment.json"
        shutil.copy(deployment.path, dep)
        if host.name in outbound:  # no inbound: the mailbox on loopback, the relay as its endpoint
            reach = ["--relay-url", relay_url, "--listen-port", str(MAILBOX_PORT)]
        else:
            reach = ["--endpoint", host.endpoint, "--listen-host", host.ip]
        out = host.pcn(
            "org",
            "init",
            "--name",
            host.name,
            *reach,
            "--redis-url",
            f"redis://127.0.0.1:{REDIS_PORT}/0",
            "--rpc-url",
            rpc_url,
            "--deployment",
            str(dep),
            "--workers",
            "1",
            "--config",
            str(host.dir / "node.toml"),
        )
        host.config = Path(out["config"])
        host.address, host.encryption_key = out["address"], out["encryption_key"]
        if host.name in outbound:
            host.registered = out["endpoint"]
            assert host.registered == f"{relay_url}/o/{host.address}"

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(init, hosts.values()))

    for host in hosts.values():  # the admin funds and admits each member (its own transactions, in order)
        fund(admin, host.address)
        admin.admit(host.address, host.name, bytes.fromhex(host.encryption_key[2:]), host.endpoint)

    bank = hosts["bank"]
    for algo in ("stats", "psi"):
        bank.pcn("algo", "register", algo)
        admin.approve_algorithm(algorithm_hash(algo))  # #13.7: the consortium admin approves it

    policy = root / "policy.toml"
    policy.write_text(POLICY)

    def register_and_start(item: tuple[int, Host]) -> None:
        i, host = item
        data = host.dir / f"{host.name}.csv"
        host.values = write_dataset(data, ROWS, seed=100 + i)
        reg = host.pcn(
            "data",
            "register",
            str(data),
            "--name",
            f"{host.name} customers",
            "--id-column",
            "customer_id",
            "--policy",
            str(policy),
        )
        host.dataset_id = int(reg["dataset_id"])
        assert host.config is not None
        fabric.configs.append(host.config)
        started = host.pcn("node", "start", timeout=150)
        assert started["running"] is True and started["mailbox_healthy"] is True, started
        assert started["warnings"] == [], started["warnings"]

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(register_and_start, enumerate(hosts.values())))
    return cons


@pytest.fixture(
    scope="module", params=[(), ("telecom",), ("telecom", "insurer")], ids=["mesh", "telecom-outbound", "two-outbound"]
)
def consortium(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consortium]:
    root = tmp_path_factory.mktemp("scaleout")
    fabric = Fabric(root)
    try:
        cons = _build(fabric, root, request.param)
        yield cons
    finally:
        fabric.close()
    leftovers = [ns for ns in fabric.namespaces if ns in ip("netns", "list").stdout]
    assert not leftovers, f"namespaces left behind: {leftovers}"
    assert ip("link", "show", fabric.root_veth, check=False).returncode != 0


def _logs(cons: Consortium, n: int = 2000) -> str:
    """The tail of every node's worker log, for a failure message."""
    out = []
    for h in cons.all():
        log = h.dir / "data" / "logs" / "worker.log"
        out.append(f"--- {h.name} worker.log\n" + (log.read_text(errors="replace")[-n:] if log.is_file() else "<none>"))
    return "\n".join(out)


def _run_task(
    cons: Consortium,
    requester: str,
    algo: str,
    params: dict[str, Any],
    recipient: str,
    datasets: dict[str, int] | None = None,
) -> int:
    """Submit, approve by every participant, wait for COMPLETED with agreeing receipts.
    `datasets` (organisation name -> dataset id, in the task's order) defaults to every
    organisation's customer table."""
    datasets = datasets or {h.name: h.dataset_id for h in cons.all()}
    parties = [cons.hosts[name] for name in datasets]
    req = cons.hosts[requester]
    params_file = req.dir / f"{algo}-params.json"
    params_file.write_text(json.dumps(params))
    sub = req.pcn(
        "task", "submit", "--algo", algo, "--datasets", ",".join(map(str, datasets.values())),
        "--params", str(params_file), "--recipient", recipient, "--deadline", "30m",
    )  # fmt: skip
    task_id = int(sub["task_id"])
    # the parameters reached every participant's mailbox over the bridge
    assert sub["delivered"] == {h.address: "ok" for h in parties}, sub["delivered"]
    with ThreadPoolExecutor(len(parties)) as pool:
        approvals = list(pool.map(lambda h: h.pcn("task", "approve", str(task_id), "--yes"), parties))
    assert {a["required_approvals"] for a in approvals} == {len(parties)}

    def final() -> TaskStatus | None:
        st = cons.admin.task(task_id).status
        return st if st.is_final else None

    try:
        status = _wait(final, 150, f"task {task_id} final", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_logs(cons)}") from None
    assert status is TaskStatus.COMPLETED, f"{cons.admin.task(task_id)}\n{_logs(cons)}"
    for h in parties:
        assert cons.admin.participant_state(task_id, h.address) is ParticipantState.RECEIPTED, h.name
    # every node reports its part done (asked over HTTP at each mailbox's own address)
    _wait(
        lambda: all(p.get("phase") == "done" for p in req.pcn("task", "status", str(task_id))["participants"]),
        30,
        f"every participant of task {task_id} done",
    )
    receipts = [cons.admin.receipt(task_id, h.address) for h in parties]
    assert len({r.result_hash for r in receipts}) == 1
    assert receipts[0].result_hash == cons.admin.task(task_id).result_hash
    return task_id


def _result(cons: Consortium, recipient: str, task_id: int) -> dict[str, Any]:
    got = cons.hosts[recipient].pcn("task", "result", str(task_id))
    assert got["matches_chain"] is True
    for h in cons.all():  # only the recipient's host holds a result
        held = (h.dir / "data" / "results" / f"{task_id}.sealed").exists()
        assert held is (h.name == recipient), h.name
    return got["result"]  # type: ignore[no-any-return]


def test_joint_statistics_across_hosts(consortium: Consortium) -> None:
    params = {
        "column": "income",
        "group_by": "region",
        "groups": REGIONS,
        "statistics": ["count", "sum", "mean", "variance"],
    }
    task_id = _run_task(consortium, "bank", "stats", params, recipient="bank")
    groups = _result(consortium, "bank", task_id)["groups"]
    income = np.concatenate([h.values["income"] for h in consortium.all()])
    region = np.concatenate([h.values["region"] for h in consortium.all()])
    for g in REGIONS:
        x = income[region == g]
        assert groups[g]["count"] == len(x)
        assert groups[g]["sum"] == pytest.approx(float(np.sum(x)), rel=1e-12)
        assert groups[g]["mean"] == pytest.approx(float(np.mean(x)), rel=1e-12)
        assert groups[g]["variance"] == pytest.approx(float(np.var(x, ddof=1)), rel=1e-9)


def test_three_party_psi_across_hosts(consortium: Consortium) -> None:
    task_id = _run_task(consortium, "telecom", "psi", {}, recipient="telecom")
    result = _result(consortium, "telecom", task_id)
    expected = set.intersection(*(set(h.values["customer_id"].tolist()) for h in consortium.all()))
    assert expected and set(result["ids"]) == expected
    assert result["size"] == len(expected)


def test_hosts_are_isolated(consortium: Consortium) -> None:
    """Every process runs in its organisation's namespace, and the only way between hosts is
    the bridge: no shared loopback, no shared Redis, no route out."""
    hosts = consortium.all()
    for h in hosts:
        assert h.config is not None
        pids = json.loads((load_config(h.config).data_path / "run" / "node.json").read_text())["pids"]
        assert set(pids) == {"mailbox", "watcher", "worker"} | ({"puller"} if h.outbound_only else set())
        for proc, pid in pids.items():
            assert process_netns_inode(int(pid)) == netns_inode(h.ns), f"{h.name}'s {proc} is not in {h.ns}"
        assert h.redis is not None and process_netns_inode(h.redis.pid) == netns_inode(h.ns)
        routes = ip("-n", h.ns, "route").stdout
        assert "default" not in routes and routes.strip().startswith(consortium.subnet), routes

    bank, telecom = consortium.hosts["bank"], consortium.hosts["telecom"]
    loop_redis, loop_mailbox = f"127.0.0.1:{REDIS_PORT}", f"127.0.0.1:{MAILBOX_PORT}"
    seen = bank.probe(
        loop_redis,  # bank's own Redis
        f"{telecom.ip}:{REDIS_PORT}",  # telecom's Redis, from another host
        loop_mailbox,  # no mailbox on bank's loopback: each listens on its host's address
        f"127.0.0.1:{RPC_PORT}",  # nor a chain
        f"http://{telecom.ip}:{MAILBOX_PORT}",  # telecom's mailbox, over the bridge
        f"http://{bank.ip}:{MAILBOX_PORT}",
        f"{consortium.chain_ip}:{RPC_PORT}",
        "198.51.100.1:80",  # anything off the test subnet (a documentation address): no route
    )
    assert seen[loop_redis] == "open"
    if telecom.outbound_only:  # its firewall drops the attempt unanswered
        assert "timed out" in seen[f"{telecom.ip}:{REDIS_PORT}"].lower()
    else:  # telecom's Redis listens on telecom's loopback only
        assert seen[f"{telecom.ip}:{REDIS_PORT}"] == "refused"
    assert seen[loop_mailbox] == "refused"
    assert seen[f"127.0.0.1:{RPC_PORT}"] == "refused"
    if telecom.outbound_only:  # its firewall drops the attempt unanswered; the relay stands for it
        assert "timed out" in str(seen[f"http://{telecom.ip}:{MAILBOX_PORT}"]).lower()
    else:
        assert seen[f"http://{telecom.ip}:{MAILBOX_PORT}"] == {"ok": True, "org": telecom.address}
    assert seen[f"http://{bank.ip}:{MAILBOX_PORT}"] == {"ok": True, "org": bank.address}
    assert seen[f"{consortium.chain_ip}:{RPC_PORT}"] == "open"
    assert "unreachable" in seen["198.51.100.1:80"].lower(), seen["198.51.100.1:80"]

    for h in hosts:
        if not h.outbound_only:
            continue
        # an outbound-only host listens on its own loopback alone (its Redis, its mailbox)
        listening = h.exec("ss", "-ltnH").stdout.split("\n")
        local = [line.split()[3] for line in listening if line.strip()]
        assert local and all(a.startswith(("127.0.0.1:", "[::1]:")) for a in local), (h.name, local)
        # and its namespace enforces it: the input hook drops all but loopback and replies
        assert NFT is not None
        ruleset = " ".join(h.exec(NFT, "list", "ruleset").stdout.split())
        assert "type filter hook input priority filter; policy drop;" in ruleset, ruleset
        assert 'iif "lo" accept ct state established,related accept }' in ruleset, ruleset
        # even a listener on its address is out of the others' reach (reachable from itself)
        listener = subprocess.Popen(
            [IP, "netns", "exec", h.ns, sys.executable, "-c", LISTENER, h.ip, str(STRAY_PORT)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert listener.stdout is not None and listener.stdout.readline().strip() == b"listening"
            stray = f"{h.ip}:{STRAY_PORT}"
            assert h.probe(stray)[stray] == "open"
            assert "timed out" in bank.probe(stray)[stray].lower()
        finally:
            listener.kill()
            listener.wait()
        # the others reach it only at the relay's route, which answers for it
        route = bank.probe(h.endpoint)[h.endpoint]
        assert {k: route[k] for k in ("ok", "org", "relay", "node_online")} == {
            "ok": True,
            "org": h.address,
            "relay": True,
            "node_online": True,  # its puller is fetching
        }, route

    # the same redis://127.0.0.1:6379 in every config, yet one server per host: a value each host
    # writes there is the value it reads back, and the node's keys there are only its own
    cli = ("redis-cli", "-p", str(REDIS_PORT))
    for h in hosts:
        assert load_config(h.config).redis_url == f"redis://127.0.0.1:{REDIS_PORT}/0"  # type: ignore[arg-type]
        h.exec(*cli, "SET", f"scaleout:{consortium.tag}", h.name)
    for h in hosts:
        assert h.exec(*cli, "GET", f"scaleout:{consortium.tag}").stdout.strip() == h.name
        keys = h.exec(*cli, "--scan", "--pattern", "pcn:*").stdout.split()
        assert {k.split(":")[1] for k in keys} <= {h.address.lower()}, (h.name, keys[:5])


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")


def test_vertical_lr_across_hosts(consortium: Consortium) -> None:
    """hetero-lr with the bank as guest (10 features and the label) and the telecom as host (20
    features), over the hosts (through the relay when the telecom is outbound-only): the
    guest's model and every epoch's loss equal the plaintext training of the same model."""
    from sklearn.datasets import load_breast_cancer

    from tests.lr_reference import lr_reference

    x, y = load_breast_cancer(return_X_y=True)
    ids = [f"A{i:04d}" for i in range(len(y))]  # ID order is row order, as in the reference
    bank, telecom = consortium.hosts["bank"], consortium.hosts["telecom"]
    bank.pcn("algo", "register", "hetero-lr")
    consortium.admin.approve_algorithm(algorithm_hash("hetero-lr"))
    policy = bank.dir / "vertical-policy.toml"
    policy.write_text(VERTICAL_POLICY)
    guest_rows = [[i, *(f"{v:.17g}" for v in row[:10]), str(label)] for i, row, label in zip(ids, x, y, strict=True)]
    host_rows = [[i, *(f"{v:.17g}" for v in row[10:])] for i, row in zip(ids, x, strict=True)]
    tables = [
        (bank, ["id", *(f"g{j}" for j in range(10)), "label"], guest_rows),
        (telecom, ["id", *(f"h{j}" for j in range(20))], host_rows),
    ]
    datasets: dict[str, int] = {}
    for host, header, rows in tables:
        path = host.dir / "vertical.csv"
        _write_csv(path, header, rows)
        host_policy = host.dir / "vertical-policy.toml"
        host_policy.write_text(VERTICAL_POLICY)
        reg = host.pcn(
            "data", "register", str(path), "--name", f"{host.name} vertical", "--id-column", "id",
            "--policy", str(host_policy),
        )  # fmt: skip
        datasets[host.name] = int(reg["dataset_id"])

    params = {"label_column": "label", "epochs": 2, "key_bits": 2048, "batch_size": 128, "tol": 0.0, "seed_split": 5}
    task_id = _run_task(consortium, "bank", "hetero-lr", params, recipient="bank", datasets=datasets)
    result = _result(consortium, "bank", task_id)
    ref = lr_reference(x, y.astype(float), [range(0, 10), range(10, 30)], params)
    guest = result["model"]["guest"]
    np.testing.assert_allclose(guest["weights"], ref["weights"][0][:-1], atol=1e-6)
    assert abs(guest["intercept"] - ref["weights"][0][-1]) < 1e-6
    np.testing.assert_allclose([m["loss"] for m in result["metrics"]], ref["losses"], rtol=1e-6)
    assert result["metrics"][-1]["auc"] > 0.95
