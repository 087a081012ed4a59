"""Two-party PSI: pcn vs OpenMined's `openmined-psi`, side by side in one run, same sets,
at several sizes, with the elliptic-curve floor and the peak memory of each party.

Two organisations ("bank", the recipient, and "telecom") each hold N customer IDs (like
"C000123456") drawn from one pool of 2N, so about half overlap. The sets are the ones
`build_network` / `write_dataset` write to each organisation's CSV, read back from those
files, so every measurement computes the same intersection. For each size N:

1. openmined-psi (ECDH-PSI over P-256 in C++, Python bindings), in one process as its API
   works: telecom is the server, bank the client with reveal_intersection=True; server
   setup (raw data structure: exact, like pcn's) + client request + server response +
   client intersection, wall time and CPU time.
2. The cost of one X25519 scalar multiplication on this machine, now: the median of 20,000
   timed calls through the code path pcn's blinding uses (`priv.exchange(from_public_bytes(u))`,
   the binding `_apply_keys` calls; also through the public `X25519PublicKey` API), and the
   wall time of 20,000 calls run at once in each of `processes` spawned processes.
3. pcn's protocol: `run_local` of two `PsiProtocol` parties in one fresh (spawned) process,
   with a `ProcessPoolExecutor(os.cpu_count())` (spawn, like the node runtime's compute pool)
   as their `parallel_map`: the crypto compared apples to apples (no network, no chain, no
   verification). Wall time, CPU time (driver + pool workers, from /proc), the number of
   X25519 multiplications (elements x keys of every job the protocol hands to `pmap`), and the
   peak RSS (VmHWM) of the driver (both parties) and of each pool worker.
   The floor: multiplications x the median cost of one (2) / processes;
   ratio_vs_floor = protocol wall seconds / floor seconds.
4. pcn with each party in its own process (the two linked by multiprocessing queues, each
   with its own spawned pool of os.cpu_count() processes, as each node has): wall time, and
   the peak memory per party = VmHWM of the party's process + VmHWM of each of its pool
   workers (an upper bound: peaks need not coincide). Every X25519 multiplication in the pool
   workers is counted here by a wrapper around the binding (a check of the count in 3).
5. Optionally, pcn's protocol on one core (no pool), as openmined-psi runs.
6. pcn end to end over real nodes (real anvil, Redis, Celery workers, signed and encrypted
   HTTP): submit -> approvals -> every node verifies the chain and fingerprints its file,
   runs the protocol, receipts -> completed, wall time, with each node's phase timings from
   its receipt's action-log entry, and the peak RSS (VmHWM) of every process of each node
   (mailbox, watcher, Celery master, prefork child, compute-pool workers) after the task.

Asserts all intersections are equal to Python's. Ratios are pcn / openmined (below 1: pcn
is faster); speed-ups are openmined / pcn. The machine is shared: the load averages before
each stage are recorded.

    .venv/bin/python bench/psi.py [--sizes 100000,1000000] [--workers W]
        [--one-core-sizes 100000] [--split-sizes all] [--e2e-sizes all]

Writes bench/results/psi.json and the `| psi |` rows of bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from pcn.algorithms.base import PartyContext, run_local
from pcn.algorithms.psi import protocol as psi_protocol
from pcn.algorithms.psi.protocol import PsiProtocol, blind_piece, hash_blind_piece
from pcn.data.table import Table

BENCH = Path(__file__).resolve().parent
ID_COLUMN = "customer_id"
WHO = ["0xbank", "0xtelecom"]  # the recipient first
X25519_SAMPLES = 20_000
MIB = 1024 * 1024
TARGETS = {"speedup_vs_openmined_psi": 3.0, "ratio_vs_floor": 1.5, "peak_mib_per_party_at_1m": 1024}
SPAWN = mp.get_context("spawn")


# -- small helpers ---------------------------------------------------------------------------


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def read_ids(path: Path) -> list[str]:
    """The customer_id column of a CSV that write_dataset wrote, in file order."""
    with path.open(newline="") as f:
        rows = csv.reader(f)
        col = next(rows).index(ID_COLUMN)
        return [r[col] for r in rows]


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of a process, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(rest.split()[0])
    return out


def peak_mib(pid: int | str = "self") -> float:
    return round(proc_status(pid).get("VmHWM", 0) / 1024, 1)


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pool_pids(pool: ProcessPoolExecutor) -> list[int]:
    return [p.pid for p in pool._processes.values()]  # type: ignore[union-attr]


def warm(pool: ProcessPoolExecutor, processes: int) -> None:
    """Start every worker (and import the protocol there) before any clock starts."""
    list(pool.map(blind_piece, [((bytes([9]) * 32,), bytes([9]) + bytes(31))] * (4 * processes)))


def job_ops(fn: Any, job: Any) -> int:
    """X25519 multiplications one job of the PSI protocol asks for (elements x keys)."""
    if fn is blind_piece:
        keys, packed = job
        return len(keys) * len(packed) // psi_protocol.ELEMENT
    if fn is hash_blind_piece:
        _prefix, keys, idents = job
        return len(keys) * len(idents)
    raise AssertionError(f"unexpected work function {fn!r}")


class CountingPsi(PsiProtocol):
    """PsiProtocol whose `pmap` adds up the multiplications of the jobs it hands on (all of
    them, including the single-job calls that `Protocol.pmap` runs in place)."""

    ops_counter: dict[str, int] = {}  # noqa: RUF012 - per process, keyed by party

    def pmap(self, fn: Any, items: Any) -> list[Any]:
        CountingPsi.ops_counter[self.ctx.me] = CountingPsi.ops_counter.get(self.ctx.me, 0) + sum(
            job_ops(fn, j) for j in items
        )
        return super().pmap(fn, items)


def make_party(me: str, ids: list[str], pmap: Any) -> CountingPsi:
    return CountingPsi.create(
        PartyContext(
            1,
            me,
            WHO,
            WHO[0],
            {},
            hashlib.sha256(f"bench/psi/{me}".encode()).digest(),
            None,
            id_column=ID_COLUMN,
            parallel_map=pmap,
        ),
        Table({ID_COLUMN: ids}),
    )


# -- 1. the peer -----------------------------------------------------------------------------


def openmined(client_ids: list[str], server_ids: list[str]) -> dict[str, Any]:
    """openmined-psi, server setup to client intersection, in one process (its API's shape)."""
    import private_set_intersection.python as om

    c0, t0 = time.process_time(), time.perf_counter()
    server = om.server.CreateWithNewKey(True)
    client = om.client.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(client_ids), server_ids, om.DataStructure.RAW)
    t1 = time.perf_counter()
    request = client.CreateRequest(client_ids)
    t2 = time.perf_counter()
    response = server.ProcessRequest(request)
    t3 = time.perf_counter()
    hits = client.GetIntersection(setup, response)
    t4, c4 = time.perf_counter(), time.process_time()
    return {
        "seconds": t4 - t0,
        "cpu_seconds": c4 - c0,
        "ids": {client_ids[i] for i in hits},
        "phases": {
            "server_setup": round(t1 - t0, 3),
            "client_request": round(t2 - t1, 3),
            "server_response": round(t3 - t2, 3),
            "client_intersection": round(t4 - t3, 3),
            "bytes_on_the_wire": len(setup.SerializeToString())
            + len(request.SerializeToString())
            + len(response.SerializeToString()),
        },
        "peak_mib_process": peak_mib(),  # of the whole bench process (includes the sets)
    }


