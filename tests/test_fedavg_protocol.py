"""The FedAvg protocol with secure aggregation, driven in-process with run_local."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from pcn.algorithms.base import Message, PartyContext, ProtocolError, run_local, secret_permutation
from pcn.algorithms.fedavg import model as mdl
from pcn.algorithms.fedavg import secagg
from pcn.algorithms.fedavg.protocol import COMMIT_DOMAIN, RESULT_DOMAIN, FedAvgAggregator, FedAvgParty, FedAvgProtocol
from pcn.algorithms.fedavg.reference import plain_fedavg
from pcn.data.errors import DataError
from pcn.data.table import Table

D = 6
FEATURES = [f"f{k}" for k in range(D)]
SIZES_3 = [140, 230, 360]
SIZES_5 = [140, 230, 360, 90, 180]


def names(n: int) -> list[str]:
    return [f"0xparty{i}" for i in range(n)]


def seed_for(name: str, salt: str = "") -> bytes:
    return hashlib.sha256(f"seed/{name}/{salt}".encode()).digest()


def synthetic(sizes: list[int], seed: int = 11) -> list[tuple[np.ndarray, np.ndarray]]:
    """Linearly separable up to a little label noise, different sizes and feature scales."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=D)
    out = []
    for k, n in enumerate(sizes):
        x = rng.normal(loc=0.1 * k, size=(n, D))
        y = (x @ w + 0.2 * rng.normal(size=n) > 0.3).astype(np.float64)
        out.append((x, y))
    return out


def to_table(x: np.ndarray, y: np.ndarray, features: list[str] = FEATURES) -> Table:
    cols: dict[str, list[str | None]] = {f: [repr(v) for v in x[:, k].tolist()] for k, f in enumerate(features)}
    cols["label"] = [str(int(v)) for v in y.tolist()]
    return Table(cols)


def base_params(**over: Any) -> dict[str, Any]:
    return {"label_column": "label", "features": FEATURES, "rounds": 5, **over}


def make_parties(
    data: list[tuple[np.ndarray, np.ndarray]],
    params: dict[str, Any],
    recipient: int = 0,
    task_id: int = 42,
    seed_salt: str = "",
    progress: Callable[[float, str], None] | None = None,
) -> list[FedAvgProtocol]:
    who = names(len(data))
    parties = [
        FedAvgProtocol.create(
            PartyContext(task_id, me, who, who[recipient], params, seed_for(me, seed_salt), progress),
            to_table(x, y),
        )
        for me, (x, y) in zip(who, data, strict=True)
    ]
    for p in parties:
        p._trace = True  # keep every round's plaintext vector and unmasked sum for inspection
    return parties


def result_doc(parties: list[FedAvgProtocol]) -> dict[str, Any]:
    results = [p.result() for p in parties if p.ctx.is_recipient]
    assert len(results) == 1 and results[0] is not None
    return json.loads(results[0])  # type: ignore[no-any-return]


def reference(parties: list[FedAvgProtocol], dropouts: dict[int, dict[str, Any]] | None = None) -> Any:
    data = [(p._x, p._y) for p in parties]
    fresh = {i: p.ctx for i, p in enumerate(parties)}

    def permutation_for(i: int, label: str, n: int) -> np.ndarray:
        key = hashlib.shake_256(b"pcn/secret/" + fresh[i].seed + b"/permutation/" + label.encode()).digest(32)
        return secret_permutation(key, n)

    # the same permutations as Protocol.secret_permutation
    assert np.array_equal(permutation_for(0, "x", 50), parties[0].secret_permutation("x", 50))
    return plain_fedavg(data, parties[0].params, permutation_for, dropouts)  # type: ignore[arg-type]


def float_logreg_fedavg(parties: list[FedAvgProtocol]) -> tuple[np.ndarray, float]:
    """An independent plain-float FedAvg of logistic regression (no fixed point, no masks),
    with each party's minibatch order taken from its own RNG like the protocol does."""
    p = parties[0].params
    w, b = np.zeros(D), 0.0
    for r in range(1, p["rounds"] + 1):
        total, new_w, new_b = 0, np.zeros(D), 0.0
        for party in parties:
            x, y = party._x, party._y
            assert x is not None and y is not None
            wi, bi = w.copy(), b
            for e in range(p["local_epochs"]):
                order = party.secret_permutation(f"minibatch/{r}/{e}", len(y))
                for s in range(0, len(y), p["batch_size"]):
                    idx = order[s : s + p["batch_size"]]
                    g = (1.0 / (1.0 + np.exp(-(x[idx] @ wi + bi))) - y[idx]) / len(idx)
                    wi, bi = wi - p["learning_rate"] * (x[idx].T @ g + p["l2"] * wi), bi - p["learning_rate"] * g.sum()
            weight = len(y) if p["weighting"] == "samples" else 1
            total += weight
            new_w += weight * wi
            new_b += weight * bi
        w, b = new_w / total, new_b / total
    return w, b


