"""Retest mode ``second_unit`` (issue 10 item 1) on the in-memory fakes: an inconclusive verdict buys the item again
(a new order, once, even when the task is retried), which goes to a lab that has not examined the first unit; the
first order settles captured; the second unit's conclusive verdict is the sampled unit's outcome; no budget or no
persona for the second unit leaves the sample inconclusive with the money released; the round waits for it."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain import second_unit
from chalicelib.domain.custody import Actor
from chalicelib.domain.errors import InsufficientFunds, NoPersonaAvailable
from chalicelib.domain.models import OrderStatus, RetestPolicy, VerdictKind
from chalicelib.services import lab, orders, retest
from chalicelib.services.orders import OrderTaskInput
from chalicelib.services.retest import LabAttemptInput
from chalicelib.services.rounds import summarize
from tests import builders
from tests.fakes import Boom, World, world
from tests.unit.test_order_tasks import AMOUNT, OID, PID, RID, SELLER, deliver, setup, to_placed

S = OrderStatus
LABS = ["lab-1", "lab-2", "lab-3"]


def tech(lab_id: str) -> Actor:
    return Actor(subject=f"tech@{lab_id}", role="lab", lab_id=lab_id)


def post(w: World, order_id: str, verdict: VerdictKind) -> None:
    o = w.orders.get_order(order_id)
    assert o.lab_id is not None
    req = builders.court_verdict(w.deps.evidence, verdict)
    lab.post_verdict(w.deps, order_id, o.lab_id, tech(o.lab_id), req, "c")


def inp_for(order_id: str) -> OrderTaskInput:
    return OrderTaskInput(order_id=order_id, program_id=PID, round_id=RID, correlation_id="c-1")


def inconclusive_first(w: World, labs: list[str] = LABS, funds: int = 10_000, **policy: Any) -> LabAttemptInput:
    """The sampled order bought, delivered, at its first lab, which answers inconclusive."""
    inp = setup(w, funds=funds)
    program = w.programs.get_program(PID)
    policy = {"mode": "second_unit", **policy}
    w.programs.put_program(program.model_copy(update={"labs": labs, "retest": RetestPolicy(**policy)}))
    deliver(w, to_placed(w, inp))
    orders.forward_to_lab(w.deps, inp)
    retest.await_verdict(w.deps, OID, "tok-1")
    post(w, OID, VerdictKind.INCONCLUSIVE)
    return LabAttemptInput(**inp.model_dump(), attempt=1)


def settle(w: World, inp: OrderTaskInput) -> None:
    for task in (orders.capture_spend, orders.request_refund, orders.enforce, orders.publish_outcome):
        task(w.deps, inp)
    orders.finalize(w.deps, inp)


def run_unit(w: World, order_id: str, verdict: VerdictKind) -> None:
    """The second unit's own workflow, task by task, up to its verdict and the decision after it."""
    inp = inp_for(order_id)
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    orders.place_order(w.deps, inp)
    deliver(w, w.orders.get_order(order_id))
    orders.forward_to_lab(w.deps, inp)
    retest.await_verdict(w.deps, order_id, f"tok-{order_id}")
    post(w, order_id, verdict)


