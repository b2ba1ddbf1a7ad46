"""The sweeper against the in-memory fakes: it takes every stale hold whose order is terminal, stuck, or whose
execution has ended, whatever its marketplace id, and asks the marketplace before it moves money."""

from __future__ import annotations

from datetime import timedelta

from chalicelib.domain.models import OrderStatus
from chalicelib.services import orders
from chalicelib.services.sweeper import sweep_all
from tests.fakes import world
from tests.unit.test_order_tasks import OID, held, setup, to_placed

S = OrderStatus


def test_a_placed_order_whose_execution_ended_is_cancelled_then_released() -> None:
    """Defect 3: the sweeper skipped every order with a marketplace id, so a hold whose execution had died (aborted,
    timed out) stayed reserved forever while the marketplace order stayed live."""
    w = world()
    inp = setup(w)
    to_placed(w, inp)
    w.workflow.running.discard(("order", OID))  # aborted
    w.clock.advance(days=2)
    counts = sweep_all(w.deps, timedelta(hours=24))
    assert w.marketplace.orders[OID].status == "cancelled"
    assert held(w)["state"] == "released" and counts["released"] == 1
    assert w.orders.get_order(OID).status is S.FAILED


def test_a_delivered_order_whose_execution_ended_is_captured() -> None:
    w = world()
    inp = setup(w)
    to_placed(w, inp)
    w.marketplace.deliver(OID)
    w.workflow.running.discard(("order", OID))
    w.clock.advance(days=2)
    counts = sweep_all(w.deps, timedelta(hours=24))
    h = held(w)
    assert h["state"] == "captured" and h["captured"] == w.marketplace.orders[OID].price
    assert counts["captured"] == 1 and w.orders.get_order(OID).status is S.SETTLED


def test_a_running_execution_keeps_its_hold() -> None:
    w = world()
    inp = setup(w)
    to_placed(w, inp)
    w.clock.advance(days=2)
    counts = sweep_all(w.deps, timedelta(hours=24))
    assert counts["running"] == 1 and held(w)["state"] == "reserved"
    assert w.marketplace.orders[OID].status == "placed"


def test_a_stuck_order_is_retried_by_the_sweeper() -> None:
    w = world()
    inp = setup(w)
    to_placed(w, inp)
    w.marketplace.cancel_fails = 100
    orders.needs_reconciliation(w.deps, inp.model_copy(update={"error": {"Error": "MarketplaceUnavailable"}}))
    w.clock.advance(days=2)
    first = sweep_all(w.deps, timedelta(hours=24))
    assert first["errors"] == 1 and held(w)["state"] == "reserved"
    w.marketplace.cancel_fails = 0
    second = sweep_all(w.deps, timedelta(hours=24))
    assert second["released"] == 1 and held(w)["state"] == "released"
    assert w.marketplace.orders[OID].status == "cancelled"
