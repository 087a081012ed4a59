"""Keyword private query (匿踪查询): pcn's `private-query` protocol on a 1M-row table.

A data holder ("0xholder") has a table of ROWS rows (default 1,000,000): a key column
"customer_id" (like "C000123456", distinct, drawn from a pool of 2·ROWS) and two value
columns, "income" and "region" (as `write_dataset` makes them). A querier ("0xquerier")
looks keys up: batches of 1 key (a hit) and of 1,000 keys (500 hits, 500 misses). Each
party runs in its own process, with its own spawned `ProcessPoolExecutor(os.cpu_count())` as
`parallel_map` (as a node's compute pool), the two linked by multiprocessing queues; one
batch is one task (fresh task id and seeds, the protocol's run from start() to done at both
parties).

The holder process lives across tasks, like a node: its task services (`TaskServices`) hold
one `MemoryTableCache` for all its tasks and a fixed HMAC-SHA256 key derivation as
`epoch_key` (a stand-in for the node's organisation-level KDF), so the encrypted table built
for the first task of the epoch is reused by the next ones.

Measured:
  - cold: the first task, cache empty: the holder's preprocessing (group rows, hash to curve,
    one X25519 per key, seal every entry, sort; `preprocess_seconds`) and the whole task;
  - warm: per-batch latency (dispatch of the task to both parties -> both done), REPEAT
    times per batch size, median and all runs, with each party's compute split, in two
    modes side by side: "kept", the querier's node keeps the encrypted table it received
    (its task cache, as a node's on-disk cache) so the holder sends only the table head, and
    "shipped", a querier without a cache, which gets the whole table with every query (pcn's
    private query before the querier kept its copy); ratios kept / shipped;
  - bytes on the wire per batch: sum of the message payloads, by direction and kind;
  - peak memory per party: VmHWM of the party's process + of each of its pool workers;
  - CPU seconds per party and batch.
Every result is checked against the table (hits with their values, misses).

Peer: none. No package installable here from PyPI runs a keyword PIR / labeled PSI with
values: `apsi` (Microsoft APSI wrapper) ships only an sdist whose build fetches pybind11 and
vcpkg from GitHub (not reachable from this machine); `spu` 0.9.5 (SecretFlow) exposes PSI and
unbalanced PSI (membership only, no values) in Python and needs numpy<2 (the project uses
numpy 2); `oprf`/`voprf`/`pyoprf` are OPRF primitives, not a lookup system. Absolute figures
only.

    .venv/bin/python bench/private_query.py [--rows 1000000] [--repeat 3] [--shipped-repeat N]

Writes bench/results/private_query.json (another table size: private_query_<rows>.json) and
the `| private-query |` row of bench/README.md for that table size.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pcn.algorithms.base import Message, PartyContext, TaskServices
from pcn.algorithms.private_query.encrypted import MemoryTableCache, table_id
from pcn.algorithms.private_query.protocol import PrivateQueryHolder, PrivateQueryProtocol, PrivateQueryQuerier
from pcn.data.table import Table

BENCH = Path(__file__).resolve().parent
QUERIER, HOLDER = "0xquerier", "0xholder"
PARTICIPANTS = [QUERIER, HOLDER]
KEY, VALUES = "customer_id", ["income", "region"]
REGIONS = ["north", "south", "east", "west"]
EPOCH = "bench-epoch-1"
PARAMS = {"key_column": KEY, "query_column": KEY, "value_columns": VALUES, "epoch": EPOCH}
MASTER = hashlib.sha256(b"pcn/bench/private-query/organisation-master-key").digest()
SPAWN = mp.get_context("spawn")


def epoch_key(label: str) -> bytes:
    """The holder's organisation-level KDF stand-in: stable across tasks (so the cache is reused)."""
    return hmac.new(MASTER, label.encode(), hashlib.sha256).digest()


