"""Unit and property tests for the sampling design and the Poisson draw."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import sampling
from chalicelib.domain.errors import InvalidInput
from chalicelib.domain.sampling import SamplingError, check_unique_ids, design, poisson_draw


def small_frame(n: int = 1_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = 1.0 / (1.0 + np.exp(-(rng.standard_normal(n) - 3.0)))
    cost = rng.integers(500, 20_000, n).astype(np.int64)
    return risk, cost


# ------------------------------------------------------------------------------------------------- design


def test_spend_meets_budget_and_probabilities_are_valid() -> None:
    risk, cost = small_frame()
    budget = int(cost.sum() // 10)
    d = design(risk, cost, budget)
    assert d.pi.dtype == np.float64
    assert np.all(d.pi > 0) and np.all(d.pi <= 1)
    assert math.isclose(d.expected_spend, budget, rel_tol=1e-12)
    assert math.isclose(float(np.dot(cost, d.pi)), budget, rel_tol=1e-12)
    assert math.isclose(d.expected_size, float(d.pi.sum()), rel_tol=1e-12)
    assert (d.eps, d.blend, d.budget, d.strata) == (0.1, 0.25, budget, None)
    assert not d.pi.flags.writeable


def test_pure_components_have_the_documented_shape() -> None:
    risk, cost = small_frame()
    budget = int(cost.sum() // 50)  # small enough that nothing caps
    total = float(cost.sum())
    uniform = budget / total
    est = design(risk, cost, budget, eps=0.2, blend=1.0)
    ratio = (est.pi - 0.2 * uniform) / np.sqrt(risk / cost)
    assert np.allclose(ratio, ratio[0], rtol=2.5e-7)  # the weights' square root is single precision (2 roundings)
    hunt = design(risk, cost, budget, eps=0.2, blend=0.0)
    ratio = (hunt.pi - 0.2 * uniform) / risk
    assert np.allclose(ratio, ratio[0], rtol=1e-10)
    flat = design(risk, cost, budget, eps=1.0)
    assert np.allclose(flat.pi, uniform, rtol=1e-12)
    # blend mixes the two components linearly
    mid = design(risk, cost, budget, eps=0.2, blend=0.3)
    assert np.allclose(mid.pi, 0.3 * est.pi + 0.7 * hunt.pi, rtol=1e-12)


@pytest.mark.parametrize("stratified", [False, True])
def test_census_when_budget_covers_everything(stratified: bool) -> None:
    """A budget that buys everyone gives every pi = 1, ``census`` true and the frame's total cost (not the budget)
    as the expected spend; one minor unit less is no census."""
    risk, cost = small_frame(50)
    strata = np.arange(50) % 3 if stratified else None
    total = int(cost.sum())
    for budget in (total, total + 1, 10 * total):
        d = design(risk, cost, budget, strata=strata)
        assert d.census
        assert np.all(d.pi == 1.0)
        assert d.expected_spend == float(total) <= budget
        assert d.expected_size == 50.0
        assert d.total_cost == total
    below = design(risk, cost, total - 1, strata=strata)
    assert not below.census
    assert float(below.pi.min()) < 1.0
    assert math.isclose(below.expected_spend, total - 1, rel_tol=1e-12)


def test_capping_redistributes_excess() -> None:
    risk, cost = small_frame(500)
    risk[:20] = 0.99  # very risky, some very cheap: their hunting weight exceeds 1 and must be capped
    cost[:10] = 100
    budget = int(cost.sum() // 4)
    d = design(risk, cost, budget, eps=0.05, blend=0.0)
    capped_component = (d.pi - 0.05 * budget / cost.sum()) / 0.95
    assert np.sum(np.isclose(capped_component, 1.0, rtol=0, atol=1e-12)) >= 10
    assert math.isclose(float(np.dot(cost, d.pi)), budget, rel_tol=1e-12)
    assert np.all(d.pi <= 1.0)


def test_exact_fallback_agrees_with_newton_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 200
    risk = np.geomspace(0.9, 1e-3, n)
    cost = np.random.default_rng(2).integers(100, 5_000, n)
    budget = int(cost.sum() * 0.7)
    newton = design(risk, cost, budget, eps=0.01, blend=0.0)
    assert float(newton.pi.max()) > 0.99  # many units capped
    monkeypatch.setattr(sampling, "_MAX_CAP_PASSES", 1)  # force the sort-based exact solve
    exact = design(risk, cost, budget, eps=0.01, blend=0.0)
    assert np.allclose(exact.pi, newton.pi, rtol=1e-12, atol=0)
    assert math.isclose(float(np.dot(cost, exact.pi)), budget, rel_tol=1e-12)


def test_accepts_python_lists_and_other_numeric_dtypes() -> None:
    d = design([0.1, 0.2, 0.3], [100, 200, 300], 300)
    assert math.isclose(d.expected_spend, 300, rel_tol=1e-12)
    risk, cost = small_frame()
    budget = int(cost.sum() // 10)
    ref = design(risk, cost, budget)
    for r, c in ((risk.astype(np.float32), cost), (risk, cost.astype(np.int32)), (risk, cost.astype(np.uint32))):
        other = design(r, c, budget)
        tol = 1e-6 if r.dtype == np.float32 else 1e-13  # float32 risk is a different (rounded) risk
        assert np.allclose(other.pi, ref.pi, rtol=tol, atol=0)
        assert math.isclose(other.expected_spend, budget, rel_tol=1e-12)


def test_inputs_are_not_modified_and_may_be_read_only() -> None:
    risk, cost = small_frame()
    risk.flags.writeable = False
    cost.flags.writeable = False
    before = (risk.copy(), cost.copy())
    d = design(risk, cost, int(cost.sum() // 10))
    poisson_draw(d.pi, 1)
    assert np.array_equal(risk, before[0]) and np.array_equal(cost, before[1])


# ------------------------------------------------------------------------------------------------- friendliness


@pytest.mark.parametrize(
    "scalars",
    [
        {"eps": np.float32(0.1)},
        {"eps": np.float64(0.2)},
        {"eps": np.int64(1)},
        {"blend": np.float32(0.3)},
        {"blend": np.float16(0.5)},
        {"blend": np.int8(0)},
        {"budget": np.int64(1_000_000)},
        {"budget": np.int32(1_000_000)},
        {"budget": np.uint64(1_000_000)},
        {"eps": np.float32(0.05), "blend": np.float64(0.25), "budget": np.int64(2_000_000)},
    ],
)
def test_numpy_scalars_are_accepted_like_python_ones(scalars: dict[str, Any]) -> None:
    """np.float32(0.1) is the float 0.1 rounded to float32 (0.10000000149...): the design equals the one for
    that Python float."""
    risk, cost = small_frame()
    args: dict[str, Any] = {"budget": 1_500_000, **scalars}
    python = {key: value.item() for key, value in args.items() if isinstance(value, np.generic)}
    a = design(risk, cost, args.pop("budget"), **args)
    b = design(risk, cost, python.pop("budget", 1_500_000), **{**args, **python})
    assert np.array_equal(a.pi, b.pi)
    assert (a.eps, a.blend, a.budget) == (b.eps, b.blend, b.budget)
    assert type(a.eps) is float and type(a.blend) is float and type(a.budget) is int


def test_numpy_scalars_are_accepted_for_seeds_and_quotas() -> None:
    from chalicelib.domain.sampling import draw

    risk, cost = small_frame(3_000)
    strata = np.zeros(3_000, dtype=np.int64)
    strata[:100] = 7
    budget = int(cost.sum() // 30)
    d = design(risk, cost, budget, strata=strata, quotas={7: 20})
    dn = design(risk, cost, budget, strata=strata, quotas={np.int64(7): np.int32(20)})
    assert np.array_equal(d.pi, dn.pi)
    for seed in (np.int64(11), np.uint32(11), np.int8(11)):
        assert np.array_equal(poisson_draw(d.pi, seed), poisson_draw(d.pi, 11))
        assert np.array_equal(draw(d, seed).exploration, draw(d, 11).exploration)


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"budget": 0}, "budget", "budget must be a positive integer of minor units"),
        ({"budget": -5}, "budget", "budget must be a positive integer of minor units"),
        ({"budget": np.int64(-1)}, "budget", "budget must be a positive integer of minor units"),
        ({"budget": 150.5}, "budget", "budget must be a positive integer of minor units"),
        ({"budget": 300.0}, "budget", "budget must be a positive integer of minor units"),
        ({"budget": True}, "budget", "budget must be a positive integer of minor units"),
        ({"budget": "300"}, "budget", "budget must be a positive integer of minor units"),
        ({"budget": 99}, "budget", "below the cheapest order"),
        ({"eps": 0.0}, "eps", "0 < eps <= 1"),
        ({"eps": np.float32(1.5)}, "eps", "0 < eps <= 1"),
        ({"eps": True}, "eps", "0 < eps <= 1"),
        ({"eps": "0.1"}, "eps", "0 < eps <= 1"),
        ({"blend": np.float64(-0.1)}, "blend", "0 <= blend <= 1"),
        ({"blend": None}, "blend", "0 <= blend <= 1"),
        ({"cost": [100.5, 200, 300]}, "cost", "cost must be integer minor units"),
        ({"cost": [100.0, 200.0, 300.0]}, "cost", "cost must be integer minor units"),
        ({"cost": np.array([100, 200, 300], dtype=np.float32)}, "cost", "cost must be integer minor units"),
        ({"cost": [True, True, True]}, "cost", "cost must be integer minor units"),
        ({"cost": [100, 0, 300]}, "cost", "cost must be positive"),
        ({"cost": [100, 10**13, 300]}, "cost", "cost must be at most"),
        ({"risk": [0.1, float("nan"), 0.3]}, "risk", "risk must be finite"),
        ({"risk": [0.1, 1.0, 0.3]}, "risk", "risk must lie strictly between 0 and 1"),
        ({"risk": [[0.1, 0.2, 0.3]]}, "risk", "risk must be a 1-D array"),
        ({"cost": [100, 200]}, "frame", "risk has 3 units but cost has 2"),
        ({"risk": [], "cost": []}, "frame", "frame is empty"),
        ({"strata": [0, 1]}, "strata", "one code per unit"),
        ({"quotas": {0: 1}}, "quotas", "quotas need strata"),
    ],
)
def test_errors_name_the_input_and_the_rule(kwargs: dict[str, Any], field: str, rule: str) -> None:
    args: dict[str, Any] = {"risk": RISK, "cost": COST, "budget": 300, **kwargs}
    with pytest.raises(SamplingError) as err:
        design(args.pop("risk"), args.pop("cost"), args.pop("budget"), **args)
    assert err.value.field == field
    assert str(err.value).startswith(field)
    assert rule in str(err.value)


@pytest.mark.parametrize(
    ("pi", "seed", "field", "rule"),
    [
        ([0.5, 0.5], -1, "seed", "seed must be a non-negative integer"),
        ([0.5, 0.5], 1.0, "seed", "seed must be a non-negative integer"),
        ([0.5, 0.5], True, "seed", "seed must be a non-negative integer"),
        ([0.5, 0.0], 1, "pi", "must be finite and in (0, 1]"),
        ([0.5, float("inf")], 1, "pi", "must be finite and in (0, 1]"),
        ([[0.5]], 1, "pi", "pi must be a 1-D array"),
    ],
)
def test_draw_errors_name_the_input_and_the_rule(pi: Any, seed: Any, field: str, rule: str) -> None:
    with pytest.raises(SamplingError) as err:
        poisson_draw(np.array(pi), seed)
    assert err.value.field == field
    assert str(err.value).startswith(field)
    assert rule in str(err.value)


# ------------------------------------------------------------------------------------------------- strata


def test_stratified_allocation_is_cost_aware_neyman() -> None:
    rng = np.random.default_rng(5)
    sizes = {0: 3_000, 1: 1_000, 2: 2_000}
    strata = np.concatenate([np.full(n, h) for h, n in sizes.items()])
    base_risk = {0: 0.01, 1: 0.10, 2: 0.03}
    base_cost = {0: 2_000, 1: 8_000, 2: 4_000}
    risk = np.concatenate([rng.uniform(0.5, 1.5, n) * base_risk[h] for h, n in sizes.items()])
    cost = np.concatenate([rng.integers(base_cost[h] // 2, base_cost[h] * 3 // 2, n) for h, n in sizes.items()])
    budget = int(cost.sum() // 40)
    d = design(risk, cost, budget, strata=strata)
    assert d.stratum_budgets is not None
    assert math.isclose(d.expected_spend, budget, rel_tol=1e-12)
    assert math.isclose(sum(d.stratum_budgets.values()), budget, rel_tol=1e-12)
    score = {}
    for h in sizes:
        m = strata == h
        pbar, cbar = float(risk[m].mean()), float(cost[m].mean())
        score[h] = m.sum() * math.sqrt(pbar * (1 - pbar)) * math.sqrt(cbar)
        spend_h = float(np.dot(cost[m], d.pi[m]))
        assert math.isclose(spend_h, d.stratum_budgets[h], rel_tol=1e-9)
        # the eps floor holds within the stratum
        assert float(d.pi[m].min()) >= 0.1 * spend_h / float(cost[m].sum()) * (1 - 1e-12)
    total_score = sum(score.values())
    for h in sizes:
        assert math.isclose(d.stratum_budgets[h], budget * score[h] / total_score, rel_tol=1e-9)
    assert d.strata is not None and np.array_equal(d.strata, strata)


def test_stratum_that_would_overspend_is_censused() -> None:
    risk = np.concatenate([np.full(10, 0.5), np.full(1_000, 0.001)])
    cost = np.full(1_010, 1_000, dtype=np.int64)
    strata = np.concatenate([np.zeros(10, dtype=np.int64), np.ones(1_000, dtype=np.int64)])
    budget = 100_000
    d = design(risk, cost, budget, strata=strata)
    assert np.all(d.pi[:10] == 1.0)
    assert math.isclose(d.expected_spend, budget, rel_tol=1e-12)


def test_quotas_raise_small_strata() -> None:
    risk, cost = small_frame(3_000)
    strata = np.zeros(3_000, dtype=np.int64)
    strata[:100] = 7  # a small category the Neyman share would starve
    budget = int(cost.sum() // 30)
    plain = design(risk, cost, budget, strata=strata)
    assert float(plain.pi[:100].sum()) < 20
    d = design(risk, cost, budget, strata=strata, quotas={7: 20})
    assert float(d.pi[:100].sum()) >= 20 - 1e-9
    assert float(d.pi[:100].sum()) <= 20 * (1 + 1e-9)
    assert math.isclose(d.expected_spend, budget, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("quotas", "why"),
    [
        ({7: 101}, "more than the stratum"),
        ({7: 100, 0: 2_900}, "costs more than the budget"),
        ({9: 1}, "unknown stratum"),
        ({"7": 1}, "a key that is not an integer code"),
        ({7: 2.5}, "a fractional quota"),
        ({7: -1}, "negative"),
    ],
)
def test_impossible_quotas_are_rejected(quotas: dict[int, int], why: str) -> None:
    risk, cost = small_frame(3_000)
    strata = np.zeros(3_000, dtype=np.int64)
    strata[:100] = 7
    with pytest.raises(SamplingError) as err:
        design(risk, cost, int(cost.sum() // 30), strata=strata, quotas=quotas)
    assert err.value.field == "quotas", why


def test_quotas_without_strata_are_rejected() -> None:
    risk, cost = small_frame(10)
    with pytest.raises(SamplingError) as err:
        design(risk, cost, int(cost.sum() // 2), quotas={0: 1})
    assert err.value.field == "quotas"


# ------------------------------------------------------------------------------------------------- bad input

RISK = [0.1, 0.2, 0.3]
COST = [100, 200, 300]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"risk": [0.1, float("nan"), 0.3]}, "risk"),
        ({"risk": [0.1, float("inf"), 0.3]}, "risk"),
        ({"risk": [0.1, -0.2, 0.3]}, "risk"),
        ({"risk": [0.1, 0.0, 0.3]}, "risk"),
        ({"risk": [0.1, 1.0, 0.3]}, "risk"),
        ({"risk": ["a", "b", "c"]}, "risk"),
        ({"cost": [100, -5, 300]}, "cost"),
        ({"cost": [100, 0, 300]}, "cost"),
        ({"cost": [100.0, float("nan"), 300.0]}, "cost"),
        ({"cost": [100.0, float("inf"), 300.0]}, "cost"),
        ({"risk": [], "cost": []}, "frame"),
        ({"cost": [100, 200]}, "frame"),
        ({"budget": 99}, "budget"),
        ({"budget": 150.5}, "budget"),
        ({"eps": 0.0}, "eps"),
        ({"eps": 1.5}, "eps"),
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"blend": 1.1}, "blend"),
        ({"blend": -0.1}, "blend"),
        ({"strata": [0, 1]}, "strata"),
        ({"strata": [0.5, 1.0, 2.0]}, "strata"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"risk": RISK, "cost": COST, "budget": 300, **kwargs}
    with pytest.raises(SamplingError) as err:
        design(args.pop("risk"), args.pop("cost"), args.pop("budget"), **args)
    assert err.value.field == field
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, InvalidInput)
    assert err.value.details == {"field": field}


def test_duplicate_seller_ids_are_rejected() -> None:
    check_unique_ids(["s1", "s2", "s3"])
    with pytest.raises(SamplingError) as err:
        check_unique_ids(["s1", "s2", "s1"])
    assert err.value.field == "seller_id"
    assert "s1" in str(err.value)


@pytest.mark.parametrize(
    ("pi", "seed", "field"),
    [
        ([0.5, 0.0], 1, "pi"),
        ([0.5, 1.2], 1, "pi"),
        ([0.5, float("nan")], 1, "pi"),
        ([0.5, 0.5], -1, "seed"),
        ([0.5, 0.5], 1.5, "seed"),
    ],
)
def test_bad_draw_input(pi: list[float], seed: Any, field: str) -> None:
    with pytest.raises(SamplingError) as err:
        poisson_draw(np.array(pi), seed)
    assert err.value.field == field


# ------------------------------------------------------------------------------------------------- draw


def reference_uniforms(n: int, seed: int, bits: int = 16) -> tuple[np.ndarray, Callable[[int], Fraction]]:
    """The draw's definition, written out plainly: unit i's uniform is ``U_i = (k_i + V_i) / 2**bits`` with
    ``k_i`` the i-th of one call to ``default_rng(seed).integers(0, 2**bits, n)`` and ``V_i`` the first 53-bit
    double of numpy's Philox keyed by the seed's refinement stream at counter i. Returned as ``k`` and a function
    giving ``V_i`` as an exact fraction."""
    k = np.random.default_rng(seed).integers(0, 2**bits, n, dtype=np.uint16 if bits == 16 else np.uint8)
    key = np.random.SeedSequence(seed, spawn_key=(sampling._REFINE_STREAM,)).generate_state(2, np.uint64)

    def v(i: int) -> Fraction:
        return Fraction(int(np.random.Philox(key=key, counter=i).random_raw()) >> 11, 2**53)

    return k, v


def reference_below(p: np.ndarray, k: np.ndarray, v: Callable[[int], Fraction], bits: int = 16) -> list[int]:
    """Units whose exact uniform ``(k_i + V_i) / 2**bits`` is below ``p_i`` (exact rational arithmetic)."""
    out = []
    for i in range(p.shape[0]):
        threshold = Fraction(float(p[i])) * 2**bits
        ki = int(k[i])
        if ki + 1 <= threshold or (ki < threshold and ki + v(i) < threshold):
            out.append(i)
    return out


def test_draw_is_seeded_sorted_and_matches_the_definition() -> None:
    risk, cost = small_frame(5_000)
    d = design(risk, cost, int(cost.sum() // 10))
    a = poisson_draw(d.pi, 42)
    b = poisson_draw(d.pi, 42)
    assert a.dtype == np.int64
    assert np.array_equal(a, b)
    assert np.all(np.diff(a) > 0)
    k, v = reference_uniforms(5_000, 42)
    assert a.tolist() == reference_below(d.pi, k, v)
    assert not np.array_equal(a, poisson_draw(d.pi, 43))


@pytest.mark.parametrize("bits", [16, 8])
def test_draw_matches_the_exact_definition_where_the_first_stage_ties(
    bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probabilities on and next to the first stage's grid, and far below it: every tie ``k_i ==
    floor(pi_i 2^b)`` is decided by ``V_i`` exactly as the definition says (8 bits make ties frequent)."""
    monkeypatch.setattr(sampling, "_STAGE_BITS", bits)
    grid = 2.0**-bits
    n = 4_000
    rng = np.random.default_rng(5)
    pi = rng.choice(
        np.array([grid, 3 * grid, 3 * grid * (1 + 1e-15), 5 * grid * (1 - 1e-15), 1e-9, 0.5, 1.0, 1e-300]), n
    )
    near = rng.random(n) < 0.3
    pi[near] = rng.uniform(grid / 7, 4 * grid, int(near.sum()))
    ties = 0
    for seed in (0, 1, 2):
        k, v = reference_uniforms(n, seed, bits)
        assert poisson_draw(pi, seed).tolist() == reference_below(pi, k, v, bits)
        scaled = pi * 2**bits
        ties += int(np.count_nonzero((k < scaled) & (scaled < k.astype(np.float64) + 1)))
    if bits == 8:
        assert ties >= 20  # the refinement really decided units here (expected about 40)


