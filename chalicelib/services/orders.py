"""Tasks of the ``order`` state machine and the delivery webhook.

Each task is idempotent: Step Functions may run it again after a timeout or a retry, so every task first checks
what is already durable and the ledger dedupes on (order, operation).
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, ConfigDict

from chalicelib.domain.custody import next_entry
from chalicelib.domain.enforcement import SellerFacts, recommend
from chalicelib.domain.errors import (
    InsufficientFunds,
    InvalidInput,
    InvalidState,
    NoPersonaAvailable,
    NotFound,
    OrderRefused,
)
from chalicelib.domain.events import (
    CounterfeitConfirmed,
    EnforcementActionRecommended,
    Envelope,
    EventData,
    OrderDeliveryFailed,
    OrderPlaced,
    OrderSettled,
    deterministic_event_id,
    envelope,
)
from chalicelib.domain.models import DeliveryNotice, Order, OrderStatus, VerdictKind
from chalicelib.domain.personas import rank_candidates
from chalicelib.services.deps import Deps
from chalicelib.services.programs import check_thresholds

S = OrderStatus


class OrderTaskInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str
    program_id: str
    round_id: str
    correlation_id: str
    error: dict[str, Any] | None = None


def _event(d: Deps, order: Order, data: EventData, corr: str, *key: str) -> Envelope:
    return envelope(
        data,
        event_id=deterministic_event_id(order.order_id, data.detail_type, *key),
        correlation_id=corr,
        occurred_at=d.clock.now(),
        program_id=order.program_id,
    )


def reserve_budget(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    order = d.orders.get_order(inp.order_id)
    program = d.programs.get_program(inp.program_id)
    try:
        result = d.ledger.reserve(
            program.program_id,
            order.order_id,
            order.amount,
            order.currency,
            {"round_id": order.round_id, "category": order.category, "seller_id": order.seller_id},
        )
    except InsufficientFunds:
        d.orders.update_order(
            order.order_id,
            {"status": S.SKIPPED_BUDGET, "failure": "budget exhausted", "updated_at": d.clock.now()},
            expect_status=[S.SAMPLED],
        )
        raise
    if order.status is S.SAMPLED:
        d.orders.update_order(
            order.order_id, {"status": S.RESERVED, "updated_at": d.clock.now()}, expect_status=[S.SAMPLED]
        )
    check_thresholds(d, program, result.balance, inp.correlation_id)
    return {"reserved": result.amount}


def assign_persona(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    order = d.orders.get_order(inp.order_id)
    program = d.programs.get_program(order.program_id)
    # Jitter: a random wait before placing, so a round's orders do not reach sellers as one burst.
    wait = random.Random(f"jitter|{order.order_id}").randint(0, program.timeouts.max_jitter_seconds)  # nosec B311 # reproducible jitter
    if order.persona_id:
        return {"assigned": True, "jitter_seconds": wait}
    now = d.clock.now()
    rng = random.Random(order.order_id)  # nosec B311 # reproducible ranking
    states = d.personas.states(order.program_id, order.seller_id)
    for persona_id in rank_candidates(states, now, d.persona_policy, rng):
        if d.personas.claim(order.program_id, persona_id, order.seller_id, order.order_id, now, d.persona_policy):
            d.orders.update_order(order.order_id, {"persona_id": persona_id, "updated_at": now})
            # Only the fact, never the persona: the execution history is a log too.
            return {"assigned": True, "jitter_seconds": wait}
    raise NoPersonaAvailable(f"no persona may buy from seller {order.seller_id} now")


def place_order(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    order = d.orders.get_order(inp.order_id)
    if order.marketplace_order_id is not None:
        return {"placed": True}
    if order.persona_id is None:
        raise InvalidState(f"order {order.order_id} has no persona")
    if order.status is not S.RESERVED:
        # e.g. the sweeper expired the reservation: never buy without money held for it.
        raise InvalidState(f"order {order.order_id} is {order.status.value}; only a reserved order may be placed")
    try:
        placed = d.marketplace.place_order(
            order.order_id, order.seller_id, order.persona_id, order.amount, order.currency
        )
    except OrderRefused:
        d.personas.record_refusal(order.program_id, order.persona_id, d.persona_policy.retire_after_refusals)
        d.orders.update_order(
            order.order_id,
            {"status": S.REFUSED, "failure": "seller refused the order", "updated_at": d.clock.now()},
        )
        raise
    order = d.orders.update_order(
        order.order_id,
        {
            "status": S.PLACED,
            "marketplace_order_id": placed.marketplace_order_id,
            "price": placed.price,
            "updated_at": d.clock.now(),
        },
        expect_status=[S.RESERVED],
    )
    d.events.publish(
        [
            _event(
                d,
                order,
                OrderPlaced(
                    order_id=order.order_id,
                    round_id=order.round_id,
                    seller_id=order.seller_id,
                    category=order.category,
                    amount=placed.price,
                    currency=order.currency,
                ),
                inp.correlation_id,
            )
        ]
    )
    return {"placed": True}


def _resume(d: Deps, token: str, arrival: dict[str, Any], fail_error: str) -> None:
    if arrival.get("status", "ok") in ("failed",):
        d.workflow.fail(token, fail_error, str(arrival.get("reason", arrival.get("status"))))
    else:
        d.workflow.succeed(token, arrival)


def await_point(d: Deps, order_id: str, point: str, token: str) -> dict[str, Any]:
    """Park an execution on ``point`` ('delivery' or 'verdict'); resume at once if the news already came."""
    arrival = d.orders.arm(order_id, point, token)
    if arrival is not None:
        _resume(d, token, dict(arrival), "DeliveryFailed" if point == "delivery" else "VerdictFailed")
    return {"armed": point}


def record_delivery(d: Deps, notice: DeliveryNotice) -> dict[str, Any]:
    """Delivery webhook: record the news (first one wins) and resume the waiting order execution."""
    order = d.orders.get_order(notice.order_id)
    if order.marketplace_order_id != notice.marketplace_order_id:
        raise InvalidInput(
            "marketplace_order_id does not match this order", details=[{"field": "marketplace_order_id"}]
        )
    payload = {"status": notice.status, "occurred_at": notice.occurred_at.isoformat()}
    if order.status is S.PLACED and notice.status == "delivered":
        d.orders.update_order(
            order.order_id,
            {"status": S.DELIVERED, "delivered_at": notice.occurred_at, "updated_at": d.clock.now()},
            expect_status=[S.PLACED],
        )
    token = d.orders.arrive(order.order_id, "delivery", payload)
    if token:
        _resume(d, token, payload, "DeliveryFailed")
    return {"order_id": order.order_id, "accepted": True}


def forward_to_lab(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    order = d.orders.get_order(inp.order_id)
    program = d.programs.get_program(order.program_id)
    lab_id = order.lab_id or program.labs[int(order.order_id[-8:], 16) % len(program.labs)]
    chain = d.custody.chain(order.order_id)
    now = d.clock.now()
    if not chain:
        d.custody.append(
            next_entry(
                None,
                order_id=order.order_id,
                from_party=f"seller:{order.seller_id}",
                to_party=f"lab:{lab_id}",
                at=now,
                location="drop point",
                condition="sealed parcel as delivered",
            )
        )
    if order.status in (S.PLACED, S.DELIVERED):
        d.orders.update_order(
            order.order_id,
            {
                "status": S.AT_LAB,
                "lab_id": lab_id,
                "gsi2pk": f"LABQ#{lab_id}",
                "gsi2sk": now.isoformat(),
                "updated_at": now,
            },
            expect_status=[S.PLACED, S.DELIVERED],
        )
    return {"lab_id": lab_id}


def capture_spend(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    order = d.orders.get_order(inp.order_id)
    program = d.programs.get_program(order.program_id)
    if order.price is None:
        raise InvalidState(f"order {order.order_id} has no price to capture")
    result = d.ledger.capture(order.program_id, order.order_id, order.price, order.currency)
    check_thresholds(d, program, result.balance, inp.correlation_id)
    return {"captured": result.amount}


def request_refund(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Ask the marketplace to refund a suspect item and book what comes back as recovered."""
    order = d.orders.get_order(inp.order_id)
    if order.verdict is None or not order.verdict.suspect or order.price is None:
        return {"refunded": 0}
    if order.refunded:
        return {"refunded": order.refunded}
    assert order.marketplace_order_id is not None  # nosec B101 # refund follows capture
    refunded = d.marketplace.request_refund(order.marketplace_order_id, order.price, order.verdict.value)
    if refunded > 0:
        d.ledger.recover(order.program_id, order.order_id, refunded, order.currency)
        d.orders.update_order(order.order_id, {"refunded": refunded, "updated_at": d.clock.now()})
    return {"refunded": refunded}


