"""The regulator's commands: `pcn audit index|serve|report|verify|verify-log|anomalies`, and
the sign-in helpers `pcn audit sign-in-message` and `pcn audit sign`.

They work on the auditor's store (`--store URL`, else $PCN_AUDITOR_DB, else a SQLite file in
pcn's run directory). Only `index` and `serve` talk to the chain (`--deployment`,
`--rpc-url`); `report`, `verify`, `verify-log` and `anomalies` read the store alone, so an
audit can be repeated offline from a copy of it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pcn.cli.common import (
    DeploymentOpt,
    JsonOpt,
    NamedError,
    RpcOpt,
    UserError,
    connect,
    console,
    emit_json,
    err_console,
    handle_errors,
    load_signer,
    parse_duration,
)

if TYPE_CHECKING:
    from pcn.auditor.store import Store

STORE_INT_MAX = 2**63 - 1  # ids are SQL integers in the auditor's store: larger ones are usage errors
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="PCN_AUDITOR_DB",
        help="The auditor's store: a SQLAlchemy URL (sqlite:///…, postgresql://…) or a SQLite file path "
        "(default: auditor.sqlite in pcn's run directory)",
        show_default=False,
    ),
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="File holding the auditor account's private key (else $PCN_AUDITOR_KEY)"),
]
DevAccountOpt = Annotated[
    int | None, typer.Option("--dev-account", help="Sign with anvil's N-th public test account (devnet only)")
]

SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}
CHECK_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


def register(audit_app: typer.Typer) -> None:
    """Attach these commands to the existing `pcn audit` group (which keeps `export-log`)."""
    audit_app.info.help = (
        "Audit: index the chain, serve the regulator's dashboard, verify tasks and logs, report "
        "(and, for an organisation, export its action log)"
    )
    audit_app.command("index")(audit_index)
    audit_app.command("serve")(audit_serve)
    audit_app.command("report")(audit_report)
    audit_app.command("verify")(audit_verify)
    audit_app.command("verify-log")(audit_verify_log)
    audit_app.command("anomalies")(audit_anomalies)
    audit_app.command("sign-in-message")(audit_sign_in_message)
    audit_app.command("sign")(audit_sign)


# ---------------------------------------------------------------------------- helpers


@contextmanager
def _store(url: str | None) -> Iterator[Store]:
    from pcn.auditor.store import Store, StoreError, default_store_url

    target = url or default_store_url()
    try:
        st = Store(target)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:  # a database that cannot be reached or opened
        raise UserError(f"cannot open the auditor's store {target}: {exc}") from None
    try:
        yield st
    finally:
        st.dispose()


def _need_index(st: Store) -> None:
    if st.index_state() is None:
        raise UserError(f"the auditor's store {st.url} has indexed nothing yet: run `pcn audit index` first")


def _when(ts: int | float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _resolve_org(st: Store, org: str) -> str:
    """An organisation's account from its account or its name (as the store knows it)."""
    from eth_utils import is_address, to_checksum_address
    from sqlalchemy import select

    from pcn.auditor.store import Organisation

    if is_address(org):
        return str(to_checksum_address(org))
    with st.read() as s:
        found = s.scalars(select(Organisation.account).where(Organisation.name == org)).all()
    if not found:
        raise UserError(f"no organisation named {org!r} in the auditor's store: give its account (0x…) or its name")
    if len(found) > 1:
        raise UserError(f"several organisations are named {org!r}: give the account")
    return str(found[0])


# ---------------------------------------------------------------------------- index / serve


