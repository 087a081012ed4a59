"""Shared pieces of the auditor tests: fresh stores on SQLite and PostgreSQL, a rich chain
scenario built by direct ledger calls, and small chain helpers. (No tests here.)

PostgreSQL: `PCN_TEST_POSTGRES_URL` (default postgresql+psycopg://postgres@127.0.0.1:5432/test);
each test gets its own schema, dropped afterwards. Without the server or the psycopg driver
the PostgreSQL variants are skipped, the SQLite ones always run.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account

from pcn.auditor.indexer import Indexer
from pcn.auditor.store import Store
from pcn.auditor.verify import input_commitment
from pcn.chain.deployment import Deployment
from pcn.chain.ledger import Ledger
from pcn.chain.types import Fingerprint, PolicyLimits, Receipt, RefusalReason, epsilon_to_fixed
from pcn.devnet.anvil import rpc_call
from pcn.devnet.deploy import devnet_key
from tests.helpers import Consortium, build_consortium, h, request_for

PG_URL = os.environ.get("PCN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


@functools.cache
def postgres_unavailable() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "the psycopg driver is not installed"
    try:
        psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3).close()
    except Exception as exc:
        return f"no PostgreSQL at {PG_URL}: {exc}"
    return None


class StoreFactory:
    """Fresh, empty stores for one test on one backend."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self._schemas: list[str] = []
        self._stores: list[Store] = []

    def url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp_path / f'auditor-{uuid.uuid4().hex[:8]}.sqlite'}"
        import psycopg

        schema = f"aud_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self._schemas.append(schema)
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"

    def store(self) -> Store:
        st = Store(self.url())
        self._stores.append(st)
        return st

    def close(self) -> None:
        for st in self._stores:
            st.dispose()
        if not self._schemas:
            return
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            for schema in self._schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """The body of each test module's `stores` fixture (parametrised over BACKENDS)."""
    if request.param == "postgresql":
        why = postgres_unavailable()
        if why:
            pytest.skip(why)
    factory = StoreFactory(request.param, tmp_path)
    yield factory
    factory.close()


# ---------------------------------------------------------------------------- chain helpers


def mine(devnet_url: str, blocks: int = 1) -> None:
    rpc_call(devnet_url, "anvil_mine", [blocks])


def advance(devnet_url: str, seconds: int) -> None:
    rpc_call(devnet_url, "evm_increaseTime", [seconds])
    rpc_call(devnet_url, "evm_mine")


def indexer(deployment: Deployment, url: str | Store, **kw: object) -> Indexer:
    kw.setdefault("confirmations", 0)
    return Indexer(Ledger(deployment), url, **kw)  # type: ignore[arg-type]


def auditor_ledger(deployment: Deployment) -> Ledger:
    return Ledger(deployment, account=Account.from_key(devnet_key(1)))


def good_receipt(c: Consortium, i: int, result: bytes, algorithm: bytes | None = None) -> Receipt:
    """The receipt an honest pcn node posts: its input fingerprint commits to the registered
    Merkle root of its dataset (build_consortium registers root-<i> as version 1)."""
    org = c.orgs[i]
    root = "0x" + h(f"root-{i}").hex()
    return Receipt(
        result,
        h(f"transcript-{org.address}"),
        bytes.fromhex(input_commitment([root]).removeprefix("0x")),
        algorithm or c.algorithm,
        h(f"deleted-{org.address}"),
        100,
        200,
    )


def run_task(
    c: Consortium,
    orgs: list[int],
    result: bytes = b"",
    epsilon: float = 0.5,
    deadline_in: int = 3600,
    min_survivors: int | None = None,
) -> int:
    """Submit (by the first org), approve by every owner, start everywhere; receipts when
    `result` is given."""
    request = request_for(
        c,
        requester=orgs[0],
        recipient=orgs[0],
        epsilon=epsilon,
        orgs=orgs,
        deadline_in=deadline_in,
        min_survivors=min_survivors,
    )
    task_id, _ = c.orgs[orgs[0]].submit_task(request)
    for i in orgs:
        c.orgs[i].approve(task_id, c.orgs[i].request_hash(task_id))
    for i in orgs:
        c.orgs[i].start(task_id)
    if result:
        for i in orgs:
            c.orgs[i].submit_receipt(task_id, good_receipt(c, i, h(result.decode())))
    return task_id


@dataclass
class Scenario:
    c: Consortium
    completed: int = 0
    refused: int = 0
    cancelled: int = 0
    disputed: int = 0
    relayer: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def populate(deployment: Deployment) -> Scenario:
    """Everything the contracts can say, once: admissions, an auditor role, algorithms (one
    deprecated), datasets with policy changes and a new version, a completed task with a
    relayed EIP-712 approval, a refused, a cancelled and a disputed task, log anchors, a
    suspension and reinstatement, an endpoint change."""
    c = build_consortium(deployment, n_orgs=3)
    bank, telecom, hospital = c.orgs
    sc = Scenario(c)
    auditor = auditor_ledger(deployment)
    c.admin.grant_auditor(auditor.address)
    sc.relayer = auditor.address

    # A completed task; the hospital approves by signature, the auditor account relays it.
    task_id, _ = bank.submit_task(request_for(c, epsilon=0.5))
    bank.approve(task_id, bank.request_hash(task_id))
    telecom.approve(task_id, telecom.request_hash(task_id))
    auditor.approve_by_sig(
        hospital.sign_approval(task_id, hospital.request_hash(task_id), deadline=hospital.block_timestamp() + 600)
    )
    for org in c.orgs:
        org.start(task_id)
    for i, org in enumerate(c.orgs):
        org.submit_receipt(task_id, good_receipt(c, i, h("joint mean")))
    sc.completed = task_id

    sc.refused, _ = bank.submit_task(request_for(c, orgs=[0, 1]))
    bank.approve(sc.refused, bank.request_hash(sc.refused))
    telecom.approve(sc.refused, telecom.request_hash(sc.refused))
    telecom.refuse(sc.refused, RefusalReason.FINGERPRINT_MISMATCH, h("fingerprint differs"))

    sc.cancelled, _ = bank.submit_task(request_for(c, orgs=[0, 1]))
    bank.cancel(sc.cancelled)

    sc.disputed = run_task(c, [0, 1, 2], epsilon=0.25)
    for i, org in enumerate(c.orgs):
        org.submit_receipt(sc.disputed, good_receipt(c, i, h("odd" if i == 2 else "even")))

    ds_hospital = c.datasets[hospital.address]
    hospital.set_policy_limits(ds_hospital, PolicyLimits(20, hospital.block_timestamp() + 86400, epsilon_to_fixed(9)))
    hospital.set_requester_allowed(ds_hospital, telecom.address, False)
    telecom.publish_version(c.datasets[telecom.address], Fingerprint(h("root-1-v2"), h("schema"), h("meta-v2"), 1500))

    bank.anchor_log(3, h("bank-head-3"))
    bank.anchor_log(9, h("bank-head-9"))
    telecom.anchor_log(4, h("telecom-head-4"))

    c.admin.suspend(hospital.address)
    c.admin.reinstate(hospital.address)
    telecom.update_endpoint("http://127.0.0.1:9999")
    bank.register_algorithm(h("algorithm-psi"), "psi", "0.9.0", h("psi description"))
    bank.deprecate_algorithm(h("algorithm-psi"))
    return sc
