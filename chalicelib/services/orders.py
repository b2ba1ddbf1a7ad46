"""Tasks of the ``order`` state machine, its compensation, and the delivery webhook.

Each task is idempotent: Step Functions may run it again after a timeout or a retry, so every task first checks
what is already durable, the ledger dedupes on (order, operation), the marketplace on the order id, and every
follow-up (resume a task token, append custody, publish an event with a deterministic id) is redone on a retry.
Status changes go through the lifecycle (``chalicelib.domain.lifecycle``) via the repository's typed intents.

Compensation (``reconcile`` -> ``cancel_order`` -> ``reconcile`` -> ``release_budget`` | ``capture_spend``, and
``needs_reconciliation`` when it cannot finish) asks the marketplace what really happened before any money moves:
a live order is cancelled then released, a delivered one is captured, and nothing delivered is ever released.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from chalicelib.domain import lifecycle
from chalicelib.domain.custody import Actor
from chalicelib.domain.enforcement import SellerFacts, recommend
from chalicelib.domain.errors import (
    DomainError,
    InsufficientFunds,
    InvalidInput,
    InvalidState,
    NoPersonaAvailable,
    NotFound,
    OrderRefused,
    TransientError,
)
from chalicelib.domain.events import (
    CounterfeitConfirmed,
    EnforcementActionRecommended,
    Envelope,
    EventData,
    OrderDeliveryFailed,
    OrderPlaced,
    OrderReconciliationRequired,
    OrderSettled,
    deterministic_event_id,
    envelope,
)
from chalicelib.domain.lifecycle import OrderEvent
from chalicelib.domain.models import DeliveryNotice, Order, OrderStatus, VerdictKind
from chalicelib.domain.personas import rank_candidates
from chalicelib.ports import MarketOrder
from chalicelib.services import custody
from chalicelib.services.deps import Deps
from chalicelib.services.programs import check_thresholds

S = OrderStatus
E = OrderEvent
TERMINAL = lifecycle.TERMINAL
# Errors after which the parcel is known not to have come: the order ends delivery_failed, not failed.
DELIVERY_ERRORS = frozenset({"States.Timeout", "DeliveryFailed"})
# Statuses whose parcel arrived: the money is spent, no path releases it.
_DELIVERED = frozenset({S.DELIVERED, S.AT_LAB, S.VERDICT})


class CancelNotConfirmed(TransientError):
    """The marketplace accepted a cancellation but still shows the order live (retried)."""


class PlacementUnsettled(TransientError):
    """The marketplace has no record of an order whose placement intent is too recent to be sure a request is not
    still on its way (retried: after ``PLACEMENT_SETTLE`` a missing order is known never to have been taken)."""


# Longer than a placement call can take (the HTTP adapter's timeout, with margin): after this, an order the
# marketplace does not know was never taken, and its money may be released.
PLACEMENT_SETTLE = timedelta(seconds=30)


class OrderTaskInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str
    program_id: str
    round_id: str
    correlation_id: str
    error: dict[str, Any] | None = None

    @property
    def error_name(self) -> str:
        return str((self.error or {}).get("Error") or "failed")


def _event(d: Deps, order: Order, data: EventData, corr: str, *key: str) -> Envelope:
    return envelope(
        data,
        event_id=deterministic_event_id(order.order_id, data.detail_type, *key),
        correlation_id=corr,
        occurred_at=d.clock.now(),
        program_id=order.program_id,
    )


def _publish(d: Deps, order: Order, data: EventData, corr: str) -> None:
    """Publish one event about ``order`` (deterministic id: a retry republishes the same event)."""
    d.events.publish([_event(d, order, data, corr)])


# ------------------------------------------------------------------------------------------------ forward path


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
        if order.status is S.SAMPLED:
            d.orders.mark_skipped_budget(order.order_id, d.clock.now())
        raise
    if order.status is S.SAMPLED:
        d.orders.mark_reserved(order.order_id, d.clock.now())
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
            d.orders.set_persona(order.order_id, persona_id, now)
            # Only the fact, never the persona: the execution history is a log too.
            return {"assigned": True, "jitter_seconds": wait}
    raise NoPersonaAvailable(f"no persona may buy from seller {order.seller_id} now")


def _publish_placed(d: Deps, order: Order, corr: str) -> None:
    _publish(
        d,
        order,
        OrderPlaced(
            order_id=order.order_id,
            round_id=order.round_id,
            seller_id=order.seller_id,
            category=order.category,
            amount=order.price or 0,
            currency=order.currency,
        ),
        corr,
    )


def place_order(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Record the intent, then buy (the order id is the marketplace's idempotency key; the reservation is the
    maximum price it may charge), then record the purchase and publish ``OrderPlaced``. A retry redoes whatever is
    missing: it never buys twice, and it publishes ``OrderPlaced`` again (same event id) if the first publish was
    lost."""
    order = d.orders.get_order(inp.order_id)
    if order.marketplace_order_id is not None and order.status in (S.PLACED, *_DELIVERED, S.SETTLED):
        _publish_placed(d, order, inp.correlation_id)
        return {"placed": True}
    persona_id = order.persona_id
    if persona_id is None:
        raise InvalidState(f"order {order.order_id} has no persona")
    if order.status is S.RESERVED:
        order = d.orders.record_place_intent(order.order_id, d.clock.now())
    if order.status is not S.PLACING:
        # e.g. the sweeper expired the reservation: never buy without money held for it.
        raise InvalidState(f"order {order.order_id} is {order.status.value}; only a reserved order may be placed")
    account = d.personas.account_ref(order.program_id, persona_id)
    try:
        placed = d.marketplace.place_order(order.order_id, order.seller_id, account, order.amount, order.currency)
    except OrderRefused:
        d.orders.mark_refused(order.order_id, d.clock.now())
        d.personas.record_refusal(order.program_id, persona_id, d.persona_policy.retire_after_refusals)
        raise
    order = d.orders.mark_placed(order.order_id, placed.marketplace_order_id, placed.price, d.clock.now())
    _publish_placed(d, order, inp.correlation_id)
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


