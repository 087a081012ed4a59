"""The hetero-lr (vertical logistic regression) and hetero-lr-predict protocols, driven in-process.

Data: scikit-learn's bundled breast-cancer set (569 rows, 30 features), split by columns
between a guest (10 features + the label) and one host (20) or two hosts (10 + 10), each
party's table in its own row order with an "id" column. Most runs use 1024-bit Paillier
keys for speed (allowed by the params for tests only); one run uses 2048 bits.

The L2 mapping to scikit-learn: hetero-lr minimises (1/n)·Σ loss_i + (l2/2)·‖w‖², which is
LogisticRegression(C) with C = 1 / (l2·n) (sklearn: C·Σ loss_i + ½‖w‖²), except that
hetero-lr uses the second-order Taylor expansion of the logistic loss (FATE's HeteroLR).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from pcn.algorithms.base import Message, PartyContext, ProtocolError, run_local
from pcn.algorithms.hetero_lr.common import epoch_batches, split_key
from pcn.algorithms.hetero_lr.protocol import (
    KIND_EPOCH_END,
    KIND_GRAD,
    KIND_GRAD_PLAIN,
    KIND_RESIDUAL,
    KIND_SETUP,
    HeteroLrProtocol,
    model_commitment,
)
from pcn.algorithms.hetero_lr_predict.protocol import HeteroLrPredictProtocol
from pcn.data.table import Table

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

GUEST = "0xguest"
ONE_HOST = [range(0, 10), range(10, 30)]
TWO_HOSTS = [range(0, 10), range(10, 20), range(20, 30)]
FAST = {"label_column": "y", "key_bits": 1024}

X_RAW, Y = load_breast_cancer(return_X_y=True)
N = len(Y)
IDS = [f"id{i:04d}" for i in range(N)]


def party_names(hosts: int) -> list[str]:
    return [GUEST] + [f"0xhost{i}" for i in range(hosts)]


def make_table(cols: range, label: bool, order_seed: int, rows: Sequence[int] | None = None, ids: list[str] = IDS):
    """The party's columns in its own row order (IDs sorted = original order)."""
    rows = list(range(N)) if rows is None else list(rows)
    order = [rows[i] for i in np.random.default_rng(order_seed).permutation(len(rows))]
    data: dict[str, list[str | None]] = {"id": [ids[i] for i in order]}
    for c in cols:
        data[f"f{c:02d}"] = [repr(float(X_RAW[i, c])) for i in order]
    if label:
        data["y"] = [str(int(Y[i])) for i in order]
    return Table(data)


def make_parties(
    split: list[range],
    params: dict[str, Any],
    task_id: int = 7,
    tables: list[Table] | None = None,
    progress: Callable[[float, str], None] | None = None,
    seed_salt: str = "",
) -> list[HeteroLrProtocol]:
    who = party_names(len(split) - 1)
    tables = tables or [make_table(cols, k == 0, k) for k, cols in enumerate(split)]
    return [
        HeteroLrProtocol(
            PartyContext(
                task_id,
                me,
                who,
                GUEST,
                dict(params),
                hashlib.sha256(f"hlr-seed/{me}/{seed_salt}".encode()).digest(),
                progress if me == GUEST else None,
                id_column="id",
            ),
            table,
        )
        for me, table in zip(who, tables, strict=True)
    ]


def result_of(parties: Sequence[HeteroLrProtocol | HeteroLrPredictProtocol]) -> dict[str, Any]:
    results = [p.result() for p in parties]
    assert [r is not None for r in results] == [p.ctx.me == GUEST for p in parties]  # only the guest
    raw = next(r for r in results if r is not None)
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return json.loads(raw)  # type: ignore[no-any-return]


def check_commitments(parties: Sequence[HeteroLrProtocol | HeteroLrPredictProtocol]) -> None:
    commits = {p.result_commitment() for p in parties}
    assert len(commits) == 1
    guest = next(p for p in parties if p.ctx.me == GUEST)
    raw = guest.result()
    assert raw is not None
    assert type(guest).commitment_for(raw, guest.commitment_opening()) == commits.pop()
    with pytest.raises(ProtocolError):
        type(guest).commitment_for(raw, b"short")


def sklearn_auc(l2: float = 0.01, class_weight: Any = None) -> float:
    xs = (X_RAW - X_RAW.mean(0)) / X_RAW.std(0)
    clf = LogisticRegression(C=1.0 / (l2 * N), class_weight=class_weight, max_iter=10_000).fit(xs, Y)
    return float(roc_auc_score(Y, clf.decision_function(xs)))


