"""The ciphertext work of hetero-sbt, as module-level jobs for `Protocol.pmap` (the node's
process pool): the guest's encryption of packed gradient rows, a host's encrypted histogram
sums, cipher compression and full re-randomisation. Every job is a pure function of its
arguments, so how the runtime splits the work over processes never changes a byte.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from pcn.algorithms.vertical import Drbg
from pcn.crypto.paillier import FixedBaseObfuscator, PaillierPrivateKey, PaillierPublicKey

_TABLES: dict[tuple[int, int, int, int], FixedBaseObfuscator] = {}


def _obfuscator(n: int, h: int, window: int, exponent_bits: int) -> FixedBaseObfuscator:
    """The fixed-base table of (n, h), built once per process (the pool keeps its workers)."""
    key = (n, h, window, exponent_bits)
    obf = _TABLES.get(key)
    if obf is None:
        if len(_TABLES) > 4:
            _TABLES.clear()
        obf = FixedBaseObfuscator(PaillierPublicKey(mpz(n)), h=h, exponent_bits=exponent_bits, window_bits=window)
        _TABLES[key] = obf.prepare()
    return obf


def encrypt_job(job: tuple[int, int, int, int, list[tuple[bytes, list[int]]]]) -> list[bytes]:
    """(n, h, window, exponent bits, [(32-byte chunk key, plaintexts)]) -> per chunk the
    ciphertexts (1 + n·m)·h^e mod n², e from ChaCha20 under the chunk key, as bytes."""
    n, h, window, bits, chunks = job
    obf = _obfuscator(n, h, window, bits)
    nn = mpz(n)
    nsq = nn * nn
    width = (int(nsq.bit_length()) + 7) // 8
    power = obf.power
    out: list[bytes] = []
    for key, plaintexts in chunks:
        drbg = Drbg(key)
        parts = []
        for m in plaintexts:
            rn = power(drbg.randbits(bits))
            c = (rn + nn * (mpz(m) * rn % nn)) % nsq
            parts.append(int(c).to_bytes(width, "big"))
        out.append(b"".join(parts))
    return out


def parse(data: bytes, width: int) -> list[mpz]:
    return [mpz(int.from_bytes(data[i : i + width], "big")) for i in range(0, len(data), width)]


def histogram_job(job: tuple[int, bytes, np.ndarray, int]) -> bytes:
    """(n, ciphertexts of some rows, target slot of each (row, feature) as a (rows, features)
    int64 array, -1 for none, slot count) -> the product of the ciphertexts of every slot
    (Enc of the slot's sum; 1 for an empty slot) as bytes."""
    n, data, slots, count = job
    nn = mpz(n)
    nsq = nn * nn
    width = (int(nsq.bit_length()) + 7) // 8
    cts = parse(data, width)
    acc: list[mpz | None] = [None] * count
    for c, row in zip(cts, slots.tolist(), strict=True):
        for s in row:
            if s >= 0:
                a = acc[s]
                acc[s] = c if a is None else a * c % nsq
    return b"".join(int(1 if a is None else a).to_bytes(width, "big") for a in acc)


def histogram_pairs_job(job: tuple[int, bytes, np.ndarray, np.ndarray, int, list[int]]) -> bytes:
    """What `histogram_job` computes, with fewer multiplications: (n, ciphertexts of some rows,
    their bins (rows, features), the node of each row (0..nodes-1), nodes, bins per feature) ->
    for every node, feature and bin 0..nb-2 the product of the ciphertexts of the node's rows in
    that bin (1 for none), as bytes, node by node, features in order.

    Features are taken in pairs where it pays: every row is multiplied once into the JOINT bin
    (b1, b2) of the pair, and each feature's bin products are then the products of a row or a
    column of joint bins: rows + 2·nb1·nb2 multiplications per pair and node instead of 2·rows.
    Multiplication modulo n² is commutative and associative, so every slot holds the same
    integer as the one-by-one product: no byte depends on the grouping."""
    n, data, bins, node, nodes, bin_counts = job
    nn = mpz(n)
    nsq = nn * nn
    width = (int(nsq.bit_length()) + 7) // 8
    cts = parse(data, width)
    starts = [0]
    for b in bin_counts:
        starts.append(starts[-1] + max(0, b - 1))
    V = starts[-1]
    out: list[mpz | None] = [None] * (V * nodes)
    feats = [f for f, b in enumerate(bin_counts) if b > 1]
    rows = len(cts)

    def accumulate(acc: list[mpz | None], index: list[int]) -> None:
        for c, j in zip(cts, index, strict=True):
            if j >= 0:
                a = acc[j]
                acc[j] = c if a is None else a * c % nsq

    def fold(values: list[mpz | None]) -> mpz | None:
        acc: mpz | None = None
        for v in values:
            if v is not None:
                acc = v if acc is None else acc * v % nsq
        return acc

    k = 0
    while k < len(feats):
        f1 = feats[k]
        f2 = feats[k + 1] if k + 1 < len(feats) else -1
        nb1 = bin_counts[f1]
        nb2 = bin_counts[f2] if f2 >= 0 else 0
        if f2 >= 0 and rows > 2 * nodes * nb1 * nb2:
            joint: list[mpz | None] = [None] * (nodes * nb1 * nb2)
            accumulate(joint, (node * (nb1 * nb2) + bins[:, f1].astype(np.int64) * nb2 + bins[:, f2]).tolist())
            for v in range(nodes):
                block = joint[v * nb1 * nb2 : (v + 1) * nb1 * nb2]
                for b in range(nb1 - 1):
                    out[v * V + starts[f1] + b] = fold(block[b * nb2 : (b + 1) * nb2])
                for b in range(nb2 - 1):
                    out[v * V + starts[f2] + b] = fold(block[b::nb2])
            k += 2
            continue
        b1 = bins[:, f1].astype(np.int64)
        accumulate(out, np.where(b1 < nb1 - 1, node * V + starts[f1] + b1, -1).tolist())
        k += 1
    return b"".join(int(1 if a is None else a).to_bytes(width, "big") for a in out)


def combine(parts: Sequence[bytes], width: int, n: int) -> list[mpz]:
    """The slot-wise product of several `histogram_job` outputs."""
    nsq = mpz(n) * mpz(n)
    total = parse(parts[0], width)
    for p in parts[1:]:
        total = [a * b % nsq for a, b in zip(total, parse(p, width), strict=True)]
    return total


def pack_job(job: tuple[int, int, bytes, int]) -> bytes:
    """(n, slot bits T, ciphertexts, values per packed ciphertext K) -> the packed
    ciphertexts Π_j c_j^(2^(T·j)) (Horner: T squarings per value), K at a time."""
    n, T, data, K = job
    nn = mpz(n)
    nsq = nn * nn
    width = (int(nsq.bit_length()) + 7) // 8
    cts = parse(data, width)
    shift = mpz(1) << T
    out = []
    for i in range(0, len(cts), K):
        group = cts[i : i + K]
        acc = group[-1]
        for c in reversed(group[:-1]):
            acc = gmpy2.powmod(acc, shift, nsq) * c % nsq
        out.append(int(acc).to_bytes(width, "big"))
    return b"".join(out)


def _window_table(base: mpz, modulus: mpz, bits: int, window: int) -> list[list[mpz]]:
    table: list[list[mpz]] = []
    for _ in range(-(-bits // window)):
        row = [mpz(1), base]
        for _ in range((1 << window) - 2):
            row.append(row[-1] * base % modulus)
        table.append(row)
        base = row[-1] * base % modulus
    return table


def _crt_window(count: int, bits: int) -> int:
    """The window minimising table building + `count` exponentiations (in multiplications)."""
    return min(range(4, 14), key=lambda w: -(-bits // w) * ((1 << w) + count))


def encrypt_crt_job(job: tuple[int, int, int, int, list[tuple[bytes, list[int]]]]) -> list[bytes]:
    """What `encrypt_job` computes, by the key holder: (p, q, h, exponent bits, chunks) -> the
    same ciphertexts (1 + n·m)·h^e mod n², each computed modulo p² and q² (window tables of
    h there, half-size multiplications) and recombined by the CRT. The result is the same
    integer, so the bytes do not depend on which job computed them; the tables, derived from
    the secret factors, are built per job and dropped with it."""
    p, q, h, bits, chunks = job
    P, Q = mpz(p), mpz(q)
    n = P * Q
    psq, qsq = P * P, Q * Q
    nsq = n * n
    width = (int(nsq.bit_length()) + 7) // 8
    window = _crt_window(sum(len(c) for _, c in chunks), bits)
    tables = (_window_table(mpz(h) % psq, psq, bits, window), _window_table(mpz(h) % qsq, qsq, bits, window))
    inv = gmpy2.invert(psq, qsq)
    mask = (1 << window) - 1
    out: list[bytes] = []
    for key, plaintexts in chunks:
        drbg = Drbg(key)
        parts = []
        for m in plaintexts:
            e = drbg.randbits(bits)
            res = []
            for table, mod in zip(tables, (psq, qsq), strict=True):
                acc = mpz(1)
                x = e
                for row in table:
                    d = x & mask
                    x >>= window
                    if d:
                        acc = acc * row[d] % mod
                res.append((1 + mpz(m) * n) * acc % mod)
            cp, cq = res
            c = cp + psq * ((cq - cp) * inv % qsq)
            parts.append(int(c).to_bytes(width, "big"))
        out.append(b"".join(parts))
    return out


def decrypt_job(job: tuple[int, int, bytes]) -> list[int]:
    """(p, q, ciphertexts) -> their residues (CRT decryption), one unit of the key holder's pool work."""
    p, q, data = job
    P, Q = mpz(p), mpz(q)
    n = P * Q
    width = (int((n * n).bit_length()) + 7) // 8
    sk = PaillierPrivateKey(PaillierPublicKey(n), P, Q)
    return [int(m) for m in sk.raw_decrypt_many(parse(data, width))]