# -- 2. one X25519 multiplication ------------------------------------------------------------


def _sample_points(n: int, seed: int) -> list[bytes]:
    """n u-coordinates as the protocol makes them (RFC 9380 hash to Curve25519)."""
    return psi_protocol.hash_elements(b"bench/x25519", [(seed * n + i).to_bytes(8, "big") for i in range(n)])


def x25519_cost(samples: int = X25519_SAMPLES) -> dict[str, float]:
    """Median and mean seconds of one multiplication, timed one by one, in this process."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    priv = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"bench/x25519/key").digest())
    exchange, clock = priv.exchange, time.perf_counter_ns
    points = _sample_points(samples, 0)
    out: dict[str, float] = {}
    for name, public in (("pcn_path", psi_protocol._public_key), ("public_api", X25519PublicKey.from_public_bytes)):
        for u in points[:500]:  # warm up
            exchange(public(u))
        times = []
        t0 = time.perf_counter()
        for u in points:
            a = clock()
            exchange(public(u))
            times.append(clock() - a)
        wall = time.perf_counter() - t0
        out[f"{name}_median_us"] = round(statistics.median(times) / 1e3, 3)
        out[f"{name}_mean_us"] = round(wall / samples * 1e6, 3)
    return out


def _x25519_batch(seed: int) -> float:
    """Wall seconds of X25519_SAMPLES multiplications on the pcn path, in a pool worker."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    exchange = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"bench/x25519/key").digest()).exchange
    public = psi_protocol._public_key
    points = _sample_points(X25519_SAMPLES, seed)
    t0 = time.perf_counter()
    for u in points:
        exchange(public(u))
    return time.perf_counter() - t0


def x25519_parallel(processes: int) -> dict[str, float]:
    """The same number of multiplications in each of `processes` spawned workers at once:
    what `processes` cores give now (the shared machine's other load included)."""
    with ProcessPoolExecutor(processes, mp_context=SPAWN) as pool:
        list(pool.map(_x25519_batch, range(processes)))  # spawn + warm
        t0 = time.perf_counter()
        per = list(pool.map(_x25519_batch, range(processes, 2 * processes)))
        wall = time.perf_counter() - t0
    total = processes * X25519_SAMPLES
    return {
        "processes": processes,
        "multiplications": total,
        "wall_seconds": round(wall, 3),
        "effective_us_per_multiplication": round(wall / total * 1e6, 3),
        "per_process_us": [round(s / X25519_SAMPLES * 1e6, 3) for s in per],
    }


