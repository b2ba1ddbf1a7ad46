"""What the ASL must say about retries (statelint checks its syntax; the state-machine tests execute it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.models import MAX_LAB_ATTEMPTS, RETRY_BUDGET_SECONDS

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.Unknown",
    "Sandbox.Timedout",
    "Lambda.ClientExecutionTimeoutException",
    "TransientError",
}


def machines() -> dict[str, dict[str, Any]]:
    files = sorted((ROOT / "state_machines").glob("*.asl.json"))
    return {p.name.split(".")[0]: json.loads(p.read_text()) for p in files}


def tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, state in definition["States"].items():
        if state["Type"] == "Task":
            out[name] = state
        for branch in ("Iterator", "ItemProcessor"):
            if branch in state:
                out.update(tasks(state[branch]))
    return out


ALL_TASKS = [(m, n, s) for m, d in machines().items() for n, s in tasks(d).items()]


@pytest.mark.parametrize(("machine", "name", "state"), ALL_TASKS, ids=[f"{m}.{n}" for m, n, _ in ALL_TASKS])
def test_every_task_retries_the_lambda_services_own_failures(machine: str, name: str, state: dict[str, Any]) -> None:
    """Defect 6 (ASL part): Lambda.Unknown, Sandbox.Timedout and Lambda.ClientExecutionTimeoutException were retried
    nowhere; every task is idempotent, so every task retries them, with backoff."""
    retried: set[str] = set()
    for r in state.get("Retry", []):
        if "States.ALL" in r["ErrorEquals"]:
            retried |= LAMBDA_ERRORS
        retried |= set(r["ErrorEquals"])
        assert r.get("BackoffRate", 1.0) >= 1.5 and r.get("MaxAttempts", 3) >= 3, (name, r)
    assert retried >= LAMBDA_ERRORS, f"{machine}.{name} does not retry {sorted(LAMBDA_ERRORS - retried)}"


def retry_seconds(retrier: dict[str, Any]) -> float:
    interval, rate = retrier.get("IntervalSeconds", 1), retrier.get("BackoffRate", 2.0)
    cap = retrier.get("MaxDelaySeconds", float("inf"))
    return sum(min(interval * rate**i, cap) for i in range(retrier.get("MaxAttempts", 3)))


def successors(state: dict[str, Any]) -> set[str]:
    out = {state["Next"]} if "Next" in state else set()
    out |= {c["Next"] for c in state.get("Catch", [])} | {c["Next"] for c in state.get("Choices", [])}
    return out | ({state["Default"]} if "Default" in state else set())


def lab_loop(definition: dict[str, Any]) -> set[str]:
    """The states on a cycle through AwaitVerdict: run once per lab attempt (re-tests, re-assignments)."""
    states = definition["States"]

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in successors(states[todo.pop()]):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    return {n for n in reach("AwaitVerdict") if "AwaitVerdict" in reach(n)}


def test_the_order_machines_worst_case_retrying_fits_the_budget_the_timeouts_leave() -> None:
    """Programme timeouts are validated against RETRY_BUDGET_SECONDS; the ASL must not retry for longer. The states
    of the lab loop run once per lab attempt: they count MAX_LAB_ATTEMPTS times."""
    order = machines()["order"]
    loop = lab_loop(order)
    assert {"AwaitVerdict", "AfterVerdict", "VerdictOverdue", "NextLab"} <= loop
    assert "CaptureSpend" not in loop and "ForwardToLab" not in loop
    total = 0.0
    for name, state in tasks(order).items():
        worst = max((retry_seconds(r) for r in state.get("Retry", [])), default=0.0) * 2  # two retriers may alternate
        total += worst * (MAX_LAB_ATTEMPTS if name in loop else 1)
    assert total < RETRY_BUDGET_SECONDS, total


def test_the_lab_loop_ends_in_a_capture_on_every_way_out() -> None:
    """Re-tests and re-assignments (issue 10 item 1): a missed deadline escalates, anything else that fails in the
    loop captures (delivered = spent), and leaving the loop is always a capture."""
    order = machines()["order"]
    states = order["States"]
    catches = {c["ErrorEquals"][0]: c["Next"] for c in states["AwaitVerdict"]["Catch"]}
    assert catches == {"States.Timeout": "VerdictOverdue", "States.ALL": "CaptureSpend"}
    assert states["AwaitVerdict"]["Next"] == "AfterVerdict"
    loop = lab_loop(order)
    exits = {nxt for name in loop for nxt in successors(states[name])} - loop
    assert exits == {"CaptureSpend"}
    for name in ("AfterVerdict", "VerdictOverdue"):
        payload = states[name]["Parameters"]["Payload"]
        assert payload["attempt.$"] == "$.lab.result.attempt" and states[name]["ResultPath"] == "$.lab"
    assert states["NextLab"]["Default"] == "CaptureSpend"


def test_no_catch_after_delivery_leads_straight_to_a_release() -> None:
    """Defect 2: CaptureSpend caught every error into ReleaseBudget, releasing money that was paid."""
    order = machines()["order"]["States"]
    after_delivery = ("CaptureSpend", "ForwardToLab", "AwaitVerdict", "AfterVerdict", "VerdictOverdue")
    for name in (*after_delivery, "RequestRefund", "Enforce", "PublishOutcome"):
        for c in order[name].get("Catch", []):
            assert c["Next"] not in ("ReleaseBudget", "Reconcile"), (name, c)
