"""`pcn`: the operator's command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pcn.chain.ledger import Ledger, TxResult
from pcn.cli import audit_cmds, node_cmds, relay_cmds
from pcn.cli.common import (
    DeploymentOpt,
    JsonOpt,
    RpcOpt,
    UserError,
    connect,
    console,
    emit_json,
    handle_errors,
    load_signer,
)
from pcn.runtime.config import DEVNET_CHAIN_IDS

app = typer.Typer(no_args_is_help=True, add_completion=False, help="pcn: blockchain-audited privacy computation")
devnet_app = typer.Typer(no_args_is_help=True, help="Run the local anvil devnet")
org_app = typer.Typer(no_args_is_help=True, help="Consortium membership (admin)")
app.add_typer(devnet_app, name="devnet")
app.add_typer(org_app, name="org")
node_cmds.register(app, org_app)
audit_cmds.register(node_cmds.audit_app)
relay_cmds.register(app)

PortOpt = Annotated[int, typer.Option("--port", envvar="PCN_DEVNET_PORT", help="Devnet RPC port")]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="File holding the signer's private key (else $PCN_PRIVATE_KEY)"),
]
DevAccountOpt = Annotated[
    int | None, typer.Option("--dev-account", help="Sign with anvil's N-th public test account (devnet only)")
]


# ---------------------------------------------------------------------------- devnet


@devnet_app.command("up")
@handle_errors()
def devnet_up(
    port: PortOpt = 8545,
    chain_id: Annotated[int, typer.Option("--chain-id")] = 31337,
    state: Annotated[Path | None, typer.Option("--state", help="State file kept across restarts")] = None,
    block_time: Annotated[
        float | None, typer.Option("--block-time", help="Seconds per block (default: automine)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start anvil in the background with deterministic accounts and a persisted state."""
    from pcn.devnet import anvil

    st = anvil.up(port=port, chain_id=chain_id, state_file=state, block_time=block_time)
    if as_json:
        emit_json(st)
    else:
        console.print(f"devnet up: chain {st.chain_id} at {st.rpc_url} (pid {st.pid}, block {st.block_number})")
        console.print(f"state file: {st.state_file}")


@devnet_app.command("down")
@handle_errors()
def devnet_down(port: PortOpt = 8545, as_json: JsonOpt = False) -> None:
    """Stop anvil; its state file keeps the chain for the next `up`."""
    from pcn.devnet import anvil

    st = anvil.down(port=port)
    if as_json:
        emit_json(st)
    else:
        console.print(f"devnet on port {port} stopped" if not st.running else f"devnet on port {port} still answers")


@devnet_app.command("status")
@handle_errors()
def devnet_status(port: PortOpt = 8545, as_json: JsonOpt = False) -> None:
    """Is the devnet running, on which chain, at which block."""
    from pcn.devnet import anvil

    st = anvil.status(port=port)
    if as_json:
        emit_json(st)
    elif st.running:
        console.print(f"running: chain {st.chain_id} at {st.rpc_url}, block {st.block_number}, pid {st.pid}")
    else:
        console.print(f"not running on port {port}")
    if not st.running:
        raise typer.Exit(3)


# ---------------------------------------------------------------------------- deploy


