"""Per-task services (`TaskServices` in a party's context) and the optional protocol features
the base `Protocol` declares: what the runtime hands one task never reaches another, and a
missing model is a clear refusal."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pcn.algorithms import BUILTIN, protocol_class
from pcn.algorithms.base import ModelUnavailable, PartyContext, Protocol, ProtocolError, TaskServices
from pcn.algorithms.hetero_lr import params as hlr_params
from pcn.algorithms.hetero_lr.protocol import HeteroLrProtocol
from pcn.algorithms.hetero_lr_predict.protocol import HeteroLrPredictProtocol
from pcn.algorithms.private_query.encrypted import MemoryTableCache
from pcn.algorithms.private_query.protocol import PrivateQueryProtocol
from pcn.crypto.keys import OrgKeys
from pcn.data.table import Table
from pcn.runtime.config import OrgConfig
from pcn.runtime.context import NodeContext
from pcn.runtime.execute import CHECKPOINT_FILE, task_services

GUEST, HOST = "0xguest", "0xhost"
QUERIER, HOLDER = "0xquerier", "0xholder"


def run_interleaved(*tasks: list[Protocol]) -> None:
    """Run several tasks in this process at once, one delivery of each in turn."""
    queues = [deque(m for p in parties for m in p.start()) for parties in tasks]
    by_name = [{p.ctx.me: p for p in parties} for parties in tasks]
    while any(queues):
        for queue, parties in zip(queues, by_name, strict=True):
            if queue:
                msg = queue.popleft()
                queue.extend(parties[msg.receiver].receive(msg))
    assert all(p.done for parties in tasks for p in parties)


def seed(*parts: object) -> bytes:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


# -- two tasks in one process ------------------------------------------------------------------


def query_task(task_id: int, holder_services: TaskServices) -> list[Protocol]:
    params = {"value_columns": ["v"]}
    who = [QUERIER, HOLDER]

    def context(me: str, services: TaskServices) -> PartyContext:
        return PartyContext(task_id, me, who, QUERIER, params, seed(task_id, me), id_column="id", services=services)

    return [
        PrivateQueryProtocol.create(context(QUERIER, TaskServices()), Table({"id": ["a", "z"]})),
        PrivateQueryProtocol.create(
            context(HOLDER, holder_services), Table({"id": ["a", "b", "c"], "v": ["1", "2", "3"]})
        ),
    ]


def test_two_queries_in_one_process_use_their_own_key_and_cache() -> None:
    asked: dict[str, list[str]] = {"a": [], "b": []}

    def holder_services_of(org: str) -> TaskServices:
        def epoch_key(label: str) -> bytes:
            asked[org].append(label)
            return seed("org", org, label)

        return TaskServices(epoch_key=epoch_key, cache=MemoryTableCache())

    services_a, services_b = holder_services_of("a"), holder_services_of("b")
    task_a, task_b = query_task(1, services_a), query_task(2, services_b)
    run_interleaved(task_a, task_b)
    assert len(asked["a"]) == len(asked["b"]) == 1  # each holder asked its own key service once
    cache_a, cache_b = services_a.cache, services_b.cache
    assert isinstance(cache_a, MemoryTableCache) and isinstance(cache_b, MemoryTableCache)
    assert (cache_a.puts, cache_b.puts) == (1, 1) and cache_a._items.keys() != cache_b._items.keys()
    results = [json.loads(task[0].result() or b"") for task in (task_a, task_b)]
    assert results[0] == results[1] and results[0]["hits"] == {"a": [{"v": "1"}]}


@pytest.fixture
def small_keys() -> Iterator[None]:
    """1024-bit Paillier keys keep this fast; a node never has this allowance."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hlr_params, "TEST_ONLY_KEY_BITS", (1024,))
        yield


def training_task(task_id: int, saved: dict[tuple[str, int], bytes]) -> list[Protocol]:
    rng = np.random.default_rng(task_id)
    ids = [f"id{i}" for i in range(40)]
    x = rng.normal(size=(40, 3))
    y = (x.sum(axis=1) > 0).astype(int)
    tables = {
        GUEST: Table({"id": ids, "g": [repr(v) for v in x[:, 0].tolist()], "y": [str(v) for v in y.tolist()]}),
        HOST: Table({"id": ids, "h1": [repr(v) for v in x[:, 1].tolist()], "h2": [repr(v) for v in x[:, 2].tolist()]}),
    }
    params = {"label_column": "y", "key_bits": 1024, "epochs": 3, "tol": 0.0, "batch_size": 40}

    def sink(me: str) -> TaskServices:
        return TaskServices(save_checkpoint=lambda epochs_done, blob: saved.__setitem__((me, epochs_done), blob))

    who = [GUEST, HOST]
    return [
        HeteroLrProtocol.create(
            PartyContext(task_id, me, who, GUEST, params, seed(task_id, me), id_column="id", services=sink(me)),
            tables[me],
        )
        for me in who
    ]


