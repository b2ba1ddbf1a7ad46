"""Re-tests and re-assignment (issue 10 item 1) on the in-memory fakes: inconclusive -> another lab -> conclusive,
a missed deadline -> escalation and re-assignment, no lab left, late verdicts refused, retries, and the programme
setting that governs it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.domain.custody import Actor
from chalicelib.domain.errors import Conflict, InvalidState
from chalicelib.domain.models import (
    ORDER_WAIT_LIMIT_SECONDS,
    OrderStatus,
    ProgramCreate,
    RetestPolicy,
    VerdictKind,
)
from chalicelib.services import lab, orders, retest
from chalicelib.services.lab import WrongLab
from chalicelib.services.retest import LabAttemptInput
from chalicelib.services.rounds import summarize
from tests import builders
from tests.fakes import Boom, World, world
from tests.unit.test_order_tasks import OID, PID, deliver, setup, to_placed

S = OrderStatus
LABS = ["lab-1", "lab-2", "lab-3"]


def tech(lab_id: str) -> Actor:
    return Actor(subject=f"tech@{lab_id}", role="lab", lab_id=lab_id)


def at_first_lab(w: World, labs: list[str] = LABS, **policy: Any) -> LabAttemptInput:
    inp = setup(w)
    program = w.programs.get_program(PID)
    w.programs.put_program(program.model_copy(update={"labs": labs, "retest": RetestPolicy(**policy)}))
    deliver(w, to_placed(w, inp))
    assert orders.forward_to_lab(w.deps, inp)["attempt"] == 1
    retest.await_verdict(w.deps, OID, "tok-1")
    return LabAttemptInput(**inp.model_dump(), attempt=1)


def post(w: World, lab_id: str, verdict: VerdictKind) -> tuple[Any, bool]:
    req = builders.court_verdict(w.deps.evidence, verdict, report_text=f"report of {lab_id}: {verdict.value}")
    return lab.post_verdict(w.deps, OID, lab_id, tech(lab_id), req, "c")


def queue_of(w: World, lab_id: str) -> list[str]:
    return [s["order_id"] for s in lab.queue(w.deps, lab_id)]


def settle(w: World, inp: LabAttemptInput) -> None:
    for task in (orders.capture_spend, orders.request_refund, orders.enforce, orders.publish_outcome):
        task(w.deps, inp)


def test_inconclusive_goes_to_another_lab_whose_conclusive_verdict_resumes_the_execution() -> None:
    w = world()
    inp = at_first_lab(w)
    first = w.orders.get_order(OID).lab_id
    assert first is not None and queue_of(w, first) == [OID]
    post(w, first, VerdictKind.INCONCLUSIVE)
    assert w.workflow.resumed["tok-1"] == {"verdict": "inconclusive"}

    decided = retest.next_lab(w.deps, inp)
    order = w.orders.get_order(OID)
    second = order.lab_id
    assert decided == {"action": "await", "attempt": 2, "lab_id": second}
    assert second in LABS and second != first and order.status is S.AT_LAB
    assert order.labs_tried == [first, second] and order.retest_reasons == ["inconclusive"]
    # the queue moved: the first lab no longer sees it, the second does
    assert queue_of(w, first) == [] and queue_of(w, second) == [OID]
    handover = [e for e in w.custody.chain(OID) if e.to_party == f"lab:{second}"]
    assert [(e.from_party, e.actor.subject) for e in handover] == [(f"lab:{first}", "system:next_lab")]
    (requested,) = w.events.unique("RetestRequested").values()
    assert (
        requested.detail["data"].items()
        >= {
            "reason": "inconclusive",
            "from_lab": first,
            "to_lab": second,
            "attempt": 2,
            "second_unit": False,
        }.items()
    )

    # the first lab may repeat what it said (idempotent) but can say nothing new, and moves nothing
    again, created = post(w, first, VerdictKind.INCONCLUSIVE)
    assert again.attempt == 1 and not created
    with pytest.raises(Conflict):
        post(w, first, VerdictKind.COUNTERFEIT)
    assert w.orders.get_order(OID).status is S.AT_LAB and w.orders.get_order(OID).lab_id == second
    with pytest.raises(WrongLab):  # a former lab no longer acts on the sample
        lab.add_custody(w.deps, OID, first, tech(first), _custody_in())

    retest.await_verdict(w.deps, OID, "tok-2")
    verdict, created = post(w, second, VerdictKind.COUNTERFEIT)
    assert created and verdict.attempt == 2 and verdict.lab_id == second
    assert w.workflow.resumed["tok-2"] == {"verdict": "counterfeit"}
    assert retest.next_lab(w.deps, inp.model_copy(update={"attempt": 2})) == {
        "action": "settle",
        "attempt": 2,
        "lab_id": second,
    }
    # one verdict per lab attempt; the order's verdict is the conclusive one
    assert [v.verdict for v in w.orders.list_verdicts(OID)] == [VerdictKind.INCONCLUSIVE, VerdictKind.COUNTERFEIT]
    assert w.orders.get_verdict(OID).verdict is VerdictKind.COUNTERFEIT  # type: ignore[union-attr]
    assert len(w.events.unique("VerdictRecorded")) == 2
    settle(w, inp)
    order = w.orders.get_order(OID)
    assert order.status is S.SETTLED and order.verdict is VerdictKind.COUNTERFEIT
    summary = summarize([order], population=10)
    assert summary["conclusive"] == 1 and summary["retest"] == {
        "retests_requested": 1,
        "overdue_escalations": 0,
        "retested_samples": 1,
        "concluded_after_retest": 1,
        "stayed_inconclusive": 0,
        "second_units": 0,
        "second_units_bought": 0,
        "second_units_concluded": 0,
    }


def _custody_in() -> Any:
    from chalicelib.domain.models import CustodyIn

    return CustodyIn(from_party="a", to_party="b", location="bench", condition="seal intact")


def test_a_missed_deadline_escalates_and_reassigns_and_the_late_verdict_is_refused() -> None:
    w = world()
    inp = at_first_lab(w)
    first = w.orders.get_order(OID).lab_id
    assert first is not None
    forwarded_at = w.orders.get_order(OID).labs_assigned_at[0]
    w.clock.advance(seconds=6)  # verdict_seconds = 5
    decided = retest.next_lab(w.deps, inp.model_copy(update={"reason": "overdue"}))
    second = decided["lab_id"]
    assert decided["action"] == "await" and decided["attempt"] == 2 and second not in (None, first)
    (missed,) = w.events.unique("VerdictDeadlineMissed").values()
    data = missed.detail["data"]
    assert (data["lab_id"], data["attempt"], data["reassigned_to"]) == (first, 1, second)
    assert datetime.fromisoformat(data["due_at"]) == forwarded_at + timedelta(seconds=5)
    (requested,) = w.events.unique("RetestRequested").values()
    assert requested.detail["data"]["reason"] == "overdue"
    assert queue_of(w, first) == [] and queue_of(w, second) == [OID]

    before = (w.orders.get_order(OID), list(w.custody.chain(OID)), len(w.events.published))
    with pytest.raises(Conflict) as late:
        post(w, first, VerdictKind.AUTHENTIC)
    assert "re-assigned" in str(late.value) and "late verdict" in str(late.value)
    assert (w.orders.get_order(OID), list(w.custody.chain(OID)), len(w.events.published)) == before
    assert w.orders.list_verdicts(OID) == []

    retest.await_verdict(w.deps, OID, "tok-2")
    post(w, second, VerdictKind.AUTHENTIC)
    assert w.workflow.resumed["tok-2"] == {"verdict": "authentic"}
    assert "tok-1" not in w.workflow.resumed
    assert retest.next_lab(w.deps, inp.model_copy(update={"attempt": 2}))["action"] == "settle"
    settle(w, inp)
    summary = summarize([w.orders.get_order(OID)], population=10)
    assert summary["retest"]["overdue_escalations"] == 1 and summary["retest"]["retests_requested"] == 0


def test_no_lab_left_settles_as_before_with_the_escalation_saying_so() -> None:
    w = world()
    inp = at_first_lab(w, labs=["lab-1"])
    assert retest.next_lab(w.deps, inp.model_copy(update={"reason": "overdue"})) == {
        "action": "settle",
        "attempt": 1,
        "lab_id": "lab-1",
    }
    (missed,) = w.events.unique("VerdictDeadlineMissed").values()
    assert missed.detail["data"]["reassigned_to"] is None
    assert w.events.unique("RetestRequested") == {}
    order = w.orders.get_order(OID)
    assert order.status is S.AT_LAB and order.last_lab_overdue
    settle(w, inp)
    order = w.orders.get_order(OID)
    assert order.status is S.SETTLED and order.verdict is None
    assert summarize([order], population=10)["retest"]["overdue_escalations"] == 1


@pytest.mark.parametrize(("labs", "max_attempts"), [(["lab-1"], 2), (LABS, 1)])
def test_an_inconclusive_verdict_stays_inconclusive_when_no_attempt_is_left(labs: list[str], max_attempts: int) -> None:
    w = world()
    inp = at_first_lab(w, labs=labs, max_lab_attempts=max_attempts)
    post(w, "lab-1" if labs == ["lab-1"] else w.orders.get_order(OID).lab_id or "", VerdictKind.INCONCLUSIVE)
    assert retest.next_lab(w.deps, inp)["action"] == "settle"
    assert w.events.unique("RetestRequested") == {}
    settle(w, inp)
    order = w.orders.get_order(OID)
    summary = summarize([order], population=10)
    assert order.verdict is VerdictKind.INCONCLUSIVE and summary["conclusive"] == 0  # nonresponse, as before
    assert summary["retest"]["stayed_inconclusive"] == 1 and summary["inconclusive_rate"] == 1.0


def test_three_labs_inconclusive_twice_then_conclusive_and_never_back_to_a_lab_that_had_it() -> None:
    w = world()
    inp = at_first_lab(w, max_lab_attempts=3)
    seen = []
    for attempt in (1, 2):
        current = w.orders.get_order(OID).lab_id or ""
        seen.append(current)
        post(w, current, VerdictKind.INCONCLUSIVE)
        assert retest.next_lab(w.deps, inp.model_copy(update={"attempt": attempt}))["action"] == "await"
        retest.await_verdict(w.deps, OID, f"tok-{attempt + 1}")
    third = w.orders.get_order(OID).lab_id or ""
    assert sorted([*seen, third]) == LABS
    post(w, third, VerdictKind.AUTHENTIC)
    assert w.workflow.resumed["tok-3"] == {"verdict": "authentic"}
    assert retest.next_lab(w.deps, inp.model_copy(update={"attempt": 3}))["action"] == "settle"


@pytest.mark.parametrize("broken", ["append", "publish"])
def test_a_retried_reassignment_finishes_the_hand_over_once(broken: str) -> None:
    w = world()
    inp = at_first_lab(w)
    first = w.orders.get_order(OID).lab_id or ""
    post(w, first, VerdictKind.INCONCLUSIVE)
    {"append": w.custody, "publish": w.events}[broken].fail_next(broken)
    with pytest.raises(Boom):
        retest.next_lab(w.deps, inp)
    decided = retest.next_lab(w.deps, inp)  # the task's retry
    again = retest.next_lab(w.deps, inp)  # and a duplicate run
    assert decided == again and decided["attempt"] == 2
    order = w.orders.get_order(OID)
    assert order.lab_attempt == 2 and order.labs_tried == [first, decided["lab_id"]]
    assert (
        len(
            [e for e in w.custody.chain(OID) if e.from_party == f"lab:{first}" and e.to_party != f"lab:{first}:archive"]
        )
        == 1
    )
    assert len(w.events.unique("RetestRequested")) == 1


def test_a_verdict_for_an_attempt_the_sample_has_left_is_refused_at_the_write() -> None:
    """The race: the lab read the order before the re-assignment, its write comes after it."""
    w = world()
    inp = at_first_lab(w)
    first = w.orders.get_order(OID).lab_id or ""
    retest.next_lab(w.deps, inp.model_copy(update={"reason": "overdue"}))
    from chalicelib.domain.models import Verdict

    late = Verdict(
        order_id=OID, lab_id=first, verdict=VerdictKind.AUTHENTIC, recorded_at=w.clock.now(), recorded_by="t", attempt=1
    )
    with pytest.raises(InvalidState):
        w.orders.put_verdict(late)
    with pytest.raises(InvalidState):
        w.orders.mark_verdict(OID, VerdictKind.AUTHENTIC, w.clock.now(), attempt=1)
    assert w.orders.list_verdicts(OID) == [] and w.orders.get_order(OID).status is S.AT_LAB


def test_the_execution_deadline_counts_every_lab_attempt() -> None:
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
    verdict = 120 * 86400
    timeouts = {"delivery_seconds": 14 * 86400, "verdict_seconds": verdict}
    ok = ProgramCreate(**base, timeouts=timeouts, retest={"max_lab_attempts": 2})
    assert ok.retest.mode == "same_sample"
    with pytest.raises(ValidationError) as err:
        ProgramCreate(**base, timeouts=timeouts, retest={"max_lab_attempts": 3})
    assert "3 lab attempts" in str(err.value) and str(ORDER_WAIT_LIMIT_SECONDS) in str(err.value)
    # only as many attempts as the programme has labs count
    ProgramCreate(**{**base, "labs": ["lab-1"]}, timeouts={**timeouts, "verdict_seconds": 300 * 86400})
    assert ProgramCreate(**base).retest == RetestPolicy(mode="same_sample", max_lab_attempts=2)


@pytest.mark.parametrize(
    ("retest_in", "needle"),
    [
        ({"mode": "elsewhere"}, "same_sample"),
        ({"max_lab_attempts": 0}, "greater than or equal to 1"),
        ({"max_lab_attempts": 6}, "less than or equal to 5"),
        ({"max_lab_attempts": "2"}, "valid integer"),
    ],
)
def test_the_retest_setting_is_validated(retest_in: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        RetestPolicy(**retest_in)
    assert needle in str(err.value)


def test_the_dashboard_times_each_lab_attempt_from_its_hand_over() -> None:
    from chalicelib.services import dashboard

    w = world()
    inp = at_first_lab(w)
    first = w.orders.get_order(OID).lab_id or ""
    w.clock.advance(seconds=4)
    post(w, first, VerdictKind.INCONCLUSIVE)
    retest.next_lab(w.deps, inp)
    second = w.orders.get_order(OID).lab_id or ""
    timeouts = w.programs.get_program(PID).timeouts  # verdict_seconds = 5
    w.clock.advance(seconds=4)  # 8 s since delivery, 4 s since the hand-over: not overdue
    assert dashboard.overdue_orders([w.orders.get_order(OID)], timeouts, w.clock.now()) == []
    w.clock.advance(seconds=2)
    (late,) = dashboard.overdue_orders([w.orders.get_order(OID)], timeouts, w.clock.now())
    assert late["stage"] == "awaiting_verdict" and late["overdue_seconds"] == 1
    post(w, second, VerdictKind.AUTHENTIC)
    turnaround = {t["lab_id"]: t for t in dashboard.lab_turnaround(w.deps, [w.orders.get_order(OID)])}
    assert set(turnaround) == {first, second}
    assert turnaround[second]["median_hours"] == round(6 / 3600, 4)


def test_a_verdict_that_lands_as_the_deadline_passes_counts_and_blocks_the_reassignment() -> None:
    """The race: the lab's verdict is recorded, its status change not yet made, when the deadline fires."""
    w = world()
    inp = at_first_lab(w)
    first = w.orders.get_order(OID).lab_id or ""
    from chalicelib.domain.lifecycle import OrderEvent
    from chalicelib.domain.models import Verdict

    recorded = Verdict(
        order_id=OID, lab_id=first, verdict=VerdictKind.AUTHENTIC, recorded_at=w.clock.now(), recorded_by="t"
    )
    w.orders.put_verdict(recorded)
    with pytest.raises(InvalidState):  # the re-assignment cannot pass a recorded verdict
        w.orders.reassign_lab(OID, OrderEvent.REASSIGN, 1, "lab-x", "overdue", w.clock.now())
    decided = retest.next_lab(w.deps, inp.model_copy(update={"reason": "overdue"}))
    assert decided == {"action": "settle", "attempt": 1, "lab_id": first}
    order = w.orders.get_order(OID)
    assert order.status is S.VERDICT and order.verdict is VerdictKind.AUTHENTIC
    assert w.events.unique("VerdictDeadlineMissed") == {} and w.events.unique("RetestRequested") == {}
