"""The `pcn` command line as operators meet it: the installed console script run as a
subprocess against the session devnet (and, for `pcn devnet`, against its own anvil)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from pcn.chain.deployment import Deployment
from pcn.chain.ledger import Ledger
from pcn.chain.types import OrgStatus
from pcn.devnet import anvil
from pcn.devnet.anvil import DevnetStatus, rpc_call
from pcn.devnet.deploy import devnet_key
from pcn.runtime.config import load_config
from pcn.runtime.context import NodeContext

REPO = Path(__file__).resolve().parents[1]
PCN = Path(sys.executable).with_name("pcn")
if not PCN.exists():
    PCN = REPO / ".venv" / "bin" / "pcn"

ADMIN = Account.from_key(devnet_key(0)).address
CONTRACTS = ("Consortium", "AlgorithmRegistry", "DatasetRegistry", "TaskManager", "AuditLog")
SIGNER_VARS = (
    "PCN_PRIVATE_KEY",
    "PCN_ADMIN_KEY",
    "PCN_RPC_URL",
    "PCN_DEPLOYMENT",
    "PCN_DEVNET_PORT",
    "PCN_ROOT",
    "PCN_DEPLOYMENTS_DIR",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_pcn(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PCN), *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def ok_json(proc: subprocess.CompletedProcess[str]) -> object:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def assert_clean_failure(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """A user-facing failure: the expected exit code, a message, no Python traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in out, out
    assert out.strip(), "no message at all"
    return out


def base_env(run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SIGNER_VARS}
    env["PCN_RUN_DIR"] = str(run_dir)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "250"
    return env


@pytest.fixture
def cli_env(tmp_path: Path, deployment: Deployment) -> dict[str, str]:
    env = base_env(tmp_path / "run")
    env["PCN_DEPLOYMENT"] = str(deployment.path)
    return env


def fresh_account() -> str:
    return Account.create().address


def admit_args(
    account: str, name: str = "bank", key: str | None = None, endpoint: str = "http://127.0.0.1:9100"
) -> list[str]:
    return [
        "org",
        "admit",
        account,
        "--name",
        name,
        "--encryption-key",
        key or "0x" + os.urandom(32).hex(),
        "--endpoint",
        endpoint,
    ]


def org_entry(env: dict[str, str], account: str) -> dict | None:
    orgs = ok_json(run_pcn("org", "list", "--json", env=env))
    assert isinstance(orgs, list)
    found = [o for o in orgs if o["account"].lower() == account.lower()]
    assert len(found) <= 1
    return found[0] if found else None


# ---------------------------------------------------------------------------- deploy


