"""Every task of the order workflow against the in-memory fakes (milliseconds): the happy path, each failure path after
the placement intent, and the follow-ups that must be redone on a retry. The marketplace fake keeps ground truth, so
each test checks the money against what was really bought."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.domain import lifecycle
from chalicelib.domain.custody import Actor
from chalicelib.domain.errors import InvalidInput, InvalidState, MarketplaceUnavailable, OrderRefused
from chalicelib.domain.models import (
    DeliveryNotice,
    Order,
    OrderStatus,
    Program,
    Round,
    RoundStatus,
    Timeouts,
    VerdictKind,
)
from chalicelib.services import lab, orders, programs
from chalicelib.services.orders import OrderTaskInput
from tests import builders
from tests.fakes import Boom, World, world

S = OrderStatus
PID, RID, OID, SELLER = "prg-1", "rnd-1", "ord-00000001", "seller-1"
TECH = Actor(subject="tech", role="lab", lab_id="lab-1")
AMOUNT = 1_150


def setup(w: World, funds: int = 10_000, cap: int | None = None, status: S = S.SAMPLED) -> OrderTaskInput:
    now = w.clock.now()
    w.programs.put_program(
        Program(
            program_id=PID,
            name="p",
            currency="CNY",
            budget=funds,
            period_start=now - timedelta(days=1),
            period_end=now + timedelta(days=30),
            round_size=1,
            exploration_share=1.0,
            blend=0.5,
            per_order_cap=cap,
            labs=["lab-1"],
            timeouts=Timeouts(delivery_seconds=5, verdict_seconds=5),
            created_at=now,
        )
    )
    w.ledger.open_account(PID, "CNY", cap)
    w.ledger.fund(PID, "f1", funds, "CNY")
    w.personas.ensure_pool(PID, 4)
    w.rounds.put_round(
        Round(
            program_id=PID,
            round_id=RID,
            status=RoundStatus.SAMPLED,
            seed=1,
            budget=funds,
            started_at=now,
            execution_name=RID,
            sampled=1,
        )
    )
    w.orders.put_orders(
        [
            builders.order(
                at=now,
                order_id=OID,
                program_id=PID,
                round_id=RID,
                seller_id=SELLER,
                amount=AMOUNT,
                status=status,
            )
        ]
    )
    w.workflow.running.add(("order", OID))
    return OrderTaskInput(order_id=OID, program_id=PID, round_id=RID, correlation_id="c-1")


def inp_with(inp: OrderTaskInput, error: str) -> OrderTaskInput:
    return inp.model_copy(update={"error": {"Error": error, "Cause": "test"}})


def to_placed(w: World, inp: OrderTaskInput) -> Order:
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    orders.place_order(w.deps, inp)
    return w.orders.get_order(OID)


def deliver(w: World, order: Order) -> None:
    w.marketplace.deliver(order.order_id)
    assert order.marketplace_order_id is not None
    orders.record_delivery(
        w.deps,
        DeliveryNotice(
            order_id=order.order_id,
            marketplace_order_id=order.marketplace_order_id,
            status="delivered",
            occurred_at=w.clock.now(),
        ),
    )


def held(w: World) -> dict[str, Any]:
    return {h["order_id"]: h for h in w.ledger.holds(PID)}[OID]


def check_books(w: World) -> None:
    """The ledger against the marketplace's ground truth: a live or delivered purchase is held or captured at its
    price; nothing is captured that was never bought; nothing is held for an order the marketplace does not have."""
    b = w.ledger.balance(PID)
    b.check()
    truth = w.marketplace.orders.get(OID)
    h = held(w) if any(x["order_id"] == OID for x in w.ledger.holds(PID)) else None
    if truth is None or truth.status == "cancelled":
        assert h is None or h["state"] == "released" or w.orders.get_order(OID).status not in lifecycle.TERMINAL, h
        assert h is None or h["captured"] == 0
    else:
        assert h is not None and (h["state"] == "reserved" or h["captured"] == truth.price), (truth, h)


# ------------------------------------------------------------------------------------------------ defect 1


def test_lost_reply_after_the_marketplace_committed_cancels_then_releases() -> None:
    """Defect 1: the marketplace took the order but its reply was lost on every retry. The compensation must find the
    order by its id, cancel it and only then release the money (before: released with the order left live)."""
    w = world()
    inp = setup(w)
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    w.marketplace.lose_reply = 4
    for _ in range(4):  # the ASL's retries, all failing
        with pytest.raises(MarketplaceUnavailable):
            orders.place_order(w.deps, inp)
    assert w.marketplace.orders[OID].status == "placed"  # ground truth: bought
    orders.compensate(w.deps, inp_with(inp, "MarketplaceUnavailable"))
    assert w.marketplace.orders[OID].status == "cancelled"
    assert held(w)["state"] == "released"
    order = w.orders.get_order(OID)
    assert order.status is S.FAILED and order.marketplace_order_id == w.marketplace.orders[OID].marketplace_order_id
    check_books(w)


def test_lost_reply_for_an_order_already_delivered_is_captured_not_released() -> None:
    w = world()
    inp = setup(w)
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    w.marketplace.lose_reply = 1
    with pytest.raises(MarketplaceUnavailable):
        orders.place_order(w.deps, inp)
    w.marketplace.deliver(OID)
    orders.compensate(w.deps, inp_with(inp, "Sandbox.Timedout"))
    h = held(w)
    assert h["state"] == "captured" and h["captured"] == w.marketplace.orders[OID].price
    assert w.orders.get_order(OID).status is S.SETTLED
    check_books(w)


def test_placement_records_the_intent_first_and_the_marketplace_sees_no_persona_id() -> None:
    w = world()
    inp = setup(w)
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    w.marketplace.fail_next("place_order", Boom("crash before the call"))
    with pytest.raises(Boom):
        orders.place_order(w.deps, inp)
    assert w.orders.get_order(OID).status is S.PLACING  # durable before the call
    orders.place_order(w.deps, inp)
    order = w.orders.get_order(OID)
    assert order.status is S.PLACED and order.persona_id is not None
    buyers = set(w.marketplace.seen_buyers)
    assert len(buyers) == 1 and PID not in next(iter(buyers)) and order.persona_id not in next(iter(buyers))
    assert w.marketplace.orders[OID].price <= AMOUNT  # told the maximum


def test_a_refusal_releases_and_counts_on_the_persona() -> None:
    w = world()
    inp = setup(w)
    w.marketplace.refuse.add(SELLER)
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    with pytest.raises(OrderRefused):
        orders.place_order(w.deps, inp)
    orders.compensate(w.deps, inp_with(inp, "OrderRefused"))
    orders.finalize(w.deps, inp)
    order = w.orders.get_order(OID)
    assert order.status is S.REFUSED and held(w)["state"] == "released"
    assert sum(p["refusals"] for p in w.personas.pool[PID].values()) == 1
    assert w.orders.finalized == {OID}


# ------------------------------------------------------------------------------------------------ defect 2


def test_a_capture_that_fails_after_delivery_keeps_the_hold_and_alerts() -> None:
    """Defect 2: the marketplace charged more than the reservation and there is no per-order cap, so the ledger
    refuses the capture. The money was paid: the hold must stay and an alert must go out (before: released)."""
    w = world()
    inp = setup(w)
    w.marketplace.price_of = lambda seller, max_price: max_price + 100
    order = to_placed(w, inp)
    deliver(w, order)
    orders.forward_to_lab(w.deps, inp)
    with pytest.raises(InvalidInput):
        orders.capture_spend(w.deps, inp)
    orders.needs_reconciliation(w.deps, inp_with(inp, "InvalidInput"))
    orders.finalize(w.deps, inp)
    assert held(w)["state"] == "reserved"
    assert w.orders.get_order(OID).status is S.NEEDS_RECONCILIATION
    alerts = w.events.unique("OrderReconciliationRequired")
    assert len(alerts) == 1 and next(iter(alerts.values())).detail["data"]["held"] == AMOUNT
    # the compensation entry point never releases a delivered order either
    orders.compensate(w.deps, inp_with(inp, "States.ALL"))
    assert held(w)["state"] == "reserved"


def test_capture_above_the_reservation_within_the_cap_is_booked() -> None:
    w = world()
    inp = setup(w, cap=5_000)
    w.marketplace.price_of = lambda seller, max_price: max_price + 100
    order = to_placed(w, inp)
    deliver(w, order)
    orders.capture_spend(w.deps, inp)
    assert held(w)["captured"] == AMOUNT + 100 and w.orders.get_order(OID).status is S.SETTLED


# ------------------------------------------------------------------------------------------------ defect 3


def test_finalize_never_settles_a_live_order() -> None:
    """Defect 3: Finalize marked a PLACED order SETTLED, hiding a live purchase with its hold still reserved."""
    w = world()
    inp = setup(w)
    to_placed(w, inp)
    orders.finalize(w.deps, inp)
    order = w.orders.get_order(OID)
    assert order.status is not S.SETTLED
    assert order.status is S.NEEDS_RECONCILIATION and held(w)["state"] == "reserved"
    assert w.events.unique("OrderReconciliationRequired")


def test_a_cancel_that_keeps_failing_keeps_the_hold_and_alerts() -> None:
    w = world()
    inp = setup(w)
    to_placed(w, inp)
    w.marketplace.cancel_fails = 100
    step = orders.reconcile(w.deps, inp_with(inp, "States.Timeout"))
    assert step == {"action": "cancel"}
    for _ in range(3):
        with pytest.raises(MarketplaceUnavailable):
            orders.cancel_order(w.deps, inp)
    orders.needs_reconciliation(w.deps, inp_with(inp, "MarketplaceUnavailable"))
    assert held(w)["state"] == "reserved" and w.marketplace.orders[OID].status == "placed"
    assert w.orders.get_order(OID).status is S.NEEDS_RECONCILIATION
    # once the marketplace answers again, the same compensation finishes the job
    w.marketplace.cancel_fails = 0
    orders.compensate(w.deps, inp_with(inp, "States.Timeout"))
    assert w.marketplace.orders[OID].status == "cancelled" and held(w)["state"] == "released"
    assert w.orders.get_order(OID).status is S.DELIVERY_FAILED
    check_books(w)


def test_release_refuses_while_the_marketplace_still_holds_a_live_order() -> None:
    w = world()
    inp = setup(w)
    to_placed(w, inp)
    w.orders.record_cancel_intent(OID, "States.Timeout", w.clock.now())
    with pytest.raises(InvalidState):
        orders.release_budget(w.deps, inp)  # the ledger moves only once the marketplace's state is known
    assert held(w)["state"] == "reserved"


def test_a_parcel_delivered_while_cancelling_is_captured() -> None:
    w = world()
    inp = setup(w)
    to_placed(w, inp)
    assert orders.reconcile(w.deps, inp_with(inp, "States.Timeout")) == {"action": "cancel"}
    w.marketplace.deliver(OID)
    orders.cancel_order(w.deps, inp)  # the marketplace refuses: already delivered
    assert orders.reconcile(w.deps, inp) == {"action": "capture"}
    orders.capture_spend(w.deps, inp)
    assert held(w)["state"] == "captured" and w.orders.get_order(OID).status is S.SETTLED
    check_books(w)


@pytest.mark.parametrize(
    ("delivery", "verdict", "jitter", "field"),
    [
        (180 * 86400, 365 * 86400, 0, "timeouts"),
        (110 * 86400, 250 * 86400, 7 * 86400, "timeouts"),
    ],
)
def test_timeouts_that_could_outlive_an_execution_are_refused(
    delivery: int, verdict: int, jitter: int, field: str
) -> None:
    """Defect 3: the allowed timeouts added up to more than a Standard execution may live (one year)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        Timeouts(delivery_seconds=delivery, verdict_seconds=verdict, max_jitter_seconds=jitter)
    assert "one year" in str(err.value) and "delivery_seconds" in str(err.value)