@handle_errors()
def audit_index(
    store: StoreOpt = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep following the chain until interrupted")] = False,
    confirmations: Annotated[
        int, typer.Option("--confirmations", min=0, help="Blocks to wait before indexing one (reorg safety)")
    ] = 1,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls with --follow")] = 2.0,
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Index every pcn event into the auditor's store (resumes where it stopped), then detect anomalies."""
    import threading

    from pcn.auditor.anomalies import detect_and_record
    from pcn.auditor.indexer import TRANSIENT_INDEX_ERRORS, Indexer, IndexerError

    ledger = connect(deployment, rpc_url)
    with _store(store) as st:
        try:
            indexer = Indexer(ledger, st, confirmations=confirmations)
        except IndexerError as exc:
            raise UserError(str(exc)) from None
        started = time.monotonic()
        events = indexer.run_once()
        found = detect_and_record(st)
        status = indexer.status()
        report = {
            "store": st.url,
            "chain_id": status.chain_id,
            "events_read": events,
            "events": status.events,
            "indexed_block": status.indexed_block,
            "head_block": status.head_block,
            "lag": status.lag,
            "anomalies": len(found),
            "seconds": round(time.monotonic() - started, 3),
        }
        if as_json:
            emit_json(report)
        else:
            console.print(
                f"indexed {events} new event(s) into {st.url}: up to block {status.indexed_block} "
                f"(chain head {status.head_block}, {status.events} events in all); {len(found)} anomaly(ies)",
                highlight=False,
            )
        if not follow:
            return
        stop = threading.Event()
        if not as_json:
            console.print("following the chain (Ctrl-C to stop)…", highlight=False)
        try:
            while not stop.is_set():
                stop.wait(interval)
                try:
                    n = indexer.run_once()
                except TRANSIENT_INDEX_ERRORS as exc:  # the chain or database briefly away: keep following
                    err_console.print(f"[yellow]warning:[/] indexing failed, retrying: {exc}", highlight=False)
                    continue
                if n:
                    found = detect_and_record(st)
                    status = indexer.status()
                    line = {"events_read": n, "indexed_block": status.indexed_block, "anomalies": len(found)}
                    if as_json:
                        typer.echo(json.dumps(line))
                    else:
                        console.print(
                            f"{_when(time.time())}: {n} event(s), block {status.indexed_block}, "
                            f"{len(found)} anomaly(ies)",
                            highlight=False,
                        )
        except KeyboardInterrupt:
            pass


@handle_errors()
def audit_serve(
    store: StoreOpt = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8700,
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="host[:port] regulators use to reach the dashboard (the sign-in domain)"),
    ] = None,
    session_ttl: Annotated[str, typer.Option("--session-ttl", help="How long a sign-in lasts (30m, 8h, 1d)")] = "8h",
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Serve the store as is; do not follow the chain")
    ] = False,
    confirmations: Annotated[int, typer.Option("--confirmations", min=0)] = 0,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="CIDR of a reverse proxy whose X-Forwarded-For/-Proto to honour (repeatable; "
            "default $PCN_AUDITOR_TRUSTED_PROXIES, comma-separated; none: the headers are ignored)",
        ),
    ] = None,
    secure_cookies: Annotated[
        bool,
        typer.Option("--secure-cookies", help="Always mark the session cookie Secure (else only for https requests)"),
    ] = False,
    deployment: DeploymentOpt = None,
    rpc_url: RpcOpt = None,
) -> None:
    """Serve the regulator's dashboard, following the chain live (indexer and anomaly detection in the background)."""
    import uvicorn

    from pcn.auditor.indexer import IndexerError
    from pcn.auditor.web.app import create_dashboard_app
    from pcn.auditor.web.dashboard import TRUSTED_PROXIES_ENV, parse_trusted_proxies

    proxies = trusted_proxy if trusted_proxy else [os.environ.get(TRUSTED_PROXIES_ENV, "")]
    try:
        parse_trusted_proxies(proxies)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    ledger = connect(deployment, rpc_url)
    ttl = parse_duration(session_ttl)
    site = domain or f"{'localhost' if host in ('0.0.0.0', '::') else host}:{port}"
    with _store(store) as st:
        try:
            app = create_dashboard_app(
                st,
                ledger,
                session_ttl=ttl,
                domain=site,
                run_indexer=not no_index,
                watch_anomalies=True,
                confirmations=confirmations,
                trusted_proxies=proxies,
                secure_cookies=True if secure_cookies else None,
            )
        except IndexerError as exc:
            raise UserError(str(exc)) from None
        console.print(
            f"pcn audit dashboard: http://{site}/ (chain {ledger.chain_id}, store {st.url}); "
            "sign in with an account that holds the auditor role. Ctrl-C stops.",
            highlight=False,
        )
        try:
            uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------- report


