"""PSI over real nodes (Celery workers, signed HTTP, chain receipts) against plain Python sets,
two and three parties, IDs or only the size; the intersection feeds a later task as a
derived, fingerprinted dataset. Every two-party case runs with both engines, ECDH-PSI ("psi")
and OT-extension PSI ("psi-ot", two parties only: a third party is refused at submit, and by
the nodes when a raw contract call submits it anyway)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pcn.chain.types import PolicyGrants, PolicyLimits, RefusalReason, TaskStatus
from pcn.devnet.anvil import rpc_call
from pcn.runtime.operations import InvalidParameters, derive_aligned_dataset, read_result, submit_task
from tests.nodes import Network, approve_all, network_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ENGINES = ["psi", "psi-ot"]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("psi-net")
    yield from network_fixture(root, deployment, ["bank", "telecom", "insurer"], rows=2500)
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


def _psi(
    net: Network, names: list[str], params: dict | None = None, recipient: str = "bank", algorithm: str = "psi"
) -> tuple[int, dict]:
    orgs = [net.by_name(n) for n in names]
    sub = submit_task(
        net.by_name(recipient).ledger,
        algorithm=algorithm,
        dataset_ids=[o.dataset_id for o in orgs],
        params=params or {},
        recipient=recipient,
    )
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id) is TaskStatus.COMPLETED
    got = read_result(net.by_name(recipient).ctx, sub.task_id)
    assert got["matches_chain"] is True
    assert got["result"]["algorithm"] == algorithm
    return sub.task_id, got["result"]


def _ids(net: Network, name: str) -> set[str]:
    return set(net.by_name(name).values["customer_id"].tolist())


@pytest.mark.parametrize("algorithm", ENGINES)
def test_two_party_intersection_equals_python_sets(net: Network, algorithm: str) -> None:
    task_id, result = _psi(net, ["bank", "telecom"], algorithm=algorithm)
    expected = _ids(net, "bank") & _ids(net, "telecom")
    assert expected and set(result["ids"]) == expected
    assert result["size"] == len(expected)
    # only the recipient holds a result
    assert not (net.by_name("telecom").ctx.results_dir() / f"{task_id}.sealed").exists()


def test_three_party_intersection_with_the_recipient_in_the_middle(net: Network) -> None:
    _, result = _psi(net, ["bank", "telecom", "insurer"], recipient="telecom")
    expected = _ids(net, "bank") & _ids(net, "telecom") & _ids(net, "insurer")
    assert expected and set(result["ids"]) == expected


@pytest.mark.parametrize("algorithm", ENGINES)
def test_cardinality_only(net: Network, algorithm: str) -> None:
    _, result = _psi(net, ["bank", "insurer"], {"output": "cardinality"}, algorithm=algorithm)
    assert result["size"] == len(_ids(net, "bank") & _ids(net, "insurer"))
    assert "ids" not in result


@pytest.mark.parametrize("algorithm", ENGINES)
def test_intersection_becomes_a_derived_dataset_that_a_later_task_uses(net: Network, algorithm: str) -> None:
    bank, telecom = net.by_name("bank"), net.by_name("telecom")
    task_id, result = _psi(net, ["bank", "telecom"], algorithm=algorithm)
    everyone = [o.address for o in net.orgs]
    ds = net.admin.dataset(bank.dataset_id)
    derived = derive_aligned_dataset(
        bank.ctx,
        task_id,
        name="bank x telecom aligned sample",
        limits=PolicyLimits(5, ds.expiry, 0),
        grants=PolicyGrants(list(net.algorithms.values()), everyone, everyone),
    )
    assert derived.row_count == result["size"]
    on_chain = net.admin.fingerprint(derived.dataset_id)
    assert "0x" + on_chain.merkle_root.hex() == derived.merkle_root
    # the aligned sample is an input like any other: joint statistics over it and telecom's data
    sub = submit_task(
        bank.ledger,
        algorithm="stats",
        dataset_ids=[derived.dataset_id, telecom.dataset_id],
        params={"column": "income", "statistics": ["count"]},
        recipient="bank",
    )
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id) is TaskStatus.COMPLETED
    count = read_result(bank.ctx, sub.task_id)["result"]["groups"]["__all__"]["count"]
    assert count == result["size"] + len(telecom.values["customer_id"])


def _register_ids(net: Network, name: str, ids: list[str], tag: str) -> int:
    """Register a dataset holding exactly `ids` (in this order, duplicates kept) for one org."""
    import csv

    from pcn.runtime.operations import register_dataset

    org = net.by_name(name)
    path = org.config.data_path / f"ids-{tag}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "income", "region"])
        w.writerows([i, "1.00", "north"] for i in ids)
    everyone = [o.address for o in net.orgs]
    ds = net.admin.dataset(org.dataset_id)
    return register_dataset(
        org.ctx,
        path,
        name=f"{name} {tag}",
        id_column="customer_id",
        limits=PolicyLimits(5, ds.expiry, 0),
        grants=PolicyGrants(list(net.algorithms.values()), everyone, everyone),
    ).dataset_id


CASES = {
    "duplicates": (["a", "a", "b", "c", "c", "c"], ["c", "c", "a", "z"], ["a", "c", "c", "q"]),
    "empty": (["a", "b", "c"], [], ["a", "b"]),
    "disjoint": (["a1", "a2", "a3"], ["b1", "b2"], ["c1"]),
    "identical": ([f"id{i}" for i in range(300)],) * 3,
    "skewed": ([f"k{i}" for i in range(5)], [f"k{i}" for i in range(3, 4000)], [f"k{i}" for i in range(0, 4000, 2)]),
    "unnormalised": ([" Ana ", "Zoë", "x"], ["Ana", "Zoe\u0308", "y"], ["Ana", "Zoë", "x"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("algorithm", "parties"), [("psi", 2), ("psi", 3), ("psi-ot", 2)])
def test_adversarial_sets_equal_python_set_intersection(net: Network, case: str, algorithm: str, parties: int) -> None:
    names = ["bank", "telecom", "insurer"][:parties]
    sets = CASES[case][:parties]
    ids = [_register_ids(net, n, list(s), f"{case}-{algorithm}-{parties}") for n, s in zip(names, sets, strict=True)]
    sub = submit_task(net.by_name("bank").ledger, algorithm=algorithm, dataset_ids=ids, params={}, recipient="bank")
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id) is TaskStatus.COMPLETED
    result = read_result(net.by_name("bank").ctx, sub.task_id)["result"]

    import unicodedata

    def norm(s: str) -> str:  # the stated rules: strip, NFC, case kept
        return unicodedata.normalize("NFC", s.strip())

    expected = set.intersection(*({norm(x) for x in s if norm(x)} for s in sets))
    assert set(result["ids"]) == expected
    assert result["size"] == len(expected) and result["algorithm"] == algorithm
    assert result["party_sizes"][net.by_name("bank").address] == len({norm(x) for x in sets[0] if norm(x)})


def test_a_three_party_psi_ot_is_refused_at_submit_and_by_the_nodes(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psi-ot is a two-party protocol: `submit_task` (the CLI's path) refuses a third party
    before anything reaches the chain; a requester whose client skips that check (a raw
    contract call) gets the task refused INVALID_PARAMETERS by every node before any data is read."""
    ledger = net.by_name("bank").ledger
    datasets = [o.dataset_id for o in net.orgs]
    tasks_before = ledger.task_count()
    with pytest.raises(InvalidParameters, match="psi-ot takes exactly 2 participants, not 3"):
        submit_task(ledger, algorithm="psi-ot", dataset_ids=datasets, params={}, recipient="bank")
    assert ledger.task_count() == tasks_before  # nothing reached the chain
    monkeypatch.setattr("pcn.runtime.operations.check_participants", lambda *_args: None)
    sub = submit_task(ledger, algorithm="psi-ot", dataset_ids=datasets, params={}, recipient="bank")
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id) is TaskStatus.REFUSED
    task = net.admin.task(sub.task_id)
    assert task.refusal_reason is RefusalReason.INVALID_PARAMETERS
    details = []
    for org in net.orgs:
        entries = [e for e in org.ctx.log.entries() if e.task_id == sub.task_id]
        assert not any(e.action in ("verify", "protocol-done") for e in entries), org.name
        details += [e.data["detail"] for e in entries if e.action == "refuse"]
    assert details and all("psi-ot takes exactly 2 participants, not 3" in d for d in details)


