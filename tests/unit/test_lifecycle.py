"""The order lifecycle table, walked whole: every allowed transition through the in-memory repository (which
applies it exactly as the DynamoDB adapter does), every refused one, and the rules the table must keep."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.domain import lifecycle
from chalicelib.domain.errors import InvalidState
from chalicelib.domain.lifecycle import TRANSITIONS, Ledger, OrderEvent
from chalicelib.domain.models import TERMINAL_STATUSES, Order, OrderStatus, VerdictKind
from tests import builders
from tests.fakes import FakeOrders, FakeRounds

S, E = OrderStatus, OrderEvent
NOW = datetime(2026, 3, 1, tzinfo=UTC)
ALL_PAIRS = [(s, e) for s in S for e in E]


def repo_with(status: OrderStatus) -> FakeOrders:
    repo = FakeOrders(FakeRounds())
    repo.put_orders(
        [
            builders.order(
                at=NOW,
                order_id="o",
                program_id="p",
                round_id="r",
                seller_id="s",
                category="c",
                amount=100,
                status=status,
            )
        ]
    )
    return repo


def apply(repo: FakeOrders, event: OrderEvent) -> Order:
    intents = {
        E.RESERVE: lambda: repo.mark_reserved("o", NOW),
        E.SKIP_BUDGET: lambda: repo.mark_skipped_budget("o", NOW),
        E.PLACE_INTENT: lambda: repo.record_place_intent("o", NOW),
        E.PLACED: lambda: repo.mark_placed("o", "mo-1", 90, NOW),
        E.REFUSED: lambda: repo.mark_refused("o", NOW),
        E.DELIVERED: lambda: repo.mark_delivered("o", NOW, NOW),
        E.FORWARDED: lambda: repo.mark_at_lab("o", "lab-1", NOW),
        E.VERDICT: lambda: repo.mark_verdict("o", VerdictKind.AUTHENTIC, NOW),
        E.CAPTURED: lambda: repo.mark_settled("o", NOW),
        E.CANCEL_INTENT: lambda: repo.record_cancel_intent("o", "why", NOW),
        E.FAIL: lambda: repo.mark_failed("o", "why", NOW),
        E.FAIL_DELIVERY: lambda: repo.mark_failed("o", "why", NOW, delivery=True),
        E.STUCK: lambda: repo.mark_needs_reconciliation("o", "why", NOW),
        E.RETEST: lambda: repo.reassign_lab("o", E.RETEST, 1, "lab-2", "inconclusive", NOW),
        E.REASSIGN: lambda: repo.reassign_lab("o", E.REASSIGN, 1, "lab-2", "overdue", NOW),
    }
    assert set(intents) == set(E), "one typed repository intent per lifecycle event"
    return intents[event]()


@pytest.mark.parametrize(("status", "event"), ALL_PAIRS, ids=[f"{s.value}-{e.value}" for s, e in ALL_PAIRS])
def test_every_pair_is_applied_or_refused_as_the_table_says(status: OrderStatus, event: OrderEvent) -> None:
    repo = repo_with(status)
    expected = TRANSITIONS.get((status, event))
    if expected is not None:
        assert apply(repo, event).status is expected
        assert repo.get_order("o").status is expected
        assert apply(repo, event).status is expected  # the same intent again (a retry) is a no-op
    elif status is lifecycle.target(event) and event not in lifecycle.LAB_REASSIGNMENTS:
        assert apply(repo, event).status is status  # already there: a retried intent
    else:
        with pytest.raises(InvalidState):
            apply(repo, event)
        assert repo.get_order("o").status is status, "a refused transition changes nothing"


def test_terminal_statuses_are_exactly_those_with_no_way_out() -> None:
    assert lifecycle.TERMINAL == TERMINAL_STATUSES
    assert S.NEEDS_RECONCILIATION not in lifecycle.TERMINAL


def test_nothing_delivered_is_ever_released() -> None:
    delivered = {S.DELIVERED, S.AT_LAB, S.VERDICT}
    for (source, event), _ in TRANSITIONS.items():
        if source in delivered:
            assert lifecycle.owes(event).ledger is not Ledger.RELEASE, (source, event)


def test_money_is_released_only_where_the_marketplace_holds_no_live_order() -> None:
    for (source, event), _ in TRANSITIONS.items():
        if lifecycle.owes(event).ledger is Ledger.RELEASE and event is not E.REFUSED:
            assert source in (S.SAMPLED, S.RESERVED, S.CANCELLING), (source, event)


def test_the_marketplace_is_called_only_after_the_intent() -> None:
    assert lifecycle.sources(E.PLACED) == {S.PLACING} and lifecycle.sources(E.REFUSED) == {S.PLACING}
    assert lifecycle.owes(E.PLACE_INTENT).marketplace == "place_order"
    assert lifecycle.owes(E.CANCEL_INTENT).marketplace == "cancel_order"


def test_every_non_terminal_status_can_reach_a_terminal_one() -> None:
    graph: dict[OrderStatus, set[OrderStatus]] = {}
    for (source, _), to in TRANSITIONS.items():
        graph.setdefault(source, set()).add(to)
    for start in S:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & lifecycle.TERMINAL, start


def test_an_unknown_transition_names_the_status_and_event() -> None:
    with pytest.raises(InvalidState) as err:
        lifecycle.transition(S.SETTLED, E.FAIL)
    assert "settled" in str(err.value) and "fail" in str(err.value)


# --- retest (issue 10 item 1): re-assignments are conditioned on the lab attempt, not only on the status


def test_a_retest_starts_a_new_lab_attempt_and_moves_the_sample_to_the_new_labs_queue() -> None:
    repo = repo_with(S.DELIVERED)
    repo.mark_at_lab("o", "lab-1", NOW)
    assert [o.order_id for o in repo.lab_queue("lab-1")] == ["o"]
    repo.mark_verdict("o", VerdictKind.INCONCLUSIVE, NOW, attempt=1)
    order = repo.reassign_lab("o", E.RETEST, 1, "lab-2", "inconclusive", NOW)
    assert (order.status, order.lab_id, order.lab_attempt) == (S.AT_LAB, "lab-2", 2)
    assert order.labs_tried == ["lab-1", "lab-2"] and order.retest_reasons == ["inconclusive"]
    assert repo.lab_queue("lab-1") == [] and [o.order_id for o in repo.lab_queue("lab-2")] == ["o"]
    # the first lab's verdict can no longer move the sample
    with pytest.raises(InvalidState):
        repo.mark_verdict("o", VerdictKind.AUTHENTIC, NOW, attempt=1)
    assert repo.get_order("o").status is S.AT_LAB
    # a stale re-assignment (from attempt 1 to another lab) is refused; the same one again is a retry
    with pytest.raises(InvalidState):
        repo.reassign_lab("o", E.REASSIGN, 1, "lab-3", "overdue", NOW)
    assert repo.reassign_lab("o", E.RETEST, 1, "lab-2", "inconclusive", NOW) == order
    # the next attempt goes on from attempt 2
    overdue = repo.reassign_lab("o", E.REASSIGN, 2, "lab-3", "overdue", NOW)
    assert (overdue.lab_attempt, overdue.labs_tried, overdue.retest_reasons) == (
        3,
        ["lab-1", "lab-2", "lab-3"],
        ["inconclusive", "overdue"],
    )


def test_reassignments_keep_the_money_spent() -> None:
    for event in lifecycle.LAB_REASSIGNMENTS:
        assert lifecycle.owes(event).ledger is Ledger.NONE
        assert lifecycle.target(event) is S.AT_LAB and lifecycle.sources(event) <= {S.AT_LAB, S.VERDICT}
