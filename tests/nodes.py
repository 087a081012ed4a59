"""Real pcn nodes for end-to-end tests (the network itself is `pcn.devnet.localnet`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pcn.chain.deployment import Deployment
from pcn.devnet.localnet import (
    PASSWORD,
    REGIONS,
    Network,
    Org,
    RedisServer,
    approve_all,
    build_network,
    free_port,
    fund,
    register_rows,
    write_dataset,
)

__all__ = [
    "PASSWORD",
    "REGIONS",
    "Network",
    "Org",
    "RedisServer",
    "approve_all",
    "breast_cancer_split",
    "build_network",
    "free_port",
    "fund",
    "network_fixture",
    "write_dataset",
]


def network_fixture(root: Path, deployment: Deployment, names: list[str], **kw: object) -> Iterator[Network]:
    net = build_network(root, deployment, names, **kw)  # type: ignore[arg-type]
    try:
        yield net
    finally:
        net.stop()
        net.redis.stop()


def breast_cancer_split(
    net: Network, guest: str, host: str, tag: str = "bc"
) -> tuple[int, int, np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's breast-cancer data, standardised, split vertically: `guest` holds 10
    features and the label, `host` the other 20, both keyed by the same IDs (registered as
    datasets `tag`-guest and `tag`-host)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    y = data.target
    ids = [f"A{i:04d}" for i in range(len(y))]
    guest_rows = [[ids[i], *(f"{v:.8f}" for v in x[i, :10]), str(y[i])] for i in range(len(y))]
    host_rows = [[ids[i], *(f"{v:.8f}" for v in x[i, 10:])] for i in range(len(y))]
    g = register_rows(net, guest, ["id", *(f"g{j}" for j in range(10)), "label"], guest_rows, f"{tag}-guest")
    h = register_rows(net, host, ["id", *(f"h{j}" for j in range(20))], host_rows, f"{tag}-host")
    return g, h, x, y, ids
