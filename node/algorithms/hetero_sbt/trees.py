"""The plaintext building blocks of hetero-sbt, shared by the protocol and by the plaintext
reference (`reference.py`) so that both bin, quantise, sample and score splits alike.

Binning is scikit-learn's HistGradientBoosting binning: per column, the midpoints between
distinct values when there are at most `max_bins` of them, else the percentiles
linspace(0, 100, max_bins + 1)[1:-1] ("averaged_inverted_cdf"), computed on the training
rows; a value x falls in bin i iff t[i-1] < x <= t[i]. A split "after bin b" sends the rows
with x <= t[b] left.

Gradients and hessians are quantised to fixed point with PRECISION fractional bits
(g_q = round(g·2^P), h_q = round(h·2^P)); every histogram sum, at the guest in plaintext and
at a host under encryption, is an exact integer sum of the same integers, so both give the
same gains bit for bit. The gain of a split is XGBoost's / scikit-learn's
    G_L²/(H_L + λ) + G_R²/(H_R + λ) - G²/(H + λ)
(without the ½), valid when both children have at least `min_samples_leaf` rows and a
hessian sum of at least `min_child_weight`, and kept when it is > `min_gain`. Candidates are
scanned in a fixed order (the guest's features, then each host's in host order, features in
the party's order, bins ascending) and a later candidate wins only with a strictly larger
gain: ties go to the first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from pcn.algorithms import vertical
from pcn.algorithms.base import ProtocolError
from pcn.algorithms.vertical import Drbg, auc

PRECISION = 24  # fractional bits of the quantised g and h
DOMAIN = b"pcn/hetero-sbt/"
MODEL_DOMAIN = b"pcn/hetero-sbt/model/v1"  # a host's model commitment, re-checked by hetero-sbt-predict


def model_commitment(state: dict[str, Any]) -> bytes:
    """The commitment to a host's model state (which carries its own secret salt)."""
    return vertical.model_commitment(state, MODEL_DOMAIN)


# -- binning ------------------------------------------------------------------------------------


def bin_edges(column: np.ndarray, max_bins: int) -> np.ndarray:
    """The thresholds of one column (scikit-learn's `_find_binning_thresholds`, no missing values)."""
    col = np.sort(np.asarray(column, dtype=np.float64))
    distinct = np.unique(col)
    if len(distinct) <= 1:
        return np.zeros(0)
    if len(distinct) <= max_bins:
        return (distinct[:-1] + distinct[1:]) * 0.5
    percentiles = np.linspace(0, 100, num=max_bins + 1)[1:-1]
    return np.asarray(np.percentile(col, percentiles, method="averaged_inverted_cdf"), dtype=np.float64)


