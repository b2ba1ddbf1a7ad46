"""Enforcement policy: a pure, versioned function from facts about a seller to recommended actions.

Every recommendation names its rule, the policy version and the evidence it rests on, so that an enforcement service
(or a court) can see why it was made. The policy recommends; the enforcement services decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from chalicelib.domain.models import VerdictKind

POLICY_VERSION = "2026-11-30.1"  # .1: ring facts, ring ban and ring lead (issue 10 item 3)


class Action(StrEnum):
    TAKE_DOWN_LISTING = "take_down_listing"
    LOWER_CREDIT = "lower_credit"
    SUSPEND_MARKETING = "suspend_marketing"
    BAN_SELLER = "ban_seller"
    LAW_ENFORCEMENT_LEAD = "law_enforcement_lead"
    WARNING = "warning"
    BAN_RING = "ban_ring"  # every storefront of the ring (issue 10 item 3)


@dataclass(frozen=True)
class RingFacts:
    """The seller's ring: its members (this seller included), each member's confirmed counterfeits (times; the
    current verdict is NOT in them, it is added by the policy), the kinds of fingerprint that link them, and the
    ring's estimated counterfeit sales (the sum of its members' estimates, minor units)."""

    ring_id: str
    members: Sequence[str]
    confirmed_at: Mapping[str, Sequence[datetime]]
    shared_kinds: Sequence[str] = ()
    estimated_counterfeit_sales: int = 0


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
    ring: RingFacts | None = None


@dataclass(frozen=True)
class Recommendation:
    action: Action
    rule: str
    seller_id: str
    order_id: str
    policy_version: str
    evidence: tuple[str, ...] = field(default_factory=tuple)
    reason: str = ""
    ring_id: str | None = None
    shared_fingerprint_kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyConfig:
    repeat_window: timedelta = timedelta(days=365)
    repeat_threshold: int = 2  # confirmed counterfeits within the window, this one included
    lead_sales_threshold: int = 10_000_000  # minor units of estimated counterfeit sales
    lead_ring_size: int = 2  # linked storefronts with confirmed counterfeits
    poor_service_below: float = 0.4
    # rings (issue 10 item 3): confirmed counterfeits across the ring within repeat_window (this one included)
    ring_ban_threshold: int = 2
    # ring members with a confirmed counterfeit within repeat_window (this seller included) for a ring-level lead
    ring_lead_members: int = 2
    # a ring's estimated counterfeit sales (sum of its members) for a ring-level lead; minor units
    ring_lead_sales_threshold: int = 10_000_000


LEAD_SELLER_SALES = "large-counterfeit-sales"
LEAD_RING_SALES = "large-ring-counterfeit-sales"
LEAD_RING_MEMBERS = "ring-counterfeiters"
BAN_RING_RULE = "ring-repeat-offender"


def sales_leads(
    seller_estimate: int, ring_estimate: int | None, has_ring: bool, config: PolicyConfig | None = None
) -> list[tuple[str, bool]]:
    """The sales-based lead rules that fire, as ``(rule, ring_level)``: the seller's estimate against
    ``lead_sales_threshold``, the ring's (when the seller is in one) against ``ring_lead_sales_threshold``. Used by
    :func:`recommend` and, when a sales feed arrives after the verdict, by the leads service (the same thresholds)."""
    cfg = config or PolicyConfig()
    out: list[tuple[str, bool]] = []
    if seller_estimate >= cfg.lead_sales_threshold:
        out.append((LEAD_SELLER_SALES, False))
    if has_ring and ring_estimate is not None and ring_estimate >= cfg.ring_lead_sales_threshold:
        out.append((LEAD_RING_SALES, True))
    return out


def ring_strikes(ring: RingFacts, seller_id: str, decided_at: datetime, window: timedelta) -> dict[str, int]:
    """Confirmed counterfeits per ring member within ``window`` before ``decided_at``, this verdict included."""
    start = decided_at - window
    strikes = {
        m: sum(1 for t in ring.confirmed_at.get(m, ()) if start <= t <= decided_at) for m in sorted(set(ring.members))
    }
    strikes[seller_id] = strikes.get(seller_id, 0) + 1
    return strikes


def recommend(facts: SellerFacts, config: PolicyConfig | None = None) -> list[Recommendation]:
    """Apply the policy. Pure: the same facts always give the same recommendations, in a fixed order."""
    cfg = config or PolicyConfig()
    out: list[Recommendation] = []
    ring = facts.ring if facts.ring is not None and len(set(facts.ring.members) | {facts.seller_id}) >= 2 else None

    def add(action: Action, rule: str, reason: str, *, ring_level: bool = False) -> None:
        out.append(
            Recommendation(
                action,
                rule,
                facts.seller_id,
                facts.order_id,
                POLICY_VERSION,
                tuple(facts.evidence),
                reason,
                ring.ring_id if ring is not None and ring_level else None,
                tuple(sorted(ring.shared_kinds)) if ring is not None and ring_level else (),
            )
        )

    if facts.verdict is VerdictKind.COUNTERFEIT:
        add(Action.TAKE_DOWN_LISTING, "counterfeit-confirmed", "lab confirmed a counterfeit")
        add(Action.LOWER_CREDIT, "counterfeit-confirmed", "lab confirmed a counterfeit")
        add(Action.SUSPEND_MARKETING, "counterfeit-confirmed", "lab confirmed a counterfeit")
        window_start = facts.decided_at - cfg.repeat_window
        recent = [t for t in facts.prior_confirmed_at if window_start <= t <= facts.decided_at]
        strikes = ring_strikes(ring, facts.seller_id, facts.decided_at, cfg.repeat_window) if ring else {}
        if len(recent) + 1 >= cfg.repeat_threshold:
            add(
                Action.BAN_SELLER,
                "repeat-offender",
                f"{len(recent) + 1} confirmed counterfeits within {cfg.repeat_window.days} days",
            )
        elif ring is None and facts.linked_sellers_confirmed:
            add(
                Action.BAN_SELLER,
                "linked-storefront",
                f"linked storefronts with confirmed counterfeits: {sorted(facts.linked_sellers_confirmed)}",
            )
        if ring is not None and sum(strikes.values()) >= cfg.ring_ban_threshold and len(strikes) >= 2:
            offenders = sorted(m for m, n in strikes.items() if n)
            add(
                Action.BAN_RING,
                BAN_RING_RULE,
                f"{sum(strikes.values())} confirmed counterfeits within {cfg.repeat_window.days} days across a "
                f"ring of {len(strikes)} storefronts (offenders: {offenders})",
                ring_level=True,
            )
        for rule, ring_level in sales_leads(
            facts.estimated_counterfeit_sales,
            ring.estimated_counterfeit_sales if ring else None,
            ring is not None,
            cfg,
        ):
            what = "the ring's" if ring_level else "the seller's"
            add(
                Action.LAW_ENFORCEMENT_LEAD,
                rule,
                f"{what} estimated counterfeit sales above threshold",
                ring_level=ring_level,
            )
        if ring is not None:
            offenders = [m for m, n in strikes.items() if n]
            if len(offenders) >= cfg.ring_lead_members:
                add(
                    Action.LAW_ENFORCEMENT_LEAD,
                    LEAD_RING_MEMBERS,
                    f"{len(offenders)} storefronts of one ring with confirmed counterfeits",
                    ring_level=True,
                )
        elif (
            facts.estimated_counterfeit_sales < cfg.lead_sales_threshold
            and len(facts.linked_sellers_confirmed) >= cfg.lead_ring_size
        ):
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
