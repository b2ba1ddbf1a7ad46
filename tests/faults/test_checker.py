"""The fault suite's own machinery, without the stack: the checks catch what they claim to catch, the fault points
come from the ASL, and the seeded sample reaches every boundary kind of every scenario."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.adapters.custody_hmac import LocalHmacKey
from chalicelib.domain.ledger import Balance, JournalEntry, Op
from chalicelib.domain.models import Order, OrderStatus, VerdictKind
from testbuy import faults
from tests import builders

NOW = datetime(2026, 11, 29, tzinfo=UTC)


@dataclass
class SimOrder:
    marketplace_order_id: str
    client_order_id: str
    price: int
    status: str = "delivered"
    refunded: int = 0


@dataclass
class FakeLedger:
    holds_: list[dict[str, Any]] = field(default_factory=list)
    journal_: list[JournalEntry] = field(default_factory=list)

    def holds(self, pid: str) -> list[dict[str, Any]]:
        return self.holds_

    def journal(self, pid: str) -> list[JournalEntry]:
        return self.journal_

    def balance(self, pid: str) -> Balance:
        return Balance()


class FakeCustody:
    def chain(self, order_id: str) -> list[Any]:
        return []

    def snapshot(self, order_id: str) -> tuple[list[Any], Any]:
        return [], None


@dataclass
class FakeDeps:
    ledger: FakeLedger
    custody: FakeCustody = field(default_factory=FakeCustody)
    custody_key: LocalHmacKey = field(default_factory=lambda: LocalHmacKey("k" * 40))


@dataclass
class FakeMarket:
    orders: dict[str, SimOrder]

    def order_for(self, client_order_id: str) -> SimOrder | None:
        return self.orders.get(client_order_id)


class FakeEvents:
    def __init__(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self.got: dict[str, list[dict[str, Any]]] = {"enforcement": [], "archive": []}
        for queue, event in events:
            self.got[queue].append(event)


def order(status: OrderStatus = OrderStatus.SETTLED, verdict: VerdictKind | None = VerdictKind.AUTHENTIC) -> Order:
    return builders.order(
        at=NOW,
        order_id="ord-1",
        program_id="prg-1",
        round_id="rnd-1",
        seller_id="s-1",
        category="toys",
        amount=1150,
        status=status,
        verdict=verdict,
        marketplace_order_id="mo-1",
        price=1000,
    )


def event(detail_type: str, event_id: str, **data: Any) -> dict[str, Any]:
    return {
        "detail-type": detail_type,
        "detail": {"metadata": {"event_id": event_id, "program_id": "prg-1"}, "data": {"order_id": "ord-1", **data}},
    }


def line(op: Op) -> JournalEntry:
    zero = dict.fromkeys(("d_available", "d_reserved", "d_captured", "d_recovered", "d_funded"), 0)
    return JournalEntry(
        program_id="prg-1", key=f"ord-1#{op.value}", op=op, subject="ord-1", at=NOW.isoformat(), attributes={}, **zero
    )


GOOD_EVENTS = [
    ("archive", event("OrderPlaced", "e1")),
    ("archive", event("VerdictRecorded", "e2")),
    ("archive", event("OrderSettled", "e3")),
]


def check(
    holds: list[dict[str, Any]],
    market: dict[str, SimOrder],
    events: list[tuple[str, dict[str, Any]]] = GOOD_EVENTS,
    o: Order | None = None,
    journal: list[JournalEntry] | None = None,
) -> list[faults.Violation]:
    d = FakeDeps(FakeLedger(holds, journal or [line(Op.RESERVE), line(Op.CAPTURE)]))
    checker = faults.Checker(d, FakeMarket(market), FakeEvents(events))  # type: ignore[arg-type]
    return checker.order("prg-1", o or order(), faults.SCENARIOS["happy"], None)


CAPTURED = {"order_id": "ord-1", "state": "captured", "amount": 1150, "captured": 1000, "recovered": 0}
BOUGHT = {"ord-1": SimOrder("mo-1", "ord-1", 1000)}


def test_a_clean_settled_order_passes() -> None:
    assert check([CAPTURED], BOUGHT) == []


def test_a_live_purchase_released_is_money_off_the_ledger() -> None:
    found = check([{"order_id": "ord-1", "state": "released", "amount": 1150}], BOUGHT, o=order(OrderStatus.FAILED))
    assert {v.invariant for v in found} >= {"purchase_on_ledger", "outcome"}
    assert sum(v.lost_minor_units for v in found) == 1000


def test_a_capture_at_the_wrong_price_or_for_a_cancelled_order_is_caught() -> None:
    wrong = check([{**CAPTURED, "captured": 900}], BOUGHT)
    assert [v.lost_minor_units for v in wrong if v.invariant == "purchase_on_ledger"] == [100]
    cancelled = check([CAPTURED], {"ord-1": SimOrder("mo-1", "ord-1", 1000, status="cancelled")})
    assert any(v.invariant == "purchase_on_ledger" and v.lost_minor_units == 1000 for v in cancelled)


def test_a_hold_left_reserved_is_stuck_and_a_refund_not_recovered_is_lost() -> None:
    stuck = check([{"order_id": "ord-1", "state": "reserved", "amount": 1150}], BOUGHT, o=order(OrderStatus.PLACED))
    assert [v.invariant for v in stuck if v.stuck_hold] == ["no_stuck_hold"]
    assert any(v.invariant == "terminal" for v in stuck)
    refunded = check([CAPTURED], {"ord-1": SimOrder("mo-1", "ord-1", 1000, refunded=1000)})
    assert any(v.invariant == "purchase_on_ledger" and v.lost_minor_units == 1000 for v in refunded)


def test_missing_facts_and_second_effects_are_caught() -> None:
    lost = check([CAPTURED], BOUGHT, events=GOOD_EVENTS[:2])
    assert [(v.invariant, v.lost_events) for v in lost] == [("facts_delivered", 1)]
    twice = check([CAPTURED], BOUGHT, events=[*GOOD_EVENTS, ("archive", event("OrderSettled", "e9"))])
    assert [v.invariant for v in twice] == ["no_second_effect"]
    redelivered = check([CAPTURED], BOUGHT, events=[*GOOD_EVENTS, ("archive", event("OrderSettled", "e3"))])
    assert redelivered == []  # the same event id again is at-least-once delivery, not a second effect
    doubled = check([CAPTURED], BOUGHT, journal=[line(Op.RESERVE), line(Op.CAPTURE), line(Op.CAPTURE)])
    assert [v.invariant for v in doubled] == ["no_second_effect"]


def test_fault_points_cover_every_task_of_the_asl() -> None:
    census = faults.Census(
        tasks={"happy": {"order_place", "api_verdict"}},
        calls={"happy": {("order_place", "dynamodb.UpdateItem", 1), ("order_place", "dynamodb.GetItem", 1)}},
        market={"happy": {("marketplace.place", 1)}},
    )
    points = faults.enumerate_points(census)
    for _state, task, waits in faults.asl_tasks("order"):
        kinds = {p.kind for p in points if p.target == task and p.boundary == "task.before"}
        assert kinds == set(faults.LAMBDA_ERRORS), task
        assert any(p.target == task and p.boundary == "wait.abort" for p in points) == waits
    writes = {p.kind for p in points if p.target == "order_place/dynamodb.UpdateItem#1"}
    assert writes == set(faults.WRITE_KINDS)
    assert {p.kind for p in points if p.target == "order_place/dynamodb.GetItem#1"} == set(faults.READ_KINDS)
    assert {p.kind for p in points if p.target == "marketplace.place#1"} == set(faults.MARKET_KINDS)
    for p in points:
        assert faults.FaultPoint.parse(p.id) == p
    assert faults.applies(faults.FaultPoint("order_place", "task.before", "Lambda.Unknown"), "happy", census)
    assert not faults.applies(faults.FaultPoint("order_refund", "task.before", "Lambda.Unknown"), "happy", census)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_seeded_sample_reaches_every_boundary_of_every_scenario(seed: int) -> None:
    census = faults.Census(
        tasks={s: {t for _, t, _ in faults.asl_tasks("order")} | {"api_delivery", "api_verdict"} for s in "ab"},
        calls={s: {("order_place", "dynamodb.UpdateItem", 1), ("order_capture", "dynamodb.GetItem", 1)} for s in "ab"},
        market={s: {("marketplace.place", 1)} for s in "ab"},
    )
    cases = faults.matrix(census, scenarios=("a", "b"))
    part = faults.sample(cases, seed, 6)
    assert part == faults.sample(cases, seed, 6)  # seeded: the same part every time
    for s in "ab":
        boundaries = {c.point.boundary for c in cases if c.scenario == s and c.point}
        assert {c.point.boundary for c in part if c.scenario == s and c.point} == boundaries
        assert sum(1 for c in part if c.scenario == s and c.point is None) == 1


def test_a_call_that_depends_on_the_programmes_other_orders_is_faulted_alone_whatever_the_census_saw() -> None:
    """The budget threshold event is published by whichever reservation crosses a threshold: in a shared programme the
    faulted order may cross none (its fault never fires), even when both census orders made the call."""
    from types import SimpleNamespace

    census = faults.Census()
    census.conditional["happy"] = set()  # the census's two orders both published: it looked unconditional
    run = SimpleNamespace(census_data=census)
    point = "order_reserve_budget/events.PutEvents#1|call.error|error"
    threshold = faults.Case("happy", faults.FaultPoint.parse(point))
    other = faults.Case("happy", faults.FaultPoint.parse("order_place/events.PutEvents#1|call.error|error"))
    assert faults.FaultRun.solo(run, threshold)  # type: ignore[arg-type]
    assert not faults.FaultRun.solo(run, other)  # type: ignore[arg-type]
    census.conditional["happy"] = {("order_place", "events.PutEvents", 1)}
    assert faults.FaultRun.solo(run, other)  # type: ignore[arg-type]
