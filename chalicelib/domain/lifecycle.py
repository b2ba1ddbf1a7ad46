"""The order's lifecycle, in one place: (status, event) -> status, and what each transition owes.

Nothing else decides a status. Services name the *event* (through one typed repository method per intent); the
repository asks :func:`transition` for the target and makes its write conditional on the from-status, so a stale
writer (a retried task, the sweeper, the safety net) can never move an order along a path this table does not allow.

What a transition *owes* is the side effect that must have happened (or must happen next) for the new status to tell
the truth: the ledger operation, the marketplace call, the events. The services that apply an event perform what it
owes; ``tests/unit/test_lifecycle.py`` walks the whole table.

Rules that shape the table (DESIGN.md section 3, "Side effects and compensation"):

- the marketplace is called only after ``place_intent`` is durable (``PLACING``): after that, whatever fails, the
  compensation asks the marketplace (by order id, its idempotency key) what really happened;
- money is released only from statuses in which the marketplace is known to hold no live order;
- once delivered, the money is spent: no event leads from a delivered status to a release, only to ``captured``
  or to ``stuck`` (``NEEDS_RECONCILIATION``, which keeps the hold and raises an alert).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from chalicelib.domain.errors import InvalidState
from chalicelib.domain.models import OrderStatus

S = OrderStatus


class OrderEvent(StrEnum):
    RESERVE = "reserve"
    SKIP_BUDGET = "skip_budget"
    PLACE_INTENT = "place_intent"
    PLACED = "placed"
    REFUSED = "refused"
    DELIVERED = "delivered"
    FORWARDED = "forwarded"
    VERDICT = "verdict"
    # --- retest (issue 10 item 1): the sample goes to another lab (a new lab attempt); the money stays spent
    RETEST = "retest"  # the verdict was inconclusive
    REASSIGN = "reassign"  # the lab missed its verdict deadline
    # --- end retest
    CAPTURED = "captured"
    CANCEL_INTENT = "cancel_intent"
    FAIL = "fail"
    FAIL_DELIVERY = "fail_delivery"
    STUCK = "stuck"


E = OrderEvent
#: Events that start a new lab attempt (the repository conditions them on the attempt, not only on the status).
LAB_REASSIGNMENTS = frozenset({OrderEvent.RETEST, OrderEvent.REASSIGN})


class Ledger(StrEnum):
    NONE = "none"
    RESERVE = "reserve"
    CAPTURE = "capture"
    RELEASE = "release"
    KEEP = "keep"  # the hold stays reserved on purpose (reconciliation pending)


@dataclass(frozen=True)
class Owes:
    """What a transition owes: the ledger operation, the marketplace call, the events it publishes."""

    ledger: Ledger = Ledger.NONE
    marketplace: str | None = None
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    sources: frozenset[OrderStatus]
    target: OrderStatus
    owes: Owes


_LIVE_OR_UNKNOWN = frozenset({S.PLACING, S.PLACED})
_DELIVERED = frozenset({S.DELIVERED, S.AT_LAB, S.VERDICT})

RULES: dict[OrderEvent, Rule] = {
    E.RESERVE: Rule(frozenset({S.SAMPLED}), S.RESERVED, Owes(Ledger.RESERVE)),
    E.SKIP_BUDGET: Rule(frozenset({S.SAMPLED}), S.SKIPPED_BUDGET, Owes()),
    # The intent is durable before the marketplace is called (the order id is its idempotency key).
    E.PLACE_INTENT: Rule(frozenset({S.RESERVED}), S.PLACING, Owes(marketplace="place_order")),
    E.PLACED: Rule(frozenset({S.PLACING}), S.PLACED, Owes(events=("OrderPlaced",))),
    E.REFUSED: Rule(frozenset({S.PLACING}), S.REFUSED, Owes(Ledger.RELEASE)),
    # A delivery found while cancelling wins: the parcel is bought, the money is spent.
    E.DELIVERED: Rule(frozenset({S.PLACED, S.PLACING, S.CANCELLING, S.NEEDS_RECONCILIATION}), S.DELIVERED, Owes()),
    E.FORWARDED: Rule(frozenset({S.PLACED, S.DELIVERED}), S.AT_LAB, Owes(events=("custody",))),
    E.VERDICT: Rule(frozenset({S.AT_LAB}), S.VERDICT, Owes(events=("custody", "resume", "VerdictRecorded"))),
    # --- retest: conditional on the lab attempt too (the repository's write), so a retried or stale re-assignment
    # can never move the sample twice; the new lab's queue takes it, the old lab's loses it.
    E.RETEST: Rule(frozenset({S.VERDICT}), S.AT_LAB, Owes(events=("custody", "RetestRequested"))),
    E.REASSIGN: Rule(
        frozenset({S.AT_LAB}), S.AT_LAB, Owes(events=("custody", "VerdictDeadlineMissed", "RetestRequested"))
    ),
    # --- end retest
    E.CAPTURED: Rule(_DELIVERED | {S.NEEDS_RECONCILIATION}, S.SETTLED, Owes(Ledger.CAPTURE, events=("OrderSettled",))),
    E.CANCEL_INTENT: Rule(_LIVE_OR_UNKNOWN | {S.NEEDS_RECONCILIATION}, S.CANCELLING, Owes(marketplace="cancel_order")),
    # Release only where no live marketplace order can exist: never placed, or cancellation confirmed.
    E.FAIL: Rule(frozenset({S.SAMPLED, S.RESERVED, S.CANCELLING}), S.FAILED, Owes(Ledger.RELEASE, events=())),
    E.FAIL_DELIVERY: Rule(
        frozenset({S.CANCELLING}), S.DELIVERY_FAILED, Owes(Ledger.RELEASE, events=("OrderDeliveryFailed",))
    ),
    # Compensation could not finish: keep the hold, alert, let the sweeper retry.
    E.STUCK: Rule(
        frozenset({S.SAMPLED, S.RESERVED, S.PLACING, S.PLACED, S.CANCELLING}) | _DELIVERED,
        S.NEEDS_RECONCILIATION,
        Owes(Ledger.KEEP, events=("OrderReconciliationRequired",)),
    ),
}

TRANSITIONS: dict[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    (source, event): rule.target for event, rule in RULES.items() for source in rule.sources
}

#: Statuses from which an order may still be bought or is bought and in progress (the marketplace may hold it).
MARKETPLACE_MAY_HOLD = frozenset({S.PLACING, S.PLACED, S.CANCELLING, S.NEEDS_RECONCILIATION}) | _DELIVERED
#: No further event applies: the money is settled one way or the other.
TERMINAL = frozenset(s for s in S if not any(src == s for src, _ in TRANSITIONS))


def sources(event: OrderEvent) -> frozenset[OrderStatus]:
    """The from-statuses ``event`` may be applied in (the repository's write condition)."""
    return RULES[event].sources


def target(event: OrderEvent) -> OrderStatus:
    return RULES[event].target


def owes(event: OrderEvent) -> Owes:
    return RULES[event].owes


def transition(status: OrderStatus, event: OrderEvent) -> OrderStatus:
    """The status after ``event``; ``InvalidState`` if the table does not allow it."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise InvalidState(
            f"an order that is {status.value} cannot take event {event.value}",
            details=[{"field": "status", "status": status.value, "event": event.value}],
        ) from None


def allows(status: OrderStatus, event: OrderEvent) -> bool:
    return (status, event) in TRANSITIONS


# Step Functions execution statuses after which no Catch ran: the safety net compensates these (app.py binds them).
EXECUTION_ENDED_BADLY = ("FAILED", "TIMED_OUT", "ABORTED")