def test_draw_marks_exploration_units_by_the_exact_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """``draw`` flags unit i iff its exact uniform is below ``q_i``, using the selected units' first-stage integers
    and the same ``V_i``: checked against the plain definition, with an 8-bit first stage and a tiny ``eps`` so that
    many ``q_i`` fall inside a first-stage cell (the ties), stratified and not."""
    from chalicelib.domain.sampling import draw

    monkeypatch.setattr(sampling, "_STAGE_BITS", 8)
    rng = np.random.default_rng(8)
    n = 3_000
    risk = rng.uniform(0.001, 0.3, n)
    cost = rng.integers(1_000, 20_000, n)
    for codes in (None, rng.integers(0, 3, n)):
        d = design(risk, cost, int(cost.sum() * 0.3), eps=0.01, strata=codes)
        q = d.exploration_pi()
        for seed in (3, 4):
            k, v = reference_uniforms(n, seed, 8)
            dr = draw(d, seed)
            assert dr.index.tolist() == reference_below(d.pi, k, v, 8)
            assert np.array_equal(dr.index, poisson_draw(d.pi, seed))
            expected = set(reference_below(q, k, v, 8))
            assert [int(i) in expected for i in dr.index] == dr.exploration.tolist()
            assert expected <= set(dr.index.tolist())
            assert 0 < int(dr.exploration.sum()) < dr.index.shape[0]


