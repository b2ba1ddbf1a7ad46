"""The Lambda bridge (testbuy/bridge.py): moto's Lambda service runs the Chalice app's handlers in-process, and a
handler's exception reaches the caller -- boto3, or a Step Functions Retry/Catch -- as the Lambda service reports it:
``FunctionError: Unhandled`` and ``{"errorType": <exception class name>, ...}``."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chalicelib.domain.models import Round, RoundStatus
from testbuy.bridge import Bridge

ORDER_INPUT = {"program_id": "prg-none", "round_id": "rnd-none", "correlation_id": "corr-bridge"}


@pytest.fixture()
def lam(local_stack: Any) -> Any:
    import boto3

    # No client-side retries: an error must surface on the first call, not be hidden by botocore.
    return boto3.client("lambda", region_name="us-east-1", config=Config(retries={"total_max_attempts": 1}))


def fn(local_stack: Any, task: str) -> str:
    return str(local_stack.description.function_name(task))


def invoke(lam: Any, name: str, payload: Any) -> tuple[str | None, Any]:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
    return resp.get("FunctionError"), json.loads(resp["Payload"].read())


# ------------------------------------------------------------------------------------------------ through boto3


def test_handler_result_comes_back_as_the_payload(local_stack: Any, lam: Any, api: Any, deps: Any) -> None:
    now = datetime.now(UTC)
    program = api("program_manager").call(
        "POST",
        "/programs",
        {
            "name": "bridge",
            "currency": "EUR",
            "budget": 1000,
            "period_start": (now - timedelta(days=1)).isoformat(),
            "period_end": (now + timedelta(days=1)).isoformat(),
            "round_size": 1,
        },
    )
    rid = f"rnd-bridge-{uuid.uuid4().hex[:8]}"
    deps.rounds.put_round(
        Round(
            program_id=program["program_id"],
            round_id=rid,
            status=RoundStatus.STARTED,
            seed=42,
            budget=777,
            started_at=now,
            execution_name=rid,
        )
    )
    error, payload = invoke(
        lam,
        fn(local_stack, "round_load_program"),
        {"program_id": program["program_id"], "round_id": rid, "correlation_id": "c", "extra": "ignored"},
    )
    assert error is None
    assert payload == {"currency": "EUR", "budget": 777, "seed": 42}


def test_domain_exception_is_reported_as_function_error_with_its_type(local_stack: Any, lam: Any) -> None:
    bridge = local_stack.bridge
    errors_before = bridge.errors
    order_id = f"ord-missing-{uuid.uuid4().hex[:8]}"
    error, payload = invoke(lam, fn(local_stack, "order_reserve_budget"), {**ORDER_INPUT, "order_id": order_id})
    assert error == "Unhandled"
    assert payload["errorType"] == "NotFound"
    assert order_id in payload["errorMessage"]
    assert payload["stackTrace"] and "NotFound" in payload["stackTrace"][0]
    assert bridge.errors == errors_before + 1


def test_invalid_task_input_is_reported_as_validation_error(local_stack: Any, lam: Any) -> None:
    error, payload = invoke(lam, fn(local_stack, "order_capture"), {"order_id": "ord-x"})
    assert error == "Unhandled"
    assert payload["errorType"] == "ValidationError"
    assert "program_id" in payload["errorMessage"]


@pytest.mark.parametrize("name", ["testbuy-test-no_such_task", "some-other-function"])
def test_unknown_function_name_is_an_error_not_an_echo(local_stack: Any, lam: Any, name: str) -> None:
    """moto's own ``use_docker: False`` backend would echo the input back as a success; through the bridge an
    invocation of a function with no Chalice handler must fail the way the Lambda service does: 404
    ResourceNotFoundException."""
    calls_before = dict(local_stack.bridge.calls)
    with pytest.raises(ClientError) as err:
        lam.invoke(FunctionName=name, Payload=b'{"order_id": "x"}')
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert local_stack.bridge.calls == calls_before  # no handler ran


# ---------------------------------------------------------------------------------------------- through Step Functions


def _machine(local_stack: Any, function_arn: str) -> str:
    definition = {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
                "ResultSelector": {"result.$": "$.Payload"},
                "Retry": [{"ErrorEquals": ["NotFound"], "IntervalSeconds": 1, "MaxAttempts": 1, "BackoffRate": 1.0}],
                "Catch": [
                    {"ErrorEquals": ["InsufficientFunds"], "ResultPath": "$.error", "Next": "WrongBranch"},
                    {"ErrorEquals": ["NotFound"], "ResultPath": "$.error", "Next": "CaughtNotFound"},
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "WrongBranch"},
                ],
                "End": True,
            },
            "CaughtNotFound": {"Type": "Pass", "End": True},
            "WrongBranch": {"Type": "Fail", "Error": "WrongBranch"},
        },
    }
    sfn = local_stack.client("stepfunctions")
    role = local_stack.client("iam").get_role(RoleName=f"testbuy-{local_stack.stage}-tasks")["Role"]["Arn"]
    return str(
        sfn.create_state_machine(
            name=f"bridge-{uuid.uuid4().hex[:10]}", definition=json.dumps(definition), roleArn=role, type="STANDARD"
        )["stateMachineArn"]
    )


def test_step_functions_retry_and_catch_match_the_handler_exception_type(local_stack: Any, lam: Any) -> None:
    function_arn = lam.get_function(FunctionName=fn(local_stack, "order_reserve_budget"))["Configuration"][
        "FunctionArn"
    ]
    machine = _machine(local_stack, function_arn)
    sfn = local_stack.client("stepfunctions")
    order_id = f"ord-missing-{uuid.uuid4().hex[:8]}"
    name = f"exec-{uuid.uuid4().hex[:10]}"
    arn = sfn.start_execution(
        stateMachineArn=machine, name=name, input=json.dumps({**ORDER_INPUT, "order_id": order_id})
    )["executionArn"]
    deadline = time.monotonic() + 30
    while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not finish in 30 s"
        time.sleep(0.1)
    assert desc["status"] == "SUCCEEDED", desc
    output = json.loads(desc["output"])
    assert output["error"]["Error"] == "NotFound"  # the Catch on NotFound, not on States.ALL, took it
    cause = json.loads(output["error"]["Cause"])
    assert cause["errorType"] == "NotFound" and order_id in cause["errorMessage"]
    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    failed = [e["taskFailedEventDetails"]["error"] for e in history if e["type"] == "TaskFailed"]
    assert failed == ["NotFound", "NotFound"]  # the first attempt and the one retry matched by the same name
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    assert entered == ["Call", "CaughtNotFound"]


# ------------------------------------------------------------------------------------------------ the bridge itself


class Boom(Exception):
    pass


def test_bridge_dispatch_by_name_with_prefix_arn_and_qualifier() -> None:
    seen: list[Any] = []

    def ok(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append((event, context.function_name))
        return {"echo": event["x"]}

    def boom(event: dict[str, Any], context: Any) -> Any:
        raise Boom("kaboom")

    bridge = Bridge({"ok": ok, "boom": boom}, prefix="p-")
    headers: dict[str, str] = {}
    out = bridge.invoke("arn:aws:lambda:us-east-1:123456789012:function:p-ok:$LATEST", b'{"x": 3}', headers)
    assert json.loads(out) == {"echo": 3} and headers == {}
    assert seen[0] == ({"x": 3}, "arn:aws:lambda:us-east-1:123456789012:function:p-ok:$LATEST")
    assert json.loads(bridge.invoke("arn:aws:lambda:us-east-1:123456789012:function:p-ok", b'{"x": 4}', headers)) == {
        "echo": 4
    }
    out = bridge.invoke("p-boom", b"", headers)
    assert headers == {"x-amz-function-error": "Unhandled"}
    body = json.loads(out)
    assert body["errorType"] == "Boom" and body["errorMessage"] == "kaboom"
    assert bridge.errors == 1 and bridge.invocations == 3
    # Per-task timings are filed under the task name, qualified ARN or not.
    assert bridge.calls == {"ok": 2, "boom": 1}
    from moto.awslambda.exceptions import UnknownFunctionException

    with pytest.raises(UnknownFunctionException, match="p-missing"):
        bridge.resolve("arn:aws:lambda:us-east-1:123456789012:function:p-missing")
