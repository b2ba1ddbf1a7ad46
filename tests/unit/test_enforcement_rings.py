"""Policy decision tables for issue 10: repeat offenders in and out of the window, rings of 1-4 sellers with strikes
spread across them, lead thresholds on seller and ring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.enforcement import (
    BAN_RING_RULE,
    LEAD_RING_MEMBERS,
    LEAD_RING_SALES,
    LEAD_SELLER_SALES,
    POLICY_VERSION,
    Action,
    PolicyConfig,
    RingFacts,
    SellerFacts,
    recommend,
    sales_leads,
)
from chalicelib.domain.models import VerdictKind

NOW = datetime(2026, 11, 29, tzinfo=UTC)
IN = NOW - timedelta(days=100)  # inside the default 365-day window
OUT = NOW - timedelta(days=400)  # outside it
CFG = PolicyConfig()


def ring(members: Sequence[str], strikes: Mapping[str, Sequence[datetime]], est: int = 0) -> RingFacts:
    return RingFacts("ring-1", members, strikes, ("device", "payment_account"), est)


def facts(**kw: object) -> SellerFacts:
    base: dict[str, object] = {
        "seller_id": "s1",
        "order_id": "o1",
        "verdict": VerdictKind.COUNTERFEIT,
        "decided_at": NOW,
        "evidence": ("e" * 64,),
    }
    base.update(kw)
    return SellerFacts(**base)  # type: ignore[arg-type]


def rules(f: SellerFacts, cfg: PolicyConfig = CFG) -> set[tuple[str, str]]:
    return {(r.action.value, r.rule) for r in recommend(f, cfg)}


BAN_RING = ("ban_ring", BAN_RING_RULE)
LEAD_MEMBERS = ("law_enforcement_lead", LEAD_RING_MEMBERS)
BAN_REPEAT = ("ban_seller", "repeat-offender")


@pytest.mark.parametrize(
    ("prior", "expected_ban"),
    [
        ([], False),
        ([IN], True),
        ([OUT], False),
        ([OUT, OUT], False),
        ([IN, OUT], True),
        ([NOW - timedelta(days=365)], True),
    ],
)
def test_repeat_offender_in_and_out_of_the_window(prior: list[datetime], expected_ban: bool) -> None:
    assert (BAN_REPEAT in rules(facts(prior_confirmed_at=prior))) is expected_ban


@pytest.mark.parametrize(
    ("members", "strikes", "expected"),
    [
        # a ring of one is no ring: nothing ring-level
        (["s1"], {}, set()),
        # two storefronts, only this verdict: one strike in the ring
        (["s1", "s2"], {}, set()),
        # two storefronts, the other one struck inside the window: ban the ring, and two offenders -> ring lead
        (["s1", "s2"], {"s2": [IN]}, {BAN_RING, LEAD_MEMBERS}),
        # ... outside the window: nothing
        (["s1", "s2"], {"s2": [OUT]}, set()),
        # three storefronts, strikes on two others, out of the window: nothing
        (["s1", "s2", "s3"], {"s2": [OUT], "s3": [OUT]}, set()),
        # three storefronts, one other struck in the window
        (["s1", "s2", "s3"], {"s3": [IN]}, {BAN_RING, LEAD_MEMBERS}),
        # four storefronts, strikes spread (in, out, none)
        (["s1", "s2", "s3", "s4"], {"s2": [OUT], "s3": [IN], "s4": []}, {BAN_RING, LEAD_MEMBERS}),
        # four storefronts, all others clean: only this verdict
        (["s1", "s2", "s3", "s4"], {"s2": [], "s3": [], "s4": []}, set()),
    ],
)
def test_rings_of_one_to_four_sellers(
    members: list[str], strikes: dict[str, list[datetime]], expected: set[tuple[str, str]]
) -> None:
    got = rules(facts(ring=ring(members, strikes)))
    assert {r for r in got if r in (BAN_RING, LEAD_MEMBERS)} == expected


def test_strikes_add_up_across_the_ring_against_its_own_threshold() -> None:
    cfg = PolicyConfig(ring_ban_threshold=3, ring_lead_members=3)
    two = facts(ring=ring(["s1", "s2", "s3"], {"s2": [IN]}))
    three = facts(ring=ring(["s1", "s2", "s3"], {"s2": [IN], "s3": [IN]}))
    assert BAN_RING not in rules(two, cfg) and LEAD_MEMBERS not in rules(two, cfg)
    assert {BAN_RING, LEAD_MEMBERS} <= rules(three, cfg)
    # the same seller twice in the ring counts twice for the ban (its own repeat), but is one offender for the lead
    own = facts(prior_confirmed_at=[IN], ring=ring(["s1", "s2"], {"s1": [IN]}))
    assert BAN_RING in rules(own) and LEAD_MEMBERS not in rules(own)


def test_ring_recommendations_name_the_ring_and_kinds_only() -> None:
    recs = recommend(facts(ring=ring(["s1", "s2"], {"s2": [IN]})))
    ring_level = [r for r in recs if r.ring_id]
    assert {r.action for r in ring_level} == {Action.BAN_RING, Action.LAW_ENFORCEMENT_LEAD}
    for r in ring_level:
        assert r.ring_id == "ring-1" and r.shared_fingerprint_kinds == ("device", "payment_account")
        assert r.policy_version == POLICY_VERSION
    assert all(r.ring_id is None for r in recs if r.action is Action.TAKE_DOWN_LISTING)


@pytest.mark.parametrize(
    ("seller_est", "ring_est", "in_ring", "expected"),
    [
        (0, None, False, set()),
        (CFG.lead_sales_threshold - 1, None, False, set()),
        (CFG.lead_sales_threshold, None, False, {LEAD_SELLER_SALES}),
        (0, CFG.ring_lead_sales_threshold - 1, True, set()),
        (0, CFG.ring_lead_sales_threshold, True, {LEAD_RING_SALES}),
        (CFG.lead_sales_threshold, CFG.ring_lead_sales_threshold, True, {LEAD_SELLER_SALES, LEAD_RING_SALES}),
        (0, CFG.ring_lead_sales_threshold, False, set()),  # no ring, no ring lead
    ],
)
def test_lead_thresholds_on_seller_and_ring(
    seller_est: int, ring_est: int | None, in_ring: bool, expected: set[str]
) -> None:
    assert {rule for rule, _ in sales_leads(seller_est, ring_est, in_ring, CFG)} == expected
    members = ["s1", "s2"] if in_ring else ["s1"]
    f = facts(estimated_counterfeit_sales=seller_est, ring=ring(members, {}, ring_est or 0))
    leads = {r.rule for r in recommend(f) if r.action is Action.LAW_ENFORCEMENT_LEAD}
    assert leads == expected


def test_a_ring_lead_carries_the_ring_a_seller_lead_does_not() -> None:
    f = facts(
        estimated_counterfeit_sales=CFG.lead_sales_threshold,
        ring=ring(["s1", "s2"], {}, CFG.ring_lead_sales_threshold),
    )
    by_rule = {r.rule: r for r in recommend(f) if r.action is Action.LAW_ENFORCEMENT_LEAD}
    assert by_rule[LEAD_SELLER_SALES].ring_id is None
    assert by_rule[LEAD_RING_SALES].ring_id == "ring-1"


def test_nothing_ring_level_without_a_counterfeit() -> None:
    for verdict in (VerdictKind.AUTHENTIC, VerdictKind.INCONCLUSIVE, VerdictKind.NOT_AS_DESCRIBED):
        f = facts(verdict=verdict, ring=ring(["s1", "s2"], {"s2": [IN]}, 10**12), estimated_counterfeit_sales=10**12)
        assert not [r for r in recommend(f) if r.ring_id or r.action is Action.LAW_ENFORCEMENT_LEAD]


def test_declared_links_without_ring_facts_keep_the_old_rules() -> None:
    got = rules(facts(linked_sellers_confirmed=["s2", "s3"]))
    assert ("ban_seller", "linked-storefront") in got and ("law_enforcement_lead", "linked-ring") in got
    # with ring facts the ring rules take over (the declared links are part of the ring)
    got = rules(facts(linked_sellers_confirmed=["s2"], ring=ring(["s1", "s2"], {"s2": [IN]})))
    assert ("ban_seller", "linked-storefront") not in got and BAN_RING in got