def check_delivery(d: Deps, notice: DeliveryNotice) -> Order:
    """The order a delivery notice is about, if the notice may be applied to it (reads only): ``NotFound`` for an
    unknown order, ``InvalidInput`` when the marketplace order id is not this order's. The webhook route checks
    this before it claims the webhook id, so a refused notice leaves nothing behind."""
    order = d.orders.get_order(notice.order_id)
    if order.marketplace_order_id != notice.marketplace_order_id:
        raise InvalidInput(
            "marketplace_order_id does not match this order", details=[{"field": "marketplace_order_id"}]
        )
    return order


def record_delivery(d: Deps, notice: DeliveryNotice) -> dict[str, Any]:
    """Delivery webhook: store the news (the first arrival wins), apply the FIRST arrival to the order, and resume
    the waiting execution with it. A repeat (or a retry after a failure half-way) redoes the status change and the
    resume from the stored arrival, never from its own payload: a later 'delivered' after a 'failed' changes
    nothing."""
    order = check_delivery(d, notice)
    payload = {"status": notice.status, "occurred_at": notice.occurred_at.isoformat()}
    stored, token = d.orders.arrive(order.order_id, "delivery", payload)
    first = dict(stored)
    if first.get("status") == "delivered" and lifecycle.allows(order.status, E.DELIVERED):
        d.orders.mark_delivered(order.order_id, datetime.fromisoformat(str(first["occurred_at"])), d.clock.now())
    if token:
        _resume(d, token, first, "DeliveryFailed")
    return {"order_id": order.order_id, "accepted": True}


def first_lab_for(order: Order, labs: list[str]) -> str:
    """The first lab of an order, chosen by its id. A second unit (issue 10 item 1) never goes to a lab that
    examined an earlier unit of its sample (``prior_labs``; the second unit is bought only while one is left)."""
    candidates = [lab for lab in labs if lab not in order.prior_labs] or labs
    return candidates[int(order.order_id[-8:], 16) % len(candidates)]