def reference(split: list[range], params: dict[str, Any]) -> dict[str, Any]:
    """The same training in plaintext numpy: what the protocol must compute under encryption."""
    p = HeteroLrProtocol.validate_params(params)
    xs = (X_RAW - X_RAW.mean(0)) / X_RAW.std(0)
    parts = [xs[:, list(cols)] for cols in split]
    parts[0] = np.hstack([parts[0], np.ones((N, 1))])
    ws = [np.zeros(x.shape[1]) for x in parts]
    cw = p["class_weight"]
    pos = Y.sum()
    if cw is None:
        s = np.ones(N)
    elif cw == "balanced":
        s = np.where(Y == 1, N / (2 * pos), N / (2 * (N - pos)))
    else:
        s = np.where(Y == 1, cw["1"], cw["0"])
    key = split_key(p["seed_split"])
    losses: list[float] = []
    for epoch in range(p["epochs"]):
        for b in epoch_batches(key, epoch, N, p["batch_size"]):
            z = sum(x[b] @ w for x, w in zip(parts, ws, strict=True))
            d = s[b] * (0.25 * z + 0.5 - Y[b])
            for k, (x, w) in enumerate(zip(parts, ws, strict=True)):
                g = x[b].T @ d / len(b)
                reg = w.copy()
                if k == 0:
                    reg[-1] = 0.0
                ws[k] = w - p["learning_rate"] * (g + p["l2"] * reg)
        z = sum(x @ w for x, w in zip(parts, ws, strict=True))
        loss = float(np.mean(s * (np.log(2) - 0.5 * (2 * Y - 1) * z + 0.125 * z * z)))
        loss += 0.5 * p["l2"] * (float(ws[0][:-1] @ ws[0][:-1]) + sum(float(w @ w) for w in ws[1:]))
        losses.append(loss)
        if epoch >= 1 and abs(losses[-2] - loss) < p["tol"]:
            break
    return {"weights": ws, "losses": losses, "scores": z}


def states_by_party(parties: Sequence[HeteroLrProtocol]) -> dict[str, dict[str, Any]]:
    return {p.ctx.me: p.model_state() for p in parties}


def assert_matches_reference(result: dict[str, Any], states: dict[str, dict[str, Any]], ref: dict[str, Any]) -> None:
    guest = result["model"]["guest"]
    np.testing.assert_allclose(guest["weights"], ref["weights"][0][:-1], atol=1e-6)
    assert abs(guest["intercept"] - ref["weights"][0][-1]) < 1e-6
    hosts = result["hosts"]
    for k, h in enumerate(hosts, start=1):
        np.testing.assert_allclose(states[h]["weights"], ref["weights"][k], atol=1e-6)
    np.testing.assert_allclose([m["loss"] for m in result["metrics"]], ref["losses"], rtol=1e-6)


# -- trained models shared by several tests -----------------------------------------------------


@pytest.fixture(scope="module")
def one_host() -> tuple[list[HeteroLrProtocol], dict[str, Any], list[tuple[float, str]]]:
    reports: list[tuple[float, str]] = []
    params = {**FAST, "epochs": 10, "tol": 0.0, "seed_split": 11}
    parties = make_parties(ONE_HOST, params, progress=lambda f, w: reports.append((f, w)))
    run_local(parties, shuffle_seed=3)
    return parties, params, reports


@pytest.fixture(scope="module")
def two_hosts() -> tuple[list[HeteroLrProtocol], dict[str, Any]]:
    params = {**FAST, "epochs": 10, "tol": 0.0, "seed_split": 12}
    parties = make_parties(TWO_HOSTS, params, task_id=8)
    run_local(parties, shuffle_seed=4)
    return parties, params


