"""Private query (匿踪查询) over real nodes: the querier learns the values of its keys that
the holder has and nothing else; the holder's preprocessed table is cached across queries,
and the querier's copy of it makes a repeat query in the epoch cost no table on the wire."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pcn.chain.types import TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.runtime.operations import read_result, submit_task
from tests.nodes import Network, approve_all, network_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("query-net")
    yield from network_fixture(root, deployment, ["bank", "telecom"], rows=1500)
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


def _query(net: Network, epoch: str = "2026-11") -> dict:
    return _query_task(net, epoch)[1]


def _query_task(net: Network, epoch: str) -> tuple[int, dict]:
    bank, telecom = net.by_name("bank"), net.by_name("telecom")
    sub = submit_task(
        bank.ledger,
        algorithm="private-query",
        dataset_ids=[bank.dataset_id, telecom.dataset_id],
        params={"value_columns": ["income", "region"], "epoch": epoch},
        recipient="bank",
    )
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id) is TaskStatus.COMPLETED
    got = read_result(bank.ctx, sub.task_id)
    assert got["matches_chain"] is True
    return sub.task_id, got["result"]


def test_querier_gets_exactly_the_matching_rows(net: Network) -> None:
    bank, telecom = net.by_name("bank"), net.by_name("telecom")
    held = {
        cid: (f"{inc:.2f}", reg)
        for cid, inc, reg in zip(
            telecom.values["customer_id"], telecom.values["income"], telecom.values["region"], strict=True
        )
    }
    asked = set(bank.values["customer_id"].tolist())
    result = _query(net)
    expected_hits = asked & set(held)
    assert set(result["hits"]) == expected_hits and expected_hits
    assert set(result["misses"]) == asked - set(held)
    for key, rows in result["hits"].items():
        assert [(r["income"], r["region"]) for r in rows] == [held[key]]
    assert result["queried"] == len(asked)
    assert result["table_rows"] == len(held)


def test_second_query_in_the_same_epoch_reuses_the_holders_preprocessing(net: Network) -> None:
    telecom = net.by_name("telecom")
    cache = telecom.config.data_path / "cache" / "private-query"
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.bin")}
    assert before, "the first query left no preprocessed table in the holder's cache"
    first = _query(net)
    after = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.bin")}
    assert set(after) == set(before)  # nothing rebuilt
    assert any(after[k] > before[k] for k in before)  # and the cached table was read
    assert first["hits"]
    _query(net, epoch="2026-12")  # a new key epoch preprocesses anew
    assert len(list(cache.glob("*.bin"))) == len(before) + 1


def test_a_repeat_query_in_the_epoch_does_not_ship_the_table(net: Network) -> None:
    bank, telecom = net.by_name("bank"), net.by_name("telecom")

    def holder_sent(task_id: int) -> int:
        (done,) = [e for e in telecom.ctx.log.entries() if e.task_id == task_id and e.action == "protocol-done"]
        return int(done.data["sent"])

    cold_id, cold = _query_task(net, "2027-03")
    warm_id, warm = _query_task(net, "2027-03")
    assert warm == cold and cold["hits"]
    # cold: the table head, its chunks, the evaluated batches; warm: the same without the chunks
    assert holder_sent(warm_id) < holder_sent(cold_id)
    kept = list((bank.config.data_path / "cache" / "private-query").glob("*.bin"))
    assert kept, "the querier kept no copy of the table"
