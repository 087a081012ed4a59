"""Shared fixtures: one real anvil per test session, pcn deployed once, and a chain
snapshot reverted after every test so tests cannot see each other's transactions."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from pcn.chain.deployment import Deployment
from pcn.chain.ledger import Ledger
from pcn.devnet import anvil
from pcn.devnet.anvil import DevnetStatus, rpc_call
from pcn.devnet.deploy import deploy, devnet_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pcn-run")
    os.environ["PCN_RUN_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def devnet(run_dir: Path) -> Iterator[DevnetStatus]:
    port = free_port()
    st = anvil.up(port=port, state_file=run_dir / "anvil-state.json")
    yield st
    anvil.down(port)


@pytest.fixture(scope="session")
def deployment(devnet: DevnetStatus, run_dir: Path) -> Deployment:
    return deploy(devnet.rpc_url, out=run_dir / "deployment.json")


@pytest.fixture
def snapshot(devnet: DevnetStatus, deployment: Deployment) -> Iterator[None]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    yield
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


@pytest.fixture
def admin(deployment: Deployment, snapshot: None) -> Ledger:
    return Ledger(deployment, account=Account.from_key(devnet_key(0)))


def ledger_for(deployment: Deployment, index: int) -> Ledger:
    return Ledger(deployment, account=Account.from_key(devnet_key(index)))


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PCN_TEST_CPU_REPORT"):  # where the suite's time goes (tests/cpu_report.py)
        from tests.cpu_report import CpuReport

        config.pluginmanager.register(CpuReport(), "pcn-cpu-report")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end modules first (a stable sort keeps each module's tests together): `make test`
    hands whole files to parallel workers in this order, and starting the long ones early keeps
    one worker from running a long module alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