def test_default_and_generous_timeouts_are_accepted() -> None:
    Timeouts()
    Timeouts(delivery_seconds=60 * 86400, verdict_seconds=180 * 86400, max_jitter_seconds=7 * 86400)


# ------------------------------------------------------------------------------------------------ defect 5


def test_order_placed_is_published_again_on_a_retry_after_the_publish_failed() -> None:
    """Defect 5: once the order was stored as placed, a retry returned early and OrderPlaced was never published."""
    w = world()
    inp = setup(w)
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    w.events.fail_next("publish")
    with pytest.raises(Boom):
        orders.place_order(w.deps, inp)
    orders.place_order(w.deps, inp)
    assert list(w.events.unique("OrderPlaced")) and len(w.marketplace.orders) == 1
    assert w.marketplace.calls["place_order"] == 1  # the retry did not buy again


def test_threshold_event_is_published_before_it_is_marked_sent() -> None:
    """Defect 5: BudgetThresholdCrossed was marked as sent, then published; a failed publish lost it for good."""
    w = world()
    inp = setup(w, funds=2_000)  # one reservation of 1,150 commits 57% of the funds
    w.events.fail_next("publish")
    with pytest.raises(Boom):
        orders.reserve_budget(w.deps, inp)
    orders.reserve_budget(w.deps, inp)
    crossed = [e.detail["data"]["threshold"] for e in w.events.unique("BudgetThresholdCrossed").values()]
    assert crossed == [0.5]
    orders.reserve_budget(w.deps, inp)
    programs.check_thresholds(w.deps, w.programs.get_program(PID), w.ledger.balance(PID), "c")
    assert len(w.events.unique("BudgetThresholdCrossed")) == 1


