"""Two-party PSI engines side by side in one run, same sets: pcn's psi-ot (KKRT16 OT
extension), pcn's ECDH-PSI ("psi"), OpenMined's `openmined-psi` (when installed) and SecretFlow
SPU's RR22 and KKRT PSI (when its bench venv is installed: `make bench-peers`).

The sets are bench/psi.py's: two organisations ("bank", the recipient, and "telecom") each
hold N customer IDs drawn from one pool of 2N (about half in common), written to each
organisation's CSV by `write_dataset` and read back. For each size N:

1. openmined-psi (ECDH over P-256 in C++), in one process as its API works (bench/psi.py's
   `openmined`): wall and CPU time, bytes of its three messages.
1b. SPU (`spu` 0.9.5, `psi_execute`, RR22 then KKRT), each party in its own process of the SPU
   venv (bench/spu_party.py) over SPU's own brpc link on loopback, reading the same CSV files:
   the seconds of `psi_execute` (the slower party; link set up before the clock) and each
   party's peak RSS. SPU's bytes on the wire are not reported (its link keeps no count).
2. Protocol only, one process per party (linked by multiprocessing queues, each with its own
   spawned pool of os.cpu_count() processes as each node has), for psi-ot and for psi: wall
   time from the start signal to both parties done, CPU of each party and its pool, bytes on
   the wire per direction (message payloads), peak RSS per party (process + pool workers).
3. psi-ot with both parties in one process and no pool (`run_local`): the single-process figure.
4. End to end over real nodes (anvil, Redis, Celery workers, signed and encrypted HTTP), psi-ot
   then psi on the same network: submit -> approvals -> verification -> protocol -> receipts ->
   completed (bench/psi.py's `pcn_end_to_end`).

Every intersection is checked against Python's. Ratios are psi-ot / peer (below 1: psi-ot is
faster): ratio_vs_psi_*, ratio_vs_openmined_psi_*, ratio_vs_spu_rr22_* and ratio_vs_spu_kkrt_*
(the end-to-end ones: pcn over real nodes, submit to the last receipt, against the peer's
protocol alone).

    .venv/bin/python bench/psi_ot.py [--sizes 100000] [--e2e-sizes all|none|N,...]
        [--no-readme] [--out bench/results/psi_ot.json]

Writes bench/results/psi_ot.json and the `| psi-ot |` rows of bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import psi as ecdh_bench  # bench/psi.py: run as `python bench/psi_ot.py`, bench/ is on sys.path

from pcn.algorithms.base import PartyContext, Protocol, run_local
from pcn.algorithms.psi.protocol import PsiProtocol
from pcn.algorithms.psi_ot import kkrt
from pcn.algorithms.psi_ot.protocol import PsiOtProtocol
from pcn.data.readers import read_table
from pcn.data.table import Table

BENCH = Path(__file__).resolve().parent
WHO = ecdh_bench.WHO  # the recipient first
ID_COLUMN = ecdh_bench.ID_COLUMN
SPAWN = ecdh_bench.SPAWN
ENGINES: dict[str, type[Protocol]] = {"psi-ot": PsiOtProtocol, "psi": PsiProtocol}


def load_table(path: Path) -> Table:
    """The party's dataset as a node reads it (pcn's CSV reader: Arrow string columns)."""
    return read_table(path)[0]


def _tracer(me: str) -> Any:
    """With PCN_BENCH_TRACE set, each party prints its progress with the seconds since it was
    built (where a run spends its time, party by party)."""
    if not os.environ.get("PCN_BENCH_TRACE"):
        return None
    t0 = time.perf_counter()

    def report(fraction: float, what: str) -> None:
        print(f"  [{me} {time.perf_counter() - t0:7.2f}s {fraction:4.2f}] {what}", flush=True)

    return report


def make_party(engine: str, me: str, table: Table, pmap: Any) -> Protocol:
    return ENGINES[engine].create(
        PartyContext(
            1,
            me,
            WHO,
            WHO[0],
            {},
            hashlib.sha256(f"bench/{engine}/{me}".encode()).digest(),
            _tracer(me),
            id_column=ID_COLUMN,
            parallel_map=pmap,
        ),
        table,
    )


# -- protocol only, one process per party ------------------------------------------------------


def _party_child(
    engine: str, index: int, path: Path, processes: int, inbox: Any, peer: Any, ready: Any, go: Any, out: Any
) -> None:
    me = WHO[index]
    with ProcessPoolExecutor(processes, mp_context=SPAWN) as pool:
        ecdh_bench.warm(pool, processes)  # imports psi in every worker
        warm_job = (bytes(16), bytes(32), b"warm", np.array([0, 4]))
        list(pool.map(kkrt.id_digests, [warm_job] * (4 * processes)))  # and psi-ot
        workers = ecdh_bench.pool_pids(pool)

        def pmap(fn: Any, items: Any) -> list[Any]:
            return list(pool.map(fn, items))

        party = make_party(engine, me, load_table(path), pmap)
        ready.put(index)
        go.wait()
        cpu0 = time.process_time() + sum(ecdh_bench.proc_cpu(p) for p in workers)
        t0 = time.perf_counter()
        sent, messages = 0, 0
        for m in party.start():
            sent, messages = sent + len(m.payload), messages + 1
            peer.put(m)
        while not party.done:
            for m in party.receive(inbox.get()):
                sent, messages = sent + len(m.payload), messages + 1
                peer.put(m)
        wall = time.perf_counter() - t0
        cpu = time.process_time() + sum(ecdh_bench.proc_cpu(p) for p in workers) - cpu0
        own = ecdh_bench.peak_mib()
        pool_peaks = [ecdh_bench.peak_mib(p) for p in workers]
    res = party.result()
    out.put(
        {
            "party": me,
            "seconds": wall,
            "cpu_seconds": cpu,
            "bytes_sent": sent,
            "messages_sent": messages,
            "ids": None if res is None else json.loads(res)["ids"],
            "peak_mib": {"party_process": own, "pool_workers": pool_peaks, "sum": round(own + sum(pool_peaks), 1)},
        }
    )


def split(engine: str, files: list[Path], processes: int) -> dict[str, Any]:
    inboxes = [SPAWN.Queue(), SPAWN.Queue()]
    ready, out, go = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    procs = [
        SPAWN.Process(
            target=_party_child, args=(engine, i, path, processes, inboxes[i], inboxes[1 - i], ready, go, out)
        )
        for i, path in enumerate(files)
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
    return {
        "seconds": wall,
        "cpu_seconds": sum(g["cpu_seconds"] for g in got),
        "bytes_on_the_wire": sum(g["bytes_sent"] for g in got),
        "bytes_per_direction": {f"{g['party']}_sent": g["bytes_sent"] for g in got},
        "messages": sum(g["messages_sent"] for g in got),
        "peak_mib_per_party": {p: g["peak_mib"]["sum"] for p, g in by.items()},
        "peak_mib_per_party_detail": {p: g["peak_mib"] for p, g in by.items()},
        "ids": by[WHO[0]]["ids"],
    }


def _one_process_child(files: list[Path], out: Any) -> None:
    parties = [make_party("psi-ot", me, load_table(path), None) for me, path in zip(WHO, files, strict=True)]
    c0, t0 = time.process_time(), time.perf_counter()
    transcript = run_local(parties)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out.put(
        {
            "seconds": wall,
            "cpu_seconds": cpu,
            "bytes_on_the_wire": sum(len(m.payload) for m in transcript),
            "peak_mib_both_parties": ecdh_bench.peak_mib(),
            "ids": json.loads(parties[0].result() or b"{}")["ids"],
        }
    )


def one_process(files: list[Path]) -> dict[str, Any]:
    """psi-ot, both parties in one fresh process, no pool."""
    q = SPAWN.Queue()
    proc = SPAWN.Process(target=_one_process_child, args=(files, q))
    proc.start()
    got = q.get()
    proc.join()
    assert proc.exitcode == 0, proc.exitcode
    return got  # type: ignore[no-any-return]


def openmined_version() -> str | None:
    try:
        return version("openmined-psi")
    except PackageNotFoundError:
        return None


# -- one size ------------------------------------------------------------------------------------


SPU_PROTOCOLS = ("RR22", "KKRT")


def spu_python() -> Path | None:
    """The SPU bench venv's interpreter ($PCN_SPU_PYTHON, else .venv/spu from `make bench-peers`)."""
    path = Path(os.environ.get("PCN_SPU_PYTHON") or BENCH.parent / ".venv" / "spu" / "bin" / "python")
    return path if path.is_file() else None