def updates_in(transcript: list[Message]) -> list[Message]:
    return [m for m in transcript if m.kind == "update"]


# -- learning and exactness ---------------------------------------------------------------


@pytest.mark.parametrize("sizes", [SIZES_3, SIZES_5])
@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_fedavg_learns_a_separable_problem(sizes: list[int], model: str) -> None:
    extra = {"hidden": [16], "activation": "tanh"} if model == "mlp" else {}
    params = base_params(model=model, rounds=8, local_epochs=2, **extra)
    parties = make_parties(synthetic(sizes), params, recipient=1)
    run_local(parties, shuffle_seed=1)
    doc = result_doc(parties)
    final = doc["final"]
    assert final["accuracy"] >= 0.9 and final["auc"] >= 0.95
    assert final["samples"] == sum(sizes) and final["model_after_round"] == 8
    assert doc["metrics"][0]["accuracy"] < final["accuracy"]
    assert doc["metrics"][-1]["loss"] < doc["metrics"][0]["loss"]
    # the published model scores rows the way the secure evaluation said it does
    x = np.concatenate([d[0] for d in synthetic(sizes)])
    y = np.concatenate([d[1] for d in synthetic(sizes)])
    assert ((mdl.predict_proba(doc["model"], x) > 0.5) == (y == 1)).mean() == pytest.approx(final["accuracy"])


@pytest.mark.parametrize("sizes", [SIZES_3, SIZES_5])
def test_logreg_equals_plain_fedavg(sizes: list[int]) -> None:
    params = base_params(learning_rate=0.2, batch_size=16, local_epochs=2, l2=0.01)
    parties = make_parties(synthetic(sizes), params, recipient=len(sizes) - 1)
    run_local(parties, shuffle_seed=2)
    doc = result_doc(parties)
    layer = doc["model"]["layers"][0]
    w = np.array(layer["weights"])[:, 0]
    b = layer["bias"][0]
    ref_w, ref_b = float_logreg_fedavg(parties)
    assert np.max(np.abs(w - ref_w)) < 1e-6 and abs(b - ref_b) < 1e-6
    # bit for bit against the same fixed-point pipeline without masks
    plain = reference(parties)
    server = parties[-1]
    assert np.array_equal(mdl.theta_from_document(doc["model"]), plain.thetas[-1])
    for r, total in plain.aggregates.items():
        assert np.array_equal(server._aggregates[r], total)
    for m, ref in zip(doc["metrics"], plain.metrics, strict=True):
        assert {k: m[k] for k in ref} == ref


def test_mlp_equals_plain_fedavg_bit_for_bit() -> None:
    params = base_params(model="mlp", hidden=[8, 4], activation="relu", rounds=4, weighting="uniform", seed=5)
    parties = make_parties(synthetic(SIZES_5), params, recipient=2)
    run_local(parties, shuffle_seed=3)
    plain = reference(parties)
    assert np.array_equal(mdl.theta_from_document(result_doc(parties)["model"]), plain.thetas[-1])
    assert np.array_equal(plain.thetas[0], mdl.initial_model(parties[0].params))
    assert np.any(plain.thetas[0] != 0)


def test_breast_cancer_matches_centralised_training() -> None:
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x, y = load_breast_cancer(return_X_y=True)
    mean, std = x.mean(axis=0), x.std(axis=0)
    central = LogisticRegression(C=1.0, max_iter=10_000).fit((x - mean) / std, y)
    central_acc = central.score((x - mean) / std, y)
    order = np.random.default_rng(0).permutation(len(y))
    feats = [f"x{k}" for k in range(x.shape[1])]
    who = names(3)
    params = {
        "label_column": "label",
        "features": feats,
        "standardize": {"mean": mean.tolist(), "std": std.tolist()},
        "rounds": 20,
        "local_epochs": 2,
        "l2": 1.0 / len(y),  # the same penalty as C=1 on the summed loss
    }
    parts = [order[:150], order[150:330], order[330:]]
    parties = [
        FedAvgProtocol.create(PartyContext(3, me, who, who[0], params, seed_for(me)), to_table(x[idx], y[idx], feats))
        for me, idx in zip(who, parts, strict=True)
    ]
    run_local(parties)
    doc = result_doc(parties)
    assert abs(doc["final"]["accuracy"] - central_acc) <= 0.01
    proba = mdl.predict_proba(doc["model"], x)
    assert abs(doc["final"]["auc"] - roc_auc_score(y, proba)) < 0.005  # histogram AUC vs exact
    assert abs(roc_auc_score(y, proba) - roc_auc_score(y, central.decision_function((x - mean) / std))) < 0.01


