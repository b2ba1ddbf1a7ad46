from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.enforcement import POLICY_VERSION, Action, SellerFacts, recommend
from chalicelib.domain.models import VerdictKind

NOW = datetime(2026, 11, 29, tzinfo=UTC)
BASE = {Action.TAKE_DOWN_LISTING, Action.LOWER_CREDIT, Action.SUSPEND_MARKETING}


def facts(**kw: object) -> SellerFacts:
    defaults: dict[str, object] = {
        "seller_id": "s1",
        "order_id": "o1",
        "verdict": VerdictKind.COUNTERFEIT,
        "decided_at": NOW,
        "evidence": ("e" * 64,),
    }
    defaults.update(kw)
    return SellerFacts(**defaults)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"verdict": VerdictKind.AUTHENTIC}, set()),
        ({"verdict": VerdictKind.INCONCLUSIVE}, set()),
        ({"verdict": VerdictKind.NOT_AS_DESCRIBED}, {Action.WARNING}),
        ({}, BASE),
        ({"prior_confirmed_at": [NOW - timedelta(days=100)]}, BASE | {Action.BAN_SELLER}),
        ({"prior_confirmed_at": [NOW - timedelta(days=400)]}, BASE),
        ({"linked_sellers_confirmed": ["s2"]}, BASE | {Action.BAN_SELLER}),
        ({"linked_sellers_confirmed": ["s2", "s3"]}, BASE | {Action.BAN_SELLER, Action.LAW_ENFORCEMENT_LEAD}),
        ({"estimated_counterfeit_sales": 50_000_000}, BASE | {Action.LAW_ENFORCEMENT_LEAD}),
        ({"verdict": VerdictKind.AUTHENTIC, "service_quality": 0.2}, {Action.WARNING}),
        ({"verdict": VerdictKind.AUTHENTIC, "service_quality": 0.9}, set()),
    ],
)
def test_policy_table(kw: dict[str, object], expected: set[Action]) -> None:
    assert {r.action for r in recommend(facts(**kw))} == expected


def test_every_recommendation_names_rule_version_and_evidence() -> None:
    recs = recommend(facts(prior_confirmed_at=[NOW - timedelta(days=3)]))
    assert recs
    for r in recs:
        assert r.rule and r.policy_version == POLICY_VERSION and r.evidence == ("e" * 64,)
    assert next(r for r in recs if r.action is Action.BAN_SELLER).rule == "repeat-offender"


def test_policy_is_deterministic() -> None:
    f = facts(linked_sellers_confirmed=["b", "a"])
    assert recommend(f) == recommend(f)
