"""`make demo`'s scenario through `pcn demo --json`, as a newcomer would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.timeout(600)


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
        assert [t["status"] for t in tasks] == ["completed"] * 5 + ["refused"]
        assert tasks[0]["matches_chain"] is True and tasks[0]["equals_plaintext"] is True
        assert tasks[0]["receipts"] == tasks[0]["participants"] == 3
        assert tasks[0]["gas"]["total"] == sum(v for k, v in tasks[0]["gas"].items() if k != "total") > 0
        assert tasks[1]["epsilon_charged"] == pytest.approx(0.5)
        assert tasks[2]["equals_plaintext"] is True and tasks[2]["matches_chain"] is True and tasks[2]["size"] > 0
        assert tasks[2]["derived_dataset"] > 3
        assert 0 < tasks[3]["hits"] < tasks[3]["queried"]
        assert tasks[4]["auc"] > 0.75 and tasks[4]["epochs"] >= 2 and tasks[4]["rows"] > 100
        assert tasks[5]["refusal"] == "FINGERPRINT_MISMATCH" and tasks[5]["receipts"] == 0
        # the regulator's dashboard is up, asks for a sign-in, and the printed key holds the role
        board = summary["dashboard"]
        assert board["url"] == f"http://127.0.0.1:{dash}"
        page = httpx.get(board["url"] + "/", timeout=10, follow_redirects=False)
        assert page.status_code in (302, 303, 307) and "/login" in page.headers["location"]
        from eth_account import Account

        assert Account.from_key(board["regulator_key"]).address == board["regulator"]
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
