"""No plaintext on the wire: a capture of ALL loopback traffic (nodes' HTTP, Redis, the
chain's RPC) during a full PSI + statistics + vertical LR + private query run contains none
of the canary IDs and values planted in the input datasets; the same with the telecom
outbound-only behind a relay (#17), whose own store holds none of them either."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from pcn.chain.types import TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.devnet.localnet import RelayProcess, register_rows
from pcn.runtime.operations import read_result, submit_task
from tests.nodes import Network, approve_all, network_fixture

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed (make test installs it)"),
]

CANARY_IDS = ["CANARY-7F3A91-ID", "CANARY-55D0E2-ID"]
CANARY_INCOME = "987654.3217"
CANARY_FEATURE = "31415.926535"


@pytest.fixture(scope="module", params=["direct", "relay"])
def net(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, deployment, devnet
) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("wire-net")
    relay = RelayProcess(root / "relay", deployment) if request.param == "relay" else None
    try:
        kw = {"relay": relay, "outbound_only": ("telecom",)} if relay is not None else {}
        yield from network_fixture(root, deployment, ["bank", "telecom"], rows=50, **kw)
    finally:
        if relay is not None:
            relay.stop()
            # the relay's durable store (its append-only file) holds no canary either
            stored = b"".join(f.read_bytes() for f in (root / "relay" / "redis").rglob("*") if f.is_file())
            assert stored, "the relay's Redis wrote nothing: the run did not go through it"
            for canary in [*CANARY_IDS, CANARY_INCOME, CANARY_FEATURE, "value_columns", "label_column"]:
                assert canary.encode() not in stored, f"{canary} is in the relay's store in plaintext"
        rpc_call(devnet.rpc_url, "evm_revert", [snap])


def _rows(seed: int, n: int) -> tuple[list[list[str]], list[list[str]]]:
    rng = np.random.default_rng(seed)
    ids = [f"W{i:05d}" for i in range(n)] + CANARY_IDS
    income = [f"{v:.4f}" for v in rng.lognormal(10, 0.5, n)] + [CANARY_INCOME, "1234.5"]
    y = [str(int(v)) for v in rng.random(n + 2) < 0.4]
    f1 = [f"{v:.6f}" for v in rng.normal(size=n + 2)]
    f2 = [f"{v:.6f}" for v in rng.normal(size=n + 1)] + [CANARY_FEATURE]
    guest = [[ids[i], income[i], f1[i], y[i]] for i in range(n + 2)]
    host = [[ids[i], f2[i], f"{i % 7}"] for i in range(n + 2)]
    return guest, host


def test_no_canary_crosses_loopback(net: Network, tmp_path: Path) -> None:
    guest_rows, host_rows = _rows(3, 300)
    bank, telecom = net.by_name("bank"), net.by_name("telecom")
    g = register_rows(net, "bank", ["customer_id", "income", "score", "defaulted"], guest_rows, "wire-guest")
    h = register_rows(net, "telecom", ["customer_id", "arrears", "segment"], host_rows, "wire-host")
    pcap = tmp_path / "loopback.pcap"
    capture = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", str(pcap)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    time.sleep(1.0)
    try:
        runs = [
            ("psi", {}),
            ("stats", {"column": "income", "statistics": ["count", "sum", "mean"]}),
            ("hetero-lr", {"label_column": "defaulted", "epochs": 2, "key_bits": 2048, "batch_size": 64}),
            ("private-query", {"value_columns": ["arrears"]}),
        ]
        for algo, params in runs:
            datasets = [g, h]
            if algo == "stats":  # stats over the guest table and telecom's default dataset
                datasets = [g, telecom.dataset_id]
            sub = submit_task(bank.ledger, algorithm=algo, dataset_ids=datasets, params=params, recipient="bank")
            approve_all(net, sub.task_id)
            assert net.wait_final(sub.task_id, timeout=300) is TaskStatus.COMPLETED, algo
            assert read_result(bank.ctx, sub.task_id)["matches_chain"]
    finally:
        time.sleep(0.5)
        capture.send_signal(signal.SIGINT)
        capture.wait(20)
    data = pcap.read_bytes()
    assert len(data) > 100_000, "the capture saw almost nothing: it did not record the run"
    for canary in [*CANARY_IDS, CANARY_INCOME, CANARY_FEATURE]:
        assert canary.encode() not in data, f"{canary} crossed the wire in plaintext"
    # what went between organisations (to mailboxes and the relay): the task parameters too are
    # sealed (their hash is on chain; each node keeps them in its own Redis, also on loopback here)
    links = _between_organisations(net, pcap, tmp_path / "links.pcap")
    assert b"value_columns" not in links and b"label_column" not in links
    # a sanity check that the search can succeed: a string we know was sent in clear (a route)
    assert b"POST /v1/tasks/" in links


def _between_organisations(net: Network, pcap: Path, out: Path) -> bytes:
    """The captured packets to or from a mailbox or the relay (the organisations' links)."""
    ports: set[int] = set()
    for o in net.orgs:
        ports.add(o.config.listen_port or int(urlsplit(o.config.endpoint).port or 0))
        if o.config.relay_url:
            ports.add(int(urlsplit(o.config.relay_url).port or 0))
    selector = " or ".join(f"tcp port {p}" for p in sorted(ports) if p)
    subprocess.run(["tcpdump", "-r", str(pcap), "-w", str(out), selector], check=True, capture_output=True, timeout=60)
    return out.read_bytes()
