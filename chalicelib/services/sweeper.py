"""Ledger sweeper: release reservations whose order was never placed before its deadline (not a TTL: a TTL would
delete the hold without returning the money).

A reservation is stale when its hold is still ``reserved``, it was made more than ``deadline`` ago, and its order has
no ``marketplace_order_id`` (it was never placed). The order is marked ``failed`` first and the money released second:
if the sweep dies in between, the next sweep finds the same hold (still reserved, order still unplaced) and finishes
the job, whereas the other order could leave an order claiming a reservation that no longer exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.errors import DomainError, InvalidState, NotFound
from chalicelib.domain.models import Order, OrderStatus
from chalicelib.observability import logger
from chalicelib.services.deps import Deps

DEFAULT_DEADLINE = timedelta(hours=24)
EXPIRED = "reservation expired"
# Statuses in which an order may still be waiting for its purchase: the sweeper fails these, and only these.
_WAITING = (OrderStatus.SAMPLED, OrderStatus.RESERVED)


def sweep_all(
    d: Deps,
    deadline: timedelta = DEFAULT_DEADLINE,
    program_ids: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Sweep every programme's ledger (or only ``program_ids``); return what was done, as counts.

    Counts: ``programs`` swept, ``holds`` still reserved, ``fresh`` (within the deadline), ``placed`` (ordered, so
    kept), ``released`` (stale and released), ``orphans`` (released holds whose order record does not exist), and
    ``errors`` (holds that failed this time; the next sweep retries them).
    """
    now = d.clock.now()
    cutoff = now - deadline
    ids = list(program_ids) if program_ids is not None else d.ledger.list_accounts()
    counts = dict.fromkeys(("programs", "holds", "fresh", "placed", "released", "orphans", "errors"), 0)
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
            if outcome in ("released", "orphans"):
                log.info("stale reservation released", extra={"program_id": program_id, "order_id": order_id})
    return counts


def _sweep_one(d: Deps, program_id: str, order_id: str, now: datetime) -> str:
    try:
        order: Order | None = d.orders.get_order(order_id)
    except NotFound:
        order = None  # a hold without an order can never be placed: its money must come back
    if order is not None and order.marketplace_order_id is not None:
        return "placed"
    if order is not None and order.status in _WAITING:
        try:
            d.orders.update_order(
                order_id,
                {"status": OrderStatus.FAILED, "failure": EXPIRED, "updated_at": now},
                expect_status=list(_WAITING),
            )
        except InvalidState:
            # The order moved on meanwhile; if that move was its placement, the reservation is in use.
            if d.orders.get_order(order_id).marketplace_order_id is not None:
                return "placed"
    try:
        d.ledger.release(program_id, order_id)
    except InvalidState:
        return "placed"  # captured (or released) concurrently: nothing stale is held any more
    return "released" if order is not None else "orphans"
