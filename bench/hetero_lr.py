"""Vertical logistic regression: pcn's HeteroLrProtocol vs the same protocol written with `phe`.

Workload: ROWS (default 100,000) synthetic rows with a logistic ground truth
(y ~ Bernoulli(sigmoid(x·w* + b*)), x ~ N(0, 1)), 10 features + the label at the guest and
10 features at one host; ONE epoch of mini-batch gradient descent, batch_size 4096
(-> ROWS // 4096 near-equal batches, 24 of ~4,167 rows at 100k), learning rate 0.15,
l2 0.01, standardised features, 2048-bit Paillier keys, no class weights.

(a) pcn: two `HeteroLrProtocol` parties (guest + 1 host) driven in-process by `run_local`,
    with a process-pool `parallel_map` as the node runtime gives them
    (`ProcessPoolExecutor(os.cpu_count())`, spawn context, started and warmed up before the
    clock starts: the runtime keeps its pool for the worker's lifetime). Timed from
    `start()` (key derivation included) to the end of the protocol; building the parties
    (reading the Table, sorting IDs, standardising) is timed separately.

(b) phe: the same protocol steps written in this file with phe's EncryptedNumber API
    (phe on gmpy2, default obfuscation r^n on every encryption), one process, on the same
    batches (the public `seed_split` batch order) with the same fixed-point exponents
    (residual 2^-64, scores 2^-32, features 2^-24, so both compute the same numbers):
      1. guest encrypts d_G = ¼·(X_G w_G + b) + ½ - y per row under its key G;
         host encrypts u_H = X_H w_H per row under its key L;
      2. host: [[d]] = [[d_G]] + ¼·u_H (encoded scalar added), [[g_H]] = X_H^T [[d]] by
         per-element multiplication and addition, + a fresh encryption of a uniform mask
         R_H ∈ Z_n; guest: [[X'^T u_H]] with X' = ¼·[X_G, 1], + Enc_L(R_G);
      3. guest decrypts the host's masked gradient, host decrypts the guest's; each removes
         its mask, divides by m, adds l2·w and steps.
    Both keys are generated in the run (timed), like pcn derives its two keys in setup.
    At 100k rows this takes ~40 min, so by default only the first --phe-batches batches run
    encrypted (timed) and the time is extrapolated linearly per batch; the rest of the
    epoch continues with the same math in plaintext (not timed) so the AUC of the full
    epoch can be compared. JSON: `phe_extrapolated_from_batches` (null when all ran).

With --one-core, pcn also runs without the pool (parallel_map None, everything in this
process) between the two halves, to show what the pool buys on this machine.

Every figure is reported as wall time and as CPU seconds (pcn: this process plus the pool
workers, from /proc; phe: this process): on a shared machine the CPU seconds are the
figure the other load disturbs least.

Checks: after every encrypted phe batch the weights equal pcn's after the same step (both
parties, |Δ| < 1e-9), and the AUC of the two final models agree within 1e-3.

    .venv/bin/python bench/hetero_lr.py [--rows 100000] [--key-bits 2048] [--batch-size 4096]
                                        [--phe-batches 2] (0: every batch with phe) [--one-core]

Writes bench/results/hetero_lr.json and the `| hetero-lr |` row of bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
import phe
from common import replace_row  # bench/ is on sys.path when run as a script
from phe import EncodedNumber, EncryptedNumber, paillier

from pcn.algorithms.base import PartyContext, run_local
from pcn.algorithms.hetero_lr.common import epoch_batches, split_key
from pcn.algorithms.hetero_lr.protocol import P_D, P_U, P_X, HeteroLrProtocol
from pcn.data.table import Table

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "hetero_lr.json"
GUEST, HOST = "0xguest", "0xhost"
SEED_SPLIT = 1


def _noop(_: int) -> int:
    return 0


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- data ---------------------------------------------------------------------------------


def synthetic(rows: int, d_guest: int, d_host: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = d_guest + d_host
    x = rng.normal(size=(rows, d))
    w_true = rng.normal(scale=1.0 / np.sqrt(d) * 1.5, size=d)
    z = x @ w_true - 0.5
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return x[:, :d_guest], x[:, d_guest:], y


def table(ids: list[str], x: np.ndarray, prefix: str, y: np.ndarray | None = None) -> Table:
    cols: dict[str, list[str | None]] = {"id": list(ids)}
    for j in range(x.shape[1]):
        cols[f"{prefix}{j}"] = [repr(v) for v in x[:, j].tolist()]
    if y is not None:
        cols["y"] = [str(int(v)) for v in y.tolist()]
    return Table(cols)


def standardise(x: np.ndarray) -> np.ndarray:
    """As the protocol does: own mean, population std (1 for a constant column)."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std < 1e-12] = 1.0
    return np.ascontiguousarray((x - mean) / std)


def auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


# -- (a) pcn --------------------------------------------------------------------------------


def run_pcn(
    guest_table: Table, host_table: Table, params: dict[str, Any], pmap: Callable[..., list[Any]] | None
) -> dict[str, Any]:
    """Both parties in one process; returns timings, the final weights and every step's
    weights (read from the parties at the start of each step, for the cross-check)."""
    t0 = time.perf_counter()
    parties = []
    for me, tbl in ((GUEST, guest_table), (HOST, host_table)):
        ctx = PartyContext(
            task_id=1,
            me=me,
            participants=[GUEST, HOST],
            recipient=GUEST,
            params=dict(params),
            seed=hashlib.sha256(f"bench/hetero-lr/{me}".encode()).digest(),
            id_column="id",
            parallel_map=pmap,
        )
        parties.append(HeteroLrProtocol.create(ctx, tbl))
    load_s = time.perf_counter() - t0
    guest, host = parties
    step_re = re.compile(r"step (\d+)/(\d+)")
    weights: dict[str, dict[int, np.ndarray]] = {GUEST: {}, HOST: {}}
    step_start: dict[int, float] = {}
    evaluated: list[float] = []

    def progress_for(p: HeteroLrProtocol) -> Callable[[float, str], None]:
        def cb(_: float, what: str) -> None:
            m = step_re.search(what)
            if m:
                s = int(m.group(1)) - 1
                weights[p.ctx.me][s] = p._w.copy()
                if p is guest:
                    step_start[s] = time.perf_counter()
            elif p is guest and what.startswith("epoch ") and what.endswith("evaluated"):
                evaluated.append(time.perf_counter())

        return cb

    for p in parties:
        p.ctx.progress = progress_for(p)
    t1 = time.perf_counter()
    run_local(parties)
    t_end = time.perf_counter()
    result = json.loads(guest.result() or b"{}")
    g_model = result["model"]["guest"]
    w_guest = np.array([*g_model["weights"], g_model["intercept"]])
    w_host = np.array(host.model_state()["weights"])
    steps = sorted(step_start)
    # each step from its start to the next one's; the last one up to the epoch's evaluation
    ends = [step_start[s + 1] for s in steps[:-1]] + [evaluated[0]]
    per_step = [e - step_start[s] for s, e in zip(steps, ends, strict=True)]
    return {
        "load_seconds": load_s,
        "protocol_seconds": t_end - t1,
        "setup_seconds": step_start[0] - t1,  # key derivation, setup messages, obfuscator tables
        "steps_seconds": evaluated[0] - step_start[0],
        "final_seconds": t_end - evaluated[0],  # epoch-end metrics, model commitments, result
        "per_step_seconds": per_step,
        "w_guest": w_guest,
        "w_host": w_host,
        "step_weights": weights,
        "metrics": result["metrics"],
        "steps": len(steps),
    }


# -- (b) the same protocol with phe --------------------------------------------------------


class PheParty:
    """The phe-based implementation: one key pair per key-owning party."""

    def __init__(self, key_bits: int) -> None:
        self.pk, self.sk = paillier.generate_paillier_keypair(n_length=key_bits)