def test_one_host_auc_within_001_of_sklearn(one_host: Any) -> None:
    parties, _, reports = one_host
    result = result_of(parties)
    final = result["metrics"][-1]
    assert abs(final["auc"] - sklearn_auc(0.01)) <= 0.01
    assert final["auc"] > 0.99 and final["accuracy"] > 0.95 and final["ks"] > 0.9
    assert result["epochs_run"] == 10 and result["stopped"] == "max_epochs"
    assert [m["epoch"] for m in result["metrics"]] == list(range(1, 11))
    for m in result["metrics"]:
        assert set(m) == {"epoch", "loss", "log_loss", "auc", "ks", "accuracy"}
    losses = [m["loss"] for m in result["metrics"]]
    assert losses == sorted(losses, reverse=True)  # the Taylor objective decreases
    assert result["features"] == {"guest": [f"f{c:02d}" for c in range(10)], "hosts": {"0xhost0": 20}}
    assert result["params"]["l2"] == 0.01 and result["rows"] == N
    # #13.9: progress names each evaluated epoch but carries no metric (result-derived values
    # would reach every participant and the requester) and no row count (a PSI's size)
    epoch_reports = [w for _, w in reports if w.endswith("evaluated")]
    assert epoch_reports == [f"epoch {e}/10 evaluated" for e in range(1, 11)]
    text = "\n".join(w for _, w in reports)
    for word in ("loss", "AUC", "KS", "accuracy", " rows"):
        assert word not in text, (word, text)
    for m in result["metrics"]:
        for key in ("loss", "auc", "ks", "accuracy"):
            assert f"{m[key]:.4f}" not in text
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_one_host_equals_plaintext_training(one_host: Any) -> None:
    parties, params, _ = one_host
    assert_matches_reference(result_of(parties), states_by_party(parties), reference(ONE_HOST, params))


def test_commitments_and_split_model(one_host: Any) -> None:
    parties, _, _ = one_host
    check_commitments(parties)
    result = result_of(parties)
    guest, host = parties
    gs, hs = guest.model_state(), host.model_state()
    json.dumps(gs), json.dumps(hs)  # JSON-serialisable
    assert gs["role"] == "guest" and hs["role"] == "host"
    assert len(gs["weights"]) == 10 and len(hs["weights"]) == 20 and len(hs["mean"]) == len(hs["std"]) == 20
    assert set(result["model"]) == {"guest", "host_commitments"}  # the host's weights stay at the host
    assert result["model"]["host_commitments"] == {"0xhost0": model_commitment(hs).hex()}
    assert gs["host_commitments"] == result["model"]["host_commitments"]
    assert result["model"]["guest"]["weights"] == gs["weights"]
    np.testing.assert_allclose(hs["mean"], X_RAW[:, 10:30].mean(0))
    assert host.result() is None
    assert host.checkpoint_epoch == 9 and guest.checkpoint_epoch == 9


def test_two_hosts_auc_and_plaintext_equivalence(two_hosts: Any) -> None:
    parties, params = two_hosts
    result = result_of(parties)
    assert abs(result["metrics"][-1]["auc"] - sklearn_auc(0.01)) <= 0.01
    assert result["features"]["hosts"] == {"0xhost0": 10, "0xhost1": 10}
    assert_matches_reference(result, states_by_party(parties), reference(TWO_HOSTS, params))
    check_commitments(parties)


def test_class_weight_balanced_two_hosts() -> None:
    params = {**FAST, "epochs": 3, "class_weight": "balanced", "seed_split": 5, "batch_size": 128}
    parties = make_parties(TWO_HOSTS, params, task_id=9)
    run_local(parties, shuffle_seed=1)
    result = result_of(parties)
    assert result["params"]["class_weight"] == "balanced"
    assert_matches_reference(result, states_by_party(parties), reference(TWO_HOSTS, params))
    assert abs(result["metrics"][-1]["auc"] - sklearn_auc(0.01, "balanced")) <= 0.01
    check_commitments(parties)


def test_class_weight_dict_one_host() -> None:
    params = {**FAST, "epochs": 2, "class_weight": {"0": 2.0, "1": 0.5}, "seed_split": 6, "batch_size": -1}
    parties = make_parties(ONE_HOST, params, task_id=10)
    run_local(parties)
    assert_matches_reference(result_of(parties), states_by_party(parties), reference(ONE_HOST, params))


def test_early_stopping() -> None:
    params = {**FAST, "epochs": 10, "tol": 0.5, "seed_split": 1}
    parties = make_parties(ONE_HOST, params, task_id=11)
    run_local(parties)
    result = result_of(parties)
    assert result["stopped"] == "converged" and result["epochs_run"] == 2 < params["epochs"]
    assert len(result["metrics"]) == 2
    check_commitments(parties)


