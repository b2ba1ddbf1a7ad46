"""The safety net's handler (``app.execution_safety_net``, bound to Step Functions' status-change events) against the
real adapters: an order execution that ended badly is compensated and counted on its round; a round execution is
marked failed; anything else is ignored. (Executions really aborted mid-wait: tests/state_machine/test_compensation.)
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from chalicelib.config import settings
from chalicelib.domain.models import OrderStatus, Round, RoundStatus
from chalicelib.services.deps import Deps
from tests import builders


def status_event(machine_arn: str, name: str, status: str, payload: dict[str, Any]) -> dict[str, Any]:
    arn = machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": "123456789012",
        "time": datetime.now(UTC).isoformat(),
        "region": "us-east-1",
        "resources": [arn],
        "detail": {
            "executionArn": arn,
            "stateMachineArn": machine_arn,
            "name": name,
            "status": status,
            "input": json.dumps(payload),
        },
    }


def a_round(d: Deps, sampled: int = 1) -> tuple[str, str]:
    pid, rid = f"prg-net-{uuid.uuid4().hex[:10]}", f"rnd-net-{uuid.uuid4().hex[:10]}"
    d.rounds.put_round(
        Round(
            program_id=pid,
            round_id=rid,
            status=RoundStatus.SAMPLED,
            seed=1,
            budget=1_000,
            started_at=datetime.now(UTC),
            execution_name=rid,
            sampled=sampled,
        )
    )
    return pid, rid


def test_an_order_execution_that_failed_is_compensated_and_counted(local_stack: Any, deps: Deps) -> None:
    from testbuy.localstack import load_app

    pid, rid = a_round(deps)
    oid = f"ord-net-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    deps.ledger.open_account(pid, "CNY", None)
    deps.ledger.fund(pid, "f", 1_000, "CNY")
    deps.orders.put_orders(
        [
            builders.order(
                at=now,
                order_id=oid,
                program_id=pid,
                round_id=rid,
                seller_id="s",
                category="c",
                amount=300,
            )
        ]
    )
    deps.ledger.reserve(pid, oid, 300, "CNY", {})
    deps.orders.mark_reserved(oid, now)
    event = status_event(settings().order_state_machine_arn, oid, "TIMED_OUT", {"order_id": oid})
    out = load_app().execution_safety_net(event, None)
    assert out["handled"] is True and out["outcome"] == "released"
    order = deps.orders.get_order(oid)
    assert order.status is OrderStatus.FAILED and order.failure == "ExecutionTimedOut"
    assert {h["order_id"]: h["state"] for h in deps.ledger.holds(pid)} == {oid: "released"}
    assert deps.rounds.get_round(pid, rid).settled == 1
    # a redelivered event changes nothing more
    load_app().execution_safety_net(event, None)
    assert deps.rounds.get_round(pid, rid).settled == 1 and deps.ledger.balance(pid).available == 1_000


def test_a_round_execution_that_was_aborted_is_marked_failed(local_stack: Any, deps: Deps) -> None:
    from testbuy.localstack import load_app

    pid, rid = a_round(deps)
    event = status_event(settings().round_state_machine_arn, rid, "ABORTED", {"program_id": pid, "round_id": rid})
    assert load_app().execution_safety_net(event, None) == {"handled": True}
    assert deps.rounds.get_round(pid, rid).status is RoundStatus.FAILED


def test_other_statuses_and_machines_are_ignored(local_stack: Any, deps: Deps) -> None:
    from testbuy.localstack import load_app

    pid, rid = a_round(deps)
    ok = status_event(settings().round_state_machine_arn, rid, "SUCCEEDED", {"program_id": pid})
    other = status_event("arn:aws:states:us-east-1:123456789012:stateMachine:other", rid, "FAILED", {})
    assert load_app().execution_safety_net(ok, None) == {"handled": False}
    assert load_app().execution_safety_net(other, None) == {"handled": False}
    assert deps.rounds.get_round(pid, rid).status is RoundStatus.SAMPLED
