"""Response models of the API: every declared status of every route has one (``chalicelib/api/declare.py``).

The declaration checks each answer against its model before it leaves (strict JSON validation), so the committed
OpenAPI document cannot promise a shape the server does not keep. Models whose content other parts of the system
extend (an order record, a custody report, metrics) allow additional properties and say so in the document; the
properties they list are always present with the listed types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.models import Program, Round, Verdict
from chalicelib.services.custody import CustodyReport


class Out(BaseModel):
    # defer_build: validators are built when an answer is first checked, not when the API function starts
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Open(BaseModel):
    """An answer that may carry further properties besides those listed."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)


class Health(Out):
    status: str = Field(pattern="^ok$")


class BalanceOut(Out):
    """The ledger balance of a programme, in minor units of its currency. ``spent`` = captured - recovered."""

    funded: int
    available: int
    reserved: int
    captured: int
    recovered: int
    spent: int


class ProgramView(Program):
    """The programme as stored, with its ledger balance; strict like every answer."""

    model_config = Out.model_config
    status: str
    balance: BalanceOut


class Funded(Out):
    program_id: str
    balance: BalanceOut


class Imported(Out):
    imported: int = Field(ge=1)


class RefundFeedStored(Out):
    period: str
    orders: int
    suspect_refunds: int
    rate: float


class RoundView(Round):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    orders_by_status: dict[str, int]


class RoundOrder(Out):
    """One order of a round as its programme manager follows it (no persona, no price paid to whom)."""

    order_id: str
    seller_id: str
    category: str
    status: str
    amount: int = Field(description="the reservation, in minor units of currency")
    currency: str
    lab_id: str | None
    verdict: str | None
    failure: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # second unit (issue 10 item 1): set on a unit bought again for an inconclusive sample (not a sampled unit)
    parent_order_id: str | None = Field(
        default=None, description="the sampled order this purchase re-tests (retest mode second_unit)"
    )


class RoundOrders(Out):
    """A page of a round's orders, by order id; ``next_cursor`` (null on the last page) is passed back as ``cursor``."""

    program_id: str
    round_id: str
    status: str | None = Field(description="the status filter applied, null for every status")
    orders: list[RoundOrder]
    next_cursor: str | None


class RiskFigure(Out):
    """One measure of the risk model with its 95% interval; ``estimate`` is null with a ``reason`` when the
    exploration units cannot give it. ``ht``: the exactly unbiased Horvitz-Thompson version where the denominator is
    known (Brier score, top-decile precision)."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    std_error: float | None
    n: int = Field(ge=0, description="exploration units behind the figure")
    fakes: int = Field(ge=0)
    reason: str | None
    ht: float | None
    ht_std_error: float | None


class ReliabilityBin(Out):
    """Sellers whose predicted risk lies in (low, high]: mean predicted risk against the observed counterfeit rate."""

    low: float
    high: float
    n: int = Field(ge=0)
    fakes: int = Field(ge=0)
    frame_units: float = Field(ge=0.0, description="estimated frame sellers (seller-rounds) in the bin")
    mean_predicted: float | None
    observed: float | None
    ci_low: float | None
    ci_high: float | None
    reason: str | None


class RiskModel(Out):
    """The risk model measured on the exploration units (drawn through the uniform part of pi, with known
    probability): design-weighted AUC, Brier score, precision of the frame's top risk decile and a reliability table.
    See docs/decisions.md, "The risk model measured"."""

    rounds: int = Field(ge=0, description="rounds that contribute (those recording exploration units)")
    population: int = Field(ge=0, description="frame sellers summed over those rounds (seller-rounds)")
    flagged: int = Field(ge=0, description="seller-rounds in their frame's top risk decile")
    units: int = Field(ge=0, description="exploration units with a conclusive verdict")
    fakes: int = Field(ge=0)
    genuine: int = Field(ge=0)
    auc: RiskFigure
    brier: RiskFigure
    top_decile_precision: RiskFigure
    reliability: list[ReliabilityBin]
    method: str


class Metrics(Open):
    """Programme metrics (raw and design-weighted); see DESIGN.md section 5 for each figure."""

    rounds: int
    sampled: int
    counterfeit_hits: int
    hit_rate: float | None
    spent: int
    currency: str
    estimate: dict[str, Any] | None
    cost_per_hit: int | None
    lift_over_uniform: float | None
    marketplace_refund_rate: dict[str, Any] | None
    risk_model: RiskModel


class QueueItem(Out):
    order_id: str
    seller_id: str
    category: str
    status: str
    delivered_at: str | None
    attempt: int = Field(default=1, description="lab attempt: 1 the first lab, >= 2 a re-test or re-assignment")


class LabQueue(Out):
    lab_id: str
    samples: list[QueueItem]


class ServiceQualityStored(Out):
    order_id: str
    score: float = Field(ge=0.0, le=1.0)


class CustodyAppended(Out):
    """The appended entry's place and seal, and the chain's new anchor (length and head)."""

    seq: int = Field(ge=0)
    mac: str
    prev_mac: str
    key_id: str
    custody_length: int = Field(ge=1)
    custody_head: str


class EvidenceStored(Out):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)
    media_type: str


# --- evidence (issue 10 item 5)
class EvidencePackageOut(Out):
    """Where an exported evidence package is: a pre-signed GET URL, valid ``expires_in`` seconds."""

    kind: str = Field(pattern="^(sample|seller|lead)$")
    subject_id: str
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_id: str = Field(description="the KMS key (ARN) that signed the manifest")
    object_key: str = Field(description="the package's key in the evidence bucket (packages/sha256/<manifest>.zip)")
    url: str
    expires_in: int = Field(ge=1)
    files: int = Field(ge=0, description="files listed in the manifest")
    bytes: int = Field(ge=1)


class SigningKeyOut(Out):
    key_id: str
    algorithm: str
    public_key_pem: str = Field(pattern="^-----BEGIN PUBLIC KEY-----")


# --- end evidence


class SpendRow(Out):
    group: str
    funded: int
    reserved: int
    captured: int
    recovered: int
    spent: int


class SpendTotals(Out):
    funded: int
    reserved: int
    captured: int
    recovered: int
    spent: int


class SpendReport(Out):
    program_id: str
    currency: str
    group_by: str
    rows: list[SpendRow]
    totals: SpendTotals
    balance: BalanceOut
    reconciled: bool


class Drift(Out):
    funded: int
    available: int
    reserved: int
    captured: int
    recovered: int


class Reconciliation(Out):
    program_id: str
    currency: str
    stored: BalanceOut
    recomputed: BalanceOut
    drift: Drift
    journal_entries: int
    unbalanced_entries: list[str]
    invariant_holds: bool
    reconciled: bool


class DeliveryAccepted(Out):
    order_id: str
    accepted: bool
    replay: bool = Field(description="true when this webhook-id was already received: nothing was changed")


class OrderView(Open):
    """An order; ``persona_id`` is present for the admin role only."""

    order_id: str
    program_id: str
    round_id: str
    seller_id: str
    category: str
    status: str
    amount: int
    currency: str
    created_at: datetime
    updated_at: datetime


class PersonaView(Open):
    """A persona's account, drop point and payment reference (admin only)."""

    persona_id: str
    retired: bool