def test_transcript_is_deterministic_and_order_independent() -> None:
    params = {**FAST, "epochs": 2, "batch_size": 128}
    runs = []
    for shuffle in (1, 2):
        parties = make_parties(TWO_HOSTS, params, task_id=12)
        transcript = run_local(parties, shuffle_seed=shuffle)
        links: dict[tuple[str, str], list[Message]] = {}
        for m in transcript:
            links.setdefault((m.sender, m.receiver), []).append(m)
        runs.append((links, parties[0].result(), [p.result_commitment() for p in parties]))
    assert runs[0] == runs[1]
    # a different seed gives different ciphertexts (fresh keys and randomness)
    other = make_parties(TWO_HOSTS, params, task_id=12, seed_salt="x")
    transcript = run_local(other)
    assert transcript[0].payload != runs[0][0][(transcript[0].sender, transcript[0].receiver)][0].payload


# -- checkpoints and resumption ------------------------------------------------------------------


def drive(
    parties: dict[str, HeteroLrProtocol],
    initial: list[Message],
    crash: tuple[str, Callable[[HeteroLrProtocol], bool]] | None = None,
    lose_output: bool = False,
) -> None:
    """run_local with the runtime's inbox semantics: per-link FIFO, duplicates (a replaying
    party re-sending a sequence number already delivered) are dropped after checking they
    are byte-identical. With `crash` = (party, when), that party's worker is killed once
    `when(party)` holds after a delivery and resumed from its last checkpoint: the runtime
    replays the messages it received from `resume_from` on. With `lose_output`, the worker
    dies before delivering what it sent in that last call."""
    queues: dict[tuple[str, str], deque[Message]] = {}
    sent: dict[tuple[str, str, int], Message] = {}
    delivered: dict[str, list[Message]] = {me: [] for me in parties}
    for me, p in parties.items():
        for sender, seq in p.resume_from.items():
            for s in range(seq):
                sent[(sender, me, s)] = Message(sender, me, -1, "already-delivered", b"", s)

    def post(msgs: list[Message]) -> None:
        for m in msgs:
            key = (m.sender, m.receiver, m.seq)
            if key in sent:
                if sent[key].kind != "already-delivered":
                    assert sent[key] == m, "a replayed message differs from the original"
                continue
            sent[key] = m
            queues.setdefault((m.sender, m.receiver), deque()).append(m)

    post(initial)
    crashed = False
    while True:
        links = [k for k, q in queues.items() if q]
        if not links:
            break
        msg = queues[links[0]].popleft()
        receiver = parties[msg.receiver]
        delivered[msg.receiver].append(msg)
        out = receiver.receive(msg)
        if crash is not None and not crashed and msg.receiver == crash[0] and crash[1](receiver):
            crashed = True
            if not lose_output:
                post(out)
            blob = receiver.checkpoint()
            assert blob is not None
            new = HeteroLrProtocol.resume(receiver.ctx, receiver.data, blob)
            parties[msg.receiver] = new
            post(new.start())
            for old in delivered[msg.receiver]:
                if old.seq >= new.resume_from.get(old.sender, 0):
                    post(new.receive(old))
        else:
            post(out)
    assert crash is None or crashed
    assert all(p.done for p in parties.values())


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[list[HeteroLrProtocol], dict[tuple[str, int], bytes], dict[str, Any]]:
    params = {**FAST, "epochs": 4, "tol": 0.0, "batch_size": 128}
    saved: dict[tuple[str, int], bytes] = {}
    HeteroLrProtocol.checkpoint_store = lambda task, me, epoch, blob: saved.__setitem__((me, epoch), blob)
    try:
        parties = make_parties(TWO_HOSTS, params, task_id=13)
        run_local(parties)
    finally:
        HeteroLrProtocol.checkpoint_store = None
    return parties, saved, params


def test_checkpoint_every_epoch(uninterrupted: Any) -> None:
    parties, saved, _ = uninterrupted
    assert sorted(saved) == sorted((p.ctx.me, e) for p in parties for e in (1, 2, 3))
    for p in parties:
        assert p.checkpoint() == saved[(p.ctx.me, 3)] and p.checkpoint_epoch == 3
        state = json.loads(saved[(p.ctx.me, 2)])
        assert state["epoch"] == 2 and state["party"] == p.ctx.me