@app.command("deploy")
@handle_errors()
def deploy_cmd(
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="PCN_RPC_URL")] = "http://127.0.0.1:8545",
    out: Annotated[
        Path | None, typer.Option("--out", help="Deployment file (default: deployments/<chainId>.json)")
    ] = None,
    key_file: KeyFileOpt = None,
    dev_account: DevAccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compile and deploy every contract; write the deployment file. The signer becomes admin."""
    from pcn.devnet.deploy import deploy

    signer = load_signer("PCN_ADMIN_KEY", key_file, dev_account)
    chain_id = _chain_id_of(rpc_url)
    if chain_id not in DEVNET_CHAIN_IDS:
        # Never fall back to (or accept) anvil's public test keys off the devnet: anyone could
        # then act as the consortium admin.
        if dev_account is not None:
            raise UserError(f"--dev-account uses public test keys and only works on a devnet, not chain {chain_id}")
        if signer is None:
            raise UserError(f"chain {chain_id} is not a devnet: give --key-file or set PCN_ADMIN_KEY")
    key = "0x" + bytes(signer.key).hex() if signer is not None else None
    dep = deploy(rpc_url, admin_key=key, out=out, progress=None if as_json else console.print)
    if as_json:
        emit_json(
            {
                "path": str(dep.path),
                "chainId": dep.chain_id,
                "deployBlock": dep.deploy_block,
                "admin": dep.deployer,
                "contracts": dep.addresses,
            }
        )
    else:
        console.print(f"deployment written to {dep.path}")


# ---------------------------------------------------------------------------- org


@org_app.command("admit")
@handle_errors()
def org_admit(
    account: Annotated[str, typer.Argument(help="The organisation's Ethereum account")],
    name: Annotated[str, typer.Option("--name")],
    encryption_key: Annotated[str, typer.Option("--encryption-key", help="X25519 public key, 32 bytes hex")],
    endpoint: Annotated[str, typer.Option("--endpoint", help="Peer mailbox URL")],
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    key_file: KeyFileOpt = None,
    dev_account: DevAccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Admit an organisation (consortium admin only)."""
    ledger = connect(
        deployment, rpc_url, load_signer("PCN_ADMIN_KEY", key_file, dev_account), True, dev_account, "PCN_ADMIN_KEY"
    )
    res = ledger.admit(_address(account), name, _hex32(encryption_key, "--encryption-key"), endpoint)
    _tx_out(res, as_json, f"admitted {name} ({account})")


