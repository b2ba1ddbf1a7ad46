"""``DynamoAppeals`` on the local stack's table (issue 10 item 2): one appeal per id, the status table enforced by
conditional writes (a retried event is a no-op, a stale one InvalidState), the lab queue joined and left, the
re-test verdict once, the wait point, and the overturn's conditional writes on the order and the seller history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.appeals import Appeal, AppealEvent, AppealStatus, RetestVerdict
from chalicelib.domain.errors import InvalidState, NotFound
from chalicelib.domain.models import OrderStatus, VerdictKind
from tests import builders

AE, A, V = AppealEvent, AppealStatus, VerdictKind


def appeal(order_id: str, lab: str, **kw: Any) -> Appeal:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "appeal_id": f"apl-{uuid.uuid4().hex[:24]}",
        "program_id": f"prg-{uuid.uuid4().hex[:8]}",
        "order_id": order_id,
        "round_id": "rnd-x",
        "seller_id": f"s-{uuid.uuid4().hex[:8]}",
        "filed_by": "marketplace",
        "filed_by_subject": "m",
        "statement": "genuine",
        "original_verdict": V.COUNTERFEIT,
        "original_lab": "lab-1",
        "verdict_at": now,
        "retest_lab": lab,
        "status": A.FILED,
        "filed_at": now,
        "deadline": now + timedelta(days=1),
        "updated_at": now,
        **kw,
    }
    return Appeal(**values)


def test_appeal_store_round_trip(deps: Any) -> None:
    repo = deps.appeals
    lab = f"lab-{uuid.uuid4().hex[:8]}"
    oid = f"ord-{uuid.uuid4().hex[:16]}"
    deps.orders.put_orders([builders.order(order_id=oid, status=OrderStatus.SETTLED, verdict=V.COUNTERFEIT)])
    a = appeal(oid, lab)
    assert repo.create(a) == (a, True)
    stored, created = repo.create(a.model_copy(update={"statement": "another"}))
    assert not created and stored.statement == "genuine"
    assert [x.appeal_id for x in repo.list_program(a.program_id)] == [a.appeal_id]
    with pytest.raises(NotFound):
        repo.get("apl-missing")

    assert repo.lab_queue(lab) == []
    assigned = repo.apply(a.appeal_id, AE.ASSIGN_RETEST, datetime.now(UTC))
    assert assigned.status is A.RETEST_ASSIGNED
    assert repo.apply(a.appeal_id, AE.ASSIGN_RETEST, datetime.now(UTC)).status is A.RETEST_ASSIGNED  # retried
    assert [x.appeal_id for x in repo.lab_queue(lab)] == [a.appeal_id]

    assert repo.arm(a.appeal_id, "tok") is None
    first, token = repo.arrive(a.appeal_id, {"verdict": "authentic"})
    assert (dict(first), token) == ({"verdict": "authentic"}, "tok")
    again, _ = repo.arrive(a.appeal_id, {"verdict": "counterfeit"})  # first write wins
    assert dict(again) == {"verdict": "authentic"}
    assert repo.arm(a.appeal_id, "tok2") == {"verdict": "authentic"}
    assert "tok" not in repr(repo.get(a.appeal_id))  # the token is never part of the record

    v = RetestVerdict(
        appeal_id=a.appeal_id, lab_id=lab, verdict=V.AUTHENTIC, recorded_at=datetime.now(UTC), recorded_by="t"
    )
    assert repo.put_retest_verdict(v) == (v, True)
    assert repo.put_retest_verdict(v.model_copy(update={"verdict": V.COUNTERFEIT}))[0].verdict is V.AUTHENTIC

    decided = repo.apply(a.appeal_id, AE.OVERTURN, datetime.now(UTC), {"outcome": "overturned"})
    assert decided.status is A.OVERTURNED and repo.lab_queue(lab) == []
    with pytest.raises(InvalidState):
        repo.apply(a.appeal_id, AE.UPHOLD, datetime.now(UTC))
    with pytest.raises(InvalidState):
        repo.apply(a.appeal_id, AE.EXPIRE, datetime.now(UTC))

    order = repo.overturn_order(oid, a.appeal_id, V.COUNTERFEIT, V.AUTHENTIC, datetime.now(UTC))
    assert (order.verdict, order.original_verdict, order.verdict_overturned_by) == (
        V.AUTHENTIC,
        V.COUNTERFEIT,
        a.appeal_id,
    )
    assert repo.overturn_order(oid, a.appeal_id, V.COUNTERFEIT, V.AUTHENTIC, datetime.now(UTC)).verdict is V.AUTHENTIC
    with pytest.raises(InvalidState):  # another appeal cannot overturn it again
        repo.overturn_order(oid, "apl-other", V.COUNTERFEIT, V.AUTHENTIC, datetime.now(UTC))

    seller = a.seller_id
    deps.orders.record_confirmed(seller, oid, datetime.now(UTC))
    deps.orders.record_confirmed(seller, "ord-other", datetime.now(UTC))
    assert len(deps.orders.confirmed_history(seller)) == 2
    repo.rescind_confirmed(seller, oid, a.appeal_id, datetime.now(UTC))
    repo.rescind_confirmed(seller, oid, a.appeal_id, datetime.now(UTC))  # retried
    repo.rescind_confirmed(seller, "ord-never-confirmed", a.appeal_id, datetime.now(UTC))  # nothing to rescind
    assert len(deps.orders.confirmed_history(seller)) == 1
