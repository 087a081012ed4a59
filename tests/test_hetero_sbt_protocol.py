"""The hetero-sbt (vertical SecureBoost) protocol, driven in-process, against the plaintext
reference of the same trees (`pcn.algorithms.hetero_sbt.reference`) and scikit-learn.

Data: scikit-learn's breast-cancer set (569 rows, 30 features) with FATE's guest/host column
split (guest: the first 10 columns + the label; host: the other 20) or a 2-host split
(10 + 10 + 10), each party's table in its own row order with an "id" column; a synthetic
regression set. Runs use 1024-bit Paillier keys for speed (the test-only allowance
`params.TEST_ONLY_KEY_BITS`; a node refuses them).
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

from pcn.algorithms.base import (
    Message,
    ModelUnavailable,
    PartyContext,
    ProtocolError,
    TaskServices,
    local_binding,
    run_local,
)
from pcn.algorithms.hetero_sbt import params as sbt_params
from pcn.algorithms.hetero_sbt import reference, trees
from pcn.algorithms.hetero_sbt.protocol import (
    COMMITMENT,
    KIND_GRADIENTS,
    KIND_HISTOGRAMS,
    KIND_LEVEL_END,
    KIND_PARTITIONS,
    KIND_REQUESTS,
    KIND_SETUP,
    KIND_TREE_END,
    HeteroSbtGuest,
    HeteroSbtHost,
    HeteroSbtProtocol,
)
from pcn.algorithms.hetero_sbt.trees import model_commitment
from pcn.algorithms.hetero_sbt_predict.protocol import (
    KIND_DECISIONS,
    HeteroSbtPredictGuest,
    HeteroSbtPredictHost,
    HeteroSbtPredictProtocol,
)
from pcn.data.table import Table
from tests.protocol_runs import drive, party_services

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

GUEST = "0xguest"
ONE_HOST = [range(0, 10), range(10, 30)]  # FATE's breast-cancer split
TWO_HOSTS = [range(0, 10), range(10, 20), range(20, 30)]
FAST = {"label_column": "y", "key_bits": 1024}

X_BC, Y_BC = load_breast_cancer(return_X_y=True)


@pytest.fixture(scope="module", autouse=True)
def allow_1024_bit_keys_for_speed() -> Iterator[None]:
    """1024-bit keys make these runs fast; a node never has this allowance."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sbt_params, "TEST_ONLY_KEY_BITS", (1024,))
        yield


def synthetic_regression(n: int = 400, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, d))
    y = 3.0 * X[:, 0] - 2.0 * (X[:, 3] > 0.2) + X[:, 1] * X[:, 4] + rng.normal(scale=0.3, size=n)
    return X, y


def party_names(hosts: int) -> list[str]:
    return [GUEST] + [f"0xhost{i}" for i in range(hosts)]


def make_table(X: np.ndarray, y: np.ndarray, cols: range, label: bool, order_seed: int) -> Table:
    """The party's columns in its own row order (IDs sorted = original order)."""
    n = len(y)
    order = np.random.default_rng(order_seed).permutation(n)
    data: dict[str, list[str | None]] = {"id": [f"id{i:04d}" for i in order]}
    for c in cols:
        data[f"f{c:02d}"] = [repr(float(X[i, c])) for i in order]
    if label:
        data["y"] = [repr(float(y[i])) if not float(y[i]).is_integer() else str(int(y[i])) for i in order]
    return Table(data)


def make_parties(
    split: list[range],
    params: dict[str, Any],
    task_id: int = 7,
    data: tuple[np.ndarray, np.ndarray] = (X_BC, Y_BC),
    progress: Callable[[float, str], None] | None = None,
    checkpoints: dict[tuple[str, int], bytes] | None = None,
    seed_salt: str = "",
    operator: dict[str, list[dict[str, str]]] | None = None,
) -> list[HeteroSbtProtocol]:
    """`operator` collects, per party, the figures it showed its own operator."""
    who = party_names(len(split) - 1)
    X, y = data

    return [
        HeteroSbtProtocol.create(
            PartyContext(
                task_id,
                me,
                who,
                GUEST,
                dict(params),
                hashlib.sha256(f"sbt-seed/{me}/{seed_salt}".encode()).digest(),
                progress if me == GUEST else None,
                id_column="id",
                services=party_services(me, checkpoints, operator),
            ),
            make_table(X, y, cols, k == 0, k),
        )
        for k, (me, cols) in enumerate(zip(who, split, strict=True))
    ]


def result_of(parties: Sequence[HeteroSbtProtocol]) -> dict[str, Any]:
    results = [p.result() for p in parties]
    assert [r is not None for r in results] == [p.ctx.me == GUEST for p in parties]
    raw = next(r for r in results if r is not None)
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return json.loads(raw)  # type: ignore[no-any-return]


