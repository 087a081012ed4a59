"""Vertical (hetero) logistic regression, arbiter-free, in the style of FATE's HeteroLR.

Parties. The guest G = the task's recipient holds the 0/1 labels y and features X_G; one
or more hosts H_1..H_k (the other participants, in on-chain order) hold features X_j for
the same IDs. Every party sorts its rows by ID; in the setup round each broadcasts a hash
of its sorted ID list (bound to the task id), and a mismatch is "datasets are not aligned, run PSI first".
Each party standardises its own columns with its own mean/std (kept in its model).

Model and loss. z = X_G·w_G + b + Σ_j X_j·w_j; the guest holds w_G and the intercept b,
host j holds w_j, and nobody ever holds another's weights. Training minimises FATE's
second-order Taylor approximation of the (class-weighted) logistic loss,
    L = (1/n) Σ_i s_i·(log 2 - ½·ŷ_i·z_i + ⅛·z_i²) + (l2/2)·‖w‖²      (ŷ = 2y - 1, b not penalised)
whose per-row gradient factor is the residual d_i = s_i·(¼·z_i + ½ - y_i). With
l2 = 1/(C·n) this is scikit-learn's LogisticRegression(C) objective with the logistic loss
replaced by its Taylor expansion at z = 0 (the optimum is that of a ridge regression of 2ŷ
on the features, so the weights differ from the exact logistic ones; the ranking, hence
AUC, is close). Mini-batch gradient descent, constant learning rate, weights start at 0.

Keys. Two Paillier key pairs, each derived deterministically from its owner's secret task
seed: the guest's (G) and the first host's, the "lead" L. Ciphertexts under G are only
ever seen by hosts, ciphertexts under L only by the guest, except the masked gradients a
key owner decrypts for someone else: their value is masked with a uniform R ∈ Z_n and the
ciphertext is multiplied by a full r^n mod n², r uniform in Z_n* and fresh for every
ciphertext (`_mask_for_key_holder`), so what the key owner receives is a uniformly random
encryption of a uniform residue (perfectly hiding, given r uniform: the ChaCha20 stream
keyed by the sender's seed as a PRF). Without the r^n factor the randomness would be
h_own^a·h_other^b from the two parties' fixed DJN bases, and a key owner, who knows p and
q, reads a — a linear function of the other party's features or labels — modulo small
primes dividing p - 1 or q - 1 (issue #13 item 2). Every other encryption or
re-randomisation (of ciphertexts that only reach parties without the key) uses DJN
fixed-base obfuscators whose exponents come from a ChaCha20 stream keyed per (purpose,
epoch, step) (`common.SeededObfuscator`). Keys are 2048 or 3072 bits (params refuse less).

One step on batch B (m rows; every batch has at least batch_size rows and more rows than
any party has features + 1, else the setup fails). [[·]]_K = encrypted under K.
  1. G -> every H (kind "residual"): [[s⊙d_G]]_G with d_G = ¼·(X_G w_G + b) + ½ - y on B,
     plus [[¼·s]]_G when class weights are not all 1.
     H_j -> G ("score-share"): [[u_j]]_L, u_j = X_j[B]·w_j.
     H_j -> every other host ("contrib"): c_j = [[¼·s⊙u_j]]_G (a fresh encryption of ¼u_j, or
     [[¼s]]^u_j re-randomised), so [[d]] = [[s⊙d_G]]·Π_j c_j = [[s⊙d]]_G at every host.
  2. H_j -> G ("grad-masked"): [[X_j[B]^T (s⊙d) + R_j]]_G (multi-exponentiation, then
     ·Enc(R_j; r_j) with a full uniform r_j^n, the n-th powers in the node's process pool).
     G -> L ("guest-grad-masked"): [[X'^T (Σ_j u_j) + R_G]]_L with X' = ¼s⊙[X_G[B], 1], masked alike.
  3. G -> H_j ("grad-unmasked"): the decrypted residues; H_j subtracts R_j, divides by m,
     adds l2·w_j and updates w_j. L -> G ("guest-grad-unmasked") likewise for G, which adds
     its plaintext part [X_G, 1]^T (s⊙d_G) and updates w_G, b.
Epoch end. H_j -> G ("eval"): fixed-point X_j·w_j on all rows and (l2/2)·‖w_j‖², plus
pairwise masks agreed between hosts (X25519 in the setup round, ChaCha20-expanded) that
cancel in the sum, so G learns only Σ_j over hosts. G computes z on all rows, the Taylor
loss above, AUC, KS, accuracy and log-loss, stops if |Δloss| < tol or at the last epoch,
and tells the hosts ("epoch-end"). Then every host sends a salted hash of its model state
("model-commit"), G builds the result and broadcasts its salted hash ("result-hash").

Rounds: setup 1; step s of epoch e: (e+1)·2^40 + 8·s + phase (phase 1..3); eval and
epoch-end: (e+2)·2^40 - 8 + 1 / + 2; model-commit 2^62, result-hash 2^62 + 1. Payloads
over 8 MiB are split into parts, each prefixed by (part index, part count) (u32, u32).

What each party learns (semi-honest parties, no collusion):
  - guest: its own gradient at every step, i.e. X'^T(Σ_j u_j) on the batch — d_G + 1
    linear combinations of the hosts' joint batch scores (inherent to the guest learning
    its gradient); at every epoch end the joint host score Σ_j X_j·w_j of every row and the
    sum of the hosts' penalty terms (needed for loss and metrics; with one host this IS
    that host's per-row score contribution, as in FATE); row count and each host's number
    of features. Never a host's per-batch scores u_j, features, weights or gradients.
  - host j: its own gradient X_j^T(s⊙d)/m at every step (the standard HeteroLR leakage: it
    depends on the labels through d; batches larger than the feature count keep d from
    being solved for in one step, but many steps leak statistics of d), the number of
    epochs and when training stopped. Nothing about labels beyond that, no score of
    another party (it only holds ciphertexts under G), no other party's gradient.
  - lead host: in addition, decrypts the guest's gradient plus a uniform mask (nothing).
  Neither key owner learns anything from the randomness of what it decrypts (uniform r^n).
  Collusion breaks this: G with L decrypts every host's batch scores; G with host j learns
  what j's gradients say about the other hosts; a host colluding with G learns the labels.
  Malicious behaviour (wrong ciphertexts, wrong decryptions) is not detected: Paillier is
  malleable; the transport's signatures make every message attributable.
Security assumptions: DCR with the small-exponent variant for DJN obfuscation (paillier.py
(b)) of ciphertexts that only parties without the key see, X25519 (CDH), ChaCha20 as a PRG
(and PRF for the masks' r), SHA-256.

Result (canonical JSON, guest only): {"algorithm", "params", "guest", "hosts", "rows",
"features": {"guest": [...], "hosts": {address: count}}, "epochs_run", "stopped":
"converged" | "max_epochs", "metrics": [{"epoch", "loss", "log_loss", "auc", "ks",
"accuracy"}, ...], "model": {"guest": {"features", "weights", "intercept", "mean", "std"},
"host_commitments": {address: hex}}}. `model_state()` at every party is its half of the
model (JSON) to be stored locally; the host commitment is sha256("pcn/hetero-lr/model/v1" |
canonical JSON of the host's state, which holds a secret salt). Commitment: sha256(
"pcn/hetero-lr/commit/v1" | host commitments in order | h_r), h_r = sha256(
"pcn/hetero-lr/result/v1" | salt | result).

Classes. `HeteroLrProtocol`, the class registered for the kind, holds what both roles share
(parameters, local data, keys, setup, message bookkeeping, rounds, checkpoints, commitment);
`HeteroLrGuest` and `HeteroLrHost` hold each role's steps. `HeteroLrProtocol.create(ctx, data)`
and `HeteroLrProtocol.resume(ctx, data, blob)` build the class of the party's role.

Checkpoints. At every epoch boundary (guest: after sending "epoch-end"; host: after
receiving it) the party snapshots its state (`checkpoint()`, also handed to the task's
`ctx.services.save_checkpoint`). `HeteroLrProtocol.resume(ctx, data, blob)` rebuilds the
party at that boundary; its `start()` emits the first messages of the next epoch with the
same sequence numbers (after re-emitting the guest's "epoch-end" messages of the boundary,
in case they were never delivered: peers drop duplicates by sequence number), and
`resume_from[sender]` is the first incoming sequence number the runtime must deliver again.
"""

