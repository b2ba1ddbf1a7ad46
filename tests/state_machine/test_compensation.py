"""Compensation through the real ``order`` ASL on moto's interpreter, checked against the simulated marketplace's own
records (ground truth): every live or delivered purchase is held or captured at its price, nothing bought is
released, and every order ends terminal (or in reconciliation, with its hold and an alert) with its round completed.

One round, one seller per failure path, run concurrently:

- ``lostreply``: the marketplace takes the order, then answers 503 to every attempt (the reply is lost). After the
  retries, Reconcile finds the order by its id, CancelOrder cancels it, and only then is the money released.
- ``overcharge``: the marketplace charges more than the reservation (no per-order cap), so the capture is refused.
  The money was paid: the hold is kept, the order needs reconciliation, an alert goes out.
- ``cancelflaky``: the parcel is lost (delivery timeout) and the marketplace's first two cancellations fail (503):
  CancelOrder retries until the cancellation is confirmed, then releases.
- ``muted``: delivered, but the webhook never came. The delivery timeout's compensation asks the marketplace, finds
  the parcel delivered, and captures.
- ``abortwait``: the execution is aborted (``stop_execution``) while it waits for delivery. No Catch runs; the safety
  net (Step Functions' status-change event, delivered locally by ``testbuy.sfn_events``) cancels and releases.
- ``abortlab``: aborted while it waits for the lab's verdict: the safety net captures (the parcel was delivered).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.domain.ledger import Op
from chalicelib.domain.models import Order, OrderStatus
from chalicelib.services.rounds import reservation_amount
from testbuy.sim.marketplace import SimOrder
from testbuy.sim.world import World
from tests.state_machine.test_order_workflow import Harness, ScriptedMarketplace, for_order, sim_seller

S = OrderStatus


@dataclass
class FaultyMarketplace(ScriptedMarketplace):
    lose_replies: set[str] = field(default_factory=set)
    overcharge: set[str] = field(default_factory=set)
    flaky_cancel: dict[str, int] = field(default_factory=dict)
    muted: set[str] = field(default_factory=set)
    caps: dict[str, int] = field(default_factory=dict)

    def place(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seller = str(body.get("seller_id"))
        if seller in self.overcharge:
            with self._lock:
                self.caps[seller] = int(body["max_price"])
            body = {**body, "max_price": 10**12}  # a marketplace that ignores the maximum it was told
        status, payload = super().place(body)
        if seller in self.lose_replies and status == 200:
            return 503, {"error": "the reply was lost"}
        return status, payload

    def price_for(self, seller_id: str, price: int) -> int:
        cap = self.caps.get(seller_id)
        return price if cap is None else cap + 100

    def cancel(self, marketplace_order_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            order = self.orders.get(marketplace_order_id)
            left = self.flaky_cancel.get(order.seller_id, 0) if order else 0
            if order is not None and left > 0:
                self.flaky_cancel[order.seller_id] = left - 1
                order.cancel_calls += 1
                return 503, {"error": "try again"}
        return super().cancel(marketplace_order_id)

    def _deliver(self, order: SimOrder, attempt: int) -> None:
        if order.seller_id in self.muted:
            with self._lock:
                if order.status == "placed":
                    order.status = "delivered"  # arrived; the webhook is never sent
            return
        super()._deliver(order, attempt)


@pytest.fixture(scope="module")
def fmarket(local_stack: Any, stack_info: Any) -> Iterator[FaultyMarketplace]:
    sim = FaultyMarketplace(
        world=World(seed=6, sellers=[]),
        api_url=stack_info.api_url,
        webhook_secret=stack_info.webhook_secret,
        seconds_per_day=0.2,
        transient_failure_rate=0.0,
    )
    local_stack.set_marketplace_url(sim.start())
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def fh(local_stack: Any, stack_info: Any, fmarket: FaultyMarketplace) -> Harness:
    from tests.state_machine.test_order_workflow import make_harness

    return make_harness(local_stack, stack_info, fmarket, "cp")


@dataclass
class Run:
    pid: str
    rid: str
    view: dict[str, Any]
    orders: dict[str, Order]
    tags: dict[str, str]  # tag -> seller id
    aborted: list[str]

    def order(self, tag: str) -> Order:
        return self.orders[self.tags[tag]]


@pytest.fixture(scope="module")
def run(fh: Harness, fmarket: FaultyMarketplace) -> Run:
    m = fmarket
    sellers = {
        "lostreply": m.add(sim_seller("cp-lostreply", cost=20_000, loses_parcel=True)),
        "overcharge": m.add(sim_seller("cp-overcharge", cost=30_000)),
        "cancelflaky": m.add(sim_seller("cp-cancelflaky", cost=25_000, loses_parcel=True)),
        "muted": m.add(sim_seller("cp-muted", cost=15_000)),
        "abortwait": m.add(sim_seller("cp-abortwait", cost=12_000, loses_parcel=True)),
        "abortlab": m.add(sim_seller("cp-abortlab", cost=18_000)),
    }
    m.lose_replies.add(sellers["lostreply"].seller_id)
    m.overcharge.add(sellers["overcharge"].seller_id)
    m.flaky_cancel[sellers["cancelflaky"].seller_id] = 2
    m.muted.add(sellers["muted"].seller_id)
    total = sum(reservation_amount(s.expected_cost) for s in sellers.values())
    funds = total + 50_000
    pid = fh.program("cp compensation", funds, list(sellers.values()))
    rid = fh.start_round(pid, seed=1)
    sfn = fh.stack.client("stepfunctions")
    arn = fh.info.env["TESTBUY_ORDER_STATE_MACHINE_ARN"].replace(":stateMachine:", ":execution:")
    aborted: list[str] = []
    stop = threading.Event()

    def aborter() -> None:
        """Abort two executions mid-wait: one waiting for delivery, one waiting for the lab's verdict."""
        wanted = {sellers["abortwait"].seller_id: S.PLACED, sellers["abortlab"].seller_id: S.AT_LAB}
        while not stop.is_set() and len(aborted) < len(wanted):
            for o in fh.d.orders.list_round_orders(rid):
                if o.order_id not in aborted and wanted.get(o.seller_id) is o.status:
                    sfn.stop_execution(executionArn=f"{arn}:{o.order_id}", error="Aborted", cause="test")
                    aborted.append(o.order_id)
            time.sleep(0.1)

    thread = threading.Thread(target=aborter, daemon=True)
    thread.start()
    try:
        views = fh.run([(pid, rid)], {sellers["overcharge"].seller_id: "authentic"})
    finally:
        stop.set()
        thread.join(timeout=5)
    return Run(pid, rid, views[rid], fh.orders(rid), {t: s.seller_id for t, s in sellers.items()}, aborted)


