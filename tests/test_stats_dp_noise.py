"""#13.4 (DP part): the joint-statistics noise is an exact discrete mechanism on the fixed-point
grid, drawn whole by one designated party, and the released totals follow it exactly."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from pcn.algorithms.base import PartyContext, run_local
from pcn.algorithms.stats import dp as dpmod
from pcn.algorithms.stats.protocol import StatsProtocol
from pcn.data.table import Table

Pmf = Callable[[int], float]
Z_1E4 = 3.719  # standard normal quantile at 1 - 1e-4


def laplace_pmf(t: float) -> Pmf:
    q = math.exp(-1.0 / t)
    return lambda x: (1 - q) / (1 + q) * q ** abs(x)


def gaussian_pmf(sigma2: float) -> Pmf:
    reach = int(12 * math.sqrt(sigma2)) + 2
    norm = sum(math.exp(-(x * x) / (2 * sigma2)) for x in range(-reach, reach + 1))
    return lambda x: math.exp(-(x * x) / (2 * sigma2)) / norm


def rounded_laplace_pmf(b: float) -> Pmf:
    """round(Laplace(b)): what the old code's stated continuous noise is on the integer grid."""

    def cdf(y: float) -> float:
        return 0.5 * math.exp(y / b) if y < 0 else 1 - 0.5 * math.exp(-y / b)

    return lambda x: cdf(x + 0.5) - cdf(x - 0.5)


def chi_square_rejects(samples: list[int], pmf: Pmf) -> bool:
    """Pearson's test at level 1e-4 (critical value by Wilson-Hilferty): cells with expected
    count >= 5 from the mode outwards, both tails pooled into one cell each."""
    n = len(samples)
    counts = Counter(samples)
    lo = hi = 0
    while n * pmf(lo - 1) >= 5:
        lo -= 1
    while n * pmf(hi + 1) >= 5:
        hi += 1
    inner = sum(pmf(x) for x in range(lo, hi + 1))
    left = sum(c for x, c in counts.items() if x < lo)
    right = sum(c for x, c in counts.items() if x > hi)
    tails = 1.0 - inner
    left_p = sum(pmf(x) for x in range(lo - 400, lo))
    cells = [(counts.get(x, 0), n * pmf(x)) for x in range(lo, hi + 1)]
    cells += [(left, n * left_p), (right, n * (tails - left_p))]
    cells = [(o, e) for o, e in cells if e > 0]
    stat = sum((o - e) ** 2 / e for o, e in cells)
    df = len(cells) - 1
    critical = df * (1 - 2 / (9 * df) + Z_1E4 * math.sqrt(2 / (9 * df))) ** 3
    return stat > critical


def stream(label: str) -> dpmod.AesCtrRandom:
    return dpmod.AesCtrRandom(hashlib.sha256(label.encode()).digest())


# -- the samplers ---------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(1, 3), Fraction(1), Fraction(7, 3)])
def test_bernoulli_exp_has_probability_exp_minus_gamma(gamma: Fraction) -> None:
    rng = stream(f"bexp/{gamma}")
    n = 20_000
    hits = sum(dpmod.bernoulli_exp(rng, gamma) for _ in range(n))
    p = math.exp(-gamma)
    assert abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9


@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(1), Fraction(7, 3), Fraction(12)])
def test_discrete_laplace_matches_the_exact_pmf(scale: Fraction) -> None:
    rng = stream(f"dlap/{scale}")
    samples = [dpmod.discrete_laplace(rng, scale) for _ in range(20_000)]
    assert not chi_square_rejects(samples, laplace_pmf(float(scale)))
    assert chi_square_rejects(samples, laplace_pmf(float(scale) * 1.15))  # the test has power


@pytest.mark.parametrize("sigma2", [Fraction(1, 4), Fraction(9, 4), Fraction(50)])
def test_discrete_gaussian_matches_the_exact_pmf(sigma2: Fraction) -> None:
    rng = stream(f"dgauss/{sigma2}")
    samples = [dpmod.discrete_gaussian(rng, sigma2) for _ in range(20_000)]
    assert not chi_square_rejects(samples, gaussian_pmf(float(sigma2)))
    assert chi_square_rejects(samples, gaussian_pmf(float(sigma2) * 1.3))