# -- what the aggregator sees --------------------------------------------------------------


def test_aggregator_never_sees_an_individual_update() -> None:
    parties = make_parties(synthetic(SIZES_5), base_params(rounds=3), recipient=0)
    transcript = run_local(parties, shuffle_seed=4)
    by_name = {p.ctx.me: p for p in parties}
    server = parties[0]
    updates = updates_in(transcript)
    assert len(updates) == 4 * 4 and all(m.receiver == server.ctx.me for m in updates)
    for m in updates:
        masked = np.frombuffer(m.payload, dtype="<u8")
        true = by_name[m.sender]._plain[m.round]
        assert masked.shape == true.shape
        # the masked vector looks uniform: no entry in the clear, no small values
        assert np.count_nonzero(masked == true) <= 1
        assert np.count_nonzero(masked < (1 << 40)) <= 1
    for r in range(1, 5):
        true_sum = np.zeros_like(server._aggregates[r])
        for p in parties:
            true_sum += p._plain[r]
        assert np.array_equal(server._aggregates[r], true_sum)
        masked_sum = np.zeros_like(true_sum)
        for m in updates:
            if m.round == r:
                masked_sum += np.frombuffer(m.payload, dtype="<u8")
        assert not np.array_equal(masked_sum + server._plain[r], true_sum)  # self-masks still on
    # no other message carries an update: the only messages to the server are keys, shares,
    # masked updates and unmask shares, and the shares are field elements of a 521-bit prime
    assert {m.kind for m in transcript if m.receiver == server.ctx.me} == {"keys", "shares", "update", "unmask-shares"}


def test_without_dropout_tolerance_pairwise_masks_cancel_alone() -> None:
    parties = make_parties(synthetic(SIZES_3), base_params(rounds=3, dropout_tolerance=False), recipient=1)
    transcript = run_local(parties, shuffle_seed=5)
    assert {m.kind for m in transcript} == {"keys", "model", "update", "result-hash"}
    plain = reference(parties)
    assert np.array_equal(mdl.theta_from_document(result_doc(parties)["model"]), plain.thetas[-1])
    for m in updates_in(transcript):
        assert (
            np.count_nonzero(np.frombuffer(m.payload, dtype="<u8") == parties[int(m.sender[-1])]._plain[m.round]) <= 1
        )
    assert result_doc(parties)["threshold"] is None


# -- dropouts ------------------------------------------------------------------------------


def test_party_dropping_out_in_round_two_of_five() -> None:
    data = synthetic(SIZES_5)
    who = names(5)
    params = base_params(rounds=5, simulate_dropout={who[3]: 2})
    parties = make_parties(data, params, recipient=0)
    transcript = run_local(parties, shuffle_seed=6)
    doc = result_doc(parties)
    assert doc["dropped"] == {who[3]: {"round": 2, "phase": "update"}}
    assert doc["rounds"][1]["dropped"] == [who[3]]
    assert [len(r["contributors"]) for r in doc["rounds"]] == [5, 4, 4, 4, 4, 4]
    assert doc["rounds"][1]["weight_total"] == sum(SIZES_5) - SIZES_5[3]
    assert doc["final"]["accuracy"] >= 0.9
    assert not [m for m in transcript if m.sender == who[3] and m.round >= 2]
    server = parties[0]
    for r in range(1, 7):
        survivors = [p for p in parties if p.ctx.me in doc["rounds"][r - 1]["contributors"]]
        true_sum = np.zeros_like(server._aggregates[r])
        for p in survivors:
            true_sum += p._plain[r]
        assert np.array_equal(server._aggregates[r], true_sum)
    plain = reference(parties, {3: {"round": 2, "phase": "update"}})
    assert np.array_equal(mdl.theta_from_document(doc["model"]), plain.thetas[-1])
    assert parties[3].done and parties[3].result() is None and parties[3].dropped_at == {"round": 2, "phase": "update"}
    with pytest.raises(ProtocolError, match="dropped out in round 2"):
        parties[3].result_commitment()
    assert len({p.result_commitment() for p in parties if p is not parties[3]}) == 1


