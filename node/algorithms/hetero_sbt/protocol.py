"""Vertical gradient-boosted trees (hetero-sbt), SecureBoost style (Cheng et al. 2019; FATE's
Hetero SecureBoost), arbiter-free, with packed gradients, histogram subtraction and cipher
compression.

Parties. The guest G = the task's recipient holds the labels y and features X_G; one or more
hosts H_1..H_k (the other participants, in on-chain order) hold features X_j for the same IDs.
Every party sorts its rows by ID; in the setup round each sends the guest (and the guest each
host) a hash of its sorted ID list bound to the task, and a mismatch is "datasets are not
aligned, run PSI first". The guest owns a Paillier key pair derived deterministically from its
secret task seed (2048 or 3072 bits; params refuse less).

Rows. A validation split (params `validation_fraction`) and each tree's row sample (params
`subsample`) are drawn from the task binding and params `seed`, alike at every party
(`trees.validation_mask`, `trees.tree_sample`): they are public, not secret. (GOSS is not
offered: its sample depends on the gradients, so hosts would see which rows have the largest
|g|, which in the first trees of a binary model is nearly their labels.) Every party bins
its own columns locally on the training rows (`trees.bin_matrix`, scikit-learn's quantile
binning, at most `max_bins` bins); bin edges never leave the party. A host's features are known
to the guest only by an opaque index (a position in a host-secret permutation of its columns)
and their bin counts.

One tree t (objective "binary": logistic loss on 0/1 labels; "regression": squared error):
  1. G computes g, h of every sampled row from the current scores, quantises them
     (`trees.quantise`: g_q = round(g·2^24) offset by a power of two to be non-negative, h_q)
     and sends every host (kind "gradients") ONE ciphertext per sampled row,
     [[g_off·2^h_bits + h_q]] (both values packed in one plaintext), with the bit sizes.
  Then per level l, for the level's nodes (a node is open, i.e. a split candidate, when its
  depth is below max_depth and it has at least 2·min_samples_leaf sampled rows; every party
  applies the rule alike):
  2. H_j -> G ("histograms"): for the root, or for the SMALLER child (sampled rows; left on a
     tie) of every node split at level l-1 that has an open child, the encrypted per-bin sums
     of every feature (bins 0..nb-2; the last is implied by the node totals): products of the
     rows' ciphertexts. The guest derives the sibling in plaintext, parent - child (histogram
     subtraction: a level costs the hosts the rows of the smaller children only; a host
     multiplies each row once into the joint bin of a PAIR of its features and reads both
     features' bin sums off the joint bins, `crypto.histogram_pairs_job`). Cipher
     compression: K = floor((|n| - 2) / T) bin sums of T bits share one ciphertext
     (Π c_j^(2^(T·j))), which is then multiplied by r^n for a fresh uniform r in Z_n* (full
     re-randomisation: the guest, who knows every row's encryption randomness and the
     factorisation of n, sees a uniformly random encryption of the packed sums and nothing of
     which rows they summed). The per-bin row counts travel in plaintext beside them.
  3. G decrypts the packed sums, derives siblings, computes the exact gain of every candidate
     split (its own features in plaintext, the same integer sums) and picks the best per
     open node (`trees.best_in`: min_child_weight, min_samples_leaf, l2, min_gain; first of
     equal gains in the order guest, hosts in order, features, bins). G -> every host
     ("split-requests"): the (node, feature, bin) of each node that host won (maybe none).
  4. H_j -> G ("partitions"): for each request, a new split id (the host's split table maps it
     to the feature and threshold, which stay at the host) and the left/right bit of every row
     of the node (validation rows included).
  5. G -> every host ("level-end"): for every node of the level, whether it split and the
     left/right bits of its rows: the next level's instance space.
  Tree end. Nodes that did not split are leaves with weight -G/(H + l2)·learning_rate (kept by
  the guest). G updates every row's score, computes the metrics (train and validation
  log-loss/AUC or MSE), decides on early stopping and sends "tree-end" (one byte: stop or go on).
Final. Every host sends a salted hash of its model state ("model-commit") to every peer; G
builds the result and sends its salted hash ("result-hash").

Rounds: setup 1; tree t, level l, phase p: (t+1)·2^16 + 16·l + p (gradients p=1 at l=0,
histograms 2, split-requests 3, partitions 4, level-end 5; tree-end p=6 at l=15);
model-commit 2^62, result-hash 2^62 + 1. Payloads over 8 MiB are split into parts, each
prefixed by (part index, part count) (u32, u32).

What each party learns (semi-honest parties, no collusion):
  - guest: for every open node, the sums of g and h and the row count of every bin of every
    host feature (known by opaque index): which of its own gradient statistics fall below
    each host quantile, i.e. the order statistics of its gradients along each host feature
    at bin resolution (SecureBoost's inherent leakage to the active party); the left/right
    partition of every node split by a host (so it can tell each row's leaf: the instance
    space), each host's number of features and bins per feature. Never a host's feature
    values or thresholds, nor which column an opaque index is.
  - host j: the instance space: which rows share a node at every level of every tree
    (validation rows included), which splits it won, the number of trees and their depth
    (SecureBoost's known leakage; FATE offers the same protocol, and "complete SecureBoost"
    / guest-only top layers as a mitigation, not built here); the bit size of the largest
    gradient (for "binary" a constant); which rows are sampled and held out (public). Nothing
    of the labels beyond that: gradients reach it only under the guest's key, and it sees no
    score, weight or metric.
  Collusion of hosts with each other reveals nothing more than the union of their views; a
  host colluding with the guest learns what the guest learns. Malicious behaviour is only
  partly detected: a host's counts, bit sizes and partitions are checked against each other
  and against the decrypted sums (a lying host is caught when its partition contradicts its
  histogram), but a host can send wrong sums consistently; Paillier is malleable; the
  transport's signatures make every message attributable.
Security assumptions: DCR, with the small-exponent variant for the guest's DJN fixed-base
encryption of ciphertexts that only hosts see (paillier.py (b)); the ciphertexts the guest
decrypts carry a full uniform r^n (no small-subgroup reading of host randomness, cf. issue #13
item 2); ChaCha20 as a PRG, SHA-256.

Result (canonical JSON, guest only): {"algorithm", "params", "guest", "hosts", "rows",
"validation_rows", "features": {"guest": [...], "hosts": {address: count}}, "objective",
"trees_built", "best_tree", "stopped": "max_trees" | "early_stopping", "metrics": [{"tree",
"train_...", "validation_..."}, ...], "importance": {"guest": {name: {"splits", "gain"}},
"hosts": {address: {opaque index: {"splits", "gain"}}}}, "model": {"guest": {"features",
"init_score", "trees": [[node, ...], ...]}, "host_commitments": {address: hex}}}; a node is
{"id", "depth", "rows", "leaf": weight} or {"id", "depth", "rows", "gain", "left", "right",
"owner": "guest", "feature", "threshold"} or {..., "owner": host address, "split": id}.
`model_state()` at a host is its split table (id -> feature, threshold, bin) and a secret
salt; its commitment is sha256("pcn/hetero-sbt/model/v1" | canonical JSON of that state).
Commitment: sha256("pcn/hetero-sbt/commit/v1" | host commitments in order | h_r), h_r =
sha256("pcn/hetero-sbt/result/v1" | salt | result).

Work split. The guest encrypts in its node's process pool, modulo p² and q² (the same
ciphertexts as the fixed-base h^e mod n², its factors never leave its own processes) and
decrypts there; a host splits each level's histogram sums by rows over the pool (products
modulo n² do not depend on the split), then packs and re-randomises in it. Chunk keys are
fixed per 2048 rows, so no byte depends on the number of cores.

Progress (`report`): trees and levels done ("tree 3/10 built"). The metrics of every tree
(train and validation AUC / loss) are result-derived: they go into the guest's result, never
into the progress text, which every participant and the requester can read (README #13.9).
The guest (the recipient) shows them as they form to its own operator alone
(`services.report_to_operator`: `pcn task status` run by the guest's organisation).

Checkpoints. At every tree boundary (guest: after sending "tree-end"; host: after receiving
it) the party snapshots its state (also handed to `ctx.services.save_checkpoint`);
`HeteroSbtProtocol.resume(ctx, data, blob)` rebuilds the party there: its `start()` re-emits
the guest's "tree-end" messages of the boundary and then the next tree's first messages with
the same sequence numbers, and `resume_from[sender]` is the first incoming sequence number the
runtime must deliver again.
"""