def at_lab(w: World) -> OrderTaskInput:
    inp = setup(w)
    order = to_placed(w, inp)
    deliver(w, order)
    orders.forward_to_lab(w.deps, inp)
    orders.await_point(w.deps, OID, "verdict", "tok-verdict")
    return inp


@pytest.mark.parametrize("broken", ["append", "succeed", "publish"])
def test_a_verdict_retry_redoes_every_follow_up(broken: str) -> None:
    """Defect 5: post_verdict returned early once the verdict was stored: a failed custody append, resume or publish
    was never redone, and the execution waited for its verdict timeout."""
    w = world()
    at_lab(w)
    target = {"append": w.custody, "succeed": w.workflow, "publish": w.events}[broken]
    target.fail_next(broken)
    req = builders.court_verdict(w.evidence, VerdictKind.COUNTERFEIT)
    with pytest.raises(Boom):
        lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    verdict, _ = lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    assert verdict.verdict is VerdictKind.COUNTERFEIT
    assert w.workflow.resumed.get("tok-verdict") == {"verdict": "counterfeit"}
    assert len(w.events.unique("VerdictRecorded")) == 1
    examined = [e for e in w.custody.chain(OID) if e.condition.startswith("examined")]
    assert len(examined) == 1
    assert w.orders.get_order(OID).status is S.VERDICT
    # and a third identical post changes nothing more
    lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    assert len([e for e in w.custody.chain(OID) if e.condition.startswith("examined")]) == 1