def test_inconclusive_buys_a_second_unit_once_for_another_lab_and_its_verdict_is_the_units_outcome() -> None:
    w = world()
    inp = inconclusive_first(w)
    w.rounds.arm_round(PID, RID, "round-token")
    decided = retest.next_lab(w.deps, inp)
    parent = w.orders.get_order(OID)
    assert decided["action"] == "settle" and parent.status is S.VERDICT and parent.lab_attempt == 1
    child_id = second_unit.second_unit_id(OID, 2)
    assert parent.second_unit_order_id == child_id
    child = w.orders.get_order(child_id)
    assert (child.status, child.parent_order_id, child.unit_number, child.seller_id) == (S.SAMPLED, OID, 2, SELLER)
    assert child.prior_labs == [parent.lab_id] and child.amount == AMOUNT and child.round_id == RID
    assert ("order", child_id) in w.workflow.started
    assert w.workflow.started[("order", child_id)]["order_id"] == child_id

    # a retried task (its reply was lost): the same unit, counted once on the round, announced once
    assert retest.next_lab(w.deps, inp) == decided
    assert len(second_unit.second_units(w.orders.list_round_orders(RID))) == 1
    assert w.rounds.get_round(PID, RID).second_units == 1
    (requested,) = w.events.unique("RetestRequested").values()
    data = requested.detail["data"]
    assert data["second_unit"] is True and data["second_unit_order_id"] == child_id
    assert data["order_id"] == OID and data["from_lab"] == parent.lab_id and data["attempt"] == 2
    assert data["to_lab"] != parent.lab_id

    # the sampled order settles as before: captured, no refund, no enforcement, and the round still waits
    settle(w, inp)
    parent = w.orders.get_order(OID)
    assert parent.status is S.SETTLED and parent.verdict is VerdictKind.INCONCLUSIVE
    assert {h["order_id"]: h["state"] for h in w.ledger.holds(PID)} == {OID: "captured"}
    assert parent.recommendations == [] and w.orders.confirmed_history(SELLER) == []
    assert "round-token" not in w.workflow.resumed

    run_unit(w, child_id, VerdictKind.COUNTERFEIT)
    child = w.orders.get_order(child_id)
    assert child.lab_id == data["to_lab"] and child.lab_id not in parent.labs_tried
    assert child.persona_id is not None and child.persona_id != parent.persona_id  # per-seller cool-down
    assert retest.next_lab(w.deps, LabAttemptInput(**inp_for(child_id).model_dump()))["action"] == "settle"
    settle(w, inp_for(child_id))
    child = w.orders.get_order(child_id)
    assert child.status is S.SETTLED and child.verdict is VerdictKind.COUNTERFEIT and child.refunded == child.price
    assert w.workflow.resumed["round-token"] == {"settled": 2}  # the round waited for the second unit
    # enforcement once, from the second unit; none from the inconclusive first
    assert len(w.orders.confirmed_history(SELLER)) == 1 and child.recommendations
    assert [e.detail["data"]["order_id"] for e in w.events.unique("CounterfeitConfirmed").values()] == [child_id]

    everything = w.orders.list_round_orders(RID)
    summary = summarize(everything, population=10)
    assert (summary["sampled"], summary["placed"], summary["verdicts"], summary["conclusive"]) == (1, 1, 1, 1)
    assert summary["counterfeit_hits"] == 1 and summary["estimate"]["n"] == 1 and summary["estimate"]["hits"] == 1
    assert summary["spent"] == parent.price  # the second unit's price came back as a refund
    assert summary["stuck"] == 0 and summary["inconclusive_rate"] == 0.0
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
    units = second_unit.units(everything)
    assert [(u.order_id, u.verdict) for u in units] == [(OID, VerdictKind.COUNTERFEIT)]