# -- 3. pcn's protocol, both parties in one process ------------------------------------------


def _local_child(recipient_ids: list[str], other_ids: list[str], processes: int, out: Any) -> None:
    """In a spawned process: run_local of the two parties over a spawned pool; report back."""
    with ProcessPoolExecutor(processes, mp_context=SPAWN) as pool:
        warm(pool, processes)
        workers = pool_pids(pool)

        def pmap(fn: Any, items: Any) -> list[Any]:
            return list(pool.map(fn, items))

        parties = [make_party(me, ids, pmap) for me, ids in zip(WHO, [recipient_ids, other_ids], strict=True)]
        cpu0 = time.process_time() + sum(proc_cpu(p) for p in workers)
        t0 = time.perf_counter()
        transcript = run_local(parties)
        wall = time.perf_counter() - t0
        cpu = time.process_time() + sum(proc_cpu(p) for p in workers) - cpu0
        memory = {"driver_both_parties": peak_mib(), "pool_workers": [peak_mib(p) for p in workers]}
    result = json.loads(parties[0].result() or b"{}")
    out.put(
        {
            "seconds": wall,
            "cpu_seconds": cpu,
            "ids": result["ids"],
            "multiplications": dict(CountingPsi.ops_counter),
            "messages": len(transcript),
            "bytes_on_the_wire": sum(len(m.payload) for m in transcript),
            "peak_mib": memory,
        }
    )


def pcn_local(recipient_ids: list[str], other_ids: list[str], processes: int) -> dict[str, Any]:
    q = SPAWN.Queue()
    proc = SPAWN.Process(target=_local_child, args=(recipient_ids, other_ids, processes, q))
    proc.start()
    got = q.get()
    proc.join()
    assert proc.exitcode == 0, proc.exitcode
    return got


# -- 4. pcn, one process per party -----------------------------------------------------------

_COUNT = [0]


def _counting_public(u: bytes) -> Any:
    _COUNT[0] += 1
    return _REAL_PUBLIC(u)


_REAL_PUBLIC = psi_protocol._public_key


def _counting_blind_piece(job: Any) -> tuple[tuple[bytes, list[int]], int]:
    _COUNT[0] = 0
    return _REAL_BLIND(job), _COUNT[0]


def _counting_hash_blind_piece(job: Any) -> tuple[tuple[bytes, list[int]], int]:
    _COUNT[0] = 0
    return _REAL_HASH_BLIND(job), _COUNT[0]


_REAL_BLIND, _REAL_HASH_BLIND = blind_piece, hash_blind_piece


def _instrument_worker() -> None:
    """Pool initializer: every multiplication in `_apply_keys` goes through the binding it
    reads from the module global `_public_key`; count those calls."""
    psi_protocol._public_key = _counting_public


def _party_child(
    index: int, ids: list[str], processes: int, inbox: Any, peer: Any, ready: Any, go: Any, out: Any
) -> None:
    me = WHO[index]
    _instrument_worker()  # single-job pmap calls run in this process: count those too
    with ProcessPoolExecutor(processes, mp_context=SPAWN, initializer=_instrument_worker) as pool:
        warm(pool, processes)
        workers = pool_pids(pool)
        counted = [0]
        swap = {blind_piece: _counting_blind_piece, hash_blind_piece: _counting_hash_blind_piece}

        def pmap(fn: Any, items: Any) -> list[Any]:
            res = list(pool.map(swap[fn], items))
            counted[0] += sum(n for _, n in res)
            return [r for r, _ in res]

        party = make_party(me, ids, pmap)
        _COUNT[0] = 0
        ready.put(index)
        go.wait()
        cpu0 = time.process_time() + sum(proc_cpu(p) for p in workers)
        t0 = time.perf_counter()
        for m in party.start():
            peer.put(m)
        while not party.done:
            for m in party.receive(inbox.get()):
                peer.put(m)
        wall = time.perf_counter() - t0
        cpu = time.process_time() + sum(proc_cpu(p) for p in workers) - cpu0
        own = peak_mib()
        pool_peaks = [peak_mib(p) for p in workers]
    res = party.result()
    out.put(
        {
            "party": me,
            "seconds": wall,
            "cpu_seconds": cpu,
            "ids": None if res is None else json.loads(res)["ids"],
            "multiplications_structural": CountingPsi.ops_counter.get(me, 0),
            "multiplications_counted_in_workers": counted[0] + _COUNT[0],
            "peak_mib": {
                "party_process": own,
                "pool_workers": pool_peaks,
                "sum": round(own + sum(pool_peaks), 1),
            },
        }
    )


