"""The operator's `pcn` commands end to end: the installed console script, run as a
subprocess against the session anvil, with three organisations' real nodes (tests/nodes.py)
and one more organisation created, admitted, started and stopped through the CLI itself."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pcn.chain.deployment import Deployment
from pcn.chain.types import OrgStatus, TaskStatus
from pcn.devnet.anvil import DevnetStatus, rpc_call
from pcn.runtime import services
from pcn.runtime.config import load_config
from tests.nodes import PASSWORD, Network, Org, free_port, network_fixture, write_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
PCN = Path(sys.executable).with_name("pcn")
if not PCN.exists():
    PCN = REPO / ".venv" / "bin" / "pcn"

ROWS = 120
CLEARED = (
    "PCN_CONFIG",
    "PCN_HOME",
    "PCN_DEPLOYMENT",
    "PCN_RPC_URL",
    "PCN_REDIS_URL",
    "PCN_PRIVATE_KEY",
    "PCN_ADMIN_KEY",
    "PCN_KEYSTORE_PASSWORD",
    "PCN_KEYSTORE_PASSWORD_FILE",
)

Proc = subprocess.CompletedProcess[str]


# ---------------------------------------------------------------------------- plumbing


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-node")


@pytest.fixture(scope="module")
def net(root: Path, deployment: Deployment, devnet: DevnetStatus) -> Iterator[Network]:
    snap = rpc_call(devnet.rpc_url, "evm_snapshot")
    try:
        yield from network_fixture(root / "net", deployment, ["bank", "telecom", "insurer"], rows=ROWS)
    finally:
        rpc_call(devnet.rpc_url, "evm_revert", [snap])


@pytest.fixture(scope="module")
def env(root: Path, net: Network) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in CLEARED}
    e.update(
        {
            "PCN_KEYSTORE_PASSWORD": PASSWORD,
            "PCN_HOME": str(root / "home"),
            "PCN_RUN_DIR": str(root / "run"),
            "NO_COLOR": "1",
            "COLUMNS": "250",
        }
    )
    return e


def pcn(*args: str, env: dict[str, str], timeout: float = 120) -> Proc:
    return subprocess.run(
        [str(PCN), *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def pcn_many(
    calls: Sequence[Sequence[str]], env: dict[str, str], envs: dict[int, dict[str, str]] | None = None
) -> list[Proc]:
    """Independent invocations at once (`envs` overrides the environment of some, by position)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(pcn, *args, env=(envs or {}).get(i, env)) for i, args in enumerate(calls)]
        return [f.result() for f in futures]


