"""Tests for the seller risk model and the Beta-Binomial learning step."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chalicelib.domain.risk import (
    DEFAULT_INTERCEPT,
    FEATURE_NAMES,
    RISK_CEIL,
    RISK_FLOOR,
    CategoryPrior,
    RiskModel,
    SellerSignals,
    combine,
    update_priors,
)

unit = st.none() | st.floats(0.0, 1.0)
count = st.none() | st.integers(0, 10_000)

signals_strategy = st.builds(
    SellerSignals,
    identity_verified=st.none() | st.booleans(),
    credibility=unit,
    policy_compliance=unit,
    penalty_count=count,
    positive_behaviour=unit,
    collaboration=unit,
    complaint_rate=unit,
    refund_rate=unit,
    past_testbuys=st.none(),
    past_counterfeits=st.none(),
    price_anomaly=st.none() | st.floats(-1e6, 1e6),
    account_age_days=count,
    linked_accounts=count,
)

weights_strategy = st.dictionaries(st.sampled_from(FEATURE_NAMES), st.floats(-50, 50), max_size=len(FEATURE_NAMES))


@settings(max_examples=300, deadline=None)
@given(signals_strategy, weights_strategy, st.floats(-30, 30))
def test_score_is_always_strictly_inside_0_1(signals: SellerSignals, weights: dict[str, float], b0: float) -> None:
    model = RiskModel(weights=weights, missing_weights=weights, intercept=b0)
    s = model.score(signals)
    assert 0.0 < RISK_FLOOR <= s <= RISK_CEIL < 1.0


@settings(max_examples=200, deadline=None)
@given(signals_strategy, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_score_is_monotone_in_complaint_rate(signals: SellerSignals, a: float, b: float) -> None:
    model = RiskModel()
    lo, hi = sorted((a, b))
    s_lo = model.score(signals.model_copy(update={"complaint_rate": lo}))
    s_hi = model.score(signals.model_copy(update={"complaint_rate": hi}))
    assert s_hi >= s_lo


def test_score_moves_in_the_documented_directions() -> None:
    model = RiskModel()
    base = SellerSignals(
        identity_verified=True,
        credibility=0.7,
        policy_compliance=0.8,
        penalty_count=0,
        positive_behaviour=0.6,
        collaboration=0.6,
        complaint_rate=0.02,
        refund_rate=0.03,
        price_anomaly=1.0,
        account_age_days=365,
        linked_accounts=0,
    )
    s0 = model.score(base)
    worse = {
        "identity_verified": False,
        "credibility": 0.2,
        "penalty_count": 5,
        "complaint_rate": 0.2,
        "refund_rate": 0.3,
        "price_anomaly": -4.0,
        "account_age_days": 3,
        "linked_accounts": 6,
    }
    for field, value in worse.items():
        assert model.score(base.model_copy(update={field: value})) > s0, field
    assert model.score(base.model_copy(update={"credibility": 1.0})) < s0


def test_missing_values_are_explicit_not_zero() -> None:
    model = RiskModel()
    known = SellerSignals(complaint_rate=0.02)  # at the reference centre: contributes 0
    unknown = SellerSignals(complaint_rate=None)
    c_known = model.contributions(known)["complaint_rate"]
    c_unknown = model.contributions(unknown)["complaint_rate"]
    assert c_known == 0.0
    assert c_unknown == model.missing_weight("complaint_rate") > 0
    # a missing rate is *not* read as a zero rate (which would look like a very good seller)
    zero = model.contributions(SellerSignals(complaint_rate=0.0))["complaint_rate"]
    assert zero < 0 < c_unknown
    # the missing weight is configurable, including to neutral
    neutral = RiskModel(missing_weights={"complaint_rate": 0.0})
    assert neutral.contributions(unknown)["complaint_rate"] == 0.0


def test_all_missing_seller_scores_the_intercept_plus_missing_weights() -> None:
    model = RiskModel()
    eta = DEFAULT_INTERCEPT + sum(model.missing_weight(f) for f in FEATURE_NAMES)
    assert math.isclose(model.score(SellerSignals()), 1 / (1 + math.exp(-eta)), rel_tol=1e-12)


def test_model_is_versioned_and_configurable() -> None:
    model = RiskModel(version="2025-06", weights={"complaint_rate": 2.0})
    assert model.version == "2025-06"
    assert model.weight("complaint_rate") == 2.0
    assert model.weight("refund_rate") == RiskModel().weight("refund_rate")
    with pytest.raises(ValidationError):
        RiskModel(weights={"shoe_size": 1.0})
    with pytest.raises(ValidationError):
        RiskModel(weights={"complaint_rate": float("nan")})


def test_signals_are_validated() -> None:
    with pytest.raises(ValidationError):
        SellerSignals(complaint_rate=1.5)
    with pytest.raises(ValidationError):
        SellerSignals(penalty_count=-1)
    with pytest.raises(ValidationError):
        SellerSignals(past_testbuys=2, past_counterfeits=3)
    with pytest.raises(ValidationError):
        SellerSignals(price_anomaly=float("inf"))


def test_score_many_matches_score() -> None:
    model = RiskModel()
    sellers = [SellerSignals(complaint_rate=r / 100) for r in range(10)] + [SellerSignals()]
    scores = model.score_many(sellers)
    assert scores.dtype == np.float64 and scores.shape == (11,)
    assert [model.score(s) for s in sellers] == scores.tolist()
    assert np.all(np.diff(scores[:10]) > 0)


# ------------------------------------------------------------------------------------------- learning


def test_update_priors_is_beta_binomial() -> None:
    priors = {"shoes": (1.0, 49.0)}
    outcomes = [("shoes", True)] * 3 + [("shoes", False)] * 7 + [("bags", True)]
    post = update_priors(priors, outcomes, default=(1.0, 19.0))
    assert post["shoes"] == (4.0, 56.0)
    assert post["bags"] == (2.0, 19.0)
    assert priors == {"shoes": (1.0, 49.0)}  # input untouched
    assert CategoryPrior(*post["shoes"]).mean == 4 / 60


def test_shrinkage_moves_toward_the_category_rate_with_data() -> None:
    model_score = 0.01
    prior = CategoryPrior(1.0, 49.0)  # 2%
    rng = np.random.default_rng(0)
    current = {"toys": (prior.alpha, prior.beta)}
    weights = [(combine(model_score, prior) - model_score) / (prior.mean - model_score)]
    for _ in range(5):  # five rounds in a category where 20% of conclusive buys are fakes
        current = update_priors(current, [("toys", bool(x)) for x in rng.random(200) < 0.2])
        post = CategoryPrior(*current["toys"])
        risk = combine(model_score, post)
        assert model_score < risk < post.mean  # between the model and the category
        weights.append((risk - model_score) / (post.mean - model_score))
    # the category's weight grows with its evidence, up to the documented cap (0.8)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(weights))
    assert weights[0] == pytest.approx(50 / 150)
    assert weights[-1] == pytest.approx(0.8)
    assert abs(post.mean - 0.2) < 0.03
    assert abs(risk - 0.2) < abs(combine(model_score, prior) - 0.2)
    # the model keeps some weight: within one category, a riskier model score stays riskier
    assert combine(0.05, post) > combine(0.01, post)


def test_seller_history_updates_the_risk() -> None:
    base = combine(0.05, None)
    assert base == 0.05
    caught = combine(0.05, None, past_testbuys=2, past_counterfeits=2)
    clean = combine(0.05, None, past_testbuys=10, past_counterfeits=0)
    assert caught > base > clean
    assert math.isclose(caught, (5 * 0.05 + 2) / 7)
    assert RISK_FLOOR <= combine(0.0002, None, past_testbuys=10_000) <= RISK_CEIL
    with pytest.raises(ValueError):
        combine(0.05, None, past_testbuys=1, past_counterfeits=2)
    with pytest.raises(ValueError):
        combine(1.0, None)


def test_score_with_history_uses_the_signals() -> None:
    model = RiskModel()
    s = SellerSignals(complaint_rate=0.05, past_testbuys=3, past_counterfeits=1)
    expected = combine(model.score(s), (2.0, 98.0), 3, 1)
    assert model.score_with_history(s, (2.0, 98.0)) == expected
