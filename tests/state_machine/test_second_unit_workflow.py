"""Retest mode ``second_unit`` (issue 10 item 1) on the real ``order`` ASL, executed by moto's interpreter through the
Lambda bridge: a programme with two labs whose policy buys a second unit after an inconclusive verdict.

The first lab answers inconclusive for the ``fake`` seller's sample; ``order_next_lab`` buys the item again (a new
order for the same seller, its own execution named by its order id), which is reserved, placed with another persona,
delivered, forwarded to the other lab and found counterfeit there. The first order settles captured with its
inconclusive verdict and no enforcement; the second unit's verdict drives the refund and the enforcement; the round
waits for it and counts the sample once, as a counterfeit hit; the ledger reconciles with both purchases captured. An
``ok`` seller is examined once (authentic) for contrast.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.api.auth import Role, issue_token
from chalicelib.domain import second_unit
from chalicelib.domain.models import Order, OrderStatus, VerdictKind
from chalicelib.services.rounds import reservation_amount
from testbuy.client import ApiClient
from testbuy.sim.world import World
from tests import builders
from tests.state_machine.test_order_workflow import (
    ROUND_DEADLINE_S,
    Harness,
    ScriptedMarketplace,
    for_order,
    make_harness,
    sim_seller,
)

RUN = uuid.uuid4().hex[:8]
LAB_A, LAB_B = f"lab-su-a-{RUN}", f"lab-su-b-{RUN}"


@pytest.fixture(scope="module")
def market(local_stack: Any, stack_info: Any) -> Iterator[ScriptedMarketplace]:
    sim = ScriptedMarketplace(
        world=World(seed=11, sellers=[]),
        api_url=stack_info.api_url,
        webhook_secret=stack_info.webhook_secret,
        seconds_per_day=0.2,
        transient_failure_rate=0.0,
    )
    local_stack.set_marketplace_url(sim.start())
    yield sim
    sim.stop()


@dataclass
class Outcome:
    h: Harness
    pid: str
    rid: str
    view: dict[str, Any]
    first: Order
    second: Order
    ok: Order
    all_orders: list[Order]


@pytest.fixture(scope="module")
def outcome(local_stack: Any, stack_info: Any, market: ScriptedMarketplace) -> Outcome:
    h = make_harness(local_stack, stack_info, market, "su")
    labs = {
        lab: ApiClient(stack_info.api_url, issue_token(stack_info.token_secret, Role.LAB, f"su-{lab}", lab))
        for lab in (LAB_A, LAB_B)
    }
    fake = market.add(sim_seller(f"su-{RUN}-fake", cost=20_000, sells_fakes=True)).seller_id
    ok = market.add(sim_seller(f"su-{RUN}-ok", cost=30_000)).seller_id
    # both units, a second unit of the fake seller's, and room to spare
    funds = 2 * reservation_amount(20_000) + reservation_amount(30_000) + 20_000
    sellers = [s for s in market.world.sellers if s.seller_id in (fake, ok)]
    pid = h.program("su", funds, sellers, labs=[LAB_A, LAB_B], retest={"mode": "second_unit", "max_lab_attempts": 2})
    rid = h.start_round(pid, seed=3)
    handled: set[str] = set()
    deadline = time.monotonic() + ROUND_DEADLINE_S
    while True:
        assert time.monotonic() < deadline, f"the round did not complete in {ROUND_DEADLINE_S}s"
        for lab_id, client in labs.items():
            for sample in client.call("GET", f"/labs/{lab_id}/queue")["samples"]:
                oid = sample["order_id"]
                if oid in handled:
                    continue
                handled.add(oid)
                order = h.d.orders.get_order(oid)
                if order.seller_id == ok:
                    verdict = "authentic"
                else:  # the sampled unit is inconclusive, the unit bought again is counterfeit
                    verdict = "inconclusive" if order.parent_order_id is None else "counterfeit"
                body = builders.court_body(client, lab_id, oid, verdict)
                client.call("POST", f"/samples/{oid}/verdict", body, expect=(201,))
        view = h.pm.call("GET", f"/programs/{pid}/rounds/{rid}")
        assert view["status"] != "failed", view
        if view["status"] == "completed":
            break
        time.sleep(0.25)
    all_orders = h.d.orders.list_round_orders(rid)
    (first,) = [o for o in all_orders if o.seller_id == fake and o.parent_order_id is None]
    (second,) = [o for o in all_orders if o.seller_id == fake and o.parent_order_id is not None]
    (ok_order,) = [o for o in all_orders if o.seller_id == ok]
    return Outcome(h, pid, rid, view, first, second, ok_order, all_orders)


def entered(h: Harness, order_id: str) -> list[str]:
    return [
        e["stateEnteredEventDetails"]["name"]
        for e in h.history(order_id)
        if e["type"].endswith("StateEntered") and e["type"] != "ChoiceStateEntered"
    ]


def test_an_inconclusive_verdict_buys_a_second_unit_examined_at_the_other_lab(outcome: Outcome) -> None:
    first, second, h = outcome.first, outcome.second, outcome.h
    assert len(outcome.all_orders) == 3
    assert first.status is OrderStatus.SETTLED and first.verdict is VerdictKind.INCONCLUSIVE
    assert first.second_unit_order_id == second.order_id == second_unit.second_unit_id(first.order_id, 2)
    assert (first.lab_attempt, first.retest_reasons) == (1, [])  # the sample itself stayed where it was
    assert second.status is OrderStatus.SETTLED and second.verdict is VerdictKind.COUNTERFEIT
    assert second.parent_order_id == first.order_id and second.unit_number == 2
    assert second.prior_labs == [first.lab_id] and second.lab_id == ({LAB_A, LAB_B} - {first.lab_id}).pop()
    assert second.marketplace_order_id not in (None, first.marketplace_order_id)
    assert second.persona_id not in (None, first.persona_id)  # a persona never buys twice from a seller
    # the first order: one lab, then settled (captured, no release); the second: a whole test buy of its own
    states = entered(h, first.order_id)
    assert states.count("AwaitVerdict") == 1 and states[states.index("CaptureSpend") - 1] == "AfterVerdict"
    assert "ReleaseBudget" not in states
    states = entered(h, second.order_id)
    for state in ("ReserveBudget", "AssignPersona", "PlaceOrder", "AwaitDelivery", "ForwardToLab", "Enforce"):
        assert state in states, (state, states)
    assert "ReleaseBudget" not in states and "Reconcile" not in states
    requested = h.events.wait_for("archive", for_order(first.order_id, "RetestRequested"), 1)[0]["detail"]["data"]
    assert requested["second_unit"] is True and requested["second_unit_order_id"] == second.order_id
    assert (requested["from_lab"], requested["to_lab"]) == (first.lab_id, second.lab_id)


def test_enforcement_follows_the_second_units_verdict_once(outcome: Outcome) -> None:
    first, second, h = outcome.first, outcome.second, outcome.h
    assert first.recommendations == [] and first.refunded == 0
    assert second.recommendations and second.refunded == second.price
    h.events.wait_for("enforcement", for_order(second.order_id, "CounterfeitConfirmed"), 1)
    assert h.events.of("archive", for_order(first.order_id, "CounterfeitConfirmed")) == []
    assert h.events.of("archive", for_order(first.order_id, "EnforcementActionRecommended")) == []
    assert len(h.d.orders.confirmed_history(second.seller_id)) == 1


def test_the_round_counts_the_sample_once_and_the_ledger_reconciles(outcome: Outcome) -> None:
    summary, h = outcome.view["summary"], outcome.h
    assert (summary["sampled"], summary["placed"], summary["conclusive"]) == (2, 2, 2)
    assert summary["counterfeit_hits"] == 1 and summary["hit_rate"] == 0.5 and summary["stuck"] == 0
    assert summary["estimate"]["n"] == 2 and summary["estimate"]["hits"] == 1
    assert summary["retest"] == {
        "retests_requested": 1,
        "overdue_escalations": 0,
        "retested_samples": 1,
        "concluded_after_retest": 1,
        "stayed_inconclusive": 0,
        "second_units": 1,
        "second_units_bought": 1,
        "second_units_concluded": 1,
    }
    holds = h.holds(outcome.pid)
    bought = (outcome.first, outcome.second, outcome.ok)
    assert {o.order_id: holds[o.order_id]["state"] for o in bought} == dict.fromkeys(
        (o.order_id for o in bought), "captured"
    )
    assert all(int(holds[o.order_id]["captured"]) == o.price for o in bought)
    spent = sum((o.price or 0) - o.refunded for o in bought)
    assert summary["spent"] == spent
    b = h.balance(outcome.pid)
    assert b.reserved == 0 and b.captured - b.recovered == spent
    recon = h.pm.call("GET", f"/programs/{outcome.pid}/reconciliation")
    assert recon["reconciled"] is True and recon["invariant_holds"] is True
    rnd = h.d.rounds.get_round(outcome.pid, outcome.rid)
    assert (rnd.sampled, rnd.second_units, rnd.settled) == (2, 1, 3)
