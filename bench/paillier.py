"""pcn Paillier (pcn.crypto.paillier) vs `phe` (python-paillier, on gmpy2) in one run, same 2048-bit key.

Operations, the same count for both libraries, every cost included:
  encrypt      floats at 2^-40 fixed point (phe: precision=2^-40, so both use the same exponent)
               pcn plain (fresh r^n), CRT by the key holder, fixed-base (DJN) obfuscation with
               h generation and table building counted, and fixed-base through a process pool
               (ObfuscatorPool, workers = CPU count; process start-up and pool fill counted)
  decrypt      CRT decryption (both libraries), one thread
  add          ciphertext + ciphertext
  mul_scalar   ciphertext * float scalar (half of them negative), both at 2^-40
  aggregation  P parties each encrypt an L-vector, an aggregator adds them, the key holder
               decrypts: pcn packs many values per ciphertext (Packer) with fixed-base
               obfuscation; phe uses one ciphertext per value. Reported in values/s.

The machine may be shared, so pcn and phe alternate in `--rounds` chunks for each
operation (both see the same load); load averages are recorded. Writes
bench/results/paillier.json and prints a markdown table row.

    .venv/bin/python bench/paillier.py [--ops 1500] [--cheap-ops 5000] [--parties 4] [--length 250]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
import phe

from pcn.crypto.paillier import (
    DEFAULT_PRECISION_BITS,
    EncryptedVector,
    FixedBaseObfuscator,
    ObfuscatorPool,
    PackedVector,
    Packer,
    PlainObfuscator,
    generate_keypair,
)

RESULTS = Path(__file__).resolve().parent / "results" / "paillier.json"
PREC = 2.0**-DEFAULT_PRECISION_BITS


def chunks(n: int, rounds: int) -> list[slice]:
    size = -(-n // rounds)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def alternate(n: int, rounds: int, ours: Callable[[slice], Any], theirs: Callable[[slice], Any]) -> tuple[float, float]:
    """Run ours/theirs on the same chunks, alternating; return total seconds of each."""
    t_ours = t_theirs = 0.0
    for k, sl in enumerate(chunks(n, rounds)):
        pair = [(ours, True), (theirs, False)] if k % 2 == 0 else [(theirs, False), (ours, True)]
        for fn, is_ours in pair:
            start = time.perf_counter()
            fn(sl)
            dt = time.perf_counter() - start
            if is_ours:
                t_ours += dt
            else:
                t_theirs += dt
    return t_ours, t_theirs


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1500, help="encryptions and decryptions per variant")
    parser.add_argument("--cheap-ops", type=int, default=5000, help="additions and scalar multiplications")
    parser.add_argument("--parties", type=int, default=4)
    parser.add_argument("--length", type=int, default=250, help="values per party in the aggregation")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the pool variant")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    wall = time.perf_counter()
    load_start = os.getloadavg()
    rng = np.random.default_rng(7)
    n_enc, n_cheap, rounds = args.ops, args.cheap_ops, args.rounds

    start = time.perf_counter()
    pk, sk = generate_keypair(2048)
    keygen_s = time.perf_counter() - start
    ppk = phe.PaillierPublicKey(int(pk.n))
    psk = phe.PaillierPrivateKey(ppk, int(sk.p), int(sk.q))

    values = rng.normal(0.0, 10.0, size=n_enc)
    secs: dict[str, float] = {}

    # ---- encryption -------------------------------------------------------------------------
    pcn_plain: list[EncryptedVector] = []
    phe_enc: list[Any] = []
    secs["encrypt_plain"], secs["phe_encrypt"] = alternate(
        n_enc,
        rounds,
        lambda sl: pcn_plain.append(pk.encrypt_vector(values[sl], obfuscator=PlainObfuscator(pk))),
        lambda sl: phe_enc.extend(ppk.encrypt(float(v), precision=PREC) for v in values[sl]),
    )
    pcn_crt: list[EncryptedVector] = []
    secs["encrypt_crt"], phe_again = alternate(
        n_enc,
        rounds,
        lambda sl: pcn_crt.append(sk.encrypt_vector(values[sl])),
        lambda sl: [ppk.encrypt(float(v), precision=PREC) for v in values[sl]],
    )
    secs["phe_encrypt"] += phe_again  # phe measured twice, alongside both slow pcn variants
    phe_encrypt_ops = 2 * n_enc

    start = time.perf_counter()
    fb = FixedBaseObfuscator(pk).prepare()  # h = (-x²)^n mod n², window table: counted
    fb_setup = time.perf_counter() - start
    pcn_fb: list[EncryptedVector] = []
    t_fb = 0.0
    for sl in chunks(n_enc, rounds):
        start = time.perf_counter()
        pcn_fb.append(pk.encrypt_vector(values[sl], obfuscator=fb))
        t_fb += time.perf_counter() - start
    secs["encrypt_fixed_base"] = fb_setup + t_fb

    start = time.perf_counter()
    pool = ObfuscatorPool(FixedBaseObfuscator(pk), workers=args.workers)  # fresh h, built in the workers
    pool.fill(n_enc)
    pool_fill = time.perf_counter() - start
    start = time.perf_counter()
    pcn_pool = [pk.encrypt_vector(values[sl], obfuscator=pool) for sl in chunks(n_enc, rounds)]
    secs["encrypt_fixed_base_pool"] = pool_fill + time.perf_counter() - start
    assert pool.misses == 0

    for name, vecs in (("plain", pcn_plain), ("crt", pcn_crt), ("fixed_base", pcn_fb), ("pool", pcn_pool)):
        first = vecs[0]
        assert np.allclose(sk.decrypt_vector(first), values[: len(first)], atol=PREC), name

    # ---- decryption -------------------------------------------------------------------------
    enc_all = EncryptedVector(pk, [c for v in pcn_fb for c in v.ciphertexts], DEFAULT_PRECISION_BITS)
    dec_pcn: list[np.ndarray] = []
    dec_phe: list[float] = []
    secs["decrypt"], secs["phe_decrypt"] = alternate(
        n_enc,
        rounds,
        lambda sl: dec_pcn.append(sk.decrypt_vector(enc_all[sl])),
        lambda sl: dec_phe.extend(psk.decrypt(e) for e in phe_enc[sl]),
    )
    assert np.allclose(np.concatenate(dec_pcn), values, atol=PREC)
    assert np.allclose(np.array(dec_phe), values, atol=PREC)

    # ---- additions and scalar multiplications (cheap: cycle over the ciphertexts) ---------------
    reps = -(-n_cheap // n_enc)
    a_pcn = EncryptedVector(pk, (enc_all.ciphertexts * reps)[:n_cheap], DEFAULT_PRECISION_BITS)
    b_pcn = EncryptedVector(pk, (enc_all.ciphertexts[::-1] * reps)[:n_cheap], DEFAULT_PRECISION_BITS)
    a_phe = (phe_enc * reps)[:n_cheap]
    b_phe = (phe_enc[::-1] * reps)[:n_cheap]
    sums_pcn: list[EncryptedVector] = []
    sums_phe: list[Any] = []
    secs["add"], secs["phe_add"] = alternate(
        n_cheap,
        rounds,
        lambda sl: sums_pcn.append(a_pcn[sl] + b_pcn[sl]),
        lambda sl: sums_phe.extend(x + y for x, y in zip(a_phe[sl], b_phe[sl], strict=True)),
    )
    scalars = rng.normal(0.0, 3.0, size=n_cheap)
    prods_pcn: list[EncryptedVector] = []
    prods_phe: list[Any] = []
    secs["mul_scalar"], secs["phe_mul_scalar"] = alternate(
        n_cheap,
        rounds,
        lambda sl: prods_pcn.append(a_pcn[sl] * scalars[sl]),
        lambda sl: prods_phe.extend(
            x * phe.EncodedNumber.encode(ppk, float(s), precision=PREC)
            for x, s in zip(a_phe[sl], scalars[sl], strict=True)
        ),
    )
    a_vals = np.resize(values, n_cheap)
    idx = [0, n_cheap // 2, n_cheap - 1]
    sum_all = EncryptedVector(pk, [c for v in sums_pcn for c in v.ciphertexts], DEFAULT_PRECISION_BITS)
    prod_all = EncryptedVector(pk, [c for v in prods_pcn for c in v.ciphertexts], 2 * DEFAULT_PRECISION_BITS)
    b_vals = np.resize(values[::-1], n_cheap)
    for i in idx:
        assert abs(sk.decrypt(sum_all[i]) - (a_vals[i] + b_vals[i])) < 1e-9
        assert abs(psk.decrypt(sums_phe[i]) - (a_vals[i] + b_vals[i])) < 1e-9
        assert abs(sk.decrypt(prod_all[i]) - a_vals[i] * scalars[i]) < 1e-8
        assert abs(psk.decrypt(prods_phe[i]) - a_vals[i] * scalars[i]) < 1e-8

    # ---- packed aggregation -------------------------------------------------------------------
    parties = [rng.normal(0.0, 100.0, size=args.length) for _ in range(args.parties)]
    expected = np.sum(parties, axis=0)
    packer = Packer.for_key(pk, value_bits=64, max_additions=1024, precision_bits=32)
    start = time.perf_counter()
    agg_fb = FixedBaseObfuscator(pk).prepare()  # setup counted again for this job
    packed = [packer.encrypt(pk, v, agg_fb) for v in parties]
    total = PackedVector.sum(packed)
    got_pcn = packer.decrypt(sk, total)
    secs["packed_aggregation"] = time.perf_counter() - start
    start = time.perf_counter()
    enc_parties = [[ppk.encrypt(float(x), precision=PREC) for x in v] for v in parties]
    acc = enc_parties[0]
    for other in enc_parties[1:]:
        acc = [x + y for x, y in zip(acc, other, strict=True)]
    got_phe = np.array([psk.decrypt(x) for x in acc])
    secs["phe_aggregation"] = time.perf_counter() - start
    assert np.allclose(got_pcn, expected, atol=args.parties * 2.0**-32)
    assert np.allclose(got_phe, expected, atol=1e-6)
    agg_values = args.parties * args.length

    pcn = {
        "encrypt_plain_per_s": rate(n_enc, secs["encrypt_plain"]),
        "encrypt_crt_per_s": rate(n_enc, secs["encrypt_crt"]),
        "encrypt_fixed_base_per_s": rate(n_enc, secs["encrypt_fixed_base"]),
        "encrypt_fixed_base_pool_per_s": rate(n_enc, secs["encrypt_fixed_base_pool"]),
        "decrypt_per_s": rate(n_enc, secs["decrypt"]),
        "add_per_s": rate(n_cheap, secs["add"]),
        "mul_scalar_per_s": rate(n_cheap, secs["mul_scalar"]),
        "packed_aggregation_values_per_s": rate(agg_values, secs["packed_aggregation"]),
    }
    theirs = {
        "encrypt_per_s": rate(phe_encrypt_ops, secs["phe_encrypt"]),
        "decrypt_per_s": rate(n_enc, secs["phe_decrypt"]),
        "add_per_s": rate(n_cheap, secs["phe_add"]),
        "mul_scalar_per_s": rate(n_cheap, secs["phe_mul_scalar"]),
        "aggregation_values_per_s": rate(agg_values, secs["phe_aggregation"]),
    }
    ratio = {
        "encrypt_plain": round(pcn["encrypt_plain_per_s"] / theirs["encrypt_per_s"], 2),
        "encrypt_crt": round(pcn["encrypt_crt_per_s"] / theirs["encrypt_per_s"], 2),
        "encrypt_fixed_base": round(pcn["encrypt_fixed_base_per_s"] / theirs["encrypt_per_s"], 2),
        "encrypt_fixed_base_pool": round(pcn["encrypt_fixed_base_pool_per_s"] / theirs["encrypt_per_s"], 2),
        "decrypt": round(pcn["decrypt_per_s"] / theirs["decrypt_per_s"], 2),
        "add": round(pcn["add_per_s"] / theirs["add_per_s"], 2),
        "mul_scalar": round(pcn["mul_scalar_per_s"] / theirs["mul_scalar_per_s"], 2),
        "packed_aggregation": round(pcn["packed_aggregation_values_per_s"] / theirs["aggregation_values_per_s"], 2),
    }
    result = {
        "benchmark": "paillier",
        "key_bits": pk.bits,
        "ops": {
            "encrypt": n_enc,
            "phe_encrypt": phe_encrypt_ops,
            "decrypt": n_enc,
            "add": n_cheap,
            "mul_scalar": n_cheap,
            "aggregation_values": agg_values,
        },
        "rounds": rounds,
        "pcn": pcn,
        "phe": theirs,
        "ratio_vs_phe": ratio,
        "seconds": {k: round(v, 4) for k, v in secs.items()},
        "setup_seconds_included": {
            "fixed_base_h_and_table": round(fb_setup, 4),
            "pool_start_and_fill": round(pool_fill, 4),
        },
        "keygen_seconds": round(keygen_s, 4),
        "fixed_base": {"exponent_bits": fb.exponent_bits, "window_bits": fb.window_bits, "pool_workers": args.workers},
        "packing": {
            "slot_bits": packer.slot_bits,
            "slots": packer.slots,
            "max_additions": packer.max_additions,
            "precision_bits": packer.precision_bits,
            "parties": args.parties,
            "length": args.length,
            "ciphertexts_per_party": len(packed[0].ciphertexts),
        },
        "precision_bits": DEFAULT_PRECISION_BITS,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "gmpy2": gmpy2.version(),
            "gmp": gmpy2.mp_version(),
            "phe": phe.__version__,
            "numpy": np.__version__,
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
        "total_seconds": round(time.perf_counter() - wall, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    workload = (
        f"{pk.bits}-bit key; {n_enc:,} enc/dec, {n_cheap:,} add/mul, packed aggregation {args.parties}x{args.length}"
    )
    ours = (
        f"enc {fmt(pcn['encrypt_fixed_base_per_s'])}/s fixed-base (pool {fmt(pcn['encrypt_fixed_base_pool_per_s'])}, "
        f"CRT {fmt(pcn['encrypt_crt_per_s'])}, plain {fmt(pcn['encrypt_plain_per_s'])}); "
        f"dec {fmt(pcn['decrypt_per_s'])}/s; add {fmt(pcn['add_per_s'])}/s; mul {fmt(pcn['mul_scalar_per_s'])}/s; "
        f"agg {fmt(pcn['packed_aggregation_values_per_s'])} values/s"
    )
    peer = (
        f"phe: enc {fmt(theirs['encrypt_per_s'])}/s; dec {fmt(theirs['decrypt_per_s'])}/s; "
        f"add {fmt(theirs['add_per_s'])}/s; mul {fmt(theirs['mul_scalar_per_s'])}/s; "
        f"agg {fmt(theirs['aggregation_values_per_s'])} values/s"
    )
    ratios = (
        f"enc {ratio['encrypt_fixed_base']}x (pool {ratio['encrypt_fixed_base_pool']}x, CRT {ratio['encrypt_crt']}x, "
        f"plain {ratio['encrypt_plain']}x); dec {ratio['decrypt']}x; add {ratio['add']}x; "
        f"mul {ratio['mul_scalar']}x; agg {ratio['packed_aggregation']}x"
    )
    notes = (
        f"obfuscator generation included; fixed-base = DJN short exponent ({fb.exponent_bits}-bit); "
        f"{packer.slots} values/ciphertext; pool {args.workers} procs; load {load_start[0]:.1f}"
    )
    print(f"| paillier | {workload} | {ours} | {peer} | {ratios} | {notes} |")


if __name__ == "__main__":
    main()