def test_deploy_writes_a_deployment_file_plain_web3_can_use(
    snapshot: None, devnet: DevnetStatus, cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "deploy" / "dep.json"
    summary = ok_json(
        run_pcn("deploy", "--rpc-url", devnet.rpc_url, "--out", str(out), "--json", "--dev-account", "0", env=cli_env)
    )
    assert isinstance(summary, dict)
    assert Path(summary["path"]) == out
    assert summary["chainId"] == 31337
    assert summary["admin"] == ADMIN
    assert out.is_file()

    # From here on only the file and web3.py: no pcn code is involved.
    data = json.loads(out.read_text())
    assert data["chainId"] == 31337
    assert set(data["contracts"]) == set(CONTRACTS)
    assert data["compilerVersion"].startswith("0.8.37")
    assert re.fullmatch(r"(0x)?[0-9a-f]{64}", data["sourceHash"])
    assert summary["contracts"] == {n: c["address"] for n, c in data["contracts"].items()}
    w3 = Web3(Web3.HTTPProvider(data["rpcUrl"]))
    assert w3.eth.chain_id == data["chainId"]
    head = w3.eth.block_number
    assert isinstance(data["deployBlock"], int)
    assert 0 < data["deployBlock"] <= head
    addresses = set()
    for name, c in data["contracts"].items():
        assert Web3.is_checksum_address(c["address"]), name
        assert len(w3.eth.get_code(c["address"])) > 0, f"{name} has no code"
        assert data["deployBlock"] <= c["block"] <= head
        addresses.add(c["address"])
    assert len(addresses) == 5
    consortium = w3.eth.contract(
        address=data["contracts"]["Consortium"]["address"], abi=data["contracts"]["Consortium"]["abi"]
    )
    role = consortium.functions.DEFAULT_ADMIN_ROLE().call()
    assert consortium.functions.hasRole(role, ADMIN).call() is True
    assert consortium.functions.hasRole(role, Account.from_key(devnet_key(3)).address).call() is False
    # The contracts are wired to each other.
    registry = w3.eth.contract(
        address=data["contracts"]["DatasetRegistry"]["address"], abi=data["contracts"]["DatasetRegistry"]["abi"]
    )
    assert registry.functions.taskManager().call() == data["contracts"]["TaskManager"]["address"]
    tasks = w3.eth.contract(
        address=data["contracts"]["TaskManager"]["address"], abi=data["contracts"]["TaskManager"]["abi"]
    )
    assert tasks.functions.consortium().call() == data["contracts"]["Consortium"]["address"]


# ---------------------------------------------------------------------------- org


def test_org_admit_list_suspend_reinstate(snapshot: None, cli_env: dict[str, str]) -> None:
    account = fresh_account()
    key = os.urandom(32).hex()
    endpoint = "http://10.0.0.7:9100/mailbox"
    res = ok_json(
        run_pcn(*admit_args(account.lower(), "Acme Bank", key, endpoint), "--json", "--dev-account", "0", env=cli_env)
    )
    assert isinstance(res, dict)
    assert re.fullmatch(r"0x[0-9a-f]{64}", res["tx_hash"])
    assert res["block_number"] > 0

    org = org_entry(cli_env, account)
    assert org is not None, "admitted organisation not listed"
    assert org["account"] == account  # checksummed, although given in lower case
    assert org["name"] == "Acme Bank"
    assert org["endpoint"] == endpoint
    assert org["encryption_key"] == "0x" + key
    assert org["status"] == "active"

    ok_json(run_pcn("org", "suspend", account, "--json", "--dev-account", "0", env=cli_env))
    assert org_entry(cli_env, account)["status"] == "suspended"

    plain = run_pcn("org", "reinstate", account, "--dev-account", "0", env=cli_env)
    assert plain.returncode == 0, plain.stderr
    assert "reinstated" in plain.stdout
    table = run_pcn("org", "list", env=cli_env)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if "Acme Bank" in line)
    assert "active" in row and "suspended" not in row


