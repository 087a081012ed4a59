"""Cost of hashing one ID to X25519 u-coordinate, before and after issue #13.1 (prints only;
writes no results file): `.venv/bin/python bench/hash_to_curve.py [ids]`.

- v1: SHA-256 of prefix | id with the top bit cleared (curve or twist; the hash #13.1 removed),
- v2: RFC 9380 curve25519_XMD:SHA-512_ELL2_RO_ (`pcn.crypto.curve25519.hash_many`), batched
  as PSI's `hash_blind_piece` calls it (pieces of PSI's PIECE IDs),
- one X25519 multiplication (the blinding every element gets once per party) for scale.

CPU time of this process (time.process_time), best of three runs, so other load on the
machine inflates it less than wall time would.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from pcn.algorithms.psi.protocol import PIECE
from pcn.crypto.curve25519 import hash_dst, hash_many


def v1_hash(prefix: bytes, ident: bytes) -> bytes:
    d = hashlib.sha256(prefix + ident).digest()
    return d[:31] + bytes((d[31] & 0x7F,))


def best_us_per_item(fn: Callable[[], object], items: int, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best / items * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    ids = [f"C{i:09d}".encode() for i in range(n)]
    binding = hashlib.sha256(b"a task binding").digest()
    prefix, dst = b"pcn/psi/v1" + binding, hash_dst(b"pcn/psi/v2", binding)
    v2 = hash_many(dst, ids)
    key = X25519PrivateKey.from_private_bytes(hashlib.sha256(b"key").digest())

    def blind_all() -> None:
        for u in v2:
            key.exchange(X25519PublicKey.from_public_bytes(u))

    old = best_us_per_item(lambda: [v1_hash(prefix, x) for x in ids], n)
    new = best_us_per_item(lambda: [hash_many(dst, ids[i : i + PIECE]) for i in range(0, n, PIECE)], n)
    x25519 = best_us_per_item(blind_all, n)
    print(f"{n} IDs, CPU us per ID: v1 SHA-256 {old:.2f}, v2 RFC 9380 {new:.2f}, one X25519 {x25519:.2f}")


if __name__ == "__main__":
    main()
