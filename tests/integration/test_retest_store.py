"""Re-tests and re-assignment (issue 10 item 1) on the real DynamoDB adapter (local stack): the re-assignment is one
write conditional on the status and the lab attempt, the lab queue (GSI2) moves with it, verdicts are kept per
attempt, and a verdict racing a re-assignment either wins (the re-assignment is refused) or is refused (and leaves
nothing behind), never both."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.domain.custody import Actor
from chalicelib.domain.errors import Conflict, InvalidState
from chalicelib.domain.lifecycle import OrderEvent
from chalicelib.domain.models import OrderStatus, Verdict, VerdictKind
from chalicelib.services import custody, lab
from chalicelib.services.deps import Deps
from tests import builders
from tests.fakes import FakeEvents, FakeWorkflow

S, E = OrderStatus, OrderEvent


@pytest.fixture()
def d(deps: Deps) -> Deps:
    return dataclasses.replace(deps, events=FakeEvents(), workflow=FakeWorkflow())


def court(d: Deps, verdict: VerdictKind) -> Any:
    """A court-grade verdict whose report is stored once per kind (a repeat is the same request)."""
    return builders.court_verdict(d.evidence, verdict, report_text=f"report: {verdict.value}")


def at_lab(d: Deps) -> tuple[str, str, str]:
    run = uuid.uuid4().hex[:8]
    oid, first, second = f"ord-rs-{run}", f"lab-rs-a-{run}", f"lab-rs-b-{run}"
    now = datetime.now(UTC)
    d.orders.put_orders(
        [
            builders.order(
                at=now,
                order_id=oid,
                status=S.DELIVERED,
                marketplace_order_id=f"mo-{run}",
                price=90,
                delivered_at=now,
            )
        ]
    )
    d.orders.mark_at_lab(oid, first, now)
    custody.append(
        d,
        oid,
        Actor.system("test"),
        from_party="seller:s",
        to_party=f"lab:{first}",
        at=now,
        location="x",
        condition="y",
    )
    return oid, first, second


def queued(d: Deps, lab_id: str) -> list[str]:
    return [o.order_id for o in d.orders.lab_queue(lab_id)]


def test_a_reassignment_moves_the_queue_once_and_refuses_stale_writes(d: Deps) -> None:
    oid, first, second = at_lab(d)
    now = datetime.now(UTC)
    assert d.orders.get_order(oid).lab_attempt == 1 and queued(d, first) == [oid]
    moved = d.orders.reassign_lab(oid, E.REASSIGN, 1, second, "overdue", now)
    assert (moved.status, moved.lab_id, moved.lab_attempt, moved.labs_tried) == (S.AT_LAB, second, 2, [first, second])
    assert queued(d, first) == [] and queued(d, second) == [oid]
    assert d.orders.reassign_lab(oid, E.REASSIGN, 1, second, "overdue", now) == moved  # a retry
    with pytest.raises(InvalidState):
        d.orders.reassign_lab(oid, E.REASSIGN, 1, f"{second}-other", "overdue", now)
    late = Verdict(order_id=oid, lab_id=first, verdict=VerdictKind.AUTHENTIC, recorded_at=now, recorded_by="t")
    with pytest.raises(InvalidState):
        d.orders.put_verdict(late)
    with pytest.raises(InvalidState):
        d.orders.mark_verdict(oid, VerdictKind.AUTHENTIC, now, attempt=1)
    assert d.orders.list_verdicts(oid) == [] and d.orders.get_order(oid) == moved
    # the new lab's verdict is attempt 2's, and the order's
    stored, created = d.orders.put_verdict(
        late.model_copy(update={"lab_id": second, "attempt": 2, "verdict": VerdictKind.COUNTERFEIT})
    )
    assert created and d.orders.put_verdict(stored) == (stored, False)
    done = d.orders.mark_verdict(oid, VerdictKind.COUNTERFEIT, now, attempt=2)
    assert done.status is S.VERDICT and queued(d, second) == []
    assert d.orders.get_verdict(oid) == stored and d.orders.get_verdict(oid, 1) is None


def test_an_inconclusive_verdict_and_its_retest_keep_one_record_per_attempt(d: Deps) -> None:
    oid, first, second = at_lab(d)
    tech = Actor("tech-a", "lab", first)
    lab.post_verdict(d, oid, first, tech, court(d, VerdictKind.INCONCLUSIVE), "c")
    d.orders.reassign_lab(oid, E.RETEST, 1, second, "inconclusive", datetime.now(UTC))
    # the first lab may repeat itself, not change its mind
    again, created = lab.post_verdict(d, oid, first, tech, court(d, VerdictKind.INCONCLUSIVE), "c")
    assert not created and again.attempt == 1
    with pytest.raises(Conflict):
        lab.post_verdict(d, oid, first, tech, court(d, VerdictKind.AUTHENTIC), "c")
    lab.post_verdict(d, oid, second, Actor("tech-b", "lab", second), court(d, VerdictKind.AUTHENTIC), "c")
    assert [(v.attempt, v.lab_id, v.verdict) for v in d.orders.list_verdicts(oid)] == [
        (1, first, VerdictKind.INCONCLUSIVE),
        (2, second, VerdictKind.AUTHENTIC),
    ]
    order = d.orders.get_order(oid)
    assert order.status is S.VERDICT and order.verdict is VerdictKind.AUTHENTIC


@pytest.mark.parametrize("round_", range(4))
def test_a_late_verdict_racing_the_reassignment_never_lands_on_both_sides(d: Deps, round_: int) -> None:
    oid, first, second = at_lab(d)
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def post() -> None:
        barrier.wait()
        try:
            results["post"] = lab.post_verdict(
                d, oid, first, Actor("tech-a", "lab", first), court(d, VerdictKind.AUTHENTIC), "c"
            )
        except Exception as exc:  # noqa: BLE001 - asserted below
            results["post"] = exc

    def reassign() -> None:
        barrier.wait()
        try:
            results["reassign"] = d.orders.reassign_lab(oid, E.REASSIGN, 1, second, "overdue", datetime.now(UTC))
        except Exception as exc:  # noqa: BLE001 - asserted below
            results["reassign"] = exc

    threads = [threading.Thread(target=post), threading.Thread(target=reassign)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    order = d.orders.get_order(oid)
    verdicts = d.orders.list_verdicts(oid)
    if order.lab_attempt == 2:  # the re-assignment won: the late verdict left nothing
        assert isinstance(results["post"], Conflict | InvalidState), results
        assert verdicts == [] and order.status is S.AT_LAB and order.verdict is None
    else:  # the verdict won: the re-assignment was refused
        assert isinstance(results["reassign"], InvalidState), results
        assert [v.lab_id for v in verdicts] == [first] and order.status is S.VERDICT
