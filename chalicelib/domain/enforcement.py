"""Enforcement policy: a pure, versioned function from facts about a seller to recommended actions.

Every recommendation names its rule, the policy version and the evidence it rests on, so that an enforcement service
(or a court) can see why it was made. The policy recommends; the enforcement services decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from chalicelib.domain.models import VerdictKind

POLICY_VERSION = "2026-11-29.1"


class Action(StrEnum):
    TAKE_DOWN_LISTING = "take_down_listing"
    LOWER_CREDIT = "lower_credit"
    SUSPEND_MARKETING = "suspend_marketing"
    BAN_SELLER = "ban_seller"
    LAW_ENFORCEMENT_LEAD = "law_enforcement_lead"
    WARNING = "warning"


@dataclass(frozen=True)
class SellerFacts:
    seller_id: str
    order_id: str
    verdict: VerdictKind | None
    decided_at: datetime
    prior_confirmed_at: Sequence[datetime] = ()
    linked_sellers_confirmed: Sequence[str] = ()
    estimated_counterfeit_sales: int = 0  # minor units, from the marketplace's sales feed where available
    service_quality: float | None = None
    evidence: Sequence[str] = ()


@dataclass(frozen=True)
class Recommendation:
    action: Action
    rule: str
    seller_id: str
    order_id: str
    policy_version: str
    evidence: tuple[str, ...] = field(default_factory=tuple)
    reason: str = ""


@dataclass(frozen=True)
class PolicyConfig:
    repeat_window: timedelta = timedelta(days=365)
    repeat_threshold: int = 2  # confirmed counterfeits within the window, this one included
    lead_sales_threshold: int = 10_000_000  # minor units of estimated counterfeit sales
    lead_ring_size: int = 2  # linked storefronts with confirmed counterfeits
    poor_service_below: float = 0.4


def recommend(facts: SellerFacts, config: PolicyConfig | None = None) -> list[Recommendation]:
    """Apply the policy. Pure: the same facts always give the same recommendations, in a fixed order."""
    cfg = config or PolicyConfig()
    out: list[Recommendation] = []

    def add(action: Action, rule: str, reason: str) -> None:
        out.append(
            Recommendation(action, rule, facts.seller_id, facts.order_id, POLICY_VERSION, tuple(facts.evidence), reason)
        )

    if facts.verdict is VerdictKind.COUNTERFEIT:
        add(Action.TAKE_DOWN_LISTING, "counterfeit-confirmed", "lab confirmed a counterfeit")
        add(Action.LOWER_CREDIT, "counterfeit-confirmed", "lab confirmed a counterfeit")
        add(Action.SUSPEND_MARKETING, "counterfeit-confirmed", "lab confirmed a counterfeit")
        window_start = facts.decided_at - cfg.repeat_window
        recent = [t for t in facts.prior_confirmed_at if window_start <= t <= facts.decided_at]
        if len(recent) + 1 >= cfg.repeat_threshold:
            add(
                Action.BAN_SELLER,
                "repeat-offender",
                f"{len(recent) + 1} confirmed counterfeits within {cfg.repeat_window.days} days",
            )
        elif facts.linked_sellers_confirmed:
            add(
                Action.BAN_SELLER,
                "linked-storefront",
                f"linked storefronts with confirmed counterfeits: {sorted(facts.linked_sellers_confirmed)}",
            )
        if facts.estimated_counterfeit_sales >= cfg.lead_sales_threshold:
            add(
                Action.LAW_ENFORCEMENT_LEAD,
                "large-counterfeit-sales",
                "estimated counterfeit sales above threshold",
            )
        elif len(facts.linked_sellers_confirmed) >= cfg.lead_ring_size:
            add(
                Action.LAW_ENFORCEMENT_LEAD,
                "linked-ring",
                "a ring of linked storefronts selling counterfeits",
            )
    elif facts.verdict is VerdictKind.NOT_AS_DESCRIBED:
        add(Action.WARNING, "not-as-described", "item not as described")
    if facts.service_quality is not None and facts.service_quality < cfg.poor_service_below:
        add(Action.WARNING, "poor-service-quality", f"service-quality score {facts.service_quality:.2f}")
    return out
