"""Re-tests and re-assignment (issue 10 item 1): what happens after each lab attempt of the order workflow.

After ``AwaitVerdict`` (``reason="verdict"``) or its timeout (``reason="overdue"``) the ``order`` state machine runs
:func:`next_lab` for the lab attempt it waited on. It decides from what is durable, never from the execution's data
alone:

- a conclusive verdict of that attempt: ``settle`` (capture, refund, enforce, publish as before);
- an inconclusive one: the sample goes to a lab of the programme that has not examined it (``RETEST``, a custody
  hand-over from the first lab to the next, ``RetestRequested``), and the execution waits again (``await``); no lab
  left, or ``retest.max_lab_attempts`` reached: ``settle`` (the sample stays inconclusive);
- the lab missed its deadline: ``VerdictDeadlineMissed`` (escalation) and, when a lab is left, ``REASSIGN`` (the same
  hand-over and ``RetestRequested``), else ``settle`` with ``reassigned_to=None`` (capture, no verdict: the money
  was spent on delivery);
- a verdict that landed just as the deadline passed counts as the verdict (no escalation);
- retest mode ``second_unit``: an inconclusive verdict buys the item again instead of handing the sample over
  (``chalicelib.services.second_units``: a new order for a lab no earlier unit used, its own execution) and this
  order settles; a missed deadline still re-assigns the sample itself.

Each lab attempt has its own wait point (``verdict`` for the first, ``verdict<n>`` after), its own verdict record and
its own ``VerdictRecorded``; the lab the sample was taken from can no longer post for it
(``chalicelib.services.lab.post_verdict``). Every step is idempotent: the re-assignment is one write conditional on the
status and the attempt; a retry after it redoes the custody entry (looked up first) and the events (deterministic
ids) of the hand-over it finds.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, Literal

from chalicelib.domain import second_unit
from chalicelib.domain.custody import Actor
from chalicelib.domain.errors import InvalidState
from chalicelib.domain.events import RetestRequested, VerdictDeadlineMissed, deterministic_event_id, envelope
from chalicelib.domain.lifecycle import OrderEvent
from chalicelib.domain.models import Order, OrderStatus, Program, lab_attempts
from chalicelib.services import custody, second_units
from chalicelib.services.deps import Deps
from chalicelib.services.lab import verdict_point
from chalicelib.services.orders import OrderTaskInput, await_point

S = OrderStatus
E = OrderEvent
REASONS = {"inconclusive": E.RETEST, "overdue": E.REASSIGN}


class LabAttemptInput(OrderTaskInput):
    """``next_lab``'s input: the attempt the execution waited on (from ``$.lab.result.attempt``) and why it stopped."""

    attempt: int = 1
    reason: Literal["verdict", "overdue"] = "verdict"


def await_verdict(d: Deps, order_id: str, token: str) -> dict[str, Any]:
    """``AwaitVerdict``: park the execution on the current lab attempt's wait point."""
    order = d.orders.get_order(order_id)
    return await_point(d, order_id, verdict_point(order.lab_attempt), token)


def next_lab_for(order: Order, program: Program) -> str | None:
    """The lab the sample goes to next: one of the programme's labs that has not had it, chosen by the order id
    (the same on every retry); ``None`` when none is left or the programme's attempts are used up. The labs that
    examined earlier units of the sample (a second unit's ``prior_labs``) count as tried and as attempts used."""
    tried = set(second_unit.labs_used(order))
    if len(order.prior_labs) + order.lab_attempt >= lab_attempts(program.retest, program.labs):
        return None
    candidates = [lab for lab in dict.fromkeys(program.labs) if lab not in tried]
    if not candidates:
        return None
    pick = int(hashlib.sha256(f"{order.order_id}|{order.lab_attempt}".encode()).hexdigest()[:8], 16)
    return candidates[pick % len(candidates)]


def _due_at(order: Order, program: Program, attempt: int) -> datetime:
    started = order.labs_assigned_at[attempt - 1] if len(order.labs_assigned_at) >= attempt else order.updated_at
    return started + timedelta(seconds=program.timeouts.verdict_seconds)