@handle_errors()
def audit_report(
    from_: Annotated[
        str, typer.Option("--from", help="Start: a date (2026-01-01), a date-time or unix seconds", show_default=False)
    ],
    to: Annotated[str, typer.Option("--to", help="End (inclusive; a date means its whole day)", show_default=False)],
    org: Annotated[
        str | None, typer.Option("--org", help="Only tasks this organisation (name or account) was in")
    ] = None,
    dataset: Annotated[
        int | None, typer.Option("--dataset", help="Only tasks that read this dataset id", min=0, max=STORE_INT_MAX)
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="json, csv or html")] = "json",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file (default: standard output)")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit report of a period: tasks with their verdicts, refusals, anomalies, dataset usage, organisations."""
    from pcn.auditor.reports import build_report, parse_when
    from pcn.auditor.web.render import FORMATS, render_report

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    start, end = parse_when(from_), parse_when(to, end=True)
    with _store(store) as st:
        _need_index(st)
        report = build_report(st, start, end, org, dataset)
    body = render_report(report, fmt)
    if out is None:
        sys.stdout.write(body)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    summary = {"out": str(out), "format": fmt, **report["summary"], "period": report["period"]}
    if as_json:
        emit_json(summary)
    else:
        s = report["summary"]
        console.print(
            f"wrote the {fmt} report for {report['period']['from']} to {report['period']['to']} to {out}: "
            f"{s['tasks']} task(s), {s['refusals']} refusal(s), {s['anomalies']} anomaly(ies)",
            highlight=False,
        )


# ---------------------------------------------------------------------------- verify


