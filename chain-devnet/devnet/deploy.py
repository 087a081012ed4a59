"""Deploy pcn's contracts and write the deployment file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import TxParams

from pcn import paths
from pcn.chain.deployment import ContractInfo, Deployment
from pcn.chain.errors import TransactionFailed
from pcn.chain.ledger import eip1559_fees
from pcn.chain.rpc import connect
from pcn.devnet.compiler import Build, compile_contracts


def devnet_key(index: int) -> str:
    """Private key of anvil's index-th deterministic account (public test keys)."""
    Account.enable_unaudited_hdwallet_features()
    from pcn.devnet.anvil import DEFAULT_MNEMONIC

    acct = Account.from_mnemonic(DEFAULT_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return "0x" + bytes(acct.key).hex()


def _send(w3: Web3, account: LocalAccount, tx: dict[str, Any], chain_id: int) -> dict[str, Any]:
    tx = {
        **tx,
        "from": account.address,
        "chainId": chain_id,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
    }
    # eth_account signs a plain dict; web3 types the same transaction as the TypedDict TxParams
    tx["gas"] = int(w3.eth.estimate_gas(cast(TxParams, tx)) * 1.2)
    tx.update(eip1559_fees(w3))
    signed = account.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=120)
    if receipt["status"] != 1:
        raise TransactionFailed(f"deployment transaction 0x{bytes(receipt['transactionHash']).hex()} reverted")
    return dict(receipt)


def deploy(
    rpc_url: str,
    admin_key: str | None = None,
    out: Path | None = None,
    build: Build | None = None,
    progress: Callable[[str], None] | None = None,
) -> Deployment:
    """Compile (cached) and deploy every contract; wire them; write the deployment file."""
    say = progress or (lambda _msg: None)
    w3 = connect(rpc_url)
    chain_id = w3.eth.chain_id  # raises ChainUnavailable naming the URL when nothing answers
    admin = Account.from_key(admin_key or devnet_key(0))
    say("compiling contracts")
    build = build or compile_contracts()
    infos: dict[str, ContractInfo] = {}

    def deploy_one(name: str, *args: Any) -> ChecksumAddress:
        art = build.artifacts[name]
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        tx = factory.constructor(*args).build_transaction({"from": admin.address, "chainId": chain_id, "gas": 0})
        tx.pop("gas", None)
        receipt = _send(w3, admin, {"data": tx["data"]}, chain_id)
        address = receipt["contractAddress"]
        infos[name] = ContractInfo(
            name,
            address,
            art.abi,
            int(receipt["blockNumber"]),
            "0x" + bytes(receipt["transactionHash"]).hex(),
        )
        say(f"deployed {name} at {address}")
        return address

    consortium = deploy_one("Consortium", admin.address)
    algorithms = deploy_one("AlgorithmRegistry", consortium)
    datasets = deploy_one("DatasetRegistry", consortium)
    tasks = deploy_one("TaskManager", consortium, algorithms, datasets)
    deploy_one("AuditLog", consortium)
    registry = w3.eth.contract(address=datasets, abi=build.artifacts["DatasetRegistry"].abi)
    wire = registry.functions.setTaskManager(tasks).build_transaction(
        {"from": admin.address, "chainId": chain_id, "gas": 0}
    )
    _send(w3, admin, {"to": datasets, "data": wire["data"]}, chain_id)
    say("wired DatasetRegistry to TaskManager")
    deployment = Deployment(
        chain_id=chain_id,
        rpc_url=rpc_url,
        deployer=admin.address,
        deploy_block=min(c.block for c in infos.values()),
        compiler_version=build.compiler_version,
        source_hash=build.source_hash,
        contracts=infos,
        path=Path(out or paths.deployment_file(chain_id)),
    )
    deployment.save()
    cache_signatures_for_foundry(infos.values())
    return deployment


def _signature(item: dict[str, Any]) -> str:
    def typ(inp: dict[str, Any]) -> str:
        t = inp["type"]
        if t.startswith("tuple"):
            return "(" + ",".join(typ(c) for c in inp["components"]) + ")" + t[len("tuple") :]
        return str(t)

    return f"{item['name']}(" + ",".join(typ(i) for i in item.get("inputs", [])) + ")"


def cache_signatures_for_foundry(contracts: Any, cache: Path | None = None) -> Path | None:
    """Merge pcn's function, event and custom-error signatures into Foundry's local
    signature cache, so `cast send` and `cast decode-error` name pcn's reverts (e.g.
    `UnknownTask(42)`) on this machine without any online lookup. Best effort: a cache
    that cannot be written never fails a deployment."""
    cache = cache or Path(os.environ.get("FOUNDRY_DIR", Path.home() / ".foundry")) / "cache" / "signatures"
    try:
        current = json.loads(cache.read_text()) if cache.is_file() else {}
        table = {k: dict(current.get(k, {})) for k in ("functions", "errors", "events")}
        for info in contracts:
            for item in info.abi:
                kind = item.get("type")
                if kind not in ("function", "error", "event"):
                    continue
                sig = _signature(item)
                digest = Web3.keccak(text=sig).hex().removeprefix("0x")
                if kind == "event":
                    table["events"]["0x" + digest] = sig
                else:
                    table["functions" if kind == "function" else "errors"]["0x" + digest[:8]] = sig
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".pcn-tmp")
        tmp.write_text(json.dumps(table))
        tmp.replace(cache)
        return cache
    except (OSError, ValueError):
        return None
