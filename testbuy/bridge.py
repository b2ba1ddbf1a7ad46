"""The one small, isolated bridge from moto's Lambda service into the Chalice app's handlers.

moto cannot run Lambda code without Docker; with ``lambda.use_docker = False`` its ``LambdaSimpleBackend.invoke``
only echoes the input. We replace that method so an invocation of ``testbuy-<stage>-<task>`` runs the Chalice app's
``lambda_function`` of that name in-process. Exceptions are reported the way the Lambda service reports them
(``x-amz-function-error`` header and ``{"errorType", "errorMessage"}`` payload) so that the ASL's Retry and Catch see
the real error type. This touches moto internals: moto is pinned to an exact version in pyproject.toml.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]
# A hook around one invocation (local testing only, e.g. ``testbuy.faults``): ``hook(task, event, call)`` runs
# ``call()`` (the handler) zero, one or more times and returns what the Lambda service would return. An exception
# with an ``error_type`` attribute is reported under that type (``Lambda.Unknown``, ``Sandbox.Timedout``, ...).
InvocationHook = Callable[[str, dict[str, Any], Callable[[], Any]], Any]


@dataclass
class _Context:
    function_name: str
    aws_request_id: str = "local"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class Bridge:
    def __init__(self, handlers: dict[str, Handler], prefix: str) -> None:
        self._handlers = handlers
        self._prefix = prefix
        self._original: Any = None
        self.invocations = 0
        self.errors = 0
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.hook: InvocationHook | None = None

    def task_name(self, function_name: str) -> str:
        """``arn:...:function:testbuy-<stage>-<task>[:qualifier]`` or a plain name -> ``<task>``."""
        name = function_name.rsplit(":function:", 1)[-1].split(":")[0]
        return name.removeprefix(self._prefix)

    def resolve(self, function_name: str) -> Handler:
        try:
            return self._handlers[self.task_name(function_name)]
        except KeyError:
            from moto.awslambda.exceptions import UnknownFunctionException

            # What the Lambda service answers: 404 ResourceNotFoundException.
            raise UnknownFunctionException(function_name) from None

    def invoke(self, function_name: str, body: Any, response_headers: dict[str, str]) -> bytes:
        self.invocations += 1
        handler = self.resolve(function_name)
        event = json.loads(body) if body else {}
        started = time.perf_counter()
        task = self.task_name(function_name)
        hook = self.hook
        try:

            def call() -> Any:
                return handler(event, _Context(function_name=function_name))

            result = hook(task, event, call) if hook is not None else call()
        except Exception as exc:  # noqa: BLE001 - reported to Step Functions the way the Lambda service does
            self._time(task, started)
            self.errors += 1
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(
                {
                    "errorType": str(getattr(exc, "error_type", type(exc).__name__)),
                    "errorMessage": str(exc),
                    "stackTrace": traceback.format_exception_only(type(exc), exc),
                }
            ).encode()
        self._time(task, started)
        return json.dumps(result).encode()

    def _time(self, task: str, started: float) -> None:
        self.seconds[task] = self.seconds.get(task, 0.0) + time.perf_counter() - started
        self.calls[task] = self.calls.get(task, 0) + 1

    def install(self) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend

        if self._original is not None:
            return
        self._original = LambdaSimpleBackend.invoke
        bridge = self

        def invoke(
            backend: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
        ) -> bytes:
            return bridge.invoke(function_name, body, response_headers)

        setattr(LambdaSimpleBackend, "invoke", invoke)  # noqa: B010 - the bridge's one patch

    def uninstall(self) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend

        if self._original is not None:
            setattr(LambdaSimpleBackend, "invoke", self._original)  # noqa: B010
            self._original = None


def chalice_handlers(app: Any) -> dict[str, Handler]:
    """The Chalice app's ``@app.lambda_function`` handlers, by name."""
    return {fn.name: fn for fn in app.pure_lambda_functions}
