"""Real pcn nodes for end-to-end tests (the network itself is `pcn.devnet.localnet`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
    write_dataset,
)

__all__ = [
    "PASSWORD",
    "REGIONS",
    "Network",
    "Org",
    "RedisServer",
    "approve_all",
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
