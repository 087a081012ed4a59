"""The relay's overhead (#17): the same two tasks over two real nodes, once with both nodes
reachable (direct delivery) and once with the telecom outbound-only behind `pcn relay serve`
(its registered endpoint the relay's, its puller fetching over an outbound connection).

Tasks, each submitted, approved and timed to the last receipt: a two-party PSI by OT
extension (psi-ot) of N x N IDs, and a joint-statistics task (count, sum, mean by region)
over the same N-row datasets. Reported as ratios relay / direct, with where the relayed
bytes went (the relay's counters). Each configuration gets a fresh pair of nodes on a fresh
anvil (direct first, then relay) and runs both tasks `--repeat` times; medians reported.

    python bench/relay.py --rows 1000000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psi as ecdh_bench  # bench/psi.py: run as `python bench/relay.py`, bench/ is on sys.path
import redis
from common import replace_row

from pcn.chain.types import TaskStatus
from pcn.devnet import anvil
from pcn.devnet.deploy import deploy
from pcn.devnet.localnet import REGIONS, Network, RelayProcess, approve_all, build_network, free_port
from pcn.runtime.operations import read_result, submit_task
from pcn.runtime.relay import RelayStore

BENCH = Path(__file__).resolve().parent


def stats_task(net: Network) -> float:
    bank = net.by_name("bank")
    t0 = time.perf_counter()
    sub = submit_task(
        bank.ledger,
        algorithm="stats",
        dataset_ids=[o.dataset_id for o in net.orgs],
        params={"column": "income", "group_by": "region", "groups": REGIONS, "statistics": ["count", "sum", "mean"]},
        recipient="bank",
    )
    approve_all(net, sub.task_id)
    assert net.wait_final(sub.task_id, timeout=3600) is TaskStatus.COMPLETED
    seconds = time.perf_counter() - t0
    got = read_result(bank.ctx, sub.task_id)["result"]["groups"]
    assert sum(g["count"] for g in got.values()) == sum(len(o.values["income"]) for o in net.orgs)
    return seconds


def run(rows: int, repeat: int, say: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="pcn-bench-relay-"))
    os.environ["PCN_RUN_DIR"] = str(work / "run")
    times: dict[str, dict[str, list[float]]] = {m: {"psi_ot": [], "stats": []} for m in ("direct", "relay")}
    relay_counters: dict[str, int] = {}
    loads = {"start": ecdh_bench.load()}
    expected: set[str] | None = None
    try:
        for mode in ("direct", "relay"):  # each on a chain of its own (organisation names are unique per chain)
            port = free_port()
            st = anvil.up(port=port, state_file=work / mode / "anvil.json")
            dep = deploy(st.rpc_url, out=work / mode / "deployment.json")
            relay = RelayProcess(work / mode / "relay", dep) if mode == "relay" else None
            kw: dict[str, Any] = {"relay": relay, "outbound_only": ("telecom",)} if relay is not None else {}
            say(f"{mode}: starting two nodes with {rows:,} rows each")
            net = build_network(work / mode, dep, ["bank", "telecom"], rows=rows, message_timeout=1800.0, **kw)
            try:
                if expected is None:
                    expected = set(net.orgs[0].values["customer_id"].tolist()) & set(
                        net.orgs[1].values["customer_id"].tolist()
                    )
                for i in range(repeat):
                    loads[f"{mode}_{i}"] = ecdh_bench.load()
                    end = ecdh_bench.pcn_end_to_end(net, time.perf_counter(), "psi-ot")
                    assert set(end["ids"]) == expected, f"{mode}: the intersection differs"
                    times[mode]["psi_ot"].append(end["seconds"])
                    times[mode]["stats"].append(stats_task(net))
                    last = {t: round(v[-1], 2) for t, v in times[mode].items()}
                    say(f"{mode} run {i + 1}: psi-ot {last['psi_ot']} s, stats {last['stats']} s")
                if relay is not None:
                    store = RelayStore(redis.Redis.from_url(relay.redis.url))
                    relay_counters = store.stats()[net.by_name("telecom").address]
            finally:
                net.stop()
                net.redis.stop()
                if relay is not None:
                    relay.stop()
                anvil.down(port)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {m: {t: statistics.median(v) for t, v in ts.items()} for m, ts in times.items()}
    return {
        "rows_per_party": rows,
        "repeat": repeat,
        "seconds": times,
        "median_seconds": {m: {t: round(v, 3) for t, v in ts.items()} for m, ts in med.items()},
        "ratio_vs_direct_psi_ot": round(med["relay"]["psi_ot"] / med["direct"]["psi_ot"], 3),
        "ratio_vs_direct_stats": round(med["relay"]["stats"] / med["direct"]["stats"], 3),
        "relay_counters_telecom": relay_counters,
        "intersection_size": len(expected or ()),
        "load_average_1_5_15": loads,
        "command": "python bench/relay.py " + " ".join(sys.argv[1:]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows (IDs) per party")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each task per configuration")
    ap.add_argument("--no-readme", action="store_true", help="do not touch bench/README.md")
    args = ap.parse_args()
    out = run(args.rows, args.repeat, lambda m: print(m, flush=True))
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "relay.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["median_seconds"]), out["ratio_vs_direct_psi_ot"], out["ratio_vs_direct_stats"])
    if args.no_readme:
        return
    d, r = out["median_seconds"]["direct"], out["median_seconds"]["relay"]
    c = out["relay_counters_telecom"]
    row = (
        f"| relay | two real nodes, {args.rows:,} rows each: psi-ot of the IDs and a stats task (count, sum, mean by "
        f"region), direct delivery vs the telecom outbound-only behind `pcn relay serve` | relay: psi-ot "
        f"{r['psi_ot']:.2f} s, stats {r['stats']:.2f} s (medians of {args.repeat}) | direct: psi-ot "
        f"{d['psi_ot']:.2f} s, stats {d['stats']:.2f} s | psi-ot {out['ratio_vs_direct_psi_ot']}x, stats "
        f"{out['ratio_vs_direct_stats']}x | relay, for the telecom: {c.get('accepted', 0):,} items accepted, "
        f"{c.get('delivered', 0):,} delivered, its Redis with AOF fsync always; end to end = submit to the last "
        f"receipt; 2 cores, load {out['load_average_1_5_15']['start'][0]} at start (`{out['command']}`) |\n"
    )
    replace_row(BENCH / "README.md", "| relay |", row)


if __name__ == "__main__":
    main()
