"""Unit tests for the estimators, the interval machinery and sample-size planning."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.estimation import (
    METHOD_CLOPPER_PEARSON,
    METHOD_WILSON,
    Estimate,
    EstimationError,
    beta_quantile,
    betainc,
    buys_needed,
    clopper_pearson_interval,
    combine_rounds,
    estimate,
    estimate_by_stratum,
    hit_lift,
    wilson_interval,
)

# ------------------------------------------------------------------------------------------- beta function


def binom_upper_tail(n: int, k: int, x: float) -> float:
    """P(Binomial(n, x) >= k), summed exactly term by term."""
    return math.fsum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize(
    ("n", "k", "x"),
    [(10, 1, 0.05), (10, 5, 0.5), (20, 3, 0.01), (50, 25, 0.45), (100, 2, 0.003), (30, 30, 0.9), (200, 120, 0.6)],
)
def test_betainc_matches_binomial_tail(n: int, k: int, x: float) -> None:
    # I_x(k, n - k + 1) = P(Bin(n, x) >= k)
    assert abs(betainc(k, n - k + 1, x) - binom_upper_tail(n, k, x)) < 1e-12


@settings(max_examples=200, deadline=None)
@given(st.floats(0.01, 0.99), st.floats(0.05, 50.0))
def test_beta_quantile_closed_forms(q: float, a: float) -> None:
    assert abs(beta_quantile(q, a, 1.0) - q ** (1 / a)) < 1e-10
    assert abs(beta_quantile(q, 1.0, a) - (1 - (1 - q) ** (1 / a))) < 1e-10


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-4, 1 - 1e-4), st.floats(0.1, 500.0), st.floats(0.1, 5_000.0))
def test_beta_quantile_inverts_betainc(q: float, a: float, b: float) -> None:
    # the quantile is accurate to 1e-12 in x: q lies between I at x -/+ 1e-12 (checking |I(x) - q| instead
    # would fail near x = 1, where doubles cannot resolve 1 - x and I is arbitrarily steep)
    x = beta_quantile(q, a, b)
    assert betainc(a, b, x - 1e-12) <= q + 1e-14
    assert betainc(a, b, x + 1e-12) >= q - 1e-14
    if 1e-6 < x < 1 - 1e-6:
        assert abs(betainc(a, b, x) - q) < 1e-9


def test_clopper_pearson_known_values() -> None:
    low, high = clopper_pearson_interval(0, 10)
    assert low == 0.0
    assert abs(high - (1 - 0.025**0.1)) < 1e-12
    low, high = clopper_pearson_interval(10, 10)
    assert abs(low - 0.025**0.1) < 1e-12 and high == 1.0
    low, high = clopper_pearson_interval(5, 10)  # published: 0.187086, 0.812914
    assert abs(low - 0.187086) < 1e-6 and abs(high - 0.812914) < 1e-6
    low, high = clopper_pearson_interval(1, 100)  # published: 0.000253, 0.054460
    assert abs(low - 0.000253) < 1e-6 and abs(high - 0.054460) < 1e-6
    # symmetry
    a = clopper_pearson_interval(3, 40)
    b = clopper_pearson_interval(37, 40)
    assert abs(a[0] - (1 - b[1])) < 1e-12 and abs(a[1] - (1 - b[0])) < 1e-12


def test_wilson_known_values() -> None:
    low, high = wilson_interval(0.5, 10)  # x=5, n=10, z=1.959964: 0.236593, 0.763407
    assert abs(low - 0.236593) < 1e-6 and abs(high - 0.763407) < 1e-6
    low, high = wilson_interval(0.0, 100)  # upper = z^2 / (n + z^2)
    z2 = 1.959963984540054**2
    assert low == 0.0 and abs(high - z2 / (100 + z2)) < 1e-12


# ------------------------------------------------------------------------------------------- estimate


def test_equal_probability_sample_reduces_to_the_textbook() -> None:
    y = np.array([1] * 30 + [0] * 570)
    pi = np.full(600, 0.1)
    e = estimate(y, pi, 6_000)
    p = 30 / 600
    assert math.isclose(e.prevalence, p, rel_tol=1e-12)
    assert math.isclose(e.ht_prevalence, p, rel_tol=1e-12)  # N = n / pi exactly
    assert math.isclose(e.variance, (1 - 0.1) * p * (1 - p) / 600, rel_tol=1e-12)
    assert math.isclose(e.std_error, math.sqrt(e.variance), rel_tol=1e-12)
    assert math.isclose(e.n_eff, 600, rel_tol=1e-12)
    assert (e.n, e.hits, e.population, e.method) == (600, 30, 6_000, METHOD_WILSON)
    assert math.isclose(e.n_eff_ci, 600, rel_tol=1e-12)  # p(1-p)/v = 600/0.9, capped at n
    low, high = wilson_interval(p, 600)
    assert (e.ci_low, e.ci_high) == (low, high)


def test_unequal_weights_by_hand() -> None:
    y = np.array([1, 0, 0, 1, 0])
    pi = np.array([0.5, 0.25, 0.1, 1.0, 0.2])
    w = 1 / pi  # 2, 4, 10, 1, 5 -> sum 22
    e = estimate(y, pi, 40)
    assert math.isclose(e.prevalence, 3 / 22, rel_tol=1e-12)
    assert math.isclose(e.ht_prevalence, 3 / 40, rel_tol=1e-12)
    resid = y - 3 / 22
    v = float(np.sum((1 - pi) * w * w * resid * resid)) / 22**2
    assert math.isclose(e.variance, v, rel_tol=1e-12)
    assert math.isclose(e.n_eff, 22**2 / float(np.sum(w * w)), rel_tol=1e-12)
    assert e.method == METHOD_CLOPPER_PEARSON  # 2 hits: exact interval on the Kish size
    low, high = clopper_pearson_interval(e.prevalence * e.n_eff, e.n_eff)
    assert (e.ci_low, e.ci_high) == (low, high)
    assert e.n_eff_ci == e.n_eff


def test_no_hits_gives_a_zero_lower_bound_and_finite_upper() -> None:
    e = estimate(np.zeros(400, dtype=int), np.full(400, 0.02), 20_000)
    assert e.prevalence == 0.0 and e.variance == 0.0
    assert e.ci_low == 0.0
    assert e.method == METHOD_CLOPPER_PEARSON
    assert math.isclose(e.ci_high, 1 - 0.025 ** (1 / 400), rel_tol=1e-9)


def test_census_interval_uses_kish_size() -> None:
    y = np.array([1] * 10 + [0] * 90)
    e = estimate(y, np.ones(100), 100)
    assert e.prevalence == 0.1 and e.variance == 0.0
    assert e.n_eff == 100 and e.ci_low < 0.1 < e.ci_high


def test_bool_outcomes_and_confidence_level() -> None:
    y = np.array([True] * 20 + [False] * 180)
    e90 = estimate(y, np.full(200, 0.05), 4_000, confidence=0.90)
    e99 = estimate(y, np.full(200, 0.05), 4_000, confidence=0.99)
    assert e90.ci_high - e90.ci_low < e99.ci_high - e99.ci_low
    assert e90.confidence == 0.90


@pytest.mark.parametrize(
    ("y", "pi", "population", "field"),
    [
        ([0, 2], [0.5, 0.5], 10, "y"),
        ([], [], 10, "y"),
        ([0, 1], [0.5], 10, "pi"),
        ([0, 1], [0.5, 0.0], 10, "pi"),
        ([0, 1], [0.5, 1.5], 10, "pi"),
        ([0, 1], [0.5, float("nan")], 10, "pi"),
        ([0, 1], [0.5, 0.5], 1, "population"),
        ([0, 1], [0.5, 0.5], 10.0, "population"),
    ],
)
def test_bad_estimation_input(y: list[Any], pi: list[float], population: Any, field: str) -> None:
    with pytest.raises(EstimationError) as err:
        estimate(np.array(y), np.array(pi), population)
    assert err.value.field == field


def test_bad_confidence() -> None:
    with pytest.raises(EstimationError) as err:
        estimate([0, 1], [0.5, 0.5], 10, confidence=1.0)
    assert err.value.field == "confidence"


# ------------------------------------------------------------------------------------------- strata


def test_estimate_by_stratum_combines_per_stratum_estimates() -> None:
    rng = np.random.default_rng(4)
    strata = np.repeat([1, 2, 3], [300, 200, 100])
    y = (rng.random(600) < np.repeat([0.02, 0.1, 0.3], [300, 200, 100])).astype(int)
    pi = rng.uniform(0.05, 0.5, 600)
    pops = {1: 5_000, 2: 2_000, 3: 1_000}
    overall, per = estimate_by_stratum(y, pi, strata, pops)
    assert set(per) == {1, 2, 3}
    for h, n_h in pops.items():
        m = strata == h
        direct = estimate(y[m], pi[m], n_h)
        assert per[h] == direct
    total = sum(pops.values())
    assert math.isclose(overall.prevalence, sum(pops[h] * per[h].prevalence for h in pops) / total, rel_tol=1e-12)
    assert math.isclose(overall.variance, sum((pops[h] / total) ** 2 * per[h].variance for h in pops), rel_tol=1e-12)
    assert overall.population == total and overall.n == 600 and overall.hits == int(y.sum())
    assert overall.ci_low < overall.prevalence < overall.ci_high


def test_estimate_by_stratum_rejects_gaps() -> None:
    y, pi, strata = np.array([0, 1]), np.array([0.5, 0.5]), np.array([1, 1])
    with pytest.raises(EstimationError) as err:
        estimate_by_stratum(y, pi, strata, {1: 10, 2: 10})
    assert err.value.field == "strata"
    with pytest.raises(EstimationError) as err:
        estimate_by_stratum(y, pi, np.array([1, 3]), {1: 10})
    assert err.value.field == "population_by_stratum"


# ------------------------------------------------------------------------------------------- rounds


def _round(p: float, n: int, pop: int, pi: float = 0.05) -> Estimate:
    hits = round(p * n)
    return estimate(np.array([1] * hits + [0] * (n - hits)), np.full(n, pi), pop)


def test_combine_rounds_is_population_weighted() -> None:
    a = _round(0.02, 500, 10_000)
    b = _round(0.06, 500, 30_000)
    c = combine_rounds([a, b])
    assert math.isclose(c.prevalence, (10_000 * 0.02 + 30_000 * 0.06) / 40_000, rel_tol=1e-12)
    assert math.isclose(c.variance, 0.25**2 * a.variance + 0.75**2 * b.variance, rel_tol=1e-12)
    assert (c.n, c.hits, c.population) == (1_000, a.hits + b.hits, 40_000)
    assert c.ci_low < c.prevalence < c.ci_high
    single = combine_rounds([a])
    assert math.isclose(single.prevalence, a.prevalence) and math.isclose(single.variance, a.variance)
    assert (single.ci_low, single.ci_high) == pytest.approx((a.ci_low, a.ci_high), rel=1e-12)


def test_combine_rounds_rejects_nothing_and_mixed_levels() -> None:
    with pytest.raises(EstimationError):
        combine_rounds([])
    a = _round(0.02, 500, 10_000)
    b = estimate(np.array([1] * 10 + [0] * 490), np.full(500, 0.05), 10_000, confidence=0.9)
    with pytest.raises(EstimationError):
        combine_rounds([a, b])


# ------------------------------------------------------------------------------------------- planning


def test_buys_needed_reaches_the_target() -> None:
    current = _round(0.05, 400, 1_000_000, pi=0.0004)  # FPC negligible: n_eff_ci == n
    assert current.half_width > 0.01
    more = buys_needed(current, 0.01)
    total = current.n + more
    z = 1.959963984540054
    p = current.prevalence

    def half(m: float) -> float:
        return z / (1 + z * z / m) * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m))

    assert half(total) <= 0.01 < half(total - 1)
    assert buys_needed(current, 0.02) < more  # looser target, fewer buys
    assert buys_needed(current, current.half_width + 1e-6) == 0


def test_buys_needed_scales_with_the_design_effect() -> None:
    rng = np.random.default_rng(8)
    pi = rng.uniform(0.001, 0.02, 1_000)
    y = np.zeros(1_000, dtype=int)
    y[:40] = 1
    weighted = estimate(y, pi, 1_000_000)
    flat = estimate(y, np.full(1_000, 0.001), 1_000_000)
    assert weighted.design_effect > 1.2
    assert buys_needed(weighted, 0.005) > buys_needed(flat, 0.005)


def test_buys_needed_with_no_hits_is_finite() -> None:
    e = estimate(np.zeros(50, dtype=int), np.full(50, 0.01), 10_000)
    more = buys_needed(e, 0.01)
    assert 0 < more < 100_000
    with pytest.raises(EstimationError):
        buys_needed(e, 0.0)


def test_hit_lift() -> None:
    # two sellers with pi 0.5 (one fake) and two with pi 0.05 (none): risk-weighted sampling found the fake
    lift = hit_lift(np.array([1, 0, 0, 0]), np.array([0.5, 0.5, 0.05, 0.05]), np.array([100, 100, 100, 100]))
    assert lift.hits == 1 and lift.spend == 400
    assert math.isclose(lift.hits_per_spend, 1 / 400)
    assert math.isclose(lift.uniform_hits_per_spend, 2 / (100 * (2 + 2 + 20 + 20)))
    assert math.isclose(lift.lift, (1 / 400) / (2 / 4_400))
