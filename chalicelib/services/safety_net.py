"""Safety net: an order or round execution ended FAILED, TIMED_OUT or ABORTED, so none of its Catches ran.

An order gets the same compensation its ASL would have run (ask the marketplace, cancel+release or capture) and is
counted on its round; a round is marked failed. Idempotent, so a redelivered event changes nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chalicelib.domain.lifecycle import EXECUTION_ENDED_BADLY
from chalicelib.observability import logger
from chalicelib.services import orders, rounds
from chalicelib.services.deps import Deps
from chalicelib.services.orders import OrderTaskInput
from chalicelib.services.rounds import RoundTaskInput


def execution_ended(d: Deps, detail: Mapping[str, Any], *, order_machine: str, round_machine: str) -> dict[str, Any]:
    """Compensate the execution that ``detail`` reports (``executionArn``, ``stateMachineArn``, ``name``, ``status``,
    ``input``); ``{"handled": False}`` for a status or machine that needs nothing."""
    status = str(detail.get("status", ""))
    machine_arn = str(detail.get("stateMachineArn", ""))
    name = str(detail.get("name", ""))
    if status not in EXECUTION_ENDED_BADLY or not name:
        return {"handled": False}
    error = {"Error": f"Execution{status.title().replace('_', '')}", "Cause": str(detail.get("cause") or status)}
    log = logger()
    if machine_arn == order_machine:
        order = d.orders.get_order(name)  # executions are named by their order id
        inp = OrderTaskInput(
            order_id=order.order_id,
            program_id=order.program_id,
            round_id=order.round_id,
            correlation_id=f"safety-net-{name}",
            error=error,
        )
        outcome = orders.compensate(d, inp)
        orders.finalize(d, inp)
        log.warning("order execution ended badly", extra={"order_id": name, "status": status, **outcome})
        return {"handled": True, **outcome}
    if machine_arn == round_machine:
        raw = detail.get("input")
        payload = json.loads(raw) if isinstance(raw, str) and raw else {}
        rnd = RoundTaskInput(
            program_id=str(payload.get("program_id", "")), round_id=name, correlation_id=f"safety-net-{name}"
        )
        rounds.round_failed(d, rnd, error)
        log.warning("round execution ended badly", extra={"round_id": name, "status": status})
        return {"handled": True}
    return {"handled": False}