# ------------------------------------------------------------------------------------------------ happy path


def test_happy_path_settles_with_events_and_custody() -> None:
    w = world()
    inp = at_lab(w)
    lab.post_verdict(w.deps, OID, "lab-1", TECH, builders.court_verdict(w.evidence, VerdictKind.AUTHENTIC), "c")
    orders.capture_spend(w.deps, inp)
    orders.request_refund(w.deps, inp)
    orders.enforce(w.deps, inp)
    orders.publish_outcome(w.deps, inp)
    orders.finalize(w.deps, inp)
    order = w.orders.get_order(OID)
    assert order.status is S.SETTLED and held(w)["captured"] == order.price == w.marketplace.orders[OID].price
    assert w.events.types() == ["OrderPlaced", "OrderSettled", "VerdictRecorded"]
    assert w.rounds.get_round(PID, RID).settled == 1 and w.workflow.resumed.get("tok-verdict")
    assert w.orders.lab_queue("lab-1") == []
    check_books(w)


def test_counterfeit_is_refunded_once_even_when_retried() -> None:
    w = world()
    inp = at_lab(w)
    lab.post_verdict(w.deps, OID, "lab-1", TECH, builders.court_verdict(w.evidence, VerdictKind.COUNTERFEIT), "c")
    orders.capture_spend(w.deps, inp)
    orders.request_refund(w.deps, inp)
    orders.request_refund(w.deps, inp)
    order = w.orders.get_order(OID)
    b = w.ledger.balance(PID)
    assert order.refunded == order.price and b.recovered == order.price
    orders.enforce(w.deps, inp)
    orders.publish_outcome(w.deps, inp)
    assert "CounterfeitConfirmed" in w.events.types()


def test_the_first_delivery_arrival_wins_and_resumes() -> None:
    """Issue 8: a later 'delivered' after a 'failed' changes nothing; the stored first arrival resumes."""
    w = world()
    inp = setup(w)
    order = to_placed(w, inp)
    assert order.marketplace_order_id is not None
    orders.await_point(w.deps, OID, "delivery", "tok-delivery")
    failed = DeliveryNotice(
        order_id=OID,
        marketplace_order_id=order.marketplace_order_id,
        status="failed",
        occurred_at=w.clock.now(),
    )
    orders.record_delivery(w.deps, failed)
    late = failed.model_copy(update={"status": "delivered"})
    orders.record_delivery(w.deps, late)
    assert w.orders.get_order(OID).status is S.PLACED and w.orders.get_order(OID).delivered_at is None
    assert "tok-delivery" in w.workflow.failed and "tok-delivery" not in w.workflow.resumed