def bin_matrix(raw: np.ndarray, train: np.ndarray, max_bins: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(bins of every row and column as uint8, the thresholds of each column), edges fitted on
    the rows where `train` holds."""
    edges = [bin_edges(raw[train, j], max_bins) for j in range(raw.shape[1])]
    bins = np.empty(raw.shape, dtype=np.uint8)
    for j, e in enumerate(edges):
        bins[:, j] = np.searchsorted(e, raw[:, j], side="left")
    return bins, edges


# -- rows: the validation split and the per-tree sample (public, from params seed) -------------


def _row_keys(binding: bytes, seed: int, label: str, n: int) -> np.ndarray:
    key = hashlib.sha256(DOMAIN + b"rows/v1" + binding + seed.to_bytes(8, "big") + label.encode()).digest()
    return Drbg(key).uint64(n)


def validation_mask(binding: bytes, seed: int, n: int, fraction: float) -> np.ndarray:
    """True for the rows (in sorted-ID order) held out for validation: the round(fraction·n)
    rows first in an order every party draws alike from the task binding and params seed."""
    mask = np.zeros(n, dtype=bool)
    k = round(fraction * n)
    if k:
        mask[np.argsort(_row_keys(binding, seed, "validation", n), kind="stable")[:k]] = True
    return mask


def tree_sample(binding: bytes, seed: int, tree: int, train_rows: np.ndarray, subsample: float) -> np.ndarray:
    """The training rows (sorted indices) tree `tree` is grown on: all of them, or
    round(subsample·count) drawn alike at every party."""
    if subsample >= 1.0:
        return train_rows
    k = round(subsample * len(train_rows))
    keys = _row_keys(binding, seed, f"tree/{tree}", len(train_rows))
    return np.sort(train_rows[np.argsort(keys, kind="stable")[:k]])


# -- objectives -----------------------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def init_score(objective: str, y: np.ndarray) -> float:
    """The constant first prediction: log-odds of the training positives, or their mean."""
    mean = float(np.mean(y))
    if objective == "regression":
        return mean
    mean = min(max(mean, 1e-12), 1 - 1e-12)
    return float(np.log(mean / (1.0 - mean)))


def grad_hess(objective: str, raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if objective == "regression":
        return raw - y, np.ones_like(raw)
    p = sigmoid(raw)
    return p - y, p * (1.0 - p)


def loss(objective: str, raw: np.ndarray, y: np.ndarray) -> float:
    if objective == "regression":
        return float(np.mean((raw - y) ** 2))
    p = np.clip(sigmoid(raw), 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def metrics(objective: str, raw: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, float]:
    if objective == "regression":
        return {f"{prefix}_mse": loss(objective, raw, y)}
    out = {f"{prefix}_log_loss": loss(objective, raw, y)}
    if 0 < int(y.sum()) < len(y):
        out[f"{prefix}_auc"] = auc(y, raw)
    return out


@dataclass(frozen=True)
class Quantised:
    """One tree's fixed-point gradients: g_q (signed), h_q (>= 0), and the packing of a row
    g_off·2^h_bits + h_q with g_off = g_q + offset in [0, 2^g_bits)."""

    g: np.ndarray  # int64
    h: np.ndarray  # int64
    offset: int
    g_bits: int  # bits of one row's g_off
    h_bits: int  # bits reserved for a sum of h_q over all sampled rows


def quantise(objective: str, g: np.ndarray, h: np.ndarray, rows: int) -> Quantised:
    """Fixed point of g and h over `rows` sampled rows. The offset is a power of two at least
    max|g_q| (for "binary" always 2^PRECISION, |g| <= 1), so the hosts, who learn the bit
    sizes, learn only the order of magnitude of the largest gradient."""
    scale = float(1 << PRECISION)
    if not np.all(np.isfinite(g)) or np.any(np.abs(g) >= float(1 << 30)):
        raise ProtocolError("gradients are not finite or exceed 2^30: scale the regression labels down")
    gq = np.rint(g * scale).astype(np.int64)
    hq = np.rint(h * scale).astype(np.int64)
    if len(gq) and int(np.max(np.abs(gq))) * max(1, rows) >= 1 << 62:
        raise ProtocolError("gradients too large for 64-bit histogram sums: scale the regression labels down")
    if objective == "binary":
        offset, h_max = 1 << PRECISION, 1 << (PRECISION - 2)
    else:
        top = int(np.max(np.abs(gq))) if len(gq) else 0
        offset, h_max = 1 << max(PRECISION, top.bit_length()), 1 << PRECISION
    g_bits = (2 * offset).bit_length()
    h_bits = (h_max * max(1, rows)).bit_length()
    return Quantised(gq, hq, offset, g_bits, h_bits)


def slot_bits(g_bits: int, h_bits: int, rows: int) -> int:
    """Bits of one packed histogram value: a sum over up to `rows` rows of g_off·2^h_bits + h_q."""
    return h_bits + g_bits + max(1, rows).bit_length()


# -- histograms and splits --------------------------------------------------------------------------


@dataclass
class Histogram:
    """A node's per-bin sums for one party's features, bins 0..nb-2 of every feature (the
    last bin is implied by the node's totals): g and h sums of the quantised values (exact
    integers) and row counts, one entry per candidate split in scan order."""

    g: np.ndarray  # int64
    h: np.ndarray
    c: np.ndarray

    def __sub__(self, other: Histogram) -> Histogram:
        return Histogram(self.g - other.g, self.h - other.h, self.c - other.c)


def layout(bin_counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(feature of each candidate, bin of each candidate) for features of `bin_counts` bins."""
    feats = np.repeat(np.arange(len(bin_counts)), [max(0, b - 1) for b in bin_counts])
    bins = np.concatenate([np.arange(max(0, b - 1)) for b in bin_counts]) if bin_counts else np.zeros(0)
    return feats.astype(np.int64), bins.astype(np.int64)


def plain_histogram(
    bins: np.ndarray, bin_counts: list[int], rows: np.ndarray, gq: np.ndarray, hq: np.ndarray
) -> Histogram:
    """The histogram of `rows` (indices into bins) with quantised values gq, hq (aligned to rows)."""
    gs, hs, cs = [], [], []
    for j, nb in enumerate(bin_counts):
        if nb <= 1:
            continue
        b = bins[rows, j]
        gs.append(_int_bincount(b, gq, nb)[: nb - 1])
        hs.append(_int_bincount(b, hq, nb)[: nb - 1])
        cs.append(np.bincount(b, minlength=nb)[: nb - 1].astype(np.int64))
    if not gs:
        z = np.zeros(0, dtype=np.int64)
        return Histogram(z, z.copy(), z.copy())
    return Histogram(np.concatenate(gs), np.concatenate(hs), np.concatenate(cs))


def _int_bincount(b: np.ndarray, w: np.ndarray, nb: int) -> np.ndarray:
    """Exact integer bincount (np.bincount sums weights in float64)."""
    out = np.zeros(nb, dtype=np.int64)
    np.add.at(out, b, w)
    return out


@dataclass(frozen=True)
class Rules:
    l2: float
    min_child_weight: float
    min_samples_leaf: int
    min_gain: float


def scale(v: np.ndarray | int) -> np.ndarray:
    return np.asarray(v, dtype=np.float64) / float(1 << PRECISION)


def best_in(hist: Histogram, bin_counts: list[int], total: tuple[int, int, int], rules: Rules) -> tuple[float, int]:
    """(gain, candidate index) of the best valid split in `hist` (first of equal gains), or
    (-inf, -1) when there is none."""
    if len(hist.g) == 0:
        return float("-inf"), -1
    G, H, C = total
    starts = np.cumsum([0] + [max(0, b - 1) for b in bin_counts])[:-1]
    lens = [max(0, b - 1) for b in bin_counts]
    seg_start = np.repeat(starts, lens)

    def cum(a: np.ndarray) -> np.ndarray:
        s = np.cumsum(a)
        before = np.concatenate([[0], s])[seg_start]
        return s - before

    gl, hl, cl = cum(hist.g), cum(hist.h), cum(hist.c)
    gr, hr, cr = G - gl, H - hl, C - cl
    fgl, fhl, fgr, fhr = scale(gl), scale(hl), scale(gr), scale(hr)
    fg, fh = float(scale(G)), float(scale(H))
    lam = rules.l2
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = fgl * fgl / (fhl + lam) + fgr * fgr / (fhr + lam) - fg * fg / (fh + lam)
    valid = (
        (cl >= rules.min_samples_leaf)
        & (cr >= rules.min_samples_leaf)
        & (fhl >= rules.min_child_weight)
        & (fhr >= rules.min_child_weight)
        & np.isfinite(gain)
        & (gain > rules.min_gain)
    )
    if not valid.any():
        return float("-inf"), -1
    masked = np.where(valid, gain, -np.inf)
    i = int(np.argmax(masked))
    return float(masked[i]), i


def leaf_weight(G: int, H: int, rules: Rules, learning_rate: float) -> float:
    return float(-float(scale(G)) / (float(scale(H)) + rules.l2) * learning_rate)


def open_node(depth: int, sampled_rows: int, max_depth: int, min_samples_leaf: int) -> bool:
    """A node is a split candidate when it is above the depth limit and could have two
    children of `min_samples_leaf` sampled rows: a rule every party applies alike."""
    return depth < max_depth and sampled_rows >= 2 * min_samples_leaf