def spu_psi(python: Path, protocol: str, files: list[Path], work: Path, unique: bool) -> dict[str, Any]:
    """SPU's two-party PSI, each party in its own process; rank 0 (files[0]) receives."""
    from pcn.devnet.localnet import free_port

    ports = f"{free_port()},{free_port()}"
    procs = []
    for rank, path in enumerate(files):
        cmd = [str(python), str(BENCH / "spu_party.py"), "--rank", str(rank), "--protocol", protocol]
        cmd += ["--ports", ports, "--input", str(path), "--output", str(work / f"spu-{protocol}-{rank}.csv")]
        cmd += ["--key", ID_COLUMN] + (["--keys-unique"] if unique else [])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=work))
    t0 = time.perf_counter()
    reports = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"SPU {protocol} party exited {proc.returncode}")
        reports.append(json.loads(next(ln for ln in stdout.splitlines() if ln.startswith('{"rank"'))))
    wall = time.perf_counter() - t0
    with (work / f"spu-{protocol}-0.csv").open(newline="") as f:
        rows = csv.reader(f)
        col = next(rows).index(ID_COLUMN)
        ids = [row[col] for row in rows]
    return {
        "seconds": max(rep["seconds"] for rep in reports),
        "processes_wall_seconds": wall,
        "peak_mib_per_party": {WHO[i]: round(rep["peak_mib"], 1) for i, rep in enumerate(reports)},
        "ids": ids,
    }