def test_same_key_same_noise_so_a_resumed_worker_draws_it_again() -> None:
    a = [dpmod.discrete_laplace(stream("k"), Fraction(5)) for _ in range(3)]
    first, second = stream("k"), stream("k")
    assert [dpmod.discrete_gaussian(first, Fraction(30)) for _ in range(50)] == [
        dpmod.discrete_gaussian(second, Fraction(30)) for _ in range(50)
    ]
    assert len(set(a)) == 1  # each fresh stream from the same key starts the same


def test_old_rounded_noise_shares_do_not_sum_to_the_stated_distribution() -> None:
    """The replaced code: each of m = 3 non-recipients added round(G1 - G2), G ~ Gamma(1/m, b).
    The total is not round(Laplace(b)) (three rounding errors add up), let alone exact."""
    rng = np.random.default_rng(5)
    b, m, n = 0.5, 3, 20_000
    shares = np.rint(rng.gamma(1 / m, b, (m, n)) - rng.gamma(1 / m, b, (m, n)))
    old_totals = [int(v) for v in shares.sum(axis=0)]
    assert chi_square_rejects(old_totals, rounded_laplace_pmf(b))
    assert chi_square_rejects(old_totals, laplace_pmf(b))
    one_draw = [int(v) for v in np.rint(rng.laplace(0.0, b, n))]
    assert not chi_square_rejects(one_draw, rounded_laplace_pmf(b))  # the pmf itself is right


# -- the released totals --------------------------------------------------------------------

GROUPS = 1500
PER_PARTY = 10  # rows per group and party, each with value 1


def run_grouped(dp: dict[str, Any], statistics: list[str], recipient: int = 0) -> tuple[dict[str, Any], list[str]]:
    labels = [f"g{k}" for k in range(GROUPS)]
    column = [label for label in labels for _ in range(PER_PARTY)]
    tables = [Table({"region": column, "x": ["1"] * len(column)}) for _ in range(3)]
    who = [f"0xparty{i}" for i in range(3)]
    params = {"column": "x", "group_by": "region", "groups": labels, "statistics": statistics}
    params |= {"decimals": 0, "dp": dp}
    parties = [
        StatsProtocol.create(PartyContext(7, me, who, who[recipient], params, hashlib.sha256(me.encode()).digest()), t)
        for me, t in zip(who, tables, strict=True)
    ]
    run_local(parties)
    result = parties[recipient].result()
    assert result is not None
    return json.loads(result), labels


def released_noise(result: dict[str, Any], labels: list[str], stat: str) -> list[int]:
    noise = []
    for label in labels:
        value = result["groups"][label][stat]
        assert float(value).is_integer()  # exactly on the grid (decimals = 0)
        noise.append(int(value) - 3 * PER_PARTY)
    return noise


def test_released_laplace_noise_is_exact_on_the_grid() -> None:
    # clip [0, 3]: sum sensitivity 3; count and sum split epsilon = 1 -> scales 2 and 6
    dp = {"epsilon": 1.0, "mechanism": "laplace", "clip": [0, 3]}
    result, labels = run_grouped(dp, ["count", "sum"], recipient=1)
    assert result["dp"]["noise_parties"] == 1 and result["dp"]["noise_party"] == "0xparty0"
    assert result["dp"]["noise"]["sum"]["scale"] == 6.0
    count_noise = released_noise(result, labels, "count")
    sum_noise = released_noise(result, labels, "sum")
    assert min(count_noise) > -3 * PER_PARTY  # no clamping at 0 distorts the sample
    assert not chi_square_rejects(count_noise, laplace_pmf(2.0))
    assert not chi_square_rejects(sum_noise, laplace_pmf(6.0))
    assert chi_square_rejects(sum_noise, laplace_pmf(4.5))


def test_released_gaussian_noise_is_exact_on_the_grid() -> None:
    dp = {"epsilon": 2.0, "mechanism": "gaussian", "delta": 1e-5, "clip": [0, 1]}
    result, labels = run_grouped(dp, ["sum"])
    assert result["dp"]["noise_party"] == "0xparty1"  # the recipient never draws
    log_inv = math.log(1e5)
    rho = (math.sqrt(log_inv + 2.0) - math.sqrt(log_inv)) ** 2
    sigma2 = 1 / (2 * rho)
    assert result["dp"]["noise"]["sum"]["scale"] == pytest.approx(math.sqrt(sigma2))
    noise = released_noise(result, labels, "sum")
    assert not chi_square_rejects(noise, gaussian_pmf(sigma2))
    assert chi_square_rejects(noise, gaussian_pmf(sigma2 * 1.3))