def next_lab(d: Deps, inp: LabAttemptInput) -> dict[str, Any]:
    """Decide what follows lab attempt ``inp.attempt``: ``{"action": "await" | "settle", "attempt", "lab_id"}``."""
    order = d.orders.get_order(inp.order_id)
    program = d.programs.get_program(order.program_id)
    attempt = inp.attempt
    if order.lab_attempt > attempt:
        # Decided already (a retried task): finish the hand-over it made.
        _handed_over(d, order, program, attempt, inp.correlation_id)
        return _result("await", order)
    if order.lab_attempt < attempt:
        raise InvalidState(
            f"order {order.order_id} is at lab attempt {order.lab_attempt}, not {attempt}",
            details=[{"field": "attempt", "attempt": order.lab_attempt}],
        )
    if order.status is S.VERDICT:
        verdict = d.orders.get_verdict(order.order_id, attempt)
        if verdict is None or verdict.verdict.conclusive:
            return _result("settle", order)
        reason = "inconclusive"
    elif order.status is S.AT_LAB and (recorded := d.orders.get_verdict(order.order_id, attempt)) is not None:
        # The lab answered as its deadline passed (its post is finishing its follow-ups): the answer counts.
        order = d.orders.mark_verdict(order.order_id, recorded.verdict, d.clock.now(), attempt=attempt)
        if recorded.verdict.conclusive:
            return _result("settle", order)
        reason = "inconclusive"
    elif order.status is S.AT_LAB and inp.reason == "overdue":
        reason = "overdue"
    else:
        return _result("settle", order)  # anything else is for the capture to judge (it refuses what it must)
    if reason == "inconclusive" and program.retest.mode == "second_unit":
        # second unit (issue 10 item 1): buy the item again for another lab; this order settles as it is
        second_units.buy_second_unit(d, order, program, inp.correlation_id)
        return _result("settle", order)
    to_lab = next_lab_for(order, program)
    if to_lab is None:
        if reason == "overdue":
            order = d.orders.record_lab_overdue(order.order_id, attempt, d.clock.now())
            _publish_overdue(d, order, program, attempt, None, inp.correlation_id)
        return _result("settle", order)
    try:
        order = d.orders.reassign_lab(order.order_id, REASONS[reason], attempt, to_lab, reason, d.clock.now())
    except InvalidState:
        if reason == "overdue" and d.orders.get_verdict(order.order_id, attempt) is not None:
            return next_lab(d, inp)  # a verdict landed meanwhile (the re-assignment refused): decide on it
        raise
    _handed_over(d, order, program, attempt, inp.correlation_id)
    return _result("await", order)


def _result(action: str, order: Order) -> dict[str, Any]:
    return {"action": action, "attempt": order.lab_attempt, "lab_id": order.lab_id}


def _handed_over(d: Deps, order: Order, program: Program, attempt: int, corr: str) -> None:
    """The follow-ups of the hand-over from lab attempt ``attempt`` to the next (each idempotent)."""
    labs = order.labs_tried
    from_lab, to_lab = labs[attempt - 1], labs[attempt]
    reason = order.retest_reasons[attempt - 1]
    if reason == "overdue":
        condition = f"re-assigned: lab {from_lab} missed its verdict deadline"
    else:
        condition = f"re-test: the verdict of lab {from_lab} was inconclusive"
    custody.append(
        d,
        order.order_id,
        Actor.system("next_lab"),
        from_party=f"lab:{from_lab}",
        to_party=f"lab:{to_lab}",
        location=f"lab {from_lab}",
        condition=condition,
        once=lambda e: (e.from_party, e.to_party, e.condition) == (f"lab:{from_lab}", f"lab:{to_lab}", condition),
    )
    if reason == "overdue":
        _publish_overdue(d, order, program, attempt, to_lab, corr)
    event = RetestRequested(
        order_id=order.order_id,
        round_id=order.round_id,
        seller_id=order.seller_id,
        reason=reason,
        from_lab=from_lab,
        to_lab=to_lab,
        attempt=attempt + 1,
        second_unit=False,
    )
    d.events.publish(
        [
            envelope(
                event,
                event_id=deterministic_event_id(order.order_id, "RetestRequested", str(attempt + 1)),
                correlation_id=corr,
                occurred_at=d.clock.now(),
                program_id=order.program_id,
            )
        ]
    )


def _publish_overdue(d: Deps, order: Order, program: Program, attempt: int, to_lab: str | None, corr: str) -> None:
    labs = order.labs_tried
    lab_id = labs[attempt - 1] if len(labs) >= attempt else (order.lab_id or "")
    event = VerdictDeadlineMissed(
        order_id=order.order_id,
        round_id=order.round_id,
        seller_id=order.seller_id,
        lab_id=lab_id,
        attempt=attempt,
        due_at=_due_at(order, program, attempt),
        reassigned_to=to_lab,
    )
    d.events.publish(
        [
            envelope(
                event,
                event_id=deterministic_event_id(order.order_id, "VerdictDeadlineMissed", str(attempt)),
                correlation_id=corr,
                occurred_at=d.clock.now(),
                program_id=order.program_id,
            )
        ]
    )