def holder_columns(rows: int, seed: int = 7) -> dict[str, list[str]]:
    """The holder's table: distinct keys from a pool of 2·rows, log-normal income, a region."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(2 * rows, rows, replace=False)
    income = np.round(rng.lognormal(10, 0.6, rows), 2)
    region = rng.choice(REGIONS, rows)
    return {
        KEY: [f"C{k:09d}" for k in ids.tolist()],
        "income": [f"{x:.2f}" for x in income.tolist()],
        "region": region.tolist(),
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _noop(x: int) -> int:
    return x


def context(me: str, task_id: int, pmap: Any, services: TaskServices) -> PartyContext:
    seed = hashlib.sha256(f"bench/pq/{me}/{task_id}".encode()).digest()
    return PartyContext(
        task_id,
        me,
        PARTICIPANTS,
        QUERIER,
        dict(PARAMS),
        seed,
        None,
        id_column=KEY,
        parallel_map=pmap,
        services=services,
    )


def _party_main(role: str, rows: int, processes: int, ctrl: Any, inbox: Any, peer: Any, out: Any) -> None:
    """One party's process: serves one task per command until it gets None."""
    table = None
    # the querier: with a cache ("kept") or without ("shipped"), chosen per task
    by_mode = {"kept": TaskServices(cache=MemoryTableCache(max_entries=1024)), "shipped": TaskServices()}
    if role == HOLDER:
        t0 = time.perf_counter()
        table = Table(holder_columns(rows))
        build = time.perf_counter() - t0
        holder_services = TaskServices(epoch_key=epoch_key, cache=MemoryTableCache())
        t0 = time.perf_counter()
        table_id(table, KEY, VALUES)
        tid = time.perf_counter() - t0
    with ProcessPoolExecutor(processes, mp_context=SPAWN) as pool:
        list(pool.map(_noop, range(4 * processes)))  # spawn the workers before any clock
        workers = [p.pid for p in pool._processes.values()]  # type: ignore[union-attr]

        def pmap(fn: Any, items: Any) -> list[Any]:
            return list(pool.map(fn, items))

        ready: dict[str, Any] = {"role": role, "peak_mib_idle": peak_mib()}
        if table is not None:
            ready.update({"table_build_seconds": round(build, 3), "table_id_seconds": round(tid, 3)})
        out.put(ready)
        while True:
            cmd = ctrl.get()
            if cmd is None:
                break
            task_id, keys, mode = cmd
            services = holder_services if role == HOLDER else by_mode[mode]
            data = table if role == HOLDER else Table({KEY: keys})
            party = PrivateQueryProtocol.create(context(role, task_id, pmap, services), data)
            sent: dict[str, int] = {}
            busy = 0.0

            def post(msgs: list[Message], sent: dict[str, int] = sent) -> None:
                for m in msgs:
                    sent[m.kind] = sent.get(m.kind, 0) + len(m.payload)
                    peer.put(m)

            cpu0 = time.process_time() + sum(proc_cpu(p) for p in workers)
            t0 = time.perf_counter()
            post(party.start())
            start_seconds = time.perf_counter() - t0
            busy += start_seconds
            while not party.done:
                msg = inbox.get()
                a = time.perf_counter()
                post(party.receive(msg))
                busy += time.perf_counter() - a
            wall = time.perf_counter() - t0
            cpu = time.process_time() + sum(proc_cpu(p) for p in workers) - cpu0
            res = party.result()
            out.put(
                {
                    "role": role,
                    "task_id": task_id,
                    "seconds": wall,
                    "start_seconds": start_seconds,
                    "busy_seconds": busy,
                    "cpu_seconds": cpu,
                    "bytes_sent_by_kind": sent,
                    "preprocess_seconds": party.preprocess_seconds if isinstance(party, PrivateQueryHolder) else 0.0,
                    "cache_hit": party.cache_hit if isinstance(party, PrivateQueryHolder) else None,
                    "warm": party.warm if isinstance(party, PrivateQueryQuerier) else None,
                    "result": None if res is None else json.loads(res),
                    "peak_mib": {"party_process": peak_mib(), "pool_workers": [peak_mib(p) for p in workers]},
                }
            )


