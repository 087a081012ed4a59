"""Helpers shared by the vertical (split-feature) algorithms: hetero-lr trains a split
logistic-regression model and hetero-lr-predict scores with it, so both must read IDs,
commit to model states, mask host vectors and frame payloads exactly alike.

Both algorithms import it, so `codehash.algorithm_code_hash` (which follows every pcn
import) counts it in both registered hashes: a change here changes both, as it must.

Anything with a domain of its own (the ID-list hash, the pair seeds) takes the domain as an
argument: each algorithm keeps its own, so the bytes stay what they were.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from pcn.algorithms import base
from pcn.algorithms.base import ProtocolError
from pcn.data.errors import DataError
from pcn.data.table import Table

MODEL_DOMAIN = b"pcn/hetero-lr/model/v1"  # hetero-lr's model commitment, re-checked by hetero-lr-predict
FIXED_BITS = 32  # fractional bits of the pairwise-masked fixed-point vectors (scores)
FIXED_LIMIT = float(1 << 30)  # |value| bound of a masked fixed-point entry (int64 ring with headroom)
PART_BYTES = 8 * 1024 * 1024  # a message carries at most this much payload (the envelope cap is 16 MiB)
FRAME = struct.Struct(">II")  # part index, part count


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON with non-ASCII text as UTF-8: what both algorithms have always hashed
    and sent. A host's model commitment made in training must be recomputed byte for byte at
    prediction, so the two can never use different variants."""
    return base.canonical_json(obj, ensure_ascii=False)


def model_commitment(state: dict[str, Any]) -> bytes:
    """The commitment to a host's model state (which carries its own secret salt)."""
    return hashlib.sha256(MODEL_DOMAIN + canonical_json(state)).digest()


# -- deterministic randomness -------------------------------------------------------------


