"""Step Functions' own execution status-change events, for the local stack (moto emits none).

In AWS, Step Functions puts a ``Step Functions Execution Status Change`` event on the default bus when an execution
ends; the app's safety net (``app.execution_safety_net``, bound with ``@app.on_cw_event``) runs the compensation for
those that end FAILED, TIMED_OUT or ABORTED. moto's interpreter ends executions without telling anyone, so this
module wraps the one moto method every execution passes through when it ends
(``BaseExecutionWorkerCommunication.terminated``) and, after it, delivers the same event to the handler, on a
thread of its own (as EventBridge would: asynchronously, after the execution has ended). Touches moto internals,
like the Lambda bridge (moto is pinned).

One fidelity fix on the way: moto's ``stop_execution`` does not interrupt a ``.waitForTaskToken`` wait; the stopped
execution then ends when the wait times out, reported FAILED. In AWS it ends ABORTED at once. A stopped execution is
therefore reported (``describe_execution`` and the event) as ABORTED, as in AWS, only later.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Deliver = Callable[[dict[str, Any], Any], Any]
STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")
_installed: dict[str, Any] = {}


def status_change_event(execution: Any, status: str) -> dict[str, Any]:
    """The event EventBridge carries for an execution's status change (the fields the safety net reads)."""
    arn = str(execution.exec_arn)
    parts = arn.split(":")
    started = getattr(execution, "start_date", None)
    stopped = getattr(execution, "stop_date", None) or datetime.now(UTC)
    raw = execution.input_data
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": parts[4] if len(parts) > 4 else "",
        "time": stopped.isoformat(),
        "region": parts[3] if len(parts) > 3 else "",
        "resources": [arn],
        "detail": {
            "executionArn": arn,
            "stateMachineArn": str(execution.state_machine_arn),
            "name": str(execution.name),
            "status": status,
            "startDate": int(started.timestamp() * 1000) if started else None,
            "stopDate": int(stopped.timestamp() * 1000),
            "input": raw if isinstance(raw, str) else json.dumps(raw),
            "error": getattr(execution, "error", None),
            "cause": getattr(execution, "cause", None),
        },
    }


def install(deliver: Deliver) -> None:
    """Deliver a status-change event to ``deliver(event, context)`` for every execution that ends badly."""
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution

    if _installed:
        _installed["deliver"] = deliver
        return
    original = BaseExecutionWorkerCommunication.terminated
    original_stop = Execution.stop
    _installed.update(original=original, original_stop=original_stop, deliver=deliver, delivered=0, failures=0)

    def stop(execution: Any, stop_date: Any, error: Any, cause: Any) -> None:
        execution.testbuy_stopped = True
        original_stop(execution, stop_date=stop_date, error=error, cause=cause)

    def terminated(comm: Any) -> None:
        original(comm)
        if getattr(comm.execution, "testbuy_stopped", False):
            comm.execution.exec_status = ExecutionStatus.ABORTED
        status = getattr(comm.execution.exec_status, "value", str(comm.execution.exec_status))
        if status in STATUSES:
            event = status_change_event(comm.execution, status)
            threading.Thread(target=_deliver, args=(event,), daemon=True, name="sfn-status-change").start()

    setattr(BaseExecutionWorkerCommunication, "terminated", terminated)  # noqa: B010 - the patches
    setattr(Execution, "stop", stop)  # noqa: B010


def _deliver(event: dict[str, Any]) -> None:
    handler = _installed.get("deliver")
    if handler is None:
        return
    try:
        handler(event, None)
        _installed["delivered"] += 1
    except Exception:  # noqa: BLE001 - EventBridge would retry; locally the sweeper is the next net
        _installed["failures"] += 1


def stats() -> dict[str, int]:
    return {"delivered": int(_installed.get("delivered", 0)), "failures": int(_installed.get("failures", 0))}


def uninstall() -> None:
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution

    original = _installed.pop("original", None)
    if original is not None:
        setattr(BaseExecutionWorkerCommunication, "terminated", original)  # noqa: B010
    original_stop = _installed.pop("original_stop", None)
    if original_stop is not None:
        setattr(Execution, "stop", original_stop)  # noqa: B010
    _installed.clear()