from __future__ import annotations

import os
import struct
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from gmpy2 import mpz

from pcn.algorithms.base import CommitmentScheme, Message, PartyContext, ProtocolError
from pcn.algorithms.hetero_lr.common import (
    SeededObfuscator,
    derive_keypair,
    load_local,
    nth_powers_job,
    public_key_from_hex,
    uniform_units,
)
from pcn.algorithms.hetero_sbt import crypto, trees
from pcn.algorithms.hetero_sbt.params import validate_params as _validate_params
from pcn.algorithms.hetero_sbt.trees import Histogram, Rules
from pcn.algorithms.vertical import (
    KIND_MODEL,
    KIND_RESULT,
    KIND_SETUP,
    ROUND_FINAL,
    ROUND_SETUP,
    SETUP,
    Drbg,
    VerticalTraining,
    ids_hash,
    numeric,
)
from pcn.crypto.paillier import PaillierPrivateKey, PaillierPublicKey

DOMAIN = trees.DOMAIN
RESULT_DOMAIN = b"pcn/hetero-sbt/result/v1"
COMMIT_DOMAIN = b"pcn/hetero-sbt/commit/v1"

COMMITMENT = CommitmentScheme(
    RESULT_DOMAIN,
    COMMIT_DOMAIN,
    head_unit=32,
    min_head=32,
    error="a hetero-sbt opening is the host model commitments followed by the salt, 32 bytes each",
)

ENCRYPT_CHUNK = 2048  # rows per ChaCha20 stream of the guest's encryption (fixed: bytes never depend on cores)

ROUND_TREE = 1 << 16
ROUND_LEVEL = 16
LEVEL_TREE_END = 15

KIND_GRADIENTS = "gradients"
KIND_HISTOGRAMS = "histograms"
KIND_REQUESTS = "split-requests"
KIND_PARTITIONS = "partitions"
KIND_LEVEL_END = "level-end"
KIND_TREE_END = "tree-end"

PHASE_OF = {
    KIND_GRADIENTS: 1,
    KIND_HISTOGRAMS: 2,
    KIND_REQUESTS: 3,
    KIND_PARTITIONS: 4,
    KIND_LEVEL_END: 5,
    KIND_TREE_END: 6,
}
FROM_GUEST = {KIND_SETUP, KIND_GRADIENTS, KIND_REQUESTS, KIND_LEVEL_END, KIND_TREE_END, KIND_RESULT}
FROM_HOST_TO_GUEST = {KIND_SETUP, KIND_HISTOGRAMS, KIND_PARTITIONS, KIND_MODEL}
FROM_HOST_TO_HOST = {KIND_MODEL}

GRAD_HEADER = struct.Struct(">HH")  # g_bits, h_bits
U32 = struct.Struct(">I")
REQUEST = struct.Struct(">III")  # node position in the level, feature, bin

# phases
BEGIN_TREE, WAIT_HIST, WAIT_PART, WAIT_COMMITS = range(1, 5)
WAIT_GRAD, WAIT_REQ, WAIT_LEVEL_END, WAIT_TREE_END, WAIT_FINAL = range(5, 10)


def tree_round(tree: int, level: int, phase: int) -> int:
    return (tree + 1) * ROUND_TREE + level * ROUND_LEVEL + phase


def bitset(mask: np.ndarray) -> bytes:
    return np.packbits(mask.astype(bool)).tobytes()


def read_bitset(data: bytes, count: int, what: str) -> np.ndarray:
    if len(data) != (count + 7) // 8:
        raise ProtocolError(f"{what}: {len(data)} bytes of partition bits, expected {(count + 7) // 8}")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits[count:].any():
        raise ProtocolError(f"{what}: padding bits set")
    return bits[:count].astype(bool)


@dataclass
class Node:
    id: int
    depth: int
    rows: np.ndarray  # every row of the node (sorted-ID indices), validation rows included
    sampled: np.ndarray  # the node's rows in this tree's sample
    parent: int = -1

    @property
    def count(self) -> int:
        return len(self.sampled)


def built_nodes(level: list[Node], pairs: list[tuple[int, int]], is_open: Callable[[Node], bool]) -> list[int]:
    """Positions (in `level`) of the nodes whose histograms hosts build: the root, or the smaller
    child (sampled rows; left on a tie) of every split with an open child."""
    if not pairs:
        return [0] if level and is_open(level[0]) else []
    out = []
    for a, b in pairs:
        if is_open(level[a]) or is_open(level[b]):
            out.append(a if level[a].count <= level[b].count else b)
    return out