def enforce(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Apply the enforcement policy to what this test buy proved; store the recommendations on the order."""
    order = d.orders.get_order(inp.order_id)
    now = d.clock.now()
    verdict = d.orders.get_verdict(order.order_id)
    prior = [t for t in d.orders.confirmed_history(order.seller_id)]
    seller = d.programs.get_seller(order.program_id, order.seller_id)
    linked = [s for s in (seller.linked_sellers if seller else []) if d.orders.confirmed_history(s)]
    if order.verdict is VerdictKind.COUNTERFEIT:
        # History excludes this order: record_confirmed is idempotent on the order id, so a retry changes nothing.
        prior = [t for t in prior if t < (verdict.recorded_at if verdict else now)]
        d.orders.record_confirmed(order.seller_id, order.order_id, verdict.recorded_at if verdict else now)
    facts = SellerFacts(
        seller_id=order.seller_id,
        order_id=order.order_id,
        verdict=order.verdict,
        decided_at=verdict.recorded_at if verdict else now,
        prior_confirmed_at=prior,
        linked_sellers_confirmed=linked,
        service_quality=order.service_quality,
        evidence=tuple(verdict.evidence) if verdict else (),
    )
    recs = recommend(facts, d.enforcement_policy)
    stored = [
        {
            "action": r.action.value,
            "rule": r.rule,
            "policy_version": r.policy_version,
            "reason": r.reason,
            "evidence": list(r.evidence),
        }
        for r in recs
    ]
    d.orders.update_order(order.order_id, {"recommendations": stored, "updated_at": now})
    return {"recommendations": len(stored)}


def publish_outcome(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Publish the order's outcome events (deterministic ids, so a retry republishes the same events)."""
    order = d.orders.get_order(inp.order_id)
    recs = order.recommendations
    verdict = d.orders.get_verdict(order.order_id)
    spent = (order.price or 0) if order.status not in (S.SKIPPED_BUDGET, S.REFUSED) else 0
    events = [
        _event(
            d,
            order,
            OrderSettled(
                order_id=order.order_id,
                round_id=order.round_id,
                seller_id=order.seller_id,
                status=S.SETTLED.value,
                spent=spent - order.refunded,
                refunded=order.refunded,
                currency=order.currency,
                verdict=order.verdict.value if order.verdict else None,
            ),
            inp.correlation_id,
        )
    ]
    if order.verdict is VerdictKind.COUNTERFEIT:
        events.append(
            _event(
                d,
                order,
                CounterfeitConfirmed(
                    order_id=order.order_id,
                    round_id=order.round_id,
                    seller_id=order.seller_id,
                    category=order.category,
                    evidence=list(verdict.evidence) if verdict else [],
                ),
                inp.correlation_id,
            )
        )
    for i, r in enumerate(recs):
        events.append(
            _event(
                d,
                order,
                EnforcementActionRecommended(
                    order_id=order.order_id,
                    seller_id=order.seller_id,
                    action=r["action"],
                    rule=r["rule"],
                    policy_version=r["policy_version"],
                    reason=r["reason"],
                    evidence=r["evidence"],
                ),
                inp.correlation_id,
                str(i),
                r["action"],
                r["rule"],
            )
        )
    d.events.publish(events)
    return {"published": len(events)}


def release_budget(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Compensation: cancel at the marketplace if needed, release any reservation, record why the order stopped."""
    order = d.orders.get_order(inp.order_id)
    error = (inp.error or {}).get("Error", "")
    released = 0
    if order.marketplace_order_id is not None and order.delivered_at is None:
        d.marketplace.cancel_order(order.marketplace_order_id)
    try:
        released = d.ledger.release(order.program_id, order.order_id).amount
    except NotFound:
        released = 0  # nothing was ever reserved
    except InvalidState:
        released = 0  # already captured or released: nothing is held
    if order.status not in (S.SKIPPED_BUDGET, S.REFUSED):
        delivery_failed = error in ("States.Timeout", "DeliveryFailed")
        status = S.DELIVERY_FAILED if delivery_failed else S.FAILED
        d.orders.update_order(
            order.order_id, {"status": status, "failure": error or "failed", "updated_at": d.clock.now()}
        )
        if delivery_failed:
            d.events.publish(
                [
                    _event(
                        d,
                        order,
                        OrderDeliveryFailed(
                            order_id=order.order_id,
                            round_id=order.round_id,
                            seller_id=order.seller_id,
                            reason=error,
                        ),
                        inp.correlation_id,
                    )
                ]
            )
    return {"released": released}


def finalize(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Close the order and count it on its round; the round's last order resumes the waiting round."""
    order = d.orders.get_order(inp.order_id)
    if order.status in (S.AT_LAB, S.VERDICT, S.DELIVERED, S.PLACED):
        d.orders.update_order(
            order.order_id, {"status": S.SETTLED, "gsi2pk": None, "gsi2sk": None, "updated_at": d.clock.now()}
        )
    rnd = d.orders.finalize(order.order_id, order.program_id, order.round_id)
    if rnd.settled >= rnd.sampled:
        token = d.rounds.round_token(order.program_id, order.round_id)
        if token:
            d.workflow.succeed(token, {"settled": rnd.settled})
    return {"finalized": True}