def test_resume_all_parties_from_epoch_2(uninterrupted: Any) -> None:
    parties, saved, params = uninterrupted
    resumed = {
        p.ctx.me: HeteroLrProtocol.resume(p.ctx, p.data, saved[(p.ctx.me, 2)])
        for p in make_parties(TWO_HOSTS, params, task_id=13)
    }
    initial = [m for p in resumed.values() for m in p.start()]
    drive(resumed, initial)
    assert resumed[GUEST].result() == parties[0].result()
    assert [resumed[p.ctx.me].result_commitment() for p in parties] == [p.result_commitment() for p in parties]
    assert [resumed[p.ctx.me].model_state() for p in parties] == [p.model_state() for p in parties]
    assert len(json.loads(resumed[GUEST].result() or b"")["metrics"]) == 4


@pytest.mark.parametrize("victim", [GUEST, "0xhost0", "0xhost1"])
def test_worker_killed_mid_epoch_resumes_from_checkpoint(uninterrupted: Any, victim: str) -> None:
    parties, _, params = uninterrupted
    fresh = {p.ctx.me: p for p in make_parties(TWO_HOSTS, params, task_id=13)}
    seen: dict[str, int] = {}

    def when(p: HeteroLrProtocol) -> bool:  # in epoch 3, a few messages after the epoch-2 checkpoint
        if p.checkpoint_epoch == 2:
            seen[victim] = seen.get(victim, 0) + 1
        return seen.get(victim, 0) >= 4

    drive(fresh, [m for p in fresh.values() for m in p.start()], crash=(victim, when))
    assert fresh[victim].checkpoint_epoch == 3  # the resumed object went on to the end
    assert fresh[GUEST].result() == parties[0].result()
    assert [fresh[p.ctx.me].model_state() for p in parties] == [p.model_state() for p in parties]


@pytest.mark.parametrize("victim", [GUEST, "0xhost1"])
def test_worker_killed_at_the_checkpoint_before_delivering(uninterrupted: Any, victim: str) -> None:
    """The checkpoint hook ran, then the worker died before its messages of that call left."""
    parties, _, params = uninterrupted
    fresh = {p.ctx.me: p for p in make_parties(TWO_HOSTS, params, task_id=13)}
    drive(fresh, [m for p in fresh.values() for m in p.start()], (victim, lambda p: p.checkpoint_epoch == 2), True)
    assert fresh[GUEST].result() == parties[0].result()
    assert [fresh[p.ctx.me].model_state() for p in parties] == [p.model_state() for p in parties]


def test_bad_checkpoint_is_refused(uninterrupted: Any) -> None:
    _, saved, params = uninterrupted
    host = make_parties(TWO_HOSTS, params, task_id=13)[1]
    with pytest.raises(ProtocolError, match="another task or party"):
        HeteroLrProtocol.resume(host.ctx, host.data, saved[(GUEST, 2)])
    other = make_parties(TWO_HOSTS, {**params, "l2": 0.1}, task_id=13)[1]
    with pytest.raises(ProtocolError, match="different params"):
        HeteroLrProtocol.resume(other.ctx, other.data, saved[("0xhost0", 2)])
    with pytest.raises(ProtocolError, match="not JSON"):
        HeteroLrProtocol.resume(host.ctx, host.data, b"\x00garbage")


# -- prediction ----------------------------------------------------------------------------------


def predict_parties(
    train: Sequence[HeteroLrProtocol], split: list[range], rows: Sequence[int] | None = None, task_id: int = 100
) -> list[HeteroLrPredictProtocol]:
    model_task = train[0].ctx.task_id
    who = [p.ctx.me for p in train]
    tables = [make_table(cols, k == 0, 50 + k, rows) for k, cols in enumerate(split)]
    return [
        HeteroLrPredictProtocol(
            PartyContext(
                task_id,
                me,
                who,
                GUEST,
                {"model_task": model_task},
                hashlib.sha256(me.encode()).digest(),
                id_column="id",
            ),
            table,
        )
        for me, table in zip(who, tables, strict=True)
    ]


@pytest.fixture
def model_store(one_host: Any, two_hosts: Any) -> Iterator[dict[tuple[int, str], dict[str, Any]]]:
    store = {(p.ctx.task_id, p.ctx.me): p.model_state() for p in [*one_host[0], *two_hosts[0]]}
    HeteroLrPredictProtocol.model_store = lambda task, me: store[(task, me)]
    yield store
    HeteroLrPredictProtocol.model_store = None


