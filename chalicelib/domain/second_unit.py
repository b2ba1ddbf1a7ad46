"""A second unit for an inconclusive sample (issue 10 item 1, ``retest.mode = "second_unit"``). Pure: no I/O.

When a lab's verdict on a sample is inconclusive and the programme's policy says ``second_unit``, the order workflow
buys the same seller's item again: a new order (its own reservation, persona, placement, delivery, capture) linked to
the sampled one, examined by a lab that has not examined an earlier unit. It is **not a sampled unit of its own**:
the round drew one unit from that seller, and the estimate counts one unit, whose outcome is the conclusive verdict of
whichever of its units got one (:func:`units`).

Ids are derived from the sampled unit's order id and the unit number, so a retried task creates the same order (one
conditional write) and starts the same execution (named by the order id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from chalicelib.domain.models import Order, VerdictKind


def second_unit_id(root_order_id: str, unit_number: int) -> str:
    """The order id of the ``unit_number``-th unit (2, 3, ...) bought for the sampled unit ``root_order_id``."""
    if unit_number < 2:
        raise ValueError("unit 1 is the sampled order itself")
    digest = hashlib.sha256(f"{root_order_id}|unit|{unit_number}".encode()).hexdigest()[:24]
    return f"ord-{digest}"


def root_id(order: Order) -> str:
    """The sampled unit an order belongs to (itself for a sampled order)."""
    return order.parent_order_id or order.order_id


def labs_used(order: Order) -> list[str]:
    """Every lab that examined this sample so far, over all its units, in order (earlier units' first)."""
    own = order.labs_tried or ([order.lab_id] if order.lab_id else [])
    return list(dict.fromkeys([*order.prior_labs, *own]))


def is_second_unit(order: Order) -> bool:
    return order.parent_order_id is not None


def units(orders: Iterable[Order]) -> list[Order]:
    """One record per sampled unit: the sampled orders (never the second units), each carrying as its ``verdict``
    the conclusive verdict of any of its units (a next unit is bought only after an inconclusive verdict, so at most
    one unit of a sample concludes); without one, the sampled order's own verdict (inconclusive, or none).

    Design fields (pi, stratum, risk, exploration, round) are the sampled order's: the estimate weighs the unit the
    round drew. A second unit whose sampled order is not in ``orders`` is ignored (it is never a unit)."""
    listed = list(orders)
    concluded: dict[str, VerdictKind] = {}
    for o in listed:
        if o.parent_order_id is not None and o.verdict is not None and o.verdict.conclusive:
            concluded.setdefault(o.parent_order_id, o.verdict)
    out: list[Order] = []
    for o in listed:
        if o.parent_order_id is not None:
            continue
        verdict = concluded.get(o.order_id)
        if verdict is not None and (o.verdict is None or not o.verdict.conclusive):
            o = o.model_copy(update={"verdict": verdict})
        out.append(o)
    return out


def second_units(orders: Sequence[Order]) -> list[Order]:
    """The orders bought again for inconclusive samples."""
    return [o for o in orders if o.parent_order_id is not None]
