"""Any Ethereum client can use pcn from the deployment file alone: the README's `cast` commands."""

from __future__ import annotations

import os
import re
import subprocess

from pcn import paths
from pcn.chain.types import TaskStatus
from pcn.devnet.deploy import devnet_key
from tests.helpers import FIRST_ORG_ACCOUNT, build_consortium, h


def _readme_cast_commands() -> str:
    text = (paths.repo_root() / "README.md").read_text()
    block = re.search(r"```bash\n(DEP=.*?)```", text, re.S)
    assert block, "README lost its cast example"
    return block.group(1)


def test_readme_cast_send_submits_a_task(deployment, snapshot, devnet):
    c = build_consortium(deployment, n_orgs=3)
    bank, telecom, hospital = (o.address for o in c.orgs)
    ids = [c.datasets[a] for a in (bank, telecom, hospital)]
    script = _readme_cast_commands().replace("[1,2,3]", "[" + ",".join(map(str, ids)) + "]")
    script = script.replace("http://127.0.0.1:8545", devnet.rpc_url)
    env = {
        **os.environ,
        "PATH": f"{paths.node_modules() / '.bin'}:{os.environ['PATH']}",
        "BANK_KEY": devnet_key(FIRST_ORG_ACCOUNT),
        "BANK": bank,
        "TELECOM": telecom,
        "HOSPITAL": hospital,
        "ALGO_HASH": "0x" + c.algorithm.hex(),
        "PARAMS_HASH": "0x" + h("params").hex(),
        "DEADLINE": str(c.admin.block_timestamp() + 3600),
    }
    script = script.replace("DEP=chain-devnet/deployments/31337.json", f"DEP={deployment.path}")
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=paths.repo_root(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"  # taskCount after the submit
    task = c.admin.task(1)
    assert task.status is TaskStatus.PENDING and task.requester == bank and task.epsilon == 500_000
    assert c.admin.task_participants(1) == [bank, telecom, hospital]


def test_cast_reports_a_named_error(deployment, snapshot, devnet):
    tm = deployment.contracts["TaskManager"].address
    out = subprocess.run(
        [
            str(paths.tool("cast")),
            "send",
            "--rpc-url",
            devnet.rpc_url,
            "--private-key",
            devnet_key(5),
            tm,
            "approve(uint256,bytes32)",
            "42",
            "0x" + "00" * 32,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "UnknownTask(42)" in out.stderr