def test_two_dropouts_with_five_parties_one_after_its_update() -> None:
    who = names(5)
    drops = {who[1]: 2, who[4]: {"round": 3, "phase": "unmask"}}
    params = base_params(model="mlp", hidden=[8], rounds=5, learning_rate=0.2, simulate_dropout=drops)
    parties = make_parties(synthetic(SIZES_5), params, recipient=2)
    run_local(parties, shuffle_seed=7)
    doc = result_doc(parties)
    assert doc["dropped"] == {who[1]: {"round": 2, "phase": "update"}, who[4]: {"round": 3, "phase": "unmask"}}
    # party 4's round-3 update is in the sum (its self-mask was rebuilt from shares), then it is gone
    assert who[4] in doc["rounds"][2]["contributors"] and who[4] not in doc["rounds"][3]["contributors"]
    assert doc["rounds"][2]["weight_total"] == sum(SIZES_5) - SIZES_5[1]
    assert doc["threshold"] == 3
    plain = reference(parties, {1: {"round": 2, "phase": "update"}, 4: {"round": 3, "phase": "unmask"}})
    assert np.array_equal(mdl.theta_from_document(doc["model"]), plain.thetas[-1])
    for r, total in plain.aggregates.items():
        assert np.array_equal(parties[2]._aggregates[r], total)
    survivors = [p for p in parties if p.dropped_at is None]
    assert len(survivors) == 3 and len({p.result_commitment() for p in survivors}) == 1


def test_dropouts_beyond_the_threshold_fail_clearly() -> None:
    who = names(5)
    params = base_params(threshold=4, simulate_dropout={who[1]: 2, who[3]: 3})
    with pytest.raises(ProtocolError, match=r"round 3: only 3 parties .* fewer than 4 \(the Shamir threshold is t=4\)"):
        run_local(make_parties(synthetic(SIZES_5), params, recipient=0))
    # an unmask-phase dropout that leaves fewer than t shares
    params = base_params(threshold=4, simulate_dropout={who[1]: 2, who[3]: {"round": 2, "phase": "unmask"}})
    with pytest.raises(ProtocolError, match="only 3 parties sent their unmask shares, fewer than the threshold t=4"):
        run_local(make_parties(synthetic(SIZES_5), params, recipient=0))


def test_three_parties_refuse_to_reveal_a_lone_survivor() -> None:
    who = names(3)
    params = base_params(simulate_dropout={who[2]: 2})
    with pytest.raises(ProtocolError, match="lone survivor's update would be revealed"):
        run_local(make_parties(synthetic(SIZES_3), params, recipient=0))


def test_dropout_without_tolerance_fails() -> None:
    who = names(4)
    params = base_params(dropout_tolerance=False, simulate_dropout={who[2]: 2})
    with pytest.raises(ProtocolError, match="dropout_tolerance is off"):
        run_local(make_parties(synthetic(SIZES_5[:4]), params, recipient=0))


def drive(parties: list[FedAvgProtocol], crash: str, crash_round: int, phase: str = "update") -> list[Message]:
    """run_local with a party that crashes silently in `crash_round` before sending its
    update (or, with phase "unmask", right after it), after which nothing reaches it, and
    the runtime's deadline at the aggregator turned into `declare_dropped` whenever the
    network goes quiet."""
    by_name = {p.ctx.me: p for p in parties}
    server = next(p for p in parties if p.ctx.is_recipient)
    queue: deque[Message] = deque()
    transcript: list[Message] = []

    def post(msgs: list[Message]) -> None:
        for m in msgs:
            crashed = m.sender == crash and m.round >= crash_round
            if not crashed or (phase == "unmask" and m.kind == "update" and m.round == crash_round):
                queue.append(m)

    for p in parties:
        post(p.start())
    while queue or not server.done:
        if not queue:
            assert server.awaiting() == [crash]
            post(server.declare_dropped(server.awaiting()))
            continue
        m = queue.popleft()
        transcript.append(m)
        if m.receiver != crash or m.round < crash_round or (phase == "unmask" and m.kind == "model"):
            post(by_name[m.receiver].receive(m))
    return transcript