SKIPPABLE = ("psi", "openmined", "spu", "one-process")


def run_size(n: int, e2e: bool, say: Any, t_start: float, skip: set[str]) -> dict[str, Any]:
    from pcn.devnet import anvil
    from pcn.devnet.deploy import deploy
    from pcn.devnet.localnet import build_network, free_port, write_dataset

    processes = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix=f"pcn-bench-psi-ot-{n}-"))
    os.environ["PCN_RUN_DIR"] = str(work / "run")
    loads: dict[str, list[float]] = {"start": ecdh_bench.load()}
    port, net = None, None
    end: dict[str, dict[str, Any]] = {}
    try:
        files = []
        for i, name in enumerate(["bank", "telecom"]):
            path = work / "sets" / f"{name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_dataset(path, n, seed=i + 1)
            files.append(path)
        bank_ids, telecom_ids = ecdh_bench.read_ids(files[0]), ecdh_bench.read_ids(files[1])
        expected = set(bank_ids) & set(telecom_ids)
        say(f"N={n:,}: {len(bank_ids):,} and {len(telecom_ids):,} IDs, {len(expected):,} in common")

        om = None
        if openmined_version() is not None and "openmined" not in skip:
            loads["before_openmined"] = ecdh_bench.load()
            om = ecdh_bench.openmined(bank_ids, telecom_ids)
            say(f"N={n:,}: openmined-psi {om['seconds']:.2f} s, {om['phases']['bytes_on_the_wire']:,} B")
        spu: dict[str, dict[str, Any]] = {}
        python = spu_python()
        unique = len(set(bank_ids)) == len(bank_ids) and len(set(telecom_ids)) == len(telecom_ids)
        for protocol in SPU_PROTOCOLS if python is not None and "spu" not in skip else ():
            assert python is not None
            loads[f"before_spu_{protocol.lower()}"] = ecdh_bench.load()
            spu[protocol] = spu_psi(python, protocol, files, work, unique)
            say(f"N={n:,}: SPU {protocol}, one process per party: {spu[protocol]['seconds']:.2f} s")
        runs: dict[str, dict[str, Any]] = {}
        engines = [e for e in ENGINES if e not in skip]
        for engine in engines:
            loads[f"before_{engine}_protocol"] = ecdh_bench.load()
            run = runs[engine] = split(engine, files, processes)
            say(
                f"N={n:,}: {engine} protocol, one process per party: {run['seconds']:.2f} s, "
                f"{run['bytes_on_the_wire']:,} B"
            )
        single = None
        if "one-process" not in skip:
            loads["before_psi_ot_one_process"] = ecdh_bench.load()
            single = one_process(files)
            say(f"N={n:,}: psi-ot, both parties in one process, no pool: {single['seconds']:.2f} s")

        if e2e:
            say(f"N={n:,}: starting the network for the end-to-end runs")
            port = free_port()
            st = anvil.up(port=port, state_file=work / "anvil.json")
            dep = deploy(st.rpc_url, out=work / "deployment.json")
            # psi-ot's rows put 64 bytes per cuckoo bin into the sender's inbox (813 MB at 10 M),
            # more than a node's default quota per sender (256 MiB): the bench's nodes take it.
            rows_bytes = kkrt.WIDTH_BYTES * kkrt.bin_count(n)
            quotas = (max(1 << 30, 2 * rows_bytes), max(256 << 20, 2 * rows_bytes))
            net = build_network(
                work, dep, ["bank", "telecom"], rows=n, message_timeout=1800.0, progress=say, mailbox_quotas=quotas
            )
            for engine in engines:
                loads[f"before_{engine}_end_to_end"] = ecdh_bench.load()
                end[engine] = ecdh_bench.pcn_end_to_end(net, t_start, engine)
                say(f"N={n:,}: {engine} end to end: {end[engine]['seconds']:.2f} s")
        loads["end"] = ecdh_bench.load()
        checks = [(f"{e} protocol", r["ids"]) for e, r in runs.items()]
        checks += [("psi-ot one process", single["ids"])] if single is not None else []
        checks += [(f"{e} end to end", r["ids"]) for e, r in end.items()]
        if om is not None:
            checks.append(("openmined", om["ids"]))
        checks += [(f"SPU {p}", r["ids"]) for p, r in spu.items()]
        for name, ids in checks:
            assert set(ids) == expected, f"{name}: the intersection differs"
    finally:
        if net is not None:
            net.stop()
            net.redis.stop()
        if port is not None:
            anvil.down(port)
        shutil.rmtree(work, ignore_errors=True)

    def r(x: float) -> float:
        return round(x, 3)

    ot, ecdh = runs["psi-ot"], runs.get("psi")
    ecdh_end = end.get("psi")

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else r(a / b)

    out: dict[str, Any] = {
        "ids_per_party": n,
        "intersection_size": len(expected),
        "psi_ot_protocol_seconds": r(ot["seconds"]),
        "psi_ot_protocol_cpu_seconds": r(ot["cpu_seconds"]),
        "psi_ot_one_process_seconds": None if single is None else r(single["seconds"]),
        "psi_ot_one_process_cpu_seconds": None if single is None else r(single["cpu_seconds"]),
        "psi_protocol_seconds": None if ecdh is None else r(ecdh["seconds"]),
        "psi_protocol_cpu_seconds": None if ecdh is None else r(ecdh["cpu_seconds"]),
        "openmined_psi_seconds": None if om is None else r(om["seconds"]),
        "bytes_on_the_wire": {
            "psi_ot": ot["bytes_on_the_wire"],
            "psi_ot_per_direction": ot["bytes_per_direction"],
            "psi": None if ecdh is None else ecdh["bytes_on_the_wire"],
            "psi_per_direction": None if ecdh is None else ecdh["bytes_per_direction"],
            "openmined_psi": None if om is None else om["phases"]["bytes_on_the_wire"],
        },
        "messages": {"psi_ot": ot["messages"], "psi": None if ecdh is None else ecdh["messages"]},
        "peak_mib_per_party_process_plus_pool": {
            "psi_ot": ot["peak_mib_per_party"],
            "psi": None if ecdh is None else ecdh["peak_mib_per_party"],
        },
        "psi_ot_peak_mib_process_and_pool_workers": ot["peak_mib_per_party_detail"],
        "psi_ot_one_process_peak_mib_both_parties": None if single is None else single["peak_mib_both_parties"],
        "ratio_vs_psi_protocol": ratio(ot["seconds"], ecdh and ecdh["seconds"]),
        "ratio_vs_psi_bytes": ratio(ot["bytes_on_the_wire"], ecdh and ecdh["bytes_on_the_wire"]),
        "ratio_vs_openmined_psi_protocol": ratio(ot["seconds"], om and om["seconds"]),
        "psi_ot_end_to_end_seconds": r(end["psi-ot"]["seconds"]) if end else None,
        "psi_end_to_end_seconds": r(ecdh_end["seconds"]) if ecdh_end else None,
        "ratio_vs_psi_end_to_end": ratio(end["psi-ot"]["seconds"] if end else None, ecdh_end and ecdh_end["seconds"]),
        "ratio_vs_openmined_psi_end_to_end": ratio(end["psi-ot"]["seconds"] if end else None, om and om["seconds"]),
        "skipped": sorted(skip),
        "load_average_1_5_15": loads,
    }
    for protocol, res in spu.items():
        key = f"spu_{protocol.lower()}"
        out[f"{key}_seconds"] = r(res["seconds"])
        out[f"{key}_processes_wall_seconds"] = r(res["processes_wall_seconds"])
        out[f"{key}_peak_mib_per_party"] = res["peak_mib_per_party"]
        out[f"ratio_vs_{key}_protocol"] = r(ot["seconds"] / res["seconds"])
        out[f"ratio_vs_{key}_end_to_end"] = r(end["psi-ot"]["seconds"] / res["seconds"]) if end else None
    for engine, e in end.items():
        out[f"{engine}_end_to_end"] = {k: v for k, v in e.items() if k not in ("seconds", "ids")}
    return out