def test_a_delivery_retry_resumes_with_the_stored_arrival() -> None:
    w = world()
    inp = setup(w)
    order = to_placed(w, inp)
    assert order.marketplace_order_id is not None
    orders.await_point(w.deps, OID, "delivery", "tok-delivery")
    first = DeliveryNotice(
        order_id=OID, marketplace_order_id=order.marketplace_order_id, status="delivered", occurred_at=w.clock.now()
    )
    w.workflow.fail_next("succeed")
    with pytest.raises(Boom):
        orders.record_delivery(w.deps, first)
    w.clock.advance(hours=1)
    orders.record_delivery(w.deps, first.model_copy(update={"occurred_at": w.clock.now()}))
    stored = w.workflow.resumed["tok-delivery"]
    assert stored["occurred_at"] == first.occurred_at.isoformat()
    assert w.orders.get_order(OID).delivered_at == first.occurred_at


def test_budget_exhausted_is_skipped_without_a_hold() -> None:
    from chalicelib.domain.errors import InsufficientFunds

    w = world()
    inp = setup(w, funds=1_000)
    with pytest.raises(InsufficientFunds):
        orders.reserve_budget(w.deps, inp)
    orders.finalize(w.deps, inp)
    assert w.orders.get_order(OID).status is S.SKIPPED_BUDGET and w.ledger.holds(PID) == []


def test_an_expired_reservation_is_never_placed() -> None:
    w = world()
    inp = setup(w)
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    w.orders.mark_failed(OID, "reservation expired", w.clock.now())
    with pytest.raises(InvalidState):
        orders.place_order(w.deps, inp)
    assert w.marketplace.orders == {}


def test_a_placement_intent_too_recent_to_rule_out_a_late_purchase_is_not_released_yet() -> None:
    """A crash right after the intent: the marketplace has no record yet, but a request may still be on its way.
    Compensation waits (retried) until the placement has settled, then releases."""
    w = world()
    inp = setup(w)
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    w.marketplace.fail_next("place_order", Boom("crash after the intent"))
    with pytest.raises(Boom):
        orders.place_order(w.deps, inp)
    with pytest.raises(orders.PlacementUnsettled):
        orders.reconcile(w.deps, inp_with(inp, "Sandbox.Timedout"))
    with pytest.raises(orders.PlacementUnsettled):
        orders.compensate(w.deps, inp_with(inp, "ExecutionAborted"))
    assert held(w)["state"] == "reserved" and w.orders.get_order(OID).status is S.PLACING
    w.clock.advance(seconds=31)
    assert orders.compensate(w.deps, inp_with(inp, "Sandbox.Timedout")) == {"outcome": "released"}
    assert held(w)["state"] == "released" and w.orders.get_order(OID).status is S.FAILED


def test_no_persona_available_releases_the_reservation() -> None:
    from chalicelib.domain.errors import NoPersonaAvailable

    w = world()
    inp = setup(w)
    orders.reserve_budget(w.deps, inp)
    for p in w.personas.pool[PID].values():
        p["retired"] = True
    with pytest.raises(NoPersonaAvailable):
        orders.assign_persona(w.deps, inp)
    assert orders.reconcile(w.deps, inp_with(inp, "NoPersonaAvailable")) == {"action": "release"}
    orders.release_budget(w.deps, inp_with(inp, "NoPersonaAvailable"))
    orders.finalize(w.deps, inp)
    assert held(w)["state"] == "released" and w.orders.get_order(OID).status is S.FAILED
    assert w.marketplace.calls.get("find_order", 0) == 0  # no intent: nothing to ask
    assert w.rounds.get_round(PID, RID).settled == 1


def test_news_that_came_before_the_wait_resumes_at_once() -> None:
    w = world()
    inp = setup(w)
    order = to_placed(w, inp)
    deliver(w, order)  # the webhook before AwaitDelivery armed its token
    orders.await_point(w.deps, OID, "delivery", "tok-late")
    assert w.workflow.resumed["tok-late"]["status"] == "delivered"
