"""Builders for a small consortium on the devnet (used by many tests)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from eth_account import Account

from pcn.chain.deployment import Deployment
from pcn.chain.ledger import Ledger
from pcn.chain.types import Fingerprint, PolicyGrants, PolicyLimits, Receipt, TaskRequest, epsilon_to_fixed
from pcn.devnet.deploy import devnet_key

ORG_NAMES = ("bank", "telecom", "hospital", "dataoffice")
FIRST_ORG_ACCOUNT = 2  # anvil account 0 is the admin, 1 the auditor


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@dataclass
class Consortium:
    admin: Ledger
    orgs: list[Ledger]
    algorithm: bytes
    datasets: dict[str, int] = field(default_factory=dict)  # org address -> dataset id

    def org(self, i: int) -> Ledger:
        return self.orgs[i]


def build_consortium(
    deployment: Deployment,
    n_orgs: int = 3,
    max_uses: int = 10,
    epsilon_total: float = 5.0,
    kind: str = "stats",
) -> Consortium:
    """Admit n organisations, register one algorithm, and one dataset per organisation whose
    policy allows that algorithm and every organisation as requester and recipient."""
    admin = Ledger(deployment, account=Account.from_key(devnet_key(0)))
    orgs = [Ledger(deployment, account=Account.from_key(devnet_key(FIRST_ORG_ACCOUNT + i))) for i in range(n_orgs)]
    for i, org in enumerate(orgs):
        admin.admit(
            org.address,
            ORG_NAMES[i % len(ORG_NAMES)] + str(i),
            h(f"x25519-{i}"),
            f"http://127.0.0.1:{9100 + i}",
        )
    algorithm = h(f"algorithm-{kind}")
    orgs[0].register_algorithm(algorithm, kind, "1.0.0", h("description"))
    admin.approve_algorithm(algorithm, dropout_tolerant=kind == "fedavg")
    consortium = Consortium(admin, orgs, algorithm)
    everyone = [o.address for o in orgs]
    expiry = admin.block_timestamp() + 30 * 24 * 3600
    for i, org in enumerate(orgs):
        fp = Fingerprint(h(f"root-{i}"), h("schema"), h(f"meta-{i}"), 1000 + i)
        dataset_id, _ = org.register_dataset(
            fp,
            PolicyLimits(max_uses, expiry, epsilon_to_fixed(epsilon_total)),
            PolicyGrants([algorithm], everyone, everyone),
        )
        consortium.datasets[org.address] = dataset_id
    return consortium


def request_for(
    c: Consortium,
    requester: int = 0,
    recipient: int = 0,
    epsilon: float = 0.5,
    deadline_in: int = 3600,
    orgs: list[int] | None = None,
    min_survivors: int | None = None,
) -> TaskRequest:
    members = [c.orgs[i] for i in (orgs if orgs is not None else range(len(c.orgs)))]
    return TaskRequest(
        algorithm_hash=c.algorithm,
        dataset_ids=[c.datasets[o.address] for o in members],
        participants=[o.address for o in members],
        params_hash=h("params"),
        result_recipient=c.orgs[recipient].address,
        deadline=c.admin.block_timestamp() + deadline_in,
        epsilon=epsilon_to_fixed(epsilon),
        min_survivors=min_survivors,
    )


def receipt_for(c: Consortium, org: Ledger, result: bytes, algorithm: bytes | None = None) -> Receipt:
    return Receipt(
        result,
        h(f"transcript-{org.address}"),
        h(f"input-{org.address}"),
        algorithm or c.algorithm,
        h(f"deleted-{org.address}"),
        100,
        200,
    )
