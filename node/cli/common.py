"""Shared CLI plumbing: one error style, JSON output, chain connection and signer."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console

from pcn.chain.deployment import load_deployment
from pcn.chain.errors import ChainError, ContractRevert
from pcn.chain.ledger import Ledger

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A mistake the user can fix: shown as one line, exit code 1, no traceback."""


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Enum):
        return value.name.lower()
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(_plain(value), indent=2))


def handle_errors(json_flag: str = "as_json") -> Callable[[F], F]:
    """Turn expected failures into one clear line (or a JSON error object) and exit 1."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (ChainError, UserError, ValueError, OSError) as exc:
                name = exc.name if isinstance(exc, ContractRevert) else type(exc).__name__
                message = exc.message if isinstance(exc, ContractRevert) else str(exc)
                if kwargs.get(json_flag):
                    typer.echo(json.dumps({"error": {"name": name, "message": message}}))
                else:
                    err_console.print(f"[bold red]error:[/] {name}: {message}", highlight=False)
                raise typer.Exit(1) from None

        return wrapper  # type: ignore[return-value]

    return decorate


def load_signer(
    key_env: str = "PCN_PRIVATE_KEY", key_file: Path | None = None, dev_account: int | None = None
) -> LocalAccount | None:
    """The signing account, never from the command line itself: a key file, an
    environment variable, or (devnet only) one of anvil's public test accounts."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise UserError(f"cannot read key file {key_file}: {exc.strerror}") from exc
        return _account(key, str(key_file))
    if dev_account is not None:
        from pcn.devnet.deploy import devnet_key

        return Account.from_key(devnet_key(dev_account))
    key = os.environ.get(key_env)
    return _account(key, key_env) if key else None


def _account(key: str, source: str) -> LocalAccount:
    try:
        return Account.from_key(key)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{source} does not hold a valid private key") from exc


DEVNET_CHAIN_IDS = {31337}


def connect(
    deployment: Path | None,
    rpc_url: str | None,
    signer: LocalAccount | None = None,
    need_signer: bool = False,
    dev_account: int | None = None,
    key_env: str = "PCN_PRIVATE_KEY",
) -> Ledger:
    dep = load_deployment(deployment or os.environ.get("PCN_DEPLOYMENT") or None)
    if need_signer and signer is None:
        raise UserError(
            f"this command sends a transaction: give --key-file, set {key_env}, or use --dev-account N on the devnet"
        )
    if dev_account is not None and dep.chain_id not in DEVNET_CHAIN_IDS:
        raise UserError(f"--dev-account uses public test keys and only works on a devnet, not chain {dep.chain_id}")
    ledger = Ledger(dep, rpc_url or os.environ.get("PCN_RPC_URL") or None, signer)
    ledger.check_connection()
    return ledger


def is_tty() -> bool:
    return sys.stdout.isatty()
