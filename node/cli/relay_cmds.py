"""`pcn relay`: run a relay for organisations whose nodes accept no inbound connection, and
read its queues (the relay operator's page)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from pcn.cli.common import (
    DeploymentOpt,
    JsonOpt,
    RpcOpt,
    UserError,
    connect,
    console,
    emit_json,
    handle_errors,
)

if TYPE_CHECKING:
    from pcn.runtime.relay import RelayStore

relay_app = typer.Typer(no_args_is_help=True, help="Relay for outbound-only organisations")

RedisOpt = Annotated[
    str, typer.Option("--redis-url", envvar="PCN_RELAY_REDIS", help="The relay's own Redis (durable: AOF on)")
]


def register(app: typer.Typer) -> None:
    app.add_typer(relay_app, name="relay")


def _store(redis_url: str, **kw: float) -> RelayStore:
    import redis

    from pcn.runtime.relay import MAX_WAIT, RelayStore

    try:
        # a fetch blocks in Redis up to MAX_WAIT: the client must wait longer than that
        r = redis.Redis.from_url(redis_url, socket_timeout=MAX_WAIT + 10)
        r.ping()
    except (redis.RedisError, ValueError) as exc:
        raise UserError(f"the relay's Redis at {redis_url} cannot be reached: {exc}") from None
    return RelayStore(r, **kw)  # type: ignore[arg-type]  # quotas are ints, expire_after a float


@relay_app.command("serve")
@handle_errors()
def relay_serve(
    redis_url: RedisOpt = "redis://127.0.0.1:6379/0",
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option("--port", help="Port to listen on")] = 8800,
    serves: Annotated[
        list[str] | None,
        typer.Option("--serve", help="An organisation address it takes envelopes for (repeat); none: any"),
    ] = None,
    expire_after: Annotated[float, typer.Option("--expire-after", help="Seconds an unfetched envelope is kept")] = 7
    * 86400,
    addressee_quota: Annotated[int, typer.Option("--addressee-quota", help="Bytes held per organisation")] = 2 << 30,
    sender_quota: Annotated[int, typer.Option("--sender-quota", help="Bytes one sender may have waiting")] = 512 << 20,
    test_faults: Annotated[
        str,
        typer.Option(
            "--test-faults",
            hidden=True,
            help="TEST ONLY: misbehave on fetches, e.g. drop=0.05,reorder=0.5,replay=0.2,delay=0.1,seed=7",
        ),
    ] = "",
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve the relay: peers deliver to <url>/o/<organisation>, its node fetches from there.
    It reads the consortium's chain (--deployment, --rpc-url) to keep only the envelopes of
    admitted organisations for live tasks they take part in."""
    import uvicorn
    from eth_utils import is_address, to_checksum_address

    from pcn.chain.errors import ChainError
    from pcn.runtime.peers import PeerDirectory
    from pcn.runtime.relay import Faults, create_relay_app

    for a in serves or []:
        if not is_address(a):
            raise UserError(f"--serve {a!r} is not an address")
    store = _store(redis_url, expire_after=expire_after, addressee_quota=addressee_quota, sender_quota=sender_quota)
    served = frozenset(to_checksum_address(a) for a in serves) if serves else None
    try:
        faults = Faults.parse(test_faults) if test_faults else None
    except (ValueError, TypeError) as exc:
        raise UserError(f"--test-faults: {exc}") from None
    ledger = connect(deployment, rpc_url)
    try:
        ledger.check_connection()
    except ChainError as exc:
        raise UserError(f"the relay needs the consortium's chain to check senders: {exc}") from None
    app = create_relay_app(
        store,
        peers=PeerDirectory(ledger),
        chain_id=ledger.chain_id,
        task_manager=str(ledger.deployment.contracts["TaskManager"].address),
        serves=served,
        faults=faults,
    )
    if faults is not None:
        console.print(f"TEST MODE: this relay misbehaves on purpose ({test_faults})")
    console.print(
        f"relay on {host}:{port}, queues in {redis_url}, serving {sorted(served) if served else 'any organisation'}"
    )
    # A stop must not wait out the fetches it holds open (up to their wait): they are cut after
    # 2 s; an item fetched but not acknowledged stays queued and is fetched again.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=2)


@relay_app.command("status")
@handle_errors()
def relay_status(redis_url: RedisOpt = "redis://127.0.0.1:6379/0", as_json: JsonOpt = False) -> None:
    """The relay's queues: per organisation, when its node last fetched, what waits, what was
    handed over, expired or refused."""
    from pcn.runtime.relay import COUNTERS

    stats = _store(redis_url).stats()
    if as_json:
        emit_json(stats)
        return
    table = Table("organisation", "last fetch", "waiting", "bytes", *COUNTERS, title="relay queues")
    for org, row in stats.items():
        ago = row["last_fetch_s_ago"]
        last = "never" if ago < 0 else f"{ago} s ago"
        table.add_row(org, last, str(row["waiting"]), f"{row['waiting_bytes']:,}", *(str(row[c]) for c in COUNTERS))
    console.print(table if stats else "the relay has served no organisation yet")