def test_chunked_draw_equals_one_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    pi = np.random.default_rng(1).uniform(0.01, 0.5, 10_007)
    whole = poisson_draw(pi, 9)
    monkeypatch.setattr(sampling, "_DRAW_CHUNK", 1_000)
    assert np.array_equal(poisson_draw(pi, 9), whole)


def test_chunked_design_equals_one_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The design's chunked passes give the same probabilities whatever the chunk (only summation order moves)."""
    risk, cost = small_frame(10_007)
    risk[:5] = 0.95  # some units cap
    cost[:5] = 50
    strata = np.arange(10_007) % 3
    for kwargs in ({}, {"blend": 0.0}, {"blend": 1.0}, {"strata": strata}):
        whole = design(risk, cost, int(cost.sum() // 7), **kwargs)
        with monkeypatch.context() as m:
            m.setattr(sampling, "_CHUNK", 999)
            parts = design(risk, cost, int(cost.sum() // 7), **kwargs)
        assert np.allclose(parts.pi, whole.pi, rtol=1e-13, atol=0)
        assert math.isclose(parts.expected_spend, whole.expected_spend, rel_tol=1e-13)
        assert math.isclose(parts.expected_size, whole.expected_size, rel_tol=1e-13)


def test_draw_is_exact_far_below_the_first_stage_resolution() -> None:
    """pi = 1e-9 on 2**20 units: about 16 units per seed tie on the first stage (k_i = 0), and a first stage alone
    would select them all (P = 2**-16, 65,536 times too likely); exactly, each tie is selected w.p. 1e-9 * 2**16,
    so over 10 seeds the expected count is 0.01 (P(any) < 1%). A float32 uniform (resolution 2**-24) would have
    selected 0.06 units per seed where 0.001 are due."""
    n = 1 << 20
    pi = np.full(n, 1e-9)
    ties = selected = 0
    for seed in range(10):
        ties += int(np.count_nonzero(np.random.default_rng(seed).integers(0, 2**16, n, dtype=np.uint16) == 0))
        selected += poisson_draw(pi, seed).shape[0]
    assert ties >= 100  # the first stage really was undecided this often (expected 160, sd 13)
    assert selected == 0


def test_draw_probabilities_are_exact_by_monte_carlo(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an 8-bit first stage (grid 1/256) the selection rate is pi, not the grid's rounding of it.

    200,000 units x 20 seeds per group: the count's Monte Carlo standard error is sqrt(N pi (1 - pi)); we allow
    4 of them. A first stage alone would give rate ceil(256 pi) / 256: 0.0039 for pi = 0.001 and 0.0078 for
    pi = 0.005, dozens of standard errors away."""
    monkeypatch.setattr(sampling, "_STAGE_BITS", 8)
    n, seeds = 200_000, 20
    pi = np.where(np.arange(n) % 2 == 0, 0.001, 0.005)
    counts = np.zeros(2)
    for seed in range(seeds):
        idx = poisson_draw(pi, seed)
        counts += np.bincount(idx % 2, minlength=2)
    for group, p in ((0, 0.001), (1, 0.005)):
        trials = n // 2 * seeds
        se = math.sqrt(trials * p * (1 - p))
        assert abs(counts[group] - trials * p) < 4 * se, (group, counts[group], trials * p)
        naive = math.ceil(256 * p) / 256
        assert abs(counts[group] - trials * naive) > 20 * se


def test_draw_accepts_float32_and_list_probabilities() -> None:
    pi32 = np.random.default_rng(4).uniform(1e-7, 0.3, 20_011).astype(np.float32)
    expected = poisson_draw(pi32.astype(np.float64), 17)
    assert np.array_equal(poisson_draw(pi32, 17), expected)
    assert np.array_equal(poisson_draw(pi32.astype(np.float64).tolist(), 17), expected)


def test_draw_of_certain_units_and_empty_frame() -> None:
    assert np.array_equal(poisson_draw(np.ones(7), 0), np.arange(7))
    assert poisson_draw(np.empty(0), 0).shape == (0,)


# ------------------------------------------------------------------------------------------------- properties


@st.composite
def frames(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, float, float]:
    n = draw(st.integers(1, 60))
    risk = np.array(draw(st.lists(st.floats(1e-4, 1 - 1e-4), min_size=n, max_size=n)))
    cost = np.array(draw(st.lists(st.integers(1, 1_000_000), min_size=n, max_size=n)), dtype=np.int64)
    total = int(cost.sum())
    budget = draw(st.integers(int(cost.min()), max(int(cost.min()), total + total // 5)))
    eps = draw(st.floats(1e-3, 1.0))
    blend = draw(st.floats(0.0, 1.0))
    return risk, cost, budget, eps, blend


@settings(max_examples=300, deadline=None)
@given(frames())
def test_design_properties(frame: tuple[np.ndarray, np.ndarray, int, float, float]) -> None:
    """Guarantees: 0 < pi <= 1; pi_i >= eps * min(1, B / C); sum(c * pi) == B when B < C, else a census."""
    risk, cost, budget, eps, blend = frame
    d = design(risk, cost, budget, eps=eps, blend=blend)
    total = float(cost.sum())
    assert np.all(d.pi > 0) and np.all(d.pi <= 1.0)
    floor = eps * min(1.0, budget / total)
    assert float(d.pi.min()) >= floor * (1 - 1e-12)
    if budget < total:
        assert math.isclose(float(np.dot(cost.astype(float), d.pi)), budget, rel_tol=1e-9)
        assert math.isclose(d.expected_spend, budget, rel_tol=1e-9)
    else:
        assert np.all(d.pi == 1.0)
        assert d.expected_spend == total
    assert math.isclose(d.expected_size, float(d.pi.sum()), rel_tol=1e-12)


@settings(max_examples=100, deadline=None)
@given(frames(), st.lists(st.integers(0, 3), min_size=60, max_size=60))
def test_stratified_design_properties(
    frame: tuple[np.ndarray, np.ndarray, int, float, float], codes: list[int]
) -> None:
    risk, cost, budget, eps, blend = frame
    strata = np.array(codes[: risk.shape[0]], dtype=np.int64)
    d = design(risk, cost, budget, eps=eps, blend=blend, strata=strata)
    total = float(cost.sum())
    assert np.all(d.pi > 0) and np.all(d.pi <= 1.0)
    target = min(float(budget), total)
    assert math.isclose(float(np.dot(cost.astype(float), d.pi)), target, rel_tol=1e-9)
    assert d.stratum_budgets is not None
    for h, b_h in d.stratum_budgets.items():
        m = strata == h
        c_h = float(cost[m].sum())
        assert b_h <= c_h * (1 + 1e-12)
        assert float(d.pi[m].min()) >= eps * min(1.0, b_h / c_h) * (1 - 1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=200), st.integers(0, 2**32))
def test_draw_properties(pi: list[float], seed: int) -> None:
    arr = np.array(pi)
    idx = poisson_draw(arr, seed)
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)
    assert idx.size == 0 or (idx[0] >= 0 and idx[-1] < arr.shape[0])
    assert set(np.flatnonzero(arr == 1.0)) <= set(idx.tolist())


def test_draw_marks_exploration_units_with_their_known_probability() -> None:
    """``draw`` selects exactly what ``poisson_draw`` selects, and its exploration units are a Poisson sample with
    probability ``eps * B / C``: over 40 seeds the count stays within 4 standard errors of its expectation."""
    from chalicelib.domain.sampling import draw

    rng = np.random.default_rng(11)
    n = 50_000
    risk = rng.uniform(0.001, 0.3, n)
    cost = rng.integers(1_000, 20_000, n)
    strata = rng.integers(0, 3, n)
    for codes in (None, strata):
        d = design(risk, cost, int(cost.sum() * 0.05), strata=codes)
        q = d.exploration_pi()
        assert np.all(q <= d.pi)
        expected = float(q.sum())
        counts = []
        for seed in range(40):
            dr = draw(d, seed)
            assert np.array_equal(dr.index, poisson_draw(d.pi, seed))
            counts.append(int(dr.exploration.sum()))
        mean = float(np.mean(counts))
        se = math.sqrt(expected / 40)
        assert abs(mean - expected) < 4 * se, (mean, expected)


def test_benchmark_prints_one_json_line_with_the_ratio() -> None:
    """``benchmarks/sampling.py`` keeps its one-line JSON contract (a tiny frame here; no timing is asserted)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    args = ["--sellers", "20000", "--repeats", "1", "--baseline-repeats", "1"]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "sampling.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert set(row) == {
        "sellers",
        "expected_sample",
        "seconds",
        "baseline_seconds",
        "ratio",
        "peak_mb",
        "input_mb",
        "load",
        "cpu_seconds",
        "baseline_cpu_seconds",
        "cpu_ratio",
    }
    assert row["sellers"] == 20_000
    # ratio = baseline / seconds before rounding; both times are rounded to 1e-4 s and the ratio to 0.01
    lo = max(row["baseline_seconds"] - 5e-5, 0.0) / (row["seconds"] + 5e-5) - 0.005
    hi = (row["baseline_seconds"] + 5e-5) / max(row["seconds"] - 5e-5, 1e-9) + 0.005
    assert row["ratio"] > 0 and lo <= row["ratio"] <= hi