def ok(proc: Proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def ok_json(proc: Proc) -> dict | list:
    return json.loads(ok(proc))  # type: ignore[no-any-return]


def failed(proc: Proc, code: int = 1) -> str:
    """A clean failure: the exit code, a message, no traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in out, out
    assert out.strip(), "no message at all"
    return out


def json_error(proc: Proc) -> dict[str, str]:
    failed(proc)
    doc = json.loads(proc.stdout)
    assert set(doc) == {"error"}, doc
    assert set(doc["error"]) == {"name", "message"}, doc
    return doc["error"]  # type: ignore[no-any-return]


def as_org(org: Org) -> list[str]:
    return ["--config", org.config.path]


POLICY = """
algorithms = ["stats"]
requesters = ["bank", "telecom"]
recipients = ["bank"]
max_uses = 5
expires_in_days = 30
epsilon_total = 2.5
"""


@pytest.fixture(scope="module")
def extra(root: Path, net: Network, env: dict[str, str]) -> dict:
    """A fourth dataset, registered by bank through `pcn data register` with a policy file."""
    data = root / "extra.csv"
    write_dataset(data, 50, seed=9)
    policy = root / "policy.toml"
    policy.write_text(POLICY)
    bank = net.by_name("bank")
    args = ["data", "register", str(data), "--name", "extra customers", "--id-column", "customer_id"]
    out = ok_json(pcn(*args, "--policy", str(policy), *as_org(bank), "--json", env=env))
    assert isinstance(out, dict)
    return {**out, "file": data}


# ---------------------------------------------------------------------------- org init and node lifecycle


def test_org_init_admit_start_status_stop(
    root: Path, net: Network, env: dict[str, str], deployment: Deployment
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    init = ["org", "init", "--name", "acme", "--redis-url", net.redis.url, "--endpoint", endpoint]
    init += ["--deployment", str(deployment.path), "--workers", "1"]
    created = ok_json(pcn(*init, "--json", env=env))
    assert isinstance(created, dict)
    config = root / "home" / "acme" / "node.toml"
    assert Path(created["config"]) == config.resolve() and config.is_file()
    address, key = created["address"], created["encryption_key"]
    assert address.startswith("0x") and len(address) == 42
    assert key.startswith("0x") and len(key) == 66
    admit = shlex.split(created["admit_command"])
    assert admit[:4] == ["pcn", "org", "admit", address]
    assert admit[admit.index("--encryption-key") + 1] == key and admit[admit.index("--endpoint") + 1] == endpoint
    assert PASSWORD not in config.read_text()  # the secret never lands in the config

    # the admin runs exactly the printed line
    ok(pcn(*admit[1:], "--dev-account", "0", "--deployment", str(deployment.path), env=env))
    registered = net.admin.organisation(address)
    assert registered.status is OrgStatus.ACTIVE
    assert registered.name == "acme" and "0x" + registered.encryption_key.hex() == key

    try:
        started = ok_json(pcn("node", "start", "--org", "acme", "--json", env=env))
        assert isinstance(started, dict)
        assert started["running"] is True and started["mailbox_healthy"] is True
        assert started["endpoint"] == endpoint and started["warnings"] == []
        assert started["address"] == address
        assert set(started["processes"]) == {"mailbox", "watcher", "worker"}
        plain = ok(pcn("node", "status", "--config", str(config), env=env))
        assert "acme: running" in plain and "healthy" in plain
        for process in ("mailbox", "watcher", "worker"):
            pid = str(started["processes"][process]["pid"])
            line = next(x for x in plain.splitlines() if f" {pid} " in x)
            assert process in line and "yes" in line
    finally:
        stopped = ok_json(pcn("node", "stop", "--org", "acme", "--json", env=env))
        services.stop(load_config(config))
    assert isinstance(stopped, dict) and sorted(stopped["stopped"]) == ["mailbox", "watcher", "worker"]
    down = pcn("node", "status", "--org", "acme", "--json", env=env)
    assert down.returncode == 3, down.stderr
    assert json.loads(down.stdout)["running"] is False


# ---------------------------------------------------------------------------- data


def test_data_register_list_verify(net: Network, env: dict[str, str], extra: dict) -> None:
    bank, telecom = net.by_name("bank"), net.by_name("telecom")
    ds_id = extra["dataset_id"]
    assert extra["row_count"] == 50 and extra["name"] == "extra customers"
    policy = extra["policy"]
    assert policy["algorithms"] == ["0x" + net.algorithm.hex()]  # "stats" resolved to the code hash on disk
    assert policy["requesters"] == [bank.address, telecom.address]  # names resolved on chain
    assert policy["recipients"] == [bank.address]
    assert policy["max_uses"] == 5 and policy["epsilon_total"] == 2.5
    on_chain = net.admin.dataset(ds_id)
    assert on_chain.owner == bank.address and on_chain.max_uses == 5
    assert net.admin.fingerprint(ds_id).merkle_root.hex() == extra["merkle_root"][2:]

    listed, verified, table = pcn_many(
        [
            ["data", "list", *as_org(bank), "--json"],
            ["data", "verify", str(ds_id), *as_org(bank)],
            ["data", "list", *as_org(bank)],
        ],
        env,
    )
    rows = {r["dataset_id"]: r for r in ok_json(listed)}  # type: ignore[union-attr]
    assert set(rows) == {bank.dataset_id, ds_id}
    assert rows[ds_id]["chain"]["uses"] == 0 and rows[ds_id]["chain"]["max_uses"] == 5
    assert rows[ds_id]["chain"]["epsilon_total"] == 2.5 and rows[ds_id]["row_count"] == 50
    assert f"dataset {ds_id}: {extra['file']} matches its registered fingerprint" in ok(verified)
    assert "extra customers" in ok(table) and "0/5" in table.stdout


def test_row_proof_and_tampering(root: Path, net: Network, env: dict[str, str], extra: dict) -> None:
    bank = net.by_name("bank")
    ds_id = extra["dataset_id"]
    proof_file = root / "proof-7.json"
    ok(pcn("data", "prove", str(ds_id), "--row", "7", "--out", str(proof_file), *as_org(bank), env=env))
    proof = json.loads(proof_file.read_text())
    row7 = extra["file"].read_text().splitlines()[8].split(",")
    assert proof["index"] == 7 and proof["cells"] == row7

    tampered = root / "proof-tampered.json"
    tampered.write_text(json.dumps({**proof, "cells": [row7[0], "999999.99", row7[2]]}))
    check = ["data", "check-proof"]
    anyone = ["--deployment", str(net.admin.deployment.path)]  # no organisation needed
    good, bad, wrong_ds = pcn_many(
        [
            [*check, str(proof_file), "--dataset", str(ds_id), *anyone, "--json"],
            [*check, str(tampered), "--dataset", str(ds_id), *anyone],
            [*check, str(proof_file), "--dataset", str(bank.dataset_id), *anyone],
        ],
        env,
    )
    res = ok_json(good)
    assert isinstance(res, dict) and res["valid"] is True and res["cells"] == row7
    assert "ProofInvalid" in failed(bad)
    assert "ProofInvalid" in failed(wrong_ds)

    # one byte of the local file changes: verify names the mismatch, and no proof is issued any more
    lines = extra["file"].read_text().splitlines()
    cells = lines[11].split(",")
    cells[1] = cells[1][:-1] + ("1" if cells[1][-1] != "1" else "2")
    lines[11] = ",".join(cells)
    extra["file"].write_text("\n".join(lines) + "\n")
    plain, as_json, prove = pcn_many(
        [
            ["data", "verify", str(ds_id), *as_org(bank)],
            ["data", "verify", str(ds_id), *as_org(bank), "--json"],
            ["data", "prove", str(ds_id), "--row", "1", *as_org(bank)],
        ],
        env,
    )
    msg = failed(plain)
    assert "FingerprintMismatch" in msg and "merkle_root" in msg and str(extra["file"]) in msg
    failed(as_json)
    report = json.loads(as_json.stdout)
    assert report["matches"] is False and [m["field"] for m in report["mismatches"]] == ["merkle_root"]
    assert "FingerprintMismatch" in failed(prove)


# ---------------------------------------------------------------------------- algorithms


def test_algo_register_approve_list(net: Network, env: dict[str, str], extra: dict) -> None:
    bank, telecom = net.by_name("bank"), net.by_name("telecom")
    ds_id = extra["dataset_id"]
    registered, listed, unknown, not_owner = pcn_many(
        [
            ["algo", "register", "stats", *as_org(telecom), "--json"],
            ["algo", "list", *as_org(telecom), "--json"],
            ["algo", "register", "nosuch", *as_org(telecom)],
            ["algo", "approve", "stats", "--dataset", str(ds_id), *as_org(telecom)],  # not telecom's dataset
        ],
        env,
    )
    reg = ok_json(registered)
    assert isinstance(reg, dict) and reg["registered"] is False and reg["code_hash"] == "0x" + net.algorithm.hex()
    algos = ok_json(listed)
    kinds = {a["kind"]: a["matches_code_on_disk"] for a in algos}  # type: ignore[index]
    assert kinds["stats"] is True and net.algorithm.hex() in {a["code_hash"][2:] for a in algos}  # type: ignore[index]
    assert "no built-in algorithm 'nosuch'" in failed(unknown)
    assert "NotDatasetOwner" in failed(not_owner)

    revoked = ok_json(
        pcn("algo", "approve", "stats", "--dataset", str(ds_id), "--revoke", *as_org(bank), "--json", env=env)
    )
    assert isinstance(revoked, dict) and revoked["allowed"] is False
    assert net.admin.is_allowed(ds_id, algorithm=net.algorithm) is False
    ok(pcn("algo", "approve", "stats", "--dataset", str(ds_id), *as_org(bank), env=env))
    assert net.admin.is_allowed(ds_id, algorithm=net.algorithm) is True


# ---------------------------------------------------------------------------- tasks


def test_task_submit_approve_watch_result(root: Path, net: Network, env: dict[str, str]) -> None:
    bank = net.by_name("bank")
    params = root / "params.json"
    params.write_text(json.dumps({"column": "income", "statistics": ["count", "sum", "mean"]}))
    datasets = ",".join(str(o.dataset_id) for o in net.orgs)
    submit = ["task", "submit", "--algo", "stats", "--datasets", datasets, "--params", str(params)]
    sub = ok_json(pcn(*submit, "--recipient", "bank", "--deadline", "30m", *as_org(bank), "--json", env=env))
    assert isinstance(sub, dict)
    task_id = sub["task_id"]
    assert set(sub["delivered"]) == {o.address for o in net.orgs}
    assert all(v == "ok" for v in sub["delivered"].values()), sub["delivered"]

    pending = ok_json(pcn("task", "status", str(task_id), *as_org(bank), "--json", env=env))
    assert isinstance(pending, dict) and pending["status"] == "pending"
    assert [p["name"] for p in pending["participants"]] == ["bank", "telecom", "insurer"]

    # one after the other: the last approval authorises the task and costs more gas than one estimated
    # while another approval was still pending (see the report on Ledger.transact)
    for n, o in enumerate(net.orgs, 1):
        approved = ok_json(pcn("task", "approve", str(task_id), "--yes", *as_org(o), "--json", env=env))
        assert isinstance(approved, dict) and approved["approvals"] == n
    assert approved["status"] == "authorised"

    final = ok_json(pcn("task", "status", str(task_id), "--watch", *as_org(bank), "--json", env=env, timeout=150))
    assert isinstance(final, dict)
    assert final["status"] == "completed", final
    assert all(p["state"] == "receipted" and p.get("phase") == "done" for p in final["participants"]), final
    assert net.admin.task(task_id).status is TaskStatus.COMPLETED

    result, elsewhere, plain_status, listed, usage = pcn_many(
        [
            ["task", "result", str(task_id), *as_org(bank), "--json"],
            ["task", "result", str(task_id), *as_org(net.by_name("telecom"))],
            ["task", "status", str(task_id), *as_org(bank)],
            ["task", "list", *as_org(bank), "--json"],
            ["data", "usage", str(bank.dataset_id), *as_org(bank), "--json"],
        ],
        env,
    )
    res = ok_json(result)
    assert isinstance(res, dict) and res["matches_chain"] is True
    assert res["on_chain"] == "0x" + net.admin.task(task_id).result_hash.hex()
    assert res["result"]["groups"]["__all__"]["count"] == 3 * ROWS
    assert "only the named recipient" in failed(elsewhere)
    text = ok(plain_status)
    assert f"task {task_id}: completed" in text and "insurer" in text and "100%" in text
    tasks = ok_json(listed)
    assert isinstance(tasks, list) and tasks[0]["task_id"] == task_id
    assert (tasks[0]["algorithm"], tasks[0]["status"], tasks[0]["requester"]) == ("stats", "completed", bank.address)
    use = ok_json(usage)
    assert isinstance(use, dict) and use["uses"] == 1
    assert [(t["task_id"], t["algorithm"], t["status"], t["requester_name"]) for t in use["tasks"]] == [
        (task_id, "stats", "completed", "bank")
    ]

    # the action log: exported, verified, compared with the anchor the node put on chain after the task
    out = root / "bank-log.jsonl"
    deadline = time.monotonic() + 20
    while True:
        exported = ok_json(pcn("audit", "export-log", "--out", str(out), *as_org(bank), "--json", env=env))
        assert isinstance(exported, dict)
        if exported["anchor"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert exported["entries"] == len(out.read_text().splitlines()) > 0
    assert exported["anchor"] is not None and exported["anchor_matches"] is True


def test_watch_stops_at_the_deadline_and_expire(
    root: Path, net: Network, env: dict[str, str], devnet: DevnetStatus
) -> None:
    bank, telecom = net.by_name("bank"), net.by_name("telecom")
    datasets = f"{bank.dataset_id},{telecom.dataset_id}"  # stats takes at least 2 participants
    submit = ["task", "submit", "--algo", "stats", "--datasets", datasets, "--recipient", "bank"]
    sub = ok_json(
        pcn(*submit, "--params", str(root / "params.json"), "--deadline", "60", *as_org(bank), "--json", env=env)
    )
    assert isinstance(sub, dict)
    task_id = str(sub["task_id"])
    rpc_call(devnet.rpc_url, "evm_increaseTime", [120])
    rpc_call(devnet.rpc_url, "evm_mine")
    # never approved, so never final: --watch gives up at the deadline instead of waiting for ever
    watched = pcn("task", "status", task_id, "--watch", *as_org(bank), "--json", env=env, timeout=60)
    failed(watched, code=2)
    assert json.loads(watched.stdout)["status"] == "pending"
    assert "passed its deadline" in failed(pcn("task", "status", task_id, "--watch", *as_org(bank), env=env), code=2)
    ok(pcn("task", "expire", task_id, *as_org(telecom), env=env))
    assert net.admin.task(int(task_id)).status is TaskStatus.EXPIRED


# ---------------------------------------------------------------------------- clean errors


def test_clean_errors(root: Path, net: Network, env: dict[str, str]) -> None:
    bank = net.by_name("bank")
    not_json = root / "params.txt"
    not_json.write_text("column = income\n")
    bad_policy = root / "bad-policy.toml"
    bad_policy.write_text("max_uses = 3\nexpires_in_days = 10\nmax_usage = 4\n")
    data = root / "small.csv"
    write_dataset(data, 5, seed=11)
    missing = root / "nowhere" / "node.toml"
    net_root = Path(bank.config.path).parent.parent
    init_rest = ["--endpoint", "http://127.0.0.1:9", "--deployment", str(net.admin.deployment.path)]
    submit = ["task", "submit", "--algo", "stats", "--recipient", "bank", *as_org(bank)]
    calls = [
        ["data", "verify", "999", *as_org(bank)],
        ["data", "usage", "999", *as_org(bank), "--json"],
        ["task", "status", "999", *as_org(bank), "--json"],
        [*submit, "--datasets", "1", "--params", str(not_json)],
        [
            "data",
            "register",
            str(data),
            "--name",
            "x",
            "--id-column",
            "customer_id",
            "--policy",
            str(bad_policy),
            *as_org(bank),
        ],
        ["data", "list", "--config", str(missing)],
        ["node", "status", "--org", "ghost", "--json"],
        ["data", "list"],
        [*submit, "--datasets", "one,two", "--params", str(root / "params.json")],
        ["org", "init", "--name", "bank", "--home", str(net_root), "--redis-url", net.redis.url, *init_rest],
        ["task", "approve", "1", "--yes", *as_org(bank)],
    ]
    no_password = {k: v for k, v in env.items() if k != "PCN_KEYSTORE_PASSWORD"}
    datasets_before, tasks_before = net.admin.dataset_count(), net.admin.task_count()
    procs = pcn_many(calls, env, envs={len(calls) - 1: no_password})
    (
        no_local,
        no_chain_ds,
        no_task_json,
        params_txt,
        policy,
        no_config,
        no_org,
        no_selection,
        bad_ids,
        init_again,
        locked,
    ) = procs

    assert "UnknownLocalDataset" in failed(no_local) and "999" in no_local.stderr
    assert json_error(no_chain_ds)["name"] == "UnknownDataset"
    err = json_error(no_task_json)
    assert err["name"] == "UnknownTask" and "999" in err["message"]
    assert "InvalidParameters" in failed(params_txt) and f"{not_json} is not valid JSON" in params_txt.stderr
    assert "DataError" in failed(policy) and str(bad_policy) in policy.stderr and "max_usage" in policy.stderr
    assert "ConfigError" in failed(no_config) and str(missing) in no_config.stderr
    err = json_error(no_org)
    assert err["name"] == "ConfigError" and str(Path("ghost") / "node.toml") in err["message"]
    assert "--config" in failed(no_selection) and "PCN_CONFIG" in no_selection.stderr
    assert "--datasets" in failed(bad_ids)
    assert "exists already" in failed(init_again) and "never overwrites" in init_again.stderr
    assert "KeyStoreError" in failed(locked) and "PCN_KEYSTORE_PASSWORD" in locked.stderr
    # the failed attempts registered and submitted nothing
    assert (net.admin.dataset_count(), net.admin.task_count()) == (datasets_before, tasks_before)


def test_task_consent_min_survivors_and_contest_dropout(root: Path, net: Network, env: dict[str, str]) -> None:
    """#13.5 at the CLI: a participant owning no input (insurer) is named by the requester; the
    owners' approvals alone do not authorise the task until `pcn task consent`; the request
    carries `--min-survivors`; `pcn task contest-dropout` by a party never dropped is a clear error."""
    bank, telecom, insurer = (net.by_name(n) for n in ("bank", "telecom", "insurer"))
    params = root / "params-consent.json"
    params.write_text(json.dumps({"column": "income", "statistics": ["count"]}))
    submit = ["task", "submit", "--algo", "stats", "--datasets", f"{bank.dataset_id},{telecom.dataset_id}"]
    sub = ok_json(
        pcn(
            *submit,
            *("--params", str(params), "--recipient", "bank", "--participants", "bank,telecom,insurer"),
            *("--min-survivors", "2", "--deadline", "30m", *as_org(bank), "--json"),
            env=env,
        )
    )
    assert isinstance(sub, dict)
    task_id = sub["task_id"]
    assert net.admin.min_survivors(task_id) == 2
    assert net.admin.task_consents(task_id) == {insurer.address: False}
    for o in (bank, telecom):
        ok_json(pcn("task", "approve", str(task_id), *as_org(o), "--json", "--yes", env=env))
    assert net.admin.task(task_id).status is TaskStatus.PENDING  # the insurer has not consented
    contest = failed(pcn("task", "contest-dropout", str(task_id), *as_org(telecom), env=env))
    assert "InvalidTaskStatus" in contest
    not_needed = failed(pcn("task", "consent", str(task_id), *as_org(telecom), env=env))
    assert "NotAConsenter" in not_needed
    consented = ok_json(pcn("task", "consent", str(task_id), *as_org(insurer), "--json", env=env))
    assert isinstance(consented, dict) and consented["tx_hash"]
    assert net.admin.task_consents(task_id) == {insurer.address: True}
    assert net.admin.task(task_id).status is not TaskStatus.PENDING  # authorised (the nodes take it from here)
