"""Two-party PSI: pcn vs OpenMined's `openmined-psi`, side by side in one run, same sets.

Two organisations ("bank", the recipient, and "telecom") each hold N customer IDs
(default 100,000, like "C000123456") drawn from one pool of 2N, so about half overlap.
The sets are the ones `build_network` writes to each organisation's CSV, read back from
those files, so all three measurements compute the same intersection:

1. openmined-psi (ECDH-PSI over P-256 in C++, Python bindings), in one process as its API
   works: telecom is the server, bank the client with reveal_intersection=True; server
   setup (raw data structure: exact, like pcn's) + client request + server response +
   client intersection, wall time.
2. pcn's protocol only: `run_local` of two `PsiProtocol` parties in this process, with a
   `ProcessPoolExecutor(os.cpu_count())` as their `parallel_map` — the crypto compared
   apples to apples (no network, no chain, no verification).
3. pcn end to end over real nodes (real anvil, Redis, Celery workers, signed and encrypted
   HTTP): submit -> approvals -> every node verifies the chain and fingerprints its file,
   runs the protocol, receipts -> completed, wall time, with each node's phase timings
   from its receipt's action-log entry.

Asserts the three intersections are equal. Ratios are pcn seconds / openmined seconds
(below 1: pcn is faster).

    .venv/bin/python bench/psi.py [--n N] [--workers W]

Writes bench/results/psi.json and the `| psi |` row of bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from pcn.algorithms.base import PartyContext, run_local
from pcn.algorithms.psi.protocol import PsiProtocol
from pcn.chain.types import TaskStatus
from pcn.data.table import Table
from pcn.devnet import anvil
from pcn.devnet.deploy import deploy
from pcn.devnet.localnet import approve_all, build_network, free_port
from pcn.runtime.operations import read_result, submit_task

BENCH = Path(__file__).resolve().parent
ID_COLUMN = "customer_id"


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (a process pool's
    workers count once the pool is shut down)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def read_ids(path: Path) -> list[str]:
    """The customer_id column of a CSV that build_network wrote, in file order."""
    with path.open(newline="") as f:
        rows = csv.reader(f)
        col = next(rows).index(ID_COLUMN)
        return [r[col] for r in rows]


def openmined(client_ids: list[str], server_ids: list[str]) -> tuple[float, set[str], dict[str, Any]]:
    """openmined-psi, server setup to client intersection, in one process (its API's shape)."""
    import private_set_intersection.python as om

    t0 = time.perf_counter()
    server = om.server.CreateWithNewKey(True)
    client = om.client.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(client_ids), server_ids, om.DataStructure.RAW)
    t1 = time.perf_counter()
    request = client.CreateRequest(client_ids)
    t2 = time.perf_counter()
    response = server.ProcessRequest(request)
    t3 = time.perf_counter()
    hits = client.GetIntersection(setup, response)
    t4 = time.perf_counter()
    phases = {
        "server_setup": round(t1 - t0, 3),
        "client_request": round(t2 - t1, 3),
        "server_response": round(t3 - t2, 3),
        "client_intersection": round(t4 - t3, 3),
        "bytes_on_the_wire": len(setup.SerializeToString())
        + len(request.SerializeToString())
        + len(response.SerializeToString()),
    }
    return t4 - t0, {client_ids[i] for i in hits}, phases


def _run_pcn(recipient_ids: list[str], other_ids: list[str], pmap: Any) -> tuple[float, list[PsiProtocol], int, int]:
    who = ["0xbank", "0xtelecom"]
    t0 = time.perf_counter()
    parties = [
        PsiProtocol(
            PartyContext(
                1,
                me,
                who,
                who[0],
                {},
                hashlib.sha256(f"bench/psi/{me}".encode()).digest(),
                None,
                id_column=ID_COLUMN,
                parallel_map=pmap,
            ),
            Table({ID_COLUMN: ids}),
        )
        for me, ids in zip(who, [recipient_ids, other_ids], strict=True)
    ]
    transcript = run_local(parties)
    wall = time.perf_counter() - t0
    return wall, parties, len(transcript), sum(len(m.payload) for m in transcript)