def phe_step(
    xg: np.ndarray,  # guest features + intercept column, rows of the batch
    xh: np.ndarray,  # host features, rows of the batch
    y: np.ndarray,
    wg: np.ndarray,
    wh: np.ndarray,
    g: PheParty,  # guest's key (residuals)
    lead: PheParty,  # host's key (score shares)
    lr: float,
    l2: float,
    secs: dict[str, float],
) -> tuple[np.ndarray, np.ndarray]:
    """One mini-batch step of the protocol with phe's EncryptedNumber API; returns (wg, wh)."""
    m = len(y)
    pk_g, pk_l = g.pk, lead.pk
    prec_d, prec_u, prec_x = 2.0**-P_D, 2.0**-P_U, 2.0**-P_X

    # 1. guest: [[d_G]]_G per row; host: [[u_H]]_L per row
    t = time.perf_counter()
    u_g = xg @ wg
    d_g = 0.25 * u_g + 0.5 - y
    enc_dg = [pk_g.encrypt(float(v), precision=prec_d) for v in d_g]
    u_h = xh @ wh
    enc_uh = [pk_l.encrypt(float(v), precision=prec_u) for v in u_h]
    secs["encrypt"] += time.perf_counter() - t

    # 2a. host: [[d]] = [[d_G]] + ¼u_H, then X_H^T [[d]] + Enc(R_H)
    t = time.perf_counter()
    enc_d = [
        e + EncodedNumber.encode(pk_g, 0.25 * float(u), precision=prec_d) for e, u in zip(enc_dg, u_h, strict=True)
    ]
    xh_enc = [[EncodedNumber.encode(pk_g, float(v), precision=prec_x) for v in row] for row in xh.tolist()]
    grad_h: list[EncryptedNumber] = []
    for j in range(xh.shape[1]):
        acc = enc_d[0] * xh_enc[0][j]
        for i in range(1, m):
            acc = acc + enc_d[i] * xh_enc[i][j]
        grad_h.append(acc)
    # 2b. guest: X'^T [[u_H]]_L with X' = ¼·[X_G, 1]
    xs = 0.25 * xg
    xg_enc = [[EncodedNumber.encode(pk_l, float(v), precision=prec_x) for v in row] for row in xs.tolist()]
    grad_g: list[EncryptedNumber] = []
    for k in range(xg.shape[1]):
        acc = enc_uh[0] * xg_enc[0][k]
        for i in range(1, m):
            acc = acc + enc_uh[i] * xg_enc[i][k]
        grad_g.append(acc)
    secs["dot"] += time.perf_counter() - t

    # masks: uniform R in Z_n, freshly encrypted (re-randomises the sum too)
    t = time.perf_counter()
    r_h = [secrets.randbelow(pk_g.n) for _ in grad_h]
    masked_h = [e + EncryptedNumber(pk_g, pk_g.raw_encrypt(r), e.exponent) for e, r in zip(grad_h, r_h, strict=True)]
    r_g = [secrets.randbelow(pk_l.n) for _ in grad_g]
    masked_g = [e + EncryptedNumber(pk_l, pk_l.raw_encrypt(r), e.exponent) for e, r in zip(grad_g, r_g, strict=True)]

    # 3. guest decrypts the host's, the lead host the guest's; unmask, decode, step
    res_h = [g.sk.raw_decrypt(e.ciphertext(be_secure=False)) for e in masked_h]
    res_g = [lead.sk.raw_decrypt(e.ciphertext(be_secure=False)) for e in masked_g]

    def unmask(res: Sequence[int], masks: Sequence[int], pk: paillier.PaillierPublicKey, exponent: int) -> np.ndarray:
        out = []
        for r, mask in zip(res, masks, strict=True):
            v = EncodedNumber(pk, (r - mask) % pk.n, exponent).decode()
            out.append(float(v))
        return np.array(out)

    host_grad = unmask(res_h, r_h, pk_g, grad_h[0].exponent) / m + l2 * wh
    host_part = unmask(res_g, r_g, pk_l, grad_g[0].exponent)
    guest_grad = (xg.T @ d_g + host_part) / m
    guest_grad[:-1] += l2 * wg[:-1]
    secs["mask_decrypt_update"] += time.perf_counter() - t
    return wg - lr * guest_grad, wh - lr * host_grad


