"""Webhook receipts against DynamoDB (moto, in-process): a claim whose put the SDK sent twice (the first reply lost)
is still this caller's claim, not another arrival's. Found by the fault matrix (``api_delivery/dynamodb.PutItem``
delivered twice answered 409 until the lease ran out, so the delivery came too late for the verdict)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
from moto import mock_aws

from chalicelib.adapters.webhook_receipts import DynamoWebhookReceipts

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class PutSentTwice:
    """A client whose put_item reaches the table twice and answers with the second copy's outcome."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def put_item(self, **kwargs: Any) -> Any:
        self._client.put_item(**kwargs)
        return self._client.put_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _table() -> Any:
    db = boto3.client("dynamodb", region_name="us-east-1")
    db.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return db


@mock_aws
def test_a_claim_sent_twice_is_still_ours_and_a_second_arrival_is_busy() -> None:
    db = _table()
    assert DynamoWebhookReceipts(PutSentTwice(db), "t").claim("msg_1", NOW, 60, 3600) == "claimed"
    plain = DynamoWebhookReceipts(db, "t")
    assert plain.claim("msg_1", NOW, 60, 3600) == "busy"  # another arrival while the lease runs
    plain.complete("msg_1")
    assert plain.claim("msg_1", NOW, 60, 3600) == "done"
