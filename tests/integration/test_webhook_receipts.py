"""Webhook receipts against the local stack's data table: a claim whose put the SDK sent twice (the first reply lost)
is still this caller's claim, not another arrival's. Found by the fault matrix (``api_delivery/dynamodb.PutItem``
delivered twice answered 409 until the lease ran out, so the delivery came too late for the verdict).

Not ``moto.mock_aws``: in this process it would reset the backends the shared local stack runs on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

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


def test_a_claim_sent_twice_is_still_ours_and_a_second_arrival_is_busy(local_stack: Any) -> None:
    from chalicelib.config import settings

    db, table = local_stack.client("dynamodb"), settings().data_table
    webhook_id = f"msg_twice_{uuid.uuid4().hex}"
    assert DynamoWebhookReceipts(PutSentTwice(db), table).claim(webhook_id, NOW, 60, 3600) == "claimed"
    plain = DynamoWebhookReceipts(db, table)
    assert plain.claim(webhook_id, NOW, 60, 3600) == "busy"  # another arrival while the lease runs
    plain.complete(webhook_id)
    assert plain.claim(webhook_id, NOW, 60, 3600) == "done"
