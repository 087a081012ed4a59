"""`make demo` / `pcn demo`: the whole pcn flow on one machine, every component real.

A fresh anvil devnet with pcn's contracts; a private Redis; three organisations (bank,
telecom, insurer), each with its own keys, config, mailbox, chain watcher and Celery
workers; a regulator account holding the auditor role. Each organisation registers a
synthetic customer dataset (fingerprint only on chain) and the built-in `stats`
algorithm is registered by the hash of its code. Then:

1. a joint-statistics task (income by region across the three) runs to completion and
   the recipient's result is checked against the on-chain commitment and against the
   plaintext computation the demo can do because it generated the data;
2. the same with differential privacy, ε charged on chain;
3. a three-party PSI of the customer lists (result to the bank), whose intersection the
   bank registers as a derived, fingerprinted "aligned sample" dataset;
4. a private query: the bank looks its customers up in telecom's table; telecom learns
   only how many keys were asked;
5. a vertical credit-risk model: bank labels and repayment data, telecom arrears and spend,
   aligned by two-party psi-ot PSIs (each side learns the alignment), trained with hetero-lr and, as the
   gradient-boosted trees banks deploy, with hetero-sbt (SecureBoost); both AUCs are printed and each model
   stays split between them;
6. one byte of telecom's file changes after registration: every node refuses, with the
   reason code on chain, and nobody runs the protocol.

The devnet, Redis and nodes keep running afterwards; the demo ends with the `pcn` command
lines that act as each organisation (its node.toml names its keystore password file) and
`make demo-down` stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from eth_account import Account
from eth_typing import HexStr
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from pcn import paths
from pcn.chain.ledger import Ledger
from pcn.chain.types import PolicyGrants, PolicyLimits, TaskStatus, epsilon_from_fixed
from pcn.devnet import anvil
from pcn.devnet.deploy import deploy, devnet_key
from pcn.devnet.localnet import REGIONS, Network, RedisServer, approve_all, build_network, register_rows
from pcn.runtime import services
from pcn.runtime.config import load_config
from pcn.runtime.operations import derive_aligned_dataset, read_result, submit_task, task_progress

ORG_NAMES = ["bank", "telecom", "insurer"]


def workdir() -> Path:
    return Path(os.environ.get("PCN_DEMO_DIR", paths.repo_root() / "var" / "demo"))


def down(work: Path, port: int, say: Any = print) -> None:
    """Stop everything a previous demo started (nodes, Redis, devnet)."""
    for name in ORG_NAMES:
        cfg_path = work / name / "node.toml"
        if cfg_path.is_file():
            services.stop(load_config(cfg_path))
            say(f"stopped {name}'s node")
    state = work / "demo.json"
    if state.is_file():
        started = json.loads(state.read_text())
        for key, what in (("dashboard_pid", "the regulator's dashboard"), ("redis_pid", "the demo's Redis")):
            pid = started.get(key)
            if pid:
                try:
                    os.killpg(int(pid), signal.SIGTERM) if key == "dashboard_pid" else os.kill(int(pid), signal.SIGTERM)
                    say(f"stopped {what}")
                except ProcessLookupError:
                    pass
        state.unlink()
    if anvil.status(port).running:
        anvil.down(port)
        say(f"stopped the devnet on port {port}")


def start_dashboard(work: Path, deployment: Path | None, rpc_url: str, port: int) -> subprocess.Popen[bytes]:
    """`pcn audit serve` in the background: indexer + anomaly detection + dashboard."""
    pcn = Path(sys.executable).parent / "pcn"
    cmd = [
        str(pcn), "audit", "serve", "--store", str(work / "auditor.sqlite"), "--port", str(port),
        "--domain", f"127.0.0.1:{port}", "--deployment", str(deployment), "--rpc-url", rpc_url,
    ]  # fmt: skip
    with (work / "auditor.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited: {(work / 'auditor.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"the dashboard did not answer on port {port}")


def _watch(net: Network, task_id: int, console: Console, quiet: bool, timeout: float = 600) -> TaskStatus:
    """Follow a task's per-participant progress until it is final."""
    deadline = time.monotonic() + timeout
    if quiet:
        return net.wait_final(task_id, timeout)
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%  {task.fields[phase]}"),
        console=console,
        transient=True,
    ) as bars:
        rows = {o.address: bars.add_task(o.name, total=1.0, phase="queued") for o in net.orgs}
        while time.monotonic() < deadline:
            st = task_progress(net.by_name("bank").ledger, task_id)  # the requester: progress reads are signed
            for p in st["participants"]:
                bars.update(
                    rows[p["participant"]],
                    completed=float(p.get("fraction") or 0),
                    phase=f"{p['state']} · {p.get('phase', '')} {p.get('detail', '')}"[:60],
                )
            if TaskStatus[st["status"].upper()].is_final:
                return TaskStatus[st["status"].upper()]
            time.sleep(0.3)
    raise TimeoutError(f"task {task_id} did not finish in {timeout:.0f} s")


