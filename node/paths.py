"""Where pcn finds its repository folders (contracts, chain tools, deployments).

pcn is installed in editable mode from its repository, so the repository root is found
from this file; ``PCN_ROOT`` overrides it (e.g. for an installed copy next to a checkout).
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    env = os.environ.get("PCN_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


def chain_devnet_dir() -> Path:
    return repo_root() / "chain-devnet"


def contracts_dir() -> Path:
    return repo_root() / "contracts"


def node_modules() -> Path:
    return chain_devnet_dir() / "node_modules"


def tool(name: str) -> Path:
    """Path of an npm-installed Foundry binary (anvil, forge, cast)."""
    return node_modules() / ".bin" / name


def solc_adapter() -> Path:
    return chain_devnet_dir() / "solc-adapter.js"


def deployments_dir() -> Path:
    return Path(os.environ.get("PCN_DEPLOYMENTS_DIR", chain_devnet_dir() / "deployments"))


def deployment_file(chain_id: int) -> Path:
    return deployments_dir() / f"{chain_id}.json"


def run_dir() -> Path:
    """Pid files and logs of processes started by pcn (anvil, later nodes)."""
    return Path(os.environ.get("PCN_RUN_DIR", chain_devnet_dir() / "run"))