def truth(m: FaultyMarketplace, order: Order) -> SimOrder:
    found = m.by_client_id(order.order_id)
    assert found is not None, order.order_id
    return found


def aborted_status(h: Harness, order: Order) -> str:
    arn = h.info.env["TESTBUY_ORDER_STATE_MACHINE_ARN"].replace(":stateMachine:", ":execution:")
    return str(h.stack.client("stepfunctions").describe_execution(executionArn=f"{arn}:{order.order_id}")["status"])


def hold(h: Harness, r: Run, order: Order) -> dict[str, Any]:
    return {x["order_id"]: x for x in h.d.ledger.holds(r.pid)}[order.order_id]


def test_the_round_completes_and_every_order_is_accounted_for(fh: Harness, run: Run) -> None:
    assert run.view["sampled"] == 6 and run.view["settled"] == 6, run.view
    assert run.view["orders_by_status"] == {
        "delivery_failed": 1,  # cancelflaky
        "failed": 2,  # lostreply, abortwait
        "needs_reconciliation": 1,  # overcharge
        "settled": 2,  # muted, abortlab
    }
    assert len(run.aborted) == 2


def test_a_lost_reply_after_the_marketplace_committed_is_cancelled_then_released(
    fh: Harness, fmarket: FaultyMarketplace, run: Run
) -> None:
    o = run.order("lostreply")
    t = truth(fmarket, o)
    assert t.status == "cancelled"  # ground truth: bought, then cancelled
    assert o.status is S.FAILED and o.marketplace_order_id == t.marketplace_order_id  # found by its id
    assert hold(fh, run, o)["state"] == "released"
    hist = fh.history(o.order_id)
    entered = [e["stateEnteredEventDetails"]["name"] for e in hist if e["type"] == "TaskStateEntered"]
    assert entered.index("Reconcile") < entered.index("CancelOrder") < entered.index("ReleaseBudget")


