"""State-machine task entry points: parse the task input, call one service function, return JSON.

Errors propagate: the Lambda runtime reports the exception's class name as ``errorType``, which the ASL's Retry and
Catch match (e.g. ``InsufficientFunds``, ``TransientError``, ``MarketplaceUnavailable``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.bootstrap import deps
from chalicelib.observability import logger
from chalicelib.services import appeals, orders, retest, rounds
from chalicelib.services.appeals import AppealTaskInput
from chalicelib.services.orders import OrderTaskInput
from chalicelib.services.rounds import RoundTaskInput


def _order(fn: Callable[..., dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda event: fn(deps(), OrderTaskInput.model_validate(event))


def _appeal(fn: Callable[..., dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda event: fn(deps(), AppealTaskInput.model_validate(event))


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
    "order_await_verdict": lambda e: retest.await_verdict(deps(), e["order_id"], e["task_token"]),
    "order_next_lab": lambda e: retest.next_lab(deps(), retest.LabAttemptInput.model_validate(e)),
    "order_capture": _order(orders.capture_spend),
    "order_refund": _order(orders.request_refund),
    "order_enforce": _order(orders.enforce),
    "order_publish": _order(orders.publish_outcome),
    "order_release": _order(orders.release_budget),
    "order_finalize": _order(orders.finalize),
    "order_reconcile": _order(orders.reconcile),
    "order_cancel": _order(orders.cancel_order),
    "order_needs_reconciliation": _order(orders.needs_reconciliation),
    # appeals (issue 10 item 2)
    "appeal_assign_retest_lab": _appeal(appeals.assign_retest_lab),
    "appeal_await_retest": lambda e: appeals.await_retest(deps(), e["appeal_id"], e["task_token"]),
    "appeal_decide": _appeal(appeals.decide),
    "appeal_rescind": _appeal(appeals.rescind),
    "appeal_expire": _appeal(appeals.expire),
    "appeal_publish": _appeal(appeals.publish_decision),
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
                "appeal_id": event.get("appeal_id"),
            },
        )
        raise
    log.debug("task done", extra={"task": name, "order_id": event.get("order_id")})
    return result


def execution_ended(event: dict[str, Any]) -> dict[str, Any]:
    """Safety net entry point: EventBridge's ``Step Functions Execution Status Change`` event."""
    from chalicelib.config import settings
    from chalicelib.services import safety_net

    cfg = settings()
    return safety_net.execution_ended(
        deps(),
        event.get("detail") or {},
        order_machine=cfg.order_state_machine_arn,
        round_machine=cfg.round_state_machine_arn,
    )


def sweep() -> dict[str, Any]:
    """Scheduled: release reservations whose order was never placed before its deadline."""
    from datetime import timedelta

    from chalicelib.config import settings
    from chalicelib.services.sweeper import sweep_all

    return sweep_all(deps(), timedelta(hours=settings().sweep_deadline_hours))