def task_gas(ledger: Ledger, task_id: int) -> dict[str, int]:
    """Gas of every transaction of one task's lifecycle, by step, read back from the chain."""
    logs = ledger.w3.eth.get_logs(
        {"fromBlock": ledger.deployment.deploy_block, "toBlock": "latest", "address": ledger.logs.addresses}
    )
    steps = {
        "TaskSubmitted": "submit",
        "TaskApproved": "approve",
        "TaskStarted": "start",
        "ReceiptSubmitted": "receipt",
    }
    gas: dict[str, int] = {}
    seen: set[str] = set()
    for ev in ledger.logs.decode_all(logs):
        if ev.name in steps and ev.args.get("taskId") == task_id and ev.tx_hash not in seen:
            seen.add(ev.tx_hash)
            used = int(ledger.w3.eth.get_transaction_receipt(HexStr(ev.tx_hash))["gasUsed"])
            gas[steps[ev.name]] = gas.get(steps[ev.name], 0) + used
    gas["total"] = sum(gas.values())
    return gas


def task_row(ledger: Ledger, task_id: int, title: str) -> dict[str, Any]:
    """One task's line of the summary; its receipts are counted against the task's own
    participants (two for a two-party task), not against every organisation of the demo."""
    task = ledger.task(task_id)
    return {
        "task_id": task_id,
        "title": title,
        "status": task.status.name.lower(),
        "receipts": task.receipt_count,
        "participants": len(ledger.task_participants(task_id)),
        "refusal": task.refusal_reason.name if task.refusal_reason.value else "",
        "result_hash": "0x" + task.result_hash.hex(),
    }


def stop_command(pcn: str, port: int) -> str:
    """What stops this demo: `make demo-down` only knows the default port and directory."""
    if port == 8545 and "PCN_DEMO_DIR" not in os.environ:
        return "make demo-down"
    where = f"PCN_DEMO_DIR={shlex.quote(str(workdir()))} " if "PCN_DEMO_DIR" in os.environ else ""
    return f"{where}{pcn} demo --down --port {port}"