@pytest.mark.parametrize("phase", ["update", "unmask"])
def test_runtime_declared_dropout_matches_the_simulated_one(phase: str) -> None:
    who = names(4)
    data = synthetic(SIZES_5[:4])
    declared = make_parties(data, base_params())
    drive(declared, who[2], 3, phase)
    simulated = make_parties(data, base_params(simulate_dropout={who[2]: {"round": 3, "phase": phase}}))
    run_local(simulated)
    a, b = result_doc(declared), result_doc(simulated)
    assert a["dropped"] == b["dropped"] == {who[2]: {"round": 3, "phase": phase}}
    assert a["model"] == b["model"] and a["metrics"] == b["metrics"]
    with pytest.raises(ProtocolError, match="only the aggregator"):
        declared[1].declare_dropped([who[2]])
    assert declared[1].awaiting() == [] and declared[2].awaiting() == [who[0]]  # done / crashed, still waiting
    with pytest.raises(ProtocolError, match="outside the training rounds"):
        declared[0].declare_dropped([who[2]])


def test_each_role_has_its_class() -> None:
    parties = make_parties(synthetic(SIZES_3), base_params(rounds=1), recipient=1)
    assert [type(p) for p in parties] == [FedAvgParty, FedAvgAggregator, FedAvgParty]
    aggregator, party = parties[1], parties[0]
    assert type(FedAvgAggregator.create(aggregator.ctx, aggregator.data)) is FedAvgAggregator
    with pytest.raises(ProtocolError, match="plays the part of FedAvgParty"):
        FedAvgAggregator.create(party.ctx, party.data)
    with pytest.raises(ProtocolError, match="FedAvgParty plays the party, which '0xparty1' is not"):
        FedAvgParty(aggregator.ctx, aggregator.data)
    shared: type[FedAvgProtocol] = FedAvgProtocol
    with pytest.raises(TypeError, match="abstract"):
        shared(party.ctx, party.data)


def test_declared_dropout_during_setup_is_refused() -> None:
    parties = make_parties(synthetic(SIZES_5[:4]), base_params())
    parties[0].start()
    assert parties[0].awaiting() == [p.ctx.me for p in parties[1:]]
    with pytest.raises(ProtocolError, match="did not finish the setup round"):
        parties[0].declare_dropped([parties[3].ctx.me])
    with pytest.raises(ProtocolError, match="not a peer"):
        parties[0].declare_dropped(["0xsomeone"])


# -- outcome, commitments, determinism --------------------------------------------------


def test_only_the_recipient_gets_a_result_and_commitments_agree() -> None:
    parties = make_parties(synthetic(SIZES_3), base_params(rounds=3), recipient=2)
    run_local(parties, shuffle_seed=8)
    assert [p.result() is not None for p in parties] == [False, False, True]
    commitments = {p.result_commitment() for p in parties}
    assert len(commitments) == 1
    server = parties[2]
    result = server.result()
    assert result is not None
    opening = server.commitment_opening()
    assert len(opening) == 96
    assert FedAvgProtocol.commitment_for(result, opening) == server.result_commitment()
    assert parties[0].commitment_opening() == opening[:64]
    salt = opening[64:]
    recomputed = hashlib.sha256(COMMIT_DOMAIN + opening[:64] + hashlib.sha256(RESULT_DOMAIN + salt + result).digest())
    assert recomputed.digest() == server.result_commitment()
    assert FedAvgProtocol.commitment_for(result + b" ", opening) != server.result_commitment()
    with pytest.raises(ProtocolError, match="32 bytes each"):
        FedAvgProtocol.commitment_for(result, opening[:-1])
    doc = json.loads(result)
    assert result == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["algorithm"] == "fedavg" and doc["aggregator"] == names(3)[2]
    assert doc["params"] == parties[0].params
    assert [m["model_after_round"] for m in doc["metrics"]] == [0, 1, 2, 3]
    assert [r["kind"] for r in doc["rounds"]] == ["train"] * 3 + ["evaluate"]
    assert set(doc["model"]) == {"type", "features", "label_column", "activation", "output", "standardize", "layers"}


def test_commitments_differ_when_the_models_differ() -> None:
    parties = make_parties(synthetic(SIZES_3), base_params(rounds=2), recipient=0)
    run_local(parties)
    other = make_parties(synthetic(SIZES_3), base_params(rounds=2, learning_rate=0.3), recipient=0)
    run_local(other)
    assert parties[1].result_commitment() != other[1].result_commitment()
    with pytest.raises(ProtocolError, match="has not finished"):
        make_parties(synthetic(SIZES_3), base_params())[0].result_commitment()


