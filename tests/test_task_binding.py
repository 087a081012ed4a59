"""#13.3: per-task secrets and protocol domains are bound to the deployment and the request.

Task ids are a counter of one TaskManager: a redeployment (or a devnet reset) with the same
chain id starts again at task 1. Secrets derived from (chain id, task id) alone then repeat:
the same additive shares, masks, DP noise and PSI blinding keys for two different
computations, and their differences leak the inputs. These tests run that redeployment on a
real anvil and check that nothing repeats, and that the binding a node derives is stable (a
resumed worker must derive the same secrets)."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from eth_account import Account

from pcn.algorithms.base import PartyContext, ProtocolError, secret_permutation
from pcn.algorithms.stats.protocol import StatsProtocol
from pcn.chain.binding import request_hash, task_binding
from pcn.chain.deployment import Deployment
from pcn.chain.ledger import Ledger
from pcn.data.table import Table
from pcn.devnet.anvil import DevnetStatus, rpc_call
from pcn.devnet.deploy import deploy, devnet_key
from pcn.runtime.execute import task_seed
from tests.helpers import build_consortium, request_for

ORG_KEY = bytes(Account.from_key(devnet_key(2)).key)


def first_task(deployment: Deployment, params_label: str = "params") -> tuple[Ledger, int]:
    c = build_consortium(deployment)
    req = replace(request_for(c), params_hash=hashlib.sha256(params_label.encode()).digest())
    task_id, _ = c.org(0).submit_task(req)
    return c.org(0), task_id


def stats_shares(seed: bytes, binding: bytes, values: list[str]) -> list[bytes]:
    """What party 0 of a two-party stats task sends its peer first (its additive shares)."""
    who = ["0xaa", "0xbb"]
    ctx = PartyContext(1, who[0], who, who[0], {"column": "income"}, seed, binding=binding)
    return [m.payload for m in StatsProtocol.create(ctx, Table({"income": values})).start()]


def test_a_redeployment_with_the_same_chain_id_does_not_repeat_any_task_secret(
    devnet: DevnetStatus, deployment: Deployment, snapshot: None, tmp_path: Path
) -> None:
    a_ledger, a_task = first_task(deployment)
    b_ledger, b_task = first_task(deploy(devnet.rpc_url, out=tmp_path / "again.json"))
    assert a_task == b_task == 1 and a_ledger.chain_id == b_ledger.chain_id
    assert a_ledger.deployment.contracts["TaskManager"].address != b_ledger.deployment.contracts["TaskManager"].address

    a_binding, b_binding = a_ledger.task_binding(a_task), b_ledger.task_binding(b_task)
    assert a_binding != b_binding
    a_seed, b_seed = task_seed(ORG_KEY, a_binding), task_seed(ORG_KEY, b_binding)
    assert a_seed != b_seed
    # What a peer sees: shares of two different inputs. With a repeated seed their difference
    # is the difference of the inputs; with distinct seeds they are unrelated.
    first, second = stats_shares(a_seed, a_binding, ["10"]), stats_shares(b_seed, b_binding, ["11"])
    assert first != second
    assert stats_shares(a_seed, a_binding, ["10"]) == first  # deterministic: a resume re-sends the same


def test_a_reset_chain_that_reuses_the_task_id_gets_another_binding(
    devnet: DevnetStatus, deployment: Deployment, snapshot: None
) -> None:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    ledger, task_id = first_task(deployment, "first request")
    before = ledger.task_binding(task_id)
    assert ledger.task_binding(task_id) == before  # stable while the task lives: resumes agree
    rpc_call(devnet.rpc_url, "evm_revert", [snap])  # the devnet is reset; task ids restart
    ledger, again = first_task(deployment, "another request")
    assert again == task_id
    assert ledger.task_binding(again) != before


def test_every_request_field_changes_the_binding() -> None:
    from pcn.chain.types import RefusalReason, Task, TaskStatus

    base = Task(
        7, "0x" + "11" * 20, TaskStatus.AUTHORISED, 2, 2, 0, 0, RefusalReason.NONE,
        "0x" + "22" * 20, 1000, 5, 100, 200, b"\x01" * 32, b"\x02" * 32, bytes(32),
    )  # fmt: skip
    datasets, roots, parts = [(1, 1), (2, 3)], [b"\x03" * 32, b"\x04" * 32], ["0x" + "11" * 20, "0x" + "22" * 20]
    tm = "0x" + "44" * 20
    ref = request_hash(31337, tm, base, datasets, roots, parts, 2)
    variants = [
        request_hash(31338, tm, base, datasets, roots, parts, 2),
        request_hash(31337, "0x" + "45" * 20, base, datasets, roots, parts, 2),
        request_hash(31337, tm, replace(base, task_id=8), datasets, roots, parts, 2),
        request_hash(31337, tm, replace(base, requester="0x" + "33" * 20), datasets, roots, parts, 2),
        request_hash(31337, tm, replace(base, algorithm_hash=b"\x09" * 32), datasets, roots, parts, 2),
        request_hash(31337, tm, replace(base, params_hash=b"\x09" * 32), datasets, roots, parts, 2),
        request_hash(31337, tm, replace(base, result_recipient="0x" + "11" * 20), datasets, roots, parts, 2),
        request_hash(31337, tm, replace(base, deadline=1001), datasets, roots, parts, 2),
        request_hash(31337, tm, replace(base, epsilon=6), datasets, roots, parts, 2),
        request_hash(31337, tm, replace(base, created_at=101), datasets, roots, parts, 2),
        request_hash(31337, tm, base, [(1, 2), (2, 3)], roots, parts, 2),
        request_hash(31337, tm, base, [(1, 1), (3, 3)], roots, parts, 2),
        request_hash(31337, tm, base, datasets, [b"\x03" * 32, b"\x05" * 32], parts, 2),
        request_hash(31337, tm, base, datasets, roots, list(reversed(parts)), 2),
        request_hash(31337, tm, base, datasets, roots, parts, 1),
    ]
    assert len({ref, *variants}) == len(variants) + 1
    bindings = {
        task_binding(31337, tm, 7, ref),
        task_binding(31338, tm, 7, ref),
        task_binding(31337, "0x" + "45" * 20, 7, ref),
        task_binding(31337, tm, 8, ref),
        task_binding(31337, tm, 7, variants[0]),
    }
    assert len(bindings) == 5
    with pytest.raises(ValueError):
        request_hash(31337, tm, base, datasets, roots[:1], parts, 2)


def test_the_python_request_hash_equals_the_contracts_and_feeds_the_binding(
    deployment: Deployment, snapshot: None
) -> None:
    """#13.6: one source of truth. The TaskManager computes the request hash at submission and
    emits it; the Python recomputation from the task's fields equals it on a real anvil, and the
    node's binding takes it from the chain."""
    c = build_consortium(deployment)
    ledger = c.org(0)
    task_id, res = ledger.submit_task(request_for(c, orgs=[0, 1], epsilon=0.25))
    on_chain = ledger.request_hash(task_id)
    assert res.event("TaskRequestHashed").args["requestHash"] == "0x" + on_chain.hex()
    assert ledger.computed_request_hash(task_id) == on_chain
    tm = deployment.contracts["TaskManager"].address
    assert ledger.task_binding(task_id) == task_binding(ledger.chain_id, tm, task_id, on_chain)


