"""AWS failures that may pass on retry become TransientError in one place; business outcomes never do.

botocore's Stubber answers each call; the adapters under test are the real ones (ledger, store, publisher), wrapped by
``make_client`` as ``bootstrap`` wires them.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from chalicelib.adapters.aws import EventBridgePublisher
from chalicelib.adapters.clients import CLIENT_CONFIG, MAX_ATTEMPTS, TransientMappingClient, is_transient, make_client
from chalicelib.adapters.ledger_dynamodb import DynamoLedger
from chalicelib.adapters.system import SystemClock
from chalicelib.domain.errors import DomainError, TransientError


def _session() -> Any:
    return boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def _client(service: str) -> TransientMappingClient:
    return make_client(_session(), service)


THROTTLING = [
    ("dynamodb", "ThrottlingException", 400),
    ("dynamodb", "ProvisionedThroughputExceededException", 400),
    ("dynamodb", "RequestLimitExceeded", 400),
    ("dynamodb", "LimitExceededException", 400),
    ("events", "ThrottlingException", 400),
    ("stepfunctions", "ThrottlingException", 400),
    ("s3", "SlowDown", 503),
    ("events", "InternalException", 500),
    ("dynamodb", "InternalServerError", 500),
    ("stepfunctions", "ServiceUnavailable", 503),
]


def test_clients_use_standard_retries_and_timeouts() -> None:
    client = _client("dynamodb").wrapped
    assert client.meta.config.retries["mode"] == "standard"
    assert client.meta.config.retries["total_max_attempts"] == MAX_ATTEMPTS
    assert client.meta.config.connect_timeout == CLIENT_CONFIG.connect_timeout
    assert client.meta.config.read_timeout == CLIENT_CONFIG.read_timeout


@pytest.mark.parametrize(("service", "code", "status"), THROTTLING)
def test_throttling_and_5xx_are_transient(service: str, code: str, status: int) -> None:
    client = _client(service)
    operation, params = {
        "dynamodb": ("get_item", {"TableName": "t", "Key": {"pk": {"S": "a"}}}),
        "events": ("put_events", {"Entries": [{"Source": "s", "DetailType": "d", "Detail": "{}"}]}),
        "stepfunctions": ("send_task_success", {"taskToken": "t", "output": "{}"}),
        "s3": ("put_object", {"Bucket": "b", "Key": "k", "Body": b"x"}),
    }[service]
    with Stubber(client.wrapped) as stub:
        stub.add_client_error(operation, service_error_code=code, http_status_code=status)
        with pytest.raises(TransientError) as info:
            getattr(client, operation)(**params)
    assert type(info.value) is TransientError, "the ASL Retry lists match the class name exactly"
    assert isinstance(info.value.__cause__, ClientError)
    assert info.value.details["cause"] == code


def test_limit_exceeded_is_a_quota_outside_dynamodb() -> None:
    client = _client("stepfunctions")
    with Stubber(client.wrapped) as stub:
        stub.add_client_error("send_task_success", service_error_code="LimitExceededException", http_status_code=400)
        with pytest.raises(ClientError):
            client.send_task_success(taskToken="t", output="{}")


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connection_errors_and_timeouts_are_transient(exc: Exception) -> None:
    client = _client("dynamodb")

    def fail(request: Any, **kwargs: Any) -> None:
        raise exc

    client.wrapped.meta.events.register_first("before-send.dynamodb.GetItem", fail)
    with pytest.raises(TransientError) as info:
        client.get_item(TableName="t", Key={"pk": {"S": "a"}})
    assert info.value.__cause__ is exc


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ConditionalCheckFailedException", 400),
        ("TransactionCanceledException", 400),
        ("ValidationException", 400),
        ("ResourceNotFoundException", 400),
        ("AccessDeniedException", 400),
    ],
)
def test_business_outcomes_and_mistakes_pass_through(code: str, status: int) -> None:
    client = _client("dynamodb")
    with Stubber(client.wrapped) as stub:
        stub.add_client_error("put_item", service_error_code=code, http_status_code=status)
        with pytest.raises(ClientError) as info:
            client.put_item(TableName="t", Item={"pk": {"S": "a"}})
    assert not isinstance(info.value, TransientError)
    assert info.value.response["Error"]["Code"] == code
    assert not is_transient(info.value, "dynamodb")


def test_a_condition_failure_even_with_a_5xx_status_is_not_transient() -> None:
    exc = ClientError(
        {"Error": {"Code": "ConditionalCheckFailedException"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "PutItem"
    )
    assert not is_transient(exc, "dynamodb")


def test_exceptions_and_meta_are_the_clients_own() -> None:
    client = _client("dynamodb")
    assert client.exceptions.ClientError is ClientError
    assert client.meta is client.wrapped.meta


def test_ledger_reports_a_failed_condition_as_a_domain_outcome_not_transient() -> None:
    """Through the real ledger adapter: a cancelled transaction (funds short) is InsufficientFunds-like, a throttled
    one is TransientError."""
    client = _client("dynamodb")
    ledger = DynamoLedger(client, "ledger", SystemClock())
    with Stubber(client.wrapped) as stub:
        # open_account: the account exists already in another currency (condition failed) -> a domain error.
        stub.add_client_error("put_item", service_error_code="ConditionalCheckFailedException", http_status_code=400)
        stub.add_response(
            "get_item",
            {
                "Item": {
                    "pk": {"S": "ACCOUNT#p1"},
                    "sk": {"S": "BALANCE"},
                    "currency": {"S": "USD"},
                    "funded": {"N": "0"},
                    "available": {"N": "0"},
                    "reserved": {"N": "0"},
                    "captured": {"N": "0"},
                    "recovered": {"N": "0"},
                }
            },
        )
        with pytest.raises(DomainError) as info:
            ledger.open_account("p1", "EUR", None)
        assert not isinstance(info.value, TransientError)
        stub.add_client_error("put_item", service_error_code="ProvisionedThroughputExceededException")
        with pytest.raises(TransientError):
            ledger.open_account("p2", "EUR", None)


def test_publisher_throttled_is_transient() -> None:
    client = _client("events")
    publisher = EventBridgePublisher(client, "bus")
    from chalicelib.domain.events import Envelope

    with Stubber(client.wrapped) as stub:
        stub.add_client_error("put_events", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(TransientError):
            publisher.publish([Envelope(source="testbuy.orders", detail_type="OrderPlaced", detail={"a": 1})])
