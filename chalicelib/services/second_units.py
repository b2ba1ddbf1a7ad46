"""Retest mode ``second_unit`` (issue 10 item 1): an inconclusive verdict buys the item again, for another lab.

Called by ``order_next_lab`` (``chalicelib.services.retest.next_lab``) when a lab attempt's verdict is inconclusive
and the programme's ``retest.mode`` is ``second_unit``. If a lab that has not examined any unit of the sample is left
(and ``retest.max_lab_attempts`` allows another lab), it:

1. creates the next unit's order (``sampled``; deterministic id from the sampled unit's id and the unit number; the
   same seller, category, round and design fields; ``parent_order_id`` = the sampled unit, ``prior_labs`` = the labs
   already used) together with the parent's ``second_unit_order_id`` and the round's ``second_units`` counter, in one
   write that happens once (``OrderRepository.create_second_unit``): the round waits for the new order;
2. starts the new order's own ``order`` execution, named by its order id (idempotent): a normal test buy, with its own
   reservation (``InsufficientFunds``: it ends ``skipped_budget`` and the sample stays inconclusive), persona (the
   per-seller cool-down applies: the parent's persona cannot buy from this seller again, another one does; none
   left: the order fails and its money is released), placement, delivery, lab, verdict, capture, refund and
   enforcement;
3. publishes ``RetestRequested`` (``second_unit: true``, the new order's id; deterministic id).

The parent then settles as it would have (its parcel was bought: capture; its inconclusive verdict recommends
nothing). A retried task finds the unit created and redoes 2 and 3.
"""

from __future__ import annotations

from typing import Any

from chalicelib.domain import second_unit
from chalicelib.domain.events import RetestRequested, deterministic_event_id, envelope
from chalicelib.domain.models import Order, OrderStatus, Program, lab_attempts
from chalicelib.services.deps import Deps
from chalicelib.services.orders import first_lab_for


def next_unit(order: Order, program: Program, now: Any) -> Order | None:
    """The order of the next unit bought for ``order``'s sample, or ``None`` when no lab is left to examine it (every
    programme lab examined a unit already, or ``retest.max_lab_attempts`` labs did)."""
    used = second_unit.labs_used(order)
    if len(used) >= lab_attempts(program.retest, program.labs):
        return None
    if not [lab for lab in program.labs if lab not in used]:
        return None
    root = second_unit.root_id(order)
    number = order.unit_number + 1
    return Order(
        order_id=second_unit.second_unit_id(root, number),
        program_id=order.program_id,
        round_id=order.round_id,
        seller_id=order.seller_id,
        category=order.category,
        pi=order.pi,
        design_pi=order.design_pi,
        risk=order.risk,
        exploration=False,  # not a unit of the draw: the risk model is measured on the sampled unit
        exploration_pi=None,
        stratum=order.stratum,
        seed=order.seed,
        amount=order.amount,
        currency=order.currency,
        status=OrderStatus.SAMPLED,
        created_at=now,
        updated_at=now,
        parent_order_id=root,
        unit_number=number,
        prior_labs=used,
    )


def buy_second_unit(d: Deps, order: Order, program: Program, correlation_id: str) -> Order | None:
    """Create (once), start and announce the next unit for ``order``'s inconclusive sample; ``None`` when no lab is
    left (the sample stays inconclusive)."""
    if order.second_unit_order_id is not None:
        unit: Order | None = d.orders.get_order(order.second_unit_order_id)
    else:
        unit = next_unit(order, program, d.clock.now())
        if unit is None:
            return None
        unit, _ = d.orders.create_second_unit(order.order_id, unit)
    assert unit is not None  # nosec B101 # narrowed above
    d.workflow.start(
        "order",
        unit.order_id,
        {
            "order_id": unit.order_id,
            "program_id": unit.program_id,
            "round_id": unit.round_id,
            "correlation_id": correlation_id,
            "timeouts": program.timeouts.model_dump(),
        },
    )
    to_lab = first_lab_for(unit, program.labs)  # the unit's first lab (the same on every retry)
    event = RetestRequested(
        order_id=order.order_id,
        round_id=order.round_id,
        seller_id=order.seller_id,
        reason="inconclusive",
        from_lab=order.lab_id or "",
        to_lab=to_lab,
        attempt=len(unit.prior_labs) + 1,
        second_unit=True,
        second_unit_order_id=unit.order_id,
    )
    d.events.publish(
        [
            envelope(
                event,
                event_id=deterministic_event_id(order.order_id, "RetestRequested", "second_unit", unit.order_id),
                correlation_id=correlation_id,
                occurred_at=d.clock.now(),
                program_id=order.program_id,
            )
        ]
    )
    return unit
