"""State-machine task entry points: parse the task input, call one service function, return JSON.

Errors propagate: the Lambda runtime reports the exception's class name as ``errorType``, which the ASL's Retry and
Catch match (e.g. ``InsufficientFunds``, ``TransientError``, ``MarketplaceUnavailable``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.bootstrap import deps
from chalicelib.domain.lifecycle import EXECUTION_ENDED_BADLY
from chalicelib.observability import logger
from chalicelib.services import orders, rounds
from chalicelib.services.orders import OrderTaskInput
from chalicelib.services.rounds import RoundTaskInput


def _order(fn: Callable[..., dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda event: fn(deps(), OrderTaskInput.model_validate(event))


def _round(fn: Callable[..., dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda event: fn(deps(), RoundTaskInput.model_validate(event))


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "round_load_program": _round(rounds.load_program),
    "round_sample_sellers": _round(rounds.sample_sellers),
    "round_start_order": lambda e: rounds.start_order(deps(), e),
    "round_await_orders": lambda e: rounds.await_orders(deps(), RoundTaskInput.model_validate(e), e["task_token"]),
    "round_aggregate": _round(rounds.aggregate_round),
    "round_failed": lambda e: rounds.round_failed(deps(), RoundTaskInput.model_validate(e), e.get("error")),
    "order_reserve_budget": _order(orders.reserve_budget),
    "order_assign_persona": _order(orders.assign_persona),
    "order_place": _order(orders.place_order),
    "order_await_delivery": lambda e: orders.await_point(deps(), e["order_id"], "delivery", e["task_token"]),
    "order_forward_to_lab": _order(orders.forward_to_lab),
    "order_await_verdict": lambda e: orders.await_point(deps(), e["order_id"], "verdict", e["task_token"]),
    "order_capture": _order(orders.capture_spend),
    "order_refund": _order(orders.request_refund),
    "order_enforce": _order(orders.enforce),
    "order_publish": _order(orders.publish_outcome),
    "order_release": _order(orders.release_budget),
    "order_finalize": _order(orders.finalize),
    "order_reconcile": _order(orders.reconcile),
    "order_cancel": _order(orders.cancel_order),
    "order_needs_reconciliation": _order(orders.needs_reconciliation),
}


def run(name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Run task ``name``; log its outcome with keys (never persona data, which tasks do not return)."""
    log = logger()
    try:
        result = TASKS[name](event)
    except Exception as exc:
        log.warning(
            "task failed",
            extra={
                "task": name,
                "error_type": type(exc).__name__,
                "order_id": event.get("order_id"),
                "round_id": event.get("round_id"),
            },
        )
        raise
    log.debug("task done", extra={"task": name, "order_id": event.get("order_id")})
    return result


#: Statuses of Step Functions' "Execution Status Change" events that the safety net compensates.
ENDED_BADLY = EXECUTION_ENDED_BADLY


def execution_ended(event: dict[str, Any]) -> dict[str, Any]:
    """Safety net: an order or round execution ended FAILED, TIMED_OUT or ABORTED, so none of its Catches ran.

    An order gets the same compensation its ASL would have run (ask the marketplace, cancel+release or capture) and
    is counted on its round; a round is marked failed. Idempotent, so a redelivered event changes nothing more.
    The event is EventBridge's ``Step Functions Execution Status Change`` (``detail``: ``executionArn``,
    ``stateMachineArn``, ``name``, ``status``, ``input``)."""
    import json

    from chalicelib.config import settings

    detail = event.get("detail") or {}
    status = str(detail.get("status", ""))
    machine_arn = str(detail.get("stateMachineArn", ""))
    name = str(detail.get("name", ""))
    log = logger()
    if status not in ENDED_BADLY or not name:
        return {"handled": False}
    cfg = settings()
    error = {"Error": f"Execution{status.title().replace('_', '')}", "Cause": str(detail.get("cause") or status)}
    d = deps()
    if machine_arn == cfg.order_state_machine_arn:
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
    if machine_arn == cfg.round_state_machine_arn:
        raw = detail.get("input")
        payload = json.loads(raw) if isinstance(raw, str) and raw else {}
        program_id = str(payload.get("program_id", ""))
        rnd = RoundTaskInput(program_id=program_id, round_id=name, correlation_id=f"safety-net-{name}")
        rounds.round_failed(d, rnd, error)
        log.warning("round execution ended badly", extra={"round_id": name, "status": status})
        return {"handled": True}
    return {"handled": False}


def sweep() -> dict[str, Any]:
    """Scheduled: release reservations whose order was never placed before its deadline."""
    from datetime import timedelta

    from chalicelib.config import settings
    from chalicelib.services.sweeper import sweep_all

    return sweep_all(deps(), timedelta(hours=settings().sweep_deadline_hours))
