"""Ledger sweeper, the last net under the order workflow: every stale hold comes back or is captured, according to
what the marketplace really holds (not a TTL: a TTL would delete the hold without returning the money).

A hold is looked at when it is still ``reserved`` and was made more than ``deadline`` ago. Then:

- no order record: released (an orphan can never be placed);
- order never placed (``sampled``/``reserved``): marked failed (conditional on that status, so an order being
  placed right now keeps its money), then released. Failed first, released second: a crash in between leaves a
  terminal order with a reserved hold, which the next sweep finishes;
- any other order whose execution has ended, or that is terminal or ``needs_reconciliation``, whatever its
  marketplace id: the same compensation as the workflow's (``orders.compensate``) asks the marketplace first, then
  cancels and releases a live order, captures a delivered one, and releases one the marketplace does not hold;
- an order whose execution is still running is left to it.

Compensated orders are also counted on their round (``orders.finalize``, once), so a round whose order execution
died still completes. The sweeper reads the ledger's reservation records per programme (``holds``); the IAM policy
that lets it do so is infra's (see ``.chalice/``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain import lifecycle
from chalicelib.domain.errors import DomainError, InvalidState, NotFound
from chalicelib.domain.models import Order, OrderStatus
from chalicelib.observability import logger
from chalicelib.services import orders as order_tasks
from chalicelib.services.deps import Deps

DEFAULT_DEADLINE = timedelta(hours=24)
EXPIRED = "reservation expired"
ENDED = "execution ended"
# Statuses in which an order may still be waiting for its purchase: the sweeper fails these, and only these.
_WAITING = (OrderStatus.SAMPLED, OrderStatus.RESERVED)
COUNTS = ("programs", "holds", "fresh", "running", "released", "captured", "orphans", "errors")


def sweep_all(
    d: Deps,
    deadline: timedelta = DEFAULT_DEADLINE,
    program_ids: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Sweep every programme's ledger (or only ``program_ids``); return what was done, as counts.

    Counts: ``programs`` swept, ``holds`` still reserved, ``fresh`` (within the deadline), ``running`` (left to
    their running execution), ``released``, ``captured``, ``orphans`` (released holds whose order record does not
    exist), and ``errors`` (holds that could not be settled this time: alerted, the next sweep retries them).
    """
    now = d.clock.now()
    cutoff = now - deadline
    ids = list(program_ids) if program_ids is not None else d.ledger.list_accounts()
    counts = dict.fromkeys(COUNTS, 0)
    log = logger()
    for program_id in ids:
        counts["programs"] += 1
        for hold in d.ledger.holds(program_id, "reserved"):
            counts["holds"] += 1
            order_id = str(hold["order_id"])
            if datetime.fromisoformat(str(hold["reserved_at"])) > cutoff:
                counts["fresh"] += 1
                continue
            try:
                outcome = _sweep_one(d, program_id, order_id, now)
            except DomainError as exc:
                counts["errors"] += 1
                log.warning(
                    "sweep failed for a hold",
                    extra={"program_id": program_id, "order_id": order_id, "error_type": type(exc).__name__},
                )
                continue
            counts[outcome] += 1
            if outcome in ("released", "captured", "orphans"):
                log.info(
                    "stale hold settled", extra={"program_id": program_id, "order_id": order_id, "outcome": outcome}
                )
    return counts


def _sweep_one(d: Deps, program_id: str, order_id: str, now: datetime) -> str:
    try:
        order: Order | None = d.orders.get_order(order_id)
    except NotFound:
        order = None
    if order is None:
        try:
            d.ledger.release(program_id, order_id)  # a hold without an order can never be placed
        except InvalidState:
            return "running"  # captured or released concurrently: nothing stale is held any more
        return "orphans"
    reason = ENDED
    if order.status in _WAITING:
        reason = EXPIRED
        try:
            order = d.orders.mark_failed(order_id, EXPIRED, now)
        except InvalidState:
            order = d.orders.get_order(order_id)  # it moved on meanwhile (placed?): look at it as it is now
    stopped = order.status in lifecycle.TERMINAL or order.status is OrderStatus.NEEDS_RECONCILIATION
    if not stopped and d.workflow.is_running("order", order_id):
        return "running"
    inp = order_tasks.OrderTaskInput(
        order_id=order_id,
        program_id=program_id,
        round_id=order.round_id,
        correlation_id=f"sweeper-{now:%Y%m%d%H}",
        error={"Error": reason},
    )
    outcome = order_tasks.compensate(d, inp)["outcome"]
    if outcome == "stuck":
        raise InvalidState(f"order {order_id} could not be settled: {outcome}")
    try:
        d.rounds.get_round(program_id, order.round_id)
    except NotFound:
        pass  # a hold outside any round (tests, repairs): nothing to count
    else:
        order_tasks.finalize(d, inp)
    return "captured" if outcome == "captured" else "released"
