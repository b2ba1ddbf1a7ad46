"""boto3 clients as the adapters get them: standard retries, bounded timeouts, and AWS's transient failures as
:class:`~chalicelib.domain.errors.TransientError`.

Every client is built by :func:`make_client` (``chalicelib.bootstrap`` is the only caller), so the translation lives
in one place instead of an ``except`` in every adapter:

- botocore first retries on its own (``standard`` mode: throttling, 5xx and connection errors, with jittered
  backoff, :data:`MAX_ATTEMPTS` attempts in all);
- what is still failing after that (:func:`is_transient`) is raised as ``TransientError`` (``from`` the botocore
  error), which the state machines' Retry lists match by name and the API maps to 503;
- everything else passes through untouched, in particular the business outcomes the adapters decide on themselves:
  ``ConditionalCheckFailedException``, ``TransactionCanceledException`` (the ledger reads its cancellation reasons,
  retries a pure ``TransactionConflict`` itself and maps ``ConditionalCheckFailed`` to domain errors),
  ``ExecutionAlreadyExists``, ``TaskTimedOut``/``InvalidToken``, validation errors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from chalicelib.domain.errors import TransientError

#: Attempts botocore makes per call (first try included) before the error reaches us.
MAX_ATTEMPTS = 3
#: Seconds. A task Lambda has 60 s: three attempts at most ~2 x 10 s each still leave room to report the error.
CONNECT_TIMEOUT = 3
READ_TIMEOUT = 10

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    connect_timeout=CONNECT_TIMEOUT,
    read_timeout=READ_TIMEOUT,
    tcp_keepalive=True,
)

#: Error codes meaning "too fast" or "try again", whatever the service.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "BandwidthLimitExceeded",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
        "TransactionInProgressException",
        # A single-item write that met an in-flight transaction on the same item: nothing applied.
        "TransactionConflictException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
#: ``LimitExceededException`` is a rate limit for these services only (DynamoDB: concurrent control-plane calls);
#: elsewhere (Secrets Manager, Step Functions, Cognito, ...) it is a quota that waiting does not lift.
TRANSIENT_LIMIT_SERVICES = frozenset({"dynamodb"})
#: Never transient, whatever the HTTP status says: the adapters read these as outcomes.
BUSINESS_CODES = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})


def is_transient(exc: BaseException, service: str = "") -> bool:
    """Whether retrying the same call later may succeed (throttling, a 5xx, a lost connection or a timeout)."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError, ...
        return True
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {}) or {}
    code = str(error.get("Code", ""))
    if code in BUSINESS_CODES:
        return False
    if code in TRANSIENT_CODES:
        return True
    if code == "LimitExceededException" and service in TRANSIENT_LIMIT_SERVICES:
        return True
    status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return isinstance(status, int) and status >= 500


class TransientMappingClient:
    """A boto3 client whose operations raise ``TransientError`` for :func:`is_transient` failures.

    Attributes that are not operations (``meta``, ``exceptions``, paginators, waiters) are the wrapped client's own,
    so ``client.exceptions.ClientError`` and botocore's Stubber keep working.
    """

    _PASSTHROUGH = frozenset({"get_paginator", "get_waiter", "can_paginate", "close", "generate_presigned_url"})

    def __init__(self, client: Any) -> None:
        self._client = client
        self._service = str(client.meta.service_model.service_name)

    @property
    def wrapped(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or name in self._PASSTHROUGH or not callable(attr):
            return attr
        operation = self._mapped(name, attr)
        setattr(self, name, operation)  # built once per operation: later calls find it without __getattr__
        return operation

    def _mapped(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        service = self._service

        @functools.wraps(call)
        def operation(*args: Any, **kwargs: Any) -> Any:
            try:
                return call(*args, **kwargs)
            except (ClientError, BotoConnectionError, HTTPClientError) as exc:
                if is_transient(exc, service):
                    raise TransientError(
                        f"{service}.{name} failed transiently: {type(exc).__name__}",
                        details={"service": service, "operation": name, "cause": _cause(exc)},
                    ) from exc
                raise

        return operation


def _cause(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str((exc.response.get("Error") or {}).get("Code", "")) or type(exc).__name__
    return type(exc).__name__


def make_client(session: Any, service: str, config: Config | None = None) -> TransientMappingClient:
    """A client of ``session`` for ``service`` with :data:`CLIENT_CONFIG`, mapping transient failures."""
    return TransientMappingClient(session.client(service, config=config or CLIENT_CONFIG))
