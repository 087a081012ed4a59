"""The primitives of KKRT16 OT-extension PSI (Kolesnikov, Kumaresan, Rosulek, Trieu: "Efficient
Batched Oblivious PRF with Applications to Private Set Intersection", CCS 2016), semi-honest.

Everything here is pure and vectorised; the protocol (`protocol.py`) wires it to messages.
Bit matrices are numpy uint8 arrays of packed bits, most significant bit first (np.packbits'
default order): a matrix of r rows and c columns is an (r, c / 8) array.

- Base OTs: Bellare-Micali random OTs with one sender key, as in Chou-Orlandi's "simplest OT",
  on edwards25519 (libsodium through PyNaCl), WIDTH of them. C is a public point of unknown
  discrete log (Elligator 2 of a hash of the task binding). The OT receiver (the PSI sender S,
  choice bits s) picks a scalar k_j per OT and sends P_j = k_j G if s_j = 0, else C - k_j G.
  The OT sender (the PSI receiver R) picks one scalar r, sends R = r G and keeps the seeds
  k_{j,0} = KDF(j, R, P_j, r P_j) and k_{j,1} = KDF(j, R, P_j, r (C - P_j)); S gets
  k_{j,s_j} = KDF(j, R, P_j, k_j R). The seed S did not choose needs r (C - k_j G) = r C - k_j R,
  i.e. r C from R and C: computational Diffie-Hellman in the prime-order subgroup, with the
  KDF (BLAKE2b keyed by the binding) a random oracle. P_j is a uniform point whatever s_j, so
  R learns nothing of s. Every point received is checked by libsodium (canonical, on the
  curve, in the prime-order subgroup, not of small order) before a scalar touches it.
- Extension: each seed is expanded by AES-128-CTR (the PRG) to one column of m bits, m the
  number of cuckoo bins (a multiple of 128). R sends u^j = t_0^j xor t_1^j xor d^j, D the matrix
  whose row b is the code C(item in bin b) (zero for an empty bin); S forms
  q^j = t_{s_j}^j xor s_j u^j, so that row b of Q is q_b = t_{0,b} xor (s and d_b).
- Code: C(x, i) = AES-128-ECB under a public key derived from the task binding of the four
  blocks digest(x) xor (i, block index), digest(x) the 128-bit digest of the ID (`id_digests`:
  AES-128 of the padded ID for IDs of up to 15 bytes, keyed BLAKE2b for longer ones) and i the
  cuckoo hash function that placed it: a 512-bit pseudo-random code. KKRT's analysis needs the
  codewords of the items compared to be pairwise at Hamming distance at least kappa = 128 (the
  computational security parameter); two random 512-bit words are closer than that with
  probability 2^-102.3 (binomial tail), and n_R * 3 n_S pairs are compared, so the code fails
  with probability below 2^-40 whenever n_R * n_S <= 2^60 (a billion IDs a side). The code is
  public and needs no secrecy; AES under a public key is modelled as a random permutation.
- OPRF: F(b, x) = H(b, t_{0,b}) at R for the item in bin b; S evaluates
  F(b, y) = H(b, q_b xor (C(y, i) and s)) for each of its items y and each of the 3 bins
  b = h_i(y). Equal iff C(y, i) = d_b, i.e. y = x placed by the same hash function. H (`prf`)
  is fixed-key AES hashing under a public per-task key: the Matyas-Meyer-Oseas compression
  g(z) = AES_K(z) xor z chained over the bin and the four 128-bit blocks of the row, with AES
  under K modelled as a random permutation (as libOTe's and half-gates garbling's fixed-key
  hashing do; the key is per task, so nothing computed for one task helps against another).
  KKRT needs H correlation robust for inputs t xor (a and s) with wt(a) >= 128 and s secret:
  the last chaining input depends on every unknown bit of s, so predicting a value takes
  about 2^128 permutation queries. It replaced BLAKE2b per value (one Python call each, 4 M
  at 1 M x 1 M, 1.6 s per million): AES-NI over all rows at once is about 4.5 times faster.
  Values are truncated to `prf_bytes(m, n_S)` bytes: 40 + log2(m) + log2(3 n_S) bits rounded
  up; R compares each of its <= m values with the n_S values of its hash function, so the
  chance of any false match is below m * 3 n_S * 2^-bits <= 2^-40.
- Cuckoo hashing: 3 hash functions h_i(x) = word i of AES_K(digest(x)) mod m, K public and
  derived from the binding and an attempt counter; parallel insertion with eviction, all
  homeless items at once per round (`cuckoo`); no stash.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from nacl.bindings import (
    crypto_core_ed25519_from_uniform,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_reduce,
    crypto_core_ed25519_sub,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)
from nacl.exceptions import CryptoError

WIDTH = 512  # code width w in bits: the number of base OTs and of columns
WIDTH_BYTES = WIDTH // 8
POINT = 32  # an edwards25519 point
SEED = 16  # an AES-128 key: one base-OT output
DIGEST = 16  # the 128-bit item digest
SHORT_ID = 15  # IDs of at most this many UTF-8 bytes are digested by AES (`id_digests`)
BIN_ALIGN = 128  # m is a multiple of 128 bits: every column is whole AES blocks
HASHES = 3
STATISTICAL = 40
MAX_ROUNDS = 1000  # eviction rounds before a cuckoo attempt is given up (about 70 place 10 M items)

_BLOCKS = WIDTH_BYTES // 16  # AES blocks per code word


class OtError(ValueError):
    """A base-OT point a peer sent is not a valid point of the prime-order subgroup."""


# -- key derivation ---------------------------------------------------------------------------


def derive(binding: bytes, label: bytes, size: int = 32) -> bytes:
    """A public key/seed for a labelled purpose of the task (`binding` is its 32-byte binding)."""
    return hashlib.blake2b(label, key=binding, person=b"pcn/psi-ot/v1", digest_size=size).digest()


# -- bit matrices -----------------------------------------------------------------------------

_M1 = np.uint64(0x00AA00AA00AA00AA)
_M2 = np.uint64(0x0000CCCC0000CCCC)
_M3 = np.uint64(0x00000000F0F0F0F0)
_S7, _S14, _S28 = np.uint64(7), np.uint64(14), np.uint64(28)


def transpose_bits(matrix: np.ndarray) -> np.ndarray:
    """The transpose of a packed bit matrix: (r, c/8) uint8 -> (c, r/8) uint8, r and c
    multiples of 8. Works on 8x8 bit blocks held in one uint64 each (Hacker's Delight 7-3),
    all blocks at once."""
    rows, cb = matrix.shape
    if rows % 8:
        raise ValueError("the number of rows must be a multiple of 8")
    rb = rows // 8
    # blocks[rb, cb] = the 8 bytes of rows 8rb..8rb+7 in byte column cb, first row in the top byte
    blocks = np.ascontiguousarray(matrix.reshape(rb, 8, cb).transpose(0, 2, 1)).view(">u8")[..., 0]
    x = blocks.astype(np.uint64)
    t = (x ^ (x >> _S7)) & _M1
    x = x ^ t ^ (t << _S7)
    t = (x ^ (x >> _S14)) & _M2
    x = x ^ t ^ (t << _S14)
    t = (x ^ (x >> _S28)) & _M3
    x = x ^ t ^ (t << _S28)
    # x[rb, cb] now holds columns 8cb..8cb+7 as its 8 bytes, each byte the rows 8rb..8rb+7
    out = x.astype(">u8").view(np.uint8).reshape(rb, cb, 8)
    return np.ascontiguousarray(out.transpose(1, 2, 0)).reshape(cb * 8, rb)


# -- PRG, code, digests, PRF ------------------------------------------------------------------


def prg_columns(seeds: list[bytes], first_bin: int, bins: int) -> np.ndarray:
    """Bins [first_bin, first_bin + bins) of the column each 16-byte seed expands to
    (AES-128-CTR from counter 0): a (len(seeds), bins / 8) bit matrix. Both bounds are
    multiples of 128."""
    start, size = first_bin // 128, bins // 8
    zeros = bytes(size)
    out = np.empty((len(seeds), size), dtype=np.uint8)
    iv = start.to_bytes(16, "big")
    for j, seed in enumerate(seeds):
        enc = Cipher(algorithms.AES(seed), modes.CTR(iv)).encryptor()
        out[j] = np.frombuffer(enc.update(zeros), dtype=np.uint8)
    return out


def _keyed(key: bytes, person: bytes, size: int, messages: Any) -> bytes:
    """BLAKE2b keyed by `key` of each message, packed. The keyed state is set up once and
    copied per message: the same digests as a keyed blake2b() per message, without compressing
    the key block each time."""
    base = hashlib.blake2b(key=key, person=person, digest_size=size)
    copy, out = base.copy, list[bytes]()
    append = out.append
    for m in messages:
        h = copy()
        h.update(m)
        append(h.digest())
    return b"".join(out)


def id_digests(job: tuple[bytes, bytes, bytes, np.ndarray]) -> bytes:
    """(PRP key, hash key, the UTF-8 bytes of k IDs, their k + 1 offsets) -> the k digests, packed.

    digest(x) = AES-128_K(x | zero bytes | len(x)) for an ID x of at most SHORT_ID bytes: an
    injective encoding under a permutation, so no two such IDs share a digest, vectorised over
    all of them; BLAKE2b-128 keyed by the hash key for longer IDs. (A short and a long ID share
    a digest with probability 2^-128 per pair, as two long IDs do.) Both keys are public."""
    prp_key, hash_key, blob, offsets = job
    data = np.frombuffer(blob, dtype=np.uint8)
    lengths = np.diff(offsets)
    out = np.empty((len(lengths), DIGEST), dtype=np.uint8)
    short = np.flatnonzero(lengths <= SHORT_ID)
    if len(short):
        size = lengths[short]
        cols = np.arange(SHORT_ID)
        inside = cols[None, :] < size[:, None]
        blocks = np.zeros((len(short), DIGEST), dtype=np.uint8)
        blocks[:, :SHORT_ID][inside] = data[(offsets[short][:, None] + cols[None, :])[inside]]
        blocks[:, SHORT_ID] = size
        enc = Cipher(algorithms.AES(prp_key), modes.ECB()).encryptor()
        out[short] = np.frombuffer(enc.update(blocks.tobytes()), dtype=np.uint8).reshape(-1, DIGEST)
    long = np.flatnonzero(lengths > SHORT_ID)
    if len(long):
        spans = zip(offsets[long].tolist(), offsets[long + 1].tolist(), strict=True)
        digests = _keyed(hash_key, b"pcn/psi-ot/id", DIGEST, (blob[a:b] for a, b in spans))
        out[long] = np.frombuffer(digests, dtype=np.uint8).reshape(-1, DIGEST)
    return out.tobytes()


def candidate_bins(hash_key: bytes, digests: np.ndarray, bins: int) -> np.ndarray:
    """(n, 3) uint32: the bin of each item under each of the 3 cuckoo hash functions (bins < 2^32)."""
    if len(digests) == 0:
        return np.zeros((0, HASHES), dtype=np.uint32)
    enc = Cipher(algorithms.AES(hash_key), modes.ECB()).encryptor()
    words = np.frombuffer(enc.update(digests.tobytes()), dtype="<u4").reshape(-1, 4)
    return np.remainder(words[:, :HASHES], np.uint32(bins), dtype=np.uint32)


def codes(code_key: bytes, digests: np.ndarray, hidx: np.ndarray) -> np.ndarray:
    """(k, 64) uint8: the code words C(x, i) of k (digest, hash index) pairs."""
    k = len(digests)
    blocks = np.repeat(digests.reshape(k, 1, DIGEST), _BLOCKS, axis=1)  # (k, 4, 16)
    tag = np.zeros((k, _BLOCKS, DIGEST), dtype=np.uint8)
    tag[:, :, 0] = hidx.astype(np.uint8)[:, None]
    tag[:, :, 1] = np.arange(_BLOCKS, dtype=np.uint8)[None, :]
    enc = Cipher(algorithms.AES(code_key), modes.ECB()).encryptor()
    out = enc.update((blocks ^ tag).tobytes())
    return np.frombuffer(out, dtype=np.uint8).reshape(k, WIDTH_BYTES)


def prf_bytes(bins: int, sender_size: int) -> int:
    """The OPRF output length: 40 + log2(bins) + log2(3 n_S) bits, in bytes."""
    bits = STATISTICAL + math.ceil(math.log2(max(bins, 2))) + math.ceil(math.log2(max(HASHES * sender_size, 2)))
    return -(-bits // 8)


def prf(prf_key: bytes, bins: np.ndarray, rows: np.ndarray, size: int) -> bytes:
    """H(b, row) for each (bin, 64-byte row), truncated to `size` (<= 16) bytes, packed.

    Fixed-key AES hashing, vectorised over all rows: with pi = AES-128 under the public
    per-task `prf_key` and the Matyas-Meyer-Oseas compression g(z) = pi(z) xor z,
    h_0 = g(u128be(b)), h_i = g(h_{i-1} xor row block i) for the 4 blocks of the row, and
    H(b, row) = h_4 truncated. Every step depends on the whole input so far, so a value
    can be predicted only by querying pi at its last chaining input, which needs every unknown
    bit of the row at once (with pi an ideal permutation); the bin is the first block, so
    values of different bins are unrelated."""
    if not 0 < size <= 16:
        raise ValueError(f"an OPRF value is 1 to 16 bytes, not {size}")
    k = len(bins)
    enc = Cipher(algorithms.AES(prf_key), modes.ECB()).encryptor()
    z = np.zeros((k, 16), dtype=np.uint8)
    z[:, 12:] = bins.astype(">u4").view(np.uint8).reshape(k, 4)
    blocks = np.ascontiguousarray(rows).reshape(k, _BLOCKS, 16)
    for i in range(_BLOCKS + 1):
        h = np.frombuffer(enc.update(z.tobytes()), dtype=np.uint8).reshape(k, 16) ^ z
        if i < _BLOCKS:
            np.bitwise_xor(h, blocks[:, i], out=z)
    return h[:, :size].tobytes()


# -- the two parties' pieces of work (module level: they run in the runtime's pool) -----------


def receiver_piece(job: tuple[Any, ...]) -> tuple[bytes, bytes]:
    """R's work on bins [first, first + count): (the u columns of those bins, packed as
    WIDTH x count/8 bytes; the OPRF values of the occupied bins given, in the order given).

    job = (seeds k_{j,0}, seeds k_{j,1}, first, count, code key, prf key, value size, the
    occupied bins as offsets from `first`, their items' digests (k, 16), hash indices (k,))."""
    seeds0, seeds1, first, count, code_key, prf_key, size, local, digests, hidx = job
    t0 = prg_columns(seeds0, first, count)
    t1 = prg_columns(seeds1, first, count)
    d = np.zeros((count, WIDTH_BYTES), dtype=np.uint8)
    if len(local):
        d[local] = codes(code_key, digests, hidx)
    u = t0 ^ t1 ^ transpose_bits(d)
    del t1, d
    rows = transpose_bits(t0)[local]
    return u.tobytes(), prf(prf_key, local.astype(np.int64) + first, rows, size)


def sender_piece(job: tuple[Any, ...]) -> bytes:
    """S's work on bins [first, first + count): the OPRF values of the (item, hash index) pairs
    whose bin lies there, in the order given.

    job = (its seeds k_{j,s_j}, s as 64 bytes, first, count, u columns of those bins, code
    key, prf key, value size, pairs' bins (local offsets), digests (k, 16), hash indices (k,))."""
    seeds, s, first, count, u, code_key, prf_key, size, local, digests, hidx = job
    t = prg_columns(seeds, first, count)
    choice = np.unpackbits(np.frombuffer(s, dtype=np.uint8)).astype(bool)
    uc = np.frombuffer(u, dtype=np.uint8).reshape(WIDTH, count // 8)
    t[choice] ^= uc[choice]
    q = transpose_bits(t)
    del t
    srow = np.frombuffer(s, dtype=np.uint8)
    x = q[local] ^ (codes(code_key, digests, hidx) & srow)
    return prf(prf_key, local.astype(np.int64) + first, x, size)


# -- base OTs -----------------------------------------------------------------------------------


def scalar(material: bytes) -> bytes:
    """A uniform scalar mod the group order from 64 secret bytes."""
    return bytes(crypto_core_ed25519_scalar_reduce(material))


def ot_base(binding: bytes) -> bytes:
    """C, the public point of unknown discrete log (Elligator 2 of a hash of the binding)."""
    return bytes(crypto_core_ed25519_from_uniform(derive(binding, b"ot-base")))


def _kdf(binding: bytes, j: int, r_point: bytes, p_point: bytes, shared: bytes) -> bytes:
    msg = struct.pack(">I", j) + r_point + p_point + shared
    return hashlib.blake2b(msg, key=binding, person=b"pcn/psi-ot/ot", digest_size=SEED).digest()


def ot_receiver_points(base: bytes, choices: np.ndarray, scalars: list[bytes]) -> bytes:
    """S's first message: P_j = k_j G, or C - k_j G where s_j = 1."""
    out = []
    for c, k in zip(choices.tolist(), scalars, strict=True):
        kg = bytes(crypto_scalarmult_ed25519_base_noclamp(k))
        out.append(bytes(crypto_core_ed25519_sub(base, kg)) if c else kg)
    return b"".join(out)


def _times(r: bytes, point: bytes, what: str) -> bytes:
    """r * point; libsodium refuses (OtError) a point that is not canonical, not on the curve,
    of small order (the identity included) or outside the prime-order subgroup."""
    try:
        return bytes(crypto_scalarmult_ed25519_noclamp(r, point))
    except CryptoError:
        raise OtError(f"{what} is not a point of the prime-order subgroup of edwards25519") from None


def ot_sender(binding: bytes, base: bytes, points: bytes, r: bytes) -> tuple[bytes, list[bytes], list[bytes]]:
    """R's side, one scalar r for all OTs (as Chou-Orlandi): (R = r G to send, seeds k_{j,0} =
    KDF(r P_j), seeds k_{j,1} = KDF(r C - r P_j)); OtError on a bad P_j."""
    rg = bytes(crypto_scalarmult_ed25519_base_noclamp(r))
    rc = _times(r, base, "the base point")
    seeds0, seeds1 = [], []
    for j in range(WIDTH):
        p0 = points[j * POINT : (j + 1) * POINT]
        if p0 == base:  # then C - P_j is the identity
            raise OtError(f"base-OT point {j} is the base point C")
        s0 = _times(r, p0, f"base-OT point {j}")
        s1 = bytes(crypto_core_ed25519_sub(rc, s0))  # r (C - P_j)
        seeds0.append(_kdf(binding, j, rg, p0, s0))
        seeds1.append(_kdf(binding, j, rg, p0, s1))
    return rg, seeds0, seeds1


def ot_receiver_seeds(binding: bytes, points: bytes, reply: bytes, scalars: list[bytes]) -> list[bytes]:
    """S's side: k_{j,s_j} = KDF(k_j R); OtError on a bad R."""
    if len(reply) != POINT or not crypto_core_ed25519_is_valid_point(reply):
        raise OtError("the base-OT reply is not a point of the prime-order subgroup of edwards25519")
    return [
        _kdf(binding, j, reply, points[j * POINT : (j + 1) * POINT], _times(k, reply, "the base-OT reply"))
        for j, k in enumerate(scalars)
    ]


# -- cuckoo hashing -----------------------------------------------------------------------------


def bin_count(n: int) -> int:
    """1.27 n + 32 bins, rounded up to a multiple of 128."""
    raw = math.ceil(1.27 * n) + 32
    return -(-raw // BIN_ALIGN) * BIN_ALIGN


def _first_per_bin(wanted: np.ndarray) -> np.ndarray:
    """Positions of the first request for each distinct bin in `wanted` (one winner per bin)."""
    _, first = np.unique(wanted, return_index=True)
    return first


def cuckoo(cands: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Place every item in one of its candidate bins, at most one per bin: (table, which),
    table[b] the item in bin b (-1 if empty, int32), which[x] the hash index that placed item x
    (int8); None if some item is still homeless after MAX_ROUNDS rounds.

    Parallel cuckoo insertion, vectorised over all homeless items at once: each round they
    first take any free candidate bin, then each still homeless item claims the bin of its
    current hash index, evicting the occupant, which becomes homeless with its next hash index.
    When several items ask for one bin, the first in line gets it; the losers move to their
    next hash index. Deterministic in `cands`: the placement needs no secret, as the table
    never leaves R (only the code words of its occupants, under the extension's one-time pad)."""
    n = len(cands)
    table = np.full(bins, -1, dtype=np.int64)
    which = np.full(n, -1, dtype=np.int8)
    choice = np.zeros(n, dtype=np.int8)
    homeless = np.arange(n, dtype=np.int64)
    for _ in range(MAX_ROUNDS):
        for i in range(HASHES):  # free bins first
            if not len(homeless):
                break
            want = cands[homeless, i]
            free = table[want] < 0
            items, wanted = homeless[free], want[free]
            first = _first_per_bin(wanted)
            table[wanted[first]] = items[first]
            which[items[first]] = i
            homeless = homeless[which[homeless] < 0]
        if not len(homeless):
            break
        held = choice[homeless]
        want = cands[homeless, held]
        first = _first_per_bin(want)
        winners, won = homeless[first], want[first]
        evicted = table[won]
        table[won] = winners
        which[winners] = held[first]
        lost = np.ones(len(homeless), dtype=bool)
        lost[first] = False
        losers = homeless[lost]
        choice[losers] = (choice[losers] + 1) % HASHES
        evicted = evicted[evicted >= 0]
        choice[evicted] = (which[evicted] + 1) % HASHES
        which[evicted] = -1
        homeless = np.concatenate([losers, evicted])
    if len(homeless):
        return None
    return table.astype(np.int32), which
