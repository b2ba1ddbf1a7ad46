"""Webhook receipts in the data table: ``WEBHOOK#<webhook-id> / RECEIPT``, with ``expires_at`` (epoch seconds) for
DynamoDB's time to live. A receipt is claimed with a conditional put (first arrival wins), holds a lease while the
webhook is processed, and is marked done afterwards; a claim whose lease ran out (the function died mid-way) can be
taken over by the sender's retry, so a crash never loses a delivery."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo_codec import av, error_code

SK = "RECEIPT"


class DynamoWebhookReceipts:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self._table = table

    def _key(self, webhook_id: str) -> dict[str, Any]:
        return {"pk": av(f"WEBHOOK#{webhook_id}"), "sk": av(SK)}

    def claim(self, webhook_id: str, now: datetime, lease_seconds: int, keep_seconds: int) -> str:
        at = int(now.timestamp())
        # This claim's own token: if the SDK resends the put after a lost reply, the second copy fails its condition
        # against the first; the stored token tells that it was ours, not another arrival's.
        token = secrets.token_hex(16)
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    **self._key(webhook_id),
                    "state": av("processing"),
                    "lease_until": av(at + lease_seconds),
                    "received_at": av(now.isoformat()),
                    "expires_at": av(at + keep_seconds),
                    "claim_token": av(token),
                },
                ConditionExpression="attribute_not_exists(pk) OR (#s = :processing AND lease_until < :now)",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":processing": av("processing"), ":now": av(at)},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            resp = self._db.get_item(TableName=self._table, Key=self._key(webhook_id), ConsistentRead=True)
            item = resp.get("Item", {})
            state = item.get("state", {}).get("S")
            if state == "processing" and item.get("claim_token", {}).get("S") == token:
                return "claimed"  # our own put, delivered twice
            return "done" if state == "done" else "busy"
        return "claimed"

    def complete(self, webhook_id: str) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=self._key(webhook_id),
            UpdateExpression="SET #s = :done REMOVE lease_until",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":done": av("done")},
        )

    def release(self, webhook_id: str) -> None:
        """End the lease at once (no item is ever deleted: no function may delete from the data table), so the
        sender's retry can claim the id again."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(webhook_id),
                UpdateExpression="SET lease_until = :zero",
                ConditionExpression="#s = :processing",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":processing": av("processing"), ":zero": av(0)},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