def reference_of(
    parties: Sequence[HeteroSbtProtocol],
    split: list[range],
    params: dict[str, Any],
    data: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """The plaintext reference on the same columns, hosts' columns in their secret order."""
    X, y = data
    cols: list[tuple[str, list[str], np.ndarray]] = []
    for p, rng in zip(parties, split, strict=True):
        names = [f"f{c:02d}" for c in rng]
        if isinstance(p, HeteroSbtHost):
            names = [names[i] for i in p._order]
        cols.append(("guest" if p.ctx.me == GUEST else p.ctx.me, names, X[:, [int(n[1:]) for n in names]]))
    return reference.train(cols, y, params, local_binding(parties[0].ctx.task_id))


def resolved_trees(result: dict[str, Any], parties: Sequence[HeteroSbtProtocol]) -> list[list[dict[str, Any]]]:
    """The guest's trees with every host split replaced by the host's (feature, threshold)."""
    tables = {p.ctx.me: {s["id"]: s for s in p.model_state()["splits"]} for p in parties if p.ctx.me != GUEST}
    out = []
    for tree in result["model"]["guest"]["trees"]:
        nodes = []
        for node in tree:
            node = dict(node)
            if "split" in node:
                s = tables[node["owner"]][node.pop("split")]
                node.update({"feature": s["feature"], "threshold": s["threshold"]})
            nodes.append(node)
        out.append(nodes)
    return out


def check_commitments(parties: Sequence[HeteroSbtProtocol]) -> None:
    commits = {p.result_commitment() for p in parties}
    assert len(commits) == 1
    guest = next(p for p in parties if p.ctx.me == GUEST)
    result = guest.result()
    assert result is not None
    assert HeteroSbtProtocol.commitment_for(result, guest.commitment_opening()) == commits.pop()
    stated = json.loads(result)["model"]["host_commitments"]
    for p in parties:
        if p.ctx.me != GUEST:
            assert stated[p.ctx.me] == model_commitment(p.model_state()).hex()


# -- the reference, sklearn and the result ---------------------------------------------------------

BC_PARAMS = {**FAST, "trees": 6, "max_depth": 3, "learning_rate": 0.3, "l2": 1.0, "validation_fraction": 0.3}


OPERATOR: dict[str, list[dict[str, str]]] = {}  # what each party of `one_host` showed its own operator


@pytest.fixture(scope="module")
def one_host() -> tuple[list[HeteroSbtProtocol], dict[str, Any], list[tuple[float, str]]]:
    seen: list[tuple[float, str]] = []
    parties = make_parties(ONE_HOST, BC_PARAMS, progress=lambda f, t: seen.append((f, t)), operator=OPERATOR)
    run_local(parties)
    return parties, result_of(parties), seen


def test_the_guest_shows_its_operator_each_trees_metrics_and_nobody_else_sees_them(one_host: Any) -> None:
    """Per tree, the guest (the recipient) shows its own operator the train and validation
    metrics its result will hold; the host shows nothing, and the shared progress text carries
    no metric (README #13.9)."""
    _parties, result, seen = one_host
    shown = OPERATOR[GUEST]
    assert [int(f["tree"]) for f in shown] == [m["tree"] for m in result["metrics"]] == list(range(1, 7))
    for figures, m in zip(shown, result["metrics"], strict=True):
        assert set(figures) == set(m) and "validation_auc" in figures and "train_auc" in figures
        for key, value in m.items():
            assert float(figures[key]) == pytest.approx(value, rel=1e-5), key
    assert OPERATOR.get("0xhost0", []) == []
    assert all("auc" not in text.lower() and "loss" not in text.lower() for _, text in seen)


def test_one_host_equals_the_plaintext_reference(one_host: Any) -> None:
    parties, result, _ = one_host
    ref = reference_of(parties, ONE_HOST, BC_PARAMS, (X_BC, Y_BC))
    assert resolved_trees(result, parties) == ref["trees"]
    assert result["metrics"] == ref["metrics"]
    assert result["model"]["guest"]["init_score"] == ref["init_score"]
    assert result["trees_built"] == 6 and result["stopped"] == "max_trees"
    assert any(n.get("owner") == "0xhost0" for t in result["model"]["guest"]["trees"] for n in t)
    assert any(n.get("owner") == "guest" for t in result["model"]["guest"]["trees"] for n in t)


def test_auc_within_0005_of_sklearn_on_the_held_out_rows(one_host: Any) -> None:
    """scikit-learn's HistGradientBoosting with the same hyperparameters, trained on the
    protocol's training rows, scored on its validation rows (held out from both)."""
    _, result, _ = one_host
    valid = trees.validation_mask(local_binding(7), 0, len(Y_BC), 0.3)
    clf = HistGradientBoostingClassifier(
        max_iter=6,
        max_depth=3,
        learning_rate=0.3,
        l2_regularization=1.0,
        max_bins=32,
        min_samples_leaf=20,
        max_leaf_nodes=None,
        early_stopping=False,
    ).fit(X_BC[~valid], Y_BC[~valid])
    sk_auc = roc_auc_score(Y_BC[valid], clf.decision_function(X_BC[valid]))
    ours = result["metrics"][-1]["validation_auc"]
    assert abs(ours - sk_auc) <= 0.005, (ours, sk_auc)
    assert ours > 0.97


def test_result_hides_host_thresholds_and_names_features_opaquely(one_host: Any) -> None:
    parties, result, _ = one_host
    host = parties[1]
    thresholds = {s["threshold"] for s in host.model_state()["splits"]}
    for tree in result["model"]["guest"]["trees"]:
        for node in tree:
            if node.get("owner") == "0xhost0":
                assert set(node) == {"id", "depth", "rows", "gain", "left", "right", "owner", "split"}
    guest_thresholds = {n["threshold"] for t in result["model"]["guest"]["trees"] for n in t if "threshold" in n}
    assert not thresholds & guest_thresholds or all(
        n.get("owner") == "guest" for t in result["model"]["guest"]["trees"] for n in t if "threshold" in n
    )
    imp = result["importance"]
    assert set(imp["hosts"]["0xhost0"]) <= {str(i) for i in range(20)}
    assert set(imp["guest"]) <= {f"f{c:02d}" for c in range(10)}
    total_splits = sum(1 for t in result["model"]["guest"]["trees"] for n in t if "owner" in n)
    counted = sum(v["splits"] for v in imp["guest"].values()) + sum(
        v["splits"] for v in imp["hosts"]["0xhost0"].values()
    )
    assert counted == total_splits
    assert result["features"] == {"guest": [f"f{c:02d}" for c in range(10)], "hosts": {"0xhost0": 20}}
    check_commitments(parties)


def test_progress_reports_trees_but_never_a_metric(one_host: Any) -> None:
    """Progress is readable by every participant and the requester (README #13.9): it counts
    trees and levels; validation AUC and loss are result-derived and stay in the result."""
    _, _, seen = one_host
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(t == "tree 6/6 built" for _, t in seen)
    assert not [t for _, t in seen if any(w in t for w in ("auc", "loss", "mse", "0."))]


TWO_HOST_PARAMS = {**FAST, "trees": 3, "max_depth": 3, "subsample": 0.8, "min_samples_leaf": 10, "seed": 4}


@pytest.fixture(scope="module")
def two_hosts() -> list[HeteroSbtProtocol]:
    parties = make_parties(TWO_HOSTS, TWO_HOST_PARAMS, task_id=8)
    run_local(parties, shuffle_seed=3)
    return parties


def test_two_hosts_with_subsampling_equal_the_reference(two_hosts: list[HeteroSbtProtocol]) -> None:
    parties = two_hosts
    result = result_of(parties)
    ref = reference_of(parties, TWO_HOSTS, TWO_HOST_PARAMS, (X_BC, Y_BC))
    assert resolved_trees(result, parties) == ref["trees"]
    assert result["metrics"] == ref["metrics"]
    owners = {n.get("owner") for t in result["model"]["guest"]["trees"] for n in t}
    assert {"0xhost0", "0xhost1"} <= owners
    check_commitments(parties)


def test_regression_equals_the_reference() -> None:
    X, y = synthetic_regression()
    split = [range(0, 3), range(3, 6)]
    params = {**FAST, "objective": "regression", "trees": 4, "max_depth": 3, "learning_rate": 0.5, "max_bins": 16}
    parties = make_parties(split, params, task_id=9, data=(X, y))
    run_local(parties)
    result = result_of(parties)
    ref = reference_of(parties, split, params, (X, y))
    assert resolved_trees(result, parties) == ref["trees"]
    assert result["metrics"] == ref["metrics"]
    mses = [m["train_mse"] for m in result["metrics"]]
    assert mses == sorted(mses, reverse=True) and mses[-1] < 0.3 * float(np.var(y))


def test_early_stopping() -> None:
    params = {
        **FAST,
        "trees": 30,
        "max_depth": 2,
        "learning_rate": 1.0,
        "validation_fraction": 0.3,
        "early_stopping_rounds": 2,
        "min_samples_leaf": 5,
    }
    parties = make_parties(ONE_HOST, params, task_id=10)
    run_local(parties)
    result = result_of(parties)
    assert result["stopped"] == "early_stopping" and result["trees_built"] < 30
    aucs = [m["validation_auc"] for m in result["metrics"]]
    assert result["best_tree"] == int(np.argmax(aucs)) + 1 == result["trees_built"] - 2
    ref = reference_of(parties, ONE_HOST, params, (X_BC, Y_BC))
    assert resolved_trees(result, parties) == ref["trees"]
    assert ref["stopped"] == "early_stopping" and ref["metrics"] == result["metrics"]


# -- determinism, checkpoints, resume -------------------------------------------------------------------

SMALL = {**FAST, "trees": 3, "max_depth": 2, "min_samples_leaf": 10}


def test_transcript_is_deterministic_and_order_independent() -> None:
    runs = []
    for shuffle in (1, 2):
        parties = make_parties(TWO_HOSTS, SMALL, task_id=12)
        transcript = run_local(parties, shuffle_seed=shuffle)
        links: dict[tuple[str, str], list[Message]] = {}
        for m in transcript:
            links.setdefault((m.sender, m.receiver), []).append(m)
        runs.append((links, parties[0].result(), [p.result_commitment() for p in parties]))
    assert runs[0] == runs[1]
    other = make_parties(TWO_HOSTS, SMALL, task_id=12, seed_salt="x")
    transcript = run_local(other)
    first = runs[0][0][(transcript[0].sender, transcript[0].receiver)][0]
    assert transcript[0].payload != first.payload


def test_parallel_map_gives_the_same_run() -> None:
    def pickling_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return [pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(x))))) for x in items]

    params = {**SMALL, "trees": 1}
    serial = make_parties(ONE_HOST, params, task_id=17)
    t_serial = run_local(serial)
    parallel = make_parties(ONE_HOST, params, task_id=17)
    calls: list[int] = []
    for p in parallel:
        p.ctx.parallel_map = lambda fn, items: calls.append(len(items)) or pickling_map(fn, items)
    assert run_local(parallel) == t_serial and calls


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[list[HeteroSbtProtocol], dict[tuple[str, int], bytes]]:
    saved: dict[tuple[str, int], bytes] = {}
    parties = make_parties(TWO_HOSTS, SMALL, task_id=13, checkpoints=saved)
    run_local(parties)
    return parties, saved


