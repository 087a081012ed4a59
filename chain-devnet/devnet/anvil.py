"""Run a local anvil devnet as a background process that survives the CLI call.

The chain state is dumped to a state file (every block, `--state-interval 1`), so a
restart — even after kill -9 — resumes the same chain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from pcn import paths
from pcn.runtime.procs import pid_alive

DEFAULT_PORT = 8545
DEFAULT_CHAIN_ID = 31337
DEFAULT_ACCOUNTS = 20
# anvil's well-known development mnemonic: deterministic, public, for the devnet only.
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"


class DevnetError(RuntimeError):
    """The devnet could not be started, stopped or reached."""


@dataclass
class DevnetStatus:
    running: bool
    port: int
    rpc_url: str
    pid: int | None
    chain_id: int | None
    block_number: int | None
    state_file: str | None
    log_file: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _pid_file(port: int) -> Path:
    return paths.run_dir() / f"anvil-{port}.json"


def _log_file(port: int) -> Path:
    return paths.run_dir() / f"anvil-{port}.log"


def rpc_call(url: str, method: str, params: list | None = None, timeout: float = 2.0) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise DevnetError(f"{method}: {reply['error'].get('message')}")
    return reply["result"]


def status(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> DevnetStatus:
    url = f"http://{host}:{port}"
    record: dict = {}
    if _pid_file(port).is_file():
        record = json.loads(_pid_file(port).read_text())
    pid = record.get("pid")
    if pid is not None and not pid_alive(pid):
        pid = None
    chain_id = block = None
    try:
        chain_id = int(str(rpc_call(url, "eth_chainId")), 16)
        block = int(str(rpc_call(url, "eth_blockNumber")), 16)
    except (OSError, urllib.error.URLError, DevnetError, ValueError):
        pass
    return DevnetStatus(
        running=chain_id is not None,
        port=port,
        rpc_url=url,
        pid=pid,
        chain_id=chain_id,
        block_number=block,
        state_file=record.get("state_file"),
        log_file=str(_log_file(port)),
    )


def up(
    port: int = DEFAULT_PORT,
    chain_id: int = DEFAULT_CHAIN_ID,
    state_file: Path | None = None,
    accounts: int = DEFAULT_ACCOUNTS,
    block_time: float | None = None,
    host: str = "127.0.0.1",
    timeout: float = 20.0,
) -> DevnetStatus:
    """Start anvil in the background (idempotent when the same devnet already runs)."""
    current = status(port, host)
    if current.running:
        if current.chain_id != chain_id:
            raise DevnetError(f"port {port} already serves chain id {current.chain_id}, not {chain_id}")
        return current
    anvil = paths.tool("anvil")
    if not anvil.exists():
        raise DevnetError(f"anvil not found at {anvil}: run `make deps` first")
    if state_file is None:
        state_file = paths.chain_devnet_dir() / "state" / f"{chain_id}-{port}.json"
    state_file = Path(state_file).resolve()
    state_file.parent.mkdir(parents=True, exist_ok=True)
    paths.run_dir().mkdir(parents=True, exist_ok=True)
    cmd = [
        str(anvil),
        "--host",
        host,
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
        "--accounts",
        str(accounts),
        "--mnemonic",
        DEFAULT_MNEMONIC,
        "--state",
        str(state_file),
        "--state-interval",
        "1",
        "--silent",
    ]
    if block_time:
        cmd += ["--block-time", str(block_time)]
    log = open(_log_file(port), "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    _pid_file(port).write_text(json.dumps({"pid": proc.pid, "state_file": str(state_file), "cmd": cmd}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _log_file(port).read_text(errors="replace")[-2000:]
            raise DevnetError(f"anvil exited with code {proc.returncode}:\n{tail}")
        st = status(port, host)
        if st.running:
            return st
        time.sleep(0.1)
    proc.kill()
    raise DevnetError(f"anvil did not answer on port {port} within {timeout:.0f}s")


def down(port: int = DEFAULT_PORT, timeout: float = 15.0) -> DevnetStatus:
    """Stop anvil gracefully (SIGTERM makes it write its state file), then SIGKILL if stuck."""
    pf = _pid_file(port)
    if pf.is_file():
        pid = json.loads(pf.read_text()).get("pid")
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            _reap(pid, timeout=5.0)
        pf.unlink(missing_ok=True)
    return status(port)


def _reap(pid: int, timeout: float = 0.0) -> None:
    """Collect our own exited child so it does not linger as a zombie (no-op for others' processes).

    Waits up to `timeout`: a multi-threaded process's leader shows as a zombie in /proc while
    its other threads are still exiting, and it cannot be reaped until they have."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not our child, or already collected
        if reaped or time.monotonic() >= deadline:
            return
        time.sleep(0.02)