def pcn_split(recipient_ids: list[str], other_ids: list[str], processes: int) -> dict[str, Any]:
    inboxes = [SPAWN.Queue(), SPAWN.Queue()]
    ready, out, go = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    procs = [
        SPAWN.Process(target=_party_child, args=(i, ids, processes, inboxes[i], inboxes[1 - i], ready, go, out))
        for i, ids in enumerate([recipient_ids, other_ids])
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get()
    t0 = time.perf_counter()
    go.set()
    got = [out.get(), out.get()]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
        assert p.exitcode == 0, p.exitcode
    by = {g["party"]: g for g in got}
    return {"seconds": wall, "parties": by, "ids": by[WHO[0]]["ids"]}


# -- 5. one core -----------------------------------------------------------------------------


def pcn_one_core(recipient_ids: list[str], other_ids: list[str]) -> dict[str, Any]:
    parties = [make_party(me, ids, None) for me, ids in zip(WHO, [recipient_ids, other_ids], strict=True)]
    c0, t0 = time.process_time(), time.perf_counter()
    run_local(parties)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": wall, "cpu_seconds": cpu, "ids": json.loads(parties[0].result() or b"{}")["ids"]}


# -- 6. end to end over real nodes -----------------------------------------------------------


def node_memory(org: Any) -> dict[str, Any]:
    """Peak RSS of every live process of an organisation's node, grouped by service (each
    service is started in its own session; its Celery children and compute pool stay in it)."""
    run = json.loads((org.config.data_path / "run" / "node.json").read_text())["pids"]
    sessions = {int(pid): name for name, pid in run.items()}
    procs: dict[str, list[dict[str, Any]]] = {name: [] for name in run}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            sid = int(stat[3])
            if sid not in sessions:
                continue
            st = proc_status(d.name)
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue
        procs[sessions[sid]].append(
            {
                "pid": int(d.name),
                "peak_mib": round(st.get("VmHWM", 0) / 1024, 1),
                "rss_mib": round(st.get("VmRSS", 0) / 1024, 1),
                "cmd": cmd[:90],
            }
        )
    total = sum(p["peak_mib"] for ps in procs.values() for p in ps)
    worker = sum(p["peak_mib"] for p in procs.get("worker", []))
    return {
        "processes": procs,
        "sum_peak_mib_all_processes": round(total, 1),
        "sum_peak_mib_worker_tree": round(worker, 1),
        "sum_rss_mib_all_processes": round(sum(p["rss_mib"] for ps in procs.values() for p in ps), 1),
        "largest_process_peak_mib": max((p["peak_mib"] for ps in procs.values() for p in ps), default=0.0),
    }


def pcn_end_to_end(net: Any, t_start: float, algorithm: str = "psi") -> dict[str, Any]:
    """Submit a two-party PSI of bank's and telecom's datasets (`algorithm`: "psi" or
    "psi-ot") on a running network and time it to the last receipt."""
    from pcn.chain.types import TaskStatus
    from pcn.devnet.localnet import approve_all
    from pcn.runtime.operations import read_result, submit_task

    bank = net.by_name("bank")
    telecom = net.by_name("telecom")
    idle = {o.name: node_memory(o) for o in net.orgs}  # the nodes up and idle, before the task
    t0, t0_wall = time.perf_counter(), time.time()
    sub = submit_task(
        bank.ledger,
        algorithm=algorithm,
        dataset_ids=[bank.dataset_id, telecom.dataset_id],
        params={},
        recipient="bank",
        deadline_in=3 * 3600,
    )
    t_submitted = time.perf_counter()
    approve_all(net, sub.task_id)
    t_approved = time.perf_counter()
    status = net.wait_final(sub.task_id, timeout=3600)
    e2e_wall = time.perf_counter() - t0
    assert status is TaskStatus.COMPLETED, status
    got = read_result(bank.ctx, sub.task_id)
    assert got["matches_chain"]
    memory = {o.name: node_memory(o) for o in net.orgs}
    for name, m in memory.items():
        m["idle_before_task_sum_rss_mib"] = idle[name]["sum_rss_mib_all_processes"]
        m["idle_before_task_sum_peak_mib"] = idle[name]["sum_peak_mib_all_processes"]
        m["task_increment_mib"] = round(m["sum_peak_mib_all_processes"] - idle[name]["sum_rss_mib_all_processes"], 1)
    redis_peak = peak_mib(net.redis.proc.pid)

    per_node: dict[str, dict[str, float]] = {}
    timeline: dict[str, dict[str, float]] = {}  # each node's log entries for the task, s after submit
    for o in net.orgs:
        entries = [e for e in o.ctx.log.entries() if e.task_id == sub.task_id]
        per_node[o.name] = next(e for e in entries if e.action == "receipt").data["timings"]
        timeline[o.name] = {e.action: round(e.at - t0_wall, 3) for e in entries}

    def share(keys: list[str], subtract: list[str] | None = None) -> float:
        """Mean over nodes of the phases' seconds, as a share of the end-to-end wall time."""
        vals = [
            sum(tm.get(k, 0.0) for k in keys) - sum(tm.get(k, 0.0) for k in subtract or []) for tm in per_node.values()
        ]
        return float(np.mean(vals)) / e2e_wall

    requester_chain = t_approved - t0
    timed = ["wait_params", "verify", "chain_start", "protocol", "chain_receipt"]
    dispatch = {
        name: round(timeline[name]["verify"] - tm.get("verify", 0.0) - tm.get("wait_params", 0.0) - requester_chain, 3)
        for name, tm in per_node.items()
    }
    last_receipt = max(tl["receipt"] for tl in timeline.values())
    return {
        "seconds": e2e_wall,
        "ids": got["result"]["ids"],
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
        "share_other": round(1.0 - requester_chain / e2e_wall - share(timed), 3),
        "dispatch_seconds_after_approvals": dispatch,
        "share_dispatch": round(float(np.mean(list(dispatch.values()))) / e2e_wall, 3),
        "seconds_from_last_receipt_to_completed_seen": round(e2e_wall - last_receipt, 3),
        "per_node_seconds": per_node,
        "per_node_log_timeline_seconds_after_submit": timeline,
        "peak_memory_per_node": memory,
        "redis_peak_mib_shared_by_both_nodes": redis_peak,
        "seconds_after_bench_start": round(t0 - t_start, 1),
    }


# -- one size --------------------------------------------------------------------------------


def run_size(n: int, args: argparse.Namespace, say: Any, t_start: float) -> dict[str, Any]:
    from pcn.devnet import anvil
    from pcn.devnet.deploy import deploy
    from pcn.devnet.localnet import build_network, free_port, write_dataset

    processes = os.cpu_count() or 1
    e2e = n in args.e2e_sizes
    work = Path(tempfile.mkdtemp(prefix=f"pcn-bench-psi-{n}-"))
    os.environ["PCN_RUN_DIR"] = str(work / "run")
    loads: dict[str, list[float]] = {"start": load()}
    port, net = None, None
    try:
        # the sets: the files build_network writes for each organisation (same generator, same seeds); the
        # network itself is started only for the end-to-end stage, so its idle processes (chain watchers,
        # Celery) do not share the cores with the other stages, and the algorithms are registered (by code
        # hash) just before the task that uses them
        files = []
        for i, name in enumerate(["bank", "telecom"]):
            path = work / "sets" / f"{name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_dataset(path, n, seed=i + 1)
            files.append(path)
        bank_ids, telecom_ids = read_ids(files[0]), read_ids(files[1])
        expected = set(bank_ids) & set(telecom_ids)
        elements = len(bank_ids) + len(telecom_ids)
        say(
            f"N={n:,}: sets read back from the CSVs: {len(bank_ids):,} and {len(telecom_ids):,}, "
            f"{len(expected):,} in common"
        )

        # 1. the peer
        loads["before_openmined"] = load()
        om = openmined(bank_ids, telecom_ids)
        say(f"N={n:,}: openmined-psi {om['seconds']:.2f} s (CPU {om['cpu_seconds']:.2f} s) {om['phases']}")

        # 2. one multiplication, now
        loads["before_x25519"] = load()
        x1 = x25519_cost()
        xp = x25519_parallel(processes)
        say(f"N={n:,}: X25519 {x1}; {processes} at once: {xp['effective_us_per_multiplication']} us each")

        # 3. pcn's protocol, both parties in one process, pool of `processes`
        loads["before_pcn_protocol"] = load()
        local = pcn_local(bank_ids, telecom_ids, processes)
        say(f"N={n:,}: pcn protocol (run_local, pool of {processes}): {local['seconds']:.2f} s, {local['peak_mib']}")

        # 4. one process per party
        split = None
        if n in args.split_sizes:
            loads["before_pcn_per_party_processes"] = load()
            split = pcn_split(bank_ids, telecom_ids, processes)
            say(
                f"N={n:,}: pcn, one process per party: {split['seconds']:.2f} s, "
                f"{ {p: v['peak_mib'] for p, v in split['parties'].items()} }"
            )

        # 5. one core
        one = None
        if n in args.one_core_sizes:
            loads["before_pcn_protocol_one_core"] = load()
            one = pcn_one_core(bank_ids, telecom_ids)
            say(f"N={n:,}: pcn protocol on one core: {one['seconds']:.2f} s")

        # 6. end to end
        end = None
        if e2e:
            say(f"N={n:,}: starting the network for the end-to-end run")
            port = free_port()
            st = anvil.up(port=port, state_file=work / "anvil.json")
            dep = deploy(st.rpc_url, out=work / "deployment.json")
            net = build_network(
                work, dep, ["bank", "telecom"], rows=n, workers=args.workers, message_timeout=1800.0, progress=say
            )
            assert [read_ids(net.by_name(o).data_file) for o in ("bank", "telecom")] == [bank_ids, telecom_ids]
            loads["before_pcn_end_to_end"] = load()
            end = pcn_end_to_end(net, t_start)
            say(f"N={n:,}: pcn end to end: {end['seconds']:.2f} s")
        loads["end"] = load()

        # every run agrees with Python's sets, or the benchmark means nothing
        for name, ids in (
            [("openmined", om["ids"]), ("protocol", local["ids"])]
            + ([("per-party", split["ids"])] if split else [])
            + ([("one core", one["ids"])] if one else [])
            + ([("end to end", end["ids"])] if end else [])
        ):
            assert set(ids) == expected, f"{name}: the intersection differs"
    finally:
        if net is not None:
            net.stop()
            net.redis.stop()
        if port is not None:
            anvil.down(port)
        shutil.rmtree(work, ignore_errors=True)

    # the floor
    mults = sum(local["multiplications"].values())
    structure = 2 * elements  # each element of each set is blinded by both parties, once each
    assert mults == structure, (mults, structure)
    if split is not None:
        counted = sum(p["multiplications_counted_in_workers"] for p in split["parties"].values())
        assert counted == structure, (counted, structure)
    us = x1["pcn_path_median_us"]
    floor = mults * us / 1e6 / processes
    floor_parallel = mults * xp["effective_us_per_multiplication"] / 1e6
    floor_cpu = mults * us / 1e6
    om_s, om_cpu = om["seconds"], om["cpu_seconds"]

    def r(x: float) -> float:
        return round(x, 3)

    out: dict[str, Any] = {
        "ids_per_party": n,
        "intersection_size": len(expected),
        "openmined_psi_seconds": r(om_s),
        "openmined_psi_cpu_seconds": r(om_cpu),
        "openmined_psi_phases": om["phases"],
        "openmined_psi_data_structure": "RAW",
        "pcn_protocol_seconds": r(local["seconds"]),
        "pcn_protocol_cpu_seconds": r(local["cpu_seconds"]),
        "pcn_protocol_info": {"messages": local["messages"], "bytes_on_the_wire": local["bytes_on_the_wire"]},
        "pcn_per_party_processes_seconds": None if split is None else r(split["seconds"]),
        "pcn_protocol_one_core_seconds": None if one is None else r(one["seconds"]),
        "pcn_end_to_end_seconds": None if end is None else r(end["seconds"]),
        "x25519": {**x1, "parallel": xp, "samples": X25519_SAMPLES},
        "floor": {
            "x25519_multiplications": mults,
            "x25519_multiplications_per_party": local["multiplications"],
            "expected_by_structure": f"2 x (|X_bank| + |X_telecom|) = {structure}",
            "counted_in_pool_workers_per_party_run": None
            if split is None
            else {p: v["multiplications_counted_in_workers"] for p, v in split["parties"].items()},
            "processes": processes,
            "us_per_multiplication": us,
            "floor_seconds": r(floor),
            "floor_definition": "multiplications x median us of one (pcn's path, this run) / processes",
            "floor_parallel_measured_seconds": r(floor_parallel),
            "floor_parallel_definition": (
                "multiplications x effective us per multiplication with `processes` processes multiplying at "
                "once, measured just before (what the cores gave under the machine's load then)"
            ),
            "floor_cpu_seconds": r(floor_cpu),
        },
        "ratio_vs_floor": r(local["seconds"] / floor),
        "ratio_vs_parallel_floor_measured": r(local["seconds"] / floor_parallel),
        "ratio_vs_floor_cpu_seconds": r(local["cpu_seconds"] / floor_cpu),
        "ratio_vs_floor_cpu_seconds_definition": "pcn protocol CPU seconds (driver + pool) / (multiplications x us)",
        "ratio_vs_openmined_psi_protocol": r(local["seconds"] / om_s),
        "speedup_vs_openmined_psi_protocol": round(om_s / local["seconds"], 2),
        "ratio_vs_openmined_psi_end_to_end": None if end is None else r(end["seconds"] / om_s),
        "speedup_vs_openmined_psi_end_to_end": None if end is None else round(om_s / end["seconds"], 2),
        "ratio_vs_openmined_psi_per_party_processes": None if split is None else r(split["seconds"] / om_s),
        "ratio_vs_openmined_psi_protocol_one_core": None if one is None else r(one["seconds"] / om_s),
        "ratio_vs_openmined_psi_cpu_seconds": r(local["cpu_seconds"] / om_cpu),
        "ratio_vs_openmined_psi_cpu_seconds_definition": (
            "pcn protocol CPU seconds (driver + pool workers, from /proc) / openmined-psi CPU seconds: "
            "the work done, whatever share of the cores other load left"
        ),
        "cpu_seconds": {
            "openmined_psi": r(om_cpu),
            "pcn_protocol": r(local["cpu_seconds"]),
            "pcn_per_party_processes": None
            if split is None
            else {p: r(v["cpu_seconds"]) for p, v in split["parties"].items()},
            "pcn_protocol_one_core": None if one is None else r(one["cpu_seconds"]),
        },
        "elements_per_second_definition": "(|X_bank| + |X_telecom|) / wall seconds",
        "elements_per_second": {
            "openmined_psi": round(elements / om_s),
            "pcn_protocol": round(elements / local["seconds"]),
            "pcn_end_to_end": None if end is None else round(elements / end["seconds"]),
            "pcn_protocol_one_core": None if one is None else round(elements / one["seconds"]),
        },
        "peak_memory_mib": {
            "pcn_protocol_run_local": local["peak_mib"],
            "pcn_protocol_run_local_definition": (
                "VmHWM of the one process driving both parties, and of each pool worker; per party is at most "
                "driver + its share of the pool"
            ),
            "pcn_per_party_processes": None
            if split is None
            else {p: v["peak_mib"] for p, v in split["parties"].items()},
            "pcn_per_party_processes_definition": (
                "each party in its own process with its own pool of `processes` spawned workers; sum = VmHWM of the "
                "party process + VmHWM of each of its pool workers (an upper bound: the peaks need not coincide)"
            ),
            "pcn_end_to_end_per_node": None
            if end is None
            else {o: {k: v for k, v in m.items() if k != "processes"} for o, m in end["peak_memory_per_node"].items()},
            "openmined_psi_bench_process": om["peak_mib_process"],
        },
        "load_average_1_5_15": loads,
    }
    if end is not None:
        out["pcn_end_to_end"] = {k: v for k, v in end.items() if k not in ("seconds", "ids")}
    return out


def machine() -> dict[str, Any]:
    import cryptography

    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "",
    )
    mem = next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(int(mem) / MIB, 1),
        "numpy": np.__version__,
        "cryptography": cryptography.__version__,
        "openmined_psi": version("openmined-psi"),
        "shared": "other sessions' jobs ran on the same 2 cores; see the load averages before each stage",
    }