def test_org_init_password_file_is_recorded_so_the_config_alone_unlocks_the_keys(
    cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "keystore-password"
    secret.write_text("a devnet password\n")
    env = {k: v for k, v in cli_env.items() if not k.startswith("PCN_KEYSTORE_PASSWORD")}
    config = tmp_path / "acme" / "node.toml"
    init = ["org", "init", "--name", "acme", "--endpoint", "http://127.0.0.1:9100", "--redis-url", "redis://x:1"]
    created = ok_json(run_pcn(*init, "--config", str(config), "--password-file", str(secret), "--json", env=env))
    assert isinstance(created, dict)
    assert "a devnet password" not in config.read_text()  # the config names the file, never the secret
    monkeypatch.delenv("PCN_KEYSTORE_PASSWORD", raising=False)
    monkeypatch.delenv("PCN_KEYSTORE_PASSWORD_FILE", raising=False)
    cfg = load_config(config)
    assert cfg.password_file == str(secret.resolve())
    assert NodeContext(cfg).keys.address == created["address"]


def test_org_init_for_an_outbound_only_node_registers_its_relay_route(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`pcn org init --relay-url`: the endpoint to admit is the relay's route for the new
    address; the mailbox listens on loopback for the node's puller; either mode, not both."""
    cli_env = {**cli_env, "PCN_KEYSTORE_PASSWORD": "a devnet password"}
    config = tmp_path / "outbound" / "node.toml"
    base = ["org", "init", "--name", "outbound", "--redis-url", "redis://x:1", "--config", str(config)]
    created = ok_json(
        run_pcn(*base, "--relay-url", "http://127.0.0.1:8800", "--listen-port", "9301", "--json", env=cli_env)
    )
    assert isinstance(created, dict)
    assert created["endpoint"] == f"http://127.0.0.1:8800/o/{created['address']}"
    assert created["endpoint"] in created["admit_command"]
    cfg = load_config(config)
    assert (cfg.relay_url, cfg.endpoint, cfg.local_mailbox_url) == (
        "http://127.0.0.1:8800",
        created["endpoint"],
        "http://127.0.0.1:9301",
    )
    other = tmp_path / "other" / "node.toml"
    for extra in (
        [],
        ["--endpoint", "http://127.0.0.1:9100", "--relay-url", "http://127.0.0.1:8800", "--listen-port", "9302"],
        ["--relay-url", "http://127.0.0.1:8800"],
    ):
        proc = run_pcn(*base[:-1], str(other), *extra, env=cli_env)
        assert_clean_failure(proc)
        assert "--relay-url" in proc.stdout + proc.stderr
    assert not other.exists()


def test_admitting_twice_is_a_named_readable_error(admin: Ledger, cli_env: dict[str, str]) -> None:
    account = fresh_account()
    admin.admit(account, "first", os.urandom(32), "http://127.0.0.1:9100")

    proc = run_pcn(*admit_args(account, "second"), "--dev-account", "0", env=cli_env)
    assert_clean_failure(proc)
    assert "OrganisationAlreadyAdmitted" in proc.stderr
    assert "already admitted" in proc.stderr
    assert account in proc.stderr

    proc = run_pcn(*admit_args(account, "second"), "--dev-account", "0", "--json", env=cli_env)
    assert_clean_failure(proc)
    err = json.loads(proc.stdout)
    assert set(err) == {"error"}
    assert err["error"]["name"] == "OrganisationAlreadyAdmitted"
    assert "already admitted" in err["error"]["message"]
    assert account in err["error"]["message"]
    # The first admission is untouched.
    assert admin.organisation(account).name == "first"


def test_non_admin_signer_is_refused(admin: Ledger, cli_env: dict[str, str]) -> None:
    account = fresh_account()
    outsider = Account.from_key(devnet_key(3)).address
    proc = run_pcn(*admit_args(account), "--dev-account", "3", env=cli_env)
    assert_clean_failure(proc)
    assert "AccessControlUnauthorizedAccount" in proc.stderr
    assert "admin" in proc.stderr
    assert outsider in proc.stderr
    assert admin.organisation(account).status == OrgStatus.NONE

    proc = run_pcn(*admit_args(account), "--dev-account", "3", "--json", env=cli_env)
    assert_clean_failure(proc)
    err = json.loads(proc.stdout)["error"]
    assert err["name"] == "AccessControlUnauthorizedAccount"
    assert "admin" in err["message"]


@pytest.mark.parametrize("bad", ["0x1234", "not-an-address"])
def test_malformed_address_is_refused(snapshot: None, cli_env: dict[str, str], bad: str) -> None:
    proc = run_pcn(*admit_args(bad), "--dev-account", "0", env=cli_env)
    out = assert_clean_failure(proc)
    assert bad in out
    assert "address" in out


@pytest.mark.parametrize("key", ["0xabcd", "zz" * 32])
def test_bad_encryption_key_is_refused(admin: Ledger, cli_env: dict[str, str], key: str) -> None:
    account = fresh_account()
    proc = run_pcn(*admit_args(account, key=key), "--dev-account", "0", env=cli_env)
    out = assert_clean_failure(proc)
    assert "--encryption-key" in out
    assert admin.organisation(account).status == OrgStatus.NONE


def test_missing_deployment_file_says_to_deploy(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PCN_DEPLOYMENT": "/nonexistent.json"}
    proc = run_pcn("org", "list", env=env)
    out = assert_clean_failure(proc)
    assert "pcn deploy" in out
    assert "/nonexistent.json" in out

    proc = run_pcn(*admit_args(fresh_account()), "--dev-account", "0", "--json", env=env)
    assert_clean_failure(proc)
    assert "pcn deploy" in json.loads(proc.stdout)["error"]["message"]


def test_admit_without_any_signer_is_a_clear_error(snapshot: None, cli_env: dict[str, str]) -> None:
    proc = run_pcn(*admit_args(fresh_account()), env=cli_env)
    out = assert_clean_failure(proc)
    assert "--key-file" in out
    assert "--dev-account" in out


def test_signer_variables_named_in_the_error_actually_work(admin: Ledger, cli_env: dict[str, str]) -> None:
    """The no-signer message tells the user which environment variable to set; doing exactly
    that must let the command through."""
    proc = run_pcn(*admit_args(fresh_account()), env=cli_env)
    out = assert_clean_failure(proc)
    named = sorted(set(re.findall(r"PCN_[A-Z_]+", out)))
    assert named, f"the message names no environment variable: {out}"
    for var in named:
        account = fresh_account()
        proc = run_pcn(*admit_args(account), env={**cli_env, var: devnet_key(0)})
        assert proc.returncode == 0, f"the error message says to set {var}, but with it set:\n{proc.stderr}"
        assert admin.is_active(account)


def test_admin_key_environment_variable_signs(admin: Ledger, cli_env: dict[str, str]) -> None:
    account = fresh_account()
    ok_json(run_pcn(*admit_args(account), "--json", env={**cli_env, "PCN_ADMIN_KEY": devnet_key(0)}))
    assert admin.is_active(account)


def test_key_file_signs(admin: Ledger, cli_env: dict[str, str], tmp_path: Path) -> None:
    key_file = tmp_path / "admin.key"
    key_file.write_text(devnet_key(0) + "\n")
    key_file.chmod(0o600)
    account = fresh_account()
    ok_json(run_pcn(*admit_args(account, "keyed"), "--key-file", str(key_file), "--json", env=cli_env))
    org = admin.organisation(account)
    assert org.status == OrgStatus.ACTIVE and org.name == "keyed"


def test_unusable_key_files_are_clear_errors(admin: Ledger, cli_env: dict[str, str], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_text("this is not a key\n")
    account = fresh_account()
    out = assert_clean_failure(run_pcn(*admit_args(account), "--key-file", str(garbage), env=cli_env))
    assert "garbage.key" in out
    assert "this is not a key" not in out  # never echo what was in a key file
    out = assert_clean_failure(run_pcn(*admit_args(account), "--key-file", str(tmp_path / "missing.key"), env=cli_env))
    assert "missing.key" in out
    assert admin.organisation(account).status == OrgStatus.NONE


def test_dev_account_refused_when_deployment_is_not_a_devnet(
    admin: Ledger, deployment: Deployment, cli_env: dict[str, str], tmp_path: Path
) -> None:
    data = json.loads(Path(deployment.path).read_text())
    data["chainId"] = 1
    foreign = tmp_path / "mainnet.json"
    foreign.write_text(json.dumps(data))
    env = {**cli_env, "PCN_DEPLOYMENT": str(foreign)}
    account = fresh_account()

    out = assert_clean_failure(run_pcn(*admit_args(account), "--dev-account", "0", env=env))
    assert re.search(r"devnet|chain id", out, re.IGNORECASE), out

    # With a real key the chain id mismatch itself is caught before anything is sent.
    key_file = tmp_path / "admin.key"
    key_file.write_text(devnet_key(0))
    out = assert_clean_failure(run_pcn(*admit_args(account), "--key-file", str(key_file), env=env))
    assert "31337" in out and re.search(r"chain id", out, re.IGNORECASE), out
    assert admin.organisation(account).status == OrgStatus.NONE


# ---------------------------------------------------------------------------- deploy off-devnet


@pytest.fixture(scope="module")
def chain_one_node(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetStatus]:
    """An anvil that claims to be chain 1: a stand-in for a real network."""
    port = free_port()
    st = anvil.up(port=port, chain_id=1, state_file=tmp_path_factory.mktemp("chain1") / "state.json")
    yield st
    anvil.down(port)


@pytest.fixture
def chain_one(chain_one_node: DevnetStatus) -> Iterator[DevnetStatus]:
    """chain_one_node, reverted after each test."""
    snap = rpc_call(chain_one_node.rpc_url, "evm_snapshot")
    yield chain_one_node
    rpc_call(chain_one_node.rpc_url, "evm_revert", [snap])


def _nothing_deployed(chain: DevnetStatus) -> bool:
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    return w3.eth.get_transaction_count(ADMIN) == 0


def test_deploy_with_dev_account_refused_off_devnet(chain_one: DevnetStatus, tmp_path: Path) -> None:
    env = base_env(tmp_path / "run")
    proc = run_pcn(
        "deploy", "--rpc-url", chain_one.rpc_url, "--out", str(tmp_path / "d.json"), "--dev-account", "0", env=env
    )
    out = assert_clean_failure(proc)
    assert "devnet" in out.lower()
    assert not (tmp_path / "d.json").exists()
    assert _nothing_deployed(chain_one)


def test_deploy_without_signer_refused_off_devnet(chain_one: DevnetStatus, tmp_path: Path) -> None:
    """With no key at all, deploy must not silently fall back to anvil's public key 0 on a
    non-devnet chain (anyone could then act as the consortium admin)."""
    env = base_env(tmp_path / "run")
    proc = run_pcn("deploy", "--rpc-url", chain_one.rpc_url, "--out", str(tmp_path / "d.json"), env=env)
    assert_clean_failure(proc)
    assert not (tmp_path / "d.json").exists()
    assert _nothing_deployed(chain_one)


def test_deploy_to_unreachable_rpc_is_a_clear_error(tmp_path: Path) -> None:
    env = base_env(tmp_path / "run")
    url = f"http://127.0.0.1:{free_port()}"
    out = assert_clean_failure(
        run_pcn("deploy", "--rpc-url", url, "--dev-account", "0", "--out", str(tmp_path / "d.json"), env=env)
    )
    assert url in out


# ---------------------------------------------------------------------------- devnet


@pytest.fixture
def own_devnet(tmp_path: Path) -> Iterator[tuple[int, dict[str, str], Path]]:
    """A port, environment and state file for a devnet this test starts itself."""
    port = free_port()
    env = base_env(tmp_path / "run")
    state = tmp_path / "state" / "chain.json"
    yield port, env, state
    subprocess.run([str(PCN), "devnet", "down", "--port", str(port)], env=env, capture_output=True, timeout=60)


def test_devnet_up_status_down_keeps_state(own_devnet: tuple[int, dict[str, str], Path], tmp_path: Path) -> None:
    port, env, state = own_devnet
    p = str(port)
    url = f"http://127.0.0.1:{port}"

    st = ok_json(run_pcn("devnet", "up", "--port", p, "--state", str(state), "--json", env=env))
    assert st["running"] is True
    assert st["chain_id"] == 31337
    assert st["port"] == port and st["rpc_url"] == url
    assert isinstance(st["pid"], int)
    assert Path(st["state_file"]) == state.resolve()

    again = ok_json(run_pcn("devnet", "up", "--port", p, "--state", str(state), "--json", env=env))
    assert again["running"] is True and again["pid"] == st["pid"], "up twice started a second anvil"

    status = run_pcn("devnet", "status", "--port", p, "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["running"] is True

    dep_file = tmp_path / "own-deployment.json"
    ok_json(run_pcn("deploy", "--rpc-url", url, "--out", str(dep_file), "--dev-account", "0", "--json", env=env))
    env = {**env, "PCN_DEPLOYMENT": str(dep_file)}
    account = fresh_account()
    ok_json(run_pcn(*admit_args(account, "persisted"), "--dev-account", "0", "--json", env=env))

    down = ok_json(run_pcn("devnet", "down", "--port", p, "--json", env=env))
    assert down["running"] is False
    status = run_pcn("devnet", "status", "--port", p, "--json", env=env)
    assert status.returncode == 3, status.stdout + status.stderr
    assert json.loads(status.stdout)["running"] is False
    assert state.is_file() and state.stat().st_size > 0

    st2 = ok_json(run_pcn("devnet", "up", "--port", p, "--state", str(state), "--json", env=env))
    assert st2["running"] is True and st2["chain_id"] == 31337
    assert st2["pid"] != st["pid"]
    assert st2["block_number"] >= st["block_number"]
    org = org_entry(env, account)
    assert org is not None, "the organisation admitted before the restart is gone: state not persisted"
    assert org["name"] == "persisted" and org["status"] == "active"

    down = ok_json(run_pcn("devnet", "down", "--port", p, "--json", env=env))
    assert down["running"] is False


# ---------------------------------------------------------------------------- #13.7 algorithm governance


def test_org_approve_and_revoke_algorithm(admin: Ledger, cli_env: dict[str, str]) -> None:
    """A squatted registration stays unusable until the admin approves it; the admin revokes it
    by CLI and the hash can be registered again; a non-admin cannot approve."""
    from tests.helpers import h

    bank = Ledger(admin.deployment, account=Account.from_key(devnet_key(9)))
    if not admin.is_active(bank.address):
        admin.admit(bank.address, "squatter9", h("x25519-squatter"), "http://127.0.0.1:9199")
    code = h(f"squatted-{os.urandom(4).hex()}")
    bank.register_algorithm(code, "fedavg", "6.6.6", h("lie"))
    assert not admin.algorithm(code).usable
    refused = assert_clean_failure(
        run_pcn("org", "approve-algorithm", "0x" + code.hex(), "--dev-account", "9", env=cli_env)
    )
    assert "not the consortium admin" in refused
    ok_json(run_pcn("org", "revoke-algorithm", "0x" + code.hex(), "--json", "--dev-account", "0", env=cli_env))
    assert admin.algorithm(code) is None
    bank.register_algorithm(code, "stats", "1.0.0", h("truth"))
    res = ok_json(
        run_pcn(
            "org",
            "approve-algorithm",
            "0x" + code.hex(),
            "--dropout-tolerant",
            "--json",
            "--dev-account",
            "0",
            env=cli_env,
        )
    )
    assert isinstance(res, dict) and res["tx_hash"]
    algo = admin.algorithm(code)
    assert algo.kind == "stats" and algo.usable and algo.dropout_tolerant