def transcript_key(transcript: list[Message]) -> list[tuple[Any, ...]]:
    return [(m.sender, m.receiver, m.round, m.kind, m.payload, m.seq) for m in transcript]


def test_deterministic_given_seeds() -> None:
    who = names(5)
    params = base_params(model="mlp", rounds=3, simulate_dropout={who[4]: 2})
    runs = []
    for _ in range(2):
        parties = make_parties(synthetic(SIZES_5), params, recipient=1)
        runs.append((transcript_key(run_local(parties, shuffle_seed=9)), parties[1].result()))
    assert runs[0] == runs[1]
    # another delivery order, the same result; other party seeds: other masks and minibatches
    parties = make_parties(synthetic(SIZES_5), params, recipient=1)
    run_local(parties, shuffle_seed=10)
    assert parties[1].result() == runs[0][1]
    other = make_parties(synthetic(SIZES_5), params, recipient=1, seed_salt="other")
    assert transcript_key(run_local(other, shuffle_seed=9)) != runs[0][0]
    assert other[1].result() != runs[0][1]


def test_resumed_party_replays_to_the_same_messages() -> None:
    who = names(4)
    params = base_params(rounds=2, simulate_dropout={who[3]: {"round": 1, "phase": "unmask"}})
    data = synthetic(SIZES_5[:4])
    parties = make_parties(data, params, recipient=1)
    transcript = run_local(parties, shuffle_seed=11)
    for k, victim in enumerate(parties):
        me = victim.ctx.me
        sent = [m for m in transcript if m.sender == me]
        fresh = make_parties(data, params, recipient=1)[k]
        replayed = list(fresh.start())
        for m in transcript:
            if m.receiver == me:
                replayed.extend(fresh.receive(m))
        assert sorted(transcript_key(replayed)) == sorted(transcript_key(sent))
        assert fresh.result() == victim.result()
        if victim.dropped_at is None:
            assert fresh.result_commitment() == victim.result_commitment()


def test_progress_is_reported() -> None:
    seen: list[tuple[float, str]] = []
    parties = make_parties(synthetic(SIZES_3), base_params(rounds=2), progress=lambda f, w: seen.append((f, w)))
    run_local(parties)
    assert seen[-1][0] == 1.0
    assert any("model after round 2 evaluated" in w for _, w in seen)
    text = "\n".join(w for _, w in seen)
    assert "loss" not in text and "accuracy" not in text  # #13.9: no result-derived value in progress
    assert all(0.0 <= f <= 1.0 for f, _ in seen)


# -- tampering and malformed messages ----------------------------------------------------


def tamper_run(parties: list[FedAvgProtocol], change: Callable[[Message], Message | None]) -> None:
    """run_local with `change` applied to every message before delivery."""
    by_name = {p.ctx.me: p for p in parties}
    queue: deque[Message] = deque()
    for p in parties:
        queue.extend(p.start())
    while queue:
        m = change(queue.popleft())
        if m is not None:
            queue.extend(by_name[m.receiver].receive(m))


def flip(payload: bytes, index: int, mask: int = 0xFF) -> bytes:
    b = bytearray(payload)
    b[index] ^= mask
    return bytes(b)


def tamper_case(name: str) -> Callable[[Message], Message | None]:
    who = names(4)

    def change(m: Message) -> Message | None:
        if name == "corrupt-update" and m.kind == "update" and m.sender == who[1] and m.round == 2:
            return replace(m, payload=flip(m.payload, 7))  # top byte of the first entry
        if name == "corrupt-weight" and m.kind == "update" and m.sender == who[2]:
            return replace(m, payload=flip(m.payload, 8 * (D + 1) + 6, 0x10))  # the weight entry after w | b
        if name == "corrupt-self-seed-share" and m.kind == "shares" and m.sender == who[3] and m.receiver == who[0]:
            return replace(m, payload=flip(m.payload, secagg.ELEMENT_BYTES + 40, 0x01))
        if name == "corrupt-key-share" and m.kind == "unmask-shares" and m.sender == who[1] and m.round == 2:
            return replace(m, payload=flip(m.payload, 60, 0x01))  # its share of the dropped party's key
        if name == "short-update" and m.kind == "update":
            return replace(m, payload=m.payload[:-8])
        if name == "nan-model" and m.kind == "model" and m.round == 2:
            return replace(m, payload=m.payload[:-8] + np.array([np.nan]).tobytes())
        if name == "wrong-round-model" and m.kind == "model" and m.round == 2:
            return replace(m, round=3)
        if name == "readmit" and m.kind == "model" and m.round == 3:
            return replace(m, payload=bytes([0b1111]) + m.payload[1:])
        if name == "small-unmask-set" and m.kind == "unmask" and m.receiver == who[1]:
            return replace(m, payload=bytes([0b0011]))
        if name == "bad-public-key" and m.kind == "keys" and m.sender == who[3] and m.receiver == who[1]:
            return replace(m, payload=bytes(32) + m.payload[32:])
        if name == "update-to-party" and m.kind == "update" and m.sender == who[1]:
            return replace(m, receiver=who[2])
        if name == "model-from-party" and m.kind == "keys" and m.sender == who[3] and m.receiver == who[1]:
            return replace(m, kind="model", round=1)
        if name == "late-result" and m.kind == "result-hash":
            return replace(m, round=2)
        return m

    return change


