"""The deployment file: everything a client needs to use pcn's contracts.

`chain-devnet/deployments/<chainId>.json` holds, per contract, its address, ABI and
deployment block, plus the compiler version and source hash. web3.py, cast or any other
Ethereum client can use the contracts from this file alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcn import paths
from pcn.chain.errors import DeploymentError

FORMAT_VERSION = 1
CONTRACT_NAMES = ("Consortium", "AlgorithmRegistry", "DatasetRegistry", "TaskManager", "AuditLog")


@dataclass(frozen=True)
class ContractInfo:
    name: str
    address: str
    abi: list[dict[str, Any]]
    block: int
    tx_hash: str


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    rpc_url: str
    deployer: str
    deploy_block: int
    compiler_version: str
    source_hash: str
    contracts: dict[str, ContractInfo]
    path: Path  # the deployment file

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "chainId": self.chain_id,
            "rpcUrl": self.rpc_url,
            "deployer": self.deployer,
            "deployBlock": self.deploy_block,
            "compilerVersion": self.compiler_version,
            "sourceHash": self.source_hash,
            "eip712": {"name": "pcn TaskManager", "version": "1"},
            "contracts": {
                c.name: {"address": c.address, "block": c.block, "txHash": c.tx_hash, "abi": c.abi}
                for c in self.contracts.values()
            },
        }

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(self.path)

    @property
    def addresses(self) -> dict[str, str]:
        return {name: c.address for name, c in self.contracts.items()}


def load_deployment(path: Path | str | None = None, chain_id: int | None = None) -> Deployment:
    """Load a deployment file, by explicit path or by chain id (default 31337)."""
    if path is None:
        path = paths.deployment_file(chain_id or 31337)
    path = Path(path)
    if not path.is_file():
        raise DeploymentError(f"deployment file {path} not found: run `pcn deploy` first")
    try:
        data = json.loads(path.read_text())
        contracts = {
            name: ContractInfo(name, c["address"], c["abi"], int(c["block"]), c.get("txHash", ""))
            for name, c in data["contracts"].items()
        }
        missing = [n for n in CONTRACT_NAMES if n not in contracts]
        if missing:
            raise DeploymentError(f"deployment file {path} lacks contracts {missing}")
        return Deployment(
            chain_id=int(data["chainId"]),
            rpc_url=str(data.get("rpcUrl", "")),
            deployer=str(data["deployer"]),
            deploy_block=int(data["deployBlock"]),
            compiler_version=str(data.get("compilerVersion", "")),
            source_hash=str(data.get("sourceHash", "")),
            contracts=contracts,
            path=path,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DeploymentError(f"deployment file {path} is malformed: {exc}") from exc
