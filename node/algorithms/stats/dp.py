"""Differential-privacy accounting and exact discrete noise for the joint-statistics protocol.

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

The noise lives on the fixed-point grid the aggregates are encoded on (1 / 10^decimals,
1 / 10^(2 decimals) for sumsq), where every component is an integer and its sensitivity D is
an exact integer (10^decimals for the counts, the encoded M for sum, its square for sumsq).
Mechanisms, sampled exactly with the Canonne-Kamath-Steinke (2020) rejection samplers in
integer/rational arithmetic only:

- laplace: discrete Laplace, P[X = x] proportional to exp(-|x| epsilon_i / D) on the integers,
  which is epsilon_i-DP for an integer query of L1 sensitivity D (pure DP, delta = 0).
- gaussian: discrete Gaussian, P[X = x] proportional to exp(-x^2 / (2 sigma^2)), which is
  rho-zCDP with rho = D^2 / (2 sigma^2) for L2 sensitivity D and hence
  (rho + 2 sqrt(rho ln(1/delta_i)), delta_i)-DP (Bun-Steinke 2016, Prop. 1.3). sigma is chosen
  so this is at most epsilon_i: sqrt(rho) = sqrt(ln(1/delta_i) + epsilon_i) - sqrt(ln(1/delta_i)),
  rounded down by 2^-30 relative so float error cannot weaken the guarantee.

Who draws the noise: ONE party, the first non-recipient in on-chain order, draws the whole
noise and adds it to its own vector before sharing; the others add none. The released total
then carries exactly the stated distribution. A sum of per-party shares cannot: the discrete
Gaussian is not closed under sums, and splitting the discrete Laplace exactly needs
negative-binomial draws with non-integer shape, which have no exact rational sampler; the
old rounded continuous shares summed to neither distribution. Trust assumption: the recipient
never learns the noise unless it colludes with that noise party, which can then remove it.

The random bits are AES-256-CTR under a key derived from the party's task seed (and so
from `ctx.binding`), so a resumed worker draws the same noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pcn.algorithms.base import ProtocolError
from pcn.algorithms.stats.params import Layout, fixed

NOISE_BOUND = 2**200  # an encoded noise value beyond this means absurd parameters
RHO_MARGIN = Fraction(2**30 - 1, 2**30)  # rho rounded down: float error only adds privacy


class AesCtrRandom:
    """Uniform integers from the AES-256-CTR keystream under a 32-byte secret key (AES as a PRF)."""

    _CHUNK = 4096

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a noise key is 32 bytes")
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._buffer = b""
        self._pos = 0

    def _take(self, n: int) -> bytes:
        if self._pos + n > len(self._buffer):
            rest = self._buffer[self._pos :]
            need = max(self._CHUNK, n - len(rest))
            self._buffer = rest + self._encryptor.update(bytes(need))
            self._pos = 0
        out = self._buffer[self._pos : self._pos + n]
        self._pos += n
        return out

    def below(self, n: int) -> int:
        """Uniform in [0, n), by rejection on the smallest number of bits (exact, no modulo bias)."""
        if n < 1:
            raise ValueError("below(n) needs n >= 1")
        bits = (n - 1).bit_length()
        if bits == 0:
            return 0
        nbytes = (bits + 7) // 8
        while True:
            v = int.from_bytes(self._take(nbytes), "big") >> (8 * nbytes - bits)
            if v < n:
                return v

    def bernoulli(self, p: Fraction) -> bool:
        """True with probability exactly p, 0 <= p <= 1."""
        return self.below(p.denominator) < p.numerator


# The samplers work on integer numerators and denominators (no Fraction normalisation in the
# inner loops): the probabilities are the same exact rationals.


def _bernoulli_exp_unit(rng: AesCtrRandom, num: int, den: int) -> bool:
    """True with probability exp(-num/den) for 0 <= num <= den: the parity of the first k with
    a failed Bernoulli(gamma / k) (CKS 2020, Algorithm 1, first case)."""
    k = 1
    while rng.below(den * k) < num:
        k += 1
    return k % 2 == 1


def _bernoulli_exp(rng: AesCtrRandom, num: int, den: int) -> bool:
    if num <= den:
        return _bernoulli_exp_unit(rng, num, den)
    # exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma))); stops at the first failure
    whole = num // den
    return all(_bernoulli_exp_unit(rng, 1, 1) for _ in range(whole)) and _bernoulli_exp_unit(
        rng, num - whole * den, den
    )


def bernoulli_exp(rng: AesCtrRandom, gamma: Fraction) -> bool:
    """True with probability exactly exp(-gamma), gamma >= 0 rational (CKS 2020, Algorithm 1)."""
    if gamma < 0:
        raise ValueError("bernoulli_exp needs gamma >= 0")
    return _bernoulli_exp(rng, gamma.numerator, gamma.denominator)


def discrete_laplace(rng: AesCtrRandom, scale: Fraction) -> int:
    """P[X = x] = (1 - e^(-1/scale)) / (1 + e^(-1/scale)) * e^(-|x| / scale) on the integers
    (CKS 2020, Algorithm 2, with scale = t / s)."""
    if scale <= 0:
        raise ValueError("the discrete Laplace scale must be > 0")
    return _discrete_laplace(rng, scale.numerator, scale.denominator)


def _discrete_laplace(rng: AesCtrRandom, t: int, s: int) -> int:
    while True:
        u = rng.below(t)
        if not _bernoulli_exp_unit(rng, u, t):
            continue
        v = 0
        while _bernoulli_exp_unit(rng, 1, 1):
            v += 1
        y = (u + t * v) // s
        negative = rng.below(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def discrete_gaussian(rng: AesCtrRandom, sigma2: Fraction) -> int:
    """P[X = x] proportional to exp(-x^2 / (2 sigma2)) on the integers (CKS 2020, Algorithm 3)."""
    if sigma2 <= 0:
        raise ValueError("the discrete Gaussian variance parameter must be > 0")
    a, b = sigma2.numerator, sigma2.denominator
    t = math.isqrt(a // b) + 1  # floor(sigma) + 1
    while True:
        y = _discrete_laplace(rng, t, 1)
        # (|y| - sigma2 / t)^2 / (2 sigma2) with sigma2 = a / b, over one common denominator
        if _bernoulli_exp(rng, (abs(y) * b * t - a) ** 2, 2 * a * b * t * t):
            return y


def gaussian_sigma2(sensitivity: int, epsilon: float, delta: float) -> Fraction:
    """The discrete Gaussian sigma^2 (grid units) whose rho-zCDP, rho = D^2 / (2 sigma^2),
    converts to (epsilon, delta)-DP: rho + 2 sqrt(rho ln(1/delta)) <= epsilon."""
    log_inv_delta = math.log(1.0 / delta)
    root = epsilon / (math.sqrt(log_inv_delta + epsilon) + math.sqrt(log_inv_delta))  # = sqrt(rho), stably
    rho = Fraction(root * root) * RHO_MARGIN
    return Fraction(sensitivity * sensitivity) / (2 * rho)


@dataclass(frozen=True)
class ComponentNoise:
    """The exact noise of one component on its grid (integers in units of 1 / resolution)."""

    mechanism: str
    epsilon: Fraction
    delta: float | None
    sensitivity: int  # on the grid
    resolution: int
    laplace_scale: Fraction | None = None  # discrete Laplace: sensitivity / epsilon
    sigma2: Fraction | None = None  # discrete Gaussian

    def draw(self, rng: AesCtrRandom, size: int) -> list[int]:
        if self.mechanism == "laplace":
            assert self.laplace_scale is not None
            scale = self.laplace_scale
            out = [discrete_laplace(rng, scale) for _ in range(size)]
        else:
            assert self.sigma2 is not None
            sigma2 = self.sigma2
            out = [discrete_gaussian(rng, sigma2) for _ in range(size)]
        if any(abs(v) >= NOISE_BOUND for v in out):
            raise ProtocolError("differential-privacy noise is out of range; check 'dp.clip' and 'dp.epsilon'")
        return out


def noise_terms(dp: dict[str, Any], layout: Layout, decimals: int) -> dict[str, ComponentNoise]:
    """Per noised component (and missing): the exact mechanism on its fixed-point grid."""
    scale = 10**decimals
    bound = max(abs(fixed(dp["clip"][0], decimals)), abs(fixed(dp["clip"][1], decimals)))
    sensitivity = {"count": scale, "sum": bound, "sumsq": bound * bound, "histogram": scale, "missing": scale}
    noised = layout.noised_components
    out: dict[str, ComponentNoise] = {}
    for comp in [*noised, "missing"]:
        share = 1 if comp == "missing" else len(noised)
        eps = Fraction(dp["epsilon"]) / share
        resolution = scale * scale if comp == "sumsq" else scale
        d = sensitivity[comp]
        if dp["mechanism"] == "laplace":
            out[comp] = ComponentNoise("laplace", eps, None, d, resolution, laplace_scale=d / eps)
        else:
            delta = dp["delta"] / share
            sigma2 = gaussian_sigma2(d, float(eps), delta)
            out[comp] = ComponentNoise("gaussian", eps, delta, d, resolution, sigma2=sigma2)
    return out


def plan(dp: dict[str, Any], layout: Layout, decimals: int) -> dict[str, dict[str, float]]:
    """Per component, in value units: epsilon, delta, sensitivity, scale (b or sigma), std."""
    out: dict[str, dict[str, float]] = {}
    for comp, term in noise_terms(dp, layout, decimals).items():
        res = term.resolution
        entry: dict[str, float] = {"epsilon": float(term.epsilon), "sensitivity": term.sensitivity / res}
        if term.laplace_scale is not None:
            t = float(term.laplace_scale)
            # Var of the discrete Laplace: 2 e^(-1/t) / (1 - e^(-1/t))^2 (grid units)
            std = math.sqrt(2.0 * math.exp(-1.0 / t)) / -math.expm1(-1.0 / t)
            entry.update(scale=t / res, std=std / res)
        else:
            assert term.sigma2 is not None and term.delta is not None
            sigma = math.sqrt(float(term.sigma2)) / res
            rho = term.sensitivity**2 / (2 * term.sigma2)
            # the discrete Gaussian's variance is below sigma^2 (CKS 2020); std reports that bound
            entry.update(delta=term.delta, scale=sigma, std=sigma, rho=float(rho))
        out[comp] = entry
    return out


def noise_party(participants: list[str], recipient: str) -> str:
    """The party that draws all of the noise: the first non-recipient in on-chain order (the
    recipient itself only when it is the one party, and so holds every input anyway)."""
    return next((p for p in participants if p.lower() != recipient.lower()), participants[0])