@dataclass(eq=False)
class HeteroSbtProtocol(VerticalTraining):
    name: ClassVar[str] = "hetero-sbt"
    commitment: ClassVar[CommitmentScheme] = COMMITMENT
    unit: ClassVar[str] = "tree"
    units_param: ClassVar[str] = "trees"
    model_domain: ClassVar[bytes] = trees.MODEL_DOMAIN

    _bins: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.uint8), init=False, repr=False)
    _edges: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _bin_counts: list[int] = field(default_factory=list, init=False, repr=False)
    _valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), init=False, repr=False)
    _train: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), init=False, repr=False)
    _rules: Rules | None = field(default=None, init=False, repr=False)
    _pk: PaillierPublicKey | None = field(default=None, init=False, repr=False)
    # progress through the rounds
    _tree: int = field(default=0, init=False, repr=False)
    _level: int = field(default=0, init=False, repr=False)
    _nodes: list[Node] = field(default_factory=list, init=False, repr=False)  # the current level
    _pairs: list[tuple[int, int]] = field(default_factory=list, init=False, repr=False)  # sibling positions
    _next_id: int = field(default=0, init=False, repr=False)
    _in_sample: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), init=False, repr=False)

    @classmethod
    def role_class(cls, ctx: PartyContext) -> type[HeteroSbtProtocol]:
        """The guest's class for the recipient, the hosts' for every other party."""
        return HeteroSbtGuest if ctx.is_recipient else HeteroSbtHost

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        return _validate_params(params)

    # -- local data -----------------------------------------------------------------------------

    def _load(self) -> None:
        p, ctx = self._p, self.ctx
        self._rules = Rules(p["l2"], p["min_child_weight"], p["min_samples_leaf"], p["min_gain"])
        label = p["label_column"]
        local = load_local(self.data, ctx.id_column, p["features"].get(ctx.me.lower()), {label})
        self._n = len(local.ids)
        self._ids_hash = ids_hash(DOMAIN, ctx.binding, local.ids)
        self._valid = trees.validation_mask(ctx.binding, p["seed"], self._n, p["validation_fraction"])
        self._train = np.flatnonzero(~self._valid)
        if len(self._train) < 1:
            raise ProtocolError("hetero-sbt needs training rows")
        sampled = len(trees.tree_sample(ctx.binding, p["seed"], 0, self._train, p["subsample"]))
        if sampled < 2 * p["min_samples_leaf"]:
            raise ProtocolError(
                f"{sampled} sampled training rows cannot be split into two leaves of min_samples_leaf = "
                f"{p['min_samples_leaf']} rows"
            )
        raw = self._own_columns(local.features, local.raw, local.order)
        self._bins, self._edges = trees.bin_matrix(raw, ~self._valid, p["max_bins"])
        self._bin_counts = [len(e) + 1 for e in self._edges]

    @abstractmethod
    def _own_columns(self, features: list[str], raw: np.ndarray, order: np.ndarray) -> np.ndarray:
        """The columns this party trains on (the guest also reads its labels; a host orders its
        columns by a secret permutation); sets `_features` in that order."""

    # -- keys, randomness, messages ---------------------------------------------------------------

    def _process_setups(self) -> None:
        self._adopt_setups(self._checked_setups())

    def _setup_peers(self) -> list[str]:
        return list(self._hosts) if self.role == "guest" else [self._guest]

    @abstractmethod
    def _adopt_setups(self, infos: dict[str, dict[str, Any]]) -> None:
        """Takes the peers' checked setup messages in."""

    def _check_round(self, msg: Message) -> None:
        kind, rnd = msg.kind, msg.round
        ok = False
        if kind == KIND_SETUP:
            ok = rnd == ROUND_SETUP
        elif kind in PHASE_OF:
            tree, rest = divmod(rnd, ROUND_TREE)
            level, phase = divmod(rest, ROUND_LEVEL)
            tree -= 1
            want_level = LEVEL_TREE_END if kind == KIND_TREE_END else level
            ok = phase == PHASE_OF[kind] and 0 <= tree < self._p["trees"] and level == want_level
            ok = ok and (kind == KIND_TREE_END or level < self._p["max_depth"])
            # per link FIFO, no peer can be ahead: a message of another tree or level is a forgery
            ok = ok and tree == self._tree and (kind == KIND_TREE_END or level == self._level)
        elif kind in (KIND_MODEL, KIND_RESULT):
            ok = rnd == (ROUND_FINAL if kind == KIND_MODEL else ROUND_FINAL + 1)
        if not ok:
            raise ProtocolError(f"{kind!r} message from {msg.sender!r} with an impossible round {rnd}")

    # -- trees and levels (alike at every party) -----------------------------------------------------

    def _is_open(self, node: Node) -> bool:
        return trees.open_node(node.depth, node.count, self._p["max_depth"], self._p["min_samples_leaf"])

    def _units_done(self) -> int:
        return self._tree

    def _begin_unit(self, tree: int) -> None:
        p = self._p
        self._tree, self._level = tree, 0
        sample = trees.tree_sample(self.ctx.binding, p["seed"], tree, self._train, p["subsample"])
        self._in_sample = np.zeros(self._n, dtype=bool)
        self._in_sample[sample] = True
        self._nodes = [Node(0, 0, np.arange(self._n, dtype=np.int64), sample)]
        self._pairs = []
        self._next_id = 1
        self._set_floor(tree_round(tree, 0, 0))
        self._phase = BEGIN_TREE if self.role == "guest" else WAIT_GRAD

    def _children(self, splits: dict[int, np.ndarray]) -> bool:
        """Go to the next level: the children of the nodes split by `splits` (position -> left
        bits over the node's rows). True when the next level has an open node."""
        level: list[Node] = []
        pairs: list[tuple[int, int]] = []
        for pos, node in enumerate(self._nodes):
            left = splits.get(pos)
            if left is None:
                continue
            a = len(level)
            for side in (left, ~left):
                rows = node.rows[side]
                level.append(Node(self._next_id, node.depth + 1, rows, rows[self._in_sample[rows]], node.id))
                self._next_id += 1
            pairs.append((a, a + 1))
        self._nodes, self._pairs = level, pairs
        self._level += 1
        self._set_floor(tree_round(self._tree, self._level, 0))
        return any(self._is_open(nd) for nd in level)

    def _built(self) -> list[int]:
        return built_nodes(self._nodes, self._pairs, self._is_open)

    def _check_split(self, node: Node, left: np.ndarray, what: str) -> None:
        msl = self._p["min_samples_leaf"]
        n_left = int(self._in_sample[node.rows[left]].sum())
        if n_left < msl or node.count - n_left < msl:
            raise ProtocolError(f"{what}: a child with fewer than min_samples_leaf = {msl} sampled rows")

    # -- checkpoints -------------------------------------------------------------------------------

    def _unit_state(self) -> dict[str, Any]:
        return {"role_state": self._role_state()}

    def _restore_unit_state(self, state: dict[str, Any]) -> None:
        self._restore_role(state["role_state"])

    @abstractmethod
    def _role_state(self) -> dict[str, Any]:
        """What this role keeps across trees (JSON)."""

    @abstractmethod
    def _restore_role(self, state: dict[str, Any]) -> None:
        """The inverse of `_role_state`."""


