"""`make demo`: a devnet, pcn's contracts, three organisations and one full task.

What runs today is the on-chain spine (issue #3): every step below is a real transaction on
a real anvil devnet, read back through the same event reader the auditor will use. The
compute nodes (issue #4) and the auditor dashboard (issue #7) plug into this same flow.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

from eth_account import Account
from rich.console import Console
from rich.table import Table

from pcn import paths
from pcn.chain.deployment import load_deployment
from pcn.chain.ledger import Ledger
from pcn.chain.types import Fingerprint, PolicyGrants, PolicyLimits, Receipt, TaskRequest, epsilon_to_fixed
from pcn.devnet import anvil
from pcn.devnet.deploy import deploy, devnet_key

console = Console(soft_wrap=True)
ORGS = [("bank", 2), ("telecom", 3), ("hospital", 4)]


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def main() -> None:
    port = int(os.environ.get("PCN_DEVNET_PORT", "8545"))
    console.rule("[bold]pcn demo")
    st = anvil.up(port=port)
    console.print(f"devnet: chain {st.chain_id} at {st.rpc_url} (state {st.state_file})")
    dep_path = paths.deployment_file(st.chain_id or 31337)
    try:
        dep = load_deployment(dep_path)
        Ledger(dep, st.rpc_url).check_connection()
        console.print(f"contracts already deployed ({dep_path})")
    except Exception:
        dep = deploy(st.rpc_url, progress=console.print)
    admin = Ledger(dep, st.rpc_url, Account.from_key(devnet_key(0)))
    auditor = Account.from_key(devnet_key(1))
    if not admin.is_auditor(auditor.address):
        admin.grant_auditor(auditor.address)
        console.print(f"granted the auditor role to {auditor.address}")

    orgs: list[Ledger] = []
    for i, (name, idx) in enumerate(ORGS):
        org = admin.with_account(devnet_key(idx))
        if admin.organisation(org.address).status.name == "NONE":
            admin.admit(org.address, name, secrets.token_bytes(32), f"http://127.0.0.1:{9101 + i}")
            console.print(f"admitted {name} ({org.address})")
        orgs.append(org)

    code = b"".join(sorted(p.read_bytes() for p in (paths.contracts_dir() / "src").glob("*.sol")))
    algo_hash = _sha(b"demo-joint-count/" + code)
    if orgs[0].algorithm(algo_hash) is None:
        orgs[0].register_algorithm(algo_hash, "stats", "0.1.0", _sha(b"joint count of customers"))
    everyone = [o.address for o in orgs]
    dataset_ids = []
    for (name, _), org in zip(ORGS, orgs, strict=True):
        rows = [f"{name}-customer-{k},{k % 7}".encode() for k in range(1000)]
        fp = Fingerprint(
            _sha(b"\n".join(_sha(r) for r in rows)),
            _sha(b"id:str,segment:int"),
            _sha(name.encode()),
            len(rows),
        )
        expiry = admin.block_timestamp() + 7 * 24 * 3600
        ds_id, _ = org.register_dataset(
            fp, PolicyLimits(100, expiry, epsilon_to_fixed(10)), PolicyGrants([algo_hash], everyone, everyone)
        )
        dataset_ids.append(ds_id)
        console.print(f"{name} registered dataset {ds_id} (1000 rows, fingerprint only)")

    bank, telecom, hospital = orgs
    req = TaskRequest(
        algo_hash,
        dataset_ids,
        everyone,
        _sha(b'{"statistic":"count"}'),
        bank.address,
        admin.block_timestamp() + 3600,
        epsilon_to_fixed(0.5),
    )
    task_id, res = bank.submit_task(req)
    console.print(f"bank submitted task {task_id} (gas {res.gas_used})")
    bank.approve(task_id)
    telecom.approve(task_id)
    signed = hospital.sign_approval(task_id, admin.block_timestamp() + 600)
    admin.with_account(devnet_key(1)).approve_by_sig(signed)
    console.print("approved by bank and telecom; hospital's EIP-712 approval relayed by a third party")
    started = int(time.time())
    for org in orgs:
        org.start(task_id)
    result = _sha(b"joint-count=3000")
    for org in orgs:
        org.submit_receipt(
            task_id,
            Receipt(
                result,
                _sha(b"transcript" + org.address.encode()),
                _sha(b"input" + org.address.encode()),
                algo_hash,
                _sha(b"deleted" + org.address.encode()),
                started,
                int(time.time()),
            ),
        )
    task = bank.task(task_id)
    console.print(f"task {task_id} is [bold green]{task.status.name}[/], result hash 0x{task.result_hash.hex()}")

    table = Table("block", "event", "who", "tx", title=f"on-chain timeline of task {task_id}")
    cursor = Path(paths.run_dir()) / f"demo-cursor-{task_id}.json"
    cursor.unlink(missing_ok=True)

    def show(ev: object) -> None:
        args = ev.args  # type: ignore[attr-defined]
        if args.get("taskId") == task_id:
            who = args.get("participant") or args.get("owner") or args.get("requester") or ""
            table.add_row(str(ev.block_number), ev.name, str(who), ev.tx_hash[:18] + "…")  # type: ignore[attr-defined]

    admin.event_reader(cursor, start_block=res.block_number).poll(show)
    console.print(table)
    console.print(f"\nthe devnet keeps running at {st.rpc_url}; deployment: {dep.path or dep_path}")
    console.print("try: .venv/bin/pcn org list    stop: make demo-down")


if __name__ == "__main__":
    main()