@pytest.mark.parametrize("which", ["one_host", "two_hosts"])
def test_predict_reproduces_training_scores(model_store: Any, which: str, request: pytest.FixtureRequest) -> None:
    train = request.getfixturevalue(which)[0]
    split = ONE_HOST if which == "one_host" else TWO_HOSTS
    predict = predict_parties(train, split)
    run_local(predict, shuffle_seed=2)
    out = result_of(predict)
    trained = result_of(train)
    assert out["ids"] == IDS and out["rows"] == N and out["model_task"] == train[0].ctx.task_id
    # the training run's final metrics are those of these scores
    final = trained["metrics"][-1]
    for key in ("auc", "ks", "accuracy", "log_loss"):
        assert abs(out["metrics"][key] - final[key]) < 1e-9, key
    # and the scores are the joint model's, computed here from every party's model state
    z = np.zeros(N)
    for p in train:
        s = p.model_state()
        cols = [int(c[1:]) for c in s["features"]]
        z += (X_RAW[:, cols] - s["mean"]) / s["std"] @ np.array(s["weights"]) + s.get("intercept", 0.0)
    np.testing.assert_allclose(out["scores"], 1 / (1 + np.exp(-z)), atol=1e-9)
    check_commitments(predict)


def test_predict_new_rows_without_labels(model_store: Any, one_host: Any) -> None:
    rows = list(range(0, N, 3))
    predict = predict_parties(one_host[0], ONE_HOST, rows=rows)
    tables = [p.data for p in predict]
    guest_table = Table({c: tables[0].column(c) for c in tables[0].names if c != "y"})
    predict[0] = HeteroLrPredictProtocol(predict[0].ctx, guest_table)
    run_local(predict)
    out = result_of(predict)
    assert out["rows"] == len(rows) and out["metrics"] is None and len(out["scores"]) == len(rows)
    assert all(0.0 < s < 1.0 for s in out["scores"])


def test_predict_refuses_a_changed_host_model(model_store: Any, one_host: Any) -> None:
    key = (one_host[0][1].ctx.task_id, "0xhost0")
    original = model_store[key]
    model_store[key] = {**original, "weights": [w * 1.01 for w in original["weights"]]}
    try:
        predict = predict_parties(one_host[0], ONE_HOST)
        with pytest.raises(ProtocolError, match="model other than the one it committed"):
            run_local(predict)
    finally:
        model_store[key] = original


def test_predict_refusals(model_store: Any, one_host: Any) -> None:
    with pytest.raises(ProtocolError, match="model_task"):
        HeteroLrPredictProtocol.validate_params({"model_task": "7"})
    with pytest.raises(ProtocolError, match="unknown key"):
        HeteroLrPredictProtocol.validate_params({"model_task": 7, "x": 1})
    predict = predict_parties(one_host[0], ONE_HOST)
    ctx = replace(predict[0].ctx, params={"model_task": 999})
    with pytest.raises(ProtocolError, match="no hetero-lr model of task 999"):
        HeteroLrPredictProtocol(ctx, predict[0].data)
    # the hosts' rows must be the guest's
    predict = predict_parties(one_host[0], ONE_HOST)
    predict[1] = HeteroLrPredictProtocol(predict[1].ctx, make_table(ONE_HOST[1], False, 9, rows=range(1, N)))
    with pytest.raises(ProtocolError, match="not aligned, run PSI first"):
        run_local(predict)
    # a host's table lacking a model column
    bad = Table({"id": IDS, "f10": ["1"] * N})
    with pytest.raises(ProtocolError, match="not in the dataset"):
        HeteroLrPredictProtocol(predict[1].ctx, bad)


# -- refusals --------------------------------------------------------------------------------------