TAMPER = {
    "corrupt-update": "aggregated model entries are out of range",
    "corrupt-weight": "aggregated weight .* is impossible",
    "corrupt-self-seed-share": "self-mask seed do not match its commitment",
    "corrupt-key-share": "mask key",
    "short-update": "'update' message from .* bytes, expected",
    "nan-model": "non-finite weight",
    "wrong-round-model": "global model for round 3 arrived while in round 1",
    "readmit": "re-admits a party that had dropped out",
    "small-unmask-set": "fewer than 3; refusing to reveal shares",
    "bad-public-key": "X25519 public key of party #3 is invalid",
    "update-to-party": "unexpected message round 1 kind 'update'",
    "model-from-party": "'model' message from .*, who is not the aggregator",
    "late-result": "result hash arrived",
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_messages_are_refused(case: str) -> None:
    who = names(4)
    drops = {who[3]: 2} if case in ("corrupt-key-share", "readmit") else {}
    parties = make_parties(synthetic(SIZES_5[:4]), base_params(rounds=2, simulate_dropout=drops), recipient=0)
    with pytest.raises(ProtocolError, match=TAMPER[case]):
        tamper_run(parties, tamper_case(case))


def test_duplicates_and_strangers_are_refused() -> None:
    parties = make_parties(synthetic(SIZES_5[:4]), base_params(rounds=2))
    msgs = [m for p in parties for m in p.start()]
    a = parties[1]
    keys = next(m for m in msgs if m.receiver == a.ctx.me and m.kind == "keys")
    a.receive(keys)
    with pytest.raises(ProtocolError, match="duplicate 'keys'"):
        a.receive(keys)
    with pytest.raises(ProtocolError, match="not a peer"):
        a.receive(replace(keys, sender="0xmallory"))
    with pytest.raises(ProtocolError, match="delivered to"):
        a.receive(replace(keys, receiver=parties[2].ctx.me))
    shares = next(m for m in msgs if m.receiver == a.ctx.me and m.kind == "shares")
    with pytest.raises(ProtocolError, match="bytes, expected"):
        a.receive(replace(shares, payload=shares.payload[:-1]))
    bad = bytes([0xFF]) * secagg.ELEMENT_BYTES + shares.payload[secagg.ELEMENT_BYTES :]
    with pytest.raises(ProtocolError, match="not a field element"):
        a.receive(replace(shares, payload=bad))
    fresh = make_parties(synthetic(SIZES_5[:4]), base_params(rounds=2))[1]
    with pytest.raises(ProtocolError, match="before start"):
        fresh.receive(keys)
    fresh.start()
    with pytest.raises(ProtocolError, match="called twice"):
        fresh.start()


# -- params and data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"features": FEATURES}, "'label_column' is required"),
        (base_params(epochs=3), "unknown keys"),
        (base_params(features=[]), "non-empty list"),
        (base_params(features=["f0", "f0"]), "twice"),
        (base_params(features=["label"]), "cannot also be a feature"),
        (base_params(model="svm"), "'model' must be one of"),
        (base_params(hidden=[4]), "only for model 'mlp'"),
        (base_params(model="mlp", hidden=[4, 4, 4]), "one or two layer widths"),
        (base_params(model="mlp", hidden=[0]), "layer widths"),
        (base_params(model="mlp", activation="gelu"), "'activation' must be one of"),
        (base_params(rounds=0), "'rounds' must be between"),
        (base_params(local_epochs=1.5), "'local_epochs' must be an integer"),
        (base_params(learning_rate=0), "'learning_rate' must be > 0"),
        (base_params(learning_rate=float("nan")), "finite number"),
        (base_params(batch_size=True), "'batch_size' must be an integer"),
        (base_params(l2=-1), "'l2' must be >= 0"),
        (base_params(weighting="rows"), "'weighting' must be one of"),
        (base_params(standardize={"mean": [0.0] * D}), "exactly the keys"),
        (base_params(standardize={"mean": [0.0] * D, "std": [1.0] * (D - 1)}), "one per feature"),
        (base_params(standardize={"mean": [0.0] * D, "std": [0.0] * D}), "must be > 0"),
        (base_params(dropout_tolerance="yes"), "true or false"),
        (base_params(dropout_tolerance=False, threshold=2), "only meaningful"),
        (base_params(threshold=1), "'threshold' must be an integer >= 2"),
        (base_params(simulate_dropout=[1]), "must be an object"),
        (base_params(simulate_dropout={"0xparty1": 6}), "between 1 and rounds=5"),
        (base_params(simulate_dropout={"0xparty1": {"round": 2, "phase": "late"}}), "phase must be one of"),
        (base_params(simulate_dropout={"0xparty1": {"when": 2}}), "must be a round or an object"),
        (base_params(seed=-1), "'seed' must be between"),
        (base_params(model="mlp", hidden=[4096, 4096]), "more than"),
    ],
)
def test_invalid_params_are_refused(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        FedAvgProtocol.validate_params(params)
    with pytest.raises(ProtocolError, match=match):
        make_parties(synthetic(SIZES_3), params)


@pytest.mark.parametrize(
    ("n", "params", "match"),
    [
        (3, base_params(threshold=3), "between 2 and N - 1 = 2"),
        (4, base_params(simulate_dropout={"0xparty9": 2}), "not a participant"),
        (4, base_params(simulate_dropout={"0xparty0": 2}), "recipient aggregates and cannot drop out"),
    ],
)
def test_params_checked_against_the_participants(n: int, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        make_parties(synthetic(SIZES_5[:n]), params, recipient=0)


def test_two_parties_are_refused() -> None:
    with pytest.raises(ProtocolError, match="at least 3"):
        make_parties(synthetic(SIZES_3[:2]), base_params())


def test_validated_params_validate_again() -> None:
    for params in [base_params(), base_params(model="mlp", simulate_dropout={"0xParty1": 2})]:
        once = FedAvgProtocol.validate_params(params)
        assert FedAvgProtocol.validate_params(once) == once
    assert once["simulate_dropout"] == {"0xparty1": {"round": 2, "phase": "update"}}
    assert once["hidden"] == [16] and once["activation"] == "relu" and once["threshold"] is None


def test_default_threshold_is_a_strict_majority() -> None:
    for n, t in [(3, 2), (4, 3), (5, 3), (7, 4)]:
        assert make_parties(synthetic([20] * n), base_params())[0].threshold == t


def test_bad_labels_and_features_are_data_errors() -> None:
    (x, y), *_ = synthetic([30])
    table = to_table(x, y)
    cols = {name: list(table.column(name)) for name in table.names}
    cols["label"][4] = "2"
    parties = make_parties(synthetic([30, 30, 30]), base_params())
    parties[1].data = Table(cols)
    with pytest.raises(DataError, match=r"row 5.*label '2' is not 0 or 1"):
        parties[1].start()
    cols["label"][4] = "1"
    cols["f2"][7] = "nan"
    parties[2].data = Table(cols)
    with pytest.raises(DataError, match=r"row 8.*not a finite number"):
        parties[2].start()


def test_diverging_training_is_a_clear_error() -> None:
    params = base_params(learning_rate=100.0, rounds=3, model="mlp", hidden=[64], activation="relu")
    data = [(x * 1e4, y) for x, y in synthetic(SIZES_3)]
    with pytest.raises(ProtocolError, match="training diverged"):
        run_local(make_parties(data, params))


def test_shamir_round_trip_and_threshold() -> None:
    rnd = bytes(range(82)) * 4
    secret = int.from_bytes(hashlib.sha256(b"s").digest(), "big")
    shares = secagg.share(secret, 3, [1, 2, 3, 4, 5], rnd)
    assert secagg.reconstruct([(1, shares[0]), (3, shares[2]), (5, shares[4])]) == secret
    assert secagg.reconstruct([(2, shares[1]), (4, shares[3]), (5, shares[4]), (1, shares[0])]) == secret
    assert secagg.reconstruct([(1, shares[0]), (2, shares[1])]) != secret
