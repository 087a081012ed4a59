"""Entry points of a node's long-running processes, and `pcn node start|stop|status`.

A node is three kinds of processes sharing the organisation's config ($PCN_CONFIG):
the peer mailbox (uvicorn + FastAPI), the chain watcher, and Celery workers (prefork,
`workers` processes). `start` launches them detached with their logs in
`<data_dir>/logs/`, records their pids in `<data_dir>/run/node.json`, and waits until the
mailbox answers its health check.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from pcn.runtime.config import OrgConfig
from pcn.runtime.procs import pid_alive


class NodeError(RuntimeError):
    """The node could not be started, stopped or inspected (the message says why)."""


def mailbox_app() -> FastAPI:
    """uvicorn factory: the mailbox of the organisation named by $PCN_CONFIG."""
    from pcn.runtime.context import NodeContext
    from pcn.runtime.inbox import Inbox
    from pcn.runtime.mailbox import create_mailbox_app
    from pcn.runtime.peers import PeerDirectory
    from pcn.runtime.taskstate import Progress, handle_params

    ctx = NodeContext.from_env()
    peers = PeerDirectory(ctx.ledger)
    return create_mailbox_app(
        me=ctx.address,
        keys=ctx.keys,
        inbox=Inbox(
            ctx.redis,
            ctx.key(),
            task_quota=ctx.config.mailbox_task_quota,
            sender_quota=ctx.config.mailbox_sender_quota,
        ),
        peers=peers,
        chain_id=ctx.ledger.chain_id,
        task_manager=str(ctx.ledger.deployment.contracts["TaskManager"].address),
        on_params=lambda task_id, body: handle_params(ctx, task_id, body),
        max_inflight=ctx.config.mailbox_max_inflight,
        ttl_margin=ctx.config.mailbox_ttl_margin,
        progress=lambda task_id: Progress(ctx, task_id).read(),
    )


def _run_file(cfg: OrgConfig) -> Path:
    return cfg.data_path / "run" / "node.json"


def _commands(cfg: OrgConfig) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "mailbox": [
            py,
            "-m",
            "uvicorn",
            "--factory",
            "pcn.runtime.services:mailbox_app",
            "--host",
            cfg.listen_host,
            "--port",
            str(cfg.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        "watcher": [py, "-m", "pcn.runtime.watcher"],
        **({"puller": [py, "-m", "pcn.runtime.puller"]} if cfg.relay_url else {}),
        "worker": [
            py,
            "-m",
            "celery",
            "-A",
            "pcn.runtime.worker",
            "worker",
            "-Q",
            f"pcn.{cfg.name}",
            "-c",
            str(cfg.workers),
            "-n",
            f"{cfg.name}@%h",
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ],
    }


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every health check: building one reads the system's CA bundle
    (about 80 ms), which a start-up loop polling every 0.2 s would otherwise repeat."""
    return ssl.create_default_context()


def status(cfg: OrgConfig) -> dict[str, Any]:
    run = _run_file(cfg)
    procs: dict[str, Any] = json.loads(run.read_text()) if run.is_file() else {}
    out: dict[str, Any] = {"org": cfg.name, "endpoint": cfg.endpoint, "processes": {}}
    for name, pid in procs.get("pids", {}).items():
        out["processes"][name] = {"pid": pid, "alive": pid_alive(int(pid))}
    try:
        r = httpx.get(cfg.local_mailbox_url.rstrip("/") + "/v1/health", timeout=1.0, trust_env=False, verify=_tls())
        out["mailbox_healthy"] = r.status_code == 200
    except httpx.HTTPError:
        out["mailbox_healthy"] = False
    out["running"] = bool(out["processes"]) and all(p["alive"] for p in out["processes"].values())
    if cfg.relay_url:
        out["relay"] = _relay_view(cfg)
    return out


def _relay_view(cfg: OrgConfig) -> dict[str, Any]:
    """A pull-mode node's registered route, asked at the relay (through the configured proxy)
    as a peer would: whether the relay answers for it and sees its node fetching."""
    from pcn.runtime.puller import relay_client

    try:
        with relay_client(3.0, cfg.relay_proxy) as client:
            r = client.get(cfg.endpoint.rstrip("/") + "/v1/health")
        r.raise_for_status()
        health = r.json()
        return {
            "url": cfg.relay_url,
            "reachable": True,
            "node_online": bool(health.get("node_online")),
            "node_seen_s_ago": health.get("node_seen_s_ago"),
        }
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return {"url": cfg.relay_url, "reachable": False, "error": str(exc) or type(exc).__name__}


def start(cfg: OrgConfig, env: dict[str, str] | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Start the node of `cfg` (unless it runs already) and wait until its mailbox answers."""
    return start_all([cfg], env, timeout)[0]


def start_all(cfgs: list[OrgConfig], env: dict[str, str] | None = None, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Start several organisations' nodes at once (one host running a test network or the
    demo), then wait for each: their start-ups overlap instead of queueing."""
    deadline = time.monotonic() + timeout
    for cfg in cfgs:
        _spawn(cfg, env)
    return [_wait_up(cfg, deadline) for cfg in cfgs]


def _spawn(cfg: OrgConfig, env: dict[str, str] | None) -> None:
    current = status(cfg)
    if current["running"]:
        return
    if current["processes"]:
        stop(cfg)
    logs = cfg.data_path / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **(env or {}), "PCN_CONFIG": cfg.path, "PYTHONUNBUFFERED": "1"}
    pids: dict[str, int] = {}
    for name, cmd in _commands(cfg).items():
        with (logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
                cwd=cfg.data_path,
            )
        pids[name] = proc.pid
    run = _run_file(cfg)
    run.parent.mkdir(parents=True, exist_ok=True)
    run.write_text(json.dumps({"pids": pids, "started": time.time()}))


def _wait_up(cfg: OrgConfig, deadline: float) -> dict[str, Any]:
    logs = cfg.data_path / "logs"
    while time.monotonic() < deadline:
        st = status(cfg)
        dead = [n for n, p in st["processes"].items() if not p["alive"]]
        if dead:
            tail = (logs / f"{dead[0]}.log").read_text(errors="replace")[-2000:]
            stop(cfg)
            raise NodeError(f"{cfg.name}: {dead[0]} exited at start:\n{tail}")
        if st["mailbox_healthy"]:
            return st
        time.sleep(0.2)
    stop(cfg)
    raise NodeError(f"{cfg.name}: mailbox did not answer on {cfg.endpoint} in time")


def stop(cfg: OrgConfig, timeout: float = 15.0) -> dict[str, Any]:
    run = _run_file(cfg)
    if not run.is_file():
        return {"org": cfg.name, "stopped": []}
    pids = json.loads(run.read_text()).get("pids", {})
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(int(p)) for p in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        if pid_alive(int(pid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
    run.unlink(missing_ok=True)
    return {"org": cfg.name, "stopped": sorted(pids)}