class Parties:
    """The two party processes and the queues between them."""

    def __init__(self, rows: int, processes: int) -> None:
        to_q, to_h = SPAWN.Queue(), SPAWN.Queue()
        self.ctrl = {QUERIER: SPAWN.Queue(), HOLDER: SPAWN.Queue()}
        self.out = SPAWN.Queue()
        self.procs = [
            SPAWN.Process(
                target=_party_main, args=(QUERIER, rows, processes, self.ctrl[QUERIER], to_q, to_h, self.out)
            ),
            SPAWN.Process(target=_party_main, args=(HOLDER, rows, processes, self.ctrl[HOLDER], to_h, to_q, self.out)),
        ]
        for p in self.procs:
            p.start()
        self.ready = {r["role"]: r for r in (self._next(), self._next())}

    def _next(self) -> dict[str, Any]:
        """The next report of a party; a party that died fails the run instead of hanging it."""
        while True:
            try:
                return self.out.get(timeout=5)  # type: ignore[no-any-return]
            except queue.Empty:
                dead = [p.exitcode for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"a party process exited ({dead}); see its traceback above") from None

    def task(self, task_id: int, keys: list[str], mode: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.ctrl[HOLDER].put((task_id, None, mode))
        self.ctrl[QUERIER].put((task_id, keys, mode))
        got = {}
        for _ in range(2):
            r = self._next()
            r["seconds_since_dispatch"] = time.perf_counter() - t0
            got[r["role"]] = r
        got["wall"] = max(r["seconds_since_dispatch"] for r in got.values())
        return got

    def close(self) -> None:
        for q in self.ctrl.values():
            q.put(None)
        for p in self.procs:
            p.join(60)
            assert p.exitcode == 0, p.exitcode


def check(result: dict[str, Any], keys: list[str], truth: dict[str, dict[str, str]]) -> tuple[int, int]:
    hits, misses = result["hits"], set(result["misses"])
    for k in keys:
        if k in truth:
            assert hits.get(k) == [truth[k]], (k, hits.get(k), truth[k])
        else:
            assert k in misses, k
    assert len(hits) + len(misses) == len(set(keys)) and "unreadable" not in result
    return len(hits), len(misses)


def summary(run: dict[str, Any], keys: list[str], truth: dict[str, dict[str, str]]) -> dict[str, Any]:
    q, h = run[QUERIER], run[HOLDER]
    hits, misses = check(q["result"], keys, truth)
    h2q, q2h = h["bytes_sent_by_kind"], q["bytes_sent_by_kind"]
    return {
        "keys": len(keys),
        "hits": hits,
        "misses": misses,
        "latency_seconds": round(run["wall"], 3),
        "querier_result_seconds": round(q["seconds"], 3),
        "holder": {
            "seconds": round(h["seconds"], 3),
            "start_seconds_incl_table_fingerprint_and_cache_lookup": round(h["start_seconds"], 3),
            "busy_seconds": round(h["busy_seconds"], 3),
            "cpu_seconds": round(h["cpu_seconds"], 3),
            "cache_hit": h["cache_hit"],
            "preprocess_seconds": round(h["preprocess_seconds"], 3),
        },
        "querier": {
            "kept_copy_used": q["warm"],
            "seconds": round(q["seconds"], 3),
            "start_seconds_hash_and_blind": round(q["start_seconds"], 3),
            "busy_seconds": round(q["busy_seconds"], 3),
            "cpu_seconds": round(q["cpu_seconds"], 3),
        },
        "bytes_on_the_wire": {
            "holder_to_querier": sum(h2q.values()),
            "querier_to_holder": sum(q2h.values()),
            "holder_to_querier_by_kind": h2q,
            "querier_to_holder_by_kind": q2h,
        },
        "peak_mib_after": {
            "holder": h["peak_mib"],
            "querier": q["peak_mib"],
        },
    }


def machine() -> dict[str, Any]:
    import cryptography

    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "",
    )
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "numpy": np.__version__,
        "cryptography": cryptography.__version__,
        "shared": "other sessions' jobs ran on the same cores; see the load averages before each stage",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the holder's table")
    ap.add_argument("--repeat", type=int, default=3, help="warm runs per batch size")
    ap.add_argument(
        "--shipped-repeat", type=int, default=None, help="runs per batch size shipping the table (default: --repeat)"
    )
    ap.add_argument("--no-readme", action="store_true", help="do not touch bench/README.md")
    args = ap.parse_args()
    rows, processes = args.rows, os.cpu_count() or 1
    shipped_repeat = args.repeat if args.shipped_repeat is None else args.shipped_repeat
    if not 1 <= shipped_repeat <= args.repeat:
        ap.error("--shipped-repeat takes 1 to --repeat runs")
    t = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t:6.1f}s] {msg}", flush=True)

    cols = holder_columns(rows)
    truth = {k: {"income": i, "region": r} for k, i, r in zip(cols[KEY], cols["income"], cols["region"], strict=True)}
    rng = np.random.default_rng(11)
    present = cols[KEY]
    hit_keys = [present[i] for i in rng.choice(rows, 501, replace=False).tolist()]
    miss_pool = (k for k in (f"C{x:09d}" for x in rng.permutation(2 * rows).tolist()) if k not in truth)
    miss_keys = [next(miss_pool) for _ in range(500)]
    batch_1 = [hit_keys[500]]
    batch_1000 = hit_keys[:500] + miss_keys
    cold_keys = [f"C{x:09d}" for x in range(2 * rows, 2 * rows + 500)] + hit_keys[:250] + present[-250:]
    del cols

    loads: dict[str, list[float]] = {"start": load()}
    parties = Parties(rows, processes)
    say(f"parties up: {parties.ready}")
    try:
        loads["before_cold"] = load()
        cold = summary(parties.task(1, cold_keys, "kept"), cold_keys, truth)
        assert not cold["holder"]["cache_hit"]
        say(
            f"cold (cache empty), 1,000 keys: {cold['latency_seconds']} s, "
            f"preprocessing {cold['holder']['preprocess_seconds']} s"
        )
        warm: dict[str, list[dict[str, Any]]] = {"1": [], "1000": []}
        shipped: dict[str, list[dict[str, Any]]] = {"1": [], "1000": []}
        task_id = 2
        loads["before_warm"] = load()
        for turn in range(args.repeat):
            for name, keys in (("1", batch_1), ("1000", batch_1000)):
                modes = (("shipped", shipped), ("kept", warm)) if turn < shipped_repeat else (("kept", warm),)
                for mode, runs in modes:
                    s = summary(parties.task(task_id, keys, mode), keys, truth)
                    assert s["holder"]["cache_hit"], "the warm run rebuilt the encrypted table"
                    assert s["querier"]["kept_copy_used"] is (mode == "kept")
                    runs[name].append(s)
                    task_id += 1
                    say(
                        f"warm, {mode}, {len(keys):,} key(s): {s['latency_seconds']} s, "
                        f"wire {s['bytes_on_the_wire']['holder_to_querier']:,} B to the querier"
                    )
        loads["end"] = load()
    finally:
        parties.close()

    def med(name: str, path: list[str], runs: dict[str, list[dict[str, Any]]] = warm) -> float:
        vals = []
        for s in runs[name]:
            v: Any = s
            for p in path:
                v = v[p]
            vals.append(v)
        return round(statistics.median(vals), 3)

    last = {n: w[-1] for n, w in warm.items()}
    peak_holder = last["1000"]["peak_mib_after"]["holder"]
    peak_querier = max(
        (s["peak_mib_after"]["querier"] for w in warm.values() for s in w),
        key=lambda m: m["party_process"] + sum(m["pool_workers"]),
    )
    holder_ready = parties.ready[HOLDER]
    pre = cold["holder"]["preprocess_seconds"]
    out = {
        "benchmark": "private-query",
        "table_rows": rows,
        "value_columns": VALUES,
        "compute_processes_per_party": processes,
        "holder_table_build_seconds": holder_ready["table_build_seconds"],
        "holder_table_fingerprint_seconds": holder_ready["table_id_seconds"],
        "holder_table_fingerprint_definition": (
            "table_id over the key and value columns, recomputed by the holder at the start of every task (cold "
            "or warm) to find the cache entry"
        ),
        "preprocessing_cold_seconds": pre,
        "preprocessing_rows_per_second": round(rows / pre) if pre else None,
        "cold_task": cold,
        "warm_latency_seconds_median": {n: med(n, ["latency_seconds"]) for n in warm},
        "warm_latency_seconds_all": {n: [s["latency_seconds"] for s in w] for n, w in warm.items()},
        "warm_runs": warm,
        "bytes_on_the_wire_per_batch": {n: last[n]["bytes_on_the_wire"] for n in warm},
        "shipped_latency_seconds_median": {n: med(n, ["latency_seconds"], shipped) for n in shipped},
        "shipped_runs": shipped,
        "shipped_bytes_on_the_wire_per_batch": {n: shipped[n][-1]["bytes_on_the_wire"] for n in shipped},
        "ratio_vs_table_per_query": {
            n: {
                "latency": round(med(n, ["latency_seconds"]) / med(n, ["latency_seconds"], shipped), 4),
                "bytes": round(
                    sum(last[n]["bytes_on_the_wire"][d] for d in ("holder_to_querier", "querier_to_holder"))
                    / sum(shipped[n][-1]["bytes_on_the_wire"][d] for d in ("holder_to_querier", "querier_to_holder")),
                    6,
                ),
            }
            for n in warm
        },
        "ratio_definition": "kept / shipped, warm medians and bytes of one batch both ways, same run, same tasks",
        "encrypted_table_bytes": shipped["1"][-1]["bytes_on_the_wire"]["holder_to_querier_by_kind"].get("table", 0),
        "peak_memory_mib": {
            "holder": {**peak_holder, "sum": round(peak_holder["party_process"] + sum(peak_holder["pool_workers"]), 1)},
            "querier": {
                **peak_querier,
                "sum": round(peak_querier["party_process"] + sum(peak_querier["pool_workers"]), 1),
            },
            "definition": (
                "VmHWM of the party's process (holder: holds the table, the cache and every task's messages) + "
                "VmHWM of each of its pool workers, after the last task; an upper bound (the peaks need not coincide)"
            ),
        },
        "peer": None,
        "peer_note": (
            "no peer: nothing installable here from PyPI runs keyword PIR / labeled PSI with values (apsi 0.3.0: "
            "sdist only, its build fetches pybind11 and vcpkg from GitHub; spu 0.9.5: PSI and unbalanced PSI "
            "(membership only) in Python, needs numpy<2; oprf / voprf / pyoprf: OPRF primitives only)"
        ),
        "load_average_1_5_15": loads,
        "machine": machine(),
        "command": f"python bench/private_query.py --rows {rows} --repeat {args.repeat}"
        + (f" --shipped-repeat {shipped_repeat}" if shipped_repeat != args.repeat else ""),
        "total_seconds": round(time.perf_counter() - t, 1),
    }
    (BENCH / "results").mkdir(exist_ok=True)
    # one file and one README row per table size: the 1 M-row run is `private_query.json`
    name = "private_query.json" if rows == 1_000_000 else f"private_query_{rows}.json"
    (BENCH / "results" / name).write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: out[k]
                for k in (
                    "preprocessing_cold_seconds",
                    "warm_latency_seconds_median",
                    "shipped_latency_seconds_median",
                    "ratio_vs_table_per_query",
                    "bytes_on_the_wire_per_batch",
                    "peak_memory_mib",
                )
            },
            indent=2,
        )
    )
    if not args.no_readme:
        _readme_row(out)


