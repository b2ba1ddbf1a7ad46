"""Custody repository on the single table.

- ``ORDER#<o> / CUSTODY#<seq:08d>``: one entry (who logged it, the hand-over, key id, previous MAC, MAC).
- ``ORDER#<o> / META``: the order; ``custody_length`` and ``custody_head`` are the chain's anchor.

Every append is one ``TransactWriteItems``: put the entry if its key is free, and move the anchor from
(``seq``, ``prev_mac``) to (``seq + 1``, ``mac``) if it is still there. Two appends at the same head cannot both
succeed, and an entry cannot exist without its anchor (or the reverse).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo_codec import av, cancellation_codes, error_code, from_item, to_item
from chalicelib.domain.custody import GENESIS, Actor, Anchor, CustodyEntry
from chalicelib.domain.errors import Conflict, NotFound, TransientError

SNAPSHOT_ATTEMPTS = 5


class DynamoCustody:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self._table = table

    def _order_key(self, order_id: str) -> dict[str, Any]:
        return {"pk": av(f"ORDER#{order_id}"), "sk": av("META")}

    @staticmethod
    def _item(entry: CustodyEntry) -> dict[str, Any]:
        return {
            "pk": f"ORDER#{entry.order_id}",
            "sk": f"CUSTODY#{entry.seq:08d}",
            "seq": entry.seq,
            "from_party": entry.from_party,
            "to_party": entry.to_party,
            "at": entry.at.isoformat(),
            "location": entry.location,
            "condition": entry.condition,
            "evidence": list(entry.evidence),
            "actor_subject": entry.actor.subject,
            "actor_role": entry.actor.role,
            "actor_lab_id": entry.actor.lab_id,
            "key_id": entry.key_id,
            "prev_mac": entry.prev_mac,
            "mac": entry.mac,
        }

    @staticmethod
    def _entry(order_id: str, i: dict[str, Any]) -> CustodyEntry:
        # The order id comes from the partition key, not from the item: an entry copied from another order's chain
        # is then checked against this order's id and fails its MAC. Missing or malformed fields (legacy or damaged
        # items) read as placeholders and fail verification, naming the entry, rather than raising.
        def text(name: str) -> str:
            value = i.get(name)
            return value if isinstance(value, str) else ""

        try:
            seq = int(i.get("seq", -1))
        except (TypeError, ValueError):
            seq = -1
        try:
            at = datetime.fromisoformat(text("at"))
        except ValueError:
            at = datetime.min
        evidence = i.get("evidence")
        lab = i.get("actor_lab_id")
        return CustodyEntry(
            order_id=order_id,
            seq=seq,
            from_party=text("from_party"),
            to_party=text("to_party"),
            at=at,
            location=text("location"),
            condition=text("condition"),
            actor=Actor(text("actor_subject"), text("actor_role"), lab if isinstance(lab, str) else None),
            key_id=text("key_id"),
            evidence=tuple(str(e) for e in evidence) if isinstance(evidence, list) else (),
            prev_mac=text("prev_mac"),
            mac=text("mac"),
        )

    def append(self, entry: CustodyEntry) -> Anchor:
        if entry.seq == 0:
            anchor_cond = "attribute_exists(pk) AND attribute_not_exists(custody_length)"
            values: dict[str, Any] = {}
        else:
            anchor_cond = "attribute_exists(pk) AND custody_length = :len AND custody_head = :head"
            values = {":len": av(entry.seq), ":head": av(entry.prev_mac)}
        new = Anchor(entry.seq + 1, entry.mac)
        values.update({":nlen": av(new.length), ":nhead": av(new.head)})
        try:
            self._db.transact_write_items(
                # The MAC names this exact entry: an SDK retry after a lost reply is then applied once, not
                # refused as a conflict (which would make the caller append the same hand-over a second time).
                ClientRequestToken=entry.mac[:36],
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": to_item(self._item(entry)),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._order_key(entry.order_id),
                            "UpdateExpression": "SET custody_length = :nlen, custody_head = :nhead",
                            "ConditionExpression": anchor_cond,
                            "ExpressionAttributeValues": values,
                        }
                    },
                ],
            )
        except ClientError as exc:
            codes = cancellation_codes(exc)
            if error_code(exc) != "TransactionCanceledException" or "ConditionalCheckFailed" not in codes:
                raise
            if codes[1:] == ["ConditionalCheckFailed"] and not self._order_exists(entry.order_id):
                raise NotFound(f"no order {entry.order_id}", details=[{"field": "order_id"}]) from None
            raise Conflict(
                f"custody of {entry.order_id} moved past entry {entry.seq - 1} while this entry was written; "
                "reload and retry",
                details=[{"field": "custody", "seq": entry.seq}],
            ) from None
        return new

    def chain(self, order_id: str) -> list[CustodyEntry]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": av(f"ORDER#{order_id}"), ":p": av("CUSTODY#")},
            "ConsistentRead": True,
        }
        while True:
            resp = self._db.query(**kwargs)
            items.extend(from_item(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return [self._entry(order_id, i) for i in items]

    def _order_exists(self, order_id: str) -> bool:
        resp = self._db.get_item(
            TableName=self._table, Key=self._order_key(order_id), ConsistentRead=True, ProjectionExpression="pk"
        )
        return "Item" in resp

    def _anchor(self, order_id: str) -> Anchor | None:
        resp = self._db.get_item(
            TableName=self._table,
            Key=self._order_key(order_id),
            ConsistentRead=True,
            ProjectionExpression="pk, custody_length, custody_head",
        )
        if "Item" not in resp:
            raise NotFound(f"no order {order_id}", details=[{"field": "order_id"}])
        item = from_item(resp["Item"])
        if "custody_length" not in item:
            return None
        return Anchor(int(item["custody_length"]), str(item.get("custody_head", GENESIS)))

    def snapshot(self, order_id: str) -> tuple[list[CustodyEntry], Anchor | None]:
        # Every append moves the anchor in the same transaction as its entry, so an anchor read unchanged before and
        # after the query proves the query saw exactly the entries that anchor covers.
        for _ in range(SNAPSHOT_ATTEMPTS):
            before = self._anchor(order_id)
            entries = self.chain(order_id)
            if self._anchor(order_id) == before:
                return entries, before
        raise TransientError(f"custody of {order_id} kept changing while it was read; retry")
