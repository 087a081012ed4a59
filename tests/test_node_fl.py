"""Federated learning over real nodes: horizontal FedAvg with secure aggregation across
three organisations holding the same features (hospitals' DRG-style model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pcn.chain.errors import ContractRevert
from pcn.chain.types import ParticipantState, TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.devnet.localnet import register_rows
from pcn.runtime import services
from pcn.runtime.operations import read_result, submit_task
from tests.nodes import Network, approve_all, breast_cancer_split, network_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("fl-net")
    yield from network_fixture(
        root,
        deployment,
        ["hospital-a", "hospital-b", "hospital-c", "hospital-d"],
        rows=100,
        dropout_after=10.0,
        requeue_after=5.0,
    )
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
    for i, (o, n) in enumerate(zip(net.orgs[:3], (400, 700, 250), strict=True)):
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
    sub = submit_task(net.orgs[0].ledger, algorithm="fedavg", dataset_ids=ids, params=params, recipient="hospital-a")
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


def test_fedavg_completes_without_a_hospital_whose_node_dies_mid_training(net: Network) -> None:
    """Hospital D's whole node is SIGKILLed after training started. The aggregator (hospital
    A, the recipient) cannot reach it, reports it dropped on chain, unmasks the survivors'
    aggregate from the Shamir shares and finishes; the task completes on three receipts
    (secure aggregation needs the aggregator and two others left). When D's node comes back
    it deletes what it held of the task and owes no receipt."""
    header = ["patient_id", "age_z", "los_z", "cost_z", "readmitted"]
    ids = []
    for i, (o, n) in enumerate(zip(net.orgs, (500, 600, 400, 450), strict=True)):
        rows, _x, _y = _patients(20 + i, n)
        ids.append(register_rows(net, o.name, header, rows, "patients-drop"))
    params = {"label_column": "readmitted", "features": header[1:4], "model": "logreg", "rounds": 8}
    aggregator, *survivors, victim = net.orgs
    # The consortium keeps the on-chain dropout silence below the nodes' message timeout, or the
    # survivors would give up on the aggregator while it waits to be allowed to report.
    net.admin.set_dropout_silence(5)
    sub = submit_task(
        aggregator.ledger,
        algorithm="fedavg",
        dataset_ids=ids,
        params=params,
        recipient=aggregator.name,
        min_survivors=3,  # the owners agree to go on without one hospital
    )
    approve_all(net, sub.task_id)
    deadline = time.monotonic() + 180
    while not aggregator.progress(sub.task_id).get("detail", "").startswith("round 1/"):  # round 1 aggregated
        assert time.monotonic() < deadline, f"training never started: {aggregator.progress(sub.task_id)}"
        time.sleep(0.05)
    for process in ("worker", "mailbox", "watcher"):
        os.killpg(victim.node_pid(process), signal.SIGKILL)

    status = net.wait_final(sub.task_id, timeout=300)
    logs = {o.name: [(e.action, e.data) for e in o.ctx.log.entries() if e.task_id == sub.task_id] for o in net.orgs}
    assert status is TaskStatus.COMPLETED, (net.admin.task(sub.task_id).refusal_reason, logs)
    assert net.admin.participant_state(sub.task_id, victim.address) is ParticipantState.DROPPED
    assert net.admin.dropped_count(sub.task_id) == 1
    reports = [e for e in aggregator.ctx.log.entries() if e.task_id == sub.task_id and e.action == "report-dropout"]
    assert [e.data["party"].lower() for e in reports] == [victim.address.lower()]
    got = read_result(aggregator.ctx, sub.task_id)
    assert got["matches_chain"] is True
    result = got["result"]
    assert victim.address.lower() in {a.lower() for a in result["dropped"]}
    last = result["rounds"][-1]
    assert victim.address.lower() not in {a.lower() for a in last["contributors"]}
    assert result["final"]["accuracy"] >= 0.85  # the survivors' model still learns
    for o in (aggregator, *survivors):  # the last receipt's node logs and cleans up after its transaction
        assert o.leftovers_after(sub.task_id) == []
        actions = [e.action for e in o.ctx.log.entries() if e.task_id == sub.task_id]
        assert actions.count("receipt") == 1

    services.start(victim.config, timeout=90)  # D comes back: the watcher's sweep hands it the task again
    deadline = time.monotonic() + 120
    while victim.progress(sub.task_id).get("phase") != "dropped":
        assert time.monotonic() < deadline, f"D never cleaned up: {victim.progress(sub.task_id)}"
        time.sleep(0.2)
    # "dropped" is the last progress the worker writes; it releases its task lock on returning
    assert victim.leftovers_after(sub.task_id) == []
    assert not [e for e in victim.ctx.log.entries() if e.task_id == sub.task_id and e.action == "receipt"]


def test_vertical_lr_matches_centralised_sklearn_and_predicts_jointly(net: Network) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    guest, host = net.by_name("hospital-a"), net.by_name("hospital-b")
    g, h, x, y, ids = breast_cancer_split(net, "hospital-a", "hospital-b")
    l2 = 0.01
    params = {"label_column": "label", "l2": l2, "epochs": 10, "key_bits": 2048, "batch_size": 128}
    sub = submit_task(guest.ledger, algorithm="hetero-lr", dataset_ids=[g, h], params=params, recipient="hospital-a")
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id, timeout=600) is TaskStatus.COMPLETED
    got = read_result(guest.ctx, sub.task_id)
    assert got["matches_chain"] is True
    metrics = got["result"]["metrics"]
    assert len(metrics) >= 2 and all({"loss", "auc", "ks", "accuracy"} <= set(m) for m in metrics)
    central = LogisticRegression(C=1 / (l2 * len(y)), max_iter=5000).fit(x, y)
    sk_auc = roc_auc_score(y, central.decision_function(x))
    assert abs(metrics[-1]["auc"] - sk_auc) <= 0.01
    # the model stays split: each side holds only its own part, sealed to its own key
    for org in (guest, host):
        assert (org.config.data_path / "models" / f"{sub.task_id}.sealed").is_file()
    # joint scoring of the same aligned rows with the split model
    pred = submit_task(
        guest.ledger,
        algorithm="hetero-lr-predict",
        dataset_ids=[g, h],
        params={"model_task": sub.task_id},
        recipient="hospital-a",
    )
    approve_all(net, pred.task_id)
    assert net.wait_final(pred.task_id, timeout=300) is TaskStatus.COMPLETED
    scored = read_result(guest.ctx, pred.task_id)["result"]
    assert scored["ids"] == sorted(ids) and len(scored["scores"]) == len(ids)
    assert scored["metrics"]["auc"] == pytest.approx(metrics[-1]["auc"], abs=1e-6)


def test_secureboost_trains_over_two_nodes_and_predicts_jointly(net: Network) -> None:
    """hetero-sbt over real nodes (2048-bit Paillier): the guest's validation AUC is within
    0.005 of scikit-learn's HistGradientBoosting with the same hyperparameters, trained on the
    task's training rows and scored on its validation rows (both drawn from the task binding);
    each side keeps only its own part of the model, sealed to its own key; hetero-sbt-predict
    scores the aligned rows with the split model and reproduces the validation AUC."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from pcn.algorithms.hetero_sbt import trees

    guest, host = net.by_name("hospital-a"), net.by_name("hospital-b")
    g, h, x, y, ids = breast_cancer_split(net, "hospital-a", "hospital-b", tag="sbt")
    params = {
        "label_column": "label",
        "trees": 4,
        "max_depth": 3,
        "learning_rate": 0.3,
        "l2": 1.0,
        "validation_fraction": 0.3,
        "key_bits": 2048,
    }
    sub = submit_task(guest.ledger, algorithm="hetero-sbt", dataset_ids=[g, h], params=params, recipient="hospital-a")
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id, timeout=900) is TaskStatus.COMPLETED
    got = read_result(guest.ctx, sub.task_id)
    assert got["matches_chain"] is True
    result = got["result"]
    assert result["trees_built"] == 4 and len(result["metrics"]) == 4
    assert any(n.get("owner") == host.address for t in result["model"]["guest"]["trees"] for n in t)
    assert "threshold" not in json.dumps([n for t in result["model"]["guest"]["trees"] for n in t if "split" in n])
    valid = trees.validation_mask(guest.ledger.task_binding(sub.task_id), result["params"]["seed"], len(y), 0.3)
    central = HistGradientBoostingClassifier(
        max_iter=4, max_depth=3, learning_rate=0.3, l2_regularization=1.0, max_bins=32, min_samples_leaf=20,
        max_leaf_nodes=None, early_stopping=False,
    ).fit(x[~valid], y[~valid])  # fmt: skip
    sk_auc = roc_auc_score(y[valid], central.decision_function(x[valid]))
    ours = result["metrics"][-1]["validation_auc"]
    assert abs(ours - sk_auc) <= 0.005, (ours, sk_auc)
    # the guest's operator saw each tree's metrics in `pcn task status`; the host's did not
    pcn = str(Path(sys.executable).parent / "pcn")

    def status(org: Any, *extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [pcn, "task", "status", str(sub.task_id), "--config", str(org.config.path), *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})

    rows = {r["name"]: r for r in json.loads(status(guest, "--json").stdout)["participants"]}
    assert float(rows["hospital-a"]["own"]["validation_auc"]) == pytest.approx(ours, rel=1e-5)
    assert rows["hospital-a"]["own"]["tree"] == "4" and "own" not in rows["hospital-b"]
    assert "hospital-a's own figures (shown to it alone)" in status(guest).stdout
    host_view = json.loads(status(host, "--json").stdout)["participants"]
    assert all("own" not in r for r in host_view) and all(r.get("phase") == "done" for r in host_view)
    for org in (guest, host):
        assert (org.config.data_path / "models" / f"{sub.task_id}.sealed").is_file()
    pred = submit_task(
        guest.ledger,
        algorithm="hetero-sbt-predict",
        dataset_ids=[g, h],
        params={"model_task": sub.task_id},
        recipient="hospital-a",
    )
    approve_all(net, pred.task_id)
    assert net.wait_final(pred.task_id, timeout=300) is TaskStatus.COMPLETED
    scored = read_result(guest.ctx, pred.task_id)["result"]
    assert scored["ids"] == sorted(ids) and len(scored["scores"]) == len(ids)
    order = np.argsort(ids)  # the scores come in sorted-ID order; ids are in row order
    scores = np.empty(len(ids))
    scores[order] = scored["scores"]
    assert roc_auc_score(y[valid], scores[valid]) == pytest.approx(ours, abs=1e-9)


