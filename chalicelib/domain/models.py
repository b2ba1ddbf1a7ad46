"""Domain models (pydantic). Every model that accepts outside input forbids unknown fields and coerces nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chalicelib.domain.money import Amount, Currency

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (use UTC, e.g. 2026-01-01T00:00:00Z)")
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_aware_utc)]


class Strict(BaseModel):
    # defer_build: validators are built on first use, not at import (the API function's cold start stays light)
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


def constraints(*rules: str) -> ConfigDict:
    """A ``Strict`` subclass's config: the cross-field rules JSON Schema cannot state, published as ``x-constraints``
    (pydantic merges it with the inherited strict config)."""
    return ConfigDict(json_schema_extra={"x-constraints": list(rules)})


class Lenient(BaseModel):
    """Internal records read back from storage: tolerate fields added by later versions."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


# ---------------------------------------------------------------------------------------------------------- programme


# A Standard execution lives at most one year. An order execution waits at most jitter + delivery + verdict, plus
# the time its retries may take (bounded by the ASL: tests/unit/test_asl.py checks the ASL against this budget).
EXECUTION_LIMIT_SECONDS = 365 * 86400
RETRY_BUDGET_SECONDS = 5 * 86400
ORDER_WAIT_LIMIT_SECONDS = EXECUTION_LIMIT_SECONDS - RETRY_BUDGET_SECONDS - 86400  # and a day to spare


class Timeouts(Strict):
    """How long the order workflow waits. Seconds locally, days in production; never hard-coded in the ASL.

    Their sum (with the retry budget) must keep an order execution well within Step Functions' one-year limit: an
    execution that outlives it ends TIMED_OUT, with no Catch run at all."""

    model_config = constraints(
        f"timeouts: delivery_seconds + verdict_seconds + max_jitter_seconds <= {ORDER_WAIT_LIMIT_SECONDS}"
    )

    delivery_seconds: StrictInt = Field(default=14 * 86400, ge=1, le=180 * 86400)
    verdict_seconds: StrictInt = Field(default=30 * 86400, ge=1, le=365 * 86400)
    round_seconds: StrictInt = Field(default=90 * 86400, ge=1, le=365 * 86400)
    max_jitter_seconds: StrictInt = Field(
        default=0, ge=0, le=7 * 86400, description="orders wait a random 0..max before placing (stealth)"
    )
    # --- appeals (issue 10 item 2): not part of the order execution's waits (an appeal runs its own execution)
    appeal_window_seconds: StrictInt = Field(
        default=30 * 86400, ge=1, le=365 * 86400, description="an appeal may be filed this long after the verdict"
    )
    appeal_decision_seconds: StrictInt = Field(
        default=30 * 86400, ge=1, le=180 * 86400, description="an appeal not decided by then expires"
    )
    # --- end appeals

    @model_validator(mode="after")
    def _fits_one_execution(self) -> Timeouts:
        waits = self.delivery_seconds + self.verdict_seconds + self.max_jitter_seconds
        if waits > ORDER_WAIT_LIMIT_SECONDS:
            raise ValueError(
                f"delivery_seconds + verdict_seconds + max_jitter_seconds = {waits} s is more than "
                f"{ORDER_WAIT_LIMIT_SECONDS} s: with the retry budget ({RETRY_BUDGET_SECONDS} s) an order execution "
                "could outlive Step Functions' one year limit; shorten delivery_seconds or verdict_seconds"
            )
        return self


# --- retest (issue 10 item 1): what an inconclusive verdict or a missed lab deadline leads to
RETEST_MODES = ("same_sample", "second_unit")
MAX_LAB_ATTEMPTS = 5


