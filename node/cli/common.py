"""Shared CLI plumbing: one error style, JSON output, chain connection and signer."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import click
import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console

from pcn.chain.deployment import load_deployment
from pcn.chain.errors import ChainError, ContractRevert
from pcn.chain.ledger import Ledger
from pcn.runtime.config import DEVNET_CHAIN_IDS

if TYPE_CHECKING:
    from pcn.runtime.config import OrgConfig
    from pcn.runtime.context import NodeContext

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
P = ParamSpec("P")
R = TypeVar("R")


class UserError(Exception):
    """A mistake the user can fix: shown as one line, exit code 1, no traceback."""


class NamedError(UserError):
    """A failed check with a name of its own (e.g. FingerprintMismatch), shown like a revert."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
DeploymentOpt = Annotated[
    Path | None,
    typer.Option("--deployment", envvar="PCN_DEPLOYMENT", help="Deployment file (default: chain 31337)"),
]
RpcOpt = Annotated[
    str | None, typer.Option("--rpc-url", envvar="PCN_RPC_URL", help="RPC URL (default: from deployment)")
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="The organisation's node.toml (else --org, else $PCN_CONFIG)", show_default=False),
]
OrgOpt = Annotated[
    str | None,
    typer.Option("--org", help="Organisation name: uses $PCN_HOME/NAME/node.toml ($PCN_HOME default ./var/pcn)"),
]


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


def handle_errors(json_flag: str = "as_json") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn expected failures into one clear line (or a JSON error object) and exit 1."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
                raise
            except Exception as exc:
                if not isinstance(exc, _expected_errors()):
                    raise
                if isinstance(exc, (ContractRevert, NamedError)):
                    name, message = exc.name, exc.message
                else:
                    name, message = type(exc).__name__, str(exc)
                if not message:
                    message = type(exc).__doc__ or name
                if kwargs.get(json_flag):
                    typer.echo(json.dumps({"error": {"name": name, "message": message}}))
                else:
                    err_console.print(f"[bold red]error:[/] {name}: {message}", highlight=False)
                raise typer.Exit(1) from None

        return wrapper

    return decorate


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures a user can act on (shown as one line). Imported only when something failed,
    so the commands that never touch these modules do not pay for importing them."""
    import httpx
    import redis

    from pcn.algorithms import UnknownAlgorithm
    from pcn.crypto.keys import KeyStoreError
    from pcn.runtime.actionlog import LogCorrupt
    from pcn.runtime.services import NodeError
    from pcn.runtime.store import UnknownLocalDataset

    # ValueError covers OperationError, DataError, ConfigError and JSON decoding errors.
    return (
        ChainError,
        UserError,
        ValueError,
        OSError,
        KeyStoreError,
        NodeError,
        UnknownLocalDataset,
        UnknownAlgorithm,
        LogCorrupt,
        httpx.HTTPError,
        redis.RedisError,
    )


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
    env_key = os.environ.get(key_env)
    return _account(env_key, key_env) if env_key else None


def _account(key: str, source: str) -> LocalAccount:
    try:
        return Account.from_key(key)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{source} does not hold a valid private key") from exc


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


# ---------------------------------------------------------------------------- organisation selection


def pcn_home() -> Path:
    """Where `--org NAME` looks for NAME/node.toml: $PCN_HOME, default ./var/pcn."""
    return Path(os.environ.get("PCN_HOME") or "var/pcn")


def config_path(config: Path | None, org: str | None) -> Path:
    """The organisation's config file: `--config FILE`, else `--org NAME`, else $PCN_CONFIG."""
    if config is not None and org is not None:
        raise UserError("give either --config FILE or --org NAME, not both")
    if config is not None:
        return config
    if org is not None:
        if not org or any(c in org for c in "/\\ \t") or org in (".", ".."):
            raise UserError(f"invalid organisation name {org!r}")
        return pcn_home() / org / "node.toml"
    env = os.environ.get("PCN_CONFIG")
    if env:
        return Path(env)
    raise UserError("no organisation selected: give --config FILE or --org NAME, or set PCN_CONFIG")


def org_config(config: Path | None, org: str | None) -> OrgConfig:
    from pcn.runtime.config import load_config

    return load_config(config_path(config, org))


def config_ledger(cfg: OrgConfig) -> Ledger:
    """A read-only connection to the organisation's chain (no keystore password needed)."""
    ledger = Ledger(load_deployment(cfg.deployment_path), cfg.rpc_url, None)
    ledger.check_connection()
    return ledger


def node_context(config: Path | None, org: str | None, signing: bool = True) -> NodeContext:
    """The organisation's `NodeContext`. With `signing` its ledger signs as the organisation
    (the keystore is unlocked with $PCN_KEYSTORE_PASSWORD or the config's password_file);
    without, the ledger only reads, so no password is needed."""
    from pcn.runtime.context import NodeContext

    ctx = NodeContext(org_config(config, org))
    if signing:
        ctx.keys  # noqa: B018 - unlock now, so a wrong or missing password is the first error
    else:
        # NodeContext.ledger is a cached_property: setting it replaces the signing ledger.
        ctx.ledger = config_ledger(ctx.config)
        return ctx
    ctx.ledger.check_connection()
    return ctx


def chain_reader(config: Path | None, org: str | None, deployment: Path | None, rpc_url: str | None) -> Ledger:
    """A read-only ledger for commands anyone may run: the organisation's chain when one is
    named (--config/--org), else the deployment (--deployment/--rpc-url), else $PCN_CONFIG's,
    else the default deployment."""
    if config is not None or org is not None:
        return config_ledger(org_config(config, org))
    if deployment is None and rpc_url is None and os.environ.get("PCN_CONFIG"):
        return config_ledger(org_config(None, None))
    return connect(deployment, rpc_url)


def signing_reader(config: Path | None, org: str | None, deployment: Path | None, rpc_url: str | None) -> Ledger:
    """Like :func:`chain_reader`, but signing as the named organisation when its keystore
    password is at hand (mailboxes answer signed reads only); read-only otherwise."""
    from pcn.crypto.keys import KeyStoreError

    named = config is not None or org is not None
    if named or (deployment is None and rpc_url is None and os.environ.get("PCN_CONFIG")):
        with contextlib.suppress(KeyStoreError):
            return node_context(config, org).ledger
    return chain_reader(config, org, deployment, rpc_url)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds from "3600", "90s", "30m", "1h" or "2d"."""
    value = text.strip().lower()
    unit = 1
    if value and value[-1] in _DURATION_UNITS:
        unit = _DURATION_UNITS[value[-1]]
        value = value[:-1]
    if not value.isdigit() or int(value) <= 0:
        raise UserError(f"invalid duration {text!r}: give seconds (3600) or a number with s, m, h or d (30m, 1h)")
    return int(value) * unit