def test_misaligned_ids_are_refused() -> None:
    tables = [make_table(ONE_HOST[0], True, 0), make_table(ONE_HOST[1], False, 1, rows=range(1, N))]
    parties = make_parties(ONE_HOST, FAST, tables=tables)
    with pytest.raises(ProtocolError, match="datasets are not aligned, run PSI first"):
        run_local(parties)
    other_ids = [*IDS[:-1], "someone-else"]
    tables = [make_table(ONE_HOST[0], True, 0), make_table(ONE_HOST[1], False, 1, ids=other_ids)]
    with pytest.raises(ProtocolError, match="datasets are not aligned, run PSI first"):
        run_local(make_parties(ONE_HOST, FAST, tables=tables))
    dup = make_table(ONE_HOST[1], False, 1, ids=[IDS[1], *IDS[1:]])
    with pytest.raises(ProtocolError, match="appears twice"):
        make_parties(ONE_HOST, FAST, tables=[make_table(ONE_HOST[0], True, 0), dup])


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"key_bits": 1024},
        {"label_column": "y", "learning_rate": 0},
        {"label_column": "y", "learning_rate": "0.1"},
        {"label_column": "y", "l2": -1},
        {"label_column": "y", "batch_size": 0},
        {"label_column": "y", "batch_size": 8},
        {"label_column": "y", "epochs": 0},
        {"label_column": "y", "epochs": True},
        {"label_column": "y", "tol": float("nan")},
        {"label_column": "y", "class_weight": "auto"},
        {"label_column": "y", "class_weight": {"0": 1.0}},
        {"label_column": "y", "class_weight": {"0": 1.0, "1": -2}},
        {"label_column": "y", "standardize": "yes"},
        {"label_column": "y", "key_bits": 512},
        {"label_column": "y", "seed_split": -1},
        {"label_column": "y", "features": ["f00"]},
        {"label_column": "y", "features": {"0xguest": ["y"]}},
        {"label_column": "y", "features": {"0xguest": ["f00", "f00"]}},
        {"label_column": "y", "unknown": 1},
    ],
)
def test_invalid_params_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="invalid hetero-lr params"):
        HeteroLrProtocol.validate_params(params)


def test_defaults() -> None:
    p = HeteroLrProtocol.validate_params({"label_column": "y"})
    assert p == {
        "label_column": "y",
        "features": {},
        "learning_rate": 0.15,
        "l2": 0.01,
        "batch_size": 256,
        "epochs": 10,
        "tol": 1e-4,
        "class_weight": None,
        "standardize": True,
        "key_bits": 2048,
        "seed_split": None,
    }


def test_refusals_that_need_the_data_or_the_peers() -> None:
    with pytest.raises(ProtocolError, match="non-participant"):
        make_parties(ONE_HOST, {**FAST, "features": {"0xnobody": ["f00"]}})
    with pytest.raises(ProtocolError, match="not in the dataset"):
        make_parties(ONE_HOST, {**FAST, "features": {"0xhost0": ["f00"]}})
    with pytest.raises(ProtocolError, match="no label column"):
        make_parties(ONE_HOST, {**FAST, "label_column": "outcome"})
    bad_label = Table({"id": IDS, "f00": ["1"] * N, "y": ["2"] * N})
    with pytest.raises(ProtocolError, match="only 0 and 1"):
        make_parties(ONE_HOST, FAST, tables=[bad_label, make_table(ONE_HOST[1], False, 1)])
    # batches no larger than a party's feature count would let that party solve for residuals
    parties = make_parties(ONE_HOST, {**FAST, "batch_size": 16})
    with pytest.raises(ProtocolError, match="not larger than the 20 features"):
        run_local(parties)
    # an explicit feature list is honoured
    parties = make_parties(ONE_HOST, {**FAST, "epochs": 1, "features": {"0xhost0": ["f10", "f11"]}})
    run_local(parties)
    assert result_of(parties)["features"]["hosts"] == {"0xhost0": 2}


# -- tampering -------------------------------------------------------------------------------------


def run_tampered(pick: Callable[[Message], bool], change: Callable[[Message], Message], hosts: int = 1) -> None:
    split = ONE_HOST if hosts == 1 else TWO_HOSTS
    parties = {p.ctx.me: p for p in make_parties(split, {**FAST, "epochs": 2, "batch_size": 128}, task_id=14)}
    queue: deque[Message] = deque(m for p in parties.values() for m in p.start())
    done = False
    while queue:
        m = queue.popleft()
        if not done and pick(m):
            m, done = change(m), True
        queue.extend(parties[m.receiver].receive(m))
    raise AssertionError("the tampered run finished without an error")


def with_payload(m: Message, payload: bytes) -> Message:
    return replace(m, payload=payload)


