"""Differential-privacy accounting and distributed noise for the joint-statistics protocol.

Neighbouring datasets differ by adding or removing one row (unbounded DP). Values are
clipped to [lo, hi] (at the fixed-point scale) before aggregation, so with M = max(|lo|, |hi|)
one row changes, in its own group only:

=============  ====================  ==========================
component      L1 = L2 sensitivity   budget
=============  ====================  ==========================
count          1                     epsilon / k  (delta / k)
sum            M                     epsilon / k  (delta / k)
sumsq          M^2                   epsilon / k  (delta / k)
histogram      1 (one bin, vector)   epsilon / k  (delta / k)
missing        1                     epsilon      (delta)
=============  ====================  ==========================

k is the number of value components the requested statistics need (count for
count/mean/variance, sum for sum/mean/variance, sumsq for variance, histogram for histogram);
they compose sequentially, so together they cost (epsilon, delta). Groups are disjoint, and a
row either has a value (it touches only the value components) or is missing (it touches only
the missing count), so by parallel composition the whole release is (epsilon, delta)-DP.
Mean and variance are post-processing of the noisy count, sum and sumsq.

Laplace: b = sensitivity / epsilon_i. Gaussian (classical bound, needs epsilon_i < 1):
sigma = sensitivity * sqrt(2 ln(1.25 / delta_i)) / epsilon_i.

The noise is generated in a distributed way by the m = n - 1 parties that are NOT the
recipient, so the recipient knows none of it: each adds G1 - G2 with G1, G2 ~ Gamma(1/m, b)
(the sum of m such terms is exactly Laplace(b), since Laplace is infinitely divisible), or
N(0, sigma^2 / m) for the Gaussian mechanism. Each party's noise is fixed-point encoded
(rounded to the component's resolution) and added to its own vector before sharing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pcn.algorithms.base import ProtocolError
from pcn.algorithms.stats.params import Layout, fixed

NOISE_BOUND = 2**200  # an encoded noise value beyond this means absurd parameters


def plan(dp: dict[str, Any], layout: Layout, decimals: int) -> dict[str, dict[str, float]]:
    """Per component: epsilon, delta, sensitivity, scale (b or sigma) and the noise std."""
    scale = 10**decimals
    lo = fixed(dp["clip"][0], decimals) / scale
    hi = fixed(dp["clip"][1], decimals) / scale
    bound = max(abs(lo), abs(hi))
    sensitivity = {"count": 1.0, "sum": bound, "sumsq": bound * bound, "histogram": 1.0, "missing": 1.0}
    noised = layout.noised_components
    eps_i = dp["epsilon"] / len(noised)
    delta = dp["delta"]
    out: dict[str, dict[str, float]] = {}
    for comp in [*noised, "missing"]:
        eps = dp["epsilon"] if comp == "missing" else eps_i
        entry: dict[str, float] = {"epsilon": eps, "sensitivity": sensitivity[comp]}
        if dp["mechanism"] == "laplace":
            b = sensitivity[comp] / eps
            entry.update(scale=b, std=math.sqrt(2.0) * b)
        else:
            d = delta if comp == "missing" else delta / len(noised)
            sigma = sensitivity[comp] * math.sqrt(2.0 * math.log(1.25 / d)) / eps
            entry.update(delta=d, scale=sigma, std=sigma)
        out[comp] = entry
    return out


def sample(
    rng: np.random.Generator, mechanism: str, scale: float, contributors: int, size: int, resolution: int
) -> list[int]:
    """One party's share of the noise for `size` entries, encoded as round(noise * resolution)."""
    if mechanism == "laplace":
        shape = 1.0 / contributors
        noise = rng.gamma(shape, scale, size) - rng.gamma(shape, scale, size)
    else:
        noise = rng.normal(0.0, scale / math.sqrt(contributors), size)
    scaled = np.rint(noise * float(resolution))
    if not np.all(np.isfinite(scaled)) or (size and float(np.max(np.abs(scaled))) >= NOISE_BOUND):
        raise ProtocolError("differential-privacy noise is out of range; check 'dp.clip' and 'dp.epsilon'")
    return [int(v) for v in scaled.tolist()]