# -- the guest ---------------------------------------------------------------------------------------


@dataclass
class _HostInfo:
    features: int
    bin_counts: list[int]
    values: int  # candidate splits (bins 0..nb-2 of every feature) per histogram


@dataclass(eq=False)
class HeteroSbtGuest(HeteroSbtProtocol):
    """The guest: the recipient, which holds the labels, its own features, the key and the trees."""

    role: ClassVar[str] = "guest"

    _y: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _sk: PaillierPrivateKey | None = field(default=None, init=False, repr=False)
    _obf: SeededObfuscator | None = field(default=None, init=False, repr=False)
    _host_info: dict[str, _HostInfo] = field(default_factory=dict, init=False, repr=False)
    _raw: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _init: float = field(default=0.0, init=False, repr=False)
    _trees: list[list[dict[str, Any]]] = field(default_factory=list, init=False, repr=False)
    _metrics: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _importance: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict, init=False, repr=False)
    _best: tuple[int, float] = field(default=(-1, 0.0), init=False, repr=False)
    _stopped: str = field(default="", init=False, repr=False)
    # per tree
    _q: trees.Quantised | None = field(default=None, init=False, repr=False)
    _gq: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), init=False, repr=False)
    _hq: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), init=False, repr=False)
    _records: dict[int, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _leaves: list[Node] = field(default_factory=list, init=False, repr=False)
    _hists: dict[int, dict[str, Histogram]] = field(default_factory=dict, init=False, repr=False)
    _decisions: dict[int, tuple[str, int, int, float]] = field(default_factory=dict, init=False, repr=False)

    def _own_columns(self, features: list[str], raw: np.ndarray, order: np.ndarray) -> np.ndarray:
        label, objective = self._p["label_column"], self._p["objective"]
        if label not in self.data:
            raise ProtocolError(f"the guest's dataset has no label column {label!r}")
        y = numeric(self.data, label, order)
        train = y[~trees.validation_mask(self.ctx.binding, self._p["seed"], len(y), self._p["validation_fraction"])]
        if objective == "binary":
            if not np.all((y == 0) | (y == 1)):
                raise ProtocolError(f"label column {label!r} must hold only 0 and 1 for objective 'binary'")
            if int(train.sum()) in (0, len(train)):
                raise ProtocolError(f"label column {label!r} has only one class in the training rows")
        self._y = y
        self._features = list(features)
        self._init = trees.init_score(objective, train)
        self._raw = np.full(len(y), self._init)
        return raw

    def _setup_extra(self) -> dict[str, Any]:
        self._own_keys()
        assert self._pk is not None
        return {"paillier": format(int(self._pk.n), "x")}

    def _own_keys(self) -> None:
        if self._sk is None:
            self._pk, self._sk = derive_keypair(self._p["key_bits"], self._key("paillier/guest"))

    def _adopt_setups(self, infos: dict[str, dict[str, Any]]) -> None:
        self._own_keys()
        assert self._pk is not None
        for h in self._hosts:
            info = infos[h]
            counts = info.get("bins")
            d = int(info["features"])
            if (
                not isinstance(counts, list)
                or len(counts) != d
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in counts)
                or not all(1 <= b <= self._p["max_bins"] for b in counts)
            ):
                raise ProtocolError(f"setup from {h!r}: bad bin counts")
            self._host_info[h] = _HostInfo(d, list(counts), sum(b - 1 for b in counts))
        rows = len(self._train) * self._p["trees"]
        self._obf = SeededObfuscator.derive(self._pk, self._key("obfuscator"), rows)

    def _allowed(self, sender: str) -> set[str]:
        return set(FROM_HOST_TO_GUEST)

    def _handlers(self) -> dict[int, Callable[[], list[Message] | None]]:
        return {
            SETUP: self._on_setup,
            BEGIN_TREE: self._on_begin_tree,
            WAIT_HIST: self._on_histograms,
            WAIT_PART: self._on_partitions,
            WAIT_COMMITS: self._on_commits,
        }

    # -- a tree ------------------------------------------------------------------------------------

    def _on_begin_tree(self) -> list[Message]:
        p, t = self._p, self._tree
        pk, obf = self._pk, self._obf
        assert pk is not None and obf is not None
        sample = self._nodes[0].sampled
        g, h = trees.grad_hess(p["objective"], self._raw[sample], self._y[sample])
        q = trees.quantise(p["objective"], g, h, len(sample))
        self._q = q
        self._gq = np.zeros(self._n, dtype=np.int64)
        self._hq = np.zeros(self._n, dtype=np.int64)
        self._gq[sample], self._hq[sample] = q.g, q.h
        shift = 1 << q.h_bits
        plain = [(int(a) + q.offset) * shift + int(b) for a, b in zip(q.g.tolist(), q.h.tolist(), strict=True)]
        chunks = [
            (self._key(f"encrypt/{t}/{i}"), plain[i : i + ENCRYPT_CHUNK]) for i in range(0, len(plain), ENCRYPT_CHUNK)
        ]
        workers = max(1, min(os.cpu_count() or 1, len(chunks)))
        sk = self._sk
        assert sk is not None
        # the key holder encrypts modulo p² and q² (the same ciphertexts as h^e mod n², see crypto)
        jobs = [(int(sk.p), int(sk.q), int(obf.h), obf.exponent_bits, chunks[k::workers]) for k in range(workers)]
        done = self.pmap(crypto.encrypt_crt_job, jobs)
        parts: list[bytes] = [b""] * len(chunks)
        for k, res in enumerate(done):
            for j, blob in enumerate(res):
                parts[k + j * workers] = blob
        payload = GRAD_HEADER.pack(q.g_bits, q.h_bits) + b"".join(parts)
        self._records, self._leaves, self._hists = {}, [], {}
        self._progress(f"tree {t + 1}/{p['trees']}: gradients sent")
        out: list[Message] = []
        for host in self._hosts:
            out += self._send(host, tree_round(t, 0, 1), KIND_GRADIENTS, payload)
        self._phase = WAIT_HIST
        return out

    def _progress(self, what: str) -> None:
        self.report(0.02 + 0.96 * (self._tree + self._level / (self._p["max_depth"] + 1)) / self._p["trees"], what)

    def _totals(self, node: Node) -> tuple[int, int, int]:
        return int(self._gq[node.sampled].sum()), int(self._hq[node.sampled].sum()), node.count

    def _decode_host(self, host: str, data: bytes, built: list[int]) -> list[Histogram]:
        """The plaintext histograms of the built nodes from one host's packed ciphertexts."""
        sk, pk, q = self._sk, self._pk, self._q
        assert sk is not None and pk is not None and q is not None
        info = self._host_info[host]
        what = f"histograms from {host!r}"
        total_values = info.values * len(built)
        T = trees.slot_bits(q.g_bits, q.h_bits, int(self._in_sample.sum()))
        K = (pk.bits - 2) // T
        if K < 1:
            raise ProtocolError("the key is too small to pack one histogram value")
        cts = -(-total_values // K)
        width = (int(pk.nsquare.bit_length()) + 7) // 8
        if len(data) != cts * width + 4 * total_values:
            raise ProtocolError(f"{what}: {len(data)} bytes, expected {cts} ciphertexts and {total_values} counts")
        cipher = crypto.parse(data[: cts * width], width)
        if any(not 0 < c < pk.nsquare for c in cipher):
            raise ProtocolError(f"{what}: ciphertext out of range (0, n²)")
        counts = np.frombuffer(data[cts * width :], dtype=">u4").astype(np.int64)
        size = max(1, -(-cts // max(1, min(os.cpu_count() or 1, cts))))
        jobs = [(int(sk.p), int(sk.q), data[i * width : min(cts, i + size) * width]) for i in range(0, cts, size)]
        plains = [m for part in self.pmap(crypto.decrypt_job, jobs) for m in part]
        mask = (1 << T) - 1
        hmask = (1 << q.h_bits) - 1
        values: list[int] = []
        for k, m in enumerate(plains):
            m = int(m)
            slots = min(K, total_values - k * K)
            if m >> (T * slots):
                raise ProtocolError(f"{what}: a packed ciphertext overflows its slots (tampered?)")
            for j in range(slots):
                values.append((m >> (T * j)) & mask)
        g = np.array([v >> q.h_bits for v in values], dtype=np.int64)
        h = np.array([v & hmask for v in values], dtype=np.int64)
        c = counts
        g = g - c * q.offset
        out = []
        for k, pos in enumerate(built):
            node = self._nodes[pos]
            sl = slice(k * info.values, (k + 1) * info.values)
            hist = Histogram(g[sl], h[sl], c[sl])
            if np.any(hist.c < 0) or np.any(hist.h < 0) or np.any(np.abs(hist.g) > hist.c * q.offset):
                raise ProtocolError(f"{what}: sums that no rows can give (tampered?)")
            starts = np.cumsum([0] + [b - 1 for b in info.bin_counts])
            for f in range(info.features):
                if int(hist.c[starts[f] : starts[f + 1]].sum()) > node.count:
                    raise ProtocolError(f"{what}: more rows in the bins than in the node")
            out.append(hist)
        return out

    def _on_histograms(self) -> list[Message] | None:
        t, lv = self._tree, self._level
        rnd = tree_round(t, lv, 2)
        if not self._has(KIND_HISTOGRAMS, rnd, self._hosts):
            return None
        built = self._built()
        hists: dict[int, dict[str, Histogram]] = {}
        for host in self._hosts:
            for pos, hist in zip(
                built, self._decode_host(host, self._take(KIND_HISTOGRAMS, rnd, host), built), strict=True
            ):
                hists.setdefault(pos, {})[host] = hist
        for a, b in self._pairs:  # histogram subtraction: sibling = parent - built child
            for pos, other in ((a, b), (b, a)):
                if pos in hists and other not in hists and self._is_open(self._nodes[other]):
                    parent = self._hists[self._nodes[pos].parent]
                    hists[other] = {h: parent[h] - hists[pos][h] for h in self._hosts}
        rules = self._rules
        assert rules is not None
        requests: dict[str, list[tuple[int, int, int]]] = {h: [] for h in self._hosts}
        self._decisions = {}
        new_hists: dict[int, dict[str, Histogram]] = {}
        for pos, node in enumerate(self._nodes):
            if not self._is_open(node):
                continue
            total = self._totals(node)
            own = trees.plain_histogram(
                self._bins, self._bin_counts, node.sampled, self._gq[node.sampled], self._hq[node.sampled]
            )
            best = trees.best_in(own, self._bin_counts, total, rules)
            winner = ""
            for host in self._hosts:
                cand = trees.best_in(hists[pos][host], self._host_info[host].bin_counts, total, rules)
                if cand[0] > best[0]:
                    best, winner = cand, host
            new_hists[node.id] = hists[pos]
            if best[1] < 0:
                continue
            counts = self._bin_counts if not winner else self._host_info[winner].bin_counts
            feats, bins = trees.layout(counts)
            f, b = int(feats[best[1]]), int(bins[best[1]])
            self._decisions[pos] = (winner, f, b, best[0])
            if winner:
                requests[winner].append((pos, f, b))
        self._hists = new_hists
        self._progress(f"tree {t + 1}/{self._p['trees']}, level {lv + 1}: splits chosen")
        out: list[Message] = []
        for host in self._hosts:
            body = U32.pack(len(requests[host])) + b"".join(REQUEST.pack(*r) for r in requests[host])
            out += self._send(host, tree_round(t, lv, 3), KIND_REQUESTS, body)
        self._phase = WAIT_PART
        return out

    def _on_partitions(self) -> list[Message] | None:
        t, lv = self._tree, self._level
        rnd = tree_round(t, lv, 4)
        if not self._has(KIND_PARTITIONS, rnd, self._hosts):
            return None
        splits: dict[int, np.ndarray] = {}
        refs: dict[int, int] = {}
        for host in self._hosts:
            data = self._take(KIND_PARTITIONS, rnd, host)
            what = f"partitions from {host!r}"
            off = 0
            mine = sorted(pos for pos, d in self._decisions.items() if d[0] == host)
            for pos in mine:
                node = self._nodes[pos]
                size = (len(node.rows) + 7) // 8
                if len(data) < off + 4 + size:
                    raise ProtocolError(f"{what}: shorter than the requested partitions")
                (sid,) = U32.unpack_from(data, off)
                left = read_bitset(data[off + 4 : off + 4 + size], len(node.rows), what)
                off += 4 + size
                self._check_split(node, left, what)
                refs[pos] = sid
                splits[pos] = left
            if off != len(data):
                raise ProtocolError(f"{what}: {len(data) - off} bytes beyond the requested partitions")
        for pos, (winner, f, b, _gain) in self._decisions.items():
            if not winner:
                node = self._nodes[pos]
                splits[pos] = self._bins[node.rows, f] <= b
            else:
                node = self._nodes[pos]
                hist = self._hists[node.id][winner]
                starts = np.cumsum([0] + [c - 1 for c in self._host_info[winner].bin_counts])
                promised = int(hist.c[starts[f] : starts[f] + b + 1].sum())
                if int(self._in_sample[node.rows[splits[pos]]].sum()) != promised:
                    raise ProtocolError(f"partitions from {winner!r}: a partition contradicts the host's histogram")
        # record the level
        rules = self._rules
        assert rules is not None
        for pos, node in enumerate(self._nodes):
            rec: dict[str, Any] = {"id": node.id, "depth": node.depth, "rows": node.count}
            if pos in self._decisions:
                winner, f, b, gain = self._decisions[pos]
                rec["gain"] = gain
                if winner:
                    rec.update({"owner": winner, "split": refs[pos]})
                    key = str(f)
                    bucket = self._importance.setdefault(winner, {})
                else:
                    rec.update({"owner": "guest", "feature": self._features[f], "threshold": float(self._edges[f][b])})
                    key = self._features[f]
                    bucket = self._importance.setdefault("", {})
                entry = bucket.setdefault(key, {"splits": 0, "gain": 0.0})
                entry["splits"] += 1
                entry["gain"] += gain
            else:
                self._leaves.append(node)
            self._records[node.id] = rec
        out: list[Message] = []
        body = b"".join(
            (b"\x01" + bitset(splits[pos])) if pos in splits else b"\x00" for pos in range(len(self._nodes))
        )
        for host in self._hosts:
            out += self._send(host, tree_round(t, lv, 5), KIND_LEVEL_END, body)
        old = self._nodes
        positions_split = sorted(splits)
        more = self._children(splits)
        for k, pos in enumerate(positions_split):
            self._records[old[pos].id]["left"] = self._nodes[2 * k].id
            self._records[old[pos].id]["right"] = self._nodes[2 * k + 1].id
        if more:
            self._phase = WAIT_HIST
            return out
        self._leaves.extend(self._nodes)
        for node in self._nodes:
            self._records[node.id] = {"id": node.id, "depth": node.depth, "rows": node.count}
        return self._end_tree(out)

    def _end_tree(self, out: list[Message]) -> list[Message]:
        """The tree's leaves, scores, metrics and early-stopping decision; `out` are the
        messages already sent in this call (the last "level-end"), which a checkpoint taken
        here re-emits on resume with the "tree-end" ones."""
        p, t = self._p, self._tree
        rules = self._rules
        assert rules is not None
        for node in self._leaves:
            G, H, _ = self._totals(node)
            w = trees.leaf_weight(G, H, rules, p["learning_rate"])
            self._records[node.id]["leaf"] = w
            self._raw[node.rows] += w
        self._trees.append([self._records[k] for k in sorted(self._records)])
        obj = p["objective"]
        m: dict[str, Any] = {"tree": t + 1, **trees.metrics(obj, self._raw[self._train], self._y[self._train], "train")}
        stop = t + 1 >= p["trees"]
        what = f"tree {t + 1}/{p['trees']} built"
        if self._valid.any():
            m.update(trees.metrics(obj, self._raw[self._valid], self._y[self._valid], "validation"))
            key = (
                "validation_auc"
                if "validation_auc" in m
                else ("validation_mse" if obj == "regression" else "validation_log_loss")
            )
            score = m[key] if key == "validation_auc" else -m[key]
            if self._best[0] < 0 or score > self._best[1]:
                self._best = (t, score)
            # the metric is result-derived: it goes into the result, never into progress (#13.9)
            rounds = p["early_stopping_rounds"]
            if rounds and t - self._best[0] >= rounds and not stop:
                stop, self._stopped = True, "early_stopping"
        self._metrics.append(m)
        self.report(0.02 + 0.96 * (t + 1) / p["trees"], what)
        self._show_operator(m)
        out = list(out)
        for host in self._hosts:
            out += self._send(host, tree_round(t, LEVEL_TREE_END, 6), KIND_TREE_END, b"\x01" if stop else b"\x00")
        if stop:
            self._stopped = self._stopped or "max_trees"
            self._phase = WAIT_COMMITS
            self._set_floor(ROUND_FINAL)
            return out
        self._begin_unit(t + 1)
        self._snapshot(resend=out)
        return out

    def _on_commits(self) -> list[Message] | None:
        if not self._has(KIND_MODEL, ROUND_FINAL, self._hosts):
            return None
        for h in self._hosts:
            self._read_commit(h)
        p = self._p
        imp_hosts = {
            h: dict(sorted(self._importance.get(h, {}).items(), key=lambda kv: int(kv[0]))) for h in self._hosts
        }
        self._model = {
            **self._model_header(),
            "label_column": p["label_column"],
            "objective": p["objective"],
            "features": self._features,
            "init_score": self._init,
            "trees": self._trees,
            "host_commitments": {h: self._model_commits[h].hex() for h in self._hosts},
        }
        result = {
            "algorithm": self.name,
            "params": p,
            "guest": self._guest,
            "hosts": self._hosts,
            "rows": self._n,
            "validation_rows": int(self._valid.sum()),
            "features": {"guest": self._features, "hosts": {h: self._host_info[h].features for h in self._hosts}},
            "objective": p["objective"],
            "trees_built": len(self._trees),
            "best_tree": self._best[0] + 1 if self._best[0] >= 0 else len(self._trees),
            "stopped": self._stopped,
            "metrics": self._metrics,
            "importance": {"guest": self._importance.get("", {}), "hosts": imp_hosts},
            "model": {
                "guest": {k: self._model[k] for k in ("features", "init_score", "trees")},
                "host_commitments": self._model["host_commitments"],
            },
        }
        return self._publish_result(result, f"done after {len(self._trees)} trees ({self._stopped})")

    def _role_state(self) -> dict[str, Any]:
        return {
            "raw": [float(v) for v in self._raw.tolist()],
            "trees": self._trees,
            "metrics": self._metrics,
            "importance": self._importance,
            "best": list(self._best),
            "stopped": self._stopped,
        }

    def _restore_role(self, state: dict[str, Any]) -> None:
        raw = np.array(state["raw"], dtype=np.float64)
        if raw.shape != self._raw.shape:
            raise ProtocolError("checkpoint scores have the wrong shape")
        self._raw = raw
        self._trees = list(state["trees"])
        self._metrics = list(state["metrics"])
        self._importance = {str(k): dict(v) for k, v in state["importance"].items()}
        self._best = (int(state["best"][0]), float(state["best"][1]))
        self._stopped = str(state["stopped"])


# -- a host ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class HeteroSbtHost(HeteroSbtProtocol):
    """A host: features only; builds encrypted histograms and keeps its split thresholds."""

    role: ClassVar[str] = "host"

    _order: list[int] = field(default_factory=list, init=False, repr=False)  # opaque index -> column
    _splits: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _cts: list[mpz] = field(default_factory=list, init=False, repr=False)
    _slot_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), init=False, repr=False)
    _T: int = field(default=0, init=False, repr=False)
    _requested: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def _own_columns(self, features: list[str], raw: np.ndarray, order: np.ndarray) -> np.ndarray:
        if not features:
            raise ProtocolError("this host has no numeric feature column to contribute")
        self._order = [int(i) for i in self.secret_permutation("hetero-sbt/features", len(features)).tolist()]
        self._features = [features[i] for i in self._order]
        return raw[:, self._order]

    def _setup_extra(self) -> dict[str, Any]:
        return {"bins": self._bin_counts}

    def _adopt_setups(self, infos: dict[str, dict[str, Any]]) -> None:
        self._pk = public_key_from_hex(infos[self._guest].get("paillier"), self._p["key_bits"], "guest setup")

    def _allowed(self, sender: str) -> set[str]:
        return set(FROM_GUEST) if sender == self._guest else set(FROM_HOST_TO_HOST)

    def _handlers(self) -> dict[int, Callable[[], list[Message] | None]]:
        return {
            SETUP: self._on_setup,
            WAIT_GRAD: self._on_gradients,
            WAIT_REQ: self._on_requests,
            WAIT_LEVEL_END: self._on_level_end,
            WAIT_TREE_END: self._on_tree_end,
            WAIT_FINAL: self._on_final,
        }

    def _on_gradients(self) -> list[Message] | None:
        t = self._tree
        rnd = tree_round(t, 0, 1)
        if not self._has(KIND_GRADIENTS, rnd, [self._guest]):
            return None
        pk = self._pk
        assert pk is not None
        data = self._take(KIND_GRADIENTS, rnd, self._guest)
        what = "gradients from the guest"
        if len(data) < GRAD_HEADER.size:
            raise ProtocolError(f"{what}: shorter than its header")
        g_bits, h_bits = GRAD_HEADER.unpack_from(data)
        sample = self._nodes[0].sampled
        if not 2 <= g_bits <= 64 or not 2 <= h_bits <= 128:
            raise ProtocolError(f"{what}: impossible bit sizes {g_bits}, {h_bits}")
        self._T = trees.slot_bits(g_bits, h_bits, len(sample))
        if pk.bits - 2 < self._T:
            raise ProtocolError(f"{what}: bit sizes {g_bits}, {h_bits} do not fit the key")
        width = (int(pk.nsquare.bit_length()) + 7) // 8
        body = data[GRAD_HEADER.size :]
        if len(body) != len(sample) * width:
            raise ProtocolError(f"{what}: {len(body)} bytes, expected {len(sample)} ciphertexts of {width} bytes")
        self._cts = crypto.parse(body, width)
        if any(not 0 < c < pk.nsquare for c in self._cts):
            raise ProtocolError(f"{what}: ciphertext out of range (0, n²)")
        self._slot_of = np.full(self._n, -1, dtype=np.int64)
        self._slot_of[sample] = np.arange(len(sample))
        return self._send_histograms()

    def _send_histograms(self) -> list[Message]:
        pk = self._pk
        assert pk is not None
        t, lv = self._tree, self._level
        built = self._built()
        V = sum(b - 1 for b in self._bin_counts)
        starts = np.cumsum([0] + [b - 1 for b in self._bin_counts])[:-1]
        # the rows of the built nodes, the position of each one's node, and the per-bin counts
        # (plaintext, beside the packed sums) of bins 0..nb-2 of every feature
        rows_all: list[np.ndarray] = []
        node_all: list[np.ndarray] = []
        counts = np.zeros(V * len(built), dtype=np.int64)
        nb = np.array(self._bin_counts, dtype=np.int64)[None, :]
        for k, pos in enumerate(built):
            rows = self._nodes[pos].sampled
            b = self._bins[rows].astype(np.int64)
            slots = k * V + starts[None, :] + b
            counts += np.bincount(slots[b < nb - 1], minlength=V * len(built))
            rows_all.append(rows)
            node_all.append(np.full(len(rows), k, dtype=np.int64))
        rows_cat = np.concatenate(rows_all) if rows_all else np.zeros(0, dtype=np.int64)
        node_cat = np.concatenate(node_all) if node_all else np.zeros(0, dtype=np.int64)
        n, width = int(pk.n), (int(pk.nsquare.bit_length()) + 7) // 8
        total = V * len(built)
        pieces = max(1, min(os.cpu_count() or 1, len(rows_cat) // 256)) if total else 0
        jobs = []
        for part in np.array_split(np.arange(len(rows_cat)), pieces) if pieces else []:
            if len(part) == 0:
                continue
            rows = rows_cat[part]
            cts = b"".join(int(self._cts[s]).to_bytes(width, "big") for s in self._slot_of[rows].tolist())
            bins = np.ascontiguousarray(self._bins[rows])
            jobs.append((n, cts, bins, np.ascontiguousarray(node_cat[part]), len(built), list(self._bin_counts)))
        sums = crypto.combine(self.pmap(crypto.histogram_pairs_job, jobs), width, n) if jobs else [mpz(1)] * total
        K = (pk.bits - 2) // self._T
        groups = [sums[i : i + K] for i in range(0, total, K)]
        per_job = max(1, -(-len(groups) // max(1, min(os.cpu_count() or 1, len(groups)))))
        pack_jobs = [
            (n, self._T, b"".join(int(c).to_bytes(width, "big") for g in groups[i : i + per_job] for c in g), K)
            for i in range(0, len(groups), per_job)
        ]
        packed = crypto.parse(b"".join(self.pmap(crypto.pack_job, pack_jobs)), width) if pack_jobs else []
        # full re-randomisation: the guest must see uniform randomness (r^n, r uniform in Z_n*)
        rs = uniform_units(Drbg(self._key(f"rerandomise/{t}/{lv}")), n, len(packed))
        size = -(-len(rs) // max(1, min(os.cpu_count() or 1, len(rs)))) if rs else 1
        powers = [
            rn
            for part in self.pmap(nth_powers_job, [(n, rs[i : i + size]) for i in range(0, len(rs), size)])
            for rn in part
        ]
        nsq = pk.nsquare
        out_cts = b"".join(int(c * mpz(r) % nsq).to_bytes(width, "big") for c, r in zip(packed, powers, strict=True))
        payload = out_cts + counts.astype(">u4").tobytes()
        self.report(
            0.02 + 0.96 * (t + lv / (self._p["max_depth"] + 1)) / self._p["trees"],
            f"tree {t + 1}/{self._p['trees']}, level {lv + 1}: histograms sent",
        )
        self._phase = WAIT_REQ
        return self._send(self._guest, tree_round(t, lv, 2), KIND_HISTOGRAMS, payload)

    def _on_requests(self) -> list[Message] | None:
        t, lv = self._tree, self._level
        rnd = tree_round(t, lv, 3)
        if not self._has(KIND_REQUESTS, rnd, [self._guest]):
            return None
        data = self._take(KIND_REQUESTS, rnd, self._guest)
        what = "split requests from the guest"
        if len(data) < 4:
            raise ProtocolError(f"{what}: shorter than its header")
        (count,) = U32.unpack_from(data)
        if len(data) != 4 + count * REQUEST.size:
            raise ProtocolError(f"{what}: {len(data)} bytes for {count} requests")
        out = b""
        self._requested = {}
        last = -1
        for k in range(count):
            pos, f, b = REQUEST.unpack_from(data, 4 + k * REQUEST.size)
            if pos <= last or pos >= len(self._nodes) or not self._is_open(self._nodes[pos]):
                raise ProtocolError(f"{what}: node {pos} is not an open node of this level (or out of order)")
            last = pos
            if f >= len(self._features) or b >= self._bin_counts[f] - 1:
                raise ProtocolError(f"{what}: no split after bin {b} of feature {f}")
            node = self._nodes[pos]
            left = self._bins[node.rows, f] <= b
            self._check_split(node, left, what)
            sid = len(self._splits)
            col = self._order[f]
            self._splits.append(
                {
                    "id": sid,
                    "feature": self._features[f],
                    "column": col,
                    "bin": b,
                    "threshold": float(self._edges[f][b]),
                }
            )
            self._requested[pos] = left
            out += U32.pack(sid) + bitset(left)
        self._phase = WAIT_LEVEL_END
        return self._send(self._guest, tree_round(t, lv, 4), KIND_PARTITIONS, out)

    def _on_level_end(self) -> list[Message] | None:
        t, lv = self._tree, self._level
        rnd = tree_round(t, lv, 5)
        if not self._has(KIND_LEVEL_END, rnd, [self._guest]):
            return None
        data = self._take(KIND_LEVEL_END, rnd, self._guest)
        what = "level end from the guest"
        splits: dict[int, np.ndarray] = {}
        off = 0
        for pos, node in enumerate(self._nodes):
            if off >= len(data):
                raise ProtocolError(f"{what}: shorter than the level")
            flag = data[off]
            off += 1
            if flag == 0:
                if pos in self._requested:
                    raise ProtocolError(f"{what}: node {pos} this host split is reported unsplit")
                continue
            if flag != 1 or not self._is_open(node):
                raise ProtocolError(f"{what}: bad split flag {flag} for node {pos}")
            size = (len(node.rows) + 7) // 8
            left = read_bitset(data[off : off + size], len(node.rows), what)
            off += size
            self._check_split(node, left, what)
            if pos in self._requested and not np.array_equal(left, self._requested[pos]):
                raise ProtocolError(f"{what}: node {pos} is not split the way this host split it")
            splits[pos] = left
        if off != len(data):
            raise ProtocolError(f"{what}: {len(data) - off} bytes beyond the level")
        self._requested = {}
        if self._children(splits):
            return self._send_histograms()
        self._phase = WAIT_TREE_END
        self._cts = []
        return []

    def _on_tree_end(self) -> list[Message] | None:
        t = self._tree
        rnd = tree_round(t, LEVEL_TREE_END, 6)
        if not self._has(KIND_TREE_END, rnd, [self._guest]):
            return None
        flag = self._take(KIND_TREE_END, rnd, self._guest)
        if flag not in (b"\x00", b"\x01"):
            raise ProtocolError(f"tree-end message from the guest is {flag!r}, expected one byte 0 or 1")
        if flag == b"\x00":
            if self._p["trees"] <= t + 1:
                raise ProtocolError("the guest asked for another tree beyond params trees")
            self._begin_unit(t + 1)
            self._snapshot(resend=[])
            return []
        model = {
            **self._model_header(),
            "features": self._features,
            "splits": self._splits,
            "salt": self._key("model-salt").hex(),
        }
        return self._commit_to_model(
            model, WAIT_FINAL, f"training stopped after {t + 1} trees; committing to the model"
        )

    def _what_host_keeps(self) -> str:
        return "its split table"

    def _role_state(self) -> dict[str, Any]:
        return {"splits": self._splits}

    def _restore_role(self, state: dict[str, Any]) -> None:
        self._splits = [dict(s) for s in state["splits"]]
