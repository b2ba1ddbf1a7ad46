"""Retest mode ``second_unit`` (issue 10 item 1) on the real DynamoDB adapter (local stack): the second unit, the
parent's link to it and the round's ``second_units`` counter are one write that happens once; a parent linked to
another unit refuses a different one and leaves nothing behind; the unit is listed with its round."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from chalicelib.domain import second_unit
from chalicelib.domain.errors import InvalidState, NotFound
from chalicelib.domain.models import OrderStatus, Round, RoundStatus, VerdictKind
from chalicelib.services.deps import Deps
from tests import builders

S = OrderStatus


def test_the_second_unit_is_created_once_with_its_link_and_the_round_counter(deps: Deps) -> None:
    d = deps
    run = uuid.uuid4().hex[:8]
    pid, rid, oid = f"prg-su-{run}", f"rnd-su-{run}", f"ord-su-{run}"
    now = datetime.now(UTC)
    d.rounds.put_round(
        Round(
            program_id=pid,
            round_id=rid,
            status=RoundStatus.SAMPLED,
            seed=1,
            budget=1000,
            started_at=now,
            execution_name=rid,
            sampled=1,
        )
    )
    parent = builders.order(
        at=now, order_id=oid, program_id=pid, round_id=rid, status=S.VERDICT, verdict=VerdictKind.INCONCLUSIVE
    )
    d.orders.put_orders([parent])
    unit = parent.model_copy(
        update={
            "order_id": second_unit.second_unit_id(oid, 2),
            "status": S.SAMPLED,
            "verdict": None,
            "parent_order_id": oid,
            "unit_number": 2,
            "prior_labs": ["lab-a"],
        }
    )
    stored, created = d.orders.create_second_unit(oid, unit)
    assert created and stored == unit
    again, created = d.orders.create_second_unit(oid, unit)  # a retried task
    assert not created and again == unit
    assert d.orders.get_order(oid).second_unit_order_id == unit.order_id
    assert d.rounds.get_round(pid, rid).second_units == 1
    listed = {o.order_id: o for o in d.orders.list_round_orders(rid)}
    assert set(listed) == {oid, unit.order_id} and listed[unit.order_id].parent_order_id == oid

    # another unit for the same parent: refused, and nothing of it is written
    other = unit.model_copy(update={"order_id": second_unit.second_unit_id(oid, 3), "unit_number": 3})
    with pytest.raises(InvalidState):
        d.orders.create_second_unit(oid, other)
    with pytest.raises(NotFound):
        d.orders.get_order(other.order_id)
    assert d.rounds.get_round(pid, rid).second_units == 1