class RetestPolicy(Strict):
    """What happens when a lab's verdict is inconclusive or a lab misses its verdict deadline: the sample goes to a lab
    of the programme that has not examined it, up to ``max_lab_attempts`` labs in all (the first lab included).

    ``same_sample``: the sample itself is handed over (a custody entry from the first lab to the next).
    ``second_unit``: after an inconclusive verdict a second unit is bought from the same seller (a new order, its own
    reservation, placement, delivery and capture) and sent to a lab that has not examined the first; a missed deadline
    still hands the sample itself over (docs/decisions.md, "Re-tests and re-assignment", "A second unit")."""

    model_config = constraints(
        "timeouts: delivery_seconds + min(max_lab_attempts, len(labs)) x verdict_seconds + max_jitter_seconds "
        f"<= {ORDER_WAIT_LIMIT_SECONDS}",
        "retest.mode second_unit: timeouts.round_seconds >= min(max_lab_attempts, len(labs)) x (max_jitter_seconds "
        "+ delivery_seconds + verdict_seconds)",
    )

    mode: Literal["same_sample", "second_unit"] = Field(
        default="same_sample",
        description="after an inconclusive verdict: same_sample: the sample goes to the next lab; second_unit: a "
        "second unit is bought from the same seller and goes to the next lab",
    )
    max_lab_attempts: StrictInt = Field(
        default=2,
        ge=1,
        le=MAX_LAB_ATTEMPTS,
        description="labs that may examine one sample (every unit bought for it), the first included "
        "(1: no re-test, no re-assignment)",
    )


def lab_attempts(retest: RetestPolicy, labs: list[str]) -> int:
    """How many labs one sample may wait for at most: each of them adds one verdict wait to the execution."""
    return max(1, min(retest.max_lab_attempts, len(set(labs))))


def second_unit_round_seconds(retest: RetestPolicy, labs: list[str], timeouts: Timeouts) -> int:
    """Retest mode ``second_unit``: the longest a sample may take, its units bought one after another (at most one
    unit per lab attempt, each with its jitter, delivery and verdict waits; a re-assignment after a missed deadline
    uses up a lab attempt too, so the verdict waits of all units together are at most ``lab_attempts``)."""
    t = timeouts
    return lab_attempts(retest, labs) * (t.max_jitter_seconds + t.delivery_seconds + t.verdict_seconds)


# --- end retest