@org_app.command("suspend")
@handle_errors()
def org_suspend(
    account: Annotated[str, typer.Argument()],
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    key_file: KeyFileOpt = None,
    dev_account: DevAccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Suspend an organisation (consortium admin only)."""
    ledger = connect(
        deployment, rpc_url, load_signer("PCN_ADMIN_KEY", key_file, dev_account), True, dev_account, "PCN_ADMIN_KEY"
    )
    _tx_out(ledger.suspend(_address(account)), as_json, f"suspended {account}")


@org_app.command("reinstate")
@handle_errors()
def org_reinstate(
    account: Annotated[str, typer.Argument()],
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    key_file: KeyFileOpt = None,
    dev_account: DevAccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reinstate a suspended organisation (consortium admin only)."""
    ledger = connect(
        deployment, rpc_url, load_signer("PCN_ADMIN_KEY", key_file, dev_account), True, dev_account, "PCN_ADMIN_KEY"
    )
    _tx_out(ledger.reinstate(_address(account)), as_json, f"reinstated {account}")


def _admin_ledger(
    deployment: Path | None, rpc_url: str | None, key_file: Path | None, dev_account: int | None
) -> Ledger:
    return connect(
        deployment, rpc_url, load_signer("PCN_ADMIN_KEY", key_file, dev_account), True, dev_account, "PCN_ADMIN_KEY"
    )


def _algorithm_code(name_or_hash: str) -> bytes:
    from pcn.runtime import operations

    return operations.algorithm_hash(name_or_hash)


@org_app.command("approve-algorithm")
@handle_errors()
def org_approve_algorithm(
    algorithm: Annotated[str, typer.Argument(help="Built-in algorithm name or 0x code hash")],
    dropout_tolerant: Annotated[
        bool, typer.Option("--dropout-tolerant", help="Its protocol finishes without a party that stopped answering")
    ] = False,
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    key_file: KeyFileOpt = None,
    dev_account: DevAccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a registered algorithm so tasks may use it (consortium admin only)."""
    code = _algorithm_code(algorithm)
    res = _admin_ledger(deployment, rpc_url, key_file, dev_account).approve_algorithm(code, dropout_tolerant)
    tolerant = " (dropout-tolerant)" if dropout_tolerant else ""
    _tx_out(res, as_json, f"approved algorithm {algorithm} 0x{code.hex()}{tolerant}")


@org_app.command("revoke-algorithm")
@handle_errors()
def org_revoke_algorithm(
    algorithm: Annotated[str, typer.Argument(help="Built-in algorithm name or 0x code hash")],
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    key_file: KeyFileOpt = None,
    dev_account: DevAccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a wrong registration; the hash can then be registered again (consortium admin only)."""
    code = _algorithm_code(algorithm)
    res = _admin_ledger(deployment, rpc_url, key_file, dev_account).revoke_algorithm(code)
    _tx_out(res, as_json, f"revoked the registration of 0x{code.hex()}")


@org_app.command("undeprecate-algorithm")
@handle_errors()
def org_undeprecate_algorithm(
    algorithm: Annotated[str, typer.Argument(help="Built-in algorithm name or 0x code hash")],
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    key_file: KeyFileOpt = None,
    dev_account: DevAccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Lift an algorithm's deprecation (consortium admin only)."""
    code = _algorithm_code(algorithm)
    res = _admin_ledger(deployment, rpc_url, key_file, dev_account).undeprecate_algorithm(code)
    _tx_out(res, as_json, f"lifted the deprecation of 0x{code.hex()}")


@org_app.command("set-dropout-silence")
@handle_errors()
def org_set_dropout_silence(
    seconds: Annotated[int, typer.Argument(help="Seconds of on-chain silence before a dropout may be reported")],
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    key_file: KeyFileOpt = None,
    dev_account: DevAccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set how long a task participant must be silent before it may be reported dropped (admin only)."""
    res = _admin_ledger(deployment, rpc_url, key_file, dev_account).set_dropout_silence(seconds)
    _tx_out(res, as_json, f"dropout silence set to {seconds} s")


@org_app.command("list")
@handle_errors()
def org_list(deployment: DeploymentOpt = None, rpc_url: RpcOpt = None, as_json: JsonOpt = False) -> None:
    """Every admitted organisation with its status and endpoint."""
    orgs = connect(deployment, rpc_url).organisations()
    if as_json:
        emit_json(orgs)
        return
    table = Table("account", "name", "status", "endpoint", "encryption key")
    for o in orgs:
        table.add_row(o.account, o.name, o.status.name.lower(), o.endpoint, "0x" + o.encryption_key.hex()[:16] + "…")
    console.print(table)


# ---------------------------------------------------------------------------- helpers


def _chain_id_of(rpc_url: str) -> int:
    from pcn.devnet.anvil import rpc_call

    try:
        return int(str(rpc_call(rpc_url, "eth_chainId")), 16)
    except Exception as exc:
        raise UserError(f"cannot reach the chain at {rpc_url}: {exc}") from exc


def _address(value: str) -> str:
    from eth_utils import is_address, to_checksum_address

    if not is_address(value):
        raise ValueError(f"{value!r} is not an Ethereum address")
    return to_checksum_address(value)


def _hex32(value: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise ValueError(f"{what} must be hex") from None
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def _tx_out(res: TxResult, as_json: bool, text: str) -> None:
    if as_json:
        emit_json(res)
    else:
        console.print(f"{text} (tx {res.tx_hash}, block {res.block_number})")


@app.command("demo")
def demo_cmd(
    port: PortOpt = 8545,
    rows: Annotated[int, typer.Option("--rows", help="Rows per organisation's synthetic dataset")] = 20_000,
    as_json: JsonOpt = False,
    down: Annotated[bool, typer.Option("--down", help="Stop what a previous demo started")] = False,
    dashboard_port: Annotated[int, typer.Option("--dashboard-port", help="Port of the regulator's dashboard")] = 8700,
) -> None:
    """The whole flow on this machine: devnet, Redis, three organisations' nodes, tasks (`make demo`)."""
    from pcn.devnet.demo import main as demo_main

    demo_main(
        [
            *("--port", str(port), "--rows", str(rows), "--dashboard-port", str(dashboard_port)),
            *(["--json"] if as_json else []),
            *(["--down"] if down else []),
        ]
    )


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    app()


if __name__ == "__main__":
    main()