def _sizes(text: str, all_sizes: list[int]) -> set[int]:
    if text == "all":
        return set(all_sizes)
    if text in ("", "none"):
        return set()
    return {int(x) for x in text.split(",")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="IDs per party, comma-separated")
    ap.add_argument("--workers", type=int, default=1, help="Celery worker processes per organisation")
    ap.add_argument("--one-core-sizes", default="100000", help="sizes to also run on one core (or all / none)")
    ap.add_argument("--split-sizes", default="all", help="sizes to run with one process per party (or none)")
    ap.add_argument("--e2e-sizes", default="all", help="sizes to run end to end over real nodes (or none)")
    ap.add_argument("--no-readme", action="store_true", help="do not touch bench/README.md")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    args.one_core_sizes = _sizes(args.one_core_sizes, sizes)
    args.split_sizes = _sizes(args.split_sizes, sizes)
    args.e2e_sizes = _sizes(args.e2e_sizes, sizes)
    t = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t:6.1f}s] {msg}", flush=True)

    results = {str(n): run_size(n, args, say, t) for n in sizes}
    command = f"python bench/psi.py --sizes {args.sizes}"
    if args.workers != 1:
        command += f" --workers {args.workers}"
    for flag, chosen in (
        ("--one-core-sizes", args.one_core_sizes),
        ("--split-sizes", args.split_sizes),
        ("--e2e-sizes", args.e2e_sizes),
    ):
        if chosen != _sizes(ap.get_default(flag[2:].replace("-", "_")), sizes):
            command += f" {flag} {','.join(map(str, sorted(chosen))) or 'none'}"
    at_1m = results.get("1000000")
    targets: dict[str, Any] = {"targets": TARGETS}
    for size, res in results.items():
        per_party = res["peak_memory_mib"]
        candidates = []
        if per_party["pcn_per_party_processes"]:
            candidates += [v["sum"] for v in per_party["pcn_per_party_processes"].values()]
        if per_party["pcn_end_to_end_per_node"]:
            candidates += [v["sum_peak_mib_all_processes"] for v in per_party["pcn_end_to_end_per_node"].values()]
        targets[size] = {
            "speedup_vs_openmined_psi_protocol": res["speedup_vs_openmined_psi_protocol"],
            "speedup_met": res["speedup_vs_openmined_psi_protocol"] >= TARGETS["speedup_vs_openmined_psi"],
            "ratio_vs_floor": res["ratio_vs_floor"],
            "floor_met": res["ratio_vs_floor"] <= TARGETS["ratio_vs_floor"],
            "largest_peak_mib_per_party": max(candidates) if candidates else None,
        }
    if at_1m is not None:
        peak = targets["1000000"]["largest_peak_mib_per_party"]
        targets["1000000"]["memory_met"] = None if peak is None else peak <= TARGETS["peak_mib_per_party_at_1m"]
    out = {
        "benchmark": "psi",
        "parties": 2,
        "sizes": results,
        "targets_check": targets,
        "workers_per_party": args.workers,
        "compute_processes_per_party": os.cpu_count(),
        "machine": machine(),
        "command": command,
        "total_seconds": round(time.perf_counter() - t, 1),
    }
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "psi.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(targets, indent=2))
    if not args.no_readme:
        _readme_rows(out)