from __future__ import annotations

import math
import os
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from gmpy2 import mpz

from pcn.algorithms.base import CommitmentScheme, Message, PartyContext, ProtocolError
from pcn.algorithms.hetero_lr.common import (
    DOMAIN,
    SeededObfuscator,
    batch_count,
    ciphertexts,
    classification_metrics,
    derive_keypair,
    dot_job,
    epoch_batches,
    load_local,
    mask_ciphertexts,
    masked_vector,
    min_batch,
    nth_powers_job,
    pack_residues,
    public_key_from_hex,
    residue_width,
    split_key,
    standardisation,
    uniform_units,
    unpack_residues,
)
from pcn.algorithms.hetero_lr.params import validate_params as _validate_params
from pcn.algorithms.vertical import (
    KIND_MODEL,
    KIND_RESULT,
    KIND_SETUP,
    ROUND_FINAL,
    ROUND_SETUP,
    SETUP,
    Drbg,
    VerticalTraining,
    from_fixed,
    ids_hash,
    matvec,
    numeric,
    pair_seed,
    rmatvec,
    sq_norm,
    x25519_public,
)
from pcn.crypto.paillier import EncryptedVector, PaillierError, PaillierPrivateKey, PaillierPublicKey, decode_int

RESULT_DOMAIN = b"pcn/hetero-lr/result/v1"
COMMIT_DOMAIN = b"pcn/hetero-lr/commit/v1"

# The guest's opening is the hosts' model commitments (host order) | salt.
COMMITMENT = CommitmentScheme(
    RESULT_DOMAIN,
    COMMIT_DOMAIN,
    head_unit=32,
    min_head=32,
    error="a hetero-lr opening is the host model commitments followed by the salt, 32 bytes each",
)


P_U = 32  # fractional bits of encrypted scores u and of ¼s
P_D = 64  # of the encrypted residual s⊙d (a product of two P_U quantities)
P_X = 24  # of the plaintext features in X^T·[[·]]

ROUND_EPOCH = 1 << 40
ROUND_STEP = 8

KIND_RESIDUAL = "residual"
KIND_SHARE = "score-share"
KIND_CONTRIB = "contrib"
KIND_GRAD = "grad-masked"
KIND_GUEST_GRAD = "guest-grad-masked"
KIND_GRAD_PLAIN = "grad-unmasked"
KIND_GUEST_GRAD_PLAIN = "guest-grad-unmasked"
KIND_EVAL = "eval"
KIND_EPOCH_END = "epoch-end"