def test_checkpoint_at_every_tree_boundary(uninterrupted: Any) -> None:
    parties, saved = uninterrupted
    assert sorted(saved) == sorted((p.ctx.me, t) for p in parties for t in (1, 2))
    for p in parties:
        assert p.checkpoint() == saved[(p.ctx.me, 2)] and p.checkpoint_epoch == 2
        assert json.loads(saved[(p.ctx.me, 1)])["tree"] == 1


@pytest.mark.parametrize("tree", [1, 2])
def test_resume_all_parties_from_each_checkpoint_gives_identical_bytes(uninterrupted: Any, tree: int) -> None:
    parties, saved = uninterrupted
    resumed = {
        p.ctx.me: HeteroSbtProtocol.resume(p.ctx, p.data, saved[(p.ctx.me, tree)])
        for p in make_parties(TWO_HOSTS, SMALL, task_id=13)
    }
    drive(resumed, [m for p in resumed.values() for m in p.start()])
    assert resumed[GUEST].result() == parties[0].result()
    assert [resumed[p.ctx.me].result_commitment() for p in parties] == [p.result_commitment() for p in parties]
    assert [resumed[p.ctx.me].model_state() for p in parties] == [p.model_state() for p in parties]


@pytest.mark.parametrize("victim", [GUEST, "0xhost1"])
def test_worker_killed_mid_tree_resumes_from_checkpoint(uninterrupted: Any, victim: str) -> None:
    parties, _ = uninterrupted
    fresh = {p.ctx.me: p for p in make_parties(TWO_HOSTS, SMALL, task_id=13)}
    seen: dict[str, int] = {}

    def when(p: HeteroSbtProtocol) -> bool:  # in tree 2, a few messages after the tree-1 checkpoint
        if p.checkpoint_epoch == 1:
            seen[victim] = seen.get(victim, 0) + 1
        return seen.get(victim, 0) >= 3

    drive(fresh, [m for p in fresh.values() for m in p.start()], crash=(victim, when))
    assert fresh[GUEST].result() == parties[0].result()
    assert [fresh[p.ctx.me].model_state() for p in parties] == [p.model_state() for p in parties]