def test_protocols_refuse_a_context_without_a_32_byte_binding() -> None:
    who = ["0xaa", "0xbb"]
    ctx = PartyContext(1, who[0], who, who[0], {"column": "income"}, bytes(32), binding=b"short")
    with pytest.raises(ProtocolError, match="binding"):
        StatsProtocol.create(ctx, Table({"income": ["1"]}))


# -- #13.4: shuffles come from a CSPRNG ---------------------------------------------------------


def test_secret_permutation_is_a_uniform_deterministic_permutation() -> None:
    key = hashlib.sha256(b"k").digest()
    p = secret_permutation(key, 1000)
    assert sorted(p.tolist()) == list(range(1000))
    assert np.array_equal(p, secret_permutation(key, 1000))
    assert not np.array_equal(p, secret_permutation(hashlib.sha256(b"other").digest(), 1000))
    # All 24 orders of 4 items, 24,000 keys: each order 1,000 times in expectation. Fixed keys,
    # so the statistic is a fixed number; 49.7 is chi-square(23)'s 0.999 quantile.
    counts = dict.fromkeys(itertools.permutations(range(4)), 0)
    for i in range(24_000):
        counts[tuple(secret_permutation(hashlib.sha256(i.to_bytes(4, "big")).digest(), 4).tolist())] += 1
    chi2 = sum((c - 1000) ** 2 / 1000 for c in counts.values())
    assert chi2 < 49.7, chi2
    with pytest.raises(ValueError):
        secret_permutation(b"short", 4)


def test_the_psi_shuffle_is_the_aes_ctr_permutation_of_the_party_seed() -> None:
    """The order in which a PSI party sends its blinded set is the AES-256-CTR permutation of
    its seed (recomputed here independently), not a Mersenne Twister / PCG64 stream."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from pcn.algorithms.psi.protocol import PsiProtocol

    who = ["0xaa", "0xbb"]
    seed = hashlib.sha256(b"party seed").digest()
    ids = [f"id-{i}" for i in range(50)]
    ctx = PartyContext(1, who[1], who, who[0], {"id_column": "id"}, seed)
    proto = PsiProtocol.create(ctx, Table({"id": ids}))
    proto.start()
    key = hashlib.shake_256(b"pcn/secret/" + seed + b"/permutation/psi/shuffle/own").digest(32)
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(8 * len(ids)))
    expected = np.argsort(np.frombuffer(stream, dtype="<u8"), kind="stable")
    assert np.array_equal(proto.secret_permutation("psi/shuffle/own", len(ids)), expected)
    assert not hasattr(proto, "rng")  # the Mersenne-Twister helper every shuffle used is gone