def test_no_budget_for_the_second_unit_leaves_the_sample_inconclusive_and_the_round_completes() -> None:
    w = world()
    inp = inconclusive_first(w, funds=AMOUNT + AMOUNT // 2)
    w.rounds.arm_round(PID, RID, "round-token")
    retest.next_lab(w.deps, inp)
    settle(w, inp)
    child_id = second_unit.second_unit_id(OID, 2)
    with pytest.raises(InsufficientFunds):
        orders.reserve_budget(w.deps, inp_for(child_id))
    orders.finalize(w.deps, inp_for(child_id))  # the ASL's Catch: InsufficientFunds -> Finalize
    assert w.orders.get_order(child_id).status is S.SKIPPED_BUDGET
    assert w.workflow.resumed["round-token"] == {"settled": 2}
    summary = summarize(w.orders.list_round_orders(RID), population=10)
    assert summary["sampled"] == 1 and summary["conclusive"] == 0 and summary["skipped_budget"] == 0
    assert summary["retest"]["stayed_inconclusive"] == 1 and summary["retest"]["second_units"] == 1
    assert summary["retest"]["second_units_bought"] == 0 and summary["estimate"] is None
    assert w.ledger.balance(PID).reserved == 0


def test_no_persona_may_buy_again_from_the_seller_the_second_unit_fails_and_its_money_is_released() -> None:
    w = world()
    inp = inconclusive_first(w)
    parent = w.orders.get_order(OID)
    assert parent.persona_id is not None
    w.personas.pool[PID] = {parent.persona_id: w.personas.pool[PID][parent.persona_id]}  # only the first buyer
    retest.next_lab(w.deps, inp)
    settle(w, inp)
    child = inp_for(second_unit.second_unit_id(OID, 2))
    orders.reserve_budget(w.deps, child)
    with pytest.raises(NoPersonaAvailable):
        orders.assign_persona(w.deps, child)
    assert orders.reconcile(w.deps, child) == {"action": "release"}  # the ASL's Catch: -> Reconcile -> release
    orders.release_budget(w.deps, child)
    assert w.orders.get_order(child.order_id).status is S.FAILED
    holds = {h["order_id"]: h["state"] for h in w.ledger.holds(PID)}
    assert holds == {OID: "captured", child.order_id: "released"} and w.ledger.balance(PID).reserved == 0
    assert summarize(w.orders.list_round_orders(RID), population=10)["retest"]["stayed_inconclusive"] == 1


@pytest.mark.parametrize(("labs", "max_attempts"), [(["lab-1"], 2), (["lab-1", "lab-2"], 1)])
def test_no_lab_left_buys_nothing(labs: list[str], max_attempts: int) -> None:
    w = world()
    inp = inconclusive_first(w, labs=labs, max_lab_attempts=max_attempts)
    assert retest.next_lab(w.deps, inp)["action"] == "settle"
    assert w.orders.get_order(OID).second_unit_order_id is None
    assert len(w.orders.list_round_orders(RID)) == 1 and w.rounds.get_round(PID, RID).second_units == 0
    assert w.events.unique("RetestRequested") == {}


@pytest.mark.parametrize("max_attempts", [2, 3])
def test_an_inconclusive_second_unit_buys_a_third_only_while_labs_and_attempts_are_left(max_attempts: int) -> None:
    w = world()
    inp = inconclusive_first(w, max_lab_attempts=max_attempts)
    retest.next_lab(w.deps, inp)
    second = second_unit.second_unit_id(OID, 2)
    run_unit(w, second, VerdictKind.INCONCLUSIVE)
    retest.next_lab(w.deps, LabAttemptInput(**inp_for(second).model_dump()))
    third = second_unit.second_unit_id(OID, 3)
    if max_attempts == 2:
        assert w.orders.get_order(second).second_unit_order_id is None
        return
    unit = w.orders.get_order(third)
    # linked to the sampled unit, never to a lab that examined an earlier unit
    assert unit.parent_order_id == OID and unit.unit_number == 3
    assert unit.prior_labs == [w.orders.get_order(OID).lab_id, w.orders.get_order(second).lab_id]
    run_unit(w, third, VerdictKind.AUTHENTIC)
    assert w.orders.get_order(third).lab_id not in unit.prior_labs
    assert set(unit.prior_labs) | {w.orders.get_order(third).lab_id} == set(LABS)
    summary = summarize(w.orders.list_round_orders(RID), population=10)
    assert summary["conclusive"] == 1 and summary["counterfeit_hits"] == 0 and summary["sampled"] == 1
    assert summary["retest"]["second_units"] == 2 and summary["retest"]["second_units_concluded"] == 1


def test_same_sample_mode_is_unchanged_and_second_unit_is_accepted_by_the_setting() -> None:
    assert RetestPolicy(mode="second_unit", max_lab_attempts=3).mode == "second_unit"
    w = world()
    inp = inconclusive_first(w, mode="same_sample")
    assert retest.next_lab(w.deps, inp)["action"] == "await"
    assert w.orders.get_order(OID).second_unit_order_id is None and w.orders.get_order(OID).lab_attempt == 2


def test_units_fold_second_units_into_their_sampled_unit() -> None:
    a = builders.order(order_id="ord-a", verdict=VerdictKind.INCONCLUSIVE)
    a2 = builders.order(order_id="ord-a2", parent_order_id="ord-a", unit_number=2, verdict=VerdictKind.COUNTERFEIT)
    b = builders.order(order_id="ord-b", verdict=VerdictKind.INCONCLUSIVE)
    b2 = builders.order(order_id="ord-b2", parent_order_id="ord-b", unit_number=2, status=S.SKIPPED_BUDGET)
    c = builders.order(order_id="ord-c", verdict=VerdictKind.AUTHENTIC)
    orphan = builders.order(order_id="ord-x2", parent_order_id="ord-x", verdict=VerdictKind.COUNTERFEIT)
    folded = {u.order_id: u.verdict for u in second_unit.units([a2, a, b, b2, c, orphan])}
    V = VerdictKind
    assert folded == {"ord-a": V.COUNTERFEIT, "ord-b": V.INCONCLUSIVE, "ord-c": V.AUTHENTIC}
    with pytest.raises(ValueError, match="unit 1"):
        second_unit.second_unit_id("ord-a", 1)
    assert second_unit.second_unit_id("ord-a", 2) == second_unit.second_unit_id("ord-a", 2)
    assert second_unit.second_unit_id("ord-a", 2) != second_unit.second_unit_id("ord-a", 3)


def test_the_round_must_outlast_every_unit_a_sample_may_need() -> None:
    from datetime import UTC, datetime, timedelta

    from pydantic import ValidationError

    from chalicelib.domain.models import ProgramCreate

    now = datetime(2026, 1, 1, tzinfo=UTC)
    base: dict[str, Any] = {
        "name": "p",
        "currency": "CNY",
        "budget": 1000,
        "period_start": now,
        "period_end": now + timedelta(days=30),
        "round_size": 1,
        "labs": LABS,
    }
    waits = {"delivery_seconds": 10, "verdict_seconds": 20, "max_jitter_seconds": 5}
    # three labs, three attempts: three units in turn, 35 s each
    ok = ProgramCreate(
        **base, timeouts={**waits, "round_seconds": 105}, retest={"mode": "second_unit", "max_lab_attempts": 3}
    )
    assert ok.retest.mode == "second_unit"
    with pytest.raises(ValidationError) as err:
        ProgramCreate(
            **base, timeouts={**waits, "round_seconds": 104}, retest={"mode": "second_unit", "max_lab_attempts": 3}
        )
    assert "round_seconds" in str(err.value) and "105 s" in str(err.value)
    # only as many units as labs may examine them; same_sample is not held to it (unchanged)
    ProgramCreate(
        **{**base, "labs": ["lab-1", "lab-2"]},
        timeouts={**waits, "round_seconds": 70},
        retest={"mode": "second_unit", "max_lab_attempts": 3},
    )
    ProgramCreate(**base, timeouts={**waits, "round_seconds": 1}, retest={"max_lab_attempts": 3})


@pytest.mark.parametrize("broken", ["start", "publish"])
def test_a_task_that_failed_after_creating_the_unit_finishes_the_job_on_retry(
    broken: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world()
    inp = inconclusive_first(w)
    if broken == "publish":
        w.events.fail_next("publish")
    else:
        real = w.workflow.start
        calls = {"n": 0}

        def start_once_broken(machine: str, name: str, payload: Any) -> str:
            calls["n"] += 1
            if calls["n"] == 1:
                raise Boom("start")
            return real(machine, name, payload)

        monkeypatch.setattr(w.workflow, "start", start_once_broken)
    with pytest.raises(Boom):
        retest.next_lab(w.deps, inp)
    child_id = second_unit.second_unit_id(OID, 2)
    assert w.orders.get_order(OID).second_unit_order_id == child_id  # the unit is written ...
    assert retest.next_lab(w.deps, inp)["action"] == "settle"  # ... and the retry finishes the job
    assert ("order", child_id) in w.workflow.started
    assert w.rounds.get_round(PID, RID).second_units == 1
    assert len(w.events.unique("RetestRequested")) == 1
    assert len(second_unit.second_units(w.orders.list_round_orders(RID))) == 1