def _row(n: str, res: dict[str, Any], out: dict[str, Any]) -> str:
    eps = res["elements_per_second"]
    fl = res["floor"]
    mem = res["peak_memory_mib"]
    size = int(n)
    parts = [
        f"protocol {res['pcn_protocol_seconds']} s ({eps['pcn_protocol']:,} IDs/s, X25519, pool of "
        f"{out['compute_processes_per_party']}; CPU {res['pcn_protocol_cpu_seconds']} s)"
    ]
    if res["pcn_end_to_end_seconds"] is not None:
        parts.append(f"end to end over 2 nodes {res['pcn_end_to_end_seconds']} s ({eps['pcn_end_to_end']:,} IDs/s)")
    else:
        parts.append("end to end not run at this size")
    if res["pcn_protocol_one_core_seconds"] is not None:
        parts.append(f"one core {res['pcn_protocol_one_core_seconds']} s")
    parts.append(
        f"floor {fl['floor_seconds']} s = {fl['x25519_multiplications']:,} X25519 x {fl['us_per_multiplication']} us "
        f"/ {fl['processes']}"
    )
    peaks = []
    if mem["pcn_per_party_processes"]:
        peaks.append(
            "own process + pool "
            + " / ".join(f"{p[2:]} {v['sum']:,.0f}" for p, v in mem["pcn_per_party_processes"].items())
        )
    if mem["pcn_end_to_end_per_node"]:
        peaks.append(
            "node, sum over its processes (idle node before the task) "
            + " / ".join(
                f"{o} {v['sum_peak_mib_all_processes']:,.0f} ({v.get('idle_before_task_sum_rss_mib', 0):,.0f})"
                for o, v in mem["pcn_end_to_end_per_node"].items()
            )
        )
    parts.append("peak MiB per party: " + "; ".join(peaks) if peaks else "peak memory not measured")
    ratios = [
        f"protocol {res['ratio_vs_openmined_psi_protocol']}x ({res['speedup_vs_openmined_psi_protocol']}x faster)",
    ]
    if res["ratio_vs_openmined_psi_end_to_end"] is not None:
        ratios.append(f"end to end {res['ratio_vs_openmined_psi_end_to_end']}x")
    ratios.append(f"CPU seconds {res['ratio_vs_openmined_psi_cpu_seconds']}x")
    ratios.append(
        f"vs floor {res['ratio_vs_floor']}x (CPU {res['ratio_vs_floor_cpu_seconds']}x; vs the measured "
        f"2-process rate {res['ratio_vs_parallel_floor_measured']}x)"
    )
    loads = res["load_average_1_5_15"]
    notes = []
    if "pcn_end_to_end" in res:
        e = res["pcn_end_to_end"]
        notes.append(
            f"end-to-end time: protocol {e['share_node_protocol']:.0%}, verification incl. read+fingerprint "
            f"{e['share_node_verification_incl_fingerprint']:.0%}, chain calls "
            f"{e['share_node_chain_calls'] + e['share_requester_chain_calls']:.0%}"
        )
    notes.append(
        f"{out['machine']['cpus']} cores, shared: load {loads['before_openmined'][0]} before openmined-psi, "
        f"{loads['before_pcn_protocol'][0]} before pcn"
    )
    notes.append(f"(`{out['command']}`)")
    return (
        f"| psi | 2-party PSI (IDs revealed to one party), {size:,} x {size:,} IDs, {res['intersection_size']:,} in "
        f"common | {'; '.join(parts)} | "
        f"openmined-psi {out['machine']['openmined_psi']} {res['openmined_psi_seconds']} s "
        f"({eps['openmined_psi']:,} IDs/s, P-256, one process; CPU {res['openmined_psi_cpu_seconds']} s) | "
        f"{'; '.join(ratios)} | {'; '.join(notes)} |\n"
    )


def _readme_rows(out: dict[str, Any]) -> None:
    """Replace the `| psi |` rows in place (other rows are left as they are)."""
    readme = BENCH / "README.md"
    rows = [_row(n, res, out) for n, res in out["sizes"].items()]
    lines = readme.read_text().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    at = next((i for i, ln in enumerate(lines) if ln.startswith("| psi |")), len(lines))
    lines = [ln for ln in lines if not ln.startswith("| psi |")]
    readme.write_text("".join(lines[:at] + rows + lines[at:]))


if __name__ == "__main__":
    main()