def test_two_trainings_in_one_process_checkpoint_to_their_own_task(small_keys: None) -> None:
    saved_a: dict[tuple[str, int], bytes] = {}
    saved_b: dict[tuple[str, int], bytes] = {}
    run_interleaved(training_task(11, saved_a), training_task(12, saved_b))
    for task_id, saved in ((11, saved_a), (12, saved_b)):
        assert sorted(saved) == [(GUEST, 1), (GUEST, 2), (HOST, 1), (HOST, 2)]
        assert {(json.loads(blob)["task_id"], json.loads(blob)["party"]) for blob in saved.values()} == {
            (task_id, GUEST),
            (task_id, HOST),
        }


# -- the runtime's services --------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> NodeContext:
    cfg = OrgConfig("org", "http://127.0.0.1:1", "deployment.json", "redis://127.0.0.1:1", str(tmp_path), "http://x")
    ctx = NodeContext(cfg)
    ctx.keys = OrgKeys.create(cfg.keystore_dir, "pw", kdf_iterations=2**4)
    return ctx


def test_runtime_services_are_bound_to_their_task(node: NodeContext) -> None:
    tm = "0x" + "ab" * 20
    first = task_services(node, 5, "hetero-lr", chain_id=31337, task_manager=tm)
    second = task_services(node, 6, "hetero-lr", chain_id=31337, task_manager=tm)
    first.save_checkpoint(1, b"five")
    second.save_checkpoint(2, b"six")
    assert (node.task_dir(5) / CHECKPOINT_FILE).read_bytes() == b"five"
    assert (node.task_dir(6) / CHECKPOINT_FILE).read_bytes() == b"six"
    logged = [(e.action, e.task_id, e.data) for e in node.log.entries()]
    assert logged == [("checkpoint", 5, {"epochs_done": 1}), ("checkpoint", 6, {"epochs_done": 2})]
    # An epoch key outlives a task, but not the deployment.
    assert first.epoch_key("pq-epoch/e") == second.epoch_key("pq-epoch/e") != first.epoch_key("pq-epoch/f")
    redeployed = task_services(node, 5, "hetero-lr", chain_id=31337, task_manager="0x" + "cd" * 20)
    assert redeployed.epoch_key("pq-epoch/e") != first.epoch_key("pq-epoch/e")


def predict_context(me: str, guest: str, services: TaskServices) -> PartyContext:
    return PartyContext(100, me, [guest, HOST], guest, {"model_task": 9}, seed(me), id_column="id", services=services)


def test_a_missing_model_is_a_clear_refusal(node: NodeContext) -> None:
    services = task_services(node, 100, "hetero-lr-predict", chain_id=1, task_manager="0x" + "ab" * 20)
    data = Table({"id": ["a"]})
    me = node.address
    # ModelUnavailable is a ProtocolError: the runtime refuses PROTOCOL_FAILURE with this detail.
    missing = "holds no hetero-lr model of task 9: this node stores no model of task 9"
    with pytest.raises(ModelUnavailable, match=missing):
        HeteroLrPredictProtocol.create(predict_context(me, me, services), data)
    with pytest.raises(ModelUnavailable, match="only its own part of a model"):
        services.load_model(9, HOST)
    with pytest.raises(ModelUnavailable, match="no model store in this context"):
        HeteroLrPredictProtocol.create(predict_context(me, me, TaskServices()), data)


# -- optional features ---------------------------------------------------------------------------


def overrides(cls: type[Protocol], *names: str) -> bool:
    return all(getattr(cls, n) is not getattr(Protocol, n) for n in names)


@pytest.mark.parametrize("kind", sorted(BUILTIN))
def test_a_declared_feature_comes_with_its_methods(kind: str) -> None:
    cls = protocol_class(kind)
    assert cls.dropout_tolerant == overrides(cls, "declare_dropped", "awaiting")
    assert cls.resumable == overrides(cls, "resume", "checkpoint_epoch")


def test_features_are_off_by_default() -> None:
    from pcn.algorithms.stats.protocol import StatsProtocol

    who = ["0xa", "0xb"]
    party = StatsProtocol.create(PartyContext(1, who[0], who, who[0], {"column": "x"}, seed(1)), Table({"x": ["1"]}))
    assert party.model_state() is None and party.checkpoint_epoch == 0 and party.resume_from == {}
    assert party.awaiting() == []
    with pytest.raises(NotImplementedError, match="not dropout-tolerant"):
        party.declare_dropped(["0xb"])
    with pytest.raises(NotImplementedError, match="does not resume"):
        StatsProtocol.resume(party.ctx, party.data, b"{}")
    with pytest.raises(ProtocolError, match="no organisation epoch key"):
        party.ctx.services.epoch_key("label")