def _readme_row(out: dict[str, Any]) -> None:
    lat, wire, mem = out["warm_latency_seconds_median"], out["bytes_on_the_wire_per_batch"], out["peak_memory_mib"]
    ship, ratio = out["shipped_latency_seconds_median"], out["ratio_vs_table_per_query"]
    w1, w1k = out["warm_runs"]["1"][-1], out["warm_runs"]["1000"][-1]
    mb = 1e6
    row = (
        f"| private-query | keyword query (OPRF on X25519, encrypted table) on a {out['table_rows']:,}-row table "
        f"(key + 2 value columns), batches of 1 key and 1,000 keys (half hits), each party in its own process with a "
        f"pool of {out['compute_processes_per_party']} | "
        f"holder preprocessing (cold, once per table and epoch) {out['preprocessing_cold_seconds']} s "
        f"({out['preprocessing_rows_per_second']:,} rows/s); warm latency per batch, the querier keeping the "
        f"table (median of {len(out['warm_latency_seconds_all']['1'])}): 1 key {lat['1']} s, 1,000 keys "
        f"{lat['1000']} s; wire per batch: holder to querier {wire['1']['holder_to_querier']:,} B (1 key) / "
        f"{wire['1000']['holder_to_querier']:,} B (1,000 keys), querier to holder "
        f"{wire['1']['querier_to_holder']:,} B / {wire['1000']['querier_to_holder']:,} B; "
        f"peak MiB per party (process + pool): holder {mem['holder']['sum']:,.0f}, querier "
        f"{mem['querier']['sum']:,.0f} | the same protocol with the table shipped per query (pcn before the "
        f"querier kept it): 1 key {ship['1']} s, 1,000 keys {ship['1000']} s | latency x{ratio['1']['latency']} "
        f"(1 key) / x{ratio['1000']['latency']} (1,000 keys), bytes x{ratio['1']['bytes']} / "
        f"x{ratio['1000']['bytes']} | "
        f"the encrypted table ({out['encrypted_table_bytes'] / mb:.1f} MB) travels once per table version and "
        f"epoch (the cold run); warm, the "
        f"holder's start (table fingerprint {out['holder_table_fingerprint_seconds']} s, cache lookup, table "
        f"check, chunking) takes {w1['holder']['start_seconds_incl_table_fingerprint_and_cache_lookup']} s and "
        f"the querier is busy {w1['querier']['busy_seconds']} s (1 key) / {w1k['querier']['busy_seconds']} s "
        f"(1,000 keys); cold holder CPU {out['cold_task']['holder']['cpu_seconds']} s; no peer: apsi 0.3.0 is an "
        f"sdist whose build fetches from GitHub, spu 0.9.5 has no keyword PIR in Python; {out['machine']['cpus']} "
        f"cores, shared: load {out['load_average_1_5_15']['before_cold'][0]} before the cold run "
        f"(`{out['command']}`) |\n"
    )
    readme = BENCH / "README.md"
    lines = readme.read_text().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    same = f"on a {out['table_rows']:,}-row table"

    def ours(ln: str) -> bool:
        return ln.startswith("| private-query |") and same in ln

    others = [i for i, ln in enumerate(lines) if ln.startswith("| private-query |")]
    at = next((i for i, ln in enumerate(lines) if ours(ln)), others[-1] + 1 if others else len(lines))
    lines = [ln for ln in lines if not ours(ln)]
    readme.write_text("".join([*lines[:at], row, *lines[at:]]))


if __name__ == "__main__":
    main()
