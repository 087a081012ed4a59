"""FedAvg round time with secure aggregation vs without, side by side in one run.

Workload: N parties (3 and 5) each holding ROWS rows (default 20,000) with the same 30
features and a 0/1 label (synthetic, logistic ground truth); logistic regression and an MLP
(hidden [64, 32], ReLU); ROUNDS training rounds (default 5) plus the evaluation round,
1 local epoch per round, batch 64, learning rate 0.1, l2 1e-4, weighting by samples.

  secure  pcn's `FedAvgProtocol` (all N parties driven in-process by `run_local`): pairwise
          masks from X25519-agreed seeds expanded with ChaCha20, and with the default
          dropout_tolerance also self-masks and Shamir shares (t = N//2 + 1) of every
          round's mask key and self-mask seed, the unmask round and the reconstruction at
          the aggregator. Also run with dropout_tolerance false (pairwise masks only).
  plain   `node/algorithms/fedavg/reference.py`'s `plain_fedavg`: the same local training
          (same minibatch orders), the same fixed-point vectors, summed in the clear.

Both run every party in one process, one after the other, so a "round" is the sum of the
parties' local work plus the aggregation (what a single machine hosting all of them pays).
Round r of the secure run is timed at the aggregator from its `_start_round(r)` to its
`_start_round(r + 1)` (the last one to the end of the run); the one-off setup (each party
reading its rows, key records, Shamir shares) is reported separately. Round r of the plain
run is timed from its first party's vector to the next round's. The two runs are checked
to give bit-identical models. The machine may be shared: secure and plain alternate over
`--repeats` repetitions and the median training-round time of each is compared.

    .venv/bin/python bench/fedavg.py [--rows 20000] [--features 30] [--rounds 5] [--repeats 2]

Writes bench/results/fedavg.json and the `| fedavg |` row of bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
from common import replace_row  # bench/ is on sys.path when run as a script

from pcn.algorithms.base import PartyContext, local_binding, run_local, secret_permutation
from pcn.algorithms.fedavg import model as mdl
from pcn.algorithms.fedavg import reference, secagg
from pcn.algorithms.fedavg.params import default_threshold
from pcn.algorithms.fedavg.protocol import FedAvgAggregator, FedAvgProtocol
from pcn.data.table import Table

BINDING = local_binding(1)  # the task binding of the secure-aggregation micro-benchmark

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "fedavg.json"
HIDDEN = [64, 32]


def names(n: int) -> list[str]:
    return [f"0xparty{i}" for i in range(n)]


def seed_for(name: str) -> bytes:
    return hashlib.sha256(f"bench/fedavg/{name}".encode()).digest()


def synthetic(parties: int, rows: int, d: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    w = rng.normal(scale=1.5 / np.sqrt(d), size=d)
    out = []
    for k in range(parties):
        x = rng.normal(loc=0.05 * k, size=(rows, d))
        z = x @ w + 0.5 * np.tanh(x[:, 0] * x[:, 1]) - 0.2
        y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
        out.append((x, y))
    return out


def to_table(x: np.ndarray, y: np.ndarray, features: list[str]) -> Table:
    cols: dict[str, list[str | None]] = {f: [repr(v) for v in x[:, k].tolist()] for k, f in enumerate(features)}
    cols["label"] = [str(int(v)) for v in y.tolist()]
    return Table(cols)


def make_params(model: str, features: list[str], rounds: int, tolerance: bool) -> dict[str, Any]:
    p: dict[str, Any] = {
        "label_column": "label",
        "features": features,
        "model": model,
        "rounds": rounds,
        "local_epochs": 1,
        "learning_rate": 0.1,
        "batch_size": 64,
        "l2": 1e-4,
        "seed": 7,
        "dropout_tolerance": tolerance,
    }
    if model == "mlp":
        p.update(hidden=HIDDEN, activation="relu")
    return p


def run_secure(tables: list[Table], params: dict[str, Any]) -> dict[str, Any]:
    who = names(len(tables))
    parties = [
        FedAvgProtocol.create(PartyContext(1, me, who, who[0], dict(params), seed_for(me)), t)
        for me, t in zip(who, tables, strict=True)
    ]
    aggregator = parties[0]
    starts: dict[int, float] = {}
    cpu: dict[int, float] = {}
    original = FedAvgAggregator._start_round

    def timed_start(self: FedAvgAggregator, r: int) -> Any:
        starts[r], cpu[r] = time.perf_counter(), time.process_time()
        return original(self, r)

    aggregator._start_round = types.MethodType(timed_start, aggregator)  # type: ignore[method-assign]
    t0 = time.perf_counter()
    run_local(parties)
    t_end, c_end = time.perf_counter(), time.process_time()
    rs = sorted(starts)
    ends = [starts[r + 1] for r in rs[:-1]] + [t_end]
    cpu_ends = [cpu[r + 1] for r in rs[:-1]] + [c_end]
    doc = json.loads(aggregator.result() or b"{}")
    return {
        "setup": starts[rs[0]] - t0,
        "rounds": [e - starts[r] for r, e in zip(rs, ends, strict=True)],
        "cpu_rounds": [e - cpu[r] for r, e in zip(rs, cpu_ends, strict=True)],
        "theta": mdl.theta_from_document(doc["model"]),
        "final": doc["final"],
        "threshold": aggregator.threshold,
    }


def run_plain(data: list[tuple[np.ndarray, np.ndarray]], params: dict[str, Any]) -> dict[str, Any]:
    validated = FedAvgProtocol.validate_params(params)
    who = names(len(data))

    def permutation_for(i: int, label: str, n: int) -> np.ndarray:  # `Protocol.secret_permutation`
        key = hashlib.shake_256(b"pcn/secret/" + seed_for(who[i]) + b"/permutation/" + label.encode()).digest(32)
        return secret_permutation(key, n)

    firsts: dict[int, float] = {}
    cpu: dict[int, float] = {}
    original = reference.party_vector

    def timed_vector(round_: int, *a: Any, **kw: Any) -> np.ndarray:
        if round_ not in firsts:
            firsts[round_], cpu[round_] = time.perf_counter(), time.process_time()
        return original(round_, *a, **kw)

    reference.party_vector = timed_vector  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        run = reference.plain_fedavg(data, validated, permutation_for)
        t_end, c_end = time.perf_counter(), time.process_time()
    finally:
        reference.party_vector = original  # type: ignore[assignment]
    rs = sorted(firsts)
    ends = [firsts[r + 1] for r in rs[:-1]] + [t_end]
    cpu_ends = [cpu[r + 1] for r in rs[:-1]] + [c_end]
    return {
        "setup": firsts[rs[0]] - t0,
        "rounds": [e - firsts[r] for r, e in zip(rs, ends, strict=True)],
        "cpu_rounds": [e - cpu[r] for r, e in zip(rs, cpu_ends, strict=True)],
        "theta": run.thetas[-1],
        "final": run.metrics[-1],
    }


def masking_work(n: int, size: int, reps: int = 15) -> float:
    """The secure-aggregation work of one round in isolation (median seconds over `reps`):
    every party derives its N-1 pairwise keys (X25519 + SHA-256), expands them and its
    self-mask with ChaCha20 and adds them; the aggregator sums, rebuilds every self-mask
    seed from t Shamir shares, checks it against its commitment, and removes the
    self-masks. (Shares are dealt in the one-off setup, not per round.)"""
    t = default_threshold(n)
    xs = list(range(1, n + 1))
    privs = [os.urandom(32) for _ in range(n)]
    pubs = [secagg.public_bytes(k) for k in privs]
    seeds = [os.urandom(32) for _ in range(n)]
    shares = [secagg.share(int.from_bytes(b, "big"), t, xs, os.urandom(secagg.COEFF_BYTES * (t - 1))) for b in seeds]
    commits = [secagg.seed_commitment(b, BINDING, 1, i) for i, b in enumerate(seeds)]
    x = [np.zeros(size, dtype=np.uint64) for _ in range(n)]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        total = np.zeros(size, dtype=np.uint64)
        for i in range(n):
            y = x[i].copy()
            for j in range(n):
                if j != i:
                    mask = secagg.expand(secagg.pair_key(privs[i], pubs[j], BINDING, 1, i, j), size)
                    y = y + mask if i < j else y - mask
            y += secagg.expand(secagg.self_key(seeds[i], BINDING, 1, i), size)
            total += y
        for i in range(n):
            seed = secagg.reconstruct([(xs[k], shares[i][k]) for k in range(t)]).to_bytes(32, "big")
            assert secagg.seed_commitment(seed, BINDING, 1, i) == commits[i]
            total -= secagg.expand(secagg.self_key(seed, BINDING, 1, i), size)
        times.append(time.perf_counter() - t0)
        assert not total.any()
    return statistics.median(times)


def summarise(runs: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    train = [t for r in runs for t in r["rounds"][:rounds]]
    evaluate = [r["rounds"][rounds] for r in runs]
    cpu_train = [t for r in runs for t in r["cpu_rounds"][:rounds]]
    return {
        "per_round_seconds": round(statistics.median(train), 5),
        "per_round_cpu_seconds": round(statistics.median(cpu_train), 5),
        "evaluation_round_seconds": round(statistics.median(evaluate), 5),
        "setup_seconds": round(statistics.median(r["setup"] for r in runs), 4),
        "rounds_seconds_all": [[round(t, 5) for t in r["rounds"]] for r in runs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000, help="rows per party")
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5, help="training rounds (plus one evaluation round)")
    ap.add_argument("--parties", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--models", nargs="+", default=["logreg", "mlp"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    wall = time.perf_counter()
    load_start = os.getloadavg()
    features = [f"x{k}" for k in range(args.features)]
    configs: list[dict[str, Any]] = []
    for n in args.parties:
        data = synthetic(n, args.rows, args.features, args.seed + n)
        tables = [to_table(x, y, features) for x, y in data]
        for model in args.models:
            params = make_params(model, features, args.rounds, True)
            params_pairwise = make_params(model, features, args.rounds, False)
            secure: list[dict[str, Any]] = []
            pairwise: list[dict[str, Any]] = []
            plain: list[dict[str, Any]] = []
            load = os.getloadavg()
            for rep in range(args.repeats):
                order = ("secure", "pairwise", "plain") if rep % 2 == 0 else ("plain", "pairwise", "secure")
                for which in order:
                    if which == "secure":
                        secure.append(run_secure(tables, params))
                    elif which == "pairwise":
                        pairwise.append(run_secure(tables, params_pairwise))
                    else:
                        plain.append(run_plain(data, params))
            for r in secure + pairwise:  # the masks cancel exactly: the same model bit for bit
                assert np.array_equal(r["theta"], plain[0]["theta"]), "secure and plain FedAvg models differ"
                assert r["final"]["accuracy"] == plain[0]["final"]["accuracy"]
            s, pw, p = summarise(secure, args.rounds), summarise(pairwise, args.rounds), summarise(plain, args.rounds)
            num_params = mdl.num_parameters(mdl.layer_shapes(args.features, HIDDEN if model == "mlp" else []))
            work = masking_work(n, num_params + 1 + mdl.METRIC_SIZE)
            cfg = {
                "parties": n,
                "model": model if model == "logreg" else f"mlp {HIDDEN} relu",
                "parameters": num_params,
                "vector_entries_per_round": num_params + 1 + mdl.METRIC_SIZE,
                "threshold": secure[0]["threshold"],
                "secure": s,
                "secure_pairwise_only": pw,
                "plain": p,
                "ratio_vs_plain": round(s["per_round_seconds"] / p["per_round_seconds"], 3),
                "ratio_vs_plain_pairwise_only": round(pw["per_round_seconds"] / p["per_round_seconds"], 3),
                "ratio_vs_plain_cpu_seconds": round(s["per_round_cpu_seconds"] / p["per_round_cpu_seconds"], 3),
                "overhead_per_round_seconds": round(s["per_round_seconds"] - p["per_round_seconds"], 5),
                "masking_work_per_round_seconds_isolated": round(work, 6),
                "ratio_vs_plain_from_isolated_masking_work": round(
                    (p["per_round_seconds"] + work) / p["per_round_seconds"], 4
                ),
                "final_accuracy": plain[0]["final"]["accuracy"],
                "final_auc": plain[0]["final"]["auc"],
                "load_average_at_start": [round(x, 2) for x in load],
            }
            configs.append(cfg)
            print(
                f"N={n} {model}: secure {s['per_round_seconds']:.4f} s/round, pairwise-only "
                f"{pw['per_round_seconds']:.4f}, plain {p['per_round_seconds']:.4f} -> "
                f"{cfg['ratio_vs_plain']}x, CPU {cfg['ratio_vs_plain_cpu_seconds']}x "
                f"(setup {s['setup_seconds']:.2f} s)",
                flush=True,
            )
    worst = max(c["ratio_vs_plain"] for c in configs)
    worst_cpu = max(c["ratio_vs_plain_cpu_seconds"] for c in configs)
    out: dict[str, Any] = {
        "benchmark": "fedavg",
        "rows_per_party": args.rows,
        "features": args.features,
        "training_rounds": args.rounds,
        "local_epochs": 1,
        "batch_size": 64,
        "repeats": args.repeats,
        "configs": configs,
        "ratio_vs_plain_max": worst,
        "ratio_vs_plain_cpu_seconds_max": worst_cpu,
        "target": "round time with secure aggregation <= 1.5x without",
        "target_met": worst <= 1.5,
        "per_round": "median over all training rounds of all repetitions (wall clock; CPU: process time)",
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
        "command": (
            f"python bench/fedavg.py --rows {args.rows} --features {args.features} --rounds {args.rounds} "
            f"--repeats {args.repeats}"
        ),
        "total_seconds": round(time.perf_counter() - wall, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    if not args.no_readme:
        readme_row(out)


def fmt_ms(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s >= 0.1 else f"{s * 1000:.1f} ms"


def readme_row(out: dict[str, Any]) -> None:
    cs = out["configs"]
    label = {c["model"]: ("logreg" if c["model"] == "logreg" else "MLP") for c in cs}
    ns = ", ".join(str(n) for n in sorted({c["parties"] for c in cs}))
    workload = (
        f"N = {ns} parties x {out['rows_per_party']:,} rows, "
        f"{out['features']} features; logreg and MLP {HIDDEN}; {out['training_rounds']} rounds + evaluation, "
        f"1 local epoch, batch {out['batch_size']}"
    )
    ours = "; ".join(
        f"N={c['parties']} {label[c['model']]} {fmt_ms(c['secure']['per_round_seconds'])}/round" for c in cs
    )
    peer = "plain FedAvg (reference.py): " + "; ".join(
        f"N={c['parties']} {label[c['model']]} {fmt_ms(c['plain']['per_round_seconds'])}" for c in cs
    )
    ratio = "; ".join(
        f"N={c['parties']} {label[c['model']]} {c['ratio_vs_plain']}x (CPU {c['ratio_vs_plain_cpu_seconds']}x)"
        for c in cs
    )
    setup = ", ".join(f"N={c['parties']} {label[c['model']]} {c['secure']['setup_seconds']} s" for c in cs)
    pairwise = ", ".join(f"{c['ratio_vs_plain_pairwise_only']}x" for c in cs)
    work = ", ".join(
        f"{fmt_ms(c['masking_work_per_round_seconds_isolated'])} ({c['ratio_vs_plain_from_isolated_masking_work']}x)"
        for c in cs
    )
    m = out["machine"]
    notes = (
        f"secure = pairwise X25519/ChaCha20 masks + self-masks + Shamir shares (dropout-tolerant); pairwise masks "
        f"only: {pairwise}; masking work per round measured alone: {work}; same model bit for bit; "
        f"all parties in one process, median of {out['repeats']} alternating runs; "
        f"one-off setup incl. reading rows: {setup}; {m['cpus']} cores, load "
        f"{m['load_average_start'][0]:.1f} at start (`{out['command']}`)"
    )
    row = f"| fedavg | {workload} | {ours} | {peer} | {ratio} | {notes} |\n"
    replace_row(BENCH / "README.md", "| fedavg |", row)


if __name__ == "__main__":
    main()