def forward_to_lab(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    order = d.orders.get_order(inp.order_id)
    program = d.programs.get_program(order.program_id)
    lab_id = order.lab_id or first_lab_for(order, program.labs)
    now = d.clock.now()
    # --- custody (issue 8 item 5): the first entry, logged by this task, once (a retry finds it and skips it)
    custody.append(
        d,
        order.order_id,
        Actor.system("forward_to_lab"),
        from_party=f"seller:{order.seller_id}",
        to_party=f"lab:{lab_id}",
        at=now,
        location="drop point",
        condition="sealed parcel as delivered",
        once=lambda e: e.seq == 0,
    )
    # --- end custody
    if lifecycle.allows(order.status, E.FORWARDED):
        order = d.orders.mark_at_lab(order.order_id, lab_id, now)
    # retest (issue 10 item 1): the lab attempt AwaitVerdict waits on ($.lab.result in the execution)
    return {"lab_id": order.lab_id or lab_id, "attempt": order.lab_attempt, "action": "await"}


def capture_spend(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Book the price the marketplace charged (the unused reservation returns). Only for a delivered order; a
    capture the ledger refuses (e.g. a price above the reservation with no per-order cap) raises, and the ASL sends
    the order to ``needs_reconciliation`` with its hold kept."""
    order = d.orders.get_order(inp.order_id)
    program = d.programs.get_program(order.program_id)
    if order.status is not S.SETTLED and not lifecycle.allows(order.status, E.CAPTURED):
        raise InvalidState(f"order {order.order_id} is {order.status.value}; only a delivered order is captured")
    if order.price is None:
        raise InvalidState(f"order {order.order_id} has no price to capture")
    result = d.ledger.capture(order.program_id, order.order_id, order.price, order.currency)
    d.orders.mark_settled(order.order_id, d.clock.now())
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
        d.orders.record_refund(order.order_id, refunded, d.clock.now())
    return {"refunded": refunded}


def _ring_fields(r: Any) -> dict[str, Any]:
    """A ring-level recommendation names the ring and the fingerprint kinds shared (issue 10), never values."""
    return {"ring_id": r.ring_id, "shared_fingerprint_kinds": list(r.shared_fingerprint_kinds)} if r.ring_id else {}


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
    # --- rings and leads (issue 10 items 3 and 4): ring facts, estimated counterfeit sales, leads raised
    from chalicelib.services import leads

    decided_at = verdict.recorded_at if verdict else now
    ring, estimate = leads.enforcement_facts(d, order, decided_at, prior)
    # --- end rings and leads
    facts = SellerFacts(
        seller_id=order.seller_id,
        order_id=order.order_id,
        verdict=order.verdict,
        decided_at=decided_at,
        prior_confirmed_at=prior,
        linked_sellers_confirmed=linked,
        estimated_counterfeit_sales=estimate,
        service_quality=order.service_quality,
        evidence=tuple(verdict.evidence) if verdict else (),
        ring=ring,
    )
    recs = recommend(facts, d.enforcement_policy)
    stored = [
        {
            "action": r.action.value,
            "rule": r.rule,
            "policy_version": r.policy_version,
            "reason": r.reason,
            "evidence": list(r.evidence),
            **(
                {"ring_id": r.ring_id, "shared_fingerprint_kinds": list(r.shared_fingerprint_kinds)}
                if r.ring_id
                else {}
            ),
        }
        for r in recs
    ]
    d.orders.record_recommendations(order.order_id, stored, now)
    leads.raise_leads(d, order, recs, ring, estimate, inp.correlation_id)  # rings and leads (issue 10)
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
                status=order.status.value,
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
                    ring_id=r.get("ring_id"),  # rings (issue 10)
                    shared_fingerprint_kinds=r.get("shared_fingerprint_kinds", []),
                ),
                inp.correlation_id,
                str(i),
                r["action"],
                r["rule"],
            )
        )
    d.events.publish(events)
    return {"published": len(events)}


# ------------------------------------------------------------------------------------------------ compensation


def _truth(d: Deps, order: Order) -> MarketOrder | None:
    """What the marketplace holds for this order, and remember its id and price if the reply was lost."""
    truth = d.marketplace.find_order(order.order_id)
    if truth is not None and (order.marketplace_order_id, order.price) != (truth.marketplace_order_id, truth.price):
        d.orders.record_marketplace_order(order.order_id, truth.marketplace_order_id, truth.price, d.clock.now())
    return truth


def reconcile(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """First step of every compensation: decide from the marketplace's own record, never from ours alone.

    Returns ``{"action": a}``: ``cancel`` (a live order: cancel it, then reconcile again), ``release`` (the
    marketplace holds no live order: release the money), ``capture`` (delivered: the money is spent), ``done``
    (settled already). Records the cancel intent before a cancellation and the delivery if the marketplace
    delivered without telling us."""
    order = d.orders.get_order(inp.order_id)
    now = d.clock.now()
    if order.status is S.SETTLED:
        return {"action": "done"}
    if order.status in TERMINAL or order.status in (S.SAMPLED, S.RESERVED):
        return {"action": "release"}  # no placement intent was ever recorded, or the order is closed already
    truth = _truth(d, order)
    if truth is not None and truth.delivered:
        if lifecycle.allows(order.status, E.DELIVERED):
            d.orders.mark_delivered(order.order_id, now, now)
        return {"action": "capture"}
    if order.status in _DELIVERED:
        # We saw the delivery; the marketplace record disagrees. The money stays held until someone looks.
        if truth is not None and truth.live:
            return {"action": "capture"}
        raise InvalidState(f"order {order.order_id} was delivered but the marketplace says {truth}")
    intent_at = order.place_intent_at
    if truth is None and order.status is S.PLACING and intent_at is not None and now - intent_at < PLACEMENT_SETTLE:
        raise PlacementUnsettled(f"order {order.order_id}: placement intent too recent to rule out a late purchase")
    if order.status is not S.CANCELLING:
        d.orders.record_cancel_intent(order.order_id, inp.error_name, now)
    return {"action": "cancel" if truth is not None and truth.live else "release"}


def cancel_order(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Cancel at the marketplace (its own retried step), then confirm: still live after the call is an error
    (``CancelNotConfirmed``, retried); delivered meanwhile is fine (the next ``reconcile`` captures it)."""
    order = d.orders.get_order(inp.order_id)
    truth = _truth(d, order)
    if truth is None or not truth.live:
        return {"cancelled": truth is not None and truth.status == "cancelled"}
    try:
        d.marketplace.cancel_order(truth.marketplace_order_id)
    except OrderRefused:
        pass  # e.g. delivered meanwhile: reconcile will find out
    after = d.marketplace.find_order(order.order_id)
    if after is not None and after.live:
        raise CancelNotConfirmed(f"order {order.order_id} is still live at the marketplace after cancelling")
    return {"cancelled": after is not None and after.status == "cancelled"}


def release_budget(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Release the reservation of an order the marketplace does not hold (never placed, refused, or cancellation
    confirmed), then close the order with why it stopped. Refuses (``InvalidState``) while the marketplace may
    still hold a live or delivered order: the ledger moves only once the marketplace's state is known."""
    order = d.orders.get_order(inp.order_id)
    if order.status in lifecycle.MARKETPLACE_MAY_HOLD and order.status is not S.CANCELLING:
        raise InvalidState(f"order {order.order_id} is {order.status.value}; reconcile it before releasing")
    if order.status is S.CANCELLING:
        truth = _truth(d, order)
        if truth is not None and (truth.live or truth.delivered):
            raise InvalidState(f"order {order.order_id} is {truth.status} at the marketplace; not releasing")
    try:
        released = d.ledger.release(order.program_id, order.order_id).amount
    except NotFound:
        released = 0  # nothing was ever reserved
    except InvalidState:
        released = 0  # already released (captured holds never reach here: their orders are delivered)
    failure = order.failure or inp.error_name
    if lifecycle.allows(order.status, E.FAIL):
        delivery = order.status is S.CANCELLING and failure in DELIVERY_ERRORS
        order = d.orders.mark_failed(order.order_id, failure, d.clock.now(), delivery=delivery)
    if order.status is S.DELIVERY_FAILED:
        _publish(
            d,
            order,
            OrderDeliveryFailed(
                order_id=order.order_id,
                round_id=order.round_id,
                seller_id=order.seller_id,
                reason=order.failure or failure,
            ),
            inp.correlation_id,
        )
    return {"released": released}


def needs_reconciliation(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Compensation could not finish (a capture or a cancellation kept failing): keep the hold, mark the order
    ``needs_reconciliation`` and raise the alert (deterministic id, so retries alert once). The sweeper retries the
    compensation on its schedule."""
    order = d.orders.get_order(inp.order_id)
    if order.status in TERMINAL:
        return {"status": order.status.value}
    if order.status is not S.NEEDS_RECONCILIATION:
        order = d.orders.mark_needs_reconciliation(order.order_id, inp.error_name, d.clock.now())
    _publish(
        d,
        order,
        OrderReconciliationRequired(
            order_id=order.order_id,
            round_id=order.round_id,
            seller_id=order.seller_id,
            reason=inp.error_name,
            held=order.amount,
            currency=order.currency,
        ),
        inp.correlation_id,
    )
    return {"status": order.status.value}


def compensate(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """The whole compensation in one call, for the safety net and the sweeper (the ASL runs the same steps one by
    one, each retried): reconcile, cancel and reconcile again, then release or capture (and, after a capture, the
    refund, enforcement and outcome events). Returns ``{"outcome": ...}``: ``released``, ``captured``, ``done`` or
    ``stuck`` (the order is then ``needs_reconciliation`` with its hold kept and an alert raised)."""
    try:
        for _ in range(3):
            action = reconcile(d, inp)["action"]
            if action == "cancel":
                cancel_order(d, inp)
                continue
            if action == "release":
                release_budget(d, inp)
                return {"outcome": "released"}
            if action == "capture":
                capture_spend(d, inp)
                for follow_up in (request_refund, enforce, publish_outcome):
                    follow_up(d, inp)
                return {"outcome": "captured"}
            return {"outcome": "done"}
        raise CancelNotConfirmed(f"order {inp.order_id}: compensation did not converge")
    except PlacementUnsettled:
        raise  # not stuck, only early: the caller retries (EventBridge, the next sweep)
    except DomainError as exc:
        needs_reconciliation(d, inp.model_copy(update={"error": {"Error": type(exc).__name__}}))
        return {"outcome": "stuck", "error": type(exc).__name__}


def finalize(d: Deps, inp: OrderTaskInput) -> dict[str, Any]:
    """Count the order on its round (once) and resume the round when it was the last. Never settles anything: an
    order that reaches Finalize in a non-terminal status (a live purchase, say) is sent to reconciliation, with its
    hold kept and an alert raised."""
    order = d.orders.get_order(inp.order_id)
    if order.status not in TERMINAL and order.status is not S.NEEDS_RECONCILIATION:
        needs_reconciliation(d, inp.model_copy(update={"error": {"Error": f"finalized while {order.status.value}"}}))
    rnd = d.orders.finalize(order.order_id, order.program_id, order.round_id)
    if rnd.settled >= rnd.sampled + rnd.second_units:  # second units (issue 10 item 1) are waited for too
        token = d.rounds.round_token(order.program_id, order.round_id)
        if token:
            d.workflow.succeed(token, {"settled": rnd.settled})
    return {"finalized": True}
