"""Outbound-only organisations over real nodes (#17): the telecom registers the relay as its
endpoint, its mailbox listens on a loopback port no peer is told of, and its node's puller
fetches what the relay holds for it. Tasks complete as in a full mesh; the relay, killed and
restarted mid-task, loses nothing and hands nothing over twice."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from pcn.chain.types import ParticipantState, RefusalReason, TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.devnet.localnet import REGIONS, Network, RelayProcess, approve_all, build_network
from pcn.runtime.operations import read_result, submit_task
from pcn.runtime.puller import relay_route
from pcn.runtime.relay import RelayStore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, deployment) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path_factory.mktemp("relay"), deployment)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet, relay: RelayProcess) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("relay-net")
    net = build_network(
        root,
        deployment,
        ["bank", "telecom", "insurer"],
        rows=3000,
        relay=relay,
        outbound_only=("telecom",),
        message_timeout=30.0,
    )
    try:
        yield net
    finally:
        net.stop()
        net.redis.stop()
        rpc_call(devnet.rpc_url, "evm_revert", [snap])


def relay_stats(relay: RelayProcess, org: str) -> dict[str, int]:
    return RelayStore(redis.Redis.from_url(relay.redis.url)).stats().get(org, {})


def drained_stats(relay: RelayProcess, org: str, timeout: float = 30) -> dict[str, int]:
    """The relay's counts once nothing waits for `org`: a task can complete on chain before the
    puller's acknowledgement of the batch that carried its last envelopes reaches the relay."""
    deadline = time.monotonic() + timeout
    while (stats := relay_stats(relay, org)).get("waiting", 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    return stats


def assert_completed_and_agreed(net: Network, task_id: int, timeout: float = 300) -> None:
    assert net.wait_final(task_id, timeout=timeout) is TaskStatus.COMPLETED
    receipts = [net.admin.receipt(task_id, o.address) for o in net.orgs]
    assert len({r.result_hash for r in receipts}) == 1
    for o in net.orgs:
        assert net.admin.participant_state(task_id, o.address) is ParticipantState.RECEIPTED
        assert len([e for e in o.ctx.log.entries() if e.task_id == task_id and e.action == "receipt"]) == 1


def test_the_outbound_only_node_is_reached_only_through_the_relay(net: Network, relay: RelayProcess) -> None:
    telecom = net.by_name("telecom")
    registered = net.admin.organisation(telecom.address).endpoint
    assert registered == relay_route(relay.url, telecom.address)
    assert telecom.config.relay_url == relay.url
    assert str(telecom.config.listen_port) not in registered  # no peer is told where its mailbox listens
    assert "puller" in telecom.process_names() and "puller" not in net.by_name("bank").process_names()
    # its operator's status page asks the relay, as a peer would, whether it sees the node fetching
    pcn = str(Path(sys.executable).parent / "pcn")
    status = subprocess.run(
        [pcn, "node", "status", "--config", str(telecom.config.path), "--json"], capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    seen = json.loads(status.stdout)["relay"]
    assert seen["url"] == relay.url and seen["reachable"] is True and seen["node_online"] is True, seen
    assert "relay" not in json.loads(
        subprocess.run(
            [pcn, "node", "status", "--config", str(net.by_name("bank").config.path), "--json"],
            capture_output=True,
            text=True,
        ).stdout
    )
    page = subprocess.run([pcn, "node", "status", "--config", str(telecom.config.path)], capture_output=True, text=True)
    assert "it sees this node fetching" in " ".join(page.stdout.split())


def test_joint_statistics_with_an_outbound_only_member(net: Network, relay: RelayProcess) -> None:
    before = relay_stats(relay, net.by_name("telecom").address).get("delivered", 0)
    bank = net.by_name("bank")
    params = {"column": "income", "group_by": "region", "groups": REGIONS, "statistics": ["count", "sum", "mean"]}
    sub = submit_task(
        bank.ledger, algorithm="stats", dataset_ids=[o.dataset_id for o in net.orgs], params=params, recipient="bank"
    )
    assert all(v == "ok" for v in sub.delivered.values()), sub.delivered  # the params reached the relay too
    approve_all(net, sub.task_id)
    assert_completed_and_agreed(net, sub.task_id)
    got = read_result(bank.ctx, sub.task_id)
    assert got["matches_chain"] is True
    income = np.concatenate([o.values["income"] for o in net.orgs])
    region = np.concatenate([o.values["region"] for o in net.orgs])
    for g in REGIONS:
        x = income[region == g]
        assert got["result"]["groups"][g]["count"] == len(x)
        assert got["result"]["groups"][g]["sum"] == pytest.approx(float(x.sum()), rel=1e-12)
    stats = drained_stats(relay, net.by_name("telecom").address)
    assert stats["delivered"] > before and stats["waiting"] == 0
    assert stats["refused-envelope"] == 0 and stats["refused-quota"] == 0


def test_the_relay_killed_and_restarted_mid_psi_loses_nothing(net: Network, relay: RelayProcess) -> None:
    """A three-party PSI; the relay process is SIGKILLed while envelopes flow to the telecom
    and comes back 3 s later on the same port: senders retry, what it had accepted is still
    in its Redis, the task completes with the plain intersection."""
    telecom = net.by_name("telecom")
    start = relay_stats(relay, telecom.address).get("accepted", 0)
    task_id = net.submit_psi(bucket_size=1024)
    killed = threading.Event()

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not net.admin.task(task_id).status.is_final:
            if relay_stats(relay, telecom.address).get("accepted", 0) > start + 2:
                relay.kill()
                killed.set()
                time.sleep(3.0)
                relay.start()
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    assert_completed_and_agreed(net, task_id)
    killer.join()
    assert killed.is_set(), "the PSI ended before the relay could be killed"
    expected = set.intersection(*(set(o.values["customer_id"].tolist()) for o in net.orgs))
    assert set(read_result(net.by_name("bank").ctx, task_id)["result"]["ids"]) == expected
    stats = drained_stats(relay, telecom.address)
    assert stats["waiting"] == 0 and stats["accepted"] == stats["delivered"] + stats["expired"]
    # the telecom's inbox took each envelope once: duplicates a retry produced were recognised
    log = Path(telecom.config.data_path / "logs" / "puller.log").read_text()
    assert "refused relayed" not in log


def test_a_vertical_model_with_the_outbound_only_member_as_host(net: Network) -> None:
    from tests.nodes import breast_cancer_split

    g, h, *_ = breast_cancer_split(net, "bank", "telecom", tag="relay")
    params = {"label_column": "label", "epochs": 2, "key_bits": 2048, "batch_size": 128}
    sub = submit_task(
        net.by_name("bank").ledger, algorithm="hetero-lr", dataset_ids=[g, h], params=params, recipient="bank"
    )
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id, timeout=400) is TaskStatus.COMPLETED
    metrics = read_result(net.by_name("bank").ctx, sub.task_id)["result"]["metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[-1]["auc"] > 0.9


def test_an_idle_fetch_is_held_open_then_answered_empty(net: Network, relay: RelayProcess) -> None:
    """Long polling: with nothing waiting, the relay holds a fetch for the time asked (longer
    than its Redis client's default 5 s timeout) and answers an empty list, not an error."""
    import httpx

    from pcn.runtime.reqauth import sign_request

    insurer = net.by_name("insurer")  # serves any organisation; nothing ever waits for the insurer
    path = f"/o/{insurer.address}/fetch"
    began = time.monotonic()
    r = httpx.get(
        relay.url + path, params={"wait": 7}, headers=sign_request(insurer.ctx.keys.account, "GET", path, 0), timeout=30
    )
    assert r.status_code == 200 and r.json() == {"items": []}
    assert time.monotonic() - began >= 6.5


def test_the_requester_reads_the_outbound_only_nodes_progress_through_the_relay(
    net: Network, relay: RelayProcess
) -> None:
    """`pcn task status` (operations.task_progress) asks every participant's registered
    endpoint; the telecom's is the relay, which serves what the telecom's node published, to
    the task's participants and requester only."""
    import httpx
    from eth_account import Account

    from pcn.runtime.operations import task_progress
    from pcn.runtime.reqauth import sign_request

    bank, telecom = net.by_name("bank"), net.by_name("telecom")
    sub = submit_task(
        bank.ledger,
        algorithm="stats",
        dataset_ids=[o.dataset_id for o in net.orgs],
        params={"column": "income", "statistics": ["count"]},
        recipient="bank",
    )
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id) is TaskStatus.COMPLETED
    deadline = time.monotonic() + 20
    while True:
        rows = {r["name"]: r for r in task_progress(bank.ledger, sub.task_id)["participants"]}
        if rows["telecom"].get("phase") == "done" or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert rows["telecom"]["phase"] == "done", rows["telecom"]
    path = f"/o/{telecom.address}/v1/tasks/{sub.task_id}/progress"
    outsider = Account.create()
    r = httpx.get(relay.url + path, headers=sign_request(outsider, "GET", path, sub.task_id), timeout=10)
    assert r.status_code == 403


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param("reorder=1.0,replay=0.5,delay=0.3,delay_seconds=1,seed=3", id="reorder-replay-delay"),
        pytest.param("drop=0.3,seed=5", id="drop"),
    ],
)
def test_a_misbehaving_relay_never_yields_a_wrong_result(net: Network, relay: RelayProcess, faults: str) -> None:
    """The relay (test-only fault mode) shuffles every batch, replays earlier envelopes and
    delays answers, or drops envelopes unseen. Reordering, replays and delays cost time only:
    the puller hands over in order, the inbox drops duplicates, the PSI completes with the
    plain intersection. Drops end in the documented refusal, PEER_UNREACHABLE, before the
    deadline; what any participant receipted is the plain result."""
    telecom = net.by_name("telecom")
    relay.kill()
    relay.start(faults=faults)
    try:
        task_id = net.submit_psi(bucket_size=1024)
        status = net.wait_final(task_id, timeout=300)
        expected = set.intersection(*(set(o.values["customer_id"].tolist()) for o in net.orgs))
        if status is TaskStatus.COMPLETED:
            assert set(read_result(net.by_name("bank").ctx, task_id)["result"]["ids"]) == expected
            assert len({net.admin.receipt(task_id, o.address).result_hash for o in net.orgs}) == 1
        else:
            task = net.admin.task(task_id)
            assert status is TaskStatus.REFUSED and task.refusal_reason is RefusalReason.PEER_UNREACHABLE
            assert task.deadline > net.admin.block_timestamp() + 3000
            # whoever finished before the refusal receipted the one true result
            receipted = [
                o for o in net.orgs if net.admin.participant_state(task_id, o.address) is ParticipantState.RECEIPTED
            ]
            assert len({net.admin.receipt(task_id, o.address).result_hash for o in receipted}) <= 1
            bank = net.by_name("bank")
            if (bank.ctx.results_dir() / f"{task_id}.sealed").exists():
                assert set(read_result(bank.ctx, task_id)["result"]["ids"]) == expected
        dropped = relay_stats(relay, telecom.address).get("dropped-by-fault", 0)
        if "drop" in faults:
            assert dropped > 0 and status is not TaskStatus.COMPLETED
        else:
            assert status is TaskStatus.COMPLETED
    finally:
        relay.kill()
        relay.start()


