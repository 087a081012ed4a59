"""Helpers shared by the vertical (split-feature) algorithms: hetero-lr trains a split
logistic-regression model and hetero-lr-predict scores with it, hetero-sbt and
hetero-sbt-predict do the same with trees, so all must read IDs, commit to model states, mask
host vectors and frame payloads exactly alike; the two trainings share their round machinery
(`VerticalTraining`).

Every one of them imports it, so `codehash.algorithm_code_hash` (which follows every pcn
import) counts it in each of their registered hashes: a change here changes them all, as it must.

Anything with a domain of its own (the ID-list hash, the pair seeds) takes the domain as an
argument: each algorithm keeps its own, so the bytes stay what they were.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
import unicodedata
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from pcn import jsonsafe
from pcn.algorithms import base
from pcn.algorithms.base import MAX_PAYLOAD, ProtocolError
from pcn.data.errors import DataError
from pcn.data.table import Table

MODEL_DOMAIN = b"pcn/hetero-lr/model/v1"  # hetero-lr's model commitment, re-checked by hetero-lr-predict
FIXED_BITS = 32  # fractional bits of the pairwise-masked fixed-point vectors (scores)
FIXED_LIMIT = float(1 << 30)  # |value| bound of a masked fixed-point entry (int64 ring with headroom)
FRAME = struct.Struct(">II")  # part index, part count
PART_BYTES = MAX_PAYLOAD - FRAME.size  # a part and its frame header fill one message, which the mailbox takes


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON with non-ASCII text as UTF-8: what both algorithms have always hashed
    and sent. A host's model commitment made in training must be recomputed byte for byte at
    prediction, so the two can never use different variants."""
    return base.canonical_json(obj, ensure_ascii=False)


def model_commitment(state: dict[str, Any], domain: bytes = MODEL_DOMAIN) -> bytes:
    """The commitment to a host's model state (which carries its own secret salt), in the
    training algorithm's `domain`."""
    return hashlib.sha256(domain + canonical_json(state)).digest()


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


# -- params of the guest/host trainings ----------------------------------------------------------

MAX_FEATURES = 10_000  # columns per party, in the params and in a setup message


def column_name(v: object, what: str, fail: Callable[[str], ProtocolError]) -> str:
    if not isinstance(v, str) or not v.strip():
        raise fail(f"{what} must be a non-empty column name, got {v!r}")
    return v


def training_label(params: Any, keys: frozenset[str], label_what: str, fail: Callable[[str], ProtocolError]) -> str:
    """The checks every training's params start with (an object, no unknown key, the guest's
    label column named); the label column."""
    if not isinstance(params, dict):
        raise fail(f"params must be a JSON object, got {type(params).__name__}")
    unknown = set(params) - keys
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(keys)}")
    if "label_column" not in params:
        raise fail(f"'label_column' ({label_what}) is required")
    return column_name(params["label_column"], "'label_column'", fail)