def test_worker_killed_at_the_checkpoint_before_delivering(uninterrupted: Any) -> None:
    parties, _ = uninterrupted
    fresh = {p.ctx.me: p for p in make_parties(TWO_HOSTS, SMALL, task_id=13)}
    drive(fresh, [m for p in fresh.values() for m in p.start()], (GUEST, lambda p: p.checkpoint_epoch == 1), True)
    assert fresh[GUEST].result() == parties[0].result()


def test_bad_checkpoint_is_refused(uninterrupted: Any) -> None:
    _, saved = uninterrupted
    host = make_parties(TWO_HOSTS, SMALL, task_id=13)[1]
    with pytest.raises(ProtocolError, match="another task or party"):
        HeteroSbtProtocol.resume(host.ctx, host.data, saved[(GUEST, 1)])
    other = make_parties(TWO_HOSTS, {**SMALL, "l2": 0.5}, task_id=13)[1]
    with pytest.raises(ProtocolError, match="different params"):
        HeteroSbtProtocol.resume(other.ctx, other.data, saved[("0xhost0", 1)])
    with pytest.raises(ProtocolError, match="not JSON"):
        HeteroSbtProtocol.resume(host.ctx, host.data, b"\x00garbage")


# -- refusals ------------------------------------------------------------------------------------------