class ProgramCreate(Strict):
    model_config = constraints("period_end > period_start")

    name: str = Field(min_length=1, max_length=200)
    currency: Currency
    budget: Amount
    period_start: UtcDateTime
    period_end: UtcDateTime = Field(description="must be after period_start")
    round_size: StrictInt = Field(ge=1, le=1_000_000, description="expected test buys per round")
    exploration_share: float = Field(default=0.1, ge=1e-6, le=1.0, strict=False)
    blend: float = Field(default=0.25, ge=0.0, le=1.0, strict=False, description="1 = estimation, 0 = hunting")
    per_order_cap: Amount | None = None
    labs: list[Identifier] = Field(default_factory=lambda: ["lab-1"], min_length=1, max_length=50)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retest: RetestPolicy = Field(default_factory=RetestPolicy)

    @field_validator("period_end")
    @classmethod
    def _period(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("period_start")
        if start is not None and end <= start:
            raise ValueError("period_end must be after period_start")
        return end

    @model_validator(mode="after")
    def _attempts_fit_one_execution(self) -> ProgramCreate:
        # --- retest: every lab attempt adds one verdict wait to the order execution
        attempts = lab_attempts(self.retest, self.labs)
        t = self.timeouts
        waits = t.delivery_seconds + attempts * t.verdict_seconds + t.max_jitter_seconds
        if waits > ORDER_WAIT_LIMIT_SECONDS:
            raise ValueError(
                f"timeouts: delivery_seconds + {attempts} lab attempts x verdict_seconds + max_jitter_seconds = "
                f"{waits} s is more than {ORDER_WAIT_LIMIT_SECONDS} s: an order execution could outlive Step "
                "Functions' one year limit; shorten verdict_seconds or lower retest.max_lab_attempts"
            )
        # --- second unit: a unit bought after an inconclusive verdict runs after its parent; the round must wait
        # for the last one (every unit's jitter, delivery and verdict waits; the labs of all units count together)
        if self.retest.mode == "second_unit":
            needed = second_unit_round_seconds(self.retest, self.labs, t)
            if t.round_seconds < needed:
                raise ValueError(
                    f"timeouts.round_seconds = {t.round_seconds} s is less than {needed} s, what a sample may need "
                    f"in retest mode second_unit ({attempts} units in turn, each max_jitter_seconds + "
                    "delivery_seconds + verdict_seconds): the round would end before a second unit is examined; "
                    "raise round_seconds, or lower retest.max_lab_attempts"
                )
        return self


class Program(Lenient):
    program_id: str
    name: str
    currency: str
    budget: int
    period_start: datetime
    period_end: datetime
    round_size: int
    exploration_share: float
    blend: float
    per_order_cap: int | None = None
    labs: list[str]
    timeouts: Timeouts
    created_at: datetime
    status: str = "active"
    retest: RetestPolicy = Field(default_factory=RetestPolicy)  # retest (issue 10 item 1)


class FundRequest(Strict):
    amount: Amount
    currency: Currency
    reference: Identifier = Field(description="idempotency key of this funding, e.g. a finance ticket")


class RefundFeedIn(Strict):
    """One period of the marketplace's own refund data: all orders, and those refunded as suspect products. It gives
    the reference programme's headline metric, the marketplace-wide rate of refunds due to suspect products."""

    model_config = constraints("suspect_refunds <= orders")

    period: str = Field(pattern=r"^20[0-9]{2}-(0[1-9]|1[0-2])$", description="calendar month, YYYY-MM")
    orders: StrictInt = Field(ge=1, le=10**13)
    suspect_refunds: StrictInt = Field(ge=0, le=10**13, description="at most orders")

    @field_validator("suspect_refunds")
    @classmethod
    def _not_more_than_orders(cls, value: int, info: ValidationInfo) -> int:
        orders = info.data.get("orders")
        if orders is not None and value > orders:
            raise ValueError("suspect_refunds cannot exceed orders")
        return value


# -------------------------------------------------------------------------------------------------------- sellers


class SellerSignals(BaseModel):
    """What the platform knows about a seller; ``None`` means unknown. Rates and scores are in [0, 1]."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        defer_build=True,
        json_schema_extra={"x-constraints": ["past_counterfeits <= past_testbuys (missing: 0)"]},
    )

    identity_verified: bool | None = None
    credibility: float | None = Field(default=None, ge=0.0, le=1.0)
    policy_compliance: float | None = Field(default=None, ge=0.0, le=1.0)
    penalty_count: int | None = Field(default=None, ge=0)
    positive_behaviour: float | None = Field(default=None, ge=0.0, le=1.0)
    collaboration: float | None = Field(default=None, ge=0.0, le=1.0)
    complaint_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    refund_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    past_testbuys: int | None = Field(default=None, ge=0)
    past_counterfeits: int | None = Field(default=None, ge=0)
    price_anomaly: float | None = Field(default=None, allow_inf_nan=False)
    account_age_days: int | None = Field(default=None, ge=0)
    linked_accounts: int | None = Field(default=None, ge=0)

    @field_validator("past_counterfeits")
    @classmethod
    def _not_more_fakes_than_buys(cls, v: int | None, info: ValidationInfo) -> int | None:
        buys = info.data.get("past_testbuys") or 0  # unknown counts as none, as the risk model reads it
        if v is not None and v > buys:
            raise ValueError("past_counterfeits cannot exceed past_testbuys (a missing past_testbuys counts as 0)")
        return v


# --- rings (issue 10 item 3): seller fingerprints, hashes only (docs/decisions.md "Rings and leads")
FINGERPRINT_KINDS = ("identity_document", "payment_account", "address", "device")
MAX_FINGERPRINTS_PER_KIND = 20


def _digest_only(value: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(
            "a fingerprint must be a SHA-256 hex digest (64 lowercase hex characters) of the normalised value, "
            "never the raw value: hash it with the programme's salt before importing (docs/decisions.md)"
        )
    return value


FingerprintHash = Annotated[str, AfterValidator(_digest_only), Field(json_schema_extra={"pattern": "^[0-9a-f]{64}$"})]
FingerprintList = Annotated[list[FingerprintHash], Field(max_length=MAX_FINGERPRINTS_PER_KIND)]


class SellerFingerprints(Strict):
    """Hashes of what identifies the person behind a storefront; sellers sharing any one are in the same ring."""

    identity_document: FingerprintList = Field(default_factory=list)
    payment_account: FingerprintList = Field(default_factory=list)
    address: FingerprintList = Field(default_factory=list)
    device: FingerprintList = Field(default_factory=list)

    def pairs(self) -> list[tuple[str, str]]:
        return sorted({(k, h) for k in FINGERPRINT_KINDS for h in getattr(self, k)})


# --- end rings


class SellerIn(Strict):
    seller_id: Identifier
    category: Identifier
    expected_cost: Amount
    risk: StrictFloat | None = Field(default=None, ge=1e-6, lt=1.0, description="below one in a million is refused")
    signals: SellerSignals | None = None
    linked_sellers: list[Identifier] = Field(default_factory=list, max_length=100)
    eligible: StrictBool = True
    fingerprints: SellerFingerprints | None = None  # rings (issue 10 item 3)


MAX_IMPORT_BATCH = 500


class SellerImport(Strict):
    sellers: list[SellerIn] = Field(min_length=1, max_length=MAX_IMPORT_BATCH)


class Seller(Lenient):
    program_id: str
    seller_id: str
    category: str
    expected_cost: int
    risk: float
    linked_sellers: list[str] = Field(default_factory=list)
    eligible: bool = True


# ---------------------------------------------------------------------------------------------------------- rounds


class RoundStatus(StrEnum):
    STARTED = "started"
    SAMPLED = "sampled"
    COMPLETED = "completed"
    FAILED = "failed"


class RoundStart(Strict):
    seed: StrictInt | None = Field(default=None, ge=0, le=2**63 - 1)
    budget: Amount | None = Field(
        default=None,
        description="round budget: the round's reservations stay within it and the available balance (a larger "
        "draw is thinned at random); default round_size x mean cost",
    )


class Round(Lenient):
    program_id: str
    round_id: str
    status: RoundStatus
    seed: int
    budget: int
    started_at: datetime
    execution_name: str
    population: int = 0
    population_by_stratum: dict[str, int] = Field(default_factory=dict)
    sampled: int = 0
    settled: int = 0
    # Thinning (chalicelib.domain.nonresponse.thin): ``drawn`` units came out of the Poisson draw, ``thinned_out`` of
    # them were dropped at random before placing (never stored as orders), each drawn unit kept with probability
    # ``thinning_factor``; ``spend_limit`` = min(budget, available balance at sampling), recorded before the orders
    # so a retried sampling task thins the same way. ``sampled`` counts the kept units (the orders).
    drawn: int = 0
    thinned_out: int = 0
    thinning_factor: float = 1.0
    spend_limit: int | None = None
    completed_at: datetime | None = None
    summary: dict[str, Any] | None = None
    top_decile_threshold: float | None = Field(
        default=None, description="the frame's top-decile risk threshold (sellers at or above it are flagged)"
    )
    top_decile_flagged: int | None = Field(default=None, description="frame sellers at or above the threshold")
    # second unit (issue 10 item 1): orders bought again for inconclusive samples; the round waits for them too
    # (done when settled >= sampled + second_units), but they are not sampled units
    second_units: int = 0


# ---------------------------------------------------------------------------------------------------------- orders


class OrderStatus(StrEnum):
    """Where a test buy stands. The allowed moves between these are ``chalicelib.domain.lifecycle.TRANSITIONS``."""

    SAMPLED = "sampled"
    RESERVED = "reserved"
    PLACING = "placing"  # intent recorded: the marketplace may or may not have the order (ask it by order id)
    PLACED = "placed"
    DELIVERED = "delivered"
    AT_LAB = "at_lab"
    VERDICT = "verdict"
    CANCELLING = "cancelling"  # compensation: cancel intent recorded, the marketplace's answer not yet known
    SETTLED = "settled"
    # terminal failures
    SKIPPED_BUDGET = "skipped_budget"
    FAILED = "failed"
    DELIVERY_FAILED = "delivery_failed"
    REFUSED = "refused"
    # not terminal: compensation gave up for now; the hold is kept, an alert was raised, the sweeper retries
    NEEDS_RECONCILIATION = "needs_reconciliation"


TERMINAL_STATUSES = frozenset(
    {
        OrderStatus.SETTLED,
        OrderStatus.SKIPPED_BUDGET,
        OrderStatus.FAILED,
        OrderStatus.DELIVERY_FAILED,
        OrderStatus.REFUSED,
    }
)


class VerdictKind(StrEnum):
    AUTHENTIC = "authentic"
    COUNTERFEIT = "counterfeit"
    NOT_AS_DESCRIBED = "not_as_described"
    INCONCLUSIVE = "inconclusive"

    @property
    def conclusive(self) -> bool:
        return self is not VerdictKind.INCONCLUSIVE

    @property
    def suspect(self) -> bool:
        """Refund-worthy: counterfeit or not as described."""
        return self in (VerdictKind.COUNTERFEIT, VerdictKind.NOT_AS_DESCRIBED)


# --- evidence (issue 10 item 0): the fields a court asks of a lab verdict (docs/decisions.md "Court-grade verdicts")
COURT_FIELDS = ("method", "analyst", "accreditation", "confidence", "report_sha256")
PrintableText = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class VerdictIn(Strict):
    """A lab's verdict. A conclusive verdict (anything but inconclusive) must name the method, the analyst, the
    lab's accreditation, a confidence in [0, 1] and the SHA-256 of the lab report, which must already be uploaded
    (``POST /samples/{order_id}/evidence``); an inconclusive one may leave them out."""

    verdict: VerdictKind = Field(strict=False)
    notes: str = Field(default="", max_length=4000)
    evidence: list[Sha256Hex] = Field(default_factory=list, max_length=50)
    method: PrintableText | None = Field(
        default=None, description='examination method, e.g. "XRF" or "visual+microscopy"'
    )
    analyst: PrintableText | None = Field(default=None, description="the analyst's name or staff id")
    accreditation: PrintableText | None = Field(
        default=None, description="the lab's accreditation reference, e.g. an ISO/IEC 17025 certificate number"
    )
    confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, strict=False, allow_inf_nan=False, description="the lab's confidence, 0..1"
    )
    report_sha256: Sha256Hex | None = Field(default=None, description="SHA-256 of the uploaded lab report")

    def missing_court_fields(self) -> list[str]:
        """The court fields a conclusive verdict lacks (checked by the service, which names each in its 400)."""
        if not self.verdict.conclusive:
            return []
        return [f for f in COURT_FIELDS if getattr(self, f) is None]


class Verdict(Lenient):
    order_id: str
    lab_id: str
    verdict: VerdictKind
    notes: str = ""
    evidence: list[str] = Field(default_factory=list)
    recorded_at: datetime
    recorded_by: str
    attempt: int = Field(default=1, description="the lab attempt it answers (1: the first lab)")  # retest
    method: str | None = None
    analyst: str | None = None
    accreditation: str | None = None
    confidence: float | None = None
    report_sha256: str | None = None


# --- end evidence


Score = Annotated[StrictInt, Field(ge=1, le=5)]


class ServiceQualityIn(Strict):
    delivery_days: StrictInt = Field(ge=0, le=365)
    packaging: Score
    description_accuracy: Score
    communication: Score

    def score(self) -> float:
        """0..1; slow delivery (beyond 7 days) costs up to a quarter of the score."""
        base = (self.packaging + self.description_accuracy + self.communication - 3) / 12.0
        lateness = min(max(self.delivery_days - 7, 0) / 28.0, 1.0)
        return round(base * (1.0 - 0.25 * lateness), 4)


class DeliveryNotice(Strict):
    order_id: Identifier
    marketplace_order_id: Identifier
    status: str = Field(pattern=r"^(delivered|failed)$")
    occurred_at: UtcDateTime
    tracking_ref: str | None = Field(default=None, max_length=128)


MAX_EVIDENCE_BYTES = 700_000  # base64 inflates by 4/3: the JSON body stays under the API's 1 MB limit


class EvidenceIn(Strict):
    """One evidence file (photo, lab report), base64-encoded; stored in S3 under its SHA-256."""

    content_base64: str = Field(min_length=4, max_length=(MAX_EVIDENCE_BYTES * 4) // 3 + 4)
    media_type: str = Field(pattern=r"^[a-z]+/[a-z0-9.+-]+$", max_length=100)


class CustodyIn(Strict):
    from_party: str = Field(min_length=1, max_length=128)
    to_party: str = Field(min_length=1, max_length=128)
    location: str = Field(min_length=1, max_length=256)
    condition: str = Field(min_length=1, max_length=1000)
    evidence: list[Sha256Hex] = Field(default_factory=list, max_length=50)


class Order(Lenient):
    order_id: str
    program_id: str
    round_id: str
    seller_id: str
    category: str
    pi: float = Field(description="final inclusion probability: the design's pi times the round's thinning factor")
    design_pi: float | None = Field(default=None, description="the design's pi before thinning (None: same as pi)")
    risk: float | None = None
    # drawn through the uniform part of pi (sampling.draw), with that part's probability: measures the risk model
    exploration: bool = False
    exploration_pi: float | None = None
    stratum: str
    seed: int
    amount: int
    currency: str
    status: OrderStatus
    lab_id: str | None = None
    persona_id: str | None = None
    marketplace_order_id: str | None = None
    price: int | None = None
    delivered_at: datetime | None = None
    verdict: VerdictKind | None = None
    service_quality: float | None = None
    refunded: int = 0
    failure: str | None = None
    place_intent_at: datetime | None = None
    recommendations: list[dict[str, Any]] = Field(default_factory=list)
    # appeals (issue 10 item 2): set when an appeal overturned the verdict (``verdict`` is then the re-test's)
    original_verdict: VerdictKind | None = None
    verdict_overturned_by: str | None = None
    created_at: datetime
    updated_at: datetime
    # --- retest (issue 10 item 1): the lab attempt the sample is at (1: the first lab), every lab it was sent to
    # (in order) and when, why each re-assignment happened ("inconclusive" | "overdue"), and whether the last lab missed
    # its deadline with no lab left to ask.
    lab_attempt: int = 1
    labs_tried: list[str] = Field(default_factory=list)
    labs_assigned_at: list[datetime] = Field(default_factory=list)
    retest_reasons: list[str] = Field(default_factory=list)
    last_lab_overdue: bool = False
    # --- second unit (issue 10 item 1, retest mode second_unit): a unit bought again for an inconclusive sample.
    # ``parent_order_id``: the sampled unit (the order the round drew) this order re-tests; None for a sampled unit.
    # ``unit_number``: 1 for the sampled unit, n for the n-th unit bought for it. ``second_unit_order_id``: the next
    # unit bought after this order's inconclusive verdict. ``prior_labs``: labs that examined the earlier units (a
    # second unit never goes to them; they count toward ``retest.max_lab_attempts``).
    parent_order_id: str | None = None
    unit_number: int = 1
    second_unit_order_id: str | None = None
    prior_labs: list[str] = Field(default_factory=list)
    # --- end second unit
