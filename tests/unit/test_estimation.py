"""Unit tests for the estimators, the interval machinery and sample-size planning."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.estimation import (
    METHOD_CENSUS,
    METHOD_CLOPPER_PEARSON_DESIGN,
    METHOD_SCORE,
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
    plan_buys,
    score_interval,
    t_quantile,
    wilson_interval,
)

Z95 = 1.959963984540054

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
    assert (e.n, e.hits, e.population, e.method) == (600, 30, 6_000, METHOD_SCORE)
    # equal weights: both variance terms are (1 - f) / n, so the score interval is Wilson's on n / (1 - f),
    # shrunk by the degrees-of-freedom factor (t_29 / z)^2
    factor = (t_quantile(0.95, 29) / Z95) ** 2
    assert math.isclose(e.c_fake, 0.9 / 600, rel_tol=1e-12) and math.isclose(e.c_clean, 0.9 / 600, rel_tol=1e-12)
    assert math.isclose(e.n_eff_ci, 600 / 0.9 / factor, rel_tol=1e-12)
    low, high = wilson_interval(p, 600 / 0.9 / factor)
    assert e.ci_low == pytest.approx(low, abs=1e-12) and e.ci_high == pytest.approx(high, abs=1e-12)


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
    assert e.method == METHOD_CLOPPER_PEARSON_DESIGN  # 2 hits: exact interval on the design effective size
    # the variance terms by hand: HT sums of (1 - pi) w^2 over fakes / non-fakes, shrunk by half an average unit
    a1 = 0.5 * 4 + 0.0  # fakes: pi 0.5 (w 2) and pi 1 (no variance)
    a0 = 0.75 * 16 + 0.9 * 100 + 0.8 * 25
    m = 0.5 * 22 / 5
    a_frame = (a0 + a1) / 22
    c_fake = (a1 + m * a_frame) / (3 + m) / 22
    c_clean = (a0 + m * a_frame) / (19 + m) / 22
    assert math.isclose(e.c_fake, c_fake, rel_tol=1e-12) and math.isclose(e.c_clean, c_clean, rel_tol=1e-12)
    factor = (t_quantile(0.95, 1) / Z95) ** 2
    n_star = 1 / ((1 - 3 / 22) * c_fake + 3 / 22 * c_clean) / factor
    assert math.isclose(e.n_eff_ci, n_star, rel_tol=1e-12)
    low, high = clopper_pearson_interval(e.prevalence * n_star, n_star)
    assert e.ci_low == pytest.approx(low, abs=1e-12) and e.ci_high == pytest.approx(high, abs=1e-12)


def test_no_hits_gives_a_zero_lower_bound_and_finite_upper() -> None:
    e = estimate(np.zeros(400, dtype=int), np.full(400, 0.02), 20_000)
    assert e.prevalence == 0.0 and e.variance == 0.0
    assert e.ci_low == 0.0
    assert e.method == METHOD_CLOPPER_PEARSON_DESIGN
    # equal weights: the unseen-fakes term is (1 - f) / f per unit, so n* = n / (1 - f): rule of three with FPC
    assert math.isclose(e.ci_high, 1 - 0.025 ** (0.98 / 400), rel_tol=1e-9)


def test_zero_hits_upper_bound_allows_for_fakes_on_low_probability_units() -> None:
    """With unequal weights the zero-hit bound assumes fakes spread as 1/pi (wider than the uniform rule)."""
    pi = np.array([0.5] * 200 + [0.01] * 200)
    e = estimate(np.zeros(400, dtype=int), pi, 100_000)
    w = 1 / pi
    a_w = float(np.sum((1 - pi) * w**3)) / float(np.sum(w * w))
    n_star = float(w.sum()) / a_w
    assert math.isclose(e.n_eff_ci, n_star, rel_tol=1e-12)
    assert math.isclose(e.ci_high, 1 - 0.025 ** (1 / n_star), rel_tol=1e-9)
    assert e.ci_high > 1 - 0.025 ** (1 / 400)


def test_census_is_exact() -> None:
    y = np.array([1] * 10 + [0] * 90)
    e = estimate(y, np.ones(100), 100)
    assert e.prevalence == 0.1 and e.variance == 0.0
    assert e.ci_low == e.ci_high == e.prevalence and e.method == METHOD_CENSUS
    assert e.half_width == 0.0
    plan = plan_buys(e, 0.001)
    assert (plan.buys, plan.frame_exhausted, plan.remaining) == (0, False, 0)
    assert buys_needed(e, 0.001) == 0
    # rounds combined from censuses are exact too; a census part adds no variance to a sampled part
    both = combine_rounds([e, estimate(np.array([0] * 50 + [1] * 50), np.ones(100), 100)])
    assert both.ci_low == both.ci_high == both.prevalence == 0.3
    mixed = estimate(np.array([1] * 5 + [0] * 95 + [1] * 3 + [0] * 97), np.r_[np.ones(100), np.full(100, 0.5)], 300)
    resid = np.r_[np.zeros(100), np.array([1] * 3 + [0] * 97) - mixed.prevalence]
    assert math.isclose(mixed.variance, float(np.sum(0.5 * 4 * resid[100:] ** 2)) / 300**2, rel_tol=1e-12)
    assert resid[:100].sum() == 0


def test_units_with_pi_one_add_no_variance() -> None:
    y = np.array([1, 0, 1, 0])
    a = estimate(y, np.array([1.0, 1.0, 0.2, 0.2]), 12)
    # only the two pi = 0.2 units (w = 5) contribute (1 - pi) w^2 (y - p)^2
    p = (1 + 5) / 12
    v = (0.8 * 25 * (1 - p) ** 2 + 0.8 * 25 * p**2) / 144
    assert math.isclose(a.variance, v, rel_tol=1e-12)


def test_numpy_scalars_are_accepted() -> None:
    y = np.array([1] * 20 + [0] * 180)
    ref = estimate(y, np.full(200, 0.05), 4_000, confidence=0.9)
    e = estimate(y, np.full(200, 0.05), np.int32(4_000), confidence=np.float32(0.9))
    assert math.isclose(e.ci_high, ref.ci_high, rel_tol=1e-6)
    assert buys_needed(ref, np.float32(0.01)) == buys_needed(ref, 0.01)
    with pytest.raises(EstimationError) as err:
        estimate(y, np.full(200, 0.05), 4_000, confidence=np.float64(1.5))
    assert err.value.field == "confidence" and "between 0 and 1" in str(err.value)
    with pytest.raises(EstimationError) as err:
        estimate(y, np.full(200, 0.05), 4_000, confidence=True)
    assert err.value.field == "confidence"
    with pytest.raises(EstimationError) as err:
        buys_needed(ref, "0.01")  # type: ignore[arg-type]
    assert err.value.field == "half_width"


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
    current = _round(0.05, 400, 1_000_000, pi=0.0004)  # FPC negligible
    assert current.half_width > 0.01
    more = buys_needed(current, 0.01)
    total = current.n + more
    z = Z95
    p = current.prevalence
    # the design effect carried over is the degrees-of-freedom factor (t_19 / z)^2 of the 20-hit round
    deff = current.design_effect / (1 - 400 / 1_000_000)
    assert math.isclose(deff, (t_quantile(0.95, 19) / z) ** 2, rel_tol=1e-9)

    def half(m: float) -> float:
        m = m / deff * (1_000_000 / (1_000_000 - m))  # effective size of m buys, with the FPC
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


def test_buys_needed_never_exceeds_the_frame() -> None:
    # 400 of 500 sellers bought: a +-0.01pt target needs a census; the plan caps at the 100 left and says so
    e = _round(0.05, 400, 500, pi=0.8)
    plan = plan_buys(e, 0.0001)
    assert (plan.buys, plan.frame_exhausted, plan.remaining) == (100, True, 100)
    assert buys_needed(e, 0.0001) == 100
    near = plan_buys(e, 0.001)  # +-0.1pt: all but a few of the remaining units
    assert 90 <= near.buys <= 100
    loose = plan_buys(e, 0.02)
    assert not loose.frame_exhausted and 0 <= loose.buys < 100
    # in general the FPC-aware plan is below the frame: N = 2,000, target +-1pt
    big = _round(0.05, 400, 2_000, pi=0.2)
    p2 = plan_buys(big, 0.01)
    assert 0 < p2.buys < 1_600 and not p2.frame_exhausted


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
    assert math.isclose(lift.lift_plugin, (1 / 400) / (2 / 4_400))
    # second-order bias correction by hand: totals x = (hits, spend, Yhat, Chat), e = (1, -1, -1, 1)
    pi = np.array([0.5, 0.5, 0.05, 0.05])
    y = np.array([1.0, 0, 0, 0])
    c = np.full(4, 100.0)
    g = np.stack([y, c, y / pi, c / pi])
    x = g.sum(axis=1)
    rel = ((g * (1 - pi)) @ g.T) / np.outer(x, x)
    e = np.array([1, -1, -1, 1])
    bias = 0.5 * lift.lift_plugin * (e @ rel @ e - e @ np.diag(rel))
    assert math.isclose(lift.lift, lift.lift_plugin - bias, rel_tol=1e-12)


def test_hit_lift_rejects_fractional_costs() -> None:
    with pytest.raises(EstimationError) as err:
        hit_lift(np.array([1, 0]), np.array([0.5, 0.5]), np.array([100.5, 100.0]))
    assert err.value.field == "cost" and "integer" in str(err.value)
    with pytest.raises(EstimationError) as err:
        hit_lift(np.array([1, 0]), np.array([0.5, 0.5]), np.array([100, 0]))
    assert err.value.field == "cost" and "positive" in str(err.value)


def test_score_interval_with_equal_terms_is_wilson() -> None:
    # V(p0) = p0 (1 - p0) / n when both terms are 1/n: the score interval is Wilson's, for any p
    for p, n in [(0.0, 50.0), (0.01, 300.0), (0.3, 40.0), (1.0, 25.0)]:
        low, high = score_interval(p, 1 / n, 1 / n)
        w_low, w_high = wilson_interval(p, n)
        assert low == pytest.approx(w_low, abs=1e-12) and high == pytest.approx(w_high, abs=1e-12)