def test_secureboost_with_two_hosts_over_three_nodes(net: Network) -> None:
    """A guest and two hosts, each host with 10 breast-cancer features in its own row order:
    the task completes, every host's splits appear only as opaque references in the guest's
    result, and the validation AUC is that of a centralised HistGradientBoosting within 0.005."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from pcn.algorithms.hetero_sbt import trees

    x, y = load_breast_cancer(return_X_y=True)
    ids = [f"B{i:04d}" for i in range(len(y))]
    guest, *hosts = net.orgs[:3]
    datasets = []
    for k, org in enumerate(net.orgs[:3]):
        cols = range(10 * k, 10 * k + 10)
        order = np.random.default_rng(k).permutation(len(y))  # each party's own row order
        rows = [[ids[i], *(f"{x[i, c]:.8g}" for c in cols), *([str(y[i])] if k == 0 else [])] for i in order]
        header = ["id", *(f"f{c}" for c in cols), *(["label"] if k == 0 else [])]
        datasets.append(register_rows(net, org.name, header, rows, "sbt3"))
    params = {"label_column": "label", "trees": 3, "max_depth": 3, "learning_rate": 0.3, "l2": 1.0}
    params |= {"validation_fraction": 0.3, "key_bits": 2048}
    sub = submit_task(guest.ledger, algorithm="hetero-sbt", dataset_ids=datasets, params=params, recipient=guest.name)
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id, timeout=900) is TaskStatus.COMPLETED
    got = read_result(guest.ctx, sub.task_id)
    assert got["matches_chain"] is True
    result = got["result"]
    owners = {n.get("owner") for t in result["model"]["guest"]["trees"] for n in t if "owner" in n}
    assert owners <= {"guest", *(h.address for h in hosts)} and len(owners) >= 2
    assert set(result["model"]["host_commitments"]) == {h.address for h in hosts}
    valid = trees.validation_mask(guest.ledger.task_binding(sub.task_id), result["params"]["seed"], len(y), 0.3)
    central = HistGradientBoostingClassifier(
        max_iter=3, max_depth=3, learning_rate=0.3, l2_regularization=1.0, max_bins=32, min_samples_leaf=20,
        max_leaf_nodes=None, early_stopping=False,
    ).fit(x[~valid], y[~valid])  # fmt: skip
    sk_auc = roc_auc_score(y[valid], central.decision_function(x[valid]))
    assert abs(result["metrics"][-1]["validation_auc"] - sk_auc) <= 0.005


def test_a_party_still_working_cannot_be_reported_dropped(net: Network) -> None:
    """#13.5: the recipient of a dropout-tolerant task tries to drop a hospital whose node is
    alive and training. Each non-recipient node posts an on-chain heartbeat every third of the
    consortium's dropout silence, so the chain refuses the report (PartyNotSilent) however long
    the recipient waits; the task completes with every party."""
    header = ["patient_id", "age_z", "los_z", "cost_z", "readmitted"]
    ids = []
    for i, (o, n) in enumerate(zip(net.orgs, (300, 300, 300, 300), strict=True)):
        rows, _x, _y = _patients(40 + i, n)
        ids.append(register_rows(net, o.name, header, rows, "patients-live"))
    params = {"label_column": "readmitted", "features": header[1:4], "model": "logreg", "rounds": 60}
    recipient, *others = net.orgs
    previous = net.admin.dropout_silence()
    net.admin.set_dropout_silence(3)
    try:
        sub = submit_task(
            recipient.ledger, algorithm="fedavg", dataset_ids=ids, params=params, recipient=recipient.name,
            min_survivors=3,
        )  # fmt: skip
        approve_all(net, sub.task_id)
        deadline = time.monotonic() + 180
        while net.admin.task(sub.task_id).status is not TaskStatus.RUNNING or not all(
            net.admin.participant_state(sub.task_id, o.address) is ParticipantState.STARTED for o in net.orgs
        ):
            assert time.monotonic() < deadline, net.admin.task(sub.task_id)
            time.sleep(0.1)
        started = {o.address: net.admin.last_seen(sub.task_id, o.address) for o in others}
        time.sleep(3 * 2 + 1)  # twice the silence: a party that posted nothing since its start is droppable
        assert net.admin.task(sub.task_id).status is TaskStatus.RUNNING, "the training ended too soon to tell"
        for o in others:
            assert net.admin.last_seen(sub.task_id, o.address) > started[o.address], f"{o.name} posted no heartbeat"
            with pytest.raises(ContractRevert) as refused:
                recipient.ledger.report_dropout(sub.task_id, o.address)
            assert refused.value.name == "PartyNotSilent", refused.value
        assert net.wait_final(sub.task_id, timeout=600) is TaskStatus.COMPLETED
        assert net.admin.dropped_count(sub.task_id) == 0
    finally:
        net.admin.set_dropout_silence(previous)