def test_each_role_has_its_class() -> None:
    parties = make_parties(ONE_HOST, SMALL)
    assert [type(p) for p in parties] == [HeteroSbtGuest, HeteroSbtHost]
    with pytest.raises(ProtocolError, match="plays the part of HeteroSbtGuest"):
        HeteroSbtHost.create(parties[0].ctx, parties[0].data)


def test_misaligned_ids_are_refused() -> None:
    parties = make_parties(ONE_HOST, SMALL)
    X = X_BC[:-1]
    host = HeteroSbtProtocol.create(parties[1].ctx, make_table(X, Y_BC[:-1], range(10, 30), False, 1))
    with pytest.raises(ProtocolError, match="datasets are not aligned, run PSI first"):
        run_local([parties[0], host])


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"key_bits": 1024}, "label_column"),
        ({**FAST, "objective": "multiclass"}, "objective"),
        ({**FAST, "trees": 0}, "trees"),
        ({**FAST, "max_depth": 40}, "max_depth"),
        ({**FAST, "learning_rate": 0}, "learning_rate"),
        ({**FAST, "l2": -1}, "l2"),
        ({**FAST, "min_child_weight": float("nan")}, "min_child_weight"),
        ({**FAST, "min_samples_leaf": 0}, "min_samples_leaf"),
        ({**FAST, "subsample": 1.5}, "subsample"),
        ({**FAST, "validation_fraction": 0.9}, "validation_fraction"),
        ({**FAST, "early_stopping_rounds": 3}, "early_stopping_rounds"),
        ({**FAST, "max_bins": 1}, "max_bins"),
        ({**FAST, "key_bits": 512}, "key_bits"),
        ({**FAST, "seed": -1}, "seed"),
        ({**FAST, "features": {"0xa": ["y"]}}, "features.0xa"),
        ({**FAST, "depth": 3}, "unknown key"),
    ],
)
def test_invalid_params_name_the_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ProtocolError, match=f"invalid hetero-sbt params: .*{key}"):
        HeteroSbtProtocol.validate_params(params)


def test_defaults_and_key_size(monkeypatch: pytest.MonkeyPatch) -> None:
    p = HeteroSbtProtocol.validate_params({"label_column": "y"})
    assert (p["objective"], p["trees"], p["max_depth"], p["max_bins"], p["key_bits"]) == ("binary", 10, 3, 32, 2048)
    monkeypatch.setattr(sbt_params, "TEST_ONLY_KEY_BITS", ())
    with pytest.raises(ProtocolError, match="'key_bits' must be one of \\[2048, 3072\\]"):
        HeteroSbtProtocol.validate_params(FAST)


def test_refusals_that_need_the_data() -> None:
    with pytest.raises(ProtocolError, match="min_samples_leaf"):
        make_parties(ONE_HOST, {**SMALL, "min_samples_leaf": 300})
    X, y = synthetic_regression()
    with pytest.raises(ProtocolError, match="only 0 and 1"):
        make_parties([range(0, 3), range(3, 6)], SMALL, data=(X, y))


def run_tampered(pick: Callable[[Message], bool], change: Callable[[Message], Message], hosts: int = 1) -> None:
    split = ONE_HOST if hosts == 1 else TWO_HOSTS
    parties = {p.ctx.me: p for p in make_parties(split, {**SMALL, "trees": 2}, task_id=14)}
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


def flip_last(m: Message) -> Message:
    return with_payload(m, m.payload[:-1] + bytes([m.payload[-1] ^ 0x01]))


