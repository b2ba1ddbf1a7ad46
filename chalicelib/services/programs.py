"""Programme use cases: create, fund, import the seller frame."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.errors import InvalidInput
from chalicelib.domain.events import BudgetThresholdCrossed, deterministic_event_id, envelope
from chalicelib.domain.ledger import Balance
from chalicelib.domain.models import FundRequest, Program, ProgramCreate, RefundFeedIn, Seller, SellerImport
from chalicelib.services.deps import Deps
from chalicelib.services.risk_scoring import risk_for


def create_program(d: Deps, req: ProgramCreate) -> Program:
    """Create a programme, open its ledger account (no funds yet) and its persona pool."""
    program = Program(
        program_id=d.ids.new("prg"),
        created_at=d.clock.now(),
        **req.model_dump(),
    )
    d.ledger.open_account(program.program_id, program.currency, program.per_order_cap)
    d.personas.ensure_pool(program.program_id, d.persona_pool_size)
    d.programs.put_program(program)
    return program


def fund_program(d: Deps, program_id: str, req: FundRequest) -> Balance:
    """Add funds (idempotent on ``reference``)."""
    d.programs.get_program(program_id)
    return d.ledger.fund(program_id, req.reference, req.amount, req.currency).balance


def import_sellers(
    d: Deps, program_id: str, req: SellerImport, correlation_id: str = "sellers-import"
) -> dict[str, Any]:
    """Upsert a batch of sellers into the programme's frame, scoring risk where it was not given."""
    d.programs.get_program(program_id)
    seen: set[str] = set()
    problems: list[dict[str, Any]] = []
    sellers: list[Seller] = []
    for i, s in enumerate(req.sellers):
        if s.seller_id in seen:
            problems.append({"field": f"sellers[{i}].seller_id", "message": f"duplicate seller id {s.seller_id}"})
            continue
        seen.add(s.seller_id)
        try:
            risk = risk_for(s.risk, s.signals)
        except InvalidInput as exc:
            problems.append({"field": f"sellers[{i}].signals", "message": exc.message})
            continue
        sellers.append(
            Seller(
                program_id=program_id,
                seller_id=s.seller_id,
                category=s.category,
                expected_cost=s.expected_cost,
                risk=risk,
                linked_sellers=s.linked_sellers,
                eligible=s.eligible,
            )
        )
    if problems:
        raise InvalidInput("the batch was rejected; nothing was imported", details=problems)
    d.programs.put_sellers(program_id, sellers)
    # --- rings (issue 10 item 3): index the batch's fingerprints, recompute the rings it touches
    from chalicelib.services import rings

    rings.after_import(d, program_id, req.sellers, correlation_id)  # RingDetected for each ring formed or grown
    # --- end rings
    return {"imported": len(sellers)}


def check_thresholds(d: Deps, program: Program, balance: Balance, correlation_id: str) -> list[float]:
    """Publish ``BudgetThresholdCrossed`` for each configured fraction of funds committed (reserved or spent).

    Publish first (deterministic event id per programme and threshold), mark as sent second: a crash or a failed
    publish in between means the next call publishes again (subscribers dedupe by id), never that it is lost."""
    if balance.funded <= 0:
        return []
    committed = balance.funded - balance.available
    due = [
        t
        for t in d.budget_thresholds
        if committed >= t * balance.funded and not d.ledger.threshold_marked(program.program_id, t)
    ]
    if not due:
        return []
    now = d.clock.now()
    d.events.publish(
        [
            envelope(
                BudgetThresholdCrossed(
                    threshold=t, committed=committed, funded=balance.funded, currency=program.currency
                ),
                event_id=deterministic_event_id(program.program_id, "threshold", f"{t:.4f}"),
                correlation_id=correlation_id,
                occurred_at=now,
                program_id=program.program_id,
            )
            for t in due
        ]
    )
    return [t for t in due if d.ledger.mark_threshold(program.program_id, t)]


def ingest_refund_feed(d: Deps, program_id: str, req: RefundFeedIn) -> dict[str, Any]:
    """Record one month of the marketplace's refund data (a resend replaces that month) and emit its rate."""
    d.programs.get_program(program_id)
    d.programs.put_refund_feed(program_id, req.period, req.orders, req.suspect_refunds)
    rate = req.suspect_refunds / req.orders
    d.metrics.add("MarketplaceSuspectRefundRate", rate, "None", {"ProgramId": program_id})
    d.metrics.flush()
    return {"period": req.period, "orders": req.orders, "suspect_refunds": req.suspect_refunds, "rate": rate}


def marketplace_refund_rate(d: Deps, program_id: str) -> dict[str, Any] | None:
    """Marketplace-wide rate of refunds due to suspect products, per month and overall (None without a feed)."""
    feed = sorted(d.programs.refund_feed(program_id), key=lambda f: f["period"])
    if not feed:
        return None
    orders = sum(f["orders"] for f in feed)
    suspect = sum(f["suspect_refunds"] for f in feed)
    return {
        "overall": suspect / orders,
        "by_period": [{**f, "rate": f["suspect_refunds"] / f["orders"]} for f in feed],
    }
