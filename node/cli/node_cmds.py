"""The operator's and requester's commands: `pcn org init`, `pcn node …`, `pcn data …`,
`pcn algo …`, `pcn task …`, `pcn audit …`.

Each command is a thin shell over `pcn.runtime.operations`, `pcn.runtime.services`, the
ledger and `pcn.data`: it selects the organisation (`--config FILE`, `--org NAME` or
$PCN_CONFIG), calls the function that does the work, and prints a table or (`--json`) JSON.
Commands that only read never unlock the keystore; commands that send a transaction unlock
it with $PCN_KEYSTORE_PASSWORD or the config's password_file (never an option).
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

import typer
from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from pcn import jsonsafe
from pcn.cli.common import (
    ConfigOpt,
    DeploymentOpt,
    JsonOpt,
    NamedError,
    OrgOpt,
    RpcOpt,
    UserError,
    chain_reader,
    config_ledger,
    console,
    emit_json,
    err_console,
    handle_errors,
    node_context,
    org_config,
    parse_duration,
    pcn_home,
    signing_reader,
)

if TYPE_CHECKING:
    from pcn.chain.ledger import Ledger, TxResult
    from pcn.chain.types import Fingerprint

node_app = typer.Typer(no_args_is_help=True, help="Run this organisation's node (mailbox, chain watcher, workers)")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: register with a policy, verify, prove rows, see usage")
algo_app = typer.Typer(no_args_is_help=True, help="Algorithms: register by code hash, approve for a dataset")
task_app = typer.Typer(no_args_is_help=True, help="Tasks: submit, approve, follow, read the result")
audit_app = typer.Typer(no_args_is_help=True, help="Audit: export this node's action log")

# Ids are uint256 on chain: anything outside is a usage error (exit 2), never an ABI traceback.
UINT256_MAX = 2**256 - 1
DatasetArg = Annotated[int, typer.Argument(help="Dataset id (on chain)", show_default=False, min=0, max=UINT256_MAX)]
TaskArg = Annotated[int, typer.Argument(help="Task id (on chain)", show_default=False, min=0, max=UINT256_MAX)]
DatasetIdOpt = Annotated[int, typer.Option("--dataset", help="Dataset id", show_default=False, min=0, max=UINT256_MAX)]


def register(app: typer.Typer, org_app: typer.Typer) -> None:
    """Attach these commands to the `pcn` application."""
    org_app.command("init")(org_init)
    app.add_typer(node_app, name="node")
    app.add_typer(data_app, name="data")
    app.add_typer(algo_app, name="algo")
    app.add_typer(task_app, name="task")
    app.add_typer(audit_app, name="audit")


# ---------------------------------------------------------------------------- helpers


def _when(ts: int | float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _short(value: str, keep: int = 10) -> str:
    return value if len(value) <= keep + 2 else value[: keep + 2] + "…"


def _eps(fixed: int) -> float:
    from pcn.chain.types import epsilon_from_fixed

    return epsilon_from_fixed(int(fixed))


def _tx(res: TxResult) -> dict[str, Any]:
    return {"tx_hash": res.tx_hash, "block_number": res.block_number}


# The records `data usage`, `algo list` and `task list` print (and emit with --json).


class _DatasetTaskRow(TypedDict):
    task_id: int
    requester: str
    requester_name: str
    algorithm: str
    algorithm_hash: str
    dataset_version: int
    created_at: int
    epsilon: float
    status: str
    recipient: str


class _AlgorithmRow(TypedDict):
    kind: str
    version: str
    code_hash: str
    publisher: str
    registered_at: int
    deprecated: bool
    matches_code_on_disk: bool | None  # None: not a built-in algorithm


class _TaskRow(TypedDict):
    task_id: int
    algorithm: str
    status: str
    requester: str
    requester_name: str
    datasets: list[int]
    created_at: int


def _int_list(text: str, option: str) -> list[int]:
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items or not all(p.isdigit() and len(p) <= 78 for p in items):
        raise UserError(f"{option} takes comma-separated ids such as 1,2,3, not {text!r}")
    ids = [int(p) for p in items]
    if max(ids) > UINT256_MAX:
        raise UserError(f"{option}: ids are at most 2^256 - 1")
    return ids


def _names(ledger: Ledger) -> dict[str, str]:
    return {o.account: o.name for o in ledger.organisations()}


def _who(address: str, names: dict[str, str]) -> str:
    return f"{names[address]} ({_short(address)})" if address in names else address


def _read_params(path: Path) -> dict[str, Any]:
    """The task parameters of a JSON file; any problem is one error naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NamedError("InvalidParameters", f"cannot read parameters file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise NamedError("InvalidParameters", f"parameters file {path} is not UTF-8 text") from None
    try:
        params = jsonsafe.loads(text)  # not json.loads: "[[[[…" would crash the process (see jsonsafe)
    except jsonsafe.JsonTooDeep:
        raise NamedError("InvalidParameters", f"parameters file {path} is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise NamedError("InvalidParameters", f"parameters file {path} is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise NamedError(
            "InvalidParameters", f"parameters file {path} must hold a JSON object, not {type(params).__name__}"
        )
    return params


def _check_params(algo: str, params: dict[str, Any], path: Path) -> None:
    """`operations.check_params` for a built-in algorithm named on the command line, before
    any key is unlocked; its error names the parameters file."""
    from pcn.runtime import operations

    try:
        operations.check_params(None, algo, params)
    except operations.InvalidParameters as exc:
        raise NamedError("InvalidParameters", f"parameters file {path} is {exc}") from None


class _Kinds:
    """Algorithm kind by code hash, looked up once per hash."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.cache: dict[bytes, str] = {}

    def __call__(self, code_hash: bytes) -> str:
        if code_hash not in self.cache:
            algo = self.ledger.algorithm(code_hash)
            self.cache[code_hash] = algo.kind if algo is not None else _short(_hex(code_hash))
        return self.cache[code_hash]


# ---------------------------------------------------------------------------- org init


@handle_errors()
def org_init(
    name: Annotated[str, typer.Option("--name", help="Organisation name (no spaces)", show_default=False)],
    redis_url: Annotated[
        str, typer.Option("--redis-url", envvar="PCN_REDIS_URL", help="This node's Redis", show_default=False)
    ],
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="Mailbox URL at which peers reach this node", show_default=False)
    ] = "",
    relay_url: Annotated[
        str,
        typer.Option(
            "--relay-url",
            help="For a node that accepts no inbound connection: the relay it fetches from (its endpoint on chain "
            "becomes <relay-url>/o/<address>; its mailbox listens on loopback --listen-port for its own puller)",
            show_default=False,
        ),
    ] = "",
    listen_port: Annotated[int, typer.Option("--listen-port", help="The mailbox's local port (pull mode)")] = 0,
    rpc_url: RpcOpt = None,
    deployment: DeploymentOpt = None,
    workers: Annotated[int, typer.Option("--workers", help="Celery worker processes")] = 2,
    listen_host: Annotated[
        str,
        typer.Option(
            "--listen-host",
            help="Interface the mailbox listens on: the endpoint's address (or 0.0.0.0) when peers on other "
            "hosts connect directly; the default suits a TLS proxy on the same host",
        ),
    ] = "127.0.0.1",
    home: Annotated[
        Path | None,
        typer.Option("--home", envvar="PCN_HOME", help="Configs live in HOME/NAME/node.toml (default ./var/pcn)"),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Write the config here instead of HOME/NAME/node.toml")
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file", help="File holding the keystore password, recorded in the config (else the env)"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an organisation's config file and keys; print what the admin needs to admit it."""
    from pcn.chain.deployment import load_deployment
    from pcn.crypto.keys import password_from_env_or_file
    from pcn.runtime.operations import init_org

    if bool(endpoint) == bool(relay_url):
        raise UserError("give either --endpoint (peers connect to this node) or --relay-url (outbound only)")
    if relay_url and not listen_port:
        raise UserError("with --relay-url, --listen-port names the loopback port of the node's mailbox")
    dep = load_deployment(deployment)
    path = config or (home or pcn_home()) / name / "node.toml"
    password = password_from_env_or_file(file=password_file)
    cfg, keys = init_org(
        path,
        name=name,
        rpc_url=rpc_url or dep.rpc_url,
        deployment=dep.path,
        redis_url=redis_url,
        endpoint=endpoint,
        password=password,
        workers=workers,
        password_file=password_file,
        relay_url=relay_url,
        listen_port=listen_port,
    )
    endpoint = cfg.endpoint
    if listen_host != cfg.listen_host:
        cfg.listen_host = listen_host
        cfg.save(Path(cfg.path))
    key = _hex(keys.x25519_public)
    admit = shlex.join(
        ["pcn", "org", "admit", keys.address, "--name", name, "--encryption-key", key, "--endpoint", endpoint]
    )
    if as_json:
        emit_json(
            {
                "name": name,
                "config": cfg.path,
                "data_dir": str(cfg.data_path),
                "address": keys.address,
                "encryption_key": key,
                "endpoint": endpoint,
                "admit_command": admit,
            }
        )
        return
    console.print(f"organisation {name} initialised", highlight=False)
    console.print(f"  config:         {cfg.path}", highlight=False)
    console.print(f"  address:        {keys.address}", highlight=False)
    console.print(f"  encryption key: {key}", highlight=False)
    console.print(f"  endpoint:       {endpoint}", highlight=False)
    console.print("The consortium admin admits it with:", highlight=False)
    console.print(f"  {admit}", highlight=False, soft_wrap=True)
    console.print(
        f"Then fund {keys.address} with gas and start the node: pcn node start --config {shlex.quote(cfg.path)}",
        highlight=False,
    )


# ---------------------------------------------------------------------------- node


def _status_table(st: dict[str, Any]) -> Table:
    table = Table("process", "pid", "alive", title=f"node {st['org']} — mailbox {st['endpoint']}")
    for name, p in st.get("processes", {}).items():
        table.add_row(name, str(p["pid"]), "yes" if p["alive"] else "NO")
    return table


@node_app.command("start")
@handle_errors()
def node_start(config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """Start the mailbox, chain watcher and workers in the background; wait until the mailbox answers."""
    from pcn.chain.types import OrgStatus
    from pcn.runtime import services

    ctx = node_context(config, org)  # unlocks the keystore now: a bad password fails here, not in a child
    warnings: list[str] = []
    registered = ctx.ledger.organisation(ctx.address)
    if registered.status is not OrgStatus.ACTIVE:
        state = "not admitted" if registered.status is OrgStatus.NONE else registered.status.name.lower()
        warnings.append(
            f"{ctx.config.name} ({ctx.address}) is {state} on chain: peers will not talk to it until the admin "
            "admits (or reinstates) it"
        )
    elif registered.endpoint.rstrip("/") != ctx.config.endpoint.rstrip("/"):
        warnings.append(
            f"the endpoint registered on chain ({registered.endpoint}) differs from the config's "
            f"({ctx.config.endpoint}): peers use the registered one"
        )
    st = services.start(ctx.config)
    if as_json:
        emit_json({**st, "address": ctx.address, "warnings": warnings})
        return
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    pids = ", ".join(f"{n} {p['pid']}" for n, p in st["processes"].items())
    console.print(f"node {st['org']} running, mailbox at {st['endpoint']} ({pids})", highlight=False)
    console.print(f"logs: {ctx.config.data_path / 'logs'}", highlight=False)


@node_app.command("stop")
@handle_errors()
def node_stop(config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """Stop the node's processes."""
    from pcn.runtime import services

    res = services.stop(org_config(config, org))
    if as_json:
        emit_json(res)
    elif res["stopped"]:
        console.print(f"node {res['org']} stopped ({', '.join(res['stopped'])})", highlight=False)
    else:
        console.print(f"node {res['org']} was not running", highlight=False)


@node_app.command("status")
@handle_errors()
def node_status(config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """Which of the node's processes are alive and whether its mailbox answers; in pull mode,
    whether the relay answers for it and sees it fetching (exit 3 if not running)."""
    from pcn.runtime import services

    st = services.status(org_config(config, org))
    if as_json:
        emit_json(st)
    else:
        if st["processes"]:
            console.print(_status_table(st))
        health = "healthy" if st["mailbox_healthy"] else "not answering"
        state = "running" if st["running"] else "not running"
        console.print(f"node {st['org']}: {state}; mailbox {st['endpoint']} {health}", highlight=False)
        if "relay" in st:
            rel = st["relay"]
            if not rel["reachable"]:
                seen = f"not reachable ({rel['error']})"
            elif rel["node_online"]:
                seen = "reachable; it sees this node fetching"
            else:
                seen = "reachable; it does NOT see this node fetching (peers' deliveries wait there)"
            console.print(f"relay {rel['url']}: {seen}", highlight=False)
    if not st["running"]:
        raise typer.Exit(3)


# ---------------------------------------------------------------------------- data


@data_app.command("register")
@handle_errors()
def data_register(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Dataset name", show_default=False)],
    id_column: Annotated[str, typer.Option("--id-column", help="Column identifying a record", show_default=False)],
    policy: Annotated[Path, typer.Option("--policy", help="Usage policy (TOML)", show_default=False)],
    fmt: Annotated[str | None, typer.Option("--format", help="csv or parquet (default: from the file name)")] = None,
    config: ConfigOpt = None,
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fingerprint FILE locally and register it on chain with its usage policy (no row leaves the node)."""
    from pcn.data.policy import load_policy
    from pcn.runtime import operations

    pol = load_policy(policy)  # a bad policy is reported before the keystore is unlocked
    ctx = node_context(config, org)
    ledger = ctx.ledger
    limits, grants = pol.resolve(
        operations.algorithm_hash, lambda who: operations.resolve_org(ledger, who), ledger.chain_now()
    )
    local = operations.register_dataset(
        ctx, file, name=name, id_column=id_column, limits=limits, grants=grants, fmt=fmt
    )
    policy_out = {
        "max_uses": limits.max_uses,
        "expiry": limits.expiry,
        "epsilon_total": _eps(limits.epsilon_total),
        "algorithms": [_hex(a) for a in grants.algorithms],
        "requesters": list(grants.requesters),
        "recipients": list(grants.recipients),
    }
    if as_json:
        emit_json({**asdict(local), "policy": policy_out})
        return
    console.print(
        f"registered dataset {local.dataset_id} {local.name!r}: {local.row_count} rows, root {local.merkle_root}",
        highlight=False,
    )
    console.print(
        f"policy: at most {limits.max_uses} uses until {_when(limits.expiry)}, "
        f"ε budget {policy_out['epsilon_total']:g}; "
        f"{len(grants.algorithms)} algorithm(s), {len(grants.requesters)} requester(s), "
        f"{len(grants.recipients)} recipient(s) allowed (tx {local.registered_tx})",
        highlight=False,
    )


@data_app.command("list")
@handle_errors()
def data_list(config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """This node's datasets, with their on-chain version, uses and privacy budget."""
    from pcn.chain.errors import ContractRevert

    ctx = node_context(config, org, signing=False)
    rows: list[dict[str, Any]] = []
    for local in ctx.store.all():
        entry: dict[str, Any] = asdict(local)
        try:
            ds = ctx.ledger.dataset(local.dataset_id)
            entry["chain"] = {
                "owner": ds.owner,
                "version": ds.version,
                "uses": ds.uses,
                "max_uses": ds.max_uses,
                "epsilon_spent": _eps(ds.epsilon_spent),
                "epsilon_total": _eps(ds.epsilon_total),
                "expiry": ds.expiry,
            }
        except ContractRevert as exc:
            entry["chain"] = {"error": str(exc)}
        rows.append(entry)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print(f"{ctx.config.name} has no datasets; register one with `pcn data register`", highlight=False)
        return
    table = Table("id", "name", "rows", "file", "version", "uses", "ε spent / total", "expires", "root")
    for r in rows:
        c = r["chain"]
        if "error" in c:
            chain_cols = [c["error"], "", "", ""]
        else:
            chain_cols = [
                str(c["version"]),
                f"{c['uses']}/{c['max_uses']}",
                f"{c['epsilon_spent']:g} / {c['epsilon_total']:g}",
                _when(c["expiry"]),
            ]
        table.add_row(
            str(r["dataset_id"]), r["name"], str(r["row_count"]), r["path"], *chain_cols, _short(r["merkle_root"])
        )
    console.print(table)


_FP_FIELDS = ("merkle_root", "schema_hash", "metadata_hash", "row_count")


def _fp_dict(fp: Fingerprint) -> dict[str, Any]:
    return {
        "merkle_root": _hex(fp.merkle_root),
        "schema_hash": _hex(fp.schema_hash),
        "metadata_hash": _hex(fp.metadata_hash),
        "row_count": fp.row_count,
    }


@data_app.command("verify")
@handle_errors()
def data_verify(dataset_id: DatasetArg, config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """Recompute the local file's fingerprint with its stored salt and compare with the chain (exit 1 if it differs)."""
    from pcn.data.fingerprint import fingerprint_file

    ctx = node_context(config, org, signing=False)
    local = ctx.store.get(dataset_id)
    salt = ctx.store.salt(str(dataset_id))
    if not Path(local.path).is_file():
        raise NamedError("DataUnavailable", f"dataset {dataset_id}'s file {local.path} is missing")
    version = ctx.ledger.dataset(dataset_id).version
    registered = _fp_dict(ctx.ledger.fingerprint(dataset_id, version))
    # the metadata operations.register_dataset fingerprinted
    metadata = {"name": local.name, "id_column": local.id_column, "format": local.fmt}
    actual = _fp_dict(fingerprint_file(local.path, local.fmt, salt, metadata))
    mismatches = [
        {"field": f, "local": actual[f], "chain": registered[f]} for f in _FP_FIELDS if actual[f] != registered[f]
    ]
    report = {
        "dataset_id": dataset_id,
        "path": local.path,
        "version": version,
        "matches": not mismatches,
        "mismatches": mismatches,
        "local": actual,
        "chain": registered,
    }
    if as_json:
        emit_json(report)
    elif not mismatches:
        console.print(
            f"dataset {dataset_id}: {local.path} matches its registered fingerprint (version {version}): "
            f"root {actual['merkle_root']}, {actual['row_count']} rows",
            highlight=False,
        )
    if mismatches:
        if not as_json:
            what = "; ".join(f"{m['field']} is {m['local']} here, {m['chain']} on chain" for m in mismatches)
            err_console.print(
                f"[bold red]error:[/] FingerprintMismatch: dataset {dataset_id}: {local.path} differs from its "
                f"registered fingerprint (version {version}): {what}",
                highlight=False,
            )
        raise typer.Exit(1)


@data_app.command("usage")
@handle_errors()
def data_usage(
    dataset_id: DatasetArg,
    config: ConfigOpt = None,
    org: OrgOpt = None,
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every task that used (or asked to use) the dataset: requester, algorithm, time, ε, status."""
    ledger = chain_reader(config, org, deployment, rpc_url)
    ds = ledger.dataset(dataset_id)
    names = _names(ledger)
    kind = _Kinds(ledger)
    tasks: list[_DatasetTaskRow] = []
    for task_id in range(1, ledger.task_count() + 1):
        pinned = dict(ledger.task_datasets(task_id))
        if dataset_id not in pinned:
            continue
        t = ledger.task(task_id)
        tasks.append(
            {
                "task_id": task_id,
                "requester": t.requester,
                "requester_name": names.get(t.requester, ""),
                "algorithm": kind(t.algorithm_hash),
                "algorithm_hash": _hex(t.algorithm_hash),
                "dataset_version": pinned[dataset_id],
                "created_at": t.created_at,
                "epsilon": _eps(t.epsilon),
                "status": t.status.name.lower(),
                "recipient": t.result_recipient,
            }
        )
    out = {
        "dataset_id": dataset_id,
        "owner": ds.owner,
        "uses": ds.uses,
        "max_uses": ds.max_uses,
        "epsilon_spent": _eps(ds.epsilon_spent),
        "epsilon_total": _eps(ds.epsilon_total),
        "tasks": tasks,
    }
    if as_json:
        emit_json(out)
        return
    console.print(
        f"dataset {dataset_id} of {_who(ds.owner, names)}: {ds.uses}/{ds.max_uses} uses, "
        f"ε {out['epsilon_spent']:g} of {out['epsilon_total']:g} spent",
        highlight=False,
    )
    if not tasks:
        console.print("no task has asked for it", highlight=False)
        return
    table = Table("task", "requester", "algorithm", "submitted", "ε", "status")
    for row in tasks:
        table.add_row(
            str(row["task_id"]),
            row["requester_name"] or row["requester"],
            row["algorithm"],
            _when(row["created_at"]),
            f"{row['epsilon']:g}",
            row["status"],
        )
    console.print(table)


@data_app.command("prove")
@handle_errors()
def data_prove(
    dataset_id: DatasetArg,
    row: Annotated[int, typer.Option("--row", help="0-based row index in file order (the header is not a row)")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the proof here (default: stdout)")] = None,
    config: ConfigOpt = None,
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a Merkle inclusion proof of one row (it discloses that row's values) against the on-chain root."""
    from pcn.data.fingerprint import inclusion_proof, verify_against_fingerprint
    from pcn.data.readers import read_table

    ctx = node_context(config, org, signing=False)
    local = ctx.store.get(dataset_id)
    salt = ctx.store.salt(str(dataset_id))
    table, _ = read_table(local.path, local.fmt)
    if not 0 <= row < table.num_rows:
        raise UserError(
            f"--row {row} is outside 0..{table.num_rows - 1} (dataset {dataset_id} has {table.num_rows} rows)"
        )
    proof = inclusion_proof(table, salt, row)
    version = ctx.ledger.dataset(dataset_id).version
    fp = ctx.ledger.fingerprint(dataset_id, version)
    if not verify_against_fingerprint(fp, proof):
        raise NamedError(
            "FingerprintMismatch",
            f"dataset {dataset_id}'s file {local.path} no longer matches its registered fingerprint "
            f"(version {version}), so no proof from it would verify; "
            f"`pcn data verify {dataset_id}` shows the difference",
        )
    text = proof.to_json()
    if out is None:
        typer.echo(text)
        return
    out.write_text(text + "\n", encoding="utf-8")
    if as_json:
        emit_json(
            {"dataset_id": dataset_id, "version": version, "row": row, "out": str(out), "root": _hex(fp.merkle_root)}
        )
    else:
        console.print(
            f"proof of row {row} of dataset {dataset_id} (version {version}) written to {out}; "
            "it discloses that row's values",
            highlight=False,
        )


@data_app.command("check-proof")
@handle_errors()
def data_check_proof(
    file: Annotated[Path, typer.Argument(help="Row proof JSON (from `pcn data prove`)", show_default=False)],
    dataset_id: DatasetIdOpt,
    version: Annotated[
        int | None, typer.Option("--version", help="Fingerprint version (default: current)", min=0, max=2**32 - 1)
    ] = None,
    config: ConfigOpt = None,
    org: OrgOpt = None,
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a row proof against the dataset's on-chain root and row count (anyone may; exit 1 if it fails)."""
    from pcn.data.fingerprint import RowProof, verify_against_fingerprint

    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read proof file {file}: {exc.strerror or exc}") from None
    proof = RowProof.from_json(raw, source=file)
    ledger = chain_reader(config, org, deployment, rpc_url)
    v = version or ledger.dataset(dataset_id).version
    fp = ledger.fingerprint(dataset_id, v)
    valid = verify_against_fingerprint(fp, proof)
    report = {
        "dataset_id": dataset_id,
        "version": v,
        "valid": valid,
        "index": proof.index,
        "cells": list(proof.cells),
        "root": _hex(fp.merkle_root),
        "row_count": fp.row_count,
    }
    if as_json:
        emit_json(report)
    elif valid:
        console.print(
            f"valid: row {proof.index} {list(proof.cells)} is in dataset {dataset_id} version {v} "
            f"(root {report['root']}, {fp.row_count} rows)",
            highlight=False,
        )
    if not valid:
        if not as_json:
            why = (
                f"the proof is for {proof.row_count} rows, the dataset has {fp.row_count}"
                if proof.row_count != fp.row_count
                else f"its row does not hash up to the root {report['root']}"
            )
            err_console.print(
                f"[bold red]error:[/] ProofInvalid: {file} does not prove a row of dataset {dataset_id} "
                f"version {v}: {why}",
                highlight=False,
            )
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- algorithms


@algo_app.command("register")
@handle_errors()
def algo_register(
    name: Annotated[str, typer.Argument(help="Built-in algorithm name (e.g. stats)", show_default=False)],
    version: Annotated[str, typer.Option("--version", help="Version label")] = "1.0.0",
    description: Annotated[str, typer.Option("--description", help="Description (its hash goes on chain)")] = "",
    config: ConfigOpt = None,
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a built-in algorithm on chain by the hash of its code on disk."""
    from pcn.runtime import operations

    if name.startswith("0x"):
        raise UserError("register takes a built-in algorithm's name; its code hash is computed from the code on disk")
    operations.algorithm_hash(name)  # an unknown name is an error listing the known ones
    ctx = node_context(config, org)
    code, res = operations.register_algorithm(ctx.ledger, name, version, description)
    if as_json:
        tx = None if res is None else _tx(res)
        emit_json({"name": name, "code_hash": _hex(code), "registered": res is not None, "tx": tx})
    elif res is None:
        console.print(f"{name} ({_hex(code)}) is already registered", highlight=False)
    else:
        console.print(f"registered {name} {version}: code hash {_hex(code)} (tx {res.tx_hash})", highlight=False)


@algo_app.command("hash")
@handle_errors()
def algo_hash(
    name: Annotated[str, typer.Argument(help="Built-in algorithm name (e.g. stats)", show_default=False)],
    manifest: Annotated[
        bool, typer.Option("--manifest", help="List every file and distribution the hash covers, with its hash")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The code hash of a built-in algorithm as it is on disk and installed here (no chain needed)."""
    from pcn.algorithms import BUILTIN, UnknownAlgorithm
    from pcn.algorithms.codehash import algorithm_manifest

    if name not in BUILTIN:
        raise UnknownAlgorithm(f"no built-in algorithm {name!r}; known: {sorted(BUILTIN)}")
    found = algorithm_manifest(name)
    code = found.digest()
    if as_json:
        entries = [asdict(e) for e in found.entries]
        emit_json({"name": name, "code_hash": _hex(code), **({"manifest": entries} if manifest else {})})
        return
    console.print(f"{name}  {_hex(code)}", highlight=False)
    if manifest:
        for e in found.entries:
            console.print(f"  {e.line()}", highlight=False, soft_wrap=True)


@algo_app.command("approve")
@handle_errors()
def algo_approve(
    name: Annotated[str, typer.Argument(help="Built-in algorithm name or 0x code hash", show_default=False)],
    dataset_id: Annotated[
        int, typer.Option("--dataset", help="Your dataset's id", show_default=False, min=0, max=UINT256_MAX)
    ],
    revoke: Annotated[bool, typer.Option("--revoke", help="Withdraw the approval instead")] = False,
    config: ConfigOpt = None,
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Allow (or with --revoke disallow) an algorithm's code hash on one of your datasets."""
    from pcn.runtime import operations

    code = operations.algorithm_hash(name)
    ctx = node_context(config, org)
    res = ctx.ledger.set_algorithm_allowed(dataset_id, code, not revoke)
    if as_json:
        emit_json(
            {"algorithm": name, "code_hash": _hex(code), "dataset_id": dataset_id, "allowed": not revoke, **_tx(res)}
        )
    else:
        what = "revoked" if revoke else "approved"
        console.print(
            f"{what} {name} ({_short(_hex(code))}) for dataset {dataset_id} (tx {res.tx_hash})", highlight=False
        )


@algo_app.command("list")
@handle_errors()
def algo_list(
    config: ConfigOpt = None,
    org: OrgOpt = None,
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Registered algorithms, marking which match the code on disk here."""
    from pcn.algorithms import BUILTIN
    from pcn.algorithms.codehash import algorithm_code_hash

    ledger = chain_reader(config, org, deployment, rpc_url)
    on_disk = {kind: algorithm_code_hash(kind) for kind in BUILTIN}
    names = _names(ledger)
    rows: list[_AlgorithmRow] = []
    for a in ledger.algorithms():
        rows.append(
            {
                "kind": a.kind,
                "version": a.version,
                "code_hash": _hex(a.code_hash),
                "publisher": a.publisher,
                "registered_at": a.registered_at,
                "deprecated": a.deprecated,
                "matches_code_on_disk": (on_disk[a.kind] == a.code_hash) if a.kind in on_disk else None,
            }
        )
    if as_json:
        emit_json(rows)
        return
    table = Table("kind", "version", "code hash", "publisher", "registered", "deprecated", "code on disk")
    for r in rows:
        match = {True: "matches", False: "DIFFERS", None: "not built in"}[r["matches_code_on_disk"]]
        table.add_row(
            r["kind"],
            r["version"],
            _short(r["code_hash"], 16),
            _who(r["publisher"], names),
            _when(r["registered_at"]),
            "yes" if r["deprecated"] else "",
            match,
        )
    console.print(table)


# ---------------------------------------------------------------------------- tasks


@task_app.command("submit")
@handle_errors()
def task_submit(
    algo: Annotated[str, typer.Option("--algo", help="Built-in algorithm name or 0x code hash", show_default=False)],
    datasets: Annotated[str, typer.Option("--datasets", help="Input dataset ids, e.g. 1,2,3", show_default=False)],
    params: Annotated[Path, typer.Option("--params", help="Parameters (JSON file)", show_default=False)],
    recipient: Annotated[
        str, typer.Option("--recipient", help="Organisation name or address receiving the result", show_default=False)
    ],
    participants: Annotated[
        str | None, typer.Option("--participants", help="Names or addresses (default: the datasets' owners)")
    ] = None,
    deadline: Annotated[str, typer.Option("--deadline", help="Time allowed: 3600, 30m, 1h, 2d")] = "1h",
    epsilon: Annotated[float, typer.Option("--epsilon", help="Privacy budget ε the task spends")] = 0.0,
    min_survivors: Annotated[
        int | None,
        typer.Option(
            "--min-survivors",
            help="Fewest participants that must finish (2..participants; default all: no dropouts)",
            min=1,
            max=255,
        ),
    ] = None,
    config: ConfigOpt = None,
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a task (a contract call signed as this organisation) and push its parameters to the participants."""
    from pcn.runtime import operations

    doc = _read_params(params)
    _check_params(algo, doc, params)
    ids = _int_list(datasets, "--datasets")
    seconds = parse_duration(deadline)
    if epsilon < 0:
        raise UserError("--epsilon must not be negative")
    ctx = node_context(config, org)
    ledger = ctx.ledger
    parts = None
    if participants:
        parts = [operations.resolve_org(ledger, p.strip()) for p in participants.split(",") if p.strip()]
    try:  # submit_task checks the parameters again, now knowing a code hash's algorithm
        sub = operations.submit_task(
            ledger,
            algorithm=algo,
            dataset_ids=ids,
            params=doc,
            recipient=recipient,
            deadline_in=seconds,
            epsilon=epsilon,
            participants=parts,
            min_survivors=min_survivors,
        )
    except operations.InvalidParameters as exc:
        raise NamedError("InvalidParameters", f"parameters file {params} is {exc}") from None
    failed = {p: why for p, why in sub.delivered.items() if why != "ok"}
    if as_json:
        emit_json(
            {
                "task_id": sub.task_id,
                "tx_hash": sub.tx.tx_hash,
                "block_number": sub.tx.block_number,
                "params_hash": _hex(sub.params_hash),
                "delivered": sub.delivered,
            }
        )
        return
    console.print(
        f"submitted task {sub.task_id} (tx {sub.tx.tx_hash}); parameters hash {_hex(sub.params_hash)}",
        highlight=False,
    )
    names = _names(ledger)
    for p, why in failed.items():
        err_console.print(f"[yellow]warning:[/] parameters not delivered to {_who(p, names)}: {why}", highlight=False)
    if failed:
        err_console.print(
            f"push them again with: pcn task push-params {sub.task_id} --params {params}", highlight=False
        )
    console.print(
        f"each data owner inspects and approves with `pcn task approve {sub.task_id}`; follow it with "
        f"`pcn task status {sub.task_id} --watch`",
        highlight=False,
    )


@task_app.command("push-params")
@handle_errors()
def task_push_params(
    task_id: TaskArg,
    params: Annotated[Path, typer.Option("--params", help="The parameters JSON file it was submitted with")],
    config: ConfigOpt = None,
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliver a task's parameters to its participants again, as its requester (they must hash
    to the on-chain params hash; each copy is signed and sealed to its participant)."""
    import hashlib

    from pcn.runtime import operations

    doc = _read_params(params)
    ledger = node_context(config, org).ledger
    task = ledger.task(task_id)
    if task.requester.lower() != ledger.address.lower():
        names = _names(ledger)
        raise NamedError(
            "NotRequester", f"only task {task_id}'s requester, {_who(task.requester, names)}, hands out its parameters"
        )
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()  # as operations.submit_task hashes them
    if hashlib.sha256(body).digest() != task.params_hash:
        raise NamedError("InvalidParameters", f"{params} does not hash to task {task_id}'s on-chain parameters hash")
    delivered = operations.push_params(ledger, task_id, body)
    if as_json:
        emit_json({"task_id": task_id, "delivered": delivered})
        return
    names = _names(ledger)
    for p, why in delivered.items():
        console.print(f"{_who(p, names)}: {why}", highlight=False)
    if any(why != "ok" for why in delivered.values()):
        raise typer.Exit(1)


def _params_summary(ctx: Any, task_id: int, params_hash: bytes) -> str:
    """The parameters this node received for the task (they hash to the on-chain params hash:
    the mailbox checks that on delivery), or why they cannot be shown."""
    try:
        raw = ctx.redis.get(ctx.key("params", task_id))
    except Exception as exc:  # the summary is advisory: a down Redis must not block approving
        return f"not readable here ({type(exc).__name__}); params hash {_hex(params_hash)}"
    if raw is None:
        return f"not received yet; params hash {_hex(params_hash)}"
    text = bytes(raw).decode("utf-8", "replace")
    return text if len(text) <= 400 else text[:400] + "…"


def _request_view(ledger: Ledger, task_id: int, request_hash: bytes, params: str) -> dict[str, Any]:
    """What an owner approves: every field the request hash covers, readable."""
    task = ledger.task(task_id)
    names = _names(ledger)
    algo = ledger.algorithm(task.algorithm_hash)
    return {
        "task_id": task_id,
        "request_hash": _hex(request_hash),
        "requester": _who(task.requester, names),
        "algorithm": f"{algo.kind} {algo.version}" if algo else "unregistered",
        "algorithm_hash": _hex(task.algorithm_hash),
        "datasets": [
            {"id": d, "version": v, "owner": _who(ledger.dataset(d).owner, names)}
            for d, v in ledger.task_datasets(task_id)
        ],
        "participants": [_who(p, names) for p in ledger.task_participants(task_id)],
        "recipient": _who(task.result_recipient, names),
        "params": params,
        "epsilon": _eps(task.epsilon),
        "deadline": _when(task.deadline),
        "submitted": _when(task.created_at),
    }


@task_app.command("approve")
@handle_errors()
def task_approve(
    task_id: TaskArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve without asking (for scripts)")] = False,
    config: ConfigOpt = None,
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a task that uses your datasets and approve it after a y/N question (signed as this organisation).

    The approval names the hash of the request shown, so it cannot count for any other task."""
    ctx = node_context(config, org)
    ledger = ctx.ledger
    # Hash what we read and show; the chain reverts RequestHashMismatch unless it is task_id's request.
    request_hash = ledger.computed_request_hash(task_id)
    view = _request_view(ledger, task_id, request_hash, _params_summary(ctx, task_id, ledger.task(task_id).params_hash))
    if as_json and not yes:
        raise UserError("--json cannot ask for confirmation: add --yes to approve what `pcn task status` shows")
    if not as_json:
        lines = [f"task {task_id} asks to use your data:"]
        for key, value in view.items():
            if key == "datasets":
                value = ", ".join(f"#{d['id']} v{d['version']} of {d['owner']}" for d in value)
            elif key == "participants":
                value = ", ".join(value)
            lines.append(f"  {key.replace('_', ' ')}: {value}")
        console.print("\n".join(lines), highlight=False, markup=False)
    if not yes and not typer.confirm("approve this request?", default=False):
        console.print(f"not approved: task {task_id} unchanged", highlight=False)
        raise typer.Exit(1)
    res = ledger.approve(task_id, request_hash)
    task = ledger.task(task_id)
    out = {
        "task_id": task_id,
        "tx_hash": res.tx_hash,
        "block_number": res.block_number,
        "status": task.status.name.lower(),
        "approvals": task.approvals,
        "required_approvals": task.required_approvals,
        "request": view,
    }
    if as_json:
        emit_json(out)
    else:
        console.print(
            f"approved task {task_id} (tx {res.tx_hash}): {task.approvals}/{task.required_approvals} approvals, "
            f"status {out['status']}",
            highlight=False,
        )


def _fraction(row: dict[str, Any]) -> float:
    try:
        return min(1.0, max(0.0, float(row.get("fraction", 0.0))))
    except (TypeError, ValueError):
        return 0.0


def _is_final(progress: dict[str, Any]) -> bool:
    from pcn.chain.types import TaskStatus

    return TaskStatus[progress["status"].upper()].is_final


def _progress_view(p: dict[str, Any]) -> Group:
    from pcn.runtime.taskstate import Phase

    head = f"task {p['task_id']}: {p['status']}"
    if p.get("refusal"):
        head += f" (refused: {p['refusal']})"
    if p["status"] == "completed":
        head += f", result hash {p['result_hash']}"
    else:
        head += f", deadline {_when(p['deadline'])}"
    table = Table("participant", "on chain", "phase", "progress", "%", "eta", "detail")
    own: list[str] = []
    for row in p["participants"]:
        if row.get("own"):
            figures = ", ".join(f"{k} {v}" for k, v in row["own"].items())
            own.append(f"{row['name']}'s own figures (shown to it alone): {figures}")
        eta = row.get("eta_seconds")
        frac = _fraction(row)
        detail = row.get("detail", "")
        if row.get("phase") == Phase.WAITING:
            whom = ", ".join(row.get("waiting_for", [])) or "a message in flight"
            detail = f"waiting for {whom} ({row.get('waiting_seconds', 0):.0f} s)"
        table.add_row(
            row["name"],
            row["state"],
            row.get("phase", "-"),
            ProgressBar(total=1.0, completed=frac, width=24),
            f"{frac * 100:.0f}%",
            "-" if eta is None else f"{eta:.0f} s",
            detail,
        )
    return Group(Text(head), table, *(Text(line) for line in own))


@task_app.command("status")
@handle_errors()
def task_status(
    task_id: TaskArg,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch", help="Refresh every 0.5 s until the task is final (exit 2 if its deadline passes first)"
        ),
    ] = False,
    config: ConfigOpt = None,
    org: OrgOpt = None,
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A task's on-chain status and each participant's live progress (phase, percent, detail)."""
    from rich.live import Live

    from pcn.runtime.operations import task_progress

    ledger = signing_reader(config, org, deployment, rpc_url)  # mailboxes answer signed progress reads only
    p = task_progress(ledger, task_id)

    def watching() -> bool:
        # a task nobody finishes stays unfinal on chain after its deadline: stop watching then
        return not _is_final(p) and ledger.block_timestamp() <= p["deadline"]

    try:
        if watch and as_json:
            while watching():
                time.sleep(0.5)
                p = task_progress(ledger, task_id)
        elif watch:
            with Live(_progress_view(p), console=console, refresh_per_second=4) as live:
                while watching():
                    time.sleep(0.5)
                    p = task_progress(ledger, task_id)
                    live.update(_progress_view(p))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if as_json:
        emit_json(p)
    elif not watch:
        console.print(_progress_view(p))
    if watch and not _is_final(p):
        if not as_json:
            err_console.print(
                f"task {task_id} passed its deadline ({_when(p['deadline'])}) without finishing; "
                f"`pcn task expire {task_id}` records that on chain",
                highlight=False,
            )
        raise typer.Exit(2)


@task_app.command("cancel")
@handle_errors()
def task_cancel(task_id: TaskArg, config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a task you submitted (before it runs)."""
    ctx = node_context(config, org)
    res = ctx.ledger.cancel(task_id)
    if as_json:
        emit_json({"task_id": task_id, **_tx(res)})
    else:
        console.print(f"cancelled task {task_id} (tx {res.tx_hash})", highlight=False)


@task_app.command("consent")
@handle_errors()
def task_consent(task_id: TaskArg, config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """Agree to take part in a task whose inputs you do not own (the owners approve instead)."""
    ctx = node_context(config, org)
    res = ctx.ledger.consent(task_id)
    if as_json:
        emit_json({"task_id": task_id, **_tx(res)})
    else:
        console.print(f"consented to task {task_id} (tx {res.tx_hash})", highlight=False)


@task_app.command("contest-dropout")
@handle_errors()
def task_contest_dropout(
    task_id: TaskArg, config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False
) -> None:
    """You were reported dropped but were alive: the running task becomes Disputed."""
    ctx = node_context(config, org)
    res = ctx.ledger.contest_dropout(task_id)
    if as_json:
        emit_json({"task_id": task_id, **_tx(res)})
    else:
        console.print(f"contested the dropout: task {task_id} is disputed (tx {res.tx_hash})", highlight=False)


@task_app.command("expire")
@handle_errors()
def task_expire(task_id: TaskArg, config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """Mark a task that passed its deadline unfinished as expired (any member may)."""
    ctx = node_context(config, org)
    res = ctx.ledger.expire(task_id)
    if as_json:
        emit_json({"task_id": task_id, **_tx(res)})
    else:
        console.print(f"task {task_id} marked expired (tx {res.tx_hash})", highlight=False)


@task_app.command("list")
@handle_errors()
def task_list(
    limit: Annotated[int, typer.Option("--limit", help="How many of the most recent tasks")] = 20,
    config: ConfigOpt = None,
    org: OrgOpt = None,
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The most recent tasks: id, algorithm, status, requester."""
    ledger = chain_reader(config, org, deployment, rpc_url)
    names = _names(ledger)
    kind = _Kinds(ledger)
    count = ledger.task_count()
    rows: list[_TaskRow] = []
    for task_id in range(count, max(0, count - max(0, limit)), -1):
        t = ledger.task(task_id)
        rows.append(
            {
                "task_id": task_id,
                "algorithm": kind(t.algorithm_hash),
                "status": t.status.name.lower(),
                "requester": t.requester,
                "requester_name": names.get(t.requester, ""),
                "datasets": [d for d, _ in ledger.task_datasets(task_id)],
                "created_at": t.created_at,
            }
        )
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("no tasks yet", highlight=False)
        return
    table = Table("task", "algorithm", "status", "requester", "datasets", "submitted")
    for r in rows:
        table.add_row(
            str(r["task_id"]),
            r["algorithm"],
            r["status"],
            r["requester_name"] or r["requester"],
            ",".join(map(str, r["datasets"])),
            _when(r["created_at"]),
        )
    console.print(table)


@task_app.command("result")
@handle_errors()
def task_result(task_id: TaskArg, config: ConfigOpt = None, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """The result held by this node (the named recipient), checked against the on-chain commitment (exit 1 if not)."""
    from pcn.runtime.operations import read_result

    ctx = node_context(config, org, signing=False)
    r = read_result(ctx, task_id)
    if as_json:
        emit_json(r)
    else:
        console.print_json(json.dumps(r["result"]))
        if r["matches_chain"]:
            console.print(
                f"task {task_id} ({r['status']}): the result matches the on-chain commitment {r['on_chain']}",
                highlight=False,
            )
    if not r["matches_chain"]:
        if not as_json:
            err_console.print(
                f"[bold red]error:[/] ResultMismatch: task {task_id}: the stored result's commitment "
                f"{r['commitment']} does not match the on-chain result hash {r['on_chain']}",
                highlight=False,
            )
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- audit


@audit_app.command("export-log")
@handle_errors()
def audit_export_log(
    out: Annotated[Path, typer.Option("--out", help="Where to write the log (JSON lines)", show_default=False)],
    config: ConfigOpt = None,
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export this node's verified, hash-chained action log and compare it with its latest on-chain anchor."""
    from pcn.crypto.keys import OrgKeys
    from pcn.runtime.context import NodeContext

    cfg = org_config(config, org)
    count = NodeContext(cfg).log.export(out)
    entries = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        if line.strip():
            e = json.loads(line)
            entries[int(e["seq"])] = e["hash"]
    head_seq = max(entries, default=0)
    address = OrgKeys.read_public(cfg.keystore_dir).address
    anchor = config_ledger(cfg).latest_anchor(address)
    matches: bool | None = None
    anchor_out: dict[str, Any] | None = None
    if anchor is not None:
        matches = entries.get(anchor.sequence) == _hex(anchor.head_hash)
        anchor_out = {
            "sequence": anchor.sequence,
            "head_hash": _hex(anchor.head_hash),
            "anchored_at": anchor.anchored_at,
            "anchors": anchor.count,
        }
    report = {
        "out": str(out),
        "org": cfg.name,
        "address": address,
        "entries": count,
        "head": {"seq": head_seq, "hash": entries.get(head_seq)},
        "anchor": anchor_out,
        "anchor_matches": matches,
    }
    if as_json:
        emit_json(report)
    else:
        console.print(f"exported {count} entries of {cfg.name}'s action log to {out}", highlight=False)
        if head_seq:
            console.print(f"local head: entry {head_seq}, hash {entries[head_seq]}", highlight=False)
        if anchor is None:
            console.print("no anchor on chain yet", highlight=False)
        else:
            console.print(
                f"latest on-chain anchor: entry {anchor.sequence}, hash {_hex(anchor.head_hash)}, "
                f"at {_when(anchor.anchored_at)} ({anchor.count} anchor(s) in all)",
                highlight=False,
            )
            if matches:
                console.print(f"the exported entry {anchor.sequence} matches the anchor", highlight=False)
    if anchor is not None and not matches:
        if not as_json:
            err_console.print(
                f"[bold red]error:[/] AnchorMismatch: the exported log's entry {anchor.sequence} "
                "does not match the hash anchored on chain (the log was changed or truncated)",
                highlight=False,
            )
        raise typer.Exit(1)