@pytest.fixture(scope="module")
def small_inbox_net(tmp_path_factory: pytest.TempPathFactory, deployment, devnet) -> Iterator[Network]:
    """Two nodes whose mailboxes keep at most 100 KiB per sender and task: psi-ot's rows for
    2,500 recipient IDs (64 bytes per cuckoo bin, 213 kB) do not fit at the sender."""
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    root = tmp_path_factory.mktemp("psi-small-inbox")
    yield from network_fixture(root, deployment, ["lender", "carrier"], rows=2500, mailbox_quotas=(102_400, 102_400))
    rpc_call(devnet.rpc_url, "evm_revert", [snap])


def test_a_sender_whose_inbox_cannot_hold_the_rows_refuses_naming_the_quota(small_inbox_net: Network) -> None:
    """The sender learns m from the recipient's 'ot-reply' and refuses, naming the quota to
    raise and the bytes it needs. Here the rows (213 kB, one message) follow the reply at
    once, so the sender's mailbox may answer them 413 before its worker has read the reply:
    then the recipient's refusal ("413 quota-exceeded") lands first and the sender is aborted.
    Either way the task ends refused for the quota, and a sender that refuses says why. (At
    scale the reply comes seconds before the rows; the driver's check is tested alone in
    test_protocol_driver.)"""
    net = small_inbox_net
    lender, carrier = net.by_name("lender"), net.by_name("carrier")
    datasets = [lender.dataset_id, carrier.dataset_id]
    sub = submit_task(lender.ledger, algorithm="psi-ot", dataset_ids=datasets, params={}, recipient="lender")
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id) is TaskStatus.REFUSED
    assert net.admin.task(sub.task_id).refusal_reason is RefusalReason.PROTOCOL_FAILURE
    refusals = {
        o.name: e.data["detail"]
        for o in net.orgs
        for e in o.ctx.log.entries()
        if e.task_id == sub.task_id and e.action == "refuse"
    }
    assert refusals and set(refusals) <= {"lender", "carrier"}
    if "carrier" in refusals:
        detail = refusals["carrier"]
        assert "psi-ot will bring up to 0.2 MiB from" in detail and "mailbox_sender_quota of 0.1 MiB" in detail
        needed = int(detail.split("at least ")[1].split(" bytes")[0].replace(",", ""))
        assert needed > 64 * 3328  # the rows alone: 64 bytes for each of the 3,328 bins of 2,500 IDs
    if "lender" in refusals:
        assert "413 quota-exceeded" in refusals["lender"]