def pcn_local(recipient_ids: list[str], other_ids: list[str]) -> tuple[float, set[str], dict[str, Any]]:
    """pcn's PsiProtocol, both parties in this process, heavy parts over a process pool."""
    with ProcessPoolExecutor(os.cpu_count()) as pool:

        def pmap(fn: Any, items: Any) -> list[Any]:
            return list(pool.map(fn, items))

        list(pool.map(abs, range(2 * (os.cpu_count() or 1))))  # workers spawned before the clock starts
        wall, parties, messages, wire = _run_pcn(recipient_ids, other_ids, pmap)
    result = json.loads(parties[0].result() or b"{}")
    info = {"messages": messages, "bytes_on_the_wire": wire}
    return wall, set(result["ids"]), info


def pcn_one_core(recipient_ids: list[str], other_ids: list[str]) -> tuple[float, set[str]]:
    """The same, with no pool: one core, as openmined-psi uses."""
    wall, parties, _, _ = _run_pcn(recipient_ids, other_ids, None)
    return wall, set(json.loads(parties[0].result() or b"{}")["ids"])


def machine() -> dict[str, Any]:
    import cryptography

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "cryptography": cryptography.__version__,
        "openmined_psi": version("openmined-psi"),
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="IDs per party")
    ap.add_argument("--workers", type=int, default=1, help="Celery worker processes per organisation")
    ap.add_argument("--skip-one-core", action="store_true", help="skip pcn's protocol on one core (no pool)")
    args = ap.parse_args()
    n = args.n
    work = Path(tempfile.mkdtemp(prefix="pcn-bench-psi-"))
    os.environ["PCN_RUN_DIR"] = str(work / "run")
    port = free_port()
    loads: dict[str, list[float]] = {"start": load()}
    st = anvil.up(port=port, state_file=work / "anvil.json")
    net = None
    t = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t:6.1f}s] {msg}", flush=True)

    try:
        dep = deploy(st.rpc_url, out=work / "deployment.json")
        net = build_network(
            work, dep, ["bank", "telecom"], rows=n, workers=args.workers, message_timeout=600.0, progress=say
        )
        bank, telecom = net.by_name("bank"), net.by_name("telecom")
        assert bank.data_file is not None and telecom.data_file is not None
        bank_ids, telecom_ids = read_ids(bank.data_file), read_ids(telecom.data_file)
        expected = set(bank_ids) & set(telecom_ids)
        say(f"sets read back from the CSVs: {len(bank_ids)} and {len(telecom_ids)} IDs, {len(expected)} in common")

        # ---- 1. the peer: openmined-psi
        loads["before_openmined"] = load()
        c0 = cpu_seconds()
        om_wall, om_ids, om_phases = openmined(bank_ids, telecom_ids)
        om_cpu = cpu_seconds() - c0
        say(f"openmined-psi: {om_wall:.2f} s {om_phases}")

        # ---- 2. pcn's protocol alone, in this process
        loads["before_pcn_protocol"] = load()
        c0 = cpu_seconds()
        local_wall, local_ids, local_info = pcn_local(bank_ids, telecom_ids)
        local_cpu = cpu_seconds() - c0  # with the pool's start-up and warm-up, a little more than the run
        say(f"pcn protocol (run_local, pool of {os.cpu_count()}): {local_wall:.2f} s")
        one_wall, one_ids, one_cpu = None, local_ids, None
        if not args.skip_one_core:
            loads["before_pcn_protocol_one_core"] = load()
            c0 = cpu_seconds()
            one_wall, one_ids = pcn_one_core(bank_ids, telecom_ids)
            one_cpu = cpu_seconds() - c0
            say(f"pcn protocol (run_local, one core): {one_wall:.2f} s")

        # ---- 3. pcn end to end over the real nodes
        loads["before_pcn_end_to_end"] = load()
        t0, t0_wall = time.perf_counter(), time.time()
        sub = submit_task(
            bank.ledger,
            algorithm="psi",
            dataset_ids=[bank.dataset_id, telecom.dataset_id],
            params={},
            recipient="bank",
            deadline_in=3 * 3600,
        )
        t_submitted = time.perf_counter()
        approve_all(net, sub.task_id)
        t_approved = time.perf_counter()
        status = net.wait_final(sub.task_id, timeout=1800)
        e2e_wall = time.perf_counter() - t0
        loads["end"] = load()
        assert status is TaskStatus.COMPLETED, status
        got = read_result(bank.ctx, sub.task_id)
        assert got["matches_chain"]
        e2e_ids = set(got["result"]["ids"])
        say(f"pcn end to end: {e2e_wall:.2f} s")

        # the three agree with each other and with Python's sets, or the benchmark means nothing
        assert om_ids == local_ids == one_ids == e2e_ids == expected, "the intersections differ"

        per_node: dict[str, dict[str, float]] = {}
        timeline: dict[str, dict[str, float]] = {}  # each node's log entries for the task, s after submit
        for o in net.orgs:
            entries = [e for e in o.ctx.log.entries() if e.task_id == sub.task_id]
            per_node[o.name] = next(e for e in entries if e.action == "receipt").data["timings"]
            timeline[o.name] = {e.action: round(e.at - t0_wall, 3) for e in entries}

        def share(keys: list[str], subtract: list[str] | None = None) -> float:
            """Mean over nodes of the phases' seconds, as a share of the end-to-end wall time."""
            vals = [
                sum(tm.get(k, 0.0) for k in keys) - sum(tm.get(k, 0.0) for k in subtract or [])
                for tm in per_node.values()
            ]
            return float(np.mean(vals)) / e2e_wall

        requester_chain = t_approved - t0
        timed = ["wait_params", "verify", "chain_start", "protocol", "chain_receipt"]
        other = 1.0 - requester_chain / e2e_wall - share(timed)
        # from approvals to the node starting work: the watcher seeing the task, Celery handing it on
        dispatch = {
            name: round(
                timeline[name]["verify"] - tm.get("verify", 0.0) - tm.get("wait_params", 0.0) - requester_chain, 3
            )
            for name, tm in per_node.items()
        }
        last_receipt = max(tl["receipt"] for tl in timeline.values())
        elements = len(bank_ids) + len(telecom_ids)
        out = {
            "benchmark": "psi",
            "ids_per_party": n,
            "parties": 2,
            "intersection_size": len(expected),
            "workers_per_party": args.workers,
            "compute_processes_per_party": os.cpu_count(),
            "openmined_psi_seconds": round(om_wall, 3),
            "openmined_psi_phases": om_phases,
            "openmined_psi_data_structure": "RAW",
            "pcn_protocol_seconds": round(local_wall, 3),
            "pcn_protocol_info": local_info,
            "pcn_protocol_one_core_seconds": None if one_wall is None else round(one_wall, 3),
            "pcn_end_to_end_seconds": round(e2e_wall, 3),
            "ratio_vs_openmined_psi_protocol": round(local_wall / om_wall, 3),
            "ratio_vs_openmined_psi_end_to_end": round(e2e_wall / om_wall, 3),
            "ratio_vs_openmined_psi_protocol_one_core": None if one_wall is None else round(one_wall / om_wall, 3),
            "cpu_seconds": {
                "openmined_psi": round(om_cpu, 3),
                "pcn_protocol_incl_pool_start": round(local_cpu, 3),
                "pcn_protocol_one_core": None if one_cpu is None else round(one_cpu, 3),
            },
            "ratio_vs_openmined_psi_cpu_seconds": round((local_cpu if one_cpu is None else one_cpu) / om_cpu, 3),
            "ratio_vs_openmined_psi_cpu_seconds_definition": (
                "pcn protocol CPU seconds (the one-core run; the pool run with --skip-one-core) / openmined-psi CPU "
                "seconds: the work done, whatever share of the cores other load left"
            ),
            "cores_used_cpu_over_wall": {
                "openmined_psi": round(om_cpu / om_wall, 2),
                "pcn_protocol": round(local_cpu / local_wall, 2),
                "pcn_protocol_one_core": None if one_cpu is None or one_wall is None else round(one_cpu / one_wall, 2),
            },
            "elements_per_second_definition": "(|X_bank| + |X_telecom|) / wall seconds",
            "elements_per_second": {
                "openmined_psi": round(elements / om_wall),
                "pcn_protocol": round(elements / local_wall),
                "pcn_end_to_end": round(elements / e2e_wall),
                "pcn_protocol_one_core": None if one_wall is None else round(elements / one_wall),
            },
            "requester_chain_seconds": {
                "submit": round(t_submitted - t0, 3),
                "approvals": round(t_approved - t_submitted, 3),
            },
            "share_requester_chain_calls": round(requester_chain / e2e_wall, 3),
            "share_node_chain_calls": round(
                share(["verify", "chain_start", "chain_receipt"], ["read_data", "fingerprint"]), 3
            ),
            "share_node_verification_incl_fingerprint": round(share(["verify"]), 3),
            "share_node_read_and_fingerprint": round(share(["read_data", "fingerprint"]), 3),
            "share_node_protocol": round(share(["protocol"]), 3),
            "share_node_waiting_for_params": round(share(["wait_params"]), 3),
            "share_other_definition": (
                "1 - requester chain calls - the nodes' timed phases: pick-up of the task after the approvals, "
                "result storage, action-log anchoring, completion polling"
            ),
            "share_other": round(other, 3),
            "dispatch_seconds_after_approvals": dispatch,
            "share_dispatch": round(float(np.mean(list(dispatch.values()))) / e2e_wall, 3),
            "seconds_from_last_receipt_to_completed_seen": round(e2e_wall - last_receipt, 3),
            "per_node_seconds": per_node,
            "per_node_log_timeline_seconds_after_submit": timeline,
            "load_average_1_5_15": loads,
            "machine": machine(),
            "command": f"python bench/psi.py --n {n} --workers {args.workers}"
            + (" --skip-one-core" if args.skip_one_core else ""),
        }
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results" / "psi.json").write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps(out, indent=2))
        _readme_row(out)
    finally:
        if net is not None:
            net.stop()
            net.redis.stop()
        anvil.down(port)
        shutil.rmtree(work, ignore_errors=True)