@handle_errors()
def audit_verify(
    task_id: Annotated[int, typer.Argument(help="Task id (on chain)", show_default=False, min=0, max=STORE_INT_MAX)],
    result: Annotated[
        Path | None,
        typer.Option("--result", help="Also check a recipient's result document (JSON, as the node stores it)"),
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-verify one task from the indexed chain alone; exit 1 when a check fails."""
    from pcn.auditor.verify import TaskNotIndexed, verify_result_document, verify_task

    with _store(store) as st:
        _need_index(st)
        try:
            verdict = verify_task(st, task_id)
        except TaskNotIndexed as exc:
            raise NamedError("TaskNotIndexed", str(exc)) from None
        result_verdict = None
        if result is not None:
            try:
                document = json.loads(result.read_text(encoding="utf-8"))
            except OSError as exc:
                raise UserError(f"cannot read {result}: {exc.strerror or exc}") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"{result} is not a JSON result document: {exc}") from None
            if not isinstance(document, dict) or "result" not in document:
                raise UserError(f"{result} is not a result document (expected task_id, result, opening)")
            document.setdefault("task_id", task_id)
            if int(document["task_id"]) != task_id:
                raise UserError(f"{result} is the result of task {document['task_id']}, not of task {task_id}")
            result_verdict = verify_result_document(st, document)
    failed = not verdict.ok and str(verdict.verdict) == "fail"
    if result_verdict is not None and not result_verdict.ok:
        failed = True
    if as_json:
        out = verdict.to_dict()
        if result_verdict is not None:
            out["result_file"] = result_verdict.to_dict()
        emit_json(out)
    else:
        from pcn.auditor import labels

        label, _, help_text = labels.VERDICT[str(verdict.verdict)]
        style = {"pass": "bold green", "fail": "bold red", "incomplete": "bold blue"}[str(verdict.verdict)]
        console.print(
            f"task {task_id} ({verdict.status.name.lower()}): [{style}]{label}[/] — {help_text} "
            f"(as of block {verdict.as_of_block})",
            highlight=False,
        )
        table = Table("check", "result", "finding")
        for c in verdict.checks:
            table.add_row(
                labels.CHECK_NAME.get(c.name, c.name),
                f"[{CHECK_STYLE[str(c.status)]}]{labels.CHECK_STATUS[str(c.status)][0]}[/]",
                c.message,
            )
        console.print(table)
        if result_verdict is not None:
            style = "green" if result_verdict.ok else "bold red"
            console.print(f"result file: [{style}]{result_verdict.message}[/]", highlight=False)
    if failed:
        raise typer.Exit(1)


@handle_errors()
def audit_verify_log(
    file: Annotated[Path, typer.Argument(help="The exported action log (JSON lines, `pcn audit export-log`)")],
    org: Annotated[str, typer.Option("--org", help="The organisation that exported it: name or account")],
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Store the result for the dashboard and anomalies")
    ] = True,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check an organisation's exported local log against its hash chain, its on-chain anchors and actions."""
    from pcn.auditor.anomalies import detect_and_record
    from pcn.auditor.verify import verify_node_log

    if not file.is_file():
        raise UserError(f"{file} is not a file")
    with _store(store) as st:
        _need_index(st)
        account = _resolve_org(st, org)
        verdict = verify_node_log(st, account, file, record=record)
        if record:
            detect_and_record(st)
    if as_json:
        emit_json(verdict.to_dict())
    else:
        from pcn.auditor import labels

        if verdict.ok:
            console.print(
                f"[bold green]the log agrees with the chain[/]: {verdict.entries} entries, hash chain intact, "
                f"{verdict.anchors_checked} anchor(s) and {verdict.actions_checked} on-chain action(s) checked",
                highlight=False,
            )
        else:
            console.print(
                f"[bold red]the log of {org} disagrees with the chain[/]: {len(verdict.problems)} problem(s), "
                f"first at entry {verdict.first_bad_seq}",
                highlight=False,
            )
            table = Table("entry", "line", "problem", "details")
            for p in verdict.problems:
                table.add_row(
                    str(p.seq) if p.seq is not None else "-",
                    str(p.line) if p.line is not None else "-",
                    labels.LOG_PROBLEM.get(str(p.kind), str(p.kind)),
                    p.message,
                )
            console.print(table)
    if not verdict.ok:
        raise typer.Exit(1)


@handle_errors()
def audit_anomalies(
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind (refusal, dispute, …)")] = None,
    severity: Annotated[str | None, typer.Option("--severity", help="Only this severity or worse")] = None,
    record: Annotated[bool, typer.Option("--record", help="Also store them (as the dashboard does)")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every anomaly the indexed chain shows now, most severe first."""
    from pcn.auditor.anomalies import Severity, detect
    from pcn.auditor.anomalies import record as record_anomalies

    order = ["critical", "high", "medium", "low"]
    if severity is not None and severity not in order:
        raise UserError(f"--severity must be one of {', '.join(order)}")
    with _store(store) as st:
        _need_index(st)
        found = detect(st)
        if record:
            record_anomalies(st, found)
    if kind:
        found = [a for a in found if a.kind == kind]
    if severity:
        found = [a for a in found if order.index(str(a.severity)) <= order.index(severity)]
    if as_json:
        emit_json([a.to_dict() for a in found])
        return
    if not found:
        console.print("no anomaly", highlight=False)
        return
    from pcn.auditor import labels

    table = Table("severity", "kind", "when", "task", "dataset", "what")
    for a in found:
        table.add_row(
            f"[{SEVERITY_STYLE.get(str(a.severity), '')}]{Severity(a.severity).value}[/]",
            labels.anomaly_kind(a.kind),
            _when(a.occurred_at),
            str(a.task_id) if a.task_id is not None else "-",
            str(a.dataset_id) if a.dataset_id is not None else "-",
            a.message,
        )
    console.print(table)


# ---------------------------------------------------------------------------- sign-in helpers


@handle_errors()
def audit_sign_in_message(
    address: Annotated[str, typer.Option("--address", help="The auditor account that will sign", show_default=False)],
    url: Annotated[
        str | None,
        typer.Option("--url", help="A running dashboard (http://host:port): ask it for a nonce and the message"),
    ] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="The dashboard's host[:port] (without --url)")] = None,
    chain_id: Annotated[
        int | None, typer.Option("--chain-id", help="The deployment's chain id (without --url)")
    ] = None,
    nonce: Annotated[str | None, typer.Option("--nonce", help="A nonce from GET /auth/nonce (without --url)")] = None,
    expires_in: Annotated[str, typer.Option("--expires-in", help="Validity without --url (5m, 1h)")] = "5m",
    out: Annotated[Path | None, typer.Option("--out", help="Write the message to this file")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the EIP-4361 sign-in message for the dashboard (fetched from --url, or built from its parts)."""
    from eth_utils import is_address, to_checksum_address

    from pcn.auditor.web.siwe import siwe_message

    if not is_address(address):
        raise UserError(f"{address!r} is not an Ethereum address")
    account = to_checksum_address(address)
    info: dict[str, Any]
    if url is not None:
        import httpx

        base = url.rstrip("/")
        response = httpx.get(f"{base}/auth/nonce", params={"address": account}, timeout=15)
        if response.status_code != 200:
            try:
                why = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                why = response.text[:200]
            raise UserError(f"{base} refused a sign-in message ({response.status_code}): {why}")
        info = response.json()
        message = str(info["message"])
    else:
        missing = [n for n, v in (("--domain", domain), ("--chain-id", chain_id), ("--nonce", nonce)) if v is None]
        if missing:
            raise UserError(f"give --url of a running dashboard, or {', '.join(missing)}")
        now = time.time()
        assert domain is not None and chain_id is not None and nonce is not None
        message = siwe_message(
            domain, account, f"http://{domain}/", chain_id, nonce, now, now + parse_duration(expires_in)
        )
        info = {"message": message, "nonce": nonce, "domain": domain, "chain_id": chain_id}
    if out is not None:
        out.write_text(message, encoding="utf-8")
    if as_json:
        emit_json(info)
    elif out is None:
        sys.stdout.write(message + "\n")
    else:
        console.print(f"sign-in message written to {out}", highlight=False)


@handle_errors()
def audit_sign(
    message_file: Annotated[
        Path | None, typer.Option("--message-file", help="The message to sign (default: standard input)")
    ] = None,
    key_file: KeyFileOpt = None,
    dev_account: DevAccountOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign a sign-in message (EIP-191 personal_sign) with the auditor's key; print the signature."""
    from pcn.auditor.web.siwe import parse_siwe, sign_message

    signer = load_signer("PCN_AUDITOR_KEY", key_file, dev_account)
    if signer is None:
        raise UserError("no key: give --key-file FILE or set PCN_AUDITOR_KEY (or --dev-account N on the devnet)")
    try:
        text = message_file.read_text(encoding="utf-8") if message_file is not None else sys.stdin.read()
    except OSError as exc:
        raise UserError(f"cannot read {message_file}: {exc.strerror or exc}") from None
    message = text.replace("\r\n", "\n").strip("\n")
    if not message:
        raise UserError("the message is empty")
    parsed = parse_siwe(message)  # refuse to sign anything that is not a sign-in message
    if parsed.address.lower() != signer.address.lower():
        raise UserError(f"the message is for {parsed.address}, the key is {signer.address}")
    signature = sign_message(message, signer.key)
    if as_json:
        emit_json({"address": signer.address, "signature": signature, "domain": parsed.domain, "nonce": parsed.nonce})
    else:
        sys.stdout.write(signature + "\n")