def test_a_refused_capture_after_delivery_keeps_the_hold_and_alerts(
    fh: Harness, fmarket: FaultyMarketplace, run: Run
) -> None:
    o = run.order("overcharge")
    t = truth(fmarket, o)
    assert t.status == "delivered" and t.price > o.amount
    assert o.status is S.NEEDS_RECONCILIATION
    h = hold(fh, run, o)
    assert h["state"] == "reserved" and int(h["amount"]) == o.amount  # paid for: never released
    assert fh.journal_ops(run.pid, o.order_id) == [Op.RESERVE]
    alerts = fh.events.wait_for("archive", for_order(o.order_id, "OrderReconciliationRequired"), 1)
    assert alerts and alerts[0]["detail"]["data"]["held"] == o.amount
    entered = [e["stateEnteredEventDetails"]["name"] for e in fh.history(o.order_id) if e["type"] == "TaskStateEntered"]
    assert "ReleaseBudget" not in entered and "NeedsReconciliation" in entered


def test_a_cancel_that_fails_twice_is_retried_until_confirmed(
    fh: Harness, fmarket: FaultyMarketplace, run: Run
) -> None:
    o = run.order("cancelflaky")
    t = truth(fmarket, o)
    assert t.status == "cancelled" and t.cancel_calls == 3
    assert o.status is S.DELIVERY_FAILED and o.failure == "States.Timeout"
    assert hold(fh, run, o)["state"] == "released"
    failed = fh.events.wait_for("archive", for_order(o.order_id, "OrderDeliveryFailed"), 1)
    assert failed


def test_a_delivery_without_its_webhook_is_captured(fh: Harness, fmarket: FaultyMarketplace, run: Run) -> None:
    o = run.order("muted")
    t = truth(fmarket, o)
    assert t.status == "delivered"
    assert o.status is S.SETTLED
    h = hold(fh, run, o)
    assert h["state"] == "captured" and int(h["captured"]) == t.price


def test_an_execution_aborted_while_waiting_for_delivery_is_compensated_by_the_safety_net(
    fh: Harness, fmarket: FaultyMarketplace, run: Run
) -> None:
    o = run.order("abortwait")
    assert o.order_id in run.aborted
    assert truth(fmarket, o).status == "cancelled"
    assert o.status is S.FAILED and hold(fh, run, o)["state"] == "released"
    assert aborted_status(fh, o) == "ABORTED"


def test_an_execution_aborted_while_at_the_lab_is_captured_by_the_safety_net(
    fh: Harness, fmarket: FaultyMarketplace, run: Run
) -> None:
    o = run.order("abortlab")
    assert o.order_id in run.aborted
    t = truth(fmarket, o)
    assert t.status == "delivered"
    assert o.status is S.SETTLED and int(hold(fh, run, o)["captured"]) == t.price
    assert aborted_status(fh, o) == "ABORTED"


def test_ledger_matches_the_marketplaces_records(fh: Harness, fmarket: FaultyMarketplace, run: Run) -> None:
    b = fh.balance(run.pid)
    holds = {x["order_id"]: x for x in fh.d.ledger.holds(run.pid)}
    for o in run.orders.values():
        t = fmarket.by_client_id(o.order_id)
        h = holds[o.order_id]
        if t is None or t.status == "cancelled":
            assert h["state"] == "released", (o.order_id, h)
        else:  # live or delivered: held or captured at its price
            assert h["state"] == "reserved" or int(h["captured"]) == t.price, (o.order_id, h, t)
    assert b.reserved == run.order("overcharge").amount  # only the order under reconciliation holds money


def test_the_marketplace_never_sees_a_persona_id(fmarket: FaultyMarketplace, run: Run) -> None:
    persona_of = {o.order_id: o.persona_id for o in run.orders.values()}
    bought = [
        (persona_of[x["client_order_id"]], x["buyer"]) for x in fmarket.truth() if x["client_order_id"] in persona_of
    ]
    buyers = [b for _, b in bought]
    assert buyers and all(b.startswith("acct-") for b in buyers)
    assert not any(run.pid in b or "-p0" in b for b in buyers)
    # one opaque reference per persona: the same persona always, two personas never, share a reference (a persona may
    # buy from several of these sellers: its weekly cap allows it)
    ref_of = dict(bought)
    assert all(ref_of[p] == b for p, b in bought)
    assert len(set(ref_of.values())) == len(ref_of)