def _sizes(text: str, all_sizes: list[int]) -> set[int]:
    if text == "all":
        return set(all_sizes)
    if text in ("", "none"):
        return set()
    return {int(x) for x in text.split(",")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100000", help="IDs per party, comma-separated")
    ap.add_argument("--e2e-sizes", default="all", help="sizes to run end to end over real nodes (or none)")
    ap.add_argument(
        "--skip", default="", help=f"peers or runs to leave out, comma-separated, of {', '.join(SKIPPABLE)} (10 M: all)"
    )
    ap.add_argument("--no-readme", action="store_true", help="do not touch bench/README.md")
    ap.add_argument("--out", default=str(BENCH / "results" / "psi_ot.json"), help="where the JSON results go")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    e2e_sizes = _sizes(args.e2e_sizes, sizes)
    skip = {x for x in args.skip.split(",") if x}
    if skip - set(SKIPPABLE):
        ap.error(f"--skip takes {', '.join(SKIPPABLE)}")
    t = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t:6.1f}s] {msg}", flush=True)

    command = f"python bench/psi_ot.py --sizes {args.sizes}"
    if e2e_sizes != set(sizes):
        command += f" --e2e-sizes {','.join(map(str, sorted(e2e_sizes))) or 'none'}"
    if skip:
        command += f" --skip {','.join(sorted(skip))}"
    results = {str(n): run_size(n, n in e2e_sizes, say, t, skip) | {"command": command} for n in sizes}
    # Sizes not run now keep their earlier results (each names the command that produced it).
    previous = json.loads(Path(args.out).read_text()).get("sizes", {}) if Path(args.out).is_file() else {}
    merged = {k: v for k, v in sorted((previous | results).items(), key=lambda kv: int(kv[0]))}
    machine = ecdh_bench.machine() if openmined_version() else {"cpus": os.cpu_count()}
    out = {
        "benchmark": "psi-ot",
        "parties": 2,
        "peers": ["psi (pcn ECDH-PSI)"]
        + (["openmined-psi"] if openmined_version() else [])
        + ([f"spu {p} (SecretFlow spu 0.9.5)" for p in SPU_PROTOCOLS] if spu_python() else []),
        "sizes": merged,
        "compute_processes_per_party": os.cpu_count(),
        "machine": machine,
        "command": command,
        "total_seconds": round(time.perf_counter() - t, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({n: {k: v for k, v in res.items() if k.startswith("ratio")} for n, res in results.items()}))
    if not args.no_readme:
        _readme_rows(out)


def _row(n: str, res: dict[str, Any], out: dict[str, Any]) -> str:
    size, wire = int(n), res["bytes_on_the_wire"]
    mib = 1024 * 1024
    pcn = [
        f"protocol {res['psi_ot_protocol_seconds']} s, one process per party with a pool of "
        f"{out['compute_processes_per_party']} (CPU {res['psi_ot_protocol_cpu_seconds']} s), "
        f"{wire['psi_ot'] / mib:.1f} MiB on the wire"
    ]
    if res.get("psi_ot_one_process_seconds") is not None:
        pcn.append(f"both parties in one process, no pool {res['psi_ot_one_process_seconds']} s")
    if res["psi_ot_end_to_end_seconds"] is not None:
        pcn.append(f"end to end over 2 nodes {res['psi_ot_end_to_end_seconds']} s")
    peers = []
    if res.get("psi_protocol_seconds") is not None:
        peers.append(
            f"psi (ECDH, X25519): protocol {res['psi_protocol_seconds']} s, {wire['psi'] / mib:.1f} MiB"
            + (f"; end to end {res['psi_end_to_end_seconds']} s" if res["psi_end_to_end_seconds"] is not None else "")
        )
    if res["openmined_psi_seconds"] is not None:
        peers.append(
            f"openmined-psi {out['machine'].get('openmined_psi', '')} {res['openmined_psi_seconds']} s "
            f"(one process), {wire['openmined_psi'] / mib:.1f} MiB"
        )
    for protocol in SPU_PROTOCOLS:
        key = f"spu_{protocol.lower()}"
        if res.get(f"{key}_seconds") is not None:
            peaks = res[f"{key}_peak_mib_per_party"]
            peers.append(
                f"SPU {protocol} {res[f'{key}_seconds']} s (one process per party, peak MiB "
                + " / ".join(f"{p[2:]} {v:,.0f}" for p, v in peaks.items())
                + ")"
            )
    ratios = []
    if res.get("ratio_vs_psi_protocol") is not None:
        ratios.append(f"vs psi: protocol {res['ratio_vs_psi_protocol']}x, bytes {res['ratio_vs_psi_bytes']}x")
    if res["ratio_vs_psi_end_to_end"] is not None:
        ratios.append(f"end to end {res['ratio_vs_psi_end_to_end']}x")
    if res["ratio_vs_openmined_psi_protocol"] is not None:
        ratios.append(f"vs openmined-psi: protocol {res['ratio_vs_openmined_psi_protocol']}x")
    for protocol in SPU_PROTOCOLS:
        key = f"spu_{protocol.lower()}"
        if res.get(f"ratio_vs_{key}_protocol") is not None:
            text = f"vs SPU {protocol}: protocol {res[f'ratio_vs_{key}_protocol']}x"
            if res.get(f"ratio_vs_{key}_end_to_end") is not None:
                text += f", pcn end to end {res[f'ratio_vs_{key}_end_to_end']}x"
            ratios.append(text)
    peaks = res["peak_mib_per_party_process_plus_pool"]["psi_ot"]
    loads = res["load_average_1_5_15"]
    notes = [
        "peak MiB per party (process + pool) " + " / ".join(f"{p[2:]} {v:,.0f}" for p, v in peaks.items()),
        f"{out['compute_processes_per_party']} cores, shared: load {loads['before_psi-ot_protocol'][0]} before psi-ot",
        f"(`{res.get('command', out['command'])}`)",
    ]
    return (
        f"| psi-ot | 2-party PSI by OT extension (KKRT16; IDs revealed to one party), {size:,} x {size:,} IDs, "
        f"{res['intersection_size']:,} in common | {'; '.join(pcn)} | {'; '.join(peers) or 'none run'} | "
        f"{'; '.join(ratios) or 'none'} | {'; '.join(notes)} |\n"
    )


def _readme_rows(out: dict[str, Any]) -> None:
    """Replace the `| psi-ot |` rows (after the `| psi |` rows), leaving every other line."""
    readme = BENCH / "README.md"
    rows = [_row(n, res, out) for n, res in out["sizes"].items()]
    lines = [ln for ln in readme.read_text().splitlines(keepends=True) if not ln.startswith("| psi-ot |")]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    psi_rows = [i for i, ln in enumerate(lines) if ln.startswith("| psi |")]
    at = psi_rows[-1] + 1 if psi_rows else len(lines)
    readme.write_text("".join(lines[:at] + rows + lines[at:]))


if __name__ == "__main__":
    main()