def feature_columns(v: object, label: str, fail: Callable[[str], ProtocolError]) -> dict[str, list[str]]:
    """The optional 'features' param: {participant address (lower case): [its columns]}."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise fail("'features' must be an object {participant address: [column, ...]}")
    out: dict[str, list[str]] = {}
    for who, cols in v.items():
        if not isinstance(who, str) or not who:
            raise fail(f"'features' key {who!r} is not a participant address")
        key = who.lower()
        if key in out:
            raise fail(f"'features' names {who!r} twice")
        if not isinstance(cols, list):
            raise fail(f"'features.{who}' must be a list of column names")
        names = [column_name(c, f"'features.{who}' entry", fail) for c in cols]
        if len(set(names)) != len(names):
            raise fail(f"'features.{who}' has duplicate columns")
        if label in names:
            raise fail(f"'features.{who}' must not contain the label column {label!r}")
        if len(names) > MAX_FEATURES:
            raise fail(f"'features.{who}' has more than {MAX_FEATURES} columns")
        out[key] = names
    return out


def paillier_key_bits(
    v: object, allowed: tuple[int, ...], secure: tuple[int, ...], fail: Callable[[str], ProtocolError]
) -> int:
    """The 'key_bits' param: one of `allowed` (`secure`, plus what a test allows)."""
    if isinstance(v, bool) or not isinstance(v, int) or v not in allowed:
        raise fail(
            f"'key_bits' must be one of {list(secure)} (smaller Paillier keys are below 112-bit security), got {v!r}"
        )
    return v


# -- the round machinery of guest/host training ---------------------------------------------------

SETUP, DONE = 0, -1  # the first and last phase of every party (a role numbers the others from 1)
ROUND_SETUP = 1
ROUND_FINAL = 1 << 62
KIND_SETUP = "setup"
KIND_MODEL = "model-commit"
KIND_RESULT = "result-hash"


def guest_and_hosts_checked(proto: base.Protocol) -> dict[str, Any]:
    """What every guest/host protocol checks first: at least two distinct participants, the
    context, that this party plays the role its class does (the guest is the recipient); its
    validated params."""
    ctx = proto.ctx
    n = len(ctx.participants)
    if n < 2 or len(set(ctx.participants)) != n:
        raise ProtocolError(f"{proto.name} needs at least 2 distinct participants (a guest and a host)")
    proto._check_context("the guest")
    if not isinstance(proto, proto.role_class(ctx)):
        role = getattr(proto, "role", "party")
        raise ProtocolError(f"{type(proto).__name__} plays a {role}, which {ctx.me!r} is not in this task")
    return proto.validate_params(ctx.params)


@dataclass(eq=False)
class VerticalTraining(base.Protocol):
    """What every guest/host training protocol (hetero-lr, hetero-sbt) does alike: the guest is
    the recipient and holds the labels, every other participant is a host. Around each role's
    own rounds it provides the setup round (aligned IDs, key size and column counts checked),
    in-order delivery with a round check and a floor below which messages are stale, framing of
    large payloads, checkpoints at a unit boundary (an epoch, a tree) with their exact resume,
    the hosts' model commitments and the guest's salted result hash.

    A role names its phases 1, 2, ... (SETUP is 0, DONE -1) and gives `_handlers` (phase ->
    the messages it sends on, or None while it waits), `_allowed`, `_check_round`, `_load`,
    `_adopt_setups`, `_begin_unit` and what its checkpoint adds (`_unit_state`,
    `_restore_unit_state`)."""

    commitment: ClassVar[base.CommitmentScheme]  # every one of them commits to a result
    resumable: ClassVar[bool] = True
    role: ClassVar[str]  # "guest" or "host", what the setup message announces
    unit: ClassVar[str]  # what a checkpoint counts: "epoch", "tree"
    units_param: ClassVar[str]  # the param bounding the units: "epochs", "trees"
    checkpoint_version: ClassVar[int] = 1
    model_domain: ClassVar[bytes] = MODEL_DOMAIN  # of the hosts' model commitments

    _p: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _guest: str = field(default="", init=False, repr=False)
    _hosts: list[str] = field(default_factory=list, init=False, repr=False)
    _features: list[str] = field(default_factory=list, init=False, repr=False)
    _ids_hash: bytes = field(default=b"", init=False, repr=False)
    _n: int = field(default=0, init=False, repr=False)
    _setups: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    # progress through the rounds
    _phase: int = field(default=SETUP, init=False, repr=False)
    _floor: int = field(default=0, init=False, repr=False)
    _recv_next: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _parts: dict[tuple[str, int, str], Assembly] = field(default_factory=dict, init=False, repr=False)
    _inbox: dict[tuple[str, int, str], bytes] = field(default_factory=dict, init=False, repr=False)
    _consumed: set[tuple[str, int, str]] = field(default_factory=set, init=False, repr=False)
    # outcome
    _model_commits: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _model: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _resumed: bool = field(default=False, init=False, repr=False)
    _resend: list[base.Message] = field(default_factory=list, init=False, repr=False)
    _checkpoint: bytes | None = field(default=None, init=False, repr=False)
    _checkpoint_units: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._p = guest_and_hosts_checked(self)
        ctx = self.ctx
        lowered = {p.lower() for p in ctx.participants}
        strangers = sorted(set(self._p["features"]) - lowered)
        if strangers:
            raise ProtocolError(f"invalid {self.name} params: 'features' names non-participant(s) {strangers}")
        self._guest = ctx.recipient
        self._hosts = [p for p in ctx.participants if p != self._guest]
        self._load()

    @abstractmethod
    def _load(self) -> None:
        """Reads this party's aligned rows and columns: sets `_n`, `_ids_hash`, `_features`."""

    # -- keys and messages -------------------------------------------------------------------------

    def _key(self, label: str) -> bytes:
        return self.secret_bytes(f"{self.name}/{label}", 32)

    def _send(self, receiver: str, round_: int, kind: str, payload: bytes) -> list[base.Message]:
        return [self.send(receiver, round_, kind, part) for part in frames(payload)]

    # -- setup -------------------------------------------------------------------------------------

    def _setup_peers(self) -> list[str]:
        """The parties this one exchanges setup messages with."""
        return list(self.ctx.peers)

    def _setup_payload(self) -> bytes:
        body: dict[str, Any] = {
            "role": self.role,
            "ids": self._ids_hash.hex(),
            "rows": self._n,
            "features": len(self._features),
            "key_bits": self._p["key_bits"],
        }
        body.update(self._setup_extra())
        return canonical_json(body)

    @abstractmethod
    def _setup_extra(self) -> dict[str, Any]:
        """What this role's setup message adds (public keys, bin counts, ...)."""

    def _checked_setups(self) -> dict[str, dict[str, Any]]:
        """Every setup peer's setup message, checked: its role, the key size of the params, the
        same aligned ID list, a plausible column count (a guest may have none)."""
        p = self._p
        infos: dict[str, dict[str, Any]] = {}
        for peer in self._setup_peers():
            what = f"setup from {peer!r}"
            try:
                info = jsonsafe.loads(self._setups[peer])  # a peer's payload: too deep is an error, not a crash
            except (ValueError, UnicodeDecodeError):
                raise ProtocolError(f"{what} is not JSON") from None
            if not isinstance(info, dict):
                raise ProtocolError(f"{what} is not an object")
            role = "guest" if peer == self._guest else "host"
            if info.get("role") != role:
                raise ProtocolError(f"{what}: role {info.get('role')!r}, expected {role!r}")
            if info.get("key_bits") != p["key_bits"]:
                raise ProtocolError(f"{what}: key_bits {info.get('key_bits')!r} differ from the params")
            if info.get("ids") != self._ids_hash.hex() or info.get("rows") != self._n:
                raise ProtocolError(
                    f"datasets are not aligned, run PSI first: the ID list of {peer!r} differs from this party's "
                    f"({info.get('rows')!r} rows vs {self._n})"
                )
            d = info.get("features")
            lowest = 0 if role == "guest" else 1
            if isinstance(d, bool) or not isinstance(d, int) or not lowest <= d <= MAX_FEATURES:
                raise ProtocolError(f"{what}: bad feature count {d!r}")
            infos[peer] = info
        return infos

    @abstractmethod
    def _process_setups(self) -> None:
        """Takes the checked setup messages (`_checked_setups`) in: keys, column counts."""

    def _on_setup(self) -> list[base.Message] | None:
        peers = self._setup_peers()
        if not self._has(KIND_SETUP, ROUND_SETUP, peers):
            return None
        for peer in peers:
            self._setups[peer] = self._take(KIND_SETUP, ROUND_SETUP, peer)
        self._process_setups()
        self._begin_unit(0)
        return []

    @abstractmethod
    def _begin_unit(self, unit: int) -> None:
        """Enters epoch / tree `unit` (0-based): its phase, its rounds' floor."""

    @abstractmethod
    def _units_done(self) -> int:
        """The epochs / trees completed before the current one."""

    # -- delivery ----------------------------------------------------------------------------------

    def start(self) -> list[base.Message]:
        self._mark_started()
        if self._resumed:
            done = self._units_done()
            self.report(done / self._p[self.units_param], f"resumed at {self.unit} {done + 1}")
            return list(self._resend) + self._advance()
        self.report(0.0, f"{self.role}: setting up keys")  # row counts of aligned data are PSI results
        payload = self._setup_payload()
        out: list[base.Message] = []
        for peer in self._setup_peers():
            out += self._send(peer, ROUND_SETUP, KIND_SETUP, payload)
        return out + self._advance()

    def receive(self, msg: base.Message) -> list[base.Message]:
        self._check_delivery(msg)
        if self._phase == DONE:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} after the protocol finished")
        expected = self._recv_next.get(msg.sender, 0)
        if msg.seq != expected:
            raise ProtocolError(f"message #{msg.seq} from {msg.sender!r} where #{expected} was expected")
        self._recv_next[msg.sender] = expected + 1
        if msg.kind not in self._allowed(msg.sender):
            raise ProtocolError(f"unexpected {msg.kind!r} message from {msg.sender!r}")
        self._check_round(msg)
        if msg.round < self._floor:
            raise ProtocolError(
                f"stale {msg.kind!r} message from {msg.sender!r} (round {msg.round}, this party is past it)"
            )
        key = (msg.kind, msg.round, msg.sender)
        if key in self._inbox or key in self._consumed:
            raise ProtocolError(f"duplicate {msg.kind!r} message from {msg.sender!r} (round {msg.round})")
        whole = add_frame(self._parts, key, msg.payload, f"{msg.kind!r} message from {msg.sender!r}")
        if whole is not None:
            self._inbox[key] = whole
        return self._advance()

    @abstractmethod
    def _allowed(self, sender: str) -> set[str]:
        """The message kinds this party accepts from `sender`."""

    @abstractmethod
    def _check_round(self, msg: base.Message) -> None:
        """Refuses (ProtocolError) a message whose round its kind can never have now."""

    def _has(self, kind: str, round_: int, senders: list[str]) -> bool:
        return all((kind, round_, s) in self._inbox for s in senders)

    def _take(self, kind: str, round_: int, sender: str) -> bytes:
        key = (kind, round_, sender)
        self._consumed.add(key)
        return self._inbox.pop(key)

    def _set_floor(self, floor: int) -> None:
        self._floor = floor
        self._consumed = {k for k in self._consumed if k[1] >= floor}

    def _advance(self) -> list[base.Message]:
        out: list[base.Message] = []
        handlers = self._handlers()
        while self._phase != DONE:
            msgs = handlers[self._phase]()
            if msgs is None:
                break
            out += msgs
        return out

    @abstractmethod
    def _handlers(self) -> dict[int, Callable[[], list[base.Message] | None]]:
        """Phase -> this party's handler: the messages it sends on, or None while it still
        waits for some."""

    # -- checkpoints -------------------------------------------------------------------------------

    def _params_digest(self) -> str:
        return hashlib.sha256(canonical_json(self._p)).hexdigest()

    def _snapshot(self, resend: list[base.Message]) -> None:
        """The state at a unit boundary, before the next unit's first message. `resend` are the
        messages sent in the same call (the guest's "epoch-end" / "tree-end"): a worker killed
        before delivering them re-emits them on resume (peers drop what they already have)."""
        done = self._units_done()
        state = {
            "v": self.checkpoint_version,
            "algorithm": self.name,
            "task_id": self.ctx.task_id,
            "party": self.ctx.me,
            "params": self._params_digest(),
            "ids": self._ids_hash.hex(),
            "features": self._features,
            self.unit: done,
            **self._unit_state(),
            "setups": {k: v.hex() for k, v in sorted(self._setups.items())},
            "sent": dict(sorted(self._seq.items())),
            "received": dict(sorted(self._recv_next.items())),
            "inbox": [[k, r, s, v.hex()] for (k, r, s), v in sorted(self._inbox.items())],
            "parts": [[k, r, s, a.count, [p.hex() for p in a.parts]] for (k, r, s), a in sorted(self._parts.items())],
            "resend": [[m.receiver, m.round, m.kind, m.seq, m.payload.hex()] for m in resend],
        }
        self._checkpoint = canonical_json(state)
        self._checkpoint_units = done
        self.ctx.services.save_checkpoint(done, self._checkpoint)

    @abstractmethod
    def _unit_state(self) -> dict[str, Any]:
        """What this role's checkpoint keeps across units (JSON values, under its own keys)."""

    @abstractmethod
    def _restore_unit_state(self, state: dict[str, Any]) -> None:
        """The inverse of `_unit_state`, from the whole checkpoint `state`."""

    def checkpoint(self) -> bytes | None:
        """The latest unit-boundary snapshot (None before the first unit ended)."""
        return self._checkpoint

    @property
    def checkpoint_epoch(self) -> int:
        """Units (epochs, trees) completed in the latest snapshot (0: none)."""
        return self._checkpoint_units

    @classmethod
    def resume(cls, ctx: base.PartyContext, data: Any, checkpoint: bytes) -> Self:
        """This party rebuilt at the unit boundary of `checkpoint`; call `start()` next, then
        deliver the peers' messages from `resume_from[sender]` on."""
        proto = cls.create(ctx, data)
        proto._restore(checkpoint)
        return proto

    def _restore(self, blob: bytes) -> None:
        try:
            state = json.loads(blob)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError("checkpoint is not JSON") from None
        if (
            not isinstance(state, dict)
            or state.get("v") != self.checkpoint_version
            or state.get("algorithm") != self.name
        ):
            raise ProtocolError(f"not a {self.name} checkpoint of this version")
        if state.get("task_id") != self.ctx.task_id or state.get("party") != self.ctx.me:
            raise ProtocolError("checkpoint of another task or party")
        if state.get("params") != self._params_digest():
            raise ProtocolError("checkpoint was taken with different params")
        if state.get("ids") != self._ids_hash.hex() or state.get("features") != self._features:
            raise ProtocolError("checkpoint does not match this party's dataset")
        try:
            self._setups = {k: bytes.fromhex(v) for k, v in state["setups"].items()}
            self._process_setups()
            done = int(state[self.unit])
            if not 1 <= done < self._p[self.units_param]:
                raise ProtocolError(f"checkpoint {self.unit} {done} out of range")
            self._restore_unit_state(state)
            self._seq = {str(k): int(v) for k, v in state["sent"].items()}
            self._recv_next = {str(k): int(v) for k, v in state["received"].items()}
            self._inbox = {(k, int(r), s): bytes.fromhex(v) for k, r, s, v in state["inbox"]}
            self._parts = {
                (k, int(r), s): Assembly(int(c), [bytes.fromhex(p) for p in ps]) for k, r, s, c, ps in state["parts"]
            }
            me = self.ctx.me
            self._resend = [
                base.Message(me, to, int(r), k, bytes.fromhex(v), int(q)) for to, r, k, q, v in state["resend"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed checkpoint: {exc}") from None
        self._begin_unit(done)
        self._checkpoint, self._checkpoint_units = blob, done
        self._resumed = True
        self.resume_from = dict(self._recv_next)

    # -- the end: model commitments and the result hash ---------------------------------------------

    def _model_header(self) -> dict[str, Any]:
        """What every party's stored model part begins with: whose part of which training."""
        return {
            "algorithm": self.name,
            "version": 1,
            "task_id": self.ctx.task_id,
            "role": self.role,
            "party": self.ctx.me,
            "guest": self._guest,
            "hosts": self._hosts,
        }

    def _read_commit(self, sender: str) -> None:
        c = self._take(KIND_MODEL, ROUND_FINAL, sender)
        if len(c) != 32:
            raise ProtocolError(f"model commitment from {sender!r} has {len(c)} bytes, expected 32")
        self._model_commits[sender] = c

    def _show_operator(self, metrics: dict[str, Any]) -> None:
        """The guest (the recipient) shows a unit's metrics, which its result will hold, to its
        own operator as they form; never to peers or the requester (README #13.9)."""
        figures = {k: f"{v:.6g}" if isinstance(v, float) else str(v) for k, v in metrics.items()}
        self.ctx.services.report_to_operator(figures)

    def _commit_to_model(self, model: dict[str, Any], waiting_phase: int, note: str) -> list[base.Message]:
        """A host's end of training: it keeps `model`, sends its commitment to every peer and
        waits (in `waiting_phase`) for the others' and the guest's result hash."""
        self._model = model
        commit = model_commitment(model, self.model_domain)
        self._model_commits[self.ctx.me] = commit
        self._phase = waiting_phase
        self._set_floor(ROUND_FINAL)
        self.report(0.99, note)
        out: list[base.Message] = []
        for peer in self.ctx.peers:
            out += self._send(peer, ROUND_FINAL, KIND_MODEL, commit)
        return out

    def _on_final(self) -> list[base.Message] | None:
        """A host's last step: the other hosts' model commitments and the guest's result hash."""
        others = [h for h in self._hosts if h != self.ctx.me]
        if not self._has(KIND_RESULT, ROUND_FINAL + 1, [self._guest]) or not self._has(KIND_MODEL, ROUND_FINAL, others):
            return None
        for h in others:
            self._read_commit(h)
        h_r = self._take(KIND_RESULT, ROUND_FINAL + 1, self._guest)
        if len(h_r) != 32:
            raise ProtocolError(f"result hash from the guest has {len(h_r)} bytes, expected 32")
        self._result_hash = h_r
        self._phase = DONE
        self.report(1.0, f"done; the guest holds the result, this party {self._what_host_keeps()}")
        return []

    def _what_host_keeps(self) -> str:
        return "its part of the model"

    def _publish_result(self, result: dict[str, Any], note: str) -> list[base.Message]:
        """The guest's last step: the result, its salted hash to every host."""
        self._result = canonical_json(result)
        self._result_hash = self.commitment.result_hash(self._salt(), self._result)
        self._phase = DONE
        self.report(1.0, note)
        out: list[base.Message] = []
        for h in self._hosts:
            out += self._send(h, ROUND_FINAL + 1, KIND_RESULT, self._result_hash)
        return out

    @property
    def done(self) -> bool:
        return self._phase == DONE

    def model_state(self) -> dict[str, Any]:
        """This party's part of the trained model (JSON-serialisable), for local storage."""
        if self._phase != DONE or self._model is None:
            raise ProtocolError(f"the {self.name} protocol has not finished")
        return dict(self._model)

    def _salt(self) -> bytes:
        return self._key("result-salt")

    def _commits(self) -> bytes:
        return b"".join(self._model_commits[h] for h in self._hosts)

    def result_commitment(self) -> bytes:
        if self._phase != DONE or self._result_hash is None:
            raise ProtocolError(f"the {self.name} protocol has not finished")
        return self.commitment.commit(self._commits(), self._result_hash)

    def commitment_opening(self) -> bytes:
        """The hosts' model commitments (host order), followed at the guest by its 32-byte
        result salt; with the result bytes, `commitment_for` recomputes the commitment."""
        if self._phase != DONE:
            raise ProtocolError(f"the {self.name} protocol has not finished")
        opening = self._commits()
        return opening + self._salt() if self.role == "guest" else opening


# -- joint prediction with a model a training left split ------------------------------------------

PREDICT_ROUND_RESULT = 3  # the guest's result hash to the hosts, after the setup round (1) and the hosts' answers


def model_column(table: Table, column: str, order: np.ndarray) -> np.ndarray:
    """A column a stored model names, rows in ID order `order`; a clear error when it is missing."""
    if column not in table:
        raise ProtocolError(f"column {column!r} of the model is not in the dataset; columns are {table.names}")
    return numeric(table, column, order)


def model_task_params(params: Any, algorithm: str) -> dict[str, Any]:
    """A prediction's params: exactly {"model_task": the training task's id}."""
    if not isinstance(params, dict):
        raise ProtocolError(f"invalid {algorithm} params: expected a JSON object")
    unknown = set(params) - {"model_task"}
    if unknown:
        raise ProtocolError(f"invalid {algorithm} params: unknown key(s) {sorted(unknown)}; allowed: model_task")
    task = params.get("model_task")
    if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < 2**256:
        raise ProtocolError(
            f"invalid {algorithm} params: 'model_task' (the training task id) must be a uint256, got {task!r}"
        )
    return {"model_task": task}


@dataclass(eq=False)
class VerticalPrediction(base.Protocol):
    """What hetero-lr-predict and hetero-sbt-predict do alike: the parties of a training task
    score new aligned rows with the model parts it left each of them. Each checks its stored
    part (that task's, this party's, the same guest and hosts), the rows' aligned ID list in a
    setup round in which every host announces the commitment of the part it scores with (the
    guest holds the commitments of training and refuses any other), then the role's own
    messages; the guest ends with the salted hash of its result to every host.

    A role gives `_load_model_part`, `_read_rows`, `_after_setup` and `_on_message`."""

    commitment: ClassVar[base.CommitmentScheme]
    role: ClassVar[str]  # "guest" or "host", as in training
    training: ClassVar[str]  # the algorithm that trained the model: "hetero-lr", "hetero-sbt"
    model_domain: ClassVar[bytes] = MODEL_DOMAIN  # of the training's host model commitments
    id_domain: ClassVar[bytes]  # of the aligned ID-list hash
    host_setup_keys: ClassVar[tuple[str, ...]] = ("model",)  # 32-byte hex values of a host's setup

    _p: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _guest: str = field(default="", init=False, repr=False)
    _hosts: list[str] = field(default_factory=list, init=False, repr=False)
    _model: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _commitment: bytes = field(default=b"", init=False, repr=False)
    _ids: list[str] = field(default_factory=list, init=False, repr=False)
    _order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), init=False, repr=False)
    _ids_hash: bytes = field(default=b"", init=False, repr=False)
    _setups: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _recv_next: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _commits: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _done: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self._p = guest_and_hosts_checked(self)
        ctx = self.ctx
        self._guest = ctx.recipient
        self._hosts = [p for p in ctx.participants if p != self._guest]
        self._load_model()
        self._load_data()

    # -- model and data ----------------------------------------------------------------------------

    def _load_model(self) -> None:
        ctx, task, training = self.ctx, self._p["model_task"], self.training
        try:
            # the state this party's training protocol's `model_state()` returned at the end of `task`
            state = ctx.services.load_model(task, ctx.me)
        except base.ModelUnavailable as exc:
            raise base.ModelUnavailable(f"this party holds no {training} model of task {task}: {exc}") from None
        if not isinstance(state, dict) or state.get("algorithm") != training or state.get("task_id") != task:
            raise ProtocolError(f"the stored model of task {task} is not a {training} model of that task")
        if state.get("role") != self.role or state.get("party") != ctx.me:
            raise ProtocolError(f"the stored model of task {task} is not this party's {self.role} part")
        if state.get("guest") != self._guest:
            raise ProtocolError(f"the recipient must be the guest of training task {task} ({state.get('guest')!r})")
        hosts = state.get("hosts")
        if not isinstance(hosts, list) or sorted(hosts) != sorted(self._hosts):
            raise ProtocolError(f"the participants must be the parties of training task {task}: guest and {hosts}")
        self._load_model_part(state)
        self._model = state
        self._commitment = model_commitment(state, self.model_domain)

    @abstractmethod
    def _load_model_part(self, state: dict[str, Any]) -> None:
        """Checks and takes what this role's part of the stored model holds."""

    def _load_data(self) -> None:
        ctx, table = self.ctx, self.data
        if not isinstance(table, Table):
            raise ProtocolError(f"{self.name} needs a Table, got {type(table).__name__}")
        if not ctx.id_column or ctx.id_column not in table:
            raise ProtocolError(f"no ID column {ctx.id_column!r}; columns are {table.names}")
        self._ids, self._order = sort_ids(table, ctx.id_column, self.name)
        if not self._ids:
            raise ProtocolError("no rows to score")
        self._ids_hash = ids_hash(self.id_domain, ctx.binding, self._ids)
        self._read_rows(table)

    @abstractmethod
    def _read_rows(self, table: Table) -> None:
        """Reads the columns this role's part of the model needs (rows in ID order `_order`)."""

    # -- the setup round ---------------------------------------------------------------------------

    def start(self) -> list[base.Message]:
        self._mark_started()
        body: dict[str, Any] = {
            "role": self.role,
            "ids": self._ids_hash.hex(),
            "rows": len(self._ids),
            "model_task": self._p["model_task"],
        }
        body.update(self._setup_keys())
        payload = canonical_json(body)
        self.report(0.1, f"scoring with the model of task {self._p['model_task']}")
        return [self.send(peer, ROUND_SETUP, KIND_SETUP, payload) for peer in self.ctx.peers]

    def _setup_keys(self) -> dict[str, str]:
        """What this role's setup message carries besides IDs, rows and the model task: a
        host's model commitment."""
        return {"model": self._commitment.hex()} if self.role == "host" else {}

    def receive(self, msg: base.Message) -> list[base.Message]:
        self._check_delivery(msg)
        if self._done:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} after the protocol finished")
        expected = self._recv_next.get(msg.sender, 0)
        if msg.seq != expected:
            raise ProtocolError(f"message #{msg.seq} from {msg.sender!r} where #{expected} was expected")
        self._recv_next[msg.sender] = expected + 1
        if (msg.kind, msg.round) == (KIND_SETUP, ROUND_SETUP):
            if msg.sender in self._setups:
                raise ProtocolError(f"duplicate setup from {msg.sender!r}")
            self._setups[msg.sender] = self._check_setup(msg)
            return self._after_setup() if len(self._setups) == len(self.ctx.peers) else []
        if msg.sender not in self._setups:
            raise ProtocolError(f"{msg.kind!r} message from {msg.sender!r} before its setup")
        out = self._on_message(msg)
        if out is None:
            raise ProtocolError(f"unexpected {msg.kind!r} message round {msg.round} from {msg.sender!r}")
        return out

    def _check_setup(self, msg: base.Message) -> dict[str, Any]:
        who = msg.sender
        try:
            info = jsonsafe.loads(msg.payload)  # a peer's payload: too deep is an error, not a crash
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(f"setup from {who!r} is not JSON") from None
        if not isinstance(info, dict):
            raise ProtocolError(f"setup from {who!r} is not an object")
        role = "guest" if who == self._guest else "host"
        if info.get("role") != role or info.get("model_task") != self._p["model_task"]:
            raise ProtocolError(f"setup from {who!r}: wrong role or model task")
        if info.get("ids") != self._ids_hash.hex() or info.get("rows") != len(self._ids):
            raise ProtocolError(f"datasets are not aligned, run PSI first: the ID list of {who!r} differs")
        if role == "host":
            for key in self.host_setup_keys:
                v = info.get(key)
                if not isinstance(v, str) or len(v) != 64:
                    raise ProtocolError(f"setup from {who!r}: bad {key!r}")
            commit = bytes.fromhex(info["model"])
            self._check_host_model(who, commit)
            self._commits[who] = commit
        return info

    def _check_host_model(self, host: str, commit: bytes) -> None:
        """Refuses a host that answers with a model other than the one it committed to in
        training, where this role knows that commitment (the guest)."""
        if self.role != "guest":
            return
        if self._model["host_commitments"].get(host) != commit.hex():
            raise ProtocolError(
                f"host {host!r} answers with a model other than the one it committed to in training task "
                f"{self._p['model_task']}"
            )

    @abstractmethod
    def _after_setup(self) -> list[base.Message]:
        """What this party sends once it has every peer's setup."""

    @abstractmethod
    def _on_message(self, msg: base.Message) -> list[base.Message] | None:
        """A message after the setup round; None when this role takes no such message."""

    # -- outcome -----------------------------------------------------------------------------------

    def _publish_result(self, result: dict[str, Any]) -> list[base.Message]:
        """The guest's end: the result, its salted hash to every host."""
        self._result = canonical_json(result)
        self._result_hash = self.commitment.result_hash(self._salt(), self._result)
        self._done = True
        self.report(1.0, "scored; the guest holds the scores")
        return [self.send(h, PREDICT_ROUND_RESULT, KIND_RESULT, self._result_hash) for h in self._hosts]

    def _on_result_hash(self, msg: base.Message) -> list[base.Message]:
        """A host's end: the guest's result hash."""
        if self._result_hash is not None or len(self._setups) < len(self.ctx.peers):
            raise ProtocolError(f"unexpected result hash from {msg.sender!r}")
        if len(msg.payload) != 32:
            raise ProtocolError(f"result hash from the guest has {len(msg.payload)} bytes, expected 32")
        self._result_hash = msg.payload
        self._done = True
        self.report(1.0, "done; the guest holds the scores")
        return []

    @property
    def done(self) -> bool:
        return self._done

    def _salt(self) -> bytes:
        return self.secret_bytes(f"{self.name}/result-salt", 32)

    def _commit_bytes(self) -> bytes:
        return b"".join(self._commits[h] for h in self._hosts)

    def result_commitment(self) -> bytes:
        if not self._done or self._result_hash is None:
            raise ProtocolError(f"the {self.name} protocol has not finished")
        return self.commitment.commit(self._commit_bytes(), self._result_hash)

    def commitment_opening(self) -> bytes:
        """The hosts' model commitments (host order), followed at the guest by its salt."""
        if not self._done:
            raise ProtocolError(f"the {self.name} protocol has not finished")
        opening = self._commit_bytes()
        return opening + self._salt() if self.role == "guest" else opening
