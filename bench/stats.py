"""Joint statistics over real pcn nodes vs plaintext numpy, side by side in one run.

Three organisations each hold ROWS rows (default 1,000,000) of (customer_id, income,
region). pcn computes count / sum / mean / variance / histogram of income grouped by
region across the three — real anvil, real Redis, real Celery workers, real HTTP, every
node verifying the chain and fingerprinting its 1M-row file before it runs — and the peer
computes the same statistics in plaintext with numpy on the pooled data, (a) from arrays
already in memory and (b) reading the same CSV files first (what a trusted third party
holding everyone's files would do). Reports the ratios and where pcn's wall time goes.

    .venv/bin/python bench/stats.py [--rows N] [--workers W]

Writes bench/results/stats.json and a row in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pcn.chain.types import TaskStatus
from pcn.devnet import anvil
from pcn.devnet.deploy import deploy
from pcn.devnet.localnet import REGIONS, approve_all, build_network, free_port
from pcn.runtime.operations import read_result, submit_task

BENCH = Path(__file__).resolve().parent
EDGES = [0, 10_000, 25_000, 50_000, 100_000]
PARAMS = {
    "column": "income",
    "group_by": "region",
    "groups": REGIONS,
    "statistics": ["count", "sum", "mean", "variance", "histogram"],
    "histogram": {"edges": EDGES},
}


def numpy_stats(income: np.ndarray, region: np.ndarray) -> dict[str, Any]:
    out = {}
    for g in REGIONS:
        x = income[region == g]
        out[g] = {
            "count": len(x),
            "sum": float(x.sum()),
            "mean": float(x.mean()),
            "variance": float(x.var(ddof=1)),
            "histogram": np.histogram(x, bins=EDGES)[0].tolist(),
        }
    return out


def numpy_from_csv(files: list[Path]) -> dict[str, Any]:
    incomes, regions = [], []
    for f in files:
        data = np.genfromtxt(f, delimiter=",", skip_header=1, dtype=None, encoding="utf-8", usecols=(1, 2))
        incomes.append(data["f0"].astype(np.float64))
        regions.append(data["f1"].astype(str))
    return numpy_stats(np.concatenate(incomes), np.concatenate(regions))


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],  # other work on the machine
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per organisation")
    ap.add_argument("--workers", type=int, default=1, help="Celery worker processes per organisation")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pcn-bench-stats-"))
    os.environ["PCN_RUN_DIR"] = str(work / "run")
    port = free_port()
    st = anvil.up(port=port, state_file=work / "anvil.json")
    net = None
    try:
        dep = deploy(st.rpc_url, out=work / "deployment.json")
        t = time.perf_counter()
        net = build_network(
            work,
            dep,
            ["bank", "telecom", "insurer"],
            rows=args.rows,
            workers=args.workers,
            message_timeout=600.0,
            progress=lambda m: print(f"[{time.perf_counter() - t:6.1f}s] {m}", flush=True),
        )
        bank = net.by_name("bank")

        # ---- pcn: submit -> approvals -> every node verifies, runs, receipts -> completed
        t0 = time.perf_counter()
        sub = submit_task(
            bank.ledger,
            algorithm="stats",
            dataset_ids=[o.dataset_id for o in net.orgs],
            params=PARAMS,
            recipient="bank",
            deadline_in=3 * 3600,
        )
        t_submitted = time.perf_counter()
        approve_all(net, sub.task_id)
        t_approved = time.perf_counter()
        status = net.wait_final(sub.task_id, timeout=1800)
        pcn_wall = time.perf_counter() - t0
        assert status is TaskStatus.COMPLETED, status
        result = read_result(bank.ctx, sub.task_id)
        assert result["matches_chain"]

        # ---- peer: plaintext numpy on the pooled data, in the same run
        income = np.concatenate([o.values["income"] for o in net.orgs])
        region = np.concatenate([o.values["region"] for o in net.orgs])
        reps = 5
        t1 = time.perf_counter()
        for _ in range(reps):
            plain = numpy_stats(income, region)
        numpy_mem = (time.perf_counter() - t1) / reps
        t2 = time.perf_counter()
        plain_csv = numpy_from_csv([o.data_file for o in net.orgs if o.data_file is not None])
        numpy_csv = time.perf_counter() - t2

        for g in REGIONS:  # the two agree, or the benchmark means nothing
            got = result["result"]["groups"][g]
            assert got["count"] == plain[g]["count"] == plain_csv[g]["count"]
            assert abs(got["mean"] - plain[g]["mean"]) <= 1e-9 * abs(plain[g]["mean"])

        # ---- where each node's time went (from its receipt's log entry)
        per_node: dict[str, dict[str, float]] = {}
        for o in net.orgs:
            entry = next(e for e in o.ctx.log.entries() if e.task_id == sub.task_id and e.action == "receipt")
            per_node[o.name] = entry.data["timings"]
        submit_chain = (t_submitted - t0) + (t_approved - t_submitted)

        def share(keys: list[str], subtract: list[str] | None = None) -> float:
            """Mean over nodes of the phases' seconds, as a share of pcn's wall time."""
            vals = []
            for tm in per_node.values():
                v = sum(tm.get(k, 0.0) for k in keys) - sum(tm.get(k, 0.0) for k in subtract or [])
                vals.append(v)
            return float(np.mean(vals)) / pcn_wall

        chain_calls = share(["verify", "chain_start", "chain_receipt"], ["read_data", "fingerprint"])
        out = {
            "benchmark": "stats",
            "rows_per_party": args.rows,
            "parties": 3,
            "workers_per_party": args.workers,
            "pcn_seconds": round(pcn_wall, 3),
            "numpy_in_memory_seconds": round(numpy_mem, 4),
            "numpy_from_csv_seconds": round(numpy_csv, 3),
            "ratio_vs_numpy": round(pcn_wall / numpy_mem, 1),
            "ratio_vs_numpy_from_csv": round(pcn_wall / numpy_csv, 2),
            "share_requester_chain_calls": round(submit_chain / pcn_wall, 3),
            "share_node_chain_calls": round(chain_calls, 3),
            "share_node_verification_incl_fingerprint": round(share(["verify"]), 3),
            "share_node_read_and_fingerprint": round(share(["read_data", "fingerprint"]), 3),
            "share_node_protocol": round(share(["protocol"]), 3),
            "per_node_seconds": per_node,
            "machine": machine(),
            "command": f"python bench/stats.py --rows {args.rows} --workers {args.workers}",
        }
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results" / "stats.json").write_text(json.dumps(out, indent=2) + "\n")
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
    row = (
        f"| stats | count/sum/mean/var/histogram by region, {out['rows_per_party']:,} rows x 3 parties | "
        f"{out['pcn_seconds']} s | numpy in memory {out['numpy_in_memory_seconds']} s; "
        f"numpy from the CSVs {out['numpy_from_csv_seconds']} s | "
        f"{out['ratio_vs_numpy']}x / {out['ratio_vs_numpy_from_csv']}x | "
        f"node time: read+fingerprint {out['share_node_read_and_fingerprint']:.0%}, "
        f"chain calls {out['share_node_chain_calls']:.0%}, protocol {out['share_node_protocol']:.0%} |\n"
    )
    lines = [ln for ln in text.splitlines(keepends=True) if not ln.startswith("| stats |")]
    readme.write_text("".join(lines).rstrip("\n") + "\n" + row)


if __name__ == "__main__":
    main()
