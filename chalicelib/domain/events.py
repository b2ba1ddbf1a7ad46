"""Integration events: one versioned envelope, past-tense names, one pydantic model per event.

The JSON Schema of each event's ``detail`` is generated from these models, committed under ``schemas/events/`` and
checked by the contract tests. Events carry no persona, address or payment data.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

EVENT_VERSION = "1"


class EventData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    detail_type: ClassVar[str]
    component: ClassVar[str]
    # the event catalogue (docs/events.md) and the schema registry's descriptions are written from these two
    sent_when: ClassVar[str]
    audience: ClassVar[str]


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    event_id: str
    event_version: str = EVENT_VERSION
    correlation_id: str
    occurred_at: datetime
    program_id: str


class OrderPlaced(EventData):
    detail_type = "OrderPlaced"
    component = "orders"
    sent_when = "the marketplace accepted a test buy (the order execution's PlaceOrder step)"
    audience = "finance (commitments), dashboards"
    order_id: str
    round_id: str
    seller_id: str
    category: str
    amount: int
    currency: str


class OrderDeliveryFailed(EventData):
    detail_type = "OrderDeliveryFailed"
    component = "orders"
    sent_when = "a placed order was cancelled or never arrived; its hold is released"
    audience = "programme managers, persona operations"
    order_id: str
    round_id: str
    seller_id: str
    reason: str


class OrderReconciliationRequired(EventData):
    """Alert: compensation could not finish (a capture or a cancellation kept failing). The reservation is kept on
    the ledger; the sweeper retries; someone should look."""

    detail_type = "OrderReconciliationRequired"
    component = "orders"
    sent_when = "compensation could not finish: a capture or cancellation kept failing and the hold is kept"
    audience = "operations on call, finance"
    order_id: str
    round_id: str
    seller_id: str
    reason: str
    held: int = Field(description="minor units still reserved for the order")
    currency: str


class OrderSettled(EventData):
    detail_type = "OrderSettled"
    component = "orders"
    sent_when = "an order's money is final: captured (with any refund) or released"
    audience = "finance, dashboards"
    order_id: str
    round_id: str
    seller_id: str
    status: str
    spent: int
    refunded: int
    currency: str
    verdict: str | None


class VerdictRecorded(EventData):
    detail_type = "VerdictRecorded"
    component = "lab"
    sent_when = "a lab posted its verdict on a sample; carries the custody anchor right after it"
    audience = "enforcement, audit (custody checkpoints)"
    order_id: str
    round_id: str
    seller_id: str
    lab_id: str
    verdict: str
    # The custody chain's anchor right after the verdict's archive entry: a checkpoint held outside the table, so a
    # chain later trimmed or rewritten (even with the order's anchor rolled back) no longer matches it.
    custody_length: int = Field(ge=1)
    custody_head: str = Field(pattern=r"^[0-9a-f]{64}$")


class ServiceQualityRecorded(EventData):
    detail_type = "ServiceQualityRecorded"
    component = "lab"
    sent_when = "a lab rated the seller's service on a delivered sample"
    audience = "seller-quality teams"
    order_id: str
    seller_id: str
    score: float


class CounterfeitConfirmed(EventData):
    detail_type = "CounterfeitConfirmed"
    component = "enforcement"
    sent_when = "the enforce step of an order whose conclusive verdict is counterfeit"
    audience = "enforcement, trust & safety"
    order_id: str
    round_id: str
    seller_id: str
    category: str
    evidence: list[str]


class EnforcementActionRecommended(EventData):
    detail_type = "EnforcementActionRecommended"
    component = "enforcement"
    sent_when = "the policy recommends an action after a verdict (one event per action; ring-level ones name the ring)"
    audience = "enforcement services (takedowns, credit, bans, leads)"
    order_id: str
    seller_id: str
    action: str
    rule: str
    policy_version: str
    reason: str
    evidence: list[str]
    # a ring-level recommendation (issue 10): the ring and the kinds of fingerprint its sellers share, never values
    ring_id: str | None = None
    shared_fingerprint_kinds: list[str] = Field(default_factory=list)


class BudgetThresholdCrossed(EventData):
    detail_type = "BudgetThresholdCrossed"
    component = "ledger"
    sent_when = "committed spend crosses 50/80/95% of the funded budget (once per threshold)"
    audience = "programme managers, finance"
    threshold: float
    committed: int
    funded: int
    currency: str


class RoundCompleted(EventData):
    detail_type = "RoundCompleted"
    component = "rounds"
    sent_when = "every order of a round has settled and the round's estimate is computed"
    audience = "programme managers, reporting"
    round_id: str
    population: int
    sampled: int
    placed: int
    conclusive: int
    counterfeit_hits: int
    hit_rate: float | None
    prevalence: float | None
    ci_low: float | None
    ci_high: float | None
    spent: int
    currency: str
    stuck: int = Field(description="orders not settled when the round was aggregated")


class RoundFailed(EventData):
    detail_type = "RoundFailed"
    component = "rounds"
    sent_when = "a round's execution failed (its orders are compensated)"
    audience = "operations on call, programme managers"
    round_id: str
    error: str


# ---------------------------------------------------------------------------- from verdict to consequence (issue 10)


class RetestRequested(EventData):
    """A sample goes to another lab: its verdict was inconclusive, its lab missed the deadline, or an appeal asks
    for a second opinion (``reason``)."""

    detail_type = "RetestRequested"
    component = "lab"
    sent_when = "a sample goes to another lab: inconclusive verdict, missed deadline or appeal"
    audience = "labs, programme managers"
    order_id: str
    round_id: str
    seller_id: str
    reason: str = Field(description="inconclusive | overdue | appeal")
    from_lab: str
    to_lab: str
    attempt: int = Field(ge=1, description="the lab attempt this re-test starts (the first lab is attempt 1)")
    second_unit: bool = Field(default=False, description="a second unit is bought for the re-test")
    second_unit_order_id: str | None = Field(
        default=None, description="the order of the unit bought for the re-test (when second_unit)"
    )


class VerdictDeadlineMissed(EventData):
    """Escalation: a lab did not give its verdict by the deadline; the sample is reassigned when another lab is left."""

    detail_type = "VerdictDeadlineMissed"
    component = "lab"
    sent_when = "a lab did not give its verdict in time (escalation); says where the sample went"
    audience = "lab management, programme managers"
    order_id: str
    round_id: str
    seller_id: str
    lab_id: str
    attempt: int = Field(ge=1)
    due_at: datetime
    reassigned_to: str | None = Field(default=None, description="None: no lab left to ask")


class AppealFiled(EventData):
    detail_type = "AppealFiled"
    component = "appeals"
    sent_when = "the marketplace or enforcement filed a seller's appeal against a verdict"
    audience = "enforcement, labs, legal"
    appeal_id: str
    order_id: str
    seller_id: str
    filed_by: str = Field(description="marketplace | enforcement")
    verdict: str = Field(description="the verdict appealed against")
    deadline: datetime


class AppealDecided(EventData):
    detail_type = "AppealDecided"
    component = "appeals"
    sent_when = "an appeal's re-test concluded (upheld or overturned) or its deadline passed (expired)"
    audience = "enforcement, legal, the marketplace"
    appeal_id: str
    order_id: str
    seller_id: str
    outcome: str = Field(description="upheld | overturned | expired")
    original_verdict: str
    retest_verdict: str | None
    retest_lab: str | None


class EnforcementActionRescinded(EventData):
    """An action recommended on a verdict later overturned: the enforcement service should undo it."""

    detail_type = "EnforcementActionRescinded"
    component = "enforcement"
    sent_when = "an appeal overturned a verdict: one event per action that verdict caused"
    audience = "enforcement services (undo the action)"
    order_id: str
    seller_id: str
    action: str
    rule: str
    policy_version: str
    appeal_id: str
    reason: str
    ring_id: str | None = None


class RingDetected(EventData):
    """Sellers linked by shared fingerprints (identity document, payment account, address, device), found when
    sellers are imported. Names the kinds shared, never the values."""

    detail_type = "RingDetected"
    component = "rings"
    sent_when = "a seller import links sellers by shared fingerprints into a new or larger ring"
    audience = "enforcement, risk analysts"
    ring_id: str
    sellers: list[str]
    shared_fingerprint_kinds: list[str]


class LeadRaised(EventData):
    detail_type = "LeadRaised"
    component = "leads"
    sent_when = "a seller's or ring's estimated counterfeit sales cross the policy's threshold"
    audience = "law-enforcement liaison, legal"
    lead_id: str
    seller_id: str | None
    ring_id: str | None
    rule: str
    estimated_counterfeit_sales: int = Field(description="minor units")
    currency: str
    package_sha256: str | None = Field(default=None, description="the evidence package's manifest hash")


class LeadUpdated(EventData):
    detail_type = "LeadUpdated"
    component = "leads"
    sent_when = "enforcement moved a lead to its next stage (submitted, case opened, arrests, conviction, closed)"
    audience = "law-enforcement liaison, reporting"
    lead_id: str
    status: str = Field(description="submitted | case_opened | arrests | conviction | closed_without_action")
    previous_status: str


ALL_EVENTS: tuple[type[EventData], ...] = (
    OrderPlaced,
    OrderDeliveryFailed,
    OrderReconciliationRequired,
    OrderSettled,
    VerdictRecorded,
    ServiceQualityRecorded,
    CounterfeitConfirmed,
    EnforcementActionRecommended,
    BudgetThresholdCrossed,
    RoundCompleted,
    RoundFailed,
    RetestRequested,
    VerdictDeadlineMissed,
    AppealFiled,
    AppealDecided,
    EnforcementActionRescinded,
    RingDetected,
    LeadRaised,
    LeadUpdated,
)


class Envelope(BaseModel):
    """What goes on the bus: ``source``, ``detail_type`` and ``detail`` = {metadata, data}."""

    model_config = ConfigDict(frozen=True)
    source: str
    detail_type: str
    detail: dict[str, Any]


def deterministic_event_id(*parts: str) -> str:
    """Event ids derived from what happened, so a retried publish carries the same id and consumers can dedupe."""
    return "evt-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def envelope(
    data: EventData, *, event_id: str, correlation_id: str, occurred_at: datetime, program_id: str
) -> Envelope:
    meta = Metadata(event_id=event_id, correlation_id=correlation_id, occurred_at=occurred_at, program_id=program_id)
    return Envelope(
        source=f"testbuy.{data.component}",
        detail_type=data.detail_type,
        detail={"metadata": meta.model_dump(mode="json"), "data": data.model_dump(mode="json")},
    )


def detail_schema(event: type[EventData]) -> dict[str, Any]:
    """JSON Schema of an event's ``detail`` (metadata + data)."""
    data_schema = event.model_json_schema()
    meta_schema = Metadata.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{event.detail_type} detail",
        "x-source": f"testbuy.{event.component}",
        "x-detail-type": event.detail_type,
        "type": "object",
        "additionalProperties": False,
        "required": ["metadata", "data"],
        "properties": {"metadata": meta_schema, "data": data_schema},
    }