@pytest.mark.parametrize(
    ("pick", "change", "match"),
    [
        (
            lambda m: m.kind == KIND_SETUP and m.sender == GUEST,
            lambda m: with_payload(m, m.payload.replace(b'"role":"guest"', b'"role":"host"')),
            "role",
        ),
        (
            lambda m: m.kind == KIND_SETUP and m.sender == "0xhost0",
            lambda m: with_payload(m, m.payload[:-5]),
            "not JSON",
        ),
        (
            lambda m: m.kind == KIND_SETUP and m.sender == "0xhost0",
            lambda m: with_payload(m, m.payload[:8] + b"[" * 200_000 + b"]" * 200_000),  # overflows json unguarded
            "not JSON",
        ),
        (lambda m: m.kind == KIND_RESIDUAL, lambda m: with_payload(m, m.payload[:-1]), "bytes, expected"),
        (
            lambda m: m.kind == KIND_RESIDUAL,
            lambda m: with_payload(m, m.payload[:8] + bytes(len(m.payload) - 8)),
            "out of range",
        ),
        (
            lambda m: m.kind == KIND_GRAD_PLAIN,
            lambda m: with_payload(m, m.payload[:8] + b"\xff" * (len(m.payload) - 8)),
            "not reduced",
        ),
        (lambda m: m.kind == KIND_EPOCH_END, lambda m: with_payload(m, m.payload[:8] + b"\x02"), "expected one byte"),
        (lambda m: m.kind == KIND_GRAD, lambda m: replace(m, kind=KIND_RESIDUAL), "unexpected"),
        (lambda m: m.kind == KIND_GRAD, lambda m: replace(m, round=m.round + 1), "impossible round"),
        (lambda m: m.kind == KIND_RESIDUAL and m.seq > 3, lambda m: replace(m, seq=m.seq - 1), "where #"),
        (lambda m: m.kind == KIND_RESIDUAL, lambda m: replace(m, sender="0xmallory"), "not a peer"),
        (
            lambda m: m.kind == KIND_RESIDUAL,
            lambda m: with_payload(m, b"\x00\x00\x00\x01\x00\x00\x00\x01"),
            "where part 0",
        ),
    ],
    ids=[
        "setup-role",
        "setup-truncated",
        "setup-nested-200k-deep",
        "residual-truncated",
        "residual-zero-ciphertexts",
        "gradient-residue-out-of-range",
        "epoch-end-flag",
        "wrong-kind",
        "wrong-round",
        "replayed-seq",
        "unknown-sender",
        "bad-frame",
    ],
)
def test_tampered_messages_are_refused(
    pick: Callable[[Message], bool], change: Callable[[Message], Message], match: str
) -> None:
    with pytest.raises(ProtocolError, match=match):
        run_tampered(pick, change)


def test_parallel_map_gives_the_same_run() -> None:
    """The runtime's process pool (here: a pickling map) splits X^T·[[d]] by rows; the
    result is byte-identical to the serial run."""

    def pickling_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return [pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(x))))) for x in items]

    params = {**FAST, "epochs": 1}
    serial = make_parties(ONE_HOST, params, task_id=17)
    t_serial = run_local(serial)
    parallel = make_parties(ONE_HOST, params, task_id=17)
    calls: list[int] = []
    for p in parallel:
        p.ctx.parallel_map = lambda fn, items: calls.append(len(items)) or pickling_map(fn, items)
    t_parallel = run_local(parallel)
    assert calls and t_serial == t_parallel
    assert parallel[0].result() == serial[0].result()


def test_tampered_contribution_between_hosts() -> None:
    with pytest.raises(ProtocolError, match="contribution"):
        run_tampered(lambda m: m.kind == "contrib", lambda m: with_payload(m, m.payload[:-3]), hosts=2)


def test_replayed_message_is_refused() -> None:
    parties = {p.ctx.me: p for p in make_parties(ONE_HOST, {**FAST, "epochs": 1}, task_id=15)}
    queue: deque[Message] = deque(m for p in parties.values() for m in p.start())
    first = queue[0]
    queue.extend(parties[first.receiver].receive(queue.popleft()))
    with pytest.raises(ProtocolError, match="where #1 was expected"):
        parties[first.receiver].receive(first)


# -- a full-size key ----------------------------------------------------------------------------------


def test_2048_bit_keys() -> None:
    params = {"label_column": "y", "epochs": 3, "tol": 0.0, "seed_split": 3}
    parties = make_parties(ONE_HOST, params, task_id=16)
    run_local(parties, shuffle_seed=1)
    result = result_of(parties)
    assert result["params"]["key_bits"] == 2048
    assert_matches_reference(result, states_by_party(parties), reference(ONE_HOST, params))
    assert abs(result["metrics"][-1]["auc"] - sklearn_auc(0.01)) <= 0.01
    check_commitments(parties)