def shown(path: Path) -> str:
    """A path as the user types it: relative to the current directory when inside it."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


# What the closing "act as an organisation" block suggests submitting: small and exact stats.
EXAMPLE_PARAMS = {"column": "income", "group_by": "region", "groups": REGIONS, "statistics": ["count", "mean"]}


def cli_commands(
    pcn: str, configs: dict[str, str], dataset_ids: list[int], params_file: str, done_task: int, next_task: int
) -> list[tuple[str, str]]:
    """The command lines, with a note each, that act as the demo's organisations afterwards:
    every org's datasets, the tasks on chain, a finished task's result, and a new task the
    bank submits, every owner approves and the bank reads. `configs` maps org name to its
    node.toml (which names its keystore password file); `next_task` is the id submit will print."""

    def as_org(name: str, *args: str) -> str:
        return shlex.join([pcn, *args, "--config", configs[name]])

    datasets = ",".join(map(str, dataset_ids))
    lines = [(as_org(name, "data", "list"), f"{name}'s datasets, uses and ε left") for name in configs]
    lines += [
        (as_org("bank", "task", "list"), "every task on chain"),
        (as_org("bank", "task", "status", str(done_task)), "who started, who receipted"),
        (as_org("bank", "task", "result", str(done_task)), "the recipient's result, checked against the chain"),
        (
            as_org("bank", "task", "submit", "--algo", "stats", "--datasets", datasets, "--params", params_file,
                   "--recipient", "bank"),
            f"a new task; it prints its id, {next_task} if nobody else submitted one",
        ),
    ]  # fmt: skip
    lines += [(as_org(name, "task", "approve", str(next_task)), "shows the request, asks y/N") for name in configs]
    lines += [
        (as_org("bank", "task", "status", str(next_task), "--watch"), "live progress until it completes"),
        (as_org("bank", "task", "result", str(next_task)), "income count and mean by region"),
    ]
    return lines


def credit_tables(pool: int, seed: int = 7) -> tuple[list[list[str]], list[list[str]]]:
    """Synthetic credit-risk data split vertically, with a hidden truth per customer so the
    two sides' features really are complementary: the bank sees income and repayment history
    and the default label; the telecom sees arrears and spend. Each holds ~2/3 of the pool."""
    rng = np.random.default_rng(seed)
    z_credit, z_telecom = rng.normal(size=pool), rng.normal(size=pool)
    logit = 1.4 * z_credit + 1.1 * z_telecom - 1.0
    defaulted = (rng.random(pool) < 1 / (1 + np.exp(-logit))).astype(int)
    income = np.round(np.exp(10.3 - 0.25 * z_credit + rng.normal(scale=0.3, size=pool)), 2)
    repayment = np.round(650 - 60 * z_credit + rng.normal(scale=25, size=pool), 1)
    arrears = np.round(np.maximum(0, 12 + 9 * z_telecom + rng.normal(scale=4, size=pool)), 1)
    spend = np.round(np.exp(4.0 + 0.2 * z_telecom + rng.normal(scale=0.4, size=pool)), 2)
    ids = [f"K{i:07d}" for i in range(pool)]
    in_bank, in_telecom = rng.random(pool) < 0.67, rng.random(pool) < 0.67
    bank = [[ids[i], f"{income[i]:.2f}", f"{repayment[i]:.1f}", str(defaulted[i])] for i in range(pool) if in_bank[i]]
    telecom = [[ids[i], f"{arrears[i]:.1f}", f"{spend[i]:.2f}"] for i in range(pool) if in_telecom[i]]
    return bank, telecom


def _plain_stats(net: Network) -> dict[str, dict[str, float]]:
    income = np.concatenate([o.values["income"] for o in net.orgs])
    region = np.concatenate([o.values["region"] for o in net.orgs])
    out = {}
    for g in REGIONS:
        x = income[region == g]
        out[g] = {"count": len(x), "mean": float(x.mean()), "variance": float(x.var(ddof=1))}
    return out


def run(port: int, rows: int, as_json: bool, dashboard_port: int = 8700) -> dict[str, Any]:
    console = Console(stderr=as_json, soft_wrap=True)
    say = console.print
    work = workdir()
    console.rule("[bold]pcn demo")
    down(work, port, say=lambda _m: None)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    st = anvil.up(port=port, state_file=work / "chain" / "anvil-state.json")
    say(f"devnet: chain {st.chain_id} at {st.rpc_url}")
    dep = deploy(st.rpc_url, out=work / "deployment.json", progress=say)
    admin = Ledger(dep, st.rpc_url, Account.from_key(devnet_key(0)))
    regulator = Account.from_key(devnet_key(1))
    admin.grant_auditor(regulator.address)
    say(f"regulator {regulator.address} holds the auditor role")
    redis_server = RedisServer(work / "redis", persist=True)
    started = {"redis_pid": redis_server.proc.pid, "redis_url": redis_server.url}
    (work / "demo.json").write_text(json.dumps(started))
    say(f"redis: {redis_server.url} (private to the demo, append-only file on)")
    dashboard = start_dashboard(work, dep.path, st.rpc_url, dashboard_port)
    started["dashboard_pid"] = dashboard.pid
    (work / "demo.json").write_text(json.dumps(started))
    dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    say(f"regulator's dashboard: {dashboard_url} (it follows the chain live)")

    net = build_network(
        work,
        dep,
        ORG_NAMES,
        rows=rows,
        workers=2,
        epsilon_total=3.0,
        redis_server=redis_server,
        kdf_iterations=2**14,
        password_files=True,
        message_timeout=60.0,
        progress=say,
    )
    bank = net.by_name("bank")
    summary: dict[str, Any] = {"rpc_url": st.rpc_url, "deployment": str(dep.path), "tasks": []}

    def record(task_id: int, title: str) -> dict[str, Any]:
        entry = task_row(net.admin, task_id, title)
        summary["tasks"].append(entry)
        return entry

    def submit(params: dict[str, Any], epsilon: float = 0.0) -> int:
        sub = submit_task(
            bank.ledger,
            algorithm="stats",
            dataset_ids=[o.dataset_id for o in net.orgs],
            params=params,
            recipient="bank",
            epsilon=epsilon,
        )
        approve_all(net, sub.task_id)
        return sub.task_id

    # 1. joint statistics, exact
    console.rule("1 · joint statistics: income by region across bank, telecom and insurer")
    t0 = time.monotonic()
    task1 = submit(
        {
            "column": "income",
            "group_by": "region",
            "groups": REGIONS,
            "statistics": ["count", "sum", "mean", "variance", "histogram"],
            "histogram": {"edges": [0, 10_000, 25_000, 50_000, 100_000]},
        }
    )
    status = _watch(net, task1, console, as_json)
    took = time.monotonic() - t0
    res = read_result(bank.ctx, task1)
    plain = _plain_stats(net)
    table = Table("region", "count", "mean", "variance", "equals plaintext", title=f"task {task1}: {status.name}")
    exact = True
    for g in REGIONS:
        got = res["result"]["groups"][g]
        same = got["count"] == plain[g]["count"] and abs(got["mean"] - plain[g]["mean"]) <= 1e-9 * abs(plain[g]["mean"])
        exact &= same
        table.add_row(g, str(got["count"]), f"{got['mean']:.2f}", f"{got['variance']:.1f}", "yes" if same else "NO")
    say(table)
    say(f"result matches the on-chain commitment: {res['matches_chain']}; {took:.1f} s from submit to completed")
    e1 = record(task1, "joint statistics by region")
    e1.update(seconds=round(took, 2), matches_chain=res["matches_chain"], equals_plaintext=exact)
    e1["gas"] = task_gas(net.admin, task1)
    say(
        "gas of the whole 3-party lifecycle: "
        + ", ".join(f"{k} {v:,}" for k, v in e1["gas"].items())
        + " (approvals and receipts summed over the three organisations)"
    )

    # 2. the same with differential privacy
    console.rule("2 · joint statistics with differential privacy (Laplace, ε = 0.5 charged on chain)")
    before = net.admin.dataset(bank.dataset_id).epsilon_spent
    task2 = submit(
        {"column": "income", "statistics": ["count", "mean"], "dp": {"epsilon": 0.5, "clip": [0, 200_000]}},
        epsilon=0.5,
    )
    _watch(net, task2, console, as_json)
    res2 = read_result(bank.ctx, task2)["result"]["groups"]["__all__"]
    spent = epsilon_from_fixed(net.admin.dataset(bank.dataset_id).epsilon_spent - before)
    true_count = rows * len(net.orgs)
    say(f"noisy count {res2['count']:.1f} (true {true_count}), noisy mean {res2['mean']:.2f}; ε charged {spent}")
    e2 = record(task2, "joint statistics with DP")
    e2.update(epsilon_charged=spent)

    # 3. three-party PSI: which customers do all three serve? Then the aligned sample.
    console.rule("3 · private set intersection of the three customer lists (result to the bank)")
    sub = submit_task(
        bank.ledger,
        algorithm="psi",
        dataset_ids=[o.dataset_id for o in net.orgs],
        params={},
        recipient="bank",
    )
    approve_all(net, sub.task_id)
    _watch(net, sub.task_id, console, as_json)
    psi = read_result(bank.ctx, sub.task_id)
    expected = set.intersection(*(set(o.values["customer_id"].tolist()) for o in net.orgs))
    same = set(psi["result"]["ids"]) == expected
    e3 = record(sub.task_id, "PSI of three customer lists")
    e3.update(size=psi["result"]["size"], equals_plaintext=same, matches_chain=psi["matches_chain"])
    say(
        f"{psi['result']['size']} customers in common (plain set intersection agrees: {same}); "
        "telecom and insurer learnt only the set sizes"
    )
    ds_bank = net.admin.dataset(bank.dataset_id)
    derived = derive_aligned_dataset(
        bank.ctx,
        sub.task_id,
        name="aligned sample: bank ∩ telecom ∩ insurer",
        limits=PolicyLimits(10, ds_bank.expiry, 0),
        grants=PolicyGrants(list(net.algorithms.values()), [o.address for o in net.orgs], [bank.address]),
    )
    e3["derived_dataset"] = derived.dataset_id
    say(f"registered the aligned sample as dataset {derived.dataset_id} ({derived.row_count} rows, lineage on chain)")

    # 4. private query: the bank looks its customers up in telecom's table, telecom learns only how many
    console.rule("4 · private query (匿踪查询): the bank looks up its customers in telecom's table")
    telecom = net.by_name("telecom")
    sub = submit_task(
        bank.ledger,
        algorithm="private-query",
        dataset_ids=[bank.dataset_id, telecom.dataset_id],
        params={"value_columns": ["region"], "epoch": "demo"},
        recipient="bank",
    )
    approve_all(net, sub.task_id)
    _watch(net, sub.task_id, console, as_json)
    pq = read_result(bank.ctx, sub.task_id)["result"]
    e4 = record(sub.task_id, "private query of telecom's table")
    e4.update(hits=len(pq["hits"]), queried=pq["queried"])
    say(f"{len(pq['hits'])} of {pq['queried']} keys found; telecom saw only the number of keys asked")

    # 5. vertical credit-risk model: bank labels + telecom features, on the PSI-aligned sample
    console.rule("5 · vertical credit-risk model: bank labels and telecom features, aligned by PSI")
    telecom = net.by_name("telecom")
    bank_rows, telecom_rows = credit_tables(max(600, rows // 4))
    credit_b = register_rows(
        net, "bank", ["customer_id", "income", "repayment_score", "defaulted"], bank_rows, "credit"
    )
    credit_t = register_rows(net, "telecom", ["customer_id", "arrears_days", "monthly_spend"], telecom_rows, "usage")
    aligned: dict[str, int] = {}
    # Both sides learn the alignment: one two-party PSI with each as recipient, by psi-ot (OT
    # extension, the faster engine for two parties; the three-party PSI above needs ECDH-PSI).
    for side in (bank, telecom):
        sub = submit_task(
            side.ledger, algorithm="psi-ot", dataset_ids=[credit_b, credit_t], params={}, recipient=side.name
        )
        approve_all(net, sub.task_id)
        _watch(net, sub.task_id, console, as_json)
        aligned[side.name] = derive_aligned_dataset(
            side.ctx,
            sub.task_id,
            name=f"{side.name} credit sample aligned with {'telecom' if side is bank else 'bank'}",
            limits=PolicyLimits(10, net.admin.dataset(side.dataset_id).expiry, 0),
            grants=PolicyGrants(list(net.algorithms.values()), [bank.address, telecom.address], [bank.address]),
        ).dataset_id
    params = {
        "label_column": "defaulted",
        "features": {
            bank.address.lower(): ["income", "repayment_score"],
            telecom.address.lower(): ["arrears_days", "monthly_spend"],
        },
        "epochs": 8,
        "batch_size": 256,
        "learning_rate": 0.3,
    }
    sub = submit_task(
        bank.ledger,
        algorithm="hetero-lr",
        dataset_ids=[aligned["bank"], aligned["telecom"]],
        params=params,
        recipient="bank",
    )
    approve_all(net, sub.task_id)
    _watch(net, sub.task_id, console, as_json)
    lr = read_result(bank.ctx, sub.task_id)["result"]
    table = Table("epoch", "loss", "AUC", "KS", "accuracy", title=f"task {sub.task_id}: hetero-lr, {lr['rows']} rows")
    for m in lr["metrics"]:
        table.add_row(str(m["epoch"]), f"{m['loss']:.4f}", f"{m['auc']:.3f}", f"{m['ks']:.3f}", f"{m['accuracy']:.3f}")
    say(table)
    say("the model stays split: the bank holds its weights, the telecom its own; neither saw the other's data")
    e5 = record(sub.task_id, "vertical credit-risk model")
    e5.update(rows=lr["rows"], auc=lr["metrics"][-1]["auc"], epochs=len(lr["metrics"]))

    # 5b. the model banks deploy: gradient-boosted trees (SecureBoost) on the same aligned sample
    console.rule("5b · the same credit-risk data as gradient-boosted trees (SecureBoost, hetero-sbt)")
    sbt_params = {
        "label_column": "defaulted",
        "features": params["features"],
        "trees": 5,
        "max_depth": 3,
        "learning_rate": 0.3,
        "l2": 1.0,
        "validation_fraction": 0.2,
    }
    sub = submit_task(
        bank.ledger,
        algorithm="hetero-sbt",
        dataset_ids=[aligned["bank"], aligned["telecom"]],
        params=sbt_params,
        recipient="bank",
    )
    approve_all(net, sub.task_id)
    _watch(net, sub.task_id, console, as_json)
    sbt = read_result(bank.ctx, sub.task_id)["result"]
    table = Table("tree", "train log-loss", "train AUC", "held-out AUC", title=f"task {sub.task_id}: hetero-sbt")
    for m in sbt["metrics"]:
        table.add_row(
            str(m["tree"]), f"{m['train_log_loss']:.4f}", f"{m['train_auc']:.3f}", f"{m['validation_auc']:.3f}"
        )
    say(table)
    last = sbt["metrics"][-1]
    say(
        f"AUC of the two vertical models: logistic regression {e5['auc']:.3f} (on all {lr['rows']} aligned rows), "
        f"SecureBoost {last['train_auc']:.3f} on the rows it trained on and {last['validation_auc']:.3f} on the "
        f"{sbt_params['validation_fraction']:.0%} it held out"
    )
    say("the telecom keeps its split thresholds: the bank's trees name its splits by opaque ids")
    e5b = record(sub.task_id, "vertical credit-risk trees (SecureBoost)")
    e5b.update(
        trees=sbt["trees_built"], train_auc=last["train_auc"], validation_auc=last["validation_auc"], lr_auc=e5["auc"]
    )

    # 6. a dataset byte changed after registration
    console.rule("6 · one byte of telecom's dataset changes after registration")
    assert telecom.data_file is not None
    original = telecom.data_file.read_bytes()
    lines = original.split(b"\n")
    lines[1] = lines[1].replace(b",", b",9", 1)
    telecom.data_file.write_bytes(b"\n".join(lines))
    try:
        task6 = submit({"column": "income", "statistics": ["count"]})
        _watch(net, task6, console, as_json)
    finally:
        telecom.data_file.write_bytes(original)
    e6 = record(task6, "refused: data changed after registration")
    say(f"task {task6} is {e6['status']}: reason {e6['refusal']} recorded on chain; no protocol ran")

    console.rule("summary")
    tbl = Table("task", "what", "status", "receipts", "refusal", "result hash")
    for t in summary["tasks"]:
        tbl.add_row(
            str(t["task_id"]),
            t["title"],
            t["status"],
            f"{t['receipts']}/{t['participants']}",
            t["refusal"],
            t["result_hash"][:18] + "…",
        )
    say(tbl)
    summary["orgs"] = {
        o.name: {"address": o.address, "config": o.config.path, "password_file": o.config.password_file}
        for o in net.orgs
    }
    params_file = work / "income-by-region.json"
    params_file.write_text(json.dumps(EXAMPLE_PARAMS, indent=2) + "\n")
    pcn = shown(Path(sys.executable).parent / "pcn")
    commands = cli_commands(
        pcn,
        {o.name: shown(Path(o.config.path)) for o in net.orgs},
        [o.dataset_id for o in net.orgs],
        shown(params_file),
        done_task=task1,
        next_task=net.admin.task_count() + 1,
    )
    summary["commands"] = [line for line, _note in commands]
    console.rule("act as an organisation")
    say("nodes, Redis and the devnet keep running; each organisation's node.toml names its keystore password file:")
    for o in net.orgs:
        say(f"  {o.name:<8} {o.address}  {shown(Path(o.config.path))}", highlight=False)
    width = min(80, max(len(line) for line, _note in commands))  # align the notes of all but the longest lines
    for line, note in commands:
        say(f"  {line:<{width}}  # {note}", highlight=False, markup=False)
    regulator_key = devnet_key(1)
    summary["dashboard"] = {"url": dashboard_url, "regulator": regulator.address, "regulator_key": regulator_key}
    say(
        f"\nregulator's dashboard: {dashboard_url}\n"
        f"  sign in as the regulator {regulator.address} (devnet test key {regulator_key}):\n"
        "  open the page, enter the address, press 'Prepare message', save the message to m.txt, then\n"
        f"  {pcn} audit sign --dev-account 1 --message-file m.txt   and paste the signature",
        highlight=False,
    )
    summary["stop_command"] = stop_command(pcn, port)
    say(f"stop everything with: {summary['stop_command']}", highlight=False)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="pcn demo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("PCN_DEVNET_PORT", "8545")))
    ap.add_argument("--rows", type=int, default=20_000, help="rows per organisation's dataset")
    ap.add_argument("--json", action="store_true", help="no live output; print a JSON summary")
    ap.add_argument("--dashboard-port", type=int, default=8700, help="port of the regulator's dashboard")
    ap.add_argument("--down", action="store_true", help="stop what a previous demo started")
    args = ap.parse_args(argv)
    if args.down:
        down(workdir(), args.port)
        return
    summary = run(args.port, args.rows, args.json, args.dashboard_port)
    if args.json:
        print(json.dumps(summary, indent=2))
    ok = [t["status"] for t in summary["tasks"]] == ["completed"] * 6 + ["refused"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