STEP_KINDS = {
    KIND_RESIDUAL: 1,
    KIND_SHARE: 1,
    KIND_CONTRIB: 1,
    KIND_GRAD: 2,
    KIND_GUEST_GRAD: 2,
    KIND_GRAD_PLAIN: 3,
    KIND_GUEST_GRAD_PLAIN: 3,
}
EPOCH_KINDS = {KIND_EVAL: 1, KIND_EPOCH_END: 2}
FINAL_KINDS = {KIND_MODEL: ROUND_FINAL, KIND_RESULT: ROUND_FINAL + 1}
FROM_GUEST = {KIND_SETUP, KIND_RESIDUAL, KIND_GRAD_PLAIN, KIND_GUEST_GRAD, KIND_EPOCH_END, KIND_RESULT}
FROM_HOST_TO_GUEST = {KIND_SETUP, KIND_SHARE, KIND_GRAD, KIND_GUEST_GRAD_PLAIN, KIND_EVAL, KIND_MODEL}
FROM_HOST_TO_HOST = {KIND_SETUP, KIND_CONTRIB, KIND_MODEL}

LOG2 = math.log(2.0)

# phases
STEP, WAIT_SHARES, WAIT_GRADS, WAIT_OWN, WAIT_EVAL, WAIT_COMMITS = range(1, 7)
WAIT_RESIDUAL, WAIT_CONTRIBS, WAIT_GUEST_GRAD, WAIT_GRAD, WAIT_EPOCH_END, WAIT_FINAL = range(7, 13)


def step_round(epoch: int, step: int, phase: int) -> int:
    return (epoch + 1) * ROUND_EPOCH + step * ROUND_STEP + phase


def epoch_round(epoch: int, phase: int) -> int:
    return (epoch + 2) * ROUND_EPOCH - ROUND_STEP + phase


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).tolist()]