def plain_step(
    xg: np.ndarray, xh: np.ndarray, y: np.ndarray, wg: np.ndarray, wh: np.ndarray, lr: float, l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """The same step without encryption (to finish the epoch after the measured batches)."""
    m = len(y)
    d = 0.25 * (xg @ wg + xh @ wh) + 0.5 - y
    gg = xg.T @ d / m
    gg[:-1] += l2 * wg[:-1]
    gh = xh.T @ d / m + l2 * wh
    return wg - lr * gg, wh - lr * gh


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--guest-features", type=int, default=10)
    ap.add_argument("--host-features", type=int, default=10)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--learning-rate", type=float, default=0.15)
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--phe-batches", type=int, default=2, help="batches phe runs encrypted (0: all)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pcn's compute pool (1: none)")
    ap.add_argument("--one-core", action="store_true", help="also run pcn without the pool (parallel_map None)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    wall = time.perf_counter()
    load_start = os.getloadavg()

    xg_raw, xh_raw, y = synthetic(args.rows, args.guest_features, args.host_features, args.seed)
    ids = [f"id{i:09d}" for i in range(args.rows)]  # sorted = row order, as the protocol sorts by ID
    guest_table = table(ids, xg_raw, "g", y)
    host_table = table(ids, xh_raw, "h")
    params = {
        "label_column": "y",
        "batch_size": args.batch_size,
        "epochs": 1,
        "key_bits": args.key_bits,
        "learning_rate": args.learning_rate,
        "l2": args.l2,
        "seed_split": SEED_SPLIT,  # public batch order, so the phe implementation uses the same batches
    }
    batches = epoch_batches(split_key(SEED_SPLIT), 0, args.rows, args.batch_size)
    xg = np.hstack([standardise(xg_raw), np.ones((args.rows, 1))])
    xh = standardise(xh_raw)

    # ---- the run: phe's first half of the measured batches, then pcn, then phe's second
    # half, so that both see the machine's load at about the same times
    n_batches = len(batches)
    k = n_batches if args.phe_batches <= 0 else min(args.phe_batches, n_batches)
    secs = {"keygen": 0.0, "encrypt": 0.0, "dot": 0.0, "mask_decrypt_update": 0.0}
    state: dict[str, Any] = {"wg": np.zeros(xg.shape[1]), "wh": np.zeros(xh.shape[1]), "next": 0, "history": []}
    per_batch: list[float] = []
    phe_cpu = 0.0
    loads: dict[str, list[float]] = {}

    def phe_batches(upto: int) -> None:
        nonlocal phe_cpu
        while state["next"] < upto:
            s = state["next"]
            b = batches[s]
            t, c = time.perf_counter(), time.process_time()
            state["wg"], state["wh"] = phe_step(
                xg[b], xh[b], y[b], state["wg"], state["wh"], g_party, lead_party, args.learning_rate, args.l2, secs
            )
            per_batch.append(time.perf_counter() - t)
            phe_cpu += time.process_time() - c
            state["next"] = s + 1
            state["history"].append((state["wg"], state["wh"]))
            print(f"phe: batch {s + 1}/{n_batches} ({len(b)} rows) {per_batch[-1]:.1f} s", flush=True)

    loads["phe_start"] = list(os.getloadavg())
    t, c = time.perf_counter(), time.process_time()
    g_party, lead_party = PheParty(args.key_bits), PheParty(args.key_bits)
    secs["keygen"] = time.perf_counter() - t
    phe_keygen_cpu = time.process_time() - c
    phe_batches((k + 1) // 2)

    # pcn, with the runtime's kind of compute pool (started and warmed up first)
    pool = None
    pmap = None
    if args.workers > 1:
        pool = ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn"))
        list(pool.map(_noop, range(4 * args.workers)))

        def pmap(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            return list(pool.map(fn, items))

    loads["pcn_start"] = list(os.getloadavg())
    workers = list(pool._processes) if pool is not None else []  # type: ignore[attr-defined]
    workers_cpu = {w: proc_cpu(w) for w in workers}
    c = time.process_time()
    try:
        pcn = run_pcn(guest_table, host_table, params, pmap)
        pcn_cpu_main = time.process_time() - c
        pcn_cpu_pool = sum(proc_cpu(w) - workers_cpu[w] for w in workers)
    finally:
        if pool is not None:
            pool.shutdown()
    loads["pcn_end"] = list(os.getloadavg())
    print(
        f"pcn: {pcn['protocol_seconds']:.2f} s (setup {pcn['setup_seconds']:.2f} s, {pcn['steps']} steps), "
        f"AUC {pcn['metrics'][-1]['auc']:.5f}; CPU {pcn_cpu_main:.1f} s + pool {pcn_cpu_pool:.1f} s",
        flush=True,
    )
    one_core: dict[str, Any] | None = None
    if args.one_core:
        c = time.process_time()
        one_core = run_pcn(guest_table, host_table, params, None)
        one_core["cpu"] = time.process_time() - c
        loads["pcn_one_core_end"] = list(os.getloadavg())
        assert np.array_equal(one_core["w_host"], pcn["w_host"]) and np.array_equal(one_core["w_guest"], pcn["w_guest"])
        print(f"pcn without the pool: {one_core['protocol_seconds']:.2f} s, CPU {one_core['cpu']:.1f} s", flush=True)
    phe_batches(k)
    loads["phe_end"] = list(os.getloadavg())

    # the rest of the epoch in plaintext (not timed), and the cross-check of the weights
    wg, wh = state["wg"], state["wh"]
    for b in batches[k:]:
        wg, wh = plain_step(xg[b], xh[b], y[b], wg, wh, args.learning_rate, args.l2)
    max_dev = 0.0
    for s, (wg_s, wh_s) in enumerate(state["history"]):
        if s + 1 < pcn["steps"]:  # pcn's weights at the start of step s+1 = after s+1 updates
            dev = max(
                float(np.max(np.abs(pcn["step_weights"][GUEST][s + 1] - wg_s))),
                float(np.max(np.abs(pcn["step_weights"][HOST][s + 1] - wh_s))),
            )
            max_dev = max(max_dev, dev)
            assert dev < 1e-9, f"phe and pcn weights differ by {dev} after batch {s + 1}"
    measured = sum(per_batch)
    extrapolated = k < n_batches
    phe_steps = measured / k * n_batches if extrapolated else measured
    phe_total = secs["keygen"] + phe_steps
    phe_cpu_total = phe_keygen_cpu + (phe_cpu / k * n_batches if extrapolated else phe_cpu)
    pcn_cpu_total = pcn_cpu_main + pcn_cpu_pool
    # ---- same model quality
    auc_pcn = auc(y, xg @ pcn["w_guest"] + xh @ pcn["w_host"])
    auc_phe = auc(y, xg @ wg + xh @ wh)
    assert abs(auc_pcn - auc_phe) < 1e-3, (auc_pcn, auc_phe)
    assert abs(auc_pcn - pcn["metrics"][-1]["auc"]) < 1e-9
    final_dev = max(float(np.max(np.abs(pcn["w_guest"] - wg))), float(np.max(np.abs(pcn["w_host"] - wh))))
    from sklearn.linear_model import LogisticRegression

    xs = np.hstack([xg[:, :-1], xh])
    central = LogisticRegression(C=1.0 / (args.l2 * args.rows), max_iter=1000).fit(xs, y)
    auc_central = auc(y, central.decision_function(xs))

    pcn_time = pcn["protocol_seconds"]
    out: dict[str, Any] = {
        "benchmark": "hetero-lr",
        "rows": args.rows,
        "features": {"guest": args.guest_features, "host": args.host_features},
        "parties": {"guest": 1, "hosts": 1},
        "epochs": 1,
        "batch_size": args.batch_size,
        "batches": n_batches,
        "rows_per_batch": [int(min(len(b) for b in batches)), int(max(len(b) for b in batches))],
        "key_bits": args.key_bits,
        "learning_rate": args.learning_rate,
        "l2": args.l2,
        "pcn": {
            "seconds": round(pcn_time, 3),
            "setup_seconds": round(pcn["setup_seconds"], 3),
            "steps_seconds": round(pcn["steps_seconds"], 3),
            "per_step_seconds_mean": round(float(np.mean(pcn["per_step_seconds"])), 3),
            "per_step_seconds": [round(v, 3) for v in pcn["per_step_seconds"]],
            "load_table_seconds_not_counted": round(pcn["load_seconds"], 3),
            "compute_pool_workers": args.workers if args.workers > 1 else None,
            "cpu_seconds": round(pcn_cpu_total, 3),
            "cpu_seconds_main_process": round(pcn_cpu_main, 3),
            "cpu_seconds_pool_workers": round(pcn_cpu_pool, 3),
            "auc": round(auc_pcn, 6),
            "metrics": pcn["metrics"][-1],
        },
        "phe": {
            "seconds": round(phe_total, 3),
            "keygen_seconds": round(secs["keygen"], 3),
            "steps_seconds": round(phe_steps, 3),
            "per_batch_seconds_mean": round(measured / k, 3),
            "per_batch_seconds": [round(v, 3) for v in per_batch],
            "measured_seconds": round(secs["keygen"] + measured, 3),
            "breakdown_measured_seconds": {k_: round(v, 3) for k_, v in secs.items()},
            "processes": 1,
            "cpu_seconds": round(phe_cpu_total, 3),
            "cpu_seconds_measured": round(phe_keygen_cpu + phe_cpu, 3),
            "auc": round(auc_phe, 6),
        },
        "pcn_one_core": None
        if one_core is None
        else {
            "seconds": round(one_core["protocol_seconds"], 3),
            "setup_seconds": round(one_core["setup_seconds"], 3),
            "per_step_seconds_mean": round(float(np.mean(one_core["per_step_seconds"])), 3),
            "cpu_seconds": round(one_core["cpu"], 3),
            "ratio_vs_phe": round(one_core["protocol_seconds"] / phe_total, 4),
            "ratio_vs_phe_cpu_seconds": round(one_core["cpu"] / phe_cpu_total, 4),
            "same_model_as_with_pool": True,
        },
        "phe_extrapolated_from_batches": k if extrapolated else None,
        "ratio_vs_phe": round(pcn_time / phe_total, 4),
        "speedup_vs_phe": round(phe_total / pcn_time, 2),
        "ratio_vs_phe_cpu_seconds": round(pcn_cpu_total / phe_cpu_total, 4),
        "per_step_speedup_vs_phe": round((measured / k) / float(np.mean(pcn["per_step_seconds"])), 2),
        "target": "pcn >= 5x faster (ratio_vs_phe <= 0.2)",
        "target_met": pcn_time / phe_total <= 0.2,
        "auc_difference": round(abs(auc_pcn - auc_phe), 9),
        "max_weight_difference_after_measured_batches": max_dev,
        "max_weight_difference_final": final_dev,
        "auc_centralised_sklearn_logreg": round(auc_central, 6),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "gmpy2": gmpy2.version(),
            "gmp": gmpy2.mp_version(),
            "phe": phe.__version__,
            "numpy": np.__version__,
            "load_average_start": [round(x, 2) for x in load_start],
            **{f"load_average_{k_}": [round(x, 2) for x in v] for k_, v in loads.items()},
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "order": "phe keygen + first half of its measured batches, pcn with the pool, pcn without it "
            "(--one-core), phe's second half",
        },
        "command": (
            f"python bench/hetero_lr.py --rows {args.rows} --key-bits {args.key_bits} "
            f"--batch-size {args.batch_size} --phe-batches {args.phe_batches} --workers {args.workers}"
            + (" --one-core" if args.one_core else "")
        ),
        "total_seconds": round(time.perf_counter() - wall, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    if not args.no_readme:
        readme_row(out)


def readme_row(out: dict[str, Any]) -> None:
    p, q, one = out["pcn"], out["phe"], out.get("pcn_one_core")
    k = out["phe_extrapolated_from_batches"]
    phe_note = (
        f"phe time extrapolated from {k} of {out['batches']} batches ({q['per_batch_seconds_mean']:.1f} s/batch, "
        "measured before and after pcn), the rest of the epoch in plaintext for the AUC"
        if k
        else "phe ran every batch"
    )
    dev = out["max_weight_difference_after_measured_batches"]
    same = "bit-identical" if dev == 0 else f"equal within {dev:.0e}"
    m = out["machine"]
    workload = (
        f"{out['rows']:,} rows x ({out['features']['guest']} guest + {out['features']['host']} host) features, "
        f"1 epoch, batch {out['batch_size']} ({out['batches']} batches), {out['key_bits']}-bit keys"
    )
    ours = (
        f"{p['seconds']:.1f} s with a pool of {p['compute_pool_workers'] or 1} (setup incl. keys "
        f"{p['setup_seconds']:.1f} s, {p['per_step_seconds_mean']:.2f} s/batch; CPU {p['cpu_seconds']:.1f} s)"
    )
    if one:
        ours += f"; without the pool {one['seconds']:.1f} s (CPU {one['cpu_seconds']:.1f} s)"
    ours += f"; AUC {p['auc']:.4f}"
    peer = (
        f"phe {m['phe']} (gmpy2, one process) {q['seconds']:.0f} s (keygen {q['keygen_seconds']:.1f} s; "
        f"CPU {q['cpu_seconds']:.0f} s); AUC {q['auc']:.4f}"
    )
    ratio = f"{out['ratio_vs_phe']}x ({out['speedup_vs_phe']}x faster); CPU seconds {out['ratio_vs_phe_cpu_seconds']}x"
    if one:
        ratio += f"; without the pool {one['ratio_vs_phe']}x (CPU {one['ratio_vs_phe_cpu_seconds']}x)"
    notes = (
        f"{phe_note}; weights {same} after each measured batch, AUC diff {out['auc_difference']:.1e}; "
        f"{m['cpus']} cores, load {m['load_average_pcn_start'][0]:.1f} at pcn start, "
        f"{m['load_average_phe_start'][0]:.1f} / {m['load_average_phe_end'][0]:.1f} at phe start / end "
        f"(`{out['command']}`)"
    )
    row = f"| hetero-lr | {workload} | {ours} | {peer} | {ratio} | {notes} |\n"
    replace_row(BENCH / "README.md", "| hetero-lr |", row)


if __name__ == "__main__":
    main()