def _readme_row(out: dict[str, Any]) -> None:
    readme = BENCH / "README.md"
    header = (
        "# Benchmarks\n\nEach runs pcn and its named peer side by side in one run on the same machine; "
        "raw figures in `results/<name>.json`.\n\n"
        "| benchmark | workload | pcn | peer | ratio | notes |\n| --- | --- | --- | --- | --- | --- |\n"
    )
    text = readme.read_text() if readme.is_file() else header
    eps = out["elements_per_second"]
    one = out["pcn_protocol_one_core_seconds"]
    one_core = "" if one is None else f"; protocol on one core {one} s ({eps['pcn_protocol_one_core']:,} IDs/s)"
    one_core_ratio = "" if one is None else f" / one core {out['ratio_vs_openmined_psi_protocol_one_core']}x"
    row = (
        f"| psi | 2-party PSI (IDs revealed to one party), {out['ids_per_party']:,} x {out['ids_per_party']:,} IDs, "
        f"{out['intersection_size']:,} in common | "
        f"protocol {out['pcn_protocol_seconds']} s ({eps['pcn_protocol']:,} IDs/s, X25519, pool of "
        f"{out['compute_processes_per_party']}); end to end over 2 nodes {out['pcn_end_to_end_seconds']} s "
        f"({eps['pcn_end_to_end']:,} IDs/s){one_core} | "
        f"openmined-psi {out['machine']['openmined_psi']} {out['openmined_psi_seconds']} s "
        f"({eps['openmined_psi']:,} IDs/s, P-256, one process) | "
        f"protocol {out['ratio_vs_openmined_psi_protocol']}x / end to end {out['ratio_vs_openmined_psi_end_to_end']}x"
        f"{one_core_ratio}; CPU seconds {out['ratio_vs_openmined_psi_cpu_seconds']}x (pcn / peer) | "
        f"end-to-end time: protocol {out['share_node_protocol']:.0%}, "
        f"verification incl. read+fingerprint {out['share_node_verification_incl_fingerprint']:.0%}, "
        f"chain calls {out['share_node_chain_calls'] + out['share_requester_chain_calls']:.0%}; "
        f"{out['machine']['cpus']} cores, load {out['load_average_1_5_15']['start'][0]} at start "
        f"(`{out['command']}`) |\n"
    )
    lines = [ln for ln in text.splitlines(keepends=True) if not ln.startswith("| psi |")]
    readme.write_text("".join(lines).rstrip("\n") + "\n" + row)


if __name__ == "__main__":
    main()