class Drbg:
    """The ChaCha20 keystream under a 32-byte key, read as random bits."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a Drbg key is 32 bytes")
        self._enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def read(self, n: int) -> bytes:
        return self._enc.update(bytes(n))

    def randbits(self, k: int) -> int:
        nbytes = (k + 7) // 8
        return int.from_bytes(self.read(nbytes), "big") >> (8 * nbytes - k)

    def below(self, bound: int) -> int:
        """Uniform in [0, bound), by rejection."""
        k = int(bound).bit_length()
        while True:
            v = self.randbits(k)
            if v < bound:
                return v

    def uint64(self, count: int) -> np.ndarray:
        return np.frombuffer(self.read(8 * count), dtype="<u8").astype(np.uint64)


# -- pairwise masks among hosts -----------------------------------------------------------


def x25519_public(secret: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def pair_seed(
    domain: bytes, secret: bytes, peer_public: bytes, binding: bytes, a: str, b: str, who: str = "a peer"
) -> bytes:
    """The seed two hosts share: SHA-256 over the X25519 secret and both addresses (sorted);
    `who` names the peer in the error for a bad key."""
    try:
        shared = X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise ProtocolError(f"bad X25519 key from {who}: {exc}") from None
    lo, hi = sorted((a.lower(), b.lower()))
    return hashlib.sha256(domain + b"pair/v2" + binding + lo.encode() + b"|" + hi.encode() + shared).digest()


# -- products summed in numpy's own order, never by BLAS --------------------------------------
#
# A BLAS matrix-vector product sums in an order its kernel picks per CPU (OpenBLAS chooses a
# kernel per microarchitecture: the same product differs in the last bits on an AMD and an
# Intel machine). What a party sends must not depend on the machine: an organisation's workers
# can run on several hosts, and a worker resumed on another host replays the task from its inbox
# and must emit the bytes it already sent. numpy's own reductions sum in a fixed order
# (pairwise along a row, in row order down a column) on every CPU.


def matvec(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """a @ v for a 2-D `a` and a 1-D `v`, summed in a fixed order."""
    return np.multiply(a, v).sum(axis=1)


def rmatvec(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """a.T @ d for a 2-D `a` and a 1-D `d` (one entry per row of `a`), summed in a fixed order."""
    return np.multiply(a, d[:, None]).sum(axis=0)


def sq_norm(v: np.ndarray) -> float:
    """v @ v for a 1-D `v`, summed in a fixed order."""
    return float(np.multiply(v, v).sum())


def to_fixed(values: np.ndarray, error: str) -> np.ndarray:
    """float64 -> int64 fixed point (FIXED_BITS fractional bits), viewed as uint64 for ring
    arithmetic; ProtocolError(error) for a value that is not finite or not below FIXED_LIMIT."""
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) >= FIXED_LIMIT):
        raise ProtocolError(error)
    return np.rint(np.ldexp(values, FIXED_BITS)).astype(np.int64).view(np.uint64)


def from_fixed(values: np.ndarray) -> np.ndarray:
    return np.ldexp(values.view(np.int64).astype(np.float64), -FIXED_BITS)


def add_pair_masks(values: np.ndarray, me: str, hosts: Sequence[str], keys: dict[str, bytes]) -> np.ndarray:
    """`values` (uint64) plus the pairwise masks of `me` with every other host, each the
    ChaCha20 stream under that pair's key in `keys`: the lower-indexed host of a pair adds
    it, the higher one subtracts it, so the masks cancel in the sum over all hosts (mod 2^64)."""
    out = values
    index = hosts.index(me)
    for j, other in enumerate(hosts):
        if other == me:
            continue
        mask = Drbg(keys[other]).uint64(len(out))
        out = out + mask if index < j else out - mask
    return out


# -- message framing ----------------------------------------------------------------------


def frames(payload: bytes) -> list[bytes]:
    """A payload cut into parts of at most PART_BYTES, each prefixed by (index, count)."""
    count = max(1, -(-len(payload) // PART_BYTES))
    return [FRAME.pack(i, count) + payload[i * PART_BYTES : (i + 1) * PART_BYTES] for i in range(count)]


@dataclass
class Assembly:
    count: int
    parts: list[bytes]


def add_frame(pending: dict[Any, Assembly], key: Any, data: bytes, what: str) -> bytes | None:
    """Add one part; the whole payload once its last part arrived, else None."""
    if len(data) < FRAME.size:
        raise ProtocolError(f"{what}: shorter than its frame header")
    index, count = FRAME.unpack_from(data)
    body = data[FRAME.size :]
    entry = pending.get(key)
    if entry is None:
        if count < 1 or index != 0:
            raise ProtocolError(f"{what}: part {index} of {count} where part 0 was expected")
        entry = pending[key] = Assembly(count, [])
    if count != entry.count or index != len(entry.parts):
        want = f"part {len(entry.parts)} of {entry.count}"
        raise ProtocolError(f"{what}: part {index} of {count} where {want} was expected")
    if index < count - 1 and len(body) != PART_BYTES:
        raise ProtocolError(f"{what}: a middle part of {len(body)} bytes")
    entry.parts.append(body)
    if len(entry.parts) < count:
        return None
    del pending[key]
    return b"".join(entry.parts)


# -- local data -----------------------------------------------------------------------------


def normalise_id(cell: str | None) -> str:
    if cell is None:
        raise ProtocolError("the ID column has an empty cell")
    s = unicodedata.normalize("NFC", cell.strip())
    if not s:
        raise ProtocolError("the ID column has an empty cell")
    return s


def sort_ids(table: Table, id_column: str, algorithm: str) -> tuple[list[str], np.ndarray]:
    """(the normalised IDs sorted, the table row of each); every party sorts alike, so rows
    line up across parties. A repeated ID is a ProtocolError naming `algorithm`."""
    ids = [normalise_id(c) for c in table.column(id_column)]
    order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
    sorted_ids = [ids[i] for i in order.tolist()]
    for a, b in itertools.pairwise(sorted_ids):
        if a == b:
            raise ProtocolError(f"ID {a!r} appears twice: {algorithm} needs one row per ID (run PSI first)")
    return sorted_ids, order


def ids_hash(domain: bytes, binding: bytes, ids: Sequence[str]) -> bytes:
    """The hash of a sorted ID list, bound to the task, that the parties compare in setup."""
    h = hashlib.sha256(domain + b"ids/v2" + binding + len(ids).to_bytes(8, "big"))
    for x in ids:
        b = x.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(4, "big") + b)
    return h.digest()


def numeric(table: Table, column: str, order: np.ndarray | None = None) -> np.ndarray:
    try:
        values = table.numeric(column)
    except DataError as exc:
        raise ProtocolError(f"column {column!r}: {exc}") from None
    if not np.all(np.isfinite(values)):
        raise ProtocolError(f"column {column!r} has a non-finite value")
    return values if order is None else values[order]


# -- metrics ----------------------------------------------------------------------------------


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        raise ProtocolError("AUC needs both classes in the labels")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def ks(y: np.ndarray, score: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic: max |TPR - FPR| over all score thresholds."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        raise ProtocolError("KS needs both classes in the labels")
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], y[order]
    tp, fp = np.cumsum(t), np.cumsum(1 - t)
    last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
    return float(np.max(np.abs(tp[last] / pos - fp[last] / neg)))


def sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-15, 1 - 1e-15]."""
    p = np.clip(probs, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
