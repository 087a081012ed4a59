"""`make demo`'s scenario through `pcn demo --json`, as a newcomer would run it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main

from pcn.algorithms import protocol_class
from pcn.chain.types import RefusalReason, Task, TaskStatus
from pcn.devnet.demo import EXAMPLE_PARAMS, cli_commands, task_row
from tests.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_demo_runs_the_whole_scenario_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PCN_DEMO_DIR": str(tmp_path / "demo"), "PCN_RUN_DIR": str(tmp_path / "run")}
    dash = free_port()
    cmd = [str(Path(sys.executable).parent / "pcn"), "demo", "--port", str(port), "--rows", "3000"]
    cmd += ["--dashboard-port", str(dash)]
    try:
        proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, timeout=500)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        summary = json.loads(proc.stdout)
        tasks = summary["tasks"]
        assert [t["status"] for t in tasks] == ["completed"] * 6 + ["refused"]
        assert tasks[0]["matches_chain"] is True and tasks[0]["equals_plaintext"] is True
        assert tasks[0]["receipts"] == tasks[0]["participants"] == 3
        assert tasks[0]["gas"]["total"] == sum(v for k, v in tasks[0]["gas"].items() if k != "total") > 0
        assert tasks[1]["epsilon_charged"] == pytest.approx(0.5)
        assert tasks[2]["equals_plaintext"] is True and tasks[2]["matches_chain"] is True and tasks[2]["size"] > 0
        assert tasks[2]["derived_dataset"] > 3
        assert 0 < tasks[3]["hits"] < tasks[3]["queried"]
        assert tasks[4]["auc"] > 0.75 and tasks[4]["epochs"] >= 2 and tasks[4]["rows"] > 100
        # SecureBoost on the same aligned sample: every tree built, both AUCs reported
        assert tasks[5]["trees"] == 5 and tasks[5]["lr_auc"] == tasks[4]["auc"]
        assert tasks[5]["train_auc"] > 0.75 and tasks[5]["validation_auc"] > 0.65
        assert tasks[6]["refusal"] == "FINGERPRINT_MISMATCH" and tasks[6]["receipts"] == 0
        # the regulator's dashboard is up, asks for a sign-in, and the printed key holds the role
        board = summary["dashboard"]
        assert board["url"] == f"http://127.0.0.1:{dash}"
        page = httpx.get(board["url"] + "/", timeout=10, follow_redirects=False)
        assert page.status_code in (302, 303, 307) and "/login" in page.headers["location"]
        from eth_account import Account

        assert Account.from_key(board["regulator_key"]).address == board["regulator"]
        # receipts are counted against each task's own participants: query, LR and trees are two-party
        assert [(t["receipts"], t["participants"]) for t in tasks[3:]] == [(2, 2), (2, 2), (2, 2), (0, 3)]
        _run_printed_commands(summary["commands"], env)
    finally:
        down = subprocess.run([*cmd, "--down"], capture_output=True, text=True, env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "stopped the devnet" in down.stdout and "dashboard" in down.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(summary["dashboard"]["url"] + "/login", timeout=2)
    # everything the demo started is gone: its mailboxes no longer answer
    for org in summary["orgs"].values():
        run = Path(org["config"]).parent / "data" / "run" / "node.json"
        assert not run.exists()


def _run_printed_commands(commands: list[str], demo_env: dict[str, str]) -> None:
    """Every command line the demo prints works as printed, with no pcn settings in the
    environment: each organisation's node.toml alone unlocks its keystore."""
    env = {k: v for k, v in demo_env.items() if not k.startswith("PCN_")} | {"COLUMNS": "250", "NO_COLOR": "1"}
    for line in commands:
        args = shlex.split(line)
        done = subprocess.run(args, input="y\n", capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        if args[1:3] == ["task", "submit"]:
            next_task = re.search(r"submitted task (\d+)", done.stdout)
            assert next_task is not None and f"approve {next_task[1]} " in "\n".join(commands)
        if args[1:3] == ["task", "result"]:
            assert "matches the on-chain commitment" in done.stdout


def _task(task_id: int, status: TaskStatus, receipts: int, refusal: RefusalReason = RefusalReason.NONE) -> Task:
    return Task(
        task_id, ADDRESSES[0], status, 2, 2, receipts, receipts, refusal, ADDRESSES[0],
        0, 0, 0, 0, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32,
    )  # fmt: skip


ADDRESSES = ["0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20]


class _TwoPartyTasks:
    """The two calls `task_row` reads: a chain where every task has the first two organisations."""

    def __init__(self, task: Task) -> None:
        self._task = task

    def task(self, task_id: int) -> Task:
        return self._task

    def task_participants(self, task_id: int) -> list[str]:
        return ADDRESSES[:2]


def test_a_two_party_tasks_summary_row_counts_its_own_participants() -> None:
    row = task_row(_TwoPartyTasks(_task(4, TaskStatus.COMPLETED, receipts=2)), 4, "private query")  # type: ignore[arg-type]
    assert (row["receipts"], row["participants"], row["status"], row["refusal"]) == (2, 2, "completed", "")
    refused = task_row(
        _TwoPartyTasks(_task(6, TaskStatus.REFUSED, 0, RefusalReason.FINGERPRINT_MISMATCH)),  # type: ignore[arg-type]
        6,
        "refused",
    )
    assert (refused["receipts"], refused["participants"], refused["refusal"]) == (0, 2, "FINGERPRINT_MISMATCH")


def _parse(line: str) -> Any:
    """Parse a command line with pcn's real CLI without running it: an unknown command or
    option raises a usage error. (Typer bundles its own click, so groups are found by duck type.)"""
    from pcn.cli.main import app

    args = shlex.split(line)[1:]
    command: Any = typer.main.get_command(app)
    name, parent = "pcn", None
    while hasattr(command, "get_command"):
        parent = command.make_context(name, [], parent=parent, resilient_parsing=True)
        name = args.pop(0)
        command = command.get_command(parent, name)
        assert command is not None, f"{line}: no command {name}"
    return command.make_context(name, args, parent=parent)


def test_printed_commands_act_as_each_organisation_and_parse() -> None:
    configs = {name: f"var/demo/{name}/node.toml" for name in ("bank", "telecom", "insurer")}
    lines = [line for line, _note in cli_commands(".venv/bin/pcn", configs, [1, 2, 3], "p.json", 1, 12)]
    for config in configs.values():
        assert f".venv/bin/pcn data list --config {config}" in lines
        assert f".venv/bin/pcn task approve 12 --config {config}" in lines
    submit = _parse(next(line for line in lines if " task submit " in line))
    assert submit.params["datasets"] == "1,2,3" and submit.params["recipient"] == "bank"
    assert submit.params["config"] == Path(configs["bank"]) and submit.params["algo"] == "stats"
    for line in lines:
        assert _parse(line).params["config"] is not None
    protocol_class("stats").validate_params(EXAMPLE_PARAMS)  # what submit would check before sending