# ------------------------------------------------------------------------------------------------ dashboard


class DashProgram(Out):
    program_id: str
    name: str
    currency: str
    period_start: str
    period_end: str
    timeouts: dict[str, int]


class BurnPoint(Out):
    """Cumulative ledger figures after the journal lines up to ``at`` (minor units)."""

    at: str
    funded: int
    reserved: int
    captured: int
    recovered: int
    spent: int


class Forecast(Out):
    """Net spend projected to the end of the period; ``method`` says how (linear on the spend rate)."""

    method: str
    period_end: str
    rate_per_day: float | None
    projected_spent_at_end: int | None
    projected_exhausted_at: str | None = Field(description="when the funds run out at this rate, if within the period")


class EstimateRow(Out):
    """A round's (or the combined) design-weighted prevalence with its 95% interval, beside the raw hit rate."""

    label: str
    conclusive: int = Field(ge=0)
    hits: int = Field(ge=0)
    hit_rate: float | None
    prevalence: float | None
    ci_low: float | None
    ci_high: float | None
    method: str | None
    status: str | None = None
    started_at: str | None = None


class DashEstimates(Out):
    rounds: list[EstimateRow]
    combined: EstimateRow


class CategoryRow(Out):
    category: str
    orders: int = Field(ge=0)
    conclusive: int = Field(ge=0)
    hits: int = Field(ge=0)
    spent: int
    cost_per_hit: int | None


class EnforcementRow(Out):
    rule: str
    action: str
    count: int = Field(ge=1)


class RefundMonth(Out):
    period: str
    orders: int
    suspect_refunds: int
    rate: float
    change_pp: float | None = Field(description="change from the month before, percentage points")


class RefundTrend(Out):
    overall: float
    months: list[RefundMonth]
    change_pp: float = Field(description="last month's rate minus the first month's, percentage points")
    relative_change: float | None


class OverdueOrder(Out):
    order_id: str
    round_id: str
    seller_id: str
    status: str
    stage: str
    since: str
    limit_seconds: int
    overdue_seconds: int = Field(ge=0)


class DashOrders(Out):
    total: int = Field(ge=0)
    by_status: dict[str, int]
    overdue_rule_seconds: dict[str, int]
    overdue_count: int = Field(ge=0)
    overdue: list[OverdueOrder] = Field(description="the most overdue first, at most 200")


class LabTurnaround(Out):
    lab_id: str
    samples: int = Field(ge=1)
    median_hours: float
    p90_hours: float


class Dashboard(Out):
    """Every figure of the programme dashboard (docs/decisions.md, "The programme dashboard"). Money in minor units
    of ``program.currency``; ``spent`` = captured - recovered."""

    program: DashProgram
    generated_at: str
    policy_version: str
    balance: BalanceOut
    burn_down: list[BurnPoint]
    forecast: Forecast
    estimates: DashEstimates
    categories: list[CategoryRow]
    cost_per_hit: int | None
    enforcement: list[EnforcementRow]
    refund_rate: RefundTrend | None
    orders: DashOrders
    labs: list[LabTurnaround]
    reconciliation: Reconciliation


__all__ = ["CustodyReport", "Program", "Verdict"]