@pytest.mark.parametrize(
    ("pick", "change", "match"),
    [
        (
            lambda m: m.kind == KIND_SETUP and m.sender == GUEST,
            lambda m: with_payload(m, m.payload.replace(b'"role":"guest"', b'"role":"host"')),
            "role",
        ),
        (lambda m: m.kind == KIND_SETUP and m.sender != GUEST, lambda m: with_payload(m, m.payload[:-5]), "not JSON"),
        (
            lambda m: m.kind == KIND_SETUP and m.sender != GUEST,
            lambda m: with_payload(m, m.payload.replace(b'"bins":[', b'"bins":[999,')),
            "bad bin counts",
        ),
        (lambda m: m.kind == KIND_GRADIENTS, lambda m: with_payload(m, m.payload[:-1]), "bytes, expected"),
        (
            lambda m: m.kind == KIND_GRADIENTS,
            lambda m: with_payload(m, m.payload[:12] + bytes(len(m.payload) - 12)),
            "out of range",
        ),
        (lambda m: m.kind == KIND_HISTOGRAMS, lambda m: with_payload(m, m.payload[:-4]), "bytes, expected"),
        (
            lambda m: m.kind == KIND_HISTOGRAMS,
            lambda m: with_payload(m, m.payload[:8] + b"\x01" + m.payload[9:]),
            "tampered",
        ),
        (lambda m: m.kind == KIND_HISTOGRAMS, lambda m: with_payload(m, m.payload[:-4] + b"\xff" * 4), "more rows"),
        (
            lambda m: m.kind == KIND_REQUESTS and len(m.payload) > 12,
            lambda m: with_payload(m, m.payload[:-4] + b"\xff\xff\xff\xff"),
            "no split after bin",
        ),
        (lambda m: m.kind == KIND_PARTITIONS and len(m.payload) > 12, flip_last, "padding|contradicts|min_samples"),
        (lambda m: m.kind == KIND_LEVEL_END, lambda m: with_payload(m, m.payload + b"\x00"), "beyond the level"),
        (lambda m: m.kind == KIND_TREE_END, lambda m: with_payload(m, m.payload[:8] + b"\x02"), "expected one byte"),
        (lambda m: m.kind == KIND_HISTOGRAMS, lambda m: replace(m, kind=KIND_GRADIENTS), "unexpected"),
        (lambda m: m.kind == KIND_HISTOGRAMS, lambda m: replace(m, round=m.round + 1), "impossible round"),
        (lambda m: m.kind == KIND_REQUESTS, lambda m: replace(m, round=m.round + (1 << 16)), "impossible round"),
        (lambda m: m.kind == KIND_LEVEL_END, lambda m: replace(m, round=m.round + 16), "impossible round"),
        (lambda m: m.kind == KIND_GRADIENTS and m.seq > 0, lambda m: replace(m, seq=m.seq - 1), "where #"),
        (lambda m: m.kind == KIND_GRADIENTS, lambda m: replace(m, sender="0xmallory"), "not a peer"),
        (
            lambda m: m.kind == KIND_GRADIENTS,
            lambda m: with_payload(m, b"\x00\x00\x00\x01\x00\x00\x00\x01"),
            "where part 0",
        ),
    ],
    ids=[
        "setup-role",
        "setup-truncated",
        "setup-bins",
        "gradients-truncated",
        "gradients-zero-ciphertexts",
        "histograms-truncated",
        "histograms-overflowing-ciphertext",
        "histograms-count",
        "request-bin",
        "partition-bits",
        "level-end-extra",
        "tree-end-flag",
        "wrong-kind",
        "wrong-round",
        "future-tree",
        "future-level",
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


def test_replayed_and_duplicated_messages_are_refused() -> None:
    parties = {p.ctx.me: p for p in make_parties(ONE_HOST, SMALL, task_id=15)}
    queue: deque[Message] = deque(m for p in parties.values() for m in p.start())
    first = queue[0]
    queue.extend(parties[first.receiver].receive(queue.popleft()))
    with pytest.raises(ProtocolError, match="where #1 was expected"):
        parties[first.receiver].receive(first)
    while True:  # up to the first gradients a host takes in
        m = queue.popleft()
        queue.extend(parties[m.receiver].receive(m))
        if m.kind == KIND_GRADIENTS:
            break
    with pytest.raises(ProtocolError, match="duplicate 'gradients'"):
        parties[m.receiver].receive(replace(m, seq=m.seq + 1))


def test_commitment_scheme() -> None:
    assert COMMITMENT.result_domain == b"pcn/hetero-sbt/result/v1"
    with pytest.raises(ProtocolError, match="opening"):
        HeteroSbtProtocol.commitment_for(b"{}", b"short")


def test_the_key_holders_crt_encryption_gives_the_fixed_base_ciphertexts() -> None:
    from pcn.algorithms.hetero_lr.common import SeededObfuscator, derive_keypair
    from pcn.algorithms.hetero_sbt import crypto

    pk, sk = derive_keypair(1024, hashlib.sha256(b"sbt/crt/key").digest())
    obf = SeededObfuscator.derive(pk, hashlib.sha256(b"sbt/crt/obf").digest(), 100)
    chunks = [(hashlib.sha256(b"chunk%d" % i).digest(), list(range(i * 50, i * 50 + 37))) for i in range(3)]
    djn = crypto.encrypt_job((int(pk.n), int(obf.h), obf.window_bits, obf.exponent_bits, chunks))
    assert crypto.encrypt_crt_job((int(sk.p), int(sk.q), int(obf.h), obf.exponent_bits, chunks)) == djn
    width = (int(pk.nsquare.bit_length()) + 7) // 8
    assert crypto.decrypt_job((int(sk.p), int(sk.q), djn[1])) == list(range(50, 87))
    assert len(djn[1]) == 37 * width


# -- hetero-sbt-predict ---------------------------------------------------------------------------------


def predict_parties(
    trained: Sequence[HeteroSbtProtocol],
    split: list[range],
    data: tuple[np.ndarray, np.ndarray] = (X_BC, Y_BC),
    label: bool = True,
    models: dict[tuple[int, str], dict[str, Any]] | None = None,
    model_task: int | None = None,
) -> list[HeteroSbtPredictProtocol]:
    task = trained[0].ctx.task_id if model_task is None else model_task
    stored = models if models is not None else {(p.ctx.task_id, p.ctx.me): p.model_state() for p in trained}

    def load(task_id: int, party: str) -> dict[str, Any]:
        if (task_id, party) not in stored:
            raise ModelUnavailable(f"no model of task {task_id} for {party}")
        return stored[(task_id, party)]

    who = [p.ctx.me for p in trained]
    X, y = data
    return [
        HeteroSbtPredictProtocol.create(
            PartyContext(
                100,
                me,
                who,
                GUEST,
                {"model_task": task},
                hashlib.sha256(f"sbt-predict/{me}".encode()).digest(),
                id_column="id",
                services=TaskServices(load_model=load),
            ),
            make_table(X, y, cols, label and k == 0, 10 + k),
        )
        for k, (me, cols) in enumerate(zip(who, split, strict=True))
    ]


def scores_by_id(parties: Sequence[HeteroSbtPredictProtocol]) -> tuple[dict[str, Any], np.ndarray]:
    raw = parties[0].result()
    assert raw is not None and all(p.result() is None for p in parties[1:])
    res = json.loads(raw)
    assert res["ids"] == [f"id{i:04d}" for i in range(len(res["ids"]))]
    return res, np.array(res["scores"])


@pytest.mark.parametrize("which", ["one_host", "two_hosts"])
def test_predict_reproduces_the_training_scores(which: str, request: pytest.FixtureRequest) -> None:
    trained = request.getfixturevalue(which)
    trained = trained[0] if which == "one_host" else trained
    split = ONE_HOST if which == "one_host" else TWO_HOSTS
    parties = predict_parties(trained, split)
    assert [type(p) for p in parties] == [HeteroSbtPredictGuest] + [HeteroSbtPredictHost] * (len(parties) - 1)
    run_local(parties)
    res, scores = scores_by_id(parties)
    result = result_of(trained)
    valid = trees.validation_mask(local_binding(trained[0].ctx.task_id), result["params"]["seed"], len(Y_BC), 0.3)
    if which == "one_host":  # the validation AUC of training, from the jointly predicted scores
        assert roc_auc_score(Y_BC[valid], scores[valid]) == pytest.approx(result["metrics"][-1]["validation_auc"])
    else:
        assert roc_auc_score(Y_BC, scores) == pytest.approx(result["metrics"][-1]["train_auc"])
    assert res["metrics"]["auc"] == pytest.approx(roc_auc_score(Y_BC, scores))
    commits = {p.result_commitment() for p in parties}
    assert len(commits) == 1
    assert HeteroSbtPredictProtocol.commitment_for(parties[0].result() or b"", parties[0].commitment_opening()) == (
        commits.pop()
    )


def test_predict_new_rows_without_labels_and_regression(one_host: Any) -> None:
    trained = one_host[0]
    rows = np.random.default_rng(9).normal(X_BC.mean(axis=0), X_BC.std(axis=0), size=(50, 30))
    parties = predict_parties(trained, ONE_HOST, data=(rows, np.zeros(50)), label=False)
    run_local(parties)
    res, scores = scores_by_id(parties)
    assert res["metrics"] is None and len(scores) == 50 and np.all((scores > 0) & (scores < 1))
    X, y = synthetic_regression()
    split = [range(0, 3), range(3, 6)]
    params = {**FAST, "objective": "regression", "trees": 2, "max_depth": 2, "max_bins": 8}
    reg = make_parties(split, params, task_id=21, data=(X, y))
    run_local(reg)
    parties = predict_parties(reg, split, data=(X, y))
    run_local(parties)
    res, scores = scores_by_id(parties)
    assert res["metrics"]["mse"] == pytest.approx(result_of(reg)["metrics"][-1]["train_mse"])


def test_predict_refusals(one_host: Any) -> None:
    trained = one_host[0]
    models = {(p.ctx.task_id, p.ctx.me): p.model_state() for p in trained}
    changed = dict(models)
    host_model = dict(models[(7, "0xhost0")])
    host_model["splits"] = [dict(s, threshold=s["threshold"] + 1.0) for s in host_model["splits"]]
    changed[(7, "0xhost0")] = host_model
    with pytest.raises(ProtocolError, match="other than the one it committed to"):
        run_local(predict_parties(trained, ONE_HOST, models=changed))
    with pytest.raises(ModelUnavailable, match="no hetero-sbt model of task 99"):
        predict_parties(trained, ONE_HOST, model_task=99)
    parties = predict_parties(trained, ONE_HOST)
    short = HeteroSbtPredictProtocol.create(parties[1].ctx, make_table(X_BC[:-1], Y_BC[:-1], ONE_HOST[1], False, 3))
    with pytest.raises(ProtocolError, match="datasets are not aligned, run PSI first"):
        run_local([parties[0], short])
    with pytest.raises(ProtocolError, match="model_task"):
        HeteroSbtPredictProtocol.validate_params({"model_task": -1})
    parties = predict_parties(trained, ONE_HOST)
    queue = deque(m for p in parties for m in p.start())
    with pytest.raises(ProtocolError, match="decisions from '0xhost0'"):
        while queue:
            m = queue.popleft()
            if m.kind == KIND_DECISIONS:
                m = with_payload(m, m.payload[:-1])
            queue.extend(next(p for p in parties if p.ctx.me == m.receiver).receive(m))


def test_a_constant_column_and_a_host_with_only_constant_columns() -> None:
    """A column of one value has one bin and no candidate split; a host with only such columns
    sends empty histograms and wins nothing."""
    X = np.hstack([X_BC[:, :20], np.ones((len(Y_BC), 2))])
    split = [range(0, 10), range(10, 21), range(21, 22)]
    params = {**SMALL, "trees": 2, "max_bins": 8}  # few bins: the host sums features in pairs
    parties = make_parties(split, params, task_id=22, data=(X, Y_BC))
    run_local(parties)
    result = result_of(parties)
    assert resolved_trees(result, parties) == reference_of(parties, split, params, (X, Y_BC))["trees"]
    assert parties[2].model_state()["splits"] == [] and result["importance"]["hosts"]["0xhost1"] == {}


def test_histograms_by_feature_pairs_equal_the_one_by_one_products() -> None:
    from pcn.algorithms.hetero_lr.common import derive_keypair
    from pcn.algorithms.hetero_sbt import crypto

    pk, _ = derive_keypair(1024, hashlib.sha256(b"sbt/pairs").digest())
    rng = np.random.default_rng(3)
    rows, bin_counts, nodes = 700, [5, 1, 8, 3, 6], 2
    width = (int(pk.nsquare.bit_length()) + 7) // 8
    cts = b"".join(int(pk.raw_encrypt(int(v))).to_bytes(width, "big") for v in rng.integers(0, 1000, rows))
    bins = np.stack([rng.integers(0, b, rows) for b in bin_counts], axis=1).astype(np.uint8)
    node = rng.integers(0, nodes, rows)
    starts = np.cumsum([0] + [b - 1 for b in bin_counts])[:-1]
    V = sum(b - 1 for b in bin_counts)
    slots = node[:, None] * V + starts[None, :] + bins.astype(np.int64)
    slots[bins.astype(np.int64) >= np.array(bin_counts)[None, :] - 1] = -1
    one_by_one = crypto.histogram_job((int(pk.n), cts, slots, nodes * V))
    assert crypto.histogram_pairs_job((int(pk.n), cts, bins, node, nodes, bin_counts)) == one_by_one
    few = crypto.histogram_pairs_job((int(pk.n), cts[: 40 * width], bins[:40], node[:40], nodes, bin_counts))
    assert few == crypto.histogram_job((int(pk.n), cts[: 40 * width], slots[:40], nodes * V))  # no pairs
