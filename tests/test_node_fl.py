"""Federated learning over real nodes: horizontal FedAvg with secure aggregation across
three organisations holding the same features (hospitals' DRG-style model)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from pcn.chain.types import TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.devnet.localnet import register_rows
from pcn.runtime.operations import read_result, submit_task
from tests.nodes import Network, approve_all, network_fixture

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("fl-net")
    yield from network_fixture(root, deployment, ["hospital-a", "hospital-b", "hospital-c"], rows=100)
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


def _patients(seed: int, n: int) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (x @ np.array([1.5, -2.0, 0.7]) + 0.3 + rng.normal(scale=0.3, size=n) > 0).astype(int)
    rows = [[f"P{seed}-{i}", *(f"{v:.6f}" for v in x[i]), str(y[i])] for i in range(n)]
    return rows, x, y


def test_fedavg_logreg_learns_across_three_hospitals(net: Network) -> None:
    header = ["patient_id", "age_z", "los_z", "cost_z", "readmitted"]
    ids, xs, ys = [], [], []
    for i, (o, n) in enumerate(zip(net.orgs, (400, 700, 250), strict=True)):
        rows, x, y = _patients(i + 1, n)
        ids.append(register_rows(net, o.name, header, rows, "patients"))
        xs.append(x)
        ys.append(y)
    params = {
        "label_column": "readmitted",
        "features": header[1:4],
        "model": "logreg",
        "rounds": 5,
        "learning_rate": 0.5,
        "batch_size": 32,
    }
    sub = submit_task(
        net.orgs[0].ledger, algorithm="fedavg", dataset_ids=ids, params=params, recipient="hospital-a"
    )
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id, timeout=600) is TaskStatus.COMPLETED
    got = read_result(net.orgs[0].ctx, sub.task_id)
    assert got["matches_chain"] is True
    result = got["result"]
    assert result["final"]["accuracy"] >= 0.9
    assert not result["dropped"]
    # the model the recipient holds scores the pooled data as well as its reported accuracy says
    from pcn.algorithms.fedavg.model import predict_proba

    x, y = np.vstack(xs), np.concatenate(ys)
    accuracy = float(np.mean((predict_proba(result["model"], x) > 0.5) == y))
    assert accuracy == pytest.approx(result["final"]["accuracy"], abs=0.01)
    w = np.array(result["model"]["layers"][0]["weights"]).ravel()
    assert np.sign(w).tolist() == [1.0, -1.0, 1.0]