@dataclass(eq=False)
class HeteroLrProtocol(VerticalTraining):
    name: ClassVar[str] = "hetero-lr"
    commitment: ClassVar[CommitmentScheme] = COMMITMENT
    unit: ClassVar[str] = "epoch"
    units_param: ClassVar[str] = "epochs"

    _X: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), init=False, repr=False)
    _mean: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _std: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _weighted: bool = field(default=False, init=False, repr=False)
    _w: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    # setup
    _host_features: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _guest_features: int = field(default=0, init=False, repr=False)
    _pk_g: PaillierPublicKey | None = field(default=None, init=False, repr=False)
    _pk_l: PaillierPublicKey | None = field(default=None, init=False, repr=False)
    _obf_g: SeededObfuscator | None = field(default=None, init=False, repr=False)
    _obf_l: SeededObfuscator | None = field(default=None, init=False, repr=False)
    _shuffle_key: bytes = field(default=b"", init=False, repr=False)
    # progress through the rounds
    _epoch: int = field(default=0, init=False, repr=False)
    _step: int = field(default=0, init=False, repr=False)
    _batches: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    # per-step scratch
    _scratch: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    # outcome
    _metrics: list[dict[str, float]] = field(default_factory=list, init=False, repr=False)

    @classmethod
    def role_class(cls, ctx: PartyContext) -> type[HeteroLrProtocol]:
        """The guest's class for the recipient, the hosts' for every other party."""
        return HeteroLrGuest if ctx.is_recipient else HeteroLrHost

    # -- static parts of the interface ------------------------------------------------------

    @staticmethod
    def validate_params(params: dict[str, Any]) -> dict[str, Any]:
        return _validate_params(params)

    # -- local data ---------------------------------------------------------------------------

    def _load(self) -> None:
        p, ctx = self._p, self.ctx
        label = p["label_column"]
        wanted = p["features"].get(ctx.me.lower())
        local = load_local(self.data, ctx.id_column, wanted, {label})
        self._check_columns(local.features)
        self._features = local.features
        self._n = len(local.ids)
        if self._n < 2:
            raise ProtocolError(f"hetero-lr needs at least 2 rows, this party has {self._n}")
        self._ids_hash = ids_hash(DOMAIN, ctx.binding, local.ids)
        self._mean, self._std = standardisation(local.raw, p["standardize"])
        X = self._design_matrix((local.raw - self._mean) / self._std, local.order)
        self._weighted = p["class_weight"] is not None
        self._X = np.ascontiguousarray(X)
        self._w = np.zeros(self._X.shape[1])

    def _check_columns(self, features: list[str]) -> None:
        """Refuses local feature columns this role cannot train with (ProtocolError)."""

    def _design_matrix(self, X: np.ndarray, order: np.ndarray) -> np.ndarray:
        """The matrix this party trains on, from its standardised columns (rows in ID order
        `order`): the columns themselves, unless the role adds to them."""
        return X

    # -- keys and randomness ------------------------------------------------------------------

    def _setup_extra(self) -> dict[str, Any]:
        self._own_keys()
        return self._setup_keys()

    @abstractmethod
    def _own_keys(self) -> None:
        """The Paillier key pair this party owns (guest and lead host), derived from its seed."""

    @abstractmethod
    def _setup_keys(self) -> dict[str, str]:
        """The public keys (and the guest's shuffle key) this party's setup message carries."""

    def _shuffle_seed(self) -> bytes:
        split = self._p["seed_split"]
        if split is not None:
            return split_key(split)
        return self._key("shuffle")

    def _process_setups(self) -> None:
        """Check every peer's setup message and derive keys, obfuscators and pair seeds."""
        p = self._p
        self._own_keys()
        d_guest = self._adopt_setups(self._checked_setups())
        widest = max([d_guest + 1, *self._host_features.values()])
        smallest = min_batch(self._n, p["batch_size"])
        if smallest <= widest:
            raise ProtocolError(
                f"batches of {smallest} rows are not larger than the {widest} features (+ intercept) of a party: a "
                "gradient would reveal the residuals; use a larger batch_size or more rows"
            )
        self._make_obfuscators()

    @abstractmethod
    def _adopt_setups(self, infos: dict[str, dict[str, Any]]) -> int:
        """Takes the peers' checked setup messages (keys, feature counts, pair seeds) in; the
        number of the guest's features."""

    def _make_obfuscators(self) -> None:
        p, n = self._p, self._n
        epochs = p["epochs"]
        assert self._pk_g is not None and self._pk_l is not None
        # The masks sent to a key holder use full r^n (`_mask_for_key_holder`), not these.
        uses_g, uses_l = self._obfuscator_uses(epochs * n)
        self._obf_g = SeededObfuscator.derive(self._pk_g, self._key("obfuscator/guest-key"), uses_g)
        self._obf_l = SeededObfuscator.derive(self._pk_l, self._key("obfuscator/lead-key"), uses_l)

    @abstractmethod
    def _obfuscator_uses(self, rows_trained: int) -> tuple[int, int]:
        """How many encryptions under the guest's and the lead's key this party obfuscates
        with fixed bases, given the rows of all epochs together."""

    def _obf(self, which: str, label: str) -> SeededObfuscator:
        obf = self._obf_g if which == "g" else self._obf_l
        assert obf is not None
        return obf.reseed(self._key(f"obf/{label}/{self._epoch}/{self._step}"))

    def _masks(self, label: str, n: mpz, count: int) -> list[int]:
        drbg = Drbg(self._key(f"mask/{label}/{self._epoch}/{self._step}"))
        return [drbg.below(int(n)) for _ in range(count)]

    def _mask_for_key_holder(self, ev: EncryptedVector, masks: list[int], label: str) -> EncryptedVector:
        """ev · Enc(R_i; r_i) with r_i uniform in Z_n*, fresh for every ciphertext (ChaCha20 keyed
        by this party's seed, the purpose, epoch and step: deterministic for a resume, never
        reused). ev's randomness is a product of fixed-base powers h_G^a·h_H^b; a key holder who
        knows p, q could read a (a function of the other party's data) modulo a small prime
        dividing p - 1 or q - 1 wherever the bases' projections differ. The uniform factor r^n
        makes the randomness of what it receives uniform among n-th residues, independent of ev,
        so the ciphertext shows the key holder its plaintext (itself masked by R) and nothing
        else. The n-th powers (full-length exponents: DJN's short ones do not give uniformity)
        are computed in the node's process pool."""
        pk = ev.public_key
        n = int(pk.n)
        rs = uniform_units(Drbg(self._key(f"rerandomise/{label}/{self._epoch}/{self._step}")), n, len(ev))
        size = -(-len(rs) // max(1, min(os.cpu_count() or 1, len(rs))))
        chunks = [rs[i : i + size] for i in range(0, len(rs), size)]
        powers = [rn for part in self.pmap(nth_powers_job, [(n, c) for c in chunks]) for rn in part]
        nsq = pk.nsquare
        return EncryptedVector(
            pk, [c * r % nsq for c, r in zip(ev.ciphertexts, mask_ciphertexts(pk, masks, powers), strict=True)]
        )

    # -- messages -----------------------------------------------------------------------------

    def _check_round(self, msg: Message) -> None:
        kind, rnd = msg.kind, msg.round
        ok = False
        if kind == KIND_SETUP:
            ok = rnd == ROUND_SETUP
        elif kind in STEP_KINDS:
            epoch, rest = divmod(rnd, ROUND_EPOCH)
            step, phase = divmod(rest, ROUND_STEP)
            steps = batch_count(self._n, self._p["batch_size"])
            ok = phase == STEP_KINDS[kind] and 1 <= epoch <= self._p["epochs"] and step < steps
            ok = ok and epoch - 1 <= self._epoch + 1
        elif kind in EPOCH_KINDS:
            epoch = (rnd + ROUND_STEP - EPOCH_KINDS[kind]) // ROUND_EPOCH - 2
            ok = 0 <= epoch < self._p["epochs"] and epoch_round(epoch, EPOCH_KINDS[kind]) == rnd
            ok = ok and epoch <= self._epoch + 1
        elif kind in FINAL_KINDS:
            ok = rnd == FINAL_KINDS[kind]
        if not ok:
            raise ProtocolError(f"{kind!r} message from {msg.sender!r} with an impossible round {rnd}")

    def _units_done(self) -> int:
        return self._epoch

    def _begin_unit(self, epoch: int) -> None:
        self._epoch, self._step = epoch, 0
        self._batches = epoch_batches(self._shuffle_key, epoch, self._n, self._p["batch_size"])
        self._phase = STEP
        self._set_floor(step_round(epoch, 0, 0))

    def _progress(self, what: str) -> None:
        total = self._p["epochs"] * len(self._batches)
        done = self._epoch * len(self._batches) + self._step
        self.report(0.02 + 0.96 * done / total, what)

    def _dot(self, ev: EncryptedVector, matrix: np.ndarray) -> EncryptedVector:
        """Enc(row vector · matrix) with multi-exponentiation, split by ROWS over the node's
        worker processes when the runtime offers them: each process multi-exponentiates its
        rows for every column and the partial products are multiplied together (homomorphic
        addition), which gives exactly the ciphertexts of the single-process dot. (Splitting by
        columns made every process re-read and re-invert all the ciphertexts.)"""
        m, k = matrix.shape
        pieces = min(max(2, os.cpu_count() or 1), m // 32)
        if self.ctx.parallel_map is None or pieces < 2:
            out: EncryptedVector = ev.dot(matrix, P_X)
            return out
        pk = ev.public_key
        rows = [c for c in np.array_split(np.arange(m), pieces) if len(c)]
        jobs = [
            (int(pk.n), P_X, ev[int(c[0]) : int(c[-1]) + 1].to_bytes(), np.ascontiguousarray(matrix[c[0] : c[-1] + 1]))
            for c in rows
        ]
        parts = [ciphertexts(pk, part, k, ev.precision_bits + P_X, "parallel dot") for part in self.pmap(dot_job, jobs)]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    # -- steps ----------------------------------------------------------------------------------

    @staticmethod
    def _unmask(residues: list[int], masks: list[int], n: mpz, precision: int, what: str) -> np.ndarray:
        scale = 1 << precision
        try:
            vals = [decode_int((r - m) % int(n), n) / scale for r, m in zip(residues, masks, strict=True)]
        except (PaillierError, OverflowError):
            raise ProtocolError(f"{what} overflowed the plaintext space (diverged or tampered)") from None
        return np.array(vals, dtype=np.float64)

    def _next_step(self) -> list[Message]:
        self._step += 1
        if self._step < len(self._batches):
            self._phase = STEP
            self._set_floor(step_round(self._epoch, self._step, 0))
            return []
        self._set_floor(epoch_round(self._epoch, 0))
        return self._end_of_epoch()

    @abstractmethod
    def _end_of_epoch(self) -> list[Message]:
        """After the epoch's last step: what this party sends and waits for next."""

    # -- checkpoints ----------------------------------------------------------------------------

    def _unit_state(self) -> dict[str, Any]:
        return {"weights": _floats(self._w), "metrics": self._metrics}

    def _restore_unit_state(self, state: dict[str, Any]) -> None:
        w = np.array(state["weights"], dtype=np.float64)
        if w.shape != self._w.shape:
            raise ProtocolError("checkpoint weights have the wrong shape")
        self._w = w
        self._metrics = list(state["metrics"])


@dataclass(eq=False)
class HeteroLrGuest(HeteroLrProtocol):
    """The guest: the recipient, which holds the labels, its own features and the intercept."""

    role: ClassVar[str] = "guest"

    _y: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _sw: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    _sk_g: PaillierPrivateKey | None = field(default=None, init=False, repr=False)
    _stopped: str = field(default="", init=False, repr=False)

    def _design_matrix(self, X: np.ndarray, order: np.ndarray) -> np.ndarray:
        """The columns and the intercept's column of ones; reads the labels and the rows'
        class weights on the way."""
        p, label = self._p, self._p["label_column"]
        if label not in self.data:
            raise ProtocolError(f"the guest's dataset has no label column {label!r}")
        y = numeric(self.data, label, order)
        if not np.all((y == 0) | (y == 1)):
            raise ProtocolError(f"label column {label!r} must hold only 0 and 1")
        pos = int(y.sum())
        if pos == 0 or pos == len(y):
            raise ProtocolError(f"label column {label!r} has only one class")
        self._y = y
        cw = p["class_weight"]
        if cw is None:
            self._sw = np.ones(self._n)
        elif cw == "balanced":
            self._sw = np.where(y == 1, self._n / (2.0 * pos), self._n / (2.0 * (self._n - pos)))
        else:
            self._sw = np.where(y == 1, cw["1"], cw["0"])
        return np.hstack([X, np.ones((self._n, 1))])  # intercept column last

    # -- keys and setup -------------------------------------------------------------------------

    def _own_keys(self) -> None:
        if self._sk_g is None:
            self._pk_g, self._sk_g = derive_keypair(self._p["key_bits"], self._key("paillier/guest"))

    def _setup_keys(self) -> dict[str, str]:
        assert self._pk_g is not None
        return {"paillier": format(int(self._pk_g.n), "x"), "shuffle": self._shuffle_seed().hex()}

    def _adopt_setups(self, infos: dict[str, dict[str, Any]]) -> int:
        p = self._p
        self._host_features = {h: int(infos[h]["features"]) for h in self._hosts}
        self._pk_l = public_key_from_hex(infos[self._hosts[0]].get("paillier"), p["key_bits"], "lead host setup")
        self._shuffle_key = self._shuffle_seed()
        self._guest_features = len(self._features)
        return self._guest_features

    def _obfuscator_uses(self, rows_trained: int) -> tuple[int, int]:
        return rows_trained * (2 if self._weighted else 1), 0

    def _allowed(self, sender: str) -> set[str]:
        kinds = set(FROM_HOST_TO_GUEST)
        if sender != self._hosts[0]:
            kinds.discard(KIND_GUEST_GRAD_PLAIN)
        return kinds

    def _handlers(self) -> dict[int, Callable[[], list[Message] | None]]:
        return {
            SETUP: self._on_setup,
            STEP: self._on_step,
            WAIT_SHARES: self._on_shares,
            WAIT_GRADS: self._on_grads,
            WAIT_OWN: self._on_own,
            WAIT_EVAL: self._on_eval,
            WAIT_COMMITS: self._on_commits,
        }

    # -- steps ----------------------------------------------------------------------------------

    def _on_step(self) -> list[Message]:
        E, S = self._epoch, self._step
        assert self._pk_g is not None
        B = self._batches[S]
        u = matvec(self._X[B], self._w)
        s = self._sw[B]
        d_g = s * (0.25 * u + 0.5 - self._y[B])
        obf = self._obf("g", "residual")
        payload = self._pk_g.encrypt_vector(d_g, P_D, obf).to_bytes()
        if self._weighted:
            payload += self._pk_g.encrypt_vector(0.25 * s, P_U, obf).to_bytes()
        self._scratch = {"d_g": d_g}
        self._progress(f"epoch {E + 1}/{self._p['epochs']}, step {S + 1}/{len(self._batches)}")
        out: list[Message] = []
        for h in self._hosts:
            out += self._send(h, step_round(E, S, 1), KIND_RESIDUAL, payload)
        self._phase = WAIT_SHARES
        return out

    def _on_shares(self) -> list[Message] | None:
        E, S = self._epoch, self._step
        rnd = step_round(E, S, 1)
        if not self._has(KIND_SHARE, rnd, self._hosts):
            return None
        pk = self._pk_l
        assert pk is not None
        B = self._batches[S]
        total: EncryptedVector | None = None
        for h in self._hosts:
            ev = ciphertexts(pk, self._take(KIND_SHARE, rnd, h), len(B), P_U, f"score share from {h!r}")
            total = ev if total is None else total + ev
        assert total is not None
        scaled = self._X[B] * (0.25 * self._sw[B])[:, None]
        enc = self._dot(total, scaled)
        masks = self._masks("guest-grad", pk.n, len(enc))
        masked = self._mask_for_key_holder(enc, masks, "guest-grad")
        self._scratch["masks"] = masks
        self._phase = WAIT_GRADS
        return self._send(self._hosts[0], step_round(E, S, 2), KIND_GUEST_GRAD, masked.to_bytes())

    def _on_grads(self) -> list[Message] | None:
        E, S = self._epoch, self._step
        rnd = step_round(E, S, 2)
        if not self._has(KIND_GRAD, rnd, self._hosts):
            return None
        sk, pk = self._sk_g, self._pk_g
        assert sk is not None and pk is not None
        out: list[Message] = []
        width = residue_width(pk)
        for h in self._hosts:
            ev = ciphertexts(pk, self._take(KIND_GRAD, rnd, h), self._host_features[h], 0, f"gradient from {h!r}")
            out += self._send(
                h, step_round(E, S, 3), KIND_GRAD_PLAIN, pack_residues(sk.raw_decrypt_many(ev.ciphertexts), width)
            )
        self._phase = WAIT_OWN
        return out

    def _on_own(self) -> list[Message] | None:
        E, S = self._epoch, self._step
        rnd = step_round(E, S, 3)
        lead = self._hosts[0]
        if not self._has(KIND_GUEST_GRAD_PLAIN, rnd, [lead]):
            return None
        pk = self._pk_l
        assert pk is not None
        d = self._X.shape[1]
        residues = unpack_residues(self._take(KIND_GUEST_GRAD_PLAIN, rnd, lead), d, pk, "guest gradient from the lead")
        host_part = self._unmask(residues, self._scratch["masks"], pk.n, P_U + P_X, "guest gradient")
        B = self._batches[S]
        grad = (rmatvec(self._X[B], self._scratch["d_g"]) + host_part) / len(B)
        grad[:-1] += self._p["l2"] * self._w[:-1]
        self._w = self._w - self._p["learning_rate"] * grad
        self._scratch = {}
        return self._next_step()

    def _end_of_epoch(self) -> list[Message]:
        self._phase = WAIT_EVAL
        return []

    def _on_eval(self) -> list[Message] | None:
        E = self._epoch
        rnd = epoch_round(E, 1)
        if not self._has(KIND_EVAL, rnd, self._hosts):
            return None
        total = np.zeros(self._n + 1, dtype=np.uint64)
        for h in self._hosts:
            data = self._take(KIND_EVAL, rnd, h)
            if len(data) != 8 * (self._n + 1):
                raise ProtocolError(f"evaluation vector from {h!r} has {len(data)} bytes, expected {8 * (self._n + 1)}")
            total = total + np.frombuffer(data, dtype="<u8").astype(np.uint64)
        joint = from_fixed(total)
        hosts_u, hosts_penalty = joint[:-1], float(joint[-1])
        z = matvec(self._X, self._w) + hosts_u
        y, s, l2 = self._y, self._sw, self._p["l2"]
        yhat = 2.0 * y - 1.0
        loss = float(np.mean(s * (LOG2 - 0.5 * yhat * z + 0.125 * z * z)))
        loss += 0.5 * l2 * sq_norm(self._w[:-1]) + hosts_penalty
        if not math.isfinite(loss):
            raise ProtocolError(f"training diverged at epoch {E + 1} (loss {loss}); lower the learning rate")
        metrics: dict[str, float] = {"epoch": E + 1, "loss": loss, **classification_metrics(y, z)}
        self._metrics.append(metrics)
        converged = E >= 1 and abs(self._metrics[-2]["loss"] - loss) < self._p["tol"]
        last = self._p["epochs"] == E + 1
        self.report(
            0.02 + 0.96 * (E + 1) / self._p["epochs"],
            f"epoch {E + 1}/{self._p['epochs']} evaluated",  # metrics are result-derived: never in progress
        )
        self._show_operator(metrics)
        stop = converged or last
        out: list[Message] = []
        for h in self._hosts:
            out += self._send(h, epoch_round(E, 2), KIND_EPOCH_END, b"\x01" if stop else b"\x00")
        if stop:
            self._stopped = "converged" if converged else "max_epochs"
            self._phase = WAIT_COMMITS
            self._set_floor(ROUND_FINAL)
            return out
        self._begin_unit(E + 1)
        self._snapshot(resend=out)
        return out

    def _on_commits(self) -> list[Message] | None:
        if not self._has(KIND_MODEL, ROUND_FINAL, self._hosts):
            return None
        for h in self._hosts:
            self._read_commit(h)
        self._model = self._guest_state()
        result = {
            "algorithm": self.name,
            "params": self._p,
            "guest": self._guest,
            "hosts": self._hosts,
            "rows": self._n,
            "features": {"guest": self._features, "hosts": {h: self._host_features[h] for h in self._hosts}},
            "epochs_run": len(self._metrics),
            "stopped": self._stopped,
            "metrics": self._metrics,
            "model": {
                "guest": {k: self._model[k] for k in ("features", "weights", "intercept", "mean", "std")},
                "host_commitments": self._model["host_commitments"],
            },
        }
        return self._publish_result(result, f"done after {len(self._metrics)} epochs ({self._stopped})")

    def _guest_state(self) -> dict[str, Any]:
        return {
            **self._model_header(),
            "label_column": self._p["label_column"],
            "standardize": self._p["standardize"],
            "features": self._features,
            "weights": _floats(self._w[:-1]),
            "intercept": float(self._w[-1]),
            "mean": _floats(self._mean),
            "std": _floats(self._std),
            "host_commitments": {h: self._model_commits[h].hex() for h in self._hosts},
        }


@dataclass(eq=False)
class HeteroLrHost(HeteroLrProtocol):
    """A host: a party with features only; the first host (the lead) owns the second key pair."""

    role: ClassVar[str] = "host"

    _sk_l: PaillierPrivateKey | None = field(default=None, init=False, repr=False)
    _pair_seeds: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)

    def _check_columns(self, features: list[str]) -> None:
        if not features:
            raise ProtocolError("this host has no numeric feature column to contribute")

    # -- keys and setup -------------------------------------------------------------------------

    @property
    def _is_lead(self) -> bool:
        return self.ctx.me == self._hosts[0]

    def _own_keys(self) -> None:
        if self._is_lead and self._sk_l is None:
            self._pk_l, self._sk_l = derive_keypair(self._p["key_bits"], self._key("paillier/lead"))

    def _setup_keys(self) -> dict[str, str]:
        keys = {"x25519": x25519_public(self._key("x25519")).hex()}
        if self._is_lead:
            assert self._pk_l is not None
            keys["paillier"] = format(int(self._pk_l.n), "x")
        return keys

    def _adopt_setups(self, infos: dict[str, dict[str, Any]]) -> int:
        p, ctx = self._p, self.ctx
        g = infos[self._guest]
        self._pk_g = public_key_from_hex(g.get("paillier"), p["key_bits"], "guest setup")
        shuffle = g.get("shuffle")
        if not isinstance(shuffle, str) or len(shuffle) != 64:
            raise ProtocolError("guest setup: bad shuffle key")
        self._shuffle_key = bytes.fromhex(shuffle)
        if p["seed_split"] is not None and self._shuffle_key != self._shuffle_seed():
            raise ProtocolError("guest setup: shuffle key does not follow params seed_split")
        if not self._is_lead:
            lead = infos[self._hosts[0]]
            self._pk_l = public_key_from_hex(lead.get("paillier"), p["key_bits"], "lead host setup")
        self._host_features = {h: int(infos[h]["features"]) for h in self._hosts if h != self.ctx.me}
        self._host_features[self.ctx.me] = len(self._features)
        d_guest = int(g["features"])
        self._guest_features = d_guest
        secret = self._key("x25519")
        for h in self._hosts:
            if h == ctx.me:
                continue
            pub = infos[h].get("x25519")
            if not isinstance(pub, str) or len(pub) != 64:
                raise ProtocolError(f"setup from {h!r}: bad X25519 key")
            self._pair_seeds[h] = pair_seed(DOMAIN, secret, bytes.fromhex(pub), ctx.binding, ctx.me, h)
        return d_guest

    def _obfuscator_uses(self, rows_trained: int) -> tuple[int, int]:
        return rows_trained * (1 if len(self._hosts) > 1 else 0), rows_trained

    def _allowed(self, sender: str) -> set[str]:
        if sender == self._guest:
            kinds = set(FROM_GUEST)
            if not self._is_lead:
                kinds.discard(KIND_GUEST_GRAD)
            return kinds
        return set(FROM_HOST_TO_HOST)

    def _handlers(self) -> dict[int, Callable[[], list[Message] | None]]:
        return {
            SETUP: self._on_setup,
            STEP: self._on_step,
            WAIT_RESIDUAL: self._on_residual,
            WAIT_CONTRIBS: self._on_contribs,
            WAIT_GUEST_GRAD: self._on_guest_grad,
            WAIT_GRAD: self._on_grad,
            WAIT_EPOCH_END: self._on_epoch_end,
            WAIT_FINAL: self._on_final,
        }

    # -- steps ----------------------------------------------------------------------------------

    def _on_step(self) -> list[Message]:
        E, S = self._epoch, self._step
        assert self._pk_l is not None and self._pk_g is not None
        B = self._batches[S]
        u = matvec(self._X[B], self._w)
        self._scratch = {"u": u}
        self._progress(f"epoch {E + 1}/{self._p['epochs']}, step {S + 1}/{len(self._batches)}")
        share = self._pk_l.encrypt_vector(u, P_U, self._obf("l", "share"))
        out = self._send(self._guest, step_round(E, S, 1), KIND_SHARE, share.to_bytes())
        if not self._weighted and len(self._hosts) > 1:
            contrib = self._pk_g.encrypt_vector(0.25 * u, P_D, self._obf("g", "contrib")).to_bytes()
            for h in self._hosts:
                if h != self.ctx.me:
                    out += self._send(h, step_round(E, S, 1), KIND_CONTRIB, contrib)
        self._phase = WAIT_RESIDUAL
        return out

    def _on_residual(self) -> list[Message] | None:
        E, S = self._epoch, self._step
        rnd = step_round(E, S, 1)
        if not self._has(KIND_RESIDUAL, rnd, [self._guest]):
            return None
        pk = self._pk_g
        assert pk is not None
        m = len(self._batches[S])
        data = self._take(KIND_RESIDUAL, rnd, self._guest)
        u = self._scratch["u"]
        out: list[Message] = []
        if self._weighted:
            half = len(data) // 2
            residual = ciphertexts(pk, data[:half], m, P_D, "residual from the guest")
            quarter_s = ciphertexts(pk, data[half:], m, P_U, "class weights from the guest")
            own = quarter_s.mul(u, P_U)
            if len(self._hosts) > 1:
                contrib = own.obfuscate(self._obf("g", "contrib")).to_bytes()
                for h in self._hosts:
                    if h != self.ctx.me:
                        out += self._send(h, rnd, KIND_CONTRIB, contrib)
            self._scratch["d"] = residual + own
        else:
            residual = ciphertexts(pk, data, m, P_D, "residual from the guest")
            self._scratch["d"] = residual + 0.25 * u
        self._phase = WAIT_CONTRIBS
        return out

    def _on_contribs(self) -> list[Message] | None:
        E, S = self._epoch, self._step
        rnd = step_round(E, S, 1)
        others = [h for h in self._hosts if h != self.ctx.me]
        if not self._has(KIND_CONTRIB, rnd, others):
            return None
        pk = self._pk_g
        assert pk is not None
        B = self._batches[S]
        d: EncryptedVector = self._scratch.pop("d")
        for h in others:
            d = d + ciphertexts(pk, self._take(KIND_CONTRIB, rnd, h), len(B), P_D, f"contribution from {h!r}")
        grad = self._dot(d, self._X[B])
        masks = self._masks("grad", pk.n, len(grad))
        masked = self._mask_for_key_holder(grad, masks, "grad")
        self._scratch["masks"] = masks
        self._phase = WAIT_GUEST_GRAD if self._is_lead else WAIT_GRAD
        return self._send(self._guest, step_round(E, S, 2), KIND_GRAD, masked.to_bytes())

    def _on_guest_grad(self) -> list[Message] | None:
        E, S = self._epoch, self._step
        rnd = step_round(E, S, 2)
        if not self._has(KIND_GUEST_GRAD, rnd, [self._guest]):
            return None
        sk, pk = self._sk_l, self._pk_l
        assert sk is not None and pk is not None
        count = self._guest_features + 1  # its features and the intercept
        ev = ciphertexts(pk, self._take(KIND_GUEST_GRAD, rnd, self._guest), count, 0, "guest's masked gradient")
        self._phase = WAIT_GRAD
        residues = pack_residues(sk.raw_decrypt_many(ev.ciphertexts), residue_width(pk))
        return self._send(self._guest, step_round(E, S, 3), KIND_GUEST_GRAD_PLAIN, residues)

    def _on_grad(self) -> list[Message] | None:
        E, S = self._epoch, self._step
        rnd = step_round(E, S, 3)
        if not self._has(KIND_GRAD_PLAIN, rnd, [self._guest]):
            return None
        pk = self._pk_g
        assert pk is not None
        data = self._take(KIND_GRAD_PLAIN, rnd, self._guest)
        residues = unpack_residues(data, len(self._features), pk, "gradient from the guest")
        B = self._batches[S]
        grad = self._unmask(residues, self._scratch["masks"], pk.n, P_D + P_X, "gradient") / len(B)
        grad += self._p["l2"] * self._w
        self._w = self._w - self._p["learning_rate"] * grad
        self._scratch = {}
        return self._next_step()

    def _end_of_epoch(self) -> list[Message]:
        """The epoch's evaluation vector for the guest: scores and penalty, pair-masked."""
        penalty = 0.5 * self._p["l2"] * sq_norm(self._w)
        values = np.append(matvec(self._X, self._w), penalty)
        vec = masked_vector(
            values, self.ctx.me, self._hosts, self._pair_seeds, f"eval/{self._epoch}", "evaluation scores"
        )
        self._phase = WAIT_EPOCH_END
        return self._send(self._guest, epoch_round(self._epoch, 1), KIND_EVAL, vec.astype("<u8").tobytes())

    def _on_epoch_end(self) -> list[Message] | None:
        E = self._epoch
        rnd = epoch_round(E, 2)
        if not self._has(KIND_EPOCH_END, rnd, [self._guest]):
            return None
        flag = self._take(KIND_EPOCH_END, rnd, self._guest)
        if flag not in (b"\x00", b"\x01"):
            raise ProtocolError(f"epoch-end message from the guest is {flag!r}, expected one byte 0 or 1")
        if flag == b"\x00":
            if self._p["epochs"] <= E + 1:
                raise ProtocolError("the guest asked for another epoch beyond params epochs")
            self._begin_unit(E + 1)
            self._snapshot(resend=[])
            return []
        return self._commit_to_model(
            self._host_state(), WAIT_FINAL, f"training stopped after {E + 1} epochs; committing to the model"
        )

    def _host_state(self) -> dict[str, Any]:
        return {
            **self._model_header(),
            "standardize": self._p["standardize"],
            "features": self._features,
            "weights": _floats(self._w),
            "mean": _floats(self._mean),
            "std": _floats(self._std),
            "salt": self._key("model-salt").hex(),
        }