class ForwardProxy:
    """An outbound HTTP proxy as a bank's network has one: it takes absolute-form requests
    (what a client sends a proxy for an http:// URL), forwards them and records each."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import httpx

        self.seen: list[str] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                seen.append(f"{self.command} {self.path}")
                hop = {"host", "proxy-connection", "connection", "content-length", "keep-alive"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                with httpx.Client(timeout=60, trust_env=False) as c:
                    r = c.request(self.command, self.path, content=body, headers=headers)
                self.send_response(r.status_code)
                self.send_header("content-type", r.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_PUT = _forward

            def log_message(self, *_args: object) -> None:
                """Quiet: the test reads what the proxy forwarded (`seen`), not its access log."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def test_pull_mode_through_an_outbound_proxy(net: Network, relay: RelayProcess) -> None:
    """The telecom's network lets it out only through a proxy (`relay_proxy`): its puller's
    fetches and acknowledgements and its progress go through it, and a task completes."""
    from pcn.runtime import services

    telecom = net.by_name("telecom")
    cfg = telecom.config
    proxy = ForwardProxy()
    services.stop(cfg)
    cfg.relay_proxy = proxy.url
    cfg.save(Path(cfg.path))
    try:
        services.start(cfg, timeout=90)
        bank = net.by_name("bank")
        sub = submit_task(
            bank.ledger,
            algorithm="stats",
            dataset_ids=[o.dataset_id for o in net.orgs],
            params={"column": "income", "statistics": ["count", "sum"]},
            recipient="bank",
        )
        approve_all(net, sub.task_id)
        assert_completed_and_agreed(net, sub.task_id)
        route = relay_route(relay.url, telecom.address)
        assert any(s.startswith(f"GET {route}/fetch") for s in proxy.seen)
        assert any(s.startswith(f"POST {route}/ack/") for s in proxy.seen)
        assert any(s.startswith(f"PUT {route}/progress/{sub.task_id}") for s in proxy.seen)
    finally:
        services.stop(cfg)
        cfg.relay_proxy = ""
        cfg.save(Path(cfg.path))
        services.start(cfg, timeout=90)
        proxy.server.shutdown()
